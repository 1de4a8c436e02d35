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
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `group-server` binary beside this test executable, rebuilt first when cargo runs the tests (so
/// that `cargo test -p group-tests` alone never runs a stale binary).
pub fn server_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        let release = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.ends_with("release")))
            .unwrap_or(false);
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
            .expect("run cargo build");
        assert!(status.success(), "building group-server failed");
    });
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join(format!("group-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --workspace` (it builds group-server) or `cargo build -p group-net`",
        binary.display()
    );
    binary
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
