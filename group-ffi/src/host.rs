//! A callback the host registered, with the userdata it is called with.

use std::ffi::c_void;

/// The host's callback `F` and its `userdata`, handed to the server's threads.
pub(crate) struct Host<F> {
    pub callback: F,
    pub userdata: *mut c_void,
}

// SAFETY: the host registers a callback and userdata knowing (the header, docs/FFI.md) that they are used
// from the server's own threads; moving them there is part of that contract.
unsafe impl<F: Send> Send for Host<F> {}
// SAFETY: as above; the library never reads or writes through `userdata`, it only passes it back.
unsafe impl<F: Sync> Sync for Host<F> {}
