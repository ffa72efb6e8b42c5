//! openraft's network over a [`Transport`]: the sending side ([`Network`], openraft's
//! `RaftNetworkFactory`, and [`PeerClient`], its `RaftNetwork`) and the receiving side
//! ([`RaftService`], which hands decoded requests to the local raft). The transport only moves
//! opaque frames, so the same raft code runs over TCP (`super::tcp`) and over the in-memory
//! simulator of the tests (`super::sim`).
//!
//! How failures reach openraft matters, because it reacts to each differently: `Unreachable`
//! makes the replication stream back off for [`PeerClient::backoff`] intervals, while `Timeout`
//! and `NetworkError` are retried at the next heartbeat. A peer that cannot connect, or that
//! refuses us for a reason that will not clear soon (another cluster, another node id, another
//! wire version, overload), is therefore reported as unreachable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, ErrorSubject, ErrorVerb, ServerState, StorageError, StorageIOError};

use super::prevote::{PreVoteRequest, PreVoteResponse, PreVoteState, VoterView, grant_pre_vote};
use super::wire::{
    self, FatalKind, RaftReply, RaftRequest, RejectReason, RemoteFailure, RequestHeader, WireError,
    WireLimits,
};
use super::{ControllerNode, MetadataRaft, MetadataRaftConfig, RaftNodeId};

/// Moves one request frame to a node and brings back its reply frame. Frames include their
/// length prefix (`super::wire`). Implementations need not interpret them beyond
/// [`wire::peek_request_id`], which a multiplexing transport uses to match replies.
pub trait Transport: Send + Sync + 'static {
    /// Sends `frame` to node `target` at `node` and waits at most `timeout` for its reply.
    fn call(
        &self,
        target: RaftNodeId,
        node: &ControllerNode,
        frame: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, TransportError>> + Send;
}

/// Why a transport could not bring back a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection to the node could be made (refused, unresolvable, connect timed out,
    /// partitioned away); openraft backs off before trying again.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The request may have been delivered, but no reply came within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection failed while the request was in flight.
    #[error("connection failed: {0}")]
    Broken(String),
}

/// What both sides of the network need to agree on.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The cluster id, sent with every request and checked by every receiver.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: RaftNodeId,
    /// Frame size limits.
    pub limits: WireLimits,
}

impl NetworkConfig {
    /// A configuration with the default frame limits.
    pub fn new(cluster_id: impl Into<String>, node_id: RaftNodeId) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id,
            limits: WireLimits::default(),
        }
    }
}

// Request ids are unique per process rather than per client, so that a transport shared by
// several clients (or by a raft and its restarted successor) never sees two in flight at once.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// openraft's `RaftNetworkFactory`: makes a [`PeerClient`] per target over one shared transport.
pub struct Network<T> {
    transport: Arc<T>,
    config: Arc<NetworkConfig>,
}

impl<T: Transport> Network<T> {
    /// A network sending through `transport`.
    pub fn new(transport: Arc<T>, config: NetworkConfig) -> Self {
        Self {
            transport,
            config: Arc::new(config),
        }
    }
}

impl<T: Transport> RaftNetworkFactory<MetadataRaftConfig> for Network<T> {
    type Network = PeerClient<T>;

    async fn new_client(&mut self, target: RaftNodeId, node: &ControllerNode) -> PeerClient<T> {
        PeerClient {
            transport: Arc::clone(&self.transport),
            config: Arc::clone(&self.config),
            target,
            node: node.clone(),
        }
    }
}

/// openraft's `RaftNetwork` towards one peer.
pub struct PeerClient<T> {
    transport: Arc<T>,
    config: Arc<NetworkConfig>,
    target: RaftNodeId,
    node: ControllerNode,
}

/// A failed call, before it is shaped into the `RPCError` of the particular RPC.
enum CallError {
    Transport(TransportError),
    Encode(WireError),
    BadReply(String),
    Remote(RemoteFailure),
}

impl<T: Transport> PeerClient<T> {
    async fn call(&self, request: RaftRequest, option: &RPCOption) -> Result<RaftReply, CallError> {
        let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader {
            request_id,
            cluster_id: self.config.cluster_id.clone(),
            target: self.target,
        };
        let frame = wire::encode_request(&header, &request, self.config.limits)
            .map_err(CallError::Encode)?;
        // openraft drops the call at the hard TTL; answering at the soft one lets it see our
        // Timeout rather than its own, and leaves the transport time to clean up.
        let reply = self
            .transport
            .call(self.target, &self.node, frame, option.soft_ttl())
            .await
            .map_err(CallError::Transport)?;
        let (reply_id, reply) = wire::decode_reply(reply, self.config.limits)
            .map_err(|e| CallError::BadReply(format!("undecodable reply: {e}")))?;
        if reply_id != request_id {
            return Err(CallError::BadReply(format!(
                "reply to request {reply_id} while waiting for {request_id}"
            )));
        }
        match reply {
            RaftReply::Error(failure) => Err(CallError::Remote(failure)),
            reply => Ok(reply),
        }
    }

    /// Shapes a failure into openraft's error for an RPC whose API error is `E`; `api` turns
    /// the remote failures that are API errors of this RPC into one.
    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
        action: RPCTypes,
        api: impl FnOnce(&RemoteFailure) -> Option<E>,
    ) -> RPCError<RaftNodeId, ControllerNode, RaftError<RaftNodeId, E>> {
        match e {
            CallError::Transport(TransportError::Unreachable(why)) => {
                RPCError::Unreachable(Unreachable::new(&AnyError::error(why)))
            }
            CallError::Transport(TransportError::Timeout(timeout)) => RPCError::Timeout(Timeout {
                action,
                id: self.config.node_id,
                target: self.target,
                timeout,
            }),
            CallError::Transport(e @ TransportError::Broken(_)) => {
                RPCError::Network(NetworkError::new(&e))
            }
            CallError::Encode(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::BadReply(why) => RPCError::Network(NetworkError::new(&AnyError::error(why))),
            CallError::Remote(failure) => {
                if let Some(api) = api(&failure) {
                    return self.remote(RaftError::APIError(api));
                }
                match failure {
                    RemoteFailure::Fatal { kind, message } => {
                        self.remote(RaftError::Fatal(fatal_from_wire(kind, message)))
                    }
                    RemoteFailure::Rejected {
                        reason: RejectReason::Malformed,
                        message,
                    } => RPCError::Network(NetworkError::new(&AnyError::error(format!(
                        "node {} could not decode our request: {message}",
                        self.target
                    )))),
                    RemoteFailure::Rejected { reason, message } => {
                        RPCError::Unreachable(Unreachable::new(&AnyError::error(format!(
                            "node {} refused us ({reason:?}): {message}",
                            self.target
                        ))))
                    }
                    other @ RemoteFailure::SnapshotMismatch(_) => {
                        RPCError::Network(NetworkError::new(&AnyError::error(format!(
                            "unexpected reply from node {}: {other}",
                            self.target
                        ))))
                    }
                }
            }
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<RaftNodeId, E>,
    ) -> RPCError<RaftNodeId, ControllerNode, RaftError<RaftNodeId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            e,
        ))
    }

    fn unexpected<E: std::error::Error>(
        &self,
        reply: &RaftReply,
    ) -> RPCError<RaftNodeId, ControllerNode, RaftError<RaftNodeId, E>> {
        RPCError::Network(NetworkError::new(&AnyError::error(format!(
            "node {} answered with the wrong kind of reply: {reply:?}",
            self.target
        ))))
    }
}

fn fatal_from_wire(kind: FatalKind, message: String) -> Fatal<RaftNodeId> {
    match kind {
        FatalKind::Stopped => Fatal::Stopped,
        FatalKind::Panicked => Fatal::Panicked,
        // The remote's storage error cannot be rebuilt exactly; its description is what the
        // leader can log, and the variant is what it reacts to.
        FatalKind::Storage => Fatal::StorageError(StorageError::IO {
            source: StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Write,
                AnyError::error(message),
            ),
        }),
    }
}

fn fatal_to_wire(f: &Fatal<RaftNodeId>) -> RemoteFailure {
    let kind = match f {
        Fatal::Stopped => FatalKind::Stopped,
        Fatal::Panicked => FatalKind::Panicked,
        Fatal::StorageError(_) => FatalKind::Storage,
    };
    RemoteFailure::Fatal {
        kind,
        message: f.to_string(),
    }
}

/// First interval openraft waits after a peer was unreachable; doubled up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest interval between attempts to reach an unreachable peer.
const BACKOFF_CAP: Duration = Duration::from_secs(1);

impl<T: Transport> RaftNetwork<MetadataRaftConfig> for PeerClient<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetadataRaftConfig>,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<RaftNodeId>,
        RPCError<RaftNodeId, ControllerNode, RaftError<RaftNodeId>>,
    > {
        let n_entries = rpc.entries.len() as u64;
        match self.call(RaftRequest::AppendEntries(rpc), &option).await {
            Ok(RaftReply::AppendEntries(resp)) => Ok(resp),
            Ok(other) => Err(self.unexpected(&other)),
            // Too many entries for one frame: openraft resends fewer when told how many.
            Err(CallError::Encode(WireError::FrameTooLarge { .. })) if n_entries > 1 => Err(
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(n_entries / 2)),
            ),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, |_| None)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MetadataRaftConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, ControllerNode, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        match self.call(RaftRequest::InstallSnapshot(rpc), &option).await {
            Ok(RaftReply::InstallSnapshot(resp)) => Ok(resp),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot, |f| match f {
                RemoteFailure::SnapshotMismatch(m) => {
                    Some(InstallSnapshotError::SnapshotMismatch(m.clone()))
                }
                _ => None,
            })),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, ControllerNode, RaftError<RaftNodeId>>>
    {
        match self.call(RaftRequest::Vote(rpc), &option).await {
            Ok(RaftReply::Vote(resp)) => Ok(resp),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, |_| None)),
        }
    }

    fn backoff(&self) -> Backoff {
        // openraft's default waits 500 ms every time; starting shorter notices a restarted peer
        // sooner, and growing keeps a long-dead one from costing a connect attempt per interval.
        let mut next = BACKOFF_FIRST;
        Backoff::new(std::iter::repeat_with(move || {
            let now = next;
            next = (next * 2).min(BACKOFF_CAP);
            now
        }))
    }
}

/// What answers controller RPCs (`crate::rpc`) arriving on the controller listener: given a
/// request body, the reply body.
pub trait ControllerRpcHandler: Send + Sync + 'static {
    /// Answers one request body.
    fn handle(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Bytes> + Send + '_>>;
}

/// The receiving side: decodes request frames, checks they are meant for this node of this
/// cluster in this wire version, and hands them to the local raft (or, for controller RPCs, to
/// the controller handler).
pub struct RaftService {
    raft: MetadataRaft,
    config: NetworkConfig,
    controller: Option<Arc<dyn ControllerRpcHandler>>,
    pre_vote: Option<Arc<PreVoteState>>,
}

impl RaftService {
    /// Serves `raft` under `config` (the same configuration as this node's [`Network`]).
    pub fn new(raft: MetadataRaft, config: NetworkConfig) -> Self {
        Self {
            raft,
            config,
            controller: None,
            pre_vote: None,
        }
    }

    /// Records leader contact in `state` and answers pre-votes from it (`super::prevote`).
    /// Without it, pre-votes are refused as a node of a release without pre-vote refuses
    /// them, and the candidate treats the refusal as a grant.
    pub fn with_pre_vote(mut self, state: Arc<PreVoteState>) -> Self {
        self.pre_vote = Some(state);
        self
    }

    /// Also answers controller RPCs, with `handler`.
    pub fn with_controller(mut self, handler: Arc<dyn ControllerRpcHandler>) -> Self {
        self.controller = Some(handler);
        self
    }

    /// This service's frame limits, which a transport applies while reading.
    pub fn limits(&self) -> WireLimits {
        self.config.limits
    }

    /// Answers one request frame with one reply frame. Never fails: whatever goes wrong becomes
    /// an error reply the sender can act on.
    pub async fn handle(&self, frame: Bytes) -> Bytes {
        let peeked_id = wire::peek_request_id(&frame).unwrap_or(0);
        let (header, request) = match wire::decode_request(frame, self.config.limits) {
            Ok(decoded) => decoded,
            Err(WireError::UnsupportedVersion(v)) => {
                return reject(
                    peeked_id,
                    RejectReason::UnsupportedVersion,
                    format!("wire version {v}; this node reads {}", wire::WIRE_VERSION),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "undecodable raft request");
                return reject(peeked_id, RejectReason::Malformed, e.to_string());
            }
        };
        // A node joining by a bootstrap address knows neither the cluster id nor whom it
        // reaches; it may ask controller questions (and learns the cluster id from them), but
        // raft itself only ever hears from its own cluster.
        let joining = matches!(request, RaftRequest::Controller(_));
        let cluster_ok = header.cluster_id == self.config.cluster_id
            || (joining && header.cluster_id.is_empty());
        if !cluster_ok {
            return reject(
                header.request_id,
                RejectReason::ClusterMismatch,
                format!(
                    "request for cluster {:?}, this node is in {:?}",
                    header.cluster_id, self.config.cluster_id
                ),
            );
        }
        if header.target != self.config.node_id && !(joining && header.target == wire::ANY_NODE) {
            return reject(
                header.request_id,
                RejectReason::WrongNode,
                format!(
                    "request for node {}, this is node {}",
                    header.target, self.config.node_id
                ),
            );
        }
        let reply = match request {
            RaftRequest::AppendEntries(rpc) => match self.raft.append_entries(rpc).await {
                Ok(resp) => {
                    // Anything but "your vote is stale" means a leader this node follows.
                    if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
                        self.leader_contact();
                    }
                    RaftReply::AppendEntries(resp)
                }
                Err(e) => RaftReply::Error(infallible_api(e)),
            },
            RaftRequest::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(resp) => {
                    // Raft restarts the election timer of a voter that grants a vote, so
                    // that it does not compete with the candidate it just voted for.
                    if resp.vote_granted {
                        self.leader_contact();
                    }
                    RaftReply::Vote(resp)
                }
                Err(e) => RaftReply::Error(infallible_api(e)),
            },
            RaftRequest::InstallSnapshot(rpc) => {
                let sent = rpc.vote;
                match self.raft.install_snapshot(rpc).await {
                    Ok(resp) => {
                        if resp.vote <= sent {
                            self.leader_contact();
                        }
                        RaftReply::InstallSnapshot(resp)
                    }
                    Err(RaftError::APIError(e)) => RaftReply::Error(wire::snapshot_failure(&e)),
                    Err(RaftError::Fatal(f)) => RaftReply::Error(fatal_to_wire(&f)),
                }
            }
            RaftRequest::PreVote(rpc) => self.answer_pre_vote(&rpc),
            RaftRequest::Controller(body) => match &self.controller {
                Some(handler) => RaftReply::Controller(handler.handle(body).await),
                None => RaftReply::Error(RemoteFailure::Rejected {
                    reason: RejectReason::Malformed,
                    message: "this node answers no controller requests".into(),
                }),
            },
        };
        wire::encode_reply(header.request_id, &reply)
    }

    fn leader_contact(&self) {
        if let Some(state) = &self.pre_vote {
            state.contact.touch(state.now_ms());
        }
    }

    fn answer_pre_vote(&self, rpc: &PreVoteRequest) -> RaftReply {
        let Some(state) = &self.pre_vote else {
            return RaftReply::Error(RemoteFailure::Rejected {
                reason: RejectReason::Malformed,
                message: "this node does not answer pre-votes".into(),
            });
        };
        let (is_leader, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state == ServerState::Leader, m.current_term)
        };
        let last_log_id = self.raft.data_metrics().borrow().last_log;
        let view = VoterView {
            is_leader,
            since_contact_ms: state.contact.since_ms(state.now_ms()),
            last_log_id,
        };
        let granted = grant_pre_vote(&view, rpc, state.lease_ms);
        tracing::debug!(
            candidate = rpc.candidate,
            term = rpc.term,
            granted,
            ?view,
            "pre-vote"
        );
        RaftReply::PreVote(PreVoteResponse { granted, term })
    }
}

fn infallible_api(e: RaftError<RaftNodeId>) -> RemoteFailure {
    match e {
        RaftError::APIError(never) => match never {},
        RaftError::Fatal(f) => fatal_to_wire(&f),
    }
}

/// An error reply refusing the request `request_id`, for transports that refuse a request
/// before it reaches a [`RaftService`] (too many connections, a frame over the limit).
pub fn reject(request_id: u64, reason: RejectReason, message: String) -> Bytes {
    wire::encode_reply(
        request_id,
        &RaftReply::Error(RemoteFailure::Rejected { reason, message }),
    )
}

/// Why a controller RPC got no reply body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerCallError {
    /// The transport failed (unreachable, timed out, broken).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The request could not be encoded (too large for a frame).
    #[error("cannot send the request: {0}")]
    Encode(String),
    /// The node answered with something that is not a controller reply.
    #[error("bad reply: {0}")]
    BadReply(String),
    /// The node refused the request.
    #[error("refused: {0}")]
    Remote(RemoteFailure),
}

/// Sends one controller RPC body to the node at `node` (id `target`, or [`wire::ANY_NODE`]
/// when unknown) and returns the reply body. `key` identifies the connection in `transport`
/// (the node id, or a made-up one per bootstrap address).
pub async fn call_controller<T: Transport>(
    transport: &T,
    config: &NetworkConfig,
    key: RaftNodeId,
    target: RaftNodeId,
    node: &ControllerNode,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, ControllerCallError> {
    let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    let header = RequestHeader {
        request_id,
        cluster_id: config.cluster_id.clone(),
        target,
    };
    match call_once(
        transport,
        config,
        key,
        header,
        RaftRequest::Controller(body),
        node,
        timeout,
    )
    .await?
    {
        RaftReply::Controller(body) => Ok(body),
        RaftReply::Error(f) => Err(ControllerCallError::Remote(f)),
        other => Err(ControllerCallError::BadReply(format!("{other:?}"))),
    }
}

/// Asks voter `target` at `node` for a pre-vote (`super::prevote`).
pub async fn call_pre_vote<T: Transport>(
    transport: &T,
    config: &NetworkConfig,
    target: RaftNodeId,
    node: &ControllerNode,
    request: PreVoteRequest,
    timeout: Duration,
) -> Result<PreVoteResponse, ControllerCallError> {
    let header = RequestHeader {
        request_id: NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        cluster_id: config.cluster_id.clone(),
        target,
    };
    match call_once(
        transport,
        config,
        target,
        header,
        RaftRequest::PreVote(request),
        node,
        timeout,
    )
    .await?
    {
        RaftReply::PreVote(resp) => Ok(resp),
        RaftReply::Error(f) => Err(ControllerCallError::Remote(f)),
        other => Err(ControllerCallError::BadReply(format!("{other:?}"))),
    }
}

async fn call_once<T: Transport>(
    transport: &T,
    config: &NetworkConfig,
    key: RaftNodeId,
    header: RequestHeader,
    request: RaftRequest,
    node: &ControllerNode,
    timeout: Duration,
) -> Result<RaftReply, ControllerCallError> {
    let frame = wire::encode_request(&header, &request, config.limits)
        .map_err(|e| ControllerCallError::Encode(e.to_string()))?;
    let reply = transport.call(key, node, frame, timeout).await?;
    let (reply_id, reply) = wire::decode_reply(reply, config.limits)
        .map_err(|e| ControllerCallError::BadReply(e.to_string()))?;
    if reply_id != header.request_id {
        return Err(ControllerCallError::BadReply(format!(
            "reply to request {reply_id} while waiting for {}",
            header.request_id
        )));
    }
    Ok(reply)
}
