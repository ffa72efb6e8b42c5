//! Per-log settings, named after Kafka's topic configs.

/// Kafka's `cleanup.policy`: what happens to old segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// `delete`: retention (`retention.ms`, `retention.bytes`) deletes old segments.
    #[default]
    Delete,
    /// `compact`: the cleaner keeps the latest record per key; retention deletes nothing.
    Compact,
    /// `compact,delete`: both.
    CompactDelete,
}

impl CleanupPolicy {
    /// True if the cleaner compacts this log.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// True if retention by time and size deletes segments of this log.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Parses Kafka's list syntax (`delete`, `compact`, `compact,delete`, `delete,compact`,
    /// with optional spaces); `None` for anything else, including an empty list.
    pub fn parse(text: &str) -> Option<CleanupPolicy> {
        let (mut compact, mut delete) = (false, false);
        for item in text.split(',') {
            match item.trim() {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }
}

/// Settings of one partition log. Field names follow Kafka's topic configs
/// (`segment.bytes` → `segment_bytes`, ...).
#[derive(Debug, Clone, PartialEq)]
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
    /// `flush.on.append` (Vltava's own setting): an append is acknowledged only once an fsync
    /// covers it. [`crate::Log::append`] then fsyncs before returning; the broker uses
    /// [`crate::Log::append_deferred`] and [`crate::GroupCommit::sync_through`] so that
    /// concurrent appenders share fsyncs. Off by default, as in Kafka, where durability comes
    /// from replication.
    pub flush_on_append: bool,
    /// Kafka's `file.delete.delay.ms`. Accepted for configuration compatibility; files are
    /// unlinked at once because readers keep open descriptors, which stay valid on Unix.
    pub file_delete_delay_ms: i64,
    /// Forget an idle producer's sequence state after this long (`producer.id.expiration.ms`),
    /// judged by the timestamp of its last batch.
    pub producer_id_expiration_ms: i64,
    /// `cleanup.policy`: whether retention deletes segments, the cleaner compacts them, or both.
    pub cleanup_policy: CleanupPolicy,
    /// How long tombstones survive after the cleaner first saw them (`delete.retention.ms`),
    /// so that consumers reading from the start get to see the delete.
    pub delete_retention_ms: i64,
    /// `LogManager::clean_all` cleans a log once this fraction of its cleanable bytes is dirty
    /// (`min.cleanable.dirty.ratio`).
    pub min_cleanable_dirty_ratio: f64,
    /// Segments holding a record newer than this are not cleaned yet
    /// (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
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
            flush_on_append: false,
            file_delete_delay_ms: 60_000,
            producer_id_expiration_ms: DAY_MS,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: DAY_MS,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_policy_parses_kafka_lists() {
        assert_eq!(CleanupPolicy::parse("delete"), Some(CleanupPolicy::Delete));
        assert_eq!(
            CleanupPolicy::parse("compact"),
            Some(CleanupPolicy::Compact)
        );
        for both in ["compact,delete", "delete,compact", " compact , delete "] {
            assert_eq!(
                CleanupPolicy::parse(both),
                Some(CleanupPolicy::CompactDelete)
            );
        }
        for bad in ["", "Compact", "compact,", "compact;delete", "none"] {
            assert_eq!(CleanupPolicy::parse(bad), None, "{bad:?}");
        }
        assert!(CleanupPolicy::CompactDelete.compacts() && CleanupPolicy::CompactDelete.deletes());
        assert!(!CleanupPolicy::Compact.deletes() && !CleanupPolicy::Delete.compacts());
    }
}
