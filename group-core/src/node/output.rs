//! The one way out of a [`Node`]: [`Node::poll`] until `None`, or [`Node::drain`] into a [`Sink`].
//!
//! Outputs come in a fixed order, decided here and nowhere else: frames for connections first, then
//! events, then messages for other nodes, and last the next deadline. Frames come before events so that a
//! response queued just before a `Close` event reaches the connection's writer before the driver closes
//! it. Production, every simulation and the benches drain through [`Node::drain`]: one loop for all.

use std::collections::VecDeque;

use bytes::Bytes;

use super::deliveries::{Deliveries, Delivery};
use super::input::Input;
use super::{ConnId, GroupId, JoinError, Node, Sid, Uid};
use crate::cluster::mesh::MeshMessage;
use crate::id::NodeAddr;
use crate::time::Instant;

/// A frame to write to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Where to send it.
    pub conn: ConnId,
    /// A whole server frame. Shared: the same allocation goes to every recipient of a push.
    pub frame: Bytes,
    /// For UDP members: send on the reliable (KCP) channel. Stream transports ignore it.
    pub reliable: bool,
}

/// A message for another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct MeshTransmit {
    /// The node's mesh address.
    pub to: NodeAddr,
    /// The message (encode it with [`crate::cluster::mesh::encode`]).
    pub message: MeshMessage,
}

/// How a join went that did not fail at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum JoinStatus {
    /// The user is a member now.
    Joined,
    /// The group is owned by another node, which was asked; [`Event::JoinCompleted`] with this `op` tells
    /// the result.
    Pending(u64),
}

/// Why the node asks the driver to close a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent Fin.
    Fin,
    /// No traffic for `connectionTtl`.
    Idle,
    /// Another connection said Hello with the same uid.
    Replaced,
    /// A frame declared a payload above `maxPayload`; a stream cannot resynchronise after that.
    FrameTooLarge,
    /// Server code refused the connection (for example a failed authentication).
    Rejected,
    /// The connection did not say Hello within `server.helloTimeout`, whatever else it sent.
    HelloTimeout,
}

/// Why a session ended and its user left every group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscardReason {
    /// The client sent Fin.
    Fin,
    /// The transport reported the connection closed.
    Disconnected,
    /// No traffic for `connectionTtl`.
    Idle,
    /// A newer Hello with the same uid took over.
    Replaced,
    /// The connection was closed for a protocol violation.
    ProtocolViolation,
}

/// Something for the driver to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Close the connection after writing what was queued for it. The node has already forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A Hello succeeded.
    SessionOpened {
        /// The connection.
        conn: ConnId,
        /// The user.
        uid: Uid,
        /// The new session ID.
        sid: Sid,
    },
    /// A session ended; its user has left every group.
    SessionDiscarded {
        /// The connection it was on.
        conn: ConnId,
        /// The user.
        uid: Uid,
        /// The session ID.
        sid: Sid,
        /// Why.
        reason: DiscardReason,
    },
    /// A group was removed (last member left, or its ttl ran out while empty).
    GroupDeleted {
        /// The group.
        group: GroupId,
    },
    /// A group's tick timer fired: run its tick callback.
    Tick {
        /// The group.
        group: GroupId,
    },
    /// A join that had to ask another node finished (the client, if it came from one, has its response).
    JoinCompleted {
        /// The `op` from [`JoinStatus::Pending`] or [`Outcome::Pending`].
        op: u64,
        /// From the join's start to its end: what a remote join costs the joiner.
        waited: std::time::Duration,
        /// The user.
        uid: Uid,
        /// The group.
        group: GroupId,
        /// The result.
        result: Result<(), JoinError>,
        /// What the client's request came to, when a client asked (After hooks run on `Accepted`);
        /// `None` for a server-API join.
        outcome: Option<Outcome>,
    },
}

/// What became of a client request. The response (Ok or Bad) is already queued; the outcome lets a driver
/// run After hooks only after success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Carried out. `group` is the group it created, joined, left or broadcast to, if it concerned one.
    Accepted {
        /// The group concerned.
        group: Option<GroupId>,
    },
    /// Refused with a Bad response carrying `code`.
    Refused {
        /// The protocol error code sent.
        code: u16,
    },
    /// The connection is not (or no longer) tracked: nothing was done or sent.
    Ignored,
    /// A join waits for another node's answer; [`Event::JoinCompleted`] with this `op` ends it, after the
    /// response has been queued.
    Pending {
        /// Matches the completion event.
        op: u64,
    },
}

/// One output of the node. See the module docs for the order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// A frame for a connection.
    Transmit(Transmit),
    /// Something for the driver to act on.
    Event(Event),
    /// A message for another node.
    Mesh(MeshTransmit),
    /// Nothing else is queued: feed [`Input::Timeout`] at this instant (or earlier input). Comes once,
    /// last, per drain; not at all when no timer is armed.
    Timeout(Instant),
}

/// Where the outputs of [`Node::drain`] go: the driver's side of the one drain loop.
pub trait Sink {
    /// Hand a frame to its connection's writer. `false` when the connection is gone or cannot keep up
    /// (a slow consumer): the node then handles it as [`Input::Disconnect`].
    fn transmit(&mut self, transmit: Transmit) -> bool;
    /// Hand one frame to each of `conns`, in order (a broadcast, a join's announcement): by default one
    /// [`Sink::transmit`] each. Connections that cannot take it go in `refused`, and the node handles
    /// each as [`Input::Disconnect`]. A driver overrides it to do per fan-out what it would otherwise do
    /// per member.
    fn fan_out(
        &mut self,
        frame: &Bytes,
        reliable: bool,
        conns: &[ConnId],
        refused: &mut Vec<ConnId>,
    ) {
        for &conn in conns {
            let frame = frame.clone();
            if !self.transmit(Transmit {
                conn,
                frame,
                reliable,
            }) {
                refused.push(conn);
            }
        }
    }
    /// Act on an event.
    fn event(&mut self, event: Event);
    /// Send a message to another node.
    fn mesh(&mut self, transmit: MeshTransmit);
}

/// The queues one input fills and one drain empties.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub transmits: Deliveries,
    /// Connections a sink refused a frame to, being disconnected (kept for its capacity).
    refused: Vec<ConnId>,
    pub events: VecDeque<Event>,
    pub mesh: VecDeque<MeshTransmit>,
    /// The deadline was reported since the last input.
    pub timeout_told: bool,
}

impl Node {
    /// The next output, in the order of the module docs; `None` once everything (the deadline
    /// included) was handed out since the last input.
    pub fn poll(&mut self) -> Option<Output> {
        if let Some(t) = self.out.transmits.pop_front() {
            return Some(Output::Transmit(t));
        }
        if let Some(e) = self.out.events.pop_front() {
            return Some(Output::Event(e));
        }
        if let Some(m) = self.out.mesh.pop_front() {
            return Some(Output::Mesh(m));
        }
        if self.out.timeout_told {
            return None;
        }
        self.out.timeout_told = true;
        self.poll_timeout().map(Output::Timeout)
    }

    /// Drains every output into `sink` and returns the next deadline: the loop production, the
    /// simulations and the benches share. A connection the sink cannot write to is disconnected at
    /// `now` (its user leaves every group), and what that produces is drained too.
    pub fn drain(&mut self, now: Instant, sink: &mut impl Sink) -> Option<Instant> {
        // The order of `poll`, without building an `Output` per frame (a broadcast to N members is N
        // frames: this loop is the hot path). Bounded: every output was produced by an input, and a
        // refused transmit forgets its connection, so it cannot be refused twice.
        loop {
            if let Some(delivery) = self.out.transmits.pop_delivery() {
                let mut refused = std::mem::take(&mut self.out.refused);
                match delivery {
                    Delivery::One(t) => {
                        let conn = t.conn;
                        if !sink.transmit(t) {
                            refused.push(conn);
                        }
                    }
                    Delivery::Many {
                        frame,
                        reliable,
                        conns,
                    } => {
                        sink.fan_out(&frame, reliable, &conns, &mut refused);
                        self.out.transmits.recycle(conns);
                    }
                }
                for conn in refused.drain(..) {
                    if self.sessions.is_open(conn) {
                        let _done = self.handle(Input::Disconnect(conn), now);
                    }
                }
                self.out.refused = refused;
            } else if let Some(e) = self.out.events.pop_front() {
                sink.event(e);
            } else if let Some(m) = self.out.mesh.pop_front() {
                sink.mesh(m);
            } else {
                break;
            }
        }
        self.out.timeout_told = true;
        self.poll_timeout()
    }
}
