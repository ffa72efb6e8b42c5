//! The producer's view of the cluster, and the control task that keeps it fresh.
//!
//! The control task owns a [`Cluster`] (plain one-request-at-a-time connections, apart from the
//! pipelined Produce connections of the sender). It fetches Metadata for the topics the
//! producer uses (letting the broker create missing ones when `allow.auto.create.topics` is
//! on) when asked, at most every `retry.backoff.ms` unless a new topic is wanted, and at
//! least every `metadata.max.age.ms`; and it asks for producer ids (InitProducerId).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, MetadataRequest, MetadataResponse, TopicName, metadata_request,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, mpsc, watch};

use crate::cluster::{Cluster, join_host_port};
use crate::error::{ClientError, ErrorCode, codes};
use crate::producer::error::ProducerError;
use crate::producer::sender::Event;

/// What the producer knows of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicInfo {
    /// Partition count (0 while the topic is unknown).
    pub count: i32,
    /// Leader node per partition (-1: none).
    pub leaders: Vec<i32>,
    /// Leader epoch per partition (-1: unknown): a Metadata answer with an older epoch than
    /// the one known (from a broker behind the others) does not move the leader back.
    pub epochs: Vec<i32>,
    /// Partitions with a leader, for sticky partitioning.
    pub available: Vec<i32>,
    /// The topic's error in the latest Metadata.
    pub error: Option<i16>,
}

/// Shared metadata: topics, broker addresses, the topics wanted.
#[derive(Debug, Default)]
pub(crate) struct MetadataState {
    pub topics: HashMap<String, Arc<TopicInfo>>,
    pub brokers: HashMap<i32, String>,
    /// Topics to ask about.
    wanted: BTreeSet<String>,
    /// A topic was added to `wanted` since the last fetch.
    wanted_changed: bool,
    /// The last failure to fetch metadata, for error messages.
    pub last_error: Option<String>,
}

/// Metadata shared between `send`, the sender and the control task.
#[derive(Debug)]
pub(crate) struct SharedMetadata {
    pub state: Mutex<MetadataState>,
    /// Bumped after every fetch.
    pub version: watch::Sender<u64>,
    /// Asks the control task for a fetch.
    pub refresh: Notify,
}

/// Errors after which waiting for a topic is pointless.
fn topic_error_is_final(code: i16) -> bool {
    const INVALID_TOPIC_EXCEPTION: i16 = 17;
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    matches!(code, INVALID_TOPIC_EXCEPTION | TOPIC_AUTHORIZATION_FAILED)
}

impl SharedMetadata {
    pub(crate) fn new() -> SharedMetadata {
        SharedMetadata {
            state: Mutex::new(MetadataState::default()),
            version: watch::Sender::new(0),
            refresh: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, MetadataState> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the control task for a fetch soon.
    pub(crate) fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// The topic's metadata once it has partitions, waiting (and asking for fetches) until
    /// `deadline` (`max.block.ms`); true if it had to wait.
    pub(crate) async fn wait_for_topic(
        &self,
        topic: &str,
        deadline: Instant,
        max_block: Duration,
    ) -> Result<(Arc<TopicInfo>, bool), ProducerError> {
        // Fast path, taken by nearly every record: the topic is known.
        if let Some(t) = self.lock().topics.get(topic)
            && t.count > 0
        {
            return Ok((Arc::clone(t), false));
        }
        loop {
            let mut changed = self.version.subscribe();
            let last_error = {
                let mut st = self.lock();
                if let Some(t) = st.topics.get(topic) {
                    if t.count > 0 {
                        return Ok((Arc::clone(t), true));
                    }
                    if let Some(code) = t.error.filter(|c| topic_error_is_final(*c)) {
                        return Err(ProducerError::broker(topic, -1, code, None));
                    }
                }
                if st.wanted.insert(topic.to_string()) {
                    st.wanted_changed = true;
                }
                st.last_error.clone()
            };
            self.request_refresh();
            if tokio::time::timeout_at(deadline.into(), changed.changed())
                .await
                .is_err()
            {
                let detail = last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                let why = {
                    let st = self.lock();
                    st.topics
                        .get(topic)
                        .and_then(|t| t.error)
                        .map(|c| format!(": {}", ErrorCode(c).name()))
                        .unwrap_or_default()
                };
                return Err(ProducerError::Timeout(format!(
                    "topic '{topic}' not present in metadata after {} ms{why}{detail}",
                    max_block.as_millis()
                )));
            }
        }
    }
}

/// Requests to the control task.
#[derive(Debug)]
pub(crate) enum Command {
    /// InitProducerId: a new producer id, or (KIP-360) a new epoch for `current`.
    InitProducerId { current: Option<(i64, i16)> },
}

/// The control task: metadata fetches and InitProducerId, until the sender drops its end of
/// the command channel.
pub(crate) async fn run_control(
    mut cluster: Cluster,
    md: Arc<SharedMetadata>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    settings: ControlSettings,
) {
    let mut last_fetch: Option<Instant> = None;
    let mut failures: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    loop {
        let max_age = last_fetch.map_or(Instant::now(), |t| t + settings.max_age);
        let wake = retry_at.map_or(max_age, |r| r.min(max_age));
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Command::InitProducerId { current }) => {
                    let r = init_producer_id(&mut cluster, current).await;
                    if events.send(Event::ProducerId(r)).is_err() {
                        return;
                    }
                    continue;
                }
            },
            _ = md.refresh.notified() => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        // Rate limit: at most one fetch per retry.backoff.ms, unless a new topic is wanted.
        let new_topic = md.lock().wanted_changed;
        if let Some(t) = last_fetch {
            let gap = backoff(settings.retry_backoff, settings.retry_backoff_max, failures);
            if !new_topic && t.elapsed() < gap {
                tokio::time::sleep_until((t + gap).into()).await;
            }
        }
        let wanted: Vec<String> = {
            let mut st = md.lock();
            st.wanted_changed = false;
            st.wanted.iter().cloned().collect()
        };
        last_fetch = Some(Instant::now());
        match fetch(&mut cluster, &wanted, settings.auto_create).await {
            Ok(resp) => {
                failures = 0;
                retry_at = None;
                apply(&md, resp);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                retry_at = Some(
                    Instant::now()
                        + backoff(settings.retry_backoff, settings.retry_backoff_max, failures),
                );
                md.lock().last_error = Some(e.to_string());
            }
        }
        md.version.send_modify(|v| *v += 1);
    }
}

/// Settings of the control task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ControlSettings {
    pub max_age: Duration,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub auto_create: bool,
}

/// `base * 2^(attempts-1)`, at most `max`.
pub(crate) fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    base.saturating_mul(1 << shift).min(max.max(base))
}

async fn fetch(
    cluster: &mut Cluster,
    topics: &[String],
    auto_create: bool,
) -> Result<MetadataResponse, ClientError> {
    let mut req = MetadataRequest::default();
    req.allow_auto_topic_creation = auto_create;
    req.topics = Some(
        topics
            .iter()
            .map(|t| {
                let mut rt = metadata_request::MetadataRequestTopic::default();
                rt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                rt
            })
            .collect(),
    );
    cluster.call_any(&req).await
}

/// Stores a Metadata answer: topics replace their earlier entries, brokers the broker list;
/// a partition whose answered leader epoch is older than the one known keeps its leader, as in
/// the Java client's Metadata.
pub(crate) fn apply(md: &SharedMetadata, resp: MetadataResponse) {
    let mut st = md.lock();
    if !resp.brokers.is_empty() {
        st.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, join_host_port(&b.host, b.port)))
            .collect();
    }
    for t in resp.topics {
        let Some(name) = t.name.map(|n| n.0.to_string()) else {
            continue;
        };
        let count = t
            .partitions
            .iter()
            .map(|p| p.partition_index + 1)
            .max()
            .unwrap_or(0)
            .max(0);
        let mut leaders = vec![-1; count as usize];
        let mut epochs = vec![-1; count as usize];
        let known = st.topics.get(&name).cloned();
        for p in &t.partitions {
            let Ok(i) = usize::try_from(p.partition_index) else {
                continue;
            };
            let usable = p.error_code != codes::LEADER_NOT_AVAILABLE && p.leader_id.0 >= 0;
            leaders[i] = if usable { p.leader_id.0 } else { -1 };
            epochs[i] = p.leader_epoch;
            if let Some(k) = &known
                && p.leader_epoch >= 0
                && k.epochs.get(i).is_some_and(|e| *e > p.leader_epoch)
            {
                leaders[i] = k.leaders[i];
                epochs[i] = k.epochs[i];
            }
        }
        let available = available_partitions(&leaders);
        let error = ErrorCode::from_code(t.error_code).map(|c| c.0);
        let info = TopicInfo {
            count: if error.is_some() && t.partitions.is_empty() {
                0
            } else {
                count
            },
            leaders,
            epochs,
            available,
            error,
        };
        st.topics.insert(name, Arc::new(info));
    }
}

fn available_partitions(leaders: &[i32]) -> Vec<i32> {
    (0..leaders.len())
        .filter(|i| leaders[*i] >= 0)
        .map(|i| i as i32)
        .collect()
}

/// A leader a broker named in its answer (KIP-951: NOT_LEADER_OR_FOLLOWER and
/// FENCED_LEADER_EPOCH carry the current leader, Produce v10+ the addresses of the brokers
/// named): taken at once when its epoch is newer than the one known and its address is known,
/// without waiting for a Metadata refresh. Returns whether the leader changed.
pub(crate) fn update_leader(
    md: &SharedMetadata,
    topic: &str,
    partition: i32,
    leader: (i32, i32),
    endpoints: &[(i32, String)],
) -> bool {
    let changed = {
        let mut st = md.lock();
        for (node, addr) in endpoints {
            st.brokers.insert(*node, addr.clone());
        }
        let Ok(i) = usize::try_from(partition) else {
            return false;
        };
        let (node, epoch) = leader;
        let known_node = st.brokers.contains_key(&node);
        match st.topics.get_mut(topic) {
            Some(t)
                if node >= 0
                    && known_node
                    && i < t.leaders.len()
                    && t.epochs.get(i).is_some_and(|e| *e < epoch) =>
            {
                let t = Arc::make_mut(t);
                t.leaders[i] = node;
                t.epochs[i] = epoch;
                t.available = available_partitions(&t.leaders);
                true
            }
            _ => false,
        }
    };
    if changed {
        md.version.send_modify(|v| *v += 1);
    }
    changed
}

/// The highest version of `api` both we (`ours`) and the broker (`advertised`) speak.
pub(crate) fn pick_version(advertised: Option<(i16, i16)>, ours: (i16, i16)) -> Option<i16> {
    let (bmin, bmax) = advertised?;
    let v = ours.1.min(bmax);
    (v >= ours.0.max(bmin)).then_some(v)
}

/// InitProducerId versions this producer speaks.
const INIT_PRODUCER_ID_VERSIONS: (i16, i16) = (0, 4);

/// Result of an InitProducerId: the id and epoch, or the error and whether a later attempt
/// may succeed.
pub(crate) type ProducerIdResult = Result<(i64, i16), (ProducerError, bool)>;

async fn init_producer_id(cluster: &mut Cluster, current: Option<(i64, i16)>) -> ProducerIdResult {
    let mut addrs: Vec<String> = cluster.brokers().iter().map(|b| b.addr()).collect();
    for a in &cluster.config().bootstrap {
        if !addrs.contains(a) {
            addrs.push(a.clone());
        }
    }
    let mut last: Option<ClientError> = None;
    for addr in addrs {
        let conn = match cluster.connection(&addr).await {
            Ok(c) => c,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let Some(version) = pick_version(
            conn.versions().advertised(ApiKey::InitProducerId),
            INIT_PRODUCER_ID_VERSIONS,
        ) else {
            let broker = conn
                .versions()
                .advertised(ApiKey::InitProducerId)
                .map_or_else(|| "none".to_string(), |(a, b)| format!("v{a}-v{b}"));
            return Err((
                ProducerError::from(ClientError::UnsupportedApi {
                    addr,
                    api: ApiKey::InitProducerId,
                    ours: "v0-v4".into(),
                    broker,
                }),
                false,
            ));
        };
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = i32::MAX;
        if let Some((id, epoch)) = current.filter(|_| version >= 3) {
            req.producer_id = id.into();
            req.producer_epoch = epoch;
        }
        match conn.call_at(&req, version).await {
            Ok(r) if r.error_code == 0 => return Ok((r.producer_id.0, r.producer_epoch)),
            Ok(r) => {
                let retriable = ErrorCode(r.error_code).is_retriable();
                return Err((
                    ProducerError::from(ClientError::broker(
                        r.error_code,
                        format!("InitProducerId from {addr}"),
                        None,
                    )),
                    retriable,
                ));
            }
            Err(e) => {
                if e.breaks_connection() {
                    cluster.forget_connection(&addr);
                }
                last = Some(e);
            }
        }
    }
    let e =
        last.unwrap_or_else(|| ClientError::NotFound("no broker to ask for a producer id".into()));
    Err((ProducerError::from(e), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };

    #[test]
    fn versions_and_backoff() {
        assert_eq!(pick_version(Some((0, 11)), (3, 11)), Some(11));
        assert_eq!(pick_version(Some((0, 8)), (3, 11)), Some(8));
        assert_eq!(pick_version(Some((0, 2)), (3, 11)), None);
        assert_eq!(pick_version(None, (3, 11)), None);
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        assert_eq!(backoff(b, m, 1), b);
        assert_eq!(backoff(b, m, 3), Duration::from_millis(400));
        assert_eq!(backoff(b, m, 30), m);
    }

    #[test]
    fn metadata_answers_become_topic_infos() {
        let md = SharedMetadata::new();
        let mut r = MetadataResponse::default();
        let mut b = MetadataResponseBroker::default();
        b.node_id = 1.into();
        b.host = StrBytes::from_static_str("::1");
        b.port = 9092;
        r.brokers.push(b);
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_static_str("t")));
        for (i, leader) in [(0, 1), (2, 1), (1, -1)] {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i;
            p.leader_id = leader.into();
            t.partitions.push(p);
        }
        r.topics.push(t);
        let mut gone = MetadataResponseTopic::default();
        gone.name = Some(TopicName(StrBytes::from_static_str("gone")));
        gone.error_code = codes::UNKNOWN_TOPIC_OR_PARTITION;
        r.topics.push(gone);
        apply(&md, r);
        let st = md.lock();
        assert_eq!(st.brokers.get(&1).map(String::as_str), Some("[::1]:9092"));
        let t = &st.topics["t"];
        assert_eq!(t.count, 3);
        assert_eq!(t.leaders, vec![1, -1, 1]);
        assert_eq!(t.available, vec![0, 2]);
        assert_eq!(st.topics["gone"].count, 0);
        assert_eq!(st.topics["gone"].error, Some(3));
    }

    fn answer(leaders: &[(i32, i32)]) -> MetadataResponse {
        let mut r = MetadataResponse::default();
        for node in [1, 2] {
            let mut b = MetadataResponseBroker::default();
            b.node_id = node.into();
            b.host = StrBytes::from_static_str("h");
            b.port = 9000 + node;
            r.brokers.push(b);
        }
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_static_str("t")));
        for (i, &(leader, epoch)) in leaders.iter().enumerate() {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i as i32;
            p.leader_id = leader.into();
            p.leader_epoch = epoch;
            t.partitions.push(p);
        }
        r.topics.push(t);
        r
    }

    #[test]
    fn older_leader_epochs_do_not_move_leaders_back() {
        let md = SharedMetadata::new();
        apply(&md, answer(&[(1, 5), (2, 3)]));
        // A broker behind the others: partition 0 at an older epoch keeps its leader,
        // partition 1 at a newer one moves.
        apply(&md, answer(&[(2, 4), (1, 4)]));
        let t = Arc::clone(&md.lock().topics["t"]);
        assert_eq!(t.leaders, vec![1, 1]);
        assert_eq!(t.epochs, vec![5, 4]);
    }

    #[test]
    fn leaders_named_in_answers_are_taken_when_newer() {
        let md = SharedMetadata::new();
        apply(&md, answer(&[(1, 5)]));
        let v = *md.version.borrow();
        // Same or older epoch: ignored; an unknown broker without its address: ignored.
        assert!(!update_leader(&md, "t", 0, (2, 5), &[]));
        assert!(!update_leader(&md, "t", 0, (3, 6), &[]));
        assert!(!update_leader(&md, "u", 0, (2, 6), &[]));
        assert_eq!(*md.version.borrow(), v);
        // Newer, with the new broker's address (node_endpoints).
        assert!(update_leader(&md, "t", 0, (3, 6), &[(3, "h3:1".into())]));
        let st = md.lock();
        assert_eq!(
            (st.topics["t"].leaders[0], st.topics["t"].epochs[0]),
            (3, 6)
        );
        assert_eq!(st.brokers.get(&3).map(String::as_str), Some("h3:1"));
        drop(st);
        assert!(*md.version.borrow() > v);
    }
}
