//! Log compaction: what survives a cleaning, how segments are swapped, recovery of compacted
//! logs and of interrupted swaps.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use proptest::prelude::*;
use vltava_protocol::batch::{Compression, HEADER_LEN, build_batch, verify};
use vltava_protocol::compression::{SnappyFraming, compress, decompress};

use super::*;
use crate::cleaner::CleanOptions;
use crate::config::CleanupPolicy;
use crate::producer::RETAINED_BATCHES;
use crate::segment::{replacement_file, segment_file};
use crate::simfs::{CrashMode, Fault, FaultKind, FaultOp, SimFs};
use crate::testutil::{Kv, appendable, decode_records, kv_batch, kv_batch_from};

type TestResult = Result<(), StorageError>;

const NOW: i64 = 1_700_000_000_000;
const EPOCH: i32 = 3;
const RETENTION: i64 = 1000;

/// A record as read back: offset, key, value.
type Rec = (u64, Option<Vec<u8>>, Option<Vec<u8>>);

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        retention_ms: -1,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: RETENTION,
        ..LogConfig::default()
    }
}

/// Appends one batch of `kvs`, returning its records with their offsets.
fn put(log: &mut Log, kvs: &[Kv], codec: Compression, ts: i64) -> Result<Vec<Rec>, StorageError> {
    let info = log.append(&[appendable(kv_batch(kvs, codec, ts))], EPOCH, NOW)?;
    Ok(kvs
        .iter()
        .enumerate()
        .map(|(i, kv)| {
            (
                info.first_offset + i as u64,
                kv.key.clone(),
                kv.value.clone(),
            )
        })
        .collect())
}

/// Every readable record, decoded by `kafka-protocol`, after checking each batch's CRC.
fn records(log: &Log) -> Result<Vec<Rec>, StorageError> {
    let s = log.read(log.log_start_offset(), usize::MAX, u64::MAX, true)?;
    let mut rest = &s.bytes[..];
    while !rest.is_empty() {
        let h = verify(rest).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        rest = &rest[h.total_len()..];
    }
    Ok(decode_records(&s.bytes)
        .into_iter()
        .map(|r| {
            (
                r.offset as u64,
                r.key.map(|b| b.to_vec()),
                r.value.map(|b| b.to_vec()),
            )
        })
        .collect())
}

/// Headers of every readable batch.
fn headers(log: &Log) -> Result<Vec<BatchHeader>, StorageError> {
    let s = log.read(log.log_start_offset(), usize::MAX, u64::MAX, true)?;
    let mut out = Vec::new();
    let mut rest = &s.bytes[..];
    while !rest.is_empty() {
        let h = verify(rest).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        rest = &rest[h.total_len()..];
        out.push(h);
    }
    Ok(out)
}

/// What a consumer reading from the start ends up with: the last value per key, deletes
/// applied.
fn view(recs: &[Rec]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (_, k, v) in recs {
        match (k, v) {
            (Some(k), Some(v)) => {
                m.insert(k.clone(), v.clone());
            }
            (Some(k), None) => {
                m.remove(k);
            }
            (None, _) => {}
        }
    }
    m
}

/// Offset of the last record of each key.
fn latest_offsets(recs: &[Rec]) -> HashMap<Vec<u8>, u64> {
    recs.iter()
        .filter_map(|(o, k, _)| k.clone().map(|k| (k, *o)))
        .collect()
}

/// Checks what every cleaning must preserve: offsets strictly increasing, each record exactly
/// the one appended at its offset, and the same final view.
fn assert_preserved(after: &[Rec], written: &[Rec]) {
    let by_offset: BTreeMap<u64, &Rec> = written.iter().map(|r| (r.0, r)).collect();
    for w in after.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "offsets increase: {} then {}",
            w[0].0,
            w[1].0
        );
    }
    for r in after {
        assert_eq!(
            Some(&r),
            by_offset.get(&r.0),
            "record at its original offset"
        );
    }
    assert_eq!(view(after), view(written));
}

fn active_base(log: &Log) -> u64 {
    log.segment_base_offsets().last().copied().unwrap_or(0)
}

/// Many updates of ten keys, every seventh a delete, in small segments.
fn churn(log: &mut Log, rounds: usize) -> Result<Vec<Rec>, StorageError> {
    let mut written = Vec::new();
    let mut r = 0;
    while r < rounds {
        let n = 1 + r % 3;
        let kvs: Vec<Kv> = (r..r + n)
            .map(|i| {
                let key = format!("k{}", i % 10);
                if i % 7 == 6 {
                    Kv::delete(&key)
                } else {
                    Kv::put(&key, &format!("v{i}"))
                }
            })
            .collect();
        written.extend(put(log, &kvs, Compression::None, NOW + r as i64)?);
        r += n;
    }
    Ok(written)
}

fn file_names(dir: &Path) -> Result<Vec<String>, StorageError> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn cleaning_keeps_the_latest_record_per_key_at_its_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    let written = churn(&mut log, 300)?;
    assert!(log.segment_count() > 5, "test needs many segments");
    let active = active_base(&log);
    let active_file = segment_file(dir.path(), active, "log");
    let active_bytes = fs::read(&active_file)?;
    let size_before = log.size_bytes();

    let stats = log.clean(NOW)?;
    assert_eq!(stats.cleaned_upto, active);
    assert!(stats.records_superseded > 200, "{stats:?}");
    assert_eq!(stats.tombstones_removed, 0, "horizon not reached");
    assert!(log.size_bytes() < size_before / 4);
    assert_eq!(
        fs::read(&active_file)?,
        active_bytes,
        "active segment untouched"
    );
    assert_eq!(log.log_end_offset(), written.len() as u64);
    assert_eq!(log.log_start_offset(), 0);

    let after = records(&log)?;
    assert_preserved(&after, &written);
    let latest = latest_offsets(&written);
    let cleaned: Vec<&Rec> = after.iter().filter(|r| r.0 < active).collect();
    for (o, k, _) in &cleaned {
        let k = k.as_ref().expect("keyed");
        assert_eq!(
            latest.get(k),
            Some(o),
            "only the latest record of a key stays"
        );
    }
    let tombstones = |recs: &[Rec]| {
        recs.iter()
            .filter(|r| r.0 < active && r.2.is_none())
            .count()
    };
    let expected_tombstones = latest
        .values()
        .filter(|&&o| o < active && written[o as usize].2.is_none())
        .count();
    assert!(expected_tombstones > 0, "fixture has a deleted key");
    assert_eq!(
        tombstones(&after),
        expected_tombstones,
        "tombstones kept for now"
    );
    assert!(
        headers(&log)?
            .iter()
            .filter(|h| h.last_offset() < active as i64)
            .all(|h| h.delete_horizon_ms().is_some()
                == after.iter().any(|r| r.2.is_none()
                    && r.0 >= h.base_offset as u64
                    && r.0 <= h.last_offset() as u64)),
        "exactly the batches holding tombstones carry a delete horizon"
    );

    // Before the horizon, later passes change nothing but the layout: segments that shrank
    // merge, once.
    let again = log.clean(NOW + RETENTION - 1)?;
    assert_eq!(again.tombstones_removed, 0);
    assert_eq!(records(&log)?, after);
    let again = log.clean(NOW + RETENTION - 1)?;
    assert_eq!(again.segments_written, 0, "nothing left to rewrite");
    assert_eq!(records(&log)?, after);

    // At the horizon the tombstones go, and the view is the same.
    let last = log.clean(NOW + RETENTION)?;
    assert_eq!(last.tombstones_removed as usize, expected_tombstones);
    let final_recs = records(&log)?;
    assert_eq!(tombstones(&final_recs), 0);
    assert_preserved(&final_recs, &written);
    assert!(
        headers(&log)?
            .iter()
            .all(|h| h.delete_horizon_ms().is_none())
    );
    assert!(!log.needs_cleaning(NOW + 10 * RETENTION));

    // The compacted log, gaps and all, recovers as it is.
    log.close()?;
    for recovery_point in [0, u64::MAX] {
        let log = Log::open(dir.path(), cfg(600), recovery_point, NOW)?;
        assert_eq!(records(&log)?, final_recs);
        assert_eq!(log.log_end_offset(), written.len() as u64);
        drop(log);
    }
    let names = file_names(dir.path())?;
    assert!(names.contains(&COMPACTION_METADATA_FILE.to_string()));
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
        "{names:?}"
    );
    Ok(())
}

#[test]
fn reads_inside_a_gap_return_the_next_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(600), 0, NOW)?;
    let written = churn(&mut log, 200)?;
    log.clean(NOW)?;
    let after = records(&log)?;
    let kept: Vec<u64> = after.iter().map(|r| r.0).collect();
    assert!(kept.len() < written.len() / 2, "fixture has gaps");
    for offset in 0..log.log_end_offset() {
        let next = kept.iter().copied().find(|&o| o >= offset);
        let s = log.read(offset, 1, u64::MAX, true)?;
        let got: Vec<u64> = decode_records(&s.bytes)
            .iter()
            .map(|r| r.offset as u64)
            .collect();
        assert_eq!(
            got.iter().copied().find(|&o| o >= offset),
            next,
            "read at {offset}"
        );
        assert!(got.iter().all(|&o| kept.contains(&o)));
        if let Some(first) = s.first_offset {
            assert!(s.next_offset > offset && first <= next.unwrap_or(u64::MAX));
        }
    }
    // ListOffsets by timestamp lands on a batch that still has records.
    if let Some((o, _)) = log.offset_for_timestamp(NOW)? {
        let s = log.read(o, 1, u64::MAX, true)?;
        assert!(!decode_records(&s.bytes).is_empty());
    }
    Ok(())
}

/// The codec's payload of a batch re-framed as raw snappy (what librdkafka writes).
fn as_raw_snappy(batch: &[u8]) -> Vec<u8> {
    let h = verify(batch).expect("valid");
    let inflated = decompress(Compression::Snappy, &batch[HEADER_LEN..], 1 << 20).expect("inflate");
    let raw = compress(Compression::Snappy, &inflated, SnappyFraming::Raw).expect("compress");
    build_batch(&h, &raw)
}

#[test]
fn compressed_batches_are_cleaned_with_their_codec() -> TestResult {
    let codecs = [
        (Compression::Gzip, false),
        (Compression::Snappy, false),
        (Compression::Snappy, true),
        (Compression::Lz4, false),
        (Compression::Zstd, false),
        (Compression::None, false),
    ];
    for (codec, raw_snappy) in codecs {
        let dir = tempfile::tempdir()?;
        let mut log = Log::open(dir.path(), cfg(2000), 0, NOW)?;
        let mut written = Vec::new();
        for b in 0..30u64 {
            // Five records over three keys, plus a delete now and then.
            let kvs: Vec<Kv> = (0..5)
                .map(|i| {
                    let n = b * 5 + i;
                    let key = format!("key-{}", n % 3);
                    if n % 11 == 10 {
                        Kv::delete(&key)
                    } else {
                        Kv::put(&key, &format!("value {n} {}", "x".repeat(40)))
                    }
                })
                .collect();
            let mut bytes = kv_batch(&kvs, codec, NOW + b as i64 * 10);
            if raw_snappy {
                bytes = as_raw_snappy(&bytes);
            }
            let info = log.append(&[appendable(bytes)], EPOCH, NOW)?;
            written.extend(kvs.iter().enumerate().map(|(i, kv)| {
                (
                    info.first_offset + i as u64,
                    kv.key.clone(),
                    kv.value.clone(),
                )
            }));
            if b % 4 == 3 {
                log.roll()?;
            }
        }
        // The active segment holds only an unrelated key, so the latest value of every key
        // above lies in a cleaned segment.
        log.roll()?;
        written.extend(put(&mut log, &[Kv::put("tail", "t")], codec, NOW)?);
        let stats = log.clean(NOW)?;
        assert!(stats.batches_rewritten > 0, "{codec:?}: {stats:?}");
        assert_eq!(stats.batches_uninspected, 0);
        let after = records(&log)?;
        assert_preserved(&after, &written);
        let s = log.read(0, usize::MAX, u64::MAX, true)?;
        let mut rest = &s.bytes[..];
        while !rest.is_empty() {
            let h = verify(rest).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            assert_eq!(h.compression(), Some(codec), "codec kept");
            if codec == Compression::Snappy && (h.base_offset as u64) < active_base(&log) {
                let framing = SnappyFraming::of(&rest[HEADER_LEN..h.total_len()]);
                let want = if raw_snappy {
                    SnappyFraming::Raw
                } else {
                    SnappyFraming::Xerial
                };
                assert_eq!(framing, want, "snappy framing kept");
            }
            rest = &rest[h.total_len()..];
        }
        // The horizon pass removes the deletes from compressed batches too.
        log.clean(NOW + RETENTION)?;
        let final_recs = records(&log)?;
        assert_preserved(&final_recs, &written);
        let active = active_base(&log);
        assert!(final_recs.iter().all(|r| r.0 >= active || r.2.is_some()));
    }
    Ok(())
}

#[test]
fn idempotent_producer_state_survives_cleaning_and_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    // Producer 42 updates "k" eight times, one batch each; producer 7 writes one record that
    // stays; then a plain batch supersedes every "k".
    for seq in 0..8 {
        let b = kv_batch_from(
            &[Kv::put("k", &format!("p{seq}"))],
            Compression::None,
            NOW + seq as i64,
            42,
            0,
            seq,
        );
        log.append(&[appendable(b)], EPOCH, NOW)?;
        log.roll()?;
    }
    let b = kv_batch_from(&[Kv::put("other", "x")], Compression::Lz4, NOW, 7, 2, 100);
    log.append(&[appendable(b)], EPOCH, NOW)?;
    put(
        &mut log,
        &[Kv::put("k", "final")],
        Compression::None,
        NOW + 100,
    )?;
    log.roll()?;
    put(
        &mut log,
        &[Kv::put("tail", "t")],
        Compression::None,
        NOW + 200,
    )?;

    let before = log.producer_state().clone();
    let stats = log.clean(NOW)?;
    assert_eq!(
        stats.empty_batches_kept, RETAINED_BATCHES as u64,
        "{stats:?}"
    );
    assert_eq!(stats.batches_removed, 8 - RETAINED_BATCHES as u64);
    assert_eq!(log.producer_state(), &before, "live state untouched");
    let hs = headers(&log)?;
    let empty: Vec<_> = hs.iter().filter(|h| h.record_count == 0).collect();
    assert_eq!(empty.len(), RETAINED_BATCHES);
    assert!(
        empty
            .iter()
            .all(|h| h.producer_id == 42 && h.last_offset_delta == 0)
    );
    let recs = records(&log)?;
    assert_eq!(
        recs.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![8, 9, 10],
        "only other, final and tail"
    );

    log.close()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    let after = log.producer_state();
    for pid in [42, 7] {
        let (b, a) = (before.get(pid), after.get(pid));
        assert_eq!(b.map(|e| e.epoch()), a.map(|e| e.epoch()));
        assert_eq!(
            b.and_then(|e| e.last_sequence()),
            a.and_then(|e| e.last_sequence())
        );
        let batches = |e: Option<&crate::ProducerEntry>| {
            e.map(|e| {
                e.batches()
                    .map(|m| (m.first_seq, m.last_seq, m.first_offset, m.last_offset))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(batches(b), batches(a), "producer {pid}");
    }
    assert_eq!(
        &before, after,
        "empty batches keep their max timestamps too"
    );
    // A retry of the last batch is still recognised, and the next sequence is accepted.
    let retry = kv_batch_from(&[Kv::put("k", "p7")], Compression::None, NOW + 7, 42, 0, 7);
    let dup = log.append(&[appendable(retry)], EPOCH, NOW)?;
    assert!(dup.duplicate);
    assert_eq!((dup.first_offset, dup.last_offset), (7, 7));
    let next = kv_batch_from(&[Kv::put("k", "p8")], Compression::None, NOW, 42, 0, 8);
    assert!(!log.append(&[appendable(next)], EPOCH, NOW)?.duplicate);
    // Once producer state has moved on, the next cleaning drops the old empty batches.
    for seq in 9..15 {
        let b = kv_batch_from(&[Kv::put("k", "again")], Compression::None, NOW, 42, 0, seq);
        log.append(&[appendable(b)], EPOCH, NOW)?;
    }
    log.roll()?;
    log.clean(NOW)?;
    assert!(
        headers(&log)?
            .iter()
            .filter(|h| h.record_count == 0)
            .all(|h| h.last_offset() >= 13),
        "only the last five batches of producer 42 remain as headers"
    );
    Ok(())
}

/// A closed log whose non-active segments (several, small) form one cleaning group; returns its
/// records and its segment bases.
fn swap_fixture(template: &Path) -> Result<(Vec<Rec>, Vec<u64>), StorageError> {
    let mut log = Log::open(template, cfg(1 << 20), 0, NOW)?;
    for _ in 0..6 {
        churn(&mut log, 20)?;
        log.roll()?;
    }
    put(&mut log, &[Kv::put("k1", "active")], Compression::None, NOW)?;
    let recs = records(&log)?;
    let bases = log.segment_base_offsets();
    log.close()?;
    Ok((recs, bases))
}

fn copy_dir(from: &Path, to: &Path) -> TestResult {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

#[test]
fn interrupted_swaps_are_finished_or_forgotten_at_open() -> TestResult {
    let root = tempfile::tempdir()?;
    let template = root.path().join("template");
    let (original, bases) = swap_fixture(&template)?;
    assert_eq!(bases.len(), 7);
    let active = bases[6];
    // What a completed cleaning looks like.
    let done = root.path().join("done");
    copy_dir(&template, &done)?;
    let expected = {
        let mut log = Log::open(&done, cfg(1 << 20), 0, NOW)?;
        let stats = log.clean(NOW)?;
        assert_eq!((stats.segments_replaced, stats.segments_written), (6, 1));
        assert_eq!(log.segment_base_offsets(), vec![0, active]);
        let recs = records(&log)?;
        log.close()?;
        recs
    };
    assert_ne!(expected, original);
    let cleaned = fs::read(segment_file(&done, 0, "log"))?;

    type Setup = fn(&Path, &[u64], &[u8]) -> TestResult;
    let crash_points: [(&str, Setup, bool); 5] = [
        (
            "cleaned file written, not committed",
            |d, b, c| {
                fs::write(replacement_file(d, 0, b[6], "cleaned"), c)?;
                Ok(())
            },
            false,
        ),
        (
            "cleaned file half written",
            |d, b, c| {
                fs::write(replacement_file(d, 0, b[6], "cleaned"), &c[..c.len() / 2])?;
                Ok(())
            },
            false,
        ),
        (
            "committed, nothing deleted yet",
            |d, b, c| {
                fs::write(
                    d.join(COMPACTION_METADATA_FILE),
                    format!("version: 0\ngaps_below: {}\n", b[6]),
                )?;
                fs::write(replacement_file(d, 0, b[6], "swap"), c)?;
                Ok(())
            },
            true,
        ),
        (
            "committed, old segments partly deleted",
            |d, b, c| {
                fs::write(
                    d.join(COMPACTION_METADATA_FILE),
                    format!("version: 0\ngaps_below: {}\n", b[6]),
                )?;
                fs::write(replacement_file(d, 0, b[6], "swap"), c)?;
                for base in [b[5], b[4], b[3]] {
                    for ext in ["log", "index", "timeindex"] {
                        fs::remove_file(segment_file(d, base, ext))?;
                    }
                }
                Ok(())
            },
            true,
        ),
        (
            "committed, all old segments deleted, metadata lost",
            |d, b, c| {
                fs::write(replacement_file(d, 0, b[6], "swap"), c)?;
                for &base in &b[..6] {
                    fs::remove_file(segment_file(d, base, "log"))?;
                }
                Ok(())
            },
            true,
        ),
    ];
    for (i, (what, setup, completes)) in crash_points.into_iter().enumerate() {
        let d = root.path().join(format!("crash{i}"));
        copy_dir(&template, &d)?;
        setup(&d, &bases, &cleaned)?;
        // First trusting everything before the end (as after a clean shutdown), then with full
        // recovery.
        for (round, recovery_point) in [u64::MAX, 0].into_iter().enumerate() {
            let log = Log::open(&d, cfg(1 << 20), recovery_point, NOW)?;
            let want = if completes { &expected } else { &original };
            assert_eq!(&records(&log)?, want, "{what}, open #{round}");
            let names = file_names(&d)?;
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
                "{what}: {names:?}"
            );
            if completes {
                assert_eq!(log.segment_base_offsets(), vec![0, active], "{what}");
                assert!(
                    fs::metadata(segment_file(&d, 0, "index"))?.len() > 0,
                    "{what}: the swapped-in segment's index was rebuilt"
                );
            } else {
                assert_eq!(log.segment_base_offsets(), bases, "{what}");
            }
            log.close()?;
        }
    }
    Ok(())
}

#[test]
fn recovery_of_cleaned_segments_still_catches_bad_base_offsets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    // "a" at even offsets (superseded but for the last), unique keys at odd ones: whole
    // batches go, leaving gaps between the batches that stay.
    for i in 0..12 {
        let key = if i % 2 == 0 {
            "a".to_string()
        } else {
            format!("u{i}")
        };
        put(&mut log, &[Kv::put(&key, "v")], Compression::None, NOW)?;
        if i % 5 == 4 {
            log.roll()?;
        }
    }
    log.roll()?;
    let active = active_base(&log);
    put(&mut log, &[Kv::put("x", "1")], Compression::None, NOW)?;
    put(&mut log, &[Kv::put("y", "2")], Compression::None, NOW)?;
    log.clean(NOW)?;
    let cleaned = headers(&log)?;
    let in_cleaned: Vec<_> = cleaned
        .iter()
        .filter(|h| (h.base_offset as u64) < active)
        .collect();
    assert!(in_cleaned.len() >= 3);
    assert!(
        in_cleaned
            .windows(2)
            .any(|w| w[1].base_offset > w[0].last_offset() + 1),
        "fixture has gaps"
    );
    log.close()?;
    let template = tempfile::tempdir()?;
    copy_dir(dir.path(), template.path())?;

    // In the cleaned segment: the third batch's base offset becomes the second's last offset.
    let path = segment_file(dir.path(), 0, "log");
    let mut data = fs::read(&path)?;
    let pos = in_cleaned[0].total_len() + in_cleaned[1].total_len();
    data[pos..pos + 8].copy_from_slice(&in_cleaned[1].last_offset().to_be_bytes());
    fs::write(&path, &data)?;
    let log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    assert_eq!(log.log_end_offset(), in_cleaned[1].last_offset() as u64 + 1);
    assert_eq!(log.segment_count(), 1, "later segments dropped");
    drop(log);

    // In the active segment, contiguity is still required: a base moved up by one ends it.
    let dir = tempfile::tempdir()?;
    copy_dir(template.path(), dir.path())?;
    let path = segment_file(dir.path(), active, "log");
    let mut data = fs::read(&path)?;
    let first = verify(&data).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let pos = first.total_len();
    data[pos..pos + 8].copy_from_slice(&(active as i64 + 2).to_be_bytes());
    fs::write(&path, &data)?;
    let log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    assert_eq!(log.log_end_offset(), active + 1);
    Ok(())
}

#[test]
fn retention_respects_the_cleanup_policy() -> TestResult {
    for (policy, deletes) in [
        (CleanupPolicy::Compact, false),
        (CleanupPolicy::CompactDelete, true),
        (CleanupPolicy::Delete, true),
    ] {
        let dir = tempfile::tempdir()?;
        let mut config = cfg(600);
        config.cleanup_policy = policy;
        config.retention_ms = 1000;
        let mut log = Log::open(dir.path(), config.clone(), 0, NOW)?;
        churn(&mut log, 100)?;
        let count = log.segment_count();
        assert!(count > 3);
        let deleted = log.apply_retention(NOW + 1_000_000)?;
        assert_eq!(deleted > 0, deletes, "{policy:?} by time");
        config.retention_ms = -1;
        config.retention_bytes = 0;
        log.set_config(config);
        churn(&mut log, 100)?;
        let deleted = log.apply_retention(NOW)?;
        assert_eq!(deleted > 0, deletes, "{policy:?} by size");
        if !deletes {
            assert_eq!(log.log_start_offset(), 0);
        }
        // A delete-only log is never compacted.
        churn(&mut log, 50)?;
        log.roll()?;
        let stats = log.clean(NOW)?;
        assert_eq!(stats.segments_examined > 0, policy.compacts());
    }
    Ok(())
}

#[test]
fn min_compaction_lag_and_max_offset_hold_records_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = cfg(600);
    config.min_compaction_lag_ms = 10_000;
    let mut log = Log::open(dir.path(), config.clone(), 0, NOW)?;
    let written = churn(&mut log, 100)?;
    assert!(!log.needs_cleaning(NOW));
    let stats = log.clean(NOW + 5000)?;
    assert_eq!((stats.segments_examined, stats.cleaned_upto), (0, 0));
    assert_eq!(records(&log)?, written);
    config.min_compaction_lag_ms = 0;
    log.set_config(config);

    // A newer "k0" at or above max_offset does not supersede the older ones.
    log.roll()?;
    let top = put(&mut log, &[Kv::put("k0", "newest")], Compression::None, NOW)?;
    let options = CleanOptions {
        max_offset: top[0].0,
        ..CleanOptions::default()
    };
    log.clean_with(NOW, &options)?;
    let after = records(&log)?;
    let k0: Vec<_> = after
        .iter()
        .filter(|r| r.1.as_deref() == Some(b"k0"))
        .collect();
    assert_eq!(k0.len(), 2, "the latest below max_offset and the newest");
    log.clean(NOW)?;
    let k0 = records(&log)?
        .into_iter()
        .filter(|r| r.1.as_deref() == Some(b"k0"))
        .count();
    assert_eq!(k0, 1);
    Ok(())
}

#[test]
fn a_small_key_map_cleans_in_several_passes_and_small_segments_merge() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(4000), 0, NOW)?;
    let mut written = Vec::new();
    for _ in 0..8 {
        written.extend(churn(&mut log, 15)?);
        log.roll()?;
    }
    let written_recs = records(&log)?;
    assert_eq!(written_recs.len(), written.len());
    let segments = log.segment_count();
    let tiny = CleanOptions {
        map_budget_bytes: 1,
        ..CleanOptions::default()
    };
    let mut upto = Vec::new();
    for _ in 0..segments {
        let stats = log.clean_with(NOW, &tiny)?;
        upto.push(stats.cleaned_upto);
        assert_preserved(&records(&log)?, &written_recs);
    }
    assert!(upto.windows(2).all(|w| w[0] <= w[1]), "{upto:?}");
    assert!(upto[0] < active_base(&log), "the first pass stopped early");
    assert_eq!(upto.last().copied(), Some(active_base(&log)));
    // A full pass leaves one record per key below the active segment, and the small segments
    // have been merged.
    log.clean(NOW)?;
    let after = records(&log)?;
    assert_preserved(&after, &written_recs);
    let latest = latest_offsets(&written_recs);
    let active = active_base(&log);
    assert!(
        after
            .iter()
            .filter(|r| r.0 < active)
            .all(|r| r.1.as_ref().and_then(|k| latest.get(k)) == Some(&r.0))
    );
    assert!(
        log.segment_count() < segments / 2,
        "{} segments",
        log.segment_count()
    );
    Ok(())
}

#[test]
fn keyless_records_and_control_batches_are_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut log = Log::open(dir.path(), cfg(1 << 20), 0, NOW)?;
    let mut written = put(
        &mut log,
        &[Kv::keyless("a"), Kv::put("k", "1"), Kv::keyless("b")],
        Compression::Zstd,
        NOW,
    )?;
    written.extend(put(&mut log, &[Kv::put("k", "2")], Compression::None, NOW)?);
    log.roll()?;
    written.extend(put(&mut log, &[Kv::put("k", "3")], Compression::None, NOW)?);
    log.clean(NOW)?;
    let after = records(&log)?;
    assert_eq!(
        after.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0, 2, 4],
        "keyless records stay, superseded ones go"
    );
    assert_preserved(&after, &written);
    Ok(())
}

#[test]
fn reopened_logs_remember_pending_tombstone_horizons() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = cfg(1 << 20);
    config.min_cleanable_dirty_ratio = 0.99;
    let mut log = Log::open(dir.path(), config.clone(), 0, NOW)?;
    put(
        &mut log,
        &[Kv::put("a", "1"), Kv::delete("b")],
        Compression::None,
        NOW,
    )?;
    log.roll()?;
    put(&mut log, &[Kv::put("c", "1")], Compression::None, NOW)?;
    assert!(log.needs_cleaning(NOW), "all cleanable bytes are dirty");
    log.clean(NOW)?;
    assert!(!log.needs_cleaning(NOW + RETENTION - 1));
    assert!(
        log.needs_cleaning(NOW + RETENTION),
        "tombstone horizon reached"
    );
    log.close()?;
    let mut log = Log::open(dir.path(), config, 0, NOW)?;
    log.set_cleaner_checkpoint(2);
    assert!(!log.needs_cleaning(NOW + RETENTION - 1));
    assert!(log.needs_cleaning(NOW + RETENTION));
    let stats = log.clean(NOW + RETENTION)?;
    assert_eq!(stats.tombstones_removed, 1);
    assert!(!log.needs_cleaning(NOW + 100 * RETENTION));
    Ok(())
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    /// A batch of `(key, value)` with keys from a small set (`None`: keyless) and values by
    /// length (`None`: tombstone), in codec `usize`.
    Append(Vec<(Option<u8>, Option<u8>)>, usize),
    Roll,
    /// Clean after moving the clock forward by this much.
    Clean(i64),
    /// Close and reopen, with full recovery or trusting flushed data.
    Reopen(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        proptest::option::weighted(0.95, 0u8..6),
        proptest::option::weighted(0.8, 0u8..40),
    );
    prop_oneof![
        6 => (proptest::collection::vec(record, 1..5), 0usize..5).prop_map(|(r, c)| Op::Append(r, c)),
        1 => Just(Op::Roll),
        2 => (0i64..(2 * RETENTION)).prop_map(Op::Clean),
        1 => any::<bool>().prop_map(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn cleaning_at_random_points_matches_a_model(
        ops in proptest::collection::vec(op(), 1..60),
        segment_bytes in 300u64..1500,
    ) {
        let codecs = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];
        let dir = tempfile::tempdir().expect("tempdir");
        let config = cfg(segment_bytes);
        let mut log = Log::open(dir.path(), config.clone(), 0, NOW).expect("open");
        let mut written: Vec<Rec> = Vec::new();
        let mut now = NOW;
        // Delete horizon of each tombstone, set by the first cleaning that covered it.
        let mut horizon: HashMap<u64, i64> = HashMap::new();
        for op in ops {
            match op {
                Op::Append(recs, codec) => {
                    let kvs: Vec<Kv> = recs.iter().map(|(k, v)| Kv {
                        key: k.map(|k| format!("key{k}").into_bytes()),
                        value: v.map(|n| vec![b'a' + n % 26; n as usize]),
                    }).collect();
                    written.extend(put(&mut log, &kvs, codecs[codec], now).expect("append"));
                }
                Op::Roll => log.roll().expect("roll"),
                Op::Clean(dt) => {
                    now += dt;
                    let stats = log.clean(now).expect("clean");
                    let latest = latest_offsets(&written);
                    for (o, k, v) in &written {
                        if *o < stats.cleaned_upto && k.is_some() && v.is_none() && latest.get(k.as_ref().expect("key")) == Some(o) {
                            horizon.entry(*o).or_insert(now + RETENTION);
                        }
                    }
                    let after = records(&log).expect("read");
                    assert_preserved(&after, &written);
                    let kept: HashMap<u64, &Rec> = after.iter().map(|r| (r.0, r)).collect();
                    for (o, k, v) in written.iter().filter(|r| r.0 < stats.cleaned_upto) {
                        let expected = match k {
                            None => true,
                            Some(k) => latest.get(k) == Some(o)
                                && (v.is_some() || horizon.get(o).is_some_and(|&t| now < t)),
                        };
                        prop_assert_eq!(kept.contains_key(o), expected, "offset {} after cleaning at {}", o, now);
                    }
                }
                Op::Reopen(full) => {
                    let checkpoint = log.cleaner_checkpoint();
                    let rp = log.flush().expect("flush");
                    let before = records(&log).expect("read");
                    log.close().expect("close");
                    log = Log::open(dir.path(), config.clone(), if full { 0 } else { rp }, NOW).expect("reopen");
                    log.set_cleaner_checkpoint(checkpoint);
                    prop_assert_eq!(records(&log).expect("read"), before);
                }
            }
        }
        let after = records(&log).expect("read");
        assert_preserved(&after, &written);
        prop_assert_eq!(log.log_end_offset(), written.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// A cleaning stopped at any point by an I/O error (after `fail_after` operations of the
    /// chosen kinds), then a crash: the reopened log finishes or forgets the interrupted swap
    /// and serves the same records a consumer would have seen, at their offsets, with nothing
    /// lost from its end.
    #[test]
    fn crash_during_cleaning_loses_nothing(
        rounds in 20usize..70,
        segment_bytes in 300u64..900,
        fail_after in 0u64..40,
        ops in proptest::sample::subsequence(
            vec![FaultOp::Write, FaultOp::Sync, FaultOp::SyncDir, FaultOp::Metadata, FaultOp::SetLen],
            1..=5,
        ),
        mode in prop_oneof![
            Just(CrashMode::PowerLoss),
            Just(CrashMode::ProcessKill),
            any::<u64>().prop_map(|seed| CrashMode::Random { seed }),
        ],
        trust in any::<bool>(),
    ) {
        let fs = SimFs::new();
        let dir = Path::new("/c/t-0");
        crate::testutil::durable_dir(&fs, dir).expect("dir");
        let config = cfg(segment_bytes);
        let open = |rp| Log::open_with_fs(fs.shared(), dir, config.clone(), rp, None, NOW);
        let mut log = open(0).expect("open");
        let written = churn(&mut log, rounds).expect("churn");
        log.roll().expect("roll");
        let rp = log.flush().expect("flush");
        fs.inject(Fault::new(FaultKind::Io, &ops).after(fail_after));
        let _ = log.clean(NOW);
        fs.clear_faults();
        fs.crash(mode);
        drop(log);
        let log = open(if trust { rp } else { 0 }).expect("reopen");
        let after = records(&log).expect("read");
        assert_preserved(&after, &written);
        prop_assert_eq!(log.log_end_offset(), written.len() as u64);
        for seg in log.segments_for_test() {
            prop_assert!(seg.indexes_consistent().expect("check"));
        }
    }
}
