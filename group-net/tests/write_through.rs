//! Write-through: on a quiet turn the node task writes a plain TCP member's frames itself, and hands its
//! writer only what the socket did not take, often a frame cut in the middle. What must hold: a member
//! whose socket fills gets every broadcast whole and in order once it reads, however the bytes were
//! split between the node's writes and the writer's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{
    Transport, bounded, config, draining_members, kept_group, next_push, raw_slow_member, start,
    user,
};
use group_core::GroupId;
use group_core::proto::{
    ServerFrame, Status, VER_GROUP, cmd, decode_server_frame, parse_broadcast_push,
};
use group_net::client::Push;
use group_net::{ServerBuilder, ServerHandle};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Frames off `stream` until `wanted` says stop; fails the test on a frame it cannot decode.
async fn read_until(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut wanted: impl FnMut(ServerFrame) -> bool,
) {
    loop {
        while let Some(frame) = decode_server_frame(buf, 1 << 24).expect("a whole, valid frame") {
            if wanted(frame) {
                return;
            }
        }
        let read = stream.read_buf(buf).await.unwrap();
        assert!(read > 0, "the server closed the slow member's connection");
    }
}

/// Broadcasts message `n` as "sender" from server code, which waits for the node to take it.
async fn broadcast(api: &ServerHandle, group: GroupId, n: u32, size: usize) {
    let message = message(n, size);
    let sent = api.broadcast(
        group,
        "sender".into(),
        VER_GROUP,
        cmd::BROADCAST,
        message,
        true,
    );
    bounded("broadcast", sent).await.unwrap();
}

/// Reads broadcasts off `stream` until message `until`, checking that each is the next in order.
async fn read_in_order(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    next: &mut u32,
    until: u32,
    size: usize,
) {
    read_until(stream, buf, |frame| {
        if (frame.ver, frame.cmd, frame.status) != (VER_GROUP, cmd::BROADCAST, Status::Push) {
            return false;
        }
        let (_, entries) = parse_broadcast_push(&frame.payload).unwrap();
        for entry in entries {
            assert_eq!(entry.message, message(*next, size), "broadcast {next}");
            *next += 1;
        }
        *next == until
    })
    .await;
}

/// Each message carries its number and a filler that depends on it, so a frame spliced at the wrong
/// place shows.
fn message(n: u32, size: usize) -> Bytes {
    let mut message = n.to_be_bytes().to_vec();
    message.extend((0..size - 4).map(|i| ((n as usize + i) % 251) as u8));
    Bytes::from(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_socket_fills_gets_every_broadcast_whole_and_in_order() {
    fill_and_drain(Some(0)).await;
}

/// The same with the writers on a thread of their own (`server.writerThreads`): the node's writes
/// through and the writer thread's writes still never overtake each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_writer_threads_every_broadcast_arrives_whole_and_in_order() {
    fill_and_drain(Some(1)).await;
}

/// The same on a runtime of one worker, where `"auto"` has the flusher write on the runtime itself,
/// between the node's turns: what it could not write still goes to the writer, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn with_the_writes_on_a_one_worker_runtime_every_broadcast_arrives_whole_and_in_order() {
    fill_and_drain(None).await;
}

/// Three rounds: the slow member reads nothing while 1500 broadcasts go out, then reads them all.
async fn fill_and_drain(writer_threads: Option<usize>) {
    const ROUNDS: u32 = 3;
    const PER_ROUND: u32 = 1500;
    // Not a multiple of anything the kernel's buffers are: the socket fills in the middle of frames.
    const SIZE: usize = 3001;
    let mut cfg = config();
    cfg.limits.max_requests_per_second = 1_000_000;
    cfg.limits.max_inbound_bytes_per_second = 1 << 30;
    cfg.limits.max_queued_bytes_per_connection = 32 << 20;
    cfg.outbound_queue = 4096; // one entry per turn: room for every broadcast
    cfg.writer_threads = writer_threads;
    let server = start(ServerBuilder::new(cfg)).await;
    let mut sender = user(&server, Transport::Tcp, "sender").await;
    let params = kept_group();
    let group = bounded("create", sender.create(params)).await.unwrap();

    // The slow member: a raw socket with a small receive buffer that reads nothing while the
    // broadcasts go out.
    let mut slow = raw_slow_member(&server, "slow", group).await;
    let mut buf = BytesMut::new();
    bounded(
        "the join's answer",
        read_until(&mut slow, &mut buf, |frame| {
            (frame.ver, frame.cmd) == (VER_GROUP, cmd::JOIN) && frame.status != Status::Push
        }),
    )
    .await;

    // Rounds: the slow member reads nothing while a round's broadcasts go out (the node writes through
    // until the socket is full, cutting a frame, and queues the rest behind the writer), then reads them
    // all (the writer drains, and the next round writes through again).
    let api = server.handle();
    let mut next = 0;
    for round in 1..=ROUNDS {
        // One broadcast at a time, each answered before the next (the server API's broadcast waits for
        // the node, a client's does not): every node turn takes one input, the kind that writes through.
        for n in next..round * PER_ROUND {
            broadcast(&api, group, n, SIZE).await;
        }
        let every = read_in_order(&mut slow, &mut buf, &mut next, round * PER_ROUND, SIZE);
        bounded("every broadcast of the round", every).await;
    }
    // The rounds did take the path under test: every round starts with the writer idle.
    assert!(
        server.frames_written_through() > 0,
        "no frame was written through"
    );
    drop(sender);
}

/// A quiet broadcast to more members than the node writes to itself goes to their writers (they write
/// in parallel, and the node is free for other groups' inputs); to a few members it is written through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_broadcast_to_many_members_goes_to_their_writers() {
    quiet_broadcasts(0).await;
}

/// The same with a writer thread: the big fan-out goes to the thread's flusher, which writes every
/// member in one round (`flusher`), and nothing goes there when there is no writer thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_writer_thread_a_big_fan_out_is_written_by_its_flusher() {
    quiet_broadcasts(1).await;
}

async fn quiet_broadcasts(writer_threads: usize) {
    let mut cfg = config();
    cfg.writer_threads = Some(writer_threads);
    let server = start(ServerBuilder::new(cfg)).await;
    let api = server.handle();
    // The node writes through to at most 64 connections a turn (`WRITE_THROUGH_CONNECTIONS`): a
    // broadcast to 66 members reaches 65 others.
    for members in [3, 66] {
        let mut first = user(&server, Transport::Tcp, &format!("first-of-{members}")).await;
        let group = bounded("create", first.create(kept_group())).await.unwrap();
        let mut clients = vec![first];
        for n in 1..members {
            let mut client = user(&server, Transport::Tcp, &format!("m{n}-of-{members}")).await;
            bounded("join", client.join(group, b"hi")).await.unwrap();
            clients.push(client);
        }
        // Every join's pushes are out before the count is read: each member has seen the last join.
        let last = format!("m{}-of-{members}", members - 1);
        for client in clients.iter_mut().take(members - 1) {
            while !matches!(next_push(client).await, Push::Joined { uid, .. } if uid == last) {}
        }
        // Server code broadcasts as the first member: one input, a turn that touches the others. A
        // member's writer counts its last push off only after the client may already have read it, so
        // the node can find a writer still busy and hand it the frame: a few members' broadcast is
        // written through whole once the writers are idle, which the retries wait for; a big
        // fan-out never is.
        let others = members as u64 - 1;
        let mut whole = false;
        for attempt in 0..20 {
            let before = server.frames_written_through();
            let flushed_before = server.frames_flushed();
            let sender = format!("first-of-{members}");
            let message = message(attempt, 16);
            let broadcast = api.broadcast(group, sender, VER_GROUP, cmd::BROADCAST, message, true);
            bounded("broadcast", broadcast).await.unwrap();
            for client in clients.iter_mut().skip(1) {
                while !matches!(next_push(client).await, Push::Broadcast { .. }) {}
            }
            let through = server.frames_written_through() - before;
            let flushed = server.frames_flushed() - flushed_before;
            if others > 64 {
                assert_eq!(through, 0, "{members} members: handed to the writers");
                if writer_threads == 0 {
                    assert_eq!(flushed, 0, "no writer thread, no flusher");
                } else if flushed == others {
                    whole = true;
                    break;
                }
            } else if through == others {
                whole = true;
                break;
            }
        }
        assert!(
            whole || (others > 64 && writer_threads == 0),
            "{members} members: no broadcast written whole by the node or the flusher"
        );
    }
}

/// A member of a big group (its fan-outs go to the writer thread's flusher as one message, not an
/// entry per member) and of a small one (its broadcasts are written through by the node when the
/// member's writer and the flusher are idle), whose socket fills: the two groups' broadcasts reach it
/// whole and in the order the node handled them, however they were split between the node's writes,
/// the flusher's and the writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_groups_fan_outs_and_a_small_groups_writes_through_keep_their_order() {
    fan_outs_and_writes_through(Some(1)).await;
}

/// The same with the flusher on a one-worker runtime (`"auto"`), where it shares the thread with the
/// node task and lets the node's turns join its rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn on_a_one_worker_runtime_fan_outs_and_writes_through_keep_their_order() {
    fan_outs_and_writes_through(None).await;
}

async fn fan_outs_and_writes_through(writer_threads: Option<usize>) {
    const ROUNDS: u32 = 3;
    const PER_ROUND: u32 = 600;
    const SIZE: usize = 1001;
    // More than the 64 connections the node writes through to itself (`WRITE_THROUGH_CONNECTIONS`).
    const READERS: usize = 68;
    let mut cfg = config();
    cfg.limits.max_requests_per_second = 1_000_000;
    cfg.limits.max_inbound_bytes_per_second = 1 << 30;
    cfg.limits.max_queued_bytes_per_connection = 32 << 20;
    cfg.outbound_queue = 4096;
    cfg.writer_threads = writer_threads;
    let server = start(ServerBuilder::new(cfg)).await;
    let mut sender = user(&server, Transport::Tcp, "sender").await;
    let big = bounded("create", sender.create(kept_group()))
        .await
        .unwrap();
    let small = bounded("create", sender.create(kept_group()))
        .await
        .unwrap();
    // Members of the big group that read (and drop) everything as it comes.
    let readers = draining_members(&server, "reader", big, READERS).await;
    let mut slow = raw_slow_member(&server, "slow", big).await;
    let mut join = BytesMut::new();
    group_core::proto::Request::Join {
        group: small,
        message: Bytes::new(),
    }
    .encode(&mut join);
    tokio::io::AsyncWriteExt::write_all(&mut slow, &join)
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let mut answers = 0;
    bounded(
        "both joins' answers",
        read_until(&mut slow, &mut buf, |frame| {
            if (frame.ver, frame.cmd) == (VER_GROUP, cmd::JOIN) && frame.status != Status::Push {
                answers += 1;
            }
            answers == 2
        }),
    )
    .await;

    let api = server.handle();
    let mut next = 0;
    for round in 1..=ROUNDS {
        for n in next..round * PER_ROUND {
            // Two of three to the big group, in an order that mixes runs of both.
            let group = if n % 3 == 0 { small } else { big };
            broadcast(&api, group, n, SIZE).await;
        }
        let every = read_in_order(&mut slow, &mut buf, &mut next, round * PER_ROUND, SIZE);
        bounded("every broadcast of the round", every).await;
    }
    // Both paths were taken: the small group's frames written through, the big group's flushed.
    assert!(
        server.frames_written_through() > 0,
        "nothing written through"
    );
    assert!(server.frames_flushed() > 0, "nothing flushed");
    drop(sender);
    for reader in readers {
        reader.abort();
    }
}

/// On a runtime of one worker, inputs that reach the server together are handled in one node turn:
/// woken by the first reader's input, the node task lets the other ready readers hand theirs over
/// first. A turn of one input each would write every broadcast through on its own (one write per
/// delivery); a turn of several hands them to the flusher, which writes each member once.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn on_a_one_worker_runtime_inputs_ready_together_are_one_turn() {
    const SENDERS: usize = 8;
    let server = start(ServerBuilder::new(config())).await;
    let mut owner = user(&server, Transport::Tcp, "owner").await;
    let group = bounded("create", owner.create(kept_group())).await.unwrap();
    let mut senders = Vec::new();
    for n in 0..SENDERS {
        let mut sender = raw_slow_member(&server, &format!("sender-{n}"), group).await;
        let mut buf = BytesMut::new();
        bounded(
            "the join's answer",
            read_until(&mut sender, &mut buf, |frame| {
                (frame.ver, frame.cmd) == (VER_GROUP, cmd::JOIN) && frame.status != Status::Push
            }),
        )
        .await;
        let sender = sender.into_std().unwrap();
        sender.set_nonblocking(false).unwrap();
        senders.push(sender);
    }

    // Hold the worker while every sender's broadcast reaches the server's sockets.
    let (held, worker_held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    drop(tokio::spawn(async move {
        held.send(()).unwrap();
        let _ = released.recv_timeout(std::time::Duration::from_secs(10));
    }));
    worker_held
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let before = server.frames_written_through();
    for (n, sender) in senders.iter_mut().enumerate() {
        let mut frame = BytesMut::new();
        group_core::proto::Request::Broadcast {
            group,
            reliable: true,
            message: message(u32::try_from(n).unwrap(), 32),
        }
        .encode(&mut frame);
        std::io::Write::write_all(sender, &frame).unwrap();
    }
    // The kernel may hand loopback data over a little after the write: release the worker only once
    // every broadcast waits in its server-side socket, so that they are all ready together.
    let server_port = server.tcp_addr().unwrap().port();
    for sender in &senders {
        let sender_port = sender.local_addr().unwrap().port();
        let waited = std::time::Instant::now();
        while !waiting_at_server(server_port, sender_port) {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(10),
                "a broadcast never reached the server's socket"
            );
            std::thread::yield_now();
        }
    }
    release.send(()).unwrap();
    for _ in 0..SENDERS {
        while !matches!(next_push(&mut owner).await, Push::Broadcast { .. }) {}
    }
    // A broadcast handled in a turn of its own is written through to its SENDERS other members. One
    // turn per input wrote all of them through (64 frames, every run); the gathered turns write none,
    // or, when the kernel woke the server for the first socket alone, one broadcast's.
    let alone = (server.frames_written_through() - before) / SENDERS as u64;
    assert!(
        alone <= SENDERS as u64 / 2,
        "{alone} of {SENDERS} broadcasts were handled in a turn of their own"
    );
}

/// True when the server's end of the loopback connection from `client_port` has bytes not yet read
/// (its `rx_queue` in /proc/net/tcp).
fn waiting_at_server(server_port: u16, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{server_port:04X}");
    let remote = format!("0100007F:{client_port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(at), Some(from), Some(queues)) = (fields.next(), fields.next(), fields.nth(1))
        else {
            return false;
        };
        at == local && from == remote && queues.split(':').nth(1).is_some_and(|rx| rx != "00000000")
    })
}
