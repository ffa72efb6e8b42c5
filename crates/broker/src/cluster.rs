//! The broker's side of the metadata quorum: it starts this node's quorum member (a voter on
//! controller nodes, a learner on broker-only ones), registers the broker with the active
//! controller and keeps its session alive with heartbeats (a controlled shutdown at the end),
//! carries every request that changes metadata to the active controller, and applies each
//! committed image to the replica manager. A request that changed metadata is answered only
//! once this node has applied the change, so what the client asks next already sees it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;
use vltava_controller::controller::{
    AlterPartitionData, AlterPartitionRequest, AlterPartitionTopic, AlteredPartition,
    BrokerHeartbeatRequest, BrokerRegistrationRequest, ConfigChange, ControllerConfig,
    ControllerError, CreateTopicRequest, CreatedTopic, ElectionType, HeartbeatReply, IsrMember,
    LEADER_RECOVERED, OngoingReassignment, PartitionResults, ReassignPartition, TopicRef,
    list_reassignments,
};
use vltava_controller::image::MetadataImage;
use vltava_controller::node::{ControllerClient, NodeConfig, QuorumNode, QuorumTiming};
use vltava_controller::raft::state_machine::StateReader;
use vltava_controller::records::{
    BrokerEndpoint, ConfigRecord, MetadataRecord, NO_LEADER, PartitionRecord, ProducerIdsRecord,
    TopicRecord, config_resource,
};
use vltava_controller::rpc::{ControllerRequest, ControllerResponse};

use crate::config::BrokerConfig;
use crate::meta::{Catalogue, NodeMeta};
use crate::replica::replication::ProposalResult;
use crate::replica::{INTERNAL_TOPICS, IsrChange, ReplicaManager, Topic, TopicError};

/// Longest a metadata change waits for the active controller and for its local application.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the broker waits at start to be registered and unfenced.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a controlled shutdown waits for the controller to move leaderships away.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than a session a registration refused as a duplicate is retried.
const DUPLICATE_REGISTRATION_MARGIN: Duration = Duration::from_secs(3);
/// The catalogue of the single-node release, renamed once migrated into the metadata log.
const CATALOGUE_FILE: &str = "vltava-topics.json";
const MIGRATED_SUFFIX: &str = ".migrated";

/// Why the broker could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The quorum member could not start.
    #[error("{0}")]
    Node(#[from] vltava_controller::node::NodeError),
    /// The controller refused or did not answer.
    #[error("{0}")]
    Controller(#[from] ControllerError),
    /// The single-node catalogue could not be read or renamed.
    #[error("migrating {CATALOGUE_FILE}: {0}")]
    Migration(String),
    /// The committed metadata could not be applied to the logs.
    #[error("{0}")]
    Apply(#[from] TopicError),
    /// `meta.properties` could not be read or written.
    #[error("{0}")]
    Meta(#[from] crate::meta::MetaError),
    /// The data directory, the setting and the quorum disagree on the cluster.
    #[error("{0}")]
    ClusterIdMismatch(String),
}

/// How long a joining node waits for a controller to tell it the cluster id.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// This node's identity: `meta.properties` when the data directory has one, else a new one
/// whose cluster id is `cluster.id` when set, else the one every voter derives from
/// `controller.quorum.voters`, else the one a controller reached through
/// `controller.quorum.bootstrap.servers` reports, else (a lone node) a random one. A data
/// directory of another cluster than `cluster.id` names is refused, never reused.
pub async fn resolve_node_meta(config: &BrokerConfig) -> Result<NodeMeta, ClusterError> {
    let dir = config.data_dir();
    let node_id = config.node_id();
    let wanted = config.cluster_id();
    if let Some(meta) = crate::meta::load_meta(&dir, node_id)? {
        if let Some(w) = wanted.filter(|w| *w != meta.cluster_id) {
            return Err(ClusterError::ClusterIdMismatch(format!(
                "data directory {} belongs to cluster {}, not cluster.id {w}",
                dir.display(),
                meta.cluster_id
            )));
        }
        return Ok(meta);
    }
    let voters = config.quorum_voters();
    let bootstrap = config.quorum_bootstrap_servers();
    let cluster_id = match wanted {
        Some(w) => w.to_string(),
        None if !voters.is_empty() => crate::meta::derived_cluster_id(&voters),
        None if !bootstrap.is_empty() => {
            let client = ControllerClient::remote(String::new(), node_id, bootstrap);
            match client
                .call(ControllerRequest::DescribeQuorum, DISCOVERY_TIMEOUT)
                .await?
            {
                (_, ControllerResponse::Quorum(q)) => q.cluster_id,
                (_, other) => {
                    return Err(ClusterError::Config(format!(
                        "unexpected answer to DescribeQuorum: {other:?}"
                    )));
                }
            }
        }
        None => crate::meta::random_cluster_id(),
    };
    Ok(crate::meta::create_meta(&dir, node_id, &cluster_id)?)
}

/// This node's membership of the cluster.
pub struct Cluster {
    node: Mutex<Option<QuorumNode>>,
    image: StateReader<MetadataImage>,
    applied: watch::Receiver<Option<u64>>,
    client: ControllerClient,
    rm: Arc<ReplicaManager>,
    node_id: i32,
    cluster_id: String,
    incarnation_id: Uuid,
    broker_epoch: AtomicI64,
    /// Whether the controller's last heartbeat answer said this broker is fenced (readiness).
    fenced: AtomicBool,
    listeners: Vec<BrokerEndpoint>,
    rack: Option<String>,
    heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`: how long a previous incarnation may still look alive.
    session_timeout: Duration,
    producer_ids: Mutex<(i64, i64)>,
    /// Set when the broker begins to stop: requests waiting on the controller give up, so
    /// no handler outlives the runtime.
    stopping: watch::Sender<bool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("broker_epoch", &self.broker_epoch.load(Ordering::Relaxed))
            .finish()
    }
}

/// The metadata records of a single-node release's catalogue: its topics with their ids,
/// partitions (this node the only replica, offline until it registers), configs, and the
/// producer-id high-water mark.
fn migration_records(catalogue: &Catalogue, node_id: i32) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for t in catalogue.topics() {
        records.push(MetadataRecord::Topic(TopicRecord {
            name: t.name.clone(),
            topic_id: t.id,
        }));
        for p in 0..t.partitions {
            records.push(MetadataRecord::Partition(PartitionRecord {
                topic_id: t.id,
                partition_id: p,
                replicas: vec![node_id],
                isr: vec![node_id],
                leader: NO_LEADER,
                leader_epoch: 0,
                partition_epoch: 0,
                ..PartitionRecord::default()
            }));
        }
        for (name, value) in &t.configs {
            records.push(MetadataRecord::Config(ConfigRecord {
                resource_type: config_resource::TOPIC,
                resource_name: t.name.clone(),
                name: name.clone(),
                value: Some(value.clone()),
            }));
        }
    }
    if catalogue.next_producer_id() > 0 {
        records.push(MetadataRecord::ProducerIds(ProducerIdsRecord {
            broker_id: node_id,
            broker_epoch: -1,
            next_producer_id: catalogue.next_producer_id(),
        }));
    }
    records
}

/// The quorum member's settings for this node: `voters` as resolved by the caller,
/// `local_broker` the broker id sharing this process (combined nodes) or `None`.
fn quorum_config(
    config: &BrokerConfig,
    meta: &NodeMeta,
    voters: std::collections::BTreeMap<i32, String>,
    bootstrap_records: Vec<MetadataRecord>,
    local_broker: Option<i32>,
) -> NodeConfig {
    let node_id = meta.node_id;
    let controller_addr = config.controller_listen().unwrap_or("").to_string();
    let election = config.election_timeout_ms();
    NodeConfig {
        node_id,
        data_dir: config.data_dir(),
        cluster_id: meta.cluster_id.clone(),
        controller_role: config.is_controller(),
        voters,
        bootstrap_servers: config.quorum_bootstrap_servers(),
        advertised_addr: controller_addr,
        controller: ControllerConfig {
            session_timeout_ms: config.broker_session_timeout_ms(),
            default_num_partitions: config.num_partitions(),
            default_replication_factor: config.default_replication_factor(),
            max_replication_factor: None,
            unclean_leader_election_enable: config
                .get("unclean.leader.election.enable")
                .is_some_and(|v| v == "true"),
            leader_imbalance_check_interval_ms: config.leader_imbalance_check_interval_ms(),
            seed: rand::random(),
            local_broker_id: local_broker,
        },
        timing: QuorumTiming {
            heartbeat_interval_ms: (election / 6).max(5),
            election_timeout_min_ms: election,
            election_timeout_max_ms: election * 2,
        },
        bootstrap_records,
    }
}

/// A controller-only node (`process.roles=controller`): a member of the metadata quorum with its
/// controller listener, and no client listener, broker registration or partitions.
pub struct ControllerNode {
    node: Option<QuorumNode>,
    _lock: vltava_storage::FileLock,
    /// The bound controller listener.
    pub controller_addr: std::net::SocketAddr,
}

impl std::fmt::Debug for ControllerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerNode")
            .field("controller_addr", &self.controller_addr)
            .finish()
    }
}

impl ControllerNode {
    /// Takes the data directory, resolves the cluster id and starts the quorum member. It
    /// needs `controller.listen`, and `controller.quorum.voters` (or
    /// `controller.quorum.bootstrap.servers` to join a running quorum as an observer, to be
    /// made a voter with AddRaftVoter).
    pub async fn start(config: &BrokerConfig) -> Result<ControllerNode, ClusterError> {
        let Some(listen) = config.controller_listen() else {
            return Err(ClusterError::Config(
                "process.roles=controller needs controller.listen (--controller-listen HOST:PORT)"
                    .into(),
            ));
        };
        let voters = config.quorum_voters();
        if voters.is_empty() && config.quorum_bootstrap_servers().is_empty() {
            return Err(ClusterError::Config(
                "process.roles=controller needs controller.quorum.voters or controller.quorum.bootstrap.servers".into(),
            ));
        }
        let dir = config.data_dir();
        let fs = vltava_storage::RealFs::shared();
        fs.create_dir_all(&dir)
            .map_err(|e| ClusterError::Config(format!("data directory {}: {e}", dir.display())))?;
        let lock = fs
            .try_lock(&dir.join(".lock"))
            .map_err(|e| ClusterError::Config(format!("data directory {}: {e}", dir.display())))?
            .ok_or_else(|| {
                ClusterError::Config(format!(
                    "data directory {} is in use by another process",
                    dir.display()
                ))
            })?;
        let meta = resolve_node_meta(config).await?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| ClusterError::Config(format!("cannot listen on {listen}: {e}")))?;
        let controller_addr = listener
            .local_addr()
            .map_err(|e| ClusterError::Config(format!("cannot listen on {listen}: {e}")))?;
        let node = QuorumNode::start(
            quorum_config(config, &meta, voters, Vec::new(), None),
            Some(listener),
        )
        .await?;
        crate::disk::halt_when_metadata_log_fails(node.failed());
        tracing::info!(
            node_id = meta.node_id,
            cluster_id = %meta.cluster_id,
            controller_listen = %controller_addr,
            data_dir = %dir.display(),
            "vltava controller started"
        );
        Ok(ControllerNode {
            node: Some(node),
            _lock: lock,
            controller_addr,
        })
    }

    /// Stops the quorum member.
    pub async fn shutdown(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        tracing::info!("vltava controller stopped");
    }
}

impl Cluster {
    /// Starts this node's quorum member and, as a broker, registers and waits to be unfenced,
    /// with every committed topic applied to `rm`. Zero configuration is a lone voter without
    /// a controller listener. A single-node release's catalogue is migrated into a new
    /// metadata log.
    pub async fn start(
        config: &BrokerConfig,
        meta: &NodeMeta,
        rm: Arc<ReplicaManager>,
        advertised: (String, u16),
        controller_listener: Option<TcpListener>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let dir = config.data_dir();
        let node_id = meta.node_id;
        let mut voters = config.quorum_voters();
        let controller_addr = config.controller_listen().unwrap_or("").to_string();
        if voters.is_empty() && config.quorum_bootstrap_servers().is_empty() {
            voters.insert(node_id, controller_addr.clone());
        }
        let lone = voters.len() == 1 && voters.contains_key(&node_id);
        let catalogue_path = dir.join(CATALOGUE_FILE);
        let catalogue = if lone && catalogue_path.exists() {
            Some(Catalogue::load(&dir).map_err(|e| ClusterError::Migration(e.to_string()))?)
        } else {
            None
        };
        let bootstrap_records = catalogue
            .as_ref()
            .map(|c| migration_records(c, node_id))
            .unwrap_or_default();
        let node_config = quorum_config(config, meta, voters, bootstrap_records, Some(node_id));
        let node = QuorumNode::start(node_config, controller_listener).await?;
        crate::disk::halt_when_metadata_log_fails(node.failed());
        let client = node.client(config.quorum_bootstrap_servers());
        let (host, port) = advertised;
        let cluster = Arc::new(Cluster {
            image: node.image(),
            applied: node.applied(),
            node: Mutex::new(Some(node)),
            client,
            rm,
            node_id,
            cluster_id: meta.cluster_id.clone(),
            incarnation_id: Uuid::new_v4(),
            broker_epoch: AtomicI64::new(-1),
            fenced: AtomicBool::new(true),
            listeners: vec![BrokerEndpoint {
                name: "PLAINTEXT".into(),
                host,
                port,
                security_protocol: 0,
            }],
            rack: config.rack().map(str::to_string),
            heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms()),
            session_timeout: Duration::from_millis(config.broker_session_timeout_ms().max(0) as u64),
            producer_ids: Mutex::new((0, 0)),
            stopping: watch::Sender::new(false),
        });
        tokio::time::timeout(STARTUP_TIMEOUT, cluster.join())
            .await
            .map_err(|_| {
                ControllerError::new(
                    ResponseError::RequestTimedOut,
                    format!(
                        "not registered and unfenced within {}s (is a majority of the controller quorum up?)",
                        STARTUP_TIMEOUT.as_secs()
                    ),
                )
            })??;
        if catalogue.is_some() {
            let to = dir.join(format!("{CATALOGUE_FILE}{MIGRATED_SUFFIX}"));
            std::fs::rename(&catalogue_path, &to)
                .map_err(|e| ClusterError::Migration(e.to_string()))?;
            tracing::info!(
                topics = cluster.rm.all_topics().len(),
                "single-node catalogue migrated into the metadata log"
            );
        }
        Ok(cluster)
    }

    /// Registers this incarnation and heartbeats until the controller unfences it.
    async fn join(&self) -> Result<(), ClusterError> {
        // A new controller gives every registered broker a fresh session, so after a restart of
        // the whole cluster this node's previous incarnation may look alive for up to
        // broker.session.timeout.ms: retry until it runs out (the caller bounds the wait), as
        // Kafka's brokers do after DUPLICATE_BROKER_REGISTRATION.
        // One that is still refused after a whole session is really alive: then this node
        // refuses to start.
        let mut refused_since = None;
        loop {
            match self.register().await {
                Ok(()) => break,
                Err(e) if e.error == ResponseError::DuplicateBrokerRegistration => {
                    let since = *refused_since.get_or_insert_with(|| {
                        tracing::info!(error = %e, "waiting for the previous incarnation's session to end");
                        tokio::time::Instant::now()
                    });
                    if since.elapsed() > self.session_timeout + DUPLICATE_REGISTRATION_MARGIN {
                        return Err(e.into());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            let reply = self.heartbeat(false, CALL_TIMEOUT).await?;
            self.fenced.store(reply.is_fenced, Ordering::Release);
            if !reply.is_fenced {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.publish().await?;
        Ok(())
    }

    async fn register(&self) -> Result<(), ControllerError> {
        let request = ControllerRequest::RegisterBroker(BrokerRegistrationRequest {
            broker_id: self.node_id,
            incarnation_id: self.incarnation_id,
            listeners: self.listeners.clone(),
            rack: self.rack.clone(),
        });
        match self.call(request).await? {
            ControllerResponse::Registered { broker_epoch } => {
                self.broker_epoch.store(broker_epoch, Ordering::Release);
                tracing::info!(broker = self.node_id, broker_epoch, "broker registered");
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn heartbeat(
        &self,
        want_shutdown: bool,
        timeout: Duration,
    ) -> Result<HeartbeatReply, ControllerError> {
        let applied = (*self.applied.borrow()).map_or(-1, |o| o as i64);
        let request = ControllerRequest::BrokerHeartbeat(BrokerHeartbeatRequest {
            broker_id: self.node_id,
            broker_epoch: self.broker_epoch.load(Ordering::Acquire),
            current_metadata_offset: applied,
            want_fence: false,
            want_shutdown,
        });
        match self.call_within(request, timeout).await? {
            ControllerResponse::Heartbeat(reply) => Ok(reply),
            other => Err(unexpected(&other)),
        }
    }

    /// Keeps the session alive until `shutdown`; registers anew when the controller no
    /// longer knows this registration (it was fenced and replaced, or the log was reset).
    pub async fn run_heartbeats(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let timeout = (self.heartbeat_interval * 2).min(Duration::from_secs(5));
            let answer = self.heartbeat(false, timeout).await;
            if let Ok(reply) = &answer {
                self.fenced.store(reply.is_fenced, Ordering::Release);
            }
            match answer {
                Ok(reply) if reply.is_fenced && reply.is_caught_up => {
                    tracing::info!("fenced by the controller; heartbeating to be unfenced");
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.error,
                        ResponseError::StaleBrokerEpoch | ResponseError::BrokerIdNotRegistered
                    ) =>
                {
                    tracing::warn!(error = %e, "registration lost; registering again");
                    if let Err(e) = self.register().await {
                        tracing::warn!(error = %e, "registration failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Applies every newly committed image to the replica manager until `shutdown`.
    pub async fn run_publisher(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut applied = self.applied.clone();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = applied.changed() => if changed.is_err() { return },
            }
            if let Err(e) = self.publish().await {
                tracing::error!(error = %e, "applying committed metadata failed");
            }
        }
    }

    /// Applies the newest committed image to the replica manager (off the runtime's workers:
    /// it creates and deletes log directories).
    pub async fn publish(&self) -> Result<(), TopicError> {
        let image = self
            .image
            .read(|img, _| img.clone())
            .map_err(|e| TopicError::InvalidConfig(format!("metadata image: {e}")))?;
        let rm = Arc::clone(&self.rm);
        tokio::task::spawn_blocking(move || rm.apply_image(&image))
            .await
            .unwrap_or(Ok(()))
    }

    /// Asks the controller to move this broker's leaderships away, then stops the quorum
    /// member.
    pub async fn shutdown(&self) {
        let deadline = tokio::time::Instant::now() + CONTROLLED_SHUTDOWN_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::warn!("controlled shutdown did not complete in time");
                break;
            }
            match self.heartbeat(true, left).await {
                Ok(reply) if reply.should_shutdown => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50).min(left)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "controlled shutdown failed");
                    break;
                }
            }
        }
        let node = self.node.lock().ok().and_then(|mut n| n.take());
        if let Some(node) = node {
            node.shutdown().await;
        }
    }

    /// The committed metadata, read under a short lock.
    pub fn with_image<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> Option<R> {
        self.image.read(|img, _| f(img)).ok()
    }

    /// The active controller's id, as far as this node knows.
    pub fn controller_id(&self) -> Option<i32> {
        self.node
            .lock()
            .ok()
            .and_then(|n| n.as_ref().and_then(QuorumNode::leader_id))
    }

    /// This incarnation's broker epoch (the offset of its registration), -1 before it
    /// registered.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// This node's id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Whether the controller's last answer to this broker's heartbeat said it is fenced.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Carries out `request` on the active controller and waits until this node has applied
    /// what it committed.
    pub async fn call(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        self.call_within(request, CALL_TIMEOUT).await
    }

    /// [`Cluster::call`] with its own timeout (voter changes wait for a learner to catch up).
    pub async fn call_within(
        &self,
        request: ControllerRequest,
        timeout: Duration,
    ) -> Result<ControllerResponse, ControllerError> {
        let (offset, response) = self.client.call(request, timeout).await?;
        if let Some(offset) = offset {
            let mut rx = self.applied.clone();
            // The guard wait_for returns must not live across the awaits below.
            let reached =
                tokio::time::timeout(timeout, rx.wait_for(|a| a.is_some_and(|a| a >= offset)))
                    .await
                    .is_ok_and(|r| r.is_ok());
            if !reached {
                return Err(ControllerError::new(
                    ResponseError::RequestTimedOut,
                    "the change is committed but this broker has not applied it yet",
                ));
            }
            self.publish().await.map_err(|e| {
                ControllerError::new(ResponseError::KafkaStorageError, e.to_string())
            })?;
        }
        Ok(response)
    }

    /// [`Cluster::call`] from a blocking-pool thread (the handlers that run off the workers).
    fn call_blocking(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        let mut stopping = self.stopping.subscribe();
        tokio::runtime::Handle::current().block_on(async {
            tokio::select! {
                r = self.call(request) => r,
                _ = stopping.wait_for(|s| *s) => Err(ControllerError::new(
                    ResponseError::NotController,
                    "this broker is shutting down",
                )),
            }
        })
    }

    /// Makes requests still waiting on the controller give up (the broker is stopping).
    pub fn stop_requests(&self) {
        self.stopping.send_replace(true);
    }

    /// CreateTopics of one topic, carried out by the active controller. `configs` are checked
    /// here, against this build's settings, before the controller sees them.
    pub fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        assignments: BTreeMap<i32, Vec<i32>>,
        validate_only: bool,
    ) -> Result<CreatedTopic, TopicError> {
        for (k, v) in &configs {
            crate::config::validate_topic_setting(k, v)
                .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
        }
        self.create_topic_unchecked(
            name,
            num_partitions,
            replication_factor,
            configs,
            assignments,
            validate_only,
        )
    }

    fn create_topic_unchecked(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        assignments: BTreeMap<i32, Vec<i32>>,
        validate_only: bool,
    ) -> Result<CreatedTopic, TopicError> {
        let request = ControllerRequest::CreateTopics {
            topics: vec![CreateTopicRequest {
                name: name.to_string(),
                num_partitions,
                replication_factor,
                assignments,
                configs: configs.into_iter().collect(),
            }],
            validate_only,
        };
        match self.call_blocking(request)? {
            ControllerResponse::CreateTopics(mut results) if results.len() == 1 => {
                Ok(results.remove(0).1?)
            }
            other => Err(unexpected(&other).into()),
        }
    }

    /// Creates a topic on first use if the broker allows it.
    pub fn auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>, TopicError> {
        if let Some(t) = self.rm.topic(name) {
            return Ok(Some(t));
        }
        if !self.rm.config().auto_create_topics() {
            return Ok(None);
        }
        match self.create_topic(name, -1, -1, BTreeMap::new(), BTreeMap::new(), false) {
            Ok(_) => Ok(self.rm.topic(name)),
            Err(TopicError::Controller(e)) if e.error == ResponseError::TopicAlreadyExists => {
                Ok(self.rm.topic(name))
            }
            Err(e) => Err(e),
        }
    }

    /// Creates one of the broker's internal topics if it does not exist yet. Its settings are
    /// the broker's choice, so they skip the validation applied to clients' settings.
    pub fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.rm.topic(name) {
            return Ok(t);
        }
        match self.create_topic_unchecked(
            name,
            partitions,
            replication_factor,
            configs,
            BTreeMap::new(),
            false,
        ) {
            Ok(_) => {}
            Err(TopicError::Controller(e)) if e.error == ResponseError::TopicAlreadyExists => {
                // Another node created it; this node may not have applied that record yet.
                let handle = tokio::runtime::Handle::current();
                return handle.block_on(self.wait_for_topic(name, CALL_TIMEOUT));
            }
            Err(e) => return Err(e),
        }
        self.rm
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))
    }

    /// Creates `__consumer_offsets` if it does not exist, replicated
    /// `offsets.topic.replication.factor` times, or on as many brokers as there are when fewer
    /// are registered and unfenced. At start (`at_start`) it waits for the cluster instead: it
    /// creates the topic only once as many brokers as the configured voters are there (a lone
    /// node: itself), so that a cluster starting node by node does not get an offsets topic
    /// on one broker; otherwise the first FindCoordinator creates it, as in Kafka. `None` when
    /// it was left for later.
    pub fn ensure_offsets_topic(&self, at_start: bool) -> Result<Option<Arc<Topic>>, TopicError> {
        if let Some(t) = self.rm.topic(crate::offsets::OFFSETS_TOPIC) {
            return Ok(Some(t));
        }
        let config = self.rm.config();
        let configured = usize::try_from(config.offsets_topic_replication_factor()).unwrap_or(1);
        let usable = self
            .with_image(|img| img.brokers.values().filter(|b| b.is_usable()).count())
            .unwrap_or(0);
        let expected = config.quorum_voters().len().max(1);
        if usable == 0 || (at_start && usable < configured.min(expected)) {
            tracing::info!(
                usable_brokers = usable,
                "{} left for the first FindCoordinator to create",
                crate::offsets::OFFSETS_TOPIC
            );
            return Ok(None);
        }
        let replication_factor = i16::try_from(configured.min(usable)).unwrap_or(1);
        self.ensure_internal_topic(
            crate::offsets::OFFSETS_TOPIC,
            config.offsets_topic_partitions(),
            replication_factor,
            crate::groups::GroupManager::offsets_topic_configs(),
        )
        .map(Some)
    }

    /// Waits until a committed topic is applied here (its record may still be on its way).
    async fn wait_for_topic(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Arc<Topic>, TopicError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.applied.clone();
        loop {
            self.publish().await?;
            if let Some(t) = self.rm.topic(name) {
                return Ok(t);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(TopicError::Unknown(name.to_string()));
            }
            // A closed channel means the node stopped; the deadline still bounds the loop.
            if !matches!(tokio::time::timeout(left, rx.changed()).await, Ok(Ok(()))) {
                tokio::time::sleep(Duration::from_millis(20).min(left)).await;
            }
        }
    }

    /// DeleteTopics of one topic.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        if !self.rm.config().delete_topic_enable() {
            return Err(TopicError::NotAllowed(
                "topic deletion is disabled (delete.topic.enable=false)".into(),
            ));
        }
        if INTERNAL_TOPICS.contains(&name) {
            return Err(TopicError::Internal(name.to_string()));
        }
        match self.call_blocking(ControllerRequest::DeleteTopics(vec![TopicRef::Name(
            name.to_string(),
        )]))? {
            ControllerResponse::DeleteTopics(mut results) if results.len() == 1 => {
                Ok(results.remove(0).1?.1)
            }
            other => Err(unexpected(&other).into()),
        }
    }

    /// CreatePartitions of one topic.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        self.call_blocking(ControllerRequest::CreatePartitions {
            topic: name.to_string(),
            count,
            assignments,
            validate_only,
        })?;
        Ok(())
    }

    /// ElectLeaders, carried out by the active controller.
    pub fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<PartitionResults, ControllerError> {
        match self.call_blocking(ControllerRequest::ElectLeaders {
            election,
            partitions,
        })? {
            ControllerResponse::Partitions(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    /// AlterPartitionReassignments, carried out by the active controller.
    pub fn alter_partition_reassignments(
        &self,
        topics: Vec<(String, Vec<ReassignPartition>)>,
    ) -> Result<PartitionResults, ControllerError> {
        match self.call_blocking(ControllerRequest::AlterPartitionReassignments(topics))? {
            ControllerResponse::Partitions(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    /// ListPartitionReassignments, from the metadata this node has applied.
    pub fn list_partition_reassignments(
        &self,
        filter: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, Vec<OngoingReassignment>)> {
        self.with_image(|image| list_reassignments(image, filter))
            .unwrap_or_default()
    }

    /// Replaces (or, with `incremental`, merges into) a topic's config overrides.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
        incremental: bool,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let topic = self
            .rm
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut wanted = if incremental {
            topic.configs.clone()
        } else {
            BTreeMap::new()
        };
        for (k, v) in changes {
            match v {
                Some(v) => {
                    crate::config::validate_topic_setting(k, v)
                        .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
                    wanted.insert(k.clone(), v.clone());
                }
                None => {
                    if !crate::config::topic_setting_names().any(|n| n == k) {
                        return Err(TopicError::InvalidConfig(format!("unknown setting '{k}'")));
                    }
                    wanted.remove(k);
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let change = |key: &str, value: Option<String>| ConfigChange {
            resource_type: config_resource::TOPIC,
            resource_name: name.to_string(),
            name: key.to_string(),
            value,
        };
        let mut diff: Vec<ConfigChange> = topic
            .configs
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .map(|k| change(k, None))
            .collect();
        diff.extend(
            wanted
                .iter()
                .filter(|(k, v)| topic.configs.get(*k) != Some(*v))
                .map(|(k, v)| change(k, Some(v.clone()))),
        );
        if diff.is_empty() {
            return Ok(());
        }
        self.call_blocking(ControllerRequest::AlterConfigs(diff))?;
        Ok(())
    }

    /// A fresh producer id, from a block the controller handed this broker (a new block when
    /// one runs out: blocks never overlap, also across controller failover).
    pub fn next_producer_id(&self) -> Result<i64, TopicError> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            let request = ControllerRequest::AllocateProducerIds {
                broker_id: self.node_id,
                broker_epoch: self.broker_epoch.load(Ordering::Acquire),
            };
            match self.call_blocking(request)? {
                ControllerResponse::ProducerIds(block) => {
                    *ids = (block.first, block.first + block.size)
                }
                other => return Err(unexpected(&other).into()),
            }
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }
}

fn unexpected(response: &ControllerResponse) -> ControllerError {
    ControllerError::new(
        ResponseError::UnknownServerError,
        format!("unexpected controller answer: {response:?}"),
    )
}

/// How often the leaders here check their followers' lag (Kafka checks every half of
/// `replica.lag.time.max.ms`; this is finer, so a laggard leaves close to its deadline).
const REPLICATION_TICK: Duration = Duration::from_millis(250);
/// The most ISR changes sent in one AlterPartition.
const ALTER_PARTITION_BATCH: usize = 1000;

impl Cluster {
    /// Carries the ISR changes this node's leaders propose to the active controller
    /// (AlterPartition), in batches, one request at a time, and feeds each answer back; runs
    /// the leaders' periodic lag checks. Until `shutdown`.
    pub async fn run_isr_changes(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(mut rx) = self.rm.take_isr_changes() else {
            return;
        };
        let mut tick = tokio::time::interval(REPLICATION_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    self.rm.replication_tick();
                    continue;
                }
                change = rx.recv() => match change {
                    Some(c) => c,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < ALTER_PARTITION_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = self.alter_partition(batch) => {}
            }
        }
    }

    /// One AlterPartition with `changes`; every change gets its answer.
    async fn alter_partition(&self, changes: Vec<IsrChange>) {
        let mut topics: Vec<AlterPartitionTopic> = Vec::new();
        for c in &changes {
            let data = AlterPartitionData {
                partition_index: c.partition.index,
                leader_epoch: c.proposal.leader_epoch,
                new_isr_with_epochs: c
                    .proposal
                    .new_isr
                    .iter()
                    .map(|&(broker_id, epoch)| IsrMember {
                        broker_id,
                        // The leader's own entry: this incarnation's epoch.
                        broker_epoch: if broker_id == self.node_id {
                            self.broker_epoch()
                        } else {
                            epoch
                        },
                    })
                    .collect(),
                leader_recovery_state: LEADER_RECOVERED,
                partition_epoch: c.proposal.partition_epoch,
            };
            match topics
                .iter_mut()
                .find(|t| t.topic_id == c.partition.topic_id)
            {
                Some(t) => t.partitions.push(data),
                None => topics.push(AlterPartitionTopic {
                    topic_id: c.partition.topic_id,
                    partitions: vec![data],
                }),
            }
        }
        let request = ControllerRequest::AlterPartition(AlterPartitionRequest {
            broker_id: self.node_id,
            broker_epoch: self.broker_epoch(),
            topics,
        });
        // `call` returns once this node applied the committed ISR, so the leader state has
        // seen the new partition epoch before it hears the answer.
        let reply = match self.call(request).await {
            Ok(ControllerResponse::AlterPartition(reply)) => reply,
            Ok(other) => {
                let e = unexpected(&other);
                tracing::warn!(error = %e, "AlterPartition failed");
                return answer_all(&changes, ProposalResult::RetryLater);
            }
            Err(e) => {
                tracing::warn!(error = %e, "AlterPartition failed");
                return answer_all(&changes, ProposalResult::for_error_code(e.code()));
            }
        };
        let mut results: BTreeMap<(Uuid, i32), Result<AlteredPartition, ControllerError>> =
            BTreeMap::new();
        for t in reply {
            for (index, r) in t.partitions {
                results.entry((t.topic_id, index)).or_insert(r);
            }
        }
        for c in changes {
            let result = match results.remove(&(c.partition.topic_id, c.partition.index)) {
                Some(Ok(p)) => {
                    tracing::info!(
                        topic = %c.partition.topic,
                        partition = c.partition.index,
                        isr = ?p.isr,
                        partition_epoch = p.partition_epoch,
                        "ISR changed"
                    );
                    ProposalResult::Committed {
                        isr: p.isr,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                    }
                }
                Some(Err(e)) => {
                    tracing::info!(
                        topic = %c.partition.topic,
                        partition = c.partition.index,
                        error = %e,
                        "ISR change refused"
                    );
                    ProposalResult::for_error_code(e.code())
                }
                None => ProposalResult::RetryLater,
            };
            c.partition.on_isr_change_result(c.proposal.id, result);
        }
    }
}

fn answer_all(changes: &[IsrChange], result: ProposalResult) {
    for c in changes {
        c.partition
            .on_isr_change_result(c.proposal.id, result.clone());
    }
}
