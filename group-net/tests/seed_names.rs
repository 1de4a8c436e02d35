//! A seed given as a name (`localhost:<port>`, standing in for a Kubernetes headless Service that
//! resolves to the pods' addresses) is resolved and joined.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::bounded;
use group_net::{ServerBuilder, ServerConfig};

#[tokio::test]
async fn a_node_finds_its_cluster_through_a_seed_name() {
    let fast = || ServerConfig {
        mesh_probe_interval: Duration::from_millis(100),
        ..common::config()
    };
    let a = common::start(ServerBuilder::new(fast())).await;
    let name = format!("localhost:{}", a.mesh_addr().0.port());
    let b = common::start(ServerBuilder::new(ServerConfig {
        mesh_seed_names: vec![name],
        ..fast()
    }))
    .await;
    bounded("b joins a through the name", async {
        while b.handle().live_nodes().await.unwrap() != vec![a.mesh_addr()] {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let parsed = ServerConfig::from_json(
        r#"{"mesh": {"seeds": ["10.0.0.1:8100", "group-mesh.default.svc.cluster.local:8100"]}}"#,
    )
    .unwrap();
    assert_eq!(parsed.mesh_seeds.len(), 1);
    assert_eq!(
        parsed.mesh_seed_names,
        vec!["group-mesh.default.svc.cluster.local:8100".to_string()]
    );
}
