//! What a C client receives, handed out one entry at a time: pushes (a merged broadcast push gives one
//! entry per broadcast), completions of non-blocking submissions, and connection-state events.
//! `group_client_poll_event` hands out all of them; `group_client_poll_push` only the pushes.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use group_core::GroupId;
use group_net::client::Push;

use super::driver::{ClientEvent, Disconnect, Operation};
use super::{client_mut, group_client};
use crate::panic::guard;
use crate::result::group_result;
use crate::slice::GROUP_ID_LEN;

/// What a push is (`group_push_t.kind`; the same numbers in `group_client_event_t.kind`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_push_kind {
    /// A member joined (111). When `uid` is the receiver's own, the group changed owner (rejoin push).
    GROUP_PUSH_JOINED = 1,
    /// A member left or was discarded (112).
    GROUP_PUSH_LEFT = 2,
    /// A broadcast (113): one entry; an empty uid is an announce from the server.
    GROUP_PUSH_BROADCAST = 3,
    /// The node is going offline (ver 0, cmd 6): create groups elsewhere.
    GROUP_PUSH_OFFLINE = 4,
    /// A refused broadcast (its Bad response): `code` holds the protocol code, the message its text.
    GROUP_PUSH_REFUSED = 5,
    /// A push with the server code's own `ver` (2 and up) and `cmd` (a server's `group_server_push_to_user`,
    /// or a join or leave the server API sent with its own ver/cmd): the message is its payload.
    GROUP_PUSH_CUSTOM = 9,
}

/// What a client event is (`group_client_event_t.kind`). Kinds 1 to 5 and 9 are the pushes of
/// `group_push_kind_t`, with the same numbers.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_client_event_kind {
    /// A member joined (see `GROUP_PUSH_JOINED`).
    GROUP_CLIENT_EVENT_JOINED = 1,
    /// A member left (see `GROUP_PUSH_LEFT`).
    GROUP_CLIENT_EVENT_LEFT = 2,
    /// One broadcast entry (see `GROUP_PUSH_BROADCAST`).
    GROUP_CLIENT_EVENT_BROADCAST = 3,
    /// The node is going offline (see `GROUP_PUSH_OFFLINE`).
    GROUP_CLIENT_EVENT_OFFLINE = 4,
    /// A refused broadcast (see `GROUP_PUSH_REFUSED`).
    GROUP_CLIENT_EVENT_REFUSED = 5,
    /// A submitted operation completed: `op` names it, `result` says how (`GROUP_RESULT_OK`,
    /// `_REFUSED` with the protocol code in `code` and the refusal's text as the message, `_TIMED_OUT`,
    /// `_DISCONNECTED`); `group` holds the group created, joined or left; the message holds the session
    /// ID (Hello, 16 bytes) or the reply (a custom request).
    GROUP_CLIENT_EVENT_COMPLETED = 6,
    /// The connection is up (the first event of every client).
    GROUP_CLIENT_EVENT_CONNECTED = 7,
    /// The connection ended or could not be made: `reason` is a `group_disconnect_reason_t`, the message
    /// says more. Operations still queued complete with `GROUP_RESULT_DISCONNECTED` after it.
    GROUP_CLIENT_EVENT_DISCONNECTED = 8,
    /// A push of the server code's own (see `GROUP_PUSH_CUSTOM`): `ver` and `cmd` say which.
    GROUP_CLIENT_EVENT_CUSTOM = 9,
}

/// Why a client's connection ended (`group_client_event_t.reason`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_disconnect_reason {
    /// The server closed it: after Fin, a session replaced or discarded, a full server, a stopped one.
    GROUP_DISCONNECT_SERVER_CLOSED = 1,
    /// The network failed (a reset, an unreachable peer, a KCP link that stopped acknowledging).
    GROUP_DISCONNECT_NETWORK = 2,
    /// The server sent bytes that are not the protocol.
    GROUP_DISCONNECT_PROTOCOL = 3,
    /// `group_client_connect_async` could not connect (refused, unreachable, handshake failed).
    GROUP_DISCONNECT_CONNECT_FAILED = 4,
    /// `group_client_connect_async` did not connect within `connect_timeout_ms`.
    GROUP_DISCONNECT_CONNECT_TIMED_OUT = 5,
}

/// One push, as `group_client_poll_push` hands it out. `uid` and `message` are offsets into the caller's
/// buffer: bytes `[0, uid_len)` are the uid, `[uid_len, uid_len + message_len)` the message.
#[repr(C)]
pub struct group_push {
    /// A `group_push_kind` value.
    pub kind: u32,
    /// The group (all zeros for Offline).
    // A literal, not GROUP_ID_LEN: the C# generator does not resolve constants in array lengths.
    pub group: [u8; 52],
    /// Length of the uid at the start of the buffer.
    pub uid_len: usize,
    /// Length of the message after the uid.
    pub message_len: usize,
    /// For `GROUP_PUSH_REFUSED`: the protocol error code; otherwise 0.
    pub code: u16,
    /// For `GROUP_PUSH_CUSTOM`: the push's version byte; otherwise 0.
    pub ver: u8,
    /// For `GROUP_PUSH_CUSTOM`: the push's command; otherwise 0.
    pub cmd: u16,
}

/// One client event, as `group_client_poll_event` hands it out. Like `group_push_t`, the uid and the
/// message are in the caller's buffer: `[0, uid_len)` and `[uid_len, uid_len + message_len)`.
#[repr(C)]
pub struct group_client_event {
    /// The operation a `GROUP_CLIENT_EVENT_COMPLETED` completes (the ID its submission returned); 0
    /// otherwise.
    pub op: u64,
    /// A `group_client_event_kind_t` value.
    pub kind: u32,
    /// For a completion: a `group_result_t` value; otherwise `GROUP_RESULT_OK`.
    pub result: u32,
    /// For `GROUP_CLIENT_EVENT_DISCONNECTED`: a `group_disconnect_reason_t` value; otherwise 0.
    pub reason: u32,
    /// A refusal's protocol error code (a refused completion or broadcast); otherwise 0.
    pub code: u16,
    /// The group (all zeros when there is none).
    pub group: [u8; 52],
    /// Length of the uid at the start of the buffer.
    pub uid_len: usize,
    /// Length of the message after the uid.
    pub message_len: usize,
    /// For `GROUP_CLIENT_EVENT_CUSTOM`: the push's version byte; otherwise 0.
    pub ver: u8,
    /// For `GROUP_CLIENT_EVENT_CUSTOM`: the push's command; otherwise 0.
    pub cmd: u16,
}

/// An event copied out of the client task's queue, waiting to be handed over.
pub(crate) struct Owned {
    kind: group_client_event_kind,
    op: u64,
    result: group_result,
    reason: u32,
    code: u16,
    group: [u8; GROUP_ID_LEN],
    uid: String,
    message: Bytes,
    ver: u8,
    cmd: u16,
}

impl Owned {
    fn new(kind: group_client_event_kind, group: Option<GroupId>) -> Owned {
        Owned {
            kind,
            op: 0,
            result: group_result::GROUP_RESULT_OK,
            reason: 0,
            code: 0,
            group: group.map_or([0; GROUP_ID_LEN], |g| *g.as_bytes()),
            uid: String::new(),
            message: Bytes::new(),
            ver: 0,
            cmd: 0,
        }
    }

    fn with_text(mut self, uid: String, message: Bytes) -> Owned {
        self.uid = uid;
        self.message = message;
        self
    }

    fn is_push(&self) -> bool {
        (self.kind as u32) <= group_client_event_kind::GROUP_CLIENT_EVENT_REFUSED as u32
            || self.kind == group_client_event_kind::GROUP_CLIENT_EVENT_CUSTOM
    }
}

/// Makes sure the next entry (if any) is at the front of `client.queued`, waiting at most `timeout_ms`.
fn fill(client: &mut group_client, timeout_ms: u32) {
    if !client.queued.is_empty() {
        return;
    }
    match client.channels.events.try_recv() {
        Ok(event) => return queue(&mut client.queued, event),
        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return,
        Err(tokio::sync::mpsc::error::TryRecvError::Empty) if timeout_ms == 0 => return,
        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
    }
    let limit = Duration::from_millis(u64::from(timeout_ms));
    let events = &mut client.channels.events;
    let event = client
        .runtime
        .block_on(async { tokio::time::timeout(limit, events.recv()).await });
    if let Ok(Some(event)) = event {
        queue(&mut client.queued, event);
    }
}

/// Hands out the front entry into the caller's memory, or says why not.
///
/// # Safety
/// `buf` `buf_len` writable bytes (NULL allowed when 0); `needed` writable.
unsafe fn hand_out(
    client: &mut group_client,
    buf: *mut u8,
    buf_len: usize,
    needed: *mut usize,
) -> Result<Owned, group_result> {
    let Some(next) = client.queued.front() else {
        return Err(if client.disconnected {
            group_result::GROUP_RESULT_DISCONNECTED
        } else {
            group_result::GROUP_RESULT_NOT_FOUND
        });
    };
    let size = next.uid.len() + next.message.len();
    // SAFETY: non-null (checked by the callers), and per the contract writable.
    unsafe { needed.write(size) };
    if size > buf_len {
        return Err(group_result::GROUP_RESULT_BUFFER_TOO_SMALL);
    }
    if size > 0 && buf.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    let next = client
        .queued
        .pop_front()
        .ok_or(group_result::GROUP_RESULT_NOT_FOUND)?;
    if next.kind == group_client_event_kind::GROUP_CLIENT_EVENT_DISCONNECTED {
        client.disconnected = true;
    }
    // SAFETY: `buf` holds `buf_len >= size` writable bytes per the contract; the sources are owned here.
    unsafe {
        std::ptr::copy_nonoverlapping(next.uid.as_ptr(), buf, next.uid.len());
        std::ptr::copy_nonoverlapping(
            next.message.as_ptr(),
            buf.add(next.uid.len()),
            next.message.len(),
        );
    }
    Ok(next)
}

/// Hands out the next event — a push, a completion or a connection-state change — waiting at most
/// `timeout_ms` (0: do not wait). Writes the event to `*out` and its uid and message into `buf` (see
/// `group_client_event_t`). `GROUP_RESULT_NOT_FOUND` when none came in time; once the
/// `GROUP_CLIENT_EVENT_DISCONNECTED` event and every completion after it were handed out,
/// `GROUP_RESULT_DISCONNECTED`. `GROUP_RESULT_BUFFER_TOO_SMALL` when `buf_len` cannot hold uid and
/// message (the event stays queued; `*needed` tells the size). With `timeout_ms` 0 it never waits and
/// never enters the client's runtime: a game loop calls it every frame until it returns
/// `GROUP_RESULT_NOT_FOUND`.
///
/// # Safety
/// `client` live; `out` writable; `buf` `buf_len` writable bytes; `needed` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_poll_event(
    client: *mut group_client,
    timeout_ms: u32,
    out: *mut group_client_event,
    buf: *mut u8,
    buf_len: usize,
    needed: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let client = unsafe { client_mut(client) }?;
        if out.is_null() || needed.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        fill(client, timeout_ms);
        // SAFETY: forwarded from this function's contract.
        let next = unsafe { hand_out(client, buf, buf_len, needed) }?;
        let event = group_client_event {
            op: next.op,
            kind: next.kind as u32,
            result: next.result as u32,
            reason: next.reason,
            code: next.code,
            group: next.group,
            uid_len: next.uid.len(),
            message_len: next.message.len(),
            ver: next.ver,
            cmd: next.cmd,
        };
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(event) };
        Ok(())
    })
}

/// Hands out the next push, waiting at most `timeout_ms` (0: do not wait). Writes the push to `*out` and
/// its uid and message into `buf` (see `group_push`); `GROUP_RESULT_NOT_FOUND` when none came in time,
/// `GROUP_RESULT_DISCONNECTED` when the connection closed, `GROUP_RESULT_BUFFER_TOO_SMALL` when `buf_len`
/// cannot hold uid and message (the push stays queued; `*needed` tells the size). A merged broadcast push
/// is handed out one entry per call. Completions and connection-state events are skipped: a client that
/// submits without blocking polls with `group_client_poll_event` instead. With `timeout_ms` 0 it never
/// waits and never enters the client's runtime: a game loop can call it every frame for a fraction of a
/// microsecond (docs/FFI.md).
///
/// # Safety
/// `client` live; `out` writable; `buf` `buf_len` writable bytes; `needed` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_poll_push(
    client: *mut group_client,
    timeout_ms: u32,
    out: *mut group_push,
    buf: *mut u8,
    buf_len: usize,
    needed: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let client = unsafe { client_mut(client) }?;
        if out.is_null() || needed.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        let next = loop {
            fill(client, timeout_ms);
            match client.queued.front() {
                Some(next) if !next.is_push() => {
                    if next.kind == group_client_event_kind::GROUP_CLIENT_EVENT_DISCONNECTED {
                        client.disconnected = true;
                    }
                    client.queued.pop_front();
                }
                // SAFETY: forwarded from this function's contract.
                _ => break unsafe { hand_out(client, buf, buf_len, needed) }?,
            }
        };
        let push = group_push {
            kind: next.kind as u32,
            group: next.group,
            uid_len: next.uid.len(),
            message_len: next.message.len(),
            code: next.code,
            ver: next.ver,
            cmd: next.cmd,
        };
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(push) };
        Ok(())
    })
}

/// Turns an event of the client task into the entries handed out one by one.
fn queue(queued: &mut VecDeque<Owned>, event: ClientEvent) {
    use group_client_event_kind::*;
    let push = match event {
        ClientEvent::Push(push) => push,
        ClientEvent::Connected => {
            return queued.push_back(Owned::new(GROUP_CLIENT_EVENT_CONNECTED, None));
        }
        ClientEvent::Disconnected { reason, message } => {
            let mut owned = Owned::new(GROUP_CLIENT_EVENT_DISCONNECTED, None)
                .with_text(String::new(), Bytes::from(message.into_bytes()));
            owned.reason = reason_code(reason) as u32;
            return queued.push_back(owned);
        }
        ClientEvent::Completed(completion) => {
            let mut owned = Owned::new(GROUP_CLIENT_EVENT_COMPLETED, completion.group)
                .with_text(String::new(), completion.payload);
            owned.op = completion.op;
            owned.result = completion.result;
            owned.code = completion.code;
            return queued.push_back(owned);
        }
    };
    match push {
        Push::Joined {
            group,
            uid,
            message,
        } => queued
            .push_back(Owned::new(GROUP_CLIENT_EVENT_JOINED, Some(group)).with_text(uid, message)),
        Push::Left {
            group,
            uid,
            message,
        } => queued
            .push_back(Owned::new(GROUP_CLIENT_EVENT_LEFT, Some(group)).with_text(uid, message)),
        Push::Broadcast { group, entries } => {
            for entry in entries {
                let owned = Owned::new(GROUP_CLIENT_EVENT_BROADCAST, Some(group));
                queued.push_back(owned.with_text(entry.uid, entry.message));
            }
        }
        Push::Offline => queued.push_back(Owned::new(GROUP_CLIENT_EVENT_OFFLINE, None)),
        Push::Refused { error, .. } => {
            let mut refused = Owned::new(GROUP_CLIENT_EVENT_REFUSED, error.group)
                .with_text(String::new(), Bytes::from(error.message.into_bytes()));
            refused.code = error.code;
            queued.push_back(refused);
        }
        Push::Custom { ver, cmd, payload } => {
            let mut custom =
                Owned::new(GROUP_CLIENT_EVENT_CUSTOM, None).with_text(String::new(), payload);
            custom.ver = ver;
            custom.cmd = cmd;
            queued.push_back(custom);
        }
        _ => {}
    }
}

fn reason_code(reason: Disconnect) -> group_disconnect_reason {
    use group_disconnect_reason::*;
    match reason {
        Disconnect::ServerClosed => GROUP_DISCONNECT_SERVER_CLOSED,
        Disconnect::Network => GROUP_DISCONNECT_NETWORK,
        Disconnect::Protocol => GROUP_DISCONNECT_PROTOCOL,
        Disconnect::ConnectFailed => GROUP_DISCONNECT_CONNECT_FAILED,
        Disconnect::ConnectTimedOut => GROUP_DISCONNECT_CONNECT_TIMED_OUT,
    }
}

/// Sets how long the client may stay silent before it sends a KeepAlive (default 3000 ms; 0 turns it
/// off), in order after the operations submitted before it. The server discards a session silent for
/// `limits.connectionTtl` (10 s by default). The client's own thread sends it, so the session lives
/// whether or not the host polls (a loading screen included).
///
/// # Safety
/// `client` live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_set_keep_alive(
    client: *mut group_client,
    interval_ms: u32,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let client = unsafe { client_mut(client) }?;
        let every = (interval_ms > 0).then(|| Duration::from_millis(u64::from(interval_ms)));
        client.send(Operation::SetKeepAlive(every))
    })
}
