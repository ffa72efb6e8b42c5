//! Sparse offset and time indexes of one segment, in Kafka's file formats.
//!
//! Entries live in memory for lookups; the files are only brought up to date by `persist`
//! (at flush, roll and close). That keeps appends to one write call, and it is safe because
//! recovery rebuilds the indexes of every segment at or after the recovery point, and a flush
//! persists indexes before it moves the recovery point.

use std::io;
use std::path::Path;

use crate::fileio::{DataFile, Fs};

/// One fixed-size index entry.
pub(crate) trait IndexEntry: Copy {
    /// Bytes per entry on disk.
    const SIZE: usize;
    /// Decodes an entry from exactly `SIZE` bytes.
    fn decode(b: &[u8]) -> Self;
    /// Appends the `SIZE`-byte encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
}

/// `.index` entry: the batch whose last offset is `base + rel_offset` starts at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) rel_offset: u32,
    pub(crate) position: u32,
}

/// `.timeindex` entry: the segment's largest timestamp up to offset `base + rel_offset` is
/// `timestamp`, first reached by the batch holding that offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) rel_offset: u32,
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: be_u32(&b[0..4]),
            position: be_u32(&b[4..8]),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            rel_offset: be_u32(&b[8..12]),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
    }
}

/// An index file and its entries. The file always holds exactly the first `persisted` entries.
#[derive(Debug)]
pub(crate) struct Index<E> {
    file: DataFile,
    entries: Vec<E>,
    persisted: usize,
}

impl<E: IndexEntry> Index<E> {
    /// Creates an empty index, discarding any old file at `path`.
    pub(crate) fn create(fs: &dyn Fs, path: &Path) -> io::Result<Index<E>> {
        Ok(Index {
            file: DataFile::create_empty(fs, path)?,
            entries: Vec::new(),
            persisted: 0,
        })
    }

    /// Opens the file at `path` and decodes it; the entries are `None` if the length is not a
    /// whole number of entries or exceeds `max_len`. Callers check the entries before
    /// trusting them.
    pub(crate) fn open(
        fs: &dyn Fs,
        path: &Path,
        max_len: u64,
    ) -> io::Result<(DataFile, Option<Vec<E>>)> {
        let file = DataFile::open(fs, path)?;
        let len = file.len()?;
        if len % E::SIZE as u64 != 0 || len > max_len.min(u64::from(u32::MAX)) {
            return Ok((file, None));
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)?;
        let entries = buf.chunks_exact(E::SIZE).map(E::decode).collect();
        Ok((file, Some(entries)))
    }

    /// Wraps entries that were loaded from `file` and found sane.
    pub(crate) fn from_loaded(file: DataFile, entries: Vec<E>) -> Index<E> {
        let persisted = entries.len();
        Index {
            file,
            entries,
            persisted,
        }
    }

    /// Replaces file and memory with `entries` (a rebuild).
    pub(crate) fn rebuild(file: DataFile, entries: Vec<E>) -> io::Result<Index<E>> {
        let mut index = Index {
            file,
            entries,
            persisted: 0,
        };
        index.file.truncate(0)?;
        index.write_unpersisted()?;
        Ok(index)
    }

    /// All entries, in order.
    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    /// True if the file holds exactly the encoding of the persisted entries.
    #[cfg(test)]
    pub(crate) fn file_matches(&self) -> io::Result<bool> {
        let mut expected = Vec::new();
        for e in &self.entries[..self.persisted] {
            e.encode(&mut expected);
        }
        let mut actual = vec![0u8; usize::try_from(self.file.len()?).unwrap_or(usize::MAX)];
        self.file.read_exact_at(&mut actual, 0)?;
        Ok(actual == expected)
    }

    /// Last entry, if any.
    pub(crate) fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    /// Adds an entry in memory; it reaches the file at the next `persist`.
    pub(crate) fn push(&mut self, e: E) {
        self.entries.push(e);
    }

    /// Keeps only the first `len` entries, in memory and on disk.
    pub(crate) fn truncate(&mut self, len: usize) -> io::Result<()> {
        if len >= self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(len);
        if self.persisted > len {
            self.file.truncate((len * E::SIZE) as u64)?;
            self.persisted = len;
        }
        Ok(())
    }

    /// True if some entries exist only in memory.
    pub(crate) fn has_unpersisted(&self) -> bool {
        self.persisted < self.entries.len()
    }

    /// Writes entries not yet in the file (no fsync).
    pub(crate) fn write_unpersisted(&mut self) -> io::Result<()> {
        if !self.has_unpersisted() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * E::SIZE);
        for e in &self.entries[self.persisted..] {
            e.encode(&mut buf);
        }
        if let Err(e) = self.file.append(&buf) {
            // A short write would leave a torn entry that shifts every later one.
            let _ = self.file.truncate((self.persisted * E::SIZE) as u64);
            return Err(e);
        }
        self.persisted = self.entries.len();
        Ok(())
    }

    /// The underlying file, for syncing.
    pub(crate) fn file(&self) -> &DataFile {
        &self.file
    }
}

impl Index<OffsetEntry> {
    /// Entry with the largest relative offset `<= rel`, if any.
    pub(crate) fn lookup(&self, rel: u32) -> Option<OffsetEntry> {
        let i = self.entries.partition_point(|e| e.rel_offset <= rel);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

impl Index<TimeEntry> {
    /// Entry with the largest timestamp `<= ts`, if any.
    pub(crate) fn lookup(&self, ts: i64) -> Option<TimeEntry> {
        let i = self.entries.partition_point(|e| e.timestamp <= ts);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

/// Structural checks that need no log data: offsets and positions strictly increasing, every
/// position inside the log file, every offset inside the segment.
pub(crate) fn offset_entries_sane(entries: &[OffsetEntry], log_size: u64, max_rel: u32) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position)
        && entries
            .iter()
            .all(|e| u64::from(e.position) < log_size && e.rel_offset <= max_rel)
}

/// Structural checks for a time index: timestamps and offsets never decrease, offsets inside
/// the segment, and no timestamp above the segment's largest.
pub(crate) fn time_entries_sane(entries: &[TimeEntry], max_rel: u32, max_timestamp: i64) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].timestamp <= w[1].timestamp && w[0].rel_offset <= w[1].rel_offset)
        && entries
            .iter()
            .all(|e| e.rel_offset <= max_rel && e.timestamp <= max_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileio::RealFs;

    fn offset_index(entries: &[(u32, u32)]) -> io::Result<(tempfile::TempDir, Index<OffsetEntry>)> {
        let dir = tempfile::tempdir()?;
        let mut idx = Index::<OffsetEntry>::create(&RealFs, &dir.path().join("0.index"))?;
        for &(rel_offset, position) in entries {
            idx.push(OffsetEntry {
                rel_offset,
                position,
            });
        }
        Ok((dir, idx))
    }

    #[test]
    fn offset_lookup_exact_between_and_before_first() -> io::Result<()> {
        let (_d, idx) = offset_index(&[(10, 4100), (25, 8300), (40, 12500)])?;
        assert_eq!(idx.lookup(9), None, "before the first entry");
        assert_eq!(idx.lookup(10).map(|e| e.position), Some(4100), "exact");
        assert_eq!(idx.lookup(24).map(|e| e.position), Some(4100), "between");
        assert_eq!(idx.lookup(25).map(|e| e.position), Some(8300));
        assert_eq!(
            idx.lookup(1000).map(|e| e.position),
            Some(12500),
            "after last"
        );
        Ok(())
    }

    #[test]
    fn time_lookup() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut idx = Index::<TimeEntry>::create(&RealFs, &dir.path().join("0.timeindex"))?;
        for (timestamp, rel_offset) in [(100, 3), (200, 9), (300, 20)] {
            idx.push(TimeEntry {
                timestamp,
                rel_offset,
            });
        }
        assert_eq!(idx.lookup(99), None);
        assert_eq!(idx.lookup(100).map(|e| e.rel_offset), Some(3));
        assert_eq!(idx.lookup(250).map(|e| e.rel_offset), Some(9));
        assert_eq!(idx.lookup(i64::MAX).map(|e| e.rel_offset), Some(20));
        Ok(())
    }

    #[test]
    fn persist_truncate_and_reload() -> io::Result<()> {
        let (dir, mut idx) = offset_index(&[(1, 0), (2, 100), (3, 200)])?;
        idx.write_unpersisted()?;
        idx.push(OffsetEntry {
            rel_offset: 4,
            position: 300,
        });
        idx.truncate(2)?;
        assert!(!idx.has_unpersisted());
        let (_, loaded) =
            Index::<OffsetEntry>::open(&RealFs, &dir.path().join("0.index"), 1 << 20)?;
        assert_eq!(loaded.as_deref(), Some(idx.entries()));
        Ok(())
    }

    #[test]
    fn torn_index_file_is_not_decoded() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("0.index");
        std::fs::write(&p, [0u8; 13])?;
        let (_, loaded) = Index::<OffsetEntry>::open(&RealFs, &p, 1 << 20)?;
        assert!(loaded.is_none());
        Ok(())
    }

    #[test]
    fn sanity_checks() {
        let e = |rel_offset, position| OffsetEntry {
            rel_offset,
            position,
        };
        assert!(offset_entries_sane(&[e(1, 0), e(5, 100)], 200, 10));
        assert!(!offset_entries_sane(&[e(5, 0), e(1, 100)], 200, 10));
        assert!(!offset_entries_sane(&[e(1, 0), e(5, 300)], 200, 10));
        assert!(!offset_entries_sane(&[e(1, 0), e(50, 100)], 200, 10));
        let t = |timestamp, rel_offset| TimeEntry {
            timestamp,
            rel_offset,
        };
        assert!(time_entries_sane(&[t(1, 0), t(5, 3)], 10, 5));
        assert!(!time_entries_sane(&[t(5, 0), t(1, 3)], 10, 5));
        assert!(!time_entries_sane(&[t(1, 0), t(9, 3)], 10, 5));
    }
}
