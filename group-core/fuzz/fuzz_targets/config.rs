//! Arbitrary configuration text: every refusal must be an error, never a panic.
#![no_main]

use group_core::{GroupConfig, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = GroupConfig::from_json(text);
        let _ = Limits::from_json(text);
    }
});
