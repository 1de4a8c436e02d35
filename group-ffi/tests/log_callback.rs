//! The library's log lines reach the host's log callback, filtered by level, and nothing else: the
//! callback is process-wide, so this binary holds this one test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::c_void;
use std::sync::Mutex;

use group_ffi::*;

static LINES: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(_: *mut c_void, level: u32, message: *const u8, len: usize) {
    // SAFETY: the library passes `len` readable bytes valid during the call.
    let bytes = unsafe { std::slice::from_raw_parts(message, len) };
    let line = String::from_utf8_lossy(bytes).into_owned();
    LINES.lock().unwrap().push((level, line));
}

/// Starts and frees a server without `authSecret`, which warns once at start.
fn start_and_free() {
    let config = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                     "mesh": {"bind": "127.0.0.1:0"}}"#;
    let mut server: *mut group_server = std::ptr::null_mut();
    // SAFETY: real pointers; freed at the end.
    unsafe {
        let r = group_server_new(config.as_ptr(), config.len(), 1, &mut server);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        assert_eq!(group_server_free(server), group_result::GROUP_RESULT_OK);
    }
}

fn warnings() -> Vec<String> {
    let lines = LINES.lock().unwrap();
    let warned = lines.iter().filter(|(level, _)| *level == 2);
    warned.map(|(_, line)| line.clone()).collect()
}

#[test]
fn log_lines_reach_the_callback_at_the_levels_asked_for() {
    // SAFETY: a valid callback with no userdata; levels as documented.
    unsafe {
        let r = group_set_log_callback(Some(collect), 9, std::ptr::null_mut());
        assert_eq!(
            r,
            group_result::GROUP_RESULT_INVALID_ARGUMENT,
            "levels are 0 to 5"
        );
        let r = group_set_log_callback(Some(collect), 1, std::ptr::null_mut());
        assert_eq!(r, group_result::GROUP_RESULT_OK);
    }
    start_and_free();
    assert!(
        warnings().is_empty(),
        "errors only: {:?}",
        LINES.lock().unwrap()
    );
    // SAFETY: as above.
    unsafe { group_set_log_callback(Some(collect), 2, std::ptr::null_mut()) };
    start_and_free();
    let warned = warnings();
    assert!(
        warned
            .iter()
            .any(|l| l.contains("no server.authSecret configured")),
        "the start-up warning arrives: {warned:?}"
    );
    // SAFETY: clearing the callback.
    unsafe { group_set_log_callback(None, 0, std::ptr::null_mut()) };
    let before = LINES.lock().unwrap().len();
    start_and_free();
    assert_eq!(LINES.lock().unwrap().len(), before, "no callback: no lines");
}
