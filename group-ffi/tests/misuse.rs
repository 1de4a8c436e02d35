//! Misuse of handles gets a result code, never a crash or a hang: a double free, a call on a freed
//! handle, and a free from inside the library's own callback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::c_void;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use group_ffi::*;

const CONFIG: &str = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;

fn new_server() -> *mut group_server {
    let mut server: *mut group_server = std::ptr::null_mut();
    // SAFETY: real pointers.
    let r = unsafe { group_server_new(CONFIG.as_ptr(), CONFIG.len(), 1, &mut server) };
    assert_eq!(r, group_result::GROUP_RESULT_OK);
    server
}

/// Says Hello as `uid` on `client` (live or not: that is what the tests check).
fn hello(client: *mut group_client, uid: &str) -> group_result {
    let (mut sid, mut refusal) = ([0u8; 16], 0u16);
    // SAFETY: real buffers; the client pointer is what the test is about.
    unsafe {
        group_client_hello(
            client,
            uid.as_ptr(),
            uid.len(),
            std::ptr::null(),
            0,
            sid.as_mut_ptr(),
            &mut refusal,
        )
    }
}

#[test]
fn a_second_free_and_a_call_after_free_are_refused() {
    let server = new_server();
    // SAFETY: the point of the test: every call below is on a handle that is live or was freed.
    unsafe {
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        let mut port = 0u16;
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_OK
        );
        let addr = format!("127.0.0.1:{port}");
        let mut client: *mut group_client = std::ptr::null_mut();
        let r = group_client_connect(1, addr.as_ptr(), addr.len(), &mut client);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        assert_eq!(group_client_free(client), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_client_free(client),
            group_result::GROUP_RESULT_INVALID_HANDLE
        );
        let r = hello(client, "late");
        assert_eq!(r, group_result::GROUP_RESULT_INVALID_HANDLE);
        assert_eq!(group_server_free(server), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_free(server),
            group_result::GROUP_RESULT_INVALID_HANDLE
        );
        assert_eq!(
            group_server_start(server),
            group_result::GROUP_RESULT_INVALID_HANDLE
        );
        let mut port = 0u16;
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_INVALID_HANDLE
        );
        assert_eq!(
            group_server_free(std::ptr::null_mut()),
            group_result::GROUP_RESULT_OK
        );
        let never = 0x1000 as *mut group_server;
        assert_eq!(
            group_server_free(never),
            group_result::GROUP_RESULT_INVALID_HANDLE
        );
    }
}

/// What the event callback's own free of its server came to.
static FREED_FROM_CALLBACK: Mutex<Option<group_result>> = Mutex::new(None);

unsafe extern "C" fn free_own_server(userdata: *mut c_void, _: *const group_event, _: *const u8) {
    // SAFETY: userdata is the server, live while its callback runs.
    let r = unsafe { group_server_free(userdata.cast::<group_server>()) };
    FREED_FROM_CALLBACK.lock().unwrap().get_or_insert(r);
}

#[test]
fn a_free_from_inside_a_callback_is_refused_instead_of_hanging() {
    let server = new_server();
    let mut port = 0u16;
    // SAFETY: a live server; the callback gets it as userdata.
    unsafe {
        let r = group_server_set_event_callback(server, Some(free_own_server), server.cast());
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_OK
        );
        // A Hello makes an event.
        let addr = format!("127.0.0.1:{port}");
        let mut client: *mut group_client = std::ptr::null_mut();
        let r = group_client_connect(1, addr.as_ptr(), addr.len(), &mut client);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let r = hello(client, "zoe");
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let deadline = Instant::now() + Duration::from_secs(10);
        while FREED_FROM_CALLBACK.lock().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            *FREED_FROM_CALLBACK.lock().unwrap(),
            Some(group_result::GROUP_RESULT_WRONG_THREAD)
        );
        assert_eq!(group_client_free(client), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_free(server),
            group_result::GROUP_RESULT_OK,
            "still live"
        );
    }
}

/// What a free of the server from inside each kind of callback came to, by kind.
static FREED_BY_KIND: Mutex<Vec<(&str, group_result)>> = Mutex::new(Vec::new());

fn record(kind: &'static str, server: *mut c_void) {
    // SAFETY: userdata is the server, live while its callbacks run.
    let r = unsafe { group_server_free(server.cast::<group_server>()) };
    let mut freed = FREED_BY_KIND.lock().unwrap();
    if !freed.iter().any(|(k, _)| *k == kind) {
        freed.push((kind, r));
    }
}

unsafe extern "C" fn hook_frees(userdata: *mut c_void, _: *const group_hook_call, token: u64) {
    record("hook", userdata);
    // SAFETY: the live server; lets the create go on.
    unsafe { group_next(userdata.cast(), token, 0, std::ptr::null(), 0) };
}

unsafe extern "C" fn command_frees(userdata: *mut c_void, _: *const group_hook_call, token: u64) {
    record("command", userdata);
    // SAFETY: the live server; answers the command.
    unsafe { group_reply(userdata.cast(), token, std::ptr::null(), 0) };
}

unsafe extern "C" fn tick_frees(userdata: *mut c_void, _: *const u8) {
    record("tick", userdata);
}

unsafe extern "C" fn message_frees(
    userdata: *mut c_void,
    _: *const u8,
    _: *const u8,
    _: usize,
    _: *const u8,
    _: *mut u8,
    _: usize,
) -> usize {
    record("discard message", userdata);
    0
}

#[test]
fn a_free_from_a_hook_a_command_a_tick_or_a_message_callback_is_refused() {
    let server = new_server();
    let mut port = 0u16;
    let mut group = [0u8; 52];
    let mut refusal = 0u16;
    // SAFETY: a live server, freed at the end; the callbacks get it as userdata.
    unsafe {
        let s = server.cast::<c_void>();
        let r = group_server_add_hook(server, 1, 1, Some(hook_frees), s);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let r = group_server_add_command(server, 2, 1, Some(command_frees), s);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let r = group_server_set_message(server, 1, Some(message_frees), s);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_OK
        );
        let addr = format!("127.0.0.1:{port}");
        let mut members = Vec::new();
        for uid in ["ann", "ben"] {
            let mut client: *mut group_client = std::ptr::null_mut();
            let r = group_client_connect(1, addr.as_ptr(), addr.len(), &mut client);
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            assert_eq!(hello(client, uid), group_result::GROUP_RESULT_OK);
            members.push(client);
        }
        let (ann, ben) = (members[0], members[1]);
        let r = group_client_create(ann, 0, 1, 60, 0, group.as_mut_ptr(), &mut refusal);
        assert_eq!(r, group_result::GROUP_RESULT_OK, "the hook let it go on");
        let r = group_client_join(ben, group.as_ptr(), std::ptr::null(), 0, &mut refusal);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let (mut reply, mut reply_len) = ([0u8; 16], 0usize);
        let r = group_client_request(
            ann,
            2,
            1,
            std::ptr::null(),
            0,
            reply.as_mut_ptr(),
            reply.len(),
            &mut reply_len,
            &mut refusal,
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK, "the command answered");
        let r = group_server_set_tick(server, group.as_ptr(), 1000, Some(tick_frees), s);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        // Ben goes: ann's group gets the discard message.
        assert_eq!(group_client_free(ben), group_result::GROUP_RESULT_OK);
        let deadline = Instant::now() + Duration::from_secs(20);
        while FREED_BY_KIND.lock().unwrap().len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut freed = FREED_BY_KIND.lock().unwrap().clone();
        freed.sort_by_key(|(kind, _)| *kind);
        let wrong_thread = group_result::GROUP_RESULT_WRONG_THREAD;
        assert_eq!(
            freed,
            vec![
                ("command", wrong_thread),
                ("discard message", wrong_thread),
                ("hook", wrong_thread),
                ("tick", wrong_thread),
            ]
        );
        let r = group_server_set_tick(server, group.as_ptr(), 0, None, std::ptr::null_mut());
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        assert_eq!(group_client_free(ann), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_free(server),
            group_result::GROUP_RESULT_OK,
            "still live"
        );
    }
}
