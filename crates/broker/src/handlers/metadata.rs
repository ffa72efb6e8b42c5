//! Cluster discovery: Metadata, DescribeCluster and FindCoordinator, all naming this node.

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
use crate::replica::{Partition, Topic, validate_topic_name};

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

/// Metadata: this node as the only broker, leader of every partition; may auto-create topics.
/// `None` only when the runtime shut down before a topic creation could run.
pub(super) async fn metadata(
    ctx: &Ctx,
    version: i16,
    req: MetadataRequest,
) -> Option<MetadataResponse> {
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
                                let rm = Arc::clone(&ctx.rm);
                                let n = n.clone();
                                off_worker(move || rm.auto_create(&n)).await?
                            }
                            None => Ok(None),
                        }
                    }
                    None => Ok(ctx.rm.topic_by_id(rt.topic_id)),
                };
                out.push(match found {
                    Ok(Some(t)) => topic_metadata(ctx, version, &t),
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

/// DescribeCluster: this node as the only broker and the controller.
pub(super) fn describe_cluster(
    ctx: &Ctx,
    version: i16,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    if version >= 1 && req.endpoint_type != 1 {
        // Only broker endpoints exist here: no controller listener is advertised.
        resp.error_code = ResponseError::MismatchedEndpointType.code();
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

const KEY_TYPE_GROUP: i8 = 0;

/// Every group is coordinated by this node (the only one). Transactions have no coordinator
/// yet, so transaction keys get COORDINATOR_NOT_AVAILABLE.
pub(super) fn find_coordinator(
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
                ResponseError::CoordinatorNotAvailable.code(),
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
