//! A game client over C: connect over TCP, WebSocket or UDP (KCP), say Hello, create, join, leave,
//! broadcast, and poll pushes from the host's own thread (a game loop).
//!
//! Each client owns one background thread (its runtime), which keeps the connection alive (KCP timers,
//! acknowledgements) between calls. Every call is **blocking** until its answer arrives, except
//! `group_client_broadcast` (no answer on success) and `group_client_poll_push` with a zero timeout.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use group_core::GroupId;
use group_core::proto::CreateRequest;
use group_net::client::{Client, ClientError, Push};
use tokio::runtime::Runtime;

use crate::panic::{guard, guard_void};
use crate::result::group_result;
use crate::slice::{GROUP_ID_LEN, group_in, refused_with, write_group};
use crate::slice::{bytes, text, write_out};

/// A client connection. Create with `group_client_connect`, free with `group_client_free`. Calls on one
/// client must not overlap (use one client per thread, or lock around it).
pub struct group_client {
    /// Declared first so that it drops first: the connection closes before its runtime goes.
    client: Client,
    /// Entries of merged broadcast pushes not yet handed out (`group_client_poll_push` gives one per call).
    queued: VecDeque<Owned>,
    /// The message of the last refusal, for `group_client_refusal_message`.
    last_refusal: String,
    /// When this client last sent anything, and how long it may stay silent before a poll sends a
    /// KeepAlive (None: never): the server discards sessions silent for `limits.connectionTtl`.
    last_sent: Instant,
    keep_alive: Option<Duration>,
    runtime: Runtime,
}

/// How long a polling client stays silent before it sends a KeepAlive: under the server's default
/// `limits.connectionTtl` (10 s) with room for a slow frame.
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(3);

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
struct Owned {
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

impl group_client {
    /// Sends a KeepAlive when the client has been silent for its keep-alive interval (its Ok response is
    /// skipped by the poll), and tells when the next one is due (None: keep-alive is off).
    fn keep_alive_if_due(&mut self) -> Result<Option<Instant>, ClientError> {
        let Some(every) = self.keep_alive else {
            return Ok(None);
        };
        if self.last_sent.elapsed() >= every {
            self.last_sent = Instant::now();
            let request = group_core::proto::Request::KeepAlive;
            self.runtime.block_on(self.client.send(&request))?;
        }
        Ok(Some(self.last_sent + every))
    }
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
unsafe fn client_mut<'a>(client: *mut group_client) -> Result<&'a mut group_client, group_result> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(group_result::GROUP_RESULT_WRONG_THREAD);
    }
    // SAFETY: per the contract, a live client used by one thread at a time.
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("group-client")
            .enable_all()
            .build()
            .map_err(|_| group_result::GROUP_RESULT_RUNTIME_FAILED)?;
        let connecting = async {
            match transport {
                1 => Ok(Client::connect_tcp(addr).await),
                2 => Ok(Client::connect_udp(addr).await),
                3 => Ok(Client::connect_ws(addr).await),
                _ => Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
            }
        };
        let client = runtime
            .block_on(connecting)?
            .map_err(|_| group_result::GROUP_RESULT_DISCONNECTED)?;
        let client = Box::new(group_client {
            client,
            queued: VecDeque::new(),
            last_refusal: String::new(),
            last_sent: Instant::now(),
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            runtime,
        });
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(Box::into_raw(client)) };
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
        client.last_sent = Instant::now();
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
        client.last_sent = Instant::now();
        let id = client
            .runtime
            .block_on(client.client.create(params))
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
        client.last_sent = Instant::now();
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
        client.last_sent = Instant::now();
        client
            .runtime
            .block_on(client.client.broadcast(group, message, reliable != 0))
            .map_err(|e| client_error(&mut client.last_refusal, e, std::ptr::null_mut()))
    })
}

/// Hands out the next push, waiting at most `timeout_ms` (0: do not wait). Writes the push to `*out` and
/// its uid and message into `buf` (see `group_push`); `GROUP_RESULT_NOT_FOUND` when none came in time,
/// `GROUP_RESULT_DISCONNECTED` when the connection closed, `GROUP_RESULT_BUFFER_TOO_SMALL` when `buf_len`
/// cannot hold uid and message (the push stays queued; `*needed` tells the size). A merged broadcast push
/// is handed out one entry per call. While it waits it sends the KeepAlive the client owes (see
/// `group_client_set_keep_alive`).
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
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        while client.queued.is_empty() {
            let wake = client.keep_alive_if_due();
            if wake.is_err() {
                return Err(group_result::GROUP_RESULT_DISCONNECTED);
            }
            let until = wake
                .ok()
                .flatten()
                .map_or(deadline, |due| due.min(deadline));
            let next = client.client.next_push();
            let push = client.runtime.block_on(async {
                tokio::time::timeout_at(tokio::time::Instant::from_std(until), next).await
            });
            match push {
                Err(_) if Instant::now() >= deadline => {
                    return Err(group_result::GROUP_RESULT_NOT_FOUND);
                }
                Err(_) => {}
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

/// Sets how long a polling client may stay silent before `group_client_poll_push` sends a KeepAlive for
/// it (default 3000 ms; 0 turns it off). The server discards a session silent for `limits.connectionTtl`
/// (10 s by default): a game loop that polls every frame stays connected with nothing else to send. A host
/// that does not poll for longer than the server's ttl must send something itself.
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
        client.keep_alive =
            (interval_ms > 0).then(|| Duration::from_millis(u64::from(interval_ms)));
        Ok(())
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
/// **Blocking** (at most half a second for the Fin). NULL is a no-op; `client` must not be used afterwards.
///
/// # Safety
/// `client` NULL or a live client with no call in progress, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_free(client: *mut group_client) {
    guard_void(|| {
        if client.is_null() {
            return;
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
    });
}
