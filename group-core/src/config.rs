//! Configuration: Diarkis's Group JSON section, this crate's limits, and the node's identity.
//!
//! Parsing is done by hand over `serde_json::Value` rather than with derived `Deserialize` so that every
//! error names the key path and the offending value (`group.relayLimit: must be between 1 and 64, got 0`),
//! which is what an operator needs when a node refuses to start.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::id::{GroupId, NodeAddr};

/// Intervals below this are treated as "no merging", as in Diarkis.
pub const MIN_MERGE_INTERVAL: Duration = Duration::from_millis(100);

/// A configuration value that was refused. Fix the named key and start again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}, got {value}")]
pub struct ConfigError {
    /// Path of the key, e.g. `group.staticGroups[1].groupID`.
    pub key: String,
    /// What the key requires.
    pub problem: String,
    /// The value that was given, as JSON text (or `<invalid JSON>` for a syntax error).
    pub value: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>, value: &Value) -> Self {
        ConfigError {
            key: key.to_string(),
            problem: problem.into(),
            value: short_json(value),
        }
    }
}

fn short_json(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 80 {
        let cut = (0..=77)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// One entry of `staticGroups`: a group that exists on every node from start and is never deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticGroup {
    /// The configured 52-character ID.
    pub id: GroupId,
    /// Merge interval; zero when configured below 100 ms.
    pub interval: Duration,
}

/// The Group section, key for key as Diarkis documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `remoteJoinTries`: how many addresses of a group ID a remote join tries before giving up.
    pub remote_join_tries: u32,
    /// `relayLimit`: the width of the relay tree between nodes.
    pub relay_limit: u32,
    /// `sendInterval` (ms): how long replicas on other nodes buffer outbound pushes. Zero: no buffering.
    pub send_interval: Duration,
    /// `staticGroups`.
    pub static_groups: Vec<StaticGroup>,
    /// `maxTtl` (seconds): the longest ttl a Create may ask for (default 3600). An empty group lives
    /// that long at most, so one user cannot fill the node with groups that outlive everyone's interest.
    pub max_ttl: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            remote_join_tries: 4,
            relay_limit: 2,
            send_interval: Duration::from_millis(300),
            static_groups: Vec::new(),
            max_ttl: Duration::from_secs(3600),
        }
    }
}

impl GroupConfig {
    /// Parses the Group section from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Self::from_value("group", &parse_json("group", text)?)
    }

    /// Parses the Group section from an already parsed value; `path` prefixes key names in errors.
    pub fn from_value(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let object = as_object(path, value)?;
        let mut config = GroupConfig::default();
        for (key, value) in object {
            let key_path = format!("{path}.{key}");
            match key.as_str() {
                "remoteJoinTries" => config.remote_join_tries = int_in(&key_path, value, 1, 16)?,
                "relayLimit" => config.relay_limit = int_in(&key_path, value, 1, 64)?,
                "sendInterval" => {
                    config.send_interval =
                        Duration::from_millis(int_in(&key_path, value, 0, 60_000)?)
                }
                "staticGroups" => config.static_groups = parse_static_groups(&key_path, value)?,
                "maxTtl" => {
                    config.max_ttl = Duration::from_secs(int_in(&key_path, value, 11, 65_535)?)
                }
                _ => return Err(unknown_key(&key_path, value, GROUP_KEYS)),
            }
        }
        Ok(config)
    }
}

const GROUP_KEYS: &[&str] = &[
    "remoteJoinTries",
    "relayLimit",
    "sendInterval",
    "staticGroups",
    "maxTtl",
];
const MAX_STATIC_GROUPS: usize = 1024;

fn parse_static_groups(path: &str, value: &Value) -> Result<Vec<StaticGroup>, ConfigError> {
    let Value::Array(items) = value else {
        return Err(ConfigError::new(path, "must be an array", value));
    };
    if items.len() > MAX_STATIC_GROUPS {
        return Err(ConfigError::new(
            path,
            format!("at most {MAX_STATIC_GROUPS} static groups"),
            &Value::from(items.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut groups = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let object = as_object(&item_path, item)?;
        let mut id = None;
        let mut interval = Duration::ZERO;
        for (key, value) in object {
            let key_path = format!("{item_path}.{key}");
            match key.as_str() {
                "groupID" => {
                    let Value::String(text) = value else {
                        return Err(ConfigError::new(&key_path, "must be a string", value));
                    };
                    let parsed = GroupId::from_bytes(text.as_bytes())
                        .map_err(|e| ConfigError::new(&key_path, e.to_string(), value))?;
                    if !seen.insert(parsed) {
                        return Err(ConfigError::new(
                            &key_path,
                            "duplicate static group ID",
                            value,
                        ));
                    }
                    id = Some(parsed);
                }
                "interval" => interval = merge_interval(int_in(&key_path, value, 0, 60_000)?),
                _ => return Err(unknown_key(&key_path, value, &["groupID", "interval"])),
            }
        }
        let id = id.ok_or_else(|| {
            ConfigError::new(&format!("{item_path}.groupID"), "is required", &Value::Null)
        })?;
        groups.push(StaticGroup { id, interval });
    }
    Ok(groups)
}

/// Applies Diarkis's rule that an interval below 100 ms means no merging.
pub fn merge_interval(interval_ms: u64) -> Duration {
    let interval = Duration::from_millis(interval_ms);
    if interval < MIN_MERGE_INTERVAL {
        Duration::ZERO
    } else {
        interval
    }
}

/// Bounds on everything the node holds. Each limit, when reached, turns into an explicit error for the
/// request that would exceed it; none is ever exceeded silently and none causes a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `maxPayload`: largest client frame payload accepted, in bytes (default 65536).
    pub max_payload: u32,
    /// `maxConnections`: connections the node tracks at once (default 100000).
    pub max_connections: usize,
    /// `maxGroups`: groups on this node, static ones included (default 100000).
    pub max_groups: usize,
    /// `maxGroupsPerUser`: groups one user may be in at once (default 64).
    pub max_groups_per_user: usize,
    /// `maxMembersPerGroup`: members of one group (default 10000).
    pub max_members_per_group: usize,
    /// `maxGroupsCreatedPerUser`: groups one user may have created that this node still owns, whether or
    /// not the user is still in them (default 64). With `group.maxTtl`, what one user can make the node hold.
    pub max_groups_created_per_user: usize,
    /// `maxMergeBytes`: bytes of broadcasts a merging group buffers before it flushes early, so a busy
    /// group's merged push never outgrows what clients accept (default 65536; at most `maxPayload`).
    pub max_merge_bytes: usize,
    /// `maxQueuedBytesPerConnection`: bytes of frames queued for one connection's writer; beyond it the
    /// connection is a slow consumer and is cut (default 1 MiB, or twice `maxPayload` if that is more;
    /// at least twice `maxPayload`). Enforced by the driver.
    pub max_queued_bytes_per_connection: usize,
    /// `maxBufferedBytes`: bytes the whole server buffers for connections, queued outbound frames and
    /// inbound frames on their way to the node; when spent, new connections are refused and the
    /// connections with the most queued are cut first (default 256 MiB). Enforced by the driver.
    pub max_buffered_bytes: usize,
    /// `maxRequestsPerSecond`: frames one connection may send per second, sustained (a token bucket that
    /// holds one second's worth); beyond it requests are refused, and a connection that keeps going is
    /// cut (default 1000). Enforced by the driver.
    pub max_requests_per_second: u32,
    /// `maxInboundBytesPerSecond`: bytes of frames one connection may send per second, sustained (a
    /// bucket holding one second's worth, and at least one largest frame). Beyond it the server reads
    /// that connection more slowly, so the client waits: nothing is refused (default 1 MiB). Bounds the
    /// work one connection can make the server do, which a frame count alone does not.
    pub max_inbound_bytes_per_second: usize,
    /// `connectionTtl` (seconds): a connection with no traffic for this long is discarded (default 10).
    pub connection_ttl: Duration,
    /// How long a connection may stay without saying Hello, whatever else it sends (default 5 s). Set by
    /// group-net's `server.helloTimeout`, not a key of this section.
    pub hello_timeout: Duration,
    /// `meshRequestTimeout` (milliseconds): how long a remote join waits for the node it asked before it
    /// tries the next address of the group ID (default 2000).
    pub mesh_request_timeout: Duration,
    /// `meshSyncInterval` (milliseconds): how often an owner tells the nodes holding copies of its groups
    /// which versions are current, so that a copy that missed a change catches up (default 5000).
    pub mesh_sync_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload: 65_536,
            max_connections: 100_000,
            max_groups: 100_000,
            max_groups_per_user: 64,
            max_members_per_group: 10_000,
            max_groups_created_per_user: 64,
            max_merge_bytes: 65_536,
            max_queued_bytes_per_connection: 1 << 20,
            max_buffered_bytes: 256 << 20,
            max_requests_per_second: 1000,
            max_inbound_bytes_per_second: 1 << 20,
            connection_ttl: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(5),
            mesh_request_timeout: Duration::from_secs(2),
            mesh_sync_interval: Duration::from_secs(5),
        }
    }
}

const LIMIT_KEYS: &[&str] = &[
    "maxPayload",
    "maxConnections",
    "maxGroups",
    "maxGroupsPerUser",
    "maxMembersPerGroup",
    "maxGroupsCreatedPerUser",
    "maxMergeBytes",
    "maxQueuedBytesPerConnection",
    "maxBufferedBytes",
    "maxRequestsPerSecond",
    "maxInboundBytesPerSecond",
    "connectionTtl",
    "meshRequestTimeout",
    "meshSyncInterval",
];

impl Limits {
    /// Parses the limits section from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Self::from_value("limits", &parse_json("limits", text)?)
    }

    /// Parses the limits section from an already parsed value; `path` prefixes key names in errors.
    pub fn from_value(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let object = as_object(path, value)?;
        let mut limits = Limits::default();
        for (key, value) in object {
            let key_path = format!("{path}.{key}");
            match key.as_str() {
                "maxPayload" => limits.max_payload = int_in(&key_path, value, 64, 16 << 20)?,
                "maxConnections" => {
                    limits.max_connections = int_in(&key_path, value, 1, 10_000_000)?
                }
                "maxGroups" => limits.max_groups = int_in(&key_path, value, 1, 10_000_000)?,
                "maxGroupsPerUser" => {
                    limits.max_groups_per_user = int_in(&key_path, value, 1, 65_536)?
                }
                "maxMembersPerGroup" => {
                    limits.max_members_per_group = int_in(&key_path, value, 1, 1_000_000)?
                }
                "maxGroupsCreatedPerUser" => {
                    limits.max_groups_created_per_user = int_in(&key_path, value, 1, 1_000_000)?
                }
                "maxMergeBytes" => limits.max_merge_bytes = int_in(&key_path, value, 64, 16 << 20)?,
                "maxQueuedBytesPerConnection" => {
                    limits.max_queued_bytes_per_connection =
                        int_in(&key_path, value, 4096, 1 << 30)?
                }
                "maxBufferedBytes" => {
                    limits.max_buffered_bytes = int_in(&key_path, value, 4096, 1 << 40)?
                }
                "maxInboundBytesPerSecond" => {
                    limits.max_inbound_bytes_per_second = int_in(&key_path, value, 1024, 1 << 40)?
                }
                "maxRequestsPerSecond" => {
                    limits.max_requests_per_second = int_in(&key_path, value, 1, 10_000_000)?
                }
                "connectionTtl" => {
                    limits.connection_ttl =
                        Duration::from_secs(int_in(&key_path, value, 1, 86_400)?)
                }
                "meshRequestTimeout" => {
                    limits.mesh_request_timeout =
                        Duration::from_millis(int_in(&key_path, value, 10, 600_000)?)
                }
                "meshSyncInterval" => {
                    limits.mesh_sync_interval =
                        Duration::from_millis(int_in(&key_path, value, 100, 3_600_000)?)
                }
                _ => return Err(unknown_key(&key_path, value, LIMIT_KEYS)),
            }
        }
        let twice_payload = 2 * limits.max_payload as usize;
        if !object.contains_key("maxQueuedBytesPerConnection") {
            // The default follows a raised maxPayload, so that raising one key is enough.
            limits.max_queued_bytes_per_connection =
                limits.max_queued_bytes_per_connection.max(twice_payload);
        }
        if limits.max_queued_bytes_per_connection < twice_payload {
            return Err(ConfigError::new(
                &format!("{path}.maxQueuedBytesPerConnection"),
                format!(
                    "must be at least twice maxPayload ({twice_payload}), or one large frame would cut a connection"
                ),
                &Value::from(limits.max_queued_bytes_per_connection),
            ));
        }
        if limits.max_buffered_bytes < limits.max_queued_bytes_per_connection {
            return Err(ConfigError::new(
                &format!("{path}.maxBufferedBytes"),
                format!(
                    "must be at least maxQueuedBytesPerConnection ({})",
                    limits.max_queued_bytes_per_connection
                ),
                &Value::from(limits.max_buffered_bytes),
            ));
        }
        if limits.max_merge_bytes > limits.max_payload as usize {
            return Err(ConfigError::new(
                &format!("{path}.maxMergeBytes"),
                format!("must not exceed maxPayload ({})", limits.max_payload),
                &Value::from(limits.max_merge_bytes),
            ));
        }
        Ok(limits)
    }
}

/// Everything a [`crate::Node`] needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's mesh address: written into the IDs of groups it creates and recorded for its members.
    pub addr: NodeAddr,
    /// Seed for session IDs and random-join picks. Drivers pass OS randomness; simulations a fixed value.
    pub seed: u64,
    /// Wall-clock time (ns since the Unix epoch) at the driver's [`crate::Instant::ZERO`]. Group IDs carry
    /// `clock_origin_ns + now`, so that IDs read as creation times, without the core reading a clock.
    pub clock_origin_ns: u64,
    /// The Group section.
    pub group: GroupConfig,
    /// Bounds.
    pub limits: Limits,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            addr: NodeAddr::new(Ipv4Addr::LOCALHOST, 8100),
            seed: 0,
            clock_origin_ns: 0,
            group: GroupConfig::default(),
            limits: Limits::default(),
        }
    }
}

fn parse_json(path: &str, text: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError {
        key: path.to_string(),
        problem: format!("invalid JSON ({e})"),
        value: "<invalid JSON>".to_string(),
    })
}

fn as_object<'a>(path: &str, value: &'a Value) -> Result<&'a Map<String, Value>, ConfigError> {
    value
        .as_object()
        .ok_or_else(|| ConfigError::new(path, "must be a JSON object", value))
}

fn unknown_key(path: &str, value: &Value, known: &[&str]) -> ConfigError {
    ConfigError::new(
        path,
        format!("unknown key (known keys: {})", known.join(", ")),
        value,
    )
}

fn int_in<T: TryFrom<u64>>(
    path: &str,
    value: &Value,
    min: u64,
    max: u64,
) -> Result<T, ConfigError> {
    let problem = || format!("must be an integer between {min} and {max}");
    let n = value
        .as_u64()
        .ok_or_else(|| ConfigError::new(path, problem(), value))?;
    if !(min..=max).contains(&n) {
        return Err(ConfigError::new(path, problem(), value));
    }
    T::try_from(n).map_err(|_| ConfigError::new(path, problem(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_diarkis() {
        let config = GroupConfig::from_json("{}").unwrap();
        assert_eq!(config.remote_join_tries, 4);
        assert_eq!(config.relay_limit, 2);
        assert_eq!(config.send_interval, Duration::from_millis(300));
        assert!(config.static_groups.is_empty());
    }

    #[test]
    fn parses_the_documented_example() {
        let text = r#"{
            "remoteJoinTries": 3, "relayLimit": 5, "sendInterval": 0,
            "staticGroups": [
                { "groupID": "AA11111222223333344444555556666677777888889999900000", "interval": 200 },
                { "groupID": "BB11111222223333344444555556666677777888889999900000", "interval": 50 }
            ]
        }"#;
        let config = GroupConfig::from_json(text).unwrap();
        assert_eq!(config.remote_join_tries, 3);
        assert_eq!(config.relay_limit, 5);
        assert_eq!(config.send_interval, Duration::ZERO);
        assert_eq!(config.static_groups.len(), 2);
        assert_eq!(config.static_groups[0].interval, Duration::from_millis(200));
        // Below 100 ms means no merging.
        assert_eq!(config.static_groups[1].interval, Duration::ZERO);
    }

    fn error_of(text: &str) -> ConfigError {
        GroupConfig::from_json(text).unwrap_err()
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = error_of(r#"{"relayLimt": 2}"#);
        assert_eq!(e.key, "group.relayLimt");
        assert!(e.problem.contains("unknown key"), "{e}");

        let e = error_of(r#"{"relayLimit": "two"}"#);
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("group.relayLimit", "\"two\"")
        );

        let e = error_of(r#"{"remoteJoinTries": 0}"#);
        assert_eq!(
            e.to_string(),
            "group.remoteJoinTries: must be an integer between 1 and 16, got 0"
        );

        let e = error_of(r#"{"sendInterval": -1}"#);
        assert_eq!(e.key, "group.sendInterval");

        let e = error_of(r#"{"staticGroups": [{"groupID": "short"}]}"#);
        assert_eq!(e.key, "group.staticGroups[0].groupID");
        assert!(e.problem.contains("exactly 52"), "{e}");

        let e = error_of(r#"{"staticGroups": [{"interval": 100}]}"#);
        assert_eq!(e.key, "group.staticGroups[0].groupID");

        let id = "AA11111222223333344444555556666677777888889999900000";
        let dup = format!(r#"{{"staticGroups": [{{"groupID": "{id}"}}, {{"groupID": "{id}"}}]}}"#);
        assert_eq!(error_of(&dup).key, "group.staticGroups[1].groupID");

        let e = error_of(r#"{"staticGroups": [{"groupID": 5, "x": 1}]}"#);
        assert_eq!(e.key, "group.staticGroups[0].groupID");

        let e = error_of("[1,2");
        assert_eq!(e.key, "group");
        assert!(e.problem.contains("invalid JSON"));
    }

    #[test]
    fn limits_parse_and_validate() {
        let limits =
            Limits::from_json(r#"{"maxPayload": 1024, "maxMergeBytes": 512, "connectionTtl": 3}"#)
                .unwrap();
        assert_eq!(limits.max_payload, 1024);
        assert_eq!(limits.connection_ttl, Duration::from_secs(3));
        let e = Limits::from_json(r#"{"maxPayload": 1024}"#).unwrap_err();
        assert_eq!(e.key, "limits.maxMergeBytes");
        let e = Limits::from_json(r#"{"maxGroupsPerUser": 0}"#).unwrap_err();
        assert_eq!(e.key, "limits.maxGroupsPerUser");
        let e = Limits::from_json(r#"{"bogus": true}"#).unwrap_err();
        assert!(
            e.problem.contains("maxPayload"),
            "known keys are listed: {e}"
        );
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let long = "x".repeat(500);
        let e = error_of(&format!(r#"{{"relayLimit": "{long}"}}"#));
        assert!(e.value.len() <= 80, "{}", e.value.len());
    }
}
