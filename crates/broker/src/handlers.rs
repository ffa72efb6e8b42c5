//! Request handlers: one function per API, each turning a decoded request into a response.
//!
//! Fields that do not exist at the request's version are left at their defaults: the codec
//! refuses to encode a non-default value for an absent field, and leaving tagged fields at
//! their defaults keeps them off the wire (old librdkafka cannot skip them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, ApiVersionsResponse, BrokerId,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestKind,
    ResponseKind, TopicName, alter_configs_response, find_coordinator_response,
    incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use vltava_protocol::batch;
use vltava_storage::{FileRegion, StorageError};

use crate::errors::*;
use crate::meta::NodeMeta;
use crate::replica::{Partition, ReplicaManager, Topic, TopicError, validate_topic_name};

/// APIs and versions this broker serves, exactly as advertised in ApiVersions.
///
/// Produce is advertised from v0 although only v3+ is served, as Kafka 4 does (KAFKA-18659):
/// librdkafka before 2.10 turns gzip and snappy off when Produce v0-v2 are missing. Requests at
/// v0-v2 close the connection, as in Kafka. FindCoordinator v0 must be present for librdkafka
/// to enable LZ4.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// Versions inside the advertised range that are nevertheless refused (see [`SUPPORTED_APIS`]).
pub fn advertised_only(api: ApiKey, version: i16) -> bool {
    api == ApiKey::Produce && version < 3
}

/// The supported version range of an API, if we serve it at all.
pub fn supported_range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct Ctx {
    /// Partitions and topics.
    pub rm: Arc<ReplicaManager>,
    /// Node identity.
    pub meta: NodeMeta,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Group coordinator and committed offsets.
    pub groups: Arc<crate::groups::GroupManager>,
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

/// What the connection does after a request.
pub enum Reply {
    /// Send this response.
    Respond(Box<ResponseKind>),
    /// Send nothing (acks=0 produce).
    Silent,
    /// Close the connection (a request type that reached dispatch without a handler).
    Close,
    /// A Fetch response whose record sets are still in the log files.
    Fetch(Box<FetchReply>),
    /// The request's effects are applied; the reply comes once this completes (a Produce
    /// waiting for its fsync). The connection goes on with its next request meanwhile and
    /// sends replies in request order.
    Deferred(std::pin::Pin<Box<dyn Future<Output = Reply> + Send>>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Respond(r) => f.debug_tuple("Respond").field(r).finish(),
            Reply::Silent => f.write_str("Silent"),
            Reply::Close => f.write_str("Close"),
            Reply::Fetch(r) => f.debug_tuple("Fetch").field(r).finish(),
            Reply::Deferred(_) => f.write_str("Deferred"),
        }
    }
}

/// A Fetch response plus, per partition in response order, the file ranges that hold its
/// records (`None`: the partition's `records` field is used as is).
#[derive(Debug)]
pub struct FetchReply {
    /// The response; `records` is unset where `regions` has ranges.
    pub response: FetchResponse,
    /// Ranges per partition, in response order.
    pub regions: Vec<Option<Vec<FileRegion>>>,
}

impl FetchReply {
    /// The response with every record set read into memory (for writers without zero-copy
    /// transfer).
    pub fn materialize(self) -> std::io::Result<FetchResponse> {
        let mut resp = self.response;
        let mut regions = self.regions.into_iter();
        for t in &mut resp.responses {
            for p in &mut t.partitions {
                if let Some(Some(rs)) = regions.next() {
                    let mut out = Vec::with_capacity(rs.iter().map(FileRegion::len).sum());
                    for r in &rs {
                        r.read_into(&mut out)?;
                    }
                    p.records = Some(Bytes::from(out));
                }
            }
        }
        Ok(resp)
    }
}

/// Dispatches a decoded request.
pub async fn handle(
    ctx: &Ctx,
    client: &crate::group_handlers::Client,
    version: i16,
    req: RequestKind,
) -> Reply {
    use crate::group_handlers as gh;
    Reply::Respond(Box::new(match req {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(NONE)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(ctx, version, r)),
        RequestKind::Produce(r) => {
            let rest = produce(ctx, version, r);
            return Reply::Deferred(Box::pin(async move {
                match rest.await {
                    Some(r) => Reply::Respond(Box::new(ResponseKind::Produce(r))),
                    None => Reply::Silent,
                }
            }));
        }
        RequestKind::Fetch(r) => return Reply::Fetch(Box::new(fetch(ctx, version, r).await)),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets(ctx, version, r)),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(create_topics(ctx, version, r)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(delete_topics(ctx, version, r)),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions(ctx, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs(ctx, version, r))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(alter_configs(ctx, r)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs(ctx, r))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster(ctx, version, r))
        }
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(delete_records(ctx, r)),
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(init_producer_id(ctx, r)),
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(gh::join_group(&ctx.groups, client, version, r).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(gh::sync_group(&ctx.groups, version, r).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(gh::heartbeat(&ctx.groups, version, r))
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(gh::leave_group(&ctx.groups, version, r))
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(gh::offset_commit(&ctx.groups, version, r))
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(gh::offset_fetch(&ctx.groups, version, r))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(gh::describe_groups(&ctx.groups, version, r))
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(gh::list_groups(&ctx.groups, version, r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(gh::delete_groups(&ctx.groups, r))
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(gh::offset_delete(&ctx.groups, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(ctx, version, r))
        }
        other => {
            // Unreachable while SUPPORTED_APIS and this match agree; closing beats hanging.
            tracing::error!(request = ?std::mem::discriminant(&other), "no handler for request type");
            return Reply::Close;
        }
    }))
}

/// ApiVersions response listing exactly what [`SUPPORTED_APIS`] holds.
pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = SUPPORTED_APIS
        .iter()
        .map(|(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *lo;
            v.max_version = *hi;
            v
        })
        .collect();
    r
}

fn partition_metadata(ctx: &Ctx, version: i16, p: &Partition) -> MetadataResponsePartition {
    let node = BrokerId(ctx.meta.node_id);
    let mut m = MetadataResponsePartition::default();
    m.partition_index = p.index;
    m.leader_id = node;
    if version >= 7 {
        m.leader_epoch = p.leader_epoch;
    }
    m.replica_nodes = vec![node];
    m.isr_nodes = vec![node];
    m
}

fn topic_metadata(ctx: &Ctx, version: i16, t: &Topic) -> MetadataResponseTopic {
    let mut m = MetadataResponseTopic::default();
    m.name = Some(tn(&t.name));
    if version >= 10 {
        m.topic_id = t.id;
    }
    if version >= 1 {
        m.is_internal = t.is_internal();
    }
    m.partitions = t
        .partitions
        .iter()
        .map(|p| partition_metadata(ctx, version, p))
        .collect();
    m
}

fn metadata(ctx: &Ctx, version: i16, req: MetadataRequest) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(ctx.meta.node_id);
    b.host = s(ctx.host.clone());
    b.port = ctx.port;
    resp.brokers = vec![b];
    if version >= 2 {
        resp.cluster_id = Some(s(ctx.meta.cluster_id.clone()));
    }
    if version >= 1 {
        resp.controller_id = BrokerId(ctx.meta.node_id);
    }
    // v0 uses an empty list for "all topics"; v1+ uses null.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto_create = version < 4 || req.allow_auto_topic_creation;
    resp.topics = match requested {
        // Internal topics are listed only when asked for by name.
        None => ctx
            .rm
            .all_topics()
            .iter()
            .filter(|t| !t.is_internal())
            .map(|t| topic_metadata(ctx, version, t))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|rt| {
                let name = rt.name.as_ref().map(|n| n.0.to_string());
                let found = match &name {
                    Some(n) => {
                        if validate_topic_name(n).is_err() {
                            return topic_error(
                                version,
                                name.clone(),
                                rt.topic_id,
                                INVALID_TOPIC_EXCEPTION,
                            );
                        }
                        if allow_auto_create {
                            ctx.rm.auto_create(n)
                        } else {
                            Ok(ctx.rm.topic(n))
                        }
                    }
                    None => Ok(ctx.rm.topic_by_id(rt.topic_id)),
                };
                match found {
                    Ok(Some(t)) => topic_metadata(ctx, version, &t),
                    Ok(None) => {
                        let code = if name.is_none() {
                            UNKNOWN_TOPIC_ID
                        } else {
                            UNKNOWN_TOPIC_OR_PARTITION
                        };
                        topic_error(version, name.clone(), rt.topic_id, code)
                    }
                    Err(e) => topic_error(version, name.clone(), rt.topic_id, topic_code(&e)),
                }
            })
            .collect(),
    };
    resp
}

fn topic_error(
    version: i16,
    name: Option<String>,
    id: uuid::Uuid,
    code: i16,
) -> MetadataResponseTopic {
    let mut m = MetadataResponseTopic::default();
    m.error_code = code;
    m.name = name.map(|n| tn(&n));
    if version >= 10 {
        m.topic_id = id;
    }
    m
}

/// Result of appending one partition's records.
struct PartitionAppend {
    index: i32,
    error_code: i16,
    error_message: Option<String>,
    base_offset: i64,
    log_start_offset: i64,
}

fn append_partition(
    ctx: &Ctx,
    topic: Option<&Arc<Topic>>,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
) -> AppendStep {
    let fail = |code: i16, msg: Option<String>| PartitionAppend {
        index,
        error_code: code,
        error_message: msg,
        base_offset: -1,
        log_start_offset: -1,
    };
    let Some(topic) = topic else {
        return AppendStep::Done(fail(UNKNOWN_TOPIC_OR_PARTITION, None));
    };
    let Some(partition) = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
    else {
        return AppendStep::Done(fail(UNKNOWN_TOPIC_OR_PARTITION, None));
    };
    if acks == -1 {
        let min_isr = ctx.rm.config().min_insync_replicas(&topic.configs);
        // One replica (this node) is in sync.
        if min_isr > 1 {
            return AppendStep::Done(fail(
                NOT_ENOUGH_REPLICAS,
                Some(format!(
                    "in-sync replicas 1 < min.insync.replicas {min_isr}"
                )),
            ));
        }
    }
    let records = records.unwrap_or_default();
    let batches = match batch::split_produced(records) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return AppendStep::Done(fail(INVALID_RECORD, Some("no record batches".into()))),
        Err(e) => {
            let code = match e {
                batch::BatchError::CorruptCrc { .. } => CORRUPT_MESSAGE,
                _ => INVALID_RECORD,
            };
            return AppendStep::Done(fail(code, Some(e.to_string())));
        }
    };
    let log_config = ctx.rm.config().log_config(&topic.configs);
    if log_config.cleanup_policy.compacts() {
        let limit = (log_config.max_message_bytes as usize)
            .saturating_mul(64)
            .max(64 << 20);
        for (_, b) in &batches {
            match batch::has_keyless_record(b, limit) {
                Ok(false) => {}
                Ok(true) => {
                    return AppendStep::Done(fail(
                        INVALID_RECORD,
                        Some("compacted topic cannot accept a record without a key".into()),
                    ));
                }
                Err(e) => return AppendStep::Done(fail(INVALID_RECORD, Some(e.to_string()))),
            }
        }
    }
    match partition.append_start(&batches) {
        Ok(pending) => AppendStep::Pending {
            index,
            topic: Arc::clone(topic),
            pending,
        },
        Err(e) => AppendStep::Done(append_failed(&topic.name, index, e)),
    }
}

fn append_failed(topic: &str, index: i32, e: StorageError) -> PartitionAppend {
    if matches!(e, StorageError::Io(_) | StorageError::Corrupt(_)) {
        tracing::error!(topic, partition = index, error = %e, "append failed");
    }
    PartitionAppend {
        index,
        error_code: storage_code(&e),
        error_message: Some(e.to_string()),
        base_offset: -1,
        log_start_offset: -1,
    }
}

/// A partition's part of a Produce request after the write: answered, or waiting for its
/// fsync.
enum AppendStep {
    Done(PartitionAppend),
    Pending {
        index: i32,
        topic: Arc<Topic>,
        pending: crate::replica::PendingAppend,
    },
}

impl AppendStep {
    /// The outcome, and the partition and last offset acks=all waits for.
    async fn finish(self) -> (PartitionAppend, Option<(Arc<Partition>, i64)>) {
        match self {
            AppendStep::Done(r) => (r, None),
            AppendStep::Pending {
                index,
                topic,
                pending,
            } => {
                let partition = pending.partition();
                match pending.finish().await {
                    Ok(info) => (
                        PartitionAppend {
                            index,
                            error_code: NONE,
                            error_message: None,
                            base_offset: info.first_offset as i64,
                            log_start_offset: info.log_start_offset as i64,
                        },
                        Some((partition, info.last_offset as i64)),
                    ),
                    Err(e) => (append_failed(&topic.name, index, e), None),
                }
            }
        }
    }
}

/// Writes a Produce request's batches now (in request order, before the connection reads its
/// next request) and returns the rest: waiting for durability and acknowledgements, then the
/// response (`None` for acks=0).
fn produce(
    ctx: &Ctx,
    version: i16,
    req: ProduceRequest,
) -> impl Future<Output = Option<ProduceResponse>> + Send + 'static {
    let acks = req.acks;
    let transactional = req.transactional_id.is_some();
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    let mut topics = Vec::new();
    for td in req.topic_data {
        let name = td.name.0.to_string();
        let topic_valid = validate_topic_name(&name).is_ok();
        // Like Kafka, Produce never creates topics; clients learn of them through Metadata.
        let topic = if topic_valid {
            ctx.rm.topic(&name)
        } else {
            None
        };
        // Clients may not write to the broker's own topics.
        let topic_valid = topic_valid && !topic.as_ref().is_some_and(|t| t.is_internal());
        let refused = |index: i32, code: i16, msg: Option<String>| {
            AppendStep::Done(PartitionAppend {
                index,
                error_code: code,
                error_message: msg,
                base_offset: -1,
                log_start_offset: -1,
            })
        };
        let mut steps = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            steps.push(if !topic_valid {
                refused(pd.index, INVALID_TOPIC_EXCEPTION, None)
            } else if !matches!(acks, -1..=1) {
                refused(pd.index, INVALID_REQUIRED_ACKS, None)
            } else if transactional {
                refused(
                    pd.index,
                    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    Some("transactions are not supported yet".into()),
                )
            } else {
                append_partition(ctx, topic.as_ref(), pd.index, pd.records, acks)
            });
        }
        topics.push((td.name, steps));
    }
    async move {
        let mut resp = ProduceResponse::default();
        let mut pending = Vec::new();
        for (name, steps) in topics {
            let mut tr = TopicProduceResponse::default();
            tr.name = name;
            for step in steps {
                let (res, wait) = step.finish().await;
                if let Some(w) = wait {
                    pending.push(w);
                }
                let mut pr = PartitionProduceResponse::default();
                pr.index = res.index;
                pr.error_code = res.error_code;
                pr.base_offset = res.base_offset;
                if version >= 5 {
                    pr.log_start_offset = res.log_start_offset;
                }
                if version >= 8 {
                    pr.error_message = res.error_message.map(s);
                }
                tr.partition_responses.push(pr);
            }
            resp.responses.push(tr);
        }
        if acks == 0 {
            return None;
        }
        if acks == -1 {
            for (p, last) in pending {
                // Single replica: already satisfied; the call stays so replication can extend it.
                p.wait_for_high_watermark(last, timeout).await;
            }
        }
        Some(resp)
    }
}

async fn fetch(ctx: &Ctx, version: i16, req: FetchRequest) -> FetchReply {
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 300_000) as u64);
    let max_bytes = if version >= 3 {
        req.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    // Resolve topics once; a topic deleted meanwhile keeps its error for this request.
    let resolved: Vec<(Option<Arc<Topic>>, &FetchTopic)> = req
        .topics
        .iter()
        .map(|ft| {
            let t = if version >= 13 {
                ctx.rm.topic_by_id(ft.topic_id)
            } else {
                ctx.rm.topic(&ft.topic.0)
            };
            (t, ft)
        })
        .collect();
    let notify = Arc::new(Notify::new());
    loop {
        // Register before reading so an append between the read and the wait still wakes us.
        let waiting = Instant::now() < deadline && min_bytes > 0;
        if waiting {
            for (t, ft) in &resolved {
                if let Some(t) = t {
                    for fp in &ft.partitions {
                        if let Some(p) = usize::try_from(fp.partition)
                            .ok()
                            .and_then(|i| t.partitions.get(i))
                        {
                            p.add_waiter(&notify);
                        }
                    }
                }
            }
        }
        let (resp, bytes, has_error) = fetch_once(version, &resolved, max_bytes);
        if !waiting || bytes >= min_bytes || has_error {
            return resp;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(remaining, notify.notified())
            .await
            .is_err()
        {
            let (resp, _, _) = fetch_once(version, &resolved, max_bytes);
            return resp;
        }
    }
}

fn fetch_once(
    version: i16,
    resolved: &[(Option<Arc<Topic>>, &FetchTopic)],
    max_bytes: usize,
) -> (FetchReply, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut regions = Vec::new();
    let mut total = 0usize;
    let mut has_error = false;
    for (topic, ft) in resolved {
        let mut tr = FetchableTopicResponse::default();
        if version >= 13 {
            tr.topic_id = ft.topic_id;
        } else {
            tr.topic = ft.topic.clone();
        }
        for fp in &ft.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            if version >= 4 {
                pd.aborted_transactions = None;
            }
            let partition = topic.as_ref().and_then(|t| {
                usize::try_from(fp.partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            });
            let Some(partition) = partition else {
                pd.error_code = if topic.is_none() && version >= 13 {
                    UNKNOWN_TOPIC_ID
                } else {
                    UNKNOWN_TOPIC_OR_PARTITION
                };
                has_error = true;
                tr.partitions.push(pd);
                regions.push(None);
                continue;
            };
            let mut found = None;
            let budget =
                (fp.partition_max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
            match partition.read_regions(fp.fetch_offset, budget, total == 0) {
                Ok((slice, wm)) => {
                    pd.high_watermark = wm.high_watermark;
                    pd.last_stable_offset = wm.high_watermark;
                    if version >= 5 {
                        pd.log_start_offset = wm.log_start_offset;
                    }
                    total += slice.len();
                    if slice.is_empty() {
                        pd.records = Some(Bytes::new());
                    } else {
                        pd.records = None;
                        found = Some(slice.regions);
                    }
                }
                Err(e) => {
                    let wm = partition.watermarks();
                    pd.error_code = storage_code(&e);
                    pd.high_watermark = wm.high_watermark;
                    pd.last_stable_offset = wm.high_watermark;
                    if version >= 5 {
                        pd.log_start_offset = wm.log_start_offset;
                    }
                    pd.records = Some(Bytes::new());
                    has_error = true;
                }
            }
            tr.partitions.push(pd);
            regions.push(found);
        }
        resp.responses.push(tr);
    }
    let reply = FetchReply {
        response: resp,
        regions,
    };
    (reply, total, has_error)
}

fn list_offsets(ctx: &Ctx, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for lt in req.topics {
        let topic = ctx.rm.topic(&lt.name.0);
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = lt.name.clone();
        for lp in lt.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = lp.partition_index;
            let partition = topic.as_ref().and_then(|t| {
                usize::try_from(lp.partition_index)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            });
            match partition {
                None => {
                    pr.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                    pr.timestamp = -1;
                    pr.offset = -1;
                }
                Some(p) => {
                    let log = p.log();
                    let (ts, off) = match lp.timestamp {
                        -2 => (-1, log.log_start_offset() as i64),
                        -1 => (-1, crate::replica::high_watermark(&log) as i64),
                        -3 => match max_timestamp_offset(&log) {
                            Ok(found) => found,
                            Err(e) => {
                                pr.error_code = storage_code(&e);
                                (-1, -1)
                            }
                        },
                        t if t >= 0 => match offset_for_timestamp(&log, t) {
                            Ok(found) => found,
                            Err(e) => {
                                pr.error_code = storage_code(&e);
                                (-1, -1)
                            }
                        },
                        // -4 (earliest local) and -5 (earliest tiered) equal earliest here:
                        // every segment is local.
                        -4 | -5 => (-1, log.log_start_offset() as i64),
                        _ => {
                            pr.error_code = INVALID_REQUEST;
                            (-1, -1)
                        }
                    };
                    pr.timestamp = ts;
                    pr.offset = off;
                    if version >= 4 && off >= 0 {
                        pr.leader_epoch = p.leader_epoch;
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// First record (in offset order) whose timestamp is at least `target`: storage finds the
/// first batch whose max timestamp qualifies, then its records are walked.
fn offset_for_timestamp(
    log: &vltava_storage::Log,
    target: i64,
) -> Result<(i64, i64), StorageError> {
    let Some((base, _)) = log.offset_for_timestamp(target)? else {
        return Ok((-1, -1));
    };
    let slice = log.read(base, 1, crate::replica::high_watermark(log), true)?;
    let limit = (log.config().max_message_bytes as usize)
        .saturating_mul(64)
        .max(64 << 20);
    let records = batch::record_offsets_and_timestamps(&slice.bytes, limit)
        .map_err(|e| StorageError::Corrupt(format!("batch at offset {base}: {e}")))?;
    Ok(records
        .into_iter()
        .find(|(off, ts)| *ts >= target && *off >= base as i64)
        .map(|(off, ts)| (ts, off))
        .unwrap_or((-1, -1)))
}

/// The record holding the largest timestamp (KIP-734): the batch is found by storage, the
/// record inside it by walking its records.
fn max_timestamp_offset(log: &vltava_storage::Log) -> Result<(i64, i64), StorageError> {
    let Some((max_ts, last_offset)) = log.max_timestamp() else {
        return Ok((-1, -1));
    };
    let slice = log.read(last_offset, 1, crate::replica::high_watermark(log), true)?;
    let limit = (log.config().max_message_bytes as usize)
        .saturating_mul(64)
        .max(64 << 20);
    let records = batch::record_offsets_and_timestamps(&slice.bytes, limit)
        .map_err(|e| StorageError::Corrupt(format!("batch at offset {last_offset}: {e}")))?;
    Ok(records
        .into_iter()
        .find(|(_, ts)| *ts == max_ts)
        .map(|(off, ts)| (ts, off))
        .unwrap_or((max_ts, last_offset as i64)))
}

fn config_pairs(
    configs: &[(String, Option<String>)],
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut out = BTreeMap::new();
    for (k, v) in configs {
        match v {
            Some(v) => {
                out.insert(k.clone(), v.clone());
            }
            None => {
                return Err(TopicError::InvalidConfig(format!(
                    "null value for '{k}' is not allowed when creating a topic"
                )));
            }
        }
    }
    Ok(out)
}

fn create_topics(ctx: &Ctx, version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for ct in req.topics {
        let name = ct.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = ct.name.clone();
        let configs: Vec<(String, Option<String>)> = ct
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let result = if !ct.assignments.is_empty() {
            // Manual assignment: only this node can hold replicas.
            let ok = (ct.num_partitions == -1 && ct.replication_factor == -1)
                && ct.assignments.iter().all(|a| {
                    a.broker_ids.iter().all(|b| b.0 == ctx.meta.node_id) && a.broker_ids.len() == 1
                });
            if ok {
                config_pairs(&configs).and_then(|c| {
                    ctx.rm
                        .create_topic(&name, ct.assignments.len() as i32, 1, c, req.validate_only)
                })
            } else {
                r.error_code = INVALID_REPLICA_ASSIGNMENT;
                r.error_message = Some(s(
                    "replica assignment must name only this broker, once per partition",
                ));
                resp.topics.push(r);
                continue;
            }
        } else {
            config_pairs(&configs).and_then(|c| {
                ctx.rm.create_topic(
                    &name,
                    ct.num_partitions,
                    ct.replication_factor,
                    c,
                    req.validate_only,
                )
            })
        };
        match result {
            Ok(t) => {
                if version >= 7 {
                    r.topic_id = t.id;
                }
                if version >= 5 {
                    r.num_partitions = t.partitions.len() as i32;
                    r.replication_factor = 1;
                    r.configs = Some(
                        crate::config::topic_setting_names()
                            .filter_map(|n| {
                                let (v, is_override) =
                                    ctx.rm.config().topic_value(&t.configs, n)?;
                                let mut c = CreatableTopicConfigs::default();
                                c.name = s(n);
                                c.value = Some(s(v));
                                c.config_source = if is_override { 1 } else { 5 };
                                Some(c)
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                r.error_code = topic_code(&e);
                r.error_message = Some(s(e.to_string()));
            }
        }
        resp.topics.push(r);
    }
    resp
}

fn delete_topics(ctx: &Ctx, version: i16, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        let name = match name {
            Some(n) => Some(n),
            None => ctx.rm.topic_by_id(id).map(|t| t.name.clone()),
        };
        r.name = name.as_ref().map(|n| tn(n));
        match name {
            None => r.error_code = UNKNOWN_TOPIC_ID,
            Some(n) => match ctx.rm.delete_topic(&n) {
                Ok(deleted_id) => {
                    if version >= 6 {
                        r.topic_id = deleted_id;
                    }
                }
                Err(e) => {
                    r.error_code = topic_code(&e);
                    if version >= 5 {
                        r.error_message = Some(s(e.to_string()));
                    }
                }
            },
        }
        resp.responses.push(r);
    }
    resp
}

fn create_partitions(ctx: &Ctx, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let bad_assignment = t.assignments.as_ref().is_some_and(|a| {
            a.iter()
                .any(|x| x.broker_ids.len() != 1 || x.broker_ids[0].0 != ctx.meta.node_id)
        });
        if bad_assignment {
            r.error_code = INVALID_REPLICA_ASSIGNMENT;
            r.error_message = Some(s("replica assignment must name only this broker"));
        } else if let Err(e) = ctx
            .rm
            .create_partitions(&t.name.0, t.count, req.validate_only)
        {
            r.error_code = topic_code(&e);
            r.error_message = Some(s(e.to_string()));
        }
        resp.results.push(r);
    }
    resp
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn config_type(name: &str) -> i8 {
    // 1 BOOLEAN, 2 STRING, 3 INT, 5 LONG, 7 LIST.
    match name {
        "cleanup.policy" | "log.cleanup.policy" => 7,
        n if n.ends_with("ratio") => 6,
        n if n.ends_with(".enable") => 1,
        n if n.ends_with(".ms") || n.ends_with("retention.bytes") || n.ends_with(".messages") => 5,
        n if n.ends_with(".bytes")
            || n.ends_with("replicas")
            || n.ends_with("partitions")
            || n.ends_with(".factor")
            || n == "node.id" =>
        {
            3
        }
        _ => 2,
    }
}

fn describe_configs(
    ctx: &Ctx,
    version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let wanted = |n: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == n))
        };
        let entry = |name: &str, value: &str, source: i8| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = s(name);
            c.value = Some(s(value));
            c.config_source = source;
            c.read_only = res.resource_type == RESOURCE_BROKER;
            if version >= 3 {
                c.config_type = config_type(name);
            }
            c
        };
        match res.resource_type {
            RESOURCE_TOPIC => match ctx.rm.topic(&res.resource_name) {
                Some(t) => {
                    for n in crate::config::topic_setting_names().filter(|n| wanted(n)) {
                        if let Some((v, is_override)) = ctx.rm.config().topic_value(&t.configs, n) {
                            r.configs
                                .push(entry(n, &v, if is_override { 1 } else { 5 }));
                        }
                    }
                }
                None => {
                    r.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                    r.error_message = Some(s(format!(
                        "topic '{}' does not exist",
                        res.resource_name.as_str()
                    )));
                }
            },
            RESOURCE_BROKER => {
                if res.resource_name.is_empty()
                    || res.resource_name.as_str() == ctx.meta.node_id.to_string()
                {
                    for (n, v, explicit) in ctx.rm.config().entries() {
                        if wanted(n) {
                            r.configs.push(entry(n, v, if explicit { 4 } else { 5 }));
                        }
                    }
                } else {
                    r.error_code = INVALID_REQUEST;
                    r.error_message = Some(s("unknown broker id"));
                }
            }
            _ => {
                r.error_code = INVALID_REQUEST;
                r.error_message = Some(s("unsupported resource type"));
            }
        }
        resp.results.push(r);
    }
    resp
}

fn alter_resource(
    ctx: &Ctx,
    resource_type: i8,
    name: &str,
    changes: Result<Vec<(String, Option<String>)>, String>,
    incremental: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    match resource_type {
        RESOURCE_TOPIC => {
            let changes = match changes {
                Ok(c) => c,
                Err(msg) => return (INVALID_CONFIG, Some(msg)),
            };
            match ctx
                .rm
                .alter_topic_configs(name, &changes, incremental, validate_only)
            {
                Ok(()) => (NONE, None),
                Err(e) => (topic_code(&e), Some(e.to_string())),
            }
        }
        RESOURCE_BROKER => (
            INVALID_CONFIG,
            Some(
                "broker settings are static: set them at start (--set, config file, VLTAVA_*)"
                    .into(),
            ),
        ),
        _ => (INVALID_REQUEST, Some("unsupported resource type".into())),
    }
}

fn alter_configs(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in req.resources {
        let changes = Ok(res
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect());
        let (code, msg) = alter_resource(
            ctx,
            res.resource_type,
            &res.resource_name,
            changes,
            false,
            req.validate_only,
        );
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        r.error_code = code;
        r.error_message = msg.map(s);
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name;
        resp.responses.push(r);
    }
    resp
}

fn incremental_alter_configs(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let changes: Result<Vec<_>, String> = res
            .configs
            .iter()
            .map(|c| match c.config_operation {
                0 => Ok((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                1 => Ok((c.name.to_string(), None)),
                op => Err(format!(
                    "operation {op} (APPEND/SUBTRACT) is not supported for '{}': no list-valued topic setting is supported yet",
                    c.name.as_str()
                )),
            })
            .collect();
        let (code, msg) = alter_resource(
            ctx,
            res.resource_type,
            &res.resource_name,
            changes,
            true,
            req.validate_only,
        );
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        r.error_code = code;
        r.error_message = msg.map(s);
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name;
        resp.responses.push(r);
    }
    resp
}

fn describe_cluster(
    ctx: &Ctx,
    version: i16,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    if version >= 1 && req.endpoint_type != 1 {
        resp.error_code = 114; // MISMATCHED_ENDPOINT_TYPE: we only have broker endpoints
        resp.error_message = Some(s("only broker endpoints are served"));
        resp.endpoint_type = req.endpoint_type;
        return resp;
    }
    resp.cluster_id = s(ctx.meta.cluster_id.clone());
    resp.controller_id = BrokerId(ctx.meta.node_id);
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(ctx.meta.node_id);
    b.host = s(ctx.host.clone());
    b.port = ctx.port;
    resp.brokers = vec![b];
    resp
}

fn delete_records(ctx: &Ctx, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let topic = ctx.rm.topic(&t.name.0);
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            let partition = topic.as_ref().and_then(|t| {
                usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            });
            match partition {
                None => pr.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                Some(part) => {
                    let mut log = part.log();
                    let hw = crate::replica::high_watermark(&log) as i64;
                    let target = if p.offset == -1 { hw } else { p.offset };
                    if target < 0 || target > hw {
                        pr.error_code = OFFSET_OUT_OF_RANGE;
                    } else {
                        match log.delete_records_before(target as u64) {
                            Ok(start) => pr.low_watermark = start as i64,
                            Err(e) => pr.error_code = storage_code(&e),
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

fn init_producer_id(ctx: &Ctx, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        resp.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        resp.producer_id = ProducerId(-1);
        resp.producer_epoch = -1;
        return resp;
    }
    // KIP-360: an idempotent producer may ask to bump its epoch after a fatal sequence error.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        resp.producer_id = req.producer_id;
        resp.producer_epoch = req.producer_epoch + 1;
        return resp;
    }
    match ctx.rm.next_producer_id() {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate producer id");
            resp.error_code = KAFKA_STORAGE_ERROR;
            resp.producer_id = ProducerId(-1);
            resp.producer_epoch = -1;
        }
    }
    resp
}

const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const KEY_TYPE_GROUP: i8 = 0;

/// Every group is coordinated by this node (the only one). Transactions have no coordinator
/// yet, so transaction keys get COORDINATOR_NOT_AVAILABLE.
fn find_coordinator(
    ctx: &Ctx,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    let answer = |key_type: i8| -> (i16, Option<StrBytes>) {
        if key_type == KEY_TYPE_GROUP {
            (NONE, None)
        } else {
            (
                COORDINATOR_NOT_AVAILABLE,
                Some(s("only group coordinators exist on this broker")),
            )
        }
    };
    if version >= 4 {
        for key in req.coordinator_keys {
            let (code, msg) = answer(req.key_type);
            let mut c = find_coordinator_response::Coordinator::default();
            c.key = key;
            c.error_code = code;
            c.error_message = msg;
            if code == NONE {
                c.node_id = BrokerId(ctx.meta.node_id);
                c.host = s(ctx.host.clone());
                c.port = ctx.port;
            } else {
                c.node_id = BrokerId(-1);
                c.port = -1;
            }
            resp.coordinators.push(c);
        }
        return resp;
    }
    let (code, msg) = answer(if version >= 1 {
        req.key_type
    } else {
        KEY_TYPE_GROUP
    });
    resp.error_code = code;
    if version >= 1 {
        resp.error_message = msg;
    }
    if code == NONE {
        resp.node_id = BrokerId(ctx.meta.node_id);
        resp.host = s(ctx.host.clone());
        resp.port = ctx.port;
    } else {
        resp.node_id = BrokerId(-1);
        resp.port = -1;
    }
    resp
}

/// A response carrying `code` for a request we decoded but will not serve at its version.
pub fn error_response(api: ApiKey, code: i16) -> Option<ResponseKind> {
    Some(match api {
        ApiKey::ApiVersions => ResponseKind::ApiVersions(api_versions(code)),
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdResponse::default();
            r.error_code = code;
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            ResponseKind::InitProducerId(r)
        }
        ApiKey::DescribeCluster => {
            let mut r = DescribeClusterResponse::default();
            r.error_code = code;
            ResponseKind::DescribeCluster(r)
        }
        _ => return None,
    })
}
