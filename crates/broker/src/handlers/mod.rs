//! Request dispatch: the APIs this broker advertises, and the routing of each decoded request to
//! the handler of its API family (one submodule per family; the group APIs are in
//! [`crate::group_handlers`]).
//!
//! Fields that do not exist at the request's version are left at their defaults: the codec
//! refuses to encode a non-default value for an absent field, and leaving tagged fields at
//! their defaults keeps them off the wire (old librdkafka cannot skip them).

mod admin;
mod configs;
mod fetch;
mod metadata;
mod moves;
mod offsets;
mod produce;
mod producer_ids;
mod quorum;
mod topics;

use std::sync::Arc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeClusterResponse, InitProducerIdResponse, ProducerId,
    RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

pub use fetch::FetchReply;

use crate::errors::NONE;
use crate::meta::NodeMeta;
use crate::replica::ReplicaManager;

/// APIs and versions this broker serves, exactly as advertised in ApiVersions.
///
/// Produce is advertised from v0 although only v3+ is served, as Kafka 4 does (KAFKA-18659):
/// librdkafka before 2.10 turns gzip and snappy off when Produce v0-v2 are missing. Requests at
/// v0-v2 close the connection, as in Kafka. FindCoordinator v0 must be present for librdkafka
/// to enable LZ4. DescribeLogDirs starts at v1, as in Kafka 4 (KIP-896; kafka-protocol 0.18
/// no longer decodes v0). API 74 is served at v0 only, which is KIP-714's
/// ListClientMetricsResources (KIP-1142 renamed it ListConfigResources and added v1).
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
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::AddRaftVoter, 0, 0),
    (ApiKey::RemoveRaftVoter, 0, 0),
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
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::GetTelemetrySubscriptions, 0, 0),
    (ApiKey::PushTelemetry, 0, 0),
    (ApiKey::ListConfigResources, 0, 0),
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
    /// The metadata quorum: the committed image, and the way to the active controller.
    pub cluster: Arc<crate::cluster::Cluster>,
    /// Counters the handlers and connections add to (per batch and per request).
    pub metrics: Arc<crate::metrics::BrokerMetrics>,
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

/// Runs `work` on tokio's blocking pool: handlers whose work waits for the disk (creating or
/// deleting log directories, catalogue rewrites, `__consumer_offsets` appends that may fsync)
/// would otherwise stall every connection sharing the runtime worker. `None` when the runtime
/// is shutting down and the work never ran.
async fn off_worker<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => Some(v),
        Err(e) => match e.try_into_panic() {
            // A panic stays a panic of the connection's task, as when the work ran inline.
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

/// [`off_worker`] for a whole handler, answering its response (or closing the connection
/// when the runtime is shutting down).
async fn respond_off_worker(
    ctx: &Arc<Ctx>,
    handler: impl FnOnce(&Ctx) -> ResponseKind + Send + 'static,
) -> Reply {
    let ctx = Arc::clone(ctx);
    match off_worker(move || handler(&ctx)).await {
        Some(r) => Reply::Respond(Box::new(r)),
        None => Reply::Close,
    }
}

/// Dispatches a decoded request.
pub async fn handle(
    ctx: &Arc<Ctx>,
    client: &crate::group_handlers::Client,
    version: i16,
    req: RequestKind,
) -> Reply {
    use crate::group_handlers as gh;
    Reply::Respond(Box::new(match req {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(NONE)),
        RequestKind::Metadata(r) => match metadata::metadata(ctx, version, r).await {
            Some(r) => ResponseKind::Metadata(r),
            None => return Reply::Close,
        },
        RequestKind::Produce(r) => {
            let rest = produce::produce(ctx, version, r);
            return Reply::Deferred(Box::pin(async move {
                match rest.await {
                    Some(r) => Reply::Respond(Box::new(ResponseKind::Produce(r))),
                    None => Reply::Silent,
                }
            }));
        }
        RequestKind::Fetch(r) => {
            return Reply::Fetch(Box::new(fetch::fetch(ctx, version, r).await));
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(ctx, version, r))
        }
        RequestKind::CreateTopics(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::CreateTopics(topics::create_topics(c, version, r))
            })
            .await;
        }
        RequestKind::DeleteTopics(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::DeleteTopics(topics::delete_topics(c, version, r))
            })
            .await;
        }
        RequestKind::CreatePartitions(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::CreatePartitions(topics::create_partitions(c, r))
            })
            .await;
        }
        RequestKind::ElectLeaders(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::ElectLeaders(moves::elect_leaders(c, version, r))
            })
            .await;
        }
        RequestKind::AlterPartitionReassignments(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::AlterPartitionReassignments(moves::alter_partition_reassignments(
                    c, version, r,
                ))
            })
            .await;
        }
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(moves::list_partition_reassignments(ctx, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(ctx, version, r))
        }
        RequestKind::AlterConfigs(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::AlterConfigs(configs::alter_configs(c, r))
            })
            .await;
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::IncrementalAlterConfigs(configs::incremental_alter_configs(c, r))
            })
            .await;
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(metadata::describe_cluster(ctx, version, r))
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(quorum::describe_quorum(ctx, version, r).await)
        }
        RequestKind::AddRaftVoter(r) => {
            ResponseKind::AddRaftVoter(quorum::add_raft_voter(ctx, r).await)
        }
        RequestKind::RemoveRaftVoter(r) => {
            ResponseKind::RemoveRaftVoter(quorum::remove_raft_voter(ctx, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offsets::offset_for_leader_epoch(ctx, r))
        }
        RequestKind::DeleteRecords(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::DeleteRecords(offsets::delete_records(c, r))
            })
            .await;
        }
        RequestKind::InitProducerId(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::InitProducerId(producer_ids::init_producer_id(c, r))
            })
            .await;
        }
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
            // Off the workers: a group left empty writes its metadata.
            return respond_off_worker(ctx, move |c| {
                ResponseKind::LeaveGroup(gh::leave_group(&c.groups, version, r))
            })
            .await;
        }
        RequestKind::OffsetCommit(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::OffsetCommit(gh::offset_commit(&c.groups, version, r))
            })
            .await;
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
            return respond_off_worker(ctx, move |c| {
                ResponseKind::DeleteGroups(gh::delete_groups(&c.groups, r))
            })
            .await;
        }
        RequestKind::OffsetDelete(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::OffsetDelete(gh::offset_delete(&c.groups, r))
            })
            .await;
        }
        RequestKind::DescribeLogDirs(r) => {
            // Off the workers: statvfs, and each hosted log's lock.
            return respond_off_worker(ctx, move |c| {
                ResponseKind::DescribeLogDirs(admin::describe_log_dirs(c, version, r))
            })
            .await;
        }
        RequestKind::DescribeProducers(r) => {
            return respond_off_worker(ctx, move |c| {
                ResponseKind::DescribeProducers(admin::describe_producers(c, r))
            })
            .await;
        }
        RequestKind::GetTelemetrySubscriptions(r) => {
            ResponseKind::GetTelemetrySubscriptions(admin::get_telemetry_subscriptions(r))
        }
        RequestKind::PushTelemetry(r) => ResponseKind::PushTelemetry(admin::push_telemetry(r)),
        RequestKind::ListConfigResources(_) => {
            ResponseKind::ListConfigResources(admin::list_client_metrics_resources())
        }
        RequestKind::FindCoordinator(r) => {
            // Off the workers: the first one may create the offsets topic.
            return respond_off_worker(ctx, move |c| {
                ResponseKind::FindCoordinator(metadata::find_coordinator(c, version, r))
            })
            .await;
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
