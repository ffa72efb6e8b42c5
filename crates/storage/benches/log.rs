//! Micro-benchmarks of a partition log on a real file system (a temporary directory), through
//! the public `Log` API the broker uses.
//!
//! - `append`: `Log::append` of one ~1 MiB batch (1000 records of 1 KiB) per call, without
//!   fsync (`flush.on.append` off, `flush.messages` / `flush.ms` never due): producer checks,
//!   the 16-byte header rewrite and one vectored write into the page cache, plus index
//!   upkeep. Every 64 appends the log is truncated back outside the timed region, so the
//!   bench never holds more than 64 MiB in the page cache and never waits for the disk.
//! - `read`: `Log::read` (locate, then copy into one buffer) with `min_one_batch` and the high
//!   watermark at the log end: a 1 MiB budget over 1 MiB batches (one batch a read), a 16 MiB
//!   budget (16 batches), and a 1 MiB budget over small batches (about 1000 batches a read).
//!   `regions_*` is `Log::read_regions` on the same reads: what the broker's fetch does under
//!   the partition lock before it sends the ranges with sendfile (locating only, so its
//!   throughput is in calls/s). Files are in the page cache: this is CPU and copy cost, not
//!   disk speed.
//! - `lookup`: one segment of 100 000 single-record batches (about 110 MB; with the default
//!   `index.interval.bytes` of 4096, about 25 000 offset and time index entries).
//!   `offset` is `Log::read` with a zero budget at a pseudo-random offset, which does exactly
//!   the fetch path's offset → position lookup (segment search, offset index binary search, a
//!   read of the headers from the index entry to the target) and copies nothing; `timestamp`
//!   is `Log::offset_for_timestamp` (ListOffsets by time: time index, then offset lookup,
//!   then header walk) at a pseudo-random time.
//!
//! Throughput: records/s and bytes/s for `append` and `read`, calls/s for `read/regions_*`
//! and `lookup`.
//!
//! Batches are built with `vltava_protocol::records::RecordView::encode` and
//! `vltava_protocol::batch::build_batch`, uncompressed, from a non-idempotent producer.
//!
//! Run: `cargo bench -p vltava-storage --bench log` (about 40 s of measuring, plus a
//! few seconds to build the logs, about 250 MB in all), a subset with a filter
//! (`... -- lookup/`), a smoke run with `... -- --quick`. The temporary directories are under
//! `$TMPDIR` (default `/tmp`) and removed at the end. Numbers from a shared 2-core machine are
//! noisy: compare runs made back to back on the same machine.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use vltava_protocol::batch::{self, BatchHeader};
use vltava_protocol::records::RecordView;
use vltava_storage::{Log, LogConfig};

const NOW_MS: i64 = 1_700_000_000_000;
const EPOCH: i32 = 5;
/// Appends between two untimed truncations in the append bench.
const APPENDS_PER_ROUND: u64 = 64;

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A batch of `count` records with `value_len`-byte values (random hex, cut from a shared pool
/// at a random place) and keys `key-<i>`, timestamps from `base_timestamp` one millisecond
/// apart, as a non-idempotent producer sends it, with its header.
fn build_batch(
    rng: &mut Rng,
    count: usize,
    value_len: usize,
    base_timestamp: i64,
) -> (BatchHeader, Vec<u8>) {
    let pool = value_pool();
    let mut records = Vec::with_capacity(count * (value_len + 24));
    for i in 0..count {
        let key = format!("key-{i:06}").into_bytes();
        let at = (rng.next() % (pool.len() - value_len) as u64) as usize;
        RecordView {
            attributes: 0,
            timestamp_delta: i as i64,
            offset_delta: i as i32,
            key: Some(&key),
            value: Some(&pool[at..at + value_len]),
            headers: &[0], // header count 0
        }
        .encode(&mut records);
    }
    let header = BatchHeader {
        base_offset: 0,
        batch_length: 0, // computed by build_batch
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0, // computed by build_batch
        attributes: 0,
        last_offset_delta: count as i32 - 1,
        base_timestamp,
        max_timestamp: base_timestamp + count as i64 - 1,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: count as i32,
    };
    let bytes = batch::build_batch(&header, &records);
    // The broker hands storage the header validate_produced returned.
    let header = batch::validate_produced(&bytes).expect("bench batch must be valid");
    (header, bytes)
}

/// 64 KiB of random hex digits that record values are cut from.
fn value_pool() -> &'static [u8] {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        (0..64 << 10)
            .map(|_| HEX[(rng.next() % 16) as usize])
            .collect()
    })
}

/// A log with the broker's defaults, never fsynced by the append path.
fn open_log(dir: &Path) -> Log {
    let config = LogConfig {
        flush_on_append: false,
        ..LogConfig::default()
    };
    Log::open(dir, config, 0, NOW_MS).expect("open log")
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    g
}

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path());
    let mut rng = Rng(1);
    // A one-record batch at offset 0 keeps the segment file open across the untimed
    // truncations below: `truncate_to(1)` then cuts the file (dropping its dirty pages)
    // instead of deleting and recreating it. (Closing a file that was created with O_TRUNC
    // makes ext4 start writing it back, which would put disk writes into the bench.)
    log.append(&[build_batch(&mut rng, 1, 100, NOW_MS)], EPOCH, NOW_MS)
        .expect("append");
    let batches = [build_batch(&mut rng, 1000, 1024, NOW_MS)];
    let len = batches[0].1.len() as u64;

    let mut g = group(c, "append");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1000,
        bytes: len,
    });
    g.bench_function("1MiB_batch", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(APPENDS_PER_ROUND);
                let start = Instant::now();
                for _ in 0..n {
                    black_box(log.append(&batches, EPOCH, NOW_MS).expect("append"));
                }
                timed += start.elapsed();
                left -= n;
                // Untimed: cut the log back so the bench does not fill the disk.
                log.truncate_to(1).expect("truncate");
            }
            timed
        })
    });
    g.finish();
}

fn bench_read(c: &mut Criterion) {
    // 64 batches of ~1 MiB.
    let big_dir = tempfile::tempdir().expect("tempdir");
    let mut big_log = open_log(big_dir.path());
    let mut rng = Rng(2);
    for i in 0..64 {
        let b = build_batch(&mut rng, 1000, 1024, NOW_MS + i * 1000);
        big_log.append(&[b], EPOCH, NOW_MS).expect("append");
    }
    // ~64 MiB of 1-record batches of ~1 KiB.
    let small_dir = tempfile::tempdir().expect("tempdir");
    let mut small_log = open_log(small_dir.path());
    let small_batches = 60_000;
    append_small_batches(&mut small_log, &mut rng, small_batches);

    let mut g = group(c, "read");
    for (name, log, budget, batches) in [
        ("1MiB_budget_1MiB_batches", &big_log, 1usize << 20, 64u64),
        ("16MiB_budget_1MiB_batches", &big_log, 16 << 20, 64),
        (
            "1MiB_budget_1KiB_batches",
            &small_log,
            1 << 20,
            small_batches,
        ),
    ] {
        let end = log.log_end_offset();
        let records_per_batch = end / batches;
        // Fetch positions at batch starts, spread so a read never runs into the log end.
        let starts: Vec<u64> = (0..batches / 2).map(|i| i * records_per_batch).collect();
        let sample = log.read(starts[0], budget, end, true).expect("read");
        g.throughput(Throughput::ElementsAndBytes {
            elements: sample.next_offset - starts[0],
            bytes: sample.bytes.len() as u64,
        });
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7) % starts.len();
                log.read(starts[i], budget, end, true).expect("read")
            })
        });
        // What the broker's fetch does under the partition lock since it sends by sendfile:
        // locate the same batches as file ranges, copy nothing. Per call: the work is a few
        // index lookups and header reads, whatever the size of the range.
        g.throughput(Throughput::Elements(1));
        let mut i = 0;
        g.bench_function(format!("regions_{name}"), |b| {
            b.iter(|| {
                i = (i + 7) % starts.len();
                log.read_regions(starts[i], budget, end, true)
                    .expect("read_regions")
            })
        });
    }
    g.finish();
}

/// Appends `count` single-record batches (1 KiB values), 100 per call, with timestamps 10 ms
/// apart so the time index grows with the offset index.
fn append_small_batches(log: &mut Log, rng: &mut Rng, count: u64) {
    let mut ts = NOW_MS;
    let mut pending = Vec::with_capacity(100);
    for _ in 0..count {
        pending.push(build_batch(rng, 1, 1024, ts));
        ts += 10;
        if pending.len() == 100 {
            log.append(&pending, EPOCH, NOW_MS).expect("append");
            pending.clear();
        }
    }
    if !pending.is_empty() {
        log.append(&pending, EPOCH, NOW_MS).expect("append");
    }
}

fn bench_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path());
    let count = 100_000;
    append_small_batches(&mut log, &mut Rng(3), count);
    let end = log.log_end_offset();
    let mut rng = Rng(4);
    let offsets: Vec<u64> = (0..4096).map(|_| rng.next() % end).collect();
    let times: Vec<i64> = (0..4096)
        .map(|_| NOW_MS + (rng.next() % (count * 10)) as i64)
        .collect();

    let mut g = group(c, "lookup");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("offset", |b| {
        b.iter(|| {
            i = (i + 1) % offsets.len();
            // A zero budget without min_one_batch: locate the batch, copy nothing.
            let slice = log.read(offsets[i], 0, end, false).expect("read");
            debug_assert!(slice.bytes.is_empty());
            slice.first_offset
        })
    });
    let mut i = 0;
    g.bench_function("timestamp", |b| {
        b.iter(|| {
            i = (i + 1) % times.len();
            log.offset_for_timestamp(times[i])
                .expect("lookup")
                .expect("found")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_read, bench_lookup);
criterion_main!(benches);
