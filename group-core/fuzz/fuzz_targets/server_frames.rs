//! Arbitrary bytes from a server, as our client decodes them: frames, then every push and error payload.
#![no_main]

use bytes::BytesMut;
use group_core::proto::{decode_server_frame, parse_broadcast_push, parse_error_payload, parse_member_push};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_server_frame(&mut buf, 1 << 16) {
        let _ = parse_member_push(&frame.payload);
        let _ = parse_broadcast_push(&frame.payload);
        let _ = parse_error_payload(&frame.payload);
    }
});
