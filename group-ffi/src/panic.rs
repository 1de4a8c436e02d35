//! The panic boundary: no Rust panic may unwind into C. Every exported function runs its body through
//! [`guard`], which turns a panic into [`group_result::GROUP_RESULT_PANIC`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::result::group_result;

/// Runs `body`, converting a panic into `GROUP_RESULT_PANIC`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), group_result>) -> group_result {
    let caught = if crate::log::active() {
        // The call's log lines go to the host's log callback, on the host's thread, for this call only.
        tracing::dispatcher::with_default(&crate::log::DISPATCH, || {
            catch_unwind(AssertUnwindSafe(body))
        })
    } else {
        catch_unwind(AssertUnwindSafe(body))
    };
    match caught {
        Ok(Ok(())) => group_result::GROUP_RESULT_OK,
        Ok(Err(code)) => code,
        Err(_) => group_result::GROUP_RESULT_PANIC,
    }
}
