//! What the rest of the driver sends the node task, and what it answers: the one module every other one
//! may import. It imports nothing of the driver's own, so the modules form layers, not a circle:
//! `inbox` <- `mesh`, `conn` <- transports <- `node_task` <- `server`.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use group_core::{
    ConnId, ConnectError, Event, GroupId, Handled, Input, JoinError, Node, NodeAddr, Outcome, Sid,
    Uid,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::budget::{Charge, ConnBudget, InboundCharge};
use crate::direct::Direct;
use crate::histogram::Histogram;

/// Frames on their way to a connection's writer: what one turn of the node task produced for it (a
/// turn handles every input that is ready), so that each member gets one hand-over, one wake-up and one
/// vectored write per turn however many broadcasts the turn carried.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// In order; never empty.
    pub frames: Frames,
    /// UDP members: send on the reliable channel (a turn's frames of each kind go in separate batches).
    #[allow(dead_code)]
    pub reliable: bool,
    /// The frames' bytes against the connection's and the server's budgets, until it is dropped.
    pub charge: Charge,
}

/// A turn's frames for one connection: one frame (the usual case when the server is not busy) is held
/// inline, so handing a member its frames allocates nothing more than the frame itself.
#[derive(Debug)]
pub(crate) enum Frames {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Frames {
    #[cfg(test)]
    pub fn push(&mut self, frame: Bytes) {
        self.push_from(frame, &mut Vec::new());
    }

    /// Adds a frame, taking the vector a second frame needs from `spares` when it has one.
    pub fn push_from(&mut self, frame: Bytes, spares: &mut Vec<Vec<Bytes>>) {
        match self {
            Frames::One(first) => {
                // Grown once per turn, not at 2 and 4.
                let mut frames = spares.pop().unwrap_or_else(|| Vec::with_capacity(8));
                frames.push(std::mem::take(first));
                frames.push(frame);
                *self = Frames::Many(frames);
            }
            Frames::Many(frames) => frames.push(frame),
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Drops the first `bytes` bytes (written already): frames written whole go, a frame written in part
    /// keeps its rest. True when something is left.
    pub fn consume(&mut self, mut bytes: usize) -> bool {
        match self {
            Frames::One(frame) => {
                frame.advance(bytes.min(frame.len()));
                !frame.is_empty()
            }
            Frames::Many(frames) => {
                let mut whole = 0;
                for frame in frames.iter_mut() {
                    if bytes < frame.len() {
                        frame.advance(bytes);
                        break;
                    }
                    bytes -= frame.len();
                    whole += 1;
                }
                frames.drain(..whole);
                !frames.is_empty()
            }
        }
    }

    pub fn as_slice(&self) -> &[Bytes] {
        match self {
            Frames::One(frame) => std::slice::from_ref(frame),
            Frames::Many(frames) => frames,
        }
    }
}

impl IntoIterator for Frames {
    type Item = Bytes;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Bytes>, std::vec::IntoIter<Bytes>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Frames::One(frame) => Some(frame).into_iter().chain(Vec::new()),
            Frames::Many(frames) => None.into_iter().chain(frames),
        }
    }
}

/// A map by connection ID, hashed cheaply (see [`ConnIdHasher`]): the node task's and the flushers'
/// maps are looked up once per member per turn.
pub(crate) type ConnMap<V> = HashMap<ConnId, V, BuildHasherDefault<ConnIdHasher>>;

/// Hashes connection IDs (driver-assigned counters, not chosen by peers) with one multiplication: the
/// writers' map is looked up once per frame sent, and SipHash showed in profiles of fan-out.
#[derive(Default)]
pub(crate) struct ConnIdHasher(u64);

impl std::hash::Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The closing notice a slow consumer's writer tries to send last (15 CLOSED_SLOW_CONSUMER).
pub(crate) fn slow_consumer_notice() -> Bytes {
    use group_core::proto::{Status, VER_CONTROL, cmd, code, encode_error_payload};
    encode_error_payload(
        VER_CONTROL,
        cmd::CLOSING,
        Status::Bad,
        code::CLOSED_SLOW_CONSUMER,
        None,
        "too slow: the outbound queue is full",
    )
}

/// Emptied frame vectors on their way back from the flushers to the node task. The node fills a vector
/// per member per busy turn and a flusher empties it on another thread: allocated on one thread and
/// freed on the other, they missed the allocator's per-thread caches every time (malloc, realloc and
/// free were about 9% of the server's CPU with 100 members flat out).
#[derive(Clone, Default)]
pub(crate) struct SpareVecs(Arc<Mutex<Vec<Vec<Bytes>>>>);

/// Vectors kept for reuse at most, and the largest capacity kept: a bound on the memory they hold.
const MAX_SPARE_VECS: usize = 4096;
const MAX_SPARE_CAPACITY: usize = 1024;

impl SpareVecs {
    /// The flusher's side, once per round: hands back emptied vectors (the rest are dropped).
    pub fn give(&self, emptied: &mut Vec<Vec<Bytes>>) {
        if let Ok(mut spares) = self.0.lock() {
            let room = MAX_SPARE_VECS.saturating_sub(spares.len());
            let kept = emptied
                .drain(..)
                .filter(|v| (1..=MAX_SPARE_CAPACITY).contains(&v.capacity()) && v.is_empty());
            spares.extend(kept.take(room));
        }
        emptied.clear();
    }

    /// The node's side, when its own stock has run out: takes every vector handed back.
    pub fn take_into(&self, stock: &mut Vec<Vec<Bytes>>) {
        if let Ok(mut spares) = self.0.lock() {
            stock.append(&mut spares);
        }
    }
}

/// The node task's side of the spare vectors: the ones it holds, refilled from the flushers' returns
/// when it runs out (none come back without flushers, so it then never looks).
pub(crate) struct FrameStock {
    stock: Vec<Vec<Bytes>>,
    returns: Option<SpareVecs>,
}

impl FrameStock {
    pub fn new(returns: Option<SpareVecs>) -> Self {
        FrameStock {
            stock: Vec::new(),
            returns,
        }
    }

    /// Adds `frame` to `frames`, with a spare vector if it needs one.
    pub fn push(&mut self, frames: &mut Frames, frame: Bytes) {
        if let (Frames::One(_), true, Some(returns)) =
            (&frames, self.stock.is_empty(), &self.returns)
        {
            returns.take_into(&mut self.stock);
        }
        frames.push_from(frame, &mut self.stock);
    }
}

/// The frame a connection's writer sends last when the node cuts the connection (a slow consumer's
/// closing notice): set once by the node task before it fires the kill switch, read by the writer after.
/// Best effort: a peer that is not reading at all never gets it.
pub(crate) type LastWords = Arc<std::sync::OnceLock<Bytes>>;

/// Cuts a slow consumer's connection, in the order its writers rely on: marked cut (a plain TCP
/// connection: no more write-through, from the node or a flusher), then the closing notice set as its
/// last words, then the kill switch. The node task and the flushers both cut this way.
pub(crate) fn cut_slow_consumer(
    direct: Option<&Direct>,
    last_words: &LastWords,
    stop: &CancellationToken,
) {
    if let Some(direct) = direct {
        direct.mark_cut();
    }
    let _ = last_words.set(slow_consumer_notice());
    stop.cancel();
}

/// How long a cut connection's writer tries to get its last words out before it closes anyway.
pub(crate) const LAST_WORDS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection as the node task sees it: where its frames go and how to stop it.
pub(crate) struct ConnWriter {
    pub queue: mpsc::Sender<Outgoing>,
    /// Stops the connection's reader and writer at once (a slow consumer, shutdown).
    pub stop: CancellationToken,
    pub last_words: LastWords,
    /// Bytes queued for the writer (`limits.maxQueuedBytesPerConnection`).
    pub budget: Arc<ConnBudget>,
    /// Plain TCP: the socket, for the node to write through when the writer is idle.
    pub direct: Option<Direct>,
    /// Plain TCP on a writer thread (`server.writerThreads`): the thread, whose flusher the node hands
    /// this connection's frames to instead of its writer's queue (see `flusher`).
    pub flusher: Option<usize>,
}

/// A connection as its writer sees it: the frames to send, the kill switch, and what to say last if
/// the node cut the connection.
pub(crate) struct WriterEnd {
    pub queue: mpsc::Receiver<Outgoing>,
    pub kill: CancellationToken,
    pub last_words: LastWords,
    /// Plain TCP: where the writer counts the entries it wrote whole, so the node knows when it may
    /// write through.
    pub direct: Option<Direct>,
}

/// What the node task answers.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// What the core said about a call at once.
    Handled(Handled),
    /// What became of a client's request; `session` is the connection's session after it (set by
    /// Hello; `None` for a request that had to wait for another node).
    Request {
        outcome: Outcome,
        session: Option<(Uid, Sid)>,
    },
    /// A server-API join that had to ask another node finished.
    Joined(Result<(), JoinError>),
}

/// Receives the node task's answer, on the node task: it must return at once.
pub(crate) type Answerer = Box<dyn FnOnce(Answer) + Send>;

/// An answerer that hands the answer to an awaiting caller.
pub(crate) fn answer_to(reply: oneshot::Sender<Answer>) -> Answerer {
    Box::new(move |answer| {
        let _ = reply.send(answer);
    })
}

/// Starts a group's tick callback on a task of its own; called on the node task. False when the
/// previous tick's callback is still running: ticks of one group never overlap, a late one is skipped.
pub(crate) type TickRunner = Arc<dyn Fn(GroupId) -> bool + Send + Sync>;

/// Server code's view of the core's events (see `ServerBuilder::on_event`).
pub type EventFn = Arc<dyn Fn(&Event) + Send + Sync>;

/// A message for the node task.
pub(crate) enum NodeInput {
    /// A connection was accepted: the node tracks it and its writer, or refuses it.
    Connect {
        conn: ConnId,
        writer: ConnWriter,
        reply: oneshot::Sender<Result<(), ConnectError>>,
    },
    /// An input for the core, answered when `reply` is set (a pending join: when it finishes). A client
    /// frame's `charge` holds its bytes against the budgets until the node has handled it.
    Core {
        input: Input,
        reply: Option<Answerer>,
        charge: Option<InboundCharge>,
    },
    /// A tick timer with the callback that runs when it fires (`None`: stop it).
    SetTick {
        group: GroupId,
        interval: Option<std::time::Duration>,
        callback: Option<TickRunner>,
        reply: Answerer,
    },
    /// A question answered from the core's getters; it never changes the node.
    Read(Box<dyn FnOnce(&Node) + Send>),
}

impl NodeInput {
    /// A core input nobody waits for.
    pub fn core(input: Input) -> Self {
        NodeInput::Core {
            input,
            reply: None,
            charge: None,
        }
    }
}

/// Counters the server exposes.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted by a listener.
    pub accepted: AtomicU64,
    /// Connections refused because `maxConnections` were open.
    pub refused: AtomicU64,
    /// Connections disconnected because their outbound queue was full.
    pub slow_consumers: AtomicU64,
    /// Mesh messages dropped because a peer's queue was full (it is unreachable or too slow).
    pub mesh_dropped: AtomicU64,
    /// Connections open now, by transport: TCP, WebSocket, UDP.
    pub open: [AtomicU64; 3],
    /// Frames handed to connections (responses and pushes): to their writers, their flushers, or written
    /// through. A node turn's broadcasts to the same members are one frame for a plain TCP member.
    pub frames_sent: AtomicU64,
    /// Of those, frames the node task wrote to plain TCP sockets itself, whole (see `direct`).
    pub frames_written_through: AtomicU64,
    /// Of those, frames a writer thread's flusher wrote whole in its round (see `flusher`).
    pub frames_flushed: AtomicU64,
    /// Nanoseconds the node task spent handling inputs and handing their frames over (not waiting; and
    /// on quiet turns, not handing over: that is mostly writing through, which the writers take back
    /// when turns get busy). Its rate is the share of one core the node task uses: every group's
    /// fan-out on this node goes through that one task, so at 1.0 the node has reached its limit.
    pub node_busy_nanos: AtomicU64,
    /// Broadcast requests received from clients.
    pub broadcasts: AtomicU64,
    /// Ticks skipped because the group's previous tick callback was still running.
    pub ticks_skipped: AtomicU64,
    /// Discard or rejoin messages sent empty because their callback missed its deadline.
    pub messages_late: AtomicU64,
    /// How long remote joins took, from their start on this node to the owner's answer.
    pub(crate) remote_join_seconds: Histogram,
    /// How long a writer thread's flusher took over a fan-out: from the node handing it over to its
    /// last member on that thread written, or queued to the member's writer.
    pub(crate) fan_out_seconds: Histogram,
    /// Mesh messages by peer, for the peers the mesh has links to (bounded by its peer table).
    pub(crate) mesh_peers: Mutex<BTreeMap<NodeAddr, Arc<PeerCounters>>>,
}

/// One mesh peer's message counts.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    /// Messages queued for the peer's link.
    pub sent: AtomicU64,
    /// Messages read from the peer and handed to the node.
    pub received: AtomicU64,
    /// Messages dropped because the peer's queue was full.
    pub dropped: AtomicU64,
}

/// Which `Stats::open` slot a transport counts in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TransportKind {
    Tcp = 0,
    Ws = 1,
    Udp = 2,
}

impl Stats {
    /// The counters of mesh peer `addr`, made on first use.
    pub(crate) fn mesh_peer(&self, addr: NodeAddr) -> Arc<PeerCounters> {
        let mut peers = self.mesh_peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(addr).or_default().clone()
    }

    /// Counts a connection open until the returned guard is dropped.
    pub(crate) fn opened(self: &Arc<Self>, transport: TransportKind) -> OpenConnection {
        let slot = transport as usize;
        if let Some(open) = self.open.get(slot) {
            open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        OpenConnection {
            stats: self.clone(),
            slot,
        }
    }
}

/// One open connection in `Stats::open`, until dropped.
pub(crate) struct OpenConnection {
    stats: Arc<Stats>,
    slot: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(open) = self.stats.open.get(self.slot) {
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_keep_their_order_one_or_many() {
        let mut frames = Frames::One(Bytes::from_static(b"a"));
        assert_eq!(frames.len(), 1);
        frames.push(Bytes::from_static(b"b"));
        frames.push(Bytes::from_static(b"c"));
        assert_eq!(frames.as_slice().len(), 3);
        let all: Vec<Bytes> = frames.into_iter().collect();
        assert_eq!(all, [&b"a"[..], b"b", b"c"]);
        let one: Vec<Bytes> = Frames::One(Bytes::from_static(b"x")).into_iter().collect();
        assert_eq!(one, [&b"x"[..]]);
    }

    /// Emptied vectors come back to the node for its next second frames; the ones too big, not
    /// empty, or beyond the count bound are dropped instead of kept.
    #[test]
    fn spare_vectors_are_reused_within_their_bounds() {
        let spares = SpareVecs::default();
        let mut emptied: Vec<Vec<Bytes>> = vec![
            Vec::with_capacity(16),
            Vec::with_capacity(MAX_SPARE_CAPACITY + 1),
            Vec::new(),
            vec![Bytes::from_static(b"still full")],
        ];
        spares.give(&mut emptied);
        assert!(emptied.is_empty());
        let mut stock = Vec::new();
        spares.take_into(&mut stock);
        assert_eq!(stock.iter().map(Vec::capacity).collect::<Vec<_>>(), [16]);
        let mut frames = Frames::One(Bytes::from_static(b"a"));
        frames.push_from(Bytes::from_static(b"b"), &mut stock);
        assert!(stock.is_empty(), "the second frame took the spare");
        assert!(matches!(&frames, Frames::Many(v) if v.capacity() == 16));
        let mut many: Vec<Vec<Bytes>> = (0..MAX_SPARE_VECS + 10)
            .map(|_| Vec::with_capacity(8))
            .collect();
        spares.give(&mut many);
        spares.take_into(&mut stock);
        assert_eq!(stock.len(), MAX_SPARE_VECS);
    }

    /// The node's stock refills from the flushers' returns only when a second frame needs a vector and
    /// it has none; without flushers it allocates as before.
    #[test]
    fn the_node_takes_returned_vectors_when_a_second_frame_needs_one() {
        let returns = SpareVecs::default();
        returns.give(&mut vec![Vec::with_capacity(32)]);
        let mut stock = FrameStock::new(Some(returns.clone()));
        let mut frames = Frames::One(Bytes::from_static(b"a"));
        stock.push(&mut frames, Bytes::from_static(b"b"));
        stock.push(&mut frames, Bytes::from_static(b"c"));
        assert!(matches!(&frames, Frames::Many(v) if v.capacity() == 32 && v.len() == 3));
        let mut left = Vec::new();
        returns.take_into(&mut left);
        assert!(left.is_empty(), "the returned vector was taken");
        let mut alone = FrameStock::new(None);
        let mut frames = Frames::One(Bytes::from_static(b"a"));
        alone.push(&mut frames, Bytes::from_static(b"b"));
        assert!(matches!(&frames, Frames::Many(v) if v.capacity() == 8));
    }

    #[test]
    fn consuming_written_bytes_keeps_the_rest_of_a_frame_in_part() {
        let mut frames = Frames::Many(vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"de"),
            Bytes::from_static(b"fgh"),
        ]);
        assert!(frames.consume(4));
        assert_eq!(frames.as_slice(), [&b"e"[..], b"fgh"]);
        assert!(frames.consume(1));
        assert_eq!(frames.as_slice(), [&b"fgh"[..]]);
        assert!(!frames.consume(3));
        let mut one = Frames::One(Bytes::from_static(b"xyz"));
        assert!(one.consume(2));
        assert_eq!(one.as_slice(), [&b"z"[..]]);
        assert!(!one.consume(1));
    }
}
