//! Every read and action of the console is a Kafka request built here and answered by
//! [`crate::handlers::handle`], the dispatcher the Kafka listener uses: the same handlers,
//! limits, forwarding to the active controller and coordinator checks as a client gets.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, FetchRequest, FetchResponse, GroupId, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetFetchRequest,
    OffsetFetchResponse, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::group_handlers::Client;
use crate::handlers::{Ctx, Reply, handle};

/// Versions the console speaks (each inside [`crate::handlers::SUPPORTED_APIS`]).
pub const METADATA_VERSION: i16 = 12;
const LIST_OFFSETS_VERSION: i16 = 7;
const FETCH_VERSION: i16 = 12;
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
const DESCRIBE_CLUSTER_VERSION: i16 = 2;
const DESCRIBE_QUORUM_VERSION: i16 = 1;
const LIST_GROUPS_VERSION: i16 = 4;
const DESCRIBE_GROUPS_VERSION: i16 = 5;
const OFFSET_FETCH_VERSION: i16 = 7;

/// ListOffsets' special timestamps.
pub const LATEST: i64 = -1;
/// The log start.
pub const EARLIEST: i64 = -2;

/// Why a console request could not be answered.
#[derive(Debug)]
pub enum ApiError {
    /// The broker is stopping and the request was not served.
    ShuttingDown,
    /// The dispatcher answered with another response type than the request's.
    Unexpected,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::ShuttingDown => f.write_str("the broker is shutting down"),
            ApiError::Unexpected => f.write_str("unexpected response from the broker"),
        }
    }
}

/// A Kafka error code's name and message (`NONE` for 0).
pub fn error_name(code: i16) -> String {
    if code == 0 {
        return "NONE".into();
    }
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e} (error {code})"),
        None => format!("error code {code}"),
    }
}

pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(crate) fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

fn client() -> Client {
    Client {
        client_id: "vltava-console".into(),
        client_host: "/console".into(),
    }
}

/// Sends `req` at `version` through the dispatcher and waits for its answer.
pub async fn call(
    ctx: &Arc<Ctx>,
    version: i16,
    req: RequestKind,
) -> Result<ResponseKind, ApiError> {
    let mut reply = handle(ctx, &client(), version, req).await;
    loop {
        match reply {
            Reply::Respond(r) => return Ok(*r),
            Reply::Deferred(f) => reply = f.await,
            Reply::Fetch(f) => {
                // Reading the file regions is disk I/O: off the async workers.
                return match tokio::task::spawn_blocking(move || f.materialize()).await {
                    Ok(Ok(r)) => Ok(ResponseKind::Fetch(r)),
                    Ok(Err(_)) | Err(_) => Err(ApiError::ShuttingDown),
                };
            }
            Reply::Silent | Reply::Close => return Err(ApiError::ShuttingDown),
        }
    }
}

macro_rules! expect {
    ($resp:expr, $kind:ident) => {
        match $resp {
            ResponseKind::$kind(r) => Ok(r),
            _ => Err(ApiError::Unexpected),
        }
    };
}

/// Metadata for `topics`, or every (non-internal) topic.
pub async fn metadata(
    ctx: &Arc<Ctx>,
    topics: Option<&[&str]>,
) -> Result<MetadataResponse, ApiError> {
    let mut req = MetadataRequest::default();
    req.allow_auto_topic_creation = false;
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                let mut x =
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
                x.name = Some(tn(t));
                x
            })
            .collect()
    });
    expect!(
        call(ctx, METADATA_VERSION, RequestKind::Metadata(req)).await?,
        Metadata
    )
}

/// ListOffsets at `timestamp` ([`LATEST`], [`EARLIEST`] or ms) for each (topic, partitions):
/// (topic, partition) → Ok((offset, timestamp)) or the error code.
pub async fn list_offsets(
    ctx: &Arc<Ctx>,
    wanted: &[(String, Vec<i32>)],
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), Result<(i64, i64), i16>>, ApiError> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = wanted
        .iter()
        .map(|(t, ps)| {
            let mut topic = ListOffsetsTopic::default();
            topic.name = tn(t);
            topic.partitions = ps
                .iter()
                .map(|p| {
                    let mut x = ListOffsetsPartition::default();
                    x.partition_index = *p;
                    x.current_leader_epoch = -1;
                    x.timestamp = timestamp;
                    x
                })
                .collect();
            topic
        })
        .collect();
    let resp = expect!(
        call(ctx, LIST_OFFSETS_VERSION, RequestKind::ListOffsets(req)).await?,
        ListOffsets
    )?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            let v = if p.error_code == 0 {
                Ok((p.offset, p.timestamp))
            } else {
                Err(p.error_code)
            };
            out.insert((t.name.0.to_string(), p.partition_index), v);
        }
    }
    Ok(out)
}

/// A consumer's Fetch of one partition from `offset`, at most `max_bytes`, not waiting.
pub async fn fetch(
    ctx: &Arc<Ctx>,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: usize,
) -> Result<FetchResponse, ApiError> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let max = i32::try_from(max_bytes).unwrap_or(i32::MAX);
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.current_leader_epoch = -1;
    p.fetch_offset = offset;
    p.last_fetched_epoch = -1;
    p.log_start_offset = -1;
    p.partition_max_bytes = max;
    let mut t = FetchTopic::default();
    t.topic = tn(topic);
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = max;
    req.isolation_level = 0;
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = vec![t];
    expect!(
        call(ctx, FETCH_VERSION, RequestKind::Fetch(req)).await?,
        Fetch
    )
}

/// DescribeConfigs of one topic.
pub async fn topic_configs(
    ctx: &Arc<Ctx>,
    topic: &str,
) -> Result<DescribeConfigsResponse, ApiError> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let mut r = DescribeConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = s(topic);
    r.configuration_keys = None;
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![r];
    expect!(
        call(
            ctx,
            DESCRIBE_CONFIGS_VERSION,
            RequestKind::DescribeConfigs(req)
        )
        .await?,
        DescribeConfigs
    )
}

/// DescribeCluster with the fenced brokers.
pub async fn describe_cluster(ctx: &Arc<Ctx>) -> Result<DescribeClusterResponse, ApiError> {
    let mut req = DescribeClusterRequest::default();
    req.endpoint_type = 1;
    req.include_fenced_brokers = true;
    expect!(
        call(
            ctx,
            DESCRIBE_CLUSTER_VERSION,
            RequestKind::DescribeCluster(req)
        )
        .await?,
        DescribeCluster
    )
}

/// DescribeQuorum of the metadata log.
pub async fn describe_quorum(ctx: &Arc<Ctx>) -> Result<DescribeQuorumResponse, ApiError> {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let mut t = TopicData::default();
    t.topic_name = tn("__cluster_metadata");
    t.partitions = vec![PartitionData::default()];
    let mut req = DescribeQuorumRequest::default();
    req.topics = vec![t];
    expect!(
        call(
            ctx,
            DESCRIBE_QUORUM_VERSION,
            RequestKind::DescribeQuorum(req)
        )
        .await?,
        DescribeQuorum
    )
}

/// ListGroups (every state).
pub async fn list_groups(ctx: &Arc<Ctx>) -> Result<ListGroupsResponse, ApiError> {
    expect!(
        call(
            ctx,
            LIST_GROUPS_VERSION,
            RequestKind::ListGroups(ListGroupsRequest::default())
        )
        .await?,
        ListGroups
    )
}

/// DescribeGroups.
pub async fn describe_groups(
    ctx: &Arc<Ctx>,
    groups: &[String],
) -> Result<DescribeGroupsResponse, ApiError> {
    let mut req = DescribeGroupsRequest::default();
    req.groups = groups.iter().map(|g| GroupId(s(g))).collect();
    expect!(
        call(
            ctx,
            DESCRIBE_GROUPS_VERSION,
            RequestKind::DescribeGroups(req)
        )
        .await?,
        DescribeGroups
    )
}

/// OffsetFetch of every partition a group committed.
pub async fn offset_fetch(ctx: &Arc<Ctx>, group: &str) -> Result<OffsetFetchResponse, ApiError> {
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(s(group));
    req.topics = None;
    expect!(
        call(ctx, OFFSET_FETCH_VERSION, RequestKind::OffsetFetch(req)).await?,
        OffsetFetch
    )
}
