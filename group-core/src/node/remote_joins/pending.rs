//! [`RemoteJoins`]: the joins waiting for another node's answer. The only place ops are issued and
//! forgotten; it knows who joins what, which attempt is current, whom that attempt asked, which nodes
//! said they do not hold the group, and how long to wait before asking again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::mesh::Notice;
use crate::id::{GroupId, NodeAddr};
use crate::node::{ConnId, Sid, Uid};
use crate::time::Instant;

/// The first wait before asking again about a group in transition; it doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two asks about a group in transition.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(400);

/// A join waiting for another node.
#[derive(Debug)]
pub(crate) struct PendingJoin {
    pub uid: Uid,
    pub sid: Sid,
    pub group: GroupId,
    pub notice: Option<Notice>,
    /// The client to answer, if a client asked (server-side joins answer through the event only).
    pub reply_to: Option<(ConnId, u8, u16)>,
    /// When the join started, for the latency its completion reports.
    pub started: Instant,
    /// When the join gives up (`meshRequestTimeout` x `remoteJoinTries` after it started).
    pub give_up_at: Instant,
    /// Some node showed the group exists (this node holds a copy; a node answered that the owner is in
    /// transition, or that it is not the owner) or did not answer: when time runs out, the answer is
    /// "owner unreachable", never "not found".
    pub maybe_held: bool,
    /// The node the current attempt asked; `None` while the join waits before asking again.
    target: Option<NodeAddr>,
    /// The node asked last (kept while waiting), to move on from.
    last_asked: Option<NodeAddr>,
    /// Nodes that answered that they do not hold the group.
    lacking: BTreeSet<NodeAddr>,
    attempt: u32,
    backoff: Duration,
}

impl PendingJoin {
    pub fn new(
        uid: Uid,
        sid: Sid,
        group: GroupId,
        notice: Option<Notice>,
        reply_to: Option<(ConnId, u8, u16)>,
        give_up_at: Instant,
        maybe_held: bool,
    ) -> Self {
        PendingJoin {
            uid,
            sid,
            group,
            notice,
            reply_to,
            started: Instant::ZERO,
            give_up_at,
            maybe_held,
            target: None,
            last_asked: None,
            lacking: BTreeSet::new(),
            attempt: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// The same join, started at `now`.
    pub fn started_at(mut self, now: Instant) -> Self {
        self.started = now;
        self
    }

    /// The node the current attempt asks; `None` while waiting.
    pub fn target(&self) -> Option<NodeAddr> {
        self.target
    }

    /// The node asked last, to move on from.
    pub fn last_asked(&self) -> Option<NodeAddr> {
        self.last_asked
    }

    /// The current attempt (an ask or a wait), counted from 1 once the join has started.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether `node` answered that it does not hold the group.
    pub fn lacks(&self, node: NodeAddr) -> bool {
        self.lacking.contains(&node)
    }
}

/// Every join in flight, by op.
#[derive(Debug, Default)]
pub(crate) struct RemoteJoins {
    pending: BTreeMap<u64, PendingJoin>,
    next_op: u64,
}

impl RemoteJoins {
    /// Records a join and returns its op, never issued before.
    pub fn start(&mut self, join: PendingJoin) -> u64 {
        debug_assert!(
            !self.in_progress(&join.uid, &join.group),
            "one join per user and group"
        );
        self.next_op += 1;
        let op = self.next_op;
        let previous = self.pending.insert(op, join);
        assert!(previous.is_none(), "ops are never reused");
        op
    }

    pub fn get(&self, op: u64) -> Option<&PendingJoin> {
        self.pending.get(&op)
    }

    /// The next attempt of `op` asks `node`; returns the attempt's number.
    pub fn ask(&mut self, op: u64, node: NodeAddr) -> Option<u32> {
        let join = self.pending.get_mut(&op)?;
        join.attempt += 1;
        join.target = Some(node);
        join.last_asked = Some(node);
        Some(join.attempt)
    }

    /// The next attempt of `op` waits; returns its number and how long to wait (which doubles each time,
    /// up to [`MAX_BACKOFF`]).
    pub fn wait(&mut self, op: u64) -> Option<(u32, Duration)> {
        let join = self.pending.get_mut(&op)?;
        join.attempt += 1;
        join.target = None;
        let wait = join.backoff;
        join.backoff = (join.backoff * 2).min(MAX_BACKOFF);
        Some((join.attempt, wait))
    }

    /// `node` answered that it does not hold the group `op` joins.
    pub fn lacking(&mut self, op: u64, node: NodeAddr) {
        if let Some(join) = self.pending.get_mut(&op) {
            join.lacking.insert(node);
        }
    }

    /// Something showed that the group of `op` may exist.
    pub fn maybe_held(&mut self, op: u64) {
        if let Some(join) = self.pending.get_mut(&op) {
            join.maybe_held = true;
        }
    }

    /// Forgets `op`: it ended.
    pub fn finish(&mut self, op: u64) -> Option<PendingJoin> {
        self.pending.remove(&op)
    }

    /// Whether `uid` is already joining `group`.
    pub fn in_progress(&self, uid: &str, group: &GroupId) -> bool {
        self.pending
            .values()
            .any(|p| p.group == *group && *p.uid == *uid)
    }

    /// The joins the session `sid` of `uid` has in flight.
    pub fn of_session(&self, uid: &str, sid: Sid) -> Vec<u64> {
        let of_session = self
            .pending
            .iter()
            .filter(|(_, p)| *p.uid == *uid && p.sid == sid);
        of_session.map(|(op, _)| *op).collect()
    }

    /// Joins `uid` has in flight.
    pub fn count_for(&self, uid: &str) -> usize {
        self.pending.values().filter(|p| *p.uid == *uid).count()
    }

    /// The joins whose current attempt asked `node`.
    pub fn waiting_on(&self, node: NodeAddr) -> Vec<u64> {
        let waiting = self
            .pending
            .iter()
            .filter(|(_, p)| p.target() == Some(node));
        waiting.map(|(op, _)| *op).collect()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn node(port: u16) -> NodeAddr {
        NodeAddr::new(Ipv4Addr::LOCALHOST, port)
    }

    fn join(uid: &str, group: u64) -> PendingJoin {
        let id = GroupId::generate(group, node(8101), &[]);
        let give_up_at = Instant::ZERO.saturating_add(Duration::from_secs(8));
        PendingJoin::new(uid.into(), Sid([0; 16]), id, None, None, give_up_at, false)
    }

    #[test]
    fn asks_and_waits_are_numbered_and_waits_back_off_up_to_the_cap() {
        let mut joins = RemoteJoins::default();
        let op = joins.start(join("a", 1));
        assert_eq!(joins.get(op).map(PendingJoin::target), Some(None));
        assert_eq!(joins.ask(op, node(8101)), Some(1));
        assert_eq!(joins.waiting_on(node(8101)), vec![op]);
        let waits: Vec<Duration> = (0..6).filter_map(|_| joins.wait(op)).map(|w| w.1).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![50, 100, 200, 400, 400, 400]);
        let waiting = joins.get(op);
        assert_eq!(waiting.map(PendingJoin::target), Some(None), "nobody asked");
        assert_eq!(waiting.and_then(PendingJoin::last_asked), Some(node(8101)));
        assert_eq!(waiting.map(PendingJoin::attempt), Some(7));
        assert!(joins.waiting_on(node(8101)).is_empty());
        joins.lacking(op, node(8102));
        joins.maybe_held(op);
        let join = joins.get(op);
        assert!(join.is_some_and(|j| j.lacks(node(8102)) && !j.lacks(node(8101))));
        assert!(join.is_some_and(|j| j.maybe_held));
        assert!(joins.finish(op).is_some());
        assert_eq!(joins.len(), 0);
        assert_eq!(
            joins.ask(op, node(8101)),
            None,
            "a finished join asks nobody"
        );
    }

    #[test]
    fn ops_are_unique_and_joins_are_counted_per_user() {
        let mut joins = RemoteJoins::default();
        let first = joins.start(join("a", 1));
        let second = joins.start(join("a", 2));
        let other = joins.start(join("b", 1));
        assert!(first < second && second < other);
        assert_eq!((joins.count_for("a"), joins.count_for("b")), (2, 1));
        let group_one = GroupId::generate(1, node(8101), &[]);
        assert!(joins.in_progress("a", &group_one));
        let _ = joins.finish(first);
        assert!(!joins.in_progress("a", &group_one));
        assert!(
            joins.start(join("a", 1)) > other,
            "an op is never issued twice"
        );
    }
}
