//! The metrics listener (`metrics.bind`, off by default): Prometheus's text format at `/metrics`,
//! `/healthz` (the process answers) and `/readyz` (listening, and in the cluster when it has seeds).
//!
//! A small HTTP/1.1 responder on tokio rather than a metrics crate: those install a process-wide
//! recorder, and a library hosted inside a game engine's process must not set process-wide state. The
//! numbers are read when scraped: the driver's counters, the byte budget, and one read of the node.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::budget::ServerBudget;
use crate::handle::ServerHandle;
use crate::hooks::HookTimings;
use crate::inbox::{PeerCounters, Stats};

/// Scrapes served at once; more wait for a turn in the kernel's backlog.
const MAX_CONCURRENT: usize = 16;
/// How long a scraper has to send its request line and headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request read: a scrape's headers are small.
const MAX_REQUEST: usize = 8 * 1024;

/// What the metrics listener reads.
pub(crate) struct MetricsSource {
    pub handle: ServerHandle,
    pub stats: Arc<Stats>,
    pub budget: Arc<ServerBudget>,
    pub hooks: Arc<HookTimings>,
    /// Whether the node was given seeds other than itself: then ready means "knows another node".
    pub clustered: bool,
}

/// Serves scrapes until `stop` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    source: Arc<MetricsSource>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &source)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, source: &MetricsSource) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 || request.len() + read > MAX_REQUEST {
            return Ok(());
        }
        request.extend_from_slice(chunk.get(..read).unwrap_or_default());
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next(), words.next());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            ("200 OK", "text/plain; version=0.0.4", render(source).await)
        }
        (Some(b"GET"), Some(b"/healthz")) => ("200 OK", "text/plain", "ok\n".to_string()),
        (Some(b"GET"), Some(b"/readyz")) => match readiness(source).await {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Ready: the node task answers, the node is not draining, and a node given seeds knows another node.
async fn readiness(source: &MetricsSource) -> Result<(), &'static str> {
    let gauges = source
        .handle
        .gauges()
        .await
        .map_err(|_| "the node is stopping")?;
    if gauges.offline {
        return Err("draining: its groups are moving to other nodes");
    }
    if source.clustered && gauges.live_nodes == 0 {
        return Err("not yet in the cluster: no other node is known");
    }
    Ok(())
}

/// The metrics in Prometheus's text exposition format.
async fn render(source: &MetricsSource) -> String {
    let stats = &source.stats;
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
    let [tcp, ws, udp] = &stats.open;
    metric(
        "group_connections_open",
        "gauge",
        "Client connections open now, by transport.",
        &[
            ("{transport=\"tcp\"}", load(tcp)),
            ("{transport=\"ws\"}", load(ws)),
            ("{transport=\"udp\"}", load(udp)),
        ],
    );
    let counters: [(&str, &str, f64); 11] = [
        (
            "group_connections_accepted_total",
            "Connections and UDP sessions accepted.",
            load(&stats.accepted),
        ),
        (
            "group_connections_refused_total",
            "Connections refused at maxConnections or maxBufferedBytes.",
            load(&stats.refused),
        ),
        (
            "group_slow_consumers_total",
            "Connections cut for holding too much (frames or bytes) unsent.",
            load(&stats.slow_consumers),
        ),
        (
            "group_ticks_skipped_total",
            "Ticks skipped because the group's previous tick callback was still running.",
            load(&stats.ticks_skipped),
        ),
        (
            "group_messages_late_total",
            "Discard and rejoin messages sent empty because their callback missed its deadline.",
            load(&stats.messages_late),
        ),
        (
            "group_frames_sent_total",
            "Frames handed to connections (responses and pushes; a node turn's broadcasts to the same members are one frame for a plain TCP member).",
            load(&stats.frames_sent),
        ),
        (
            "group_frames_written_through_total",
            "Of those, frames the node task wrote to plain TCP sockets itself on a quiet turn.",
            load(&stats.frames_written_through),
        ),
        (
            "group_frames_flushed_total",
            "Of those, frames the writer threads' flushers wrote in one write per connection per round (server.writerThreads).",
            load(&stats.frames_flushed),
        ),
        (
            "group_node_busy_seconds_total",
            "Time the node task spent handling inputs and handing frames over (the hand-over of quiet turns, mostly writes through, aside); its rate is the share of one core it uses (its limit is 1).",
            load(&stats.node_busy_nanos) / 1e9,
        ),
        (
            "group_broadcasts_received_total",
            "Broadcast requests received from clients.",
            load(&stats.broadcasts),
        ),
        (
            "group_mesh_dropped_total",
            "Mesh messages dropped because a peer's queue was full.",
            load(&stats.mesh_dropped),
        ),
    ];
    for (name, help, value) in counters {
        metric(name, "counter", help, &[("", value)]);
    }
    metric(
        "group_buffered_bytes",
        "gauge",
        "Bytes buffered for connections (queued frames, inbound frames, read buffers).",
        &[("", source.budget.used() as f64)],
    );
    metric(
        "group_buffered_bytes_limit",
        "gauge",
        "limits.maxBufferedBytes.",
        &[("", source.budget.limit() as f64)],
    );
    if let Ok(gauges) = source.handle.gauges().await {
        let (census, counters) = (gauges.census, gauges.counters);
        let node: [(&str, &str, &str, f64); 12] = [
            (
                "group_sessions",
                "gauge",
                "Sessions (users who said Hello) on this node.",
                gauges.sessions as f64,
            ),
            (
                "group_node_connections",
                "gauge",
                "Connections the node tracks.",
                gauges.connections as f64,
            ),
            (
                "group_groups",
                "gauge",
                "Groups this node holds, owned and copies.",
                gauges.groups as f64,
            ),
            (
                "group_live_nodes",
                "gauge",
                "Other nodes this node knows to be alive.",
                gauges.live_nodes as f64,
            ),
            (
                "group_draining",
                "gauge",
                "1 while the node hands its groups over.",
                f64::from(u8::from(gauges.offline)),
            ),
            (
                "group_stale_relays_dropped_total",
                "counter",
                "Relayed broadcasts dropped as already seen.",
                counters.stale_relays_dropped as f64,
            ),
            (
                "group_groups_owned",
                "gauge",
                "Groups this node owns, static groups included.",
                census.owned as f64,
            ),
            (
                "group_group_copies",
                "gauge",
                "Copies of groups other nodes own.",
                census.copies as f64,
            ),
            (
                "group_members",
                "gauge",
                "Members of the groups this node owns (sum over nodes: every membership once).",
                census.members_of_owned as f64,
            ),
            (
                "group_deliveries_total",
                "counter",
                "Broadcast pushes handed to members here (a merged push counts once).",
                counters.deliveries as f64,
            ),
            (
                "group_merge_flushes_total",
                "counter",
                "Merged broadcast pushes sent by merging groups.",
                counters.merge_flushes as f64,
            ),
            (
                "group_failovers_total",
                "counter",
                "Groups this node took over because their owner died or drained.",
                counters.ownership_taken as f64,
            ),
        ];
        for (name, kind, help, value) in node {
            metric(name, kind, help, &[("", value)]);
        }
    }
    render_mesh_peers(stats, &mut out);
    render_histograms(source, &mut out);
    out
}

/// Per-peer mesh counters, labelled with the peer's mesh address.
fn render_mesh_peers(stats: &Stats, out: &mut String) {
    let peers: Vec<_> = stats
        .mesh_peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(addr, counters)| (addr.to_string(), counters.clone()))
        .collect();
    type Field = fn(&PeerCounters) -> &AtomicU64;
    let series: [(&str, &str, Field); 3] = [
        (
            "group_mesh_messages_sent_total",
            "Mesh messages queued for a peer's link.",
            |c| &c.sent,
        ),
        (
            "group_mesh_messages_received_total",
            "Mesh messages read from a peer.",
            |c| &c.received,
        ),
        (
            "group_mesh_peer_dropped_total",
            "Mesh messages for a peer dropped because its queue was full.",
            |c| &c.dropped,
        ),
    ];
    for (name, help, field) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (peer, counters) in &peers {
            let value = field(counters).load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {value}");
        }
    }
}

fn render_histograms(source: &MetricsSource, out: &mut String) {
    let name = "group_remote_join_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Joins that asked another node: from the request to the owner's answer.\n# TYPE {name} histogram"
    );
    source.stats.remote_join_seconds.render(name, "", out);
    let name = "group_fanout_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Broadcasts to more than 64 plain TCP members: from the node task handing one to a writer thread to the last of that thread's members written or queued to its writer.\n# TYPE {name} histogram"
    );
    source.stats.fan_out_seconds.render(name, "", out);
    let name = "group_hook_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Server code: each Before or After chain of one command, and each custom command handler.\n# TYPE {name} histogram"
    );
    for (hook, histogram) in source.hooks.each() {
        histogram.render(name, &format!("hook=\"{hook}\""), out);
    }
}
