//! `group-ffi/csharp/Runtime/NativeMethods.g.cs`, the C# declarations of the C ABI, is generated from this crate by
//! csbindgen and committed; this test regenerates it and fails on any difference. `GROUP_BLESS=1` rewrites
//! it. The options keep it Mono-compatible (C# 7): delegates instead of function pointers, no nint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// The source files that declare exported functions, structs and enums.
const SOURCES: [&str; 14] = [
    "lib.rs",
    "result.rs",
    "server.rs",
    "hook_api.rs",
    "api.rs",
    "queries.rs",
    "callbacks.rs",
    "hooks.rs",
    "events.rs",
    "log.rs",
    "client/mod.rs",
    "client/blocking.rs",
    "client/submit.rs",
    "client/events.rs",
];

#[test]
fn the_committed_csharp_bindings_match_the_library() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut builder = csbindgen::Builder::default();
    for source in SOURCES {
        builder = builder.input_extern_file(crate_dir.join("src").join(source));
    }
    let out_dir = tempfile::Builder::new()
        .prefix("group-ffi-csbindgen-")
        .tempdir()
        .unwrap();
    let out = out_dir.path().join("NativeMethods.g.cs");
    builder
        .csharp_dll_name("group_ffi")
        // iOS links native code statically: Unity's players there find it in the executable itself.
        .csharp_dll_name_if("UNITY_IOS && !UNITY_EDITOR", "__Internal")
        .csharp_namespace("Group.Native")
        .csharp_class_name("NativeMethods")
        .csharp_class_accessibility("public")
        .csharp_use_function_pointer(false)
        .csharp_use_nint_types(false)
        // Sizes are `size_t` in C, which a C# const cannot be: the wrapper states them as ints.
        .csharp_generate_const_filter(|name| name.starts_with("GROUP_VERSION_"))
        .always_included_types([
            "group_transport",
            "group_command",
            "group_hook_phase",
            "group_event_kind",
            "group_push_kind",
            "group_message_kind",
            "group_client_event_kind",
            "group_disconnect_reason",
        ])
        .generate_csharp_file(&out)
        .expect("csbindgen reads the crate");
    let generated = std::fs::read(&out).unwrap();
    let committed_path = crate_dir.join("csharp/Runtime/NativeMethods.g.cs");
    if std::env::var_os("GROUP_BLESS").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "group-ffi/csharp/Runtime/NativeMethods.g.cs is out of date: run \
         `GROUP_BLESS=1 cargo test -p group-ffi --test csharp_bindings` and commit it"
    );
}
