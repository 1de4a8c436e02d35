//! Mutual TLS on mesh links (`mesh.tls`), with a cluster CA made at test time: two nodes whose
//! certificates the CA signed form a cluster (a join crosses the encrypted link); a node whose
//! certificate another CA signed gets no link, though it knows the secret; and a node configured without
//! TLS cannot talk to TLS nodes either.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Transport, bounded, kept_group, user};
use group_core::proto::CreateRequest;
use group_net::config::MeshTlsConfig;
use group_net::{ServerBuilder, ServerConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const SECRET: &str = "the-cluster-secret-0123";

/// A CA in `dir`, able to sign node certificates.
struct Authority {
    dir: PathBuf,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), issuer.pem()).unwrap();
        Authority {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A node certificate naming `group-mesh`, signed by this CA.
    fn node(&self, node: &str) -> MeshTlsConfig {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["group-mesh".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{node}-cert.pem")),
            self.dir.join(format!("{node}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        MeshTlsConfig {
            cert: cert_path,
            key: key_path,
            ca: self.ca(),
            server_name: "group-mesh".into(),
        }
    }
}

fn node_config(tls: Option<MeshTlsConfig>, seed: Option<std::net::SocketAddrV4>) -> ServerConfig {
    let mut base = common::config();
    // A join that cannot reach the owner gives up sooner.
    base.limits.mesh_request_timeout = Duration::from_millis(300);
    ServerConfig {
        mesh_secret: Some(SECRET.into()),
        mesh_tls: tls,
        mesh_seeds: seed.into_iter().collect(),
        mesh_probe_interval: Duration::from_millis(100),
        ..base
    }
}

fn params() -> CreateRequest {
    kept_group()
}

#[tokio::test]
async fn nodes_of_one_ca_link_over_tls_and_others_do_not() {
    let scratch = tempfile::Builder::new()
        .prefix("group-mesh-tls-")
        .tempdir()
        .unwrap();
    let cluster = Authority::new(scratch.path(), "cluster");
    let rogue = Authority::new(scratch.path(), "rogue");

    let a = common::start(ServerBuilder::new(node_config(
        Some(cluster.node("a")),
        None,
    )))
    .await;
    let seed = Some(a.mesh_addr().0);
    let b = common::start(ServerBuilder::new(node_config(
        Some(cluster.node("b")),
        seed,
    )))
    .await;
    let c = common::start(ServerBuilder::new(node_config(Some(rogue.node("c")), seed))).await;
    let d = common::start(ServerBuilder::new(node_config(None, seed))).await;

    let mut on_a = user(&a, Transport::Tcp, "on-a").await;
    let group = bounded("create", on_a.create(params())).await.unwrap();
    let mut on_b = user(&b, Transport::Tcp, "on-b").await;
    bounded("join from b over the TLS link", async {
        while on_b.join(group, b"").await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // c (another CA) and d (no TLS) know the secret, but no link to a completes.
    for (node, name) in [(&c, "c"), (&d, "d")] {
        let mut client = user(node, Transport::Tcp, &format!("on-{name}")).await;
        let refused = bounded("join", client.join(group, b"")).await;
        assert!(refused.is_err(), "{name} reached the owner");
    }
}

#[test]
fn mesh_tls_settings_parse_and_name_what_is_missing() {
    let config = ServerConfig::from_json(
        r#"{"mesh": {"tls": {"cert": "n.pem", "key": "k.pem", "ca": "ca.pem"}}}"#,
    )
    .unwrap();
    let tls = config.mesh_tls.unwrap();
    assert_eq!(tls.server_name, "group-mesh");
    let error = ServerConfig::from_json(r#"{"mesh": {"tls": {"cert": "n.pem", "key": "k.pem"}}}"#)
        .unwrap_err();
    assert_eq!(error.key, "mesh.tls.ca");
}
