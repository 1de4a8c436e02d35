//! Server events for the host: sessions opened and discarded, groups deleted, ticks. Two ways to receive them, to
//! fit both kinds of host: a queue drained from the host's own thread (`group_server_poll_event`, for a
//! game loop), and a callback on the server's thread (`group_server_set_event_callback`). Both see every
//! event. The queue holds at most [`GROUP_MAX_QUEUED_EVENTS`]; beyond that the oldest are dropped (and logged).

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::Mutex;

use group_core::Event;

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

/// The queue and the callback, shared between the server's node task and the host.
#[derive(Default)]
pub(crate) struct Events {
    queue: Mutex<VecDeque<Queued>>,
    callback: Mutex<Option<HostCallback>>,
}

/// The host's callback and userdata.
struct HostCallback {
    callback: unsafe extern "C" fn(*mut c_void, *const group_event, *const u8),
    userdata: *mut c_void,
}

// SAFETY: the host sets the callback knowing (the header, docs/FFI.md) that it is called from the server's
// thread; passing `userdata` back on that thread is part of that contract.
unsafe impl Send for HostCallback {}

impl Events {
    pub fn set_callback(&self, callback: group_event_fn, userdata: *mut c_void) {
        let host = callback.map(|callback| HostCallback { callback, userdata });
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
        if let Some(host) = &*self.callback.lock().unwrap_or_else(|e| e.into_inner()) {
            // SAFETY: the host's callback, called as documented, with pointers valid during the call.
            unsafe { (host.callback)(host.userdata, &event, uid.as_ptr()) };
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= GROUP_MAX_QUEUED_EVENTS {
            queue.pop_front();
            tracing::warn!(
                "event queue full ({GROUP_MAX_QUEUED_EVENTS}): dropped the oldest event"
            );
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
