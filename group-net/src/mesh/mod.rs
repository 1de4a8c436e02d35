//! The mesh: how this node's core talks to the other nodes' cores.
//!
//! - [`links`]: mesh data, one TCP connection per node pair (the node with the lower address dials; the
//!   other accepts), length-delimited frames, a handshake that refuses another protocol version, and
//!   reconnection with backoff. Frames for a peer wait in a bounded queue while it is unreachable; beyond
//!   that they are dropped and counted, and the core's digests repair what was lost.
//! - [`membership`]: failure detection with SWIM (foca) over UDP on the same address, turned into
//!   [`group_core::Input::NodeUp`] / [`group_core::Input::NodeDown`] inputs.
//! - [`seal`]: the MAC of the cluster secret on every membership datagram.
//! - [`seeds`]: seeds given as names, resolved again every few seconds.

pub(crate) mod links;
pub(crate) mod membership;
pub(crate) mod seal;
pub(crate) mod seeds;

pub(crate) use links::Links;
