//! The Rust client: a dropped or timed-out request never steals the next request's answer, the client
//! keeps a listening session alive, it gives up on a silent server after its request timeout, and its
//! undecoded frames come in the order its pushes do; dropped, over UDP too, it ends its session at once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Transport, bounded, config, kept_group, start, user};
use group_core::proto::{BroadcastView, Request, Status, VER_GROUP, cmd, parse_member_push};
use group_net::ServerBuilder;
use group_net::client::{Client, ClientError, ClientOptions};
use tokio::sync::Notify;

/// A server whose command (2, 1) answers "late" only once the test opens the gate.
async fn gated_server(gate: Arc<Notify>) -> group_net::Server {
    let builder = ServerBuilder::new(config()).on_command(2, 1, move |_| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Ok(Bytes::from_static(b"late"))
        }
    });
    start(builder).await
}

fn slow_request() -> Request {
    Request::Custom {
        ver: 2,
        cmd: 1,
        payload: Bytes::new(),
    }
}

#[tokio::test]
async fn a_dropped_request_does_not_take_the_next_requests_answer() {
    let gate = Arc::new(Notify::new());
    let server = gated_server(gate.clone()).await;
    let mut client = Client::connect_tcp(server.tcp_addr().unwrap())
        .await
        .unwrap();
    bounded("hello", client.hello("alice", "")).await.unwrap();
    {
        // The request is on its way when its future is dropped.
        let request = slow_request();
        let in_flight = client.request(&request);
        let dropped = tokio::time::timeout(Duration::from_millis(50), in_flight).await;
        assert!(dropped.is_err(), "the gated command cannot have answered");
    }
    gate.notify_one(); // "late" arrives now, for nobody
    let echo = bounded("ping", client.ping(b"mine")).await.unwrap();
    assert_eq!(&echo[..], b"mine");
    gate.notify_one();
    let again = bounded("the same command", client.request(&slow_request())).await;
    assert_eq!(&again.unwrap()[..], b"late", "later requests still pair up");
}

#[tokio::test]
async fn a_request_times_out_and_its_late_answer_is_dropped() {
    let gate = Arc::new(Notify::new());
    let server = gated_server(gate.clone()).await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let addr = server.ws_addr().unwrap();
    let mut client = Client::connect_ws_with(addr, options).await.unwrap();
    bounded("hello", client.hello("bob", "")).await.unwrap();
    let timed_out = bounded("timeout", client.request(&slow_request())).await;
    assert!(
        matches!(timed_out, Err(ClientError::Timeout(_))),
        "{timed_out:?}"
    );
    gate.notify_one();
    let echo = bounded("ping", client.ping(b"after")).await.unwrap();
    assert_eq!(&echo[..], b"after");
}

#[tokio::test]
async fn a_listening_client_keeps_its_session_and_a_silent_one_is_discarded() {
    let mut cfg = config();
    cfg.limits.connection_ttl = Duration::from_secs(1);
    let server = start(ServerBuilder::new(cfg)).await;
    let addr = server.tcp_addr().unwrap();
    let keeping = ClientOptions {
        keep_alive: Some(Duration::from_millis(200)),
        ..ClientOptions::default()
    };
    let silent = ClientOptions {
        keep_alive: None,
        ..ClientOptions::default()
    };
    let mut listener = Client::connect_tcp_with(addr, keeping).await.unwrap();
    let mut control = Client::connect_tcp_with(addr, silent).await.unwrap();
    bounded("hello", listener.hello("listener", ""))
        .await
        .unwrap();
    bounded("hello", control.hello("control", ""))
        .await
        .unwrap();
    // The control is closed after about 1 s of silence; the listener has sent nothing itself.
    bounded("control discarded", control.closed()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let echo = bounded("ping", listener.ping(b"alive")).await.unwrap();
    assert_eq!(
        &echo[..],
        b"alive",
        "the automatic KeepAlive answers are not handed out"
    );
}

#[tokio::test]
async fn connecting_to_nothing_fails_within_the_connect_timeout() {
    // A UDP port with no server behind it never answers the KCP handshake.
    let nobody = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let addr = nobody.local_addr().unwrap();
    let result = bounded("udp connect", Client::connect_udp_with(addr, options)).await;
    assert!(matches!(result, Err(ClientError::Timeout(_))));
}

/// A push that arrived while a request waited for its answer is held for the receiver: `try_next_frame`
/// hands it out first, undecoded, then `next_frame` what came after it; a 113 push reads in place.
#[tokio::test]
async fn frames_held_during_a_request_come_first_from_next_frame() {
    let server = start(ServerBuilder::new(config())).await;
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let mut bob = user(&server, Transport::Tcp, "bob").await;
    let group = bounded("create", alice.create(kept_group())).await.unwrap();
    bounded("join", bob.join(group, b"hi")).await.unwrap();
    // Bob's join push reaches alice before the answer to her ping does, so the ping holds it.
    bounded("ping", alice.ping(b"x")).await.unwrap();
    bounded(
        "broadcast",
        bob.broadcast(group, Bytes::from_static(b"m1"), true),
    )
    .await
    .unwrap();
    let (_alice_sends, mut alice) = alice.into_split();

    // Held frames are there at once, without waiting.
    let joined = alice.try_next_frame().unwrap().unwrap();
    assert_eq!(
        (joined.status, joined.ver, joined.cmd),
        (Status::Push, VER_GROUP, cmd::JOIN)
    );
    let joined = parse_member_push(&joined.payload).unwrap();
    assert_eq!(
        (joined.uid.as_str(), &joined.message[..]),
        ("bob", &b"hi"[..])
    );

    let broadcast = bounded("frame", alice.next_frame()).await.unwrap();
    assert_eq!((broadcast.ver, broadcast.cmd), (VER_GROUP, cmd::BROADCAST));
    let view = BroadcastView::parse(&broadcast.payload).unwrap();
    assert_eq!(view.group(), group.as_bytes());
    let entries: Vec<_> = view.map(Result::unwrap).collect();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].uid, entries[0].message), ("bob", &b"m1"[..]));
    assert_eq!(
        alice.try_next_frame().unwrap(),
        None,
        "nothing more has arrived"
    );
}

/// A UDP client dropped without closing says goodbye: its session ends at once, as a TCP client's does
/// when its socket closes, not at `connectionTtl` (a minute here).
#[tokio::test]
async fn a_dropped_udp_client_ends_its_session_at_once() {
    let mut cfg = config();
    cfg.limits.connection_ttl = Duration::from_secs(60);
    let server = start(ServerBuilder::new(cfg)).await;
    let mut owner = user(&server, Transport::Tcp, "owner").await;
    let group = bounded("create", owner.create(kept_group())).await.unwrap();
    let mut member = user(&server, Transport::Udp, "member").await;
    bounded("join", member.join(group, b"hi")).await.unwrap();
    assert!(matches!(
        common::next_push(&mut owner).await,
        group_net::client::Push::Joined { .. }
    ));
    drop(member);
    // Without the goodbye the server would notice only at connectionTtl (its KCP gives a silent client
    // that long too); with it, at once.
    let left = tokio::time::timeout(Duration::from_secs(2), common::next_push(&mut owner)).await;
    let Ok(group_net::client::Push::Left { uid, .. }) = left else {
        panic!("no Left push within 2 s: {left:?}")
    };
    assert_eq!(uid, "member");
}
