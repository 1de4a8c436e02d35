//! Server events for the host: sessions opened and discarded, groups deleted, ticks. Two ways to receive them, to
//! fit both kinds of host: a queue drained from the host's own thread (`group_server_poll_event`, for a
//! game loop), and a callback on the server's thread (`group_server_set_event_callback`). Both see every
//! event. The queue holds at most [`GROUP_MAX_QUEUED_EVENTS`]; beyond that the oldest are dropped (and logged).

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::Mutex;

use group_core::Event;

use crate::host::Host;
use crate::panic::guard;
use crate::result::group_result;
use crate::server::group_server;
use crate::slice::GROUP_ID_LEN;

/// Most events the polling queue holds.
pub const GROUP_MAX_QUEUED_EVENTS: usize = 65536;

/// What an event is.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_event_kind {
    /// A client said Hello: `uid` and `sid` are set.
    GROUP_EVENT_SESSION_OPENED = 1,
    /// A session ended and its user left every group: `uid`, `sid` and `reason` are set.
    GROUP_EVENT_SESSION_DISCARDED = 2,
    /// A group was deleted (emptied, or its ttl ran out): `group` is set.
    GROUP_EVENT_GROUP_DELETED = 3,
    /// A group's tick (set with `group_server_set_tick`) fired: `group` is set.
    GROUP_EVENT_TICK = 4,
    /// A broadcast queued with `group_server_broadcast_nowait` was refused: `group` and `uid` are set, and
    /// `reason` is the protocol code (400 no such group, 401 not a member, 6 no such user).
    GROUP_EVENT_BROADCAST_REFUSED = 5,
}

/// One event. The uid is handed out separately (a buffer for polling, a pointer for the callback).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct group_event {
    /// A `group_event_kind` value.
    pub kind: u32,
    /// The group, for `GROUP_EVENT_GROUP_DELETED` and `GROUP_EVENT_TICK`; zeros otherwise.
    // A literal, not GROUP_ID_LEN: the C# generator does not resolve constants in array lengths.
    pub group: [u8; 52],
    /// The session ID, for session events; zeros otherwise.
    pub sid: [u8; 16],
    /// Length of the uid, for session events; 0 otherwise.
    pub uid_len: usize,
    /// Why a session was discarded: 1 Fin, 2 disconnected, 3 idle, 4 replaced by a newer Hello, 5 closed for
    /// a protocol violation. For `GROUP_EVENT_BROADCAST_REFUSED`: the protocol code. 0 otherwise.
    pub reason: u32,
}

/// The event callback: `event` and `uid` (`event->uid_len` bytes) live only during the call. Called on
/// the server's node thread for every event; it must return at once and must not call back into blocking
/// functions of this server (they return `GROUP_RESULT_WRONG_THREAD`).
pub type group_event_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const group_event, uid: *const u8)>;

/// An event waiting in the queue, with its uid.
pub(crate) struct Queued {
    pub event: group_event,
    pub uid: String,
}

type EventCallback = unsafe extern "C" fn(*mut c_void, *const group_event, *const u8);

/// The queue and the callback, shared between the server's node task and the host.
#[derive(Default)]
pub(crate) struct Events {
    queue: Mutex<VecDeque<Queued>>,
    /// Events dropped from a full queue (a host that never polls drops every event past the bound).
    dropped: std::sync::atomic::AtomicU64,
    callback: Mutex<Option<Host<EventCallback>>>,
}

impl Events {
    pub fn set_callback(&self, callback: group_event_fn, userdata: *mut c_void) {
        let host = callback.map(|callback| Host { callback, userdata });
        *self.callback.lock().unwrap_or_else(|e| e.into_inner()) = host;
    }

    /// Takes the next event if `fits` accepts its uid length (otherwise leaves it queued).
    pub fn pop_if(&self, fits: impl FnOnce(&Queued) -> bool) -> Option<Option<Queued>> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let front = queue.front()?;
        if fits(front) {
            Some(queue.pop_front())
        } else {
            Some(None)
        }
    }

    /// Records a refused `group_server_broadcast_nowait` (called on the node task).
    pub fn record_refused(&self, group: &group_core::GroupId, uid: String, code: u16) {
        let (mut event, _) = of_group(group_event_kind::GROUP_EVENT_BROADCAST_REFUSED, group);
        event.uid_len = uid.len();
        event.reason = u32::from(code);
        self.deliver(event, uid);
    }

    /// Records a core event (called on the node task).
    pub fn record(&self, event: &Event) {
        let Some((event, uid)) = translate(event) else {
            return;
        };
        self.deliver(event, uid);
    }

    /// Hands an event to the callback and the queue.
    fn deliver(&self, event: group_event, uid: String) {
        // Copied out: no lock is held while the host's code runs, so the callback may replace itself
        // (`group_server_set_event_callback` from inside the callback) without a deadlock.
        let host = self
            .callback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| (h.callback, h.userdata));
        if let Some((callback, userdata)) = host {
            // SAFETY: the host's callback, called as documented, with pointers valid during the call.
            unsafe { callback(userdata, &event, uid.as_ptr()) };
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= GROUP_MAX_QUEUED_EVENTS {
            queue.pop_front();
            let dropped = 1 + self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Logged at 1, 2, 4, 8, ... drops: a host that only uses the callback never polls, and
            // must not get a line per event.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "event queue full ({GROUP_MAX_QUEUED_EVENTS}): dropping the oldest events; \
                     poll with group_server_poll_event"
                );
            }
        }
        queue.push_back(Queued { event, uid });
    }
}

fn blank() -> group_event {
    group_event {
        kind: 0,
        group: [0; GROUP_ID_LEN],
        sid: [0; 16],
        uid_len: 0,
        reason: 0,
    }
}

fn session(kind: group_event_kind, uid: &str, sid: [u8; 16], reason: u32) -> (group_event, String) {
    let mut event = blank();
    event.kind = kind as u32;
    event.sid = sid;
    event.uid_len = uid.len();
    event.reason = reason;
    (event, uid.to_string())
}

fn of_group(kind: group_event_kind, group: &group_core::GroupId) -> (group_event, String) {
    let mut event = blank();
    event.kind = kind as u32;
    event.group = *group.as_bytes();
    (event, String::new())
}

fn translate(event: &Event) -> Option<(group_event, String)> {
    match event {
        Event::SessionOpened { uid, sid, .. } => Some(session(
            group_event_kind::GROUP_EVENT_SESSION_OPENED,
            uid,
            sid.0,
            0,
        )),
        Event::SessionDiscarded {
            uid, sid, reason, ..
        } => {
            let reason = match reason {
                group_core::DiscardReason::Fin => 1,
                group_core::DiscardReason::Disconnected => 2,
                group_core::DiscardReason::Idle => 3,
                group_core::DiscardReason::Replaced => 4,
                _ => 5,
            };
            Some(session(
                group_event_kind::GROUP_EVENT_SESSION_DISCARDED,
                uid,
                sid.0,
                reason,
            ))
        }
        Event::GroupDeleted { group } => {
            Some(of_group(group_event_kind::GROUP_EVENT_GROUP_DELETED, group))
        }
        Event::Tick { group } => Some(of_group(group_event_kind::GROUP_EVENT_TICK, group)),
        _ => None,
    }
}

/// Sets (or with NULL clears) the event callback: `callback(userdata, event, uid)` for every event, on the
/// server's node thread (see `group_event_fn`). The polling queue receives every event as well. Callable
/// from any thread, the event callback itself included (no lock is held while it runs); a call of the
/// previous callback already under way on the node thread still finishes.
///
/// # Safety
/// `server` as in `group_server_start`; `callback` and `userdata` usable from the server's thread until
/// replaced (and any call under way has returned) or the server is freed. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_set_event_callback(
    server: *const group_server,
    callback: group_event_fn,
    userdata: *mut c_void,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: events are internally locked).
        let server = unsafe { crate::server::server_ref(server) }?;
        server.events().set_callback(callback, userdata);
        Ok(())
    })
}

/// Takes the next event from the queue without waiting: writes it to `*out` and its uid (`out->uid_len`
/// bytes, not NUL-terminated) to `uid_buf`. `GROUP_RESULT_NOT_FOUND` when the queue is empty;
/// `GROUP_RESULT_BUFFER_TOO_SMALL` (the event stays queued, `*needed` = the uid length) when `uid_buf_len`
/// is too small (64 bytes always suffice: uids are at most 64 bytes). Meant for a game loop's thread.
///
/// # Safety
/// `server` as in `group_server_start`; `out` writable; `uid_buf` `uid_buf_len` writable bytes; `needed`
/// writable. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_poll_event(
    server: *const group_server,
    out: *mut group_event,
    uid_buf: *mut u8,
    uid_buf_len: usize,
    needed: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: events are internally locked).
        let server = unsafe { crate::server::server_ref(server) }?;
        if out.is_null() || needed.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        let mut uid_len = 0;
        let taken = server
            .events()
            .pop_if(|q| {
                uid_len = q.uid.len();
                uid_len <= uid_buf_len
            })
            .ok_or(group_result::GROUP_RESULT_NOT_FOUND)?;
        // SAFETY: non-null and, per the contract, writable.
        unsafe { needed.write(uid_len) };
        let queued = taken.ok_or(group_result::GROUP_RESULT_BUFFER_TOO_SMALL)?;
        if uid_len > 0 {
            if uid_buf.is_null() {
                return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
            }
            // SAFETY: `uid_buf` holds `uid_buf_len >= uid_len` writable bytes per the contract.
            unsafe { std::ptr::copy_nonoverlapping(queued.uid.as_ptr(), uid_buf, uid_len) };
        }
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(queued.event) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{
        group_server_free, group_server_new, group_server_port, group_server_start,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts the events the callback sees.
    unsafe extern "C" fn count(userdata: *mut c_void, event: *const group_event, _uid: *const u8) {
        // SAFETY: the test passes an AtomicUsize as userdata, and the library a valid event.
        let (counter, event) = unsafe { (&*(userdata as *const AtomicUsize), &*event) };
        if event.kind == group_event_kind::GROUP_EVENT_SESSION_OPENED as u32 {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Replaces the callback of the `Events` in `userdata` with none, from inside the callback.
    unsafe extern "C" fn unregister(userdata: *mut c_void, _: *const group_event, _: *const u8) {
        // SAFETY: the test passes a live `Events` as userdata.
        let events = unsafe { &*(userdata as *const Events) };
        events.set_callback(None, std::ptr::null_mut());
    }

    #[test]
    fn the_event_callback_may_replace_itself_without_a_deadlock() {
        let events = std::sync::Arc::new(Events::default());
        let userdata = std::sync::Arc::as_ptr(&events) as *mut c_void;
        events.set_callback(Some(unregister), userdata);
        let group = group_core::GroupId::from_bytes(&[b'0'; GROUP_ID_LEN]).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let delivering = events.clone();
        std::thread::spawn(move || {
            delivering.record_refused(&group, "a".into(), 401);
            delivering.record_refused(&group, "b".into(), 401);
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("delivery returned: no lock is held while the callback runs");
        assert!(
            events.callback.lock().unwrap().is_none(),
            "it replaced itself"
        );
        assert_eq!(events.queue.lock().unwrap().len(), 2, "both were queued");
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let events = Events::default();
        let group = group_core::GroupId::from_bytes(&[b'0'; GROUP_ID_LEN]).unwrap();
        for n in 0..GROUP_MAX_QUEUED_EVENTS + 3 {
            events.record_refused(&group, n.to_string(), 401);
        }
        assert_eq!(events.dropped.load(Ordering::Relaxed), 3);
        let oldest = events.pop_if(|_| true).flatten().unwrap();
        assert_eq!(oldest.uid, "3", "the three oldest went");
    }

    #[test]
    fn events_reach_the_callback_and_the_queue() {
        let config = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;
        let counter = Box::new(AtomicUsize::new(0));
        let mut server: *mut group_server = std::ptr::null_mut();
        let mut port = 0u16;
        // SAFETY: real pointers; the counter outlives the server, which is freed below.
        unsafe {
            group_server_new(config.as_ptr(), config.len(), 1, &mut server);
            let userdata = &*counter as *const AtomicUsize as *mut c_void;
            assert_eq!(
                group_server_set_event_callback(server, Some(count), userdata),
                group_result::GROUP_RESULT_OK
            );
            group_server_start(server);
            group_server_port(server, 1, &mut port);
        }
        let client_side = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        client_side.block_on(async {
            let mut c = group_net::client::Client::connect_tcp(([127, 0, 0, 1], port).into())
                .await
                .unwrap();
            c.hello("zoe", "").await.unwrap();
        });
        // The node records events right after it queues the Hello's response: wait for it, briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counter.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            counter.load(Ordering::SeqCst),
            1,
            "the callback saw the Hello"
        );
        let mut event = std::mem::MaybeUninit::<group_event>::uninit();
        let (mut small, mut uid) = ([0u8; 2], [0u8; 64]);
        let mut needed = 0usize;
        // SAFETY: real buffers and out-parameters; the server lives until freed.
        unsafe {
            let r = group_server_poll_event(
                server,
                event.as_mut_ptr(),
                small.as_mut_ptr(),
                2,
                &mut needed,
            );
            assert_eq!(
                (r, needed),
                (group_result::GROUP_RESULT_BUFFER_TOO_SMALL, 3)
            );
            let r = group_server_poll_event(
                server,
                event.as_mut_ptr(),
                uid.as_mut_ptr(),
                64,
                &mut needed,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let event = event.assume_init();
            assert_eq!(
                event.kind,
                group_event_kind::GROUP_EVENT_SESSION_OPENED as u32
            );
            assert_eq!(&uid[..event.uid_len], b"zoe");
            group_server_free(server);
        }
    }
}
