//! A writer thread's flusher: the node task hands it each turn's frames for the thread's plain TCP
//! connections in a few messages (64 connections each), and it writes each connection once for
//! everything that reached it.
//!
//! Why: handing every member its own queue entry woke every member's writer task, once per member per
//! turn; with 100 members flat out, the queues and the task wake-ups were about a sixth of the server's
//! CPU. A flusher costs at most one wake-up per thread per message, and writes its connections one
//! after another the way redis's event loop writes its clients: turns that arrive while it writes join
//! the round (a connection not yet written takes them in the same write), so a busy connection gets one
//! write per round whatever the number of turns.
//!
//! A connection's writer task still does what needs waiting: a socket that took only part of a round
//! gets the rest queued to the writer, which waits for room. Ordering is the write-through rule of
//! `direct`: every entry the node hands over counts in the connection's in-flight, and the flusher
//! writes only when the entries in flight are exactly the ones it holds, so nothing queued to the
//! writer is ever overtaken. Otherwise it queues its round behind the writer's.
//!
//! A big fan-out comes as one [`FanOut`]: its frame and the thread's member list (`run_split`), with
//! its bytes charged to the server once. The flusher takes it member by member into the round, charging
//! each connection (and cutting one over `limits.maxQueuedBytesPerConnection`, as the node would). Its
//! members are not counted in flight, so the node learns from the flusher's [`FlushProgress`] when all
//! of them are written or queued, and writes none of those connections through before. The frame is
//! held once (`shared_frames`): a member whose round is a run of consecutive fan-outs holds only the
//! run's positions, and is written from the shared frames.
//!
//! Bounds: the flusher's channel is unbounded, but every frame in it is charged against the server's
//! byte budget (and, handed to it one by one, the connection's), which the node checks before it
//! hands anything over.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use group_core::ConnId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::budget::{Charge, ConnBudget, ServerCharge};
use crate::direct::Direct;
use crate::inbox::{ConnMap, Frames, LastWords, Outgoing, SpareVecs, Stats, cut_slow_consumer};
use crate::shared_frames::{SharedFrames, extend_run};
use crate::throttle::Throttle;

/// Connections a flusher writes between two looks at its channel: what the node handed over meanwhile
/// joins the round, so a connection written late in a long round takes the newest frames with it
/// (with the channel read only when a round starts, a quiet broadcast to 1,000 members doubled its p99).
const WRITES_PER_LOOK: usize = 16;

/// Connections a flusher writes before it lets the thread's writers run (it yields and goes on).
const WRITES_PER_ROUND: usize = 4096;

/// Frames of capacity a connection keeps between rounds at most (512 bytes): a bigger round's vector
/// goes back to the node, so idle connections hold little.
const KEPT_CAPACITY: usize = 16;

/// What the node task tells a flusher, in the order the node did it.
pub(crate) enum Flush {
    /// A plain TCP connection whose writer runs on this thread.
    Open { conn: ConnId, route: Route },
    /// A node turn's frames for a connection: one entry, counted in its in-flight.
    Frames { conn: ConnId, outgoing: Outgoing },
    /// A fan-out to this thread's members, counted in the node's fan-outs sent ([`FlushProgress`]).
    FanOut(FanOut),
    /// The node let go of the connection: what the flusher holds for it is written or queued, then its
    /// writer may end.
    Close(ConnId),
}

/// One frame for each of a list of members, all on this flusher's thread.
pub(crate) struct FanOut {
    /// The run's frames back to back, as a plain TCP member gets them.
    pub frame: Bytes,
    pub conns: Arc<[ConnId]>,
    /// `frame`'s length for every member, charged to the server by the node; each member's share
    /// moves to its connection's charge as the flusher takes it, and what is left goes back when
    /// the fan-out is dropped.
    pub charge: ServerCharge,
    /// When the node handed it over: the flusher times it to its last member (`group_fanout_seconds`).
    pub handed_at: Instant,
}

/// Where a connection's frames go from the flusher.
pub(crate) struct Route {
    /// The writer's queue, for what the socket did not take.
    pub queue: mpsc::Sender<Outgoing>,
    pub direct: Direct,
    pub stop: CancellationToken,
    pub last_words: LastWords,
    /// The connection's byte budget, charged for a fan-out's frame as the flusher takes it.
    pub budget: Arc<ConnBudget>,
}

/// The node task's end of a flusher: a message per turn, or per 64 connections of a big turn.
pub(crate) type FlushSender = mpsc::UnboundedSender<Vec<Flush>>;

/// The node task's end of a flusher: where its messages go, and how far it got with the fan-outs.
pub(crate) struct FlusherEnd {
    pub sender: FlushSender,
    pub progress: Arc<FlushProgress>,
    /// Fan-outs put in messages for the flusher.
    pub fan_outs_sent: u64,
}

impl FlusherEnd {
    pub fn new(sender: FlushSender, progress: Arc<FlushProgress>) -> Self {
        FlusherEnd {
            sender,
            progress,
            fan_outs_sent: 0,
        }
    }

    /// True when the flusher finished every fan-out sent to it: none of its connections has a
    /// fan-out's frame waiting in it.
    pub fn quiet(&self) -> bool {
        self.progress.done() == self.fan_outs_sent
    }
}

/// How many fan-outs a flusher has finished: each member written whole, queued to its writer (and
/// counted in flight), cut or gone. The node counts the fan-outs it sends; while the two differ, some
/// member of a fan-out may have a frame the flusher holds, and the node writes none of that thread's
/// connections through. Ordering: the flusher stores the count (Release) after the writes and the
/// in-flight counts of what it finished; the node reads it (Acquire) before it looks at in-flight
/// counts and writes.
///
/// On a line of its own: the flusher writes it once per fan-out, the node reads it only on quiet
/// turns.
#[repr(align(64))]
#[derive(Debug, Default)]
pub(crate) struct FlushProgress {
    fan_outs_done: AtomicU64,
}

impl FlushProgress {
    /// The node's side: fan-outs the flusher finished.
    pub fn done(&self) -> u64 {
        self.fan_outs_done.load(Ordering::Acquire)
    }
}

/// A fan-out the flusher took and has not finished.
struct Unfinished {
    /// Its position, counted as `Flusher::fan_outs_taken`.
    taken: u64,
    /// Where in `dirty` its last member is, counted as `Flusher::passed`.
    end: u64,
    handed_at: Instant,
}

/// A connection as the flusher sees it, with what this round holds for it.
struct Held {
    route: Route,
    /// This round's frames, in order; the vector is kept between rounds up to [`KEPT_CAPACITY`].
    frames: Vec<Bytes>,
    /// Or, when all this round holds is consecutive fan-outs, their positions in the flusher's
    /// [`SharedFrames`] (never both: `frames` is empty while the run is not).
    run: Range<u64>,
    charge: Option<Charge>,
    /// Entries (node turns) this round holds.
    entries: usize,
}

/// A flusher's state: its connections and this round's work.
struct Flusher {
    held: ConnMap<Held>,
    /// Connections with frames to write, in the order their first frame came. A connection written in
    /// a round and handed more during it is in it again, further on.
    dirty: Vec<ConnId>,
    /// The node's frame vectors this round emptied, handed back once per round.
    emptied: Vec<Vec<Bytes>>,
    spares: SpareVecs,
    stats: Arc<Stats>,
    /// `limits.maxQueuedBytesPerConnection`, checked for a fan-out's members.
    per_connection: usize,
    progress: Arc<FlushProgress>,
    /// Fan-outs taken, and for those not yet finished, where in `dirty` their last member is (counted
    /// from the flusher's start, as `passed` is) and when the node handed them over: each is finished
    /// once the round has passed there.
    fan_outs_taken: u64,
    unfinished: VecDeque<Unfinished>,
    /// The unfinished fan-outs' frames, by the fan-outs' positions (counted as `fan_outs_taken`).
    shared: SharedFrames,
    /// Entries of `dirty` written and drained since the flusher started.
    passed: u64,
}

/// Runs a flusher until the node task drops its end. `spares`: where emptied frame vectors go back to
/// the node task.
/// `per_connection`: `limits.maxQueuedBytesPerConnection`; `progress`: the fan-outs finished, for the
/// node. `on_server_runtime`: the flusher shares its thread with the node task and the readers, so it
/// yields to them before each look at its channel, or no turn would reach it until the round ended.
pub(crate) async fn run(
    mut turns: mpsc::UnboundedReceiver<Vec<Flush>>,
    spares: SpareVecs,
    stats: Arc<Stats>,
    progress: Arc<FlushProgress>,
    per_connection: usize,
    on_server_runtime: bool,
) {
    let mut flusher = Flusher {
        held: ConnMap::default(),
        dirty: Vec::new(),
        emptied: Vec::new(),
        spares,
        stats,
        per_connection,
        progress,
        fan_outs_taken: 0,
        unfinished: VecDeque::new(),
        shared: SharedFrames::default(),
        passed: 0,
    };
    loop {
        if flusher.dirty.is_empty() {
            let Some(turn) = turns.recv().await else {
                return;
            };
            flusher.take(turn);
        }
        let mut written = 0;
        while let Some(conn) = flusher.dirty.get(written).copied() {
            if written % WRITES_PER_LOOK == 0 {
                if on_server_runtime && written > 0 {
                    // The node's turns since the round began join it (as a writer thread's would).
                    tokio::task::yield_now().await;
                }
                while let Ok(turn) = turns.try_recv() {
                    flusher.take(turn);
                }
            }
            if let Some(connection) = flusher.held.get_mut(&conn)
                && let Some(emptied) = connection.write(&flusher.stats, &flusher.shared)
            {
                flusher.emptied.push(emptied);
            }
            written += 1;
            flusher.finish_fan_outs(written);
            if written == WRITES_PER_ROUND {
                break;
            }
        }
        flusher.dirty.drain(..written);
        flusher.passed += written as u64;
        flusher.spares.give(&mut flusher.emptied);
        if !flusher.dirty.is_empty() {
            tokio::task::yield_now().await;
        }
    }
}

impl Flusher {
    /// Publishes the fan-outs whose members are all behind `written`, this round's position.
    fn finish_fan_outs(&mut self, written: usize) {
        let at = self.passed + written as u64;
        let mut finished = None;
        let mut now = None;
        while let Some(fan_out) = self.unfinished.front()
            && fan_out.end <= at
        {
            finished = Some(fan_out.taken);
            // One clock read for all the fan-outs this position finishes.
            let now = *now.get_or_insert_with(Instant::now);
            let took = now.saturating_duration_since(fan_out.handed_at);
            self.stats.fan_out_seconds.observe(took);
            self.unfinished.pop_front();
        }
        if let Some(taken) = finished {
            // Release: the writes and in-flight counts of its members happened before.
            let done = &self.progress.fan_outs_done;
            done.store(taken, Ordering::Release);
            self.shared.finish(taken);
        }
    }

    /// Takes a fan-out's members into the round: each gets the frame and a charge of its length,
    /// its share of the fan-out's. A member over its connection's bound is cut instead; one cut or
    /// gone gets nothing.
    fn take_fan_out(&mut self, fan_out: FanOut) {
        let FanOut {
            frame,
            conns,
            mut charge,
            handed_at,
        } = fan_out;
        let bytes = frame.len();
        let at = self.shared.push(frame.clone());
        for conn in conns.iter() {
            let Some(connection) = self.held.get_mut(conn) else {
                continue; // closed already: nothing to write to
            };
            let route = &connection.route;
            if route.direct.is_cut() {
                continue;
            }
            if route.budget.queued() + bytes > self.per_connection {
                connection.cut(
                    &self.stats,
                    "more than limits.maxQueuedBytesPerConnection queued",
                );
                continue;
            }
            if !connection.frames.is_empty() || !extend_run(&mut connection.run, at) {
                connection.own_run(&self.shared);
                connection.frames.push(frame.clone());
            }
            match &mut connection.charge {
                Some(held) => held.adopt_more(&mut charge, bytes),
                None => {
                    connection.charge = Some(connection.route.budget.adopt(&mut charge, bytes));
                    self.dirty.push(*conn);
                }
            }
        }
        self.fan_outs_taken += 1;
        let end = self.passed + self.dirty.len() as u64;
        self.unfinished.push_back(Unfinished {
            taken: self.fan_outs_taken,
            end,
            handed_at,
        });
        self.finish_fan_outs(0);
    }

    /// Adds a turn's messages to the round.
    fn take(&mut self, turn: Vec<Flush>) {
        for flush in turn {
            match flush {
                Flush::FanOut(fan_out) => self.take_fan_out(fan_out),
                Flush::Open { conn, route } => {
                    let connection = Held {
                        route,
                        frames: Vec::new(),
                        run: Range::default(),
                        charge: None,
                        entries: 0,
                    };
                    self.held.insert(conn, connection);
                }
                Flush::Frames { conn, outgoing } => {
                    let Some(connection) = self.held.get_mut(&conn) else {
                        continue; // closed already: nothing to write to
                    };
                    if connection.charge.is_none() {
                        self.dirty.push(conn);
                    }
                    connection.own_run(&self.shared);
                    connection.entries += 1;
                    match outgoing.frames {
                        Frames::One(frame) => connection.frames.push(frame),
                        // The round's first frames: the node's vector becomes the round's.
                        Frames::Many(frames) if connection.frames.is_empty() => {
                            let empty = std::mem::replace(&mut connection.frames, frames);
                            self.emptied.push(empty);
                        }
                        Frames::Many(mut frames) => {
                            connection.frames.append(&mut frames);
                            self.emptied.push(frames);
                        }
                    }
                    match &mut connection.charge {
                        Some(charge) => charge.absorb(outgoing.charge),
                        None => connection.charge = Some(outgoing.charge),
                    }
                }
                Flush::Close(conn) => {
                    // What the node handed over before letting go goes first (a closing notice, say);
                    // dropping the route then lets the writer finish and close the socket.
                    if let Some(mut connection) = self.held.remove(&conn)
                        && let Some(emptied) = connection.write(&self.stats, &self.shared)
                    {
                        self.emptied.push(emptied);
                    }
                }
            }
        }
    }
}

impl Held {
    /// Gives the connection its run's frames as its own, ahead of something that does not continue
    /// the run (a frame handed to it alone, or a fan-out after one it was not in).
    fn own_run(&mut self, shared: &SharedFrames) {
        if !self.run.is_empty() {
            let run = std::mem::take(&mut self.run);
            self.frames.extend_from_slice(shared.get(&run));
        }
    }

    /// Writes the round's frames through if the writer has nothing in flight, and queues to the writer
    /// what the socket did not take (or everything, if the writer is busy).
    ///
    /// Returns the round's vector when it is too big to keep for an idle connection, for the node's
    /// reuse.
    fn write(&mut self, stats: &Stats, shared: &SharedFrames) -> Option<Vec<Bytes>> {
        // A round with frames has a charge: none means nothing to write.
        let mut charge = self.charge.take()?;
        let entries = std::mem::take(&mut self.entries);
        let run = std::mem::take(&mut self.run);
        let direct = &self.route.direct;
        // Cut (marked before the last words are set and the kill switch fires; a flag beside the
        // in-flight count, where the switch's own check takes a lock): the writer says them and closes.
        if direct.is_cut() {
            self.frames.clear();
            return None;
        }
        let round = if run.is_empty() {
            self.frames.as_slice()
        } else {
            shared.get(&run)
        };
        let written = if direct.in_flight() == entries {
            direct.write(round)
        } else {
            0
        };
        let count = round.len() as u64;
        let run_left = !run.is_empty() && written < round.iter().map(Bytes::len).sum::<usize>();
        // What the socket did not take of a run becomes the connection's own to queue.
        let mut frames = Frames::Many(if run_left {
            shared.get(&run).to_vec()
        } else {
            std::mem::take(&mut self.frames) // a run's connection holds an empty one
        });
        if !frames.consume(written) {
            if entries > 0 {
                direct.written(entries);
            }
            stats.frames_flushed.fetch_add(count, Ordering::Relaxed);
            let Frames::Many(emptied) = frames else {
                return None;
            };
            if emptied.capacity() > KEPT_CAPACITY {
                return Some(emptied);
            }
            self.frames = emptied; // kept for the next round
            return None;
        }
        charge.release(written);
        // The round becomes one entry of the writer's: the node's are off the in-flight count now (a
        // round of fan-outs alone had none counted).
        match entries {
            0 => direct.handed(),
            entries => direct.written(entries - 1),
        }
        let outgoing = Outgoing {
            frames,
            reliable: true,
            charge,
        };
        match self.route.queue.try_send(outgoing) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut(
                    stats,
                    "outbound queue full (outboundQueue rounds of frames)",
                );
            }
            // The writer ended (the peer went away): the reader reports the disconnect.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        None
    }

    /// Cuts a connection that holds too much (its writer's queue is full, or its bytes are over the
    /// bound): a slow consumer, as the node cuts one. What the round holds for it is dropped when its
    /// turn to be written comes.
    fn cut(&self, stats: &Stats, why: &'static str) {
        stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        static CUT: Throttle = Throttle::new();
        if let Some(more) = CUT.allow() {
            tracing::warn!(
                "slow consumer: {why}, disconnecting (and {more} more since the last line)"
            );
        }
        let route = &self.route;
        cut_slow_consumer(Some(&route.direct), &route.last_words, &route.stop);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::budget::{ConnBudget, ServerBudget};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connection as the node task would announce it: the route, the writer's end of its queue,
    /// its budget, and the peer's socket.
    struct Conn {
        route: Route,
        writer_queue: mpsc::Receiver<Outgoing>,
        budget: Arc<ConnBudget>,
        peer: TcpStream,
    }

    /// `send_buffer`: the socket's send buffer, small to make a round not fit.
    async fn conn(queue: usize, send_buffer: Option<u32>) -> Conn {
        conn_on(queue, send_buffer, ServerBudget::new(usize::MAX)).await
    }

    /// A connection whose budget counts against `server`.
    async fn conn_on(queue: usize, send_buffer: Option<u32>, server: Arc<ServerBudget>) -> Conn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = send_buffer {
            socket.set_send_buffer_size(size).unwrap();
        }
        let (ours, theirs) = tokio::join!(
            socket.connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let (_, write) = ours.unwrap().into_split();
        let (sender, writer_queue) = mpsc::channel(queue);
        let budget = ConnBudget::new(server);
        Conn {
            route: Route {
                queue: sender,
                direct: Direct::new(write),
                stop: CancellationToken::new(),
                last_words: LastWords::default(),
                budget: budget.clone(),
            },
            writer_queue,
            budget,
            peer: theirs.unwrap().0,
        }
    }

    /// Bounds a test's wait: a broken flusher fails the test instead of hanging it.
    async fn within<T>(wait: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("within 10 s")
    }

    fn frame(n: usize, size: usize) -> Bytes {
        Bytes::from(vec![u8::try_from(n % 251).unwrap(); size])
    }

    /// One node turn's entry for `conn`, counted in flight as the node counts it.
    fn entry(conn: &Conn, id: ConnId, frames: Vec<Bytes>) -> Flush {
        let bytes = frames.iter().map(Bytes::len).sum();
        conn.route.direct.handed();
        Flush::Frames {
            conn: id,
            outgoing: Outgoing {
                frames: Frames::Many(frames),
                reliable: true,
                charge: conn.budget.charge(bytes),
            },
        }
    }

    fn open(conn: &Conn, id: ConnId) -> Flush {
        Flush::Open {
            conn: id,
            route: Route {
                queue: conn.route.queue.clone(),
                direct: conn.route.direct.clone(),
                stop: conn.route.stop.clone(),
                last_words: conn.route.last_words.clone(),
                budget: conn.budget.clone(),
            },
        }
    }

    /// A flusher as the server starts one, with a bound of 64 bytes per connection (checked for
    /// fan-outs' members only).
    fn start(
        turns: mpsc::UnboundedReceiver<Vec<Flush>>,
        stats: &Arc<Stats>,
        progress: &Arc<FlushProgress>,
    ) -> tokio::task::JoinHandle<()> {
        start_bounded(turns, stats, progress, 64)
    }

    /// As [`start`], with `per_connection` bytes of bound.
    fn start_bounded(
        turns: mpsc::UnboundedReceiver<Vec<Flush>>,
        stats: &Arc<Stats>,
        progress: &Arc<FlushProgress>,
        per_connection: usize,
    ) -> tokio::task::JoinHandle<()> {
        let run = run(
            turns,
            SpareVecs::default(),
            stats.clone(),
            progress.clone(),
            per_connection,
            true,
        );
        tokio::spawn(run)
    }

    /// Two connections counting against one server budget.
    async fn two_on_one_server() -> (Arc<ServerBudget>, Conn, Conn) {
        let server = ServerBudget::new(usize::MAX);
        let a = conn_on(8, None, server.clone()).await;
        let b = conn_on(8, None, server.clone()).await;
        (server, a, b)
    }

    /// A flusher's counters, fresh.
    fn counters() -> (Arc<Stats>, Arc<FlushProgress>) {
        (Arc::default(), Arc::default())
    }

    /// A fan-out as the node sends it: `frame` for each of `conns`, charged to `server` once.
    fn fan_out(server: &Arc<ServerBudget>, frame: Bytes, conns: &[ConnId]) -> Flush {
        Flush::FanOut(FanOut {
            charge: server.charge(frame.len() * conns.len()),
            frame,
            conns: Arc::from(conns),
            handed_at: Instant::now(),
        })
    }

    /// A fan-out between two turns' entries: each member gets the frames in the order the node sent
    /// them, every byte charged is given back, and the fan-out is reported finished.
    #[tokio::test]
    async fn a_fan_out_keeps_its_place_among_entries_and_is_reported_finished() {
        let (server, mut a, mut b) = two_on_one_server().await;
        let (stats, progress) = counters();
        let (node, turns) = mpsc::unbounded_channel();
        node.send(vec![
            open(&a, ConnId(1)),
            open(&b, ConnId(2)),
            entry(&a, ConnId(1), vec![frame(1, 5)]),
            fan_out(&server, frame(2, 6), &[ConnId(1), ConnId(2), ConnId(3)]),
            entry(&b, ConnId(2), vec![frame(3, 7)]),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &progress);
        let mut got = vec![0; 11];
        within(a.peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, [frame(1, 5), frame(2, 6)].concat());
        let mut got = vec![0; 13];
        within(b.peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, [frame(2, 6), frame(3, 7)].concat());
        drop(node);
        within(flusher).await.unwrap();
        assert_eq!(progress.done(), 1);
        // ConnId(3) was never opened: its share went back with the fan-out.
        assert_eq!(
            (a.budget.queued(), b.budget.queued(), server.used()),
            (0, 0, 0)
        );
        assert!(a.route.direct.idle() && b.route.direct.idle());
    }

    /// `group_fanout_seconds` times a fan-out from the node's hand-over to its last member written:
    /// one that waited 30 ms before the flusher took it counts once, above 25 ms (not bounded above:
    /// a loaded machine may take longer to write it).
    #[tokio::test]
    async fn a_finished_fan_out_is_timed_from_the_hand_over() {
        let (server, mut a, mut b) = two_on_one_server().await;
        let (stats, progress) = counters();
        let (node, turns) = mpsc::unbounded_channel();
        let Flush::FanOut(mut late) = fan_out(&server, frame(8, 6), &[ConnId(1), ConnId(2)]) else {
            unreachable!("fan_out makes a fan-out");
        };
        late.handed_at = Instant::now() - std::time::Duration::from_millis(30);
        node.send(vec![
            open(&a, ConnId(1)),
            open(&b, ConnId(2)),
            Flush::FanOut(late),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &progress);
        let mut got = vec![0; 6];
        within(a.peer.read_exact(&mut got)).await.unwrap();
        within(b.peer.read_exact(&mut got)).await.unwrap();
        drop(node);
        within(flusher).await.unwrap();
        let mut out = String::new();
        stats.fan_out_seconds.render("f", "", &mut out);
        assert!(out.contains("f_bucket{le=\"0.025\"} 0\n"), "{out}");
        assert!(out.contains("f_count 1\n"), "{out}");
        let sum = out.lines().find_map(|line| line.strip_prefix("f_sum "));
        let sum: f64 = sum.and_then(|s| s.parse().ok()).unwrap_or_default();
        assert!(sum >= 0.030, "{out}");
    }

    /// A fan-out member whose writer is busy gets the frame queued behind the writer's entry and
    /// counted in flight before the fan-out is reported finished (the node then sees it busy).
    #[tokio::test]
    async fn a_fan_out_to_a_busy_writer_is_queued_and_counted_before_it_is_finished() {
        let server = ServerBudget::new(usize::MAX);
        let mut a = conn_on(8, None, server.clone()).await;
        let (stats, progress) = counters();
        let (node, turns) = mpsc::unbounded_channel();
        a.route.direct.handed(); // the writer's: handed to its queue earlier, not yet written
        node.send(vec![
            open(&a, ConnId(1)),
            fan_out(&server, frame(4, 9), &[ConnId(1)]),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &progress);
        let queued = within(a.writer_queue.recv()).await.unwrap();
        assert_eq!(queued.frames.as_slice(), [frame(4, 9)]);
        drop(node);
        within(flusher).await.unwrap();
        assert_eq!(progress.done(), 1);
        assert_eq!(
            a.route.direct.in_flight(),
            2,
            "the writer's entry and the fan-out's"
        );
        assert_eq!((a.budget.queued(), server.used()), (9, 9));
        drop(queued);
        assert_eq!((a.budget.queued(), server.used()), (0, 0));
    }

    /// A fan-out member that would hold more than `limits.maxQueuedBytesPerConnection` is cut as a
    /// slow consumer; the others get the frame.
    #[tokio::test]
    async fn a_fan_out_member_over_its_bound_is_cut_and_the_others_get_the_frame() {
        let (server, a, mut b) = two_on_one_server().await;
        let (stats, progress) = counters();
        let (node, turns) = mpsc::unbounded_channel();
        let held = a.budget.charge(60); // queued for its writer already
        node.send(vec![
            open(&a, ConnId(1)),
            open(&b, ConnId(2)),
            fan_out(&server, frame(5, 10), &[ConnId(1), ConnId(2)]),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &progress);
        let mut got = vec![0; 10];
        within(b.peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, frame(5, 10).to_vec());
        within(a.route.stop.cancelled()).await;
        assert!(a.route.direct.is_cut() && a.route.last_words.get().is_some());
        assert_eq!(stats.slow_consumers.load(Ordering::Relaxed), 1);
        drop(node);
        within(flusher).await.unwrap();
        assert_eq!(server.used(), 60, "only what the writer held");
        drop(held);
        assert_eq!(server.used(), 0);
    }

    /// Fan-outs one after another reach a member as one run of shared frames; a frame handed to the
    /// member alone, or a fan-out it was not in, breaks the run, and every frame keeps its place.
    #[tokio::test]
    async fn a_members_run_of_fan_outs_and_what_breaks_it_keep_their_order() {
        let (server, mut a, mut b) = two_on_one_server().await;
        let (stats, progress) = counters();
        let both = [ConnId(1), ConnId(2)];
        let (node, turns) = mpsc::unbounded_channel();
        node.send(vec![
            open(&a, ConnId(1)),
            open(&b, ConnId(2)),
            fan_out(&server, frame(1, 6), &both),
            fan_out(&server, frame(2, 6), &both),
            entry(&a, ConnId(1), vec![frame(3, 4)]),
            fan_out(&server, frame(4, 6), &both),
            fan_out(&server, frame(5, 6), &[ConnId(2)]),
            fan_out(&server, frame(6, 6), &both),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &progress);
        let mut got = vec![0; 28];
        within(a.peer.read_exact(&mut got)).await.unwrap();
        let expected = [1, 2, 3, 4, 6].map(|n| frame(n, if n == 3 { 4 } else { 6 }));
        assert_eq!(got, expected.concat());
        let mut got = vec![0; 30];
        within(b.peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, [1, 2, 4, 5, 6].map(|n| frame(n, 6)).concat());
        drop(node);
        within(flusher).await.unwrap();
        assert_eq!(progress.done(), 5);
        assert_eq!(
            (a.budget.queued(), b.budget.queued(), server.used()),
            (0, 0, 0)
        );
    }

    /// A fan-out finished while a later run is still to be written drops only its own frame: the
    /// member written after it still gets its run whole.
    #[tokio::test]
    async fn a_finished_fan_out_drops_only_its_own_frame() {
        let (server, mut a, mut b) = two_on_one_server().await;
        let (stats, progress) = counters();
        let (node, turns) = mpsc::unbounded_channel();
        node.send(vec![
            open(&a, ConnId(1)),
            open(&b, ConnId(2)),
            fan_out(&server, frame(1, 6), &[ConnId(1)]),
            fan_out(&server, frame(2, 6), &[ConnId(2)]),
            fan_out(&server, frame(3, 6), &[ConnId(2)]),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &progress);
        let mut got = vec![0; 6];
        within(a.peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, frame(1, 6).to_vec());
        let mut got = vec![0; 12];
        within(b.peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, [frame(2, 6), frame(3, 6)].concat());
        drop(node);
        within(flusher).await.unwrap();
        assert_eq!(progress.done(), 3);
    }

    /// What the socket does not take of a run of fan-outs goes to the writer from where it stopped,
    /// counted in flight and charged to the connection.
    #[tokio::test]
    async fn the_rest_of_a_run_the_socket_did_not_take_goes_to_the_writer() {
        let server = ServerBudget::new(usize::MAX);
        let mut a = conn_on(8, Some(4096), server.clone()).await;
        let (stats, progress) = counters();
        let (node, turns) = mpsc::unbounded_channel();
        let sent: Vec<Bytes> = (0..200).map(|n| frame(n, 1001)).collect();
        let total: usize = sent.iter().map(Bytes::len).sum();
        let mut turn = vec![open(&a, ConnId(1))];
        turn.extend(
            sent.iter()
                .map(|f| fan_out(&server, f.clone(), &[ConnId(1)])),
        );
        node.send(turn).unwrap();
        let flusher = start_bounded(turns, &stats, &progress, usize::MAX);
        let rest = within(a.writer_queue.recv()).await.unwrap();
        let left: usize = rest.frames.as_slice().iter().map(Bytes::len).sum();
        assert!(left > 0 && left < total, "{left} of {total} left");
        assert_eq!((a.budget.queued(), server.used()), (left, left));
        assert_eq!(
            a.route.direct.in_flight(),
            1,
            "the rest is the writer's entry"
        );
        let mut got = vec![0; total - left];
        within(a.peer.read_exact(&mut got)).await.unwrap();
        got.extend(rest.frames.into_iter().flat_map(|f| f.to_vec()));
        assert_eq!(got, sent.concat());
        drop(node);
        within(flusher).await.unwrap();
        assert_eq!(progress.done(), 200);
    }

    /// Several turns reach the flusher before it runs: it writes them through in one round, in order,
    /// and gives their bytes back.
    #[tokio::test]
    async fn turns_that_arrive_together_are_written_through_in_order() {
        let mut a = conn(8, None).await;
        let stats = Arc::new(Stats::default());
        let (node, turns) = mpsc::unbounded_channel();
        let sent: Vec<Bytes> = (0..30).map(|n| frame(n, 10 + n)).collect();
        node.send(vec![open(&a, ConnId(1))]).unwrap();
        for chunk in sent.chunks(3) {
            node.send(vec![entry(&a, ConnId(1), chunk.to_vec())])
                .unwrap();
        }
        let spares = SpareVecs::default();
        let flusher = tokio::spawn(run(
            turns,
            spares.clone(),
            stats.clone(),
            Arc::default(),
            usize::MAX,
            true,
        ));
        let expected: Vec<u8> = sent.iter().flat_map(|f| f.iter().copied()).collect();
        let mut got = vec![0; expected.len()];
        within(a.peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, expected);
        assert_eq!(stats.frames_flushed.load(Ordering::Relaxed), 30);
        assert!(
            a.route.direct.idle(),
            "every entry is off the in-flight count"
        );
        assert_eq!(a.budget.queued(), 0);
        assert!(
            a.writer_queue.try_recv().is_err(),
            "nothing went to the writer"
        );
        drop(node);
        within(flusher).await.unwrap();
        let mut stock = Vec::new();
        spares.take_into(&mut stock);
        // Nine appended to the first, which became the round's own and, grown past what an idle
        // connection keeps, went back too once written.
        assert_eq!(stock.len(), 10, "the node's vectors went back to it");
    }

    /// While the writer has an entry of its own in flight the flusher must not write ahead of it: the
    /// round goes to the writer's queue, as one entry, charged whole.
    #[tokio::test]
    async fn a_busy_writer_gets_the_round_queued_behind_its_own() {
        let mut a = conn(8, None).await;
        let stats = Arc::new(Stats::default());
        let (node, turns) = mpsc::unbounded_channel();
        a.route.direct.handed(); // the writer's: handed to its queue earlier, not yet written
        node.send(vec![open(&a, ConnId(7))]).unwrap();
        node.send(vec![entry(&a, ConnId(7), vec![frame(1, 5)])])
            .unwrap();
        node.send(vec![entry(&a, ConnId(7), vec![frame(2, 6), frame(3, 7)])])
            .unwrap();
        let flusher = start(turns, &stats, &Arc::default());
        let queued = within(a.writer_queue.recv()).await.unwrap();
        assert_eq!(
            queued.frames.as_slice(),
            [frame(1, 5), frame(2, 6), frame(3, 7)]
        );
        assert_eq!(a.budget.queued(), 18);
        assert_eq!(
            a.route.direct.in_flight(),
            2,
            "the writer's entry and the round"
        );
        assert_eq!(stats.frames_flushed.load(Ordering::Relaxed), 0);
        drop(node);
        within(flusher).await.unwrap();
    }

    /// A round larger than the socket takes: what went out is given back at once, the rest goes to the
    /// writer from where the socket stopped, and both together are the frames in order.
    #[tokio::test]
    async fn what_the_socket_does_not_take_goes_to_the_writer_from_where_it_stopped() {
        let mut a = conn(8, Some(4096)).await;
        let stats = Arc::new(Stats::default());
        let (node, turns) = mpsc::unbounded_channel();
        let sent: Vec<Bytes> = (0..200).map(|n| frame(n, 1001)).collect();
        let total: usize = sent.iter().map(Bytes::len).sum();
        node.send(vec![
            open(&a, ConnId(2)),
            entry(&a, ConnId(2), sent.clone()),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &Arc::default());
        let rest = within(a.writer_queue.recv()).await.unwrap();
        let left: usize = rest.frames.as_slice().iter().map(Bytes::len).sum();
        assert!(left > 0 && left < total, "{left} of {total} left");
        assert_eq!(a.budget.queued(), left, "the written bytes were given back");
        let expected: Vec<u8> = sent.iter().flat_map(|f| f.iter().copied()).collect();
        let mut got = vec![0; total - left];
        within(a.peer.read_exact(&mut got)).await.unwrap();
        got.extend(rest.frames.into_iter().flat_map(|f| f.to_vec()));
        assert_eq!(got, expected);
        drop(node);
        within(flusher).await.unwrap();
    }

    /// Close after frames: the frames are written, then the flusher lets go of the writer's queue, so
    /// the writer (once the node lets go too) sees its queue end.
    #[tokio::test]
    async fn a_closed_connection_gets_its_frames_then_its_queue_ends() {
        let mut a = conn(8, None).await;
        let stats = Arc::new(Stats::default());
        let (node, turns) = mpsc::unbounded_channel();
        node.send(vec![
            open(&a, ConnId(3)),
            entry(&a, ConnId(3), vec![frame(9, 40)]),
            Flush::Close(ConnId(3)),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &Arc::default());
        let mut got = vec![0; 40];
        within(a.peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, frame(9, 40).to_vec());
        let Conn {
            route,
            mut writer_queue,
            ..
        } = a;
        drop(route); // the node's sender
        assert!(
            within(writer_queue.recv()).await.is_none(),
            "the queue ended"
        );
        drop(node);
        within(flusher).await.unwrap();
    }

    /// A connection the node cut (marked, last words set) gets nothing more from the flusher: its
    /// writer says the last words and closes, and no frame may go out after or in between them.
    #[tokio::test]
    async fn a_connection_the_node_cut_gets_nothing_written_through() {
        let mut a = conn(8, None).await;
        let stats = Arc::new(Stats::default());
        let (node, turns) = mpsc::unbounded_channel();
        node.send(vec![
            open(&a, ConnId(5)),
            entry(&a, ConnId(5), vec![frame(1, 8)]),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &Arc::default());
        let mut first = [0; 8];
        within(a.peer.read_exact(&mut first)).await.unwrap();
        // The node's cut: marked, then the last words, then the kill switch.
        cut_slow_consumer(Some(&a.route.direct), &a.route.last_words, &a.route.stop);
        node.send(vec![entry(&a, ConnId(5), vec![frame(2, 8)])])
            .unwrap();
        node.send(vec![Flush::Close(ConnId(5))]).unwrap();
        drop(node);
        within(flusher).await.unwrap();
        assert_eq!(stats.frames_flushed.load(Ordering::Relaxed), 1);
        assert_eq!(
            a.budget.queued(),
            0,
            "the dropped round gave its bytes back"
        );
        assert!(
            a.writer_queue.try_recv().is_err(),
            "nothing went to the writer"
        );
        drop(a.route);
        let mut rest = Vec::new();
        within(a.peer.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty(), "written after the cut: {rest:?}");
    }

    /// A writer whose queue is full is cut as the node cuts a slow consumer: last words set, kill switch
    /// fired, counted. Its later frames are dropped, not written after the last words.
    #[tokio::test]
    async fn a_full_writer_queue_cuts_the_connection() {
        let a = conn(1, None).await;
        let stats = Arc::new(Stats::default());
        let (node, turns) = mpsc::unbounded_channel();
        a.route.direct.handed(); // the writer is busy: rounds go to its queue
        node.send(vec![
            open(&a, ConnId(4)),
            entry(&a, ConnId(4), vec![frame(1, 8)]),
        ])
        .unwrap();
        let flusher = start(turns, &stats, &Arc::default());
        // The test's runtime has one thread: the yield lets the flusher take the first round whole and
        // fill the queue, so the second entry is a round of its own (sent together, they would merge
        // into one entry and fit).
        tokio::task::yield_now().await;
        node.send(vec![entry(&a, ConnId(4), vec![frame(2, 8)])])
            .unwrap();
        within(a.route.stop.cancelled()).await;
        assert!(a.route.last_words.get().is_some());
        assert_eq!(stats.slow_consumers.load(Ordering::Relaxed), 1);
        node.send(vec![entry(&a, ConnId(4), vec![frame(3, 8)])])
            .unwrap();
        drop(node);
        within(flusher).await.unwrap();
        assert_eq!(a.budget.queued(), 8, "only the queued entry is held");
    }
}
