//! Deterministic cluster simulation: 3 to 7 nodes, many clients, and a mesh that loses and delays messages
//! (in order per link, as the real mesh's TCP connections deliver them; a loss stands for a broken and
//! remade link), with nodes killed, restarted, partitioned and healed, all on one virtual clock.
//!
//! Checked after every step:
//! - no push reaches a client that is not a member of its group (membership as the client saw it from
//!   its own responses);
//! - no broadcast reaches one member twice;
//! - no broadcast reaches a member after a later one from the same sender (per-sender order);
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

mod cluster;
mod run;

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
    /// The latest broadcast ID received per group from each sender's session. IDs grow with time, so
    /// a session's grow too in each group. Nothing orders a sender's broadcasts across groups (each
    /// group's relay tree has its own shape) or across sessions (one sent just before a reconnect may
    /// arrive after one the new session sent).
    latest_from: BTreeMap<(GroupId, String, usize), u64>,
    rejoins: usize,
    /// Error codes of the Bad responses it got, in order.
    refusals: Vec<u16>,
}

/// Membership news for one observer about one subject, delivered after a detection delay.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum News {
    Up(usize, usize),
    Down(usize, usize),
    /// The observer's mesh link to the subject broke (a killed process resets its connections).
    LinkDown(usize, usize),
}

/// A mesh message on its way: (deliver at, sequence, from, to, encoded frame).
type InFlight = (Instant, u64, usize, usize, Vec<u8>);

/// What one node's drain put out, in the order the node gave it.
#[derive(Default)]
struct Drained {
    frames: Vec<Transmit>,
    mesh: Vec<MeshTransmit>,
    remote_joins: usize,
    /// How long each successful remote join took, as its completion reported.
    join_waits: Vec<Duration>,
}

impl Sink for Drained {
    fn transmit(&mut self, transmit: Transmit) -> bool {
        self.frames.push(transmit);
        true
    }
    fn event(&mut self, event: Event) {
        if let Event::JoinCompleted {
            result: Ok(()),
            waited,
            ..
        } = event
        {
            self.remote_joins += 1;
            self.join_waits.push(waited);
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
    /// When the last message on each (from, to) link is delivered: a later one never overtakes it.
    link_clock: BTreeMap<(usize, usize), Instant>,
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
    /// Per uid that reconnected: the first broadcast ID of each later session.
    sessions_from: BTreeMap<String, Vec<u64>>,
}

/// How often the interesting paths ran, so that a test can tell when the simulation stopped reaching them.
#[derive(Default, Debug, Clone, Copy)]
struct Coverage {
    kills: usize,
    partitions: usize,
    remote_joins: usize,
    rejoin_pushes: usize,
    /// Players who reconnected through another node and rejoined their groups at once.
    reconnects: usize,
    /// The longest a successful remote join waited.
    longest_join_wait: Duration,
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

/// One session per uid in the cluster: a Hello on another node discards the older session, and a join
/// right after it (before the old node's leave reached the owner) is admitted, wherever the owner is.
/// Over 200 seeds, because the messages race: with the old session on node 1 and the new one on node 2,
/// about one seed in 40 has the owner's change reach node 1 before node 2's claim does (seed 79 first),
/// and node 1's copy must still end up with the member on node 2.
#[test]
fn a_hello_on_another_node_replaces_the_older_session_and_its_memberships() {
    // (node of the old session, node of the new one); node 0 owns the group.
    let placements = [(1, 2), (1, 0), (0, 1)];
    for (seed, (old, new)) in (0..200).flat_map(|seed| placements.map(|p| (seed, p))) {
        let mut cluster = Cluster::new(seed, 3);
        let creator = cluster.connect(0);
        cluster.create(creator);
        let group = *cluster.clients[&creator].groups.iter().next().unwrap();
        let first = cluster.connect_as(old, "yuki");
        cluster.join(first, group);
        cluster.run_for(Duration::from_secs(1));
        assert!(cluster.clients[&first].groups.contains(&group));

        let second = cluster.connect_as(new, "yuki");
        cluster.join(second, group); // at once: the old node has not heard of the new session yet
        cluster.run_for(Duration::from_secs(1));

        let replaced = cluster.clients.remove(&first).unwrap();
        assert!(
            replaced.refusals.contains(&code::CLOSED_REPLACED),
            "seed {seed} ({old}, {new}): the old connection hears why it closes: {:?}",
            replaced.refusals
        );
        assert_eq!(cluster.clients[&second].refusals, Vec::<u16>::new());
        assert!(
            cluster.clients[&second].groups.contains(&group),
            "seed {seed} ({old}, {new})"
        );
        let node_of = |i: usize| cluster.nodes[i].as_ref().unwrap();
        if old != new {
            assert_eq!(
                node_of(old).user_group_ids("yuki"),
                None,
                "seed {seed} ({old}, {new})"
            );
        }
        let snapshot = node_of(0).group_snapshot(&group).unwrap();
        assert_eq!(
            snapshot.member_node["yuki"],
            addr(new),
            "seed {seed} ({old}, {new})"
        );
        assert_eq!(snapshot.members.len(), 2);
        cluster.assert_copies_agree();
    }
}

/// A player whose join waits (the group's owner just died) and who reconnects to the same node can join
/// that group again at once: the old session's join ended with it, instead of answering the new one
/// JOIN_IN_PROGRESS and then completing for a session that never asked.
#[test]
fn a_join_waiting_on_a_dead_owner_ends_with_its_session() {
    let mut cluster = Cluster::new(5, 3);
    let creator = cluster.connect(1);
    cluster.create(creator);
    let group = *cluster.clients[&creator].groups.iter().next().unwrap();
    let stays = cluster.connect(2); // the group outlives its owner
    cluster.join(stays, group);
    cluster.run_for(Duration::from_secs(1));
    cluster.kill(1);
    cluster.run_for(ms(50));
    let first = cluster.connect_as(0, "yuki");
    cluster.join(first, group);
    cluster.run_for(ms(50));
    assert!(
        !cluster.clients[&first].groups.contains(&group),
        "the join waits for the owner's successor"
    );

    let second = cluster.connect_as(0, "yuki");
    cluster.join(second, group);
    cluster.run_for(DETECT * 3);
    assert_eq!(cluster.clients[&second].refusals, Vec::<u16>::new());
    assert!(cluster.clients[&second].groups.contains(&group));
    let owner = cluster.owner_of(&group).unwrap();
    let snapshot = cluster.nodes[owner]
        .as_ref()
        .unwrap()
        .group_snapshot(&group);
    assert_eq!(snapshot.unwrap().member_node["yuki"], addr(0));
    cluster.assert_copies_agree();
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
        // Each member's own node: two members on every node.
        for i in 0..size {
            let here = snapshot
                .member_node
                .values()
                .filter(|n| **n == addr(i))
                .count();
            assert_eq!(here, 2, "members on node {i}");
        }
        assert_eq!(snapshot.backups, vec![addr(1), addr(2)]);
        // What the metrics read: the owner counts the group and its members once, the others a copy;
        // every node owns the static group.
        let census = owner.group_census();
        assert_eq!(
            (census.owned, census.copies, census.members_of_owned),
            (2, 0, size * 2)
        );
        for other in cluster.nodes[1..].iter().flatten() {
            let census = other.group_census();
            assert_eq!((census.owned, census.copies), (1, 1));
        }
        // Remote joins took at least one mesh round trip (1 to 40 ms each way here) and report it.
        let longest = cluster.coverage.longest_join_wait;
        assert!(
            longest >= ms(2) && longest < ms(1000),
            "longest remote join {longest:?}"
        );
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
    let taken = |cluster: &Cluster, i: usize| {
        cluster.nodes[i]
            .as_ref()
            .unwrap()
            .counters()
            .ownership_taken
    };
    assert_eq!(
        (taken(&cluster, 1), taken(&cluster, 2)),
        (1, 0),
        "one takeover, counted by the new owner"
    );
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
    let counters = |cluster: &Cluster, i: usize| cluster.nodes[i].as_ref().unwrap().counters();
    assert_eq!(
        (
            counters(&cluster, 0).deliveries,
            counters(&cluster, 0).merge_flushes
        ),
        (5, 0)
    );
    cluster.run_for(ms(400));
    assert_eq!(
        cluster.clients[&far].received.len(),
        5,
        "one merged push after sendInterval"
    );
    assert_eq!(
        (
            counters(&cluster, 1).deliveries,
            counters(&cluster, 1).merge_flushes
        ),
        (1, 1)
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
    // Its patience: remoteJoinTries (4) x meshRequestTimeout (1000 ms).
    cluster.run_for(ms(3900));
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
        total.reconnects += coverage.reconnects;
    }
    assert!(
        checked > 100,
        "the simulation delivered only {checked} pushes"
    );
    let reached = total.kills > 0
        && total.partitions > 0
        && total.remote_joins > 20
        && total.rejoin_pushes > 0
        && total.reconnects > 20;
    assert!(
        reached,
        "the simulation stopped reaching the cluster paths: {total:?}"
    );
}

/// Seeds that once found a bug, run every time (the default search covers seeds 0 to 39): 19, an owner
/// refused a live member for an older session claim (it had missed the newer one in a partition); 285,
/// 548 and 1951, a join that waited through a takeover completed for a session replaced meanwhile, and
/// the uid's newer session got the group's pushes; 340, 1659 and 1926, a copy that kept its own member
/// where the owner's state had that uid on another node lost the owner's entry when its member left.
#[test]
fn seeds_that_found_bugs_stay_fixed() {
    for seed in [19, 285, 340, 548, 1659, 1926, 1951] {
        run_random(seed);
    }
}

#[test]
fn the_same_seed_gives_the_same_transcript() {
    assert_eq!(run_random(11).0, run_random(11).0);
    assert_ne!(run_random(11).0, run_random(12).0);
}

/// New users on every survivor join `group` every 50 ms from now until `DETECT` + 500 ms; then, after a
/// bounded wait, every one of them must have joined, and none may have been refused.
fn joins_keep_succeeding(cluster: &mut Cluster, group: GroupId, survivors: &[usize], what: &str) {
    let started = cluster.now;
    let mut joiners = Vec::new();
    while cluster.now.saturating_duration_since(started) < DETECT + ms(500) {
        for node in survivors {
            let conn = cluster.connect(*node);
            cluster.join(conn, group);
            joiners.push(conn);
        }
        cluster.run_for(ms(50));
    }
    // A join waits for the owner's successor, at most its patience (meshRequestTimeout x tries).
    cluster.run_for(Duration::from_secs(3));
    for conn in &joiners {
        let client = &cluster.clients[conn];
        assert!(
            client.refusals.is_empty(),
            "{what}: {} on node {} was refused {:?}",
            client.uid,
            client.node,
            client.refusals
        );
        assert!(
            client.groups.contains(&group),
            "{what}: {} on node {} never joined",
            client.uid,
            client.node
        );
    }
    assert!(
        joiners.len() >= 50 * survivors.len(),
        "{what}: the joins ran"
    );
}

/// While the owner dies and until well after membership declared it dead, a new user on every survivor
/// joins the group every 50 ms: nobody hears "not found" (the group lives on in its copies), and every
/// join succeeds. The survivors' links to the dead node break 5 ms after the kill; membership takes
/// `DETECT` (2 s).
#[test]
fn joins_while_the_owner_dies_never_hear_not_found_and_all_succeed() {
    for seed in 0..8u64 {
        let size = 3 + (seed as usize % 5);
        let mut cluster = Cluster::new(seed, size);
        let group = group_across(&mut cluster);
        cluster.kill(0);
        let survivors: Vec<usize> = (1..size).collect();
        joins_keep_succeeding(&mut cluster, group, &survivors, &format!("seed {seed}"));
    }
}

/// The owner and its first backup die together: the second backup takes the group over, and joins on
/// every survivor meanwhile are neither refused nor lost.
#[test]
fn when_the_owner_and_its_first_backup_die_together_the_second_backup_takes_over() {
    for seed in 0..6u64 {
        let size = 4 + (seed as usize % 4);
        let mut cluster = Cluster::new(seed, size);
        let group = group_across(&mut cluster);
        cluster.kill(0);
        cluster.kill(1);
        let survivors: Vec<usize> = (2..size).collect();
        joins_keep_succeeding(&mut cluster, group, &survivors, &format!("seed {seed}"));
        assert_eq!(
            cluster.owner_of(&group),
            Some(2),
            "seed {seed}: the second backup owns it"
        );
        cluster.assert_all_exchange(group, ms(500));
    }
}

/// Five nodes and more, so that broadcasts relay through intermediate nodes. Members on every node
/// publish every 10 ms while the owner (the lowest address: an intermediate in every tree) dies. Once the
/// links to it broke, the senders' nodes plan their trees around it: the survivors lose only what was in
/// flight on the dead links before that, and no member gets a sender's broadcast after a later one (the
/// check runs on every push).
#[test]
fn broadcasts_route_around_a_dying_relay_and_keep_per_sender_order() {
    for seed in 0..4u64 {
        let size = 5 + (seed as usize % 3);
        let mut cluster = Cluster::new(seed, size);
        let group = group_across(&mut cluster);
        let senders: Vec<ConnId> = cluster
            .members_of(&group)
            .into_iter()
            .filter(|c| cluster.clients[c].node != 0)
            .collect();
        let mut sent = Vec::new();
        let mut killed = false;
        for round in 0..300u32 {
            if round == 100 {
                cluster.kill(0);
                killed = true;
            }
            for sender in &senders {
                let id = cluster.broadcast(*sender, group);
                sent.push((*sender, id, killed));
            }
            cluster.run_for(ms(10));
        }
        cluster.run_for(Duration::from_secs(1));
        let receivers: Vec<ConnId> = cluster.members_of(&group);
        let (mut expected, mut lost) = (0usize, 0usize);
        for (sender, id, after_kill) in &sent {
            if !after_kill {
                continue;
            }
            for receiver in receivers.iter().filter(|r| *r != sender) {
                expected += 1;
                lost += usize::from(!cluster.clients[receiver].received.contains(id));
            }
        }
        eprintln!("seed {seed}, {size} nodes: {lost} of {expected} deliveries after the kill lost");
        assert!(
            lost * 100 < expected,
            "seed {seed}: {lost} of {expected} lost: more than what was in flight on the dead links"
        );
    }
}

/// The second backup (node 2) has not heard of the first (node 1) when the owner dies (membership is still
/// spreading), so both take the group over at once. A join that node 1 sent node 2 just before is admitted
/// by node 2 as owner and answered after node 1 took over too: node 1 must settle the two claims, not
/// follow node 2 blindly while node 2 follows it (then nobody admits anyone: seen on a loaded machine,
/// every join on one survivor answered 204 for 16 s). Joins on both keep succeeding.
#[test]
fn two_survivors_that_both_took_over_settle_and_keep_admitting_joins() {
    for seed in 0..6u64 {
        let mut cluster = Cluster::new(seed, 3);
        let group = group_across(&mut cluster);
        let now = cluster.now;
        let forgetful = cluster.nodes[2].as_mut().unwrap();
        let _done = forgetful.handle(Input::NodeDown(addr(1)), now);
        cluster.drain(2);
        cluster.kill(0);
        let started = cluster.now;
        let mut joiners = Vec::new();
        // Node 2's joins talk to nobody (the owner is unreachable, node 1 unknown); one join on node 1
        // goes to node 2 just before both take over.
        while cluster.now.saturating_duration_since(started) < DETECT + ms(500) {
            let elapsed = cluster.now.saturating_duration_since(started);
            let conn = cluster.connect(2);
            cluster.join(conn, group);
            joiners.push(conn);
            if elapsed + ms(20) >= DETECT && elapsed < DETECT + ms(30) || elapsed > DETECT {
                let conn = cluster.connect(1);
                cluster.join(conn, group);
                joiners.push(conn);
            }
            cluster.run_for(ms(10));
        }
        cluster.run_for(Duration::from_secs(3));
        for conn in &joiners {
            let client = &cluster.clients[conn];
            assert!(
                client.refusals.is_empty() && client.groups.contains(&group),
                "seed {seed}: {} on node {} refused {:?}",
                client.uid,
                client.node,
                client.refusals
            );
        }
        cluster.assert_all_exchange(group, ms(500));
    }
}
