//! Fetch: reads record sets for consumers (up to the high watermark) and for followers (up to
//! the log end, with their position fed to the leader's replication state and a diverging
//! epoch where their log parted from ours), parking the request until `min_bytes` arrive or its
//! wait runs out.
//!
//! With `replica.selector.class` set (KIP-392), a leader answers a consumer's Fetch v11+ that
//! carries a `rack_id` with the replica to read from instead ([`crate::replica::selector`]):
//! no records, `preferred_read_replica` set. Followers then serve consumer fetches (v11+) up
//! to their own high watermark, which they take from the leader's fetch answers: an offset
//! between it and their log end is an empty answer, one beyond their log end (or below their
//! log start) OFFSET_OUT_OF_RANGE, after the KIP-320 epoch check (FENCED_LEADER_EPOCH /
//! UNKNOWN_LEADER_EPOCH against the leader epoch this node knows). Followers never name a
//! preferred read replica themselves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use tokio::sync::Notify;
use vltava_storage::FileRegion;

use super::Ctx;
use crate::errors::{partition_code, storage_code};
use crate::replica::selector::{
    FollowerProgress, PartitionView, ReplicaSelector, preferred_read_replica,
};
use crate::replica::{Partition, PartitionLookupError, ReplicaManager, Topic, now_ms};

/// How a consumer's fetch may be served (KIP-392): from followers too, and whether the leader
/// picks a replica in the client's rack.
#[derive(Debug, Default)]
struct ReadReplicas {
    /// `replica.selector.class`.
    selector: ReplicaSelector,
    /// This consumer fetch may be served by a follower (a selector is configured, v11+).
    from_followers: bool,
    /// The consumer's `client.rack`, when the leader has to choose for it.
    client_rack: Option<String>,
    /// The live brokers and their racks (only looked up when there is a rack to match).
    alive: BTreeMap<i32, Option<String>>,
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

/// Fetch: answers at once when data (or an error) is there, else waits for an append.
pub(super) async fn fetch(ctx: &Ctx, version: i16, req: FetchRequest) -> FetchReply {
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 300_000) as u64);
    let max_bytes = if version >= 3 {
        req.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    // A follower names itself: by replica id before v15, by its replica state since (with its
    // broker epoch, KIP-903).
    let replica = if version >= 15 {
        (req.replica_state.replica_id.0 >= 0).then_some((
            req.replica_state.replica_id.0,
            req.replica_state.replica_epoch,
        ))
    } else {
        (req.replica_id.0 >= 0).then_some((req.replica_id.0, -1))
    };
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
    let reads = read_replicas(ctx, version, &req, replica.is_some());
    let notify = Arc::new(Notify::new());
    let reply = loop {
        // Register before reading so an append between the read and the wait still wakes us.
        let waiting = Instant::now() < deadline && min_bytes > 0;
        if waiting {
            for (t, ft) in &resolved {
                if let Some(t) = t {
                    for fp in &ft.partitions {
                        if replica.is_some() {
                            if let Ok(p) = ctx.rm.partition(t, fp.partition) {
                                p.add_replica_waiter(&notify);
                            }
                        } else if let Some(p) = hosted(t, fp.partition) {
                            // A leader's or (KIP-392) a follower's high watermark.
                            p.add_waiter(&notify);
                        }
                    }
                }
            }
        }
        let (resp, bytes, answer_now) =
            fetch_once(&ctx.rm, version, &resolved, max_bytes, replica, &reads);
        if !waiting || bytes >= min_bytes || answer_now {
            break resp;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(remaining, notify.notified())
            .await
            .is_err()
        {
            let (resp, _, _) = fetch_once(&ctx.rm, version, &resolved, max_bytes, replica, &reads);
            break resp;
        }
    };
    count_bytes_out(ctx, &resolved, &reply, replica.is_some());
    with_leader_endpoints(ctx, version, reply)
}

/// Adds the record bytes of the answer to each topic's counter: once per topic of the
/// response, from the regions' lengths (nothing is read to count it).
fn count_bytes_out(
    ctx: &Ctx,
    resolved: &[(Option<Arc<Topic>>, &FetchTopic)],
    reply: &FetchReply,
    follower: bool,
) {
    let mut regions = reply.regions.iter();
    for (tr, (topic, _)) in reply.response.responses.iter().zip(resolved) {
        let bytes: usize = regions
            .by_ref()
            .take(tr.partitions.len())
            .flatten()
            .flat_map(|rs| rs.iter().map(FileRegion::len))
            .sum();
        if let Some(topic) = topic {
            ctx.metrics.fetched(topic, bytes as u64, follower);
        }
    }
}

/// What KIP-392 allows for this request: followers serve consumer fetches from v11 (the
/// version that added `rack_id` and `preferred_read_replica`) when a selector is configured.
fn read_replicas(ctx: &Ctx, version: i16, req: &FetchRequest, from_replica: bool) -> ReadReplicas {
    let selector = ctx.rm.config().replica_selector();
    if from_replica || version < 11 || !selector.is_configured() {
        return ReadReplicas::default();
    }
    let client_rack = Some(req.rack_id.to_string()).filter(|r| !r.is_empty());
    let alive = if client_rack.is_some() {
        super::metadata::live_brokers(ctx)
            .into_iter()
            .map(|(id, _, _, rack)| (id, rack))
            .collect()
    } else {
        BTreeMap::new()
    };
    ReadReplicas {
        selector,
        from_followers: true,
        client_rack,
        alive,
    }
}

/// This node's replica of partition `index`, if it hosts one.
fn hosted(topic: &Topic, index: i32) -> Option<&Arc<Partition>> {
    usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .and_then(|p| p.local.as_ref())
}

/// The partition as a consumer may read it here: as leader (`true`), or with KIP-392 as a
/// follower (`false`), after the KIP-320 check of the epoch the consumer names against the
/// leader epoch this node knows (Kafka's `Partition.getLocalLog` without `requireLeader`).
fn consumer_partition(
    rm: &ReplicaManager,
    topic: &Topic,
    index: i32,
    current_leader_epoch: i32,
    from_followers: bool,
) -> Result<(Arc<Partition>, bool), PartitionLookupError> {
    let state = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(PartitionLookupError::Unknown)?;
    match &state.local {
        Some(local) if from_followers && state.leader != rm.node_id() => {
            if current_leader_epoch >= 0 {
                if current_leader_epoch < state.leader_epoch {
                    return Err(PartitionLookupError::FencedLeaderEpoch);
                }
                if current_leader_epoch > state.leader_epoch {
                    return Err(PartitionLookupError::UnknownLeaderEpoch);
                }
            }
            Ok((Arc::clone(local), false))
        }
        _ => rm
            .partition_at_epoch(topic, index, current_leader_epoch)
            .map(|p| (p, true)),
    }
}

/// The leader's choice of read replica for a consumer fetch at `fetch_offset`, when it is not
/// the leader itself.
fn choose_read_replica(
    partition: &Partition,
    leader: i32,
    reads: &ReadReplicas,
    fetch_offset: i64,
) -> Option<i32> {
    let rack = reads.client_rack.as_deref()?;
    let now = now_ms();
    partition
        .with_leader_state(|state| {
            let progress: BTreeMap<i32, FollowerProgress> = state
                .replicas()
                .iter()
                .filter_map(|&id| {
                    let (log_end_offset, last_caught_up_ms) = state.follower_progress(id)?;
                    Some((
                        id,
                        FollowerProgress {
                            log_end_offset,
                            last_caught_up_ms,
                        },
                    ))
                })
                .collect();
            let view = PartitionView {
                leader,
                replicas: state.replicas(),
                isr: state.isr(),
                progress: &progress,
            };
            preferred_read_replica(
                reads.selector,
                &view,
                &reads.alive,
                Some(rack),
                fetch_offset,
                now,
            )
        })
        .flatten()
}

/// Fetch v16+: the endpoints of the current leaders named in partition errors (KIP-951).
fn with_leader_endpoints(ctx: &Ctx, version: i16, mut reply: FetchReply) -> FetchReply {
    if version < 16 {
        return reply;
    }
    let leaders: std::collections::BTreeSet<i32> = reply
        .response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.current_leader.leader_id.0)
        .filter(|id| *id >= 0)
        .collect();
    reply.response.node_endpoints = super::metadata::endpoints_of(ctx, &leaders)
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut e = NodeEndpoint::default();
            e.node_id = BrokerId(id);
            e.host = super::s(host);
            e.port = port;
            e.rack = rack.map(super::s);
            e
        })
        .collect();
    reply
}

/// The partition a fetch reads: a follower's fetch only from the leader, a consumer's from
/// the leader or (KIP-392) a follower; `true` when this node leads it.
fn consumer_or_replica_partition(
    rm: &ReplicaManager,
    topic: &Topic,
    fp: &kafka_protocol::messages::fetch_request::FetchPartition,
    replica: Option<(i32, i64)>,
    reads: &ReadReplicas,
) -> Result<(Arc<Partition>, bool), PartitionLookupError> {
    if replica.is_some() {
        return rm
            .partition_at_epoch(topic, fp.partition, fp.current_leader_epoch)
            .map(|p| (p, true));
    }
    consumer_partition(
        rm,
        topic,
        fp.partition,
        fp.current_leader_epoch,
        reads.from_followers,
    )
}

/// True if broker `replica_id` holds a replica of the partition (a follower may fetch it).
fn is_replica_of(topic: &Topic, index: i32, replica_id: i32) -> bool {
    usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .is_some_and(|p| p.replicas.contains(&replica_id))
}

/// One pass over the partitions: the reply, the bytes found, and whether to answer at once
/// (an error, a diverging epoch or a preferred read replica in some partition).
fn fetch_once(
    rm: &ReplicaManager,
    version: i16,
    resolved: &[(Option<Arc<Topic>>, &FetchTopic)],
    max_bytes: usize,
    replica: Option<(i32, i64)>,
    reads: &ReadReplicas,
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
            let partition = match topic {
                Some(t) if replica.is_some_and(|(id, _)| !is_replica_of(t, fp.partition, id)) => {
                    Err(ResponseError::NotLeaderOrFollower.code())
                }
                Some(t) => consumer_or_replica_partition(rm, t, fp, replica, reads).map_err(|e| {
                    // KIP-951: where the partition is led now, so the client can move on.
                    if let PartitionLookupError::NotLeader {
                        leader,
                        leader_epoch,
                    } = e
                        && version >= 12
                    {
                        pd.current_leader.leader_id = BrokerId(leader);
                        pd.current_leader.leader_epoch = leader_epoch;
                    }
                    partition_code(&e)
                }),
                None if version >= 13 => Err(ResponseError::UnknownTopicId.code()),
                None => Err(ResponseError::UnknownTopicOrPartition.code()),
            };
            let (partition, leading) = match partition {
                Ok(p) => p,
                Err(code) => {
                    pd.error_code = code;
                    has_error = true;
                    tr.partitions.push(pd);
                    regions.push(None);
                    continue;
                }
            };
            if let Some((replica_id, _)) = replica
                && version >= 12
                && fp.last_fetched_epoch >= 0
            {
                // KIP-320: the follower's last batch is in epoch `last_fetched_epoch`; if our
                // log holds that epoch only up to below its fetch offset (or not at all), its
                // log diverges from ours there.
                // No answer (an epoch above our latest, which a follower of the current
                // leader cannot hold) is Kafka's UNDEFINED, which the wire cannot tell from
                // "no divergence": serve from the fetch offset, as Kafka does.
                let ours = partition.end_offset_for_epoch(fp.last_fetched_epoch);
                let diverging = ours.filter(|&(epoch, end)| {
                    epoch < fp.last_fetched_epoch || (end as i64) < fp.fetch_offset
                });
                if let Some((epoch, end)) = diverging {
                    let end = end as i64;
                    pd.diverging_epoch.epoch = epoch;
                    pd.diverging_epoch.end_offset = end;
                    let wm = partition.watermarks();
                    pd.high_watermark = wm.high_watermark;
                    pd.last_stable_offset = wm.high_watermark;
                    pd.log_start_offset = wm.log_start_offset;
                    pd.records = Some(Bytes::new());
                    tracing::debug!(topic = %partition.topic, partition = partition.index, replica_id, epoch, end, "follower's log diverges");
                    has_error = true;
                    tr.partitions.push(pd);
                    regions.push(None);
                    continue;
                }
            }
            if leading
                && replica.is_none()
                && let Some(preferred) =
                    choose_read_replica(&partition, rm.node_id(), reads, fp.fetch_offset)
            {
                // KIP-392: no records, the replica to read from instead (Kafka skips the read).
                let wm = partition.watermarks();
                pd.high_watermark = wm.high_watermark;
                pd.last_stable_offset = wm.high_watermark;
                pd.log_start_offset = wm.log_start_offset;
                pd.preferred_read_replica = BrokerId(preferred);
                pd.records = Some(Bytes::new());
                tracing::debug!(topic = %partition.topic, partition = partition.index, fetch_offset = fp.fetch_offset, preferred_read_replica = preferred, client_rack = reads.client_rack.as_deref().unwrap_or(""), "preferred read replica");
                has_error = true;
                tr.partitions.push(pd);
                regions.push(None);
                continue;
            }
            let mut found = None;
            let budget =
                (fp.partition_max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
            let read = match replica {
                Some(_) => partition.read_regions_for_replica(fp.fetch_offset, budget, total == 0),
                None => partition.read_regions(fp.fetch_offset, budget, total == 0),
            };
            match read {
                Ok((slice, mut wm)) => {
                    if let Some((replica_id, replica_epoch)) = replica {
                        // The fetch offset is valid: it is the follower's log end.
                        if let Some(proposal) = partition.on_follower_fetch(
                            replica_id,
                            replica_epoch,
                            fp.fetch_offset as u64,
                        ) {
                            rm.propose_isr_change(&partition, proposal);
                        }
                        wm = partition.watermarks();
                    }
                    pd.high_watermark = wm.high_watermark;
                    pd.last_stable_offset = wm.high_watermark;
                    if version >= 5 {
                        pd.log_start_offset = wm.log_start_offset;
                    }
                    total += slice.len();
                    if replica.is_none() && !slice.is_empty() {
                        tracing::debug!(topic = %partition.topic, partition = partition.index, fetch_offset = fp.fetch_offset, next_offset = slice.next_offset, bytes = slice.len(), as_follower = !leading, "consumer fetch served");
                    }
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
