//! Real record batches for tests, built with the `kafka-protocol` encoder.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use vltava_protocol::batch::{BatchHeader, validate_produced};

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
