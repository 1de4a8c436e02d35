//! `group_client_connect_tls` against a server whose `tls.cert`/`tls.key` came from rcgen: over TCP and
//! wss the client connects and says Hello when it trusts the certificate; it is disconnected with
//! CONNECT_FAILED when it does not; UDP, an unusable CA text or server name are refused at the call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use group_ffi::*;

struct Server(*mut group_server);

impl Server {
    fn start(config: &str) -> Server {
        let mut server: *mut group_server = std::ptr::null_mut();
        // SAFETY: real pointers; freed on drop.
        unsafe {
            assert_eq!(
                group_server_new(config.as_ptr(), config.len(), 1, &mut server),
                group_result::GROUP_RESULT_OK
            );
            assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        }
        Server(server)
    }

    fn addr(&self, transport: u32) -> String {
        let mut port = 0u16;
        // SAFETY: a live server.
        let r = unsafe { group_server_port(self.0, transport, &mut port) };
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        format!("127.0.0.1:{port}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: created in `start`, freed once.
        unsafe { group_server_free(self.0) };
    }
}

struct Client(*mut group_client);

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: created by connect_tls, freed once.
        unsafe { group_client_free(self.0) };
    }
}

fn connect_tls(transport: u32, addr: &str, name: &str, ca: &[u8]) -> Result<Client, group_result> {
    let mut client: *mut group_client = std::ptr::null_mut();
    let ca_ptr = if ca.is_empty() {
        std::ptr::null()
    } else {
        ca.as_ptr()
    };
    // SAFETY: real pointers and lengths; no options.
    let r = unsafe {
        group_client_connect_tls(
            transport,
            addr.as_ptr(),
            addr.len(),
            name.as_ptr(),
            name.len(),
            ca_ptr,
            ca.len(),
            std::ptr::null(),
            &mut client,
        )
    };
    if r == group_result::GROUP_RESULT_OK {
        Ok(Client(client))
    } else {
        Err(r)
    }
}

impl Client {
    /// The next connection-state or completion event: (kind, result, reason).
    fn next_state(&self) -> (u32, u32, u32) {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let mut event = std::mem::MaybeUninit::<group_client_event>::uninit();
            let mut buf = vec![0u8; 4096];
            let mut needed = 0usize;
            // SAFETY: a live client; real buffers.
            let r = unsafe {
                group_client_poll_event(
                    self.0,
                    100,
                    event.as_mut_ptr(),
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut needed,
                )
            };
            if r == group_result::GROUP_RESULT_NOT_FOUND {
                continue;
            }
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            // SAFETY: written on OK.
            let e = unsafe { event.assume_init() };
            return (e.kind, e.result, e.reason);
        }
        panic!("no event within 20 s");
    }

    fn hello(&self, uid: &str) {
        let mut op = 0;
        // SAFETY: a live client; real pointers and lengths.
        let r = unsafe {
            group_client_submit_hello(
                self.0,
                uid.as_ptr(),
                uid.len(),
                std::ptr::null(),
                0,
                0,
                &mut op,
            )
        };
        assert_eq!(r, group_result::GROUP_RESULT_OK);
    }
}

#[test]
fn a_c_client_connects_with_tls_when_it_trusts_the_certificate() {
    let scratch = tempfile::Builder::new()
        .prefix("group-ffi-tls-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let made = rcgen::generate_simple_self_signed(vec!["game.example".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let config = format!(
        r#"{{"server": {{"tcp": "127.0.0.1:0", "ws": "127.0.0.1:0", "udp": null}},
            "mesh": {{"bind": "127.0.0.1:0"}},
            "tls": {{"cert": {:?}, "key": {:?}}}}}"#,
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    );
    let server = Server::start(&config);
    let ca = made.cert.pem();
    let connected = group_client_event_kind::GROUP_CLIENT_EVENT_CONNECTED as u32;
    let completed = group_client_event_kind::GROUP_CLIENT_EVENT_COMPLETED as u32;
    for transport in [1, 3] {
        let client = connect_tls(
            transport,
            &server.addr(transport),
            "game.example",
            ca.as_bytes(),
        )
        .unwrap();
        assert_eq!(client.next_state().0, connected, "transport {transport}");
        client.hello("sealed");
        let (kind, result, _) = client.next_state();
        assert_eq!(
            (kind, result),
            (completed, group_result::GROUP_RESULT_OK as u32)
        );
    }

    // Trusting only the public web's CAs, the self-signed certificate does not check out.
    let stranger = connect_tls(1, &server.addr(1), "game.example", &[]).unwrap();
    let (kind, _, reason) = stranger.next_state();
    assert_eq!(
        kind,
        group_client_event_kind::GROUP_CLIENT_EVENT_DISCONNECTED as u32
    );
    assert_eq!(
        reason,
        group_disconnect_reason::GROUP_DISCONNECT_CONNECT_FAILED as u32
    );

    let refused =
        |transport, name: &str, ca: &[u8]| connect_tls(transport, "127.0.0.1:1", name, ca).err();
    let invalid = Some(group_result::GROUP_RESULT_INVALID_ARGUMENT);
    assert_eq!(
        refused(2, "game.example", ca.as_bytes()),
        invalid,
        "UDP has no TLS"
    );
    assert_eq!(
        refused(1, "game.example", b"not pem"),
        invalid,
        "a CA text without a certificate"
    );
    assert_eq!(
        refused(1, "not a name!", ca.as_bytes()),
        invalid,
        "a server name that is no name"
    );
}
