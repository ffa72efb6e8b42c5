//! Request frames: the length prefix, the request header and the body, decoded with the
//! `kafka-protocol` crate only after every declared length has been checked against the bytes
//! actually present (see [`crate::bounds`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;

/// Why a request frame could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared frame length is negative or above the configured maximum.
    #[error("frame length {len} outside 0..={max}")]
    FrameTooLarge {
        /// Declared length.
        len: i64,
        /// Configured `socket.request.max.bytes`.
        max: usize,
    },
    /// Shorter than the fixed part of a request header.
    #[error("frame too short for a request header ({0} bytes)")]
    TooShort(usize),
    /// An API key this protocol version does not know at all.
    #[error("unknown api key {api_key}")]
    UnknownApiKey {
        /// Key from the header.
        api_key: i16,
        /// Correlation id, so an error response can still be matched.
        correlation_id: i32,
    },
    /// The header itself would not decode.
    #[error("malformed request header: {0}")]
    MalformedHeader(String),
    /// A declared length in the body exceeds the bytes left.
    #[error("request body out of bounds: {0}")]
    Bounds(#[from] crate::bounds::BoundsError),
    /// The body would not decode at the declared version.
    #[error("malformed {api:?} v{version} request: {reason}")]
    MalformedBody {
        /// API of the request.
        api: ApiKey,
        /// Version of the request.
        version: i16,
        /// Decoder message.
        reason: String,
    },
    /// Response encoding failed (a broker bug, never client input).
    #[error("cannot encode response: {0}")]
    Encode(String),
}

/// Validates a frame's 4-byte length prefix before anything is allocated for it.
pub fn check_frame_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(prefix);
    if len < 0 || len as usize > max {
        return Err(FrameError::FrameTooLarge {
            len: i64::from(len),
            max,
        });
    }
    Ok(len as usize)
}

/// A request whose header is decoded; the body is still raw bytes.
#[derive(Debug)]
pub struct RawRequest {
    /// API of the request.
    pub api_key: ApiKey,
    /// Decoded header (api key, version, correlation id, client id).
    pub header: RequestHeader,
    /// The body, not yet decoded.
    pub body: Bytes,
}

/// Reads api key, version and correlation id, which sit at fixed positions in every header
/// version, so even a request we cannot decode can be answered.
pub fn peek_ids(frame: &[u8]) -> Option<(i16, i16, i32)> {
    if frame.len() < 8 {
        return None;
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Some((key, version, correlation))
}

/// Decodes the request header of a frame (the bytes after the length prefix).
pub fn decode_header(mut frame: Bytes) -> Result<RawRequest, FrameError> {
    let (key, version, correlation_id) =
        peek_ids(&frame).ok_or(FrameError::TooShort(frame.len()))?;
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey {
        api_key: key,
        correlation_id,
    })?;
    // Header versions are fixed per (api, version); for versions beyond what the codec knows,
    // fall back to the flexible header of the newest known version.
    let header_version = api_key.request_header_version(
        version.clamp(api_key.valid_versions().min, api_key.valid_versions().max),
    );
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| FrameError::MalformedHeader(e.to_string()))?;
    Ok(RawRequest {
        api_key,
        header,
        body: frame,
    })
}

/// Decodes a request body after checking its declared lengths.
pub fn decode_body(api_key: ApiKey, version: i16, body: Bytes) -> Result<RequestKind, FrameError> {
    crate::bounds::check_request_body(api_key as i16, version, &body)?;
    let mut body = body;
    RequestKind::decode(api_key, &mut body, version).map_err(|e| FrameError::MalformedBody {
        api: api_key,
        version,
        reason: e.to_string(),
    })
}

/// Encodes a whole response frame: length prefix, response header, body.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<BytesMut, FrameError> {
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    // ApiVersions responses always use header v0 so a client of any version can read them.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, header_version)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    finish_frame(&mut buf)?;
    Ok(buf)
}

/// Encodes a response frame whose body was written by hand (header v0 + raw body).
pub fn encode_raw_response(correlation_id: i32, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(8 + body.len());
    buf.put_i32((4 + body.len()) as i32);
    buf.put_i32(correlation_id);
    buf.put_slice(body);
    buf
}

fn finish_frame(buf: &mut BytesMut) -> Result<(), FrameError> {
    let len = buf.len() - 4;
    let len = i32::try_from(len).map_err(|_| FrameError::Encode("response too large".into()))?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads the correlation id of a response frame body (client side and tests).
pub fn response_correlation_id(mut frame: &[u8]) -> Option<i32> {
    if frame.remaining() < 4 {
        return None;
    }
    Some(frame.get_i32())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_length_bounds() {
        assert!(check_frame_len((-1i32).to_be_bytes(), 100).is_err());
        assert!(check_frame_len(101i32.to_be_bytes(), 100).is_err());
        assert_eq!(check_frame_len(100i32.to_be_bytes(), 100).ok(), Some(100));
    }

    #[test]
    fn unknown_api_key_keeps_correlation_id() {
        let mut f = BytesMut::new();
        f.put_i16(9999);
        f.put_i16(0);
        f.put_i32(42);
        f.put_i16(-1);
        match decode_header(f.freeze()) {
            Err(FrameError::UnknownApiKey {
                api_key: 9999,
                correlation_id: 42,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn short_frames_rejected() {
        for n in 0..8 {
            assert!(decode_header(Bytes::from(vec![0u8; n])).is_err());
        }
    }
}
