use std::fs::{self, OpenOptions};
use std::path::Path;

use proptest::prelude::*;
use vltava_protocol::batch::{parse_header, set_base_offset_and_epoch, verify};

use super::*;
use crate::segment::segment_file;
use crate::testutil::{Spec, TestBatch, one};

type TestResult = Result<(), StorageError>;

const NOW: i64 = 1_700_000_000_000;
const EPOCH: i32 = 7;

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// The bytes the log must hold for `b` appended at `base`.
fn stored(b: &TestBatch, base: u64) -> Vec<u8> {
    let mut v = b.1.to_vec();
    set_base_offset_and_epoch(&mut v, base as i64, EPOCH);
    v
}

/// Splits a read result into (base offset, batch bytes), checking every CRC.
fn batches_of(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let h = verify(rest).expect("whole, valid batch");
        let (b, r) = rest.split_at(h.total_len());
        out.push((h.base_offset as u64, b.to_vec()));
        rest = r;
    }
    out
}

fn read_all(log: &Log) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    let s = log.read(log.log_start_offset(), usize::MAX, u64::MAX, true)?;
    Ok(batches_of(&s.bytes))
}

/// Appends `n` plain batches of `records` records each, returning (base offset, stored bytes).
fn fill(
    log: &mut Log,
    n: usize,
    records: usize,
    value_len: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    for i in 0..n {
        let b = Spec::plain(records, value_len)
            .at(NOW + i as i64 * 10)
            .build();
        let info = log.append(std::slice::from_ref(&b), EPOCH, NOW)?;
        assert_eq!(info.last_offset - info.first_offset + 1, records as u64);
        out.push((info.first_offset, stored(&b, info.first_offset)));
    }
    Ok(out)
}

fn segment_len(dir: &Path, base: u64) -> u64 {
    fs::metadata(segment_file(dir, base, "log"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn append_assigns_offsets_and_rewrites_only_the_prefix() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let a = Spec::plain(3, 20).build();
    let b = Spec::plain(2, 20).build();
    let info = log.append(&[a.clone(), b.clone()], EPOCH, NOW)?;
    assert_eq!((info.first_offset, info.last_offset), (0, 4));
    assert!(!info.duplicate);
    assert_eq!(info.log_append_time_ms, NOW);
    assert_eq!(log.log_end_offset(), 5);
    let got = read_all(&log)?;
    assert_eq!(got, vec![(0, stored(&a, 0)), (3, stored(&b, 3))]);
    let h = parse_header(&got[1].1).expect("header");
    assert_eq!(h.partition_leader_epoch, EPOCH);
    assert_eq!(
        &got[1].1[16..],
        &b.1[16..],
        "everything after the prefix is untouched"
    );
    Ok(())
}

#[test]
fn rejects_oversized_and_malformed_batches_without_writing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = cfg(1 << 20);
    config.max_message_bytes = 200;
    let mut log = Log::open(dir.path(), config, 0, NOW)?;
    let small = Spec::plain(1, 10).build();
    let big = Spec::plain(1, 500).build();
    let err = log.append(&[small.clone(), big.clone()], EPOCH, NOW);
    assert!(
        matches!(err, Err(StorageError::MessageTooLarge { max: 200, .. })),
        "{err:?}"
    );
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    let mut h = small.0;
    h.batch_length += 1;
    assert!(matches!(
        log.append(&[(h, small.1.clone())], EPOCH, NOW),
        Err(StorageError::InvalidRecord(_))
    ));
    let no_batches: &[TestBatch] = &[];
    assert!(log.append(no_batches, EPOCH, NOW).is_err());
    let mut tiny_segments = cfg(100);
    tiny_segments.max_message_bytes = 1 << 20;
    log.set_config(tiny_segments);
    assert!(matches!(
        log.append(&[big], EPOCH, NOW),
        Err(StorageError::BatchLargerThanSegment { .. })
    ));
    assert_eq!(segment_len(dir.path(), 0), 0);
    Ok(())
}

#[test]
fn rolls_by_size() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1000), 0, NOW)?;
    let written = fill(&mut log, 12, 2, 100)?;
    let batch_len = written[0].1.len() as u64;
    let per_segment = 1000 / batch_len;
    assert!(log.segment_count() >= 3);
    let bases = log.segment_base_offsets();
    for (i, base) in bases.iter().enumerate() {
        assert_eq!(
            *base,
            i as u64 * per_segment * 2,
            "segments roll at batch boundaries"
        );
        assert!(segment_len(dir.path(), *base) <= 1000);
        assert!(dir.path().join(format!("{base:020}.index")).exists());
        assert!(dir.path().join(format!("{base:020}.timeindex")).exists());
    }
    assert_eq!(read_all(&log)?, written);
    Ok(())
}

#[test]
fn rolls_by_time_from_first_append() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = cfg(1 << 20);
    config.segment_ms = 100;
    let mut log = Log::open(dir.path(), config, 0, NOW)?;
    // An empty active segment never rolls, however old.
    log.append(&one(Spec::plain(1, 10)), EPOCH, NOW + 1000)?;
    log.append(&one(Spec::plain(1, 10)), EPOCH, NOW + 1100)?;
    assert_eq!(log.segment_count(), 1);
    log.append(&one(Spec::plain(1, 10)), EPOCH, NOW + 1101)?;
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    Ok(())
}

#[test]
fn reads_whole_batches_within_limits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(700), 0, NOW)?;
    let written = fill(&mut log, 10, 3, 60)?;
    let len = written[0].1.len();
    assert!(log.segment_count() > 2, "test needs several segments");

    // Every offset, including offsets inside a batch, reads from the batch holding it.
    for (i, (base, _)) in written.iter().enumerate() {
        for offset in *base..base + 3 {
            let s = log.read(offset, usize::MAX, u64::MAX, false)?;
            assert_eq!(s.first_offset, Some(*base));
            assert_eq!(
                batches_of(&s.bytes),
                written[i..].to_vec(),
                "spans segments"
            );
            assert_eq!(s.next_offset, 30);
        }
    }
    // max_bytes keeps whole batches only.
    let s = log.read(0, 2 * len + len / 2, u64::MAX, false)?;
    assert_eq!(batches_of(&s.bytes), written[..2].to_vec());
    assert_eq!(s.next_offset, 6);
    // A first batch larger than max_bytes: nothing, unless min_one_batch.
    assert!(log.read(3, len - 1, u64::MAX, false)?.bytes.is_empty());
    let s = log.read(3, 1, u64::MAX, true)?;
    assert_eq!(batches_of(&s.bytes), written[1..2].to_vec());
    // The high watermark bounds by base offset: offset 13 is inside batch 12..14.
    let s = log.read(0, usize::MAX, 13, false)?;
    assert_eq!(batches_of(&s.bytes), written[..5].to_vec());
    assert!(log.read(12, usize::MAX, 12, true)?.bytes.is_empty());
    // End of log reads empty; beyond is out of range.
    let s = log.read(30, usize::MAX, u64::MAX, true)?;
    assert!(s.bytes.is_empty() && s.first_offset.is_none() && s.next_offset == 30);
    assert!(matches!(
        log.read(31, 100, u64::MAX, true),
        Err(StorageError::OffsetOutOfRange {
            offset: 31,
            log_start: 0,
            log_end: 30
        })
    ));
    Ok(())
}

#[test]
fn index_lookups_start_near_the_target() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    let written = fill(&mut log, 40, 1, 50)?;
    let seg = &log.segments[0];
    let entries = seg.offset_index_entries().to_vec();
    assert!(
        entries.len() > 5,
        "interval 100 with ~120-byte batches indexes most batches"
    );
    let mut pos = 0u64;
    let positions: Vec<u64> = written
        .iter()
        .map(|(_, b)| {
            let p = pos;
            pos += b.len() as u64;
            p
        })
        .collect();
    for e in &entries {
        assert_eq!(u64::from(e.position), positions[e.rel_offset as usize]);
    }
    for (offset, p) in positions.iter().enumerate() {
        let found = seg.find_batch(offset as u64)?.map(|(pos, _)| pos);
        assert_eq!(found, Some(*p));
    }
    Ok(())
}

/// Log with two segments, the second holding three batches; returns the stored batches.
fn two_segment_log(dir: &Path) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    let mut log = Log::open(dir, cfg(1000), 0, NOW)?;
    let written = fill(&mut log, 7, 2, 80)?;
    assert_eq!(log.segment_count(), 2, "fixture layout");
    log.close()?;
    Ok(written)
}

#[test]
fn recovery_after_torn_last_batch_at_every_byte() -> TestResult {
    let template = tempfile::tempdir()?;
    let written = two_segment_log(template.path())?;
    let last_base = written[written.len() - 1].0;
    let last_len = written[written.len() - 1].1.len() as u64;
    let active_base = {
        let log = Log::open(template.path(), cfg(1000), u64::MAX, NOW)?;
        log.segment_base_offsets()[1]
    };
    let full = segment_len(template.path(), active_base);
    // Reference: the log without its last batch.
    let reference = tempfile::tempdir()?;
    let ref_entries = {
        let mut log = Log::open(reference.path(), cfg(1000), 0, NOW)?;
        fill(&mut log, 6, 2, 80)?;
        let seg = &log.segments[1];
        (
            seg.offset_index_entries().to_vec(),
            seg.time_index_entries().to_vec(),
        )
    };

    for cut in (full - last_len)..full {
        for recovery_point in [0, u64::MAX] {
            let dir = tempfile::tempdir()?;
            for entry in fs::read_dir(template.path())? {
                let entry = entry?;
                fs::copy(entry.path(), dir.path().join(entry.file_name()))?;
            }
            OpenOptions::new()
                .write(true)
                .open(segment_file(dir.path(), active_base, "log"))?
                .set_len(cut)?;
            let mut log = Log::open(dir.path(), cfg(1000), recovery_point, NOW)?;
            assert_eq!(log.log_end_offset(), last_base, "cut at {cut}");
            assert_eq!(segment_len(dir.path(), active_base), full - last_len);
            let seg = &log.segments[1];
            assert_eq!(
                (
                    seg.offset_index_entries().to_vec(),
                    seg.time_index_entries().to_vec()
                ),
                ref_entries
            );
            assert_eq!(read_all(&log)?, written[..written.len() - 1].to_vec());
            let b = Spec::plain(2, 80).build();
            let info = log.append(std::slice::from_ref(&b), EPOCH, NOW)?;
            assert_eq!(info.first_offset, last_base);
            log.close()?;
            let log = Log::open(dir.path(), cfg(1000), 0, NOW)?;
            assert_eq!(log.log_end_offset(), last_base + 2);
        }
    }
    Ok(())
}

#[test]
fn corrupt_byte_truncates_there_and_drops_later_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    let written = fill(&mut log, 12, 2, 80)?;
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 3);
    log.close()?;
    // Flip a byte in the middle of the second batch of the first segment.
    let path = segment_file(dir.path(), 0, "log");
    let mut data = fs::read(&path)?;
    let first_len = written[0].1.len();
    data[first_len + 40] ^= 0x55;
    fs::write(&path, &data)?;

    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.segment_base_offsets(), vec![0]);
    assert_eq!(segment_len(dir.path(), 0), first_len as u64);
    for later in &bases[1..] {
        assert!(!segment_file(dir.path(), *later, "log").exists());
        assert!(!segment_file(dir.path(), *later, "index").exists());
    }
    assert_eq!(read_all(&log)?, written[..1].to_vec());
    assert_eq!(
        log.append(&one(Spec::plain(1, 5)), EPOCH, NOW)?
            .first_offset,
        2
    );
    Ok(())
}

#[test]
fn corruption_before_the_recovery_point_is_trusted_but_a_bad_length_still_ends_the_log()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    let written = fill(&mut log, 12, 2, 80)?;
    let rp = log.flush()?;
    log.close()?;
    let path = segment_file(dir.path(), 0, "log");
    let mut data = fs::read(&path)?;
    let first_len = written[0].1.len();
    // batchLength of the second batch becomes absurd.
    data[first_len + 8..first_len + 12].copy_from_slice(&i32::MAX.to_be_bytes());
    fs::write(&path, &data)?;
    let log = Log::open(dir.path(), cfg(600), rp, NOW)?;
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.segment_count(), 1);
    Ok(())
}

#[test]
fn garbage_index_files_are_rebuilt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(2000), 0, NOW)?;
    let written = fill(&mut log, 30, 1, 60)?;
    assert!(log.segment_count() >= 2);
    let rp = log.flush()?;
    let good_index = fs::read(segment_file(dir.path(), 0, "index"))?;
    let good_time = fs::read(segment_file(dir.path(), 0, "timeindex"))?;
    assert!(!good_index.is_empty() && !good_time.is_empty());
    log.close()?;

    let garbage: [Vec<u8>; 4] = [
        vec![0xAB; 13],                                                   // torn entry
        vec![0xFF; 16],                                                   // positions past the file
        [good_index[8..16].to_vec(), good_index[0..8].to_vec()].concat(), // out of order
        {
            // Sane-looking but pointing into the middle of a batch.
            let mut v = good_index.clone();
            v[7] = v[7].wrapping_add(1);
            v
        },
    ];
    for g in garbage {
        fs::write(segment_file(dir.path(), 0, "index"), &g)?;
        fs::write(segment_file(dir.path(), 0, "timeindex"), [0x7Fu8; 24])?;
        let log = Log::open(dir.path(), cfg(2000), rp, NOW)?;
        assert_eq!(fs::read(segment_file(dir.path(), 0, "index"))?, good_index);
        assert_eq!(
            fs::read(segment_file(dir.path(), 0, "timeindex"))?,
            good_time
        );
        for (base, bytes) in &written {
            let s = log.read(*base, 1, u64::MAX, true)?;
            assert_eq!(batches_of(&s.bytes), vec![(*base, bytes.clone())]);
        }
        log.close()?;
    }
    // Sane index files before the recovery point are kept as they are.
    let log = Log::open(dir.path(), cfg(2000), rp, NOW)?;
    assert_eq!(fs::read(segment_file(dir.path(), 0, "index"))?, good_index);
    drop(log);
    Ok(())
}

#[test]
fn stray_files_are_cleaned_up_at_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    Log::open(dir.path(), cfg(2000), 0, NOW)?.close()?;
    fs::write(dir.path().join("00000000000000000099.index"), [0u8; 8])?;
    fs::write(dir.path().join("00000000000000000000.log.deleted"), b"x")?;
    fs::write(dir.path().join("partition.metadata.tmp"), b"x")?;
    let log = Log::open(dir.path(), cfg(2000), 0, NOW)?;
    let mut names: Vec<_> = fs::read_dir(dir.path())?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00000000000000000000.index",
            "00000000000000000000.log",
            "00000000000000000000.timeindex"
        ]
    );
    drop(log);
    Ok(())
}

#[test]
fn retention_by_time_keeps_the_active_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = cfg(400);
    config.retention_ms = 1000;
    let mut log = Log::open(dir.path(), config, 0, NOW)?;
    for i in 0..9 {
        let b = Spec::plain(1, 100).at(NOW + i * 100).build();
        log.append(&[b], EPOCH, NOW)?;
    }
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 4);
    assert_eq!(
        log.apply_retention(NOW + 1000)?,
        0,
        "nothing is older than 1 s yet"
    );
    // The first segment's newest record is at NOW + 200 with 3 batches per segment... derive it:
    let seg1_max = log.segments[0].max_timestamp().map(|t| t.0).unwrap_or(0);
    assert_eq!(log.apply_retention(seg1_max + 1001)?, 1);
    assert_eq!(log.log_start_offset(), bases[1]);
    assert!(!segment_file(dir.path(), 0, "log").exists());
    // Everything expired: all but the active segment go.
    let deleted = log.apply_retention(NOW + 1_000_000)?;
    assert_eq!(deleted, bases.len() - 2);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), bases[bases.len() - 1]);
    assert!(matches!(
        log.read(0, 100, u64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.log_end_offset(), 9);
    Ok(())
}

#[test]
fn retention_by_bytes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = cfg(400);
    let mut log = Log::open(dir.path(), config.clone(), 0, NOW)?;
    fill(&mut log, 12, 1, 100)?;
    let count = log.segment_count();
    let seg_size = log.segments[0].size();
    config.retention_bytes = (log.size_bytes() - seg_size) as i64;
    log.set_config(config.clone());
    assert_eq!(log.apply_retention(NOW)?, 1, "exactly one segment too many");
    config.retention_bytes = 0;
    log.set_config(config);
    assert_eq!(log.apply_retention(NOW)?, count - 2);
    assert_eq!(log.segment_count(), 1, "the active segment stays");
    Ok(())
}

#[test]
fn delete_records_moves_log_start_and_drops_whole_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    let written = fill(&mut log, 12, 2, 80)?;
    let bases = log.segment_base_offsets();
    let inside_second = bases[1] + 1;
    assert_eq!(log.delete_records_before(inside_second)?, inside_second);
    assert_eq!(log.segment_base_offsets(), bases[1..].to_vec());
    assert!(matches!(
        log.read(bases[1], 100, u64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // Reading at the new start returns the batch holding it.
    let s = log.read(inside_second, 1, u64::MAX, true)?;
    assert_eq!(s.first_offset, Some(bases[1]));
    assert_eq!(
        log.delete_records_before(0)?,
        inside_second,
        "never moves back"
    );
    assert!(matches!(
        log.delete_records_before(25),
        Err(StorageError::OffsetOutOfRange { offset: 25, .. })
    ));
    assert_eq!(log.delete_records_before(24)?, 24);
    assert_eq!(log.segment_count(), 1);
    assert!(log.read(24, 100, u64::MAX, true)?.bytes.is_empty());
    // The log start survives a reopen only through the checkpoint the manager passes in.
    log.close()?;
    let log = Log::open_with_log_start(dir.path(), cfg(600), 0, Some(24), NOW)?;
    assert_eq!(log.log_start_offset(), 24);
    assert_eq!(written.len(), 12);
    Ok(())
}

#[test]
fn truncate_to_removes_the_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    let written = fill(&mut log, 12, 2, 80)?;
    log.flush()?;
    let bases = log.segment_base_offsets();
    // Offset 9 lies inside batch 8..9: the whole batch goes.
    log.truncate_to(9)?;
    assert_eq!(log.log_end_offset(), 8);
    assert!(log.recovery_point() <= 8);
    assert_eq!(read_all(&log)?, written[..4].to_vec());
    assert!(log.segment_base_offsets().iter().all(|b| *b <= 8));
    for b in bases.iter().filter(|b| **b > 8) {
        assert!(!segment_file(dir.path(), *b, "log").exists());
    }
    assert_eq!(
        log.append(&one(Spec::plain(1, 5)), EPOCH, NOW)?
            .first_offset,
        8
    );
    log.truncate_to(0)?;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(log.segment_count(), 1);
    log.close()?;
    let log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    assert_eq!(log.log_end_offset(), 0);
    Ok(())
}

#[test]
fn timestamps_lookups() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(500), 0, NOW)?;
    assert_eq!(log.max_timestamp(), None);
    assert_eq!(log.offset_for_timestamp(0)?, None);
    // Batch i (2 records) has timestamps 1000*i and 1000*i + 1, except batch 5 which is older.
    for i in 0..10i64 {
        let ts = if i == 5 { 500 } else { 1000 * i };
        log.append(&one(Spec::plain(2, 60).at(ts)), EPOCH, NOW)?;
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.offset_for_timestamp(0)?, Some((0, 1)));
    assert_eq!(log.offset_for_timestamp(1)?, Some((0, 1)));
    assert_eq!(log.offset_for_timestamp(2)?, Some((2, 1001)));
    assert_eq!(log.offset_for_timestamp(4000)?, Some((8, 4001)));
    assert_eq!(
        log.offset_for_timestamp(5000)?,
        Some((12, 6001)),
        "batch 5 is older"
    );
    assert_eq!(log.offset_for_timestamp(9001)?, Some((18, 9001)));
    assert_eq!(log.offset_for_timestamp(9002)?, None);
    assert_eq!(log.max_timestamp(), Some((9001, 19)));
    // Unaffected by a reopen that trusts the index files.
    let rp = log.flush()?;
    log.close()?;
    let log = Log::open(dir.path(), cfg(500), rp, NOW)?;
    assert_eq!(log.offset_for_timestamp(4000)?, Some((8, 4001)));
    assert_eq!(log.max_timestamp(), Some((9001, 19)));
    Ok(())
}

#[test]
fn idempotent_duplicates_gaps_and_epochs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    log.append(&one(Spec::plain(2, 5)), EPOCH, NOW)?;
    let first = log.append(&one(Spec::idempotent(3, 42, 0, 0)), EPOCH, NOW)?;
    assert_eq!((first.first_offset, first.last_offset), (2, 4));
    log.append(&one(Spec::idempotent(2, 42, 0, 3)), EPOCH, NOW)?;
    let size = log.size_bytes();

    let dup = log.append(&one(Spec::idempotent(3, 42, 0, 0)), EPOCH, NOW)?;
    assert!(dup.duplicate);
    assert_eq!((dup.first_offset, dup.last_offset), (2, 4));
    assert_eq!(
        (log.log_end_offset(), log.size_bytes()),
        (7, size),
        "nothing written"
    );

    assert!(matches!(
        log.append(&one(Spec::idempotent(1, 42, 0, 9)), EPOCH, NOW),
        Err(StorageError::OutOfOrderSequence {
            producer_id: 42,
            expected: 5,
            received: 9
        })
    ));
    // A request whose second batch has a gap writes nothing at all.
    let ok = Spec::idempotent(1, 42, 0, 5).build();
    let gap = Spec::idempotent(1, 42, 0, 7).build();
    assert!(log.append(&[ok.clone(), gap], EPOCH, NOW).is_err());
    assert_eq!((log.log_end_offset(), log.size_bytes()), (7, size));
    log.append(&[ok], EPOCH, NOW)?;

    // A new epoch must start at 0; then the old epoch is fenced.
    assert!(matches!(
        log.append(&one(Spec::idempotent(1, 42, 1, 6)), EPOCH, NOW),
        Err(StorageError::OutOfOrderSequence { expected: 0, .. })
    ));
    log.append(&one(Spec::idempotent(1, 42, 1, 0)), EPOCH, NOW)?;
    assert!(matches!(
        log.append(&one(Spec::idempotent(1, 42, 0, 6)), EPOCH, NOW),
        Err(StorageError::InvalidProducerEpoch {
            epoch: 0,
            current: 1,
            ..
        })
    ));
    // An unknown producer may start anywhere.
    log.append(&one(Spec::idempotent(1, 77, 3, 1234)), EPOCH, NOW)?;

    let before = log.producer_state().clone();
    log.close()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    let after = log.producer_state();
    assert_eq!(after.get(42).map(|e| e.epoch()), Some(1));
    assert_eq!(after.get(42).and_then(|e| e.last_sequence()), Some(0));
    assert_eq!(after.get(77).and_then(|e| e.last_sequence()), Some(1234));
    assert_eq!(
        &before, after,
        "state rebuilt from the log equals the live state"
    );
    let dup = log.append(&one(Spec::idempotent(1, 77, 3, 1234)), EPOCH, NOW)?;
    assert!(dup.duplicate);
    assert_eq!(
        log.append(&one(Spec::idempotent(1, 42, 1, 1)), EPOCH, NOW)?
            .first_offset,
        10
    );
    Ok(())
}

#[test]
fn producer_state_rebuilt_after_truncation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    log.append(&one(Spec::idempotent(2, 5, 0, 0)), EPOCH, NOW)?;
    log.append(&one(Spec::idempotent(2, 5, 0, 2)), EPOCH, NOW)?;
    log.truncate_to(2)?;
    assert_eq!(
        log.producer_state().get(5).and_then(|e| e.last_sequence()),
        Some(1)
    );
    let again = log.append(&one(Spec::idempotent(2, 5, 0, 2)), EPOCH, NOW)?;
    assert!(!again.duplicate);
    assert_eq!(again.first_offset, 2);
    Ok(())
}

#[test]
fn flush_policy_and_flush_handles() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = cfg(1 << 20);
    config.flush_interval_messages = 5;
    let mut log = Log::open(dir.path(), config, 0, NOW)?;
    log.append(&one(Spec::plain(3, 5)), EPOCH, NOW)?;
    assert_eq!(log.recovery_point(), 0);
    log.append(&one(Spec::plain(3, 5)), EPOCH, NOW)?;
    assert_eq!(log.recovery_point(), 6, "flush.messages reached");

    let mut config = cfg(1 << 20);
    config.flush_interval_ms = 1000;
    log.set_config(config);
    log.append(&one(Spec::plain(1, 5)), EPOCH, NOW + 10)?;
    assert_eq!(log.recovery_point(), 6);
    assert!(!log.maybe_flush(NOW + 500)?);
    assert!(log.maybe_flush(NOW + 1000)?);
    assert_eq!(log.recovery_point(), 7);

    log.append(&one(Spec::plain(2, 5)), EPOCH, NOW + 1001)?;
    let handle = log.flush_handle()?;
    assert_eq!(handle.upto(), 9);
    log.append(&one(Spec::plain(2, 5)), EPOCH, NOW + 1002)?;
    handle.sync()?;
    assert_eq!(log.complete_flush(handle), 9);
    assert!(
        log.segments[0].needs_sync(),
        "the later append is not covered"
    );
    // A truncation in between invalidates a handle.
    let handle = log.flush_handle()?;
    log.truncate_to(8)?;
    assert_eq!(log.log_end_offset(), 7, "batch 7..8 removed whole");
    log.append(&one(Spec::plain(4, 5)), EPOCH, NOW + 1003)?;
    handle.sync()?;
    assert_eq!(log.complete_flush(handle), 7, "stale handle ignored");
    Ok(())
}

#[test]
fn topic_id_is_persisted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    assert_eq!(log.topic_id(), None);
    log.set_topic_id("bX3oAfq8R0WPdp4Rgt4Gjg")?;
    log.close()?;
    assert_eq!(
        fs::read_to_string(dir.path().join(PARTITION_METADATA_FILE))?,
        "version: 0\ntopic_id: bX3oAfq8R0WPdp4Rgt4Gjg\n"
    );
    let log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    assert_eq!(log.topic_id(), Some("bX3oAfq8R0WPdp4Rgt4Gjg"));
    assert_eq!(parse_partition_metadata(b"version: 1\ntopic_id: x\n"), None);
    assert_eq!(parse_partition_metadata(b"\xff"), None);
    Ok(())
}

#[test]
fn deleted_log_refuses_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t-0");
    let mut log = Log::open(&path, cfg(1 << 20), 0, NOW)?;
    log.append(&one(Spec::plain(1, 5)), EPOCH, NOW)?;
    log.mark_deleted();
    assert!(matches!(
        log.append(&one(Spec::plain(1, 5)), EPOCH, NOW),
        Err(StorageError::LogDeleted(_))
    ));
    log.delete()?;
    assert!(!path.exists());
    Ok(())
}

#[test]
fn garbage_segment_files_never_panic() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..50 {
        let len = (round * 37) % 400;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let p = dir.path().join(format!("r{round}"));
        fs::create_dir_all(&p)?;
        fs::write(segment_file(&p, 0, "log"), &data)?;
        fs::write(segment_file(&p, 0, "index"), &data[..len.min(64)])?;
        let log = Log::open(&p, cfg(1 << 20), 0, NOW)?;
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn appended_batches_read_back_identically_after_reopen(
        specs in proptest::collection::vec((1usize..6, 0usize..200), 1..40),
        segment_bytes in 1200u64..4000,
        request_split in 1usize..4,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), cfg(segment_bytes), 0, NOW).expect("open");
        let mut expected: Vec<(u64, Vec<u8>)> = Vec::new();
        for chunk in specs.chunks(request_split) {
            let batches: Vec<TestBatch> =
                chunk.iter().map(|&(n, v)| Spec::plain(n, v).build()).collect();
            let info = log.append(&batches, EPOCH, NOW).expect("append");
            let mut base = info.first_offset;
            for b in &batches {
                expected.push((base, stored(b, base)));
                base += u64::from(b.0.record_count as u32);
            }
            prop_assert_eq!(base, info.last_offset + 1);
        }
        log.close().expect("close");
        let log = Log::open(dir.path(), cfg(segment_bytes), 0, NOW).expect("reopen");
        prop_assert_eq!(log.log_end_offset(), expected.last().map_or(0, |(b, bytes)| {
            b + u64::from(parse_header(bytes).expect("hdr").record_count as u32)
        }));
        for (i, (base, bytes)) in expected.iter().enumerate() {
            let count = parse_header(bytes).expect("hdr").record_count as u64;
            for offset in *base..base + count {
                let s = log.read(offset, 1, u64::MAX, true).expect("read");
                prop_assert_eq!(batches_of(&s.bytes), vec![(*base, bytes.clone())]);
            }
            let s = log.read(*base, usize::MAX, u64::MAX, false).expect("read all");
            prop_assert_eq!(batches_of(&s.bytes), expected[i..].to_vec());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Damaged files (flipped bytes, a cut, garbage indexes) never panic the open, and with
    /// full recovery the log that comes back is a prefix of what was written.
    #[test]
    fn damaged_logs_recover_to_a_valid_prefix(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 0..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        index_garbage in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        segment in 0usize..3,
        trust in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), cfg(700), 0, NOW).expect("open");
        let written = fill(&mut log, 9, 2, 60).expect("fill");
        let bases = log.segment_base_offsets();
        let rp = log.flush().expect("flush");
        log.close().expect("close");
        let base = bases[segment.min(bases.len() - 1)];
        let path = segment_file(dir.path(), base, "log");
        let mut data = fs::read(&path).expect("read segment");
        for (at, x) in &flips {
            let i = at.index(data.len());
            data[i] ^= x;
        }
        if let Some(at) = cut {
            data.truncate(at.index(data.len() + 1));
        }
        fs::write(&path, &data).expect("write segment");
        if let Some(g) = &index_garbage {
            fs::write(segment_file(dir.path(), base, "index"), g).expect("write index");
        }
        let log = Log::open(dir.path(), cfg(700), if trust { rp } else { 0 }, NOW).expect("reopen");
        if trust {
            // Flushed data is trusted (as in Kafka): only its structure is checked, so all
            // that is asked here is no panic.
            let _ = log.read(log.log_start_offset(), usize::MAX, u64::MAX, true);
        } else {
            // partitionLeaderEpoch (bytes 12..16) is outside the CRC in Kafka's format, so a
            // flip there is undetectable; everything else must match exactly.
            let mask = |v: &[(u64, Vec<u8>)]| -> Vec<(u64, Vec<u8>)> {
                v.iter()
                    .map(|(o, b)| (*o, [&b[..12], &b[16..]].concat()))
                    .collect()
            };
            let got = mask(&read_all(&log).expect("recovered log reads back"));
            prop_assert!(got.len() <= written.len());
            prop_assert_eq!(&got[..], &mask(&written)[..got.len()]);
            prop_assert_eq!(log.log_end_offset(), got.len() as u64 * 2);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// `read_regions` (index-guided, header-only) finds exactly the batches a greedy walk over
    /// every batch in the log picks: the one holding `offset`, then whole batches while they
    /// fit `max_bytes` and start below `max_offset`.
    #[test]
    fn regions_match_a_greedy_walk_over_all_batches(
        specs in proptest::collection::vec((1usize..6, 0usize..200), 1..40),
        segment_bytes in 1200u64..4000,
        index_interval_bytes in prop_oneof![Just(1u64), 50u64..600, Just(1u64 << 20)],
        reads in proptest::collection::vec(
            (any::<proptest::sample::Index>(), 0usize..3000, any::<proptest::sample::Index>(), any::<bool>()),
            1..20,
        ),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig { index_interval_bytes, ..cfg(segment_bytes) };
        let mut log = Log::open(dir.path(), config, 0, NOW).expect("open");
        let mut all: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        for &(n, v) in &specs {
            let b = Spec::plain(n, v).build();
            let info = log.append(std::slice::from_ref(&b), EPOCH, NOW).expect("append");
            all.push((info.first_offset, info.last_offset, stored(&b, info.first_offset)));
        }
        let end = log.log_end_offset();
        for (o, max_bytes, u, min_one) in reads {
            let offset = o.index(end as usize + 1) as u64;
            let upper = u.index(end as usize + 2) as u64;
            let mut want: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut used = 0usize;
            let mut next = offset;
            // Nothing at or past the high watermark, even inside a batch that starts below it.
            let readable = all.iter().filter(|(_, last, _)| *last >= offset && offset < upper);
            for (base, last, bytes) in readable {
                if *base >= upper.min(end) {
                    break;
                }
                let fits = used + bytes.len() <= max_bytes || (want.is_empty() && min_one);
                if !fits {
                    break;
                }
                used += bytes.len();
                want.push((*base, bytes.clone()));
                next = last + 1;
            }
            let got = log.read(offset, max_bytes, upper, min_one).expect("read");
            prop_assert_eq!(batches_of(&got.bytes), want.clone());
            prop_assert_eq!(got.first_offset, want.first().map(|(b, _)| *b));
            prop_assert_eq!(got.next_offset, next);
            let regions = log.read_regions(offset, max_bytes, upper, min_one).expect("regions");
            prop_assert_eq!(regions.len(), got.bytes.len());
            prop_assert!(regions.regions.iter().all(|r| r.fd().is_some() && !r.is_empty()));
        }
    }
}
