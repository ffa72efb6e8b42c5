//! Cluster discovery: Metadata, DescribeCluster and FindCoordinator, answered from the
//! committed metadata this node has applied, so that every broker gives the same answer
//! within the lag of applying the log.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, MetadataRequest, MetadataResponse, find_coordinator_response,
};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, off_worker, s, tn};
use crate::errors::{NONE, topic_code};
use crate::offsets::{OFFSETS_TOPIC, partition_for};
use crate::replica::{PartitionState, Topic, validate_topic_name};

fn partition_metadata(version: i16, p: &PartitionState) -> MetadataResponsePartition {
    let mut m = MetadataResponsePartition::default();
    m.partition_index = p.index;
    m.leader_id = BrokerId(p.leader);
    if p.leader < 0 {
        m.error_code = ResponseError::LeaderNotAvailable.code();
    }
    if version >= 7 {
        m.leader_epoch = p.leader_epoch;
    }
    m.replica_nodes = p.replicas.iter().copied().map(BrokerId).collect();
    m.isr_nodes = p.isr.iter().copied().map(BrokerId).collect();
    m
}

/// Every broker clients may talk to: registered and not fenced, with its advertised
/// listener, sorted by id.
pub(crate) fn live_brokers(ctx: &Ctx) -> Vec<(i32, String, i32, Option<String>)> {
    ctx.cluster
        .with_image(|img| {
            img.brokers
                .values()
                .filter(|b| !b.fenced)
                .filter_map(|b| {
                    let l = b.listeners.first()?;
                    Some((b.id, l.host.clone(), i32::from(l.port), b.rack.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The live brokers among `ids`, for the `node_endpoints` of Produce and Fetch answers that
/// name a partition's current leader (KIP-951), so the client can go there without a Metadata
/// round trip.
pub(crate) fn endpoints_of(
    ctx: &Ctx,
    ids: &std::collections::BTreeSet<i32>,
) -> Vec<(i32, String, i32, Option<String>)> {
    if ids.is_empty() {
        return Vec::new();
    }
    live_brokers(ctx)
        .into_iter()
        .filter(|b| ids.contains(&b.0))
        .collect()
}

fn topic_metadata(version: i16, t: &Topic) -> MetadataResponseTopic {
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
        .map(|p| partition_metadata(version, p))
        .collect();
    m
}

/// Metadata: this node as the only broker, leader of every partition; may auto-create topics.
/// `None` only when the runtime shut down before a topic creation could run.
pub(super) async fn metadata(
    ctx: &Ctx,
    version: i16,
    req: MetadataRequest,
) -> Option<MetadataResponse> {
    let mut resp = MetadataResponse::default();
    resp.brokers = live_brokers(ctx)
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id);
            b.host = s(host);
            b.port = port;
            if version >= 1 {
                b.rack = rack.map(s);
            }
            b
        })
        .collect();
    if version >= 2 {
        resp.cluster_id = Some(s(ctx.cluster.cluster_id()));
    }
    if version >= 1 {
        // As KRaft brokers do, name this broker as the controller: it forwards admin requests
        // to the active controller itself, so clients need not chase (or wait out the death
        // of) the quorum leader.
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
            .map(|t| topic_metadata(version, t))
            .collect(),
        Some(topics) => {
            let mut out = Vec::with_capacity(topics.len());
            for rt in topics {
                let name = rt.name.as_ref().map(|n| n.0.to_string());
                let found = match &name {
                    Some(n) => {
                        if validate_topic_name(n).is_err() {
                            out.push(topic_error(
                                version,
                                name.clone(),
                                rt.topic_id,
                                ResponseError::InvalidTopicException.code(),
                            ));
                            continue;
                        }
                        match ctx.rm.topic(n) {
                            Some(t) => Ok(Some(t)),
                            // Creating makes log directories and rewrites the catalogue: that
                            // waits for the disk, so not on a runtime worker.
                            None if allow_auto_create => {
                                let cluster = Arc::clone(&ctx.cluster);
                                let n = n.clone();
                                off_worker(move || cluster.auto_create(&n)).await?
                            }
                            None => Ok(None),
                        }
                    }
                    None => Ok(ctx.rm.topic_by_id(rt.topic_id)),
                };
                out.push(match found {
                    Ok(Some(t)) => topic_metadata(version, &t),
                    Ok(None) => {
                        let code = if name.is_none() {
                            ResponseError::UnknownTopicId.code()
                        } else {
                            ResponseError::UnknownTopicOrPartition.code()
                        };
                        topic_error(version, name.clone(), rt.topic_id, code)
                    }
                    Err(e) => topic_error(version, name.clone(), rt.topic_id, topic_code(&e)),
                });
            }
            out
        }
    };
    Some(resp)
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

/// Vltava's tagged fields on each broker of a DescribeCluster answer, for `vltava cluster
/// describe`: the broker epoch (i64) and its state (i8: 0 active, 1 fenced, 2 in controlled
/// shutdown), which Kafka's schema has no field for. Tags far above Kafka's own, which other
/// clients skip as unknown.
pub const DESCRIBE_CLUSTER_TAG_BROKER_EPOCH: i32 = 10_000;
/// See [`DESCRIBE_CLUSTER_TAG_BROKER_EPOCH`].
pub const DESCRIBE_CLUSTER_TAG_BROKER_STATE: i32 = 10_001;

/// DescribeCluster 0-2: the registered, unfenced brokers (v2 with `include_fenced_brokers`: the
/// fenced ones too, flagged), and this node as the controller id: clients send controller
/// requests to any broker, which carries them to the active controller (as KRaft brokers do).
pub(super) fn describe_cluster(
    ctx: &Ctx,
    version: i16,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    if version >= 1 && req.endpoint_type != 1 {
        // Controllers are reached through the brokers, not advertised to clients.
        resp.error_code = ResponseError::MismatchedEndpointType.code();
        resp.error_message = Some(s("only broker endpoints are served"));
        resp.endpoint_type = req.endpoint_type;
        return resp;
    }
    let include_fenced = version >= 2 && req.include_fenced_brokers;
    resp.cluster_id = s(ctx.cluster.cluster_id());
    resp.controller_id = BrokerId(ctx.meta.node_id);
    resp.brokers = ctx
        .cluster
        .with_image(|img| {
            img.brokers
                .values()
                .filter(|b| include_fenced || !b.fenced)
                .filter_map(|reg| {
                    let l = reg.listeners.first()?;
                    let mut b = DescribeClusterBroker::default();
                    b.broker_id = BrokerId(reg.id);
                    b.host = s(l.host.clone());
                    b.port = i32::from(l.port);
                    b.rack = reg.rack.clone().map(s);
                    if version >= 2 {
                        b.is_fenced = reg.fenced;
                    }
                    let state: i8 = if reg.fenced {
                        1
                    } else if reg.in_controlled_shutdown {
                        2
                    } else {
                        0
                    };
                    // DescribeCluster is flexible at every version, so the tags always fit.
                    b.unknown_tagged_fields.insert(
                        DESCRIBE_CLUSTER_TAG_BROKER_EPOCH,
                        bytes::Bytes::copy_from_slice(&reg.epoch.to_be_bytes()),
                    );
                    b.unknown_tagged_fields.insert(
                        DESCRIBE_CLUSTER_TAG_BROKER_STATE,
                        bytes::Bytes::copy_from_slice(&state.to_be_bytes()),
                    );
                    Some(b)
                })
                .collect()
        })
        .unwrap_or_default();
    resp
}

const KEY_TYPE_GROUP: i8 = 0;

/// Where a coordinator key is served: (error code, message, node id, host, port).
type CoordinatorAnswer = (i16, Option<StrBytes>, i32, StrBytes, i32);

/// A group's coordinator is the leader of its `__consumer_offsets` partition. Transactions
/// have no coordinator yet, so transaction keys get COORDINATOR_NOT_AVAILABLE.
fn coordinator(ctx: &Ctx, key_type: i8, key: &str) -> CoordinatorAnswer {
    let unavailable = |msg: &str| {
        (
            ResponseError::CoordinatorNotAvailable.code(),
            Some(s(msg)),
            -1,
            StrBytes::default(),
            -1,
        )
    };
    if key_type != KEY_TYPE_GROUP {
        return unavailable("only group coordinators exist on this broker");
    }
    // Created on first use when the start left it for later (see Cluster::ensure_offsets_topic).
    let topic = match ctx.rm.topic(OFFSETS_TOPIC) {
        Some(t) => t,
        None => match ctx.cluster.ensure_offsets_topic(false) {
            Ok(Some(t)) => t,
            Ok(None) => return unavailable("the offsets topic does not exist yet"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create {OFFSETS_TOPIC}");
                return unavailable("the offsets topic cannot be created now");
            }
        },
    };
    let index = partition_for(key, topic.partitions.len() as i32);
    let leader = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .map_or(-1, |p| p.leader);
    match live_brokers(ctx).into_iter().find(|b| b.0 == leader) {
        Some((id, host, port, _)) => (NONE, None, id, s(host), port),
        None => unavailable("the group's offsets partition has no leader"),
    }
}

/// FindCoordinator, v0-3 for one key and v4+ for several.
pub(super) fn find_coordinator(
    ctx: &Ctx,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        for key in req.coordinator_keys {
            let (code, msg, node_id, host, port) = coordinator(ctx, req.key_type, &key);
            let mut c = find_coordinator_response::Coordinator::default();
            c.key = key;
            c.error_code = code;
            c.error_message = msg;
            c.node_id = BrokerId(node_id);
            c.host = host;
            c.port = port;
            resp.coordinators.push(c);
        }
        return resp;
    }
    let key_type = if version >= 1 {
        req.key_type
    } else {
        KEY_TYPE_GROUP
    };
    let (code, msg, node_id, host, port) = coordinator(ctx, key_type, &req.key);
    resp.error_code = code;
    if version >= 1 {
        resp.error_message = msg;
    }
    resp.node_id = BrokerId(node_id);
    resp.host = host;
    resp.port = port;
    resp
}
