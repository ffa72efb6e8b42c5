//! Broker and topic settings under Kafka's names. Sources are layered: defaults, then a TOML
//! file, then `VLTAVA_*` environment variables, then `--set key=value`, then dedicated flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vltava_storage::LogConfig;

/// A setting that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a setting we know.
    #[error("unknown setting '{0}'")]
    Unknown(String),
    /// Known setting, unusable value.
    #[error("invalid value '{value}' for '{name}': {reason}")]
    Invalid {
        /// Setting name.
        name: String,
        /// Offending value.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// File path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Long {
        min: i64,
    },
    Int {
        min: i64,
    },
    Bool,
    Str,
    OneOf(&'static [&'static str]),
    /// A fraction in [0, 1].
    Ratio,
    /// Kafka's `cleanup.policy` list: delete, compact, or both.
    Policy,
    /// A cluster id (empty: unset).
    ClusterId,
    /// `ID@HOST:PORT,...` (empty: unset).
    Voters,
}

/// Where the HTTP listener binds when `http.listen` is not set.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8092";

/// Broker settings: (name, default, kind, doc). Kafka's names where Kafka has one.
const BROKER_SETTINGS: &[(&str, &str, Kind)] = &[
    ("node.id", "1", Kind::Int { min: 0 }),
    (
        "process.roles",
        "broker,controller",
        Kind::OneOf(&[
            "broker,controller",
            "controller,broker",
            "broker",
            "controller",
        ]),
    ),
    ("cluster.id", "", Kind::ClusterId),
    ("controller.quorum.voters", "", Kind::Voters),
    ("controller.quorum.bootstrap.servers", "", Kind::Str),
    ("controller.listen", "", Kind::Str),
    ("broker.rack", "", Kind::Str),
    ("broker.session.timeout.ms", "9000", Kind::Long { min: 1 }),
    (
        "broker.heartbeat.interval.ms",
        "2000",
        Kind::Long { min: 1 },
    ),
    (
        "controller.quorum.election.timeout.ms",
        "1000",
        Kind::Long { min: 10 },
    ),
    ("listen", "127.0.0.1:9092", Kind::Str),
    // The HTTP listener (health, /metrics): HOST:PORT, or `none` for no listener.
    ("http.listen", DEFAULT_HTTP_LISTEN, Kind::Str),
    // The web console on the HTTP listener without its actions (create, delete, grow, reset).
    ("http.read.only", "false", Kind::Bool),
    // How `vltava serve` writes its log lines to stderr.
    ("log.format", "text", Kind::OneOf(&["text", "json"])),
    ("advertised.listener", "", Kind::Str),
    ("data.dir", "./vltava-data", Kind::Str),
    ("num.partitions", "1", Kind::Int { min: 1 }),
    ("default.replication.factor", "1", Kind::Int { min: 1 }),
    ("auto.create.topics.enable", "true", Kind::Bool),
    ("delete.topic.enable", "true", Kind::Bool),
    ("message.max.bytes", "1048588", Kind::Int { min: 0 }),
    (
        "socket.request.max.bytes",
        "104857600",
        Kind::Int { min: 1024 },
    ),
    ("max.connections", "10000", Kind::Int { min: 1 }),
    (
        "queued.max.request.bytes",
        "268435456",
        Kind::Long { min: 1024 },
    ),
    ("connections.max.idle.ms", "600000", Kind::Long { min: -1 }),
    ("min.insync.replicas", "1", Kind::Int { min: 1 }),
    ("replica.lag.time.max.ms", "30000", Kind::Long { min: 1 }),
    ("replica.fetch.wait.max.ms", "500", Kind::Long { min: 0 }),
    ("replica.fetch.min.bytes", "1", Kind::Int { min: 1 }),
    (
        "replica.fetch.max.bytes",
        "1048576",
        Kind::Int { min: 1024 },
    ),
    (
        "replica.fetch.response.max.bytes",
        "10485760",
        Kind::Int { min: 1024 },
    ),
    ("replica.fetch.backoff.ms", "1000", Kind::Long { min: 0 }),
    // KIP-392: empty (Kafka's null) serves consumers from the leader only.
    (
        "replica.selector.class",
        "",
        Kind::OneOf(&[
            "",
            "org.apache.kafka.common.replica.RackAwareReplicaSelector",
            "RackAwareReplicaSelector",
            "rack-aware",
        ]),
    ),
    ("compression.type", "producer", Kind::OneOf(&["producer"])),
    ("log.cleanup.policy", "delete", Kind::Policy),
    ("log.cleaner.min.cleanable.ratio", "0.5", Kind::Ratio),
    (
        "log.cleaner.min.compaction.lag.ms",
        "0",
        Kind::Long { min: 0 },
    ),
    ("log.cleaner.backoff.ms", "15000", Kind::Long { min: 1 }),
    ("log.segment.bytes", "1073741824", Kind::Int { min: 14 }),
    ("log.roll.ms", "604800000", Kind::Long { min: 1 }),
    ("log.retention.ms", "604800000", Kind::Long { min: -1 }),
    ("log.retention.bytes", "-1", Kind::Long { min: -1 }),
    (
        "log.retention.check.interval.ms",
        "300000",
        Kind::Long { min: 1 },
    ),
    (
        "log.segment.delete.delay.ms",
        "60000",
        Kind::Long { min: 0 },
    ),
    ("log.index.interval.bytes", "4096", Kind::Int { min: 0 }),
    // Ours: acknowledge a produce only once an fsync covers it (group commit).
    ("flush.on.append", "false", Kind::Bool),
    ("log.index.size.max.bytes", "10485760", Kind::Int { min: 4 }),
    (
        "log.flush.interval.messages",
        "9223372036854775807",
        Kind::Long { min: 1 },
    ),
    (
        "log.flush.interval.ms",
        "9223372036854775807",
        Kind::Long { min: 0 },
    ),
    (
        "log.flush.offset.checkpoint.interval.ms",
        "60000",
        Kind::Long { min: 1 },
    ),
    (
        "log.message.timestamp.type",
        "CreateTime",
        Kind::OneOf(&["CreateTime"]),
    ),
    ("unclean.leader.election.enable", "false", Kind::Bool),
    ("auto.leader.rebalance.enable", "true", Kind::Bool),
    (
        "leader.imbalance.check.interval.seconds",
        "300",
        Kind::Long { min: 1 },
    ),
    (
        "log.cleaner.delete.retention.ms",
        "86400000",
        Kind::Long { min: 0 },
    ),
    ("offsets.topic.num.partitions", "50", Kind::Int { min: 1 }),
    // Capped by the brokers there are when the topic is created (see Cluster).
    (
        "offsets.topic.replication.factor",
        "3",
        Kind::Int { min: 1 },
    ),
    ("offsets.commit.timeout.ms", "5000", Kind::Long { min: 1 }),
    ("offsets.retention.minutes", "10080", Kind::Long { min: 1 }),
    (
        "offsets.retention.check.interval.ms",
        "600000",
        Kind::Long { min: 1 },
    ),
    ("group.min.session.timeout.ms", "6000", Kind::Int { min: 1 }),
    (
        "group.max.session.timeout.ms",
        "1800000",
        Kind::Int { min: 1 },
    ),
    (
        "group.initial.rebalance.delay.ms",
        "3000",
        Kind::Int { min: 0 },
    ),
];

/// Topic-level settings and the broker setting that supplies each one's default.
const TOPIC_SETTINGS: &[(&str, &str, Kind)] = &[
    ("flush.on.append", "flush.on.append", Kind::Bool),
    ("cleanup.policy", "log.cleanup.policy", Kind::Policy),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        Kind::Ratio,
    ),
    (
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        Kind::Long { min: 0 },
    ),
    (
        "compression.type",
        "compression.type",
        Kind::OneOf(&["producer"]),
    ),
    (
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        Kind::Long { min: 0 },
    ),
    (
        "file.delete.delay.ms",
        "log.segment.delete.delay.ms",
        Kind::Long { min: 0 },
    ),
    (
        "flush.messages",
        "log.flush.interval.messages",
        Kind::Long { min: 1 },
    ),
    ("flush.ms", "log.flush.interval.ms", Kind::Long { min: 0 }),
    (
        "index.interval.bytes",
        "log.index.interval.bytes",
        Kind::Int { min: 0 },
    ),
    (
        "max.message.bytes",
        "message.max.bytes",
        Kind::Int { min: 0 },
    ),
    (
        "message.timestamp.type",
        "log.message.timestamp.type",
        Kind::OneOf(&["CreateTime"]),
    ),
    (
        "min.insync.replicas",
        "min.insync.replicas",
        Kind::Int { min: 1 },
    ),
    (
        "retention.bytes",
        "log.retention.bytes",
        Kind::Long { min: -1 },
    ),
    ("retention.ms", "log.retention.ms", Kind::Long { min: -1 }),
    ("segment.bytes", "log.segment.bytes", Kind::Int { min: 14 }),
    (
        "segment.index.bytes",
        "log.index.size.max.bytes",
        Kind::Int { min: 4 },
    ),
    ("segment.ms", "log.roll.ms", Kind::Long { min: 1 }),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        Kind::Bool,
    ),
];

const VOTERS_SHAPE: &str = "expected ID@HOST:PORT[,ID@HOST:PORT...]";

/// `ID@HOST:PORT,...` as id -> address; ids unique and not negative.
fn parse_voters(raw: &str) -> Result<BTreeMap<i32, String>, ()> {
    let mut out = BTreeMap::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item.split_once('@').ok_or(())?;
        let id: i32 = id.parse().map_err(|_| ())?;
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if id < 0 || !port_ok || out.insert(id, addr.to_string()).is_some() {
            return Err(());
        }
    }
    Ok(out)
}

fn check(name: &str, value: &str, kind: Kind) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    match kind {
        Kind::Long { min } | Kind::Int { min } => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("expected an integer".into()))?;
            if matches!(kind, Kind::Int { .. }) && i32::try_from(v).is_err() {
                return Err(invalid("out of range for a 32-bit integer".into()));
            }
            if v < min {
                return Err(invalid(format!("must be at least {min}")));
            }
        }
        Kind::Bool => {
            if !matches!(value.trim(), "true" | "false") {
                return Err(invalid("expected true or false".into()));
            }
        }
        Kind::Str => {}
        Kind::Ratio => {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("expected a number".into()))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid("must be between 0 and 1".into()));
            }
        }
        Kind::Policy => {
            if vltava_storage::CleanupPolicy::parse(value).is_none() {
                return Err(invalid(
                    "expected delete, compact, or compact,delete".into(),
                ));
            }
        }
        Kind::ClusterId => {
            if !value.is_empty() && !crate::meta::valid_cluster_id(value) {
                return Err(invalid(
                    "expected 1 to 64 characters of A-Z a-z 0-9 - _".into(),
                ));
            }
        }
        Kind::Voters => {
            parse_voters(value).map_err(|()| invalid(VOTERS_SHAPE.into()))?;
        }
        Kind::OneOf(allowed) => {
            if !allowed.contains(&value.trim()) {
                return Err(invalid(format!(
                    "supported values: {} (other values are not implemented yet)",
                    allowed.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Validates one topic-level setting (CreateTopics, AlterConfigs).
pub fn validate_topic_setting(name: &str, value: &str) -> Result<(), ConfigError> {
    let (_, _, kind) = TOPIC_SETTINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
    check(name, value, *kind)
}

/// Names of all topic-level settings, in order.
pub fn topic_setting_names() -> impl Iterator<Item = &'static str> {
    TOPIC_SETTINGS.iter().map(|(n, _, _)| *n)
}

/// The validated broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    values: BTreeMap<String, String>,
    explicit: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            values: BROKER_SETTINGS
                .iter()
                .map(|(n, d, _)| (n.to_string(), d.to_string()))
                .collect(),
            explicit: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Sets one broker setting after validating it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let name = name.trim();
        let (_, _, kind) = BROKER_SETTINGS
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
        check(name, value, *kind)?;
        self.values
            .insert(name.to_string(), value.trim().to_string());
        self.explicit
            .insert(name.to_string(), value.trim().to_string());
        Ok(())
    }

    /// Loads a TOML file whose keys are setting names; dotted keys may be quoted
    /// (`"log.segment.bytes" = 1048576`) or written as nested tables.
    pub fn load_toml(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_err(e.to_string()))?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        for (k, v) in flat {
            self.set(&k, &v)?;
        }
        Ok(())
    }

    /// Applies `VLTAVA_*` variables: `VLTAVA_LOG_SEGMENT_BYTES` sets `log.segment.bytes`.
    pub fn load_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (k, v) in vars {
            let Some(rest) = k.strip_prefix("VLTAVA_") else {
                continue;
            };
            let name = rest.to_ascii_lowercase().replace('_', ".");
            // Other tools use the VLTAVA_ prefix too (test harnesses, the client's
            // VLTAVA_BOOTSTRAP); only names of broker settings are applied.
            match self.set(&name, &v) {
                Err(ConfigError::Unknown(_)) => {
                    tracing::warn!(variable = %k, "ignoring environment variable: no broker setting '{name}'");
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Raw string value of a broker setting.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// All broker settings with their values and whether they were set explicitly.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str(), self.explicit.contains_key(k)))
    }

    fn long(&self, name: &str) -> i64 {
        // Every stored value passed `check`, so parsing cannot fail; 0 is unreachable.
        self.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    fn boolean(&self, name: &str) -> bool {
        self.get(name) == Some("true")
    }

    /// `node.id`.
    pub fn node_id(&self) -> i32 {
        self.long("node.id") as i32
    }
    /// `cluster.id`, if set: the cluster this node must belong to.
    pub fn cluster_id(&self) -> Option<&str> {
        self.get("cluster.id").filter(|c| !c.is_empty())
    }
    /// `broker.rack`, if set.
    pub fn rack(&self) -> Option<&str> {
        self.get("broker.rack").filter(|r| !r.is_empty())
    }
    /// `broker.session.timeout.ms`.
    pub fn broker_session_timeout_ms(&self) -> i64 {
        self.long("broker.session.timeout.ms")
    }
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the ISR.
    pub fn replica_lag_time_max_ms(&self) -> i64 {
        self.long("replica.lag.time.max.ms")
    }
    /// How often the controller moves leadership back to preferred replicas, in ms:
    /// `leader.imbalance.check.interval.seconds` when `auto.leader.rebalance.enable` is on.
    pub fn leader_imbalance_check_interval_ms(&self) -> Option<i64> {
        (self.get("auto.leader.rebalance.enable") != Some("false")).then(|| {
            self.long("leader.imbalance.check.interval.seconds")
                .saturating_mul(1000)
        })
    }
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch may park at the leader.
    pub fn replica_fetch_wait_max_ms(&self) -> i64 {
        self.long("replica.fetch.wait.max.ms")
    }
    /// `replica.fetch.min.bytes`.
    pub fn replica_fetch_min_bytes(&self) -> i32 {
        self.long("replica.fetch.min.bytes") as i32
    }
    /// `replica.fetch.max.bytes`: per partition.
    pub fn replica_fetch_max_bytes(&self) -> i32 {
        self.long("replica.fetch.max.bytes") as i32
    }
    /// `replica.fetch.response.max.bytes`: per fetch response.
    pub fn replica_fetch_response_max_bytes(&self) -> i32 {
        self.long("replica.fetch.response.max.bytes") as i32
    }
    /// `replica.fetch.backoff.ms`: the pause after a failed follower fetch.
    pub fn replica_fetch_backoff_ms(&self) -> u64 {
        self.long("replica.fetch.backoff.ms").max(0) as u64
    }
    /// `replica.selector.class`: which replica serves a consumer's fetch (KIP-392).
    pub fn replica_selector(&self) -> crate::replica::selector::ReplicaSelector {
        crate::replica::selector::ReplicaSelector::parse(
            self.get("replica.selector.class").unwrap_or(""),
        )
        .unwrap_or_default()
    }
    /// `broker.heartbeat.interval.ms`.
    pub fn broker_heartbeat_interval_ms(&self) -> u64 {
        self.long("broker.heartbeat.interval.ms").max(1) as u64
    }
    /// `controller.quorum.election.timeout.ms`.
    pub fn election_timeout_ms(&self) -> u64 {
        self.long("controller.quorum.election.timeout.ms").max(10) as u64
    }
    /// Whether `process.roles` includes the broker.
    pub fn is_broker(&self) -> bool {
        self.get("process.roles")
            .is_none_or(|r| r.contains("broker"))
    }

    /// Whether `process.roles` includes the controller.
    pub fn is_controller(&self) -> bool {
        self.get("process.roles")
            .is_none_or(|r| r.contains("controller"))
    }
    /// `controller.quorum.voters` (`ID@HOST:PORT,...`) as id -> address; empty when unset.
    /// The value passed `check` when it was set.
    pub fn quorum_voters(&self) -> BTreeMap<i32, String> {
        parse_voters(self.get("controller.quorum.voters").unwrap_or("")).unwrap_or_default()
    }
    /// `controller.quorum.bootstrap.servers`.
    pub fn quorum_bootstrap_servers(&self) -> Vec<String> {
        self.get("controller.quorum.bootstrap.servers")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
    /// The controller (metadata) listener's address, if any.
    pub fn controller_listen(&self) -> Option<&str> {
        self.get("controller.listen").filter(|a| !a.is_empty())
    }
    /// Whether `name` was set by a file, the environment, `--set` or a flag (not a default).
    pub fn is_explicit(&self, name: &str) -> bool {
        self.explicit.contains_key(name)
    }
    /// The HTTP listener's address (`http.listen`), `None` when it is `none` or empty.
    pub fn http_listen(&self) -> Option<&str> {
        self.get("http.listen")
            .map(str::trim)
            .filter(|a| !a.is_empty() && !a.eq_ignore_ascii_case("none"))
    }
    /// `http.read.only`: the web console shows, and refuses every action.
    pub fn http_read_only(&self) -> bool {
        self.boolean("http.read.only")
    }
    /// `log.format`: `text` or `json`.
    pub fn log_format(&self) -> &str {
        self.get("log.format").unwrap_or("text")
    }
    /// Address to bind.
    pub fn listen(&self) -> &str {
        self.get("listen").unwrap_or("127.0.0.1:9092")
    }
    /// Address given to clients in Metadata; defaults to the listen address.
    pub fn advertised_listener(&self) -> &str {
        match self.get("advertised.listener") {
            Some(a) if !a.is_empty() => a,
            _ => self.listen(),
        }
    }
    /// Data directory.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.get("data.dir").unwrap_or("./vltava-data"))
    }
    /// `num.partitions`.
    pub fn num_partitions(&self) -> i32 {
        self.long("num.partitions") as i32
    }
    /// `default.replication.factor`.
    pub fn default_replication_factor(&self) -> i16 {
        self.long("default.replication.factor")
            .clamp(1, i64::from(i16::MAX)) as i16
    }
    /// `auto.create.topics.enable`.
    pub fn auto_create_topics(&self) -> bool {
        self.boolean("auto.create.topics.enable")
    }
    /// `delete.topic.enable`.
    pub fn delete_topic_enable(&self) -> bool {
        self.boolean("delete.topic.enable")
    }
    /// `socket.request.max.bytes`.
    pub fn socket_request_max_bytes(&self) -> usize {
        self.long("socket.request.max.bytes") as usize
    }
    /// `queued.max.request.bytes`: bytes of request frames held by all connections at once.
    pub fn queued_max_request_bytes(&self) -> usize {
        self.long("queued.max.request.bytes") as usize
    }
    /// `max.connections`.
    pub fn max_connections(&self) -> usize {
        self.long("max.connections") as usize
    }
    /// `connections.max.idle.ms` (-1: never).
    pub fn connections_max_idle_ms(&self) -> i64 {
        self.long("connections.max.idle.ms")
    }
    /// `log.retention.check.interval.ms`.
    pub fn retention_check_interval_ms(&self) -> u64 {
        self.long("log.retention.check.interval.ms").max(1) as u64
    }
    /// `log.cleaner.backoff.ms`: how often the cleaner looks for work.
    pub fn cleaner_backoff_ms(&self) -> u64 {
        self.long("log.cleaner.backoff.ms").max(1) as u64
    }
    /// `log.flush.offset.checkpoint.interval.ms`.
    pub fn checkpoint_interval_ms(&self) -> u64 {
        self.long("log.flush.offset.checkpoint.interval.ms").max(1) as u64
    }

    /// `offsets.topic.num.partitions`.
    pub fn offsets_topic_partitions(&self) -> i32 {
        self.long("offsets.topic.num.partitions") as i32
    }
    /// `offsets.topic.replication.factor`, before the cap by the brokers there are.
    pub fn offsets_topic_replication_factor(&self) -> i16 {
        self.long("offsets.topic.replication.factor")
            .clamp(1, i16::MAX as i64) as i16
    }
    /// `offsets.commit.timeout.ms`: how long an offset commit waits for the in-sync replicas.
    pub fn offsets_commit_timeout_ms(&self) -> u64 {
        self.long("offsets.commit.timeout.ms").max(1) as u64
    }
    /// `offsets.retention.minutes` in milliseconds.
    pub fn offsets_retention_ms(&self) -> i64 {
        self.long("offsets.retention.minutes")
            .saturating_mul(60_000)
    }
    /// `offsets.retention.check.interval.ms`.
    pub fn offsets_retention_check_interval_ms(&self) -> u64 {
        self.long("offsets.retention.check.interval.ms").max(1) as u64
    }
    /// `group.min.session.timeout.ms`.
    pub fn group_min_session_timeout_ms(&self) -> i32 {
        self.long("group.min.session.timeout.ms") as i32
    }
    /// `group.max.session.timeout.ms`.
    pub fn group_max_session_timeout_ms(&self) -> i32 {
        self.long("group.max.session.timeout.ms") as i32
    }
    /// `group.initial.rebalance.delay.ms`.
    pub fn group_initial_rebalance_delay_ms(&self) -> i32 {
        self.long("group.initial.rebalance.delay.ms") as i32
    }

    /// Effective value of a topic setting given the topic's overrides, and whether it is an
    /// override.
    pub fn topic_value(
        &self,
        overrides: &BTreeMap<String, String>,
        name: &str,
    ) -> Option<(String, bool)> {
        if let Some(v) = overrides.get(name) {
            return Some((v.clone(), true));
        }
        let (_, broker_name, _) = TOPIC_SETTINGS.iter().find(|(n, _, _)| *n == name)?;
        self.get(broker_name).map(|v| (v.to_string(), false))
    }

    /// Storage settings for a topic with these overrides.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let long = |name: &str| -> i64 {
            self.topic_value(overrides, name)
                .and_then(|(v, _)| v.parse().ok())
                .unwrap_or(0)
        };
        LogConfig {
            segment_bytes: long("segment.bytes").max(14) as u64,
            segment_ms: long("segment.ms"),
            index_interval_bytes: long("index.interval.bytes").max(0) as u64,
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            max_message_bytes: long("max.message.bytes").max(0) as u64,
            flush_interval_messages: long("flush.messages").max(1) as u64,
            flush_interval_ms: long("flush.ms"),
            file_delete_delay_ms: long("file.delete.delay.ms"),
            cleanup_policy: self
                .topic_value(overrides, "cleanup.policy")
                .and_then(|(v, _)| vltava_storage::CleanupPolicy::parse(&v))
                .unwrap_or_default(),
            delete_retention_ms: long("delete.retention.ms"),
            min_cleanable_dirty_ratio: self
                .topic_value(overrides, "min.cleanable.dirty.ratio")
                .and_then(|(v, _)| v.parse().ok())
                .unwrap_or(0.5),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            flush_on_append: self
                .topic_value(overrides, "flush.on.append")
                .is_some_and(|(v, _)| v == "true"),
            ..LogConfig::default()
        }
    }

    /// `min.insync.replicas` for a topic.
    pub fn min_insync_replicas(&self, overrides: &BTreeMap<String, String>) -> i32 {
        self.topic_value(overrides, "min.insync.replicas")
            .and_then(|(v, _)| v.parse().ok())
            .unwrap_or(1)
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.listen(), "127.0.0.1:9092");
        assert_eq!(c.advertised_listener(), "127.0.0.1:9092");
        c.set("num.partitions", "3").expect("valid");
        assert_eq!(c.num_partitions(), 3);
        assert!(matches!(
            c.set("num.partitions", "x"),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            c.set("no.such", "1"),
            Err(ConfigError::Unknown(_))
        ));
    }

    #[test]
    fn http_read_only_defaults_off_and_takes_a_boolean() {
        let mut c = BrokerConfig::default();
        assert!(!c.http_read_only());
        c.set("http.read.only", "true").expect("valid");
        assert!(c.http_read_only());
        assert!(c.set("http.read.only", "yes").is_err());
    }

    #[test]
    fn http_listen_defaults_and_none() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.http_listen(), Some(DEFAULT_HTTP_LISTEN));
        assert!(!c.is_explicit("http.listen"));
        c.set("http.listen", "none").expect("valid");
        assert_eq!(c.http_listen(), None);
        assert!(c.is_explicit("http.listen"));
        c.set("http.listen", "0.0.0.0:9000").expect("valid");
        assert_eq!(c.http_listen(), Some("0.0.0.0:9000"));
        assert_eq!(c.log_format(), "text");
        c.set("log.format", "json").expect("valid");
        assert_eq!(c.log_format(), "json");
        assert!(c.set("log.format", "xml").is_err());
    }

    #[test]
    fn env_and_toml() {
        let mut c = BrokerConfig::default();
        c.load_env([("VLTAVA_LOG_SEGMENT_BYTES".to_string(), "2048".to_string())].into_iter())
            .expect("env");
        assert_eq!(c.get("log.segment.bytes"), Some("2048"));
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "\"num.partitions\" = 4\n[log.retention]\nms = 1000\n").expect("write");
        c.load_toml(&p).expect("toml");
        assert_eq!(c.num_partitions(), 4);
        assert_eq!(c.get("log.retention.ms"), Some("1000"));
    }

    #[test]
    fn topic_overrides_fall_back_to_broker() {
        let mut c = BrokerConfig::default();
        c.set("log.retention.ms", "5000").expect("valid");
        let mut o = BTreeMap::new();
        assert_eq!(c.log_config(&o).retention_ms, 5000);
        o.insert("retention.ms".into(), "7".into());
        assert_eq!(c.log_config(&o).retention_ms, 7);
        assert!(validate_topic_setting("retention.ms", "abc").is_err());
        assert!(validate_topic_setting("cleanup.policy", "compact").is_ok());
        assert!(validate_topic_setting("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_setting("cleanup.policy", "shred").is_err());
        o.insert("cleanup.policy".into(), "compact".into());
        assert!(c.log_config(&o).cleanup_policy.compacts());
        assert!(validate_topic_setting("bogus", "1").is_err());
    }
}
