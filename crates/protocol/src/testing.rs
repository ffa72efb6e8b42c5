//! Request builders for tests and fuzz seeds (feature `testing`): for every API the bounds
//! pre-scan covers, a populated request (1-2 elements at every nesting level, strings set,
//! nullable fields both set and null, an unknown tagged field on every struct of flexible
//! versions) and the default one. The bounds tests use them as kafka-protocol's oracle input;
//! the fuzz seed generator writes them out as corpora.

use bytes::Bytes;
use kafka_protocol::messages::{
    AddRaftVoterRequest, AlterConfigsRequest, ApiKey, ApiVersionsRequest, BrokerId,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeQuorumRequest, FetchRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    ProducerId, RemoveRaftVoterRequest, RequestKind, SyncGroupRequest, TopicName, TransactionalId,
    alter_configs_request, create_partitions_request, create_topics_request,
    delete_records_request, delete_topics_request, describe_configs_request,
    describe_quorum_request, fetch_request, incremental_alter_configs_request, join_group_request,
    leave_group_request, list_offsets_request, metadata_request, offset_commit_request,
    offset_delete_request, offset_fetch_request, offset_for_leader_epoch_request, produce_request,
    sync_group_request,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ElectLeadersRequest, ListPartitionReassignmentsRequest,
    alter_partition_reassignments_request, elect_leaders_request,
    list_partition_reassignments_request,
};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeProducersRequest, GetTelemetrySubscriptionsRequest,
    ListConfigResourcesRequest, PushTelemetryRequest, describe_log_dirs_request,
    describe_producers_request,
};
use kafka_protocol::protocol::StrBytes;

/// An unknown tag on every struct, so flexible versions carry a non-empty tagged section.
pub const EXTRA_TAG: i32 = 7;

/// The bytes of the unknown tagged field.
pub fn extra_tag() -> Bytes {
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

/// Maps each API key with a builder to its `RequestKind` variant. `$each` is called as
/// `$each!(Variant, RequestType, builder_fn)`.
macro_rules! for_api {
    ($api:expr, $each:ident) => {
        match $api {
            ApiKey::Produce => $each!(Produce, ProduceRequest, produce),
            ApiKey::Fetch => $each!(Fetch, FetchRequest, fetch),
            ApiKey::ListOffsets => $each!(ListOffsets, ListOffsetsRequest, list_offsets),
            ApiKey::Metadata => $each!(Metadata, MetadataRequest, metadata),
            ApiKey::OffsetCommit => $each!(OffsetCommit, OffsetCommitRequest, offset_commit),
            ApiKey::OffsetFetch => $each!(OffsetFetch, OffsetFetchRequest, offset_fetch),
            ApiKey::FindCoordinator => {
                $each!(FindCoordinator, FindCoordinatorRequest, find_coordinator)
            }
            ApiKey::JoinGroup => $each!(JoinGroup, JoinGroupRequest, join_group),
            ApiKey::Heartbeat => $each!(Heartbeat, HeartbeatRequest, heartbeat),
            ApiKey::LeaveGroup => $each!(LeaveGroup, LeaveGroupRequest, leave_group),
            ApiKey::SyncGroup => $each!(SyncGroup, SyncGroupRequest, sync_group),
            ApiKey::DescribeGroups => {
                $each!(DescribeGroups, DescribeGroupsRequest, describe_groups)
            }
            ApiKey::ListGroups => $each!(ListGroups, ListGroupsRequest, list_groups),
            ApiKey::ApiVersions => $each!(ApiVersions, ApiVersionsRequest, api_versions),
            ApiKey::CreateTopics => $each!(CreateTopics, CreateTopicsRequest, create_topics),
            ApiKey::DeleteTopics => $each!(DeleteTopics, DeleteTopicsRequest, delete_topics),
            ApiKey::DeleteRecords => $each!(DeleteRecords, DeleteRecordsRequest, delete_records),
            ApiKey::OffsetForLeaderEpoch => $each!(
                OffsetForLeaderEpoch,
                OffsetForLeaderEpochRequest,
                offset_for_leader_epoch
            ),
            ApiKey::InitProducerId => {
                $each!(InitProducerId, InitProducerIdRequest, init_producer_id)
            }
            ApiKey::DescribeConfigs => {
                $each!(DescribeConfigs, DescribeConfigsRequest, describe_configs)
            }
            ApiKey::AlterConfigs => $each!(AlterConfigs, AlterConfigsRequest, alter_configs),
            ApiKey::CreatePartitions => {
                $each!(CreatePartitions, CreatePartitionsRequest, create_partitions)
            }
            ApiKey::DeleteGroups => $each!(DeleteGroups, DeleteGroupsRequest, delete_groups),
            ApiKey::IncrementalAlterConfigs => $each!(
                IncrementalAlterConfigs,
                IncrementalAlterConfigsRequest,
                incremental_alter_configs
            ),
            ApiKey::OffsetDelete => $each!(OffsetDelete, OffsetDeleteRequest, offset_delete),
            ApiKey::ElectLeaders => $each!(ElectLeaders, ElectLeadersRequest, elect_leaders),
            ApiKey::AlterPartitionReassignments => $each!(
                AlterPartitionReassignments,
                AlterPartitionReassignmentsRequest,
                alter_partition_reassignments
            ),
            ApiKey::ListPartitionReassignments => $each!(
                ListPartitionReassignments,
                ListPartitionReassignmentsRequest,
                list_partition_reassignments
            ),
            ApiKey::DescribeCluster => {
                $each!(DescribeCluster, DescribeClusterRequest, describe_cluster)
            }
            ApiKey::DescribeQuorum => {
                $each!(DescribeQuorum, DescribeQuorumRequest, describe_quorum)
            }
            ApiKey::AddRaftVoter => $each!(AddRaftVoter, AddRaftVoterRequest, add_raft_voter),
            ApiKey::RemoveRaftVoter => {
                $each!(RemoveRaftVoter, RemoveRaftVoterRequest, remove_raft_voter)
            }
            ApiKey::DescribeLogDirs => {
                $each!(DescribeLogDirs, DescribeLogDirsRequest, describe_log_dirs)
            }
            ApiKey::DescribeProducers => {
                $each!(
                    DescribeProducers,
                    DescribeProducersRequest,
                    describe_producers
                )
            }
            ApiKey::GetTelemetrySubscriptions => $each!(
                GetTelemetrySubscriptions,
                GetTelemetrySubscriptionsRequest,
                get_telemetry_subscriptions
            ),
            ApiKey::PushTelemetry => $each!(PushTelemetry, PushTelemetryRequest, push_telemetry),
            ApiKey::ListConfigResources => $each!(
                ListConfigResources,
                ListConfigResourcesRequest,
                list_config_resources
            ),
            _ => None,
        }
    };
}

/// A populated request of `api` for `version` (fields that do not exist at `version` stay at
/// their defaults, as the encoder requires); `produce_records` is the record set of Produce's
/// first partition. `None` for an API without a builder.
pub fn populated_request(api: ApiKey, version: i16, produce_records: Bytes) -> Option<RequestKind> {
    macro_rules! build {
        (Produce, $ty:ty, $builder:ident) => {
            Some(RequestKind::Produce(produce(version, produce_records)))
        };
        ($variant:ident, $ty:ty, $builder:ident) => {
            Some(RequestKind::$variant($builder(version)))
        };
    }
    for_api!(api, build)
}

/// The request type's `Default` for `api` (empty arrays, default nulls); `None` for an API
/// without a builder.
pub fn default_request(api: ApiKey) -> Option<RequestKind> {
    macro_rules! build {
        ($variant:ident, $ty:ty, $builder:ident) => {
            Some(RequestKind::$variant(<$ty>::default()))
        };
    }
    for_api!(api, build)
}

// ---------------------------------------------------------------------------------------------
// Populated builders: 1-2 elements at every nesting level, non-empty strings, nullable fields
// both set and null, and only fields that exist at `v` moved off their defaults (the encoder
// rejects the others).
// ---------------------------------------------------------------------------------------------

fn produce(_v: i16, records: Bytes) -> ProduceRequest {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let partition = |index: i32, records: Option<Bytes>| {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(records)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let topic_data = |name| {
        TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![
                partition(0, Some(records.clone())),
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

fn offset_for_leader_epoch(v: i16) -> OffsetForLeaderEpochRequest {
    use offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let partition = |index: i32| {
        let mut p = OffsetForLeaderPartition::default()
            .with_partition(index)
            .with_leader_epoch(3)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
        if v >= 2 {
            p = p.with_current_leader_epoch(4);
        }
        p
    };
    let epoch_topic = |name| {
        OffsetForLeaderTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![partition(0), partition(1)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let mut req = OffsetForLeaderEpochRequest::default()
        .with_topics(vec![epoch_topic("a"), epoch_topic("b")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 3 {
        req = req.with_replica_id(BrokerId(2));
    }
    req
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

fn elect_leaders(v: i16) -> ElectLeadersRequest {
    use elect_leaders_request::TopicPartitions;
    let tp = |name| {
        let t = TopicPartitions::default()
            .with_topic(topic(name))
            .with_partitions(vec![0, 3]);
        if v >= 2 {
            t.with_unknown_tagged_field(EXTRA_TAG, extra_tag())
        } else {
            t
        }
    };
    let r = ElectLeadersRequest::default()
        .with_election_type(if v >= 1 { 1 } else { 0 })
        .with_topic_partitions(Some(vec![tp("a"), tp("b")]))
        .with_timeout_ms(30_000);
    if v >= 2 {
        r.with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    } else {
        r
    }
}

fn alter_partition_reassignments(v: i16) -> AlterPartitionReassignmentsRequest {
    use alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    let partition = |index: i32, replicas: Option<Vec<i32>>| {
        ReassignablePartition::default()
            .with_partition_index(index)
            .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()))
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let t = |name| {
        ReassignableTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![partition(0, Some(vec![2, 3, 4])), partition(1, None)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_allow_replication_factor_change(v < 1)
        .with_topics(vec![t("a"), t("b")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn list_partition_reassignments(_v: i16) -> ListPartitionReassignmentsRequest {
    use list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    let t = |name| {
        ListPartitionReassignmentsTopics::default()
            .with_name(topic(name))
            .with_partition_indexes(vec![0, 1])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(Some(vec![t("a"), t("b")]))
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
    if v >= 2 {
        req = req.with_include_fenced_brokers(true);
    }
    req
}

fn add_raft_voter(_v: i16) -> AddRaftVoterRequest {
    use kafka_protocol::messages::add_raft_voter_request::Listener;
    let listener = |name: &str, port: u16| {
        Listener::default()
            .with_name(StrBytes::from_string(name.to_string()))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(port)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    AddRaftVoterRequest::default()
        .with_cluster_id(Some(StrBytes::from_static_str("AAAAAAAAAAAAAAAAAAAAAA")))
        .with_timeout_ms(30_000)
        .with_voter_id(4)
        .with_voter_directory_id(Default::default())
        .with_listeners(vec![listener("CONTROLLER", 9093), listener("OTHER", 65535)])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn remove_raft_voter(_v: i16) -> RemoveRaftVoterRequest {
    RemoveRaftVoterRequest::default()
        .with_cluster_id(None)
        .with_voter_id(2)
        .with_voter_directory_id(Default::default())
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn describe_quorum(_v: i16) -> DescribeQuorumRequest {
    use describe_quorum_request::{PartitionData, TopicData};
    let partition = |index: i32| {
        PartitionData::default()
            .with_partition_index(index)
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    let topic_data = |name| {
        TopicData::default()
            .with_topic_name(topic(name))
            .with_partitions(vec![partition(0), partition(1)])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    DescribeQuorumRequest::default()
        .with_topics(vec![topic_data("__cluster_metadata"), topic_data("b")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn describe_log_dirs(v: i16) -> DescribeLogDirsRequest {
    use describe_log_dirs_request::DescribableLogDirTopic;
    let t = |name| {
        let mut t = DescribableLogDirTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![0, 7]);
        if v >= 2 {
            t = t.with_unknown_tagged_field(EXTRA_TAG, extra_tag());
        }
        t
    };
    let mut req = DescribeLogDirsRequest::default().with_topics(Some(vec![t("a"), t("b")]));
    if v >= 2 {
        req = req.with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    }
    req
}

fn describe_producers(_v: i16) -> DescribeProducersRequest {
    use describe_producers_request::TopicRequest;
    let t = |name| {
        TopicRequest::default()
            .with_name(topic(name))
            .with_partition_indexes(vec![0, 1])
            .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
    };
    DescribeProducersRequest::default()
        .with_topics(vec![t("a"), t("b")])
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn get_telemetry_subscriptions(_v: i16) -> GetTelemetrySubscriptionsRequest {
    GetTelemetrySubscriptionsRequest::default()
        .with_client_instance_id(Default::default())
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn push_telemetry(_v: i16) -> PushTelemetryRequest {
    PushTelemetryRequest::default()
        .with_client_instance_id(Default::default())
        .with_subscription_id(17)
        .with_terminating(true)
        .with_compression_type(4)
        .with_metrics(Bytes::from_static(b"otlp metrics stand-in"))
        .with_unknown_tagged_field(EXTRA_TAG, extra_tag())
}

fn list_config_resources(v: i16) -> ListConfigResourcesRequest {
    let mut req =
        ListConfigResourcesRequest::default().with_unknown_tagged_field(EXTRA_TAG, extra_tag());
    if v >= 1 {
        req = req.with_resource_types(vec![2, 16]);
    }
    req
}
