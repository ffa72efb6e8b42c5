//! OffsetForLeaderEpoch (API 23) for the consumer's position validation (KIP-320): for each
//! partition, the leader epoch the consumer knows (`current_leader_epoch`, fenced by the
//! broker like a Fetch) and the epoch of its position (`leader_epoch`); the leader answers the
//! end offset of the largest epoch it has at or below that one.

use std::collections::HashMap;

use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
    offset_for_leader_epoch_request,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::TopicPartition;

/// One partition to ask about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EpochQuery {
    pub tp: TopicPartition,
    pub current_leader_epoch: i32,
    pub leader_epoch: i32,
}

/// The leader's answer for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEnd {
    pub error_code: i16,
    /// The largest epoch at or below the one asked (-1: UNDEFINED).
    pub leader_epoch: i32,
    /// Where that epoch ends (-1: UNDEFINED).
    pub end_offset: i64,
}

/// The request for `queries` at `version` (2-4), as a consumer (replica id -1 from v3).
pub(crate) fn request(queries: &[EpochQuery], version: i16) -> OffsetForLeaderEpochRequest {
    let mut req = OffsetForLeaderEpochRequest::default();
    if version >= 3 {
        req.replica_id = (-1).into();
    }
    for q in queries {
        let idx = match req
            .topics
            .iter()
            .position(|t| t.topic.0.as_str() == q.tp.topic)
        {
            Some(i) => i,
            None => {
                let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
                t.topic = TopicName(StrBytes::from_string(q.tp.topic.clone()));
                req.topics.push(t);
                req.topics.len() - 1
            }
        };
        let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
        p.partition = q.tp.partition;
        p.current_leader_epoch = q.current_leader_epoch;
        p.leader_epoch = q.leader_epoch;
        req.topics[idx].partitions.push(p);
    }
    req
}

/// The answers by partition (partitions the response leaves out are missing).
pub(crate) fn answers(r: &OffsetForLeaderEpochResponse) -> HashMap<TopicPartition, EpochEnd> {
    let mut out = HashMap::new();
    for t in &r.topics {
        for p in &t.partitions {
            out.insert(
                TopicPartition::new(t.topic.0.to_string(), p.partition),
                EpochEnd {
                    error_code: p.error_code,
                    leader_epoch: p.leader_epoch,
                    end_offset: p.end_offset,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset, OffsetForLeaderTopicResult,
    };
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn requests_group_by_topic_and_encode_at_every_version() {
        let q = |t: &str, p, cur, e| EpochQuery {
            tp: TopicPartition::new(t, p),
            current_leader_epoch: cur,
            leader_epoch: e,
        };
        let queries = [q("a", 0, 5, 3), q("b", 1, 2, 2), q("a", 2, -1, 0)];
        for v in 2..=4 {
            let req = request(&queries, v);
            assert_eq!(req.topics.len(), 2);
            assert_eq!(req.topics[0].partitions.len(), 2);
            assert_eq!(req.topics[0].partitions[0].current_leader_epoch, 5);
            assert_eq!(req.topics[0].partitions[0].leader_epoch, 3);
            assert_eq!(req.replica_id.0, if v >= 3 { -1 } else { -2 });
            let mut buf = Vec::new();
            assert!(req.encode(&mut buf, v).is_ok(), "v{v}");
        }
    }

    #[test]
    fn answers_are_read_by_partition() {
        let mut r = OffsetForLeaderEpochResponse::default();
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = TopicName(StrBytes::from_static_str("a"));
        let mut p = EpochEndOffset::default();
        p.partition = 3;
        p.leader_epoch = 2;
        p.end_offset = 40;
        t.partitions.push(p);
        r.topics.push(t);
        let a = answers(&r);
        assert_eq!(
            a.get(&TopicPartition::new("a", 3)),
            Some(&EpochEnd {
                error_code: 0,
                leader_epoch: 2,
                end_offset: 40
            })
        );
    }
}
