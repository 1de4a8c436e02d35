//! What a caller sets ([`KcpConfig`]) and what it is told ([`KcpError`]).

use super::segment::SegmentError;

/// Tuning, as ikcp's `ikcp_nodelay`, `ikcp_wndsize` and `ikcp_setmtu` set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KcpConfig {
    /// Largest datagram produced, headers included.
    pub mtu: usize,
    /// Send window, in segments.
    pub snd_wnd: u16,
    /// Receive window, in segments; also bounds the receive buffer.
    pub rcv_wnd: u16,
    /// Minimum RTO of 30 ms instead of 100 ms, and gentler RTO backoff.
    pub nodelay: bool,
    /// Flush interval in ms (10..=5000).
    pub interval: u32,
    /// Fast retransmit after this many later ACKs (0: off).
    pub fast_resend: u32,
    /// Ignore the congestion window (send up to the peer's window).
    pub no_congestion_window: bool,
    /// Transmissions of one segment before the link counts as dead.
    pub dead_link: u32,
    /// Milliseconds one segment must also have gone unacknowledged before the link counts as dead
    /// (0: the transmissions alone). A peer whose application stalls (a scene loading, a debugger, an
    /// app in the background) acknowledges nothing, and on a fast path (an RTO of 30 ms) 20
    /// transmissions take only about 3.5 s; a server sets this to its idle timeout so that a UDP
    /// client survives what a TCP one would.
    pub dead_after_ms: u32,
    /// Segments waiting to enter the send window, at most: `send` refuses beyond it.
    pub max_send_queue: usize,
}

impl Default for KcpConfig {
    /// kcp2k's "fast" settings with a 1195-byte MTU (1200 minus the 5-byte channel/cookie envelope).
    fn default() -> Self {
        KcpConfig {
            mtu: 1195,
            snd_wnd: 256,
            rcv_wnd: 256,
            nodelay: true,
            interval: 10,
            fast_resend: 2,
            no_congestion_window: true,
            dead_link: 20,
            dead_after_ms: 0,
            max_send_queue: 8192,
        }
    }
}

/// Why a KCP call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KcpError {
    /// The datagram is not valid KCP for this conversation.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The message needs more fragments than the peer can reassemble (255, and fewer than its window).
    #[error("message of {len} bytes needs more than {max_fragments} fragments")]
    MessageTooLarge {
        /// Message length.
        len: usize,
        /// Fragment limit.
        max_fragments: usize,
    },
    /// `max_send_queue` segments are already waiting: the peer is not keeping up.
    #[error("send queue full ({0} segments)")]
    SendQueueFull(usize),
}
