//! The ReplicaManager: the topics as the committed metadata describes them, the partition
//! replicas this node hosts (opened or created when the metadata assigns them here, deleted
//! with their topic), and [`ReplicaManager::partition`], the one lookup requests reach a
//! partition through and the one place that answers NOT_LEADER_OR_FOLLOWER.
//!
//! A leader's partitions keep their followers' replication state (`replication`, a pure state
//! machine); its follower partitions are copied by one fetcher per leader broker (`fetcher`).
//! The produce path goes through [`Partition::append_start`], then
//! [`Partition::wait_for_high_watermark`] for acks=all, which the followers' fetches advance.

mod fetcher;
mod maintenance;
mod metadata;
mod partition;
pub mod replication;
pub mod selector;
#[cfg(test)]
mod sim;
mod topic;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use uuid::Uuid;
use vltava_storage::LogManager;

pub use fetcher::run_replica_fetchers;
pub use partition::{
    AckWait, AppendError, FetchPosition, IsrChangeCounters, Parked, Partition, PendingAppend,
    Watermarks, high_watermark,
};
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
    /// The partitions this node follows, by leader: what the replica fetchers copy.
    followers: tokio::sync::watch::Sender<Arc<FollowerAssignment>>,
    /// ISR changes the leaders here want, for the shell that carries them to the controller.
    isr_changes: tokio::sync::mpsc::Sender<IsrChange>,
    isr_changes_rx: Mutex<Option<tokio::sync::mpsc::Receiver<IsrChange>>>,
    /// The committed ISR changes of the partitions led here, for `/metrics`.
    isr_counters: Arc<IsrChangeCounters>,
}

/// An ISR change one of this node's leader partitions proposes (AlterPartition).
#[derive(Debug)]
pub struct IsrChange {
    /// The partition.
    pub partition: Arc<Partition>,
    /// What it proposes.
    pub proposal: replication::IsrProposal,
}

/// The most ISR changes waiting for the shell at once; beyond it a proposal is answered
/// "retry later" at once (the leader state proposes again on its next tick).
const ISR_CHANGE_QUEUE: usize = 4096;

/// The partitions this node follows, grouped by leader broker.
#[derive(Debug, Default)]
pub struct FollowerAssignment {
    /// Leader broker id → its address and the partitions followed there.
    pub leaders: BTreeMap<i32, LeaderAssignment>,
}

/// What one replica fetcher copies: partitions led by one broker.
#[derive(Debug, Clone)]
pub struct LeaderAssignment {
    /// The leader's client listener, `None` if the metadata names none.
    pub addr: Option<(String, u16)>,
    /// The partitions, in topic then index order.
    pub partitions: Vec<Arc<Partition>>,
}

impl PartialEq for LeaderAssignment {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
            && self.partitions.len() == other.partitions.len()
            && self
                .partitions
                .iter()
                .zip(&other.partitions)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl ReplicaManager {
    /// Opens every partition log in the data directory (running recovery). Topics appear once
    /// the committed metadata is applied ([`ReplicaManager::apply_image`]).
    pub fn open(config: BrokerConfig) -> Result<ReplicaManager, TopicError> {
        let dir = config.data_dir();
        // LogManager takes the data directory lock, so it opens before any other file is read.
        let logs = LogManager::open(&dir, config.log_config(&BTreeMap::new()), now_ms())?;
        let (isr_changes, isr_changes_rx) = tokio::sync::mpsc::channel(ISR_CHANGE_QUEUE);
        Ok(ReplicaManager {
            node_id: config.node_id(),
            config,
            topics: RwLock::new(HashMap::new()),
            logs: Mutex::new(logs),
            applied: Mutex::new(None),
            published: tokio::sync::watch::Sender::new(None),
            followers: tokio::sync::watch::Sender::new(Arc::new(FollowerAssignment::default())),
            isr_changes,
            isr_changes_rx: Mutex::new(Some(isr_changes_rx)),
            isr_counters: Arc::default(),
        })
    }

    /// Committed ISR shrinks and expands of the partitions this node has led, since start.
    pub fn isr_change_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.isr_counters.shrinks.load(Ordering::Relaxed),
            self.isr_counters.expands.load(Ordering::Relaxed),
        )
    }

    /// The partitions this node follows, by leader, updated with each applied image.
    pub fn subscribe_followers(&self) -> tokio::sync::watch::Receiver<Arc<FollowerAssignment>> {
        self.followers.subscribe()
    }

    /// The receiving end of the leaders' ISR changes, for the one task that carries them to
    /// the controller (`None` once taken).
    pub fn take_isr_changes(&self) -> Option<tokio::sync::mpsc::Receiver<IsrChange>> {
        self.isr_changes_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Queues a leader's ISR change for the controller; when the queue is full the leader is
    /// told to retry later instead.
    pub fn propose_isr_change(
        &self,
        partition: &Arc<Partition>,
        proposal: replication::IsrProposal,
    ) {
        let change = IsrChange {
            partition: Arc::clone(partition),
            proposal,
        };
        if let Err(e) = self.isr_changes.try_send(change) {
            let change = match e {
                tokio::sync::mpsc::error::TrySendError::Full(c)
                | tokio::sync::mpsc::error::TrySendError::Closed(c) => c,
            };
            change
                .partition
                .on_isr_change_result(change.proposal.id, replication::ProposalResult::RetryLater);
        }
    }

    /// Runs every leader partition's periodic replication check (laggards leave the ISR,
    /// failed ISR changes are retried) and queues what they propose.
    pub fn replication_tick(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            for p in t.local_partitions() {
                if let Some(proposal) = p.replication_tick(now) {
                    self.propose_isr_change(p, proposal);
                }
            }
        }
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
