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
//! After every input, drain transmits, then events, then sleep until [`Node::poll_timeout`]:
//! ```
//! use bytes::BytesMut;
//! use group_core::proto::{Request, decode_client_frame};
//! use group_core::{ConnId, Event, Instant, Node, NodeConfig};
//!
//! let mut node = Node::new(NodeConfig::default(), Instant::ZERO).unwrap();
//! let conn = ConnId(1);
//! let now = Instant::from_millis(5);
//! node.handle_connect(conn, now).unwrap();
//!
//! // Bytes read from the connection's socket: a Hello frame for uid "alice".
//! let mut read_buf = BytesMut::new();
//! Request::Hello { uid: "alice".into(), token: Default::default() }.encode(&mut read_buf);
//! let max = node.config().limits.max_payload;
//! while let Some(frame) = decode_client_frame(&mut read_buf, max).unwrap() {
//!     node.handle_frame(conn, frame, now);
//! }
//!
//! // Drain: write frames, act on events, then arm one timer.
//! while let Some(transmit) = node.poll_transmit() {
//!     assert_eq!(transmit.conn, conn); // the Hello response: write transmit.frame to the socket
//! }
//! while let Some(event) = node.poll_event() {
//!     if let Event::Close { conn, .. } = event { /* close conn's socket */ let _ = conn; }
//! }
//! let deadline = node.poll_timeout().expect("the idle timer of the connection");
//! // ... sleep until `deadline` (or the next input), then:
//! node.handle_timeout(deadline);
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
    BroadcastError, CloseReason, ConnId, ConnectError, CreateError, DiscardMessageFn,
    DiscardReason, Event, GroupError, GroupSnapshot, JoinError, JoinStatus, LeaveError,
    MeshTransmit, Node, Outcome, RandJoinError, RejoinMessageFn, Sid, TickError, Transmit, Uid,
};
pub use time::Instant;
