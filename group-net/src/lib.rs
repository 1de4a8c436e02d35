//! `group-net`: the tokio driver around [`group_core::Node`]. One node serves game clients over TCP and
//! WebSocket and UDP (KCP), runs server code's hooks, and offers the Rust server API
//! ([`ServerHandle`]) and a Rust client ([`client`]).
//!
//! ```no_run
//! use group_net::{Command, Rejection, ServerBuilder, ServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = ServerBuilder::new(ServerConfig::default())
//!     .before(Command::Join, |ctx| async move {
//!         if ctx.uid.starts_with("banned") {
//!             return Err(Rejection::new(1001, "you are banned"));
//!         }
//!         Ok(())
//!     })
//!     .start()
//!     .await?;
//! println!("listening on {:?}", server.tcp_addr());
//! # Ok(()) }
//! ```
//!
//! Architecture: one task owns the core `Node` and its single timer; each connection has a reader task
//! (decoding frames, checking Hello tokens, running hooks) and a writer task fed by a bounded queue. A full
//! queue marks a slow consumer, which is disconnected rather than waited for.

pub mod auth;
mod budget;
pub mod client;
pub mod config;
mod conn;
mod direct;
mod fan_out;
mod flusher;
mod handle;
mod histogram;
pub mod hooks;
mod inbox;
mod listener;
mod mesh;
pub mod message_worker;
mod metrics;
mod node_task;
mod run_split;
mod server;
mod shared_frames;
mod tcp;
mod throttle;
pub mod tls;
mod udp;
mod writer_pool;
mod ws;

pub use config::ServerConfig;
pub use handle::{ApiError, ServerHandle, TickFn};
pub use hooks::{AfterOutcome, Command, HookContext, HookFuture, InvalidRefusalCode, Rejection};
pub use inbox::{EventFn, Stats};
pub use server::{CustomMessageFn, Server, ServerBuilder, StartError};
