//! Mesh data links: one TCP connection per node pair.
//!
//! Wire format. Each side first sends a 27-byte hello: `"GRPM"`, the mesh protocol version
//! ([`MESH_VERSION`]), its mesh address (4 bytes IPv4, 2 bytes port, big-endian) and a 16-byte random
//! nonce. A node refuses a peer of another version with a log line naming both versions, after sending its
//! own hello so that the peer can say the same. Then each side proves it knows the cluster's
//! `mesh.secret`: it sends HMAC-SHA256(secret, "GRPM proof" | the other's nonce | its own address), 32
//! bytes, the dialler first; a wrong proof ends the connection before any mesh message is read. Without
//! a secret (allowed only when the mesh listens on loopback) the key is empty, and an accepted peer must
//! then claim the IP its connection comes from. A peer never claims this node's own address. Then frames follow
//! back to back: a 4-byte big-endian length, then the mesh frame ([`group_core::cluster::mesh::encode`]).
//!
//! Links open when membership reports a peer (or when the first message for it is queued). The node with
//! the lower address dials at once and redials with exponential backoff (50 ms to 5 s); the other waits a
//! second to be dialled before it dials itself, which covers a peer that has not heard of it yet. A newer
//! connection from the same peer replaces the older one.
//!
//! A link's state is news for the core and for membership. When a link breaks, the core hears
//! [`Input::LinkDown`] at once (the peer is suspect: no relay goes through it, no join waits on it) and
//! [`Input::LinkUp`] when a link is made again. And this side probes the peer's mesh port right away: a
//! connection *refused* means no process listens there any more (a killed or crashed process; a busy or
//! frozen one still accepts), which membership takes as proof of death without waiting out its
//! suspicion timeout.

use crate::throttle::Throttle;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use group_core::NodeAddr;
use group_core::cluster::mesh::{self, MESH_VERSION, MeshMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::{MeshTls, Stream};
use tokio::sync::mpsc;

use group_core::Input;
use tokio_util::sync::CancellationToken;

use crate::inbox::{NodeInput, PeerCounters, Stats};

/// Largest mesh frame accepted (a whole group's state can be large).
pub const MAX_MESH_FRAME: usize = 32 << 20;
/// Frames queued for one peer before new ones are dropped.
const PEER_QUEUE: usize = 16 * 1024;
const MAGIC: &[u8; 4] = b"GRPM";
const NONCE_LEN: usize = 16;
const HELLO_LEN: usize = 11 + NONCE_LEN;
const PROOF_LEN: usize = 32;
/// Peers this node keeps links to, at most: a table nobody can grow without bound.
const MAX_PEERS: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the node with the higher address waits to be dialled before it dials.
const HIGHER_DIAL_DELAY: Duration = Duration::from_secs(1);

/// The links to every peer this node has sent to or been dialled by.
pub(crate) struct Links {
    own: NodeAddr,
    /// The key of the handshake's proofs (`mesh.secret`; empty without one).
    secret: Vec<u8>,
    /// `mesh.tls`: links run inside mutual TLS.
    tls: Option<MeshTls>,
    peers: Mutex<HashMap<NodeAddr, Peer>>,
    inputs: mpsc::Sender<NodeInput>,
    /// Peers whose mesh port refused a connection after their link broke, for membership.
    refused: mpsc::Sender<NodeAddr>,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Peer {
    frames: mpsc::Sender<Bytes>,
    streams: mpsc::Sender<Stream>,
    counters: Arc<PeerCounters>,
}

impl Links {
    pub fn new(
        own: NodeAddr,
        secret: Option<&str>,
        tls: Option<MeshTls>,
        inputs: mpsc::Sender<NodeInput>,
        refused: mpsc::Sender<NodeAddr>,
        stats: Arc<Stats>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Links {
            own,
            secret: secret.map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
            tls,
            peers: Mutex::new(HashMap::new()),
            inputs,
            refused,
            stats,
            stop,
        })
    }

    /// Queues a message for a peer; never waits. Dropped (and counted) when the peer's queue is full.
    pub fn send(self: &Arc<Self>, to: NodeAddr, message: &MeshMessage) {
        let frame = Bytes::from(mesh::encode(message));
        if frame.len() > MAX_MESH_FRAME {
            tracing::error!(%to, len = frame.len(), "mesh message too large to send; dropped");
            return;
        }
        let peer = self.peer(to);
        let sent = peer
            .as_ref()
            .is_some_and(|p| p.frames.try_send(frame).is_ok());
        let counters = peer.as_ref().map(|p| &p.counters);
        if sent {
            if let Some(counters) = counters {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.stats.mesh_dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(counters) = counters {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Opens the link to a peer membership reported, so that it is ready before the first message.
    pub fn connect(self: &Arc<Self>, to: NodeAddr) {
        let _ = self.peer(to);
    }

    /// The link to `addr`, made on first use; `None` for this node itself (never dialled) and once the
    /// table holds [`MAX_PEERS`] peers.
    fn peer(self: &Arc<Self>, addr: NodeAddr) -> Option<Peer> {
        if addr == self.own {
            return None;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = peers.get(&addr) {
            return Some(peer.clone());
        }
        if peers.len() >= MAX_PEERS {
            static FULL: Throttle = Throttle::new();
            if let Some(more) = FULL.allow() {
                tracing::error!(%addr, "mesh peer table full ({MAX_PEERS}): not linking (and {more} more)");
            }
            return None;
        }
        let (frames, frames_rx) = mpsc::channel(PEER_QUEUE);
        let (streams, streams_rx) = mpsc::channel(4);
        tokio::spawn(run_peer(self.clone(), addr, frames_rx, streams_rx));
        let counters = self.stats.mesh_peer(addr);
        let peer = Peer {
            frames,
            streams,
            counters,
        };
        peers.insert(addr, peer.clone());
        Some(peer)
    }

    /// Accepts mesh connections until the server stops.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                () = self.stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, from)) => {
                    tokio::spawn(self.clone().greet_incoming(stream, from));
                }
                Err(e) => {
                    tracing::warn!("mesh accept failed: {e}");
                    tokio::time::sleep(MIN_BACKOFF).await;
                }
            }
        }
    }

    async fn greet_incoming(self: Arc<Self>, tcp: TcpStream, from: std::net::SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let greeting = async {
            let stream = match &self.tls {
                None => Stream::Plain(tcp),
                Some(tls) => tls
                    .accept(tcp)
                    .await
                    .map_err(|e| HelloError::Tls(e.to_string()))?,
            };
            self.clone().answer(stream, from).await
        };
        let greeted = tokio::time::timeout(HANDSHAKE_TIMEOUT, greeting).await;
        let refusal = match greeted {
            Ok(Ok((peer, stream))) => {
                if let Some(link) = self.peer(peer) {
                    let _ = link.streams.send(stream).await;
                }
                return;
            }
            Ok(Err(refusal)) => refusal,
            Err(_) => HelloError::Timeout,
        };
        if matches!(refusal, HelloError::Closed | HelloError::Timeout) {
            // A peer probing whether this node lives (see `probe`) connects and leaves: not a refusal.
            return tracing::debug!(%from, "mesh connection ended during the handshake: {refusal}");
        }
        static REFUSED: Throttle = Throttle::new();
        if let Some(more) = REFUSED.allow() {
            tracing::error!(%from, "refusing mesh peer: {refusal} (and {more} more since the last line)");
        }
    }

    /// The accepting side of the handshake: the peer's hello, ours, its proof, ours.
    async fn answer(
        self: Arc<Self>,
        mut stream: Stream,
        from: std::net::SocketAddr,
    ) -> Result<(NodeAddr, Stream), HelloError> {
        let mut buf = [0u8; HELLO_LEN];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|_| HelloError::Closed)?;
        let parsed = parse_hello(&buf);
        let nonce = fresh_nonce()?;
        stream
            .write_all(&hello(self.own, &nonce))
            .await
            .map_err(|_| HelloError::Closed)?;
        let (peer, their_nonce) = parsed?;
        if peer == self.own {
            return Err(HelloError::Claimed(format!(
                "this node's own address {peer}"
            )));
        }
        // Without a secret (loopback only) nothing else ties the claimed address to the connection. With
        // one, the proof does, and the source IP may differ from the advertised one (NAT, containers).
        if self.secret.is_empty() && std::net::IpAddr::V4(*peer.0.ip()) != from.ip() {
            return Err(HelloError::Claimed(format!("{peer} from {}", from.ip())));
        }
        let mut proof = [0u8; PROOF_LEN];
        stream
            .read_exact(&mut proof)
            .await
            .map_err(|_| HelloError::Closed)?;
        if !verify(&self.secret, &nonce, peer, &proof) {
            return Err(HelloError::Proof);
        }
        let ours = prove(&self.secret, &their_nonce, self.own);
        stream
            .write_all(&ours)
            .await
            .map_err(|_| HelloError::Closed)?;
        Ok((peer, stream))
    }
}

/// Why a mesh peer was refused.
#[derive(Debug, thiserror::Error)]
enum HelloError {
    #[error("it does not speak the mesh protocol (bad magic)")]
    NotMesh,
    #[error(
        "it speaks mesh protocol version {got}, this node speaks {MESH_VERSION}; run the same release on every node"
    )]
    Version { got: u8 },
    #[error("its proof of the cluster secret is wrong: check mesh.secret on both nodes")]
    Proof,
    #[error("it claims a mesh address it cannot have: {0}")]
    Claimed(String),
    #[error("the connection closed during the handshake")]
    Closed,
    #[error("the handshake took too long")]
    Timeout,
    #[error("the OS random source failed")]
    Random,
    #[error("its TLS handshake failed (check mesh.tls on both nodes): {0}")]
    Tls(String),
}

fn fresh_nonce() -> Result<[u8; NONCE_LEN], HelloError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| HelloError::Random)?;
    Ok(nonce)
}

fn hello(own: NodeAddr, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_LEN);
    out.extend_from_slice(MAGIC);
    out.push(MESH_VERSION);
    out.extend_from_slice(&own.0.ip().octets());
    out.extend_from_slice(&own.0.port().to_be_bytes());
    out.extend_from_slice(nonce);
    debug_assert_eq!(out.len(), HELLO_LEN);
    out
}

fn parse_hello(buf: &[u8; HELLO_LEN]) -> Result<(NodeAddr, [u8; NONCE_LEN]), HelloError> {
    let (head, nonce) = buf.split_at(11);
    let [m0, m1, m2, m3, version, a, b, c, d, p0, p1] =
        <[u8; 11]>::try_from(head).map_err(|_| HelloError::NotMesh)?;
    if [m0, m1, m2, m3] != *MAGIC {
        return Err(HelloError::NotMesh);
    }
    if version != MESH_VERSION {
        return Err(HelloError::Version { got: version });
    }
    let ip = std::net::Ipv4Addr::new(a, b, c, d);
    let addr = NodeAddr(SocketAddrV4::new(ip, u16::from_be_bytes([p0, p1])));
    let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| HelloError::NotMesh)?;
    Ok((addr, nonce))
}

/// HMAC-SHA256(secret, "GRPM proof" | nonce | sender's address), ready to finish or verify: proves the
/// sender knows the secret, bound to this connection (the receiver's fresh nonce) and to the address the
/// sender claims.
fn proof_mac(
    secret: &[u8],
    nonce: &[u8; NONCE_LEN],
    sender: NodeAddr,
) -> Option<hmac::Hmac<sha2::Sha256>> {
    use hmac::Mac;
    // HMAC takes keys of any length: this never fails.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).ok()?;
    mac.update(b"GRPM proof");
    mac.update(nonce);
    mac.update(&sender.0.ip().octets());
    mac.update(&sender.0.port().to_be_bytes());
    Some(mac)
}

fn prove(secret: &[u8], nonce: &[u8; NONCE_LEN], sender: NodeAddr) -> [u8; PROOF_LEN] {
    use hmac::Mac;
    proof_mac(secret, nonce, sender)
        .map_or([0; PROOF_LEN], |mac| mac.finalize().into_bytes().into())
}

/// Checks a proof in constant time.
fn verify(
    secret: &[u8],
    nonce: &[u8; NONCE_LEN],
    sender: NodeAddr,
    proof: &[u8; PROOF_LEN],
) -> bool {
    use hmac::Mac;
    proof_mac(secret, nonce, sender).is_some_and(|mac| mac.verify_slice(proof).is_ok())
}

/// The dialling side of the handshake: our hello, the peer's, our proof, the peer's.
async fn dial(links: &Links, peer: NodeAddr) -> io::Result<Stream> {
    let timeout = |e| io::Error::new(io::ErrorKind::TimedOut, e);
    let refused = |e: HelloError| {
        static REFUSED: Throttle = Throttle::new();
        if let Some(more) = REFUSED.allow() {
            tracing::error!(%peer, "refusing mesh peer: {e} (and {more} more since the last line)");
        }
        io::Error::other(e.to_string())
    };
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(peer.0))
        .await
        .map_err(|_| timeout("connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let handshake = async {
        let mut stream = match &links.tls {
            None => Stream::Plain(tcp),
            Some(tls) => tls
                .connect(tcp)
                .await
                .map_err(|e| refused(HelloError::Tls(e.to_string())))?,
        };
        let nonce = fresh_nonce().map_err(refused)?;
        stream.write_all(&hello(links.own, &nonce)).await?;
        let mut buf = [0u8; HELLO_LEN];
        stream.read_exact(&mut buf).await?;
        let (addr, their_nonce) = parse_hello(&buf).map_err(refused)?;
        if addr != peer {
            return Err(io::Error::other(format!("it introduced itself as {addr}")));
        }
        stream
            .write_all(&prove(&links.secret, &their_nonce, links.own))
            .await?;
        let mut proof = [0u8; PROOF_LEN];
        stream.read_exact(&mut proof).await?;
        if !verify(&links.secret, &nonce, peer, &proof) {
            return Err(refused(HelloError::Proof));
        }
        Ok(stream)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| timeout("no handshake from the peer"))?
}

async fn run_peer(
    links: Arc<Links>,
    peer: NodeAddr,
    mut frames: mpsc::Receiver<Bytes>,
    mut streams: mpsc::Receiver<Stream>,
) {
    // The higher node gives the lower one a head start every time a link must be (re)made, so that the
    // two do not dial each other at once and keep replacing each other's connection.
    let head_start = if links.own < peer {
        Duration::ZERO
    } else {
        HIGHER_DIAL_DELAY
    };
    let mut delay = head_start;
    let mut backoff = MIN_BACKOFF;
    let mut next: Option<Stream> = None;
    loop {
        let stream = match next.take() {
            Some(stream) => stream,
            None => tokio::select! {
                biased;
                () = links.stop.cancelled() => return,
                stream = streams.recv() => match stream {
                    Some(stream) => stream,
                    None => return,
                },
                dialled = async {
                    tokio::time::sleep(delay).await;
                    dial(&links, peer).await
                } => match dialled {
                    Ok(stream) => stream,
                    Err(e) => {
                        delay = Duration::ZERO;
                        refused(&links, peer, &e);
                        tracing::debug!(%peer, "mesh dial failed: {e}; retrying in {backoff:?}");
                        tokio::select! {
                            () = links.stop.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            },
        };
        backoff = MIN_BACKOFF;
        tracing::info!(%peer, "mesh link up");
        let _ = links
            .inputs
            .send(NodeInput::core(Input::LinkUp(peer)))
            .await;
        next = serve(&links, peer, stream, &mut frames, &mut streams).await;
        if next.is_none() {
            tracing::info!(%peer, "mesh link down");
            let _ = links
                .inputs
                .send(NodeInput::core(Input::LinkDown(peer)))
                .await;
            tokio::spawn(probe(links.clone(), peer));
        }
        delay = head_start;
    }
}

/// How long a probe of a peer's mesh port may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// When to probe after a link broke: a process being killed may still have its listening socket open
/// for a moment after its connections were reset.
const PROBES_AFTER: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
];

/// Connects to the mesh port of a peer whose link just broke, a few times, and reports the first
/// refusal to membership: no process listens there. Connections that open (or time out: a partition, a
/// frozen host) prove nothing either way and are left to membership's probes; they are closed without a
/// hello.
async fn probe(links: Arc<Links>, peer: NodeAddr) {
    for after in PROBES_AFTER {
        let attempt = tokio::select! {
            () = links.stop.cancelled() => return,
            attempt = async {
                tokio::time::sleep(after).await;
                tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(peer.0)).await
            } => attempt,
        };
        if let Ok(Err(e)) = attempt
            && refused(&links, peer, &e)
        {
            return;
        }
    }
}

/// Reports `peer` to membership if `error` is a refused connection; whether it was.
fn refused(links: &Links, peer: NodeAddr, error: &io::Error) -> bool {
    if error.kind() != io::ErrorKind::ConnectionRefused {
        return false;
    }
    static REFUSED: Throttle = Throttle::new();
    if let Some(more) = REFUSED.allow() {
        tracing::info!(%peer, "the mesh port of the peer refuses connections (and {more} more since the last line)");
    }
    let _ = links.refused.try_send(peer);
    true
}

/// Carries frames both ways until the connection fails or a newer one arrives (returned).
async fn serve(
    links: &Arc<Links>,
    peer: NodeAddr,
    stream: Stream,
    frames: &mut mpsc::Receiver<Bytes>,
    streams: &mut mpsc::Receiver<Stream>,
) -> Option<Stream> {
    match stream {
        Stream::Plain(tcp) => {
            let (reader, writer) = tcp.into_split();
            carry(links, peer, reader, writer, frames, streams).await
        }
        tls => {
            let (reader, writer) = tokio::io::split(tls);
            carry(links, peer, reader, writer, frames, streams).await
        }
    }
}

async fn carry<R, W>(
    links: &Arc<Links>,
    peer: NodeAddr,
    reader: R,
    writer: W,
    frames: &mut mpsc::Receiver<Bytes>,
    streams: &mut mpsc::Receiver<Stream>,
) -> Option<Stream>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let mut reading = tokio::spawn(read_frames(links.clone(), peer, reader));
    let mut writer = BufWriter::new(writer);
    let outcome = loop {
        tokio::select! {
            biased;
            () = links.stop.cancelled() => break None,
            _ = &mut reading => break None,
            newer = streams.recv() => break newer,
            frame = frames.recv() => {
                let Some(frame) = frame else { break None };
                if write_batch(&mut writer, frame, frames).await.is_err() {
                    break None;
                }
            }
        }
    };
    reading.abort();
    outcome
}

/// Writes one frame and whatever else is queued (up to a bound), then flushes.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    first: Bytes,
    frames: &mut mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    let mut frame = first;
    for _ in 0..256 {
        let len = u32::try_from(frame.len()).map_err(io::Error::other)?;
        writer.write_all(&len.to_be_bytes()).await?;
        writer.write_all(&frame).await?;
        match frames.try_recv() {
            Ok(more) => frame = more,
            Err(_) => break,
        }
    }
    writer.flush().await
}

async fn read_frames<R: AsyncRead + Unpin>(links: Arc<Links>, peer: NodeAddr, reader: R) {
    let mut reader = BufReader::new(reader);
    let counters = links.stats.mesh_peer(peer);
    loop {
        let Ok(len) = reader.read_u32().await else {
            return;
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_MESH_FRAME {
            tracing::warn!(%peer, len, "mesh frame over {MAX_MESH_FRAME} bytes; closing the link");
            return;
        }
        let mut frame = vec![0u8; len];
        if reader.read_exact(&mut frame).await.is_err() {
            return;
        }
        match mesh::decode(&frame) {
            Ok(message) => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                let input = NodeInput::core(Input::Mesh {
                    from: peer,
                    message,
                });
                if links.inputs.send(input).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(%peer, "bad mesh frame: {e}; closing the link");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_the_secret_the_nonce_and_the_address() {
        let a = NodeAddr(SocketAddrV4::new(
            std::net::Ipv4Addr::new(10, 0, 0, 7),
            8100,
        ));
        let b = NodeAddr(SocketAddrV4::new(
            std::net::Ipv4Addr::new(10, 0, 0, 8),
            8100,
        ));
        let nonce = [7u8; NONCE_LEN];
        let proof = prove(b"cluster secret 0123", &nonce, a);
        assert!(verify(b"cluster secret 0123", &nonce, a, &proof));
        assert!(
            !verify(b"another secret 01234", &nonce, a, &proof),
            "another secret"
        );
        assert!(
            !verify(b"cluster secret 0123", &[8u8; NONCE_LEN], a, &proof),
            "another nonce"
        );
        assert!(
            !verify(b"cluster secret 0123", &nonce, b, &proof),
            "another address"
        );
    }

    #[test]
    fn hello_round_trips_and_refuses_other_versions() {
        let own = NodeAddr(SocketAddrV4::new(
            std::net::Ipv4Addr::new(10, 0, 0, 7),
            8100,
        ));
        let mut buf: [u8; HELLO_LEN] = hello(own, &[3; NONCE_LEN]).try_into().unwrap();
        assert_eq!(parse_hello(&buf).unwrap(), (own, [3; NONCE_LEN]));
        buf[4] = MESH_VERSION + 1;
        let e = parse_hello(&buf).unwrap_err().to_string();
        assert!(e.contains(&format!("version {}", MESH_VERSION + 1)), "{e}");
        buf[0] = b'X';
        assert!(matches!(parse_hello(&buf), Err(HelloError::NotMesh)));
    }
}
