//! One hosted partition replica: its log, the append path (write, then wait for durability),
//! watermarks and the fetchers parked on it.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use vltava_protocol::batch::BatchHeader;
use vltava_storage::{AppendInfo, Log, ReadSlice, RegionSlice, StorageError};

use super::now_ms;

/// One partition replica hosted here.
#[derive(Debug)]
pub struct Partition {
    /// Partition index.
    pub index: i32,
    /// The leader epoch this replica appends under, from the committed metadata.
    leader_epoch: AtomicI32,
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
    /// A partition replica over an opened log, with no parked fetchers.
    pub(super) fn new(index: i32, leader_epoch: i32, log: Arc<Mutex<Log>>) -> Partition {
        Partition {
            index,
            leader_epoch: AtomicI32::new(leader_epoch),
            log,
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// The leader epoch (from the metadata: it grows each time leadership is given anew).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub(super) fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

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
            let info = log.append_deferred(batches, self.leader_epoch(), now_ms())?;
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
        let info = self.log().append(batches, self.leader_epoch(), now_ms())?;
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

    /// Wakes every parked fetcher (after an append, or when the partition goes away).
    pub(super) fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for n in waiters {
            n.notify_one();
        }
    }
}
