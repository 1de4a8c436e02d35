//! Joining a group owned by another node: ask the owner named in the ID, fall back to the other addresses
//! of the ID on refusal or timeout (up to `remoteJoinTries` attempts), and keep a copy of the group on
//! success.
//!
//! The joining node checks what it can itself (session, per-user limit, a join already in flight) before it
//! asks; the owner checks membership and size. The client's response waits for the owner's answer.

mod pending;

use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::mesh::{GroupState, JoinRefusal, MemberState, MeshMessage, Notice};
use crate::id::{GroupId, NodeAddr};
use crate::node::groups::group::Member;
use crate::node::timers::TimerKind;
use crate::node::{ConnId, Event, JoinError, JoinStatus, Node, Outcome, Sid};
use crate::proto::member_push;
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
        let own = self.config.addr;
        let Some((uid, session)) = self.sessions.get_key_value(uid) else {
            return Err(JoinError::UnknownUser { uid: uid.into() });
        };
        let copy = self.groups.get(id);
        if copy.is_some_and(|g| g.members.contains_key(&**uid)) {
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
        let mut candidates: Vec<NodeAddr> = copy.and_then(|g| g.owner).into_iter().collect();
        if let Ok(layout) = id.layout() {
            candidates.extend(layout.nodes());
        }
        let mut seen = std::collections::BTreeSet::new();
        candidates.retain(|n| *n != own && self.cluster.is_live(*n) && seen.insert(*n));
        if candidates.is_empty() {
            return Err(JoinError::GroupNotFound);
        }
        let pending = PendingJoin::new(
            uid.clone(),
            session.sid,
            *id,
            (!message.is_empty()).then_some(Notice { ver, cmd, message }),
            reply_to.map(|conn| (conn, ver, cmd)),
            candidates,
        );
        let op = self.joins.start(pending);
        let limits = &self.config.limits;
        debug_assert!(
            self.joins.len() <= limits.max_connections * limits.max_groups_per_user,
            "pending joins are bounded by sessions x groups per user"
        );
        self.send_join_attempt(op);
        Ok(JoinStatus::Pending(op))
    }

    fn send_join_attempt(&mut self, op: u64) {
        let own = self.config.addr;
        let deadline = self
            .now
            .saturating_add(self.config.limits.mesh_request_timeout);
        let Some(pending) = self.joins.get(op) else {
            debug_assert!(false, "an attempt is sent only for a pending join");
            return;
        };
        let Some(to) = pending.target() else {
            debug_assert!(false, "a pending join has at least one candidate");
            return;
        };
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
            .arm(deadline, TimerKind::JoinTimeout(op, pending.attempt()));
        self.send_mesh(to, message);
    }

    /// Moves a join on to its next address, or ends it with `last` when the tries are used up.
    fn retry_join(&mut self, op: u64, last: JoinError) {
        let tries = self.config.group.remote_join_tries;
        if self.joins.next_attempt(op, tries) {
            self.send_join_attempt(op);
        } else {
            self.finish_join(op, Err(last));
        }
    }

    /// The join timer of `op` fired; `attempt` says which attempt armed it.
    pub(in crate::node) fn join_timed_out(&mut self, op: u64, attempt: u32) {
        if self.joins.get(op).is_some_and(|p| p.attempt() == attempt) {
            let tries = self.config.group.remote_join_tries;
            self.retry_join(op, JoinError::OwnerUnreachable { tries });
        }
    }

    /// Joins waiting on a node that the membership layer declared dead move on at once.
    pub(in crate::node) fn retry_joins_waiting_on(&mut self, dead: NodeAddr) {
        for op in self.joins.waiting_on(dead) {
            let tries = self.config.group.remote_join_tries;
            self.retry_join(op, JoinError::OwnerUnreachable { tries });
        }
    }

    /// The owner answered a join request.
    pub(in crate::node) fn on_join_response(
        &mut self,
        from: NodeAddr,
        op: u64,
        result: Result<GroupState, JoinRefusal>,
    ) {
        let Some(pending) = self.joins.get(op) else {
            return; // Answered after it timed out, or never asked: ignore.
        };
        if pending.target() != Some(from) {
            return;
        }
        match result {
            Ok(state) if state.id == pending.group => self.complete_remote_join(from, op, state),
            Ok(_) | Err(JoinRefusal::NotFound | JoinRefusal::NotOwner) => {
                self.retry_join(op, JoinError::GroupNotFound);
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
        let group = self.groups.get_mut(id).ok_or(JoinRefusal::NotFound)?;
        if !group.owned_by(own) {
            return Err(JoinRefusal::NotOwner);
        }
        if !valid_uid(&member.uid) {
            return Err(JoinRefusal::NotFound);
        }
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
