//! One hosted partition replica: its log, its role (leader with the followers' replication
//! state, or follower), the append paths (a leader's produce, a follower's copy of the leader's
//! batches), the high watermark, and the fetchers and acks=all producers waiting on it.
//!
//! Lock order: `role` before the log's lock, never the other way round; neither is held across
//! an `.await`.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use uuid::Uuid;
use vltava_protocol::batch::BatchHeader;
use vltava_storage::{AppendInfo, Log, ReadSlice, RegionSlice, StorageError};

use super::replication::{IsrProposal, LeaderState, ProposalResult, ReplicationConfig};
use crate::disk;

/// This replica's part in the partition, as of the committed metadata.
#[derive(Debug)]
enum Role {
    /// It leads: the followers' fetch positions, the ISR and the high watermark.
    Leader(Box<LeaderState>),
    /// It copies from `leader` (-1: no leader now).
    Follower { leader: i32 },
}

/// The time the leader state and the log are given: the wall clock, or in tests the simulated
/// clock of the thread (see [`sim_clock`]), so that a simulation's lag and session rules run on
/// its virtual milliseconds.
fn now_ms() -> i64 {
    #[cfg(test)]
    if let Some(now) = sim_clock::now() {
        return now;
    }
    super::now_ms()
}

/// A per-thread clock override for the replication simulation (tests only).
#[cfg(test)]
pub(super) mod sim_clock {
    use std::cell::Cell;

    thread_local! {
        static NOW: Cell<Option<i64>> = const { Cell::new(None) };
    }

    /// The simulated time of this thread, if one is set.
    pub fn now() -> Option<i64> {
        NOW.with(Cell::get)
    }

    /// Sets (or with `None` clears) this thread's simulated time.
    pub fn set(now: Option<i64>) {
        NOW.with(|c| c.set(now));
    }
}

/// What an acks=all producer waits on: the high watermark, under which leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HwView {
    high_watermark: u64,
    leader_epoch: i32,
    leading: bool,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// This replica does not lead the partition (any more): NOT_LEADER_OR_FOLLOWER.
    #[error("this replica is not the partition's leader")]
    NotLeader,
    /// The log refused or failed the write.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Where a follower's fetch stood when it was sent: an answer applies only if the replica
/// still follows that leader in that epoch from that offset (otherwise the answer is stale:
/// the replica changed role, or its log moved, meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    /// The leader fetched from.
    pub leader: i32,
    /// The leader epoch the fetch named.
    pub leader_epoch: i32,
    /// The fetch offset (this log's end when it was sent).
    pub fetch_offset: u64,
}

/// How an acks=all wait ended (see [`Partition::wait_for_high_watermark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWait {
    /// The high watermark passed the offset.
    Replicated,
    /// This replica stopped leading (or the leader epoch changed) first.
    NotLeader,
    /// The timeout ran out; `under_min_isr` says whether the ISR was then below
    /// min.insync.replicas.
    TimedOut {
        /// The ISR was too small to ever get there.
        under_min_isr: bool,
    },
}

/// Changes of the committed ISR of the partitions led here (Kafka's `IsrShrinksPerSec` and
/// `IsrExpandsPerSec`): counted when a leader applies a committed ISR that lost (shrink) or
/// gained (expand) a member, whether its own AlterPartition or the controller's change (a
/// fenced broker removed), once per change; not when it becomes leader.
#[derive(Debug, Default)]
pub struct IsrChangeCounters {
    /// Committed ISR changes that removed a member.
    pub shrinks: AtomicU64,
    /// Committed ISR changes that added a member.
    pub expands: AtomicU64,
}

impl IsrChangeCounters {
    /// Counts the change from `before` to `after` (member lists in any order).
    pub fn count(&self, before: &[i32], after: &[i32]) {
        if before.iter().any(|id| !after.contains(id)) {
            self.shrinks.fetch_add(1, Ordering::Relaxed);
        }
        if after.iter().any(|id| !before.contains(id)) {
            self.expands.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Requests parked on one partition, as `/metrics` reports them (Kafka's purgatory sizes: the
/// watchers per partition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parked {
    /// acks=all produces waiting for the high watermark.
    pub produce: usize,
    /// Consumer and follower fetches waiting for records.
    pub fetch: usize,
}

/// One partition replica hosted here.
#[derive(Debug)]
pub struct Partition {
    /// Partition index.
    pub index: i32,
    /// The topic's name.
    pub topic: Arc<str>,
    /// The topic's id.
    pub topic_id: Uuid,
    /// The leader epoch this replica appends under, from the committed metadata.
    leader_epoch: AtomicI32,
    log: Arc<Mutex<Log>>,
    role: Mutex<Role>,
    /// Consumer fetches parked until the high watermark moves (the fetch purgatory).
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// Follower fetches parked until the log end moves.
    replica_waiters: Mutex<Vec<Arc<Notify>>>,
    hw: watch::Sender<HwView>,
    /// Where this replica counts its ISR changes as leader (unset: not counted).
    isr_counters: OnceLock<Arc<IsrChangeCounters>>,
}

/// Offsets a reader needs alongside the data.
#[derive(Debug, Clone, Copy)]
pub struct Watermarks {
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// Offset below which records are committed and visible to consumers.
    pub high_watermark: i64,
}

/// Offset below which records are visible to consumers: the high watermark the leader's
/// replication state last set (a follower: the leader's, as far as this log reaches).
pub fn high_watermark(log: &Log) -> u64 {
    log.high_watermark()
}

/// The offset up to which this replica's own log counts toward the high watermark: the log
/// end, or with `flush.on.append` only what is fsynced (a power loss could take the rest back).
fn local_end_for_hw(log: &Log) -> u64 {
    if log.config().flush_on_append {
        log.recovery_point().min(log.log_end_offset())
    } else {
        log.log_end_offset()
    }
}

/// Feeds the log's end to the leader state and sets a moved high watermark in the log, under
/// the caller's guards (role, then log); returns the value to announce.
fn local_end_moved_in(state: &mut LeaderState, log: &mut Log) -> Option<u64> {
    let hw = state.on_local_append(local_end_for_hw(log))?;
    Some(log.set_high_watermark(hw))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn lock_log(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    // A panic while holding the lock leaves the log in the state of its last completed
    // operation (appends are checked before they write), so continuing is safe.
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// An append whose batches are written but maybe not yet durable (see
/// [`Partition::append_start`]).
pub struct PendingAppend {
    partition: Arc<Partition>,
    info: AppendInfo,
    leader_epoch: i32,
    group_commit: Option<Arc<vltava_storage::GroupCommit>>,
}

impl PendingAppend {
    /// The partition appended to.
    pub fn partition(&self) -> Arc<Partition> {
        Arc::clone(&self.partition)
    }

    /// The leader epoch the batches were written in: what an acks=all wait is for.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// Waits until an fsync covers the batches (with `flush.on.append`); the leader's own
    /// share of the high watermark then moves.
    pub async fn finish(self) -> Result<AppendInfo, StorageError> {
        // A duplicate waits too: its original may still be waiting for its fsync.
        if let Some(gc) = self.group_commit {
            let log = Arc::clone(&self.partition.log);
            let end = self.info.last_offset + 1;
            tokio::task::spawn_blocking(move || gc.sync_through(&log, end))
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
                .map_err(disk::on_error)?;
            self.partition.local_end_moved();
        }
        Ok(self.info)
    }
}

impl Partition {
    /// A partition replica over an opened log, following no one until the metadata says.
    pub(super) fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        leader_epoch: i32,
        log: Arc<Mutex<Log>>,
    ) -> Partition {
        let high_watermark = lock_log(&log).high_watermark();
        Partition {
            index,
            topic,
            topic_id,
            leader_epoch: AtomicI32::new(leader_epoch),
            log,
            role: Mutex::new(Role::Follower { leader: -1 }),
            waiters: Mutex::new(Vec::new()),
            replica_waiters: Mutex::new(Vec::new()),
            hw: watch::Sender::new(HwView {
                high_watermark,
                leader_epoch,
                leading: false,
            }),
            isr_counters: OnceLock::new(),
        }
    }

    /// Counts this replica's ISR changes as leader into `counters` from now on.
    pub(super) fn count_isr_changes_in(&self, counters: &Arc<IsrChangeCounters>) {
        let _ = self.isr_counters.set(Arc::clone(counters));
    }

    fn count_isr_change(&self, before: &[i32], after: &[i32]) {
        if let Some(c) = self.isr_counters.get() {
            c.count(before, after);
        }
    }

    /// Requests parked here now: acks=all produces (the high-watermark channel's receivers,
    /// which only those waits hold) and fetches whose request still waits.
    pub fn parked(&self) -> Parked {
        let live = |list: &Mutex<Vec<Arc<Notify>>>| {
            lock(list)
                .iter()
                .filter(|n| Arc::strong_count(n) > 1)
                .count()
        };
        Parked {
            produce: self.hw.receiver_count(),
            fetch: live(&self.waiters) + live(&self.replica_waiters),
        }
    }

    /// The leader epoch (from the metadata: it grows each time leadership is given anew).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Locks the log for one synchronous operation (never across an await).
    pub fn log(&self) -> MutexGuard<'_, Log> {
        lock_log(&self.log)
    }

    /// Makes this replica the leader in `leader_epoch`, or brings its leader state up to new
    /// committed metadata (an ISR change) within the same epoch. A new epoch starts at the log
    /// end: its start goes into the leader-epoch cache before anything is served.
    pub(super) fn become_leader(
        &self,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        config: ReplicationConfig,
        local_id: i32,
    ) {
        let now = now_ms();
        let mut role = lock(&self.role);
        if let Role::Leader(state) = &mut *role
            && self.leader_epoch() == leader_epoch
        {
            state.set_config(config);
            let before = state.isr().to_vec();
            let moved = state.update_metadata(leader_epoch, partition_epoch, replicas, isr, now);
            self.count_isr_change(&before, state.isr());
            tracing::debug!(
                topic = %self.topic,
                partition = self.index,
                partition_epoch,
                ?isr,
                state_isr = ?state.isr(),
                state_partition_epoch = state.partition_epoch(),
                in_flight = state.in_flight().is_some(),
                hw = state.high_watermark(),
                leo = state.log_end_offset(),
                ?moved,
                "leader metadata"
            );
            if let Some(hw) = moved {
                self.publish_high_watermark(hw);
            }
            return;
        }
        let (start, end, hw, local_end) = {
            let mut log = self.log();
            let end = log.log_end_offset();
            if let Err(e) = log.begin_leader_epoch(leader_epoch) {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "cannot record the new leader epoch");
            }
            (
                log.log_start_offset(),
                end,
                log.high_watermark(),
                local_end_for_hw(&log),
            )
        };
        let mut state = LeaderState::new(
            local_id,
            leader_epoch,
            partition_epoch,
            end,
            replicas,
            isr,
            start,
            local_end,
            hw,
            now,
            config,
        );
        let moved = state.on_local_append(local_end);
        *role = Role::Leader(Box::new(state));
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.hw.send_modify(|v| {
            v.leader_epoch = leader_epoch;
            v.leading = true;
        });
        if let Some(hw) = moved {
            self.publish_high_watermark(hw);
        }
        drop(role);
        tracing::info!(topic = %self.topic, partition = self.index, leader_epoch, log_end = end, "became leader");
        self.wake_waiters();
    }

    /// On a leader, tells the leader state which brokers are registered, unfenced and not
    /// shutting down (with their registration epochs): only they join the ISR or hold the
    /// high watermark while they catch up.
    pub(super) fn set_eligible_brokers(&self, eligible: &std::collections::BTreeMap<i32, i64>) {
        let now = now_ms();
        let role = &mut *lock(&self.role);
        if let Role::Leader(state) = role {
            let moved = state.set_eligible_brokers(eligible.clone(), now);
            tracing::debug!(
                topic = %self.topic,
                partition = self.index,
                eligible = ?eligible.keys().collect::<Vec<_>>(),
                hw = state.high_watermark(),
                ?moved,
                "leader eligible brokers"
            );
            if let Some(hw) = moved {
                self.publish_high_watermark(hw);
            }
        }
    }

    /// Makes this replica a follower of `leader` (-1: none) in `leader_epoch`. Producers
    /// waiting for acks=all on it are answered NOT_LEADER_OR_FOLLOWER.
    pub(super) fn become_follower(&self, leader: i32, leader_epoch: i32) {
        let mut role = lock(&self.role);
        let was_leader = matches!(*role, Role::Leader(_));
        *role = Role::Follower { leader };
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.hw.send_modify(|v| {
            v.leader_epoch = leader_epoch;
            v.leading = false;
        });
        drop(role);
        if was_leader {
            tracing::info!(topic = %self.topic, partition = self.index, leader, leader_epoch, "became follower");
        }
        self.wake_waiters();
    }

    /// The in-sync replicas as the leader state knows them; empty on a follower.
    pub fn isr(&self) -> Vec<i32> {
        match &*lock(&self.role) {
            Role::Leader(state) => state.isr().to_vec(),
            Role::Follower { .. } => Vec::new(),
        }
    }

    /// Runs `f` on the leader state; `None` on a follower.
    pub fn with_leader_state<R>(&self, f: impl FnOnce(&LeaderState) -> R) -> Option<R> {
        match &*lock(&self.role) {
            Role::Leader(state) => Some(f(state)),
            Role::Follower { .. } => None,
        }
    }

    /// True when this replica leads and its ISR is below min.insync.replicas (acks=all is
    /// refused, and the high watermark does not move).
    pub fn is_under_min_isr(&self) -> bool {
        match &*lock(&self.role) {
            Role::Leader(state) => state.is_under_min_isr(),
            Role::Follower { .. } => false,
        }
    }

    /// Sets the high watermark in the log (where the checkpoint finds it) and wakes what waits
    /// on it: acks=all producers and parked consumer fetches. Called with the role lock held,
    /// so that two events' publications cannot cross and leave an older value in place.
    fn publish_high_watermark(&self, hw: u64) {
        let hw = self.log().set_high_watermark(hw);
        self.announce_high_watermark(hw);
    }

    /// The second half of [`Partition::publish_high_watermark`], for a caller that already set
    /// `hw` in the log under its guard (the append path, which so takes the log lock once).
    fn announce_high_watermark(&self, hw: u64) {
        self.hw.send_if_modified(|v| {
            let changed = v.high_watermark != hw;
            v.high_watermark = hw;
            changed
        });
        self.wake_waiters();
    }

    /// The log end (or the fsynced end) moved: the leader's own share of the high watermark.
    fn local_end_moved(&self) {
        let mut role = lock(&self.role);
        self.local_end_moved_locked(&mut role);
    }

    fn local_end_moved_locked(&self, role: &mut Role) {
        if let Role::Leader(state) = role
            && let Some(hw) = local_end_moved_in(state, &mut self.log())
        {
            self.announce_high_watermark(hw);
        }
    }

    /// Appends validated batches as leader. With `flush.on.append` it returns only once an
    /// fsync covers the batches; concurrent appenders share fsyncs (group commit) and the log
    /// lock is not held during the fsync.
    pub async fn append(
        self: &Arc<Self>,
        batches: &[(BatchHeader, Bytes)],
    ) -> Result<AppendInfo, AppendError> {
        Ok(self.append_start(batches)?.finish().await?)
    }

    /// The part of [`Partition::append`] that writes: the batches are in the log (in the
    /// page cache) when it returns. [`PendingAppend::finish`] waits for durability, so a
    /// connection can write its next request while this one's fsync is shared with it.
    pub fn append_start(
        self: &Arc<Self>,
        batches: &[(BatchHeader, Bytes)],
    ) -> Result<PendingAppend, AppendError> {
        // The write happens under the role lock, in the leader state's epoch: a replica the
        // metadata just made a follower refuses rather than write into a log that now copies
        // another leader.
        let mut role = lock(&self.role);
        let Role::Leader(state) = &mut *role else {
            return Err(AppendError::NotLeader);
        };
        let leader_epoch = state.leader_epoch();
        let (info, group_commit, moved) = {
            let mut log = self.log();
            let info = log
                .append_deferred(batches, leader_epoch, now_ms())
                .map_err(disk::on_error)?;
            let group_commit = log.config().flush_on_append.then(|| log.group_commit());
            // Without flush.on.append the leader's copy counts at once: consumers of a
            // single-replica partition must not wait for this connection's writer.
            let moved = if !info.duplicate && group_commit.is_none() {
                local_end_moved_in(state, &mut log)
            } else {
                None
            };
            (info, group_commit, moved)
        };
        if let Some(hw) = moved {
            self.announce_high_watermark(hw);
        }
        drop(role);
        if !info.duplicate {
            self.wake_replica_waiters();
        }
        Ok(PendingAppend {
            partition: Arc::clone(self),
            info,
            leader_epoch,
            group_commit,
        })
    }

    /// Appends from a synchronous context (the broker's own records); with `flush.on.append`
    /// the storage fsyncs inline.
    pub fn append_blocking(
        &self,
        batches: &[(BatchHeader, Bytes)],
    ) -> Result<(AppendInfo, i32), AppendError> {
        let mut role = lock(&self.role);
        let Role::Leader(state) = &mut *role else {
            return Err(AppendError::NotLeader);
        };
        let leader_epoch = state.leader_epoch();
        let (info, moved) = {
            let mut log = self.log();
            let info = log
                .append(batches, leader_epoch, now_ms())
                .map_err(disk::on_error)?;
            let moved = (!info.duplicate)
                .then(|| local_end_moved_in(state, &mut log))
                .flatten();
            (info, moved)
        };
        if let Some(hw) = moved {
            self.announce_high_watermark(hw);
        }
        drop(role);
        if !info.duplicate {
            self.wake_replica_waiters();
        }
        Ok((info, leader_epoch))
    }

    /// Waits until the high watermark passes `last_offset` (acks=all), this replica stops
    /// leading in `epoch` (the one the records were written in), or `timeout` passes. No task per waiting request: the
    /// caller's future sleeps on the partition's high-watermark channel.
    pub async fn wait_for_high_watermark(
        &self,
        epoch: i32,
        last_offset: i64,
        timeout: Duration,
    ) -> AckWait {
        let Ok(last) = u64::try_from(last_offset) else {
            return AckWait::Replicated;
        };
        let mut rx = self.hw.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|v| !v.leading || v.leader_epoch != epoch || v.high_watermark > last),
        )
        .await;
        match waited {
            Ok(Ok(v)) if v.leading && v.leader_epoch == epoch => AckWait::Replicated,
            Ok(_) => AckWait::NotLeader,
            Err(_) => {
                let v = *self.hw.borrow();
                if v.leading && v.leader_epoch == epoch && v.high_watermark > last {
                    AckWait::Replicated
                } else {
                    AckWait::TimedOut {
                        under_min_isr: self.is_under_min_isr(),
                    }
                }
            }
        }
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
        self.read_regions_upto(offset, max_bytes, min_one_batch, false)
    }

    /// [`Partition::read_regions`] for a follower: up to the log end, not the high watermark.
    pub fn read_regions_for_replica(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<(RegionSlice, Watermarks), StorageError> {
        self.read_regions_upto(offset, max_bytes, min_one_batch, true)
    }

    fn read_regions_upto(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        to_log_end: bool,
    ) -> Result<(RegionSlice, Watermarks), StorageError> {
        let log = self.log();
        let wm = Watermarks {
            log_start_offset: log.log_start_offset() as i64,
            high_watermark: high_watermark(&log) as i64,
        };
        let limit = if to_log_end {
            log.log_end_offset()
        } else {
            wm.high_watermark as u64
        };
        let Ok(offset) = u64::try_from(offset) else {
            return Err(StorageError::OffsetOutOfRange {
                offset: 0,
                log_start: wm.log_start_offset as u64,
                log_end: limit,
            });
        };
        let slice = log.read_regions(offset, max_bytes, limit, min_one_batch)?;
        Ok((slice, wm))
    }

    /// A follower fetched from `fetch_offset`: its position goes into the replication state,
    /// which may move the high watermark or want an ISR change. `None` on a follower.
    pub fn on_follower_fetch(
        &self,
        replica_id: i32,
        broker_epoch: i64,
        fetch_offset: u64,
    ) -> Option<IsrProposal> {
        let mut role = lock(&self.role);
        let effect = match &mut *role {
            Role::Leader(state) => {
                state.on_follower_fetch(replica_id, broker_epoch, fetch_offset, now_ms())
            }
            Role::Follower { .. } => return None,
        };
        if let Some(hw) = effect.high_watermark_moved {
            self.publish_high_watermark(hw);
        }
        effect.proposal
    }

    /// Periodic check of the followers (the ISR shrinks when one lags too long) and retries of
    /// a failed ISR change.
    pub fn replication_tick(&self, now_ms: i64) -> Option<IsrProposal> {
        let mut role = lock(&self.role);
        let effect = match &mut *role {
            Role::Leader(state) => state.tick(now_ms),
            Role::Follower { .. } => return None,
        };
        if let Some(hw) = effect.high_watermark_moved {
            self.publish_high_watermark(hw);
        }
        effect.proposal
    }

    /// The controller's answer to this leader's ISR change `proposal_id`.
    pub fn on_isr_change_result(&self, proposal_id: u64, result: ProposalResult) {
        let mut role = lock(&self.role);
        let moved = match &mut *role {
            Role::Leader(state) => {
                let before = state.isr().to_vec();
                let moved = state.on_proposal_result(proposal_id, result, now_ms());
                self.count_isr_change(&before, state.isr());
                moved
            }
            Role::Follower { .. } => None,
        };
        if let Some(hw) = moved {
            self.publish_high_watermark(hw);
        }
    }

    /// The leader this replica follows, when it follows one.
    pub fn following(&self) -> Option<i32> {
        match &*lock(&self.role) {
            Role::Follower { leader } if *leader >= 0 => Some(*leader),
            _ => None,
        }
    }

    /// What a follower's next fetch carries: its log end offset, the epoch of its last batch
    /// (-1 if none) and its log start offset.
    pub fn follower_position(&self) -> (u64, i32, u64) {
        let log = self.log();
        (
            log.log_end_offset(),
            log.latest_epoch().unwrap_or(-1),
            log.log_start_offset(),
        )
    }

    /// The largest epoch not above `epoch` in this replica's log and where it ends (KIP-279);
    /// for an epoch older than the log's first, that epoch and the first epoch's start
    /// (KAFKA-7415); `None` for a negative epoch, an empty cache, or an epoch above the latest.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        self.log().end_offset_for_epoch(epoch)
    }

    /// The role lock, if this replica still follows `at.leader` in `at.leader_epoch` with its
    /// log ending at `at.fetch_offset`; `None` when the fetch answer is stale.
    fn still_at(&self, at: FetchPosition) -> Option<MutexGuard<'_, Role>> {
        let role = lock(&self.role);
        let follows = matches!(*role, Role::Follower { leader } if leader == at.leader)
            && self.leader_epoch() == at.leader_epoch
            && self.log().log_end_offset() == at.fetch_offset;
        follows.then_some(role)
    }

    /// Appends the leader's batches unchanged (follower side) and takes the leader's high
    /// watermark, as far as this log reaches, if the fetch `at` still describes this replica
    /// (else nothing, and `false`). With `flush.on.append` the batches are fsynced before the
    /// follower fetches again, so its reported position is durable.
    pub fn append_as_follower(
        &self,
        at: FetchPosition,
        batches: &[(BatchHeader, Bytes)],
        leader_high_watermark: u64,
    ) -> Result<bool, StorageError> {
        let Some(_role) = self.still_at(at) else {
            return Ok(false);
        };
        let hw = {
            let mut log = self.log();
            if !batches.is_empty() {
                log.append_as_follower(batches, now_ms())
                    .map_err(disk::on_error)?;
                if log.config().flush_on_append {
                    log.flush().map_err(disk::on_error)?;
                }
            }
            // A follower's high watermark only moves up (truncation aside).
            let hw = leader_high_watermark.max(log.high_watermark());
            log.set_high_watermark(hw)
        };
        let moved = self.hw.send_if_modified(|v| {
            let changed = v.high_watermark != hw;
            v.high_watermark = hw;
            changed
        });
        if moved {
            // Consumers reading from this follower (KIP-392) wait for its high watermark.
            wake_all(&self.waiters);
        }
        Ok(true)
    }

    /// Cuts the log back to `offset` (a follower whose log diverged from its leader's), if the
    /// fetch `at` still describes this replica (else nothing, and `false`).
    pub fn truncate_to(&self, at: FetchPosition, offset: u64) -> Result<bool, StorageError> {
        let Some(_role) = self.still_at(at) else {
            return Ok(false);
        };
        let mut log = self.log();
        let before = log.log_end_offset();
        log.truncate_to(offset).map_err(disk::on_error)?;
        if before > log.log_end_offset() {
            tracing::info!(topic = %self.topic, partition = self.index, from = before, to = log.log_end_offset(), "truncated diverging log");
        }
        Ok(true)
    }

    /// Empties the log and restarts it at `offset` (a follower behind the leader's log start),
    /// if the fetch `at` still describes this replica (else nothing, and `false`).
    pub fn truncate_fully_and_start_at(
        &self,
        at: FetchPosition,
        offset: u64,
    ) -> Result<bool, StorageError> {
        let Some(_role) = self.still_at(at) else {
            return Ok(false);
        };
        tracing::info!(topic = %self.topic, partition = self.index, offset, "follower log restarted at the leader's log start");
        self.log()
            .truncate_fully_and_start_at(offset)
            .map_err(disk::on_error)?;
        Ok(true)
    }

    /// Raises a follower's log start to the leader's (DeleteRecords and retention there), as
    /// far as its high watermark, if the fetch `at` still describes this replica.
    pub fn follow_log_start(
        &self,
        at: FetchPosition,
        leader_log_start: u64,
    ) -> Result<(), StorageError> {
        let Some(_role) = self.still_at(at) else {
            return Ok(());
        };
        let mut log = self.log();
        let target = leader_log_start.min(log.high_watermark());
        if target > log.log_start_offset() {
            log.delete_records_before(target).map_err(disk::on_error)?;
        }
        Ok(())
    }

    /// Registers a consumer fetch to be woken when the high watermark moves.
    pub fn add_waiter(&self, notify: &Arc<Notify>) {
        push_waiter(&self.waiters, notify);
    }

    /// Registers a follower fetch to be woken by the next append.
    pub fn add_replica_waiter(&self, notify: &Arc<Notify>) {
        push_waiter(&self.replica_waiters, notify);
    }

    /// Wakes every parked fetcher (the high watermark moved, or the partition changed role or
    /// went away).
    pub(super) fn wake_waiters(&self) {
        wake_all(&self.waiters);
        wake_all(&self.replica_waiters);
    }

    fn wake_replica_waiters(&self) {
        wake_all(&self.replica_waiters);
    }
}

fn push_waiter(list: &Mutex<Vec<Arc<Notify>>>, notify: &Arc<Notify>) {
    let mut w = lock(list);
    // Drop waiters whose fetch already finished, so the list stays bounded.
    w.retain(|n| Arc::strong_count(n) > 1);
    w.push(Arc::clone(notify));
}

fn wake_all(list: &Mutex<Vec<Arc<Notify>>>) {
    let waiters = std::mem::take(&mut *lock(list));
    for n in waiters {
        n.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn config() -> ReplicationConfig {
        ReplicationConfig {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        }
    }

    #[test]
    fn committed_isr_changes_of_a_leader_are_counted_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Default::default(), 0, 0).expect("open");
        let p = Partition::new(
            Arc::from("t"),
            Uuid::new_v4(),
            0,
            1,
            Arc::new(Mutex::new(log)),
        );
        let counters = Arc::new(IsrChangeCounters::default());
        p.count_isr_changes_in(&counters);
        let counts = || {
            (
                counters.shrinks.load(Relaxed),
                counters.expands.load(Relaxed),
            )
        };
        let replicas = [1, 2, 3];
        // Becoming leader takes the ISR as it is: not a change.
        p.become_leader(1, 0, &replicas, &[1, 2], config(), 1);
        assert_eq!(counts(), (0, 0));
        // The controller removed 2 (a fenced broker): a shrink.
        p.become_leader(1, 1, &replicas, &[1], config(), 1);
        assert_eq!(counts(), (1, 0));
        // The same committed state seen again changes nothing.
        p.become_leader(1, 1, &replicas, &[1], config(), 1);
        assert_eq!(counts(), (1, 0));
        // An answer to an unknown proposal changes nothing either.
        p.on_isr_change_result(
            99,
            ProposalResult::Committed {
                isr: vec![1, 2, 3],
                leader_epoch: 1,
                partition_epoch: 2,
            },
        );
        assert_eq!(counts(), (1, 0));
        // Two members back at once: one expand.
        p.become_leader(1, 2, &replicas, &[1, 2, 3], config(), 1);
        assert_eq!(counts(), (1, 1));
        // A follower does not count, and a new leadership starts without counting.
        p.become_follower(2, 2);
        p.become_leader(3, 3, &replicas, &[1], config(), 1);
        assert_eq!(counts(), (1, 1));
    }

    #[test]
    fn isr_change_counters_see_shrinks_and_expands_apart() {
        let c = IsrChangeCounters::default();
        c.count(&[1, 2, 3], &[3, 1]);
        c.count(&[1], &[1, 2]);
        c.count(&[1, 2], &[1, 3]);
        c.count(&[2, 1], &[1, 2]);
        assert_eq!((c.shrinks.load(Relaxed), c.expands.load(Relaxed)), (2, 2));
    }

    #[test]
    fn no_request_is_parked_on_a_new_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Default::default(), 0, 0).expect("open");
        let p = Partition::new(
            Arc::from("t"),
            Uuid::new_v4(),
            0,
            1,
            Arc::new(Mutex::new(log)),
        );
        assert_eq!(p.parked(), Parked::default());
        let consumer = Arc::new(Notify::new());
        let follower = Arc::new(Notify::new());
        p.add_waiter(&consumer);
        p.add_replica_waiter(&follower);
        assert_eq!(p.parked().fetch, 2);
        drop(consumer);
        drop(follower);
        assert_eq!(p.parked().fetch, 0, "a finished fetch no longer counts");
    }
}
