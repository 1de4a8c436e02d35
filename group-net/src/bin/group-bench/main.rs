//! `group-bench`: a load generator. Opens N client connections, joins them to groups, drives broadcasts at
//! a target rate (or flat out, with a window of messages in flight) for a duration, and prints deliveries
//! per second, latency percentiles (send timestamps travel in the payload) and the server's resident memory
//! per connection. A progress line goes to stderr every second; a JSON summary goes to stdout at the end.
//!
//! Without `--server`, it starts a local `group-server` (the binary next to it) so that it can read the
//! server's memory from /proc; with `--nodes N`, a local cluster of N of them, the clients spread over the
//! nodes round-robin, and with `--kill-owner-after S` it SIGKILLs the node owning the groups mid-run and
//! reports how long until broadcasts flow again, until the survivors hear of the new owner, and until a
//! new user on each survivor joins the group (and how many joins heard "not found" meanwhile).
//! Everything stays on loopback.

mod local;
mod peer_run;
mod peer_wire;
mod peers;
mod raw_member;
mod stats;
mod writes;

use local::{LocalServer, start_local_cluster};
use raw_member::RawMember;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use group_core::GroupId;
use group_core::proto::{BroadcastView, CreateRequest, Status, VER_GROUP, cmd, parse_member_push};
use group_net::client::{Client, ClientReceiver, ClientSender};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

/// The server under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// A group server (started here unless --server is given).
    Group,
    /// A redis-server you started: channels with SUBSCRIBE / PUBLISH.
    Redis,
    /// A nats-server you started: subjects with SUB / PUB.
    Nats,
}

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
    /// The server to load: a group server, or a redis-server or nats-server for comparison (the same
    /// load shape: a group is a channel, its senders publish, its other members subscribe).
    #[arg(long, value_enum, default_value = "group")]
    target: Target,
    /// An existing server's address for the chosen transport (redis and nats: TCP). Default for the group
    /// target: start a local group-server.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// The existing server's process ID, to read its memory and CPU use from /proc.
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
    /// Local cluster: start this many group-server nodes joined into one cluster and spread the clients
    /// over them round-robin (ignored with --server). The groups are created on the first node.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// With --nodes > 1: SIGKILL the first node (the groups' owner) this many seconds into the run. Senders
    /// and the window's acknowledging receiver are then taken from the other nodes.
    #[arg(long)]
    kill_owner_after: Option<u64>,
    /// Count the server's write syscalls over the sending window with `perf stat` (needs perf and access
    /// to syscall tracepoints, and the server's process: --server-pid, or a local server; with --nodes,
    /// the first node, as for the server's CPU) and report deliveries per write.
    #[arg(long)]
    count_writes: bool,
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

/// Opens `count` connections with `open(i)`, `parallel` at a time, printing progress every second;
/// returns them in index order.
async fn connect_all<T, F, Fut>(count: usize, parallel: usize, open: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let mut connecting = JoinSet::new();
    for i in 0..count {
        let limit = limit.clone();
        let opening = open(i);
        connecting.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
            opening.await.map(|c| (i, c))
        });
    }
    let mut opened: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let (mut done, mut last_report) = (0, Instant::now());
    while let Some(joined) = connecting.join_next().await {
        let (i, connection) = joined.map_err(|e| e.to_string())??;
        if let Some(slot) = opened.get_mut(i) {
            *slot = Some(connection);
        }
        done += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("connected {done}/{count}");
            last_report = Instant::now();
        }
    }
    Ok(opened.into_iter().flatten().collect())
}

/// A connection of a group run: a client, or a member that only listens and reads its own socket.
enum Member {
    Client(Client),
    Raw(RawMember),
}

/// Shared counters of a run.
struct Counters {
    deliveries: AtomicU64,
    /// The highest latency (us) since the last progress line: a run's tail from one stall shows
    /// there as one bad second, a tail spread over the run as every second alike.
    worst_us: AtomicU64,
    sent: AtomicU64,
    disconnected: AtomicU64,
    /// When the owner's node was killed (ns since the run started; 0: not killed).
    killed_at_ns: AtomicU64,
    /// First delivery of a broadcast sent after the kill (ns since start; MAX: none yet).
    first_delivery_after_kill_ns: AtomicU64,
    /// First rejoin push (a 111 naming the receiver itself) after the kill.
    first_rejoin_ns: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            deliveries: AtomicU64::new(0),
            worst_us: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
            killed_at_ns: AtomicU64::new(0),
            first_delivery_after_kill_ns: AtomicU64::new(u64::MAX),
            first_rejoin_ns: AtomicU64::new(u64::MAX),
        }
    }
}

impl Counters {
    /// Milliseconds from the kill to `event`, if both happened.
    fn since_kill(&self, event: &AtomicU64) -> Option<f64> {
        let killed = self.killed_at_ns.load(Ordering::Relaxed);
        let at = event.load(Ordering::Relaxed);
        (killed != 0 && at != u64::MAX).then(|| at.saturating_sub(killed) as f64 / 1e6)
    }
}

/// After the owner's node was killed: new users of survivor `node` join `group`, one attempt every
/// 100 ms, until one succeeds (at most 20 s). Returns the node, the time from the kill to that success,
/// and how many attempts were answered 200 "group not found" before it (the group was alive throughout).
async fn join_probe(
    transport: Transport,
    addr: SocketAddr,
    group: GroupId,
    node: usize,
) -> (usize, Option<Duration>, u64) {
    let killed = Instant::now();
    let mut not_found = 0;
    for attempt in 0u32.. {
        if killed.elapsed() > Duration::from_secs(20) {
            break;
        }
        let started = Instant::now();
        if let Ok(mut client) = connect(transport, addr, format!("probe-{node}-{attempt}")).await {
            match client.join(group, b"").await {
                Ok(_) => return (node, Some(killed.elapsed()), not_found),
                Err(e) if e.code() == Some(group_core::proto::code::JOIN_GROUP_NOT_FOUND) => {
                    not_found += 1;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(started.elapsed())).await;
    }
    (node, None, not_found)
}

/// What one receiving client reports to.
struct Watch {
    /// Its own uid: a 111 push naming it is the rejoin push.
    uid: String,
    counters: Arc<Counters>,
    /// Set for the member that acknowledges flat-out windows.
    ack: Option<Arc<Ack>>,
}

/// Per group: the highest sequence its first receiver has seen, for flat-out windows.
struct Ack {
    seen: AtomicU64,
    notify: Notify,
}

impl Ack {
    fn new() -> Arc<Ack> {
        Arc::new(Ack {
            seen: AtomicU64::new(0),
            notify: Notify::new(),
        })
    }
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

impl Run {
    /// Opens the sending window now; it closes `args.duration` seconds later.
    fn begin(args: Arc<Args>, senders: usize) -> Arc<Run> {
        let start = Instant::now();
        Arc::new(Run {
            until: start + Duration::from_secs(args.duration),
            args,
            senders,
            start,
            counters: Arc::new(Counters::default()),
        })
    }

    /// Receivers keep reading this long after the window closes, for what is still in flight.
    fn drain_until(&self) -> Instant {
        self.until + Duration::from_secs(2)
    }
}

/// One group of the run: its ID and its flat-out window.
struct GroupPlan {
    id: GroupId,
    ack: Arc<Ack>,
}

/// Counts one delivered bench message: its latency sample, the delivery, the window's progress.
fn record(watch: &Watch, samples: &mut Vec<u32>, message: &[u8], now: u64, killed: u64) {
    let Some((sent, seq)) = stamp(message) else {
        return;
    };
    let counters = &watch.counters;
    let latency_us = now.saturating_sub(sent) / 1000;
    samples.push(u32::try_from(latency_us).unwrap_or(u32::MAX));
    counters.deliveries.fetch_add(1, Ordering::Relaxed);
    // Read first: the line is written only by a new worst, not by every delivery.
    if latency_us > counters.worst_us.load(Ordering::Relaxed) {
        counters.worst_us.fetch_max(latency_us, Ordering::Relaxed);
    }
    if killed != 0 && sent > killed {
        counters
            .first_delivery_after_kill_ns
            .fetch_min(now, Ordering::Relaxed);
    }
    if let Some(ack) = &watch.ack {
        ack.seen.fetch_max(seq, Ordering::Relaxed);
        ack.notify.notify_waiters();
    }
}

/// Counts the bench messages of a 113 push, read in place (as the redis and nats receivers read
/// theirs: the bench's own cost per delivery is then alike for the three servers); a payload that is
/// not a 113 push is passed over.
fn record_broadcast(watch: &Watch, samples: &mut Vec<u32>, payload: &[u8], now: u64, killed: u64) {
    let Ok(entries) = BroadcastView::parse(payload) else {
        return;
    };
    for entry in entries.map_while(Result::ok) {
        record(watch, samples, entry.message, now, killed);
    }
}

async fn receive(
    mut receiver: ClientReceiver,
    start: Instant,
    until: Instant,
    watch: Watch,
) -> Vec<u32> {
    let counters = &watch.counters;
    let mut samples = Vec::new();
    // One timer for the whole run: a fresh one per message, armed and then cancelled when the message
    // won, was about 4% of the bench, and the bench is what limits a flat-out run with 100 members.
    let over = tokio::time::sleep_until(until.into());
    tokio::pin!(over);
    loop {
        let frame = tokio::select! {
            frame = receiver.next_frame() => frame,
            () = &mut over => break,
        };
        let Some(frame) = frame else {
            counters.disconnected.fetch_add(1, Ordering::Relaxed);
            break;
        };
        if frame.status != Status::Push || frame.ver != VER_GROUP {
            continue;
        }
        let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match frame.cmd {
            // Read in place, as the redis and nats receivers read theirs: the bench's own cost per
            // delivery is then alike for the three servers.
            cmd::BROADCAST => {
                let killed = counters.killed_at_ns.load(Ordering::Relaxed);
                record_broadcast(&watch, &mut samples, &frame.payload, now, killed);
            }
            cmd::JOIN => {
                let rejoined = parse_member_push(&frame.payload).is_ok_and(|p| p.uid == watch.uid);
                if rejoined && counters.killed_at_ns.load(Ordering::Relaxed) != 0 {
                    counters.first_rejoin_ns.fetch_min(now, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
    samples
}

/// A sender's clock at a fixed rate; `None` flat out.
fn pacing(args: &Args) -> Option<tokio::time::Interval> {
    (args.rate > 0.0).then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate)))
}

/// Waits until a sender may send `seq`: its next tick at a fixed rate, or, flat out, room in its group's
/// window. False once the run is over.
async fn wait_turn(
    ticker: &mut Option<tokio::time::Interval>,
    run: &Run,
    ack: &Ack,
    seq: u64,
) -> bool {
    let step = run.senders as u64;
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => loop {
            let notified = ack.notify.notified();
            if seq < ack.seen.load(Ordering::Relaxed) + run.args.window * step {
                break;
            }
            if tokio::time::timeout(Duration::from_millis(100), notified)
                .await
                .is_err()
                && Instant::now() >= run.until
            {
                return false;
            }
        },
    }
    Instant::now() < run.until
}

async fn send(
    mut sender: ClientSender,
    run: Arc<Run>,
    plan: Arc<GroupPlan>,
    sender_index: u64,
) -> Option<ClientSender> {
    let (args, start, counters) = (&run.args, run.start, &run.counters);
    let (group, ack) = (plan.id, &plan.ack);
    let mut ticker = pacing(args);
    // Sequence numbers are per sender, interleaved so each group's receiver can track the window.
    let mut seq = sender_index;
    let step = run.senders as u64;
    while wait_turn(&mut ticker, &run, ack, seq).await {
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

/// What a run measured, for the summary.
struct Outcome {
    groups: usize,
    senders: usize,
    /// Receivers of each message (a group's members but its sender; a channel's subscribers).
    receivers_per_message: usize,
    samples: Vec<u32>,
    counters: Arc<Counters>,
    cpu: CpuUse,
}

/// CPU use over the sending window, in percent of one core, and the server's write syscalls
/// (`--count-writes`).
#[derive(Debug, Default, Clone, Copy)]
struct CpuUse {
    server: Option<f64>,
    client: Option<f64>,
    server_writes: Option<u64>,
}

/// CPU readings at the start of the sending window, and the write count running over it.
struct CpuWindow {
    pid: Option<u32>,
    started: Instant,
    server: Option<f64>,
    client: Option<f64>,
    writes: Option<writes::WriteCount>,
}

/// With `--count-writes`: the server's process, checked to be countable, before anything is connected.
fn countable_pid(args: &Args, pid: Option<u32>) -> Result<Option<u32>, String> {
    if !args.count_writes {
        return Ok(None);
    }
    let pid = pid.ok_or("--count-writes needs the server's process: --server-pid PID")?;
    // perf counts for a fifth of a second: keep that off the async workers.
    tokio::task::block_in_place(|| writes::check(pid))?;
    Ok(Some(pid))
}

impl CpuWindow {
    /// Opens the window; `count_writes` is the pid from [`countable_pid`].
    fn start(
        pid: Option<u32>,
        count_writes: Option<u32>,
        seconds: u64,
    ) -> Result<CpuWindow, String> {
        let writes = match count_writes {
            Some(pid) => Some(writes::WriteCount::start(pid, seconds)?),
            None => None,
        };
        Ok(CpuWindow {
            pid,
            started: Instant::now(),
            server: pid.and_then(|p| stats::cpu_seconds(Some(p))),
            client: stats::cpu_seconds(None),
            writes,
        })
    }

    async fn stop(self) -> Result<CpuUse, String> {
        let elapsed = self.started.elapsed();
        let server = stats::cpu_percent(
            self.server,
            self.pid.and_then(|p| stats::cpu_seconds(Some(p))),
            elapsed,
        );
        let client = stats::cpu_percent(self.client, stats::cpu_seconds(None), elapsed);
        let server_writes = match self.writes {
            Some(count) => Some(count.finish().await?),
            None => None,
        };
        Ok(CpuUse {
            server,
            client,
            server_writes,
        })
    }
}

/// Prints one progress line; returns the deliveries so far.
fn progress_line(counters: &Counters, start: Instant, previous: u64) -> u64 {
    let now = counters.deliveries.load(Ordering::Relaxed);
    let worst_ms = counters.worst_us.swap(0, Ordering::Relaxed) as f64 / 1000.0;
    eprintln!(
        "{:>4.0}s  sent {:>9}  delivered {:>11}  {:>10.0} deliveries/s  worst {worst_ms:>7.2} ms",
        start.elapsed().as_secs_f64(),
        counters.sent.load(Ordering::Relaxed),
        now,
        now.saturating_sub(previous) as f64
    );
    now
}

/// A progress line every second until `until`.
async fn progress(counters: &Counters, start: Instant, until: Instant) {
    let mut previous = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        previous = progress_line(counters, start, previous);
    }
}

/// Prints the summary: one JSON line on stdout (`extra` merged in) and a readable one on stderr.
fn report(args: &Args, target: &str, mut outcome: Outcome, extra: serde_json::Value) {
    let p = stats::percentiles(&mut outcome.samples);
    let counters = &outcome.counters;
    let deliveries = counters.deliveries.load(Ordering::Relaxed);
    let sent = counters.sent.load(Ordering::Relaxed);
    let elapsed = Duration::from_secs(args.duration);
    let per_second = stats::per_second(deliveries, elapsed);
    let per_core = outcome
        .cpu
        .server
        .filter(|cpu| *cpu > 0.0)
        .map(|cpu| per_second * 100.0 / cpu);
    let per_write = outcome
        .cpu
        .server_writes
        .filter(|writes| *writes > 0)
        .map(|writes| deliveries as f64 / writes as f64);
    let mut summary = serde_json::json!({
        "target": target,
        "mode": if args.rate > 0.0 { "rate" } else { "flat-out" },
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "clients": args.clients, "groups": outcome.groups, "senders_per_group": outcome.senders,
        "message_bytes": args.size.max(16), "interval_ms": args.interval_ms,
        "rate_per_sender": args.rate, "duration_s": args.duration,
        "broadcasts_sent": sent, "deliveries": deliveries,
        "expected_deliveries": sent * outcome.receivers_per_message as u64,
        "deliveries_per_second": per_second,
        "latency_us": { "p50": p.p50_us, "p99": p.p99_us, "p999": p.p999_us, "max": p.max_us },
        "disconnected": counters.disconnected.load(Ordering::Relaxed),
        "server_cpu_percent": outcome.cpu.server,
        "client_cpu_percent": outcome.cpu.client,
        "deliveries_per_server_core_second": per_core,
        "server_write_syscalls": outcome.cpu.server_writes,
        "deliveries_per_server_write": per_write,
    });
    if let (Some(summary), serde_json::Value::Object(extra)) = (summary.as_object_mut(), extra) {
        summary.extend(extra);
    }
    let cpu = |c: Option<f64>| c.map_or_else(|| "?".to_string(), |c| format!("{c:.0}%"));
    let writes = per_write.map_or_else(String::new, |w| {
        format!("; {w:.1} deliveries per server write")
    });
    eprintln!(
        "{target}: {per_second:.0} deliveries/s ({deliveries} of {} expected); latency p50 {} us, \
         p99 {} us, p999 {} us; server CPU {}, client CPU {}; {} deliveries per server core-second\
         {writes}",
        sent * outcome.receivers_per_message as u64,
        p.p50_us,
        p.p99_us,
        p.p999_us,
        cpu(outcome.cpu.server),
        cpu(outcome.cpu.client),
        per_core.map_or_else(|| "?".to_string(), |d| format!("{d:.0}")),
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{summary}");
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Arc::new(Args::parse());
    let outcome = match args.target {
        Target::Group => run(args).await,
        Target::Redis => peer_run::run(args.clone(), peers::Peer::Redis)
            .await
            .map(|outcome| report(&args, "redis", outcome, serde_json::json!({}))),
        Target::Nats => peer_run::run(args.clone(), peers::Peer::Nats)
            .await
            .map(|outcome| report(&args, "nats", outcome, serde_json::json!({}))),
    };
    match outcome {
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
    let kill_after = args.kill_owner_after.filter(|_| args.server.is_none());
    if kill_after.is_some() && (args.nodes < 2 || args.groups != 1) {
        return Err("--kill-owner-after needs --nodes 2 or more and --groups 1".into());
    }
    let (mut locals, addrs): (Vec<LocalServer>, Vec<SocketAddr>) = match args.server {
        Some(addr) => (Vec::new(), vec![addr]),
        None => {
            // Reads the children's stdout with blocking I/O: keep it off the async workers.
            let nodes = tokio::task::block_in_place(|| start_local_cluster(&args))?;
            nodes.into_iter().map(|n| (n.server, n.addr)).unzip()
        }
    };
    let node_count = addrs.len();
    // The first node owns the groups; in kill mode nothing measured may live there.
    let on_killed_node = |i: usize| kill_after.is_some() && i.is_multiple_of(node_count);
    let pid = args.server_pid.or(locals.first().map(|s| s.0.id()));
    let count_writes = countable_pid(&args, pid)?;
    tokio::time::sleep(Duration::from_millis(200)).await; // let the fresh server settle before the baseline
    let rss_before = pid.and_then(stats::rss_bytes);

    // The load's shape: member k of group g is client k * groups + g; the first `senders` of each
    // group send (the first of all creates it), and the others only listen.
    let groups = args.groups.clamp(1, args.clients / 2);
    let per_group = args.clients / groups;
    let senders = args.senders.clamp(1, per_group.saturating_sub(1).max(1));
    // Listening members read their own sockets over plain TCP (`raw_member`); a kill run watches
    // them rejoin through the client.
    let raw_tcp = matches!(args.transport, Transport::Tcp) && kill_after.is_none() && !args.idle;
    let listeners_from = if raw_tcp {
        groups * senders
    } else {
        usize::MAX
    };

    // Connect, with progress.
    let started = Instant::now();
    let transport = args.transport;
    let nodes = addrs.clone();
    let mut clients = connect_all(args.clients, args.connect_parallel, move |i| {
        let addr = nodes.get(i % node_count).copied();
        async move {
            let addr = addr.ok_or("no node")?;
            let uid = format!("bench-{i}");
            Ok(if i >= listeners_from {
                Member::Raw(RawMember::connect(addr, &uid).await?)
            } else {
                Member::Client(connect(transport, addr, uid).await?)
            })
        }
    })
    .await?;
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
    let mut ids: Vec<GroupId> = Vec::with_capacity(groups);
    // In a cluster, a group's backups are the nodes its creator sees alive: wait until it sees them all.
    let backups_wanted = node_count.saturating_sub(1).min(2);
    for (g, member) in clients.iter_mut().take(groups).enumerate() {
        let Member::Client(client) = member else {
            return Err("a group's creator is a client".into());
        };
        let params = CreateRequest {
            allow_empty: true,
            join: true,
            ttl_s: 60,
            interval_ms: args.interval_ms,
        };
        let formed_by = Instant::now() + Duration::from_secs(20);
        let id = loop {
            let id = client
                .create(params)
                .await
                .map_err(|e| format!("create group {g}: {e}"))?;
            let backups = id
                .layout()
                .map_or(0, |l| l.backups.iter().flatten().count());
            if backups >= backups_wanted || args.server.is_some() {
                break id;
            }
            if Instant::now() > formed_by {
                return Err(format!("the cluster did not form: {backups} backup(s)"));
            }
            let _ = client.leave(id, b"").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ids.push(id);
    }
    for (i, member) in clients.iter_mut().enumerate().skip(groups) {
        let group = *ids.get(i % groups).ok_or("no group")?;
        match member {
            Member::Client(client) => client
                .join(group, b"")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Member::Raw(raw) => raw.join(group).await,
        }
        .map_err(|e| format!("join: {e}"))?;
    }
    if node_count > 1 {
        // Joins reach the other nodes' copies one mesh hop after the owner records them.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "{groups} group(s) of ~{per_group} members, {senders} sender(s) each; sending for {}s",
        args.duration
    );

    // Run.
    let run = Run::begin(args.clone(), senders);
    let (start, until, drain_until) = (run.start, run.until, run.drain_until());
    let counters = run.counters.clone();
    let plans: Vec<Arc<GroupPlan>> = ids
        .iter()
        .map(|&id| {
            Arc::new(GroupPlan {
                id,
                ack: Ack::new(),
            })
        })
        .collect();
    let mut receivers = JoinSet::new();
    let mut senders_set = JoinSet::new();
    // Halves that do not send are kept until the end: dropping a TCP write half shuts the socket down.
    let mut quiet_halves = Vec::new();
    // Senders are the first members of each group (in kill mode, the first ones not on the owner's node);
    // the next such member acknowledges progress for flat-out windows.
    let mut chosen = vec![0usize; groups];
    let mut acking = vec![false; groups];
    for (i, member) in clients.into_iter().enumerate() {
        let g = i % groups;
        let plan = plans.get(g).ok_or("no group")?.clone();
        let counted = !on_killed_node(i);
        let sender_index = chosen.get(g).copied().unwrap_or(senders);
        let is_sender = counted && sender_index < senders;
        let is_ack = counted && !is_sender && !acking.get(g).copied().unwrap_or(true);
        if let (true, Some(c)) = (is_sender, chosen.get_mut(g)) {
            *c += 1;
        }
        if let (true, Some(a)) = (is_ack, acking.get_mut(g)) {
            *a = true;
        }
        let ack = is_ack.then(|| plan.ack.clone());
        let watch = Watch {
            uid: format!("bench-{i}"),
            counters: counters.clone(),
            ack,
        };
        let (sender, receiver) = match member {
            Member::Client(client) => client.into_split(),
            Member::Raw(_) if is_sender => return Err("a sender is a client".into()),
            Member::Raw(raw) => {
                receivers.spawn(raw_member::receive(raw, start, drain_until, watch));
                continue;
            }
        };
        receivers.spawn(receive(receiver, start, drain_until, watch));
        if is_sender {
            senders_set.spawn(send(sender, run.clone(), plan, sender_index as u64));
        } else {
            quiet_halves.push(sender);
        }
    }
    let mut previous = 0;
    let mut killed = false;
    let cpu = CpuWindow::start(pid, count_writes, args.duration)?;
    let mut join_probes = tokio::task::JoinSet::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let kill_due =
            kill_after.is_some_and(|after| start.elapsed() >= Duration::from_secs(after));
        if kill_due && !killed {
            if let Some(owner) = locals.first_mut() {
                let _ = owner.0.kill();
                let at = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                counters.killed_at_ns.store(at, Ordering::Relaxed);
                eprintln!("SIGKILL sent to the owner's node");
                let group = *ids.first().ok_or("no group")?;
                for (node, addr) in addrs.iter().enumerate().skip(1) {
                    join_probes.spawn(join_probe(args.transport, *addr, group, node));
                }
            }
            killed = true;
        }
        previous = progress_line(&counters, start, previous);
    }
    let cpu = cpu.stop().await?;
    while let Some(joined) = senders_set.join_next().await {
        quiet_halves.extend(joined.ok().flatten());
    }
    let mut first_joins = Vec::new();
    let mut not_found = 0u64;
    while let Some(probe) = join_probes.join_next().await {
        if let Ok((node, after, refused)) = probe {
            first_joins.push((node, after.map(|d| d.as_secs_f64() * 1e3)));
            not_found += refused;
        }
    }
    first_joins.sort_by_key(|(node, _)| *node);
    let first_join_ms: Vec<Option<f64>> = first_joins.into_iter().map(|(_, ms)| ms).collect();
    let mut samples = Vec::new();
    while let Some(joined) = receivers.join_next().await {
        samples.extend(joined.unwrap_or_default());
    }
    let extra = serde_json::json!({
        "server_bytes_per_connection": per_conn,
        "nodes": node_count,
        "owner_killed_at_s": kill_after,
        "first_delivery_after_kill_ms": counters.since_kill(&counters.first_delivery_after_kill_ns),
        "rejoin_push_after_kill_ms": counters.since_kill(&counters.first_rejoin_ns),
        "first_join_after_kill_ms_per_survivor": first_join_ms,
        "join_not_found_answers_after_kill": not_found,
    });
    let outcome = Outcome {
        groups,
        senders,
        receivers_per_message: per_group - 1,
        samples,
        counters,
        cpu,
    };
    report(&args, "group", outcome, extra);
    drop(quiet_halves);
    drop(locals);
    Ok(())
}
