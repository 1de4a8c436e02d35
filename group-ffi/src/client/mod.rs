//! A game client over C: connect over TCP, WebSocket or UDP (KCP), say Hello, create, join, leave,
//! broadcast, send the server's own commands, and poll what arrives from the host's own thread (a game
//! loop).
//!
//! Each client owns one background thread (its runtime) running the client's task (`driver.rs`): it
//! owns the connection, keeps it alive (KeepAlive, KCP timers) whether or not the host polls, sends the
//! host's submissions in order, and queues pushes, completions and connection-state events for
//! `group_client_poll_event`. Two ways to call:
//! - **non-blocking** (`submit.rs`): `group_client_connect_async` and `group_client_submit_*` return at
//!   once with an operation ID; the completion arrives through the poll. What a game loop wants.
//! - **blocking** (`blocking.rs`): `group_client_connect`, `group_client_create`, ... submit the same
//!   operation and wait for its completion on the caller's thread. Thin conveniences over the above.

mod blocking;
pub(crate) mod driver;
mod events;
mod submit;

pub use blocking::{
    group_client_broadcast, group_client_create, group_client_hello, group_client_join,
    group_client_last_reply, group_client_leave, group_client_random_join,
    group_client_refusal_message, group_client_request,
};
pub use events::{
    group_client_event, group_client_event_kind, group_client_poll_event, group_client_poll_push,
    group_client_set_keep_alive, group_disconnect_reason, group_push, group_push_kind,
};
pub use submit::{
    group_client_submit_create, group_client_submit_hello, group_client_submit_join,
    group_client_submit_leave, group_client_submit_random_join, group_client_submit_request,
};

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use group_net::client::{Client, ClientOptions, ClientTls};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use crate::panic::guard;
use crate::result::group_result;
use crate::slice::text;
use driver::{Channels, Completion, Operation, Reply, Submission};
use events::Owned;

/// A client connection. Create with `group_client_connect` or `group_client_connect_async`, free with
/// `group_client_free`. Calls on one client must not overlap (use one client per thread, or lock around
/// it).
pub struct group_client {
    /// The host's ends of the client task's queues.
    channels: Channels,
    /// The client task; awaited (briefly) by `group_client_free`.
    task: tokio::task::JoinHandle<()>,
    /// Entries of merged broadcast pushes not yet handed out (one per poll).
    pub(crate) queued: VecDeque<Owned>,
    /// Whether the connection-state event saying the connection ended has been taken off the queue.
    pub(crate) disconnected: bool,
    /// The ID the next submission gets (IDs start at 1; 0 never names an operation).
    next_op: u64,
    /// The message of the last refusal a blocking call received, for `group_client_refusal_message`.
    pub(crate) last_refusal: String,
    /// The payload of the last custom command's Ok response, for `group_client_last_reply`.
    pub(crate) last_reply: Bytes,
    /// Declared last so that it drops last: the task's channels close before its runtime goes.
    pub(crate) runtime: Runtime,
}

/// How a client connects and how long its calls may take; zeros mean the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct group_client_options {
    /// How long connecting (with the WebSocket or KCP handshake) may take; 0: 5000.
    pub connect_timeout_ms: u32,
    /// How long a call waits for its answer unless the call names its own timeout; 0: 10000.
    pub request_timeout_ms: u32,
    /// How long the client may stay silent before its thread sends KeepAlive; 0: 3000. The server
    /// discards sessions silent for `limits.connectionTtl` (10 s by default).
    pub keep_alive_ms: u32,
}

impl group_client_options {
    fn to_rust(self) -> ClientOptions {
        let defaults = ClientOptions::default();
        let or = |ms: u32, default: Duration| {
            if ms == 0 {
                default
            } else {
                Duration::from_millis(u64::from(ms))
            }
        };
        ClientOptions {
            connect_timeout: or(self.connect_timeout_ms, defaults.connect_timeout),
            request_timeout: or(self.request_timeout_ms, defaults.request_timeout),
            keep_alive: Some(or(
                self.keep_alive_ms,
                defaults.keep_alive.unwrap_or(Duration::from_secs(3)),
            )),
        }
    }
}

impl group_client {
    /// Queues `operation` for the client's task without waiting; its ID, or `GROUP_RESULT_BUSY` when
    /// [`driver::SUBMISSION_QUEUE`] submissions are already waiting.
    pub(crate) fn submit(
        &mut self,
        operation: Operation,
        timeout_ms: u32,
    ) -> Result<u64, group_result> {
        let op = self.next_op;
        let submission = Submission {
            op,
            operation,
            timeout: call_timeout(timeout_ms),
            reply: Reply::Event,
        };
        self.channels
            .submissions
            .try_send(submission)
            .map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => group_result::GROUP_RESULT_BUSY,
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    group_result::GROUP_RESULT_DISCONNECTED
                }
            })?;
        self.next_op += 1;
        Ok(op)
    }

    /// Queues `operation` and waits for its completion (at most its timeout, which the task enforces):
    /// the blocking calls. A refusal's message is kept for `group_client_refusal_message`.
    pub(crate) fn call(&mut self, operation: Operation) -> Result<Completion, group_result> {
        let (reply, completion) = oneshot::channel();
        let op = self.next_op;
        self.next_op += 1;
        let submission = Submission {
            op,
            operation,
            timeout: None,
            reply: Reply::Wait(reply),
        };
        self.channels
            .submissions
            .blocking_send(submission)
            .map_err(|_| group_result::GROUP_RESULT_DISCONNECTED)?;
        let completion = completion
            .blocking_recv()
            .map_err(|_| group_result::GROUP_RESULT_DISCONNECTED)?;
        if completion.result == group_result::GROUP_RESULT_REFUSED {
            self.last_refusal = String::from_utf8_lossy(&completion.payload).into_owned();
        }
        Ok(completion)
    }

    /// Queues `operation`, which has no answer, waiting for room if the queue is full.
    pub(crate) fn send(&mut self, operation: Operation) -> Result<(), group_result> {
        let op = self.next_op;
        self.next_op += 1;
        let submission = Submission {
            op,
            operation,
            timeout: None,
            reply: Reply::Event,
        };
        self.channels
            .submissions
            .blocking_send(submission)
            .map_err(|_| group_result::GROUP_RESULT_DISCONNECTED)
    }
}

/// A call's own timeout (`None`: the client's default).
fn call_timeout(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)))
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

/// Where to connect: a transport and an address.
fn target(transport: u32, addr: &str) -> Result<(u32, std::net::SocketAddr), group_result> {
    if !(1..=3).contains(&transport) {
        return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
    }
    let addr = addr
        .parse()
        .map_err(|_| group_result::GROUP_RESULT_INVALID_ARGUMENT)?;
    Ok((transport, addr))
}

async fn connect(
    transport: u32,
    addr: std::net::SocketAddr,
    options: ClientOptions,
) -> Result<Client, group_net::client::ClientError> {
    match transport {
        1 => Client::connect_tcp_with(addr, options).await,
        2 => Client::connect_udp_with(addr, options).await,
        _ => Client::connect_ws_with(addr, options).await,
    }
}

/// Starts connecting with TLS and returns at once, as [`group_client_connect_async`] does: over TCP
/// (`transport` 1) or WebSocket (3, then `wss://`); UDP (2) has no TLS and is refused with
/// `GROUP_RESULT_INVALID_ARGUMENT`. The server's certificate must name `server_name` (a DNS name or an
/// IP address, UTF-8) and chain to a CA in `ca_pem` (PEM text, one or more certificates), or, with
/// `ca_pem` NULL and `ca_pem_len` 0, to one of the public web's CAs (Mozilla's list, built in). A
/// `server_name` or `ca_pem` that cannot be used is `GROUP_RESULT_INVALID_ARGUMENT` at the call; a
/// certificate the server presents that does not check out ends the connection with
/// `GROUP_DISCONNECT_CONNECT_FAILED`.
///
/// # Safety
/// `addr`, `server_name` and `ca_pem` must point to their lengths' readable bytes (`ca_pem` may be NULL
/// with length 0); `options` NULL or readable; `out` writable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn group_client_connect_tls(
    transport: u32,
    addr: *const u8,
    addr_len: usize,
    server_name: *const u8,
    server_name_len: usize,
    ca_pem: *const u8,
    ca_pem_len: usize,
    options: *const group_client_options,
    out: *mut *mut group_client,
) -> group_result {
    guard(|| {
        may_connect(out)?;
        // SAFETY: forwarded from this function's contract.
        let (transport, addr) = target(transport, unsafe { text(addr, addr_len) }?)?;
        if transport == 2 {
            return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        // SAFETY: forwarded from this function's contract.
        let name = unsafe { text(server_name, server_name_len) }?;
        // SAFETY: forwarded from this function's contract.
        let ca = unsafe { crate::slice::bytes(ca_pem, ca_pem_len) }?;
        let tls = if ca.is_empty() {
            ClientTls::with_public_roots(name)
        } else {
            ClientTls::with_ca_pem(name, ca)
        }
        .map_err(|_| group_result::GROUP_RESULT_INVALID_ARGUMENT)?;
        // SAFETY: NULL or readable, per the contract.
        let options = unsafe { options_or_default(options) };
        let runtime = crate::threads::runtime("group-client", 1)?;
        let connecting = async move {
            match transport {
                1 => Client::connect_tls(addr, &tls, options).await,
                _ => Client::connect_wss(addr, &tls, options).await,
            }
        };
        open(runtime, connecting, options, out);
        Ok(())
    })
}

/// What every connect call checks first: somewhere to put the client, and a caller that is not one of
/// the library's own threads (blocking there would stall the runtime the connection needs).
fn may_connect(out: *mut *mut group_client) -> Result<(), group_result> {
    if out.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(group_result::GROUP_RESULT_WRONG_THREAD);
    }
    Ok(())
}

/// The host's options, or the defaults for NULL.
///
/// # Safety
/// `options` must be NULL or point to a readable `group_client_options`.
unsafe fn options_or_default(options: *const group_client_options) -> ClientOptions {
    // SAFETY: per this function's contract.
    unsafe { options.as_ref() }
        .copied()
        .unwrap_or_default()
        .to_rust()
}

/// Starts the client's runtime and task, and hands the host its handle.
fn open(
    runtime: Runtime,
    connecting: impl std::future::Future<Output = Result<Client, group_net::client::ClientError>>
    + Send
    + 'static,
    options: ClientOptions,
    out: *mut *mut group_client,
) {
    let (channels, ends) = driver::channels();
    let task = runtime.spawn(driver::run(connecting, options.request_timeout, ends));
    let client = Box::into_raw(Box::new(group_client {
        channels,
        task,
        queued: VecDeque::new(),
        disconnected: false,
        next_op: 1,
        last_refusal: String::new(),
        last_reply: Bytes::new(),
        runtime,
    }));
    crate::handles::register(client);
    // SAFETY: every caller checked `out` for NULL; per its contract it is writable.
    unsafe { out.write(client) };
}

/// Connects to a server over `transport` (`GROUP_TRANSPORT_TCP`, `_UDP` or `_WS`) at `addr` (text such as
/// `127.0.0.1:7100`). **Blocking** until connected (UDP: until the KCP handshake completed), at most 5 s.
/// On success `*out` owns the client until `group_client_free`; its first event is
/// `GROUP_CLIENT_EVENT_CONNECTED`.
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
        may_connect(out)?;
        // SAFETY: forwarded from this function's contract.
        let (transport, addr) = target(transport, unsafe { text(addr, addr_len) }?)?;
        let options = ClientOptions::default();
        let runtime = crate::threads::runtime("group-client", 1)?;
        // On a library thread, like every socket operation (see threads.rs): the handshake writes.
        let client = runtime
            .block_on(runtime.spawn(connect(transport, addr, options)))
            .map_err(|_| group_result::GROUP_RESULT_RUNTIME_FAILED)?
            .map_err(|_| group_result::GROUP_RESULT_DISCONNECTED)?;
        open(runtime, async move { Ok(client) }, options, out);
        Ok(())
    })
}

/// Starts connecting to a server over `transport` at `addr` and returns at once: the first event
/// `group_client_poll_event` hands out is `GROUP_CLIENT_EVENT_CONNECTED`, or
/// `GROUP_CLIENT_EVENT_DISCONNECTED` with the reason (`GROUP_DISCONNECT_CONNECT_FAILED`,
/// `_CONNECT_TIMED_OUT`). Submissions made before the connection is up are sent once it is, in order.
/// `options` may be NULL (the defaults). `*out` owns the client until `group_client_free`, whether or
/// not the connection is ever made.
///
/// # Safety
/// `addr` must point to `addr_len` readable bytes; `options` NULL or readable; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_client_connect_async(
    transport: u32,
    addr: *const u8,
    addr_len: usize,
    options: *const group_client_options,
    out: *mut *mut group_client,
) -> group_result {
    guard(|| {
        may_connect(out)?;
        // SAFETY: forwarded from this function's contract.
        let (transport, addr) = target(transport, unsafe { text(addr, addr_len) }?)?;
        // SAFETY: NULL or readable, per the contract.
        let options = unsafe { options_or_default(options) };
        let runtime = crate::threads::runtime("group-client", 1)?;
        open(runtime, connect(transport, addr, options), options, out);
        Ok(())
    })
}

/// Says Fin (the session ends at once on the server), closes the connection and frees the client.
/// **Blocking** (at most about a second: half a second for the Fin). Operations not completed are
/// dropped without completions. NULL is a no-op (`GROUP_RESULT_OK`); `client` must not be used
/// afterwards. A second free (or a pointer the library never returned) gets
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
        // SAFETY: per the contract, `client` came from Box::into_raw in `open`, and is freed once.
        let client = unsafe { Box::from_raw(client) };
        let group_client {
            channels,
            task,
            runtime,
            ..
        } = *client;
        let Channels {
            submissions,
            events,
            stop,
        } = channels;
        let _ = stop.send(());
        runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        });
        drop((submissions, events));
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    })
}
