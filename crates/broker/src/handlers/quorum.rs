//! The metadata quorum's APIs: DescribeQuorum, AddRaftVoter and RemoveRaftVoter (KIP-853),
//! carried to the active controller like every metadata change. Kafka serves the last two on
//! its controller listener only; serving them through any broker lets `vltava cluster
//! add-controller` work with the same `--bootstrap-server` as every other command.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AddRaftVoterRequest, AddRaftVoterResponse, BrokerId, DescribeQuorumRequest,
    DescribeQuorumResponse, RemoveRaftVoterRequest, RemoveRaftVoterResponse,
};
use vltava_controller::rpc::{ControllerRequest, ControllerResponse};

use super::{Ctx, s, tn};

/// The metadata log's topic, as DescribeQuorum names it.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum 0-2: the quorum as the active controller sees it (Kafka's brokers forward it
/// there too). Per-voter fetch and catch-up times are not tracked by the quorum's replication
/// and are reported as -1 ("unknown"), as Kafka does for a replica it has not heard from.
pub(super) async fn describe_quorum(
    ctx: &Ctx,
    version: i16,
    req: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    let mut resp = DescribeQuorumResponse::default();
    let names_metadata_partition = req.topics.len() == 1
        && req.topics[0].topic_name.0.as_str() == METADATA_TOPIC
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    let mut topic = TopicData::default();
    topic.topic_name = tn(METADATA_TOPIC);
    let fail = |mut partition: PartitionData, mut topic: TopicData, error: ResponseError, msg| {
        let mut resp = DescribeQuorumResponse::default();
        partition.error_code = error.code();
        partition.leader_id = BrokerId(-1);
        partition.leader_epoch = -1;
        partition.high_watermark = -1;
        if version >= 2 {
            partition.error_message = Some(s(msg));
        }
        topic.partitions.push(partition);
        resp.topics.push(topic);
        resp
    };
    if !names_metadata_partition {
        return fail(
            partition,
            topic,
            ResponseError::UnknownTopicOrPartition,
            format!("DescribeQuorum describes {METADATA_TOPIC}-0 only"),
        );
    }
    let quorum = match ctx.cluster.call(ControllerRequest::DescribeQuorum).await {
        Ok(ControllerResponse::Quorum(q)) => q,
        Ok(other) => {
            return fail(
                partition,
                topic,
                ResponseError::UnknownServerError,
                format!("unexpected controller answer {other:?}"),
            );
        }
        Err(e) => return fail(partition, topic, e.error, e.message),
    };
    let state = |r: &vltava_controller::rpc::ReplicaState| {
        let mut st = ReplicaState::default();
        st.replica_id = BrokerId(r.node_id);
        st.log_end_offset = r.log_end_offset;
        st.last_fetch_timestamp = -1;
        st.last_caught_up_timestamp = -1;
        st
    };
    partition.leader_id = BrokerId(quorum.leader_id);
    partition.leader_epoch = i32::try_from(quorum.leader_epoch).unwrap_or(i32::MAX);
    partition.high_watermark = quorum.high_watermark;
    partition.current_voters = quorum.voters.iter().map(state).collect();
    partition.observers = quorum.observers.iter().map(state).collect();
    if version >= 2 {
        resp.nodes = quorum
            .voters
            .iter()
            .filter_map(|v| {
                let (host, port) = v.addr.rsplit_once(':')?;
                let mut l = Listener::default();
                l.name = s("CONTROLLER");
                l.host = s(host);
                l.port = port.parse().ok()?;
                let mut n = Node::default();
                n.node_id = BrokerId(v.node_id);
                n.listeners.push(l);
                Some(n)
            })
            .collect();
    }
    topic.partitions.push(partition);
    resp.topics.push(topic);
    resp
}

/// How long a voter change may take when the request gives no timeout: the new voter is caught
/// up as a learner first, which takes as long as copying the metadata log to it.
const VOTER_CHANGE_TIMEOUT_DEFAULT_MS: i32 = 30_000;
/// The longest wait a request may ask for.
const VOTER_CHANGE_TIMEOUT_MAX_MS: i32 = 120_000;

/// An error a voter change answers before reaching the controller: the request names another
/// cluster (INCONSISTENT_CLUSTER_ID, as Kafka answers).
fn check_cluster_id(ctx: &Ctx, cluster_id: Option<&str>) -> Option<(ResponseError, String)> {
    let ours = ctx.cluster.cluster_id();
    // Null or empty: the sender does not say (it may not know yet).
    cluster_id
        .filter(|id| !id.is_empty() && *id != ours)
        .map(|id| {
            (
                ResponseError::InconsistentClusterId,
                format!("this is cluster {ours}, not {id}"),
            )
        })
}

/// Carries a voter change to the active controller; the error code and message to answer.
async fn change_voters(ctx: &Ctx, request: ControllerRequest, timeout_ms: i32) -> (i16, String) {
    let timeout_ms = if timeout_ms <= 0 {
        VOTER_CHANGE_TIMEOUT_DEFAULT_MS
    } else {
        timeout_ms.min(VOTER_CHANGE_TIMEOUT_MAX_MS)
    };
    match ctx
        .cluster
        .call_within(request, Duration::from_millis(timeout_ms as u64))
        .await
    {
        Ok(ControllerResponse::Done) => (0, String::new()),
        Ok(other) => (
            ResponseError::UnknownServerError.code(),
            format!("unexpected controller answer {other:?}"),
        ),
        Err(e) => (e.error.code(), e.message),
    }
}

/// AddRaftVoter 0: makes `voter_id`, reachable at its first listener, a voter of the metadata
/// quorum (after catching it up as an observer).
pub(super) async fn add_raft_voter(ctx: &Ctx, req: AddRaftVoterRequest) -> AddRaftVoterResponse {
    let mut resp = AddRaftVoterResponse::default();
    let (code, message) = if let Some((e, m)) = check_cluster_id(ctx, req.cluster_id.as_deref()) {
        (e.code(), m)
    } else if req.voter_id < 0 {
        (
            ResponseError::InvalidRequest.code(),
            format!("voter id {} is negative", req.voter_id),
        )
    } else if let Some(l) = req.listeners.first() {
        let addr = format!("{}:{}", l.host, l.port);
        let request = ControllerRequest::AddVoter {
            node_id: req.voter_id,
            addr,
        };
        change_voters(ctx, request, req.timeout_ms).await
    } else {
        (
            ResponseError::InvalidRequest.code(),
            "the new voter's controller listener is missing".to_string(),
        )
    };
    resp.error_code = code;
    if code != 0 {
        resp.error_message = Some(s(message));
    }
    resp
}

/// RemoveRaftVoter 0: removes `voter_id` from the voters; it keeps following the metadata log
/// as an observer (a combined node stays a broker).
pub(super) async fn remove_raft_voter(
    ctx: &Ctx,
    req: RemoveRaftVoterRequest,
) -> RemoveRaftVoterResponse {
    let mut resp = RemoveRaftVoterResponse::default();
    let (code, message) = match check_cluster_id(ctx, req.cluster_id.as_deref()) {
        Some((e, m)) => (e.code(), m),
        None => {
            let request = ControllerRequest::RemoveVoter {
                node_id: req.voter_id,
            };
            change_voters(ctx, request, VOTER_CHANGE_TIMEOUT_DEFAULT_MS).await
        }
    };
    resp.error_code = code;
    if code != 0 {
        resp.error_message = Some(s(message));
    }
    resp
}
