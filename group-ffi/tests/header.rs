//! `include/group.h` is generated from this crate by cbindgen and committed; this test regenerates it and
//! fails on any difference, so the header never drifts from the library. `GROUP_BLESS=1` rewrites it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn the_committed_header_matches_the_library() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen reads the crate")
        .write(&mut generated);
    let header = crate_dir.join("../include/group.h");
    if std::env::var_os("GROUP_BLESS").is_some() {
        std::fs::write(&header, &generated).unwrap();
    }
    let committed = std::fs::read(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "include/group.h is out of date: run `GROUP_BLESS=1 cargo test -p group-ffi --test header` and commit it"
    );
}

/// The macros <windows.h> is notorious for (without `min`/`max`: Unreal defines NOMINMAX, and those
/// would break the C++ standard library's own headers), then Unreal's assertion and text macros.
const ENGINE_MACROS: &str = r#"
#define near
#define far
#define IN
#define OUT
#define OPTIONAL
#define CALLBACK
#define WINAPI
#define ERROR 0
#define DELETE 0x00010000L
#define interface struct
#define small char
#define BOOL int
#define TRUE 1
#define FALSE 0
#define check(expr) ((void)(expr))
#define verify(expr) ((void)(expr))
#define ensure(expr) ((void)(expr))
#define TEXT(text) text
"#;

/// What an engine module has seen before it includes group.h (C): <unistd.h> (which declares
/// `int group_member(gid_t)`), <signal.h>, `min`/`max` and [`ENGINE_MACROS`]. `@MACROS@` is replaced.
const ENGINE_PRELUDE: &str = r#"
#include <unistd.h>
#include <signal.h>
#include <stdio.h>
#define min(a, b) (((a) < (b)) ? (a) : (b))
#define max(a, b) (((a) > (b)) ? (a) : (b))
@MACROS@
#include "group.h"
int main(void) {
    group_server_t *server = NULL;
    group_member_t member;
    group_result_t result = group_server_new((const uint8_t *)"{}", 2, 0, &server);
    (void)member;
    if (result == GROUP_RESULT_OK) {
        group_server_free(server);
    }
    return (int)getpid() < 0;
}
"#;

/// The same for C++, through the RAII wrapper: result-returning calls, no exceptions, no RTTI, and the
/// wrapper's templates instantiated.
const ENGINE_PRELUDE_CPP: &str = r#"
#include <unistd.h>
@MACROS@
#include "group.hpp"
int main() {
    auto server = group::Server::create("{}");
    if (!server) {
        return static_cast<int>(server.error().result == GROUP_RESULT_OK);
    }
    group::Status started = server.value().start();
    group::GroupId group{};
    auto ids = server.value().group_ids("uid");
    auto nodes = server.value().member_nodes(group);
    auto snapshot = server.value().snapshot(group);
    auto event = server.value().poll_event();
    auto client = group::Client::connect_async(GROUP_TRANSPORT_TCP, "127.0.0.1:1");
    if (client) {
        std::size_t seen = 0;
        group::Status dispatched = client.value().dispatch([&](const group::ClientEvent &e) { seen += e.message.size(); });
        auto op = client.value().submit_join(group, "hi", 100);
        (void)dispatched;
        (void)op;
    }
    (void)ids;
    (void)nodes;
    (void)snapshot;
    (void)event;
    return started.ok() && group::config_error("{}").empty() ? 0 : 1;
}
"#;

/// The compilers and flags a C or C++ engine build uses; those not installed are skipped unless `CI` is
/// set (CI installs gcc and clang).
#[test]
fn the_header_compiles_after_system_and_engine_headers_with_every_warning() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    let scratch = tempfile::Builder::new()
        .prefix("group-header-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let strict = [
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wshadow",
        "-Wconversion",
        "-pedantic",
    ];
    let cases: [(&str, &str, &[&str]); 4] = [
        ("gcc", "probe.c", &["-std=c99"]),
        (
            "g++",
            "probe.cpp",
            &["-std=c++17", "-fno-exceptions", "-fno-rtti"],
        ),
        ("clang", "probe.c", &["-std=c99"]),
        (
            "clang++",
            "probe.cpp",
            &["-std=c++17", "-fno-exceptions", "-fno-rtti"],
        ),
    ];
    let mut compiled = 0;
    for (compiler, file, flags) in cases {
        let source = dir.join(file);
        let prelude = if file.ends_with(".cpp") {
            ENGINE_PRELUDE_CPP
        } else {
            ENGINE_PRELUDE
        };
        let text = prelude.replace("@MACROS@", ENGINE_MACROS);
        std::fs::write(&source, text).unwrap();
        let run = std::process::Command::new(compiler)
            .args(flags)
            .args(strict)
            .arg("-fsyntax-only")
            .arg(format!("-I{}", include.display()))
            .arg(&source)
            .output();
        let Ok(output) = run else {
            assert!(std::env::var_os("CI").is_none(), "CI installs {compiler}");
            eprintln!("skipped: {compiler} is not installed");
            continue;
        };
        assert!(
            output.status.success(),
            "{compiler} {flags:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        compiled += 1;
    }
    assert!(compiled >= 2, "at least gcc and g++ ran");
}
