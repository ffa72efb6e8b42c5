//! The network layer: listener, connection cap, and one task pair per connection.
//!
//! A connection's reader decodes frames and handles requests one at a time, in order, as Kafka
//! does: that is what keeps an idempotent producer's pipelined batches in sequence. Responses go
//! to a writer task through a bounded channel, so a slow reader of responses exerts
//! back-pressure instead of growing memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use vltava_protocol::fetch;
use vltava_protocol::frame::{self, FrameError};
use vltava_storage::FileRegion;

use crate::handlers::{self, Ctx};
use crate::metrics::RequestTimer;
use crate::sendout::{self, Outgoing};

/// Responses queued per connection before the reader waits for the writer: with a peer that
/// stops reading, at most this many responses (plus the one being written) are held. It is
/// also how many Produce requests of one connection can be appended while earlier ones wait
/// for the in-sync replicas (acks=all): with 4, a producer sending one small batch per request
/// (linger.ms=0) was held to 4 requests per replication round trip, and its latency grew to
/// seconds at 1,000 requests/s. Responses are small or hold file regions, not record bytes.
const RESPONSE_QUEUE: usize = 64;
/// Longest a peer may take to send the body of a frame it announced (it holds request memory).
const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Granularity of `queued.max.request.bytes` reservations while a frame arrives.
const FRAME_CHUNK_BYTES: usize = 64 * 1024;
/// Read buffer per connection; large frames bypass it, so it only needs to hold small requests.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Accepts connections until `shutdown` flips, then waits for open connections to finish
/// their in-flight request.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let max_conn = ctx.rm.config().max_connections();
    let permits = Arc::new(Semaphore::new(max_conn));
    // queued.max.request.bytes: every frame holds permits for its bytes from before it is
    // allocated until its response is produced, so request memory is bounded in total.
    let max_frame = ctx.rm.config().socket_request_max_bytes();
    let queued_bytes = ctx
        .rm
        .config()
        .queued_max_request_bytes()
        .max(max_frame)
        .min(Semaphore::MAX_PERMITS);
    let request_bytes = Arc::new(Semaphore::new(queued_bytes));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::warn!(%peer, max_conn, "connection limit reached, closing new connection");
                    drop(stream);
                    continue;
                };
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                let request_bytes = Arc::clone(&request_bytes);
                let counted = ctx.metrics.connection_opened();
                tasks.spawn(async move {
                    if let Err(e) = connection(stream, peer, ctx, request_bytes, shutdown).await {
                        tracing::debug!(%peer, error = %e, "connection closed");
                    }
                    drop(counted);
                    drop(permit);
                });
                // Reap finished connections so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    // In-flight requests finish and their responses are written; bounded by a grace period.
    let grace = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    });
    if grace.await.is_err() {
        tasks.abort_all();
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("idle for longer than connections.max.idle.ms")]
    Idle,
    #[error("{0:?} v{1} is advertised but not served")]
    Refused(ApiKey, i16),
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    request_bytes: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(RESPONSE_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            sendout::write(&mut wr, out).await?;
        }
        wr.shutdown().await
    });
    let max_frame = ctx.rm.config().socket_request_max_bytes();
    let idle_ms = ctx.rm.config().connections_max_idle_ms();
    let idle = if idle_ms < 0 {
        Duration::from_secs(u64::MAX / 4)
    } else {
        Duration::from_millis(idle_ms as u64)
    };
    let result = async {
        loop {
            let mut prefix = [0u8; 4];
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                r = tokio::time::timeout(idle, rd.read_exact(&mut prefix)) => match r {
                    Err(_) => return Err(ConnError::Idle),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(_)) => {}
                },
            }
            // The bound is checked before the buffer is allocated.
            let len = frame::check_frame_len(prefix, max_frame)?;
            let deadline = tokio::time::Instant::now() + idle.min(FRAME_BODY_TIMEOUT);
            let (buf, _held) = tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                r = tokio::time::timeout_at(deadline, read_frame_body(&mut rd, len, &request_bytes)) => {
                    r.map_err(|_| ConnError::Idle)??
                }
            };
            if let Some(resp) = process(&ctx, &peer, buf.freeze()).await?
                && tx.send(resp).await.is_err()
            {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    match writer.await {
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "write failed"),
        Err(e) => tracing::warn!(%peer, error = %e, "writer task failed"),
        Ok(Ok(())) => {}
    }
    result
}

/// Reads a frame body of `len` bytes, reserving `queued.max.request.bytes` permits chunk by
/// chunk as the bytes arrive: a peer that announces a large frame and stalls holds only what it
/// actually sent, and memory is committed only for received bytes.
async fn read_frame_body<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    len: usize,
    pool: &Arc<Semaphore>,
) -> Result<(BytesMut, Option<tokio::sync::OwnedSemaphorePermit>), ConnError> {
    let mut buf = BytesMut::with_capacity(len);
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while buf.len() < len {
        let want = (len - buf.len()).min(FRAME_CHUNK_BYTES);
        let permit = Arc::clone(pool)
            .acquire_many_owned(want as u32)
            .await
            .map_err(|_| ConnError::Io(std::io::ErrorKind::Interrupted.into()))?;
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        let target = buf.len() + want;
        while buf.len() < target {
            let mut limited = (&mut *rd).take((target - buf.len()) as u64);
            if limited.read_buf(&mut buf).await? == 0 {
                return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
    Ok((buf, held))
}

/// Handles one frame; `Ok(None)` means no response is due, `Err` closes the connection.
async fn process(
    ctx: &Arc<Ctx>,
    peer: &SocketAddr,
    frame_bytes: Bytes,
) -> Result<Option<Outgoing>, ConnError> {
    let raw = match frame::decode_header(frame_bytes) {
        Ok(r) => r,
        Err(FrameError::UnknownApiKey {
            api_key,
            correlation_id,
        }) => {
            tracing::debug!(api_key, "unknown api key");
            return Ok(Some(Outgoing::Frame(frame::encode_raw_response(
                correlation_id,
                &ResponseError::UnsupportedVersion.code().to_be_bytes(),
            ))));
        }
        Err(e) => return Err(e.into()),
    };
    let api = raw.api_key;
    let version = raw.header.request_api_version;
    let correlation_id = raw.header.correlation_id;
    let supported = handlers::supported_range(api);
    let in_range = supported.is_some_and(|(lo, hi)| version >= lo && version <= hi);
    if !in_range {
        if api == ApiKey::ApiVersions {
            // KIP-511: answer in the v0 layout with our list so the client can pick a version.
            let body = kafka_protocol::messages::ResponseKind::ApiVersions(handlers::api_versions(
                ResponseError::UnsupportedVersion.code(),
            ));
            return Ok(Some(Outgoing::Frame(frame::encode_response(
                api,
                0,
                correlation_id,
                &body,
            )?)));
        }
        tracing::debug!(?api, version, "unsupported api version");
        let codec_ok = version >= api.valid_versions().min && version <= api.valid_versions().max;
        if codec_ok
            && let Some(body) =
                handlers::error_response(api, ResponseError::UnsupportedVersion.code())
        {
            return Ok(Some(Outgoing::Frame(frame::encode_response(
                api,
                version,
                correlation_id,
                &body,
            )?)));
        }
        // No response schema we can fill: a bare error code after the correlation id, as
        // for unknown api keys.
        return Ok(Some(Outgoing::Frame(frame::encode_raw_response(
            correlation_id,
            &ResponseError::UnsupportedVersion.code().to_be_bytes(),
        ))));
    }
    if handlers::advertised_only(api, version) {
        tracing::warn!(
            ?api,
            version,
            "closing connection: version advertised for compatibility only"
        );
        return Err(ConnError::Refused(api, version));
    }
    let request = frame::decode_body(api, version, raw.body)?;
    let timer = ctx
        .metrics
        .request_started(api, version, is_follower_fetch(version, &request));
    let client = crate::group_handlers::Client {
        client_id: raw
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
    };
    let reply = handlers::handle(ctx, &client, version, request).await;
    outgoing(api, version, correlation_id, reply, timer)
}

/// A Fetch sent by a follower replica (Kafka counts those as `FetchFollower`): it names its
/// replica id, in the replica state since v15.
fn is_follower_fetch(version: i16, request: &RequestKind) -> bool {
    match request {
        RequestKind::Fetch(r) if version >= 15 => r.replica_state.replica_id.0 >= 0,
        RequestKind::Fetch(r) => r.replica_id.0 >= 0,
        _ => false,
    }
}

/// What to send for `reply`; a deferred reply becomes a future the writer awaits in turn.
/// `timer` stops when the response is ready (for a deferred one, when it completes).
fn outgoing(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    reply: handlers::Reply,
    mut timer: Option<RequestTimer>,
) -> Result<Option<Outgoing>, ConnError> {
    if !matches!(reply, handlers::Reply::Deferred(_))
        && let Some(timer) = timer.take()
    {
        timer.finish();
    }
    match reply {
        handlers::Reply::Respond(body) => Ok(Some(Outgoing::Frame(frame::encode_response(
            api,
            version,
            correlation_id,
            &body,
        )?))),
        handlers::Reply::Fetch(reply) => fetch_outgoing(version, correlation_id, *reply).map(Some),
        handlers::Reply::Silent => Ok(None),
        handlers::Reply::Close => Err(ConnError::Refused(api, version)),
        handlers::Reply::Deferred(rest) => Ok(Some(Outgoing::Deferred(Box::pin(async move {
            outgoing(api, version, correlation_id, rest.await, timer)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })))),
    }
}

/// Encodes a Fetch response so its record sets can go straight from the files to the socket;
/// versions the spliced encoder does not write get the records read into memory instead.
fn fetch_outgoing(
    version: i16,
    correlation_id: i32,
    reply: handlers::FetchReply,
) -> Result<Outgoing, ConnError> {
    let lens: Vec<Option<usize>> = reply
        .regions
        .iter()
        .map(|r| r.as_ref().map(|rs| rs.iter().map(FileRegion::len).sum()))
        .collect();
    match fetch::encode_fetch_response(version, correlation_id, &reply.response, &lens) {
        Ok(frame) => {
            let records = reply
                .regions
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect();
            Ok(Outgoing::Spliced { frame, records })
        }
        Err(e) => {
            tracing::debug!(version, error = %e, "fetch response encoded in memory");
            let body = ResponseKind::Fetch(reply.materialize()?);
            Ok(Outgoing::Frame(frame::encode_response(
                ApiKey::Fetch,
                version,
                correlation_id,
                &body,
            )?))
        }
    }
}
