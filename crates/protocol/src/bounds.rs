//! Bounds pre-scan of request bodies, run before they reach the `kafka-protocol` decoder.
//!
//! Why this exists: `kafka-protocol` 0.18 sizes its allocations from what the wire declares.
//! Arrays are decoded with `Vec::with_capacity(count)` and some strings and byte fields with
//! `vec![0; len]`, so a 20-byte body that claims 2^31 elements makes the decoder request
//! gigabytes up front. The allocation fails, and the process aborts. An abort can't be caught,
//! so checking after decoding would come too late. The broker must know before decoding that
//! every declared size fits in the bytes that actually arrived.
//!
//! This module walks a request body the way the generated decoders do, with the same fields,
//! the same version conditions, compact encodings in flexible versions, and tagged-field
//! sections. It allocates nothing, and it rejects any array count, string length or bytes length
//! that the remaining bytes can't hold. Array counts are checked against the smallest wire size
//! of an element, not just one byte. A body it accepts may still fail to decode (bad UTF-8, for
//! example). But the decoder's up-front reservations are then bounded by a small multiple of the
//! body size (about 40x at worst, the in-memory size of an element over its smallest encoding),
//! so the frame-size limit bounds them too.
//!
//! The schemas are data: one static table per message struct, plus a single interpreter.
//! Covering another API means adding its tables and one `APIS` row. No new walking code.

use std::fmt;
use std::ops::RangeInclusive;

/// A position in the schema, shown as `Struct.field`, used to explain a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPath {
    /// The message or struct, named as in `kafka-protocol` (e.g. `MetadataRequestTopic`).
    pub message: &'static str,
    /// The field within it, or `tagged_fields` for the tagged-field section itself.
    pub field: &'static str,
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.message, self.field)
    }
}

/// Why a request body was refused before decoding. Offsets are relative to the body start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    /// No schema table for this API key and version, so the body can't be vouched for.
    #[error("api key {api_key} version {version} is not covered by the bounds pre-scan")]
    Unsupported {
        /// The request's API key.
        api_key: i16,
        /// The request's API version.
        version: i16,
    },
    /// The body (or a tagged field's declared extent) ends inside a field.
    #[error("{field}: input ends at offset {offset}, {needed} more bytes needed")]
    Truncated {
        /// Field being read.
        field: FieldPath,
        /// Where the field starts.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// An array declares more elements than the remaining bytes can hold.
    #[error(
        "{field}: {count} elements of at least {min_element_size} bytes at offset {offset} \
         exceed the {remaining} bytes remaining"
    )]
    CountTooLarge {
        /// The array field.
        field: FieldPath,
        /// Where the count starts.
        offset: usize,
        /// Declared element count.
        count: u64,
        /// Smallest wire size of one element at this version.
        min_element_size: usize,
        /// Bytes left after the count.
        remaining: usize,
    },
    /// A string, bytes field or tagged field declares more bytes than remain.
    #[error("{field}: length {len} at offset {offset} exceeds the {remaining} bytes remaining")]
    LengthTooLarge {
        /// The field.
        field: FieldPath,
        /// Where the length starts.
        offset: usize,
        /// Declared length.
        len: u64,
        /// Bytes left after the length.
        remaining: usize,
    },
    /// A length or count below -1.
    #[error("{field}: negative length {len} at offset {offset}")]
    NegativeLength {
        /// The field.
        field: FieldPath,
        /// Where the length starts.
        offset: usize,
        /// The declared value.
        len: i32,
    },
    /// Null was given for a field that the decoder does not accept as null.
    #[error("{field}: null at offset {offset} for a non-nullable field")]
    UnexpectedNull {
        /// The field.
        field: FieldPath,
        /// Where the length starts.
        offset: usize,
    },
    /// An unsigned varint longer than 5 bytes or with bits beyond 32.
    #[error("{field}: malformed unsigned varint at offset {offset}")]
    MalformedVarint {
        /// The field whose length, count or tag was being read.
        field: FieldPath,
        /// Where the varint starts.
        offset: usize,
    },
    /// A known tagged field whose value does not fill exactly its declared size.
    #[error(
        "{field}: tagged field {tag} at offset {offset} declares {declared} bytes but its value takes {actual}"
    )]
    TaggedSizeMismatch {
        /// The tagged field.
        field: FieldPath,
        /// Where the value starts.
        offset: usize,
        /// The tag number.
        tag: u32,
        /// Size declared in the tagged-field header.
        declared: usize,
        /// Bytes the value actually took.
        actual: usize,
    },
}

/// Checks that `body` (a request without its header) can be safely given to the
/// `kafka-protocol` decoder for `api_key`/`version`: every declared count and length fits in
/// the bytes after it. Trailing bytes after the message are allowed, as the decoder ignores them.
pub fn check_request_body(api_key: i16, version: i16, body: &[u8]) -> Result<(), BoundsError> {
    scan_request_body(api_key, version, body).map(|_| ())
}

/// Like [`check_request_body`], but returns how many bytes the message occupies, so callers
/// (and tests) can detect trailing bytes or confirm the walk matched an encoding exactly.
pub fn scan_request_body(api_key: i16, version: i16, body: &[u8]) -> Result<usize, BoundsError> {
    let api = APIS
        .iter()
        .find(|api| api.key == api_key && api.covered.contains(version))
        .ok_or(BoundsError::Unsupported { api_key, version })?;
    let ctx = Ctx {
        version,
        flexible: version >= api.flexible_from,
    };
    let mut cursor = Cursor {
        buf: body,
        pos: 0,
        end: body.len(),
    };
    walk_struct(&mut cursor, api.root, ctx)?;
    Ok(cursor.pos)
}

/// The versions of `api_key` that the pre-scan covers, if any.
pub fn covered_versions(api_key: i16) -> Option<RangeInclusive<i16>> {
    APIS.iter()
        .find(|api| api.key == api_key)
        .map(|api| api.covered.lo..=api.covered.hi)
}

/// Every covered API key with its covered versions, in table order.
pub fn covered_apis() -> impl Iterator<Item = (i16, RangeInclusive<i16>)> {
    APIS.iter()
        .map(|api| (api.key, api.covered.lo..=api.covered.hi))
}

// ---------------------------------------------------------------------------------------------
// Schema model
// ---------------------------------------------------------------------------------------------

/// Inclusive version range.
#[derive(Debug, Clone, Copy)]
struct Vr {
    lo: i16,
    hi: i16,
}

impl Vr {
    const fn contains(self, version: i16) -> bool {
        self.lo <= version && version <= self.hi
    }
}

const ALL: Vr = Vr {
    lo: 0,
    hi: i16::MAX,
};

const fn since(lo: i16) -> Vr {
    Vr { lo, hi: i16::MAX }
}

const fn until(hi: i16) -> Vr {
    Vr { lo: 0, hi }
}

const fn span(lo: i16, hi: i16) -> Vr {
    Vr { lo, hi }
}

/// Wire shape of a field. Whether strings, bytes and arrays are compact is decided by the
/// message version (flexible or not), as in the generated code, so it isn't stored per field.
#[derive(Debug, Clone, Copy)]
enum Ty {
    /// Fixed-width value (ints, boolean, uuid) of this many bytes.
    Fixed(usize),
    /// String; `true` if null is accepted.
    Str(bool),
    /// Bytes; `true` if null is accepted.
    Bytes(bool),
    /// Array; `true` if null is accepted.
    Array(Elem, bool),
    /// Inline struct (used for tagged struct fields).
    Struct(&'static Schema),
}

/// Element of an array. Elements are never null in these schemas.
#[derive(Debug, Clone, Copy)]
enum Elem {
    Fixed(usize),
    Str,
    Struct(&'static Schema),
}

const BOOL: Ty = Ty::Fixed(1);
const I8: Ty = Ty::Fixed(1);
const I16: Ty = Ty::Fixed(2);
const I32: Ty = Ty::Fixed(4);
const I64: Ty = Ty::Fixed(8);
const UUID: Ty = Ty::Fixed(16);
const STR: Ty = Ty::Str(false);
const NULLABLE_STR: Ty = Ty::Str(true);
const BYTES: Ty = Ty::Bytes(false);
const NULLABLE_BYTES: Ty = Ty::Bytes(true);
const I32_ARRAY: Ty = Ty::Array(Elem::Fixed(4), false);
const STR_ARRAY: Ty = Ty::Array(Elem::Str, false);
const NULLABLE_STR_ARRAY: Ty = Ty::Array(Elem::Str, true);
const NULLABLE_I32_ARRAY: Ty = Ty::Array(Elem::Fixed(4), true);

const fn array(schema: &'static Schema) -> Ty {
    Ty::Array(Elem::Struct(schema), false)
}

const fn nullable_array(schema: &'static Schema) -> Ty {
    Ty::Array(Elem::Struct(schema), true)
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    versions: Vr,
    ty: Ty,
}

const fn f(name: &'static str, versions: Vr, ty: Ty) -> Field {
    Field { name, versions, ty }
}

/// A known tagged field. The generated decoders read a known tag's value straight from the
/// buffer and ignore its declared size, while Kafka itself honours the size. The walker reads
/// the value within the declared size and requires it to fill that size exactly, so both
/// readings end at the same byte.
#[derive(Debug)]
struct Tagged {
    tag: u32,
    name: &'static str,
    versions: Vr,
    ty: Ty,
}

const fn tag(tag: u32, name: &'static str, versions: Vr, ty: Ty) -> Tagged {
    Tagged {
        tag,
        name,
        versions,
        ty,
    }
}

#[derive(Debug)]
struct Schema {
    name: &'static str,
    fields: &'static [Field],
    tagged: &'static [Tagged],
}

/// Builds a `Schema` with a struct literal so the field slices are promoted to `'static`.
macro_rules! schema {
    ($name:literal [$($field:expr),* $(,)?] $(tagged [$($tag:expr),* $(,)?])?) => {
        Schema { name: $name, fields: &[$($field),*], tagged: &[$($($tag),*)?] }
    };
}

const NEVER_FLEXIBLE: i16 = i16::MAX;

struct Api {
    key: i16,
    /// Versions vouched for by the round-trip tests; anything else is `Unsupported`.
    covered: Vr,
    /// First version using compact encodings and tagged fields.
    flexible_from: i16,
    root: &'static Schema,
}

const fn api(key: i16, covered: Vr, flexible_from: i16, root: &'static Schema) -> Api {
    Api {
        key,
        covered,
        flexible_from,
        root,
    }
}

/// Covered requests. Field tables below follow `kafka-protocol` 0.18's generated `decode`
/// functions (`src/messages/*_request.rs`); nullability follows its Rust types (`Option<_>`),
/// since that decides what the decoder accepts.
static APIS: &[Api] = &[
    api(0, span(3, 11), 9, &PRODUCE_REQUEST),
    api(1, span(4, 16), 12, &FETCH_REQUEST),
    api(2, span(1, 8), 6, &LIST_OFFSETS_REQUEST),
    api(3, span(0, 12), 9, &METADATA_REQUEST),
    api(8, span(2, 9), 8, &OFFSET_COMMIT_REQUEST),
    api(9, span(1, 9), 6, &OFFSET_FETCH_REQUEST),
    api(10, span(0, 4), 3, &FIND_COORDINATOR_REQUEST),
    api(11, span(0, 9), 6, &JOIN_GROUP_REQUEST),
    api(12, span(0, 4), 4, &HEARTBEAT_REQUEST),
    api(13, span(0, 5), 4, &LEAVE_GROUP_REQUEST),
    api(14, span(0, 5), 4, &SYNC_GROUP_REQUEST),
    api(15, span(0, 5), 5, &DESCRIBE_GROUPS_REQUEST),
    api(16, span(0, 4), 3, &LIST_GROUPS_REQUEST),
    api(18, span(0, 4), 3, &API_VERSIONS_REQUEST),
    api(19, span(2, 7), 5, &CREATE_TOPICS_REQUEST),
    api(20, span(1, 6), 4, &DELETE_TOPICS_REQUEST),
    api(21, span(0, 2), 2, &DELETE_RECORDS_REQUEST),
    api(22, span(0, 4), 2, &INIT_PRODUCER_ID_REQUEST),
    api(23, span(2, 4), 4, &OFFSET_FOR_LEADER_EPOCH_REQUEST),
    api(32, span(1, 4), 4, &DESCRIBE_CONFIGS_REQUEST),
    api(35, span(1, 4), 2, &DESCRIBE_LOG_DIRS_REQUEST),
    api(33, span(0, 2), 2, &ALTER_CONFIGS_REQUEST),
    api(37, span(0, 3), 2, &CREATE_PARTITIONS_REQUEST),
    api(42, span(0, 2), 2, &DELETE_GROUPS_REQUEST),
    api(43, span(0, 2), 2, &ELECT_LEADERS_REQUEST),
    api(44, span(0, 1), 1, &INCREMENTAL_ALTER_CONFIGS_REQUEST),
    api(45, span(0, 1), 0, &ALTER_PARTITION_REASSIGNMENTS_REQUEST),
    api(46, span(0, 0), 0, &LIST_PARTITION_REASSIGNMENTS_REQUEST),
    api(47, span(0, 0), NEVER_FLEXIBLE, &OFFSET_DELETE_REQUEST),
    api(55, span(0, 2), 0, &DESCRIBE_QUORUM_REQUEST),
    api(60, span(0, 2), 0, &DESCRIBE_CLUSTER_REQUEST),
    api(61, span(0, 0), 0, &DESCRIBE_PRODUCERS_REQUEST),
    api(71, span(0, 0), 0, &GET_TELEMETRY_SUBSCRIPTIONS_REQUEST),
    api(72, span(0, 0), 0, &PUSH_TELEMETRY_REQUEST),
    api(74, span(0, 0), 0, &LIST_CONFIG_RESOURCES_REQUEST),
    api(80, span(0, 0), 0, &ADD_RAFT_VOTER_REQUEST),
    api(81, span(0, 0), 0, &REMOVE_RAFT_VOTER_REQUEST),
];

// ---------------------------------------------------------------------------------------------
// Schema tables, one per generated struct. Version ranges may reach past the covered ones:
// they describe the schema, while `APIS` decides what is vouched for.
// ---------------------------------------------------------------------------------------------

// Produce (0)
static PRODUCE_REQUEST: Schema = schema!("ProduceRequest" [
    f("transactional_id", ALL, NULLABLE_STR),
    f("acks", ALL, I16),
    f("timeout_ms", ALL, I32),
    f("topic_data", ALL, array(&TOPIC_PRODUCE_DATA)),
]);
static TOPIC_PRODUCE_DATA: Schema = schema!("TopicProduceData" [
    f("name", until(12), STR),
    f("topic_id", since(13), UUID),
    f("partition_data", ALL, array(&PARTITION_PRODUCE_DATA)),
]);
static PARTITION_PRODUCE_DATA: Schema = schema!("PartitionProduceData" [
    f("index", ALL, I32),
    f("records", ALL, NULLABLE_BYTES),
]);

// Fetch (1)
static FETCH_REQUEST: Schema = schema!("FetchRequest" [
    f("replica_id", until(14), I32),
    f("max_wait_ms", ALL, I32),
    f("min_bytes", ALL, I32),
    f("max_bytes", ALL, I32),
    f("isolation_level", ALL, I8),
    f("session_id", since(7), I32),
    f("session_epoch", since(7), I32),
    f("topics", ALL, array(&FETCH_TOPIC)),
    f("forgotten_topics_data", since(7), array(&FORGOTTEN_TOPIC)),
    f("rack_id", since(11), STR),
] tagged [
    tag(0, "cluster_id", ALL, NULLABLE_STR),
    tag(1, "replica_state", since(15), Ty::Struct(&REPLICA_STATE)),
]);
static FETCH_TOPIC: Schema = schema!("FetchTopic" [
    f("topic", until(12), STR),
    f("topic_id", since(13), UUID),
    f("partitions", ALL, array(&FETCH_PARTITION)),
]);
static FETCH_PARTITION: Schema = schema!("FetchPartition" [
    f("partition", ALL, I32),
    f("current_leader_epoch", since(9), I32),
    f("fetch_offset", ALL, I64),
    f("last_fetched_epoch", since(12), I32),
    f("log_start_offset", since(5), I64),
    f("partition_max_bytes", ALL, I32),
] tagged [
    tag(0, "replica_directory_id", since(17), UUID),
    tag(1, "high_watermark", since(18), I64),
]);
static FORGOTTEN_TOPIC: Schema = schema!("ForgottenTopic" [
    f("topic", span(7, 12), STR),
    f("topic_id", since(13), UUID),
    f("partitions", since(7), I32_ARRAY),
]);
static REPLICA_STATE: Schema = schema!("ReplicaState" [
    f("replica_id", since(15), I32),
    f("replica_epoch", since(15), I64),
]);

// ListOffsets (2)
static LIST_OFFSETS_REQUEST: Schema = schema!("ListOffsetsRequest" [
    f("replica_id", ALL, I32),
    f("isolation_level", since(2), I8),
    f("topics", ALL, array(&LIST_OFFSETS_TOPIC)),
    f("timeout_ms", since(10), I32),
]);
static LIST_OFFSETS_TOPIC: Schema = schema!("ListOffsetsTopic" [
    f("name", ALL, STR),
    f("partitions", ALL, array(&LIST_OFFSETS_PARTITION)),
]);
static LIST_OFFSETS_PARTITION: Schema = schema!("ListOffsetsPartition" [
    f("partition_index", ALL, I32),
    f("current_leader_epoch", since(4), I32),
    f("timestamp", ALL, I64),
]);

// Metadata (3)
static METADATA_REQUEST: Schema = schema!("MetadataRequest" [
    f("topics", ALL, nullable_array(&METADATA_REQUEST_TOPIC)),
    f("allow_auto_topic_creation", since(4), BOOL),
    f("include_cluster_authorized_operations", span(8, 10), BOOL),
    f("include_topic_authorized_operations", since(8), BOOL),
]);
static METADATA_REQUEST_TOPIC: Schema = schema!("MetadataRequestTopic" [
    f("topic_id", since(10), UUID),
    f("name", ALL, NULLABLE_STR),
]);

// OffsetCommit (8)
static OFFSET_COMMIT_REQUEST: Schema = schema!("OffsetCommitRequest" [
    f("group_id", ALL, STR),
    f("generation_id_or_member_epoch", ALL, I32),
    f("member_id", ALL, STR),
    f("group_instance_id", since(7), NULLABLE_STR),
    f("retention_time_ms", until(4), I64),
    f("topics", ALL, array(&OFFSET_COMMIT_REQUEST_TOPIC)),
]);
static OFFSET_COMMIT_REQUEST_TOPIC: Schema = schema!("OffsetCommitRequestTopic" [
    f("name", ALL, STR),
    f("partitions", ALL, array(&OFFSET_COMMIT_REQUEST_PARTITION)),
]);
static OFFSET_COMMIT_REQUEST_PARTITION: Schema = schema!("OffsetCommitRequestPartition" [
    f("partition_index", ALL, I32),
    f("committed_offset", ALL, I64),
    f("committed_leader_epoch", since(6), I32),
    f("committed_metadata", ALL, NULLABLE_STR),
]);

// OffsetFetch (9)
static OFFSET_FETCH_REQUEST: Schema = schema!("OffsetFetchRequest" [
    f("group_id", until(7), STR),
    f("topics", until(7), nullable_array(&OFFSET_FETCH_REQUEST_TOPIC)),
    f("groups", since(8), array(&OFFSET_FETCH_REQUEST_GROUP)),
    f("require_stable", since(7), BOOL),
]);
static OFFSET_FETCH_REQUEST_TOPIC: Schema = schema!("OffsetFetchRequestTopic" [
    f("name", until(7), STR),
    f("partition_indexes", until(7), I32_ARRAY),
]);
static OFFSET_FETCH_REQUEST_GROUP: Schema = schema!("OffsetFetchRequestGroup" [
    f("group_id", since(8), STR),
    f("member_id", since(9), NULLABLE_STR),
    f("member_epoch", since(9), I32),
    f("topics", since(8), nullable_array(&OFFSET_FETCH_REQUEST_TOPICS)),
]);
static OFFSET_FETCH_REQUEST_TOPICS: Schema = schema!("OffsetFetchRequestTopics" [
    f("name", since(8), STR),
    f("partition_indexes", since(8), I32_ARRAY),
]);

// FindCoordinator (10)
static FIND_COORDINATOR_REQUEST: Schema = schema!("FindCoordinatorRequest" [
    f("key", until(3), STR),
    f("key_type", since(1), I8),
    f("coordinator_keys", since(4), STR_ARRAY),
]);

// JoinGroup (11)
static JOIN_GROUP_REQUEST: Schema = schema!("JoinGroupRequest" [
    f("group_id", ALL, STR),
    f("session_timeout_ms", ALL, I32),
    f("rebalance_timeout_ms", since(1), I32),
    f("member_id", ALL, STR),
    f("group_instance_id", since(5), NULLABLE_STR),
    f("protocol_type", ALL, STR),
    f("protocols", ALL, array(&JOIN_GROUP_REQUEST_PROTOCOL)),
    f("reason", since(8), NULLABLE_STR),
]);
static JOIN_GROUP_REQUEST_PROTOCOL: Schema = schema!("JoinGroupRequestProtocol" [
    f("name", ALL, STR),
    f("metadata", ALL, BYTES),
]);

// Heartbeat (12)
static HEARTBEAT_REQUEST: Schema = schema!("HeartbeatRequest" [
    f("group_id", ALL, STR),
    f("generation_id", ALL, I32),
    f("member_id", ALL, STR),
    f("group_instance_id", since(3), NULLABLE_STR),
]);

// LeaveGroup (13)
static LEAVE_GROUP_REQUEST: Schema = schema!("LeaveGroupRequest" [
    f("group_id", ALL, STR),
    f("member_id", until(2), STR),
    f("members", since(3), array(&MEMBER_IDENTITY)),
]);
static MEMBER_IDENTITY: Schema = schema!("MemberIdentity" [
    f("member_id", since(3), STR),
    f("group_instance_id", since(3), NULLABLE_STR),
    f("reason", since(5), NULLABLE_STR),
]);

// SyncGroup (14)
static SYNC_GROUP_REQUEST: Schema = schema!("SyncGroupRequest" [
    f("group_id", ALL, STR),
    f("generation_id", ALL, I32),
    f("member_id", ALL, STR),
    f("group_instance_id", since(3), NULLABLE_STR),
    f("protocol_type", since(5), NULLABLE_STR),
    f("protocol_name", since(5), NULLABLE_STR),
    f("assignments", ALL, array(&SYNC_GROUP_REQUEST_ASSIGNMENT)),
]);
static SYNC_GROUP_REQUEST_ASSIGNMENT: Schema = schema!("SyncGroupRequestAssignment" [
    f("member_id", ALL, STR),
    f("assignment", ALL, BYTES),
]);

// DescribeGroups (15)
static DESCRIBE_GROUPS_REQUEST: Schema = schema!("DescribeGroupsRequest" [
    f("groups", ALL, STR_ARRAY),
    f("include_authorized_operations", since(3), BOOL),
]);

// ListGroups (16)
static LIST_GROUPS_REQUEST: Schema = schema!("ListGroupsRequest" [
    f("states_filter", since(4), STR_ARRAY),
    f("types_filter", since(5), STR_ARRAY),
]);

// ApiVersions (18)
static API_VERSIONS_REQUEST: Schema = schema!("ApiVersionsRequest" [
    f("client_software_name", since(3), STR),
    f("client_software_version", since(3), STR),
]);

// CreateTopics (19)
static CREATE_TOPICS_REQUEST: Schema = schema!("CreateTopicsRequest" [
    f("topics", ALL, array(&CREATABLE_TOPIC)),
    f("timeout_ms", ALL, I32),
    f("validate_only", ALL, BOOL),
]);
static CREATABLE_TOPIC: Schema = schema!("CreatableTopic" [
    f("name", ALL, STR),
    f("num_partitions", ALL, I32),
    f("replication_factor", ALL, I16),
    f("assignments", ALL, array(&CREATABLE_REPLICA_ASSIGNMENT)),
    f("configs", ALL, array(&CREATABLE_TOPIC_CONFIG)),
]);
static CREATABLE_REPLICA_ASSIGNMENT: Schema = schema!("CreatableReplicaAssignment" [
    f("partition_index", ALL, I32),
    f("broker_ids", ALL, I32_ARRAY),
]);
static CREATABLE_TOPIC_CONFIG: Schema = schema!("CreatableTopicConfig" [
    f("name", ALL, STR),
    f("value", ALL, NULLABLE_STR),
]);

// DeleteTopics (20)
static DELETE_TOPICS_REQUEST: Schema = schema!("DeleteTopicsRequest" [
    f("topics", since(6), array(&DELETE_TOPIC_STATE)),
    f("topic_names", until(5), STR_ARRAY),
    f("timeout_ms", ALL, I32),
]);
static DELETE_TOPIC_STATE: Schema = schema!("DeleteTopicState" [
    f("name", since(6), NULLABLE_STR),
    f("topic_id", since(6), UUID),
]);

// DeleteRecords (21)
// ElectLeaders (43)
static ELECT_LEADERS_REQUEST: Schema = schema!("ElectLeadersRequest" [
    f("election_type", since(1), I8),
    f("topic_partitions", ALL, nullable_array(&ELECT_LEADERS_TOPIC)),
    f("timeout_ms", ALL, I32),
]);
static ELECT_LEADERS_TOPIC: Schema = schema!("TopicPartitions" [
    f("topic", ALL, STR),
    f("partitions", ALL, I32_ARRAY),
]);

// AlterPartitionReassignments (45)
static ALTER_PARTITION_REASSIGNMENTS_REQUEST: Schema = schema!("AlterPartitionReassignmentsRequest" [
    f("timeout_ms", ALL, I32),
    f("allow_replication_factor_change", since(1), BOOL),
    f("topics", ALL, array(&REASSIGNABLE_TOPIC)),
]);
static REASSIGNABLE_TOPIC: Schema = schema!("ReassignableTopic" [
    f("name", ALL, STR),
    f("partitions", ALL, array(&REASSIGNABLE_PARTITION)),
]);
static REASSIGNABLE_PARTITION: Schema = schema!("ReassignablePartition" [
    f("partition_index", ALL, I32),
    f("replicas", ALL, NULLABLE_I32_ARRAY),
]);

// ListPartitionReassignments (46)
static LIST_PARTITION_REASSIGNMENTS_REQUEST: Schema = schema!("ListPartitionReassignmentsRequest" [
    f("timeout_ms", ALL, I32),
    f("topics", ALL, nullable_array(&LIST_PARTITION_REASSIGNMENTS_TOPIC)),
]);
static LIST_PARTITION_REASSIGNMENTS_TOPIC: Schema = schema!("ListPartitionReassignmentsTopics" [
    f("name", ALL, STR),
    f("partition_indexes", ALL, I32_ARRAY),
]);

// OffsetForLeaderEpoch (23)
static OFFSET_FOR_LEADER_EPOCH_REQUEST: Schema = schema!("OffsetForLeaderEpochRequest" [
    f("replica_id", since(3), I32),
    f("topics", ALL, array(&OFFSET_FOR_LEADER_TOPIC)),
]);
static OFFSET_FOR_LEADER_TOPIC: Schema = schema!("OffsetForLeaderTopic" [
    f("topic", ALL, STR),
    f("partitions", ALL, array(&OFFSET_FOR_LEADER_PARTITION)),
]);
static OFFSET_FOR_LEADER_PARTITION: Schema = schema!("OffsetForLeaderPartition" [
    f("partition", ALL, I32),
    f("current_leader_epoch", since(2), I32),
    f("leader_epoch", ALL, I32),
]);

static DELETE_RECORDS_REQUEST: Schema = schema!("DeleteRecordsRequest" [
    f("topics", ALL, array(&DELETE_RECORDS_TOPIC)),
    f("timeout_ms", ALL, I32),
]);
static DELETE_RECORDS_TOPIC: Schema = schema!("DeleteRecordsTopic" [
    f("name", ALL, STR),
    f("partitions", ALL, array(&DELETE_RECORDS_PARTITION)),
]);
static DELETE_RECORDS_PARTITION: Schema = schema!("DeleteRecordsPartition" [
    f("partition_index", ALL, I32),
    f("offset", ALL, I64),
]);

// InitProducerId (22)
static INIT_PRODUCER_ID_REQUEST: Schema = schema!("InitProducerIdRequest" [
    f("transactional_id", ALL, NULLABLE_STR),
    f("transaction_timeout_ms", ALL, I32),
    f("producer_id", since(3), I64),
    f("producer_epoch", since(3), I16),
]);

// DescribeConfigs (32)
static DESCRIBE_CONFIGS_REQUEST: Schema = schema!("DescribeConfigsRequest" [
    f("resources", ALL, array(&DESCRIBE_CONFIGS_RESOURCE)),
    f("include_synonyms", ALL, BOOL),
    f("include_documentation", since(3), BOOL),
]);
static DESCRIBE_CONFIGS_RESOURCE: Schema = schema!("DescribeConfigsResource" [
    f("resource_type", ALL, I8),
    f("resource_name", ALL, STR),
    f("configuration_keys", ALL, NULLABLE_STR_ARRAY),
]);

// AlterConfigs (33)
static ALTER_CONFIGS_REQUEST: Schema = schema!("AlterConfigsRequest" [
    f("resources", ALL, array(&ALTER_CONFIGS_RESOURCE)),
    f("validate_only", ALL, BOOL),
]);
static ALTER_CONFIGS_RESOURCE: Schema = schema!("AlterConfigsResource" [
    f("resource_type", ALL, I8),
    f("resource_name", ALL, STR),
    f("configs", ALL, array(&ALTERABLE_CONFIG)),
]);
static ALTERABLE_CONFIG: Schema = schema!("AlterableConfig" [
    f("name", ALL, STR),
    f("value", ALL, NULLABLE_STR),
]);

// CreatePartitions (37)
static CREATE_PARTITIONS_REQUEST: Schema = schema!("CreatePartitionsRequest" [
    f("topics", ALL, array(&CREATE_PARTITIONS_TOPIC)),
    f("timeout_ms", ALL, I32),
    f("validate_only", ALL, BOOL),
]);
static CREATE_PARTITIONS_TOPIC: Schema = schema!("CreatePartitionsTopic" [
    f("name", ALL, STR),
    f("count", ALL, I32),
    f("assignments", ALL, nullable_array(&CREATE_PARTITIONS_ASSIGNMENT)),
]);
static CREATE_PARTITIONS_ASSIGNMENT: Schema = schema!("CreatePartitionsAssignment" [
    f("broker_ids", ALL, I32_ARRAY),
]);

// DeleteGroups (42)
static DELETE_GROUPS_REQUEST: Schema = schema!("DeleteGroupsRequest" [
    f("groups_names", ALL, STR_ARRAY),
]);

// IncrementalAlterConfigs (44): its structs share names with AlterConfigs' but add
// `config_operation`.
static INCREMENTAL_ALTER_CONFIGS_REQUEST: Schema = schema!("IncrementalAlterConfigsRequest" [
    f("resources", ALL, array(&INCREMENTAL_ALTER_CONFIGS_RESOURCE)),
    f("validate_only", ALL, BOOL),
]);
static INCREMENTAL_ALTER_CONFIGS_RESOURCE: Schema = schema!("AlterConfigsResource" [
    f("resource_type", ALL, I8),
    f("resource_name", ALL, STR),
    f("configs", ALL, array(&INCREMENTAL_ALTERABLE_CONFIG)),
]);
static INCREMENTAL_ALTERABLE_CONFIG: Schema = schema!("AlterableConfig" [
    f("name", ALL, STR),
    f("config_operation", ALL, I8),
    f("value", ALL, NULLABLE_STR),
]);

// OffsetDelete (47): never flexible.
static OFFSET_DELETE_REQUEST: Schema = schema!("OffsetDeleteRequest" [
    f("group_id", ALL, STR),
    f("topics", ALL, array(&OFFSET_DELETE_REQUEST_TOPIC)),
]);
static OFFSET_DELETE_REQUEST_TOPIC: Schema = schema!("OffsetDeleteRequestTopic" [
    f("name", ALL, STR),
    f("partitions", ALL, array(&OFFSET_DELETE_REQUEST_PARTITION)),
]);
static OFFSET_DELETE_REQUEST_PARTITION: Schema = schema!("OffsetDeleteRequestPartition" [
    f("partition_index", ALL, I32),
]);

// DescribeLogDirs (35): v1-4 (kafka-protocol 0.18 no longer decodes v0), flexible from v2.
static DESCRIBE_LOG_DIRS_REQUEST: Schema = schema!("DescribeLogDirsRequest" [
    f("topics", ALL, nullable_array(&DESCRIBABLE_LOG_DIR_TOPIC)),
]);
static DESCRIBABLE_LOG_DIR_TOPIC: Schema = schema!("DescribableLogDirTopic" [
    f("topic", ALL, STR),
    f("partitions", ALL, I32_ARRAY),
]);

// DescribeProducers (61): flexible from v0.
static DESCRIBE_PRODUCERS_REQUEST: Schema = schema!("DescribeProducersRequest" [
    f("topics", ALL, array(&DESCRIBE_PRODUCERS_TOPIC)),
]);
static DESCRIBE_PRODUCERS_TOPIC: Schema = schema!("TopicRequest" [
    f("name", ALL, STR),
    f("partition_indexes", ALL, I32_ARRAY),
]);

// GetTelemetrySubscriptions (71) and PushTelemetry (72), KIP-714: flexible from v0.
static GET_TELEMETRY_SUBSCRIPTIONS_REQUEST: Schema = schema!("GetTelemetrySubscriptionsRequest" [
    f("client_instance_id", ALL, UUID),
]);
static PUSH_TELEMETRY_REQUEST: Schema = schema!("PushTelemetryRequest" [
    f("client_instance_id", ALL, UUID),
    f("subscription_id", ALL, I32),
    f("terminating", ALL, BOOL),
    f("compression_type", ALL, I8),
    f("metrics", ALL, BYTES),
]);

// ListConfigResources (74), ListClientMetricsResources before KIP-1142: v0 has no fields.
static LIST_CONFIG_RESOURCES_REQUEST: Schema = schema!("ListConfigResourcesRequest" [
    f("resource_types", since(1), Ty::Array(Elem::Fixed(1), false)),
]);

// DescribeQuorum (55): flexible from v0.
static DESCRIBE_QUORUM_REQUEST: Schema = schema!("DescribeQuorumRequest" [
    f("topics", ALL, array(&DESCRIBE_QUORUM_REQUEST_TOPIC)),
]);
static DESCRIBE_QUORUM_REQUEST_TOPIC: Schema = schema!("TopicData" [
    f("topic_name", ALL, STR),
    f("partitions", ALL, array(&DESCRIBE_QUORUM_REQUEST_PARTITION)),
]);
static DESCRIBE_QUORUM_REQUEST_PARTITION: Schema = schema!("PartitionData" [
    f("partition_index", ALL, I32),
]);

// AddRaftVoter (80): flexible from v0.
static ADD_RAFT_VOTER_REQUEST: Schema = schema!("AddRaftVoterRequest" [
    f("cluster_id", ALL, NULLABLE_STR),
    f("timeout_ms", ALL, I32),
    f("voter_id", ALL, I32),
    f("voter_directory_id", ALL, UUID),
    f("listeners", ALL, array(&ADD_RAFT_VOTER_REQUEST_LISTENER)),
]);
static ADD_RAFT_VOTER_REQUEST_LISTENER: Schema = schema!("Listener" [
    f("name", ALL, STR),
    f("host", ALL, STR),
    f("port", ALL, I16),
]);

// RemoveRaftVoter (81): flexible from v0.
static REMOVE_RAFT_VOTER_REQUEST: Schema = schema!("RemoveRaftVoterRequest" [
    f("cluster_id", ALL, NULLABLE_STR),
    f("voter_id", ALL, I32),
    f("voter_directory_id", ALL, UUID),
]);

// DescribeCluster (60): flexible from v0.
static DESCRIBE_CLUSTER_REQUEST: Schema = schema!("DescribeClusterRequest" [
    f("include_cluster_authorized_operations", ALL, BOOL),
    f("endpoint_type", since(1), I8),
    f("include_fenced_brokers", since(2), BOOL),
]);

// ---------------------------------------------------------------------------------------------
// Interpreter
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Ctx {
    version: i16,
    flexible: bool,
}

/// Read position over `buf[..end]`; `end` shrinks while a known tagged field is walked so its
/// value can't run past its declared size. Invariant: `pos <= end <= buf.len()`.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

/// Width of a non-compact length prefix.
#[derive(Clone, Copy)]
enum Width {
    I16,
    I32,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    fn skip(&mut self, n: usize, field: FieldPath) -> Result<(), BoundsError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(BoundsError::Truncated {
                field,
                offset: self.pos,
                needed: n - remaining,
            });
        }
        self.pos += n;
        Ok(())
    }

    fn take<const N: usize>(&mut self, field: FieldPath) -> Result<[u8; N], BoundsError> {
        let truncated = BoundsError::Truncated {
            field,
            offset: self.pos,
            needed: N.saturating_sub(self.remaining()),
        };
        if self.remaining() < N {
            return Err(truncated);
        }
        let bytes = self
            .buf
            .get(self.pos..self.pos + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(truncated)?;
        self.pos += N;
        Ok(bytes)
    }

    /// Unsigned varint as `kafka-protocol` reads it (at most 5 bytes, little-endian groups of
    /// 7 bits). Where that decoder would silently stop after 5 bytes or drop bits past 32, this
    /// rejects instead, so the two can never disagree on a value.
    fn uvarint(&mut self, field: FieldPath) -> Result<u32, BoundsError> {
        let offset = self.pos;
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = self.take::<1>(field)?;
            if i == 4 && b > 0x0f {
                break;
            }
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BoundsError::MalformedVarint { field, offset })
    }

    /// Reads a length or count prefix: unsigned varint of `len + 1` in flexible versions,
    /// big-endian i16/i32 otherwise. `None` means null.
    fn length(
        &mut self,
        field: FieldPath,
        ctx: Ctx,
        width: Width,
    ) -> Result<Option<u64>, BoundsError> {
        let offset = self.pos;
        if ctx.flexible {
            return Ok(self.uvarint(field)?.checked_sub(1).map(u64::from));
        }
        let len = match width {
            Width::I16 => i32::from(i16::from_be_bytes(self.take::<2>(field)?)),
            Width::I32 => i32::from_be_bytes(self.take::<4>(field)?),
        };
        match len {
            -1 => Ok(None),
            len if len < -1 => Err(BoundsError::NegativeLength { field, offset, len }),
            // Non-negative here, so the conversion can't fail.
            len => Ok(Some(u64::from(len.unsigned_abs()))),
        }
    }
}

fn walk_struct(c: &mut Cursor<'_>, schema: &'static Schema, ctx: Ctx) -> Result<(), BoundsError> {
    for field in schema.fields {
        if field.versions.contains(ctx.version) {
            let at = FieldPath {
                message: schema.name,
                field: field.name,
            };
            walk_value(c, field.ty, at, ctx)?;
        }
    }
    if ctx.flexible {
        walk_tagged_fields(c, schema, ctx)?;
    }
    Ok(())
}

fn walk_value(c: &mut Cursor<'_>, ty: Ty, at: FieldPath, ctx: Ctx) -> Result<(), BoundsError> {
    match ty {
        Ty::Fixed(n) => c.skip(n, at),
        Ty::Str(nullable) => walk_blob(c, Width::I16, nullable, at, ctx),
        Ty::Bytes(nullable) => walk_blob(c, Width::I32, nullable, at, ctx),
        Ty::Array(elem, nullable) => {
            let offset = c.pos;
            let Some(count) = c.length(at, ctx, Width::I32)? else {
                return null_allowed(nullable, at, offset);
            };
            // Checking `count * min_size` rather than just `count` keeps the decoder's
            // `with_capacity` within a fixed multiple of the bytes actually present.
            let min_element_size = elem_min_size(elem, ctx).max(1);
            let remaining = c.remaining();
            let fits = count
                .checked_mul(min_element_size as u64)
                .is_some_and(|need| need <= remaining as u64);
            if !fits {
                return Err(BoundsError::CountTooLarge {
                    field: at,
                    offset,
                    count,
                    min_element_size,
                    remaining,
                });
            }
            for _ in 0..count {
                match elem {
                    Elem::Fixed(n) => c.skip(n, at)?,
                    Elem::Str => walk_blob(c, Width::I16, false, at, ctx)?,
                    Elem::Struct(schema) => walk_struct(c, schema, ctx)?,
                }
            }
            Ok(())
        }
        Ty::Struct(schema) => walk_struct(c, schema, ctx),
    }
}

fn walk_blob(
    c: &mut Cursor<'_>,
    width: Width,
    nullable: bool,
    at: FieldPath,
    ctx: Ctx,
) -> Result<(), BoundsError> {
    let offset = c.pos;
    let Some(len) = c.length(at, ctx, width)? else {
        return null_allowed(nullable, at, offset);
    };
    let remaining = c.remaining();
    if len > remaining as u64 {
        return Err(BoundsError::LengthTooLarge {
            field: at,
            offset,
            len,
            remaining,
        });
    }
    c.skip(remaining.min(len as usize), at)
}

fn null_allowed(nullable: bool, field: FieldPath, offset: usize) -> Result<(), BoundsError> {
    if nullable {
        Ok(())
    } else {
        Err(BoundsError::UnexpectedNull { field, offset })
    }
}

/// Tagged-field section: varint count, then per field a varint tag, varint size and the value.
fn walk_tagged_fields(
    c: &mut Cursor<'_>,
    schema: &'static Schema,
    ctx: Ctx,
) -> Result<(), BoundsError> {
    let at = FieldPath {
        message: schema.name,
        field: "tagged_fields",
    };
    let offset = c.pos;
    let count = c.uvarint(at)?;
    // The decoder loops `count` times without reserving, but an absurd count still has to fail
    // fast here rather than spin; every entry needs at least a tag byte and a size byte.
    let remaining = c.remaining();
    if u64::from(count) * 2 > remaining as u64 {
        return Err(BoundsError::CountTooLarge {
            field: at,
            offset,
            count: u64::from(count),
            min_element_size: 2,
            remaining,
        });
    }
    for _ in 0..count {
        let tag = c.uvarint(at)?;
        let size_offset = c.pos;
        let size = c.uvarint(at)?;
        let remaining = c.remaining();
        if u64::from(size) > remaining as u64 {
            return Err(BoundsError::LengthTooLarge {
                field: at,
                offset: size_offset,
                len: u64::from(size),
                remaining,
            });
        }
        let size = remaining.min(size as usize);
        let known = schema
            .tagged
            .iter()
            .find(|t| t.tag == tag && t.versions.contains(ctx.version));
        let Some(known) = known else {
            // Unknown tags are kept as opaque bytes by the decoder. Known tags outside their
            // versions make it bail before it reads them, so skipping them is safe too.
            c.skip(size, at)?;
            continue;
        };
        let field = FieldPath {
            message: schema.name,
            field: known.name,
        };
        let start = c.pos;
        let outer_end = c.end;
        c.end = start + size;
        let walked = walk_value(c, known.ty, field, ctx);
        c.end = outer_end;
        walked?;
        let actual = c.pos - start;
        if actual != size {
            return Err(BoundsError::TaggedSizeMismatch {
                field,
                offset: start,
                tag,
                declared: size,
                actual,
            });
        }
    }
    Ok(())
}

/// Smallest number of bytes a value of `ty` takes on the wire at this version.
fn min_size(ty: Ty, ctx: Ctx) -> usize {
    match (ty, ctx.flexible) {
        (Ty::Fixed(n), _) => n,
        (Ty::Str(_) | Ty::Bytes(_) | Ty::Array(..), true) => 1,
        (Ty::Str(_), false) => 2,
        (Ty::Bytes(_) | Ty::Array(..), false) => 4,
        (Ty::Struct(schema), _) => struct_min_size(schema, ctx),
    }
}

fn elem_min_size(elem: Elem, ctx: Ctx) -> usize {
    match elem {
        Elem::Fixed(n) => n,
        Elem::Str => min_size(STR, ctx),
        Elem::Struct(schema) => struct_min_size(schema, ctx),
    }
}

fn struct_min_size(schema: &'static Schema, ctx: Ctx) -> usize {
    let fields: usize = schema
        .fields
        .iter()
        .filter(|field| field.versions.contains(ctx.version))
        .map(|field| min_size(field.ty, ctx))
        .sum();
    // The empty tagged-field section is a single zero byte.
    fields + usize::from(ctx.flexible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_appears_once_with_a_sane_range() {
        for (i, a) in APIS.iter().enumerate() {
            assert!(
                a.covered.lo >= 0 && a.covered.lo <= a.covered.hi,
                "api {}",
                a.key
            );
            assert!(
                APIS[i + 1..].iter().all(|b| b.key != a.key),
                "api {} listed twice",
                a.key
            );
        }
    }

    #[test]
    fn twenty_byte_body_claiming_two_billion_topics_is_rejected() {
        let mut body = vec![0x7f, 0xff, 0xff, 0xff];
        body.extend_from_slice(&[0; 16]);
        let err = check_request_body(3, 1, &body);
        assert!(
            matches!(
                err,
                Err(BoundsError::CountTooLarge {
                    count: 0x7fff_ffff,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn varints_past_32_bits_are_rejected() {
        let at = FieldPath {
            message: "T",
            field: "f",
        };
        let mut c = Cursor {
            buf: &[0xff, 0xff, 0xff, 0xff, 0x0f],
            pos: 0,
            end: 5,
        };
        assert_eq!(c.uvarint(at), Ok(u32::MAX));
        for bad in [
            &[0xff, 0xff, 0xff, 0xff, 0x10][..],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
        ] {
            let mut c = Cursor {
                buf: bad,
                pos: 0,
                end: bad.len(),
            };
            assert_eq!(
                c.uvarint(at),
                Err(BoundsError::MalformedVarint {
                    field: at,
                    offset: 0
                })
            );
        }
    }

    #[test]
    fn negative_and_null_lengths() {
        // OffsetDelete v0: group_id STR with length -2, then -1 (null, not nullable).
        assert!(matches!(
            check_request_body(47, 0, &[0xff, 0xfe]),
            Err(BoundsError::NegativeLength { len: -2, .. })
        ));
        assert!(matches!(
            check_request_body(47, 0, &[0xff, 0xff]),
            Err(BoundsError::UnexpectedNull { .. })
        ));
    }
}
