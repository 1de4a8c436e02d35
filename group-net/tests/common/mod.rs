//! Shared test helpers: servers on loopback port 0, clients, and a time bound on every await.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::time::Duration;

use group_net::client::{Client, Push};
use group_net::{Server, ServerBuilder, ServerConfig};
use tokio::net::TcpListener;

/// Every await in these tests is bounded: a hang fails the test instead of stalling CI.
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The default configuration; tests hand the server listeners bound to loopback port 0.
pub fn config() -> ServerConfig {
    ServerConfig {
        udp: None,
        mesh: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

/// Starts `builder` with TCP and WebSocket listeners on 127.0.0.1, port 0. Server logs go to the test's
/// output when `RUST_LOG` is set.
pub async fn start(builder: ServerBuilder) -> Server {
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    builder
        .tcp_listener(tcp)
        .ws_listener(ws)
        .udp_socket(udp)
        .seed(7)
        .start()
        .await
        .unwrap()
}

#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp,
    Ws,
    Udp,
}

/// A client connected over `transport` that has said Hello as `uid`.
pub async fn user(server: &Server, transport: Transport, uid: &str) -> Client {
    let mut client = connect(server, transport).await;
    bounded("hello", client.hello(uid, "")).await.unwrap();
    client
}

pub async fn connect(server: &Server, transport: Transport) -> Client {
    let connected = match transport {
        Transport::Tcp => Client::connect_tcp(server.tcp_addr().unwrap()).await,
        Transport::Ws => Client::connect_ws(server.ws_addr().unwrap()).await,
        Transport::Udp => Client::connect_udp(server.udp_addr().unwrap()).await,
    };
    connected.unwrap()
}

pub async fn next_push(client: &mut Client) -> Push {
    bounded("push", client.next_push())
        .await
        .expect("connection closed while waiting for a push")
}

/// A member on a raw TCP socket with a small receive buffer (4 KiB asked), joined to `group` as `uid`:
/// a client that reads only when the test says so, whose socket fills fast. Its Join's answer is not
/// read here.
pub async fn raw_slow_member(
    server: &Server,
    uid: &str,
    group: group_core::GroupId,
) -> tokio::net::TcpStream {
    raw_member(server, uid, group, Some(4096), b"").await
}

/// A member on a raw TCP socket, joined to `group` as `uid` (announced with `join_message` unless it is
/// empty), with the kernel's receive buffer unless `recv_buffer` asks for one. Its Join's answer is not
/// read here.
async fn raw_member(
    server: &Server,
    uid: &str,
    group: group_core::GroupId,
    recv_buffer: Option<u32>,
    join_message: &'static [u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut member = socket.connect(server.tcp_addr().unwrap()).await.unwrap();
    let mut frames = bytes::BytesMut::new();
    group_core::proto::Request::Hello {
        uid: uid.into(),
        token: bytes::Bytes::new(),
    }
    .encode(&mut frames);
    group_core::proto::Request::Join {
        group,
        message: bytes::Bytes::from_static(join_message),
    }
    .encode(&mut frames);
    member.write_all(&frames).await.unwrap();
    member
}

/// `count` raw TCP members of `group` (uids `{prefix}-0`, `{prefix}-1`, ...) that read and drop
/// everything as it comes, on sockets of the kernel's usual size (a reader's task starved for a moment
/// on a busy machine must not look like a slow consumer): the tasks reading them, to abort when done.
pub async fn draining_members(
    server: &Server,
    prefix: &str,
    group: group_core::GroupId,
    count: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::io::AsyncReadExt;
    let mut reading = Vec::new();
    for n in 0..count {
        let mut member = raw_member(server, &format!("{prefix}-{n}"), group, None, b"").await;
        reading.push(tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = member.read_to_end(&mut sink).await;
        }));
    }
    reading
}

/// What most tests create: a group kept while empty, its creator joined, a minute's TTL, no merging.
pub fn kept_group() -> group_core::proto::CreateRequest {
    group_core::proto::CreateRequest {
        allow_empty: true,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    }
}

/// A sender on a raw TCP socket that has written its Hello and a Join of `group` announced with "hi"
/// (the members hear `Joined`), for tests that write a burst of requests in one go: on a one-worker
/// runtime the server's reader hands a burst to the node before the node's turn.
pub async fn raw_burst_sender(
    server: &Server,
    uid: &str,
    group: group_core::GroupId,
) -> tokio::net::TcpStream {
    raw_member(server, uid, group, None, b"hi").await
}

/// `count` reliable broadcasts to `group`, numbered from 0 (big-endian u32), encoded back to back.
pub fn numbered_broadcasts(group: group_core::GroupId, count: u32) -> bytes::BytesMut {
    let mut burst = bytes::BytesMut::new();
    for n in 0..count {
        group_core::proto::Request::Broadcast {
            group,
            reliable: true,
            message: bytes::Bytes::from(n.to_be_bytes().to_vec()),
        }
        .encode(&mut burst);
    }
    burst
}

/// A UDP client's opening datagram (cookie 0, the KCP push of its hello), as our KCP writes it.
pub fn opening() -> Vec<u8> {
    use group_core::kcp::envelope::{CHANNEL_RELIABLE, CONV, KIND_HELLO, wrap};
    let mut kcp = group_core::kcp::Kcp::new(CONV, group_core::kcp::KcpConfig::default());
    kcp.send(&[KIND_HELLO]).unwrap();
    kcp.update(0);
    wrap(CHANNEL_RELIABLE, 0, &kcp.poll_transmit().unwrap())
}
