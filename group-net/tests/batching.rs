//! The node task hands each connection one turn's frames at once (a turn takes every ready input), and
//! a turn's broadcasts to the same members as one frame to a plain TCP member. What must not change:
//! every member gets every broadcast, in each sender's order, over every transport. A WebSocket member
//! gets a turn's broadcasts in one socket write.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{
    Transport, bounded, config, kept_group, next_push, numbered_broadcasts, raw_burst_sender,
    start, user,
};
use group_net::ServerBuilder;
use group_net::client::Push;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_broadcasts_from_several_senders_arrive_whole_and_in_order() {
    pipelined_broadcasts_arrive_in_order().await;
}

/// The same on a runtime of one worker, where the flusher writes on that worker between the node's
/// turns and the node lets ready readers run before each turn (`"auto"` beside one worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn on_one_worker_pipelined_broadcasts_from_several_senders_arrive_whole_and_in_order() {
    pipelined_broadcasts_arrive_in_order().await;
}

/// Twelve members over TCP, WebSocket and UDP; three TCP senders queue 300 broadcasts each at once.
async fn pipelined_broadcasts_arrive_in_order() {
    const SENT: u32 = 300;
    let mut cfg = config();
    cfg.limits.max_requests_per_second = 1_000_000;
    cfg.limits.max_inbound_bytes_per_second = 1 << 30;
    let server = start(ServerBuilder::new(cfg)).await;
    let transports = [Transport::Tcp, Transport::Ws, Transport::Udp];
    let mut members = Vec::new();
    for (i, transport) in transports.iter().cycle().take(12).enumerate() {
        members.push(user(&server, *transport, &format!("m{i}")).await);
    }
    let (creator, joiners) = members.split_first_mut().unwrap();
    let group = bounded("create", creator.create(kept_group()))
        .await
        .unwrap();
    for member in joiners {
        bounded("join", member.join(group, b"")).await.unwrap();
    }
    // Three senders queue all their broadcasts at once, so the node's turns carry many inputs.
    let mut senders = Vec::new();
    for s in 0..3 {
        let mut sender = user(&server, Transport::Tcp, &format!("s{s}")).await;
        bounded("join", sender.join(group, b"")).await.unwrap();
        senders.push(sender);
    }
    let mut sending = Vec::new();
    for mut sender in senders {
        sending.push(tokio::spawn(async move {
            for n in 0..SENT {
                let message = Bytes::from(n.to_be_bytes().to_vec());
                sender.broadcast(group, message, true).await.unwrap();
            }
            sender
        }));
    }
    for (i, mut member) in members.into_iter().enumerate() {
        let mut next: BTreeMap<String, u32> = BTreeMap::new();
        let mut received = 0;
        while received < 3 * SENT {
            let Push::Broadcast { entries, .. } = next_push(&mut member).await else {
                continue;
            };
            for entry in entries {
                let n = u32::from_be_bytes(entry.message.get(..4).unwrap().try_into().unwrap());
                let expected = next.entry(entry.uid.clone()).or_insert(0);
                assert_eq!(n, *expected, "member {i}: {} out of order", entry.uid);
                *expected += 1;
                received += 1;
            }
        }
    }
    for sending in sending {
        drop(bounded("sender", sending).await.unwrap());
    }
}

/// One sender's pipelined broadcasts to plain TCP members: a node turn that takes several of them hands
/// each member one frame with all of them (`fan_out`), and the member reads every broadcast, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turns_broadcasts_reach_a_tcp_member_as_one_frame_in_order() {
    const SENT: u32 = 64;
    const MEMBERS: usize = 8;
    let mut cfg = config();
    cfg.limits.max_requests_per_second = 1_000_000;
    cfg.limits.max_inbound_bytes_per_second = 1 << 30;
    let server = start(ServerBuilder::new(cfg)).await;
    let mut sender = user(&server, Transport::Tcp, "sender").await;
    let group = bounded("create", sender.create(kept_group()))
        .await
        .unwrap();
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut member = user(&server, Transport::Tcp, &format!("m{i}")).await;
        bounded("join", member.join(group, b"hi")).await.unwrap();
        members.push(member);
    }
    // The last join's announcement is out to everyone before the count starts.
    let last = format!("m{}", MEMBERS - 1);
    for member in members.iter_mut().take(MEMBERS - 1) {
        while !matches!(next_push(member).await, Push::Joined { uid, .. } if uid == last) {}
    }
    // Whether a turn takes several of the sender's inputs depends on timing: a few bursts are allowed.
    let mut joined = false;
    for burst in 0..20u32 {
        let before = server.frames_sent();
        for n in 0..SENT {
            let message = Bytes::from((burst * SENT + n).to_be_bytes().to_vec());
            bounded("broadcast", sender.broadcast(group, message, true))
                .await
                .unwrap();
        }
        for (i, member) in members.iter_mut().enumerate() {
            let mut expected = burst * SENT;
            while expected < (burst + 1) * SENT {
                let Push::Broadcast { entries, .. } = next_push(member).await else {
                    continue;
                };
                for entry in entries {
                    let n = u32::from_be_bytes(entry.message[..4].try_into().unwrap());
                    assert_eq!(n, expected, "member {i}: out of order");
                    expected += 1;
                }
            }
        }
        let frames = server.frames_sent() - before;
        assert!(
            frames <= u64::from(SENT) * MEMBERS as u64,
            "at most a frame per broadcast per member"
        );
        if frames < u64::from(SENT) * MEMBERS as u64 {
            joined = true;
            break;
        }
    }
    assert!(
        joined,
        "no turn joined two broadcasts into one frame in 20 bursts of {SENT}"
    );
}

/// A WebSocket member gets a node turn's broadcasts as one binary message each, but in one socket
/// write, not one write per message (tungstenite's eager writes made one `sendto` per delivery and cost
/// 4x the CPU per delivery flat out). Counted from the kernel: the server side's data segments on the
/// WebSocket connection (`ss`), which with TCP_NODELAY are one per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_turns_broadcasts_reach_a_websocket_member_in_one_write() {
    const SENT: u32 = 64;
    let mut cfg = config();
    cfg.limits.max_requests_per_second = 1_000_000;
    cfg.limits.max_inbound_bytes_per_second = 1 << 30;
    let server = start(ServerBuilder::new(cfg)).await;
    let ws_port = server.ws_addr().unwrap().port();
    let mut member = user(&server, Transport::Ws, "ws").await;
    let group = bounded("create", member.create(kept_group()))
        .await
        .unwrap();
    // The sender writes its Hello, its Join and every broadcast at once: on one worker the reader hands
    // them all to the node before the node's turn, so the member's writer gets them in one batch.
    let mut sender = raw_burst_sender(&server, "sender", group).await;
    // A join with a message is announced: once the member has it, the sender is in the group.
    while !matches!(next_push(&mut member).await, Push::Joined { uid, .. } if uid == "sender") {}
    let before = data_segments_sent(ws_port);
    sender
        .write_all(&numbered_broadcasts(group, SENT))
        .await
        .unwrap();
    let mut expected = 0;
    while expected < SENT {
        let Push::Broadcast { entries, .. } = next_push(&mut member).await else {
            continue;
        };
        for entry in entries {
            let n = u32::from_be_bytes(entry.message.get(..4).unwrap().try_into().unwrap());
            assert_eq!(n, expected, "out of order");
            expected += 1;
        }
    }
    let writes = data_segments_sent(ws_port) - before;
    assert!(
        writes <= 4,
        "{SENT} broadcasts took {writes} writes to the WebSocket member"
    );
}

/// Data segments the server sent on its one WebSocket connection so far, as `ss` reads them from the
/// kernel (`data_segs_out`).
fn data_segments_sent(ws_port: u16) -> u64 {
    let output = std::process::Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( sport = :{ws_port} )"))
        .output()
        .expect("ss (iproute2) reads the kernel's TCP counters for this test");
    let text = String::from_utf8_lossy(&output.stdout);
    let counts: Vec<u64> = text
        .split_whitespace()
        .filter_map(|field| field.strip_prefix("data_segs_out:"))
        .map(|count| count.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 1, "one WebSocket connection: {text}");
    counts.into_iter().next().unwrap()
}
