//! Builds the C99 host (`hosts/c/server_host.c`) with `gcc -std=c99 -Wall -Wextra -Werror`, the C++17
//! host (`hosts/cpp/server_host.cpp`, through `include/group.hpp`) with `g++ -std=c++17` against the
//! committed header and this crate's shared library, and the C# host (`hosts/csharp/ServerHost.cs`, through
//! the wrapper in `csharp/`) with Mono's `mcs -langversion:7`, and runs them; the C host runs again under
//! valgrind, which must report no invalid access and no definite leak. CI installs gcc, valgrind and Mono;
//! a developer machine without valgrind or Mono skips those parts (and says so) unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, where cargo put libgroup_ffi.so for this test run.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Builds the shared library the hosts load: `cargo test` links tests against the rlib only.
fn build_library() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = library_dir().ends_with("release");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "group-ffi", "--lib"])
            .args(release.then_some("--release"))
            .current_dir(crate_dir)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building libgroup_ffi failed");
    }
    let lib = library_dir();
    assert!(
        lib.join("libgroup_ffi.so").exists(),
        "cargo builds the cdylib next to the tests: {}",
        lib.display()
    );
    lib
}

/// A directory for one test's host binary and certificates, removed when the test ends, passed or not.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("group-hosts-")
        .tempdir()
        .unwrap()
}

/// Builds `source` with `compiler` and `flags` against the header and the shared library, into `dir`.
fn build_host(dir: &Path, compiler: &str, flags: &[&str], source: &str) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = build_library();
    let name = Path::new(source)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let out = dir.join(format!("{compiler}-{name}"));
    let status = Command::new(compiler)
        .args(flags)
        .args(["-Wall", "-Wextra", "-Werror", "-g", "-o"])
        .arg(&out)
        .arg(crate_dir.join(source))
        .arg(format!("-I{}", crate_dir.join("../include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lgroup_ffi")
        .status()
        .expect("gcc runs");
    assert!(status.success(), "{source} compiles without warnings");
    out
}

/// Runs a host and checks it says `ok`.
fn run_host(host: &Path, ok: &str) {
    run_checked(Command::new(host), host, &[ok]);
}

/// Writes `cert.pem` and `key.pem` into `dir`, self-signed for `game.example`, made by rcgen for this
/// test run: the C++ and C# hosts start a TLS server with them and connect clients that trust them.
fn write_tls_files(dir: &Path) -> &Path {
    let made = rcgen::generate_simple_self_signed(vec!["game.example".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
    dir
}

/// Runs `command` (a host) and checks it succeeds and says every line of `oks`.
fn run_checked(mut command: Command, host: &Path, oks: &[&str]) {
    let output = command.output().unwrap();
    // The hosts print their measurements (poll(0) times, allocations): visible with --nocapture.
    print!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "{} failed ({}): {}",
        host.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    for ok in oks {
        assert!(
            stdout.contains(ok),
            "{} said {ok:?}:\n{stdout}",
            host.display()
        );
    }
}

#[test]
fn the_cpp_host_runs_through_the_raii_header() {
    let dir = scratch();
    let flags = ["-std=c++17", "-fno-exceptions", "-fno-rtti", "-Wshadow"];
    let host = build_host(dir.path(), "g++", &flags, "hosts/cpp/server_host.cpp");
    let mut command = Command::new(&host);
    command.env("GROUP_TEST_TLS_DIR", write_tls_files(dir.path()));
    run_checked(command, &host, &["cpp_host: tls ok", "cpp_host: ok"]);
}

#[test]
fn the_c_host_runs_cleanly_and_under_valgrind() {
    let dir = scratch();
    let host = build_host(dir.path(), "gcc", &["-std=c99"], "hosts/c/server_host.c");
    run_host(&host, "server_host: ok");

    if !available("valgrind", "--version") {
        return;
    }
    let output = Command::new("valgrind")
        .args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
        ])
        .arg(&host)
        .arg("200") // a lighter load of 8 KB announces: valgrind runs it some 50 times slower
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "valgrind found a problem:\n{stderr}"
    );
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
}

/// Whether `tool` runs here; without it a developer machine skips, CI fails.
fn available(tool: &str, version_flag: &str) -> bool {
    if Command::new(tool).arg(version_flag).output().is_ok() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI must have {tool}");
    eprintln!("{tool} not installed: skipping");
    false
}

#[test]
fn the_csharp_host_runs_on_mono_with_a_csharp_hook() {
    if !available("mcs", "--version") || !available("mono", "--version") {
        return;
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = build_library();
    let dir = scratch();
    let exe = dir.path().join("csharp-host.exe");
    let output = Command::new("mcs")
        .args(["-unsafe", "-langversion:7", "-warnaserror+"])
        .arg(format!("-out:{}", exe.display()))
        .args([
            "csharp/Runtime/NativeMethods.g.cs",
            "csharp/Runtime/Group.cs",
            "csharp/Runtime/GroupServer.cs",
            "csharp/Runtime/GroupClient.cs",
            "hosts/csharp/ServerHost.cs",
        ])
        .current_dir(crate_dir)
        .output()
        .expect("mcs runs");
    assert!(
        output.status.success(),
        "the C# host compiles without warnings:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let mut mono = Command::new("mono");
    mono.arg(&exe)
        .env("LD_LIBRARY_PATH", &lib)
        .env("GROUP_TEST_TLS_DIR", write_tls_files(dir.path()));
    run_checked(mono, &exe, &["csharp_host: tls ok", "csharp_host: ok"]);
}
