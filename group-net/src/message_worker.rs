//! Server code that builds discard and rejoin messages runs on a thread of its own (one of the runtime's
//! blocking threads, for as long as the node lives), under a deadline.
//!
//! The core asks for these messages while it handles a session's end or a failover, on the node task,
//! and needs the bytes at once. A callback that blocks (a database, a lock in a game engine) would freeze
//! every group of the node. Here the node waits at most [`MESSAGE_DEADLINE`] for each message; a callback
//! that misses it has its message sent empty, counted and logged, and while it is still running every
//! further message is sent empty without waiting. So no callback can hold the node for longer than the
//! deadline, however slow it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use bytes::Bytes;
use group_core::{GroupId, Sid};

use crate::inbox::Stats;
use crate::throttle::Throttle;

/// How long the node waits for one discard or rejoin message.
pub const MESSAGE_DEADLINE: Duration = Duration::from_millis(20);

/// A message builder as the core calls it.
pub(crate) type MessageFn = Box<dyn FnMut(&GroupId, &str, &Sid) -> Bytes + Send>;

struct Job {
    group: GroupId,
    uid: String,
    sid: Sid,
    reply: SyncSender<Bytes>,
}

/// Wraps `produce` (`kind`: "discard" or "rejoin", for logs and the thread's name) so that it runs on a
/// thread of its own and the caller waits at most [`MESSAGE_DEADLINE`].
pub(crate) fn under_deadline(
    kind: &'static str,
    mut produce: MessageFn,
    stats: Arc<Stats>,
) -> MessageFn {
    let (jobs, inbox) = sync_channel::<Job>(1);
    let busy = Arc::new(AtomicBool::new(false));
    let worker_busy = busy.clone();
    let work = move || {
        for job in inbox {
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                produce(&job.group, &job.uid, &job.sid)
            }));
            worker_busy.store(false, Ordering::Release);
            let _ = job.reply.send(built.unwrap_or_default());
        }
    };
    // On the runtime's blocking pool when there is one: its threads are the ones the embedder set up
    // (the C ABI blocks SIGPIPE there and knows them as the server's own).
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn_blocking(work));
    } else if let Err(e) = std::thread::Builder::new()
        .name(format!("group-{kind}-msg"))
        .spawn(work)
    {
        tracing::error!("cannot start the {kind} message thread ({e}): {kind} messages are empty");
        return Box::new(|_, _, _| Bytes::new());
    }
    Box::new(move |group, uid, sid| {
        let late = |why: &str| {
            stats.messages_late.fetch_add(1, Ordering::Relaxed);
            static LATE: Throttle = Throttle::new();
            if let Some(more) = LATE.allow() {
                tracing::warn!(%group, uid, "a {kind} message was sent empty: {why} (and {more} more since the last line)");
            }
            Bytes::new()
        };
        if busy.swap(true, Ordering::AcqRel) {
            return late("its callback is still building an earlier one");
        }
        let (reply, answer) = sync_channel(1);
        let job = Job {
            group: *group,
            uid: uid.to_string(),
            sid: *sid,
            reply,
        };
        if jobs.send(job).is_err() {
            return Bytes::new(); // the thread is gone: nothing can build the message
        }
        answer.recv_timeout(MESSAGE_DEADLINE).unwrap_or_else(|_| {
            late(&format!(
                "its callback took longer than {MESSAGE_DEADLINE:?}"
            ))
        })
    })
}
