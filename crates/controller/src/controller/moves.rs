//! Leadership and replica moves an operator asks for: ElectLeaders (preferred and unclean),
//! the periodic preferred-leader rebalance (`auto.leader.rebalance.enable`), and partition
//! reassignment (KIP-455: AlterPartitionReassignments), following Kafka's
//! `ReplicationControlManager` and `PartitionChangeBuilder`.
//!
//! A reassignment to target replicas T from replicas R first makes the replica set T followed
//! by R − T, with `adding` = T − R and `removing` = R − T. The partition keeps its leader and
//! ISR; the added replicas start fetching, and the leader proposes them into the ISR as any
//! follower that caught up. The AlterPartition that makes every replica of T in sync (the
//! added ones and any kept one that lagged) also completes the reassignment: the replica set
//! becomes T, the removed replicas leave the ISR, and a leader that was removed hands over to
//! the first in-sync replica of T. Until then the removed replicas keep their copies, so the
//! move never leaves fewer in-sync copies of what was acknowledged than there were.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{Batch, Controller, ControllerError, Decision, usable};
use crate::image::{MetadataImage, PartitionImage};
use crate::records::{MetadataRecord, NO_LEADER, PartitionChangeRecord};

/// ElectLeaders' election type (Kafka's `ElectionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Move leadership to the preferred (first) replica, if it is in sync and usable.
    Preferred,
    /// Elect a leader for a partition that has none, outside the ISR if need be.
    Unclean,
}

impl ElectionType {
    /// The wire value (0 preferred, 1 unclean).
    pub fn code(self) -> i8 {
        match self {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        }
    }

    /// From the wire value.
    pub fn from_code(code: i8) -> Option<ElectionType> {
        match code {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// Partitions named by topic: `(topic, partition indexes)`.
pub type TopicPartitions = Vec<(String, Vec<i32>)>;

/// Per topic, per partition: the outcome.
pub type PartitionResults = Vec<(String, Vec<(i32, Result<(), ControllerError>)>)>;

/// One partition of an AlterPartitionReassignments request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignPartition {
    /// The partition index.
    pub partition: i32,
    /// The target replicas; `None` cancels the reassignment in progress.
    pub replicas: Option<Vec<i32>>,
}

/// The replica set of a partition being reassigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    /// The partition index.
    pub partition: i32,
    /// The current replica set (targets first).
    pub replicas: Vec<i32>,
    /// The replicas being added.
    pub adding_replicas: Vec<i32>,
    /// The replicas being removed.
    pub removing_replicas: Vec<i32>,
}

/// Every reassignment in progress among `filter` (all partitions when `None`), by topic.
pub fn list_reassignments(
    image: &MetadataImage,
    filter: Option<&[(String, Vec<i32>)]>,
) -> Vec<(String, Vec<OngoingReassignment>)> {
    let ongoing = |p: &PartitionImage, index: i32| {
        p.is_reassigning().then(|| OngoingReassignment {
            partition: index,
            replicas: p.replicas.clone(),
            adding_replicas: p.adding_replicas.clone(),
            removing_replicas: p.removing_replicas.clone(),
        })
    };
    let mut out = Vec::new();
    match filter {
        None => {
            let mut topics: Vec<_> = image.topics.values().collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                let list: Vec<_> = t
                    .partitions
                    .iter()
                    .filter_map(|(i, p)| ongoing(p, *i))
                    .collect();
                if !list.is_empty() {
                    out.push((t.name.clone(), list));
                }
            }
        }
        Some(filter) => {
            for (name, indexes) in filter {
                let Some(t) = image.topic_by_name(name) else {
                    continue;
                };
                let list: Vec<_> = indexes
                    .iter()
                    .filter_map(|i| t.partitions.get(i).and_then(|p| ongoing(p, *i)))
                    .collect();
                if !list.is_empty() {
                    out.push((name.clone(), list));
                }
            }
        }
    }
    out
}

impl Controller {
    /// ElectLeaders. With `partitions` `None`, every partition is considered and only those
    /// where an election was needed get a result, as Kafka answers.
    pub fn elect_leaders(
        &self,
        image: &MetadataImage,
        election: ElectionType,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Decision<PartitionResults> {
        let mut batch = Batch::new(image);
        let mut results = Vec::new();
        match partitions {
            Some(wanted) => {
                for (topic, indexes) in wanted {
                    let mut list = Vec::with_capacity(indexes.len());
                    for index in indexes {
                        list.push((*index, self.elect_one(&mut batch, election, topic, *index)));
                    }
                    results.push((topic.clone(), list));
                }
            }
            None => {
                let mut all: Vec<(String, Vec<i32>)> = image
                    .topics
                    .values()
                    .map(|t| (t.name.clone(), t.partitions.keys().copied().collect()))
                    .collect();
                all.sort();
                for (topic, indexes) in all {
                    let list: Vec<_> = indexes
                        .into_iter()
                        .map(|i| (i, self.elect_one(&mut batch, election, &topic, i)))
                        .filter(|(_, r)| {
                            !matches!(r, Err(e) if e.error == ResponseError::ElectionNotNeeded)
                        })
                        .collect();
                    if !list.is_empty() {
                        results.push((topic, list));
                    }
                }
            }
        }
        batch.finish(results)
    }

    fn elect_one(
        &self,
        batch: &mut Batch<'_>,
        election: ElectionType,
        topic: &str,
        index: i32,
    ) -> Result<(), ControllerError> {
        let image = batch.image();
        let Some(t) = image.topic_by_name(topic) else {
            return Err(ControllerError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{topic}' does not exist"),
            ));
        };
        let topic_id = t.id;
        let Some(p) = t.partitions.get(&index) else {
            return Err(ControllerError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{topic}' has no partition {index}"),
            ));
        };
        let change = match election {
            ElectionType::Preferred => {
                let preferred = p.target_replicas().first().copied().unwrap_or(NO_LEADER);
                if p.leader == preferred {
                    return Err(ControllerError::new(
                        ResponseError::ElectionNotNeeded,
                        format!("{topic}-{index}: broker {preferred} already leads"),
                    ));
                }
                if !p.isr.contains(&preferred) || !usable(image, preferred) {
                    return Err(ControllerError::new(
                        ResponseError::PreferredLeaderNotAvailable,
                        format!(
                            "{topic}-{index}: the preferred leader {preferred} is not in sync or not available"
                        ),
                    ));
                }
                leader_change(topic_id, index, preferred, None)
            }
            ElectionType::Unclean => {
                if p.leader != NO_LEADER {
                    return Err(ControllerError::new(
                        ResponseError::ElectionNotNeeded,
                        format!("{topic}-{index}: broker {} leads", p.leader),
                    ));
                }
                let clean = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| p.isr.contains(r) && usable(image, *r));
                match clean {
                    Some(leader) => leader_change(topic_id, index, leader, None),
                    None => match p.replicas.iter().copied().find(|r| usable(image, *r)) {
                        Some(leader) => {
                            tracing::warn!(
                                topic,
                                partition = index,
                                leader,
                                "unclean leader election asked for by ElectLeaders"
                            );
                            leader_change(topic_id, index, leader, Some(vec![leader]))
                        }
                        None => {
                            return Err(ControllerError::new(
                                ResponseError::EligibleLeadersNotAvailable,
                                format!("{topic}-{index}: no replica is available to lead"),
                            ));
                        }
                    },
                }
            }
        };
        batch.push(MetadataRecord::PartitionChange(change));
        Ok(())
    }

    /// The records of a preferred-leader rebalance: every partition led by another replica
    /// than its preferred one, where the preferred one is in sync and usable, goes back to it.
    /// Partitions being reassigned are left to the reassignment.
    pub(super) fn rebalance_leaders(&self, batch: &mut Batch<'_>) {
        let image = batch.image();
        let mut changes = Vec::new();
        for t in image.topics.values() {
            for (index, p) in &t.partitions {
                if p.is_reassigning() {
                    continue;
                }
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                if p.leader != preferred && p.isr.contains(&preferred) && usable(image, preferred) {
                    tracing::info!(
                        topic = %t.name,
                        partition = index,
                        from = p.leader,
                        to = preferred,
                        "preferred leader election (auto.leader.rebalance.enable)"
                    );
                    changes.push(leader_change(t.id, *index, preferred, None));
                }
            }
        }
        for c in changes {
            batch.push(MetadataRecord::PartitionChange(c));
        }
    }

    /// Whether some partition is led by another replica than its preferred one, which could
    /// move back to it now.
    pub(super) fn leaders_imbalanced(&self, image: &MetadataImage) -> bool {
        image.topics.values().any(|t| {
            t.partitions.values().any(|p| {
                !p.is_reassigning()
                    && p.replicas.first().is_some_and(|&preferred| {
                        p.leader != preferred
                            && p.isr.contains(&preferred)
                            && usable(image, preferred)
                    })
            })
        })
    }

    /// AlterPartitionReassignments, per topic and partition.
    pub fn alter_partition_reassignments(
        &self,
        image: &MetadataImage,
        topics: &[(String, Vec<ReassignPartition>)],
    ) -> Decision<PartitionResults> {
        let mut batch = Batch::new(image);
        let mut results = Vec::with_capacity(topics.len());
        for (topic, partitions) in topics {
            let mut list = Vec::with_capacity(partitions.len());
            for p in partitions {
                let r = match &p.replicas {
                    Some(target) => self.reassign_one(&mut batch, topic, p.partition, target),
                    None => cancel_one(&mut batch, topic, p.partition),
                };
                list.push((p.partition, r));
            }
            results.push((topic.clone(), list));
        }
        batch.finish(results)
    }

    fn reassign_one(
        &self,
        batch: &mut Batch<'_>,
        topic: &str,
        index: i32,
        target: &[i32],
    ) -> Result<(), ControllerError> {
        let (topic_id, p) = partition(batch.image(), topic, index)?;
        let invalid = |m: String| {
            Err(ControllerError::new(
                ResponseError::InvalidReplicaAssignment,
                m,
            ))
        };
        if target.is_empty() {
            return invalid(format!("{topic}-{index}: the target replica list is empty"));
        }
        let distinct: BTreeSet<i32> = target.iter().copied().collect();
        if distinct.len() != target.len() {
            return invalid(format!(
                "{topic}-{index}: the target replicas {target:?} repeat a broker"
            ));
        }
        if let Some(b) = target
            .iter()
            .find(|b| !batch.image().brokers.contains_key(b))
        {
            return invalid(format!(
                "{topic}-{index}: the target replicas include broker {b}, which is not registered"
            ));
        }
        // A new target replaces one in progress, computed from the replicas before it.
        let original = p.original_replicas();
        let same_set = |a: &[i32], b: &[i32]| a.len() == b.len() && a.iter().all(|r| b.contains(r));
        let change = if same_set(target, &original) {
            if !p.is_reassigning() && target == p.replicas.as_slice() {
                return Ok(());
            }
            // Back to (a reordering of) the original set: nothing to copy, done at once.
            replica_set_change(
                topic,
                index,
                topic_id,
                &p,
                target.to_vec(),
                Vec::new(),
                Vec::new(),
            )?
        } else {
            let adding: Vec<i32> = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            let removing: Vec<i32> = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            let mut replicas = target.to_vec();
            replicas.extend(removing.iter().copied());
            replica_set_change(topic, index, topic_id, &p, replicas, adding, removing)?
        };
        tracing::info!(topic, partition = index, ?target, "partition reassignment");
        batch.push(MetadataRecord::PartitionChange(change));
        maybe_complete_reassignment(batch, topic_id, index);
        Ok(())
    }
}

fn partition(
    image: &MetadataImage,
    topic: &str,
    index: i32,
) -> Result<(Uuid, PartitionImage), ControllerError> {
    let unknown = |m: String| ControllerError::new(ResponseError::UnknownTopicOrPartition, m);
    let t = image
        .topic_by_name(topic)
        .ok_or_else(|| unknown(format!("topic '{topic}' does not exist")))?;
    let p = t
        .partitions
        .get(&index)
        .ok_or_else(|| unknown(format!("topic '{topic}' has no partition {index}")))?;
    Ok((t.id, p.clone()))
}

fn cancel_one(batch: &mut Batch<'_>, topic: &str, index: i32) -> Result<(), ControllerError> {
    let (topic_id, p) = partition(batch.image(), topic, index)?;
    if !p.is_reassigning() {
        return Err(ControllerError::new(
            ResponseError::NoReassignmentInProgress,
            format!("{topic}-{index} is not being reassigned"),
        ));
    }
    // As Kafka's revert: the replicas minus the added ones, in their current order (the kept
    // targets first, then the ones that were leaving), not necessarily the order before.
    let original = p.original_replicas();
    let change = replica_set_change(topic, index, topic_id, &p, original, Vec::new(), Vec::new())?;
    tracing::info!(topic, partition = index, "partition reassignment cancelled");
    batch.push(MetadataRecord::PartitionChange(change));
    Ok(())
}

/// The change that gives a partition the replica set `replicas`, with a reassignment's
/// `adding` / `removing` lists (empty ones end it): replicas outside the set leave the ISR, and
/// a leader outside it hands over to the first remaining member. Refused when no in-sync
/// replica would remain.
fn replica_set_change(
    topic: &str,
    index: i32,
    topic_id: Uuid,
    p: &PartitionImage,
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
) -> Result<PartitionChangeRecord, ControllerError> {
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err(ControllerError::new(
            ResponseError::ReassignmentInProgress,
            format!(
                "{topic}-{index}: none of the replicas {replicas:?} is in sync; let the reassignment in progress finish first"
            ),
        ));
    }
    let mut change = PartitionChangeRecord {
        topic_id,
        partition_id: index,
        replicas: Some(replicas),
        adding_replicas: Some(adding),
        removing_replicas: Some(removing),
        ..Default::default()
    };
    if !isr.contains(&p.leader) {
        change.leader = Some(isr[0]);
    }
    if isr != p.isr {
        change.isr = Some(isr);
    }
    Ok(change)
}

/// Completes the reassignment of a partition once every target replica is in its ISR: the
/// replica set becomes the target, removed replicas leave the ISR, and a removed leader hands
/// over to the first in-sync target replica.
pub(super) fn maybe_complete_reassignment(batch: &mut Batch<'_>, topic_id: Uuid, index: i32) {
    let image = batch.image();
    let Some(p) = image
        .topics
        .get(&topic_id)
        .and_then(|t| t.partitions.get(&index))
    else {
        return;
    };
    if !p.is_reassigning() {
        return;
    }
    let target = p.target_replicas();
    // Every target replica in sync, not only the added ones (Kafka's
    // PartitionReassignmentReplicas): a lagging target replica would otherwise leave the
    // removed replicas' copies as the only ones of what was acknowledged.
    if !target.iter().all(|r| p.isr.contains(r)) {
        return;
    }
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| target.contains(r))
        .collect();
    if isr.is_empty() {
        return;
    }
    let mut change = PartitionChangeRecord {
        topic_id,
        partition_id: index,
        replicas: Some(target.clone()),
        adding_replicas: Some(Vec::new()),
        removing_replicas: Some(Vec::new()),
        ..Default::default()
    };
    if !isr.contains(&p.leader) {
        let leader = target
            .iter()
            .copied()
            .find(|r| isr.contains(r) && usable(image, *r))
            .unwrap_or(NO_LEADER);
        change.leader = Some(leader);
    }
    if isr != p.isr {
        change.isr = Some(isr);
    }
    tracing::info!(
        partition = index,
        ?target,
        "partition reassignment complete"
    );
    batch.push(MetadataRecord::PartitionChange(change));
}

fn leader_change(
    topic_id: Uuid,
    index: i32,
    leader: i32,
    isr: Option<Vec<i32>>,
) -> PartitionChangeRecord {
    PartitionChangeRecord {
        topic_id,
        partition_id: index,
        leader: Some(leader),
        isr,
        ..Default::default()
    }
}
