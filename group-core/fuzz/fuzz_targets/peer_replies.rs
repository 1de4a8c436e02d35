//! Arbitrary bytes from a redis-server or nats-server, as group-bench's peer readers find replies in
//! them (`group-net/src/bin/group-bench/peer_wire.rs`, compiled in here as it is: it needs only std).
//! A reply found is within the bytes read, and is found the same once only its own bytes are there.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../../group-net/src/bin/group-bench/peer_wire.rs"]
mod peer_wire;

use peer_wire::{Nats, first_line, nats_at, resp_at};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((resp, len))) = resp_at(data) {
        assert!(len <= data.len());
        for i in 0..4 {
            assert!(resp.item(i).is_none_or(|r| r.end <= len));
        }
        assert_eq!(resp_at(&data[..len]), Ok(Some((resp, len))));
    }
    if let Ok(Some((item, len))) = nats_at(data) {
        let (Nats::Msg(r) | Nats::Line(r)) = &item;
        assert!(r.end <= len && len <= data.len());
        assert_eq!(nats_at(&data[..len]), Ok(Some((item, len))));
    }
    if let Ok(Some((text, len))) = first_line(data) {
        assert!(text.end < len && len <= data.len());
    }
});
