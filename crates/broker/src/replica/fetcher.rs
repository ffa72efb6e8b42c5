//! Replica fetchers: this node's follower partitions copied from their leaders with Kafka's
//! Fetch (v15, replica state with this broker's epoch, KIP-903), one connection and one task per
//! leader broker carrying all the partitions led there. A fetch names each partition's log end
//! as its fetch offset and the epoch of its last batch (KIP-320); a diverging epoch in the
//! answer truncates the log where it parted from the leader's (never to the high watermark),
//! and the leader's batches are appended unchanged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;
use vltava_protocol::batch;

use super::{FetchPosition, LeaderAssignment, Partition, ReplicaManager};

/// The Fetch version followers send: topic ids (v13), diverging epochs (v12) and the replica
/// state with the broker epoch (v15).
const FETCH_VERSION: i16 = 15;
/// Bound on connecting to a leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one fetch round trip beyond the leader's own wait.
const RESPONSE_MARGIN: Duration = Duration::from_secs(10);

/// Settings of the fetchers, from the broker config.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// This broker's id.
    pub replica_id: i32,
    /// `replica.fetch.wait.max.ms`.
    pub wait_max_ms: i32,
    /// `replica.fetch.min.bytes`.
    pub min_bytes: i32,
    /// `replica.fetch.max.bytes` (per partition).
    pub partition_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    pub response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`.
    pub backoff: Duration,
    /// `socket.request.max.bytes`: the largest response frame accepted.
    pub frame_max_bytes: usize,
}

impl FetcherConfig {
    /// The fetchers' settings of this broker.
    pub fn from_broker(config: &crate::config::BrokerConfig) -> FetcherConfig {
        FetcherConfig {
            replica_id: config.node_id(),
            wait_max_ms: config.replica_fetch_wait_max_ms().clamp(0, i32::MAX as i64) as i32,
            min_bytes: config.replica_fetch_min_bytes(),
            partition_max_bytes: config.replica_fetch_max_bytes(),
            response_max_bytes: config.replica_fetch_response_max_bytes(),
            backoff: Duration::from_millis(config.replica_fetch_backoff_ms()),
            frame_max_bytes: config.socket_request_max_bytes(),
        }
    }
}

/// Keeps one fetcher task per leader broker in line with the partitions this node follows,
/// until `shutdown`. `broker_epoch` gives this incarnation's registration epoch.
pub async fn run_replica_fetchers(
    rm: Arc<ReplicaManager>,
    broker_epoch: Arc<dyn Fn() -> i64 + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = Arc::new(FetcherConfig::from_broker(rm.config()));
    let mut assignments = rm.subscribe_followers();
    let mut tasks: HashMap<i32, (watch::Sender<LeaderAssignment>, JoinHandle<()>)> = HashMap::new();
    loop {
        let current = Arc::clone(&assignments.borrow_and_update());
        tasks.retain(|leader, (_, task)| {
            let keep = current.leaders.contains_key(leader) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (leader, assignment) in &current.leaders {
            match tasks.get(leader) {
                Some((tx, _)) => {
                    tx.send_if_modified(|a| {
                        let changed = a != assignment;
                        if changed {
                            *a = assignment.clone();
                        }
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(assignment.clone());
                    let task = tokio::spawn(fetch_from_leader(
                        *leader,
                        rx,
                        Arc::clone(&config),
                        Arc::clone(&broker_epoch),
                    ));
                    tasks.insert(*leader, (tx, task));
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = assignments.changed() => if changed.is_err() { break },
        }
    }
    for (_, (_, task)) in tasks {
        task.abort();
    }
}

/// One partition's place in a fetcher: where it stands and until when it sits out after an
/// error.
struct Followed {
    partition: Arc<Partition>,
    delayed_until: Option<Instant>,
    /// Where the partition stood when the fetch in flight was built: its answer applies only
    /// if nothing moved meanwhile.
    sent: Option<FetchPosition>,
}

/// The fetch loop for the partitions led by `leader`: connect, fetch, append, repeat; the
/// assignment may change between round trips.
async fn fetch_from_leader(
    leader: i32,
    mut assignment: watch::Receiver<LeaderAssignment>,
    config: Arc<FetcherConfig>,
    broker_epoch: Arc<dyn Fn() -> i64 + Send + Sync>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut correlation_id: i32 = 0;
    let mut round: usize = 0;
    let mut followed: BTreeMap<(Uuid, i32), Followed> = BTreeMap::new();
    let mut addr = None;
    // Set whenever a wait below saw the assignment change: `changed()` marks the new value
    // seen, so `has_changed()` alone would miss it.
    let mut reload = true;
    loop {
        if reload || assignment.has_changed().unwrap_or(false) {
            reload = false;
            let a = assignment.borrow_and_update().clone();
            if a.addr != addr {
                conn = None;
                addr = a.addr.clone();
            }
            let mut next = BTreeMap::new();
            for p in a.partitions {
                let key = (p.topic_id, p.index);
                let delayed_until = followed
                    .remove(&key)
                    .filter(|f| Arc::ptr_eq(&f.partition, &p))
                    .and_then(|f| f.delayed_until);
                next.insert(
                    key,
                    Followed {
                        partition: p,
                        delayed_until,
                        sent: None,
                    },
                );
            }
            followed = next;
        }
        let Some((host, port)) = addr.clone() else {
            // No address for the leader yet: wait for the metadata to name one.
            if assignment.changed().await.is_err() {
                return;
            }
            reload = true;
            continue;
        };
        let now = Instant::now();
        round = round.wrapping_add(1);
        let request = build_request(leader, &config, &mut followed, broker_epoch(), now, round);
        let Some(request) = request else {
            // Every partition sits out a backoff: sleep until the first is due, or until the
            // assignment changes.
            let until = followed
                .values()
                .filter_map(|f| f.delayed_until)
                .min()
                .unwrap_or(now + config.backoff);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                changed = assignment.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    reload = true;
                }
            }
            continue;
        };
        if conn.is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                .await
            {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    conn = Some(stream);
                }
                Ok(Err(e)) => {
                    tracing::debug!(leader, %host, port, error = %e, "cannot reach the leader");
                    reload |= backoff(&config, &mut assignment).await;
                    continue;
                }
                Err(_) => {
                    tracing::debug!(leader, %host, port, "connecting to the leader timed out");
                    reload |= backoff(&config, &mut assignment).await;
                    continue;
                }
            }
        }
        let Some(stream) = conn.as_mut() else {
            continue;
        };
        correlation_id = correlation_id.wrapping_add(1);
        let wait = Duration::from_millis(config.wait_max_ms.max(0) as u64) + RESPONSE_MARGIN;
        let answer = tokio::time::timeout(
            wait,
            round_trip(stream, correlation_id, &request, config.frame_max_bytes),
        )
        .await;
        let response = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(leader, error = %e, "fetch from the leader failed");
                conn = None;
                reload |= backoff(&config, &mut assignment).await;
                continue;
            }
            Err(_) => {
                tracing::debug!(leader, "fetch from the leader timed out");
                conn = None;
                continue;
            }
        };
        if let Some(code) = ResponseError::try_from_code(response.error_code) {
            tracing::debug!(leader, error = ?code, "the leader refused the fetch");
            reload |= backoff(&config, &mut assignment).await;
            continue;
        }
        handle_response(leader, &config, &mut followed, response);
    }
}

/// Sleeps the backoff, or less if the assignment changes; true if it did.
async fn backoff(
    config: &FetcherConfig,
    assignment: &mut watch::Receiver<LeaderAssignment>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(config.backoff) => false,
        _ = assignment.changed() => true,
    }
}

/// The Fetch for every partition not sitting out a backoff; `None` if there is none.
fn build_request(
    leader: i32,
    config: &FetcherConfig,
    followed: &mut BTreeMap<(Uuid, i32), Followed>,
    broker_epoch: i64,
    now: Instant,
    round: usize,
) -> Option<FetchRequest> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    // The order rotates with every request: the leader gives its byte budget to the first
    // partitions and lets only the first exceed it, so a fixed order could starve the last ones
    // (a batch larger than replica.fetch.max.bytes behind busy partitions would never come).
    let keys: Vec<(Uuid, i32)> = followed.keys().copied().collect();
    let start = if keys.is_empty() {
        0
    } else {
        round % keys.len()
    };
    for key in keys[start..].iter().chain(&keys[..start]) {
        let Some(f) = followed.get_mut(key) else {
            continue;
        };
        let (topic_id, index) = key;
        f.sent = None;
        if f.delayed_until.is_some_and(|t| t > now) {
            continue;
        }
        f.delayed_until = None;
        let (fp, sent) = fetch_partition(&f.partition, leader, *index, config.partition_max_bytes);
        f.sent = Some(sent);
        match topics.last_mut() {
            Some(t) if t.topic_id == *topic_id => t.partitions.push(fp),
            _ => {
                let mut t = FetchTopic::default();
                t.topic_id = *topic_id;
                t.partitions.push(fp);
                topics.push(t);
            }
        }
    }
    if topics.is_empty() {
        return None;
    }
    let mut req = FetchRequest::default();
    let mut state = ReplicaState::default();
    state.replica_id = BrokerId(config.replica_id);
    state.replica_epoch = broker_epoch;
    req.replica_state = state;
    req.max_wait_ms = config.wait_max_ms;
    req.min_bytes = config.min_bytes;
    req.max_bytes = config.response_max_bytes;
    req.isolation_level = 0;
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = topics;
    Some(req)
}

/// One partition's entry of a follower fetch from `leader`, built from where the replica stands
/// now (its log end as fetch offset, the epoch of its last batch, its log start), and that
/// position, which the answer must still find to be applied.
pub(super) fn fetch_partition(
    p: &Partition,
    leader: i32,
    index: i32,
    partition_max_bytes: i32,
) -> (FetchPartition, FetchPosition) {
    let (log_end, last_epoch, log_start) = p.follower_position();
    let leader_epoch = p.leader_epoch();
    let mut fp = FetchPartition::default();
    fp.partition = index;
    fp.current_leader_epoch = leader_epoch;
    fp.fetch_offset = log_end as i64;
    fp.last_fetched_epoch = last_epoch;
    fp.log_start_offset = log_start as i64;
    fp.partition_max_bytes = partition_max_bytes;
    let sent = FetchPosition {
        leader,
        leader_epoch,
        fetch_offset: log_end,
    };
    (fp, sent)
}

/// Why a fetch round trip failed.
#[derive(Debug, thiserror::Error)]
enum RoundTripError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("response frame of {0} bytes is out of bounds")]
    FrameSize(i64),
    #[error("response to correlation id {got}, expected {expected}")]
    Correlation { expected: i32, got: i32 },
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("cannot decode the response: {0}")]
    Decode(String),
}

async fn round_trip(
    stream: &mut TcpStream,
    correlation_id: i32,
    request: &FetchRequest,
    frame_max_bytes: usize,
) -> Result<FetchResponse, RoundTripError> {
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Fetch as i16;
    header.request_api_version = FETCH_VERSION;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("vltava-replica-fetcher"));
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header
        .encode(&mut buf, FetchRequest::header_version(FETCH_VERSION))
        .map_err(|e| RoundTripError::Encode(e.to_string()))?;
    request
        .encode(&mut buf, FETCH_VERSION)
        .map_err(|e| RoundTripError::Encode(e.to_string()))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&buf).await?;

    let len = stream.read_i32().await?;
    if len < 4 || len as usize > frame_max_bytes {
        return Err(RoundTripError::FrameSize(len as i64));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await?;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, FetchResponse::header_version(FETCH_VERSION))
        .map_err(|e| RoundTripError::Decode(e.to_string()))?;
    if header.correlation_id != correlation_id {
        return Err(RoundTripError::Correlation {
            expected: correlation_id,
            got: header.correlation_id,
        });
    }
    let response = FetchResponse::decode(&mut body, FETCH_VERSION)
        .map_err(|e| RoundTripError::Decode(e.to_string()))?;
    if body.has_remaining() {
        return Err(RoundTripError::Decode(format!(
            "{} bytes after the response",
            body.remaining()
        )));
    }
    Ok(response)
}

/// Applies one Fetch answer: appends, truncates at a divergence, or sets partitions aside
/// for a backoff.
fn handle_response(
    leader: i32,
    config: &FetcherConfig,
    followed: &mut BTreeMap<(Uuid, i32), Followed>,
    response: FetchResponse,
) {
    let now = Instant::now();
    for t in response.responses {
        for pd in t.partitions {
            let Some(f) = followed.get_mut(&(t.topic_id, pd.partition_index)) else {
                continue;
            };
            let p = Arc::clone(&f.partition);
            // A partition this request did not ask for (or asked for before it was reset).
            let Some(at) = f.sent.take() else {
                continue;
            };
            let outcome = apply_partition(&p, at, pd);
            if let Err(why) = outcome {
                tracing::debug!(leader, topic = %p.topic, partition = p.index, "{why}");
                f.delayed_until = Some(now + config.backoff);
            }
        }
    }
}

/// One partition's part of a Fetch answer.
pub(super) fn apply_partition(
    p: &Partition,
    at: FetchPosition,
    pd: kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<(), String> {
    let (log_end, _, log_start) = p.follower_position();
    // Every change below checks, under the partition's role lock, that it still follows this
    // leader in this epoch from this offset; a stale answer changes nothing.
    match ResponseError::try_from_code(pd.error_code) {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            // Behind the leader's log start: start over there. Ahead of the leader's log:
            // what lies above its high watermark was never acknowledged, and what it has
            // comes again.
            let leader_start = pd.log_start_offset.max(0) as u64;
            if log_end < leader_start {
                p.truncate_fully_and_start_at(at, leader_start)
                    .map_err(|e| format!("cannot restart the log: {e}"))?;
            } else {
                let hw = pd.high_watermark.max(0) as u64;
                p.truncate_to(at, hw.max(log_start))
                    .map_err(|e| format!("cannot truncate: {e}"))?;
            }
            return Ok(());
        }
        Some(e) => return Err(format!("the leader answered {e:?}")),
    }
    let diverging = &pd.diverging_epoch;
    if diverging.epoch >= 0 || diverging.end_offset >= 0 {
        // KIP-320: the leader's log parts from ours at the end of its epoch `epoch` (or
        // earlier). Keep what both logs hold in that epoch; where our own epoch is older, the
        // next fetch names it and the leader checks again.
        let leader_end = diverging.end_offset.max(0) as u64;
        let target = match (diverging.epoch >= 0)
            .then(|| p.end_offset_for_epoch(diverging.epoch))
            .flatten()
        {
            Some((_, our_end)) => our_end.min(leader_end),
            None => log_start.min(leader_end),
        };
        p.truncate_to(at, target)
            .map_err(|e| format!("cannot truncate: {e}"))?;
        return Ok(());
    }
    let mut records = pd.records.unwrap_or_default();
    let mut batches = Vec::new();
    while !records.is_empty() {
        let Some(total) = batch::peek_total_len(&records) else {
            break;
        };
        let total = total.map_err(|e| format!("bad batch from the leader: {e}"))?;
        if total > records.len() {
            // A partial batch at the end of the answer: it comes whole next time.
            break;
        }
        let bytes = records.split_to(total);
        let header =
            batch::verify(&bytes).map_err(|e| format!("bad batch from the leader: {e}"))?;
        batches.push((header, bytes));
    }
    if let Some((first, _)) = batches.first()
        && first.base_offset < log_end as i64
    {
        // Batches that straddle our log end mean the logs disagree on batch boundaries,
        // which a divergence check should have caught: append nothing rather than guess.
        return Err(format!(
            "the leader's batch at {} straddles our log end {log_end}",
            first.base_offset
        ));
    }
    let leader_start = pd.log_start_offset.max(0) as u64;
    let applied = p
        .append_as_follower(at, &batches, pd.high_watermark.max(0) as u64)
        .map_err(|e| format!("cannot append the leader's batches: {e}"))?;
    if applied {
        let at = FetchPosition {
            fetch_offset: p.follower_position().0,
            ..at
        };
        // DeleteRecords and retention on the leader reach the follower this way.
        p.follow_log_start(at, leader_start)
            .map_err(|e| format!("cannot follow the leader's log start: {e}"))?;
    }
    Ok(())
}
