//! A session's outgoing frames as datagrams: unreliable frames one a datagram, reliable ones gathered
//! into KCP data messages of up to a segment each.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use group_core::kcp::envelope::{
    CHANNEL_UNRELIABLE, ENVELOPE_LEN, KIND_DATA, KIND_UNRELIABLE_DATA, wrap,
};
use group_core::kcp::{Kcp, KcpError};
use tokio::net::UdpSocket;

use super::send;
use crate::inbox::Outgoing;

/// Sends an entry's unreliable frames, one datagram each, and gathers its reliable ones (and those too
/// big for one datagram) into `data`'s KCP messages. An error: KCP's send queue is full.
pub(super) async fn take_frames(
    outgoing: &Outgoing,
    mtu: usize,
    kcp: &mut Kcp,
    data: &mut DataMessages,
    socket: &UdpSocket,
    peer: SocketAddr,
    cookie: u32,
) -> Result<(), KcpError> {
    let frames = outgoing.frames.as_slice();
    let mut left: usize = frames.iter().map(Bytes::len).sum();
    for frame in frames {
        let unreliable_fits = ENVELOPE_LEN + 1 + frame.len() <= mtu;
        if !outgoing.reliable && unreliable_fits {
            let mut body = Vec::with_capacity(1 + frame.len());
            body.push(KIND_UNRELIABLE_DATA);
            body.extend_from_slice(frame);
            send(socket, peer, &wrap(CHANNEL_UNRELIABLE, cookie, &body)).await;
        } else {
            data.push(kcp, frame, left)?;
        }
        left -= frame.len();
    }
    Ok(())
}

/// Gathers a batch's reliable frames into KCP data messages of at most one segment each (a data message
/// may hold several whole frames): a small broadcast to a busy member then costs a share of a segment,
/// of its header and of its ACK, not one of each. A frame longer than a segment goes in a message of its
/// own, which KCP fragments.
pub(super) struct DataMessages {
    /// The message being gathered: the kind, then whole frames. Handed to KCP as it is (no copy), so
    /// an idle session holds no buffer.
    message: BytesMut,
    mss: usize,
}

impl DataMessages {
    pub(super) fn new(mss: usize) -> Self {
        DataMessages {
            message: BytesMut::new(),
            mss,
        }
    }

    /// Adds `frame`, first handing KCP the message gathered so far if `frame` would not fit in its
    /// segment. `left`: the bytes of this frame and those after it in the entry, so that a new message
    /// is sized for what will fill it (KCP holds it until it is acknowledged: a lone small frame must not
    /// pin a segment's worth of memory).
    fn push(&mut self, kcp: &mut Kcp, frame: &[u8], left: usize) -> Result<(), KcpError> {
        if self.message.len() > 1 && self.message.len() + frame.len() > self.mss {
            self.finish(kcp)?;
        }
        if self.message.is_empty() {
            self.message
                .reserve(1 + left.min(self.mss - 1).max(frame.len()));
            self.message.extend_from_slice(&[KIND_DATA]);
        }
        self.message.extend_from_slice(frame);
        Ok(())
    }

    /// Hands KCP the message gathered so far.
    pub(super) fn finish(&mut self, kcp: &mut Kcp) -> Result<(), KcpError> {
        let message = std::mem::take(&mut self.message);
        if message.len() > 1 {
            kcp.send_bytes(message.freeze())?;
        }
        Ok(())
    }
}
