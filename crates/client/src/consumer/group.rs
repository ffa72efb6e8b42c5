//! Classic consumer group membership on the wire: the coordinator connection (JoinGroup,
//! SyncGroup, LeaveGroup, OffsetCommit, OffsetFetch) and the heartbeat task.
//!
//! The coordinator connection ([`GroupConn`]) is shared, behind an async mutex, by the
//! consumer's own calls and by asynchronous commits, so requests to the coordinator go one at
//! a time in the order they were made. Its request timeout covers a JoinGroup that waits for
//! the whole rebalance. The heartbeat task has a connection of its own, so heartbeats keep
//! going while the application works between polls; it talks to the consumer only through
//! [`Shared`] (flags under a mutex that is never held across an await) and a [`Notify`] that
//! wakes a waiting `poll`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName, join_group_request,
    leave_group_request, offset_commit_request, offset_fetch_request, sync_group_request,
};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::sync::Notify;

use crate::admin::TopicPartition;
use crate::connection::{Connection, ConnectionConfig};
use crate::consumer::pick_version;
use crate::error::{ClientError, Result, codes};
use crate::offset_fetch::{OffsetFetchFailure, offset_fetch_rows};

/// JoinGroup versions this consumer speaks (v4+: MEMBER_ID_REQUIRED; v9 adds skip_assignment,
/// which only concerns static members).
const JOIN_GROUP: (i16, i16) = (0, 9);
const SYNC_GROUP: (i16, i16) = (0, 5);
const HEARTBEAT: (i16, i16) = (0, 4);
const LEAVE_GROUP: (i16, i16) = (0, 5);
const OFFSET_COMMIT: (i16, i16) = (2, 9);
/// v10 addresses topics by id.
const OFFSET_FETCH: (i16, i16) = (1, 9);

/// MEMBER_ID_REQUIRED: a JoinGroup v4+ without a member id gets one and must join again.
pub(crate) const MEMBER_ID_REQUIRED: i16 = 79;
/// FENCED_INSTANCE_ID (static membership).
const FENCED_INSTANCE_ID: i16 = 82;

/// Where the member stands in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// Not in the group (never joined, left, or expelled).
    Unjoined,
    /// Between JoinGroup and the end of SyncGroup: heartbeats pause.
    Rebalancing,
    /// Has an assignment for the current generation: heartbeats run.
    Stable,
}

/// State shared by the consumer and its heartbeat task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub member_id: String,
    pub generation: i32,
    pub state: MemberState,
    /// Coordinator `host:port`, when known.
    pub coordinator: Option<String>,
    /// The coordinator asked for a rebalance (or the member must rejoin for another reason).
    pub rejoin_needed: bool,
    /// The member's partitions are no longer its own (expelled, fenced, left on poll timeout):
    /// the listener hears `on_partitions_lost` and no commit is attempted.
    pub partitions_lost: bool,
    /// The coordinator moved or cannot be reached: find it again.
    pub coordinator_unknown: bool,
    /// When the application last called `poll` (for `max.poll.interval.ms`).
    pub last_poll: Instant,
    /// A heartbeat error nothing can fix (authorization, ...), for `poll` to report.
    pub fatal: Option<i16>,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            member_id: String::new(),
            generation: -1,
            state: MemberState::Unjoined,
            coordinator: None,
            rejoin_needed: false,
            partitions_lost: false,
            coordinator_unknown: false,
            last_poll: Instant::now(),
            fatal: None,
        }
    }

    /// Forgets the member id and generation (the coordinator no longer knows them).
    pub(crate) fn reset_member(&mut self) {
        self.member_id.clear();
        self.generation = -1;
        self.state = MemberState::Unjoined;
    }
}

/// Locks shared state; a panic elsewhere while holding it leaves usable data behind.
pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an error means "find the coordinator again and retry".
pub(crate) fn is_coordinator_error(code: i16) -> bool {
    matches!(
        code,
        codes::NOT_COORDINATOR | codes::COORDINATOR_NOT_AVAILABLE
    )
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One committed offset to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetToCommit {
    pub tp: TopicPartition,
    pub offset: i64,
    pub leader_epoch: i32,
}

/// A committed offset read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
}

/// The connection to the group coordinator.
#[derive(Debug)]
pub(crate) struct GroupConn {
    pub group_id: String,
    pub addr: Option<String>,
    conn: Option<Connection>,
    config: ConnectionConfig,
    /// Set while a request is on the connection: still set at the next call means the caller
    /// was cancelled mid-request and the connection's byte stream is in an unknown place.
    busy: bool,
}

impl GroupConn {
    pub(crate) fn new(group_id: String, config: ConnectionConfig) -> GroupConn {
        GroupConn {
            group_id,
            addr: None,
            conn: None,
            config,
            busy: false,
        }
    }

    /// Points the connection at a (new) coordinator address.
    pub(crate) fn set_coordinator(&mut self, addr: Option<String>) {
        if self.addr != addr {
            self.conn = None;
        }
        self.addr = addr;
    }

    /// Drops the connection and the coordinator address.
    pub(crate) fn forget(&mut self) {
        self.conn = None;
        self.addr = None;
    }

    async fn call<R: Request>(
        &mut self,
        api: ApiKey,
        range: (i16, i16),
        build: impl FnOnce(i16) -> R,
    ) -> Result<(R::Response, i16)> {
        let Some(addr) = self.addr.clone() else {
            return Err(ClientError::broker(
                codes::COORDINATOR_NOT_AVAILABLE,
                format!("group '{}': coordinator unknown", self.group_id),
                None,
            ));
        };
        if self.busy || self.conn.as_ref().is_none_or(Connection::is_broken) {
            self.conn = None;
            self.busy = false;
            self.conn = Some(Connection::connect(&addr, &self.config).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClientError::NotFound(format!("no connection to {addr}")));
        };
        let version = pick_version(conn, api, range)?;
        let req = build(version);
        self.busy = true;
        let result = conn.call_at(&req, version).await;
        self.busy = false;
        match result {
            Ok(r) => Ok((r, version)),
            Err(e) => {
                if e.breaks_connection() {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }

    /// JoinGroup. `protocols` are (assignor name, subscription bytes) in order of preference.
    pub(crate) async fn join(
        &mut self,
        member_id: &str,
        session_timeout_ms: i32,
        rebalance_timeout_ms: i32,
        protocols: &[(&'static str, Bytes)],
    ) -> Result<JoinGroupResponse> {
        let group = self.group_id.clone();
        let (r, _) = self
            .call(ApiKey::JoinGroup, JOIN_GROUP, |version| {
                let mut req = JoinGroupRequest::default();
                req.group_id = GroupId(s(&group));
                req.session_timeout_ms = session_timeout_ms;
                if version >= 1 {
                    req.rebalance_timeout_ms = rebalance_timeout_ms;
                }
                req.member_id = s(member_id);
                req.protocol_type = StrBytes::from_static_str("consumer");
                req.protocols = protocols
                    .iter()
                    .map(|(name, meta)| {
                        let mut p = join_group_request::JoinGroupRequestProtocol::default();
                        p.name = StrBytes::from_static_str(name);
                        p.metadata = meta.clone();
                        p
                    })
                    .collect();
                req
            })
            .await?;
        Ok(r)
    }

    /// SyncGroup; returns the member's assignment bytes.
    pub(crate) async fn sync(
        &mut self,
        generation: i32,
        member_id: &str,
        protocol_name: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes> {
        let group = self.group_id.clone();
        let (r, _) = self
            .call(ApiKey::SyncGroup, SYNC_GROUP, |version| {
                let mut req = SyncGroupRequest::default();
                req.group_id = GroupId(s(&group));
                req.generation_id = generation;
                req.member_id = s(member_id);
                if version >= 5 {
                    req.protocol_type = Some(StrBytes::from_static_str("consumer"));
                    req.protocol_name = Some(s(protocol_name));
                }
                req.assignments = assignments
                    .into_iter()
                    .map(|(m, a)| {
                        let mut x = sync_group_request::SyncGroupRequestAssignment::default();
                        x.member_id = StrBytes::from_string(m);
                        x.assignment = a;
                        x
                    })
                    .collect();
                req
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                r.error_code,
                format!("sync group '{}'", self.group_id),
                None,
            ));
        }
        Ok(r.assignment)
    }

    /// LeaveGroup for `member_id`.
    pub(crate) async fn leave(&mut self, member_id: &str) -> Result<()> {
        let group = self.group_id.clone();
        let (r, version) = self
            .call(ApiKey::LeaveGroup, LEAVE_GROUP, |version| {
                leave_request(&group, member_id, version)
            })
            .await?;
        let code = if version >= 3 && r.error_code == 0 {
            r.members.first().map_or(0, |m| m.error_code)
        } else {
            r.error_code
        };
        if code != 0 {
            return Err(ClientError::broker(
                code,
                format!("leave group '{}'", self.group_id),
                None,
            ));
        }
        Ok(())
    }

    /// OffsetCommit as `member_id` of `generation` (-1 and "" for a consumer outside the
    /// group, which Kafka accepts only while the group has no members). The first partition
    /// error fails the call.
    pub(crate) async fn commit(
        &mut self,
        generation: i32,
        member_id: &str,
        offsets: &[OffsetToCommit],
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<&OffsetToCommit>> = BTreeMap::new();
        for o in offsets {
            by_topic.entry(o.tp.topic.as_str()).or_default().push(o);
        }
        let group = self.group_id.clone();
        let (r, _) = self
            .call(ApiKey::OffsetCommit, OFFSET_COMMIT, |version| {
                let mut req = OffsetCommitRequest::default();
                req.group_id = GroupId(s(&group));
                req.generation_id_or_member_epoch = generation;
                req.member_id = s(member_id);
                req.topics = by_topic
                    .iter()
                    .map(|(topic, parts)| {
                        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
                        t.name = TopicName(s(topic));
                        t.partitions = parts
                            .iter()
                            .map(|o| {
                                let mut p =
                                    offset_commit_request::OffsetCommitRequestPartition::default();
                                p.partition_index = o.tp.partition;
                                p.committed_offset = o.offset;
                                if version >= 6 {
                                    p.committed_leader_epoch = o.leader_epoch;
                                }
                                p
                            })
                            .collect();
                        t
                    })
                    .collect();
                req
            })
            .await?;
        for t in &r.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::broker(
                        p.error_code,
                        format!(
                            "commit offsets of group '{}' ({}-{})",
                            self.group_id, t.name.0, p.partition_index
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    /// OffsetFetch for `partitions`; `None` where nothing is committed.
    pub(crate) async fn fetch_committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<Committed>>> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic
                .entry(tp.topic.as_str())
                .or_default()
                .push(tp.partition);
        }
        let group = self.group_id.clone();
        let (r, version) = self
            .call(ApiKey::OffsetFetch, OFFSET_FETCH, |version| {
                let mut req = OffsetFetchRequest::default();
                if version >= 8 {
                    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                    g.group_id = GroupId(s(&group));
                    g.topics = Some(
                        by_topic
                            .iter()
                            .map(|(t, ps)| {
                                let mut x =
                                    offset_fetch_request::OffsetFetchRequestTopics::default();
                                x.name = TopicName(s(t));
                                x.partition_indexes = ps.clone();
                                x
                            })
                            .collect(),
                    );
                    req.groups = vec![g];
                } else {
                    req.group_id = GroupId(s(&group));
                    req.topics = Some(
                        by_topic
                            .iter()
                            .map(|(t, ps)| {
                                let mut x =
                                    offset_fetch_request::OffsetFetchRequestTopic::default();
                                x.name = TopicName(s(t));
                                x.partition_indexes = ps.clone();
                                x
                            })
                            .collect(),
                    );
                }
                req
            })
            .await?;
        let context = || format!("fetch committed offsets of group '{}'", self.group_id);
        let rows = offset_fetch_rows(r, version, &self.group_id).map_err(|f| match f {
            OffsetFetchFailure::MissingGroup => ClientError::Protocol {
                addr: self.addr.clone().unwrap_or_default(),
                message: "OffsetFetch response names no group".into(),
            },
            OffsetFetchFailure::Group(code) => ClientError::broker(code, context(), None),
        })?;
        let mut out: HashMap<TopicPartition, Option<Committed>> =
            partitions.iter().map(|tp| (tp.clone(), None)).collect();
        for row in rows {
            // UNKNOWN_TOPIC_OR_PARTITION here only means nothing was committed.
            if row.error_code != 0 && row.error_code != codes::UNKNOWN_TOPIC_OR_PARTITION {
                return Err(ClientError::broker(
                    row.error_code,
                    format!("{} ({}-{})", context(), row.topic, row.partition),
                    None,
                ));
            }
            if row.error_code == 0 && row.offset >= 0 {
                out.insert(
                    TopicPartition::new(row.topic, row.partition),
                    Some(Committed {
                        offset: row.offset,
                        leader_epoch: row.leader_epoch,
                    }),
                );
            }
        }
        Ok(out)
    }
}

fn leave_request(group: &str, member_id: &str, version: i16) -> LeaveGroupRequest {
    let mut req = LeaveGroupRequest::default();
    req.group_id = GroupId(s(group));
    if version >= 3 {
        let mut m = leave_group_request::MemberIdentity::default();
        m.member_id = s(member_id);
        if version >= 5 {
            m.reason = Some(StrBytes::from_static_str("the consumer is closing"));
        }
        req.members = vec![m];
    } else {
        req.member_id = s(member_id);
    }
    req
}

/// Settings of the heartbeat task.
#[derive(Debug, Clone)]
pub(crate) struct HeartbeatSettings {
    pub group_id: String,
    pub interval: Duration,
    pub session_timeout: Duration,
    pub max_poll_interval: Duration,
    pub retry_backoff: Duration,
    pub connection: ConnectionConfig,
}

/// What the heartbeat task knows of the member when it sends one heartbeat.
struct Snapshot {
    member_id: String,
    generation: i32,
    addr: String,
}

/// Sends a heartbeat every `interval` while the member is Stable; reports what the
/// coordinator says through `shared` and `wake`. Leaves the group (as the Java client does)
/// when `poll` has not been called for `max_poll_interval`. Runs until aborted.
pub(crate) async fn heartbeat_loop(
    settings: HeartbeatSettings,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
) {
    let mut conn: Option<Connection> = None;
    let mut last_ok = Instant::now();
    let mut delay = settings.interval;
    loop {
        tokio::time::sleep(delay).await;
        delay = settings.interval;
        let snap = {
            let mut s = lock(&shared);
            match (&s.state, &s.coordinator) {
                // Also while a rejoin is pending: until the application's next poll sends
                // JoinGroup, heartbeats (answered REBALANCE_IN_PROGRESS) keep the session.
                (MemberState::Stable, Some(addr)) => {
                    if s.last_poll.elapsed() > settings.max_poll_interval {
                        None
                    } else {
                        Some(Snapshot {
                            member_id: s.member_id.clone(),
                            generation: s.generation,
                            addr: addr.clone(),
                        })
                    }
                }
                (MemberState::Stable, None) => {
                    // The consumer is looking for the coordinator; past the session timeout
                    // the coordinator has expelled this member.
                    if last_ok.elapsed() > settings.session_timeout {
                        s.reset_member();
                        s.rejoin_needed = true;
                        s.partitions_lost = true;
                        wake.notify_one();
                    }
                    delay = settings.retry_backoff.max(Duration::from_millis(10));
                    continue;
                }
                _ => {
                    // Nothing to keep alive: the session starts over with the next join.
                    last_ok = Instant::now();
                    continue;
                }
            }
        };
        let Some(snap) = snap else {
            leave_on_poll_timeout(&settings, &shared, &wake, &mut conn).await;
            continue;
        };
        let result = send_heartbeat(&settings, &snap, &mut conn).await;
        let mut s = lock(&shared);
        if s.member_id != snap.member_id || s.generation != snap.generation {
            // The consumer rejoined meanwhile: this answer is about the old generation.
            continue;
        }
        match result {
            Ok(0) => last_ok = Instant::now(),
            Ok(codes::REBALANCE_IN_PROGRESS) => {
                last_ok = Instant::now();
                if !s.rejoin_needed {
                    s.rejoin_needed = true;
                    wake.notify_one();
                }
            }
            Ok(codes::ILLEGAL_GENERATION) => {
                s.generation = -1;
                s.state = MemberState::Unjoined;
                s.rejoin_needed = true;
                s.partitions_lost = true;
                wake.notify_one();
            }
            Ok(codes::UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID) => {
                s.reset_member();
                s.rejoin_needed = true;
                s.partitions_lost = true;
                wake.notify_one();
            }
            Ok(code) if is_coordinator_error(code) => {
                conn = None;
                s.coordinator_unknown = true;
                wake.notify_one();
                delay = settings.retry_backoff;
            }
            Ok(code) if crate::error::ErrorCode(code).is_retriable() => {
                delay = settings.retry_backoff;
            }
            Ok(code) => {
                s.fatal = Some(code);
                wake.notify_one();
            }
            Err(_) => {
                conn = None;
                delay = settings.retry_backoff.max(Duration::from_millis(10));
                if last_ok.elapsed() > settings.session_timeout {
                    // The coordinator has expelled us by now (or is gone).
                    s.coordinator_unknown = true;
                    s.reset_member();
                    s.rejoin_needed = true;
                    s.partitions_lost = true;
                    wake.notify_one();
                }
            }
        }
    }
}

async fn send_heartbeat(
    settings: &HeartbeatSettings,
    snap: &Snapshot,
    conn: &mut Option<Connection>,
) -> Result<i16> {
    if conn
        .as_ref()
        .is_none_or(|c| c.is_broken() || c.addr() != snap.addr)
    {
        *conn = Some(Connection::connect(&snap.addr, &settings.connection).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(ClientError::NotFound("no coordinator connection".into()));
    };
    let version = pick_version(c, ApiKey::Heartbeat, HEARTBEAT)?;
    let mut req = HeartbeatRequest::default();
    req.group_id = GroupId(s(&settings.group_id));
    req.generation_id = snap.generation;
    req.member_id = s(&snap.member_id);
    let r = c.call_at(&req, version).await?;
    Ok(r.error_code)
}

/// `poll` was not called within `max.poll.interval.ms`: leave the group so the others can
/// take the partitions, and mark them lost for the next `poll`.
async fn leave_on_poll_timeout(
    settings: &HeartbeatSettings,
    shared: &Mutex<Shared>,
    wake: &Notify,
    conn: &mut Option<Connection>,
) {
    let (member_id, addr) = {
        let s = lock(shared);
        (s.member_id.clone(), s.coordinator.clone())
    };
    tracing::warn!(
        group = %settings.group_id,
        "poll was not called within max.poll.interval.ms ({} ms): leaving the group",
        settings.max_poll_interval.as_millis()
    );
    if let Some(addr) = addr {
        let sent: Result<()> = async {
            if conn
                .as_ref()
                .is_none_or(|c| c.is_broken() || c.addr() != addr)
            {
                *conn = Some(Connection::connect(&addr, &settings.connection).await?);
            }
            if let Some(c) = conn.as_mut() {
                let version = pick_version(c, ApiKey::LeaveGroup, LEAVE_GROUP)?;
                let req = leave_request(&settings.group_id, &member_id, version);
                c.call_at(&req, version).await?;
            }
            Ok(())
        }
        .await;
        if sent.is_err() {
            *conn = None;
        }
    }
    let mut s = lock(shared);
    if s.member_id == member_id {
        s.reset_member();
        s.rejoin_needed = true;
        s.partitions_lost = true;
    }
    wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeBroker, Reply};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{
        ApiVersionsResponse, HeartbeatResponse, LeaveGroupResponse, ResponseKind,
    };

    fn versions() -> Reply {
        let mut r = ApiVersionsResponse::default();
        r.api_keys = [
            (ApiKey::ApiVersions, 0, 4),
            (ApiKey::Heartbeat, 0, 4),
            (ApiKey::LeaveGroup, 0, 5),
        ]
        .iter()
        .map(|&(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
        Reply::Response(ResponseKind::ApiVersions(r))
    }

    fn heartbeat(code: i16) -> Reply {
        let mut r = HeartbeatResponse::default();
        r.error_code = code;
        Reply::Response(ResponseKind::Heartbeat(r))
    }

    fn settings(max_poll_interval: Duration) -> HeartbeatSettings {
        HeartbeatSettings {
            group_id: "g".into(),
            interval: Duration::from_millis(20),
            session_timeout: Duration::from_secs(10),
            max_poll_interval,
            retry_backoff: Duration::from_millis(20),
            connection: ConnectionConfig::default(),
        }
    }

    fn stable(addr: &str) -> Arc<Mutex<Shared>> {
        let mut s = Shared::new();
        s.member_id = "m1".into();
        s.generation = 3;
        s.state = MemberState::Stable;
        s.coordinator = Some(addr.to_string());
        Arc::new(Mutex::new(s))
    }

    async fn until(shared: &Mutex<Shared>, cond: impl Fn(&Shared) -> bool) -> bool {
        for _ in 0..200 {
            if cond(&lock(shared)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn heartbeats_report_rebalances_and_expulsion() {
        let fake = FakeBroker::start(vec![
            versions(),
            heartbeat(0),
            heartbeat(codes::REBALANCE_IN_PROGRESS),
            heartbeat(codes::REBALANCE_IN_PROGRESS),
            heartbeat(codes::UNKNOWN_MEMBER_ID),
        ])
        .await;
        let shared = stable(&fake.addr);
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(heartbeat_loop(
            settings(Duration::from_secs(60)),
            Arc::clone(&shared),
            Arc::clone(&wake),
        ));
        assert!(until(&shared, |s| s.rejoin_needed).await);
        // Heartbeats go on while the rejoin waits for the next poll (they keep the session),
        // until the coordinator says the member is gone.
        assert!(until(&shared, |s| s.partitions_lost).await);
        {
            let s = lock(&shared);
            assert_eq!(s.state, MemberState::Unjoined);
            assert!(s.member_id.is_empty());
            assert_eq!(s.generation, -1);
        }
        task.abort();
        let seen = fake.requests().await;
        assert!(seen.iter().filter(|r| r.api_key == 12).count() >= 4);
    }

    #[tokio::test]
    async fn a_member_that_stops_polling_leaves() {
        let fake = FakeBroker::start(vec![
            versions(),
            Reply::Response(ResponseKind::LeaveGroup(LeaveGroupResponse::default())),
        ])
        .await;
        let shared = stable(&fake.addr);
        lock(&shared).last_poll = Instant::now() - Duration::from_secs(5);
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(heartbeat_loop(
            settings(Duration::from_secs(1)),
            Arc::clone(&shared),
            Arc::clone(&wake),
        ));
        assert!(until(&shared, |s| s.state == MemberState::Unjoined).await);
        assert!(lock(&shared).partitions_lost);
        task.abort();
        let seen = fake.requests().await;
        assert_eq!(
            seen.iter().map(|r| r.api_key).collect::<Vec<_>>(),
            vec![18, 13],
            "ApiVersions then LeaveGroup, no heartbeat"
        );
    }
}
