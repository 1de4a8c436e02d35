//! Three `group-server` processes at default settings; the owner of a group is frozen with SIGSTOP.
//! - Frozen for 1 s (a node busy at 100% CPU answers later, never not at all): nobody declares it dead,
//!   no member gets a rejoin push, the group keeps working.
//! - Frozen for 10 s: the survivors fail over (rejoin push); a join made on a survivor while the owner is
//!   frozen is answered once. After SIGCONT the old owner settles by epoch (it becomes a copy) and its own
//!   member stays a member: every member then gets every broadcast exactly once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use group_core::GroupId;
use group_net::client::{Client, Push};
use group_tests::clients::{bounded, group_with_two_backups, user};
use group_tests::{Node, config_file};

const CONFIG: &str = r#"{ "group": { "sendInterval": 0 } }"#;

/// Every push that arrives within `quiet`.
async fn pushes_within(client: &mut Client, quiet: Duration) -> Vec<Push> {
    let mut pushes = Vec::new();
    while let Ok(Some(push)) = tokio::time::timeout(quiet, client.next_push()).await {
        pushes.push(push);
    }
    pushes
}

/// Whether `push` carries the broadcast `text`.
fn carries(push: &Push, text: &str) -> bool {
    matches!(push, Push::Broadcast { entries, .. } if entries.iter().any(|e| e.message == text.as_bytes()))
}

/// `sender` broadcasts `text`; each receiver must get it (waiting as long as it takes, bounded), and then
/// no second copy within a quiet period; no answer nobody asked for either.
async fn delivered_once(
    sender: &mut Client,
    receivers: &mut [&mut Client],
    group: GroupId,
    text: &str,
) {
    bounded(
        "broadcast",
        sender.broadcast(group, Bytes::from(text.to_string()), true),
    )
    .await
    .unwrap();
    for receiver in receivers.iter_mut() {
        let mut pushes = Vec::new();
        bounded(text, async {
            while !pushes.iter().any(|p| carries(p, text)) {
                match receiver.next_push().await {
                    Some(push) => pushes.push(push),
                    None => panic!("{text}: connection closed"),
                }
            }
        })
        .await;
        pushes.extend(pushes_within(receiver, Duration::from_millis(300)).await);
        let copies = pushes.iter().filter(|p| carries(p, text)).count();
        assert_eq!(copies, 1, "{text}: delivered {copies} times ({pushes:?})");
        assert!(
            !pushes.iter().any(|p| matches!(p, Push::Response(_))),
            "an answer nobody asked for: {pushes:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_is_not_declared_dead_for_a_second_and_settles_after_ten() {
    let config = config_file("frozen", CONFIG);
    let n1 = Node::start(&config, &[]);
    let seed = n1.addr("mesh");
    let n2 = Node::start(&config, &[seed]);
    let n3 = Node::start(&config, &[seed]);
    let mut a = user(&n1, "a").await;
    let group = group_with_two_backups(&mut a).await;
    let mut b = user(&n2, "b").await;
    let mut c = user(&n3, "c").await;
    bounded("b joins", b.join(group, b"")).await.unwrap();
    bounded("c joins", c.join(group, b"")).await.unwrap();
    let _ = pushes_within(&mut a, Duration::from_millis(300)).await;

    // One second frozen: no failover.
    n1.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    n1.signal("-CONT");
    for (name, client) in [("b", &mut b), ("c", &mut c)] {
        let pushes = pushes_within(client, Duration::from_secs(4)).await;
        assert!(
            !pushes
                .iter()
                .any(|p| matches!(p, Push::Joined { .. } | Push::Left { .. })),
            "{name}: a one-second freeze changed the group: {pushes:?}"
        );
    }
    delivered_once(&mut b, &mut [&mut a, &mut c], group, "after 1 s").await;

    // Ten seconds frozen: the survivors fail over.
    let frozen = Instant::now();
    n1.signal("-STOP");
    for (name, client) in [("b", &mut b), ("c", &mut c)] {
        bounded("the rejoin push", async {
            loop {
                match client.next_push().await {
                    Some(Push::Joined { uid, .. }) if uid == name => return,
                    Some(_) => {}
                    None => panic!("{name}: connection closed"),
                }
            }
        })
        .await;
    }
    eprintln!("failover {:?} after SIGSTOP", frozen.elapsed());
    // A join on a survivor while the old owner is frozen: answered once, Ok.
    let mut d = user(&n2, "d").await;
    bounded("d joins", d.join(group, b"")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(frozen.elapsed())).await;
    n1.signal("-CONT");
    let resumed = Instant::now();

    // The old owner comes back as a copy; its member a stays. Wait for the cluster to settle: a's
    // broadcast reaches b once membership and the group's owner agree.
    bounded("the cluster settles", async {
        loop {
            let _ = pushes_within(&mut b, Duration::from_millis(100)).await;
            let _ = pushes_within(&mut c, Duration::from_millis(100)).await;
            let _ = pushes_within(&mut d, Duration::from_millis(100)).await;
            let probe = format!("probe {:?}", resumed.elapsed());
            a.broadcast(group, Bytes::from(probe.clone()), true)
                .await
                .unwrap();
            let got = pushes_within(&mut b, Duration::from_millis(500)).await;
            if got.iter().any(|p| carries(p, &probe)) {
                return;
            }
        }
    })
    .await;
    eprintln!("settled {:?} after SIGCONT", resumed.elapsed());
    let _ = pushes_within(&mut a, Duration::from_millis(500)).await;
    let _ = pushes_within(&mut c, Duration::from_millis(500)).await;
    let _ = pushes_within(&mut d, Duration::from_millis(500)).await;
    delivered_once(&mut a, &mut [&mut b, &mut c, &mut d], group, "from a after").await;
    delivered_once(&mut b, &mut [&mut a, &mut c, &mut d], group, "from b after").await;
    delivered_once(&mut d, &mut [&mut a, &mut b, &mut c], group, "from d after").await;
    drop((n2, n3));
    let _ = std::fs::remove_file(&config);
}
