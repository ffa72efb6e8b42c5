//! Pipelined broker connections for the sender.
//!
//! [`crate::Connection`] sends one request and waits for its answer; the producer keeps up to
//! `max.in.flight.requests.per.connection` Produce requests on the wire. Here a connection is
//! opened and its versions negotiated (ApiVersions), then split: a writer task writes the
//! frames the sender hands it, in order; a reader task reads response frames (each length
//! checked before anything is allocated) and passes them to the sender, which matches them to
//! its in-flight requests in order by correlation id. Either task reports a failure once and
//! stops; dropping the [`PipelinedConn`] stops both.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{ConnectionConfig, read_frame};
use crate::error::{ClientError, codes, io_reason};
use crate::producer::sender::Event;

/// Produce versions this producer speaks: v3 is the first with record batches v2; v12 and
/// later are for KIP-890 transactions and topic ids.
pub(crate) const PRODUCE_VERSIONS: (i16, i16) = (3, 11);

/// Encodes one request frame: length, header, body.
pub(crate) fn encode_frame<E: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    body: &E,
    size_hint: usize,
) -> Result<Bytes, ClientError> {
    let bad = |e: String| {
        ClientError::InvalidArgument(format!("cannot encode {api:?} v{version} request: {e}"))
    };
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(client_id.clone());
    let mut buf = BytesMut::with_capacity(64 + size_hint);
    buf.put_i32(0);
    header
        .encode(&mut buf, api.request_header_version(version))
        .map_err(|e| bad(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| bad(e.to_string()))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| bad("request too large".into()))?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Encodes a Produce request frame as pieces: the record batches are not copied but follow
/// the bytes around them as their own `Bytes`, written with one vectored write. Produce's
/// layout is simple enough to write here; the header still goes through kafka-protocol and a
/// test checks the pieces against its encoding of the same request.
pub(crate) fn encode_produce_frame(
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    req: &ProduceRequest,
) -> Result<Vec<Bytes>, ClientError> {
    let bad = |e: String| {
        ClientError::InvalidArgument(format!("cannot encode Produce v{version} request: {e}"))
    };
    if !(PRODUCE_VERSIONS.0..=PRODUCE_VERSIONS.1).contains(&version) {
        return Err(bad("version not spoken".into()));
    }
    let flexible = version >= 9;
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Produce as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(client_id.clone());
    let mut cur = BytesMut::with_capacity(256);
    cur.put_i32(0);
    header
        .encode(&mut cur, ApiKey::Produce.request_header_version(version))
        .map_err(|e| bad(e.to_string()))?;
    let too_long = || bad("field too long".into());
    let put_len = |cur: &mut BytesMut, n: Option<usize>, wide: bool| -> Result<(), ClientError> {
        match (n, flexible) {
            (None, true) => put_uvarint(cur, 0),
            (Some(n), true) => put_uvarint(cur, u32::try_from(n + 1).map_err(|_| too_long())?),
            (None, false) if wide => cur.put_i32(-1),
            (None, false) => cur.put_i16(-1),
            (Some(n), false) if wide => cur.put_i32(i32::try_from(n).map_err(|_| too_long())?),
            (Some(n), false) => cur.put_i16(i16::try_from(n).map_err(|_| too_long())?),
        }
        Ok(())
    };
    let tid = req.transactional_id.as_ref().map(|t| t.0.as_bytes());
    put_len(&mut cur, tid.map(<[u8]>::len), false)?;
    cur.put_slice(tid.unwrap_or_default());
    cur.put_i16(req.acks);
    cur.put_i32(req.timeout_ms);
    put_len(&mut cur, Some(req.topic_data.len()), true)?;
    let mut parts = Vec::with_capacity(2 + 2 * req.topic_data.len());
    for t in &req.topic_data {
        let name = t.name.0.as_bytes();
        put_len(&mut cur, Some(name.len()), false)?;
        cur.put_slice(name);
        put_len(&mut cur, Some(t.partition_data.len()), true)?;
        for p in &t.partition_data {
            cur.put_i32(p.index);
            put_len(&mut cur, p.records.as_ref().map(Bytes::len), true)?;
            if let Some(r) = &p.records {
                parts.push(cur.split().freeze());
                parts.push(r.clone());
            }
            if flexible {
                put_uvarint(&mut cur, 0);
            }
        }
        if flexible {
            put_uvarint(&mut cur, 0);
        }
    }
    if flexible {
        put_uvarint(&mut cur, 0);
    }
    parts.push(cur.freeze());
    let total: usize = parts.iter().map(Bytes::len).sum();
    let len = i32::try_from(total - 4).map_err(|_| bad("request too large".into()))?;
    let mut first = BytesMut::from(&parts[0][..]);
    first[0..4].copy_from_slice(&len.to_be_bytes());
    parts[0] = first.freeze();
    Ok(parts)
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes all of `parts` with vectored writes.
async fn write_parts(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    parts: &mut [Bytes],
) -> std::io::Result<()> {
    use bytes::Buf;
    let mut i = 0;
    while i < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = parts[i..]
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        if slices.is_empty() {
            break;
        }
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && i < parts.len() {
            let take = n.min(parts[i].len());
            parts[i].advance(take);
            n -= take;
            if parts[i].is_empty() {
                i += 1;
            }
        }
        while i < parts.len() && parts[i].is_empty() {
            i += 1;
        }
    }
    Ok(())
}

/// Decodes a response header and checks its correlation id; returns the body.
pub(crate) fn decode_response_header(
    mut frame: Bytes,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    addr: &str,
) -> Result<Bytes, ClientError> {
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    let header =
        ResponseHeader::decode(&mut frame, header_version).map_err(|e| ClientError::Protocol {
            addr: addr.to_string(),
            message: format!("cannot decode {api:?} response header: {e}"),
        })?;
    if header.correlation_id != correlation_id {
        return Err(ClientError::Protocol {
            addr: addr.to_string(),
            message: format!(
                "{api:?} response has correlation id {}, expected {correlation_id}",
                header.correlation_id
            ),
        });
    }
    Ok(frame)
}

/// Connects to `addr` and asks for its API versions; returns the stream and the Produce
/// version range the broker advertises.
pub(crate) async fn open(
    addr: &str,
    config: &ConnectionConfig,
) -> Result<(TcpStream, Option<(i16, i16)>), ClientError> {
    let stream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await
    {
        Err(_) => {
            return Err(ClientError::Connect {
                addr: addr.to_string(),
                reason: format!("timed out after {} ms", config.connect_timeout.as_millis()),
            });
        }
        Ok(Err(e)) => {
            return Err(ClientError::Connect {
                addr: addr.to_string(),
                reason: io_reason(&e),
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let client_id = StrBytes::from_string(config.client_id.clone());
    let exchange = async {
        // v3 (what librdkafka sends); a broker that only knows older versions answers
        // UNSUPPORTED_VERSION in the v0 layout (KIP-511) and gets v0.
        for version in [3i16, 0] {
            let mut req = ApiVersionsRequest::default();
            if version >= 3 {
                req.client_software_name = StrBytes::from_static_str("vltava-producer");
                req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
            }
            let cid = i32::from(version);
            let frame = encode_frame(ApiKey::ApiVersions, version, cid, &client_id, &req, 64)?;
            stream
                .write_all(&frame)
                .await
                .map_err(|source| ClientError::Io {
                    addr: addr.to_string(),
                    source,
                })?;
            let resp = read_frame(&mut stream, config.max_response_bytes, addr).await?;
            let mut body = decode_response_header(resp, ApiKey::ApiVersions, version, cid, addr)?;
            let code = body.first_chunk::<2>().map(|b| i16::from_be_bytes(*b));
            if code == Some(codes::UNSUPPORTED_VERSION) && version > 0 {
                continue;
            }
            let r = ApiVersionsResponse::decode(&mut body, version).map_err(|e| {
                ClientError::Protocol {
                    addr: addr.to_string(),
                    message: format!("cannot decode ApiVersions v{version} response: {e}"),
                }
            })?;
            if r.error_code != 0 {
                return Err(ClientError::broker(
                    r.error_code,
                    format!("ApiVersions from {addr}"),
                    None,
                ));
            }
            let produce = r
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::Produce as i16)
                .map(|k| (k.min_version, k.max_version));
            return Ok(produce);
        }
        Err(ClientError::Protocol {
            addr: addr.to_string(),
            message: "ApiVersions negotiation did not converge".into(),
        })
    };
    let produce = match tokio::time::timeout(config.request_timeout, exchange).await {
        Err(_) => {
            return Err(ClientError::Timeout {
                addr: addr.to_string(),
                api: ApiKey::ApiVersions,
                after: config.request_timeout,
            });
        }
        Ok(r) => r?,
    };
    Ok((stream, produce))
}

/// The running halves of one connection.
#[derive(Debug)]
pub(crate) struct PipelinedConn {
    /// Frames to write, in order.
    tx: mpsc::UnboundedSender<Vec<Bytes>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl PipelinedConn {
    /// Splits `stream` into a reader and a writer task that report to `events` as connection
    /// `conn_id`.
    pub(crate) fn start(
        stream: TcpStream,
        conn_id: u64,
        addr: String,
        max_response_bytes: usize,
        events: mpsc::UnboundedSender<Event>,
    ) -> PipelinedConn {
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Bytes>>();
        let ev = events.clone();
        let raddr = addr.clone();
        let reader = tokio::spawn(async move {
            loop {
                match read_frame(&mut rd, max_response_bytes, &raddr).await {
                    Ok(frame) => {
                        if ev.send(Event::Frame { conn_id, frame }).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = ev.send(Event::Failed { conn_id, error });
                        return;
                    }
                }
            }
        });
        let writer = tokio::spawn(async move {
            while let Some(mut frame) = rx.recv().await {
                if let Err(source) = write_parts(&mut wr, &mut frame).await {
                    let _ = events.send(Event::Failed {
                        conn_id,
                        error: ClientError::Io {
                            addr: addr.clone(),
                            source,
                        },
                    });
                    return;
                }
                if events.send(Event::Written { conn_id }).is_err() {
                    return;
                }
            }
        });
        PipelinedConn { tx, reader, writer }
    }

    /// Queues a frame (in pieces) for writing; false if the writer has stopped.
    pub(crate) fn write(&self, frame: Vec<Bytes>) -> bool {
        self.tx.send(frame).is_ok()
    }
}

impl Drop for PipelinedConn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

        /// The pieces join up to exactly what kafka-protocol encodes for the same request, and
        /// every record set is passed through, not copied.
        #[test]
        fn produce_pieces_match_the_codec(
            version in PRODUCE_VERSIONS.0..=PRODUCE_VERSIONS.1,
            tid in proptest::option::of("[a-z]{0,8}"),
            acks in prop_oneof![Just(0i16), Just(1), Just(-1)],
            timeout_ms in any::<i32>(),
            cid in any::<i32>(),
            topics in proptest::collection::vec(
                ("[a-z.]{1,20}", proptest::collection::vec(
                    (any::<i32>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))),
                    0..4,
                )),
                0..4,
            ),
        ) {
            let mut req = ProduceRequest::default();
            req.transactional_id = tid.map(|t| StrBytes::from_string(t).into());
            req.acks = acks;
            req.timeout_ms = timeout_ms;
            let mut sets = Vec::new();
            for (name, parts) in &topics {
                let mut td = TopicProduceData::default();
                td.name = TopicName(StrBytes::from_string(name.clone()));
                for (index, records) in parts {
                    let mut pd = PartitionProduceData::default();
                    pd.index = *index;
                    pd.records = records.clone().map(Bytes::from);
                    if let Some(r) = &pd.records {
                        sets.push(r.clone());
                    }
                    td.partition_data.push(pd);
                }
                req.topic_data.push(td);
            }
            let client_id = StrBytes::from_static_str("vltava-test");
            let expected = encode_frame(ApiKey::Produce, version, cid, &client_id, &req, 0)
                .expect("codec encodes");
            let parts = encode_produce_frame(version, cid, &client_id, &req).expect("pieces");
            let joined: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
            prop_assert_eq!(&joined[..], &expected[..]);
            for set in sets.iter().filter(|s| !s.is_empty()) {
                prop_assert!(parts.iter().any(|p| p.as_ptr() == set.as_ptr() && p.len() == set.len()));
            }
        }
    }
}
