//! The async shell around the pure group coordinator ([`crate::group`]): it parks JoinGroup and
//! SyncGroup requests until the state machine completes them, runs the state machine's timers,
//! and makes offsets and group metadata durable in `__consumer_offsets` before answering.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::{Notify, oneshot};
use vltava_protocol::batch;

use crate::group::{CompletedResponse, Completion, GroupConfig, GroupCoordinator, Outcome};
use crate::offsets::{OFFSETS_TOPIC, OffsetEntry, OffsetStore, OffsetsRecord, partition_for};
use crate::replica::{AckWait, AppendError, Partition, ReplicaManager, TopicError, now_ms};

/// Partitions of `__consumer_offsets` (`offsets.topic.num.partitions`).
pub const OFFSETS_PARTITIONS_DEFAULT: i32 = 50;

/// Why group state could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum GroupStoreError {
    /// The internal topic could not be created or opened.
    #[error("{0}")]
    Topic(#[from] TopicError),
    /// Appending or reading the internal topic failed.
    #[error("{0}")]
    Storage(#[from] vltava_storage::StorageError),
    /// A record could not be encoded.
    #[error("encoding offsets record: {0}")]
    Encode(String),
    /// This node no longer leads the group's `__consumer_offsets` partition.
    #[error("not the coordinator: {0}")]
    NotCoordinator(String),
}

impl GroupStoreError {
    /// The Kafka error code a request that could not be made durable gets.
    pub fn code(&self) -> i16 {
        match self {
            GroupStoreError::NotCoordinator(_) => ResponseError::NotCoordinator.code(),
            _ => ResponseError::CoordinatorNotAvailable.code(),
        }
    }
}

/// Group coordination and offset storage for this node.
#[derive(Debug)]
pub struct GroupManager {
    rm: Arc<ReplicaManager>,
    core: Mutex<GroupCoordinator>,
    offsets: Mutex<OffsetStore>,
    /// Parked JoinGroup/SyncGroup requests by token, with their group.
    parked: Mutex<HashMap<u64, (String, oneshot::Sender<CompletedResponse>)>>,
    /// Each group's latest group-metadata append, which every JoinGroup and SyncGroup answer
    /// of the group waits for (see [`GroupManager::settle`]).
    group_writes: Mutex<HashMap<String, Written>>,
    next_token: AtomicU64,
    timers: Notify,
    /// Partitions of `__consumer_offsets` (the topic's count once it exists).
    partitions: AtomicI32,
    /// The `__consumer_offsets` partitions this node leads, by index.
    owned: Mutex<HashMap<i32, Owned>>,
    /// Held by [`GroupManager::sync_ownership`] so that syncs run one at a time.
    syncing: Mutex<()>,
}

/// One `__consumer_offsets` partition this node leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owned {
    /// The leader epoch it was loaded in: another epoch means leadership moved and came back,
    /// so what was loaded may be stale.
    leader_epoch: i32,
    /// Its groups and offsets are in memory.
    loaded: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupManager {
    /// The settings of `__consumer_offsets`, which the broker creates through the controller
    /// before opening the group manager.
    pub fn offsets_topic_configs() -> BTreeMap<String, String> {
        BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())])
    }

    /// Loads the groups and offsets of the `__consumer_offsets` partitions this node leads.
    pub fn open(rm: Arc<ReplicaManager>) -> Result<GroupManager, GroupStoreError> {
        let config = rm.config();
        let partitions = config.offsets_topic_partitions();
        let group_config = GroupConfig {
            min_session_timeout_ms: config.group_min_session_timeout_ms(),
            max_session_timeout_ms: config.group_max_session_timeout_ms(),
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms(),
            ..GroupConfig::default()
        };
        let mgr = GroupManager {
            rm,
            core: Mutex::new(GroupCoordinator::new(group_config)),
            offsets: Mutex::new(OffsetStore::default()),
            parked: Mutex::new(HashMap::new()),
            group_writes: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            timers: Notify::new(),
            partitions: AtomicI32::new(partitions),
            owned: Mutex::new(HashMap::new()),
            syncing: Mutex::new(()),
        };
        mgr.sync_ownership()?;
        Ok(mgr)
    }

    /// The error a request for `group` gets before the state machine sees it: NONE when this
    /// node coordinates the group (it leads the group's `__consumer_offsets` partition and has
    /// loaded it), COORDINATOR_LOAD_IN_PROGRESS while it loads it, NOT_COORDINATOR otherwise.
    pub fn coordinator_error(&self, group: &str) -> i16 {
        let index = partition_for(group, self.partitions.load(Ordering::Relaxed));
        match lock(&self.owned).get(&index) {
            Some(o) if o.loaded => crate::errors::NONE,
            Some(_) => ResponseError::CoordinatorLoadInProgress.code(),
            None => ResponseError::NotCoordinator.code(),
        }
    }

    /// True while some `__consumer_offsets` partition led here is still being loaded.
    pub fn loading(&self) -> bool {
        lock(&self.owned).values().any(|o| !o.loaded)
    }

    /// Brings the groups this node coordinates in line with the partitions of
    /// `__consumer_offsets` it leads, as of the metadata the replica manager has applied: the
    /// groups and offsets of a partition it no longer leads (or leads in another epoch) are
    /// dropped, and those of a partition it now leads are read from its log. Called at start
    /// and after every metadata change; blocking (it reads logs).
    pub fn sync_ownership(&self) -> Result<(), GroupStoreError> {
        let _one_at_a_time = lock(&self.syncing);
        let mut led: HashMap<i32, (Arc<Partition>, i32)> = HashMap::new();
        if let Some(topic) = self.rm.topic(OFFSETS_TOPIC) {
            self.partitions
                .store(topic.partitions.len() as i32, Ordering::Relaxed);
            for state in &topic.partitions {
                if let Ok(p) = self.rm.partition(&topic, state.index) {
                    led.insert(state.index, (p, state.leader_epoch));
                }
            }
        }
        let lost: Vec<i32> = {
            let mut owned = lock(&self.owned);
            let lost: Vec<i32> = owned
                .iter()
                .filter(|(i, o)| led.get(i).map(|(_, epoch)| *epoch) != Some(o.leader_epoch))
                .map(|(i, _)| *i)
                .collect();
            for i in &lost {
                owned.remove(i);
            }
            lost
        };
        if !lost.is_empty() {
            self.unload(&lost);
        }
        let mut first_error = None;
        let mut gained: Vec<_> = {
            let owned = lock(&self.owned);
            led.into_iter()
                .filter(|(i, _)| !owned.contains_key(i))
                .collect()
        };
        gained.sort_by_key(|(i, _)| *i);
        if !gained.is_empty() {
            tracing::info!(
                partitions = ?gained.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                "coordinating the groups of these {OFFSETS_TOPIC} partitions"
            );
        }
        for (index, (partition, leader_epoch)) in gained {
            lock(&self.owned).insert(
                index,
                Owned {
                    leader_epoch,
                    loaded: false,
                },
            );
            match self.load_partition(&partition) {
                Ok(()) => {
                    if let Some(o) = lock(&self.owned).get_mut(&index) {
                        o.loaded = true;
                    }
                }
                Err(e) => {
                    tracing::error!(partition = index, error = %e, "cannot load groups of {OFFSETS_TOPIC}");
                    lock(&self.owned).remove(&index);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Drops the groups and offsets of `partitions` and answers their parked requests with
    /// NOT_COORDINATOR.
    fn unload(&self, partitions: &[i32]) {
        let count = self.partitions.load(Ordering::Relaxed);
        let moved = |g: &str| partitions.contains(&partition_for(g, count));
        let mut core = lock(&self.core);
        let (groups, completions) = core.unload(moved);
        lock(&self.offsets).unload(moved);
        lock(&self.group_writes).retain(|g, _| !moved(g));
        self.after_step(&mut core, completions);
        tracing::info!(
            partitions = ?partitions,
            groups = groups.len(),
            "no longer coordinating the groups of these {OFFSETS_TOPIC} partitions"
        );
    }

    /// Reads one `__consumer_offsets` partition from its start and restores its groups and
    /// offsets (the last record of each key wins, as compaction would leave it).
    fn load_partition(&self, p: &Partition) -> Result<(), GroupStoreError> {
        let mut groups: HashMap<String, Option<Bytes>> = HashMap::new();
        let mut offsets = Vec::new();
        let mut count = 0usize;
        let mut next = p.watermarks().log_start_offset;
        // Up to the log end, not the high watermark, as Kafka loads groups: a new leader's
        // high watermark moves only once its followers fetch from it, and until then it may
        // sit below commits that the old leader's in-sync replicas all had (and acknowledged).
        loop {
            let (regions, _) = p.read_regions_for_replica(next, 1 << 20, true)?;
            let slice = regions
                .materialize()
                .map_err(vltava_storage::StorageError::Io)?;
            if slice.bytes.is_empty() {
                break;
            }
            next = slice.next_offset as i64;
            let mut bytes = slice.bytes;
            let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|e| {
                vltava_storage::StorageError::Corrupt(format!("{OFFSETS_TOPIC}-{}: {e}", p.index))
            })?;
            for set in sets {
                for r in set.records {
                    let Some(key) = r.key else { continue };
                    match OffsetsRecord::decode(key, r.value) {
                        Ok(OffsetsRecord::Group { group, value }) => {
                            count += 1;
                            groups.insert(group, value);
                        }
                        Ok(rec) => {
                            count += 1;
                            offsets.push(rec);
                        }
                        Err(e) => tracing::warn!(error = %e, "skipping offsets record"),
                    }
                }
            }
            if slice.next_offset >= slice.log_end_offset {
                break;
            }
        }
        let now = now_ms();
        let mut core = lock(&self.core);
        {
            let mut store = lock(&self.offsets);
            for rec in &offsets {
                store.apply(rec);
            }
        }
        let mut restored = 0;
        for (group, value) in groups {
            let Some(value) = value else { continue };
            match crate::offsets::decode_group_value(&group, value) {
                Ok(snapshot) => {
                    core.restore(snapshot, now);
                    restored += 1;
                }
                Err(e) => tracing::warn!(group, error = %e, "skipping group metadata"),
            }
        }
        // Restoring is not a change to write back.
        core.take_dirty();
        drop(core);
        self.timers.notify_one();
        tracing::debug!(
            partition = p.index,
            records = count,
            groups = restored,
            "loaded the groups of {OFFSETS_TOPIC}"
        );
        Ok(())
    }

    /// Keeps the coordinated groups in line with the metadata until shutdown
    /// ([`GroupManager::sync_ownership`] after every image the replica manager applies, and
    /// every few seconds to retry a partition that failed to load).
    pub async fn run_ownership(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut published = self.rm.subscribe_published();
        let mut retry = tokio::time::interval(Duration::from_secs(5));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = published.changed() => if changed.is_err() { return },
                _ = retry.tick() => {}
            }
            let me = Arc::clone(&self);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || me.sync_ownership()).await {
                tracing::warn!(error = %e, "group coordinator ownership not up to date");
            }
        }
    }

    /// Appends records to the group's `__consumer_offsets` partition (all or nothing).
    fn persist(&self, group: &str, records: &[OffsetsRecord]) -> Result<(), GroupStoreError> {
        self.persist_at(group, records).map(|_| ())
    }

    /// [`GroupManager::persist`], returning the partition and the last offset written, for a
    /// caller that waits until the in-sync replicas have it.
    fn persist_at(
        &self,
        group: &str,
        records: &[OffsetsRecord],
    ) -> Result<Option<(Arc<Partition>, i32, i64)>, GroupStoreError> {
        if records.is_empty() {
            return Ok(None);
        }
        let topic = self
            .rm
            .topic(OFFSETS_TOPIC)
            .ok_or_else(|| TopicError::Unknown(OFFSETS_TOPIC.to_string()))?;
        let index = partition_for(group, self.partitions.load(Ordering::Relaxed));
        let partition = self.rm.partition(&topic, index).map_err(|e| {
            GroupStoreError::NotCoordinator(format!("{OFFSETS_TOPIC}-{index}: {e}"))
        })?;
        let now = now_ms();
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (key, value) = r.encode();
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    // The encoder keeps records in one batch while offset - sequence is constant.
                    sequence: i as i32,
                    timestamp: now,
                    key: Some(key),
                    value,
                    headers: Default::default(),
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &recs,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| GroupStoreError::Encode(e.to_string()))?;
        let batches = batch::split_produced(buf.freeze())
            .map_err(|e| GroupStoreError::Encode(e.to_string()))?;
        let (info, epoch) = partition.append_blocking(&batches).map_err(|e| match e {
            AppendError::NotLeader => {
                GroupStoreError::NotCoordinator(format!("{OFFSETS_TOPIC}-{index}: {e}"))
            }
            AppendError::Storage(e) => e.into(),
        })?;
        Ok(Some((partition, epoch, info.last_offset as i64)))
    }

    /// Persists the metadata of every group whose state changed, and hands completions to
    /// their parked requests. Called after every state machine step.
    fn after_step(&self, core: &mut GroupCoordinator, completions: Vec<Completion>) -> Settled {
        let settled = self.settle(core, completions);
        // Deadlines may have moved: let the timer task recompute its sleep.
        self.timers.notify_one();
        settled
    }

    /// Persists the group metadata the step changed, and delivers its completions once that is
    /// replicated. Returns what was written, for a caller answering the step's own request.
    fn settle(&self, core: &mut GroupCoordinator, completions: Vec<Completion>) -> Settled {
        // The last offset written per offsets partition in this step.
        let mut written: Vec<Written> = Vec::new();
        let mut persist_error = None;
        for group in core.take_dirty() {
            let record = OffsetsRecord::Group {
                value: core
                    .group_snapshot(&group)
                    .map(|s| crate::offsets::encode_group_value(&s)),
                group: group.clone(),
            };
            match self.persist_at(&group, &[record]) {
                Ok(Some((partition, epoch, last))) => {
                    self.record_group_write(&group, (Arc::clone(&partition), epoch, last));
                    match written
                        .iter_mut()
                        .find(|(p, _, _)| Arc::ptr_eq(p, &partition))
                    {
                        Some(w) => *w = (partition, epoch, last.max(w.2)),
                        None => written.push((partition, epoch, last)),
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(group, error = %e, "cannot persist group metadata");
                    // What the step's answers announce is not stored: they become this error
                    // (NOT_COORDINATOR when the offsets partition moved away).
                    persist_error.get_or_insert(e.code());
                }
            }
        }
        let settled = Settled {
            written,
            persist_error,
        };
        let mut groups: Vec<String> = Vec::new();
        let deliveries: Vec<(u64, oneshot::Sender<CompletedResponse>, CompletedResponse)> = {
            let mut parked = lock(&self.parked);
            completions
                .into_iter()
                .filter_map(|c| match parked.remove(&c.token) {
                    Some((group, tx)) => {
                        if !groups.contains(&group) {
                            groups.push(group);
                        }
                        Some((c.token, tx, c.response))
                    }
                    None => {
                        tracing::debug!(token = c.token, "completion for an unknown token");
                        None
                    }
                })
                .collect()
        };
        if deliveries.is_empty() {
            return settled;
        }
        // JoinGroup and SyncGroup answers go out once the in-sync replicas have their group's
        // metadata (Kafka's storeGroup with acks=-1), so that a coordinator failover keeps the
        // generation the members were told. Not only this step's writes: a step that wrote
        // nothing may still announce a generation whose record an earlier step is writing. The
        // wait runs as a task: the state machine lock is not held across it.
        let waits = self.with_group_writes(settled.written.clone(), &groups);
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(handle) if settled.persist_error.is_none() && !waits.is_empty() => {
                let timeout = Duration::from_millis(self.rm.config().offsets_commit_timeout_ms());
                handle.spawn(async move {
                    let error = wait_replicated(waits, timeout).await;
                    deliver(deliveries, error);
                });
            }
            _ => deliver(deliveries, settled.persist_error),
        }
        settled
    }

    /// Remembers `write` as `group`'s latest group-metadata append. Entries whose append the
    /// in-sync replicas already have are dropped once the map grows, so it stays as large as
    /// the groups with a write in flight, not as all groups ever seen.
    fn record_group_write(&self, group: &str, write: Written) {
        let mut writes = lock(&self.group_writes);
        if writes.len() >= GROUP_WRITES_PRUNE_AT {
            writes.retain(|_, (p, _, last)| p.watermarks().high_watermark <= *last);
        }
        writes.insert(group.to_string(), write);
    }

    /// `written` plus the latest group-metadata append of each of `groups`, one wait per
    /// partition (its highest offset).
    fn with_group_writes(&self, mut written: Vec<Written>, groups: &[String]) -> Vec<Written> {
        let writes = lock(&self.group_writes);
        for (partition, _, last) in groups.iter().filter_map(|g| writes.get(g)) {
            // In the partition's current epoch: while this node leads it, its own appends are
            // in its log whatever epoch they were made in (losing leadership unloads the
            // groups and forgets their entries), and the wait ends NOT_COORDINATOR if it no
            // longer leads.
            let epoch = partition.leader_epoch();
            match written
                .iter_mut()
                .find(|(p, e, _)| Arc::ptr_eq(p, partition) && *e == epoch)
            {
                Some(w) => w.2 = w.2.max(*last),
                None => written.push((Arc::clone(partition), epoch, *last)),
            }
        }
        written
    }

    /// Runs a parking request of `group`: `step` is called under the state machine lock with
    /// a fresh token, on the blocking pool (it may append group metadata to
    /// `__consumer_offsets`); a parked request then waits for its completion (bounded by
    /// `max_wait`).
    async fn run_parked<R: Send + 'static>(
        self: &Arc<Self>,
        group: String,
        max_wait: Duration,
        step: impl FnOnce(&mut GroupCoordinator, u64) -> (Outcome<R>, Vec<Completion>) + Send + 'static,
        from_completion: impl FnOnce(CompletedResponse) -> Option<R>,
        on_timeout: impl FnOnce() -> R,
        on_error: impl FnOnce(i16) -> R,
    ) -> R {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.parked).insert(token, (group.clone(), tx));
        let me = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            let mut core = lock(&me.core);
            let (outcome, completions) = step(&mut core, token);
            tracing::debug!(
                token,
                parked = matches!(outcome, Outcome::Parked),
                completions = completions.len(),
                "group step"
            );
            let settled = me.after_step(&mut core, completions);
            (outcome, settled)
        })
        .await;
        let (outcome, settled) = match outcome {
            Ok(o) => o,
            Err(e) => {
                lock(&self.parked).remove(&token);
                // A panic stays a panic of the connection's task, as when the step ran inline.
                if let Ok(panic) = e.try_into_panic() {
                    std::panic::resume_unwind(panic);
                }
                // The runtime is shutting down.
                return on_timeout();
            }
        };
        match outcome {
            Outcome::Now(r) => {
                lock(&self.parked).remove(&token);
                // An answer given at once (a SyncGroup completing the round, or a follower's
                // SyncGroup in a group the leader's just made Stable) waits for the group
                // metadata it announces like the parked ones do.
                if let Some(code) = settled.persist_error {
                    return on_error(code);
                }
                let timeout = Duration::from_millis(self.rm.config().offsets_commit_timeout_ms());
                let waits = self.with_group_writes(settled.written, &[group]);
                match wait_replicated(waits, timeout).await {
                    None => r,
                    Some(code) => on_error(code),
                }
            }
            Outcome::Parked => {
                let received = tokio::time::timeout(max_wait, rx).await;
                match received {
                    Ok(Ok(resp)) => from_completion(resp).unwrap_or_else(on_timeout),
                    _ => {
                        lock(&self.parked).remove(&token);
                        on_timeout()
                    }
                }
            }
        }
    }

    /// Handles a JoinGroup.
    pub async fn join_group(
        self: &Arc<Self>,
        args: crate::group::JoinGroupArgs,
        version: i16,
    ) -> crate::group::JoinResult {
        let member_id = args.member_id.clone();
        let code = self.coordinator_error(&args.group_id);
        if code != crate::errors::NONE {
            return join_failed(member_id, code);
        }
        // The coordinator answers within the rebalance timeout; the extra minute only guards
        // against a lost completion.
        let wait = Duration::from_millis(
            args.rebalance_timeout_ms
                .max(args.session_timeout_ms)
                .max(0) as u64,
        ) + Duration::from_secs(60);
        self.run_parked(
            args.group_id.clone(),
            wait,
            move |core, token| core.join_group(token, args, version, now_ms()),
            |r| match r {
                CompletedResponse::Join(j) => Some(j),
                CompletedResponse::Sync(_) => None,
            },
            {
                let member_id = member_id.clone();
                || join_failed(member_id, ResponseError::RebalanceInProgress.code())
            },
            move |code| join_failed(member_id, code),
        )
        .await
    }

    /// Handles a SyncGroup.
    pub async fn sync_group(
        self: &Arc<Self>,
        args: crate::group::SyncGroupArgs,
    ) -> crate::group::SyncResult {
        let code = match self.coordinator_error(&args.group_id) {
            // Older clients do not know the load error; a rebalance makes them rejoin.
            c if c == ResponseError::CoordinatorLoadInProgress.code() => {
                ResponseError::RebalanceInProgress.code()
            }
            c => c,
        };
        if code != crate::errors::NONE {
            return crate::group::SyncResult {
                error_code: code,
                protocol_type: None,
                protocol_name: None,
                assignment: Bytes::new(),
            };
        }
        self.run_parked(
            args.group_id.clone(),
            Duration::from_secs(330),
            move |core, token| core.sync_group(token, args, now_ms()),
            |r| match r {
                CompletedResponse::Sync(s) => Some(s),
                CompletedResponse::Join(_) => None,
            },
            || sync_failed(ResponseError::RebalanceInProgress.code()),
            sync_failed,
        )
        .await
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(&self, args: crate::group::HeartbeatArgs) -> i16 {
        match self.coordinator_error(&args.group_id) {
            crate::errors::NONE => {}
            // As Kafka: a member keeps its session while its group is being loaded.
            c if c == ResponseError::CoordinatorLoadInProgress.code() => {
                return crate::errors::NONE;
            }
            c => return c,
        }
        let mut core = lock(&self.core);
        let code = core.heartbeat(args, now_ms());
        self.after_step(&mut core, Vec::new());
        code
    }

    /// Handles a LeaveGroup.
    pub fn leave_group(
        &self,
        group: &str,
        members: Vec<crate::group::LeaveMember>,
    ) -> crate::group::LeaveResult {
        let code = self.coordinator_error(group);
        if code != crate::errors::NONE {
            return crate::group::LeaveResult {
                error_code: code,
                members: Vec::new(),
            };
        }
        let mut core = lock(&self.core);
        let (result, completions) = core.leave_group(group, members, now_ms());
        self.after_step(&mut core, completions);
        result
    }

    /// Validates and stores an offset commit; returns the error for every partition, or a
    /// single error for the whole request.
    pub fn commit_offsets(
        &self,
        args: &crate::group::OffsetCommitArgs,
        version: i16,
        offsets: Vec<(String, i32, OffsetEntry)>,
    ) -> Result<Vec<i16>, i16> {
        let code = self.coordinator_error(&args.group_id);
        if code != crate::errors::NONE {
            return Err(code);
        }
        let code = {
            let mut core = lock(&self.core);
            let code = core.validate_offset_commit(args, version, now_ms());
            self.after_step(&mut core, Vec::new());
            code
        };
        if code != crate::errors::NONE {
            return Err(code);
        }
        let mut codes = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        for (topic, partition, entry) in offsets {
            let known = self
                .rm
                .topic(&topic)
                .is_some_and(|t| partition >= 0 && (partition as usize) < t.partitions.len());
            if !known {
                codes.push(ResponseError::UnknownTopicOrPartition.code());
            } else if entry.metadata.len() > OFFSET_METADATA_MAX_BYTES {
                codes.push(ResponseError::OffsetMetadataTooLarge.code());
            } else {
                codes.push(crate::errors::NONE);
                records.push(OffsetsRecord::Offset {
                    group: args.group_id.clone(),
                    topic,
                    partition,
                    value: Some(entry),
                });
            }
        }
        let written = match self.persist_at(&args.group_id, &records) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(group = %args.group_id, error = %e, "offset commit not persisted");
                return Err(e.code());
            }
        };
        // A commit is acknowledged, and visible to OffsetFetch, only once the in-sync replicas
        // of the offsets partition have it (Kafka's offsets.commit.required.acks=-1), so a
        // failover of the coordinator keeps it. Kafka's error mapping for the wait.
        if let Some((partition, epoch, last)) = written {
            let timeout = Duration::from_millis(self.rm.config().offsets_commit_timeout_ms());
            let waited = tokio::runtime::Handle::try_current()
                .map(|h| h.block_on(partition.wait_for_high_watermark(epoch, last, timeout)));
            match waited {
                Ok(AckWait::Replicated) => {}
                Ok(AckWait::NotLeader) => return Err(ResponseError::NotCoordinator.code()),
                Ok(AckWait::TimedOut { .. }) | Err(_) => {
                    tracing::warn!(group = %args.group_id, "offset commit not replicated in time");
                    return Err(ResponseError::CoordinatorNotAvailable.code());
                }
            }
        }
        let mut store = lock(&self.offsets);
        for r in &records {
            store.apply(r);
        }
        Ok(codes)
    }

    /// Committed offset of one partition.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<OffsetEntry> {
        lock(&self.offsets).get(group, topic, partition).cloned()
    }

    /// Every committed offset of a group.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, i32, OffsetEntry)> {
        lock(&self.offsets).group_offsets(group)
    }

    /// Every committed offset of the groups coordinated here, as (group, topic, partition,
    /// offset) sorted: what `/metrics` reports as consumer group offsets and lag. One pass
    /// under the offsets' lock, at scrape time.
    pub fn all_committed(&self) -> Vec<(String, String, i32, i64)> {
        let offsets = lock(&self.offsets);
        let mut out = Vec::new();
        for g in offsets.groups() {
            for (t, p, e) in offsets.group_offsets(g) {
                out.push((g.to_string(), t, p, e.offset));
            }
        }
        drop(offsets);
        out.sort();
        out
    }

    /// DescribeGroups for one group.
    pub fn describe(&self, group: &str) -> crate::group::GroupDescription {
        lock(&self.core)
            .describe(group)
            .unwrap_or_else(|| crate::group::GroupDescription::dead(group))
    }

    /// ListGroups: groups known to the state machine plus groups that only have offsets.
    pub fn list(&self, states_filter: &[String]) -> Vec<crate::group::GroupListing> {
        let core = lock(&self.core);
        let mut listed = core.list(states_filter);
        drop(core);
        let include_empty = states_filter.is_empty()
            || states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case("Empty"));
        if include_empty {
            let offsets = lock(&self.offsets);
            let known: std::collections::HashSet<String> =
                listed.iter().map(|g| g.group_id.clone()).collect();
            let core = lock(&self.core);
            for g in offsets.groups() {
                if !known.contains(g) && core.state(g).is_none() {
                    listed.push(crate::group::GroupListing {
                        group_id: g.to_string(),
                        protocol_type: String::new(),
                        state: crate::group::GroupState::Empty,
                    });
                }
            }
        }
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listed
    }

    /// DeleteGroups for one group: refused while it has members; removes its offsets.
    pub fn delete_group(&self, group: &str) -> i16 {
        let code = self.coordinator_error(group);
        if code != crate::errors::NONE {
            return code;
        }
        let code = {
            let mut core = lock(&self.core);
            let mut code = core.delete_group(group);
            if code == ResponseError::GroupIdNotFound.code()
                && !lock(&self.offsets).group_offsets(group).is_empty()
            {
                code = crate::errors::NONE;
            }
            self.after_step(&mut core, Vec::new());
            code
        };
        if code != crate::errors::NONE {
            return code;
        }
        let mut records: Vec<OffsetsRecord> = self
            .group_offsets(group)
            .into_iter()
            .map(|(topic, partition, _)| OffsetsRecord::Offset {
                group: group.to_string(),
                topic,
                partition,
                value: None,
            })
            .collect();
        records.push(OffsetsRecord::Group {
            group: group.to_string(),
            value: None,
        });
        if let Err(e) = self.persist(group, &records) {
            tracing::warn!(group, error = %e, "group deletion not persisted");
            return e.code();
        }
        let mut store = lock(&self.offsets);
        for r in &records {
            store.apply(r);
        }
        crate::errors::NONE
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let code = self.coordinator_error(group);
        if code != crate::errors::NONE {
            return Err(code);
        }
        let subscribed = {
            let core = lock(&self.core);
            match core.describe(group) {
                None => {
                    if lock(&self.offsets).group_offsets(group).is_empty() {
                        return Err(ResponseError::GroupIdNotFound.code());
                    }
                    Vec::new()
                }
                Some(d) => d
                    .members
                    .iter()
                    .flat_map(|m| subscribed_topics(&m.metadata))
                    .collect::<Vec<_>>(),
            }
        };
        let mut codes = Vec::new();
        let mut records = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.iter().any(|t| t == topic) {
                codes.push(ResponseError::GroupSubscribedToTopic.code());
            } else {
                codes.push(crate::errors::NONE);
                records.push(OffsetsRecord::Offset {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: None,
                });
            }
        }
        if let Err(e) = self.persist(group, &records) {
            tracing::warn!(group, error = %e, "offset deletion not persisted");
            return Err(e.code());
        }
        let mut store = lock(&self.offsets);
        for r in &records {
            store.apply(r);
        }
        Ok(codes)
    }

    /// Expires committed offsets as Kafka does since KIP-211: a group that used group
    /// management keeps all its offsets until it has been Empty for `offsets.retention.minutes`;
    /// a standalone (simple) group loses each offset that long after its commit. A group left
    /// Empty with no offsets is deleted.
    pub fn expire_offsets(&self) {
        let retention_ms = self.rm.config().offsets_retention_ms();
        let now = now_ms();
        let cutoff = now.saturating_sub(retention_ms);
        let groups: Vec<String> = lock(&self.offsets).groups().map(str::to_string).collect();
        let mut emptied = Vec::new();
        for g in groups {
            let status = {
                let core = lock(&self.core);
                match core.state(&g) {
                    None => Some(None),
                    Some(crate::group::GroupState::Empty) => Some(core.empty_since(&g)),
                    Some(_) => None,
                }
            };
            // Groups with members keep their offsets.
            let Some(empty) = status else { continue };
            let expired = match empty {
                Some((since, true)) => {
                    if since < cutoff {
                        lock(&self.offsets)
                            .group_offsets(&g)
                            .into_iter()
                            .map(|(t, p, _)| (t, p))
                            .collect()
                    } else {
                        Vec::new()
                    }
                }
                _ => lock(&self.offsets).expired(&g, cutoff),
            };
            if expired.is_empty() {
                continue;
            }
            let records: Vec<_> = expired
                .into_iter()
                .map(|(topic, partition)| OffsetsRecord::Offset {
                    group: g.clone(),
                    topic,
                    partition,
                    value: None,
                })
                .collect();
            match self.persist(&g, &records) {
                Ok(()) => {
                    tracing::info!(
                        group = g,
                        partitions = records.len(),
                        "expired committed offsets"
                    );
                    let mut store = lock(&self.offsets);
                    for r in &records {
                        store.apply(r);
                    }
                    if store.group_offsets(&g).is_empty() {
                        emptied.push(g);
                    }
                }
                Err(e) => tracing::warn!(group = g, error = %e, "offset expiry not persisted"),
            }
        }
        for g in emptied {
            let mut core = lock(&self.core);
            if core.state(&g) == Some(crate::group::GroupState::Empty)
                && core.delete_group(&g) == crate::errors::NONE
            {
                tracing::info!(group = g, "removed empty group whose offsets expired");
            }
            self.after_step(&mut core, Vec::new());
        }
    }

    /// Runs the state machine's timers (session expiry, rebalance deadlines) until shutdown.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let deadline = lock(&self.core).next_deadline();
            let sleep = match deadline {
                Some(d) => Duration::from_millis((d - now_ms()).clamp(0, 60_000) as u64),
                None => Duration::from_secs(60),
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.timers.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            // On the blocking pool: expiries may append group metadata.
            let me = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || {
                let mut core = lock(&me.core);
                let completions = core.tick(now_ms());
                if !completions.is_empty() {
                    tracing::debug!(completions = completions.len(), "group timers fired");
                }
                // Not after_step: waking ourselves would spin this task and starve the tasks
                // it just woke.
                me.settle(&mut core, completions);
            })
            .await;
        }
    }
}

/// A group metadata append: the offsets partition, the leader epoch and the last offset.
type Written = (Arc<Partition>, i32, i64);

/// Size of [`GroupManager::group_writes`] at which replicated entries are dropped.
const GROUP_WRITES_PRUNE_AT: usize = 1024;

/// What a state machine step stored: the appends to wait for, and the first failed one's code.
struct Settled {
    written: Vec<Written>,
    persist_error: Option<i16>,
}

/// Waits until the in-sync replicas have every append, `timeout` in all; the error to answer
/// with if not.
async fn wait_replicated(written: Vec<Written>, timeout: Duration) -> Option<i16> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut error = None;
    for (partition, epoch, last) in written {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match partition.wait_for_high_watermark(epoch, last, left).await {
            AckWait::Replicated => {}
            AckWait::NotLeader => error = Some(ResponseError::NotCoordinator.code()),
            AckWait::TimedOut { .. } => {
                error.get_or_insert(ResponseError::CoordinatorNotAvailable.code());
            }
        }
    }
    if let Some(code) = error {
        tracing::warn!(
            code,
            "group metadata not replicated in time: answering with an error"
        );
    }
    error
}

fn sync_failed(error_code: i16) -> crate::group::SyncResult {
    crate::group::SyncResult {
        error_code,
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

/// Hands completed responses to their parked requests; with `error`, each answer is replaced by
/// that error (the group metadata it announced did not reach the in-sync replicas).
fn deliver(
    deliveries: Vec<(u64, oneshot::Sender<CompletedResponse>, CompletedResponse)>,
    error: Option<i16>,
) {
    for (token, tx, response) in deliveries {
        let response = match (error, response) {
            (None, r) => r,
            (Some(code), CompletedResponse::Join(j)) => {
                CompletedResponse::Join(join_failed(j.member_id, code))
            }
            (Some(code), CompletedResponse::Sync(_)) => CompletedResponse::Sync(sync_failed(code)),
        };
        tracing::debug!(token, "delivering completion");
        if tx.send(response).is_err() {
            tracing::debug!(token, "parked request gone before its completion");
        }
    }
}

/// A JoinGroup answer carrying only an error.
fn join_failed(member_id: String, error_code: i16) -> crate::group::JoinResult {
    crate::group::JoinResult {
        error_code,
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        skip_assignment: false,
        member_id,
        members: Vec::new(),
    }
}

/// Topics named in a consumer's subscription metadata (ConsumerProtocolSubscription, with its
/// 2-byte version prefix). Anything undecodable subscribes to nothing.
fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    // ConsumerProtocolSubscription is not a flexible version at any version: version (i16),
    // then an array of i16-length strings. Parsed by hand so a hostile count cannot make the
    // codec reserve memory.
    let mut b: &[u8] = metadata;
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head.to_vec())
    };
    let mut out = Vec::new();
    let Some(_version) = take(&mut b, 2) else {
        return out;
    };
    let Some(count) = take(&mut b, 4) else {
        return out;
    };
    let count = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    for _ in 0..count.max(0) {
        let Some(len) = take(&mut b, 2) else { break };
        let len = i16::from_be_bytes([len[0], len[1]]);
        let Ok(len) = usize::try_from(len) else { break };
        let Some(name) = take(&mut b, len) else { break };
        if let Ok(name) = String::from_utf8(name) {
            out.push(name);
        }
    }
    out
}

/// `offset.metadata.max.bytes`.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;
