//! The message browser's view of a fetched record set: the batches as the Fetch handler
//! returned them, verified and (when compressed) inflated with `vltava-protocol`'s batch and
//! codec functions, and their records shown as text, JSON or hex.

use vltava_protocol::batch::{self, Compression, HEADER_LEN};
use vltava_protocol::compression::decompress;
use vltava_protocol::records::parse_records;

use super::params::Format;

/// Largest inflated payload of one batch the browser decodes (a decompression bomb costs at
/// most this).
pub const MAX_INFLATED_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of one key, value or header shown; the rest is cut (and the size is shown).
pub const MAX_SHOWN_BYTES: usize = 4 * 1024;

/// A record's headers: key bytes and value bytes (`None`: a null value).
pub type Headers = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One record for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// Offset.
    pub offset: i64,
    /// Timestamp (ms since the epoch).
    pub timestamp: i64,
    /// The batch's codec.
    pub codec: &'static str,
    /// Key bytes, `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Value bytes, `None` for a null value.
    pub value: Option<Vec<u8>>,
    /// Headers: key and value bytes.
    pub headers: Headers,
}

fn codec_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

fn read_nullable(buf: &mut &[u8]) -> Option<Option<Vec<u8>>> {
    let len = batch::read_varint(buf)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    if len > buf.len() {
        return None;
    }
    let (b, rest) = buf.split_at(len);
    *buf = rest;
    Some(Some(b.to_vec()))
}

/// A record's header section (`parse_records` keeps it raw): count, then key and value each.
fn parse_headers(mut buf: &[u8]) -> Option<Headers> {
    let count = usize::try_from(batch::read_varint(&mut buf)?).ok()?;
    let mut out = Vec::with_capacity(count.min(buf.len() / 2));
    for _ in 0..count {
        let k = read_nullable(&mut buf)??;
        let v = read_nullable(&mut buf)?;
        out.push((k, v));
    }
    Some(out)
}

/// The records at or after `from` in a Fetch answer's record set, at most `limit` of them.
/// Control batches are skipped; a batch that fails its CRC or does not inflate is an error,
/// as is a truncated batch before any record was found.
pub fn decode(record_set: &[u8], from: i64, limit: usize) -> Result<Vec<Shown>, String> {
    let mut out = Vec::new();
    let mut rest = record_set;
    while !rest.is_empty() && out.len() < limit {
        let total = match batch::peek_total_len(rest) {
            Some(Ok(n)) if n <= rest.len() => n,
            // A partial batch at the end of a record set is cut by the fetch's byte limit.
            _ if !out.is_empty() => break,
            Some(Err(e)) => return Err(format!("bad batch: {e}")),
            _ => return Err("the first batch is larger than max_bytes allows".into()),
        };
        let (b, tail) = rest.split_at(total);
        rest = tail;
        let header = batch::verify(b).map_err(|e| format!("bad batch: {e}"))?;
        if header.is_control() {
            continue;
        }
        let codec = header
            .compression()
            .ok_or_else(|| "batch with an unknown compression codec".to_string())?;
        let payload = &b[HEADER_LEN..header.total_len()];
        let inflated;
        let data: &[u8] = if codec == Compression::None {
            payload
        } else {
            inflated = decompress(codec, payload, MAX_INFLATED_BYTES)
                .map_err(|e| format!("batch at offset {}: {e}", header.base_offset))?;
            &inflated
        };
        let records = parse_records(data, header.record_count)
            .map_err(|e| format!("batch at offset {}: {e}", header.base_offset))?;
        for r in records {
            let offset = header.base_offset.saturating_add(i64::from(r.offset_delta));
            if offset < from {
                continue;
            }
            if out.len() >= limit {
                break;
            }
            let timestamp = if header.is_log_append_time() {
                header.max_timestamp
            } else {
                header.base_timestamp.saturating_add(r.timestamp_delta)
            };
            let headers = parse_headers(r.headers)
                .ok_or_else(|| format!("record at offset {offset}: malformed headers"))?;
            out.push(Shown {
                offset,
                timestamp,
                codec: codec_name(codec),
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    Ok(out)
}

/// Bytes as the page shows them: the form used and the text (not yet HTML-escaped: the
/// templates escape it).
pub fn show_bytes(bytes: &[u8], format: Format) -> (&'static str, String) {
    let (cut, more) = if bytes.len() > MAX_SHOWN_BYTES {
        (&bytes[..MAX_SHOWN_BYTES], true)
    } else {
        (bytes, false)
    };
    let (kind, mut text) = match format {
        Format::Hex => ("hex", hex(cut)),
        Format::Json if !more => match serde_json::from_slice::<serde_json::Value>(cut) {
            Ok(v) => (
                "json",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
            ),
            Err(_) => as_text(cut),
        },
        Format::Auto if !more => match serde_json::from_slice::<serde_json::Value>(cut) {
            Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => (
                "json",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
            ),
            _ => as_text(cut),
        },
        _ => as_text(cut),
    };
    if more {
        text.push_str(&format!(
            " … ({} bytes, first {MAX_SHOWN_BYTES} shown)",
            bytes.len()
        ));
    }
    (kind, text)
}

/// UTF-8 text when the bytes are text (a cut may split a character: the valid prefix counts),
/// else hex.
fn as_text(b: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(b) {
        Ok(s)
            if !s
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
        {
            ("text", s.to_string())
        }
        Err(e) if e.valid_up_to() + 4 > b.len() && e.error_len().is_none() => {
            let s = std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or("");
            ("text", s.to_string())
        }
        _ => ("hex", hex(b)),
    }
}

/// Lowercase hex, a space between bytes.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression as KCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(values: &[&[u8]], compression: KCompression, base: i64) -> Vec<u8> {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                delete_horizon: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                // One batch: the encoder splits where offset - sequence changes.
                sequence: (base + i as i64) as i32,
                timestamp: 1000 + i as i64,
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: Some(bytes::Bytes::copy_from_slice(v)),
                headers: [(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(bytes::Bytes::from_static(b"hv")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
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
    fn decodes_plain_and_compressed_batches_from_an_offset() {
        let mut set = batch(&[b"a", b"b", b"c"], KCompression::None, 0);
        set.extend(batch(&[b"d", b"e"], KCompression::Gzip, 3));
        set.extend(batch(&[b"f"], KCompression::Zstd, 5));
        let got = decode(&set, 1, 100).expect("decodes");
        let values: Vec<_> = got
            .iter()
            .map(|r| r.value.clone().expect("value"))
            .collect();
        assert_eq!(values, [b"b", b"c", b"d", b"e", b"f"].map(|v| v.to_vec()));
        assert_eq!(got[0].offset, 1);
        assert_eq!(got[0].timestamp, 1001);
        assert_eq!(got[2].codec, "gzip");
        assert_eq!(got[4].codec, "zstd");
        assert_eq!(got[0].headers, vec![(b"h".to_vec(), Some(b"hv".to_vec()))]);
        assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
        // The limit cuts inside a batch.
        assert_eq!(decode(&set, 0, 4).expect("decodes").len(), 4);
        // A batch cut at the end of the set (the fetch's byte limit) ends the list.
        let cut = &set[..set.len() - 3];
        assert_eq!(decode(cut, 0, 100).expect("decodes").len(), 5);
    }

    #[test]
    fn a_corrupt_batch_is_an_error_not_a_panic() {
        let mut set = batch(&[b"a"], KCompression::None, 0);
        let last = set.len() - 1;
        set[last] ^= 0xff;
        assert!(decode(&set, 0, 10).is_err());
        assert!(decode(&set[..20], 0, 10).is_err());
        for n in 0..set.len() {
            let _ = decode(&set[..n], 0, 10);
        }
    }

    #[test]
    fn bytes_are_shown_as_json_text_or_hex() {
        assert_eq!(show_bytes(b"{\"a\":1}", Format::Auto).0, "json");
        assert_eq!(show_bytes(b"{\"a\":1}", Format::Json).1, "{\n  \"a\": 1\n}");
        assert_eq!(show_bytes(b"plain", Format::Auto), ("text", "plain".into()));
        assert_eq!(show_bytes(b"12", Format::Auto), ("text", "12".into()));
        assert_eq!(
            show_bytes(b"\x00\xff", Format::Auto),
            ("hex", "00 ff".into())
        );
        assert_eq!(show_bytes(b"hi", Format::Hex), ("hex", "68 69".into()));
        assert_eq!(
            show_bytes(b"nojson", Format::Json),
            ("text", "nojson".into())
        );
        let big = vec![b'x'; MAX_SHOWN_BYTES + 10];
        let (kind, text) = show_bytes(&big, Format::Auto);
        assert_eq!(kind, "text");
        assert!(text.ends_with(&format!(
            "({} bytes, first {MAX_SHOWN_BYTES} shown)",
            big.len()
        )));
    }
}
