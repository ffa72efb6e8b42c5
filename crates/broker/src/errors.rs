//! The mapping from the broker's typed errors to Kafka error codes (the codes themselves come
//! from [`kafka_protocol::ResponseError`]).

use kafka_protocol::ResponseError;
use vltava_storage::StorageError;

use crate::replica::{PartitionLookupError, TopicError};

/// NONE, the Kafka error code for success: [`ResponseError`] has no variant for it.
pub const NONE: i16 = 0;

/// Kafka error code for a storage failure.
pub fn storage_code(e: &StorageError) -> i16 {
    match e {
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        StorageError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber.code(),
        StorageError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch.code(),
        StorageError::UnknownProducerId { .. } => ResponseError::UnknownProducerId.code(),
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord.code(),
        StorageError::BatchLargerThanSegment { .. } => ResponseError::RecordListTooLarge.code(),
        StorageError::Corrupt(_)
        | StorageError::Io(_)
        | StorageError::Offline { .. }
        | StorageError::LogDeleted(_) => ResponseError::KafkaStorageError.code(),
        _ => ResponseError::UnknownServerError.code(),
    }
}

/// Kafka error code for a topic operation failure.
pub fn topic_code(e: &TopicError) -> i16 {
    match e {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists.code(),
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition.code(),
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException.code(),
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions.code(),
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor.code(),
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig.code(),
        TopicError::NotAllowed(_) => ResponseError::TopicDeletionDisabled.code(),
        TopicError::Internal(_) => ResponseError::InvalidRequest.code(),
        TopicError::Storage(s) => storage_code(s),
        TopicError::Meta(_) => ResponseError::KafkaStorageError.code(),
        TopicError::Controller(c) => c.code(),
    }
}

/// Kafka error code for a partition this node cannot serve.
pub fn partition_code(e: &PartitionLookupError) -> i16 {
    match e {
        PartitionLookupError::Unknown => ResponseError::UnknownTopicOrPartition.code(),
        PartitionLookupError::NotLeader { .. } => ResponseError::NotLeaderOrFollower.code(),
        PartitionLookupError::LeaderNotAvailable => ResponseError::LeaderNotAvailable.code(),
        PartitionLookupError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch.code(),
        PartitionLookupError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch.code(),
    }
}
