//! Micro-benchmarks of the protocol work a produce or fetch request costs the broker before
//! it reaches storage, through the crate's public API and in the broker's own call order.
//!
//! - `frame_decode`: `frame::check_frame_len` + `frame::decode_header` + `frame::decode_body`
//!   (which runs the `bounds::check_request_body` pre-scan, then the `kafka-protocol`
//!   decoder), as `broker::server::process` calls them, for a Produce v11 request carrying one
//!   ~1 MiB batch (1000 records of 1 KiB) and for Fetch v12 requests of 1 and 100 partitions.
//!   `bounds_scan/*` is the pre-scan alone.
//! - `produce_path`: the above plus `batch::split_produced` of every partition's records, as
//!   `broker::handlers::produce` does: all protocol-side CPU of a produce request.
//! - `batch`: `batch::verify` (header + CRC32C only), `batch::validate_produced` (CRC plus
//!   header checks plus, uncompressed only, the walk over every record's framing) of
//!   1000 x 1 KiB records, uncompressed and LZ4; `batch::set_base_offset_and_epoch`.
//!
//! Batches are built with `records::RecordView::encode`, `compression::compress` and
//! `batch::build_batch`; values are JSON-looking text (LZ4 compresses them about 2x).
//! Throughput: `frame_decode` and `bounds_scan` in requests/s (both step over the records
//! without reading them, so their cost does not grow with the batch); `produce_path` and
//! `batch` in records/s and bytes/s of the frame or batch as sent (for LZ4, the compressed
//! bytes); `set_base_offset_and_epoch` in rewrites/s.
//!
//! Run: `cargo bench -p vltava-protocol --bench protocol` (under a minute of measuring), a
//! subset with a filter (`... -- batch/`), a smoke run with `... -- --quick`. Numbers from a
//! shared 2-core machine are noisy: compare runs made back to back on the same machine.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, ProduceRequest, RequestHeader, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use vltava_protocol::batch::{self, BatchHeader, Compression};
use vltava_protocol::compression::{self, SnappyFraming};
use vltava_protocol::records::RecordView;
use vltava_protocol::{bounds, frame};

/// Records per batch and value size: 1000 x 1 KiB, about 1 MiB per batch.
const RECORDS: usize = 1000;
const VALUE_LEN: usize = 1024;
/// The versions our client speaks to our broker (`client::producer::conn`, `consumer::fetcher`).
const PRODUCE_VERSION: i16 = 11;
const FETCH_VERSION: i16 = 12;

/// Deterministic pseudo-random bytes (xorshift64*), so every run builds the same batches.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A JSON-looking value of exactly `len` bytes: a few fields, then words drawn at random from
/// a small vocabulary, so it compresses roughly like typical event data (LZ4 about 2x).
fn value(rng: &mut Rng, seq: usize, len: usize) -> Vec<u8> {
    const WORDS: [&str; 32] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra",
        "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "checkout", "session",
        "basket", "search", "click", "scroll",
    ];
    let mut v = format!(
        "{{\"seq\":{seq},\"user\":\"user-{:06}\",\"event\":\"page_view\",\"text\":\"",
        rng.next() % 1_000_000
    )
    .into_bytes();
    while v.len() < len - 2 {
        v.extend_from_slice(WORDS[(rng.next() % 32) as usize].as_bytes());
        v.push(b' ');
    }
    v.truncate(len - 2);
    v.extend_from_slice(b"\"}");
    v
}

/// The records section of `count` records (key `key-<i>`, no headers), then the whole batch as
/// a non-idempotent producer sends it, compressed with `codec`.
fn build_batch(count: usize, value_len: usize, codec: Compression) -> Vec<u8> {
    let mut rng = Rng(0x5eed_0f7a_1a7a);
    let mut records = Vec::with_capacity(count * (value_len + 24));
    for i in 0..count {
        let key = format!("key-{i:06}").into_bytes();
        let value = value(&mut rng, i, value_len);
        RecordView {
            attributes: 0,
            timestamp_delta: i as i64,
            offset_delta: i as i32,
            key: Some(&key),
            value: Some(&value),
            headers: &[0], // header count 0
        }
        .encode(&mut records);
    }
    let (payload, attributes) = match codec {
        Compression::None => (records, 0),
        other => {
            let attributes = match other {
                Compression::Gzip => 1,
                Compression::Snappy => 2,
                Compression::Lz4 => 3,
                _ => 4,
            };
            let compressed = compression::compress(other, &records, SnappyFraming::Raw)
                .expect("compressing bench records");
            (compressed, attributes)
        }
    };
    let base_timestamp = 1_700_000_000_000;
    let header = BatchHeader {
        base_offset: 0,
        batch_length: 0, // computed by build_batch
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0, // computed by build_batch
        attributes,
        last_offset_delta: count as i32 - 1,
        base_timestamp,
        max_timestamp: base_timestamp + count as i64 - 1,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: count as i32,
    };
    let batch = batch::build_batch(&header, &payload);
    batch::validate_produced(&batch).expect("bench batch must be valid");
    batch
}

/// A request frame as the broker reads it: the 4-byte length prefix and the frame after it.
fn encode_frame<B: Encodable>(api: ApiKey, version: i16, body: &B) -> ([u8; 4], Bytes) {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("vltava-bench")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("encoding request header");
    body.encode(&mut buf, version)
        .expect("encoding request body");
    let len = i32::try_from(buf.len()).expect("frame fits an i32");
    (len.to_be_bytes(), buf.freeze())
}

fn produce_frame(batch: &[u8]) -> ([u8; 4], Bytes) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("bench-events")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::copy_from_slice(batch))),
                ]),
        ]);
    encode_frame(ApiKey::Produce, PRODUCE_VERSION, &request)
}

/// A consumer's Fetch: `topics` topics of `partitions` partitions each, no fetch session.
fn fetch_frame(topics: usize, partitions: usize) -> ([u8; 4], Bytes) {
    let topics = (0..topics)
        .map(|t| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(format!(
                    "bench-events-{t}"
                ))))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p as i32)
                                .with_current_leader_epoch(0)
                                .with_fetch_offset(12_345_678)
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    encode_frame(ApiKey::Fetch, FETCH_VERSION, &request)
}

/// Length check, header, bounds pre-scan and body decode: `broker::server` up to dispatch.
fn decode_frame(prefix: [u8; 4], frame_bytes: &Bytes) -> RequestKind {
    let len = frame::check_frame_len(black_box(prefix), frame::SOCKET_REQUEST_MAX_BYTES_DEFAULT)
        .expect("frame length");
    debug_assert_eq!(len, frame_bytes.len());
    let raw = frame::decode_header(frame_bytes.clone()).expect("request header");
    let version = raw.header.request_api_version;
    frame::decode_body(raw.api_key, version, raw.body).expect("request body")
}

fn quick_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    g
}

fn bench_frames(c: &mut Criterion) {
    let batch = build_batch(RECORDS, VALUE_LEN, Compression::None);
    let (produce_prefix, produce) = produce_frame(&batch);
    let (fetch1_prefix, fetch1) = fetch_frame(1, 1);
    let (fetch100_prefix, fetch100) = fetch_frame(4, 25);

    // Per request: the records are handed on as a `Bytes` view, never copied or read here,
    // so a bytes/s figure would only scale with the batch size (see `produce_path`).
    let mut g = quick_group(c, "frame_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("produce_v11_1MiB", |b| {
        b.iter(|| decode_frame(produce_prefix, &produce))
    });
    g.bench_function("fetch_v12_1_partition", |b| {
        b.iter(|| decode_frame(fetch1_prefix, &fetch1))
    });
    g.bench_function("fetch_v12_100_partitions", |b| {
        b.iter(|| decode_frame(fetch100_prefix, &fetch100))
    });
    g.finish();

    // The pre-scan alone, on the body after the header (as decode_body sees it).
    let produce_body = frame::decode_header(produce.clone()).expect("header").body;
    let fetch100_body = frame::decode_header(fetch100.clone()).expect("header").body;
    // Per request, not per byte: the scan steps over the records without reading them.
    let mut g = quick_group(c, "bounds_scan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("produce_v11_1MiB", |b| {
        b.iter(|| {
            bounds::check_request_body(
                ApiKey::Produce as i16,
                PRODUCE_VERSION,
                black_box(&produce_body),
            )
        })
    });
    g.bench_function("fetch_v12_100_partitions", |b| {
        b.iter(|| {
            bounds::check_request_body(
                ApiKey::Fetch as i16,
                FETCH_VERSION,
                black_box(&fetch100_body),
            )
        })
    });
    g.finish();

    let mut g = quick_group(c, "produce_path");
    g.throughput(Throughput::ElementsAndBytes {
        elements: RECORDS as u64,
        bytes: produce.len() as u64,
    });
    g.bench_function("decode_and_split_1MiB", |b| {
        b.iter(|| {
            let RequestKind::Produce(request) = decode_frame(produce_prefix, &produce) else {
                unreachable!("a produce frame decodes to a produce request");
            };
            let mut batches = 0;
            for topic in request.topic_data {
                for partition in topic.partition_data {
                    let records = partition.records.unwrap_or_default();
                    batches += batch::split_produced(records).expect("valid batches").len();
                }
            }
            batches
        })
    });
    g.finish();
}

fn bench_batches(c: &mut Criterion) {
    let plain = build_batch(RECORDS, VALUE_LEN, Compression::None);
    let lz4 = build_batch(RECORDS, VALUE_LEN, Compression::Lz4);
    eprintln!(
        "batch: {RECORDS} records of {VALUE_LEN} B values: {} B uncompressed, {} B lz4",
        plain.len(),
        lz4.len()
    );
    let plain_bytes = Bytes::from(plain.clone());

    let mut g = quick_group(c, "batch");
    g.throughput(Throughput::ElementsAndBytes {
        elements: RECORDS as u64,
        bytes: plain.len() as u64,
    });
    g.bench_function("verify_crc_only/none", |b| {
        b.iter(|| batch::verify(black_box(&plain)).expect("valid"))
    });
    g.bench_function("validate_produced/none", |b| {
        b.iter(|| batch::validate_produced(black_box(&plain)).expect("valid"))
    });
    g.bench_function("split_produced/none", |b| {
        b.iter(|| batch::split_produced(black_box(plain_bytes.clone())).expect("valid"))
    });
    g.throughput(Throughput::ElementsAndBytes {
        elements: RECORDS as u64,
        bytes: lz4.len() as u64,
    });
    g.bench_function("validate_produced/lz4", |b| {
        b.iter(|| batch::validate_produced(black_box(&lz4)).expect("valid"))
    });
    g.throughput(Throughput::Elements(1));
    let mut stamped = plain.clone();
    let mut next = 0i64;
    g.bench_function("set_base_offset_and_epoch", |b| {
        b.iter(|| {
            next += RECORDS as i64;
            batch::set_base_offset_and_epoch(black_box(&mut stamped), next, 3);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_frames, bench_batches);
criterion_main!(benches);
