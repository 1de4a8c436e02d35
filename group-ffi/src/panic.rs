//! The panic boundary: no Rust panic may unwind into C. Every exported function runs its body through
//! [`guard`], which turns a panic into [`group_result::GROUP_RESULT_PANIC`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::result::group_result;

/// Runs `body`, converting a panic into `GROUP_RESULT_PANIC`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), group_result>) -> group_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => group_result::GROUP_RESULT_OK,
        Ok(Err(code)) => code,
        Err(_) => group_result::GROUP_RESULT_PANIC,
    }
}
