//! Produce payloads: splitting and validating concatenated record batches.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vltava_protocol::batch::split_produced(bytes::Bytes::copy_from_slice(data));
    let _ = vltava_protocol::batch::verify(data);
});
