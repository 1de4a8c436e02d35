//! UDP with KCP, in the kcp2k-style envelope of `group_core::kcp::envelope`.
//!
//! The listener task owns the socket's receive side and routes datagrams by peer address, checking the
//! session cookie; it answers a client's opening datagram without keeping state and opens a session only
//! when the client echoes the cookie it was given (see `cookie`). Each session has an engine task that owns its `Kcp` (datagrams in, frames from the node
//! out, one timer) and a dispatch task that runs the same [`Connection`] logic as TCP and WebSocket
//! (tokens, hooks, handlers), so a slow hook never stalls KCP's acknowledgements.

mod cookie;
mod data;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cookie::CookieMinter;
use data::{DataMessages, take_frames};
use group_core::kcp::envelope::{
    CHANNEL_RELIABLE, CHANNEL_UNRELIABLE, CONV, ENVELOPE_LEN, Envelope, KIND_DATA, KIND_DISCONNECT,
    KIND_HELLO, KIND_PING, KIND_UNRELIABLE_DATA, wrap,
};
use group_core::kcp::handshake::{
    STATELESS_HELLO_LEN, can_open_session, is_opening, stateless_hello,
};
use group_core::kcp::{Kcp, KcpConfig};
use group_core::proto::{ClientFrame, FrameError, code, decode_client_frame};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::conn::Connection;
use crate::inbox::{TransportKind, WriterEnd};
use crate::listener::Listeners;
use crate::throttle::Throttle;

/// Datagrams queued for one session's engine; beyond this they are dropped (KCP recovers).
const SESSION_INBOX: usize = 256;
/// How long a closing session keeps retransmitting what it still has to say.
const LINGER: Duration = Duration::from_secs(2);
/// Queue entries (node turns) a session's engine takes into one KCP flush at most.
const ENTRIES_PER_FLUSH: usize = 64;

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

struct Session {
    cookie: u32,
    datagrams: mpsc::Sender<Bytes>,
    /// Tells this session from a later one at the same address, whose entry its end must not remove.
    serial: u64,
    /// The cookie in the hello last sent to this address for a new session (another client now at
    /// this session's address and port): the first datagram that carries it replaces this session.
    replacement: Option<u32>,
}

/// What the accept loop does with a datagram from an address that has a session.
enum ForSession {
    Deliver(mpsc::Sender<Bytes>),
    /// An opening from the session's address: answered with a hello under another cookie.
    Hello(u32),
    /// The echo of that cookie: the new client has the address now.
    Replace,
    Drop,
}

/// What the engine hands the dispatch task.
enum Inbound {
    Frame(ClientFrame),
    Oversized { ver: u8, cmd: u16, len: u32 },
    Malformed(&'static str),
}

/// Asks for a receive buffer of `bytes` (`server.udpReceiveBuffer`) on the socket every UDP client's
/// datagrams arrive on, and says once if the kernel gave less (it caps the size at
/// `net.core.rmem_max`).
pub(crate) fn size_receive_buffer(socket: &UdpSocket, bytes: usize) {
    let socket = socket2::SockRef::from(socket);
    // Linux reports twice what it granted (the other half is its own bookkeeping).
    let reported_per_granted = if cfg!(target_os = "linux") { 2 } else { 1 };
    let got = socket
        .set_recv_buffer_size(bytes)
        .and_then(|()| socket.recv_buffer_size())
        .map(|reported| reported / reported_per_granted);
    match got {
        Ok(got) if got >= bytes => {}
        Ok(got) => tracing::warn!(
            "UDP receive buffer is {got} bytes, not the {bytes} of server.udpReceiveBuffer: the \
             kernel caps it at net.core.rmem_max (raise that with sysctl), and under load a full \
             buffer drops datagrams, which KCP resends 30 ms or more later"
        ),
        Err(e) => tracing::warn!("UDP receive buffer not set ({e}); the system's default stays"),
    }
}

/// Receives datagrams until `stop` fires.
pub(crate) async fn accept_loop(socket: UdpSocket, listeners: Arc<Listeners>, kcp: KcpConfig) {
    let Some(minter) = CookieMinter::new() else {
        tracing::error!(
            "UDP listener stopped: the OS random source failed, so cookies cannot be made"
        );
        return;
    };
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut serial = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = tokio::select! {
            () = listeners.stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let Ok((len, peer)) = received else { continue };
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        let Ok(envelope) = Envelope::parse(datagram) else {
            continue;
        };
        let existing = sessions.lock().ok().and_then(|mut map| {
            let session = map.get_mut(&peer)?;
            let what = for_session(session, &envelope, peer, &minter);
            if matches!(what, ForSession::Replace) {
                // The old session's engine ends when its inbox closes, without a word to the address.
                map.remove(&peer);
            }
            Some(what)
        });
        let mut proven = false;
        match existing {
            Some(ForSession::Deliver(inbox)) => {
                let _ = inbox.try_send(Bytes::copy_from_slice(datagram));
                continue;
            }
            Some(ForSession::Hello(cookie)) => {
                answer_opening(&socket, peer, datagram, cookie, &kcp, &minter).await;
                continue;
            }
            Some(ForSession::Replace) => {
                tracing::debug!(%peer, "UDP session replaced by a new one from the same address");
                proven = true; // the cookie was the one sent to this address, however long ago
            }
            // A wrong cookie is a spoofed or stale datagram: dropped without a word.
            Some(ForSession::Drop) => continue,
            None => {}
        }
        if is_opening(&envelope) {
            // Nothing exists for this address until it echoes the cookie.
            answer_opening(&socket, peer, datagram, minter.mint(peer), &kcp, &minter).await;
            continue;
        }
        let proof = proven || (envelope.cookie != 0 && minter.check(peer, envelope.cookie));
        // A session's first datagram is KCP acknowledging only the hello (the client's acknowledgement
        // of it, its first request); an unreliable one with a good cookie, or one acknowledging more,
        // is a late one of a session already gone.
        if !proof || !can_open_session(&envelope) {
            continue; // neither an opening nor a proof of address: a stray or a guess
        }
        let permit = match listeners.admit() {
            Ok(permit) => permit,
            Err(why) => {
                static REFUSED: Throttle = Throttle::new();
                if let Some(more) = REFUSED.allow() {
                    tracing::warn!(%peer, "refusing UDP session: {why} (and {more} more since the last line)");
                }
                continue;
            }
        };
        let cookie = envelope.cookie;
        let (tx, rx) = mpsc::channel(SESSION_INBOX);
        let _ = tx.try_send(Bytes::copy_from_slice(datagram));
        serial += 1;
        if let Ok(mut map) = sessions.lock() {
            map.insert(
                peer,
                Session {
                    cookie,
                    datagrams: tx,
                    serial,
                    replacement: None,
                },
            );
        }
        let conn = listeners.next_conn();
        let shared = listeners.shared.clone();
        let (socket, sessions, kcp) = (socket.clone(), sessions.clone(), kcp.clone());
        let ours = serial;
        tokio::spawn(async move {
            let _permit = permit;
            serve(socket, peer, cookie, rx, conn, shared, kcp).await;
            if let Ok(mut map) = sessions.lock()
                && map.get(&peer).is_some_and(|session| session.serial == ours)
            {
                map.remove(&peer);
            }
        });
    }
}

/// Answers an opening datagram without state: one datagram, no longer than the one received (see
/// group_core::kcp::handshake).
async fn answer_opening(
    socket: &UdpSocket,
    peer: SocketAddr,
    opening: &[u8],
    cookie: u32,
    kcp: &KcpConfig,
    minter: &CookieMinter,
) {
    if opening.len() >= STATELESS_HELLO_LEN {
        let hello = stateless_hello(cookie, kcp.rcv_wnd, minter.now_ms());
        send(socket, peer, &hello).await;
    }
}

/// Routes a datagram from `peer`, which has `session`. Only the session's cookie reaches it. An opening
/// datagram from its address is answered with a hello under another cookie, and the session is replaced
/// only when a datagram carries that cookie back: a client at that address and port received the hello,
/// so the old session's client is gone from there. An opening alone changes nothing, so one with a
/// spoofed source address cannot end a session; nor can a stale datagram under an older cookie.
fn for_session(
    session: &mut Session,
    envelope: &Envelope<'_>,
    peer: SocketAddr,
    minter: &CookieMinter,
) -> ForSession {
    if envelope.cookie == session.cookie {
        ForSession::Deliver(session.datagrams.clone())
    } else if is_opening(envelope) {
        let cookie = minter.mint_other_than(peer, session.cookie);
        session.replacement = Some(cookie);
        ForSession::Hello(cookie)
    } else if session.replacement == Some(envelope.cookie) && can_open_session(envelope) {
        ForSession::Replace
    } else {
        ForSession::Drop
    }
}

async fn serve(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    cookie: u32,
    datagrams: mpsc::Receiver<Bytes>,
    conn: group_core::ConnId,
    shared: Arc<crate::conn::Shared>,
    kcp: KcpConfig,
) {
    // KCP's own send queue counts towards maxQueuedBytesPerConnection too: beyond it the session ends.
    let segments = shared.max_queued_bytes / kcp.mtu.max(1) + 1;
    let kcp = KcpConfig {
        max_send_queue: kcp.max_send_queue.min(segments),
        ..kcp
    };
    let _open = shared.stats.opened(TransportKind::Udp);
    let Ok((mut connection, end)) = Connection::open(conn, shared, None).await else {
        return;
    };
    let kill = end.kill.clone();
    let (inbound_tx, mut inbound) = mpsc::channel(64);
    let max_payload = connection.max_payload();
    let engine_kill = kill.clone();
    let engine = tokio::spawn(async move {
        engine(
            socket,
            peer,
            cookie,
            datagrams,
            end,
            inbound_tx,
            kcp,
            max_payload,
        )
        .await;
        engine_kill.cancel(); // whatever ended the engine (disconnect, dead link) ends the session
    });
    loop {
        let next = tokio::select! {
            () = kill.cancelled() => break,
            next = inbound.recv() => next,
        };
        let result = match next {
            Some(Inbound::Frame(frame)) => connection.dispatch(frame).await,
            Some(Inbound::Oversized { ver, cmd, len }) => connection.oversized(ver, cmd, len).await,
            Some(Inbound::Malformed(reason)) => {
                connection
                    .refuse_and_close(code::MALFORMED, reason.into())
                    .await
            }
            None => break,
        };
        if result.is_err() || connection.finished() {
            break;
        }
    }
    if !connection.finished() {
        connection.disconnected().await;
    }
    let _ = engine.await;
}

/// Owns the session's KCP: feeds it datagrams and the node's frames, runs its timer, sends its output.
#[allow(clippy::too_many_arguments)]
async fn engine(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    cookie: u32,
    mut datagrams: mpsc::Receiver<Bytes>,
    end: WriterEnd,
    inbound: mpsc::Sender<Inbound>,
    config: KcpConfig,
    max_payload: u32,
) {
    let WriterEnd {
        mut queue,
        kill,
        last_words,
        direct: _,
    } = end;
    let start = tokio::time::Instant::now();
    let now_ms = || u32::try_from(start.elapsed().as_millis() % (1 << 32)).unwrap_or(0);
    let mtu = config.mtu;
    // The handshake already happened, without state, in the accept loop.
    let mut kcp = Kcp::after_stateless_hello(CONV, config);
    let mut data = DataMessages::new(kcp.mss());
    let mut closing = false;
    let mut linger_until = None;
    loop {
        // A quiet session sleeps until a datagram or a frame arrives (see Kcp::needs_timer).
        let wait_ms = if kcp.needs_timer() {
            kcp.check(now_ms()).wrapping_sub(now_ms()).min(1000)
        } else {
            60_000
        };
        let wake = start + Duration::from_millis(u64::from(now_ms()) + u64::from(wait_ms));
        tokio::select! {
            biased;
            () = kill.cancelled(), if !closing => {
                // Slow consumer or shutdown: stop at once, saying why if the node said (one datagram).
                if let Some(notice) = last_words.get().filter(|n| ENVELOPE_LEN + 1 + n.len() <= mtu) {
                    let mut body = vec![KIND_UNRELIABLE_DATA];
                    body.extend_from_slice(notice);
                    send(&socket, peer, &wrap(CHANNEL_UNRELIABLE, cookie, &body)).await;
                }
                send(&socket, peer, &wrap(CHANNEL_UNRELIABLE, cookie, &[KIND_DISCONNECT])).await;
                return;
            }
            datagram = datagrams.recv() => {
                let Some(datagram) = datagram else { return };
                let Ok(envelope) = Envelope::parse(&datagram) else { continue };
                if envelope.channel == CHANNEL_UNRELIABLE {
                    match envelope.body.split_first() {
                        Some((&KIND_DISCONNECT, _)) => return,
                        Some((&KIND_UNRELIABLE_DATA, frame)) => deliver(frame, max_payload, &inbound).await,
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
                            let _ = kcp.send(&[KIND_HELLO]);
                        }
                        Some((&KIND_DATA, frames)) => deliver(frames, max_payload, &inbound).await,
                        Some((&KIND_PING, _)) | None => {}
                        Some(_) => {
                            let _ = inbound.send(Inbound::Malformed("unknown KCP message kind")).await;
                        }
                    }
                }
                kcp.update(now_ms());
            }
            outgoing = queue.recv(), if !closing => match outgoing {
                Some(first) => {
                    // What else is queued joins this flush (a few turns' worth at most), so that a
                    // busy member's frames fill segments and datagrams.
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some(outgoing) = next.take() {
                        let sent = take_frames(&outgoing, mtu, &mut kcp, &mut data, &socket, peer, cookie);
                        if sent.await.is_err() {
                            return; // the client is not keeping up: drop the session
                        }
                        taken += 1;
                        if taken < ENTRIES_PER_FLUSH {
                            next = queue.try_recv().ok();
                        }
                    }
                    if data.finish(&mut kcp).is_err() {
                        return;
                    }
                    kcp.flush(now_ms());
                }
                None => {
                    // The node closed the session: deliver what is queued, then say goodbye.
                    closing = true;
                    linger_until = Some(tokio::time::Instant::now() + LINGER);
                }
            },
            () = tokio::time::sleep_until(wake) => kcp.update(now_ms()),
        }
        while let Some(datagram) = kcp.poll_transmit() {
            send(&socket, peer, &wrap(CHANNEL_RELIABLE, cookie, &datagram)).await;
        }
        if kcp.is_dead() {
            tracing::debug!(%peer, "KCP link dead");
            // A client that was only stalled reads this when it wakes, and knows at once.
            let goodbye = wrap(CHANNEL_UNRELIABLE, cookie, &[KIND_DISCONNECT]);
            send(&socket, peer, &goodbye).await;
            return;
        }
        let drained = kcp.waiting() == 0;
        if closing && (drained || linger_until.is_some_and(|t| tokio::time::Instant::now() >= t)) {
            send(
                &socket,
                peer,
                &wrap(CHANNEL_UNRELIABLE, cookie, &[KIND_DISCONNECT]),
            )
            .await;
            kill.cancel();
            return;
        }
    }
}

/// Splits a data payload into frames for the dispatch task. A payload that ends inside a frame is a
/// protocol violation (the sender must put whole frames in each message).
async fn deliver(payload: &[u8], max_payload: u32, inbound: &mpsc::Sender<Inbound>) {
    let mut buf = BytesMut::from(payload);
    loop {
        let item = match decode_client_frame(&mut buf, max_payload) {
            Ok(Some(frame)) => Inbound::Frame(frame),
            Ok(None) if buf.is_empty() => return,
            Ok(None) => Inbound::Malformed("KCP message ended inside a frame"),
            Err(FrameError::TooLarge { ver, cmd, len, .. }) => Inbound::Oversized { ver, cmd, len },
            Err(_) => Inbound::Malformed("bad frame"),
        };
        let last = !matches!(item, Inbound::Frame(_));
        if inbound.send(item).await.is_err() || last {
            return;
        }
    }
}

async fn send(socket: &UdpSocket, peer: SocketAddr, datagram: &[u8]) {
    if let Err(e) = socket.send_to(datagram, peer).await {
        tracing::debug!(%peer, "UDP send failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The socket gets the size asked for. Asked below the system's default, so that it shows on any
    /// machine (a stock distribution's cap, `net.core.rmem_max`, is the default itself, so a bigger
    /// size could not show): the size reported drops to what was asked (twice it, on Linux).
    #[tokio::test]
    async fn the_receive_buffer_is_set_to_the_size_asked() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let reported = || socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        let before = reported();
        let asked = 64 << 10;
        assert!(before > 2 * asked, "the default is {before}");
        size_receive_buffer(&socket, asked);
        let got = reported();
        assert!(
            got >= asked && got < before,
            "asked {asked}, got {got} (was {before})"
        );
        // Beyond the kernel's cap: it gives less, and the server goes on.
        size_receive_buffer(&socket, 1 << 30);
        assert!(reported() >= got);
    }
}
