//! The ReplicaManager: the topics and partitions this node hosts, the catalogue that lists
//! them, and [`ReplicaManager::partition`], the one lookup requests reach a partition through.
//!
//! Today every partition has one replica, this node, so it is always the leader and the high
//! watermark is the log end offset. The produce path still goes through
//! [`Partition::append`] then [`Partition::wait_for_high_watermark`], the two steps that
//! replication will split apart (followers advance the high watermark).

mod maintenance;
mod partition;
mod producer_ids;
mod topic;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use uuid::Uuid;
use vltava_storage::LogManager;

pub use partition::{Partition, PendingAppend, Watermarks, high_watermark};
pub use topic::{INTERNAL_TOPICS, Topic, TopicError, validate_topic_name};

use crate::config::BrokerConfig;
use crate::meta::Catalogue;
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
}

/// All topics and partitions on this node.
#[derive(Debug)]
pub struct ReplicaManager {
    config: BrokerConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    logs: Mutex<LogManager>,
    catalogue: Mutex<Catalogue>,
    producer_ids: Mutex<(i64, i64)>,
}

impl ReplicaManager {
    /// Opens every partition log in the data directory (running recovery) and the catalogue.
    pub fn open(config: BrokerConfig) -> Result<ReplicaManager, TopicError> {
        let dir = config.data_dir();
        // LogManager takes the data directory lock, so it opens before any other file is read.
        let logs = LogManager::open(&dir, config.log_config(&BTreeMap::new()), now_ms())?;
        let catalogue = Catalogue::load(&dir)?;
        let mut topics = HashMap::new();
        for rec in catalogue.topics() {
            let log_config = config.log_config(&rec.configs);
            let mut partitions = Vec::with_capacity(rec.partitions as usize);
            for p in 0..rec.partitions {
                let log = match logs.get(&rec.name, p) {
                    Some(l) => {
                        lock_log(&l).set_config(log_config.clone());
                        l
                    }
                    None => logs.create_log(&rec.name, p, log_config.clone())?,
                };
                partitions.push(Arc::new(Partition::new(p, 0, log)));
            }
            topics.insert(
                rec.name.clone(),
                Arc::new(Topic {
                    name: rec.name.clone(),
                    id: rec.id,
                    partitions,
                    configs: rec.configs.clone(),
                }),
            );
        }
        Ok(ReplicaManager {
            config,
            topics: RwLock::new(topics),
            logs: Mutex::new(logs),
            catalogue: Mutex::new(catalogue),
            producer_ids: Mutex::new((0, 0)),
        })
    }

    /// Broker configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
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

    fn lock_catalogue(&self) -> MutexGuard<'_, Catalogue> {
        self.catalogue.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn lock_logs(&self) -> MutexGuard<'_, LogManager> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Partition `index` of `topic` as this node serves it. Produce, Fetch, ListOffsets and
    /// DeleteRecords all resolve partitions here, so that whether this node may serve a
    /// partition is decided in one place.
    pub fn partition(
        &self,
        topic: &Topic,
        index: i32,
    ) -> Result<Arc<Partition>, PartitionLookupError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i))
            .cloned()
            .ok_or(PartitionLookupError::Unknown)
    }
}
