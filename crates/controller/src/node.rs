//! One node's part in the metadata quorum, as a running thing: the openraft instance on this
//! node's metadata log (a voter on controller nodes, a learner on broker-only ones), the
//! metadata image it applies, the controller listener, and, while this node leads, the active
//! controller: the loop that feeds `Controller` its events one at a time and commits what it
//! decides before answering. Also [`ControllerClient`], by which any node's broker reaches the
//! active controller wherever it is.
//!
//! This is the thin async shell around two pure parts (`controller::Controller` decides,
//! `image::MetadataImage` remembers); consensus is openraft's.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::controller::{Controller, ControllerConfig, ControllerError};
use crate::image::MetadataImage;
use crate::raft::election;
use crate::raft::log_store::{LogStoreError, MetadataLogStore};
use crate::raft::network::{
    ControllerRpcHandler, Network, NetworkConfig, RaftService, call_controller,
};
use crate::raft::prevote::PreVoteState;
use crate::raft::state_machine::{MetadataStateMachine, StateMachineError, StateReader};
use crate::raft::tcp::{TcpConfig, TcpTransport, serve_service};
use crate::raft::wire::ANY_NODE;
use crate::raft::{ControllerNode, MetadataPayload, MetadataRaft, RaftNodeId};
use crate::records::{FeatureLevelRecord, MetadataRecord, encode_batch};
use crate::rpc::{
    ControllerReply, ControllerRequest, ControllerResponse, QuorumInfo, ReplicaState, decode_reply,
    decode_request, encode_reply, encode_request,
};

/// Requests queued for the active controller; more wait for room (bounded by their timeout).
const COMMAND_QUEUE: usize = 256;
/// Longest a request waits for the active controller to carry it out.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the active controller waits for one write to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one step of a voter change (catching the new voter up, committing the new
/// membership) may take.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a controller that removed itself from the voters waits for another to lead.
const RESIGN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for raft to stop before the tasks are aborted anyway.
const RAFT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Timing of the metadata quorum.
#[derive(Debug, Clone, Copy)]
pub struct QuorumTiming {
    /// Leader heartbeat interval (ms).
    pub heartbeat_interval_ms: u64,
    /// Election timeout range (ms): a follower that hears nothing for a random time in it runs
    /// for leader.
    pub election_timeout_min_ms: u64,
    /// Upper end of the election timeout range (ms).
    pub election_timeout_max_ms: u64,
}

impl Default for QuorumTiming {
    fn default() -> Self {
        // Failover within about two seconds (Kafka's controller.quorum.election.timeout.ms is
        // 1000), heartbeats frequent enough that a loaded machine does not cause elections.
        QuorumTiming {
            heartbeat_interval_ms: 150,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
        }
    }
}

/// How this node takes part in the quorum.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `node.id`.
    pub node_id: i32,
    /// The data dir (`__cluster_metadata-0/` goes under it).
    pub data_dir: PathBuf,
    /// The cluster id every raft message carries.
    pub cluster_id: String,
    /// Whether this node has the controller role (a voter, or a voter-to-be).
    pub controller_role: bool,
    /// `controller.quorum.voters`: the initial voters and their controller listeners. A node
    /// listed here initializes the quorum with exactly this set on its first start. Empty for
    /// nodes that join a running quorum through `bootstrap_servers`.
    pub voters: BTreeMap<i32, String>,
    /// `controller.quorum.bootstrap.servers`: controller listeners to ask when this node knows
    /// no leader yet.
    pub bootstrap_servers: Vec<String>,
    /// The address other nodes reach this node's controller (or metadata) listener at; empty
    /// for a lone node that needs no listener.
    pub advertised_addr: String,
    /// The controller's settings.
    pub controller: ControllerConfig,
    /// Raft timing.
    pub timing: QuorumTiming,
    /// Records the first active controller of a new cluster commits, after the
    /// `metadata.version` feature level that marks the log as started (a migrated single-node
    /// data dir's topics, configs and producer ids). Later starts ignore them.
    pub bootstrap_records: Vec<MetadataRecord>,
}

/// The `metadata.version` feature: its presence in the image marks a started cluster.
pub const METADATA_VERSION_FEATURE: &str = "metadata.version";
/// The `metadata.version` level this build writes.
pub const METADATA_VERSION: i16 = 1;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The metadata log could not be opened.
    #[error("metadata log: {0}")]
    Log(#[from] LogStoreError),
    /// The state machine could not be opened.
    #[error("metadata state: {0}")]
    State(#[from] StateMachineError),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// Joining the quorum failed.
    #[error("joining the metadata quorum: {0}")]
    Join(ControllerError),
}

/// A running quorum member (voter or observer).
pub struct QuorumNode {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    shutdown_tx: watch::Sender<bool>,
}

struct Inner {
    node_id: i32,
    cluster_id: String,
    raft: MetadataRaft,
    image: StateReader<MetadataImage>,
    applied: watch::Receiver<Option<u64>>,
    commands: mpsc::Sender<Command>,
    controller_role: bool,
}

struct Command {
    request: ControllerRequest,
    reply: oneshot::Sender<ControllerReply>,
}

fn raft_id(node_id: i32) -> RaftNodeId {
    // Kafka node ids are non-negative; the config layer refuses negative ones.
    node_id as RaftNodeId
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl QuorumNode {
    /// Opens the metadata log under the data dir and starts raft, the controller listener
    /// (`listener`, when given) and, on controller nodes, the active-controller loop. A node
    /// in `voters` initializes the quorum on its first start; others join through
    /// `bootstrap_servers` (as an observer; a voter-to-be is then promoted with AddVoter).
    pub async fn start(
        config: NodeConfig,
        listener: Option<TcpListener>,
    ) -> Result<QuorumNode, NodeError> {
        let id = raft_id(config.node_id);
        let raft_config = Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: config.timing.heartbeat_interval_ms,
            election_timeout_min: config.timing.election_timeout_min_ms,
            election_timeout_max: config.timing.election_timeout_max_ms,
            // Metadata entries are small; a snapshot every few thousand keeps restarts quick
            // and the log short.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
            max_in_snapshot_log_to_keep: 1000,
            ..Config::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| NodeError::Raft(e.to_string()))?,
        );
        let log = MetadataLogStore::open(&config.data_dir).await?;
        let sm = MetadataStateMachine::open(&config.data_dir, MetadataImage::default()).await?;
        let image = sm.state();
        let applied = sm.subscribe_applied();
        let net_config = NetworkConfig::new(config.cluster_id.clone(), id);
        let transport = Arc::new(TcpTransport::new(TcpConfig::default()));
        let network = Network::new(Arc::clone(&transport), net_config.clone());
        let raft = MetadataRaft::new(id, raft_config, network, log, sm)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        // Controller nodes stand for election only after a pre-vote (`raft::prevote`), so
        // openraft's own timer is off there; brokers without the role never stand.
        let pre_vote = Arc::new(PreVoteState::new(config.timing.election_timeout_max_ms));
        if config.controller_role {
            raft.runtime_config().elect(false);
        }

        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let inner = Arc::new(Inner {
            node_id: config.node_id,
            cluster_id: config.cluster_id.clone(),
            raft: raft.clone(),
            image,
            applied,
            commands: commands_tx,
            controller_role: config.controller_role,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(listener) = listener {
            let service = RaftService::new(raft.clone(), net_config.clone())
                .with_controller(Arc::new(Handler(Arc::clone(&inner))))
                .with_pre_vote(Arc::clone(&pre_vote));
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) =
                    serve_service(listener, Arc::new(service), TcpConfig::default(), stopped).await
                {
                    tracing::error!(error = %e, "controller listener failed");
                }
            }));
        }
        if config.controller_role {
            tasks.push(tokio::spawn(election::run_elections(
                raft.clone(),
                Arc::clone(&transport),
                net_config.clone(),
                pre_vote,
                election::ElectionTiming {
                    election_timeout_min_ms: config.timing.election_timeout_min_ms,
                    election_timeout_max_ms: config.timing.election_timeout_max_ms,
                },
                shutdown_rx.clone(),
            )));
            let inner = Arc::clone(&inner);
            let controller_config = config.controller.clone();
            let stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(run_active_controller(
                inner,
                controller_config,
                config.bootstrap_records.clone(),
                commands_rx,
                stop,
            )));
        } else {
            tasks.push(tokio::spawn(refuse_commands(commands_rx)));
        }

        let node = QuorumNode {
            inner,
            tasks,
            shutdown_tx,
        };
        if config.voters.contains_key(&config.node_id) {
            node.initialize_if_new(&config).await?;
        } else {
            node.join(&config, transport, net_config).await?;
        }
        Ok(node)
    }

    async fn initialize_if_new(&self, config: &NodeConfig) -> Result<(), NodeError> {
        let raft = &self.inner.raft;
        let m = raft.metrics().borrow().clone();
        let fresh = m.last_log_index.is_none() && m.vote.leader_id.term == 0;
        if !fresh {
            return Ok(());
        }
        let members: BTreeMap<RaftNodeId, ControllerNode> = config
            .voters
            .iter()
            .map(|(id, addr)| (raft_id(*id), ControllerNode { addr: addr.clone() }))
            .collect();
        // Every initial voter does this with the same set; openraft refuses all but the first
        // on a node that already has a log, which is what a restart is.
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!(error = %e, "quorum already initialized");
        }
        if config.voters.len() == 1 {
            // A lone voter need not wait an election timeout to learn it won.
            let _ = raft.trigger().elect().await;
        }
        Ok(())
    }

    async fn join(
        &self,
        config: &NodeConfig,
        transport: Arc<TcpTransport>,
        net_config: NetworkConfig,
    ) -> Result<(), NodeError> {
        let m = self.inner.raft.metrics().borrow().clone();
        let member = m
            .membership_config
            .membership()
            .get_node(&raft_id(config.node_id))
            .is_some();
        if member {
            return Ok(());
        }
        let client = ControllerClient {
            local: None,
            transport,
            net_config,
            bootstrap: config.bootstrap_servers.clone(),
            hint: Mutex::new(None),
        };
        client
            .call(
                ControllerRequest::AddObserver {
                    node_id: config.node_id,
                    addr: config.advertised_addr.clone(),
                },
                COMMAND_TIMEOUT,
            )
            .await
            .map_err(NodeError::Join)?;
        Ok(())
    }

    /// A client of the active controller that uses this node's knowledge of the leader.
    pub fn client(&self, bootstrap: Vec<String>) -> ControllerClient {
        ControllerClient {
            local: Some(Arc::clone(&self.inner)),
            transport: Arc::new(TcpTransport::new(controller_rpc_tcp())),
            net_config: NetworkConfig::new(
                self.inner.cluster_id.clone(),
                raft_id(self.inner.node_id),
            ),
            bootstrap,
            hint: Mutex::new(None),
        }
    }

    /// Read access to the committed metadata image.
    pub fn image(&self) -> StateReader<MetadataImage> {
        self.inner.image.clone()
    }

    /// The offset of the last applied metadata entry, updated as entries are applied.
    pub fn applied(&self) -> watch::Receiver<Option<u64>> {
        self.inner.applied.clone()
    }

    /// Waits until the entry at `offset` is applied here, at most `timeout`. Returns whether it
    /// was.
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.applied.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|a| a.is_some_and(|a| a >= offset))).await,
            Ok(Ok(_))
        )
    }

    /// The raft handle (metrics, for DescribeQuorum-like reports and tests).
    pub fn raft(&self) -> &MetadataRaft {
        &self.inner.raft
    }

    /// Resolves, with the reason, once raft has stopped on its own: the metadata log could
    /// not be written or read, or raft's core panicked. Never resolves for a shutdown.
    pub fn failed(&self) -> impl Future<Output = String> + Send + 'static {
        let mut metrics = self.inner.raft.metrics();
        async move {
            loop {
                if let Err(fatal) = &metrics.borrow_and_update().running_state
                    && !matches!(fatal, openraft::error::Fatal::Stopped)
                {
                    return fatal.to_string();
                }
                if metrics.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// The active controller's node id, as far as this node knows.
    pub fn leader_id(&self) -> Option<i32> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .current_leader
            .map(|id| id as i32)
    }

    /// Stops every task and raft.
    pub async fn shutdown(self) {
        self.shutdown_tx.send_replace(true);
        match tokio::time::timeout(RAFT_SHUTDOWN_TIMEOUT, self.inner.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "raft did not shut down cleanly"),
            Err(_) => tracing::warn!("raft did not stop within {RAFT_SHUTDOWN_TIMEOUT:?}"),
        }
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// The controller listener's handler of controller RPCs.
struct Handler(Arc<Inner>);

impl ControllerRpcHandler for Handler {
    fn handle(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Bytes> + Send + '_>> {
        Box::pin(async move {
            let reply = match decode_request(&body) {
                Ok(request) => self.0.submit(request).await,
                Err(e) => ControllerReply::Failed(ControllerError::new(
                    ResponseError::InvalidRequest,
                    format!("undecodable controller request: {e}"),
                )),
            };
            Bytes::from(encode_reply(&reply))
        })
    }
}

impl Inner {
    fn leader_hint(&self) -> Option<(i32, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((leader as i32, addr))
    }

    /// Resolves once this node's raft names another leader than `from` (or none): a request
    /// in flight to `from` is then better sent again to the new one than left to time out,
    /// which a partitioned old leader makes it do (Kafka's controller channel likewise
    /// re-sends queued requests when the controller moves).
    async fn leader_moved_from(&self, from: RaftNodeId) {
        let mut metrics = self.raft.metrics();
        if metrics
            .wait_for(|m| m.current_leader != Some(from))
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.state == ServerState::Leader && m.current_leader == Some(raft_id(self.node_id))
    }

    fn not_controller(&self) -> ControllerReply {
        ControllerReply::NotController {
            leader: self.leader_hint().filter(|(id, _)| *id != self.node_id),
        }
    }

    /// Carries out a request on this node, if it is the active controller.
    async fn submit(&self, request: ControllerRequest) -> ControllerReply {
        if !self.controller_role || !self.is_leader() {
            return self.not_controller();
        }
        match request {
            ControllerRequest::DescribeQuorum => self.describe_quorum(),
            ControllerRequest::AddObserver { node_id, addr } => {
                self.add_learner(node_id, addr).await
            }
            ControllerRequest::AddVoter { node_id, addr } => self.add_voter(node_id, addr).await,
            ControllerRequest::RemoveVoter { node_id } => self.remove_voter(node_id).await,
            request => {
                let (tx, rx) = oneshot::channel();
                let queued = tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    self.commands.send(Command { request, reply: tx }),
                )
                .await;
                if !matches!(queued, Ok(Ok(()))) {
                    return ControllerReply::Failed(ControllerError::new(
                        ResponseError::RequestTimedOut,
                        "the controller's queue stayed full",
                    ));
                }
                match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(_)) => self.not_controller(),
                    Err(_) => ControllerReply::Failed(ControllerError::new(
                        ResponseError::RequestTimedOut,
                        "the controller did not answer in time",
                    )),
                }
            }
        }
    }

    fn describe_quorum(&self) -> ControllerReply {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let replication = m.replication.clone().unwrap_or_default();
        let state = |id: RaftNodeId| {
            let log_end_offset = if id == m.id {
                m.last_log_index.map_or(0, |i| i as i64 + 1)
            } else {
                replication
                    .get(&id)
                    .map_or(-1, |l| l.map_or(0, |l| l.index as i64 + 1))
            };
            ReplicaState {
                node_id: id as i32,
                addr: membership
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default(),
                log_end_offset,
            }
        };
        let voters: BTreeSet<RaftNodeId> = membership.voter_ids().collect();
        ControllerReply::Ok {
            metadata_offset: None,
            response: ControllerResponse::Quorum(QuorumInfo {
                cluster_id: self.cluster_id.clone(),
                leader_id: self.node_id,
                leader_epoch: m.current_term as i64,
                high_watermark: m.last_applied.map_or(0, |l| l.index as i64 + 1),
                voters: voters.iter().map(|id| state(*id)).collect(),
                observers: membership.learner_ids().map(state).collect(),
            }),
        }
    }

    async fn add_learner(&self, node_id: i32, addr: String) -> ControllerReply {
        let id = raft_id(node_id);
        let (known, is_voter) = {
            let m = self.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            (
                membership.get_node(&id).cloned(),
                membership.voter_ids().any(|v| v == id),
            )
        };
        if known.as_ref().is_some_and(|n| n.addr == addr) {
            return done(None);
        }
        // Re-adding a voter under another address would repoint the quorum's traffic for that
        // voter at whoever asked: a second process started with a voter's node id.
        if is_voter {
            return ControllerReply::Failed(ControllerError::new(
                ResponseError::DuplicateBrokerRegistration,
                format!(
                    "node {node_id} is a voter of the metadata quorum at {}; another node cannot join under its id",
                    known.map(|n| n.addr).unwrap_or_default()
                ),
            ));
        }
        // Likewise for an observer whose broker is still registered and unfenced: that is a
        // live node (or one dead for less than a session), not a restart on a new address.
        if let Some(old) = known {
            let live = self
                .image
                .read(|img, _| img.brokers.get(&node_id).is_some_and(|b| !b.fenced))
                .unwrap_or(false);
            if live {
                return ControllerReply::Failed(ControllerError::new(
                    ResponseError::DuplicateBrokerRegistration,
                    format!(
                        "node {node_id} follows the metadata log at {} and its broker is not fenced; another node cannot join under its id (a restarted node on a new address can join once its session has ended)",
                        old.addr
                    ),
                ));
            }
        }
        let added = tokio::time::timeout(
            MEMBERSHIP_TIMEOUT,
            one_change_at_a_time(|| {
                self.raft
                    .add_learner(id, ControllerNode { addr: addr.clone() }, false)
            }),
        )
        .await;
        match added {
            Ok(Ok(r)) => done(Some(r.log_id.index)),
            Ok(Err(e)) => self.write_failed(e),
            Err(_) => membership_timed_out(node_id, "was not added as an observer"),
        }
    }

    async fn add_voter(&self, node_id: i32, addr: String) -> ControllerReply {
        let id = raft_id(node_id);
        let is_voter = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id);
        if is_voter {
            return ControllerReply::Failed(ControllerError::new(
                ResponseError::DuplicateVoter,
                format!("node {node_id} is already a voter"),
            ));
        }
        // Catch it up as a learner first, so that it can vote from the moment it counts. Both
        // steps are bounded: an unreachable node must not hold this request forever.
        let caught_up = tokio::time::timeout(
            MEMBERSHIP_TIMEOUT,
            one_change_at_a_time(|| {
                self.raft
                    .add_learner(id, ControllerNode { addr: addr.clone() }, true)
            }),
        )
        .await;
        match caught_up {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return self.write_failed(e),
            Err(_) => return membership_timed_out(node_id, "did not catch up as an observer"),
        }
        let changed = tokio::time::timeout(
            MEMBERSHIP_TIMEOUT,
            one_change_at_a_time(|| {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            }),
        )
        .await;
        match changed {
            Ok(Ok(r)) => done(Some(r.log_id.index)),
            Ok(Err(e)) => self.write_failed(e),
            Err(_) => membership_timed_out(node_id, "was not made a voter"),
        }
    }

    async fn remove_voter(&self, node_id: i32) -> ControllerReply {
        let id = raft_id(node_id);
        let voters: BTreeSet<RaftNodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&id) {
            return ControllerReply::Failed(ControllerError::new(
                ResponseError::VoterNotFound,
                format!("node {node_id} is not a voter"),
            ));
        }
        if voters.len() == 1 {
            return ControllerReply::Failed(ControllerError::new(
                ResponseError::InvalidRequest,
                "the last voter cannot be removed",
            ));
        }
        // Retained as a learner: a combined node keeps following the metadata as a broker.
        let changed = tokio::time::timeout(
            MEMBERSHIP_TIMEOUT,
            one_change_at_a_time(|| {
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
            }),
        )
        .await;
        match changed {
            Ok(Ok(r)) => {
                if node_id == self.node_id {
                    self.resign();
                }
                done(Some(r.log_id.index))
            }
            Ok(Err(e)) => self.write_failed(e),
            Err(_) => membership_timed_out(node_id, "was not removed from the voters"),
        }
    }

    /// Hands leadership to the voters after this node removed itself from them. Raft lets a
    /// leader outside the voters go on leading (it stays a learner, to keep following the log
    /// as a broker); Kafka's removed controller resigns instead, and so does this one: with its
    /// heartbeats paused the voters' election timeout runs out, one of them wins the next term
    /// and this node follows it. Heartbeats resume once another leader is known, or after
    /// [`RESIGN_TIMEOUT`] in any case.
    fn resign(&self) {
        let raft = self.raft.clone();
        let me = raft_id(self.node_id);
        tokio::spawn(async move {
            raft.runtime_config().heartbeat(false);
            let mut metrics = raft.metrics();
            let moved = tokio::time::timeout(
                RESIGN_TIMEOUT,
                metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != me)),
            )
            .await;
            raft.runtime_config().heartbeat(true);
            match moved {
                Ok(Ok(_)) => {
                    tracing::info!("resigned as active controller after leaving the voters")
                }
                _ => tracing::warn!(
                    "still the leader {}s after leaving the voters",
                    RESIGN_TIMEOUT.as_secs()
                ),
            }
        });
    }

    fn write_failed(
        &self,
        e: RaftError<RaftNodeId, ClientWriteError<RaftNodeId, ControllerNode>>,
    ) -> ControllerReply {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ControllerReply::NotController {
                    leader: f
                        .leader_id
                        .zip(f.leader_node)
                        .map(|(id, n)| (id as i32, n.addr)),
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ControllerReply::Failed(ControllerError::new(
                    ResponseError::InvalidRequest,
                    e.to_string(),
                ))
            }
            RaftError::Fatal(f) => ControllerReply::Failed(ControllerError::new(
                ResponseError::UnknownServerError,
                format!("the metadata quorum stopped on this node: {f}"),
            )),
        }
    }

    /// Commits `records` as one entry; the offset it got.
    async fn write(&self, records: &[MetadataRecord]) -> Result<Option<u64>, ControllerReply> {
        if records.is_empty() {
            return Ok(None);
        }
        let payload = MetadataPayload(Bytes::from(encode_batch(records)));
        // Bounded: a leader cut off from its majority must not hold the controller loop (and
        // every request queued behind it, and shutdown) forever. The outcome is then unknown;
        // the caller rebuilds its state from the image, which is the committed truth.
        match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(payload)).await {
            Ok(Ok(r)) => Ok(Some(r.log_id.index)),
            Ok(Err(e)) => Err(self.write_failed(e)),
            Err(_) => Err(ControllerReply::Failed(ControllerError::new(
                ResponseError::RequestTimedOut,
                format!(
                    "not committed within {}s (is a majority of the quorum reachable?); the outcome is unknown",
                    COMMIT_TIMEOUT.as_secs()
                ),
            ))),
        }
    }
}

/// Runs a membership change, again while another one is still in progress: raft takes one at a
/// time, and nodes joining together (brokers started at once) ask for theirs concurrently. The
/// caller bounds the wait.
async fn one_change_at_a_time<T, Fut>(
    mut change: impl FnMut() -> Fut,
) -> Result<T, RaftError<RaftNodeId, ClientWriteError<RaftNodeId, ControllerNode>>>
where
    Fut: Future<
        Output = Result<T, RaftError<RaftNodeId, ClientWriteError<RaftNodeId, ControllerNode>>>,
    >,
{
    loop {
        match change().await {
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(_),
            ))) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => return other,
        }
    }
}

/// A voter change that did not finish in time; it may still complete.
fn membership_timed_out(node_id: i32, what: &str) -> ControllerReply {
    ControllerReply::Failed(ControllerError::new(
        ResponseError::RequestTimedOut,
        format!(
            "node {node_id} {what} within {}s; the change may still complete",
            MEMBERSHIP_TIMEOUT.as_secs()
        ),
    ))
}

fn done(metadata_offset: Option<u64>) -> ControllerReply {
    ControllerReply::Ok {
        metadata_offset,
        response: ControllerResponse::Done,
    }
}

/// Resolves once shutdown is asked for (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Broker-only nodes have no controller: whatever reaches their queue is refused.
async fn refuse_commands(mut rx: mpsc::Receiver<Command>) {
    while let Some(c) = rx.recv().await {
        let _ = c
            .reply
            .send(ControllerReply::NotController { leader: None });
    }
}

/// The active controller: waits for this node to lead, brings the image up to date with
/// everything earlier leaders committed, then serves requests and the session timer one at a
/// time until leadership is lost.
async fn run_active_controller(
    inner: Arc<Inner>,
    config: ControllerConfig,
    bootstrap_records: Vec<MetadataRecord>,
    mut rx: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let mut metrics = inner.raft.metrics();
    let mut bootstrap = Some(bootstrap_records);
    loop {
        // Followers refuse what reaches the queue (sent just before leadership moved).
        while !inner.is_leader() {
            tokio::select! {
                () = stopped(&mut stop) => return,
                changed = metrics.changed() => if changed.is_err() { return },
                Some(c) = rx.recv() => { let _ = c.reply.send(inner.not_controller()); }
            }
        }
        let term = metrics.borrow().current_term;
        // A no-op committed in this term: once applied, the image holds every entry any
        // earlier leader committed (Raft's rule that a leader only knows what is committed
        // after committing in its own term).
        if let Err(reply) = inner.write(&[MetadataRecord::NoOp]).await {
            tracing::info!(?reply, "could not commit as the new controller");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // The NoOp is applied, so the image holds everything committed before this term: no
        // feature level yet means no controller ever started this cluster.
        let started = inner
            .image
            .read(|img, _| img.features.contains_key(METADATA_VERSION_FEATURE))
            .unwrap_or(true);
        if !started && let Some(records) = bootstrap.take() {
            let mut first = Vec::with_capacity(records.len() + 1);
            first.push(MetadataRecord::FeatureLevel(FeatureLevelRecord {
                name: METADATA_VERSION_FEATURE.to_string(),
                feature_level: METADATA_VERSION,
            }));
            let imported = records.len();
            first.extend(records);
            match inner.write(&first).await {
                // Applied already: openraft answers a write once its entry is applied.
                Ok(offset) => tracing::info!(records = imported, ?offset, "metadata log started"),
                Err(reply) => {
                    tracing::info!(?reply, "could not start the metadata log");
                    bootstrap = Some(first.split_off(1));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let mut ctl = Controller::new(ControllerConfig {
            // Topic ids differ per term, so two terms never mint the same id.
            seed: config.seed ^ term.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ..config.clone()
        });
        if inner
            .image
            .read(|img, _| ctl.activate(img, now_ms()))
            .is_err()
        {
            return;
        }
        tracing::info!(
            node = inner.node_id,
            term,
            "this node is the active controller"
        );
        loop {
            let deadline = inner
                .image
                .read(|img, _| ctl.next_deadline_ms(img))
                .ok()
                .flatten();
            let sleep = match deadline {
                Some(at) => Duration::from_millis((at - now_ms()).max(0) as u64),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = stopped(&mut stop) => return,
                changed = metrics.changed() => {
                    if changed.is_err() { return }
                    let m = metrics.borrow().clone();
                    if m.current_term != term || !inner.is_leader() {
                        tracing::info!(node = inner.node_id, term, "no longer the active controller");
                        break;
                    }
                }
                () = tokio::time::sleep(sleep) => {
                    let records = match inner.image.read(|img, _| ctl.tick(img, now_ms())) {
                        Ok(r) => r,
                        Err(_) => return,
                    };
                    if inner.write(&records).await.is_err() {
                        break;
                    }
                }
                Some(c) = rx.recv() => {
                    let (reply, lost) = serve(&inner, &mut ctl, c.request).await;
                    let _ = c.reply.send(reply);
                    if lost {
                        break;
                    }
                }
            }
        }
    }
}

/// One request through the controller. Returns the reply and whether leadership was lost
/// while writing (the session state must then be rebuilt from the image).
async fn serve(
    inner: &Inner,
    ctl: &mut Controller,
    request: ControllerRequest,
) -> (ControllerReply, bool) {
    let now = now_ms();
    let decided = inner.image.read(|img, _| decide(ctl, img, &request, now));
    let (records, response) = match decided {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return (ControllerReply::Failed(e), false),
        Err(e) => {
            return (
                ControllerReply::Failed(ControllerError::new(
                    ResponseError::UnknownServerError,
                    e.to_string(),
                )),
                true,
            );
        }
    };
    match inner.write(&records).await {
        Ok(offset) => {
            let response = match (response, &request, offset) {
                (
                    ControllerResponse::Registered { .. },
                    ControllerRequest::RegisterBroker(r),
                    Some(o),
                ) => {
                    ctl.registration_committed(r.broker_id, o, now);
                    ControllerResponse::Registered {
                        broker_epoch: o as i64,
                    }
                }
                (response, _, _) => response,
            };
            (
                ControllerReply::Ok {
                    metadata_offset: offset,
                    response,
                },
                false,
            )
        }
        Err(reply) => (reply, true),
    }
}

type Decided = Result<(Vec<MetadataRecord>, ControllerResponse), ControllerError>;

fn decide(
    ctl: &mut Controller,
    img: &MetadataImage,
    request: &ControllerRequest,
    now: i64,
) -> Decided {
    Ok(match request {
        ControllerRequest::RegisterBroker(r) => {
            let d = ctl.register_broker(img, r.clone(), now)?;
            (
                d.records,
                ControllerResponse::Registered { broker_epoch: -1 },
            )
        }
        ControllerRequest::BrokerHeartbeat(r) => {
            let d = ctl.heartbeat(img, r, now)?;
            (d.records, ControllerResponse::Heartbeat(d.reply))
        }
        ControllerRequest::CreateTopics {
            topics,
            validate_only,
        } => {
            let d = ctl.create_topics(img, topics, *validate_only);
            (d.records, ControllerResponse::CreateTopics(d.reply))
        }
        ControllerRequest::DeleteTopics(topics) => {
            let d = ctl.delete_topics(img, topics);
            (d.records, ControllerResponse::DeleteTopics(d.reply))
        }
        ControllerRequest::CreatePartitions {
            topic,
            count,
            assignments,
            validate_only,
        } => {
            let d =
                ctl.create_partitions(img, topic, *count, assignments.as_deref(), *validate_only)?;
            (d.records, ControllerResponse::Done)
        }
        ControllerRequest::AlterConfigs(changes) => {
            let d = ctl.alter_configs(img, changes)?;
            (d.records, ControllerResponse::Done)
        }
        ControllerRequest::AllocateProducerIds {
            broker_id,
            broker_epoch,
        } => {
            let d = ctl.allocate_producer_ids(img, *broker_id, *broker_epoch)?;
            (d.records, ControllerResponse::ProducerIds(d.reply))
        }
        ControllerRequest::AlterPartition(r) => {
            let d = ctl.alter_partition(img, r)?;
            (d.records, ControllerResponse::AlterPartition(d.reply))
        }
        ControllerRequest::ElectLeaders {
            election,
            partitions,
        } => {
            let d = ctl.elect_leaders(img, *election, partitions.as_deref());
            (d.records, ControllerResponse::Partitions(d.reply))
        }
        ControllerRequest::AlterPartitionReassignments(topics) => {
            let d = ctl.alter_partition_reassignments(img, topics);
            (d.records, ControllerResponse::Partitions(d.reply))
        }
        ControllerRequest::DescribeQuorum
        | ControllerRequest::AddObserver { .. }
        | ControllerRequest::AddVoter { .. }
        | ControllerRequest::RemoveVoter { .. } => {
            return Err(ControllerError::new(
                ResponseError::InvalidRequest,
                "quorum requests are not controller decisions",
            ));
        }
    })
}

/// Reaches the active controller: in process when this node is it, else over the controller
/// listener of the leader this node knows of, else through the bootstrap servers; follows
/// NOT_CONTROLLER answers and retries through controller changes until the timeout.
pub struct ControllerClient {
    local: Option<Arc<Inner>>,
    transport: Arc<TcpTransport>,
    net_config: NetworkConfig,
    bootstrap: Vec<String>,
    hint: Mutex<Option<(i32, String)>>,
}

/// The transport settings of controller clients. Their connections carry nothing but
/// controller RPCs, some of which wait for a commit ([`COMMIT_TIMEOUT`]), so the peer may
/// rightly be silent for longer than on a raft connection, where heartbeats flow.
fn controller_rpc_tcp() -> TcpConfig {
    TcpConfig {
        read_timeout: COMMIT_TIMEOUT + Duration::from_secs(5),
        ..TcpConfig::default()
    }
}

/// Made-up transport keys for bootstrap addresses, far from real node ids.
const BOOTSTRAP_KEY_BASE: RaftNodeId = u64::MAX / 2;

impl ControllerClient {
    /// A client with no local node, for tools and for nodes that are joining: it knows the
    /// cluster id (or "" when it is to be learned) and the bootstrap servers.
    pub fn remote(cluster_id: String, node_id: i32, bootstrap: Vec<String>) -> Self {
        ControllerClient {
            local: None,
            transport: Arc::new(TcpTransport::new(controller_rpc_tcp())),
            net_config: NetworkConfig::new(cluster_id, raft_id(node_id)),
            bootstrap,
            hint: Mutex::new(None),
        }
    }

    /// Carries out `request` on the active controller. Returns the response and the metadata
    /// offset its records were committed at.
    pub async fn call(
        &self,
        request: ControllerRequest,
        timeout: Duration,
    ) -> Result<(Option<u64>, ControllerResponse), ControllerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let body = Bytes::from(encode_request(&request));
        let mut backoff = Duration::from_millis(20);
        let mut next_bootstrap = 0usize;
        let mut last_problem = String::from("no controller known");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ControllerError::new(
                    ResponseError::RequestTimedOut,
                    format!("no active controller answered within {timeout:?}: {last_problem}"),
                ));
            }
            let target = self.target(&mut next_bootstrap);
            let reply = match target {
                Some(Target::Local(inner)) => Ok(inner.submit(request.clone()).await),
                Some(Target::Remote { key, id, addr }) => {
                    let node = ControllerNode { addr };
                    let attempt = call_controller(
                        &*self.transport,
                        &self.net_config,
                        key,
                        id,
                        &node,
                        body.clone(),
                        left.min(Duration::from_secs(10)),
                    );
                    let moved = async {
                        match &self.local {
                            Some(local) if id != ANY_NODE => local.leader_moved_from(id).await,
                            _ => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        r = attempt => match r {
                            Ok(b) => decode_reply(&b).map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        },
                        () = moved => Err(format!("the controller moved away from node {id}")),
                    }
                }
                None => Err("no controller address known".to_string()),
            };
            match reply {
                Ok(ControllerReply::Ok {
                    metadata_offset,
                    response,
                }) => return Ok((metadata_offset, response)),
                Ok(ControllerReply::Failed(e)) => return Err(e),
                Ok(ControllerReply::NotController { leader }) => {
                    last_problem = format!("not the controller; leader {leader:?}");
                    self.set_hint(leader.filter(|(_, addr)| !addr.is_empty()));
                }
                Err(problem) => {
                    last_problem = problem;
                    self.set_hint(None);
                }
            }
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    fn set_hint(&self, hint: Option<(i32, String)>) {
        if let Ok(mut h) = self.hint.lock() {
            *h = hint;
        }
    }

    fn target(&self, next_bootstrap: &mut usize) -> Option<Target> {
        if let Some(local) = &self.local {
            if local.is_leader() {
                return Some(Target::Local(Arc::clone(local)));
            }
            if let Some((id, addr)) = local.leader_hint()
                && !addr.is_empty()
                && id != local.node_id
            {
                return Some(Target::Remote {
                    key: raft_id(id),
                    id: raft_id(id),
                    addr,
                });
            }
        }
        let hint = self.hint.lock().ok().and_then(|h| h.clone());
        if let Some((id, addr)) = hint {
            return Some(Target::Remote {
                key: raft_id(id),
                id: raft_id(id),
                addr,
            });
        }
        if self.bootstrap.is_empty() {
            return None;
        }
        let i = *next_bootstrap % self.bootstrap.len();
        *next_bootstrap += 1;
        Some(Target::Remote {
            key: BOOTSTRAP_KEY_BASE + i as u64,
            id: ANY_NODE,
            addr: self.bootstrap[i].clone(),
        })
    }
}

enum Target {
    Local(Arc<Inner>),
    Remote {
        key: RaftNodeId,
        id: RaftNodeId,
        addr: String,
    },
}
