//! Topics as the committed metadata describes them (every partition's leader, replicas and
//! ISR, and this node's replica where it holds one), which are the broker's own, and valid
//! names.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use vltava_controller::controller::ControllerError;
use vltava_storage::StorageError;

use super::Partition;
use crate::meta::MetaError;

/// One partition of a topic, as of the metadata this node has applied.
#[derive(Debug, Clone)]
pub struct PartitionState {
    /// Partition index.
    pub index: i32,
    /// The leader's broker id, or -1 when no replica can lead.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// This node's replica, when it holds one.
    pub local: Option<Arc<Partition>>,
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Partitions in index order.
    pub partitions: Vec<PartitionState>,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// This topic's metric counters once the first request for it looked them up; shared
    /// with the topic states built from later metadata images, so the lookup happens once.
    pub metrics: Arc<crate::metrics::TopicMetricsCell>,
}

impl Topic {
    /// The replicas of this topic hosted here.
    pub fn local_partitions(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.partitions.iter().filter_map(|p| p.local.as_ref())
    }
}

/// Topics the broker owns: hidden from topic listings, not writable or deletable by clients.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

impl Topic {
    /// True for the broker's own topics.
    pub fn is_internal(&self) -> bool {
        INTERNAL_TOPICS.contains(&self.name.as_str())
    }
}

/// Why a topic operation failed, in terms the handlers map to error codes.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// Name already taken.
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    /// No such topic.
    #[error("topic '{0}' does not exist")]
    Unknown(String),
    /// Illegal topic name.
    #[error("{0}")]
    InvalidName(String),
    /// Bad partition count.
    #[error("{0}")]
    InvalidPartitions(String),
    /// Bad replication factor.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// Bad config.
    #[error("{0}")]
    InvalidConfig(String),
    /// Users may not touch this topic this way.
    #[error("{0}")]
    NotAllowed(String),
    /// Internal topics cannot be deleted by clients.
    #[error("topic '{0}' is internal and cannot be deleted")]
    Internal(String),
    /// Storage failure.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Catalogue failure.
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    /// The active controller refused or could not be reached.
    #[error("{0}")]
    Controller(#[from] ControllerError),
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::InvalidName("topic name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(TopicError::InvalidName(format!(
            "topic name '{name}' is not allowed"
        )));
    }
    if name.len() > 249 {
        return Err(TopicError::InvalidName(
            "topic name is longer than 249 characters".into(),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(TopicError::InvalidName(format!(
            "topic name '{name}' contains characters other than [a-zA-Z0-9._-]"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("a.b_c-1").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
