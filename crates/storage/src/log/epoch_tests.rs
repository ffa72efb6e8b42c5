//! Leader epochs, follower appends and the high watermark of a log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use vltava_protocol::batch::{parse_header, set_base_offset_and_epoch, verify};

use super::*;
use crate::epoch::LEADER_EPOCH_CHECKPOINT_FILE;
use crate::manager::{LogManager, REPLICATION_CHECKPOINT_FILE};
use crate::segment::segment_file;
use crate::simfs::{CrashMode, SimFs};
use crate::testutil::{Spec, TestBatch, durable_dir};

type TestResult = Result<(), StorageError>;

const NOW: i64 = 1_700_000_000_000;

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn e(epoch: i32, start_offset: u64) -> EpochEntry {
    EpochEntry {
        epoch,
        start_offset,
    }
}

/// A batch as a leader stored it: `records` records at `base`, stamped with `epoch`.
fn leader_batch(records: usize, base: u64, epoch: i32) -> TestBatch {
    let (_, b) = Spec::plain(records, 10).build();
    let mut v = b.to_vec();
    set_base_offset_and_epoch(&mut v, base as i64, epoch);
    let h = parse_header(&v).expect("header");
    (h, Bytes::from(v))
}

/// (base offset, records, leader epoch) of a batch in a leader's log.
type BatchSpec = (u64, usize, i32);

/// Batches of the leader's log at the given specs.
fn leader_batches(specs: &[BatchSpec]) -> Vec<TestBatch> {
    specs
        .iter()
        .map(|&(base, records, epoch)| leader_batch(records, base, epoch))
        .collect()
}

/// Every batch the log serves, as stored.
fn served(log: &Log) -> Result<Vec<Vec<u8>>, StorageError> {
    let s = log.read(log.log_start_offset(), usize::MAX, u64::MAX, true)?;
    let mut out = Vec::new();
    let mut rest = &s.bytes[..];
    while !rest.is_empty() {
        let h = verify(rest).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let (b, r) = rest.split_at(h.total_len());
        out.push(b.to_vec());
        rest = r;
    }
    Ok(out)
}

fn bytes_of(batches: &[TestBatch]) -> Vec<Vec<u8>> {
    batches.iter().map(|(_, b)| b.to_vec()).collect()
}

fn append(log: &mut Log, records: usize, epoch: i32) -> Result<AppendInfo, StorageError> {
    log.append(&[Spec::plain(records, 10).build()], epoch, NOW)
}

#[test]
fn leader_appends_write_each_epoch_start_before_its_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(0), None);
    append(&mut log, 3, 1)?;
    append(&mut log, 2, 1)?;
    append(&mut log, 4, 3)?;
    // Not above the latest: ignored.
    append(&mut log, 1, 2)?;
    append(&mut log, 1, -1)?;
    assert_eq!(log.epoch_entries(), [e(1, 0), e(3, 5)]);
    assert_eq!(log.latest_epoch(), Some(3));
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 5)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 5)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 11)));
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 0)));
    assert_eq!(log.end_offset_for_epoch(4), None);
    assert_eq!(log.epoch_for_offset(4), Some(1));
    assert_eq!(log.epoch_for_offset(5), Some(3));
    // Written with the appends, not with the next flush: recovery checks the epochs of
    // unflushed batches against it.
    let file = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    assert_eq!(std::fs::read_to_string(&file)?, "0\n2\n1 0\n3 5\n");
    log.close()?;
    let log = Log::open(dir.path(), cfg(1 << 20), CLEAN_RECOVERY_POINT, NOW)?;
    assert_eq!(log.epoch_entries(), [e(1, 0), e(3, 5)]);
    Ok(())
}

#[test]
fn a_missing_corrupt_or_partial_file_is_rebuilt_from_the_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(300), 0, NOW)?;
    for epoch in [0, 0, 2, 2, 2, 5, 7, 7] {
        append(&mut log, 2, epoch)?;
    }
    assert!(log.segment_count() > 2, "epochs span segments");
    let want = vec![e(0, 0), e(2, 4), e(5, 10), e(7, 12)];
    assert_eq!(log.epoch_entries(), want);
    log.close()?;
    let file = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    let garbage: [&[u8]; 4] = [
        b"",
        b"0\n4\n0 0\n2 4\n",
        b"0\n1\nnot numbers\n",
        b"\xff\x00",
    ];
    for contents in garbage.into_iter().map(Some).chain([None]) {
        match contents {
            Some(c) => std::fs::write(&file, c)?,
            None => std::fs::remove_file(&file)?,
        }
        // Both after a clean stop (headers only) and with full recovery.
        for rp in [CLEAN_RECOVERY_POINT, 0] {
            let log = Log::open(dir.path(), cfg(300), rp, NOW)?;
            assert_eq!(log.epoch_entries(), want, "{contents:?}");
            drop(log);
            assert_eq!(
                std::fs::read_to_string(&file)?,
                epoch::render(&want),
                "rewritten"
            );
            std::fs::write(&file, contents.unwrap_or(b"junk"))?;
        }
    }
    // Entries past the log end (records a crash took) are dropped.
    std::fs::write(&file, "0\n5\n0 0\n2 4\n5 10\n7 12\n9 500\n")?;
    let log = Log::open(dir.path(), cfg(300), 0, NOW)?;
    assert_eq!(log.epoch_entries(), want);
    drop(log);
    // A file behind the flushed records (written by a build that wrote epoch starts after
    // their records) is completed from them.
    std::fs::write(&file, "0\n2\n0 0\n2 4\n")?;
    let log = Log::open(dir.path(), cfg(300), CLEAN_RECOVERY_POINT, NOW)?;
    assert_eq!(log.epoch_entries(), want);
    drop(log);
    // Past the recovery point it is the authority: a batch of an epoch it does not list there
    // can only be a torn header (partitionLeaderEpoch lies outside the CRC), and the log ends
    // before it.
    std::fs::write(&file, "0\n2\n0 0\n2 4\n")?;
    let log = Log::open(dir.path(), cfg(300), 8, NOW)?;
    assert_eq!(log.epoch_entries(), [e(0, 0), e(2, 4)]);
    assert_eq!(log.log_end_offset(), 10);
    Ok(())
}

/// The file positions of the batches of a one-segment log at `dir`.
fn batch_positions(dir: &Path) -> Result<Vec<usize>, StorageError> {
    let bytes = std::fs::read(segment_file(dir, 0, "log"))?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + HEADER_LEN <= bytes.len() {
        let h = parse_header(&bytes[pos..pos + HEADER_LEN])
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        out.push(pos);
        pos += h.total_len();
    }
    Ok(out)
}

/// partitionLeaderEpoch is bytes 12..16 of a batch, outside the CRC (which covers attributes
/// on): a torn write that flips one of its bits leaves a batch whose CRC still checks.
fn flip_epoch_bit(dir: &Path, batch_pos: usize, bit: u32) -> Result<(), StorageError> {
    let path = segment_file(dir, 0, "log");
    let mut bytes = std::fs::read(&path)?;
    let at = batch_pos + 12 + (3 - (bit / 8) as usize);
    bytes[at] ^= 1 << (bit % 8);
    verify(&bytes[batch_pos..]).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    std::fs::write(&path, bytes)?;
    Ok(())
}

#[test]
fn a_torn_leader_epoch_past_the_recovery_point_ends_the_log() -> TestResult {
    // Epochs 1, 1, 3, 3, 3 (two records each): batch 2 starts epoch 3 at offset 4.
    let build = |dir: &Path| -> TestResult {
        let mut log = Log::open(dir, cfg(1 << 20), 0, NOW)?;
        for epoch in [1, 1, 3, 3, 3] {
            append(&mut log, 2, epoch)?;
        }
        drop(log);
        Ok(())
    };
    // (batch, bit, where the log ends after recovery from offset 2): up inside an epoch and
    // at the end, up to a later real epoch, down across an epoch start, down inside one.
    for (batch, bit, end) in [(1, 20, 2), (4, 14, 8), (1, 1, 2), (2, 1, 4), (3, 0, 6)] {
        let dir = tempfile::tempdir()?;
        build(dir.path())?;
        flip_epoch_bit(dir.path(), batch_positions(dir.path())?[batch], bit)?;
        let log = Log::open(dir.path(), cfg(1 << 20), 2, NOW)?;
        assert_eq!(log.log_end_offset(), end, "batch {batch} bit {bit}");
        let want: Vec<EpochEntry> = [e(1, 0), e(3, 4)]
            .into_iter()
            .filter(|x| x.start_offset < end)
            .collect();
        assert_eq!(log.epoch_entries(), want, "batch {batch} bit {bit}");
        drop(log);
        // What recovery kept is consistent: a second recovery changes nothing.
        let log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
        assert_eq!(log.log_end_offset(), end);
    }
    // Flushed data (before the recovery point), which a crash cannot tear, is not
    // second-guessed, and an intact log loses nothing.
    let dir = tempfile::tempdir()?;
    build(dir.path())?;
    let log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    assert_eq!(log.log_end_offset(), 10);
    drop(log);
    flip_epoch_bit(dir.path(), batch_positions(dir.path())?[0], 2)?;
    let log = Log::open(dir.path(), cfg(1 << 20), 2, NOW)?;
    assert_eq!(log.log_end_offset(), 10);
    Ok(())
}

#[test]
fn a_log_without_epochs_writes_no_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    append(&mut log, 1, -1)?;
    log.close()?;
    let log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    assert!(log.epoch_entries().is_empty());
    assert!(!dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE).exists());
    Ok(())
}

#[test]
fn follower_appends_store_the_leaders_bytes_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(700), 0, NOW)?;
    let first = leader_batches(&[(0, 3, 4), (3, 1, 4), (4, 2, 6)]);
    let info = log.append_as_follower(&first, NOW)?;
    assert_eq!((info.first_offset, info.last_offset), (0, 5));
    assert_eq!(log.log_end_offset(), 6);
    let second = leader_batches(&[(6, 5, 6), (11, 2, 9), (13, 1, 9)]);
    log.append_as_follower(&second, NOW)?;
    let all: Vec<TestBatch> = first.iter().chain(&second).cloned().collect();
    assert_eq!(served(&log)?, bytes_of(&all), "read back == input");
    assert_eq!(log.epoch_entries(), [e(4, 0), e(6, 4), e(9, 11)]);
    assert_eq!(log.end_offset_for_epoch(6), Some((6, 11)));
    // Every offset is found through the indexes.
    for (h, b) in &all {
        for offset in [h.base_offset as u64, h.last_offset() as u64] {
            let s = log.read(offset, 1, u64::MAX, true)?;
            assert_eq!(&s.bytes[..], &b[..], "offset {offset}");
        }
    }
    // Producer state comes from the headers, sequences unchecked.
    let idem = Spec::idempotent(2, 77, 0, 40).build();
    let mut v = idem.1.to_vec();
    set_base_offset_and_epoch(&mut v, 14, 9);
    let idem = (parse_header(&v).expect("header"), Bytes::from(v));
    log.append_as_follower(std::slice::from_ref(&idem), NOW)?;
    assert_eq!(
        log.producer_state().get(77).and_then(|p| p.last_sequence()),
        Some(41)
    );
    log.close()?;
    for rp in [0, CLEAN_RECOVERY_POINT] {
        let log = Log::open(dir.path(), cfg(700), rp, NOW)?;
        let mut want = bytes_of(&all);
        want.push(idem.1.to_vec());
        assert_eq!(served(&log)?, want);
        assert_eq!(log.epoch_entries(), [e(4, 0), e(6, 4), e(9, 11)]);
    }
    Ok(())
}

#[test]
fn unexpected_offsets_are_refused_and_nothing_is_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    log.append_as_follower(&leader_batches(&[(0, 3, 1)]), NOW)?;
    log.flush()?;
    let size = std::fs::metadata(segment_file(dir.path(), 0, "log"))?.len();
    let refused: [(&[BatchSpec], u64, u64); 4] = [
        // Below the log end.
        (&[(2, 2, 2)], 3, 2),
        // The second batch overlaps the first.
        (&[(3, 2, 2), (4, 1, 2)], 5, 4),
        // The second batch goes back.
        (&[(10, 2, 2), (5, 1, 2)], 12, 5),
        // A later batch repeats an offset.
        (&[(3, 1, 2), (4, 1, 2), (4, 1, 2)], 5, 4),
    ];
    for (specs, expected, got) in refused {
        let err = log.append_as_follower(&leader_batches(specs), NOW);
        match err {
            Err(StorageError::UnexpectedAppendOffset {
                expected: x,
                got: g,
            }) => assert_eq!((x, g), (expected, got), "{specs:?}"),
            other => panic!("{specs:?}: expected UnexpectedAppendOffset, got {other:?}"),
        }
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(log.epoch_entries(), [e(1, 0)]);
        assert_eq!(
            std::fs::metadata(segment_file(dir.path(), 0, "log"))?.len(),
            size
        );
        assert_eq!(log.segment_count(), 1);
    }
    assert!(!dir.path().join(COMPACTION_METADATA_FILE).exists());
    // A header that does not describe its bytes is refused too.
    let (mut h, b) = leader_batch(1, 3, 2);
    h.base_offset = 4;
    assert!(matches!(
        log.append_as_follower(&[(h, b)], NOW),
        Err(StorageError::InvalidRecord(_))
    ));
    assert!(matches!(
        log.append_as_follower::<Bytes>(&[], NOW),
        Err(StorageError::InvalidRecord(_))
    ));
    assert_eq!(log.log_end_offset(), 3);
    Ok(())
}

/// A compacted leader's log skips offsets; the follower's copy must survive recovery.
#[test]
fn offset_gaps_from_a_compacted_leader_are_recovered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    let mut all = Vec::new();
    // An empty log jumps to the leader's first offset: it now starts there.
    let b = leader_batches(&[(100, 2, 1)]);
    log.append_as_follower(&b, NOW)?;
    all.extend(b);
    assert_eq!(log.log_start_offset(), 100);
    assert_eq!(log.segment_base_offsets(), [100]);
    // Gaps inside the active segment: before the first batch and between batches.
    let b = leader_batches(&[(110, 1, 1), (112, 3, 2), (120, 1, 2)]);
    log.append_as_follower(&b, NOW)?;
    all.extend(b);
    // Fill segments, then a gap across a roll, and one larger than 32-bit relative offsets.
    let mut next = 121;
    while log.segment_count() < 3 {
        let b = leader_batches(&[(next, 4, 3)]);
        log.append_as_follower(&b, NOW)?;
        all.extend(b);
        next += 4;
    }
    let far = next + (1 << 33);
    let b = leader_batches(&[(next + 7, 1, 3), (far, 2, 4)]);
    log.append_as_follower(&b, NOW)?;
    all.extend(b);
    let b = leader_batches(&[(far + 5, 1, 4)]);
    log.append_as_follower(&b, NOW)?;
    all.extend(b);
    assert_eq!(served(&log)?, bytes_of(&all));
    assert_eq!(log.log_end_offset(), far + 6);
    assert!(
        log.segment_base_offsets().contains(&far),
        "{:?}",
        log.segment_base_offsets()
    );
    let entries = log.epoch_entries().to_vec();
    assert_eq!(entries, [e(1, 100), e(2, 112), e(3, 121), e(4, far)]);
    for s in &log.segments {
        assert!(s.indexes_consistent()?, "segment {}", s.base_offset());
    }
    // Full recovery of every segment (the crash case) and a trusting open both keep it all.
    drop(log);
    for rp in [0, CLEAN_RECOVERY_POINT] {
        let log = Log::open_with_log_start(dir.path(), cfg(600), rp, Some(100), NOW)?;
        assert_eq!(served(&log)?, bytes_of(&all), "recovery point {rp}");
        assert_eq!(log.log_end_offset(), far + 6);
        assert_eq!(log.epoch_entries(), entries);
        for s in &log.segments {
            assert!(s.indexes_consistent()?, "segment {}", s.base_offset());
        }
    }
    // After a truncation, a gap beyond 32-bit reach of the active segment rolls a new one.
    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    log.truncate_to(far)?;
    let b = leader_batches(&[(far + 40, 1, 5)]);
    log.append_as_follower(&b, NOW)?;
    drop(log);
    let log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    assert_eq!(log.log_end_offset(), far + 41);
    assert_eq!(log.latest_epoch(), Some(5));
    Ok(())
}

#[test]
fn truncation_updates_the_cache_and_the_high_watermark() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(400), 0, NOW)?;
    for epoch in [1, 1, 2, 2, 4, 4] {
        append(&mut log, 3, epoch)?;
    }
    assert_eq!(log.epoch_entries(), [e(1, 0), e(2, 6), e(4, 12)]);
    assert_eq!(log.set_high_watermark(100), 18, "clamped to the log end");
    assert_eq!(log.set_high_watermark(15), 15);
    // Inside epoch 4's first batch: that batch goes whole, and epoch 4 with it.
    log.truncate_to(13)?;
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(log.epoch_entries(), [e(1, 0), e(2, 6)]);
    assert_eq!(log.high_watermark(), 12);
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 12)));
    // At an epoch's start.
    log.truncate_to(6)?;
    assert_eq!(log.epoch_entries(), [e(1, 0)]);
    // A leader's epoch start at the log end with no record goes even when nothing is cut.
    assert!(log.begin_leader_epoch(3)?);
    assert!(!log.begin_leader_epoch(3)?);
    assert!(!log.begin_leader_epoch(2)?);
    assert_eq!(log.epoch_entries(), [e(1, 0), e(3, 6)]);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 6)));
    log.truncate_to(6)?;
    assert_eq!(log.epoch_entries(), [e(1, 0)]);
    // DeleteRecords moves the first entry up with the log start, and the high watermark.
    log.set_high_watermark(0);
    log.delete_records_before(4)?;
    assert_eq!(log.epoch_entries(), [e(1, 4)]);
    assert_eq!(log.high_watermark(), 4);
    log.close()?;
    let file = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE))?;
    assert_eq!(file, "0\n1\n1 4\n");
    let mut log = Log::open_with_log_start(dir.path(), cfg(400), 0, Some(4), NOW)?;
    assert_eq!(log.epoch_entries(), [e(1, 4)]);
    // Restart past the end (a follower below its leader's log start).
    log.truncate_fully_and_start_at(1000)?;
    assert!(log.epoch_entries().is_empty());
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (1000, 1000, 1000)
    );
    log.append_as_follower(&leader_batches(&[(1000, 2, 8)]), NOW)?;
    assert_eq!(log.epoch_entries(), [e(8, 1000)]);
    log.close()?;
    let log = Log::open_with_log_start(dir.path(), cfg(400), 0, Some(1000), NOW)?;
    assert_eq!(log.log_start_offset(), 1000);
    assert_eq!(log.epoch_entries(), [e(8, 1000)]);
    assert_eq!(log.segment_base_offsets(), [1000]);
    Ok(())
}

#[test]
fn retention_truncates_the_cache_from_the_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            retention_bytes: 1,
            ..cfg(300)
        },
        0,
        NOW,
    )?;
    for epoch in [1, 1, 1, 2, 2, 3, 3, 3] {
        append(&mut log, 2, epoch)?;
    }
    log.set_high_watermark(3);
    assert!(log.apply_retention(NOW)? > 0);
    let start = log.log_start_offset();
    assert!(start > 6, "epoch 1 is gone: {start}");
    assert_eq!(log.epoch_entries()[0].start_offset, start);
    assert_eq!(log.high_watermark(), start);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, start)));
    Ok(())
}

fn sim_dir() -> PathBuf {
    PathBuf::from("/data/t-0")
}

/// Epoch starts survive a power loss once flushed, and those not yet flushed come back from
/// the batches that survived.
#[test]
fn epochs_survive_crashes() -> TestResult {
    for flush_before_crash in [false, true] {
        let fs = SimFs::new();
        durable_dir(&fs, &sim_dir())?;
        let open = |rp| Log::open_with_fs(fs.shared(), &sim_dir(), cfg(1 << 20), rp, None, NOW);
        let mut log = open(0)?;
        append(&mut log, 2, 1)?;
        append(&mut log, 2, 2)?;
        log.flush()?;
        append(&mut log, 2, 5)?;
        log.append_as_follower(&leader_batches(&[(6, 1, 6), (9, 1, 7)]), NOW)?;
        let rp = if flush_before_crash {
            log.flush()?
        } else {
            log.recovery_point()
        };
        fs.crash(CrashMode::ProcessKill);
        drop(log);
        let log = open(rp)?;
        assert_eq!(log.log_end_offset(), 10);
        assert_eq!(
            log.epoch_entries(),
            [e(1, 0), e(2, 2), e(5, 4), e(6, 6), e(7, 9)]
        );
        drop(log);
        fs.crash(CrashMode::PowerLoss);
        let log = open(0)?;
        if flush_before_crash {
            assert_eq!(log.log_end_offset(), 10);
            assert_eq!(log.epoch_entries().len(), 5);
        } else {
            // The reopen made everything durable.
            assert_eq!(log.log_end_offset(), 10);
        }
        drop(log);
    }
    // Unflushed records lost to a power loss take their epochs with them.
    let fs = SimFs::new();
    durable_dir(&fs, &sim_dir())?;
    let mut log = Log::open_with_fs(fs.shared(), &sim_dir(), cfg(1 << 20), 0, None, NOW)?;
    append(&mut log, 2, 1)?;
    log.flush()?;
    append(&mut log, 2, 2)?;
    // Written at once (not derivable): the leader's own epoch start.
    log.begin_leader_epoch(3)?;
    fs.crash(CrashMode::PowerLoss);
    drop(log);
    let log = Log::open_with_fs(fs.shared(), &sim_dir(), cfg(1 << 20), 0, None, NOW)?;
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.epoch_entries(), [e(1, 0)]);
    Ok(())
}

fn manager(fs: &SimFs, dir: &Path) -> Result<LogManager, StorageError> {
    LogManager::open_with_fs(fs.shared(), dir, cfg(1 << 20), NOW)
}

#[test]
fn high_watermarks_survive_a_clean_stop_and_a_crash() -> TestResult {
    let fs = SimFs::new();
    let data = PathBuf::from("/data");
    durable_dir(&fs, &data)?;
    let m = manager(&fs, &data)?;
    let a = m.create_log("a", 0, cfg(1 << 20))?;
    let b = m.create_log("b", 0, cfg(1 << 20))?;
    for _ in 0..5 {
        append(&mut a.lock().expect("lock"), 2, 3)?;
    }
    append(&mut b.lock().expect("lock"), 4, 1)?;
    a.lock().expect("lock").set_high_watermark(6);
    b.lock().expect("lock").set_high_watermark(4);
    m.shutdown_cleanly()?;
    let text = String::from_utf8(fs.read(&data.join(REPLICATION_CHECKPOINT_FILE))?)
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
    assert_eq!(text, "0\n2\na 0 6\nb 0 4\n");
    drop((a, b, m));
    let m = manager(&fs, &data)?;
    let a = m.get("a", 0).ok_or(StorageError::Corrupt("a".into()))?;
    assert_eq!(a.lock().expect("lock").high_watermark(), 6);
    assert_eq!(a.lock().expect("lock").epoch_entries(), [e(3, 0)]);
    // Crash: the last checkpoint's value, clamped to what recovery kept.
    a.lock().expect("lock").set_high_watermark(8);
    m.checkpoint()?;
    a.lock().expect("lock").truncate_to(7)?;
    drop((a, m));
    fs.crash(CrashMode::PowerLoss);
    let m = manager(&fs, &data)?;
    let a = m.get("a", 0).ok_or(StorageError::Corrupt("a".into()))?;
    let a = a.lock().expect("lock");
    assert!(a.high_watermark() <= a.log_end_offset());
    assert_eq!(a.high_watermark(), 8.min(a.log_end_offset()));
    let b = m.get("b", 0).ok_or(StorageError::Corrupt("b".into()))?;
    assert_eq!(b.lock().expect("lock").high_watermark(), 4);
    Ok(())
}

#[test]
fn without_a_checkpoint_the_high_watermark_is_the_log_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let m = LogManager::open(dir.path(), cfg(1 << 20), NOW)?;
        let a = m.create_log("a", 0, cfg(1 << 20))?;
        let mut a = a.lock().expect("lock");
        append(&mut a, 5, 0)?;
        a.delete_records_before(2)?;
        a.set_high_watermark(5);
    }
    std::fs::remove_file(dir.path().join(REPLICATION_CHECKPOINT_FILE))?;
    let m = LogManager::open(dir.path(), cfg(1 << 20), NOW)?;
    let a = m.get("a", 0).ok_or(StorageError::Corrupt("a".into()))?;
    let a = a.lock().expect("lock");
    assert_eq!(a.high_watermark(), a.log_start_offset());
    Ok(())
}

/// The epoch entries a log must hold, kept by the rules of KIP-101/279 as Kafka applies them,
/// written out plainly here (a list, no shared code with the cache).
#[derive(Debug, Default)]
struct Model {
    /// (epoch, start offset), oldest first.
    entries: Vec<(i32, u64)>,
    /// (base, last) of every batch not truncated away, in offset order.
    batches: Vec<(u64, u64)>,
    log_start: u64,
}

impl Model {
    fn entries(&self) -> Vec<EpochEntry> {
        self.entries
            .iter()
            .map(|&(ep, start)| e(ep, start))
            .collect()
    }

    fn latest_epoch(&self) -> i32 {
        self.entries.last().map_or(-1, |x| x.0)
    }

    /// A batch of `epoch` appended at `base`: a newer epoch starts there.
    fn appended(&mut self, base: u64, last: u64, epoch: i32) {
        self.batches.push((base, last));
        if epoch > self.latest_epoch() {
            self.entries.retain(|x| x.1 < base);
            self.entries.push((epoch, base));
        }
    }

    /// Entries from `end` on go.
    fn cut_end(&mut self, end: u64) {
        self.entries.retain(|x| x.1 < end);
    }

    /// The log now starts at `start`: the epoch in effect there starts there.
    fn cut_start(&mut self, start: u64) {
        if let Some(i) = self.entries.iter().rposition(|x| x.1 <= start) {
            self.entries.drain(..i);
            self.entries[0].1 = start;
        }
    }

    /// KIP-279's answer from the entries.
    fn end_offset_for(&self, requested: i32, log_end: u64) -> Option<(i32, u64)> {
        let latest = self.entries.last()?;
        if requested < 0 {
            return None;
        }
        if requested == latest.0 {
            return Some((requested, log_end));
        }
        let next = self.entries.iter().find(|x| x.0 > requested)?;
        match self.entries.iter().rev().find(|x| x.0 <= requested) {
            Some(floor) => Some((floor.0, next.1)),
            None => Some((requested, next.1)),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Leader append of `records` in a new epoch if `bump`.
    Leader { records: usize, bump: bool },
    /// Follower append of batches (skip before, records, epoch increase).
    Follower(Vec<(u64, usize, i32)>),
    /// Truncate to log end minus this.
    Truncate(u64),
    /// DeleteRecords up to log start plus this (within the log).
    DeleteRecords(u64),
    /// Restart at log end plus this.
    Restart(u64),
    /// Close and reopen; `drop_file` removes the epoch checkpoint first.
    Reopen { drop_file: bool, crash: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..4, proptest::bool::weighted(0.3))
            .prop_map(|(records, bump)| Op::Leader { records, bump }),
        5 => proptest::collection::vec((prop_oneof![3 => Just(0u64), 1 => 1u64..20], 1usize..4, prop_oneof![3 => Just(0i32), 1 => 1i32..3]), 1..4)
            .prop_map(Op::Follower),
        2 => (0u64..12).prop_map(Op::Truncate),
        1 => (0u64..6).prop_map(Op::DeleteRecords),
        1 => prop_oneof![Just(0u64), 1u64..50].prop_map(Op::Restart),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(drop_file, crash)| Op::Reopen { drop_file, crash }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random leader appends at rising epochs, follower appends (with offset gaps and new
    /// epochs), truncations, DeleteRecords, restarts and reopens (with the checkpoint lost, or
    /// after a process kill) keep the cache equal to the model's, and so its KIP-279 answers.
    #[test]
    fn end_offsets_match_a_model(ops in proptest::collection::vec(op(), 1..30)) {
        let fs = SimFs::new();
        durable_dir(&fs, &sim_dir()).expect("dir");
        let shared: Arc<dyn Fs> = fs.shared();
        let open = |start: u64| Log::open_with_fs(Arc::clone(&shared), &sim_dir(), cfg(500), 0, Some(start), NOW);
        let mut log = open(0).expect("open");
        let mut model = Model::default();
        let mut leader_epoch = 0;
        for op in ops {
            match op {
                Op::Leader { records, bump } => {
                    leader_epoch = leader_epoch.max(model.latest_epoch()) + i32::from(bump);
                    let info = append(&mut log, records, leader_epoch).expect("append");
                    model.appended(info.first_offset, info.last_offset, leader_epoch);
                }
                Op::Follower(specs) => {
                    let before = log.log_end_offset();
                    let restarts = log.size_bytes() == 0 && log.segment_count() == 1;
                    let mut next = before;
                    // Epochs along a log never go down, even below its start.
                    let mut epoch = model.latest_epoch().max(leader_epoch);
                    let mut batches = Vec::new();
                    for (skip, records, bump) in specs {
                        let base = next + skip;
                        epoch += bump;
                        batches.push((leader_batch(records, base, epoch), epoch));
                        next = base + records as u64;
                    }
                    leader_epoch = epoch;
                    let plain: Vec<TestBatch> = batches.iter().map(|(b, _)| b.clone()).collect();
                    log.append_as_follower(&plain, NOW).expect("follower append");
                    let first = plain[0].0.base_offset as u64;
                    for ((h, _), epoch) in &batches {
                        model.appended(h.base_offset as u64, h.last_offset() as u64, *epoch);
                    }
                    if restarts && first > before {
                        // The empty log now starts at the leader's first offset.
                        model.log_start = first;
                        model.cut_start(first);
                    }
                }
                Op::Truncate(back) => {
                    let end = log.log_end_offset();
                    let to = end.saturating_sub(back).max(log.log_start_offset());
                    log.truncate_to(to).expect("truncate");
                    if to >= end {
                        model.cut_end(end);
                    } else {
                        model.batches.retain(|b| b.1 < to);
                        model.cut_end(to);
                        model.cut_end(log.log_end_offset());
                    }
                    model.log_start = model.log_start.min(log.log_end_offset());
                }
                Op::DeleteRecords(ahead) => {
                    let to = (log.log_start_offset() + ahead).min(log.log_end_offset());
                    log.delete_records_before(to).expect("delete records");
                    if to > model.log_start {
                        model.log_start = to;
                        model.cut_start(to);
                    }
                }
                Op::Restart(ahead) => {
                    let at = log.log_end_offset() + ahead;
                    log.truncate_fully_and_start_at(at).expect("restart");
                    model.batches.clear();
                    model.entries.clear();
                    model.log_start = at;
                }
                Op::Reopen { drop_file, crash } => {
                    let start = log.log_start_offset();
                    if crash {
                        fs.crash(CrashMode::ProcessKill);
                        drop(log);
                    } else {
                        log.close().expect("close");
                    }
                    if drop_file {
                        let _ = fs.remove_file(&sim_dir().join(LEADER_EPOCH_CHECKPOINT_FILE));
                    }
                    // What the file held (epoch starts since the last flush are not in it).
                    model.entries = fs
                        .read(&sim_dir().join(LEADER_EPOCH_CHECKPOINT_FILE))
                        .ok()
                        .and_then(|b| epoch::parse(&b))
                        .map(|v| v.iter().map(|x| (x.epoch, x.start_offset)).collect())
                        .unwrap_or_default();
                    log = open(start).expect("reopen");
                    // Batches on disk (below the log start too) of epochs newer than the
                    // file's latest start them.
                    for seg in &log.segments {
                        seg.for_each_header(|h| {
                            if h.partition_leader_epoch > model.latest_epoch() {
                                let base = h.base_offset as u64;
                                model.entries.retain(|x| x.1 < base);
                                model.entries.push((h.partition_leader_epoch, base));
                            }
                        }).expect("headers");
                    }
                    model.cut_end(log.log_end_offset());
                    model.cut_start(model.log_start);
                }
            }
            prop_assert_eq!(log.log_start_offset(), model.log_start);
            let log_end = log.log_end_offset();
            // A truncation that empties a segment based in a gap leaves the log end at that
            // base, past the last record: offsets in a gap name no record either way.
            let model_end = model.batches.last().map_or(model.log_start, |b| b.1 + 1);
            prop_assert!(log_end >= model_end, "log end {} below {}", log_end, model_end);
            let want = model.entries();
            prop_assert_eq!(log.epoch_entries(), want.as_slice());
            for requested in -1..=model.latest_epoch() + 2 {
                prop_assert_eq!(
                    log.end_offset_for_epoch(requested),
                    model.end_offset_for(requested, log_end),
                    "epoch {}", requested
                );
            }
        }
    }
}

#[test]
fn a_range_read_before_a_truncation_never_yields_the_records_appended_after_it() -> TestResult {
    // Small segments: the first two batches share one, later batches roll.
    for (specs, cut) in [
        // Cut inside the active segment, which keeps its first batch.
        (vec![(0, 5, 1), (5, 5, 1)], 5),
        // Cut at the base of a later segment, which goes.
        (vec![(0, 20, 1), (20, 20, 1), (40, 20, 1)], 40),
        // Cut inside an earlier segment: the later one goes, the earlier one is cut.
        (vec![(0, 5, 1), (5, 5, 1), (10, 20, 1), (30, 20, 1)], 5),
    ] {
        let dir = tempfile::tempdir()?;
        let mut log = Log::open(dir.path(), cfg(500), 0, NOW)?;
        log.append_as_follower(&leader_batches(&specs), NOW)?;
        let before = log.read_regions(cut, usize::MAX, u64::MAX, true)?;
        assert!(!before.regions.is_empty());
        log.truncate_to(cut)?;
        // The new leader's records at the same offsets, in another epoch: bytes that differ.
        let new = leader_batches(&[(cut, 3, 2), (cut + 3, 3, 2)]);
        log.append_as_follower(&new, NOW)?;
        for r in &before.regions {
            let mut out = Vec::new();
            assert!(
                r.read_into(&mut out).is_err(),
                "cut at {cut}: a range read before the truncation still reads {} bytes",
                out.len()
            );
        }
        let now_served = served(&log)?;
        assert_eq!(
            &now_served[now_served.len() - 2..],
            &bytes_of(&new)[..],
            "cut at {cut}"
        );
        log.close()?;
        let log = Log::open(dir.path(), cfg(500), 0, NOW)?;
        assert_eq!(log.log_end_offset(), cut + 6, "cut at {cut}: reopened");
        assert_eq!(served(&log)?, now_served, "cut at {cut}: reopened");
    }
    Ok(())
}
