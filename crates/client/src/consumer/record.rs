//! Records as the application sees them, and the decoding of a partition's fetched bytes into
//! them: batch by batch, CRC checked, inflated through a bound, records below the fetch offset
//! (the front of a batch the fetch started inside) skipped, control batches passed over.
//!
//! Keys, values and header values are `Bytes` slices of the fetched (or inflated) buffer: no
//! copy per record.

use std::sync::Arc;

use bytes::Bytes;
use vltava_protocol::batch::{self, BatchHeader, Compression, HEADER_LEN, read_varint};
use vltava_protocol::records::parse_records;

use crate::error::ClientError;

/// How a record's timestamp was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the batch.
    LogAppendTime,
}

/// A record header: a string key and a nullable value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key (UTF-8; invalid sequences are replaced).
    pub key: String,
    /// Header value, `None` for null.
    pub value: Option<Bytes>,
}

/// A record returned by [`crate::consumer::Consumer::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic (shared between the records of a partition).
    pub topic: Arc<str>,
    /// Partition index.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Timestamp in ms since the epoch (-1 when the producer set none).
    pub timestamp: i64,
    /// Whether the producer or the broker set the timestamp.
    pub timestamp_type: TimestampType,
    /// Leader epoch of the batch (-1 if unknown).
    pub leader_epoch: i32,
    /// Key, `None` for a null key.
    pub key: Option<Bytes>,
    /// Value, `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in the order the producer wrote them (keys may repeat).
    pub headers: Vec<Header>,
}

/// Settings of [`decode_records`].
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Verify each batch's CRC32C.
    pub check_crcs: bool,
    /// Largest inflated size of one compressed batch.
    pub max_inflated_bytes: usize,
}

/// What one partition's fetched bytes held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Records at or above the fetch offset, in offset order.
    pub records: Vec<ConsumerRecord>,
    /// The offset to fetch next: one past the last whole batch read (control and compacted
    /// batches included), or the fetch offset when there was none.
    pub next_offset: i64,
    /// A batch that could not be read. Records before it are still returned; the position
    /// stops at it, so the next fetch fails the same way (as the Java client does).
    pub error: Option<ClientError>,
    /// The partition leader epoch of the last whole batch read (control batches included),
    /// -1 when there was none or it carried none: the epoch of the position `next_offset`.
    pub last_leader_epoch: i32,
}

fn malformed(reason: String) -> ClientError {
    ClientError::Malformed {
        what: "fetched record batch",
        reason,
    }
}

/// A `Bytes` view of `sub`, which must lie inside `buf` (it does for every slice the record
/// parser hands back); a copy otherwise, never a panic.
fn sub_bytes(buf: &Bytes, sub: &[u8]) -> Bytes {
    let start = (sub.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if sub.is_empty() {
        return Bytes::new();
    }
    match start.checked_add(sub.len()) {
        Some(end) if start < buf.len() && end <= buf.len() => buf.slice(start..end),
        _ => Bytes::copy_from_slice(sub),
    }
}

/// Reads a varint length and that many bytes; -1 is null.
fn nullable<'a>(buf: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = read_varint(buf)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    if len > buf.len() {
        return None;
    }
    let (b, rest) = buf.split_at(len);
    *buf = rest;
    Some(Some(b))
}

/// Parses a record's header section (already checked by `parse_records`).
fn parse_headers(owner: &Bytes, mut raw: &[u8]) -> Vec<Header> {
    let count = read_varint(&mut raw).unwrap_or(0).max(0) as usize;
    // Each header takes at least 2 bytes: a bogus count cannot reserve much.
    let mut out = Vec::with_capacity(count.min(raw.len() / 2));
    for _ in 0..count {
        let Some(Some(key)) = nullable(&mut raw) else {
            break;
        };
        let Some(value) = nullable(&mut raw) else {
            break;
        };
        out.push(Header {
            key: String::from_utf8_lossy(key).into_owned(),
            value: value.map(|v| sub_bytes(owner, v)),
        });
    }
    out
}

/// Appends the records of one whole batch at or above `fetch_offset` to `out`.
fn decode_batch(
    topic: &Arc<str>,
    partition: i32,
    header: &BatchHeader,
    whole: &Bytes,
    fetch_offset: i64,
    opts: DecodeOptions,
    out: &mut Vec<ConsumerRecord>,
) -> Result<(), ClientError> {
    let at = header.base_offset;
    let codec = header
        .compression()
        .ok_or_else(|| malformed(format!("batch at offset {at} has an unknown codec")))?;
    let payload = whole.slice(HEADER_LEN..header.total_len());
    let records: Bytes = if codec == Compression::None {
        payload
    } else {
        let inflated =
            vltava_protocol::compression::decompress(codec, &payload, opts.max_inflated_bytes)
                .map_err(|e| malformed(format!("batch at offset {at}: {e}")))?;
        Bytes::from(inflated)
    };
    let views = parse_records(&records, header.record_count)
        .map_err(|e| malformed(format!("batch at offset {at}: {e}")))?;
    let (timestamp_type, append_time) = if header.is_log_append_time() {
        (TimestampType::LogAppendTime, Some(header.max_timestamp))
    } else {
        (TimestampType::CreateTime, None)
    };
    for v in views {
        let offset = header.base_offset.saturating_add(i64::from(v.offset_delta));
        if offset < fetch_offset {
            continue;
        }
        let timestamp = match append_time {
            Some(t) => t,
            None if header.base_timestamp < 0 => -1,
            None => header.base_timestamp.saturating_add(v.timestamp_delta),
        };
        out.push(ConsumerRecord {
            topic: Arc::clone(topic),
            partition,
            offset,
            timestamp,
            timestamp_type,
            leader_epoch: header.partition_leader_epoch,
            key: v.key.map(|k| sub_bytes(&records, k)),
            value: v.value.map(|val| sub_bytes(&records, val)),
            headers: parse_headers(&records, v.headers),
        });
    }
    Ok(())
}

/// Decodes the `records` of one partition of a Fetch response: a run of v2 batches, of which
/// the last may be cut short by the fetch size limit (it is left for the next fetch).
pub fn decode_records(
    topic: &Arc<str>,
    partition: i32,
    data: &Bytes,
    fetch_offset: i64,
    opts: DecodeOptions,
) -> Decoded {
    let mut out = Decoded {
        records: Vec::new(),
        next_offset: fetch_offset,
        error: None,
        last_leader_epoch: -1,
    };
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        let total = match batch::peek_total_len(rest) {
            // Fewer than 12 bytes: the start of a batch cut off by the size limit.
            None => break,
            Some(Err(e)) => {
                out.error = Some(malformed(format!("at offset {}: {e}", out.next_offset)));
                break;
            }
            Some(Ok(t)) => t,
        };
        if total > rest.len() {
            // A partial batch at the end. Alone in the response it can never complete: the
            // batch is larger than the fetch allows.
            if pos == 0 {
                out.error = Some(malformed(format!(
                    "a batch at offset {fetch_offset} of {total} bytes does not fit the {} bytes \
                     fetched; raise max.partition.fetch.bytes",
                    rest.len()
                )));
            }
            break;
        }
        let whole = data.slice(pos..pos + total);
        pos += total;
        let header = if opts.check_crcs {
            batch::verify(&whole)
        } else {
            batch::parse_header(&whole)
        };
        let header = match header {
            Ok(h) => h,
            Err(e) => {
                out.error = Some(malformed(format!("at offset {}: {e}", out.next_offset)));
                break;
            }
        };
        let next = header.last_offset().saturating_add(1);
        if next <= fetch_offset {
            // Entirely below the fetch offset (a fetch may start inside an earlier batch's
            // range only at the first batch; compacted logs can leave such batches too).
            continue;
        }
        if !header.is_control()
            && let Err(e) = decode_batch(
                topic,
                partition,
                &header,
                &whole,
                fetch_offset,
                opts,
                &mut out.records,
            )
        {
            out.error = Some(e);
            break;
        }
        out.next_offset = out.next_offset.max(next);
        if header.partition_leader_epoch >= 0 {
            out.last_leader_epoch = header.partition_leader_epoch;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vltava_protocol::compression::{SnappyFraming, compress};
    use vltava_protocol::records::{RecordView, write_varint};

    fn opts() -> DecodeOptions {
        DecodeOptions {
            check_crcs: true,
            max_inflated_bytes: 1 << 20,
        }
    }

    fn headers_bytes(headers: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut h = Vec::new();
        write_varint(&mut h, headers.len() as i32);
        for (k, v) in headers {
            write_varint(&mut h, k.len() as i32);
            h.extend_from_slice(k.as_bytes());
            match v {
                None => write_varint(&mut h, -1),
                Some(v) => {
                    write_varint(&mut h, v.len() as i32);
                    h.extend_from_slice(v);
                }
            }
        }
        h
    }

    /// A batch at `base` of `n` records (`k{i}`/`v{i}`, one header), compressed with `codec`.
    pub(crate) fn batch_of(base: i64, n: i32, codec: Compression, attrs_extra: i16) -> Vec<u8> {
        let mut recs = Vec::new();
        for i in 0..n {
            let key = format!("k{}", base + i as i64);
            let value = format!("v{}", base + i as i64);
            let hdr = headers_bytes(&[("h", Some(b"x")), ("n", None)]);
            RecordView {
                attributes: 0,
                timestamp_delta: i64::from(i) * 10,
                offset_delta: i,
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
                headers: &hdr,
            }
            .encode(&mut recs);
        }
        let codec_bits: i16 = match codec {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        };
        let payload = compress(codec, &recs, SnappyFraming::Raw).expect("compress");
        let h = BatchHeader {
            base_offset: base,
            batch_length: 0,
            partition_leader_epoch: 3,
            magic: 2,
            crc: 0,
            attributes: codec_bits | attrs_extra,
            last_offset_delta: n - 1,
            base_timestamp: 1_000,
            max_timestamp: 1_000 + i64::from(n - 1) * 10,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: n,
        };
        batch::build_batch(&h, &payload)
    }

    fn topic() -> Arc<str> {
        Arc::from("t")
    }

    #[test]
    fn every_codec_decodes_with_keys_values_headers_and_timestamps() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut data = batch_of(0, 3, codec, 0);
            data.extend(batch_of(3, 2, codec, 0));
            let d = decode_records(&topic(), 4, &Bytes::from(data), 0, opts());
            assert!(d.error.is_none(), "{codec:?}: {:?}", d.error);
            assert_eq!(d.next_offset, 5, "{codec:?}");
            let offsets: Vec<i64> = d.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![0, 1, 2, 3, 4], "{codec:?}");
            let r = &d.records[4];
            assert_eq!(r.partition, 4);
            assert_eq!(r.key.as_deref(), Some(&b"k4"[..]));
            assert_eq!(r.value.as_deref(), Some(&b"v4"[..]));
            assert_eq!(r.timestamp, 1_010);
            assert_eq!(r.timestamp_type, TimestampType::CreateTime);
            assert_eq!(r.leader_epoch, 3);
            assert_eq!(
                r.headers,
                vec![
                    Header {
                        key: "h".into(),
                        value: Some(Bytes::from_static(b"x"))
                    },
                    Header {
                        key: "n".into(),
                        value: None
                    }
                ]
            );
        }
    }

    #[test]
    fn records_below_the_fetch_offset_are_skipped() {
        for codec in [Compression::None, Compression::Zstd] {
            let mut data = batch_of(10, 5, codec, 0);
            data.extend(batch_of(15, 5, codec, 0));
            let d = decode_records(&topic(), 0, &Bytes::from(data.clone()), 13, opts());
            let offsets: Vec<i64> = d.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (13..20).collect::<Vec<_>>());
            assert_eq!(d.next_offset, 20);
            // A whole batch below the offset is passed over.
            let d = decode_records(&topic(), 0, &Bytes::from(data), 17, opts());
            assert_eq!(d.records.first().map(|r| r.offset), Some(17));
            assert_eq!(d.records.len(), 3);
        }
    }

    #[test]
    fn log_append_time_and_control_batches() {
        let mut data = batch_of(0, 2, Compression::None, batch::ATTR_LOG_APPEND_TIME);
        data.extend(batch_of(2, 1, Compression::None, batch::ATTR_CONTROL));
        data.extend(batch_of(3, 1, Compression::None, 0));
        let d = decode_records(&topic(), 0, &Bytes::from(data), 0, opts());
        let offsets: Vec<i64> = d.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1, 3]);
        assert_eq!(
            d.records[0].timestamp, 1_010,
            "log append time is maxTimestamp"
        );
        assert_eq!(d.records[0].timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(d.next_offset, 4);
    }

    #[test]
    fn a_partial_last_batch_is_left_for_the_next_fetch() {
        let mut data = batch_of(0, 2, Compression::None, 0);
        let second = batch_of(2, 2, Compression::None, 0);
        data.extend_from_slice(&second[..second.len() - 5]);
        let d = decode_records(&topic(), 0, &Bytes::from(data), 0, opts());
        assert!(d.error.is_none());
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.next_offset, 2);
        // Alone, it can never complete: an error that says what to change.
        let d = decode_records(
            &topic(),
            0,
            &Bytes::copy_from_slice(&second[..second.len() - 5]),
            2,
            opts(),
        );
        assert!(d.records.is_empty());
        assert!(
            d.error
                .is_some_and(|e| e.to_string().contains("max.partition.fetch.bytes"))
        );
    }

    #[test]
    fn corruption_stops_at_the_bad_batch() {
        let mut data = batch_of(0, 2, Compression::None, 0);
        let mut bad = batch_of(2, 2, Compression::Gzip, 0);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        data.extend(bad.clone());
        let d = decode_records(&topic(), 0, &Bytes::from(data), 0, opts());
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.next_offset, 2);
        assert!(d.error.is_some_and(|e| e.to_string().contains("CRC")));
        // Without CRC checks the gzip payload itself fails to inflate.
        let d = decode_records(
            &topic(),
            0,
            &Bytes::from(bad),
            2,
            DecodeOptions {
                check_crcs: false,
                ..opts()
            },
        );
        assert!(d.error.is_some());
        assert!(d.records.is_empty());
    }

    #[test]
    fn inflation_is_bounded() {
        let data = batch_of(0, 50, Compression::Zstd, 0);
        let d = decode_records(
            &topic(),
            0,
            &Bytes::from(data),
            0,
            DecodeOptions {
                check_crcs: true,
                max_inflated_bytes: 100,
            },
        );
        assert!(d.records.is_empty());
        assert!(d.error.is_some_and(|e| e.to_string().contains("limit")));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let good = batch_of(0, 3, Compression::None, 0);
        for n in 0..good.len() {
            let _ = decode_records(&topic(), 0, &Bytes::copy_from_slice(&good[..n]), 0, opts());
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut buf = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % buf.len();
                buf[i] = (x >> 8) as u8;
            }
            let _ = decode_records(
                &topic(),
                0,
                &Bytes::from(buf),
                0,
                DecodeOptions {
                    check_crcs: false,
                    ..opts()
                },
            );
        }
    }
}
