//! Hosting a server: create it from a JSON configuration, start it, ask where it listens, stop it, free it.
//!
//! The server owns its tokio runtime (its own threads); the host's threads only ever block in the calls
//! documented as blocking (`group_server_start`, `group_server_stop`, `group_server_free`).

use std::time::Duration;

use group_net::{Server, ServerBuilder, ServerConfig, StartError};
use tokio::runtime::Runtime;

use crate::panic::{guard, guard_void};
use crate::result::group_result;
use crate::slice::{text, write_out};

/// A group server hosted in this process. Create with `group_server_new`, free with `group_server_free`.
pub struct group_server {
    /// Declared first so that it drops first: the server's tasks end before the runtime goes.
    server: Option<Server>,
    builder: Option<ServerBuilder>,
    runtime: Runtime,
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

fn parse_config(json: &str) -> Result<ServerConfig, group_core::ConfigError> {
    ServerConfig::from_json(json)
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
        let json = unsafe { text(config, config_len) }?;
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config = parse_config(json).map_err(|_| group_result::GROUP_RESULT_INVALID_CONFIG)?;
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
        let server = Box::new(group_server {
            server: None,
            builder: Some(ServerBuilder::new(config)),
            runtime,
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
        let json = unsafe { text(config, config_len) }?;
        let json = if json.trim().is_empty() { "{}" } else { json };
        match parse_config(json) {
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
/// `server` must come from `group_server_new` and not be freed; calls on one server must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_start(server: *mut group_server) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server with no other call in progress.
        let server = unsafe { server.as_mut() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let builder = server
            .builder
            .take()
            .ok_or(group_result::GROUP_RESULT_ALREADY_STARTED)?;
        let started = server.runtime.block_on(builder.start());
        match started {
            Ok(running) => {
                server.server = Some(running);
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
        let running = server
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
/// `server` as in `group_server_start`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_stop(
    server: *mut group_server,
    grace_ms: u32,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server with no other call in progress.
        let server = unsafe { server.as_mut() }.ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let running = server
            .server
            .take()
            .ok_or(group_result::GROUP_RESULT_NOT_STARTED)?;
        let grace = Duration::from_millis(u64::from(grace_ms));
        server.runtime.block_on(running.shutdown(grace));
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
        let mut server = unsafe { Box::from_raw(server) };
        if let Some(running) = server.server.take() {
            server
                .runtime
                .block_on(running.shutdown(Duration::from_secs(1)));
        }
        drop(server);
    });
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
