//! Memory budgets in bytes, so that no mix of clients can make the server hold more than configured.
//!
//! Every frame queued for a connection's writer carries a [`Charge`] of its length against the
//! connection's [`ConnBudget`] (`limits.maxQueuedBytesPerConnection`) and the server's [`ServerBudget`]
//! (`limits.maxBufferedBytes`); the charge is released when the frame is dropped, wherever that happens
//! (written, dropped with a closed queue, dropped by a cut writer), so the counts cannot drift. Inbound
//! frames on their way to the node are charged to the server the same way ([`ServerCharge`]). A frame
//! shared by many members (a broadcast) is charged to each: the bound is on what each connection makes
//! the server hold for it, counted conservatively.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// The server-wide count of buffered bytes and its bound.
#[derive(Debug)]
pub(crate) struct ServerBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ServerBudget {
    pub(crate) fn new(limit: usize) -> Arc<ServerBudget> {
        Arc::new(ServerBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// True when no more may be held: new connections are refused.
    pub(crate) fn spent(&self) -> bool {
        self.used() >= self.limit
    }

    /// Holds `bytes` until the charge is dropped.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize) -> ServerCharge {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        ServerCharge {
            bytes,
            server: self.clone(),
        }
    }
}

/// Bytes held against the server's budget until dropped.
#[derive(Debug)]
pub(crate) struct ServerCharge {
    bytes: usize,
    server: Arc<ServerBudget>,
}

impl ServerCharge {
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for ServerCharge {
    fn drop(&mut self) {
        self.server.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Bytes queued for one connection's writer.
#[derive(Debug)]
pub(crate) struct ConnBudget {
    queued: AtomicUsize,
    server: Arc<ServerBudget>,
}

impl ConnBudget {
    pub(crate) fn new(server: Arc<ServerBudget>) -> Arc<ConnBudget> {
        Arc::new(ConnBudget {
            queued: AtomicUsize::new(0),
            server,
        })
    }

    /// Bytes queued for this connection now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Holds `bytes` against this connection and the server until the charge is dropped.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        self.server.used.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            bytes,
            budget: self.clone(),
        }
    }
}

impl ConnBudget {
    /// Holds `bytes` against this connection, taking their server share from `bulk` (bytes the node
    /// charged to the server once for a whole fan-out): a flusher splits a fan-out's charge among its
    /// members this way, with no update of the server's count per member. Should `bulk` hold fewer,
    /// the difference is charged to the server here, so the counts cannot drift either way.
    pub(crate) fn adopt(self: &Arc<Self>, bulk: &mut ServerCharge, bytes: usize) -> Charge {
        self.take_share(bulk, bytes);
        Charge {
            bytes,
            budget: self.clone(),
        }
    }

    /// Counts `bytes` as queued here, their server share moved out of `bulk`.
    fn take_share(&self, bulk: &mut ServerCharge, bytes: usize) {
        let moved = bytes.min(bulk.bytes);
        bulk.bytes -= moved;
        if moved < bytes {
            self.server.used.fetch_add(bytes - moved, Ordering::Relaxed);
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Bytes held for one connection (and so the server) until dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    bytes: usize,
    budget: Arc<ConnBudget>,
}

impl Charge {
    /// Takes over `other`'s bytes, which must be held for the same connection: a flusher gathers a
    /// connection's entries of several turns into one.
    pub(crate) fn absorb(&mut self, mut other: Charge) {
        debug_assert!(Arc::ptr_eq(&self.budget, &other.budget));
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Grows the charge by `bytes`, their server share moved out of `bulk` ([`ConnBudget::adopt`]
    /// without a new charge: no reference count taken and dropped per member of a fan-out).
    pub(crate) fn adopt_more(&mut self, bulk: &mut ServerCharge, bytes: usize) {
        self.budget.take_share(bulk, bytes);
        self.bytes += bytes;
    }

    /// Gives back `bytes` of the charge at once (they were written), keeping the rest.
    pub(crate) fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.budget.queued.fetch_sub(bytes, Ordering::Relaxed);
        self.budget.server.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.queued.fetch_sub(self.bytes, Ordering::Relaxed);
        self.budget
            .server
            .used
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A client frame on its way to the node: its bytes count against the server's budget, and its
/// connection's share of in-flight inbound bytes, until the node task has handled it.
#[derive(Debug)]
pub(crate) struct InboundCharge {
    pub _server: ServerCharge,
    pub _share: OwnedSemaphorePermit,
}

/// What [`RequestRate::check`] says of one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// Over the rate: refuse this one (answered Bad, not handled).
    Refused,
    /// Over the rate for a whole second's worth of refusals: close the connection.
    Cut,
}

/// `limits.maxRequestsPerSecond` for one connection: a token bucket that refills at the rate and holds
/// one second's worth, so a client may burst a second's requests at once. A connection refused more
/// than a second's worth of requests within one second (it sent more than twice the rate) is cut.
#[derive(Debug)]
pub(crate) struct RequestRate {
    rate: f64,
    tokens: f64,
    last: Instant,
    window_start: Instant,
    refused_in_window: u32,
    max_refused: u32,
}

impl RequestRate {
    pub(crate) fn new(per_second: u32, now: Instant) -> RequestRate {
        RequestRate {
            rate: f64::from(per_second),
            tokens: f64::from(per_second),
            last: now,
            window_start: now,
            refused_in_window: 0,
            max_refused: per_second,
        }
    }

    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed;
        }
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.refused_in_window = 0;
        }
        self.refused_in_window += 1;
        if self.refused_in_window > self.max_refused {
            Verdict::Cut
        } else {
            Verdict::Refused
        }
    }
}

/// `limits.maxInboundBytesPerSecond` for one connection: a bucket of bytes that refills at the rate
/// and holds one second's worth (at least `burst_floor`, one largest frame). A frame beyond it is not
/// refused: the reader waits until the bucket covers it, so the client's sends slow down (TCP flow
/// control; WebSocket and KCP likewise through their windows).
#[derive(Debug)]
pub(crate) struct ByteRate {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl ByteRate {
    pub(crate) fn new(per_second: usize, burst_floor: usize, now: Instant) -> ByteRate {
        let rate = per_second as f64;
        let capacity = rate.max(burst_floor as f64);
        ByteRate {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `bytes` and says how long to wait before reading on (zero within the rate).
    pub(crate) fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_count_until_dropped_wherever_they_go() {
        let server = ServerBudget::new(100);
        let (a, b) = (
            ConnBudget::new(server.clone()),
            ConnBudget::new(server.clone()),
        );
        let first = a.charge(40);
        let queue = vec![a.charge(20), b.charge(30)];
        let inbound = server.charge(15);
        assert_eq!((a.queued(), b.queued(), server.used()), (60, 30, 105));
        assert!(server.spent());
        drop(queue); // a queue dropped with its frames in it
        assert_eq!((a.queued(), b.queued(), server.used()), (40, 0, 55));
        drop((first, inbound));
        assert_eq!((a.queued(), server.used()), (0, 0));
        assert!(!server.spent());
    }

    /// A flusher merges a connection's charges and gives back what it wrote: the counters follow.
    #[test]
    fn merged_charges_give_back_what_was_written_and_the_rest_when_dropped() {
        let server = ServerBudget::new(1000);
        let conn = ConnBudget::new(server.clone());
        let mut round = conn.charge(100);
        round.absorb(conn.charge(50));
        assert_eq!((conn.queued(), server.used()), (150, 150));
        round.release(120);
        assert_eq!((conn.queued(), server.used()), (30, 30));
        round.release(1000); // never more than it holds
        assert_eq!((conn.queued(), server.used()), (0, 0));
        let mut other = conn.charge(70);
        other.absorb(round);
        drop(other);
        assert_eq!((conn.queued(), server.used()), (0, 0));
    }

    /// A fan-out charged to the server once, then split among members: the server's count never
    /// moves per member, and what no member took goes back with the bulk.
    #[test]
    fn a_bulk_charge_split_among_members_leaves_the_counts_exact() {
        let server = ServerBudget::new(1000);
        let (a, b) = (
            ConnBudget::new(server.clone()),
            ConnBudget::new(server.clone()),
        );
        let mut bulk = server.charge(300);
        let mut first = a.adopt(&mut bulk, 60);
        first.adopt_more(&mut bulk, 40);
        let second = b.adopt(&mut bulk, 100);
        assert_eq!((a.queued(), b.queued(), server.used()), (100, 100, 300));
        drop(bulk); // the third member was gone: its share goes back
        assert_eq!(server.used(), 200);
        let mut empty = server.charge(0);
        let over = a.adopt(&mut empty, 50); // more than the bulk held: charged now
        assert_eq!((a.queued(), server.used()), (150, 250));
        drop((first, second, over, empty));
        assert_eq!((a.queued(), b.queued(), server.used()), (0, 0, 0));
    }

    #[test]
    fn bytes_beyond_the_rate_wait_in_proportion() {
        let start = Instant::now();
        let mut rate = ByteRate::new(1000, 100, start);
        assert_eq!(rate.take(1000, start), Duration::ZERO, "a second's burst");
        assert_eq!(rate.take(500, start), Duration::from_millis(500));
        // Half a second later the debt is paid; the next 250 bytes wait a quarter second.
        let later = start + Duration::from_millis(500);
        assert_eq!(rate.take(250, later), Duration::from_millis(250));
        // A burst floor above the rate lets one large frame through at once.
        let mut small = ByteRate::new(10, 4096, start);
        assert_eq!(small.take(4096, start), Duration::ZERO);
    }

    #[test]
    fn the_rate_allows_a_seconds_burst_then_refuses_then_cuts() {
        let start = Instant::now();
        let mut rate = RequestRate::new(10, start);
        let verdicts: Vec<Verdict> = (0..21).map(|_| rate.check(start)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Allowed));
        assert!(verdicts[10..20].iter().all(|v| *v == Verdict::Refused));
        assert_eq!(
            verdicts[20],
            Verdict::Cut,
            "a second's worth of refusals in one second"
        );

        // A client at the rate is never refused.
        let mut steady = RequestRate::new(10, start);
        for i in 1..=100u64 {
            let now = start + Duration::from_millis(100 * i);
            assert_eq!(steady.check(now), Verdict::Allowed, "request {i}");
        }
        // Refusals spread over many seconds do not add up to a cut.
        let mut bursty = RequestRate::new(10, start);
        for second in 0..5u64 {
            let now = start + Duration::from_secs(second * 2);
            let cut = (0..20)
                .map(|_| bursty.check(now))
                .any(|v| v == Verdict::Cut);
            assert!(!cut, "second {second}");
        }
    }
}
