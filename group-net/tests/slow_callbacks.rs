//! Server code that is slow cannot hold up the node: tick callbacks of one group never overlap (a late
//! tick is skipped and counted), and a discard-message callback that blocks gets 20 ms before its message
//! is sent empty.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Transport, bounded, config, next_push, start, user};
use group_core::GroupId;
use group_core::proto::CreateRequest;
use group_net::ServerBuilder;
use group_net::client::Push;

fn create() -> CreateRequest {
    CreateRequest {
        allow_empty: true,
        join: false,
        ttl_s: 60,
        interval_ms: 0,
    }
}

/// Virtual time: ticks a second apart take no real time.
#[tokio::test(start_paused = true)]
async fn a_tick_that_comes_while_the_last_one_still_runs_is_skipped_and_counted() {
    let server = start(ServerBuilder::new(config())).await;
    let api = server.handle();
    let group = api.new_group(create(), None).await.unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
    let callback_gate = gate.clone();
    api.set_tick(group, Some(Duration::from_secs(1)), move |_, _| {
        let (gate, started) = (callback_gate.clone(), started.clone());
        async move {
            let _ = started.send(());
            gate.notified().await; // a callback that takes as long as the test says
        }
    })
    .await
    .unwrap();
    bounded("first tick", starts.recv()).await.unwrap();
    // Three more ticks come while the first callback still runs: none starts another.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(starts.try_recv().is_err(), "ticks overlapped");
    assert_eq!(server.ticks_skipped(), 3);
    gate.notify_one();
    bounded("the next tick after the slow one", starts.recv())
        .await
        .unwrap();
    gate.notify_one();
}

/// Blocks the calling thread until `open` is called: a callback that waits on a lock in a game engine.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

async fn left(client: &mut group_net::client::Client) -> (String, Bytes) {
    loop {
        if let Push::Left { uid, message, .. } = next_push(client).await {
            return (uid, message);
        }
    }
}

#[tokio::test]
async fn a_blocking_discard_message_callback_cannot_freeze_the_node() {
    let gate = Arc::new(Gate::default());
    let callback_gate = gate.clone();
    let builder = ServerBuilder::new(config()).discard_message(move |_, uid, _| {
        if uid == "bob" {
            callback_gate.wait();
        }
        Bytes::from(format!("gone:{uid}"))
    });
    let server = start(builder).await;
    let api = server.handle();
    let group: GroupId = api.new_group(create(), None).await.unwrap();
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let join = |uid: &'static str| api.join(group, uid.into(), Bytes::new(), 1, 111);
    bounded("join", join("alice")).await.unwrap();
    let bob = user(&server, Transport::Tcp, "bob").await;
    bounded("join", join("bob")).await.unwrap();
    let carol = user(&server, Transport::Ws, "carol").await;
    bounded("join", join("carol")).await.unwrap();

    drop(bob); // its discard message callback blocks until the gate opens
    assert_eq!(left(&mut alice).await, ("bob".into(), Bytes::new()));
    assert_eq!(
        &bounded("ping", alice.ping(b"alive")).await.unwrap()[..],
        b"alive",
        "the node answers while the callback is still blocked"
    );
    drop(carol); // the callback is still busy with bob's: carol's is sent empty without waiting
    assert_eq!(left(&mut alice).await, ("carol".into(), Bytes::new()));
    assert_eq!(server.messages_late(), 2);

    gate.open();
    // Once bob's call returns, messages are built again (the first member may still find it busy).
    for attempt in 0..100 {
        let uid = format!("dave{attempt}");
        let dave = user(&server, Transport::Tcp, &uid).await;
        bounded("join", api.join(group, uid.clone(), Bytes::new(), 1, 111))
            .await
            .unwrap();
        drop(dave);
        let (who, message) = left(&mut alice).await;
        assert_eq!(who, uid);
        if !message.is_empty() {
            assert_eq!(message, Bytes::from(format!("gone:{uid}")));
            return;
        }
    }
    panic!("the discard message never recovered after its callback returned");
}
