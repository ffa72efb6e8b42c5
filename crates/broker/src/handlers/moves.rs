//! The operator's leadership and replica moves: ElectLeaders (API 43),
//! AlterPartitionReassignments (45) and ListPartitionReassignments (46). The first two are
//! decided by the active controller; the list is read from the metadata applied here.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
};
use vltava_controller::controller::{ControllerError, ElectionType, ReassignPartition};

use super::{Ctx, s, tn};

fn error_fields(result: &Result<(), ControllerError>) -> (i16, Option<String>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => (e.code(), Some(e.message.clone())),
    }
}

/// ElectLeaders. A request that fails as a whole (no controller) answers every partition it
/// named with that error; with v1+ the top-level code carries it too.
pub(super) fn elect_leaders(
    ctx: &Ctx,
    version: i16,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    let election = if version >= 1 {
        match ElectionType::from_code(req.election_type) {
            Some(e) => e,
            None => {
                resp.error_code = ResponseError::InvalidRequest.code();
                return resp;
            }
        }
    } else {
        ElectionType::Preferred
    };
    let partitions: Option<Vec<(String, Vec<i32>)>> = req.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let results = match ctx.cluster.elect_leaders(election, partitions.clone()) {
        Ok(r) => r,
        Err(e) => {
            if version >= 1 {
                resp.error_code = e.code();
            }
            partitions
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, Err(e.clone()))).collect()))
                .collect()
        }
    };
    for (topic, partitions) in results {
        let mut r = ReplicaElectionResult::default();
        r.topic = tn(&topic);
        for (index, result) in partitions {
            let (code, message) = error_fields(&result);
            let mut p = PartitionResult::default();
            p.partition_id = index;
            p.error_code = code;
            p.error_message = message.map(s);
            r.partition_result.push(p);
        }
        resp.replica_election_results.push(r);
    }
    resp
}

/// AlterPartitionReassignments. With `allow_replication_factor_change` false (KIP-860, v1),
/// a target of another size than the partition's replica set is refused here.
pub(super) fn alter_partition_reassignments(
    ctx: &Ctx,
    version: i16,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut resp = AlterPartitionReassignmentsResponse::default();
    if version >= 1 {
        resp.allow_replication_factor_change = req.allow_replication_factor_change;
    }
    let check_rf = version >= 1 && !req.allow_replication_factor_change;
    let mut refused: Vec<(String, i32, ControllerError)> = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let replicas: Option<Vec<i32>> =
                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            if check_rf && let Some(target) = &replicas {
                let current = ctx.cluster.with_image(|img| {
                    img.topic_by_name(&name)
                        .and_then(|t| t.partitions.get(&p.partition_index))
                        .map(|p| p.target_replicas().len())
                });
                if let Some(Some(current)) = current
                    && current != target.len()
                {
                    refused.push((
                        name.clone(),
                        p.partition_index,
                        ControllerError::new(
                            ResponseError::InvalidReplicationFactor,
                            format!(
                                "the target has {} replicas, the partition {current}, and the request does not allow a replication factor change",
                                target.len()
                            ),
                        ),
                    ));
                    continue;
                }
            }
            partitions.push(ReassignPartition {
                partition: p.partition_index,
                replicas,
            });
        }
        topics.push((name, partitions));
    }
    let results = match ctx.cluster.alter_partition_reassignments(topics.clone()) {
        Ok(r) => r,
        Err(e) => {
            resp.error_code = e.code();
            resp.error_message = Some(s(e.message.clone()));
            topics
                .into_iter()
                .map(|(t, ps)| {
                    (
                        t,
                        ps.into_iter()
                            .map(|p| (p.partition, Err(e.clone())))
                            .collect(),
                    )
                })
                .collect()
        }
    };
    let mut by_topic: Vec<ReassignableTopicResponse> = Vec::new();
    let mut push = |topic: &str, index: i32, result: &Result<(), ControllerError>| {
        let (code, message) = error_fields(result);
        let mut p = ReassignablePartitionResponse::default();
        p.partition_index = index;
        p.error_code = code;
        p.error_message = message.map(s);
        match by_topic.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = ReassignableTopicResponse::default();
                t.name = tn(topic);
                t.partitions.push(p);
                by_topic.push(t);
            }
        }
    };
    for (topic, partitions) in &results {
        for (index, result) in partitions {
            push(topic, *index, result);
        }
    }
    for (topic, index, e) in refused {
        push(&topic, index, &Err(e));
    }
    resp.responses = by_topic;
    resp
}

/// ListPartitionReassignments: the reassignments in progress among the named partitions (all
/// when the list is null).
pub(super) fn list_partition_reassignments(
    ctx: &Ctx,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let filter: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut resp = ListPartitionReassignmentsResponse::default();
    for (topic, list) in ctx.cluster.list_partition_reassignments(filter.as_deref()) {
        let mut t = OngoingTopicReassignment::default();
        t.name = tn(&topic);
        for r in list {
            let mut p = OngoingPartitionReassignment::default();
            p.partition_index = r.partition;
            p.replicas = ids(&r.replicas);
            p.adding_replicas = ids(&r.adding_replicas);
            p.removing_replicas = ids(&r.removing_replicas);
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    resp
}
