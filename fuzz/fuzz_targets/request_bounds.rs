//! The bounds pre-scan against the real decoder: input is `api_key: i16, version: i16` (big
//! endian) followed by a request body. Whatever `check_request_body` accepts goes to
//! kafka-protocol's `RequestKind::decode`, which sizes allocations from declared counts: it
//! must not abort (allocation failure) nor allocate above `-malloc_limit_mb`. Where both
//! accept, they must agree on where the message ends, as the bounds tests require.
//!
//! Seeds (corpus/request_bounds): the 4-byte prefix plus a populated and a default body for
//! every covered API and version (examples/gen_seeds.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vltava_protocol::bounds::{check_request_body, scan_request_body};
use vltava_protocol::kafka_protocol::messages::{ApiKey, RequestKind};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let api_key = i16::from_be_bytes([data[0], data[1]]);
    let version = i16::from_be_bytes([data[2], data[3]]);
    let body = &data[4..];
    let checked = check_request_body(api_key, version, body);
    let scanned = scan_request_body(api_key, version, body);
    assert_eq!(checked.is_ok(), scanned.is_ok());
    let Ok(scanned) = scanned else {
        return;
    };
    assert!(scanned <= body.len());
    let api = ApiKey::try_from(api_key).expect("the pre-scan only covers known api keys");
    let mut buf = bytes::Bytes::copy_from_slice(body);
    if RequestKind::decode(api, &mut buf, version).is_ok() {
        let consumed = body.len() - buf.len();
        assert_eq!(
            consumed, scanned,
            "pre-scan and decoder disagree on the end of api {api_key} v{version}"
        );
    }
});
