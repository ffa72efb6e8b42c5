//! Log offsets: ListOffsets (earliest, latest, by timestamp, max timestamp), DeleteRecords and
//! OffsetForLeaderEpoch.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use vltava_protocol::batch;
use vltava_storage::StorageError;

use super::Ctx;
use crate::errors::{partition_code, storage_code};

/// ListOffsets: resolves each partition's timestamp query to an offset.
pub(super) fn list_offsets(
    ctx: &Ctx,
    version: i16,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for lt in req.topics {
        let topic = ctx.rm.topic(&lt.name.0);
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = lt.name.clone();
        for lp in lt.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = lp.partition_index;
            let partition = match &topic {
                Some(t) => ctx
                    .rm
                    .partition_at_epoch(t, lp.partition_index, lp.current_leader_epoch)
                    .map_err(|e| partition_code(&e)),
                None => Err(ResponseError::UnknownTopicOrPartition.code()),
            };
            match partition {
                Err(code) => {
                    pr.error_code = code;
                    pr.timestamp = -1;
                    pr.offset = -1;
                }
                Ok(p) => {
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
                            pr.error_code = ResponseError::InvalidRequest.code();
                            (-1, -1)
                        }
                    };
                    pr.timestamp = ts;
                    pr.offset = off;
                    if version >= 4 && off >= 0 {
                        pr.leader_epoch = p.leader_epoch();
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

/// DeleteRecords: moves each partition's log start offset forward.
pub(super) fn delete_records(ctx: &Ctx, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let topic = ctx.rm.topic(&t.name.0);
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            let partition = match &topic {
                Some(t) => ctx
                    .rm
                    .partition(t, p.partition_index)
                    .map_err(|e| partition_code(&e)),
                None => Err(ResponseError::UnknownTopicOrPartition.code()),
            };
            match partition {
                Err(code) => pr.error_code = code,
                Ok(part) => {
                    let mut log = part.log();
                    let hw = crate::replica::high_watermark(&log) as i64;
                    let target = if p.offset == -1 { hw } else { p.offset };
                    if target < 0 || target > hw {
                        pr.error_code = ResponseError::OffsetOutOfRange.code();
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

/// OffsetForLeaderEpoch (KIP-101, KIP-279): for each partition, the largest epoch in the
/// leader's log not above the one asked for, and the offset where it ends (the log end for the
/// current epoch); -1/-1 when the log holds no epoch that old. Consumers use it to detect a
/// truncation after a leader change (KIP-320).
pub(super) fn offset_for_leader_epoch(
    ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let topic = ctx.rm.topic(&t.topic.0);
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for p in t.partitions {
            let mut pr = EpochEndOffset::default();
            pr.partition = p.partition;
            pr.leader_epoch = -1;
            pr.end_offset = -1;
            let partition = match &topic {
                Some(t) => ctx
                    .rm
                    .partition_at_epoch(t, p.partition, p.current_leader_epoch)
                    .map_err(|e| partition_code(&e)),
                None => Err(ResponseError::UnknownTopicOrPartition.code()),
            };
            match partition {
                Err(code) => pr.error_code = code,
                Ok(partition) => {
                    if let Some((epoch, end)) = partition.end_offset_for_epoch(p.leader_epoch) {
                        pr.leader_epoch = epoch;
                        pr.end_offset = end as i64;
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
