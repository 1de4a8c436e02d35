//! State the accept loops share: the connection cap, connection IDs, counters, and the stop switch.

use crate::throttle::Throttle;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::future::Future;

use group_core::ConnId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tokio_util::sync::CancellationToken;

use crate::conn::Shared;
use crate::inbox::Stats;

pub(crate) struct Listeners {
    pub shared: Arc<Shared>,
    /// One permit per open connection: `maxConnections`.
    pub permits: Arc<Semaphore>,
    next_conn: AtomicU64,
    pub stats: Arc<Stats>,
    /// Stops every accept loop.
    pub stop: CancellationToken,
}

impl Listeners {
    pub fn new(
        shared: Arc<Shared>,
        max_connections: usize,
        stats: Arc<Stats>,
        stop: CancellationToken,
    ) -> Self {
        Listeners {
            shared,
            permits: Arc::new(Semaphore::new(max_connections)),
            next_conn: AtomicU64::new(1),
            stats,
            stop,
        }
    }

    /// A permit for one more connection, or why not (counted): `maxConnections` are open, or the
    /// server's buffers hold `maxBufferedBytes`.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, &'static str> {
        let permit = if self.shared.budget.spent() {
            Err("limits.maxBufferedBytes reached")
        } else {
            let permit = self.permits.clone().try_acquire_owned();
            permit.map_err(|_| "limits.maxConnections reached")
        };
        let counter = if permit.is_ok() {
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

/// Tells a connection refused at `maxConnections` or `maxBufferedBytes` why, best effort (one
/// non-blocking write of a closing notice, 14 CLOSED_SERVER_FULL), then drops it. A WebSocket client
/// would first need a handshake: it only sees the close.
fn tell_full(stream: tokio::net::TcpStream, why: &str) {
    let notice = group_core::proto::encode_error_payload(
        group_core::proto::VER_CONTROL,
        group_core::proto::cmd::CLOSING,
        group_core::proto::Status::Bad,
        group_core::proto::code::CLOSED_SERVER_FULL,
        None,
        &format!("server full: {why}"),
    );
    let _ = stream.try_write(&notice);
}

/// Accepts stream connections until `stop` fires: admits each within `maxConnections` (refusing and
/// counting the rest), sets TCP_NODELAY, and spawns `serve` for it. Shared by TCP and WebSocket.
pub(crate) async fn accept_streams<F, Fut>(
    listener: TcpListener,
    listeners: Arc<Listeners>,
    transport: &str,
    serve: F,
) where
    F: Fn(TcpStream, ConnId, Arc<Shared>, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = listeners.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly rather than spin.
                tracing::warn!("{transport} accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let permit = match listeners.admit() {
            Ok(permit) => permit,
            Err(why) => {
                static REFUSED: Throttle = Throttle::new();
                if let Some(more) = REFUSED.allow() {
                    tracing::warn!(%peer, "refusing {transport} connection: {why} (and {more} more since the last line)");
                }
                tell_full(stream, why);
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "set_nodelay failed: {e}");
        }
        let conn = listeners.next_conn();
        tokio::spawn(serve(stream, conn, listeners.shared.clone(), permit));
    }
}
