//! Deterministic simulation: one node, many clients, seeded random operations on a virtual clock that
//! jumps from deadline to deadline. After every step the invariants are checked:
//! - no push ever reaches a non-member, and no broadcast comes back to its sender;
//! - membership indexes agree in both directions (user -> groups, group -> members);
//! - TTL deletion happens exactly when the rules say, and static groups never disappear;
//! - merged pushes hold exactly the broadcasts sent to the group, in order, none twice, none missing;
//! - the same seed gives the same transcript (checked by hashing it), another seed a different one.
//!
//! `SIM_SEEDS=n SIM_STEPS=m cargo test -p group-core --test simulation` runs a longer search.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod checks;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use group_core::proto::{
    ClientFrame, CreateRequest, RandJoinRequest, Request, ServerFrame, Status, VER_GROUP, cmd,
    decode_server_frame, parse_broadcast_push, parse_member_push,
};
use group_core::rng::SplitMix64;
use group_core::{
    Call, CloseReason, ConnId, Event, GroupId, Handled, Input, Instant, MeshTransmit, Node,
    NodeConfig, Outcome, Sink, StaticGroup, Transmit,
};

const STATIC_NAMES: [&str; 2] = ["STATIC-LOBBY", "STATIC-MERGED"];

fn static_id(name: &str) -> GroupId {
    format!("{name:-<52}").parse().unwrap()
}
const MAX_CONNS: u64 = 24;
const UIDS: usize = 36;

/// Picks one of `items` with the simulation's generator.
fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.below(items.len())])
}

/// What the simulation knows about a group from outside the node.
#[derive(Clone, Copy)]
struct GroupModel {
    allow_empty: bool,
    is_static: bool,
    ttl: Duration,
    empty_since: Option<Instant>,
}

/// One accepted broadcast or announce.
struct Sent {
    group: GroupId,
    /// Position in the group's send order.
    position: usize,
    /// Empty for announces.
    sender: String,
}

#[derive(Default)]
struct Model {
    groups: BTreeMap<GroupId, GroupModel>,
    /// (uid, group) -> group send-order length when the membership began.
    memberships: BTreeMap<(String, GroupId), usize>,
    sent: BTreeMap<u64, Sent>,
    /// Sender of each accepted broadcast, per group, in send order.
    sent_per_group: BTreeMap<GroupId, Vec<String>>,
    /// (uid, group) -> positions received during the current membership, in arrival order.
    received: BTreeMap<(String, GroupId), Vec<usize>>,
    /// Connection -> uid of its session, as of the end of the last step.
    conn_uid: BTreeMap<ConnId, String>,
}

enum StepKind {
    Request(ConnId),
    Timeout,
    Disconnect,
    ServerApi,
}

struct Sim {
    node: Node,
    now: Instant,
    rng: SplitMix64,
    model: Model,
    open: Vec<ConnId>,
    next_conn: u64,
    known_groups: Vec<GroupId>,
    next_seq: u64,
    hasher: DefaultHasher,
    steps: usize,
    pushes_checked: usize,
    final_hash: u64,
    coverage: Coverage,
    /// What the node said of the last request; checked against the frames it sent.
    last_outcome: Option<Outcome>,
}

/// How often the interesting paths ran, so a test can tell a simulation that stopped exercising them.
#[derive(Default, Debug)]
struct Coverage {
    ttl_deletions: usize,
    merged_pushes: usize,
    idle_closes: usize,
    replacements: usize,
    refusals: usize,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut config = NodeConfig {
            seed,
            ..NodeConfig::default()
        };
        config.limits.max_groups_per_user = 6;
        config.limits.max_members_per_group = 10;
        config.limits.max_groups = 40;
        config.limits.max_merge_bytes = 300;
        config.group.static_groups = vec![
            StaticGroup {
                id: static_id(STATIC_NAMES[0]),
                interval: Duration::ZERO,
            },
            StaticGroup {
                id: static_id(STATIC_NAMES[1]),
                interval: Duration::from_millis(250),
            },
        ];
        let node = Node::new(config, Instant::ZERO).unwrap();
        let mut model = Model::default();
        for id in node.group_ids() {
            let g = GroupModel {
                allow_empty: true,
                is_static: true,
                ttl: Duration::ZERO,
                empty_since: None,
            };
            model.groups.insert(*id, g);
        }
        let known_groups = node.group_ids().copied().collect();
        Sim {
            node,
            now: Instant::ZERO,
            rng: SplitMix64::new(seed ^ 0x5EED),
            model,
            open: vec![],
            next_conn: 1,
            known_groups,
            next_seq: 0,
            hasher: DefaultHasher::new(),
            steps: 0,
            pushes_checked: 0,
            final_hash: 0,
            coverage: Coverage::default(),
            last_outcome: None,
        }
    }

    fn run(&mut self, steps: usize) -> u64 {
        for _ in 0..steps {
            self.random_step();
        }
        // Let every member speak up so nobody idles out, then let every merge buffer flush.
        for conn in self.open.clone() {
            self.request(conn, Request::KeepAlive);
        }
        self.advance(Duration::from_millis(1_100));
        self.check_completeness();
        self.hasher.finish()
    }

    fn random_step(&mut self) {
        let roll = self.rng.below(100);
        let conn = pick(&mut self.rng, &self.open);
        let group = self.pick_group(conn);
        match (roll, conn) {
            (0..=7, _) | (_, None) => self.connect(),
            (8..=15, Some(c)) => {
                let uid = format!("user{}", self.rng.below(UIDS));
                self.request(
                    c,
                    Request::Hello {
                        uid,
                        token: Bytes::new(),
                    },
                );
            }
            (16..=23, Some(c)) => {
                let request = CreateRequest {
                    allow_empty: self.rng.chance(50),
                    join: self.rng.chance(80),
                    ttl_s: [5, 11, 12, 30][self.rng.below(4)],
                    interval_ms: [0, 0, 50, 100, 250, 1000][self.rng.below(6)],
                };
                self.request(c, Request::Create(request));
            }
            (24..=38, Some(c)) => {
                let message = self.maybe_message();
                self.request(c, Request::Join { group, message });
            }
            (39..=46, Some(c)) => {
                let message = self.maybe_message();
                self.request(c, Request::Leave { group, message });
            }
            (47..=71, Some(c)) => {
                let seq = self.next_sequence();
                let message = Bytes::from(format!("b{seq}"));
                let reliable = self.rng.chance(50);
                let request = Request::Broadcast {
                    group,
                    reliable,
                    message,
                };
                self.last_outcome = Some(self.outcome(Input::Request { conn: c, request }));
                self.finish_step(StepKind::Request(c), Some((seq, group)));
            }
            (72..=74, _) => {
                let seq = self.next_sequence();
                let announce = Call::Announce {
                    group,
                    ver: VER_GROUP,
                    cmd: cmd::BROADCAST,
                    message: Bytes::from(format!("b{seq}")),
                    reliable: true,
                };
                let handled = self.node.handle(Input::Call(announce), self.now);
                if handled == Handled::Broadcast(Ok(())) {
                    self.record(seq, group, String::new());
                }
                self.finish_step(StepKind::ServerApi, None);
            }
            (75..=78, Some(c)) => {
                let ttl_s = [5, 20][self.rng.below(2)];
                let params = RandJoinRequest {
                    allow_empty: self.rng.chance(50),
                    ttl_s,
                    interval_ms: 0,
                    message: Bytes::new(),
                };
                self.request(c, Request::RandJoin(params));
            }
            (79..=82, Some(c)) => self.request(c, Request::KeepAlive),
            (83..=84, Some(c)) => self.request(c, Request::Fin),
            (85..=86, Some(c)) => {
                let _done = self.node.handle(Input::Disconnect(c), self.now);
                self.open.retain(|o| *o != c);
                self.finish_step(StepKind::Disconnect, None);
            }
            (87..=89, Some(c)) => {
                let len = self.rng.below(60);
                let payload: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                let frame = ClientFrame {
                    ver: self.rng.below(3) as u8,
                    cmd: [0, 1, 3, 4, 110, 111, 112, 113, 114, 999][self.rng.below(10)],
                    payload: Bytes::from(payload),
                };
                self.last_outcome = Some(self.outcome(Input::Frame { conn: c, frame }));
                self.finish_step(StepKind::Request(c), None);
            }
            _ => {
                let by = Duration::from_millis(self.rng.below(1_200) as u64);
                self.advance(by);
            }
        }
    }

    fn maybe_message(&mut self) -> Bytes {
        if self.rng.chance(50) {
            Bytes::from_static(b"note")
        } else {
            Bytes::new()
        }
    }

    fn next_sequence(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Mostly a group the connection's user is in or one that exists; sometimes a deleted one, rarely one
    /// that never existed.
    fn pick_group(&mut self, conn: Option<ConnId>) -> GroupId {
        let roll = self.rng.below(100);
        let mine: Vec<GroupId> = conn
            .and_then(|c| self.node.session_of(c))
            .and_then(|(uid, _)| self.node.user_group_ids(uid))
            .map(<[GroupId]>::to_vec)
            .unwrap_or_default();
        let existing: Vec<GroupId> = self.node.group_ids().copied().collect();
        match roll {
            0..=2 => Some(GroupId::generate(u64::MAX, self.node.config().addr, &[])),
            3..=9 => pick(&mut self.rng, &self.known_groups),
            10..=59 => pick(&mut self.rng, &mine).or_else(|| pick(&mut self.rng, &existing)),
            _ => pick(&mut self.rng, &existing),
        }
        .unwrap_or_else(|| static_id(STATIC_NAMES[0]))
    }

    fn connect(&mut self) {
        if self.open.len() as u64 >= MAX_CONNS {
            return;
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let connected = self.node.handle(Input::Connect(conn), self.now);
        assert_eq!(connected, Handled::Connect(Ok(())));
        self.open.push(conn);
        self.finish_step(StepKind::ServerApi, None);
        if self.rng.chance(90) {
            let uid = format!("user{}", self.rng.below(UIDS));
            self.request(
                conn,
                Request::Hello {
                    uid,
                    token: Bytes::new(),
                },
            );
        }
    }

    fn request(&mut self, conn: ConnId, request: Request) {
        self.last_outcome = Some(self.outcome(Input::Request { conn, request }));
        self.finish_step(StepKind::Request(conn), None);
    }

    /// Feeds a client's request (or frame) and returns its outcome; the step drains it.
    fn outcome(&mut self, input: Input) -> Outcome {
        match self.node.handle(input, self.now) {
            Handled::Request(outcome) => outcome,
            other => panic!("a request is answered with its outcome, not {other:?}"),
        }
    }

    /// Runs every deadline up to `now + by`, one step each, in order.
    fn advance(&mut self, by: Duration) {
        let end = self.now.saturating_add(by);
        while let Some(at) = self.node.poll_timeout().filter(|at| *at <= end) {
            self.now = at.max(self.now);
            let _done = self.node.handle(Input::Timeout, self.now);
            self.finish_step(StepKind::Timeout, None);
        }
        self.now = end;
    }

    fn record(&mut self, seq: u64, group: GroupId, sender: String) {
        let senders = self.model.sent_per_group.entry(group).or_default();
        self.model.sent.insert(
            seq,
            Sent {
                group,
                position: senders.len(),
                sender: sender.clone(),
            },
        );
        senders.push(sender);
    }
}

fn simulate(seed: u64, steps: usize) -> Sim {
    let mut sim = Sim::new(seed);
    let hash = sim.run(steps);
    sim.final_hash = hash;
    sim
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_operations_keep_every_invariant() {
    let seeds = env_or("SIM_SEEDS", 12) as u64;
    let steps = env_or("SIM_STEPS", 4_000);
    let mut total = Coverage::default();
    let mut pushes = 0;
    for seed in 0..seeds {
        let sim = simulate(seed, steps);
        pushes += sim.pushes_checked;
        total.ttl_deletions += sim.coverage.ttl_deletions;
        total.merged_pushes += sim.coverage.merged_pushes;
        total.idle_closes += sim.coverage.idle_closes;
        total.replacements += sim.coverage.replacements;
        total.refusals += sim.coverage.refusals;
    }
    println!("{seeds} seeds x {steps} operations: {pushes} pushes checked, {total:?}");
    // Guard against a simulation that quietly stops exercising what it claims to check.
    assert!(
        pushes > seeds as usize * steps / 10,
        "only {pushes} pushes checked"
    );
    assert!(
        total.ttl_deletions > 0 && total.merged_pushes > 0,
        "{total:?}"
    );
    assert!(
        total.idle_closes > 0 && total.replacements > 0 && total.refusals > 0,
        "{total:?}"
    );
}

#[test]
fn the_same_seed_gives_the_same_transcript() {
    let a = simulate(7, 2_000);
    let b = simulate(7, 2_000);
    let c = simulate(8, 2_000);
    assert_eq!(a.final_hash, b.final_hash);
    assert_eq!(a.steps, b.steps);
    assert_ne!(
        a.final_hash, c.final_hash,
        "different seeds explore different transcripts"
    );
}
