//! Any frame body: header decode, then bounds check and body decode for whatever api/version it
//! claims. Must never panic or abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = bytes::Bytes::copy_from_slice(data);
    if let Ok(raw) = vltava_protocol::frame::decode_header(frame) {
        let version = raw.header.request_api_version;
        let _ = vltava_protocol::frame::decode_body(raw.api_key, version, raw.body);
    }
});
