//! Deadlines: one min-heap of timer entries, checked lazily when they come due.
//!
//! An entry says "look at this object at this time", not "do this at this time": when it pops, the
//! object's current state decides whether anything happens, and the entry is re-armed at the true
//! deadline if that moved later. Each object keeps at most one live entry per timer kind (guarded by an
//! `armed` flag or an epoch), so the heap is bounded by connections + 3 x groups + pending
//! remote joins + 1.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{CloseReason, ConnId, DiscardReason, Event, Node};
use crate::id::GroupId;
use crate::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Idle check for a connection; the `u64` is the connection's epoch.
    Idle(ConnId, u64),
    /// The connection (at this epoch) must have said Hello by now.
    HelloDeadline(ConnId, u64),
    /// Emptiness check for an allow_empty group.
    GroupTtl(GroupId),
    /// Merge-buffer flush.
    Flush(GroupId),
    /// Tick callback; the `u64` is the tick's generation.
    Tick(GroupId, u64),
    /// A remote join's answer is due: (op, attempt that armed it).
    JoinTimeout(u64, u32),
    /// Time to send digests to the nodes holding copies of this node's groups.
    MeshSync,
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// (deadline, insertion sequence, kind): the sequence keeps equal deadlines in FIFO order.
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    seq: u64,
}

impl Timers {
    pub fn arm(&mut self, at: Instant, kind: TimerKind) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, kind)));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, _, kind))| kind)
    }

    /// Entries in the heap, live or stale: tests check that it stays bounded.
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

impl Node {
    /// Runs everything due at or before `now`: idle discards, TTL deletions, merge flushes, ticks.
    pub(super) fn timeout(&mut self, now: Instant) {
        // Bounded: each popped entry re-arms at most one entry with a deadline later than `now`.
        while let Some(kind) = self.timers.pop_due(now) {
            match kind {
                TimerKind::Idle(conn, epoch) => self.idle_check(conn, epoch, now),
                TimerKind::HelloDeadline(conn, epoch) => {
                    if self.sessions.is_ungreeted(conn, epoch) {
                        self.close(conn, CloseReason::HelloTimeout, DiscardReason::Idle);
                    }
                }
                TimerKind::GroupTtl(id) => self.ttl_check(id, now),
                TimerKind::Flush(id) => {
                    if let Some(group) = self.groups.get_mut(&id) {
                        group.flush_armed = false;
                        if !group.pending.is_empty() {
                            let before = self.out.transmits.len();
                            group.flush(&mut self.out.transmits);
                            self.counters.merge_flushes += 1;
                            self.counters.deliveries += (self.out.transmits.len() - before) as u64;
                        }
                    }
                }
                TimerKind::JoinTimeout(op, attempt) => self.join_timed_out(op, attempt),
                TimerKind::MeshSync => self.send_digests(),
                TimerKind::Tick(id, generation) => {
                    let Some(tick) = self.groups.get(&id).and_then(|g| g.tick) else {
                        continue;
                    };
                    if tick.generation == generation {
                        self.out.events.push_back(Event::Tick { group: id });
                        self.timers.arm(
                            now.saturating_add(tick.interval),
                            TimerKind::Tick(id, generation),
                        );
                    }
                }
            }
        }
    }

    fn idle_check(&mut self, conn: ConnId, epoch: u64, now: Instant) {
        let ttl = self.config.limits.connection_ttl;
        let Some(deadline) = self.sessions.idle_deadline(conn, epoch, ttl) else {
            return; // Closed already, or a stale entry of a reused ID.
        };
        let deadline = deadline.max(self.resumed_at.saturating_add(super::STALL_GRACE));
        if deadline > now {
            self.timers.arm(deadline, TimerKind::Idle(conn, epoch));
            return;
        }
        self.close(conn, CloseReason::Idle, DiscardReason::Idle);
    }

    fn ttl_check(&mut self, id: GroupId, now: Instant) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        group.ttl_timer_armed = false;
        // Only the owner expires a group, and only while it is empty (members may have come back through
        // the mesh since the timer was armed).
        if !group.members.is_empty() || !group.owned_by(self.config.addr) {
            group.empty_since = None;
            return;
        }
        let Some(since) = group.empty_since else {
            return;
        };
        if group.is_static {
            return;
        }
        let deadline = since.saturating_add(group.ttl);
        if deadline > now {
            group.ttl_timer_armed = true;
            self.timers.arm(deadline, TimerKind::GroupTtl(id));
            return;
        }
        self.delete_group(&id);
    }
}
