//! The server's configuration file: Diarkis's Group section as is, the core's limits, and this driver's
//! own settings (listen addresses, authentication, queue sizes).
//!
//! ```json
//! {
//!   "group":  { "remoteJoinTries": 4, "relayLimit": 2, "sendInterval": 300, "staticGroups": [],
//!               "maxTtl": 3600 },
//!   "limits": { "maxPayload": 65536, "connectionTtl": 10, "maxGroupsCreatedPerUser": 64 },
//!   "server": { "tcp": "127.0.0.1:7100", "ws": "127.0.0.1:7200", "udp": "127.0.0.1:7100",
//!               "authSecret": null, "outboundQueue": 1024, "hookTimeout": 10,
//!               "wsReadBuffer": 4096, "udpReceiveBuffer": 4194304, "helloTimeout": 5000,
//!               "authClockSkew": 5 },
//!   "mesh":   { "bind": "127.0.0.1:8100", "advertise": null, "seeds": ["127.0.0.1:8101"],
//!               "secret": null, "probeInterval": 1000, "suspectTimeout": 3000,
//!               "tls": { "cert": "node.pem", "key": "node-key.pem", "ca": "cluster-ca.pem",
//!                        "serverName": "group-mesh" } },
//!   "tls":    { "cert": "/etc/group/cert.pem", "key": "/etc/group/key.pem" },
//!   "ws":     { "allowedOrigins": ["https://game.example"] }
//! }
//! ```
//! Every section and key is optional; unknown keys and bad values are errors naming the key.

use std::net::SocketAddr;

use group_core::proto::Request;
use group_core::{ConfigError, GroupConfig, Limits};
use serde_json::{Map, Value};

/// Default listen addresses: TCP and UDP 127.0.0.1:7100, WebSocket :7200, mesh :8100 (README.md).
pub const DEFAULT_TCP: &str = "127.0.0.1:7100";
/// Default WebSocket listen address.
pub const DEFAULT_WS: &str = "127.0.0.1:7200";
/// Default UDP listen address.
pub const DEFAULT_UDP: &str = "127.0.0.1:7100";
/// Default mesh address: the node's identity inside group IDs.
pub const DEFAULT_MESH: &str = "127.0.0.1:8100";

/// Everything a server needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Diarkis's Group section.
    pub group: GroupConfig,
    /// The core's bounds.
    pub limits: Limits,
    /// TCP listen address; `None` disables TCP.
    pub tcp: Option<SocketAddr>,
    /// WebSocket listen address; `None` disables WebSocket.
    pub ws: Option<SocketAddr>,
    /// UDP listen address; `None` disables UDP.
    pub udp: Option<SocketAddr>,
    /// Where the mesh listens (TCP for mesh data, UDP for membership). It must be IPv4: group IDs carry
    /// the node's address in 12 hex digits. Port 0 picks a free port.
    pub mesh: SocketAddr,
    /// The address other nodes reach this one at, when `mesh` is a wildcard (0.0.0.0).
    pub mesh_advertise: Option<std::net::SocketAddrV4>,
    /// Mesh addresses of nodes to join at start. None: a cluster of one, until another node joins it.
    pub mesh_seeds: Vec<std::net::SocketAddrV4>,
    /// Seeds given as `host:port` names (a Kubernetes headless Service, say): resolved at start and
    /// every 10 s, each IPv4 address they resolve to joining `mesh_seeds`.
    pub mesh_seed_names: Vec<String>,
    /// How often membership probes a random node.
    pub mesh_probe_interval: std::time::Duration,
    /// How long a node that failed its probes stays suspected before it is declared dead.
    pub mesh_suspect_timeout: std::time::Duration,
    /// On SIGTERM or [`crate::Server::drain`]: how long the node keeps serving after handing its
    /// groups over, before it exits.
    pub drain_timeout: std::time::Duration,
    /// HS256 secret shared with the game backend. `None`: any uid is accepted (a warning is logged).
    pub auth_secret: Option<String>,
    /// `mesh.secret`: shared by every node of the cluster; a mesh peer must prove it knows it. Required
    /// unless the mesh listens on loopback only.
    pub mesh_secret: Option<String>,
    /// `authClockSkew` (seconds): how far the backend's clock may be from this node's when tokens'
    /// `exp` and `nbf` are checked (default 5).
    pub auth_clock_skew: std::time::Duration,
    /// Entries queued per connection before it counts as a slow consumer and is disconnected; an entry
    /// is one turn of the node task's frames for the connection (one frame when the server is not busy).
    /// `limits.maxQueuedBytesPerConnection` bounds the bytes.
    pub outbound_queue: usize,
    /// How long one hook or custom handler may run before the request fails with Err HOOK_FAILED.
    pub hook_timeout: std::time::Duration,
    /// Initial read buffer per WebSocket connection, in bytes (it grows for larger messages).
    pub ws_read_buffer: usize,
    /// `udpReceiveBuffer`: the UDP socket's receive buffer, in bytes (default 4 MiB). Every UDP
    /// client's datagrams (KCP acknowledgements included) arrive on this one socket; with the operating
    /// system's usual 208 KiB, 1,000 members at 100 broadcasts/s lost 5-7k datagrams a run to a full
    /// buffer, each costing a KCP resend 30 ms later. The kernel caps it at `net.core.rmem_max`; the
    /// server warns at start when it got less than asked.
    pub udp_receive_buffer: usize,
    /// `tls.cert` and `tls.key`: PEM files. With both, the TCP and WebSocket listeners speak TLS (the
    /// WebSocket one is then `wss://`); UDP is unchanged.
    pub tls_cert: Option<std::path::PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
    /// `metrics.bind`: where `/metrics`, `/healthz` and `/readyz` are served over HTTP; `None` (the
    /// default): nowhere.
    pub metrics: Option<SocketAddr>,
    /// `mesh.tls`: mutual TLS on mesh links (see [`MeshTlsConfig`]); `None`: links are authenticated by
    /// `mesh.secret` but not encrypted.
    pub mesh_tls: Option<MeshTlsConfig>,
    /// `ws.allowedOrigins`: the `Origin` header values a WebSocket handshake may carry (exactly, such as
    /// `https://game.example`); others are refused with 403. `None`: any origin, or none.
    pub ws_allowed_origins: Option<Vec<String>>,
    /// `server.exposeCommands`: the client group commands clients may send (Diarkis's ExposeCommands);
    /// the others are refused with code 17 (NOT_EXPOSED), so a game whose groups are driven by server
    /// code only exposes none. Default: all.
    pub expose_commands: ExposedCommands,
    /// `server.writerThreads`: threads of their own for TCP connections' writers; 0: the writers run
    /// on the server's runtime like every other task. `None` (the default, `"auto"`): one thread beside
    /// a runtime of two workers (it costs less CPU per delivery than writers spread over those workers,
    /// on every load measured); beside one worker, the worker writes its plain TCP members itself
    /// between the node's turns; none beside more (docs/DEPLOYING.md, "Threads and cores").
    pub writer_threads: Option<usize>,
}

/// Most `server.writerThreads`.
const MAX_WRITER_THREADS: u64 = 64;

/// The client group commands a server exposes (`server.exposeCommands`).
#[doc(alias = "ExposeCommands")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExposedCommands(u8);

impl ExposedCommands {
    /// Each command's name in the configuration, with its request.
    const NAMES: [&'static str; 5] = ["create", "join", "randomJoin", "leave", "broadcast"];

    /// Every group command.
    pub const ALL: ExposedCommands = ExposedCommands(0b1_1111);
    /// None: groups are driven by server code only.
    pub const NONE: ExposedCommands = ExposedCommands(0);

    fn bit(request: &Request) -> Option<u8> {
        let index = match request {
            Request::Create(_) => 0,
            Request::Join { .. } => 1,
            Request::RandJoin(_) => 2,
            Request::Leave { .. } => 3,
            Request::Broadcast { .. } => 4,
            _ => return None,
        };
        Some(1 << index)
    }

    /// Whether a client may send `request`. Commands other than the group commands are always allowed.
    pub fn allows(self, request: &Request) -> bool {
        Self::bit(request).is_none_or(|bit| self.0 & bit != 0)
    }

    /// The names, as in the configuration (`create`, `join`, `randomJoin`, `leave`, `broadcast`).
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ExposedCommands, String> {
        let mut bits = 0;
        for name in names {
            let index = Self::NAMES.iter().position(|n| *n == name).ok_or_else(|| {
                format!(
                    "{name:?} is not a group command (known: {})",
                    Self::NAMES.join(", ")
                )
            })?;
            bits |= 1 << index;
        }
        Ok(ExposedCommands(bits))
    }
}

impl Default for ExposedCommands {
    fn default() -> Self {
        ExposedCommands::ALL
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            group: GroupConfig::default(),
            limits: Limits::default(),
            tcp: DEFAULT_TCP.parse().ok(),
            ws: DEFAULT_WS.parse().ok(),
            udp: DEFAULT_UDP.parse().ok(),
            mesh: DEFAULT_MESH
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8100))),
            mesh_advertise: None,
            mesh_seeds: Vec::new(),
            mesh_seed_names: Vec::new(),
            mesh_probe_interval: std::time::Duration::from_secs(1),
            mesh_suspect_timeout: std::time::Duration::from_secs(3),
            drain_timeout: std::time::Duration::from_secs(10),
            auth_secret: None,
            mesh_secret: None,
            auth_clock_skew: std::time::Duration::from_secs(5), // auth::DEFAULT_CLOCK_SKEW
            outbound_queue: 1024,
            hook_timeout: std::time::Duration::from_secs(10),
            ws_read_buffer: 4096,
            udp_receive_buffer: 4 << 20,
            tls_cert: None,
            tls_key: None,
            ws_allowed_origins: None,
            mesh_tls: None,
            metrics: None,
            expose_commands: ExposedCommands::ALL,
            writer_threads: None,
        }
    }
}

impl ServerConfig {
    /// Parses a configuration file's text.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError {
            key: "<file>".into(),
            problem: format!("invalid JSON ({e})"),
            value: "<invalid JSON>".into(),
        })?;
        let object = object("<file>", &value)?;
        let mut config = ServerConfig::default();
        for (key, value) in object {
            match key.as_str() {
                "group" => config.group = GroupConfig::from_value("group", value)?,
                "limits" => config.limits = Limits::from_value("limits", value)?,
                "server" => config.apply_server(value)?,
                "mesh" => config.apply_mesh(value)?,
                "tls" => config.apply_tls(value)?,
                "ws" => config.apply_ws(value)?,
                "metrics" => config.apply_metrics(value)?,
                _ => {
                    return Err(error(
                        key,
                        "unknown section (known: group, limits, server, mesh, tls, ws, metrics)",
                        value,
                    ));
                }
            }
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(error(
                "tls",
                "needs both cert and key (PEM files), or neither",
                object.get("tls").unwrap_or(&Value::Null),
            ));
        }
        Ok(config)
    }

    /// Reads a Diarkis Group configuration file as it is (top-level `remoteJoinTries`, `relayLimit`,
    /// `sendInterval`, `staticGroups`, what Diarkis's `group.Setup(confpath)` reads) into the `group`
    /// section, replacing what the full configuration said there. Errors name the key as `group.<key>`.
    #[doc(alias = "Setup")]
    pub fn apply_group_file(&mut self, text: &str) -> Result<(), ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError {
            key: "<group file>".into(),
            problem: format!("invalid JSON ({e})"),
            value: "<invalid JSON>".into(),
        })?;
        self.group = GroupConfig::from_value("group", &value)?;
        Ok(())
    }

    fn apply_server(&mut self, value: &Value) -> Result<(), ConfigError> {
        for (key, value) in object("server", value)? {
            let path = format!("server.{key}");
            match key.as_str() {
                "tcp" => self.tcp = optional_addr(&path, value)?,
                "ws" => self.ws = optional_addr(&path, value)?,
                "udp" => self.udp = optional_addr(&path, value)?,
                "authSecret" => {
                    self.auth_secret = match value {
                        Value::Null => None,
                        Value::String(s) if s.len() >= 16 => Some(s.clone()),
                        _ => {
                            return Err(error(
                                &path,
                                "must be null or a string of at least 16 bytes",
                                value,
                            ));
                        }
                    }
                }
                "outboundQueue" => self.outbound_queue = int_in(&path, value, 8, 1 << 20)?,
                "hookTimeout" => {
                    let seconds = int_in(&path, value, 1, 3600)?;
                    self.hook_timeout =
                        std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(3600));
                }
                "wsReadBuffer" => self.ws_read_buffer = int_in(&path, value, 1024, 1 << 20)?,
                "udpReceiveBuffer" => {
                    self.udp_receive_buffer = int_in(&path, value, 64 << 10, 1 << 30)?;
                }
                "drainTimeout" => self.drain_timeout = millis(&path, value, 0, 3_600_000)?,
                "helloTimeout" => self.limits.hello_timeout = millis(&path, value, 100, 600_000)?,
                "authClockSkew" => {
                    let seconds = int_in(&path, value, 0, 3600)?;
                    self.auth_clock_skew =
                        std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(3600));
                }
                "exposeCommands" => {
                    let names = match value {
                        Value::Array(items) => items.iter().map(Value::as_str).collect(),
                        _ => None,
                    };
                    let names: Vec<&str> = names
                        .ok_or_else(|| error(&path, "must be an array of command names", value))?;
                    self.expose_commands = ExposedCommands::from_names(names)
                        .map_err(|problem| error(&path, &problem, value))?;
                }
                "writerThreads" => {
                    self.writer_threads = match value {
                        Value::String(auto) if auto == "auto" => None,
                        Value::Number(_) => Some(int_in(&path, value, 0, MAX_WRITER_THREADS)?),
                        _ => {
                            return Err(error(&path, "must be \"auto\" or 0 to 64", value));
                        }
                    };
                }
                _ => {
                    let known = "tcp, ws, udp, authSecret, outboundQueue, hookTimeout, \
                                 wsReadBuffer, udpReceiveBuffer, drainTimeout, helloTimeout, \
                                 authClockSkew, exposeCommands, writerThreads";
                    return Err(error(
                        &path,
                        &format!("unknown key (known keys: {known})"),
                        value,
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply_mesh(&mut self, value: &Value) -> Result<(), ConfigError> {
        for (key, value) in object("mesh", value)? {
            let path = format!("mesh.{key}");
            match key.as_str() {
                "bind" => self.mesh = ipv4_addr(&path, value)?,
                "advertise" => {
                    self.mesh_advertise = match value {
                        Value::Null => None,
                        _ => Some(v4(&path, value)?),
                    }
                }
                "seeds" => {
                    let Value::Array(items) = value else {
                        return Err(error(&path, "must be an array of addresses", value));
                    };
                    if items.len() > MAX_SEEDS {
                        return Err(error(&path, "at most 64 seeds", value));
                    }
                    self.mesh_seeds.clear();
                    self.mesh_seed_names.clear();
                    for (i, item) in items.iter().enumerate() {
                        match seed(&format!("{path}[{i}]"), item)? {
                            Seed::Addr(addr) => self.mesh_seeds.push(addr),
                            Seed::Name(name) => self.mesh_seed_names.push(name),
                        }
                    }
                }
                "secret" => {
                    self.mesh_secret = match value {
                        Value::Null => None,
                        Value::String(secret) if secret.len() >= 16 => Some(secret.clone()),
                        _ => {
                            return Err(error(
                                &path,
                                "must be a string of at least 16 characters",
                                value,
                            ));
                        }
                    }
                }
                "tls" => self.mesh_tls = mesh_tls(&path, value)?,
                "probeInterval" => self.mesh_probe_interval = millis(&path, value, 50, 60_000)?,
                "suspectTimeout" => self.mesh_suspect_timeout = millis(&path, value, 100, 600_000)?,
                _ => {
                    let known =
                        "bind, advertise, seeds, secret, tls, probeInterval, suspectTimeout";
                    return Err(error(
                        &path,
                        &format!("unknown key (known keys: {known})"),
                        value,
                    ));
                }
            }
        }
        if self.mesh.ip().is_unspecified() && self.mesh_advertise.is_none() {
            return Err(error(
                "mesh.advertise",
                "is required when mesh.bind is a wildcard address: other nodes need a real one",
                &Value::Null,
            ));
        }
        Ok(())
    }

    fn apply_tls(&mut self, value: &Value) -> Result<(), ConfigError> {
        for (key, value) in object("tls", value)? {
            let path = format!("tls.{key}");
            let file = match value {
                Value::Null => None,
                Value::String(file) if !file.is_empty() => Some(std::path::PathBuf::from(file)),
                _ => {
                    return Err(error(
                        &path,
                        "must be the path of a PEM file, or null",
                        value,
                    ));
                }
            };
            match key.as_str() {
                "cert" => self.tls_cert = file,
                "key" => self.tls_key = file,
                _ => return Err(error(&path, "unknown key (known keys: cert, key)", value)),
            }
        }
        Ok(())
    }

    fn apply_metrics(&mut self, value: &Value) -> Result<(), ConfigError> {
        for (key, value) in object("metrics", value)? {
            let path = format!("metrics.{key}");
            if key != "bind" {
                return Err(error(&path, "unknown key (known keys: bind)", value));
            }
            self.metrics = optional_addr(&path, value)?;
        }
        Ok(())
    }

    fn apply_ws(&mut self, value: &Value) -> Result<(), ConfigError> {
        for (key, value) in object("ws", value)? {
            let path = format!("ws.{key}");
            if key != "allowedOrigins" {
                return Err(error(
                    &path,
                    "unknown key (known keys: allowedOrigins)",
                    value,
                ));
            }
            self.ws_allowed_origins = match value {
                Value::Null => None,
                Value::Array(items) if items.len() <= 256 => Some(
                    items
                        .iter()
                        .map(|item| match item {
                            Value::String(origin) => Ok(origin.clone()),
                            _ => Err(error(&path, "must list origins as strings", value)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(error(
                        &path,
                        "must be an array of at most 256 origins, or null",
                        value,
                    ));
                }
            };
        }
        Ok(())
    }

    /// The address this node is known by in the cluster (and inside the IDs of the groups it creates).
    pub fn mesh_identity(&self) -> std::net::SocketAddrV4 {
        if let Some(advertise) = self.mesh_advertise {
            return advertise;
        }
        match self.mesh {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(_) => {
                std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, self.mesh.port())
            }
        }
    }
}

/// `mesh.tls`: this node's certificate and key, the cluster's CA, and the name every node's certificate
/// carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTlsConfig {
    /// `cert`: this node's certificate chain (PEM), signed by `ca`.
    pub cert: std::path::PathBuf,
    /// `key`: its private key (PEM).
    pub key: std::path::PathBuf,
    /// `ca`: the certificate authority every node's certificate must chain to (PEM).
    pub ca: std::path::PathBuf,
    /// `serverName`: the name (a DNS name in the certificates' subjectAltName) a node checks in a peer's
    /// certificate; nodes dial each other by IP, so one shared name (default `group-mesh`).
    pub server_name: String,
}

fn mesh_tls(path: &str, value: &Value) -> Result<Option<MeshTlsConfig>, ConfigError> {
    if value.is_null() {
        return Ok(None);
    }
    let fields = object(path, value)?;
    let file = |key: &str| match fields.get(key) {
        Some(Value::String(file)) if !file.is_empty() => Ok(std::path::PathBuf::from(file)),
        other => Err(error(
            &format!("{path}.{key}"),
            "must be the path of a PEM file",
            other.unwrap_or(&Value::Null),
        )),
    };
    for (key, value) in fields {
        if !["cert", "key", "ca", "serverName"].contains(&key.as_str()) {
            let problem = "unknown key (known keys: cert, key, ca, serverName)";
            return Err(error(&format!("{path}.{key}"), problem, value));
        }
    }
    let server_name = match fields.get("serverName") {
        None => "group-mesh".to_string(),
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(other) => {
            return Err(error(
                &format!("{path}.serverName"),
                "must be a name",
                other,
            ));
        }
    };
    Ok(Some(MeshTlsConfig {
        cert: file("cert")?,
        key: file("key")?,
        ca: file("ca")?,
        server_name,
    }))
}

fn error(key: &str, problem: &str, value: &Value) -> ConfigError {
    let mut text = value.to_string();
    if text.len() > 80 {
        let cut = (0..=77)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    ConfigError {
        key: key.into(),
        problem: problem.into(),
        value: text,
    }
}

fn object<'a>(path: &str, value: &'a Value) -> Result<&'a Map<String, Value>, ConfigError> {
    value
        .as_object()
        .ok_or_else(|| error(path, "must be a JSON object", value))
}

fn optional_addr(path: &str, value: &Value) -> Result<Option<SocketAddr>, ConfigError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => s.parse().map(Some).map_err(|_| {
            error(
                path,
                "must be an address like 127.0.0.1:7100, or null to disable",
                value,
            )
        }),
        _ => Err(error(path, "must be an address string or null", value)),
    }
}

fn ipv4_addr(path: &str, value: &Value) -> Result<SocketAddr, ConfigError> {
    match optional_addr(path, value)? {
        Some(addr @ SocketAddr::V4(_)) => Ok(addr),
        _ => Err(error(
            path,
            "must be an IPv4 address with port (group IDs carry it)",
            value,
        )),
    }
}

/// Most mesh seeds a configuration may list.
const MAX_SEEDS: usize = 64;

/// One `mesh.seeds` entry: an IPv4 address with port, or a `host:port` name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// An address.
    Addr(std::net::SocketAddrV4),
    /// A name and port, resolved while the node runs.
    Name(String),
}

impl std::str::FromStr for Seed {
    type Err = String;

    /// `10.0.0.5:8100`, or `group-mesh.default.svc.cluster.local:8100`.
    fn from_str(text: &str) -> Result<Seed, String> {
        if let Ok(addr) = text.parse::<std::net::SocketAddrV4>() {
            return Ok(Seed::Addr(addr));
        }
        let problem =
            || format!("{text:?} is neither an IPv4 address with port nor a host name with port");
        let (host, port) = text.rsplit_once(':').ok_or_else(problem)?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !host_ok || port.parse::<u16>().is_err() {
            return Err(problem());
        }
        Ok(Seed::Name(text.to_string()))
    }
}

fn seed(path: &str, value: &Value) -> Result<Seed, ConfigError> {
    let Value::String(text) = value else {
        return Err(error(
            path,
            "must be an address or a host name with port",
            value,
        ));
    };
    text.parse().map_err(|e: String| error(path, &e, value))
}

fn v4(path: &str, value: &Value) -> Result<std::net::SocketAddrV4, ConfigError> {
    match ipv4_addr(path, value)? {
        SocketAddr::V4(v4) => Ok(v4),
        SocketAddr::V6(_) => Err(error(path, "must be an IPv4 address with port", value)),
    }
}

fn millis(
    path: &str,
    value: &Value,
    min: u64,
    max: u64,
) -> Result<std::time::Duration, ConfigError> {
    let ms = int_in(path, value, min, max)?;
    Ok(std::time::Duration::from_millis(
        u64::try_from(ms).unwrap_or(max),
    ))
}

fn int_in(path: &str, value: &Value, min: u64, max: u64) -> Result<usize, ConfigError> {
    let problem = format!("must be an integer between {min} and {max}");
    let n = value
        .as_u64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| error(path, &problem, value))?;
    usize::try_from(n).map_err(|_| error(path, &problem, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = ServerConfig::from_json("{}").unwrap();
        assert_eq!(config, ServerConfig::default());
        assert_eq!(config.tcp.unwrap().to_string(), DEFAULT_TCP);
        assert_eq!(config.ws.unwrap().to_string(), DEFAULT_WS);
        assert_eq!(config.mesh.to_string(), DEFAULT_MESH);
        assert!(config.auth_secret.is_none());
    }

    #[test]
    fn a_diarkis_group_file_is_read_as_it_is() {
        let text = include_str!("../../config/diarkis-group.json");
        let mut config = ServerConfig::from_json(r#"{"group": {"relayLimit": 3}}"#).unwrap();
        config.apply_group_file(text).unwrap();
        assert_eq!(config.group.relay_limit, 2);
        assert_eq!(config.group.remote_join_tries, 4);
        assert_eq!(config.group.static_groups.len(), 2);
        let error = config.apply_group_file(r#"{"relayLimit": 0}"#).unwrap_err();
        assert_eq!(error.key, "group.relayLimit");
        let error = config.apply_group_file("{").unwrap_err();
        assert_eq!(error.key, "<group file>");
        // The godoc's example as printed: its placeholder ID is not 52 characters, and the error says where.
        let godoc = r#"{ "remoteJoinTries": 4, "relayLimit": 2, "sendInterval": 300,
            "staticGroups": [ { "groupID": "52 character long unique group ID", "interval": 200 } ] }"#;
        let error = config.apply_group_file(godoc).unwrap_err();
        assert_eq!(error.key, "group.staticGroups[0].groupID");
    }

    #[test]
    fn writer_threads_are_bounded() {
        let config = ServerConfig::from_json(r#"{"server": {"writerThreads": 2}}"#).unwrap();
        assert_eq!(config.writer_threads, Some(2));
        let auto = ServerConfig::from_json(r#"{"server": {"writerThreads": "auto"}}"#).unwrap();
        assert_eq!(auto.writer_threads, None);
        assert_eq!(ServerConfig::default().writer_threads, None);
        for bad in ["65", "-1", "\"two\"", "null"] {
            let text = format!(r#"{{"server": {{"writerThreads": {bad}}}}}"#);
            let error = ServerConfig::from_json(&text).unwrap_err();
            assert_eq!(error.key, "server.writerThreads", "{bad}");
        }
    }

    #[test]
    fn the_udp_receive_buffer_is_bounded() {
        assert_eq!(ServerConfig::default().udp_receive_buffer, 4 << 20);
        let config =
            ServerConfig::from_json(r#"{"server": {"udpReceiveBuffer": 1048576}}"#).unwrap();
        assert_eq!(config.udp_receive_buffer, 1 << 20);
        for bad in ["1000", "2147483648", "\"4M\"", "null"] {
            let text = format!(r#"{{"server": {{"udpReceiveBuffer": {bad}}}}}"#);
            let error = ServerConfig::from_json(&text).unwrap_err();
            assert_eq!(error.key, "server.udpReceiveBuffer", "{bad}");
        }
    }

    #[test]
    fn expose_commands_names_the_client_group_commands() {
        let config =
            ServerConfig::from_json(r#"{"server": {"exposeCommands": ["join", "leave"]}}"#)
                .unwrap();
        let group = group_core::GroupId::from_bytes(&[b'a'; 52]).unwrap();
        let join = Request::Join {
            group,
            message: bytes::Bytes::new(),
        };
        let create = Request::Create(group_core::proto::CreateRequest {
            allow_empty: true,
            join: false,
            ttl_s: 60,
            interval_ms: 0,
        });
        assert!(config.expose_commands.allows(&join));
        assert!(!config.expose_commands.allows(&create));
        assert!(config.expose_commands.allows(&Request::KeepAlive));
        assert!(ServerConfig::default().expose_commands.allows(&create));
        assert!(!ExposedCommands::NONE.allows(&join));
        let error =
            ServerConfig::from_json(r#"{"server": {"exposeCommands": ["jion"]}}"#).unwrap_err();
        assert_eq!(error.key, "server.exposeCommands");
        assert!(error.problem.contains("jion"), "{}", error.problem);
        let error =
            ServerConfig::from_json(r#"{"server": {"exposeCommands": "all"}}"#).unwrap_err();
        assert_eq!(error.key, "server.exposeCommands");
    }

    #[test]
    fn sections_parse_and_errors_name_the_key() {
        let text = r#"{"group": {"relayLimit": 3, "maxTtl": 600},
            "limits": {"maxPayload": 4096, "maxMergeBytes": 4096, "maxGroupsCreatedPerUser": 5},
            "server": {"tcp": "127.0.0.1:0", "ws": null, "authSecret": "0123456789abcdef0123",
                       "helloTimeout": 2500},
            "mesh": {"bind": "127.0.0.1:9000"}}"#;
        let config = ServerConfig::from_json(text).unwrap();
        assert_eq!(config.group.relay_limit, 3);
        assert_eq!(config.group.max_ttl, std::time::Duration::from_secs(600));
        assert_eq!(config.limits.max_groups_created_per_user, 5);
        assert_eq!(
            config.limits.hello_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(config.limits.max_payload, 4096);
        assert_eq!(config.ws, None);
        assert_eq!(config.mesh.port(), 9000);

        let key = |text: &str| ServerConfig::from_json(text).unwrap_err().key;
        assert_eq!(key(r#"{"group": {"relayLimit": 0}}"#), "group.relayLimit");
        assert_eq!(key(r#"{"server": {"tcp": "nowhere"}}"#), "server.tcp");
        assert_eq!(key(r#"{"mesh": {"secret": "short"}}"#), "mesh.secret");
        assert_eq!(
            key(r#"{"server": {"authSecret": "short"}}"#),
            "server.authSecret"
        );
        assert_eq!(key(r#"{"server": {"tpc": "127.0.0.1:1"}}"#), "server.tpc");
        assert_eq!(
            key(r#"{"server": {"hookTimeout": 0}}"#),
            "server.hookTimeout"
        );
        let timeout = ServerConfig::from_json(r#"{"server": {"hookTimeout": 3}}"#)
            .unwrap()
            .hook_timeout;
        assert_eq!(timeout, std::time::Duration::from_secs(3));
        assert_eq!(key(r#"{"mesh": {"bind": "[::1]:8100"}}"#), "mesh.bind");
        assert_eq!(
            key(r#"{"mesh": {"bind": "0.0.0.0:8100"}}"#),
            "mesh.advertise"
        );
        assert_eq!(
            key(r#"{"mesh": {"seeds": ["127.0.0.1:1", "no port"]}}"#),
            "mesh.seeds[1]"
        );
        assert_eq!(
            key(r#"{"mesh": {"probeInterval": 1}}"#),
            "mesh.probeInterval"
        );
        let mesh = ServerConfig::from_json(
            r#"{"mesh": {"bind": "0.0.0.0:8100", "advertise": "10.1.2.3:8100",
                "seeds": ["10.1.2.4:8100"], "suspectTimeout": 1500}}"#,
        )
        .unwrap();
        assert_eq!(mesh.mesh_identity().to_string(), "10.1.2.3:8100");
        assert_eq!(mesh.mesh_seeds.len(), 1);
        assert_eq!(
            mesh.mesh_suspect_timeout,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(key(r#"{"extra": {}}"#), "extra");
        assert_eq!(key("{"), "<file>");
    }
}
