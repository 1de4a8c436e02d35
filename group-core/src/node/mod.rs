//! [`Node`]: the whole group logic of one server process, as a deterministic state machine.
//!
//! One way in, one way out: [`Node::handle`] takes an [`Input`] and the time it happened
//! ([`input`]); [`Node::poll`] hands out the [`Output`]s in a fixed order, or [`Node::drain`] hands them
//! to a [`Sink`] and returns the next deadline ([`output`]). Getters (`&self`) answer questions for
//! server code and never change anything.
//!
//! The state is split by what owns which invariant, each part in its folder: connections and sessions
//! (`sessions`, `Sessions`), groups with their members and merge buffers
//! (`groups`), this node's view of the cluster with the copies of other nodes' groups and failover
//! (`cluster`), and joins waiting for another node (`remote_joins`).

mod cluster;
mod counters;
mod deliveries;
mod error;
mod groups;
mod input;
mod output;
mod remote_joins;
mod sessions;
mod timers;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use counters::{GroupCensus, NodeCounters};
pub use error::{
    BroadcastError, ConnectError, CreateError, GroupError, JoinError, LeaveError, RandJoinError,
    TickError,
};
pub use input::{Call, Handled, Input};
pub use output::{
    CloseReason, DiscardReason, Event, JoinStatus, MeshTransmit, Outcome, Output, Sink, Transmit,
};

use crate::config::{ConfigError, NodeConfig};
use crate::id::{GroupId, NodeAddr};
use crate::rng::SplitMix64;
use crate::time::Instant;
use cluster::ClusterView;
use groups::group::Group;
use output::Outputs;
use remote_joins::RemoteJoins;
use sessions::Sessions;
use timers::Timers;

/// A user ID: 1 to 64 bytes of UTF-8, shared between the session and every group it is in.
pub type Uid = Arc<str>;

/// A connection, named by the driver. The driver must not reuse an ID while the node still tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A session ID: 16 bytes issued by Hello, unique per session.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sid(pub [u8; 16]);

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({self})")
    }
}

/// What a group looks like right now (Diarkis's group data for server code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// The group's ID.
    pub id: GroupId,
    /// Kept while empty until ttl runs out.
    pub allow_empty: bool,
    /// Configured in `staticGroups`: never deleted.
    pub is_static: bool,
    /// How long an allow_empty group survives emptiness.
    pub ttl: Duration,
    /// Merge interval (zero: no merging).
    pub interval: Duration,
    /// Owner node (none for static groups).
    pub owner: Option<NodeAddr>,
    /// Backup nodes, in takeover order.
    pub backups: Vec<NodeAddr>,
    /// Members: uid -> sid, ordered by uid.
    pub members: BTreeMap<String, Sid>,
    /// Nodes that hold members.
    pub member_nodes: BTreeSet<NodeAddr>,
    /// The node each member is connected to (its mesh address), by uid.
    pub member_node: BTreeMap<String, NodeAddr>,
    /// The membership version this node's copy is at (see [`crate::cluster::mesh::Version`]).
    pub version: crate::cluster::mesh::Version,
}

/// Produces the custom message pushed (as a 112 leave) to a group's remaining members when a member's
/// session is discarded. Arguments: the group, the discarded uid, its sid.
pub type DiscardMessageFn = Box<dyn FnMut(&GroupId, &str, &Sid) -> Bytes + Send>;

/// Produces the custom message pushed (as a 111 join carrying the member's own uid) to each member when its
/// group changes owner after a failure. Arguments: the group, the member's uid, its sid.
pub type RejoinMessageFn = Box<dyn FnMut(&GroupId, &str, &Sid) -> Bytes + Send>;

/// A timer served this late means the node itself stalled (frozen or starved), not that time passed
/// quietly: drivers feed [`Input::Timeout`] at the deadline [`Node::poll_timeout`] gives.
const STALL: Duration = Duration::from_secs(1);
/// After a stall, how long every session has to be heard before the idle check may discard it.
const STALL_GRACE: Duration = Duration::from_secs(2);

/// One server process's group logic. See the module docs for the drive loop.
pub struct Node {
    config: NodeConfig,
    /// Connections and the sessions on them.
    sessions: Sessions,
    /// Where each uid's newest session is in the cluster (one session per uid).
    claims: sessions::Claims,
    groups: BTreeMap<GroupId, Group>,
    /// Groups random join may pick.
    random_pool: BTreeSet<GroupId>,
    /// The groups each user created here, for `maxGroupsCreatedPerUser`; pruned of groups gone or
    /// handed over whenever the user creates (see `check_creations_of`).
    created: BTreeMap<Uid, BTreeSet<GroupId>>,
    /// Entries in `created`, all users together.
    created_total: usize,
    /// Which other nodes are alive, deleted groups, epochs claimed: this node's view of the cluster.
    cluster: ClusterView,
    timers: Timers,
    /// What the last inputs produced, until drained.
    out: Outputs,
    /// Remote joins waiting for an answer, by op.
    joins: RemoteJoins,
    rng: SplitMix64,
    offline: bool,
    /// Creation time of the last ID issued: IDs never repeat even when `now` does.
    last_id_ns: u64,
    next_epoch: u64,
    /// Latest `now` seen: time must not go backwards.
    now: Instant,
    /// When the node last resumed from a stall (see [`STALL`]); sessions get [`STALL_GRACE`] from then
    /// to be heard before they count as idle.
    resumed_at: Instant,
    /// Relays this node started (see `MeshMessage::Relay::seq`).
    relay_seq: u64,
    /// What operators read through metrics ([`Node::counters`]).
    counters: NodeCounters,
    discard_message: DiscardMessageFn,
    rejoin_message: RejoinMessageFn,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("addr", &self.config.addr)
            .field("conns", &self.sessions.conn_count())
            .field("sessions", &self.sessions.session_count())
            .field("groups", &self.groups.len())
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with the configured static groups in place.
    pub fn new(config: NodeConfig, now: Instant) -> Result<Node, ConfigError> {
        if config.group.static_groups.len() > config.limits.max_groups {
            return Err(ConfigError {
                key: "limits.maxGroups".into(),
                problem: "must be at least the number of static groups".into(),
                value: config.limits.max_groups.to_string(),
            });
        }
        let epoch_floor =
            u32::try_from(config.clock_origin_ns.saturating_add(now.as_nanos()) / 1_000_000_000)
                .unwrap_or(u32::MAX);
        let mut node = Node {
            rng: SplitMix64::new(config.seed),
            sessions: Sessions::default(),
            claims: sessions::Claims::default(),
            groups: BTreeMap::new(),
            random_pool: BTreeSet::new(),
            created: BTreeMap::new(),
            created_total: 0,
            cluster: ClusterView::new(config.addr, epoch_floor),
            timers: Timers::default(),
            out: Outputs::default(),
            joins: RemoteJoins::default(),
            offline: false,
            last_id_ns: 0,
            next_epoch: 0,
            now,
            resumed_at: Instant::ZERO,
            relay_seq: 0,
            counters: NodeCounters::default(),
            discard_message: Box::new(|_, _, _| Bytes::new()),
            rejoin_message: Box::new(|_, _, _| Bytes::new()),
            config,
        };
        for spec in node.config.group.static_groups.clone() {
            let mut group = Group::new(spec.id, true, Duration::ZERO, spec.interval);
            group.is_static = true;
            group.owner = None;
            group.backups.clear();
            group.empty_since = Some(now);
            node.groups.insert(spec.id, group);
        }
        Ok(node)
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Replaces the function that makes the discard custom message (default: empty message).
    pub fn set_discard_message(&mut self, f: DiscardMessageFn) {
        self.discard_message = f;
    }

    /// Replaces the function that makes the rejoin custom message (default: empty message).
    pub fn set_rejoin_message(&mut self, f: RejoinMessageFn) {
        self.rejoin_message = f;
    }

    /// When to feed [`Input::Timeout`] next, if anything is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Moves the node's notion of time forward. Time never goes backwards: an earlier `now` is a driver
    /// bug, caught in debug builds and clamped in release builds.
    fn advance(&mut self, now: Instant) -> Instant {
        debug_assert!(
            now >= self.now,
            "time went backwards: {now:?} < {:?}",
            self.now
        );
        if self
            .timers
            .next_deadline()
            .is_some_and(|due| now > due.saturating_add(STALL))
        {
            // The driver is this late only when the process itself did not run (SIGSTOP, a paused VM,
            // starvation): the clients' KeepAlives are still unread in the sockets, so their silence
            // is the node's, not theirs.
            self.resumed_at = now;
        }
        self.now = self.now.max(now);
        self.out.timeout_told = false;
        self.now
    }

    // ----- queries -----

    /// The groups `uid` is in, in join order (Diarkis's GetGroupIDList). `None` if no such session.
    #[doc(alias = "GetGroupIDList")]
    pub fn user_group_ids(&self, uid: &str) -> Option<&[GroupId]> {
        self.sessions.get(uid).map(|s| s.groups.as_slice())
    }

    /// The group `uid` joined or created most recently and that still exists here (Diarkis's
    /// GetLatestGroupID). A group it left stops counting; then the newest group it is still in does.
    #[doc(alias = "GetLatestGroupID")]
    pub fn latest_group_id(&self, uid: &str) -> Option<GroupId> {
        let session = self.sessions.get(uid)?;
        session
            .latest
            .filter(|id| self.groups.contains_key(id))
            .or_else(|| session.groups.last().copied())
    }

    /// A snapshot of a group, or `None` if the node has no such group.
    pub fn group_snapshot(&self, id: &GroupId) -> Option<GroupSnapshot> {
        let g = self.groups.get(id)?;
        Some(GroupSnapshot {
            id: g.id,
            allow_empty: g.allow_empty,
            is_static: g.is_static,
            ttl: g.ttl,
            interval: g.interval,
            owner: g.owner,
            backups: g.backups.clone(),
            members: g
                .members
                .iter()
                .map(|(uid, m)| (uid.to_string(), m.sid))
                .collect(),
            member_nodes: g.members.nodes().collect(),
            member_node: g
                .members
                .iter()
                .map(|(uid, m)| (uid.to_string(), m.node))
                .collect(),
            version: g.version,
        })
    }

    /// The nodes that hold members of a group (Diarkis's GetMemberMeshNodes).
    #[doc(alias = "GetMemberMeshNodes")]
    pub fn member_nodes(&self, id: &GroupId) -> Option<BTreeSet<NodeAddr>> {
        Some(self.groups.get(id)?.members.nodes().collect())
    }

    /// Every group on this node, in ID order.
    pub fn group_ids(&self) -> impl Iterator<Item = &GroupId> {
        self.groups.keys()
    }

    /// Every session on this node, in uid order, with its session ID.
    pub fn sessions(&self) -> impl Iterator<Item = (&str, Sid)> {
        self.sessions.iter().map(|(uid, s)| (&**uid, s.sid))
    }

    /// The session on a connection, if it has said Hello.
    pub fn session_of(&self, conn: ConnId) -> Option<(&str, Sid)> {
        let uid = self.sessions.uid_of(conn)?;
        Some((&**uid, self.sessions.get(uid)?.sid))
    }

    /// Whether the node tracks `conn` (it connected and has not disconnected): a driver that learns
    /// late that a connection cannot take its frames disconnects it only while this holds.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.sessions.is_open(conn)
    }

    /// Number of connections tracked.
    pub fn connection_count(&self) -> usize {
        self.sessions.conn_count()
    }

    /// The other nodes the membership layer reports alive.
    pub fn live_nodes(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        self.cluster.live()
    }

    /// Relayed broadcasts dropped here because a later one from the same origin node was delivered first
    /// (the relay tree was re-planned around a failed node): per-sender order holds, and this counts the
    /// price.
    pub fn stale_relays_dropped(&self) -> u64 {
        self.counters.stale_relays_dropped
    }

    /// The backups a group created now gets: the next (up to) two live nodes after this one in address
    /// order, wrapping around. Deterministic, and it spreads backup duty evenly over the cluster.
    pub fn backup_candidates(&self) -> Vec<NodeAddr> {
        self.cluster.backup_candidates()
    }

    /// Pending timer entries (live or stale), bounded by two per connection plus three per group.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Whether the node refuses new groups because it is draining.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    fn next_sid(&mut self) -> Sid {
        let mut sid = [0u8; 16];
        sid[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        sid[8..].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        Sid(sid)
    }
}

#[cfg(test)]
mod tests;
