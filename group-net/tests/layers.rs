//! The driver's modules form layers, not a circle: each module imports only modules of lower layers
//! (docs/ARCHITECTURE.md). A new import that closes a circle fails here, naming it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules of `src/`, lowest layer first. A module may import any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &[
        "throttle",
        "budget",
        "histogram",
        "direct",
        "writer_pool",
        "fan_out",
        "shared_frames",
    ],
    &["auth", "config", "hooks", "inbox", "tls"],
    &[
        "mesh",
        "conn",
        "handle",
        "message_worker",
        "flusher",
        "run_split",
    ],
    &["listener", "node_task"],
    &["tcp", "udp", "ws", "metrics"],
    &["server"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

/// The source files of a module: `name.rs`, or every file under `name/`.
fn files_of(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let entries = std::fs::read_dir(path).unwrap();
    entries.flat_map(|e| files_of(&e.unwrap().path())).collect()
}

/// The `crate::<module>` names a file's code (not its comments) uses.
fn used_modules(text: &str) -> BTreeSet<String> {
    let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
    code.flat_map(|line| {
        line.match_indices("crate::").map(move |(at, _)| {
            let rest = line.get(at + "crate::".len()..).unwrap_or_default();
            rest.chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
    })
    .filter(|name| !name.is_empty())
    .collect()
}

#[test]
fn every_module_imports_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().to_string();
        // The crate root re-exports everything; the binaries and the client are users of the crate.
        if ["lib", "bin", "client"].contains(&module.as_str()) {
            continue;
        }
        let own = layer_of(&module);
        for file in files_of(&path) {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in used_modules(&text).into_iter().filter(|u| *u != module) {
                let theirs = layer_of(&used);
                assert!(
                    theirs < own,
                    "{} imports crate::{used} (layer {theirs}) from layer {own}: a circle in the making",
                    file.display()
                );
            }
        }
        checked += 1;
    }
    let listed: usize = LAYERS.iter().map(|layer| layer.len()).sum();
    assert_eq!(
        checked,
        listed,
        "every listed module was found under {}",
        src.display()
    );
}
