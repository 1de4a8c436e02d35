//! Arbitrary bytes from a peer node: the mesh decoder never panics, what it accepts re-encodes to a frame
//! that decodes to the same message, and a node that owns a group and holds a copy of another takes any
//! sequence of such messages (from any address) without panicking.
#![no_main]

use std::net::Ipv4Addr;

use bytes::Bytes;
use group_core::cluster::mesh::{decode, encode};
use group_core::proto::CreateRequest;
use group_core::{Call, ConnId, Input, Instant, Node, NodeAddr, NodeConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let own = NodeAddr::new(Ipv4Addr::new(10, 0, 0, 1), 8100);
    let peers = [2u8, 3, 4].map(|i| NodeAddr::new(Ipv4Addr::new(10, 0, 0, i), 8100));
    let config = NodeConfig { addr: own, ..NodeConfig::default() };
    let Ok(mut node) = Node::new(config, Instant::ZERO) else { return };
    for peer in peers {
        let _ = node.handle(Input::NodeUp(peer), Instant::ZERO);
    }
    let now = Instant::from_nanos(1);
    let conn = ConnId(1);
    let _ = node.handle(Input::Connect(conn), now);
    let request = group_core::proto::Request::Hello { uid: "alice".into(), token: Bytes::new() };
    let _ = node.handle(Input::Request { conn, request }, now);
    let params = CreateRequest { allow_empty: true, join: true, ttl_s: 60, interval_ms: 0 };
    let _ = node.handle(Input::Call(Call::Create { params, creator: Some("alice".into()) }), now);
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
        let _ = node.handle(Input::Mesh { from, message }, Instant::from_nanos(t));
        let _ = node.handle(Input::Timeout, Instant::from_nanos(t));
        while node.poll().is_some() {}
    }
});
