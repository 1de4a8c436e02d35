//! The mesh port is authenticated: a peer must prove it knows `mesh.secret` before any mesh message is
//! read, may not claim this node's own address or an IP other than its connection's, and a refused peer
//! leaves nothing behind (no link, no dialler). Nodes sharing the secret form a cluster as before; a node
//! with another secret gets no mesh link, and its membership (SWIM) datagrams are dropped. And a mesh bound beyond loopback refuses to start without one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{bounded, kept_group};
use group_net::{ServerBuilder, ServerConfig, StartError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "the-cluster-secret-0123";

fn config(secret: Option<&str>) -> ServerConfig {
    ServerConfig {
        mesh_secret: secret.map(str::to_string),
        ..common::config()
    }
}

/// A 27-byte mesh hello claiming `claimed`, as an attacker would send it.
fn hello(claimed: std::net::SocketAddrV4) -> Vec<u8> {
    let mut out = b"GRPM".to_vec();
    out.push(group_core::cluster::mesh::MESH_VERSION);
    out.extend_from_slice(&claimed.ip().octets());
    out.extend_from_slice(&claimed.port().to_be_bytes());
    out.extend_from_slice(&[9; 16]);
    out
}

#[tokio::test]
async fn a_peer_without_the_secret_is_refused_and_leaves_no_dialler_behind() {
    let server = common::start(ServerBuilder::new(config(Some(SECRET)))).await;
    // Where the attacker wants the node to dial: nobody may ever connect here.
    let bait = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let std::net::SocketAddr::V4(bait_addr) = bait.local_addr().unwrap() else {
        panic!()
    };
    let mut attacker = TcpStream::connect(server.mesh_addr().0).await.unwrap();
    attacker.write_all(&hello(bait_addr)).await.unwrap();
    let mut theirs = [0u8; 27];
    bounded("the node's hello", attacker.read_exact(&mut theirs))
        .await
        .unwrap();
    attacker.write_all(&[0u8; 32]).await.unwrap(); // a proof made without the secret
    let mut rest = Vec::new();
    let _ = bounded("closed", attacker.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "no proof back, no mesh frame: {rest:?}");
    // The node with the lower address dials at once, the other within a second: give it two.
    let dialled = tokio::time::timeout(Duration::from_secs(2), bait.accept()).await;
    assert!(dialled.is_err(), "the refused claim made the node dial it");
    assert!(server.handle().live_nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_peer_claiming_this_nodes_own_address_is_refused() {
    let server = common::start(ServerBuilder::new(config(None))).await;
    let mut attacker = TcpStream::connect(server.mesh_addr().0).await.unwrap();
    attacker
        .write_all(&hello(server.mesh_addr().0))
        .await
        .unwrap();
    let mut theirs = [0u8; 27];
    bounded("the node's hello", attacker.read_exact(&mut theirs))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = bounded("closed", attacker.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "closed before any proof: {rest:?}");
}

#[tokio::test]
async fn nodes_sharing_the_secret_link_and_a_node_with_another_neither_links_nor_counts_as_a_member()
 {
    let a = common::start(ServerBuilder::new(config(Some(SECRET)))).await;
    let seeded = |secret: &str| ServerConfig {
        mesh_seeds: vec![a.mesh_addr().0],
        mesh_probe_interval: Duration::from_millis(100),
        ..config(Some(secret))
    };
    let b = common::start(ServerBuilder::new(seeded(SECRET))).await;
    let c = common::start(ServerBuilder::new(seeded("another-secret-456789"))).await;
    // A mesh link carries the digests and states of groups; a group created on a and joined from b
    // needs one. From c, the join's request never gets through.
    let mut on_a = common::user(&a, common::Transport::Tcp, "on-a").await;
    let params = kept_group();
    let group = bounded("create", on_a.create(params)).await.unwrap();
    let mut on_b = common::user(&b, common::Transport::Tcp, "on-b").await;
    bounded("join from b", async {
        while on_b.join(group, b"").await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut on_c = common::user(&c, common::Transport::Tcp, "on-c").await;
    let refused = bounded("join from c", on_c.join(group, b"")).await;
    assert!(
        refused.is_err(),
        "a node without the secret reached the owner"
    );
    // Nor does c take part in failure detection: its membership datagrams carry the wrong MAC, so a
    // never counts it as a node, and it hears of nobody. (c announces itself to its seed every second.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let on_a = a.handle().live_nodes().await.unwrap();
    assert_eq!(on_a, vec![b.mesh_addr()], "a's view of the cluster");
    assert!(c.handle().live_nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_mesh_beyond_loopback_without_a_secret_does_not_start() {
    let config = ServerConfig {
        mesh: "0.0.0.0:0".parse().unwrap(),
        mesh_advertise: Some("127.0.0.1:1".parse().unwrap()),
        ..config(None)
    };
    let Err(StartError::Config(e)) = ServerBuilder::new(config).start().await else {
        panic!("started without mesh.secret")
    };
    assert_eq!(e.key, "mesh.secret");
}
