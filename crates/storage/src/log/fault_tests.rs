//! Crashes, torn writes and I/O errors under a log, on the simulated file system.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vltava_protocol::batch::{set_base_offset_and_epoch, verify};

use super::*;
use crate::segment::segment_file;
use crate::simfs::{CrashMode, Fault, FaultKind, FaultOp, SimFs};
use crate::testutil::{Spec, TestBatch, durable_dir};

type TestResult = Result<(), StorageError>;
type Written = Vec<(u64, Vec<u8>)>;

const NOW: i64 = 1_700_000_000_000;
const EPOCH: i32 = 3;

fn dir() -> PathBuf {
    PathBuf::from("/data/t-0")
}

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 150,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// A simulated file system holding a durable, empty partition directory.
fn sim() -> std::io::Result<SimFs> {
    let fs = SimFs::new();
    durable_dir(&fs, &dir())?;
    Ok(fs)
}

fn open(fs: &SimFs, config: LogConfig, recovery_point: u64) -> Result<Log, StorageError> {
    Log::open_with_fs(fs.shared(), &dir(), config, recovery_point, None, NOW)
}

fn stored(b: &TestBatch, base: u64) -> Vec<u8> {
    let mut v = b.1.to_vec();
    set_base_offset_and_epoch(&mut v, base as i64, EPOCH);
    v
}

/// (base offset, bytes) of every batch the log serves, each CRC-checked.
fn served(log: &Log) -> Result<Written, StorageError> {
    let s = log.read(log.log_start_offset(), usize::MAX, u64::MAX, true)?;
    let mut out = Vec::new();
    let mut rest = &s.bytes[..];
    while !rest.is_empty() {
        let h = verify(rest).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let (b, r) = rest.split_at(h.total_len());
        out.push((h.base_offset as u64, b.to_vec()));
        rest = r;
    }
    Ok(out)
}

/// `partitionLeaderEpoch` (bytes 12..16) lies outside the CRC in Kafka's format: a bit flipped
/// there by a torn sector is undetectable, so comparisons after a crash leave it out.
fn mask(batches: &[(u64, Vec<u8>)]) -> Written {
    batches
        .iter()
        .map(|(o, b)| (*o, [&b[..12], &b[16..]].concat()))
        .collect()
}

fn end_of(batches: &[(u64, Vec<u8>)]) -> u64 {
    batches.last().map_or(0, |(base, b)| {
        let h = verify(b).map(|h| h.last_offset_delta).unwrap_or(0);
        base + h as u64 + 1
    })
}

/// Everything a reader relies on after recovery: the served batches are exactly a prefix of
/// `written`, each readable through the indexes at every offset it holds, and every segment's
/// indexes and files agree. Returns how many batches survived.
fn check_log(log: &Log, written: &[(u64, Vec<u8>)]) -> Result<usize, StorageError> {
    let got = served(log)?;
    assert!(
        got.len() <= written.len(),
        "{} batches served, {} written",
        got.len(),
        written.len()
    );
    assert_eq!(
        mask(&got),
        mask(&written[..got.len()]),
        "not a prefix of what was written"
    );
    assert_eq!(log.log_end_offset(), end_of(&got));
    for (base, bytes) in &got {
        let last = base + verify(bytes).map_or(0, |h| h.last_offset_delta as u64);
        for offset in [*base, last] {
            let s = log.read(offset, 1, u64::MAX, true)?;
            assert_eq!(&s.bytes[..], &bytes[..], "lookup of offset {offset}");
        }
    }
    for seg in &log.segments {
        assert!(
            seg.indexes_consistent()?,
            "segment {} inconsistent",
            seg.base_offset()
        );
    }
    Ok(got.len())
}

/// Appends `batch` and records it in `written` if it reached the log, even when the call
/// failed afterwards (a flush after the write).
fn append_tracked(
    log: &mut Log,
    batch: &TestBatch,
    written: &mut Written,
) -> Result<AppendInfo, StorageError> {
    let before = log.log_end_offset();
    let result = log.append(std::slice::from_ref(batch), EPOCH, NOW);
    if log.log_end_offset() > before {
        written.push((before, stored(batch, before)));
    }
    result
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Append { records: usize, value_len: usize },
    Flush,
    Roll,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1usize..4, 0usize..160)
            .prop_map(|(records, value_len)| Step::Append { records, value_len }),
        2 => Just(Step::Flush),
        1 => Just(Step::Roll),
    ]
}

fn crash_mode() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        Just(CrashMode::PowerLoss),
        any::<u64>().prop_map(|seed| CrashMode::Random { seed }),
        Just(CrashMode::ProcessKill),
        (0usize..400).prop_map(|keep| CrashMode::TornLastWrite { keep }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// A crash at any point of a stream of appends, rolls and flushes (some automatic, by
    /// `flush.messages`), possibly in the middle of a flush whose fsyncs start failing:
    /// the reopened log is a prefix of what was written, holds at least everything below the
    /// last recovery point, serves only valid batches and has consistent indexes; and it
    /// takes appends again.
    #[test]
    fn crash_anywhere_leaves_a_valid_prefix_with_every_flushed_batch(
        steps in proptest::collection::vec(step(), 1..40),
        crash_at in any::<proptest::sample::Index>(),
        mode in crash_mode(),
        sync_failure_after in proptest::option::of(0u64..12),
        flush_messages in prop_oneof![Just(u64::MAX), 3u64..12],
        segment_bytes in 700u64..2500,
        trust_recovery_point in any::<bool>(),
    ) {
        let fs = sim().expect("sim");
        let config = LogConfig { flush_interval_messages: flush_messages, ..cfg(segment_bytes) };
        let mut log = open(&fs, config.clone(), 0).expect("open");
        if let Some(n) = sync_failure_after {
            fs.inject(Fault::new(FaultKind::Io, &[FaultOp::Sync, FaultOp::SyncDir]).after(n));
        }
        let mut written = Vec::new();
        let mut durable_end = 0;
        for (i, s) in steps[..=crash_at.index(steps.len())].iter().enumerate() {
            let result = match *s {
                Step::Append { records, value_len } => {
                    let b = Spec::plain(records, value_len).at(NOW + i as i64).build();
                    append_tracked(&mut log, &b, &mut written).map(|_| ())
                }
                Step::Flush => log.flush().map(|_| ()),
                Step::Roll => log.roll(),
            };
            durable_end = durable_end.max(log.recovery_point());
            if result.is_err() {
                prop_assert!(log.is_offline(), "only fsyncs fail, and they take the log offline");
                break;
            }
        }
        fs.clear_faults();
        fs.crash(mode);
        drop(log);

        let rp = if trust_recovery_point { durable_end } else { 0 };
        let mut log = open(&fs, config.clone(), rp).expect("reopen after crash");
        let kept = check_log(&log, &written).expect("consistent");
        let kept_end = end_of(&written[..kept]);
        prop_assert!(kept_end >= durable_end, "lost flushed data: {} < {}", kept_end, durable_end);
        match mode {
            CrashMode::ProcessKill => prop_assert_eq!(kept, written.len()),
            CrashMode::TornLastWrite { .. } => prop_assert!(kept + 1 >= written.len()),
            _ => {}
        }

        // The recovered log takes appends, and a clean restart keeps everything.
        written.truncate(kept);
        let b = Spec::plain(2, 30).build();
        append_tracked(&mut log, &b, &mut written).expect("append after recovery");
        let rp = log.flush().expect("flush");
        log.close().expect("close");
        let log = open(&fs, config, rp).expect("clean reopen");
        prop_assert_eq!(check_log(&log, &written).expect("consistent"), written.len());
    }
}

/// The log with its last append torn at every byte: recovery keeps exactly the batches that
/// were written whole and rebuilds the same indexes as a log that never had the rest.
#[test]
fn torn_last_append_at_every_byte_truncates_to_the_last_whole_batch() -> TestResult {
    let first: Vec<TestBatch> = (0..6)
        .map(|i| Spec::plain(2, 90).at(NOW + i).build())
        .collect();
    // The last request carries three batches in one write.
    let last: Vec<TestBatch> = (0..3)
        .map(|i| Spec::plain(1 + i, 40).at(NOW + 10 + i as i64).build())
        .collect();
    let build = |fs: &SimFs, rp_flush: bool| -> Result<(Log, Written), StorageError> {
        let mut log = open(fs, cfg(900), 0)?;
        let mut written = Vec::new();
        for b in &first {
            append_tracked(&mut log, b, &mut written)?;
        }
        if rp_flush {
            log.flush()?;
        }
        Ok((log, written))
    };
    let probe = sim()?;
    let (mut log, mut all) = build(&probe, true)?;
    assert!(log.segment_count() >= 2, "fixture spans segments");
    let info = log.append(&last, EPOCH, NOW)?;
    let mut base = info.first_offset;
    for b in &last {
        all.push((base, stored(b, base)));
        base += b.0.last_offset_delta as u64 + 1;
    }
    let (_, write_len) = probe.last_write().expect("a write");
    let sizes: Vec<usize> = last.iter().map(|b| b.1.len()).collect();
    assert_eq!(
        write_len,
        sizes.iter().sum::<usize>(),
        "one write for the request"
    );

    for keep in 0..=write_len {
        for (flushed, rp) in [(true, u64::MAX), (true, 0), (false, 0)] {
            let fs = sim()?;
            let (mut log, _) = build(&fs, flushed)?;
            log.append(&last, EPOCH, NOW)?;
            fs.crash(CrashMode::TornLastWrite { keep });
            drop(log);
            let mut log = open(&fs, cfg(900), rp)?;
            let whole = sizes
                .iter()
                .scan(0, |acc, s| {
                    *acc += s;
                    Some(*acc)
                })
                .filter(|&end| end <= keep)
                .count();
            let expected = first.len() + whole;
            assert_eq!(check_log(&log, &all)?, expected, "keep {keep}");
            let active = log.segments.len() - 1;
            let seg_base = log.segments[active].base_offset();
            let len = fs.read(&segment_file(&dir(), seg_base, "log"))?.len() as u64;
            assert_eq!(
                len,
                log.segments[active].size(),
                "torn tail cut off the file"
            );
            // Appends continue right after the last whole batch.
            let next = log.append(&first[..1], EPOCH, NOW)?;
            assert_eq!(next.first_offset, end_of(&all[..expected]));
        }
    }
    Ok(())
}

/// Garbage, torn and wrong-length index files are rebuilt, whatever the recovery point.
#[test]
fn corrupt_index_files_are_rebuilt_on_the_simulated_fs() -> TestResult {
    let garbage: [&[u8]; 5] = [
        b"",
        &[0xAB; 13],
        &[0xFF; 16],
        &[0u8; 64],
        &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for g in garbage {
        for rp in [0, u64::MAX] {
            let fs = sim()?;
            let mut log = open(&fs, cfg(1500), 0)?;
            let mut written = Vec::new();
            for i in 0..25 {
                append_tracked(
                    &mut log,
                    &Spec::plain(1, 70).at(NOW + i).build(),
                    &mut written,
                )?;
            }
            let bases = log.segment_base_offsets();
            log.close()?;
            for base in bases {
                fs.put_file(&segment_file(&dir(), base, "index"), g)?;
                fs.put_file(&segment_file(&dir(), base, "timeindex"), g)?;
            }
            let log = open(&fs, cfg(1500), rp)?;
            assert_eq!(check_log(&log, &written)?, written.len());
        }
    }
    Ok(())
}

/// ENOSPC in the middle of an append (after a short write): the error is returned, nothing of
/// the batch is visible or left in the file, and once space is back appends resume.
#[test]
fn enospc_during_append_is_rolled_back_and_appends_resume() -> TestResult {
    for partial in [0, 1, 61, 500] {
        let fs = sim()?;
        let mut log = open(&fs, cfg(1 << 20), 0)?;
        let mut written = Vec::new();
        for _ in 0..3 {
            append_tracked(&mut log, &Spec::plain(2, 50).build(), &mut written)?;
        }
        let (end, size) = (log.log_end_offset(), log.size_bytes());
        fs.inject(
            Fault::new(FaultKind::NoSpace, &[FaultOp::Write])
                .on_paths(".log")
                .partial(partial),
        );
        let big: Vec<TestBatch> = (0..2).map(|_| Spec::plain(3, 200).build()).collect();
        let err = log.append(&big, EPOCH, NOW);
        match err {
            Err(StorageError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::StorageFull),
            other => panic!("expected ENOSPC, got {other:?}"),
        }
        assert!(!log.is_offline());
        assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
        assert_eq!(fs.read(&segment_file(&dir(), 0, "log"))?.len() as u64, size);
        assert_eq!(
            check_log(&log, &written)?,
            written.len(),
            "reads still work"
        );
        assert!(log.append(&big, EPOCH, NOW).is_err(), "still full");

        fs.clear_faults();
        let info = log.append(&big, EPOCH, NOW)?;
        assert_eq!(info.first_offset, end);
        let mut base = end;
        for b in &big {
            written.push((base, stored(b, base)));
            base += 3;
        }
        assert_eq!(check_log(&log, &written)?, written.len());
        let rp = log.flush()?;
        fs.crash(CrashMode::PowerLoss);
        drop(log);
        let log = open(&fs, cfg(1 << 20), rp)?;
        assert_eq!(check_log(&log, &written)?, written.len());
    }
    Ok(())
}

/// A full disk when an append must roll a new segment, or when a flush writes index entries:
/// errors, no damage, and the log carries on once space is back.
#[test]
fn enospc_when_rolling_or_writing_indexes() -> TestResult {
    let fs = sim()?;
    let mut log = open(&fs, cfg(700), 0)?;
    let mut written = Vec::new();
    while log.segment_count() == 1 || log.segments[log.segments.len() - 1].size() < 400 {
        append_tracked(&mut log, &Spec::plain(1, 100).build(), &mut written)?;
    }
    let segments = log.segment_count();
    fs.inject(Fault::new(
        FaultKind::NoSpace,
        &[FaultOp::Metadata, FaultOp::Write],
    ));
    assert!(append_tracked(&mut log, &Spec::plain(1, 300).build(), &mut written).is_err());
    assert!(log.flush().is_err(), "index entries cannot be written");
    assert!(!log.is_offline(), "nothing was lost, nothing to undo");
    assert_eq!(check_log(&log, &written)?, written.len());
    fs.clear_faults();
    append_tracked(&mut log, &Spec::plain(1, 300).build(), &mut written)?;
    assert!(log.segment_count() > segments);
    let rp = log.flush()?;
    fs.crash(CrashMode::PowerLoss);
    drop(log);
    let log = open(&fs, cfg(700), rp)?;
    assert_eq!(check_log(&log, &written)?, written.len());
    Ok(())
}

/// When even the undo of a failed write fails, the log goes offline (writes refused, reads
/// go on); reopening recovers the valid prefix.
#[test]
fn failed_undo_takes_the_log_offline_until_reopened() -> TestResult {
    let fs = sim()?;
    let mut log = open(&fs, cfg(1 << 20), 0)?;
    let mut written = Vec::new();
    for _ in 0..3 {
        append_tracked(&mut log, &Spec::plain(2, 50).build(), &mut written)?;
    }
    fs.inject(Fault::new(FaultKind::Io, &[FaultOp::Write, FaultOp::SetLen]).partial(100));
    assert!(
        log.append(&[Spec::plain(5, 80).build()], EPOCH, NOW)
            .is_err()
    );
    assert!(log.is_offline());
    assert!(matches!(
        log.append(&[Spec::plain(1, 1).build()], EPOCH, NOW),
        Err(StorageError::Offline { .. })
    ));
    assert_eq!(served(&log)?, written, "reads go on");
    fs.clear_faults();
    fs.crash(CrashMode::ProcessKill);
    drop(log);
    let mut log = open(&fs, cfg(1 << 20), 0)?;
    assert_eq!(
        check_log(&log, &written)?,
        written.len(),
        "partial batch cut"
    );
    append_tracked(&mut log, &Spec::plain(1, 1).build(), &mut written)?;
    Ok(())
}

/// A failed fsync takes the log offline: the data may or may not be on disk, so nothing may
/// be acknowledged as durable; reopening recovers whatever is there.
#[test]
fn failed_fsync_takes_the_log_offline() -> TestResult {
    for op in [FaultOp::Sync, FaultOp::SyncDir] {
        let fs = sim()?;
        let mut log = open(&fs, cfg(600), 0)?;
        let mut written = Vec::new();
        for _ in 0..8 {
            append_tracked(&mut log, &Spec::plain(1, 100).build(), &mut written)?;
        }
        assert!(
            log.segment_count() > 1,
            "a new segment needs a directory sync"
        );
        fs.inject(Fault::new(FaultKind::NoSpace, &[op]).times(1));
        assert!(log.flush().is_err());
        assert!(log.is_offline());
        assert_eq!(log.recovery_point(), 0);
        assert!(log.flush().is_err(), "a later fsync proves nothing");
        fs.crash(CrashMode::ProcessKill);
        drop(log);
        let log = open(&fs, cfg(600), 0)?;
        assert_eq!(check_log(&log, &written)?, written.len());
    }
    Ok(())
}

/// `partition.metadata` and `compaction.metadata` go through the file system's atomic write:
/// after a crash they hold the old or the new contents, never a mix or nothing.
#[test]
fn metadata_files_survive_crashes_whole() -> TestResult {
    for seed in 0..60u64 {
        let fs = sim()?;
        let mut log = open(&fs, cfg(1 << 20), 0)?;
        log.set_topic_id("old-id")?;
        if seed % 2 == 0 {
            fs.inject(
                Fault::new(FaultKind::Io, &[FaultOp::SyncDir])
                    .after(seed % 3)
                    .times(1),
            );
        }
        let _ = log.set_topic_id("new-id");
        fs.clear_faults();
        fs.crash(CrashMode::Random { seed });
        drop(log);
        let log = open(&fs, cfg(1 << 20), 0)?;
        let id = log.topic_id();
        assert!(
            id == Some("old-id") || id == Some("new-id"),
            "seed {seed}: {id:?}"
        );
    }
    Ok(())
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Appends as the broker does with `flush.on.append`: under the lock without the fsync, then
/// group commit without the lock. Returns the append once acknowledged.
fn append_durably(log: &Mutex<Log>, batch: &TestBatch) -> Result<AppendInfo, StorageError> {
    let (info, gc) = {
        let mut l = lock(log);
        let info = l.append_deferred(std::slice::from_ref(batch), EPOCH, NOW)?;
        (info, l.group_commit())
    };
    gc.sync_through(log, info.last_offset + 1)?;
    Ok(info)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// With `flush_on_append`, whatever was acknowledged (by `append`, or by
    /// `append_deferred` and group commit) survives a power loss at any point, also when
    /// fsyncs start failing on the way.
    #[test]
    fn acknowledged_appends_survive_power_loss(
        appends in proptest::collection::vec((1usize..4, 0usize..120, any::<bool>()), 1..30),
        crash_at in any::<proptest::sample::Index>(),
        random_crash in proptest::option::of(any::<u64>()),
        sync_failure_after in proptest::option::of(0u64..20),
        segment_bytes in 600u64..3000,
    ) {
        let fs = sim().expect("sim");
        let config = LogConfig { flush_on_append: true, ..cfg(segment_bytes) };
        let log = Mutex::new(open(&fs, config.clone(), 0).expect("open"));
        if let Some(n) = sync_failure_after {
            fs.inject(Fault::new(FaultKind::Io, &[FaultOp::Sync, FaultOp::SyncDir]).after(n));
        }
        let mut written = Vec::new();
        let mut acked_end = 0;
        for &(records, value_len, deferred) in &appends[..=crash_at.index(appends.len())] {
            let b = Spec::plain(records, value_len).build();
            let before = lock(&log).log_end_offset();
            let result = if deferred {
                append_durably(&log, &b)
            } else {
                lock(&log).append(std::slice::from_ref(&b), EPOCH, NOW)
            };
            if lock(&log).log_end_offset() > before {
                written.push((before, stored(&b, before)));
            }
            match result {
                Ok(info) => {
                    prop_assert!(lock(&log).recovery_point() > info.last_offset);
                    acked_end = info.last_offset + 1;
                }
                Err(_) => {
                    prop_assert!(lock(&log).is_offline());
                    break;
                }
            }
        }
        fs.clear_faults();
        fs.crash(random_crash.map_or(CrashMode::PowerLoss, |seed| CrashMode::Random { seed }));
        drop(log);
        let log = open(&fs, config, acked_end).expect("reopen");
        let kept = check_log(&log, &written).expect("consistent");
        prop_assert!(end_of(&written[..kept]) >= acked_end, "an acknowledged append was lost");
    }
}

/// Appends with `flush_on_append` through `Log::append`: durable when it returns, and a
/// duplicate of a batch not yet durable waits for its fsync too.
#[test]
fn inline_flush_on_append_and_duplicates() -> TestResult {
    let fs = sim()?;
    let mut log = open(&fs, cfg(1 << 20), 0)?;
    let idem = Spec::idempotent(2, 42, 0, 0).build();
    log.append(std::slice::from_ref(&idem), EPOCH, NOW)?;
    assert_eq!(log.recovery_point(), 0, "flush_on_append is off");
    log.set_config(LogConfig {
        flush_on_append: true,
        ..cfg(1 << 20)
    });
    let dup = log.append(std::slice::from_ref(&idem), EPOCH, NOW)?;
    assert!(dup.duplicate);
    assert_eq!(
        log.recovery_point(),
        2,
        "the retry is acknowledged only once durable"
    );
    let info = log.append(&[Spec::plain(3, 10).build()], EPOCH, NOW)?;
    assert_eq!(log.recovery_point(), info.last_offset + 1);
    fs.crash(CrashMode::PowerLoss);
    drop(log);
    let log = open(&fs, cfg(1 << 20), 0)?;
    assert_eq!(log.log_end_offset(), 5);
    Ok(())
}

/// Waits for `cond` on the log, polling (bounded).
fn wait_until(log: &Mutex<Log>, cond: impl Fn(&Log) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond(&lock(log)) {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// N appenders at once share fsyncs: while one leads an fsync (held back by the simulated
/// file system until everyone has appended), the others wait, and one more fsync covers them
/// all. So a wave of N appends costs at most two fsyncs of the segment, whatever the timing.
/// Everything acknowledged survives a power loss.
#[test]
fn concurrent_appenders_share_fsyncs() -> TestResult {
    const THREADS: usize = 8;
    const WAVES: usize = 5;
    let fs = sim()?;
    let config = LogConfig {
        flush_on_append: true,
        ..cfg(1 << 20)
    };
    let mut fresh = open(&fs, config.clone(), 0)?;
    // As a leader does when it takes over: the epoch's start is written once, before any
    // append, so the appends below wait only on the segment's fsyncs.
    fresh.begin_leader_epoch(EPOCH)?;
    let log = Arc::new(Mutex::new(fresh));
    let segment = segment_file(&dir(), 0, "log");
    let syncs_before = fs.syncs_of(&segment);
    let batches: Vec<TestBatch> = (0..THREADS).map(|_| Spec::plain(1, 20).build()).collect();
    for wave in 0..WAVES {
        fs.pause_syncs();
        std::thread::scope(|s| -> TestResult {
            let handles: Vec<_> = batches
                .iter()
                .map(|b| {
                    let log = Arc::clone(&log);
                    s.spawn(move || append_durably(&log, b))
                })
                .collect();
            let target = ((wave + 1) * THREADS) as u64;
            wait_until(&log, |l| l.log_end_offset() == target);
            assert!(
                fs.wait_for_paused_syncs(1, Duration::from_secs(30)),
                "a leader is syncing"
            );
            fs.resume_syncs();
            for h in handles {
                let info = h
                    .join()
                    .map_err(|_| StorageError::Corrupt("panic".into()))??;
                assert!(info.last_offset < target);
            }
            Ok(())
        })?;
        assert_eq!(lock(&log).recovery_point(), ((wave + 1) * THREADS) as u64);
    }
    let appends = (THREADS * WAVES) as u64;
    let syncs = fs.syncs_of(&segment) - syncs_before;
    assert!(
        syncs <= 2 * WAVES as u64 && syncs < appends,
        "{syncs} fsyncs for {appends} appends"
    );
    assert!(lock(&log).group_commit().rounds() <= 2 * WAVES as u64);

    // Free-running: no pauses. Structurally never more fsync rounds than appends, and
    // everything acknowledged is durable.
    let rounds_before = lock(&log).group_commit().rounds();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let log = Arc::clone(&log);
            s.spawn(move || {
                for _ in 0..20 {
                    append_durably(&log, &Spec::plain(1, 5).build()).expect("append");
                }
            });
        }
    });
    let rounds = lock(&log).group_commit().rounds() - rounds_before;
    assert!(rounds <= (THREADS * 20) as u64, "{rounds} rounds");
    let end = lock(&log).log_end_offset();
    assert_eq!(lock(&log).recovery_point(), end);
    fs.crash(CrashMode::PowerLoss);
    drop(log);
    let log = open(&fs, config, 0)?;
    assert_eq!(log.log_end_offset(), end);
    Ok(())
}

/// Group commit after a truncation below the offsets waited for refuses to acknowledge, and
/// after an fsync failure every waiter gets the error.
#[test]
fn group_commit_errors() -> TestResult {
    let fs = sim()?;
    let log = Mutex::new(open(
        &fs,
        LogConfig {
            flush_on_append: true,
            ..cfg(1 << 20)
        },
        0,
    )?);
    let (info, gc) = {
        let mut l = lock(&log);
        let info = l.append_deferred(&[Spec::plain(4, 10).build()], EPOCH, NOW)?;
        l.truncate_to(2)?;
        (info, l.group_commit())
    };
    assert!(matches!(
        gc.sync_through(&log, info.last_offset + 1),
        Err(StorageError::TruncatedBeforeDurable {
            offset: 4,
            log_end: 0
        })
    ));
    assert_eq!(gc.sync_through(&log, 0)?, 0, "nothing to wait for");
    fs.inject(Fault::new(FaultKind::Io, &[FaultOp::Sync]));
    let b = Spec::plain(1, 1).build();
    assert!(append_durably(&log, &b).is_err());
    assert!(lock(&log).is_offline());
    assert!(append_durably(&log, &b).is_err());
    Ok(())
}
