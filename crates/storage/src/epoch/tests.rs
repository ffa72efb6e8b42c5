//! The cases of Kafka's `LeaderEpochFileCacheTest` that apply, and the file format.

use std::path::{Path, PathBuf};

use super::*;
use crate::fileio::RealFs;
use crate::simfs::{Fault, FaultKind, FaultOp, SimFs};

type TestResult = Result<(), StorageError>;

fn e(epoch: i32, start_offset: u64) -> EpochEntry {
    EpochEntry {
        epoch,
        start_offset,
    }
}

fn cache(dir: &Path) -> Result<LeaderEpochCache, StorageError> {
    LeaderEpochCache::load(RealFs::shared(), dir)
}

fn file_text(dir: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT_FILE))
}

#[test]
fn assign_appends_new_epochs_and_writes_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    assert!(c.assign(2, 6)?);
    assert!(c.assign(3, 10)?);
    assert_eq!(c.entries(), [e(2, 6), e(3, 10)]);
    assert_eq!(c.latest_epoch(), Some(3));
    assert_eq!(file_text(dir.path())?, "0\n2\n2 6\n3 10\n");
    // Reloaded as written.
    assert_eq!(cache(dir.path())?.entries(), [e(2, 6), e(3, 10)]);
    Ok(())
}

#[test]
fn same_epoch_at_a_later_offset_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    c.assign(2, 6)?;
    assert!(!c.assign(2, 6)?);
    assert!(!c.assign(2, 9)?);
    assert_eq!(c.entries(), [e(2, 6)]);
    // The same epoch at an earlier offset replaces the entry.
    assert!(c.assign(2, 4)?);
    assert_eq!(c.entries(), [e(2, 4)]);
    Ok(())
}

#[test]
fn assign_removes_entries_with_larger_epochs_or_later_offsets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    c.assign(2, 6)?;
    c.assign(3, 8)?;
    c.assign(4, 11)?;
    // A larger epoch at an offset below existing entries: those entries go.
    assert!(c.assign(5, 9)?);
    assert_eq!(c.entries(), [e(2, 6), e(3, 8), e(5, 9)]);
    // A smaller epoch than the latest: every entry with an epoch at or above it goes.
    assert!(c.assign(3, 10)?);
    assert_eq!(c.entries(), [e(2, 6), e(3, 10)]);
    // A larger epoch at the same offset as the latest replaces it.
    assert!(c.assign(7, 10)?);
    assert_eq!(c.entries(), [e(2, 6), e(7, 10)]);
    assert_eq!(cache(dir.path())?.entries(), c.entries());
    Ok(())
}

#[test]
fn negative_epochs_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    assert!(matches!(
        c.assign(-1, 0),
        Err(StorageError::InvalidEpochEntry { epoch: -1, .. })
    ));
    assert!(c.entries().is_empty());
    assert!(!dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE).exists());
    Ok(())
}

#[test]
fn end_offset_for_follows_kip_279() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    // Empty cache: undefined, whatever is asked.
    assert_eq!(c.end_offset_for(0, 0), None);
    assert_eq!(c.end_offset_for(-1, 0), None);
    c.assign(2, 6)?;
    c.assign(4, 11)?;
    c.assign(7, 20)?;
    let leo = 25;
    // The latest epoch ends at the log end.
    assert_eq!(c.end_offset_for(7, leo), Some((7, leo)));
    // An epoch ends where the next begins.
    assert_eq!(c.end_offset_for(2, leo), Some((2, 11)));
    assert_eq!(c.end_offset_for(4, leo), Some((4, 20)));
    // An epoch between entries: the largest one below it, ending where the next begins.
    assert_eq!(c.end_offset_for(3, leo), Some((2, 11)));
    assert_eq!(c.end_offset_for(5, leo), Some((4, 20)));
    assert_eq!(c.end_offset_for(6, leo), Some((4, 20)));
    // Below the first epoch: the requested epoch, ending at the first retained offset
    // (KAFKA-7415).
    assert_eq!(c.end_offset_for(1, leo), Some((1, 6)));
    assert_eq!(c.end_offset_for(0, leo), Some((0, 6)));
    // Undefined epoch, or one above every epoch known: undefined.
    assert_eq!(c.end_offset_for(-1, leo), None);
    assert_eq!(c.end_offset_for(8, leo), None);
    Ok(())
}

#[test]
fn epoch_for_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    assert_eq!(c.epoch_for_offset(0), None);
    c.assign(2, 6)?;
    c.assign(4, 11)?;
    assert_eq!(c.epoch_for_offset(5), None);
    assert_eq!(c.epoch_for_offset(6), Some(2));
    assert_eq!(c.epoch_for_offset(10), Some(2));
    assert_eq!(c.epoch_for_offset(11), Some(4));
    assert_eq!(c.epoch_for_offset(1000), Some(4));
    Ok(())
}

#[test]
fn truncate_from_end_removes_entries_at_or_after_the_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    c.assign(2, 6)?;
    c.assign(3, 8)?;
    c.assign(4, 11)?;
    assert!(!c.truncate_from_end(12)?);
    assert_eq!(c.entries().len(), 3);
    assert!(c.truncate_from_end(11)?);
    assert_eq!(c.entries(), [e(2, 6), e(3, 8)]);
    assert!(c.truncate_from_end(7)?);
    assert_eq!(c.entries(), [e(2, 6)]);
    assert!(c.truncate_from_end(0)?);
    assert!(c.entries().is_empty());
    assert_eq!(file_text(dir.path())?, "0\n0\n");
    Ok(())
}

#[test]
fn truncate_from_start_moves_the_first_entry_up() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    c.assign(2, 6)?;
    c.assign(3, 8)?;
    c.assign(4, 11)?;
    // Before the first entry: nothing to do.
    assert!(!c.truncate_from_start(6)?);
    assert!(!c.truncate_from_start(3)?);
    // Inside epoch 3: epoch 2 goes, epoch 3 starts at the new log start.
    assert!(c.truncate_from_start(9)?);
    assert_eq!(c.entries(), [e(3, 9), e(4, 11)]);
    // Exactly at an entry's start: that entry stays, earlier ones go.
    assert!(c.truncate_from_start(11)?);
    assert_eq!(c.entries(), [e(4, 11)]);
    // Past the last entry.
    assert!(c.truncate_from_start(30)?);
    assert_eq!(c.entries(), [e(4, 30)]);
    assert_eq!(cache(dir.path())?.entries(), [e(4, 30)]);
    Ok(())
}

#[test]
fn clear_empties_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = cache(dir.path())?;
    assert!(!c.clear()?);
    c.assign(1, 0)?;
    assert!(c.clear()?);
    assert!(cache(dir.path())?.entries().is_empty());
    Ok(())
}

#[test]
fn file_format_round_trips_and_rejects_garbage() {
    let entries = vec![e(0, 0), e(3, 17), e(9, 1 << 40)];
    let text = render(&entries);
    assert_eq!(text, "0\n3\n0 0\n3 17\n9 1099511627776\n");
    assert_eq!(parse(text.as_bytes()), Some(entries));
    assert_eq!(parse(b"0\n0\n"), Some(vec![]));
    for bad in [
        &b""[..],
        b"1\n0\n",
        b"0\n2\n1 0\n",
        b"0\n1\n1\n",
        b"0\n1\nx 0\n",
        b"0\n1\n-1 0\n",
        b"0\n1\n1 -3\n",
        b"0\n1\n1 3 4\n",
        b"0\n1\n1 3\n2 4\n",
        b"0\n99999999999999999999\n",
        b"\xff\xfe",
    ] {
        assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn unreadable_or_non_monotonic_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    std::fs::write(&p, b"0\n3\n1 0\n2 5")?;
    assert_eq!(read_file(&RealFs, dir.path())?, EpochFile::Unreadable);
    assert!(cache(dir.path())?.entries().is_empty());
    // Kafka reads entries through assign, so entries out of order are resolved the same way.
    std::fs::write(&p, b"0\n3\n1 0\n3 10\n2 5\n")?;
    assert_eq!(cache(dir.path())?.entries(), [e(1, 0), e(2, 5)]);
    Ok(())
}

fn sim_dir() -> PathBuf {
    PathBuf::from("/data/t-0")
}

#[test]
fn a_failed_write_leaves_the_cache_unchanged() -> TestResult {
    let fs = SimFs::new();
    crate::testutil::durable_dir(&fs, &sim_dir())?;
    let mut c = LeaderEpochCache::load(fs.shared(), &sim_dir())?;
    c.assign(1, 0)?;
    fs.inject(Fault::new(FaultKind::Io, &[FaultOp::Write]).on_paths(LEADER_EPOCH_CHECKPOINT_FILE));
    assert!(c.assign(2, 10).is_err());
    assert!(c.truncate_from_end(0).is_err());
    assert_eq!(c.entries(), [e(1, 0)]);
    fs.clear_faults();
    assert!(c.assign(2, 10)?);
    assert_eq!(
        LeaderEpochCache::load(fs.shared(), &sim_dir())?.entries(),
        [e(1, 0), e(2, 10)]
    );
    Ok(())
}
