//! The `group-server` binary: starts with flags, prints one `listening` line per listener with the real
//! port, serves clients, and exits cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use group_net::client::Client;

async fn bound<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with its stdout piped (for the `listening` lines) and its log discarded.
fn spawn(command: &mut Command) -> Running {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// A runtime for this test's clients.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn listening_lines(child: &mut Child, count: usize) -> Vec<(String, SocketAddr)> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (0..count)
        .map(|_| {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a listening line");
            let mut words = line.split_whitespace();
            assert_eq!(words.next(), Some("listening"), "{line}");
            let transport = words.next().unwrap().to_string();
            (transport, words.next().unwrap().parse().unwrap())
        })
        .collect()
}

/// A directory for one test's files, removed when the test ends, passed or not.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("group-server-test-")
        .tempdir()
        .unwrap()
}

#[test]
fn starts_prints_real_ports_serves_and_drains_on_sigterm() {
    let scratch = scratch();
    let config = scratch.path().join("group.json");
    std::fs::write(&config, r#"{"server": {"drainTimeout": 300}}"#).unwrap();
    let mut server = spawn(Command::new(env!("CARGO_BIN_EXE_group-server")).args([
        "--config",
        config.to_str().unwrap(),
        "--tcp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--udp",
        "off",
        "--mesh",
        "127.0.0.1:18100",
    ]));
    let lines = listening_lines(&mut server.0, 2);
    assert_eq!(lines[0].0, "tcp");
    assert_eq!(lines[1].0, "ws");
    assert!(
        lines.iter().all(|(_, addr)| addr.port() != 0),
        "real ports: {lines:?}"
    );

    let runtime = client_runtime();
    let mut tcp = runtime.block_on(async {
        let mut tcp = bound(Client::connect_tcp(lines[0].1)).await.unwrap();
        bound(tcp.hello("alice", "")).await.unwrap();
        let mut ws = bound(Client::connect_ws(lines[1].1)).await.unwrap();
        let refused = bound(ws.ping(b"hi")).await.unwrap_err();
        assert_eq!(refused.code(), Some(group_core::proto::code::NOT_GREETED));
        tcp
    });

    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // SIGTERM drains: clients hear Offline first, then the node exits after drainTimeout.
    let push = runtime.block_on(bound(tcp.next_push()));
    assert_eq!(push, Some(group_net::client::Push::Offline));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "clean exit on SIGTERM: {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_flags_and_files_are_clear_errors() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_group-server"))
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (status, stderr) = run(&["--tcp", "nowhere"]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("--tcp"), "{stderr}");
    let (status, stderr) = run(&["--config", "/nonexistent/group.json"]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("/nonexistent/group.json"), "{stderr}");
    let scratch = scratch();
    let dir = scratch.path();
    let file = dir.join("bad.json");
    std::fs::write(&file, r#"{"group": {"relayLimit": 0}}"#).unwrap();
    let (status, stderr) = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("group.relayLimit"), "{stderr}");
    let diarkis = dir.join("group.json");
    std::fs::write(&diarkis, r#"{"relayLimit": 2, "sendIntervall": 300}"#).unwrap();
    let (status, stderr) = run(&["--group-config", diarkis.to_str().unwrap()]);
    assert_eq!(status, Some(2));
    assert!(
        stderr.contains("group.json") && stderr.contains("group.sendIntervall"),
        "{stderr}"
    );
}

#[test]
fn the_example_configuration_starts_a_server() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example.json");
    let config =
        group_net::ServerConfig::from_json(&std::fs::read_to_string(example).unwrap()).unwrap();
    assert_eq!(config.group.static_groups.len(), 1);
    // Apart from its static group, the example lists every key with its default value.
    let mut defaults = config.clone();
    defaults.group.static_groups.clear();
    assert_eq!(defaults, group_net::ServerConfig::default());
    let mut server = spawn(Command::new(env!("CARGO_BIN_EXE_group-server")).args([
        "--config",
        example,
        "--tcp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--mesh",
        "127.0.0.1:0",
    ]));
    let lines = listening_lines(&mut server.0, 4);
    let names: Vec<&str> = lines.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["tcp", "udp", "ws", "mesh"]);
    assert_ne!(lines[3].1.port(), 0, "the mesh line carries the real port");
}

/// The threads of a process, from `/proc/<pid>/status`.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts a server on loopback with `--workers` (None: the default) and `server.writerThreads`, has it
/// serve a client, and returns its thread count.
fn threads_with(workers: Option<&str>, writer_threads: &str) -> usize {
    let scratch = scratch();
    let config = scratch.path().join("group.json");
    let json = format!(r#"{{"server": {{"writerThreads": {writer_threads}}}}}"#);
    std::fs::write(&config, json).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_group-server"));
    command.args(["--config", config.to_str().unwrap()]);
    command.args(["--tcp", "127.0.0.1:0", "--ws", "off", "--udp", "off"]);
    command.args(["--mesh", "127.0.0.1:0"]);
    if let Some(workers) = workers {
        command.args(["--workers", workers]);
    }
    let mut server = spawn(&mut command);
    let lines = listening_lines(&mut server.0, 2);
    let (_, tcp) = lines.first().cloned().unwrap();
    let runtime = client_runtime();
    runtime.block_on(async {
        let mut client = bound(Client::connect_tcp(tcp)).await.unwrap();
        bound(client.hello("alice", "")).await.unwrap();
        bound(client.ping(b"served")).await.unwrap();
    });
    threads(server.0.id())
}

/// `--workers N` sets the runtime's worker threads (the default is one per core); out of range is a
/// clear error.
#[test]
fn workers_sets_the_runtime_threads() {
    let one = threads_with(Some("1"), "0");
    let four = threads_with(Some("4"), "0");
    assert_eq!(four - one, 3, "one worker: {one} threads; four: {four}");
    let cores = std::thread::available_parallelism().unwrap().get();
    let default = threads_with(None, "0");
    assert_eq!(default - one, cores - 1, "default: {default} threads");
    let output = Command::new(env!("CARGO_BIN_EXE_group-server"))
        .args(["--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--workers"), "{stderr}");
}

/// `server.writerThreads` starts that many writer threads; `"auto"` one beside two workers, none beside
/// more, and none beside one (the one worker writes itself).
#[test]
fn writer_threads_start_beside_the_workers() {
    let none = threads_with(Some("2"), "0");
    assert_eq!(threads_with(Some("2"), "3") - none, 3);
    assert_eq!(threads_with(Some("2"), "\"auto\"") - none, 1);
    let three = threads_with(Some("3"), "0");
    assert_eq!(threads_with(Some("3"), "\"auto\""), three);
    let one = threads_with(Some("1"), "0");
    assert_eq!(threads_with(Some("1"), "\"auto\""), one);
}

/// `--group-config` reads a Diarkis Group configuration file as it is: its static groups exist.
#[test]
fn a_diarkis_group_file_configures_the_groups() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/diarkis-group.json");
    let mut server = spawn(
        Command::new(env!("CARGO_BIN_EXE_group-server"))
            .args([
                "--group-config",
                file,
                "--tcp",
                "127.0.0.1:0",
                "--ws",
                "off",
            ])
            .args(["--udp", "off", "--mesh", "127.0.0.1:0"]),
    );
    let lines = listening_lines(&mut server.0, 2);
    let tcp = lines[0].1;
    client_runtime().block_on(async {
        let mut client = bound(Client::connect_tcp(tcp)).await.unwrap();
        bound(client.hello("yuki", "")).await.unwrap();
        let id = b"StaticGroupB-000000000000000000000000000000000000000";
        let group = group_core::GroupId::from_bytes(id).unwrap();
        bound(client.join(group, b"")).await.unwrap();
    });
}

/// `--tls-cert`/`--tls-key` put TLS on the TCP listener, and SIGHUP reads the files again: a client that
/// trusts only the new certificate gets in after it.
#[test]
fn serves_tls_and_reloads_the_certificate_on_sighup() {
    use group_net::client::{ClientOptions, ClientTls};
    let scratch = scratch();
    let dir = scratch.path();
    let write = |name: &str| {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    };
    let (old_cert, old_key) = write("old");
    let (new_cert, new_key) = write("new");
    let (live_cert, live_key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(&old_cert, &live_cert).unwrap();
    std::fs::copy(&old_key, &live_key).unwrap();
    let mut running = spawn(
        Command::new(env!("CARGO_BIN_EXE_group-server"))
            .args(["--tcp", "127.0.0.1:0", "--ws", "off", "--udp", "off"])
            .args(["--mesh", "127.0.0.1:0"])
            .args(["--tls-cert", live_cert.to_str().unwrap()])
            .args(["--tls-key", live_key.to_str().unwrap()]),
    );
    let lines = listening_lines(&mut running.0, 2);
    let tcp = lines.iter().find(|(t, _)| t == "tcp").unwrap().1;
    let rt = client_runtime();
    let options = ClientOptions::default();
    let trusts_new = ClientTls::with_ca_file("localhost", &new_cert).unwrap();
    let trusts_old = ClientTls::with_ca_file("localhost", &old_cert).unwrap();
    rt.block_on(async {
        assert!(
            bound(Client::connect_tls(tcp, &trusts_old, options))
                .await
                .is_ok()
        );
        assert!(
            bound(Client::connect_tls(tcp, &trusts_new, options))
                .await
                .is_err()
        );
    });
    std::fs::copy(&new_cert, &live_cert).unwrap();
    std::fs::copy(&new_key, &live_key).unwrap();
    let pid = running.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    rt.block_on(async {
        bound(async {
            loop {
                if let Ok(mut client) = Client::connect_tls(tcp, &trusts_new, options).await {
                    client.hello("after-reload", "").await.unwrap();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    });
}

/// The container's configuration (deploy/container.json, which the Dockerfile copies) is one the server
/// accepts: all interfaces, metrics on, and a mesh that a secret and an advertised address complete.
#[test]
fn the_container_configuration_is_valid() {
    let text = include_str!("../../deploy/container.json");
    let config = group_net::ServerConfig::from_json(text).unwrap();
    assert_eq!(config.metrics, Some("0.0.0.0:9100".parse().unwrap()));
    assert!(config.mesh.ip().is_unspecified() && config.mesh_advertise.is_some());
    assert!(
        config.drain_timeout < Duration::from_secs(30),
        "below the pods' grace period"
    );
}
