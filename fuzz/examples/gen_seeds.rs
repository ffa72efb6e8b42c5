//! Writes the committed seed corpora of the fuzz targets (fuzz/corpus/<target>/). Deterministic:
//! running it again rewrites the same files.
//!
//!     cd fuzz && cargo run --example gen_seeds
//!
//! - request: a populated and a default request for every API and version the broker
//!   advertises (`SUPPORTED_APIS` in crates/broker/src/handlers.rs, read from the source so the
//!   generator needs no broker build) that kafka-protocol can encode, each behind a request
//!   header, as a frame body (the bytes after the length prefix).
//! - request_bounds: `api_key: i16, version: i16` then the same bodies, for every version the
//!   bounds pre-scan covers.
//! - record_batch: v2 record batches (keys, keyless, tombstones, headers, idempotent,
//!   transactional, control, every codec) and concatenations of them.
//! - decompress: one codec selector byte, then a small valid payload of each codec (raw and
//!   xerial snappy), plus gzip and zstd bombs that inflate far past the 1 MiB limit.
//!
//! The request builders are `vltava_protocol::testing`'s (shared with the bounds tests).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use vltava_protocol::batch::{self, ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, Compression};
use vltava_protocol::bounds::{covered_versions, scan_request_body};
use vltava_protocol::compression::{SnappyFraming, compress};
use vltava_protocol::kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use vltava_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use vltava_protocol::records::{RecordView, write_varint};
use vltava_protocol::testing::{EXTRA_TAG, default_request, extra_tag, populated_request};

fn encode(req: &RequestKind, version: i16) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    req.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn encode_header(h: &RequestHeader, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    h.encode(&mut buf, version).expect("request header encodes");
    buf.to_vec()
}

/// A populated and a default body of `api` at `version`; `None` where kafka-protocol cannot
/// encode that version (Produce v0-v2, advertised for librdkafka but never served).
fn bodies(api: ApiKey, v: i16) -> Option<[(&'static str, Vec<u8>); 2]> {
    let records = Bytes::from(keyed_batch(Compression::None));
    let populated = populated_request(api, v, records).unwrap_or_else(|| {
        panic!("no seed builder for {api:?}: add one in vltava_protocol::testing")
    });
    let default = default_request(api).unwrap_or_else(|| panic!("no default for {api:?}"));
    Some([
        ("populated", encode(&populated, v)?),
        ("default", encode(&default, v)?),
    ])
}

/// The request header a client would send, encoded in the header version of `api`/`v`.
fn header(api: ApiKey, v: i16, correlation_id: i32) -> Vec<u8> {
    let mut h = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(v)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("vltava-fuzz")));
    let version = api.request_header_version(v);
    if version >= 2 {
        h = h.with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    }
    encode_header(&h, version)
}

// ---------------------------------------------------------------------------------------------
// Record batches
// ---------------------------------------------------------------------------------------------

/// One record: key and value (either may be null) and headers.
struct Rec {
    key: Option<&'static [u8]>,
    value: Option<&'static [u8]>,
    headers: &'static [(&'static [u8], Option<&'static [u8]>)],
}

fn records_section(records: &[Rec]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut headers = Vec::new();
        write_varint(&mut headers, r.headers.len() as i32);
        for (k, v) in r.headers {
            write_varint(&mut headers, k.len() as i32);
            headers.extend_from_slice(k);
            match v {
                Some(v) => {
                    write_varint(&mut headers, v.len() as i32);
                    headers.extend_from_slice(v);
                }
                None => write_varint(&mut headers, -1),
            }
        }
        RecordView {
            attributes: 0,
            timestamp_delta: 10 * i as i64,
            offset_delta: i as i32,
            key: r.key,
            value: r.value,
            headers: &headers,
        }
        .encode(&mut out);
    }
    out
}

const KEYED: &[Rec] = &[
    Rec {
        key: Some(b"user-1"),
        value: Some(b"{\"clicks\":1}"),
        headers: &[(b"trace", Some(b"abc")), (b"empty", None)],
    },
    Rec {
        key: Some(b"user-2"),
        value: Some(b"{\"clicks\":2}"),
        headers: &[],
    },
    Rec {
        key: Some(b"user-1"),
        value: None,
        headers: &[],
    },
];

const KEYLESS: &[Rec] = &[
    Rec {
        key: None,
        value: Some(b"no key here"),
        headers: &[],
    },
    Rec {
        key: Some(b""),
        value: Some(b""),
        headers: &[(b"h", Some(b""))],
    },
];

const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// A v2 batch of `records`, compressed with `codec` (snappy framed as `framing`).
fn batch_of(
    records: &[Rec],
    codec: Compression,
    framing: SnappyFraming,
    attributes: i16,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    let section = records_section(records);
    let payload = compress(codec, &section, framing).expect("compress");
    let codec_bits: i16 = match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    };
    let count = records.len() as i32;
    let header = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: attributes | codec_bits,
        last_offset_delta: count - 1,
        base_timestamp: BASE_TIMESTAMP,
        max_timestamp: BASE_TIMESTAMP + 10 * i64::from(count - 1),
        producer_id: producer.0,
        producer_epoch: producer.1,
        base_sequence: producer.2,
        record_count: count,
    };
    let batch = batch::build_batch(&header, &payload);
    batch::verify(&batch).expect("seed batch verifies");
    batch
}

const NO_PRODUCER: (i64, i16, i32) = (-1, -1, -1);

fn keyed_batch(codec: Compression) -> Vec<u8> {
    batch_of(KEYED, codec, SnappyFraming::Raw, 0, NO_PRODUCER)
}

fn record_batch_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = vec![
        ("keyed".to_string(), keyed_batch(Compression::None)),
        (
            "keyless".into(),
            batch_of(
                KEYLESS,
                Compression::None,
                SnappyFraming::Raw,
                0,
                NO_PRODUCER,
            ),
        ),
        (
            "idempotent".into(),
            batch_of(
                KEYED,
                Compression::None,
                SnappyFraming::Raw,
                0,
                (1000, 0, 0),
            ),
        ),
        (
            "transactional".into(),
            batch_of(
                KEYED,
                Compression::None,
                SnappyFraming::Raw,
                ATTR_TRANSACTIONAL,
                (1000, 1, 7),
            ),
        ),
        (
            "control".into(),
            batch_of(
                KEYLESS,
                Compression::None,
                SnappyFraming::Raw,
                ATTR_TRANSACTIONAL | ATTR_CONTROL,
                (1000, 1, -1),
            ),
        ),
        (
            "two-batches".into(),
            [
                keyed_batch(Compression::None),
                batch_of(
                    KEYLESS,
                    Compression::Zstd,
                    SnappyFraming::Raw,
                    0,
                    NO_PRODUCER,
                ),
            ]
            .concat(),
        ),
    ];
    for (name, codec, framing) in [
        ("gzip", Compression::Gzip, SnappyFraming::Raw),
        ("snappy-raw", Compression::Snappy, SnappyFraming::Raw),
        ("snappy-xerial", Compression::Snappy, SnappyFraming::Xerial),
        ("lz4", Compression::Lz4, SnappyFraming::Raw),
        ("zstd", Compression::Zstd, SnappyFraming::Raw),
    ] {
        seeds.push((
            format!("keyed-{name}"),
            batch_of(KEYED, codec, framing, 0, NO_PRODUCER),
        ));
        seeds.push((
            format!("keyless-{name}"),
            batch_of(KEYLESS, codec, framing, 0, NO_PRODUCER),
        ));
    }
    seeds
}

// ---------------------------------------------------------------------------------------------
// Decompression payloads
// ---------------------------------------------------------------------------------------------

fn decompress_seeds() -> Vec<(String, Vec<u8>)> {
    let small = records_section(KEYED).repeat(4);
    let mut seeds = Vec::new();
    for (selector, name, codec, framing) in [
        (0u8, "none", Compression::None, SnappyFraming::Raw),
        (1, "gzip", Compression::Gzip, SnappyFraming::Raw),
        (2, "snappy-raw", Compression::Snappy, SnappyFraming::Raw),
        (
            2,
            "snappy-xerial",
            Compression::Snappy,
            SnappyFraming::Xerial,
        ),
        (3, "lz4", Compression::Lz4, SnappyFraming::Raw),
        (4, "zstd", Compression::Zstd, SnappyFraming::Raw),
    ] {
        let payload = compress(codec, &small, framing).expect("compress");
        seeds.push((
            format!("{name}-small"),
            [&[selector][..], &payload].concat(),
        ));
    }
    // Bombs: 10 MiB of zeros each, far past the 1 MiB limit the target uses.
    let zeros = vec![0u8; 10 << 20];
    let gz = compress(Compression::Gzip, &zeros, SnappyFraming::Raw).expect("gzip");
    seeds.push(("gzip-bomb".into(), [&[1u8][..], &gz].concat()));
    let z = compress(Compression::Zstd, &zeros, SnappyFraming::Raw).expect("zstd");
    seeds.push(("zstd-bomb".into(), [&[4u8][..], &z].concat()));
    // A raw snappy block that declares 2 MiB up front (only the length prefix and a literal).
    let mut sn = vec![2u8];
    let mut len = 2u32 << 20;
    while len >= 0x80 {
        sn.push((len as u8) | 0x80);
        len >>= 7;
    }
    sn.push(len as u8);
    sn.extend_from_slice(&[0x0c, b'a', b'b', b'c', b'd']);
    seeds.push(("snappy-declares-2mib".into(), sn));
    seeds
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn write_corpus(dir: &Path, seeds: &BTreeMap<String, Vec<u8>>) -> usize {
    // Generated seeds are replaced; inputs kept from fuzzing campaigns (`found-*`) stay.
    std::fs::create_dir_all(dir).expect("create corpus dir");
    for entry in std::fs::read_dir(dir).expect("read corpus dir") {
        let path = entry.expect("corpus entry").path();
        let keep = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("found-"));
        if !keep {
            std::fs::remove_file(&path).expect("remove old seed");
        }
    }
    let mut bytes = 0;
    for (name, data) in seeds {
        let mut f = std::fs::File::create(dir.join(name)).expect("create seed");
        f.write_all(data).expect("write seed");
        bytes += data.len();
    }
    println!("{}: {} seeds, {bytes} bytes", dir.display(), seeds.len());
    bytes
}

/// The `(ApiKey::Name, lo, hi)` rows of `SUPPORTED_APIS` in the broker's handlers.rs.
fn supported_apis(handlers_rs: &Path) -> Vec<(ApiKey, i16, i16)> {
    let src = std::fs::read_to_string(handlers_rs).expect("read handlers.rs");
    let start = src
        .find("pub const SUPPORTED_APIS")
        .expect("SUPPORTED_APIS in handlers.rs");
    let table = &src[start..];
    let table = &table[..table.find("];").expect("end of SUPPORTED_APIS")];
    let mut out = Vec::new();
    for row in table.split("(ApiKey::").skip(1) {
        let row = &row[..row.find(')').expect("row end")];
        let parts: Vec<&str> = row.split(',').map(str::trim).collect();
        let [name, lo, hi] = parts[..] else {
            panic!("unexpected SUPPORTED_APIS row {row:?}");
        };
        let api = ApiKey::iter()
            .find(|k| format!("{k:?}") == name)
            .unwrap_or_else(|| panic!("unknown api {name}"));
        out.push((api, lo.parse().expect("lo"), hi.parse().expect("hi")));
    }
    assert!(!out.is_empty(), "no rows parsed from SUPPORTED_APIS");
    out
}

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("corpus");
    let apis = supported_apis(&manifest.join("../crates/broker/src/handlers.rs"));

    let mut request = BTreeMap::new();
    let mut request_bounds = BTreeMap::new();
    let mut correlation_id = 1;
    for (api, lo, hi) in apis {
        for v in lo..=hi {
            let Some(bodies) = bodies(api, v) else {
                println!("skipped {api:?} v{v}: kafka-protocol cannot encode it");
                continue;
            };
            let covered = covered_versions(api as i16).is_some_and(|r| r.contains(&v));
            for (kind, body) in bodies {
                let name = format!("{api:?}-v{v:02}-{kind}");
                if covered {
                    assert_eq!(
                        scan_request_body(api as i16, v, &body),
                        Ok(body.len()),
                        "{name}: the pre-scan must walk the seed exactly"
                    );
                    let prefixed = [&(api as i16).to_be_bytes()[..], &v.to_be_bytes(), &body];
                    request_bounds.insert(name.clone(), prefixed.concat());
                }
                let frame = [header(api, v, correlation_id), body].concat();
                correlation_id += 1;
                request.insert(name, frame);
            }
        }
    }

    let record_batch: BTreeMap<_, _> = record_batch_seeds().into_iter().collect();
    let decompress: BTreeMap<_, _> = decompress_seeds().into_iter().collect();

    let total = write_corpus(&root.join("request"), &request)
        + write_corpus(&root.join("request_bounds"), &request_bounds)
        + write_corpus(&root.join("record_batch"), &record_batch)
        + write_corpus(&root.join("decompress"), &decompress);
    println!("total {total} bytes");
}
