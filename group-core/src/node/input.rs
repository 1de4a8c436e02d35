//! The one way into a [`Node`]: [`Node::handle`] with an [`Input`] and the time it happened.
//!
//! Every input carries `now`, so nothing in the core computes a deadline from a stale time (a server-API
//! join arms its timeout from the moment of the call, not from the last packet). Server-API calls are
//! data ([`Call`]), so a simulation drives them exactly as the production driver does, and a transcript
//! of inputs replays a node.

use std::time::Duration;

use bytes::Bytes;

use super::{
    BroadcastError, ConnId, ConnectError, CreateError, JoinError, JoinStatus, LeaveError, Node,
    Outcome, TickError,
};
use crate::cluster::mesh::MeshMessage;
use crate::id::{GroupId, NodeAddr};
use crate::proto::{ClientFrame, CreateRequest, Request, code};
use crate::time::Instant;

/// Something that happened to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A transport accepted a connection. Its idle clock starts now; it must say Hello first.
    Connect(ConnId),
    /// The transport closed the connection (or the driver gave up on it). Its user, if any, leaves
    /// every group. No `Close` event follows: the connection is already gone.
    Disconnect(ConnId),
    /// A whole frame arrived. A malformed payload is answered with Bad; the connection stays usable.
    Frame {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: ClientFrame,
    },
    /// A decoded request arrived (drivers that run Before hooks decode first). [`Handled::Request`]
    /// tells whether to run After hooks; the response is already queued either way.
    Request {
        /// The connection.
        conn: ConnId,
        /// The request.
        request: Request,
    },
    /// A frame header declared more than `maxPayload` bytes: Bad PAYLOAD_TOO_LARGE, then close (a
    /// stream cannot skip the rest of that frame safely).
    Oversized {
        /// The connection.
        conn: ConnId,
        /// The frame's version byte.
        ver: u8,
        /// The frame's command.
        cmd: u16,
        /// The declared payload length.
        len: u32,
    },
    /// A message from another node; `from` is the sender's mesh address as the transport established
    /// it. A sender this node did not count as alive is alive from now on: it talks over its own link.
    Mesh {
        /// The sender.
        from: NodeAddr,
        /// The message.
        message: MeshMessage,
    },
    /// The membership layer reports another node alive.
    NodeUp(NodeAddr),
    /// The membership layer reports a node dead or gone.
    NodeDown(NodeAddr),
    /// The transport's link to a node broke (a reset, EOF, a refused redial): the node is *suspect*. No
    /// relay goes through it and no join waits on it, but nothing fails over until [`Input::NodeDown`].
    LinkDown(NodeAddr),
    /// The transport's link to a node works again (any message from it says the same).
    LinkUp(NodeAddr),
    /// A call of the server API (or server code's answer to a request it intercepted).
    Call(Call),
    /// The deadline from [`Node::poll_timeout`] (or a later time) has come.
    Timeout,
}

/// A server-API call or server code's answer, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// Create a group owned by this node (Diarkis's NewGroup); `creator` joins it with `params.join`.
    Create {
        /// Group parameters.
        params: CreateRequest,
        /// The user that joins it, if any.
        creator: Option<String>,
    },
    /// Join `uid` to a group; the other members get a `ver`/`cmd` push when `message` is non-empty.
    Join {
        /// The group.
        group: GroupId,
        /// The user.
        uid: String,
        /// The join message.
        message: Bytes,
        /// Version byte of the push.
        ver: u8,
        /// Command of the push.
        cmd: u16,
    },
    /// Remove `uid` from a group; the rest get a `ver`/`cmd` push when `message` is non-empty.
    Leave {
        /// The group.
        group: GroupId,
        /// The user.
        uid: String,
        /// The leave message.
        message: Bytes,
        /// Version byte of the push.
        ver: u8,
        /// Command of the push.
        cmd: u16,
    },
    /// Broadcast from member `uid` to the other members.
    Broadcast {
        /// The group.
        group: GroupId,
        /// The sender.
        uid: String,
        /// Version byte of the push.
        ver: u8,
        /// Command of the push.
        cmd: u16,
        /// The message.
        message: Bytes,
        /// UDP members get it on the reliable channel.
        reliable: bool,
    },
    /// Send to every member from no one (an entry with an empty uid).
    Announce {
        /// The group.
        group: GroupId,
        /// Version byte of the push.
        ver: u8,
        /// Command of the push.
        cmd: u16,
        /// The message.
        message: Bytes,
        /// UDP members get it on the reliable channel.
        reliable: bool,
    },
    /// Set (or with `None` clear) a group's tick timer: an [`super::Event::Tick`] every `interval`.
    SetTick {
        /// The group.
        group: GroupId,
        /// At least one second, or `None` to stop.
        interval: Option<Duration>,
    },
    /// Go offline: refuse new groups, push Offline to every session, hand owned groups to backups.
    SetOffline,
    /// Push (status 0xFF) a frame to a connected user.
    PushToUser {
        /// The user.
        uid: String,
        /// Version byte.
        ver: u8,
        /// Command.
        cmd: u16,
        /// Payload.
        payload: Bytes,
    },
    /// Answer a request with Ok (custom commands).
    Respond {
        /// The connection.
        conn: ConnId,
        /// Version byte.
        ver: u8,
        /// Command.
        cmd: u16,
        /// Payload.
        payload: Bytes,
    },
    /// Answer a request with Bad (a hook's rejection, codes from [`code::APP_MIN`] up).
    Refuse {
        /// The connection.
        conn: ConnId,
        /// Version byte.
        ver: u8,
        /// Command.
        cmd: u16,
        /// The protocol error code.
        code: u16,
        /// The group the request named, if any.
        group: Option<GroupId>,
        /// Why.
        message: String,
    },
    /// Answer a request with Err (status 5): server code failed through no fault of the client's.
    Fail {
        /// The connection.
        conn: ConnId,
        /// Version byte.
        ver: u8,
        /// Command.
        cmd: u16,
        /// The group the request named, if any.
        group: Option<GroupId>,
        /// What failed.
        message: String,
    },
    /// Answer with Bad and close the connection (a failed authentication, a frame the transport could
    /// not deliver whole).
    RefuseAndClose {
        /// The connection.
        conn: ConnId,
        /// Version byte.
        ver: u8,
        /// Command.
        cmd: u16,
        /// The protocol error code.
        code: u16,
        /// Why.
        message: String,
    },
}

/// What [`Node::handle`] says about the input at once. Everything else comes out of [`Node::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Handled {
    /// The input needs no answer (timeouts, mesh messages, answers to requests, ...).
    Done,
    /// [`Input::Connect`]: whether the node tracks the connection now.
    Connect(Result<(), ConnectError>),
    /// [`Input::Request`] or [`Input::Frame`]: what became of the request (After hooks run on
    /// `Accepted`; `Pending` ends with [`super::Event::JoinCompleted`]).
    Request(Outcome),
    /// [`Call::Create`].
    Create(Result<GroupId, CreateError>),
    /// [`Call::Join`]; `Pending` ends with [`super::Event::JoinCompleted`].
    Join(Result<JoinStatus, JoinError>),
    /// [`Call::Leave`].
    Leave(Result<(), LeaveError>),
    /// [`Call::Broadcast`] or [`Call::Announce`].
    Broadcast(Result<(), BroadcastError>),
    /// [`Call::SetTick`].
    Tick(Result<(), TickError>),
    /// [`Call::PushToUser`]: false if the user has no session here.
    Pushed(bool),
}

impl Node {
    /// Handles one input that happened at `now`. Drain [`Node::poll`] afterwards (or use
    /// [`Node::drain`]). Time never goes backwards: an earlier `now` is a driver bug, caught in debug
    /// builds and clamped in release builds.
    pub fn handle(&mut self, input: Input, now: Instant) -> Handled {
        let now = self.advance(now);
        match input {
            Input::Connect(conn) => Handled::Connect(self.connect(conn, now)),
            Input::Disconnect(conn) => {
                self.disconnect(conn);
                Handled::Done
            }
            Input::Frame { conn, frame } => Handled::Request(self.frame(conn, frame, now)),
            Input::Request { conn, request } => Handled::Request(self.request(conn, request, now)),
            Input::Oversized {
                conn,
                ver,
                cmd,
                len,
            } => {
                self.oversized_frame(conn, ver, cmd, len);
                Handled::Done
            }
            Input::Mesh { from, message } => {
                if from != self.config.addr && !self.cluster.is_live(from) {
                    self.node_up(from);
                }
                self.cluster.link_up(from);
                self.mesh(from, message);
                Handled::Done
            }
            Input::NodeUp(node) => {
                self.node_up(node);
                Handled::Done
            }
            Input::NodeDown(node) => {
                self.node_down(node);
                Handled::Done
            }
            Input::LinkDown(node) => {
                if self.cluster.link_down(node) {
                    self.retry_joins_waiting_on(node);
                }
                Handled::Done
            }
            Input::LinkUp(node) => {
                self.cluster.link_up(node);
                Handled::Done
            }
            Input::Call(call) => self.call(call, now),
            Input::Timeout => {
                self.timeout(now);
                Handled::Done
            }
        }
    }

    fn call(&mut self, call: Call, now: Instant) -> Handled {
        match call {
            Call::Create { params, creator } => {
                Handled::Create(self.create(&params, creator.as_deref(), now))
            }
            Call::Join {
                group,
                uid,
                message,
                ver,
                cmd,
            } => Handled::Join(self.join_from(&group, &uid, message, (ver, cmd), None)),
            Call::Leave {
                group,
                uid,
                message,
                ver,
                cmd,
            } => Handled::Leave(self.leave(&group, &uid, message, ver, cmd)),
            Call::Broadcast {
                group,
                uid,
                ver,
                cmd,
                message,
                reliable,
            } => Handled::Broadcast(self.broadcast(&group, &uid, ver, cmd, message, reliable)),
            Call::Announce {
                group,
                ver,
                cmd,
                message,
                reliable,
            } => Handled::Broadcast(self.announce(&group, ver, cmd, message, reliable)),
            Call::SetTick { group, interval } => {
                Handled::Tick(self.set_tick(&group, interval, now))
            }
            Call::SetOffline => {
                self.set_offline();
                Handled::Done
            }
            Call::PushToUser {
                uid,
                ver,
                cmd,
                payload,
            } => Handled::Pushed(self.push_to_user(&uid, ver, cmd, &payload)),
            Call::Respond {
                conn,
                ver,
                cmd,
                payload,
            } => {
                self.respond(conn, ver, cmd, &payload);
                Handled::Done
            }
            Call::Refuse {
                conn,
                ver,
                cmd,
                code,
                group,
                message,
            } => {
                self.refuse(conn, ver, cmd, code, group.as_ref(), &message);
                Handled::Done
            }
            Call::Fail {
                conn,
                ver,
                cmd,
                group,
                message,
            } => {
                let code = code::HOOK_FAILED;
                self.fail(conn, ver, cmd, code, group.as_ref(), &message);
                Handled::Done
            }
            Call::RefuseAndClose {
                conn,
                ver,
                cmd,
                code,
                message,
            } => {
                self.refuse_and_close(conn, ver, cmd, code, &message);
                Handled::Done
            }
        }
    }
}
