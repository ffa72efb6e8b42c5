//! `MetadataImage`: the cluster's metadata as a plain value, built by applying the records of the
//! metadata log in order. Every node holds one; the controller decides from it and brokers serve
//! from it. A snapshot is the image written back as records (`to_records`), so loading a
//! snapshot and applying the rest of the log gives exactly the image of applying everything.
//!
//! Applying checks a record against the image before changing anything, so a record that does
//! not fit (a change to a partition that does not exist) leaves the image as it was and is
//! reported; the raft shell treats that as fatal for the node.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::raft::{ApplyError, ReplicatedState};
use crate::records::{
    BrokerEndpoint, BrokerFencingRecord, ConfigRecord, FeatureLevelRecord, MetadataRecord,
    PartitionRecord, ProducerIdsRecord, RegisterBrokerRecord, TopicRecord, config_resource,
    decode_batch, encode_batch,
};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    /// The broker's `node.id`.
    pub id: i32,
    /// The incarnation that registered.
    pub incarnation_id: Uuid,
    /// The broker epoch: the offset of its registration (KIP-903).
    pub epoch: i64,
    /// Its listeners.
    pub listeners: Vec<BrokerEndpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Fenced brokers neither lead nor appear in Metadata answers.
    pub fenced: bool,
    /// In controlled shutdown: its leaderships are being moved away.
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    /// Whether the broker may lead and receive new replicas.
    pub fn is_usable(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// One partition's replica state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    /// The replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// The leader, or `records::NO_LEADER`.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The partition epoch.
    pub partition_epoch: i32,
    /// Replicas an ongoing reassignment will remove once the added ones are in sync.
    pub removing_replicas: Vec<i32>,
    /// Replicas an ongoing reassignment adds; it completes when all of them are in the ISR.
    pub adding_replicas: Vec<i32>,
}

impl PartitionImage {
    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replica set before the reassignment in progress (the replicas, if none is), in the
    /// current order.
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }

    /// The replica set a reassignment in progress moves to (the replicas, if none is).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    /// The topic's name.
    pub name: String,
    /// The topic's id.
    pub id: Uuid,
    /// Its partitions by index.
    pub partitions: BTreeMap<i32, PartitionImage>,
}

/// A record that does not fit the image it is applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// It names a broker that is not registered.
    #[error("{record}: broker {broker_id} is not registered")]
    UnknownBroker {
        /// The record's type name.
        record: &'static str,
        /// The broker it names.
        broker_id: i32,
    },
    /// It names a topic id that does not exist.
    #[error("{record}: topic {topic_id} does not exist")]
    UnknownTopic {
        /// The record's type name.
        record: &'static str,
        /// The topic id it names.
        topic_id: Uuid,
    },
    /// It names a partition that does not exist.
    #[error("PartitionChangeRecord: partition {partition_id} of topic {topic_id} does not exist")]
    UnknownPartition {
        /// The topic id.
        topic_id: Uuid,
        /// The partition index.
        partition_id: i32,
    },
    /// It creates a topic whose name or id is taken.
    #[error("TopicRecord: topic {name} ({topic_id}) already exists")]
    TopicExists {
        /// The name.
        name: String,
        /// The id.
        topic_id: Uuid,
    },
}

/// The cluster's metadata at one offset of the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// The offset of the last entry applied; `None` before the first.
    pub offset: Option<u64>,
    /// Finalized feature levels.
    pub features: BTreeMap<String, i16>,
    /// Registered brokers by id.
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    /// Topics by id.
    pub topics: BTreeMap<Uuid, TopicImage>,
    /// Topic ids by name.
    pub topic_ids: BTreeMap<String, Uuid>,
    /// Configs by (resource type, resource name), each a name -> value map.
    pub configs: BTreeMap<(i8, String), BTreeMap<String, String>>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
}

impl MetadataImage {
    /// The topic of that name.
    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// A topic's configs (only those set; defaults are the broker's business).
    pub fn topic_configs(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.configs
            .get(&(config_resource::TOPIC, name.to_string()))
    }

    /// The brokers that may lead and receive new replicas: registered, unfenced, not shutting
    /// down.
    pub fn usable_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| b.is_usable())
    }

    /// Whether a broker is registered and unfenced (it may be in controlled shutdown).
    pub fn is_unfenced(&self, broker_id: i32) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
    }

    /// Applies every record of one log entry at `offset`. A failing record stops the batch; the
    /// records before it stay applied (the node stops anyway: it cannot follow this log).
    pub fn apply_batch(
        &mut self,
        offset: u64,
        records: &[MetadataRecord],
    ) -> Result<(), ImageError> {
        for record in records {
            self.apply(offset, record)?;
        }
        self.offset = Some(offset);
        Ok(())
    }

    /// Applies one record of the entry at `offset`; on error the image is unchanged.
    pub fn apply(&mut self, offset: u64, record: &MetadataRecord) -> Result<(), ImageError> {
        let name = record.type_name();
        match record {
            MetadataRecord::RegisterBroker(r) => {
                let epoch = if r.broker_epoch < 0 {
                    offset as i64
                } else {
                    r.broker_epoch
                };
                self.brokers.insert(
                    r.broker_id,
                    BrokerRegistration {
                        id: r.broker_id,
                        incarnation_id: r.incarnation_id,
                        epoch,
                        listeners: r.listeners.clone(),
                        rack: r.rack.clone(),
                        fenced: r.fenced,
                        in_controlled_shutdown: r.in_controlled_shutdown,
                    },
                );
            }
            MetadataRecord::UnregisterBroker(r) => {
                let b = self.broker(name, r.broker_id)?;
                if b.epoch == r.broker_epoch {
                    self.brokers.remove(&r.broker_id);
                }
            }
            MetadataRecord::FenceBroker(BrokerFencingRecord { id, epoch })
            | MetadataRecord::UnfenceBroker(BrokerFencingRecord { id, epoch }) => {
                let fenced = matches!(record, MetadataRecord::FenceBroker(_));
                let b = self.broker_mut(name, *id)?;
                // A record about an older registration says nothing about the current one.
                if b.epoch == *epoch {
                    b.fenced = fenced;
                    if !fenced {
                        b.in_controlled_shutdown = false;
                    }
                }
            }
            MetadataRecord::BrokerRegistrationChange(r) => {
                let b = self.broker_mut(name, r.broker_id)?;
                if b.epoch == r.broker_epoch {
                    if let Some(fenced) = r.fenced {
                        b.fenced = fenced;
                    }
                    if let Some(ics) = r.in_controlled_shutdown {
                        b.in_controlled_shutdown = ics;
                    }
                }
            }
            MetadataRecord::Topic(TopicRecord {
                name: topic,
                topic_id,
            }) => {
                if self.topics.contains_key(topic_id) || self.topic_ids.contains_key(topic) {
                    return Err(ImageError::TopicExists {
                        name: topic.clone(),
                        topic_id: *topic_id,
                    });
                }
                self.topic_ids.insert(topic.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: topic.clone(),
                        id: *topic_id,
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition(r) => {
                let topic = self.topic_mut(name, r.topic_id)?;
                topic.partitions.insert(
                    r.partition_id,
                    PartitionImage {
                        replicas: r.replicas.clone(),
                        isr: r.isr.clone(),
                        leader: r.leader,
                        leader_epoch: r.leader_epoch,
                        partition_epoch: r.partition_epoch,
                        removing_replicas: r.removing_replicas.clone(),
                        adding_replicas: r.adding_replicas.clone(),
                    },
                );
            }
            MetadataRecord::PartitionChange(r) => {
                let topic = self.topic_mut(name, r.topic_id)?;
                let p = topic.partitions.get_mut(&r.partition_id).ok_or(
                    ImageError::UnknownPartition {
                        topic_id: r.topic_id,
                        partition_id: r.partition_id,
                    },
                )?;
                if let Some(isr) = &r.isr {
                    p.isr = isr.clone();
                }
                if let Some(replicas) = &r.replicas {
                    p.replicas = replicas.clone();
                }
                if let Some(removing) = &r.removing_replicas {
                    p.removing_replicas = removing.clone();
                }
                if let Some(adding) = &r.adding_replicas {
                    p.adding_replicas = adding.clone();
                }
                if let Some(leader) = r.leader
                    && leader != p.leader
                {
                    p.leader = leader;
                    p.leader_epoch = p.leader_epoch.saturating_add(1);
                }
                p.partition_epoch = p.partition_epoch.saturating_add(1);
            }
            MetadataRecord::RemoveTopic(r) => {
                let topic = self
                    .topics
                    .remove(&r.topic_id)
                    .ok_or(ImageError::UnknownTopic {
                        record: name,
                        topic_id: r.topic_id,
                    })?;
                self.topic_ids.remove(&topic.name);
                self.configs.remove(&(config_resource::TOPIC, topic.name));
            }
            MetadataRecord::Config(ConfigRecord {
                resource_type,
                resource_name,
                name: key,
                value,
            }) => {
                let resource = (*resource_type, resource_name.clone());
                match value {
                    Some(v) => {
                        self.configs
                            .entry(resource)
                            .or_default()
                            .insert(key.clone(), v.clone());
                    }
                    None => {
                        if let Some(map) = self.configs.get_mut(&resource) {
                            map.remove(key);
                            if map.is_empty() {
                                self.configs.remove(&resource);
                            }
                        }
                    }
                }
            }
            MetadataRecord::ProducerIds(ProducerIdsRecord {
                next_producer_id, ..
            }) => {
                // Never backwards: a retried or reordered proposal must not hand a block out
                // twice.
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::FeatureLevel(FeatureLevelRecord {
                name: feature,
                feature_level,
            }) => {
                if *feature_level == 0 {
                    self.features.remove(feature);
                } else {
                    self.features.insert(feature.clone(), *feature_level);
                }
            }
            MetadataRecord::NoOp => {}
        }
        Ok(())
    }

    /// The image as records: what a snapshot holds. Applying them to an empty image at this
    /// image's offset gives this image back.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for (name, level) in &self.features {
            out.push(MetadataRecord::FeatureLevel(FeatureLevelRecord {
                name: name.clone(),
                feature_level: *level,
            }));
        }
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: b.id,
                incarnation_id: b.incarnation_id,
                broker_epoch: b.epoch,
                listeners: b.listeners.clone(),
                rack: b.rack.clone(),
                fenced: b.fenced,
                in_controlled_shutdown: b.in_controlled_shutdown,
            }));
        }
        for t in self.topics.values() {
            out.push(MetadataRecord::Topic(TopicRecord {
                name: t.name.clone(),
                topic_id: t.id,
            }));
            for (id, p) in &t.partitions {
                out.push(MetadataRecord::Partition(PartitionRecord {
                    topic_id: t.id,
                    partition_id: *id,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    removing_replicas: p.removing_replicas.clone(),
                    adding_replicas: p.adding_replicas.clone(),
                }));
            }
        }
        for ((resource_type, resource_name), map) in &self.configs {
            for (name, value) in map {
                out.push(MetadataRecord::Config(ConfigRecord {
                    resource_type: *resource_type,
                    resource_name: resource_name.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                }));
            }
        }
        if self.next_producer_id != 0 {
            out.push(MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: -1,
                broker_epoch: -1,
                next_producer_id: self.next_producer_id,
            }));
        }
        out
    }

    /// The image a snapshot taken at `offset` describes.
    pub fn from_snapshot(offset: u64, records: &[MetadataRecord]) -> Result<Self, ImageError> {
        let mut image = MetadataImage::default();
        image.apply_batch(offset, records)?;
        image.offset = Some(offset);
        Ok(image)
    }

    /// Partitions whose leader is `broker_id`, as (topic id, partition index).
    pub fn partitions_led_by(&self, broker_id: i32) -> Vec<(Uuid, i32)> {
        self.topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(move |(_, p)| p.leader == broker_id)
                    .map(move |(i, _)| (t.id, *i))
            })
            .collect()
    }

    /// Partitions that list `broker_id` among their replicas.
    pub fn partitions_on(&self, broker_id: i32) -> Vec<(Uuid, i32)> {
        self.topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(move |(_, p)| p.replicas.contains(&broker_id))
                    .map(move |(i, _)| (t.id, *i))
            })
            .collect()
    }

    /// The racks of the registered brokers.
    pub fn racks(&self) -> BTreeSet<&str> {
        self.brokers
            .values()
            .filter_map(|b| b.rack.as_deref())
            .collect()
    }

    fn broker(&self, record: &'static str, id: i32) -> Result<&BrokerRegistration, ImageError> {
        self.brokers.get(&id).ok_or(ImageError::UnknownBroker {
            record,
            broker_id: id,
        })
    }

    fn broker_mut(
        &mut self,
        record: &'static str,
        id: i32,
    ) -> Result<&mut BrokerRegistration, ImageError> {
        self.brokers.get_mut(&id).ok_or(ImageError::UnknownBroker {
            record,
            broker_id: id,
        })
    }

    fn topic_mut(&mut self, record: &'static str, id: Uuid) -> Result<&mut TopicImage, ImageError> {
        self.topics.get_mut(&id).ok_or(ImageError::UnknownTopic {
            record,
            topic_id: id,
        })
    }
}

impl ReplicatedState for MetadataImage {
    fn apply(&mut self, offset: u64, payload: &[u8]) -> Result<(), ApplyError> {
        let records = decode_batch(payload).map_err(|e| ApplyError {
            offset,
            reason: e.to_string(),
        })?;
        self.apply_batch(offset, &records).map_err(|e| ApplyError {
            offset,
            reason: e.to_string(),
        })
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_batch(&self.to_records())
    }

    fn restore(&mut self, offset: u64, snapshot: &[u8]) -> Result<(), ApplyError> {
        let fail = |reason: String| ApplyError { offset, reason };
        let records = decode_batch(snapshot).map_err(|e| fail(e.to_string()))?;
        *self = MetadataImage::from_snapshot(offset, &records).map_err(|e| fail(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::record_strategy;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Applies entries (one record each, at offsets 0..), skipping those that do not fit: the
    /// same records skip the same way whatever the starting point, which is what is compared.
    fn replay(image: &mut MetadataImage, entries: &[(u64, MetadataRecord)]) {
        for (offset, record) in entries {
            let _ = image.apply(*offset, record);
            image.offset = Some(*offset);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn snapshot_then_rest_equals_everything(
            records in vec(record_strategy(), 0..60),
            cut in any::<prop::sample::Index>(),
        ) {
            let entries: Vec<(u64, MetadataRecord)> =
                records.into_iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
            let mut all = MetadataImage::default();
            replay(&mut all, &entries);

            let cut = cut.index(entries.len() + 1);
            let mut head = MetadataImage::default();
            replay(&mut head, &entries[..cut]);
            // Through the bytes a snapshot file holds, as a restarting node would read them.
            let mut restored = MetadataImage::default();
            match head.offset {
                Some(offset) => restored.restore(offset, &head.snapshot()).map_err(|e| TestCaseError::fail(e.to_string()))?,
                None => prop_assert_eq!(head.snapshot(), encode_batch(&[])),
            }
            prop_assert_eq!(&restored, &head);
            replay(&mut restored, &entries[cut..]);
            prop_assert_eq!(restored, all);
        }
    }

    #[test]
    fn broker_epoch_is_the_offset_of_its_registration() {
        let mut image = MetadataImage::default();
        let reg = RegisterBrokerRecord {
            broker_id: 3,
            incarnation_id: Uuid::from_u128(7),
            broker_epoch: -1,
            listeners: vec![],
            rack: None,
            fenced: true,
            in_controlled_shutdown: false,
        };
        image
            .apply_batch(41, &[MetadataRecord::RegisterBroker(reg.clone())])
            .expect("apply");
        assert_eq!(image.brokers[&3].epoch, 41);
        // A fence/unfence for an older epoch is ignored.
        image
            .apply(
                42,
                &MetadataRecord::UnfenceBroker(BrokerFencingRecord { id: 3, epoch: 40 }),
            )
            .expect("apply");
        assert!(image.brokers[&3].fenced);
        image
            .apply(
                42,
                &MetadataRecord::UnfenceBroker(BrokerFencingRecord { id: 3, epoch: 41 }),
            )
            .expect("apply");
        assert!(!image.brokers[&3].fenced);
    }

    #[test]
    fn a_record_that_does_not_fit_leaves_the_image_unchanged() {
        let mut image = MetadataImage::default();
        let before = image.clone();
        let err = image
            .apply(
                0,
                &MetadataRecord::PartitionChange(crate::records::PartitionChangeRecord {
                    topic_id: Uuid::from_u128(1),
                    partition_id: 0,
                    isr: None,
                    leader: Some(1),
                    ..Default::default()
                }),
            )
            .expect_err("unknown topic");
        assert!(matches!(err, ImageError::UnknownTopic { .. }));
        assert_eq!(image, before);
        let mut bad = MetadataImage::default();
        let e = ReplicatedState::apply(&mut bad, 5, &[0, 1, 0x8f, 0x4e, 0, 0])
            .expect_err("unknown record type");
        assert_eq!(e.offset, 5);
        assert!(e.reason.contains("unknown metadata record type"), "{e}");
    }
}
