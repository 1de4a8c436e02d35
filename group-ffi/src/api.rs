//! The server API over C: create, join, leave, broadcast, announce, the latest group of a user, offline.
//!
//! Each call is **blocking**: it runs on the server's node task and returns when that is done (a join of a
//! group owned by another node waits for that node, at most `remoteJoinTries` x `meshRequestTimeout`).
//! They must not be called from the server's own threads (a hook callback): that returns
//! `GROUP_RESULT_WRONG_THREAD` instead of deadlocking. A refusal returns `GROUP_RESULT_REFUSED` and writes
//! the protocol error code (docs/PROTOCOL.md: 1xx create, 2xx join, 3xx leave, 4xx broadcast, 6 unknown
//! user) to `*refusal`: the one out-parameter written on failure, so a host can tell a join error from a
//! leave or create error, as Diarkis's IsJoinError does.

use std::cell::Cell;

use bytes::Bytes;
use group_core::GroupId;
use group_core::proto::CreateRequest;
use group_net::{ApiError, ServerHandle};
use tokio::runtime::Runtime;

use crate::panic::guard;
use crate::result::group_result;
use crate::server::group_server;
pub use crate::slice::GROUP_ID_LEN;
use crate::slice::{bytes, group_in, refused_with, text, write_group};

thread_local! {
    /// Set while a host callback runs on one of the runtime's blocking threads (tick callbacks), where
    /// a blocking call cannot stall the node task and is allowed.
    static ON_BLOCKING_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs a host callback on a blocking thread of the server's runtime, allowing it the blocking API.
pub(crate) fn as_blocking_callback<T>(callback: impl FnOnce() -> T) -> T {
    ON_BLOCKING_CALLBACK.with(|on| on.set(true));
    let out = callback();
    ON_BLOCKING_CALLBACK.with(|on| on.set(false));
    out
}

/// The running server's API handle and runtime, refusing calls from the server's own worker threads
/// (and from inside any other async runtime), where waiting for the node task could deadlock.
/// The lifetime `'a` is the caller's call: every caller's contract keeps the server alive during it.
pub(crate) fn running<'a>(
    server: *const group_server,
) -> Result<(&'a ServerHandle, &'a Runtime), group_result> {
    let on_worker =
        tokio::runtime::Handle::try_current().is_ok() && !ON_BLOCKING_CALLBACK.with(Cell::get);
    if on_worker {
        return Err(group_result::GROUP_RESULT_WRONG_THREAD);
    }
    // SAFETY: per every caller's contract, a live server for the duration of the call, which is all 'a
    // is used for.
    let server: &'a group_server = unsafe { crate::server::server_ref(server) }?;
    let handle = server
        .handle()
        .ok_or(group_result::GROUP_RESULT_NOT_STARTED)?;
    Ok((handle, server.runtime()))
}

/// Turns an API error into a result, writing the protocol code of a refusal.
fn refused(error: ApiError, refusal: *mut u16) -> group_result {
    let code = match &error {
        ApiError::Stopped => return group_result::GROUP_RESULT_NOT_STARTED,
        ApiError::Create(e) => e.code(),
        ApiError::Join(e) => e.code(),
        ApiError::Leave(e) => e.code(),
        ApiError::Broadcast(e) => e.code(),
        _ => group_core::proto::code::HOOK_FAILED,
    };
    // SAFETY: every caller passes its own `refusal` out-parameter, NULL or writable per its contract.
    unsafe { refused_with(code, refusal) }
}

/// Reads the (group, uid, message) arguments of a member's operation.
///
/// # Safety
/// `group` 52 readable bytes; `uid` and `message` their lengths of readable bytes.
unsafe fn member_args(
    group: *const u8,
    uid: *const u8,
    uid_len: usize,
    message: *const u8,
    message_len: usize,
) -> Result<(GroupId, String, Bytes), group_result> {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        Ok((
            group_in(group)?,
            text(uid, uid_len)?.to_string(),
            Bytes::copy_from_slice(bytes(message, message_len)?),
        ))
    }
}

/// Runs an API call to completion on the server's runtime.
pub(crate) fn finish<T>(
    runtime: &Runtime,
    call: impl std::future::Future<Output = Result<T, ApiError>>,
    refusal: *mut u16,
) -> Result<T, group_result> {
    runtime.block_on(call).map_err(|e| refused(e, refusal))
}

/// Creates a group owned by this node. With `join` set, `creator` (a uid with a session here; length 0 for
/// none) joins it. `allow_empty` and `join` are 0 or 1; `ttl_s` must be more than 10; `interval_ms` below
/// 100 means no merging. On success the 52-byte ID is written to `group_out`. **Blocking.**
///
/// # Safety
/// `server` live and started; `creator` points to `creator_len` bytes; `group_out` to 52 writable bytes;
/// `refusal` NULL or a writable `uint16_t`. Any thread but the server's own.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_new_group(
    server: *const group_server,
    creator: *const u8,
    creator_len: usize,
    allow_empty: u8,
    join: u8,
    ttl_s: u16,
    interval_ms: u16,
    group_out: *mut u8,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let creator = unsafe { text(creator, creator_len) }?;
        let creator = (!creator.is_empty()).then(|| creator.to_string());
        let (handle, runtime) = running(server)?;
        let params = CreateRequest {
            allow_empty: allow_empty != 0,
            join: join != 0,
            ttl_s,
            interval_ms,
        };
        let id = finish(runtime, handle.new_group(params, creator), refusal)?;
        // SAFETY: per the contract, `group_out` holds 52 writable bytes.
        unsafe { write_group(&id, group_out) }
    })
}

/// Joins user `uid` (a session on this node) to `group` (52 bytes). When `message` is not empty the other
/// members get a push with `ver`/`cmd` (1/111 is the client protocol's own join push). **Blocking.**
///
/// # Safety
/// `server` live and started; `group` 52 readable bytes; `uid` and `message` their lengths of readable
/// bytes; `refusal` NULL or writable. Any thread but the server's own.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_join(
    server: *const group_server,
    group: *const u8,
    uid: *const u8,
    uid_len: usize,
    message: *const u8,
    message_len: usize,
    ver: u8,
    cmd: u16,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (group, uid, message) =
            unsafe { member_args(group, uid, uid_len, message, message_len) }?;
        let (handle, runtime) = running(server)?;
        finish(runtime, handle.join(group, uid, message, ver, cmd), refusal)
    })
}

/// Removes `uid` from `group`; the remaining members get a `ver`/`cmd` push when `message` is not empty.
/// **Blocking.**
///
/// # Safety
/// As `group_server_join`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_leave(
    server: *const group_server,
    group: *const u8,
    uid: *const u8,
    uid_len: usize,
    message: *const u8,
    message_len: usize,
    ver: u8,
    cmd: u16,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (group, uid, message) =
            unsafe { member_args(group, uid, uid_len, message, message_len) }?;
        let (handle, runtime) = running(server)?;
        finish(
            runtime,
            handle.leave(group, uid, message, ver, cmd),
            refusal,
        )
    })
}

/// Sends `message` from member `uid` to the other members of `group` (on every node), with `ver`/`cmd`
/// (1/113 is the protocol's broadcast push). `reliable` (0 or 1) picks the UDP channel for UDP members.
/// **Blocking** until the node has queued it.
///
/// # Safety
/// As `group_server_join`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_broadcast(
    server: *const group_server,
    group: *const u8,
    uid: *const u8,
    uid_len: usize,
    ver: u8,
    cmd: u16,
    message: *const u8,
    message_len: usize,
    reliable: u8,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (group, uid, message) =
            unsafe { member_args(group, uid, uid_len, message, message_len) }?;
        let (handle, runtime) = running(server)?;
        let call = handle.broadcast(group, uid, ver, cmd, message, reliable != 0);
        finish(runtime, call, refusal)
    })
}

/// Queues a broadcast from member `uid` to the other members of `group` (as `group_server_broadcast`) and
/// returns at once: **not blocking**, so any thread may call it, the server's own callbacks included. It
/// saves the caller the round trip between threads that a blocking call waits for (README: the FFI cost).
/// A refusal arrives later as a `GROUP_EVENT_BROADCAST_REFUSED` event carrying the code.
/// `GROUP_RESULT_BUSY` when the server's input queue (8192 calls) is full: nothing was queued.
///
/// # Safety
/// `server` live and started; `group` 52 readable bytes; `uid` and `message` their lengths of readable
/// bytes. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_broadcast_nowait(
    server: *const group_server,
    group: *const u8,
    uid: *const u8,
    uid_len: usize,
    ver: u8,
    cmd: u16,
    message: *const u8,
    message_len: usize,
    reliable: u8,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (group, uid, message) =
            unsafe { member_args(group, uid, uid_len, message, message_len) }?;
        // SAFETY: per the contract, a live server for the duration of the call.
        let server = unsafe { crate::server::server_ref(server) }?;
        let handle = server
            .handle()
            .ok_or(group_result::GROUP_RESULT_NOT_STARTED)?;
        let events = server.events();
        let refused = move |e: group_core::BroadcastError, group, uid| {
            events.record_refused(&group, uid, e.code());
        };
        handle
            .broadcast_nowait(group, uid, ver, cmd, message, reliable != 0, refused)
            .map_err(|e| match e {
                ApiError::Busy => group_result::GROUP_RESULT_BUSY,
                _ => group_result::GROUP_RESULT_NOT_STARTED,
            })
    })
}

/// Sends `message` to every member of `group` from the server itself (an entry with an empty uid). No
/// client command can do this. **Blocking** until the node has queued it.
///
/// # Safety
/// As `group_server_join` (without a uid).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_announce(
    server: *const group_server,
    group: *const u8,
    ver: u8,
    cmd: u16,
    message: *const u8,
    message_len: usize,
    reliable: u8,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (group, message) = unsafe {
            (
                group_in(group)?,
                Bytes::copy_from_slice(bytes(message, message_len)?),
            )
        };
        let (handle, runtime) = running(server)?;
        let call = handle.announce(group, ver, cmd, message, reliable != 0);
        finish(runtime, call, refusal)
    })
}

/// Sends a push (status 0xFF) with the server code's own `ver` (2 and up) and `cmd` carrying `payload` to
/// user `uid`, connected to this node (Diarkis's user-level push). `GROUP_RESULT_NOT_FOUND` when the user
/// has no session here; `GROUP_RESULT_INVALID_ARGUMENT` for ver 0 or 1 (the protocol's own pushes, which a
/// client would misread). A client receives it as `GROUP_PUSH_CUSTOM`. **Blocking** until the node queued it.
///
/// # Safety
/// `server` live and started; `uid` `uid_len` readable bytes; `payload` `payload_len` readable bytes (NULL
/// allowed when 0). Any thread but the server's own.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_push_to_user(
    server: *const group_server,
    uid: *const u8,
    uid_len: usize,
    ver: u8,
    cmd: u16,
    payload: *const u8,
    payload_len: usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (uid, payload) = unsafe {
            (
                text(uid, uid_len)?.to_string(),
                Bytes::copy_from_slice(bytes(payload, payload_len)?),
            )
        };
        let (handle, runtime) = running(server)?;
        let pushed = runtime
            .block_on(handle.push_to_user(uid, ver, cmd, payload))
            .map_err(|e| match e {
                ApiError::ReservedVersion { .. } => group_result::GROUP_RESULT_INVALID_ARGUMENT,
                other => refused(other, std::ptr::null_mut()),
            })?;
        if pushed {
            Ok(())
        } else {
            Err(group_result::GROUP_RESULT_NOT_FOUND)
        }
    })
}

/// Writes the group `uid` joined or created most recently (Diarkis's GetLatestGroupID) to `group_out`
/// (52 bytes). `GROUP_RESULT_NOT_FOUND` when the user has no session here or no such group exists. **Blocking.**
///
/// # Safety
/// `server` live and started; `uid` `uid_len` readable bytes; `group_out` 52 writable bytes. Any thread but
/// the server's own.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_latest_group(
    server: *const group_server,
    uid: *const u8,
    uid_len: usize,
    group_out: *mut u8,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let uid = unsafe { text(uid, uid_len) }?.to_string();
        let (handle, runtime) = running(server)?;
        let latest = finish(runtime, handle.latest_group_id(uid), std::ptr::null_mut())?;
        let id = latest.ok_or(group_result::GROUP_RESULT_NOT_FOUND)?;
        // SAFETY: per the contract, `group_out` holds 52 writable bytes.
        unsafe { write_group(&id, group_out) }
    })
}

/// Takes the node offline: it refuses new groups, pushes Offline to every client, and hands the groups it
/// owns to their backups. The server keeps running until `group_server_stop`. **Blocking.**
///
/// # Safety
/// `server` live and started. Any thread but the server's own.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_set_offline(server: *const group_server) -> group_result {
    guard(|| {
        let (handle, runtime) = running(server)?;
        finish(runtime, handle.set_offline(), std::ptr::null_mut())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{
        group_server_free, group_server_new, group_server_port, group_server_start,
    };
    use group_net::client::{Client, Push};

    #[test]
    fn the_server_api_over_c() {
        let config = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;
        let mut server: *mut group_server = std::ptr::null_mut();
        let mut port = 0u16;
        // SAFETY: real pointers; the server is freed at the end.
        unsafe {
            assert_eq!(
                group_server_new(config.as_ptr(), config.len(), 1, &mut server),
                group_result::GROUP_RESULT_OK
            );
            assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
            assert_eq!(
                group_server_port(server, 1, &mut port),
                group_result::GROUP_RESULT_OK
            );
        }
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let client_side = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connect = |uid: &'static str| {
            client_side.block_on(async move {
                let mut c = Client::connect_tcp(addr).await.unwrap();
                c.hello(uid, "").await.unwrap();
                c
            })
        };
        let mut alice = connect("alice");
        let mut bob = connect("bob");
        let mut group = [0u8; GROUP_ID_LEN];
        let mut refusal = 0u16;
        // SAFETY: real pointers and lengths; the server lives until freed below.
        unsafe {
            let r = group_server_new_group(
                server,
                b"alice".as_ptr(),
                5,
                0,
                1,
                60,
                0,
                group.as_mut_ptr(),
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let r = group_server_join(
                server,
                group.as_ptr(),
                b"bob".as_ptr(),
                3,
                b"hi".as_ptr(),
                2,
                1,
                111,
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            // A refusal names the operation's own code: 6 unknown user, 301 not a member.
            let r = group_server_join(
                server,
                group.as_ptr(),
                b"nobody".as_ptr(),
                6,
                std::ptr::null(),
                0,
                1,
                111,
                &mut refusal,
            );
            assert_eq!((r, refusal), (group_result::GROUP_RESULT_REFUSED, 6));
            let r = group_server_leave(
                server,
                group.as_ptr(),
                b"bob".as_ptr(),
                3,
                std::ptr::null(),
                0,
                1,
                112,
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let r = group_server_leave(
                server,
                group.as_ptr(),
                b"bob".as_ptr(),
                3,
                std::ptr::null(),
                0,
                1,
                112,
                &mut refusal,
            );
            assert_eq!((r, refusal), (group_result::GROUP_RESULT_REFUSED, 301));
            let r = group_server_announce(
                server,
                group.as_ptr(),
                1,
                113,
                b"news".as_ptr(),
                4,
                1,
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let mut latest = [0u8; GROUP_ID_LEN];
            let r = group_server_latest_group(server, b"alice".as_ptr(), 5, latest.as_mut_ptr());
            assert_eq!((r, latest), (group_result::GROUP_RESULT_OK, group));
            let r = group_server_latest_group(server, b"bob".as_ptr(), 3, latest.as_mut_ptr());
            assert_eq!(r, group_result::GROUP_RESULT_NOT_FOUND);
            let bad = [b' '; GROUP_ID_LEN];
            let r = group_server_announce(
                server,
                bad.as_ptr(),
                1,
                113,
                std::ptr::null(),
                0,
                1,
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        client_side.block_on(async {
            // Bob's join reached alice; the announce reached her as an entry with no sender.
            assert!(matches!(alice.next_push().await, Some(Push::Joined { .. })));
            match alice.next_push().await {
                Some(Push::Broadcast { entries, .. }) => {
                    assert_eq!(
                        (entries[0].uid.as_str(), &entries[0].message[..]),
                        ("", &b"news"[..])
                    );
                }
                other => panic!("expected the announce, got {other:?}"),
            }
            // From inside a runtime (as from a callback), a blocking call refuses instead of deadlocking.
            // SAFETY: a live server.
            let r = unsafe { group_server_set_offline(server) };
            assert_eq!(r, group_result::GROUP_RESULT_WRONG_THREAD);
        });
        // SAFETY: a live server.
        let offline = unsafe { group_server_set_offline(server) };
        assert_eq!(offline, group_result::GROUP_RESULT_OK);
        client_side.block_on(async {
            assert_eq!(bob.next_push().await, Some(Push::Offline));
        });
        // SAFETY: freed once.
        unsafe { group_server_free(server) };
    }
}
