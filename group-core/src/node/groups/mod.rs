//! Group operations: create, join, leave, broadcast, announce, random join, tick timers, offline.
//!
//! These are the server-side API (Diarkis's Group package) and also what client commands run. Each takes
//! the ver and cmd to use for the notification it pushes, as Diarkis's API does; client commands pass
//! their own (1/111, 1/112, 1/113).

pub(in crate::node) mod group;
mod members;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster::mesh::{MemberState, MeshMessage, Notice, RelayEntry};
use crate::config::merge_interval;
use crate::id::{GroupId, NodeAddr};
use crate::node::sessions::arm_ttl;
use crate::node::timers::TimerKind;
use crate::node::{
    BroadcastError, ConnId, CreateError, JoinError, JoinStatus, LeaveError, Node, RandJoinError,
    TickError,
};
use crate::proto::{CreateRequest, RandJoinRequest, VER_GROUP, cmd, member_push};
use crate::time::Instant;
use group::{Group, Member, PendingEntry, Tick};

/// Groups must outlive this ttl (Diarkis: "TTL must be greater than 10 seconds").
pub const MIN_TTL_S: u16 = 10;

impl Node {
    /// Creates a group owned by this node. With `params.join`, `creator` joins it (no push: nobody else is
    /// there yet). Server code may create a group with no creator when `allow_empty` is set.
    pub(in crate::node) fn create(
        &mut self,
        params: &CreateRequest,
        creator: Option<&str>,
        now: Instant,
    ) -> Result<GroupId, CreateError> {
        if self.offline {
            return Err(CreateError::NodeOffline);
        }
        if params.ttl_s <= MIN_TTL_S {
            return Err(CreateError::TtlTooShort {
                ttl_s: params.ttl_s,
            });
        }
        let max_ttl = self.config.group.max_ttl;
        if Duration::from_secs(u64::from(params.ttl_s)) > max_ttl {
            return Err(CreateError::TtlTooLong {
                ttl_s: params.ttl_s,
                max_s: max_ttl.as_secs(),
            });
        }
        let joiner = if params.join { creator } else { None };
        if !params.allow_empty && joiner.is_none() {
            return Err(CreateError::EmptyWithoutJoin);
        }
        let limits = &self.config.limits;
        if self.groups.len() >= limits.max_groups {
            return Err(CreateError::TooManyGroups {
                max: limits.max_groups,
            });
        }
        if let Some(uid) = joiner {
            let session = self
                .sessions
                .get(uid)
                .ok_or_else(|| CreateError::UnknownUser { uid: uid.into() })?;
            if session.groups.len() >= limits.max_groups_per_user {
                return Err(CreateError::UserGroupLimit {
                    max: limits.max_groups_per_user,
                });
            }
        }
        if let Some(uid) = creator {
            self.check_creations_of(uid)?;
        }
        let id = self.next_group_id(now);
        if let Some(uid) = creator {
            self.record_creation(uid, id);
            self.sessions.created(uid, id);
        }
        let ttl = Duration::from_secs(u64::from(params.ttl_s));
        let mut group = Group::new(
            id,
            params.allow_empty,
            ttl,
            merge_interval(u64::from(params.interval_ms)),
        );
        group.empty_since = Some(now);
        self.groups.insert(id, group);
        match joiner {
            Some(uid) => self.add_member(&id, uid),
            None => {
                if let Some(group) = self.groups.get_mut(&id) {
                    arm_ttl(group, &mut self.timers);
                }
            }
        }
        // The backups keep a copy from the start, so that they can take over.
        if let Some(group) = self.groups.get(&id) {
            let state = MeshMessage::State(group.state(self.config.addr));
            self.fan_out(&id, None, &state);
        }
        Ok(id)
    }

    fn next_group_id(&mut self, now: Instant) -> GroupId {
        let wall_ns = self.config.clock_origin_ns.saturating_add(now.as_nanos());
        self.last_id_ns = wall_ns.max(self.last_id_ns.saturating_add(1));
        GroupId::generate(self.last_id_ns, self.config.addr, &self.backup_candidates())
    }

    /// Refuses a creation by `uid` past `maxGroupsCreatedPerUser`. Groups that are gone (expired, deleted)
    /// or owned elsewhere now (handed over) no longer count: they are dropped from the record here, so
    /// it never holds more than one entry per group this node holds.
    fn check_creations_of(&mut self, uid: &str) -> Result<(), CreateError> {
        let own = self.config.addr;
        let max = self.config.limits.max_groups_created_per_user;
        let Some(created) = self.created.get_mut(uid) else {
            return Ok(());
        };
        let groups = &self.groups;
        let before = created.len();
        created.retain(|id| groups.get(id).is_some_and(|g| g.owned_by(own)));
        self.created_total -= before - created.len();
        if created.is_empty() {
            self.created.remove(uid);
            return Ok(());
        }
        if created.len() >= max {
            return Err(CreateError::UserCreateLimit { max });
        }
        Ok(())
    }

    /// Records that `uid` created `id`. The record holds at most about twice the groups this node holds:
    /// past that, every user's entries for groups gone or handed over are dropped (amortised: each sweep
    /// follows at least as many creations as it visits entries).
    fn record_creation(&mut self, uid: &str, id: GroupId) {
        let key = self
            .sessions
            .get_key_value(uid)
            .map_or_else(|| Arc::from(uid), |(k, _)| k.clone());
        if self.created.entry(key).or_default().insert(id) {
            self.created_total += 1;
        }
        if self.created_total > 2 * self.groups.len() + 1024 {
            let own = self.config.addr;
            let groups = &self.groups;
            for created in self.created.values_mut() {
                created.retain(|id| groups.get(id).is_some_and(|g| g.owned_by(own)));
            }
            self.created.retain(|_, created| !created.is_empty());
            self.created_total = self.created.values().map(|c| c.len()).sum();
        }
    }

    /// Adds `uid` to `id` (both checked by the caller) and records the group in the user's join order.
    fn add_member(&mut self, id: &GroupId, uid: &str) {
        let Some((key, session)) = self.sessions.get_key_value(uid) else {
            debug_assert!(false, "the caller checked the session of {uid}");
            return;
        };
        let Some(group) = self.groups.get_mut(id) else {
            debug_assert!(false, "the caller checked the group {id}");
            return;
        };
        debug_assert!(!group.members.contains_key(uid), "{uid} joins {id} once");
        let member = Member {
            sid: session.sid,
            node: self.config.addr,
            conn: Some(session.conn),
        };
        group.members.insert(key.clone(), member);
        group.empty_since = None;
        self.sessions.joined(uid, *id);
    }

    /// Joins `uid` to a group. When `message` is non-empty the other members get a push with `ver`/`cmd`
    /// (`group_id | uid_len | uid | message`). A group owned by another node is joined by asking it: the
    /// result then comes as [`crate::node::Event::JoinCompleted`], and `reply_to` (a client) gets its answer.
    pub(in crate::node) fn join_from(
        &mut self,
        id: &GroupId,
        uid: &str,
        message: Bytes,
        ver_cmd: (u8, u16),
        reply_to: Option<ConnId>,
    ) -> Result<JoinStatus, JoinError> {
        let own = self.config.addr;
        if !self.sessions.contains(uid) {
            return Err(JoinError::UnknownUser { uid: uid.into() });
        }
        match self.groups.get(id) {
            Some(g) if g.is_static || g.owned_by(own) => {
                self.join_here(id, uid, message, ver_cmd)?;
                Ok(JoinStatus::Joined)
            }
            _ => self.start_remote_join(id, uid, message, ver_cmd, reply_to),
        }
    }

    /// Joins a group this node owns (or a static group).
    pub(in crate::node) fn join_here(
        &mut self,
        id: &GroupId,
        uid: &str,
        message: Bytes,
        (ver, cmd): (u8, u16),
    ) -> Result<(), JoinError> {
        let own = self.config.addr;
        let superseded = self
            .groups
            .get(id)
            .and_then(|g| g.members.get(uid))
            .filter(|m| m.node != own && self.is_superseded(uid, m.node))
            .map(|m| m.sid);
        if let Some(sid) = superseded {
            // A session of this uid on another node, replaced by this one (see `sessions::claims`).
            self.remove_superseded(id, uid, sid);
        }
        let limits = &self.config.limits;
        let session = self
            .sessions
            .get(uid)
            .ok_or_else(|| JoinError::UnknownUser { uid: uid.into() })?;
        let group = self.groups.get(id).ok_or(JoinError::GroupNotFound)?;
        if group.members.contains_key(uid) {
            return Err(JoinError::AlreadyMember);
        }
        if group.members.len() >= limits.max_members_per_group {
            return Err(JoinError::GroupFull {
                max: limits.max_members_per_group,
            });
        }
        if session.groups.len() >= limits.max_groups_per_user {
            return Err(JoinError::UserGroupLimit {
                max: limits.max_groups_per_user,
            });
        }
        let sid = session.sid;
        if !message.is_empty() {
            let frame = member_push(ver, cmd, id, uid, &message);
            group.send_to_members(&frame, true, None, &mut self.out.transmits);
        }
        let is_static = group.is_static;
        self.add_member(id, uid);
        let notice = (!message.is_empty()).then_some(Notice { ver, cmd, message });
        if is_static {
            self.relay_static_notice(id, uid, notice);
            return Ok(());
        }
        let Some(group) = self.groups.get_mut(id) else {
            return Ok(());
        };
        group.version = group.version.next();
        let added = MeshMessage::MemberAdded {
            group: *id,
            version: group.version,
            member: MemberState {
                uid: uid.into(),
                sid: sid.0,
                node: own,
            },
            notice,
        };
        self.fan_out(id, None, &added);
        Ok(())
    }

    /// Removes `uid` from a group. When `message` is non-empty the remaining members get a push with
    /// `ver`/`cmd`. A group without allow_empty is deleted when its last member leaves.
    pub(in crate::node) fn leave(
        &mut self,
        id: &GroupId,
        uid: &str,
        message: Bytes,
        ver: u8,
        cmd: u16,
    ) -> Result<(), LeaveError> {
        let own = self.config.addr;
        if !self.sessions.contains(uid) {
            return Err(LeaveError::UnknownUser { uid: uid.into() });
        }
        let group = self.groups.get(id).ok_or(LeaveError::GroupNotFound)?;
        if group.members.get(uid).is_none_or(|m| m.node != own) {
            return Err(LeaveError::NotMember);
        }
        self.sessions.left(uid, id);
        let notice = (!message.is_empty()).then_some(Notice { ver, cmd, message });
        self.remove_local_member(id, uid, notice);
        Ok(())
    }

    /// Takes a member connected here out of a group (a leave or a discard): pushes `notice` to the members
    /// here, and to the rest of the cluster through the owner (or, for a static group, the relay tree).
    pub(in crate::node) fn remove_local_member(
        &mut self,
        id: &GroupId,
        uid: &str,
        notice: Option<Notice>,
    ) {
        let own = self.config.addr;
        let Some(group) = self.groups.get_mut(id) else {
            return;
        };
        if group.members.remove(uid).is_none() {
            return;
        }
        if let Some(n) = &notice {
            let frame = member_push(n.ver, n.cmd, id, uid, &n.message);
            group.send_to_members(&frame, true, None, &mut self.out.transmits);
        }
        if group.is_static {
            self.relay_static_notice(id, uid, notice);
            self.after_member_removed(id);
        } else if group.owned_by(own) {
            group.version = group.version.next();
            let removed = MeshMessage::MemberRemoved {
                group: *id,
                version: group.version,
                uid: uid.into(),
                notice,
            };
            self.fan_out(id, None, &removed);
            self.after_member_removed(id);
        } else {
            let resync = group.diverged;
            if let Some(owner) = group.owner {
                let leave = MeshMessage::Leave {
                    group: *id,
                    uid: uid.into(),
                    notice,
                };
                self.send_mesh(owner, leave);
                // A copy that kept a member the owner had moved elsewhere (a session replaced from
                // another node, whose claim came after the owner's change) has just dropped it, and the
                // owner ignores the leave: without the owner's state it would lack the newer member.
                if resync {
                    self.send_mesh(owner, MeshMessage::SyncRequest { group: *id });
                }
            }
            self.drop_copy_if_unneeded(id);
        }
    }

    /// Sends `message` from `uid` to the other members, at once or through the merge buffer.
    pub(in crate::node) fn broadcast(
        &mut self,
        id: &GroupId,
        uid: &str,
        ver: u8,
        cmd: u16,
        message: Bytes,
        reliable: bool,
    ) -> Result<(), BroadcastError> {
        if !self.sessions.contains(uid) {
            return Err(BroadcastError::UnknownUser { uid: uid.into() });
        }
        let group = self.groups.get(id).ok_or(BroadcastError::GroupNotFound)?;
        let sender = group
            .members
            .get_key_value(uid)
            .filter(|(_, m)| m.node == self.config.addr)
            .ok_or(BroadcastError::NotMember)?
            .0
            .clone();
        self.send_and_relay(
            id,
            PendingEntry {
                ver,
                cmd,
                reliable,
                sender: Some(sender),
                message,
            },
        );
        Ok(())
    }

    /// Sends `message` to every member, from no one (an entry with an empty uid). Server-side only: no
    /// client command reaches this.
    pub(in crate::node) fn announce(
        &mut self,
        id: &GroupId,
        ver: u8,
        cmd: u16,
        message: Bytes,
        reliable: bool,
    ) -> Result<(), BroadcastError> {
        if !self.groups.contains_key(id) {
            return Err(BroadcastError::GroupNotFound);
        }
        self.send_and_relay(
            id,
            PendingEntry {
                ver,
                cmd,
                reliable,
                sender: None,
                message,
            },
        );
        Ok(())
    }

    /// A static group has no owner to fan its join and leave pushes out: they go to every live node.
    fn relay_static_notice(&mut self, id: &GroupId, uid: &str, notice: Option<Notice>) {
        if let Some(notice) = notice {
            let targets: Vec<NodeAddr> = self.cluster.live().collect();
            let entry = RelayEntry::StaticMember {
                uid: uid.into(),
                notice,
            };
            self.relay(id, &targets, &entry);
        }
    }

    /// Delivers `entry` here and relays it to the other nodes that should see it: the member nodes, or for
    /// a static group every live node.
    fn send_and_relay(&mut self, id: &GroupId, entry: PendingEntry) {
        let own = self.config.addr;
        let targets: Vec<NodeAddr> = match self.groups.get(id) {
            Some(g) if g.is_static => self.cluster.live().collect(),
            Some(g) => g.member_nodes_except(own),
            None => Vec::new(),
        };
        if !targets.is_empty() {
            let relayed = RelayEntry::Broadcast {
                ver: entry.ver,
                cmd: entry.cmd,
                reliable: entry.reliable,
                sender: entry.sender.as_deref().unwrap_or("").into(),
                message: entry.message.clone(),
            };
            self.relay(id, &targets, &relayed);
        }
        self.send_entry(id, entry);
    }

    pub(in crate::node) fn send_entry(&mut self, id: &GroupId, entry: PendingEntry) {
        let Some(group) = self.groups.get_mut(id) else {
            return;
        };
        let before = self.out.transmits.len();
        if group.merge_every.is_zero() {
            group.deliver_now(&entry, &mut self.out.transmits);
            self.counters.deliveries += (self.out.transmits.len() - before) as u64;
            return;
        }
        if group.needs_flush_before(&entry, self.config.limits.max_merge_bytes) {
            group.flush(&mut self.out.transmits);
            self.counters.merge_flushes += 1;
            self.counters.deliveries += (self.out.transmits.len() - before) as u64;
        }
        group.buffer(entry);
        if !group.flush_armed {
            group.flush_armed = true;
            self.timers.arm(
                self.now.saturating_add(group.merge_every),
                TimerKind::Flush(*id),
            );
        }
    }

    /// Joins a group created by random join that `uid` is not in and that has room, picked with the
    /// node's seeded generator; creates one (with `params`) when there is none.
    pub(in crate::node) fn rand_join(
        &mut self,
        params: &RandJoinRequest,
        uid: &str,
        now: Instant,
    ) -> Result<GroupId, RandJoinError> {
        let max_members = self.config.limits.max_members_per_group;
        let candidates: Vec<GroupId> = self
            .random_pool
            .iter()
            .filter(|id| {
                self.groups
                    .get(*id)
                    .is_some_and(|g| !g.members.contains_key(uid) && g.members.len() < max_members)
            })
            .copied()
            .collect();
        if !candidates.is_empty() {
            let pick = candidates.get(self.rng.below(candidates.len())).copied();
            if let Some(id) = pick {
                self.join_here(&id, uid, params.message.clone(), (VER_GROUP, cmd::JOIN))?;
                return Ok(id);
            }
        }
        let create = CreateRequest {
            allow_empty: params.allow_empty,
            join: true,
            ttl_s: params.ttl_s,
            interval_ms: params.interval_ms,
        };
        let id = self.create(&create, Some(uid), now)?;
        if let Some(group) = self.groups.get_mut(&id) {
            group.random_pool = true;
        }
        self.random_pool.insert(id);
        Ok(id)
    }

    /// Sets (or with `None` clears) a group's tick timer: an [`crate::node::Event::Tick`] every `interval`, the
    /// first one `interval` from now. Stops by itself when the group is deleted.
    pub(in crate::node) fn set_tick(
        &mut self,
        id: &GroupId,
        interval: Option<Duration>,
        now: Instant,
    ) -> Result<(), TickError> {
        if interval.is_some_and(|i| i < Duration::from_secs(1)) {
            return Err(TickError::ZeroInterval);
        }
        self.next_epoch += 1;
        let generation = self.next_epoch;
        let group = self.groups.get_mut(id).ok_or(TickError::GroupNotFound)?;
        group.tick = interval.map(|interval| Tick {
            interval,
            generation,
        });
        if let Some(interval) = interval {
            self.timers.arm(
                now.saturating_add(interval),
                TimerKind::Tick(*id, generation),
            );
        }
        Ok(())
    }

    /// Takes the node offline: it refuses new groups, pushes Offline (ver 0, cmd 6) to every session so
    /// clients create groups elsewhere, and hands the groups it owns to their first live backup.
    /// Idempotent.
    pub(in crate::node) fn set_offline(&mut self) {
        if self.offline {
            return;
        }
        self.offline = true;
        let frame = Node::offline_frame();
        for (_, session) in self.sessions.iter() {
            self.out.transmits.push_back(crate::node::Transmit {
                conn: session.conn,
                frame: frame.clone(),
                reliable: true,
            });
        }
        self.hand_over_owned_groups();
    }
}
