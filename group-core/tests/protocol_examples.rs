//! The byte-level examples in docs/PROTOCOL.md, checked against the codec so the document cannot drift.

#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use group_core::proto::{
    CreateRequest, Request, Status, encode_error_payload, encode_server_frame, member_push,
};
use group_core::{ConnId, GroupId, Handled, Input, Instant, Node, NodeConfig, Output};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(request: Request) -> String {
    let mut out = BytesMut::new();
    request.encode(&mut out);
    hex(&out)
}

/// The example group ID used throughout the document.
const ID: &str = "0000018c2e9a43007f0000011fa4000000000000000000000000";

/// Reads the hex examples out of docs/PROTOCOL.md: lines of the form `name: hex`.
fn documented(name: &str) -> String {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let line = doc
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no example named {name}"));
    line.replace("<id>", &hex(ID.as_bytes()))
        .split_whitespace()
        .collect()
}

#[test]
fn documented_examples_match_the_codec() {
    let id: GroupId = ID.parse().unwrap();
    assert_eq!(id.layout().unwrap().owner.to_string(), "127.0.0.1:8100");
    let hello = Request::Hello {
        uid: "alice".into(),
        token: Bytes::new(),
    };
    assert_eq!(encode(hello), documented("hello-request"));
    let create = Request::Create(CreateRequest {
        allow_empty: true,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    });
    assert_eq!(encode(create), documented("create-request"));
    let broadcast = Request::Broadcast {
        group: id,
        reliable: true,
        message: Bytes::from_static(b"hi"),
    };
    assert_eq!(encode(broadcast), documented("broadcast-request"));

    let mut builder = group_core::proto::BroadcastPushBuilder::new(1, 113, &id, 0);
    builder.push_entry("alice", b"hi");
    assert_eq!(hex(&builder.finish()), documented("broadcast-push"));
    assert_eq!(
        hex(&member_push(1, 111, &id, "bob", b"yo")),
        documented("join-push")
    );
    let refused = encode_error_payload(1, 111, Status::Bad, 200, Some(&id), "group not found");
    assert_eq!(hex(&refused), documented("join-refused"));
    let mut ok = BytesMut::new();
    encode_server_frame(1, 110, Status::Ok, id.as_bytes(), &mut ok);
    assert_eq!(hex(&ok), documented("create-response"));
}

#[test]
fn the_node_produces_the_documented_create_response_shape() {
    let mut node = Node::new(NodeConfig::default(), Instant::ZERO).unwrap();
    let conn = ConnId(1);
    let connected = node.handle(Input::Connect(conn), Instant::ZERO);
    assert_eq!(connected, Handled::Connect(Ok(())));
    let request = Request::Hello {
        uid: "alice".into(),
        token: Bytes::new(),
    };
    let _outcome = node.handle(Input::Request { conn, request }, Instant::ZERO);
    let Some(Output::Transmit(hello)) = node.poll() else {
        panic!("the Hello response comes first")
    };
    assert_eq!(hex(&hello.frame[..8]), documented("hello-response-header"));
}

#[test]
fn documented_udp_handshake_matches_kcp() {
    use group_core::kcp::envelope::{CHANNEL_RELIABLE, CONV, KIND_HELLO, wrap};
    use group_core::kcp::{Kcp, KcpConfig};
    let mut kcp = Kcp::new(CONV, KcpConfig::default());
    kcp.send(&[KIND_HELLO]).unwrap();
    kcp.update(0);
    let segment = kcp.poll_transmit().unwrap();
    assert_eq!(
        hex(&wrap(CHANNEL_RELIABLE, 0, &segment)),
        documented("udp-client-hello")
    );
    let answer = group_core::kcp::handshake::stateless_hello(0xA1B2_C3D4, 256, 0);
    assert_eq!(hex(&answer), documented("udp-server-hello"));
}
