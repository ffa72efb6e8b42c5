//! Produce: validates and appends each partition's batches, then waits for durability and
//! acknowledgements before answering.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use vltava_protocol::batch;
use vltava_storage::StorageError;

use super::{Ctx, s};
use crate::errors::{NONE, partition_code, storage_code};
use crate::replica::{
    AckWait, AppendError, Partition, PartitionLookupError, Topic, validate_topic_name,
};

/// Result of appending one partition's records.
struct PartitionAppend {
    index: i32,
    error_code: i16,
    error_message: Option<String>,
    base_offset: i64,
    log_start_offset: i64,
    /// NOT_LEADER_OR_FOLLOWER: the partition's current leader and epoch (KIP-951).
    current_leader: Option<(i32, i32)>,
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
        current_leader: None,
    };
    let Some(topic) = topic else {
        return AppendStep::Done(fail(ResponseError::UnknownTopicOrPartition.code(), None));
    };
    let partition = match ctx.rm.partition(topic, index) {
        Ok(p) => p,
        Err(e) => {
            let mut failed = fail(partition_code(&e), None);
            if let PartitionLookupError::NotLeader {
                leader,
                leader_epoch,
            } = e
            {
                failed.current_leader = Some((leader, leader_epoch));
            }
            return AppendStep::Done(failed);
        }
    };
    if acks == -1 && partition.is_under_min_isr() {
        let min_isr = ctx.rm.config().min_insync_replicas(&topic.configs);
        return AppendStep::Done(fail(
            ResponseError::NotEnoughReplicas.code(),
            Some(format!(
                "in-sync replicas {} < min.insync.replicas {min_isr}",
                partition.isr().len()
            )),
        ));
    }
    let records = records.unwrap_or_default();
    let batches = match batch::split_produced(records) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => {
            return AppendStep::Done(fail(
                ResponseError::InvalidRecord.code(),
                Some("no record batches".into()),
            ));
        }
        Err(e) => {
            let code = match e {
                batch::BatchError::CorruptCrc { .. } => ResponseError::CorruptMessage.code(),
                _ => ResponseError::InvalidRecord.code(),
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
                        ResponseError::InvalidRecord.code(),
                        Some("compacted topic cannot accept a record without a key".into()),
                    ));
                }
                Err(e) => {
                    return AppendStep::Done(fail(
                        ResponseError::InvalidRecord.code(),
                        Some(e.to_string()),
                    ));
                }
            }
        }
    }
    match partition.append_start(&batches) {
        Ok(pending) => {
            // Once per partition of the request: the batch headers carry the record counts.
            let bytes: usize = batches.iter().map(|(_, b)| b.len()).sum();
            let records: i64 = batches
                .iter()
                .map(|(h, _)| i64::from(h.record_count.max(0)))
                .sum();
            ctx.metrics.produced(topic, bytes as u64, records as u64);
            AppendStep::Pending {
                index,
                topic: Arc::clone(topic),
                pending,
            }
        }
        Err(AppendError::NotLeader) => AppendStep::Done(fail(
            ResponseError::NotLeaderOrFollower.code(),
            Some("leadership moved".into()),
        )),
        Err(AppendError::Storage(e)) => AppendStep::Done(append_failed(&topic.name, index, e)),
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
        current_leader: None,
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
    /// The outcome, and the partition, leader epoch and last offset acks=all waits for.
    async fn finish(self) -> (PartitionAppend, Option<(Arc<Partition>, i32, i64)>) {
        match self {
            AppendStep::Done(r) => (r, None),
            AppendStep::Pending {
                index,
                topic,
                pending,
            } => {
                let partition = pending.partition();
                let epoch = pending.leader_epoch();
                match pending.finish().await {
                    Ok(info) => (
                        PartitionAppend {
                            index,
                            error_code: NONE,
                            error_message: None,
                            base_offset: info.first_offset as i64,
                            log_start_offset: info.log_start_offset as i64,
                            current_leader: None,
                        },
                        Some((partition, epoch, info.last_offset as i64)),
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
pub(super) fn produce(
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
                current_leader: None,
            })
        };
        let mut steps = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            steps.push(if !topic_valid {
                refused(pd.index, ResponseError::InvalidTopicException.code(), None)
            } else if !matches!(acks, -1..=1) {
                refused(pd.index, ResponseError::InvalidRequiredAcks.code(), None)
            } else if transactional {
                refused(
                    pd.index,
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    Some("transactions are not supported yet".into()),
                )
            } else {
                append_partition(ctx, topic.as_ref(), pd.index, pd.records, acks)
            });
        }
        topics.push((td.name, steps));
    }
    let leaders: std::collections::BTreeSet<i32> = topics
        .iter()
        .flat_map(|(_, steps)| steps)
        .filter_map(|step| match step {
            AppendStep::Done(p) => p.current_leader.map(|(id, _)| id),
            _ => None,
        })
        .filter(|id| *id >= 0)
        .collect();
    let endpoints = if version >= 10 {
        super::metadata::endpoints_of(ctx, &leaders)
    } else {
        Vec::new()
    };
    async move {
        let mut resp = ProduceResponse::default();
        let mut pending = Vec::new();
        for (name, steps) in topics {
            let mut tr = TopicProduceResponse::default();
            tr.name = name;
            for step in steps {
                let (res, wait) = step.finish().await;
                if let Some((p, epoch, last)) = wait {
                    pending.push((
                        resp.responses.len(),
                        tr.partition_responses.len(),
                        p,
                        epoch,
                        last,
                    ));
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
                if version >= 10
                    && let Some((leader, epoch)) = res.current_leader
                {
                    pr.current_leader.leader_id = BrokerId(leader);
                    pr.current_leader.leader_epoch = epoch;
                }
                tr.partition_responses.push(pr);
            }
            resp.responses.push(tr);
        }
        resp.node_endpoints = endpoints
            .into_iter()
            .map(|(id, host, port, rack)| {
                let mut e = NodeEndpoint::default();
                e.node_id = BrokerId(id);
                e.host = s(host);
                e.port = port;
                e.rack = rack.map(s);
                e
            })
            .collect();
        if acks == 0 {
            return None;
        }
        if acks == -1 {
            // One deadline for the whole request, as Kafka's produce purgatory has.
            let deadline = tokio::time::Instant::now() + timeout;
            for (ti, pi, p, epoch, last) in pending {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let (code, msg) = match p.wait_for_high_watermark(epoch, last, left).await {
                    AckWait::Replicated => continue,
                    AckWait::NotLeader => (
                        ResponseError::NotLeaderOrFollower.code(),
                        "leadership moved before the in-sync replicas had the records",
                    ),
                    AckWait::TimedOut {
                        under_min_isr: true,
                    } => (
                        ResponseError::NotEnoughReplicasAfterAppend.code(),
                        "written on the leader, but the in-sync replicas fell below min.insync.replicas",
                    ),
                    AckWait::TimedOut {
                        under_min_isr: false,
                    } => (
                        ResponseError::RequestTimedOut.code(),
                        "the in-sync replicas did not acknowledge within the request timeout",
                    ),
                };
                if let Some(pr) = resp
                    .responses
                    .get_mut(ti)
                    .and_then(|t| t.partition_responses.get_mut(pi))
                {
                    pr.error_code = code;
                    pr.base_offset = -1;
                    if version >= 8 {
                        pr.error_message = Some(s(msg));
                    }
                }
            }
        }
        Some(resp)
    }
}
