//! Records inside a v2 batch: a borrowed view of each record, and the encoder that writes one
//! back. Used by log compaction, which must look at keys and values and rebuild batches holding
//! only some of their records.
//!
//! Record layout (KIP-98): `length: varint`, then `attributes: int8`, `timestampDelta: varlong`,
//! `offsetDelta: varint`, `keyLength: varint` + key (-1 = null), `valueLength: varint` + value
//! (-1 = null), `headerCount: varint` + headers (`keyLength: varint` + key, `valueLength:
//! varint` + value, -1 = null value).

use crate::batch::{BatchError, read_varint, read_varlong};

/// One record of a batch, borrowing its bytes. The header section is kept verbatim: compaction
/// never changes headers, and keeping them raw spares decoding and re-encoding them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Record attributes (unused by Kafka so far, preserved as is).
    pub attributes: i8,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// Key, `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value, `None` for a null value (a tombstone when the key is set).
    pub value: Option<&'a [u8]>,
    /// Header count and headers, exactly as stored.
    pub headers: &'a [u8],
}

const INVALID_RECORD: BatchError = BatchError::Invalid("malformed record");

/// Reads a varint length prefix followed by that many bytes; -1 is null. Other negative
/// lengths and lengths past the end are errors.
fn read_nullable<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    let len = read_varint(buf).ok_or(INVALID_RECORD)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| INVALID_RECORD)?;
    if len > buf.len() {
        return Err(INVALID_RECORD);
    }
    let (bytes, rest) = buf.split_at(len);
    *buf = rest;
    Ok(Some(bytes))
}

/// Walks a header section to check its framing: a non-negative count, then per header a
/// non-null key and a nullable value, using up every byte.
fn check_headers(mut buf: &[u8]) -> Result<(), BatchError> {
    let count = read_varint(&mut buf).ok_or(INVALID_RECORD)?;
    if count < 0 {
        return Err(INVALID_RECORD);
    }
    for _ in 0..count {
        if read_nullable(&mut buf)?.is_none() {
            return Err(INVALID_RECORD);
        }
        read_nullable(&mut buf)?;
    }
    if !buf.is_empty() {
        return Err(INVALID_RECORD);
    }
    Ok(())
}

/// Parses exactly `count` records from `data` (an uncompressed or inflated records section),
/// which must hold nothing else. Never panics and never allocates more than `data` can hold.
pub fn parse_records(mut data: &[u8], count: i32) -> Result<Vec<RecordView<'_>>, BatchError> {
    let count = usize::try_from(count).map_err(|_| BatchError::Invalid("negative record count"))?;
    // Each record takes at least 7 bytes, so a huge declared count cannot reserve much.
    let mut out = Vec::with_capacity(count.min(data.len() / 7));
    for _ in 0..count {
        let len = read_varint(&mut data).ok_or(INVALID_RECORD)?;
        let len = usize::try_from(len).map_err(|_| INVALID_RECORD)?;
        if len == 0 || len > data.len() {
            return Err(BatchError::Invalid("record length exceeds batch"));
        }
        let (mut body, rest) = data.split_at(len);
        data = rest;
        let attributes = body[0] as i8;
        body = &body[1..];
        let timestamp_delta = read_varlong(&mut body).ok_or(INVALID_RECORD)?;
        let offset_delta = read_varint(&mut body).ok_or(INVALID_RECORD)?;
        let key = read_nullable(&mut body)?;
        let value = read_nullable(&mut body)?;
        check_headers(body)?;
        out.push(RecordView {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers: body,
        });
    }
    if !data.is_empty() {
        return Err(BatchError::Invalid("trailing bytes after last record"));
    }
    Ok(out)
}

/// Appends a zigzag varint.
pub fn write_varint(out: &mut Vec<u8>, v: i32) {
    write_unsigned(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

/// Appends a zigzag varlong.
pub fn write_varlong(out: &mut Vec<u8>, v: i64) {
    write_unsigned(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn write_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: i32) -> usize {
    let mut z = u64::from(((v << 1) ^ (v >> 31)) as u32);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn varlong_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn nullable_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn write_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => write_varint(out, -1),
        Some(b) => {
            write_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

impl RecordView<'_> {
    /// Appends the record, length prefix included. A record parsed by [`parse_records`]
    /// encodes back to exactly the bytes it came from.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let body_len = 1
            + varlong_len(self.timestamp_delta)
            + varint_len(self.offset_delta)
            + nullable_len(self.key)
            + nullable_len(self.value)
            + self.headers.len();
        // A parsed record's parts came from a batch, whose length is an i32.
        write_varint(out, i32::try_from(body_len).unwrap_or(i32::MAX));
        out.push(self.attributes as u8);
        write_varlong(out, self.timestamp_delta);
        write_varint(out, self.offset_delta);
        write_nullable(out, self.key);
        write_nullable(out, self.value);
        out.extend_from_slice(self.headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{HEADER_LEN, verify};
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression as KCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    type Kv = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    fn encode(records: &[Kv]) -> Vec<u8> {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v, h))| Record {
                transactional: false,
                delete_horizon: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_000 + 7 * i as i64,
                key: k.clone().map(Bytes::from),
                value: v.clone().map(Bytes::from),
                headers: h
                    .iter()
                    .map(|(hk, hv)| {
                        (
                            StrBytes::from_string(hk.clone()),
                            hv.clone().map(Bytes::from),
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: KCompression::None,
            },
        )
        .expect("encode");
        buf.to_vec()
    }

    fn kv() -> impl Strategy<Value = Kv> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(
                (
                    "[a-z]{0,5}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                ),
                0..3,
            ),
        )
    }

    proptest! {
        #[test]
        fn parse_and_reencode_roundtrip(records in proptest::collection::vec(kv(), 1..10)) {
            let batch = encode(&records);
            let h = verify(&batch).expect("valid");
            let payload = &batch[HEADER_LEN..];
            let parsed = parse_records(payload, h.record_count).expect("parse");
            prop_assert_eq!(parsed.len(), records.len());
            let mut again = Vec::new();
            for (i, (r, (k, v, hs))) in parsed.iter().zip(&records).enumerate() {
                prop_assert_eq!(r.offset_delta, i as i32);
                prop_assert_eq!(r.timestamp_delta, 7 * i as i64);
                prop_assert_eq!(r.key, k.as_deref());
                prop_assert_eq!(r.value, v.as_deref());
                prop_assert_eq!(hs.is_empty(), r.headers == [0]);
                r.encode(&mut again);
            }
            prop_assert_eq!(&again[..], payload);
        }

        #[test]
        fn varints_roundtrip(a in any::<i32>(), b in any::<i64>()) {
            let mut out = Vec::new();
            write_varint(&mut out, a);
            prop_assert_eq!(out.len(), varint_len(a));
            write_varlong(&mut out, b);
            prop_assert_eq!(out.len(), varint_len(a) + varlong_len(b));
            let mut s = &out[..];
            prop_assert_eq!(read_varint(&mut s), Some(a));
            prop_assert_eq!(read_varlong(&mut s), Some(b));
            prop_assert!(s.is_empty());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), count in -2i32..20) {
            let _ = parse_records(&data, count);
        }
    }

    #[test]
    fn malformed_records_are_rejected() {
        let batch = encode(&[(Some(b"k".to_vec()), Some(b"v".to_vec()), vec![])]);
        let payload = &batch[HEADER_LEN..];
        assert!(parse_records(payload, 1).is_ok());
        assert!(parse_records(payload, 2).is_err(), "count too large");
        assert!(parse_records(payload, 0).is_err(), "trailing bytes");
        assert!(parse_records(payload, -1).is_err());
        let mut bad = payload.to_vec();
        bad.push(0);
        assert!(parse_records(&bad, 1).is_err());
        // A key length of -2.
        let mut r = Vec::new();
        write_varint(&mut r, 5);
        r.extend_from_slice(&[0, 0, 0]);
        write_varint(&mut r, -2);
        r.push(0);
        assert!(parse_records(&r, 1).is_err());
    }
}
