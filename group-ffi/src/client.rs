//! A game client over C: connect over TCP, WebSocket or UDP (KCP), say Hello, create, join, leave,
//! broadcast, and poll pushes from the host's own thread (a game loop).
//!
//! Each client owns one background thread (its runtime), which keeps the connection alive (KCP timers,
//! acknowledgements) between calls. Every call is **blocking** until its answer arrives, except
//! `group_client_broadcast` (no answer on success) and `group_client_poll_push` with a zero timeout.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use group_core::proto::{CreateRequest, RandJoinRequest};
use group_net::client::{Client, ClientError};
use tokio::runtime::Runtime;

use crate::client_push::Owned;
use crate::panic::guard;
use crate::result::group_result;
use crate::slice::{bytes, text, write_out};
use crate::slice::{group_in, refused_with, write_group};

/// A client connection. Create with `group_client_connect`, free with `group_client_free`. Calls on one
/// client must not overlap (use one client per thread, or lock around it).
pub struct group_client {
    /// Declared first so that it drops first: the connection closes before its runtime goes.
    pub(crate) client: Client,
    /// Entries of merged broadcast pushes not yet handed out (`group_client_poll_push` gives one per call).
    pub(crate) queued: VecDeque<Owned>,
    /// The message of the last refusal, for `group_client_refusal_message`.
    pub(crate) last_refusal: String,
    /// The payload of the last custom command's Ok response, for `group_client_last_reply`.
    pub(crate) last_reply: Bytes,
    /// When this client last sent anything, and how long it may stay silent before a poll sends a
    /// KeepAlive (None: never): the server discards sessions silent for `limits.connectionTtl`.
    pub(crate) runtime: Runtime,
}

/// Writes a refusal's code, keeps its message, and turns a client error into a result.
fn client_error(last_refusal: &mut String, error: ClientError, refusal: *mut u16) -> group_result {
    match error {
        ClientError::Refused(payload) => {
            *last_refusal = payload.message;
            // SAFETY: every caller passes its own `refusal` out-parameter, NULL or writable per its contract.
            unsafe { refused_with(payload.code, refusal) }
        }
        _ => group_result::GROUP_RESULT_DISCONNECTED,
    }
}

/// # Safety
/// `client` must be NULL or a live client with no other call in progress.
pub(crate) unsafe fn client_mut<'a>(
    client: *mut group_client,
) -> Result<&'a mut group_client, group_result> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(group_result::GROUP_RESULT_WRONG_THREAD);
    }
    crate::handles::check(client)?;
    // SAFETY: checked live above; per the contract, used by one thread at a time.
    unsafe { client.as_mut() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)
}

/// Connects to a server over `transport` (`GROUP_TRANSPORT_TCP`, `_UDP` or `_WS`) at `addr` (text such as
/// `127.0.0.1:7100`). **Blocking** until connected (UDP: until the KCP handshake completed). On success
/// `*out` owns the client until `group_client_free`.
///
/// # Safety
/// `addr` must point to `addr_len` readable bytes; `out` to a writable pointer. Any thread but a server's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_connect(
    transport: u32,
    addr: *const u8,
    addr_len: usize,
    out: *mut *mut group_client,
) -> group_result {
    guard(|| {
        if out.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(group_result::GROUP_RESULT_WRONG_THREAD);
        }
        // SAFETY: forwarded from this function's contract.
        let addr: std::net::SocketAddr = unsafe { text(addr, addr_len) }?
            .parse()
            .map_err(|_| group_result::GROUP_RESULT_INVALID_ARGUMENT)?;
        let runtime = crate::threads::runtime("group-client", 1)?;
        let connecting = async move {
            match transport {
                1 => Ok(Client::connect_tcp(addr).await),
                2 => Ok(Client::connect_udp(addr).await),
                3 => Ok(Client::connect_ws(addr).await),
                _ => Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
            }
        };
        // On a library thread, like every socket operation (see threads.rs): the handshake writes.
        let client = runtime
            .block_on(runtime.spawn(connecting))
            .map_err(|_| group_result::GROUP_RESULT_RUNTIME_FAILED)??
            .map_err(|_| group_result::GROUP_RESULT_DISCONNECTED)?;
        let client = Box::new(group_client {
            client,
            queued: VecDeque::new(),
            last_refusal: String::new(),
            last_reply: Bytes::new(),
            runtime,
        });
        let client = Box::into_raw(client);
        crate::handles::register(client);
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(client) };
        Ok(())
    })
}

/// Says Hello as `uid` with `token` (empty when the server has no `authSecret`). On success the 16-byte
/// session ID is written to `sid_out`. A refusal (bad token: 8) returns `GROUP_RESULT_REFUSED` with the code
/// in `*refusal`. **Blocking.**
///
/// # Safety
/// `client` live; `uid`/`token` their lengths of readable bytes; `sid_out` 16 writable bytes; `refusal`
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_hello(
    client: *mut group_client,
    uid: *const u8,
    uid_len: usize,
    token: *const u8,
    token_len: usize,
    sid_out: *mut u8,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (client, uid, token) = unsafe {
            (
                client_mut(client)?,
                text(uid, uid_len)?,
                text(token, token_len)?,
            )
        };
        if sid_out.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        let sid = client
            .runtime
            .block_on(client.client.hello(uid, token))
            .map_err(|e| client_error(&mut client.last_refusal, e, refusal))?;
        // SAFETY: `sid_out` is non-null and, per the contract, holds 16 writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(sid.0.as_ptr(), sid_out, sid.0.len()) };
        Ok(())
    })
}

/// Creates a group (see `group_server_new_group` for the parameters); the 52-byte ID goes to `group_out`.
/// **Blocking.**
///
/// # Safety
/// `client` live; `group_out` 52 writable bytes; `refusal` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_create(
    client: *mut group_client,
    allow_empty: u8,
    join: u8,
    ttl_s: u16,
    interval_ms: u16,
    group_out: *mut u8,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let client = unsafe { client_mut(client) }?;
        let params = CreateRequest {
            allow_empty: allow_empty != 0,
            join: join != 0,
            ttl_s,
            interval_ms,
        };
        let id = client
            .runtime
            .block_on(client.client.create(params))
            .map_err(|e| client_error(&mut client.last_refusal, e, refusal))?;
        // SAFETY: per the contract, `group_out` holds 52 writable bytes.
        unsafe { write_group(&id, group_out) }
    })
}

/// Joins a random group that has room, or creates one (with `allow_empty`, `ttl_s`, `interval_ms` as in
/// `group_client_create`) when none has; the other members get a join push when `message` is not empty.
/// The 52-byte ID of the group joined or created goes to `group_out`. **Blocking.**
///
/// # Safety
/// `client` live; `message` `message_len` readable bytes; `group_out` 52 writable bytes; `refusal` NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_random_join(
    client: *mut group_client,
    allow_empty: u8,
    ttl_s: u16,
    interval_ms: u16,
    message: *const u8,
    message_len: usize,
    group_out: *mut u8,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (client, message) = unsafe { (client_mut(client)?, bytes(message, message_len)?) };
        let params = RandJoinRequest {
            allow_empty: allow_empty != 0,
            ttl_s,
            interval_ms,
            message: Bytes::copy_from_slice(message),
        };
        let id = client
            .runtime
            .block_on(client.client.rand_join(params))
            .map_err(|e| client_error(&mut client.last_refusal, e, refusal))?;
        // SAFETY: per the contract, `group_out` holds 52 writable bytes.
        unsafe { write_group(&id, group_out) }
    })
}

/// Whether a membership call joins or leaves.
enum Membership {
    Join,
    Leave,
}

/// Joins or leaves, with the arguments of `group_client_join` / `group_client_leave`.
///
/// # Safety
/// As `group_client_join`.
unsafe fn change_membership(
    client: *mut group_client,
    group: *const u8,
    message: *const u8,
    message_len: usize,
    refusal: *mut u16,
    change: Membership,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (client, group, message) = unsafe {
            (
                client_mut(client)?,
                group_in(group)?,
                bytes(message, message_len)?,
            )
        };
        let connection = &mut client.client;
        let answer = client.runtime.block_on(async {
            match change {
                Membership::Join => connection.join(group, message).await,
                Membership::Leave => connection.leave(group, message).await,
            }
        });
        answer
            .map(|_| ())
            .map_err(|e| client_error(&mut client.last_refusal, e, refusal))
    })
}

/// Joins `group` (52 bytes); the other members get a join push when `message` is not empty. **Blocking.**
///
/// # Safety
/// `client` live; `group` 52 readable bytes; `message` `message_len` readable bytes; `refusal` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_join(
    client: *mut group_client,
    group: *const u8,
    message: *const u8,
    message_len: usize,
    refusal: *mut u16,
) -> group_result {
    // SAFETY: the same contract.
    unsafe {
        change_membership(
            client,
            group,
            message,
            message_len,
            refusal,
            Membership::Join,
        )
    }
}

/// Leaves `group`; the remaining members get a leave push when `message` is not empty. **Blocking.**
///
/// # Safety
/// As `group_client_join`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_leave(
    client: *mut group_client,
    group: *const u8,
    message: *const u8,
    message_len: usize,
    refusal: *mut u16,
) -> group_result {
    // SAFETY: the same contract.
    unsafe {
        change_membership(
            client,
            group,
            message,
            message_len,
            refusal,
            Membership::Leave,
        )
    }
}

/// Broadcasts `message` to the other members of `group`; `reliable` (0 or 1) picks the UDP channel. Returns
/// once it is sent: a refusal arrives later as a `GROUP_PUSH_REFUSED` push.
///
/// # Safety
/// `client` live; `group` 52 readable bytes; `message` `message_len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_broadcast(
    client: *mut group_client,
    group: *const u8,
    message: *const u8,
    message_len: usize,
    reliable: u8,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (client, group, message) = unsafe {
            (
                client_mut(client)?,
                group_in(group)?,
                bytes(message, message_len)?,
            )
        };
        let message = Bytes::copy_from_slice(message);
        client
            .runtime
            .block_on(client.client.broadcast(group, message, reliable != 0))
            .map_err(|e| client_error(&mut client.last_refusal, e, std::ptr::null_mut()))
    })
}

/// Sends the server's own command `ver` (2 or more) / `cmd` with `payload` and waits for its answer
/// (`group_server_add_command` on a C host, `ServerBuilder::on_command` in Rust). The Ok response's payload
/// is copied into `reply_buf` and its length written to `*reply_len`; when it does not fit, the call
/// returns `GROUP_RESULT_BUFFER_TOO_SMALL` with the length in `*reply_len` and keeps the reply for
/// `group_client_last_reply`. A refusal returns `GROUP_RESULT_REFUSED` with the code in `*refusal` (9: no
/// handler for that command). **Blocking.**
///
/// # Safety
/// `client` live; `payload` `payload_len` readable bytes; `reply_buf` `reply_cap` writable bytes (NULL
/// allowed when `reply_cap` is 0); `reply_len` writable; `refusal` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_request(
    client: *mut group_client,
    ver: u8,
    cmd: u16,
    payload: *const u8,
    payload_len: usize,
    reply_buf: *mut u8,
    reply_cap: usize,
    reply_len: *mut usize,
    refusal: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (client, payload) = unsafe { (client_mut(client)?, bytes(payload, payload_len)?) };
        if ver < group_core::proto::VER_CUSTOM_MIN || reply_len.is_null() {
            return Err(if reply_len.is_null() {
                group_result::GROUP_RESULT_NULL_ARGUMENT
            } else {
                group_result::GROUP_RESULT_INVALID_ARGUMENT
            });
        }
        let request = group_core::proto::Request::Custom {
            ver,
            cmd,
            payload: Bytes::copy_from_slice(payload),
        };
        client.last_reply = client
            .runtime
            .block_on(client.client.request(&request))
            .map_err(|e| client_error(&mut client.last_refusal, e, refusal))?;
        // SAFETY: forwarded from this function's contract.
        unsafe { write_out(&client.last_reply, reply_buf, reply_cap, reply_len) }
    })
}

/// Copies the payload of the last custom command's reply (see `group_client_request`) into `buf`, its
/// length into `*written`; `GROUP_RESULT_BUFFER_TOO_SMALL` with the length needed when it does not fit.
///
/// # Safety
/// `client` live; `buf` `buf_len` writable bytes (NULL allowed when `buf_len` is 0); `written` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_last_reply(
    client: *mut group_client,
    buf: *mut u8,
    buf_len: usize,
    written: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let client = unsafe { client_mut(client) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { write_out(&client.last_reply, buf, buf_len, written) }
    })
}

/// Writes the message of the last refusal this client received (a hook's own text, for example; UTF-8, not
/// NUL-terminated) into `buf` and its length into `*written`; empty before any refusal. A buffer too small
/// returns `GROUP_RESULT_BUFFER_TOO_SMALL` with the length needed in `*written`.
///
/// # Safety
/// `client` live; `buf` `buf_len` writable bytes (NULL allowed when `buf_len` is 0); `written` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_refusal_message(
    client: *mut group_client,
    buf: *mut u8,
    buf_len: usize,
    written: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let client = unsafe { client_mut(client) }?;
        // SAFETY: forwarded from this function's contract.
        unsafe { write_out(client.last_refusal.as_bytes(), buf, buf_len, written) }
    })
}

/// Says Fin (the session ends at once on the server), closes the connection and frees the client.
/// **Blocking** (at most half a second for the Fin). NULL is a no-op (`GROUP_RESULT_OK`); `client` must
/// not be used afterwards. A second free (or a pointer the library never returned) gets
/// `GROUP_RESULT_INVALID_HANDLE`; a call from inside a library callback `GROUP_RESULT_WRONG_THREAD`.
///
/// # Safety
/// `client` NULL, or any pointer value with no call on it in progress on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_free(client: *mut group_client) -> group_result {
    guard(|| {
        if client.is_null() {
            return Ok(());
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(group_result::GROUP_RESULT_WRONG_THREAD);
        }
        if !crate::handles::unregister(client) {
            return Err(group_result::GROUP_RESULT_INVALID_HANDLE);
        }
        // SAFETY: per the contract, `client` came from Box::into_raw in group_client_connect, freed once.
        let client = unsafe { Box::from_raw(client) };
        let group_client {
            mut client,
            runtime,
            ..
        } = *client;
        // Say Fin (at most half a second) so the server ends the session at once rather than after
        // connectionTtl, then close inside the runtime (the connection's tasks end with it).
        runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_millis(500), client.fin()).await;
            drop(client)
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    })
}
