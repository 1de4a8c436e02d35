//! A C client that only polls stays connected: `group_client_poll_push` sends the KeepAlive it owes the
//! server's `limits.connectionTtl`. The control, with keep-alive off, is discarded as idle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use group_ffi::*;

/// Sessions silent for one second are discarded.
const CONFIG: &str = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                         "mesh": {"bind": "127.0.0.1:0"}, "limits": {"connectionTtl": 1}}"#;

/// Connects and says Hello as `uid`, with keep-alive every `keep_alive_ms` (0: off).
fn client(port: u16, uid: &str, keep_alive_ms: u32) -> *mut group_client {
    let addr = format!("127.0.0.1:{port}");
    let mut client: *mut group_client = std::ptr::null_mut();
    let mut sid = [0u8; 16];
    let mut refusal = 0u16;
    // SAFETY: real pointers and lengths; the client is freed by the caller.
    unsafe {
        let r = group_client_connect(1, addr.as_ptr(), addr.len(), &mut client);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let r = group_client_set_keep_alive(client, keep_alive_ms);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let r = group_client_hello(
            client,
            uid.as_ptr(),
            uid.len(),
            std::ptr::null(),
            0,
            sid.as_mut_ptr(),
            &mut refusal,
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
    }
    client
}

/// Polls for `ms` milliseconds in one call; what the poll came to.
fn poll(client: *mut group_client, ms: u32) -> group_result {
    let mut push = std::mem::MaybeUninit::<group_push>::uninit();
    let mut buf = [0u8; 256];
    let mut needed = 0usize;
    // SAFETY: a live client; real buffers.
    unsafe {
        group_client_poll_push(
            client,
            ms,
            push.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut needed,
        )
    }
}

#[test]
fn a_polling_client_stays_connected_past_the_connection_ttl() {
    let mut server: *mut group_server = std::ptr::null_mut();
    let mut port = 0u16;
    // SAFETY: real pointers; the server is freed at the end.
    unsafe {
        assert_eq!(
            group_server_new(CONFIG.as_ptr(), CONFIG.len(), 1, &mut server),
            group_result::GROUP_RESULT_OK
        );
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_OK
        );
    }
    // A KeepAlive every 100 ms leaves 900 ms of slack against the 1 s ttl on a loaded machine.
    let alive = client(port, "alive", 100);
    let silent = client(port, "silent", 0);
    // Two and a half ttls of polling and nothing else.
    assert_eq!(
        poll(alive, 2500),
        group_result::GROUP_RESULT_NOT_FOUND,
        "no push, and still connected"
    );
    // The server says why (a closing notice, 13 CLOSED_IDLE, as a refused push), then closes.
    assert_eq!(
        poll(silent, 2500),
        group_result::GROUP_RESULT_OK,
        "the closing notice"
    );
    assert_eq!(
        poll(silent, 2500),
        group_result::GROUP_RESULT_DISCONNECTED,
        "idle: discarded by the server"
    );
    let mut group = [0u8; GROUP_ID_LEN];
    let mut refusal = 0u16;
    // SAFETY: live client and server; real buffers. Each is freed once.
    unsafe {
        let r = group_client_create(alive, 0, 1, 60, 0, group.as_mut_ptr(), &mut refusal);
        assert_eq!(r, group_result::GROUP_RESULT_OK, "the session lived on");
        group_client_free(alive);
        group_client_free(silent);
        group_server_free(server);
    }
}
