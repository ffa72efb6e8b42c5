//! Writes the committed seed corpora of the fuzz targets (fuzz/corpus/<target>/). Deterministic:
//! running it again rewrites the same files.
//!
//!     cd fuzz && cargo run --example gen_seeds
//!
//! - request: a populated and a default request for every API and version the broker
//!   advertises (`SUPPORTED_APIS`, read from the source of crates/broker/src/handlers/, whichever
//!   file defines it, so the generator needs no broker build) that kafka-protocol can encode,
//!   each behind a request header, as a frame body (the bytes after the length prefix).
//! - request_bounds: `api_key: i16, version: i16` then the same bodies, for every version the
//!   bounds pre-scan covers.
//! - record_batch: v2 record batches (keys, keyless, tombstones, headers, idempotent,
//!   transactional, control, every codec) and concatenations of them.
//! - decompress: one codec selector byte, then a small valid payload of each codec (raw and
//!   xerial snappy), plus gzip and zstd bombs that inflate far past the 1 MiB limit.
//! - controller_messages: one selector byte (see the target), then a valid encoding for that
//!   decoder of vltava-controller: a batch of every metadata record type, every controller
//!   request and reply shape, raft requests and replies (entries of each payload kind, a
//!   snapshot chunk, a controller body, each error), a log entry and its record value of each
//!   payload kind, and a snapshot file.
//!
//! The request builders are `vltava_protocol::testing`'s (shared with the bounds tests).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use openraft::error::SnapshotMismatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, SnapshotSegmentId,
    StoredMembership, Vote,
};
use uuid::Uuid;
use vltava_controller::controller::{
    BrokerHeartbeatRequest, BrokerRegistrationRequest, ConfigChange, ControllerError,
    CreateTopicRequest, CreatedTopic, HeartbeatReply, ProducerIdBlock, TopicRef,
};
use vltava_controller::raft::log_store::{
    MetadataEntry, MetadataMembership, decode_entry, decode_entry_value, encode_entry,
    encode_entry_value,
};
use vltava_controller::raft::state_machine::{
    MetadataSnapshotMeta, decode_snapshot_file, encode_snapshot_file,
};
use vltava_controller::raft::wire::{
    self, ANY_NODE, FatalKind, RaftReply, RaftRequest, RejectReason, RemoteFailure,
    RequestHeader as RaftRequestHeader, WireLimits,
};
use vltava_controller::raft::{ControllerNode, MetadataPayload};
use vltava_controller::records::{
    BrokerEndpoint, BrokerFencingRecord, BrokerRegistrationChangeRecord, ConfigRecord,
    FeatureLevelRecord, MetadataRecord, NO_LEADER, PartitionChangeRecord, PartitionRecord,
    ProducerIdsRecord, RegisterBrokerRecord, RemoveTopicRecord, TopicRecord,
    UnregisterBrokerRecord, config_resource, encode_batch,
};
use vltava_controller::rpc::{
    ControllerReply, ControllerRequest, ControllerResponse, QuorumInfo, ReplicaState,
    decode_reply as decode_rpc_reply, decode_request as decode_rpc_request,
    encode_reply as encode_rpc_reply, encode_request as encode_rpc_request,
};
use vltava_protocol::batch::{self, ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, Compression};
use vltava_protocol::bounds::{covered_versions, scan_request_body};
use vltava_protocol::compression::{SnappyFraming, compress};
use vltava_protocol::kafka_protocol::ResponseError;
use vltava_protocol::kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use vltava_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use vltava_protocol::records::{RecordView, write_varint};
use vltava_protocol::testing::{EXTRA_TAG, default_request, extra_tag, populated_request};

fn encode(req: &RequestKind, version: i16) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    req.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn encode_header(h: &RequestHeader, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    h.encode(&mut buf, version).expect("request header encodes");
    buf.to_vec()
}

/// A populated and a default body of `api` at `version`; `None` where kafka-protocol cannot
/// encode that version (Produce v0-v2, advertised for librdkafka but never served).
fn bodies(api: ApiKey, v: i16) -> Option<[(&'static str, Vec<u8>); 2]> {
    let records = Bytes::from(keyed_batch(Compression::None));
    let populated = populated_request(api, v, records).unwrap_or_else(|| {
        panic!("no seed builder for {api:?}: add one in vltava_protocol::testing")
    });
    let default = default_request(api).unwrap_or_else(|| panic!("no default for {api:?}"));
    Some([
        ("populated", encode(&populated, v)?),
        ("default", encode(&default, v)?),
    ])
}

/// The request header a client would send, encoded in the header version of `api`/`v`.
fn header(api: ApiKey, v: i16, correlation_id: i32) -> Vec<u8> {
    let mut h = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(v)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("vltava-fuzz")));
    let version = api.request_header_version(v);
    if version >= 2 {
        h = h.with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    }
    encode_header(&h, version)
}

// ---------------------------------------------------------------------------------------------
// Record batches
// ---------------------------------------------------------------------------------------------

/// One record: key and value (either may be null) and headers.
struct Rec {
    key: Option<&'static [u8]>,
    value: Option<&'static [u8]>,
    headers: &'static [(&'static [u8], Option<&'static [u8]>)],
}

fn records_section(records: &[Rec]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut headers = Vec::new();
        write_varint(&mut headers, r.headers.len() as i32);
        for (k, v) in r.headers {
            write_varint(&mut headers, k.len() as i32);
            headers.extend_from_slice(k);
            match v {
                Some(v) => {
                    write_varint(&mut headers, v.len() as i32);
                    headers.extend_from_slice(v);
                }
                None => write_varint(&mut headers, -1),
            }
        }
        RecordView {
            attributes: 0,
            timestamp_delta: 10 * i as i64,
            offset_delta: i as i32,
            key: r.key,
            value: r.value,
            headers: &headers,
        }
        .encode(&mut out);
    }
    out
}

const KEYED: &[Rec] = &[
    Rec {
        key: Some(b"user-1"),
        value: Some(b"{\"clicks\":1}"),
        headers: &[(b"trace", Some(b"abc")), (b"empty", None)],
    },
    Rec {
        key: Some(b"user-2"),
        value: Some(b"{\"clicks\":2}"),
        headers: &[],
    },
    Rec {
        key: Some(b"user-1"),
        value: None,
        headers: &[],
    },
];

const KEYLESS: &[Rec] = &[
    Rec {
        key: None,
        value: Some(b"no key here"),
        headers: &[],
    },
    Rec {
        key: Some(b""),
        value: Some(b""),
        headers: &[(b"h", Some(b""))],
    },
];

const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// A v2 batch of `records`, compressed with `codec` (snappy framed as `framing`).
fn batch_of(
    records: &[Rec],
    codec: Compression,
    framing: SnappyFraming,
    attributes: i16,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    let section = records_section(records);
    let payload = compress(codec, &section, framing).expect("compress");
    let codec_bits: i16 = match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    };
    let count = records.len() as i32;
    let header = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: attributes | codec_bits,
        last_offset_delta: count - 1,
        base_timestamp: BASE_TIMESTAMP,
        max_timestamp: BASE_TIMESTAMP + 10 * i64::from(count - 1),
        producer_id: producer.0,
        producer_epoch: producer.1,
        base_sequence: producer.2,
        record_count: count,
    };
    let batch = batch::build_batch(&header, &payload);
    batch::verify(&batch).expect("seed batch verifies");
    batch
}

const NO_PRODUCER: (i64, i16, i32) = (-1, -1, -1);

fn keyed_batch(codec: Compression) -> Vec<u8> {
    batch_of(KEYED, codec, SnappyFraming::Raw, 0, NO_PRODUCER)
}

fn record_batch_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = vec![
        ("keyed".to_string(), keyed_batch(Compression::None)),
        (
            "keyless".into(),
            batch_of(
                KEYLESS,
                Compression::None,
                SnappyFraming::Raw,
                0,
                NO_PRODUCER,
            ),
        ),
        (
            "idempotent".into(),
            batch_of(
                KEYED,
                Compression::None,
                SnappyFraming::Raw,
                0,
                (1000, 0, 0),
            ),
        ),
        (
            "transactional".into(),
            batch_of(
                KEYED,
                Compression::None,
                SnappyFraming::Raw,
                ATTR_TRANSACTIONAL,
                (1000, 1, 7),
            ),
        ),
        (
            "control".into(),
            batch_of(
                KEYLESS,
                Compression::None,
                SnappyFraming::Raw,
                ATTR_TRANSACTIONAL | ATTR_CONTROL,
                (1000, 1, -1),
            ),
        ),
        (
            "two-batches".into(),
            [
                keyed_batch(Compression::None),
                batch_of(
                    KEYLESS,
                    Compression::Zstd,
                    SnappyFraming::Raw,
                    0,
                    NO_PRODUCER,
                ),
            ]
            .concat(),
        ),
    ];
    for (name, codec, framing) in [
        ("gzip", Compression::Gzip, SnappyFraming::Raw),
        ("snappy-raw", Compression::Snappy, SnappyFraming::Raw),
        ("snappy-xerial", Compression::Snappy, SnappyFraming::Xerial),
        ("lz4", Compression::Lz4, SnappyFraming::Raw),
        ("zstd", Compression::Zstd, SnappyFraming::Raw),
    ] {
        seeds.push((
            format!("keyed-{name}"),
            batch_of(KEYED, codec, framing, 0, NO_PRODUCER),
        ));
        seeds.push((
            format!("keyless-{name}"),
            batch_of(KEYLESS, codec, framing, 0, NO_PRODUCER),
        ));
    }
    seeds
}

// ---------------------------------------------------------------------------------------------
// Decompression payloads
// ---------------------------------------------------------------------------------------------

fn decompress_seeds() -> Vec<(String, Vec<u8>)> {
    let small = records_section(KEYED).repeat(4);
    let mut seeds = Vec::new();
    for (selector, name, codec, framing) in [
        (0u8, "none", Compression::None, SnappyFraming::Raw),
        (1, "gzip", Compression::Gzip, SnappyFraming::Raw),
        (2, "snappy-raw", Compression::Snappy, SnappyFraming::Raw),
        (
            2,
            "snappy-xerial",
            Compression::Snappy,
            SnappyFraming::Xerial,
        ),
        (3, "lz4", Compression::Lz4, SnappyFraming::Raw),
        (4, "zstd", Compression::Zstd, SnappyFraming::Raw),
    ] {
        let payload = compress(codec, &small, framing).expect("compress");
        seeds.push((
            format!("{name}-small"),
            [&[selector][..], &payload].concat(),
        ));
    }
    // Bombs: 10 MiB of zeros each, far past the 1 MiB limit the target uses.
    let zeros = vec![0u8; 10 << 20];
    let gz = compress(Compression::Gzip, &zeros, SnappyFraming::Raw).expect("gzip");
    seeds.push(("gzip-bomb".into(), [&[1u8][..], &gz].concat()));
    let z = compress(Compression::Zstd, &zeros, SnappyFraming::Raw).expect("zstd");
    seeds.push(("zstd-bomb".into(), [&[4u8][..], &z].concat()));
    // A raw snappy block that declares 2 MiB up front (only the length prefix and a literal).
    let mut sn = vec![2u8];
    let mut len = 2u32 << 20;
    while len >= 0x80 {
        sn.push((len as u8) | 0x80);
        len >>= 7;
    }
    sn.push(len as u8);
    sn.extend_from_slice(&[0x0c, b'a', b'b', b'c', b'd']);
    seeds.push(("snappy-declares-2mib".into(), sn));
    seeds
}

// ---------------------------------------------------------------------------------------------
// Controller messages
// ---------------------------------------------------------------------------------------------

/// The selector bytes of fuzz_targets/controller_messages.rs.
const SEL_RECORDS: u8 = 0;
const SEL_RPC_REQUEST: u8 = 1;
const SEL_RPC_REPLY: u8 = 2;
const SEL_RAFT_REQUEST: u8 = 3;
const SEL_RAFT_REPLY: u8 = 4;
const SEL_LOG_ENTRY: u8 = 5;
const SEL_SNAPSHOT: u8 = 6;
const SEL_ENTRY_VALUE: u8 = 7;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x7a1a_0000_0000_4000_8000_0000_0000_0000 | n)
}

fn endpoint(name: &str, host: &str, port: u16) -> BrokerEndpoint {
    BrokerEndpoint {
        name: name.into(),
        host: host.into(),
        port,
        security_protocol: 0,
    }
}

/// One record of every type, in an order an image could apply.
fn every_record() -> Vec<MetadataRecord> {
    vec![
        MetadataRecord::FeatureLevel(FeatureLevelRecord {
            name: "metadata.version".into(),
            feature_level: 21,
        }),
        MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: 1,
            incarnation_id: id(1),
            broker_epoch: -1,
            listeners: vec![
                endpoint("PLAINTEXT", "broker-1.local", 9092),
                endpoint("INTERNAL", "10.0.0.1", 9093),
            ],
            rack: Some("rack-a".into()),
            fenced: true,
            in_controlled_shutdown: false,
        }),
        MetadataRecord::UnfenceBroker(BrokerFencingRecord { id: 1, epoch: 7 }),
        MetadataRecord::FenceBroker(BrokerFencingRecord { id: 1, epoch: 7 }),
        MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChangeRecord {
            broker_id: 1,
            broker_epoch: 7,
            fenced: Some(false),
            in_controlled_shutdown: None,
        }),
        MetadataRecord::Topic(TopicRecord {
            name: "orders".into(),
            topic_id: id(2),
        }),
        MetadataRecord::Partition(PartitionRecord {
            topic_id: id(2),
            partition_id: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            removing_replicas: vec![3],
            adding_replicas: vec![],
        }),
        MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: id(2),
            partition_id: 0,
            isr: Some(vec![1]),
            leader: Some(NO_LEADER),
            replicas: None,
            removing_replicas: Some(vec![]),
            adding_replicas: Some(vec![4]),
        }),
        MetadataRecord::Config(ConfigRecord {
            resource_type: config_resource::TOPIC,
            resource_name: "orders".into(),
            name: "cleanup.policy".into(),
            value: Some("compact".into()),
        }),
        MetadataRecord::Config(ConfigRecord {
            resource_type: config_resource::BROKER,
            resource_name: String::new(),
            name: "log.retention.ms".into(),
            value: None,
        }),
        MetadataRecord::ProducerIds(ProducerIdsRecord {
            broker_id: 1,
            broker_epoch: 7,
            next_producer_id: 2000,
        }),
        MetadataRecord::RemoveTopic(RemoveTopicRecord { topic_id: id(2) }),
        MetadataRecord::UnregisterBroker(UnregisterBrokerRecord {
            broker_id: 1,
            broker_epoch: 7,
        }),
        MetadataRecord::NoOp,
    ]
}

fn controller_requests() -> Vec<(&'static str, ControllerRequest)> {
    let topic = CreateTopicRequest {
        name: "orders".into(),
        num_partitions: 3,
        replication_factor: 1,
        assignments: BTreeMap::new(),
        configs: vec![("cleanup.policy".into(), "compact".into())],
    };
    let assigned = CreateTopicRequest {
        name: "payments".into(),
        num_partitions: -1,
        replication_factor: -1,
        assignments: BTreeMap::from([(0, vec![1]), (1, vec![2])]),
        configs: vec![],
    };
    vec![
        (
            "register-broker",
            ControllerRequest::RegisterBroker(BrokerRegistrationRequest {
                broker_id: 1,
                incarnation_id: id(1),
                listeners: vec![endpoint("PLAINTEXT", "broker-1.local", 9092)],
                rack: Some("rack-a".into()),
            }),
        ),
        (
            "heartbeat",
            ControllerRequest::BrokerHeartbeat(BrokerHeartbeatRequest {
                broker_id: 1,
                broker_epoch: 7,
                current_metadata_offset: 42,
                want_fence: false,
                want_shutdown: true,
            }),
        ),
        (
            "create-topics",
            ControllerRequest::CreateTopics {
                topics: vec![topic, assigned],
                validate_only: false,
            },
        ),
        (
            "delete-topics",
            ControllerRequest::DeleteTopics(vec![
                TopicRef::Name("orders".into()),
                TopicRef::Id(id(2)),
            ]),
        ),
        (
            "create-partitions",
            ControllerRequest::CreatePartitions {
                topic: "orders".into(),
                count: 5,
                assignments: Some(vec![vec![1, 2], vec![2, 3]]),
                validate_only: true,
            },
        ),
        (
            "alter-configs",
            ControllerRequest::AlterConfigs(vec![
                ConfigChange {
                    resource_type: config_resource::TOPIC,
                    resource_name: "orders".into(),
                    name: "retention.ms".into(),
                    value: Some("60000".into()),
                },
                ConfigChange {
                    resource_type: config_resource::BROKER,
                    resource_name: "1".into(),
                    name: "log.cleaner.threads".into(),
                    value: None,
                },
            ]),
        ),
        (
            "allocate-producer-ids",
            ControllerRequest::AllocateProducerIds {
                broker_id: 1,
                broker_epoch: 7,
            },
        ),
        (
            "add-observer",
            ControllerRequest::AddObserver {
                node_id: 4,
                addr: "broker-4.local:9094".into(),
            },
        ),
        (
            "add-voter",
            ControllerRequest::AddVoter {
                node_id: 5,
                addr: "controller-5.local:9095".into(),
            },
        ),
        (
            "remove-voter",
            ControllerRequest::RemoveVoter { node_id: 5 },
        ),
        ("describe-quorum", ControllerRequest::DescribeQuorum),
    ]
}

fn controller_replies() -> Vec<(&'static str, ControllerReply)> {
    let err = |error, message: &str| ControllerError {
        error,
        message: message.into(),
    };
    let ok = |metadata_offset, response| ControllerReply::Ok {
        metadata_offset,
        response,
    };
    let replica = |node_id, addr: &str, log_end_offset| ReplicaState {
        node_id,
        addr: addr.into(),
        log_end_offset,
    };
    vec![
        (
            "registered",
            ok(Some(7), ControllerResponse::Registered { broker_epoch: 7 }),
        ),
        (
            "heartbeat",
            ok(
                None,
                ControllerResponse::Heartbeat(HeartbeatReply {
                    is_caught_up: true,
                    is_fenced: false,
                    should_shutdown: false,
                }),
            ),
        ),
        (
            "create-topics",
            ok(
                Some(12),
                ControllerResponse::CreateTopics(vec![
                    (
                        "orders".into(),
                        Ok(CreatedTopic {
                            topic_id: id(2),
                            num_partitions: 3,
                            replication_factor: 1,
                        }),
                    ),
                    (
                        "payments".into(),
                        Err(err(ResponseError::TopicAlreadyExists, "exists")),
                    ),
                ]),
            ),
        ),
        (
            "delete-topics",
            ok(
                Some(13),
                ControllerResponse::DeleteTopics(vec![
                    (
                        TopicRef::Name("orders".into()),
                        Ok(("orders".into(), id(2))),
                    ),
                    (
                        TopicRef::Id(id(3)),
                        Err(err(ResponseError::UnknownTopicId, "no such topic")),
                    ),
                ]),
            ),
        ),
        ("done", ok(Some(14), ControllerResponse::Done)),
        (
            "producer-ids",
            ok(
                Some(15),
                ControllerResponse::ProducerIds(ProducerIdBlock {
                    first: 1000,
                    size: 1000,
                }),
            ),
        ),
        (
            "quorum",
            ok(
                None,
                ControllerResponse::Quorum(QuorumInfo {
                    cluster_id: "vltava-fuzz-cluster".into(),
                    leader_id: 1,
                    leader_epoch: 3,
                    high_watermark: 100,
                    voters: vec![
                        replica(1, "controller-1.local:9095", 100),
                        replica(2, "controller-2.local:9095", 98),
                    ],
                    observers: vec![replica(4, "broker-4.local:9094", -1)],
                }),
            ),
        ),
        (
            "failed",
            ControllerReply::Failed(err(
                ResponseError::InvalidReplicationFactor,
                "replication factor 3 is larger than 1",
            )),
        ),
        (
            "not-controller",
            ControllerReply::NotController {
                leader: Some((2, "controller-2.local:9095".into())),
            },
        ),
        (
            "not-controller-unknown",
            ControllerReply::NotController { leader: None },
        ),
    ]
}

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

/// A joint membership of voters {1, 2, 3} and {1, 2, 4}, and learner 5.
fn membership() -> MetadataMembership {
    let nodes: BTreeMap<u64, ControllerNode> = (1..=5)
        .map(|i| {
            (
                i,
                ControllerNode {
                    addr: format!("controller-{i}.local:9095"),
                },
            )
        })
        .collect();
    Membership::new(
        vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 2, 4])],
        nodes,
    )
}

fn entries() -> Vec<(&'static str, MetadataEntry)> {
    vec![
        (
            "blank",
            Entry {
                log_id: log_id(3, 1, 40),
                payload: EntryPayload::Blank,
            },
        ),
        (
            "normal",
            Entry {
                log_id: log_id(3, 1, 41),
                payload: EntryPayload::Normal(MetadataPayload(Bytes::from(encode_batch(
                    &every_record()[..3],
                )))),
            },
        ),
        (
            "membership",
            Entry {
                log_id: log_id(3, 1, 42),
                payload: EntryPayload::Membership(membership()),
            },
        ),
    ]
}

fn snapshot_meta() -> MetadataSnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(3, 1, 99)),
        last_membership: StoredMembership::new(Some(log_id(2, 1, 20)), membership()),
        snapshot_id: "3-1-99-0".into(),
    }
}

/// A snapshot's state: the image's records, as `MetadataImage::snapshot` writes them.
fn snapshot_state() -> Vec<u8> {
    encode_batch(&every_record()[..12])
}

fn raft_requests() -> Vec<(&'static str, RaftRequestHeader, RaftRequest)> {
    let header = |request_id, target| RaftRequestHeader {
        request_id,
        cluster_id: "vltava-fuzz-cluster".into(),
        target,
    };
    let append = AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 1, 39)),
        entries: entries().into_iter().map(|(_, e)| e).collect(),
        leader_commit: Some(log_id(3, 1, 39)),
    };
    let heartbeat = AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 1, 42)),
        entries: vec![],
        leader_commit: Some(log_id(3, 1, 42)),
    };
    let snapshot = encode_snapshot_file(&snapshot_meta(), &snapshot_state()).expect("snapshot");
    let install = InstallSnapshotRequest {
        vote: Vote::new_committed(3, 1),
        meta: snapshot_meta(),
        offset: 0,
        data: snapshot,
        done: true,
    };
    let (_, rpc) = controller_requests().swap_remove(0);
    vec![
        (
            "append-entries",
            header(1, 2),
            RaftRequest::AppendEntries(append),
        ),
        (
            "heartbeat",
            header(2, 2),
            RaftRequest::AppendEntries(heartbeat),
        ),
        (
            "vote",
            header(3, 3),
            RaftRequest::Vote(VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 1, 42)))),
        ),
        (
            "install-snapshot",
            header(4, 2),
            RaftRequest::InstallSnapshot(install),
        ),
        (
            "controller",
            header(5, ANY_NODE),
            RaftRequest::Controller(Bytes::from(encode_rpc_request(&rpc))),
        ),
    ]
}

fn raft_replies() -> Vec<(&'static str, RaftReply)> {
    let segment = |id: &str, offset| SnapshotSegmentId {
        id: id.into(),
        offset,
    };
    let (_, rpc) = controller_replies().swap_remove(0);
    vec![
        (
            "append-success",
            RaftReply::AppendEntries(AppendEntriesResponse::Success),
        ),
        (
            "append-partial",
            RaftReply::AppendEntries(AppendEntriesResponse::PartialSuccess(Some(log_id(
                3, 1, 41,
            )))),
        ),
        (
            "append-conflict",
            RaftReply::AppendEntries(AppendEntriesResponse::Conflict),
        ),
        (
            "append-higher-vote",
            RaftReply::AppendEntries(AppendEntriesResponse::HigherVote(Vote::new(5, 3))),
        ),
        (
            "vote",
            RaftReply::Vote(VoteResponse::new(
                Vote::new(4, 2),
                Some(log_id(3, 1, 42)),
                true,
            )),
        ),
        (
            "install-snapshot",
            RaftReply::InstallSnapshot(InstallSnapshotResponse {
                vote: Vote::new_committed(3, 1),
            }),
        ),
        (
            "controller",
            RaftReply::Controller(Bytes::from(encode_rpc_reply(&rpc))),
        ),
        (
            "error-fatal",
            RaftReply::Error(RemoteFailure::Fatal {
                kind: FatalKind::Storage,
                message: "metadata log I/O: disk full".into(),
            }),
        ),
        (
            "error-snapshot-mismatch",
            RaftReply::Error(RemoteFailure::SnapshotMismatch(SnapshotMismatch {
                expect: segment("3-1-99-0", 4096),
                got: segment("3-1-99-0", 0),
            })),
        ),
        (
            "error-rejected",
            RaftReply::Error(RemoteFailure::Rejected {
                reason: RejectReason::ClusterMismatch,
                message: "cluster id other-cluster is not vltava-fuzz-cluster".into(),
            }),
        ),
    ]
}

fn controller_messages_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut seed = |selector: u8, name: String, bytes: Vec<u8>| {
        seeds.push((name, [&[selector][..], &bytes].concat()));
    };
    let all = every_record();
    seed(SEL_RECORDS, "records-every-type".into(), encode_batch(&all));
    seed(
        SEL_RECORDS,
        "records-register-broker".into(),
        encode_batch(&all[1..2]),
    );
    seed(SEL_RECORDS, "records-empty".into(), encode_batch(&[]));
    for (name, request) in controller_requests() {
        let bytes = encode_rpc_request(&request);
        assert_eq!(decode_rpc_request(&bytes).as_ref(), Ok(&request), "{name}");
        seed(SEL_RPC_REQUEST, format!("rpc-request-{name}"), bytes);
    }
    for (name, reply) in controller_replies() {
        let bytes = encode_rpc_reply(&reply);
        assert_eq!(decode_rpc_reply(&bytes).as_ref(), Ok(&reply), "{name}");
        seed(SEL_RPC_REPLY, format!("rpc-reply-{name}"), bytes);
    }
    for (name, header, request) in raft_requests() {
        let frame = wire::encode_request(&header, &request, WireLimits::default()).expect(name);
        let decoded = wire::decode_request(frame.clone(), WireLimits::default()).expect(name);
        assert!(decoded.0 == header && decoded.1 == request, "{name}");
        seed(
            SEL_RAFT_REQUEST,
            format!("raft-request-{name}"),
            frame.to_vec(),
        );
    }
    for (name, reply) in raft_replies() {
        let frame = wire::encode_reply(7, &reply);
        let decoded = wire::decode_reply(frame.clone(), WireLimits::default()).expect(name);
        assert!(decoded == (7, reply), "{name}");
        seed(SEL_RAFT_REPLY, format!("raft-reply-{name}"), frame.to_vec());
    }
    for (name, entry) in entries() {
        let batch = encode_entry(&entry, BASE_TIMESTAMP).expect(name);
        assert_eq!(decode_entry(&batch).as_ref(), Ok(&entry), "{name}");
        seed(SEL_LOG_ENTRY, format!("log-entry-{name}"), batch);
        let value = encode_entry_value(&entry).expect(name);
        assert!(decode_entry_value(&value).is_ok(), "{name}");
        seed(SEL_ENTRY_VALUE, format!("entry-value-{name}"), value);
    }
    let state = snapshot_state();
    let file = encode_snapshot_file(&snapshot_meta(), &state).expect("snapshot");
    let (meta, decoded) = decode_snapshot_file(&file).expect("snapshot decodes");
    assert!(meta == snapshot_meta() && decoded == state.as_slice());
    seed(SEL_SNAPSHOT, "snapshot".into(), file);
    let empty = encode_snapshot_file(&SnapshotMeta::default(), &encode_batch(&[])).expect("empty");
    seed(SEL_SNAPSHOT, "snapshot-empty".into(), empty);
    seeds
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn write_corpus(dir: &Path, seeds: &BTreeMap<String, Vec<u8>>) -> usize {
    // Generated seeds are replaced; inputs kept from fuzzing campaigns (`found-*`) stay.
    std::fs::create_dir_all(dir).expect("create corpus dir");
    for entry in std::fs::read_dir(dir).expect("read corpus dir") {
        let path = entry.expect("corpus entry").path();
        let keep = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("found-"));
        if !keep {
            std::fs::remove_file(&path).expect("remove old seed");
        }
    }
    let mut bytes = 0;
    for (name, data) in seeds {
        let mut f = std::fs::File::create(dir.join(name)).expect("create seed");
        f.write_all(data).expect("write seed");
        bytes += data.len();
    }
    println!("{}: {} seeds, {bytes} bytes", dir.display(), seeds.len());
    bytes
}

/// The `(ApiKey::Name, lo, hi)` rows of `SUPPORTED_APIS`, read from whichever file of the broker's
/// handlers folder defines it (today handlers/mod.rs).
fn supported_apis(handlers_dir: &Path) -> Vec<(ApiKey, i16, i16)> {
    const DEFINITION: &str = "pub const SUPPORTED_APIS";
    let mut files: Vec<PathBuf> = std::fs::read_dir(handlers_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", handlers_dir.display()))
        .map(|entry| entry.expect("handlers entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut defining = files.iter().filter_map(|p| {
        let src =
            std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        src.find(DEFINITION).map(|start| (p, src, start))
    });
    let (path, src, start) = defining
        .next()
        .unwrap_or_else(|| panic!("no {DEFINITION} in {}/*.rs", handlers_dir.display()));
    assert!(
        defining.next().is_none(),
        "{DEFINITION} defined twice under {}",
        handlers_dir.display()
    );
    println!("SUPPORTED_APIS from {}", path.display());
    let table = &src[start..];
    let table = &table[..table.find("];").expect("end of SUPPORTED_APIS")];
    let mut out = Vec::new();
    for row in table.split("(ApiKey::").skip(1) {
        let row = &row[..row.find(')').expect("row end")];
        let parts: Vec<&str> = row.split(',').map(str::trim).collect();
        let [name, lo, hi] = parts[..] else {
            panic!("unexpected SUPPORTED_APIS row {row:?}");
        };
        let api = ApiKey::iter()
            .find(|k| format!("{k:?}") == name)
            .unwrap_or_else(|| panic!("unknown api {name}"));
        out.push((api, lo.parse().expect("lo"), hi.parse().expect("hi")));
    }
    assert!(!out.is_empty(), "no rows parsed from SUPPORTED_APIS");
    out
}

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("corpus");
    let apis = supported_apis(&manifest.join("../crates/broker/src/handlers"));

    let mut request = BTreeMap::new();
    let mut request_bounds = BTreeMap::new();
    let mut correlation_id = 1;
    for (api, lo, hi) in apis {
        for v in lo..=hi {
            let Some(bodies) = bodies(api, v) else {
                println!("skipped {api:?} v{v}: kafka-protocol cannot encode it");
                continue;
            };
            let covered = covered_versions(api as i16).is_some_and(|r| r.contains(&v));
            for (kind, body) in bodies {
                let name = format!("{api:?}-v{v:02}-{kind}");
                if covered {
                    assert_eq!(
                        scan_request_body(api as i16, v, &body),
                        Ok(body.len()),
                        "{name}: the pre-scan must walk the seed exactly"
                    );
                    let prefixed = [&(api as i16).to_be_bytes()[..], &v.to_be_bytes(), &body];
                    request_bounds.insert(name.clone(), prefixed.concat());
                }
                let frame = [header(api, v, correlation_id), body].concat();
                correlation_id += 1;
                request.insert(name, frame);
            }
        }
    }

    let record_batch: BTreeMap<_, _> = record_batch_seeds().into_iter().collect();
    let decompress: BTreeMap<_, _> = decompress_seeds().into_iter().collect();
    let controller_messages: BTreeMap<_, _> = controller_messages_seeds().into_iter().collect();

    let total = write_corpus(&root.join("request"), &request)
        + write_corpus(&root.join("request_bounds"), &request_bounds)
        + write_corpus(&root.join("record_batch"), &record_batch)
        + write_corpus(&root.join("decompress"), &decompress)
        + write_corpus(&root.join("controller_messages"), &controller_messages);
    println!("total {total} bytes");
}
