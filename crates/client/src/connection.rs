//! One TCP connection to one broker: request framing, correlation ids, bounded response
//! frames, a timeout on every call, and API versions negotiated at connect.
//!
//! Requests go one at a time: a call writes its frame and reads the next response frame before
//! the next call may start (the `&mut self` receiver enforces it). A call that fails on the
//! wire (I/O error, timeout, undecodable or unexpected frame) leaves the byte stream in an
//! unknown place, so the connection is marked broken and refuses further calls; open a new one.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{ClientError, Result, codes, io_reason};
use crate::versions::{CLIENT_VERSIONS, NegotiatedVersions, client_range};

/// Default client id sent in request headers.
pub const DEFAULT_CLIENT_ID: &str = "vltava";
/// Default limit on a response frame: Kafka's `socket.request.max.bytes` default, 100 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize =
    vltava_protocol::frame::SOCKET_REQUEST_MAX_BYTES_DEFAULT;

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Client id in every request header.
    pub client_id: String,
    /// Limit on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on each request, from the first byte written to the last byte of its response.
    pub request_timeout: Duration,
    /// Largest response frame accepted; a larger declared length fails the call before
    /// anything is allocated for it.
    pub max_response_bytes: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: DEFAULT_CLIENT_ID.to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A connection to one broker, with its negotiated API versions.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    stream: TcpStream,
    client_id: StrBytes,
    request_timeout: Duration,
    max_response_bytes: usize,
    next_correlation_id: i32,
    versions: NegotiatedVersions,
    broken: bool,
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions with ApiVersions.
    pub async fn connect(addr: &str, config: &ConnectionConfig) -> Result<Connection> {
        let stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => {
                    return Err(ClientError::Connect {
                        addr: addr.to_string(),
                        reason: format!(
                            "timed out after {}",
                            crate::error::fmt_duration(config.connect_timeout)
                        ),
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
        // Small requests should leave at once; a failure here only costs latency.
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            client_id: StrBytes::from_string(config.client_id.clone()),
            request_timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
            next_correlation_id: 0,
            versions: NegotiatedVersions::default(),
            broken: false,
        };
        conn.negotiate_versions().await?;
        Ok(conn)
    }

    /// The `host:port` this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether an earlier failure left the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The API versions negotiated with this broker.
    pub fn versions(&self) -> &NegotiatedVersions {
        &self.versions
    }

    /// The negotiated version of `api`, or [`ClientError::UnsupportedApi`].
    pub fn version(&self, api: ApiKey) -> Result<i16> {
        self.versions.version(api).ok_or_else(|| {
            let ours =
                client_range(api).map_or_else(|| "none".to_string(), |(a, b)| format!("v{a}-v{b}"));
            let broker = self
                .versions
                .advertised(api)
                .map_or_else(|| "none".to_string(), |(a, b)| format!("v{a}-v{b}"));
            ClientError::UnsupportedApi {
                addr: self.addr.clone(),
                api,
                ours,
                broker,
            }
        })
    }

    /// Sends `req` at the negotiated version of its API and returns the decoded response.
    pub async fn call<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        let api = api_of::<R>()?;
        let version = self.version(api)?;
        self.call_at(req, version).await
    }

    /// Sends `req` at an explicit `version` (fields absent at that version must be at their
    /// defaults, or encoding fails) and returns the decoded response.
    pub async fn call_at<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let api = api_of::<R>()?;
        let mut body = self.round_trip(api, version, req).await?;
        let resp = <R::Response as Decodable>::decode(&mut body, version).map_err(|e| {
            self.broken = true;
            ClientError::Protocol {
                addr: self.addr.clone(),
                message: format!("cannot decode {api:?} v{version} response: {e}"),
            }
        })?;
        if body.has_remaining() {
            self.broken = true;
            return Err(ClientError::Protocol {
                addr: self.addr.clone(),
                message: format!(
                    "{} bytes left over after the {api:?} v{version} response",
                    body.remaining()
                ),
            });
        }
        Ok(resp)
    }

    /// ApiVersions at our highest version; a broker that does not speak it answers
    /// UNSUPPORTED_VERSION in the v0 layout with its own range (KIP-511), and we retry once at
    /// the highest version both know.
    async fn negotiate_versions(&mut self) -> Result<()> {
        let (our_min, our_max) = client_range(ApiKey::ApiVersions).unwrap_or((0, 0));
        let mut version = our_max;
        for _ in 0..2 {
            let mut req = ApiVersionsRequest::default();
            if version >= 3 {
                req.client_software_name = StrBytes::from_static_str("vltava-client");
                req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
            }
            let body = self.round_trip(ApiKey::ApiVersions, version, &req).await?;
            let code = body.first_chunk::<2>().map(|b| i16::from_be_bytes(*b));
            if code == Some(codes::UNSUPPORTED_VERSION) {
                let v0 = self.decode_api_versions(body, 0)?;
                let broker_max = v0
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map(|k| k.max_version);
                match broker_max {
                    Some(m) if m < version && m >= our_min => {
                        version = m;
                        continue;
                    }
                    _ => {
                        return Err(ClientError::UnsupportedApi {
                            addr: self.addr.clone(),
                            api: ApiKey::ApiVersions,
                            ours: format!("v{our_min}-v{our_max}"),
                            broker: broker_max.map_or("none".into(), |m| format!("up to v{m}")),
                        });
                    }
                }
            }
            let resp = self.decode_api_versions(body, version)?;
            if resp.error_code != 0 {
                return Err(ClientError::broker(
                    resp.error_code,
                    format!("ApiVersions from {}", self.addr),
                    None,
                ));
            }
            self.versions = NegotiatedVersions::negotiate(CLIENT_VERSIONS, &resp.api_keys);
            return Ok(());
        }
        Err(ClientError::Protocol {
            addr: self.addr.clone(),
            message: "ApiVersions negotiation did not converge".into(),
        })
    }

    fn decode_api_versions(
        &mut self,
        mut body: Bytes,
        version: i16,
    ) -> Result<ApiVersionsResponse> {
        let r = ApiVersionsResponse::decode(&mut body, version).map_err(|e| {
            self.broken = true;
            ClientError::Protocol {
                addr: self.addr.clone(),
                message: format!("cannot decode ApiVersions v{version} response: {e}"),
            }
        })?;
        Ok(r)
    }

    /// Writes one request frame and reads its response frame; returns the body after the
    /// response header. Bounded by the request timeout.
    async fn round_trip<E: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &E,
    ) -> Result<Bytes> {
        if self.broken {
            return Err(ClientError::Io {
                addr: self.addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "connection closed after an earlier error",
                ),
            });
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = self.encode_request(api, version, correlation_id, req)?;
        let addr = self.addr.clone();
        let max = self.max_response_bytes;
        let stream = &mut self.stream;
        let exchange = async {
            stream
                .write_all(&frame)
                .await
                .map_err(|source| ClientError::Io {
                    addr: addr.clone(),
                    source,
                })?;
            read_frame(stream, max, &addr).await
        };
        let result = match tokio::time::timeout(self.request_timeout, exchange).await {
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr.clone(),
                api,
                after: self.request_timeout,
            }),
            Ok(r) => r,
        };
        let mut body = match result {
            Ok(b) => b,
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        // ApiVersions responses always carry header v0, whatever the request version.
        let header_version = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let header = match ResponseHeader::decode(&mut body, header_version) {
            Ok(h) => h,
            Err(e) => {
                self.broken = true;
                return Err(ClientError::Protocol {
                    addr: self.addr.clone(),
                    message: format!("cannot decode {api:?} response header: {e}"),
                });
            }
        };
        if header.correlation_id != correlation_id {
            self.broken = true;
            return Err(ClientError::Protocol {
                addr: self.addr.clone(),
                message: format!(
                    "{api:?} response has correlation id {}, expected {correlation_id}",
                    header.correlation_id
                ),
            });
        }
        Ok(body)
    }

    fn encode_request<E: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        req: &E,
    ) -> Result<BytesMut> {
        let bad = |e: String| {
            ClientError::InvalidArgument(format!("cannot encode {api:?} v{version} request: {e}"))
        };
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(self.client_id.clone());
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i32(0);
        header
            .encode(&mut buf, api.request_header_version(version))
            .map_err(|e| bad(e.to_string()))?;
        req.encode(&mut buf, version)
            .map_err(|e| bad(e.to_string()))?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| bad("request too large".into()))?;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf)
    }
}

fn api_of<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::InvalidArgument(format!("unknown api key {}", R::KEY)))
}

/// Reads one length-prefixed frame. The length is checked against `max` (and against the
/// 4 bytes of a correlation id) before the buffer is allocated.
pub(crate) async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
    addr: &str,
) -> Result<Bytes> {
    let io = |source| ClientError::Io {
        addr: addr.to_string(),
        source,
    };
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.map_err(io)?;
    let len = vltava_protocol::frame::check_frame_len(prefix, max).map_err(|_| {
        ClientError::FrameTooLarge {
            addr: addr.to_string(),
            len: i64::from(i32::from_be_bytes(prefix)),
            max,
        }
    })?;
    if len < 4 {
        return Err(ClientError::Protocol {
            addr: addr.to_string(),
            message: format!("response frame of {len} bytes has no room for a correlation id"),
        });
    }
    // Read straight into spare capacity: zeroing a megabyte response first costs a tenth of
    // a consumer's CPU.
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let mut limited = (&mut *stream).take((len - buf.len()) as u64);
        if limited.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeBroker, Reply};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse, ResponseKind};

    fn cfg() -> ConnectionConfig {
        ConnectionConfig {
            request_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            ..ConnectionConfig::default()
        }
    }

    fn api_versions(entries: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
        let mut r = ApiVersionsResponse::default();
        r.api_keys = entries
            .iter()
            .map(|&(k, min, max)| {
                let mut v = ApiVersion::default();
                v.api_key = k as i16;
                v.min_version = min;
                v.max_version = max;
                v
            })
            .collect();
        r
    }

    #[tokio::test]
    async fn negotiates_versions_at_connect() -> Result<()> {
        let fake = FakeBroker::start(vec![Reply::Response(ResponseKind::ApiVersions(
            api_versions(&[
                (ApiKey::ApiVersions, 0, 4),
                (ApiKey::Metadata, 0, 13),
                (ApiKey::OffsetFetch, 1, 5),
                (ApiKey::ListOffsets, 9, 12),
            ]),
        ))])
        .await;
        let conn = Connection::connect(&fake.addr, &cfg()).await?;
        assert_eq!(conn.version(ApiKey::Metadata)?, 12);
        assert_eq!(conn.version(ApiKey::OffsetFetch)?, 5);
        let e = conn.version(ApiKey::ListOffsets).err();
        assert!(
            matches!(
                e,
                Some(ClientError::UnsupportedApi {
                    api: ApiKey::ListOffsets,
                    ..
                })
            ),
            "{e:?}"
        );
        let e = conn
            .version(ApiKey::DeleteGroups)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("broker: none")));
        let seen = fake.requests().await;
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].api_key, ApiKey::ApiVersions as i16);
        assert_eq!(seen[0].api_version, 4);
        Ok(())
    }

    #[tokio::test]
    async fn api_versions_downgrade_after_unsupported_version() -> Result<()> {
        // An old broker: answers our v4 with UNSUPPORTED_VERSION in the v0 layout, naming v2.
        let mut refuse = api_versions(&[(ApiKey::ApiVersions, 0, 2)]);
        refuse.error_code = codes::UNSUPPORTED_VERSION;
        let ok = api_versions(&[(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 0, 8)]);
        let fake = FakeBroker::start(vec![
            Reply::ResponseAt(ResponseKind::ApiVersions(refuse), 0),
            Reply::Response(ResponseKind::ApiVersions(ok)),
        ])
        .await;
        let conn = Connection::connect(&fake.addr, &cfg()).await?;
        assert_eq!(conn.version(ApiKey::Metadata)?, 8);
        let seen = fake.requests().await;
        assert_eq!(
            seen.iter().map(|r| r.api_version).collect::<Vec<_>>(),
            vec![4, 2]
        );
        Ok(())
    }

    #[tokio::test]
    async fn no_common_api_versions_version_is_an_error() {
        let mut refuse = api_versions(&[(ApiKey::ApiVersions, 7, 9)]);
        refuse.error_code = codes::UNSUPPORTED_VERSION;
        let fake = FakeBroker::start(vec![Reply::ResponseAt(
            ResponseKind::ApiVersions(refuse),
            0,
        )])
        .await;
        let e = Connection::connect(&fake.addr, &cfg()).await.err();
        assert!(
            matches!(
                e,
                Some(ClientError::UnsupportedApi {
                    api: ApiKey::ApiVersions,
                    ..
                })
            ),
            "{e:?}"
        );
    }

    fn metadata_fake_versions() -> Reply {
        Reply::Response(ResponseKind::ApiVersions(api_versions(&[
            (ApiKey::ApiVersions, 0, 4),
            (ApiKey::Metadata, 0, 12),
        ])))
    }

    #[tokio::test]
    async fn calls_use_negotiated_version_and_check_correlation() -> Result<()> {
        let mut md = MetadataResponse::default();
        md.cluster_id = Some(StrBytes::from_static_str("c1"));
        let fake = FakeBroker::start(vec![
            metadata_fake_versions(),
            Reply::Response(ResponseKind::Metadata(md.clone())),
            Reply::WrongCorrelation(ResponseKind::Metadata(md)),
        ])
        .await;
        let mut conn = Connection::connect(&fake.addr, &cfg()).await?;
        let r = conn.call(&MetadataRequest::default()).await?;
        assert_eq!(r.cluster_id.as_deref(), Some("c1"));
        let e = conn.call(&MetadataRequest::default()).await.err();
        assert!(
            matches!(&e, Some(ClientError::Protocol { message, .. }) if message.contains("correlation")),
            "{e:?}"
        );
        assert!(conn.is_broken());
        // A broken connection refuses further calls without touching the socket.
        assert!(matches!(
            conn.call(&MetadataRequest::default()).await,
            Err(ClientError::Io { .. })
        ));
        let seen = fake.requests().await;
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].api_version, 12);
        assert_eq!(seen[1].client_id.as_deref(), Some(DEFAULT_CLIENT_ID));
        assert_ne!(seen[1].correlation_id, seen[2].correlation_id);
        Ok(())
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocation() -> Result<()> {
        let fake =
            FakeBroker::start(vec![metadata_fake_versions(), Reply::RawFrameLen(i32::MAX)]).await;
        let mut conn = Connection::connect(&fake.addr, &cfg()).await?;
        let e = conn.call(&MetadataRequest::default()).await.err();
        assert!(
            matches!(e, Some(ClientError::FrameTooLarge { len, max, .. }) if len == i64::from(i32::MAX) && max == DEFAULT_MAX_RESPONSE_BYTES),
            "{e:?}"
        );
        assert!(conn.is_broken());
        Ok(())
    }

    #[tokio::test]
    async fn negative_and_tiny_frames_are_refused() -> Result<()> {
        for (len, want_too_large) in [(-5, true), (2, false)] {
            let fake =
                FakeBroker::start(vec![metadata_fake_versions(), Reply::RawFrameLen(len)]).await;
            let mut conn = Connection::connect(&fake.addr, &cfg()).await?;
            let e = conn.call(&MetadataRequest::default()).await.err();
            if want_too_large {
                assert!(
                    matches!(e, Some(ClientError::FrameTooLarge { .. })),
                    "{e:?}"
                );
            } else {
                assert!(matches!(e, Some(ClientError::Protocol { .. })), "{e:?}");
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn truncated_and_garbage_bodies_are_protocol_errors() -> Result<()> {
        let fake = FakeBroker::start(vec![
            metadata_fake_versions(),
            Reply::RawBody(vec![0xff; 3]),
        ])
        .await;
        let mut conn = Connection::connect(&fake.addr, &cfg()).await?;
        let e = conn.call(&MetadataRequest::default()).await.err();
        assert!(matches!(e, Some(ClientError::Protocol { .. })), "{e:?}");
        Ok(())
    }

    #[tokio::test]
    async fn silent_broker_times_out() -> Result<()> {
        let fake = FakeBroker::start(vec![metadata_fake_versions(), Reply::Silence]).await;
        let mut conn = Connection::connect(&fake.addr, &cfg()).await?;
        let started = std::time::Instant::now();
        let e = conn.call(&MetadataRequest::default()).await.err();
        assert!(
            matches!(
                e,
                Some(ClientError::Timeout {
                    api: ApiKey::Metadata,
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(conn.is_broken());
        Ok(())
    }

    #[tokio::test]
    async fn closed_connection_is_an_io_error() -> Result<()> {
        let fake = FakeBroker::start(vec![metadata_fake_versions(), Reply::Close]).await;
        let mut conn = Connection::connect(&fake.addr, &cfg()).await?;
        let e = conn.call(&MetadataRequest::default()).await.err();
        assert!(matches!(e, Some(ClientError::Io { .. })), "{e:?}");
        Ok(())
    }

    #[tokio::test]
    async fn refused_connection_reads_well() {
        // Bind then drop a listener: the port is (very likely) closed now.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").ok();
            l.and_then(|l| l.local_addr().ok())
                .map_or_else(|| "127.0.0.1:1".to_string(), |a| a.to_string())
        };
        let e = Connection::connect(&addr, &cfg()).await.err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some(format!("cannot connect to {addr}: connection refused"))
        );
    }

    #[tokio::test]
    async fn read_frame_checks_bounds() {
        let mut ok: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 9];
        let f = read_frame(&mut ok, 100, "x").await.ok();
        assert_eq!(f.as_deref(), Some(&[0u8, 0, 0, 9][..]));
        let mut short: &[u8] = &[0, 0, 0, 8, 0, 0, 0, 9];
        assert!(matches!(
            read_frame(&mut short, 100, "x").await,
            Err(ClientError::Io { .. })
        ));
        let mut big: &[u8] = &[0, 0, 1, 0];
        assert!(matches!(
            read_frame(&mut big, 255, "x").await,
            Err(ClientError::FrameTooLarge {
                len: 256,
                max: 255,
                ..
            })
        ));
    }
}
