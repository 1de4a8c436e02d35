//! `group-ffi`: the C ABI of the group server, for hosts that embed it in their own process (Unity through
//! C#/Mono, Unreal through C++). The header `include/group.h` is generated from this crate by cbindgen and
//! committed; `docs/FFI.md` states ownership, lifetimes and threading for every function.
//!
//! Conventions (after rustls-ffi): every function has the `group_` prefix, returns a [`group_result`]
//! (or a value that cannot fail), runs behind a panic boundary that turns a panic into
//! [`group_result::GROUP_RESULT_PANIC`], checks every pointer for NULL, and writes its out-parameters only
//! on success. Opaque handles come in `_new` / `_free` pairs, and `_free(NULL)` does nothing. Byte strings
//! are pointer plus length; nothing relies on NUL termination.

#![allow(non_camel_case_types)]

mod api;
mod callbacks;
mod client;
mod events;
mod handles;
mod hook_api;
mod hooks;
mod host;
mod log;
mod panic;
mod queries;
mod result;
mod server;
mod slice;
mod threads;

pub use api::{
    GROUP_ID_LEN, group_server_announce, group_server_broadcast, group_server_broadcast_nowait,
    group_server_join, group_server_latest_group, group_server_leave, group_server_new_group,
    group_server_push_to_user, group_server_set_offline,
};
pub use callbacks::{
    GROUP_MAX_CUSTOM_MESSAGE, group_message_fn, group_message_kind, group_reply,
    group_server_add_command, group_server_set_message, group_server_set_tick, group_tick_fn,
};
pub use client::{
    group_client, group_client_broadcast, group_client_connect, group_client_connect_async,
    group_client_connect_tls, group_client_create, group_client_event, group_client_event_kind,
    group_client_free, group_client_hello, group_client_join, group_client_last_reply,
    group_client_leave, group_client_options, group_client_poll_event, group_client_poll_push,
    group_client_random_join, group_client_refusal_message, group_client_request,
    group_client_set_keep_alive, group_client_submit_create, group_client_submit_hello,
    group_client_submit_join, group_client_submit_leave, group_client_submit_random_join,
    group_client_submit_request, group_disconnect_reason, group_push, group_push_kind,
};
pub use events::{
    GROUP_MAX_QUEUED_EVENTS, group_event, group_event_fn, group_event_kind,
    group_server_poll_event, group_server_set_event_callback,
};
pub use hook_api::{group_next, group_server_add_hook};
pub use hooks::{group_command, group_hook_call, group_hook_fn, group_hook_phase};
pub use log::{group_log_fn, group_set_log_callback};
pub use queries::{
    GROUP_MAX_UID_LEN, group_member, group_node_addr, group_server_group_ids,
    group_server_member_nodes, group_server_snapshot, group_snapshot,
};
pub use result::{group_result, group_result_message};
pub use server::{
    group_config_error, group_server, group_server_drain, group_server_free, group_server_new,
    group_server_port, group_server_start, group_server_stop, group_transport,
};

use std::ffi::c_char;

/// Major version of this library (the `version` of group-ffi's Cargo.toml).
pub const GROUP_VERSION_MAJOR: u32 = 0;
/// Minor version of this library.
pub const GROUP_VERSION_MINOR: u32 = 1;
/// Patch version of this library.
pub const GROUP_VERSION_PATCH: u32 = 0;

/// The library's version as a NUL-terminated string, for example `"0.1.0"`. The pointer is static: never
/// free it. Compare with the `GROUP_VERSION_*` macros to detect a header that does not match the library.
#[unsafe(no_mangle)]
pub extern "C" fn group_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_macros_and_string_match_cargo_toml() {
        let parse = |s: &str| s.parse::<u32>().unwrap_or(u32::MAX);
        assert_eq!(GROUP_VERSION_MAJOR, parse(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(GROUP_VERSION_MINOR, parse(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(GROUP_VERSION_PATCH, parse(env!("CARGO_PKG_VERSION_PATCH")));
        // SAFETY: group_version returns a pointer to a static NUL-terminated string.
        let text = unsafe { std::ffi::CStr::from_ptr(group_version()) };
        assert_eq!(text.to_str().ok(), Some(env!("CARGO_PKG_VERSION")));
    }
}
