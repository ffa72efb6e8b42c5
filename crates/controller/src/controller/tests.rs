//! The controller driven by a fake clock: every decision is committed (applied to the image at
//! the next offset) before the next call, as the raft shell does.

use super::*;
use crate::records::BrokerEndpoint;

struct Harness {
    ctl: Controller,
    image: MetadataImage,
    now_ms: i64,
}

impl Harness {
    fn new(config: ControllerConfig) -> Self {
        Harness {
            ctl: Controller::new(config),
            image: MetadataImage::default(),
            now_ms: 1_000,
        }
    }

    fn replicated() -> Self {
        Harness::new(ControllerConfig {
            max_replication_factor: None,
            ..ControllerConfig::default()
        })
    }

    /// Appends the records as one log entry; returns its offset.
    fn commit(&mut self, records: &[MetadataRecord]) -> u64 {
        let offset = self.image.offset.map_or(0, |o| o + 1);
        self.image
            .apply_batch(offset, records)
            .expect("the controller's records fit the image");
        offset
    }

    fn advance(&mut self, ms: i64) {
        self.now_ms += ms;
    }

    /// Registers and unfences a broker; returns its epoch.
    fn join(&mut self, id: i32, rack: Option<&str>) -> i64 {
        let epoch = self.register(id, Uuid::from_u128(id as u128 + 1), rack);
        let reply = self.heartbeat(id, epoch, false, false).expect("heartbeat");
        assert!(!reply.is_fenced, "broker {id} caught up but stayed fenced");
        epoch
    }

    fn register(&mut self, id: i32, incarnation: Uuid, rack: Option<&str>) -> i64 {
        let d = self
            .ctl
            .register_broker(
                &self.image,
                BrokerRegistrationRequest {
                    broker_id: id,
                    incarnation_id: incarnation,
                    listeners: vec![BrokerEndpoint {
                        name: "PLAINTEXT".into(),
                        host: "127.0.0.1".into(),
                        port: 9092 + id as u16,
                        security_protocol: 0,
                    }],
                    rack: rack.map(str::to_string),
                },
                self.now_ms,
            )
            .expect("registration");
        let offset = self.commit(&d.records);
        self.ctl.registration_committed(id, offset, self.now_ms);
        assert_eq!(self.image.brokers[&id].epoch, offset as i64);
        offset as i64
    }

    fn heartbeat(
        &mut self,
        id: i32,
        epoch: i64,
        want_fence: bool,
        want_shutdown: bool,
    ) -> Result<HeartbeatReply, ControllerError> {
        let request = BrokerHeartbeatRequest {
            broker_id: id,
            broker_epoch: epoch,
            current_metadata_offset: self.image.offset.map_or(-1, |o| o as i64),
            want_fence,
            want_shutdown,
        };
        let d = self.ctl.heartbeat(&self.image, &request, self.now_ms)?;
        if !d.records.is_empty() {
            self.commit(&d.records);
        }
        Ok(d.reply)
    }

    fn tick(&mut self) -> usize {
        let records = self.ctl.tick(&self.image, self.now_ms);
        if !records.is_empty() {
            self.commit(&records);
        }
        records.len()
    }

    fn create(&mut self, name: &str, partitions: i32, rf: i16) -> Result<Uuid, ControllerError> {
        let d = self.ctl.create_topics(
            &self.image,
            &[CreateTopicRequest {
                name: name.into(),
                num_partitions: partitions,
                replication_factor: rf,
                assignments: BTreeMap::new(),
                configs: Vec::new(),
            }],
            false,
        );
        if !d.records.is_empty() {
            self.commit(&d.records);
        }
        let (_, result) = d.reply.into_iter().next().expect("one reply");
        result.map(|c| c.topic_id)
    }

    fn partition(&self, topic: &str, index: i32) -> &PartitionImage {
        &self.image.topic_by_name(topic).expect("topic").partitions[&index]
    }

    fn topic_id(&self, topic: &str) -> Uuid {
        self.image.topic_by_name(topic).expect("topic").id
    }

    fn epoch(&self, broker: i32) -> i64 {
        self.image.brokers[&broker].epoch
    }

    /// What a leader in sync with the image proposes: the partition's current epochs and
    /// `isr`, each member with its registered epoch.
    fn proposal(&self, topic: &str, index: i32, isr: &[i32]) -> AlterPartitionData {
        let p = self.partition(topic, index);
        AlterPartitionData {
            partition_index: index,
            leader_epoch: p.leader_epoch,
            new_isr_with_epochs: isr
                .iter()
                .map(|b| IsrMember {
                    broker_id: *b,
                    broker_epoch: self.image.brokers.get(b).map_or(-1, |r| r.epoch),
                })
                .collect(),
            leader_recovery_state: LEADER_RECOVERED,
            partition_epoch: p.partition_epoch,
        }
    }

    /// Sends one partition's proposal from `broker` (with its registered epoch); commits what
    /// the controller decided and returns that partition's answer.
    fn alter(
        &mut self,
        broker: i32,
        topic: &str,
        data: AlterPartitionData,
    ) -> Result<AlteredPartition, ControllerError> {
        let request = AlterPartitionRequest {
            broker_id: broker,
            broker_epoch: self.epoch(broker),
            topics: vec![AlterPartitionTopic {
                topic_id: self.topic_id(topic),
                partitions: vec![data],
            }],
        };
        let d = self
            .ctl
            .alter_partition(&self.image, &request)
            .expect("the requester's epoch is current");
        let mut reply = d.reply;
        assert_eq!(reply.len(), 1);
        let mut partitions = reply.remove(0).partitions;
        assert_eq!(partitions.len(), 1);
        let (_, result) = partitions.remove(0);
        // One record for an ISR change, two when it also completes a reassignment; none for a
        // refusal.
        assert!(
            d.records.len() <= 1 + usize::from(result.is_ok())
                && (result.is_ok() || d.records.is_empty()),
            "{} records for {result:?}",
            d.records.len()
        );
        if !d.records.is_empty() {
            self.commit(&d.records);
        }
        result
    }

    /// Three unfenced brokers and topic "t" of one partition on all three; returns its leader
    /// and its two followers.
    fn three_replicas() -> (Harness, i32, [i32; 2]) {
        let mut h = Harness::replicated();
        for id in 1..=3 {
            h.join(id, None);
        }
        h.create("t", 1, 3).expect("create");
        let p = h.partition("t", 0);
        assert_eq!(p.isr.len(), 3);
        let leader = p.leader;
        let followers: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != leader)
            .collect();
        (h, leader, [followers[0], followers[1]])
    }
}

fn code(result: Result<AlteredPartition, ControllerError>) -> ResponseError {
    result.expect_err("refused").error
}

#[test]
fn a_broker_registers_fenced_and_is_unfenced_once_caught_up() {
    let mut h = Harness::new(ControllerConfig::default());
    let epoch = h.register(1, Uuid::from_u128(7), None);
    assert!(
        h.image.brokers[&1].fenced,
        "a new registration starts fenced"
    );

    // A heartbeat from behind the registration does not unfence.
    let d = h
        .ctl
        .heartbeat(
            &h.image,
            &BrokerHeartbeatRequest {
                broker_id: 1,
                broker_epoch: epoch,
                current_metadata_offset: epoch - 1,
                want_fence: false,
                want_shutdown: false,
            },
            h.now_ms,
        )
        .expect("heartbeat");
    assert!(d.records.is_empty());
    assert!(!d.reply.is_caught_up && d.reply.is_fenced);

    let reply = h.heartbeat(1, epoch, false, false).expect("heartbeat");
    assert!(reply.is_caught_up && !reply.is_fenced);
    assert!(!h.image.brokers[&1].fenced);
}

#[test]
fn a_live_duplicate_registration_is_refused_and_a_dead_one_replaced() {
    let mut h = Harness::new(ControllerConfig::default());
    let first = h.join(1, None);
    let err = h
        .ctl
        .register_broker(
            &h.image,
            BrokerRegistrationRequest {
                broker_id: 1,
                incarnation_id: Uuid::from_u128(99),
                listeners: Vec::new(),
                rack: None,
            },
            h.now_ms,
        )
        .expect_err("a second live incarnation must be refused");
    assert_eq!(
        err.code(),
        ResponseError::DuplicateBrokerRegistration.code()
    );

    // The same incarnation re-registering (a restart that kept its id) is accepted.
    let again = h.register(1, Uuid::from_u128(2), None);
    assert!(again > first);

    // Once the session expires, another incarnation may take the id.
    h.advance(9_001);
    h.tick();
    let third = h.register(1, Uuid::from_u128(99), None);
    assert!(third > again);
    assert_eq!(h.image.brokers[&1].incarnation_id, Uuid::from_u128(99));
    // The old epoch is stale now.
    let err = h
        .heartbeat(1, again, false, false)
        .expect_err("stale epoch");
    assert_eq!(err.code(), ResponseError::StaleBrokerEpoch.code());
}

#[test]
fn the_broker_in_the_controllers_own_process_replaces_its_old_incarnation_at_once() {
    // A combined node killed and restarted: its new incarnation registers with the new
    // controller in the same process, which knows the old one is gone.
    let mut h = Harness::new(ControllerConfig {
        local_broker_id: Some(1),
        ..ControllerConfig::default()
    });
    let first = h.join(1, None);
    h.join(2, None);
    let again = h.register(1, Uuid::from_u128(77), None);
    assert!(again > first);
    assert_eq!(h.image.brokers[&1].incarnation_id, Uuid::from_u128(77));
    // Another node's live registration is still protected.
    let err = h
        .ctl
        .register_broker(
            &h.image,
            BrokerRegistrationRequest {
                broker_id: 2,
                incarnation_id: Uuid::from_u128(78),
                listeners: Vec::new(),
                rack: None,
            },
            h.now_ms,
        )
        .expect_err("broker 2 is alive elsewhere");
    assert_eq!(
        err.code(),
        ResponseError::DuplicateBrokerRegistration.code()
    );
}

#[test]
fn heartbeats_of_unknown_brokers_are_refused() {
    let mut h = Harness::new(ControllerConfig::default());
    let err = h.heartbeat(5, 0, false, false).expect_err("not registered");
    assert_eq!(err.code(), ResponseError::BrokerIdNotRegistered.code());
}

#[test]
fn a_broker_is_fenced_after_the_session_timeout_and_not_before() {
    let mut h = Harness::new(ControllerConfig::default());
    let e1 = h.join(1, None);
    let _e2 = h.join(2, None);
    h.create("t", 4, 1).expect("create");
    let led_by_2 = h.image.partitions_led_by(2).len();
    assert!(led_by_2 > 0);

    // Broker 1 keeps heartbeating; broker 2 goes silent.
    for _ in 0..9 {
        h.advance(1_000);
        h.heartbeat(1, e1, false, false).expect("heartbeat");
        assert_eq!(h.tick(), 0, "nobody's session has expired yet");
    }
    assert_eq!(h.ctl.next_deadline_ms(&h.image), Some(1_000 + 9_001));
    h.advance(1);
    h.heartbeat(1, e1, false, false).expect("heartbeat");
    assert!(h.tick() > 0, "broker 2's session is over");
    assert!(h.image.brokers[&2].fenced);
    assert!(!h.image.brokers[&1].fenced);
    // RF 1: broker 2's partitions have no other replica and go offline, keeping their ISR.
    for (topic_id, index) in h.image.partitions_on(2) {
        let p = &h.image.topics[&topic_id].partitions[&index];
        assert_eq!(p.leader, NO_LEADER);
        assert_eq!(p.isr, vec![2]);
    }
}

#[test]
fn the_deadline_is_the_oldest_session_plus_the_timeout() {
    let mut h = Harness::new(ControllerConfig::default());
    let start = h.now_ms;
    h.join(1, None);
    h.advance(500);
    h.join(2, None);
    assert_eq!(h.ctl.next_deadline_ms(&h.image), Some(start + 9_001));
    h.advance(9_000);
    assert_eq!(h.tick(), 1, "only broker 1 is past its session");
    assert!(h.image.brokers[&1].fenced && !h.image.brokers[&2].fenced);
}

#[test]
fn a_fenced_broker_that_comes_back_leads_its_offline_partitions_again() {
    let mut h = Harness::new(ControllerConfig::default());
    h.join(1, None);
    h.create("t", 3, 1).expect("create");
    h.advance(10_000);
    h.tick();
    assert!(h.image.brokers[&1].fenced);
    assert!((0..3).all(|i| h.partition("t", i).leader == NO_LEADER));
    let epoch_before = h.partition("t", 0).leader_epoch;

    // It restarts: same incarnation, new registration, then caught up.
    let epoch = h.register(1, Uuid::from_u128(2), None);
    h.heartbeat(1, epoch, false, false).expect("heartbeat");
    for i in 0..3 {
        let p = h.partition("t", i);
        assert_eq!(p.leader, 1);
        assert!(
            p.leader_epoch > epoch_before,
            "a new leadership bumps the epoch"
        );
    }
}

#[test]
fn failover_elects_only_from_the_isr() {
    let mut h = Harness::replicated();
    for id in 1..=3 {
        h.join(id, None);
    }
    h.create("t", 1, 3).expect("create");
    let p = h.partition("t", 0).clone();
    let leader = p.leader;
    let others: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != leader)
        .collect();
    // One follower falls out of the ISR (as AlterPartition would record).
    let topic_id = h.image.topic_by_name("t").expect("topic").id;
    let lagging = others[0];
    let in_sync = others[1];
    h.commit(&[MetadataRecord::PartitionChange(PartitionChangeRecord {
        topic_id,
        partition_id: 0,
        isr: Some(vec![leader, in_sync]),
        leader: None,
        replicas: None,
        ..Default::default()
    })]);

    let leader_epoch = h.image.brokers[&leader].epoch;
    h.heartbeat(leader, leader_epoch, true, false)
        .expect("fence");
    let p = h.partition("t", 0);
    assert_eq!(p.leader, in_sync, "the new leader comes from the ISR");
    assert_eq!(p.isr, vec![in_sync]);

    // Now the last in-sync replica goes too: the lagging replica must not be elected.
    let e = h.image.brokers[&in_sync].epoch;
    h.heartbeat(in_sync, e, true, false).expect("fence");
    let p = h.partition("t", 0);
    assert_eq!(
        p.leader, NO_LEADER,
        "no clean candidate: offline, not {lagging}"
    );
    assert_eq!(p.isr, vec![in_sync]);

    // When the in-sync replica comes back, it alone leads again.
    let e = h.register(in_sync, Uuid::from_u128(in_sync as u128 + 1), None);
    h.heartbeat(in_sync, e, false, false).expect("heartbeat");
    assert_eq!(h.partition("t", 0).leader, in_sync);
}

#[test]
fn unclean_election_picks_an_out_of_sync_replica_only_when_enabled() {
    for (enabled, topic_config) in [(false, None), (true, None), (false, Some("true"))] {
        let mut h = Harness::new(ControllerConfig {
            max_replication_factor: None,
            unclean_leader_election_enable: enabled,
            ..ControllerConfig::default()
        });
        h.join(1, None);
        h.join(2, None);
        let d = h.ctl.create_topics(
            &h.image,
            &[CreateTopicRequest {
                name: "t".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: BTreeMap::from([(0, vec![1, 2])]),
                configs: topic_config
                    .map(|v| vec![(UNCLEAN_LEADER_ELECTION.to_string(), v.to_string())])
                    .unwrap_or_default(),
            }],
            false,
        );
        assert!(d.reply[0].1.is_ok());
        h.commit(&d.records);
        let topic_id = h.image.topic_by_name("t").expect("topic").id;
        h.commit(&[MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id,
            partition_id: 0,
            isr: Some(vec![1]),
            leader: None,
            replicas: None,
            ..Default::default()
        })]);
        let e = h.image.brokers[&1].epoch;
        h.heartbeat(1, e, true, false).expect("fence");
        let p = h.partition("t", 0);
        if enabled || topic_config.is_some() {
            assert_eq!(p.leader, 2, "unclean election allowed");
            assert_eq!(p.isr, vec![2]);
        } else {
            assert_eq!(p.leader, NO_LEADER);
            assert_eq!(p.isr, vec![1]);
        }
    }
}

#[test]
fn controlled_shutdown_moves_leaderships_then_lets_the_broker_go() {
    let mut h = Harness::replicated();
    for id in 1..=3 {
        h.join(id, None);
    }
    h.create("t", 6, 3).expect("create");
    let e2 = h.image.brokers[&2].epoch;
    assert!(!h.image.partitions_led_by(2).is_empty());
    let reply = h.heartbeat(2, e2, false, true).expect("shutdown");
    assert!(reply.should_shutdown && reply.is_fenced);
    assert!(h.image.partitions_led_by(2).is_empty());
    for i in 0..6 {
        let p = h.partition("t", i);
        assert_ne!(p.leader, NO_LEADER);
        assert!(!p.isr.contains(&2));
    }
    // While broker 2 is gone, new topics are placed on the others only.
    h.create("u", 4, 2).expect("create");
    for i in 0..4 {
        assert!(!h.partition("u", i).replicas.contains(&2));
    }
}

#[test]
fn controlled_shutdown_of_a_sole_replica_takes_its_partitions_offline() {
    let mut h = Harness::new(ControllerConfig::default());
    let e = h.join(1, None);
    h.create("t", 2, 1).expect("create");
    let reply = h.heartbeat(1, e, false, true).expect("shutdown");
    assert!(reply.should_shutdown);
    assert!((0..2).all(|i| h.partition("t", i).leader == NO_LEADER));
}

#[test]
fn a_thousand_partitions_are_spread_evenly_over_racks() {
    let mut h = Harness::replicated();
    let racks = ["a", "b", "c", "a", "b"];
    for (i, rack) in racks.iter().enumerate() {
        h.join(i as i32 + 1, Some(rack));
    }
    h.create("big", 1000, 3).expect("create");
    let topic = h.image.topic_by_name("big").expect("topic");
    assert_eq!(topic.partitions.len(), 1000);
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    let mut replicas: BTreeMap<i32, usize> = BTreeMap::new();
    for p in topic.partitions.values() {
        let distinct: BTreeSet<i32> = p.replicas.iter().copied().collect();
        assert_eq!(distinct.len(), 3);
        let rack_set: BTreeSet<&str> = p
            .replicas
            .iter()
            .map(|r| racks[(*r - 1) as usize])
            .collect();
        assert_eq!(rack_set.len(), 3, "one replica per rack: {:?}", p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
        assert_eq!(p.isr, p.replicas);
        *leaders.entry(p.leader).or_default() += 1;
        for r in &p.replicas {
            *replicas.entry(*r).or_default() += 1;
        }
    }
    let spread = |m: &BTreeMap<i32, usize>| {
        m.values().max().copied().unwrap_or(0) - m.values().min().copied().unwrap_or(0)
    };
    assert_eq!(leaders.len(), 5);
    assert!(spread(&leaders) <= 1, "leaders: {leaders:?}");
    // Rack awareness constrains replica counts (racks a and b have two brokers each, c one),
    // so the single broker of rack c carries one replica of every partition.
    assert_eq!(replicas[&3], 1000);
    assert!(
        replicas[&1].abs_diff(replicas[&4]) <= 1 && replicas[&2].abs_diff(replicas[&5]) <= 1,
        "replicas within a rack are balanced: {replicas:?}"
    );
}

#[test]
fn topic_creation_validates_and_refuses_what_it_cannot_serve() {
    let mut h = Harness::new(ControllerConfig::default());
    h.join(1, None);
    h.join(2, None);
    let err = h.create("t", 1, 2).expect_err("rf 2 is not served yet");
    assert_eq!(err.code(), ResponseError::InvalidReplicationFactor.code());
    let err = h.create("t", 0, 1).expect_err("zero partitions");
    assert_eq!(err.code(), ResponseError::InvalidPartitions.code());
    let err = h.create("bad/name", 1, 1).expect_err("bad name");
    assert_eq!(err.code(), ResponseError::InvalidTopicException.code());
    let id = h.create("t", -1, -1).expect("defaults");
    assert_eq!(h.image.topics[&id].partitions.len(), 1);
    let err = h.create("t", 1, 1).expect_err("exists");
    assert_eq!(err.code(), ResponseError::TopicAlreadyExists.code());

    let mut r = Harness::replicated();
    r.join(1, None);
    let err = r
        .create("t", 1, 2)
        .expect_err("one broker cannot hold two replicas");
    assert_eq!(err.code(), ResponseError::InvalidReplicationFactor.code());
}

#[test]
fn validate_only_writes_nothing() {
    let mut h = Harness::new(ControllerConfig::default());
    h.join(1, None);
    let d = h.ctl.create_topics(
        &h.image,
        &[CreateTopicRequest {
            name: "t".into(),
            num_partitions: 3,
            replication_factor: 1,
            assignments: BTreeMap::new(),
            configs: Vec::new(),
        }],
        true,
    );
    assert!(d.records.is_empty());
    let created = d.reply[0].1.as_ref().expect("valid");
    assert_eq!(created.num_partitions, 3);
}

#[test]
fn deletion_and_partition_increase() {
    let mut h = Harness::new(ControllerConfig::default());
    h.join(1, None);
    h.join(2, None);
    let id = h.create("t", 2, 1).expect("create");
    let d = h
        .ctl
        .create_partitions(&h.image, "t", 5, None, false)
        .expect("grow");
    h.commit(&d.records);
    assert_eq!(h.image.topics[&id].partitions.len(), 5);
    let err = h
        .ctl
        .create_partitions(&h.image, "t", 5, None, false)
        .expect_err("not larger");
    assert_eq!(err.code(), ResponseError::InvalidPartitions.code());
    let err = h
        .ctl
        .create_partitions(&h.image, "t", 6, Some(&[vec![9]]), false)
        .expect_err("unknown broker");
    assert_eq!(err.code(), ResponseError::InvalidReplicaAssignment.code());

    let d = h.ctl.delete_topics(
        &h.image,
        &[TopicRef::Id(id), TopicRef::Name("missing".into())],
    );
    assert!(d.reply[0].1.is_ok());
    assert_eq!(
        d.reply[1].1.as_ref().expect_err("missing").code(),
        ResponseError::UnknownTopicOrPartition.code()
    );
    h.commit(&d.records);
    assert!(h.image.topic_by_name("t").is_none());
}

#[test]
fn configs_are_recorded_and_removed() {
    let mut h = Harness::new(ControllerConfig::default());
    h.join(1, None);
    h.create("t", 1, 1).expect("create");
    let change = |value: Option<&str>| ConfigChange {
        resource_type: config_resource::TOPIC,
        resource_name: "t".into(),
        name: "retention.ms".into(),
        value: value.map(str::to_string),
    };
    let d = h
        .ctl
        .alter_configs(&h.image, &[change(Some("1000"))])
        .expect("alter");
    h.commit(&d.records);
    assert_eq!(
        h.image
            .topic_configs("t")
            .and_then(|c| c.get("retention.ms")),
        Some(&"1000".to_string())
    );
    let d = h
        .ctl
        .alter_configs(&h.image, &[change(None)])
        .expect("alter");
    h.commit(&d.records);
    assert!(
        h.image
            .topic_configs("t")
            .is_none_or(|c| !c.contains_key("retention.ms"))
    );
    let mut missing = change(Some("1"));
    missing.resource_name = "nope".into();
    let err = h
        .ctl
        .alter_configs(&h.image, &[missing])
        .expect_err("unknown topic");
    assert_eq!(err.code(), ResponseError::UnknownTopicOrPartition.code());
}

/// Producer-id blocks across a failover: the new controller starts from the committed image
/// only (a fresh `Controller`), and an allocation whose record never committed is never
/// handed out, so no two handed-out blocks overlap.
#[test]
fn producer_id_blocks_never_overlap_across_failover() {
    let mut h = Harness::new(ControllerConfig::default());
    let e1 = h.join(1, None);
    let e2 = h.join(2, None);
    let mut handed_out: Vec<ProducerIdBlock> = Vec::new();
    for round in 0..20 {
        for (id, epoch) in [(1, e1), (2, e2)] {
            let d = h
                .ctl
                .allocate_producer_ids(&h.image, id, epoch)
                .expect("allocate");
            if round % 3 == 2 && id == 2 {
                // The controller fails before this record commits: the block is never
                // answered, and a new controller takes over from the committed image.
                h.ctl = Controller::new(ControllerConfig::default());
                h.ctl.activate(&h.image, h.now_ms);
                continue;
            }
            h.commit(&d.records);
            handed_out.push(d.reply);
        }
    }
    handed_out.sort_by_key(|b| b.first);
    for pair in handed_out.windows(2) {
        assert!(
            pair[0].first + pair[0].size <= pair[1].first,
            "blocks overlap: {pair:?}"
        );
    }
    assert!(handed_out.iter().all(|b| b.size == PRODUCER_ID_BLOCK_SIZE));
    let err = h
        .ctl
        .allocate_producer_ids(&h.image, 1, e1 + 1000)
        .expect_err("stale epoch");
    assert_eq!(err.code(), ResponseError::StaleBrokerEpoch.code());
}

#[test]
fn a_new_controller_gives_every_broker_a_full_session() {
    let mut h = Harness::new(ControllerConfig::default());
    h.join(1, None);
    h.advance(8_000);
    // Failover: the new controller has never heard from broker 1.
    h.ctl = Controller::new(ControllerConfig::default());
    h.ctl.activate(&h.image, h.now_ms);
    h.advance(8_000);
    assert_eq!(h.tick(), 0, "8 s since the new controller started");
    h.advance(1_001);
    assert!(h.tick() > 0);
    assert!(h.image.brokers[&1].fenced);
}

#[test]
fn topic_names_follow_kafkas_rules() {
    for ok in ["a", "a.b_c-D9", &"x".repeat(249)] {
        assert!(validate_topic_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
        assert!(validate_topic_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn alter_partition_shrinks_the_isr_without_touching_the_leader_or_its_epoch() {
    let (mut h, leader, [lagging, in_sync]) = Harness::three_replicas();
    let before = h.partition("t", 0).clone();
    let data = h.proposal("t", 0, &[leader, in_sync]);
    let reply = h.alter(leader, "t", data).expect("shrink");
    let after = h.partition("t", 0);
    assert_eq!(after.isr, vec![leader, in_sync]);
    assert!(!after.isr.contains(&lagging));
    assert_eq!(after.leader, leader);
    assert_eq!(
        after.leader_epoch, before.leader_epoch,
        "an ISR change keeps the leader epoch"
    );
    assert_eq!(after.partition_epoch, before.partition_epoch + 1);
    assert_eq!(after.replicas, before.replicas);
    assert_eq!(
        reply,
        AlteredPartition {
            leader_id: leader,
            leader_epoch: before.leader_epoch,
            isr: vec![leader, in_sync],
            leader_recovery_state: LEADER_RECOVERED,
            partition_epoch: before.partition_epoch + 1,
        },
        "the answer is the state once committed"
    );

    // Down to the leader alone: min.insync.replicas is the leader's business, not ours.
    let data = h.proposal("t", 0, &[leader]);
    h.alter(leader, "t", data).expect("shrink to the leader");
    assert_eq!(h.partition("t", 0).isr, vec![leader]);
}

#[test]
fn alter_partition_expands_with_current_or_unknown_broker_epochs() {
    let (mut h, leader, [a, b]) = Harness::three_replicas();
    let data = h.proposal("t", 0, &[leader]);
    h.alter(leader, "t", data).expect("shrink");

    let data = h.proposal("t", 0, &[leader, a]);
    let reply = h
        .alter(leader, "t", data)
        .expect("expand with the registered epoch");
    assert_eq!(reply.isr, vec![leader, a]);

    // -1: the leader does not know the follower's epoch (an older fetcher); not checked.
    let mut data = h.proposal("t", 0, &[leader, a, b]);
    data.new_isr_with_epochs[2].broker_epoch = -1;
    let reply = h
        .alter(leader, "t", data)
        .expect("expand with an unknown epoch");
    assert_eq!(reply.isr, vec![leader, a, b]);
    assert_eq!(h.partition("t", 0).isr, vec![leader, a, b]);
    assert_eq!(h.partition("t", 0).partition_epoch, reply.partition_epoch);
}

#[test]
fn alter_partition_refuses_ineligible_replicas() {
    // Fenced (KIP-841).
    let (mut h, leader, [a, b]) = Harness::three_replicas();
    let e = h.epoch(a);
    h.heartbeat(a, e, true, false).expect("fence");
    assert!(!h.partition("t", 0).isr.contains(&a), "fencing took it out");
    let data = h.proposal("t", 0, &[leader, a, b]);
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::IneligibleReplica
    );

    // In controlled shutdown (KIP-841).
    let (mut h, leader, [a, b]) = Harness::three_replicas();
    let e = h.epoch(a);
    let reply = h.heartbeat(a, e, false, true).expect("shutdown");
    assert!(reply.should_shutdown);
    assert!(h.image.brokers[&a].in_controlled_shutdown);
    let data = h.proposal("t", 0, &[leader, a, b]);
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::IneligibleReplica
    );
    // Also while still unfenced in its shutdown, as Kafka keeps brokers for a while.
    let (mut h, leader, [a, b]) = Harness::three_replicas();
    let data = h.proposal("t", 0, &[leader, b]);
    h.alter(leader, "t", data).expect("shrink");
    h.commit(&[MetadataRecord::BrokerRegistrationChange(
        BrokerRegistrationChangeRecord {
            broker_id: a,
            broker_epoch: h.epoch(a),
            fenced: None,
            in_controlled_shutdown: Some(true),
        },
    )]);
    let data = h.proposal("t", 0, &[leader, a, b]);
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::IneligibleReplica
    );

    // A broker epoch of a previous life (KIP-903): the follower restarted, and the fetch the
    // leader judged came from before. Its new epoch is accepted.
    let (mut h, leader, [a, b]) = Harness::three_replicas();
    let old = h.epoch(a);
    h.heartbeat(a, old, true, false).expect("fence");
    let new = h.register(a, Uuid::from_u128(99), None);
    h.heartbeat(a, new, false, false).expect("unfence");
    assert!(!h.image.brokers[&a].fenced);
    let mut data = h.proposal("t", 0, &[leader, b, a]);
    data.new_isr_with_epochs[2].broker_epoch = old;
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::IneligibleReplica
    );
    let data = h.proposal("t", 0, &[leader, b, a]);
    assert_eq!(
        h.alter(leader, "t", data).expect("current epoch").isr,
        vec![leader, b, a]
    );

    // Not registered at all.
    let (mut h, leader, [a, _]) = Harness::three_replicas();
    h.commit(&[MetadataRecord::UnregisterBroker(
        crate::records::UnregisterBrokerRecord {
            broker_id: a,
            broker_epoch: h.epoch(a),
        },
    )]);
    let data = h.proposal("t", 0, &[leader, a]);
    // The partition still lists it as a replica, so the ISR is well formed; it is the
    // registration that is missing.
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::IneligibleReplica
    );
    assert_eq!(
        h.partition("t", 0).partition_epoch,
        0,
        "no refusal writes anything"
    );
}

#[test]
fn alter_partition_from_a_stale_or_unknown_broker_epoch_fails_as_a_whole() {
    let (h, leader, _) = Harness::three_replicas();
    let data = h.proposal("t", 0, &[leader]);
    for (broker_id, broker_epoch) in [(leader, h.epoch(leader) - 1), (42, 0)] {
        let request = AlterPartitionRequest {
            broker_id,
            broker_epoch,
            topics: vec![AlterPartitionTopic {
                topic_id: h.topic_id("t"),
                partitions: vec![data.clone()],
            }],
        };
        let err = h
            .ctl
            .alter_partition(&h.image, &request)
            .expect_err("stale");
        assert_eq!(err.error, ResponseError::StaleBrokerEpoch);
    }
}

#[test]
fn alter_partition_refuses_what_kafka_refuses_with_its_codes() {
    let (mut h, leader, [a, b]) = Harness::three_replicas();
    let ok = h.proposal("t", 0, &[leader, a]);

    // Unknown topic id: every partition of it gets UNKNOWN_TOPIC_ID; the rest is served.
    let request = AlterPartitionRequest {
        broker_id: leader,
        broker_epoch: h.epoch(leader),
        topics: vec![
            AlterPartitionTopic {
                topic_id: Uuid::from_u128(12345),
                partitions: vec![
                    ok.clone(),
                    AlterPartitionData {
                        partition_index: 1,
                        ..ok.clone()
                    },
                ],
            },
            AlterPartitionTopic {
                topic_id: h.topic_id("t"),
                partitions: vec![
                    AlterPartitionData {
                        partition_index: 7,
                        ..ok.clone()
                    },
                    ok.clone(),
                ],
            },
        ],
    };
    let d = h.ctl.alter_partition(&h.image, &request).expect("answered");
    let codes: Vec<Vec<(i32, Option<ResponseError>)>> = d
        .reply
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|(i, r)| (*i, r.as_ref().err().map(|e| e.error)))
                .collect()
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            vec![
                (0, Some(ResponseError::UnknownTopicId)),
                (1, Some(ResponseError::UnknownTopicId))
            ],
            vec![(7, Some(ResponseError::UnknownTopicOrPartition)), (0, None)],
        ]
    );
    assert_eq!(d.reply[0].topic_id, Uuid::from_u128(12345));
    assert_eq!(d.records.len(), 1, "only the valid partition is changed");

    // Not the leader (with the leader's epochs): INVALID_REQUEST, as Kafka.
    let data = h.proposal("t", 0, &[a, b]);
    assert_eq!(code(h.alter(a, "t", data)), ResponseError::InvalidRequest);

    // Leader epoch older: FENCED_LEADER_EPOCH; newer (or a newer partition epoch): this
    // controller is behind, NOT_CONTROLLER.
    let mut data = h.proposal("t", 0, &[leader, a]);
    data.leader_epoch -= 1;
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::FencedLeaderEpoch
    );
    let mut data = h.proposal("t", 0, &[leader, a]);
    data.leader_epoch += 1;
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::NotController
    );
    let mut data = h.proposal("t", 0, &[leader, a]);
    data.partition_epoch += 1;
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::NotController
    );

    // Malformed ISRs: INVALID_REQUEST.
    for isr in [vec![], vec![a, b], vec![leader, 9], vec![leader, a, a]] {
        let data = h.proposal("t", 0, &isr);
        assert_eq!(
            code(h.alter(leader, "t", data)),
            ResponseError::InvalidRequest,
            "{isr:?}"
        );
    }

    // Leader recovery: RECOVERED cannot go back to RECOVERING; unknown states are refused.
    for state in [LEADER_RECOVERING, 5, -1] {
        let mut data = h.proposal("t", 0, &[leader]);
        data.leader_recovery_state = state;
        assert_eq!(
            code(h.alter(leader, "t", data)),
            ResponseError::InvalidRequest
        );
    }
    assert_eq!(
        h.partition("t", 0).partition_epoch,
        0,
        "no refusal wrote anything"
    );
}

#[test]
fn alter_partition_based_on_an_older_partition_epoch_is_refused() {
    let (mut h, leader, [a, b]) = Harness::three_replicas();
    let first = h.proposal("t", 0, &[leader, a]);
    let second = h.proposal("t", 0, &[leader, b]);
    h.alter(leader, "t", first).expect("first change");
    // The leader's second proposal was built on the state before the first one.
    assert_eq!(
        code(h.alter(leader, "t", second)),
        ResponseError::InvalidUpdateVersion
    );
    assert_eq!(h.partition("t", 0).isr, vec![leader, a]);

    // Another change the leader has not seen (its follower fenced, so out of the ISR) makes
    // its proposal stale too.
    let data = h.proposal("t", 0, &[leader, a, b]);
    let e = h.epoch(a);
    h.heartbeat(a, e, true, false).expect("fence");
    assert_eq!(h.partition("t", 0).isr, vec![leader]);
    assert_eq!(
        code(h.alter(leader, "t", data)),
        ResponseError::InvalidUpdateVersion
    );

    // The same partition twice in one request: the second is judged after the first.
    let mut h = Harness::three_replicas().0;
    let data = h.proposal("t", 0, &[leader, a]);
    let request = AlterPartitionRequest {
        broker_id: leader,
        broker_epoch: h.epoch(leader),
        topics: vec![AlterPartitionTopic {
            topic_id: h.topic_id("t"),
            partitions: vec![data.clone(), data],
        }],
    };
    let d = h.ctl.alter_partition(&h.image, &request).expect("answered");
    assert_eq!(d.records.len(), 1);
    assert!(d.reply[0].partitions[0].1.is_ok());
    assert_eq!(
        d.reply[0].partitions[1]
            .1
            .as_ref()
            .expect_err("stale")
            .error,
        ResponseError::InvalidUpdateVersion
    );
    h.commit(&d.records);
}

#[test]
fn alter_partition_to_the_current_isr_writes_nothing() {
    let (h, leader, _) = Harness::three_replicas();
    let before = h.partition("t", 0).clone();
    let data = h.proposal("t", 0, &before.isr);
    let request = AlterPartitionRequest {
        broker_id: leader,
        broker_epoch: h.epoch(leader),
        topics: vec![AlterPartitionTopic {
            topic_id: h.topic_id("t"),
            partitions: vec![data],
        }],
    };
    let d = h.ctl.alter_partition(&h.image, &request).expect("answered");
    assert!(d.records.is_empty());
    let reply = d.reply[0].partitions[0].1.clone().expect("current state");
    assert_eq!(reply.isr, before.isr);
    assert_eq!(
        reply.partition_epoch, before.partition_epoch,
        "not + 1: nothing written"
    );
    assert_eq!(reply.leader_epoch, before.leader_epoch);
    assert_eq!(reply.leader_id, leader);
}

#[test]
fn new_partitions_never_get_a_shutting_down_broker_in_their_isr_or_as_leader() {
    let mut h = Harness::replicated();
    for id in 1..=3 {
        h.join(id, None);
    }
    // Broker 1 in controlled shutdown, not yet fenced.
    h.commit(&[MetadataRecord::BrokerRegistrationChange(
        BrokerRegistrationChangeRecord {
            broker_id: 1,
            broker_epoch: h.epoch(1),
            fenced: None,
            in_controlled_shutdown: Some(true),
        },
    )]);
    let create = |assignment: Vec<i32>| CreateTopicRequest {
        name: format!("t{}", assignment.len()),
        num_partitions: -1,
        replication_factor: -1,
        assignments: BTreeMap::from([(0, assignment)]),
        configs: Vec::new(),
    };
    let d = h
        .ctl
        .create_topics(&h.image, &[create(vec![1, 2, 3])], false);
    assert!(d.reply[0].1.is_ok(), "{:?}", d.reply);
    h.commit(&d.records);
    let p = h.partition("t3", 0);
    assert_eq!(p.leader, 2, "the preferred replica is shutting down");
    assert_eq!(p.isr, vec![2, 3]);

    // Only the shutting-down broker: refused, as Kafka does.
    let d = h.ctl.create_topics(&h.image, &[create(vec![1])], false);
    assert_eq!(
        d.reply[0].1.as_ref().expect_err("no usable replica").error,
        ResponseError::InvalidReplicaAssignment
    );

    // Placement leaves it out; a failover does not pick it either.
    h.create("u", 6, 2).expect("create");
    for i in 0..6 {
        assert!(!h.partition("u", i).replicas.contains(&1));
    }
    let leader = h.partition("t3", 0).leader;
    let e = h.epoch(leader);
    h.heartbeat(leader, e, true, false).expect("fence");
    assert_eq!(h.partition("t3", 0).leader, 3);
    let e = h.epoch(3);
    h.heartbeat(3, e, true, false).expect("fence");
    let p = h.partition("t3", 0);
    assert_eq!(p.leader, NO_LEADER, "not broker 1, which is shutting down");
}

impl Harness {
    fn elect(
        &mut self,
        election: ElectionType,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> PartitionResults {
        let d = self.ctl.elect_leaders(&self.image, election, partitions);
        if !d.records.is_empty() {
            self.commit(&d.records);
        }
        d.reply
    }

    fn elect_one(
        &mut self,
        election: ElectionType,
        topic: &str,
        index: i32,
    ) -> Result<(), ResponseError> {
        let mut r = self.elect(election, Some(&[(topic.to_string(), vec![index])]));
        assert_eq!(r.len(), 1);
        let (_, mut list) = r.remove(0);
        assert_eq!(list.len(), 1);
        list.remove(0).1.map_err(|e| e.error)
    }

    fn reassign(
        &mut self,
        topic: &str,
        index: i32,
        target: Option<&[i32]>,
    ) -> Result<(), ResponseError> {
        let d = self.ctl.alter_partition_reassignments(
            &self.image,
            &[(
                topic.to_string(),
                vec![ReassignPartition {
                    partition: index,
                    replicas: target.map(<[i32]>::to_vec),
                }],
            )],
        );
        if !d.records.is_empty() {
            self.commit(&d.records);
        }
        d.reply[0].1[0].1.clone().map_err(|e| e.error)
    }

    /// Fences `broker` (as a failed heartbeat would) and brings it back with a new
    /// incarnation: it is usable again but out of every ISR.
    fn bounce(&mut self, broker: i32) {
        let e = self.epoch(broker);
        self.heartbeat(broker, e, true, false).expect("fence");
        let e = self.register(broker, Uuid::from_u128(broker as u128 + 100), None);
        self.heartbeat(broker, e, false, false).expect("heartbeat");
    }
}

#[test]
fn preferred_election_moves_leadership_back_only_to_an_in_sync_preferred_replica() {
    let (mut h, leader, [f1, _]) = Harness::three_replicas();
    assert_eq!(
        h.partition("t", 0).replicas[0],
        leader,
        "the first replica leads"
    );
    assert_eq!(
        h.elect_one(ElectionType::Preferred, "t", 0),
        Err(ResponseError::ElectionNotNeeded)
    );
    h.bounce(leader);
    let p = h.partition("t", 0).clone();
    assert_ne!(p.leader, leader);
    assert!(!p.isr.contains(&leader));
    assert_eq!(
        h.elect_one(ElectionType::Preferred, "t", 0),
        Err(ResponseError::PreferredLeaderNotAvailable),
        "the preferred replica is not in sync yet"
    );
    // It catches up: the new leader proposes it back into the ISR.
    let mut isr = p.isr.clone();
    isr.push(leader);
    let current = p.leader;
    h.alter(current, "t", h.proposal("t", 0, &isr))
        .expect("expand");
    let epoch_before = h.partition("t", 0).leader_epoch;
    assert_eq!(h.elect_one(ElectionType::Preferred, "t", 0), Ok(()));
    let p = h.partition("t", 0);
    assert_eq!(p.leader, leader);
    assert_eq!(p.leader_epoch, epoch_before + 1);
    assert_eq!(p.isr.len(), 3, "a preferred election keeps the ISR");
    // All partitions: only those that needed an election are answered.
    assert!(h.elect(ElectionType::Preferred, None).is_empty());
    assert_eq!(
        h.elect_one(ElectionType::Preferred, "nope", 0),
        Err(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        h.elect_one(ElectionType::Preferred, "t", 9),
        Err(ResponseError::UnknownTopicOrPartition)
    );
    let _ = f1;
}

#[test]
fn unclean_election_by_request_needs_a_leaderless_partition() {
    let (mut h, leader, [f1, f2]) = Harness::three_replicas();
    assert_eq!(
        h.elect_one(ElectionType::Unclean, "t", 0),
        Err(ResponseError::ElectionNotNeeded)
    );
    // The ISR shrinks to the leader, which then dies: the partition is offline.
    h.alter(leader, "t", h.proposal("t", 0, &[leader]))
        .expect("shrink");
    let e = h.epoch(leader);
    h.heartbeat(leader, e, true, false).expect("fence");
    assert_eq!(h.partition("t", 0).leader, NO_LEADER);
    assert_eq!(h.elect_one(ElectionType::Unclean, "t", 0), Ok(()));
    let p = h.partition("t", 0);
    assert!(
        p.leader == f1 || p.leader == f2,
        "an out-of-sync replica leads"
    );
    assert_eq!(p.isr, vec![p.leader]);
    // Nothing usable at all: refused.
    let (mut h, leader, followers) = Harness::three_replicas();
    h.alter(leader, "t", h.proposal("t", 0, &[leader]))
        .expect("shrink");
    for b in [leader, followers[0], followers[1]] {
        let e = h.epoch(b);
        h.heartbeat(b, e, true, false).expect("fence");
    }
    assert_eq!(
        h.elect_one(ElectionType::Unclean, "t", 0),
        Err(ResponseError::EligibleLeadersNotAvailable)
    );
}

#[test]
fn auto_rebalance_moves_leaders_back_on_its_interval() {
    let mut h = Harness::new(ControllerConfig {
        max_replication_factor: None,
        leader_imbalance_check_interval_ms: Some(300_000),
        ..ControllerConfig::default()
    });
    for id in 1..=3 {
        h.join(id, None);
    }
    let now = h.now_ms;
    h.ctl.activate(&h.image, now);
    h.create("t", 1, 3).expect("create");
    let preferred = h.partition("t", 0).replicas[0];
    h.bounce(preferred);
    let p = h.partition("t", 0).clone();
    let mut isr = p.isr.clone();
    isr.push(preferred);
    h.alter(p.leader, "t", h.proposal("t", 0, &isr))
        .expect("expand");
    let deadline = h.ctl.next_deadline_ms(&h.image).expect("a deadline");
    assert!(deadline <= now + 300_000);
    // Keep every session alive while time passes.
    let mut t = 0;
    while t < 300_000 {
        h.advance(3_000);
        t += 3_000;
        for b in 1..=3 {
            let e = h.epoch(b);
            h.heartbeat(b, e, false, false).expect("heartbeat");
        }
        h.tick();
        if h.partition("t", 0).leader == preferred {
            break;
        }
    }
    assert_eq!(
        h.partition("t", 0).leader,
        preferred,
        "rebalanced within the interval"
    );
    assert!(t >= 297_000, "not before the interval ({t} ms)");
    assert!(!h.ctl.leaders_imbalanced(&h.image));
}

#[test]
fn reassignment_adds_waits_for_sync_then_removes_and_moves_leadership() {
    let mut h = Harness::replicated();
    for id in 1..=4 {
        h.join(id, None);
    }
    let d = h.ctl.create_topics(
        &h.image,
        &[CreateTopicRequest {
            name: "t".into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: BTreeMap::from([(0, vec![1, 2, 3])]),
            configs: Vec::new(),
        }],
        false,
    );
    assert!(d.reply[0].1.is_ok(), "{:?}", d.reply);
    h.commit(&d.records);
    assert_eq!(h.partition("t", 0).leader, 1);
    assert_eq!(h.reassign("t", 0, Some(&[2, 3, 4])), Ok(()));
    let p = h.partition("t", 0).clone();
    assert_eq!(
        p.replicas,
        vec![2, 3, 4, 1],
        "targets first, then the replicas leaving"
    );
    assert_eq!(p.adding_replicas, vec![4]);
    assert_eq!(p.removing_replicas, vec![1]);
    assert_eq!(
        p.leader, 1,
        "the leader stays until the new replicas are in sync"
    );
    assert_eq!(p.isr, vec![1, 2, 3]);
    let listed = list_reassignments(&h.image, None);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1[0].adding_replicas, vec![4]);

    // A second request for the same target is a no-op restart, not an error.
    assert_eq!(h.reassign("t", 0, Some(&[2, 3, 4])), Ok(()));
    assert!(h.partition("t", 0).is_reassigning());

    // Replica 4 catches up: the leader's expansion completes the reassignment.
    let answer = h
        .alter(1, "t", h.proposal("t", 0, &[1, 2, 3, 4]))
        .expect("expand");
    let p = h.partition("t", 0).clone();
    assert_eq!(p.replicas, vec![2, 3, 4]);
    assert_eq!(p.isr, vec![2, 3, 4]);
    assert!(!p.is_reassigning());
    assert_eq!(p.leader, 2, "the first in-sync target replica takes over");
    assert_eq!(
        answer.leader_id, 2,
        "the answer tells the old leader the final state"
    );
    assert!(list_reassignments(&h.image, None).is_empty());
}

#[test]
fn reassignment_is_validated_and_can_be_cancelled() {
    let (mut h, leader, _) = Harness::three_replicas();
    h.join(4, None);
    let replicas = h.partition("t", 0).replicas.clone();
    for bad in [vec![], vec![1, 1, 2], vec![1, 2, 9]] {
        assert_eq!(
            h.reassign("t", 0, Some(&bad)),
            Err(ResponseError::InvalidReplicaAssignment),
            "{bad:?}"
        );
    }
    assert_eq!(
        h.reassign("t", 0, None),
        Err(ResponseError::NoReassignmentInProgress)
    );
    assert_eq!(
        h.reassign("nope", 0, Some(&[1])),
        Err(ResponseError::UnknownTopicOrPartition)
    );
    // The same replicas: nothing to do.
    let epoch = h.partition("t", 0).partition_epoch;
    assert_eq!(h.reassign("t", 0, Some(&replicas)), Ok(()));
    assert_eq!(h.partition("t", 0).partition_epoch, epoch);
    // A reordering takes effect at once, with nothing to copy.
    let mut reordered = replicas.clone();
    reordered.reverse();
    assert_eq!(h.reassign("t", 0, Some(&reordered)), Ok(()));
    let p = h.partition("t", 0).clone();
    assert_eq!(p.replicas, reordered);
    assert!(!p.is_reassigning());
    assert_eq!(p.leader, leader, "a reordering does not elect");

    // Move one replica to broker 4, then cancel: back where it was, 4 gone.
    let target = vec![reordered[0], reordered[1], 4];
    assert_eq!(h.reassign("t", 0, Some(&target)), Ok(()));
    assert!(h.partition("t", 0).is_reassigning());
    assert_eq!(h.reassign("t", 0, None), Ok(()));
    let p = h.partition("t", 0).clone();
    assert!(!p.is_reassigning());
    let mut sorted = p.replicas.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 3]);
    assert_eq!(p.leader, leader);
}

#[test]
fn partition_records_are_written_in_version_zero_unless_they_carry_a_reassignment() {
    // A log written before reassignment existed holds version-0 partition records, and a node
    // of that release must still replay logs that use no reassignment.
    let plain = MetadataRecord::PartitionChange(PartitionChangeRecord {
        topic_id: Uuid::from_u128(5),
        partition_id: 1,
        isr: Some(vec![1, 2]),
        leader: Some(2),
        ..Default::default()
    });
    let moving = MetadataRecord::PartitionChange(PartitionChangeRecord {
        topic_id: Uuid::from_u128(5),
        partition_id: 1,
        replicas: Some(vec![2, 3, 1]),
        adding_replicas: Some(vec![3]),
        removing_replicas: Some(vec![1]),
        ..Default::default()
    });
    for (record, version) in [(plain, 0u8), (moving, 1)] {
        let bytes = crate::records::encode_batch(std::slice::from_ref(&record));
        // Frame: format, count, type, version, length.
        assert_eq!(bytes[3], version, "{record:?}");
        assert_eq!(
            crate::records::decode_batch(&bytes).expect("decodes"),
            vec![record]
        );
    }
}

#[test]
fn reassignment_waits_for_a_lagging_target_replica_not_only_the_added_ones() {
    let (mut h, leader, [f1, f2]) = Harness::three_replicas();
    // f2 lags: out of the ISR but alive. Moving to {leader, f2} adds nobody.
    h.alter(leader, "t", h.proposal("t", 0, &[leader, f1]))
        .expect("shrink");
    assert_eq!(h.reassign("t", 0, Some(&[leader, f2])), Ok(()));
    let p = h.partition("t", 0).clone();
    assert!(p.is_reassigning(), "f1's copy stays until f2 is in sync");
    assert_eq!(p.removing_replicas, vec![f1]);
    assert!(p.adding_replicas.is_empty());
    // f2 catches up: now it completes.
    h.alter(leader, "t", h.proposal("t", 0, &[leader, f1, f2]))
        .expect("expand");
    let p = h.partition("t", 0).clone();
    assert!(!p.is_reassigning());
    assert_eq!(p.replicas, vec![leader, f2]);
    let mut isr = p.isr.clone();
    isr.sort();
    let mut want = vec![leader, f2];
    want.sort();
    assert_eq!(isr, want);
}
