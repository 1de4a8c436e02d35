//! Starting a server ([`ServerBuilder`]) and the running [`Server`]: what it started, and how it stops.
//!
//! Every task the server starts is tracked and listens to one cancellation token: [`Server::shutdown`]
//! stops them in order (listeners, then the mesh, saying goodbye to the cluster, then the node), and
//! dropping a [`Server`] stops them all at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use group_core::proto::VER_CUSTOM_MIN;
use group_core::{GroupId, Node, NodeAddr, NodeConfig, Sid};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::budget::ServerBudget;
use crate::config::ServerConfig;
use crate::conn::Shared;
use crate::handle::{INPUT_QUEUE, ServerHandle};
use crate::hooks::{AfterOutcome, Command, HookContext, Hooks, Rejection};
use crate::inbox::{EventFn, Stats};
use crate::listener::Listeners;
use crate::mesh::Links;
use crate::mesh::membership::MembershipConfig;
use crate::mesh::seal::Seal;
use crate::message_worker::under_deadline;
use crate::node_task::OutboundLimits;
use crate::node_task::{self, NodeTask};
use crate::writer_pool::{WriterPool, Writers};

/// Makes the custom message for discard (112 push) or rejoin (111 push): group, uid, sid.
pub type CustomMessageFn = Box<dyn FnMut(&GroupId, &str, &Sid) -> Bytes + Send>;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// `tcp`, `ws`, `udp` or `mesh`.
        transport: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] group_core::ConfigError),
    /// A custom command was registered with ver 0 or 1, which belong to the protocol.
    #[error("custom commands need ver >= 2, got ver {ver} cmd {cmd}")]
    ReservedCommand {
        /// The version byte.
        ver: u8,
        /// The command.
        cmd: u16,
    },
    /// `tls.cert` or `tls.key` could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The threads of `server.writerThreads` could not be started.
    #[error("cannot start the writer threads (server.writerThreads): {0}")]
    WriterThreads(std::io::Error),
}

/// Builds a server: configuration, hooks, handlers, listeners. Consumed by [`ServerBuilder::start`], so
/// nothing can be registered once clients can connect.
pub struct ServerBuilder {
    config: ServerConfig,
    hooks: Hooks,
    reserved: Vec<(u8, u16)>,
    discard_message: Option<CustomMessageFn>,
    rejoin_message: Option<CustomMessageFn>,
    event_sink: Option<EventFn>,
    tcp: Option<TcpListener>,
    ws: Option<TcpListener>,
    udp: Option<tokio::net::UdpSocket>,
    seed: Option<u64>,
}

impl ServerBuilder {
    /// A builder for `config`. Listeners are bound from its addresses unless given already bound.
    pub fn new(config: ServerConfig) -> Self {
        ServerBuilder {
            config,
            hooks: Hooks::default(),
            reserved: Vec::new(),
            discard_message: None,
            rejoin_message: None,
            event_sink: None,
            tcp: None,
            ws: None,
            udp: None,
            seed: None,
        }
    }

    /// Adds a hook that runs before `command`; several run in registration order, and the first
    /// [`Rejection`] stops the chain and the command: the client gets Bad with the rejection's code and
    /// message. Hooks may await.
    #[doc(alias = "BeforeCreateGroupCmd")]
    #[doc(alias = "BeforeJoinGroupCmd")]
    #[doc(alias = "BeforeLeaveGroupCmd")]
    #[doc(alias = "BeforeBroadcastGroupCmd")]
    pub fn before<F, Fut>(mut self, command: Command, hook: F) -> Self
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Rejection>> + Send + 'static,
    {
        self.hooks.add_before(command, hook);
        self
    }

    /// Adds a hook that runs after `command` succeeded (never after a refusal), in registration order.
    /// It returns `()`, or `Result<(), Rejection>` where an error stops the remaining After hooks of the
    /// command (Diarkis's `next(err)`). It cannot undo the command: that already happened, and the client
    /// already has its answer.
    #[doc(alias = "AfterCreateGroupCmd")]
    #[doc(alias = "AfterJoinGroupCmd")]
    #[doc(alias = "AfterLeaveGroupCmd")]
    #[doc(alias = "AfterBroadcastGroupCmd")]
    pub fn after<F, Fut>(mut self, command: Command, hook: F) -> Self
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: AfterOutcome,
    {
        self.hooks.add_after(command, hook);
        self
    }

    /// Handles the server's own command (ver >= 2): the returned bytes are the Ok payload; a rejection is
    /// sent as Bad. Registering ver 0 or 1 makes [`ServerBuilder::start`] fail.
    pub fn on_command<F, Fut>(mut self, ver: u8, cmd: u16, handler: F) -> Self
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Rejection>> + Send + 'static,
    {
        if ver < VER_CUSTOM_MIN {
            self.reserved.push((ver, cmd));
        } else {
            self.hooks.add_custom(ver, cmd, handler);
        }
        self
    }

    /// Sets the discard custom message: pushed (as a 112 leave) to a group's remaining members when a
    /// member's session ends. Default: empty. `f` runs on a thread of its own and the node waits for it at
    /// most 20 ms ([`crate::message_worker::MESSAGE_DEADLINE`]): a message not built by then is sent
    /// empty (counted in [`Server::messages_late`]), so a slow callback cannot freeze the node.
    pub fn discard_message(
        mut self,
        f: impl FnMut(&GroupId, &str, &Sid) -> Bytes + Send + 'static,
    ) -> Self {
        self.discard_message = Some(Box::new(f));
        self
    }

    /// Sees every event of the core (sessions opened and discarded, groups deleted, ticks, remote joins
    /// completed, ...), on the node task: it must return at once (hand the event to a queue).
    pub fn on_event(mut self, f: impl Fn(&group_core::Event) + Send + Sync + 'static) -> Self {
        self.event_sink = Some(Arc::new(f));
        self
    }

    /// Sets the rejoin custom message: pushed (as a 111 join carrying the member's own uid) to every member
    /// of a group whose owner changed (a failover, or a drained owner's handover). Runs under the same
    /// deadline as [`ServerBuilder::discard_message`].
    pub fn rejoin_message(
        mut self,
        f: impl FnMut(&GroupId, &str, &Sid) -> Bytes + Send + 'static,
    ) -> Self {
        self.rejoin_message = Some(Box::new(f));
        self
    }

    /// Uses an already bound TCP listener (tests bind port 0).
    pub fn tcp_listener(mut self, listener: TcpListener) -> Self {
        self.tcp = Some(listener);
        self
    }

    /// Uses an already bound listener for WebSocket.
    pub fn ws_listener(mut self, listener: TcpListener) -> Self {
        self.ws = Some(listener);
        self
    }

    /// Uses an already bound UDP socket for UDP/KCP clients.
    pub fn udp_socket(mut self, socket: tokio::net::UdpSocket) -> Self {
        self.udp = Some(socket);
        self
    }

    /// Fixes the seed for session IDs and random-join picks (default: from the system clock).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Binds, starts the node task and the listeners, and returns once they accept connections.
    pub async fn start(mut self) -> Result<Server, StartError> {
        if let Some(&(ver, cmd)) = self.reserved.first() {
            return Err(StartError::ReservedCommand { ver, cmd });
        }
        let secret = self.config.mesh_secret.as_deref().unwrap_or_default();
        let Some(seal) = Seal::new(secret.as_bytes()) else {
            return Err(StartError::Config(group_core::ConfigError {
                key: "mesh.secret".into(),
                problem: "cannot key HMAC-SHA256 with it".into(),
                value: "(hidden)".into(),
            }));
        };
        let mesh_tls = match &self.config.mesh_tls {
            Some(files) => Some(crate::tls::MeshTls::load(
                &files.cert,
                &files.key,
                &files.ca,
                &files.server_name,
            )?),
            None => None,
        };
        let tls = match (&self.config.tls_cert, &self.config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::tls::ServerTls::load(cert, key)?)),
            _ => None,
        };
        if self.config.mesh_secret.is_none() && !self.config.mesh.ip().is_loopback() {
            // Anyone who reaches the mesh port could otherwise join the cluster, read every group and
            // make the node dial anywhere.
            return Err(StartError::Config(group_core::ConfigError {
                key: "mesh.secret".into(),
                problem: "is required when mesh.bind is not a loopback address: every node of the \
                          cluster must share it (at least 16 characters)"
                    .into(),
                value: "null".into(),
            }));
        }
        let tcp = bind(self.tcp.take(), self.config.tcp, "tcp").await?;
        let ws = bind(self.ws.take(), self.config.ws, "ws").await?;
        let metrics = bind(None, self.config.metrics, "metrics").await?;
        let udp = match (self.udp.take(), self.config.udp) {
            (Some(socket), _) => Some(socket),
            (None, None) => None,
            (None, Some(addr)) => {
                Some(tokio::net::UdpSocket::bind(addr).await.map_err(|source| {
                    StartError::Bind {
                        transport: "udp",
                        addr,
                        source,
                    }
                })?)
            }
        };
        // The node's wall clock is `wall_ns` plus the node task's time since `clock_start`: read
        // together, or every session claim (and group ID time) this node makes is early by whatever
        // ran between them. Binding the mesh sits in between; under load that took long enough for a
        // newer session on this node to lose to an older one elsewhere.
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let clock_start = tokio::time::Instant::now();
        let wall_ns = u64::try_from(wall_ns).unwrap_or(u64::MAX);
        let (mesh_tcp, mesh_udp, mesh) = bind_mesh(&self.config).await?;
        let mesh_listen = mesh_tcp.local_addr().ok();
        let seed = self
            .seed
            .unwrap_or(wall_ns ^ u64::from(std::process::id()).rotate_left(32));
        let node_config = NodeConfig {
            addr: mesh,
            seed,
            clock_origin_ns: wall_ns,
            group: self.config.group.clone(),
            limits: self.config.limits.clone(),
        };
        let stats = Arc::new(Stats::default());
        let mut node = Node::new(node_config, group_core::Instant::ZERO)?;
        if let Some(f) = self.discard_message.take() {
            node.set_discard_message(under_deadline("discard", f, stats.clone()));
        }
        if let Some(f) = self.rejoin_message.take() {
            node.set_rejoin_message(under_deadline("rejoin", f, stats.clone()));
        }
        if self.config.auth_secret.is_none() {
            tracing::warn!(
                "no server.authSecret configured: any uid is accepted without authentication"
            );
        }
        let max_connections = self.config.limits.max_connections;
        if let Some(files) = open_files_limit().filter(|files| *files < max_connections as u64) {
            tracing::warn!(
                "limits.maxConnections is {max_connections} but this process may open only {files} files \
                 (ulimit -n): connections beyond that fail to be accepted; raise the limit or lower maxConnections"
            );
        }
        self.hooks.timeout = self.config.hook_timeout;
        let (inputs, receiver) = mpsc::channel(INPUT_QUEUE);
        let handle = ServerHandle::new(inputs.clone());
        let stop = CancellationToken::new();
        let writer_pool = match Writers::from_config(self.config.writer_threads) {
            Writers::Tasks => None,
            Writers::OnRuntime => Some(WriterPool::on_server_runtime(&stop)),
            Writers::Threads(threads) => Some(
                WriterPool::start(threads, &stop)
                    .await
                    .map_err(StartError::WriterThreads)?,
            ),
        };
        let shared =
            Arc::new(Shared {
                inputs,
                hooks: self.hooks,
                verifier: self.config.auth_secret.as_ref().map(|s| {
                    TokenVerifier::with_clock_skew(s.as_bytes(), self.config.auth_clock_skew)
                }),
                max_payload: self.config.limits.max_payload,
                outbound_queue: self.config.outbound_queue,
                budget: ServerBudget::new(self.config.limits.max_buffered_bytes),
                max_queued_bytes: self.config.limits.max_queued_bytes_per_connection,
                inbound_share: (self.config.limits.max_queued_bytes_per_connection / 8).max(
                    group_core::proto::CLIENT_HEADER_LEN + self.config.limits.max_payload as usize,
                ),
                max_requests_per_second: self.config.limits.max_requests_per_second,
                max_inbound_bytes_per_second: self.config.limits.max_inbound_bytes_per_second,
                tls: tls.clone(),
                stats: stats.clone(),
                exposed: self.config.expose_commands,
                writer_pool,
            });
        let stop_node = stop.child_token();
        let stop_mesh = stop.child_token();
        // Peers declared gone by the links (a refused mesh port), for membership.
        let (refused, refused_rx) = tokio::sync::mpsc::channel(1024);
        let links = Links::new(
            mesh,
            self.config.mesh_secret.as_deref(),
            mesh_tls,
            shared.inputs.clone(),
            refused,
            stats.clone(),
            stop_mesh.clone(),
        );
        // One flusher per writer thread, for its plain TCP connections' frames.
        let spares = crate::inbox::SpareVecs::default();
        let flushers = shared.writer_pool.as_ref().map_or_else(Vec::new, |pool| {
            (0..pool.threads())
                .map(|thread| {
                    let (flusher, turns) = tokio::sync::mpsc::unbounded_channel();
                    let progress = Arc::default();
                    let run = crate::flusher::run(
                        turns,
                        spares.clone(),
                        stats.clone(),
                        Arc::clone(&progress),
                        shared.max_queued_bytes,
                        pool.is_server_runtime(),
                    );
                    drop(pool.spawn_on(thread, run));
                    crate::flusher::FlusherEnd::new(flusher, progress)
                })
                .collect()
        });
        let task = NodeTask::new(
            node,
            Some(links.clone()),
            self.event_sink.take(),
            stats.clone(),
            OutboundLimits {
                server: shared.budget.clone(),
                per_connection: shared.max_queued_bytes,
            },
            flushers,
            spares,
        )
        .clock_from(clock_start)
        .sharing_a_thread(crate::writer_pool::single_threaded());
        let tasks = TaskTracker::new();
        tasks.spawn(node_task::run(task, receiver, stop_node.clone()));
        tasks.spawn(links.accept_loop(mesh_tcp));
        let (seeds_tx, seeds_rx) = tokio::sync::watch::channel(self.config.mesh_seeds.clone());
        if !self.config.mesh_seed_names.is_empty() {
            tasks.spawn(crate::mesh::seeds::resolve_loop(
                self.config.mesh_seeds.clone(),
                self.config.mesh_seed_names.clone(),
                seeds_tx,
                stop_mesh.clone(),
            ));
        }
        let membership = MembershipConfig {
            own: mesh.0,
            incarnation: wall_ns,
            seeds: seeds_rx,
            probe_interval: self.config.mesh_probe_interval,
            suspect_timeout: self.config.mesh_suspect_timeout,
            seed: seed.rotate_left(29),
            seal,
        };
        let membership_task = tasks.spawn(crate::mesh::membership::run(
            mesh_udp,
            membership,
            shared.inputs.clone(),
            refused_rx,
            stop_mesh.clone(),
        ));
        let listeners = Arc::new(Listeners::new(
            shared,
            self.config.limits.max_connections,
            stats.clone(),
            stop.child_token(),
        ));
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let ws_addr = ws.as_ref().and_then(|l| l.local_addr().ok());
        let udp_addr = udp.as_ref().and_then(|s| s.local_addr().ok());
        let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(listener) = metrics {
            let own = mesh.0;
            let source = crate::metrics::MetricsSource {
                handle: handle.clone(),
                stats: stats.clone(),
                budget: listeners.shared.budget.clone(),
                hooks: listeners.shared.hooks.timings.clone(),
                clustered: !self.config.mesh_seed_names.is_empty()
                    || self.config.mesh_seeds.iter().any(|seed| *seed != own),
            };
            let stop_metrics = stop.child_token();
            tasks.spawn(crate::metrics::serve(
                listener,
                Arc::new(source),
                stop_metrics,
            ));
        }
        if let Some(socket) = udp {
            crate::udp::size_receive_buffer(&socket, self.config.udp_receive_buffer);
            // A client whose app stalls sends no acknowledgements: its session lives as long as a
            // silent TCP connection's, `connectionTtl`, not just KCP's 20 unanswered sends.
            let ttl_ms = self.config.limits.connection_ttl.as_millis();
            let kcp = group_core::kcp::KcpConfig {
                dead_after_ms: u32::try_from(ttl_ms).unwrap_or(u32::MAX),
                ..group_core::kcp::KcpConfig::default()
            };
            tasks.spawn(crate::udp::accept_loop(socket, listeners.clone(), kcp));
        }
        if let Some(listener) = tcp {
            tasks.spawn(crate::tcp::accept_loop(listener, listeners.clone()));
        }
        if let Some(listener) = ws {
            tasks.spawn(crate::ws::accept_loop(
                listener,
                listeners.clone(),
                crate::ws::WsSettings {
                    read_buffer: self.config.ws_read_buffer,
                    allowed_origins: self.config.ws_allowed_origins.clone().map(Arc::new),
                },
            ));
        }
        Ok(Server {
            handle,
            tcp_addr,
            ws_addr,
            udp_addr,
            mesh_addr: mesh,
            mesh_listen,
            metrics_addr,
            drain_timeout: self.config.drain_timeout,
            stats,
            listeners,
            stop,
            stop_node,
            stop_mesh,
            membership: Some(membership_task),
            tasks,
            tls,
        })
    }
}

async fn bind(
    given: Option<TcpListener>,
    addr: Option<SocketAddr>,
    transport: &'static str,
) -> Result<Option<TcpListener>, StartError> {
    match (given, addr) {
        (Some(listener), _) => Ok(Some(listener)),
        (None, None) => Ok(None),
        (None, Some(addr)) => {
            crate::listener::listen(addr)
                .map(Some)
                .map_err(|source| StartError::Bind {
                    transport,
                    addr,
                    source,
                })
        }
    }
}

/// Binds the mesh address for TCP (data) and UDP (membership) on one port, and works out the address the
/// node is known by.
async fn bind_mesh(
    config: &ServerConfig,
) -> Result<(TcpListener, tokio::net::UdpSocket, NodeAddr), StartError> {
    let bind_error = |addr, source| StartError::Bind {
        transport: "mesh",
        addr,
        source,
    };
    let tcp = crate::listener::listen(config.mesh).map_err(|e| bind_error(config.mesh, e))?;
    let bound = tcp.local_addr().map_err(|e| bind_error(config.mesh, e))?;
    let udp = tokio::net::UdpSocket::bind(bound)
        .await
        .map_err(|e| bind_error(bound, e))?;
    let mut identity = config.mesh_identity();
    if identity.port() == 0 {
        identity.set_port(bound.port());
    }
    Ok((tcp, udp, NodeAddr(identity)))
}

/// A running server.
pub struct Server {
    handle: ServerHandle,
    tcp_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    udp_addr: Option<SocketAddr>,
    mesh_addr: NodeAddr,
    mesh_listen: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    drain_timeout: Duration,
    stats: Arc<Stats>,
    listeners: Arc<Listeners>,
    /// Stops everything the server started: cancelled by `Drop` at the latest.
    stop: CancellationToken,
    /// Stops the node task (a child of `stop`).
    stop_node: CancellationToken,
    /// Stops the mesh links and membership (a child of `stop`).
    stop_mesh: CancellationToken,
    /// The membership task, awaited at shutdown so that it can say goodbye to the cluster.
    membership: Option<tokio::task::JoinHandle<()>>,
    /// Every long-lived task the server started.
    tasks: TaskTracker,
    /// The listeners' TLS, for [`Server::reload_tls`].
    tls: Option<Arc<crate::tls::ServerTls>>,
}

impl Drop for Server {
    /// A server dropped without [`Server::shutdown`] stops everything it started at once: no task
    /// outlives it (the cluster then notices its absence through the failure detector).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    /// The server API.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The TCP listener's address (the real port when bound to port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The WebSocket listener's address.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The UDP socket's address.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// Reads `tls.cert` and `tls.key` again (`group-server` does on SIGHUP): connections accepted from
    /// now on get the new certificate; open ones keep theirs. On error the old certificate stays in use.
    /// `Ok(false)` if the server has no TLS.
    pub fn reload_tls(&self) -> Result<bool, crate::tls::TlsError> {
        match &self.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Whether the TCP and WebSocket listeners speak TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connections disconnected because their outbound queue was full.
    pub fn slow_consumers(&self) -> u64 {
        self.stats.slow_consumers.load(Ordering::Relaxed)
    }

    /// Frames the node task handed to the connections (written through, flushed or queued to their
    /// writers). Broadcasts that went to the same members one after another in one node turn are one
    /// frame for a plain TCP member: their frames back to back (`fan_out`).
    pub fn frames_sent(&self) -> u64 {
        self.stats.frames_sent.load(Ordering::Relaxed)
    }

    /// Frames the node task wrote to plain TCP sockets itself, on quiet turns, instead of handing them
    /// to the connections' writers.
    pub fn frames_written_through(&self) -> u64 {
        self.stats.frames_written_through.load(Ordering::Relaxed)
    }

    /// Frames the writer threads' flushers wrote, one write per connection per round
    /// (`server.writerThreads`), instead of handing them to the connections' writers.
    pub fn frames_flushed(&self) -> u64 {
        self.stats.frames_flushed.load(Ordering::Relaxed)
    }

    /// Time the node task spent handling inputs and handing their frames over, since start (the hand-over
    /// of quiet turns aside: that is mostly its writes through, which the writers take back when turns
    /// get busy). Every group's fan-out on a node goes through that one task: sampled twice, the
    /// difference over the wall time between is the share of one core it used, and near 1.0 the node is
    /// at its limit.
    pub fn node_busy(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.stats.node_busy_nanos.load(Ordering::Relaxed))
    }

    /// Ticks skipped because the group's previous tick callback was still running.
    pub fn ticks_skipped(&self) -> u64 {
        self.stats.ticks_skipped.load(Ordering::Relaxed)
    }

    /// Discard and rejoin messages sent empty because their callback missed its deadline
    /// ([`ServerBuilder::discard_message`]).
    pub fn messages_late(&self) -> u64 {
        self.stats.messages_late.load(Ordering::Relaxed)
    }

    /// Connections and UDP sessions accepted since start.
    pub fn accepted_connections(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused because `maxConnections` were open.
    pub fn refused_connections(&self) -> u64 {
        self.stats.refused.load(Ordering::Relaxed)
    }

    /// The node's mesh address: its identity in the cluster and inside the IDs of groups it creates.
    pub fn mesh_addr(&self) -> NodeAddr {
        self.mesh_addr
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served (`metrics.bind`), as bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the mesh listens (TCP and UDP): `mesh_addr` unless `mesh.advertise` names another address.
    pub fn mesh_listen_addr(&self) -> Option<SocketAddr> {
        self.mesh_listen
    }

    /// Mesh messages dropped because a peer's queue was full.
    pub fn mesh_dropped(&self) -> u64 {
        self.stats.mesh_dropped.load(Ordering::Relaxed)
    }

    /// Drains the node (what SIGTERM does in group-server): it goes offline (no new groups, Offline
    /// pushed to every client, owned groups handed to their backups), keeps serving for `drainTimeout`
    /// or until the last client has gone, then shuts down.
    pub async fn drain(self, grace: Duration) {
        let _ = self.handle.set_offline().await;
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        // Ends early once every client has gone: nobody is left to wait for.
        while tokio::time::Instant::now() < deadline {
            let connected = self.handle.connection_count().await;
            if connected.map_or(true, |n| n == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50).min(self.drain_timeout)).await;
        }
        self.shutdown(grace).await;
    }

    /// Stops accepting, leaves the cluster, closes every connection, and waits for the tasks to end (at
    /// most `grace`).
    pub async fn shutdown(mut self, grace: Duration) {
        self.listeners.stop.cancel();
        self.stop_mesh.cancel();
        if let Some(membership) = self.membership.take() {
            // Leaving tells the other nodes at once, instead of after the failure detector's timeout.
            let _ = tokio::time::timeout(grace, membership).await;
        }
        self.stop_node.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        self.stop.cancel();
    }
}

/// The soft limit on open files of this process (`ulimit -n`), where the OS tells it (Linux:
/// /proc/self/limits); `None` elsewhere or when unlimited.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(all(test, target_os = "linux"))]
mod limit_tests {
    #[test]
    fn the_open_files_limit_is_read_on_linux() {
        let limit = super::open_files_limit();
        assert!(limit.is_some_and(|n| n > 0), "{limit:?}");
    }
}
