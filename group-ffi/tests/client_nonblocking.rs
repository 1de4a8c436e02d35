//! The non-blocking C client, as a game loop uses it: `group_client_connect_async` and
//! `group_client_submit_*` return at once; completions (matched by operation ID), pushes and
//! connection-state events (with a reason) come through `group_client_poll_event`; each call has its own
//! timeout; a server that never answers cannot hold the caller.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use group_ffi::*;

const CONFIG: &str = r#"{"server": {"tcp": "127.0.0.1:0", "ws": "127.0.0.1:0", "udp": "127.0.0.1:0"},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;

/// How long a test waits for an event before it fails (never reached when things work).
const PATIENCE: Duration = Duration::from_secs(20);

struct Server(*mut group_server);

impl Server {
    fn start() -> Server {
        let mut server: *mut group_server = std::ptr::null_mut();
        // SAFETY: real pointers; freed on drop.
        unsafe {
            assert_eq!(
                group_server_new(CONFIG.as_ptr(), CONFIG.len(), 1, &mut server),
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

/// One event as a test sees it.
#[derive(Debug)]
struct Event {
    kind: u32,
    op: u64,
    result: u32,
    reason: u32,
    code: u16,
    group: [u8; 52],
    uid: String,
    message: Vec<u8>,
}

fn connect_async(transport: u32, addr: &str, options: Option<group_client_options>) -> Client {
    let mut client: *mut group_client = std::ptr::null_mut();
    let options_ptr = options
        .as_ref()
        .map_or(std::ptr::null(), |o| o as *const group_client_options);
    // SAFETY: real pointers and lengths.
    let r = unsafe {
        group_client_connect_async(
            transport,
            addr.as_ptr(),
            addr.len(),
            options_ptr,
            &mut client,
        )
    };
    assert_eq!(r, group_result::GROUP_RESULT_OK);
    Client(client)
}

struct Client(*mut group_client);

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: created by connect_async, freed once.
        unsafe { group_client_free(self.0) };
    }
}

impl Client {
    /// One poll with `timeout_ms`: the event, or the result code.
    fn poll(&self, timeout_ms: u32) -> Result<Event, group_result> {
        let mut event = std::mem::MaybeUninit::<group_client_event>::uninit();
        let mut buf = vec![0u8; 4096];
        let mut needed = 0usize;
        // SAFETY: a live client; real buffers.
        let r = unsafe {
            group_client_poll_event(
                self.0,
                timeout_ms,
                event.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut needed,
            )
        };
        if r != group_result::GROUP_RESULT_OK {
            return Err(r);
        }
        // SAFETY: written on OK.
        let e = unsafe { event.assume_init() };
        Ok(Event {
            kind: e.kind,
            op: e.op,
            result: e.result,
            reason: e.reason,
            code: e.code,
            group: e.group,
            uid: String::from_utf8(buf.get(..e.uid_len).unwrap().to_vec()).unwrap(),
            message: buf
                .get(e.uid_len..e.uid_len + e.message_len)
                .unwrap()
                .to_vec(),
        })
    }

    /// The next event of kind `kind`, skipping others (pushes), within [`PATIENCE`].
    fn next(&self, kind: group_client_event_kind) -> Event {
        let until = Instant::now() + PATIENCE;
        while Instant::now() < until {
            match self.poll(100) {
                Ok(e) if e.kind == kind as u32 => return e,
                Ok(_) | Err(group_result::GROUP_RESULT_NOT_FOUND) => {}
                Err(other) => panic!("poll failed with {other:?} waiting for {kind:?}"),
            }
        }
        panic!("no {kind:?} event within {PATIENCE:?}");
    }

    fn hello(&self, uid: &str, timeout_ms: u32) -> u64 {
        let mut op = 0;
        // SAFETY: a live client; real pointers and lengths.
        let r = unsafe {
            group_client_submit_hello(
                self.0,
                uid.as_ptr(),
                uid.len(),
                std::ptr::null(),
                0,
                timeout_ms,
                &mut op,
            )
        };
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        op
    }

    fn create(&self) -> u64 {
        let mut op = 0;
        // SAFETY: a live client.
        let r = unsafe { group_client_submit_create(self.0, 1, 1, 60, 0, 0, &mut op) };
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        op
    }

    fn join(&self, group: &[u8; 52], message: &str) -> u64 {
        let mut op = 0;
        // SAFETY: a live client; 52 group bytes; real message.
        let r = unsafe {
            group_client_submit_join(
                self.0,
                group.as_ptr(),
                message.as_ptr(),
                message.len(),
                0,
                &mut op,
            )
        };
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        op
    }

    fn request(&self, cmd: u16, timeout_ms: u32) -> u64 {
        let mut op = 0;
        // SAFETY: a live client; an empty payload.
        let r = unsafe {
            group_client_submit_request(self.0, 2, cmd, std::ptr::null(), 0, timeout_ms, &mut op)
        };
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        op
    }
}

use group_client_event_kind::*;

const OK: u32 = group_result::GROUP_RESULT_OK as u32;

#[test]
fn submissions_complete_in_order_with_their_ids_and_pushes_flow_between_them() {
    let server = Server::start();
    for transport in [1u32, 2, 3] {
        let addr = server.addr(transport);
        let (alice, bob) = (
            connect_async(transport, &addr, None),
            connect_async(transport, &addr, None),
        );
        // Submitted before the connection is up: sent once it is, in order.
        let hello = alice.hello("alice", 0);
        let create = alice.create();
        let unknown = alice.request(77, 0);
        assert!(hello < create && create < unknown, "IDs grow");
        assert_eq!(alice.next(GROUP_CLIENT_EVENT_CONNECTED).result, OK);
        let said = alice.next(GROUP_CLIENT_EVENT_COMPLETED);
        assert_eq!((said.op, said.result, said.message.len()), (hello, OK, 16));
        let created = alice.next(GROUP_CLIENT_EVENT_COMPLETED);
        assert_eq!((created.op, created.result), (create, OK));
        assert_ne!(created.group, [0; 52], "the new group's ID");
        let refused = alice.next(GROUP_CLIENT_EVENT_COMPLETED);
        assert_eq!(refused.op, unknown);
        assert_eq!(refused.result, group_result::GROUP_RESULT_REFUSED as u32);
        assert_eq!(refused.code, 9, "no handler for that command");
        assert!(!refused.message.is_empty(), "the refusal's text");

        bob.hello("bob", 0);
        let joined = bob.join(&created.group, "hi");
        bob.next(GROUP_CLIENT_EVENT_CONNECTED);
        let completion = loop {
            let e = bob.next(GROUP_CLIENT_EVENT_COMPLETED);
            if e.op == joined {
                break e;
            }
        };
        assert_eq!((completion.result, completion.group), (OK, created.group));
        let push = alice.next(GROUP_CLIENT_EVENT_JOINED);
        assert_eq!(
            (push.uid.as_str(), push.message.as_slice()),
            ("bob", &b"hi"[..])
        );
    }
}

#[test]
fn a_server_that_never_answers_times_each_call_out_and_cannot_hold_poll_or_free() {
    // A TCP peer that accepts and never reads or writes: the frozen server of the issue.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let client = connect_async(1, &addr, None);
    let (_peer, _) = listener.accept().unwrap();
    client.next(GROUP_CLIENT_EVENT_CONNECTED);
    let started = Instant::now();
    let hello = client.hello("frozen", 200);
    let second = client.hello("frozen", 200);
    // poll(0) never waits, whatever is in flight.
    let poll_started = Instant::now();
    assert_eq!(
        client.poll(0).unwrap_err(),
        group_result::GROUP_RESULT_NOT_FOUND
    );
    let poll_took = poll_started.elapsed();
    let first = client.next(GROUP_CLIENT_EVENT_COMPLETED);
    assert_eq!(first.op, hello);
    assert_eq!(first.result, group_result::GROUP_RESULT_TIMED_OUT as u32);
    let after = client.next(GROUP_CLIENT_EVENT_COMPLETED);
    assert_eq!(after.op, second);
    assert_eq!(after.result, group_result::GROUP_RESULT_TIMED_OUT as u32);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "each call waited its own 200 ms"
    );
    println!("poll(0) with two calls in flight took {poll_took:?}");
    // Freeing a client whose server never answers returns (Fin is not answered either).
    let freeing = Instant::now();
    drop(client);
    println!("free against a frozen server took {:?}", freeing.elapsed());
}

#[test]
fn connection_state_events_say_why() {
    // Nothing listens on a port just released: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let client = connect_async(1, &addr, None);
    let down = client.next(GROUP_CLIENT_EVENT_DISCONNECTED);
    assert_eq!(
        down.reason,
        group_disconnect_reason::GROUP_DISCONNECT_CONNECT_FAILED as u32
    );
    assert!(!down.message.is_empty(), "the reason in words");
    // Submissions after it complete at once, and the poll says the connection is gone.
    let mut op = 0;
    // SAFETY: a live client.
    let r = unsafe { group_client_submit_create(client.0, 1, 1, 60, 0, 0, &mut op) };
    if r == group_result::GROUP_RESULT_OK {
        let failed = client.next(GROUP_CLIENT_EVENT_COMPLETED);
        assert_eq!(
            failed.result,
            group_result::GROUP_RESULT_DISCONNECTED as u32
        );
    } else {
        assert_eq!(r, group_result::GROUP_RESULT_DISCONNECTED);
    }
    assert_eq!(
        client.poll(0).unwrap_err(),
        group_result::GROUP_RESULT_DISCONNECTED
    );

    // A UDP server that never answers the handshake: the connect times out after its own limit.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let options = group_client_options {
        connect_timeout_ms: 300,
        request_timeout_ms: 0,
        keep_alive_ms: 0,
    };
    let client = connect_async(2, &addr, Some(options));
    let down = client.next(GROUP_CLIENT_EVENT_DISCONNECTED);
    assert_eq!(
        down.reason,
        group_disconnect_reason::GROUP_DISCONNECT_CONNECT_TIMED_OUT as u32
    );

    // The server goes away under a connected client: SERVER_CLOSED, and the call in flight completes.
    let server = Server::start();
    let client = connect_async(1, &server.addr(1), None);
    client.hello("carol", 0);
    client.next(GROUP_CLIENT_EVENT_CONNECTED);
    assert_eq!(client.next(GROUP_CLIENT_EVENT_COMPLETED).result, OK);
    drop(server);
    let down = client.next(GROUP_CLIENT_EVENT_DISCONNECTED);
    assert!(
        [
            group_disconnect_reason::GROUP_DISCONNECT_SERVER_CLOSED as u32,
            group_disconnect_reason::GROUP_DISCONNECT_NETWORK as u32
        ]
        .contains(&down.reason),
        "closed or reset: {down:?}"
    );
}

#[test]
fn blocking_calls_report_a_refusal_with_its_code_and_text() {
    let server = Server::start();
    let addr = server.addr(1);
    let mut client: *mut group_client = std::ptr::null_mut();
    let mut sid = [0u8; 16];
    let mut group = [0u8; 52];
    let mut refusal = 0u16;
    // SAFETY: real pointers; the client is freed at the end.
    unsafe {
        assert_eq!(
            group_client_connect(1, addr.as_ptr(), addr.len(), &mut client),
            group_result::GROUP_RESULT_OK
        );
        let uid = "dave";
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
        let r = group_client_create(client, 1, 1, 60, 0, group.as_mut_ptr(), &mut refusal);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        // Already a member: refused with the code and the text.
        let r = group_client_join(client, group.as_ptr(), std::ptr::null(), 0, &mut refusal);
        assert_eq!(r, group_result::GROUP_RESULT_REFUSED);
        assert_eq!(refusal, 201);
        let mut text = [0u8; 256];
        let mut written = 0;
        let r = group_client_refusal_message(client, text.as_mut_ptr(), text.len(), &mut written);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        assert!(written > 0);
        assert_eq!(group_client_free(client), group_result::GROUP_RESULT_OK);
    }
}

#[test]
fn the_late_answer_to_a_timed_out_call_does_not_complete_the_next_one() {
    use group_core::proto::{Status, VER_CONTROL, cmd, decode_client_frame, encode_server_frame};
    use std::io::{Read, Write};
    // A peer that answers both Hellos only after the first one timed out: first with sid 1s, then 2s.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = bytes::BytesMut::new();
        let mut hellos = 0;
        while hellos < 2 {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the client hung up");
            buf.extend_from_slice(&chunk[..n]);
            while let Some(frame) = decode_client_frame(&mut buf, 1 << 20).unwrap() {
                hellos += usize::from((frame.ver, frame.cmd) == (VER_CONTROL, cmd::HELLO));
            }
        }
        let mut out = bytes::BytesMut::new();
        encode_server_frame(VER_CONTROL, cmd::HELLO, Status::Ok, &[1; 16], &mut out);
        encode_server_frame(VER_CONTROL, cmd::HELLO, Status::Ok, &[2; 16], &mut out);
        stream.write_all(&out).unwrap();
        stream
    });
    let client = connect_async(1, &addr, None);
    client.next(GROUP_CLIENT_EVENT_CONNECTED);
    let first = client.hello("late", 200);
    let second = client.hello("late", 10_000);
    let timed_out = client.next(GROUP_CLIENT_EVENT_COMPLETED);
    assert_eq!(
        (timed_out.op, timed_out.result),
        (first, group_result::GROUP_RESULT_TIMED_OUT as u32)
    );
    let answered = client.next(GROUP_CLIENT_EVENT_COMPLETED);
    assert_eq!((answered.op, answered.result), (second, OK));
    assert_eq!(
        answered.message,
        vec![2; 16],
        "its own answer, not the late one"
    );
    let _stream = peer.join().unwrap();
}
