//! What the node counts for operators (metrics): cumulative counters kept as it works, and a census of its
//! groups taken when asked. Reading them costs the node nothing between scrapes.

use super::Node;

/// Cumulative counts since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeCounters {
    /// Broadcast pushes handed to members' connections here (one per member per push; a merged push
    /// counts once however many entries it holds).
    pub deliveries: u64,
    /// Merged pushes sent: a merging group's buffer flushed (on its interval, or early because the next
    /// entry would pass `maxMergeBytes`).
    pub merge_flushes: u64,
    /// Groups this node became the owner of because their owner died or drained.
    pub ownership_taken: u64,
    /// Relayed broadcasts dropped as already overtaken (see [`Node::stale_relays_dropped`]).
    pub stale_relays_dropped: u64,
}

/// The node's groups, counted when asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCensus {
    /// Groups this node owns, static groups included (every node serves those).
    pub owned: usize,
    /// Copies of groups other nodes own, kept to relay and to take over.
    pub copies: usize,
    /// Members of the groups this node owns, wherever they are connected: summed over the cluster's
    /// nodes, every membership counts once.
    pub members_of_owned: usize,
}

impl Node {
    /// The cumulative counters.
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// Counts the groups held here; walks every group, so it is for scrapes, not hot paths.
    pub fn group_census(&self) -> GroupCensus {
        let own = self.config.addr;
        let mut census = GroupCensus::default();
        for group in self.groups.values() {
            if group.is_static || group.owner == Some(own) {
                census.owned += 1;
                census.members_of_owned += group.members.len();
            } else {
                census.copies += 1;
            }
        }
        census
    }
}
