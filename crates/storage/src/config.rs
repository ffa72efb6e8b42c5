//! Per-log settings, named after Kafka's topic configs.

/// Settings of one partition log. Field names follow Kafka's topic configs
/// (`segment.bytes` → `segment_bytes`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll a new segment once the active one would exceed this many bytes (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll a new segment once the active one is older than this (`segment.ms`), measured from
    /// its first append.
    pub segment_ms: i64,
    /// Bytes of appended data between two sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Delete segments whose newest timestamp is older than this (`retention.ms`); -1 = never.
    pub retention_ms: i64,
    /// Delete oldest segments while the log is larger than this (`retention.bytes`); -1 = never.
    pub retention_bytes: i64,
    /// Largest batch accepted, header included (`max.message.bytes`).
    pub max_message_bytes: u64,
    /// fsync after this many unflushed offsets (`flush.messages`).
    pub flush_interval_messages: u64,
    /// fsync once the last flush is older than this (`flush.ms`).
    pub flush_interval_ms: i64,
    /// Kafka's `file.delete.delay.ms`. Accepted for configuration compatibility; files are
    /// unlinked at once because readers keep open descriptors, which stay valid on Unix.
    pub file_delete_delay_ms: i64,
    /// Forget an idle producer's sequence state after this long (`producer.id.expiration.ms`),
    /// judged by the timestamp of its last batch.
    pub producer_id_expiration_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: i64::MAX,
            file_delete_delay_ms: 60_000,
            producer_id_expiration_ms: DAY_MS,
        }
    }
}

impl LogConfig {
    /// Segment size actually enforced: positions in the offset index are 32-bit, and Kafka
    /// caps `segment.bytes` at `i32::MAX` for the same reason.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, i32::MAX as u64)
    }
}
