//! Admin operations that move leadership and replicas: ElectLeaders (preferred or unclean),
//! AlterPartitionReassignments and ListPartitionReassignments, as `vltava cluster
//! elect-leaders` and `vltava topic reassign` use them.

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ApiKey, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest,
};

use crate::admin::{Admin, topic_name};
use crate::error::{ClientError, Result};

/// Versions this client speaks of the APIs in this module.
pub const MOVES_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

/// Which leader an election picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// The preferred (first) replica, if it is in sync.
    Preferred,
    /// Any live replica of a partition without a leader, in sync or not (may lose data).
    Unclean,
}

/// One partition's outcome: `(topic, partition, result)`.
pub type PartitionOutcome = (String, i32, Result<()>);

/// A reassignment in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The replica set now (target first, then the replicas leaving).
    pub replicas: Vec<i32>,
    /// Replicas being added.
    pub adding: Vec<i32>,
    /// Replicas being removed.
    pub removing: Vec<i32>,
}

fn outcome(
    topic: String,
    partition: i32,
    code: i16,
    message: Option<String>,
    what: &str,
) -> PartitionOutcome {
    let result = if code == 0 {
        Ok(())
    } else {
        Err(ClientError::broker(
            code,
            format!("{what} of {topic}-{partition}"),
            message.as_deref(),
        ))
    };
    (topic, partition, result)
}

impl Admin {
    /// Elects leaders of `partitions` (every partition when `None`; then only partitions that
    /// needed an election are answered). Needs ElectLeaders v1+ for an unclean election.
    pub async fn elect_leaders(
        &mut self,
        election: Election,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<PartitionOutcome>> {
        let timeout_ms = self.timeout_ms();
        let addr = self.cluster.any_connection().await?;
        let r = self
            .call_negotiated(MOVES_VERSIONS, &addr, |version| {
                let mut req = ElectLeadersRequest::default();
                if version >= 1 {
                    req.election_type = match election {
                        Election::Preferred => 0,
                        Election::Unclean => 1,
                    };
                }
                req.timeout_ms = timeout_ms;
                req.topic_partitions = partitions.map(|ps| {
                    ps.iter()
                        .map(|(t, indexes)| {
                            let mut tp = TopicPartitions::default();
                            tp.topic = topic_name(t);
                            tp.partitions = indexes.clone();
                            tp
                        })
                        .collect()
                });
                req
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(r.error_code, "elect leaders", None));
        }
        let mut out = Vec::new();
        for t in r.replica_election_results {
            for p in t.partition_result {
                out.push(outcome(
                    t.topic.0.to_string(),
                    p.partition_id,
                    p.error_code,
                    p.error_message.map(|m| m.to_string()),
                    "leader election",
                ));
            }
        }
        Ok(out)
    }

    /// Starts (target replicas) or cancels (`None`) reassignments of partitions, as
    /// `(topic, partition, target)`.
    pub async fn alter_partition_reassignments(
        &mut self,
        moves: &[(String, i32, Option<Vec<i32>>)],
    ) -> Result<Vec<PartitionOutcome>> {
        let timeout_ms = self.timeout_ms();
        let addr = self.cluster.any_connection().await?;
        let r = self
            .call_negotiated(MOVES_VERSIONS, &addr, |_| {
                let mut req = AlterPartitionReassignmentsRequest::default();
                req.timeout_ms = timeout_ms;
                for (topic, partition, target) in moves {
                    let mut p = ReassignablePartition::default();
                    p.partition_index = *partition;
                    p.replicas = target
                        .as_ref()
                        .map(|t| t.iter().copied().map(BrokerId).collect());
                    match req.topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                        Some(t) => t.partitions.push(p),
                        None => {
                            let mut t = ReassignableTopic::default();
                            t.name = topic_name(topic);
                            t.partitions.push(p);
                            req.topics.push(t);
                        }
                    }
                }
                req
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                r.error_code,
                "reassign partitions",
                r.error_message.as_deref(),
            ));
        }
        let mut out = Vec::new();
        for t in r.responses {
            for p in t.partitions {
                out.push(outcome(
                    t.name.0.to_string(),
                    p.partition_index,
                    p.error_code,
                    p.error_message.map(|m| m.to_string()),
                    "reassignment",
                ));
            }
        }
        Ok(out)
    }

    /// The reassignments in progress (of `topics` and their partitions, or all).
    pub async fn list_partition_reassignments(
        &mut self,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<Reassignment>> {
        let timeout_ms = self.timeout_ms();
        let addr = self.cluster.any_connection().await?;
        let r = self
            .call_negotiated(MOVES_VERSIONS, &addr, |_| {
                let mut req = ListPartitionReassignmentsRequest::default();
                req.timeout_ms = timeout_ms;
                req.topics = topics.map(|ts| {
                    ts.iter()
                        .map(|(t, indexes)| {
                            let mut x = ListPartitionReassignmentsTopics::default();
                            x.name = topic_name(t);
                            x.partition_indexes = indexes.clone();
                            x
                        })
                        .collect()
                });
                req
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                r.error_code,
                "list reassignments",
                r.error_message.as_deref(),
            ));
        }
        let ids = |v: Vec<BrokerId>| v.into_iter().map(|b| b.0).collect();
        let mut out = Vec::new();
        for t in r.topics {
            for p in t.partitions {
                out.push(Reassignment {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    replicas: ids(p.replicas),
                    adding: ids(p.adding_replicas),
                    removing: ids(p.removing_replicas),
                });
            }
        }
        Ok(out)
    }
}
