//! Hooks: server code that runs Before and After create, join, leave and broadcast, and handlers for the
//! server's own (ver >= 2) commands.
//!
//! Hooks live in a [`Hooks`] value that the [`crate::ServerBuilder`] owns and freezes when the server
//! starts: a running server exposes no way to add one, so "registered before the commands are exposed"
//! is a property of the types, not a rule to remember.
//!
//! Hooks run on the connection's own task, one request at a time per connection, so they may await (a
//! database, say) without holding up other connections, and a connection's responses stay in order.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use group_core::proto::Request;
use group_core::proto::code::{self, APP_MIN};
use group_core::{ConnId, GroupId, Sid, Uid};

use crate::histogram::Histogram;

/// The commands that have Before and After hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Command {
    /// Create (ver 1, cmd 110) and the create half of RandJoin.
    Create,
    /// Join (ver 1, cmd 111) and the join half of RandJoin.
    Join,
    /// Leave (ver 1, cmd 112).
    Leave,
    /// Broadcast (ver 1, cmd 113).
    Broadcast,
}

impl Command {
    const ALL: [Command; 4] = [
        Command::Create,
        Command::Join,
        Command::Leave,
        Command::Broadcast,
    ];

    /// Its name in metrics labels.
    fn name(self) -> &'static str {
        match self {
            Command::Create => "create",
            Command::Join => "join",
            Command::Leave => "leave",
            Command::Broadcast => "broadcast",
        }
    }

    /// The hooked command a request belongs to. RandJoin counts as a join.
    pub fn of(request: &Request) -> Option<Command> {
        match request {
            Request::Create(_) => Some(Command::Create),
            Request::Join { .. } | Request::RandJoin(_) => Some(Command::Join),
            Request::Leave { .. } => Some(Command::Leave),
            Request::Broadcast { .. } => Some(Command::Broadcast),
            _ => None,
        }
    }
}

/// What a hook sees.
#[derive(Debug, Clone)]
pub struct HookContext {
    /// The connection the request came on.
    pub conn: ConnId,
    /// The requesting user.
    pub uid: Uid,
    /// Its session.
    pub sid: Sid,
    /// Version byte of the request.
    pub ver: u8,
    /// Command number of the request.
    pub cmd: u16,
    /// The decoded request (its payload included).
    pub request: Request,
    /// Before hooks: the group the request names, if any. After hooks: the group created, joined, left or
    /// broadcast to.
    pub group: Option<GroupId>,
}

/// A refusal from a Before hook or a custom command handler: the client gets a Bad response with this code
/// and message. From an After hook it stops the remaining After hooks of the command (Diarkis's
/// `next(err)`); the command itself already happened and its client already has its answer.
///
/// Codes are in the application range, 1000 up ([`group_core::proto::code::APP_MIN`]), so a client can
/// always tell server code's refusals from the server's own codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused ({code}): {message}")]
pub struct Rejection {
    pub(crate) code: u16,
    pub(crate) message: String,
}

/// A refusal code below the application range (1000 up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refusal code {0} is below 1000: codes under 1000 are the server's own (docs/PROTOCOL.md)")]
pub struct InvalidRefusalCode(pub u16);

impl Rejection {
    /// A refusal with `code` (1000 up) and a message for the client. A code below 1000 is a bug in the
    /// server code: it is logged naming the code, and the request fails as if the hook had failed (Err 10,
    /// HOOK_FAILED) rather than reach the client as one of the server's own codes. Use
    /// [`Rejection::try_new`] to handle a code that is not a constant.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Rejection::try_new(code, message).unwrap_or_else(|e| {
            tracing::error!("Rejection::new: {e}");
            Rejection::failed(e.to_string())
        })
    }

    /// A refusal with `code` and a message, or an error if `code` is below 1000.
    pub fn try_new(code: u16, message: impl Into<String>) -> Result<Self, InvalidRefusalCode> {
        if code < APP_MIN {
            return Err(InvalidRefusalCode(code));
        }
        Ok(Rejection {
            code,
            message: message.into(),
        })
    }

    /// Not a refusal but a failure of the server code itself (a database down, say): the client gets Err 10
    /// (HOOK_FAILED), as when a hook panics or times out, and the message is logged, not sent.
    pub fn failed(message: impl Into<String>) -> Self {
        Rejection {
            code: code::HOOK_FAILED,
            message: message.into(),
        }
    }

    /// The code the client gets.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The message the client gets.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What this means for the request: a refusal, or (from [`Rejection::failed`]) a failure.
    pub(crate) fn into_stop(self, what: &str) -> Stop {
        if self.code >= APP_MIN {
            return Stop::Rejected(self);
        }
        tracing::error!("{what} failed: {}", self.message);
        Stop::Failed(format!("{what} failed"))
    }
}

/// What an After hook returns: `()` to let the next After hook run, or `Result<(), Rejection>`, where an
/// error stops the remaining After hooks of the command (Diarkis's `next(err)`).
pub trait AfterOutcome: Send + 'static {
    /// `Err` stops the After chain.
    fn into_result(self) -> Result<(), Rejection>;
}

impl AfterOutcome for () {
    fn into_result(self) -> Result<(), Rejection> {
        Ok(())
    }
}

impl AfterOutcome for Result<(), Rejection> {
    fn into_result(self) -> Result<(), Rejection> {
        self
    }
}

/// Why a Before chain or a handler did not let the request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A hook refused: the client gets Bad with the hook's code and message.
    Rejected(Rejection),
    /// A hook or handler panicked: the client gets Err (5) HOOK_FAILED; the server logs it.
    Failed(String),
}

/// Runs server code, turning a panic, or running past `limit`, into [`Stop::Failed`] instead of killing
/// or stalling the connection's task.
pub(crate) async fn guarded<T>(
    what: &str,
    limit: Duration,
    future: HookFuture<T>,
) -> Result<T, Stop> {
    let caught = std::panic::AssertUnwindSafe(future).catch_unwind();
    match tokio::time::timeout(limit, caught).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            tracing::error!("{what} panicked: {reason}");
            Err(Stop::Failed(format!("{what} failed")))
        }
        Err(_) => {
            tracing::error!("{what} did not finish within {limit:?} (server.hookTimeout)");
            Err(Stop::Failed(format!("{what} timed out")))
        }
    }
}

/// A boxed future, as hooks return them.
pub type HookFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type BeforeFn = Arc<dyn Fn(HookContext) -> HookFuture<Result<(), Rejection>> + Send + Sync>;
type AfterFn = Arc<dyn Fn(HookContext) -> HookFuture<Result<(), Rejection>> + Send + Sync>;
type CustomFn = Arc<dyn Fn(HookContext) -> HookFuture<Result<Bytes, Rejection>> + Send + Sync>;

/// How long server code took, for the metrics listener: each Before or After chain (every hook of one
/// command, in order) and each custom command handler.
#[derive(Debug, Default)]
pub(crate) struct HookTimings {
    before: [Histogram; 4],
    after: [Histogram; 4],
    custom: Histogram,
}

impl HookTimings {
    fn chain(&self, after: bool, command: Command) -> &Histogram {
        let index = command as usize;
        let slots = if after { &self.after } else { &self.before };
        slots.get(index).unwrap_or(&self.custom)
    }

    /// A custom command handler ran for `took`.
    pub fn custom_ran(&self, took: Duration) {
        self.custom.observe(took);
    }

    /// Every histogram with its `hook` label value (`before_join`, `after_create`, `custom`, ...).
    pub fn each(&self) -> impl Iterator<Item = (String, &Histogram)> {
        let chains = [false, true].into_iter().flat_map(move |after| {
            Command::ALL.into_iter().map(move |command| {
                let phase = if after { "after" } else { "before" };
                (
                    format!("{phase}_{}", command.name()),
                    self.chain(after, command),
                )
            })
        });
        chains.chain(std::iter::once(("custom".to_string(), &self.custom)))
    }
}

/// The registered hooks and handlers. Built by [`crate::ServerBuilder`]; read-only once the server runs.
#[derive(Clone)]
pub struct Hooks {
    /// How long one hook or handler may run (`server.hookTimeout`).
    pub(crate) timeout: Duration,
    /// How long they took.
    pub(crate) timings: Arc<HookTimings>,
    before: BTreeMap<Command, Vec<BeforeFn>>,
    after: BTreeMap<Command, Vec<AfterFn>>,
    custom: BTreeMap<(u8, u16), CustomFn>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            timeout: Duration::from_secs(10),
            timings: Arc::default(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
            custom: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn counts<T>(m: &BTreeMap<Command, Vec<T>>) -> Vec<(Command, usize)> {
            m.iter().map(|(k, v)| (*k, v.len())).collect()
        }
        f.debug_struct("Hooks")
            .field("before", &counts(&self.before))
            .field("after", &counts(&self.after))
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Hooks {
    pub(crate) fn add_before<F, Fut>(&mut self, command: Command, hook: F)
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Rejection>> + Send + 'static,
    {
        let hook: BeforeFn = Arc::new(move |ctx| Box::pin(hook(ctx)));
        self.before.entry(command).or_default().push(hook);
    }

    pub(crate) fn add_after<F, Fut>(&mut self, command: Command, hook: F)
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: AfterOutcome,
    {
        let hook: AfterFn = Arc::new(move |ctx| {
            let run = hook(ctx);
            Box::pin(async move { run.await.into_result() })
        });
        self.after.entry(command).or_default().push(hook);
    }

    /// Returns false if (ver, cmd) already had a handler (the new one replaces it).
    pub(crate) fn add_custom<F, Fut>(&mut self, ver: u8, cmd: u16, handler: F) -> bool
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Rejection>> + Send + 'static,
    {
        let handler: CustomFn = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.custom.insert((ver, cmd), handler).is_none()
    }

    pub(crate) fn has_before(&self, command: Command) -> bool {
        self.before.get(&command).is_some_and(|v| !v.is_empty())
    }

    pub(crate) fn has_after(&self, command: Command) -> bool {
        self.after.get(&command).is_some_and(|v| !v.is_empty())
    }

    /// Runs the Before chain in registration order; the first rejection stops it.
    pub(crate) async fn run_before(&self, command: Command, ctx: &HookContext) -> Result<(), Stop> {
        let started = tokio::time::Instant::now();
        let mut result = Ok(());
        for hook in self.before.get(&command).into_iter().flatten() {
            result = match guarded("a Before hook", self.timeout, hook(ctx.clone())).await {
                Ok(Ok(())) => continue,
                Ok(Err(rejection)) => Err(rejection.into_stop("a Before hook")),
                Err(stop) => Err(stop),
            };
            break;
        }
        self.timings
            .chain(false, command)
            .observe(started.elapsed());
        result
    }

    /// Runs the After chain in registration order. A hook that answers an error stops the rest of the
    /// chain; a panicking or late one is logged and the chain goes on (the command already succeeded, and
    /// a crash is not a decision).
    pub(crate) async fn run_after(&self, command: Command, ctx: &HookContext) {
        let started = tokio::time::Instant::now();
        for hook in self.after.get(&command).into_iter().flatten() {
            if let Ok(Err(rejection)) =
                guarded("an After hook", self.timeout, hook(ctx.clone())).await
            {
                tracing::debug!(
                    uid = %ctx.uid,
                    "an After {} hook stopped the chain: {rejection}",
                    command.name()
                );
                break;
            }
        }
        self.timings.chain(true, command).observe(started.elapsed());
    }

    pub(crate) fn custom(&self, ver: u8, cmd: u16) -> Option<CustomFn> {
        self.custom.get(&(ver, cmd)).cloned()
    }
}
