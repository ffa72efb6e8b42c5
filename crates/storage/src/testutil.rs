//! Real record batches for tests, built with the `kafka-protocol` encoder.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use vltava_protocol::batch::{BatchHeader, Compression as BatchCompression, validate_produced};

/// Creates `dir` on `fs` with every entry along the way durable, as a data directory that
/// existed before the test.
pub(crate) fn durable_dir(fs: &crate::SimFs, dir: &std::path::Path) -> std::io::Result<()> {
    use crate::Fs;
    fs.create_dir_all(dir)?;
    let mut cur = std::path::PathBuf::from("/");
    fs.sync_dir(&cur)?;
    for c in dir.components().skip(1) {
        cur.push(c);
        fs.sync_dir(&cur)?;
    }
    Ok(())
}

/// A batch as the broker hands it to `Log::append`.
pub(crate) type TestBatch = (BatchHeader, Bytes);

/// Describes a batch to build.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) records: usize,
    pub(crate) value_len: usize,
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) sequence: i32,
    pub(crate) timestamp: i64,
}

impl Spec {
    /// A non-idempotent batch of `records` records with `value_len`-byte values.
    pub(crate) fn plain(records: usize, value_len: usize) -> Spec {
        Spec {
            records,
            value_len,
            producer_id: -1,
            epoch: -1,
            sequence: -1,
            timestamp: 1_700_000_000_000,
        }
    }

    /// An idempotent batch.
    pub(crate) fn idempotent(records: usize, producer_id: i64, epoch: i16, sequence: i32) -> Spec {
        Spec {
            producer_id,
            epoch,
            sequence,
            ..Spec::plain(records, 10)
        }
    }

    /// Same batch with first record timestamp `ts` (record i has `ts + i`).
    pub(crate) fn at(mut self, ts: i64) -> Spec {
        self.timestamp = ts;
        self
    }

    /// Encodes and validates the batch.
    pub(crate) fn build(&self) -> TestBatch {
        let records: Vec<Record> = (0..self.records)
            .map(|i| Record {
                transactional: false,
                delete_horizon: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch only while offset - sequence is
                // constant.
                sequence: if self.producer_id >= 0 {
                    self.sequence.wrapping_add(i as i32)
                } else {
                    i as i32
                },
                timestamp: self.timestamp + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![(i % 251) as u8; self.value_len])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encode test batch");
        let bytes = buf.freeze();
        let header = validate_produced(&bytes).expect("valid test batch");
        (header, bytes)
    }
}

/// Wraps a single batch for `Log::append`.
pub(crate) fn one(spec: Spec) -> Vec<TestBatch> {
    vec![spec.build()]
}

/// One record of a keyed test batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kv {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
}

impl Kv {
    /// `key` set to `value`.
    pub(crate) fn put(key: &str, value: &str) -> Kv {
        Kv {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    /// A tombstone for `key`.
    pub(crate) fn delete(key: &str) -> Kv {
        Kv {
            key: Some(key.as_bytes().to_vec()),
            value: None,
        }
    }

    /// A record without a key.
    pub(crate) fn keyless(value: &str) -> Kv {
        Kv {
            key: None,
            value: Some(value.as_bytes().to_vec()),
        }
    }
}

/// Encodes `records` as one non-idempotent batch; record i has timestamp `timestamp + i`.
pub(crate) fn kv_batch(records: &[Kv], codec: BatchCompression, timestamp: i64) -> Vec<u8> {
    kv_batch_from(records, codec, timestamp, -1, -1, -1)
}

/// Encodes `records` as one batch of producer `producer_id` (or -1), starting at `sequence`.
pub(crate) fn kv_batch_from(
    records: &[Kv],
    codec: BatchCompression,
    timestamp: i64,
    producer_id: i64,
    epoch: i16,
    sequence: i32,
) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, kv)| Record {
            transactional: false,
            delete_horizon: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if producer_id >= 0 {
                sequence.wrapping_add(i as i32)
            } else {
                i as i32
            },
            timestamp: timestamp + i as i64,
            key: kv.key.clone().map(Bytes::from),
            value: kv.value.clone().map(Bytes::from),
            headers: Default::default(),
        })
        .collect();
    let compression = match codec {
        BatchCompression::None => Compression::None,
        BatchCompression::Gzip => Compression::Gzip,
        BatchCompression::Snappy => Compression::Snappy,
        BatchCompression::Lz4 => Compression::Lz4,
        BatchCompression::Zstd => Compression::Zstd,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode test batch");
    buf.to_vec()
}

/// A batch ready for `Log::append`.
pub(crate) fn appendable(bytes: Vec<u8>) -> TestBatch {
    let header = validate_produced(&bytes).expect("valid test batch");
    (header, Bytes::from(bytes))
}

/// Every record in `bytes` (whole batches, as a read returns them), decoded by the
/// `kafka-protocol` crate, an implementation independent of the cleaner's.
pub(crate) fn decode_records(bytes: &[u8]) -> Vec<Record> {
    let mut buf = Bytes::copy_from_slice(bytes);
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("batches decode")
        .into_iter()
        .flat_map(|set| set.records)
        .collect()
}
