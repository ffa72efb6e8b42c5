//! The request handlers and timers of the classic group protocol (Kafka's `GroupCoordinator`
//! and the classic-group half of `GroupMetadataManager`).

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::state::{Group, GroupState, JoinTimer, JoinTimerKind, Member, SyncTimer};
use super::*;
use crate::errors::NONE;

/// Kafka's `JoinGroupRequest.UNKNOWN_GENERATION_ID`.
const NO_GENERATION: i32 = -1;

/// A bound on the timer events one `tick` handles per group, so that a pathological
/// configuration cannot spin; leftover work is still reported by `next_deadline`.
const MAX_EVENTS_PER_TICK: usize = 100_000;

/// The group coordinator: every classic group this node coordinates.
#[derive(Debug, Default)]
pub struct GroupCoordinator {
    groups: HashMap<String, Group>,
    /// Groups deleted since the last `take_dirty` (their record must be a tombstone).
    deleted: Vec<String>,
    config: GroupConfig,
}

/// Per-event context: settings, the event's time, and the completions it produces.
struct Cx {
    cfg: GroupConfig,
    now: i64,
    out: Vec<Completion>,
}

impl Cx {
    fn new(cfg: GroupConfig, now: i64) -> Cx {
        Cx {
            cfg,
            now,
            out: Vec::new(),
        }
    }

    fn at(&self, delay_ms: i64) -> i64 {
        self.now.saturating_add(delay_ms.max(0))
    }

    fn join(&mut self, token: u64, result: JoinResult) {
        self.out.push(Completion {
            token,
            response: CompletedResponse::Join(result),
        });
    }

    fn sync(&mut self, token: u64, result: SyncResult) {
        self.out.push(Completion {
            token,
            response: CompletedResponse::Sync(result),
        });
    }
}

fn join_error(member_id: &str, error_code: i16) -> JoinResult {
    JoinResult {
        error_code,
        generation_id: NO_GENERATION,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        skip_assignment: false,
        member_id: member_id.to_string(),
        members: Vec::new(),
    }
}

fn sync_error(error_code: i16) -> SyncResult {
    SyncResult {
        error_code,
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

/// The JoinGroup response of the current generation for `member_id` (member list for the
/// leader only).
fn join_response(g: &Group, member_id: &str) -> JoinResult {
    JoinResult {
        error_code: NONE,
        generation_id: g.generation_id,
        protocol_type: g.protocol_type.clone(),
        protocol_name: g.protocol_name.clone(),
        leader: g.leader_id.clone().unwrap_or_default(),
        skip_assignment: false,
        member_id: member_id.to_string(),
        members: if g.is_leader(member_id) {
            g.current_member_metadata()
        } else {
            Vec::new()
        },
    }
}

/// Splits the request's own answer out of the completions an event produced.
fn settle<R>(
    token: u64,
    immediate: Option<R>,
    mut out: Vec<Completion>,
    pick: impl Fn(CompletedResponse) -> Option<R>,
) -> (Outcome<R>, Vec<Completion>) {
    if let Some(r) = immediate {
        return (Outcome::Now(r), out);
    }
    if let Some(i) = out.iter().position(|c| c.token == token) {
        let own = out.remove(i);
        if let Some(r) = pick(own.response.clone()) {
            return (Outcome::Now(r), out);
        }
        out.insert(i, own);
    }
    (Outcome::Parked, out)
}

// ---------------------------------------------------------------------------------------------
// State transitions shared by requests and timers.
// ---------------------------------------------------------------------------------------------

fn reschedule_session(m: &mut Member, cx: &Cx) {
    m.session_deadline = Some(cx.at(i64::from(m.session_timeout_ms)));
}

/// Parks a JoinGroup; a JoinGroup already parked for the same member (sent on another
/// connection, which Kafka would silently drop) is answered REBALANCE_IN_PROGRESS so that its
/// connection is not held forever.
fn park_join(m: &mut Member, token: u64, cx: &mut Cx) {
    if let Some(old) = m.awaiting_join.replace(token).filter(|&t| t != token) {
        cx.join(
            old,
            join_error(&m.member_id, ResponseError::RebalanceInProgress.code()),
        );
    }
}

/// Removes a member without triggering anything; its parked requests are answered
/// UNKNOWN_MEMBER_ID (Kafka answers a parked JoinGroup so; it leaves a parked SyncGroup to the
/// client's timeout, we answer it too).
fn remove_member(g: &mut Group, member_id: &str, cx: &mut Cx) {
    if let Some(m) = g.remove(member_id) {
        if let Some(t) = m.awaiting_join {
            cx.join(t, join_error("", ResponseError::UnknownMemberId.code()));
        }
        if let Some(t) = m.awaiting_sync {
            cx.sync(t, sync_error(ResponseError::UnknownMemberId.code()));
        }
    }
}

/// Answers every parked SyncGroup with the member's assignment (or the error) and restarts
/// those members' sessions.
fn propagate_assignment(g: &mut Group, error_code: i16, cx: &mut Cx) {
    let (protocol_type, protocol_name) = if error_code == NONE {
        (g.protocol_type.clone(), g.protocol_name.clone())
    } else {
        (None, None)
    };
    for m in &mut g.members {
        if let Some(t) = m.awaiting_sync.take() {
            cx.sync(
                t,
                SyncResult {
                    error_code,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: m.assignment.clone(),
                },
            );
            reschedule_session(m, cx);
        }
    }
}

/// Kafka's `prepareRebalance`.
fn prepare_rebalance(g: &mut Group, cx: &mut Cx) {
    if g.state == GroupState::CompletingRebalance {
        for m in &mut g.members {
            m.assignment = Bytes::new();
        }
        propagate_assignment(g, ResponseError::RebalanceInProgress.code(), cx);
    }
    g.pending_sync.clear();
    g.sync_timer = None;
    let initial = g.state == GroupState::Empty;
    if initial {
        let delay = i64::from(cx.cfg.initial_rebalance_delay_ms);
        let remaining = (g.rebalance_timeout_ms() - delay).max(0);
        g.new_member_added = false;
        g.join_timer = Some(JoinTimer {
            deadline: cx.at(delay),
            kind: JoinTimerKind::Initial {
                delay_ms: delay,
                remaining_ms: remaining,
            },
        });
    }
    g.transition(GroupState::PreparingRebalance, cx.now);
    if !initial {
        if g.has_all_members_joined() {
            complete_join(g, cx);
        } else {
            g.join_timer = Some(JoinTimer {
                deadline: cx.at(g.rebalance_timeout_ms()),
                kind: JoinTimerKind::Normal,
            });
        }
    }
}

/// Kafka's `maybeCompleteJoinPhase`: never ends an initial rebalance early.
fn maybe_complete_join_phase(g: &mut Group, cx: &mut Cx) {
    if g.state == GroupState::PreparingRebalance
        && g.previous_state != GroupState::Empty
        && g.has_all_members_joined()
    {
        complete_join(g, cx);
    }
}

/// Kafka's `maybePrepareRebalanceOrCompleteJoin`.
fn maybe_prepare_rebalance_or_complete_join(g: &mut Group, cx: &mut Cx) {
    if g.state.can_rebalance() {
        prepare_rebalance(g, cx);
    } else {
        maybe_complete_join_phase(g, cx);
    }
}

/// Kafka's `completeClassicGroupJoin`: drops dynamic members that did not rejoin, starts the
/// next generation and answers every parked JoinGroup.
fn complete_join(g: &mut Group, cx: &mut Cx) {
    g.join_timer = None;
    let not_rejoined: Vec<String> = g
        .members
        .iter()
        .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
        .map(|m| m.member_id.clone())
        .collect();
    for id in &not_rejoined {
        remove_member(g, id, cx);
    }
    if !g.maybe_elect_new_joined_leader() && !g.members.is_empty() {
        // Only static members that have not rejoined are left: wait for them (or for their
        // sessions to expire). At least 1 ms so that a zero timeout cannot spin.
        g.join_timer = Some(JoinTimer {
            deadline: cx.at(g.rebalance_timeout_ms().max(1)),
            kind: JoinTimerKind::Normal,
        });
        return;
    }
    g.generation_id = g.generation_id.wrapping_add(1);
    g.pending_sync.clear();
    if g.members.is_empty() {
        g.protocol_name = None;
        g.transition(GroupState::Empty, cx.now);
        g.mark_persist();
        return;
    }
    g.protocol_name = g.select_protocol();
    g.transition(GroupState::CompletingRebalance, cx.now);
    let ids: Vec<String> = g.members.iter().map(|m| m.member_id.clone()).collect();
    for id in ids {
        let response = join_response(g, &id);
        if let Some(m) = g.member_mut(&id) {
            if let Some(t) = m.awaiting_join.take() {
                cx.join(t, response);
            }
            reschedule_session(m, cx);
            m.is_new = false;
        }
        g.pending_sync.insert(id);
    }
    g.sync_timer = Some(SyncTimer {
        deadline: cx.at(g.rebalance_timeout_ms()),
        generation_id: g.generation_id,
    });
}

/// Kafka's `removeMemberAndUpdateClassicGroup` (LeaveGroup, session expiry).
fn remove_member_and_update(g: &mut Group, member_id: &str, cx: &mut Cx) {
    remove_member(g, member_id, cx);
    match g.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            maybe_prepare_rebalance_or_complete_join(g, cx)
        }
        GroupState::PreparingRebalance if g.has_all_members_joined() => complete_join(g, cx),
        _ => {}
    }
}

/// Kafka's `removePendingMemberAndUpdateClassicGroup`.
fn remove_pending_member_and_update(g: &mut Group, member_id: &str, cx: &mut Cx) {
    g.pending_members.retain(|(id, _)| id != member_id);
    maybe_complete_join_phase(g, cx);
}

/// Kafka's `addMemberThenRebalanceOrCompleteJoin`.
fn add_member_and_rebalance(
    g: &mut Group,
    token: u64,
    member_id: String,
    req: &JoinGroupArgs,
    rebalance_timeout_ms: i32,
    cx: &mut Cx,
) {
    let member = Member {
        member_id,
        group_instance_id: req.group_instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        rebalance_timeout_ms,
        session_timeout_ms: req.session_timeout_ms,
        protocol_type: req.protocol_type.clone(),
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        awaiting_join: Some(token),
        awaiting_sync: None,
        is_new: true,
        // A new member cannot heartbeat while its JoinGroup is parked; it is dropped if the
        // join phase has not answered it within the new-member join timeout.
        session_deadline: Some(cx.at(i64::from(cx.cfg.new_member_join_timeout_ms))),
    };
    if g.state == GroupState::PreparingRebalance && g.previous_state == GroupState::Empty {
        g.new_member_added = true;
    }
    g.add(member);
    maybe_prepare_rebalance_or_complete_join(g, cx);
}

/// Kafka's `updateMemberThenRebalanceOrCompleteJoin`.
fn update_member_and_rebalance(
    g: &mut Group,
    token: u64,
    member_id: &str,
    req: &JoinGroupArgs,
    rebalance_timeout_ms: i32,
    cx: &mut Cx,
) {
    if let Some(m) = g.member_mut(member_id) {
        m.protocols = req.protocols.clone();
        m.rebalance_timeout_ms = rebalance_timeout_ms;
        m.session_timeout_ms = req.session_timeout_ms;
        park_join(m, token, cx);
    }
    maybe_prepare_rebalance_or_complete_join(g, cx);
}

/// Kafka's `updateStaticMemberThenRebalanceOrCompleteJoin`: a static member restarted (known
/// group.instance.id, empty member id) takes a new member id; the old id is fenced.
#[allow(clippy::too_many_arguments)]
fn update_static_member(
    g: &mut Group,
    token: u64,
    instance_id: &str,
    old_id: &str,
    new_id: String,
    req: &JoinGroupArgs,
    rebalance_timeout_ms: i32,
    version: i16,
    cx: &mut Cx,
) -> Option<JoinResult> {
    let current_leader = g.leader_id.clone();
    // Replace the member id, fencing whatever the old id has parked.
    {
        let Some(m) = g.member_mut(old_id) else {
            return Some(join_error("", ResponseError::UnknownServerError.code()));
        };
        if let Some(t) = m.awaiting_join.take() {
            cx.join(
                t,
                join_error(old_id, ResponseError::FencedInstanceId.code()),
            );
        }
        if let Some(t) = m.awaiting_sync.take() {
            cx.sync(t, sync_error(ResponseError::FencedInstanceId.code()));
        }
        m.member_id = new_id.clone();
        reschedule_session(m, cx);
        m.protocols = req.protocols.clone();
        m.rebalance_timeout_ms = rebalance_timeout_ms;
        m.session_timeout_ms = req.session_timeout_ms;
        m.awaiting_join = Some(token);
    }
    if g.is_leader(old_id) {
        g.leader_id = Some(new_id.clone());
    }
    g.static_members
        .insert(instance_id.to_string(), new_id.clone());
    if g.pending_sync.remove(old_id) {
        g.pending_sync.insert(new_id.clone());
    }

    match g.state {
        GroupState::Stable => {
            if g.select_protocol() == g.protocol_name {
                // Same protocol next generation: no rebalance; the member keeps its assignment.
                g.mark_persist();
                if let Some(m) = g.member_mut(&new_id) {
                    m.awaiting_join = None;
                }
                let is_leader = g.is_leader(&new_id);
                let mut response = join_response(g, &new_id);
                if version >= 9 {
                    // The leader learns it leads but must not run the assignor.
                    response.skip_assignment = is_leader;
                } else {
                    // Before v9 the old leader id is returned so that a restarted leader does
                    // not compute an assignment the stable group would ignore.
                    response.members = Vec::new();
                    response.leader = current_leader.unwrap_or_default();
                }
                Some(response)
            } else {
                prepare_rebalance(g, cx);
                None
            }
        }
        // The leader may already have assigned to the old member id: rebalance.
        GroupState::CompletingRebalance | GroupState::Empty => {
            prepare_rebalance(g, cx);
            None
        }
        GroupState::PreparingRebalance | GroupState::Dead => None,
    }
}

/// Kafka's `acceptJoiningMember` (group.max.size).
fn accept_joining_member(g: &Group, member_id: &str, max_size: i32) -> bool {
    let max = usize::try_from(max_size).unwrap_or(0);
    match g.state {
        GroupState::Empty | GroupState::Dead => true,
        GroupState::PreparingRebalance => {
            g.member(member_id)
                .is_some_and(|m| m.awaiting_join.is_some())
                || g.num_awaiting_join() < max
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            g.has(member_id) || g.members.len() < max
        }
    }
}

fn new_member_join(
    g: &mut Group,
    token: u64,
    req: &JoinGroupArgs,
    rebalance_timeout_ms: i32,
    version: i16,
    cx: &mut Cx,
) -> Option<JoinResult> {
    if !g.supports_protocols(&req.protocol_type, &req.protocols) {
        return Some(join_error(
            "",
            ResponseError::InconsistentGroupProtocol.code(),
        ));
    }
    let prefix = req
        .group_instance_id
        .as_deref()
        .unwrap_or(req.client_id.as_str());
    let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
    match req.group_instance_id.as_deref() {
        Some(instance) => match g.static_members.get(instance).cloned() {
            Some(old_id) => update_static_member(
                g,
                token,
                instance,
                &old_id,
                new_id,
                req,
                rebalance_timeout_ms,
                version,
                cx,
            ),
            None => {
                add_member_and_rebalance(g, token, new_id, req, rebalance_timeout_ms, cx);
                None
            }
        },
        None if version >= 4 => {
            let deadline = cx.at(i64::from(req.session_timeout_ms));
            g.pending_members.push((new_id.clone(), deadline));
            Some(join_error(&new_id, ResponseError::MemberIdRequired.code()))
        }
        None => {
            add_member_and_rebalance(g, token, new_id, req, rebalance_timeout_ms, cx);
            None
        }
    }
}

fn current_member_join(
    g: &mut Group,
    token: u64,
    req: &JoinGroupArgs,
    rebalance_timeout_ms: i32,
    cx: &mut Cx,
) -> Option<JoinResult> {
    let member_id = req.member_id.as_str();
    if !g.supports_protocols(&req.protocol_type, &req.protocols) {
        return Some(join_error(
            member_id,
            ResponseError::InconsistentGroupProtocol.code(),
        ));
    }
    if g.is_pending(member_id) {
        if req.group_instance_id.is_some() {
            // Pending member ids are only handed to dynamic members (Kafka throws here).
            return Some(join_error(
                member_id,
                ResponseError::UnknownServerError.code(),
            ));
        }
        add_member_and_rebalance(
            g,
            token,
            member_id.to_string(),
            req,
            rebalance_timeout_ms,
            cx,
        );
        return None;
    }
    let error = g.validate_member(member_id, req.group_instance_id.as_deref());
    if error != NONE {
        return Some(join_error(member_id, error));
    }
    let (is_leader, matches) = match g.member(member_id) {
        Some(m) => (g.is_leader(member_id), m.matches(&req.protocols)),
        None => return Some(join_error(member_id, ResponseError::UnknownMemberId.code())),
    };
    match g.state {
        GroupState::PreparingRebalance => {
            update_member_and_rebalance(g, token, member_id, req, rebalance_timeout_ms, cx);
            None
        }
        // Same metadata: the member probably missed its JoinGroup response; repeat it.
        GroupState::CompletingRebalance if matches => Some(join_response(g, member_id)),
        // A rejoining leader forces a rebalance (it may have seen topic metadata change), as
        // does changed metadata; a follower with unchanged metadata gets the current generation.
        GroupState::Stable if !is_leader && matches => {
            let mut response = join_response(g, member_id);
            response.members = Vec::new();
            Some(response)
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            update_member_and_rebalance(g, token, member_id, req, rebalance_timeout_ms, cx);
            None
        }
        GroupState::Empty | GroupState::Dead => {
            Some(join_error(member_id, ResponseError::UnknownMemberId.code()))
        }
    }
}

/// The earliest timer of a group, with what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Session(String),
    Pending(String),
    Sync(i32),
    Join,
}

fn next_event(g: &Group) -> Option<(i64, Event)> {
    let mut best: Option<(i64, Event)> = None;
    let mut consider = |deadline: i64, event: Event| {
        if best.as_ref().is_none_or(|(d, _)| deadline < *d) {
            best = Some((deadline, event));
        }
    };
    for m in &g.members {
        if let Some(d) = m.session_deadline {
            consider(d, Event::Session(m.member_id.clone()));
        }
    }
    for (id, d) in &g.pending_members {
        consider(*d, Event::Pending(id.clone()));
    }
    if let Some(s) = g.sync_timer {
        consider(s.deadline, Event::Sync(s.generation_id));
    }
    if let Some(j) = g.join_timer {
        consider(j.deadline, Event::Join);
    }
    best
}

fn next_deadline_of(g: &Group) -> Option<i64> {
    let sessions = g.members.iter().filter_map(|m| m.session_deadline);
    let pending = g.pending_members.iter().map(|(_, d)| *d);
    let timers = g
        .sync_timer
        .map(|s| s.deadline)
        .into_iter()
        .chain(g.join_timer.map(|j| j.deadline));
    sessions.chain(pending).chain(timers).min()
}

fn fire(g: &mut Group, event: Event, cx: &mut Cx) {
    match event {
        Event::Session(id) => {
            let Some(m) = g.member_mut(&id) else {
                return;
            };
            m.session_deadline = None;
            // Kafka's `hasSatisfiedHeartbeat`: an existing member whose JoinGroup or SyncGroup is
            // parked is waiting on us, not failing; the rebalance restarts its session.
            let waiting = m.awaiting_join.is_some() || m.awaiting_sync.is_some();
            if m.is_new || !waiting {
                remove_member_and_update(g, &id, cx);
            }
        }
        Event::Pending(id) => remove_pending_member_and_update(g, &id, cx),
        Event::Sync(generation) => {
            g.sync_timer = None;
            let syncing = matches!(
                g.state,
                GroupState::CompletingRebalance | GroupState::Stable
            );
            if generation == g.generation_id && syncing && !g.pending_sync.is_empty() {
                let missing: Vec<String> = g.pending_sync.iter().cloned().collect();
                for id in &missing {
                    remove_member(g, id, cx);
                }
                prepare_rebalance(g, cx);
            }
        }
        Event::Join => {
            let Some(timer) = g.join_timer.take() else {
                return;
            };
            match timer.kind {
                JoinTimerKind::Initial {
                    delay_ms,
                    remaining_ms,
                } if g.new_member_added && remaining_ms != 0 => {
                    g.new_member_added = false;
                    let delay = i64::from(cx.cfg.initial_rebalance_delay_ms).min(remaining_ms);
                    let remaining = (remaining_ms - delay_ms).max(0);
                    g.join_timer = Some(JoinTimer {
                        deadline: cx.at(delay),
                        kind: JoinTimerKind::Initial {
                            delay_ms: delay,
                            remaining_ms: remaining,
                        },
                    });
                }
                _ => complete_join(g, cx),
            }
        }
    }
}

impl GroupCoordinator {
    /// A coordinator with no groups.
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            groups: HashMap::new(),
            deleted: Vec::new(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Handles JoinGroup. `version` matters for MEMBER_ID_REQUIRED (v4+), for the rebalance
    /// timeout (v0 uses the session timeout) and for a static leader's rejoin (v9+ gets
    /// `skip_assignment`). When the request is parked, its answer comes as a [`Completion`]
    /// with `token`.
    pub fn join_group(
        &mut self,
        token: u64,
        req: JoinGroupArgs,
        version: i16,
        now_ms: i64,
    ) -> (Outcome<JoinResult>, Vec<Completion>) {
        let mut cx = Cx::new(self.config, now_ms);
        let immediate = self.do_join(token, &req, version, &mut cx);
        settle(token, immediate, cx.out, |r| match r {
            CompletedResponse::Join(j) => Some(j),
            CompletedResponse::Sync(_) => None,
        })
    }

    fn do_join(
        &mut self,
        token: u64,
        req: &JoinGroupArgs,
        version: i16,
        cx: &mut Cx,
    ) -> Option<JoinResult> {
        if req.group_id.is_empty() {
            return Some(join_error(
                &req.member_id,
                ResponseError::InvalidGroupId.code(),
            ));
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Some(join_error(
                &req.member_id,
                ResponseError::InvalidSessionTimeout.code(),
            ));
        }
        let rebalance_timeout_ms = if version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        };
        let unknown_member = req.member_id.is_empty();
        let created = !self.groups.contains_key(&req.group_id);
        if created && !unknown_member {
            return Some(join_error(
                &req.member_id,
                ResponseError::UnknownMemberId.code(),
            ));
        }
        let g = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, cx.now));

        let result = if !accept_joining_member(g, &req.member_id, cx.cfg.max_size) {
            remove_member(g, &req.member_id, cx);
            Some(join_error("", ResponseError::GroupMaxSizeReached.code()))
        } else if unknown_member {
            new_member_join(g, token, req, rebalance_timeout_ms, version, cx)
        } else {
            current_member_join(g, token, req, rebalance_timeout_ms, cx)
        };
        if g.state == GroupState::PreparingRebalance {
            maybe_complete_join_phase(g, cx);
        }
        if created && g.is_unused() {
            self.groups.remove(&req.group_id);
        }
        result
    }

    /// Handles SyncGroup. Followers in CompletingRebalance are parked until the leader's
    /// assignment arrives. `protocol_type`/`protocol_name` are `None` below v5.
    pub fn sync_group(
        &mut self,
        token: u64,
        req: SyncGroupArgs,
        now_ms: i64,
    ) -> (Outcome<SyncResult>, Vec<Completion>) {
        let mut cx = Cx::new(self.config, now_ms);
        let immediate = self.do_sync(token, req, &mut cx);
        settle(token, immediate, cx.out, |r| match r {
            CompletedResponse::Sync(s) => Some(s),
            CompletedResponse::Join(_) => None,
        })
    }

    fn do_sync(&mut self, token: u64, req: SyncGroupArgs, cx: &mut Cx) -> Option<SyncResult> {
        if req.group_id.is_empty() {
            return Some(sync_error(ResponseError::InvalidGroupId.code()));
        }
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            return Some(sync_error(ResponseError::UnknownMemberId.code()));
        };
        let error = g.validate_member(&req.member_id, req.group_instance_id.as_deref());
        if error != NONE {
            return Some(sync_error(error));
        }
        if req.generation_id != g.generation_id {
            return Some(sync_error(ResponseError::IllegalGeneration.code()));
        }
        let inconsistent = |asked: &Option<String>, have: &Option<String>| matches!((asked, have), (Some(a), Some(h)) if a != h);
        if inconsistent(&req.protocol_type, &g.protocol_type)
            || inconsistent(&req.protocol_name, &g.protocol_name)
        {
            return Some(sync_error(ResponseError::InconsistentGroupProtocol.code()));
        }
        match g.state {
            GroupState::Empty | GroupState::Dead => {
                Some(sync_error(ResponseError::UnknownMemberId.code()))
            }
            GroupState::PreparingRebalance => {
                Some(sync_error(ResponseError::RebalanceInProgress.code()))
            }
            GroupState::CompletingRebalance => {
                // A SyncGroup already parked for this member (another connection) is released.
                let superseded = g
                    .member_mut(&req.member_id)
                    .and_then(|m| m.awaiting_sync.replace(token))
                    .filter(|&t| t != token);
                if let Some(old) = superseded {
                    cx.sync(old, sync_error(ResponseError::RebalanceInProgress.code()));
                }
                g.pending_sync.remove(&req.member_id);
                if g.pending_sync.is_empty() {
                    g.sync_timer = None;
                }
                if g.is_leader(&req.member_id) {
                    // Last assignment per member wins; members left out get an empty one.
                    let mut assignment: HashMap<&str, &Bytes> = HashMap::new();
                    for (id, bytes) in &req.assignments {
                        assignment.insert(id.as_str(), bytes);
                    }
                    for m in &mut g.members {
                        m.assignment = assignment
                            .get(m.member_id.as_str())
                            .map(|b| (*b).clone())
                            .unwrap_or_default();
                    }
                    g.mark_persist();
                    propagate_assignment(g, NONE, cx);
                    g.transition(GroupState::Stable, cx.now);
                }
                None
            }
            GroupState::Stable => {
                g.pending_sync.remove(&req.member_id);
                if g.pending_sync.is_empty() {
                    g.sync_timer = None;
                }
                let protocol_type = g.protocol_type.clone();
                let protocol_name = g.protocol_name.clone();
                let Some(m) = g.member_mut(&req.member_id) else {
                    return Some(sync_error(ResponseError::UnknownMemberId.code()));
                };
                reschedule_session(m, cx);
                Some(SyncResult {
                    error_code: NONE,
                    protocol_type,
                    protocol_name,
                    assignment: m.assignment.clone(),
                })
            }
        }
    }

    /// Handles Heartbeat; returns its error code. Restarts the member's session.
    pub fn heartbeat(&mut self, req: HeartbeatArgs, now_ms: i64) -> i16 {
        let cx = Cx::new(self.config, now_ms);
        if req.group_id.is_empty() {
            return ResponseError::InvalidGroupId.code();
        }
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        let error = g.validate_member(&req.member_id, req.group_instance_id.as_deref());
        if error != NONE {
            return error;
        }
        if req.generation_id != g.generation_id {
            return ResponseError::IllegalGeneration.code();
        }
        let state = g.state;
        let Some(m) = g.member_mut(&req.member_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        match state {
            GroupState::Empty | GroupState::Dead => ResponseError::UnknownMemberId.code(),
            GroupState::PreparingRebalance => {
                reschedule_session(m, &cx);
                ResponseError::RebalanceInProgress.code()
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                reschedule_session(m, &cx);
                NONE
            }
        }
    }

    /// Handles LeaveGroup (v0-2: one member without instance id; v3+: a batch, where an empty
    /// member id with a group.instance.id removes whoever holds that instance id).
    pub fn leave_group(
        &mut self,
        group_id: &str,
        members: Vec<LeaveMember>,
        now_ms: i64,
    ) -> (LeaveResult, Vec<Completion>) {
        let mut cx = Cx::new(self.config, now_ms);
        if group_id.is_empty() {
            let result = LeaveResult {
                error_code: ResponseError::InvalidGroupId.code(),
                members: Vec::new(),
            };
            return (result, cx.out);
        }
        let Some(g) = self.groups.get_mut(group_id) else {
            let members = members
                .into_iter()
                .map(|l| LeaveMemberResult {
                    member_id: l.member_id,
                    group_instance_id: l.group_instance_id,
                    error_code: ResponseError::UnknownMemberId.code(),
                })
                .collect();
            let result = LeaveResult {
                error_code: NONE,
                members,
            };
            return (result, cx.out);
        };
        let mut results = Vec::with_capacity(members.len());
        for leaving in members {
            let error_code = if leaving.member_id.is_empty() {
                let current = leaving
                    .group_instance_id
                    .as_ref()
                    .and_then(|i| g.static_members.get(i).cloned());
                match current {
                    Some(id) => {
                        remove_member_and_update(g, &id, &mut cx);
                        NONE
                    }
                    None => ResponseError::UnknownMemberId.code(),
                }
            } else if g.is_pending(&leaving.member_id) {
                remove_pending_member_and_update(g, &leaving.member_id, &mut cx);
                NONE
            } else {
                let error =
                    g.validate_member(&leaving.member_id, leaving.group_instance_id.as_deref());
                if error == NONE {
                    remove_member_and_update(g, &leaving.member_id, &mut cx);
                }
                error
            };
            results.push(LeaveMemberResult {
                member_id: leaving.member_id,
                group_instance_id: leaving.group_instance_id,
                error_code,
            });
        }
        let result = LeaveResult {
            error_code: NONE,
            members: results,
        };
        (result, cx.out)
    }

    /// Fires every timer due at `now_ms`: expired sessions and pending member ids, members that
    /// never sent SyncGroup, and join phases whose rebalance timeout or initial delay passed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Completion> {
        let mut cx = Cx::new(self.config, now_ms);
        let mut ids: Vec<&String> = self.groups.keys().collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        for id in ids {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            for _ in 0..MAX_EVENTS_PER_TICK {
                match next_event(g) {
                    Some((deadline, event)) if deadline <= now_ms => fire(g, event, &mut cx),
                    _ => break,
                }
            }
        }
        cx.out
    }

    /// The earliest time at which [`GroupCoordinator::tick`] has work, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        self.groups.values().filter_map(next_deadline_of).min()
    }

    /// The state of a group, if it exists.
    pub fn state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    /// The group's current generation, if it exists.
    pub fn generation(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|g| g.generation_id)
    }

    /// DescribeGroups for one group; `None` if unknown (v6+: GROUP_ID_NOT_FOUND; before:
    /// [`GroupDescription::dead`]). Metadata and assignments are shown only when Stable.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group_id)?;
        let stable = g.state == GroupState::Stable;
        let protocol = if stable {
            g.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = g
            .members
            .iter()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        Some(GroupDescription {
            group_id: g.group_id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        })
    }

    /// ListGroups: every group, or those whose state name is in `states_filter` (compared
    /// case-insensitively, as Kafka does); sorted by group id.
    pub fn list(&self, states_filter: &[String]) -> Vec<GroupListing> {
        let mut out: Vec<GroupListing> = self
            .groups
            .values()
            .filter(|g| {
                states_filter.is_empty()
                    || states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.as_str()))
            })
            .map(|g| GroupListing {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// DeleteGroups for one group: GROUP_ID_NOT_FOUND if unknown, NON_EMPTY_GROUP unless Empty;
    /// otherwise the group is removed and reported by `take_dirty` (write a tombstone). The
    /// caller deletes its offsets.
    pub fn delete_group(&mut self, group_id: &str) -> i16 {
        match self.groups.get(group_id).map(|g| g.state) {
            None | Some(GroupState::Dead) => ResponseError::GroupIdNotFound.code(),
            Some(GroupState::Empty) => {
                self.groups.remove(group_id);
                self.deleted.push(group_id.to_string());
                NONE
            }
            Some(_) => ResponseError::NonEmptyGroup.code(),
        }
    }

    /// Forgets the groups `unload` selects because this node stops coordinating them (it no
    /// longer leads their `__consumer_offsets` partition). Nothing is written: the new
    /// coordinator loads them from that partition. Every request they parked is answered with
    /// NOT_COORDINATOR, so that its client looks the coordinator up again, as Kafka's
    /// `onResignation` does. Returns the ids removed and the completions.
    pub fn unload(&mut self, unload: impl Fn(&str) -> bool) -> (Vec<String>, Vec<Completion>) {
        let mut cx = Cx::new(self.config, 0);
        let ids: Vec<String> = self.groups.keys().filter(|g| unload(g)).cloned().collect();
        let code = ResponseError::NotCoordinator.code();
        for id in &ids {
            let Some(g) = self.groups.remove(id) else {
                continue;
            };
            for m in &g.members {
                if let Some(token) = m.awaiting_join {
                    cx.join(token, join_error(&m.member_id, code));
                }
                if let Some(token) = m.awaiting_sync {
                    cx.sync(token, sync_error(code));
                }
            }
        }
        self.deleted.retain(|g| !unload(g));
        (ids, cx.out)
    }

    /// Validates an OffsetCommit's sender as Kafka does; returns the error code for every
    /// partition of the request. A commit with generation < 0 to an unknown group creates it
    /// (Empty, no protocol type: a "simple" group). A valid commit restarts the member's session
    /// in Stable and PreparingRebalance; in CompletingRebalance it is refused with
    /// REBALANCE_IN_PROGRESS. `version` is the OffsetCommit version (v9+: GROUP_ID_NOT_FOUND for
    /// an unknown group, ILLEGAL_GENERATION before).
    pub fn validate_offset_commit(
        &mut self,
        req: &OffsetCommitArgs,
        version: i16,
        now_ms: i64,
    ) -> i16 {
        let cx = Cx::new(self.config, now_ms);
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            if req.generation_id < 0 {
                self.groups
                    .insert(req.group_id.clone(), Group::new(&req.group_id, now_ms));
                return NONE;
            }
            return if version >= 9 {
                ResponseError::GroupIdNotFound.code()
            } else {
                ResponseError::IllegalGeneration.code()
            };
        };
        if req.generation_id < 0 && g.state == GroupState::Empty {
            return NONE;
        }
        if req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some() {
            let error = g.validate_member(&req.member_id, req.group_instance_id.as_deref());
            if error != NONE {
                return error;
            }
            if req.generation_id != g.generation_id {
                return ResponseError::IllegalGeneration.code();
            }
        } else if g.state != GroupState::Empty {
            return ResponseError::UnknownMemberId.code();
        }
        match g.state {
            GroupState::CompletingRebalance => ResponseError::RebalanceInProgress.code(),
            GroupState::Stable | GroupState::PreparingRebalance => {
                if let Some(m) = g.member_mut(&req.member_id) {
                    reschedule_session(m, &cx);
                }
                NONE
            }
            GroupState::Empty => NONE,
            GroupState::Dead => ResponseError::CoordinatorNotAvailable.code(),
        }
    }

    /// For an Empty group: since when it has been empty, and whether it ever used group
    /// management (a protocol type). Offset retention counts from that moment (KIP-211).
    pub fn empty_since(&self, group_id: &str) -> Option<(i64, bool)> {
        let g = self.groups.get(group_id)?;
        (g.state == GroupState::Empty).then(|| (g.state_timestamp_ms, g.protocol_type.is_some()))
    }

    /// What the group's GroupMetadata record must hold: the state at the last event that
    /// required a write (or the restored snapshot). `None` for an unknown or deleted group (a
    /// tombstone, if `take_dirty` reported it) or one never persisted.
    pub fn group_snapshot(&self, group_id: &str) -> Option<GroupSnapshot> {
        self.groups.get(group_id)?.persisted.clone()
    }

    /// Groups whose GroupMetadata record must be written since the last call: a leader's
    /// assignment, a rebalance that left the group empty, a static member replaced in a stable
    /// group, or a deletion (then [`GroupCoordinator::group_snapshot`] is `None`: write a
    /// tombstone). Sorted, each once.
    pub fn take_dirty(&mut self) -> Vec<String> {
        let mut out: Vec<String> = std::mem::take(&mut self.deleted);
        for g in self.groups.values_mut() {
            if g.dirty {
                g.dirty = false;
                out.push(g.group_id.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Loads a group from its GroupMetadata record (at start, or when this node becomes its
    /// coordinator): Stable with its members if it has any, else Empty. Members get fresh
    /// session deadlines from `now_ms`; a group larger than `group.max.size` starts a rebalance.
    /// Replaces any group of the same id.
    pub fn restore(&mut self, snapshot: GroupSnapshot, now_ms: i64) {
        let mut cx = Cx::new(self.config, now_ms);
        let mut g = Group::new(&snapshot.group_id, snapshot.current_state_timestamp_ms);
        let protocol_type = snapshot.protocol_type.clone().filter(|t| !t.is_empty());
        let protocol = snapshot.protocol.clone().unwrap_or_default();
        for m in &snapshot.members {
            let member = Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: protocol_type.clone().unwrap_or_default(),
                protocols: vec![Protocol::new(protocol.clone(), m.subscription.clone())],
                assignment: m.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                session_deadline: Some(cx.at(i64::from(m.session_timeout_ms))),
            };
            g.add(member);
        }
        g.protocol_type = protocol_type;
        g.generation_id = snapshot.generation_id;
        g.protocol_name = snapshot.protocol.clone();
        // `add` picks the first member as leader; the record says who leads.
        g.leader_id = snapshot
            .leader
            .clone()
            .filter(|l| g.has(l))
            .or_else(|| g.members.first().map(|m| m.member_id.clone()));
        if !g.members.is_empty() {
            g.state = GroupState::Stable;
            g.previous_state = GroupState::Stable;
        }
        g.persisted = Some(snapshot);
        let max = usize::try_from(self.config.max_size).unwrap_or(0);
        if g.members.len() > max {
            prepare_rebalance(&mut g, &mut cx);
        }
        self.groups.insert(g.group_id.clone(), g);
    }
}
