//! Connections and sessions: the client-facing inputs, Hello and the other control commands, the dispatch
//! of group commands, and discard (a session's user leaving every group when the session ends).

mod claims;
mod table;

pub(crate) use claims::Claims;
pub(crate) use table::Sessions;

use bytes::Bytes;

use crate::cluster::mesh::{MeshMessage, Notice};
use crate::id::GroupId;
use crate::node::groups::group::Group;
use crate::node::timers::TimerKind;
use crate::node::{
    CloseReason, ConnId, ConnectError, DiscardReason, Event, JoinStatus, Node, Outcome, Transmit,
    Uid,
};
use crate::proto::{
    ClientFrame, Request, Status, VER_CONTROL, cmd, code, encode_error_payload, encode_server_frame,
};
use crate::time::Instant;

impl Node {
    /// A transport accepted a connection. Its idle clock starts now; it must say Hello before anything else.
    pub(in crate::node) fn connect(
        &mut self,
        conn: ConnId,
        now: Instant,
    ) -> Result<(), ConnectError> {
        let max = self.config.limits.max_connections;
        let epoch = self.sessions.connect(conn, now, max)?;
        let deadline = now.saturating_add(self.config.limits.connection_ttl);
        self.timers.arm(deadline, TimerKind::Idle(conn, epoch));
        // Traffic before Hello does not postpone this one: a connection only counts once it has a user.
        let hello_by = now.saturating_add(self.config.limits.hello_timeout);
        self.timers
            .arm(hello_by, TimerKind::HelloDeadline(conn, epoch));
        Ok(())
    }

    /// The transport closed the connection (or the driver gave up on it, e.g. a slow consumer). Its user,
    /// if any, leaves every group. No `Close` event follows: the connection is already gone.
    pub(in crate::node) fn disconnect(&mut self, conn: ConnId) {
        if let Some(Some(uid)) = self.sessions.disconnect(conn) {
            self.discard(&uid, DiscardReason::Disconnected);
        }
    }

    /// A whole frame arrived. Malformed payloads are answered with Bad and the connection stays usable:
    /// framing is intact, so the next frame can be read.
    pub(in crate::node) fn frame(
        &mut self,
        conn: ConnId,
        frame: ClientFrame,
        now: Instant,
    ) -> Outcome {
        match Request::parse(&frame) {
            Ok(request) => self.request(conn, request, now),
            Err(e) => {
                if !self.touch(conn, now) {
                    return Outcome::Ignored;
                }
                self.refuse(conn, frame.ver, frame.cmd, e.code(), None, &e.to_string());
                Outcome::Refused { code: e.code() }
            }
        }
    }

    /// A frame header declared more than `maxPayload` bytes. The client gets Bad PAYLOAD_TOO_LARGE and the
    /// connection is closed: on a stream the rest of that frame cannot be skipped safely.
    pub(in crate::node) fn oversized_frame(&mut self, conn: ConnId, ver: u8, cmd: u16, len: u32) {
        if !self.sessions.is_open(conn) {
            return;
        }
        let max = self.config.limits.max_payload;
        let reason = format!("frame payload of {len} bytes exceeds the maximum of {max}");
        self.refuse(conn, ver, cmd, code::PAYLOAD_TOO_LARGE, None, &reason);
        self.close(
            conn,
            CloseReason::FrameTooLarge,
            DiscardReason::ProtocolViolation,
        );
    }

    /// A decoded request arrived (drivers that run Before hooks decode first, then call this). The outcome
    /// tells the driver whether to run After hooks; the response is already queued either way.
    pub(in crate::node) fn request(
        &mut self,
        conn: ConnId,
        request: Request,
        now: Instant,
    ) -> Outcome {
        if !self.touch(conn, now) {
            return Outcome::Ignored; // Closed already (e.g. replaced); late frames are dropped.
        }
        let (ver, cmd) = request.ver_cmd();
        let result = match (request, self.sessions.uid_of(conn).cloned()) {
            (Request::Hello { uid, .. }, None) => {
                self.hello(conn, &uid);
                Ok(Ran::Finished(None))
            }
            (Request::Hello { .. }, Some(_)) => Err(Refusal::new(
                code::ALREADY_GREETED,
                None,
                "session already open",
            )),
            (_, None) => Err(Refusal::new(code::NOT_GREETED, None, "send Hello first")),
            (request, Some(uid)) => self.run_command(conn, request, &uid, now),
        };
        match result {
            Ok(Ran::Finished(group)) => Outcome::Accepted { group },
            Ok(Ran::Pending(op)) => Outcome::Pending { op },
            Err(refusal) => {
                self.refuse(
                    conn,
                    ver,
                    cmd,
                    refusal.code,
                    refusal.group.as_ref(),
                    &refusal.message,
                );
                Outcome::Refused { code: refusal.code }
            }
        }
    }

    /// Runs a command of a greeted session and queues its Ok response; a refusal is returned, not sent.
    fn run_command(
        &mut self,
        conn: ConnId,
        request: Request,
        uid: &Uid,
        now: Instant,
    ) -> Result<Ran, Refusal> {
        let (ver, cmd) = request.ver_cmd();
        let group = match request {
            Request::Hello { .. } => {
                return Err(Refusal::new(
                    code::ALREADY_GREETED,
                    None,
                    "session already open",
                ));
            }
            Request::KeepAlive => {
                self.respond(conn, ver, cmd, &[]);
                return Ok(Ran::Finished(None));
            }
            Request::Ping(bytes) => {
                self.respond(conn, ver, cmd, &bytes);
                return Ok(Ran::Finished(None));
            }
            Request::Fin => {
                self.respond(conn, ver, cmd, &[]);
                self.close(conn, CloseReason::Fin, DiscardReason::Fin);
                return Ok(Ran::Finished(None));
            }
            Request::Custom { ver, cmd, .. } => {
                // Server code answers the commands it registered before they reach the node (its
                // answer comes as `Call::Respond`); what reaches the node has no handler.
                let message = format!("no handler for ver {ver} cmd {cmd}");
                return Err(Refusal::new(code::NO_HANDLER, None, message));
            }
            Request::Broadcast {
                group,
                reliable,
                message,
            } => {
                self.broadcast(&group, uid, ver, cmd, message, reliable)
                    .map_err(|e| Refusal::new(e.code(), Some(group), e))?;
                return Ok(Ran::Finished(Some(group))); // No Ok response: broadcasts answer errors only.
            }
            Request::Create(params) => self
                .create(&params, Some(uid), now)
                .map_err(|e| Refusal::new(e.code(), None, e))?,
            Request::RandJoin(params) => self
                .rand_join(&params, uid, now)
                .map_err(|e| Refusal::new(e.code(), None, e))?,
            Request::Join { group, message } => {
                // A join may have to wait for the group's owner on another node.
                return match self.join_from(&group, uid, message, (ver, cmd), Some(conn)) {
                    Ok(JoinStatus::Joined) => {
                        self.respond(conn, ver, cmd, group.as_bytes());
                        Ok(Ran::Finished(Some(group)))
                    }
                    Ok(JoinStatus::Pending(op)) => Ok(Ran::Pending(op)),
                    Err(e) => Err(Refusal::new(e.code(), Some(group), e)),
                };
            }
            Request::Leave { group, message } => {
                self.leave(&group, uid, message, ver, cmd)
                    .map_err(|e| Refusal::new(e.code(), Some(group), e))?;
                group
            }
        };
        self.respond(conn, ver, cmd, group.as_bytes());
        Ok(Ran::Finished(Some(group)))
    }

    /// Refuses a request with a Bad response and closes the connection (the user, if any, is discarded).
    /// Drivers use this for failed authentication, where the connection must not stay open.
    pub(in crate::node) fn refuse_and_close(
        &mut self,
        conn: ConnId,
        ver: u8,
        cmd: u16,
        code: u16,
        reason: &str,
    ) {
        self.refuse(conn, ver, cmd, code, None, reason);
        self.close(
            conn,
            CloseReason::Rejected,
            DiscardReason::ProtocolViolation,
        );
    }

    /// Queues an Ok response. Server code uses this to answer custom commands.
    pub(in crate::node) fn respond(&mut self, conn: ConnId, ver: u8, cmd: u16, payload: &[u8]) {
        self.send_frame(conn, ver, cmd, Status::Ok, payload);
    }

    /// Queues a Bad response carrying `code`, the group the request named (if any) and a reason. Drivers
    /// use this for hook rejections (codes from [`code::APP_MIN`] up).
    pub(in crate::node) fn refuse(
        &mut self,
        conn: ConnId,
        ver: u8,
        cmd: u16,
        code: u16,
        group: Option<&GroupId>,
        reason: &str,
    ) {
        let frame = encode_error_payload(ver, cmd, Status::Bad, code, group, reason);
        self.queue_frame(conn, frame);
    }

    /// Queues an Err response (status 5): the server failed while handling the request, through no fault
    /// of the client's. Drivers use this when server code (a hook or handler) fails.
    pub(in crate::node) fn fail(
        &mut self,
        conn: ConnId,
        ver: u8,
        cmd: u16,
        code: u16,
        group: Option<&GroupId>,
        reason: &str,
    ) {
        let frame = encode_error_payload(ver, cmd, Status::Err, code, group, reason);
        self.queue_frame(conn, frame);
    }

    /// Queues a whole frame for a connection the node still tracks.
    fn queue_frame(&mut self, conn: ConnId, frame: Bytes) {
        if self.sessions.is_open(conn) {
            self.out.transmits.push_back(Transmit {
                conn,
                frame,
                reliable: true,
            });
        }
    }

    /// Queues a push (status 0xFF) to a user's connection. Returns false if the user has no session here.
    pub(in crate::node) fn push_to_user(
        &mut self,
        uid: &str,
        ver: u8,
        cmd: u16,
        payload: &[u8],
    ) -> bool {
        let Some(conn) = self.sessions.get(uid).map(|s| s.conn) else {
            return false;
        };
        self.send_frame(conn, ver, cmd, Status::Push, payload);
        true
    }

    fn send_frame(&mut self, conn: ConnId, ver: u8, cmd: u16, status: Status, payload: &[u8]) {
        if self.sessions.is_open(conn) {
            let mut out = bytes::BytesMut::new();
            encode_server_frame(ver, cmd, status, payload, &mut out);
            self.out.transmits.push_back(Transmit {
                conn,
                frame: out.freeze(),
                reliable: true,
            });
        }
    }

    /// Records traffic on a connection; false if the node does not know it.
    fn touch(&mut self, conn: ConnId, now: Instant) -> bool {
        self.sessions.touch(conn, now)
    }

    fn hello(&mut self, conn: ConnId, uid: &str) {
        debug_assert!(!uid.is_empty() && uid.len() <= crate::proto::MAX_UID_LEN);
        if let Some(older) = self.sessions.get(uid).map(|s| s.conn) {
            self.close(older, CloseReason::Replaced, DiscardReason::Replaced);
        }
        let uid: Uid = uid.into();
        let sid = self.next_sid();
        self.sessions.open(conn, uid.clone(), sid);
        self.claim_session(&uid, sid);
        self.respond(conn, VER_CONTROL, cmd::HELLO, &sid.0);
        self.out
            .events
            .push_back(Event::SessionOpened { conn, uid, sid });
    }

    /// Forgets a connection, discards its session, and asks the driver to close it.
    pub(in crate::node) fn close(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        discard: DiscardReason,
    ) {
        // Tell the client why before the connection goes, where the reason is news to it (a game can say
        // "logged in elsewhere" instead of showing a bare disconnect).
        let notice = match reason {
            CloseReason::Replaced => Some((code::CLOSED_REPLACED, "logged in elsewhere")),
            CloseReason::HelloTimeout => Some((code::CLOSED_HELLO_TIMEOUT, "no Hello in time")),
            CloseReason::Idle => Some((code::CLOSED_IDLE, "no traffic for connectionTtl")),
            _ => None,
        };
        if let Some((code, message)) = notice
            && self.sessions.is_open(conn)
        {
            self.refuse(conn, VER_CONTROL, cmd::CLOSING, code, None, message);
        }
        if let Some(uid) = self.sessions.disconnect(conn) {
            if let Some(uid) = uid {
                self.discard(&uid, discard);
            }
            self.out.events.push_back(Event::Close { conn, reason });
        }
    }

    /// Ends a session: the user leaves every group (in join order); each group's remaining members get a
    /// 112 push with the discard custom message, even when it is empty.
    fn discard(&mut self, uid: &Uid, reason: DiscardReason) {
        let Some(session) = self.sessions.end(uid) else {
            return;
        };
        self.end_joins_of(uid, session.sid);
        for id in &session.groups {
            let message = (self.discard_message)(id, uid, &session.sid);
            let notice = Notice {
                ver: crate::proto::VER_GROUP,
                cmd: cmd::LEAVE,
                message,
            };
            self.remove_local_member(id, uid, Some(notice));
        }
        self.out.events.push_back(Event::SessionDiscarded {
            conn: session.conn,
            uid: uid.clone(),
            sid: session.sid,
            reason,
        });
    }

    /// Applies the emptiness rules after a member left: delete at once, or start the ttl countdown.
    /// Only the owner decides (it sees every node's members); copies wait for its `Deleted`.
    pub(in crate::node) fn after_member_removed(&mut self, id: &GroupId) {
        let now = self.now;
        let own = self.config.addr;
        let Some(group) = self.groups.get_mut(id) else {
            return;
        };
        if !group.members.is_empty() || !(group.is_static || group.owned_by(own)) {
            return;
        }
        if group.deleted_when_empty() {
            self.delete_group(id);
            return;
        }
        group.empty_since = Some(now);
        arm_ttl(group, &mut self.timers);
    }

    pub(in crate::node) fn delete_group(&mut self, id: &GroupId) {
        if let Some(version) = self
            .groups
            .get(id)
            .filter(|g| g.owned_by(self.config.addr))
            .map(|g| g.version)
        {
            self.fan_out(
                id,
                None,
                &MeshMessage::Deleted {
                    group: *id,
                    version,
                },
            );
            self.cluster.bury(*id, version, self.now);
        }
        if let Some(group) = self.groups.remove(id) {
            debug_assert!(!group.is_static, "static groups are never deleted");
            debug_assert!(group.members.is_empty(), "only empty groups are deleted");
            self.random_pool.remove(id);
            self.out
                .events
                .push_back(Event::GroupDeleted { group: *id });
        }
    }

    /// A message for the byte payload of an Offline push; kept here with the other control frames.
    pub(in crate::node) fn offline_frame() -> Bytes {
        let mut out = bytes::BytesMut::new();
        encode_server_frame(VER_CONTROL, cmd::OFFLINE, Status::Push, &[], &mut out);
        out.freeze()
    }
}

/// Arms the ttl check of an empty allow_empty group unless one is already pending.
pub(in crate::node) fn arm_ttl(group: &mut Group, timers: &mut crate::node::timers::Timers) {
    if group.is_static || group.ttl_timer_armed {
        return;
    }
    if let Some(since) = group.empty_since {
        group.ttl_timer_armed = true;
        timers.arm(
            since.saturating_add(group.ttl),
            TimerKind::GroupTtl(group.id),
        );
    }
}

/// What running a request came to, when it was not refused.
enum Ran {
    /// Done; the group it concerned, if any.
    Finished(Option<GroupId>),
    /// Waiting for another node (a remote join).
    Pending(u64),
}

/// A refused request: what goes into the Bad response.
struct Refusal {
    code: u16,
    group: Option<GroupId>,
    message: String,
}

impl Refusal {
    fn new(code: u16, group: Option<GroupId>, message: impl std::fmt::Display) -> Self {
        Refusal {
            code,
            group,
            message: message.to_string(),
        }
    }
}
