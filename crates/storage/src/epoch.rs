//! The leader epoch cache of one partition (KIP-101, KIP-279): which leader epoch began at which
//! offset, kept in Kafka's `leader-epoch-checkpoint` file in the partition directory. Followers
//! use it to find where their log diverges from a new leader's (OffsetForLeaderEpoch), which is
//! what lets them truncate to the divergence point instead of to their high watermark.
//!
//! The rules follow Kafka's `LeaderEpochFileCache`: entries are strictly increasing in both
//! epoch and start offset, a new entry removes every entry at or after it (by epoch or by
//! offset), and every change is written to the file, atomically, before it is visible.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StorageError;
use crate::fileio::{self, Fs};

/// Name of the per-partition file, as in Kafka.
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// One entry of a [`LeaderEpochCache`]: leader `epoch` wrote its first record at
/// `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpochEntry {
    /// Leader epoch (never negative).
    pub epoch: i32,
    /// First offset written in that epoch.
    pub start_offset: u64,
}

/// A partition's epoch → start offset map, persisted in [`LEADER_EPOCH_CHECKPOINT_FILE`].
/// Every operation that changes it rewrites the file (temporary file, fsync, rename, directory
/// fsync) and changes the in-memory entries only once that succeeded, so a failed write leaves
/// the cache as it was.
#[derive(Debug)]
pub struct LeaderEpochCache {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    entries: Vec<EpochEntry>,
    /// The entries changed without being written (see [`LeaderEpochCache::set_unpersisted`]).
    dirty: bool,
    /// A write of the file failed in an fsync since the owner last asked.
    sync_failed: bool,
}

impl LeaderEpochCache {
    /// Loads the cache of the partition directory `dir`. A missing file is an empty cache; so
    /// is an unreadable one (a warning is logged): [`crate::Log::open`] rebuilds it from the
    /// log's batch headers.
    pub fn load(fs: Arc<dyn Fs>, dir: &Path) -> Result<LeaderEpochCache, StorageError> {
        let entries = read_file(&*fs, dir)?.entries();
        Ok(LeaderEpochCache::with_entries(fs, dir, entries))
    }

    /// A cache of `dir` holding `entries` (normalised by the assign rules), without touching
    /// the file.
    pub(crate) fn with_entries(
        fs: Arc<dyn Fs>,
        dir: &Path,
        entries: Vec<EpochEntry>,
    ) -> LeaderEpochCache {
        LeaderEpochCache {
            fs,
            path: dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
            entries: normalised(entries),
            dirty: false,
            sync_failed: false,
        }
    }

    /// Kafka's `assign`: records that `epoch` starts at `start_offset`. Nothing changes if the
    /// latest entry is of the same epoch and starts at or before `start_offset`. Otherwise
    /// every entry with an epoch `>= epoch` or a start offset `>= start_offset` is removed and
    /// the new entry appended. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: u64) -> Result<bool, StorageError> {
        let entry = checked_entry(epoch, start_offset)?;
        if !update_needed(&self.entries, entry) {
            return Ok(false);
        }
        self.update(|entries| assign_in(entries, entry))
    }

    /// The latest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The latest entry, if any.
    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// KIP-279's answer to OffsetForLeaderEpoch, exactly as Kafka's `endOffsetFor`: the largest
    /// epoch `<= requested_epoch` and where it ends, which is the next entry's start offset, or
    /// `log_end_offset` when `requested_epoch` is the latest epoch.
    ///
    /// `None` stands for Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET: for a negative
    /// (undefined) request, an empty cache, or a request above the latest epoch. A request
    /// below the first epoch is answered `(requested_epoch, first start offset)`, as Kafka has
    /// done since KAFKA-7415: the older epochs' records are gone (retention), and pointing the
    /// follower at the first retained offset lets it truncate there rather than fall back to
    /// its high watermark.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: u64) -> Option<(i32, u64)> {
        end_offset_in(&self.entries, requested_epoch, log_end_offset)
    }

    /// The epoch of the records at `offset`: the epoch of the last entry starting at or before
    /// it (`None` if `offset` is before the first entry).
    pub fn epoch_for_offset(&self, offset: u64) -> Option<i32> {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        i.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Removes every entry starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: u64) -> Result<bool, StorageError> {
        if self
            .entries
            .last()
            .is_none_or(|e| e.start_offset < end_offset)
        {
            return Ok(false);
        }
        self.update(|entries| truncate_end_in(entries, end_offset))
    }

    /// Removes the entries wholly before `start_offset` (the new log start) and moves the
    /// start of the one in effect there up to `start_offset`; an entry starting exactly there
    /// stays as it is.
    pub fn truncate_from_start(&mut self, start_offset: u64) -> Result<bool, StorageError> {
        if self
            .entries
            .first()
            .is_none_or(|e| e.start_offset >= start_offset)
        {
            return Ok(false);
        }
        self.update(|entries| truncate_start_in(entries, start_offset))
    }

    /// Removes every entry (the log restarts empty).
    pub fn clear(&mut self) -> Result<bool, StorageError> {
        if self.entries.is_empty() {
            return Ok(false);
        }
        self.update(Vec::clear)
    }

    /// Writes `entries` (normalised) and then adopts them; nothing changes if the write fails.
    pub(crate) fn replace(&mut self, entries: Vec<EpochEntry>) -> Result<bool, StorageError> {
        let entries = normalised(entries);
        if entries == self.entries && !self.dirty {
            return Ok(false);
        }
        self.write(&entries)?;
        self.entries = entries;
        self.dirty = false;
        Ok(true)
    }

    /// Adopts `entries` (normalised) without writing them: the next
    /// [`LeaderEpochCache::persist_if_dirty`] (or any change) does. Only for changes that
    /// recovery re-derives from the log should the file miss them (epochs of appended batches,
    /// entries below the log start), so that the file is never wrong, only behind.
    pub(crate) fn set_unpersisted(&mut self, entries: Vec<EpochEntry>) {
        let entries = normalised(entries);
        if entries != self.entries {
            self.entries = entries;
            self.dirty = true;
        }
    }

    /// Writes the entries if they changed since the file was last written.
    pub(crate) fn persist_if_dirty(&mut self) -> Result<(), StorageError> {
        if self.dirty {
            self.persist()?;
        }
        Ok(())
    }

    /// Writes the current entries to the file, whatever it holds.
    pub(crate) fn persist(&mut self) -> Result<(), StorageError> {
        let written = write_file(&*self.fs, &self.path, &self.entries);
        if let Err(e) = written {
            self.sync_failed |= e.sync_failed;
            return Err(StorageError::Io(e.error));
        }
        self.dirty = false;
        Ok(())
    }

    /// True (once) if a write failed in an fsync since the last call.
    pub(crate) fn take_sync_failure(&mut self) -> bool {
        std::mem::take(&mut self.sync_failed)
    }

    /// Applies `change` to a copy of the entries, writes it, and only then adopts it.
    fn update(&mut self, change: impl FnOnce(&mut Vec<EpochEntry>)) -> Result<bool, StorageError> {
        let mut next = self.entries.clone();
        change(&mut next);
        if next == self.entries {
            return Ok(false);
        }
        self.write(&next)?;
        self.entries = next;
        self.dirty = false;
        Ok(true)
    }

    fn write(&mut self, entries: &[EpochEntry]) -> Result<(), StorageError> {
        write_file(&*self.fs, &self.path, entries).map_err(|e| {
            self.sync_failed |= e.sync_failed;
            StorageError::Io(e.error)
        })
    }
}

fn write_file(
    fs: &dyn Fs,
    path: &Path,
    entries: &[EpochEntry],
) -> Result<(), fileio::AtomicWriteError> {
    fileio::atomic_write_checked(fs, path, render(entries).as_bytes())
}

fn checked_entry(epoch: i32, start_offset: u64) -> Result<EpochEntry, StorageError> {
    if epoch < 0 || start_offset > i64::MAX as u64 {
        return Err(StorageError::InvalidEpochEntry {
            epoch,
            start_offset,
        });
    }
    Ok(EpochEntry {
        epoch,
        start_offset,
    })
}

/// Kafka's `isUpdateNeeded`: a new epoch, or the latest epoch starting earlier.
pub(crate) fn update_needed(entries: &[EpochEntry], new: EpochEntry) -> bool {
    entries
        .last()
        .is_none_or(|l| new.epoch != l.epoch || new.start_offset < l.start_offset)
}

/// Kafka's assign on plain entries (no check of the epoch's sign).
pub(crate) fn assign_in(entries: &mut Vec<EpochEntry>, new: EpochEntry) {
    if !update_needed(entries, new) {
        return;
    }
    // Entries only ever increase in both fields, so the conflicting ones form a suffix.
    let keep =
        entries.partition_point(|e| e.epoch < new.epoch && e.start_offset < new.start_offset);
    let removed = entries.len() - keep;
    if removed > 1 || (removed == 1 && entries[keep].start_offset != new.start_offset) {
        // A lone entry at the same offset is a leader's epoch start that no record followed;
        // anything else means records of those epochs were truncated away.
        tracing::warn!(?new, removed = ?&entries[keep..], "new leader epoch entry removes conflicting entries");
    }
    entries.truncate(keep);
    entries.push(new);
}

/// Assigns `epoch` at `start_offset` if it is a valid epoch above the latest one: what a log
/// does for every batch it appends or recovers.
pub(crate) fn assign_if_newer(entries: &mut Vec<EpochEntry>, epoch: i32, start_offset: u64) {
    if epoch >= 0 && entries.last().is_none_or(|l| epoch > l.epoch) {
        assign_in(
            entries,
            EpochEntry {
                epoch,
                start_offset,
            },
        );
    }
}

/// Checks a recovered batch's partitionLeaderEpoch against the durable entries: it must be
/// the epoch in effect at its base offset. `Ok(false)`: no entry covers the batch (it lies
/// before the first entry, below a log start that retention or DeleteRecords moved up), so
/// there is nothing to check it against. `Err` names
/// the mismatch, which only a torn write explains once epoch starts are written before
/// records.
pub(crate) fn check_recovered_epoch(
    durable: &[EpochEntry],
    h: &vltava_protocol::batch::BatchHeader,
) -> Result<bool, String> {
    let base = h.base_offset as u64;
    let i = durable.partition_point(|e| e.start_offset <= base);
    let Some(expected) = i.checked_sub(1).map(|i| durable[i].epoch) else {
        return Ok(false);
    };
    let epoch = h.partition_leader_epoch;
    if epoch == expected {
        return Ok(true);
    }
    Err(format!(
        "batch at offset {base} has leader epoch {epoch} where {LEADER_EPOCH_CHECKPOINT_FILE} \
         has epoch {expected} (a torn write of the header)"
    ))
}

pub(crate) fn truncate_end_in(entries: &mut Vec<EpochEntry>, end_offset: u64) {
    let keep = entries.partition_point(|e| e.start_offset < end_offset);
    entries.truncate(keep);
}

pub(crate) fn truncate_start_in(entries: &mut Vec<EpochEntry>, start_offset: u64) {
    let removed = entries.partition_point(|e| e.start_offset <= start_offset);
    if removed == 0 {
        return;
    }
    let epoch = entries[removed - 1].epoch;
    entries.drain(..removed - 1);
    entries[0] = EpochEntry {
        epoch,
        start_offset,
    };
}

pub(crate) fn end_offset_in(
    entries: &[EpochEntry],
    requested: i32,
    log_end_offset: u64,
) -> Option<(i32, u64)> {
    if requested < 0 {
        return None;
    }
    let latest = entries.last()?;
    if latest.epoch == requested {
        return Some((requested, log_end_offset));
    }
    let higher = entries.partition_point(|e| e.epoch <= requested);
    let next = entries.get(higher)?;
    match higher.checked_sub(1) {
        Some(floor) => Some((entries[floor].epoch, next.start_offset)),
        None => Some((requested, next.start_offset)),
    }
}

/// Entries put through the assign rules one by one, as Kafka does when reading its file, so
/// that whatever order they come in the result is strictly increasing.
fn normalised(entries: Vec<EpochEntry>) -> Vec<EpochEntry> {
    if entries
        .windows(2)
        .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset)
    {
        return entries;
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        assign_in(&mut out, e);
    }
    out
}

/// Kafka's text format: `0`, the count, then `epoch startOffset` per line.
pub(crate) fn render(entries: &[EpochEntry]) -> String {
    let mut out = format!("0\n{}\n", entries.len());
    for e in entries {
        out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
    }
    out
}

/// Parses the file's text; `None` if anything about it is off (a partial or foreign file).
pub(crate) fn parse(bytes: &[u8]) -> Option<Vec<EpochEntry>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    // The count comes from the file: do not let it size an allocation.
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let epoch: i32 = fields.next()?.parse().ok()?;
        let offset: i64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() || epoch < 0 || offset < 0 {
            return None;
        }
        out.push(EpochEntry {
            epoch,
            start_offset: offset as u64,
        });
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return None;
    }
    Some(out)
}

/// What the checkpoint file of a partition directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EpochFile {
    /// There is none.
    Missing,
    /// There is one, but it is not a checkpoint (a warning was logged).
    Unreadable,
    /// Its entries, normalised by the assign rules.
    Entries(Vec<EpochEntry>),
}

impl EpochFile {
    /// The entries, empty unless the file was read.
    pub(crate) fn entries(&self) -> Vec<EpochEntry> {
        match self {
            EpochFile::Entries(e) => e.clone(),
            EpochFile::Missing | EpochFile::Unreadable => Vec::new(),
        }
    }

    /// True if the file must be written for it to hold `entries`.
    pub(crate) fn differs_from(&self, entries: &[EpochEntry]) -> bool {
        match self {
            EpochFile::Entries(e) => e.as_slice() != entries,
            EpochFile::Missing => !entries.is_empty(),
            EpochFile::Unreadable => true,
        }
    }
}

/// Reads the checkpoint file of `dir`.
pub(crate) fn read_file(fs: &dyn Fs, dir: &Path) -> Result<EpochFile, StorageError> {
    let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
    let Some(bytes) = fileio::read_optional(fs, &path)? else {
        return Ok(EpochFile::Missing);
    };
    match parse(&bytes) {
        Some(entries) => Ok(EpochFile::Entries(normalised(entries))),
        None => {
            tracing::warn!(path = %path.display(), "unreadable leader epoch checkpoint: rebuilding it from the log");
            Ok(EpochFile::Unreadable)
        }
    }
}

#[cfg(test)]
mod tests;
