//! Any frame body (the bytes after the 4-byte length prefix): header decode, then bounds check
//! and body decode for whatever api/version it claims. Must never panic or abort; an allocation
//! above `-malloc_limit_mb` (scripts/fuzz: 512 MiB) counts as a finding too.
//!
//! Seeds (corpus/request): a populated and a default request for every API and version the
//! broker advertises, each with its request header (examples/gen_seeds.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = bytes::Bytes::copy_from_slice(data);
    if let Ok(raw) = vltava_protocol::frame::decode_header(frame) {
        // The ids the broker answers with even when the rest fails must be the ones decoded.
        let (key, version, correlation_id) =
            vltava_protocol::frame::peek_ids(data).expect("decoded header is at least 8 bytes");
        assert_eq!(key, raw.api_key as i16);
        assert_eq!(version, raw.header.request_api_version);
        assert_eq!(correlation_id, raw.header.correlation_id);
        let _ = vltava_protocol::frame::decode_body(raw.api_key, version, raw.body);
    }
});
