//! The threads the library starts, and why no signal from them reaches the host.
//!
//! Writing to a socket whose peer has gone raises SIGPIPE, whose default action ends the process. Rust
//! programs ignore it at start, so a Rust binary never notices; a C, C++ or C# host keeps the default,
//! and a member vanishing under load would kill the engine. The library must not change the host's
//! signal dispositions (they are process-wide), so instead every thread the library starts blocks
//! SIGPIPE in its own signal mask before it runs anything. SIGPIPE is sent to the thread that wrote, so
//! on a library thread it stays pending there, harmlessly, and the write fails with EPIPE, which the
//! connection handles as a closed peer. Every socket operation of the library runs on these threads:
//! the blocking C calls only wait on the host's thread for work done on them.

use tokio::runtime::{Builder, Runtime};

use crate::result::group_result;

/// A multi-thread runtime of `workers` threads named `name`, whose threads (workers and blocking pool)
/// block SIGPIPE.
pub(crate) fn runtime(name: &str, workers: usize) -> Result<Runtime, group_result> {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .on_thread_start(|| {
            block_sigpipe();
            log_to_host();
        })
        .enable_all()
        .build()
        .map_err(|_| group_result::GROUP_RESULT_RUNTIME_FAILED)
}

thread_local! {
    /// Keeps this library thread's log dispatcher in place for the thread's life.
    static LOG_GUARD: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
}

/// Sends this library thread's log lines to the host's log callback (nowhere while none is set).
fn log_to_host() {
    let guard = tracing::dispatcher::set_default(&crate::log::DISPATCH);
    LOG_GUARD.with(|slot| *slot.borrow_mut() = Some(guard));
}

/// Blocks SIGPIPE for the calling thread only.
#[cfg(unix)]
fn block_sigpipe() {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigaddset and pthread_sigmask read an
    // initialised set; a null old-set pointer is allowed. They only touch this thread's signal mask.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
    }
}

/// No SIGPIPE exists here.
#[cfg(not(unix))]
fn block_sigpipe() {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_librarys_threads_block_sigpipe_and_the_callers_thread_is_untouched() {
        let blocked = || {
            let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: reads this thread's mask into `old` without changing it (a null new set).
            unsafe {
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), old.as_mut_ptr());
                libc::sigismember(old.as_ptr(), libc::SIGPIPE) == 1
            }
        };
        let before = blocked();
        let rt = runtime("group-test", 1).unwrap();
        assert!(rt.block_on(async { tokio::spawn(async move { blocked() }).await.unwrap() }));
        let on_blocking_pool = rt.block_on(async { tokio::task::spawn_blocking(blocked).await });
        assert!(on_blocking_pool.unwrap());
        assert_eq!(
            blocked(),
            before,
            "the calling thread's mask is not changed"
        );
    }
}
