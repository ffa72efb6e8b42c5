//! Fetching in the background: one task per leader broker, each with its own connection.
//!
//! The consumer hands a task a [`FetchJob`] (the partitions that broker leads, each at its
//! position) and goes on; the task sends one Fetch, decodes every partition's batches
//! (CRC, bounded inflation, records below the fetch offset skipped) and puts the outcome on a
//! bounded channel the consumer drains in `poll`. A broker has at most one job at a time and
//! a partition is fetched again only once its previous data has been handed to the
//! application, so the memory held is bounded by `fetch.max.bytes` per broker, as in the Java
//! client. The consumer sends the next fetches before `poll` returns, so they travel while
//! the application processes what it got.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchRequest, TopicName, fetch_request};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin::TopicPartition;
use crate::connection::{Connection, ConnectionConfig};
use crate::consumer::pick_version;
use crate::consumer::record::{DecodeOptions, Decoded, decode_records};
use crate::error::{ClientError, Result};

/// Fetch versions this consumer speaks: v4 is the first with record batch v2 and the last
/// stable offset; v13 switches to topic ids, which this fetcher does not use.
const FETCH: (i16, i16) = (4, 12);

/// Fetch request settings.
#[derive(Debug, Clone)]
pub(crate) struct FetchSettings {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    pub isolation_level: i8,
    /// `client.rack`, sent as the Fetch's `rack_id` (v11+, KIP-392).
    pub rack_id: Option<String>,
    pub decode: DecodeOptions,
}

/// One partition to fetch, at `offset`; `epoch` is the consumer's position epoch for the
/// partition when it asked (an outcome for an older epoch is stale); `current_leader_epoch`
/// the leader epoch the consumer knows (Fetch v9+, KIP-320: the broker answers
/// FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH when its own differs; -1 checks nothing).
#[derive(Debug, Clone)]
pub(crate) struct FetchPartition {
    pub tp: TopicPartition,
    pub offset: i64,
    pub epoch: u64,
    pub current_leader_epoch: i32,
}

/// One Fetch request's worth of partitions, all led by the same broker.
#[derive(Debug)]
pub(crate) struct FetchJob {
    pub partitions: Vec<FetchPartition>,
}

/// What the broker said about one partition.
#[derive(Debug)]
pub(crate) struct PartitionOutcome {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub fetch_offset: i64,
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The leader the broker named (KIP-951, Fetch v12+), when it named one.
    pub current_leader: Option<(i32, i32)>,
    /// The replica the leader wants this partition read from (KIP-392, Fetch v11+).
    pub preferred_read_replica: Option<i32>,
    pub decoded: Decoded,
}

/// The outcome of one job.
#[derive(Debug)]
pub(crate) struct FetchOutcome {
    pub node: i32,
    /// Every partition the job asked for (their in-flight marks are cleared).
    pub requested: Vec<TopicPartition>,
    pub result: Result<Vec<PartitionOutcome>>,
}

/// The handle of one broker's fetch task.
#[derive(Debug)]
pub(crate) struct BrokerFetcher {
    pub addr: String,
    pub in_flight: bool,
    /// The partitions of the job in flight.
    pub pending: Vec<TopicPartition>,
    jobs: mpsc::Sender<FetchJob>,
    task: JoinHandle<()>,
}

impl BrokerFetcher {
    /// Starts the task for broker `node` at `addr`.
    pub(crate) fn spawn(
        node: i32,
        addr: String,
        connection: ConnectionConfig,
        settings: Arc<FetchSettings>,
        results: mpsc::Sender<FetchOutcome>,
    ) -> BrokerFetcher {
        let (jobs, rx) = mpsc::channel(1);
        let task = tokio::spawn(run(node, addr.clone(), connection, settings, rx, results));
        BrokerFetcher {
            addr,
            in_flight: false,
            pending: Vec::new(),
            jobs,
            task,
        }
    }

    /// Hands the task a job; `false` if the task is gone (or busy, which the caller avoids).
    pub(crate) fn submit(&mut self, job: FetchJob) -> bool {
        let pending = job.partitions.iter().map(|p| p.tp.clone()).collect();
        let ok = self.jobs.try_send(job).is_ok();
        if ok {
            self.in_flight = true;
            self.pending = pending;
        }
        ok
    }

    /// Whether the task ended (it only does if it panicked): its job will never complete.
    pub(crate) fn is_dead(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for BrokerFetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    node: i32,
    addr: String,
    connection: ConnectionConfig,
    settings: Arc<FetchSettings>,
    mut jobs: mpsc::Receiver<FetchJob>,
    results: mpsc::Sender<FetchOutcome>,
) {
    let mut conn: Option<Connection> = None;
    while let Some(job) = jobs.recv().await {
        let requested = job.partitions.iter().map(|p| p.tp.clone()).collect();
        let result = fetch(&mut conn, &addr, &connection, &settings, &job).await;
        if result.as_ref().is_err_and(ClientError::breaks_connection) {
            conn = None;
        }
        let outcome = FetchOutcome {
            node,
            requested,
            result,
        };
        if results.send(outcome).await.is_err() {
            return;
        }
    }
}

/// Builds the Fetch request for `job` at `version` (topics by name, sessionless).
pub(crate) fn fetch_request(
    settings: &FetchSettings,
    job: &FetchJob,
    version: i16,
) -> FetchRequest {
    let mut topics: Vec<fetch_request::FetchTopic> = Vec::new();
    for p in &job.partitions {
        let idx = match topics.iter().position(|t| t.topic.0.as_str() == p.tp.topic) {
            Some(i) => i,
            None => {
                let mut t = fetch_request::FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(p.tp.topic.clone()));
                topics.push(t);
                topics.len() - 1
            }
        };
        let mut fp = fetch_request::FetchPartition::default();
        fp.partition = p.tp.partition;
        fp.fetch_offset = p.offset;
        fp.partition_max_bytes = settings.partition_max_bytes;
        if version >= 9 {
            fp.current_leader_epoch = p.current_leader_epoch;
        }
        topics[idx].partitions.push(fp);
    }
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.max_wait_ms = settings.max_wait_ms;
    req.min_bytes = settings.min_bytes;
    req.max_bytes = settings.max_bytes;
    req.isolation_level = settings.isolation_level;
    if version >= 11
        && let Some(rack) = &settings.rack_id
    {
        req.rack_id = StrBytes::from_string(rack.clone());
    }
    // No fetch session (KIP-227): session 0, epoch -1 asks for a full fetch every time.
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = topics;
    req
}

async fn fetch(
    conn: &mut Option<Connection>,
    addr: &str,
    connection: &ConnectionConfig,
    settings: &FetchSettings,
    job: &FetchJob,
) -> Result<Vec<PartitionOutcome>> {
    if conn.as_ref().is_none_or(Connection::is_broken) {
        *conn = Some(Connection::connect(addr, connection).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(ClientError::NotFound(format!("no connection to {addr}")));
    };
    let version = pick_version(c, ApiKey::Fetch, FETCH)?;
    let req = fetch_request(settings, job, version);
    let resp = c.call_at(&req, version).await?;
    if resp.error_code != 0 {
        return Err(ClientError::broker(
            resp.error_code,
            format!("fetch from {addr}"),
            None,
        ));
    }
    let asked: HashMap<(&str, i32), &FetchPartition> = job
        .partitions
        .iter()
        .map(|p| ((p.tp.topic.as_str(), p.tp.partition), p))
        .collect();
    let mut out = Vec::with_capacity(job.partitions.len());
    for t in resp.responses {
        let topic: Arc<str> = Arc::from(t.topic.0.as_str());
        for p in t.partitions {
            let Some(want) = asked.get(&(&*topic, p.partition_index)) else {
                continue;
            };
            let data = p.records.unwrap_or_else(Bytes::new);
            let decoded = if p.error_code == 0 {
                decode_records(
                    &topic,
                    p.partition_index,
                    &data,
                    want.offset,
                    settings.decode,
                )
            } else {
                Decoded {
                    next_offset: want.offset,
                    last_leader_epoch: -1,
                    ..Decoded::default()
                }
            };
            let leader = &p.current_leader;
            let current_leader = (leader.leader_id.0 >= 0 && leader.leader_epoch >= 0)
                .then_some((leader.leader_id.0, leader.leader_epoch));
            let preferred_read_replica = (version >= 11 && p.preferred_read_replica.0 >= 0)
                .then_some(p.preferred_read_replica.0);
            out.push(PartitionOutcome {
                tp: want.tp.clone(),
                epoch: want.epoch,
                fetch_offset: want.offset,
                error_code: p.error_code,
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                current_leader,
                preferred_read_replica,
                decoded,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn requests_group_partitions_by_topic_and_encode_at_every_version() {
        let settings = FetchSettings {
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: 1000,
            partition_max_bytes: 500,
            isolation_level: 0,
            rack_id: Some("r2".into()),
            decode: DecodeOptions {
                check_crcs: true,
                max_inflated_bytes: 1 << 20,
            },
        };
        let job = FetchJob {
            partitions: vec![
                FetchPartition {
                    tp: TopicPartition::new("a", 0),
                    offset: 5,
                    epoch: 0,
                    current_leader_epoch: 4,
                },
                FetchPartition {
                    tp: TopicPartition::new("b", 1),
                    offset: 6,
                    epoch: 0,
                    current_leader_epoch: 4,
                },
                FetchPartition {
                    tp: TopicPartition::new("a", 2),
                    offset: 7,
                    epoch: 0,
                    current_leader_epoch: 4,
                },
            ],
        };
        let req = fetch_request(&settings, &job, FETCH.1);
        assert_eq!(req.topics.len(), 2);
        assert_eq!(req.topics[0].partitions.len(), 2);
        assert_eq!(req.topics[0].partitions[1].fetch_offset, 7);
        assert_eq!(req.topics[1].partitions[0].partition_max_bytes, 500);
        assert_eq!(req.topics[0].partitions[0].current_leader_epoch, 4);
        for v in FETCH.0..=FETCH.1 {
            let req = fetch_request(&settings, &job, v);
            let want = if v >= 9 { 4 } else { -1 };
            assert_eq!(
                req.topics[0].partitions[0].current_leader_epoch, want,
                "v{v}"
            );
            let rack = if v >= 11 { "r2" } else { "" };
            assert_eq!(req.rack_id.as_str(), rack, "v{v}");
            let mut buf = Vec::new();
            assert!(req.encode(&mut buf, v).is_ok(), "v{v}");
        }
    }
}
