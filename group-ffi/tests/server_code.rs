//! Server code over C beyond hooks: custom commands answered by token, discard messages, a user's groups,
//! member nodes, snapshots, and ticks that announce from the tick thread.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ffi::c_void;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use group_core::GroupId;
use group_core::proto::{CreateRequest, Request};
use group_ffi::*;
use group_net::client::{Client, Push};

/// A drain waits for clients for up to ten minutes: one that ends in seconds saw the last client go.
const CONFIG: &str = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null, "drainTimeout": 600000},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;

/// The server, freed when dropped (also when an assertion fails).
struct Hosted(*mut group_server);

impl Drop for Hosted {
    fn drop(&mut self) {
        // SAFETY: created by group_server_new, freed once here.
        unsafe { group_server_free(self.0) };
    }
}

/// Custom command 2/7 echoes its payload reversed; 2/8 refuses with 1234. Answers at once, from inside
/// the callback. `userdata` is the server.
unsafe extern "C" fn custom(userdata: *mut c_void, call: *const group_hook_call, token: u64) {
    // SAFETY: the library passes a valid call for the duration of the callback; userdata is the server.
    unsafe {
        let call = &*call;
        let server = userdata as *const group_server;
        let payload = std::slice::from_raw_parts(call.payload, call.payload_len);
        assert_eq!(call.command, group_command::GROUP_COMMAND_CUSTOM as u32);
        if call.cmd == 7 {
            // Larger than limits.maxPayload (65536 by default): refused, and the token stays open.
            let huge = vec![0u8; 65_537];
            let r = group_reply(server, token, huge.as_ptr(), huge.len());
            assert_eq!(r, group_result::GROUP_RESULT_INVALID_ARGUMENT);
            let reversed: Vec<u8> = payload.iter().rev().copied().collect();
            let r = group_reply(server, token, reversed.as_ptr(), reversed.len());
            assert_eq!(r, group_result::GROUP_RESULT_OK);
        } else {
            let r = group_next(server, token, 1234, b"no".as_ptr(), 2);
            assert_eq!(r, group_result::GROUP_RESULT_OK);
        }
    }
}

/// A Before-join hook that first tries to answer with a payload (refused: hooks take group_next).
unsafe extern "C" fn join_hook(userdata: *mut c_void, _call: *const group_hook_call, token: u64) {
    let server = userdata as *const group_server;
    // SAFETY: a live server during its own callback.
    unsafe {
        let r = group_reply(server, token, b"x".as_ptr(), 1);
        assert_eq!(r, group_result::GROUP_RESULT_INVALID_ARGUMENT);
        assert_eq!(
            group_next(server, token, 0, std::ptr::null(), 0),
            group_result::GROUP_RESULT_OK
        );
    }
}

/// The discard message: "bye:" and the uid.
unsafe extern "C" fn discard(
    _userdata: *mut c_void,
    _group: *const u8,
    uid: *const u8,
    uid_len: usize,
    _sid: *const u8,
    buf: *mut u8,
    buf_len: usize,
) -> usize {
    // SAFETY: the library passes `uid_len` readable bytes and `buf_len` writable ones.
    unsafe {
        let uid = std::slice::from_raw_parts(uid, uid_len);
        let message = [b"bye:", uid].concat();
        let out = std::slice::from_raw_parts_mut(buf, buf_len);
        out[..message.len()].copy_from_slice(&message);
        message.len()
    }
}

/// Ticks seen, and whether the announce made from the tick thread went through.
static TICKS: Mutex<Vec<group_result>> = Mutex::new(Vec::new());

/// Announces "tick" to the group from the tick thread (the blocking API is allowed there).
unsafe extern "C" fn tick(userdata: *mut c_void, group: *const u8) {
    let server = userdata as *const group_server;
    let mut refusal = 0u16;
    // SAFETY: a live server; `group` is 52 bytes during the call.
    let r = unsafe {
        group_server_announce(server, group, 1, 113, b"tick".as_ptr(), 4, 1, &mut refusal)
    };
    TICKS.lock().unwrap().push(r);
}

fn start() -> (Hosted, SocketAddr, u16) {
    let mut server: *mut group_server = std::ptr::null_mut();
    let mut port = 0u16;
    let mut mesh = 0u16;
    // SAFETY: real pointers; the server is owned by the returned guard.
    unsafe {
        let r = group_server_new(CONFIG.as_ptr(), CONFIG.len(), 2, &mut server);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let hosted = Hosted(server);
        let data = server.cast::<c_void>();
        assert_eq!(
            group_server_add_command(server, 1, 7, Some(custom), data),
            group_result::GROUP_RESULT_INVALID_ARGUMENT,
            "ver 1 is the protocol's own"
        );
        for cmd in [7, 8] {
            let r = group_server_add_command(server, 2, cmd, Some(custom), data);
            assert_eq!(r, group_result::GROUP_RESULT_OK);
        }
        let r = group_server_add_hook(server, 2, 1, Some(join_hook), data);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let r = group_server_set_message(server, 1, Some(discard), std::ptr::null_mut());
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let r = group_server_set_message(server, 9, Some(discard), std::ptr::null_mut());
        assert_eq!(r, group_result::GROUP_RESULT_INVALID_ARGUMENT);
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        let r = group_server_set_message(server, 2, Some(discard), std::ptr::null_mut());
        assert_eq!(r, group_result::GROUP_RESULT_ALREADY_STARTED);
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_OK
        );
        assert_eq!(
            group_server_port(server, 4, &mut mesh),
            group_result::GROUP_RESULT_OK
        );
        (hosted, ([127, 0, 0, 1], port).into(), mesh)
    }
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn connect(rt: &tokio::runtime::Runtime, addr: SocketAddr, uid: &str) -> Client {
    rt.block_on(async {
        let mut c = Client::connect_tcp(addr).await.unwrap();
        c.hello(uid, "").await.unwrap();
        c
    })
}

fn bounded<T>(rt: &tokio::runtime::Runtime, f: impl std::future::Future<Output = T>) -> T {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("timed out")
    })
}

fn create(rt: &tokio::runtime::Runtime, client: &mut Client) -> GroupId {
    let params = CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
    bounded(rt, client.create(params)).unwrap()
}

#[test]
fn custom_commands_are_answered_by_token() {
    let (_server, addr, _) = start();
    let rt = client_runtime();
    let mut alice = connect(&rt, addr, "alice");
    let echo = Request::Custom {
        ver: 2,
        cmd: 7,
        payload: Bytes::from_static(b"abc"),
    };
    assert_eq!(&bounded(&rt, alice.request(&echo)).unwrap()[..], b"cba");
    let refused = Request::Custom {
        ver: 2,
        cmd: 8,
        payload: Bytes::new(),
    };
    let e = bounded(&rt, alice.request(&refused)).unwrap_err();
    assert_eq!(e.code(), Some(1234), "{e}");
    // The same through the C client API: a reply too large for the buffer is kept for last_reply.
    let text = addr.to_string();
    let mut c: *mut group_client = std::ptr::null_mut();
    let (mut sid, mut refusal, mut len) = ([0u8; 16], 0u16, 0usize);
    let mut reply = [0u8; 8];
    // SAFETY: real pointers and lengths; the client is freed once at the end.
    unsafe {
        assert_eq!(
            group_client_connect(1, text.as_ptr(), text.len(), &mut c),
            group_result::GROUP_RESULT_OK
        );
        let r = group_client_hello(
            c,
            b"carol".as_ptr(),
            5,
            std::ptr::null(),
            0,
            sid.as_mut_ptr(),
            &mut refusal,
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let r = group_client_request(
            c,
            2,
            7,
            b"abc".as_ptr(),
            3,
            reply.as_mut_ptr(),
            2,
            &mut len,
            &mut refusal,
        );
        assert_eq!((r, len), (group_result::GROUP_RESULT_BUFFER_TOO_SMALL, 3));
        let r = group_client_last_reply(c, reply.as_mut_ptr(), reply.len(), &mut len);
        assert_eq!(
            (r, &reply[..len]),
            (group_result::GROUP_RESULT_OK, &b"cba"[..])
        );
        let r = group_client_request(
            c,
            2,
            7,
            b"xy".as_ptr(),
            2,
            reply.as_mut_ptr(),
            reply.len(),
            &mut len,
            &mut refusal,
        );
        assert_eq!(
            (r, &reply[..len]),
            (group_result::GROUP_RESULT_OK, &b"yx"[..])
        );
        let r = group_client_request(
            c,
            2,
            8,
            std::ptr::null(),
            0,
            reply.as_mut_ptr(),
            reply.len(),
            &mut len,
            &mut refusal,
        );
        assert_eq!((r, refusal), (group_result::GROUP_RESULT_REFUSED, 1234));
        let r = group_client_refusal_message(c, reply.as_mut_ptr(), reply.len(), &mut len);
        assert_eq!(
            (r, &reply[..len]),
            (group_result::GROUP_RESULT_OK, &b"no"[..])
        );
        let r = group_client_request(
            c,
            2,
            99,
            std::ptr::null(),
            0,
            reply.as_mut_ptr(),
            reply.len(),
            &mut len,
            &mut refusal,
        );
        assert_eq!(
            (r, refusal),
            (
                group_result::GROUP_RESULT_REFUSED,
                group_core::proto::code::NO_HANDLER
            )
        );
        let r = group_client_request(
            c,
            1,
            110,
            std::ptr::null(),
            0,
            reply.as_mut_ptr(),
            reply.len(),
            &mut len,
            &mut refusal,
        );
        assert_eq!(
            r,
            group_result::GROUP_RESULT_INVALID_ARGUMENT,
            "ver 1 has its own functions"
        );
        group_client_free(c);
    }
    // A join passes the hook, whose attempt at a reply payload was refused.
    let group = create(&rt, &mut alice);
    let mut bob = connect(&rt, addr, "bob");
    bounded(&rt, bob.join(group, b"")).unwrap();
}

#[test]
fn queries_and_discard_messages() {
    let (server, addr, mesh_port) = start();
    let server = server.0;
    let rt = client_runtime();
    let mut alice = connect(&rt, addr, "alice");
    let mut bob = connect(&rt, addr, "bob");
    let first = create(&rt, &mut alice);
    let second = create(&rt, &mut bob);
    bounded(&rt, alice.join(second, b"")).unwrap();
    bounded(&rt, bob.join(first, b"")).unwrap();
    let mut ids = [0u8; 3 * GROUP_ID_LEN];
    let mut count = 0usize;
    // SAFETY: real buffers with the capacities given; a live server.
    unsafe {
        let r = group_server_group_ids(
            server,
            b"alice".as_ptr(),
            5,
            ids.as_mut_ptr(),
            1,
            &mut count,
        );
        assert_eq!((r, count), (group_result::GROUP_RESULT_BUFFER_TOO_SMALL, 2));
        let r = group_server_group_ids(
            server,
            b"alice".as_ptr(),
            5,
            ids.as_mut_ptr(),
            3,
            &mut count,
        );
        assert_eq!((r, count), (group_result::GROUP_RESULT_OK, 2));
        assert_eq!(&ids[..GROUP_ID_LEN], first.as_bytes(), "join order");
        assert_eq!(&ids[GROUP_ID_LEN..2 * GROUP_ID_LEN], second.as_bytes());
        let r = group_server_group_ids(
            server,
            b"carol".as_ptr(),
            5,
            ids.as_mut_ptr(),
            3,
            &mut count,
        );
        assert_eq!(r, group_result::GROUP_RESULT_NOT_FOUND);

        let mut nodes = [group_node_addr {
            ip: [0; 4],
            port: 0,
        }; 4];
        let r = group_server_member_nodes(
            server,
            first.as_bytes().as_ptr(),
            nodes.as_mut_ptr(),
            4,
            &mut count,
        );
        assert_eq!((r, count), (group_result::GROUP_RESULT_OK, 1));
        assert_eq!(
            nodes[0],
            group_node_addr {
                ip: [127, 0, 0, 1],
                port: mesh_port
            }
        );

        let mut out = std::mem::MaybeUninit::<group_snapshot>::uninit();
        let mut members = [group_member {
            uid: [0; 64],
            uid_len: 0,
            sid: [0; 16],
        }; 4];
        let r = group_server_snapshot(
            server,
            first.as_bytes().as_ptr(),
            out.as_mut_ptr(),
            members.as_mut_ptr(),
            1,
            &mut count,
        );
        assert_eq!((r, count), (group_result::GROUP_RESULT_BUFFER_TOO_SMALL, 2));
        let r = group_server_snapshot(
            server,
            first.as_bytes().as_ptr(),
            out.as_mut_ptr(),
            members.as_mut_ptr(),
            4,
            &mut count,
        );
        assert_eq!((r, count), (group_result::GROUP_RESULT_OK, 2));
        let snapshot = out.assume_init_read();
        assert_eq!((snapshot.member_count, snapshot.member_node_count), (2, 1));
        assert_eq!(
            (snapshot.has_owner, snapshot.owner.port, snapshot.is_static),
            (1, mesh_port, 0)
        );
        assert_eq!(snapshot.ttl_ms, 60_000);
        let uid = |m: &group_member| m.uid[..m.uid_len].to_vec();
        assert_eq!(
            (uid(&members[0]), uid(&members[1])),
            (b"alice".to_vec(), b"bob".to_vec())
        );
        let unknown = [b'0'; GROUP_ID_LEN];
        let r = group_server_snapshot(
            server,
            unknown.as_ptr(),
            out.as_mut_ptr(),
            members.as_mut_ptr(),
            4,
            &mut count,
        );
        assert_eq!(r, group_result::GROUP_RESULT_NOT_FOUND);
    }
    // Bob goes: alice hears the discard message in each group they shared.
    drop(bob);
    let mut heard = Vec::new();
    while heard.len() < 2 {
        match bounded(&rt, alice.next_push()) {
            Some(Push::Left {
                uid,
                message,
                group,
            }) => heard.push((group, uid, message)),
            Some(_) => {}
            None => panic!("alice's connection closed"),
        }
    }
    for (_, uid, message) in &heard {
        assert_eq!((uid.as_str(), &message[..]), ("bob", &b"bye:bob"[..]));
    }
}

#[test]
fn ticks_call_back_and_may_use_the_blocking_api() {
    let (server, addr, _) = start();
    let server = server.0;
    let rt = client_runtime();
    let mut alice = connect(&rt, addr, "alice");
    let group = create(&rt, &mut alice);
    // SAFETY: a live server; the callback's userdata is the server, alive until the end of the test.
    unsafe {
        let r = group_server_set_tick(
            server,
            group.as_bytes().as_ptr(),
            999,
            None,
            std::ptr::null_mut(),
        );
        assert_eq!(
            r,
            group_result::GROUP_RESULT_INVALID_ARGUMENT,
            "ticks are at least a second apart"
        );
        let r = group_server_set_tick(
            server,
            group.as_bytes().as_ptr(),
            1000,
            Some(tick),
            server.cast(),
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
    }
    // The tick's announce reaches alice: the blocking API worked from the tick thread.
    loop {
        match bounded(&rt, alice.next_push()) {
            Some(Push::Broadcast { entries, .. }) if entries[0].message[..] == b"tick"[..] => break,
            Some(_) => {}
            None => panic!("alice's connection closed"),
        }
    }
    assert!(
        TICKS
            .lock()
            .unwrap()
            .iter()
            .all(|r| *r == group_result::GROUP_RESULT_OK)
    );
    // Ticks are events too.
    let mut event = std::mem::MaybeUninit::<group_event>::uninit();
    let mut uid = [0u8; 64];
    let mut needed = 0usize;
    let mut saw_tick = false;
    // SAFETY: real buffers; a live server.
    while unsafe {
        group_server_poll_event(
            server,
            event.as_mut_ptr(),
            uid.as_mut_ptr(),
            64,
            &mut needed,
        )
    } == group_result::GROUP_RESULT_OK
    {
        // SAFETY: written on OK.
        let event = unsafe { event.assume_init() };
        saw_tick |= event.kind == group_event_kind::GROUP_EVENT_TICK as u32
            && event.group == *group.as_bytes();
    }
    assert!(saw_tick);
    // SAFETY: a live server; interval 0 stops the tick.
    unsafe {
        let r = group_server_set_tick(
            server,
            group.as_bytes().as_ptr(),
            0,
            None,
            std::ptr::null_mut(),
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let unknown = [b'0'; GROUP_ID_LEN];
        let r = group_server_set_tick(server, unknown.as_ptr(), 1000, None, std::ptr::null_mut());
        assert_eq!(r, group_result::GROUP_RESULT_NOT_FOUND);
    }
}

#[test]
fn broadcasts_queued_without_waiting_arrive_and_their_refusals_become_events() {
    let (server, addr, _) = start();
    let server = server.0;
    let rt = client_runtime();
    let mut alice = connect(&rt, addr, "alice");
    let mut bob = connect(&rt, addr, "bob");
    let group = create(&rt, &mut alice);
    bounded(&rt, bob.join(group, b"")).unwrap();
    let nowait = |uid: &[u8]| {
        // SAFETY: a live server; real pointers and lengths.
        unsafe {
            group_server_broadcast_nowait(
                server,
                group.as_bytes().as_ptr(),
                uid.as_ptr(),
                uid.len(),
                1,
                113,
                b"quick".as_ptr(),
                5,
                1,
            )
        }
    };
    // Not blocking, so allowed even where blocking calls are refused (inside a runtime, as in a callback).
    rt.block_on(async { assert_eq!(nowait(b"alice"), group_result::GROUP_RESULT_OK) });
    loop {
        match bounded(&rt, bob.next_push()) {
            Some(Push::Broadcast { entries, .. }) => {
                assert_eq!(
                    (entries[0].uid.as_str(), &entries[0].message[..]),
                    ("alice", &b"quick"[..])
                );
                break;
            }
            Some(_) => {}
            None => panic!("bob's connection closed"),
        }
    }
    assert_eq!(
        nowait(b"carol"),
        group_result::GROUP_RESULT_OK,
        "queued; refused later"
    );
    let mut event = std::mem::MaybeUninit::<group_event>::uninit();
    let mut uid = [0u8; 64];
    let mut needed = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(std::time::Instant::now() < deadline, "no refusal event");
        // SAFETY: real buffers; a live server.
        let r = unsafe {
            group_server_poll_event(
                server,
                event.as_mut_ptr(),
                uid.as_mut_ptr(),
                64,
                &mut needed,
            )
        };
        if r != group_result::GROUP_RESULT_OK {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        // SAFETY: written on OK.
        let event = unsafe { event.assume_init_read() };
        if event.kind == group_event_kind::GROUP_EVENT_BROADCAST_REFUSED as u32 {
            assert_eq!((&uid[..event.uid_len], event.reason), (&b"carol"[..], 6));
            assert_eq!(event.group, *group.as_bytes());
            break;
        }
    }
}

#[test]
fn a_drain_pushes_offline_and_ends_once_the_last_client_has_gone() {
    let (server, addr, _) = start();
    let raw = server.0 as usize;
    let rt = client_runtime();
    let mut alice = connect(&rt, addr, "alice");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let drainer = std::thread::spawn(move || {
        // SAFETY: the server outlives this thread: the test joins it before the guard frees the server.
        let r = unsafe { group_server_drain(raw as *const group_server, 1000) };
        let _ = done_tx.send(r);
    });
    assert_eq!(bounded(&rt, alice.next_push()), Some(Push::Offline));
    assert!(
        done_rx.try_recv().is_err(),
        "the drain waits while a client is connected"
    );
    drop(alice);
    let r = done_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(r, group_result::GROUP_RESULT_OK);
    drainer.join().unwrap();
    let mut port = 0u16;
    // SAFETY: a live (drained) server.
    let r = unsafe { group_server_port(server.0, 1, &mut port) };
    assert_eq!(r, group_result::GROUP_RESULT_NOT_STARTED);
}

#[test]
fn a_random_join_creates_a_group_then_fills_it() {
    let (_server, addr, _) = start();
    let text = addr.to_string();
    let mut group = [[0u8; GROUP_ID_LEN]; 2];
    let mut clients = Vec::new();
    for (i, uid) in ["alice", "bob"].into_iter().enumerate() {
        let mut c: *mut group_client = std::ptr::null_mut();
        let (mut sid, mut refusal) = ([0u8; 16], 0u16);
        // SAFETY: real pointers and lengths; each client is freed once below.
        unsafe {
            let r = group_client_connect(1, text.as_ptr(), text.len(), &mut c);
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let r = group_client_hello(
                c,
                uid.as_ptr(),
                uid.len(),
                std::ptr::null(),
                0,
                sid.as_mut_ptr(),
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let r = group_client_random_join(
                c,
                0,
                60,
                0,
                b"hey".as_ptr(),
                3,
                group[i].as_mut_ptr(),
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK, "refusal {refusal}");
        }
        clients.push(c);
    }
    assert_eq!(
        group[0], group[1],
        "bob landed in the group alice's random join created"
    );
    let mut push = std::mem::MaybeUninit::<group_push>::uninit();
    let (mut buf, mut needed) = ([0u8; 64], 0usize);
    // SAFETY: a live client; real buffers. Then each client is freed once.
    unsafe {
        let r = group_client_poll_push(
            clients[0],
            10_000,
            push.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut needed,
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let push = push.assume_init_read();
        assert_eq!(push.kind, group_push_kind::GROUP_PUSH_JOINED as u32);
        assert_eq!(&buf[..push.uid_len + push.message_len], b"bobhey");
        for c in clients {
            group_client_free(c);
        }
    }
}
