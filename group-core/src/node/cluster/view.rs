//! [`ClusterView`]: what this node believes about the rest of the cluster. Which other nodes are alive
//! (never this node itself), which of those it cannot reach right now (their mesh link broke: suspects,
//! not yet declared dead), which groups were deleted lately (so that late states cannot resurrect
//! them), the lowest epoch it may claim next (so that one (owner, version) never stands for two member
//! lists), and whether the digest timer is armed (at most one entry in the timer heap).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::time::Duration;

use crate::cluster::mesh::Version;
use crate::id::{GroupId, MAX_ID_NODES, NodeAddr};
use crate::time::Instant;

#[derive(Debug)]
pub(crate) struct ClusterView {
    own: NodeAddr,
    live: BTreeSet<NodeAddr>,
    /// Live nodes whose mesh link is down: no relay goes through them and no join waits on them until
    /// the link is back or membership decides. Always a subset of `live`.
    unreachable: BTreeSet<NodeAddr>,
    /// Deleted groups, with their version at deletion and when.
    tombstones: BTreeMap<GroupId, (Version, Instant)>,
    /// Only grows; starts from the wall clock in seconds, so that even a restarted node never claims
    /// the same epoch of a group twice.
    epoch_floor: u32,
    sync_armed: bool,
}

impl ClusterView {
    pub fn new(own: NodeAddr, epoch_floor: u32) -> Self {
        ClusterView {
            own,
            live: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            tombstones: BTreeMap::new(),
            epoch_floor,
            sync_armed: false,
        }
    }

    /// Records `node` alive; false when it was already (or is this node).
    pub fn node_up(&mut self, node: NodeAddr) -> bool {
        self.unreachable.remove(&node);
        node != self.own && self.live.insert(node)
    }

    /// Records `node` dead or gone; false when it was not alive (or is this node).
    pub fn node_down(&mut self, node: NodeAddr) -> bool {
        self.unreachable.remove(&node);
        node != self.own && self.live.remove(&node)
    }

    /// Records that the mesh link to live `node` broke; false when it was not live or already recorded.
    pub fn link_down(&mut self, node: NodeAddr) -> bool {
        self.live.contains(&node) && self.unreachable.insert(node)
    }

    /// Records that the mesh link to `node` works (again); false when nothing changed.
    pub fn link_up(&mut self, node: NodeAddr) -> bool {
        self.unreachable.remove(&node)
    }

    pub fn is_live(&self, node: NodeAddr) -> bool {
        self.live.contains(&node)
    }

    /// Alive and its link up: a node worth asking, and one a relay may go through.
    pub fn is_reachable(&self, node: NodeAddr) -> bool {
        self.live.contains(&node) && !self.unreachable.contains(&node)
    }

    /// The other live nodes, in address order.
    pub fn live(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        self.live.iter().copied()
    }

    /// No other node is known alive.
    pub fn is_alone(&self) -> bool {
        self.live.is_empty()
    }

    /// The backups a group created now gets: the next (up to) two live nodes after this one in address
    /// order, wrapping around. Deterministic, and it spreads backup duty evenly over the cluster.
    pub fn backup_candidates(&self) -> Vec<NodeAddr> {
        let after = self
            .live
            .range((Bound::Excluded(self.own), Bound::Unbounded));
        let before = self.live.range(..self.own);
        after
            .chain(before)
            .take(MAX_ID_NODES - 1)
            .copied()
            .collect()
    }

    /// An epoch above `current` that this node never claimed before.
    pub fn claim_epoch(&mut self, current: u32) -> u32 {
        let epoch = current.saturating_add(1).max(self.epoch_floor);
        self.epoch_floor = epoch.saturating_add(1);
        debug_assert!(epoch > current || epoch == u32::MAX, "epochs only grow");
        epoch
    }

    /// Remembers that `group` was deleted at `version`.
    pub fn bury(&mut self, group: GroupId, version: Version, now: Instant) {
        self.tombstones.insert(group, (version, now));
    }

    /// The version a deleted group had, as far as this node knows (zero if it never held it).
    pub fn tombstone_version(&self, group: &GroupId) -> Version {
        self.tombstones
            .get(group)
            .map(|(v, _)| *v)
            .unwrap_or_default()
    }

    /// Whether a state at `version` is older than a deletion this node knows of.
    pub fn buried(&self, group: &GroupId, version: Version) -> bool {
        self.tombstones
            .get(group)
            .is_some_and(|(deleted, _)| version.epoch <= deleted.epoch)
    }

    /// Forgets deletions older than `keep`.
    pub fn prune_tombstones(&mut self, now: Instant, keep: Duration) {
        self.tombstones
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= keep);
    }

    /// Arms the digest timer; false when it is armed already.
    pub fn arm_sync(&mut self) -> bool {
        !std::mem::replace(&mut self.sync_armed, true)
    }

    /// The digest timer fired.
    pub fn sync_fired(&mut self) {
        self.sync_armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn node(port: u16) -> NodeAddr {
        NodeAddr::new(Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn this_node_is_never_among_the_live_ones() {
        let mut view = ClusterView::new(node(8100), 0);
        assert!(!view.node_up(node(8100)));
        assert!(view.node_up(node(8101)));
        assert!(!view.node_up(node(8101)), "already alive");
        assert!(!view.node_down(node(8100)));
        assert_eq!(view.live().collect::<Vec<_>>(), vec![node(8101)]);
        assert!(view.node_down(node(8101)) && view.is_alone());
    }

    #[test]
    fn claimed_epochs_never_repeat_even_from_an_old_version() {
        let mut view = ClusterView::new(node(8100), 1_000);
        assert_eq!(view.claim_epoch(5), 1_000, "floored by the start time");
        assert_eq!(view.claim_epoch(5), 1_001);
        assert_eq!(view.claim_epoch(2_000), 2_001);
        assert_eq!(view.claim_epoch(7), 2_002);
    }

    #[test]
    fn tombstones_bury_older_epochs_until_pruned() {
        let mut view = ClusterView::new(node(8100), 0);
        let id = GroupId::generate(1, node(8100), &[]);
        view.bury(id, Version { epoch: 3, seq: 9 }, Instant::ZERO);
        assert!(view.buried(&id, Version { epoch: 3, seq: 10 }));
        assert!(!view.buried(&id, Version { epoch: 4, seq: 0 }));
        view.prune_tombstones(Instant::from_millis(2_000), Duration::from_secs(1));
        assert_eq!(view.tombstone_version(&id), Version::default());
    }
}
