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
//! Bounds: the flusher's channel is unbounded, but every frame in it is charged against the
//! connection's and the server's byte budgets, which the node checks before it hands anything over.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use group_core::ConnId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::budget::Charge;
use crate::direct::Direct;
use crate::inbox::{ConnMap, Frames, LastWords, Outgoing, SpareVecs, Stats, cut_slow_consumer};
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
    /// The node let go of the connection: what the flusher holds for it is written or queued, then its
    /// writer may end.
    Close(ConnId),
}

/// Where a connection's frames go from the flusher.
pub(crate) struct Route {
    /// The writer's queue, for what the socket did not take.
    pub queue: mpsc::Sender<Outgoing>,
    pub direct: Direct,
    pub stop: CancellationToken,
    pub last_words: LastWords,
}

/// The node task's end of a flusher: a message per turn, or per 64 connections of a big turn.
pub(crate) type FlushSender = mpsc::UnboundedSender<Vec<Flush>>;

/// A connection as the flusher sees it, with what this round holds for it.
struct Held {
    route: Route,
    /// This round's frames, in order; the vector is kept between rounds up to [`KEPT_CAPACITY`].
    frames: Vec<Bytes>,
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
}

/// Runs a flusher until the node task drops its end. `spares`: where emptied frame vectors go back to
/// the node task.
pub(crate) async fn run(
    mut turns: mpsc::UnboundedReceiver<Vec<Flush>>,
    spares: SpareVecs,
    stats: Arc<Stats>,
) {
    let mut flusher = Flusher {
        held: ConnMap::default(),
        dirty: Vec::new(),
        emptied: Vec::new(),
        spares,
        stats,
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
                while let Ok(turn) = turns.try_recv() {
                    flusher.take(turn);
                }
            }
            if let Some(connection) = flusher.held.get_mut(&conn)
                && let Some(emptied) = connection.write(&flusher.stats)
            {
                flusher.emptied.push(emptied);
            }
            written += 1;
            if written == WRITES_PER_ROUND {
                break;
            }
        }
        flusher.dirty.drain(..written);
        flusher.spares.give(&mut flusher.emptied);
        if !flusher.dirty.is_empty() {
            tokio::task::yield_now().await;
        }
    }
}

impl Flusher {
    /// Adds a turn's messages to the round.
    fn take(&mut self, turn: Vec<Flush>) {
        for flush in turn {
            match flush {
                Flush::Open { conn, route } => {
                    let connection = Held {
                        route,
                        frames: Vec::new(),
                        charge: None,
                        entries: 0,
                    };
                    self.held.insert(conn, connection);
                }
                Flush::Frames { conn, outgoing } => {
                    let Some(connection) = self.held.get_mut(&conn) else {
                        continue; // closed already: nothing to write to
                    };
                    if connection.entries == 0 {
                        self.dirty.push(conn);
                    }
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
                        && let Some(emptied) = connection.write(&self.stats)
                    {
                        self.emptied.push(emptied);
                    }
                }
            }
        }
    }
}

impl Held {
    /// Writes the round's frames through if the writer has nothing in flight, and queues to the writer
    /// what the socket did not take (or everything, if the writer is busy).
    ///
    /// Returns the round's vector when it is too big to keep for an idle connection, for the node's
    /// reuse.
    fn write(&mut self, stats: &Stats) -> Option<Vec<Bytes>> {
        // A round with frames has a charge: none means nothing to write.
        let mut charge = self.charge.take()?;
        let entries = std::mem::take(&mut self.entries);
        let direct = &self.route.direct;
        // Cut (marked before the last words are set and the kill switch fires; a flag beside the
        // in-flight count, where the switch's own check takes a lock): the writer says them and closes.
        if direct.is_cut() {
            self.frames.clear();
            return None;
        }
        let mut frames = Frames::Many(std::mem::take(&mut self.frames));
        let count = frames.len() as u64;
        let written = if direct.in_flight() == entries {
            direct.write(frames.as_slice())
        } else {
            0
        };
        if !frames.consume(written) {
            direct.written(entries);
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
        // The round becomes one entry of the writer's: the others are off the in-flight count now.
        direct.written(entries - 1);
        let outgoing = Outgoing {
            frames,
            reliable: true,
            charge,
        };
        match self.route.queue.try_send(outgoing) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.cut(stats),
            // The writer ended (the peer went away): the reader reports the disconnect.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        None
    }

    /// Cuts a connection whose writer's queue is full: a slow consumer, as the node cuts one.
    fn cut(&self, stats: &Stats) {
        stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        static CUT: Throttle = Throttle::new();
        if let Some(more) = CUT.allow() {
            tracing::warn!(
                "slow consumer: outbound queue full (outboundQueue rounds of frames), disconnecting \
                 (and {more} more since the last line)"
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
        Conn {
            route: Route {
                queue: sender,
                direct: Direct::new(write),
                stop: CancellationToken::new(),
                last_words: LastWords::default(),
            },
            writer_queue,
            budget: ConnBudget::new(ServerBudget::new(usize::MAX)),
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
            },
        }
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
        let flusher = tokio::spawn(run(turns, spares.clone(), stats.clone()));
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
        let flusher = tokio::spawn(run(turns, SpareVecs::default(), stats.clone()));
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
        let flusher = tokio::spawn(run(turns, SpareVecs::default(), stats));
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
        let flusher = tokio::spawn(run(turns, SpareVecs::default(), stats));
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
        let flusher = tokio::spawn(run(turns, SpareVecs::default(), stats.clone()));
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
        let flusher = tokio::spawn(run(turns, SpareVecs::default(), stats.clone()));
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
