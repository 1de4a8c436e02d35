//! Three nodes in one process, joined through seeds over real loopback sockets (SWIM over UDP, mesh data
//! over TCP): a group spans the nodes, broadcasts reach every node, the owner leaves and its first backup
//! takes over, and the survivors keep talking.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::future::Future;
use std::net::SocketAddrV4;
use std::time::Duration;

use bytes::Bytes;
use common::{Transport, bounded, next_push, user};
use group_core::proto::CreateRequest;
use group_core::{GroupId, NodeAddr};
use group_net::client::{Client, Push};
use group_net::{Server, ServerBuilder, ServerConfig};

async fn node(seeds: &[NodeAddr]) -> Server {
    let mut config = ServerConfig {
        mesh_seeds: seeds.iter().map(|n| n.0).collect::<Vec<SocketAddrV4>>(),
        mesh_probe_interval: Duration::from_millis(100),
        mesh_suspect_timeout: Duration::from_millis(600),
        ..common::config()
    };
    config.group.send_interval = Duration::ZERO;
    let builder =
        ServerBuilder::new(config).rejoin_message(|_, _, _| Bytes::from_static(b"rejoin"));
    common::start(builder).await
}

/// Waits (at most 10 s) until `check` holds, looking every 20 ms.
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    bounded(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn members(server: &Server, group: GroupId, count: usize) -> bool {
    let snapshot = server.handle().snapshot(group).await.unwrap();
    snapshot.is_some_and(|s| s.members.len() == count)
}

async fn live_count(server: &Server) -> usize {
    server.handle().live_nodes().await.unwrap().len()
}

/// The next broadcast push, skipping member pushes; returns (sender, message) of its first entry.
async fn next_broadcast(client: &mut Client) -> (String, Bytes) {
    loop {
        if let Push::Broadcast { entries, .. } = next_push(client).await {
            let entry = entries.into_iter().next().unwrap();
            return (entry.uid, entry.message);
        }
    }
}

async fn exchange(clients: &mut [(&str, &mut Client)], group: GroupId, round: &str) {
    for i in 0..clients.len() {
        let message = format!("{round} from {}", clients[i].0);
        let payload = Bytes::from(message.clone());
        bounded("broadcast", clients[i].1.broadcast(group, payload, true))
            .await
            .unwrap();
        for j in 0..clients.len() {
            if i != j {
                let (from, got) = next_broadcast(clients[j].1).await;
                assert_eq!(from, clients[i].0, "{round}: {} got it", clients[j].0);
                assert_eq!(got, message.as_bytes(), "{round}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_spans_three_nodes_and_survives_its_owner() {
    let a = node(&[]).await;
    let b = node(&[a.mesh_addr()]).await;
    let c = node(&[a.mesh_addr()]).await;
    for server in [&a, &b, &c] {
        until("all three see each other", || async {
            live_count(server).await == 2
        })
        .await;
    }

    let mut alice = user(&a, Transport::Tcp, "alice").await;
    let mut bob = user(&b, Transport::Ws, "bob").await;
    let mut carol = user(&c, Transport::Tcp, "carol").await;
    let params = CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = bounded("create", alice.create(params)).await.unwrap();
    let layout = group.layout().unwrap();
    assert_eq!(layout.owner, a.mesh_addr());
    let backups: Vec<NodeAddr> = layout.backups.iter().flatten().copied().collect();
    assert_eq!(
        backups.len(),
        2,
        "a three-node cluster gives every group two backups"
    );

    bounded("bob joins", bob.join(group, b"hi from bob"))
        .await
        .unwrap();
    match next_push(&mut alice).await {
        Push::Joined { uid, message, .. } => {
            assert_eq!((uid.as_str(), &message[..]), ("bob", &b"hi from bob"[..]));
        }
        other => panic!("alice expected bob's join, got {other:?}"),
    }
    bounded("carol joins", carol.join(group, b""))
        .await
        .unwrap();
    // A join reaches the other nodes' copies one mesh hop after the owner records it; senders on those
    // nodes relay by their copy, so wait for every copy before expecting every broadcast everywhere.
    for server in [&a, &b, &c] {
        until("every copy has three members", || members(server, group, 3)).await;
    }
    let nodes = a.handle().member_mesh_nodes(group).await.unwrap().unwrap();
    assert_eq!(nodes.len(), 3, "members on every node: {nodes:?}");
    exchange(
        &mut [
            ("alice", &mut alice),
            ("bob", &mut bob),
            ("carol", &mut carol),
        ],
        group,
        "before",
    )
    .await;

    // The owner goes away; its first live backup takes over and the survivors are told.
    let successor = backups[0];
    a.shutdown(Duration::from_secs(2)).await;
    drop(alice);
    for client in [&mut bob, &mut carol] {
        loop {
            match next_push(client).await {
                Push::Joined { message, .. } if &message[..] == b"rejoin" => break,
                Push::Left { uid, .. } => assert_eq!(uid, "alice"),
                other => panic!("expected the rejoin push, got {other:?}"),
            }
        }
    }
    let (new_owner, other) = if b.mesh_addr() == successor {
        (&b, &c)
    } else {
        (&c, &b)
    };
    let snapshot = new_owner.handle().snapshot(group).await.unwrap().unwrap();
    assert_eq!(snapshot.owner, Some(successor));
    assert_eq!(snapshot.members.len(), 2, "{snapshot:?}");
    exchange(
        &mut [("bob", &mut bob), ("carol", &mut carol)],
        group,
        "after",
    )
    .await;

    // A newcomer joins through the group ID: its first address is gone, the next one answers.
    let mut dave = user(other, Transport::Tcp, "dave").await;
    bounded("dave joins", dave.join(group, b"")).await.unwrap();
    for server in [&b, &c] {
        until("every copy has dave", || members(server, group, 3)).await;
    }
    exchange(
        &mut [
            ("bob", &mut bob),
            ("carol", &mut carol),
            ("dave", &mut dave),
        ],
        group,
        "late",
    )
    .await;
    b.shutdown(Duration::from_secs(2)).await;
    c.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_mesh_peer_of_another_version_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = node(&[]).await;
    let mesh = server.mesh_listen_addr().unwrap();
    let mut peer = tokio::net::TcpStream::connect(mesh).await.unwrap();
    // Version 99, 127.0.0.1:8100, a 16-byte nonce.
    let mut hello = [0u8; 27];
    hello[..11].copy_from_slice(b"GRPM\x63\x7f\x00\x00\x01\x1f\xa4");
    peer.write_all(&hello).await.unwrap();
    bounded("the node's hello", peer.read_exact(&mut hello))
        .await
        .unwrap();
    assert_eq!(&hello[..4], b"GRPM");
    assert_eq!(
        hello[4],
        group_core::cluster::mesh::MESH_VERSION,
        "it says its own version"
    );
    let mut rest = Vec::new();
    let read = bounded("the node closes", peer.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "nothing follows the refusal: {read:?}"
    );
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hooks_of_a_remote_join_see_the_group() {
    let a = node(&[]).await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let config = ServerConfig {
        mesh_seeds: vec![a.mesh_addr().0],
        mesh_probe_interval: Duration::from_millis(100),
        mesh_suspect_timeout: Duration::from_millis(600),
        ..common::config()
    };
    let builder = ServerBuilder::new(config).after(group_net::Command::Join, move |ctx| {
        let _ = seen_tx.send(ctx.group);
        async {}
    });
    let b = common::start(builder).await;
    for server in [&a, &b] {
        until("the two nodes see each other", || async {
            live_count(server).await == 1
        })
        .await;
    }
    let mut alice = user(&a, Transport::Tcp, "alice").await;
    let params = CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = bounded("create", alice.create(params)).await.unwrap();
    assert_eq!(
        group.layout().unwrap().owner,
        a.mesh_addr(),
        "owned by the other node"
    );
    let mut bob = user(&b, Transport::Tcp, "bob").await;
    bounded("bob joins remotely", bob.join(group, b""))
        .await
        .unwrap();
    assert_eq!(
        bounded("the After hook", seen.recv()).await,
        Some(Some(group))
    );
    b.shutdown(Duration::from_secs(2)).await;
    a.shutdown(Duration::from_secs(2)).await;
}
