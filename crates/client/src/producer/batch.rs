//! Our own record batch v2 writer (the `kafka-protocol` encoder copies records twice).
//!
//! Records are varint-encoded straight into one buffer that starts with room for the 61-byte
//! batch header. Finishing an uncompressed batch fills that header in place and computes the
//! CRC32C: no copy at all. A compressed batch compresses the records section once and puts the
//! header in front of the compressed bytes.

use bytes::Bytes;
use vltava_protocol::batch::{Compression, HEADER_LEN, LOG_OVERHEAD};
use vltava_protocol::compression::{CompressError, SnappyFraming, compress};
use vltava_protocol::records::{write_varint, write_varlong};

use crate::producer::Header;

/// Offset of the first byte covered by the CRC (the attributes field).
const CRC_START: usize = 21;
const OFF_CRC: usize = 17;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;

/// Bytes of `v` as a zigzag varint.
fn varint_len(v: i64) -> usize {
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
        None => 1,
        Some(b) => varint_len(b.len() as i64) + b.len(),
    }
}

/// Length of a record's body (everything after its length prefix).
fn body_len(
    ts_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    let mut n = 1 + varint_len(ts_delta) + varint_len(i64::from(offset_delta));
    n += nullable_len(key) + nullable_len(value);
    n += varint_len(headers.len() as i64);
    for h in headers {
        n += nullable_len(Some(h.key.as_bytes())) + nullable_len(h.value.as_deref());
    }
    n
}

/// An upper bound of the bytes a record takes in any batch (whatever its offset and timestamp
/// deltas turn out to be): used for `buffer.memory` and `max.request.size` accounting.
pub(crate) fn record_size_bound(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    // Worst cases: a 10-byte timestamp delta and a 5-byte offset delta, 5-byte length prefix.
    let body = body_len(0, 0, key, value, headers) - 2 + 10 + 5;
    body + 5
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

/// Records of one batch being written.
#[derive(Debug)]
pub(crate) struct BatchBuilder {
    /// Header room (zeros until finished), then the records.
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch whose buffer starts with `capacity` bytes reserved.
    pub(crate) fn new(capacity: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN + 64));
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: -1,
        }
    }

    /// Records written so far.
    pub(crate) fn count(&self) -> i32 {
        self.count
    }

    /// Size of the batch so far, header included (uncompressed).
    pub(crate) fn size(&self) -> usize {
        self.buf.len()
    }

    /// Exact bytes the next record would add.
    pub(crate) fn next_record_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        let base = if self.count == 0 {
            timestamp
        } else {
            self.base_timestamp
        };
        let body = body_len(
            timestamp.wrapping_sub(base),
            self.count,
            key,
            value,
            headers,
        );
        varint_len(body as i64) + body
    }

    /// Appends one record (create time `timestamp`, ms since the epoch).
    pub(crate) fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count;
        let body = body_len(ts_delta, offset_delta, key, value, headers);
        let out = &mut self.buf;
        // A record is bounded by max.request.size, far below 2 GiB.
        write_varint(out, body as i32);
        out.push(0); // attributes
        write_varlong(out, ts_delta);
        write_varint(out, offset_delta);
        write_nullable(out, key);
        write_nullable(out, value);
        write_varint(out, headers.len() as i32);
        for h in headers {
            write_nullable(out, Some(h.key.as_bytes()));
            write_nullable(out, h.value.as_deref());
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Finishes the batch: compresses the records with `compression` and writes the header
    /// with the producer id, epoch and base sequence (-1, -1, -1 for a non-idempotent producer).
    pub(crate) fn finish(
        self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Result<Bytes, CompressError> {
        let mut out = if compression == Compression::None {
            self.buf
        } else {
            let packed = compress(compression, &self.buf[HEADER_LEN..], SnappyFraming::Xerial)?;
            let mut out = Vec::with_capacity(HEADER_LEN + packed.len());
            out.resize(HEADER_LEN, 0);
            out.extend_from_slice(&packed);
            out
        };
        let attributes: i16 = match compression {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        };
        let batch_length = i32::try_from(out.len() - LOG_OVERHEAD).unwrap_or(i32::MAX);
        let h = &mut out[..HEADER_LEN];
        h[0..8].copy_from_slice(&0i64.to_be_bytes()); // baseOffset: the broker assigns it
        h[8..12].copy_from_slice(&batch_length.to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        h[16] = 2; // magic
        h[21..23].copy_from_slice(&attributes.to_be_bytes());
        h[23..27].copy_from_slice(&(self.count - 1).to_be_bytes());
        h[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
        h[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&producer_epoch.to_be_bytes());
        h[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(Bytes::from(out))
    }
}

/// A finished batch with new producer fields (after an epoch bump re-sequences it) and a new
/// CRC; the records are untouched.
pub(crate) fn rewrite_producer_fields(
    batch: &[u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Bytes {
    let mut out = batch.to_vec();
    out[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    out[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    out[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vltava_protocol::batch::{validate_produced, verify};
    use vltava_protocol::compression::decompress;
    use vltava_protocol::records::parse_records;

    fn h(k: &str, v: Option<&[u8]>) -> Header {
        Header {
            key: k.to_string(),
            value: v.map(Bytes::copy_from_slice),
        }
    }

    fn sample(builder: &mut BatchBuilder) {
        let headers = [h("a", Some(b"1")), h("n", None)];
        builder.append(1_000, Some(b"k1"), Some(b"hello"), &headers);
        builder.append(999, None, Some(&[7u8; 300]), &[]);
        builder.append(1_500, Some(b""), None, &[]);
    }

    #[test]
    fn uncompressed_batch_validates_and_parses_back() -> Result<(), Box<dyn std::error::Error>> {
        let mut b = BatchBuilder::new(1024);
        let before = b.size();
        let want = b.next_record_len(
            1_000,
            Some(b"k1"),
            Some(b"hello"),
            &[h("a", Some(b"1")), h("n", None)],
        );
        sample(&mut b);
        assert!(b.size() > before + want);
        let size = b.size();
        let out = b.finish(Compression::None, 42, 3, 17)?;
        assert_eq!(out.len(), size);
        let hdr = validate_produced(&out)?;
        assert_eq!(hdr.record_count, 3);
        assert_eq!(hdr.last_offset_delta, 2);
        assert_eq!(hdr.base_timestamp, 1_000);
        assert_eq!(hdr.max_timestamp, 1_500);
        assert_eq!(
            (hdr.producer_id, hdr.producer_epoch, hdr.base_sequence),
            (42, 3, 17)
        );
        let recs = parse_records(&out[HEADER_LEN..], 3)?;
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[0].value, Some(&b"hello"[..]));
        assert_eq!(recs[1].timestamp_delta, -1);
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[2].key, Some(&b""[..]));
        assert_eq!(recs[2].value, None);
        assert_eq!(recs[2].offset_delta, 2);
        Ok(())
    }

    #[test]
    fn record_length_prediction_is_exact_and_bound_holds() {
        let mut b = BatchBuilder::new(64);
        for i in 0..200i64 {
            let v = vec![b'x'; (i * 37 % 700) as usize];
            let hs = if i % 3 == 0 {
                vec![h("seq", Some(b"1"))]
            } else {
                vec![]
            };
            let ts = 1_700_000_000_000 + (i * 7919) % 100_000 - 50_000;
            let predicted = b.next_record_len(ts, Some(b"key"), Some(&v), &hs);
            assert!(predicted <= record_size_bound(Some(b"key"), Some(&v), &hs));
            let before = b.size();
            b.append(ts, Some(b"key"), Some(&v), &hs);
            assert_eq!(b.size() - before, predicted, "record {i}");
        }
    }

    #[test]
    fn every_codec_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = BatchBuilder::new(1024);
            sample(&mut b);
            let plain_records = b.buf[HEADER_LEN..].to_vec();
            let out = b.finish(codec, -1, -1, -1)?;
            let hdr = verify(&out)?;
            assert_eq!(hdr.compression(), Some(codec));
            assert_eq!(hdr.record_count, 3);
            let inflated = decompress(codec, &out[HEADER_LEN..], 1 << 20)?;
            assert_eq!(inflated, plain_records, "{codec:?}");
        }
        Ok(())
    }

    #[test]
    fn rewriting_producer_fields_keeps_the_crc_valid() -> Result<(), Box<dyn std::error::Error>> {
        let mut b = BatchBuilder::new(256);
        sample(&mut b);
        let out = b.finish(Compression::Lz4, 5, 0, 10)?;
        let re = rewrite_producer_fields(&out, 5, 1, 0);
        let hdr = verify(&re)?;
        assert_eq!(
            (hdr.producer_id, hdr.producer_epoch, hdr.base_sequence),
            (5, 1, 0)
        );
        assert_eq!(&re[HEADER_LEN..], &out[HEADER_LEN..]);
        Ok(())
    }
}
