//! Server code over C beyond hooks: custom commands answered by token, discard messages, a user's groups,
//! member nodes, snapshots, and ticks that announce from the tick thread.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod ticks_drain_random;

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
            node: group_node_addr {
                ip: [0; 4],
                port: 0,
            },
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
        assert_eq!(members[0].node, snapshot.owner, "each member's node");
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
