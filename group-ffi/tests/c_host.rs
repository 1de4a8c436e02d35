//! Builds the C99 host (`hosts/c/server_host.c`) with `gcc -std=c99 -Wall -Wextra -Werror` and the C++17
//! host (`hosts/cpp/server_host.cpp`, through `include/group.hpp`) with `g++ -std=c++17` against the
//! committed header and this crate's shared library, and runs them; the C host runs again under valgrind,
//! which must report no invalid access and no definite leak. CI installs gcc and valgrind; a developer machine without
//! valgrind skips that half (and says so) unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, where cargo put libgroup_ffi.so for this test run.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Builds `source` with `compiler` and `flags` against the header and the shared library.
fn build_host(compiler: &str, flags: &[&str], source: &str) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `cargo test` links tests against the rlib only: build the shared library the C host links to.
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
    let name = Path::new(source)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let out = std::env::temp_dir().join(format!("group-{compiler}-{name}-{}", std::process::id()));
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
    let output = Command::new(host).output().unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}",
        host.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(ok));
}

#[test]
fn the_cpp_host_runs_through_the_raii_header() {
    let host = build_host("g++", &["-std=c++17"], "hosts/cpp/server_host.cpp");
    run_host(&host, "cpp_host: ok");
    let _ = std::fs::remove_file(&host);
}

#[test]
fn the_c_host_runs_cleanly_and_under_valgrind() {
    let host = build_host("gcc", &["-std=c99"], "hosts/c/server_host.c");
    run_host(&host, "server_host: ok");

    let valgrind = Command::new("valgrind").arg("--version").output();
    if valgrind.is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must have valgrind");
        eprintln!("valgrind not installed: skipping the memory check");
        let _ = std::fs::remove_file(&host);
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
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "valgrind found a problem:\n{stderr}"
    );
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    let _ = std::fs::remove_file(&host);
}
