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
    frames: mpsc::Sender<ServerFrame>,
    closed: CloseSlot,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let reason = loop {
        loop {
            match decode_server_frame(&mut buf, MAX_SERVER_PAYLOAD) {
                Ok(Some(frame)) => {
                    if frames.send(frame).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = closed.set(CloseReason::Protocol(e.to_string()));
                    return;
                }
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

/// Reads WebSocket messages (each one or more whole frames) until the stream ends, and records why it
/// ended in `closed`.
pub(super) async fn read_ws(
    mut messages: SplitStream<WebSocketStream<Stream>>,
    frames: mpsc::Sender<ServerFrame>,
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
        while !buf.is_empty() {
            match decode_server_frame(&mut buf, MAX_SERVER_PAYLOAD) {
                Ok(Some(frame)) => {
                    if frames.send(frame).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = closed.set(CloseReason::Protocol(
                        "a WebSocket message ended inside a frame".into(),
                    ));
                    return;
                }
                Err(e) => {
                    let _ = closed.set(CloseReason::Protocol(e.to_string()));
                    return;
                }
            }
        }
    };
    let _ = closed.set(reason);
}
