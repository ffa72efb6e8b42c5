//! The metadata log's records, under the names of Kafka's KRaft metadata schema (and its record
//! type numbers), so that an operator who knows `PartitionChangeRecord` knows ours. The binary
//! encoding is our own, compact and versioned: one raft entry carries a batch of records
//! (`encode_batch` / `decode_batch`), each framed as `type, version, body length, body`.
//!
//! Decoding is strict: a record of an unknown type or version is an error, never skipped, because
//! a node that skipped what it does not understand would build a different image from its peers
//! and serve wrong metadata without knowing it. Every length is checked against the bytes left
//! before anything is allocated.

use uuid::Uuid;

/// Kafka's "no leader" (`LeaderAndIsr.NO_LEADER`).
pub const NO_LEADER: i32 = -1;

/// Configuration resource types, Kafka's `ConfigResource.Type` numbers.
pub mod config_resource {
    /// A topic's configs.
    pub const TOPIC: i8 = 2;
    /// A broker's configs (empty name: the cluster-wide default).
    pub const BROKER: i8 = 4;
}

/// One of a broker's listeners as it registered it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerEndpoint {
    /// The listener's name (`PLAINTEXT`, or a named listener).
    pub name: String,
    /// The advertised host.
    pub host: String,
    /// The advertised port.
    pub port: u16,
    /// Kafka's security protocol id (0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL).
    pub security_protocol: i16,
}

/// RegisterBrokerRecord: a broker (re)registered with a new incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBrokerRecord {
    /// The broker's `node.id`.
    pub broker_id: i32,
    /// Random id of this process's life; a new one at every start.
    pub incarnation_id: Uuid,
    /// The broker epoch. `-1` in records the controller writes: the epoch is then the offset of
    /// the entry that carries the record (KIP-903), which only the log knows. Snapshots write the
    /// resolved epoch.
    pub broker_epoch: i64,
    /// The listeners clients reach it by.
    pub listeners: Vec<BrokerEndpoint>,
    /// `broker.rack`, if set.
    pub rack: Option<String>,
    /// Whether it is fenced (a new registration always is).
    pub fenced: bool,
    /// Whether it is in controlled shutdown.
    pub in_controlled_shutdown: bool,
}

/// UnregisterBrokerRecord: a broker removed from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnregisterBrokerRecord {
    /// The broker's id.
    pub broker_id: i32,
    /// The epoch of the registration being removed.
    pub broker_epoch: i64,
}

/// FenceBrokerRecord / UnfenceBrokerRecord: a broker leaves or rejoins the set that may lead and
/// be in sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerFencingRecord {
    /// The broker's id.
    pub id: i32,
    /// The epoch of the registration this applies to; a record for an older one is a no-op.
    pub epoch: i64,
}

/// BrokerRegistrationChangeRecord: a change of a registered broker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistrationChangeRecord {
    /// The broker's id.
    pub broker_id: i32,
    /// The epoch of the registration this applies to.
    pub broker_epoch: i64,
    /// New fenced state, if it changes.
    pub fenced: Option<bool>,
    /// New controlled-shutdown state, if it changes.
    pub in_controlled_shutdown: Option<bool>,
}

/// TopicRecord: a topic was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    /// The topic's name.
    pub name: String,
    /// The topic's id.
    pub topic_id: Uuid,
}

/// PartitionRecord: a partition was created, with its full state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionRecord {
    /// The topic's id.
    pub topic_id: Uuid,
    /// The partition index.
    pub partition_id: i32,
    /// The replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// The leader, or `NO_LEADER`.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The partition epoch (bumped by every change).
    pub partition_epoch: i32,
    /// Replicas a reassignment in progress will remove (version 1).
    pub removing_replicas: Vec<i32>,
    /// Replicas a reassignment in progress adds (version 1).
    pub adding_replicas: Vec<i32>,
}

/// PartitionChangeRecord: a change of a partition's leader, ISR or replicas. Fields left `None`
/// keep their value. Applying it bumps the partition epoch, and the leader epoch when the leader
/// changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionChangeRecord {
    /// The topic's id.
    pub topic_id: Uuid,
    /// The partition index.
    pub partition_id: i32,
    /// The new ISR.
    pub isr: Option<Vec<i32>>,
    /// The new leader (`NO_LEADER` for none).
    pub leader: Option<i32>,
    /// The new replica set.
    pub replicas: Option<Vec<i32>>,
    /// The replicas a reassignment will remove (version 1; empty when it ends).
    pub removing_replicas: Option<Vec<i32>>,
    /// The replicas a reassignment adds (version 1; empty when it ends).
    pub adding_replicas: Option<Vec<i32>>,
}

/// RemoveTopicRecord: a topic was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveTopicRecord {
    /// The deleted topic's id.
    pub topic_id: Uuid,
}

/// ConfigRecord: a config was set or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRecord {
    /// `config_resource::TOPIC` or `config_resource::BROKER`.
    pub resource_type: i8,
    /// The topic name, or the broker id as text (empty: the cluster default).
    pub resource_name: String,
    /// The config's name.
    pub name: String,
    /// Its value; `None` removes it (back to the default).
    pub value: Option<String>,
}

/// ProducerIdsRecord: a block of producer ids was handed to a broker. `next_producer_id` is the
/// first id of the next block, i.e. the end of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerIdsRecord {
    /// The broker the block went to.
    pub broker_id: i32,
    /// That broker's epoch.
    pub broker_epoch: i64,
    /// The next id not yet handed out.
    pub next_producer_id: i64,
}

/// FeatureLevelRecord: a finalized feature level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureLevelRecord {
    /// The feature's name (e.g. `metadata.version`).
    pub name: String,
    /// Its level; 0 removes it.
    pub feature_level: i16,
}

/// A metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// RegisterBrokerRecord (type 0).
    RegisterBroker(RegisterBrokerRecord),
    /// UnregisterBrokerRecord (type 1).
    UnregisterBroker(UnregisterBrokerRecord),
    /// TopicRecord (type 2).
    Topic(TopicRecord),
    /// PartitionRecord (type 3).
    Partition(PartitionRecord),
    /// ConfigRecord (type 4).
    Config(ConfigRecord),
    /// PartitionChangeRecord (type 5).
    PartitionChange(PartitionChangeRecord),
    /// FenceBrokerRecord (type 7).
    FenceBroker(BrokerFencingRecord),
    /// UnfenceBrokerRecord (type 8).
    UnfenceBroker(BrokerFencingRecord),
    /// RemoveTopicRecord (type 9).
    RemoveTopic(RemoveTopicRecord),
    /// FeatureLevelRecord (type 12).
    FeatureLevel(FeatureLevelRecord),
    /// ProducerIdsRecord (type 15).
    ProducerIds(ProducerIdsRecord),
    /// BrokerRegistrationChangeRecord (type 17).
    BrokerRegistrationChange(BrokerRegistrationChangeRecord),
    /// NoOpRecord (type 20): written by a new leader so that it can commit in its own term.
    NoOp,
}

impl MetadataRecord {
    /// The version this record is written in: the oldest that holds it, so that a node of the
    /// previous release still replays every log that uses nothing newer (a reassignment's
    /// lists are the only version-1 content).
    fn version(&self) -> u16 {
        match self {
            MetadataRecord::Partition(r)
                if !r.removing_replicas.is_empty() || !r.adding_replicas.is_empty() =>
            {
                1
            }
            MetadataRecord::PartitionChange(r)
                if r.removing_replicas.is_some() || r.adding_replicas.is_some() =>
            {
                1
            }
            _ => 0,
        }
    }

    /// Kafka's record type number (its `apiKey` in the metadata schema).
    pub fn type_id(&self) -> u16 {
        match self {
            MetadataRecord::RegisterBroker(_) => 0,
            MetadataRecord::UnregisterBroker(_) => 1,
            MetadataRecord::Topic(_) => 2,
            MetadataRecord::Partition(_) => 3,
            MetadataRecord::Config(_) => 4,
            MetadataRecord::PartitionChange(_) => 5,
            MetadataRecord::FenceBroker(_) => 7,
            MetadataRecord::UnfenceBroker(_) => 8,
            MetadataRecord::RemoveTopic(_) => 9,
            MetadataRecord::FeatureLevel(_) => 12,
            MetadataRecord::ProducerIds(_) => 15,
            MetadataRecord::BrokerRegistrationChange(_) => 17,
            MetadataRecord::NoOp => 20,
        }
    }

    /// Kafka's name of the record type.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetadataRecord::RegisterBroker(_) => "RegisterBrokerRecord",
            MetadataRecord::UnregisterBroker(_) => "UnregisterBrokerRecord",
            MetadataRecord::Topic(_) => "TopicRecord",
            MetadataRecord::Partition(_) => "PartitionRecord",
            MetadataRecord::Config(_) => "ConfigRecord",
            MetadataRecord::PartitionChange(_) => "PartitionChangeRecord",
            MetadataRecord::FenceBroker(_) => "FenceBrokerRecord",
            MetadataRecord::UnfenceBroker(_) => "UnfenceBrokerRecord",
            MetadataRecord::RemoveTopic(_) => "RemoveTopicRecord",
            MetadataRecord::FeatureLevel(_) => "FeatureLevelRecord",
            MetadataRecord::ProducerIds(_) => "ProducerIdsRecord",
            MetadataRecord::BrokerRegistrationChange(_) => "BrokerRegistrationChangeRecord",
            MetadataRecord::NoOp => "NoOpRecord",
        }
    }
}

/// The newest version of a record type this build knows. Each type has its own version so
/// that one can change without the others; a reader accepts the versions up to it, never a
/// newer one. PartitionRecord and PartitionChangeRecord are at 1 (reassignment's adding and
/// removing replicas); everything else at 0.
fn record_version(type_id: u16) -> u16 {
    match type_id {
        3 | 5 => 1,
        _ => 0,
    }
}
/// The version of a batch's framing.
const BATCH_FORMAT: u8 = 0;
/// No batch holds more records than this; a count above it is corrupt, not large.
pub const MAX_RECORDS_PER_BATCH: usize = 1 << 20;

/// Why bytes are not a metadata record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    /// The bytes end inside a field.
    #[error("metadata record truncated at byte {0}")]
    Truncated(usize),
    /// A record type this node does not know: it cannot follow the log and must stop.
    #[error(
        "unknown metadata record type {type_id} (version {version}): this node is older than the log it follows"
    )]
    UnknownType {
        /// The type number.
        type_id: u16,
        /// Its version.
        version: u16,
    },
    /// A version of a known record type this node does not know.
    #[error("unsupported version {version} of metadata record {name}")]
    UnknownVersion {
        /// Kafka's name of the type.
        name: &'static str,
        /// The version found.
        version: u16,
    },
    /// A batch framing this node does not know.
    #[error("unsupported metadata batch format {0}")]
    UnknownBatchFormat(u8),
    /// A field holds an impossible value.
    #[error("malformed metadata record: {0}")]
    Malformed(&'static str),
}

/// Encodes records as one batch (one raft entry's payload).
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + records.len() * 32);
    out.push(BATCH_FORMAT);
    put_uvarint(&mut out, records.len() as u64);
    let mut body = Vec::new();
    for record in records {
        body.clear();
        let version = record.version();
        encode_body(record, version, &mut body);
        put_uvarint(&mut out, u64::from(record.type_id()));
        put_uvarint(&mut out, u64::from(version));
        put_uvarint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a batch written by `encode_batch`.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, RecordDecodeError> {
    let mut r = Reader::new(bytes);
    let format = r.u8()?;
    if format != BATCH_FORMAT {
        return Err(RecordDecodeError::UnknownBatchFormat(format));
    }
    let count = r.len_prefix(1)?;
    if count > MAX_RECORDS_PER_BATCH {
        return Err(RecordDecodeError::Malformed("record count"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let type_id = r.u16_varint()?;
        let version = r.u16_varint()?;
        let len = r.len_prefix(1)?;
        let start = r.pos;
        let body = r.take(len)?;
        let mut br = Reader {
            buf: body,
            pos: 0,
            base: start,
        };
        let record = decode_body(type_id, version, &mut br)?;
        if br.pos != body.len() {
            return Err(RecordDecodeError::Malformed("trailing bytes in a record"));
        }
        records.push(record);
    }
    if r.pos != bytes.len() {
        return Err(RecordDecodeError::Malformed(
            "trailing bytes after the batch",
        ));
    }
    Ok(records)
}

fn encode_body(record: &MetadataRecord, version: u16, out: &mut Vec<u8>) {
    match record {
        MetadataRecord::RegisterBroker(r) => {
            put_i32(out, r.broker_id);
            out.extend_from_slice(r.incarnation_id.as_bytes());
            put_i64(out, r.broker_epoch);
            put_uvarint(out, r.listeners.len() as u64);
            for l in &r.listeners {
                put_str(out, &l.name);
                put_str(out, &l.host);
                out.extend_from_slice(&l.port.to_be_bytes());
                out.extend_from_slice(&l.security_protocol.to_be_bytes());
            }
            put_opt_str(out, r.rack.as_deref());
            out.push(u8::from(r.fenced));
            out.push(u8::from(r.in_controlled_shutdown));
        }
        MetadataRecord::UnregisterBroker(r) => {
            put_i32(out, r.broker_id);
            put_i64(out, r.broker_epoch);
        }
        MetadataRecord::Topic(r) => {
            put_str(out, &r.name);
            out.extend_from_slice(r.topic_id.as_bytes());
        }
        MetadataRecord::Partition(r) => {
            out.extend_from_slice(r.topic_id.as_bytes());
            put_i32(out, r.partition_id);
            put_ids(out, &r.replicas);
            put_ids(out, &r.isr);
            put_i32(out, r.leader);
            put_i32(out, r.leader_epoch);
            put_i32(out, r.partition_epoch);
            if version >= 1 {
                put_ids(out, &r.removing_replicas);
                put_ids(out, &r.adding_replicas);
            }
        }
        MetadataRecord::Config(r) => {
            out.push(r.resource_type as u8);
            put_str(out, &r.resource_name);
            put_str(out, &r.name);
            put_opt_str(out, r.value.as_deref());
        }
        MetadataRecord::PartitionChange(r) => {
            out.extend_from_slice(r.topic_id.as_bytes());
            put_i32(out, r.partition_id);
            match &r.isr {
                Some(isr) => {
                    out.push(1);
                    put_ids(out, isr);
                }
                None => out.push(0),
            }
            match r.leader {
                Some(leader) => {
                    out.push(1);
                    put_i32(out, leader);
                }
                None => out.push(0),
            }
            let lists = [&r.replicas, &r.removing_replicas, &r.adding_replicas];
            for ids in &lists[..if version >= 1 { 3 } else { 1 }] {
                match ids {
                    Some(ids) => {
                        out.push(1);
                        put_ids(out, ids);
                    }
                    None => out.push(0),
                }
            }
        }
        MetadataRecord::FenceBroker(r) | MetadataRecord::UnfenceBroker(r) => {
            put_i32(out, r.id);
            put_i64(out, r.epoch);
        }
        MetadataRecord::RemoveTopic(r) => out.extend_from_slice(r.topic_id.as_bytes()),
        MetadataRecord::FeatureLevel(r) => {
            put_str(out, &r.name);
            out.extend_from_slice(&r.feature_level.to_be_bytes());
        }
        MetadataRecord::ProducerIds(r) => {
            put_i32(out, r.broker_id);
            put_i64(out, r.broker_epoch);
            put_i64(out, r.next_producer_id);
        }
        MetadataRecord::BrokerRegistrationChange(r) => {
            put_i32(out, r.broker_id);
            put_i64(out, r.broker_epoch);
            put_opt_bool(out, r.fenced);
            put_opt_bool(out, r.in_controlled_shutdown);
        }
        MetadataRecord::NoOp => {}
    }
}

fn decode_body(
    type_id: u16,
    version: u16,
    r: &mut Reader<'_>,
) -> Result<MetadataRecord, RecordDecodeError> {
    let name = match type_id {
        0 => "RegisterBrokerRecord",
        1 => "UnregisterBrokerRecord",
        2 => "TopicRecord",
        3 => "PartitionRecord",
        4 => "ConfigRecord",
        5 => "PartitionChangeRecord",
        7 => "FenceBrokerRecord",
        8 => "UnfenceBrokerRecord",
        9 => "RemoveTopicRecord",
        12 => "FeatureLevelRecord",
        15 => "ProducerIdsRecord",
        17 => "BrokerRegistrationChangeRecord",
        20 => "NoOpRecord",
        _ => return Err(RecordDecodeError::UnknownType { type_id, version }),
    };
    if version > record_version(type_id) {
        return Err(RecordDecodeError::UnknownVersion { name, version });
    }
    Ok(match type_id {
        0 => {
            let broker_id = r.i32()?;
            let incarnation_id = r.uuid()?;
            let broker_epoch = r.i64()?;
            // A listener is at least two length bytes and four fixed bytes.
            let n = r.len_prefix(6)?;
            let mut listeners = Vec::with_capacity(n);
            for _ in 0..n {
                listeners.push(BrokerEndpoint {
                    name: r.string()?,
                    host: r.string()?,
                    port: r.u16()?,
                    security_protocol: r.i16()?,
                });
            }
            MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id,
                incarnation_id,
                broker_epoch,
                listeners,
                rack: r.opt_string()?,
                fenced: r.bool()?,
                in_controlled_shutdown: r.bool()?,
            })
        }
        1 => MetadataRecord::UnregisterBroker(UnregisterBrokerRecord {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
        }),
        2 => MetadataRecord::Topic(TopicRecord {
            name: r.string()?,
            topic_id: r.uuid()?,
        }),
        3 => {
            let mut p = PartitionRecord {
                topic_id: r.uuid()?,
                partition_id: r.i32()?,
                replicas: r.ids()?,
                isr: r.ids()?,
                leader: r.i32()?,
                leader_epoch: r.i32()?,
                partition_epoch: r.i32()?,
                ..PartitionRecord::default()
            };
            if version >= 1 {
                p.removing_replicas = r.ids()?;
                p.adding_replicas = r.ids()?;
            }
            MetadataRecord::Partition(p)
        }
        4 => MetadataRecord::Config(ConfigRecord {
            resource_type: r.u8()? as i8,
            resource_name: r.string()?,
            name: r.string()?,
            value: r.opt_string()?,
        }),
        5 => {
            let topic_id = r.uuid()?;
            let partition_id = r.i32()?;
            let isr = if r.bool()? { Some(r.ids()?) } else { None };
            let leader = if r.bool()? { Some(r.i32()?) } else { None };
            let replicas = if r.bool()? { Some(r.ids()?) } else { None };
            let (mut removing_replicas, mut adding_replicas) = (None, None);
            if version >= 1 {
                removing_replicas = if r.bool()? { Some(r.ids()?) } else { None };
                adding_replicas = if r.bool()? { Some(r.ids()?) } else { None };
            }
            MetadataRecord::PartitionChange(PartitionChangeRecord {
                topic_id,
                partition_id,
                isr,
                leader,
                replicas,
                removing_replicas,
                adding_replicas,
            })
        }
        7 => MetadataRecord::FenceBroker(BrokerFencingRecord {
            id: r.i32()?,
            epoch: r.i64()?,
        }),
        8 => MetadataRecord::UnfenceBroker(BrokerFencingRecord {
            id: r.i32()?,
            epoch: r.i64()?,
        }),
        9 => MetadataRecord::RemoveTopic(RemoveTopicRecord {
            topic_id: r.uuid()?,
        }),
        12 => MetadataRecord::FeatureLevel(FeatureLevelRecord {
            name: r.string()?,
            feature_level: r.i16()?,
        }),
        15 => MetadataRecord::ProducerIds(ProducerIdsRecord {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
            next_producer_id: r.i64()?,
        }),
        17 => MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChangeRecord {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
            fenced: r.opt_bool()?,
            in_controlled_shutdown: r.opt_bool()?,
        }),
        _ => MetadataRecord::NoOp,
    })
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

pub(crate) fn put_opt_bool(out: &mut Vec<u8>, v: Option<bool>) {
    out.push(match v {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
}

pub(crate) fn put_ids(out: &mut Vec<u8>, ids: &[i32]) {
    put_uvarint(out, ids.len() as u64);
    for id in ids {
        put_i32(out, *id);
    }
}

/// A bounds-checked cursor: every read says where it failed instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
    /// Offset of `buf` in the whole batch, for error positions.
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], RecordDecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(RecordDecodeError::Truncated(self.base + self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordDecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, RecordDecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, RecordDecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecordDecodeError::Malformed("boolean")),
        }
    }

    pub(crate) fn opt_bool(&mut self) -> Result<Option<bool>, RecordDecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(false)),
            2 => Ok(Some(true)),
            _ => Err(RecordDecodeError::Malformed("optional boolean")),
        }
    }

    pub(crate) fn u16(&mut self) -> Result<u16, RecordDecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i16(&mut self) -> Result<i16, RecordDecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, RecordDecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, RecordDecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub(crate) fn uuid(&mut self) -> Result<Uuid, RecordDecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64, RecordDecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordDecodeError::Malformed("varint longer than 10 bytes"))
    }

    pub(crate) fn u16_varint(&mut self) -> Result<u16, RecordDecodeError> {
        u16::try_from(self.uvarint()?).map_err(|_| RecordDecodeError::Malformed("type or version"))
    }

    /// A count of items of at least `min_item_bytes` each, checked against the bytes left so
    /// that a forged count cannot make the decoder allocate.
    pub(crate) fn len_prefix(&mut self, min_item_bytes: usize) -> Result<usize, RecordDecodeError> {
        let n = self.uvarint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes as u64) > left {
            return Err(RecordDecodeError::Truncated(self.base + self.pos));
        }
        Ok(n as usize)
    }

    pub(crate) fn string(&mut self) -> Result<String, RecordDecodeError> {
        let n = self.len_prefix(1)?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordDecodeError::Malformed("utf-8"))
    }

    pub(crate) fn opt_string(&mut self) -> Result<Option<String>, RecordDecodeError> {
        if self.bool()? {
            Ok(Some(self.string()?))
        } else {
            Ok(None)
        }
    }

    pub(crate) fn ids(&mut self) -> Result<Vec<i32>, RecordDecodeError> {
        let n = self.len_prefix(4)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.i32()?);
        }
        Ok(ids)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn uuid_strategy() -> impl Strategy<Value = Uuid> {
        // A handful of ids, so that generated sequences refer to the same topics.
        (0u8..6).prop_map(|n| Uuid::from_bytes([n + 1; 16]))
    }

    fn ids() -> impl Strategy<Value = Vec<i32>> {
        vec(1i32..6, 0..4)
    }

    /// Any record, with fields drawn from small domains so that a sequence of them refers to the
    /// same brokers and topics and exercises the image's cross-references.
    pub(crate) fn record_strategy() -> impl Strategy<Value = MetadataRecord> {
        let name = "[a-c]{1,2}";
        prop_oneof![
            (
                1i32..6,
                any::<u128>(),
                prop_oneof![Just(-1i64), 0i64..50],
                vec((name, name, any::<u16>(), 0i16..4), 0..3),
                proptest::option::of(name),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(broker_id, inc, broker_epoch, ls, rack, fenced, ics)| {
                    MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                        broker_id,
                        incarnation_id: Uuid::from_u128(inc),
                        broker_epoch,
                        listeners: ls
                            .into_iter()
                            .map(|(name, host, port, security_protocol)| BrokerEndpoint {
                                name,
                                host,
                                port,
                                security_protocol,
                            })
                            .collect(),
                        rack,
                        fenced,
                        in_controlled_shutdown: ics,
                    })
                }),
            (1i32..6, 0i64..50).prop_map(|(broker_id, broker_epoch)| {
                MetadataRecord::UnregisterBroker(UnregisterBrokerRecord {
                    broker_id,
                    broker_epoch,
                })
            }),
            (name, uuid_strategy())
                .prop_map(|(name, topic_id)| MetadataRecord::Topic(TopicRecord { name, topic_id })),
            (
                uuid_strategy(),
                0i32..3,
                ids(),
                ids(),
                -1i32..6,
                0i32..5,
                0i32..5,
                (ids(), ids())
            )
                .prop_map(
                    |(topic_id, partition_id, replicas, isr, leader, le, pe, (rm, add))| {
                        MetadataRecord::Partition(PartitionRecord {
                            topic_id,
                            partition_id,
                            replicas,
                            isr,
                            leader,
                            leader_epoch: le,
                            partition_epoch: pe,
                            removing_replicas: rm,
                            adding_replicas: add,
                        })
                    }
                ),
            (
                prop_oneof![Just(2i8), Just(4i8)],
                name,
                name,
                proptest::option::of(name)
            )
                .prop_map(|(resource_type, resource_name, name, value)| {
                    MetadataRecord::Config(ConfigRecord {
                        resource_type,
                        resource_name,
                        name,
                        value,
                    })
                }),
            (
                uuid_strategy(),
                0i32..3,
                proptest::option::of(ids()),
                proptest::option::of(-1i32..6),
                proptest::option::of(ids()),
                proptest::option::of(ids()),
                proptest::option::of(ids())
            )
                .prop_map(
                    |(topic_id, partition_id, isr, leader, replicas, rm, add)| {
                        MetadataRecord::PartitionChange(PartitionChangeRecord {
                            topic_id,
                            partition_id,
                            isr,
                            leader,
                            replicas,
                            removing_replicas: rm,
                            adding_replicas: add,
                        })
                    }
                ),
            (1i32..6, 0i64..50).prop_map(|(id, epoch)| MetadataRecord::FenceBroker(
                BrokerFencingRecord { id, epoch }
            )),
            (1i32..6, 0i64..50).prop_map(|(id, epoch)| MetadataRecord::UnfenceBroker(
                BrokerFencingRecord { id, epoch }
            )),
            uuid_strategy()
                .prop_map(|topic_id| MetadataRecord::RemoveTopic(RemoveTopicRecord { topic_id })),
            (name, 0i16..3).prop_map(|(name, feature_level)| {
                MetadataRecord::FeatureLevel(FeatureLevelRecord {
                    name,
                    feature_level,
                })
            }),
            (1i32..6, 0i64..50, 0i64..10_000).prop_map(|(broker_id, broker_epoch, next)| {
                MetadataRecord::ProducerIds(ProducerIdsRecord {
                    broker_id,
                    broker_epoch,
                    next_producer_id: next,
                })
            }),
            (
                1i32..6,
                0i64..50,
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>())
            )
                .prop_map(|(broker_id, broker_epoch, fenced, ics)| {
                    MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChangeRecord {
                        broker_id,
                        broker_epoch,
                        fenced,
                        in_controlled_shutdown: ics,
                    })
                }),
            Just(MetadataRecord::NoOp),
        ]
    }

    proptest! {
        #[test]
        fn batches_round_trip(records in vec(record_strategy(), 0..20)) {
            let bytes = encode_batch(&records);
            prop_assert_eq!(decode_batch(&bytes), Ok(records));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
            let _ = decode_batch(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(records in vec(record_strategy(), 1..6), cut in any::<prop::sample::Index>()) {
            let bytes = encode_batch(&records);
            let cut = cut.index(bytes.len());
            prop_assert!(decode_batch(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn unknown_type_and_version_stop_instead_of_skipping() {
        let mut bytes = vec![BATCH_FORMAT, 1];
        put_uvarint(&mut bytes, 9999);
        put_uvarint(&mut bytes, 0);
        put_uvarint(&mut bytes, 0);
        assert_eq!(
            decode_batch(&bytes),
            Err(RecordDecodeError::UnknownType {
                type_id: 9999,
                version: 0
            })
        );
        let mut bytes = vec![BATCH_FORMAT, 1];
        put_uvarint(&mut bytes, 20);
        put_uvarint(&mut bytes, 7);
        put_uvarint(&mut bytes, 0);
        assert_eq!(
            decode_batch(&bytes),
            Err(RecordDecodeError::UnknownVersion {
                name: "NoOpRecord",
                version: 7
            })
        );
        assert_eq!(
            decode_batch(&[9, 0]),
            Err(RecordDecodeError::UnknownBatchFormat(9))
        );
    }

    #[test]
    fn a_forged_count_is_refused_before_allocating() {
        let mut bytes = vec![BATCH_FORMAT];
        put_uvarint(&mut bytes, u64::MAX >> 1);
        assert!(matches!(
            decode_batch(&bytes),
            Err(RecordDecodeError::Truncated(_))
        ));
        // A partition record claiming four billion replicas in a few bytes.
        let mut body = Vec::new();
        body.extend_from_slice(&[0u8; 16]);
        put_i32(&mut body, 0);
        put_uvarint(&mut body, u64::from(u32::MAX));
        let mut bytes = vec![BATCH_FORMAT, 1, 3, 0];
        put_uvarint(&mut bytes, body.len() as u64);
        bytes.extend_from_slice(&body);
        assert!(matches!(
            decode_batch(&bytes),
            Err(RecordDecodeError::Truncated(_))
        ));
    }
}
