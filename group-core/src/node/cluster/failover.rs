//! Reacting to the cluster's membership: nodes coming and going, owners dying, a draining node handing its
//! groups over, and the periodic digest that lets copies catch up.
//!
//! Every node decides on its own who the new owner of a group is, from the same inputs: the addresses in
//! the group ID (owner first, then backups) and which of them the membership layer reports alive. The first
//! live backup takes over; while views differ (during a partition), two nodes may both claim a group, and
//! the later epoch, then the earlier position in the ID, wins when they hear of each other.

use std::sync::Arc;

use crate::cluster::mesh::{DigestEntry, GroupState, MAX_DIGEST_ENTRIES, MeshMessage, Version};
use crate::id::{GroupId, NodeAddr};
use crate::node::timers::TimerKind;
use crate::node::{Node, Uid};
use crate::proto::{VER_GROUP, cmd, member_push};

impl Node {
    /// The membership layer reports another node alive. New groups take their backups from live nodes, and
    /// this node sends the node its current state of every group the two share, which also settles which
    /// of two owners wins after a partition heals.
    pub(in crate::node) fn node_up(&mut self, node: NodeAddr) {
        let own = self.config.addr;
        if !self.cluster.node_up(node) {
            return;
        }
        if self.cluster.arm_sync() {
            let at = self
                .now
                .saturating_add(self.config.limits.mesh_sync_interval);
            self.timers.arm(at, TimerKind::MeshSync);
        }
        let shared: Vec<GroupState> = self
            .groups
            .values()
            .filter(|g| g.owned_by(own))
            .filter(|g| {
                g.copy_holders_except(own).contains(&node)
                    || g.id.layout().is_ok_and(|l| l.nodes().any(|n| n == node))
            })
            .map(|g| g.state(own))
            .collect();
        for state in shared {
            self.send_mesh(node, MeshMessage::State(state));
        }
    }

    /// The membership layer reports a node dead (or gone). Its members leave every group (the others get
    /// the discard push), joins waiting on it move on, and groups it owned move to their first live backup.
    pub(in crate::node) fn node_down(&mut self, node: NodeAddr) {
        if !self.cluster.node_down(node) {
            return;
        }
        // A restarted node counts its relays from 1 again.
        for group in self.groups.values_mut() {
            group.relay_seen.remove(&node);
        }
        self.retry_joins_waiting_on(node);
        let affected: Vec<GroupId> = self
            .groups
            .values()
            .filter(|g| !g.is_static)
            .filter(|g| g.owner == Some(node) || g.members.values().any(|m| m.node == node))
            .map(|g| g.id)
            .collect();
        for id in affected {
            self.remove_members_of(&id, node);
            self.fail_over(&id, node);
        }
    }

    /// If `dead` owned the group, moves it to the first live backup: this node takes over, or it tells the
    /// expected new owner who is here (with its copy, in case the new owner lacks one) and the members get
    /// the rejoin push.
    pub(in crate::node) fn fail_over(&mut self, id: &GroupId, dead: NodeAddr) {
        let own = self.config.addr;
        let Some(group) = self.groups.get(id) else {
            return;
        };
        if group.owner != Some(dead) {
            return;
        }
        let successor = group
            .backups
            .iter()
            .copied()
            .find(|b| *b != dead && (*b == own || self.cluster.is_live(*b)));
        match successor {
            Some(next) if next == own => self.take_ownership(id),
            Some(next) => {
                if let Some(group) = self.groups.get_mut(id) {
                    group.owner = Some(next);
                    let register = MeshMessage::Register {
                        group: *id,
                        members: group.members_on(own),
                        copy: Some(group.state(own)),
                    };
                    self.send_mesh(next, register);
                }
                self.push_rejoin(id);
            }
            None => {} // No backup left: the copies keep relaying among themselves.
        }
    }

    /// Drops the members connected to a dead node from a group, pushing the discard message to the members
    /// here; the owner also counts the change so that copies stay in step.
    fn remove_members_of(&mut self, id: &GroupId, dead: NodeAddr) {
        let own = self.config.addr;
        let Some(group) = self.groups.get_mut(id) else {
            return;
        };
        let gone: Vec<(Uid, crate::node::Sid)> = group
            .members
            .iter()
            .filter(|(_, m)| m.node == dead)
            .map(|(uid, m)| (uid.clone(), m.sid))
            .collect();
        if gone.is_empty() {
            return;
        }
        let mut changes = Vec::new();
        for (uid, sid) in &gone {
            let Some(group) = self.groups.get_mut(id) else {
                return;
            };
            group.members.remove(uid);
            let message = (self.discard_message)(id, uid, sid);
            let frame = member_push(VER_GROUP, cmd::LEAVE, id, uid, &message);
            group.send_to_members(&frame, true, None, &mut self.out.transmits);
            group.diverged = !group.owned_by(own);
            if group.owned_by(own) {
                changes.push(group.count_removal(uid));
            }
        }
        for change in &changes {
            self.fan_out(id, None, change);
        }
        if self.groups.get(id).is_some_and(|g| g.owned_by(own)) {
            self.after_member_removed(id);
        } else {
            self.drop_copy_if_unneeded(id);
        }
    }

    /// This node becomes the group's owner: a new epoch, the owner's merge interval, the whole state to
    /// every copy, and the rejoin push to the members here.
    pub(in crate::node) fn take_ownership(&mut self, id: &GroupId) {
        let own = self.config.addr;
        let Some(group) = self.groups.get_mut(id) else {
            return;
        };
        if group.members.is_empty() && group.deleted_when_empty() {
            // Nothing to own: an empty group that may not be empty ends here, without a state round.
            group.owner = Some(own);
            self.delete_group(id);
            return;
        }
        group.owner = Some(own);
        self.counters.ownership_taken += 1;
        let epoch = self.cluster.claim_epoch(group.version.epoch);
        group.version = Version { epoch, seq: 0 };
        group.backups = id
            .layout()
            .map(|l| l.nodes().filter(|n| *n != own).collect())
            .unwrap_or_default();
        group.merge_every = group.interval;
        // Members on nodes this node knows to be dead go now (the old owner may not have seen them die).
        let dead: std::collections::BTreeSet<NodeAddr> = group
            .members
            .values()
            .map(|m| m.node)
            .filter(|n| *n != own && !self.cluster.is_live(*n))
            .collect();
        for node in dead {
            self.remove_members_of(id, node);
        }
        let Some(group) = self.groups.get(id) else {
            return;
        };
        let state = MeshMessage::State(group.state(own));
        self.fan_out(id, None, &state);
        self.push_rejoin(id);
        if self.groups.get(id).is_some_and(|g| g.members.is_empty()) {
            if let Some(group) = self.groups.get_mut(id) {
                group.empty_since = Some(self.now);
            }
            self.after_member_removed(id);
        }
    }

    /// Pushes each member here a 111 with its own uid and the rejoin custom message. Sent once per owner
    /// change this node sees (a failover, or a drained owner's handover), so clients learn that their
    /// group moved.
    pub(in crate::node) fn push_rejoin(&mut self, id: &GroupId) {
        let own = self.config.addr;
        let Some(group) = self.groups.get(id) else {
            return;
        };
        let local: Vec<(Arc<str>, crate::node::Sid, crate::node::ConnId)> = group
            .members
            .iter()
            .filter(|(_, m)| m.node == own)
            .filter_map(|(uid, m)| Some((uid.clone(), m.sid, m.conn?)))
            .collect();
        for (uid, sid, conn) in local {
            let message = (self.rejoin_message)(id, &uid, &sid);
            let frame = member_push(VER_GROUP, cmd::JOIN, id, &uid, &message);
            self.out.transmits.push_back(crate::node::Transmit {
                conn,
                frame,
                reliable: true,
            });
        }
    }

    /// A draining owner hands this node a group: take it over.
    pub(in crate::node) fn on_handover(&mut self, from: NodeAddr, state: GroupState) {
        let own = self.config.addr;
        if state.owner != from || !state.backups.contains(&own) {
            return;
        }
        if self.groups.get(&state.id).is_some_and(|g| g.is_static) {
            return;
        }
        let id = state.id;
        self.install_copy(state, from);
        self.take_ownership(&id);
    }

    /// Hands every group this node owns to its first live backup (used when going offline). Groups with no
    /// live backup stay here and end with the node.
    pub(in crate::node) fn hand_over_owned_groups(&mut self) {
        let own = self.config.addr;
        let owned: Vec<GroupId> = self
            .groups
            .values()
            .filter(|g| g.owned_by(own))
            .map(|g| g.id)
            .collect();
        let send_interval = self.config.group.send_interval;
        for id in owned {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            let Some(next) = group
                .backups
                .iter()
                .copied()
                .find(|b| self.cluster.is_live(*b))
            else {
                continue;
            };
            let state = group.state(own);
            group.owner = Some(next);
            group.merge_every = send_interval;
            self.send_mesh(next, MeshMessage::Handover(state));
            self.push_rejoin(&id);
        }
    }

    /// The digest timer fired: tell each node the versions of the groups it holds copies of.
    pub(in crate::node) fn send_digests(&mut self) {
        let own = self.config.addr;
        self.cluster.sync_fired();
        let keep = self.config.limits.mesh_sync_interval.saturating_mul(10);
        self.cluster.prune_tombstones(self.now, keep);
        if self.cluster.is_alone() {
            return;
        }
        let mut per_node: std::collections::BTreeMap<NodeAddr, Vec<DigestEntry>> =
            Default::default();
        for group in self.groups.values().filter(|g| g.owned_by(own)) {
            for node in group.copy_holders_except(own) {
                if self.cluster.is_live(node) {
                    per_node.entry(node).or_default().push(DigestEntry {
                        group: group.id,
                        version: group.version,
                        members_here: group.fingerprint_on(node),
                    });
                }
            }
        }
        // Copies whose owner has been silent about them for three rounds ask it directly: it answers with
        // the state, or with `Deleted` if the group is gone.
        let silence = self.config.limits.mesh_sync_interval.saturating_mul(3);
        let now = self.now;
        let mut stale = Vec::new();
        for group in self.groups.values_mut() {
            let Some(owner) = group.owner.filter(|o| *o != own) else {
                continue;
            };
            if self.cluster.is_live(owner)
                && now.saturating_duration_since(group.heard_from_owner) > silence
            {
                group.heard_from_owner = now;
                stale.push((owner, group.id));
            }
        }
        for (owner, id) in stale {
            self.send_mesh(owner, MeshMessage::SyncRequest { group: id });
        }
        for (node, entries) in per_node {
            for chunk in entries.chunks(MAX_DIGEST_ENTRIES) {
                let digest = MeshMessage::Digest {
                    groups: chunk.to_vec(),
                };
                self.send_mesh(node, digest);
            }
        }
        let armed = self.cluster.arm_sync();
        debug_assert!(armed, "one digest timer at a time");
        let at = self
            .now
            .saturating_add(self.config.limits.mesh_sync_interval);
        self.timers.arm(at, TimerKind::MeshSync);
    }
}
