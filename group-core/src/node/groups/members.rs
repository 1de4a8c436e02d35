//! A group's members, with the set of nodes they are connected to kept up to date as members come and go,
//! so that a broadcast finds the nodes to relay to without walking every member.

use std::collections::BTreeMap;
use std::ops::Deref;

use super::group::Member;
use crate::id::NodeAddr;
use crate::node::Uid;

/// Members by uid (read through `Deref`); every change goes through the methods below, which keep the
/// per-node counts in step.
#[derive(Debug, Default)]
pub(crate) struct Members {
    by_uid: BTreeMap<Uid, Member>,
    /// Members per node; a node is present only while it has at least one.
    per_node: BTreeMap<NodeAddr, usize>,
}

impl Deref for Members {
    type Target = BTreeMap<Uid, Member>;

    fn deref(&self) -> &Self::Target {
        &self.by_uid
    }
}

impl Members {
    pub fn insert(&mut self, uid: Uid, member: Member) -> Option<Member> {
        *self.per_node.entry(member.node).or_default() += 1;
        let replaced = self.by_uid.insert(uid, member);
        if let Some(old) = &replaced {
            self.uncount(old.node);
        }
        replaced
    }

    pub fn remove(&mut self, uid: &str) -> Option<Member> {
        let removed = self.by_uid.remove(uid);
        if let Some(old) = &removed {
            self.uncount(old.node);
        }
        removed
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Uid, &Member) -> bool) {
        self.by_uid.retain(|uid, m| keep(uid, m));
        self.per_node.clear();
        for member in self.by_uid.values() {
            *self.per_node.entry(member.node).or_default() += 1;
        }
    }

    /// The nodes holding members, in address order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        self.per_node.keys().copied()
    }

    fn uncount(&mut self, node: NodeAddr) {
        if let Some(count) = self.per_node.get_mut(&node) {
            *count -= 1;
            if *count == 0 {
                self.per_node.remove(&node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Sid;
    use std::net::Ipv4Addr;

    fn member(node: u16) -> Member {
        Member {
            sid: Sid([0; 16]),
            node: NodeAddr::new(Ipv4Addr::LOCALHOST, node),
            conn: None,
        }
    }

    #[test]
    fn the_node_set_follows_every_change() {
        let mut members = Members::default();
        members.insert("a".into(), member(1));
        members.insert("b".into(), member(2));
        members.insert("c".into(), member(2));
        let ports = |m: &Members| m.nodes().map(|n| n.0.port()).collect::<Vec<_>>();
        assert_eq!(ports(&members), [1, 2]);
        members.insert("a".into(), member(3)); // moved to another node
        assert_eq!(ports(&members), [2, 3]);
        members.remove("b");
        assert_eq!(ports(&members), [2, 3]);
        members.remove("c");
        assert_eq!(ports(&members), [3]);
        members.insert("d".into(), member(4));
        members.retain(|_, m| m.node.0.port() == 4);
        assert_eq!(ports(&members), [4]);
        assert_eq!(members.len(), 1);
    }
}
