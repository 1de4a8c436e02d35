//! `server.writerThreads`: TCP connections' writers on threads of their own.
//!
//! Why: on the server's multi-thread runtime a member's writer runs as soon as the node task hands it a
//! turn's frames, on whichever worker is free, so workers park and wake all the time and each write
//! carries few frames. A thread of the pool runs its writers one after another on a single-threaded
//! runtime, the way redis's event loop writes its clients: the node's next turns gather meanwhile, so
//! each write carries more frames, and the thread wakes once for a batch of writers instead of a worker
//! per writer. On the 2-core benchmark VM one writer thread gave up to 40% more deliveries per server
//! core-second flat out, and was level or a little better at fixed rates, with the same or a lower p99
//! (docs/BENCHMARKS.md).
//! So `"auto"` (the default) starts one beside a runtime of two workers or fewer; with more it starts
//! none until measured there, since one thread also bounds the writes to one core.
//!
//! The threads are the server runtime's blocking threads, so whatever the embedder set up for that
//! runtime's threads (the C ABI blocks SIGPIPE on them) applies. Each runs a current-thread runtime until
//! the server stops. The sockets stay registered with the server's runtime, whose I/O driver wakes a
//! writer when its full socket has room again.

use std::future::Future;
use std::time::Duration;

use group_core::ConnId;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long the server's start waits for a writer thread to come up.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// `server.writerThreads: "auto"`: one writer thread when the server runs on a multi-thread runtime of
/// at most two workers, where it measured better on every load; none on a single-threaded runtime
/// (its writers already run between the node's turns) or on more workers (not measured yet).
pub(crate) fn auto_threads() -> usize {
    let Ok(runtime) = Handle::try_current() else {
        return 0;
    };
    let multi_thread = runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
    usize::from(multi_thread && runtime.metrics().num_workers() <= 2)
}

/// The writer threads' runtimes. The threads stop when the server stops or when the pool is dropped,
/// whichever comes first, so a server whose start failed after the pool began leaves none behind (a
/// host dropping its runtime waits for every blocking thread).
pub(crate) struct WriterPool {
    threads: Vec<Handle>,
    _stop: DropGuard,
}

impl WriterPool {
    /// Starts `threads` writer threads (at least one) on the current runtime's blocking pool, and returns
    /// once each has its runtime. The writers still running when they stop are dropped (their
    /// connections are ending).
    pub async fn start(threads: usize, stop: &CancellationToken) -> std::io::Result<WriterPool> {
        let stop = stop.child_token();
        let mut handles = Vec::with_capacity(threads.max(1));
        for _ in 0..threads.max(1) {
            let (started, handle) = tokio::sync::oneshot::channel();
            let stop = stop.clone();
            drop(tokio::task::spawn_blocking(move || {
                // Time only (a writer's last words are timed): its sockets belong to the server's
                // runtime and its I/O driver. Without a driver of its own the thread parks on a futex
                // that a wake-up touches only when the thread sleeps, instead of one `write` to an
                // eventfd for every writer the node wakes.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                runtime.block_on(stop.cancelled());
            }));
            let handle = tokio::time::timeout(START_TIMEOUT, handle)
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    std::io::Error::other("a writer thread did not start (server.writerThreads)")
                })??;
            handles.push(handle);
        }
        Ok(WriterPool {
            threads: handles,
            _stop: stop.drop_guard(),
        })
    }

    /// How many threads the pool has.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// The thread connection `conn`'s writer runs on (connections are spread by ID).
    pub fn thread_of(&self, conn: ConnId) -> usize {
        usize::try_from(conn.0).unwrap_or(0) % self.threads.len().max(1)
    }

    /// Runs connection `conn`'s writer on its thread.
    pub fn spawn<F>(&self, conn: ConnId, writer: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_on(self.thread_of(conn), writer)
    }

    /// Runs `task` on thread `thread` (a flusher: one per thread).
    pub fn spawn_on<F>(&self, thread: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.threads.get(thread) {
            Some(thread) => thread.spawn(task),
            None => tokio::spawn(task),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn server_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Drops `runtime` on a thread of its own: a runtime's drop waits for every blocking thread, so it
    /// returns only once the writer threads have ended. False if it did not within 10 s.
    fn drop_returns(runtime: tokio::runtime::Runtime) -> bool {
        let (dropped, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(runtime);
            let _ = dropped.send(());
        });
        done.recv_timeout(Duration::from_secs(10)).is_ok()
    }

    #[test]
    fn writers_run_on_the_pool_threads_by_connection_until_the_server_stops() {
        let runtime = server_runtime();
        let stop = CancellationToken::new();
        let pool = runtime.block_on(async {
            let pool = WriterPool::start(2, &stop).await.unwrap();
            let thread = |conn| pool.spawn(ConnId(conn), async { std::thread::current().id() });
            let here = std::thread::current().id();
            let (zero, one, two) = (thread(0).await, thread(1).await, thread(2).await);
            let (zero, one, two) = (zero.unwrap(), one.unwrap(), two.unwrap());
            assert_ne!(zero, here, "not on the server's runtime");
            assert_ne!(zero, one, "connections spread over the threads");
            assert_eq!(zero, two, "a connection's thread is fixed by its ID");
            pool
        });
        stop.cancel();
        assert!(
            drop_returns(runtime),
            "the writer threads stop with the server"
        );
        drop(pool);
    }

    /// A server whose start fails after its pool began drops the pool without stopping: the threads end
    /// with the pool, or the host's runtime would never finish dropping.
    #[test]
    fn a_dropped_pool_leaves_no_thread_behind() {
        let runtime = server_runtime();
        let stop = CancellationToken::new();
        runtime.block_on(async { drop(WriterPool::start(2, &stop).await.unwrap()) });
        assert!(
            drop_returns(runtime),
            "the writer threads end with their pool"
        );
        drop(stop);
    }
}
