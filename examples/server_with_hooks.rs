//! A group server with authentication and hooks, as game-backend code would start it.
//!
//! ```sh
//! cargo run --example server_with_hooks            # serves until Ctrl-C
//! cargo run --example client -- 127.0.0.1:7100     # in another terminal
//! ```
//! Clients must present a token signed with `DEMO_SECRET` (the client example mints one, as a game
//! backend would). A Before-join hook turns away "mallory", an After-create hook logs each new group,
//! the server's own command (ver 2, cmd 1) greets the caller, and every 5 s the server announces to
//! alice's groups through the server API. An optional argument stops the server after that many seconds.

use std::time::Duration;

use bytes::Bytes;
use group_net::{Command, Rejection, ServerBuilder, ServerConfig};

/// The secret the example server and the example client share. A real deployment reads it from its
/// configuration (`server.authSecret`) and never ships it to game clients.
pub const DEMO_SECRET: &str = "demo-secret-change-me";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run_for = std::env::args()
        .nth(1)
        .map(|s| s.parse::<u64>())
        .transpose()?;
    let config = ServerConfig {
        auth_secret: Some(DEMO_SECRET.into()),
        ..ServerConfig::default()
    };
    let server = ServerBuilder::new(config)
        .before(Command::Join, |ctx| async move {
            if &*ctx.uid == "mallory" {
                return Err(Rejection::new(1001, "mallory may not join groups"));
            }
            Ok(())
        })
        .after(Command::Create, |ctx| async move {
            if let Some(group) = ctx.group {
                println!("{} created {group}", ctx.uid);
            }
        })
        .on_command(2, 1, |ctx| async move {
            Ok(Bytes::from(format!("hello {}", ctx.uid)))
        })
        .start()
        .await?;
    let handle = server.handle();
    println!(
        "listening: tcp {:?}, ws {:?}, udp {:?}, mesh {}",
        server.tcp_addr(),
        server.ws_addr(),
        server.udp_addr(),
        server.mesh_addr()
    );
    let announcer = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            let Ok(Some(groups)) = handle.group_ids("alice".into()).await else {
                continue;
            };
            for group in groups {
                let note = Bytes::from_static(b"server says hello");
                let _ = handle.announce(group, 1, 113, note, true).await;
            }
        }
    });
    match run_for {
        Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
        None => tokio::signal::ctrl_c().await?,
    }
    announcer.abort();
    server.shutdown(Duration::from_secs(2)).await;
    println!("stopped");
    Ok(())
}
