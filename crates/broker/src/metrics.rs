//! The broker's Prometheus metrics, named as the JMX exporter rules published with Strimzi name
//! Kafka's MBeans (`kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec,topic=T` becomes
//! `kafka_server_brokertopicmetrics_bytesin_total{topic="T"}`), so dashboards built for Kafka
//! read them unchanged.
//!
//! Counting stays off the per-record path and takes no lock: the produce handler adds a
//! partition's bytes and record count once per request (record counts come from the batch
//! headers), the fetch handler its bytes once per response, the connection layer one count and
//! one latency observation per request. Every counter is an atomic; per-topic counters are looked
//! up in their family (which locks) once per topic and then kept in the topic's state
//! ([`TopicMetricsCell`]), per-API ones once per API and version in a fixed table of
//! [`OnceLock`]s. Gauges that describe state (partition and leader counts, under-replicated
//! partitions, the active controller, each hosted log's size and offsets, the committed offsets
//! and lag of the groups coordinated here, parked requests, the process's resident memory) are
//! computed when `/metrics` is scraped, as are the counters kept elsewhere as plain atomics
//! (committed ISR shrinks and expands in the replica manager, the storage layer's fsync times).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::cluster::Cluster;
use crate::groups::GroupManager;
use crate::replica::{ReplicaManager, Topic};

/// The label set of the per-topic families: `topic` for one topic, none for Kafka's all-topics
/// aggregate (its MBean has no topic key).
type TopicLabels = Vec<(&'static str, String)>;

/// `kafka.network:type=RequestMetrics,name=RequestsPerSec,request=R,version=V`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    request: String,
    version: String,
}

/// `kafka.network:type=RequestMetrics,name=TotalTimeMs,request=R`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    request: String,
}

/// `kafka.server:type=DelayedOperationPurgatory,name=PurgatorySize,delayedOperation=O`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PurgatoryLabels {
    delayedoperation: String,
}

/// `kafka.server:type=socket-server-metrics,listener=L`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

/// Upper bounds (ms) of the request time buckets: from a cached Metadata answer to a Fetch that
/// waited out a long `max.wait.ms`.
const REQUEST_TIME_BUCKETS_MS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0,
];

/// A histogram of request times in milliseconds whose observations are a few atomic adds: the
/// library's own histogram takes a mutex per observation, which the request path must not.
/// Encoded through the library's histogram encoder.
#[derive(Clone, Debug, Default)]
pub struct RequestTimeHistogram {
    inner: Arc<HistogramCells>,
}

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; REQUEST_TIME_BUCKETS_MS.len() + 1],
    /// Sum of observations in microseconds (an integer, so it can be an atomic).
    sum_us: AtomicU64,
}

impl RequestTimeHistogram {
    /// Records one request that took `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let ms = us as f64 / 1000.0;
        let i = REQUEST_TIME_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(REQUEST_TIME_BUCKETS_MS.len());
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for RequestTimeHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for RequestTimeHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let bounds = REQUEST_TIME_BUCKETS_MS
            .iter()
            .copied()
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(counts.iter().copied()).collect();
        // The count is the buckets' sum, so a scrape during an observation stays consistent.
        let count = counts.iter().sum();
        let sum = self.inner.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The storage layer's fsync times ([`vltava_storage::fsync_stats`]), read when encoded, in
/// milliseconds as Kafka's `LogFlushRateAndTimeMs`.
#[derive(Clone, Debug, Default)]
struct FsyncHistogram;

impl TypedMetric for FsyncHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for FsyncHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let stats = vltava_storage::fsync_stats();
        let bounds = vltava_storage::FSYNC_BUCKETS_MS
            .iter()
            .copied()
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(stats.buckets.iter().copied()).collect();
        let sum = stats.sum_us as f64 / 1000.0;
        encoder.encode_histogram::<NoLabelSet>(sum, stats.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The resident set size of this process in bytes, from `/proc/self/statm` (resident pages)
/// and the page size the kernel gave the process (`AT_PAGESZ` in `/proc/self/auxv`); `None`
/// where there is no procfs.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size()))
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        const AT_PAGESZ: u64 = 6;
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        auxv.chunks_exact(16)
            .find_map(|pair| {
                let (k, v) = pair.split_at(8);
                let k = u64::from_ne_bytes(k.try_into().ok()?);
                let v = u64::from_ne_bytes(v.try_into().ok()?);
                (k == AT_PAGESZ && v > 0).then_some(v)
            })
            .unwrap_or(4096)
    })
}

/// Per-partition and per-group gauges, refilled at each scrape (so a deleted topic's or an
/// unloaded group's series go with it).
#[derive(Debug, Default)]
struct ScrapeFamilies {
    log_size: Family<TopicLabels, Gauge>,
    log_start: Family<TopicLabels, Gauge>,
    log_end: Family<TopicLabels, Gauge>,
    group_offset: Family<TopicLabels, Gauge>,
    group_lag: Family<TopicLabels, Gauge>,
    group_lag_sum: Family<TopicLabels, Gauge>,
    purgatory: Family<PurgatoryLabels, Gauge>,
}

/// One topic's counters (clones share the atomics registered in the families).
#[derive(Debug, Clone, Default)]
pub struct TopicCounters {
    messages_in: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    replication_bytes_out: Counter,
}

/// Where a topic keeps its counters after the first lookup; carried from one applied metadata
/// image's topic state to the next.
pub type TopicMetricsCell = OnceLock<TopicCounters>;

/// Counters of one request type: per version, and its time histogram.
#[derive(Debug)]
struct ApiSlot {
    versions: Box<[OnceLock<Counter>]>,
    time: OnceLock<RequestTimeHistogram>,
}

/// Slot index of Fetch requests from consumers and from followers: Kafka counts the two apart
/// (`FetchConsumer`, `FetchFollower`) and never under `Fetch`.
const FETCH_CONSUMER_SLOT: usize = 0x1_0000;
const FETCH_FOLLOWER_SLOT: usize = 0x1_0001;

/// Gauges set from the broker's state at each scrape.
#[derive(Debug, Default)]
struct StateGauges {
    partition_count: Gauge,
    leader_count: Gauge,
    under_replicated: Gauge,
    under_min_isr: Gauge,
    active_controller: Gauge,
    offline_partitions: Gauge,
    global_topics: Gauge,
    global_partitions: Gauge,
    isr_shrinks: Counter,
    isr_expands: Counter,
    resident_memory: Gauge,
}

/// The broker's metrics registry and its counters.
#[derive(Debug)]
pub struct BrokerMetrics {
    registry: Registry,
    messages_in: Family<TopicLabels, Counter>,
    bytes_in: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    replication_bytes_out: Family<TopicLabels, Counter>,
    all_topics: TopicCounters,
    requests: Family<RequestLabels, Counter>,
    request_time: Family<ApiLabels, RequestTimeHistogram>,
    /// Indexed by api key; Fetch's two kinds are in `fetch_slots`.
    api_slots: Vec<ApiSlot>,
    fetch_slots: [ApiSlot; 2],
    connections: Gauge,
    gauges: StateGauges,
    scraped: ScrapeFamilies,
    /// Topics that have counters, so a deleted topic's series can be dropped at a scrape.
    topics_seen: Mutex<BTreeSet<String>>,
    /// Held while a scrape fills the gauges and encodes them, so two scrapes do not interleave.
    scrape: Mutex<()>,
}

fn api_slot(api: Option<ApiKey>) -> ApiSlot {
    let versions = api.map_or(0, |a| a.valid_versions().max.max(0) as usize + 1);
    ApiSlot {
        versions: (0..versions).map(|_| OnceLock::new()).collect(),
        time: OnceLock::new(),
    }
}

/// Kafka's name for a request type (`ApiKeys.name`), with Fetch split as Kafka's request
/// metrics split it.
fn request_name(api: ApiKey, slot: usize) -> String {
    match slot {
        FETCH_CONSUMER_SLOT => "FetchConsumer".into(),
        FETCH_FOLLOWER_SLOT => "FetchFollower".into(),
        _ => format!("{api:?}"),
    }
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    /// A registry with every family registered and nothing counted yet.
    pub fn new() -> BrokerMetrics {
        let mut registry = Registry::default();
        let messages_in = Family::<TopicLabels, Counter>::default();
        let bytes_in = Family::<TopicLabels, Counter>::default();
        let bytes_out = Family::<TopicLabels, Counter>::default();
        let replication_bytes_out = Family::<TopicLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "kafka_server_brokertopicmetrics_messagesin",
            "Records appended by produce requests (MessagesInPerSec)",
            messages_in.clone(),
        );
        registry.register(
            "kafka_server_brokertopicmetrics_bytesin",
            "Record batch bytes appended by produce requests (BytesInPerSec)",
            bytes_in.clone(),
        );
        registry.register(
            "kafka_server_brokertopicmetrics_bytesout",
            "Record bytes sent to consumers in fetch responses (BytesOutPerSec)",
            bytes_out.clone(),
        );
        registry.register(
            "kafka_server_brokertopicmetrics_replicationbytesout",
            "Record bytes sent to follower replicas (ReplicationBytesOutPerSec)",
            replication_bytes_out.clone(),
        );
        let all_topics = TopicCounters {
            messages_in: messages_in.get_or_create_owned(&Vec::new()),
            bytes_in: bytes_in.get_or_create_owned(&Vec::new()),
            bytes_out: bytes_out.get_or_create_owned(&Vec::new()),
            replication_bytes_out: replication_bytes_out.get_or_create_owned(&Vec::new()),
        };
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kafka_network_requestmetrics_requests",
            "Requests received, by request type and version (RequestsPerSec)",
            requests.clone(),
        );
        let request_time = Family::<ApiLabels, RequestTimeHistogram>::default();
        registry.register(
            "kafka_network_requestmetrics_totaltimems",
            "Time from a request's decoding to its response being ready, in ms (TotalTimeMs)",
            request_time.clone(),
        );
        let connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "kafka_server_socket_server_metrics_connection_count",
            "Open client connections, by listener",
            connections.clone(),
        );
        let connections = connections.get_or_create_owned(&ListenerLabels {
            listener: "PLAINTEXT".into(),
        });
        let gauges = StateGauges::default();
        for (name, help, gauge) in [
            (
                "kafka_server_replicamanager_partitioncount",
                "Partitions with a replica on this broker",
                &gauges.partition_count,
            ),
            (
                "kafka_server_replicamanager_leadercount",
                "Partitions this broker leads",
                &gauges.leader_count,
            ),
            (
                "kafka_server_replicamanager_underreplicatedpartitions",
                "Partitions led here whose ISR is smaller than their replica set",
                &gauges.under_replicated,
            ),
            (
                "kafka_server_replicamanager_underminisrpartitioncount",
                "Partitions led here whose ISR is below min.insync.replicas",
                &gauges.under_min_isr,
            ),
            (
                "kafka_controller_kafkacontroller_activecontrollercount",
                "1 on the active controller, else 0",
                &gauges.active_controller,
            ),
            (
                "kafka_controller_kafkacontroller_offlinepartitionscount",
                "Partitions without a leader (reported by the active controller)",
                &gauges.offline_partitions,
            ),
            (
                "kafka_controller_kafkacontroller_globaltopiccount",
                "Topics in the cluster (reported by the active controller)",
                &gauges.global_topics,
            ),
            (
                "kafka_controller_kafkacontroller_globalpartitioncount",
                "Partitions in the cluster (reported by the active controller)",
                &gauges.global_partitions,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "kafka_server_replicamanager_isrshrinks",
            "Committed ISR changes that removed a member, of partitions led here (IsrShrinksPerSec)",
            gauges.isr_shrinks.clone(),
        );
        registry.register(
            "kafka_server_replicamanager_isrexpands",
            "Committed ISR changes that added a member, of partitions led here (IsrExpandsPerSec)",
            gauges.isr_expands.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the broker process in bytes (/proc/self/statm)",
            gauges.resident_memory.clone(),
        );
        registry.register(
            "kafka_log_logflushstats_logflushrateandtimems",
            "Time of each fsync of a file or directory by the storage layer, in ms (LogFlushRateAndTimeMs)",
            FsyncHistogram,
        );
        let scraped = ScrapeFamilies::default();
        for (name, help, family) in [
            (
                "kafka_log_log_size",
                "Bytes of a hosted partition's log segments (Log Size)",
                &scraped.log_size,
            ),
            (
                "kafka_log_log_logstartoffset",
                "A hosted partition's log start offset (Log LogStartOffset)",
                &scraped.log_start,
            ),
            (
                "kafka_log_log_logendoffset",
                "A hosted partition's log end offset (Log LogEndOffset)",
                &scraped.log_end,
            ),
            (
                "kafka_consumergroup_current_offset",
                "Committed offset of a group coordinated here, per partition (kafka_exporter's name)",
                &scraped.group_offset,
            ),
            (
                "kafka_consumergroup_lag",
                "High watermark minus committed offset, per partition hosted here (kafka_exporter's name)",
                &scraped.group_lag,
            ),
            (
                "kafka_consumergroup_lag_sum",
                "kafka_consumergroup_lag summed over a topic's partitions (kafka_exporter's name)",
                &scraped.group_lag_sum,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "kafka_server_delayedoperationpurgatory_purgatorysize",
            "Requests parked per partition: acks=all produces waiting for the high watermark (Produce), fetches waiting for records (Fetch)",
            scraped.purgatory.clone(),
        );
        let max_key = crate::handlers::SUPPORTED_APIS
            .iter()
            .map(|(k, _, _)| *k as i16 as usize)
            .max()
            .unwrap_or(0);
        let api_slots = (0..=max_key)
            .map(|k| api_slot(i16::try_from(k).ok().and_then(|k| ApiKey::try_from(k).ok())))
            .collect();
        BrokerMetrics {
            registry,
            messages_in,
            bytes_in,
            bytes_out,
            replication_bytes_out,
            all_topics,
            requests,
            request_time,
            api_slots,
            fetch_slots: [api_slot(Some(ApiKey::Fetch)), api_slot(Some(ApiKey::Fetch))],
            connections,
            gauges,
            scraped,
            topics_seen: Mutex::new(BTreeSet::new()),
            scrape: Mutex::new(()),
        }
    }

    /// `topic`'s counters, registered on first use and then kept in the topic's state.
    fn topic<'t>(&self, topic: &'t Topic) -> &'t TopicCounters {
        // Only the first request for a topic (per applied image lineage) takes the families'
        // locks; every later one reads the cell.
        let cell = &*topic.metrics;
        cell.get_or_init(|| {
            let labels = vec![("topic", topic.name.clone())];
            self.topics_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(topic.name.clone());
            TopicCounters {
                messages_in: self.messages_in.get_or_create_owned(&labels),
                bytes_in: self.bytes_in.get_or_create_owned(&labels),
                bytes_out: self.bytes_out.get_or_create_owned(&labels),
                replication_bytes_out: self.replication_bytes_out.get_or_create_owned(&labels),
            }
        })
    }

    /// A produce request appended `bytes` of batches holding `records` records to `topic`.
    pub fn produced(&self, topic: &Topic, bytes: u64, records: u64) {
        let c = self.topic(topic);
        c.bytes_in.inc_by(bytes);
        c.messages_in.inc_by(records);
        self.all_topics.bytes_in.inc_by(bytes);
        self.all_topics.messages_in.inc_by(records);
    }

    /// A fetch response carries `bytes` of `topic`'s records, to a consumer or (`follower`) to
    /// a follower replica.
    pub fn fetched(&self, topic: &Topic, bytes: u64, follower: bool) {
        if bytes == 0 {
            return;
        }
        let c = self.topic(topic);
        if follower {
            c.replication_bytes_out.inc_by(bytes);
            self.all_topics.replication_bytes_out.inc_by(bytes);
        } else {
            c.bytes_out.inc_by(bytes);
            self.all_topics.bytes_out.inc_by(bytes);
        }
    }

    fn slot(&self, api: ApiKey, follower_fetch: bool) -> Option<(&ApiSlot, usize)> {
        if api == ApiKey::Fetch {
            let i = usize::from(follower_fetch);
            return Some((&self.fetch_slots[i], FETCH_CONSUMER_SLOT + i));
        }
        let k = api as i16 as usize;
        self.api_slots.get(k).map(|s| (s, k))
    }

    /// Counts a decoded request and starts its timer; `follower_fetch` for a Fetch from a
    /// replica.
    pub fn request_started(
        &self,
        api: ApiKey,
        version: i16,
        follower_fetch: bool,
    ) -> Option<RequestTimer> {
        let (slot, index) = self.slot(api, follower_fetch)?;
        if let Some(cell) = usize::try_from(version)
            .ok()
            .and_then(|v| slot.versions.get(v))
        {
            cell.get_or_init(|| {
                self.requests.get_or_create_owned(&RequestLabels {
                    request: request_name(api, index),
                    version: version.to_string(),
                })
            })
            .inc();
        }
        let histogram = slot.time.get_or_init(|| {
            self.request_time.get_or_create_owned(&ApiLabels {
                request: request_name(api, index),
            })
        });
        Some(RequestTimer {
            started: Instant::now(),
            histogram: histogram.clone(),
        })
    }

    /// A client connection opened; the guard counts it until dropped.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(Arc::clone(self))
    }

    /// Open client connections.
    pub fn open_connections(&self) -> i64 {
        self.connections.get()
    }

    /// Sets the gauges that need no broker: the process's.
    fn update_process_gauges(&self) {
        if let Some(rss) = resident_memory_bytes() {
            self.gauges
                .resident_memory
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
    }

    /// Sets a counter kept as an atomic elsewhere to `value` (it only grows; called under the
    /// scrape lock).
    fn catch_up(counter: &Counter, value: u64) {
        let now = counter.get();
        if value > now {
            counter.inc_by(value - now);
        }
    }

    /// Refills the per-partition and per-group families from `partitions` (each hosted
    /// partition's state) and `committed` (the offsets of the groups coordinated here, as
    /// [`GroupManager::all_committed`] lists them). A group's lag is reported for the
    /// partitions hosted here (their high watermark is known); its committed offsets for all.
    fn fill_partitions(
        &self,
        partitions: &[PartitionSample],
        committed: &[(String, String, i32, i64)],
    ) {
        let f = &self.scraped;
        f.log_size.clear();
        f.log_start.clear();
        f.log_end.clear();
        f.group_offset.clear();
        f.group_lag.clear();
        f.group_lag_sum.clear();
        let (mut produce, mut fetch) = (0i64, 0i64);
        let mut hw: std::collections::HashMap<(&str, i32), u64> =
            std::collections::HashMap::with_capacity(partitions.len());
        for p in partitions {
            let labels = vec![
                ("topic", p.topic.clone()),
                ("partition", p.partition.to_string()),
            ];
            f.log_size
                .get_or_create(&labels)
                .set(gauge_value(p.size_bytes));
            f.log_start
                .get_or_create(&labels)
                .set(gauge_value(p.log_start_offset));
            f.log_end
                .get_or_create(&labels)
                .set(gauge_value(p.log_end_offset));
            hw.insert((p.topic.as_str(), p.partition), p.high_watermark);
            produce += gauge_value(p.parked.produce as u64);
            fetch += gauge_value(p.parked.fetch as u64);
        }
        for (group, topic, partition, offset) in committed {
            if *offset < 0 {
                continue;
            }
            let labels = vec![
                ("consumergroup", group.clone()),
                ("topic", topic.clone()),
                ("partition", partition.to_string()),
            ];
            f.group_offset.get_or_create(&labels).set(*offset);
            if let Some(hw) = hw.get(&(topic.as_str(), *partition)) {
                let lag = gauge_value(*hw).saturating_sub(*offset).max(0);
                f.group_lag.get_or_create(&labels).set(lag);
                f.group_lag_sum
                    .get_or_create(&vec![
                        ("consumergroup", group.clone()),
                        ("topic", topic.clone()),
                    ])
                    .inc_by(lag);
            }
        }
        for (op, n) in [("Produce", produce), ("Fetch", fetch)] {
            f.purgatory
                .get_or_create(&PurgatoryLabels {
                    delayedoperation: op.into(),
                })
                .set(n);
        }
    }

    /// Sets the state gauges from `rm`, `cluster` and `groups` (when the broker has started).
    fn update_gauges(
        &self,
        view: Option<(&ReplicaManager, &Cluster)>,
        groups: Option<&GroupManager>,
    ) {
        let Some((rm, cluster)) = view else {
            return;
        };
        let node = rm.node_id();
        let (mut hosted, mut leaders, mut under, mut under_min) = (0i64, 0i64, 0i64, 0i64);
        let topics = rm.all_topics();
        let mut live: BTreeSet<&str> = BTreeSet::new();
        let mut samples = Vec::new();
        for t in &topics {
            live.insert(t.name.as_str());
            let min_isr = rm.config().min_insync_replicas(&t.configs).max(1) as usize;
            for p in &t.partitions {
                let Some(local) = &p.local else {
                    continue;
                };
                samples.push(PartitionSample::of(&t.name, local));
                hosted += 1;
                if p.leader == node {
                    leaders += 1;
                    if p.isr.len() < p.replicas.len() {
                        under += 1;
                    }
                    if p.isr.len() < min_isr {
                        under_min += 1;
                    }
                }
            }
        }
        let g = &self.gauges;
        g.partition_count.set(hosted);
        g.leader_count.set(leaders);
        g.under_replicated.set(under);
        g.under_min_isr.set(under_min);
        let active = cluster.controller_id() == Some(node);
        g.active_controller.set(i64::from(active));
        // As in Kafka, only the active controller reports the cluster-wide counts; the others
        // report 0 so a sum over the brokers stays right.
        let (offline, topic_count, partition_count) = if active {
            cluster
                .with_image(|img| {
                    let mut offline = 0i64;
                    let mut partitions = 0i64;
                    let mut topics = 0i64;
                    for t in img.topics.values() {
                        topics += 1;
                        for p in t.partitions.values() {
                            partitions += 1;
                            if p.leader < 0 {
                                offline += 1;
                            }
                        }
                    }
                    (offline, topics, partitions)
                })
                .unwrap_or((0, 0, 0))
        } else {
            (0, 0, 0)
        };
        g.offline_partitions.set(offline);
        g.global_topics.set(topic_count);
        g.global_partitions.set(partition_count);
        let (shrinks, expands) = rm.isr_change_counts();
        Self::catch_up(&g.isr_shrinks, shrinks);
        Self::catch_up(&g.isr_expands, expands);
        let committed = groups.map(GroupManager::all_committed).unwrap_or_default();
        self.fill_partitions(&samples, &committed);
        // A deleted topic's series go (as Kafka removes its topic metrics); a topic created
        // again under the name starts from zero.
        let mut seen = self.topics_seen.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = seen
            .iter()
            .filter(|n| !live.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let labels = vec![("topic", name.clone())];
            self.messages_in.remove(&labels);
            self.bytes_in.remove(&labels);
            self.bytes_out.remove(&labels);
            self.replication_bytes_out.remove(&labels);
            seen.remove(&name);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(
        &self,
        view: Option<(&ReplicaManager, &Cluster)>,
        groups: Option<&GroupManager>,
    ) -> Result<String, std::fmt::Error> {
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.update_process_gauges();
        self.update_gauges(view, groups);
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A gauge's value from a count or offset (saturating: gauges are signed).
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What a scrape reads of one hosted partition (under its log's lock, briefly).
#[derive(Debug, Clone, Default)]
struct PartitionSample {
    topic: String,
    partition: i32,
    size_bytes: u64,
    log_start_offset: u64,
    log_end_offset: u64,
    high_watermark: u64,
    parked: crate::replica::Parked,
}

impl PartitionSample {
    fn of(topic: &str, p: &crate::replica::Partition) -> PartitionSample {
        let (size_bytes, log_start_offset, log_end_offset, high_watermark) = {
            let log = p.log();
            (
                log.size_bytes(),
                log.log_start_offset(),
                log.log_end_offset(),
                crate::replica::high_watermark(&log),
            )
        };
        PartitionSample {
            topic: topic.to_string(),
            partition: p.index,
            size_bytes,
            log_start_offset,
            log_end_offset,
            high_watermark,
            parked: p.parked(),
        }
    }
}

/// The `Content-Type` of [`BrokerMetrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Times one request; [`RequestTimer::finish`] records it.
#[derive(Debug)]
pub struct RequestTimer {
    started: Instant,
    histogram: RequestTimeHistogram,
}

impl RequestTimer {
    /// The response is ready (or no response is due).
    pub fn finish(self) {
        self.histogram.observe(self.started.elapsed());
    }
}

/// Counts one open connection while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<BrokerMetrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Parked;
    use vltava_storage::Fs;

    fn topic(name: &str) -> Topic {
        Topic {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            partitions: Vec::new(),
            configs: Default::default(),
            metrics: Arc::default(),
        }
    }

    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|rest| rest.trim().parse().ok())
    }

    #[test]
    fn topic_counters_are_registered_once_and_summed_into_the_aggregate() {
        let m = BrokerMetrics::new();
        let a = topic("a");
        let b = topic("b");
        m.produced(&a, 100, 3);
        m.produced(&a, 50, 2);
        m.produced(&b, 7, 1);
        m.fetched(&a, 120, false);
        m.fetched(&a, 30, true);
        assert!(
            a.metrics.get().is_some(),
            "the handle is cached in the topic"
        );
        let text = m.render(None, None).expect("render");
        assert_eq!(
            sample(
                &text,
                "kafka_server_brokertopicmetrics_messagesin_total{topic=\"a\"}"
            ),
            Some(5.0)
        );
        assert_eq!(
            sample(
                &text,
                "kafka_server_brokertopicmetrics_bytesin_total{topic=\"a\"}"
            ),
            Some(150.0)
        );
        assert_eq!(
            sample(&text, "kafka_server_brokertopicmetrics_bytesin_total "),
            Some(157.0)
        );
        assert_eq!(
            sample(
                &text,
                "kafka_server_brokertopicmetrics_bytesout_total{topic=\"a\"}"
            ),
            Some(120.0)
        );
        assert_eq!(
            sample(
                &text,
                "kafka_server_brokertopicmetrics_replicationbytesout_total{topic=\"a\"}"
            ),
            Some(30.0)
        );
    }

    #[test]
    fn requests_are_counted_per_api_and_version_and_timed() {
        let m = BrokerMetrics::new();
        for _ in 0..3 {
            if let Some(t) = m.request_started(ApiKey::Produce, 9, false) {
                t.finish();
            }
        }
        if let Some(t) = m.request_started(ApiKey::Fetch, 13, false) {
            t.finish();
        }
        if let Some(t) = m.request_started(ApiKey::Fetch, 15, true) {
            t.finish();
        }
        let text = m.render(None, None).expect("render");
        assert_eq!(
            sample(
                &text,
                "kafka_network_requestmetrics_requests_total{request=\"Produce\",version=\"9\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "kafka_network_requestmetrics_requests_total{request=\"FetchConsumer\",version=\"13\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "kafka_network_requestmetrics_totaltimems_count{request=\"FetchFollower\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "kafka_network_requestmetrics_totaltimems_bucket{le=\"+Inf\",request=\"Produce\"}"
            )
            .or_else(|| sample(
                &text,
                "kafka_network_requestmetrics_totaltimems_bucket{request=\"Produce\",le=\"+Inf\"}"
            )),
            Some(3.0)
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_match_the_count() {
        let h = RequestTimeHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 3);
        let mut registry = Registry::default();
        registry.register("t", "test", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).expect("encode");
        assert_eq!(sample(&out, "t_bucket{le=\"0.1\"}"), Some(1.0));
        // The encoder writes whole bounds as integers or with ".0" depending on its version.
        let bucket = |le: &str| {
            sample(&out, &format!("t_bucket{{le=\"{le}.0\"}}"))
                .or_else(|| sample(&out, &format!("t_bucket{{le=\"{le}\"}}")))
        };
        assert_eq!(bucket("5"), Some(2.0));
        assert_eq!(bucket("10000"), Some(2.0));
        assert_eq!(sample(&out, "t_bucket{le=\"+Inf\"}"), Some(3.0));
        assert_eq!(sample(&out, "t_count"), Some(3.0));
    }

    #[test]
    fn partition_and_group_gauges_are_refilled_at_each_scrape() {
        let m = BrokerMetrics::new();
        let part = |topic: &str, partition, hw, parked| PartitionSample {
            topic: topic.into(),
            partition,
            size_bytes: 1000 + partition as u64,
            log_start_offset: 5,
            log_end_offset: hw + 2,
            high_watermark: hw,
            parked,
        };
        let parts = [
            part(
                "a",
                0,
                100,
                Parked {
                    produce: 1,
                    fetch: 2,
                },
            ),
            part(
                "a",
                1,
                50,
                Parked {
                    produce: 0,
                    fetch: 1,
                },
            ),
        ];
        let committed = [
            ("g".to_string(), "a".to_string(), 0, 40),
            ("g".to_string(), "a".to_string(), 1, 50),
            ("g".to_string(), "elsewhere".to_string(), 0, 7),
            ("h".to_string(), "a".to_string(), 0, -1),
        ];
        m.fill_partitions(&parts, &committed);
        let text = m.render(None, None).expect("render");
        let v = |line: &str| sample(&text, line);
        assert_eq!(
            v("kafka_log_log_size{topic=\"a\",partition=\"1\"}"),
            Some(1001.0)
        );
        assert_eq!(
            v("kafka_log_log_logstartoffset{topic=\"a\",partition=\"0\"}"),
            Some(5.0)
        );
        assert_eq!(
            v("kafka_log_log_logendoffset{topic=\"a\",partition=\"0\"}"),
            Some(102.0)
        );
        let g = "consumergroup=\"g\",topic=\"a\"";
        assert_eq!(
            v(&format!("kafka_consumergroup_lag{{{g},partition=\"0\"}}")),
            Some(60.0)
        );
        assert_eq!(
            v(&format!("kafka_consumergroup_lag{{{g},partition=\"1\"}}")),
            Some(0.0)
        );
        assert_eq!(
            v(&format!("kafka_consumergroup_lag_sum{{{g}}}")),
            Some(60.0)
        );
        assert_eq!(
            v(&format!(
                "kafka_consumergroup_current_offset{{{g},partition=\"0\"}}"
            )),
            Some(40.0)
        );
        // A partition not hosted here has its committed offset but no lag; no commit, nothing.
        assert_eq!(
            v(
                "kafka_consumergroup_current_offset{consumergroup=\"g\",topic=\"elsewhere\",partition=\"0\"}"
            ),
            Some(7.0)
        );
        assert!(
            !text.contains("topic=\"elsewhere\",partition=\"0\"} 0"),
            "{text}"
        );
        assert!(!text.contains("consumergroup=\"h\""), "{text}");
        assert_eq!(
            v("kafka_server_delayedoperationpurgatory_purgatorysize{delayedoperation=\"Produce\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("kafka_server_delayedoperationpurgatory_purgatorysize{delayedoperation=\"Fetch\"}"),
            Some(3.0)
        );
        // The next scrape reflects the next state: a partition gone, its series gone.
        m.fill_partitions(&parts[1..], &committed[1..2]);
        let text = m.render(None, None).expect("render");
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert_eq!(
            sample(
                &text,
                "kafka_consumergroup_lag_sum{consumergroup=\"g\",topic=\"a\"}"
            ),
            Some(0.0)
        );
    }

    #[test]
    fn process_memory_and_fsync_times_are_read_at_render() {
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
        assert!(page_size().is_power_of_two());
        let dir = tempfile::tempdir().expect("tempdir");
        vltava_storage::RealFs
            .sync_dir(dir.path())
            .expect("fsync the directory");
        let m = BrokerMetrics::new();
        let text = m.render(None, None).expect("render");
        assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 0.0));
        assert!(
            sample(&text, "kafka_log_logflushstats_logflushrateandtimems_count")
                .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(text.contains("# TYPE kafka_log_logflushstats_logflushrateandtimems histogram"));
        assert!(text.contains("# TYPE kafka_server_replicamanager_isrshrinks_total counter"));
        assert!(text.contains("# TYPE kafka_server_replicamanager_isrexpands_total counter"));
    }

    #[test]
    fn counters_kept_elsewhere_catch_up_and_never_go_back() {
        let c = Counter::default();
        BrokerMetrics::catch_up(&c, 3);
        BrokerMetrics::catch_up(&c, 2);
        assert_eq!(c.get(), 3);
        BrokerMetrics::catch_up(&c, 5);
        assert_eq!(c.get(), 5);
    }

    #[test]
    fn connections_are_counted_while_open() {
        let m = Arc::new(BrokerMetrics::new());
        let a = m.connection_opened();
        let b = m.connection_opened();
        assert_eq!(m.open_connections(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.open_connections(), 0);
    }
}
