//! A big fan-out's members split by writer thread, so that the node task hands each thread's flusher
//! the fan-out once (its frame and the thread's member list) instead of an entry per member.
//!
//! Why: per member, the node task looked up the writer, kept a pending batch, charged two byte
//! budgets, counted the entry in flight and wrote a queue entry that the flusher then read on its own
//! core. With 100 members flat out that was about a tenth of the server's CPU, most of it atomic updates
//! of cache lines the flusher had just written (`perf annotate`, docs/benchmarks/FANOUT-LOG.md). A
//! group's consecutive fan-outs go to the same members, so the split is kept and reused until the list
//! or the set of writers changes.

use std::sync::Arc;

use group_core::ConnId;

use crate::inbox::{ConnMap, ConnWriter};

/// The last fan-out's members by writer thread.
pub(crate) struct RunSplit {
    /// The member list the split was made from; emptied once a writer opened or closed (a member may
    /// have moved between the lists).
    source: Vec<ConnId>,
    /// By writer thread: its plain TCP members, in the fan-out's order.
    per_thread: Vec<Arc<[ConnId]>>,
    /// The other members (WebSocket, UDP, TLS, a writer on the runtime, or gone), in order: the node
    /// queues their frames one by one.
    others: Vec<ConnId>,
}

impl RunSplit {
    pub fn new(threads: usize) -> Self {
        RunSplit {
            source: Vec::new(),
            per_thread: vec![Arc::from([]); threads],
            others: Vec::new(),
        }
    }

    /// A writer opened or closed: the next split is made afresh.
    pub fn forget(&mut self) {
        self.source.clear();
    }

    /// Splits `conns` by their writers' threads, or keeps the last split if it was of the same list.
    pub fn split(&mut self, conns: &[ConnId], writers: &ConnMap<ConnWriter>) {
        if !conns.is_empty() && self.source == conns {
            return;
        }
        self.source.clear();
        self.source.extend_from_slice(conns);
        self.others.clear();
        let mut lists = vec![Vec::new(); self.per_thread.len()];
        for &conn in conns {
            let writer = writers.get(&conn);
            let thread = writer
                .filter(|w| w.direct.is_some())
                .and_then(|w| w.flusher);
            match thread.and_then(|thread| lists.get_mut(thread)) {
                Some(list) => list.push(conn),
                None => self.others.push(conn),
            }
        }
        self.per_thread = lists.into_iter().map(Arc::from).collect();
    }

    /// The last split's members on writer thread `thread`.
    pub fn thread(&self, thread: usize) -> Option<&Arc<[ConnId]>> {
        self.per_thread.get(thread)
    }

    /// The last split's members on no writer thread.
    pub fn others(&self) -> &[ConnId] {
        &self.others
    }
}
