//! `group-server`: runs one node. With no arguments it listens on the defaults (README.md, docs/ARCHITECTURE.md).
//!
//! Prints `listening <tcp|udp|ws|metrics|mesh> <addr>` once per listener when it accepts connections (port 0 prints the real
//! port), logs with `tracing` (set `RUST_LOG`, default `info`), shuts down gracefully on SIGINT or
//! SIGTERM, and reads its TLS certificate and key again on SIGHUP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use group_net::{ServerBuilder, ServerConfig};

/// Runs one group server node.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// JSON configuration file (sections: group, limits, server, mesh). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A Diarkis Group configuration file as it is (remoteJoinTries, relayLimit, sendInterval,
    /// staticGroups at the top level): replaces the `group` section of --config.
    #[arg(long, value_name = "FILE")]
    group_config: Option<PathBuf>,
    /// TCP listen address, or "off".
    #[arg(long, value_name = "ADDR")]
    tcp: Option<String>,
    /// WebSocket listen address, or "off".
    #[arg(long, value_name = "ADDR")]
    ws: Option<String>,
    /// UDP listen address, or "off".
    #[arg(long, value_name = "ADDR")]
    udp: Option<String>,
    /// Mesh address (IPv4, TCP and UDP): the node's identity in the cluster and inside group IDs.
    #[arg(long, value_name = "ADDR")]
    mesh: Option<SocketAddr>,
    /// Mesh address of a node to join (repeatable). Without seeds the node is a cluster of one until
    /// another node names it as a seed.
    /// A seed may also be a name with port (`group-mesh.default.svc:8100`), resolved every 10 s.
    #[arg(long = "seed", value_name = "ADDR")]
    seeds: Vec<group_net::config::Seed>,
    /// The mesh address other nodes reach this one at, when --mesh is a wildcard (0.0.0.0): in
    /// Kubernetes, the pod's IP with the mesh port.
    #[arg(long, value_name = "ADDR", env = "GROUP_MESH_ADVERTISE")]
    advertise: Option<std::net::SocketAddrV4>,
    /// The cluster's shared secret (mesh.secret), from the environment rather than a file.
    #[arg(
        long,
        value_name = "SECRET",
        env = "GROUP_MESH_SECRET",
        hide_env_values = true
    )]
    mesh_secret: Option<String>,
    /// Where to serve /metrics (Prometheus), /healthz and /readyz over HTTP, or "off".
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// TLS certificate chain (PEM) for the TCP and WebSocket listeners; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Worker threads of the runtime (default: one per core this process may use, as its CPU
    /// affinity and cgroup quota allow). Fewer leave cores to other processes on a shared machine.
    #[arg(long, value_name = "N", env = "GROUP_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
}

fn listen_flag(
    name: &str,
    value: Option<String>,
    current: Option<SocketAddr>,
) -> Result<Option<SocketAddr>, String> {
    match value.as_deref() {
        None => Ok(current),
        Some("off") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("--{name}: {text:?} is not an address like 127.0.0.1:7100")),
    }
}

fn load(args: Args) -> Result<ServerConfig, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            ServerConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(path) = &args.group_config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        config
            .apply_group_file(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    config.tcp = listen_flag("tcp", args.tcp, config.tcp)?;
    config.ws = listen_flag("ws", args.ws, config.ws)?;
    config.udp = listen_flag("udp", args.udp, config.udp)?;
    config.metrics = listen_flag("metrics", args.metrics, config.metrics)?;
    if let Some(advertise) = args.advertise {
        config.mesh_advertise = Some(advertise);
    }
    if let Some(secret) = args.mesh_secret {
        if secret.len() < 16 {
            return Err("--mesh-secret (GROUP_MESH_SECRET) must be at least 16 characters".into());
        }
        config.mesh_secret = Some(secret);
    }
    if config.mesh.ip().is_unspecified() && config.mesh_advertise.is_none() {
        return Err(format!(
            "--mesh {} is a wildcard: give --advertise (or GROUP_MESH_ADVERTISE) the address other nodes reach this one at",
            config.mesh
        ));
    }
    if let Some(mesh) = args.mesh {
        if !mesh.is_ipv4() {
            return Err(format!("--mesh: {mesh} must be IPv4 (group IDs carry it)"));
        }
        config.mesh = mesh;
    }
    if !args.seeds.is_empty() {
        config.mesh_seeds.clear();
        config.mesh_seed_names.clear();
        for seed in args.seeds {
            match seed {
                group_net::config::Seed::Addr(addr) => config.mesh_seeds.push(addr),
                group_net::config::Seed::Name(name) => config.mesh_seed_names.push(name),
            }
        }
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    }
    Ok(config)
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let workers = args.workers;
    let config = match load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("group-server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = workers {
        runtime.worker_threads(usize::from(workers));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("group-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config));
    // Whatever server code still runs on the blocking pool (a discard message callback) gets a moment.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Runs the node until SIGINT or SIGTERM.
async fn serve(config: ServerConfig) -> ExitCode {
    let server = match ServerBuilder::new(config).start().await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("group-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    for (name, addr) in [
        ("tcp", server.tcp_addr()),
        ("udp", server.udp_addr()),
        ("ws", server.ws_addr()),
    ] {
        if let Some(addr) = addr {
            let _ = writeln!(stdout, "listening {name} {addr}");
        }
    }
    let _ = writeln!(stdout, "listening mesh {}", server.mesh_addr());
    if let Some(addr) = server.metrics_addr() {
        let _ = writeln!(stdout, "listening metrics {addr}");
    }
    let _ = stdout.flush();
    drop(stdout);
    match wait_for_signal(&server).await {
        Signal::Interrupt => {
            tracing::info!("interrupted: shutting down");
            server.shutdown(Duration::from_secs(5)).await;
        }
        Signal::Terminate => {
            tracing::info!("terminated: draining (groups move to their backups), then exiting");
            server.drain(Duration::from_secs(5)).await;
        }
    }
    ExitCode::SUCCESS
}

/// How the node was asked to stop.
enum Signal {
    /// SIGINT (Ctrl-C): stop now.
    Interrupt,
    /// SIGTERM: drain, then stop. Unix only: elsewhere Ctrl-C is the one way to stop a node.
    #[cfg_attr(not(unix), allow(dead_code))]
    Terminate,
}

/// Waits for SIGINT or SIGTERM; on SIGHUP reloads the TLS certificate meanwhile.
async fn wait_for_signal(server: &group_net::Server) -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Signal::Interrupt,
                    _ = term.recv() => return Signal::Terminate,
                    _ = hup.recv() => match server.reload_tls() {
                        Ok(true) => tracing::info!("SIGHUP: TLS certificate reloaded; new connections use it"),
                        Ok(false) => tracing::info!("SIGHUP: no TLS configured, nothing to reload"),
                        Err(e) => tracing::error!("SIGHUP: TLS reload failed, the old certificate stays: {e}"),
                    },
                }
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                Signal::Interrupt
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}
