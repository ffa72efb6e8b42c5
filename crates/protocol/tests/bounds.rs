//! Tests for the request-body bounds pre-scan (`vltava_protocol::bounds`).
//!
//! The schema tables in `bounds.rs` are transcribed from kafka-protocol's generated decoders,
//! so a table error can only be caught by comparing the two. These tests use kafka-protocol as
//! the oracle. Populated requests it encodes must be walked byte for byte. Wherever both the
//! walker and the decoder accept corrupted or random input, they must end at the same byte.
//! And every body the walker accepts is handed to the real decoder: if the walker let an
//! oversized count through, the test process would abort.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiVersionsRequest, BrokerId, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, ProduceRequest, ProducerId, SyncGroupRequest, TopicName, TransactionalId,
    alter_configs_request, create_partitions_request, create_topics_request,
    delete_records_request, delete_topics_request, describe_configs_request, fetch_request,
    incremental_alter_configs_request, join_group_request, leave_group_request,
    list_offsets_request, metadata_request, offset_commit_request, offset_delete_request,
    offset_fetch_request, produce_request, sync_group_request,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;
use vltava_protocol::bounds::{BoundsError, check_request_body, covered_apis, scan_request_body};

/// The coverage the pre-scan promises: (api key, first version, last version).
const EXPECTED_COVERAGE: &[(i16, i16, i16)] = &[
    (18, 0, 4),
    (3, 0, 12),
    (0, 3, 11),
    (1, 4, 16),
    (2, 1, 8),
    (19, 2, 7),
    (20, 1, 6),
    (37, 0, 3),
    (32, 1, 4),
    (33, 0, 2),
    (44, 0, 1),
    (60, 0, 1),
    (21, 0, 2),
    (22, 0, 4),
    (10, 0, 4),
    (11, 0, 9),
    (14, 0, 5),
    (12, 0, 4),
    (13, 0, 5),
    (8, 2, 9),
    (9, 1, 9),
    (15, 0, 5),
    (16, 0, 4),
    (42, 0, 2),
    (47, 0, 0),
];

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

fn all_pairs() -> Vec<(i16, i16)> {
    covered_apis()
        .flat_map(|(key, versions)| versions.map(move |v| (key, v)))
        .collect()
}

fn encode<T: Encodable>(req: &T, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    if let Err(e) = req.encode(&mut buf, version) {
        panic!(
            "builder for {} v{version} is invalid: {e}",
            std::any::type_name::<T>()
        );
    }
    buf.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Populated builders: 1-2 elements at every nesting level, non-empty strings, nullable fields
// both set and null, and only fields that exist at `v` moved off their defaults (the encoder
// rejects the others).
// ---------------------------------------------------------------------------------------------

fn produce(_v: i16) -> ProduceRequest {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let partition = |index: i32, records: Option<&'static [u8]>| {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(records.map(Bytes::from_static))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let topic_data = |name| {
        TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![
                partition(0, Some(b"stand-in for a record batch")),
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

/// Maps each covered API key to its request type. `$each` is called as
/// `$each!(RequestType, builder_fn)`, so one table serves encoding and decoding.
macro_rules! for_api {
    ($api:expr, $each:ident) => {
        match $api {
            0 => $each!(ProduceRequest, produce),
            1 => $each!(FetchRequest, fetch),
            2 => $each!(ListOffsetsRequest, list_offsets),
            3 => $each!(MetadataRequest, metadata),
            8 => $each!(OffsetCommitRequest, offset_commit),
            9 => $each!(OffsetFetchRequest, offset_fetch),
            10 => $each!(FindCoordinatorRequest, find_coordinator),
            11 => $each!(JoinGroupRequest, join_group),
            12 => $each!(HeartbeatRequest, heartbeat),
            13 => $each!(LeaveGroupRequest, leave_group),
            14 => $each!(SyncGroupRequest, sync_group),
            15 => $each!(DescribeGroupsRequest, describe_groups),
            16 => $each!(ListGroupsRequest, list_groups),
            18 => $each!(ApiVersionsRequest, api_versions),
            19 => $each!(CreateTopicsRequest, create_topics),
            20 => $each!(DeleteTopicsRequest, delete_topics),
            21 => $each!(DeleteRecordsRequest, delete_records),
            22 => $each!(InitProducerIdRequest, init_producer_id),
            32 => $each!(DescribeConfigsRequest, describe_configs),
            33 => $each!(AlterConfigsRequest, alter_configs),
            37 => $each!(CreatePartitionsRequest, create_partitions),
            42 => $each!(DeleteGroupsRequest, delete_groups),
            44 => $each!(IncrementalAlterConfigsRequest, incremental_alter_configs),
            47 => $each!(OffsetDeleteRequest, offset_delete),
            60 => $each!(DescribeClusterRequest, describe_cluster),
            other => panic!("no test builder for api key {other}"),
        }
    };
}

/// A populated request for `api` at `version`, encoded by kafka-protocol.
fn populated(api: i16, version: i16) -> Vec<u8> {
    macro_rules! build {
        ($ty:ty, $builder:ident) => {
            encode(&$builder(version), version)
        };
    }
    for_api!(api, build)
}

/// The request type's `Default`, which exercises empty arrays and default nulls.
fn defaults(api: i16, version: i16) -> Vec<u8> {
    macro_rules! build {
        ($ty:ty, $builder:ident) => {
            encode(&<$ty>::default(), version)
        };
    }
    for_api!(api, build)
}

/// Runs the real decoder. Returns the bytes it consumed if it succeeded. The point is the
/// call itself: on an unguarded oversized count it would abort this process.
fn decode(api: i16, version: i16, body: &[u8]) -> Option<usize> {
    let mut buf = Bytes::copy_from_slice(body);
    macro_rules! run {
        ($ty:ty, $builder:ident) => {
            <$ty as Decodable>::decode(&mut buf, version).is_ok()
        };
    }
    let ok = for_api!(api, run);
    ok.then(|| body.len() - buf.remaining())
}

/// The safety contract, checked on arbitrary input: never panic. If the walker accepts, the
/// decoder runs (and must not abort). If both accept, they end at the same byte.
fn check_guarded_decode(api: i16, version: i16, body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(scanned) = scan_request_body(api, version, body) else {
        return Ok(());
    };
    prop_assert!(scanned <= body.len());
    prop_assert_eq!(check_request_body(api, version, body), Ok(()));
    if let Some(decoded) = decode(api, version, body) {
        prop_assert_eq!(
            decoded,
            scanned,
            "walker and decoder disagree on api {} v{} for {:02x?}",
            api,
            version,
            body
        );
    }
    Ok(())
}

fn valid_encodings() -> Vec<(i16, i16, Vec<u8>)> {
    all_pairs()
        .into_iter()
        .flat_map(|(api, v)| [(api, v, populated(api, v)), (api, v, defaults(api, v))])
        .collect()
}

#[test]
fn coverage_is_exactly_what_was_promised() {
    let mut expected: Vec<(i16, i16, i16)> = EXPECTED_COVERAGE.to_vec();
    let mut actual: Vec<(i16, i16, i16)> = covered_apis()
        .map(|(key, versions)| (key, *versions.start(), *versions.end()))
        .collect();
    expected.sort_unstable();
    actual.sort_unstable();
    assert_eq!(actual, expected);
}

#[test]
fn populated_requests_round_trip_exactly() {
    for (api, v) in all_pairs() {
        let body = populated(api, v);
        assert_eq!(
            scan_request_body(api, v, &body),
            Ok(body.len()),
            "api {api} v{v}: {body:02x?}"
        );
        assert_eq!(check_request_body(api, v, &body), Ok(()));
        // The builder must produce something kafka-protocol itself accepts, or the
        // comparison above proves nothing.
        assert_eq!(decode(api, v, &body), Some(body.len()), "api {api} v{v}");
    }
}

#[test]
fn default_requests_round_trip_exactly() {
    for (api, v) in all_pairs() {
        let body = defaults(api, v);
        assert_eq!(
            scan_request_body(api, v, &body),
            Ok(body.len()),
            "api {api} v{v}: {body:02x?}"
        );
        assert_eq!(decode(api, v, &body), Some(body.len()), "api {api} v{v}");
    }
}

#[test]
fn trailing_bytes_are_allowed_but_not_counted() {
    for (api, v) in all_pairs() {
        let mut body = populated(api, v);
        let len = body.len();
        body.extend_from_slice(&[0xff; 5]);
        assert_eq!(scan_request_body(api, v, &body), Ok(len), "api {api} v{v}");
    }
}

#[test]
fn uncovered_keys_and_versions_are_unsupported() {
    for (api, versions) in covered_apis() {
        for v in [*versions.start() - 1, *versions.end() + 1, -1, i16::MAX] {
            if versions.contains(&v) {
                continue;
            }
            let body = populated(api, *versions.start());
            assert_eq!(
                check_request_body(api, v, &body),
                Err(BoundsError::Unsupported {
                    api_key: api,
                    version: v
                })
            );
        }
    }
    for api in [-1, 4, 17, 36, 1000] {
        assert!(matches!(
            check_request_body(api, 0, &[]),
            Err(BoundsError::Unsupported { .. })
        ));
    }
}

#[test]
fn every_strict_prefix_is_rejected() {
    // The walk only depends on bytes already read, and on the full encoding it ends exactly
    // at the last byte. So every strict prefix must run out before the walk completes.
    for (api, v, body) in valid_encodings() {
        for cut in 0..body.len() {
            let prefix = &body[..cut];
            assert!(
                check_request_body(api, v, prefix).is_err(),
                "api {api} v{v} accepted a {cut}-byte prefix of {}",
                body.len()
            );
        }
    }
}

/// First-field arrays: (api key, versions) whose body starts with an array count.
const LEADING_ARRAYS: &[(i16, RangeIncl)] = &[
    (3, (0, 12)),
    (19, (2, 7)),
    (21, (0, 2)),
    (32, (1, 4)),
    (33, (0, 2)),
    (37, (0, 3)),
    (44, (0, 1)),
    (15, (0, 5)),
    (42, (0, 2)),
];
type RangeIncl = (i16, i16);

const fn flexible_from(api: i16) -> i16 {
    match api {
        3 => 9,
        19 => 5,
        21 | 33 | 37 | 42 => 2,
        32 => 4,
        44 => 1,
        15 => 5,
        _ => i16::MAX,
    }
}

/// `2^31` as a 5-byte unsigned varint: a compact count of 2^31 - 1 elements.
const HUGE_VARINT: [u8; 5] = [0x80, 0x80, 0x80, 0x80, 0x08];

#[test]
fn huge_leading_counts_are_rejected() {
    for &(api, (lo, hi)) in LEADING_ARRAYS {
        for v in lo..=hi {
            let body = populated(api, v);
            let corrupted: Vec<u8> = if v >= flexible_from(api) {
                // Replace the 1-byte compact count with a 5-byte one.
                HUGE_VARINT.iter().chain(&body[1..]).copied().collect()
            } else {
                [0x7f, 0xff, 0xff, 0xff]
                    .iter()
                    .chain(&body[4..])
                    .copied()
                    .collect()
            };
            let err = check_request_body(api, v, &corrupted);
            assert!(
                matches!(err, Err(BoundsError::CountTooLarge { offset: 0, .. })),
                "api {api} v{v}: {err:?}"
            );
        }
    }
}

const ABORT_CHILD_ENV: &str = "VLTAVA_BOUNDS_ABORT_CHILD";

/// The hazard this module exists for, on its own: kafka-protocol given the 20-byte Metadata
/// body that claims 2^31 - 1 topics. That aborts the process. So the test does nothing unless
/// it is the child process started by `without_the_guard_the_decoder_aborts`.
#[test]
fn unguarded_decode_of_huge_count() {
    if std::env::var_os(ABORT_CHILD_ENV).is_none() {
        return;
    }
    let mut body = vec![0x7f, 0xff, 0xff, 0xff];
    body.extend_from_slice(&[0; 16]);
    let _ = decode(3, 1, &body);
}

#[test]
fn without_the_guard_the_decoder_aborts() {
    let mut body = vec![0x7f, 0xff, 0xff, 0xff];
    body.extend_from_slice(&[0; 16]);
    assert!(matches!(
        check_request_body(3, 1, &body),
        Err(BoundsError::CountTooLarge { .. })
    ));
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args(["--exact", "unguarded_decode_of_huge_count"])
        .env("RUST_BACKTRACE", "0")
        .env(ABORT_CHILD_ENV, "1")
        .output()
        .expect("spawn test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unguarded decode survived: {stderr}");
    assert!(stderr.contains("memory allocation of"), "{stderr}");
}

#[test]
fn huge_nested_counts_are_rejected() {
    // OffsetDelete v0 with one topic of one partition:
    // group_id "g" (2+1), topics count (4), name "t" (2+1), partitions count at offset 10.
    let body = [
        0, 1, b'g', 0, 0, 0, 1, 0, 1, b't', 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0,
    ];
    let err = check_request_body(47, 0, &body);
    assert!(
        matches!(err, Err(BoundsError::CountTooLarge { offset: 10, .. })),
        "{err:?}"
    );
    // DeleteRecords v2 (flexible): topics count 1 (0x02), name "t" (0x02 't'), then the
    // partitions count at offset 3.
    let mut body = vec![0x02, 0x02, b't'];
    body.extend_from_slice(&HUGE_VARINT);
    body.extend_from_slice(&[0; 16]);
    let err = check_request_body(21, 2, &body);
    assert!(
        matches!(err, Err(BoundsError::CountTooLarge { offset: 3, .. })),
        "{err:?}"
    );
    // A count that fits the byte budget but not 12-byte partitions: 2 partitions, 13 bytes.
    let mut body = vec![0x02, 0x02, b't', 0x03];
    body.extend_from_slice(&[0; 13]);
    assert!(matches!(
        check_request_body(21, 2, &body),
        Err(BoundsError::CountTooLarge {
            min_element_size: 13,
            ..
        })
    ));
}

#[test]
fn huge_string_and_bytes_lengths_are_rejected() {
    // OffsetDelete v0: group_id claiming 32767 bytes.
    assert!(matches!(
        check_request_body(47, 0, &[0x7f, 0xff, b'g']),
        Err(BoundsError::LengthTooLarge { offset: 0, .. })
    ));
    // DescribeGroups v5: compact string array of one element claiming 2^31 - 1 bytes.
    let mut body = vec![0x02];
    body.extend_from_slice(&HUGE_VARINT);
    assert!(matches!(
        check_request_body(15, 5, &body),
        Err(BoundsError::LengthTooLarge { offset: 1, .. })
    ));
    // Unknown tagged field claiming more bytes than remain (ApiVersions v3, empty strings).
    let body = [0x01, 0x01, 0x01, 0x09, 0x7f, b'x'];
    assert!(matches!(
        check_request_body(18, 3, &body),
        Err(BoundsError::LengthTooLarge { offset: 4, .. })
    ));
    // Billions of tagged fields in a 10-byte body.
    let mut body = vec![0x01, 0x01];
    body.extend_from_slice(&HUGE_VARINT);
    body.extend_from_slice(&[0; 3]);
    assert!(matches!(
        check_request_body(18, 3, &body),
        Err(BoundsError::CountTooLarge { offset: 2, .. })
    ));
}

#[test]
fn known_tagged_field_must_fill_its_declared_size() {
    // Fetch v12 populated ends with the top-level tagged section holding cluster_id (tag 0).
    // Rebuild just that section with a lying size and check it is refused either way.
    let v = 12;
    let base = encode(&fetch(v).with_cluster_id(None), v);
    let without_tags = &base[..base.len() - (1 + 1 + 1 + extra_tag().len())];
    for (size, ok) in [(3u8, true), (2, false), (4, false)] {
        let mut body = without_tags.to_vec();
        // One tagged field: tag 0, declared size, compact string "ab".
        body.extend_from_slice(&[0x01, 0x00, size, 0x03, b'a', b'b']);
        // Padding so an oversized declaration is not simply truncated.
        body.extend_from_slice(&[0; 4]);
        let res = check_request_body(1, v, &body);
        assert_eq!(res.is_ok(), ok, "size {size}: {res:?}");
        if !ok {
            assert!(
                matches!(
                    res,
                    Err(BoundsError::TaggedSizeMismatch { .. }
                        | BoundsError::LengthTooLarge { .. }
                        | BoundsError::Truncated { .. })
                ),
                "size {size}: {res:?}"
            );
        }
    }
}

#[test]
fn corrupting_any_position_to_a_huge_count_never_gets_past_the_guard() {
    // Sweep every position of every valid encoding: as a fixed-width count (i32::MAX over four
    // bytes) and as a compact count (one byte replaced by a 5-byte varint). Whatever the walker
    // accepts is decoded. In each message with an array, at least one corruption must be
    // refused precisely as an oversized count at the corrupted offset.
    for (api, v, body) in valid_encodings() {
        let mut count_rejections = 0;
        for pos in 0..body.len() {
            let mut fixed = body.clone();
            for (i, b) in [0x7f, 0xff, 0xff, 0xff].into_iter().enumerate() {
                if let Some(slot) = fixed.get_mut(pos + i) {
                    *slot = b;
                }
            }
            let compact: Vec<u8> = body[..pos]
                .iter()
                .chain(&HUGE_VARINT)
                .chain(&body[pos + 1..])
                .copied()
                .collect();
            for corrupted in [fixed, compact] {
                if let Err(BoundsError::CountTooLarge { offset, .. }) =
                    check_request_body(api, v, &corrupted)
                    && offset == pos
                {
                    count_rejections += 1;
                }
                if let Err(e) = check_guarded_decode(api, v, &corrupted) {
                    panic!("api {api} v{v} pos {pos}: {e}");
                }
            }
        }
        // Messages without any array and without a tagged section (which has a count too).
        let countless = matches!((api, v), (12, 0..=3) | (18, 0..=2) | (22, 0..=1))
            || matches!((api, v), (10, 0..=2) | (16, 0..=2) | (13, 0..=2));
        if !countless {
            assert!(count_rejections > 0, "api {api} v{v}: no count was refused");
        }
    }
}

fn pair_strategy() -> impl Strategy<Value = (i16, i16)> {
    let pairs = all_pairs();
    (0..pairs.len()).prop_map(move |i| pairs[i])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_for_any_api_and_version(
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        for (api, v) in all_pairs() {
            check_guarded_decode(api, v, &body)?;
        }
    }

    #[test]
    fn mutated_valid_encodings_stay_guarded(
        (api, v) in pair_strategy(),
        use_defaults in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut body = if use_defaults { defaults(api, v) } else { populated(api, v) };
        if !body.is_empty() {
            for (index, byte) in &edits {
                let i = index.index(body.len());
                body[i] = *byte;
            }
            if truncate {
                body.truncate(cut.index(body.len()));
            }
        }
        check_guarded_decode(api, v, &body)?;
    }

    #[test]
    fn random_prefixes_of_valid_encodings_are_rejected(
        (api, v) in pair_strategy(),
        cut in any::<prop::sample::Index>(),
    ) {
        let body = populated(api, v);
        if body.is_empty() {
            return Ok(());
        }
        let cut = cut.index(body.len());
        prop_assert!(check_request_body(api, v, &body[..cut]).is_err());
    }
}
