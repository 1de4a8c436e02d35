//! [`RemoteJoins`]: the joins waiting for another node's answer. The only place ops are issued and
//! forgotten; it knows who joins what, which attempt is current, and where that attempt went.

use std::collections::BTreeMap;

use crate::cluster::mesh::Notice;
use crate::id::{GroupId, NodeAddr};
use crate::node::{ConnId, Sid, Uid};

/// A join waiting for another node.
#[derive(Debug)]
pub(crate) struct PendingJoin {
    pub uid: Uid,
    pub sid: Sid,
    pub group: GroupId,
    pub notice: Option<Notice>,
    /// The client to answer, if a client asked (server-side joins answer through the event only).
    pub reply_to: Option<(ConnId, u8, u16)>,
    /// Addresses to try, in order; attempt `n` goes to `candidates[n % len]`. Never empty.
    candidates: Vec<NodeAddr>,
    attempt: u32,
}

impl PendingJoin {
    /// A join that will try `candidates` in turn, starting with the first.
    pub fn new(
        uid: Uid,
        sid: Sid,
        group: GroupId,
        notice: Option<Notice>,
        reply_to: Option<(ConnId, u8, u16)>,
        candidates: Vec<NodeAddr>,
    ) -> Self {
        assert!(!candidates.is_empty(), "a remote join needs a node to ask");
        PendingJoin {
            uid,
            sid,
            group,
            notice,
            reply_to,
            candidates,
            attempt: 0,
        }
    }

    /// The node the current attempt asks (`None` only if there were no candidates, which `new` refuses).
    pub fn target(&self) -> Option<NodeAddr> {
        let index = usize::try_from(self.attempt).unwrap_or(0) % self.candidates.len().max(1);
        self.candidates.get(index).copied()
    }

    /// The current attempt, counted from 0.
    pub fn attempt(&self) -> u32 {
        self.attempt
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

    /// Moves `op` to its next attempt; `false` (and nothing changes) when `tries` are used up or
    /// there is no such join.
    pub fn next_attempt(&mut self, op: u64, tries: u32) -> bool {
        match self.pending.get_mut(&op) {
            Some(join) if join.attempt + 1 < tries => {
                join.attempt += 1;
                true
            }
            _ => false,
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

    fn join(uid: &str, group: u64, candidates: &[u16]) -> PendingJoin {
        let nodes: Vec<NodeAddr> = candidates
            .iter()
            .map(|p| NodeAddr::new(Ipv4Addr::LOCALHOST, *p))
            .collect();
        let id = GroupId::generate(group, nodes[0], &[]);
        PendingJoin::new(uid.into(), Sid([0; 16]), id, None, None, nodes)
    }

    #[test]
    fn attempts_rotate_over_the_candidates_until_the_tries_run_out() {
        let mut joins = RemoteJoins::default();
        let op = joins.start(join("a", 1, &[8101, 8102]));
        let target =
            |joins: &RemoteJoins| joins.get(op).and_then(|j| j.target()).map(|n| n.0.port());
        assert_eq!(target(&joins), Some(8101));
        assert!(joins.next_attempt(op, 3));
        assert_eq!(target(&joins), Some(8102));
        assert!(joins.next_attempt(op, 3));
        assert_eq!(target(&joins), Some(8101), "wraps around");
        assert!(!joins.next_attempt(op, 3), "three tries used");
        assert_eq!(joins.get(op).map(PendingJoin::attempt), Some(2));
        assert_eq!(
            joins.waiting_on(NodeAddr::new(Ipv4Addr::LOCALHOST, 8101)),
            vec![op]
        );
        assert!(joins.finish(op).is_some());
        assert_eq!(joins.len(), 0);
    }

    #[test]
    fn ops_are_unique_and_joins_are_counted_per_user() {
        let mut joins = RemoteJoins::default();
        let first = joins.start(join("a", 1, &[8101]));
        let second = joins.start(join("a", 2, &[8101]));
        let other = joins.start(join("b", 1, &[8101]));
        assert!(first < second && second < other);
        assert_eq!((joins.count_for("a"), joins.count_for("b")), (2, 1));
        let group_one = GroupId::generate(1, NodeAddr::new(Ipv4Addr::LOCALHOST, 8101), &[]);
        assert!(joins.in_progress("a", &group_one));
        let _ = joins.finish(first);
        assert!(!joins.in_progress("a", &group_one));
        assert!(
            joins.start(join("a", 1, &[8101])) > other,
            "an op is never issued twice"
        );
    }
}
