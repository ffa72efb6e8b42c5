//! What brokers ask the active controller, and its answers: the controller RPCs that travel on
//! the controller listener beside raft's (`raft::wire` carries them as opaque bodies).
//!
//! They mirror Kafka's controller APIs (BrokerRegistration, BrokerHeartbeat, CreateTopics,
//! DeleteTopics, CreatePartitions, IncrementalAlterConfigs, AllocateProducerIds, AlterPartition,
//! DescribeQuorum, AddRaftVoter, RemoveRaftVoter), but are encoded here, in this crate's compact format, from the
//! controller's own types: the broker already validated the client's request, and a codec owned
//! here is bounded against hostile input by construction (every count checked against the bytes
//! left) without a schema table per Kafka message.
//!
//! Every message starts with a format byte; a format this node does not know is an error, never
//! guessed at.

use crate::controller::{
    AlterPartitionData, AlterPartitionReply, AlterPartitionRequest, AlterPartitionTopic,
    AlterPartitionTopicReply, AlteredPartition, BrokerHeartbeatRequest, BrokerRegistrationRequest,
    ConfigChange, ControllerError, CreateTopicRequest, CreatedTopic, DeletedTopic, ElectionType,
    HeartbeatReply, IsrMember, PartitionResults, ProducerIdBlock, ReassignPartition, TopicRef,
};
use crate::records::{
    BrokerEndpoint, Reader, RecordDecodeError, put_i32, put_i64, put_ids, put_opt_str, put_str,
    put_uvarint,
};
use kafka_protocol::ResponseError;

/// The format of the bodies this build writes and the only one it reads.
const RPC_FORMAT: u8 = 1;
/// The most items (topics, configs, partitions) one request or answer may carry.
pub const MAX_ITEMS: usize = 100_000;

/// A request to the active controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerRequest {
    /// BrokerRegistration.
    RegisterBroker(BrokerRegistrationRequest),
    /// BrokerHeartbeat.
    BrokerHeartbeat(BrokerHeartbeatRequest),
    /// CreateTopics.
    CreateTopics {
        /// The topics.
        topics: Vec<CreateTopicRequest>,
        /// Check only, write nothing.
        validate_only: bool,
    },
    /// DeleteTopics.
    DeleteTopics(Vec<TopicRef>),
    /// CreatePartitions of one topic.
    CreatePartitions {
        /// The topic.
        topic: String,
        /// The new partition count.
        count: i32,
        /// Replica lists of the new partitions, if the client chose them.
        assignments: Option<Vec<Vec<i32>>>,
        /// Check only, write nothing.
        validate_only: bool,
    },
    /// AlterConfigs and IncrementalAlterConfigs, resolved by the broker into plain changes.
    AlterConfigs(Vec<ConfigChange>),
    /// AllocateProducerIds.
    AllocateProducerIds {
        /// The asking broker.
        broker_id: i32,
        /// Its registration's epoch.
        broker_epoch: i64,
    },
    /// A broker-only node asks to follow the metadata log (as a raft learner), reachable at
    /// `addr`, its metadata listener.
    AddObserver {
        /// Its node id.
        node_id: i32,
        /// Its metadata listener, `HOST:PORT`.
        addr: String,
    },
    /// AddRaftVoter (KIP-853): the node, already following the log at `addr`, becomes a voter.
    AddVoter {
        /// Its node id.
        node_id: i32,
        /// Its controller listener, `HOST:PORT`.
        addr: String,
    },
    /// RemoveRaftVoter (KIP-853).
    RemoveVoter {
        /// The voter to remove.
        node_id: i32,
    },
    /// DescribeQuorum.
    DescribeQuorum,
    /// AlterPartition (KIP-497): a partition leader proposes new ISRs.
    AlterPartition(AlterPartitionRequest),
    /// ElectLeaders (KIP-460).
    ElectLeaders {
        /// Preferred or unclean.
        election: ElectionType,
        /// The partitions, by topic; `None` for all.
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    /// AlterPartitionReassignments (KIP-455).
    AlterPartitionReassignments(Vec<(String, Vec<ReassignPartition>)>),
}

/// One quorum member as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// Node id.
    pub node_id: i32,
    /// Its controller (or metadata) listener.
    pub addr: String,
    /// The offset after the last entry the leader knows it has, or -1 if unknown.
    pub log_end_offset: i64,
}

/// DescribeQuorum's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumInfo {
    /// The cluster id.
    pub cluster_id: String,
    /// The leader (the active controller).
    pub leader_id: i32,
    /// The leader's term (Kafka's leader epoch of the metadata partition).
    pub leader_epoch: i64,
    /// The offset after the last committed entry.
    pub high_watermark: i64,
    /// The voters.
    pub voters: Vec<ReplicaState>,
    /// Nodes following the log without voting.
    pub observers: Vec<ReplicaState>,
}

/// The active controller's answer to a request it carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerResponse {
    /// RegisterBroker: the broker epoch.
    Registered {
        /// The new registration's epoch.
        broker_epoch: i64,
    },
    /// BrokerHeartbeat.
    Heartbeat(HeartbeatReply),
    /// CreateTopics, per topic.
    CreateTopics(Vec<(String, Result<CreatedTopic, ControllerError>)>),
    /// DeleteTopics, per topic.
    DeleteTopics(Vec<(TopicRef, Result<DeletedTopic, ControllerError>)>),
    /// CreatePartitions, AlterConfigs, AddObserver, AddVoter, RemoveVoter.
    Done,
    /// AllocateProducerIds.
    ProducerIds(ProducerIdBlock),
    /// DescribeQuorum.
    Quorum(QuorumInfo),
    /// AlterPartition, per topic and partition.
    AlterPartition(AlterPartitionReply),
    /// ElectLeaders and AlterPartitionReassignments: per topic and partition.
    Partitions(PartitionResults),
}

/// A controller node's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerReply {
    /// Carried out; the records it wrote are committed up to `metadata_offset` (raft index of
    /// the entry), which a broker waits for before answering, so that what it serves next
    /// includes the change.
    Ok {
        /// The entry's offset, when something was written.
        metadata_offset: Option<u64>,
        /// The answer.
        response: ControllerResponse,
    },
    /// The request as a whole failed.
    Failed(ControllerError),
    /// This node is not the active controller; `leader` is the one it knows of.
    NotController {
        /// Id and controller listener of the leader, if known.
        leader: Option<(i32, String)>,
    },
}

/// Why bytes are not a controller RPC.
pub type RpcDecodeError = RecordDecodeError;

/// Encodes a request body.
pub fn encode_request(request: &ControllerRequest) -> Vec<u8> {
    let mut out = vec![RPC_FORMAT];
    match request {
        ControllerRequest::RegisterBroker(r) => {
            out.push(1);
            put_i32(&mut out, r.broker_id);
            out.extend_from_slice(r.incarnation_id.as_bytes());
            put_uvarint(&mut out, r.listeners.len() as u64);
            for l in &r.listeners {
                put_str(&mut out, &l.name);
                put_str(&mut out, &l.host);
                out.extend_from_slice(&l.port.to_be_bytes());
                out.extend_from_slice(&l.security_protocol.to_be_bytes());
            }
            put_opt_str(&mut out, r.rack.as_deref());
        }
        ControllerRequest::BrokerHeartbeat(r) => {
            out.push(2);
            put_i32(&mut out, r.broker_id);
            put_i64(&mut out, r.broker_epoch);
            put_i64(&mut out, r.current_metadata_offset);
            out.push(u8::from(r.want_fence));
            out.push(u8::from(r.want_shutdown));
        }
        ControllerRequest::CreateTopics {
            topics,
            validate_only,
        } => {
            out.push(3);
            out.push(u8::from(*validate_only));
            put_uvarint(&mut out, topics.len() as u64);
            for t in topics {
                put_str(&mut out, &t.name);
                put_i32(&mut out, t.num_partitions);
                out.extend_from_slice(&t.replication_factor.to_be_bytes());
                put_uvarint(&mut out, t.assignments.len() as u64);
                for (index, replicas) in &t.assignments {
                    put_i32(&mut out, *index);
                    put_ids(&mut out, replicas);
                }
                put_uvarint(&mut out, t.configs.len() as u64);
                for (name, value) in &t.configs {
                    put_str(&mut out, name);
                    put_str(&mut out, value);
                }
            }
        }
        ControllerRequest::DeleteTopics(topics) => {
            out.push(4);
            put_uvarint(&mut out, topics.len() as u64);
            for t in topics {
                put_topic_ref(&mut out, t);
            }
        }
        ControllerRequest::CreatePartitions {
            topic,
            count,
            assignments,
            validate_only,
        } => {
            out.push(5);
            put_str(&mut out, topic);
            put_i32(&mut out, *count);
            match assignments {
                None => out.push(0),
                Some(a) => {
                    out.push(1);
                    put_uvarint(&mut out, a.len() as u64);
                    for replicas in a {
                        put_ids(&mut out, replicas);
                    }
                }
            }
            out.push(u8::from(*validate_only));
        }
        ControllerRequest::AlterConfigs(changes) => {
            out.push(6);
            put_uvarint(&mut out, changes.len() as u64);
            for c in changes {
                out.push(c.resource_type as u8);
                put_str(&mut out, &c.resource_name);
                put_str(&mut out, &c.name);
                put_opt_str(&mut out, c.value.as_deref());
            }
        }
        ControllerRequest::AllocateProducerIds {
            broker_id,
            broker_epoch,
        } => {
            out.push(7);
            put_i32(&mut out, *broker_id);
            put_i64(&mut out, *broker_epoch);
        }
        ControllerRequest::AddObserver { node_id, addr } => {
            out.push(8);
            put_i32(&mut out, *node_id);
            put_str(&mut out, addr);
        }
        ControllerRequest::AddVoter { node_id, addr } => {
            out.push(9);
            put_i32(&mut out, *node_id);
            put_str(&mut out, addr);
        }
        ControllerRequest::RemoveVoter { node_id } => {
            out.push(10);
            put_i32(&mut out, *node_id);
        }
        ControllerRequest::DescribeQuorum => out.push(11),
        ControllerRequest::AlterPartition(a) => {
            out.push(12);
            put_i32(&mut out, a.broker_id);
            put_i64(&mut out, a.broker_epoch);
            put_uvarint(&mut out, a.topics.len() as u64);
            for t in &a.topics {
                out.extend_from_slice(t.topic_id.as_bytes());
                put_uvarint(&mut out, t.partitions.len() as u64);
                for p in &t.partitions {
                    put_i32(&mut out, p.partition_index);
                    put_i32(&mut out, p.leader_epoch);
                    put_uvarint(&mut out, p.new_isr_with_epochs.len() as u64);
                    for m in &p.new_isr_with_epochs {
                        put_i32(&mut out, m.broker_id);
                        put_i64(&mut out, m.broker_epoch);
                    }
                    out.push(p.leader_recovery_state as u8);
                    put_i32(&mut out, p.partition_epoch);
                }
            }
        }
        ControllerRequest::ElectLeaders {
            election,
            partitions,
        } => {
            out.push(13);
            out.push(election.code() as u8);
            match partitions {
                None => out.push(0),
                Some(topics) => {
                    out.push(1);
                    put_uvarint(&mut out, topics.len() as u64);
                    for (name, indexes) in topics {
                        put_str(&mut out, name);
                        put_ids(&mut out, indexes);
                    }
                }
            }
        }
        ControllerRequest::AlterPartitionReassignments(topics) => {
            out.push(14);
            put_uvarint(&mut out, topics.len() as u64);
            for (name, partitions) in topics {
                put_str(&mut out, name);
                put_uvarint(&mut out, partitions.len() as u64);
                for p in partitions {
                    put_i32(&mut out, p.partition);
                    match &p.replicas {
                        None => out.push(0),
                        Some(replicas) => {
                            out.push(1);
                            put_ids(&mut out, replicas);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Decodes a request body written by [`encode_request`].
pub fn decode_request(bytes: &[u8]) -> Result<ControllerRequest, RpcDecodeError> {
    let mut r = Reader::new(bytes);
    check_format(&mut r)?;
    let request = match r.u8()? {
        1 => {
            let broker_id = r.i32()?;
            let incarnation_id = r.uuid()?;
            let n = bounded(r.len_prefix(6)?)?;
            let mut listeners = Vec::with_capacity(n);
            for _ in 0..n {
                listeners.push(BrokerEndpoint {
                    name: r.string()?,
                    host: r.string()?,
                    port: r.u16()?,
                    security_protocol: r.i16()?,
                });
            }
            ControllerRequest::RegisterBroker(BrokerRegistrationRequest {
                broker_id,
                incarnation_id,
                listeners,
                rack: r.opt_string()?,
            })
        }
        2 => ControllerRequest::BrokerHeartbeat(BrokerHeartbeatRequest {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
            current_metadata_offset: r.i64()?,
            want_fence: r.bool()?,
            want_shutdown: r.bool()?,
        }),
        3 => {
            let validate_only = r.bool()?;
            // A topic is at least a name length, four and two fixed bytes, and two counts.
            let n = bounded(r.len_prefix(9)?)?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.string()?;
                let num_partitions = r.i32()?;
                let replication_factor = r.i16()?;
                let m = bounded(r.len_prefix(5)?)?;
                let mut assignments = std::collections::BTreeMap::new();
                for _ in 0..m {
                    let index = r.i32()?;
                    assignments.insert(index, r.ids()?);
                }
                let c = bounded(r.len_prefix(2)?)?;
                let mut configs = Vec::with_capacity(c);
                for _ in 0..c {
                    configs.push((r.string()?, r.string()?));
                }
                topics.push(CreateTopicRequest {
                    name,
                    num_partitions,
                    replication_factor,
                    assignments,
                    configs,
                });
            }
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            }
        }
        4 => {
            let n = bounded(r.len_prefix(2)?)?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                topics.push(topic_ref(&mut r)?);
            }
            ControllerRequest::DeleteTopics(topics)
        }
        5 => {
            let topic = r.string()?;
            let count = r.i32()?;
            let assignments = if r.bool()? {
                let n = bounded(r.len_prefix(1)?)?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(r.ids()?);
                }
                Some(a)
            } else {
                None
            };
            ControllerRequest::CreatePartitions {
                topic,
                count,
                assignments,
                validate_only: r.bool()?,
            }
        }
        6 => {
            let n = bounded(r.len_prefix(4)?)?;
            let mut changes = Vec::with_capacity(n);
            for _ in 0..n {
                changes.push(ConfigChange {
                    resource_type: r.u8()? as i8,
                    resource_name: r.string()?,
                    name: r.string()?,
                    value: r.opt_string()?,
                });
            }
            ControllerRequest::AlterConfigs(changes)
        }
        7 => ControllerRequest::AllocateProducerIds {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
        },
        8 => ControllerRequest::AddObserver {
            node_id: r.i32()?,
            addr: r.string()?,
        },
        9 => ControllerRequest::AddVoter {
            node_id: r.i32()?,
            addr: r.string()?,
        },
        10 => ControllerRequest::RemoveVoter { node_id: r.i32()? },
        11 => ControllerRequest::DescribeQuorum,
        12 => ControllerRequest::AlterPartition(alter_partition_request(&mut r)?),
        13 => {
            let election = ElectionType::from_code(r.u8()? as i8)
                .ok_or(RecordDecodeError::Malformed("election type"))?;
            let partitions = if r.bool()? {
                // A topic is at least a name length and a count.
                let n = bounded(r.len_prefix(2)?)?;
                let mut topics = Vec::with_capacity(n);
                for _ in 0..n {
                    topics.push((r.string()?, r.ids()?));
                }
                Some(topics)
            } else {
                None
            };
            ControllerRequest::ElectLeaders {
                election,
                partitions,
            }
        }
        14 => {
            let n = bounded(r.len_prefix(2)?)?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.string()?;
                // A partition is at least its index and a presence byte.
                let m = bounded(r.len_prefix(5)?)?;
                let mut partitions = Vec::with_capacity(m);
                for _ in 0..m {
                    let partition = r.i32()?;
                    let replicas = if r.bool()? { Some(r.ids()?) } else { None };
                    partitions.push(ReassignPartition {
                        partition,
                        replicas,
                    });
                }
                topics.push((name, partitions));
            }
            ControllerRequest::AlterPartitionReassignments(topics)
        }
        _ => return Err(RecordDecodeError::Malformed("unknown controller request")),
    };
    end(&r, bytes)?;
    Ok(request)
}

/// Encodes a reply body.
pub fn encode_reply(reply: &ControllerReply) -> Vec<u8> {
    let mut out = vec![RPC_FORMAT];
    match reply {
        ControllerReply::Ok {
            metadata_offset,
            response,
        } => {
            out.push(0);
            match metadata_offset {
                Some(o) => {
                    out.push(1);
                    put_uvarint(&mut out, *o);
                }
                None => out.push(0),
            }
            put_response(&mut out, response);
        }
        ControllerReply::Failed(e) => {
            out.push(1);
            put_error(&mut out, e);
        }
        ControllerReply::NotController { leader } => {
            out.push(2);
            match leader {
                Some((id, addr)) => {
                    out.push(1);
                    put_i32(&mut out, *id);
                    put_str(&mut out, addr);
                }
                None => out.push(0),
            }
        }
    }
    out
}

/// Decodes a reply body written by [`encode_reply`].
pub fn decode_reply(bytes: &[u8]) -> Result<ControllerReply, RpcDecodeError> {
    let mut r = Reader::new(bytes);
    check_format(&mut r)?;
    let reply = match r.u8()? {
        0 => {
            let metadata_offset = if r.bool()? { Some(r.uvarint()?) } else { None };
            ControllerReply::Ok {
                metadata_offset,
                response: response(&mut r)?,
            }
        }
        1 => ControllerReply::Failed(error(&mut r)?),
        2 => ControllerReply::NotController {
            leader: if r.bool()? {
                Some((r.i32()?, r.string()?))
            } else {
                None
            },
        },
        _ => return Err(RecordDecodeError::Malformed("unknown controller reply")),
    };
    end(&r, bytes)?;
    Ok(reply)
}

fn put_response(out: &mut Vec<u8>, response: &ControllerResponse) {
    match response {
        ControllerResponse::Registered { broker_epoch } => {
            out.push(1);
            put_i64(out, *broker_epoch);
        }
        ControllerResponse::Heartbeat(h) => {
            out.push(2);
            out.push(u8::from(h.is_caught_up));
            out.push(u8::from(h.is_fenced));
            out.push(u8::from(h.should_shutdown));
        }
        ControllerResponse::CreateTopics(results) => {
            out.push(3);
            put_uvarint(out, results.len() as u64);
            for (name, result) in results {
                put_str(out, name);
                match result {
                    Ok(c) => {
                        out.push(0);
                        out.extend_from_slice(c.topic_id.as_bytes());
                        put_i32(out, c.num_partitions);
                        out.extend_from_slice(&c.replication_factor.to_be_bytes());
                    }
                    Err(e) => {
                        out.push(1);
                        put_error(out, e);
                    }
                }
            }
        }
        ControllerResponse::DeleteTopics(results) => {
            out.push(4);
            put_uvarint(out, results.len() as u64);
            for (t, result) in results {
                put_topic_ref(out, t);
                match result {
                    Ok((name, id)) => {
                        out.push(0);
                        put_str(out, name);
                        out.extend_from_slice(id.as_bytes());
                    }
                    Err(e) => {
                        out.push(1);
                        put_error(out, e);
                    }
                }
            }
        }
        ControllerResponse::Done => out.push(5),
        ControllerResponse::ProducerIds(b) => {
            out.push(6);
            put_i64(out, b.first);
            put_i64(out, b.size);
        }
        ControllerResponse::Quorum(q) => {
            out.push(7);
            put_str(out, &q.cluster_id);
            put_i32(out, q.leader_id);
            put_i64(out, q.leader_epoch);
            put_i64(out, q.high_watermark);
            for set in [&q.voters, &q.observers] {
                put_uvarint(out, set.len() as u64);
                for s in set {
                    put_i32(out, s.node_id);
                    put_str(out, &s.addr);
                    put_i64(out, s.log_end_offset);
                }
            }
        }
        ControllerResponse::AlterPartition(topics) => {
            out.push(8);
            put_uvarint(out, topics.len() as u64);
            for t in topics {
                out.extend_from_slice(t.topic_id.as_bytes());
                put_uvarint(out, t.partitions.len() as u64);
                for (index, result) in &t.partitions {
                    put_i32(out, *index);
                    match result {
                        Ok(p) => {
                            out.push(0);
                            put_i32(out, p.leader_id);
                            put_i32(out, p.leader_epoch);
                            put_ids(out, &p.isr);
                            out.push(p.leader_recovery_state as u8);
                            put_i32(out, p.partition_epoch);
                        }
                        Err(e) => {
                            out.push(1);
                            put_error(out, e);
                        }
                    }
                }
            }
        }
        ControllerResponse::Partitions(topics) => {
            out.push(9);
            put_uvarint(out, topics.len() as u64);
            for (name, partitions) in topics {
                put_str(out, name);
                put_uvarint(out, partitions.len() as u64);
                for (index, result) in partitions {
                    put_i32(out, *index);
                    match result {
                        Ok(()) => out.push(0),
                        Err(e) => {
                            out.push(1);
                            put_error(out, e);
                        }
                    }
                }
            }
        }
    }
}

fn response(r: &mut Reader<'_>) -> Result<ControllerResponse, RpcDecodeError> {
    Ok(match r.u8()? {
        1 => ControllerResponse::Registered {
            broker_epoch: r.i64()?,
        },
        2 => ControllerResponse::Heartbeat(HeartbeatReply {
            is_caught_up: r.bool()?,
            is_fenced: r.bool()?,
            should_shutdown: r.bool()?,
        }),
        3 => {
            let n = bounded(r.len_prefix(2)?)?;
            let mut results = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.string()?;
                let result = if r.bool()? {
                    Err(error(r)?)
                } else {
                    Ok(CreatedTopic {
                        topic_id: r.uuid()?,
                        num_partitions: r.i32()?,
                        replication_factor: r.i16()?,
                    })
                };
                results.push((name, result));
            }
            ControllerResponse::CreateTopics(results)
        }
        4 => {
            let n = bounded(r.len_prefix(3)?)?;
            let mut results = Vec::with_capacity(n);
            for _ in 0..n {
                let t = topic_ref(r)?;
                let result = if r.bool()? {
                    Err(error(r)?)
                } else {
                    Ok((r.string()?, r.uuid()?))
                };
                results.push((t, result));
            }
            ControllerResponse::DeleteTopics(results)
        }
        5 => ControllerResponse::Done,
        6 => ControllerResponse::ProducerIds(ProducerIdBlock {
            first: r.i64()?,
            size: r.i64()?,
        }),
        7 => {
            let cluster_id = r.string()?;
            let leader_id = r.i32()?;
            let leader_epoch = r.i64()?;
            let high_watermark = r.i64()?;
            let mut sets = [Vec::new(), Vec::new()];
            for set in &mut sets {
                let n = bounded(r.len_prefix(13)?)?;
                set.reserve(n);
                for _ in 0..n {
                    set.push(ReplicaState {
                        node_id: r.i32()?,
                        addr: r.string()?,
                        log_end_offset: r.i64()?,
                    });
                }
            }
            let [voters, observers] = sets;
            ControllerResponse::Quorum(QuorumInfo {
                cluster_id,
                leader_id,
                leader_epoch,
                high_watermark,
                voters,
                observers,
            })
        }
        8 => ControllerResponse::AlterPartition(alter_partition_reply(r)?),
        9 => {
            let n = bounded(r.len_prefix(2)?)?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.string()?;
                // A partition is at least its index and the result byte.
                let m = bounded(r.len_prefix(5)?)?;
                let mut partitions = Vec::with_capacity(m);
                for _ in 0..m {
                    let index = r.i32()?;
                    let result = if r.bool()? { Err(error(r)?) } else { Ok(()) };
                    partitions.push((index, result));
                }
                topics.push((name, partitions));
            }
            ControllerResponse::Partitions(topics)
        }
        _ => return Err(RecordDecodeError::Malformed("unknown controller response")),
    })
}

fn alter_partition_request(r: &mut Reader<'_>) -> Result<AlterPartitionRequest, RpcDecodeError> {
    let broker_id = r.i32()?;
    let broker_epoch = r.i64()?;
    // A topic is at least its id and a count.
    let n = bounded(r.len_prefix(17)?)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let topic_id = r.uuid()?;
        // A partition is at least three i32s, a count and the recovery state.
        let m = bounded(r.len_prefix(14)?)?;
        let mut partitions = Vec::with_capacity(m);
        for _ in 0..m {
            let partition_index = r.i32()?;
            let leader_epoch = r.i32()?;
            let k = bounded(r.len_prefix(12)?)?;
            let mut new_isr_with_epochs = Vec::with_capacity(k);
            for _ in 0..k {
                new_isr_with_epochs.push(IsrMember {
                    broker_id: r.i32()?,
                    broker_epoch: r.i64()?,
                });
            }
            partitions.push(AlterPartitionData {
                partition_index,
                leader_epoch,
                new_isr_with_epochs,
                leader_recovery_state: r.u8()? as i8,
                partition_epoch: r.i32()?,
            });
        }
        topics.push(AlterPartitionTopic {
            topic_id,
            partitions,
        });
    }
    Ok(AlterPartitionRequest {
        broker_id,
        broker_epoch,
        topics,
    })
}

fn alter_partition_reply(r: &mut Reader<'_>) -> Result<AlterPartitionReply, RpcDecodeError> {
    let n = bounded(r.len_prefix(17)?)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let topic_id = r.uuid()?;
        // A partition is at least its index, the result tag and an error code with an empty
        // message.
        let m = bounded(r.len_prefix(8)?)?;
        let mut partitions = Vec::with_capacity(m);
        for _ in 0..m {
            let index = r.i32()?;
            let result = if r.bool()? {
                Err(error(r)?)
            } else {
                Ok(AlteredPartition {
                    leader_id: r.i32()?,
                    leader_epoch: r.i32()?,
                    isr: r.ids()?,
                    leader_recovery_state: r.u8()? as i8,
                    partition_epoch: r.i32()?,
                })
            };
            partitions.push((index, result));
        }
        topics.push(AlterPartitionTopicReply {
            topic_id,
            partitions,
        });
    }
    Ok(topics)
}

fn put_error(out: &mut Vec<u8>, e: &ControllerError) {
    out.extend_from_slice(&e.error.code().to_be_bytes());
    put_str(out, &e.message);
}

fn error(r: &mut Reader<'_>) -> Result<ControllerError, RpcDecodeError> {
    let code = r.i16()?;
    let message = r.string()?;
    let error = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
    Ok(ControllerError { error, message })
}

fn put_topic_ref(out: &mut Vec<u8>, t: &TopicRef) {
    match t {
        TopicRef::Name(name) => {
            out.push(0);
            put_str(out, name);
        }
        TopicRef::Id(id) => {
            out.push(1);
            out.extend_from_slice(id.as_bytes());
        }
    }
}

fn topic_ref(r: &mut Reader<'_>) -> Result<TopicRef, RpcDecodeError> {
    Ok(if r.bool()? {
        TopicRef::Id(r.uuid()?)
    } else {
        TopicRef::Name(r.string()?)
    })
}

fn check_format(r: &mut Reader<'_>) -> Result<(), RpcDecodeError> {
    match r.u8()? {
        RPC_FORMAT => Ok(()),
        other => Err(RecordDecodeError::UnknownBatchFormat(other)),
    }
}

fn bounded(n: usize) -> Result<usize, RpcDecodeError> {
    if n > MAX_ITEMS {
        return Err(RecordDecodeError::Malformed("too many items"));
    }
    Ok(n)
}

fn end(r: &Reader<'_>, bytes: &[u8]) -> Result<(), RpcDecodeError> {
    if r.pos != bytes.len() {
        return Err(RecordDecodeError::Malformed("trailing bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn error() -> impl Strategy<Value = ControllerError> {
        (
            prop::sample::select(vec![
                ResponseError::NotController,
                ResponseError::InvalidReplicationFactor,
                ResponseError::TopicAlreadyExists,
                ResponseError::UnknownServerError,
            ]),
            ".{0,20}",
        )
            .prop_map(|(error, message)| ControllerError { error, message })
    }

    fn uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    fn topic_ref() -> impl Strategy<Value = TopicRef> {
        prop_oneof![
            "[a-z]{1,8}".prop_map(TopicRef::Name),
            uuid().prop_map(TopicRef::Id)
        ]
    }

    fn request() -> impl Strategy<Value = ControllerRequest> {
        let endpoint = ("[A-Z]{1,8}", "[a-z0-9.]{1,12}", any::<u16>(), any::<i16>()).prop_map(
            |(name, host, port, security_protocol)| BrokerEndpoint {
                name,
                host,
                port,
                security_protocol,
            },
        );
        let topic = (
            "[a-z]{1,8}",
            any::<i32>(),
            any::<i16>(),
            prop::collection::btree_map(any::<i32>(), vec(any::<i32>(), 0..4), 0..3),
            vec(("[a-z.]{1,8}", ".{0,8}"), 0..3),
        )
            .prop_map(
                |(name, num_partitions, replication_factor, assignments, configs)| {
                    CreateTopicRequest {
                        name,
                        num_partitions,
                        replication_factor,
                        assignments,
                        configs,
                    }
                },
            );
        prop_oneof![
            (
                any::<i32>(),
                uuid(),
                vec(endpoint, 0..3),
                proptest::option::of("[a-z]{1,4}")
            )
                .prop_map(|(broker_id, incarnation_id, listeners, rack)| {
                    ControllerRequest::RegisterBroker(BrokerRegistrationRequest {
                        broker_id,
                        incarnation_id,
                        listeners,
                        rack,
                    })
                }),
            (
                any::<i32>(),
                any::<i64>(),
                any::<i64>(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(
                    |(broker_id, broker_epoch, offset, want_fence, want_shutdown)| {
                        ControllerRequest::BrokerHeartbeat(BrokerHeartbeatRequest {
                            broker_id,
                            broker_epoch,
                            current_metadata_offset: offset,
                            want_fence,
                            want_shutdown,
                        })
                    }
                ),
            (vec(topic, 0..3), any::<bool>()).prop_map(|(topics, validate_only)| {
                ControllerRequest::CreateTopics {
                    topics,
                    validate_only,
                }
            }),
            vec(topic_ref(), 0..4).prop_map(ControllerRequest::DeleteTopics),
            (
                "[a-z]{1,8}",
                any::<i32>(),
                proptest::option::of(vec(vec(any::<i32>(), 0..3), 0..3)),
                any::<bool>()
            )
                .prop_map(|(topic, count, assignments, validate_only)| {
                    ControllerRequest::CreatePartitions {
                        topic,
                        count,
                        assignments,
                        validate_only,
                    }
                }),
            vec(
                (
                    any::<i8>(),
                    "[a-z]{1,6}",
                    "[a-z.]{1,8}",
                    proptest::option::of(".{0,6}")
                ),
                0..3
            )
            .prop_map(|changes| ControllerRequest::AlterConfigs(
                changes
                    .into_iter()
                    .map(|(resource_type, resource_name, name, value)| ConfigChange {
                        resource_type,
                        resource_name,
                        name,
                        value,
                    })
                    .collect()
            )),
            (any::<i32>(), any::<i64>()).prop_map(|(broker_id, broker_epoch)| {
                ControllerRequest::AllocateProducerIds {
                    broker_id,
                    broker_epoch,
                }
            }),
            (any::<i32>(), "[a-z0-9.:]{1,16}")
                .prop_map(|(node_id, addr)| ControllerRequest::AddObserver { node_id, addr }),
            (any::<i32>(), "[a-z0-9.:]{1,16}")
                .prop_map(|(node_id, addr)| ControllerRequest::AddVoter { node_id, addr }),
            any::<i32>().prop_map(|node_id| ControllerRequest::RemoveVoter { node_id }),
            Just(ControllerRequest::DescribeQuorum),
            alter_partition_request().prop_map(ControllerRequest::AlterPartition),
            (
                prop_oneof![Just(ElectionType::Preferred), Just(ElectionType::Unclean)],
                proptest::option::of(vec(("[a-z]{1,6}", vec(any::<i32>(), 0..3)), 0..3))
            )
                .prop_map(|(election, partitions)| ControllerRequest::ElectLeaders {
                    election,
                    partitions
                }),
            vec(
                (
                    "[a-z]{1,6}",
                    vec(
                        (any::<i32>(), proptest::option::of(vec(any::<i32>(), 0..4))).prop_map(
                            |(partition, replicas)| ReassignPartition {
                                partition,
                                replicas
                            }
                        ),
                        0..3
                    )
                ),
                0..3
            )
            .prop_map(ControllerRequest::AlterPartitionReassignments),
        ]
    }

    fn alter_partition_request() -> impl Strategy<Value = AlterPartitionRequest> {
        let member = (any::<i32>(), any::<i64>()).prop_map(|(broker_id, broker_epoch)| IsrMember {
            broker_id,
            broker_epoch,
        });
        let partition = (
            any::<i32>(),
            any::<i32>(),
            vec(member, 0..4),
            any::<i8>(),
            any::<i32>(),
        )
            .prop_map(
                |(partition_index, leader_epoch, new_isr_with_epochs, state, partition_epoch)| {
                    AlterPartitionData {
                        partition_index,
                        leader_epoch,
                        new_isr_with_epochs,
                        leader_recovery_state: state,
                        partition_epoch,
                    }
                },
            );
        let topic =
            (uuid(), vec(partition, 0..3)).prop_map(|(topic_id, partitions)| AlterPartitionTopic {
                topic_id,
                partitions,
            });
        (any::<i32>(), any::<i64>(), vec(topic, 0..3)).prop_map(
            |(broker_id, broker_epoch, topics)| AlterPartitionRequest {
                broker_id,
                broker_epoch,
                topics,
            },
        )
    }

    fn alter_partition_reply() -> impl Strategy<Value = AlterPartitionReply> {
        let altered = (
            any::<i32>(),
            any::<i32>(),
            vec(any::<i32>(), 0..4),
            any::<i8>(),
            any::<i32>(),
        )
            .prop_map(
                |(leader_id, leader_epoch, isr, leader_recovery_state, partition_epoch)| {
                    AlteredPartition {
                        leader_id,
                        leader_epoch,
                        isr,
                        leader_recovery_state,
                        partition_epoch,
                    }
                },
            );
        let partition = (
            any::<i32>(),
            prop_oneof![altered.prop_map(Ok), error().prop_map(Err)],
        );
        let topic = (uuid(), vec(partition, 0..3)).prop_map(|(topic_id, partitions)| {
            AlterPartitionTopicReply {
                topic_id,
                partitions,
            }
        });
        vec(topic, 0..3)
    }

    fn reply() -> impl Strategy<Value = ControllerReply> {
        let replica = (any::<i32>(), "[a-z0-9:]{0,10}", any::<i64>()).prop_map(
            |(node_id, addr, log_end_offset)| ReplicaState {
                node_id,
                addr,
                log_end_offset,
            },
        );
        let response = prop_oneof![
            any::<i64>().prop_map(|broker_epoch| ControllerResponse::Registered { broker_epoch }),
            (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c)| {
                ControllerResponse::Heartbeat(HeartbeatReply {
                    is_caught_up: a,
                    is_fenced: b,
                    should_shutdown: c,
                })
            }),
            vec(
                (
                    "[a-z]{1,6}",
                    prop_oneof![
                        (uuid(), any::<i32>(), any::<i16>()).prop_map(
                            |(topic_id, num_partitions, replication_factor)| Ok(CreatedTopic {
                                topic_id,
                                num_partitions,
                                replication_factor
                            })
                        ),
                        error().prop_map(Err)
                    ]
                ),
                0..3
            )
            .prop_map(ControllerResponse::CreateTopics),
            vec(
                (
                    topic_ref(),
                    prop_oneof![("[a-z]{1,6}", uuid()).prop_map(Ok), error().prop_map(Err)]
                ),
                0..3
            )
            .prop_map(ControllerResponse::DeleteTopics),
            Just(ControllerResponse::Done),
            (any::<i64>(), any::<i64>()).prop_map(|(first, size)| ControllerResponse::ProducerIds(
                ProducerIdBlock { first, size }
            )),
            (
                "[a-zA-Z0-9]{0,22}",
                any::<i32>(),
                any::<i64>(),
                any::<i64>(),
                vec(replica.clone(), 0..4),
                vec(replica, 0..4)
            )
                .prop_map(
                    |(cluster_id, leader_id, leader_epoch, high_watermark, voters, observers)| {
                        ControllerResponse::Quorum(QuorumInfo {
                            cluster_id,
                            leader_id,
                            leader_epoch,
                            high_watermark,
                            voters,
                            observers,
                        })
                    }
                ),
            alter_partition_reply().prop_map(ControllerResponse::AlterPartition),
            vec(
                (
                    "[a-z]{1,6}",
                    vec(
                        (
                            any::<i32>(),
                            prop_oneof![Just(Ok(())), error().prop_map(Err)]
                        ),
                        0..3
                    )
                ),
                0..3
            )
            .prop_map(ControllerResponse::Partitions),
        ];
        prop_oneof![
            (proptest::option::of(any::<u64>()), response).prop_map(
                |(metadata_offset, response)| {
                    ControllerReply::Ok {
                        metadata_offset,
                        response,
                    }
                }
            ),
            error().prop_map(ControllerReply::Failed),
            proptest::option::of((any::<i32>(), "[a-z0-9:]{0,10}"))
                .prop_map(|leader| ControllerReply::NotController { leader }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in request()) {
            prop_assert_eq!(decode_request(&encode_request(&req)), Ok(req));
        }

        #[test]
        fn replies_round_trip(reply in reply()) {
            prop_assert_eq!(decode_reply(&encode_reply(&reply)), Ok(reply));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
            let _ = decode_request(&bytes);
            let _ = decode_reply(&bytes);
        }

        #[test]
        fn truncations_are_errors(req in request(), reply in reply(), cut in any::<prop::sample::Index>()) {
            let bytes = encode_request(&req);
            let at = cut.index(bytes.len());
            prop_assert!(decode_request(&bytes[..at]).is_err());
            let bytes = encode_reply(&reply);
            let at = cut.index(bytes.len());
            prop_assert!(decode_reply(&bytes[..at]).is_err());
        }
    }

    #[test]
    fn a_forged_count_is_refused_before_allocating() {
        // DeleteTopics claiming 2^40 topics in a few bytes.
        let mut bytes = vec![RPC_FORMAT, 4];
        put_uvarint(&mut bytes, 1 << 40);
        assert!(decode_request(&bytes).is_err());
    }

    #[test]
    fn forged_alter_partition_counts_are_refused_before_allocating() {
        // 2^40 topics, then one topic of 2^40 partitions, then one partition of 2^40 members.
        let mut bytes = vec![RPC_FORMAT, 12];
        put_i32(&mut bytes, 1);
        put_i64(&mut bytes, 0);
        put_uvarint(&mut bytes, 1 << 40);
        assert!(decode_request(&bytes).is_err());

        let mut bytes = vec![RPC_FORMAT, 12];
        put_i32(&mut bytes, 1);
        put_i64(&mut bytes, 0);
        put_uvarint(&mut bytes, 1);
        bytes.extend_from_slice(&[7; 16]);
        put_uvarint(&mut bytes, 1 << 40);
        assert!(decode_request(&bytes).is_err());

        let mut bytes = vec![RPC_FORMAT, 12];
        put_i32(&mut bytes, 1);
        put_i64(&mut bytes, 0);
        put_uvarint(&mut bytes, 1);
        bytes.extend_from_slice(&[7; 16]);
        put_uvarint(&mut bytes, 1);
        put_i32(&mut bytes, 0);
        put_i32(&mut bytes, 0);
        put_uvarint(&mut bytes, 1 << 40);
        bytes.extend_from_slice(&[0; 5]);
        assert!(decode_request(&bytes).is_err());

        // An answer of 2^40 partitions.
        let mut bytes = vec![RPC_FORMAT, 0, 0, 8];
        put_uvarint(&mut bytes, 1);
        bytes.extend_from_slice(&[7; 16]);
        put_uvarint(&mut bytes, 1 << 40);
        assert!(decode_reply(&bytes).is_err());
    }

    #[test]
    fn more_than_max_items_is_refused_even_when_the_bytes_are_there() {
        let mut bytes = vec![RPC_FORMAT, 12];
        put_i32(&mut bytes, 1);
        put_i64(&mut bytes, 0);
        put_uvarint(&mut bytes, 1);
        bytes.extend_from_slice(&[7; 16]);
        put_uvarint(&mut bytes, 1);
        put_i32(&mut bytes, 0);
        put_i32(&mut bytes, 0);
        let members = MAX_ITEMS as u64 + 1;
        put_uvarint(&mut bytes, members);
        bytes.resize(bytes.len() + 12 * members as usize, 0);
        bytes.push(0);
        put_i32(&mut bytes, 0);
        assert_eq!(
            decode_request(&bytes),
            Err(RecordDecodeError::Malformed("too many items"))
        );
    }

    #[test]
    fn another_format_is_refused() {
        let mut bytes = encode_request(&ControllerRequest::DescribeQuorum);
        bytes[0] = 2;
        assert!(matches!(
            decode_request(&bytes),
            Err(RecordDecodeError::UnknownBatchFormat(2))
        ));
    }
}
