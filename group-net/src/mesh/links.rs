//! Mesh data links: one TCP connection per node pair.
//!
//! Wire format. Each side first sends an 11-byte hello: `"GRPM"`, the mesh protocol version
//! ([`MESH_VERSION`]), and its mesh address (4 bytes IPv4, 2 bytes port, big-endian). A node refuses a
//! peer of another version with a log line naming both versions, after sending its own hello so that the
//! peer can say the same. Then frames follow back to back: a 4-byte big-endian length, then the mesh
//! frame ([`group_core::cluster::mesh::encode`]).
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
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use group_core::Input;
use tokio_util::sync::CancellationToken;

use crate::inbox::{NodeInput, Stats};

/// Largest mesh frame accepted (a whole group's state can be large).
pub const MAX_MESH_FRAME: usize = 32 << 20;
/// Frames queued for one peer before new ones are dropped.
const PEER_QUEUE: usize = 16 * 1024;
const MAGIC: &[u8; 4] = b"GRPM";
const HELLO_LEN: usize = 11;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the node with the higher address waits to be dialled before it dials.
const HIGHER_DIAL_DELAY: Duration = Duration::from_secs(1);

/// The links to every peer this node has sent to or been dialled by.
pub(crate) struct Links {
    own: NodeAddr,
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
    streams: mpsc::Sender<TcpStream>,
}

impl Links {
    pub fn new(
        own: NodeAddr,
        inputs: mpsc::Sender<NodeInput>,
        refused: mpsc::Sender<NodeAddr>,
        stats: Arc<Stats>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Links {
            own,
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
        if self.peer(to).frames.try_send(frame).is_err() {
            self.stats.mesh_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Opens the link to a peer membership reported, so that it is ready before the first message.
    pub fn connect(self: &Arc<Self>, to: NodeAddr) {
        if to != self.own {
            self.peer(to);
        }
    }

    fn peer(self: &Arc<Self>, addr: NodeAddr) -> Peer {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .entry(addr)
            .or_insert_with(|| {
                let (frames, frames_rx) = mpsc::channel(PEER_QUEUE);
                let (streams, streams_rx) = mpsc::channel(4);
                tokio::spawn(run_peer(self.clone(), addr, frames_rx, streams_rx));
                Peer { frames, streams }
            })
            .clone()
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

    async fn greet_incoming(self: Arc<Self>, mut stream: TcpStream, from: std::net::SocketAddr) {
        let mut buf = [0u8; HELLO_LEN];
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf)).await;
        if !matches!(read, Ok(Ok(_))) {
            tracing::debug!(%from, "mesh connection closed before its hello");
            return;
        }
        let parsed = parse_hello(&buf);
        let _ = stream.write_all(&hello(self.own)).await;
        match parsed {
            Ok(peer) => {
                let _ = self.peer(peer).streams.send(stream).await;
            }
            Err(e) => {
                static REFUSED: Throttle = Throttle::new();
                if let Some(more) = REFUSED.allow() {
                    tracing::error!(%from, "refusing mesh peer: {e} (and {more} more since the last line)");
                }
            }
        }
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
}

fn hello(own: NodeAddr) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4] = MESH_VERSION;
    out[5..9].copy_from_slice(&own.0.ip().octets());
    out[9..].copy_from_slice(&own.0.port().to_be_bytes());
    out
}

fn parse_hello(buf: &[u8; HELLO_LEN]) -> Result<NodeAddr, HelloError> {
    let [m0, m1, m2, m3, version, a, b, c, d, p0, p1] = *buf;
    if [m0, m1, m2, m3] != *MAGIC {
        return Err(HelloError::NotMesh);
    }
    if version != MESH_VERSION {
        return Err(HelloError::Version { got: version });
    }
    let ip = std::net::Ipv4Addr::new(a, b, c, d);
    Ok(NodeAddr(SocketAddrV4::new(
        ip,
        u16::from_be_bytes([p0, p1]),
    )))
}

async fn dial(own: NodeAddr, peer: NodeAddr) -> io::Result<TcpStream> {
    let timeout = |e| io::Error::new(io::ErrorKind::TimedOut, e);
    let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(peer.0))
        .await
        .map_err(|_| timeout("connect timed out"))??;
    stream.write_all(&hello(own)).await?;
    let mut buf = [0u8; HELLO_LEN];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf))
        .await
        .map_err(|_| timeout("no hello from the peer"))??;
    match parse_hello(&buf) {
        Ok(addr) if addr == peer => Ok(stream),
        Ok(addr) => Err(io::Error::other(format!("it introduced itself as {addr}"))),
        Err(e) => {
            tracing::error!(%peer, "refusing mesh peer: {e}");
            Err(io::Error::other(e))
        }
    }
}

async fn run_peer(
    links: Arc<Links>,
    peer: NodeAddr,
    mut frames: mpsc::Receiver<Bytes>,
    mut streams: mpsc::Receiver<TcpStream>,
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
    let mut next: Option<TcpStream> = None;
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
                    dial(links.own, peer).await
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
    tracing::info!(%peer, "the mesh port of the peer refuses connections");
    let _ = links.refused.try_send(peer);
    true
}

/// Carries frames both ways until the connection fails or a newer one arrives (returned).
async fn serve(
    links: &Arc<Links>,
    peer: NodeAddr,
    stream: TcpStream,
    frames: &mut mpsc::Receiver<Bytes>,
    streams: &mut mpsc::Receiver<TcpStream>,
) -> Option<TcpStream> {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
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
async fn write_batch(
    writer: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
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

async fn read_frames(links: Arc<Links>, peer: NodeAddr, reader: OwnedReadHalf) {
    let mut reader = BufReader::new(reader);
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
    fn hello_round_trips_and_refuses_other_versions() {
        let own = NodeAddr(SocketAddrV4::new(
            std::net::Ipv4Addr::new(10, 0, 0, 7),
            8100,
        ));
        let mut buf = hello(own);
        assert_eq!(parse_hello(&buf).unwrap(), own);
        buf[4] = MESH_VERSION + 1;
        let e = parse_hello(&buf).unwrap_err().to_string();
        assert!(e.contains(&format!("version {}", MESH_VERSION + 1)), "{e}");
        buf[0] = b'X';
        assert!(matches!(parse_hello(&buf), Err(HelloError::NotMesh)));
    }
}
