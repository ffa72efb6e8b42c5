//! The production [`Transport`]: raft frames over TCP between controller listeners.
//!
//! The client ([`TcpTransport`]) keeps one connection per peer and multiplexes every request to
//! that peer over it, matching replies by request id: openraft talks to a peer from several
//! tasks at once (a replication stream, a snapshot stream, elections), and one connection with
//! many requests in flight is cheaper than a pool and never blocks a heartbeat behind another
//! request's round trip. Each connection is owned by one driver task, so no lock is held across
//! an await; a failed connection fails its requests and the next request dials again.
//!
//! The server ([`serve_raft`]) reads frames (bounded by the wire limits before any allocation),
//! hands each to the [`RaftService`] in its own task, and writes replies as they complete.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use super::network::{NetworkConfig, RaftService, Transport, TransportError, reject};
use super::wire::{self, FRAME_PREFIX_LEN, RejectReason, WireError, WireLimits};
use super::{ControllerNode, MetadataRaft, RaftNodeId};

/// Timeouts and caps of the TCP transport, client and server side.
#[derive(Debug, Clone, Copy)]
pub struct TcpConfig {
    /// Longest wait for a connection to a peer to be established.
    pub connect_timeout: Duration,
    /// Longest wait for one frame to be written.
    pub write_timeout: Duration,
    /// Longest silence from a peer after a request was written to it, and longest wait for
    /// the rest of a frame once its length has arrived. The server answers requests
    /// concurrently and the leader sends heartbeats many times a second, so a live peer is
    /// never silent this long even while it serves a slow request; each request has its own,
    /// shorter, timeout.
    pub read_timeout: Duration,
    /// How long the server keeps a connection with no request on it.
    pub idle_timeout: Duration,
    /// Most connections the server serves at once; more are closed on accept.
    pub max_connections: usize,
    /// Most requests the server handles at once on one connection; the rest wait unread.
    pub max_in_flight_per_connection: usize,
    /// Frame size limits.
    pub limits: WireLimits,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(120),
            max_connections: 64,
            max_in_flight_per_connection: 16,
            limits: WireLimits::default(),
        }
    }
}

/// Requests queued to one peer's driver before callers wait for room.
const QUEUE_DEPTH: usize = 64;

type ReplySender = oneshot::Sender<Result<Bytes, TransportError>>;

struct Outgoing {
    request_id: u64,
    frame: Bytes,
    reply: ReplySender,
}

struct Peer {
    addr: String,
    tx: mpsc::Sender<Outgoing>,
}

/// The client side: one multiplexed connection per peer, dialed on first use and after failures.
pub struct TcpTransport {
    config: TcpConfig,
    peers: Mutex<HashMap<RaftNodeId, Arc<Peer>>>,
}

impl TcpTransport {
    /// A transport with no connections yet.
    pub fn new(config: TcpConfig) -> Self {
        Self {
            config,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The live driver for `target` at `addr`, or a new one. A driver whose connection failed
    /// has closed its queue; an address change (the membership moved the node) replaces it.
    fn peer(&self, target: RaftNodeId, addr: &str) -> Arc<Peer> {
        // A poisoned map only means another caller panicked while holding it; the map itself is
        // still consistent, since every update is a single insert.
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(p) = peers.get(&target)
            && p.addr == addr
            && !p.tx.is_closed()
        {
            return Arc::clone(p);
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let peer = Arc::new(Peer {
            addr: addr.to_owned(),
            tx,
        });
        tokio::spawn(drive(addr.to_owned(), rx, self.config));
        peers.insert(target, Arc::clone(&peer));
        peer
    }
}

impl Transport for TcpTransport {
    async fn call(
        &self,
        target: RaftNodeId,
        node: &ControllerNode,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let Some(request_id) = wire::peek_request_id(&frame) else {
            return Err(TransportError::Broken(
                "request frame has no request id".into(),
            ));
        };
        let exchange = async {
            let (reply, rx) = oneshot::channel();
            let mut out = Outgoing {
                request_id,
                frame,
                reply,
            };
            // One retry: the cached driver may have died after we fetched it but before it took
            // the request, which says nothing about whether a new connection would work.
            for _ in 0..2 {
                let peer = self.peer(target, &node.addr);
                match peer.tx.send(out).await {
                    Ok(()) => {
                        return rx.await.unwrap_or_else(|_| {
                            Err(TransportError::Broken("connection driver stopped".into()))
                        });
                    }
                    Err(mpsc::error::SendError(back)) => out = back,
                }
            }
            Err(TransportError::Broken("connection driver stopped".into()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(TransportError::Timeout(timeout)))
    }
}

/// Owns one connection to a peer: dials, writes queued requests, routes replies. Ends when the
/// connection fails (failing what is outstanding) or when the transport is dropped.
async fn drive(addr: String, mut rx: mpsc::Receiver<Outgoing>, config: TcpConfig) {
    // Dial only once there is something to send, so an idle peer costs nothing.
    let Some(first) = rx.recv().await else {
        return;
    };
    let stream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(&addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse_all(first, rx, &format!("connect to {addr}: {e}")),
        Err(_) => {
            return refuse_all(
                first,
                rx,
                &format!(
                    "connect to {addr}: no answer within {:?}",
                    config.connect_timeout
                ),
            );
        }
    };
    // Raft frames are small and latency-bound; Nagle would hold heartbeats back.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%addr, error = %e, "cannot disable Nagle on a raft connection");
    }
    let (read, mut write) = stream.into_split();
    let (frames_tx, mut frames) = mpsc::channel(QUEUE_DEPTH);
    let mut reader = tokio::spawn(read_replies(read, frames_tx, config.limits));
    let mut pending: HashMap<u64, ReplySender> = HashMap::new();
    let mut next = Some(first);
    // The first request written since the peer last sent anything: the read timeout runs from
    // there. Every request is answered, so a peer that sends nothing for that long while it
    // owes replies is gone (partitioned away, paused, dead). Requests whose callers gave up
    // still count: dropping them from the reckoning let a steady stream of timed-out
    // heartbeats keep a dead connection open until the kernel's send buffer filled, and then
    // TCP's backed-off retransmissions kept it stuck for seconds after the network healed.
    let mut unanswered_since: Option<tokio::time::Instant> = None;
    let why = loop {
        if let Some(out) = next.take() {
            // Callers that timed out have dropped their receivers; forget them here rather than
            // keep a map entry per lost reply.
            pending.retain(|_, tx| !tx.is_closed());
            if let Err(e) = write_frame(&mut write, &out.frame, config.write_timeout).await {
                let _ = out.reply.send(Err(TransportError::Broken(e.clone())));
                break e;
            }
            unanswered_since.get_or_insert_with(tokio::time::Instant::now);
            pending.insert(out.request_id, out.reply);
        }
        let silent_since = unanswered_since;
        let silence = async move {
            match silent_since {
                Some(t) => tokio::time::sleep_until(t + config.read_timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = rx.recv() => match out {
                Some(out) => next = Some(out),
                None => break "transport dropped".to_owned(),
            },
            frame = frames.recv() => match frame {
                Some(frame) => {
                    unanswered_since = None;
                    // No one waiting means the caller gave up on this reply.
                    if let Some(tx) = wire::peek_request_id(&frame).and_then(|id| pending.remove(&id)) {
                        let _ = tx.send(Ok(frame));
                    }
                }
                None => break match (&mut reader).await {
                    Ok(Err(e)) => e,
                    _ => "connection closed".to_owned(),
                },
            },
            () = silence => {
                break format!("no reply from {addr} within {:?}", config.read_timeout);
            }
        }
    };
    reader.abort();
    tracing::debug!(%addr, reason = %why, "raft connection closed");
    for (_, tx) in pending {
        let _ = tx.send(Err(TransportError::Broken(why.clone())));
    }
    // Whatever is still queued was never sent: it can go out on a fresh connection, but the
    // callers are simpler if they just see a broken connection and retry at openraft's pace.
    rx.close();
    while let Ok(out) = rx.try_recv() {
        let _ = out.reply.send(Err(TransportError::Broken(why.clone())));
    }
}

fn refuse_all(first: Outgoing, mut rx: mpsc::Receiver<Outgoing>, why: &str) {
    tracing::debug!(reason = %why, "raft peer unreachable");
    rx.close();
    let _ = first
        .reply
        .send(Err(TransportError::Unreachable(why.to_owned())));
    while let Ok(out) = rx.try_recv() {
        let _ = out
            .reply
            .send(Err(TransportError::Unreachable(why.to_owned())));
    }
}

async fn read_replies(
    mut read: OwnedReadHalf,
    frames: mpsc::Sender<Bytes>,
    limits: WireLimits,
) -> Result<(), String> {
    loop {
        // The driver bounds how long it waits for replies; the reader just reads.
        let frame = match read_frame(&mut read, limits, None).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if frames.send(frame).await.is_err() {
            return Ok(());
        }
    }
}

async fn write_frame(
    write: &mut OwnedWriteHalf,
    frame: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, write.write_all(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err(format!("write: not done within {timeout:?}")),
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("read: {0}")]
    Io(#[from] io::Error),
    #[error("read: the rest of a frame did not arrive within {0:?}")]
    Stalled(Duration),
    /// The frame is over the limit; its first bytes are kept to address the refusal.
    #[error("{error}")]
    TooLarge { error: WireError, head: Vec<u8> },
}

/// Reads one whole frame (prefix included); `None` at a clean end of stream. The length is
/// checked before the body is allocated; `body_timeout` bounds the wait for the body once the
/// length has arrived.
async fn read_frame(
    read: &mut OwnedReadHalf,
    limits: WireLimits,
    body_timeout: Option<Duration>,
) -> Result<Option<Bytes>, ReadError> {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    match read.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = match wire::body_len(prefix, limits) {
        Ok(len) => len,
        Err(error) => {
            // Read just the fixed body prefix, for the request id the refusal is addressed to.
            let mut head = prefix.to_vec();
            let mut body_head = [0u8; 10];
            if read.read_exact(&mut body_head).await.is_ok() {
                head.extend_from_slice(&body_head);
            }
            return Err(ReadError::TooLarge { error, head });
        }
    };
    let mut frame = vec![0u8; FRAME_PREFIX_LEN + len];
    frame[..FRAME_PREFIX_LEN].copy_from_slice(&prefix);
    let body = read.read_exact(&mut frame[FRAME_PREFIX_LEN..]);
    match body_timeout {
        Some(t) => match tokio::time::timeout(t, body).await {
            Ok(r) => r?,
            Err(_) => return Err(ReadError::Stalled(t)),
        },
        None => body.await?,
    };
    Ok(Some(Bytes::from(frame)))
}

/// Serves raft RPCs from `listener` to `raft` until `shutdown` completes, then closes every
/// connection. Returns an error only if accepting fails in a way retrying cannot fix.
pub async fn serve_raft(
    listener: TcpListener,
    raft: MetadataRaft,
    network: NetworkConfig,
    config: TcpConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_service(
        listener,
        Arc::new(RaftService::new(raft, network)),
        config,
        shutdown,
    )
    .await
}

/// Like [`serve_raft`], for a service built by the caller (one that also answers controller
/// RPCs, `RaftService::with_controller`).
pub async fn serve_service(
    listener: TcpListener,
    service: Arc<RaftService>,
    config: TcpConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow with every one ever served.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) if is_transient_accept_error(&e) => {
                        tracing::warn!(error = %e, "raft listener: accept failed, retrying");
                        // Out of file descriptors and the like: give the system a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, max = config.max_connections, "raft listener: too many connections, closing a new one");
                    drop(stream);
                    continue;
                };
                let service = Arc::clone(&service);
                connections.spawn(async move {
                    if let Err(e) = serve_connection(stream, service, config).await {
                        tracing::debug!(%peer, error = %e, "raft connection ended");
                    }
                    drop(slot);
                });
            }
        }
    }
    connections.shutdown().await;
    Ok(())
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
    )
}

async fn serve_connection(
    stream: TcpStream,
    service: Arc<RaftService>,
    config: TcpConfig,
) -> Result<(), String> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot disable Nagle on a raft connection");
    }
    let (mut read, write) = stream.into_split();
    let (replies_tx, replies) = mpsc::channel::<Bytes>(config.max_in_flight_per_connection);
    let mut writer = tokio::spawn(write_replies(write, replies, config.write_timeout));
    let mut writer_done = false;
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight_per_connection));
    let mut handlers = JoinSet::new();
    let result = loop {
        // Waiting for a slot before reading leaves further requests in the socket buffer, which
        // is the back pressure a peer sending faster than raft serves should feel.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break Ok(());
        };
        let next = tokio::select! {
            r = tokio::time::timeout(config.idle_timeout, read_frame(&mut read, service.limits(), Some(config.read_timeout))) => r,
            // The writer only stops when writing failed; nothing more can be answered.
            w = &mut writer => {
                writer_done = true;
                break w.map_err(|e| e.to_string()).and_then(|r| r);
            }
        };
        match next {
            Err(_) => break Ok(()),
            Ok(Ok(None)) => break Ok(()),
            Ok(Ok(Some(frame))) => {
                let service = Arc::clone(&service);
                let replies_tx = replies_tx.clone();
                handlers.spawn(async move {
                    let reply = service.handle(frame).await;
                    let _ = replies_tx.send(reply).await;
                    drop(permit);
                });
                // Keep the set small on long-lived connections.
                while handlers.try_join_next().is_some() {}
            }
            Ok(Err(ReadError::TooLarge { error, head })) => {
                let id = wire::peek_request_id(&head).unwrap_or(0);
                let _ = replies_tx
                    .send(reject(id, RejectReason::Malformed, error.to_string()))
                    .await;
                // The oversized body is still in the stream; there is no resynchronising.
                break Err(error.to_string());
            }
            Ok(Err(e)) => break Err(e.to_string()),
        }
    };
    // Let the replies already being computed go out, then close.
    drop(replies_tx);
    while handlers.join_next().await.is_some() {}
    if !writer_done
        && tokio::time::timeout(config.write_timeout, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
    result
}

async fn write_replies(
    mut write: OwnedWriteHalf,
    mut replies: mpsc::Receiver<Bytes>,
    timeout: Duration,
) -> Result<(), String> {
    while let Some(reply) = replies.recv().await {
        write_frame(&mut write, &reply, timeout).await?;
    }
    let _ = write.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::wire::{RaftReply, RaftRequest, RequestHeader, decode_request, encode_reply};
    use openraft::Vote;
    use openraft::raft::{VoteRequest, VoteResponse};

    fn request(id: u64, term: u64) -> Bytes {
        let h = RequestHeader {
            request_id: id,
            cluster_id: "c".into(),
            target: 2,
        };
        let r = RaftRequest::Vote(VoteRequest::new(Vote::new(term, 1), None));
        wire::encode_request(&h, &r, WireLimits::default()).expect("fits")
    }

    /// Answers each vote request with the request's term, after `hold` requests have arrived
    /// (in reverse order, so replies come back out of order), or never if `answer` is false.
    async fn fake_peer(listener: TcpListener, hold: usize, answer: bool) {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (mut read, mut write) = stream.into_split();
        let mut held = Vec::new();
        while let Ok(Some(frame)) = read_frame(&mut read, WireLimits::default(), None).await {
            let (h, r) = decode_request(frame, WireLimits::default()).expect("valid request");
            let RaftRequest::Vote(v) = r else {
                panic!("expected a vote request")
            };
            held.push((h.request_id, v.vote));
            if answer && held.len() >= hold {
                while let Some((id, vote)) = held.pop() {
                    let reply =
                        encode_reply(id, &RaftReply::Vote(VoteResponse::new(vote, None, true)));
                    write.write_all(&reply).await.expect("write");
                }
            }
        }
    }

    fn node(listener: &TcpListener) -> ControllerNode {
        ControllerNode {
            addr: listener.local_addr().expect("bound").to_string(),
        }
    }

    fn term_of(reply: Bytes) -> u64 {
        match wire::decode_reply(reply, WireLimits::default()).expect("valid reply") {
            (_, RaftReply::Vote(v)) => v.vote.leader_id.term,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_a_connection_and_get_their_own_replies() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let node = node(&listener);
        // The fake peer accepts once: a second connection would hang the test's calls.
        tokio::spawn(fake_peer(listener, 3, true));
        let t = Arc::new(TcpTransport::new(TcpConfig::default()));
        let calls = (1..=3u64).map(|i| {
            let (t, node) = (Arc::clone(&t), node.clone());
            tokio::spawn(async move {
                let reply = t
                    .call(2, &node, request(1000 + i, i), Duration::from_secs(5))
                    .await
                    .expect("reply");
                assert_eq!(term_of(reply), i);
            })
        });
        for c in calls.collect::<Vec<_>>() {
            c.await.expect("call task");
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let node = node(&listener);
        drop(listener);
        let t = TcpTransport::new(TcpConfig::default());
        let r = t
            .call(2, &node, request(1, 1), Duration::from_secs(5))
            .await;
        assert!(matches!(r, Err(TransportError::Unreachable(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_a_restarted_one_is_redialed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let node = node(&listener);
        let addr = listener.local_addr().expect("bound");
        let silent = tokio::spawn(fake_peer(listener, 1, false));
        let t = TcpTransport::new(TcpConfig::default());
        let r = t
            .call(2, &node, request(1, 1), Duration::from_millis(200))
            .await;
        assert_eq!(r, Err(TransportError::Timeout(Duration::from_millis(200))));

        // The peer goes away (its end of the connection closes) and comes back on the same port.
        silent.abort();
        let _ = silent.await;
        let listener = TcpListener::bind(addr).await.expect("rebind");
        tokio::spawn(fake_peer(listener, 1, true));
        // The first call may still meet the dead connection; a bounded number of retries, as
        // openraft would make, reaches the new one.
        let mut last = None;
        for i in 0..20u64 {
            match t
                .call(2, &node, request(10 + i, 7), Duration::from_secs(2))
                .await
            {
                Ok(reply) => {
                    assert_eq!(term_of(reply), 7);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("never reconnected: {last:?}");
    }

    /// A peer that accepts, reads and never answers, like one behind a partition that drops
    /// packets, gets its connection dropped after the read timeout even though every caller
    /// gives up long before (as openraft's heartbeats do), and the next call redials it.
    #[tokio::test]
    async fn a_peer_silent_to_abandoned_requests_is_redialed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let node = node(&listener);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while tokio::io::AsyncReadExt::read(&mut stream, &mut sink)
                        .await
                        .is_ok_and(|n| n > 0)
                    {}
                }));
            }
        });
        let t = TcpTransport::new(TcpConfig {
            read_timeout: Duration::from_millis(300),
            ..TcpConfig::default()
        });
        for i in 0..30u64 {
            let r = t
                .call(2, &node, request(100 + i, 1), Duration::from_millis(40))
                .await;
            assert!(r.is_err(), "a silent peer answered: {r:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            n >= 2,
            "the silent connection was never dropped ({n} connection(s) in 1.5 s)"
        );
    }
}
