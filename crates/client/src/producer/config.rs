//! Producer settings under Kafka's names, with the Java client's defaults.

use std::time::Duration;

use vltava_protocol::batch::Compression;

use crate::cluster::ClientConfig;
use crate::producer::error::ProducerError;

/// How many acknowledgements the leader must have before answering a Produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: no answer at all; a record counts as delivered once written to the socket and
    /// its offset is unknown (-1).
    None,
    /// `acks=1`: the leader wrote the records to its log.
    Leader,
    /// `acks=all` (`-1`): every in-sync replica has the records.
    All,
}

impl Acks {
    /// The value of the Produce request's `acks` field.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// Parses `0`, `1`, `all` or `-1`.
    pub fn parse(s: &str) -> Option<Acks> {
        match s.trim().to_ascii_lowercase().as_str() {
            "0" => Some(Acks::None),
            "1" => Some(Acks::Leader),
            "all" | "-1" => Some(Acks::All),
            _ => None,
        }
    }
}

/// Parses a `compression.type` value: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
pub fn parse_compression(s: &str) -> Option<Compression> {
    match s.trim().to_ascii_lowercase().as_str() {
        "none" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// Kafka's name of a codec (`compression.type` value).
pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Producer settings. Field docs name the Kafka setting each one mirrors; [`ProducerConfig::set`]
/// takes those names.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Bootstrap list and connection settings (`bootstrap.servers`, `client.id`). The
    /// connection's request timeout is replaced by [`ProducerConfig::request_timeout`].
    pub client: ClientConfig,
    /// `acks` (default `all`).
    pub acks: Acks,
    /// `compression.type` (default `none`), applied per batch.
    pub compression: Compression,
    /// `batch.size` (default 16384): a batch (header included) is sent once it would grow past
    /// this many bytes; a single larger record gets a batch of its own.
    pub batch_size: usize,
    /// `linger.ms` (default 5 ms): how long a batch that is not full waits for more records.
    pub linger: Duration,
    /// `buffer.memory` (default 32 MiB): bytes of records accepted but not yet acknowledged;
    /// `send` waits for room up to `max.block.ms`.
    pub buffer_memory: usize,
    /// `max.block.ms` (default 60 s): how long `send` may wait for metadata or buffer room.
    pub max_block: Duration,
    /// `max.in.flight.requests.per.connection` (default 5).
    pub max_in_flight: usize,
    /// `request.timeout.ms` (default 30 s): limit on each request; a Produce request that gets
    /// no answer in time closes its connection and its batches are retried.
    pub request_timeout: Duration,
    /// `delivery.timeout.ms` (default 120 s): limit on the whole life of a record, from `send`
    /// to its acknowledgement, retries included.
    pub delivery_timeout: Duration,
    /// `retries` (default `i32::MAX`): resends of a batch after retriable errors.
    pub retries: u32,
    /// `retry.backoff.ms` (default 100 ms): first pause before a retry.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms` (default 1 s): the pause doubles per attempt up to this.
    pub retry_backoff_max: Duration,
    /// `enable.idempotence` (default: on unless `acks` is not `all`, `retries` is 0 or
    /// `max.in.flight.requests.per.connection` exceeds 5; explicitly on with such settings is
    /// an error).
    pub enable_idempotence: Option<bool>,
    /// `max.request.size` (default 1 MiB): largest record, and the size at which a Produce
    /// request stops taking more batches.
    pub max_request_size: usize,
    /// `metadata.max.age.ms` (default 5 min): metadata is refreshed at least this often.
    pub metadata_max_age: Duration,
    /// `allow.auto.create.topics` (default true): Metadata requests let the broker create
    /// missing topics.
    pub allow_auto_create_topics: bool,
}

impl ProducerConfig {
    /// Defaults for a `host:port[,host:port...]` bootstrap list.
    pub fn new(bootstrap: &str) -> Result<ProducerConfig, ProducerError> {
        Ok(ProducerConfig::from_client(ClientConfig::new(bootstrap)?))
    }

    /// Defaults on top of existing client settings.
    pub fn from_client(client: ClientConfig) -> ProducerConfig {
        ProducerConfig {
            client,
            acks: Acks::All,
            compression: Compression::None,
            batch_size: 16384,
            linger: Duration::from_millis(5),
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            max_in_flight: 5,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            retries: i32::MAX as u32,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            enable_idempotence: None,
            max_request_size: 1024 * 1024,
            metadata_max_age: Duration::from_secs(300),
            allow_auto_create_topics: true,
        }
    }

    /// Sets one setting by its Kafka name (`linger.ms`, `acks`, `compression.type`, ...).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ProducerError> {
        let bad = |what: &str| {
            ProducerError::Config(format!(
                "invalid value '{value}' for {name}: expected {what}"
            ))
        };
        let ms = || -> Result<Duration, ProducerError> {
            value
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| bad("milliseconds"))
        };
        let size = |min: usize| -> Result<usize, ProducerError> {
            value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|v| *v >= min && *v <= i32::MAX as usize)
                .ok_or_else(|| bad(&format!("a byte count from {min} to {}", i32::MAX)))
        };
        match name {
            "bootstrap.servers" => {
                self.client.bootstrap = crate::cluster::parse_bootstrap(value)?;
            }
            "client.id" => self.client.connection.client_id = value.to_string(),
            "acks" => self.acks = Acks::parse(value).ok_or_else(|| bad("0, 1 or all"))?,
            "compression.type" => {
                self.compression = parse_compression(value)
                    .ok_or_else(|| bad("none, gzip, snappy, lz4 or zstd"))?
            }
            "batch.size" => self.batch_size = size(0)?,
            "linger.ms" => self.linger = ms()?,
            "buffer.memory" => self.buffer_memory = size(1)?,
            "max.block.ms" => self.max_block = ms()?,
            "max.in.flight.requests.per.connection" => {
                self.max_in_flight = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|v| (1..=1000).contains(v))
                    .ok_or_else(|| bad("a count from 1 to 1000"))?
            }
            "request.timeout.ms" => self.request_timeout = ms()?,
            "delivery.timeout.ms" => self.delivery_timeout = ms()?,
            "retries" => {
                self.retries = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|v| *v <= i32::MAX as u32)
                    .ok_or_else(|| bad("a count from 0 to 2147483647"))?
            }
            "retry.backoff.ms" => self.retry_backoff = ms()?,
            "retry.backoff.max.ms" => self.retry_backoff_max = ms()?,
            "enable.idempotence" => {
                self.enable_idempotence =
                    Some(parse_bool(value).ok_or_else(|| bad("true or false"))?)
            }
            "max.request.size" => self.max_request_size = size(1)?,
            "metadata.max.age.ms" => self.metadata_max_age = ms()?,
            "allow.auto.create.topics" => {
                self.allow_auto_create_topics =
                    parse_bool(value).ok_or_else(|| bad("true or false"))?
            }
            _ => {
                return Err(ProducerError::Config(format!(
                    "unknown producer setting '{name}'"
                )));
            }
        }
        Ok(())
    }

    /// Checks the settings against each other and returns whether idempotence is on.
    pub fn validate(&self) -> Result<bool, ProducerError> {
        let err = |m: String| Err(ProducerError::Config(m));
        if self.request_timeout.is_zero() {
            return err("request.timeout.ms must be positive".into());
        }
        if self.delivery_timeout < self.linger + self.request_timeout {
            return err(format!(
                "delivery.timeout.ms ({} ms) must be at least linger.ms + request.timeout.ms ({} ms)",
                self.delivery_timeout.as_millis(),
                (self.linger + self.request_timeout).as_millis()
            ));
        }
        if self.max_in_flight == 0 {
            return err("max.in.flight.requests.per.connection must be at least 1".into());
        }
        let compatible = self.acks == Acks::All && self.retries > 0 && self.max_in_flight <= 5;
        match self.enable_idempotence {
            Some(true) if !compatible => {
                err("enable.idempotence=true needs acks=all, retries > 0 and \
                 max.in.flight.requests.per.connection <= 5"
                    .into())
            }
            Some(on) => Ok(on),
            None => Ok(compatible),
        }
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_javas_and_idempotence_follows_acks() -> Result<(), ProducerError> {
        let mut c = ProducerConfig::new("127.0.0.1:9092")?;
        assert_eq!(c.batch_size, 16384);
        assert_eq!(c.max_in_flight, 5);
        assert!(c.validate()?);
        c.set("acks", "1")?;
        assert!(!c.validate()?, "default idempotence turns off with acks=1");
        c.set("enable.idempotence", "true")?;
        assert!(c.validate().is_err());
        c.set("acks", "all")?;
        c.set("max.in.flight.requests.per.connection", "6")?;
        assert!(c.validate().is_err());
        c.set("enable.idempotence", "false")?;
        assert!(!c.validate()?);
        Ok(())
    }

    #[test]
    fn set_parses_kafka_names_and_refuses_nonsense() -> Result<(), ProducerError> {
        let mut c = ProducerConfig::new("127.0.0.1:9092")?;
        c.set("compression.type", "zstd")?;
        assert_eq!(c.compression, Compression::Zstd);
        c.set("linger.ms", "20")?;
        assert_eq!(c.linger, Duration::from_millis(20));
        c.set("acks", "-1")?;
        assert_eq!(c.acks, Acks::All);
        let e = c
            .set("compression.type", "brotli")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "invalid producer setting: invalid value 'brotli' for compression.type: \
                 expected none, gzip, snappy, lz4 or zstd"
            )
        );
        assert!(c.set("no.such.thing", "1").is_err());
        c.set("delivery.timeout.ms", "10")?;
        assert!(c.validate().is_err());
        Ok(())
    }
}
