//! Write-through for plain TCP: when a connection's writer has nothing in flight, the node task writes
//! the turn's frames to the socket itself, without a queue entry, a wake-up and a task switch per member.
//!
//! Why: at a fixed rate (a broadcast now and then, not a flood) every member's writer was woken once per
//! broadcast to make one small write; the wake-ups, not the writes, were what the server spent more CPU
//! on than redis, which writes from its event loop. Under load the writer still does the writing: once
//! anything is in flight the node queues behind it, and the socket's readiness is the writer's to wait
//! for. So does a big fan-out (more than 64 connections in one turn): one socket after another, the node
//! would hold every other group's inputs for the whole group's writes.
//!
//! The write is `sendmsg` with `MSG_NOSIGNAL` on the socket's descriptor, not tokio's `try_write`: a
//! peer that went away never raises SIGPIPE, even on a host thread that did not block it, and the write
//! skips tokio's readiness bookkeeping (one cold cache line per connection per write; 6-10% of the CPU
//! at 100 msg/s to 1,000 members, docs/benchmarks/FANOUT-LOG.md). Tokio's readiness may then still say
//! writable when the socket is full; the writer's next write finds out, clears it and waits, so it costs
//! at most one extra attempt. (`send` for a single frame saves kernel time per call but measured no
//! better overall, FANOUT-LOG.md.)
//!
//! Ordering: `in_flight` counts entries handed to the writer and not yet written whole. The node task
//! adds to it; so does a flusher, for a round made only of fan-outs' frames that it queues to the
//! writer, before it reports those fan-outs finished (`flusher::FlushProgress`), which the node checks
//! first. The writer takes its entries off only after their bytes are in the kernel. So when the node
//! reads 0 (after that check), everything handed over is written and the writer has nothing to write
//! until the node hands it more: the node may write, and frames never overtake each other.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

/// `MSG_NOSIGNAL` on every Unix (Linux, Android, macOS, iOS): a peer that went away makes the write
/// fail with EPIPE instead of raising SIGPIPE. Windows has no SIGPIPE and no such flag.
#[cfg(unix)]
const SEND_FLAGS: std::ffi::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(unix))]
const SEND_FLAGS: std::ffi::c_int = 0;

/// Slices given to one write at most (Linux refuses more than 1024 in one `writev`).
const MAX_SLICES: usize = 64;

/// Frames up to which a write fills a small array of slices instead (1 KiB of slices zeroed per write
/// was a fifth of `Direct::write`'s samples at 100 msg/s, where every write is of one frame).
const FEW_SLICES: usize = 4;

/// A plain TCP connection's sending side, shared by the node task and the connection's writer.
#[derive(Clone)]
pub(crate) struct Direct(Arc<Shared>);

/// The socket, its in-flight count and whether it was cut, in one allocation: a flusher's write reads
/// all three, and with 1,000 connections written once each per broadcast every separate allocation is a
/// cache miss per write.
struct Shared {
    in_flight: AtomicUsize,
    cut: AtomicBool,
    socket: OwnedWriteHalf,
}

impl Direct {
    pub fn new(socket: OwnedWriteHalf) -> Self {
        Direct(Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            cut: AtomicBool::new(false),
            socket,
        }))
    }

    /// The node's side: true when the writer has nothing in flight, so the node may write.
    pub fn idle(&self) -> bool {
        // Acquire: the writer's write happened before its decrement to 0.
        self.0.in_flight.load(Ordering::Acquire) == 0
    }

    /// Entries handed over and not yet written whole (a flusher writes through when they are its own).
    pub fn in_flight(&self) -> usize {
        // Acquire: as in `idle`.
        self.0.in_flight.load(Ordering::Acquire)
    }

    /// Marks the connection cut, before its last words are set: nothing more is written through, the
    /// writer says them and closes.
    pub fn mark_cut(&self) {
        self.0.cut.store(true, Ordering::Release);
    }

    /// Whether the connection was cut ([`Direct::mark_cut`]).
    pub fn is_cut(&self) -> bool {
        self.0.cut.load(Ordering::Acquire)
    }

    /// Counts one entry handed to the writer (before it is sent to the queue): the node's, or a
    /// flusher's round of fan-outs alone.
    pub fn handed(&self) {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// The node's side: takes back an entry that could not be handed over after all.
    pub fn unhanded(&self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The writer's side: it wrote `entries` whole.
    pub fn written(&self, entries: usize) {
        self.0.in_flight.fetch_sub(entries, Ordering::Release);
    }

    /// The writer's side of the socket.
    pub fn writer(&self) -> SharedWriter {
        SharedWriter(self.0.clone())
    }

    /// The node's side: writes what the socket takes now, without waiting; only when [`Direct::idle`]. Returns how many of
    /// the frames' bytes went out, from the front. An error (a reset peer) writes nothing here: the
    /// writer meets it and ends the connection.
    pub fn write(&self, frames: &[Bytes]) -> usize {
        let mut total = 0;
        let mut first = 0; // the first frame not yet written whole
        let mut offset = 0; // bytes of it already written
        while let Some(rest) = frames.get(first..).filter(|rest| !rest.is_empty()) {
            // The usual write is of one frame or a few: a small array to fill, not 64 slices.
            let sent = if rest.len() <= FEW_SLICES {
                self.send::<FEW_SLICES>(rest, offset)
            } else {
                self.send::<MAX_SLICES>(rest, offset)
            };
            let Some((written, offered, count)) = sent else {
                break;
            };
            total += written;
            let mut left = written + offset;
            offset = 0;
            for frame in rest.iter().take(count) {
                if left < frame.len() {
                    offset = left;
                    break;
                }
                left -= frame.len();
                first += 1;
            }
            if written < offered || written == 0 {
                break; // the socket's buffer is full
            }
        }
        total
    }

    /// One `sendmsg` of up to `N` of `rest`'s frames, the first from `offset`: what it wrote, what it
    /// offered and how many frames; `None` on an error.
    fn send<const N: usize>(&self, rest: &[Bytes], offset: usize) -> Option<(usize, usize, usize)> {
        let mut slices = [IoSlice::new(&[]); N];
        let mut count = 0;
        let mut offered = 0;
        for (slot, frame) in slices.iter_mut().zip(rest) {
            let bytes = frame
                .get(if count == 0 { offset } else { 0 }..)
                .unwrap_or_default();
            *slot = IoSlice::new(bytes);
            offered += bytes.len();
            count += 1;
        }
        let socket = socket2::SockRef::from(self.0.socket.as_ref());
        let slices = slices.get(..count).unwrap_or_default();
        let written = socket.send_vectored_with_flags(slices, SEND_FLAGS).ok()?;
        Some((written, offered, count))
    }
}

/// The writer's handle on the shared socket: an [`AsyncWrite`] that waits for writability and writes
/// with the socket's non-blocking calls. Shutting it down does nothing: the connection's FIN goes out
/// when the last holder (the node's or the writer's) lets go of the socket, after the writer is done.
pub(crate) struct SharedWriter(Arc<Shared>);

impl SharedWriter {
    /// Waits until the socket is writable and makes one non-blocking `write` of it.
    fn poll_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&tokio::net::TcpStream) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        let socket = self.0.socket.as_ref();
        loop {
            ready!(socket.poll_write_ready(cx))?;
            match write(socket) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for SharedWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_with(cx, |socket| socket.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_with(cx, |socket| socket.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> std::io::Result<(Direct, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_send_buffer_size(4096)?;
        let (ours, theirs) =
            tokio::join!(socket.connect(listener.local_addr()?), listener.accept());
        let (_, write) = ours?.into_split();
        Ok((Direct::new(write), theirs?.0))
    }

    fn frames(count: usize, size: usize) -> Vec<Bytes> {
        (0..count)
            .map(|n| Bytes::from(vec![u8::try_from(n % 251).unwrap_or(0); size]))
            .collect()
    }

    /// The node writes only while nothing is in flight: an entry handed to the writer blocks it until
    /// the writer reports the entry written.
    #[tokio::test]
    async fn the_node_writes_only_when_the_writer_has_nothing_in_flight() -> std::io::Result<()> {
        let (direct, _peer) = pair().await?;
        assert!(direct.idle());
        direct.handed();
        direct.handed();
        direct.handed();
        direct.unhanded();
        assert!(!direct.idle());
        direct.written(1);
        assert!(!direct.idle());
        direct.written(1);
        assert!(direct.idle());
        Ok(())
    }

    /// A single frame that does not fit: what `write` says it wrote is exactly its first bytes.
    #[tokio::test]
    async fn a_single_frame_too_big_for_the_socket_is_written_in_part_and_says_how_much()
    -> std::io::Result<()> {
        let (direct, mut peer) = pair().await?;
        let sent = frames(1, 4 << 20);
        let written = direct.write(&sent);
        assert!(written > 0 && written < 4 << 20, "{written}");
        let mut received = vec![0u8; written];
        peer.read_exact(&mut received).await?;
        assert_eq!(received, sent[0][..written]);
        Ok(())
    }

    /// What `write` says it wrote is exactly the frames' first bytes, also when the socket fills in the
    /// middle of a frame: the caller queues the rest from there.
    #[tokio::test]
    async fn a_write_stops_where_the_socket_fills_and_says_where() -> std::io::Result<()> {
        let (direct, mut peer) = pair().await?;
        let sent = frames(400, 1001);
        let all: Vec<u8> = sent.iter().flat_map(|f| f.iter().copied()).collect();
        let written = direct.write(&sent);
        assert!(
            written > 0 && written < all.len(),
            "{written} of {}",
            all.len()
        );
        let mut received = vec![0u8; written];
        peer.read_exact(&mut received).await?;
        assert_eq!(received, all[..written]);
        Ok(())
    }
}
