//! Admin APIs that tools call: DescribeLogDirs (35) and DescribeProducers (61), as Kafka's
//! `ReplicaManager.describeLogDirs` and `activeProducerState` answer them; and KIP-714's client
//! telemetry answered as "no telemetry": GetTelemetrySubscriptions (71) requests no metrics,
//! PushTelemetry (72) is answered without storing anything, and ListConfigResources v0 (74,
//! ListClientMetricsResources before KIP-1142) lists no client metrics resources.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeProducersRequest,
    DescribeProducersResponse, GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse,
    ListConfigResourcesResponse, ProducerId, PushTelemetryRequest, PushTelemetryResponse,
};
use uuid::Uuid;
use vltava_storage::ProducerStateManager;

use super::{Ctx, s, tn};
use crate::errors::NONE;
use crate::replica::{Partition, PartitionState, Topic, validate_topic_name};

/// KIP-714's interval between pushes; as the client is asked for no metrics, it is also how
/// long it waits before asking for a subscription again.
pub const TELEMETRY_PUSH_INTERVAL_MS: i32 = 300_000;

/// Kafka's default `telemetry.max.bytes`.
pub const TELEMETRY_MAX_BYTES: i32 = 1_048_576;

/// The one subscription id handed out: the subscription that requests nothing.
pub const NO_METRICS_SUBSCRIPTION_ID: i32 = 0;

/// DescribeLogDirs: the one data directory of this broker, with every hosted replica (leader
/// or follower) that the request names, or all of them when `topics` is null. Unknown or
/// unhosted partitions are left out, as in Kafka. Runs off the async workers: it stats the
/// file system and takes each log's lock.
pub(super) fn describe_log_dirs(
    ctx: &Ctx,
    version: i16,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, BTreeSet<i32>>> = req.topics.map(|topics| {
        let mut m: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for t in topics {
            m.entry(t.topic.0.to_string())
                .or_default()
                .extend(t.partitions);
        }
        m
    });
    // Absolute but not canonicalized, as Kafka's `toAbsolutePath`.
    let dir = ctx.rm.config().data_dir();
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = s(dir.to_string_lossy());
    match disk_space(&dir) {
        Ok(space) => {
            result.topics = hosted_log_dirs_topics(&ctx.rm.all_topics(), wanted.as_ref());
            if version >= 4 {
                result.total_bytes = space.total_bytes;
                result.usable_bytes = space.usable_bytes;
            }
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot describe the log directory");
            result.error_code = ResponseError::KafkaStorageError.code();
        }
    }
    let mut resp = DescribeLogDirsResponse::default();
    // The top-level error code exists from v3; there is no authorization to fail here.
    resp.error_code = NONE;
    resp.results = vec![result];
    resp
}

/// The topics of `topics` with their hosted partitions that `wanted` names (all if `None`);
/// topics left with no partition are dropped.
fn hosted_log_dirs_topics(
    topics: &[std::sync::Arc<Topic>],
    wanted: Option<&BTreeMap<String, BTreeSet<i32>>>,
) -> Vec<DescribeLogDirsTopic> {
    let mut out = Vec::new();
    for t in topics {
        let filter = match wanted {
            Some(w) => match w.get(&t.name) {
                Some(indexes) => Some(indexes),
                None => continue,
            },
            None => None,
        };
        let partitions: Vec<DescribeLogDirsPartition> = t
            .partitions
            .iter()
            .filter(|p| filter.is_none_or(|f| f.contains(&p.index)))
            .filter_map(|p| p.local.as_deref())
            .map(log_dir_partition)
            .collect();
        if partitions.is_empty() {
            continue;
        }
        let mut topic = DescribeLogDirsTopic::default();
        topic.name = tn(&t.name);
        topic.partitions = partitions;
        out.push(topic);
    }
    out
}

/// One hosted replica's size and lag, read under its log's lock.
fn log_dir_partition(p: &Partition) -> DescribeLogDirsPartition {
    let (size, log_end, high_watermark) = {
        let log = p.log();
        (
            log.size_bytes(),
            log.log_end_offset(),
            crate::replica::high_watermark(&log),
        )
    };
    let mut out = DescribeLogDirsPartition::default();
    out.partition_index = p.index;
    out.partition_size = i64::try_from(size).unwrap_or(i64::MAX);
    out.offset_lag = offset_lag(high_watermark, log_end);
    out.is_future_key = false;
    out
}

/// Kafka's lag of a current (not future) log: how far its end is behind the high watermark,
/// never negative (a leader's end is at or past it).
fn offset_lag(high_watermark: u64, log_end: u64) -> i64 {
    i64::try_from(high_watermark.saturating_sub(log_end)).unwrap_or(i64::MAX)
}

/// Size and free space of the file system holding a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DiskSpace {
    total_bytes: i64,
    usable_bytes: i64,
}

/// statvfs(3) of `dir`: total = blocks × fragment size, usable = blocks available to an
/// unprivileged user × fragment size (Java's `FileStore.getTotalSpace` / `getUsableSpace`),
/// capped at `i64::MAX` as Kafka's `adjustForLargeFileSystems` does.
fn disk_space(dir: &Path) -> Result<DiskSpace, nix::Error> {
    let st = nix::sys::statvfs::statvfs(dir)?;
    let frag = u128::from(st.fragment_size());
    let bytes = |blocks: u64| i64::try_from(u128::from(blocks) * frag).unwrap_or(i64::MAX);
    Ok(DiskSpace {
        total_bytes: bytes(st.blocks()),
        usable_bytes: bytes(st.blocks_available()),
    })
}

/// DescribeProducers: the active producers of each requested partition's local log, whatever
/// this replica's role (as Kafka). Runs off the async workers: it takes each log's lock.
pub(super) fn describe_producers(
    ctx: &Ctx,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut resp = DescribeProducersResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let topic_error = if validate_topic_name(&name).is_err() {
            Err(ResponseError::InvalidTopicException.code())
        } else {
            ctx.rm
                .topic(&name)
                .ok_or(ResponseError::UnknownTopicOrPartition.code())
        };
        let mut topic = TopicResponse::default();
        topic.name = t.name;
        topic.partitions = t
            .partition_indexes
            .iter()
            .map(|&index| {
                let mut p = PartitionResponse::default();
                p.partition_index = index;
                match topic_error
                    .as_deref()
                    .map_err(|&code| code)
                    .and_then(|topic| hosted_replica(topic, index))
                {
                    Ok(local) => {
                        p.active_producers = active_producers(local.log().producer_state())
                    }
                    Err(code) => p.error_code = code,
                }
                p
            })
            .collect();
        resp.topics.push(topic);
    }
    resp
}

/// This node's replica of partition `index`: UNKNOWN_TOPIC_OR_PARTITION if the topic has no
/// such partition, NOT_LEADER_OR_FOLLOWER if it is not hosted here (Kafka's
/// `getPartitionOrError`).
fn hosted_replica(topic: &Topic, index: i32) -> Result<&Partition, i16> {
    let state: &PartitionState = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    state
        .local
        .as_deref()
        .ok_or(ResponseError::NotLeaderOrFollower.code())
}

/// Every producer the log's state holds, by producer id. No transactions yet: the coordinator
/// epoch and the open transaction's first offset are always -1.
fn active_producers(state: &ProducerStateManager) -> Vec<ProducerState> {
    let mut out: Vec<ProducerState> = state
        .iter()
        .map(|(pid, e)| {
            let mut p = ProducerState::default();
            p.producer_id = ProducerId(pid);
            p.producer_epoch = i32::from(e.epoch());
            p.last_sequence = e.last_sequence().unwrap_or(-1);
            p.last_timestamp = e.last_timestamp();
            p.coordinator_epoch = -1;
            p.current_txn_start_offset = -1;
            p
        })
        .collect();
    out.sort_by_key(|p| p.producer_id.0);
    out
}

/// GetTelemetrySubscriptions as "no telemetry" (KIP-714): an empty list of requested metrics
/// tells the client not to push. A client without an instance id (the zero uuid) gets a fresh
/// random one, as Kafka's `ClientMetricsManager` gives.
pub(super) fn get_telemetry_subscriptions(
    req: GetTelemetrySubscriptionsRequest,
) -> GetTelemetrySubscriptionsResponse {
    let mut resp = GetTelemetrySubscriptionsResponse::default();
    resp.error_code = NONE;
    resp.client_instance_id = if req.client_instance_id.is_nil() {
        Uuid::new_v4()
    } else {
        req.client_instance_id
    };
    resp.subscription_id = NO_METRICS_SUBSCRIPTION_ID;
    resp.accepted_compression_types = Vec::new();
    resp.push_interval_ms = TELEMETRY_PUSH_INTERVAL_MS;
    resp.telemetry_max_bytes = TELEMETRY_MAX_BYTES;
    resp.delta_temporality = true;
    resp.requested_metrics = Vec::new();
    resp
}

/// PushTelemetry from a client that pushes although no metrics were requested, checked in the
/// order of Kafka's `ClientMetricsManager.validatePushRequest` (without its per-client
/// throttling and terminating state, which need a client cache we do not keep): a reserved
/// instance id is INVALID_REQUEST, a subscription id other than the one handed out
/// UNKNOWN_SUBSCRIPTION_ID (the client then asks for its subscription again), an unknown codec
/// UNSUPPORTED_COMPRESSION_TYPE, more than `telemetry_max_bytes` TELEMETRY_TOO_LARGE. A push
/// that passes is answered NONE and its metrics dropped, as Kafka does for a matching
/// subscription when there is nothing to export them to. The connection stays open either way.
pub(super) fn push_telemetry(req: PushTelemetryRequest) -> PushTelemetryResponse {
    let mut resp = PushTelemetryResponse::default();
    // Kafka's Uuid.RESERVED: the zero uuid and the metadata topic's id (0, 1).
    let reserved = matches!(req.client_instance_id.as_u128(), 0 | 1);
    resp.error_code = if reserved {
        ResponseError::InvalidRequest.code()
    } else if req.subscription_id != NO_METRICS_SUBSCRIPTION_ID {
        ResponseError::UnknownSubscriptionId.code()
    } else if !(0..=4).contains(&req.compression_type) {
        ResponseError::UnsupportedCompressionType.code()
    } else if req.metrics.len() > TELEMETRY_MAX_BYTES as usize {
        ResponseError::TelemetryTooLarge.code()
    } else {
        NONE
    };
    resp
}

/// ListConfigResources v0 (ListClientMetricsResources): no client metrics subscriptions exist.
pub(super) fn list_client_metrics_resources() -> ListConfigResourcesResponse {
    let mut resp = ListConfigResourcesResponse::default();
    resp.error_code = NONE;
    resp.config_resources = Vec::new();
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::ResponseKind;

    use super::*;

    fn encodes(resp: ResponseKind, version: i16) {
        let mut buf = BytesMut::new();
        if let Err(e) = resp.encode(&mut buf, version) {
            panic!("v{version} does not encode: {e}");
        }
    }

    #[test]
    fn offset_lag_is_never_negative() {
        assert_eq!(offset_lag(10, 10), 0);
        assert_eq!(
            offset_lag(10, 12),
            0,
            "a leader's end is past its high watermark"
        );
        assert_eq!(offset_lag(10, 4), 6, "a follower behind the high watermark");
    }

    #[test]
    fn disk_space_of_a_directory_and_of_a_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = disk_space(dir.path()).expect("statvfs");
        assert!(space.total_bytes > 0 && space.usable_bytes >= 0);
        assert!(space.usable_bytes <= space.total_bytes);
        assert!(disk_space(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn log_dir_results_encode_at_every_version() {
        for version in 1..=4 {
            let mut result = DescribeLogDirsResult::default();
            result.log_dir = s("/data");
            if version >= 4 {
                result.total_bytes = 100;
                result.usable_bytes = 50;
            }
            let mut resp = DescribeLogDirsResponse::default();
            resp.results = vec![result];
            encodes(ResponseKind::DescribeLogDirs(resp), version);
        }
    }

    fn topic(name: &str, partitions: usize) -> Topic {
        Topic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions: (0..partitions)
                .map(|i| PartitionState {
                    index: i as i32,
                    leader: 2,
                    leader_epoch: 0,
                    replicas: vec![2],
                    isr: vec![2],
                    local: None,
                })
                .collect(),
            configs: BTreeMap::new(),
            metrics: Arc::default(),
        }
    }

    #[test]
    fn producer_lookups_name_kafkas_errors() {
        let t = topic("t", 2);
        assert_eq!(
            hosted_replica(&t, 2).err(),
            Some(ResponseError::UnknownTopicOrPartition.code())
        );
        assert_eq!(
            hosted_replica(&t, -1).err(),
            Some(ResponseError::UnknownTopicOrPartition.code())
        );
        assert_eq!(
            hosted_replica(&t, 1).err(),
            Some(ResponseError::NotLeaderOrFollower.code()),
            "the partition exists but has no replica here"
        );
        assert!(active_producers(&ProducerStateManager::new()).is_empty());
    }

    #[test]
    fn unhosted_partitions_are_left_out_of_log_dirs() {
        let topics = vec![Arc::new(topic("t", 3))];
        assert!(hosted_log_dirs_topics(&topics, None).is_empty());
        let mut wanted = BTreeMap::new();
        wanted.insert("other".to_string(), BTreeSet::from([0]));
        assert!(hosted_log_dirs_topics(&topics, Some(&wanted)).is_empty());
    }

    #[test]
    fn telemetry_subscription_requests_nothing() {
        let fresh = get_telemetry_subscriptions(GetTelemetrySubscriptionsRequest::default());
        assert!(!fresh.client_instance_id.is_nil(), "a new instance id");
        let again = get_telemetry_subscriptions(GetTelemetrySubscriptionsRequest::default());
        assert_ne!(fresh.client_instance_id, again.client_instance_id);
        let id = Uuid::from_u128(42);
        let mut req = GetTelemetrySubscriptionsRequest::default();
        req.client_instance_id = id;
        let echoed = get_telemetry_subscriptions(req);
        assert_eq!(echoed.client_instance_id, id);
        assert_eq!(echoed.error_code, NONE);
        assert_eq!(echoed.subscription_id, 0);
        assert!(echoed.requested_metrics.is_empty());
        assert!(echoed.accepted_compression_types.is_empty());
        assert_eq!(echoed.push_interval_ms, 300_000);
        assert_eq!(echoed.telemetry_max_bytes, 1_048_576);
        assert!(echoed.delta_temporality);
        encodes(ResponseKind::GetTelemetrySubscriptions(echoed), 0);
    }

    #[test]
    fn pushes_are_answered_as_kafka_validates_them() {
        let push = |id: u128, sub: i32, codec: i8, len: usize| {
            let mut req = PushTelemetryRequest::default();
            req.client_instance_id = Uuid::from_u128(id);
            req.subscription_id = sub;
            req.compression_type = codec;
            req.metrics = Bytes::from(vec![0u8; len]);
            push_telemetry(req).error_code
        };
        assert_eq!(push(0, 0, 0, 1), ResponseError::InvalidRequest.code());
        assert_eq!(push(1, 0, 0, 1), ResponseError::InvalidRequest.code());
        assert_eq!(
            push(7, 5, 0, 1),
            ResponseError::UnknownSubscriptionId.code()
        );
        assert_eq!(
            push(7, 0, 9, 1),
            ResponseError::UnsupportedCompressionType.code()
        );
        assert_eq!(
            push(7, 0, 0, 1_048_577),
            ResponseError::TelemetryTooLarge.code()
        );
        assert_eq!(push(7, 0, 4, 100), NONE);
        encodes(
            ResponseKind::PushTelemetry(push_telemetry(PushTelemetryRequest::default())),
            0,
        );
    }

    #[test]
    fn no_client_metrics_resources() {
        let resp = list_client_metrics_resources();
        assert!(resp.config_resources.is_empty());
        encodes(ResponseKind::ListConfigResources(resp), 0);
    }
}
