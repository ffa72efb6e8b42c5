//! The classic (pre-KIP-848) consumer-group coordinator: JoinGroup, SyncGroup, Heartbeat and
//! LeaveGroup as Kafka's `GroupCoordinator` runs them, as a pure state machine.
//!
//! [`GroupCoordinator`] does no I/O, spawns nothing and never reads a clock: every event carries
//! the current time (`now_ms`) and returns what to do. Requests whose answer Kafka delays
//! (JoinGroup until the rebalance completes, a follower's SyncGroup until the leader's
//! assignment arrives) return [`Outcome::Parked`]; their answers come later as [`Completion`]s
//! from whichever later event (another request, or [`GroupCoordinator::tick`]) settles them,
//! addressed by the `token` the caller gave when it parked the request. Every parked request is
//! eventually completed (by the rebalance, a timeout, a member removal, or a newer request from
//! the same member superseding it), so a connection that waits on one is never stuck forever.
//!
//! Timers (session timeouts, the rebalance timeout, the initial rebalance delay, the pending
//! MEMBER_ID_REQUIRED members and the pending-sync timeout) are deadlines inside the state;
//! [`GroupCoordinator::next_deadline`] tells the async layer when to call
//! [`GroupCoordinator::tick`] next.
//!
//! Persistence: Kafka writes a GroupMetadata record (a [`GroupSnapshot`]) to
//! `__consumer_offsets` when the leader's SyncGroup brings an assignment, when a rebalance leaves
//! the group empty, when a static member is replaced in a stable group, and a tombstone when the
//! group is deleted. [`GroupCoordinator::take_dirty`] lists the groups for which one of those
//! happened; [`GroupCoordinator::group_snapshot`] gives what to write (`None`: a tombstone).
//! Kafka answers the SyncGroup requests of a completed assignment (and the JoinGroup of a
//! replaced static member) only after that record is written; the async layer should persist
//! dirty groups before it delivers the completions of the same event to keep that order, and
//! hold every JoinGroup and SyncGroup answer of a group until the group's latest record is
//! stored, not only the records of the event that produced the answer: the leader's SyncGroup
//! makes the group Stable at once, and a follower's SyncGroup arriving while that record is
//! still being written is answered with its assignment by an event that wrote nothing. Answered
//! early, it could outlive a coordinator failover that loses the record, and run with a
//! generation the next rebalance hands out again (found by `sim`; `groups.rs` waits for it).
//! [`GroupCoordinator::restore`] reloads a snapshot at start or on coordinator failover.
//!
//! Not here: COORDINATOR_LOAD_IN_PROGRESS (14) and NOT_COORDINATOR (16) are the async layer's
//! business: while `__consumer_offsets` is being loaded, JoinGroup, LeaveGroup, OffsetCommit and
//! DescribeGroups answer COORDINATOR_LOAD_IN_PROGRESS, SyncGroup answers REBALANCE_IN_PROGRESS
//! (older clients do not know the load error), and Heartbeat answers NONE, as Kafka does.
//! Expiring empty groups whose offsets have all expired is the offset store's job (it calls
//! [`GroupCoordinator::delete_group`]).

mod coordinator;
mod state;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use coordinator::GroupCoordinator;
pub use state::GroupState;

/// Coordinator settings (Kafka's `group.*` broker settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms` (6000).
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (1800000).
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms` (3000).
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size` (i32::MAX).
    pub max_size: i32,
    /// How long a new member's parked JoinGroup may wait before the member is dropped
    /// (Kafka's `NewMemberJoinTimeoutMs`, 5 minutes).
    pub new_member_join_timeout_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX,
            new_member_join_timeout_ms: 300_000,
        }
    }
}

/// Either an answer now, or "parked": the answer comes later as a [`Completion`] carrying the
/// request's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Answer now.
    Now(R),
    /// Answer later, through a [`Completion`] with this request's token.
    Parked,
}

/// The delayed answer to a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Token given when the request was parked.
    pub token: u64,
    /// The answer.
    pub response: CompletedResponse,
}

/// The answer carried by a [`Completion`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompletedResponse {
    /// A parked JoinGroup.
    Join(JoinResult),
    /// A parked SyncGroup.
    Sync(SyncResult),
}

/// One protocol a joining member supports (for consumers: an assignor and its subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Protocol name (e.g. `range`).
    pub name: String,
    /// Opaque member metadata for that protocol.
    pub metadata: Bytes,
}

impl Protocol {
    /// A protocol with its metadata.
    pub fn new(name: impl Into<String>, metadata: impl Into<Bytes>) -> Self {
        Protocol {
            name: name.into(),
            metadata: metadata.into(),
        }
    }
}

/// A JoinGroup request, independent of its wire version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupArgs {
    /// Group id.
    pub group_id: String,
    /// Member id; empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id` (v5+), for static members.
    pub group_instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `rebalance.timeout.ms` (v1+; at v0 the session timeout is used).
    pub rebalance_timeout_ms: i32,
    /// Protocol type (e.g. `consumer`).
    pub protocol_type: String,
    /// Supported protocols, most preferred first.
    pub protocols: Vec<Protocol>,
}

/// One member in the leader's JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    /// Member id.
    pub member_id: String,
    /// Its `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Its metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A JoinGroup response, independent of its wire version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// Error code.
    pub error_code: i16,
    /// Generation id (-1 with an error).
    pub generation_id: i32,
    /// Group protocol type (v7+ on the wire).
    pub protocol_type: Option<String>,
    /// Selected protocol (null from v7 when absent; an empty string before).
    pub protocol_name: Option<String>,
    /// Leader member id (empty with an error).
    pub leader: String,
    /// v9+: the leader must not run the assignor (static leader rejoining a stable group).
    pub skip_assignment: bool,
    /// The member's id (the new id with MEMBER_ID_REQUIRED).
    pub member_id: String,
    /// All members with their metadata, for the leader only; empty for followers.
    pub members: Vec<JoinMember>,
}

/// A SyncGroup request, independent of its wire version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncGroupArgs {
    /// Group id.
    pub group_id: String,
    /// Generation id from the JoinGroup response.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// `group.instance.id` (v3+).
    pub group_instance_id: Option<String>,
    /// v5+: protocol type the member expects, checked against the group's.
    pub protocol_type: Option<String>,
    /// v5+: protocol name the member expects, checked against the group's.
    pub protocol_name: Option<String>,
    /// The leader's assignment: (member id, assignment bytes); empty for followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup response, independent of its wire version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    /// Error code.
    pub error_code: i16,
    /// Group protocol type (v5+ on the wire; `None` with an error).
    pub protocol_type: Option<String>,
    /// Group protocol name (v5+ on the wire; `None` with an error).
    pub protocol_name: Option<String>,
    /// This member's assignment (empty with an error).
    pub assignment: Bytes,
}

/// A Heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatArgs {
    /// Group id.
    pub group_id: String,
    /// Member id.
    pub member_id: String,
    /// `group.instance.id` (v3+).
    pub group_instance_id: Option<String>,
    /// Generation id.
    pub generation_id: i32,
}

/// One member named in a LeaveGroup request (v0-2 carry exactly one, without instance id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaveMember {
    /// Member id; may be empty when `group_instance_id` names the member (admin removal).
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
}

/// The outcome for one member of a LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMemberResult {
    /// Member id as requested.
    pub member_id: String,
    /// `group.instance.id` as requested.
    pub group_instance_id: Option<String>,
    /// Error code for that member.
    pub error_code: i16,
}

/// A LeaveGroup response. For v0-2 the wire carries only one error code: the top-level error
/// if it is not NONE, else the single member's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResult {
    /// Top-level error code.
    pub error_code: i16,
    /// Per-member outcomes, in request order (empty with a top-level error).
    pub members: Vec<LeaveMemberResult>,
}

/// What an OffsetCommit request says about its sender.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitArgs {
    /// Group id (may be empty: Kafka accepts commits for the empty group id).
    pub group_id: String,
    /// Generation id (-1 for commits outside group management, and for v0).
    pub generation_id: i32,
    /// Member id (empty for commits outside group management).
    pub member_id: String,
    /// `group.instance.id` (v7+).
    pub group_instance_id: Option<String>,
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Metadata for the group's protocol (empty unless the group is Stable).
    pub metadata: Bytes,
    /// Current assignment (empty unless the group is Stable).
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State; its wire name is [`GroupState::as_str`].
    pub state: GroupState,
    /// Protocol type ("" when none).
    pub protocol_type: String,
    /// Selected protocol ("" unless the group is Stable).
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

impl GroupDescription {
    /// What DescribeGroups v0-5 return for an unknown group (v6+ return GROUP_ID_NOT_FOUND).
    pub fn dead(group_id: &str) -> Self {
        GroupDescription {
            group_id: group_id.to_string(),
            state: GroupState::Dead,
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        }
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type ("" when none).
    pub protocol_type: String,
    /// State.
    pub state: GroupState,
}

/// A member as persisted in the GroupMetadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// `rebalance.timeout.ms`.
    pub rebalance_timeout_ms: i32,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// Metadata for the group's protocol.
    pub subscription: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// Everything Kafka's GroupMetadata record holds about a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// Group id.
    pub group_id: String,
    /// Protocol type (`None` for a group that never had members).
    pub protocol_type: Option<String>,
    /// Generation id.
    pub generation_id: i32,
    /// Selected protocol (`None` when empty).
    pub protocol: Option<String>,
    /// Leader member id (`None` when empty).
    pub leader: Option<String>,
    /// When the group last changed state.
    pub current_state_timestamp_ms: i64,
    /// Members with their assignments.
    pub members: Vec<MemberSnapshot>,
}
