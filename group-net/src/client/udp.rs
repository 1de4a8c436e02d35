//! The UDP side of the Rust client: one task owns the socket and the client's KCP, performs the handshake
//! (learning the session cookie from the server's hello), sends each queued request as one
//! reliable message, and turns received messages and unreliable datagrams into server frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::io::{Arrived, PassOn, pass_on};
use bytes::{Bytes, BytesMut};
use group_core::kcp::envelope::{
    CHANNEL_RELIABLE, CHANNEL_UNRELIABLE, CONV, Envelope, KIND_DATA, KIND_DISCONNECT, KIND_HELLO,
    KIND_UNRELIABLE_DATA, wrap,
};
use group_core::kcp::handshake::is_server_hello;
use group_core::kcp::{Kcp, KcpConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::{CloseReason, CloseSlot};

/// The session's goodbye for a client dropped while its task runs: the task is aborted, not awaited,
/// and over UDP nothing else would tell the server, which would keep the session (and its place in its
/// groups) until `connectionTtl`. One unreliable disconnect, sent without waiting: if it is lost, the
/// server still ends the session by its TTL.
#[derive(Clone)]
pub(crate) struct Goodbye {
    socket: Arc<UdpSocket>,
    /// The session's cookie; 0 before the handshake and once the session has ended.
    cookie: Arc<AtomicU32>,
}

impl Goodbye {
    pub(crate) fn new(socket: Arc<UdpSocket>) -> Goodbye {
        Goodbye {
            socket,
            cookie: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Sends the disconnect if the session is open.
    pub(crate) fn say(&self) {
        let cookie = self.cookie.swap(0, Ordering::Relaxed);
        if cookie != 0 {
            let _ = self
                .socket
                .try_send(&wrap(CHANNEL_UNRELIABLE, cookie, &[KIND_DISCONNECT]));
        }
    }
}

/// The client's KCP: it gives a silent server as long as the server gives a silent client, the
/// default `connectionTtl` (10 s), so a node that stalls for a few seconds does not lose its clients.
fn client_kcp_config() -> KcpConfig {
    KcpConfig {
        dead_after_ms: 10_000,
        ..KcpConfig::default()
    }
}

/// Owns the socket and the KCP session; records why the session ended in `closed`.
pub(crate) async fn run(
    socket: Arc<UdpSocket>,
    requests: mpsc::Receiver<Bytes>,
    frames: mpsc::Sender<Arrived>,
    ready: oneshot::Sender<()>,
    closed: CloseSlot,
    goodbye: Goodbye,
) {
    let reason = exchange(&socket, requests, frames, ready, &goodbye.cookie).await;
    goodbye.cookie.store(0, Ordering::Relaxed); // ended: nothing left to say
    let _ = closed.set(reason);
}

/// Runs the KCP session until it ends, and says why. `session`: where the cookie goes once known.
async fn exchange(
    socket: &UdpSocket,
    mut requests: mpsc::Receiver<Bytes>,
    frames: mpsc::Sender<Arrived>,
    ready: oneshot::Sender<()>,
    session: &AtomicU32,
) -> CloseReason {
    let start = tokio::time::Instant::now();
    let now_ms = || u32::try_from(start.elapsed().as_millis() % (1 << 32)).unwrap_or(0);
    let mut kcp = Kcp::new(CONV, client_kcp_config());
    let mut cookie = 0u32;
    let mut ready = Some(ready);
    let mut buf = vec![0u8; 65_536];
    let _ = kcp.send(&[KIND_HELLO]);
    kcp.update(now_ms());
    loop {
        while let Some(datagram) = kcp.poll_transmit() {
            let _ = socket
                .send(&wrap(CHANNEL_RELIABLE, cookie, &datagram))
                .await;
        }
        if kcp.is_dead() {
            return CloseReason::Network("the server stopped acknowledging (KCP link dead)".into());
        }
        // Quiet: sleep until a datagram or a request arrives (see Kcp::needs_timer).
        let wait = if kcp.needs_timer() {
            kcp.check(now_ms()).wrapping_sub(now_ms()).min(1000)
        } else {
            60_000
        };
        tokio::select! {
            received = socket.recv(&mut buf) => {
                let len = match received {
                    Ok(len) => len,
                    Err(e) => return CloseReason::Network(e.to_string()),
                };
                let Some(Ok(envelope)) = buf.get(..len).map(Envelope::parse) else { continue };
                if cookie == 0 {
                    if !is_server_hello(&envelope) {
                        // Before the server's hello, a datagram to this address and port can only be
                        // an older session's (a client here before us, not yet replaced).
                        continue;
                    }
                    cookie = envelope.cookie; // the server's hello names the session
                    session.store(cookie, Ordering::Relaxed);
                } else if envelope.cookie != cookie {
                    continue;
                }
                if envelope.channel == CHANNEL_UNRELIABLE {
                    match envelope.body.split_first() {
                        Some((&KIND_DISCONNECT, _)) => return CloseReason::ServerClosed,
                        Some((&KIND_UNRELIABLE_DATA, frame)) => {
                            if let Err(reason) = forward(frame, &frames).await {
                                return reason;
                            }
                        }
                        _ => {}
                    }
                    continue;
                }
                if kcp.input(now_ms(), envelope.body).is_err() {
                    continue;
                }
                while let Some(message) = kcp.recv() {
                    match message.split_first() {
                        Some((&KIND_HELLO, _)) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                        }
                        Some((&KIND_DATA, payload)) => {
                            if let Err(reason) = forward(payload, &frames).await {
                                return reason;
                            }
                        }
                        _ => {}
                    }
                }
                kcp.update(now_ms());
            }
            request = requests.recv() => match request {
                Some(bytes) => {
                    let mut message = BytesMut::with_capacity(1 + bytes.len());
                    message.extend_from_slice(&[KIND_DATA]);
                    message.extend_from_slice(&bytes);
                    if let Err(e) = kcp.send(&message) {
                        return CloseReason::Protocol(format!("request not sendable over KCP: {e:?}"));
                    }
                    kcp.update(now_ms());
                    kcp.flush(now_ms());
                }
                None => {
                    let _ = socket.send(&wrap(CHANNEL_UNRELIABLE, cookie, &[KIND_DISCONNECT])).await;
                    return CloseReason::ServerClosed;
                }
            },
            () = tokio::time::sleep(Duration::from_millis(u64::from(wait))) => kcp.update(now_ms()),
        }
    }
}

/// Decodes whole frames and passes them on; an error when the client is gone or the server misbehaved.
async fn forward(payload: &[u8], frames: &mpsc::Sender<Arrived>) -> Result<(), CloseReason> {
    let mut buf = BytesMut::from(payload);
    match pass_on(&mut buf, frames).await {
        Ok(()) if buf.is_empty() => Ok(()),
        Ok(()) => Err(CloseReason::Protocol(
            "a message ended inside a frame".into(),
        )),
        // The client itself is gone: nobody will read a reason.
        Err(PassOn::Gone) => Err(CloseReason::ServerClosed),
        Err(PassOn::Bad(e)) => Err(CloseReason::Protocol(e)),
    }
}
