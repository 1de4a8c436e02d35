//! The blocking client calls: each submits its operation to the client's task and waits for the
//! completion on the caller's thread (at most the client's request timeout). Conveniences for tools and
//! tests; a game loop uses the non-blocking calls of `submit.rs` instead.

use bytes::Bytes;
use group_core::proto::{CreateRequest, RandJoinRequest};

use super::driver::{Completion, Operation};
use super::{client_mut, group_client};
use crate::panic::guard;
use crate::result::group_result;
use crate::slice::{bytes, group_in, refused_with, text, write_group, write_out};

/// The completion's payload on success; on a refusal its code goes to `*refusal`.
///
/// # Safety
/// `refusal` NULL or writable.
unsafe fn succeeded(completion: &Completion, refusal: *mut u16) -> Result<&Bytes, group_result> {
    match completion.result {
        group_result::GROUP_RESULT_OK => Ok(&completion.payload),
        group_result::GROUP_RESULT_REFUSED => {
            // SAFETY: forwarded from this function's contract.
            Err(unsafe { refused_with(completion.code, refusal) })
        }
        other => Err(other),
    }
}

/// Writes the group a create or join answered with.
///
/// # Safety
/// `group_out` 52 writable bytes; `refusal` NULL or writable.
unsafe fn group_answer(
    completion: &Completion,
    group_out: *mut u8,
    refusal: *mut u16,
) -> Result<(), group_result> {
    // SAFETY: forwarded from this function's contract.
    unsafe { succeeded(completion, refusal) }?;
    let group = completion
        .group
        .as_ref()
        .ok_or(group_result::GROUP_RESULT_PROTOCOL)?;
    // SAFETY: forwarded from this function's contract.
    unsafe { write_group(group, group_out) }
}

/// Says Hello as `uid` with `token` (empty when the server has no `authSecret`). On success the 16-byte
/// session ID is written to `sid_out`. A refusal (bad token: 8) returns `GROUP_RESULT_REFUSED` with the code
/// in `*refusal`. **Blocking**, at most the client's request timeout (10 s by default; then `GROUP_RESULT_TIMED_OUT`).
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
        let operation = Operation::Hello {
            uid: uid.to_owned(),
            token: Bytes::copy_from_slice(token.as_bytes()),
        };
        let completion = client.call(operation)?;
        // SAFETY: `refusal` is NULL or writable, per the contract.
        let sid = unsafe { succeeded(&completion, refusal) }?;
        let sid: [u8; 16] = sid[..]
            .try_into()
            .map_err(|_| group_result::GROUP_RESULT_PROTOCOL)?;
        // SAFETY: `sid_out` is non-null and, per the contract, holds 16 writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(sid.as_ptr(), sid_out, sid.len()) };
        Ok(())
    })
}

/// Creates a group (see `group_server_new_group` for the parameters); the 52-byte ID goes to `group_out`.
/// **Blocking**, at most the client's request timeout (10 s by default; then `GROUP_RESULT_TIMED_OUT`).
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
        let completion = client.call(Operation::Create(params))?;
        // SAFETY: per the contract, `refusal` is NULL or writable and `group_out` holds 52 bytes.
        unsafe { group_answer(&completion, group_out, refusal) }
    })
}

/// Joins a random group that has room, or creates one (with `allow_empty`, `ttl_s`, `interval_ms` as in
/// `group_client_create`) when none has; the other members get a join push when `message` is not empty.
/// The 52-byte ID of the group joined or created goes to `group_out`. **Blocking**, at most the client's request timeout (10 s by default; then `GROUP_RESULT_TIMED_OUT`).
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
        let completion = client.call(Operation::RandJoin(params))?;
        // SAFETY: per the contract, `refusal` is NULL or writable and `group_out` holds 52 bytes.
        unsafe { group_answer(&completion, group_out, refusal) }
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
        let message = Bytes::copy_from_slice(message);
        let operation = match change {
            Membership::Join => Operation::Join { group, message },
            Membership::Leave => Operation::Leave { group, message },
        };
        let completion = client.call(operation)?;
        // SAFETY: `refusal` is NULL or writable, per the contract.
        unsafe { succeeded(&completion, refusal) }.map(drop)
    })
}

/// Joins `group` (52 bytes); the other members get a join push when `message` is not empty. **Blocking**, at most the client's request timeout (10 s by default; then `GROUP_RESULT_TIMED_OUT`).
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

/// Leaves `group`; the remaining members get a leave push when `message` is not empty. **Blocking**, at most the client's request timeout (10 s by default; then `GROUP_RESULT_TIMED_OUT`).
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
/// once it is queued, in order after the calls submitted before it: a refusal arrives later as a
/// `GROUP_PUSH_REFUSED` push. It waits only when 1024 submissions are already queued.
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
        client.send(Operation::Broadcast {
            group,
            message: Bytes::copy_from_slice(message),
            reliable: reliable != 0,
        })
    })
}

/// Sends the server's own command `ver` (2 or more) / `cmd` with `payload` and waits for its answer
/// (`group_server_add_command` on a C host, `ServerBuilder::on_command` in Rust). The Ok response's payload
/// is copied into `reply_buf` and its length written to `*reply_len`; when it does not fit, the call
/// returns `GROUP_RESULT_BUFFER_TOO_SMALL` with the length in `*reply_len` and keeps the reply for
/// `group_client_last_reply`. A refusal returns `GROUP_RESULT_REFUSED` with the code in `*refusal` (9: no
/// handler for that command). **Blocking**, at most the client's request timeout (10 s by default; then `GROUP_RESULT_TIMED_OUT`).
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
        let operation = Operation::Custom {
            ver,
            cmd,
            payload: Bytes::copy_from_slice(payload),
        };
        let completion = client.call(operation)?;
        // SAFETY: `refusal` is NULL or writable, per the contract.
        client.last_reply = unsafe { succeeded(&completion, refusal) }?.clone();
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
