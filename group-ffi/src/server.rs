//! Hosting a server: create it from a JSON configuration, start it, ask where it listens, stop it, free it.
//!
//! The server owns its tokio runtime (its own threads); the host's threads only ever block in the calls
//! documented as blocking (`group_server_start`, `group_server_stop`, `group_server_drain`,
//! `group_server_free`, and the server API).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use group_net::{Server, ServerBuilder, ServerConfig, StartError};
use tokio::runtime::Runtime;

use crate::events::Events;
use crate::hooks::{Answer, Continuations, Unanswerable};
use crate::panic::guard;
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
        let workers = usize::try_from(workers).unwrap_or(2);
        let runtime = crate::threads::runtime("group-server", workers)?;
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
        let server = Box::into_raw(server);
        crate::handles::register(server);
        // SAFETY: `out` is non-null and, per the contract, writable.
        unsafe { out.write(server) };
        Ok(())
    })
}

/// The server behind a handle, if the handle is live (see `handles.rs`).
///
/// # Safety
/// A live `server` must stay valid for `'a`: every caller's contract says no free runs during its call.
pub(crate) unsafe fn server_ref<'a>(
    server: *const group_server,
) -> Result<&'a group_server, group_result> {
    crate::handles::check(server)?;
    // SAFETY: the registry says the library handed it out and it is not freed; the caller keeps it so.
    unsafe { server.as_ref() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)
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
        let server = unsafe { crate::server::server_ref(server) }?;
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
        let server = unsafe { crate::server::server_ref(server) }?;
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

/// How a running server ends.
enum Ending {
    Stop,
    Drain,
}

/// Ends a running server as `ending` says, waiting on the caller's thread (never one of the server's own,
/// where waiting for the server's tasks would deadlock).
///
/// # Safety
/// `server` NULL or live.
unsafe fn end(server: *const group_server, grace_ms: u32, ending: Ending) -> group_result {
    guard(|| {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(group_result::GROUP_RESULT_WRONG_THREAD);
        }
        // SAFETY: per the contract, a live server (shared: its state is behind a lock).
        let server = unsafe { crate::server::server_ref(server) }?;
        let running = server
            .lock()
            .server
            .take()
            .ok_or(group_result::GROUP_RESULT_NOT_STARTED)?;
        let grace = Duration::from_millis(u64::from(grace_ms));
        match ending {
            Ending::Stop => server.runtime.block_on(running.shutdown(grace)),
            Ending::Drain => server.runtime.block_on(running.drain(grace)),
        }
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
    // SAFETY: forwarded from this function's contract.
    unsafe { end(server, grace_ms, Ending::Stop) }
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
    // SAFETY: forwarded from this function's contract.
    unsafe { end(server, grace_ms, Ending::Drain) }
}

/// Frees a server, stopping it first (with a one-second grace) if it still runs. **Blocking** while it
/// stops. `server` may be NULL (nothing happens, `GROUP_RESULT_OK`); it must not be used afterwards.
/// Misuse is refused, never a hang: `GROUP_RESULT_INVALID_HANDLE` for a server freed already (or a
/// pointer the library never returned), `GROUP_RESULT_WRONG_THREAD` from any callback of the library
/// (a hook, a command, a tick, an event callback: the server would wait for its own thread).
///
/// # Safety
/// `server` NULL, or any pointer value with no call on it in progress on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_free(server: *mut group_server) -> group_result {
    guard(|| {
        if server.is_null() {
            return Ok(());
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(group_result::GROUP_RESULT_WRONG_THREAD);
        }
        if !crate::handles::unregister(server) {
            return Err(group_result::GROUP_RESULT_INVALID_HANDLE);
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
        Ok(())
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
