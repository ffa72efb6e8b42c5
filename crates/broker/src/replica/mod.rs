//! The ReplicaManager: the topics as the committed metadata describes them, the partition
//! replicas this node hosts (opened or created when the metadata assigns them here, deleted
//! with their topic), and [`ReplicaManager::partition`], the one lookup requests reach a
//! partition through and the one place that answers NOT_LEADER_OR_FOLLOWER.
//!
//! Until partitions are replicated every partition has one replica, so its leader's high
//! watermark is the log end offset. The produce path still goes through
//! [`Partition::append`] then [`Partition::wait_for_high_watermark`], the two steps that
//! replication will split apart (followers advance the high watermark).

mod maintenance;
mod metadata;
mod partition;
mod topic;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use uuid::Uuid;
use vltava_storage::LogManager;

pub use partition::{Partition, PendingAppend, Watermarks, high_watermark};
pub use topic::{INTERNAL_TOPICS, PartitionState, Topic, TopicError, validate_topic_name};

use crate::config::BrokerConfig;
use partition::lock_log;

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why [`ReplicaManager::partition`] found no partition to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PartitionLookupError {
    /// The topic has no partition with that index.
    #[error("unknown partition")]
    Unknown,
    /// Another broker leads it (-1 if unknown to this node).
    #[error("this broker is not the partition's leader")]
    NotLeader {
        /// The leader's broker id.
        leader: i32,
        /// Its leader epoch.
        leader_epoch: i32,
    },
    /// No replica can lead it now (its only in-sync replica is fenced).
    #[error("the partition has no leader")]
    LeaderNotAvailable,
    /// The request names an older leader epoch than the current one.
    #[error("fenced leader epoch")]
    FencedLeaderEpoch,
    /// The request names a newer leader epoch than this broker knows.
    #[error("unknown leader epoch")]
    UnknownLeaderEpoch,
}

/// All topics, and the partitions on this node.
#[derive(Debug)]
pub struct ReplicaManager {
    config: BrokerConfig,
    node_id: i32,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    logs: Mutex<LogManager>,
    /// The metadata offset last applied by [`ReplicaManager::apply_image`]; held while applying
    /// so that images are applied one at a time, in order.
    applied: Mutex<Option<u64>>,
    /// Tells who follows the topic view ([`ReplicaManager::subscribe_published`]) that an image
    /// has been applied.
    published: tokio::sync::watch::Sender<Option<u64>>,
}

impl ReplicaManager {
    /// Opens every partition log in the data directory (running recovery). Topics appear once
    /// the committed metadata is applied ([`ReplicaManager::apply_image`]).
    pub fn open(config: BrokerConfig) -> Result<ReplicaManager, TopicError> {
        let dir = config.data_dir();
        // LogManager takes the data directory lock, so it opens before any other file is read.
        let logs = LogManager::open(&dir, config.log_config(&BTreeMap::new()), now_ms())?;
        Ok(ReplicaManager {
            node_id: config.node_id(),
            config,
            topics: RwLock::new(HashMap::new()),
            logs: Mutex::new(logs),
            applied: Mutex::new(None),
            published: tokio::sync::watch::Sender::new(None),
        })
    }

    /// This broker's id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Broker configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Changes to the metadata offset of the topic view, sent after each applied image (the
    /// group coordinator follows which `__consumer_offsets` partitions this node leads).
    pub fn subscribe_published(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.published.subscribe()
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// All topics, sorted by name.
    pub fn all_topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn lock_logs(&self) -> MutexGuard<'_, LogManager> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Partition `index` of `topic` as this node serves it as leader. Produce, Fetch,
    /// ListOffsets and DeleteRecords all resolve partitions here, so that whether this node may
    /// serve a partition is decided in one place.
    pub fn partition(
        &self,
        topic: &Topic,
        index: i32,
    ) -> Result<Arc<Partition>, PartitionLookupError> {
        self.partition_at_epoch(topic, index, -1)
    }

    /// [`ReplicaManager::partition`] for a request that names the leader epoch it expects
    /// (`current_leader_epoch`; -1 checks nothing, as in Kafka).
    pub fn partition_at_epoch(
        &self,
        topic: &Topic,
        index: i32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, PartitionLookupError> {
        let state = usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i))
            .ok_or(PartitionLookupError::Unknown)?;
        if state.leader < 0 {
            return Err(PartitionLookupError::LeaderNotAvailable);
        }
        let local = match &state.local {
            Some(local) if state.leader == self.node_id => local,
            _ => {
                return Err(PartitionLookupError::NotLeader {
                    leader: state.leader,
                    leader_epoch: state.leader_epoch,
                });
            }
        };
        if current_leader_epoch >= 0 {
            if current_leader_epoch < state.leader_epoch {
                return Err(PartitionLookupError::FencedLeaderEpoch);
            }
            if current_leader_epoch > state.leader_epoch {
                return Err(PartitionLookupError::UnknownLeaderEpoch);
            }
        }
        Ok(Arc::clone(local))
    }
}
