//! A server stops everything it started: dropped without a shutdown, no task of it lives on (the
//! membership task used to, holding the mesh port and answering the cluster's probes).

mod common;

use std::time::Duration;

use common::{bounded, config, start};
use group_net::ServerBuilder;

#[tokio::test]
async fn a_dropped_server_releases_every_port_it_bound() {
    let server = start(ServerBuilder::new(config())).await;
    let mesh = server.mesh_listen_addr().unwrap();
    let tcp = server.tcp_addr().unwrap();
    assert!(
        tokio::net::UdpSocket::bind(mesh).await.is_err(),
        "membership holds it"
    );
    drop(server);
    // The tasks end on their own once cancelled; wait (bounded) until the sockets are closed.
    bounded("mesh UDP released", async {
        while tokio::net::UdpSocket::bind(mesh).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    bounded("mesh TCP released", async {
        while tokio::net::TcpListener::bind(mesh).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    bounded("client TCP released", async {
        while tokio::net::TcpListener::bind(tcp).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
