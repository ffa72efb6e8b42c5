//! Consumer settings, under the Java client's names and with its defaults.

use std::time::Duration;

use crate::cluster::ClientConfig;
use crate::error::{ClientError, Result};

/// Where to start reading a partition that has no committed offset, or whose position fell
/// outside the log (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start offset.
    Earliest,
    /// The log end offset: only records produced from now on.
    Latest,
    /// No reset: `poll` fails (no committed offset, or OFFSET_OUT_OF_RANGE).
    None,
}

impl OffsetReset {
    /// `earliest`, `latest` or `none` (Kafka's values; `smallest`/`largest` as aliases).
    pub fn parse(s: &str) -> Result<OffsetReset> {
        match s.trim().to_ascii_lowercase().as_str() {
            "earliest" | "smallest" | "beginning" => Ok(OffsetReset::Earliest),
            "latest" | "largest" | "end" => Ok(OffsetReset::Latest),
            "none" | "error" => Ok(OffsetReset::None),
            _ => Err(ClientError::InvalidArgument(format!(
                "auto.offset.reset '{s}': expected earliest, latest or none"
            ))),
        }
    }
}

/// A partition assignment strategy the consumer offers in JoinGroup
/// (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentStrategy {
    /// `range`: per topic, consecutive ranges of partitions to members sorted by member id.
    Range,
    /// `roundrobin`: all partitions of all topics dealt in turn to members sorted by member id.
    RoundRobin,
    /// `cooperative-sticky`: balanced, keeping members' partitions where it can, with the
    /// incremental rebalance protocol (only moved partitions are revoked). Used cooperatively
    /// only when it is the sole configured strategy, as in the Java client.
    CooperativeSticky,
}

impl AssignmentStrategy {
    /// Protocol name in JoinGroup, as Kafka's clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// `range`, `roundrobin` or `cooperative-sticky` (the Java class names are accepted too).
    pub fn parse(s: &str) -> Result<AssignmentStrategy> {
        let s = s.trim();
        let short = s.rsplit('.').next().unwrap_or(s).to_ascii_lowercase();
        match short.as_str() {
            "range" | "rangeassignor" => Ok(AssignmentStrategy::Range),
            "roundrobin" | "roundrobinassignor" => Ok(AssignmentStrategy::RoundRobin),
            "cooperative-sticky" | "cooperativestickyassignor" => {
                Ok(AssignmentStrategy::CooperativeSticky)
            }
            _ => Err(ClientError::InvalidArgument(format!(
                "partition.assignment.strategy '{s}': expected range, roundrobin or \
                 cooperative-sticky"
            ))),
        }
    }
}

/// Which records a fetch may return (`isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Everything up to the high watermark.
    ReadUncommitted,
    /// Only up to the last stable offset (transactions: the broker serves none yet).
    ReadCommitted,
}

/// Consumer settings. Field names follow the Java client's settings; [`ConsumerConfig::set`]
/// takes them by those names.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Bootstrap servers and connection settings (`bootstrap.servers`, `client.id`,
    /// `request.timeout.ms`, `socket.connection.setup.timeout.ms`).
    pub client: ClientConfig,
    /// `group.id`: needed for `subscribe` and for committing offsets.
    pub group_id: Option<String>,
    /// `auto.offset.reset` (default latest).
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit` (default true when a group id is set).
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms` (default 5 s).
    pub auto_commit_interval: Duration,
    /// `fetch.min.bytes` (default 1).
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes` (default 50 MiB).
    pub fetch_max_bytes: i32,
    /// `fetch.max.wait.ms` (default 500 ms).
    pub fetch_max_wait: Duration,
    /// `max.partition.fetch.bytes` (default 1 MiB).
    pub max_partition_fetch_bytes: i32,
    /// `max.poll.records` (default 500).
    pub max_poll_records: usize,
    /// `max.poll.interval.ms` (default 300 s): a member that does not call `poll` this often
    /// leaves the group; also the rebalance timeout sent in JoinGroup.
    pub max_poll_interval: Duration,
    /// `session.timeout.ms` (default 45 s).
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms` (default 3 s).
    pub heartbeat_interval: Duration,
    /// `partition.assignment.strategy`, in order of preference (default range, roundrobin,
    /// as librdkafka). The rebalance protocol is cooperative only when every listed strategy
    /// is `cooperative-sticky`.
    pub assignment_strategies: Vec<AssignmentStrategy>,
    /// `isolation.level` (default read_uncommitted).
    pub isolation_level: IsolationLevel,
    /// `check.crcs` (default true): verify every fetched batch's CRC32C.
    pub check_crcs: bool,
    /// `retry.backoff.ms` (default 100 ms).
    pub retry_backoff: Duration,
    /// `metadata.max.age.ms` (default 5 min): how often a group leader re-reads the partition
    /// counts of subscribed topics (a change triggers a rebalance).
    pub metadata_max_age: Duration,
    /// `client.rack` sent in the subscription (empty: none).
    pub client_rack: Option<String>,
    /// Largest inflated size of one compressed batch; a larger one fails the fetch of that
    /// partition instead of exhausting memory (default 256 MiB; Vltava-specific).
    pub max_batch_inflated_bytes: usize,
}

impl ConsumerConfig {
    /// Defaults for a `host:port[,host:port...]` bootstrap list.
    pub fn new(bootstrap: &str) -> Result<ConsumerConfig> {
        Ok(ConsumerConfig::with_client(ClientConfig::new(bootstrap)?))
    }

    /// Defaults around existing client settings.
    pub fn with_client(client: ClientConfig) -> ConsumerConfig {
        ConsumerConfig {
            client,
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            max_partition_fetch_bytes: 1024 * 1024,
            max_poll_records: 500,
            max_poll_interval: Duration::from_secs(300),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            assignment_strategies: vec![AssignmentStrategy::Range, AssignmentStrategy::RoundRobin],
            isolation_level: IsolationLevel::ReadUncommitted,
            check_crcs: true,
            retry_backoff: Duration::from_millis(100),
            metadata_max_age: Duration::from_secs(300),
            client_rack: None,
            max_batch_inflated_bytes: 256 * 1024 * 1024,
        }
    }

    /// Sets one setting by its Kafka name (`group.id`, `auto.offset.reset`,
    /// `enable.auto.commit`, `fetch.max.wait.ms`, ...). Unknown names and bad values are
    /// refused with [`ClientError::InvalidArgument`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut ConsumerConfig> {
        let bad = |why: &str| {
            ClientError::InvalidArgument(format!("consumer setting {key}='{value}': {why}"))
        };
        let int = |min: i64, max: i64| -> Result<i64> {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| bad("expected an integer"))?;
            if v < min || v > max {
                return Err(bad(&format!("expected {min}..={max}")));
            }
            Ok(v)
        };
        let ms = |min: i64| -> Result<Duration> {
            Ok(Duration::from_millis(int(min, i64::from(i32::MAX))? as u64))
        };
        let boolean = || -> Result<bool> {
            match value.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(bad("expected true or false")),
            }
        };
        match key {
            "bootstrap.servers" => {
                self.client.bootstrap = crate::cluster::parse_bootstrap(value)?;
            }
            "client.id" => self.client.connection.client_id = value.to_string(),
            "request.timeout.ms" => self.client.connection.request_timeout = ms(1)?,
            "socket.connection.setup.timeout.ms" => {
                self.client.connection.connect_timeout = ms(1)?;
            }
            "group.id" => {
                self.group_id = Some(value.to_string()).filter(|g| !g.is_empty());
            }
            "auto.offset.reset" => self.auto_offset_reset = OffsetReset::parse(value)?,
            "enable.auto.commit" => self.enable_auto_commit = boolean()?,
            "auto.commit.interval.ms" => self.auto_commit_interval = ms(0)?,
            "fetch.min.bytes" => self.fetch_min_bytes = int(0, i64::from(i32::MAX))? as i32,
            "fetch.max.bytes" => self.fetch_max_bytes = int(1, i64::from(i32::MAX))? as i32,
            "fetch.max.wait.ms" => self.fetch_max_wait = ms(0)?,
            "max.partition.fetch.bytes" => {
                self.max_partition_fetch_bytes = int(1, i64::from(i32::MAX))? as i32;
            }
            "max.poll.records" => self.max_poll_records = int(1, i64::from(i32::MAX))? as usize,
            "max.poll.interval.ms" => self.max_poll_interval = ms(1)?,
            "session.timeout.ms" => self.session_timeout = ms(1)?,
            "heartbeat.interval.ms" => self.heartbeat_interval = ms(1)?,
            "partition.assignment.strategy" => {
                let list: Result<Vec<_>> = value
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(AssignmentStrategy::parse)
                    .collect();
                let list = list?;
                if list.is_empty() {
                    return Err(bad("expected at least one strategy"));
                }
                self.assignment_strategies = list;
            }
            "isolation.level" => {
                self.isolation_level = match value.trim().to_ascii_lowercase().as_str() {
                    "read_uncommitted" => IsolationLevel::ReadUncommitted,
                    "read_committed" => IsolationLevel::ReadCommitted,
                    _ => return Err(bad("expected read_uncommitted or read_committed")),
                };
            }
            "check.crcs" => self.check_crcs = boolean()?,
            "retry.backoff.ms" => self.retry_backoff = ms(0)?,
            "metadata.max.age.ms" => self.metadata_max_age = ms(0)?,
            "client.rack" => self.client_rack = Some(value.to_string()).filter(|r| !r.is_empty()),
            "max.batch.inflated.bytes" => {
                self.max_batch_inflated_bytes = int(1, i64::MAX)? as usize;
            }
            _ => {
                return Err(ClientError::InvalidArgument(format!(
                    "unknown consumer setting '{key}'"
                )));
            }
        }
        Ok(self)
    }

    /// Whether the member uses the incremental cooperative rebalance protocol.
    pub fn is_cooperative(&self) -> bool {
        !self.assignment_strategies.is_empty()
            && self
                .assignment_strategies
                .iter()
                .all(|s| *s == AssignmentStrategy::CooperativeSticky)
    }

    /// Checks settings that only make sense together (heartbeats well inside the session).
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_interval >= self.session_timeout {
            return Err(ClientError::InvalidArgument(
                "heartbeat.interval.ms must be lower than session.timeout.ms".into(),
            ));
        }
        if self.assignment_strategies.is_empty() {
            return Err(ClientError::InvalidArgument(
                "partition.assignment.strategy names no strategy".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_by_kafka_name() -> Result<()> {
        let mut c = ConsumerConfig::new("h:1")?;
        c.set("group.id", "g")?
            .set("auto.offset.reset", "earliest")?
            .set("enable.auto.commit", "false")?
            .set("fetch.max.wait.ms", "100")?
            .set(
                "partition.assignment.strategy",
                "roundrobin,org.apache.kafka.clients.consumer.RangeAssignor",
            )?;
        assert_eq!(c.group_id.as_deref(), Some("g"));
        assert_eq!(c.auto_offset_reset, OffsetReset::Earliest);
        assert!(!c.enable_auto_commit);
        assert_eq!(c.fetch_max_wait, Duration::from_millis(100));
        assert_eq!(
            c.assignment_strategies,
            vec![AssignmentStrategy::RoundRobin, AssignmentStrategy::Range]
        );
        assert!(c.set("nope", "1").is_err());
        assert!(c.set("fetch.min.bytes", "-1").is_err());
        assert!(c.set("auto.offset.reset", "sometimes").is_err());
        c.set("heartbeat.interval.ms", "60000")?;
        assert!(c.validate().is_err());
        Ok(())
    }
}
