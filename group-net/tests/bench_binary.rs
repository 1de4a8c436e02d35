//! `group-bench` runs end to end against the local server it starts, and accounts for every delivery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_group-bench"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "group-bench failed: {stderr}");
    assert!(
        stderr.contains("connections in"),
        "progress output on stderr: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_worst_per_second_is_a_real_latency(&stderr, &summary);
    summary
}

/// Each second's progress line names the worst latency of that second: one of the run's samples, so
/// above zero once something arrived, and never above the run's maximum.
fn assert_worst_per_second_is_a_real_latency(stderr: &str, summary: &serde_json::Value) {
    let worst: Vec<f64> = stderr
        .lines()
        .filter_map(|line| line.split("worst").nth(1))
        .map(|rest| rest.trim().trim_end_matches("ms").trim().parse().unwrap())
        .collect();
    if summary["deliveries"].as_u64().unwrap_or(0) == 0 {
        return; // an idle run, or one where nothing arrived: no latency to name
    }
    let max_us = summary
        .pointer("/latency_us/max")
        .and_then(serde_json::Value::as_f64);
    let max_ms = max_us.unwrap() / 1000.0;
    assert!(!worst.is_empty(), "a progress line per second: {stderr}");
    let highest = worst.iter().copied().fold(0.0, f64::max);
    assert!(highest > 0.0, "the worst latency is counted: {stderr}");
    // A receiver cut off mid-run (a killed node's) may take its samples with it.
    if summary["disconnected"].as_u64() == Some(0) {
        assert!(
            highest <= max_ms + 0.005,
            "{highest} ms above the run's {max_ms} ms"
        );
    }
}

/// Something was sent, every receiver got every message, and no connection dropped.
fn assert_every_broadcast_delivered(summary: &serde_json::Value) {
    assert!(
        summary["broadcasts_sent"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(
        summary["deliveries"], summary["expected_deliveries"],
        "{summary}"
    );
    assert_eq!(summary["disconnected"], 0, "{summary}");
}

#[test]
fn rate_mode_over_both_transports_delivers_everything() {
    // Ensure the server binary next to group-bench is built (cargo builds every bin of the package for
    // integration tests).
    let _ = env!("CARGO_BIN_EXE_group-server");
    for transport in ["tcp", "ws"] {
        let summary = run(&[
            "--transport",
            transport,
            "--clients",
            "20",
            "--duration",
            "1",
            "--rate",
            "50",
        ]);
        assert_every_broadcast_delivered(&summary);
        assert!(
            summary["latency_us"]["p99"].as_u64().unwrap() > 0,
            "{summary}"
        );
    }
}

/// A redis-server or nats-server started for one test on a free loopback port; killed on drop.
struct Peer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Peer {
    fn start(program: &str, args: impl Fn(u16) -> Vec<String>) -> Peer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .args(args(port))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program}: {e} (.ci/run installs it from Debian's packages)")
            });
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{program} did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Peer { child, addr }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--target redis|nats` drives the same load shape against the peers and accounts for every delivery,
/// with the server's CPU use read from /proc.
#[test]
fn the_peers_get_the_same_load_and_every_message_is_accounted_for() {
    let redis = Peer::start("redis-server", |port| {
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(String::from)
        .to_vec()
    });
    let nats = Peer::start("nats-server", |port| {
        ["-a", "127.0.0.1", "-p", &port.to_string()]
            .map(String::from)
            .to_vec()
    });
    for (target, peer) in [("redis", &redis), ("nats", &nats)] {
        let (addr, pid) = (peer.addr.to_string(), peer.child.id().to_string());
        for rate in ["50", "0"] {
            let summary = run(&[
                "--target",
                target,
                "--server",
                &addr,
                "--server-pid",
                &pid,
                "--clients",
                "20",
                "--groups",
                "2",
                "--duration",
                "1",
                "--rate",
                rate,
            ]);
            assert_eq!(summary["target"], target, "{summary}");
            assert_every_broadcast_delivered(&summary);
            assert!(summary["server_cpu_percent"].is_f64(), "{summary}");
            assert!(summary["client_cpu_percent"].is_f64(), "{summary}");
        }
    }
}

#[test]
fn idle_mode_reports_server_memory_per_connection() {
    let summary = run(&["--idle", "--clients", "50"]);
    assert_eq!(summary["clients"], 50, "{summary}");
    assert!(
        summary["server_bytes_per_connection"].is_u64(),
        "read from /proc: {summary}"
    );
}

#[test]
fn a_local_cluster_delivers_everything_and_times_a_failover() {
    let _ = env!("CARGO_BIN_EXE_group-server");
    let summary = run(&[
        "--nodes",
        "3",
        "--clients",
        "30",
        "--duration",
        "1",
        "--rate",
        "50",
    ]);
    assert_eq!(summary["nodes"], 3, "{summary}");
    assert_every_broadcast_delivered(&summary);

    let summary = run(&[
        "--nodes",
        "3",
        "--clients",
        "30",
        "--duration",
        "4",
        "--rate",
        "50",
        "--kill-owner-after",
        "1",
    ]);
    // The ten clients on the killed node are cut off; the others keep hearing each other and learn of
    // the new owner.
    assert_eq!(summary["disconnected"], 10, "{summary}");
    assert!(
        summary["first_delivery_after_kill_ms"].is_f64(),
        "{summary}"
    );
    assert!(summary["rejoin_push_after_kill_ms"].is_f64(), "{summary}");
}

/// Members that only listen read their own sockets (`raw_member`) and must still send KeepAlive:
/// against a server that discards users silent for 5 s, a 6 s run (and 2 s of draining) loses nobody.
#[test]
fn listening_members_keep_their_sessions_alive() {
    use std::io::{BufRead, BufReader};
    let scratch = tempfile::Builder::new()
        .prefix("group-bench-test-")
        .tempdir()
        .unwrap();
    let config = scratch.path().join("group.json");
    std::fs::write(&config, r#"{"limits": {"connectionTtl": 5}}"#).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_group-server"))
        .arg("--config")
        .arg(&config)
        .args(["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
        .args(["--udp", "127.0.0.1:0", "--mesh", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let server = Peer {
        child,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let tcp = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("listening tcp ").map(str::to_string))
        .expect("a listening tcp line");
    let summary = run(&[
        "--server",
        &tcp,
        "--clients",
        "10",
        "--duration",
        "6",
        "--rate",
        "20",
    ]);
    drop(server);
    assert_every_broadcast_delivered(&summary);
}
