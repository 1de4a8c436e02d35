//! What other nodes send, and the copies of groups this node keeps for them.
//!
//! Every non-static group has one owner, which decides membership and counts a [`Version`]. Every other
//! node that holds members (and every backup) keeps a copy, changed only by the owner's messages, applied
//! strictly in version order; a gap makes the copy ask for the whole state. One rule keeps a copy from ever
//! pushing to someone who is not a member: the members connected to *this* node come from this node's
//! sessions, never from a peer. When a peer's view of them differs, this node sends `Register` with its own
//! list and the owner corrects itself.

mod copies;
mod failover;
mod view;

pub(crate) use view::ClusterView;

use std::sync::Arc;

use crate::cluster::mesh::{MemberState, MeshMessage, Notice, RelayEntry};
use crate::cluster::relay::{RelayHop, relay_plan};
use crate::id::{GroupId, NodeAddr};
use crate::node::{MeshTransmit, Node};
use crate::proto::member_push;

/// Most nodes a relayed message may ask its receiver to forward to: a bound on what one peer can make
/// this node send.
pub const MAX_RELAY_BRANCH: usize = 1024;

/// One membership change from the owner.
pub(in crate::node) enum Change {
    Added(MemberState),
    Removed(String),
}

impl Node {
    /// A message from another node arrived. `from` is the sender's mesh address as the transport
    /// established it. Malformed or stale messages are ignored; nothing a peer sends can panic the node.
    pub(in crate::node) fn mesh(&mut self, from: NodeAddr, message: MeshMessage) {
        if from == self.config.addr {
            return;
        }
        match message {
            MeshMessage::JoinRequest {
                op,
                group,
                member,
                notice,
            } => self.on_join_request(from, op, group, member, notice),
            MeshMessage::JoinResponse { op, result, .. } => self.on_join_response(from, op, result),
            MeshMessage::Leave { group, uid, notice } => {
                self.on_remote_leave(from, &group, &uid, notice)
            }
            MeshMessage::MemberAdded {
                group,
                version,
                member,
                notice,
            } => self.apply_change(from, &group, version, Change::Added(member), notice),
            MeshMessage::MemberRemoved {
                group,
                version,
                uid,
                notice,
            } => self.apply_change(from, &group, version, Change::Removed(uid), notice),
            MeshMessage::State(state) => self.on_state(from, state),
            MeshMessage::SyncRequest { group } => {
                let own = self.config.addr;
                match self.groups.get(&group) {
                    // From the owner, the state; from a node that is no longer the owner, its copy, which
                    // names the owner it follows now.
                    Some(g) if !g.is_static => {
                        let state = MeshMessage::State(g.state(own));
                        self.send_mesh(from, state);
                    }
                    // The asker's copy outlived the group (it missed `Deleted`).
                    None => {
                        let version = self.cluster.tombstone_version(&group);
                        self.send_mesh(from, MeshMessage::Deleted { group, version });
                    }
                    Some(_) => {}
                }
            }
            MeshMessage::Digest { groups } => self.on_digest(from, &groups),
            MeshMessage::Register {
                group,
                members,
                copy,
            } => self.on_register(from, &group, members, copy),
            MeshMessage::Handover(state) => self.on_handover(from, state),
            MeshMessage::Deleted { group, version } => self.on_deleted(from, &group, version),
            MeshMessage::Relay {
                group,
                origin,
                seq,
                branch,
                entry,
            } => self.on_relay(&group, (origin, seq), branch, entry),
            MeshMessage::SessionOpened { uid, opened_ns, .. } => {
                self.on_session_opened(from, &uid, opened_ns)
            }
        }
    }

    pub(in crate::node) fn send_mesh(&mut self, to: NodeAddr, message: MeshMessage) {
        if to != self.config.addr {
            self.out.mesh.push_back(MeshTransmit { to, message });
        }
    }

    /// Sends `message` to every other node keeping a copy of the group, except `except`.
    pub(in crate::node) fn fan_out(
        &mut self,
        id: &GroupId,
        except: Option<NodeAddr>,
        message: &MeshMessage,
    ) {
        let own = self.config.addr;
        let Some(group) = self.groups.get(id) else {
            return;
        };
        for to in group.copy_holders_except(own) {
            if Some(to) != except {
                self.send_mesh(to, message.clone());
            }
        }
    }

    /// Starts a relay of `entry`, entering the mesh here, to `targets` (this node excluded).
    pub(in crate::node) fn relay(
        &mut self,
        id: &GroupId,
        targets: &[NodeAddr],
        entry: &RelayEntry,
    ) {
        self.relay_seq += 1;
        let origin = (self.config.addr, self.relay_seq);
        self.forward_relay(id, origin, targets, entry);
    }

    /// Sends `entry` on to `targets` as a tree of width `relayLimit`. The tree goes only through nodes
    /// this node can reach: one whose link is down (a suspect) gets its own copy as a leaf, so a failed
    /// node never carries the others' share, and nothing waits for membership to declare it dead.
    fn forward_relay(
        &mut self,
        id: &GroupId,
        (origin, seq): (NodeAddr, u64),
        targets: &[NodeAddr],
        entry: &RelayEntry,
    ) {
        let width = usize::try_from(self.config.group.relay_limit).unwrap_or(1);
        let (through, leaves): (Vec<NodeAddr>, Vec<NodeAddr>) =
            targets.iter().partition(|n| self.cluster.is_reachable(**n));
        let leaves = leaves.into_iter().map(|to| RelayHop {
            to,
            branch: Vec::new(),
        });
        let hops: Vec<RelayHop> = relay_plan(&through, width)
            .into_iter()
            .chain(leaves)
            .collect();
        for hop in hops {
            let message = MeshMessage::Relay {
                group: *id,
                origin,
                seq,
                branch: hop.branch,
                entry: entry.clone(),
            };
            self.send_mesh(hop.to, message);
        }
    }

    fn on_relay(
        &mut self,
        id: &GroupId,
        (origin, seq): (NodeAddr, u64),
        mut branch: Vec<NodeAddr>,
        entry: RelayEntry,
    ) {
        let own = self.config.addr;
        if branch.len() > MAX_RELAY_BRANCH {
            return;
        }
        branch.retain(|n| *n != own);
        self.forward_relay(id, (origin, seq), &branch, &entry);
        if let Some(group) = self.groups.get_mut(id) {
            let seen = group.relay_seen.entry(origin).or_insert(0);
            if seq <= *seen {
                // A later entry from the same origin came first (over a re-planned tree): drop this one
                // rather than deliver out of order.
                self.counters.stale_relays_dropped += 1;
                return;
            }
            *seen = seq;
        }
        match entry {
            RelayEntry::Broadcast {
                ver,
                cmd,
                reliable,
                sender,
                message,
            } => {
                let sender = (!sender.is_empty()).then(|| Arc::from(sender.as_str()));
                let entry = crate::node::groups::group::PendingEntry {
                    ver,
                    cmd,
                    reliable,
                    sender,
                    message,
                };
                self.send_entry(id, entry);
            }
            RelayEntry::StaticMember { uid, notice } => {
                if let Some(group) = self.groups.get(id).filter(|g| g.is_static) {
                    let frame = member_push(notice.ver, notice.cmd, id, &uid, &notice.message);
                    group.send_to_members(&frame, true, None, &mut self.out.transmits);
                }
            }
        }
    }

    /// A member node reports that one of its members left a group this node owns.
    fn on_remote_leave(&mut self, from: NodeAddr, id: &GroupId, uid: &str, notice: Option<Notice>) {
        let own = self.config.addr;
        let Some(group) = self.groups.get_mut(id).filter(|g| g.owned_by(own)) else {
            return;
        };
        if group.members.get(uid).is_none_or(|m| m.node != from) {
            return;
        }
        group.members.remove(uid);
        if let Some(n) = &notice {
            let frame = member_push(n.ver, n.cmd, id, uid, &n.message);
            group.send_to_members(&frame, true, None, &mut self.out.transmits);
        }
        group.version = group.version.next();
        let version = group.version;
        let to_others = MeshMessage::MemberRemoved {
            group: *id,
            version,
            uid: uid.to_string(),
            notice,
        };
        self.fan_out(id, Some(from), &to_others);
        // The sender already pushed to its own members: it only needs the new version.
        let to_sender = MeshMessage::MemberRemoved {
            group: *id,
            version,
            uid: uid.to_string(),
            notice: None,
        };
        if self
            .groups
            .get(id)
            .is_some_and(|g| g.copy_holders_except(own).contains(&from))
        {
            self.send_mesh(from, to_sender);
        }
        self.after_member_removed(id);
    }
}
