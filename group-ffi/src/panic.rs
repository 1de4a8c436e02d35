//! The panic boundary: no Rust panic may unwind into C. Every exported function runs its body through
//! [`guard`], which turns a panic into [`group_result::GROUP_RESULT_PANIC`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::result::group_result;

/// Runs `body`, converting a panic into `GROUP_RESULT_PANIC` (and its message into an error line for the
/// host's log callback, where an engine looks).
pub(crate) fn guard(body: impl FnOnce() -> Result<(), group_result>) -> group_result {
    let run = || match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => group_result::GROUP_RESULT_OK,
        Ok(Err(code)) => code,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            tracing::error!("the group library panicked (a bug; please report it): {message}");
            group_result::GROUP_RESULT_PANIC
        }
    };
    if crate::log::active() {
        // The call's log lines go to the host's log callback, on the host's thread, for this call only.
        tracing::dispatcher::with_default(&crate::log::DISPATCH, run)
    } else {
        run()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what a test subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    #[allow(clippy::panic)]
    fn a_panic_becomes_a_result_code_and_an_error_line_with_its_message() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        let result = tracing::subscriber::with_default(subscriber, || {
            guard(|| panic!("the boundary caught this"))
        });
        assert_eq!(result, group_result::GROUP_RESULT_PANIC);
        let written = lines.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let text = String::from_utf8_lossy(&written);
        assert!(text.contains("ERROR"), "{text}");
        assert!(text.contains("the boundary caught this"), "{text}");
    }
}
