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
use common::{Transport, bounded, config, start, user};
use group_core::proto::CreateRequest;
use group_net::{ServerBuilder, ServerConfig};
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

/// A Prometheus server, killed when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    let dir = std::env::temp_dir().join(format!("group-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
    (Prometheus(child), web)
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_series() {
    let server = start(ServerBuilder::new(with_metrics())).await;
    let metrics = server.metrics_addr().unwrap();
    let mut tcp = user(&server, Transport::Tcp, "on-tcp").await;
    let mut ws = user(&server, Transport::Ws, "on-ws").await;
    let params = CreateRequest {
        allow_empty: true,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
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

    let (status, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "group_connections_open{transport=\"tcp\"} 1",
        "group_connections_open{transport=\"ws\"} 1",
        "group_broadcasts_received_total 3",
        "group_sessions 2",
        "group_groups 1",
    ] {
        assert!(body.contains(line), "{line} in:\n{body}");
    }
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
