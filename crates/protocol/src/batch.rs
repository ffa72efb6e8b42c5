//! Record batch v2 (magic 2): a validated view over the bytes a producer sent.
//!
//! Batches are stored exactly as received; the broker only rewrites `baseOffset` and
//! `partitionLeaderEpoch`, which lie before the CRC-covered region, so rewriting them never
//! invalidates the CRC and never requires recompression.

use bytes::{Buf, Bytes};

/// Size of the fixed batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s payload: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD: usize = 12;
/// Offset of the first byte covered by the CRC (the attributes field).
const CRC_START: usize = 21;

/// Attribute bits holding the compression codec.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit: timestamps are log-append times.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit: the batch holds control records (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;
/// Attribute bit set by log compaction (KIP-534): `baseTimestamp` holds the delete horizon,
/// the time after which the batch's tombstones may be removed; record timestamp deltas stay
/// relative to it.
pub const ATTR_DELETE_HORIZON: i16 = 0x40;
/// Kafka's "no timestamp".
pub const NO_TIMESTAMP: i64 = -1;

const OFF_BASE_OFFSET: usize = 0;
const OFF_BATCH_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length needs.
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the batch declares it needs.
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// A declared length that cannot be a valid batch.
    #[error("invalid record batch length {0}")]
    InvalidLength(i32),
    /// Only message format v2 is supported.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// Stored CRC32C does not match the bytes.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CorruptCrc {
        /// CRC found in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Header fields contradict each other or the records.
    #[error("invalid record batch: {0}")]
    Invalid(&'static str),
}

/// Compression codec from the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed records.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Snappy, raw or xerial-framed.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Codec from the low 3 bits of the attributes; `None` if unknown.
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & 0x07 {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Header fields of one batch, copied out of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes following the batchLength field.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker at append.
    pub partition_leader_epoch: i32,
    /// Format version; always 2 once validated.
    pub magic: i8,
    /// CRC32C of the bytes from the attributes to the end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Total size of the batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    /// Compression codec (None for an unknown codec, which validation rejects).
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes)
    }
    /// True if timestamps are log-append times rather than create times.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
    /// True for a batch written inside a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    /// True for a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    /// The delete horizon set by log compaction (KIP-534): `baseTimestamp` when the
    /// delete-horizon attribute bit is set.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & ATTR_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }
    /// Sequence number of the last record, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }
    /// True if the batch carries an idempotent producer id.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads the declared total size of the batch at the start of `buf` (12 + batchLength),
/// without validating anything else. `None` if fewer than 12 bytes are present.
pub fn peek_total_len(buf: &[u8]) -> Option<Result<usize, BatchError>> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, OFF_BATCH_LENGTH);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Some(Err(BatchError::InvalidLength(len)));
    }
    Some(Ok(LOG_OVERHEAD + len as usize))
}

/// Parses the header at the start of `buf` without checking the CRC.
/// `buf` may be longer than the batch.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    }
    let batch_length = be_i32(buf, OFF_BATCH_LENGTH);
    if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::InvalidLength(batch_length));
    }
    let magic = buf[OFF_MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, OFF_BASE_OFFSET),
        batch_length,
        partition_leader_epoch: be_i32(buf, OFF_LEADER_EPOCH),
        magic,
        crc: be_i32(buf, OFF_CRC) as u32,
        attributes: be_i16(buf, OFF_ATTRIBUTES),
        last_offset_delta: be_i32(buf, OFF_LAST_OFFSET_DELTA),
        base_timestamp: be_i64(buf, OFF_BASE_TIMESTAMP),
        max_timestamp: be_i64(buf, OFF_MAX_TIMESTAMP),
        producer_id: be_i64(buf, OFF_PRODUCER_ID),
        producer_epoch: be_i16(buf, OFF_PRODUCER_EPOCH),
        base_sequence: be_i32(buf, OFF_BASE_SEQUENCE),
        record_count: be_i32(buf, OFF_RECORD_COUNT),
    })
}

/// Parses the header and verifies the whole batch is present and its CRC32C matches.
/// This is what recovery uses: it trusts nothing past a failure.
pub fn verify(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    let total = header.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[CRC_START..total]);
    if computed != header.crc {
        return Err(BatchError::CorruptCrc {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Full validation of a batch a producer sent: [`verify`] plus the consistency checks Kafka
/// applies (codec known, record count matches lastOffsetDelta, timestamps sane, and, for
/// uncompressed batches, that the records themselves parse with the declared count and
/// consecutive offset deltas). Compressed payloads are not inflated here: the CRC protects them
/// and they are stored and served as sent.
pub fn validate_produced(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = verify(buf)?;
    let codec = header
        .compression()
        .ok_or(BatchError::Invalid("unknown compression codec"))?;
    if header.record_count <= 0 {
        return Err(BatchError::Invalid("record count must be positive"));
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::Invalid(
            "lastOffsetDelta does not match record count",
        ));
    }
    if header.is_control() {
        return Err(BatchError::Invalid(
            "producers may not send control batches",
        ));
    }
    if header.attributes & ATTR_DELETE_HORIZON != 0 {
        // Only the cleaner sets a delete horizon; a producer could otherwise choose when its
        // tombstones disappear.
        return Err(BatchError::Invalid(
            "producers may not set a delete horizon",
        ));
    }
    if header.has_producer_id() && (header.producer_epoch < 0 || header.base_sequence < 0) {
        return Err(BatchError::Invalid(
            "idempotent batch without epoch or sequence",
        ));
    }
    if codec == Compression::None {
        check_uncompressed_records(&buf[HEADER_LEN..header.total_len()], header.record_count)?;
    }
    Ok(header)
}

/// Walks uncompressed records: each is a varint length followed by that many bytes, whose
/// third field (after attributes and timestamp delta) is the offset delta.
fn check_uncompressed_records(mut records: &[u8], count: i32) -> Result<(), BatchError> {
    for expected_delta in 0..count {
        let len = read_varint(&mut records).ok_or(BatchError::Invalid("bad record length"))?;
        if len < 0 || len as usize > records.len() {
            return Err(BatchError::Invalid("record length exceeds batch"));
        }
        let (mut body, rest) = records.split_at(len as usize);
        records = rest;
        if body.is_empty() {
            return Err(BatchError::Invalid("empty record"));
        }
        body.advance(1); // attributes
        read_varlong(&mut body).ok_or(BatchError::Invalid("bad timestamp delta"))?;
        let delta = read_varint(&mut body).ok_or(BatchError::Invalid("bad offset delta"))?;
        if delta != expected_delta {
            return Err(BatchError::Invalid("offset deltas are not consecutive"));
        }
    }
    if !records.is_empty() {
        return Err(BatchError::Invalid("trailing bytes after last record"));
    }
    Ok(())
}

/// Reads a zigzag varint (at most 5 bytes). `None` on truncation or overflow.
pub fn read_varint(buf: &mut &[u8]) -> Option<i32> {
    let raw = read_unsigned_varint(buf, 5)?;
    let raw = u32::try_from(raw).ok()?;
    Some(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zigzag varlong (at most 10 bytes). `None` on truncation or overflow.
pub fn read_varlong(buf: &mut &[u8]) -> Option<i64> {
    let raw = read_unsigned_varint(buf, 10)?;
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn read_unsigned_varint(buf: &mut &[u8], max_bytes: usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Offset and timestamp of every record in a verified batch, inflating a compressed payload
/// through a `max_inflated_bytes` limit.
pub fn record_offsets_and_timestamps(
    batch: &[u8],
    max_inflated_bytes: usize,
) -> Result<Vec<(i64, i64)>, BatchError> {
    let header = verify(batch)?;
    let codec = header
        .compression()
        .ok_or(BatchError::Invalid("unknown compression codec"))?;
    let payload = &batch[HEADER_LEN..header.total_len()];
    let inflated;
    let mut records: &[u8] = if codec == Compression::None {
        payload
    } else {
        inflated = crate::compression::decompress(codec, payload, max_inflated_bytes)
            .map_err(|_| BatchError::Invalid("compressed payload does not inflate"))?;
        &inflated
    };
    let count = usize::try_from(header.record_count).unwrap_or(0);
    let mut out = Vec::with_capacity(count.min(records.len()));
    for _ in 0..count {
        let len = read_varint(&mut records).ok_or(BatchError::Invalid("bad record length"))?;
        let len =
            usize::try_from(len).map_err(|_| BatchError::Invalid("negative record length"))?;
        if len > records.len() || len == 0 {
            return Err(BatchError::Invalid("record length exceeds batch"));
        }
        let (mut body, rest) = records.split_at(len);
        records = rest;
        body.advance(1);
        let ts_delta = read_varlong(&mut body).ok_or(BatchError::Invalid("bad timestamp delta"))?;
        let off_delta = read_varint(&mut body).ok_or(BatchError::Invalid("bad offset delta"))?;
        out.push((
            header.base_offset.saturating_add(i64::from(off_delta)),
            header.base_timestamp.saturating_add(ts_delta),
        ));
    }
    Ok(out)
}

/// Builds a batch from header fields and an already encoded (and compressed, if the attributes
/// say so) records section: `batchLength`, `magic` and the CRC are computed, the header's own
/// values for them are ignored. Every other field is written as given.
pub fn build_batch(header: &BatchHeader, records: &[u8]) -> Vec<u8> {
    let total = HEADER_LEN + records.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    // A records section comes from one batch or less, so it fits an i32 length.
    let batch_length = i32::try_from(total - LOG_OVERHEAD).unwrap_or(i32::MAX);
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&header.attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&header.base_timestamp.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&header.record_count.to_be_bytes());
    out.extend_from_slice(records);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// True if any record of a verified batch has a null key (compacted topics refuse those),
/// inflating a compressed payload through a `max_inflated_bytes` limit.
pub fn has_keyless_record(batch: &[u8], max_inflated_bytes: usize) -> Result<bool, BatchError> {
    let header = verify(batch)?;
    let codec = header
        .compression()
        .ok_or(BatchError::Invalid("unknown compression codec"))?;
    let payload = &batch[HEADER_LEN..header.total_len()];
    let inflated;
    let records: &[u8] = if codec == Compression::None {
        payload
    } else {
        inflated = crate::compression::decompress(codec, payload, max_inflated_bytes)
            .map_err(|_| BatchError::Invalid("compressed payload does not inflate"))?;
        &inflated
    };
    Ok(crate::records::parse_records(records, header.record_count)?
        .iter()
        .any(|r| r.key.is_none()))
}

/// Rewrites the broker-owned header fields in place. Both lie before the CRC-covered region.
pub fn set_base_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Splits a concatenation of batches (a produce request's `records`) into validated batches.
/// Every byte must belong to a whole batch.
pub fn split_produced(mut records: Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut out = Vec::with_capacity(1);
    while !records.is_empty() {
        let total = match peek_total_len(&records) {
            None => {
                return Err(BatchError::Truncated {
                    needed: LOG_OVERHEAD,
                    available: records.len(),
                });
            }
            Some(r) => r?,
        };
        if total > records.len() {
            return Err(BatchError::Truncated {
                needed: total,
                available: records.len(),
            });
        }
        let batch = records.split_to(total);
        let header = validate_produced(&batch)?;
        out.push((header, batch));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression as KCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    pub(crate) fn encode_batch(
        values: &[Vec<u8>],
        compression: KCompression,
        producer_id: i64,
        base_sequence: i32,
    ) -> Vec<u8> {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                delete_horizon: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: if producer_id >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder only keeps records in one batch while offset - sequence is
                // constant, so non-idempotent test batches use sequence = offset.
                sequence: base_sequence.max(0) + i as i32,
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(v.clone())),
                headers: [(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"x")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.to_vec()
    }

    #[test]
    fn valid_batch_roundtrip_fields() {
        let b = encode_batch(&[b"a".to_vec(), b"bb".to_vec()], KCompression::None, 7, 3);
        let h = validate_produced(&b).expect("valid");
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.base_sequence, 3);
        assert_eq!(h.last_sequence(), 4);
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.max_timestamp, 1_700_000_000_001);
    }

    #[test]
    fn compressed_batches_validate() {
        for c in [
            KCompression::Gzip,
            KCompression::Snappy,
            KCompression::Lz4,
            KCompression::Zstd,
        ] {
            let b = encode_batch(&[vec![1u8; 100], vec![2u8; 50]], c, -1, -1);
            let h = validate_produced(&b).expect("valid compressed batch");
            assert_ne!(h.compression(), Some(Compression::None));
        }
    }

    #[test]
    fn record_timestamps_of_compressed_batches() {
        for c in [KCompression::None, KCompression::Gzip, KCompression::Zstd] {
            let b = encode_batch(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], c, -1, -1);
            let r = record_offsets_and_timestamps(&b, 1 << 20).expect("walk");
            assert_eq!(
                r,
                vec![
                    (0, 1_700_000_000_000),
                    (1, 1_700_000_000_001),
                    (2, 1_700_000_000_002)
                ]
            );
        }
    }

    #[test]
    fn build_batch_reproduces_a_batch() {
        for c in [KCompression::None, KCompression::Gzip] {
            let b = encode_batch(&[b"a".to_vec(), b"bb".to_vec()], c, 7, 3);
            let h = verify(&b).expect("valid");
            assert_eq!(build_batch(&h, &b[HEADER_LEN..]), b);
            assert_eq!(h.delete_horizon_ms(), None);
            let mut marked = h;
            marked.attributes |= ATTR_DELETE_HORIZON;
            marked.base_timestamp = 42;
            let again = build_batch(&marked, &b[HEADER_LEN..]);
            assert_eq!(verify(&again).map(|h| h.delete_horizon_ms()), Ok(Some(42)));
        }
    }

    #[test]
    fn keyless_records_detected_in_every_codec() {
        for c in [KCompression::None, KCompression::Gzip, KCompression::Zstd] {
            let keyed = encode_batch(&[b"a".to_vec()], c, -1, -1);
            assert!(!has_keyless_record(&keyed, 1 << 20).expect("parse"));
        }
        let mut b = encode_batch(&[b"a".to_vec()], KCompression::None, -1, -1);
        // Make the batch claim a delete horizon: producers may not.
        b[OFF_ATTRIBUTES + 1] |= ATTR_DELETE_HORIZON as u8;
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate_produced(&b), Err(BatchError::Invalid(_))));
    }

    #[test]
    fn corrupt_byte_fails_crc() {
        let mut b = encode_batch(&[b"hello".to_vec()], KCompression::None, -1, -1);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(verify(&b), Err(BatchError::CorruptCrc { .. })));
    }

    #[test]
    fn wrong_record_count_rejected() {
        let mut b = encode_batch(&[b"a".to_vec(), b"b".to_vec()], KCompression::None, -1, -1);
        b[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate_produced(&b), Err(BatchError::Invalid(_))));
    }

    #[test]
    fn split_rejects_trailing_garbage() {
        let mut b = encode_batch(&[b"a".to_vec()], KCompression::None, -1, -1);
        b.extend_from_slice(&[0, 0, 0]);
        assert!(split_produced(Bytes::from(b)).is_err());
    }

    proptest! {
        #[test]
        fn header_rewrite_keeps_crc(base in any::<i64>(), epoch in any::<i32>(),
                                    vals in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
            let mut b = encode_batch(&vals, KCompression::None, -1, -1);
            set_base_offset_and_epoch(&mut b, base, epoch);
            let h = verify(&b).expect("crc still valid");
            prop_assert_eq!(h.base_offset, base);
            prop_assert_eq!(h.partition_leader_epoch, epoch);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate_produced(&data);
            let _ = split_produced(Bytes::from(data));
        }
    }
}
