//! The task that owns the [`Node`]: every input goes through its inbox, every output leaves from here.
//!
//! One task, one core value, one timer (re-armed only when the core's deadline changes). It has no policy
//! of its own: what to answer is decided in the core, and this task only moves bytes and answers. Frames
//! go to each connection's bounded writer queue with `try_send`: a connection whose queue is full is a
//! slow consumer, and it is disconnected and counted instead of being waited for, so it never delays
//! anyone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use group_core::{
    Call, ConnId, Event, GroupId, Handled, Input, Instant, JoinStatus, MeshTransmit, Node, Outcome,
    Sink, Transmit, Uid,
};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use crate::inbox::{Answer, Answerer, ConnWriter, EventFn, NodeInput, Outgoing, Stats, TickRunner};
use crate::mesh::Links;

/// The node and the driver's side of its outputs.
pub(crate) struct NodeTask {
    node: Node,
    start: TokioInstant,
    io: Io,
}

/// Where the core's outputs go: the connections' writers, the mesh links, the waiting callers.
struct Io {
    writers: HashMap<ConnId, ConnWriter>,
    ticks: HashMap<GroupId, TickRunner>,
    /// Callers waiting for a join that asked another node, by the core's op. Bounded by the core's
    /// bound on pending remote joins: every entry ends with the op's `JoinCompleted`.
    waiters: HashMap<u64, Answerer>,
    links: Option<Arc<Links>>,
    event_sink: Option<EventFn>,
    stats: Arc<Stats>,
}

impl NodeTask {
    pub fn new(
        node: Node,
        links: Option<Arc<Links>>,
        event_sink: Option<EventFn>,
        stats: Arc<Stats>,
    ) -> Self {
        NodeTask {
            node,
            start: TokioInstant::now(),
            io: Io {
                writers: HashMap::new(),
                ticks: HashMap::new(),
                waiters: HashMap::new(),
                links,
                event_sink,
                stats,
            },
        }
    }

    /// The core's notion of now: nanoseconds since the task started.
    fn now(&self) -> Instant {
        let nanos = TokioInstant::now()
            .saturating_duration_since(self.start)
            .as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Feeds one core input and drains what it produced.
    fn handle(&mut self, input: Input) -> Handled {
        let now = self.now();
        let handled = self.node.handle(input, now);
        let _deadline = self.node.drain(now, &mut self.io);
        handled
    }

    fn apply(&mut self, message: NodeInput) {
        match message {
            NodeInput::Connect {
                conn,
                writer,
                reply,
            } => {
                let result = match self.handle(Input::Connect(conn)) {
                    Handled::Connect(result) => result,
                    other => {
                        tracing::error!(?other, "the core answered Connect with another answer");
                        Err(group_core::ConnectError::DuplicateConnection)
                    }
                };
                if result.is_ok() {
                    self.io.writers.insert(conn, writer);
                }
                let _ = reply.send(result);
            }
            NodeInput::Core { input, reply } => self.core(input, reply),
            NodeInput::SetTick {
                group,
                interval,
                callback,
                reply,
            } => {
                let handled = self.handle(Input::Call(Call::SetTick { group, interval }));
                if handled == Handled::Tick(Ok(())) {
                    match callback {
                        Some(callback) => self.io.ticks.insert(group, callback),
                        None => self.io.ticks.remove(&group),
                    };
                }
                reply(Answer::Handled(handled));
            }
            NodeInput::Read(read) => read(&self.node),
        }
    }

    fn core(&mut self, input: Input, reply: Option<Answerer>) {
        if let (Input::NodeUp(node), Some(links)) = (&input, &self.io.links) {
            links.connect(*node);
        }
        if let Input::Mesh { from, message } = &input {
            tracing::trace!(%from, ?message, "mesh in");
        }
        let conn = match &input {
            Input::Disconnect(conn) => {
                self.io.writers.remove(conn);
                None
            }
            Input::Request { conn, .. } | Input::Frame { conn, .. } => Some(*conn),
            _ => None,
        };
        let handled = self.handle(input);
        let Some(reply) = reply else {
            return;
        };
        match handled {
            Handled::Request(Outcome::Pending { op })
            | Handled::Join(Ok(JoinStatus::Pending(op))) => {
                self.io.waiters.insert(op, reply);
            }
            Handled::Request(outcome) => {
                let session = conn
                    .and_then(|c| self.node.session_of(c))
                    .map(|(uid, sid)| (Uid::from(uid), sid));
                reply(Answer::Request { outcome, session });
            }
            handled => reply(Answer::Handled(handled)),
        }
    }
}

impl Sink for Io {
    fn transmit(&mut self, transmit: Transmit) -> bool {
        let Some(writer) = self.writers.get(&transmit.conn) else {
            return false;
        };
        let outgoing = Outgoing {
            frame: transmit.frame,
            reliable: transmit.reliable,
        };
        match writer.queue.try_send(outgoing) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    conn = transmit.conn.0,
                    "slow consumer: outbound queue full, disconnecting"
                );
                if let Some(writer) = self.writers.remove(&transmit.conn) {
                    let _ = writer.last_words.set(slow_consumer_notice());
                    writer.stop.cancel();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.writers.remove(&transmit.conn);
                false
            }
        }
    }

    fn event(&mut self, event: Event) {
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
                    callback(group);
                }
            }
            Event::GroupDeleted { group } => {
                self.ticks.remove(&group);
            }
            Event::JoinCompleted {
                op,
                result,
                outcome,
                ..
            } => {
                tracing::debug!(op, ?result, "remote join completed");
                if let Some(reply) = self.waiters.remove(&op) {
                    reply(match outcome {
                        Some(outcome) => Answer::Request {
                            outcome,
                            session: None,
                        },
                        None => Answer::Joined(result),
                    });
                }
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

    fn mesh(&mut self, transmit: MeshTransmit) {
        tracing::trace!(to = %transmit.to, message = ?transmit.message, "mesh out");
        if let Some(links) = &self.links {
            links.send(transmit.to, &transmit.message);
        }
    }
}

/// Runs the node until every sender of its inbox is gone or `stop` is cancelled, then closes every
/// connection.
pub(crate) async fn run(
    mut task: NodeTask,
    mut inbox: mpsc::Receiver<NodeInput>,
    stop: CancellationToken,
) {
    let sleep = tokio::time::sleep_until(TokioInstant::now());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let deadline = task.node.poll_timeout();
        if deadline != armed {
            armed = deadline;
            if let Some(at) = deadline {
                let at = task.start + std::time::Duration::from_nanos(at.as_nanos());
                sleep.as_mut().reset(at);
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = inbox.recv() => match message {
                Some(message) => task.apply(message),
                None => break,
            },
            () = &mut sleep, if armed.is_some() => {
                let _done = task.handle(Input::Timeout);
                armed = None; // re-arm from the core's next deadline
            }
        }
    }
    for (_, writer) in task.io.writers.drain() {
        writer.stop.cancel();
    }
}

/// The closing notice a slow consumer's writer tries to send last (15 CLOSED_SLOW_CONSUMER).
fn slow_consumer_notice() -> bytes::Bytes {
    use group_core::proto::{Status, VER_CONTROL, cmd, code, encode_error_payload};
    encode_error_payload(
        VER_CONTROL,
        cmd::CLOSING,
        Status::Bad,
        code::CLOSED_SLOW_CONSUMER,
        None,
        "too slow: the outbound queue is full",
    )
}
