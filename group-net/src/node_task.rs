//! The task that owns the [`Node`]: every input goes through its channel, every output leaves from here.
//!
//! One task, one core value, one timer (re-armed only when the core's deadline changes). Frames go to each
//! connection's bounded writer queue with `try_send`: a connection whose queue is full is a slow consumer,
//! and it is disconnected and counted instead of being waited for, so it never delays anyone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use group_core::proto::{ClientFrame, Request, code};
use group_core::{
    ConnId, ConnectError, Event, GroupId, Instant, JoinError, Node, Outcome, Sid, Transmit, Uid,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

use crate::server::{ServerHandle, TickFn};

/// A frame on its way to a connection's writer.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub frame: Bytes,
    /// UDP members: send on the reliable channel.
    #[allow(dead_code)]
    pub reliable: bool,
}

/// Stops a connection's reader and writer at once (slow consumer, shutdown), or tells the reader that the
/// writer finished.
#[derive(Debug, Default)]
pub(crate) struct Kill {
    flag: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Kill {
    pub fn kill(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub async fn killed(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.flag.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// A connection as the node task sees it: where its frames go and how to stop it.
pub(crate) struct ConnWriter {
    pub queue: mpsc::Sender<Outgoing>,
    pub kill: Arc<Kill>,
}

/// What the node task answers to a request that asked for a reply.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub outcome: Outcome,
    /// The connection's session after the request (set by Hello).
    pub session: Option<(Uid, Sid)>,
}

/// Who waits for a join that another node has to answer.
pub(crate) enum JoinWaiter {
    /// A client connection whose After hooks run on success.
    Client {
        conn: ConnId,
        reply: oneshot::Sender<Reply>,
    },
    /// A server API call.
    Api(oneshot::Sender<Result<(), JoinError>>),
}

/// A closure run on the node task with exclusive access to its state: how the server API works.
pub(crate) type Call = Box<dyn FnOnce(&mut NodeState) + Send>;

pub(crate) enum Input {
    Connect {
        conn: ConnId,
        writer: ConnWriter,
        reply: oneshot::Sender<Result<(), ConnectError>>,
    },
    Frame {
        conn: ConnId,
        frame: ClientFrame,
    },
    Request {
        conn: ConnId,
        request: Request,
        reply: Option<oneshot::Sender<Reply>>,
    },
    Oversized {
        conn: ConnId,
        ver: u8,
        cmd: u16,
        len: u32,
    },
    Refuse {
        conn: ConnId,
        ver: u8,
        cmd: u16,
        code: u16,
        group: Option<GroupId>,
        message: String,
    },
    RefuseAndClose {
        conn: ConnId,
        ver: u8,
        cmd: u16,
        code: u16,
        message: String,
    },
    Fail {
        conn: ConnId,
        ver: u8,
        cmd: u16,
        group: Option<GroupId>,
        message: String,
    },
    Respond {
        conn: ConnId,
        ver: u8,
        cmd: u16,
        payload: Bytes,
    },
    Disconnect {
        conn: ConnId,
    },
    Call(Call),
    /// A message from another node.
    Mesh {
        from: group_core::NodeAddr,
        message: group_core::cluster::mesh::MeshMessage,
    },
    /// Membership reports a node alive.
    NodeUp(group_core::NodeAddr),
    /// Membership reports a node dead or gone.
    NodeDown(group_core::NodeAddr),
}

/// Counters the server exposes.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted by a listener.
    pub accepted: AtomicU64,
    /// Connections refused because `maxConnections` were open.
    pub refused: AtomicU64,
    /// Connections disconnected because their outbound queue was full.
    pub slow_consumers: AtomicU64,
    /// Mesh messages dropped because a peer's queue was full (it is unreachable or too slow).
    pub mesh_dropped: AtomicU64,
}

/// The node task's state; API calls get `&mut` access to it.
pub struct NodeState {
    /// The core.
    pub node: Node,
    start: TokioInstant,
    writers: HashMap<ConnId, ConnWriter>,
    ticks: HashMap<GroupId, TickFn>,
    /// Joins waiting for another node, by the core's op.
    joins: HashMap<u64, JoinWaiter>,
    /// Links to the other nodes; `None` until the mesh is up (and in a node without one).
    pub(crate) links: Option<Arc<crate::mesh::Links>>,
    /// Server code's view of the core's events (`ServerBuilder::on_event`).
    pub(crate) event_sink: Option<crate::server::EventFn>,
    stats: Arc<Stats>,
    handle: ServerHandle,
}

impl NodeState {
    pub(crate) fn new(
        node: Node,
        start: TokioInstant,
        stats: Arc<Stats>,
        handle: ServerHandle,
    ) -> Self {
        NodeState {
            node,
            start,
            writers: HashMap::new(),
            ticks: HashMap::new(),
            joins: HashMap::new(),
            links: None,
            event_sink: None,
            stats,
            handle,
        }
    }

    /// The core's notion of now.
    pub fn now(&self) -> Instant {
        core_instant(self.start, TokioInstant::now())
    }

    /// Registers who waits for the join `op` (see [`Event::JoinCompleted`]).
    pub(crate) fn wait_for_join(&mut self, op: u64, waiter: JoinWaiter) {
        self.joins.insert(op, waiter);
    }

    pub(crate) fn set_tick_callback(&mut self, group: GroupId, callback: Option<TickFn>) {
        match callback {
            Some(callback) => self.ticks.insert(group, callback),
            None => self.ticks.remove(&group),
        };
    }

    fn apply(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Connect {
                conn,
                writer,
                reply,
            } => {
                let result = self.node.handle_connect(conn, now);
                if result.is_ok() {
                    self.writers.insert(conn, writer);
                }
                let _ = reply.send(result);
            }
            Input::Frame { conn, frame } => {
                let _ = self.node.handle_frame(conn, frame, now);
            }
            Input::Request {
                conn,
                request,
                reply,
            } => {
                let outcome = self.node.handle_request(conn, request, now);
                match (outcome, reply) {
                    (Outcome::Pending { op }, Some(reply)) => {
                        self.wait_for_join(op, JoinWaiter::Client { conn, reply });
                    }
                    (outcome, Some(reply)) => {
                        let session = self
                            .node
                            .session_of(conn)
                            .map(|(uid, sid)| (Uid::from(uid), sid));
                        let _ = reply.send(Reply { outcome, session });
                    }
                    (_, None) => {}
                }
            }
            Input::Oversized {
                conn,
                ver,
                cmd,
                len,
            } => self.node.handle_oversized_frame(conn, ver, cmd, len, now),
            Input::Refuse {
                conn,
                ver,
                cmd,
                code,
                group,
                message,
            } => self
                .node
                .refuse(conn, ver, cmd, code, group.as_ref(), &message),
            Input::RefuseAndClose {
                conn,
                ver,
                cmd,
                code,
                message,
            } => self
                .node
                .refuse_and_close(conn, ver, cmd, code, &message, now),
            Input::Respond {
                conn,
                ver,
                cmd,
                payload,
            } => self.node.respond(conn, ver, cmd, &payload),
            Input::Fail {
                conn,
                ver,
                cmd,
                group,
                message,
            } => self
                .node
                .fail(conn, ver, cmd, code::HOOK_FAILED, group.as_ref(), &message),
            Input::Disconnect { conn } => {
                self.writers.remove(&conn);
                self.node.handle_disconnect(conn, now);
            }
            Input::Call(call) => call(self),
            Input::Mesh { from, message } => {
                // A peer that talks to this node over its own link is alive, whatever membership has
                // not yet noticed; the core must know it before it reads what the peer says.
                if !self.node.live_nodes().any(|n| n == from) {
                    self.node.handle_node_up(from);
                }
                self.node.handle_mesh(from, message, now);
            }
            Input::NodeUp(node) => {
                if let Some(links) = &self.links {
                    links.connect(node);
                }
                self.node.handle_node_up(node);
            }
            Input::NodeDown(node) => self.node.handle_node_down(node),
        }
        self.drain();
    }

    /// Drains transmits, then events, until both are empty (handling one can produce the other).
    pub(crate) fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.node.poll_transmit() {
                progressed = true;
                self.deliver(transmit);
            }
            while let Some(event) = self.node.poll_event() {
                progressed = true;
                self.on_event(event);
            }
            while let Some(out) = self.node.poll_mesh() {
                progressed = true;
                if let Some(links) = &self.links {
                    links.send(out.to, &out.message);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn deliver(&mut self, transmit: Transmit) {
        let Some(writer) = self.writers.get(&transmit.conn) else {
            return;
        };
        let outgoing = Outgoing {
            frame: transmit.frame,
            reliable: transmit.reliable,
        };
        match writer.queue.try_send(outgoing) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    conn = transmit.conn.0,
                    "slow consumer: outbound queue full, disconnecting"
                );
                self.drop_connection(transmit.conn);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.drop_connection(transmit.conn),
        }
    }

    fn drop_connection(&mut self, conn: ConnId) {
        if let Some(writer) = self.writers.remove(&conn) {
            writer.kill.kill();
        }
        let now = self.now();
        self.node.handle_disconnect(conn, now);
    }

    fn on_event(&mut self, event: Event) {
        if let Some(sink) = &self.event_sink {
            sink(&event);
        }
        match event {
            Event::Close { conn, reason } => {
                tracing::debug!(conn = conn.0, ?reason, "closing connection");
                // Dropping the queue lets the writer flush what is queued, then close the socket.
                self.writers.remove(&conn);
            }
            Event::Tick { group } => {
                if let Some(callback) = self.ticks.get(&group) {
                    tokio::spawn(callback(group, self.handle.clone()));
                }
            }
            Event::GroupDeleted { group } => {
                self.ticks.remove(&group);
            }
            Event::JoinCompleted {
                op, group, result, ..
            } => match self.joins.remove(&op) {
                Some(JoinWaiter::Api(reply)) => {
                    let _ = reply.send(result);
                }
                Some(JoinWaiter::Client { conn, reply }) => {
                    let outcome = match &result {
                        // After hooks see the group, as they do for a local join.
                        Ok(()) => Outcome::Accepted { group: Some(group) },
                        Err(e) => Outcome::Refused { code: e.code() },
                    };
                    let session = self
                        .node
                        .session_of(conn)
                        .map(|(uid, sid)| (Uid::from(uid), sid));
                    let _ = reply.send(Reply { outcome, session });
                }
                None => {}
            },
            Event::Custom { conn, ver, cmd, .. } => {
                let message = format!("no handler for ver {ver} cmd {cmd}");
                self.node
                    .refuse(conn, ver, cmd, code::NO_HANDLER, None, &message);
            }
            Event::SessionOpened { conn, uid, .. } => {
                tracing::debug!(conn = conn.0, %uid, "session opened")
            }
            Event::SessionDiscarded {
                conn, uid, reason, ..
            } => {
                tracing::debug!(conn = conn.0, %uid, ?reason, "session discarded")
            }
            _ => {}
        }
    }

    /// Closes every connection: used at shutdown.
    fn close_all(&mut self) {
        for (_, writer) in self.writers.drain() {
            writer.kill.kill();
        }
    }
}

/// Maps the driver's clock onto the core's: nanoseconds since the server started.
fn core_instant(start: TokioInstant, now: TokioInstant) -> Instant {
    let nanos = now.saturating_duration_since(start).as_nanos();
    Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Runs the node until every handle is gone or `shutdown` fires.
pub(crate) async fn run(
    mut state: NodeState,
    mut inputs: mpsc::Receiver<Input>,
    shutdown: Arc<Kill>,
) {
    let sleep = tokio::time::sleep_until(TokioInstant::now());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let deadline = state.node.poll_timeout();
        if deadline != armed {
            armed = deadline;
            if let Some(at) = deadline {
                sleep
                    .as_mut()
                    .reset(state.start + std::time::Duration::from_nanos(at.as_nanos()));
            }
        }
        tokio::select! {
            biased;
            () = shutdown.killed() => break,
            input = inputs.recv() => match input {
                Some(input) => state.apply(input),
                None => break,
            },
            () = &mut sleep, if armed.is_some() => {
                let now = state.now();
                state.node.handle_timeout(now);
                state.drain();
                armed = None; // re-arm from the core's next deadline
            }
        }
    }
    state.close_all();
}
