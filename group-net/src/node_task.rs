//! The task that owns the [`Node`]: every input goes through its inbox, every output leaves from here.
//!
//! One task, one core value, one timer (re-armed only when the core's deadline changes). It has no policy
//! of its own: what to answer is decided in the core, and this task only moves bytes and answers. Frames
//! go to each connection's bounded writer queue with `try_send`: a connection whose queue is full is a
//! slow consumer, and it is disconnected and counted instead of being waited for, so it never delays
//! anyone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use group_core::{
    Call, ConnId, Event, GroupId, Handled, Input, Instant, JoinStatus, MeshTransmit, Node, Outcome,
    Sink, Transmit, Uid,
};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use crate::budget::{ConnBudget, ServerBudget};
use crate::direct::Direct;
use crate::fan_out::{Run, Runs};
use crate::flusher::{FanOut, Flush, FlusherEnd, Route};
use crate::inbox::{
    Answer, Answerer, ConnMap, ConnWriter, EventFn, FrameStock, Frames, NodeInput, Outgoing,
    SpareVecs, Stats, TickRunner, cut_slow_consumer,
};
use crate::mesh::Links;
use crate::run_split::RunSplit;
use crate::throttle::Throttle;

/// The node and the driver's side of its outputs.
pub(crate) struct NodeTask {
    node: Node,
    start: TokioInstant,
    /// The node shares one thread with the connections' readers (a runtime of one worker): it lets
    /// them run before each turn, so that a turn takes every input they had ready.
    shares_a_thread: bool,
    io: Io,
}

/// Where the core's outputs go: the connections' writers, the mesh links, the waiting callers.
struct Io {
    writers: ConnMap<ConnWriter>,
    /// This turn's frames per connection, handed to the writers when the turn ends (`Io::flush`).
    pending: ConnMap<Pending>,
    /// Their bytes: they count against the budgets before they are charged at the hand-over.
    pending_bytes: usize,
    ticks: HashMap<GroupId, TickRunner>,
    /// Callers waiting for a join that asked another node, by the core's op. Bounded by the core's
    /// bound on pending remote joins: every entry ends with the op's `JoinCompleted`.
    waiters: HashMap<u64, Answerer>,
    links: Option<Arc<Links>>,
    event_sink: Option<EventFn>,
    stats: Arc<Stats>,
    limits: OutboundLimits,
    /// Budgets of connections cut for holding too much whose writers have not yet let go of their
    /// frames: what is about to be freed, so that one excess does not cut several connections.
    dying: Vec<Arc<ConnBudget>>,
    /// Set for the end of a quiet turn: `hand_over` may write through (see [`WRITE_THROUGH_INPUTS`]).
    write_through: bool,
    /// The writer threads' flushers (`server.writerThreads`), by thread.
    flushers: Vec<FlusherEnd>,
    /// The last big fan-out's members by writer thread (see `run_split`).
    split: RunSplit,
    /// This turn's messages for each flusher, sent every [`FLUSH_EARLY`] connections and when the turn
    /// ends.
    to_flush: Vec<Vec<Flush>>,
    /// Vectors for the turn's frames, reused from what the flushers emptied.
    stock: FrameStock,
    /// The turn's fan-outs not yet queued (`fan_out`): queued when a different one begins, and at the
    /// turn's end.
    runs: Runs,
    /// Connections that could not take a run's frames (cut, or gone): the node task disconnects them in
    /// the core, as the core does for a refused transmit.
    refused: Vec<ConnId>,
}

/// The byte bounds on what the node queues for connections.
pub(crate) struct OutboundLimits {
    /// `limits.maxBufferedBytes`, shared with the readers.
    pub server: Arc<ServerBudget>,
    /// `limits.maxQueuedBytesPerConnection`.
    pub per_connection: usize,
}

/// A connection's frames of this turn, not yet handed to its writer. Charged against the budgets once,
/// at the hand-over: the budgets' counters are shared with every writer thread, and one update per turn
/// instead of per frame keeps them off the fan-out's path.
struct Pending {
    frames: Frames,
    reliable: bool,
    bytes: usize,
    /// What the connection's writer held when the turn's first frame for it came. The writer only
    /// drains meanwhile, so checking the bound against it errs on the safe side, and the turn's further
    /// frames need no lookup of the writer.
    queued: usize,
}

/// Inputs one turn of the node task handles at most before it hands the turn's frames to the writers.
const TURN_INPUTS: usize = 256;

/// A turn that took at most this many inputs writes through to idle plain-TCP connections (see
/// `direct`); a busier turn hands its frames to the writers, which then gather several turns into one
/// write. Measured flat out (1,000 members, one sender with 32 in flight): writing through on every turn
/// cost 17% of the deliveries a second, because each turn's small write replaced the writers' larger
/// ones. At a fixed rate a turn takes one broadcast, and writing through saved a third of the CPU.
const WRITE_THROUGH_INPUTS: usize = 1;

/// A quiet turn writes through only if it touches at most this many connections; a bigger fan-out goes
/// to the writers. The node writes one socket after another (about 8 us each on the 2-core VM), so a
/// quiet broadcast to 1,000 members held the node, and every other group's inputs, for 8 ms; the
/// writers write on all the runtime's workers at once. Measured at 100 msg/s to 1,000 members: p99
/// 24 ms instead of 35 ms (redis 19-28 ms), for 15% more CPU per delivery (docs/benchmarks/FANOUT-LOG.md).
const WRITE_THROUGH_CONNECTIONS: usize = 64;

/// A big turn's frames go to a flusher this many connections at a time, not all at the end of the
/// turn: the flusher writes the first members while the node hands over the rest.
const FLUSH_EARLY: usize = 64;

/// Takes a flusher's message out of `turn`, leaving room for the next (the usual size: a message grows
/// to 64 entries, one reallocation at each doubling otherwise).
fn next_message(turn: &mut Vec<Flush>) -> Vec<Flush> {
    std::mem::replace(turn, Vec::with_capacity(FLUSH_EARLY))
}

/// Cut connections remembered in `Io::dying` at most (beyond it, more may be cut than needed).
const MAX_DYING: usize = 1024;

impl NodeTask {
    pub fn new(
        node: Node,
        links: Option<Arc<Links>>,
        event_sink: Option<EventFn>,
        stats: Arc<Stats>,
        limits: OutboundLimits,
        flushers: Vec<FlusherEnd>,
        spares: SpareVecs,
    ) -> Self {
        NodeTask {
            node,
            start: TokioInstant::now(),
            shares_a_thread: false,
            io: Io {
                writers: HashMap::default(),
                pending: HashMap::default(),
                pending_bytes: 0,
                ticks: HashMap::new(),
                waiters: HashMap::new(),
                links,
                event_sink,
                stats,
                limits,
                dying: Vec::new(),
                write_through: false,
                to_flush: flushers.iter().map(|_| Vec::new()).collect(),
                stock: FrameStock::new((!flushers.is_empty()).then_some(spares)),
                split: RunSplit::new(flushers.len()),
                flushers,
                runs: Runs::default(),
                refused: Vec::new(),
            },
        }
    }

    /// Counts the core's time from `start`: the instant read beside the wall clock that became the
    /// node's `clock_origin_ns`, so that origin plus core time is the wall clock.
    pub fn clock_from(mut self, start: TokioInstant) -> Self {
        self.start = start;
        self
    }

    /// Set when the server's runtime runs every task on one thread (`writer_pool::single_threaded`).
    ///
    /// Why: woken by a reader's input, the node task runs next on that thread (tokio's LIFO slot),
    /// before the other readers whose sockets were ready at the same time. Each turn then took one
    /// input, small enough to be written through, so every delivery was a write of its own: with 1,000
    /// members in 100 groups all sending at 20 msg/s, one worker spent 2.2-2.8x the CPU of one that yields
    /// once before its turn and takes the readers' inputs together (docs/benchmarks/FANOUT-LOG.md).
    pub fn sharing_a_thread(mut self, shares: bool) -> Self {
        self.shares_a_thread = shares;
        self
    }

    /// The core's notion of now: nanoseconds since `start`.
    fn now(&self) -> Instant {
        let nanos = TokioInstant::now()
            .saturating_duration_since(self.start)
            .as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Feeds one core input and drains what it produced.
    fn handle(&mut self, input: Input) -> Handled {
        let now = self.now();
        let handled = self.node.handle(input, now);
        let _deadline = self.node.drain(now, &mut self.io);
        handled
    }

    /// Queues the turn's open runs, then disconnects in the core each connection that refused its
    /// frames, and queues what that produced (the leave announcements) as well.
    fn settle(&mut self) {
        self.io.settle_runs();
        while let Some(conn) = self.io.refused.pop() {
            if self.node.is_connected(conn) {
                let _done = self.handle(Input::Disconnect(conn));
                self.io.settle_runs();
            }
        }
    }

    fn apply(&mut self, message: NodeInput) {
        match message {
            NodeInput::Connect {
                conn,
                writer,
                reply,
            } => {
                let result = match self.handle(Input::Connect(conn)) {
                    Handled::Connect(result) => result,
                    other => {
                        tracing::error!(?other, "the core answered Connect with another answer");
                        Err(group_core::ConnectError::DuplicateConnection)
                    }
                };
                if result.is_ok() {
                    self.io.open_writer(conn, writer);
                }
                let _ = reply.send(result);
            }
            NodeInput::Core {
                input,
                reply,
                charge,
            } => {
                self.core(input, reply);
                drop(charge); // the frame was handled: its bytes are the node's now, or gone
            }
            NodeInput::SetTick {
                group,
                interval,
                callback,
                reply,
            } => {
                let handled = self.handle(Input::Call(Call::SetTick { group, interval }));
                if handled == Handled::Tick(Ok(())) {
                    match callback {
                        Some(callback) => self.io.ticks.insert(group, callback),
                        None => self.io.ticks.remove(&group),
                    };
                }
                reply(Answer::Handled(handled));
            }
            NodeInput::Read(read) => read(&self.node),
        }
    }

    fn core(&mut self, input: Input, reply: Option<Answerer>) {
        if let (Input::NodeUp(node), Some(links)) = (&input, &self.io.links) {
            links.connect(*node);
        }
        if let Input::Mesh { from, message } = &input {
            tracing::trace!(%from, ?message, "mesh in");
        }
        let conn = match &input {
            Input::Disconnect(conn) => {
                self.io.drop_pending(*conn);
                self.io.remove_writer(*conn);
                None
            }
            Input::Request { conn, .. } | Input::Frame { conn, .. } => Some(*conn),
            _ => None,
        };
        let handled = self.handle(input);
        let Some(reply) = reply else {
            return;
        };
        match handled {
            Handled::Request(Outcome::Pending { op })
            | Handled::Join(Ok(JoinStatus::Pending(op))) => {
                self.io.waiters.insert(op, reply);
            }
            Handled::Request(outcome) => {
                let session = conn
                    .and_then(|c| self.node.session_of(c))
                    .map(|(uid, sid)| (Uid::from(uid), sid));
                reply(Answer::Request { outcome, session });
            }
            handled => reply(Answer::Handled(handled)),
        }
    }
}

impl Io {
    /// Tracks a connection's writer; one on a writer thread is announced to its thread's flusher.
    fn open_writer(&mut self, conn: ConnId, writer: ConnWriter) {
        if let (Some(thread), Some(direct)) = (writer.flusher, &writer.direct) {
            let route = Route {
                queue: writer.queue.clone(),
                direct: direct.clone(),
                stop: writer.stop.clone(),
                last_words: writer.last_words.clone(),
                budget: writer.budget.clone(),
            };
            if let Some(turn) = self.to_flush.get_mut(thread) {
                turn.push(Flush::Open { conn, route });
            }
        }
        self.writers.insert(conn, writer);
        self.split.forget();
    }

    /// Lets go of a connection's writer (its queue closes once the flusher lets go too): it writes what
    /// it was handed, then closes the socket.
    fn remove_writer(&mut self, conn: ConnId) -> Option<ConnWriter> {
        let writer = self.writers.remove(&conn)?;
        self.split.forget();
        if let Some(turn) = writer.flusher.and_then(|t| self.to_flush.get_mut(t)) {
            turn.push(Flush::Close(conn));
        }
        Some(writer)
    }

    /// Sends each flusher this turn's messages.
    fn send_to_flushers(&mut self) {
        for (turn, flusher) in self.to_flush.iter_mut().zip(&self.flushers) {
            if !turn.is_empty() {
                // A flusher is gone only when the server stops: what it would have written goes.
                let _ = flusher.sender.send(next_message(turn));
            }
        }
    }

    /// Cuts a connection that holds too much (a slow consumer): its writer tries to say why, then closes;
    /// its reader stops, and the core discards the session.
    fn cut(&mut self, conn: ConnId, why: &'static str) {
        self.drop_pending(conn);
        let Some(writer) = self.remove_writer(conn) else {
            return;
        };
        self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        static CUT: Throttle = Throttle::new();
        if let Some(more) = CUT.allow() {
            tracing::warn!(
                conn = conn.0,
                "slow consumer: {why}, disconnecting (and {more} more since the last line)"
            );
        }
        cut_slow_consumer(writer.direct.as_ref(), &writer.last_words, &writer.stop);
        self.dying.retain(|budget| budget.queued() > 0);
        if self.dying.len() < MAX_DYING {
            self.dying.push(writer.budget);
        }
    }

    /// True if `bytes` more would exceed `maxBufferedBytes`, not counting what cut connections are
    /// about to free.
    fn over_server_budget(&mut self, bytes: usize) -> bool {
        let server = &self.limits.server;
        let used = server.used() + self.pending_bytes;
        if used + bytes <= server.limit() {
            return false;
        }
        self.dying.retain(|budget| budget.queued() > 0);
        let freeing: usize = self.dying.iter().map(|budget| budget.queued()).sum();
        used.saturating_sub(freeing) + bytes > server.limit()
    }

    /// Sends a frame that does not fit a budget as things stand: cuts this connection (its own bound),
    /// or the server's largest holder (the server's bound), and sends if this one survived.
    fn transmit_over_budget(&mut self, transmit: Transmit, over_connection: bool) -> bool {
        let conn = transmit.conn;
        let bytes = transmit.frame.len();
        if over_connection {
            self.cut(conn, "more than limits.maxQueuedBytesPerConnection queued");
            return false;
        }
        if self.over_server_budget(bytes) {
            // The connection holding the most goes first; it may be this one.
            let victim = self.largest_holder().unwrap_or(conn);
            self.cut(
                victim,
                "limits.maxBufferedBytes reached and this connection held the most",
            );
            if victim == conn {
                return false;
            }
        }
        if !self.writers.contains_key(&conn) {
            return false;
        }
        self.queue(transmit)
    }

    /// Adds a frame to this turn's batch for its connection.
    fn queue(&mut self, transmit: Transmit) -> bool {
        let conn = transmit.conn;
        let bytes = transmit.frame.len();
        self.pending_bytes += bytes;
        if let Some(batch) = self.pending.get_mut(&conn) {
            if batch.reliable == transmit.reliable {
                self.stock.push(&mut batch.frames, transmit.frame);
                batch.bytes += bytes;
                return true;
            }
            // A UDP member's frames change channel: what came before goes first.
            if let Some(batch) = self.pending.remove(&conn) {
                self.hand_over(conn, batch);
            }
        }
        let queued = self.writers.get(&conn).map_or(0, |w| w.budget.queued());
        let batch = Pending {
            frames: Frames::One(transmit.frame),
            reliable: transmit.reliable,
            bytes,
            queued,
        };
        self.pending.insert(conn, batch);
        true
    }

    /// Queues the runs still open: the turn ended, or something else needs its pending frames.
    fn settle_runs(&mut self) {
        if self.runs.is_empty() {
            return;
        }
        for run in self.runs.finish().into_iter().flatten() {
            self.queue_run(run);
        }
    }

    /// Queues a run for each of its members: one frame (the run's frames back to back) for a plain TCP
    /// member, the frames one by one for the others (a WebSocket message or a datagram is one frame).
    /// A member that cannot take them is refused.
    fn queue_run(&mut self, run: Run) {
        let joined = if run.frames.len() > 1 {
            run.joined()
        } else {
            None
        };
        if run.conns.len() > WRITE_THROUGH_CONNECTIONS && !self.flushers.is_empty() {
            let frame = joined.as_ref().or(run.frames.first()).cloned();
            if let Some(frame) = frame
                && self.fan_out_to_flushers(&run.conns, frame)
            {
                let others = self.split.others().to_vec();
                self.queue_members(&others, &run, joined.as_ref());
                self.runs.recycle(run);
                return;
            }
        }
        self.queue_members(&run.conns, &run, joined.as_ref());
        self.runs.recycle(run);
    }

    /// Queues a run's frames for `conns` one member at a time.
    fn queue_members(&mut self, conns: &[ConnId], run: &Run, joined: Option<&Bytes>) {
        for &conn in conns {
            let plain_tcp = self.writers.get(&conn).is_some_and(|w| w.direct.is_some());
            let frames = match joined {
                Some(joined) if plain_tcp => std::slice::from_ref(joined),
                _ => run.frames.as_slice(),
            };
            let taken = frames.iter().all(|frame| {
                let frame = frame.clone();
                self.queue_frame(Transmit {
                    conn,
                    frame,
                    reliable: run.reliable,
                })
            });
            if !taken {
                self.refused.push(conn);
            }
        }
    }

    /// Hands a big fan-out's members on writer threads to their flushers, one message per thread
    /// (see `run_split`); the caller queues the others ([`RunSplit::others`]). False, with nothing
    /// handed over, when its bytes would exceed `maxBufferedBytes`: then every member is queued one
    /// by one, where the budget's cuts are made.
    fn fan_out_to_flushers(&mut self, conns: &[ConnId], frame: Bytes) -> bool {
        self.split.split(conns, &self.writers);
        let threads = 0..self.flushers.len();
        let members: usize = threads
            .clone()
            .filter_map(|t| self.split.thread(t))
            .map(|c| c.len())
            .sum();
        if members == 0 || self.over_server_budget(frame.len() * members) {
            return false;
        }
        self.hand_over_pending_to_flushers();
        for thread in threads {
            let (Some(conns), Some(turn), Some(flusher)) = (
                self.split.thread(thread).filter(|c| !c.is_empty()),
                self.to_flush.get_mut(thread),
                self.flushers.get_mut(thread),
            ) else {
                continue;
            };
            let charge = self.limits.server.charge(frame.len() * conns.len());
            let conns = conns.clone();
            turn.push(Flush::FanOut(FanOut {
                frame: frame.clone(),
                conns,
                charge,
                handed_at: std::time::Instant::now(),
            }));
            flusher.fan_outs_sent += 1;
            // Sent now: the flusher writes the first members while the node goes on.
            let _ = flusher.sender.send(next_message(turn));
        }
        let sent = &self.stats.frames_sent;
        sent.fetch_add(members as u64, Ordering::Relaxed);
        true
    }

    /// Hands every connection its frames of this turn: one queue entry (and one wake-up) each.
    fn flush(&mut self) {
        self.settle_runs();
        self.hand_over_pending();
        self.send_to_flushers();
    }

    /// Hands over every connection's frames queued so far this turn.
    fn hand_over_pending(&mut self) {
        // Drained through a spare map (nothing refills `pending` meanwhile), so its capacity stays for the
        // next turn.
        let mut pending = std::mem::take(&mut self.pending);
        for (conn, batch) in pending.drain() {
            self.hand_over(conn, batch);
        }
        self.pending = pending;
    }

    /// Hands over the frames queued so far this turn for connections on writer threads, so that they
    /// reach the flushers before a fan-out that may include them; the others' stay for the turn's end.
    fn hand_over_pending_to_flushers(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let writers = &self.writers;
        let on_flusher =
            |conn: &ConnId, _: &mut Pending| writers.get(conn).is_some_and(|w| w.flusher.is_some());
        for (conn, batch) in pending.extract_if(on_flusher).collect::<Vec<_>>() {
            self.hand_over(conn, batch);
        }
        self.pending = pending;
    }

    /// Forgets a connection's frames of this turn (it was cut, or it is gone).
    fn drop_pending(&mut self, conn: ConnId) {
        if let Some(batch) = self.pending.remove(&conn) {
            self.pending_bytes -= batch.bytes;
        }
    }

    /// Hands a batch taken out of `pending` to its connection. A plain TCP connection whose writer has
    /// nothing in flight gets it written through at once (see `direct`); otherwise, or for what the
    /// socket did not take, it is charged and queued for the writer.
    fn hand_over(&mut self, conn: ConnId, batch: Pending) {
        self.pending_bytes -= batch.bytes;
        let Some(writer) = self.writers.get(&conn) else {
            return;
        };
        let count = batch.frames.len() as u64;
        let mut frames = batch.frames;
        let mut bytes = batch.bytes;
        let direct = writer.direct.as_ref();
        // A flusher still working on a fan-out may hold a frame for this connection (see
        // `FlushProgress`); checked before the in-flight count.
        let flusher_quiet = || {
            let flusher = writer.flusher.and_then(|t| self.flushers.get(t));
            flusher.is_none_or(FlusherEnd::quiet)
        };
        let may_write = |direct: &&Direct| self.write_through && flusher_quiet() && direct.idle();
        if let Some(direct) = direct.filter(may_write) {
            let written = direct.write(frames.as_slice());
            bytes -= written;
            let left = frames.consume(written);
            let unwritten = if left { frames.len() as u64 } else { 0 };
            let through = &self.stats.frames_written_through;
            through.fetch_add(count - unwritten, Ordering::Relaxed);
            if !left {
                self.stats.frames_sent.fetch_add(count, Ordering::Relaxed);
                return;
            }
        }
        let outgoing = Outgoing {
            frames,
            reliable: batch.reliable,
            charge: writer.budget.charge(bytes),
        };
        // Counted before the writer can see it: it takes the entry off the count once written.
        if let Some(direct) = direct {
            direct.handed();
        }
        if let (Some(thread), Some(_)) = (writer.flusher, direct)
            && let Some(turn) = self.to_flush.get_mut(thread)
        {
            turn.push(Flush::Frames { conn, outgoing });
            self.stats.frames_sent.fetch_add(count, Ordering::Relaxed);
            if turn.len() >= FLUSH_EARLY
                && let Some(flusher) = self.flushers.get(thread)
            {
                let _ = flusher.sender.send(next_message(turn));
            }
            return;
        }
        let sent = writer.queue.try_send(outgoing);
        if let (Err(_), Some(direct)) = (&sent, direct) {
            direct.unhanded();
        }
        match sent {
            Ok(()) => {
                self.stats.frames_sent.fetch_add(count, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut(conn, "outbound queue full (outboundQueue turns of frames)");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.remove_writer(conn);
            }
        }
    }

    /// Adds a frame to this turn's batch for its connection, within the byte bounds. False when the
    /// connection is gone or was cut.
    fn queue_frame(&mut self, transmit: Transmit) -> bool {
        let conn = transmit.conn;
        let bytes = transmit.frame.len();
        // The usual case when busy: the connection has frames of this turn on the same channel and
        // room under both bounds. One lookup per frame (a pending entry exists only while its writer
        // does: cuts and disconnects drop it).
        let server = &self.limits.server;
        let server_room = server.used() + self.pending_bytes + bytes <= server.limit();
        if let Some(batch) = self.pending.get_mut(&conn)
            && server_room
            && batch.reliable == transmit.reliable
            && batch.queued + batch.bytes + bytes <= self.limits.per_connection
        {
            self.stock.push(&mut batch.frames, transmit.frame);
            batch.bytes += bytes;
            self.pending_bytes += bytes;
            return true;
        }
        let Some(writer) = self.writers.get(&conn) else {
            return false;
        };
        let pending = self.pending.get(&conn).map_or(0, |p| p.bytes);
        let over_connection = writer.budget.queued() + pending + bytes > self.limits.per_connection;
        let server = &self.limits.server;
        if over_connection || server.used() + self.pending_bytes + bytes > server.limit() {
            return self.transmit_over_budget(transmit, over_connection);
        }
        self.queue(transmit)
    }

    /// The connection with the most bytes queued.
    fn largest_holder(&self) -> Option<ConnId> {
        let holds = |conn: &ConnId, w: &ConnWriter| {
            w.budget.queued() + self.pending.get(conn).map_or(0, |p| p.bytes)
        };
        let most = self.writers.iter().max_by_key(|(conn, w)| holds(conn, w));
        most.map(|(conn, _)| *conn)
    }
}

impl Sink for Io {
    /// Takes the frame into the turn's runs: it is queued when its run ends. A connection that cannot
    /// take it then is disconnected by the node task (`NodeTask::settle`).
    fn transmit(&mut self, transmit: Transmit) -> bool {
        if let Some(run) = self.runs.take(transmit) {
            self.queue_run(run);
        }
        true
    }

    /// Takes a whole fan-out into the turn's runs: one comparison of its member list with the open
    /// run's, instead of a transmit per member. Refusals come out when its run is queued
    /// (`NodeTask::settle`), not in `_refused`.
    fn fan_out(
        &mut self,
        frame: &bytes::Bytes,
        reliable: bool,
        conns: &[ConnId],
        _refused: &mut Vec<ConnId>,
    ) {
        for run in self
            .runs
            .take_fan_out(frame, reliable, conns)
            .into_iter()
            .flatten()
        {
            self.queue_run(run);
        }
    }

    fn event(&mut self, event: Event) {
        if let Some(sink) = &self.event_sink {
            sink(&event);
        }
        match event {
            Event::Close { conn, reason } => {
                tracing::debug!(conn = conn.0, ?reason, "closing connection");
                // This turn's frames (the closing notice among them) go first; then dropping the queue
                // lets the writer write what is queued and close the socket.
                self.settle_runs();
                if let Some(batch) = self.pending.remove(&conn) {
                    self.hand_over(conn, batch);
                }
                self.remove_writer(conn);
            }
            Event::Tick { group } => {
                if let Some(callback) = self.ticks.get(&group)
                    && !callback(group)
                {
                    self.stats.ticks_skipped.fetch_add(1, Ordering::Relaxed);
                    static SKIPPED: Throttle = Throttle::new();
                    if let Some(more) = SKIPPED.allow() {
                        tracing::warn!(%group, "a tick was skipped: the previous tick's callback is still running (and {more} more since the last line)");
                    }
                }
            }
            Event::GroupDeleted { group } => {
                self.ticks.remove(&group);
            }
            Event::JoinCompleted {
                op,
                waited,
                result,
                outcome,
                ..
            } => {
                self.stats.remote_join_seconds.observe(waited);
                tracing::debug!(op, ?result, "remote join completed");
                if let Some(reply) = self.waiters.remove(&op) {
                    reply(match outcome {
                        Some(outcome) => Answer::Request {
                            outcome,
                            session: None,
                        },
                        None => Answer::Joined(result),
                    });
                }
            }
            Event::SessionOpened { conn, uid, .. } => {
                tracing::debug!(conn = conn.0, %uid, "session opened")
            }
            Event::SessionDiscarded {
                conn, uid, reason, ..
            } => {
                tracing::debug!(conn = conn.0, %uid, ?reason, "session discarded")
            }
            _ => {}
        }
    }

    fn mesh(&mut self, transmit: MeshTransmit) {
        tracing::trace!(to = %transmit.to, message = ?transmit.message, "mesh out");
        if let Some(links) = &self.links {
            links.send(transmit.to, &transmit.message);
        }
    }
}

/// Runs the node until every sender of its inbox is gone or `stop` is cancelled, then closes every
/// connection.
pub(crate) async fn run(
    mut task: NodeTask,
    mut inbox: mpsc::Receiver<NodeInput>,
    stop: CancellationToken,
) {
    let sleep = tokio::time::sleep_until(TokioInstant::now());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let deadline = task.node.poll_timeout();
        if deadline != armed {
            armed = deadline;
            if let Some(at) = deadline {
                let at = task.start + std::time::Duration::from_nanos(at.as_nanos());
                sleep.as_mut().reset(at);
            }
        }
        let woke = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = inbox.recv() => match message {
                Some(message) => Some(message),
                None => break,
            },
            () = &mut sleep, if armed.is_some() => None,
        };
        if task.shares_a_thread && woke.is_some() {
            // The readers ready beside the one that woke the node hand their inputs over first.
            tokio::task::yield_now().await;
        }
        // Busy from here to the end of the hand-over: the node task's share of one core.
        let began = std::time::Instant::now();
        let mut taken = 1;
        match woke {
            Some(message) => {
                task.apply(message);
                // One turn takes every input that is ready (up to a bound, so timers still run): their
                // frames reach each connection as one batch.
                while taken < TURN_INPUTS {
                    match inbox.try_recv() {
                        Ok(message) => task.apply(message),
                        Err(_) => break,
                    }
                    taken += 1;
                }
            }
            None => {
                let _done = task.handle(Input::Timeout);
                armed = None; // re-arm from the core's next deadline
            }
        }
        task.settle();
        task.io.write_through =
            taken <= WRITE_THROUGH_INPUTS && task.io.pending.len() <= WRITE_THROUGH_CONNECTIONS;
        // A quiet turn's hand-over is mostly the node's own writes through, which the writers take back
        // as soon as turns get busy: not part of the node's ceiling, so left out (two clock reads a
        // turn, none per member).
        let handled = task.io.write_through.then(|| began.elapsed());
        task.io.flush();
        task.io.write_through = false;
        let turn = handled.unwrap_or_else(|| began.elapsed());
        let busy = u64::try_from(turn.as_nanos()).unwrap_or(u64::MAX);
        task.io
            .stats
            .node_busy_nanos
            .fetch_add(busy, Ordering::Relaxed);
    }
    task.io.flush();
    for (_, writer) in task.io.writers.drain() {
        writer.stop.cancel();
    }
}
