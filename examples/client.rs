//! Two players through the Rust client: alice creates a group, bob joins it, they exchange a broadcast,
//! mallory is turned away by the server's hook, and alice calls the server's own command.
//!
//! ```sh
//! cargo run --example server_with_hooks   # in one terminal
//! cargo run --example client              # in another (or: cargo run --example client -- HOST:PORT)
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use group_core::proto::{CreateRequest, Request};
use group_net::auth::mint_token;
use group_net::client::{Client, Push};

/// The example server's secret. A game backend mints tokens like this and hands them to its clients.
const DEMO_SECRET: &str = "demo-secret-change-me";

async fn player(addr: SocketAddr, uid: &str) -> Result<Client, Box<dyn std::error::Error>> {
    let token = mint_token(DEMO_SECRET.as_bytes(), uid, Duration::from_secs(60));
    let mut client = Client::connect_tcp(addr).await?;
    client.hello(uid, &token).await?;
    Ok(client)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7100".into())
        .parse()?;
    let mut alice = player(addr, "alice").await?;
    let mut bob = player(addr, "bob").await?;
    let params = CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = alice.create(params).await?;
    println!("alice created {group}");
    bob.join(group, b"bob is here").await?;
    match alice.next_push().await {
        Some(Push::Joined { uid, message, .. }) => {
            println!(
                "alice sees {uid} join: {}",
                String::from_utf8_lossy(&message)
            )
        }
        other => println!("alice got {other:?}"),
    }
    bob.broadcast(group, Bytes::from_static(b"hi alice"), true)
        .await?;
    if let Some(Push::Broadcast { entries, .. }) = alice.next_push().await {
        for entry in entries {
            let text = String::from_utf8_lossy(&entry.message);
            println!("alice receives from {}: {text}", entry.uid);
        }
    }
    let mut mallory = player(addr, "mallory").await?;
    match mallory.join(group, b"").await {
        Err(e) => println!("mallory refused: {e}"),
        Ok(_) => println!("mallory joined (the server has no hook?)"),
    }
    let greeting = Request::Custom {
        ver: 2,
        cmd: 1,
        payload: Bytes::new(),
    };
    match alice.request(&greeting).await {
        Ok(answer) => println!(
            "the server's command says: {}",
            String::from_utf8_lossy(&answer)
        ),
        Err(e) => println!("the server's command failed: {e}"),
    }
    for client in [&mut alice, &mut bob, &mut mallory] {
        client.fin().await?;
    }
    Ok(())
}
