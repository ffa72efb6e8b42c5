//! Writes the committed seed corpora of the fuzz targets (fuzz/corpus/<target>/). Deterministic:
//! running it again rewrites the same files.
//!
//!     cd fuzz && cargo run --example gen_seeds
//!
//! - request: a populated and a default request for every API and version the broker
//!   advertises (`SUPPORTED_APIS` in crates/broker/src/handlers.rs, read from the source so the
//!   generator needs no broker build) that kafka-protocol can encode, each behind a request
//!   header, as a frame body (the bytes after the length prefix).
//! - request_bounds: `api_key: i16, version: i16` then the same bodies, for every version the
//!   bounds pre-scan covers.
//! - record_batch: v2 record batches (keys, keyless, tombstones, headers, idempotent,
//!   transactional, control, every codec) and concatenations of them.
//! - decompress: one codec selector byte, then a small valid payload of each codec (raw and
//!   xerial snappy), plus gzip and zstd bombs that inflate far past the 1 MiB limit.
//!
//! The request builders are adapted from crates/protocol/tests/bounds.rs (populated: 1-2
//! elements at every nesting level, strings set, nullable fields both set and null, an unknown
//! tagged field on every struct of flexible versions).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use vltava_protocol::batch::{self, ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader, Compression};
use vltava_protocol::bounds::{covered_versions, scan_request_body};
use vltava_protocol::compression::{SnappyFraming, compress};
use vltava_protocol::kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, BrokerId, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, ProduceRequest, ProducerId, RequestHeader, SyncGroupRequest, TopicName,
    TransactionalId, alter_configs_request, create_partitions_request, create_topics_request,
    delete_records_request, delete_topics_request, describe_configs_request, fetch_request,
    incremental_alter_configs_request, join_group_request, leave_group_request,
    list_offsets_request, metadata_request, offset_commit_request, offset_delete_request,
    offset_fetch_request, produce_request, sync_group_request,
};
use vltava_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use vltava_protocol::records::{RecordView, write_varint};

/// An unknown tag on every struct, so flexible versions carry a non-empty tagged section.
const EXTRA_TAG: i32 = 7;

fn extra_tag() -> Bytes {
    Bytes::from_static(b"opaque")
}

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

fn topic(text: &'static str) -> TopicName {
    TopicName(s(text))
}

fn group(text: &'static str) -> GroupId {
    GroupId(s(text))
}

fn encode<T: Encodable>(req: &T, version: i16) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    req.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Request builders (adapted from crates/protocol/tests/bounds.rs)
// ---------------------------------------------------------------------------------------------

fn produce(_v: i16) -> ProduceRequest {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let partition = |index: i32, records: Option<Vec<u8>>| {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(records.map(Bytes::from))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let topic_data = |name| {
        TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![
                partition(0, Some(keyed_batch(Compression::None))),
                partition(1, None),
            ])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s("txn"))))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic_data("a"), topic_data("b")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn fetch(v: i16) -> FetchRequest {
    use fetch_request::{FetchPartition, FetchTopic, ForgottenTopic, ReplicaState};
    let partition = |index: i32| {
        FetchPartition::default()
            .with_partition(index)
            .with_current_leader_epoch(3)
            .with_fetch_offset(100)
            .with_last_fetched_epoch(if v >= 12 { 2 } else { -1 })
            .with_log_start_offset(0)
            .with_partition_max_bytes(1 << 20)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let fetch_topic = |name| {
        FetchTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![partition(0), partition(1)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let mut req = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_topic("a"), fetch_topic("b")])
        .with_rack_id(s("rack-1"))
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v <= 14 {
        req = req.with_replica_id(BrokerId(-1));
    }
    if v >= 7 {
        req = req.with_forgotten_topics_data(vec![
            ForgottenTopic::default()
                .with_topic(topic("gone"))
                .with_partitions(vec![4, 5])
                .with_unknown_tagged_field(EXTRA_TAG, extra_tag()),
        ]);
    }
    if v >= 12 {
        req = req.with_cluster_id(Some(s("cluster-id")));
    }
    if v >= 15 {
        req = req.with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(1))
                .with_replica_epoch(9)
                .with_unknown_tagged_field(EXTRA_TAG, extra_tag()),
        );
    }
    req
}

fn list_offsets(v: i16) -> ListOffsetsRequest {
    use list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let partition = |index: i32| {
        ListOffsetsPartition::default()
            .with_partition_index(index)
            .with_current_leader_epoch(1)
            .with_timestamp(-1)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let list_topic = |name| {
        ListOffsetsTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![partition(0), partition(1)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let mut req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_topic("a"), list_topic("b")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 2 {
        req = req.with_isolation_level(1);
    }
    req
}

fn metadata(v: i16) -> MetadataRequest {
    use metadata_request::MetadataRequestTopic;
    let meta_topic = |name: Option<&'static str>| {
        MetadataRequestTopic::default()
            .with_name(name.map(topic))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    // A null name is only meaningful with topic ids (v10+), but the decoder accepts it anywhere.
    let second = if v >= 10 { None } else { Some("b") };
    let mut req = MetadataRequest::default()
        .with_topics(Some(vec![meta_topic(Some("a")), meta_topic(second)]))
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 4 {
        req = req.with_allow_auto_topic_creation(false);
    }
    if (8..=10).contains(&v) {
        req = req.with_include_cluster_authorized_operations(true);
    }
    if v >= 8 {
        req = req.with_include_topic_authorized_operations(true);
    }
    req
}

fn offset_commit(v: i16) -> OffsetCommitRequest {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let partition = |index: i32, metadata: Option<&'static str>| {
        OffsetCommitRequestPartition::default()
            .with_partition_index(index)
            .with_committed_offset(42)
            .with_committed_leader_epoch(2)
            .with_committed_metadata(metadata.map(s))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let commit_topic = |name| {
        OffsetCommitRequestTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![partition(0, Some("meta")), partition(1, None)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let mut req = OffsetCommitRequest::default()
        .with_group_id(group("g"))
        .with_generation_id_or_member_epoch(5)
        .with_member_id(s("member"))
        .with_topics(vec![commit_topic("a"), commit_topic("b")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v <= 4 {
        req = req.with_retention_time_ms(60_000);
    }
    if v >= 7 {
        req = req.with_group_instance_id(Some(s("instance")));
    }
    req
}

fn offset_fetch(v: i16) -> OffsetFetchRequest {
    use offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    if v <= 7 {
        let fetch_topic = |name| {
            OffsetFetchRequestTopic::default()
                .with_name(topic(name))
                .with_partition_indexes(vec![0, 1])
                .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
        };
        let mut req = OffsetFetchRequest::default()
            .with_group_id(group("g"))
            .with_topics(Some(vec![fetch_topic("a"), fetch_topic("b")]))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
        if v >= 7 {
            req = req.with_require_stable(true);
        }
        return req;
    }
    let topics = |name| {
        OffsetFetchRequestTopics::default()
            .with_name(topic(name))
            .with_partition_indexes(vec![0, 1])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let fetch_group = |id, topics: Option<Vec<OffsetFetchRequestTopics>>| {
        let mut g = OffsetFetchRequestGroup::default()
            .with_group_id(group(id))
            .with_topics(topics)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
        if v >= 9 {
            g = g.with_member_id(Some(s("member"))).with_member_epoch(3);
        }
        g
    };
    OffsetFetchRequest::default()
        .with_group_id(group(""))
        .with_topics(Some(vec![]))
        .with_groups(vec![
            fetch_group("g1", Some(vec![topics("a"), topics("b")])),
            fetch_group("g2", None),
        ])
        .with_require_stable(true)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn find_coordinator(v: i16) -> FindCoordinatorRequest {
    let mut req =
        FindCoordinatorRequest::default().with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v <= 3 {
        req = req.with_key(s("g"));
    }
    if v >= 1 {
        req = req.with_key_type(1);
    }
    if v >= 4 {
        req = req.with_coordinator_keys(vec![s("g1"), s("g2")]);
    }
    req
}

fn join_group(v: i16) -> JoinGroupRequest {
    use join_group_request::JoinGroupRequestProtocol;
    let protocol = |name| {
        JoinGroupRequestProtocol::default()
            .with_name(s(name))
            .with_metadata(Bytes::from_static(b"subscription"))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let mut req = JoinGroupRequest::default()
        .with_group_id(group("g"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s("member"))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![protocol("range"), protocol("roundrobin")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 5 {
        req = req.with_group_instance_id(Some(s("instance")));
    }
    if v >= 8 {
        req = req.with_reason(Some(s("rejoin")));
    }
    req
}

fn heartbeat(v: i16) -> HeartbeatRequest {
    let mut req = HeartbeatRequest::default()
        .with_group_id(group("g"))
        .with_generation_id(4)
        .with_member_id(s("member"))
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 3 {
        req = req.with_group_instance_id(Some(s("instance")));
    }
    req
}

fn leave_group(v: i16) -> LeaveGroupRequest {
    use leave_group_request::MemberIdentity;
    let mut req = LeaveGroupRequest::default()
        .with_group_id(group("g"))
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v <= 2 {
        req = req.with_member_id(s("member"));
    } else {
        let member = |id, instance: Option<&'static str>| {
            let mut m = MemberIdentity::default()
                .with_member_id(s(id))
                .with_group_instance_id(instance.map(s))
                .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
            if v >= 5 {
                m = m.with_reason(Some(s("shutdown")));
            }
            m
        };
        req = req.with_members(vec![member("m1", Some("i1")), member("m2", None)]);
    }
    req
}

fn sync_group(v: i16) -> SyncGroupRequest {
    use sync_group_request::SyncGroupRequestAssignment;
    let assignment = |member| {
        SyncGroupRequestAssignment::default()
            .with_member_id(s(member))
            .with_assignment(Bytes::from_static(b"assignment"))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let mut req = SyncGroupRequest::default()
        .with_group_id(group("g"))
        .with_generation_id(4)
        .with_member_id(s("member"))
        .with_assignments(vec![assignment("m1"), assignment("m2")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 3 {
        req = req.with_group_instance_id(Some(s("instance")));
    }
    if v >= 5 {
        req = req
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")));
    }
    req
}

fn describe_groups(v: i16) -> DescribeGroupsRequest {
    let mut req = DescribeGroupsRequest::default()
        .with_groups(vec![group("g1"), group("g2")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 3 {
        req = req.with_include_authorized_operations(true);
    }
    req
}

fn list_groups(v: i16) -> ListGroupsRequest {
    let mut req = ListGroupsRequest::default().with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 4 {
        req = req.with_states_filter(vec![s("Stable"), s("Empty")]);
    }
    if v >= 5 {
        req = req.with_types_filter(vec![s("classic")]);
    }
    req
}

fn api_versions(_v: i16) -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(s("vltava-test"))
        .with_client_software_version(s("0.1.0"))
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn create_topics(_v: i16) -> CreateTopicsRequest {
    use create_topics_request::{CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig};
    let assignment = |index: i32| {
        CreatableReplicaAssignment::default()
            .with_partition_index(index)
            .with_broker_ids(vec![BrokerId(1), BrokerId(2)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let config = |name, value: Option<&'static str>| {
        CreatableTopicConfig::default()
            .with_name(s(name))
            .with_value(value.map(s))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let creatable = |name| {
        CreatableTopic::default()
            .with_name(topic(name))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![assignment(0), assignment(1)])
            .with_configs(vec![
                config("cleanup.policy", Some("compact")),
                config("retention.ms", None),
            ])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    CreateTopicsRequest::default()
        .with_topics(vec![creatable("a"), creatable("b")])
        .with_timeout_ms(5_000)
        .with_validate_only(true)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn delete_topics(v: i16) -> DeleteTopicsRequest {
    use delete_topics_request::DeleteTopicState;
    let mut req = DeleteTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v <= 5 {
        req = req.with_topic_names(vec![topic("a"), topic("b")]);
    } else {
        let state = |name: Option<&'static str>| {
            DeleteTopicState::default()
                .with_name(name.map(topic))
                .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
        };
        req = req.with_topics(vec![state(Some("a")), state(None)]);
    }
    req
}

fn delete_records(_v: i16) -> DeleteRecordsRequest {
    use delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    let partition = |index: i32| {
        DeleteRecordsPartition::default()
            .with_partition_index(index)
            .with_offset(10)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let records_topic = |name| {
        DeleteRecordsTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![partition(0), partition(1)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    DeleteRecordsRequest::default()
        .with_topics(vec![records_topic("a"), records_topic("b")])
        .with_timeout_ms(5_000)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn init_producer_id(v: i16) -> InitProducerIdRequest {
    let mut req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s("txn"))))
        .with_transaction_timeout_ms(60_000)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 3 {
        req = req.with_producer_id(ProducerId(77)).with_producer_epoch(3);
    }
    req
}

fn describe_configs(v: i16) -> DescribeConfigsRequest {
    use describe_configs_request::DescribeConfigsResource;
    let resource = |name, keys: Option<Vec<StrBytes>>| {
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configuration_keys(keys)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let mut req = DescribeConfigsRequest::default()
        .with_resources(vec![
            resource("a", Some(vec![s("cleanup.policy"), s("retention.ms")])),
            resource("b", None),
        ])
        .with_include_synonyms(true)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 3 {
        req = req.with_include_documentation(true);
    }
    req
}

fn alter_configs(_v: i16) -> AlterConfigsRequest {
    use alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let config = |name, value: Option<&'static str>| {
        AlterableConfig::default()
            .with_name(s(name))
            .with_value(value.map(s))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let resource = |name| {
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configs(vec![
                config("cleanup.policy", Some("delete")),
                config("retention.ms", None),
            ])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    AlterConfigsRequest::default()
        .with_resources(vec![resource("a"), resource("b")])
        .with_validate_only(true)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn create_partitions(_v: i16) -> CreatePartitionsRequest {
    use create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
    let assignment = || {
        CreatePartitionsAssignment::default()
            .with_broker_ids(vec![BrokerId(1), BrokerId(2)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let partitions_topic = |name, assignments: Option<Vec<CreatePartitionsAssignment>>| {
        CreatePartitionsTopic::default()
            .with_name(topic(name))
            .with_count(4)
            .with_assignments(assignments)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    CreatePartitionsRequest::default()
        .with_topics(vec![
            partitions_topic("a", Some(vec![assignment(), assignment()])),
            partitions_topic("b", None),
        ])
        .with_timeout_ms(5_000)
        .with_validate_only(true)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn delete_groups(_v: i16) -> DeleteGroupsRequest {
    DeleteGroupsRequest::default()
        .with_groups_names(vec![group("g1"), group("g2")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn incremental_alter_configs(_v: i16) -> IncrementalAlterConfigsRequest {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let config = |name, op: i8, value: Option<&'static str>| {
        AlterableConfig::default()
            .with_name(s(name))
            .with_config_operation(op)
            .with_value(value.map(s))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let resource = |name| {
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configs(vec![
                config("cleanup.policy", 0, Some("delete")),
                config("retention.ms", 1, None),
            ])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    IncrementalAlterConfigsRequest::default()
        .with_resources(vec![resource("a"), resource("b")])
        .with_validate_only(true)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn offset_delete(_v: i16) -> OffsetDeleteRequest {
    use offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
    let partition =
        |index: i32| OffsetDeleteRequestPartition::default().with_partition_index(index);
    let delete_topic = |name| {
        OffsetDeleteRequestTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![partition(0), partition(1)])
    };
    OffsetDeleteRequest::default()
        .with_group_id(group("g"))
        .with_topics(vec![delete_topic("a"), delete_topic("b")])
}

fn describe_cluster(v: i16) -> DescribeClusterRequest {
    let mut req = DescribeClusterRequest::default()
        .with_include_cluster_authorized_operations(true)
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 1 {
        req = req.with_endpoint_type(2);
    }
    req
}

/// A populated and a default body of `api` at `version`; `None` where kafka-protocol cannot
/// encode that version (Produce v0-v2, advertised for librdkafka but never served).
fn bodies(api: ApiKey, v: i16) -> Option<[(&'static str, Vec<u8>); 2]> {
    macro_rules! both {
        ($ty:ty, $builder:ident) => {
            [
                ("populated", encode(&$builder(v), v)?),
                ("default", encode(&<$ty>::default(), v)?),
            ]
        };
    }
    Some(match api {
        ApiKey::Produce => both!(ProduceRequest, produce),
        ApiKey::Fetch => both!(FetchRequest, fetch),
        ApiKey::ListOffsets => both!(ListOffsetsRequest, list_offsets),
        ApiKey::Metadata => both!(MetadataRequest, metadata),
        ApiKey::OffsetCommit => both!(OffsetCommitRequest, offset_commit),
        ApiKey::OffsetFetch => both!(OffsetFetchRequest, offset_fetch),
        ApiKey::FindCoordinator => both!(FindCoordinatorRequest, find_coordinator),
        ApiKey::JoinGroup => both!(JoinGroupRequest, join_group),
        ApiKey::Heartbeat => both!(HeartbeatRequest, heartbeat),
        ApiKey::LeaveGroup => both!(LeaveGroupRequest, leave_group),
        ApiKey::SyncGroup => both!(SyncGroupRequest, sync_group),
        ApiKey::DescribeGroups => both!(DescribeGroupsRequest, describe_groups),
        ApiKey::ListGroups => both!(ListGroupsRequest, list_groups),
        ApiKey::ApiVersions => both!(ApiVersionsRequest, api_versions),
        ApiKey::CreateTopics => both!(CreateTopicsRequest, create_topics),
        ApiKey::DeleteTopics => both!(DeleteTopicsRequest, delete_topics),
        ApiKey::DeleteRecords => both!(DeleteRecordsRequest, delete_records),
        ApiKey::InitProducerId => both!(InitProducerIdRequest, init_producer_id),
        ApiKey::DescribeConfigs => both!(DescribeConfigsRequest, describe_configs),
        ApiKey::AlterConfigs => both!(AlterConfigsRequest, alter_configs),
        ApiKey::CreatePartitions => both!(CreatePartitionsRequest, create_partitions),
        ApiKey::DeleteGroups => both!(DeleteGroupsRequest, delete_groups),
        ApiKey::IncrementalAlterConfigs => {
            both!(IncrementalAlterConfigsRequest, incremental_alter_configs)
        }
        ApiKey::OffsetDelete => both!(OffsetDeleteRequest, offset_delete),
        ApiKey::DescribeCluster => both!(DescribeClusterRequest, describe_cluster),
        other => panic!("no seed builder for {other:?}: add one beside the others"),
    })
}

/// The request header a client would send, encoded in the header version of `api`/`v`.
fn header(api: ApiKey, v: i16, correlation_id: i32) -> Vec<u8> {
    let mut h = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(v)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("vltava-fuzz")));
    let version = api.request_header_version(v);
    if version >= 2 {
        h = h.with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    }
    encode(&h, version).expect("request header encodes")
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

/// The `(ApiKey::Name, lo, hi)` rows of `SUPPORTED_APIS` in the broker's handlers.rs.
fn supported_apis(handlers_rs: &Path) -> Vec<(ApiKey, i16, i16)> {
    let src = std::fs::read_to_string(handlers_rs).expect("read handlers.rs");
    let start = src
        .find("pub const SUPPORTED_APIS")
        .expect("SUPPORTED_APIS in handlers.rs");
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
    let apis = supported_apis(&manifest.join("../crates/broker/src/handlers.rs"));

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

    let total = write_corpus(&root.join("request"), &request)
        + write_corpus(&root.join("request_bounds"), &request_bounds)
        + write_corpus(&root.join("record_batch"), &record_batch)
        + write_corpus(&root.join("decompress"), &decompress);
    println!("total {total} bytes");
}
