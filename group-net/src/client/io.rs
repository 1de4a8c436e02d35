//! The client's transport tasks: one reads the socket into a queue of server frames, one owns the
//! writing side. Requests reach the writer through a channel, so a caller's future that is dropped
//! either queued its whole frame or none of it: a cancelled call never leaves half a frame on the wire.
//! The writer also keeps an otherwise silent session alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use group_core::proto::{Request, ServerFrame, decode_server_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{CloseReason, CloseSlot};
use crate::tls::Stream;

/// Largest server frame payload the client accepts.
pub(super) const MAX_SERVER_PAYLOAD: u32 = 16 << 20;

/// Frames a reader passes on in one channel message, at most.
pub(super) const MAX_ARRIVED: usize = 64;

/// Frames read together, in order: what the reading task passes to the caller's side.
pub(super) type Arrived = Vec<ServerFrame>;

/// Where the writer task puts bytes.
pub(super) enum Writer {
    /// A TCP connection's writing half, with or without TLS.
    Tcp(Box<dyn AsyncWrite + Send + Unpin>),
    Ws(SplitSink<WebSocketStream<Stream>, Message>),
    /// Each item is one reliable KCP message of whole frames, for the UDP task to send.
    Udp(mpsc::Sender<Bytes>),
}

impl Writer {
    async fn write(&mut self, bytes: Bytes) -> Result<(), ()> {
        match self {
            Writer::Tcp(w) => {
                // TLS holds the last record until flushed; for plain TCP flushing does nothing.
                w.write_all(&bytes).await.map_err(drop)?;
                w.flush().await.map_err(drop)
            }
            Writer::Ws(sink) => sink.send(Message::Binary(bytes)).await.map_err(drop),
            Writer::Udp(queue) => queue.send(bytes).await.map_err(drop),
        }
    }

    async fn close(self) {
        match self {
            Writer::Tcp(mut w) => {
                let _ = w.shutdown().await;
            }
            Writer::Ws(mut sink) => {
                let _ = sink.close().await;
            }
            Writer::Udp(queue) => drop(queue),
        }
    }
}

/// Writes what the client queues until the queue closes (the sender was dropped) or the socket fails;
/// after `keep_alive` of silence (changeable while it runs; `None`: never) it sends a KeepAlive, counted
/// in `keep_alives` so that the reader can drop its answer instead of handing it to the caller. This
/// task, not the caller, keeps the session alive: a game that stops polling (a loading screen) keeps it.
pub(super) async fn write_loop(
    mut writer: Writer,
    mut queue: mpsc::Receiver<Bytes>,
    mut keep_alive: watch::Receiver<Option<Duration>>,
    keep_alives: Arc<AtomicU64>,
) {
    let mut keep_alive_frame = BytesMut::new();
    Request::KeepAlive.encode(&mut keep_alive_frame);
    let keep_alive_frame = keep_alive_frame.freeze();
    let mut setting_open = true;
    loop {
        let every = *keep_alive.borrow_and_update();
        let idle = every.unwrap_or(Duration::MAX);
        let bytes = tokio::select! {
            bytes = queue.recv() => match bytes {
                Some(bytes) => bytes,
                None => break,
            },
            changed = keep_alive.changed(), if setting_open => {
                setting_open = changed.is_ok();
                continue;
            }
            () = tokio::time::sleep(idle), if every.is_some() => {
                keep_alives.fetch_add(1, Ordering::Relaxed);
                keep_alive_frame.clone()
            }
        };
        if writer.write(bytes).await.is_err() {
            return;
        }
    }
    writer.close().await;
}

/// Reads TCP bytes into frames until EOF or an error, and records which it was in `closed`.
pub(super) async fn read_tcp<R: AsyncRead + Unpin>(
    mut reader: R,
    frames: mpsc::Sender<Arrived>,
    closed: CloseSlot,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let reason = loop {
        match pass_on(&mut buf, &frames).await {
            Ok(()) => {}
            Err(PassOn::Gone) => return,
            Err(PassOn::Bad(e)) => {
                let _ = closed.set(CloseReason::Protocol(e));
                return;
            }
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => break CloseReason::ServerClosed,
            Err(e) => break CloseReason::Network(e.to_string()),
            Ok(_) => {}
        }
    };
    let _ = closed.set(reason);
}

/// Why [`pass_on`] stopped.
pub(super) enum PassOn {
    /// The client was dropped: nobody reads what arrives.
    Gone,
    /// The server sent something that is not a frame.
    Bad(String),
}

/// Decodes the whole frames at the front of `buf` and passes them on in batches of at most
/// [`MAX_ARRIVED`]: one channel message per read, not one per frame (with tens of frames a read, the
/// per-frame sends and wake-ups were a sixth of a busy receiver's time).
pub(super) async fn pass_on(
    buf: &mut BytesMut,
    frames: &mpsc::Sender<Arrived>,
) -> Result<(), PassOn> {
    let mut batch = Vec::new();
    loop {
        match decode_server_frame(buf, MAX_SERVER_PAYLOAD) {
            Ok(Some(frame)) => {
                batch.push(frame);
                if batch.len() < MAX_ARRIVED {
                    continue;
                }
            }
            Ok(None) => {}
            Err(e) => {
                // What came before the bad frame still reaches the caller, as it would have alone.
                if !batch.is_empty() && frames.send(batch).await.is_err() {
                    return Err(PassOn::Gone);
                }
                return Err(PassOn::Bad(e.to_string()));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let full = batch.len() == MAX_ARRIVED;
        if frames.send(std::mem::take(&mut batch)).await.is_err() {
            return Err(PassOn::Gone);
        }
        if !full {
            return Ok(());
        }
    }
}

/// Reads WebSocket messages (each one or more whole frames) until the stream ends, and records why it
/// ended in `closed`.
pub(super) async fn read_ws(
    mut messages: SplitStream<WebSocketStream<Stream>>,
    frames: mpsc::Sender<Arrived>,
    closed: CloseSlot,
) {
    let reason = loop {
        let data = match messages.next().await {
            None | Some(Ok(Message::Close(_))) => break CloseReason::ServerClosed,
            Some(Err(e)) => break CloseReason::Network(e.to_string()),
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(_)) => continue,
        };
        let mut buf = BytesMut::from(data);
        match pass_on(&mut buf, &frames).await {
            Ok(()) if buf.is_empty() => {}
            Ok(()) => {
                let _ = closed.set(CloseReason::Protocol(
                    "a WebSocket message ended inside a frame".into(),
                ));
                return;
            }
            Err(PassOn::Gone) => return,
            Err(PassOn::Bad(e)) => {
                let _ = closed.set(CloseReason::Protocol(e));
                return;
            }
        }
    };
    let _ = closed.set(reason);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use group_core::proto::{Status, encode_server_frame};

    use super::*;

    fn frames(count: u16) -> BytesMut {
        let mut buf = BytesMut::new();
        for i in 0..count {
            encode_server_frame(1, i, Status::Push, &i.to_be_bytes(), &mut buf);
        }
        buf
    }

    /// Every command number passed on, batch by batch.
    fn received(inbox: &mut mpsc::Receiver<Arrived>) -> Vec<Vec<u16>> {
        let mut batches = Vec::new();
        while let Ok(batch) = inbox.try_recv() {
            batches.push(batch.iter().map(|f| f.cmd).collect());
        }
        batches
    }

    #[tokio::test]
    async fn a_read_of_many_frames_passes_on_in_order_in_bounded_batches() {
        let (tx, mut inbox) = mpsc::channel(16);
        let mut buf = frames(150);
        buf.extend_from_slice(&[1, 0]); // the start of the next frame stays for the next read
        assert!(pass_on(&mut buf, &tx).await.is_ok());
        let batches = received(&mut inbox);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_ARRIVED, MAX_ARRIVED, 150 - 2 * MAX_ARRIVED]);
        let cmds: Vec<u16> = batches.concat();
        assert_eq!(
            cmds,
            (0..150).collect::<Vec<u16>>(),
            "every frame, in order"
        );
        assert_eq!(&buf[..], [1, 0]);
        assert!(
            pass_on(&mut buf, &tx).await.is_ok(),
            "nothing whole: nothing sent"
        );
        assert!(received(&mut inbox).is_empty());
    }

    #[tokio::test]
    async fn frames_before_a_bad_one_still_arrive() {
        let (tx, mut inbox) = mpsc::channel(16);
        let mut buf = frames(3);
        encode_server_frame(1, 9, Status::Push, &[0; 64], &mut buf);
        let bad_len = MAX_SERVER_PAYLOAD + 1;
        buf.extend_from_slice(&[1, 0, 9, Status::Push as u8]);
        buf.extend_from_slice(&bad_len.to_be_bytes());
        assert!(matches!(pass_on(&mut buf, &tx).await, Err(PassOn::Bad(_))));
        assert_eq!(received(&mut inbox), [vec![0, 1, 2, 9]]);
        drop(inbox);
        let mut more = frames(1);
        assert!(matches!(pass_on(&mut more, &tx).await, Err(PassOn::Gone)));
    }
}
