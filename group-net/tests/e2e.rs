//! Every row of the protocol table over real sockets, with TCP and WebSocket members in one group, and the
//! Rust server API.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Transport, bounded, config, next_push, start, user};
use group_core::proto::{CreateRequest, RandJoinRequest, code};
use group_net::client::Push;
use group_net::{ApiError, ServerBuilder};

fn create(allow_empty: bool, interval_ms: u16) -> CreateRequest {
    CreateRequest {
        allow_empty,
        join: true,
        ttl_s: 60,
        interval_ms,
    }
}

#[tokio::test]
async fn every_protocol_row_with_tcp_websocket_and_udp_members_in_one_group() {
    let server = start(ServerBuilder::new(config())).await;
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let mut bob = user(&server, Transport::Ws, "bob").await;
    let mut carol = user(&server, Transport::Udp, "carol").await;

    assert_eq!(
        &bounded("ping", alice.ping(b"echo")).await.unwrap()[..],
        b"echo"
    );
    bounded("keepalive", bob.keep_alive()).await.unwrap();

    let group = bounded("create", alice.create(create(false, 0)))
        .await
        .unwrap();
    assert_eq!(
        bounded("join", bob.join(group, b"hi all")).await.unwrap(),
        group
    );
    let Push::Joined { uid, message, .. } = next_push(&mut alice).await else {
        panic!()
    };
    assert_eq!((uid.as_str(), &message[..]), ("bob", &b"hi all"[..]));
    bounded("join", carol.join(group, b"")).await.unwrap(); // empty message: no push

    bounded(
        "broadcast",
        bob.broadcast(group, Bytes::from_static(b"from ws"), true),
    )
    .await
    .unwrap();
    for client in [&mut alice, &mut carol] {
        let Push::Broadcast { group: g, entries } = next_push(client).await else {
            panic!()
        };
        assert_eq!(
            (g, entries[0].uid.as_str(), &entries[0].message[..]),
            (group, "bob", &b"from ws"[..])
        );
    }
    bounded(
        "broadcast",
        alice.broadcast(group, Bytes::from_static(b"from tcp"), false),
    )
    .await
    .unwrap();
    let Push::Broadcast { entries, .. } = next_push(&mut bob).await else {
        panic!()
    };
    assert_eq!(&entries[0].message[..], b"from tcp");
    let Push::Broadcast { entries, .. } = next_push(&mut carol).await else {
        panic!()
    };
    assert_eq!(entries[0].uid, "alice");

    bounded("leave", carol.leave(group, b"bye")).await.unwrap();
    for client in [&mut alice, &mut bob] {
        let Push::Left { uid, message, .. } = next_push(client).await else {
            panic!()
        };
        assert_eq!((uid.as_str(), &message[..]), ("carol", &b"bye"[..]));
    }
    let refused = bounded("leave again", carol.leave(group, b""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(code::LEAVE_NOT_MEMBER));

    let params = RandJoinRequest {
        allow_empty: false,
        ttl_s: 30,
        interval_ms: 0,
        message: Bytes::new(),
    };
    let random = bounded("rand join", carol.rand_join(params.clone()))
        .await
        .unwrap();
    assert_eq!(
        bounded("rand join", alice.rand_join(params)).await.unwrap(),
        random
    );

    bounded("fin", bob.fin()).await.unwrap();
    bounded("closed", bob.closed()).await;
    let Push::Left { uid, .. } = next_push(&mut alice).await else {
        panic!()
    };
    assert_eq!(uid, "bob", "Fin discards bob; the remaining member is told");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn merged_group_delivers_one_push_per_interval_across_transports() {
    let server = start(ServerBuilder::new(config())).await;
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let mut bob = user(&server, Transport::Ws, "bob").await;
    let group = bounded("create", alice.create(create(false, 100)))
        .await
        .unwrap();
    bounded("join", bob.join(group, b"")).await.unwrap();
    for i in 0..5u8 {
        bounded(
            "broadcast",
            alice.broadcast(group, Bytes::from(vec![i]), true),
        )
        .await
        .unwrap();
    }
    let Push::Broadcast { entries, .. } = next_push(&mut bob).await else {
        panic!()
    };
    let got: Vec<u8> = entries.iter().map(|e| e.message[0]).collect();
    assert_eq!(
        got,
        vec![0, 1, 2, 3, 4],
        "one push with every entry, in order"
    );
}

#[tokio::test]
async fn server_api_mirrors_the_group_package() {
    let server = start(
        ServerBuilder::new(config())
            .discard_message(|_, uid, _| Bytes::from(format!("{uid} dropped"))),
    )
    .await;
    let api = server.handle();
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let mut bob = user(&server, Transport::Ws, "bob").await;

    let params = CreateRequest {
        allow_empty: true,
        join: false,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = api.new_group(params, None).await.unwrap();
    api.join(group, "alice".into(), Bytes::new(), 1, 111)
        .await
        .unwrap();
    api.join(
        group,
        "bob".into(),
        Bytes::from_static(b"server says bob is here"),
        5,
        50,
    )
    .await
    .unwrap();
    let Push::Custom { ver, cmd, payload } = next_push(&mut alice).await else {
        panic!()
    };
    assert_eq!(
        (ver, cmd),
        (5, 50),
        "the notification uses the ver/cmd given"
    );
    let member = group_core::proto::parse_member_push(&payload).unwrap();
    assert_eq!(
        (member.uid.as_str(), &member.message[..]),
        ("bob", &b"server says bob is here"[..])
    );
    let err = api
        .join(group, "bob".into(), Bytes::new(), 1, 111)
        .await
        .unwrap_err();
    assert!(err.is_join_error() && !err.is_leave_error());

    api.announce(group, 1, 113, Bytes::from_static(b"server news"), true)
        .await
        .unwrap();
    for client in [&mut alice, &mut bob] {
        let Push::Broadcast { entries, .. } = next_push(client).await else {
            panic!()
        };
        assert_eq!(
            (entries[0].uid.as_str(), &entries[0].message[..]),
            ("", &b"server news"[..])
        );
    }
    api.broadcast(
        group,
        "bob".into(),
        1,
        113,
        Bytes::from_static(b"as bob"),
        true,
    )
    .await
    .unwrap();
    let Push::Broadcast { entries, .. } = next_push(&mut alice).await else {
        panic!()
    };
    assert_eq!(entries[0].uid, "bob");
    // Without waiting: the broadcast is delivered; a refusal goes to the callback instead of the caller.
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel();
    let nowait = Bytes::from_static(b"no wait");
    api.broadcast_nowait(group, "bob".into(), 1, 113, nowait, true, |_, _, _| {})
        .unwrap();
    let Push::Broadcast { entries, .. } = next_push(&mut alice).await else {
        panic!()
    };
    assert_eq!(&entries[0].message[..], b"no wait");
    let refused = move |e, _, uid| {
        let _ = refused_tx.send((e, uid));
    };
    api.broadcast_nowait(group, "carol".into(), 1, 113, Bytes::new(), true, refused)
        .unwrap();
    let (refusal, uid): (group_core::BroadcastError, String) =
        bounded("the refusal", refused_rx).await.unwrap();
    assert_eq!(refusal.code(), group_core::proto::code::UNKNOWN_USER);
    assert_eq!(uid, "carol");

    assert_eq!(
        api.group_ids("alice".into()).await.unwrap(),
        Some(vec![group])
    );
    assert_eq!(
        api.latest_group_id("bob".into()).await.unwrap(),
        Some(group)
    );
    let snapshot = api.snapshot(group).await.unwrap().unwrap();
    assert_eq!(
        snapshot.members.keys().cloned().collect::<Vec<_>>(),
        vec!["alice", "bob"]
    );
    assert_eq!(
        api.member_mesh_nodes(group).await.unwrap().unwrap().len(),
        1
    );
    assert!(
        api.push_to_user("bob".into(), 3, 7, Bytes::from_static(b"direct"))
            .await
            .unwrap()
    );
    let reserved = api.push_to_user("bob".into(), 1, 113, Bytes::from_static(b"not a broadcast"));
    assert_eq!(
        reserved.await,
        Err(ApiError::ReservedVersion { ver: 1 }),
        "a client would misread it as the protocol's own push"
    );
    let push = next_push(&mut bob).await;
    assert_eq!(
        push,
        Push::Custom {
            ver: 3,
            cmd: 7,
            payload: Bytes::from_static(b"direct")
        }
    );

    drop(bob); // disconnect: alice hears the discard custom message
    let Push::Left { uid, message, .. } = next_push(&mut alice).await else {
        panic!()
    };
    assert_eq!((uid.as_str(), &message[..]), ("bob", &b"bob dropped"[..]));
    api.leave(group, "alice".into(), Bytes::new(), 1, 112)
        .await
        .unwrap();
    assert!(
        api.leave(group, "alice".into(), Bytes::new(), 1, 112)
            .await
            .unwrap_err()
            .is_leave_error()
    );

    api.set_offline().await.unwrap();
    assert_eq!(next_push(&mut alice).await, Push::Offline);
    let refused = bounded("create offline", alice.create(create(false, 0)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(code::CREATE_NODE_OFFLINE));
}

/// Virtual time: the driver's timer runs on tokio's clock, so ticks a second apart take no real time.
#[tokio::test(start_paused = true)]
async fn tick_callbacks_fire_until_cleared() {
    let server = start(ServerBuilder::new(config())).await;
    let api = server.handle();
    let params = CreateRequest {
        allow_empty: true,
        join: false,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = api.new_group(params, None).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    api.set_tick(group, Some(Duration::from_secs(1)), move |g, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(g);
        }
    })
    .await
    .unwrap();
    assert_eq!(bounded("first tick", rx.recv()).await, Some(group));
    let second = tokio::time::Instant::now();
    assert_eq!(bounded("second tick", rx.recv()).await, Some(group));
    assert!(
        tokio::time::Instant::now() - second >= Duration::from_millis(999),
        "a second apart"
    );
    api.set_tick(group, None, |_, _| async {}).await.unwrap();
    // Cleared: the callback (holding the only sender) is dropped, and no further tick arrives.
    let after_clear = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
    assert!(matches!(after_clear, Ok(None)), "{after_clear:?}");
}
