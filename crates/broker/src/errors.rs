//! Kafka error codes the broker returns, and the mapping from our typed errors to them.

use vltava_storage::StorageError;

use crate::replica::{PartitionLookupError, TopicError};

/// No error.
pub const NONE: i16 = 0;
/// UNKNOWN_SERVER_ERROR.
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
/// OFFSET_OUT_OF_RANGE.
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
/// CORRUPT_MESSAGE.
pub const CORRUPT_MESSAGE: i16 = 2;
/// UNKNOWN_TOPIC_OR_PARTITION.
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// MESSAGE_TOO_LARGE.
pub const MESSAGE_TOO_LARGE: i16 = 10;
/// INVALID_TOPIC_EXCEPTION.
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
/// RECORD_LIST_TOO_LARGE.
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
/// NOT_ENOUGH_REPLICAS.
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
/// INVALID_REQUIRED_ACKS.
pub const INVALID_REQUIRED_ACKS: i16 = 21;
/// UNSUPPORTED_VERSION.
pub const UNSUPPORTED_VERSION: i16 = 35;
/// TOPIC_ALREADY_EXISTS.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
/// INVALID_PARTITIONS.
pub const INVALID_PARTITIONS: i16 = 37;
/// INVALID_REPLICATION_FACTOR.
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
/// INVALID_REPLICA_ASSIGNMENT.
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
/// INVALID_CONFIG.
pub const INVALID_CONFIG: i16 = 40;
/// INVALID_REQUEST.
pub const INVALID_REQUEST: i16 = 42;
/// OUT_OF_ORDER_SEQUENCE_NUMBER.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// INVALID_PRODUCER_EPOCH.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
/// KAFKA_STORAGE_ERROR.
pub const KAFKA_STORAGE_ERROR: i16 = 56;
/// UNKNOWN_PRODUCER_ID.
pub const UNKNOWN_PRODUCER_ID: i16 = 59;
/// TOPIC_DELETION_DISABLED.
pub const TOPIC_DELETION_DISABLED: i16 = 73;
/// INVALID_RECORD.
pub const INVALID_RECORD: i16 = 87;
/// UNKNOWN_TOPIC_ID.
pub const UNKNOWN_TOPIC_ID: i16 = 100;

/// Kafka error code for a storage failure.
pub fn storage_code(e: &StorageError) -> i16 {
    match e {
        StorageError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        StorageError::MessageTooLarge { .. } => MESSAGE_TOO_LARGE,
        StorageError::OutOfOrderSequence { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
        StorageError::InvalidProducerEpoch { .. } => INVALID_PRODUCER_EPOCH,
        StorageError::UnknownProducerId { .. } => UNKNOWN_PRODUCER_ID,
        StorageError::InvalidRecord(_) => INVALID_RECORD,
        StorageError::BatchLargerThanSegment { .. } => RECORD_LIST_TOO_LARGE,
        StorageError::Corrupt(_)
        | StorageError::Io(_)
        | StorageError::Offline { .. }
        | StorageError::LogDeleted(_) => KAFKA_STORAGE_ERROR,
        _ => UNKNOWN_SERVER_ERROR,
    }
}

/// Kafka error code for a topic operation failure.
pub fn topic_code(e: &TopicError) -> i16 {
    match e {
        TopicError::AlreadyExists(_) => TOPIC_ALREADY_EXISTS,
        TopicError::Unknown(_) => UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::InvalidName(_) => INVALID_TOPIC_EXCEPTION,
        TopicError::InvalidPartitions(_) => INVALID_PARTITIONS,
        TopicError::InvalidReplicationFactor(_) => INVALID_REPLICATION_FACTOR,
        TopicError::InvalidConfig(_) => INVALID_CONFIG,
        TopicError::NotAllowed(_) => TOPIC_DELETION_DISABLED,
        TopicError::Internal(_) => INVALID_REQUEST,
        TopicError::Storage(s) => storage_code(s),
        TopicError::Meta(_) => KAFKA_STORAGE_ERROR,
    }
}

/// Kafka error code for a partition this node cannot serve.
pub fn partition_code(e: &PartitionLookupError) -> i16 {
    match e {
        PartitionLookupError::Unknown => UNKNOWN_TOPIC_OR_PARTITION,
    }
}
