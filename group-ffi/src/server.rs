//! Hosting a server: create it from a JSON configuration, start it, ask where it listens, stop it, free it.
//!
//! The server owns its tokio runtime (its own threads); the host's threads only ever block in the calls
//! documented as blocking (`group_server_start`, `group_server_stop`, `group_server_drain`,
//! `group_server_free`, and the server API).

use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use group_net::{Command, Rejection, Server, ServerBuilder, ServerConfig, StartError};
use tokio::runtime::Runtime;

use crate::events::{Events, group_event, group_event_fn};
use crate::hooks::{Answer, Continuations, HostHook, Unanswerable, group_command, group_hook_fn};
use crate::panic::{guard, guard_void};
use crate::result::group_result;
use crate::slice::{text, write_out};

/// A group server hosted in this process. Create with `group_server_new`, free with `group_server_free`.
/// Every function on it may be called from any thread; the state below is locked for each call.
pub struct group_server {
    /// Declared first so that it drops first: the server's tasks end before the runtime goes.
    state: Mutex<State>,
    runtime: Runtime,
    /// Hook tokens waiting for `group_next`; shared with the hooks themselves.
    continuations: Arc<Continuations>,
    /// The event queue and callback; shared with the node task.
    events: Arc<Events>,
    /// `limits.maxPayload` of the configuration.
    max_payload: usize,
    /// The API handle, set by `group_server_start`.
    handle: OnceLock<group_net::ServerHandle>,
}

/// Before `group_server_start`: a builder, where hooks are registered. After: the running server.
struct State {
    builder: Option<ServerBuilder>,
    server: Option<Server>,
}

impl group_server {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server's Rust API once started (after a stop, its calls fail with `Stopped`), for Rust code
    /// linked into a host that created the server through the C ABI. Kept outside the lock, so that C API
    /// calls neither lock nor clone it: the C ABI's cost per call stays near Rust's.
    pub fn handle(&self) -> Option<&group_net::ServerHandle> {
        self.handle.get()
    }

    /// The runtime the server's tasks run on (to spawn Rust tasks beside them, or block on its API).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The event queue and callback.
    pub(crate) fn events(&self) -> Arc<Events> {
        self.events.clone()
    }

    /// The tokens hooks and custom commands wait on.
    pub(crate) fn continuations(&self) -> Arc<Continuations> {
        self.continuations.clone()
    }

    /// Largest payload a client may send and a custom command may answer with (`limits.maxPayload`).
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Delivers the host's answer to a token.
    pub(crate) fn answer(&self, token: u64, answer: Answer) -> Result<(), group_result> {
        self.continuations
            .answer(token, answer)
            .map_err(|e| match e {
                Unanswerable::UnknownToken => group_result::GROUP_RESULT_NOT_FOUND,
                Unanswerable::NotACommand => group_result::GROUP_RESULT_INVALID_ARGUMENT,
            })
    }

    /// Changes the builder: only before `group_server_start` (once clients can connect, what runs for
    /// them is fixed).
    pub(crate) fn configure(
        &self,
        change: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> Result<(), group_result> {
        let mut state = self.lock();
        let builder = state
            .builder
            .take()
            .ok_or(group_result::GROUP_RESULT_ALREADY_STARTED)?;
        state.builder = Some(change(builder));
        Ok(())
    }
}

/// The listeners a server has, for `group_server_port`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_transport {
    /// TCP clients.
    GROUP_TRANSPORT_TCP = 1,
    /// UDP (KCP) clients.
    GROUP_TRANSPORT_UDP = 2,
    /// WebSocket clients.
    GROUP_TRANSPORT_WS = 3,
    /// The cluster mesh (TCP and UDP on one port).
    GROUP_TRANSPORT_MESH = 4,
}

/// Most worker threads a server's runtime may have.
const MAX_WORKERS: u32 = 256;

/// Reads a configuration argument: UTF-8 JSON, where nothing at all means `{}` (every default).
///
/// # Safety
/// `config` must point to `config_len` readable bytes (NULL allowed when `config_len` is 0).
unsafe fn parse_config(
    config: *const u8,
    config_len: usize,
) -> Result<Result<ServerConfig, group_core::ConfigError>, group_result> {
    // SAFETY: forwarded from this function's contract.
    let json = unsafe { text(config, config_len) }?;
    let json = if json.trim().is_empty() { "{}" } else { json };
    Ok(ServerConfig::from_json(json))
}

/// Creates a server from a JSON configuration (the same format as group-server's `--config` file; `{}`
/// takes every default) and a runtime of `worker_threads` threads (0: two). Nothing listens yet: that is
/// `group_server_start`. On success `*out` receives the server, which the caller frees with
/// `group_server_free`.
///
/// # Safety
/// `config` must point to `config_len` readable bytes (NULL allowed when `config_len` is 0, meaning `{}`);
/// `out` must point to a writable pointer. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_new(
    config: *const u8,
    config_len: usize,
    worker_threads: u32,
    out: *mut *mut group_server,
) -> group_result {
    guard(|| {
        if out.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        // SAFETY: forwarded from this function's contract.
        let config = unsafe { parse_config(config, config_len) }?
            .map_err(|_| group_result::GROUP_RESULT_INVALID_CONFIG)?;
        if worker_threads > MAX_WORKERS {
            return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        let workers = if worker_threads == 0 {
            2
        } else {
            worker_threads
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::try_from(workers).unwrap_or(2))
            .thread_name("group-server")
            .enable_all()
            .build()
            .map_err(|_| group_result::GROUP_RESULT_RUNTIME_FAILED)?;
        let max_payload = usize::try_from(config.limits.max_payload).unwrap_or(usize::MAX);
        let events = Arc::new(Events::default());
        let sink = events.clone();
        let builder = ServerBuilder::new(config).on_event(move |event| sink.record(event));
        let server = Box::new(group_server {
            state: Mutex::new(State {
                builder: Some(builder),
                server: None,
            }),
            runtime,
            continuations: Arc::default(),
            events,
            max_payload,
            handle: OnceLock::new(),
        });
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(Box::into_raw(server)) };
        Ok(())
    })
}

/// Explains why a configuration is refused: writes a message naming the key and the problem (UTF-8, not
/// NUL-terminated) into `buf`, its length into `*written`, and returns `GROUP_RESULT_INVALID_CONFIG`.
/// A valid configuration writes nothing (`*written` = 0) and returns `GROUP_RESULT_OK`.
///
/// # Safety
/// `config` as in `group_server_new`; `buf` must point to `buf_len` writable bytes; `written` must point to
/// a writable `size_t`. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_config_error(
    config: *const u8,
    config_len: usize,
    buf: *mut u8,
    buf_len: usize,
    written: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        match unsafe { parse_config(config, config_len) }? {
            // SAFETY: forwarded from this function's contract.
            Ok(_) => unsafe { write_out(b"", buf, buf_len, written) },
            Err(e) => {
                // SAFETY: forwarded from this function's contract.
                unsafe { write_out(e.to_string().as_bytes(), buf, buf_len, written) }?;
                Err(group_result::GROUP_RESULT_INVALID_CONFIG)
            }
        }
    })
}

/// Binds the listeners and starts serving. **Blocking**: returns once every listener accepts connections.
///
/// # Safety
/// `server` must come from `group_server_new` and not be freed. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_start(server: *const group_server) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: its state is behind a lock).
        let server = unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let mut state = server.lock();
        let builder = state
            .builder
            .take()
            .ok_or(group_result::GROUP_RESULT_ALREADY_STARTED)?;
        let started = server.runtime.block_on(builder.start());
        match started {
            Ok(running) => {
                let _ = server.handle.set(running.handle());
                state.server = Some(running);
                Ok(())
            }
            Err(StartError::Bind { .. }) => Err(group_result::GROUP_RESULT_BIND_FAILED),
            Err(_) => Err(group_result::GROUP_RESULT_INVALID_CONFIG),
        }
    })
}

/// Writes the port a running server's listener is bound to (the real one when the configuration said
/// port 0) into `*port`. `transport` is a `group_transport` value. A disabled listener gives
/// `GROUP_RESULT_NOT_FOUND`.
///
/// # Safety
/// `server` as in `group_server_start`; `port` must point to a writable `uint16_t`. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_port(
    server: *const group_server,
    transport: u32,
    port: *mut u16,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server.
        let server = unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        if port.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        let state = server.lock();
        let running = state
            .server
            .as_ref()
            .ok_or(group_result::GROUP_RESULT_NOT_STARTED)?;
        let addr = match transport {
            1 => running.tcp_addr(),
            2 => running.udp_addr(),
            3 => running.ws_addr(),
            4 => running.mesh_listen_addr(),
            _ => return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
        };
        let addr = addr.ok_or(group_result::GROUP_RESULT_NOT_FOUND)?;
        // SAFETY: `port` is non-null and, per the contract, writable.
        unsafe { port.write(addr.port()) };
        Ok(())
    })
}

/// Stops a running server: stops accepting, leaves the cluster, closes every connection, and waits for
/// its tasks to end, at most `grace_ms` milliseconds. **Blocking.** The server can then only be freed.
///
/// # Safety
/// `server` as in `group_server_start`. Any thread but the server's own (never from a hook callback).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_stop(
    server: *const group_server,
    grace_ms: u32,
) -> group_result {
    guard(|| {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(group_result::GROUP_RESULT_WRONG_THREAD);
        }
        // SAFETY: per the contract, a live server (shared: its state is behind a lock).
        let server = unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let running = server
            .lock()
            .server
            .take()
            .ok_or(group_result::GROUP_RESULT_NOT_STARTED)?;
        let grace = Duration::from_millis(u64::from(grace_ms));
        server.runtime.block_on(running.shutdown(grace));
        Ok(())
    })
}

/// Drains a running server, as SIGTERM does to group-server: it goes offline (no new groups, the Offline
/// push to every client, the groups it owns handed to their backups), keeps serving until the last client
/// has gone or `server.drainTimeout` passed, then stops as `group_server_stop` with `grace_ms`. **Blocking**
/// for all of that. The server can then only be freed.
///
/// # Safety
/// `server` as in `group_server_start`. Any thread but the server's own (never from a callback).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_drain(
    server: *const group_server,
    grace_ms: u32,
) -> group_result {
    guard(|| {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(group_result::GROUP_RESULT_WRONG_THREAD);
        }
        // SAFETY: per the contract, a live server (shared: its state is behind a lock).
        let server = unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let running = server
            .lock()
            .server
            .take()
            .ok_or(group_result::GROUP_RESULT_NOT_STARTED)?;
        let grace = Duration::from_millis(u64::from(grace_ms));
        server.runtime.block_on(running.drain(grace));
        Ok(())
    })
}

/// Frees a server, stopping it first (with a one-second grace) if it still runs. **Blocking** while it
/// stops. `server` may be NULL (nothing happens); it must not be used afterwards.
///
/// # Safety
/// `server` must be NULL or come from `group_server_new`, not already freed, with no call in progress.
/// Never call it from a callback of this same server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_free(server: *mut group_server) {
    guard_void(|| {
        if server.is_null() {
            return;
        }
        // SAFETY: per the contract, `server` came from Box::into_raw in group_server_new and is freed once.
        let server = unsafe { Box::from_raw(server) };
        let running = server.lock().server.take();
        if let Some(running) = running {
            server
                .runtime
                .block_on(running.shutdown(Duration::from_secs(1)));
        }
        drop(server);
    });
}

/// Registers a hook written in C: `callback` runs with `userdata` for every `command` (a `group_command`),
/// before it is carried out (`phase` `GROUP_HOOK_BEFORE`, which may refuse it) or after it succeeded
/// (`GROUP_HOOK_AFTER`). Several hooks of one command and phase run in registration order. Only before
/// `group_server_start` (`GROUP_RESULT_ALREADY_STARTED` afterwards): once clients can connect, the hooks
/// are fixed. See `group_hook_fn` for the callback's thread and lifetimes, and `group_next` for the answer.
///
/// # Safety
/// `server` as in `group_server_start`. `callback` and `userdata` must stay usable from the server's
/// threads until the server is freed. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_add_hook(
    server: *const group_server,
    command: u32,
    phase: u32,
    callback: group_hook_fn,
    userdata: *mut c_void,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: its state is behind a lock).
        let server = unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let (command, which) = match command {
            1 => (group_command::GROUP_COMMAND_CREATE, Command::Create),
            2 => (group_command::GROUP_COMMAND_JOIN, Command::Join),
            3 => (group_command::GROUP_COMMAND_LEAVE, Command::Leave),
            4 => (group_command::GROUP_COMMAND_BROADCAST, Command::Broadcast),
            _ => return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
        };
        if !matches!(phase, 1 | 2) {
            return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        let hook = HostHook::new(callback, userdata, command)
            .map(Arc::new)
            .ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let continuations = server.continuations.clone();
        server.configure(|builder| match phase {
            1 => builder.before(which, move |ctx| {
                let run = hook.clone().run(continuations.clone(), ctx);
                async move {
                    match run.await {
                        Answer::Reject(rejection) => Err(rejection),
                        Answer::Continue | Answer::Reply(_) => Ok(()),
                    }
                }
            }),
            _ => builder.after(which, move |ctx| {
                let run = hook.clone().run(continuations.clone(), ctx);
                async move {
                    let _ = run.await;
                }
            }),
        })
    })
}

/// Sets (or with NULL clears) the event callback: `callback(userdata, event, uid)` for every event, on the
/// server's node thread (see `group_event_fn`). The polling queue receives every event as well.
///
/// # Safety
/// `server` as in `group_server_start`; `callback` and `userdata` usable from the server's thread until
/// replaced or the server is freed. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_set_event_callback(
    server: *const group_server,
    callback: group_event_fn,
    userdata: *mut c_void,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: events are internally locked).
        let server = unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        server.events.set_callback(callback, userdata);
        Ok(())
    })
}

/// Takes the next event from the queue without waiting: writes it to `*out` and its uid (`out->uid_len`
/// bytes, not NUL-terminated) to `uid_buf`. `GROUP_RESULT_NOT_FOUND` when the queue is empty;
/// `GROUP_RESULT_BUFFER_TOO_SMALL` (the event stays queued, `*needed` = the uid length) when `uid_buf_len`
/// is too small (64 bytes always suffice: uids are at most 64 bytes). Meant for a game loop's thread.
///
/// # Safety
/// `server` as in `group_server_start`; `out` writable; `uid_buf` `uid_buf_len` writable bytes; `needed`
/// writable. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_poll_event(
    server: *const group_server,
    out: *mut group_event,
    uid_buf: *mut u8,
    uid_buf_len: usize,
    needed: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: events are internally locked).
        let server = unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        if out.is_null() || needed.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        let mut uid_len = 0;
        let taken = server
            .events
            .pop_if(|q| {
                uid_len = q.uid.len();
                uid_len <= uid_buf_len
            })
            .ok_or(group_result::GROUP_RESULT_NOT_FOUND)?;
        // SAFETY: non-null and, per the contract, writable.
        unsafe { needed.write(uid_len) };
        let queued = taken.ok_or(group_result::GROUP_RESULT_BUFFER_TOO_SMALL)?;
        if uid_len > 0 {
            if uid_buf.is_null() {
                return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
            }
            // SAFETY: `uid_buf` holds `uid_buf_len >= uid_len` writable bytes per the contract.
            unsafe { std::ptr::copy_nonoverlapping(queued.uid.as_ptr(), uid_buf, uid_len) };
        }
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(queued.event) };
        Ok(())
    })
}

/// Answers a hook's `token`: `code` 0 lets the command go on; a code from 1000 to 65535 refuses it, and the
/// client gets a Bad response carrying `code` and `message` (UTF-8). After hooks take 0. Any thread, at
/// once (even inside the callback) or later. A token answered already, given up after
/// `server.hookTimeout`, or never issued gives `GROUP_RESULT_NOT_FOUND`.
///
/// # Safety
/// `server` as in `group_server_start`; `message` must point to `message_len` readable bytes (NULL allowed
/// when the length is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_next(
    server: *const group_server,
    token: u64,
    code: u32,
    message: *const u8,
    message_len: usize,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: continuations are internally locked).
        let server = unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        // SAFETY: forwarded from this function's contract.
        let message = unsafe { text(message, message_len) }?;
        let answer = match code {
            0 => Answer::Continue,
            1000..=65535 => {
                let code =
                    u16::try_from(code).map_err(|_| group_result::GROUP_RESULT_INVALID_ARGUMENT)?;
                Answer::Reject(Rejection::new(code, message))
            }
            _ => return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
        };
        server.answer(token, answer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                             "mesh": {"bind": "127.0.0.1:0"}}"#;

    #[test]
    fn a_server_starts_reports_its_port_stops_and_frees() {
        let mut server: *mut group_server = std::ptr::null_mut();
        // SAFETY: a real configuration string and out-pointer.
        let r = unsafe { group_server_new(CONFIG.as_ptr(), CONFIG.len(), 1, &mut server) };
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let mut port = 0u16;
        // SAFETY: `server` is live from here until it is freed below.
        unsafe {
            assert_eq!(
                group_server_port(server, 1, &mut port),
                group_result::GROUP_RESULT_NOT_STARTED
            );
            assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
            assert_eq!(
                group_server_start(server),
                group_result::GROUP_RESULT_ALREADY_STARTED
            );
            assert_eq!(
                group_server_port(server, 1, &mut port),
                group_result::GROUP_RESULT_OK
            );
            assert_ne!(port, 0);
            assert_eq!(
                group_server_port(server, 3, &mut port),
                group_result::GROUP_RESULT_NOT_FOUND
            );
            assert_eq!(
                group_server_port(server, 99, &mut port),
                group_result::GROUP_RESULT_INVALID_ARGUMENT
            );
            assert_eq!(
                group_server_stop(server, 1000),
                group_result::GROUP_RESULT_OK
            );
            group_server_free(server);
            group_server_free(std::ptr::null_mut());
        }
    }

    #[test]
    fn bad_configurations_are_refused_with_the_key_named() {
        let bad = r#"{"group": {"relayLimit": 0}}"#;
        let mut server: *mut group_server = std::ptr::null_mut();
        // SAFETY: real pointers and lengths throughout.
        unsafe {
            let r = group_server_new(bad.as_ptr(), bad.len(), 1, &mut server);
            assert_eq!(r, group_result::GROUP_RESULT_INVALID_CONFIG);
            assert!(
                server.is_null(),
                "out-parameters are written only on success"
            );
            let mut buf = [0u8; 256];
            let mut written = 0usize;
            let r = group_config_error(
                bad.as_ptr(),
                bad.len(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut written,
            );
            assert_eq!(r, group_result::GROUP_RESULT_INVALID_CONFIG);
            let message = std::str::from_utf8(&buf[..written]).unwrap();
            assert!(message.contains("group.relayLimit"), "{message}");
            let r = group_config_error(
                CONFIG.as_ptr(),
                CONFIG.len(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut written,
            );
            assert_eq!((r, written), (group_result::GROUP_RESULT_OK, 0));
            let r = group_server_new(bad.as_ptr(), bad.len(), 1, std::ptr::null_mut());
            assert_eq!(r, group_result::GROUP_RESULT_NULL_ARGUMENT);
            let not_utf8 = [0xffu8, 0xfe];
            let r = group_server_new(not_utf8.as_ptr(), 2, 1, &mut server);
            assert_eq!(r, group_result::GROUP_RESULT_INVALID_UTF8);
        }
    }
}

#[cfg(test)]
mod hook_tests {
    use super::*;
    use crate::hooks::group_hook_call;
    use group_core::proto::CreateRequest;
    use group_net::client::Client;

    /// What the test's C-style hook shares with the test: the server and the tokens it left unanswered.
    struct Host {
        server: std::sync::atomic::AtomicPtr<group_server>,
        deferred: Mutex<Vec<u64>>,
    }

    /// Refuses mallory at once (from inside the callback), defers "later", forgets "never", passes others.
    unsafe extern "C" fn before_join(
        userdata: *mut c_void,
        call: *const group_hook_call,
        token: u64,
    ) {
        // SAFETY: the test passes a `Host` as userdata and the library a valid call for the callback.
        let (host, call) = unsafe { (&*(userdata as *const Host), &*call) };
        // SAFETY: uid points to uid_len bytes for the duration of the callback.
        let uid = unsafe { std::slice::from_raw_parts(call.uid, call.uid_len) };
        assert_eq!((call.ver, call.cmd, call.group_len), (1, 111, 52));
        let server = host.server.load(std::sync::atomic::Ordering::SeqCst);
        match uid {
            b"mallory" => {
                let message = b"no mallory";
                // SAFETY: a live server and a real message buffer.
                let r = unsafe { group_next(server, token, 1001, message.as_ptr(), message.len()) };
                assert_eq!(r, group_result::GROUP_RESULT_OK);
            }
            b"later" | b"never" => host.deferred.lock().unwrap().push(token),
            _ => {
                // SAFETY: a live server; an empty message.
                let r = unsafe { group_next(server, token, 0, std::ptr::null(), 0) };
                assert_eq!(r, group_result::GROUP_RESULT_OK);
            }
        }
    }

    #[test]
    fn c_hooks_refuse_defer_and_time_out_through_tokens() {
        let config = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null, "hookTimeout": 1},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;
        let host = Box::new(Host {
            server: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            deferred: Mutex::new(Vec::new()),
        });
        let mut server: *mut group_server = std::ptr::null_mut();
        // SAFETY: real pointers throughout; the server is freed at the end, the host outlives it.
        unsafe {
            assert_eq!(
                group_server_new(config.as_ptr(), config.len(), 1, &mut server),
                group_result::GROUP_RESULT_OK
            );
            host.server
                .store(server, std::sync::atomic::Ordering::SeqCst);
            let userdata = &*host as *const Host as *mut c_void;
            assert_eq!(
                group_server_add_hook(server, 2, 1, Some(before_join), userdata),
                group_result::GROUP_RESULT_OK
            );
            assert_eq!(
                group_server_add_hook(server, 9, 1, Some(before_join), userdata),
                group_result::GROUP_RESULT_INVALID_ARGUMENT
            );
            assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
            assert_eq!(
                group_server_add_hook(server, 2, 1, Some(before_join), userdata),
                group_result::GROUP_RESULT_ALREADY_STARTED,
                "hooks are fixed once clients can connect"
            );
        }
        let mut port = 0u16;
        // SAFETY: a live server and a real out-parameter.
        unsafe { group_server_port(server, 1, &mut port) };
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let client_side = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server_addr = server as usize;
        let host_addr = &*host as *const Host as usize;
        client_side.block_on(async {
            let user = |uid: &'static str| async move {
                let mut c = Client::connect_tcp(addr).await.unwrap();
                c.hello(uid, "").await.unwrap();
                c
            };
            let mut alice = user("alice").await;
            let params = CreateRequest {
                allow_empty: true,
                join: true,
                ttl_s: 60,
                interval_ms: 0,
            };
            let group = alice.create(params).await.unwrap();
            let mut bob = user("bob").await;
            bob.join(group, b"").await.unwrap();
            let mut mallory = user("mallory").await;
            let refused = mallory.join(group, b"").await.unwrap_err();
            assert_eq!(refused.code(), Some(1001));
            assert!(refused.to_string().contains("no mallory"), "{refused}");

            // Answered later, from another thread.
            let mut later = user("later").await;
            let answer = std::thread::spawn(move || {
                loop {
                    // SAFETY: the host outlives this thread (joined below).
                    let host = unsafe { &*(host_addr as *const Host) };
                    let token = host.deferred.lock().unwrap().pop();
                    if let Some(token) = token {
                        // SAFETY: the server outlives this thread (joined below).
                        let r = unsafe {
                            group_next(
                                server_addr as *const group_server,
                                token,
                                0,
                                std::ptr::null(),
                                0,
                            )
                        };
                        assert_eq!(r, group_result::GROUP_RESULT_OK);
                        // SAFETY: as above. A second answer is an error code, not a crash.
                        let again = unsafe {
                            group_next(
                                server_addr as *const group_server,
                                token,
                                0,
                                std::ptr::null(),
                                0,
                            )
                        };
                        assert_eq!(again, group_result::GROUP_RESULT_NOT_FOUND);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            later.join(group, b"").await.unwrap();
            answer.join().unwrap();

            // Never answered: the request fails after hookTimeout and the token is forgotten.
            let mut never = user("never").await;
            let failed = never.join(group, b"").await.unwrap_err();
            assert_eq!(failed.code(), Some(group_core::proto::code::HOOK_FAILED));
        });
        let token = host.deferred.lock().unwrap().pop().unwrap();
        // SAFETY: a live server; the token timed out.
        let late = unsafe { group_next(server, token, 0, std::ptr::null(), 0) };
        assert_eq!(late, group_result::GROUP_RESULT_NOT_FOUND);
        // SAFETY: freed once; the host outlives it.
        unsafe { group_server_free(server) };
        drop(host);
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;
    use crate::events::{group_event, group_event_kind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the events the callback sees.
    unsafe extern "C" fn count(userdata: *mut c_void, event: *const group_event, _uid: *const u8) {
        // SAFETY: the test passes an AtomicUsize as userdata, and the library a valid event.
        let (counter, event) = unsafe { (&*(userdata as *const AtomicUsize), &*event) };
        if event.kind == group_event_kind::GROUP_EVENT_SESSION_OPENED as u32 {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn events_reach_the_callback_and_the_queue() {
        let config = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;
        let counter = Box::new(AtomicUsize::new(0));
        let mut server: *mut group_server = std::ptr::null_mut();
        let mut port = 0u16;
        // SAFETY: real pointers; the counter outlives the server, which is freed below.
        unsafe {
            group_server_new(config.as_ptr(), config.len(), 1, &mut server);
            let userdata = &*counter as *const AtomicUsize as *mut c_void;
            assert_eq!(
                group_server_set_event_callback(server, Some(count), userdata),
                group_result::GROUP_RESULT_OK
            );
            group_server_start(server);
            group_server_port(server, 1, &mut port);
        }
        let client_side = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        client_side.block_on(async {
            let mut c = group_net::client::Client::connect_tcp(([127, 0, 0, 1], port).into())
                .await
                .unwrap();
            c.hello("zoe", "").await.unwrap();
        });
        // The node records events right after it queues the Hello's response: wait for it, briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counter.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            counter.load(Ordering::SeqCst),
            1,
            "the callback saw the Hello"
        );
        let mut event = std::mem::MaybeUninit::<group_event>::uninit();
        let (mut small, mut uid) = ([0u8; 2], [0u8; 64]);
        let mut needed = 0usize;
        // SAFETY: real buffers and out-parameters; the server lives until freed.
        unsafe {
            let r = group_server_poll_event(
                server,
                event.as_mut_ptr(),
                small.as_mut_ptr(),
                2,
                &mut needed,
            );
            assert_eq!(
                (r, needed),
                (group_result::GROUP_RESULT_BUFFER_TOO_SMALL, 3)
            );
            let r = group_server_poll_event(
                server,
                event.as_mut_ptr(),
                uid.as_mut_ptr(),
                64,
                &mut needed,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let event = event.assume_init();
            assert_eq!(
                event.kind,
                group_event_kind::GROUP_EVENT_SESSION_OPENED as u32
            );
            assert_eq!(&uid[..event.uid_len], b"zoe");
            group_server_free(server);
        }
    }
}
