//! Deterministic cluster simulation: 3 to 7 nodes, many clients, and a mesh that loses, delays and reorders
//! messages, with nodes killed, restarted, partitioned and healed, all on one virtual clock.
//!
//! Checked after every step:
//! - no push reaches a client that is not a member of its group (membership as the client saw it from
//!   its own responses);
//! - no broadcast reaches one member twice;
//! - the same seed gives the same transcript (hashed); another seed a different one.
//!
//! Checked by the scenario tests: after the owner of a group is killed, the surviving members exchange
//! broadcasts again within a bounded simulated time, get the rejoin push, and a new member can still join;
//! a draining owner hands its group over without losing a member; after faults heal, every copy of a
//! group agrees with its owner.
//!
//! `SIM_SEEDS=n SIM_STEPS=m cargo test -p group-core --test cluster_sim` runs a longer search.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use group_core::cluster::mesh;
use group_core::proto::{
    CreateRequest, Request, Status, VER_GROUP, cmd, code, decode_server_frame,
    parse_broadcast_push, parse_error_payload, parse_member_push,
};
use group_core::rng::SplitMix64;
use group_core::{
    Call, ConnId, Event, GroupId, Handled, Input, Instant, MeshTransmit, Node, NodeAddr,
    NodeConfig, Sink, StaticGroup, Transmit,
};

const DETECT: Duration = Duration::from_secs(2);

fn static_group() -> GroupId {
    format!("{:-<52}", "STATIC-EVERYWHERE").parse().unwrap()
}
const SYNC: Duration = Duration::from_secs(1);

fn addr(i: usize) -> NodeAddr {
    NodeAddr::new(Ipv4Addr::new(10, 0, 0, 1 + i as u8), 8100)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Client {
    node: usize,
    conn: ConnId,
    uid: String,
    /// Groups this client was told (by an Ok response) it is in.
    groups: BTreeSet<GroupId>,
    /// Broadcast IDs received.
    received: BTreeSet<u64>,
    rejoins: usize,
    /// Error codes of the Bad responses it got, in order.
    refusals: Vec<u16>,
}

/// Membership news for one observer about one subject, delivered after a detection delay.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum News {
    Up(usize, usize),
    Down(usize, usize),
}

/// A mesh message on its way: (deliver at, sequence, from, to, encoded frame).
type InFlight = (Instant, u64, usize, usize, Vec<u8>);

/// What one node's drain put out, in the order the node gave it.
#[derive(Default)]
struct Drained {
    frames: Vec<Transmit>,
    mesh: Vec<MeshTransmit>,
    remote_joins: usize,
}

impl Sink for Drained {
    fn transmit(&mut self, transmit: Transmit) -> bool {
        self.frames.push(transmit);
        true
    }
    fn event(&mut self, event: Event) {
        if let Event::JoinCompleted { result: Ok(()), .. } = event {
            self.remote_joins += 1;
        }
    }
    fn mesh(&mut self, transmit: MeshTransmit) {
        self.mesh.push(transmit);
    }
}

struct Cluster {
    nodes: Vec<Option<Node>>,
    /// `group.sendInterval` of every node.
    send_interval: Duration,
    now: Instant,
    rng: SplitMix64,
    seed: u64,
    restarts: u64,
    /// (deliver at, sequence, from, to, encoded frame).
    in_flight: BinaryHeap<Reverse<InFlight>>,
    news: BinaryHeap<Reverse<(Instant, u64, News)>>,
    seq: u64,
    /// Per mille of mesh messages lost.
    loss: u64,
    /// Unordered node pairs that cannot reach each other.
    cut: BTreeSet<(usize, usize)>,
    clients: BTreeMap<ConnId, Client>,
    next_conn: u64,
    next_broadcast: u64,
    known_groups: Vec<GroupId>,
    hasher: DefaultHasher,
    pushes_checked: usize,
    coverage: Coverage,
}

/// How often the interesting paths ran, so that a test can tell when the simulation stopped reaching them.
#[derive(Default, Debug, Clone, Copy)]
struct Coverage {
    kills: usize,
    partitions: usize,
    remote_joins: usize,
    rejoin_pushes: usize,
}

impl Cluster {
    fn new(seed: u64, size: usize) -> Self {
        Cluster::build(seed, size, Duration::ZERO)
    }

    /// A cluster whose nodes merge the pushes of groups they do not own every `send_interval`.
    fn build(seed: u64, size: usize, send_interval: Duration) -> Self {
        let mut cluster = Cluster {
            send_interval,
            nodes: Vec::new(),
            now: Instant::ZERO,
            rng: SplitMix64::new(seed),
            seed,
            restarts: 0,
            in_flight: BinaryHeap::new(),
            news: BinaryHeap::new(),
            seq: 0,
            loss: 0,
            cut: BTreeSet::new(),
            clients: BTreeMap::new(),
            next_conn: 0,
            next_broadcast: 0,
            known_groups: vec![static_group()],
            hasher: DefaultHasher::new(),
            pushes_checked: 0,
            coverage: Coverage::default(),
        };
        for i in 0..size {
            let node = cluster.boot(i);
            cluster.nodes.push(Some(node));
        }
        for a in 0..size {
            for b in 0..size {
                if a != b {
                    let node = cluster.nodes[a].as_mut().unwrap();
                    let _done = node.handle(Input::NodeUp(addr(b)), Instant::ZERO);
                }
            }
        }
        cluster
    }

    fn boot(&mut self, i: usize) -> Node {
        self.restarts += 1;
        let mut config = NodeConfig {
            addr: addr(i),
            seed: self.seed ^ (self.restarts << 32),
            ..NodeConfig::default()
        };
        config.group.send_interval = self.send_interval;
        config.limits.mesh_request_timeout = ms(500);
        config.limits.mesh_sync_interval = SYNC;
        config.limits.connection_ttl = Duration::from_secs(3600);
        config.limits.max_groups_per_user = 8;
        config.group.static_groups = vec![StaticGroup {
            id: static_group(),
            interval: Duration::ZERO,
        }];
        let mut node = Node::new(config, self.now).unwrap();
        node.set_rejoin_message(Box::new(|_, _, _| Bytes::from_static(b"rejoin")));
        node
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].is_some()
            && self.nodes[b].is_some()
            && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn index_of(&self, node: NodeAddr) -> Option<usize> {
        (0..self.nodes.len()).find(|i| addr(*i) == node)
    }

    fn tell_later(&mut self, news: News, delay: Duration) {
        self.seq += 1;
        self.news
            .push(Reverse((self.now.saturating_add(delay), self.seq, news)));
    }

    // ----- faults -----

    fn kill(&mut self, i: usize) {
        self.coverage.kills += 1;
        self.nodes[i] = None;
        self.clients.retain(|_, c| c.node != i);
        for obs in 0..self.nodes.len() {
            if obs != i {
                self.tell_later(News::Down(obs, i), DETECT);
            }
        }
    }

    /// A restarted node is a new member to the membership layer (SWIM gives it a new identity): every
    /// node that still had the old one as live hears it went down before it hears the new one came up.
    fn restart(&mut self, i: usize) {
        for obs in 0..self.nodes.len() {
            if let Some(n) = self.nodes[obs].as_mut() {
                let _done = n.handle(Input::NodeDown(addr(i)), self.now);
                self.drain(obs);
            }
        }
        let node = self.boot(i);
        self.nodes[i] = Some(node);
        for other in 0..self.nodes.len() {
            if other != i {
                self.tell_later(News::Up(other, i), ms(100));
                self.tell_later(News::Up(i, other), ms(100));
            }
        }
    }

    fn partition(&mut self, a: usize, b: usize) {
        self.coverage.partitions += 1;
        self.cut.insert((a.min(b), a.max(b)));
        self.tell_later(News::Down(a, b), DETECT);
        self.tell_later(News::Down(b, a), DETECT);
    }

    fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.cut) {
            self.tell_later(News::Up(a, b), ms(100));
            self.tell_later(News::Up(b, a), ms(100));
        }
        self.loss = 0;
    }

    // ----- clients -----

    fn connect(&mut self, node: usize) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let uid = format!("u{}", self.next_conn);
        let now = self.now;
        let n = self.nodes[node].as_mut().unwrap();
        let connected = n.handle(Input::Connect(conn), now);
        assert_eq!(connected, Handled::Connect(Ok(())));
        self.clients.insert(
            conn,
            Client {
                node,
                conn,
                uid: uid.clone(),
                groups: BTreeSet::new(),
                received: BTreeSet::new(),
                rejoins: 0,
                refusals: Vec::new(),
            },
        );
        self.request(
            conn,
            Request::Hello {
                uid,
                token: Bytes::new(),
            },
        );
        conn
    }

    fn request(&mut self, conn: ConnId, request: Request) {
        let Some(node) = self.clients.get(&conn).map(|c| c.node) else {
            return;
        };
        let now = self.now;
        if let Some(n) = self.nodes[node].as_mut() {
            let _outcome = n.handle(Input::Request { conn, request }, now);
        }
        self.drain(node);
    }

    fn create(&mut self, conn: ConnId) {
        let params = CreateRequest {
            allow_empty: self.rng.chance(50),
            join: true,
            ttl_s: 30,
            interval_ms: 0,
        };
        self.request(conn, Request::Create(params));
    }

    fn join(&mut self, conn: ConnId, group: GroupId) {
        let message = Bytes::from_static(b"hi");
        self.request(conn, Request::Join { group, message });
    }

    fn broadcast(&mut self, conn: ConnId, group: GroupId) -> u64 {
        self.next_broadcast += 1;
        let id = self.next_broadcast;
        let message = Bytes::copy_from_slice(&id.to_be_bytes());
        self.request(
            conn,
            Request::Broadcast {
                group,
                reliable: true,
                message,
            },
        );
        id
    }

    // ----- the loop -----

    /// Drains one node's outputs: frames to its clients (checked), mesh messages onto the network.
    fn drain(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let mut out = Drained::default();
        let _deadline = node.drain(self.now, &mut out);
        self.coverage.remote_joins += out.remote_joins;
        for t in out.frames {
            (self.now, i, t.conn, &t.frame[..]).hash(&mut self.hasher);
            self.on_frame(t.conn, &t.frame);
        }
        for m in out.mesh {
            let Some(to) = self.index_of(m.to) else {
                continue;
            };
            trace(self.now, &format!("{i} -> {to}"), &m.message);
            let frame = mesh::encode(&m.message);
            (self.now, i, to, &frame).hash(&mut self.hasher);
            if !self.reachable(i, to) || self.rng.below(1000) < self.loss as usize {
                continue;
            }
            let delay = ms(1 + self.rng.below(40) as u64);
            self.seq += 1;
            self.in_flight.push(Reverse((
                self.now.saturating_add(delay),
                self.seq,
                i,
                to,
                frame,
            )));
        }
    }

    fn on_frame(&mut self, conn: ConnId, frame: &Bytes) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        let mut buf = bytes::BytesMut::from(&frame[..]);
        let frame = decode_server_frame(&mut buf, u32::MAX).unwrap().unwrap();
        match (frame.ver, frame.cmd, frame.status) {
            (VER_GROUP, cmd::CREATE | cmd::JOIN, Status::Ok) => {
                let id = GroupId::from_bytes(&frame.payload).unwrap();
                client.groups.insert(id);
            }
            (_, _, Status::Bad) => {
                client
                    .refusals
                    .push(parse_error_payload(&frame.payload).unwrap().code);
            }
            (VER_GROUP, cmd::LEAVE, Status::Ok) => {
                let id = GroupId::from_bytes(&frame.payload).unwrap();
                client.groups.remove(&id);
            }
            (VER_GROUP, cmd::BROADCAST, Status::Push) => {
                let (group, entries) = parse_broadcast_push(&frame.payload).unwrap();
                assert!(
                    client.groups.contains(&group),
                    "broadcast push to non-member {} of {group}",
                    client.uid
                );
                for entry in entries {
                    let id = u64::from_be_bytes(entry.message[..8].try_into().unwrap());
                    assert!(
                        client.received.insert(id),
                        "broadcast {id} delivered twice to {}",
                        client.uid
                    );
                }
                self.pushes_checked += 1;
            }
            (VER_GROUP, cmd::JOIN | cmd::LEAVE, Status::Push) => {
                let push = parse_member_push(&frame.payload).unwrap();
                assert!(
                    client.groups.contains(&push.group),
                    "member push to non-member {} of {}",
                    client.uid,
                    push.group
                );
                if push.message == b"rejoin"[..] && push.uid == client.uid {
                    client.rejoins += 1;
                    self.coverage.rejoin_pushes += 1;
                }
                self.pushes_checked += 1;
            }
            _ => {}
        }
    }

    /// Runs everything due up to `until`, in time order.
    fn run_until(&mut self, until: Instant) {
        loop {
            let timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| Some((n.as_ref()?.poll_timeout()?, i)))
                .min();
            let message = self.in_flight.peek().map(|Reverse(m)| m.0);
            let news = self.news.peek().map(|Reverse(n)| n.0);
            let next = [timer.map(|t| t.0), message, news]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|at| *at <= until) else {
                break;
            };
            self.now = self.now.max(at);
            if message == Some(at) {
                let Reverse((_, _, from, to, frame)) = self.in_flight.pop().unwrap();
                if self.reachable(from, to) {
                    let decoded = mesh::decode(&frame).unwrap();
                    let now = self.now;
                    let mesh = Input::Mesh {
                        from: addr(from),
                        message: decoded,
                    };
                    let _done = self.nodes[to].as_mut().unwrap().handle(mesh, now);
                    self.drain(to);
                }
            } else if news == Some(at) {
                let Reverse((_, _, news)) = self.news.pop().unwrap();
                self.apply_news(news);
            } else if let Some((_, i)) = timer {
                let now = self.now;
                let _done = self.nodes[i].as_mut().unwrap().handle(Input::Timeout, now);
                self.drain(i);
            }
        }
        self.now = self.now.max(until);
    }

    fn apply_news(&mut self, news: News) {
        if std::env::var("SIM_TRACE").is_ok() {
            let (kind, obs, subject) = match news {
                News::Up(o, s) => ("up", o, s),
                News::Down(o, s) => ("down", o, s),
            };
            eprintln!(
                "{:?} news {obs} sees {subject} {kind} (reachable {})",
                self.now,
                self.reachable(obs, subject)
            );
        }
        match news {
            News::Down(obs, subject)
                if self.nodes[obs].is_some() && !self.reachable(obs, subject) =>
            {
                let node = self.nodes[obs].as_mut().unwrap();
                let _done = node.handle(Input::NodeDown(addr(subject)), self.now);
                self.drain(obs);
            }
            News::Up(obs, subject) if self.reachable(obs, subject) => {
                let node = self.nodes[obs].as_mut().unwrap();
                let _done = node.handle(Input::NodeUp(addr(subject)), self.now);
                self.drain(obs);
            }
            _ => {}
        }
    }

    /// Runs until no mesh message is in flight (at most 5 s more), so that a check sees no change half-way.
    fn run_until_quiet(&mut self) {
        for _ in 0..5000 {
            if self.in_flight.is_empty() {
                return;
            }
            self.run_for(ms(1));
        }
        panic!("the mesh never went quiet");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        self.run_until(until);
    }

    fn members_of(&self, group: &GroupId) -> Vec<ConnId> {
        self.clients
            .values()
            .filter(|c| c.groups.contains(group))
            .map(|c| c.conn)
            .collect()
    }

    fn owner_of(&self, group: &GroupId) -> Option<usize> {
        self.nodes.iter().enumerate().find_map(|(i, n)| {
            let s = n.as_ref()?.group_snapshot(group)?;
            (s.owner == Some(addr(i))).then_some(i)
        })
    }

    /// Every live copy of every group agrees with its live owner on the members.
    fn assert_copies_agree(&mut self) {
        self.run_until_quiet();
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            for id in node.group_ids() {
                let copy = node.group_snapshot(id).unwrap();
                let Some(owner) = copy.owner.and_then(|o| self.index_of(o)) else {
                    continue;
                };
                let Some(owner_node) = self.nodes[owner].as_ref() else {
                    continue;
                };
                let truth = owner_node
                    .group_snapshot(id)
                    .unwrap_or_else(|| panic!("node {i} holds {id} that its owner {owner} lacks"));
                assert_eq!(
                    copy.members.keys().collect::<Vec<_>>(),
                    truth.members.keys().collect::<Vec<_>>(),
                    "node {i}'s copy of {id} disagrees with owner {owner}; node {i} sees live {:?}; \
                     copy {:?} at {:?}, owner's {:?} at {:?}",
                    node.live_nodes().collect::<Vec<_>>(),
                    copy.owner,
                    copy.version,
                    truth.owner,
                    truth.version
                );
            }
        }
    }

    /// Every member broadcasts once; every other member must receive every broadcast within `within`.
    fn assert_all_exchange(&mut self, group: GroupId, within: Duration) {
        let members = self.members_of(&group);
        assert!(members.len() >= 2, "too few members left to exchange");
        let sent: Vec<(ConnId, u64)> = members
            .iter()
            .map(|c| (*c, self.broadcast(*c, group)))
            .collect();
        self.run_for(within);
        for member in &members {
            let client = &self.clients[member];
            for (sender, id) in &sent {
                if sender != member {
                    assert!(
                        client.received.contains(id),
                        "{} did not get broadcast {id} from {} within {within:?}",
                        client.uid,
                        self.clients[sender].uid
                    );
                }
            }
        }
    }

    /// A seeded random step: a client operation or a fault, then some time.
    fn random_step(&mut self) {
        let size = self.nodes.len();
        let live: Vec<usize> = (0..size).filter(|i| self.nodes[*i].is_some()).collect();
        let roll = self.rng.below(100);
        match roll {
            0..=1 if live.len() > 2 => {
                let victim = live[self.rng.below(live.len())];
                self.kill(victim);
            }
            2..=3 => {
                if let Some(dead) = (0..size).find(|i| self.nodes[*i].is_none()) {
                    self.restart(dead);
                }
            }
            4 if live.len() > 2 => {
                let a = live[self.rng.below(live.len())];
                let b = live[self.rng.below(live.len())];
                if a != b {
                    self.partition(a, b);
                }
            }
            5..=6 => self.heal(),
            7 => self.loss = 50,
            8..=14 => {
                let node = live[self.rng.below(live.len())];
                self.connect(node);
            }
            15..=22 => {
                if let Some(conn) = self.random_client() {
                    self.create(conn);
                }
            }
            23..=50 => {
                if let (Some(conn), false) = (self.random_client(), self.known_groups.is_empty()) {
                    let group = self.known_groups[self.rng.below(self.known_groups.len())];
                    self.join(conn, group);
                }
            }
            51..=56 => {
                let conn = self.random_client();
                let group = conn.and_then(|c| self.clients[&c].groups.iter().next().copied());
                if let (Some(conn), Some(group)) = (conn, group) {
                    let message = Bytes::from_static(b"bye");
                    self.request(conn, Request::Leave { group, message });
                }
            }
            57..=59 => {
                if let Some(conn) = self.random_client() {
                    let node = self.clients[&conn].node;
                    self.clients.remove(&conn);
                    let now = self.now;
                    let n = self.nodes[node].as_mut().unwrap();
                    let _done = n.handle(Input::Disconnect(conn), now);
                    self.drain(node);
                }
            }
            _ => {
                if let Some(conn) = self.random_client() {
                    let groups: Vec<GroupId> = self.clients[&conn].groups.iter().copied().collect();
                    if !groups.is_empty() {
                        let group = groups[self.rng.below(groups.len())];
                        self.broadcast(conn, group);
                    }
                }
            }
        }
        self.learn_groups();
        let pause = ms(self.rng.below(300) as u64);
        self.run_for(pause);
    }

    fn random_client(&mut self) -> Option<ConnId> {
        let conns: Vec<ConnId> = self.clients.keys().copied().collect();
        (!conns.is_empty()).then(|| conns[self.rng.below(conns.len())])
    }

    fn learn_groups(&mut self) {
        for c in self.clients.values() {
            for g in &c.groups {
                if !self.known_groups.contains(g) {
                    self.known_groups.push(*g);
                }
            }
        }
    }

    fn transcript(&self) -> u64 {
        self.hasher.finish()
    }
}

/// Creates a group on node 0 with two members on every node; returns it.
fn group_across(cluster: &mut Cluster) -> GroupId {
    let size = cluster.nodes.len();
    let conns: Vec<ConnId> = (0..size * 2).map(|k| cluster.connect(k % size)).collect();
    cluster.create(conns[0]);
    let group = *cluster.clients[&conns[0]].groups.iter().next().unwrap();
    for conn in &conns[1..] {
        cluster.join(*conn, group);
    }
    cluster.run_for(Duration::from_secs(1));
    assert_eq!(
        cluster.members_of(&group).len(),
        conns.len(),
        "every join succeeds"
    );
    group
}

#[test]
fn broadcasts_reach_members_on_every_node() {
    for size in [3, 5, 7] {
        let mut cluster = Cluster::new(size as u64, size);
        let group = group_across(&mut cluster);
        cluster.assert_all_exchange(group, ms(500));
        cluster.assert_copies_agree();
        let owner = cluster.nodes[0].as_ref().unwrap();
        let snapshot = owner.group_snapshot(&group).unwrap();
        assert_eq!(snapshot.member_nodes.len(), size);
        assert_eq!(snapshot.backups, vec![addr(1), addr(2)]);
    }
}

#[test]
fn survivors_keep_exchanging_after_the_owner_dies() {
    for seed in 0..8u64 {
        let size = 3 + (seed as usize % 5);
        let mut cluster = Cluster::new(seed, size);
        let group = group_across(&mut cluster);
        // Some lossy traffic first, then a calm period so that copies converge through digests.
        cluster.loss = 100;
        for _ in 0..5 {
            let members = cluster.members_of(&group);
            let sender = members[cluster.rng.below(members.len())];
            cluster.broadcast(sender, group);
            cluster.run_for(ms(100));
        }
        cluster.heal();
        cluster.run_for(SYNC * 3);
        cluster.assert_copies_agree();

        let killed_at = cluster.now;
        cluster.kill(0);
        // Bounded: detection, then one round of state and registration messages.
        cluster.run_for(DETECT + Duration::from_secs(1));
        assert_eq!(
            cluster.owner_of(&group),
            Some(1),
            "seed {seed}: first backup takes over"
        );
        let survivors = cluster.members_of(&group);
        assert_eq!(survivors.len(), (size - 1) * 2, "seed {seed}: nobody lost");
        for conn in &survivors {
            assert_eq!(cluster.clients[conn].rejoins, 1, "seed {seed}: rejoin push");
        }
        cluster.assert_all_exchange(group, ms(500));
        assert!(cluster.now.saturating_duration_since(killed_at) <= Duration::from_secs(4));

        // A newcomer joins through the ID: its owner is gone, so the next address answers.
        let newcomer = cluster.connect(size - 1);
        cluster.join(newcomer, group);
        cluster.run_for(Duration::from_secs(2));
        assert!(
            cluster.clients[&newcomer].groups.contains(&group),
            "seed {seed}: late join"
        );
        cluster.run_for(SYNC * 2);
        cluster.assert_copies_agree();
    }
}

#[test]
fn a_draining_owner_hands_its_group_over() {
    let mut cluster = Cluster::new(42, 4);
    let group = group_across(&mut cluster);
    let now = cluster.now;
    let offline = Input::Call(Call::SetOffline);
    let _done = cluster.nodes[0].as_mut().unwrap().handle(offline, now);
    cluster.drain(0);
    cluster.run_for(ms(500));
    assert_eq!(cluster.owner_of(&group), Some(1));
    assert_eq!(cluster.members_of(&group).len(), 8);
    for conn in cluster.members_of(&group) {
        assert_eq!(
            cluster.clients[&conn].rejoins, 1,
            "one rejoin push per member"
        );
    }
    cluster.assert_copies_agree();
    cluster.assert_all_exchange(group, ms(500));
    // The drained node exits: its members go, the others stay and keep talking.
    cluster.kill(0);
    cluster.run_for(DETECT + Duration::from_secs(1));
    assert_eq!(cluster.members_of(&group).len(), 6);
    cluster.assert_all_exchange(group, ms(500));
    cluster.assert_copies_agree();
}

#[test]
fn copies_merge_with_send_interval_and_the_owner_with_the_group_interval() {
    let mut cluster = Cluster::build(8, 3, ms(300));
    let sender = cluster.connect(0);
    let near = cluster.connect(0);
    let far = cluster.connect(1);
    cluster.create(sender);
    let group = *cluster.clients[&sender].groups.iter().next().unwrap();
    cluster.join(near, group);
    cluster.join(far, group);
    cluster.run_for(ms(100));
    let before = cluster.pushes_checked;
    for _ in 0..5 {
        cluster.broadcast(sender, group);
    }
    cluster.run_for(ms(50));
    // The owner's group has interval 0: its own member got five pushes at once; the copy holds them.
    assert_eq!(cluster.clients[&near].received.len(), 5);
    assert_eq!(cluster.clients[&far].received.len(), 0);
    cluster.run_for(ms(400));
    assert_eq!(
        cluster.clients[&far].received.len(),
        5,
        "one merged push after sendInterval"
    );
    assert_eq!(cluster.pushes_checked - before, 5 + 1);
}

#[test]
fn static_groups_reach_members_on_every_node() {
    let mut cluster = Cluster::new(5, 4);
    let conns: Vec<ConnId> = (0..8).map(|k| cluster.connect(k % 4)).collect();
    for conn in &conns {
        cluster.join(*conn, static_group());
    }
    cluster.run_for(ms(100));
    assert_eq!(cluster.members_of(&static_group()).len(), 8);
    cluster.assert_all_exchange(static_group(), ms(500));
    // Nodes hold only their own members of a static group: there is no owner to keep a full list.
    let local = cluster.nodes[2]
        .as_ref()
        .unwrap()
        .group_snapshot(&static_group())
        .unwrap();
    assert_eq!(local.members.len(), 2);
    assert_eq!(local.owner, None);
}

#[test]
fn an_empty_group_expires_when_it_is_empty_on_every_node() {
    let mut cluster = Cluster::new(6, 3);
    let creator = cluster.connect(0);
    let far = cluster.connect(2);
    let params = CreateRequest {
        allow_empty: true,
        join: true,
        ttl_s: 30,
        interval_ms: 0,
    };
    cluster.request(creator, Request::Create(params));
    let group = *cluster.clients[&creator].groups.iter().next().unwrap();
    cluster.join(far, group);
    cluster.run_for(ms(200));
    let bye = || Request::Leave {
        group,
        message: Bytes::new(),
    };
    cluster.request(creator, bye());
    // Empty on the owner's node, but not in the cluster: the group stays past its ttl.
    cluster.run_for(Duration::from_secs(60));
    assert!(
        cluster.nodes[0]
            .as_ref()
            .unwrap()
            .group_snapshot(&group)
            .is_some()
    );
    cluster.request(far, bye());
    cluster.run_for(Duration::from_secs(29));
    assert!(
        cluster.nodes[0]
            .as_ref()
            .unwrap()
            .group_snapshot(&group)
            .is_some()
    );
    cluster.run_for(Duration::from_secs(2));
    for (i, node) in cluster.nodes.iter().enumerate() {
        let node = node.as_ref().unwrap();
        assert!(node.group_snapshot(&group).is_none(), "node {i} dropped it");
    }
}

#[test]
fn a_join_gives_up_when_no_node_of_the_group_answers() {
    let mut cluster = Cluster::new(9, 4);
    let creator = cluster.connect(0);
    cluster.create(creator);
    let group = *cluster.clients[&creator].groups.iter().next().unwrap();
    let joiner = cluster.connect(3);
    cluster.run_for(ms(100));
    // Node 3 still believes the others alive, but nothing gets through.
    for other in 0..3 {
        cluster.cut.insert((other, 3));
    }
    cluster.join(joiner, group);
    // remoteJoinTries (4) attempts of meshRequestTimeout (500 ms) each.
    cluster.run_for(ms(1900));
    assert!(cluster.clients[&joiner].refusals.is_empty(), "still trying");
    cluster.run_for(ms(200));
    assert_eq!(
        cluster.clients[&joiner].refusals,
        vec![code::JOIN_OWNER_UNREACHABLE]
    );
    assert!(!cluster.clients[&joiner].groups.contains(&group));
}

/// `SIM_TRACE=<start of a group ID>` prints the mesh messages about that group.
fn trace(now: Instant, link: &str, message: &mesh::MeshMessage) {
    let Ok(prefix) = std::env::var("SIM_TRACE") else {
        return;
    };
    let about = message
        .group()
        .is_some_and(|g| g.as_str().starts_with(&prefix));
    if about || matches!(message, mesh::MeshMessage::Digest { .. }) && prefix == "digest" {
        eprintln!("{now:?} {link} {message:?}");
    }
}

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

fn steps() -> usize {
    std::env::var("SIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
}

fn run_random(seed: u64) -> (u64, usize, Coverage) {
    let size = 3 + (seed as usize % 5);
    let mut cluster = Cluster::new(seed, size);
    for _ in 0..steps() {
        cluster.random_step();
    }
    // Heal everything and let the cluster settle: every copy must then agree with its owner.
    cluster.heal();
    for i in 0..size {
        if cluster.nodes[i].is_none() {
            cluster.restart(i);
        }
    }
    if std::env::var("SIM_TRACE").is_ok() {
        eprintln!("{:?} settling", cluster.now);
    }
    cluster.run_for(SYNC * 10);
    cluster.run_until_quiet();
    cluster.assert_copies_agree();
    (
        cluster.transcript(),
        cluster.pushes_checked,
        cluster.coverage,
    )
}

#[test]
fn random_faults_never_misdeliver_and_copies_converge() {
    let mut checked = 0;
    let mut total = Coverage::default();
    let first: u64 = std::env::var("SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in first..first + seeds() {
        eprintln!("seed {seed}");
        let (_, pushes, coverage) = run_random(seed);
        checked += pushes;
        total.kills += coverage.kills;
        total.partitions += coverage.partitions;
        total.remote_joins += coverage.remote_joins;
        total.rejoin_pushes += coverage.rejoin_pushes;
    }
    assert!(
        checked > 100,
        "the simulation delivered only {checked} pushes"
    );
    let reached = total.kills > 0
        && total.partitions > 0
        && total.remote_joins > 20
        && total.rejoin_pushes > 0;
    assert!(
        reached,
        "the simulation stopped reaching the cluster paths: {total:?}"
    );
}

#[test]
fn the_same_seed_gives_the_same_transcript() {
    assert_eq!(run_random(11).0, run_random(11).0);
    assert_ne!(run_random(11).0, run_random(12).0);
}
