//! A partition between real nodes: three servers in this process, each behind a proxy that can cut it off
//! from the others (membership datagrams and mesh connections alike). While one node is cut off, the two
//! others keep their group going and the lone node takes the group over for its own member. When the
//! partition heals, the two owners settle on one, the copies agree, and all three members exchange
//! broadcasts again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use group_core::GroupId;
use group_core::proto::CreateRequest;
use group_net::client::{Client, Push};
use group_net::{Server, ServerBuilder, ServerConfig};
use group_tests::proxy::{Cuts, Proxy};

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits until `check` holds, looking every 20 ms (bounded by [`bounded`]).
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    bounded(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn node(cuts: &Arc<Cuts>, index: usize, seeds: &[SocketAddr]) -> Server {
    let proxy = Proxy::bind().await;
    let SocketAddr::V4(advertise) = proxy.addr else {
        unreachable!("the proxy binds IPv4 loopback")
    };
    let mut config = ServerConfig {
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        ws: None,
        udp: None,
        mesh: "127.0.0.1:0".parse().unwrap(),
        mesh_advertise: Some(advertise),
        mesh_seeds: seeds
            .iter()
            .map(|s| match s {
                SocketAddr::V4(v4) => *v4,
                SocketAddr::V6(_) => unreachable!(),
            })
            .collect(),
        mesh_probe_interval: Duration::from_millis(100),
        mesh_suspect_timeout: Duration::from_millis(600),
        ..ServerConfig::default()
    };
    config.group.send_interval = Duration::ZERO;
    config.limits.mesh_sync_interval = Duration::from_millis(300);
    config.limits.connection_ttl = Duration::from_secs(600);
    let server = ServerBuilder::new(config).start().await.unwrap();
    proxy.run(cuts.clone(), index, server.mesh_listen_addr().unwrap());
    server
}

async fn live(server: &Server) -> usize {
    server.handle().live_nodes().await.unwrap().len()
}

/// (owner, member uids) of a node's copy.
async fn view(server: &Server, group: GroupId) -> Option<(Option<String>, Vec<String>)> {
    let snapshot = server.handle().snapshot(group).await.unwrap()?;
    Some((
        snapshot.owner.map(|o| o.to_string()),
        snapshot.members.keys().cloned().collect(),
    ))
}

async fn user(server: &Server, uid: &str) -> Client {
    let mut client = Client::connect_tcp(server.tcp_addr().unwrap())
        .await
        .unwrap();
    bounded("hello", client.hello(uid, "")).await.unwrap();
    client
}

/// The next broadcast that is not a probe.
async fn next_broadcast(client: &mut Client) -> Bytes {
    loop {
        let push = bounded("a push", client.next_push())
            .await
            .expect("connection open");
        if let Push::Broadcast { mut entries, .. } = push {
            let message = entries.remove(0).message;
            if !message.starts_with(b"probe") {
                return message;
            }
        }
    }
}

/// Whether `client` hears a probe within 300 ms.
async fn hears_probe(client: &mut Client) -> bool {
    let heard = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match client.next_push().await {
                Some(Push::Broadcast { entries, .. })
                    if entries.iter().any(|e| e.message.starts_with(b"probe")) =>
                {
                    return;
                }
                Some(_) => {}
                None => panic!("connection closed"),
            }
        }
    })
    .await;
    heard.is_ok()
}

/// Broadcasts between nodes are not retransmitted: one in flight while a mesh link is being replaced can
/// be lost, like a datagram. After a heal, probe each direction until it carries, then measure.
async fn until_links_carry(clients: &mut [&mut Client], group: GroupId) {
    for i in 0..clients.len() {
        for j in (0..clients.len()).filter(|j| *j != i) {
            bounded("a probe gets through", async {
                loop {
                    let probe = Bytes::from_static(b"probe");
                    clients[i].broadcast(group, probe, true).await.unwrap();
                    if hears_probe(clients[j]).await {
                        return;
                    }
                }
            })
            .await;
        }
    }
}

async fn exchange(clients: &mut [&mut Client], group: GroupId, round: &str) {
    for i in 0..clients.len() {
        let message = Bytes::from(format!("{round}/{i}"));
        bounded(
            "broadcast",
            clients[i].broadcast(group, message.clone(), true),
        )
        .await
        .unwrap();
        for j in (0..clients.len()).filter(|j| *j != i) {
            assert_eq!(
                next_broadcast(clients[j]).await,
                message,
                "{round}: {j} from {i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_settles_on_one_owner() {
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let cuts = Arc::new(Cuts::default());
    let a = node(&cuts, 0, &[]).await;
    let seed = SocketAddr::V4(a.mesh_addr().0);
    let b = node(&cuts, 1, &[seed]).await;
    let c = node(&cuts, 2, &[seed]).await;
    for server in [&a, &b, &c] {
        until("the cluster forms", || async { live(server).await == 2 }).await;
    }

    let mut alice = user(&a, "alice").await;
    let mut bob = user(&b, "bob").await;
    let mut carol = user(&c, "carol").await;
    let params = CreateRequest {
        allow_empty: true,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = bounded("create", alice.create(params)).await.unwrap();
    assert_eq!(group.layout().unwrap().backups.iter().flatten().count(), 2);
    bounded("bob joins", bob.join(group, b"")).await.unwrap();
    bounded("carol joins", carol.join(group, b""))
        .await
        .unwrap();
    for server in [&a, &b, &c] {
        until("every copy has three members", || async {
            view(server, group).await.is_some_and(|(_, m)| m.len() == 3)
        })
        .await;
    }
    exchange(&mut [&mut alice, &mut bob, &mut carol], group, "before").await;

    // Cut c off from a and b.
    cuts.cut(0, 2);
    cuts.cut(1, 2);
    until("a and b see c gone", || async {
        live(&a).await == 1 && live(&b).await == 1
    })
    .await;
    until("c sees a and b gone", || async { live(&c).await == 0 }).await;
    until("a drops carol", || async {
        view(&a, group)
            .await
            .is_some_and(|(_, m)| m == ["alice", "bob"])
    })
    .await;
    exchange(&mut [&mut alice, &mut bob], group, "majority").await;
    let (c_owner, c_members) = view(&c, group).await.unwrap();
    assert_eq!(
        c_owner,
        Some(c.mesh_addr().to_string()),
        "c took the group over"
    );
    assert_eq!(c_members, ["carol"]);

    // Heal: one owner again, every copy the same, and everyone hears everyone.
    cuts.heal();
    for server in [&a, &b, &c] {
        until("the cluster re-forms", || async { live(server).await == 2 }).await;
    }
    until(
        "the copies agree on one owner and three members",
        || async {
            let views = [
                view(&a, group).await,
                view(&b, group).await,
                view(&c, group).await,
            ];
            views
                .iter()
                .all(|v| v.as_ref().is_some_and(|(_, m)| m.len() == 3))
                && views
                    .iter()
                    .all(|v| v.as_ref().map(|v| &v.0) == views[0].as_ref().map(|v| &v.0))
        },
    )
    .await;
    until_links_carry(&mut [&mut alice, &mut bob, &mut carol], group).await;
    exchange(&mut [&mut alice, &mut bob, &mut carol], group, "after").await;
    for server in [a, b, c] {
        server.shutdown(Duration::from_secs(2)).await;
    }
}
