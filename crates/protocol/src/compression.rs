//! Bounded decompression of record batch payloads.
//!
//! The broker stores compressed batches as sent and inflates one only when it must look inside
//! (ListOffsets by timestamp, compaction). Every codec reads through a hard output limit, so a
//! decompression bomb costs at most that many bytes. Compaction also compresses again, with the
//! codec the producer chose ([`compress`]).

use std::io::{Read, Write};

use crate::batch::Compression;

/// Why a payload could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// Output would exceed the limit given.
    #[error("decompressed size exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// The codec rejected the input.
    #[error("corrupt {codec:?} payload: {reason}")]
    Corrupt {
        /// Codec.
        codec: Compression,
        /// Decoder message.
        reason: String,
    },
}

const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn read_bounded(
    codec: Compression,
    reader: impl Read,
    max_out: usize,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max_out).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > max_out {
        return Err(DecompressError::TooLarge(max_out));
    }
    Ok(out)
}

fn snappy_block(input: &[u8], out: &mut Vec<u8>, max_out: usize) -> Result<(), DecompressError> {
    let corrupt = |e: snap::Error| DecompressError::Corrupt {
        codec: Compression::Snappy,
        reason: e.to_string(),
    };
    let len = snap::raw::decompress_len(input).map_err(corrupt)?;
    if out.len().saturating_add(len) > max_out {
        return Err(DecompressError::TooLarge(max_out));
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(input, &mut out[start..])
        .map_err(corrupt)?;
    out.truncate(start + written);
    Ok(())
}

/// Snappy comes raw (librdkafka) or in xerial framing (the Java client): accept both.
fn snappy(input: &[u8], max_out: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    if let Some(mut rest) = input.strip_prefix(XERIAL_MAGIC) {
        let truncated = || DecompressError::Corrupt {
            codec: Compression::Snappy,
            reason: "truncated xerial chunk".into(),
        };
        // Version and compatible-version fields.
        rest = rest.get(8..).ok_or_else(truncated)?;
        while !rest.is_empty() {
            let len_bytes: [u8; 4] = rest
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(truncated)?;
            let len = u32::from_be_bytes(len_bytes) as usize;
            let chunk = rest.get(4..4 + len).ok_or_else(truncated)?;
            snappy_block(chunk, &mut out, max_out)?;
            rest = &rest[4 + len..];
        }
        return Ok(out);
    }
    snappy_block(input, &mut out, max_out)?;
    Ok(out)
}

/// How snappy output is framed. Java clients write xerial framing, librdkafka raw blocks; every
/// client reads both, but compaction keeps whatever the producer used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnappyFraming {
    /// One raw snappy block.
    Raw,
    /// xerial's stream format: magic, versions, then length-prefixed blocks of up to 32 KiB.
    Xerial,
}

impl SnappyFraming {
    /// The framing of an existing snappy payload.
    pub fn of(payload: &[u8]) -> SnappyFraming {
        if payload.starts_with(XERIAL_MAGIC) {
            SnappyFraming::Xerial
        } else {
            SnappyFraming::Raw
        }
    }
}

/// Block size of xerial framing, as snappy-java writes it.
const XERIAL_BLOCK: usize = 32 * 1024;

/// Why a payload could not be compressed (the encoders fail only on resource errors).
#[derive(Debug, thiserror::Error)]
#[error("{codec:?} compression failed: {reason}")]
pub struct CompressError {
    /// Codec.
    pub codec: Compression,
    /// Encoder message.
    pub reason: String,
}

/// Compresses `input` with `codec` in the form Kafka clients read: gzip at the default level,
/// snappy framed as `snappy` says, LZ4 frames with independent 64 KiB blocks (what Kafka's
/// Java reader requires), zstd at level 3 (Kafka's default). `Compression::None` copies.
pub fn compress(
    codec: Compression,
    input: &[u8],
    snappy: SnappyFraming,
) -> Result<Vec<u8>, CompressError> {
    let fail = |e: &dyn std::fmt::Display| CompressError {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(input).map_err(|e| fail(&e))?;
            e.finish().map_err(|e| fail(&e))
        }
        Compression::Snappy => {
            let mut enc = snap::raw::Encoder::new();
            match snappy {
                SnappyFraming::Raw => enc.compress_vec(input).map_err(|e| fail(&e)),
                SnappyFraming::Xerial => {
                    let mut out = XERIAL_MAGIC.to_vec();
                    out.extend_from_slice(&1i32.to_be_bytes());
                    out.extend_from_slice(&1i32.to_be_bytes());
                    for chunk in input.chunks(XERIAL_BLOCK) {
                        let block = enc.compress_vec(chunk).map_err(|e| fail(&e))?;
                        let len = u32::try_from(block.len()).map_err(|e| fail(&e))?;
                        out.extend_from_slice(&len.to_be_bytes());
                        out.extend_from_slice(&block);
                    }
                    Ok(out)
                }
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut w = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            w.write_all(input).map_err(|e| fail(&e))?;
            w.finish().map_err(|e| fail(&e))
        }
        Compression::Zstd => zstd::encode_all(input, 3).map_err(|e| fail(&e)),
    }
}

/// Inflates `input` compressed with `codec`, refusing to produce more than `max_out` bytes.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, DecompressError> {
    match codec {
        Compression::None => {
            if input.len() > max_out {
                return Err(DecompressError::TooLarge(max_out));
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(codec, flate2::read::GzDecoder::new(input), max_out),
        Compression::Snappy => snappy(input, max_out),
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(input), max_out),
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(input).map_err(|e| DecompressError::Corrupt {
                    codec,
                    reason: e.to_string(),
                })?;
            // A frame may declare a window far larger than its output (11 bytes can ask for a
            // 128 MiB window): cap the window by the output limit, with 8 MiB as a floor.
            let window_log = (usize::BITS - max_out.max(1).leading_zeros()).clamp(23, 27);
            let mut decoder = decoder;
            decoder
                .window_log_max(window_log)
                .map_err(|e| DecompressError::Corrupt {
                    codec,
                    reason: e.to_string(),
                })?;
            read_bounded(codec, decoder, max_out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_bomb_is_bounded() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 10 << 20]).expect("write");
        let bomb = e.finish().expect("finish");
        assert!(bomb.len() < 100_000);
        assert!(matches!(
            decompress(Compression::Gzip, &bomb, 1 << 20),
            Err(DecompressError::TooLarge(_))
        ));
        assert_eq!(
            decompress(Compression::Gzip, &bomb, 20 << 20)
                .expect("fits")
                .len(),
            10 << 20
        );
    }

    #[test]
    fn snappy_raw_and_xerial() {
        let data = b"hello hello hello hello".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&data).expect("c");
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1000).expect("raw"),
            data
        );
        let mut x = XERIAL_MAGIC.to_vec();
        x.extend_from_slice(&1i32.to_be_bytes());
        x.extend_from_slice(&1i32.to_be_bytes());
        x.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        x.extend_from_slice(&raw);
        assert_eq!(
            decompress(Compression::Snappy, &x, 1000).expect("xerial"),
            data
        );
        assert!(decompress(Compression::Snappy, &raw, 10).is_err());
    }

    #[test]
    fn lz4_and_zstd() {
        let data = vec![42u8; 5000];
        let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
        w.write_all(&data).expect("w");
        let lz = w.finish().expect("f");
        assert_eq!(decompress(Compression::Lz4, &lz, 5000).expect("lz4"), data);
        assert!(decompress(Compression::Lz4, &lz, 4999).is_err());
        let z = zstd::encode_all(&data[..], 3).expect("z");
        assert_eq!(decompress(Compression::Zstd, &z, 5000).expect("zstd"), data);
        assert!(decompress(Compression::Zstd, &z, 100).is_err());
    }

    #[test]
    fn zstd_huge_declared_window_is_refused() {
        // An 11-byte frame declaring a 128 MiB window (found by the decompress fuzz target).
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x88, 0x09, 0x00, 0x00, 0x61];
        assert!(decompress(Compression::Zstd, &frame, 1 << 20).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, .. proptest::prelude::ProptestConfig::default() })]

        #[test]
        fn compress_roundtrips(mut data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100_000usize)) {
            // Half compressible, half random: both paths of every encoder.
            let n = data.len() / 2;
            data[..n].fill(7);
            for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
                for f in [SnappyFraming::Raw, SnappyFraming::Xerial] {
                    let z = compress(c, &data, f).expect("compress");
                    if c == Compression::Snappy {
                        proptest::prop_assert_eq!(SnappyFraming::of(&z), f);
                    }
                    proptest::prop_assert_eq!(decompress(c, &z, data.len()).expect("inflate"), data.clone());
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
                let _ = decompress(c, &data, 1 << 16);
            }
        }
    }
}
