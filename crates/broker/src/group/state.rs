//! Group and member state, and the bookkeeping rules of Kafka's `GroupMetadata` and
//! `MemberMetadata` (membership, leader, static-member mapping, protocol selection).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::{GroupSnapshot, JoinMember, MemberSnapshot, Protocol};
use crate::errors::NONE;

/// The state of a classic group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (possibly only committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Members have their assignments.
    Stable,
    /// Unknown or deleted.
    Dead,
}

impl GroupState {
    /// The state's name on the wire (DescribeGroups, ListGroups).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Whether a rebalance may start from this state (Kafka's `canRebalance`).
    pub(super) fn can_rebalance(self) -> bool {
        matches!(
            self,
            GroupState::Empty | GroupState::CompletingRebalance | GroupState::Stable
        )
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of a group.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) member_id: String,
    pub(super) group_instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) rebalance_timeout_ms: i32,
    pub(super) session_timeout_ms: i32,
    pub(super) protocol_type: String,
    pub(super) protocols: Vec<Protocol>,
    pub(super) assignment: Bytes,
    /// Token of the parked JoinGroup, if any (Kafka's `awaitingJoinCallback`).
    pub(super) awaiting_join: Option<u64>,
    /// Token of the parked SyncGroup, if any (Kafka's `awaitingSyncCallback`).
    pub(super) awaiting_sync: Option<u64>,
    /// Joined but not yet through a completed join phase; its deadline is the new-member join
    /// timeout and it expires even while its JoinGroup is parked.
    pub(super) is_new: bool,
    /// When the member's session expires unless it heartbeats; `None` while suspended (an
    /// existing member whose JoinGroup or SyncGroup is parked cannot heartbeat, and is
    /// rescheduled when the rebalance answers it).
    pub(super) session_deadline: Option<i64>,
}

impl Member {
    /// Same protocols, in the same order, with the same metadata.
    pub(super) fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    /// The member's most preferred protocol among `candidates`.
    fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|p| p.name.as_str())
            .find(|n| candidates.contains(n))
    }

    /// Metadata for `protocol` (empty if the member does not support it).
    pub(super) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }
}

/// What happens when the join timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JoinTimerKind {
    /// Kafka's `InitialDelayedJoin`: the first rebalance of an empty group, extended by
    /// `group.initial.rebalance.delay.ms` while new members keep arriving, up to the rebalance
    /// timeout.
    Initial { delay_ms: i64, remaining_ms: i64 },
    /// Kafka's `DelayedJoin`: the rebalance timeout.
    Normal,
}

/// The join-phase timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JoinTimer {
    pub(super) deadline: i64,
    pub(super) kind: JoinTimerKind,
}

/// The pending-sync timer: members that got a JoinGroup response must send SyncGroup within
/// the rebalance timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SyncTimer {
    pub(super) deadline: i64,
    pub(super) generation_id: i32,
}

/// A classic group.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) group_id: String,
    pub(super) state: GroupState,
    pub(super) previous_state: GroupState,
    pub(super) state_timestamp_ms: i64,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol_name: Option<String>,
    pub(super) generation_id: i32,
    pub(super) leader_id: Option<String>,
    /// Members in the order they joined (the first is the default leader).
    pub(super) members: Vec<Member>,
    /// group.instance.id -> member id.
    pub(super) static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pub(super) pending_members: Vec<(String, i64)>,
    /// Members that got a JoinGroup response of this generation but have not sent SyncGroup.
    pub(super) pending_sync: BTreeSet<String>,
    /// A new member joined during the initial rebalance (extends the initial delay).
    pub(super) new_member_added: bool,
    pub(super) join_timer: Option<JoinTimer>,
    pub(super) sync_timer: Option<SyncTimer>,
    /// What was last persisted (or restored); `None` if never.
    pub(super) persisted: Option<GroupSnapshot>,
    /// `persisted` changed since the last `take_dirty`.
    pub(super) dirty: bool,
}

impl Group {
    pub(super) fn new(group_id: &str, now_ms: i64) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            previous_state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: Vec::new(),
            static_members: HashMap::new(),
            pending_members: Vec::new(),
            pending_sync: BTreeSet::new(),
            new_member_added: false,
            join_timer: None,
            sync_timer: None,
            persisted: None,
            dirty: false,
        }
    }

    pub(super) fn transition(&mut self, to: GroupState, now_ms: i64) {
        self.previous_state = self.state;
        self.state = to;
        self.state_timestamp_ms = now_ms;
    }

    pub(super) fn has(&self, member_id: &str) -> bool {
        self.members.iter().any(|m| m.member_id == member_id)
    }

    pub(super) fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.member_id == member_id)
    }

    pub(super) fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.member_id == member_id)
    }

    pub(super) fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub(super) fn is_pending(&self, member_id: &str) -> bool {
        self.pending_members.iter().any(|(id, _)| id == member_id)
    }

    /// No members, nothing pending: a group that only exists for its offsets (or not at all).
    pub(super) fn is_unused(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
    }

    /// The largest rebalance timeout of the members (Kafka's `group.rebalanceTimeoutMs`).
    pub(super) fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    pub(super) fn num_awaiting_join(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.awaiting_join.is_some())
            .count()
    }

    /// Every member has a parked JoinGroup and no MEMBER_ID_REQUIRED member is outstanding.
    pub(super) fn has_all_members_joined(&self) -> bool {
        self.members.iter().all(|m| m.awaiting_join.is_some()) && self.pending_members.is_empty()
    }

    fn supporters(&self, protocol: &str) -> usize {
        self.members.iter().filter(|m| m.supports(protocol)).count()
    }

    /// Kafka's `supportsProtocols`: an empty group takes any non-empty protocol type and list;
    /// otherwise the type must match and one protocol must be supported by every member.
    pub(super) fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.state == GroupState::Empty {
            !protocol_type.is_empty() && !protocols.is_empty()
        } else {
            self.protocol_type.as_deref() == Some(protocol_type)
                && protocols
                    .iter()
                    .any(|p| self.supporters(&p.name) == self.members.len())
        }
    }

    /// The protocol supported by every member that gets the most votes, each member voting for
    /// its most preferred candidate. Ties go to the protocol first voted for in join order.
    pub(super) fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for member in &self.members {
            if let Some(vote) = member.vote(&candidates) {
                match votes.iter_mut().find(|(name, _)| *name == vote) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((vote, 1)),
                }
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, n) in votes {
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((name, n));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    /// Adds a member (Kafka's `GroupMetadata.add`): the first member sets the protocol type,
    /// and becomes leader if there is none.
    pub(super) fn add(&mut self, member: Member) {
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        self.pending_members
            .retain(|(id, _)| *id != member.member_id);
        self.members.push(member);
    }

    /// Removes a member and its bookkeeping (Kafka's `GroupMetadata.remove`); a removed leader
    /// is replaced by the oldest remaining member. Parked requests are the caller's business.
    pub(super) fn remove(&mut self, member_id: &str) -> Option<Member> {
        let removed = self
            .members
            .iter()
            .position(|m| m.member_id == member_id)
            .map(|i| self.members.remove(i));
        if let Some(instance) = removed.as_ref().and_then(|m| m.group_instance_id.as_ref()) {
            self.static_members.remove(instance);
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.first().map(|m| m.member_id.clone());
        }
        self.pending_members.retain(|(id, _)| id != member_id);
        self.pending_sync.remove(member_id);
        removed
    }

    /// Kafka's `maybeElectNewJoinedLeader`: keeps the leader if it rejoined, else picks the
    /// first member that did; false when there is no leader or nobody rejoined.
    pub(super) fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.clone() else {
            return false;
        };
        if self
            .member(&leader)
            .is_some_and(|m| m.awaiting_join.is_some())
        {
            return true;
        }
        match self.members.iter().find(|m| m.awaiting_join.is_some()) {
            Some(m) => {
                self.leader_id = Some(m.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// Checks that `member_id` is in the group and, for a static member, that it is the member
    /// id currently holding `group_instance_id` (Kafka's `validateCurrentMember`).
    pub(super) fn validate_member(&self, member_id: &str, group_instance_id: Option<&str>) -> i16 {
        if let Some(instance) = group_instance_id {
            match self.static_members.get(instance) {
                Some(current) if current != member_id => {
                    return ResponseError::FencedInstanceId.code();
                }
                Some(_) => {}
                None => return ResponseError::UnknownMemberId.code(),
            }
        }
        if self.has(member_id) {
            NONE
        } else {
            ResponseError::UnknownMemberId.code()
        }
    }

    /// Members with their metadata for the selected protocol (the leader's JoinGroup response).
    pub(super) fn current_member_metadata(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members
            .iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    /// What the GroupMetadata record holds now.
    pub(super) fn snapshot(&self) -> GroupSnapshot {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        GroupSnapshot {
            group_id: self.group_id.clone(),
            protocol_type: self.protocol_type.clone(),
            generation_id: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .iter()
                .map(|m| MemberSnapshot {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Records the current state as what must be persisted.
    pub(super) fn mark_persist(&mut self) {
        self.persisted = Some(self.snapshot());
        self.dirty = true;
    }
}
