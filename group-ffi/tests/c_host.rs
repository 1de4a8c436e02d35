//! Builds the C99 host (`hosts/c/server_host.c`) with `gcc -std=c99 -Wall -Wextra -Werror` against the
//! committed header and this crate's shared library, runs it, and runs it again under valgrind, which must
//! report no invalid access and no definite leak. CI installs gcc and valgrind; a developer machine without
//! valgrind skips that half (and says so) unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, where cargo put libgroup_ffi.so for this test run.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn build_host() -> PathBuf {
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
    let out = std::env::temp_dir().join(format!("group-server-host-{}", std::process::id()));
    let status = Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-o"])
        .arg(&out)
        .arg(crate_dir.join("hosts/c/server_host.c"))
        .arg(format!("-I{}", crate_dir.join("../include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lgroup_ffi")
        .status()
        .expect("gcc runs");
    assert!(status.success(), "the C host compiles without warnings");
    out
}

#[test]
fn the_c_host_runs_cleanly_and_under_valgrind() {
    let host = build_host();
    let output = Command::new(&host).output().unwrap();
    assert!(
        output.status.success(),
        "server_host failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("server_host: ok"));

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
