//! The consumer: [`Consumer::assign`] partitions or [`Consumer::subscribe`] to topics (or
//! [`Consumer::subscribe_pattern`] to the topics a regex matches, [`pattern`]) as a member of
//! a consumer group, then [`Consumer::poll`] for records.
//!
//! Structure (the Java client's):
//! - **Fetcher** (`fetcher.rs`): a background task per leader broker sends Fetch requests
//!   (`fetch.min.bytes`, `fetch.max.wait.ms`, `max.partition.fetch.bytes`, `fetch.max.bytes`)
//!   and decodes the batches ([`record`]); `poll` hands out at most `max.poll.records` and
//!   sends the next fetches before returning, so they travel while the application works.
//! - **Group membership** (`group.rs`): JoinGroup (with MEMBER_ID_REQUIRED), SyncGroup where
//!   the leader runs the assignor ([`assignor`]: `range`, `roundrobin`, `cooperative-sticky`,
//!   in the standard ConsumerProtocol format so the group can mix clients), heartbeats from a
//!   background task every `heartbeat.interval.ms` (they keep the session while a rebalance
//!   waits for the next `poll`), `max.poll.interval.ms` enforced by leaving the group, and
//!   LeaveGroup on [`Consumer::close`]. The rebalance protocol is eager (every partition is
//!   revoked before a rejoin) unless `cooperative-sticky` is the only strategy: then only the
//!   partitions that move are revoked, and the member rejoins at once so they can be
//!   reassigned ([`RebalanceListener`] hears about both).
//! - **Offsets**: positions advance as `poll` returns records; `enable.auto.commit` commits
//!   them every `auto.commit.interval.ms` (and before a rebalance and on close);
//!   [`Consumer::commit_sync`] and [`Consumer::commit_async`] commit on demand. A partition
//!   without a position starts at its committed offset, else where `auto.offset.reset` says;
//!   OFFSET_OUT_OF_RANGE resets the same way (or fails with `none`).
//! - **Leader epochs** (KIP-320): a position carries the leader epoch of the last batch read
//!   (committed with it); Fetch carries the leader epoch from metadata. After a leader change
//!   (or a position restored with an epoch) the position is checked with OffsetForLeaderEpoch
//!   before fetching again: a log truncated below it moves the position to where the log
//!   diverges, or resets it by `auto.offset.reset` when the leader knows nothing of the
//!   epoch; with `none`, `poll` fails with [`ClientError::LogTruncation`] until a seek.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vltava_client::ClientError> {
//! use std::time::Duration;
//! use vltava_client::consumer::{Consumer, ConsumerConfig};
//! let mut config = ConsumerConfig::new("127.0.0.1:9092")?;
//! config.set("group.id", "billing")?.set("auto.offset.reset", "earliest")?;
//! let mut consumer = Consumer::new(config).await?;
//! consumer.subscribe(&["orders".to_string()])?;
//! loop {
//!     for r in consumer.poll(Duration::from_secs(1)).await? {
//!         println!("{}-{}@{}: {:?}", r.topic, r.partition, r.offset, r.value);
//!     }
//! }
//! # }
//! ```
//!
//! `poll` may run longer than its timeout while a rebalance it takes part in completes
//! (bounded by the rebalance timeout, `max.poll.interval.ms`): a JoinGroup cannot be
//! abandoned half way without leaving the group.

pub mod assignor;
pub mod config;
mod epochs;
mod fetcher;
mod group;
pub mod pattern;
mod read_replica;
pub mod record;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::admin::{Admin, OffsetSpec, PartitionOffset, TopicPartition};
use crate::connection::{Connection, ConnectionConfig};
use crate::consumer_protocol::{
    ConsumerAssignment, ConsumerSubscription, SUBSCRIPTION_MAX_VERSION, decode_assignment,
    decode_subscription,
};
use crate::error::{ClientError, ErrorCode, Result, codes};

pub use assignor::{
    GroupAssignment, MemberSubscription, PartitionAssignor, RangeAssignor, RoundRobinAssignor,
};
pub use config::{AssignmentStrategy, ConsumerConfig, IsolationLevel, OffsetReset};
pub use pattern::TopicPattern;
pub use record::{ConsumerRecord, Header, TimestampType};

use fetcher::{BrokerFetcher, FetchJob, FetchOutcome, FetchPartition, FetchSettings};
use group::{GroupConn, HeartbeatSettings, MemberState, OffsetToCommit, Shared, lock};
use pattern::PatternSubscription;
use read_replica::{AfterError, PreferredReadReplica};
use record::DecodeOptions;

/// Called when the group moves partitions, from inside [`Consumer::poll`] (or
/// [`Consumer::close`] / [`Consumer::unsubscribe`]).
pub trait RebalanceListener: Send {
    /// Before a rebalance, with the partitions the consumer gives up (auto-commit has already
    /// committed their positions).
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]);
    /// After a rebalance, with the partitions the consumer now owns (possibly none).
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]);
    /// When the partitions were taken away without a rebalance the consumer took part in
    /// (session expired, `max.poll.interval.ms` passed): committing them is no longer
    /// possible. By default the same as a revocation.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

/// Called with the outcome of [`Consumer::commit_async`], from a later `poll`, `commit_sync`
/// or `close`.
pub type CommitCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// The negotiated version of `api` on `conn` within `range` (for APIs outside the client's
/// shared version table).
pub(crate) fn pick_version(conn: &Connection, api: ApiKey, range: (i16, i16)) -> Result<i16> {
    let (min, max) = range;
    let unsupported = |broker: String| ClientError::UnsupportedApi {
        addr: conn.addr().to_string(),
        api,
        ours: format!("v{min}-v{max}"),
        broker,
    };
    let Some((bmin, bmax)) = conn.versions().advertised(api) else {
        return Err(unsupported("none".into()));
    };
    let v = max.min(bmax);
    if v < min.max(bmin) {
        return Err(unsupported(format!("v{bmin}-v{bmax}")));
    }
    Ok(v)
}

fn tp_name(tp: &TopicPartition) -> String {
    format!("{}-{}", tp.topic, tp.partition)
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Where a partition's position comes from when it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetTo {
    Earliest,
    Latest,
    Timestamp(i64),
}

/// Per assigned partition.
#[derive(Debug)]
struct PartitionState {
    /// Offset of the next record to hand out; `None` until looked up.
    position: Option<i64>,
    /// Leader epoch of the position: of the batch of the last record handed out, or as
    /// committed or listed (-1 if unknown). Committed with the offset (OffsetCommit v6+) and
    /// checked against the leader's log after a leader change (KIP-320).
    leader_epoch: i32,
    /// The leader (node, leader epoch) the position was last checked against: the Java
    /// client's `FetchPosition.currentLeader`; its epoch goes out with every Fetch.
    current_leader: Option<(i32, i32)>,
    /// The leader changed (or the position came with an epoch from a commit or a seek) and the
    /// position has to be checked with OffsetForLeaderEpoch before fetching again.
    awaiting_validation: bool,
    /// No validation attempt before this (after one failed).
    validate_after: Option<Instant>,
    /// An explicit reset to apply when the position is looked up (seek_to_*).
    reset: Option<ResetTo>,
    paused: bool,
    /// Bumped whenever the position is set from outside the fetch path: outcomes and buffered
    /// data of an older epoch are dropped.
    epoch: u64,
    in_flight: bool,
    buffered: bool,
    high_watermark: i64,
    log_start_offset: i64,
    /// The replica the leader named to read from (KIP-392), while it holds.
    read_replica: PreferredReadReplica,
}

impl PartitionState {
    fn new() -> PartitionState {
        PartitionState {
            position: None,
            leader_epoch: -1,
            current_leader: None,
            awaiting_validation: false,
            validate_after: None,
            reset: None,
            paused: false,
            epoch: 0,
            in_flight: false,
            buffered: false,
            high_watermark: -1,
            log_start_offset: -1,
            read_replica: PreferredReadReplica::default(),
        }
    }

    /// A position without a leader epoch (a seek, a reset), or none with a reset to apply.
    fn set_position(&mut self, position: Option<i64>, reset: Option<ResetTo>) {
        self.position = position;
        self.reset = reset;
        self.leader_epoch = -1;
        self.awaiting_validation = false;
        self.validate_after = None;
        self.epoch += 1;
        self.buffered = false;
    }

    /// A position with the leader epoch it was read at (a committed offset, a seek with an
    /// epoch): checked against the leader's log before it is fetched, as the Java client's
    /// `seekUnvalidated`.
    fn seek_unvalidated(&mut self, offset: i64, leader_epoch: i32) {
        self.set_position(Some(offset), None);
        self.leader_epoch = leader_epoch;
        self.awaiting_validation = leader_epoch >= 0;
    }

    /// A position known to be in the leader's log (a reset, a truncation point the leader
    /// named).
    fn seek_validated(&mut self, offset: i64, leader_epoch: i32) {
        self.set_position(Some(offset), None);
        self.leader_epoch = leader_epoch;
    }

    /// A leader from metadata or from a broker's answer (KIP-951). A leader with a newer epoch,
    /// or another node, makes a position with an epoch wait for validation; fetched data not
    /// yet handed out is dropped (it is fetched again once the position is checked). An older
    /// epoch than the one known is stale metadata and ignored, as is "no leader". Returns
    /// whether the partition now awaits validation.
    fn update_leader(&mut self, leader: (i32, i32)) -> bool {
        if leader.0 < 0 || self.current_leader == Some(leader) {
            return false;
        }
        if let Some((_, known)) = self.current_leader
            && leader.1 < known
        {
            return false;
        }
        self.current_leader = Some(leader);
        if self.position.is_some() && self.leader_epoch >= 0 && leader.1 >= 0 {
            self.awaiting_validation = true;
            self.validate_after = None;
            self.epoch += 1;
            self.buffered = false;
        }
        self.awaiting_validation
    }
}

/// What an OffsetForLeaderEpoch answer means for a position (KIP-320), as the Java client's
/// `SubscriptionState.maybeCompleteValidation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validation {
    /// The leader's log holds the position: fetch on.
    Valid,
    /// Truncated below the position; with a reset policy the consumer goes on from the first
    /// offset known to diverge (the end offset the leader gave) at that epoch.
    SeekTo(i64, i32),
    /// The leader knows no end offset for the position's epoch (nor any earlier one):
    /// truncation without a known divergence point, reset by `auto.offset.reset`.
    Reset(ResetTo),
    /// Truncated and `auto.offset.reset=none`: fail with the divergence point if known.
    Fail(Option<(i64, i32)>),
}

/// Decides on the answer (`end_epoch`, `end_offset`) to an OffsetForLeaderEpoch asking for the
/// position's epoch: UNDEFINED (-1) is truncation without a known point, an end offset below
/// the position truncation at that offset, anything else a valid position.
fn validation_outcome(
    position: i64,
    end_epoch: i32,
    end_offset: i64,
    policy: OffsetReset,
) -> Validation {
    let reset = match policy {
        OffsetReset::Earliest => Some(ResetTo::Earliest),
        OffsetReset::Latest => Some(ResetTo::Latest),
        OffsetReset::None => None,
    };
    if end_offset < 0 || end_epoch < 0 {
        return reset.map_or(Validation::Fail(None), Validation::Reset);
    }
    if end_offset < position {
        return match reset {
            Some(_) => Validation::SeekTo(end_offset, end_epoch),
            None => Validation::Fail(Some((end_offset, end_epoch))),
        };
    }
    Validation::Valid
}

/// Fetched records waiting to be handed out.
#[derive(Debug)]
struct Completed {
    tp: TopicPartition,
    epoch: u64,
    records: VecDeque<ConsumerRecord>,
    next_offset: i64,
    /// Leader epoch at `next_offset` (of the last batch read), -1 if none.
    next_epoch: i32,
    error: Option<ClientError>,
}

/// The result of an asynchronous commit, sent back by its task.
struct CommitDone {
    id: u64,
    offsets: Vec<OffsetToCommit>,
    result: Result<()>,
}

/// Everything about the consumer's group (present when `group.id` is set).
struct GroupCtx {
    id: String,
    conn: Arc<tokio::sync::Mutex<GroupConn>>,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    heartbeat: Option<JoinHandle<()>>,
    commits_tx: mpsc::Sender<CommitDone>,
    commits_rx: mpsc::Receiver<CommitDone>,
    callbacks: HashMap<u64, Option<CommitCallback>>,
    next_commit_id: u64,
    next_auto_commit: Instant,
    /// Offsets last committed, so auto-commit skips unchanged ones.
    last_committed: HashMap<TopicPartition, i64>,
    /// When this member led the last assignment: the partition counts it assigned from
    /// (a change triggers a rebalance) and every member's topics.
    leader_counts: Option<BTreeMap<String, i32>>,
    group_topics: Vec<String>,
}

impl Drop for GroupCtx {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// A Kafka consumer. See the [module documentation](self).
pub struct Consumer {
    config: ConsumerConfig,
    admin: Admin,
    /// Subscribed topics (sorted), in group mode; with a pattern, those it matched at the
    /// last metadata refresh.
    subscription: Option<Vec<String>>,
    /// The pattern of a pattern subscription.
    pattern: Option<PatternSubscription>,
    /// Manually assigned (assign mode).
    manual: bool,
    parts: BTreeMap<TopicPartition, PartitionState>,
    buffer: VecDeque<Completed>,
    fetchers: HashMap<i32, BrokerFetcher>,
    fetch_settings: Arc<FetchSettings>,
    fetch_connection: ConnectionConfig,
    results_tx: mpsc::Sender<FetchOutcome>,
    results_rx: mpsc::Receiver<FetchOutcome>,
    /// Leader (node, leader epoch) per partition, from metadata and KIP-951 answers.
    leaders: HashMap<TopicPartition, (i32, i32)>,
    node_backoff: HashMap<i32, Instant>,
    metadata_stale: bool,
    metadata_at: Option<Instant>,
    pending_error: Option<ClientError>,
    group: Option<GroupCtx>,
    listener: Option<Box<dyn RebalanceListener>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.config.group_id)
            .field("subscription", &self.subscription)
            .field("assignment", &self.parts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Errors after which joining again (after a pause, maybe at a new coordinator) may work.
fn join_retriable(e: &ClientError) -> bool {
    if e.breaks_connection() || matches!(e, ClientError::Connect { .. }) {
        return true;
    }
    match e.code() {
        Some(
            codes::UNKNOWN_MEMBER_ID
            | codes::ILLEGAL_GENERATION
            | codes::REBALANCE_IN_PROGRESS
            | group::MEMBER_ID_REQUIRED,
        ) => true,
        Some(c) => ErrorCode(c).is_retriable(),
        None => false,
    }
}

const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// Fetch errors that mean "the metadata is out of date": find the leader again.
fn refresh_metadata_error(code: i16) -> bool {
    matches!(
        code,
        codes::UNKNOWN_TOPIC_OR_PARTITION
            | codes::LEADER_NOT_AVAILABLE
            | codes::NOT_LEADER_OR_FOLLOWER
            | 9   // REPLICA_NOT_AVAILABLE
            | 56  // KAFKA_STORAGE_ERROR
            | FENCED_LEADER_EPOCH
            | UNKNOWN_LEADER_EPOCH
            | 78  // OFFSET_NOT_AVAILABLE
            | 100 // UNKNOWN_TOPIC_ID
    ) || ErrorCode(code).is_retriable()
}

impl Consumer {
    /// Connects to the cluster (reads the broker list). Nothing is fetched before `assign` or
    /// `subscribe` and `poll`.
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        let admin = Admin::connect(config.client.clone()).await?;
        let fetch_settings = Arc::new(FetchSettings {
            max_wait_ms: millis(config.fetch_max_wait),
            min_bytes: config.fetch_min_bytes,
            max_bytes: config.fetch_max_bytes,
            partition_max_bytes: config.max_partition_fetch_bytes,
            isolation_level: match config.isolation_level {
                IsolationLevel::ReadUncommitted => 0,
                IsolationLevel::ReadCommitted => 1,
            },
            rack_id: config.client_rack.clone(),
            decode: DecodeOptions {
                check_crcs: config.check_crcs,
                max_inflated_bytes: config.max_batch_inflated_bytes,
            },
        });
        let mut fetch_connection = config.client.connection.clone();
        // A fetch may wait fetch.max.wait.ms at the broker before it answers.
        fetch_connection.request_timeout += config.fetch_max_wait;
        let fetch_bytes = usize::try_from(config.fetch_max_bytes).unwrap_or(usize::MAX);
        fetch_connection.max_response_bytes = fetch_connection
            .max_response_bytes
            .max(fetch_bytes.saturating_add(1 << 20));
        let (results_tx, results_rx) = mpsc::channel(64);
        let group = config.group_id.clone().map(|id| {
            let mut conn_config = config.client.connection.clone();
            // A JoinGroup waits for the whole rebalance.
            conn_config.request_timeout = conn_config
                .request_timeout
                .max(config.max_poll_interval + Duration::from_secs(5));
            let (commits_tx, commits_rx) = mpsc::channel(256);
            GroupCtx {
                conn: Arc::new(tokio::sync::Mutex::new(GroupConn::new(
                    id.clone(),
                    conn_config,
                ))),
                id,
                shared: Arc::new(Mutex::new(Shared::new())),
                wake: Arc::new(Notify::new()),
                heartbeat: None,
                commits_tx,
                commits_rx,
                callbacks: HashMap::new(),
                next_commit_id: 0,
                next_auto_commit: Instant::now() + config.auto_commit_interval,
                last_committed: HashMap::new(),
                leader_counts: None,
                group_topics: Vec::new(),
            }
        });
        Ok(Consumer {
            config,
            admin,
            subscription: None,
            pattern: None,
            manual: false,
            parts: BTreeMap::new(),
            buffer: VecDeque::new(),
            fetchers: HashMap::new(),
            fetch_settings,
            fetch_connection,
            results_tx,
            results_rx,
            leaders: HashMap::new(),
            node_backoff: HashMap::new(),
            metadata_stale: true,
            metadata_at: None,
            pending_error: None,
            group,
            listener: None,
        })
    }

    /// The settings the consumer was created with.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The admin client over the consumer's cluster connections (metadata, offsets).
    pub fn admin(&mut self) -> &mut Admin {
        &mut self.admin
    }

    // ------------------------------------------------------------------ assignment

    /// Reads exactly `partitions`, without a group (offsets can still be committed when
    /// `group.id` is set). Replaces an earlier assignment; partitions kept keep their
    /// positions. Fails while subscribed.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if self.subscription.is_some() {
            return Err(ClientError::InvalidArgument(
                "assign: the consumer is subscribed to topics; unsubscribe first".into(),
            ));
        }
        if self.config.enable_auto_commit && self.group.is_some() {
            self.commit_async_internal(self.consumed_offsets(true), None);
        }
        let wanted: BTreeSet<&TopicPartition> = partitions.iter().collect();
        self.parts.retain(|tp, _| wanted.contains(tp));
        for tp in partitions {
            self.parts
                .entry(tp.clone())
                .or_insert_with(PartitionState::new);
        }
        self.buffer.retain(|c| wanted.contains(&c.tp));
        self.manual = !partitions.is_empty();
        self.metadata_stale = true;
        self.metadata_at = None;
        Ok(())
    }

    /// Joins the consumer group (`group.id`) with a subscription to `topics`; the group
    /// assigns the partitions at the next `poll` (a changed subscription rebalances). Fails
    /// without a group id, for an empty list (use [`Consumer::unsubscribe`]) or while
    /// partitions are assigned manually.
    pub fn subscribe(&mut self, topics: &[String]) -> Result<()> {
        let Some(g) = &self.group else {
            return Err(ClientError::InvalidArgument(
                "subscribe needs a group.id".into(),
            ));
        };
        if self.manual {
            return Err(ClientError::InvalidArgument(
                "subscribe: partitions are assigned manually; assign(&[]) first".into(),
            ));
        }
        let mut topics: Vec<String> = topics.to_vec();
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return Err(ClientError::InvalidArgument(
                "subscribe: no topics (unsubscribe to leave the group)".into(),
            ));
        }
        if topics.iter().any(String::is_empty) {
            return Err(ClientError::InvalidArgument(
                "subscribe: empty topic name".into(),
            ));
        }
        if self.subscription.as_ref() != Some(&topics) {
            lock(&g.shared).rejoin_needed = true;
        }
        self.subscription = Some(topics);
        self.pattern = None;
        Ok(())
    }

    /// [`Consumer::subscribe`] with a listener for partition moves.
    pub fn subscribe_with_listener(
        &mut self,
        topics: &[String],
        listener: Box<dyn RebalanceListener>,
    ) -> Result<()> {
        self.subscribe(topics)?;
        self.listener = Some(listener);
        Ok(())
    }

    /// Joins the consumer group (`group.id`) with a subscription to every topic whose whole
    /// name matches the regular expression `pattern` ([`TopicPattern`]), internal topics
    /// (`__consumer_offsets`, ...) excepted, as the Java client's `subscribe(Pattern)`.
    ///
    /// The pattern is evaluated against all topics at the next `poll`, before joining, and
    /// again at every metadata refresh (`metadata.max.age.ms`, or sooner after a fetch error);
    /// when the set of matching topics changes the consumer rejoins the group, so topics
    /// created later are assigned and deleted ones dropped. Replaces an earlier subscription.
    /// Fails for an empty or invalid pattern, without a group id, or while partitions are
    /// assigned manually.
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let compiled = TopicPattern::new(pattern)?;
        if self.group.is_none() {
            return Err(ClientError::InvalidArgument(
                "subscribe_pattern needs a group.id".into(),
            ));
        }
        if self.manual {
            return Err(ClientError::InvalidArgument(
                "subscribe_pattern: partitions are assigned manually; assign(&[]) first".into(),
            ));
        }
        // The topics already subscribed stay until the pattern's own are known (the next
        // poll refreshes metadata first); a change then rejoins.
        self.subscription.get_or_insert_with(Vec::new);
        self.pattern = Some(PatternSubscription::new(compiled));
        self.metadata_at = None;
        Ok(())
    }

    /// [`Consumer::subscribe_pattern`] with a listener for partition moves.
    pub fn subscribe_pattern_with_listener(
        &mut self,
        pattern: &str,
        listener: Box<dyn RebalanceListener>,
    ) -> Result<()> {
        self.subscribe_pattern(pattern)?;
        self.listener = Some(listener);
        Ok(())
    }

    /// The pattern of a pattern subscription (`None` when subscribed to a list of topics,
    /// assigned partitions or idle).
    pub fn subscription_pattern(&self) -> Option<&str> {
        self.pattern.as_ref().map(|p| p.pattern.as_str())
    }

    /// Sets (or replaces) the rebalance listener.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// Leaves the group (committing first with auto-commit) and forgets the subscription, or
    /// drops a manual assignment.
    pub async fn unsubscribe(&mut self) -> Result<()> {
        let result = if self.subscription.is_some() {
            self.leave_group_now().await
        } else {
            Ok(())
        };
        self.subscription = None;
        self.pattern = None;
        self.manual = false;
        self.parts.clear();
        self.buffer.clear();
        result
    }

    /// The partitions assigned now (by the group or by `assign`).
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    /// The subscribed topics (empty in assign mode); with a pattern, the topics it matched at
    /// the last metadata refresh.
    pub fn subscription(&self) -> Vec<String> {
        self.subscription.clone().unwrap_or_default()
    }

    /// The member id the coordinator gave this consumer (empty outside a group).
    pub fn member_id(&self) -> String {
        self.group
            .as_ref()
            .map(|g| lock(&g.shared).member_id.clone())
            .unwrap_or_default()
    }

    /// The group generation of the current assignment (-1 outside a group).
    pub fn generation(&self) -> i32 {
        self.group
            .as_ref()
            .map_or(-1, |g| lock(&g.shared).generation)
    }

    // ------------------------------------------------------------------ positions

    fn state_mut(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState> {
        self.parts.get_mut(tp).ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "partition {} is not assigned to this consumer",
                tp_name(tp)
            ))
        })
    }

    fn drop_buffered(&mut self, tp: &TopicPartition) {
        self.buffer.retain(|c| &c.tp != tp);
    }

    /// Makes the next `poll` read `tp` from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "seek {}: negative offset {offset}",
                tp_name(tp)
            )));
        }
        self.state_mut(tp)?.set_position(Some(offset), None);
        self.drop_buffered(tp);
        Ok(())
    }

    /// Makes the next `poll` read `tp` from `offset`, which was read at `leader_epoch` (as the
    /// Java client's `seek(tp, OffsetAndMetadata)` with a leader epoch): before fetching, the
    /// consumer asks the leader (OffsetForLeaderEpoch) whether its log still holds `offset`
    /// at that epoch, and handles a truncation as after a leader change. A negative epoch
    /// is the same as [`Consumer::seek`].
    pub fn seek_with_leader_epoch(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        leader_epoch: i32,
    ) -> Result<()> {
        if offset < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "seek {}: negative offset {offset}",
                tp_name(tp)
            )));
        }
        self.state_mut(tp)?
            .seek_unvalidated(offset, leader_epoch.max(-1));
        self.drop_buffered(tp);
        Ok(())
    }

    /// The leader epoch of `tp`'s position: that of the batch of the last record `poll`
    /// returned, or as committed or listed (`None` when unknown).
    pub fn position_leader_epoch(&self, tp: &TopicPartition) -> Option<i32> {
        self.parts
            .get(tp)
            .map(|s| s.leader_epoch)
            .filter(|e| *e >= 0)
    }

    fn seek_reset(&mut self, tps: &[TopicPartition], to: ResetTo) -> Result<()> {
        let tps: Vec<TopicPartition> = if tps.is_empty() {
            self.assignment()
        } else {
            tps.to_vec()
        };
        for tp in &tps {
            self.state_mut(tp)?.set_position(None, Some(to));
            self.drop_buffered(tp);
        }
        Ok(())
    }

    /// Makes the next `poll` read from the log start of `tps` (all assigned if empty).
    pub fn seek_to_beginning(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_reset(tps, ResetTo::Earliest)
    }

    /// Makes the next `poll` read from the log end of `tps` (all assigned if empty).
    pub fn seek_to_end(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_reset(tps, ResetTo::Latest)
    }

    /// Makes the next `poll` read `tps` (all assigned if empty) from the first record with a
    /// timestamp at or after `timestamp_ms`, or from the log end if there is none.
    pub fn seek_to_timestamp(&mut self, tps: &[TopicPartition], timestamp_ms: i64) -> Result<()> {
        if timestamp_ms < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "negative timestamp {timestamp_ms}"
            )));
        }
        self.seek_reset(tps, ResetTo::Timestamp(timestamp_ms))
    }

    /// Stops fetching `tps` (their already fetched records are kept until `resume`).
    pub fn pause(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.state_mut(tp)?.paused = true;
        }
        Ok(())
    }

    /// Fetches `tps` again after [`Consumer::pause`].
    pub fn resume(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.state_mut(tp)?.paused = false;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The offset of the next record `poll` will return for `tp`, looking it up (committed
    /// offset or `auto.offset.reset`) if not known yet.
    pub async fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        self.state_mut(tp)?;
        self.update_fetch_positions().await?;
        if self.state_mut(tp)?.awaiting_validation {
            self.maybe_refresh_metadata().await;
            self.validate_positions().await?;
            self.update_fetch_positions().await?;
        }
        self.state_mut(tp)?.position.ok_or_else(|| {
            ClientError::NotFound(format!("no position for partition {}", tp_name(tp)))
        })
    }

    /// The high watermark of `tp` from the last fetch (`None` before one).
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts
            .get(tp)
            .map(|s| s.high_watermark)
            .filter(|h| *h >= 0)
    }

    /// The log start offset of `tp` from the last fetch (`None` before one).
    pub fn log_start_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts
            .get(tp)
            .map(|s| s.log_start_offset)
            .filter(|h| *h >= 0)
    }

    /// The group's committed offsets of `tps` (`None` where nothing is committed).
    pub async fn committed(
        &mut self,
        tps: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        let found = self.fetch_committed(tps).await?;
        Ok(tps
            .iter()
            .map(|tp| {
                let off = found.get(tp).copied().flatten().map(|c| c.offset);
                (tp.clone(), off)
            })
            .collect())
    }

    // ------------------------------------------------------------------ poll

    /// Returns the next records (at most `max.poll.records`), waiting up to `timeout` for
    /// some to arrive. Takes part in group rebalances, runs the rebalance listener and
    /// commit callbacks, auto-commits, and reports fetch errors (a partition's error after
    /// the records before it).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.subscription.is_none() && !self.manual {
            return Err(ClientError::InvalidArgument(
                "poll: the consumer is neither subscribed to topics nor assigned partitions".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        if let Some(g) = &self.group {
            lock(&g.shared).last_poll = Instant::now();
        }
        self.run_commit_callbacks();
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        loop {
            if !self.pattern_evaluated().await {
                // Joining before the pattern's topics are known would only rebalance twice.
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Vec::new());
                }
                tokio::time::sleep((deadline - now).min(self.config.retry_backoff)).await;
                continue;
            }
            if !self.ensure_group_active(deadline).await? {
                return Ok(Vec::new());
            }
            self.maybe_auto_commit();
            self.maybe_refresh_metadata().await;
            self.update_fetch_positions().await?;
            self.validate_positions().await?;
            self.update_fetch_positions().await?;
            while let Ok(o) = self.results_rx.try_recv() {
                self.handle_outcome(o);
            }
            let records = self.drain_buffer();
            if !records.is_empty() {
                self.send_fetches();
                return Ok(records);
            }
            if let Some(e) = self.pending_error.take() {
                return Err(e);
            }
            self.send_fetches();
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut wait = deadline - now;
            if !self.fetchers.values().any(|f| f.in_flight) {
                // Nothing on its way: look again soon (leaders, positions, backoffs).
                wait = wait.min(self.config.retry_backoff.max(Duration::from_millis(10)));
            }
            if let Some(g) = &self.group
                && self.config.enable_auto_commit
                && g.next_auto_commit > now
            {
                wait = wait.min(g.next_auto_commit - now);
            }
            let wake = self.group.as_ref().map(|g| Arc::clone(&g.wake));
            tokio::select! {
                o = self.results_rx.recv() => {
                    if let Some(o) = o {
                        self.handle_outcome(o);
                    }
                }
                _ = async {
                    match wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = tokio::time::sleep(wait) => {}
            }
            self.run_commit_callbacks();
        }
    }

    /// Hands out buffered records, at most `max.poll.records`, advancing positions.
    fn drain_buffer(&mut self) -> Vec<ConsumerRecord> {
        let max = self.config.max_poll_records;
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.buffer.len() && out.len() < max {
            let c = &mut self.buffer[i];
            let Some(st) = self.parts.get_mut(&c.tp) else {
                self.buffer.remove(i);
                continue;
            };
            let Some(mut position) = st.position.filter(|_| st.epoch == c.epoch) else {
                self.buffer.remove(i);
                continue;
            };
            if st.paused {
                i += 1;
                continue;
            }
            while out.len() < max {
                let Some(r) = c.records.pop_front() else {
                    break;
                };
                if r.offset < position {
                    continue;
                }
                position = r.offset + 1;
                st.leader_epoch = r.leader_epoch;
                out.push(r);
            }
            st.position = Some(position);
            if c.records.is_empty() {
                if c.next_offset > position && c.next_epoch >= 0 {
                    // Past the last record (control batches): the epoch of the last batch.
                    st.leader_epoch = c.next_epoch;
                }
                st.position = Some(position.max(c.next_offset));
                st.buffered = false;
                if let Some(e) = c.error.take() {
                    self.pending_error = Some(e);
                }
                self.buffer.remove(i);
            } else {
                break;
            }
        }
        out
    }

    fn handle_outcome(&mut self, o: FetchOutcome) {
        if let Some(f) = self.fetchers.get_mut(&o.node) {
            f.in_flight = false;
            f.pending.clear();
        }
        for tp in &o.requested {
            if let Some(st) = self.parts.get_mut(tp) {
                st.in_flight = false;
            }
        }
        let list = match o.result {
            Ok(l) => l,
            Err(e) => {
                self.metadata_stale = true;
                self.node_backoff
                    .insert(o.node, Instant::now() + self.config.retry_backoff);
                // A read replica that failed: back to the leader (KIP-392).
                for tp in &o.requested {
                    if let Some(st) = self.parts.get_mut(tp)
                        && st.read_replica.clear_if(o.node)
                    {
                        tracing::debug!(partition = %tp_name(tp), node = o.node, "read replica failed: fetching from the leader");
                    }
                }
                if matches!(e, ClientError::UnsupportedApi { .. }) {
                    self.pending_error = Some(e);
                } else {
                    tracing::debug!(node = o.node, error = %e, "fetch failed");
                }
                return;
            }
        };
        for p in list {
            let Some(st) = self.parts.get_mut(&p.tp) else {
                continue;
            };
            if st.epoch != p.epoch || st.position != Some(p.fetch_offset) || st.awaiting_validation
            {
                continue;
            }
            if p.high_watermark >= 0 {
                st.high_watermark = p.high_watermark;
            }
            if p.log_start_offset >= 0 {
                st.log_start_offset = p.log_start_offset;
            }
            if p.error_code != 0 {
                let refresh = refresh_metadata_error(p.error_code);
                match read_replica::after_error(&mut st.read_replica, o.node, p.error_code, refresh)
                {
                    AfterError::Keep => {}
                    AfterError::BackToLeader => {
                        tracing::debug!(partition = %tp_name(&p.tp), node = o.node, error_code = p.error_code, "read replica cannot serve the position: fetching from the leader");
                        continue;
                    }
                    AfterError::BackToLeaderAndHandle => {
                        tracing::debug!(partition = %tp_name(&p.tp), node = o.node, error_code = p.error_code, "read replica refused: fetching from the leader");
                    }
                }
            }
            match p.error_code {
                0 => {
                    if let Some(node) = p.preferred_read_replica
                        && node != o.node
                    {
                        tracing::debug!(partition = %tp_name(&p.tp), leader = o.node, read_replica = node, "preferred read replica");
                        st.read_replica
                            .set(node, Instant::now(), self.config.metadata_max_age);
                    }
                    let d = p.decoded;
                    if d.records.is_empty() && d.error.is_none() {
                        // Nothing for the application (or only control batches): move on.
                        if d.next_offset > p.fetch_offset {
                            st.position = Some(d.next_offset);
                            if d.last_leader_epoch >= 0 {
                                st.leader_epoch = d.last_leader_epoch;
                            }
                        }
                        continue;
                    }
                    st.buffered = true;
                    self.buffer.push_back(Completed {
                        tp: p.tp,
                        epoch: p.epoch,
                        records: d.records.into(),
                        next_offset: d.next_offset,
                        next_epoch: d.last_leader_epoch,
                        error: d.error,
                    });
                }
                codes::OFFSET_OUT_OF_RANGE => match self.config.auto_offset_reset {
                    OffsetReset::Earliest => st.set_position(None, Some(ResetTo::Earliest)),
                    OffsetReset::Latest => st.set_position(None, Some(ResetTo::Latest)),
                    OffsetReset::None => {
                        self.pending_error = Some(ClientError::broker(
                            codes::OFFSET_OUT_OF_RANGE,
                            format!(
                                "fetch {} at offset {} (log start {}, end {}) with \
                                 auto.offset.reset=none",
                                tp_name(&p.tp),
                                p.fetch_offset,
                                p.log_start_offset,
                                p.high_watermark
                            ),
                            None,
                        ));
                    }
                },
                code if refresh_metadata_error(code) => {
                    self.metadata_stale = true;
                    self.node_backoff
                        .insert(o.node, Instant::now() + self.config.retry_backoff);
                    // KIP-951: the broker names the new leader; use it now (the metadata
                    // refresh follows) if it is newer and a broker we know.
                    if let Some(leader) = p.current_leader
                        && matches!(code, codes::NOT_LEADER_OR_FOLLOWER | FENCED_LEADER_EPOCH)
                        && self.leaders.get(&p.tp).is_none_or(|l| leader.1 > l.1)
                        && self
                            .admin
                            .cluster()
                            .brokers()
                            .iter()
                            .any(|b| b.node_id == leader.0)
                    {
                        tracing::debug!(partition = %tp_name(&p.tp), leader = leader.0, leader_epoch = leader.1, "new leader from the fetch answer");
                        self.leaders.insert(p.tp.clone(), leader);
                        st.update_leader(leader);
                    }
                }
                code => {
                    self.pending_error = Some(ClientError::broker(
                        code,
                        format!("fetch {}", tp_name(&p.tp)),
                        None,
                    ));
                }
            }
        }
    }

    /// Sends a Fetch to every leader with fetchable partitions and no request in flight.
    fn send_fetches(&mut self) {
        let now = Instant::now();
        // A fetch task that died (a panic) never answers: forget it and its job.
        let dead: Vec<i32> = self
            .fetchers
            .iter()
            .filter(|(_, f)| f.is_dead())
            .map(|(n, _)| *n)
            .collect();
        for node in dead {
            if let Some(f) = self.fetchers.remove(&node) {
                for tp in &f.pending {
                    if let Some(st) = self.parts.get_mut(tp) {
                        st.in_flight = false;
                    }
                }
            }
        }
        let mut by_node: BTreeMap<i32, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, st) in &mut self.parts {
            let Some(offset) = st.position else {
                continue;
            };
            if st.paused || st.in_flight || st.buffered || st.awaiting_validation {
                continue;
            }
            let Some(&(leader, leader_epoch)) = self.leaders.get(tp).filter(|l| l.0 >= 0) else {
                self.metadata_stale = true;
                continue;
            };
            // KIP-392: the replica the leader named, while it holds and the metadata lists it.
            let brokers = self.admin.cluster().brokers();
            let (node, unlisted) =
                read_replica::fetch_node(&mut st.read_replica, leader, now, |n| {
                    brokers.iter().any(|b| b.node_id == n)
                });
            if unlisted {
                self.metadata_stale = true;
            }
            if self.fetchers.get(&node).is_some_and(|f| f.in_flight)
                || self.node_backoff.get(&node).is_some_and(|t| *t > now)
            {
                continue;
            }
            by_node.entry(node).or_default().push(FetchPartition {
                tp: tp.clone(),
                offset,
                epoch: st.epoch,
                current_leader_epoch: leader_epoch,
            });
        }
        for (node, partitions) in by_node {
            let Some(addr) = self
                .admin
                .cluster()
                .brokers()
                .iter()
                .find(|b| b.node_id == node)
                .map(|b| b.addr())
            else {
                self.metadata_stale = true;
                continue;
            };
            if self.fetchers.get(&node).is_none_or(|f| f.addr != addr) {
                self.fetchers.insert(
                    node,
                    BrokerFetcher::spawn(
                        node,
                        addr,
                        self.fetch_connection.clone(),
                        Arc::clone(&self.fetch_settings),
                        self.results_tx.clone(),
                    ),
                );
            }
            let tps: Vec<TopicPartition> = partitions.iter().map(|p| p.tp.clone()).collect();
            let submitted = self
                .fetchers
                .get_mut(&node)
                .is_some_and(|f| f.submit(FetchJob { partitions }));
            if submitted {
                for tp in tps {
                    if let Some(st) = self.parts.get_mut(&tp) {
                        st.in_flight = true;
                    }
                }
            } else {
                // The task is gone: start a new one next time.
                self.fetchers.remove(&node);
            }
        }
    }

    /// Topics whose metadata the consumer needs.
    fn metadata_topics(&self) -> Vec<String> {
        let mut topics: BTreeSet<String> = self.parts.keys().map(|tp| tp.topic.clone()).collect();
        if let Some(g) = &self.group
            && g.leader_counts.is_some()
        {
            topics.extend(g.group_topics.iter().cloned());
        }
        topics.into_iter().collect()
    }

    /// Whether the topics of a pattern subscription are known (always, without a pattern),
    /// refreshing metadata if they are not.
    async fn pattern_evaluated(&mut self) -> bool {
        if self.pattern.as_ref().is_none_or(|p| p.topics().is_some()) {
            return true;
        }
        self.maybe_refresh_metadata().await;
        self.pattern.as_ref().is_none_or(|p| p.topics().is_some())
    }

    async fn maybe_refresh_metadata(&mut self) {
        let now = Instant::now();
        let due = match self.metadata_at {
            None => true,
            Some(t) => {
                (self.metadata_stale && now.duration_since(t) >= self.config.retry_backoff)
                    || now.duration_since(t) >= self.config.metadata_max_age
            }
        };
        let topics = self.metadata_topics();
        // A pattern needs every topic's name, as in the Java client: the metadata refresh
        // is what discovers new and deleted topics.
        let all_topics = self.pattern.is_some();
        if !due || (topics.is_empty() && !all_topics) {
            return;
        }
        self.metadata_at = Some(now);
        let asked = if all_topics { None } else { Some(&topics[..]) };
        let md = match self.admin.cluster().metadata(asked).await {
            Ok(md) => md,
            Err(e) => {
                tracing::debug!(error = %e, "metadata refresh failed");
                self.metadata_stale = true;
                return;
            }
        };
        let old = std::mem::take(&mut self.leaders);
        let mut counts: BTreeMap<String, i32> = BTreeMap::new();
        for t in &md.topics {
            if t.error.is_some() && t.partitions.is_empty() {
                continue;
            }
            counts.insert(t.name.clone(), t.partitions.len() as i32);
            for p in &t.partitions {
                let tp = TopicPartition::new(t.name.clone(), p.partition);
                let mut leader = (p.leader, p.leader_epoch);
                // A broker behind the others answers an older epoch: keep the newer leader
                // (the Java client's Metadata does the same).
                if let Some(&known) = old.get(&tp)
                    && leader.1 >= 0
                    && known.1 > leader.1
                {
                    leader = known;
                }
                self.leaders.insert(tp, leader);
            }
        }
        let mut validate = 0;
        for (tp, st) in self.parts.iter_mut() {
            if let Some(&leader) = self.leaders.get(tp)
                && st.update_leader(leader)
            {
                validate += 1;
            }
        }
        if validate > 0 {
            tracing::debug!(
                partitions = validate,
                "leaders changed: positions to validate"
            );
        }
        self.metadata_stale = self
            .parts
            .keys()
            .any(|tp| self.leaders.get(tp).is_none_or(|l| l.0 < 0));
        let brokers: HashMap<i32, String> =
            md.brokers.iter().map(|b| (b.node_id, b.addr())).collect();
        self.fetchers
            .retain(|node, f| brokers.get(node) == Some(&f.addr) || f.in_flight);
        self.update_pattern_subscription(&md.topics);
        if let Some(g) = &self.group
            && let Some(assigned) = &g.leader_counts
        {
            let now_counts: BTreeMap<String, i32> = g
                .group_topics
                .iter()
                .filter_map(|t| counts.get(t).map(|c| (t.clone(), *c)))
                .collect();
            if &now_counts != assigned {
                tracing::info!(group = %g.id, "partition counts changed: rebalancing");
                lock(&g.shared).rejoin_needed = true;
            }
        }
    }

    /// Re-evaluates a pattern subscription against a metadata answer listing all topics; a
    /// changed set of matching topics becomes the subscription and makes the member rejoin.
    fn update_pattern_subscription(&mut self, topics: &[crate::cluster::TopicMetadata]) {
        let Some(p) = self.pattern.as_mut() else {
            return;
        };
        let Some(change) = p.update(topics) else {
            return;
        };
        let matched = p.topics().map(<[String]>::to_vec).unwrap_or_default();
        tracing::info!(
            pattern = %p.pattern.as_str(),
            added = ?change.added,
            removed = ?change.removed,
            "topics matching the subscribed pattern changed"
        );
        if self.subscription.as_ref() != Some(&matched) {
            self.subscription = Some(matched);
            if let Some(g) = &self.group {
                lock(&g.shared).rejoin_needed = true;
            }
        }
    }

    /// Looks up positions of partitions that have none: an explicit seek_to_*, else the
    /// committed offset, else `auto.offset.reset`.
    async fn update_fetch_positions(&mut self) -> Result<()> {
        let missing: Vec<(TopicPartition, Option<ResetTo>)> = self
            .parts
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(tp, s)| (tp.clone(), s.reset))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut resets: Vec<(TopicPartition, ResetTo)> = Vec::new();
        let mut need_committed = Vec::new();
        for (tp, reset) in missing {
            match reset {
                Some(r) => resets.push((tp, r)),
                None => need_committed.push(tp),
            }
        }
        if !need_committed.is_empty() {
            let committed = if self.group.is_some() {
                self.fetch_committed(&need_committed).await?
            } else {
                HashMap::new()
            };
            for tp in need_committed {
                match committed.get(&tp).copied().flatten() {
                    Some(c) => {
                        if let Some(st) = self.parts.get_mut(&tp) {
                            st.seek_unvalidated(c.offset, c.leader_epoch);
                        }
                    }
                    None => match self.config.auto_offset_reset {
                        OffsetReset::Earliest => resets.push((tp, ResetTo::Earliest)),
                        OffsetReset::Latest => resets.push((tp, ResetTo::Latest)),
                        OffsetReset::None => {
                            return Err(ClientError::NotFound(format!(
                                "no committed offset for {} and auto.offset.reset is none",
                                tp_name(&tp)
                            )));
                        }
                    },
                }
            }
        }
        let mut by_spec: BTreeMap<(u8, i64), Vec<TopicPartition>> = BTreeMap::new();
        for (tp, r) in resets {
            let key = match r {
                ResetTo::Earliest => (0, 0),
                ResetTo::Latest => (1, 0),
                ResetTo::Timestamp(t) => (2, t),
            };
            by_spec.entry(key).or_default().push(tp);
        }
        let mut to_latest: Vec<TopicPartition> = Vec::new();
        for ((kind, ts), tps) in by_spec {
            let spec = match kind {
                0 => OffsetSpec::Earliest,
                1 => OffsetSpec::Latest,
                _ => OffsetSpec::Timestamp(ts),
            };
            for o in self.admin.list_offsets(&tps, spec).await? {
                let tp = TopicPartition::new(o.topic, o.partition);
                match o.offset {
                    Some(off) => {
                        if let Some(st) = self.parts.get_mut(&tp) {
                            st.seek_validated(off, o.leader_epoch.unwrap_or(-1));
                        }
                    }
                    // A timestamp after every record: read from the end.
                    None => to_latest.push(tp),
                }
            }
        }
        if !to_latest.is_empty() {
            for o in self
                .admin
                .list_offsets(&to_latest, OffsetSpec::Latest)
                .await?
            {
                let tp = TopicPartition::new(o.topic, o.partition);
                if let (Some(off), Some(st)) = (o.offset, self.parts.get_mut(&tp)) {
                    st.seek_validated(off, o.leader_epoch.unwrap_or(-1));
                }
            }
        }
        Ok(())
    }

    /// Checks the positions awaiting validation (after a leader change, or a position taken
    /// with an epoch from a commit or a seek) with OffsetForLeaderEpoch at their leaders, as
    /// the Java client's `validatePositionsIfNeeded` (KIP-320): a log truncated below the
    /// position moves it to where the log diverges, or resets it by `auto.offset.reset` when
    /// the leader knows no end for the epoch; with `none` the truncation is the error. Fenced
    /// or unknown epochs and moved leaders refresh metadata and retry after
    /// `retry.backoff.ms`; a broker without OffsetForLeaderEpoch skips the check.
    async fn validate_positions(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut by_node: BTreeMap<i32, Vec<epochs::EpochQuery>> = BTreeMap::new();
        for (tp, st) in self.parts.iter_mut() {
            if !st.awaiting_validation || st.validate_after.is_some_and(|t| t > now) {
                continue;
            }
            let Some(position) = st.position else {
                st.awaiting_validation = false;
                continue;
            };
            let Some((node, current)) = st.current_leader.filter(|l| l.0 >= 0) else {
                // The leader is not known yet: the next metadata brings it.
                self.metadata_stale = true;
                continue;
            };
            if st.leader_epoch < 0 || current < 0 {
                // Nothing to compare (a broker that gives no epochs).
                st.awaiting_validation = false;
                continue;
            }
            tracing::debug!(partition = %tp_name(tp), position, leader_epoch = st.leader_epoch, current_leader_epoch = current, node, "validating position");
            by_node.entry(node).or_default().push(epochs::EpochQuery {
                tp: tp.clone(),
                current_leader_epoch: current,
                leader_epoch: st.leader_epoch,
            });
        }
        let mut first_error: Option<ClientError> = None;
        for (node, queries) in by_node {
            let retry_at = Instant::now() + self.config.retry_backoff;
            let answers = match self.offsets_for_leader_epoch(node, &queries).await {
                Ok(a) => a,
                Err(e @ ClientError::UnsupportedApi { .. }) => {
                    tracing::debug!(node, error = %e, "no OffsetForLeaderEpoch: positions not validated");
                    for q in &queries {
                        if let Some(st) = self.parts.get_mut(&q.tp) {
                            st.awaiting_validation = false;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(node, error = %e, "validating positions failed; retrying");
                    self.metadata_stale = true;
                    for q in &queries {
                        if let Some(st) = self.parts.get_mut(&q.tp) {
                            st.validate_after = Some(retry_at);
                        }
                    }
                    continue;
                }
            };
            for q in queries {
                let Some(st) = self.parts.get_mut(&q.tp) else {
                    continue;
                };
                let asked = (st.current_leader.map(|l| l.1), st.leader_epoch);
                if !st.awaiting_validation
                    || asked != (Some(q.current_leader_epoch), q.leader_epoch)
                {
                    continue;
                }
                let Some(position) = st.position else {
                    continue;
                };
                let Some(a) = answers.get(&q.tp) else {
                    st.validate_after = Some(retry_at);
                    continue;
                };
                if a.error_code != 0 {
                    let code = a.error_code;
                    if refresh_metadata_error(code) {
                        // FENCED_LEADER_EPOCH (our epoch is old), UNKNOWN_LEADER_EPOCH (the
                        // broker is behind), NOT_LEADER_OR_FOLLOWER...: ask again later,
                        // with fresh metadata.
                        self.metadata_stale = true;
                        st.validate_after = Some(retry_at);
                    } else if first_error.is_none() {
                        first_error = Some(ClientError::broker(
                            code,
                            format!("validate the position of {}", tp_name(&q.tp)),
                            None,
                        ));
                    }
                    continue;
                }
                match validation_outcome(
                    position,
                    a.leader_epoch,
                    a.end_offset,
                    self.config.auto_offset_reset,
                ) {
                    Validation::Valid => {
                        st.awaiting_validation = false;
                        st.validate_after = None;
                    }
                    Validation::SeekTo(offset, epoch) => {
                        tracing::info!(partition = %tp_name(&q.tp), position, leader_epoch = q.leader_epoch, divergent_offset = offset, divergent_epoch = epoch, "log truncation detected: going on from the first offset known to diverge");
                        st.seek_validated(offset, epoch);
                    }
                    Validation::Reset(to) => {
                        tracing::info!(partition = %tp_name(&q.tp), position, leader_epoch = q.leader_epoch, reset = ?to, "log truncation detected (no end offset for the epoch): resetting");
                        st.set_position(None, Some(to));
                    }
                    Validation::Fail(divergent_offset) => {
                        tracing::warn!(partition = %tp_name(&q.tp), position, leader_epoch = q.leader_epoch, ?divergent_offset, "log truncation detected and auto.offset.reset is none");
                        if first_error.is_none() {
                            first_error = Some(ClientError::LogTruncation {
                                topic: q.tp.topic.clone(),
                                partition: q.tp.partition,
                                offset: position,
                                leader_epoch: q.leader_epoch,
                                divergent_offset,
                            });
                        }
                    }
                }
            }
        }
        self.buffer
            .retain(|c| self.parts.get(&c.tp).is_some_and(|st| st.epoch == c.epoch));
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One OffsetForLeaderEpoch to broker `node`.
    async fn offsets_for_leader_epoch(
        &mut self,
        node: i32,
        queries: &[epochs::EpochQuery],
    ) -> Result<HashMap<TopicPartition, epochs::EpochEnd>> {
        let cluster = self.admin.cluster();
        let addr = match cluster.brokers().iter().find(|b| b.node_id == node) {
            Some(b) => b.addr(),
            None => {
                return Err(ClientError::NotFound(format!(
                    "broker {node} is not in the cluster metadata"
                )));
            }
        };
        let r = cluster
            .call_at_addr(&addr, |version| epochs::request(queries, version))
            .await?;
        Ok(epochs::answers(&r))
    }

    // ------------------------------------------------------------------ group

    fn group_ref(&self) -> Result<&GroupCtx> {
        self.group.as_ref().ok_or_else(|| {
            ClientError::InvalidArgument("this needs a consumer with a group.id".into())
        })
    }

    /// Finds the coordinator if it is not known.
    async fn ensure_coordinator(&mut self) -> Result<()> {
        let g = self.group_ref()?;
        let (id, conn, shared) = (g.id.clone(), Arc::clone(&g.conn), Arc::clone(&g.shared));
        if conn.lock().await.addr.is_some() {
            return Ok(());
        }
        let addr = self.admin.cluster().find_coordinator(&id).await?;
        conn.lock().await.set_coordinator(Some(addr.clone()));
        lock(&shared).coordinator = Some(addr);
        Ok(())
    }

    async fn forget_coordinator(&mut self) {
        let Some(g) = &self.group else {
            return;
        };
        let (id, conn, shared) = (g.id.clone(), Arc::clone(&g.conn), Arc::clone(&g.shared));
        self.admin.cluster().forget_coordinator(&id);
        conn.lock().await.forget();
        lock(&shared).coordinator = None;
    }

    /// After an error from the coordinator: forget it if it moved or the connection broke.
    async fn after_coordinator_error(&mut self, e: &ClientError) {
        let moved = e.code().is_some_and(group::is_coordinator_error);
        if moved || e.breaks_connection() || matches!(e, ClientError::Connect { .. }) {
            self.forget_coordinator().await;
        }
    }

    fn coordinator_retriable(e: &ClientError) -> bool {
        e.breaks_connection()
            || matches!(e, ClientError::Connect { .. })
            || e.code().is_some_and(|c| {
                group::is_coordinator_error(c) || c == codes::COORDINATOR_LOAD_IN_PROGRESS
            })
    }

    async fn fetch_committed(
        &mut self,
        tps: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<group::Committed>>> {
        let conn = Arc::clone(&self.group_ref()?.conn);
        let deadline = Instant::now() + self.config.client.connection.request_timeout;
        loop {
            let r = match self.ensure_coordinator().await {
                Ok(()) => conn.lock().await.fetch_committed(tps).await,
                Err(e) => Err(e),
            };
            match r {
                Err(e) if Self::coordinator_retriable(&e) && Instant::now() < deadline => {
                    self.after_coordinator_error(&e).await;
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Generation and member id to commit with: the current ones while in the group, -1 and
    /// "" for a consumer with assigned partitions.
    fn commit_identity(&self) -> (i32, String) {
        match (&self.group, &self.subscription) {
            (Some(g), Some(_)) => {
                let s = lock(&g.shared);
                (s.generation, s.member_id.clone())
            }
            _ => (-1, String::new()),
        }
    }

    /// Positions of assigned partitions (`only_changed`: those not committed already).
    fn consumed_offsets(&self, only_changed: bool) -> Vec<OffsetToCommit> {
        let last = self.group.as_ref().map(|g| &g.last_committed);
        self.parts
            .iter()
            .filter_map(|(tp, st)| {
                let offset = st.position?;
                if only_changed && last.and_then(|l| l.get(tp)) == Some(&offset) {
                    return None;
                }
                Some(OffsetToCommit {
                    tp: tp.clone(),
                    offset,
                    leader_epoch: st.leader_epoch,
                })
            })
            .collect()
    }

    fn to_commit(offsets: &[PartitionOffset]) -> Vec<OffsetToCommit> {
        offsets
            .iter()
            .map(|o| OffsetToCommit {
                tp: TopicPartition::new(o.topic.clone(), o.partition),
                offset: o.offset,
                leader_epoch: -1,
            })
            .collect()
    }

    /// Reacts to a commit error the way the group needs (rejoin, find the coordinator).
    fn note_commit_error(&self, e: &ClientError) {
        let Some(g) = &self.group else {
            return;
        };
        match e.code() {
            Some(codes::UNKNOWN_MEMBER_ID) => {
                let mut s = lock(&g.shared);
                s.reset_member();
                s.rejoin_needed = true;
                s.partitions_lost = true;
            }
            Some(codes::ILLEGAL_GENERATION | codes::REBALANCE_IN_PROGRESS) => {
                lock(&g.shared).rejoin_needed = true;
            }
            Some(c) if group::is_coordinator_error(c) => {
                lock(&g.shared).coordinator_unknown = true;
            }
            _ => {}
        }
    }

    /// Commits `offsets` (`None`: the positions of every assigned partition) and waits for
    /// the answer, retrying while the coordinator moves or loads. Earlier asynchronous
    /// commits are sent (and their callbacks run) first.
    pub async fn commit_sync(&mut self, offsets: Option<&[PartitionOffset]>) -> Result<()> {
        let list = match offsets {
            Some(o) => Self::to_commit(o),
            None => self.consumed_offsets(false),
        };
        let r = self.commit_now(&list).await;
        self.run_commit_callbacks();
        r
    }

    async fn commit_now(&mut self, list: &[OffsetToCommit]) -> Result<()> {
        let conn = Arc::clone(&self.group_ref()?.conn);
        self.wait_async_commits().await;
        if list.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.client.connection.request_timeout;
        loop {
            let (generation, member_id) = self.commit_identity();
            let r = match self.ensure_coordinator().await {
                Ok(()) => conn.lock().await.commit(generation, &member_id, list).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    if let Some(g) = self.group.as_mut() {
                        for o in list {
                            g.last_committed.insert(o.tp.clone(), o.offset);
                        }
                    }
                    return Ok(());
                }
                Err(e) if Self::coordinator_retriable(&e) && Instant::now() < deadline => {
                    self.after_coordinator_error(&e).await;
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
                Err(e) => {
                    self.note_commit_error(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Commits `offsets` (`None`: current positions) in the background; `callback` runs with
    /// the outcome during a later `poll`, `commit_sync` or `close`. Commits reach the
    /// coordinator in the order they were made.
    pub fn commit_async(
        &mut self,
        offsets: Option<&[PartitionOffset]>,
        callback: Option<CommitCallback>,
    ) {
        let list = match offsets {
            Some(o) => Self::to_commit(o),
            None => self.consumed_offsets(false),
        };
        if self.group.is_none() {
            if let Some(cb) = callback {
                cb(Err(ClientError::InvalidArgument(
                    "commit needs a consumer with a group.id".into(),
                )));
            }
            return;
        }
        self.commit_async_internal(list, callback);
    }

    fn commit_async_internal(
        &mut self,
        list: Vec<OffsetToCommit>,
        callback: Option<CommitCallback>,
    ) {
        let (generation, member_id) = self.commit_identity();
        let Some(g) = self.group.as_mut() else {
            return;
        };
        if list.is_empty() {
            if let Some(cb) = callback {
                cb(Ok(()));
            }
            return;
        }
        let id = g.next_commit_id;
        g.next_commit_id += 1;
        g.callbacks.insert(id, callback);
        let conn = Arc::clone(&g.conn);
        let tx = g.commits_tx.clone();
        tokio::spawn(async move {
            let result = conn
                .lock()
                .await
                .commit(generation, &member_id, &list)
                .await;
            let _ = tx
                .send(CommitDone {
                    id,
                    offsets: list,
                    result,
                })
                .await;
        });
    }

    /// Runs the callbacks of finished asynchronous commits.
    fn run_commit_callbacks(&mut self) {
        loop {
            let Some(g) = self.group.as_mut() else {
                return;
            };
            let Ok(done) = g.commits_rx.try_recv() else {
                return;
            };
            self.finish_async_commit(done);
        }
    }

    /// Waits (up to the request timeout) until every asynchronous commit made so far has its
    /// answer, and runs their callbacks: what follows reaches the coordinator after them.
    async fn wait_async_commits(&mut self) {
        let deadline = tokio::time::Instant::now() + self.config.client.connection.request_timeout;
        loop {
            let Some(g) = self.group.as_mut() else {
                return;
            };
            if g.callbacks.is_empty() {
                return;
            }
            match tokio::time::timeout_at(deadline, g.commits_rx.recv()).await {
                Ok(Some(done)) => self.finish_async_commit(done),
                _ => return,
            }
        }
    }

    fn finish_async_commit(&mut self, done: CommitDone) {
        let Some(g) = self.group.as_mut() else {
            return;
        };
        let cb = g.callbacks.remove(&done.id).flatten();
        match &done.result {
            Ok(()) => {
                for o in &done.offsets {
                    g.last_committed.insert(o.tp.clone(), o.offset);
                }
            }
            Err(e) => {
                tracing::warn!(group = %g.id, error = %e, "asynchronous commit failed");
                self.note_commit_error(e);
            }
        }
        if let Some(cb) = cb {
            cb(done.result);
        }
    }

    fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit {
            return;
        }
        let Some(g) = &self.group else {
            return;
        };
        let now = Instant::now();
        if now < g.next_auto_commit {
            return;
        }
        if self.subscription.is_some() && lock(&g.shared).state != MemberState::Stable {
            return;
        }
        let list = self.consumed_offsets(true);
        self.commit_async_internal(list, None);
        if let Some(g) = self.group.as_mut() {
            g.next_auto_commit = now + self.config.auto_commit_interval;
        }
    }

    fn ensure_heartbeat_task(&mut self) {
        let Some(g) = self.group.as_mut() else {
            return;
        };
        if g.heartbeat.is_some() {
            return;
        }
        let settings = HeartbeatSettings {
            group_id: g.id.clone(),
            interval: self.config.heartbeat_interval,
            session_timeout: self.config.session_timeout,
            max_poll_interval: self.config.max_poll_interval,
            retry_backoff: self.config.retry_backoff,
            connection: self.config.client.connection.clone(),
        };
        g.heartbeat = Some(tokio::spawn(group::heartbeat_loop(
            settings,
            Arc::clone(&g.shared),
            Arc::clone(&g.wake),
        )));
    }

    /// Makes sure the member is in the group with an assignment; `false` if `deadline`
    /// passed while joining kept failing with retriable errors.
    async fn ensure_group_active(&mut self, deadline: Instant) -> Result<bool> {
        let Some(topics) = self.subscription.clone() else {
            return Ok(true);
        };
        self.ensure_heartbeat_task();
        loop {
            let Some(g) = &self.group else {
                return Ok(true);
            };
            let (stable, lost, coordinator_unknown, fatal) = {
                let mut s = lock(&g.shared);
                let r = (
                    s.state == MemberState::Stable && !s.rejoin_needed,
                    s.partitions_lost,
                    s.coordinator_unknown,
                    s.fatal.take(),
                );
                s.coordinator_unknown = false;
                r
            };
            if let Some(code) = fatal {
                return Err(ClientError::broker(
                    code,
                    format!("heartbeat of group '{}'", g.id),
                    None,
                ));
            }
            if coordinator_unknown {
                self.forget_coordinator().await;
                // Heartbeats need the coordinator's address: find it again now.
                if stable && let Err(e) = self.ensure_coordinator().await {
                    tracing::debug!(error = %e, "finding the coordinator failed");
                    if let Some(g) = &self.group {
                        lock(&g.shared).coordinator_unknown = true;
                    }
                }
            }
            if stable {
                return Ok(true);
            }
            self.prepare_rejoin(lost).await;
            match self.join_and_sync(&topics).await {
                Ok(()) => {}
                Err(e) if join_retriable(&e) => {
                    tracing::debug!(error = %e, "joining the group failed; retrying");
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Before (re)joining: commit (auto-commit, unless the partitions were lost); then, for
    /// the eager protocol (or lost partitions), tell the listener and drop the assignment. A
    /// cooperative member keeps its partitions through the rebalance.
    async fn prepare_rejoin(&mut self, lost: bool) {
        self.wait_async_commits().await;
        let owned = self.assignment();
        if !owned.is_empty() {
            if !lost && self.config.enable_auto_commit {
                let list = self.consumed_offsets(true);
                if let Err(e) = self.commit_now(&list).await {
                    tracing::warn!(error = %e, "commit before rebalance failed");
                }
            }
            let keep = !lost && self.config.is_cooperative();
            if let Some(l) = self.listener.as_mut() {
                if lost {
                    l.on_partitions_lost(&owned);
                } else if !keep {
                    l.on_partitions_revoked(&owned);
                }
            }
            if !keep {
                self.parts.clear();
                self.buffer.clear();
            }
        }
        if let Some(g) = &self.group {
            let mut s = lock(&g.shared);
            s.partitions_lost = false;
            s.rejoin_needed = false;
        }
    }

    /// One JoinGroup + SyncGroup round; on success the member is Stable with its assignment.
    async fn join_and_sync(&mut self, topics: &[String]) -> Result<()> {
        self.ensure_coordinator().await?;
        let (conn, shared, group_id) = {
            let g = self.group_ref()?;
            (Arc::clone(&g.conn), Arc::clone(&g.shared), g.id.clone())
        };
        // What the member still owns (cooperative: everything it kept; eager: nothing, it
        // revoked all before joining), and since which generation.
        let mut owned: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for tp in self.parts.keys() {
            owned
                .entry(tp.topic.clone())
                .or_default()
                .push(tp.partition);
        }
        let subscription = ConsumerSubscription {
            version: SUBSCRIPTION_MAX_VERSION,
            topics: topics.to_vec(),
            user_data: None,
            owned_partitions: owned.into_iter().collect(),
            generation_id: if self.parts.is_empty() {
                -1
            } else {
                lock(&shared).generation
            },
            rack_id: self.config.client_rack.clone(),
        }
        .encode()?;
        let protocols: Vec<(&'static str, Bytes)> = self
            .config
            .assignment_strategies
            .iter()
            .map(|s| (s.name(), subscription.clone()))
            .collect();
        let session_ms = millis(self.config.session_timeout);
        let rebalance_ms = millis(self.config.max_poll_interval);
        let mut member_id = {
            let mut s = lock(&shared);
            s.state = MemberState::Rebalancing;
            s.member_id.clone()
        };
        let context = || format!("join group '{group_id}'");
        let join = loop {
            let r = conn
                .lock()
                .await
                .join(&member_id, session_ms, rebalance_ms, &protocols)
                .await;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    self.after_coordinator_error(&e).await;
                    return Err(e);
                }
            };
            match r.error_code {
                0 => break r,
                group::MEMBER_ID_REQUIRED => {
                    member_id = r.member_id.to_string();
                    lock(&shared).member_id = member_id.clone();
                }
                code => {
                    let e = ClientError::broker(code, context(), None);
                    if code == codes::UNKNOWN_MEMBER_ID {
                        let mut s = lock(&shared);
                        s.reset_member();
                        s.partitions_lost = true;
                    }
                    self.after_coordinator_error(&e).await;
                    return Err(e);
                }
            }
        };
        let generation = join.generation_id;
        let member_id = join.member_id.to_string();
        let protocol = join
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        {
            let mut s = lock(&shared);
            s.member_id = member_id.clone();
            s.generation = generation;
        }
        let assignments = if join.leader == join.member_id {
            self.lead_assignment(&protocol, &join.members).await?
        } else {
            if let Some(g) = self.group.as_mut() {
                g.leader_counts = None;
            }
            Vec::new()
        };
        let synced = conn
            .lock()
            .await
            .sync(generation, &member_id, &protocol, assignments)
            .await;
        let bytes = match synced {
            Ok(b) => b,
            Err(e) => {
                match e.code() {
                    Some(codes::UNKNOWN_MEMBER_ID) => {
                        let mut s = lock(&shared);
                        s.reset_member();
                        s.partitions_lost = true;
                    }
                    Some(codes::ILLEGAL_GENERATION) => {
                        let mut s = lock(&shared);
                        s.generation = -1;
                        s.partitions_lost = true;
                    }
                    _ => {}
                }
                self.after_coordinator_error(&e).await;
                return Err(e);
            }
        };
        let assignment = decode_assignment(&bytes)?;
        let mut assigned: Vec<TopicPartition> = assignment
            .partitions
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| TopicPartition::new(t.clone(), *p)))
            .collect();
        assigned.sort();
        assigned.dedup();
        // Eager members own nothing here (they revoked everything before joining);
        // cooperative ones give up only what moved, then join again so it can be reassigned.
        let new: BTreeSet<&TopicPartition> = assigned.iter().collect();
        let revoked: Vec<TopicPartition> = self
            .parts
            .keys()
            .filter(|tp| !new.contains(tp))
            .cloned()
            .collect();
        let added: Vec<TopicPartition> = assigned
            .iter()
            .filter(|tp| !self.parts.contains_key(*tp))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            if let Some(l) = self.listener.as_mut() {
                l.on_partitions_revoked(&revoked);
            }
            for tp in &revoked {
                self.parts.remove(tp);
            }
            self.buffer.retain(|c| new.contains(&c.tp));
        }
        for tp in &added {
            self.parts.insert(tp.clone(), PartitionState::new());
        }
        self.metadata_stale = true;
        self.metadata_at = None;
        {
            let mut s = lock(&shared);
            s.state = MemberState::Stable;
            if !revoked.is_empty() && self.config.is_cooperative() {
                s.rejoin_needed = true;
            }
        }
        tracing::debug!(group = %group_id, generation, member = %member_id, partitions = assigned.len(), "joined");
        if let Some(l) = self.listener.as_mut() {
            l.on_partitions_assigned(&added);
        }
        Ok(())
    }

    /// As the leader: decode every member's subscription, read the partition counts, run the
    /// chosen assignor and encode each member's assignment.
    async fn lead_assignment(
        &mut self,
        protocol: &str,
        members: &[JoinGroupResponseMember],
    ) -> Result<Vec<(String, Bytes)>> {
        let assignor = assignor::assignor_for(protocol).ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "the group chose assignor '{protocol}', which this client does not have"
            ))
        })?;
        let mut subs = Vec::with_capacity(members.len());
        let mut all_topics: BTreeSet<String> = BTreeSet::new();
        for m in members {
            let sub = decode_subscription(&m.metadata)?;
            all_topics.extend(sub.topics.iter().cloned());
            subs.push(MemberSubscription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                topics: sub.topics,
                generation_id: sub.generation_id,
                owned_partitions: sub
                    .owned_partitions
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| TopicPartition::new(t.clone(), *p)))
                    .collect(),
            });
        }
        let topics: Vec<String> = all_topics.into_iter().collect();
        let md = self.admin.cluster().metadata(Some(&topics)).await?;
        let counts: BTreeMap<String, i32> = md
            .topics
            .iter()
            .filter(|t| t.error.is_none() && !t.partitions.is_empty())
            .map(|t| (t.name.clone(), t.partitions.len() as i32))
            .collect();
        let result = assignor.assign(&counts, &subs);
        let mut out = Vec::with_capacity(result.len());
        for (member, tps) in result {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for tp in tps {
                by_topic.entry(tp.topic).or_default().push(tp.partition);
            }
            let a = ConsumerAssignment {
                version: 3,
                partitions: by_topic.into_iter().collect(),
                user_data: None,
            };
            out.push((member, a.encode()?));
        }
        if let Some(g) = self.group.as_mut() {
            g.leader_counts = Some(counts);
            g.group_topics = topics;
        }
        Ok(out)
    }

    /// Commits (auto-commit), revokes and sends LeaveGroup, if in the group.
    async fn leave_group_now(&mut self) -> Result<()> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        let (conn, shared) = (Arc::clone(&g.conn), Arc::clone(&g.shared));
        let (stable, member_id) = {
            let s = lock(&shared);
            (s.state == MemberState::Stable, s.member_id.clone())
        };
        self.wait_async_commits().await;
        let mut result = Ok(());
        if stable && self.config.enable_auto_commit {
            let list = self.consumed_offsets(true);
            result = self.commit_now(&list).await;
        }
        let owned = self.assignment();
        if !owned.is_empty()
            && let Some(l) = self.listener.as_mut()
        {
            l.on_partitions_revoked(&owned);
        }
        if !member_id.is_empty() {
            let left = conn.lock().await.leave(&member_id).await;
            if let Err(e) = left {
                tracing::debug!(error = %e, "leave group failed");
            }
        }
        lock(&shared).reset_member();
        self.parts.clear();
        self.buffer.clear();
        result
    }

    /// Leaves the group (after committing, with auto-commit, and revoking), waits for
    /// outstanding asynchronous commits (up to the request timeout) and stops the background
    /// tasks. Dropping a consumer without `close` stops the tasks too, but the group notices
    /// only when the session times out.
    pub async fn close(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.subscription.is_some() {
            result = self.leave_group_now().await;
        } else if self.manual && self.group.is_some() && self.config.enable_auto_commit {
            let list = self.consumed_offsets(true);
            result = self.commit_now(&list).await;
        }
        if let Some(g) = self.group.as_mut()
            && let Some(h) = g.heartbeat.take()
        {
            h.abort();
        }
        self.wait_async_commits().await;
        self.fetchers.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset, OffsetForLeaderTopicResult,
    };
    use kafka_protocol::messages::{
        ApiVersionsResponse, FetchResponse, MetadataResponse, OffsetForLeaderEpochResponse,
        RequestKind, ResponseKind,
    };
    use kafka_protocol::protocol::StrBytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the fake leader below saw.
    #[derive(Debug, Default)]
    struct Seen {
        /// Its leader epoch (bumped to 6 by the first Fetch: a leader change).
        epoch: i32,
        metadata: usize,
        fetch_epochs: Vec<i32>,
        /// (current_leader_epoch, leader_epoch) of each OffsetForLeaderEpoch.
        validations: Vec<(i32, i32)>,
    }

    fn three_records_at_epoch(epoch: i32) -> Bytes {
        let mut recs = Vec::new();
        for i in 0..3u8 {
            vltava_protocol::records::RecordView {
                attributes: 0,
                timestamp_delta: 0,
                offset_delta: i32::from(i),
                key: None,
                value: Some(&[b'a' + i][..]),
                headers: &[0],
            }
            .encode(&mut recs);
        }
        let header = vltava_protocol::batch::BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: epoch,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: 2,
            base_timestamp: 1,
            max_timestamp: 1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: 3,
        };
        Bytes::from(vltava_protocol::batch::build_batch(&header, &recs))
    }

    fn answer(seen: &Mutex<Seen>, port: u16, req: RequestKind) -> Option<ResponseKind> {
        let mut s = seen.lock().ok()?;
        Some(match req {
            RequestKind::ApiVersions(_) => {
                let mut r = ApiVersionsResponse::default();
                for (k, min, max) in [
                    (ApiKey::ApiVersions, 0, 4),
                    (ApiKey::Metadata, 4, 12),
                    (ApiKey::Fetch, 4, 12),
                    (ApiKey::OffsetForLeaderEpoch, 2, 4),
                ] {
                    let mut v = ApiVersion::default();
                    v.api_key = k as i16;
                    v.min_version = min;
                    v.max_version = max;
                    r.api_keys.push(v);
                }
                ResponseKind::ApiVersions(r)
            }
            RequestKind::Metadata(m) => {
                s.metadata += 1;
                let mut r = MetadataResponse::default();
                let mut b = MetadataResponseBroker::default();
                b.node_id = 0.into();
                b.host = StrBytes::from_static_str("127.0.0.1");
                b.port = i32::from(port);
                r.brokers.push(b);
                for t in m.topics.unwrap_or_default() {
                    let mut rt = MetadataResponseTopic::default();
                    rt.name = t.name;
                    let mut p = MetadataResponsePartition::default();
                    p.leader_id = 0.into();
                    p.leader_epoch = s.epoch;
                    rt.partitions.push(p);
                    r.topics.push(rt);
                }
                ResponseKind::Metadata(r)
            }
            RequestKind::OffsetForLeaderEpoch(q) => {
                let mut r = OffsetForLeaderEpochResponse::default();
                for t in q.topics {
                    let mut rt = OffsetForLeaderTopicResult::default();
                    rt.topic = t.topic;
                    for p in t.partitions {
                        s.validations.push((p.current_leader_epoch, p.leader_epoch));
                        let mut e = EpochEndOffset::default();
                        e.partition = p.partition;
                        if p.current_leader_epoch < s.epoch {
                            e.error_code = FENCED_LEADER_EPOCH;
                        } else {
                            // The position's epoch ends at the log end, 3.
                            e.leader_epoch = p.leader_epoch;
                            e.end_offset = 3;
                        }
                        rt.partitions.push(e);
                    }
                    r.topics.push(rt);
                }
                ResponseKind::OffsetForLeaderEpoch(r)
            }
            RequestKind::Fetch(f) => {
                let mut r = FetchResponse::default();
                for t in f.topics {
                    let mut rt = FetchableTopicResponse::default();
                    rt.topic = t.topic;
                    for p in t.partitions {
                        s.fetch_epochs.push(p.current_leader_epoch);
                        if s.fetch_epochs.len() == 1 {
                            s.epoch = 6;
                        }
                        let mut d = PartitionData::default();
                        d.partition_index = p.partition;
                        d.high_watermark = 3;
                        if p.current_leader_epoch < s.epoch {
                            d.error_code = FENCED_LEADER_EPOCH;
                        } else if p.fetch_offset == 0 {
                            d.records = Some(three_records_at_epoch(6));
                        }
                        rt.partitions.push(d);
                    }
                    r.responses.push(rt);
                }
                ResponseKind::Fetch(r)
            }
            _ => return None,
        })
    }

    async fn serve(mut stream: tokio::net::TcpStream, seen: Arc<Mutex<Seen>>, port: u16) {
        loop {
            let Ok(len) = stream.read_i32().await else {
                return;
            };
            let mut buf = vec![0u8; len.max(0) as usize];
            if stream.read_exact(&mut buf).await.is_err() {
                return;
            }
            let Ok(raw) = vltava_protocol::frame::decode_header(Bytes::from(buf)) else {
                return;
            };
            let (api, version, cid) = (
                raw.api_key,
                raw.header.request_api_version,
                raw.header.correlation_id,
            );
            let Ok(req) = vltava_protocol::frame::decode_body(api, version, raw.body) else {
                return;
            };
            let Some(body) = answer(&seen, port, req) else {
                return;
            };
            let Ok(out) = vltava_protocol::frame::encode_response(api, version, cid, &body) else {
                return;
            };
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// A fetch at a stale leader epoch is fenced: the consumer refreshes metadata, validates
    /// its position against the new epoch and fetches on at that epoch.
    #[tokio::test]
    async fn a_fenced_fetch_refreshes_metadata_validates_and_resumes() -> Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?
            .port();
        let seen = Arc::new(Mutex::new(Seen {
            epoch: 5,
            ..Seen::default()
        }));
        let s2 = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&s2), port));
            }
        });
        let mut config = ConsumerConfig::new(&format!("127.0.0.1:{port}"))?;
        config
            .set("auto.offset.reset", "none")?
            .set("retry.backoff.ms", "10")?;
        let mut c = Consumer::new(config).await?;
        let tp = TopicPartition::new("t", 0);
        c.assign(std::slice::from_ref(&tp))?;
        c.seek_with_leader_epoch(&tp, 0, 5)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < 3 && Instant::now() < deadline {
            got.extend(c.poll(Duration::from_millis(100)).await?);
        }
        let values: Vec<_> = got.iter().filter_map(|r| r.value.clone()).collect();
        assert_eq!(values, vec![&b"a"[..], &b"b"[..], &b"c"[..]]);
        assert_eq!(c.position_leader_epoch(&tp), Some(6));
        let s = seen
            .lock()
            .map_err(|_| ClientError::NotFound("lock".into()))?;
        // Validated at epoch 5, fenced at 5, validated again at 6 (the position's epoch is
        // still 5), fetched at 6.
        assert_eq!(s.validations, vec![(5, 5), (6, 5)]);
        assert_eq!(s.fetch_epochs[0], 5);
        assert!(
            s.fetch_epochs[1..].iter().all(|e| *e == 6),
            "{:?}",
            s.fetch_epochs
        );
        assert!(s.metadata >= 3, "{}", s.metadata);
        Ok(())
    }

    #[test]
    fn validation_keeps_a_position_the_leader_still_holds() {
        for policy in [
            OffsetReset::Earliest,
            OffsetReset::Latest,
            OffsetReset::None,
        ] {
            // The epoch ends at the position, or later (the same epoch goes on), or a smaller
            // epoch's end lies at or past the position.
            assert_eq!(validation_outcome(10, 3, 10, policy), Validation::Valid);
            assert_eq!(validation_outcome(10, 3, 25, policy), Validation::Valid);
            assert_eq!(validation_outcome(10, 1, 12, policy), Validation::Valid);
            assert_eq!(validation_outcome(0, 0, 0, policy), Validation::Valid);
        }
    }

    #[test]
    fn truncation_below_the_position_goes_to_the_divergence_point_or_fails() {
        // The leader's epoch 3 ends at 7 but the consumer read up to 10.
        for policy in [OffsetReset::Earliest, OffsetReset::Latest] {
            assert_eq!(
                validation_outcome(10, 3, 7, policy),
                Validation::SeekTo(7, 3)
            );
            // A smaller epoch than asked whose end is below the position: the same.
            assert_eq!(
                validation_outcome(10, 2, 4, policy),
                Validation::SeekTo(4, 2)
            );
        }
        assert_eq!(
            validation_outcome(10, 3, 7, OffsetReset::None),
            Validation::Fail(Some((7, 3)))
        );
    }

    #[test]
    fn undefined_answers_reset_by_policy() {
        assert_eq!(
            validation_outcome(10, -1, -1, OffsetReset::Earliest),
            Validation::Reset(ResetTo::Earliest)
        );
        assert_eq!(
            validation_outcome(10, -1, -1, OffsetReset::Latest),
            Validation::Reset(ResetTo::Latest)
        );
        assert_eq!(
            validation_outcome(10, -1, -1, OffsetReset::None),
            Validation::Fail(None)
        );
        // Either half undefined is undefined.
        assert_eq!(
            validation_outcome(10, 4, -1, OffsetReset::Earliest),
            Validation::Reset(ResetTo::Earliest)
        );
        assert_eq!(
            validation_outcome(10, -1, 50, OffsetReset::None),
            Validation::Fail(None)
        );
    }

    #[test]
    fn leader_changes_make_positions_with_an_epoch_await_validation() {
        let mut st = PartitionState::new();
        // No position yet: the leader is only noted.
        assert!(!st.update_leader((1, 4)));
        assert_eq!(st.current_leader, Some((1, 4)));
        // A position without an epoch (a plain seek) is not validated.
        st.set_position(Some(5), None);
        assert!(!st.update_leader((2, 5)));
        assert_eq!(st.current_leader, Some((2, 5)));
        // Consumed at epoch 5: the same leader again changes nothing.
        st.leader_epoch = 5;
        assert!(!st.update_leader((2, 5)));
        // An older epoch (stale metadata) and "no leader" are ignored.
        assert!(!st.update_leader((1, 4)));
        assert!(!st.update_leader((-1, 6)));
        assert_eq!(st.current_leader, Some((2, 5)));
        // A newer epoch: validate, and drop what was fetched meanwhile.
        let before = st.epoch;
        st.buffered = true;
        assert!(st.update_leader((3, 6)));
        assert!(st.awaiting_validation);
        assert!(!st.buffered);
        assert!(st.epoch > before);
        // A seek clears it; a seek with an epoch asks for it again.
        st.set_position(Some(7), None);
        assert!(!st.awaiting_validation);
        assert_eq!(st.leader_epoch, -1);
        st.seek_unvalidated(7, 6);
        assert!(st.awaiting_validation);
        assert_eq!(st.leader_epoch, 6);
        st.seek_validated(3, 2);
        assert!(!st.awaiting_validation);
        assert_eq!((st.position, st.leader_epoch), (Some(3), 2));
    }
}
