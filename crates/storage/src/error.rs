//! The one error type of the crate.

use std::path::PathBuf;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused a file operation.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A read asked for an offset outside `[log_start, log_end]`.
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// First offset still in the log.
        log_start: u64,
        /// Offset the next append will get.
        log_end: u64,
    },
    /// A batch is larger than `max.message.bytes` (Kafka: MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge {
        /// Size of the batch on disk, header included.
        size: u64,
        /// Configured limit.
        max: u64,
    },
    /// A batch could never fit in a segment (Kafka: RECORD_LIST_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds segment.bytes {segment_bytes}")]
    BatchLargerThanSegment {
        /// Size of the batch.
        size: u64,
        /// Configured segment size.
        segment_bytes: u64,
    },
    /// Stored data is not what it must be; the message says where.
    #[error("corrupt log data: {0}")]
    Corrupt(String),
    /// Sequence number is neither the next expected one nor a recent duplicate
    /// (Kafka: OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("producer {producer_id}: expected sequence {expected}, got {received}")]
    OutOfOrderSequence {
        /// Producer id of the batch.
        producer_id: i64,
        /// Sequence the log would have accepted.
        expected: i32,
        /// First sequence of the batch.
        received: i32,
    },
    /// Batch from an older producer epoch than the log has seen (Kafka: INVALID_PRODUCER_EPOCH).
    #[error("producer {producer_id}: epoch {epoch} is older than current epoch {current}")]
    InvalidProducerEpoch {
        /// Producer id of the batch.
        producer_id: i64,
        /// Epoch carried by the batch.
        epoch: i16,
        /// Latest epoch the log knows for this producer.
        current: i16,
    },
    /// Kafka's UNKNOWN_PRODUCER_ID. Reserved for the broker's error mapping: this crate lets an
    /// unknown producer start at any sequence, as Kafka does since 2.5, so it never returns it.
    #[error("unknown producer id {producer_id}")]
    UnknownProducerId {
        /// Producer id of the batch.
        producer_id: i64,
    },
    /// The bytes handed to `append` are not a usable batch (Kafka: INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// A topic name or partition that cannot name a partition directory.
    #[error("invalid topic partition: {0}")]
    InvalidTopicPartition(String),
    /// The log was deleted; its handle is no longer usable for writes.
    #[error("log {0} has been deleted")]
    LogDeleted(PathBuf),
    /// A write failed and could not be undone, so the in-memory view no longer matches the
    /// files; the log accepts no more writes until it is reopened (Kafka: KAFKA_STORAGE_ERROR).
    #[error("log {dir} is offline: {reason}")]
    Offline {
        /// Partition directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Records an appender waited to see durable were truncated away before an fsync covered
    /// them (the log end moved below `offset`); they must not be acknowledged.
    #[error("offsets below {offset} were truncated (log end {log_end}) before they became durable")]
    TruncatedBeforeDurable {
        /// End of the records waited for.
        offset: u64,
        /// Log end offset after the truncation.
        log_end: u64,
    },
    /// A follower append whose batches do not continue the log: the first starts below the
    /// log end offset, or a later one at or below the previous batch's last offset (Kafka:
    /// UnexpectedAppendOffsetException). Nothing was written.
    #[error("unexpected append offset: expected at least {expected}, got {got}")]
    UnexpectedAppendOffset {
        /// Lowest base offset the log could take there.
        expected: u64,
        /// Base offset of the batch.
        got: u64,
    },
    /// A leader epoch entry with a negative epoch or an offset beyond the wire's range.
    #[error("invalid leader epoch entry: epoch {epoch} at offset {start_offset}")]
    InvalidEpochEntry {
        /// Epoch given.
        epoch: i32,
        /// Start offset given.
        start_offset: u64,
    },
    /// Another process holds the data directory lock.
    #[error("data directory {0} is locked by another process")]
    DataDirLocked(PathBuf),
}
