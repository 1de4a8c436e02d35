//! `server.writerThreads`: where TCP connections' writes run.
//!
//! Why: on the server's multi-thread runtime a member's writer runs as soon as the node task hands it a
//! turn's frames, on whichever worker is free, so workers park and wake all the time and each write
//! carries few frames. A thread of the pool runs its writers one after another on a single-threaded
//! runtime, the way redis's event loop writes its clients: the node's next turns gather meanwhile, so
//! each write carries more frames, and the thread wakes once for a batch of writers instead of a worker
//! per writer. On the 2-core benchmark VM one writer thread gave up to 40% more deliveries per server
//! core-second flat out, and was level or a little better at fixed rates, with the same or a lower p99
//! (docs/BENCHMARKS.md).
//!
//! Beside a runtime of one worker, a thread of its own costs a hand-over between threads (a wake-up)
//! for every turn. There the pool's one "thread" is the server's own runtime, and the
//! flusher writes between the node's turns on the same thread, the way redis does everything: no
//! hand-over between threads and no sleep between reading a broadcast and writing it. On the 2-core VM,
//! against one worker with a writer thread, that cost 16-39% less CPU per delivery to a group of 100
//! members (flat out and at steady rates, p99 the same or lower), was level with 100 groups of 10 all
//! sending, and cost 15-20% more with 1,000 members at 1,000 msg/s, with a lower p50
//! (docs/DEPLOYING.md, "Threads and cores").
//!
//! So `"auto"` (the default) writes on the runtime itself when it has one worker (or is a
//! current-thread runtime), starts one writer thread beside two workers, and none beside more until
//! measured there, since one thread also bounds the writes to one core.
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

/// Where the writes of `server.writerThreads` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writers {
    /// Each connection's writer task, on the server's runtime, gets its frames from the node.
    Tasks,
    /// One flusher on the server's runtime writes every plain TCP connection between the node's turns.
    OnRuntime,
    /// This many threads of their own, each with a flusher.
    Threads(usize),
}

impl Writers {
    /// `server.writerThreads`: a number of threads (0: the connections' writer tasks), or `None` for
    /// `"auto"`: on the runtime itself when it has one worker or is single-threaded; one thread beside
    /// a runtime of two workers, where that measured better on every load; none beside more (not
    /// measured yet).
    pub fn from_config(threads: Option<usize>) -> Writers {
        match threads {
            Some(0) => Writers::Tasks,
            Some(threads) => Writers::Threads(threads),
            None if single_threaded() => Writers::OnRuntime,
            None => match Handle::try_current().map(|runtime| runtime.metrics().num_workers()) {
                Ok(2) => Writers::Threads(1),
                _ => Writers::Tasks,
            },
        }
    }
}

/// True when the current runtime runs its tasks on one thread: a current-thread runtime, or a
/// multi-thread runtime of one worker. The node task and the flusher then take turns with the
/// readers on that thread instead of waking other threads.
pub(crate) fn single_threaded() -> bool {
    Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread
            || runtime.metrics().num_workers() == 1
    })
}

/// The writer threads' runtimes. The threads stop when the server stops or when the pool is dropped,
/// whichever comes first, so a server whose start failed after the pool began leaves none behind (a
/// host dropping its runtime waits for every blocking thread).
pub(crate) struct WriterPool {
    threads: Vec<Handle>,
    /// The one "thread" is the server's own runtime ([`Writers::OnRuntime`]).
    on_runtime: bool,
    _stop: DropGuard,
}

impl WriterPool {
    /// A pool whose one thread is the current runtime: its flusher writes between the node's turns.
    pub fn on_server_runtime(stop: &CancellationToken) -> WriterPool {
        WriterPool {
            threads: vec![Handle::current()],
            on_runtime: true,
            _stop: stop.child_token().drop_guard(),
        }
    }

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
            on_runtime: false,
            _stop: stop.drop_guard(),
        })
    }

    /// True when the pool's one thread is the server's own runtime, whose other tasks (the node's
    /// turns among them) run only when its flusher lets them.
    pub fn is_server_runtime(&self) -> bool {
        self.on_runtime
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
