//! Produce payloads and stored batches: splitting and validating concatenated record batches,
//! reading record offsets and timestamps, looking for keyless records (inflating compressed
//! payloads through a limit), and parsing records. Must never panic or abort.
//!
//! A mutated batch almost never keeps a valid CRC32C, which would stop the fuzzer at `verify`.
//! So every input is run twice: as given, and with the CRC of each batch it holds recomputed,
//! which lets mutations reach the record parsing behind the CRC check.
//!
//! Seeds (corpus/record_batch): single and concatenated batches, keyed, keyless, tombstones,
//! headers, idempotent, and compressed with every codec (examples/gen_seeds.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vltava_protocol::batch::{
    self, Compression, HEADER_LEN, has_keyless_record, parse_header, record_offsets_and_timestamps,
    split_produced, verify,
};
use vltava_protocol::compression::decompress;
use vltava_protocol::records::{RecordView, parse_records};

/// The inflation limit handed to the functions that decompress.
const MAX_INFLATED: usize = 1 << 20;
/// Where the CRC-covered region of a batch starts (attributes) and where the CRC sits.
const CRC_START: usize = 21;
const OFF_CRC: usize = 17;

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    if fix_crcs(&mut fixed) && fixed != data {
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    if let Ok(batches) = split_produced(bytes::Bytes::copy_from_slice(data)) {
        let total: usize = batches.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(total, data.len(), "split_produced must use every byte");
        for (header, bytes) in &batches {
            assert_eq!(verify(bytes).as_ref(), Ok(header));
        }
    }

    let verified = verify(data);
    let offsets = record_offsets_and_timestamps(data, MAX_INFLATED);
    let keyless = has_keyless_record(data, MAX_INFLATED);
    if verified.is_err() {
        assert!(offsets.is_err() && keyless.is_err(), "both verify first");
    }
    if let (Ok(header), Ok(offsets)) = (&verified, &offsets) {
        let count = usize::try_from(header.record_count).unwrap_or(0);
        assert_eq!(offsets.len(), count);
    }

    // The records of the first batch, CRC or not: inflated as the cleaner would, then parsed.
    let Ok(header) = parse_header(data) else {
        return;
    };
    let end = header.total_len().min(data.len());
    let section = &data[HEADER_LEN..end];
    let inflated;
    let records: &[u8] = match header.compression() {
        Some(Compression::None) | None => section,
        Some(codec) => match decompress(codec, section, MAX_INFLATED) {
            Ok(out) => {
                assert!(out.len() <= MAX_INFLATED);
                inflated = out;
                &inflated
            }
            Err(_) => return,
        },
    };
    let parsed = parse_records(records, header.record_count);
    if verified.is_ok() && header.compression().is_some() {
        // Same bytes, same inflation: has_keyless_record must agree with parse_records, and
        // the lenient offset reader must accept whatever parse_records accepts.
        let expected = parsed
            .as_ref()
            .ok()
            .map(|views| views.iter().any(|r| r.key.is_none()));
        assert_eq!(keyless.as_ref().ok(), expected.as_ref());
        if let Ok(views) = &parsed {
            let offsets = offsets.as_ref().expect("parsed records have offsets");
            let expected: Vec<(i64, i64)> = views
                .iter()
                .map(|r| {
                    (
                        header.base_offset.saturating_add(i64::from(r.offset_delta)),
                        header.base_timestamp.saturating_add(r.timestamp_delta),
                    )
                })
                .collect();
            assert_eq!(offsets, &expected);
        }
    }
    if let Ok(views) = parsed {
        round_trip(&views);
    }
}

/// Parsed records encode to bytes that parse back to the same records (byte equality does not
/// hold for varints written with more bytes than needed, which parse but re-encode shorter).
fn round_trip(views: &[RecordView<'_>]) {
    let mut encoded = Vec::new();
    for v in views {
        v.encode(&mut encoded);
    }
    let count = i32::try_from(views.len()).expect("count came from an i32");
    let again = parse_records(&encoded, count).expect("encoded records parse");
    assert_eq!(again.as_slice(), views);
}

/// Recomputes the CRC of every whole batch in `buf`, front to back. Returns whether anything
/// was there to fix (at least one batch header).
fn fix_crcs(buf: &mut [u8]) -> bool {
    let mut pos = 0;
    let mut fixed = false;
    while let Some(Ok(total)) = batch::peek_total_len(&buf[pos..]) {
        let end = match pos.checked_add(total) {
            Some(end) if end <= buf.len() && total >= HEADER_LEN => end,
            _ => break,
        };
        let crc = crc32c::crc32c(&buf[pos + CRC_START..end]);
        buf[pos + OFF_CRC..pos + OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        fixed = true;
        pos = end;
    }
    fixed
}
