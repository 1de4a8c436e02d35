//! Joining a group owned by another node: ask the owner this node knows (or the addresses of the ID),
//! and keep a copy of the group on success.
//!
//! The joining node checks what it can itself (session, per-user limit, a join already in flight) before it
//! asks; the owner checks membership and size. The client's response waits for the owner's answer.
//!
//! A join never answers "group not found" for a group a live node holds. While an owner is dying, the
//! nodes with copies answer "owner in transition" (or "not the owner"), and the join waits (50 ms,
//! doubling up to 400 ms) and asks again, the owner this node knows first, until it succeeds or
//! `meshRequestTimeout` x `remoteJoinTries` has passed (then 204, owner unreachable). If this node takes
//! the group over meanwhile, the join completes here. Only when every node that could hold the group
//! said it does not is the answer 200.

mod pending;

use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::mesh::{GroupState, JoinRefusal, MemberState, MeshMessage, Notice};
use crate::id::{GroupId, NodeAddr};
use crate::node::groups::group::Member;
use crate::node::timers::TimerKind;
use crate::node::{ConnId, Event, JoinError, JoinStatus, Node, Outcome, Sid};
use crate::proto::{VER_GROUP, cmd, member_push};
pub(crate) use pending::{PendingJoin, RemoteJoins};

impl Node {
    /// Starts a join of a group this node does not own. Checks done by the caller: the session exists.
    pub(in crate::node) fn start_remote_join(
        &mut self,
        id: &GroupId,
        uid: &str,
        message: Bytes,
        (ver, cmd): (u8, u16),
        reply_to: Option<ConnId>,
    ) -> Result<JoinStatus, JoinError> {
        let Some((uid, session)) = self.sessions.get_key_value(uid) else {
            return Err(JoinError::UnknownUser { uid: uid.into() });
        };
        let own = self.config.addr;
        let copy = self.groups.get(id);
        // A member on another node whose session this one replaced is stale: the owner will say so.
        let here_already = copy
            .and_then(|g| g.members.get(&**uid))
            .is_some_and(|m| m.node == own || !self.is_superseded(uid, m.node));
        if here_already {
            return Err(JoinError::AlreadyMember);
        }
        if self.joins.in_progress(uid, id) {
            return Err(JoinError::InProgress);
        }
        // Joins in flight count against the user's group limit: that bounds the pending joins by
        // `maxConnections` x `maxGroupsPerUser`, whatever a client (or server code) asks for.
        let max = self.config.limits.max_groups_per_user;
        let joining = self.joins.count_for(uid);
        if session.groups.len() + joining >= max {
            return Err(JoinError::UserGroupLimit { max });
        }
        let holds_copy = copy.is_some();
        if !holds_copy && self.join_candidates(id, None).is_empty() {
            return Err(JoinError::GroupNotFound);
        }
        let limits = &self.config.limits;
        let patience = limits
            .mesh_request_timeout
            .saturating_mul(self.config.group.remote_join_tries.max(1));
        let pending = PendingJoin::new(
            uid.clone(),
            session.sid,
            *id,
            (!message.is_empty()).then_some(Notice { ver, cmd, message }),
            reply_to.map(|conn| (conn, ver, cmd)),
            self.now.saturating_add(patience),
            holds_copy,
        )
        .started_at(self.now);
        let op = self.joins.start(pending);
        debug_assert!(
            self.joins.len() <= limits.max_connections * limits.max_groups_per_user,
            "pending joins are bounded by sessions x groups per user"
        );
        self.advance_join(op, false);
        Ok(JoinStatus::Pending(op))
    }

    /// The nodes worth asking to admit a member to `id`, best first: the owner this node's copy names,
    /// then the addresses of the ID. Only reachable nodes (alive, link up), never this node, never one
    /// that already said it does not hold the group.
    fn join_candidates(&self, id: &GroupId, pending: Option<&PendingJoin>) -> Vec<NodeAddr> {
        let own = self.config.addr;
        let mut candidates: Vec<NodeAddr> = self
            .groups
            .get(id)
            .and_then(|g| g.owner)
            .into_iter()
            .collect();
        if let Ok(layout) = id.layout() {
            candidates.extend(layout.nodes());
        }
        let mut seen = std::collections::BTreeSet::new();
        candidates.retain(|n| {
            *n != own
                && self.cluster.is_reachable(*n)
                && pending.is_none_or(|p| !p.lacks(*n))
                && seen.insert(*n)
        });
        candidates
    }

    /// Moves a join on: it completes here if this node owns the group now, asks a node, waits before
    /// asking again, or ends when its time is up or no node can hold the group. `rotate`: ask the node
    /// after the one asked last (it did not answer, or said it lacks the group); otherwise start again
    /// from the best candidate (after a wait, the owner may have changed).
    fn advance_join(&mut self, op: u64, rotate: bool) {
        let own = self.config.addr;
        let Some(pending) = self.joins.get(op) else {
            return;
        };
        let id = pending.group;
        if self.now >= pending.give_up_at {
            let tries = self.config.group.remote_join_tries;
            let error = if pending.maybe_held {
                JoinError::OwnerUnreachable { tries }
            } else {
                JoinError::GroupNotFound
            };
            return self.finish_join(op, Err(error));
        }
        if self.groups.get(&id).is_some_and(|g| g.owned_by(own)) {
            // This node took the group over while the join waited (its session is still the uid's:
            // a session's end ends its joins, see `end_joins_of`).
            let (uid, notice) = (pending.uid.clone(), pending.notice.clone());
            let (message, ver_cmd) = notice.map_or((Bytes::new(), (VER_GROUP, cmd::JOIN)), |n| {
                (n.message, (n.ver, n.cmd))
            });
            let result = self.join_here(&id, &uid, message, ver_cmd);
            return self.finish_join(op, result);
        }
        let candidates = self.join_candidates(&id, Some(pending));
        if candidates.is_empty() {
            if !pending.maybe_held {
                // Every node that could hold the group said it does not.
                return self.finish_join(op, Err(JoinError::GroupNotFound));
            }
            return self.wait_to_ask_again(op);
        }
        let next = match pending.last_asked().filter(|_| rotate) {
            Some(last) => candidates
                .iter()
                .position(|c| *c == last)
                .map_or(0, |i| (i + 1) % candidates.len()),
            None => 0,
        };
        if let Some(to) = candidates.get(next).or(candidates.first()) {
            self.ask_to_join(op, *to);
        }
    }

    /// Waits (with backoff, never past the join's end) before asking again.
    fn wait_to_ask_again(&mut self, op: u64) {
        let Some(give_up_at) = self.joins.get(op).map(|p| p.give_up_at) else {
            return;
        };
        let Some((attempt, wait)) = self.joins.wait(op) else {
            return;
        };
        let at = self.now.saturating_add(wait).min(give_up_at);
        self.timers.arm(at, TimerKind::JoinTimeout(op, attempt));
    }

    fn ask_to_join(&mut self, op: u64, to: NodeAddr) {
        let own = self.config.addr;
        let Some(attempt) = self.joins.ask(op, to) else {
            return;
        };
        let Some(pending) = self.joins.get(op) else {
            return;
        };
        let deadline = self
            .now
            .saturating_add(self.config.limits.mesh_request_timeout)
            .min(pending.give_up_at);
        let message = MeshMessage::JoinRequest {
            op,
            group: pending.group,
            member: MemberState {
                uid: pending.uid.to_string(),
                sid: pending.sid.0,
                node: own,
            },
            notice: pending.notice.clone(),
        };
        self.timers
            .arm(deadline, TimerKind::JoinTimeout(op, attempt));
        self.send_mesh(to, message);
    }

    /// The join timer of `op` fired; `attempt` says which attempt armed it (an ask that got no answer, or
    /// a wait that is over).
    pub(in crate::node) fn join_timed_out(&mut self, op: u64, attempt: u32) {
        let Some(pending) = self.joins.get(op).filter(|p| p.attempt() == attempt) else {
            return;
        };
        let unanswered = pending.target().is_some();
        if unanswered {
            // Silence is no proof the group is gone.
            self.joins.maybe_held(op);
        }
        self.advance_join(op, unanswered);
    }

    /// Joins waiting on a node that is dead, or whose link broke, move on at once.
    pub(in crate::node) fn retry_joins_waiting_on(&mut self, node: NodeAddr) {
        for op in self.joins.waiting_on(node) {
            self.joins.maybe_held(op);
            self.advance_join(op, true);
        }
    }

    /// A node answered a join request.
    pub(in crate::node) fn on_join_response(
        &mut self,
        from: NodeAddr,
        op: u64,
        result: Result<GroupState, JoinRefusal>,
    ) {
        let Some(pending) = self.joins.get(op) else {
            return; // Answered after it ended, or never asked: ignore.
        };
        if pending.target() != Some(from) {
            return; // The answer to an earlier attempt.
        }
        match result {
            Ok(state) if state.id == pending.group => self.complete_remote_join(from, op, state),
            Ok(_) | Err(JoinRefusal::NotFound) => {
                self.joins.lacking(op, from);
                self.advance_join(op, true);
            }
            Err(JoinRefusal::NotOwner | JoinRefusal::OwnerInTransition) => {
                // The group exists; its owner is elsewhere or being replaced: ask again shortly.
                self.joins.maybe_held(op);
                self.wait_to_ask_again(op);
            }
            Err(JoinRefusal::AlreadyMember) => self.finish_join(op, Err(JoinError::AlreadyMember)),
            Err(JoinRefusal::GroupFull) => {
                let max = self.config.limits.max_members_per_group;
                self.finish_join(op, Err(JoinError::GroupFull { max }));
            }
        }
    }

    /// The owner recorded the member: keep a copy, add the member locally, answer the client.
    fn complete_remote_join(&mut self, owner: NodeAddr, op: u64, state: GroupState) {
        let own = self.config.addr;
        let Some(pending) = self.joins.get(op) else {
            return;
        };
        let (id, uid) = (pending.group, pending.uid.clone());
        let max = self.config.limits.max_groups_per_user;
        let session = self.sessions.get(&uid).filter(|s| s.sid == pending.sid);
        let refusal = match session {
            None => Some(JoinError::UnknownUser {
                uid: uid.to_string(),
            }),
            Some(s) if s.groups.len() >= max => Some(JoinError::UserGroupLimit { max }),
            Some(_) => None,
        };
        if let Some(error) = refusal {
            // The session ended (or filled up) while the owner was deciding: undo the owner's record.
            let undo = MeshMessage::Leave {
                group: id,
                uid: uid.to_string(),
                notice: None,
            };
            self.send_mesh(owner, undo);
            self.finish_join(op, Err(error));
            return;
        }
        if self.groups.get(&id).is_some_and(|g| g.owned_by(own)) {
            // This node took the group over while the answer was on its way (the owner died and both
            // claimed it). Installing the answer as a copy would make this node follow the other while
            // the other may follow this one, and then nobody admits anyone. Settle the two claims as two
            // states settle; if ours stands, the member joins our lineage here.
            self.on_state(owner, state.clone());
            if self.groups.get(&id).is_some_and(|g| g.owned_by(own)) {
                let undo = MeshMessage::Leave {
                    group: id,
                    uid: uid.to_string(),
                    notice: None,
                };
                self.send_mesh(owner, undo);
                let notice = self.joins.get(op).and_then(|p| p.notice.clone());
                let (message, ver_cmd) = notice
                    .map_or((Bytes::new(), (VER_GROUP, cmd::JOIN)), |n| {
                        (n.message, (n.ver, n.cmd))
                    });
                let result = self.join_here(&id, &uid, message, ver_cmd);
                return self.finish_join(op, result);
            }
            // Theirs stands: this node now follows their state, which counts the member.
        }
        self.finish_followed_join(owner, op, state);
    }

    /// Adds the member an owner admitted to this node's copy, answers the client, and installs the
    /// owner's state as the copy.
    fn finish_followed_join(&mut self, owner: NodeAddr, op: u64, state: GroupState) {
        let own = self.config.addr;
        let Some(pending) = self.joins.get(op) else {
            return;
        };
        let (id, uid) = (pending.group, pending.uid.clone());
        let session = self.sessions.get(&uid).filter(|s| s.sid == pending.sid);
        let conn = session.map(|s| s.conn);
        if let (Some(notice), Some(group)) = (&pending.notice, self.groups.get(&id)) {
            let frame = member_push(notice.ver, notice.cmd, &id, &uid, &notice.message);
            group.send_to_members(&frame, true, None, &mut self.out.transmits);
        }
        let member = Member {
            sid: pending.sid,
            node: own,
            conn,
        };
        let copy = self.groups.entry(id).or_insert_with(|| {
            // A fresh copy starts under the owner that answered, so installing it is no owner change.
            let mut fresh = crate::node::groups::group::Group::new(
                id,
                state.allow_empty,
                std::time::Duration::ZERO,
                Default::default(),
            );
            fresh.owner = Some(state.owner);
            fresh
        });
        copy.members.insert(Arc::clone(&uid), member);
        self.sessions.joined(&uid, id);
        // Answer first: installing the copy may push to the members here (a rejoin, if the owner named
        // in the state is already known dead), and the new member must have its answer before any push.
        self.finish_join(op, Ok(()));
        self.install_copy(state, owner);
    }

    /// A session ended: so do its pending joins. Left waiting, one could complete for the uid's next
    /// session, which never asked for that group, and would refuse that session's own join of it
    /// (JOIN_IN_PROGRESS) and count against its group limit. An owner that already admitted the member
    /// tells this node (`MemberAdded`), which disagrees and restates its members.
    pub(in crate::node) fn end_joins_of(&mut self, uid: &str, sid: Sid) {
        for op in self.joins.of_session(uid, sid) {
            let error = JoinError::UnknownUser {
                uid: uid.to_string(),
            };
            self.finish_join(op, Err(error));
        }
    }

    /// Ends a pending join: answers the client (if one asked) and reports the result.
    fn finish_join(&mut self, op: u64, result: Result<(), JoinError>) {
        let Some(pending) = self.joins.finish(op) else {
            return;
        };
        if let Some((conn, ver, cmd)) = pending.reply_to {
            match &result {
                Ok(()) => self.respond(conn, ver, cmd, pending.group.as_bytes()),
                Err(e) => self.refuse(
                    conn,
                    ver,
                    cmd,
                    e.code(),
                    Some(&pending.group),
                    &e.to_string(),
                ),
            }
        }
        let outcome = pending.reply_to.map(|_| match &result {
            // After hooks see the group, as they do for a local join.
            Ok(()) => Outcome::Accepted {
                group: Some(pending.group),
            },
            Err(e) => Outcome::Refused { code: e.code() },
        });
        self.out.events.push_back(Event::JoinCompleted {
            op,
            waited: self.now.saturating_duration_since(pending.started),
            uid: pending.uid,
            group: pending.group,
            result,
            outcome,
        });
    }

    /// Another node asks this one, as owner, to add a member connected to it.
    pub(in crate::node) fn on_join_request(
        &mut self,
        from: NodeAddr,
        op: u64,
        id: GroupId,
        member: MemberState,
        notice: Option<Notice>,
    ) {
        let result = self.admit_remote_member(from, &id, member, notice);
        self.send_mesh(
            from,
            MeshMessage::JoinResponse {
                op,
                group: id,
                result,
            },
        );
    }

    fn admit_remote_member(
        &mut self,
        from: NodeAddr,
        id: &GroupId,
        member: MemberState,
        notice: Option<Notice>,
    ) -> Result<GroupState, JoinRefusal> {
        let own = self.config.addr;
        let max = self.config.limits.max_members_per_group;
        let owner = self.groups.get(id).ok_or(JoinRefusal::NotFound)?.owner;
        match owner {
            Some(owner) if owner == own => {}
            // The owner this node knows is alive and reachable: the asker should ask it.
            Some(owner) if self.cluster.is_reachable(owner) => return Err(JoinRefusal::NotOwner),
            // This node holds a copy, but its owner is suspect or dead and no successor has claimed
            // it yet: the group exists, so the asker must not hear "not found".
            _ => return Err(JoinRefusal::OwnerInTransition),
        }
        if !valid_uid(&member.uid) {
            return Err(JoinRefusal::NotFound);
        }
        // The member on another node belongs to a session the joiner's replaced (its claim came first on
        // this link): take the old membership out, as that session's end will.
        let superseded = self
            .groups
            .get(id)
            .and_then(|g| g.members.get(member.uid.as_str()));
        if let Some(old) =
            superseded.filter(|m| m.node != from && self.is_superseded(&member.uid, m.node))
        {
            let sid = old.sid;
            self.remove_superseded(id, &member.uid, sid);
        }
        let group = self.groups.get_mut(id).ok_or(JoinRefusal::NotFound)?;
        if let Some(existing) = group.members.get(member.uid.as_str()) {
            // A retry of a join whose answer was lost is not an error.
            if existing.node == from && existing.sid.0 == member.sid {
                return Ok(group.state(own));
            }
            return Err(JoinRefusal::AlreadyMember);
        }
        if group.members.len() >= max {
            return Err(JoinRefusal::GroupFull);
        }
        if let Some(n) = &notice {
            let frame = member_push(n.ver, n.cmd, id, &member.uid, &n.message);
            group.send_to_members(&frame, true, None, &mut self.out.transmits);
        }
        group.members.insert(
            Arc::from(member.uid.as_str()),
            Member {
                sid: Sid(member.sid),
                node: from,
                conn: None,
            },
        );
        group.empty_since = None;
        group.version = group.version.next();
        let version = group.version;
        let state = group.state(own);
        let added = MeshMessage::MemberAdded {
            group: *id,
            version,
            member: MemberState {
                node: from,
                ..member
            },
            notice,
        };
        self.fan_out(id, Some(from), &added);
        Ok(state)
    }
}

/// A uid a peer sent is acceptable: 1 to 64 bytes (the same rule as Hello).
pub(in crate::node) fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= crate::proto::MAX_UID_LEN
}
