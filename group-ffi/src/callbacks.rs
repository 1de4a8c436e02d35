//! Server code written in C beyond hooks: tick callbacks of a group, the discard and rejoin custom
//! messages, and handlers of the server's own (ver, cmd) commands.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use group_core::{GroupId, Sid, TickError};
use group_net::ApiError;

use crate::api::{as_blocking_callback, running};
use crate::hooks::{Answer, HostHook, group_command, group_hook_fn};
use crate::host::Host;
use crate::panic::guard;
use crate::result::group_result;
use crate::server::group_server;
use crate::slice::{bytes, group_in};

/// Largest discard or rejoin message a host can produce: the size of the buffer its callback fills.
pub const GROUP_MAX_CUSTOM_MESSAGE: usize = 4096;

/// A tick callback: `group` (52 bytes) lives during the call. Called on one of the server's blocking
/// threads, where the blocking server API is allowed (a tick typically announces to its group); a slow
/// callback delays nothing else, but a tick that outlasts the interval overlaps the next one.
pub type group_tick_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, group: *const u8)>;

/// Produces a discard or rejoin message: writes at most `buf_len` bytes (`GROUP_MAX_CUSTOM_MESSAGE`) into
/// `buf` and returns how many it wrote (0: an empty message). `group` (52 bytes), `uid` (`uid_len`
/// bytes) and `sid` (16 bytes) live during the call. Called on the server's node thread: it must return at
/// once and must not call the server API (that returns `GROUP_RESULT_WRONG_THREAD`).
pub type group_message_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        group: *const u8,
        uid: *const u8,
        uid_len: usize,
        sid: *const u8,
        buf: *mut u8,
        buf_len: usize,
    ) -> usize,
>;

type MessageCallback = unsafe extern "C" fn(
    *mut c_void,
    *const u8,
    *const u8,
    usize,
    *const u8,
    *mut u8,
    usize,
) -> usize;

impl Host<MessageCallback> {
    /// Asks the host for a message about `uid` leaving (or rejoining) `group`, written into `scratch`
    /// (kept between calls, so that no call allocates and zeroes a fresh buffer).
    fn message(&self, scratch: &mut [u8], group: &GroupId, uid: &str, sid: &Sid) -> Bytes {
        // SAFETY: the host's callback called as documented, with pointers into locals that outlive the call
        // and a buffer of exactly the length given.
        let wrote = unsafe {
            (self.callback)(
                self.userdata,
                group.as_bytes().as_ptr(),
                uid.as_ptr(),
                uid.len(),
                sid.0.as_ptr(),
                scratch.as_mut_ptr(),
                scratch.len(),
            )
        };
        match scratch.get(..wrote) {
            Some(message) => Bytes::copy_from_slice(message),
            None => {
                tracing::warn!(
                    wrote,
                    "a message callback claimed more than {GROUP_MAX_CUSTOM_MESSAGE} bytes; sent empty"
                );
                Bytes::new()
            }
        }
    }
}

/// Which custom message a callback produces.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_message_kind {
    /// Pushed (as a 112 leave) to a group's remaining members when a member's session ends.
    GROUP_MESSAGE_DISCARD = 1,
    /// Pushed (as a 111 join carrying the member's own uid) to every member of a group whose owner
    /// changed (a failover, or a drained owner's handover).
    GROUP_MESSAGE_REJOIN = 2,
}

/// Sets the callback producing the discard (`GROUP_MESSAGE_DISCARD`) or rejoin (`GROUP_MESSAGE_REJOIN`)
/// custom message; without one the message is empty. The callback runs on a thread of its own (one per
/// kind) and the server waits for it at most 20 ms: a message not written by then is sent empty, and so
/// is every message asked for while the callback is still running, so a slow callback cannot freeze the
/// server. Only before `group_server_start`.
///
/// # Safety
/// `server` live; `callback` and `userdata` usable from that thread until the server is freed. Any
/// thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_set_message(
    server: *const group_server,
    kind: u32,
    callback: group_message_fn,
    userdata: *mut c_void,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (its state is behind a lock).
        let server = unsafe { crate::server::server_ref(server) }?;
        let callback = callback.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let host = Host { callback, userdata };
        let mut scratch = vec![0u8; GROUP_MAX_CUSTOM_MESSAGE];
        let produce =
            move |g: &GroupId, uid: &str, sid: &Sid| host.message(&mut scratch, g, uid, sid);
        match kind {
            1 => server.configure(|b| b.discard_message(produce)),
            2 => server.configure(|b| b.rejoin_message(produce)),
            _ => Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
        }
    })
}

/// Calls `callback(userdata, group)` every `interval_ms` milliseconds (at least 1000) while `group`
/// exists on this node (Diarkis's SetOnTick); `interval_ms` 0 stops it. Setting it again replaces the
/// callback and interval. The event queue also receives a `GROUP_EVENT_TICK` at each tick, so a game loop
/// can pass NULL and poll. `GROUP_RESULT_NOT_FOUND` when this node knows no such group;
/// `GROUP_RESULT_INVALID_ARGUMENT` for an interval from 1 to 999. **Blocking.**
///
/// # Safety
/// `server` live and started; `group` 52 readable bytes; `callback` NULL (events only) or usable with
/// `userdata` from the server's threads until stopped or the group is gone. Any thread but the server's
/// worker threads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_set_tick(
    server: *const group_server,
    group: *const u8,
    interval_ms: u32,
    callback: group_tick_fn,
    userdata: *mut c_void,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let group = unsafe { group_in(group) }?;
        if (1..1000).contains(&interval_ms) {
            return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        let (handle, runtime) = running(server)?;
        let interval = (interval_ms > 0).then(|| Duration::from_millis(u64::from(interval_ms)));
        let host = Arc::new(Host { callback, userdata });
        let tick = move |group: GroupId, _| {
            let host = host.clone();
            async move {
                let Some(callback) = host.callback else {
                    return;
                };
                let run = tokio::task::spawn_blocking(move || {
                    let id = *group.as_bytes();
                    // SAFETY: the host's callback, called as documented, with the ID in a local.
                    as_blocking_callback(|| unsafe { callback(host.userdata, id.as_ptr()) });
                });
                let _ = run.await;
            }
        };
        match runtime.block_on(handle.set_tick(group, interval, tick)) {
            Ok(()) => Ok(()),
            Err(ApiError::Tick(TickError::GroupNotFound)) => {
                Err(group_result::GROUP_RESULT_NOT_FOUND)
            }
            Err(ApiError::Tick(_)) => Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
            Err(_) => Err(group_result::GROUP_RESULT_NOT_STARTED),
        }
    })
}

/// Handles the server's own command (`ver` >= 2, any `cmd`): `callback` runs for every such request with a
/// `group_hook_call` (command `GROUP_COMMAND_CUSTOM`, the request's payload) and a token, which the host
/// answers with `group_reply` (an Ok response carrying a payload) or `group_next` (0: Ok with no payload;
/// 1000-65535: Bad with that code and message). Unanswered, it fails after `server.hookTimeout`.
/// `GROUP_RESULT_INVALID_ARGUMENT` for ver 0 or 1 (the protocol's own); a second handler of the same
/// (ver, cmd) replaces the first. Only before `group_server_start`.
///
/// # Safety
/// `server` live; `callback` and `userdata` usable from the server's threads until it is freed. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_add_command(
    server: *const group_server,
    ver: u8,
    cmd: u16,
    callback: group_hook_fn,
    userdata: *mut c_void,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (its state is behind a lock).
        let server = unsafe { crate::server::server_ref(server) }?;
        if ver < group_core::proto::VER_CUSTOM_MIN {
            return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        let hook = HostHook::new(callback, userdata, group_command::GROUP_COMMAND_CUSTOM)
            .map(Arc::new)
            .ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let continuations = server.continuations();
        server.configure(|builder| {
            builder.on_command(ver, cmd, move |ctx| {
                let run = hook.clone().run(continuations.clone(), ctx);
                async move {
                    match run.await {
                        Answer::Continue => Ok(Bytes::new()),
                        Answer::Reply(payload) => Ok(payload),
                        Answer::Reject(rejection) => Err(rejection),
                    }
                }
            })
        })
    })
}

/// Answers a custom command's token with an Ok response carrying `payload` (at most `limits.maxPayload`
/// bytes, else `GROUP_RESULT_INVALID_ARGUMENT` and the token stays open). Any thread, at once or later.
/// A hook's token gives `GROUP_RESULT_INVALID_ARGUMENT` (hooks take `group_next`); a token answered
/// already, timed out or never issued gives `GROUP_RESULT_NOT_FOUND`.
///
/// # Safety
/// `server` live; `payload` `payload_len` readable bytes (NULL allowed when the length is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_reply(
    server: *const group_server,
    token: u64,
    payload: *const u8,
    payload_len: usize,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (continuations are internally locked).
        let server = unsafe { crate::server::server_ref(server) }?;
        if payload_len > server.max_payload() {
            return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        // SAFETY: forwarded from this function's contract.
        let payload = Bytes::copy_from_slice(unsafe { bytes(payload, payload_len) }?);
        server.answer(token, Answer::Reply(payload))
    })
}
