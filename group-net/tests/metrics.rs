//! The metrics listener, scraped by a real Prometheus server (Debian's `prometheus`, started here with
//! a generated configuration on loopback): the series appear in Prometheus with the values the node
//! has. `/healthz` and `/readyz` answer as a Kubernetes probe expects: a node given seeds it cannot
//! reach is alive but not ready.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{Transport, bounded, config, kept_group, next_push, start, user};
use group_core::proto::CreateRequest;
use group_net::client::Push;
use group_net::{Command as Hooked, ServerBuilder, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` from `addr`: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_get(addr, path).await.expect("an HTTP answer")
}

/// GET `path` from `addr`, or `None` if nothing answers (yet).
async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    Some((status, body.to_string()))
}

fn with_metrics() -> ServerConfig {
    ServerConfig {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    }
}

/// A Prometheus server, killed when dropped; then its configuration and data directory is removed.
struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: SocketAddr) -> (Prometheus, SocketAddr) {
    let scratch = tempfile::Builder::new()
        .prefix("group-prometheus-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: group\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the prometheus binary (Debian package prometheus; .ci/run installs it)");
    let prometheus = Prometheus {
        child,
        _dir: scratch,
    };
    (prometheus, web)
}

/// The value of the sample `name` (no labels) in a `/metrics` body.
fn sample(body: &str, name: &str) -> f64 {
    let line = body
        .lines()
        .find(|line| line.starts_with(&format!("{name} ")));
    let value = line.and_then(|line| line.split(' ').nth(1));
    value.and_then(|v| v.parse().ok()).expect(name)
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_series() {
    let started = std::time::Instant::now();
    let builder = ServerBuilder::new(with_metrics())
        .before(Hooked::Join, |_| async { Ok(()) })
        .after(Hooked::Create, |_| async {});
    let server = start(builder).await;
    let metrics = server.metrics_addr().unwrap();
    let mut tcp = user(&server, Transport::Tcp, "on-tcp").await;
    let mut ws = user(&server, Transport::Ws, "on-ws").await;
    let params = kept_group();
    let group = bounded("create", tcp.create(params)).await.unwrap();
    bounded("join", ws.join(group, b"hi")).await.unwrap();
    for _ in 0..3 {
        bounded(
            "broadcast",
            tcp.broadcast(group, Bytes::from_static(b"x"), true),
        )
        .await
        .unwrap();
    }
    // A merging group: two broadcasts reach the other member as one merged push.
    let merging = bounded(
        "create",
        tcp.create(CreateRequest {
            interval_ms: 100,
            ..params
        }),
    )
    .await
    .unwrap();
    bounded("join", ws.join(merging, b"")).await.unwrap();
    for _ in 0..2 {
        let message = Bytes::from_static(b"m");
        bounded("broadcast", tcp.broadcast(merging, message, true))
            .await
            .unwrap();
    }
    bounded("the merged push", async {
        loop {
            if let Push::Broadcast { group, entries } = next_push(&mut ws).await
                && group == merging
            {
                assert_eq!(entries.len(), 2, "one push holding both entries");
                break;
            }
        }
    })
    .await;

    let (status, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "group_connections_open{transport=\"tcp\"} 1",
        "group_connections_open{transport=\"ws\"} 1",
        "group_broadcasts_received_total 5",
        "group_sessions 2",
        "group_groups 2",
        "group_groups_owned 2",
        "group_group_copies 0",
        "group_members 4",
        "group_deliveries_total 4",
        "group_merge_flushes_total 1",
        "group_failovers_total 0",
        "group_remote_join_seconds_count 0",
        "group_fanout_seconds_count 0",
        "group_hook_seconds_count{hook=\"before_join\"} 2",
        "group_hook_seconds_count{hook=\"after_create\"} 2",
        "group_hook_seconds_count{hook=\"after_join\"} 0",
        "group_hook_seconds_bucket{hook=\"before_join\",le=\"+Inf\"} 2",
    ] {
        assert!(body.contains(line), "{line} in:\n{body}");
    }
    // The node task was busy for the commands above, and for less than the test has run.
    let busy = sample(&body, "group_node_busy_seconds_total");
    assert!(busy > 0.0, "group_node_busy_seconds_total {busy}");
    assert!(busy <= started.elapsed().as_secs_f64(), "busy {busy} s");
    assert!(busy <= server.node_busy().as_secs_f64(), "it only grows");
    assert_eq!(get(metrics, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(metrics, "/readyz").await.0, 200);
    assert_eq!(get(metrics, "/nothing").await.0, 404);

    let (_prometheus, web) = start_prometheus(metrics);
    let query = "/api/v1/query?query=group_connections_open";
    bounded("Prometheus has scraped the node", async {
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(2), try_get(web, query)).await;
            if let Ok(Some((200, body))) = answer
                && body.contains("\"transport\":\"ws\"")
            {
                assert!(body.contains("\"transport\":\"tcp\""), "{body}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let (_, sessions) = get(web, "/api/v1/query?query=group_sessions").await;
    assert!(
        sessions.contains("\"2\""),
        "Prometheus's value of group_sessions: {sessions}"
    );
    // Histograms as Prometheus reads them: a quantile over the buckets is a number.
    let quantile = "/api/v1/query?query=histogram_quantile(0.99,group_hook_seconds_bucket%7Bhook%3D%22before_join%22%7D)";
    let (status, body) = get(web, quantile).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"resultType\":\"vector\"") && body.contains("\"hook\":\"before_join\""),
        "{body}"
    );
}

/// What the node hands a writer thread counts in `group_buffered_bytes` until it is written, and
/// nothing after: the node charges a fan-out to the server once, the writer thread moves each
/// member's share to the member's connection as it takes it, and gives back what it wrote. A leak
/// shows as bytes left over; a double give-back as a count wrapped below zero (about 1.8e19). The idle count is not 0: each connection's read buffer counts too, the
/// same for each; it is read with the sender alone, whose answers the node wrote through, uncharged
/// (read later, it could catch a join announcement still on its way to the writer thread).
#[tokio::test]
async fn buffered_bytes_come_back_after_a_fan_out_through_a_writer_thread() {
    let server = start(ServerBuilder::new(ServerConfig {
        writer_threads: Some(1),
        ..with_metrics()
    }))
    .await;
    let metrics = server.metrics_addr().unwrap();
    let mut sender = user(&server, Transport::Tcp, "sender").await;
    let group = bounded("create", sender.create(kept_group()))
        .await
        .unwrap();
    let (_, body) = get(metrics, "/metrics").await;
    let one_connection = sample(&body, "group_buffered_bytes");
    assert!(one_connection > 0.0, "a read buffer: {one_connection}");
    // More members than a quiet turn writes through itself: the fan-outs go to the writer thread.
    let mut members = Vec::new();
    for n in 0..100 {
        let mut member = user(&server, Transport::Tcp, &format!("member-{n}")).await;
        bounded("join", member.join(group, b"hi")).await.unwrap();
        members.push(member);
    }
    let idle = 101.0 * one_connection;
    const BROADCASTS: usize = 40;
    for n in 0..BROADCASTS {
        let message = Bytes::from(vec![u8::try_from(n).unwrap(); 200]);
        bounded("broadcast", sender.broadcast(group, message, true))
            .await
            .unwrap();
    }
    for member in &mut members {
        let mut received = 0;
        bounded("every broadcast reaches every member", async {
            while received < BROADCASTS {
                if let Push::Broadcast { entries, .. } = next_push(member).await {
                    received += entries.len();
                }
            }
        })
        .await;
    }
    bounded("group_buffered_bytes back to what it was", async {
        loop {
            let (_, body) = get(metrics, "/metrics").await;
            let buffered = sample(&body, "group_buffered_bytes");
            assert!(buffered < 1e9, "group_buffered_bytes wrapped: {buffered}");
            if buffered == idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Two nodes: a join through the node that does not own the group is a remote join, timed; the mesh
/// counts messages per peer.
#[tokio::test]
async fn remote_joins_and_mesh_peers_are_counted() {
    let owner = start(ServerBuilder::new(with_metrics())).await;
    let other = start(ServerBuilder::new(ServerConfig {
        mesh_seeds: vec![owner.mesh_addr().0],
        ..with_metrics()
    }))
    .await;
    let mut alice = user(&owner, Transport::Tcp, "alice").await;
    let mut bob = user(&other, Transport::Tcp, "bob").await;
    let params = kept_group();
    bounded("the nodes link", async {
        loop {
            let group = alice.create(params).await.unwrap();
            if bob.join(group, b"").await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (_, body) = get(other.metrics_addr().unwrap(), "/metrics").await;
    let count = body
        .lines()
        .find_map(|line| line.strip_prefix("group_remote_join_seconds_count "))
        .and_then(|value| value.parse::<u64>().ok());
    assert!(
        count.is_some_and(|n| n >= 1),
        "a remote join counted:\n{body}"
    );
    let peer = owner.mesh_addr();
    for series in [
        "group_mesh_messages_sent_total",
        "group_mesh_messages_received_total",
    ] {
        let prefix = format!("{series}{{peer=\"{peer}\"}} ");
        let value = body
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.parse::<u64>().ok());
        assert!(value.is_some_and(|n| n >= 1), "{prefix} in:\n{body}");
    }
}

#[tokio::test]
async fn a_node_whose_seeds_do_not_answer_is_alive_but_not_ready() {
    let unreachable: std::net::SocketAddrV4 = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = start(ServerBuilder::new(ServerConfig {
        mesh_seeds: vec![unreachable],
        ..with_metrics()
    }))
    .await;
    let metrics = server.metrics_addr().unwrap();
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    let (status, body) = get(metrics, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("not yet in the cluster"), "{body}");
}
