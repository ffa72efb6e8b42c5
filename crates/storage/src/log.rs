//! One partition's log: an ordered list of segments, the last of which takes appends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use vltava_protocol::batch::{BatchHeader, HEADER_LEN, parse_header};

use crate::cleaner::{BatchFilter, CleanOptions, CleanStats, CleanedWriter, KeyMap};
use crate::config::LogConfig;
use crate::epoch::{self, EpochEntry, LeaderEpochCache};
use crate::error::StorageError;
use crate::fileio::{self, DataFile, Fs, FsFile};
use crate::group_commit::GroupCommit;
use crate::producer::ProducerStateManager;
use crate::segment::{self, LoadMode, Segment};

/// Name of the file holding the topic id, as in Kafka.
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Vltava's own per-partition file (Kafka has no equivalent): `gaps_below: N` says that
/// offsets may skip values inside and after segments with a base offset below N: those the
/// cleaner wrote, and those into which a follower copied a compacted leader's log. Recovery
/// insists on contiguous offsets everywhere else, which is what catches a corrupted base offset
/// (it lies outside the CRC). Written, atomically, before a cleaned segment is committed or a
/// follower writes a gap; it only ever grows.
pub const COMPACTION_METADATA_FILE: &str = "compaction.metadata";

/// Outcome of [`Log::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record (for a duplicate: the original offset).
    pub first_offset: u64,
    /// Offset given to the last record.
    pub last_offset: u64,
    /// Wall-clock time of the append; -1 for a duplicate, which was not appended. The broker
    /// reports it only for topics with `message.timestamp.type=LogAppendTime`.
    pub log_append_time_ms: i64,
    /// Log start offset after the append.
    pub log_start_offset: u64,
    /// True if the request was a retry of batches already in the log; nothing was written.
    pub duplicate: bool,
}

/// A recovery point meaning "closed cleanly, everything is flushed": [`Log::open`] then
/// trusts every segment, as Kafka does after a clean shutdown.
pub const CLEAN_RECOVERY_POINT: u64 = u64::MAX;

/// Whole batches returned by [`Log::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSlice {
    /// Concatenated batches as stored; empty if nothing is readable.
    pub bytes: Bytes,
    /// Base offset of the first batch, which may be below the offset asked for when that
    /// offset is inside a batch, or above it when compaction removed the records there;
    /// `None` if `bytes` is empty.
    pub first_offset: Option<u64>,
    /// Offset to read next: after the last returned batch (the offset asked for if nothing
    /// was returned); it may pass offsets compaction removed.
    pub next_offset: u64,
    /// Log start offset at the time of the read.
    pub log_start_offset: u64,
    /// Log end offset at the time of the read.
    pub log_end_offset: u64,
}

/// A byte range of a segment file holding whole batches, as [`Log::read_regions`] found it.
/// Holding it keeps the file open.
#[derive(Clone)]
pub struct FileRegion {
    file: Arc<dyn FsFile>,
    position: u64,
    len: usize,
}

impl FileRegion {
    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Position of the range in its file.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The file's descriptor for a zero-copy transfer of `[position, position + len)`, or
    /// `None` if the file has none (then use [`FileRegion::read_into`]).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.file.as_fd()
    }

    /// Appends the range's bytes to `out`.
    pub fn read_into(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let old = out.len();
        out.resize(old + self.len, 0);
        let res = self.file.read_exact_at(&mut out[old..], self.position);
        if res.is_err() {
            out.truncate(old);
        }
        res
    }
}

impl std::fmt::Debug for FileRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRegion")
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}

/// Whole batches located by [`Log::read_regions`].
#[derive(Debug, Clone)]
pub struct RegionSlice {
    /// The ranges, in log order; empty if nothing is readable.
    pub regions: Vec<FileRegion>,
    /// As [`ReadSlice::first_offset`].
    pub first_offset: Option<u64>,
    /// As [`ReadSlice::next_offset`].
    pub next_offset: u64,
    /// Log start offset at the time of the read.
    pub log_start_offset: u64,
    /// Log end offset at the time of the read.
    pub log_end_offset: u64,
}

impl RegionSlice {
    /// Total bytes of all ranges.
    pub fn len(&self) -> usize {
        self.regions.iter().map(FileRegion::len).sum()
    }

    /// True if nothing was found.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Reads the ranges into memory: what [`Log::read`] returns.
    pub fn materialize(self) -> std::io::Result<ReadSlice> {
        let mut out = Vec::with_capacity(self.len());
        for r in &self.regions {
            r.read_into(&mut out)?;
        }
        Ok(ReadSlice {
            bytes: Bytes::from(out),
            first_offset: self.first_offset,
            next_offset: self.next_offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        })
    }
}

/// Descriptors and targets of a flush that runs without the log's lock (see
/// [`Log::flush_handle`]).
#[derive(Debug)]
pub struct FlushHandle {
    fs: Arc<dyn Fs>,
    files: Vec<DataFile>,
    dir: Option<PathBuf>,
    segment_seqs: Vec<(u64, u64)>,
    dir_seq: u64,
    upto: u64,
    generation: u64,
}

impl FlushHandle {
    /// The recovery point this flush establishes once completed.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// fsyncs everything the handle covers. Takes no lock: appends may go on meanwhile. On
    /// failure, pass the handle and the error to [`Log::flush_failed`].
    pub fn sync(&self) -> Result<(), StorageError> {
        for f in &self.files {
            f.sync()?;
        }
        if let Some(dir) = &self.dir {
            self.fs.sync_dir(dir)?;
        }
        Ok(())
    }
}

/// A partition log on disk (Kafka's layout). All mutation goes through `&mut self`; the broker
/// serialises access with a mutex per partition.
#[derive(Debug)]
pub struct Log {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset, never empty; the last one is the active segment.
    segments: Vec<Segment>,
    log_start_offset: u64,
    recovery_point: u64,
    producers: ProducerStateManager,
    topic_id: Option<String>,
    last_flush_ms: i64,
    /// Latest time passed in by a caller, for flush bookkeeping in `flush`.
    clock_ms: i64,
    /// Directory entries changed (segments created or removed) since the last directory fsync.
    dir_seq: u64,
    dir_synced_seq: u64,
    /// Bumped by truncation and cleaning, which invalidate outstanding flush handles.
    generation: u64,
    deleted: bool,
    offline: Option<String>,
    /// Segments with a base offset below this may have offset gaps (see
    /// [`COMPACTION_METADATA_FILE`]).
    gaps_below: u64,
    /// Kafka's cleaner checkpoint: records below it were cleaned, those from it on are dirty.
    cleaner_checkpoint: u64,
    /// Earliest delete horizon of a cleaned batch still holding tombstones: once it passes, a
    /// cleaning can remove them even if the log is not dirty.
    earliest_delete_horizon: Option<i64>,
    /// Shares fsyncs between appenders waiting for durability (`flush.on.append`).
    group_commit: Arc<GroupCommit>,
    /// Which leader epoch began where (`leader-epoch-checkpoint`).
    epochs: LeaderEpochCache,
    /// Offsets below it are replicated to the in-sync replicas; kept in
    /// `[log_start_offset, log_end_offset]`. The broker sets it; the log manager checkpoints it.
    high_watermark: u64,
}

impl Log {
    /// Opens (creating if missing) the partition log in `dir`. Segments from the one holding
    /// `recovery_point` on are CRC-checked batch by batch; the log ends at the first invalid
    /// batch, and everything after it is removed. Earlier segments keep their index files if
    /// they check out. Producer state is rebuilt from the batch headers of the whole log.
    /// [`CLEAN_RECOVERY_POINT`] says the log was closed cleanly: no segment is recovered.
    ///
    /// A cleaning interrupted by a crash is finished or forgotten first, as in Kafka: a
    /// committed replacement (`.swap`) takes the place of the segments it replaces, an
    /// uncommitted one (`.cleaned`) is deleted.
    ///
    /// The leader epoch cache comes from `leader-epoch-checkpoint`; batches of epochs newer
    /// than its latest (all of them, when the file is missing or unreadable) add their epoch
    /// starts, and entries outside the log are dropped. The high watermark starts at the log
    /// start offset ([`crate::LogManager`] sets it from its checkpoint).
    pub fn open(
        dir: &Path,
        config: LogConfig,
        recovery_point: u64,
        now_ms: i64,
    ) -> Result<Log, StorageError> {
        Log::open_with_log_start(dir, config, recovery_point, None, now_ms)
    }

    /// [`Log::open`] with a log start offset from a checkpoint (after DeleteRecords it can lie
    /// inside the first segment).
    pub fn open_with_log_start(
        dir: &Path,
        config: LogConfig,
        recovery_point: u64,
        log_start_offset: Option<u64>,
        now_ms: i64,
    ) -> Result<Log, StorageError> {
        Log::open_with_fs(
            fileio::real_fs(),
            dir,
            config,
            recovery_point,
            log_start_offset,
            now_ms,
        )
    }

    /// [`Log::open_with_log_start`] on the file system `fs` (a simulated one in tests).
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: &Path,
        config: LogConfig,
        recovery_point: u64,
        log_start_offset: Option<u64>,
        now_ms: i64,
    ) -> Result<Log, StorageError> {
        fs.create_dir_all(dir)?;
        let mut gaps_below = read_compaction_metadata(&*fs, dir)?;
        let mut dir_changed = complete_swaps(&*fs, dir, &mut gaps_below)?;
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        for entry in fs.list_dir(dir)? {
            if entry.is_dir {
                continue;
            }
            let name = entry.name.as_str();
            if [".deleted", ".tmp", ".swap", ".cleaned"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                // Leftovers of an interrupted delete, atomic write or compaction.
                fileio::remove_file(&*fs, &entry.path)?;
                dir_changed = true;
            } else if let Some(base) = segment::parse_segment_name(name, "log") {
                bases.push(base);
            } else if let Some(base) = segment::parse_segment_name(name, "index")
                .or_else(|| segment::parse_segment_name(name, "timeindex"))
            {
                index_files.push((base, entry.path));
            }
        }
        bases.sort_unstable();
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                fileio::remove_file(&*fs, &path)?;
                dir_changed = true;
            }
        }

        let first_to_recover = if recovery_point == CLEAN_RECOVERY_POINT {
            bases.len()
        } else {
            bases
                .partition_point(|&b| b <= recovery_point)
                .saturating_sub(1)
        };
        let mut producers = ProducerStateManager::new();
        let epoch_file = epoch::read_file(&*fs, dir)?;
        // Batches past what the file knows (no usable file at all, or one written by a build
        // that wrote it after the records) add their epochs, as Kafka's segment recovery does.
        let mut epoch_entries: Vec<EpochEntry> = epoch_file.entries();
        // A batch's partitionLeaderEpoch lies outside its CRC, so a torn write can change it
        // unseen. Every epoch start is made durable before the first record of that epoch is
        // written (`append_deferred`, `append_as_follower`), so a readable file is the
        // authority on the epoch of each batch past the recovery point, the data a crash can
        // have torn; flushed data before it is not second-guessed.
        let epoch_authority: Option<Vec<EpochEntry>> = match &epoch_file {
            epoch::EpochFile::Entries(e) if recovery_point != CLEAN_RECOVERY_POINT => {
                Some(e.clone())
            }
            _ => None,
        };
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let mut horizons: Vec<Option<i64>> = Vec::with_capacity(bases.len());
        let interval = config.index_interval_bytes;
        for (i, &base) in bases.iter().enumerate() {
            // Segments roll at the log end, so each starts where the previous one ends; after a
            // cleaned segment, whose last records may be gone, anywhere later.
            let misplaced = segments.last().is_some_and(|prev| {
                if prev.allows_gaps() {
                    base < prev.next_offset()
                } else {
                    base != prev.next_offset()
                }
            });
            let mut end_here = misplaced;
            if !misplaced {
                let mode = if i >= first_to_recover {
                    LoadMode::Recover
                } else {
                    LoadMode::Trust
                };
                let mut horizon: Option<i64> = None;
                let allow_gaps = base < gaps_below;
                let loaded = Segment::load(
                    &fs,
                    dir,
                    base,
                    mode,
                    interval,
                    allow_gaps,
                    now_ms,
                    &mut |h| {
                        let may_assign = match &epoch_authority {
                            Some(authority) if h.base_offset as u64 >= recovery_point => {
                                // Before the first entry (below a log start that moved up),
                                // nothing says what the epoch was: Kafka's rule applies,
                                // but an epoch above the first entry's cannot be right.
                                epoch::check_recovered_epoch(authority, h)?
                                    || authority
                                        .first()
                                        .is_none_or(|f| h.partition_leader_epoch <= f.epoch)
                            }
                            _ => true,
                        };
                        producers.replay(h);
                        if may_assign {
                            epoch::assign_if_newer(
                                &mut epoch_entries,
                                h.partition_leader_epoch,
                                h.base_offset as u64,
                            );
                        }
                        if let Some(t) = h.delete_horizon_ms() {
                            horizon = Some(horizon.map_or(t, |e| e.min(t)));
                        }
                        Ok(())
                    },
                )?;
                horizons.push(horizon);
                if let Some(why) = &loaded.truncated {
                    tracing::warn!(
                        dir = %dir.display(),
                        segment = base,
                        valid_bytes = loaded.segment.size(),
                        "log truncated during recovery: {why}"
                    );
                    end_here = true;
                } else if loaded.rebuilt_indexes && mode == LoadMode::Trust {
                    tracing::warn!(dir = %dir.display(), segment = base, "rebuilt invalid index files");
                }
                segments.push(loaded.segment);
            } else {
                tracing::warn!(dir = %dir.display(), segment = base, "segment does not start where its predecessor ends");
            }
            if end_here {
                let from = if misplaced { i } else { i + 1 };
                for &later in &bases[from..] {
                    for ext in ["log", "index", "timeindex"] {
                        fileio::remove_file(&*fs, &segment::segment_file(dir, later, ext))?;
                    }
                    dir_changed = true;
                }
                break;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(&fs, dir, log_start_offset.unwrap_or(0))?);
            dir_changed = true;
        }

        let topic_id = match fileio::read_optional(&*fs, &dir.join(PARTITION_METADATA_FILE))? {
            Some(bytes) => {
                let parsed = parse_partition_metadata(&bytes);
                if parsed.is_none() {
                    tracing::warn!(dir = %dir.display(), "ignoring unreadable {PARTITION_METADATA_FILE}");
                }
                parsed
            }
            None => None,
        };

        let first_base = segments.first().map_or(0, Segment::base_offset);
        let log_end = segments.last().map_or(0, Segment::next_offset);
        // The active segment is never cleaned, so its horizons cannot trigger a cleaning.
        horizons.truncate(segments.len().saturating_sub(1));
        let earliest_delete_horizon = horizons.into_iter().flatten().min();
        let recovery_point = recovery_point.min(log_end);
        let log_start_offset = log_start_offset.unwrap_or(0).max(first_base).min(log_end);
        // Entries at or past the log end name records a crash took (Kafka truncates the cache
        // to the recovered log end the same way), those before the log start removed ones.
        epoch::truncate_end_in(&mut epoch_entries, log_end);
        epoch::truncate_start_in(&mut epoch_entries, log_start_offset);
        let mut epochs = LeaderEpochCache::with_entries(Arc::clone(&fs), dir, epoch_entries);
        if epoch_file.differs_from(epochs.entries()) {
            epochs.persist()?;
        }
        let mut log = Log {
            fs,
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            recovery_point,
            producers,
            topic_id,
            last_flush_ms: now_ms,
            clock_ms: now_ms,
            dir_seq: u64::from(dir_changed),
            dir_synced_seq: 0,
            generation: 0,
            deleted: false,
            offline: None,
            gaps_below,
            cleaner_checkpoint: 0,
            earliest_delete_horizon,
            group_commit: Arc::new(GroupCommit::new(recovery_point)),
            epochs,
            high_watermark: log_start_offset,
        };
        // Recovered data was CRC-checked, so making it durable lets the recovery point move to
        // the log end and the next start skip it.
        log.flush()?;
        Ok(log)
    }

    /// Partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file system the log lives on.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// The log's group commit: with `flush.on.append`, appenders call
    /// [`GroupCommit::sync_through`] on it after [`Log::append_deferred`], without holding
    /// the log's lock, so that one fsync covers every batch appended meanwhile.
    pub fn group_commit(&self) -> Arc<GroupCommit> {
        Arc::clone(&self.group_commit)
    }

    /// Current settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings (topic config change); they apply from the next operation.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// First offset still readable.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.segments.last().map_or(0, Segment::next_offset)
    }

    /// Every offset below this is durable on disk.
    pub fn recovery_point(&self) -> u64 {
        self.recovery_point
    }

    /// The high watermark as last set (the log start offset until then).
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// Sets the high watermark, clamped to `[log_start_offset, log_end_offset]` as Kafka's
    /// `updateHighWatermark` does; returns the value kept. It may move down (a new leader's
    /// may be lower than the old one's).
    pub fn set_high_watermark(&mut self, high_watermark: u64) -> u64 {
        self.high_watermark = high_watermark
            .max(self.log_start_offset)
            .min(self.log_end_offset());
        self.high_watermark
    }

    /// The latest leader epoch in the leader epoch cache, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// KIP-279's OffsetForLeaderEpoch answer from this log: the largest epoch `<= epoch` and
    /// where it ends (the log end for the latest epoch). See
    /// [`LeaderEpochCache::end_offset_for`] for the cases answered `None` (UNDEFINED).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The leader epoch cache's entries, oldest first.
    pub fn epoch_entries(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// The leader epoch of the records at `offset`, from the cache.
    pub fn epoch_for_offset(&self, offset: u64) -> Option<i32> {
        self.epochs.epoch_for_offset(offset)
    }

    /// A new leader records that `epoch` starts at the log end before it serves (KAFKA-7415),
    /// so that followers holding records of epochs it never saw truncate correctly. Does
    /// nothing unless `epoch` is above the latest epoch; returns whether it assigned.
    pub fn begin_leader_epoch(&mut self, epoch: i32) -> Result<bool, StorageError> {
        self.check_writable()?;
        if epoch < 0 || self.epochs.latest_epoch().is_some_and(|l| epoch <= l) {
            return Ok(false);
        }
        let log_end = self.log_end_offset();
        self.epoch_op(|c| c.assign(epoch, log_end))
    }

    /// Runs a write of the leader epoch cache; an fsync failing in it takes the log offline,
    /// as any failed fsync in the partition directory does (later ones would prove nothing).
    fn epoch_op<T>(
        &mut self,
        op: impl FnOnce(&mut LeaderEpochCache) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let result = op(&mut self.epochs);
        match result {
            Err(e) if self.epochs.take_sync_failure() => Err(self.go_offline_after_sync_failure(e)),
            other => other,
        }
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<u64> {
        self.segments.iter().map(Segment::base_offset).collect()
    }

    /// Idempotent producer state.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }

    /// Topic id from `partition.metadata`, if set.
    pub fn topic_id(&self) -> Option<&str> {
        self.topic_id.as_deref()
    }

    /// Stores the topic id in `partition.metadata` (Kafka's format), atomically.
    pub fn set_topic_id(&mut self, topic_id: &str) -> Result<(), StorageError> {
        self.check_writable()?;
        if topic_id.contains('\n') {
            return Err(StorageError::InvalidRecord(format!(
                "topic id {topic_id:?} contains a newline"
            )));
        }
        let text = format!("version: 0\ntopic_id: {topic_id}\n");
        fileio::atomic_write_with(
            &*self.fs,
            &self.dir.join(PARTITION_METADATA_FILE),
            text.as_bytes(),
        )?;
        self.topic_id = Some(topic_id.to_owned());
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.deleted {
            return Err(StorageError::LogDeleted(self.dir.clone()));
        }
        if let Some(reason) = &self.offline {
            return Err(StorageError::Offline {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    fn active(&mut self) -> Result<&mut Segment, StorageError> {
        let dir = &self.dir;
        self.segments
            .last_mut()
            .ok_or_else(|| StorageError::Corrupt(format!("{} has no segment", dir.display())))
    }

    /// Appends batches that the broker already validated (CRC, record count, producer fields).
    ///
    /// All batches are checked first (size limits, producer id / epoch / sequence), and only
    /// then written, together, in one write; if any check fails nothing is written. Offsets
    /// are assigned from the log end offset by rewriting `baseOffset` and
    /// `partitionLeaderEpoch` only, which lie outside the CRC. A request containing a retried
    /// batch (same producer, epoch and sequences as one of its last five) is answered with that
    /// batch's original offsets and `duplicate: true`.
    ///
    /// A write that fails (a full disk) is undone: the segment is cut back to its previous
    /// size and the error returned, so readers never see part of it and later appends go on
    /// once space is back. Should even the undo fail, the log goes offline.
    ///
    /// With `flush_on_append` (`flush.on.append`) the append is made durable (fsync) before
    /// this returns, under the caller's lock; [`Log::append_deferred`] with
    /// [`GroupCommit::sync_through`] does the same without holding the lock during the fsync,
    /// sharing it with concurrent appenders.
    pub fn append<B: AsRef<[u8]>>(
        &mut self,
        batches: &[(BatchHeader, B)],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let info = self.append_deferred(batches, leader_epoch, now_ms)?;
        if self.config.flush_on_append && self.recovery_point <= info.last_offset {
            self.flush()?;
        }
        Ok(info)
    }

    /// [`Log::append`] without the `flush_on_append` fsync (the `flush.messages` and
    /// `flush.ms` policy still applies). With `flush_on_append`, the result is not an
    /// acknowledgement until [`GroupCommit::sync_through`] (from [`Log::group_commit`]) has
    /// returned for `last_offset + 1`; that holds for duplicates too, whose original append
    /// may still be waiting for its fsync.
    pub fn append_deferred<B: AsRef<[u8]>>(
        &mut self,
        batches: &[(BatchHeader, B)],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.check_writable()?;
        self.clock_ms = self.clock_ms.max(now_ms);
        if batches.is_empty() {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        }
        let segment_limit = self.config.effective_segment_bytes();
        let mut total_bytes = 0u64;
        let mut record_offsets = 0u64;
        for (h, bytes) in batches {
            let len = bytes.as_ref().len();
            if len < HEADER_LEN || h.total_len() != len || h.last_offset_delta < 0 || h.magic != 2 {
                return Err(StorageError::InvalidRecord(format!(
                    "batch of {len} bytes does not match its header"
                )));
            }
            let size = len as u64;
            if size > self.config.max_message_bytes {
                return Err(StorageError::MessageTooLarge {
                    size,
                    max: self.config.max_message_bytes,
                });
            }
            if size > segment_limit {
                return Err(StorageError::BatchLargerThanSegment {
                    size,
                    segment_bytes: segment_limit,
                });
            }
            total_bytes += size;
            record_offsets += h.last_offset_delta as u64 + 1;
        }
        let first_offset = self.log_end_offset();
        let last_offset = first_offset + record_offsets - 1;
        if record_offsets > i32::MAX as u64 || last_offset > i64::MAX as u64 {
            return Err(StorageError::InvalidRecord(format!(
                "{record_offsets} offsets from {first_offset} do not fit the log"
            )));
        }
        let pending = match self
            .producers
            .check(batches.iter().map(|(h, _)| h), first_offset)?
        {
            Ok(pending) => pending,
            Err(dup) => {
                return Ok(AppendInfo {
                    first_offset: dup.first_offset,
                    last_offset: dup.last_offset,
                    log_append_time_ms: -1,
                    log_start_offset: self.log_start_offset,
                    duplicate: true,
                });
            }
        };
        if leader_epoch >= 0 && self.epochs.latest_epoch().is_none_or(|l| leader_epoch > l) {
            // Durable before the epoch's first record: recovery takes the file as the
            // authority on the epoch of every batch a crash may have torn. A leader normally
            // recorded its epoch when it took over, so this fsync is rare. Should the records
            // then fail, an entry at the log end is what a new leader records anyway.
            self.epoch_op(|c| c.assign(leader_epoch, first_offset))?;
        }
        self.maybe_roll(total_bytes, last_offset, now_ms)?;
        let interval = self.config.index_interval_bytes;
        if let Err(failure) =
            self.active()?
                .append(batches, first_offset, leader_epoch, interval, now_ms)
        {
            if !failure.undone {
                self.offline = Some(format!(
                    "append failed and could not be undone: {}",
                    failure.error
                ));
            }
            return Err(failure.error.into());
        }
        self.producers.commit(pending);
        self.maybe_flush(now_ms)?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            log_append_time_ms: now_ms,
            log_start_offset: self.log_start_offset,
            duplicate: false,
        })
    }

    /// Rolls before an append of `incoming_bytes` ending at `last_offset` if the active
    /// segment is full, older than `segment.ms`, or could not index `last_offset` (relative
    /// offsets are 32-bit). Returns whether it rolled.
    fn maybe_roll(
        &mut self,
        incoming_bytes: u64,
        last_offset: u64,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        let limit = self.config.effective_segment_bytes();
        let segment_ms = self.config.segment_ms;
        let active = self.active()?;
        let full = active.size() > 0 && active.size() + incoming_bytes > limit;
        let old = active.size() > 0
            && active
                .rolling_ms()
                .is_some_and(|t| now_ms.saturating_sub(t) > segment_ms);
        let overflow = last_offset.saturating_sub(active.base_offset()) > i32::MAX as u64;
        if full || old || overflow {
            self.roll()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Starts a new active segment at the log end offset (no-op if the active one is empty).
    pub fn roll(&mut self) -> Result<(), StorageError> {
        self.check_writable()?;
        let next = self.log_end_offset();
        let active = self.active()?;
        if active.is_empty() {
            return Ok(());
        }
        active.on_roll();
        let segment = self.new_segment(next)?;
        self.segments.push(segment);
        self.dir_seq += 1;
        Ok(())
    }

    /// A new empty segment at `base`, allowed gaps if [`COMPACTION_METADATA_FILE`] says so,
    /// as it would be when loaded.
    fn new_segment(&self, base: u64) -> Result<Segment, StorageError> {
        let mut segment = Segment::create(&self.fs, &self.dir, base)?;
        if base < self.gaps_below {
            segment.set_allow_gaps();
        }
        Ok(segment)
    }

    /// Appends batches copied from the leader (the follower's path). They are written byte for
    /// byte as given: base offsets and leader epochs as the leader assigned them, CRCs
    /// untouched. The caller validated them as for [`Log::append`] (CRC included); the leader
    /// checked sizes and producer sequences, so neither `max.message.bytes` nor sequences are
    /// checked again, and producer state is updated from the headers as recovery does.
    ///
    /// The first batch must start at or after the log end offset and each later one after the
    /// previous one's last offset, otherwise nothing is written and the error is
    /// [`StorageError::UnexpectedAppendOffset`]. Offsets may skip values (a compacted leader
    /// log): a batch past the log end on an empty active segment gets a segment based at it,
    /// and a gap inside a segment or between segments is recorded in
    /// [`COMPACTION_METADATA_FILE`] before it is written, so that recovery accepts it.
    ///
    /// Each batch whose leader epoch is above the latest one starts that epoch in the leader
    /// epoch cache. Segments roll as for leader appends. A failed write is undone as in
    /// [`Log::append_deferred`]; an empty segment made for it may stay, so the log end can
    /// have moved to the first batch's base offset. Does not fsync: the caller flushes (with
    /// `flush.on.append`, before it reports the new log end to the leader).
    pub fn append_as_follower<B: AsRef<[u8]>>(
        &mut self,
        batches: &[(BatchHeader, B)],
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.check_writable()?;
        self.clock_ms = self.clock_ms.max(now_ms);
        let (Some((first_h, _)), Some((last_h, _))) = (batches.first(), batches.last()) else {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        };
        let segment_limit = self.config.effective_segment_bytes();
        let log_end = self.log_end_offset();
        let mut expected = log_end;
        for (h, bytes) in batches {
            let bytes = bytes.as_ref();
            let len = bytes.len();
            // The header is what the log's bookkeeping goes by and the bytes are what it
            // stores: they must agree.
            let consistent = len >= HEADER_LEN
                && h.total_len() == len
                && h.magic == 2
                && h.last_offset_delta >= 0
                && h.base_offset >= 0
                && parse_header(&bytes[..HEADER_LEN]).is_ok_and(|parsed| parsed == *h);
            if !consistent {
                return Err(StorageError::InvalidRecord(format!(
                    "batch of {len} bytes does not match its header"
                )));
            }
            let base = h.base_offset as u64;
            if base < expected {
                return Err(StorageError::UnexpectedAppendOffset {
                    expected,
                    got: base,
                });
            }
            let Some(last) = h.base_offset.checked_add(i64::from(h.last_offset_delta)) else {
                return Err(StorageError::InvalidRecord(format!(
                    "batch at {base} ends past the largest offset"
                )));
            };
            if len as u64 > segment_limit {
                return Err(StorageError::BatchLargerThanSegment {
                    size: len as u64,
                    segment_bytes: segment_limit,
                });
            }
            expected = last as u64 + 1;
        }
        let first_offset = first_h.base_offset as u64;
        let last_offset = last_h.last_offset() as u64;

        let old_epochs = self.update_epochs_for_follower(batches, log_end)?;
        let mut written = 0;
        while written < batches.len() {
            let rest = &batches[written..];
            let placed = self.place_follower_run(rest, now_ms);
            let result = placed.and_then(|count| {
                let interval = self.config.index_interval_bytes;
                match self
                    .active()?
                    .append_unchanged(&rest[..count], interval, now_ms)
                {
                    Ok(()) => Ok(count),
                    Err(failure) => {
                        if !failure.undone {
                            self.offline = Some(format!(
                                "append failed and could not be undone: {}",
                                failure.error
                            ));
                        }
                        Err(failure.error.into())
                    }
                }
            });
            match result {
                Ok(count) => written += count,
                Err(e) => {
                    self.undo_follower_append(written > 0, log_end, old_epochs);
                    return Err(e);
                }
            }
        }
        for (h, _) in batches {
            self.producers.replay(h);
        }
        self.maybe_flush(now_ms)?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            log_append_time_ms: now_ms,
            log_start_offset: self.log_start_offset,
            duplicate: false,
        })
    }

    /// Assigns the epochs a follower append starts (and, when the append will re-base the
    /// log's only, empty segment past the log end, moves the entries up to that new log
    /// start). New epochs are made durable before the records, as the leader's are (one fsync
    /// per leader change); a re-base alone is written with the next flush, since recovery
    /// re-derives it. Returns the previous entries if they changed.
    fn update_epochs_for_follower<B>(
        &mut self,
        batches: &[(BatchHeader, B)],
        log_end: u64,
    ) -> Result<Option<Vec<EpochEntry>>, StorageError> {
        let mut next: Option<Vec<EpochEntry>> = None;
        let mut latest = self.epochs.latest_epoch();
        let mut new_epoch = false;
        for (h, _) in batches {
            let epoch = h.partition_leader_epoch;
            if epoch >= 0 && latest.is_none_or(|l| epoch > l) {
                let entries = next.get_or_insert_with(|| self.epochs.entries().to_vec());
                epoch::assign_if_newer(entries, epoch, h.base_offset as u64);
                latest = Some(epoch);
                new_epoch = true;
            }
        }
        let first = batches
            .first()
            .map_or(log_end, |(h, _)| h.base_offset as u64);
        let restarts = self.segments.len() == 1 && self.segments[0].is_empty() && first > log_end;
        if restarts && !self.epochs.entries().is_empty() {
            let entries = next.get_or_insert_with(|| self.epochs.entries().to_vec());
            epoch::truncate_start_in(entries, first);
        }
        let Some(next) = next else {
            return Ok(None);
        };
        let old = self.epochs.entries().to_vec();
        if new_epoch {
            self.epoch_op(|c| c.replace(next))?;
        } else {
            self.epochs.set_unpersisted(next);
        }
        Ok(Some(old))
    }

    /// Takes back what a failed follower append changed besides the failed write itself.
    fn undo_follower_append(
        &mut self,
        partly_written: bool,
        log_end: u64,
        old_epochs: Option<Vec<EpochEntry>>,
    ) {
        if partly_written && !self.is_offline() {
            // Only an append spanning segments for want of 32-bit relative offsets gets here.
            if let Err(e) = self.truncate_to(log_end) {
                self.offline = Some(format!("could not undo a partial follower append: {e}"));
            }
        }
        if let Some(old) = old_epochs {
            // Written back at once: entries of records that were never written would make
            // recovery refuse records of an older epoch appended there later.
            if let Err(e) = self.epoch_op(|c| c.replace(old)) {
                tracing::warn!(dir = %self.dir.display(), "could not write the leader epoch cache back: {e}");
            }
        }
    }

    /// Makes the active segment ready for the longest run of `rest`'s batches it can take:
    /// rolls (full, too old, or offsets beyond 32-bit reach of its base) to a segment based at
    /// the first batch, re-bases an empty active segment there, and records gaps in
    /// [`COMPACTION_METADATA_FILE`]. Returns how many batches the run holds (at least one).
    fn place_follower_run<B: AsRef<[u8]>>(
        &mut self,
        rest: &[(BatchHeader, B)],
        now_ms: i64,
    ) -> Result<usize, StorageError> {
        let first = rest.first().map_or(0, |(h, _)| h.base_offset as u64);
        let reach = |base: u64| {
            rest.iter()
                .take_while(|(h, _)| h.last_offset() as u64 - base <= i32::MAX as u64)
                .count()
        };
        let limit = self.config.effective_segment_bytes();
        let segment_ms = self.config.segment_ms;
        let active = self.active()?;
        let count = if active.is_empty() {
            if active.base_offset() != first {
                self.rebase_empty_active(first)?;
            }
            reach(first)
        } else {
            let count = reach(active.base_offset());
            let bytes: u64 = rest[..count]
                .iter()
                .map(|(h, _)| h.total_len() as u64)
                .sum();
            let full = active.size() + bytes > limit;
            let old = active
                .rolling_ms()
                .is_some_and(|t| now_ms.saturating_sub(t) > segment_ms);
            if full || old || count == 0 {
                active.on_roll();
                let segment = self.new_segment(first)?;
                self.segments.push(segment);
                self.dir_seq += 1;
                reach(first)
            } else {
                count
            }
        };
        let idx = self.segments.len() - 1;
        let inside_gap = self.segments[idx].next_offset() < first
            || rest[..count]
                .windows(2)
                .any(|w| w[1].0.base_offset != w[0].0.last_offset() + 1);
        if inside_gap {
            self.allow_gaps_in(idx)?;
        }
        if idx > 0 && self.segments[idx - 1].next_offset() < self.segments[idx].base_offset() {
            self.allow_gaps_in(idx - 1)?;
        }
        Ok(count.max(1))
    }

    /// Replaces the empty active segment by one based at `base` (past the log end). If it was
    /// the only segment, the log now starts there.
    fn rebase_empty_active(&mut self, base: u64) -> Result<(), StorageError> {
        let segment = self.new_segment(base)?;
        self.dir_seq += 1;
        let Some(last) = self.segments.last_mut() else {
            return Err(StorageError::Corrupt(format!(
                "{} has no segment",
                self.dir.display()
            )));
        };
        let old = std::mem::replace(last, segment);
        if let Err(e) = old.delete() {
            // Left on disk, the old empty segment would end where the new one does not begin,
            // and recovery would drop everything from the new one on.
            self.offline = Some(format!("could not remove an empty segment: {e}"));
            return Err(e.into());
        }
        if self.segments.len() == 1 {
            self.log_start_offset = base;
            self.high_watermark = self.high_watermark.max(base);
        }
        Ok(())
    }

    /// Lets offsets skip values inside and after segment `idx`, recording that (durably)
    /// first if [`COMPACTION_METADATA_FILE`] does not cover it yet.
    fn allow_gaps_in(&mut self, idx: usize) -> Result<(), StorageError> {
        let base = self.segments[idx].base_offset();
        if self.gaps_below <= base {
            write_compaction_metadata(&*self.fs, &self.dir, base + 1)?;
            self.gaps_below = base + 1;
        }
        self.segments[idx].set_allow_gaps();
        Ok(())
    }

    /// Index of the segment that would hold `offset`: the last with base offset `<= offset`.
    fn segment_index(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    /// Reads whole batches starting with the one containing `offset` (or, when compaction
    /// removed that offset, the first batch after it), at most `max_bytes`
    /// (unless `min_one_batch` and the first batch alone is larger: then exactly that batch),
    /// never a batch whose base offset is `>= max_offset` (the high watermark). May span
    /// segments. Offsets outside `[log_start, log_end]` are out of range; `log_end` reads empty.
    /// The bytes are copied out of the files; [`Log::read_regions`] only locates them.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
        min_one_batch: bool,
    ) -> Result<ReadSlice, StorageError> {
        Ok(self
            .read_regions(offset, max_bytes, max_offset, min_one_batch)?
            .materialize()?)
    }

    /// Locates what [`Log::read`] would return without copying it: byte ranges of segment
    /// files, each holding whole batches, that stay readable (even if the segment is deleted
    /// or replaced meanwhile) after the log's lock is released. Appends only add bytes after
    /// them, and a truncation cuts or empties the files it removes records from and never
    /// writes at those positions again, so a range reads as it was or ends early (the sender
    /// then closes its connection); it never yields other records.
    pub fn read_regions(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
        min_one_batch: bool,
    ) -> Result<RegionSlice, StorageError> {
        let log_end = self.log_end_offset();
        let mut slice = RegionSlice {
            regions: Vec::new(),
            first_offset: None,
            next_offset: offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: log_end,
        };
        if offset < self.log_start_offset || offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        let upper = max_offset.min(log_end);
        if offset >= upper {
            return Ok(slice);
        }
        let mut budget = max_bytes;
        let mut idx = self.segment_index(offset);
        let mut target = offset;
        while let Some(seg) = self.segments.get(idx) {
            idx += 1;
            let Some((pos, first)) = seg.find_batch(target)? else {
                if let Some(next) = self.segments.get(idx) {
                    target = next.base_offset();
                }
                continue;
            };
            if first.base_offset as u64 >= upper {
                break;
            }
            let first_len = first.total_len();
            let available = usize::try_from(seg.size() - pos).unwrap_or(usize::MAX);
            let allowed = if slice.regions.is_empty() && min_one_batch {
                budget.max(first_len)
            } else {
                budget
            };
            let want = allowed.min(available);
            if want < first_len {
                break;
            }
            let (end, next, hit_upper) = seg.whole_batches_end(pos, pos + want as u64, upper)?;
            let len = usize::try_from(end - pos).unwrap_or(usize::MAX);
            if len == 0 {
                break;
            }
            slice.first_offset.get_or_insert(first.base_offset as u64);
            if let Some(next) = next {
                slice.next_offset = next;
            }
            slice.regions.push(FileRegion {
                file: seg.shared_file(),
                position: pos,
                len,
            });
            budget = budget.saturating_sub(len);
            if hit_upper || end != seg.size() || budget == 0 {
                break;
            }
            if let Some(next) = self.segments.get(idx) {
                target = next.base_offset();
            }
        }
        Ok(slice)
    }

    /// Offset and timestamp of the first batch (at or after the log start) whose max timestamp
    /// is `>= timestamp`, for ListOffsets by time. Batch granularity: the offset is the batch's
    /// base offset (or the log start if the batch straddles it) and the timestamp is the batch's
    /// max timestamp; the records inside are not inspected.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, StorageError> {
        let start = self.segment_index(self.log_start_offset);
        for seg in &self.segments[start..] {
            if seg.max_timestamp().is_none_or(|(max, _)| max < timestamp) {
                continue;
            }
            if let Some(h) = seg.find_by_timestamp(timestamp, self.log_start_offset)? {
                let offset = (h.base_offset as u64).max(self.log_start_offset);
                return Ok(Some((offset, h.max_timestamp)));
            }
        }
        Ok(None)
    }

    /// Largest timestamp in the log and the last offset of the first batch carrying it
    /// (ListOffsets MAX_TIMESTAMP); `None` for an empty log.
    pub fn max_timestamp(&self) -> Option<(i64, u64)> {
        let mut best: Option<(i64, u64)> = None;
        for seg in &self.segments {
            if seg.next_offset() <= self.log_start_offset {
                continue;
            }
            if let Some((ts, off)) = seg.max_timestamp()
                && best.is_none_or(|(b, _)| ts > b)
            {
                best = Some((ts, off.max(self.log_start_offset)));
            }
        }
        best
    }

    /// DeleteRecords: moves the log start offset up to `offset` (which must not exceed the log
    /// end) and deletes the segments entirely below it; the active segment stays. Returns the
    /// new log start offset.
    pub fn delete_records_before(&mut self, offset: u64) -> Result<u64, StorageError> {
        self.check_writable()?;
        let log_end = self.log_end_offset();
        if offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.delete_oldest_while(|_, _| false)?;
        }
        Ok(self.log_start_offset)
    }

    /// Applies `retention.ms` (by each segment's largest timestamp) and `retention.bytes`,
    /// deleting whole segments from the oldest on, never the active one, unless the cleanup
    /// policy is compact only; also deletes segments entirely below the log start offset and
    /// forgets expired producers. Returns how many segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        self.apply_retention_below(now_ms, u64::MAX)
    }

    /// [`Log::apply_retention`] for a replicated log: only segments wholly below `max_offset`
    /// (the high watermark) go, as in Kafka, so that retention never removes records some
    /// in-sync replica may not have yet.
    pub fn apply_retention_below(
        &mut self,
        now_ms: i64,
        max_offset: u64,
    ) -> Result<usize, StorageError> {
        self.check_writable()?;
        self.clock_ms = self.clock_ms.max(now_ms);
        let retention_ms = self.config.retention_ms;
        let retention_bytes = self.config.retention_bytes;
        let deletes = self.config.cleanup_policy.deletes();
        let deleted = self.delete_oldest_while(|seg, size_after| {
            if !deletes || seg.next_offset() > max_offset {
                return false;
            }
            let expired = retention_ms >= 0
                && seg
                    .max_timestamp()
                    .is_none_or(|(ts, _)| now_ms.saturating_sub(ts) > retention_ms);
            let too_big = retention_bytes >= 0 && size_after >= retention_bytes as u64;
            expired || too_big
        })?;
        self.producers
            .remove_expired(now_ms, self.config.producer_id_expiration_ms);
        Ok(deleted)
    }

    /// Kafka's cleaner checkpoint: the first offset not yet cleaned (the log start if the
    /// stored value is outside the log).
    pub fn cleaner_checkpoint(&self) -> u64 {
        let cp = self.cleaner_checkpoint;
        if cp < self.log_start_offset || cp > self.log_end_offset() {
            self.log_start_offset
        } else {
            cp
        }
    }

    /// Sets the cleaner checkpoint, from `cleaner-offset-checkpoint` at start.
    pub fn set_cleaner_checkpoint(&mut self, offset: u64) {
        self.cleaner_checkpoint = offset;
    }

    /// Index of the first segment the cleaner must leave alone: the active segment, or an
    /// earlier one reaching `max_offset` or holding a record younger than
    /// `min.compaction.lag.ms` (judged, like Kafka, by the segment's largest timestamp).
    fn first_uncleanable_index(&self, now_ms: i64, max_offset: u64) -> usize {
        let lag = self.config.min_compaction_lag_ms;
        let active = self.segments.len().saturating_sub(1);
        self.segments[..active]
            .iter()
            .position(|s| {
                s.next_offset() > max_offset
                    || (lag > 0
                        && s.max_timestamp()
                            .is_some_and(|(ts, _)| ts > now_ms.saturating_sub(lag)))
            })
            .unwrap_or(active)
    }

    /// Bytes of the cleanable segments at or after the cleaner checkpoint, and of all cleanable
    /// segments (Kafka's cleanable and total bytes).
    fn dirty_and_total_bytes(&self, now_ms: i64) -> (u64, u64) {
        let end = self.first_uncleanable_index(now_ms, u64::MAX);
        let first_dirty = self.segment_index(self.cleaner_checkpoint());
        let mut dirty = 0;
        let mut total = 0;
        for (i, s) in self.segments[..end].iter().enumerate() {
            total += s.size();
            if i >= first_dirty {
                dirty += s.size();
            }
        }
        (dirty, total)
    }

    /// Fraction of the cleanable bytes (segments before the first uncleanable one) not cleaned
    /// yet; 0 when nothing is cleanable.
    pub fn cleanable_dirty_ratio(&self, now_ms: i64) -> f64 {
        let (dirty, total) = self.dirty_and_total_bytes(now_ms);
        if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        }
    }

    /// True if the policy includes compact and either the dirty ratio reached
    /// `min.cleanable.dirty.ratio` or tombstones in cleaned segments reached their delete
    /// horizon.
    pub fn needs_cleaning(&self, now_ms: i64) -> bool {
        if !self.config.cleanup_policy.compacts() || self.check_writable().is_err() {
            return false;
        }
        let (dirty, total) = self.dirty_and_total_bytes(now_ms);
        let dirty_enough =
            dirty > 0 && dirty as f64 >= self.config.min_cleanable_dirty_ratio * total as f64;
        dirty_enough || self.earliest_delete_horizon.is_some_and(|t| t <= now_ms)
    }

    /// Largest payload the cleaner inflates: compression ratios of 10 to 50 are common for
    /// text, so a multiple of `max.message.bytes` (with a 64 MiB floor, as ListOffsets uses),
    /// capped at 1 GiB so that one batch never takes more memory than that. A batch inflating
    /// beyond it is kept as it is.
    fn max_inflated_bytes(&self) -> usize {
        usize::try_from(self.config.max_message_bytes)
            .unwrap_or(usize::MAX)
            .saturating_mul(64)
            .clamp(64 << 20, 1 << 30)
    }

    /// [`Log::clean_with`] with default options: every record in the log may supersede older
    /// ones (right for a log whose every record is committed, such as a single replica's).
    pub fn clean(&mut self, now_ms: i64) -> Result<CleanStats, StorageError> {
        self.clean_with(now_ms, &CleanOptions::default())
    }

    /// Compacts the log (if its cleanup policy includes compact; otherwise does nothing).
    ///
    /// The map of each key's latest offset is built from the dirty records, those from the
    /// cleaner checkpoint up to the log end (or `options.max_offset`), the active segment
    /// included: newer records there supersede older ones. Then every segment before the first
    /// uncleanable one (the active segment, or an earlier one reaching `options.max_offset` or
    /// younger than `min.compaction.lag.ms`) is rewritten, in groups that fit `segment.bytes`:
    /// - per key, only the record with the highest offset stays, at its original offset;
    /// - records without a key stay;
    /// - tombstones stay until `delete.retention.ms` after the first cleaning that saw them
    ///   (KIP-534: that cleaning stamps their batch with the delete horizon);
    /// - control and transactional batches, and batches that cannot be inflated within
    ///   `max(64 MiB, 64 × max.message.bytes)` (at most 1 GiB) or parsed, stay untouched;
    /// - a rewritten batch keeps its base offset, lastOffsetDelta, producer fields and codec;
    ///   a batch left without records is dropped, unless it is one of the last five batches
    ///   of a live idempotent producer, which stay as empty batches (header only).
    ///
    /// The active segment is never touched. Each group is written to
    /// `<first>-<end>.log.cleaned`, fsynced, committed by renaming it to `.swap`, and then takes
    /// the place of the old segments, whose indexes are rebuilt. A segment that would come out
    /// unchanged is not rewritten. The cleaner checkpoint then moves to the first uncleanable
    /// segment.
    ///
    /// Runs under `&mut self`: appends and reads of this partition wait meanwhile.
    pub fn clean_with(
        &mut self,
        now_ms: i64,
        options: &CleanOptions,
    ) -> Result<CleanStats, StorageError> {
        self.check_writable()?;
        self.clock_ms = self.clock_ms.max(now_ms);
        let first_dirty = self.cleaner_checkpoint();
        let mut stats = CleanStats {
            cleaned_upto: first_dirty,
            ..CleanStats::default()
        };
        if !self.config.cleanup_policy.compacts() {
            return Ok(stats);
        }
        let mut uncleanable = self.first_uncleanable_index(now_ms, options.max_offset);
        let max_inflated = self.max_inflated_bytes();

        let map_end = options.max_offset.min(self.log_end_offset());
        let first_dirty_segment = self.segment_index(first_dirty);
        let mut map = KeyMap::default();
        for (i, seg) in self.segments.iter().enumerate().skip(first_dirty_segment) {
            if seg.base_offset() >= map_end {
                break;
            }
            if i > first_dirty_segment && map.bytes() >= options.map_budget_bytes {
                // Records past here are not in the map, so they cannot be called clean.
                uncleanable = uncleanable.min(i);
                break;
            }
            seg.for_each_batch(|_, h, bytes| {
                map.add_batch(h, bytes, first_dirty, map_end, max_inflated);
                Ok(())
            })?;
        }
        stats.keys_mapped = map.len();
        if uncleanable == 0 {
            return Ok(stats);
        }
        let new_checkpoint = self.segments[uncleanable].base_offset();
        let groups = self.plan_groups(uncleanable);
        let producer_batches = self.producers.remembered_batches();
        let mut filter = BatchFilter {
            map: &map,
            now_ms,
            delete_retention_ms: self.config.delete_retention_ms,
            max_inflated,
            producer_batches: &producer_batches,
            uninspected_seen: false,
            earliest_horizon: None,
            stats: &mut stats,
        };
        let mut swapped = false;
        for (first_base, count) in groups {
            // Earlier groups were replaced by one segment with their first base offset, so
            // later groups are found by base offset, not by their original index.
            let idx = self
                .segments
                .binary_search_by_key(&first_base, Segment::base_offset)
                .map_err(|_| {
                    StorageError::Corrupt(format!("segment {first_base} vanished while cleaning"))
                })?;
            let end = self.segments[idx + count].base_offset();
            let written = self.write_cleaned(idx, count, end, &mut filter)?;
            filter.stats.segments_examined += count;
            let Some((cleaned, size)) = written else {
                filter.stats.bytes_after += self.segments[idx].size();
                continue;
            };
            self.swap_in(idx, count, &cleaned, end, now_ms)?;
            swapped = true;
            filter.stats.segments_replaced += count;
            filter.stats.segments_written += 1;
            filter.stats.bytes_after += size;
        }
        let earliest_horizon = filter.earliest_horizon;
        if swapped {
            self.generation += 1;
        }
        self.cleaner_checkpoint = new_checkpoint;
        self.earliest_delete_horizon = earliest_horizon;
        stats.cleaned_upto = new_checkpoint;
        tracing::debug!(dir = %self.dir.display(), ?stats, "cleaned log");
        Ok(stats)
    }

    /// Splits segments `[0, end)` into runs of consecutive segments to be cleaned into one:
    /// together at most `segment.bytes` before cleaning (like Kafka; cleaning rarely grows
    /// data), and every offset up to the next segment's base within 32-bit reach of the first
    /// base offset, which the offset index needs. Returns `(first base offset, count)`.
    fn plan_groups(&self, end: usize) -> Vec<(u64, usize)> {
        let limit = self.config.effective_segment_bytes();
        let mut groups = Vec::new();
        let mut i = 0;
        while i < end {
            let first = &self.segments[i];
            let mut size = first.size();
            let mut j = i + 1;
            while j < end {
                let next = &self.segments[j];
                let reach = self.segments[j + 1].base_offset() - 1 - first.base_offset();
                if size + next.size() > limit || reach > i32::MAX as u64 {
                    break;
                }
                size += next.size();
                j += 1;
            }
            groups.push((first.base_offset(), j - i));
            i = j;
        }
        groups
    }

    /// Writes the cleaned form of segments `[idx, idx + count)` to a `.cleaned` file; `None` if
    /// a lone segment would come out unchanged. The file is removed again on failure.
    fn write_cleaned(
        &self,
        idx: usize,
        count: usize,
        end: u64,
        filter: &mut BatchFilter<'_>,
    ) -> Result<Option<(PathBuf, u64)>, StorageError> {
        let first = self.segments[idx].base_offset();
        let path = segment::replacement_file(&self.dir, first, end, "cleaned");
        let mut writer = CleanedWriter::new(Arc::clone(&self.fs), path.clone(), count > 1)?;
        let result = (|| {
            for seg in &self.segments[idx..idx + count] {
                filter.stats.bytes_before += seg.size();
                seg.for_each_batch(|_, h, bytes| {
                    let outcome = filter.filter(h, bytes);
                    writer.push(seg, bytes, outcome)
                })?;
            }
            writer.finish()
        })();
        if result.is_err() {
            let _ = fileio::remove_file(&*self.fs, &path);
        }
        result
    }

    /// Replaces segments `[idx, idx + count)` by the cleaned file `cleaned`, which covers
    /// offsets up to `end`. Failing before the commit point (the rename to `.swap` made
    /// durable) leaves the log as it was; failing after it takes the log offline, and the
    /// next open completes the swap.
    fn swap_in(
        &mut self,
        idx: usize,
        count: usize,
        cleaned: &Path,
        end: u64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let first = self.segments[idx].base_offset();
        let swap = segment::replacement_file(&self.dir, first, end, "swap");
        let committed = (|| {
            if end > self.gaps_below {
                write_compaction_metadata(&*self.fs, &self.dir, end)?;
                self.gaps_below = end;
            }
            self.fs.rename(cleaned, &swap)?;
            self.fs.sync_dir(&self.dir)
        })();
        if let Err(e) = committed {
            let _ = fileio::remove_file(&*self.fs, cleaned);
            // Whether or not the rename reached the disk, removing the swap file restores the
            // old state; if even that fails, only a reopen can tell which state is on disk.
            if fileio::remove_file(&*self.fs, &swap).is_err() {
                self.offline = Some(format!("cleaner could not undo {}: {e}", swap.display()));
            }
            return Err(e.into());
        }
        let finished = self.finish_swap(idx, count, &swap, first, now_ms);
        if let Err(e) = &finished {
            self.offline = Some(format!("cleaner swap of segment {first} failed: {e}"));
        }
        finished
    }

    fn finish_swap(
        &mut self,
        idx: usize,
        count: usize,
        swap: &Path,
        first: u64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let old: Vec<Segment> = self.segments.drain(idx..idx + count).collect();
        for seg in old.into_iter().rev() {
            seg.delete()?;
        }
        // As in `complete_swaps`: the deletions must be durable before the rename.
        self.fs.sync_dir(&self.dir)?;
        self.fs
            .rename(swap, &segment::segment_file(&self.dir, first, "log"))?;
        self.fs.sync_dir(&self.dir)?;
        let interval = self.config.index_interval_bytes;
        let loaded = Segment::load(
            &self.fs,
            &self.dir,
            first,
            LoadMode::Recover,
            interval,
            true,
            now_ms,
            &mut |_| Ok(()),
        )?;
        if let Some(why) = loaded.truncated {
            return Err(StorageError::Corrupt(format!(
                "cleaned segment {first} failed its check: {why}"
            )));
        }
        self.segments.insert(idx, loaded.segment);
        Ok(())
    }

    /// Deletes the oldest non-active segment while it lies entirely below the log start offset
    /// or `doomed(segment, log size without it)` holds; then moves the log start offset to the
    /// first remaining segment if it was below.
    fn delete_oldest_while(
        &mut self,
        doomed: impl Fn(&Segment, u64) -> bool,
    ) -> Result<usize, StorageError> {
        let mut deleted = 0;
        let mut size = self.size_bytes();
        while self.segments.len() > 1 {
            let below_start = self.segments[1].base_offset() <= self.log_start_offset;
            let oldest = &self.segments[0];
            let size_after = size - oldest.size();
            if !(below_start || doomed(oldest, size_after)) {
                break;
            }
            let oldest = self.segments.remove(0);
            size = size_after;
            tracing::debug!(dir = %self.dir.display(), segment = oldest.base_offset(), "deleting segment");
            self.dir_seq += 1;
            oldest.delete()?;
            deleted += 1;
        }
        let first_base = self.segments.first().map_or(0, Segment::base_offset);
        self.log_start_offset = self.log_start_offset.max(first_base);
        self.high_watermark = self.high_watermark.max(self.log_start_offset);
        let start = self.log_start_offset;
        self.epoch_op(|c| c.truncate_from_start(start))?;
        Ok(deleted)
    }

    /// Removes every record at or after `offset` (a follower diverging from its leader). A batch
    /// containing `offset` is removed whole, so afterwards the log end is `<= offset`. Below
    /// the first segment, the log is emptied and restarts at `offset`. The leader epoch cache
    /// loses the entries starting at or after the new log end; even when nothing is truncated,
    /// an entry at the log end goes (this replica's own epoch start as a leader that wrote
    /// nothing, as in Kafka). The high watermark stays within the log.
    pub fn truncate_to(&mut self, offset: u64) -> Result<(), StorageError> {
        self.check_writable()?;
        let log_end = self.log_end_offset();
        if offset >= log_end {
            self.epoch_op(|c| c.truncate_from_end(log_end))?;
            return Ok(());
        }
        // Before the files: if this write fails, nothing has changed. Truncations are written
        // at once, unlike assignments: a file still holding entries of truncated records
        // would be wrong, not merely behind.
        self.epoch_op(|c| c.truncate_from_end(offset))?;
        self.generation += 1;
        let first_base = self.segments.first().map_or(0, Segment::base_offset);
        if offset <= first_base {
            self.restart_at(offset)?;
        } else {
            while self.segments.len() > 1
                && self
                    .segments
                    .last()
                    .is_some_and(|s| s.base_offset() >= offset)
            {
                if let Some(mut seg) = self.segments.pop() {
                    seg.empty_data_file()?;
                    seg.delete()?;
                    self.dir_seq += 1;
                }
            }
            let interval = self.config.index_interval_bytes;
            let active = self.active()?;
            let size_before = active.size();
            active.truncate_to(offset, interval)?;
            if active.size() < size_before {
                // The cut file positions are never written again, so a reader that took a
                // range of them before the truncation gets the end of the file, not other
                // records: appends go to a new segment, or, if nothing is left in this one, to
                // a new file in its place.
                if active.is_empty() {
                    let base = active.base_offset();
                    let replaced = (|| {
                        if let Some(seg) = self.segments.pop() {
                            seg.delete()?;
                        }
                        let fresh = self.new_segment(base)?;
                        self.segments.push(fresh);
                        Ok::<(), StorageError>(())
                    })();
                    self.dir_seq += 1;
                    if let Err(e) = replaced {
                        // Maybe without an active segment: reopening finds what is left.
                        self.offline =
                            Some(format!("could not replace the segment at {base}: {e}"));
                        return Err(e);
                    }
                } else {
                    self.roll()?;
                }
            }
        }
        let log_end = self.log_end_offset();
        if log_end < offset
            && let Err(e) = self.epoch_op(|c| c.truncate_from_end(log_end))
        {
            // The batch holding `offset` began an epoch; its entry now sits at the log end,
            // where Kafka leaves it too, and reopening drops it.
            tracing::warn!(dir = %self.dir.display(), "could not write the leader epoch cache: {e}");
        }
        self.after_truncation()
    }

    /// Removes every record and restarts the log, empty, at `offset`, which may lie past the
    /// log end (a follower whose fetch offset fell below its leader's log start). The leader
    /// epoch cache is cleared, the log start offset and high watermark become `offset`.
    pub fn truncate_fully_and_start_at(&mut self, offset: u64) -> Result<(), StorageError> {
        self.check_writable()?;
        if offset > i64::MAX as u64 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: self.log_end_offset(),
            });
        }
        self.epoch_op(LeaderEpochCache::clear)?;
        self.generation += 1;
        self.restart_at(offset)?;
        self.after_truncation()
    }

    /// Deletes every segment and starts an empty one at `offset`, the new log start.
    fn restart_at(&mut self, offset: u64) -> Result<(), StorageError> {
        let replaced = (|| {
            for mut seg in self.segments.drain(..) {
                seg.empty_data_file()?;
                seg.delete()?;
            }
            let segment = self.new_segment(offset)?;
            self.segments.push(segment);
            Ok::<(), StorageError>(())
        })();
        self.dir_seq += 1;
        if let Err(e) = replaced {
            // Without a segment the log cannot take appends; reopening finds what is left.
            self.offline = Some(format!("could not restart the log at {offset}: {e}"));
            return Err(e);
        }
        self.log_start_offset = offset;
        Ok(())
    }

    /// Bookkeeping after the log end moved down (or the log restarted).
    fn after_truncation(&mut self) -> Result<(), StorageError> {
        let log_end = self.log_end_offset();
        self.log_start_offset = self.log_start_offset.min(log_end);
        self.high_watermark = self.high_watermark.min(log_end).max(self.log_start_offset);
        self.recovery_point = self.recovery_point.min(log_end);
        // Offsets from the log end on will name new records, not yet durable.
        self.group_commit.truncated_to(self.recovery_point);
        // Records appended again above the log end have not been cleaned.
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(log_end);
        self.rebuild_producer_state()
    }

    /// Rebuilds producer state from the headers of every batch in the log.
    fn rebuild_producer_state(&mut self) -> Result<(), StorageError> {
        self.producers.clear();
        for seg in &self.segments {
            seg.for_each_header(|h| self.producers.replay(h))?;
        }
        Ok(())
    }

    /// Flushes if `flush.messages` offsets are unflushed or the last flush is older than
    /// `flush.ms`. The broker's scheduler calls this periodically; `append` calls it too.
    pub fn maybe_flush(&mut self, now_ms: i64) -> Result<bool, StorageError> {
        self.clock_ms = self.clock_ms.max(now_ms);
        let unflushed = self.log_end_offset() - self.recovery_point;
        let due = unflushed >= self.config.flush_interval_messages
            || (unflushed > 0
                && now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_interval_ms);
        if due {
            self.flush()?;
        }
        Ok(due)
    }

    /// fsyncs every changed segment, its indexes and the directory, then moves the recovery
    /// point to the log end. Returns the new recovery point.
    ///
    /// A failed fsync takes the log offline (as Kafka takes the log directory offline): after
    /// one, the kernel may have dropped the unwritten pages, so a later successful fsync
    /// would prove nothing. Reopening the log recovers what is on disk. A failure to write
    /// index entries (before any fsync) is only returned.
    pub fn flush(&mut self) -> Result<u64, StorageError> {
        self.check_writable()?;
        for seg in &mut self.segments {
            seg.persist_indexes()?;
        }
        let mut synced = self.segments.iter_mut().try_for_each(Segment::sync_files);
        if synced.is_ok() && self.dir_seq != self.dir_synced_seq {
            synced = self.fs.sync_dir(&self.dir);
            if synced.is_ok() {
                self.dir_synced_seq = self.dir_seq;
            }
        }
        if let Err(e) = synced {
            return Err(self.go_offline_after_sync_failure(e.into()));
        }
        self.persist_epochs_after_sync()?;
        self.recovery_point = self.log_end_offset();
        self.last_flush_ms = self.clock_ms;
        self.group_commit.advance(self.recovery_point);
        Ok(self.recovery_point)
    }

    /// Writes epoch starts assigned since the last flush. They are rare (a new epoch) and not
    /// needed for the records' durability (recovery re-derives them), so only a failed fsync,
    /// which takes the log offline, is an error; anything else is logged and the next flush
    /// tries again.
    fn persist_epochs_after_sync(&mut self) -> Result<(), StorageError> {
        match self.epoch_op(LeaderEpochCache::persist_if_dirty) {
            Err(e) if self.offline.is_some() => Err(e),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "could not write the leader epoch cache: {e}");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn go_offline_after_sync_failure(&mut self, e: StorageError) -> StorageError {
        tracing::error!(dir = %self.dir.display(), "fsync failed, log offline: {e}");
        self.offline
            .get_or_insert_with(|| format!("fsync failed, unflushed data may be lost: {e}"));
        e
    }

    /// Prepares a flush whose fsyncs run outside the lock: take the handle under the lock, call
    /// [`FlushHandle::sync`] without it, then [`Log::complete_flush`] (or, if the sync failed,
    /// [`Log::flush_failed`]) under it again. One such flush covers every append made before
    /// the handle was taken. [`GroupCommit::sync_through`] does all of this for appenders.
    pub fn flush_handle(&mut self) -> Result<FlushHandle, StorageError> {
        self.check_writable()?;
        let mut files = Vec::new();
        let mut segment_seqs = Vec::new();
        for seg in &mut self.segments {
            if seg.needs_sync() {
                let (f, seq) = seg.prepare_sync()?;
                files.extend(f);
                segment_seqs.push((seg.base_offset(), seq));
            }
        }
        Ok(FlushHandle {
            fs: Arc::clone(&self.fs),
            files,
            dir: (self.dir_seq != self.dir_synced_seq).then(|| self.dir.clone()),
            segment_seqs,
            dir_seq: self.dir_seq,
            upto: self.log_end_offset(),
            generation: self.generation,
        })
    }

    /// Records a synced [`FlushHandle`]; returns the recovery point. Ignored if the log was
    /// truncated or cleaned since the handle was taken.
    pub fn complete_flush(&mut self, handle: FlushHandle) -> u64 {
        if handle.generation != self.generation || self.offline.is_some() {
            return self.recovery_point;
        }
        for (base, seq) in handle.segment_seqs {
            if let Ok(i) = self
                .segments
                .binary_search_by_key(&base, Segment::base_offset)
            {
                self.segments[i].mark_synced(seq);
            }
        }
        self.dir_synced_seq = self.dir_synced_seq.max(handle.dir_seq);
        if self.persist_epochs_after_sync().is_err() {
            return self.recovery_point;
        }
        self.recovery_point = self
            .recovery_point
            .max(handle.upto.min(self.log_end_offset()));
        self.group_commit.advance(self.recovery_point);
        self.recovery_point
    }

    /// Records that [`FlushHandle::sync`] failed with `error`: as with [`Log::flush`], the
    /// log goes offline. Returns `error`.
    pub fn flush_failed(&mut self, handle: FlushHandle, error: StorageError) -> StorageError {
        drop(handle);
        self.go_offline_after_sync_failure(error)
    }

    /// True if the log refuses writes until it is reopened, after a write or fsync failure
    /// it could not undo.
    pub fn is_offline(&self) -> bool {
        self.offline.is_some()
    }

    /// Flushes and closes the log.
    pub fn close(mut self) -> Result<(), StorageError> {
        if self.deleted {
            return Ok(());
        }
        self.flush().map(|_| ())
    }

    /// Deletes the partition directory and everything in it.
    pub fn delete(mut self) -> Result<(), StorageError> {
        self.deleted = true;
        fileio::remove_dir_all(&*self.fs, &self.dir)?;
        Ok(())
    }

    /// The segments, oldest first.
    #[cfg(test)]
    pub(crate) fn segments_for_test(&self) -> &[Segment] {
        &self.segments
    }

    /// Marks the log deleted so that later writes through shared handles fail; the caller
    /// removes the directory.
    pub(crate) fn mark_deleted(&mut self) {
        self.deleted = true;
    }
}

/// Offset below which segments may have gaps, from [`COMPACTION_METADATA_FILE`]: 0 if there is
/// none. An unreadable file allows gaps everywhere: refusing gaps that the cleaner made would
/// truncate good data, while allowing them only weakens a corruption check.
fn read_compaction_metadata(fs: &dyn Fs, dir: &Path) -> Result<u64, StorageError> {
    let Some(bytes) = fileio::read_optional(fs, &dir.join(COMPACTION_METADATA_FILE))? else {
        return Ok(0);
    };
    Ok(parse_compaction_metadata(&bytes).unwrap_or_else(|| {
        tracing::warn!(dir = %dir.display(), "unreadable {COMPACTION_METADATA_FILE}: allowing offset gaps in every segment");
        u64::MAX
    }))
}

/// Writes [`COMPACTION_METADATA_FILE`] atomically.
fn write_compaction_metadata(fs: &dyn Fs, dir: &Path, gaps_below: u64) -> std::io::Result<()> {
    let text = format!("version: 0\ngaps_below: {gaps_below}\n");
    fileio::atomic_write_with(fs, &dir.join(COMPACTION_METADATA_FILE), text.as_bytes())
}

fn parse_compaction_metadata(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut version_ok = false;
    let mut gaps_below = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("version:") {
            version_ok = v.trim() == "0";
        } else if let Some(n) = line.strip_prefix("gaps_below:") {
            gaps_below = n.trim().parse().ok();
        }
    }
    gaps_below.filter(|_| version_ok)
}

/// Finishes replacements the cleaner committed but did not complete: for each
/// `<first>-<end>.log.swap`, the segments with base offsets in `[first, end)` that are left
/// are deleted, then the swap file becomes `<first>.log` (its indexes are rebuilt when it is
/// loaded). The directory is synced between the steps: were the rename durable before the
/// deletions, an old segment could follow a cleaned one that already holds its records.
fn complete_swaps(fs: &dyn Fs, dir: &Path, gaps_below: &mut u64) -> Result<bool, StorageError> {
    let entries = fs.list_dir(dir)?;
    let mut swaps: Vec<((u64, u64), PathBuf)> = entries
        .iter()
        .filter(|e| !e.is_dir)
        .filter_map(|e| {
            segment::parse_replacement_name(&e.name, "swap").map(|r| (r, e.path.clone()))
        })
        .collect();
    swaps.sort();
    let recorded = *gaps_below;
    for ((first, end), swap) in &swaps {
        for e in &entries {
            let base = ["log", "index", "timeindex"]
                .iter()
                .find_map(|ext| segment::parse_segment_name(&e.name, ext));
            if base.is_some_and(|b| (*first..*end).contains(&b)) {
                fileio::remove_file(fs, &e.path)?;
            }
        }
        fs.sync_dir(dir)?;
        fs.rename(swap, &segment::segment_file(dir, *first, "log"))?;
        fs.sync_dir(dir)?;
        *gaps_below = (*gaps_below).max(*end);
        tracing::info!(dir = %dir.display(), first, end, "completed an interrupted segment swap");
    }
    if *gaps_below > recorded {
        // The cleaner records this before committing a swap; should the file have been lost,
        // the completed segments must not fail the contiguity check at the next start.
        write_compaction_metadata(fs, dir, *gaps_below)?;
    }
    Ok(!swaps.is_empty())
}

/// Topic id from Kafka's `partition.metadata` text (`version: 0` / `topic_id: ...`).
fn parse_partition_metadata(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut version_ok = false;
    let mut topic_id = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("version:") {
            version_ok = v.trim() == "0";
        } else if let Some(id) = line.strip_prefix("topic_id:") {
            topic_id = Some(id.trim().to_owned()).filter(|id| !id.is_empty());
        }
    }
    topic_id.filter(|_| version_ok)
}

#[cfg(test)]
mod clean_tests;
#[cfg(test)]
mod epoch_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
