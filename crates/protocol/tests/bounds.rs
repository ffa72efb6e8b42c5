//! Tests for the request-body bounds pre-scan (`vltava_protocol::bounds`).
//!
//! The schema tables in `bounds.rs` are transcribed from kafka-protocol's generated decoders,
//! so a table error can only be caught by comparing the two. These tests use kafka-protocol as
//! the oracle. Populated requests it encodes must be walked byte for byte. Wherever both the
//! walker and the decoder accept corrupted or random input, they must end at the same byte.
//! And every body the walker accepts is handed to the real decoder: if the walker let an
//! oversized count through, the test process would abort.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind};
use proptest::prelude::*;
use vltava_protocol::bounds::{BoundsError, check_request_body, covered_apis, scan_request_body};
use vltava_protocol::testing::{default_request, extra_tag, populated_request};

/// The coverage the pre-scan promises: (api key, first version, last version).
const EXPECTED_COVERAGE: &[(i16, i16, i16)] = &[
    (18, 0, 4),
    (3, 0, 12),
    (0, 3, 11),
    (1, 4, 16),
    (2, 1, 8),
    (19, 2, 7),
    (20, 1, 6),
    (37, 0, 3),
    (32, 1, 4),
    (33, 0, 2),
    (43, 0, 2),
    (44, 0, 1),
    (45, 0, 1),
    (46, 0, 0),
    (55, 0, 2),
    (60, 0, 2),
    (80, 0, 0),
    (81, 0, 0),
    (21, 0, 2),
    (22, 0, 4),
    (23, 2, 4),
    (10, 0, 4),
    (11, 0, 9),
    (14, 0, 5),
    (12, 0, 4),
    (13, 0, 5),
    (8, 2, 9),
    (9, 1, 9),
    (15, 0, 5),
    (16, 0, 4),
    (42, 0, 2),
    (47, 0, 0),
    (35, 1, 4),
    (61, 0, 0),
    (71, 0, 0),
    (72, 0, 0),
    (74, 0, 0),
];

fn all_pairs() -> Vec<(i16, i16)> {
    covered_apis()
        .flat_map(|(key, versions)| versions.map(move |v| (key, v)))
        .collect()
}

fn api_key(api: i16) -> ApiKey {
    ApiKey::try_from(api).unwrap_or_else(|()| panic!("unknown api key {api}"))
}

fn encode(req: &RequestKind, api: i16, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    if let Err(e) = req.encode(&mut buf, version) {
        panic!("builder for api {api} v{version} is invalid: {e}");
    }
    buf.to_vec()
}

/// A populated request for `api` at `version`, encoded by kafka-protocol.
fn populated(api: i16, version: i16) -> Vec<u8> {
    let records = Bytes::from_static(b"stand-in for a record batch");
    let req = populated_request(api_key(api), version, records)
        .unwrap_or_else(|| panic!("no test builder for api key {api}"));
    encode(&req, api, version)
}

/// The request type's `Default`, which exercises empty arrays and default nulls.
fn defaults(api: i16, version: i16) -> Vec<u8> {
    let req = default_request(api_key(api))
        .unwrap_or_else(|| panic!("no test builder for api key {api}"));
    encode(&req, api, version)
}

/// Runs the real decoder. Returns the bytes it consumed if it succeeded. The point is the
/// call itself: on an unguarded oversized count it would abort this process.
fn decode(api: i16, version: i16, body: &[u8]) -> Option<usize> {
    let mut buf = Bytes::copy_from_slice(body);
    let ok = RequestKind::decode(api_key(api), &mut buf, version).is_ok();
    ok.then(|| body.len() - buf.remaining())
}

/// The safety contract, checked on arbitrary input: never panic. If the walker accepts, the
/// decoder runs (and must not abort). If both accept, they end at the same byte.
fn check_guarded_decode(api: i16, version: i16, body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(scanned) = scan_request_body(api, version, body) else {
        return Ok(());
    };
    prop_assert!(scanned <= body.len());
    prop_assert_eq!(check_request_body(api, version, body), Ok(()));
    if let Some(decoded) = decode(api, version, body) {
        prop_assert_eq!(
            decoded,
            scanned,
            "walker and decoder disagree on api {} v{} for {:02x?}",
            api,
            version,
            body
        );
    }
    Ok(())
}

fn valid_encodings() -> Vec<(i16, i16, Vec<u8>)> {
    all_pairs()
        .into_iter()
        .flat_map(|(api, v)| [(api, v, populated(api, v)), (api, v, defaults(api, v))])
        .collect()
}

#[test]
fn coverage_is_exactly_what_was_promised() {
    let mut expected: Vec<(i16, i16, i16)> = EXPECTED_COVERAGE.to_vec();
    let mut actual: Vec<(i16, i16, i16)> = covered_apis()
        .map(|(key, versions)| (key, *versions.start(), *versions.end()))
        .collect();
    expected.sort_unstable();
    actual.sort_unstable();
    assert_eq!(actual, expected);
}

#[test]
fn populated_requests_round_trip_exactly() {
    for (api, v) in all_pairs() {
        let body = populated(api, v);
        assert_eq!(
            scan_request_body(api, v, &body),
            Ok(body.len()),
            "api {api} v{v}: {body:02x?}"
        );
        assert_eq!(check_request_body(api, v, &body), Ok(()));
        // The builder must produce something kafka-protocol itself accepts, or the
        // comparison above proves nothing.
        assert_eq!(decode(api, v, &body), Some(body.len()), "api {api} v{v}");
    }
}

#[test]
fn default_requests_round_trip_exactly() {
    for (api, v) in all_pairs() {
        let body = defaults(api, v);
        assert_eq!(
            scan_request_body(api, v, &body),
            Ok(body.len()),
            "api {api} v{v}: {body:02x?}"
        );
        assert_eq!(decode(api, v, &body), Some(body.len()), "api {api} v{v}");
    }
}

#[test]
fn trailing_bytes_are_allowed_but_not_counted() {
    for (api, v) in all_pairs() {
        let mut body = populated(api, v);
        let len = body.len();
        body.extend_from_slice(&[0xff; 5]);
        assert_eq!(scan_request_body(api, v, &body), Ok(len), "api {api} v{v}");
    }
}

#[test]
fn uncovered_keys_and_versions_are_unsupported() {
    for (api, versions) in covered_apis() {
        for v in [*versions.start() - 1, *versions.end() + 1, -1, i16::MAX] {
            if versions.contains(&v) {
                continue;
            }
            let body = populated(api, *versions.start());
            assert_eq!(
                check_request_body(api, v, &body),
                Err(BoundsError::Unsupported {
                    api_key: api,
                    version: v
                })
            );
        }
    }
    for api in [-1, 4, 17, 36, 1000] {
        assert!(matches!(
            check_request_body(api, 0, &[]),
            Err(BoundsError::Unsupported { .. })
        ));
    }
}

#[test]
fn every_strict_prefix_is_rejected() {
    // The walk only depends on bytes already read, and on the full encoding it ends exactly
    // at the last byte. So every strict prefix must run out before the walk completes.
    for (api, v, body) in valid_encodings() {
        for cut in 0..body.len() {
            let prefix = &body[..cut];
            assert!(
                check_request_body(api, v, prefix).is_err(),
                "api {api} v{v} accepted a {cut}-byte prefix of {}",
                body.len()
            );
        }
    }
}

/// First-field arrays: (api key, versions) whose body starts with an array count.
const LEADING_ARRAYS: &[(i16, RangeIncl)] = &[
    (3, (0, 12)),
    (19, (2, 7)),
    (21, (0, 2)),
    (32, (1, 4)),
    (33, (0, 2)),
    (37, (0, 3)),
    (44, (0, 1)),
    (15, (0, 5)),
    (42, (0, 2)),
];
type RangeIncl = (i16, i16);

const fn flexible_from(api: i16) -> i16 {
    match api {
        3 => 9,
        19 => 5,
        21 | 33 | 37 | 42 => 2,
        32 => 4,
        44 => 1,
        15 => 5,
        _ => i16::MAX,
    }
}

/// `2^31` as a 5-byte unsigned varint: a compact count of 2^31 - 1 elements.
const HUGE_VARINT: [u8; 5] = [0x80, 0x80, 0x80, 0x80, 0x08];

#[test]
fn huge_leading_counts_are_rejected() {
    for &(api, (lo, hi)) in LEADING_ARRAYS {
        for v in lo..=hi {
            let body = populated(api, v);
            let corrupted: Vec<u8> = if v >= flexible_from(api) {
                // Replace the 1-byte compact count with a 5-byte one.
                HUGE_VARINT.iter().chain(&body[1..]).copied().collect()
            } else {
                [0x7f, 0xff, 0xff, 0xff]
                    .iter()
                    .chain(&body[4..])
                    .copied()
                    .collect()
            };
            let err = check_request_body(api, v, &corrupted);
            assert!(
                matches!(err, Err(BoundsError::CountTooLarge { offset: 0, .. })),
                "api {api} v{v}: {err:?}"
            );
        }
    }
}

const ABORT_CHILD_ENV: &str = "VLTAVA_BOUNDS_ABORT_CHILD";

/// The hazard this module exists for, on its own: kafka-protocol given the 20-byte Metadata
/// body that claims 2^31 - 1 topics. That aborts the process. So the test does nothing unless
/// it is the child process started by `without_the_guard_the_decoder_aborts`.
#[test]
fn unguarded_decode_of_huge_count() {
    if std::env::var_os(ABORT_CHILD_ENV).is_none() {
        return;
    }
    let mut body = vec![0x7f, 0xff, 0xff, 0xff];
    body.extend_from_slice(&[0; 16]);
    let _ = decode(3, 1, &body);
}

#[test]
fn without_the_guard_the_decoder_aborts() {
    let mut body = vec![0x7f, 0xff, 0xff, 0xff];
    body.extend_from_slice(&[0; 16]);
    assert!(matches!(
        check_request_body(3, 1, &body),
        Err(BoundsError::CountTooLarge { .. })
    ));
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args(["--exact", "unguarded_decode_of_huge_count"])
        .env("RUST_BACKTRACE", "0")
        .env(ABORT_CHILD_ENV, "1")
        .output()
        .expect("spawn test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unguarded decode survived: {stderr}");
    assert!(stderr.contains("memory allocation of"), "{stderr}");
}

#[test]
fn huge_nested_counts_are_rejected() {
    // OffsetDelete v0 with one topic of one partition:
    // group_id "g" (2+1), topics count (4), name "t" (2+1), partitions count at offset 10.
    let body = [
        0, 1, b'g', 0, 0, 0, 1, 0, 1, b't', 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0,
    ];
    let err = check_request_body(47, 0, &body);
    assert!(
        matches!(err, Err(BoundsError::CountTooLarge { offset: 10, .. })),
        "{err:?}"
    );
    // DeleteRecords v2 (flexible): topics count 1 (0x02), name "t" (0x02 't'), then the
    // partitions count at offset 3.
    let mut body = vec![0x02, 0x02, b't'];
    body.extend_from_slice(&HUGE_VARINT);
    body.extend_from_slice(&[0; 16]);
    let err = check_request_body(21, 2, &body);
    assert!(
        matches!(err, Err(BoundsError::CountTooLarge { offset: 3, .. })),
        "{err:?}"
    );
    // A count that fits the byte budget but not 12-byte partitions: 2 partitions, 13 bytes.
    let mut body = vec![0x02, 0x02, b't', 0x03];
    body.extend_from_slice(&[0; 13]);
    assert!(matches!(
        check_request_body(21, 2, &body),
        Err(BoundsError::CountTooLarge {
            min_element_size: 13,
            ..
        })
    ));
}

#[test]
fn huge_string_and_bytes_lengths_are_rejected() {
    // OffsetDelete v0: group_id claiming 32767 bytes.
    assert!(matches!(
        check_request_body(47, 0, &[0x7f, 0xff, b'g']),
        Err(BoundsError::LengthTooLarge { offset: 0, .. })
    ));
    // DescribeGroups v5: compact string array of one element claiming 2^31 - 1 bytes.
    let mut body = vec![0x02];
    body.extend_from_slice(&HUGE_VARINT);
    assert!(matches!(
        check_request_body(15, 5, &body),
        Err(BoundsError::LengthTooLarge { offset: 1, .. })
    ));
    // Unknown tagged field claiming more bytes than remain (ApiVersions v3, empty strings).
    let body = [0x01, 0x01, 0x01, 0x09, 0x7f, b'x'];
    assert!(matches!(
        check_request_body(18, 3, &body),
        Err(BoundsError::LengthTooLarge { offset: 4, .. })
    ));
    // Billions of tagged fields in a 10-byte body.
    let mut body = vec![0x01, 0x01];
    body.extend_from_slice(&HUGE_VARINT);
    body.extend_from_slice(&[0; 3]);
    assert!(matches!(
        check_request_body(18, 3, &body),
        Err(BoundsError::CountTooLarge { offset: 2, .. })
    ));
}

#[test]
fn known_tagged_field_must_fill_its_declared_size() {
    // Fetch v12 populated ends with the top-level tagged section holding cluster_id (tag 0).
    // Rebuild just that section with a lying size and check it is refused either way.
    let v = 12;
    let Some(RequestKind::Fetch(fetch)) = populated_request(ApiKey::Fetch, v, Bytes::new()) else {
        panic!("no Fetch builder");
    };
    let base = encode(&RequestKind::Fetch(fetch.with_cluster_id(None)), 1, v);
    let without_tags = &base[..base.len() - (1 + 1 + 1 + extra_tag().len())];
    for (size, ok) in [(3u8, true), (2, false), (4, false)] {
        let mut body = without_tags.to_vec();
        // One tagged field: tag 0, declared size, compact string "ab".
        body.extend_from_slice(&[0x01, 0x00, size, 0x03, b'a', b'b']);
        // Padding so an oversized declaration is not simply truncated.
        body.extend_from_slice(&[0; 4]);
        let res = check_request_body(1, v, &body);
        assert_eq!(res.is_ok(), ok, "size {size}: {res:?}");
        if !ok {
            assert!(
                matches!(
                    res,
                    Err(BoundsError::TaggedSizeMismatch { .. }
                        | BoundsError::LengthTooLarge { .. }
                        | BoundsError::Truncated { .. })
                ),
                "size {size}: {res:?}"
            );
        }
    }
}

#[test]
fn corrupting_any_position_to_a_huge_count_never_gets_past_the_guard() {
    // Sweep every position of every valid encoding: as a fixed-width count (i32::MAX over four
    // bytes) and as a compact count (one byte replaced by a 5-byte varint). Whatever the walker
    // accepts is decoded. In each message with an array, at least one corruption must be
    // refused precisely as an oversized count at the corrupted offset.
    for (api, v, body) in valid_encodings() {
        let mut count_rejections = 0;
        for pos in 0..body.len() {
            let mut fixed = body.clone();
            for (i, b) in [0x7f, 0xff, 0xff, 0xff].into_iter().enumerate() {
                if let Some(slot) = fixed.get_mut(pos + i) {
                    *slot = b;
                }
            }
            let compact: Vec<u8> = body[..pos]
                .iter()
                .chain(&HUGE_VARINT)
                .chain(&body[pos + 1..])
                .copied()
                .collect();
            for corrupted in [fixed, compact] {
                if let Err(BoundsError::CountTooLarge { offset, .. }) =
                    check_request_body(api, v, &corrupted)
                    && offset == pos
                {
                    count_rejections += 1;
                }
                if let Err(e) = check_guarded_decode(api, v, &corrupted) {
                    panic!("api {api} v{v} pos {pos}: {e}");
                }
            }
        }
        // Messages without any array and without a tagged section (which has a count too).
        let countless = matches!((api, v), (12, 0..=3) | (18, 0..=2) | (22, 0..=1))
            || matches!((api, v), (10, 0..=2) | (16, 0..=2) | (13, 0..=2));
        if !countless {
            assert!(count_rejections > 0, "api {api} v{v}: no count was refused");
        }
    }
}

fn pair_strategy() -> impl Strategy<Value = (i16, i16)> {
    let pairs = all_pairs();
    (0..pairs.len()).prop_map(move |i| pairs[i])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_for_any_api_and_version(
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        for (api, v) in all_pairs() {
            check_guarded_decode(api, v, &body)?;
        }
    }

    #[test]
    fn mutated_valid_encodings_stay_guarded(
        (api, v) in pair_strategy(),
        use_defaults in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut body = if use_defaults { defaults(api, v) } else { populated(api, v) };
        if !body.is_empty() {
            for (index, byte) in &edits {
                let i = index.index(body.len());
                body[i] = *byte;
            }
            if truncate {
                body.truncate(cut.index(body.len()));
            }
        }
        check_guarded_decode(api, v, &body)?;
    }

    #[test]
    fn random_prefixes_of_valid_encodings_are_rejected(
        (api, v) in pair_strategy(),
        cut in any::<prop::sample::Index>(),
    ) {
        let body = populated(api, v);
        if body.is_empty() {
            return Ok(());
        }
        let cut = cut.index(body.len());
        prop_assert!(check_request_body(api, v, &body[..cut]).is_err());
    }
}
