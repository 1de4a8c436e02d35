//! WebSocket: each binary message holds one or more whole frames. Text messages, and binary messages that
//! end inside a frame, close the connection with a close code and a reason saying what was wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use group_core::ConnId;
use group_core::proto::{CLIENT_HEADER_LEN, FrameError, code, decode_client_frame};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};

use tokio_util::sync::CancellationToken;

use crate::conn::{Connection, Shared};
use crate::inbox::{LAST_WORDS_TIMEOUT, TransportKind, WriterEnd};
use crate::listener::Listeners;
use crate::tls::Stream;

/// A client gets this long to complete the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the writer waits to deliver its Close message before dropping the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of WebSocket messages gathered before they are written to the socket. The writer flushes at
/// the end of every batch, so this adds no wait: it makes a batch of small messages one write instead
/// of one write per message. At 0 (eager writes), 100 members flat out made one `sendto` per delivery
/// and group-server used 4x the CPU per delivery (docs/benchmarks/FANOUT-LOG.md, sixteenth session).
/// Kept small because the buffer keeps its capacity for the life of the connection.
const WRITE_BUFFER: usize = 4096;

/// The close code and reason the writer sends once it has flushed the queue.
type CloseReason = Arc<Mutex<Option<(CloseCode, String)>>>;

/// What the WebSocket listener is configured with.
#[derive(Clone)]
pub(crate) struct WsSettings {
    /// `server.wsReadBuffer`.
    pub read_buffer: usize,
    /// `ws.allowedOrigins`; `None`: any.
    pub allowed_origins: Option<Arc<Vec<String>>>,
}

/// Accepts WebSocket connections until `stop` fires.
pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    listeners: Arc<Listeners>,
    settings: WsSettings,
) {
    let serve =
        move |stream, conn, shared, permit| serve(stream, conn, shared, permit, settings.clone());
    crate::listener::accept_streams(listener, listeners, "WebSocket", serve).await;
}

/// Refuses a handshake whose `Origin` is not in the allow-list with 403, naming the origin.
#[allow(clippy::result_large_err)] // the shape tungstenite's handshake callback requires
fn check_origin(
    allowed: Option<&[String]>,
    request: &Request,
    response: Response,
) -> Result<Response, ErrorResponse> {
    let Some(allowed) = allowed else {
        return Ok(response);
    };
    let origin = request
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok());
    if origin.is_some_and(|origin| allowed.iter().any(|a| a == origin)) {
        return Ok(response);
    }
    let mut refusal = ErrorResponse::new(Some(format!(
        "origin {} is not in ws.allowedOrigins",
        origin.unwrap_or("(none)")
    )));
    *refusal.status_mut() = StatusCode::FORBIDDEN;
    Err(refusal)
}

#[allow(clippy::result_large_err)] // the handshake callback's shape, as above
async fn serve(
    stream: TcpStream,
    conn: ConnId,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    settings: WsSettings,
) {
    let read_buffer = settings.read_buffer;
    let stream = match &shared.tls {
        None => Stream::Plain(stream),
        Some(tls) => match tls.accept(stream).await {
            Some(stream) => stream,
            None => return,
        },
    };
    // A message may hold several frames; allow two maximal frames so that an oversized frame header is
    // seen (and refused with a Bad frame) rather than the message being cut by the library.
    let limit = 2 * (shared.max_payload as usize + CLIENT_HEADER_LEN);
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(WRITE_BUFFER)
        // Pongs to a peer that never reads pile up here: bounded, such a peer gets its connection closed
        // instead of the server's memory (497 MB in 11 s before).
        .max_write_buffer_size(limit.max(64 * 1024) + WRITE_BUFFER)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let ws = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        accept_hdr_async_with_config(
            stream,
            |request: &Request, response: Response| {
                check_origin(
                    settings.allowed_origins.as_deref().map(|v| v.as_slice()),
                    request,
                    response,
                )
            },
            Some(config),
        ),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return tracing::debug!(conn = conn.0, "WebSocket handshake failed: {e}"),
        Err(_) => return tracing::debug!(conn = conn.0, "WebSocket handshake timed out"),
    };
    let _open = shared.stats.opened(TransportKind::Ws);
    let Ok((mut connection, end)) = Connection::open(conn, shared, None).await else {
        return;
    };
    let kill = end.kill.clone();
    let (sink, messages) = ws.split();
    let close: CloseReason = Arc::default();
    let writer = tokio::spawn(write_messages(sink, end, close.clone()));
    read_messages(messages, &mut connection, &kill, &close).await;
    if !connection.finished() {
        connection.disconnected().await;
    }
    let _ = writer.await;
}

async fn read_messages(
    mut messages: futures_util::stream::SplitStream<WebSocketStream<Stream>>,
    connection: &mut Connection,
    kill: &CancellationToken,
    close: &CloseReason,
) {
    let max = connection.max_payload();
    loop {
        let message = tokio::select! {
            () = kill.cancelled() => return,
            message = messages.next() => message,
        };
        let data = match message {
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Ping(_))) => {
                // Answered by the WebSocket layer, but it costs like any request.
                if connection.control_frame().await.is_err() || connection.finished() {
                    return;
                }
                continue;
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(_))) => {
                let reason =
                    "text messages are not part of the protocol: send frames in binary messages";
                set_close(close, CloseCode::Unsupported, reason);
                let _ = connection
                    .refuse_and_close(code::MALFORMED, reason.into())
                    .await;
                return;
            }
            Some(Ok(Message::Close(_))) | None => return,
            Some(Err(e)) => {
                set_close(close, CloseCode::Protocol, &e.to_string());
                return;
            }
        };
        let mut buf = BytesMut::from(data);
        loop {
            match decode_client_frame(&mut buf, max) {
                Ok(Some(frame)) => {
                    if connection.dispatch(frame).await.is_err() || connection.finished() {
                        return;
                    }
                }
                Ok(None) if buf.is_empty() => break,
                Ok(None) => {
                    let reason =
                        "binary message ended inside a frame: a message must hold whole frames";
                    set_close(close, CloseCode::Protocol, reason);
                    let _ = connection
                        .refuse_and_close(code::MALFORMED, reason.into())
                        .await;
                    return;
                }
                Err(FrameError::TooLarge { ver, cmd, len, .. }) => {
                    set_close(close, CloseCode::Size, "frame larger than maxPayload");
                    let _ = connection.oversized(ver, cmd, len).await;
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

fn set_close(close: &CloseReason, code: CloseCode, reason: &str) {
    if let Ok(mut slot) = close.lock() {
        slot.get_or_insert_with(|| (code, reason.to_string()));
    }
}

/// Sends each queued frame as a binary message, flushing once per batch, then a Close message. Cut by
/// the node (a slow consumer), it first tries, for at most [`LAST_WORDS_TIMEOUT`], to send the closing
/// notice.
async fn write_messages(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<Stream>, Message>,
    end: WriterEnd,
    close: CloseReason,
) {
    let WriterEnd {
        mut queue,
        kill,
        last_words,
        direct: _,
    } = end;
    loop {
        let first = tokio::select! {
            biased;
            () = kill.cancelled() => break,
            next = queue.recv() => match next {
                Some(outgoing) => outgoing,
                None => break,
            },
        };
        let written = tokio::select! {
            biased;
            () = kill.cancelled() => break,
            written = async {
                // Each frame counts against the budgets until the flush has written it.
                let mut charges = vec![first.charge];
                for frame in first.frames {
                    sink.feed(Message::Binary(frame)).await?;
                }
                while let Ok(next) = queue.try_recv() {
                    charges.push(next.charge);
                    for frame in next.frames {
                        sink.feed(Message::Binary(frame)).await?;
                    }
                }
                sink.flush().await
            } => written,
        };
        if written.is_err() {
            break;
        }
    }
    if let Some(notice) = last_words.get() {
        let said = sink.send(Message::Binary(notice.clone()));
        let _ = tokio::time::timeout(LAST_WORDS_TIMEOUT, said).await;
    }
    let reason = close.lock().ok().and_then(|mut slot| slot.take());
    let frame = reason.map(|(code, reason)| CloseFrame {
        code,
        reason: reason.into(),
    });
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(frame))).await;
    kill.cancel();
}
