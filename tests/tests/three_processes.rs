//! Three `group-server` processes on loopback form one cluster. Clients on every node share one group and
//! every broadcast reaches every other member. The owner process is killed with SIGKILL: the survivors
//! are told (rejoin push) and keep exchanging broadcasts. Then the new owner is drained with SIGTERM: its
//! clients hear Offline, its group moves to the last node, and the members there keep talking.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use group_core::GroupId;
use group_core::proto::code;
use group_net::client::{Client, Push};
use group_tests::clients::{bounded, group_with_two_backups, params, user};
use group_tests::{Node, config_file};

const CONFIG: &str = r#"{
    "group": { "sendInterval": 0 },
    "limits": { "connectionTtl": 600 },
    "server": { "drainTimeout": 1500 },
    "mesh": { "probeInterval": 100, "suspectTimeout": 600 }
}"#;

async fn next_push(client: &mut Client) -> Push {
    bounded("push", client.next_push())
        .await
        .expect("connection closed while waiting for a push")
}

/// Waits for the join push of `uid`, skipping others.
async fn saw_join(client: &mut Client, uid: &str) {
    loop {
        if matches!(next_push(client).await, Push::Joined { uid: who, .. } if who == uid) {
            return;
        }
    }
}

/// Every client broadcasts once and every other client receives each broadcast.
async fn exchange(clients: &mut [(&str, &mut Client)], group: GroupId, round: &str) {
    for i in 0..clients.len() {
        let (sender, _) = &clients[i];
        let message = Bytes::from(format!("{round}/{sender}"));
        bounded(
            "broadcast",
            clients[i].1.broadcast(group, message.clone(), true),
        )
        .await
        .unwrap();
        for j in (0..clients.len()).filter(|j| *j != i) {
            let got = bounded("a broadcast", async {
                loop {
                    if let Push::Broadcast { entries, .. } = next_push(clients[j].1).await {
                        return entries;
                    }
                }
            })
            .await;
            assert_eq!(got.len(), 1);
            assert_eq!(
                got[0].message, message,
                "{round}: {} from {}",
                clients[j].0, clients[i].0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_a_sigkill_and_a_sigterm_drain() {
    let config = config_file("three", CONFIG);
    let n1 = Node::start(&config, &[]);
    let seed = n1.addr("mesh");
    let mut n2 = Node::start(&config, &[seed]);
    let mut n3 = Node::start(&config, &[seed]);

    let mut a = user(&n1, "a").await;
    let group = group_with_two_backups(&mut a).await;
    let mut b1 = user(&n2, "b1").await;
    let mut b2 = user(&n2, "b2").await;
    let mut c1 = user(&n3, "c1").await;
    let mut c2 = user(&n3, "c2").await;
    // Each joins with a message; once every earlier member has seen the last join, every node's copy
    // holds every member, and broadcasts from any node reach all of them.
    for (client, uid) in [
        (&mut b1, "b1"),
        (&mut b2, "b2"),
        (&mut c1, "c1"),
        (&mut c2, "c2"),
    ] {
        bounded("join", client.join(group, uid.as_bytes()))
            .await
            .unwrap();
    }
    saw_join(&mut a, "c2").await;
    saw_join(&mut b1, "c2").await;
    saw_join(&mut b2, "c2").await;
    saw_join(&mut c1, "c2").await;
    exchange(
        &mut [
            ("a", &mut a),
            ("b1", &mut b1),
            ("b2", &mut b2),
            ("c1", &mut c1),
            ("c2", &mut c2),
        ],
        group,
        "all",
    )
    .await;

    // SIGKILL the owner: no goodbye, membership must notice.
    let killed = Instant::now();
    n1.signal("-KILL");
    drop(a);
    for client in [&mut b1, &mut b2, &mut c1, &mut c2] {
        eprintln!("{:?} waiting for a rejoin push", killed.elapsed());
        bounded("the rejoin push", async {
            loop {
                match next_push(client).await {
                    Push::Joined { message, .. } if message.is_empty() => return,
                    Push::Left { uid, .. } => assert_eq!(uid, "a"),
                    other => panic!("expected a rejoin push, got {other:?}"),
                }
            }
        })
        .await;
    }
    exchange(
        &mut [
            ("b1", &mut b1),
            ("b2", &mut b2),
            ("c1", &mut c1),
            ("c2", &mut c2),
        ],
        group,
        "survivors",
    )
    .await;
    eprintln!(
        "from SIGKILL of the owner to a full exchange again: {:?}",
        killed.elapsed()
    );

    // The first backup owns the group now; drain it with SIGTERM.
    let first_backup = group.layout().unwrap().backups[0].unwrap();
    let owner_is_n2 = n2.addr("mesh") == std::net::SocketAddr::V4(first_backup.0);
    let (drained, stays) = if owner_is_n2 {
        (&mut n2, &mut n3)
    } else {
        (&mut n3, &mut n2)
    };
    let (gone, kept) = if owner_is_n2 {
        ([&mut b1, &mut b2], [&mut c1, &mut c2])
    } else {
        ([&mut c1, &mut c2], [&mut b1, &mut b2])
    };
    drained.signal("-TERM");
    for client in gone {
        assert_eq!(
            next_push(client).await,
            Push::Offline,
            "Offline comes first"
        );
        let refused = bounded("create on a draining node", client.create(params()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(code::CREATE_NODE_OFFLINE));
    }
    assert!(
        drained.wait_exit(Duration::from_secs(15)),
        "clean exit after the drain"
    );
    let [k1, k2] = kept;
    exchange(&mut [("k1", k1), ("k2", k2)], group, "after the drain").await;
    let mut late = user(stays, "late").await;
    bounded("join after the drain", late.join(group, b""))
        .await
        .unwrap();
    let _ = std::fs::remove_file(&config);
}
