//! What a C client receives: pushes handed out one entry at a time by `group_client_poll_push`. The
//! client's own writer thread keeps the session alive, whether or not the host polls.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use group_core::GroupId;
use group_net::client::Push;

use crate::client::{client_mut, group_client};
use crate::panic::guard;
use crate::result::group_result;
use crate::slice::GROUP_ID_LEN;

/// What a push is.
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
    /// A refused broadcast (its Bad response): `code` holds the protocol code.
    GROUP_PUSH_REFUSED = 5,
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
}

/// A push copied out of the client, waiting to be handed over.
pub(crate) struct Owned {
    kind: group_push_kind,
    group: [u8; GROUP_ID_LEN],
    uid: String,
    message: Bytes,
    code: u16,
}

fn owned(kind: group_push_kind, group: Option<GroupId>, uid: String, message: Bytes) -> Owned {
    Owned {
        kind,
        group: group.map_or([0; GROUP_ID_LEN], |g| *g.as_bytes()),
        uid,
        message,
        code: 0,
    }
}

/// Hands out the next push, waiting at most `timeout_ms` (0: do not wait). Writes the push to `*out` and
/// its uid and message into `buf` (see `group_push`); `GROUP_RESULT_NOT_FOUND` when none came in time,
/// `GROUP_RESULT_DISCONNECTED` when the connection closed, `GROUP_RESULT_BUFFER_TOO_SMALL` when `buf_len`
/// cannot hold uid and message (the push stays queued; `*needed` tells the size). A merged broadcast push
/// is handed out one entry per call. With `timeout_ms` 0 it never waits and never enters the client's
/// runtime: a game loop can call it every frame for a fraction of a microsecond (docs/FFI.md).
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
        if client.queued.is_empty() {
            match client.client.try_next_push() {
                Ok(Some(push)) => queue(&mut client.queued, push),
                Ok(None) => {}
                Err(_) => return Err(group_result::GROUP_RESULT_DISCONNECTED),
            }
        }
        if client.queued.is_empty() && timeout_ms > 0 {
            let limit = Duration::from_millis(u64::from(timeout_ms));
            let next = client.client.next_push();
            let push = client
                .runtime
                .block_on(async { tokio::time::timeout(limit, next).await });
            match push {
                Err(_) => return Err(group_result::GROUP_RESULT_NOT_FOUND),
                Ok(None) => return Err(group_result::GROUP_RESULT_DISCONNECTED),
                Ok(Some(push)) => queue(&mut client.queued, push),
            }
        }
        let Some(next) = client.queued.front() else {
            return Err(group_result::GROUP_RESULT_NOT_FOUND);
        };
        let size = next.uid.len() + next.message.len();
        // SAFETY: non-null, and per the contract writable.
        unsafe { needed.write(size) };
        if size > buf_len {
            return Err(group_result::GROUP_RESULT_BUFFER_TOO_SMALL);
        }
        if size > 0 && buf.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        let Some(next) = client.queued.pop_front() else {
            return Err(group_result::GROUP_RESULT_NOT_FOUND);
        };
        // SAFETY: `buf` holds `buf_len >= size` writable bytes per the contract; the sources are owned here.
        unsafe {
            std::ptr::copy_nonoverlapping(next.uid.as_ptr(), buf, next.uid.len());
            std::ptr::copy_nonoverlapping(
                next.message.as_ptr(),
                buf.add(next.uid.len()),
                next.message.len(),
            );
        }
        let push = group_push {
            kind: next.kind as u32,
            group: next.group,
            uid_len: next.uid.len(),
            message_len: next.message.len(),
            code: next.code,
        };
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(push) };
        Ok(())
    })
}

/// Turns a push into the entries handed out one by one.
fn queue(queued: &mut VecDeque<Owned>, push: Push) {
    match push {
        Push::Joined {
            group,
            uid,
            message,
        } => queued.push_back(owned(
            group_push_kind::GROUP_PUSH_JOINED,
            Some(group),
            uid,
            message,
        )),
        Push::Left {
            group,
            uid,
            message,
        } => queued.push_back(owned(
            group_push_kind::GROUP_PUSH_LEFT,
            Some(group),
            uid,
            message,
        )),
        Push::Broadcast { group, entries } => {
            for entry in entries {
                let kind = group_push_kind::GROUP_PUSH_BROADCAST;
                queued.push_back(owned(kind, Some(group), entry.uid, entry.message));
            }
        }
        Push::Offline => queued.push_back(owned(
            group_push_kind::GROUP_PUSH_OFFLINE,
            None,
            String::new(),
            Bytes::new(),
        )),
        Push::Refused { error, .. } => {
            let mut refused = owned(
                group_push_kind::GROUP_PUSH_REFUSED,
                error.group,
                String::new(),
                Bytes::from(error.message.into_bytes()),
            );
            refused.code = error.code;
            queued.push_back(refused);
        }
        _ => {}
    }
}

/// Sets how long the client may stay silent before it sends a KeepAlive (default 3000 ms; 0 turns it
/// off). The server discards a session silent for `limits.connectionTtl` (10 s by default). The client's
/// own thread sends it, so the session lives whether or not the host polls (a loading screen included).
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
        client.client.set_keep_alive(every);
        Ok(())
    })
}
