//! Two nodes in one process, on loopback: a group created on node 1 is joined from node 2, and a
//! broadcast crosses the mesh. Then node 1 shuts down and node 2 notices. Stops by itself.
//!
//! ```sh
//! cargo run --example two_node_cluster
//! ```
//! Across machines it is the same with `group-server --mesh ADDR --seed OTHER_ADDR` on each.

use std::time::Duration;

use bytes::Bytes;
use group_core::proto::CreateRequest;
use group_net::client::{Client, Push};
use group_net::{Server, ServerBuilder, ServerConfig};

/// A node with every listener on a free loopback port, knowing `seed` (another node's mesh address).
async fn node(seed: Option<std::net::SocketAddrV4>) -> Result<Server, Box<dyn std::error::Error>> {
    let config = ServerConfig {
        tcp: Some("127.0.0.1:0".parse()?),
        ws: None,
        udp: None,
        mesh: "127.0.0.1:0".parse()?,
        mesh_seeds: seed.into_iter().collect(),
        mesh_probe_interval: Duration::from_millis(200),
        mesh_suspect_timeout: Duration::from_millis(600),
        ..ServerConfig::default()
    };
    Ok(ServerBuilder::new(config).start().await?)
}

/// Waits until `server` counts `n` other nodes alive (bounded: 10 s).
async fn until_live(server: &Server, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let handle = server.handle();
    tokio::time::timeout(Duration::from_secs(10), async {
        while handle.live_nodes().await.map_or(0, |l| l.len()) != n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let one = node(None).await?;
    let seed = one.mesh_addr().0;
    let two = node(Some(seed)).await?;
    until_live(&one, 1).await?;
    until_live(&two, 1).await?;
    println!("cluster up: {} and {}", one.mesh_addr(), two.mesh_addr());

    let mut alice = Client::connect_tcp(one.tcp_addr().ok_or("no tcp")?).await?;
    let mut bob = Client::connect_tcp(two.tcp_addr().ok_or("no tcp")?).await?;
    alice.hello("alice", "").await?;
    bob.hello("bob", "").await?;
    let params = CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = alice.create(params).await?;
    bob.join(group, b"").await?; // node 2 asks node 1, the owner named in the ID
    println!("bob (node 2) joined {group}, owned by node 1");
    alice
        .broadcast(group, Bytes::from_static(b"across the mesh"), true)
        .await?;
    let received = tokio::time::timeout(Duration::from_secs(5), bob.next_push()).await?;
    if let Some(Push::Broadcast { entries, .. }) = received {
        for entry in entries {
            let text = String::from_utf8_lossy(&entry.message);
            println!("bob receives from {}: {text}", entry.uid);
        }
    }
    one.shutdown(Duration::from_secs(2)).await;
    until_live(&two, 0).await?;
    println!("node 1 left; node 2 counts no other node");
    two.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
