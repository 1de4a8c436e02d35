//! Registering hooks written in C and answering their tokens (the mechanism is in `hooks`).

use std::ffi::c_void;
use std::sync::Arc;

use group_net::{Command, Rejection};

use crate::hooks::{Answer, HostHook, group_command, group_hook_fn};
use crate::panic::guard;
use crate::result::group_result;
use crate::server::group_server;
use crate::slice::text;

/// Registers a hook written in C: `callback` runs with `userdata` for every `command` (a `group_command`),
/// before it is carried out (`phase` `GROUP_HOOK_BEFORE`, which may refuse it) or after it succeeded
/// (`GROUP_HOOK_AFTER`). Several hooks of one command and phase run in registration order. Only before
/// `group_server_start` (`GROUP_RESULT_ALREADY_STARTED` afterwards): once clients can connect, the hooks
/// are fixed. See `group_hook_fn` for the callback's thread and lifetimes, and `group_next` for the answer.
///
/// # Safety
/// `server` as in `group_server_start`. `callback` and `userdata` must stay usable from the server's
/// threads until the server is freed. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_add_hook(
    server: *const group_server,
    command: u32,
    phase: u32,
    callback: group_hook_fn,
    userdata: *mut c_void,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: its state is behind a lock).
        let server = unsafe { crate::server::server_ref(server) }?;
        let (command, which) = match command {
            1 => (group_command::GROUP_COMMAND_CREATE, Command::Create),
            2 => (group_command::GROUP_COMMAND_JOIN, Command::Join),
            3 => (group_command::GROUP_COMMAND_LEAVE, Command::Leave),
            4 => (group_command::GROUP_COMMAND_BROADCAST, Command::Broadcast),
            _ => return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
        };
        if !matches!(phase, 1 | 2) {
            return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        let hook = HostHook::new(callback, userdata, command)
            .map(Arc::new)
            .ok_or(group_result::GROUP_RESULT_NULL_ARGUMENT)?;
        let continuations = server.continuations();
        server.configure(|builder| match phase {
            1 => builder.before(which, move |ctx| {
                let run = hook.clone().run(continuations.clone(), ctx);
                async move {
                    match run.await {
                        Answer::Reject(rejection) => Err(rejection),
                        Answer::Continue | Answer::Reply(_) => Ok(()),
                    }
                }
            }),
            _ => builder.after(which, move |ctx| {
                let run = hook.clone().run(continuations.clone(), ctx);
                async move {
                    match run.await {
                        Answer::Reject(rejection) => Err(rejection),
                        Answer::Continue | Answer::Reply(_) => Ok(()),
                    }
                }
            }),
        })
    })
}

/// Answers a hook's `token`: `code` 0 lets the command go on; a code from 1000 to 65535 refuses it, and the
/// client gets a Bad response carrying `code` and `message` (UTF-8). For an After hook a code from 1000
/// stops the remaining After hooks of that command (Diarkis's `next(err)`); the command already happened and
/// its client has its answer. Any other code is `GROUP_RESULT_INVALID_ARGUMENT`. Any thread, at
/// once (even inside the callback) or later. A token answered already, given up after
/// `server.hookTimeout`, or never issued gives `GROUP_RESULT_NOT_FOUND`.
///
/// # Safety
/// `server` as in `group_server_start`; `message` must point to `message_len` readable bytes (NULL allowed
/// when the length is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_next(
    server: *const group_server,
    token: u64,
    code: u32,
    message: *const u8,
    message_len: usize,
) -> group_result {
    guard(|| {
        // SAFETY: per the contract, a live server (shared: continuations are internally locked).
        let server = unsafe { crate::server::server_ref(server) }?;
        // SAFETY: forwarded from this function's contract.
        let message = unsafe { text(message, message_len) }?;
        let answer = match code {
            0 => Answer::Continue,
            1000..=65535 => {
                let code =
                    u16::try_from(code).map_err(|_| group_result::GROUP_RESULT_INVALID_ARGUMENT)?;
                Answer::Reject(Rejection::new(code, message))
            }
            _ => return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT),
        };
        server.answer(token, answer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::group_hook_call;
    use crate::server::{
        group_server_free, group_server_new, group_server_port, group_server_start,
    };
    use group_core::proto::CreateRequest;
    use group_net::client::Client;
    use std::sync::Mutex;
    use std::time::Duration;

    /// What the test's C-style hook shares with the test: the server and the tokens it left unanswered.
    struct Host {
        server: std::sync::atomic::AtomicPtr<group_server>,
        deferred: Mutex<Vec<u64>>,
    }

    /// Refuses mallory at once (from inside the callback), defers "later", forgets "never", passes others.
    unsafe extern "C" fn before_join(
        userdata: *mut c_void,
        call: *const group_hook_call,
        token: u64,
    ) {
        // SAFETY: the test passes a `Host` as userdata and the library a valid call for the callback.
        let (host, call) = unsafe { (&*(userdata as *const Host), &*call) };
        // SAFETY: uid points to uid_len bytes for the duration of the callback.
        let uid = unsafe { std::slice::from_raw_parts(call.uid, call.uid_len) };
        assert_eq!((call.ver, call.cmd, call.group_len), (1, 111, 52));
        let server = host.server.load(std::sync::atomic::Ordering::SeqCst);
        match uid {
            b"mallory" => {
                let message = b"no mallory";
                // SAFETY: a live server and a real message buffer.
                let r = unsafe { group_next(server, token, 1001, message.as_ptr(), message.len()) };
                assert_eq!(r, group_result::GROUP_RESULT_OK);
            }
            b"later" | b"never" => host.deferred.lock().unwrap().push(token),
            _ => {
                // SAFETY: a live server; an empty message.
                let r = unsafe { group_next(server, token, 0, std::ptr::null(), 0) };
                assert_eq!(r, group_result::GROUP_RESULT_OK);
            }
        }
    }

    #[test]
    fn c_hooks_refuse_defer_and_time_out_through_tokens() {
        let config = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null, "hookTimeout": 1},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;
        let host = Box::new(Host {
            server: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            deferred: Mutex::new(Vec::new()),
        });
        let mut server: *mut group_server = std::ptr::null_mut();
        // SAFETY: real pointers throughout; the server is freed at the end, the host outlives it.
        unsafe {
            assert_eq!(
                group_server_new(config.as_ptr(), config.len(), 1, &mut server),
                group_result::GROUP_RESULT_OK
            );
            host.server
                .store(server, std::sync::atomic::Ordering::SeqCst);
            let userdata = &*host as *const Host as *mut c_void;
            assert_eq!(
                group_server_add_hook(server, 2, 1, Some(before_join), userdata),
                group_result::GROUP_RESULT_OK
            );
            assert_eq!(
                group_server_add_hook(server, 9, 1, Some(before_join), userdata),
                group_result::GROUP_RESULT_INVALID_ARGUMENT
            );
            assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
            assert_eq!(
                group_server_add_hook(server, 2, 1, Some(before_join), userdata),
                group_result::GROUP_RESULT_ALREADY_STARTED,
                "hooks are fixed once clients can connect"
            );
        }
        let mut port = 0u16;
        // SAFETY: a live server and a real out-parameter.
        unsafe { group_server_port(server, 1, &mut port) };
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let client_side = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server_addr = server as usize;
        let host_addr = &*host as *const Host as usize;
        client_side.block_on(async {
            let user = |uid: &'static str| async move {
                let mut c = Client::connect_tcp(addr).await.unwrap();
                c.hello(uid, "").await.unwrap();
                c
            };
            let mut alice = user("alice").await;
            let params = CreateRequest {
                allow_empty: true,
                join: true,
                ttl_s: 60,
                interval_ms: 0,
            };
            let group = alice.create(params).await.unwrap();
            let mut bob = user("bob").await;
            bob.join(group, b"").await.unwrap();
            let mut mallory = user("mallory").await;
            let refused = mallory.join(group, b"").await.unwrap_err();
            assert_eq!(refused.code(), Some(1001));
            assert!(refused.to_string().contains("no mallory"), "{refused}");

            // Answered later, from another thread.
            let mut later = user("later").await;
            let answer = std::thread::spawn(move || {
                loop {
                    // SAFETY: the host outlives this thread (joined below).
                    let host = unsafe { &*(host_addr as *const Host) };
                    let token = host.deferred.lock().unwrap().pop();
                    if let Some(token) = token {
                        // SAFETY: the server outlives this thread (joined below).
                        let r = unsafe {
                            group_next(
                                server_addr as *const group_server,
                                token,
                                0,
                                std::ptr::null(),
                                0,
                            )
                        };
                        assert_eq!(r, group_result::GROUP_RESULT_OK);
                        // SAFETY: as above. A second answer is an error code, not a crash.
                        let again = unsafe {
                            group_next(
                                server_addr as *const group_server,
                                token,
                                0,
                                std::ptr::null(),
                                0,
                            )
                        };
                        assert_eq!(again, group_result::GROUP_RESULT_NOT_FOUND);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            later.join(group, b"").await.unwrap();
            answer.join().unwrap();

            // Never answered: the request fails after hookTimeout and the token is forgotten.
            let mut never = user("never").await;
            let failed = never.join(group, b"").await.unwrap_err();
            assert_eq!(failed.code(), Some(group_core::proto::code::HOOK_FAILED));
        });
        let token = host.deferred.lock().unwrap().pop().unwrap();
        // SAFETY: a live server; the token timed out.
        let late = unsafe { group_next(server, token, 0, std::ptr::null(), 0) };
        assert_eq!(late, group_result::GROUP_RESULT_NOT_FOUND);
        // SAFETY: freed once; the host outlives it.
        unsafe { group_server_free(server) };
        drop(host);
    }
}
