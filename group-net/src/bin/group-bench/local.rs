//! The local nodes group-bench starts when no `--server` is given: `group-server` processes next to this
//! binary, on loopback port 0, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::{Args, Transport};

pub(crate) struct LocalServer(pub Child);

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A local node: the process, its address for the chosen transport, and its mesh address.
pub(crate) struct Started {
    pub server: LocalServer,
    pub addr: SocketAddr,
    pub mesh: SocketAddr,
}

/// Starts the group-server next to this binary with limits sized for the run, on loopback port 0, joined
/// to `seed` when given.
pub(crate) fn start_local_server(args: &Args, seed: Option<SocketAddr>) -> Result<Started, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let server = exe.with_file_name("group-server");
    let config = serde_json::json!({
        "group": { "sendInterval": 0 },
        "limits": {
            "maxConnections": args.clients + 16,
            "maxMembersPerGroup": args.clients + 1,
            "connectionTtl": 3600,
            // The publisher sends flat out, and each member may queue a full outboundQueue.
            "maxRequestsPerSecond": 10_000_000,
            "maxInboundBytesPerSecond": 1u64 << 40,
            "maxQueuedBytesPerConnection": 64 << 20,
            "maxBufferedBytes": 1u64 << 40,
        },
        "server": { "outboundQueue": 8192 },
        "mesh": { "probeInterval": 200, "suspectTimeout": 1000 },
    });
    let path = std::env::temp_dir().join(format!("group-bench-{}.json", std::process::id()));
    std::fs::write(&path, config.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut flags = vec![
        "--config".to_string(),
        path.to_string_lossy().into_owned(),
        "--tcp".into(),
        "127.0.0.1:0".into(),
        "--ws".into(),
        "127.0.0.1:0".into(),
        "--udp".into(),
        "127.0.0.1:0".into(),
        "--mesh".into(),
        "127.0.0.1:0".into(),
    ];
    if let Some(seed) = seed {
        flags.extend(["--seed".to_string(), seed.to_string()]);
    }
    let mut child = Command::new(&server)
        .args(&flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            format!(
                "cannot start {}: {e} (build it: cargo build --release -p group-net)",
                server.display()
            )
        })?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut addrs = std::collections::HashMap::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let mut words = line.split_whitespace().skip(1);
        if let (Some(t), Some(a)) = (
            words.next(),
            words.next().and_then(|a| a.parse::<SocketAddr>().ok()),
        ) {
            addrs.insert(t.to_string(), a);
        }
        if addrs.len() == 4 {
            break;
        }
    }
    let _ = std::fs::remove_file(&path);
    let key = match args.transport {
        Transport::Tcp => "tcp",
        Transport::Ws => "ws",
        Transport::Udp => "udp",
    };
    let addr = *addrs
        .get(key)
        .ok_or("the local server printed no listening line")?;
    let mesh = *addrs
        .get("mesh")
        .ok_or("the local server printed no mesh line")?;
    Ok(Started {
        server: LocalServer(child),
        addr,
        mesh,
    })
}

/// Starts `args.nodes` local nodes, each seeded with the first one's mesh address.
pub(crate) fn start_local_cluster(args: &Args) -> Result<Vec<Started>, String> {
    let first = start_local_server(args, None)?;
    let seed = first.mesh;
    let mut nodes = vec![first];
    for _ in 1..args.nodes.max(1) {
        nodes.push(start_local_server(args, Some(seed))?);
    }
    Ok(nodes)
}
