//! State the accept loops share: the connection cap, connection IDs, counters, and the stop switch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use group_core::ConnId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::conn::Shared;
use crate::node_task::{Kill, Stats};

pub(crate) struct Listeners {
    pub shared: Arc<Shared>,
    /// One permit per open connection: `maxConnections`.
    pub permits: Arc<Semaphore>,
    next_conn: AtomicU64,
    pub stats: Arc<Stats>,
    /// Stops every accept loop.
    pub stop: Arc<Kill>,
}

impl Listeners {
    pub fn new(shared: Arc<Shared>, max_connections: usize, stats: Arc<Stats>) -> Self {
        Listeners {
            shared,
            permits: Arc::new(Semaphore::new(max_connections)),
            next_conn: AtomicU64::new(1),
            stats,
            stop: Arc::new(Kill::default()),
        }
    }

    /// A permit for one more connection, or `None` (counted) when `maxConnections` are open.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        let counter = if permit.is_some() {
            &self.stats.accepted
        } else {
            &self.stats.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        permit
    }

    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}
