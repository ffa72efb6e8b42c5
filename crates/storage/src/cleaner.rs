//! Log compaction, batch by batch: the map of each key's latest offset, the decision for each
//! batch (keep as is, rewrite with fewer records, keep only its header, drop), and the writer
//! of cleaned segment files. `Log::clean_with` drives it and swaps the results in.
//!
//! What is kept, and why:
//! - For each key, only the record with the highest offset; offsets are never reassigned, so
//!   a compacted log has gaps, and order is kept.
//! - Records without a key are kept. Kafka drops them, relying on produce-time rejection of
//!   keyless records on compacted topics; keeping them never loses data the broker accepted.
//! - Tombstones (a key with a null value) are kept until their batch's delete horizon
//!   (KIP-534): the first cleaning that sees a tombstone stamps the batch with
//!   `now + delete.retention.ms` (attribute bit 6, the horizon in `baseTimestamp`); a cleaning
//!   after that time removes them. The horizon travels with the batch, so it needs no file
//!   modification times (which copies and restores reset) and survives restarts as is.
//! - Control batches and transactional batches are copied untouched, and their records neither
//!   supersede nor get superseded: transactions are not implemented, and treating a possibly
//!   aborted record as the latest value could hide a committed one.
//! - A batch the cleaner cannot inspect (its payload inflates beyond the limit or does not
//!   parse) is copied untouched and its keys are not in the map. Keeping records is always
//!   safe; the only risk would be a removed tombstone uncovering an older value hidden in such
//!   a batch, so once one is seen, later tombstones are not expired in that pass.
//! - A batch whose records all go is dropped, unless it is one of the last
//!   [`crate::RETAINED_BATCHES`] batches of a live idempotent producer: then an empty batch
//!   (header only, as Kafka's `writeEmptyHeader`) keeps its producer id, epoch, sequence range
//!   and offsets, so that producer state rebuilt from the log after a restart still knows the
//!   producer's last sequence and recent batches (Kafka keeps only the last one and relies on
//!   producer snapshots for the rest; this crate rebuilds state from the log alone).
//! - A rewritten batch keeps its base offset, lastOffsetDelta, producer fields, leader epoch
//!   and codec, like Kafka: the last offset and last sequence are what producer state tracks.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use vltava_protocol::batch::{
    ATTR_CONTROL, ATTR_DELETE_HORIZON, ATTR_LOG_APPEND_TIME, ATTR_TRANSACTIONAL, BatchHeader,
    Compression, HEADER_LEN, NO_TIMESTAMP, build_batch,
};
use vltava_protocol::compression::{SnappyFraming, compress, decompress};
use vltava_protocol::records::{RecordView, parse_records};

use crate::error::StorageError;
use crate::fileio::{DataFile, Fs};
use crate::segment::Segment;

/// Default budget of the key map, like Kafka's `log.cleaner.dedupe.buffer.size`.
pub const DEFAULT_MAP_BUDGET_BYTES: usize = 128 << 20;

/// Map bytes charged per key on top of the key itself: the boxed slice, the offset and the
/// hash table's slot and control bytes, rounded up.
const MAP_ENTRY_OVERHEAD: usize = 48;

/// Output is written in chunks of this size.
const WRITE_CHUNK: usize = 1 << 20;

/// Knobs of one cleaning pass. The defaults suit a single-replica log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanOptions {
    /// Records at or above this offset are neither cleaned nor allowed to supersede older ones.
    /// A replicated log passes its high watermark: records above it may still be truncated
    /// away by a leader change, and must not have caused older values to be deleted.
    pub max_offset: u64,
    /// Approximate memory for the key map. When the dirty records hold more keys, the pass
    /// cleans only up to the segment where the map filled up (always at least one segment).
    pub map_budget_bytes: usize,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            max_offset: u64::MAX,
            map_budget_bytes: DEFAULT_MAP_BUDGET_BYTES,
        }
    }
}

/// What one cleaning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments examined (the cleanable ones, below the first uncleanable segment).
    pub segments_examined: usize,
    /// Segments replaced (several may be merged into one).
    pub segments_replaced: usize,
    /// Cleaned segments swapped in.
    pub segments_written: usize,
    /// Bytes of the examined segments before cleaning.
    pub bytes_before: u64,
    /// Bytes of the examined segments after cleaning.
    pub bytes_after: u64,
    /// Records examined in the cleanable segments.
    pub records_examined: u64,
    /// Records removed because a later record has the same key.
    pub records_superseded: u64,
    /// Tombstones removed because their delete horizon had passed.
    pub tombstones_removed: u64,
    /// Batches removed entirely.
    pub batches_removed: u64,
    /// Batches rewritten with fewer records or a new delete horizon.
    pub batches_rewritten: u64,
    /// Batches emptied but kept as a header for idempotent producer state.
    pub empty_batches_kept: u64,
    /// Batches copied without inspection (see the module docs).
    pub batches_uninspected: u64,
    /// Distinct keys in the key map.
    pub keys_mapped: usize,
    /// The log's cleaner checkpoint (first dirty offset) after the pass.
    pub cleaned_upto: u64,
}

/// The latest offset of every key seen in the dirty part of the log.
#[derive(Debug, Default)]
pub(crate) struct KeyMap {
    latest: HashMap<Box<[u8]>, u64>,
    bytes: usize,
}

impl KeyMap {
    /// Approximate memory used.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.latest.len()
    }

    fn insert(&mut self, key: &[u8], offset: u64) {
        if let Some(o) = self.latest.get_mut(key) {
            *o = (*o).max(offset);
        } else {
            self.bytes += key.len() + MAP_ENTRY_OVERHEAD;
            self.latest.insert(key.into(), offset);
        }
    }

    fn latest(&self, key: &[u8]) -> Option<u64> {
        self.latest.get(key).copied()
    }

    /// Adds the keyed records of a batch whose offsets fall in `[from, to)`. Batches the
    /// cleaner does not inspect contribute nothing (see the module docs).
    pub(crate) fn add_batch(
        &mut self,
        h: &BatchHeader,
        bytes: &[u8],
        from: u64,
        to: u64,
        max_inflated: usize,
    ) {
        if h.last_offset() < 0 || (h.last_offset() as u64) < from || h.base_offset as u64 >= to {
            return;
        }
        let Ok(section) = records_section(h, bytes, max_inflated) else {
            return;
        };
        let Ok(records) = inspectable_records(h, &section) else {
            return;
        };
        for r in records {
            let offset = h.base_offset as u64 + r.offset_delta as u64;
            if let Some(key) = r.key
                && (from..to).contains(&offset)
            {
                self.insert(key, offset);
            }
        }
    }
}

/// The records section of a batch, inflated if compressed. Control and transactional batches
/// are not inspected at all.
fn records_section<'b>(
    h: &BatchHeader,
    bytes: &'b [u8],
    max_inflated: usize,
) -> Result<Cow<'b, [u8]>, String> {
    if h.attributes & (ATTR_CONTROL | ATTR_TRANSACTIONAL) != 0 {
        return Err("control or transactional batch".into());
    }
    let codec = h.compression().ok_or("unknown compression codec")?;
    let payload = &bytes[HEADER_LEN..h.total_len()];
    if codec == Compression::None {
        return Ok(Cow::Borrowed(payload));
    }
    decompress(codec, payload, max_inflated)
        .map(Cow::Owned)
        .map_err(|e| e.to_string())
}

/// Parses the records and checks that their offsets are what the header promises: strictly
/// increasing deltas within `[0, lastOffsetDelta]`.
fn inspectable_records<'s>(
    h: &BatchHeader,
    section: &'s [u8],
) -> Result<Vec<RecordView<'s>>, String> {
    let records = parse_records(section, h.record_count).map_err(|e| e.to_string())?;
    let mut prev = -1i64;
    for r in &records {
        let d = i64::from(r.offset_delta);
        if d <= prev || d > i64::from(h.last_offset_delta) {
            return Err(format!("record offset delta {d} out of order"));
        }
        prev = d;
    }
    Ok(records)
}

/// What happens to one batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Copy the batch unchanged.
    Keep,
    /// Write these bytes instead.
    Replace(Vec<u8>),
    /// Leave the batch out.
    Drop,
}

/// Decides the fate of each batch of the segments being cleaned, in offset order.
pub(crate) struct BatchFilter<'a> {
    pub(crate) map: &'a KeyMap,
    pub(crate) now_ms: i64,
    pub(crate) delete_retention_ms: i64,
    pub(crate) max_inflated: usize,
    /// `(producer id, last offset)` of the batches producer state remembers.
    pub(crate) producer_batches: &'a HashSet<(i64, u64)>,
    /// An uninspected batch was passed in this pass: tombstones after it must stay.
    pub(crate) uninspected_seen: bool,
    /// Earliest delete horizon among kept batches whose tombstones a later pass may remove.
    pub(crate) earliest_horizon: Option<i64>,
    pub(crate) stats: &'a mut CleanStats,
}

impl BatchFilter<'_> {
    /// Decides what becomes of the batch `bytes` (CRC already checked).
    pub(crate) fn filter(&mut self, h: &BatchHeader, bytes: &[u8]) -> Outcome {
        if h.is_control() {
            return Outcome::Keep;
        }
        let section = records_section(h, bytes, self.max_inflated);
        let parsed = section
            .as_deref()
            .map_err(Clone::clone)
            .and_then(|s| inspectable_records(h, s));
        let records = match parsed {
            Ok(r) => r,
            Err(why) => {
                if !h.is_transactional() {
                    tracing::warn!(
                        offset = h.base_offset,
                        "cleaner keeps a batch it cannot inspect: {why}"
                    );
                }
                self.uninspected_seen = true;
                self.stats.batches_uninspected += 1;
                return Outcome::Keep;
            }
        };
        self.stats.records_examined += records.len() as u64;
        let old_horizon = h.delete_horizon_ms();
        let expire_tombstones =
            !self.uninspected_seen && old_horizon.is_some_and(|t| self.now_ms >= t);
        let base = h.base_offset as u64;
        let mut retained = Vec::with_capacity(records.len());
        for r in &records {
            let keep = match r.key {
                None => true,
                Some(key) => {
                    let offset = base + r.offset_delta as u64;
                    if self.map.latest(key).is_some_and(|latest| offset < latest) {
                        self.stats.records_superseded += 1;
                        false
                    } else if r.value.is_none() && expire_tombstones {
                        self.stats.tombstones_removed += 1;
                        false
                    } else {
                        true
                    }
                }
            };
            if keep {
                retained.push(*r);
            }
        }
        let has_tombstones = retained
            .iter()
            .any(|r| r.key.is_some() && r.value.is_none());
        let horizon = has_tombstones.then(|| {
            old_horizon.unwrap_or_else(|| self.now_ms.saturating_add(self.delete_retention_ms))
        });
        if retained.is_empty() {
            let needed = h.producer_id >= 0
                && self
                    .producer_batches
                    .contains(&(h.producer_id, h.last_offset() as u64));
            if !needed {
                self.stats.batches_removed += 1;
                return Outcome::Drop;
            }
            if records.is_empty() {
                return Outcome::Keep;
            }
            self.stats.empty_batches_kept += 1;
            return Outcome::Replace(empty_batch(h));
        }
        if !self.uninspected_seen
            && let Some(t) = horizon
        {
            self.earliest_horizon = Some(self.earliest_horizon.map_or(t, |e| e.min(t)));
        }
        if retained.len() == records.len() && horizon == old_horizon {
            return Outcome::Keep;
        }
        let payload = &bytes[HEADER_LEN..h.total_len()];
        match rebuild(h, payload, &retained, horizon) {
            Ok(b) => {
                self.stats.batches_rewritten += 1;
                Outcome::Replace(b)
            }
            Err(why) => {
                // Keeping every record is always correct, only less compact.
                tracing::warn!(
                    offset = h.base_offset,
                    "cleaner keeps a batch it cannot rebuild: {why}"
                );
                Outcome::Keep
            }
        }
    }
}

/// A batch with no records that keeps everything producer state reads from a header, as Kafka's
/// `DefaultRecordBatch.writeEmptyHeader`: no compression, no base timestamp, the original max
/// timestamp (producer expiration is judged by it), base offset and lastOffsetDelta.
fn empty_batch(h: &BatchHeader) -> Vec<u8> {
    let header = BatchHeader {
        attributes: h.attributes & (ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL | ATTR_CONTROL),
        base_timestamp: NO_TIMESTAMP,
        record_count: 0,
        ..*h
    };
    build_batch(&header, &[])
}

/// Rebuilds a batch with only `retained` records (in order), with the delete horizon `horizon`.
/// Base offset, lastOffsetDelta, producer fields, leader epoch and codec are kept; record
/// timestamps are re-expressed relative to the new base timestamp (the horizon if set, else the
/// original base, or the first record's timestamp when an old horizon is cleared).
fn rebuild(
    h: &BatchHeader,
    payload: &[u8],
    retained: &[RecordView<'_>],
    horizon: Option<i64>,
) -> Result<Vec<u8>, String> {
    let overflow = || "timestamp overflow".to_string();
    let timestamps = retained
        .iter()
        .map(|r| {
            h.base_timestamp
                .checked_add(r.timestamp_delta)
                .ok_or_else(overflow)
        })
        .collect::<Result<Vec<i64>, String>>()?;
    let base_timestamp = match (horizon, h.delete_horizon_ms()) {
        (Some(t), _) => t,
        (None, Some(_)) => timestamps.first().copied().unwrap_or(NO_TIMESTAMP),
        (None, None) => h.base_timestamp,
    };
    let max_timestamp = if h.is_log_append_time() {
        h.max_timestamp
    } else {
        timestamps.iter().copied().max().unwrap_or(h.max_timestamp)
    };
    let mut section = Vec::with_capacity(payload.len());
    for (r, ts) in retained.iter().zip(&timestamps) {
        let record = RecordView {
            timestamp_delta: ts.checked_sub(base_timestamp).ok_or_else(overflow)?,
            ..*r
        };
        record.encode(&mut section);
    }
    let codec = h.compression().ok_or("unknown compression codec")?;
    let records = if codec == Compression::None {
        section
    } else {
        compress(codec, &section, SnappyFraming::of(payload)).map_err(|e| e.to_string())?
    };
    let attributes = match horizon {
        Some(_) => h.attributes | ATTR_DELETE_HORIZON,
        None => h.attributes & !ATTR_DELETE_HORIZON,
    };
    let header = BatchHeader {
        attributes,
        base_timestamp,
        max_timestamp,
        record_count: retained.len() as i32,
        ..*h
    };
    Ok(build_batch(&header, &records))
}

/// Writes the cleaned form of a group of segments to a `.cleaned` file. For a group of one
/// segment nothing is written until the first change: a segment the pass leaves as it was is
/// not rewritten at all.
pub(crate) struct CleanedWriter {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    file: Option<DataFile>,
    buf: Vec<u8>,
    /// Bytes at the start of the (single) source segment kept unchanged and not yet written.
    pending_prefix: u64,
    size: u64,
}

impl CleanedWriter {
    /// A writer for `path`; `merging` groups of several segments always produce a file.
    pub(crate) fn new(
        fs: Arc<dyn Fs>,
        path: PathBuf,
        merging: bool,
    ) -> Result<CleanedWriter, StorageError> {
        let file = if merging {
            Some(DataFile::create_empty(&*fs, &path)?)
        } else {
            None
        };
        Ok(CleanedWriter {
            fs,
            path,
            file,
            buf: Vec::new(),
            pending_prefix: 0,
            size: 0,
        })
    }

    /// Records the outcome for batch `bytes` of `source`.
    pub(crate) fn push(
        &mut self,
        source: &Segment,
        bytes: &[u8],
        outcome: Outcome,
    ) -> Result<(), StorageError> {
        match outcome {
            Outcome::Keep if self.file.is_none() => {
                self.pending_prefix += bytes.len() as u64;
                Ok(())
            }
            Outcome::Keep => self.write(bytes),
            Outcome::Drop => self.materialize(source),
            Outcome::Replace(b) => {
                self.materialize(source)?;
                self.write(&b)
            }
        }
    }

    /// Creates the file and copies the unchanged prefix of the source into it.
    fn materialize(&mut self, source: &Segment) -> Result<(), StorageError> {
        if self.file.is_some() {
            return Ok(());
        }
        self.file = Some(DataFile::create_empty(&*self.fs, &self.path)?);
        let mut pos = 0;
        while pos < self.pending_prefix {
            let n = (self.pending_prefix - pos).min(WRITE_CHUNK as u64) as usize;
            let mut chunk = Vec::with_capacity(n);
            source.read_into(pos, n, &mut chunk)?;
            self.write(&chunk)?;
            pos += n as u64;
        }
        self.pending_prefix = 0;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        // Positions in a segment are 32-bit. Groups are planned by size before cleaning, but
        // a delete horizon can make tiny records grow (their timestamp deltas get longer).
        if self.size + bytes.len() as u64 > u64::from(u32::MAX) {
            return Err(StorageError::Corrupt(format!(
                "cleaned segment {} would exceed 4 GiB",
                self.path.display()
            )));
        }
        self.buf.extend_from_slice(bytes);
        self.size += bytes.len() as u64;
        if self.buf.len() >= WRITE_CHUNK {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), StorageError> {
        if let Some(f) = &mut self.file
            && !self.buf.is_empty()
        {
            f.append(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Finishes the file (written and fsynced) and returns its path and size, or `None` if
    /// nothing changed and there is nothing to swap in.
    pub(crate) fn finish(mut self) -> Result<Option<(PathBuf, u64)>, StorageError> {
        if self.file.is_none() {
            return Ok(None);
        }
        self.flush_buf()?;
        if let Some(f) = &self.file {
            f.sync()?;
        }
        Ok(Some((self.path, self.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Kv, kv_batch};
    use vltava_protocol::batch::verify;

    fn filter_one(
        map: &KeyMap,
        producers: &HashSet<(i64, u64)>,
        now: i64,
        batch: &[u8],
    ) -> (Outcome, CleanStats) {
        let mut stats = CleanStats::default();
        let h = verify(batch).expect("valid");
        let outcome = BatchFilter {
            map,
            now_ms: now,
            delete_retention_ms: 1000,
            max_inflated: 1 << 20,
            producer_batches: producers,
            uninspected_seen: false,
            earliest_horizon: None,
            stats: &mut stats,
        }
        .filter(&h, batch);
        (outcome, stats)
    }

    #[test]
    fn superseded_records_go_and_tombstones_get_a_horizon() {
        let batch = kv_batch(
            &[
                Kv::put("a", "1"),
                Kv::put("b", "2"),
                Kv::delete("c"),
                Kv::keyless("x"),
            ],
            Compression::None,
            500,
        );
        let mut map = KeyMap::default();
        map.insert(b"a", 10);
        map.insert(b"c", 2);
        let (out, stats) = filter_one(&map, &HashSet::new(), 5000, &batch);
        let Outcome::Replace(new) = out else {
            panic!("expected a rewrite, got {out:?}");
        };
        assert_eq!(stats.records_superseded, 1);
        let h = verify(&new).expect("valid rebuilt batch");
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 3, "lastOffsetDelta is kept");
        assert_eq!(h.delete_horizon_ms(), Some(6000));
        let records = parse_records(&new[HEADER_LEN..], 3).expect("records");
        let keys: Vec<_> = records.iter().map(|r| r.key).collect();
        assert_eq!(keys, [Some(&b"b"[..]), Some(b"c"), None]);
        let ts: Vec<_> = records
            .iter()
            .map(|r| h.base_timestamp + r.timestamp_delta)
            .collect();
        assert_eq!(
            ts,
            [501, 502, 503],
            "record timestamps survive the new base"
        );
        // Before the horizon the rebuilt batch stays as it is; after it the tombstone goes.
        assert_eq!(
            filter_one(&map, &HashSet::new(), 5999, &new).0,
            Outcome::Keep
        );
        let (out, stats) = filter_one(&map, &HashSet::new(), 6000, &new);
        assert_eq!(stats.tombstones_removed, 1);
        let Outcome::Replace(newer) = out else {
            panic!("expected a rewrite, got {out:?}");
        };
        let h = verify(&newer).expect("valid");
        assert_eq!(h.delete_horizon_ms(), None, "no tombstone left, no horizon");
        assert_eq!((h.base_timestamp, h.max_timestamp), (501, 503));
    }

    #[test]
    fn emptied_batches_are_dropped_unless_producer_state_needs_them() {
        let batch = kv_batch(&[Kv::put("a", "1")], Compression::None, 500);
        let mut map = KeyMap::default();
        map.insert(b"a", 10);
        assert_eq!(
            filter_one(&map, &HashSet::new(), 0, &batch).0,
            Outcome::Drop
        );
        let h = verify(&batch).expect("valid");
        // Pretend the batch is idempotent: rebuild it with a producer id.
        let idem = build_batch(
            &BatchHeader {
                producer_id: 9,
                producer_epoch: 0,
                base_sequence: 4,
                ..h
            },
            &batch[HEADER_LEN..],
        );
        let needed = HashSet::from([(9, 0)]);
        let (out, stats) = filter_one(&map, &needed, 0, &idem);
        assert_eq!(stats.empty_batches_kept, 1);
        let Outcome::Replace(empty) = out else {
            panic!("expected an empty batch, got {out:?}");
        };
        let e = verify(&empty).expect("valid");
        assert_eq!(
            (
                e.record_count,
                e.producer_id,
                e.base_sequence,
                e.last_offset()
            ),
            (0, 9, 4, 0)
        );
        assert_eq!(e.max_timestamp, h.max_timestamp);
        assert_eq!(empty.len(), HEADER_LEN);
        assert_eq!(filter_one(&map, &needed, 0, &empty).0, Outcome::Keep);
        assert_eq!(
            filter_one(&map, &HashSet::new(), 0, &empty).0,
            Outcome::Drop
        );
    }

    #[test]
    fn uninspectable_batches_are_kept_and_protect_later_tombstones() {
        let mut bad = kv_batch(&[Kv::put("a", "1")], Compression::Gzip, 500);
        // Corrupt the gzip payload and fix the CRC: the batch is valid but does not inflate.
        let n = bad.len();
        bad[n - 10] ^= 0xFF;
        let h = vltava_protocol::batch::parse_header(&bad).expect("header");
        let bad = build_batch(&h, &bad[HEADER_LEN..]);
        // A tombstone whose delete horizon (1000) has passed.
        let fresh = kv_batch(&[Kv::delete("b")], Compression::None, 500);
        let h = verify(&fresh).expect("valid");
        let expired = build_batch(
            &BatchHeader {
                attributes: h.attributes | ATTR_DELETE_HORIZON,
                base_timestamp: 1000,
                ..h
            },
            &fresh[HEADER_LEN..],
        );
        let mut map = KeyMap::default();
        map.insert(b"a", 10);
        assert_eq!(
            filter_one(&map, &HashSet::new(), 5000, &expired).0,
            Outcome::Drop,
            "on its own, the expired tombstone goes"
        );
        let mut stats = CleanStats::default();
        let producers = HashSet::new();
        let mut filter = BatchFilter {
            map: &map,
            now_ms: 5000,
            delete_retention_ms: 1000,
            max_inflated: 1 << 20,
            producer_batches: &producers,
            uninspected_seen: false,
            earliest_horizon: None,
            stats: &mut stats,
        };
        for b in [&bad, &expired] {
            let h = verify(b).expect("valid");
            assert_eq!(filter.filter(&h, b), Outcome::Keep);
        }
        assert_eq!(stats.batches_uninspected, 1);
        // A payload inflating beyond the limit is not inspected either.
        let big = kv_batch(&[Kv::put("a", &"x".repeat(5000))], Compression::Zstd, 500);
        let h = verify(&big).expect("valid");
        let mut stats = CleanStats::default();
        let outcome = BatchFilter {
            map: &map,
            now_ms: 0,
            delete_retention_ms: 1000,
            max_inflated: 1000,
            producer_batches: &producers,
            uninspected_seen: false,
            earliest_horizon: None,
            stats: &mut stats,
        }
        .filter(&h, &big);
        assert_eq!((outcome, stats.batches_uninspected), (Outcome::Keep, 1));
    }
}
