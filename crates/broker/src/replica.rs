//! Partitions this node hosts and the topic catalogue around them.
//!
//! Today every partition has one replica, this node, so it is always the leader and the high
//! watermark is the log end offset. The produce path still goes through
//! [`Partition::append`] then [`Partition::wait_for_high_watermark`], the two steps that
//! replication will split apart (followers advance the high watermark).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use uuid::Uuid;
use vltava_protocol::batch::BatchHeader;
use vltava_storage::{AppendInfo, Log, LogManager, ReadSlice, RegionSlice, StorageError};

use crate::config::BrokerConfig;
use crate::meta::{Catalogue, MetaError, PRODUCER_ID_BLOCK, TopicRecord};

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One partition replica hosted here.
#[derive(Debug)]
pub struct Partition {
    /// Partition index.
    pub index: i32,
    /// Leader epoch (constant until leadership can move).
    pub leader_epoch: i32,
    log: Arc<Mutex<Log>>,
    /// Fetchers parked until data arrives (the fetch purgatory for this partition).
    waiters: Mutex<Vec<Arc<Notify>>>,
}

/// Offsets a reader needs alongside the data.
#[derive(Debug, Clone, Copy)]
pub struct Watermarks {
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// Offset below which records are committed and visible to consumers.
    pub high_watermark: i64,
}

/// Offset below which records are visible to consumers. With one replica that is the log end,
/// except with `flush.on.append`, where only fsynced records are (a power loss could take the
/// rest back).
pub fn high_watermark(log: &Log) -> u64 {
    if log.config().flush_on_append {
        log.recovery_point().min(log.log_end_offset())
    } else {
        log.log_end_offset()
    }
}

fn lock_log(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    // A panic while holding the lock leaves the log in the state of its last completed
    // operation (appends are checked before they write), so continuing is safe.
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// An append whose batches are written but maybe not yet durable (see
/// [`Partition::append_start`]).
pub struct PendingAppend {
    partition: Arc<Partition>,
    info: AppendInfo,
    group_commit: Option<Arc<vltava_storage::GroupCommit>>,
}

impl PendingAppend {
    /// The partition appended to.
    pub fn partition(&self) -> Arc<Partition> {
        Arc::clone(&self.partition)
    }

    /// Waits until an fsync covers the batches (with `flush.on.append`), then wakes parked
    /// fetchers.
    pub async fn finish(self) -> Result<AppendInfo, StorageError> {
        // A duplicate waits too: its original may still be waiting for its fsync.
        if let Some(gc) = self.group_commit {
            let log = Arc::clone(&self.partition.log);
            let end = self.info.last_offset + 1;
            tokio::task::spawn_blocking(move || gc.sync_through(&log, end))
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
            // The high watermark follows the fsyncs: only now are the records readable.
            if !self.info.duplicate {
                self.partition.wake_waiters();
            }
        }
        Ok(self.info)
    }
}

impl Partition {
    /// Locks the log for one synchronous operation (never across an await).
    pub fn log(&self) -> MutexGuard<'_, Log> {
        lock_log(&self.log)
    }

    /// Appends validated batches as leader and wakes parked fetchers. With `flush.on.append`
    /// it returns only once an fsync covers the batches; concurrent appenders share fsyncs
    /// (group commit) and the log lock is not held during the fsync.
    pub async fn append(
        self: &Arc<Self>,
        batches: &[(BatchHeader, Bytes)],
    ) -> Result<AppendInfo, StorageError> {
        self.append_start(batches)?.finish().await
    }

    /// The part of [`Partition::append`] that writes: the batches are in the log (in the
    /// page cache) when it returns. [`PendingAppend::finish`] waits for durability, so a
    /// connection can write its next request while this one's fsync is shared with it.
    pub fn append_start(
        self: &Arc<Self>,
        batches: &[(BatchHeader, Bytes)],
    ) -> Result<PendingAppend, StorageError> {
        let (info, group_commit) = {
            let mut log = self.log();
            let info = log.append_deferred(batches, self.leader_epoch, now_ms())?;
            (
                info,
                log.config().flush_on_append.then(|| log.group_commit()),
            )
        };
        // Without flush.on.append the records are readable now: fetchers must not wait for
        // this connection's writer to get round to finishing.
        if group_commit.is_none() && !info.duplicate {
            self.wake_waiters();
        }
        Ok(PendingAppend {
            partition: Arc::clone(self),
            info,
            group_commit,
        })
    }

    /// Appends from a synchronous context (the broker's own records); with `flush.on.append`
    /// the storage fsyncs inline.
    pub fn append_blocking(
        &self,
        batches: &[(BatchHeader, Bytes)],
    ) -> Result<AppendInfo, StorageError> {
        let info = self.log().append(batches, self.leader_epoch, now_ms())?;
        if !info.duplicate {
            self.wake_waiters();
        }
        Ok(info)
    }

    /// Waits until the high watermark passes `last_offset` (acks=all). With a single replica
    /// the local append already moved it, so this returns at once; replication will make this
    /// wait on follower fetches.
    pub async fn wait_for_high_watermark(&self, last_offset: i64, _timeout: Duration) -> bool {
        self.watermarks().high_watermark > last_offset
    }

    /// Current log start offset and high watermark.
    pub fn watermarks(&self) -> Watermarks {
        let log = self.log();
        Watermarks {
            log_start_offset: log.log_start_offset() as i64,
            high_watermark: high_watermark(&log) as i64,
        }
    }

    /// Reads whole batches for a consumer: never above the high watermark. The copy is made
    /// after the log's lock is released.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<(ReadSlice, Watermarks), StorageError> {
        let (regions, wm) = self.read_regions(offset, max_bytes, min_one_batch)?;
        Ok((regions.materialize()?, wm))
    }

    /// Locates whole batches for a consumer without copying them (see
    /// [`vltava_storage::Log::read_regions`]); the log's lock is held only while they are found.
    pub fn read_regions(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<(RegionSlice, Watermarks), StorageError> {
        let log = self.log();
        let wm = Watermarks {
            log_start_offset: log.log_start_offset() as i64,
            high_watermark: high_watermark(&log) as i64,
        };
        let Ok(offset) = u64::try_from(offset) else {
            return Err(StorageError::OffsetOutOfRange {
                offset: 0,
                log_start: wm.log_start_offset as u64,
                log_end: wm.high_watermark as u64,
            });
        };
        let slice = log.read_regions(offset, max_bytes, wm.high_watermark as u64, min_one_batch)?;
        Ok((slice, wm))
    }

    /// Registers a fetcher to be woken by the next append.
    pub fn add_waiter(&self, notify: &Arc<Notify>) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Drop waiters whose fetch already finished, so the list stays bounded.
        w.retain(|n| Arc::strong_count(n) > 1);
        w.push(Arc::clone(notify));
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for n in waiters {
            n.notify_one();
        }
    }
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Partitions in index order.
    pub partitions: Vec<Arc<Partition>>,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
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
                partitions.push(Arc::new(Partition {
                    index: p,
                    leader_epoch: 0,
                    log,
                    waiters: Mutex::new(Vec::new()),
                }));
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

    /// Creates a topic. `validate_only` checks everything without creating.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.config.num_partitions()
        } else {
            partitions
        };
        if partitions <= 0 {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions must be positive, got {partitions}"
            )));
        }
        let replication_factor = if replication_factor == -1 {
            self.config.default_replication_factor()
        } else {
            replication_factor
        };
        if replication_factor != 1 {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} is larger than the 1 available broker"
            )));
        }
        for (k, v) in &configs {
            crate::config::validate_topic_setting(k, v)
                .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
        }
        // Serialise creations through the catalogue lock so two creators cannot race.
        let mut catalogue = self.lock_catalogue();
        if self.topic(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        let collides = self
            .all_topics()
            .iter()
            .any(|t| t.name.replace('.', "_") == name.replace('.', "_"));
        if collides {
            return Err(TopicError::InvalidName(format!(
                "topic '{name}' collides with an existing topic ('.' and '_' are equivalent in metric names)"
            )));
        }
        let id = Uuid::new_v4();
        let topic = self.build_topic(name, id, partitions, configs, 0, &[])?;
        if validate_only {
            return Ok(topic);
        }
        catalogue.put(TopicRecord {
            name: name.to_string(),
            id,
            partitions,
            configs: topic.configs.clone(),
        })?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    fn build_topic(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        existing: i32,
        keep: &[Arc<Partition>],
    ) -> Result<Arc<Topic>, TopicError> {
        let log_config = self.config.log_config(&configs);
        let mut parts: Vec<Arc<Partition>> = keep.to_vec();
        let logs = self.lock_logs();
        for p in existing..partitions {
            let log = logs.create_log(name, p, log_config.clone())?;
            lock_log(&log).set_topic_id(&id.to_string())?;
            parts.push(Arc::new(Partition {
                index: p,
                leader_epoch: 0,
                log,
                waiters: Mutex::new(Vec::new()),
            }));
        }
        Ok(Arc::new(Topic {
            name: name.to_string(),
            id,
            partitions: parts,
            configs,
        }))
    }

    /// Creates one of the broker's internal topics if it does not exist yet. Its settings are
    /// the broker's choice, so they skip the validation applied to clients' settings.
    pub fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let mut catalogue = self.lock_catalogue();
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let id = Uuid::new_v4();
        let topic = self.build_topic(name, id, partitions, configs, 0, &[])?;
        catalogue.put(TopicRecord {
            name: name.to_string(),
            id,
            partitions,
            configs: topic.configs.clone(),
        })?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created internal topic");
        Ok(topic)
    }

    /// Creates a topic on first use if the broker allows it.
    pub fn auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>, TopicError> {
        if let Some(t) = self.topic(name) {
            return Ok(Some(t));
        }
        if !self.config.auto_create_topics() {
            return Ok(None);
        }
        match self.create_topic(name, -1, -1, BTreeMap::new(), false) {
            Ok(t) => Ok(Some(t)),
            Err(TopicError::AlreadyExists(_)) => Ok(self.topic(name)),
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic and its files.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        if !self.config.delete_topic_enable() {
            return Err(TopicError::NotAllowed(
                "topic deletion is disabled (delete.topic.enable=false)".into(),
            ));
        }
        let mut catalogue = self.lock_catalogue();
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        if topic.is_internal() {
            return Err(TopicError::Internal(name.to_string()));
        }
        catalogue.remove(name)?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        for p in &topic.partitions {
            p.wake_waiters();
        }
        self.lock_logs().delete_topic(name)?;
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Raises a topic's partition count.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut catalogue = self.lock_catalogue();
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic currently has {current} partitions, {count} would not be an increase"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let new = self.build_topic(
            name,
            topic.id,
            count,
            topic.configs.clone(),
            current,
            &topic.partitions,
        )?;
        catalogue.put(TopicRecord {
            name: name.to_string(),
            id: topic.id,
            partitions: count,
            configs: topic.configs.clone(),
        })?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), new);
        Ok(())
    }

    /// Replaces (or, with `incremental`, merges into) a topic's config overrides.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
        incremental: bool,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut catalogue = self.lock_catalogue();
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut configs = if incremental {
            topic.configs.clone()
        } else {
            BTreeMap::new()
        };
        for (k, v) in changes {
            match v {
                Some(v) => {
                    crate::config::validate_topic_setting(k, v)
                        .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
                    configs.insert(k.clone(), v.clone());
                }
                None => {
                    if !crate::config::topic_setting_names().any(|n| n == k) {
                        return Err(TopicError::InvalidConfig(format!("unknown setting '{k}'")));
                    }
                    configs.remove(k);
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        catalogue.put(TopicRecord {
            name: name.to_string(),
            id: topic.id,
            partitions: topic.partitions.len() as i32,
            configs: configs.clone(),
        })?;
        let log_config = self.config.log_config(&configs);
        for p in &topic.partitions {
            p.log().set_config(log_config.clone());
        }
        let new = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            configs,
        });
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), new);
        Ok(())
    }

    /// Hands out a fresh producer id, persisting a new block when one runs out.
    pub fn next_producer_id(&self) -> Result<i64, TopicError> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            let start = self.lock_catalogue().reserve_producer_ids()?;
            *ids = (start, start + PRODUCER_ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Deletes segments past retention in every partition.
    pub fn apply_retention(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            for p in &t.partitions {
                match p.log().apply_retention(now) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %t.name, partition = p.index, segments = n, "retention deleted segments")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %t.name, partition = p.index, error = %e, "retention failed")
                    }
                }
            }
        }
    }

    /// Runs the time-based flush policy (`flush.ms`) of every partition.
    pub fn maybe_flush_all(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            for p in &t.partitions {
                if let Err(e) = p.log().maybe_flush(now) {
                    tracing::warn!(topic = %t.name, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Compacts every log whose policy includes `compact` and that has enough dirty bytes.
    pub fn clean_all(&self) {
        match self.lock_logs().clean_all(now_ms()) {
            Ok(cleaned) => {
                for (tp, stats) in cleaned {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, ?stats, "compacted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "log cleaner failed"),
        }
    }

    /// Writes recovery-point and log-start checkpoints.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.lock_logs().checkpoint()
    }

    /// Flushes every log, writes checkpoints and marks the shutdown clean, so the next start
    /// recovers nothing.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        self.lock_logs().shutdown_cleanly()
    }
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
