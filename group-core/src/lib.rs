//! `group-core`: the sans-IO heart of a distributed group-communication server for real-time games.
//!
//! One [`Node`] value holds the whole group logic of one server process: client sessions, the groups
//! this process holds and their members, TTLs, merge buffers and tick timers, plus the codec of the client
//! wire protocol ([`proto`]). It follows the Group module of Diarkis: its command IDs, configuration keys
//! ([`GroupConfig`]) and rules.
//!
//! The core does no I/O. It never reads a clock, a random source or a socket, and it starts no threads:
//! time comes in as an [`Instant`] argument on every input, randomness from [`NodeConfig::seed`], and
//! bytes in and out as values. That makes it deterministic (same inputs and times, same outputs) and lets
//! tests drive thousands of clients through hours of virtual time in milliseconds. The tokio driver lives
//! in `group-net`.
//!
//! # Driving a node
//! One input at a time goes in through [`Node::handle`] with the time it happened; then the driver
//! drains the outputs (frames, events, mesh messages) and sleeps until the deadline [`Node::drain`]
//! returns, or until the next input. Production, the simulations and the benches share this loop.
//! ```
//! use bytes::BytesMut;
//! use group_core::proto::{Request, decode_client_frame};
//! use group_core::{
//!     ConnId, Event, Handled, Input, Instant, MeshTransmit, Node, NodeConfig, Sink, Transmit,
//! };
//!
//! /// The driver's side: where frames, events and mesh messages go.
//! #[derive(Default)]
//! struct Driver {
//!     written: Vec<Transmit>,
//! }
//!
//! impl Sink for Driver {
//!     fn transmit(&mut self, transmit: Transmit) -> bool {
//!         self.written.push(transmit); // write transmit.frame to the connection's socket
//!         true // false: the connection is gone or too slow, and the node disconnects it
//!     }
//!     fn event(&mut self, event: Event) {
//!         if let Event::Close { conn, .. } = event { /* close conn's socket */ let _ = conn; }
//!     }
//!     fn mesh(&mut self, _transmit: MeshTransmit) { /* no cluster here */ }
//! }
//!
//! let mut node = Node::new(NodeConfig::default(), Instant::ZERO).unwrap();
//! let mut driver = Driver::default();
//! let conn = ConnId(1);
//! let now = Instant::from_millis(5);
//! assert_eq!(node.handle(Input::Connect(conn), now), Handled::Connect(Ok(())));
//!
//! // Bytes read from the connection's socket: a Hello frame for uid "alice".
//! let mut read_buf = BytesMut::new();
//! Request::Hello { uid: "alice".into(), token: Default::default() }.encode(&mut read_buf);
//! let max = node.config().limits.max_payload;
//! while let Some(frame) = decode_client_frame(&mut read_buf, max).unwrap() {
//!     let _outcome = node.handle(Input::Frame { conn, frame }, now);
//! }
//!
//! // Drain: frames to writers, events acted on; then one timer until the deadline.
//! let deadline = node.drain(now, &mut driver).expect("the idle timer of the connection");
//! assert_eq!(driver.written[0].conn, conn); // the Hello response
//! // ... sleep until `deadline` (or the next input), then:
//! let _done = node.handle(Input::Timeout, deadline);
//! ```
//!
//! # Bounds
//! Every map and queue is bounded by [`Limits`]: connections, groups, groups per user, members per group,
//! merge-buffer bytes and frame size. A request that would exceed a bound is refused with its own error;
//! the transmit and event queues hold only what one input produced and are empty after each drain.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod id;
pub mod kcp;
mod node;
pub mod proto;
pub mod rng;
mod time;

pub use config::{ConfigError, GroupConfig, Limits, NodeConfig, StaticGroup};
pub use id::{GroupId, GroupIdError, IdLayout, NodeAddr};
pub use node::{
    BroadcastError, Call, CloseReason, ConnId, ConnectError, CreateError, DiscardMessageFn,
    DiscardReason, Event, GroupCensus, GroupError, GroupSnapshot, Handled, Input, JoinError,
    JoinStatus, LeaveError, MeshTransmit, Node, NodeCounters, Outcome, Output, RandJoinError,
    RejoinMessageFn, Sid, Sink, TickError, Transmit, Uid,
};
pub use time::Instant;
