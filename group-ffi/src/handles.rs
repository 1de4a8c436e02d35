//! Which server and client handles are live: a double free, a use after free or a pointer the library
//! never returned gets `GROUP_RESULT_INVALID_HANDLE` instead of undefined behaviour or a hang.
//!
//! A handle is registered when `_new`/`_connect` returns it and unregistered, before anything is torn
//! down, by the first `_free`; every call checks it first. A call racing a `_free` of the same handle on
//! another thread is still the host's bug (the contract says: no call in progress), but every sequential
//! misuse is caught. One lock, held for a set lookup, never while host code runs.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::result::group_result;

static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<usize>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a handle the library hands out.
pub(crate) fn register<T>(handle: *const T) {
    let fresh = live().insert(handle as usize);
    debug_assert!(fresh, "an address is handed out once while live");
}

/// NULL, a handle the library did not hand out (or already freed), or a live one.
pub(crate) fn check<T>(handle: *const T) -> Result<(), group_result> {
    if handle.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    if !live().contains(&(handle as usize)) {
        return Err(group_result::GROUP_RESULT_INVALID_HANDLE);
    }
    Ok(())
}

/// Takes a handle out of the registry for freeing; `false` if it was not live (a double free).
pub(crate) fn unregister<T>(handle: *const T) -> bool {
    live().remove(&(handle as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_live_from_register_to_unregister_and_only_once() {
        let value = Box::new(5u8);
        let handle: *const u8 = &*value;
        assert_eq!(
            check(handle),
            Err(group_result::GROUP_RESULT_INVALID_HANDLE)
        );
        register(handle);
        assert_eq!(check(handle), Ok(()));
        assert!(unregister(handle));
        assert!(!unregister(handle), "a second free is detected");
        assert_eq!(
            check(handle),
            Err(group_result::GROUP_RESULT_INVALID_HANDLE)
        );
        assert_eq!(
            check(std::ptr::null::<u8>()),
            Err(group_result::GROUP_RESULT_NULL_ARGUMENT)
        );
    }
}
