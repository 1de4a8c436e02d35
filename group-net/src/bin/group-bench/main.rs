//! `group-bench`: a load generator. Opens N client connections, joins them to groups, drives broadcasts at
//! a target rate (or flat out, with a window of messages in flight) for a duration, and prints deliveries
//! per second, latency percentiles (send timestamps travel in the payload) and the server's resident memory
//! per connection. A progress line goes to stderr every second; a JSON summary goes to stdout at the end.
//!
//! Without `--server`, it starts a local `group-server` (the binary next to it) so that it can read the
//! server's memory from /proc. Everything stays on loopback.

mod stats;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use group_core::GroupId;
use group_core::proto::CreateRequest;
use group_net::client::{Client, ClientReceiver, ClientSender, Push};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Transport {
    Tcp,
    Ws,
    Udp,
}

/// Load generator for group servers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// An existing server's address for the chosen transport. Default: start a local group-server.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// The existing server's process ID, to read its memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Transport of the client connections.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// Client connections.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Groups; clients are spread over them round-robin.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Senders per group (the first members).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Message size in bytes (at least 16: timestamp and sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Broadcasts per second per sender; 0 = flat out, limited by --window.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Flat out: broadcasts a sender may have in flight (not yet seen by its group's first receiver).
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Merge interval of the groups in ms (0: no merging; below 100 means 0).
    #[arg(long, default_value_t = 0)]
    interval_ms: u16,
    /// Only open the connections, say Hello, and measure the server's memory; no groups, no traffic.
    #[arg(long)]
    idle: bool,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    connect_parallel: usize,
}

struct LocalServer(Child);

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the group-server next to this binary with limits sized for the run, on loopback port 0.
fn start_local_server(args: &Args) -> Result<(LocalServer, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let server = exe.with_file_name("group-server");
    let config = serde_json::json!({
        "limits": {
            "maxConnections": args.clients + 16,
            "maxMembersPerGroup": args.clients + 1,
            "connectionTtl": 3600,
        },
        "server": { "outboundQueue": 8192 },
    });
    let path = std::env::temp_dir().join(format!("group-bench-{}.json", std::process::id()));
    std::fs::write(&path, config.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut child = Command::new(&server)
        .args([
            "--config",
            &path.to_string_lossy(),
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--mesh",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
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
    Ok((LocalServer(child), addr))
}

async fn connect(transport: Transport, addr: SocketAddr, uid: String) -> Result<Client, String> {
    let connected = match transport {
        Transport::Tcp => Client::connect_tcp(addr).await,
        Transport::Ws => Client::connect_ws(addr).await,
        Transport::Udp => Client::connect_udp(addr).await,
    };
    let mut client = connected.map_err(|e| format!("connect: {e}"))?;
    client
        .hello(&uid, "")
        .await
        .map_err(|e| format!("hello {uid}: {e}"))?;
    Ok(client)
}

/// Shared counters of a run.
#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    sent: AtomicU64,
    disconnected: AtomicU64,
}

/// Per group: the highest sequence its first receiver has seen, for flat-out windows.
struct Ack {
    seen: AtomicU64,
    notify: Notify,
}

fn message(start: Instant, seq: u64, size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size);
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    buf.put_u64(nanos);
    buf.put_u64(seq);
    buf.resize(size.max(16), 0);
    buf.freeze()
}

/// The send time (ns since the run started) and sequence number at the front of a bench message.
fn stamp(message: &[u8]) -> Option<(u64, u64)> {
    let header = message.first_chunk::<16>()?;
    let (sent, seq) = header.split_at(8);
    Some((
        u64::from_be_bytes(sent.try_into().ok()?),
        u64::from_be_bytes(seq.try_into().ok()?),
    ))
}

/// What every sender of a run shares.
struct Run {
    args: Arc<Args>,
    /// Senders per group, after clamping to the group size: the stride of sequence numbers.
    senders: usize,
    start: Instant,
    until: Instant,
    counters: Arc<Counters>,
}

/// One group of the run: its ID and its flat-out window.
struct GroupPlan {
    id: GroupId,
    ack: Arc<Ack>,
}

async fn receive(
    mut receiver: ClientReceiver,
    start: Instant,
    until: Instant,
    counters: Arc<Counters>,
    ack: Option<Arc<Ack>>,
) -> Vec<u32> {
    let mut samples = Vec::new();
    loop {
        let push = tokio::select! {
            push = receiver.next_push() => push,
            () = tokio::time::sleep_until(until.into()) => break,
        };
        let Some(push) = push else {
            counters.disconnected.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let Push::Broadcast { entries, .. } = push else {
            continue;
        };
        let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for entry in entries {
            let Some((sent, seq)) = stamp(&entry.message) else {
                continue;
            };
            samples.push(u32::try_from(now.saturating_sub(sent) / 1000).unwrap_or(u32::MAX));
            counters.deliveries.fetch_add(1, Ordering::Relaxed);
            if let Some(ack) = &ack {
                ack.seen.fetch_max(seq, Ordering::Relaxed);
                ack.notify.notify_waiters();
            }
        }
    }
    samples
}

async fn send(
    mut sender: ClientSender,
    run: Arc<Run>,
    plan: Arc<GroupPlan>,
    sender_index: u64,
) -> Option<ClientSender> {
    let (args, start, until, counters) = (&run.args, run.start, run.until, &run.counters);
    let (group, ack) = (plan.id, &plan.ack);
    let mut ticker =
        (args.rate > 0.0).then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate)));
    // Sequence numbers are per sender, interleaved so each group's receiver can track the window.
    let mut seq = sender_index;
    let step = run.senders as u64;
    while Instant::now() < until {
        match &mut ticker {
            Some(ticker) => {
                ticker.tick().await;
            }
            None => loop {
                let notified = ack.notify.notified();
                if seq < ack.seen.load(Ordering::Relaxed) + args.window * step {
                    break;
                }
                if tokio::time::timeout(Duration::from_millis(100), notified)
                    .await
                    .is_err()
                    && Instant::now() >= until
                {
                    return Some(sender);
                }
            },
        }
        if sender
            .broadcast(group, message(start, seq, args.size), true)
            .await
            .is_err()
        {
            counters.disconnected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        counters.sent.fetch_add(1, Ordering::Relaxed);
        seq += step;
    }
    Some(sender) // kept open until the receivers have drained
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Arc::new(Args::parse());
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("group-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Arc<Args>) -> Result<(), String> {
    if args.clients < 2 && !args.idle {
        return Err("--clients must be at least 2".into());
    }
    let (local, addr) = match args.server {
        Some(addr) => (None, addr),
        None => {
            // Reads the child's stdout with blocking I/O: keep it off the async workers.
            let (server, addr) = tokio::task::block_in_place(|| start_local_server(&args))?;
            (Some(server), addr)
        }
    };
    let pid = args.server_pid.or(local.as_ref().map(|s| s.0.id()));
    tokio::time::sleep(Duration::from_millis(200)).await; // let the fresh server settle before the baseline
    let rss_before = pid.and_then(stats::rss_bytes);

    // Connect, with progress.
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let mut connecting = JoinSet::new();
    for i in 0..args.clients {
        let limit = limit.clone();
        let transport = args.transport;
        connecting.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
            connect(transport, addr, format!("bench-{i}"))
                .await
                .map(|c| (i, c))
        });
    }
    let mut clients: Vec<Option<Client>> = (0..args.clients).map(|_| None).collect();
    let mut done = 0;
    let mut last_report = Instant::now();
    while let Some(joined) = connecting.join_next().await {
        let (i, client) = joined.map_err(|e| e.to_string())??;
        if let Some(slot) = clients.get_mut(i) {
            *slot = Some(client);
        }
        done += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("connected {done}/{}", args.clients);
            last_report = Instant::now();
        }
    }
    let mut clients: Vec<Client> = clients.into_iter().flatten().collect();
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = pid.and_then(stats::rss_bytes);
    let per_conn = match (rss_before, rss_connected) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) / args.clients.max(1) as u64),
        _ => None,
    };
    eprintln!(
        "{} connections in {connect_s:.1}s; server memory per connection: {per_conn:?} bytes",
        clients.len()
    );
    if args.idle {
        let summary = serde_json::json!({
            "mode": "idle", "transport": format!("{:?}", args.transport).to_lowercase(),
            "clients": clients.len(), "connect_seconds": connect_s,
            "server_rss_before": rss_before, "server_rss_connected": rss_connected,
            "server_bytes_per_connection": per_conn,
        });
        println!("{summary}");
        return Ok(());
    }

    // Groups: the first client of each group creates it, the rest join.
    let groups = args.groups.clamp(1, args.clients / 2);
    let mut ids: Vec<GroupId> = Vec::with_capacity(groups);
    for (g, client) in clients.iter_mut().take(groups).enumerate() {
        let params = CreateRequest {
            allow_empty: true,
            join: true,
            ttl_s: 60,
            interval_ms: args.interval_ms,
        };
        ids.push(
            client
                .create(params)
                .await
                .map_err(|e| format!("create group {g}: {e}"))?,
        );
    }
    for (i, client) in clients.iter_mut().enumerate().skip(groups) {
        let group = *ids.get(i % groups).ok_or("no group")?;
        client
            .join(group, b"")
            .await
            .map_err(|e| format!("join: {e}"))?;
    }
    let per_group = args.clients / groups;
    let senders = args.senders.clamp(1, per_group.saturating_sub(1).max(1));
    eprintln!(
        "{groups} group(s) of ~{per_group} members, {senders} sender(s) each; sending for {}s",
        args.duration
    );

    // Run.
    let start = Instant::now();
    let until = start + Duration::from_secs(args.duration);
    let drain_until = until + Duration::from_secs(2);
    let counters = Arc::new(Counters::default());
    let plans: Vec<Arc<GroupPlan>> = ids
        .iter()
        .map(|&id| {
            let ack = Arc::new(Ack {
                seen: AtomicU64::new(0),
                notify: Notify::new(),
            });
            Arc::new(GroupPlan { id, ack })
        })
        .collect();
    let run = Arc::new(Run {
        args: args.clone(),
        senders,
        start,
        until,
        counters: counters.clone(),
    });
    let mut receivers = JoinSet::new();
    let mut senders_set = JoinSet::new();
    // Halves that do not send are kept until the end: dropping a TCP write half shuts the socket down.
    let mut quiet_halves = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let plan = plans.get(i % groups).ok_or("no group")?.clone();
        let rank = i / groups; // 0 = creator
        let (sender, receiver) = client.into_split();
        // The first member that is not a sender acknowledges progress for flat-out windows.
        let ack = (rank == senders).then(|| plan.ack.clone());
        receivers.spawn(receive(receiver, start, drain_until, counters.clone(), ack));
        if rank < senders {
            senders_set.spawn(send(sender, run.clone(), plan, rank as u64));
        } else {
            quiet_halves.push(sender);
        }
    }
    let mut previous = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counters.deliveries.load(Ordering::Relaxed);
        eprintln!(
            "{:>4.0}s  sent {:>9}  delivered {:>11}  {:>10.0} deliveries/s",
            start.elapsed().as_secs_f64(),
            counters.sent.load(Ordering::Relaxed),
            now,
            (now - previous) as f64
        );
        previous = now;
    }
    while let Some(joined) = senders_set.join_next().await {
        quiet_halves.extend(joined.ok().flatten());
    }
    let mut samples = Vec::new();
    while let Some(joined) = receivers.join_next().await {
        samples.extend(joined.unwrap_or_default());
    }
    let p = stats::percentiles(&mut samples);
    let deliveries = counters.deliveries.load(Ordering::Relaxed);
    let sent = counters.sent.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "mode": if args.rate > 0.0 { "rate" } else { "flat-out" },
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "clients": args.clients, "groups": groups, "senders_per_group": senders,
        "message_bytes": args.size.max(16), "interval_ms": args.interval_ms,
        "rate_per_sender": args.rate, "duration_s": args.duration,
        "broadcasts_sent": sent, "deliveries": deliveries,
        "expected_deliveries": sent * (per_group as u64 - 1),
        "deliveries_per_second": stats::per_second(deliveries, Duration::from_secs(args.duration)),
        "latency_us": { "p50": p.p50_us, "p99": p.p99_us, "p999": p.p999_us, "max": p.max_us },
        "disconnected": counters.disconnected.load(Ordering::Relaxed),
        "server_bytes_per_connection": per_conn,
    });
    drop(quiet_halves);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{summary}");
    drop(local);
    Ok(())
}
