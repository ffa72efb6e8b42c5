//! Bounded decompression: the first byte picks the codec (modulo 5: none, gzip, snappy, lz4,
//! zstd), the rest is the payload. Output must never exceed the limit, whatever the input
//! declares (bombs included); an allocation above `-malloc_limit_mb` is a finding. Output that
//! fits is compressed again with the same codec (and snappy framing) and must inflate back to
//! itself, which covers `compress` as the cleaner uses it.
//!
//! Seeds (corpus/decompress): small valid payloads of every codec, both snappy framings, and
//! gzip and zstd bombs (examples/gen_seeds.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vltava_protocol::batch::Compression;
use vltava_protocol::compression::{SnappyFraming, compress, decompress};

const LIMIT: usize = 1 << 20;
/// Round trips only for outputs up to this size, to keep executions fast.
const ROUND_TRIP_MAX: usize = 64 << 10;

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let codec = CODECS[usize::from(selector) % CODECS.len()];
    let Ok(out) = decompress(codec, payload, LIMIT) else {
        return;
    };
    assert!(
        out.len() <= LIMIT,
        "{codec:?}: {} bytes out of a {LIMIT}-byte limit",
        out.len()
    );
    if out.len() <= ROUND_TRIP_MAX {
        let framing = SnappyFraming::of(payload);
        let again = compress(codec, &out, framing).expect("compression of fitting output");
        let back = decompress(codec, &again, out.len()).expect("own output inflates");
        assert!(back == out, "{codec:?} round trip changed the data");
    }
});
