//! The relay tree: how a broadcast reaches every other node holding members of its group, with no node
//! sending to more than `relayLimit` others.
//!
//! The sender's node sends to up to `width` nodes; each receives, with the broadcast, a *branch*: the
//! nodes it must forward to, which it splits the same way. The remaining targets are cut into `width`
//! near-equal chunks, the first node of each chunk being the hop and the rest its branch. That gives the
//! shallowest possible tree: a tree of depth D reaches at most S(D) = w + w^2 + ... + w^D nodes, and if
//! n <= S(D) then ceil(n/w) - 1 <= S(D-1), so every branch fits in depth D-1.

use crate::id::NodeAddr;

/// One send of a relayed broadcast: to `to`, which forwards to `branch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHop {
    /// The node to send to.
    pub to: NodeAddr,
    /// The nodes `to` must relay to in turn (empty for a leaf).
    pub branch: Vec<NodeAddr>,
}

/// Plans the hops from this node. `targets` are the nodes still to reach (the caller's member nodes minus
/// itself, or the branch it received); they are sorted and deduplicated here so that every node computes the
/// same tree. `width` is `relayLimit`; zero counts as one.
#[must_use]
pub fn relay_plan(targets: &[NodeAddr], width: usize) -> Vec<RelayHop> {
    let mut rest = targets.to_vec();
    rest.sort_unstable();
    rest.dedup();
    let width = width.max(1);
    let chunk = rest.len().div_ceil(width).max(1);
    rest.chunks(chunk)
        .filter_map(|c| c.split_first())
        .map(|(to, branch)| RelayHop {
            to: *to,
            branch: branch.to_vec(),
        })
        .collect()
}

/// The depth of the shallowest tree of this width that reaches `targets` nodes.
pub fn optimal_depth(targets: usize, width: usize) -> usize {
    let width = width.max(1);
    let (mut depth, mut reached, mut level) = (0usize, 0usize, 1usize);
    while reached < targets {
        level = level.saturating_mul(width);
        reached = reached.saturating_add(level);
        depth += 1;
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn node(i: u16) -> NodeAddr {
        NodeAddr::new(Ipv4Addr::new(10, 0, 0, 1), 8000 + i)
    }

    /// Runs the whole relay from `sender` and returns, per node reached, (times reached, depth).
    fn simulate(
        sender: NodeAddr,
        members: &[NodeAddr],
        width: usize,
    ) -> BTreeMap<NodeAddr, (usize, usize)> {
        let first: Vec<NodeAddr> = members.iter().copied().filter(|n| *n != sender).collect();
        let mut reached: BTreeMap<NodeAddr, (usize, usize)> = BTreeMap::new();
        let mut frontier = vec![(relay_plan(&first, width), 1usize)];
        let mut steps = 0;
        while let Some((hops, depth)) = frontier.pop() {
            assert!(
                hops.len() <= width.max(1),
                "no node sends to more than relayLimit others"
            );
            for hop in hops {
                steps += 1;
                assert!(steps <= members.len() * 2, "the relay terminates");
                let entry = reached.entry(hop.to).or_insert((0, depth));
                entry.0 += 1;
                frontier.push((relay_plan(&hop.branch, width), depth + 1));
            }
        }
        reached
    }

    #[test]
    fn small_trees_are_as_expected() {
        assert!(relay_plan(&[], 2).is_empty());
        let plan = relay_plan(&[node(3), node(1), node(2), node(1)], 2);
        assert_eq!(
            plan,
            vec![
                RelayHop {
                    to: node(1),
                    branch: vec![node(2)]
                },
                RelayHop {
                    to: node(3),
                    branch: vec![]
                },
            ]
        );
        assert_eq!(
            relay_plan(&[node(1), node(2)], 0).len(),
            1,
            "width 0 counts as 1: a chain"
        );
        assert_eq!(
            (
                optimal_depth(0, 2),
                optimal_depth(2, 2),
                optimal_depth(6, 2),
                optimal_depth(7, 2)
            ),
            (0, 1, 2, 3)
        );
    }

    proptest! {
        #[test]
        fn every_member_node_gets_it_exactly_once_never_the_sender_and_no_deeper_than_needed(
            ids in proptest::collection::btree_set(0u16..500, 1..120),
            sender_index in any::<prop::sample::Index>(),
            width in 1usize..6,
        ) {
            let members: Vec<NodeAddr> = ids.iter().map(|&i| node(i)).collect();
            let sender = members[sender_index.index(members.len())];
            let reached = simulate(sender, &members, width);
            prop_assert!(!reached.contains_key(&sender), "the sender's node never gets its own broadcast");
            prop_assert_eq!(reached.len(), members.len() - 1, "every other member node is reached");
            prop_assert!(reached.values().all(|(times, _)| *times == 1), "exactly once");
            let depth = reached.values().map(|(_, d)| *d).max().unwrap_or(0);
            prop_assert_eq!(depth, optimal_depth(members.len() - 1, width));
        }
    }
}
