//! A WebSocket client that is not ours: Python's `websockets` package (installed by .ci/run) speaks the
//! protocol from docs/PROTOCOL.md against a real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{config, start};
use group_net::ServerBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_speaks_the_protocol() {
    let server = start(ServerBuilder::new(config())).await;
    let addr = server.ws_addr().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ws_client.py");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(addr.to_string())
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("python client timed out")
        .unwrap()
        .expect("python3 runs (.ci/run installs it with the websockets package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("python websockets client: ok"), "{stdout}");
}
