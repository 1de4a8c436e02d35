//! Helpers for tests that run real `group-server` processes on loopback: start a node with flags, read
//! the addresses it prints, and kill it (SIGKILL or SIGTERM) on purpose or when the test ends.
//!
//! The binary is the one `cargo test --workspace` builds next to the test executables
//! (`target/<profile>/group-server`); run the tests through that command, or build group-net first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod clients;
pub mod proxy;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, SystemTime};

/// The `group-server` binary beside this test executable (`target/<profile>/group-server`).
///
/// `cargo test --workspace` builds it with the tests, and then it is used as it is. Only when it is
/// missing or older than a file it is built from (after an edit, under `cargo test -p group-tests`) is it
/// built here first, so that no test runs a stale server. Not every time: `cargo build -p group-net`
/// resolves tokio without the tests' `test-util` feature, so on a fresh clone that build compiled a second
/// copy of group-net and its dependencies in the middle of the suite.
pub fn server_binary() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find_or_build_server) {
        Ok(binary) => binary.clone(),
        Err(why) => panic!("{why}"),
    }
}

fn find_or_build_server() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("the test executable's path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| format!("{} is not in target/<profile>/deps", exe.display()))?;
    let binary = profile_dir.join(format!("group-server{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let newest_source = server_sources().iter().filter_map(|p| newest_in(p)).max();
    if let (Some(built), Some(source)) = (built, newest_source)
        && built >= source
    {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").ok_or_else(|| {
        format!(
            "{} is missing or older than its sources: run `cargo test --workspace` (it builds \
             group-server) or `cargo build -p group-net`",
            binary.display()
        )
    })?;
    let release = profile_dir.ends_with("release");
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "group-net",
            "--bin",
            "group-server",
        ])
        .args(release.then_some("--release"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("running cargo build for group-server: {e}"))?;
    if !status.success() {
        return Err(format!("building group-server failed ({status})"));
    }
    Ok(binary)
}

/// What `group-server` is built from, in the workspace: its crates' sources and manifests, the lock
/// file, and the configuration file `group-net` includes.
fn server_sources() -> Vec<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    [
        "Cargo.toml",
        "Cargo.lock",
        "group-core/Cargo.toml",
        "group-core/src",
        "group-net/Cargo.toml",
        "group-net/src",
        "config",
    ]
    .iter()
    .map(|p| workspace.join(p))
    .collect()
}

/// The latest modification time of a file, or of any file under a directory.
fn newest_in(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest_in(&entry.path()))
        .max()
}

/// Nodes started by this test process, to name their logs.
static NODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A running `group-server` process, killed when dropped.
pub struct Node {
    child: Child,
    /// Addresses by transport (`tcp`, `udp`, `ws`, `mesh`), from its `listening` lines.
    pub addrs: HashMap<String, SocketAddr>,
}

impl Node {
    /// Starts a node on loopback with every listener on port 0, the given configuration file and seeds.
    pub fn start(config: &std::path::Path, seeds: &[SocketAddr]) -> Node {
        let mut command = Command::new(server_binary());
        command.args([
            "--config",
            config.to_str().unwrap(),
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--mesh",
            "127.0.0.1:0",
        ]);
        for seed in seeds {
            command.args(["--seed", &seed.to_string()]);
        }
        // GROUP_TEST_LOGS=<dir>: each node's log goes to <dir>/node-<pid>.log, for a failure's post-mortem.
        let logs = std::env::var_os("GROUP_TEST_LOGS").map(PathBuf::from);
        let stderr = match &logs {
            Some(dir) => {
                std::fs::create_dir_all(dir).unwrap();
                let name = format!(
                    "node-{}-{}.log",
                    std::process::id(),
                    NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                Stdio::from(std::fs::File::create(dir.join(name)).unwrap())
            }
            None => Stdio::null(),
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start group-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut addrs = HashMap::new();
        while addrs.len() < 4 {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("group-server printed its listening lines");
            let mut words = line.split_whitespace().skip(1);
            let (Some(name), Some(addr)) = (words.next(), words.next()) else {
                continue;
            };
            addrs.insert(name.to_string(), addr.parse().unwrap());
        }
        Node { child, addrs }
    }

    /// The address of one listener.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`-KILL`, `-TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits (at most `limit`) for the process to exit; returns whether it exited successfully.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a configuration file for these tests; it is removed when the returned path is dropped, so
/// keep it while nodes may still (re)start with it.
pub fn config_file(name: &str, json: &str) -> tempfile::TempPath {
    let mut file = tempfile::Builder::new()
        .prefix(&format!("group-tests-{name}-"))
        .suffix(".json")
        .tempfile()
        .unwrap();
    std::io::Write::write_all(&mut file, json.as_bytes()).unwrap();
    file.into_temp_path()
}

#[cfg(test)]
mod tests {
    use super::newest_in;
    use std::time::{Duration, SystemTime};

    #[test]
    fn newest_in_looks_into_subdirectories() {
        let dir = tempfile::Builder::new()
            .prefix("group-tests-newest-")
            .tempdir()
            .unwrap();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let top = std::fs::File::create(dir.path().join("top.rs")).unwrap();
        top.set_modified(base).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let deep = std::fs::File::create(dir.path().join("sub/deep.rs")).unwrap();
        deep.set_modified(base + Duration::from_secs(60)).unwrap();

        assert_eq!(
            newest_in(&dir.path().join("top.rs")),
            Some(base),
            "a file is its own newest"
        );
        assert_eq!(
            newest_in(dir.path()),
            Some(base + Duration::from_secs(60)),
            "the file in the subdirectory is the newest"
        );
        assert_eq!(newest_in(&dir.path().join("missing")), None);
    }
}
