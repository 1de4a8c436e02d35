//! Arbitrary bytes from a peer node: the mesh decoder never panics, what it accepts re-encodes to a frame
//! that decodes to the same message, and a node that owns a group and holds a copy of another takes any
//! sequence of such messages (from any address) without panicking.
#![no_main]

use std::net::Ipv4Addr;

use bytes::Bytes;
use group_core::cluster::mesh::{decode, encode};
use group_core::proto::CreateRequest;
use group_core::{ConnId, Instant, Node, NodeAddr, NodeConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let own = NodeAddr::new(Ipv4Addr::new(10, 0, 0, 1), 8100);
    let peers = [2u8, 3, 4].map(|i| NodeAddr::new(Ipv4Addr::new(10, 0, 0, i), 8100));
    let config = NodeConfig { addr: own, ..NodeConfig::default() };
    let Ok(mut node) = Node::new(config, Instant::ZERO) else { return };
    for peer in peers {
        node.handle_node_up(peer);
    }
    let now = Instant::from_nanos(1);
    let _ = node.handle_connect(ConnId(1), now);
    let hello = group_core::proto::Request::Hello { uid: "alice".into(), token: Bytes::new() };
    let _ = node.handle_request(ConnId(1), hello, now);
    let params = CreateRequest { allow_empty: true, join: true, ttl_s: 60, interval_ms: 0 };
    let _ = node.create(&params, Some("alice"), now);
    // Frames are separated by a length byte; the byte after it picks the sender.
    let mut rest = data;
    let mut t = 1u64;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (frame, after) = tail.split_at(take);
        rest = after;
        let Ok(message) = decode(frame) else { continue };
        assert_eq!(decode(&encode(&message)).as_ref(), Ok(&message), "round trip");
        let from = peers[usize::from(len) % peers.len()];
        t += u64::from(len) * 1_000_000;
        node.handle_mesh(from, message, Instant::from_nanos(t));
        node.handle_timeout(Instant::from_nanos(t));
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
        while node.poll_mesh().is_some() {}
    }
});
