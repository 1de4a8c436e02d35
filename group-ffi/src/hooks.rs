//! Hooks written in C: Before and After create, join, leave and broadcast, answered through continuation
//! tokens, as Diarkis's `next(err)`.
//!
//! The server calls the host's callback with what the request is and a token; the host answers with
//! `group_next(server, token, code, message)`, on any thread, at once or later. Until it does, the request
//! waits (other connections do not). A token never answered is given up after `server.hookTimeout`: the
//! client gets Err 10 (HOOK_FAILED), the token is forgotten, and a late answer gets `GROUP_RESULT_NOT_FOUND`
//! like a second answer does.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use group_net::{HookContext, Rejection};

use crate::host::Host;
use tokio::sync::oneshot;

/// A hook callback. `call` and everything it points to live only during the callback; `token` lives until
/// it is answered with `group_next` (or times out). Called on one of the server's own threads; it must
/// return promptly (answer later from another thread if the decision takes time) and must not unwind
/// (no C++ exception may leave it).
pub type group_hook_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, call: *const group_hook_call, token: u64)>;

/// What a hooked request is. Byte strings are pointer + length and are not NUL-terminated.
#[repr(C)]
pub struct group_hook_call {
    /// The command: a `group_command` value.
    pub command: u32,
    /// Request version byte (1 for group commands).
    pub ver: u8,
    /// Request command number (110 create, 111 join, 112 leave, 113 broadcast, 114 random join).
    pub cmd: u16,
    /// The user's uid (UTF-8).
    pub uid: *const u8,
    /// Length of `uid`.
    pub uid_len: usize,
    /// The user's 16-byte session ID.
    pub sid: *const u8,
    /// The group the request names (52 bytes), or NULL with length 0 for create. For After hooks of
    /// create and random join: the group created or joined.
    pub group: *const u8,
    /// Length of `group`: 52 or 0.
    pub group_len: usize,
    /// The request's payload as the client sent it (see docs/PROTOCOL.md).
    pub payload: *const u8,
    /// Length of `payload`.
    pub payload_len: usize,
}

/// The commands that have hooks.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_command {
    /// Create (and the create half of random join).
    GROUP_COMMAND_CREATE = 1,
    /// Join (and random join).
    GROUP_COMMAND_JOIN = 2,
    /// Leave.
    GROUP_COMMAND_LEAVE = 3,
    /// Broadcast.
    GROUP_COMMAND_BROADCAST = 4,
    /// A command of the server's own (ver >= 2), registered with `group_server_add_command`.
    GROUP_COMMAND_CUSTOM = 5,
}

/// When a hook runs.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_hook_phase {
    /// Before the command: the hook can refuse it.
    GROUP_HOOK_BEFORE = 1,
    /// After the command succeeded.
    GROUP_HOOK_AFTER = 2,
}

/// How a host answered a token.
pub(crate) enum Answer {
    /// Go on (a hook), or an Ok response with no payload (a custom command).
    Continue,
    /// An Ok response with this payload: custom commands only.
    Reply(bytes::Bytes),
    /// Refuse with this code and message.
    Reject(Rejection),
}

/// A token waiting for the host's answer.
struct Waiting {
    answer: oneshot::Sender<Answer>,
    /// Custom commands take a reply payload; hooks do not.
    takes_reply: bool,
}

/// Why an answer was not delivered.
pub(crate) enum Unanswerable {
    /// Answered already, given up after the timeout, or never issued.
    UnknownToken,
    /// A reply payload for a hook's token.
    NotACommand,
}

/// Tokens waiting for the host's answer.
#[derive(Default)]
pub(crate) struct Continuations {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
}

impl Continuations {
    fn register(self: &Arc<Self>, takes_reply: bool) -> (TokenGuard, oneshot::Receiver<Answer>) {
        let token = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting {
            answer: tx,
            takes_reply,
        };
        self.lock().insert(token, waiting);
        let guard = TokenGuard {
            continuations: self.clone(),
            token,
        };
        (guard, rx)
    }

    /// Delivers an answer to the request waiting on `token`.
    pub fn answer(&self, token: u64, answer: Answer) -> Result<(), Unanswerable> {
        let mut waiting = self.lock();
        let takes_reply = waiting
            .get(&token)
            .ok_or(Unanswerable::UnknownToken)?
            .takes_reply;
        if matches!(answer, Answer::Reply(_)) && !takes_reply {
            return Err(Unanswerable::NotACommand);
        }
        let waiting = waiting.remove(&token).ok_or(Unanswerable::UnknownToken)?;
        waiting
            .answer
            .send(answer)
            .map_err(|_| Unanswerable::UnknownToken)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Forgets a token when the request stops waiting for it (answered, or given up after the timeout).
struct TokenGuard {
    continuations: Arc<Continuations>,
    token: u64,
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        if self.continuations.lock().remove(&self.token).is_some() {
            let token = self.token;
            tracing::warn!(
                token,
                "a hook token was never answered with group_next; the request failed"
            );
        }
    }
}

/// The host's hook callback, and the command it was registered for.
pub(crate) struct HostHook {
    host: Host<unsafe extern "C" fn(*mut c_void, *const group_hook_call, u64)>,
    command: group_command,
}

impl HostHook {
    pub fn new(
        callback: group_hook_fn,
        userdata: *mut c_void,
        command: group_command,
    ) -> Option<HostHook> {
        let callback = callback?;
        Some(HostHook {
            host: Host { callback, userdata },
            command,
        })
    }

    /// Calls the host and waits for its answer on the token.
    pub async fn run(
        self: Arc<Self>,
        continuations: Arc<Continuations>,
        ctx: HookContext,
    ) -> Answer {
        let takes_reply = self.command == group_command::GROUP_COMMAND_CUSTOM;
        let (guard, answer) = continuations.register(takes_reply);
        {
            // The call and its pointers live only for the callback (and must not be held across the
            // await below: they point into this task's locals).
            let mut frame = bytes::BytesMut::new();
            ctx.request.encode(&mut frame);
            let payload = frame
                .get(group_core::proto::CLIENT_HEADER_LEN..)
                .unwrap_or_default();
            let group = ctx.group.map(|g| *g.as_bytes());
            let call = group_hook_call {
                command: self.command as u32,
                ver: ctx.ver,
                cmd: ctx.cmd,
                uid: ctx.uid.as_ptr(),
                uid_len: ctx.uid.len(),
                sid: ctx.sid.0.as_ptr(),
                group: group.as_ref().map_or(std::ptr::null(), |g| g.as_ptr()),
                group_len: group.as_ref().map_or(0, |g| g.len()),
                payload: payload.as_ptr(),
                payload_len: payload.len(),
            };
            // SAFETY: the callback is the host's, called as its documented signature says, with pointers
            // into `ctx`, `group` and `frame`, which outlive the call.
            unsafe { (self.host.callback)(self.host.userdata, &call, guard.token) };
        }
        let answer = answer.await;
        drop(guard);
        answer.unwrap_or_else(|_| Answer::Reject(Rejection::failed("the hook was abandoned")))
    }
}
