//! Benchmarks of the core alone (no sockets): broadcast fan-out per delivered push, merged flushes,
//! join+leave throughput, and request decoding. Run with `cargo bench -p group-core`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use group_core::proto::{CreateRequest, Request, VER_GROUP, cmd, decode_client_frame};
use group_core::{
    Call, ConnId, Event, GroupId, Handled, Input, Instant, JoinStatus, MeshTransmit, Node,
    NodeConfig, Sink, Transmit,
};

/// A node with `members` greeted users, all in one group with the given merge interval.
fn node_with_group(members: usize, interval_ms: u16) -> (Node, GroupId) {
    let mut config = NodeConfig::default();
    config.limits.max_members_per_group = members + 1;
    config.limits.connection_ttl = Duration::from_secs(86_400);
    let mut node = Node::new(config, Instant::ZERO).unwrap();
    let now = Instant::ZERO;
    for i in 0..members {
        let conn = ConnId(i as u64);
        assert_eq!(
            node.handle(Input::Connect(conn), now),
            Handled::Connect(Ok(()))
        );
        let hello = Request::Hello {
            uid: format!("user{i}"),
            token: Bytes::new(),
        };
        let _outcome = node.handle(
            Input::Request {
                conn,
                request: hello,
            },
            now,
        );
    }
    let create = CreateRequest {
        allow_empty: true,
        join: true,
        ttl_s: 60,
        interval_ms,
    };
    let create = Call::Create {
        params: create,
        creator: Some("user0".into()),
    };
    let Handled::Create(Ok(group)) = node.handle(Input::Call(create), now) else {
        panic!("the group is created")
    };
    for i in 1..members {
        let join = Call::Join {
            group,
            uid: format!("user{i}"),
            message: Bytes::new(),
            ver: VER_GROUP,
            cmd: cmd::JOIN,
        };
        let joined = node.handle(Input::Call(join), now);
        assert_eq!(joined, Handled::Join(Ok(JoinStatus::Joined)));
    }
    drain(&mut node);
    (node, group)
}

/// Counts the frames of one drain through the shared drain loop.
#[derive(Default)]
struct Count(usize);

impl Sink for Count {
    fn transmit(&mut self, transmit: Transmit) -> bool {
        black_box(&transmit);
        self.0 += 1;
        true
    }
    fn event(&mut self, event: Event) {
        black_box(&event);
    }
    fn mesh(&mut self, transmit: MeshTransmit) {
        black_box(&transmit);
    }
}

fn drain(node: &mut Node) -> usize {
    let mut count = Count::default();
    let _deadline = node.drain(Instant::ZERO, &mut count);
    count.0
}

/// A broadcast from `uid` as the server API makes it.
fn broadcast(id: GroupId, uid: &str, message: &Bytes) -> Input {
    Input::Call(Call::Broadcast {
        group: id,
        uid: uid.into(),
        ver: VER_GROUP,
        cmd: cmd::BROADCAST,
        message: message.clone(),
        reliable: true,
    })
}

fn broadcast_fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast_interval_0");
    for members in [10usize, 1_000, 10_000] {
        let (mut node, id) = node_with_group(members, 0);
        let message = Bytes::from(vec![7u8; 64]);
        group.throughput(Throughput::Elements((members - 1) as u64));
        group.bench_function(BenchmarkId::new("members", members), |b| {
            b.iter(|| {
                let sent = node.handle(broadcast(id, "user0", &message), Instant::ZERO);
                assert_eq!(sent, Handled::Broadcast(Ok(())));
                assert_eq!(drain(&mut node), members - 1);
            })
        });
    }
    group.finish();
}

/// The floor any delivery must pay: clone the shared frame, queue it for a connection, drain it. The
/// README reports the broadcast figures as a ratio to this, measured in the same run.
fn delivery_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor_clone_queue_drain");
    let members = 1_000usize;
    // Frozen from BytesMut like every frame the node builds (a Vec-backed Bytes clones more slowly).
    let frame = BytesMut::from(&[7u8; 64 + 52 + 8][..]).freeze();
    let mut queue = std::collections::VecDeque::new();
    group.throughput(Throughput::Elements(members as u64));
    group.bench_function(BenchmarkId::new("members", members), |b| {
        b.iter(|| {
            for i in 0..members {
                queue.push_back(group_core::Transmit {
                    conn: ConnId(i as u64),
                    frame: frame.clone(),
                    reliable: true,
                });
            }
            let mut n = 0;
            while let Some(t) = queue.pop_front() {
                black_box(&t);
                n += 1;
            }
            assert_eq!(n, members);
        })
    });
    group.finish();
}

fn merged_flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("merged_10_broadcasts_interval_100ms");
    for members in [10usize, 1_000] {
        let (mut node, id) = node_with_group(members, 100);
        let message = Bytes::from(vec![7u8; 64]);
        let mut now = Instant::ZERO;
        // Ten different senders per interval: each of them gets a copy without its own entry.
        group.throughput(Throughput::Elements(members as u64));
        let mut iterations = 0u64;
        group.bench_function(BenchmarkId::new("members", members), |b| {
            b.iter(|| {
                // Virtual time runs 100 ms per iteration: keep the sessions from idling out.
                iterations += 1;
                if iterations.is_multiple_of(10_000) {
                    for i in 0..members {
                        let conn = ConnId(i as u64);
                        let request = Request::KeepAlive;
                        let _outcome = node.handle(Input::Request { conn, request }, now);
                    }
                    drain(&mut node);
                }
                for s in 0..10 {
                    let sender = format!("user{s}");
                    let sent = node.handle(broadcast(id, &sender, &message), now);
                    assert_eq!(sent, Handled::Broadcast(Ok(())));
                }
                now = now.saturating_add(Duration::from_millis(100));
                let _done = node.handle(Input::Timeout, now);
                assert_eq!(drain(&mut node), members);
            })
        });
    }
    group.finish();
}

fn join_leave(c: &mut Criterion) {
    let (mut node, id) = node_with_group(1_000, 0);
    let conn = ConnId(1_000_000);
    let connected = node.handle(Input::Connect(conn), Instant::ZERO);
    assert_eq!(connected, Handled::Connect(Ok(())));
    let hello = Request::Hello {
        uid: "joiner".into(),
        token: Bytes::new(),
    };
    let _outcome = node.handle(
        Input::Request {
            conn,
            request: hello,
        },
        Instant::ZERO,
    );
    drain(&mut node);
    let mut group = c.benchmark_group("join_leave");
    group.throughput(Throughput::Elements(2));
    group.bench_function("request_pair_in_1000_member_group", |b| {
        b.iter(|| {
            let join = Request::Join {
                group: id,
                message: Bytes::new(),
            };
            let _joined = node.handle(
                Input::Request {
                    conn,
                    request: join,
                },
                Instant::ZERO,
            );
            let leave = Request::Leave {
                group: id,
                message: Bytes::new(),
            };
            let _left = node.handle(
                Input::Request {
                    conn,
                    request: leave,
                },
                Instant::ZERO,
            );
            assert_eq!(drain(&mut node), 2);
        })
    });
    group.finish();
}

fn decode_requests(c: &mut Criterion) {
    let id: GroupId = GroupId::generate(1, NodeConfig::default().addr, &[]);
    let mut stream = BytesMut::new();
    for _ in 0..100 {
        Request::Broadcast {
            group: id,
            reliable: true,
            message: Bytes::from(vec![1u8; 64]),
        }
        .encode(&mut stream);
    }
    let stream = stream.freeze();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(100));
    group.bench_function("100_broadcast_frames", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&stream[..]);
            let mut n = 0;
            while let Some(frame) = decode_client_frame(&mut buf, 65_536).unwrap() {
                black_box(Request::parse(&frame).unwrap());
                n += 1;
            }
            assert_eq!(n, 100);
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    delivery_floor,
    broadcast_fan_out,
    merged_flush,
    join_leave,
    decode_requests
);
criterion_main!(benches);
