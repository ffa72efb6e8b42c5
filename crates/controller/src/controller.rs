//! The active controller's decisions as a pure state machine: given the committed metadata image,
//! an event and the time, it returns the records to append and the answer to give once they are
//! committed. No I/O, no sleeps, no clock of its own: the raft shell feeds it and tests drive it
//! with a fake clock.
//!
//! The caller keeps one rule: the records a call returns are committed (and applied to the image
//! passed in) before the next call, because every decision reads the image. The only state kept
//! here is what Kafka's controller keeps outside the log: when each broker last heartbeated.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use rand::{RngCore, SeedableRng};
use uuid::Uuid;

use crate::image::{MetadataImage, PartitionImage};
use crate::placement::{self, ClusterLoad, PlacementBroker, PlacementError};
use crate::records::{
    BrokerEndpoint, BrokerFencingRecord, BrokerRegistrationChangeRecord, ConfigRecord,
    MetadataRecord, NO_LEADER, PartitionChangeRecord, PartitionRecord, ProducerIdsRecord,
    RegisterBrokerRecord, RemoveTopicRecord, TopicRecord, config_resource,
};

/// Kafka's producer id block size (`ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// The topic config that allows electing a leader outside the ISR.
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// The controller's settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker without a heartbeat for this long is fenced.
    pub session_timeout_ms: i64,
    /// `num.partitions`: partitions of a topic created with the default (-1).
    pub default_num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// The largest replication factor this build can serve; `None` for no limit. Until
    /// partitions are replicated (cluster part 2) it is 1.
    pub max_replication_factor: Option<i16>,
    /// `unclean.leader.election.enable`, the cluster default.
    pub unclean_leader_election_enable: bool,
    /// Seed of the generator of topic ids and incarnation-independent randomness, so that a run
    /// is reproducible.
    pub seed: u64,
    /// `leader.imbalance.check.interval.seconds` in ms when `auto.leader.rebalance.enable` is
    /// on: how often partitions led by another replica than their preferred one are moved
    /// back. `None` turns the rebalance off.
    pub leader_imbalance_check_interval_ms: Option<i64>,
    /// The broker id of the node this controller runs in (combined roles). That broker's
    /// previous incarnation died with this process's predecessor, so its new registration
    /// replaces the old one at once instead of waiting out the old session.
    pub local_broker_id: Option<i32>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9000,
            default_num_partitions: 1,
            default_replication_factor: 1,
            max_replication_factor: Some(1),
            unclean_leader_election_enable: false,
            leader_imbalance_check_interval_ms: None,
            seed: 0,
            local_broker_id: None,
        }
    }
}

/// A request the controller refuses, with the Kafka error it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ControllerError {
    /// The Kafka error.
    pub error: ResponseError,
    /// What was wrong, for the response's error message.
    pub message: String,
}

impl ControllerError {
    /// An error with this code and message.
    pub fn new(error: ResponseError, message: impl Into<String>) -> Self {
        ControllerError {
            error,
            message: message.into(),
        }
    }

    /// The Kafka error code.
    pub fn code(&self) -> i16 {
        self.error.code()
    }
}

/// Records to append, and what to answer once they are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<T> {
    /// The records, in order; empty when nothing changes.
    pub records: Vec<MetadataRecord>,
    /// The answer (for a registration, the broker epoch is the offset the records get).
    pub reply: T,
}

/// BrokerRegistration's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistrationRequest {
    /// `node.id`.
    pub broker_id: i32,
    /// A random id of this process's life.
    pub incarnation_id: Uuid,
    /// Its listeners.
    pub listeners: Vec<BrokerEndpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
}

/// BrokerHeartbeat's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerHeartbeatRequest {
    /// The broker's id.
    pub broker_id: i32,
    /// The epoch its registration got.
    pub broker_epoch: i64,
    /// The metadata offset it has applied.
    pub current_metadata_offset: i64,
    /// It asks to be fenced (e.g. its log directories failed).
    pub want_fence: bool,
    /// It asks for a controlled shutdown.
    pub want_shutdown: bool,
}

/// BrokerHeartbeat's answer, as it will be once the decision's records are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The broker has caught up with the metadata log.
    pub is_caught_up: bool,
    /// The broker is fenced.
    pub is_fenced: bool,
    /// Its controlled shutdown is complete: it may exit.
    pub should_shutdown: bool,
}

/// One topic of a CreateTopics request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateTopicRequest {
    /// The name.
    pub name: String,
    /// Partitions; -1 for `num.partitions`.
    pub num_partitions: i32,
    /// Replication factor; -1 for `default.replication.factor`.
    pub replication_factor: i16,
    /// Manual assignment: replicas of each partition index, instead of placement.
    pub assignments: BTreeMap<i32, Vec<i32>>,
    /// Topic configs (already validated by the broker that received the request).
    pub configs: Vec<(String, String)>,
}

/// A created topic, as CreateTopics reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    /// The new topic id.
    pub topic_id: Uuid,
    /// Its partition count.
    pub num_partitions: i32,
    /// Its replication factor.
    pub replication_factor: i16,
}

/// A topic named by name or by id, as DeleteTopics v6 allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRef {
    /// By name.
    Name(String),
    /// By id.
    Id(Uuid),
}

/// One change of AlterConfigs / IncrementalAlterConfigs, already validated by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// `config_resource::TOPIC` or `config_resource::BROKER`.
    pub resource_type: i8,
    /// The topic name or broker id.
    pub resource_name: String,
    /// The config name.
    pub name: String,
    /// The new value, or `None` to remove it.
    pub value: Option<String>,
}

/// A block of producer ids handed to one broker: `[first, first + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    /// The first id.
    pub first: i64,
    /// How many.
    pub size: i64,
}

/// A deleted topic's name and id.
pub type DeletedTopic = (String, Uuid);

/// `LeaderRecoveryState.RECOVERED` (KIP-704): the leader's log is whole.
pub const LEADER_RECOVERED: i8 = 0;
/// `LeaderRecoveryState.RECOVERING` (KIP-704): the leader was elected uncleanly and has not
/// finished recovering.
pub const LEADER_RECOVERING: i8 = 1;

/// One proposed ISR member and the broker epoch the leader knows it by (KIP-903).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrMember {
    /// The broker.
    pub broker_id: i32,
    /// Its broker epoch as the leader saw it in its fetches; -1 if unknown (not checked).
    pub broker_epoch: i64,
}

/// AlterPartition's content for one partition (Kafka's `AlterPartitionRequest.PartitionData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionData {
    /// The partition index.
    pub partition_index: i32,
    /// The leader epoch the leader is in.
    pub leader_epoch: i32,
    /// The ISR it proposes, itself included.
    pub new_isr_with_epochs: Vec<IsrMember>,
    /// `LEADER_RECOVERED` or `LEADER_RECOVERING`.
    pub leader_recovery_state: i8,
    /// The partition epoch the proposal is based on.
    pub partition_epoch: i32,
}

/// AlterPartition's partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionTopic {
    /// The topic's id.
    pub topic_id: Uuid,
    /// Its partitions.
    pub partitions: Vec<AlterPartitionData>,
}

/// AlterPartition (API 56, KIP-497): a partition leader proposes new ISRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The leader that asks.
    pub broker_id: i32,
    /// Its registration's epoch.
    pub broker_epoch: i64,
    /// The partitions, by topic.
    pub topics: Vec<AlterPartitionTopic>,
}

/// A partition's state after AlterPartition, as it is once the decision is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlteredPartition {
    /// The leader.
    pub leader_id: i32,
    /// The leader epoch (an ISR change does not bump it).
    pub leader_epoch: i32,
    /// The ISR.
    pub isr: Vec<i32>,
    /// The leader recovery state.
    pub leader_recovery_state: i8,
    /// The partition epoch: the current one plus one when a record was written.
    pub partition_epoch: i32,
}

/// AlterPartition's answer for one partition: its index and new state, or why not.
pub type AlterPartitionResult = (i32, Result<AlteredPartition, ControllerError>);

/// AlterPartition's answer for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionTopicReply {
    /// The topic's id.
    pub topic_id: Uuid,
    /// Its partitions, in request order.
    pub partitions: Vec<AlterPartitionResult>,
}

/// AlterPartition's answer, topics in request order.
pub type AlterPartitionReply = Vec<AlterPartitionTopicReply>;

#[derive(Debug, Clone, Copy)]
struct Session {
    epoch: i64,
    last_contact_ms: i64,
}

/// The active controller's decision logic.
pub struct Controller {
    config: ControllerConfig,
    sessions: BTreeMap<i32, Session>,
    rng: rand::rngs::StdRng,
    /// When the next preferred-leader rebalance is due (with the rebalance on).
    next_rebalance_ms: Option<i64>,
}

impl Controller {
    /// A controller with these settings and no broker sessions yet.
    pub fn new(config: ControllerConfig) -> Self {
        let rng = rand::rngs::StdRng::seed_from_u64(config.seed);
        Controller {
            config,
            sessions: BTreeMap::new(),
            rng,
            next_rebalance_ms: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// This node became the active controller at `now_ms`: every unfenced broker gets a full
    /// session timeout from now to reach it, since heartbeats went to the previous controller.
    pub fn activate(&mut self, image: &MetadataImage, now_ms: i64) {
        self.sessions.clear();
        self.next_rebalance_ms = self
            .config
            .leader_imbalance_check_interval_ms
            .map(|i| now_ms.saturating_add(i));
        for b in image.brokers.values().filter(|b| !b.fenced) {
            self.sessions.insert(
                b.id,
                Session {
                    epoch: b.epoch,
                    last_contact_ms: now_ms,
                },
            );
        }
    }

    /// BrokerRegistration. A live registration of the same id by another incarnation is
    /// refused (DUPLICATE_BROKER_REGISTRATION); a dead or fenced one is replaced, and the
    /// partitions the old incarnation led are moved as if it had been fenced. The new
    /// registration starts fenced; its epoch is the offset the records get.
    pub fn register_broker(
        &mut self,
        image: &MetadataImage,
        request: BrokerRegistrationRequest,
        now_ms: i64,
    ) -> Result<Decision<()>, ControllerError> {
        let mut batch = Batch::new(image);
        if let Some(old) = image.brokers.get(&request.broker_id) {
            let live = !old.fenced
                && self.config.local_broker_id != Some(old.id)
                && self.session_alive(old.id, old.epoch, now_ms);
            if live && old.incarnation_id != request.incarnation_id {
                return Err(ControllerError::new(
                    ResponseError::DuplicateBrokerRegistration,
                    format!(
                        "broker {} is already registered by a live incarnation ({}); its session ends {} ms after its last heartbeat",
                        old.id, old.incarnation_id, self.config.session_timeout_ms
                    ),
                ));
            }
            if !old.fenced {
                self.fence(&mut batch, old.id, old.epoch);
            }
        }
        batch.push(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: request.broker_id,
            incarnation_id: request.incarnation_id,
            broker_epoch: -1,
            listeners: request.listeners,
            rack: request.rack,
            fenced: true,
            in_controlled_shutdown: false,
        }));
        let epoch = batch.image().offset.map_or(0, |o| o as i64 + 1);
        self.sessions.insert(
            request.broker_id,
            Session {
                epoch,
                last_contact_ms: now_ms,
            },
        );
        Ok(batch.finish(()))
    }

    /// The registration's epoch once its records are committed at `offset`: the shell calls this
    /// so that the session tracks the epoch the broker will heartbeat with.
    pub fn registration_committed(&mut self, broker_id: i32, offset: u64, now_ms: i64) {
        self.sessions.insert(
            broker_id,
            Session {
                epoch: offset as i64,
                last_contact_ms: now_ms,
            },
        );
    }

    /// BrokerHeartbeat: renews the session; unfences a broker that has caught up; fences one
    /// that asks for it; runs a controlled shutdown (leaderships moved away, then
    /// should_shutdown and fenced).
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        request: &BrokerHeartbeatRequest,
        now_ms: i64,
    ) -> Result<Decision<HeartbeatReply>, ControllerError> {
        let Some(broker) = image.brokers.get(&request.broker_id) else {
            return Err(ControllerError::new(
                ResponseError::BrokerIdNotRegistered,
                format!("broker {} is not registered", request.broker_id),
            ));
        };
        if broker.epoch != request.broker_epoch {
            return Err(ControllerError::new(
                ResponseError::StaleBrokerEpoch,
                format!(
                    "broker {} heartbeats with epoch {} but its registration has epoch {}",
                    broker.id, request.broker_epoch, broker.epoch
                ),
            ));
        }
        self.sessions.insert(
            broker.id,
            Session {
                epoch: broker.epoch,
                last_contact_ms: now_ms,
            },
        );
        let caught_up = request.current_metadata_offset >= broker.epoch;
        let mut batch = Batch::new(image);
        let mut reply = HeartbeatReply {
            is_caught_up: caught_up,
            is_fenced: broker.fenced,
            should_shutdown: false,
        };
        if request.want_shutdown {
            if broker.fenced {
                // Nothing to move: a fenced broker leads nothing.
                reply.should_shutdown = true;
                return Ok(batch.finish(reply));
            }
            if !broker.in_controlled_shutdown {
                batch.push(MetadataRecord::BrokerRegistrationChange(
                    BrokerRegistrationChangeRecord {
                        broker_id: broker.id,
                        broker_epoch: broker.epoch,
                        fenced: None,
                        in_controlled_shutdown: Some(true),
                    },
                ));
                self.move_away(&mut batch, broker.id);
            }
            // Done once it leads nothing: every leadership moved or, where no other in-sync
            // replica exists, went offline.
            if batch.image().partitions_led_by(broker.id).is_empty() {
                self.fence(&mut batch, broker.id, broker.epoch);
                reply.is_fenced = true;
                reply.should_shutdown = true;
            }
        } else if request.want_fence {
            if !broker.fenced {
                self.fence(&mut batch, broker.id, broker.epoch);
            }
            reply.is_fenced = true;
        } else if broker.fenced && caught_up {
            batch.push(MetadataRecord::UnfenceBroker(BrokerFencingRecord {
                id: broker.id,
                epoch: broker.epoch,
            }));
            self.elect_offline(&mut batch, broker.id);
            reply.is_fenced = false;
        }
        Ok(batch.finish(reply))
    }

    /// The timer: fences every unfenced broker whose session expired, and when it is due runs
    /// the preferred-leader rebalance. Returns the records.
    pub fn tick(&mut self, image: &MetadataImage, now_ms: i64) -> Vec<MetadataRecord> {
        let mut batch = Batch::new(image);
        let expired: Vec<(i32, i64)> = image
            .brokers
            .values()
            .filter(|b| !b.fenced && !self.session_alive(b.id, b.epoch, now_ms))
            .map(|b| (b.id, b.epoch))
            .collect();
        for (id, epoch) in expired {
            tracing::info!(broker = id, epoch, "broker session expired: fencing");
            self.fence(&mut batch, id, epoch);
            self.sessions.remove(&id);
        }
        if let Some(interval) = self.config.leader_imbalance_check_interval_ms {
            let due = *self
                .next_rebalance_ms
                .get_or_insert(now_ms.saturating_add(interval));
            if now_ms >= due {
                self.rebalance_leaders(&mut batch);
                self.next_rebalance_ms = Some(now_ms.saturating_add(interval));
            }
        }
        batch.finish(()).records
    }

    /// When `tick` next has something to do, if ever.
    pub fn next_deadline_ms(&self, image: &MetadataImage) -> Option<i64> {
        let sessions = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter_map(|b| self.sessions.get(&b.id))
            .map(|s| s.last_contact_ms + self.config.session_timeout_ms + 1)
            .min();
        // Only when there is something to move back: an idle cluster does not wake for it.
        let rebalance = self
            .next_rebalance_ms
            .filter(|_| self.leaders_imbalanced(image));
        match (sessions, rebalance) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn session_alive(&self, id: i32, epoch: i64, now_ms: i64) -> bool {
        match self.sessions.get(&id) {
            Some(s) if s.epoch == epoch => {
                now_ms - s.last_contact_ms <= self.config.session_timeout_ms
            }
            // Unknown to this controller (e.g. just activated without `activate`): give it a
            // session rather than fence it for our own ignorance.
            None => true,
            Some(_) => false,
        }
    }

    /// CreateTopics. Each topic succeeds or fails on its own; records of the successful ones
    /// come in one decision. With `validate_only`, nothing is written.
    pub fn create_topics(
        &mut self,
        image: &MetadataImage,
        requests: &[CreateTopicRequest],
        validate_only: bool,
    ) -> Decision<Vec<(String, Result<CreatedTopic, ControllerError>)>> {
        let mut batch = Batch::new(image);
        let mut replies = Vec::with_capacity(requests.len());
        let mut seen = BTreeSet::new();
        for request in requests {
            if !seen.insert(request.name.as_str()) {
                replies.push((
                    request.name.clone(),
                    Err(ControllerError::new(
                        ResponseError::InvalidRequest,
                        format!(
                            "topic {} appears more than once in the request",
                            request.name
                        ),
                    )),
                ));
                continue;
            }
            let result = self.create_topic(&mut batch, request, validate_only);
            replies.push((request.name.clone(), result));
        }
        batch.finish(replies)
    }

    fn create_topic(
        &mut self,
        batch: &mut Batch<'_>,
        request: &CreateTopicRequest,
        validate_only: bool,
    ) -> Result<CreatedTopic, ControllerError> {
        validate_topic_name(&request.name)?;
        if batch.image().topic_by_name(&request.name).is_some() {
            return Err(ControllerError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic '{}' already exists", request.name),
            ));
        }
        // '.' and '_' map to the same metric name, so Kafka refuses names equal up to them.
        let folded = request.name.replace('.', "_");
        if let Some(other) = batch
            .image()
            .topic_ids
            .keys()
            .find(|n| n.replace('.', "_") == folded)
        {
            return Err(ControllerError::new(
                ResponseError::InvalidTopicException,
                format!(
                    "topic '{}' collides with existing topic '{other}' ('.' and '_' are equivalent in metric names)",
                    request.name
                ),
            ));
        }
        let assignments = if request.assignments.is_empty() {
            let num_partitions = match request.num_partitions {
                -1 => self.config.default_num_partitions,
                n if n > 0 => n,
                n => {
                    return Err(ControllerError::new(
                        ResponseError::InvalidPartitions,
                        format!("number of partitions must be larger than 0 (got {n})"),
                    ));
                }
            };
            let rf = self.replication_factor(request.replication_factor)?;
            self.place(batch.image(), &request.name, 0, num_partitions as usize, rf)?
        } else {
            if request.num_partitions != -1 || request.replication_factor != -1 {
                return Err(ControllerError::new(
                    ResponseError::InvalidRequest,
                    "both a replica assignment and a partition count or replication factor were given",
                ));
            }
            self.check_assignment(batch.image(), &request.assignments, 0, None)?
        };
        let replication_factor = assignments.first().map_or(0, |r| r.len()) as i16;
        let created = CreatedTopic {
            topic_id: self.new_uuid(),
            num_partitions: assignments.len() as i32,
            replication_factor,
        };
        if validate_only {
            return Ok(created);
        }
        batch.push(MetadataRecord::Topic(TopicRecord {
            name: request.name.clone(),
            topic_id: created.topic_id,
        }));
        for (name, value) in &request.configs {
            batch.push(MetadataRecord::Config(ConfigRecord {
                resource_type: config_resource::TOPIC,
                resource_name: request.name.clone(),
                name: name.clone(),
                value: Some(value.clone()),
            }));
        }
        for (i, replicas) in assignments.into_iter().enumerate() {
            let record = new_partition(batch.image(), created.topic_id, i as i32, replicas);
            batch.push(MetadataRecord::Partition(record));
        }
        Ok(created)
    }

    fn replication_factor(&self, requested: i16) -> Result<usize, ControllerError> {
        let rf = match requested {
            -1 => self.config.default_replication_factor,
            n if n > 0 => n,
            n => {
                return Err(ControllerError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!("replication factor must be larger than 0 (got {n})"),
                ));
            }
        };
        if let Some(max) = self.config.max_replication_factor
            && rf > max
        {
            return Err(ControllerError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {rf} is not supported: partitions are not replicated yet (at most {max})"
                ),
            ));
        }
        Ok(rf as usize)
    }

    fn place(
        &self,
        image: &MetadataImage,
        topic: &str,
        first_partition: usize,
        count: usize,
        rf: usize,
    ) -> Result<Vec<Vec<i32>>, ControllerError> {
        let brokers: Vec<PlacementBroker> = image
            .usable_brokers()
            .map(|b| PlacementBroker {
                id: b.id,
                rack: b.rack.clone(),
            })
            .collect();
        let mut load = ClusterLoad::default();
        for t in image.topics.values() {
            for p in t.partitions.values() {
                load.add(&p.replicas);
            }
        }
        let rotation = name_hash(topic).wrapping_add(first_partition as u64);
        placement::place(&brokers, &load, count, rf, rotation).map_err(|e| match e {
            PlacementError::NotEnoughBrokers { .. } | PlacementError::ZeroReplicationFactor => {
                ControllerError::new(ResponseError::InvalidReplicationFactor, e.to_string())
            }
        })
    }

    /// Checks a manual assignment of partitions `first..`: consecutive indexes, one replication
    /// factor, distinct registered brokers, at least one usable replica each (Kafka's rule: a
    /// partition needs a replica that can lead).
    fn check_assignment(
        &self,
        image: &MetadataImage,
        assignments: &BTreeMap<i32, Vec<i32>>,
        first: i32,
        replication_factor: Option<usize>,
    ) -> Result<Vec<Vec<i32>>, ControllerError> {
        let invalid = |m: String| ControllerError::new(ResponseError::InvalidReplicaAssignment, m);
        let mut out = Vec::with_capacity(assignments.len());
        let rf = replication_factor.or_else(|| assignments.values().next().map(Vec::len));
        for (expected, (index, replicas)) in (first..).zip(assignments) {
            if *index != expected {
                return Err(invalid(format!(
                    "partitions must be numbered consecutively from {first}; found {index} where {expected} was expected"
                )));
            }
            if replicas.is_empty() || Some(replicas.len()) != rf {
                return Err(invalid(format!(
                    "partition {index} has {} replicas; every partition needs the same number, at least one",
                    replicas.len()
                )));
            }
            let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
            if distinct.len() != replicas.len() {
                return Err(invalid(format!("partition {index} lists a broker twice")));
            }
            if let Some(b) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
                return Err(invalid(format!(
                    "broker {b} of partition {index} is not registered"
                )));
            }
            if !replicas.iter().any(|b| usable(image, *b)) {
                return Err(invalid(format!(
                    "every broker of partition {index} is fenced or in controlled shutdown"
                )));
            }
            out.push(replicas.clone());
        }
        if let Some(rf) = rf {
            self.replication_factor(rf as i16)?;
        }
        Ok(out)
    }

    /// DeleteTopics.
    pub fn delete_topics(
        &self,
        image: &MetadataImage,
        topics: &[TopicRef],
    ) -> Decision<Vec<(TopicRef, Result<DeletedTopic, ControllerError>)>> {
        let mut batch = Batch::new(image);
        let mut replies = Vec::with_capacity(topics.len());
        for t in topics {
            let found = match t {
                TopicRef::Name(name) => batch.image().topic_by_name(name),
                TopicRef::Id(id) => batch.image().topics.get(id),
            }
            .map(|t| (t.name.clone(), t.id));
            let result = match found {
                Some((name, id)) => {
                    batch.push(MetadataRecord::RemoveTopic(RemoveTopicRecord {
                        topic_id: id,
                    }));
                    Ok((name, id))
                }
                None => Err(match t {
                    TopicRef::Name(name) => ControllerError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    ),
                    TopicRef::Id(id) => ControllerError::new(
                        ResponseError::UnknownTopicId,
                        format!("no topic has id {id}"),
                    ),
                }),
            };
            replies.push((t.clone(), result));
        }
        batch.finish(replies)
    }

    /// CreatePartitions: grows `topic` to `count` partitions, placed like the first ones or as
    /// `assignments` says (replica lists of the new partitions, in order).
    pub fn create_partitions(
        &self,
        image: &MetadataImage,
        topic: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<Decision<()>, ControllerError> {
        let Some(t) = image.topic_by_name(topic) else {
            return Err(ControllerError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{topic}' does not exist"),
            ));
        };
        let current = t.partitions.len() as i32;
        if count <= current {
            return Err(ControllerError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic '{topic}' has {current} partitions; the new count must be larger (got {count})"
                ),
            ));
        }
        let rf = t.partitions.values().next().map_or(1, |p| p.replicas.len());
        let new = (count - current) as usize;
        let placed = match assignments {
            None => self.place(image, topic, current as usize, new, rf)?,
            Some(a) => {
                if a.len() != new {
                    return Err(ControllerError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("{} assignments given for {new} new partitions", a.len()),
                    ));
                }
                let map = (current..).zip(a.iter().cloned()).collect();
                self.check_assignment(image, &map, current, Some(rf))?
            }
        };
        let mut batch = Batch::new(image);
        if !validate_only {
            for (i, replicas) in placed.into_iter().enumerate() {
                let record = new_partition(image, t.id, current + i as i32, replicas);
                batch.push(MetadataRecord::Partition(record));
            }
        }
        Ok(batch.finish(()))
    }

    /// AlterConfigs / IncrementalAlterConfigs (values already validated by the broker).
    pub fn alter_configs(
        &self,
        image: &MetadataImage,
        changes: &[ConfigChange],
    ) -> Result<Decision<()>, ControllerError> {
        let mut batch = Batch::new(image);
        for c in changes {
            match c.resource_type {
                config_resource::TOPIC => {
                    if image.topic_by_name(&c.resource_name).is_none() {
                        return Err(ControllerError::new(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic '{}' does not exist", c.resource_name),
                        ));
                    }
                }
                config_resource::BROKER => {}
                other => {
                    return Err(ControllerError::new(
                        ResponseError::InvalidRequest,
                        format!("config resource type {other} cannot be altered"),
                    ));
                }
            }
            batch.push(MetadataRecord::Config(ConfigRecord {
                resource_type: c.resource_type,
                resource_name: c.resource_name.clone(),
                name: c.name.clone(),
                value: c.value.clone(),
            }));
        }
        Ok(batch.finish(()))
    }

    /// AllocateProducerIds: the next block for a broker. Blocks never overlap because each one
    /// starts where the committed image says the last ended, and the answer is given only after
    /// the record is committed (a new controller sees it).
    pub fn allocate_producer_ids(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<Decision<ProducerIdBlock>, ControllerError> {
        match image.brokers.get(&broker_id) {
            Some(b) if b.epoch == broker_epoch => {}
            Some(b) => {
                return Err(ControllerError::new(
                    ResponseError::StaleBrokerEpoch,
                    format!(
                        "broker {broker_id} has epoch {}, not {broker_epoch}",
                        b.epoch
                    ),
                ));
            }
            None => {
                return Err(ControllerError::new(
                    ResponseError::BrokerIdNotRegistered,
                    format!("broker {broker_id} is not registered"),
                ));
            }
        }
        let first = image.next_producer_id;
        let Some(next) = first.checked_add(PRODUCER_ID_BLOCK_SIZE) else {
            return Err(ControllerError::new(
                ResponseError::UnknownServerError,
                "producer ids are exhausted",
            ));
        };
        Ok(Decision {
            records: vec![MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id,
                broker_epoch,
                next_producer_id: next,
            })],
            reply: ProducerIdBlock {
                first,
                size: PRODUCER_ID_BLOCK_SIZE,
            },
        })
    }

    /// AlterPartition (KIP-497): the leader of partitions proposes their new ISRs, as Kafka's
    /// `ReplicationControlManager.alterPartition` decides. A requester whose broker epoch is not
    /// its registration's fails as a whole (STALE_BROKER_EPOCH); every partition then succeeds or
    /// fails on its own, and each successful change is one PartitionChangeRecord that sets only
    /// the ISR (the leader and its epoch stay). A proposal equal to the current ISR writes
    /// nothing and answers the current state.
    pub fn alter_partition(
        &self,
        image: &MetadataImage,
        request: &AlterPartitionRequest,
    ) -> Result<Decision<AlterPartitionReply>, ControllerError> {
        match image.brokers.get(&request.broker_id) {
            Some(b) if b.epoch == request.broker_epoch => {}
            // Kafka answers an unregistered requester with STALE_BROKER_EPOCH too: to the
            // leader both mean "your registration is gone, stop acting on it".
            found => {
                return Err(ControllerError::new(
                    ResponseError::StaleBrokerEpoch,
                    match found {
                        Some(b) => format!(
                            "broker {} has epoch {}, not {}",
                            b.id, b.epoch, request.broker_epoch
                        ),
                        None => format!("broker {} is not registered", request.broker_id),
                    },
                ));
            }
        }
        let mut batch = Batch::new(image);
        let mut replies = Vec::with_capacity(request.topics.len());
        for topic in &request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            let known = batch
                .image()
                .topics
                .get(&topic.topic_id)
                .map(|t| t.name.clone());
            match known {
                None => {
                    for p in &topic.partitions {
                        partitions.push((
                            p.partition_index,
                            Err(ControllerError::new(
                                ResponseError::UnknownTopicId,
                                format!("no topic has id {}", topic.topic_id),
                            )),
                        ));
                    }
                }
                Some(name) => {
                    for p in &topic.partitions {
                        // Validated against the batch's image, so that a partition named twice
                        // is judged the second time against the first change, not past it.
                        let result =
                            alter_one(&mut batch, request.broker_id, &name, topic.topic_id, p);
                        partitions.push((p.partition_index, result));
                    }
                }
            }
            replies.push(AlterPartitionTopicReply {
                topic_id: topic.topic_id,
                partitions,
            });
        }
        Ok(batch.finish(replies))
    }

    fn unclean_allowed(&self, image: &MetadataImage, topic: &str) -> bool {
        image
            .topic_configs(topic)
            .and_then(|c| c.get(UNCLEAN_LEADER_ELECTION))
            .map_or(self.config.unclean_leader_election_enable, |v| v == "true")
    }

    /// Fences a broker: takes it out of every ISR it is in (unless it is the last member) and
    /// gives the partitions it led a new leader from their ISR, or none.
    fn fence(&self, batch: &mut Batch<'_>, broker_id: i32, epoch: i64) {
        batch.push(MetadataRecord::FenceBroker(BrokerFencingRecord {
            id: broker_id,
            epoch,
        }));
        self.remove_from_isrs_and_reelect(batch, broker_id);
    }

    /// Controlled shutdown: the same moves as fencing, the broker still registered.
    fn move_away(&self, batch: &mut Batch<'_>, broker_id: i32) {
        self.remove_from_isrs_and_reelect(batch, broker_id);
    }

    fn remove_from_isrs_and_reelect(&self, batch: &mut Batch<'_>, broker_id: i32) {
        let changes: Vec<PartitionChangeRecord> = {
            let image = batch.image();
            let mut changes = Vec::new();
            for t in image.topics.values() {
                for (index, p) in &t.partitions {
                    if !p.replicas.contains(&broker_id) {
                        continue;
                    }
                    if let Some(change) =
                        self.change_without(image, &t.name, t.id, *index, p, broker_id)
                    {
                        changes.push(change);
                    }
                }
            }
            changes
        };
        for c in changes {
            batch.push(MetadataRecord::PartitionChange(c));
        }
    }

    /// The change that takes `gone` out of a partition's leadership and ISR, if any.
    fn change_without(
        &self,
        image: &MetadataImage,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        p: &PartitionImage,
        gone: i32,
    ) -> Option<PartitionChangeRecord> {
        let in_isr = p.isr.contains(&gone);
        if p.leader != gone && !in_isr {
            return None;
        }
        let shrunk: Vec<i32> = p.isr.iter().copied().filter(|r| *r != gone).collect();
        let mut change = PartitionChangeRecord {
            topic_id,
            partition_id: index,
            isr: None,
            leader: None,
            replicas: None,
            ..Default::default()
        };
        if p.leader == gone {
            let candidate = p
                .replicas
                .iter()
                .copied()
                .find(|r| shrunk.contains(r) && usable(image, *r));
            match candidate {
                Some(leader) => {
                    change.leader = Some(leader);
                    change.isr = Some(shrunk);
                }
                None => match self.unclean_candidate(image, topic, p, gone) {
                    Some(leader) => {
                        tracing::warn!(topic, partition = index, leader, "unclean leader election");
                        change.leader = Some(leader);
                        change.isr = Some(vec![leader]);
                    }
                    None => {
                        // No in-sync replica can take over: the partition goes offline, and
                        // the ISR keeps its last member so that it, and only it, can lead
                        // again when it comes back.
                        change.leader = Some(NO_LEADER);
                        if !shrunk.is_empty() {
                            change.isr = Some(shrunk);
                        }
                    }
                },
            }
        } else if !shrunk.is_empty() {
            change.isr = Some(shrunk);
        } else {
            return None;
        }
        Some(change)
    }

    fn unclean_candidate(
        &self,
        image: &MetadataImage,
        topic: &str,
        p: &PartitionImage,
        gone: i32,
    ) -> Option<i32> {
        if !self.unclean_allowed(image, topic) {
            return None;
        }
        p.replicas
            .iter()
            .copied()
            .find(|r| *r != gone && usable(image, *r))
    }

    /// A broker came back: offline partitions whose ISR holds it get it as leader (or, where
    /// unclean election is allowed and no ISR member is usable, it anyway).
    fn elect_offline(&self, batch: &mut Batch<'_>, broker_id: i32) {
        let changes: Vec<PartitionChangeRecord> = {
            let image = batch.image();
            let mut changes = Vec::new();
            for t in image.topics.values() {
                for (index, p) in &t.partitions {
                    if p.leader != NO_LEADER || !p.replicas.contains(&broker_id) {
                        continue;
                    }
                    let clean = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|r| p.isr.contains(r) && (usable(image, *r) || *r == broker_id));
                    let change = match clean {
                        Some(leader) => Some((leader, None)),
                        None if self.unclean_allowed(image, &t.name) => {
                            Some((broker_id, Some(vec![broker_id])))
                        }
                        None => None,
                    };
                    if let Some((leader, isr)) = change {
                        changes.push(PartitionChangeRecord {
                            topic_id: t.id,
                            partition_id: *index,
                            isr,
                            leader: Some(leader),
                            replicas: None,
                            ..Default::default()
                        });
                    }
                }
            }
            changes
        };
        for c in changes {
            batch.push(MetadataRecord::PartitionChange(c));
        }
    }

    fn new_uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// One partition of an AlterPartition request: Kafka's `validateAlterPartitionData`, in its
/// order (the order decides which error a request with several faults gets), then the change.
fn alter_one(
    batch: &mut Batch<'_>,
    requester: i32,
    topic: &str,
    topic_id: Uuid,
    data: &AlterPartitionData,
) -> Result<AlteredPartition, ControllerError> {
    let index = data.partition_index;
    let image = batch.image();
    let Some(p) = image
        .topics
        .get(&topic_id)
        .and_then(|t| t.partitions.get(&index))
    else {
        return Err(ControllerError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic {topic} has no partition {index}"),
        ));
    };
    // Epochs ahead of ours mean the requester has seen metadata this controller has not: most
    // likely a newer controller exists. NOT_CONTROLLER sends the leader looking for it.
    if data.leader_epoch > p.leader_epoch || data.partition_epoch > p.partition_epoch {
        return Err(ControllerError::new(
            ResponseError::NotController,
            format!(
                "{topic}-{index}: the request's leader epoch {} / partition epoch {} are ahead of this controller's {} / {}",
                data.leader_epoch, data.partition_epoch, p.leader_epoch, p.partition_epoch
            ),
        ));
    }
    if data.leader_epoch < p.leader_epoch {
        return Err(ControllerError::new(
            ResponseError::FencedLeaderEpoch,
            format!(
                "{topic}-{index}: leader epoch {} is older than the current {}",
                data.leader_epoch, p.leader_epoch
            ),
        ));
    }
    if requester != p.leader {
        return Err(ControllerError::new(
            ResponseError::InvalidRequest,
            format!(
                "{topic}-{index}: broker {requester} is not the leader (the leader is {})",
                p.leader
            ),
        ));
    }
    if data.partition_epoch < p.partition_epoch {
        return Err(ControllerError::new(
            ResponseError::InvalidUpdateVersion,
            format!(
                "{topic}-{index}: partition epoch {} is older than the current {}",
                data.partition_epoch, p.partition_epoch
            ),
        ));
    }
    let new_isr: Vec<i32> = data
        .new_isr_with_epochs
        .iter()
        .map(|m| m.broker_id)
        .collect();
    let invalid = |m: String| Err(ControllerError::new(ResponseError::InvalidRequest, m));
    let distinct: BTreeSet<i32> = new_isr.iter().copied().collect();
    if distinct.len() != new_isr.len() || !new_isr.iter().all(|r| p.replicas.contains(r)) {
        return invalid(format!(
            "{topic}-{index}: the proposed ISR {new_isr:?} is not a set of the replicas {:?}",
            p.replicas
        ));
    }
    // This also refuses an empty ISR: the leader is always a member.
    if !new_isr.contains(&p.leader) {
        return invalid(format!(
            "{topic}-{index}: the proposed ISR {new_isr:?} does not include the leader {}",
            p.leader
        ));
    }
    // This controller never records an unclean election as RECOVERING (KIP-704), so every
    // leader is RECOVERED here, and Kafka refuses a change from RECOVERED to RECOVERING.
    match data.leader_recovery_state {
        LEADER_RECOVERED => {}
        LEADER_RECOVERING => {
            return invalid(format!(
                "{topic}-{index}: the leader recovery state cannot go from RECOVERED to RECOVERING"
            ));
        }
        other => {
            return invalid(format!(
                "{topic}-{index}: unknown leader recovery state {other}"
            ));
        }
    }
    // KIP-841 and KIP-903, for every proposed member as Kafka checks them (not only those
    // joining): a fenced or departing broker may not be in sync, and an epoch from a broker's
    // previous life says nothing about the log its current one has.
    let ineligible: Vec<String> = data
        .new_isr_with_epochs
        .iter()
        .filter_map(|m| {
            let why = match image.brokers.get(&m.broker_id) {
                None => "not registered".to_string(),
                Some(b) if b.in_controlled_shutdown => "shutting down".to_string(),
                Some(b) if b.fenced => "fenced".to_string(),
                Some(b) if m.broker_epoch != -1 && m.broker_epoch != b.epoch => format!(
                    "broker epoch {} given, {} registered",
                    m.broker_epoch, b.epoch
                ),
                Some(_) => return None,
            };
            Some(format!("{} ({why})", m.broker_id))
        })
        .collect();
    if !ineligible.is_empty() {
        return Err(ControllerError::new(
            ResponseError::IneligibleReplica,
            format!(
                "{topic}-{index}: ineligible replicas in the proposed ISR: {}",
                ineligible.join(", ")
            ),
        ));
    }
    // Kafka compares ISRs as lists: a reordering is a change, a repetition is not.
    if new_isr == p.isr {
        return Ok(altered(p));
    }
    batch.push(MetadataRecord::PartitionChange(PartitionChangeRecord {
        topic_id,
        partition_id: index,
        isr: Some(new_isr),
        leader: None,
        replicas: None,
        ..Default::default()
    }));
    // An ISR that now holds every replica a reassignment adds completes it, in the same batch,
    // so that the answer tells the leader the final state.
    moves::maybe_complete_reassignment(batch, topic_id, index);
    // The scratch image has the change applied: it says what the committed image will.
    batch
        .image()
        .topics
        .get(&topic_id)
        .and_then(|t| t.partitions.get(&index))
        .map(altered)
        .ok_or_else(|| {
            ControllerError::new(
                ResponseError::UnknownServerError,
                format!("{topic}-{index} vanished while its ISR changed"),
            )
        })
}

fn altered(p: &PartitionImage) -> AlteredPartition {
    AlteredPartition {
        leader_id: p.leader,
        leader_epoch: p.leader_epoch,
        isr: p.isr.clone(),
        leader_recovery_state: LEADER_RECOVERED,
        partition_epoch: p.partition_epoch,
    }
}

fn usable(image: &MetadataImage, broker_id: i32) -> bool {
    image.brokers.get(&broker_id).is_some_and(|b| b.is_usable())
}

/// A new partition: the ISR is every usable replica, the leader the first of them, as Kafka's
/// `buildPartitionRegistration`. A broker that is fenced or in controlled shutdown neither
/// joins the ISR nor leads (KIP-841): it would take the partition down with it.
fn new_partition(
    image: &MetadataImage,
    topic_id: Uuid,
    partition_id: i32,
    replicas: Vec<i32>,
) -> PartitionRecord {
    let isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|r| usable(image, *r))
        .collect();
    // Callers refuse assignments without a usable replica; NO_LEADER only guards the rule.
    let leader = isr.first().copied().unwrap_or(NO_LEADER);
    PartitionRecord {
        topic_id,
        partition_id,
        replicas,
        isr,
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
        ..PartitionRecord::default()
    }
}

/// Kafka's topic name rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let bad = |m: String| ControllerError::new(ResponseError::InvalidTopicException, m);
    if name.is_empty() {
        return Err(bad("topic name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(bad(format!("topic name cannot be '{name}'")));
    }
    if name.len() > 249 {
        return Err(bad(format!(
            "topic name is {} characters long; the maximum is 249",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(format!(
            "topic name '{name}' contains '{c}'; legal characters are ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// FNV-1a: a stable hash of a topic name (std's hasher may change between releases, and
/// placement must not).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Records being decided, applied as they are pushed to a private copy of the image, so that
/// a decision of several steps (fence two brokers, create a topic after another) reads its own
/// earlier steps. The copy is made at the first push.
struct Batch<'a> {
    base: &'a MetadataImage,
    scratch: Option<MetadataImage>,
    records: Vec<MetadataRecord>,
}

impl<'a> Batch<'a> {
    fn new(base: &'a MetadataImage) -> Self {
        Batch {
            base,
            scratch: None,
            records: Vec::new(),
        }
    }

    fn image(&self) -> &MetadataImage {
        self.scratch.as_ref().unwrap_or(self.base)
    }

    fn push(&mut self, record: MetadataRecord) {
        let offset = self.base.offset.map_or(0, |o| o + 1);
        let scratch = self.scratch.get_or_insert_with(|| self.base.clone());
        // Decisions are built from the image they are applied to, so they fit it; a misfit is a
        // bug in this module, and the committed image will report it when the record is applied.
        if let Err(e) = scratch.apply(offset, &record) {
            tracing::error!(error = %e, "controller decided a record that does not fit its image");
        }
        self.records.push(record);
    }

    fn finish<T>(self, reply: T) -> Decision<T> {
        Decision {
            records: self.records,
            reply,
        }
    }
}

mod moves;
pub use moves::{
    ElectionType, OngoingReassignment, PartitionResults, ReassignPartition, TopicPartitions,
    list_reassignments,
};

#[cfg(test)]
mod tests;
