//! One segment: a `.log` file of whole batches starting at `base_offset`, plus its indexes.

use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vltava_protocol::batch::{
    BatchHeader, HEADER_LEN, LOG_OVERHEAD, parse_header, peek_total_len, set_base_offset_and_epoch,
    verify,
};

use crate::error::StorageError;
use crate::fileio::{self, DataFile, Fs};
use crate::index::{self, Index, OffsetEntry, TimeEntry};

/// Marks "no timestamp seen", below every real timestamp.
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;

/// Bytes of a batch that `append` rewrites: baseOffset, batchLength, partitionLeaderEpoch.
/// They precede the CRC-covered region, so the rest of the batch is written as received.
const REWRITTEN_PREFIX: usize = LOG_OVERHEAD + 4;

/// Read size when scanning with CRC checks: large, sequential reads.
const VERIFY_CHUNK: usize = 1 << 20;
/// Read size when only headers are needed.
const HEADER_CHUNK: usize = 64 << 10;
/// Read size when walking from an index entry to a target: about one index interval.
const LOOKUP_CHUNK: usize = 8 << 10;

/// `<dir>/<20-digit base offset>.<ext>`, Kafka's file naming.
pub(crate) fn segment_file(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Base offset named by a segment file name with extension `ext`, if it is one.
pub(crate) fn parse_segment_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Offsets are i64 on the wire; a larger base could never hold a batch.
    stem.parse().ok().filter(|&b: &u64| b <= i64::MAX as u64)
}

/// `<dir>/<first base>-<end>.log.<suffix>`: the cleaner's output for the segments with base
/// offsets in `[first_base, end)`, while being written (`cleaned`) and once committed
/// (`swap`). Kafka names these `<first base>.log.cleaned|swap`; the end offset is added here
/// so that recovery knows exactly which segments a swap file replaces, even when the cleaned
/// data ends long before `end`.
pub(crate) fn replacement_file(dir: &Path, first_base: u64, end: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{first_base:020}-{end:020}.log.{suffix}"))
}

/// `(first base, end)` named by a replacement file name with `suffix`, if it is one.
pub(crate) fn parse_replacement_name(name: &str, suffix: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(suffix)?.strip_suffix(".log.")?;
    let (first, end) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(end) {
        return None;
    }
    let (first, end): (u64, u64) = (first.parse().ok()?, end.parse().ok()?);
    (first < end && end <= i64::MAX as u64).then_some((first, end))
}

/// A read window over a file, refilled when a request falls outside it.
struct Window {
    buf: Vec<u8>,
    start: u64,
}

impl Window {
    fn new() -> Window {
        Window {
            buf: Vec::new(),
            start: 0,
        }
    }

    /// `need` bytes at `pos`; the caller guarantees `pos + need <= file_len`.
    fn get(
        &mut self,
        file: &DataFile,
        pos: u64,
        need: usize,
        file_len: u64,
        chunk: usize,
    ) -> io::Result<&[u8]> {
        let end = self.start + self.buf.len() as u64;
        if pos < self.start || pos + need as u64 > end {
            let len = (need.max(chunk) as u64).min(file_len - pos) as usize;
            self.buf.resize(len, 0);
            file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let off = (pos - self.start) as usize;
        Ok(&self.buf[off..off + need])
    }
}

/// How far a scan found valid batches.
struct ScanReport {
    valid_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    stop: Option<String>,
}

/// Walks the batches of a segment file from position 0. Stops at the first thing that cannot be
/// a valid continuation of the log: a torn or impossible length, a bad header, a bad CRC when
/// `check_crc`, or a base offset other than the next expected one. Never reads past `file_len`,
/// so a corrupt length cannot cause a large allocation.
///
/// Offsets must be contiguous because the base offset lies outside the CRC: a flipped bit
/// there would otherwise pass every check and serve records at wrong offsets. Segments written
/// by the cleaner (`allow_gaps`) legitimately skip offsets, so there a batch need only start
/// after the previous one ends: a base offset at or below the previous last offset still ends
/// the valid data, and only a corruption that moves a base offset up into a gap goes unseen.
fn scan(
    file: &DataFile,
    file_len: u64,
    base_offset: u64,
    check_crc: bool,
    allow_gaps: bool,
    on_batch: &mut dyn FnMut(u64, &BatchHeader) -> Result<(), String>,
) -> io::Result<ScanReport> {
    let chunk = if check_crc {
        VERIFY_CHUNK
    } else {
        HEADER_CHUNK
    };
    let mut win = Window::new();
    let mut pos = 0u64;
    let mut expected = base_offset;
    let stop = |pos: u64, why: String| {
        Ok(ScanReport {
            valid_bytes: pos,
            stop: Some(why),
        })
    };
    loop {
        let remaining = file_len - pos;
        if remaining == 0 {
            return Ok(ScanReport {
                valid_bytes: pos,
                stop: None,
            });
        }
        if pos > u64::from(u32::MAX) {
            return stop(pos, "segment exceeds 4 GiB".into());
        }
        if remaining < LOG_OVERHEAD as u64 {
            return stop(pos, format!("torn batch: {remaining} trailing bytes"));
        }
        let head = win.get(file, pos, LOG_OVERHEAD, file_len, chunk)?;
        let total = match peek_total_len(head) {
            Some(Ok(total)) => total,
            Some(Err(e)) => return stop(pos, e.to_string()),
            None => return stop(pos, "torn batch length".into()),
        };
        if total as u64 > remaining {
            return stop(
                pos,
                format!("torn batch: needs {total} bytes, {remaining} remain"),
            );
        }
        let need = if check_crc { total } else { HEADER_LEN };
        let bytes = win.get(file, pos, need, file_len, chunk)?;
        let parsed = if check_crc {
            verify(bytes)
        } else {
            parse_header(bytes)
        };
        let h = match parsed {
            Ok(h) => h,
            Err(e) => return stop(pos, e.to_string()),
        };
        let in_order = h.base_offset >= 0
            && h.last_offset_delta >= 0
            && h.base_offset
                .checked_add(i64::from(h.last_offset_delta))
                .is_some()
            && if allow_gaps {
                h.base_offset as u64 >= expected
            } else {
                h.base_offset as u64 == expected
            };
        if !in_order {
            return stop(
                pos,
                format!(
                    "batch at offset {}+{} where {}{expected} was expected",
                    h.base_offset,
                    h.last_offset_delta,
                    if allow_gaps { "at least " } else { "" },
                ),
            );
        }
        let last = h.last_offset() as u64;
        if last - base_offset > i32::MAX as u64 {
            return stop(
                pos,
                format!("offset {last} too far from base {base_offset}"),
            );
        }
        if let Err(why) = on_batch(pos, &h) {
            return stop(pos, why);
        }
        expected = last + 1;
        pos += total as u64;
    }
}

/// What a segment tracks about its batches to maintain the sparse indexes.
#[derive(Debug, Clone, Copy)]
struct Stats {
    max_timestamp: i64,
    /// Last offset of the first batch that reached `max_timestamp`.
    offset_of_max_timestamp: u64,
    bytes_since_index: u64,
}

impl Stats {
    fn new(base_offset: u64) -> Stats {
        Stats {
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            bytes_since_index: 0,
        }
    }

    /// Accounts for one batch at `pos` and returns the index entries due for it. As in Kafka,
    /// an entry is due once more than `interval` bytes were appended since the last one, so the
    /// first batch of a segment never gets one (lookups before the first entry start at 0).
    fn observe(
        &mut self,
        base_offset: u64,
        pos: u64,
        h: &BatchHeader,
        last_offset: u64,
        interval: u64,
        last_time_entry: Option<i64>,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = last_offset;
        }
        let mut due = (None, None);
        if self.bytes_since_index > interval {
            due.0 = Some(OffsetEntry {
                rel_offset: (last_offset - base_offset) as u32,
                position: pos as u32,
            });
            due.1 = self.time_entry(base_offset, last_time_entry);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_len() as u64;
        due
    }

    /// A time entry for the current maximum, if it is above the last entry's timestamp.
    fn time_entry(&self, base_offset: u64, last_time_entry: Option<i64>) -> Option<TimeEntry> {
        let above = last_time_entry.is_none_or(|t| self.max_timestamp > t);
        (self.max_timestamp != NO_TIMESTAMP && above).then(|| TimeEntry {
            timestamp: self.max_timestamp,
            rel_offset: (self.offset_of_max_timestamp - base_offset) as u32,
        })
    }
}

/// Checks index files loaded from disk against the batches a scan finds: every offset entry must
/// point at a batch start whose base offset is at most the entry's offset, and every time entry
/// must name the batch where the running maximum timestamp first reached the entry's value.
/// Those are exactly the properties lookups rely on.
struct IndexChecker<'a> {
    base_offset: u64,
    offsets: &'a [OffsetEntry],
    times: &'a [TimeEntry],
    next_offset_entry: usize,
    next_time_entry: usize,
    running_max: i64,
    ok: bool,
}

impl<'a> IndexChecker<'a> {
    fn new(base_offset: u64, offsets: &'a [OffsetEntry], times: &'a [TimeEntry]) -> Self {
        IndexChecker {
            base_offset,
            offsets,
            times,
            next_offset_entry: 0,
            next_time_entry: 0,
            running_max: NO_TIMESTAMP,
            ok: true,
        }
    }

    fn on_batch(&mut self, pos: u64, h: &BatchHeader) {
        let batch_base = h.base_offset as u64;
        let last = h.last_offset() as u64;
        while let Some(e) = self.offsets.get(self.next_offset_entry) {
            if u64::from(e.position) > pos {
                break;
            }
            if u64::from(e.position) < pos
                || self.base_offset + u64::from(e.rel_offset) < batch_base
            {
                self.ok = false;
            }
            self.next_offset_entry += 1;
        }
        let new_max = self.running_max.max(h.max_timestamp);
        while let Some(e) = self.times.get(self.next_time_entry) {
            if self.base_offset + u64::from(e.rel_offset) > last {
                break;
            }
            if !(self.running_max < e.timestamp && e.timestamp == new_max) {
                self.ok = false;
            }
            self.next_time_entry += 1;
        }
        self.running_max = new_max;
    }

    fn passed(&self) -> bool {
        self.ok
            && self.next_offset_entry == self.offsets.len()
            && self.next_time_entry == self.times.len()
    }
}

/// Everything a scan of a segment file yields.
struct Built {
    report: ScanReport,
    stats: Stats,
    next_offset: u64,
    offset_entries: Vec<OffsetEntry>,
    time_entries: Vec<TimeEntry>,
}

#[allow(clippy::too_many_arguments)]
fn scan_and_build(
    log: &DataFile,
    len: u64,
    base_offset: u64,
    check_crc: bool,
    allow_gaps: bool,
    interval: u64,
    mut checker: Option<&mut IndexChecker<'_>>,
    on_batch: &mut dyn FnMut(&BatchHeader) -> Result<(), String>,
) -> io::Result<Built> {
    let mut stats = Stats::new(base_offset);
    let mut next_offset = base_offset;
    let mut offset_entries = Vec::new();
    let mut time_entries: Vec<TimeEntry> = Vec::new();
    let report = scan(
        log,
        len,
        base_offset,
        check_crc,
        allow_gaps,
        &mut |pos, h| {
            // Asked first: a batch the caller refuses ends the valid data before it counts.
            on_batch(h)?;
            let last = h.last_offset() as u64;
            let last_ts = time_entries.last().map(|e| e.timestamp);
            let (o, t) = stats.observe(base_offset, pos, h, last, interval, last_ts);
            offset_entries.extend(o);
            time_entries.extend(t);
            if let Some(c) = checker.as_deref_mut() {
                c.on_batch(pos, h);
            }
            next_offset = last + 1;
            Ok(())
        },
    )?;
    // Like Kafka at roll: the time index ends with the segment's largest timestamp, so a
    // reloaded segment needs no scan to know it.
    let last_ts = time_entries.last().map(|e| e.timestamp);
    time_entries.extend(stats.time_entry(base_offset, last_ts));
    Ok(Built {
        report,
        stats,
        next_offset,
        offset_entries,
        time_entries,
    })
}

/// How `Segment::load` treats the segment's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadMode {
    /// At or after the recovery point: verify every CRC and rebuild the indexes.
    Recover,
    /// Flushed data: read headers only and keep the index files if they check out.
    Trust,
}

/// Result of loading one segment.
pub(crate) struct Loaded {
    pub(crate) segment: Segment,
    /// Why the valid data ended before the end of the file (the file was truncated there).
    pub(crate) truncated: Option<String>,
    /// True if the index files were rewritten.
    pub(crate) rebuilt_indexes: bool,
}

/// One segment of a partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    fs: Arc<dyn Fs>,
    base_offset: u64,
    dir: PathBuf,
    log: DataFile,
    offset_index: Index<OffsetEntry>,
    time_index: Index<TimeEntry>,
    size: u64,
    next_offset: u64,
    stats: Stats,
    /// When the first batch was appended (or the segment was loaded non-empty): drives
    /// `segment.ms` rolling.
    rolling_ms: Option<i64>,
    /// Bumped by every change; a sync records the value it made durable.
    change_seq: u64,
    synced_seq: u64,
    /// Written by the cleaner: offsets may skip values inside and after this segment.
    allow_gaps: bool,
}

impl Segment {
    /// Creates a new empty segment, replacing any stale files with the same base offset.
    pub(crate) fn create(fs: &Arc<dyn Fs>, dir: &Path, base_offset: u64) -> io::Result<Segment> {
        let log = DataFile::create_empty(&**fs, &segment_file(dir, base_offset, "log"))?;
        let offset_index = Index::create(&**fs, &segment_file(dir, base_offset, "index"))?;
        let time_index = Index::create(&**fs, &segment_file(dir, base_offset, "timeindex"))?;
        Ok(Segment {
            fs: Arc::clone(fs),
            base_offset,
            dir: dir.to_path_buf(),
            log,
            offset_index,
            time_index,
            size: 0,
            next_offset: base_offset,
            stats: Stats::new(base_offset),
            rolling_ms: None,
            change_seq: 1,
            synced_seq: 0,
            allow_gaps: false,
        })
    }

    /// Opens an existing segment and scans it (see [`LoadMode`]). Invalid trailing data is
    /// truncated away. `on_batch` sees every valid batch header in order; an `Err` ends the
    /// valid data before that batch, as an invalid batch does. `allow_gaps` is set for segments
    /// the cleaner wrote (see `scan`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        fs: &Arc<dyn Fs>,
        dir: &Path,
        base_offset: u64,
        mode: LoadMode,
        interval: u64,
        allow_gaps: bool,
        now_ms: i64,
        on_batch: &mut dyn FnMut(&BatchHeader) -> Result<(), String>,
    ) -> io::Result<Loaded> {
        let mut log = DataFile::open(&**fs, &segment_file(dir, base_offset, "log"))?;
        let len = log.len()?;
        // An index never holds more entries than the log has batches, so a longer file is
        // garbage and is not worth reading into memory.
        let (oi_file, oi_loaded) =
            Index::<OffsetEntry>::open(&**fs, &segment_file(dir, base_offset, "index"), len)?;
        let (ti_file, ti_loaded) =
            Index::<TimeEntry>::open(&**fs, &segment_file(dir, base_offset, "timeindex"), len)?;
        let check_crc = mode == LoadMode::Recover;
        let mut checker = match (&oi_loaded, &ti_loaded) {
            (Some(o), Some(t)) if !check_crc => Some(IndexChecker::new(base_offset, o, t)),
            _ => None,
        };
        let built = scan_and_build(
            &log,
            len,
            base_offset,
            check_crc,
            allow_gaps,
            interval,
            checker.as_mut(),
            on_batch,
        )?;
        let size = built.report.valid_bytes;
        if built.report.stop.is_some() {
            log.truncate(size)?;
        }
        let max_rel = (built.next_offset.max(base_offset + 1) - 1 - base_offset) as u32;
        // An empty index is consistent with any segment, but when the scan would index
        // something it means the file went missing (a completed cleaner swap deletes the old
        // indexes): rebuilding it keeps lookups from scanning the whole segment.
        let lost =
            |loaded_empty: Option<bool>, built_any: bool| built_any && loaded_empty == Some(true);
        let keep_loaded = built.report.stop.is_none()
            && !lost(
                oi_loaded.as_ref().map(Vec::is_empty),
                !built.offset_entries.is_empty(),
            )
            && !lost(
                ti_loaded.as_ref().map(Vec::is_empty),
                !built.time_entries.is_empty(),
            )
            && checker.as_ref().is_some_and(IndexChecker::passed)
            && oi_loaded
                .as_deref()
                .is_some_and(|e| index::offset_entries_sane(e, size, max_rel))
            && ti_loaded
                .as_deref()
                .is_some_and(|e| index::time_entries_sane(e, max_rel, built.stats.max_timestamp));
        // A recovered segment whose index files already say exactly what the scan found (an
        // empty active segment, or one recovered after a clean stop) keeps them: rewriting
        // them would cost two truncations and fsyncs per partition at every start.
        let keep_loaded = keep_loaded
            || (built.report.stop.is_none()
                && oi_loaded.as_deref() == Some(&built.offset_entries[..])
                && ti_loaded.as_deref() == Some(&built.time_entries[..]));
        let (offset_index, time_index) = match (keep_loaded, oi_loaded, ti_loaded) {
            (true, Some(o), Some(t)) => (
                Index::from_loaded(oi_file, o),
                Index::from_loaded(ti_file, t),
            ),
            _ => (
                Index::rebuild(oi_file, built.offset_entries)?,
                Index::rebuild(ti_file, built.time_entries)?,
            ),
        };
        let segment = Segment {
            fs: Arc::clone(fs),
            base_offset,
            dir: dir.to_path_buf(),
            log,
            offset_index,
            time_index,
            size,
            next_offset: built.next_offset,
            stats: built.stats,
            rolling_ms: (size > 0).then_some(now_ms),
            // Recovered bytes may not be on disk yet (the process died, not the machine):
            // they count as changed until a sync, which lets the recovery point pass them.
            change_seq: u64::from(!keep_loaded || (check_crc && size > 0)),
            synced_seq: 0,
            allow_gaps,
        };
        Ok(Loaded {
            segment,
            truncated: built.report.stop,
            rebuilt_indexes: !keep_loaded,
        })
    }

    /// First offset this segment may hold.
    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Bytes of batches in the segment.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Offset following the last batch (the base offset if empty).
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// True if the segment holds no batch.
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// True if offsets may skip values inside and after this segment (the cleaner wrote it).
    pub(crate) fn allows_gaps(&self) -> bool {
        self.allow_gaps
    }

    /// Lets offsets skip values inside and after this segment from now on (the cleaner's
    /// segments, and a follower's copy of a compacted leader log).
    pub(crate) fn set_allow_gaps(&mut self) {
        self.allow_gaps = true;
    }

    /// Largest batch timestamp and the last offset of the batch that first had it.
    pub(crate) fn max_timestamp(&self) -> Option<(i64, u64)> {
        (self.stats.max_timestamp != NO_TIMESTAMP)
            .then_some((self.stats.max_timestamp, self.stats.offset_of_max_timestamp))
    }

    /// When the segment got its first batch, if it has one.
    pub(crate) fn rolling_ms(&self) -> Option<i64> {
        self.rolling_ms
    }

    /// Writes `batches` (already checked) with offsets from `first_offset`, rewriting only the
    /// base offset and leader epoch, in one vectored write. On failure the file is cut back to
    /// its previous size; the error says whether that succeeded.
    pub(crate) fn append<B: AsRef<[u8]>>(
        &mut self,
        batches: &[(BatchHeader, B)],
        first_offset: u64,
        leader_epoch: i32,
        interval: u64,
        now_ms: i64,
    ) -> Result<(), AppendFailure> {
        let mut prefixes = Vec::with_capacity(batches.len());
        let mut offset = first_offset;
        for (h, bytes) in batches {
            let mut p = [0u8; REWRITTEN_PREFIX];
            p.copy_from_slice(&bytes.as_ref()[..REWRITTEN_PREFIX]);
            set_base_offset_and_epoch(&mut p, offset as i64, leader_epoch);
            prefixes.push(p);
            offset += h.last_offset_delta as u64 + 1;
        }
        let mut slices = Vec::with_capacity(batches.len() * 2);
        for ((_, bytes), p) in batches.iter().zip(&prefixes) {
            slices.push(IoSlice::new(p));
            slices.push(IoSlice::new(&bytes.as_ref()[REWRITTEN_PREFIX..]));
        }
        self.write_all(&mut slices)?;
        let mut offset = first_offset;
        self.note_appended(
            batches.iter().map(|(h, _)| {
                let base = offset;
                offset += h.last_offset_delta as u64 + 1;
                (h, base)
            }),
            interval,
            now_ms,
        );
        Ok(())
    }

    /// Writes `batches` exactly as they are (a follower copying its leader's log: base offsets
    /// and leader epochs included), in one vectored write. The caller checked that their base
    /// offsets increase from `next_offset()` on and fit this segment's relative offsets. On
    /// failure the file is cut back to its previous size; the error says whether that
    /// succeeded.
    pub(crate) fn append_unchanged<B: AsRef<[u8]>>(
        &mut self,
        batches: &[(BatchHeader, B)],
        interval: u64,
        now_ms: i64,
    ) -> Result<(), AppendFailure> {
        let mut slices: Vec<IoSlice<'_>> = batches
            .iter()
            .map(|(_, b)| IoSlice::new(b.as_ref()))
            .collect();
        self.write_all(&mut slices)?;
        self.note_appended(
            batches.iter().map(|(h, _)| (h, h.base_offset as u64)),
            interval,
            now_ms,
        );
        Ok(())
    }

    fn write_all(&mut self, slices: &mut [IoSlice<'_>]) -> Result<(), AppendFailure> {
        self.change_seq += 1;
        if let Err(error) = self.log.append_all(slices) {
            let undone = self.log.truncate(self.size).is_ok();
            return Err(AppendFailure { error, undone });
        }
        Ok(())
    }

    /// Index and statistics upkeep for batches just written at the end, given with the base
    /// offset each was written at.
    fn note_appended<'h>(
        &mut self,
        batches: impl Iterator<Item = (&'h BatchHeader, u64)>,
        interval: u64,
        now_ms: i64,
    ) {
        let mut pos = self.size;
        let mut next = self.next_offset;
        for (h, base) in batches {
            let last = base + h.last_offset_delta as u64;
            let last_ts = self.time_index.last().map(|e| e.timestamp);
            let (o, t) = self
                .stats
                .observe(self.base_offset, pos, h, last, interval, last_ts);
            if let Some(o) = o {
                self.offset_index.push(o);
            }
            if let Some(t) = t {
                self.time_index.push(t);
            }
            pos += h.total_len() as u64;
            next = last + 1;
        }
        self.size = pos;
        self.next_offset = next;
        self.rolling_ms.get_or_insert(now_ms);
    }

    /// Calls `f` on each batch header from position `from` until it returns true; returns that
    /// batch and its position.
    fn walk_headers(
        &self,
        from: u64,
        mut f: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let mut win = Window::new();
        let mut pos = from;
        while pos < self.size {
            let remaining = self.size - pos;
            if remaining < HEADER_LEN as u64 {
                return Err(self.corrupt(pos, "truncated batch header"));
            }
            let bytes = win.get(&self.log, pos, HEADER_LEN, self.size, LOOKUP_CHUNK)?;
            let h = parse_header(bytes).map_err(|e| self.corrupt(pos, &e.to_string()))?;
            if h.total_len() as u64 > remaining {
                return Err(self.corrupt(pos, "batch runs past the segment end"));
            }
            if f(&h) {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    fn corrupt(&self, pos: u64, what: &str) -> StorageError {
        StorageError::Corrupt(format!(
            "{} position {pos}: {what}",
            segment_file(&self.dir, self.base_offset, "log").display()
        ))
    }

    /// Position and header of the first batch whose last offset is `>= target`.
    pub(crate) fn find_batch(
        &self,
        target: u64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let rel = target
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        let start = self
            .offset_index
            .lookup(rel)
            .map_or(0, |e| u64::from(e.position));
        self.walk_headers(start, |h| h.last_offset() as u64 >= target)
    }

    /// First batch with records whose max timestamp is `>= ts`, ignoring batches entirely below
    /// `min_offset`. Batches the cleaner emptied (kept for producer state) keep their original
    /// max timestamp but hold no record to point at, so they are passed over.
    pub(crate) fn find_by_timestamp(
        &self,
        ts: i64,
        min_offset: u64,
    ) -> Result<Option<BatchHeader>, StorageError> {
        let from_offset = self
            .time_index
            .lookup(ts)
            .map_or(self.base_offset, |e| {
                self.base_offset + u64::from(e.rel_offset)
            })
            .max(min_offset);
        let Some((pos, _)) = self.find_batch(from_offset)? else {
            return Ok(None);
        };
        Ok(self
            .walk_headers(pos, |h| h.max_timestamp >= ts && h.record_count > 0)?
            .map(|(_, h)| h))
    }

    /// Calls `f` on every batch header, in order.
    pub(crate) fn for_each_header(
        &self,
        mut f: impl FnMut(&BatchHeader),
    ) -> Result<(), StorageError> {
        self.walk_headers(0, |h| {
            f(h);
            false
        })
        .map(|_| ())
    }

    /// Calls `f` with the position, header and bytes of every batch, in order, after checking
    /// its CRC: the cleaner rewrites what it reads, so it must not launder corrupt data into a
    /// freshly checksummed batch.
    pub(crate) fn for_each_batch(
        &self,
        mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut win = Window::new();
        let mut pos = 0u64;
        while pos < self.size {
            let remaining = self.size - pos;
            if remaining < HEADER_LEN as u64 {
                return Err(self.corrupt(pos, "truncated batch header"));
            }
            let head = win.get(&self.log, pos, HEADER_LEN, self.size, VERIFY_CHUNK)?;
            let h = parse_header(head).map_err(|e| self.corrupt(pos, &e.to_string()))?;
            let total = h.total_len();
            if total as u64 > remaining {
                return Err(self.corrupt(pos, "batch runs past the segment end"));
            }
            let bytes = win.get(&self.log, pos, total, self.size, VERIFY_CHUNK)?;
            let h = verify(bytes).map_err(|e| self.corrupt(pos, &e.to_string()))?;
            f(pos, &h, bytes)?;
            pos += total as u64;
        }
        Ok(())
    }

    /// The longest run of whole batches starting at batch position `pos` that ends at or
    /// before position `limit` and holds no batch whose base offset is `>= upper`. Returns its
    /// end position, the offset to read after it (`None` if the run is empty) and whether a
    /// batch at or above `upper` stopped it. The sparse index brings the header walk close to
    /// `limit`, so finding the end reads a few headers, not the bytes in between.
    pub(crate) fn whole_batches_end(
        &self,
        pos: u64,
        limit: u64,
        upper: u64,
    ) -> Result<(u64, Option<u64>, bool), StorageError> {
        let limit = limit.min(self.size);
        let entries = self.offset_index.entries();
        // Entries are ordered by both position and offset, so the usable ones are a prefix.
        let usable = entries.partition_point(|e| {
            u64::from(e.position) <= limit && self.base_offset + u64::from(e.rel_offset) < upper
        });
        let start = usable
            .checked_sub(1)
            .map(|i| u64::from(entries[i].position))
            .filter(|&p| p > pos)
            .unwrap_or(pos);
        let mut win = Window::new();
        let mut p = start;
        let mut next = None;
        let mut hit_upper = false;
        while p < self.size {
            if self.size - p < HEADER_LEN as u64 {
                return Err(self.corrupt(p, "truncated batch header"));
            }
            let bytes = win.get(&self.log, p, HEADER_LEN, self.size, HEADER_LEN)?;
            let h = parse_header(bytes).map_err(|e| self.corrupt(p, &e.to_string()))?;
            let total = h.total_len() as u64;
            let stop_upper = h.base_offset as u64 >= upper;
            if stop_upper || p + total > limit {
                hit_upper = stop_upper;
                // Stopped right at an index entry: whatever precedes it ends the run, and the
                // next offset to read is this batch's base (equal to the previous batch's last
                // offset + 1 unless compaction left a gap).
                if next.is_none() && p > pos {
                    next = Some(h.base_offset as u64);
                }
                break;
            }
            if total > self.size - p {
                return Err(self.corrupt(p, "batch runs past the segment end"));
            }
            next = Some(h.last_offset() as u64 + 1);
            p += total;
        }
        Ok((p, next, hit_upper))
    }

    /// A shared handle on the log file, readable after the log's lock is released.
    pub(crate) fn shared_file(&self) -> Arc<dyn crate::fileio::FsFile> {
        self.log.shared()
    }

    /// Appends bytes `[pos, pos + len)` of the log file to `out`.
    pub(crate) fn read_into(&self, pos: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let old = out.len();
        out.resize(old + len, 0);
        let res = self.log.read_exact_at(&mut out[old..], pos);
        if res.is_err() {
            out.truncate(old);
        }
        res
    }

    /// Removes every batch whose last offset is `>= target`; afterwards `next_offset() <= target`.
    pub(crate) fn truncate_to(&mut self, target: u64, interval: u64) -> Result<(), StorageError> {
        let Some((pos, _)) = self.find_batch(target)? else {
            return Ok(());
        };
        self.change_seq += 1;
        self.log.truncate(pos)?;
        // Rare (replication divergence), so rebuilding from a header scan is simpler than
        // unwinding the statistics.
        let built = scan_and_build(
            &self.log,
            pos,
            self.base_offset,
            false,
            self.allow_gaps,
            interval,
            None,
            &mut |_| Ok(()),
        )?;
        if built.report.stop.is_some() {
            self.log.truncate(built.report.valid_bytes)?;
        }
        self.size = built.report.valid_bytes;
        self.next_offset = built.next_offset;
        self.stats = built.stats;
        self.offset_index.truncate(0)?;
        self.time_index.truncate(0)?;
        for e in built.offset_entries {
            self.offset_index.push(e);
        }
        for e in built.time_entries {
            self.time_index.push(e);
        }
        if self.size == 0 {
            self.rolling_ms = None;
        }
        Ok(())
    }

    /// Called when the segment stops being the active one: its time index gets a final entry
    /// with the largest timestamp, as Kafka does.
    pub(crate) fn on_roll(&mut self) {
        let last_ts = self.time_index.last().map(|e| e.timestamp);
        if let Some(e) = self.stats.time_entry(self.base_offset, last_ts) {
            self.time_index.push(e);
            self.change_seq += 1;
        }
    }

    /// True if something changed since the last completed sync.
    pub(crate) fn needs_sync(&self) -> bool {
        self.change_seq != self.synced_seq
    }

    /// Writes pending index entries and returns descriptors to fsync plus the change sequence
    /// they will cover.
    pub(crate) fn prepare_sync(&mut self) -> io::Result<(Vec<DataFile>, u64)> {
        self.persist_indexes()?;
        let files = vec![
            self.log.clone(),
            self.offset_index.file().clone(),
            self.time_index.file().clone(),
        ];
        Ok((files, self.change_seq))
    }

    /// Records that everything up to change `seq` is durable.
    pub(crate) fn mark_synced(&mut self, seq: u64) {
        self.synced_seq = self.synced_seq.max(seq);
    }

    /// Writes index entries that exist only in memory to their files (no fsync).
    pub(crate) fn persist_indexes(&mut self) -> io::Result<()> {
        self.offset_index.write_unpersisted()?;
        self.time_index.write_unpersisted()
    }

    /// fsyncs the segment and its indexes if something changed since the last sync; call
    /// [`Segment::persist_indexes`] first. A failure here means data may have been lost.
    pub(crate) fn sync_files(&mut self) -> io::Result<()> {
        if !self.needs_sync() {
            return Ok(());
        }
        let seq = self.change_seq;
        self.log.sync()?;
        self.offset_index.file().sync()?;
        self.time_index.file().sync()?;
        self.synced_seq = seq;
        Ok(())
    }

    /// Empties the data file of a segment a truncation removes, before it is deleted: a reader
    /// still sending a range of it from an open descriptor then meets the end of the file
    /// (and ends its connection) instead of sending the records that were cut.
    pub(crate) fn empty_data_file(&mut self) -> io::Result<()> {
        self.change_seq += 1;
        self.size = 0;
        self.log.truncate(0)
    }

    /// Deletes the segment's files.
    pub(crate) fn delete(self) -> io::Result<()> {
        for ext in ["log", "index", "timeindex"] {
            fileio::remove_file(&*self.fs, &segment_file(&self.dir, self.base_offset, ext))?;
        }
        Ok(())
    }

    /// True if the in-memory indexes are what lookups need (every entry checked against the
    /// batches, as at load), the index files hold exactly their persisted entries, and the
    /// data file holds exactly the segment's valid batches.
    #[cfg(test)]
    pub(crate) fn indexes_consistent(&self) -> io::Result<bool> {
        let offsets = self.offset_index.entries();
        let times = self.time_index.entries();
        let mut checker = IndexChecker::new(self.base_offset, offsets, times);
        let built = scan_and_build(
            &self.log,
            self.size,
            self.base_offset,
            true,
            self.allow_gaps,
            u64::MAX,
            Some(&mut checker),
            &mut |_| Ok(()),
        )?;
        let max_rel = (self.next_offset.max(self.base_offset + 1) - 1 - self.base_offset) as u32;
        Ok(built.report.stop.is_none()
            && built.next_offset == self.next_offset
            && self.log.len()? == self.size
            && checker.passed()
            && index::offset_entries_sane(offsets, self.size, max_rel)
            && index::time_entries_sane(times, max_rel, self.stats.max_timestamp)
            && self.offset_index.file_matches()?
            && self.time_index.file_matches()?)
    }

    #[cfg(test)]
    pub(crate) fn offset_index_entries(&self) -> &[OffsetEntry] {
        self.offset_index.entries()
    }

    #[cfg(test)]
    pub(crate) fn time_index_entries(&self) -> &[TimeEntry] {
        self.time_index.entries()
    }
}

/// A failed segment write.
#[derive(Debug)]
pub(crate) struct AppendFailure {
    pub(crate) error: io::Error,
    /// True if the partial write was removed again.
    pub(crate) undone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name("18446744073709551615.log", "log"), None);
        assert_eq!(
            parse_segment_name("00000000000000000042.log", "log"),
            Some(42)
        );
        assert_eq!(
            parse_segment_name("00000000000000000042.index", "log"),
            None
        );
        assert_eq!(parse_segment_name("42.log", "log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log", "log"), None);
        assert_eq!(
            segment_file(Path::new("/d"), 7, "timeindex"),
            PathBuf::from("/d/00000000000000000007.timeindex")
        );
        let swap = replacement_file(Path::new("/d"), 7, 42, "swap");
        assert_eq!(
            swap,
            PathBuf::from("/d/00000000000000000007-00000000000000000042.log.swap")
        );
        let name = swap.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(parse_replacement_name(name, "swap"), Some((7, 42)));
        assert_eq!(parse_replacement_name(name, "cleaned"), None);
        for bad in [
            "00000000000000000042-00000000000000000007.log.swap",
            "00000000000000000007.log.swap",
            "0000000000000000000x-00000000000000000042.log.swap",
            "00000000000000000007-00000000000000000042.swap",
        ] {
            assert_eq!(parse_replacement_name(bad, "swap"), None, "{bad}");
        }
    }
}
