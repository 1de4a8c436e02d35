//! One session per uid in the whole cluster, with two `group-server` processes at default settings: a
//! player who is a member through node A and reconnects to node B (a load balancer does this) gets one
//! session, on B. The connection on A hears why it closes (CLOSED_REPLACED) and closes; the group's
//! members hear the discard; and B answers the player's join and broadcasts at once, as if A never
//! held it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use group_core::proto::{VER_CONTROL, cmd, code};
use group_net::client::{Client, Push};
use group_tests::clients::{bounded, group_with_backups, user};
use group_tests::{Node, config_file};

async fn next_push(client: &mut Client) -> Option<Push> {
    bounded("push", client.next_push()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_on_another_node_replaces_the_session_cluster_wide() {
    let config = config_file("one-session", "{}");
    let a = Node::start(&config, &[]);
    let b = Node::start(&config, &[a.addr("mesh")]);

    let mut alice = user(&a, "alice").await;
    // Owned by A, with B as its backup once A sees B: the cluster has formed.
    let group = group_with_backups(&mut alice, 1).await;
    let mut bob = user(&b, "bob").await;
    bounded("bob joins", bob.join(group, b"")).await.unwrap();
    let mut yuki_on_a = user(&a, "yuki").await;
    bounded("yuki joins on A", yuki_on_a.join(group, b""))
        .await
        .unwrap();

    // The player reconnects through B and joins at once.
    let mut yuki_on_b = user(&b, "yuki").await;
    bounded("yuki joins on B", yuki_on_b.join(group, b"back"))
        .await
        .expect("the old session on A does not make this one 'already a member'");
    bounded(
        "yuki broadcasts from B",
        yuki_on_b.broadcast(group, Bytes::from_static(b"hello from B"), true),
    )
    .await
    .unwrap();
    for member in [&mut alice, &mut bob] {
        bounded("the broadcast", async {
            loop {
                if let Some(Push::Broadcast { entries, .. }) = next_push(member).await {
                    assert_eq!(
                        (entries[0].uid.as_str(), &entries[0].message[..]),
                        ("yuki", &b"hello from B"[..])
                    );
                    return;
                }
            }
        })
        .await;
    }

    // A closed the old connection, saying why.
    let mut notice = None;
    while let Some(push) = next_push(&mut yuki_on_a).await {
        if let Push::Refused { ver, cmd, error } = push {
            notice = Some((ver, cmd, error.code));
        }
    }
    assert_eq!(
        notice,
        Some((VER_CONTROL, cmd::CLOSING, code::CLOSED_REPLACED))
    );

    // And no server code on B is stuck: yuki may leave there.
    bounded("yuki leaves on B", yuki_on_b.leave(group, b""))
        .await
        .unwrap();
}
