//! The copies this node keeps of groups owned elsewhere: installing them, applying the owner's changes
//! in version order, catching up from states and digests, correcting the owner with `Register`, and
//! tombstones that keep deleted groups from coming back.

use std::sync::Arc;
use std::time::Duration;

use super::Change;
use crate::cluster::mesh::{
    DigestEntry, GroupState, MemberState, MeshMessage, Notice, Version, members_fingerprint,
};
use crate::id::{GroupId, NodeAddr};
use crate::node::groups::group::{Group, Member};
use crate::node::remote_joins::valid_uid;
use crate::node::{Event, Node, Sid};
use crate::proto::member_push;

impl Node {
    /// Replaces (or creates) this node's copy of a group with `state`, keeping the members connected here
    /// as this node's sessions say, and telling the owner when its view of them differs.
    pub(in crate::node) fn install_copy(&mut self, state: GroupState, from: NodeAddr) {
        let own = self.config.addr;
        let max = self.config.limits.max_members_per_group;
        let send_interval = self.config.group.send_interval;
        let now = self.now;
        let was_owner = self.groups.get(&state.id).is_some_and(|g| g.owned_by(own));
        let group = self
            .groups
            .entry(state.id)
            .or_insert_with(|| Group::new(state.id, false, Duration::ZERO, Duration::ZERO));
        let owner_changed = group.owner.is_some_and(|o| o != state.owner) && state.owner != own;
        // A state that names this node as owner, when this node did not own the group, was passed on by
        // a node that takes this one for the owner: take the group over properly (a new epoch), so that
        // one version never stands for two different member lists.
        let handed_to_us = state.owner == own && !was_owner;
        group.allow_empty = state.allow_empty;
        group.ttl = Duration::from_secs(state.ttl_s);
        group.interval = crate::config::merge_interval(state.interval_ms);
        group.owner = Some(state.owner);
        // Backups always follow from the ID (its other addresses), whatever list the sender had.
        group.backups = match state.id.layout() {
            Ok(layout) => layout.nodes().filter(|n| *n != state.owner).collect(),
            Err(_) => state
                .backups
                .into_iter()
                .take(crate::id::MAX_ID_NODES)
                .collect(),
        };
        group.version = state.version;
        // A state passed on by another node carries that node's own members as it sees them: its version
        // does not vouch for its member list, so the copy fetches the owner's state at the next chance.
        let from_owner = from == state.owner;
        if from_owner {
            group.heard_from_owner = now;
        }
        group.diverged = !from_owner;
        group.members.retain(|_, m| m.node == own);
        let mut claimed_here: Vec<(String, [u8; 16])> = Vec::new();
        for m in state.members {
            if !valid_uid(&m.uid) {
                continue;
            }
            if m.node == own {
                claimed_here.push((m.uid, m.sid));
            } else if group.members.len() < max && !group.members.contains_key(m.uid.as_str()) {
                let member = Member {
                    sid: Sid(m.sid),
                    node: m.node,
                    conn: None,
                };
                group.members.insert(Arc::from(m.uid.as_str()), member);
            }
        }
        group.merge_every = if group.owned_by(own) {
            group.interval
        } else {
            send_interval
        };
        group.empty_since = group.members.is_empty().then_some(now);
        claimed_here.sort();
        let mut here: Vec<(String, [u8; 16])> = group
            .members_on(own)
            .into_iter()
            .map(|m| (m.uid, m.sid))
            .collect();
        here.sort();
        if here != claimed_here && !group.owned_by(own) {
            // The owner's list and this copy's differ at one version (see `apply_change`).
            group.diverged = true;
            let register = MeshMessage::Register {
                group: group.id,
                members: group.members_on(own),
                copy: None,
            };
            self.send_mesh(state.owner, register);
        }
        if owner_changed {
            self.push_rejoin(&state.id);
        }
        if handed_to_us {
            self.take_ownership(&state.id);
            return;
        }
        // A state naming an owner this node already knows to be dead: fail over now, as if the news of
        // its death came after the state.
        if state.owner != own && !self.cluster.is_live(state.owner) {
            self.fail_over(&state.id, state.owner);
        }
    }

    /// Whether this node should keep a copy it has no members in: it owns it or is one of its backups.
    pub(in crate::node) fn keeps_copy(&self, group: &Group) -> bool {
        let own = self.config.addr;
        group.is_static
            || group.owned_by(own)
            || group.backups.contains(&own)
            || group.members.values().any(|m| m.node == own)
    }

    /// Forgets a copy nobody here needs any more.
    pub(in crate::node) fn drop_copy_if_unneeded(&mut self, id: &GroupId) {
        if self.groups.get(id).is_some_and(|g| !self.keeps_copy(g)) {
            self.groups.remove(id);
        }
    }

    pub(in crate::node) fn apply_change(
        &mut self,
        from: NodeAddr,
        id: &GroupId,
        version: Version,
        change: Change,
        notice: Option<Notice>,
    ) {
        let own = self.config.addr;
        let Some(group) = self.groups.get_mut(id) else {
            if id.layout().is_ok_and(|l| l.nodes().any(|n| n == own)) {
                self.send_mesh(from, MeshMessage::SyncRequest { group: *id });
            }
            return;
        };
        if group.owner != Some(from) || version <= group.version {
            if group.owner != Some(from) && version.epoch > group.version.epoch {
                self.send_mesh(from, MeshMessage::SyncRequest { group: *id });
            }
            return;
        }
        if version != group.version.next() {
            self.send_mesh(from, MeshMessage::SyncRequest { group: *id });
            return;
        }
        group.version = version;
        group.heard_from_owner = self.now;
        let mut disagree = false;
        let uid = match &change {
            Change::Added(m) => m.uid.as_str(),
            Change::Removed(uid) => uid.as_str(),
        };
        if let Some(n) = &notice {
            let frame = member_push(n.ver, n.cmd, id, uid, &n.message);
            group.send_to_members(&frame, true, Some(uid), &mut self.out.transmits);
        }
        match change {
            Change::Added(m) if m.node == own => {
                disagree = group
                    .members
                    .get(m.uid.as_str())
                    .is_none_or(|l| l.node != own);
            }
            Change::Added(m) => {
                let local = group
                    .members
                    .get(m.uid.as_str())
                    .is_some_and(|l| l.node == own);
                if valid_uid(&m.uid) && !local {
                    let member = Member {
                        sid: Sid(m.sid),
                        node: m.node,
                        conn: None,
                    };
                    group.members.insert(Arc::from(m.uid.as_str()), member);
                    group.empty_since = None;
                }
            }
            Change::Removed(uid) => {
                if group
                    .members
                    .get(uid.as_str())
                    .is_some_and(|l| l.node == own)
                {
                    disagree = true;
                } else {
                    group.members.remove(uid.as_str());
                }
            }
        }
        if disagree {
            // This copy now differs from the owner's at the same version, which digests cannot see:
            // the next one fetches the whole state, and so does this node's next leave (see
            // `remove_local_member`), the moment the two views can agree again.
            group.diverged = true;
            let register = MeshMessage::Register {
                group: *id,
                members: group.members_on(own),
                copy: None,
            };
            self.send_mesh(from, register);
        }
        self.drop_copy_if_unneeded(id);
    }

    /// A state from the owner it names, or forwarded by a node that gave up its claim to it. It replaces
    /// this node's copy when it is newer from the same owner, or when it comes from a stronger claim.
    pub(in crate::node) fn on_state(&mut self, from: NodeAddr, state: GroupState) {
        let own = self.config.addr;
        if self.cluster.buried(&state.id, state.version) {
            return;
        }
        let theirs = claim(&state.id, state.version.epoch, state.owner);
        match self.groups.get(&state.id) {
            Some(group) if group.is_static => {}
            Some(group) if group.owned_by(own) => {
                if theirs > claim(&state.id, group.version.epoch, own) {
                    // The other owner wins: keep a copy, and pass the winner's state to the nodes that
                    // followed this one, so that they follow the winner too.
                    let followers = group.copy_holders_except(own);
                    for to in followers.into_iter().filter(|n| *n != state.owner) {
                        self.send_mesh(to, MeshMessage::State(state.clone()));
                    }
                    self.install_copy(state, from);
                } else {
                    let ours = MeshMessage::State(group.state(own));
                    self.send_mesh(state.owner, ours.clone());
                    if from != state.owner {
                        self.send_mesh(from, ours);
                    }
                }
            }
            Some(group) if group.owner == Some(state.owner) => {
                // From the owner, any difference from its version, even "ahead" (a copy can hold a
                // version from another owner's lineage), means this copy is not the owner's. A state
                // passed on by another node may be old: it only replaces an older copy.
                let newer = if from == state.owner {
                    state.version != group.version || group.diverged
                } else {
                    state.version > group.version
                };
                if newer {
                    self.install_copy(state, from);
                } else if from == state.owner {
                    // Same version, but the owner may still count members here wrongly (a lost
                    // registration): restate them if so.
                    let claimed = members_fingerprint(
                        state
                            .members
                            .iter()
                            .filter(|m| m.node == own)
                            .map(|m| (m.uid.as_str(), &m.sid)),
                    );
                    if claimed != group.fingerprint_on(own) {
                        let register = MeshMessage::Register {
                            group: state.id,
                            members: group.members_on(own),
                            copy: None,
                        };
                        self.send_mesh(state.owner, register);
                    }
                }
            }
            Some(group) => {
                let current = group.owner.unwrap_or(own);
                // The node this copy follows says it follows another: it gave the group up.
                let abdicated = from == current;
                let orphaned = !self.cluster.is_live(current);
                if abdicated || orphaned || theirs > claim(&state.id, group.version.epoch, current)
                {
                    self.install_copy(state, from);
                }
            }
            None if state.id.layout().is_ok_and(|l| l.nodes().any(|n| n == own)) => {
                self.install_copy(state, from);
            }
            None => {}
        }
    }

    pub(in crate::node) fn on_digest(&mut self, from: NodeAddr, entries: &[DigestEntry]) {
        let own = self.config.addr;
        let nobody = members_fingerprint(std::iter::empty());
        for entry in entries
            .iter()
            .take(crate::cluster::mesh::MAX_DIGEST_ENTRIES)
        {
            let id = &entry.group;
            let in_id = id.layout().is_ok_and(|l| l.nodes().any(|n| n == own));
            let (behind, disagree) = match self.groups.get_mut(id) {
                Some(g) if g.is_static || g.owned_by(own) => (false, false),
                Some(g) if g.owner == Some(from) => {
                    g.heard_from_owner = self.now;
                    let behind = g.version != entry.version || g.diverged;
                    (
                        behind,
                        !behind && g.fingerprint_on(own) != entry.members_here,
                    )
                }
                Some(g) => {
                    let current = g.owner.unwrap_or(own);
                    let stronger =
                        claim(id, entry.version.epoch, from) > claim(id, g.version.epoch, current);
                    (!self.cluster.is_live(current) || stronger, false)
                }
                None => (
                    in_id && !self.cluster.buried(id, entry.version),
                    entry.members_here != nobody,
                ),
            };
            if behind {
                self.send_mesh(from, MeshMessage::SyncRequest { group: *id });
            } else if disagree {
                // The owner counts members here that differ from this node's sessions (a lost leave, a
                // join whose answer was lost): restate who is here.
                let members = self
                    .groups
                    .get(id)
                    .map(|g| g.members_on(own))
                    .unwrap_or_default();
                let register = MeshMessage::Register {
                    group: *id,
                    members,
                    copy: None,
                };
                self.send_mesh(from, register);
            }
        }
    }

    /// A member node lists its members of a group this node owns: make the owner's record match.
    pub(in crate::node) fn on_register(
        &mut self,
        from: NodeAddr,
        id: &GroupId,
        members: Vec<MemberState>,
        copy: Option<GroupState>,
    ) {
        let own = self.config.addr;
        let max = self.config.limits.max_members_per_group;
        if let Some(copy) = copy.filter(|c| c.id == *id && c.owner == own) {
            // The sender expects this node to take over a group whose owner died.
            let dead_owner = id.layout().map(|l| l.owner).ok();
            let owner_gone = dead_owner.is_none_or(|o| o == own || !self.cluster.is_live(o));
            match self.groups.get(id) {
                // Installing a copy that names this node as owner takes the group over.
                None if owner_gone => self.install_copy(copy, from),
                Some(g) if !g.owned_by(own) && g.owner.is_none_or(|o| !self.cluster.is_live(o)) => {
                    self.take_ownership(id);
                }
                _ => {}
            }
        }
        let group = match self.groups.get_mut(id) {
            Some(g) if g.owned_by(own) => g,
            // The sender takes this node for the owner of a group it does not have: gone.
            None => {
                let version = self.cluster.tombstone_version(id);
                return self.send_mesh(
                    from,
                    MeshMessage::Deleted {
                        group: *id,
                        version,
                    },
                );
            }
            Some(_) => return,
        };
        // No filter on session claims here: a claim this node missed (a partition, a restart) would leave
        // an older one standing, and a filter on it would refuse a live member for good while its node's
        // copy kept it. A member replaced elsewhere is not re-added over the newer one (a uid held is
        // skipped below), and its node's leave follows its claim.
        let listed: Vec<MemberState> = members
            .into_iter()
            .filter(|m| m.node == from && valid_uid(&m.uid))
            .collect();
        let gone: Vec<Arc<str>> = group
            .members
            .iter()
            .filter(|(uid, m)| m.node == from && !listed.iter().any(|l| l.uid == ***uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        let mut changes = Vec::new();
        for uid in gone {
            group.members.remove(&uid);
            changes.push(group.count_removal(&uid));
        }
        for m in listed {
            if group.members.contains_key(m.uid.as_str()) || group.members.len() >= max {
                continue;
            }
            let member = Member {
                sid: Sid(m.sid),
                node: from,
                conn: None,
            };
            group.members.insert(Arc::from(m.uid.as_str()), member);
            group.empty_since = None;
            group.version = group.version.next();
            changes.push(MeshMessage::MemberAdded {
                group: *id,
                version: group.version,
                member: m,
                notice: None,
            });
        }
        for change in &changes {
            self.fan_out(id, None, change);
        }
        if !changes.is_empty() {
            self.after_member_removed(id);
        }
    }

    pub(in crate::node) fn on_deleted(&mut self, from: NodeAddr, id: &GroupId, version: Version) {
        let own = self.config.addr;
        let Some(group) = self.groups.get(id) else {
            return;
        };
        if group.is_static || group.owned_by(own) {
            return;
        }
        // From the owner, always. From another node of the group ID, only for a copy with nobody here
        // (a backup's copy): dropping it costs nothing, the owner's next digest brings it back if the
        // group lives on.
        let nobody_here = group.members.values().all(|m| m.node != own);
        let from_group_node = id.layout().is_ok_and(|l| l.nodes().any(|n| n == from));
        if group.owner != Some(from) && !(nobody_here && from_group_node) {
            return;
        }
        let local: Vec<Arc<str>> = group
            .members
            .iter()
            .filter(|(_, m)| m.node == own)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in local {
            self.sessions.left(&uid, id);
        }
        let seen = group.version.max(version);
        self.groups.remove(id);
        self.cluster.bury(*id, seen, self.now);
        self.random_pool.remove(id);
        self.out
            .events
            .push_back(Event::GroupDeleted { group: *id });
    }
}

/// Which of two nodes claiming a group wins: the later epoch, then the earlier position in the group ID.
fn claim(id: &GroupId, epoch: u32, node: NodeAddr) -> (u32, std::cmp::Reverse<usize>) {
    let rank = id
        .layout()
        .ok()
        .and_then(|l| l.nodes().position(|n| n == node))
        .unwrap_or(usize::MAX);
    (epoch, std::cmp::Reverse(rank))
}
