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

/// The accept queue asked of the kernel (which caps it at `net.core.somaxconn`). The standard library's
/// 128 overflowed under a burst of 2000 connects from one loopback client: every overflow drops a SYN,
/// and that client's connect waited for the kernel's 1 s retransmission, 13 times over 2000 connects
/// (`nstat` TcpExtListenOverflows). A reconnect storm after a node restart is that burst.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening TCP socket with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind`
/// sets it, so a restarted node can bind again while old connections linger in TIME_WAIT).
pub(crate) fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// 1000 connects while nobody accepts: each must complete from the accept queue. With the standard
    /// library's backlog of 128 the 130th connect's SYN is dropped and it waits out retransmissions.
    #[tokio::test]
    async fn a_burst_of_connects_waits_in_the_accept_queue() -> std::io::Result<()> {
        let listener = listen("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
        let addr = listener.local_addr()?;
        let mut connected = Vec::new();
        for i in 0..1000 {
            let connect =
                tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(addr));
            match connect.await {
                Ok(stream) => connected.push(stream?),
                Err(_) => panic!("connect {i} found the accept queue full"),
            }
        }
        drop(listener);
        Ok(())
    }
}
