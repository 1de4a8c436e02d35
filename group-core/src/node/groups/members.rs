//! A group's members, with the set of nodes they are connected to kept up to date as members come and go,
//! so that a broadcast finds the nodes to relay to without walking every member; and their local
//! connections listed once per change, so that a broadcast does not walk the members either (with 100
//! members flat out, walking them and comparing every uid with the sender's was a tenth of the node
//! task's time, docs/benchmarks/FANOUT-LOG.md).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ops::Deref;

use super::group::Member;
use crate::id::NodeAddr;
use crate::node::ConnId;
use crate::node::Uid;

/// Members by uid (read through `Deref`); every change goes through the methods below, which keep the
/// per-node counts in step.
#[derive(Debug, Default)]
pub(crate) struct Members {
    by_uid: BTreeMap<Uid, Member>,
    /// Members per node; a node is present only while it has at least one.
    per_node: BTreeMap<NodeAddr, usize>,
    /// The local members' connections in uid order: made by the first broadcast after a change.
    local_conns: OnceCell<Vec<ConnId>>,
}

impl Deref for Members {
    type Target = BTreeMap<Uid, Member>;

    fn deref(&self) -> &Self::Target {
        &self.by_uid
    }
}

impl Members {
    pub fn insert(&mut self, uid: Uid, member: Member) -> Option<Member> {
        self.local_conns.take();
        *self.per_node.entry(member.node).or_default() += 1;
        let replaced = self.by_uid.insert(uid, member);
        if let Some(old) = &replaced {
            self.uncount(old.node);
        }
        replaced
    }

    pub fn remove(&mut self, uid: &str) -> Option<Member> {
        self.local_conns.take();
        let removed = self.by_uid.remove(uid);
        if let Some(old) = &removed {
            self.uncount(old.node);
        }
        removed
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Uid, &Member) -> bool) {
        self.local_conns.take();
        self.by_uid.retain(|uid, m| keep(uid, m));
        self.per_node.clear();
        for member in self.by_uid.values() {
            *self.per_node.entry(member.node).or_default() += 1;
        }
    }

    /// The local members' connections in uid order, with `except`'s left out (a member's connection
    /// is its own: a session has one uid, and a uid one member entry).
    pub fn local_conns_except(&self, except: Option<&str>) -> impl Iterator<Item = ConnId> + '_ {
        let skip = except
            .and_then(|uid| self.by_uid.get(uid))
            .and_then(|m| m.conn);
        let conns = self.local_conns.get_or_init(|| {
            self.by_uid
                .values()
                .filter_map(|member| member.conn)
                .collect()
        });
        conns
            .iter()
            .copied()
            .filter(move |&conn| Some(conn) != skip)
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

    fn local(node: u16, conn: u64) -> Member {
        Member {
            conn: Some(ConnId(conn)),
            ..member(node)
        }
    }

    /// The list a broadcast goes to is made afresh after every kind of change, and leaves only the
    /// sender out.
    #[test]
    fn the_local_connections_follow_every_change() {
        let mut members = Members::default();
        let conns = |m: &Members, except| m.local_conns_except(except).collect::<Vec<_>>();
        members.insert("b".into(), local(1, 2));
        members.insert("a".into(), local(1, 1));
        members.insert("r".into(), member(2)); // on another node: no connection here
        assert_eq!(conns(&members, None), [ConnId(1), ConnId(2)]);
        assert_eq!(conns(&members, Some("a")), [ConnId(2)]);
        assert_eq!(conns(&members, Some("r")), [ConnId(1), ConnId(2)]);
        assert_eq!(conns(&members, Some("nobody")), [ConnId(1), ConnId(2)]);
        members.insert("a".into(), local(1, 7)); // reconnected
        assert_eq!(conns(&members, None), [ConnId(7), ConnId(2)]);
        members.insert("c".into(), local(1, 3));
        assert_eq!(conns(&members, None), [ConnId(7), ConnId(2), ConnId(3)]);
        members.remove("b");
        assert_eq!(conns(&members, Some("c")), [ConnId(7)]);
        members.retain(|uid, _| &**uid != "a");
        assert_eq!(conns(&members, None), [ConnId(3)]);
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
