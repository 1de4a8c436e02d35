//! The non-blocking client calls: each queues its operation for the client's task and returns at once
//! with the operation's ID in `*op_out`; the `GROUP_CLIENT_EVENT_COMPLETED` event carrying that ID comes
//! through `group_client_poll_event`. Operations are sent in the order they were submitted, one answer
//! at a time; each waits at most `timeout_ms` for its answer (0: the client's request timeout), then
//! completes with `GROUP_RESULT_TIMED_OUT`. Every submission completes exactly once, until the client is
//! freed. A full queue (1024 waiting) returns `GROUP_RESULT_BUSY`: nothing was queued.

use bytes::Bytes;
use group_core::proto::{CreateRequest, RandJoinRequest};

use super::driver::Operation;
use super::{client_mut, group_client};
use crate::panic::guard;
use crate::result::group_result;
use crate::slice::{bytes, group_in, text};

/// Submits `operation` and writes its ID.
///
/// # Safety
/// `client` NULL or live; `op_out` NULL or writable.
unsafe fn submit(
    client: *mut group_client,
    timeout_ms: u32,
    op_out: *mut u64,
    operation: impl FnOnce() -> Result<Operation, group_result>,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let client = unsafe { client_mut(client) }?;
        if op_out.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        let op = client.submit(operation()?, timeout_ms)?;
        // SAFETY: non-null, and per the contract writable.
        unsafe { op_out.write(op) };
        Ok(())
    })
}

/// The group and message arguments of a join or leave, copied.
///
/// # Safety
/// `group` 52 readable bytes; `message` `message_len` readable bytes.
unsafe fn group_and_message(
    group: *const u8,
    message: *const u8,
    message_len: usize,
) -> Result<(group_core::GroupId, Bytes), group_result> {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        Ok((
            group_in(group)?,
            Bytes::copy_from_slice(bytes(message, message_len)?),
        ))
    }
}

/// Submits Hello as `uid` with `token` (empty when the server has no `authSecret`). The completion's
/// message is the 16-byte session ID; a bad token completes `GROUP_RESULT_REFUSED` with code 8.
///
/// # Safety
/// `client` live; `uid`/`token` their lengths of readable bytes; `op_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_submit_hello(
    client: *mut group_client,
    uid: *const u8,
    uid_len: usize,
    token: *const u8,
    token_len: usize,
    timeout_ms: u32,
    op_out: *mut u64,
) -> group_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        submit(client, timeout_ms, op_out, || {
            Ok(Operation::Hello {
                uid: text(uid, uid_len)?.to_owned(),
                token: Bytes::copy_from_slice(text(token, token_len)?.as_bytes()),
            })
        })
    }
}

/// Submits a group creation (the parameters of `group_server_new_group`); the completion's `group` is
/// the new group's ID.
///
/// # Safety
/// `client` live; `op_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_submit_create(
    client: *mut group_client,
    allow_empty: u8,
    join: u8,
    ttl_s: u16,
    interval_ms: u16,
    timeout_ms: u32,
    op_out: *mut u64,
) -> group_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        submit(client, timeout_ms, op_out, || {
            Ok(Operation::Create(CreateRequest {
                allow_empty: allow_empty != 0,
                join: join != 0,
                ttl_s,
                interval_ms,
            }))
        })
    }
}

/// Submits a random join (see `group_client_random_join`); the completion's `group` is the group joined
/// or created.
///
/// # Safety
/// `client` live; `message` `message_len` readable bytes; `op_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_submit_random_join(
    client: *mut group_client,
    allow_empty: u8,
    ttl_s: u16,
    interval_ms: u16,
    message: *const u8,
    message_len: usize,
    timeout_ms: u32,
    op_out: *mut u64,
) -> group_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        submit(client, timeout_ms, op_out, || {
            Ok(Operation::RandJoin(RandJoinRequest {
                allow_empty: allow_empty != 0,
                ttl_s,
                interval_ms,
                message: Bytes::copy_from_slice(bytes(message, message_len)?),
            }))
        })
    }
}

/// Submits a join of `group` (52 bytes); the other members get a join push when `message` is not empty.
///
/// # Safety
/// `client` live; `group` 52 readable bytes; `message` `message_len` readable bytes; `op_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_submit_join(
    client: *mut group_client,
    group: *const u8,
    message: *const u8,
    message_len: usize,
    timeout_ms: u32,
    op_out: *mut u64,
) -> group_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        submit(client, timeout_ms, op_out, || {
            let (group, message) = group_and_message(group, message, message_len)?;
            Ok(Operation::Join { group, message })
        })
    }
}

/// Submits a leave of `group`; the remaining members get a leave push when `message` is not empty.
///
/// # Safety
/// As `group_client_submit_join`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_submit_leave(
    client: *mut group_client,
    group: *const u8,
    message: *const u8,
    message_len: usize,
    timeout_ms: u32,
    op_out: *mut u64,
) -> group_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        submit(client, timeout_ms, op_out, || {
            let (group, message) = group_and_message(group, message, message_len)?;
            Ok(Operation::Leave { group, message })
        })
    }
}

/// Submits the server's own command `ver` (2 or more) / `cmd` with `payload`; the completion's message is
/// the Ok response's payload (a refusal: code 9 when the server has no handler for that command).
///
/// # Safety
/// `client` live; `payload` `payload_len` readable bytes; `op_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_submit_request(
    client: *mut group_client,
    ver: u8,
    cmd: u16,
    payload: *const u8,
    payload_len: usize,
    timeout_ms: u32,
    op_out: *mut u64,
) -> group_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        submit(client, timeout_ms, op_out, || {
            if ver < group_core::proto::VER_CUSTOM_MIN {
                return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
            }
            Ok(Operation::Custom {
                ver,
                cmd,
                payload: Bytes::copy_from_slice(bytes(payload, payload_len)?),
            })
        })
    }
}
