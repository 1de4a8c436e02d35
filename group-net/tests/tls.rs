//! TLS on the TCP and WebSocket listeners, with certificates made at test time (rcgen): a TLS client
//! and a wss client share a group; a client that does not trust the certificate, or speaks plain TCP to
//! a TLS port, gets nowhere; `reload_tls` swaps the certificate for new connections; and
//! `ws.allowedOrigins` refuses other origins with 403; a sender's pipelined broadcasts reach TLS and wss
//! members in order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::{bounded, config, kept_group, next_push, start};
use group_net::client::{Client, ClientOptions, ClientTls, Push};
use group_net::{ServerBuilder, ServerConfig};

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files under a fresh directory.
struct Certificate {
    cert: PathBuf,
    key: PathBuf,
}

fn certificate(dir: &Path, name: &str) -> Certificate {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    Certificate { cert, key }
}

/// A directory for one test's certificates and keys, removed when the test ends, passed or not.
fn scratch(test: &str) -> tempfile::TempDir {
    let prefix = format!("group-tls-{test}-");
    tempfile::Builder::new().prefix(&prefix).tempdir().unwrap()
}

fn with_tls(cert: &Certificate) -> ServerConfig {
    ServerConfig {
        tls_cert: Some(cert.cert.clone()),
        tls_key: Some(cert.key.clone()),
        ..config()
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn a_tls_client_and_a_wss_client_share_a_group() {
    let scratch = scratch("share");
    let dir = scratch.path();
    let cert = certificate(dir, "server");
    let server = start(ServerBuilder::new(with_tls(&cert))).await;
    assert!(server.tls());
    let trust = ClientTls::with_ca_file("localhost", &cert.cert).unwrap();

    let mut tcp = bounded(
        "tls",
        Client::connect_tls(server.tcp_addr().unwrap(), &trust, options()),
    )
    .await
    .unwrap();
    bounded("hello", tcp.hello("over-tls", "")).await.unwrap();
    let by_ip = ClientTls::with_ca_file("127.0.0.1", &cert.cert).unwrap();
    let mut ws = bounded(
        "wss",
        Client::connect_wss(server.ws_addr().unwrap(), &by_ip, options()),
    )
    .await
    .unwrap();
    bounded("hello", ws.hello("over-wss", "")).await.unwrap();

    let params = kept_group();
    let group = bounded("create", tcp.create(params)).await.unwrap();
    bounded("join", ws.join(group, b"here")).await.unwrap();
    let Push::Joined { uid, .. } = next_push(&mut tcp).await else {
        panic!("the join push")
    };
    assert_eq!(uid, "over-wss");
    bounded(
        "broadcast",
        tcp.broadcast(group, Bytes::from_static(b"sealed"), true),
    )
    .await
    .unwrap();
    let Push::Broadcast { entries, .. } = next_push(&mut ws).await else {
        panic!("the broadcast")
    };
    assert_eq!(entries[0].message, &b"sealed"[..]);
}

#[tokio::test]
async fn untrusted_certificates_and_plain_clients_get_nowhere() {
    let scratch = scratch("untrusted");
    let dir = scratch.path();
    let cert = certificate(dir, "server");
    let stranger = certificate(dir, "stranger");
    let server = start(ServerBuilder::new(with_tls(&cert))).await;
    let wrong_ca = ClientTls::with_ca_file("localhost", &stranger.cert).unwrap();
    let refused = Client::connect_tls(server.tcp_addr().unwrap(), &wrong_ca, options()).await;
    assert!(refused.is_err(), "a certificate from an untrusted CA");
    let wrong_name = ClientTls::with_ca_file("elsewhere.example", &cert.cert).unwrap();
    let refused = Client::connect_wss(server.ws_addr().unwrap(), &wrong_name, options()).await;
    assert!(refused.is_err(), "a certificate for another name");
    // A plain client's Hello is not TLS: the server drops the connection without an answer.
    let mut plain = bounded("plain", Client::connect_tcp(server.tcp_addr().unwrap()))
        .await
        .unwrap();
    assert!(bounded("hello", plain.hello("plain", "")).await.is_err());
}

#[tokio::test]
async fn reloading_swaps_the_certificate_for_new_connections() {
    let scratch = scratch("reload");
    let dir = scratch.path();
    let first = certificate(dir, "first");
    let second = certificate(dir, "second");
    // The server reads its files from fixed paths; the test rewrites them, as an operator would.
    let live = Certificate {
        cert: dir.join("live-cert.pem"),
        key: dir.join("live-key.pem"),
    };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let server = start(ServerBuilder::new(with_tls(&live))).await;
    let trusts_first = ClientTls::with_ca_file("localhost", &first.cert).unwrap();
    let trusts_second = ClientTls::with_ca_file("localhost", &second.cert).unwrap();
    let addr = server.tcp_addr().unwrap();
    let mut open = Client::connect_tls(addr, &trusts_first, options())
        .await
        .unwrap();
    bounded("hello", open.hello("before", "")).await.unwrap();

    // A broken file is refused and the old certificate stays.
    std::fs::write(&live.cert, "not a certificate").unwrap();
    let error = server.reload_tls().unwrap_err().to_string();
    assert!(error.contains("live-cert.pem"), "{error}");
    assert!(
        Client::connect_tls(addr, &trusts_first, options())
            .await
            .is_ok()
    );

    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    assert!(server.reload_tls().unwrap());
    assert!(
        Client::connect_tls(addr, &trusts_first, options())
            .await
            .is_err()
    );
    let mut fresh = Client::connect_tls(addr, &trusts_second, options())
        .await
        .unwrap();
    bounded("hello", fresh.hello("after", "")).await.unwrap();
    // The connection made before the reload is still served.
    bounded("ping", open.ping(b"still here")).await.unwrap();
}

#[tokio::test]
async fn websocket_origins_outside_the_allow_list_are_refused_with_403() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = start(ServerBuilder::new(ServerConfig {
        ws_allowed_origins: Some(vec!["https://game.example".into()]),
        ..config()
    }))
    .await;
    let addr = server.ws_addr().unwrap();
    let handshake = |origin: Option<&'static str>| async move {
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_tungstenite::client_async(request, stream).await
    };
    assert!(handshake(Some("https://game.example")).await.is_ok());
    for origin in [Some("https://evil.example"), None] {
        match handshake(origin).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{origin:?}");
            }
            other => panic!("{origin:?}: {other:?}"),
        }
    }
}

/// A TLS sender's pipelined broadcasts reach a TLS member and a wss member whole and in order: the node's
/// runs give them a turn's frames one by one, and their writers hand those to rustls in one vectored
/// write, which packs them into records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_broadcasts_reach_tls_and_wss_members_in_order() {
    const SENT: u32 = 512;
    let scratch = scratch("order");
    let cert = certificate(scratch.path(), "server");
    let mut cfg = with_tls(&cert);
    cfg.limits.max_requests_per_second = 1_000_000;
    cfg.limits.max_inbound_bytes_per_second = 1 << 30;
    let server = start(ServerBuilder::new(cfg)).await;
    let trust = ClientTls::with_ca_file("localhost", &cert.cert).unwrap();
    let tcp = server.tcp_addr().unwrap();
    let mut sender = bounded("tls", Client::connect_tls(tcp, &trust, options()))
        .await
        .unwrap();
    bounded("hello", sender.hello("sender", "")).await.unwrap();
    let group = bounded("create", sender.create(kept_group()))
        .await
        .unwrap();
    let mut tls = bounded("tls", Client::connect_tls(tcp, &trust, options()))
        .await
        .unwrap();
    bounded("hello", tls.hello("tls-member", "")).await.unwrap();
    bounded("join", tls.join(group, b"hi")).await.unwrap();
    let ws = server.ws_addr().unwrap();
    let mut wss = bounded("wss", Client::connect_wss(ws, &trust, options()))
        .await
        .unwrap();
    bounded("hello", wss.hello("wss-member", "")).await.unwrap();
    bounded("join", wss.join(group, b"hi")).await.unwrap();
    // The wss member's join announcement is out to the TLS member before the broadcasts.
    while !matches!(next_push(&mut tls).await, Push::Joined { uid, .. } if uid == "wss-member") {}

    for n in 0..SENT {
        let message = Bytes::from(n.to_be_bytes().to_vec());
        bounded("broadcast", sender.broadcast(group, message, true))
            .await
            .unwrap();
    }
    for (name, member) in [("tls", &mut tls), ("wss", &mut wss)] {
        let mut expected = 0;
        while expected < SENT {
            let Push::Broadcast { entries, .. } = next_push(member).await else {
                continue;
            };
            for entry in entries {
                let n = u32::from_be_bytes(entry.message[..4].try_into().unwrap());
                assert_eq!(n, expected, "{name} member: out of order");
                expected += 1;
            }
        }
    }
}
