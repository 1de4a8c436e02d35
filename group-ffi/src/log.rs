//! The host's log callback: the library's log lines go to the engine's log (UE_LOG, Debug.Log) instead
//! of stderr, where an engine never looks. Without a callback the library logs nothing at all.
//!
//! No process-wide logging state is installed: the library's own threads use a thread-local dispatcher
//! set when they start, and a host thread uses it only for the duration of a `group_` call (and only
//! while a callback is set), so Rust code linked into the same host keeps its own subscriber.

use std::ffi::c_void;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, RwLock};

use tracing::{Dispatch, Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use crate::host::Host;
use crate::panic::guard;
use crate::result::group_result;

/// `callback(userdata, level, message, message_len)`: one log line, UTF-8, not NUL-terminated, valid
/// during the call. `level`: 1 error, 2 warn, 3 info, 4 debug, 5 trace. Called on whichever thread
/// logged (a library thread, or the host's own during a `group_` call): it must be thread-safe and
/// return quickly, and must not call back into the library.
pub type group_log_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, level: u32, message: *const u8, len: usize)>;

type LogCallback = unsafe extern "C" fn(*mut c_void, u32, *const u8, usize);

/// The most verbose level forwarded; 0 while no callback is set.
static MAX_LEVEL: AtomicU32 = AtomicU32::new(0);
static CALLBACK: RwLock<Option<Host<LogCallback>>> = RwLock::new(None);

/// The dispatcher every library thread and every `group_` call (while a callback is set) logs through.
pub(crate) static DISPATCH: LazyLock<Dispatch> = LazyLock::new(|| {
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_target(true)
        .with_writer(ToHost);
    let enabled = tracing_subscriber::filter::filter_fn(|meta| number(meta.level()) <= max_level());
    let subscriber =
        tracing_subscriber::registry().with(tracing_subscriber::Layer::with_filter(lines, enabled));
    Dispatch::new(subscriber)
});

fn max_level() -> u32 {
    MAX_LEVEL.load(Ordering::Relaxed)
}

/// Whether a host thread should log through the library's dispatcher during a call.
pub(crate) fn active() -> bool {
    max_level() > 0
}

fn number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Makes one writer per log line; the line goes to the host when the writer is dropped.
struct ToHost;

struct Line {
    level: u32,
    text: Vec<u8>,
}

impl<'a> MakeWriter<'a> for ToHost {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            level: 3,
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            level: number(meta.level()),
            text: Vec::new(),
        }
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = self.text.trim_ascii_end();
        if text.is_empty() {
            return;
        }
        // Copied out: no lock is held while the host's code runs.
        let host = CALLBACK
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| (h.callback, h.userdata));
        if let Some((callback, userdata)) = host {
            // SAFETY: the host's callback, called as documented, with a buffer valid during the call.
            unsafe { callback(userdata, self.level, text.as_ptr(), text.len()) };
        }
    }
}

/// Sets (or with NULL clears) the log callback and the most verbose `max_level` it receives (1 error
/// ... 5 trace; 0 turns logging off). Without a callback the library logs nothing, to stderr or
/// anywhere. Applies to every server and client in the process.
///
/// # Safety
/// `callback` and `userdata` usable from any thread until replaced (a line being delivered on another
/// thread may still reach the previous one). Any thread, the log callback included.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_set_log_callback(
    callback: group_log_fn,
    max_level: u32,
    userdata: *mut c_void,
) -> group_result {
    guard(|| {
        if max_level > 5 {
            return Err(group_result::GROUP_RESULT_INVALID_ARGUMENT);
        }
        let host = callback.map(|callback| Host { callback, userdata });
        let on = host.is_some() && max_level > 0;
        *CALLBACK.write().unwrap_or_else(|e| e.into_inner()) = host;
        MAX_LEVEL.store(if on { max_level } else { 0 }, Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
        Ok(())
    })
}
