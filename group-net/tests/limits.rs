//! Byte and rate limits, each exceeded by a real client: a connection that lets more than
//! `maxQueuedBytesPerConnection` pile up is cut; when the server's buffers hold `maxBufferedBytes`, new
//! connections are refused, saying so; requests beyond `maxRequestsPerSecond` are refused with a code,
//! and a connection that keeps going is closed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Transport, bounded, config, kept_group, start, user};
use group_core::proto::{
    Request, ServerFrame, Status, cmd, code, decode_server_frame, parse_error_payload,
};
use group_net::ServerBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw TCP connection that has said Hello as `uid`.
async fn greeted(server: &group_net::Server, uid: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.tcp_addr().unwrap())
        .await
        .unwrap();
    let mut hello = BytesMut::new();
    Request::Hello {
        uid: uid.into(),
        token: Bytes::new(),
    }
    .encode(&mut hello);
    stream.write_all(&hello).await.unwrap();
    let frames = read_frames(&mut stream, 1).await;
    assert_eq!(frames[0].status, Status::Ok, "Hello answered");
    stream
}

/// Reads exactly `count` frames.
async fn read_frames(stream: &mut TcpStream, count: usize) -> Vec<ServerFrame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    bounded("frames", async {
        while frames.len() < count {
            while let Some(frame) = decode_server_frame(&mut buf, u32::MAX).unwrap() {
                frames.push(frame);
            }
            if frames.len() < count {
                assert_ne!(stream.read_buf(&mut buf).await.unwrap(), 0, "closed early");
            }
        }
    })
    .await;
    frames
}

/// Reads every frame until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> Vec<ServerFrame> {
    let mut bytes = Vec::new();
    let _ = bounded("the close", stream.read_to_end(&mut bytes)).await;
    let mut buf = BytesMut::from(&bytes[..]);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = decode_server_frame(&mut buf, u32::MAX) {
        frames.push(frame);
    }
    frames
}

fn pings(count: usize, size: usize) -> BytesMut {
    let mut out = BytesMut::new();
    for _ in 0..count {
        Request::Ping(Bytes::from(vec![7u8; size])).encode(&mut out);
    }
    out
}

#[tokio::test]
async fn a_connection_that_lets_too_many_bytes_pile_up_is_cut() {
    let mut cfg = config();
    cfg.limits.max_payload = 8192;
    cfg.limits.max_queued_bytes_per_connection = 64 * 1024;
    cfg.outbound_queue = 1 << 20; // so the frame bound never comes first
    cfg.limits.max_inbound_bytes_per_second = 1 << 30; // nor the read rate slows the flood down
    let server = start(ServerBuilder::new(cfg)).await;
    // Pings of 8 KiB, pipelined, answers never read: the socket buffers fill, then 64 KiB of answers.
    let mut flooder = greeted(&server, "flooder").await;
    let flood = pings(2000, 8000);
    let _ = bounded("the flood is written or refused", flooder.write_all(&flood)).await;
    bounded("the cut", async {
        while server.slow_consumers() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Others are untouched.
    let mut other = user(&server, Transport::Tcp, "other").await;
    bounded("a ping", other.ping(b"hi")).await.unwrap();
}

#[tokio::test]
async fn when_the_servers_buffers_are_spent_new_connections_are_refused_saying_why() {
    let mut cfg = config();
    cfg.limits.max_payload = 64 * 1024;
    cfg.limits.max_queued_bytes_per_connection = 128 * 1024;
    cfg.limits.max_buffered_bytes = 256 * 1024;
    let server = start(ServerBuilder::new(cfg)).await;
    // Each of these announces a 60 KiB frame and sends 1 byte of it: the server holds a buffer for it.
    let mut holders = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(server.tcp_addr().unwrap())
            .await
            .unwrap();
        let mut header = BytesMut::new();
        Request::Ping(Bytes::from(vec![0u8; 60 * 1024])).encode(&mut header);
        stream.write_all(&header[..9]).await.unwrap();
        holders.push(stream);
    }
    let refused = bounded("a refusal", async {
        loop {
            let mut late = TcpStream::connect(server.tcp_addr().unwrap())
                .await
                .unwrap();
            let mut told = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_millis(200), late.read_to_end(&mut told));
            if let Ok(Ok(_)) = read.await {
                break told;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut buf = BytesMut::from(&refused[..]);
    let notice = decode_server_frame(&mut buf, u32::MAX).unwrap().unwrap();
    assert_eq!((notice.ver, notice.cmd), (0, cmd::CLOSING));
    let error = parse_error_payload(&notice.payload).unwrap();
    assert_eq!(error.code, code::CLOSED_SERVER_FULL);
    assert!(
        error.message.contains("maxBufferedBytes"),
        "{}",
        error.message
    );
    assert!(server.refused_connections() >= 1);
    // When the holders go, their buffers are released and connections are welcome again.
    drop(holders);
    bounded("admitted again", async {
        loop {
            let client = group_net::client::Client::connect_tcp(server.tcp_addr().unwrap()).await;
            if let Ok(mut client) = client
                && client.hello("welcome", "").await.is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn requests_over_the_rate_are_refused_and_a_flood_is_closed() {
    let mut cfg = config();
    cfg.limits.max_requests_per_second = 20;
    let server = start(ServerBuilder::new(cfg)).await;
    let mut client = greeted(&server, "eager").await;
    // 19 more requests fit the second's burst (Hello took one); 10 beyond it are refused, not handled.
    client.write_all(&pings(29, 4)).await.unwrap();
    let frames = read_frames(&mut client, 29).await;
    let answered = frames.iter().filter(|f| f.status == Status::Ok).count();
    let limited: Vec<_> = frames
        .iter()
        .filter(|f| f.status == Status::Bad)
        .map(|f| parse_error_payload(&f.payload).unwrap().code)
        .collect();
    // The bucket refills at 20/s while the test runs: a slow machine may see one or two more answered.
    assert!((19..=22).contains(&answered), "{answered} answered");
    assert!(
        limited.iter().all(|c| *c == code::RATE_LIMITED),
        "{limited:?}"
    );
    assert_eq!(answered + limited.len(), 29);
    // Keeping on: more than a second's worth refused within a second closes the connection, saying why.
    let _ = client.write_all(&pings(40, 4)).await;
    let frames = read_to_close(&mut client).await;
    let last = frames.last().expect("frames before the close");
    assert_eq!((last.ver, last.cmd), (0, cmd::CLOSING));
    assert_eq!(
        parse_error_payload(&last.payload).unwrap().code,
        code::RATE_LIMITED
    );

    // A well-behaved user is unaffected, and can still create.
    let mut calm = user(&server, Transport::Tcp, "calm").await;
    let params = kept_group();
    bounded("create", calm.create(params)).await.unwrap();
}

/// Bytes beyond `maxInboundBytesPerSecond` are not refused: the server reads the connection more slowly,
/// so a client sending 2.5 seconds' worth gets its last answer no sooner than the rate allows (a lower
/// bound only: a slow machine takes longer, never shorter).
#[tokio::test]
async fn bytes_beyond_the_inbound_rate_are_read_more_slowly_not_refused() {
    let mut cfg = config();
    cfg.limits.max_payload = 4096;
    cfg.limits.max_inbound_bytes_per_second = 64 * 1024;
    let server = start(ServerBuilder::new(cfg)).await;
    let mut client = greeted(&server, "streamer").await;
    let started = std::time::Instant::now();
    // 40 Pings of 4 KiB: 160 KiB, of which the first second's 64 KiB go at once.
    client.write_all(&pings(40, 4000)).await.unwrap();
    let frames = read_frames(&mut client, 40).await;
    assert!(
        frames.iter().all(|f| f.status == Status::Ok),
        "none refused"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "160 KiB at 64 KiB/s after a 64 KiB burst took only {took:?}"
    );
}

/// A client says Hello first. Before it, a connection may send 16 other frames (each refused with 3
/// NOT_GREETED, and it may still say Hello); the 17th closes it with closing notice 3.
#[tokio::test]
async fn frames_before_hello_are_bounded() {
    let server = start(ServerBuilder::new(config())).await;
    let addr = server.tcp_addr().unwrap();

    let mut patient = TcpStream::connect(addr).await.unwrap();
    patient.write_all(&pings(16, 4)).await.unwrap();
    for frame in read_frames(&mut patient, 16).await {
        let refused = parse_error_payload(&frame.payload).unwrap();
        assert_eq!(
            (frame.status, refused.code),
            (Status::Bad, code::NOT_GREETED)
        );
    }
    let mut hello = BytesMut::new();
    Request::Hello {
        uid: "patient".into(),
        token: Bytes::new(),
    }
    .encode(&mut hello);
    patient.write_all(&hello).await.unwrap();
    assert_eq!(read_frames(&mut patient, 1).await[0].status, Status::Ok);

    let mut eager = TcpStream::connect(addr).await.unwrap();
    eager.write_all(&pings(17, 4)).await.unwrap();
    let frames = read_to_close(&mut eager).await;
    assert_eq!(frames.len(), 17, "16 refusals and the closing notice");
    let last = frames.last().unwrap();
    assert_eq!((last.ver, last.cmd), (0, cmd::CLOSING));
    assert_eq!(
        parse_error_payload(&last.payload).unwrap().code,
        code::NOT_GREETED
    );
}

/// WebSocket pings count as frames before Hello too: 17 of them close the connection, far below
/// `maxRequestsPerSecond` (1000 by default), which alone would let two thousand through.
#[tokio::test]
async fn websocket_pings_before_hello_are_bounded() {
    let mut cfg = config();
    cfg.limits.hello_timeout = Duration::from_secs(600); // only the bound can close it in time
    let server = start(ServerBuilder::new(cfg)).await;
    let ws = server.ws_addr().unwrap();
    let mut stream = TcpStream::connect(ws).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = [0u8; 512];
    let read = bounded("the upgrade", stream.read(&mut response))
        .await
        .unwrap();
    assert!(response[..read].starts_with(b"HTTP/1.1 101"), "upgraded");
    // Masked pings with an empty payload.
    let pings = [0x89u8, 0x80, 1, 2, 3, 4].repeat(17);
    stream.write_all(&pings).await.unwrap();
    let mut rest = Vec::new();
    bounded("the close", stream.read_to_end(&mut rest))
        .await
        .unwrap();
}
