//! What a send can fail with. Errors are `Clone`: one failed batch fails every record in it.

use std::sync::Arc;

use crate::error::{ClientError, ErrorCode};

/// Why a record was not delivered (or a producer call failed).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// Settings that contradict each other or do not parse.
    #[error("invalid producer setting: {0}")]
    Config(String),
    /// A record the producer refuses before sending (e.g. a partition the topic does not have).
    #[error("{0}")]
    InvalidRecord(String),
    /// A record larger than `max.request.size` or `buffer.memory`.
    #[error("record of {size} bytes is larger than {setting} ({max} bytes)")]
    RecordTooLarge {
        /// Serialized size of the record in a batch.
        size: usize,
        /// The limit.
        max: usize,
        /// The setting that sets the limit.
        setting: &'static str,
    },
    /// The key or value serializer failed.
    #[error("cannot serialize the record {part}: {reason}")]
    Serialize {
        /// `key` or `value`.
        part: &'static str,
        /// The serializer's message.
        reason: String,
    },
    /// `max.block.ms` (metadata, buffer room) or `delivery.timeout.ms` passed.
    #[error("{0}")]
    Timeout(String),
    /// The broker refused the batch with a non-retriable error, or retries ran out.
    #[error("produce to {topic}-{partition} failed: {name}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Kafka error code.
        code: i16,
        /// Kafka's name for it.
        name: String,
        /// The broker's message, if it sent one.
        message: Option<String>,
    },
    /// A connection or request failure below the Kafka level (connect, I/O, protocol).
    #[error("{0}")]
    Client(Arc<ClientError>),
    /// The idempotent producer's state cannot be recovered (e.g. no producer id could be had).
    #[error("idempotent producer failed: {0}")]
    Fatal(String),
    /// The producer was closed before the record could be accepted.
    #[error("the producer is closed")]
    Closed,
    /// Sent without an answer under a producer epoch that then had to be bumped: the record may
    /// be in the log or not, and is not sent again (under the new epoch it would be taken twice).
    #[error("{0}")]
    PossiblyPersisted(String),
}

impl ProducerError {
    /// A broker error for one partition.
    pub(crate) fn broker(topic: &str, partition: i32, code: i16, message: Option<String>) -> Self {
        ProducerError::Broker {
            topic: topic.to_string(),
            partition,
            code,
            name: ErrorCode(code).name(),
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// The Kafka error code, for [`ProducerError::Broker`] (and broker errors inside
    /// [`ProducerError::Client`]).
    pub fn code(&self) -> Option<i16> {
        match self {
            ProducerError::Broker { code, .. } => Some(*code),
            ProducerError::Client(c) => c.code(),
            _ => None,
        }
    }
}

impl From<ClientError> for ProducerError {
    fn from(e: ClientError) -> Self {
        ProducerError::Client(Arc::new(e))
    }
}
