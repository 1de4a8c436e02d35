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
