//! The topic view fed by the metadata log: applying a committed [`MetadataImage`] to what this
//! node serves. Topics appear, grow, change configs and go away here and nowhere else; a
//! partition whose replicas include this node gets its log opened (recovered at start) or
//! created, and a removed topic's logs are deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use vltava_controller::image::{MetadataImage, TopicImage};

use super::replication::ReplicationConfig;
use super::{
    FollowerAssignment, LeaderAssignment, Partition, PartitionState, ReplicaManager, Topic,
    TopicError, lock_log,
};

impl ReplicaManager {
    /// Brings the topics and hosted replicas up to `image`. Images are applied one at a time
    /// and an image not newer than the last one applied changes nothing, so every caller that
    /// needs "at least this offset" may call it. A partition whose log cannot be opened or
    /// created is reported (the first such error) and left out, the rest applied.
    pub fn apply_image(&self, image: &MetadataImage) -> Result<(), TopicError> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if image.offset.is_none() || image.offset <= *applied {
            return Ok(());
        }
        let current: HashMap<String, Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Removals first: a topic deleted and created again under its name needs the old
        // directories gone before the new ones are made.
        for (name, old) in &current {
            let kept = image.topic_ids.get(name).is_some_and(|id| *id == old.id);
            if kept {
                continue;
            }
            self.topics
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            // Deleted: no replica leads any more; acks=all waits end, parked fetches wake.
            for p in old.local_partitions() {
                p.become_follower(-1, p.leader_epoch());
            }
            if old.local_partitions().next().is_some() {
                self.lock_logs().delete_topic(name)?;
            }
            tracing::info!(topic = %name, "deleted topic");
        }
        crate::disk::set_registered_brokers(image.brokers.len());
        let mut next = HashMap::with_capacity(image.topics.len());
        let mut first_error = None;
        let eligible: BTreeMap<i32, i64> = image
            .brokers
            .values()
            .filter(|b| b.is_usable())
            .map(|b| (b.id, b.epoch))
            .collect();
        for t in image.topics.values() {
            let configs = image.topic_configs(&t.name).cloned().unwrap_or_default();
            let old = current.get(&t.name).filter(|o| o.id == t.id);
            match self.topic_from_image(t, configs, old, &eligible) {
                Ok(topic) => {
                    next.insert(t.name.clone(), topic);
                }
                Err(e) => {
                    tracing::error!(topic = %t.name, error = %e, "cannot host the topic's replicas");
                    if let Some(old) = old {
                        next.insert(t.name.clone(), Arc::clone(old));
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        for name in next.keys() {
            if !current.contains_key(name) {
                tracing::info!(topic = %name, "created topic");
            }
        }
        let followers = follower_assignment(image, self.node_id, &next);
        *self.topics.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.followers.send_if_modified(|current| {
            if current.leaders == followers.leaders {
                return false;
            }
            *current = Arc::new(followers);
            true
        });
        *applied = image.offset;
        self.published.send_replace(image.offset);
        first_error.map_or(Ok(()), Err)
    }
}

/// The partitions hosted here that another broker leads, by leader, with the leader's address.
fn follower_assignment(
    image: &MetadataImage,
    node_id: i32,
    topics: &HashMap<String, Arc<Topic>>,
) -> FollowerAssignment {
    let mut names: Vec<&String> = topics.keys().collect();
    names.sort();
    let mut out = FollowerAssignment::default();
    for name in names {
        for p in &topics[name].partitions {
            let Some(local) = &p.local else { continue };
            if p.leader < 0 || p.leader == node_id {
                continue;
            }
            out.leaders
                .entry(p.leader)
                .or_insert_with(|| LeaderAssignment {
                    addr: image
                        .brokers
                        .get(&p.leader)
                        .and_then(|b| b.listeners.first().map(|l| (l.host.clone(), l.port))),
                    partitions: Vec::new(),
                })
                .partitions
                .push(Arc::clone(local));
        }
    }
    out
}

impl ReplicaManager {
    /// This node is no longer a replica of the partition (a reassignment moved it away, maybe
    /// while this node was down): the replica stops serving and its log is deleted, as Kafka's
    /// StopReplica with deletion does.
    fn remove_replica(&self, topic: &str, index: i32, existing: Option<&Partition>) {
        if let Some(local) = existing {
            // Waiting acks=all produces end, parked fetches wake, appends are refused.
            local.become_follower(-1, local.leader_epoch());
        }
        let logs = self.lock_logs();
        if logs.get(topic, index).is_none() {
            return;
        }
        let tp = vltava_storage::TopicPartition::new(topic, index);
        match logs.delete_log(&tp) {
            Ok(_) => tracing::info!(topic, partition = index, "removed replica: log deleted"),
            Err(e) => {
                tracing::error!(topic, partition = index, error = %e, "cannot delete a removed replica's log")
            }
        }
    }

    fn topic_from_image(
        &self,
        t: &TopicImage,
        configs: BTreeMap<String, String>,
        old: Option<&Arc<Topic>>,
        eligible: &BTreeMap<i32, i64>,
    ) -> Result<Arc<Topic>, TopicError> {
        let configs_changed = old.is_none_or(|o| o.configs != configs);
        let log_config = self.config.log_config(&configs);
        let replication = ReplicationConfig {
            replica_lag_time_max_ms: self.config.replica_lag_time_max_ms(),
            min_insync_replicas: self.config.min_insync_replicas(&configs).max(1) as usize,
        };
        let topic_name: Arc<str> = Arc::from(t.name.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (expected, (index, p)) in (0..).zip(&t.partitions) {
            if *index != expected {
                // Indexes are dense by construction; a gap would misplace every later one.
                tracing::error!(topic = %t.name, partition = index, "partition indexes have a gap");
                break;
            }
            let existing = old
                .and_then(|o| o.partitions.get(expected as usize))
                .and_then(|s| s.local.clone());
            let local = if p.replicas.contains(&self.node_id) {
                Some(match existing {
                    Some(local) => {
                        if configs_changed {
                            local.log().set_config(log_config.clone());
                        }
                        local
                    }
                    None => {
                        let logs = self.lock_logs();
                        let log = match logs.get(&t.name, *index) {
                            Some(l) => {
                                lock_log(&l).set_config(log_config.clone());
                                l
                            }
                            None => {
                                let l = logs.create_log(&t.name, *index, log_config.clone())?;
                                lock_log(&l).set_topic_id(&t.id.to_string())?;
                                l
                            }
                        };
                        let partition = Arc::new(Partition::new(
                            Arc::clone(&topic_name),
                            t.id,
                            *index,
                            p.leader_epoch,
                            log,
                        ));
                        partition.count_isr_changes_in(&self.isr_counters);
                        partition
                    }
                })
            } else {
                self.remove_replica(&t.name, *index, existing.as_deref());
                None
            };
            if let Some(local) = &local {
                if p.leader == self.node_id {
                    local.become_leader(
                        p.leader_epoch,
                        p.partition_epoch,
                        &p.replicas,
                        &p.isr,
                        replication,
                        self.node_id,
                    );
                    local.set_eligible_brokers(eligible);
                } else {
                    local.become_follower(p.leader, p.leader_epoch);
                }
            }
            partitions.push(PartitionState {
                index: *index,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                local,
            });
        }
        Ok(Arc::new(Topic {
            name: t.name.clone(),
            id: t.id,
            partitions,
            configs,
            // The same topic (by id) keeps its counters; one created again under the name
            // starts afresh.
            metrics: old
                .filter(|o| o.id == t.id)
                .map(|o| Arc::clone(&o.metrics))
                .unwrap_or_default(),
        }))
    }
}
