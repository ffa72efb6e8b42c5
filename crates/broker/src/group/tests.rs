//! Transition tests with a fake clock (plain integers).

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::*;
use crate::errors::NONE;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;
const G: &str = "g";

fn meta(client: &str) -> Bytes {
    Bytes::from(format!("sub-{client}"))
}

fn assignment(member: &str) -> Bytes {
    Bytes::from(format!("assign-{member}"))
}

fn args_with(group: &str, member: &str, client: &str, protocols: &[(&str, &str)]) -> JoinGroupArgs {
    JoinGroupArgs {
        group_id: group.to_string(),
        member_id: member.to_string(),
        group_instance_id: None,
        client_id: client.to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".to_string(),
        protocols: protocols
            .iter()
            .map(|(n, m)| Protocol::new(*n, Bytes::from(m.to_string())))
            .collect(),
    }
}

fn args(group: &str, member: &str, client: &str) -> JoinGroupArgs {
    let m = format!("sub-{client}");
    args_with(group, member, client, &[("range", m.as_str())])
}

fn now_join(o: Outcome<JoinResult>) -> JoinResult {
    match o {
        Outcome::Now(r) => r,
        Outcome::Parked => panic!("expected an immediate JoinGroup answer"),
    }
}

fn now_sync(o: Outcome<SyncResult>) -> SyncResult {
    match o {
        Outcome::Now(r) => r,
        Outcome::Parked => panic!("expected an immediate SyncGroup answer"),
    }
}

fn join_of(cs: &[Completion], token: u64) -> JoinResult {
    cs.iter()
        .find_map(|c| match (&c.response, c.token == token) {
            (CompletedResponse::Join(j), true) => Some(j.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no JoinGroup completion for token {token} in {cs:?}"))
}

fn sync_of(cs: &[Completion], token: u64) -> SyncResult {
    cs.iter()
        .find_map(|c| match (&c.response, c.token == token) {
            (CompletedResponse::Sync(s), true) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SyncGroup completion for token {token} in {cs:?}"))
}

/// The coordinator plus a token counter.
struct H {
    c: GroupCoordinator,
    token: u64,
}

impl H {
    fn new() -> H {
        H::with(GroupConfig::default())
    }

    fn with(cfg: GroupConfig) -> H {
        H {
            c: GroupCoordinator::new(cfg),
            token: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.token += 1;
        self.token
    }

    fn join(
        &mut self,
        a: JoinGroupArgs,
        version: i16,
        now: i64,
    ) -> (u64, Outcome<JoinResult>, Vec<Completion>) {
        let t = self.next();
        let (o, cs) = self.c.join_group(t, a, version, now);
        (t, o, cs)
    }

    /// A new dynamic member at v5: MEMBER_ID_REQUIRED, then the real join.
    fn join_new(
        &mut self,
        group: &str,
        client: &str,
        now: i64,
    ) -> (String, u64, Outcome<JoinResult>, Vec<Completion>) {
        let (_, o, cs) = self.join(args(group, "", client), 5, now);
        assert!(cs.is_empty());
        let r = now_join(o);
        assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
        let id = r.member_id;
        let (t, o, cs) = self.join(args(group, &id, client), 5, now);
        (id, t, o, cs)
    }

    fn sync(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> (u64, Outcome<SyncResult>, Vec<Completion>) {
        let t = self.next();
        let (o, cs) = self.c.sync_group(
            t,
            SyncGroupArgs {
                group_id: group.to_string(),
                generation_id: generation,
                member_id: member.to_string(),
                assignments,
                ..Default::default()
            },
            now,
        );
        (t, o, cs)
    }

    fn hb(&mut self, group: &str, member: &str, generation: i32, now: i64) -> i16 {
        self.c.heartbeat(
            HeartbeatArgs {
                group_id: group.to_string(),
                member_id: member.to_string(),
                group_instance_id: None,
                generation_id: generation,
            },
            now,
        )
    }

    /// Ticks at each deadline until the group reaches `state`; returns the completions and the
    /// time reached.
    fn run_until(
        &mut self,
        group: &str,
        state: GroupState,
        mut now: i64,
    ) -> (Vec<Completion>, i64) {
        let mut all = Vec::new();
        for _ in 0..100 {
            if self.c.state(group) == Some(state) {
                return (all, now);
            }
            now = self.c.next_deadline().expect("a deadline");
            all.extend(self.c.tick(now));
        }
        panic!("group never reached {state}");
    }

    /// Builds a Stable group of dynamic members (first client leads) at generation 1; every
    /// member gets `assign-<member id>`. Returns the member ids and the time reached.
    fn stable(&mut self, group: &str, clients: &[&str], t0: i64) -> (Vec<String>, i64) {
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        for c in clients {
            let (id, t, o, _) = self.join_new(group, c, t0);
            assert_eq!(o, Outcome::Parked);
            ids.push(id);
            tokens.push(t);
        }
        let (cs, now) = self.run_until(group, GroupState::CompletingRebalance, t0);
        for t in &tokens {
            assert_eq!(join_of(&cs, *t).generation_id, 1);
        }
        let generation = self.c.generation(group).expect("group");
        let mut parked = Vec::new();
        for id in &ids[1..] {
            let (t, o, cs) = self.sync(group, generation, id, Vec::new(), now);
            assert_eq!(o, Outcome::Parked);
            assert!(cs.is_empty());
            parked.push((id.clone(), t));
        }
        let all: Vec<(String, Bytes)> = ids.iter().map(|i| (i.clone(), assignment(i))).collect();
        let (_, o, cs) = self.sync(group, generation, &ids[0], all, now);
        assert_eq!(now_sync(o).assignment, assignment(&ids[0]));
        for (id, t) in parked {
            assert_eq!(sync_of(&cs, t).assignment, assignment(&id));
        }
        assert_eq!(self.c.state(group), Some(GroupState::Stable));
        (ids, now)
    }
}

#[test]
fn first_member_waits_for_the_initial_delay() {
    let mut h = H::new();
    let (_, o, _) = h.join(args(G, "", "client-a"), 5, 0);
    let r = now_join(o);
    assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
    assert!(r.member_id.starts_with("client-a-"), "{}", r.member_id);
    assert_eq!(h.c.state(G), Some(GroupState::Empty));

    let id = r.member_id;
    let (t, o, cs) = h.join(args(G, &id, "client-a"), 5, 100);
    assert_eq!(o, Outcome::Parked);
    assert!(cs.is_empty());
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    assert_eq!(h.c.next_deadline(), Some(100 + 3_000));

    assert!(h.c.tick(3_099).is_empty());
    let cs = h.c.tick(3_100);
    let j = join_of(&cs, t);
    assert_eq!(j.error_code, NONE);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, id);
    assert_eq!(j.member_id, id);
    assert_eq!(j.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert!(!j.skip_assignment);
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.members[0].metadata, meta("client-a"));
    assert_eq!(h.c.state(G), Some(GroupState::CompletingRebalance));
}

#[test]
fn members_joining_during_the_initial_delay_extend_it() {
    let mut h = H::new();
    let (a, ta, o, _) = h.join_new(G, "a", 0);
    assert_eq!(o, Outcome::Parked);
    let (b, tb, o, _) = h.join_new(G, "b", 1_000);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));

    // At 3000 a new member has arrived since the delay started: wait another delay.
    assert!(h.c.tick(3_000).is_empty());
    assert_eq!(h.c.next_deadline(), Some(6_000));
    let cs = h.c.tick(6_000);
    let ja = join_of(&cs, ta);
    let jb = join_of(&cs, tb);
    assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
    assert_eq!(ja.leader, a);
    assert_eq!(jb.leader, a);
    let listed: Vec<(&str, Bytes)> = ja
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), m.metadata.clone()))
        .collect();
    assert_eq!(
        listed,
        vec![(a.as_str(), meta("a")), (b.as_str(), meta("b"))]
    );
    assert!(jb.members.is_empty(), "followers get no member list");
}

#[test]
fn initial_delay_extension_is_bounded_by_the_rebalance_timeout() {
    let mut h = H::new();
    let joiner = |client: &str| {
        let mut a = args(G, "", client);
        a.rebalance_timeout_ms = 7_000;
        a
    };
    let (ta, o, _) = h.join(joiner("a"), 3, 0);
    assert_eq!(o, Outcome::Parked);
    // Delay 3000 (remaining 4000); a newcomer extends by 3000 (remaining 1000), another by
    // only 1000 (remaining 0); then the join phase ends whatever arrives.
    h.join(joiner("b"), 3, 2_900);
    assert!(h.c.tick(3_000).is_empty());
    assert_eq!(h.c.next_deadline(), Some(6_000));
    h.join(joiner("c"), 3, 5_900);
    assert!(h.c.tick(6_000).is_empty());
    assert_eq!(h.c.next_deadline(), Some(7_000));
    h.join(joiner("d"), 3, 6_900);
    let cs = h.c.tick(7_000);
    let j = join_of(&cs, ta);
    assert_eq!(j.members.len(), 4);
    assert_eq!(h.c.state(G), Some(GroupState::CompletingRebalance));
}

#[test]
fn leader_sync_completes_parked_followers() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b", "c"], 0);
    assert_eq!(h.c.take_dirty(), vec![G.to_string()]);
    assert!(h.c.take_dirty().is_empty());
    let snap = h.c.group_snapshot(G).expect("snapshot");
    assert_eq!(snap.generation_id, 1);
    assert_eq!(snap.protocol.as_deref(), Some("range"));
    assert_eq!(snap.leader.as_deref(), Some(ids[0].as_str()));
    assert_eq!(snap.members.len(), 3);
    for (m, id) in snap.members.iter().zip(&ids) {
        assert_eq!(&m.member_id, id);
        assert_eq!(m.assignment, assignment(id));
    }
    // A Stable group answers SyncGroup at once with the current assignment.
    let (_, o, _) = h.sync(G, 1, &ids[1], Vec::new(), now + 10);
    let s = now_sync(o);
    assert_eq!(s.error_code, NONE);
    assert_eq!(s.assignment, assignment(&ids[1]));
    assert_eq!(s.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(s.protocol_name.as_deref(), Some("range"));
}

#[test]
fn leader_assignment_missing_a_member_gives_it_an_empty_assignment() {
    let mut h = H::new();
    let (a, _, _, _) = h.join_new(G, "a", 0);
    let (b, _, _, _) = h.join_new(G, "b", 0);
    let (_, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let (tb, o, _) = h.sync(G, 1, &b, Vec::new(), now);
    assert_eq!(o, Outcome::Parked);
    let (_, o, cs) = h.sync(G, 1, &a, vec![(a.clone(), assignment(&a))], now);
    assert_eq!(now_sync(o).assignment, assignment(&a));
    let sb = sync_of(&cs, tb);
    assert_eq!(sb.error_code, NONE);
    assert!(sb.assignment.is_empty());
}

#[test]
fn heartbeat_during_rebalance_says_rebalance_in_progress() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b"], 0);
    assert_eq!(h.hb(G, &ids[1], 1, now), NONE);
    // A third member joins the stable group: rebalance.
    let (c, tc, o, _) = h.join_new(G, "c", now + 1);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.hb(G, &ids[0], 1, now + 2),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(
        h.hb(G, &ids[1], 1, now + 2),
        ResponseError::RebalanceInProgress.code()
    );
    // SyncGroup in PreparingRebalance is refused the same way.
    let (_, o, _) = h.sync(G, 1, &ids[1], Vec::new(), now + 2);
    assert_eq!(
        now_sync(o).error_code,
        ResponseError::RebalanceInProgress.code()
    );

    let (ta, o, _) = h.join(args(G, &ids[0], "a"), 5, now + 3);
    assert_eq!(o, Outcome::Parked);
    // The last member to rejoin completes the join phase at once (no initial delay now).
    let (_, o, cs) = h.join(args(G, &ids[1], "b"), 5, now + 4);
    let jb = now_join(o);
    assert_eq!(jb.generation_id, 2);
    assert!(jb.members.is_empty());
    let ja = join_of(&cs, ta);
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.leader, ids[0]);
    assert_eq!(ja.members.len(), 3);
    assert_eq!(join_of(&cs, tc).member_id, c);
    assert_eq!(h.c.state(G), Some(GroupState::CompletingRebalance));
    // Heartbeats of the new generation are fine while completing the rebalance.
    assert_eq!(h.hb(G, &c, 2, now + 5), NONE);
}

#[test]
fn session_expiry_removes_the_member_and_rebalances_the_rest() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b"], 0);
    let (a, b) = (ids[0].clone(), ids[1].clone());
    assert_eq!(h.c.next_deadline(), Some(now + i64::from(SESSION)));
    // a keeps heartbeating, b goes silent.
    assert_eq!(h.hb(G, &a, 1, now + 5_000), NONE);
    assert_eq!(h.hb(G, &b, 1, now + 6_000), NONE);
    assert_eq!(h.hb(G, &a, 1, now + 10_000), NONE);
    assert_eq!(h.c.next_deadline(), Some(now + 16_000));
    assert!(h.c.tick(now + 15_999).is_empty());
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
    assert!(h.c.tick(now + 16_000).is_empty());
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.hb(G, &b, 1, now + 16_001),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        h.hb(G, &a, 1, now + 16_001),
        ResponseError::RebalanceInProgress.code()
    );
    let (_, o, _) = h.join(args(G, &a, "a"), 5, now + 16_002);
    let j = now_join(o);
    assert_eq!(j.generation_id, 2);
    assert_eq!(j.leader, a);
    assert_eq!(j.members.len(), 1);
}

#[test]
fn last_member_expiring_empties_the_group() {
    let mut h = H::new();
    let (_, now) = h.stable(G, &["a"], 0);
    h.c.take_dirty();
    h.c.tick(now + i64::from(SESSION));
    assert_eq!(h.c.state(G), Some(GroupState::Empty));
    assert_eq!(h.c.generation(G), Some(2));
    assert_eq!(h.c.take_dirty(), vec![G.to_string()]);
    let snap = h.c.group_snapshot(G).expect("snapshot");
    assert!(snap.members.is_empty());
    assert_eq!(snap.protocol, None);
    assert_eq!(snap.generation_id, 2);
    assert_eq!(h.c.next_deadline(), None);
}

#[test]
fn rebalance_timeout_removes_members_that_did_not_rejoin() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b"], 0);
    let (a, b) = (ids[0].clone(), ids[1].clone());
    // The leader rejoins: rebalance. b keeps heartbeating but never rejoins.
    let (ta, o, _) = h.join(args(G, &a, "a"), 5, now);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    let deadline = now + i64::from(REBALANCE);
    let mut t = now;
    while t + 5_000 < deadline {
        t += 5_000;
        assert_eq!(h.hb(G, &b, 1, t), ResponseError::RebalanceInProgress.code());
        assert!(h.c.tick(t).is_empty());
    }
    assert_eq!(h.c.next_deadline(), Some(deadline));
    let cs = h.c.tick(deadline);
    let ja = join_of(&cs, ta);
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.members.len(), 1);
    assert_eq!(ja.members[0].member_id, a);
    assert_eq!(
        h.hb(G, &b, 1, deadline + 1),
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn pending_member_id_expires_after_the_session_timeout() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a"], 0);
    let (_, o, _) = h.join(args(G, "", "p"), 4, now);
    let p = now_join(o);
    assert_eq!(p.error_code, ResponseError::MemberIdRequired.code());
    assert_eq!(p.generation_id, -1);
    // The leader rejoins; the join phase waits for the pending member too.
    let (ta, o, _) = h.join(args(G, &ids[0], "a"), 4, now + 1);
    assert_eq!(o, Outcome::Parked);
    let expiry = now + i64::from(SESSION);
    assert_eq!(h.c.next_deadline(), Some(expiry));
    let cs = h.c.tick(expiry);
    let ja = join_of(&cs, ta);
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.members.len(), 1);
    // The expired id is no longer accepted.
    let (_, o, _) = h.join(args(G, &p.member_id, "p"), 4, expiry + 1);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn join_before_v4_needs_no_member_id_round_trip() {
    let mut h = H::new();
    let (t, o, _) = h.join(args(G, "", "old"), 3, 0);
    assert_eq!(o, Outcome::Parked);
    let cs = h.c.tick(3_000);
    let j = join_of(&cs, t);
    assert_eq!(j.error_code, NONE);
    assert!(j.member_id.starts_with("old-"));
    assert_eq!(j.leader, j.member_id);
}

#[test]
fn join_v0_uses_the_session_timeout_as_rebalance_timeout() {
    let mut h = H::new();
    let mut a = args(G, "", "a");
    a.rebalance_timeout_ms = 999_999;
    let (t, o, _) = h.join(a, 0, 0);
    assert_eq!(o, Outcome::Parked);
    let cs = h.c.tick(3_000);
    let id = join_of(&cs, t).member_id;
    h.sync(G, 1, &id, Vec::new(), 3_000);
    let snap = h.c.group_snapshot(G).expect("snapshot");
    assert_eq!(snap.members[0].rebalance_timeout_ms, SESSION);
    assert_eq!(snap.members[0].session_timeout_ms, SESSION);
}

#[test]
fn unknown_members_are_refused() {
    let mut h = H::new();
    // Unknown group with a member id: refused, and no group is created.
    let (_, o, _) = h.join(args(G, "ghost", "x"), 5, 0);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(h.c.state(G), None);
    assert_eq!(
        h.hb(G, "ghost", 0, 0),
        ResponseError::UnknownMemberId.code()
    );
    let (_, o, _) = h.sync(G, 0, "ghost", Vec::new(), 0);
    assert_eq!(
        now_sync(o).error_code,
        ResponseError::UnknownMemberId.code()
    );

    let (_, now) = h.stable(G, &["a"], 0);
    let (_, o, _) = h.join(args(G, "ghost", "x"), 5, now);
    let r = now_join(o);
    assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
    assert_eq!(r.member_id, "ghost");
    assert_eq!(
        h.hb(G, "ghost", 1, now),
        ResponseError::UnknownMemberId.code()
    );
    let (_, o, _) = h.sync(G, 1, "ghost", Vec::new(), now);
    assert_eq!(
        now_sync(o).error_code,
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn wrong_generation_is_illegal() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b"], 0);
    assert_eq!(
        h.hb(G, &ids[1], 0, now),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        h.hb(G, &ids[1], 2, now),
        ResponseError::IllegalGeneration.code()
    );
    let (_, o, _) = h.sync(G, 7, &ids[1], Vec::new(), now);
    assert_eq!(
        now_sync(o).error_code,
        ResponseError::IllegalGeneration.code()
    );
}

#[test]
fn request_validation() {
    let mut h = H::new();
    let (_, o, _) = h.join(args("", "", "a"), 5, 0);
    assert_eq!(now_join(o).error_code, ResponseError::InvalidGroupId.code());
    let mut a = args(G, "", "a");
    a.session_timeout_ms = 5_999;
    let (_, o, _) = h.join(a.clone(), 5, 0);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
    a.session_timeout_ms = 1_800_001;
    let (_, o, _) = h.join(a, 5, 0);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
    assert_eq!(h.c.state(G), None);
    assert_eq!(h.hb("", "m", 0, 0), ResponseError::InvalidGroupId.code());
    let (_, o, _) = h.sync("", 0, "m", Vec::new(), 0);
    assert_eq!(now_sync(o).error_code, ResponseError::InvalidGroupId.code());
    let (l, _) = h.c.leave_group("", vec![LeaveMember::default()], 0);
    assert_eq!(l.error_code, ResponseError::InvalidGroupId.code());
}

#[test]
fn leave_group_single_member() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b"], 0);
    h.c.take_dirty();
    let (l, cs) = h.c.leave_group(
        G,
        vec![LeaveMember {
            member_id: ids[1].clone(),
            group_instance_id: None,
        }],
        now,
    );
    assert!(cs.is_empty());
    assert_eq!(l.error_code, NONE);
    assert_eq!(l.members.len(), 1);
    assert_eq!(l.members[0].error_code, NONE);
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.hb(G, &ids[0], 1, now),
        ResponseError::RebalanceInProgress.code()
    );
    let (_, o, _) = h.join(args(G, &ids[0], "a"), 5, now + 1);
    let j = now_join(o);
    assert_eq!(j.generation_id, 2);
    assert_eq!(j.members.len(), 1);

    // Unknown member, and unknown group.
    let (l, _) = h.c.leave_group(
        G,
        vec![LeaveMember {
            member_id: ids[1].clone(),
            group_instance_id: None,
        }],
        now + 2,
    );
    assert_eq!(
        (l.error_code, l.members[0].error_code),
        (NONE, ResponseError::UnknownMemberId.code())
    );
    let (l, _) = h.c.leave_group(
        "nope",
        vec![LeaveMember {
            member_id: "x".into(),
            group_instance_id: None,
        }],
        now + 2,
    );
    assert_eq!(
        (l.error_code, l.members[0].error_code),
        (NONE, ResponseError::UnknownMemberId.code())
    );

    // The last member leaving empties the group (new generation, persisted).
    let (_, o, _) = h.sync(
        G,
        2,
        &ids[0],
        vec![(ids[0].clone(), assignment(&ids[0]))],
        now + 3,
    );
    assert_eq!(now_sync(o).error_code, NONE);
    h.c.take_dirty();
    let (l, _) = h.c.leave_group(
        G,
        vec![LeaveMember {
            member_id: ids[0].clone(),
            group_instance_id: None,
        }],
        now + 4,
    );
    assert_eq!(l.members[0].error_code, NONE);
    assert_eq!(h.c.state(G), Some(GroupState::Empty));
    assert_eq!(h.c.generation(G), Some(3));
    assert_eq!(h.c.take_dirty(), vec![G.to_string()]);
}

fn static_args(member: &str, instance: &str) -> JoinGroupArgs {
    let mut a = args(G, member, instance);
    a.group_instance_id = Some(instance.to_string());
    a
}

/// A Stable group of static members `instances` (first leads), at generation 1.
fn static_stable(h: &mut H, instances: &[&str]) -> (Vec<String>, i64) {
    let mut tokens = Vec::new();
    for i in instances {
        let (t, o, _) = h.join(static_args("", i), 5, 0);
        assert_eq!(o, Outcome::Parked, "static members skip MEMBER_ID_REQUIRED");
        tokens.push(t);
    }
    let (cs, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let ids: Vec<String> = tokens.iter().map(|t| join_of(&cs, *t).member_id).collect();
    for (id, i) in ids.iter().zip(instances) {
        assert!(id.starts_with(&format!("{i}-")), "{id}");
    }
    let all: Vec<(String, Bytes)> = ids.iter().map(|i| (i.clone(), assignment(i))).collect();
    for id in ids.iter().skip(1) {
        h.sync(G, 1, id, Vec::new(), now);
    }
    let (_, o, _) = h.sync(G, 1, &ids[0], all, now);
    assert_eq!(now_sync(o).error_code, NONE);
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
    (ids, now)
}

#[test]
fn leave_group_batched_with_instance_ids() {
    let mut h = H::new();
    let (ids, now) = static_stable(&mut h, &["i-a", "i-b", "i-c"]);
    let (l, _) = h.c.leave_group(
        G,
        vec![
            // Admin removal by instance id only.
            LeaveMember {
                member_id: String::new(),
                group_instance_id: Some("i-b".into()),
            },
            // Member id and instance id that match.
            LeaveMember {
                member_id: ids[2].clone(),
                group_instance_id: Some("i-c".into()),
            },
            // Unknown instance.
            LeaveMember {
                member_id: String::new(),
                group_instance_id: Some("i-z".into()),
            },
            // Instance held by another member id: fenced.
            LeaveMember {
                member_id: "impostor".into(),
                group_instance_id: Some("i-a".into()),
            },
        ],
        now,
    );
    assert_eq!(l.error_code, NONE);
    let codes: Vec<i16> = l.members.iter().map(|m| m.error_code).collect();
    assert_eq!(
        codes,
        vec![
            NONE,
            NONE,
            ResponseError::UnknownMemberId.code(),
            ResponseError::FencedInstanceId.code()
        ]
    );
    assert_eq!(l.members[0].group_instance_id.as_deref(), Some("i-b"));
    let d = h.c.describe(G).expect("group");
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, ids[0]);
}

#[test]
fn static_member_restart_keeps_its_assignment_without_rebalance() {
    let mut h = H::new();
    let (ids, now) = static_stable(&mut h, &["i-a", "i-b"]);
    h.c.take_dirty();
    let old_b = ids[1].clone();

    // i-b restarts: empty member id, same instance id and subscription.
    let (_, o, cs) = h.join(static_args("", "i-b"), 5, now + 100);
    assert!(cs.is_empty());
    let j = now_join(o);
    assert_eq!(j.error_code, NONE);
    assert_ne!(j.member_id, old_b);
    assert!(j.member_id.starts_with("i-b-"));
    assert_eq!(j.generation_id, 1, "no rebalance");
    assert_eq!(j.leader, ids[0]);
    assert!(j.members.is_empty());
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
    let new_b = j.member_id;

    // It syncs with the new id and gets its old assignment back.
    let (_, o, _) = h.sync(G, 1, &new_b, Vec::new(), now + 101);
    let s = now_sync(o);
    assert_eq!(s.error_code, NONE);
    assert_eq!(s.assignment, assignment(&old_b));

    // The old member id is fenced when it names the instance, unknown otherwise.
    let fenced = h.c.heartbeat(
        HeartbeatArgs {
            group_id: G.into(),
            member_id: old_b.clone(),
            group_instance_id: Some("i-b".into()),
            generation_id: 1,
        },
        now + 102,
    );
    assert_eq!(fenced, ResponseError::FencedInstanceId.code());
    assert_eq!(
        h.hb(G, &old_b, 1, now + 102),
        ResponseError::UnknownMemberId.code()
    );
    let (_, o, _) = h.join(static_args(&old_b, "i-b"), 5, now + 102);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::FencedInstanceId.code()
    );
    let commit = h.c.validate_offset_commit(
        &OffsetCommitArgs {
            group_id: G.into(),
            generation_id: 1,
            member_id: old_b.clone(),
            group_instance_id: Some("i-b".into()),
        },
        8,
        now + 102,
    );
    assert_eq!(commit, ResponseError::FencedInstanceId.code());

    // The replacement is persisted.
    assert_eq!(h.c.take_dirty(), vec![G.to_string()]);
    let snap = h.c.group_snapshot(G).expect("snapshot");
    assert!(snap.members.iter().any(|m| m.member_id == new_b
        && m.group_instance_id.as_deref() == Some("i-b")
        && m.assignment == assignment(&old_b)));
    assert!(snap.members.iter().all(|m| m.member_id != old_b));
}

#[test]
fn static_leader_restart_at_v9_is_told_to_skip_assignment() {
    let mut h = H::new();
    let (ids, now) = static_stable(&mut h, &["i-a", "i-b"]);
    // Before v9 the old leader id comes back so the new leader does not assign.
    let (_, o, _) = h.join(static_args("", "i-a"), 8, now + 1);
    let j8 = now_join(o);
    assert_eq!(j8.leader, ids[0]);
    assert!(j8.members.is_empty());
    assert!(!j8.skip_assignment);
    // At v9 the (new) leader gets the members and skip_assignment.
    let (_, o, _) = h.join(static_args("", "i-a"), 9, now + 2);
    let j9 = now_join(o);
    assert_eq!(j9.generation_id, 1);
    assert_eq!(j9.leader, j9.member_id);
    assert!(j9.skip_assignment);
    assert_eq!(j9.members.len(), 2);
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
}

#[test]
fn static_member_restart_with_a_new_protocol_rebalances() {
    let mut h = H::new();
    let both = [("range", "r"), ("roundrobin", "rr")];
    let mut tokens = Vec::new();
    for i in ["i-a", "i-b"] {
        let mut a = args_with(G, "", i, &both);
        a.group_instance_id = Some(i.to_string());
        let (t, _, _) = h.join(a, 5, 0);
        tokens.push(t);
    }
    let (cs, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let ids: Vec<String> = tokens.iter().map(|t| join_of(&cs, *t).member_id).collect();
    assert_eq!(
        join_of(&cs, tokens[0]).protocol_name.as_deref(),
        Some("range")
    );
    h.sync(G, 1, &ids[1], Vec::new(), now);
    let all = ids.iter().map(|i| (i.clone(), assignment(i))).collect();
    h.sync(G, 1, &ids[0], all, now);
    assert_eq!(h.c.state(G), Some(GroupState::Stable));

    // i-b comes back preferring roundrobin: one vote each, the tie keeps range (the first
    // member's vote): no rebalance.
    let mut b = args_with(G, "", "i-b", &[("roundrobin", "rr2"), ("range", "r2")]);
    b.group_instance_id = Some("i-b".into());
    let (_, o, _) = h.join(b, 5, now);
    let jb = now_join(o);
    assert_eq!(jb.generation_id, 1);
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
    // i-a comes back preferring roundrobin too: the selection would change, so rebalance.
    let mut a = args_with(G, "", "i-a", &[("roundrobin", "rr3"), ("range", "r3")]);
    a.group_instance_id = Some("i-a".into());
    let (ta, o, _) = h.join(a, 5, now + 1);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    // Static members are not dropped at the rebalance timeout (only dynamic ones are); i-b
    // keeps its session alive but does not rejoin.
    for k in 1..6 {
        let t = now + k * 5_000;
        assert_eq!(
            h.hb(G, &jb.member_id, 1, t),
            ResponseError::RebalanceInProgress.code()
        );
        assert!(h.c.tick(t).is_empty());
    }
    let cs = h.c.tick(now + 1 + i64::from(REBALANCE));
    let ja = join_of(&cs, ta);
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.protocol_name.as_deref(), Some("roundrobin"));
    let metas: Vec<Bytes> = ja.members.iter().map(|m| m.metadata.clone()).collect();
    assert_eq!(metas, vec![Bytes::from("rr3"), Bytes::from("rr2")]);
    assert_ne!(ja.members[0].member_id, ids[0]);
}

#[test]
fn static_member_session_expiry_removes_it() {
    let mut h = H::new();
    let (ids, now) = static_stable(&mut h, &["i-a", "i-b"]);
    h.hb(G, &ids[0], 1, now + 9_000);
    h.c.tick(now + i64::from(SESSION));
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    let d = h.c.describe(G).expect("group");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].group_instance_id.as_deref(), Some("i-a"));
    // The instance id is free again: a new i-b joins as a new member.
    let (t, o, _) = h.join(static_args("", "i-b"), 5, now + 10_001);
    assert_eq!(o, Outcome::Parked);
    let (_, o, cs) = h.join(static_args(&ids[0], "i-a"), 5, now + 10_002);
    let ja = now_join(o);
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.members.len(), 2);
    assert_eq!(join_of(&cs, t).generation_id, 2);
}

#[test]
fn protocol_selection_by_votes_among_common_protocols() {
    let mut h = H::new();
    let p = |list: &[(&'static str, &'static str)]| list.to_vec();
    let members = [
        ("a", p(&[("range", "1"), ("roundrobin", "2")])),
        (
            "b",
            p(&[("roundrobin", "3"), ("range", "4"), ("sticky", "5")]),
        ),
        ("c", p(&[("roundrobin", "6"), ("range", "7")])),
    ];
    let mut tokens = Vec::new();
    for (client, protocols) in &members {
        let (t, o, _) = h.join(args_with(G, "", client, protocols), 3, 0);
        assert_eq!(o, Outcome::Parked);
        tokens.push(t);
    }
    let (cs, _) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let leader = join_of(&cs, tokens[0]);
    // Common: range, roundrobin; votes: range 1, roundrobin 2.
    assert_eq!(leader.protocol_name.as_deref(), Some("roundrobin"));
    let metas: Vec<Bytes> = leader.members.iter().map(|m| m.metadata.clone()).collect();
    assert_eq!(
        metas,
        vec![Bytes::from("2"), Bytes::from("3"), Bytes::from("6")]
    );

    // Nothing in common with every member, or another protocol type: refused.
    let (_, o, _) = h.join(args_with(G, "", "d", &[("sticky", "8")]), 3, 1);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let mut e = args(G, "", "e");
    e.protocol_type = "connect".into();
    let (_, o, _) = h.join(e, 3, 1);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    // A new group needs a protocol type and at least one protocol.
    let (_, o, _) = h.join(args_with("other", "", "f", &[]), 3, 1);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let mut f = args("other", "", "f");
    f.protocol_type = String::new();
    let (_, o, _) = h.join(f, 3, 1);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    assert_eq!(
        h.c.state("other"),
        None,
        "a refused first join leaves no group behind"
    );
}

#[test]
fn protocol_selection_majority_of_preferences() {
    let mut h = H::new();
    let lists = [
        vec![("range", "a"), ("roundrobin", "a")],
        vec![("range", "b"), ("roundrobin", "b")],
        vec![("roundrobin", "c"), ("range", "c")],
    ];
    let mut first = None;
    for (i, l) in lists.iter().enumerate() {
        let (t, _, _) = h.join(args_with(G, "", &format!("m{i}"), l), 3, 0);
        first.get_or_insert(t);
    }
    let (cs, _) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let j = join_of(&cs, first.expect("token"));
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
}

#[test]
fn sync_checks_protocol_type_and_name() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a"], 0);
    let base = SyncGroupArgs {
        group_id: G.into(),
        generation_id: 1,
        member_id: ids[0].clone(),
        ..Default::default()
    };
    let mut wrong_type = base.clone();
    wrong_type.protocol_type = Some("connect".into());
    let (o, _) = h.c.sync_group(100, wrong_type, now);
    assert_eq!(
        now_sync(o).error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let mut wrong_name = base.clone();
    wrong_name.protocol_name = Some("roundrobin".into());
    let (o, _) = h.c.sync_group(101, wrong_name, now);
    assert_eq!(
        now_sync(o).error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let mut right = base;
    right.protocol_type = Some("consumer".into());
    right.protocol_name = Some("range".into());
    let (o, _) = h.c.sync_group(102, right, now);
    assert_eq!(now_sync(o).error_code, NONE);
}

#[test]
fn rebalance_during_completing_rebalance_answers_parked_syncs() {
    let mut h = H::new();
    let (a, _, _, _) = h.join_new(G, "a", 0);
    let (b, _, _, _) = h.join_new(G, "b", 0);
    let (_, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let (tb, o, _) = h.sync(G, 1, &b, Vec::new(), now);
    assert_eq!(o, Outcome::Parked);
    // The leader leaves before assigning: b is told to rejoin.
    let (_, cs) = h.c.leave_group(
        G,
        vec![LeaveMember {
            member_id: a.clone(),
            group_instance_id: None,
        }],
        now + 1,
    );
    let sb = sync_of(&cs, tb);
    assert_eq!(sb.error_code, ResponseError::RebalanceInProgress.code());
    assert!(sb.assignment.is_empty());
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    let (_, o, _) = h.join(args(G, &b, "b"), 5, now + 2);
    let j = now_join(o);
    assert_eq!(j.generation_id, 2);
    assert_eq!(j.leader, b);
}

#[test]
fn rejoin_with_same_metadata_in_completing_rebalance_repeats_the_answer() {
    let mut h = H::new();
    let (a, _, _, _) = h.join_new(G, "a", 0);
    let (b, _, _, _) = h.join_new(G, "b", 0);
    let (_, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let (_, o, _) = h.join(args(G, &a, "a"), 5, now);
    let ja = now_join(o);
    assert_eq!((ja.generation_id, ja.members.len()), (1, 2));
    let (_, o, _) = h.join(args(G, &b, "b"), 5, now);
    let jb = now_join(o);
    assert_eq!((jb.generation_id, jb.members.len()), (1, 0));
    assert_eq!(h.c.state(G), Some(GroupState::CompletingRebalance));
    // Changed metadata forces a new rebalance.
    let mut changed = args(G, &b, "b");
    changed.protocols = vec![Protocol::new("range", "new")];
    let (_, o, _) = h.join(changed, 5, now + 1);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
}

#[test]
fn stable_follower_rejoin_with_same_metadata_needs_no_rebalance() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b"], 0);
    let (_, o, _) = h.join(args(G, &ids[1], "b"), 5, now);
    let j = now_join(o);
    assert_eq!((j.error_code, j.generation_id), (NONE, 1));
    assert_eq!(j.leader, ids[0]);
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
}

#[test]
fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
    let mut h = H::new();
    let (a, _, _, _) = h.join_new(G, "a", 0);
    let (b, _, _, _) = h.join_new(G, "b", 0);
    let (_, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let (_, o, _) = h.sync(G, 1, &a, vec![(a.clone(), assignment(&a))], now);
    assert_eq!(now_sync(o).error_code, NONE);
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
    // b got its JoinGroup answer but never sends SyncGroup (it heartbeats, though).
    h.hb(G, &b, 1, now + 5_000);
    h.hb(G, &a, 1, now + 5_000);
    h.hb(G, &a, 1, now + 14_000);
    h.hb(G, &b, 1, now + 14_000);
    h.hb(G, &a, 1, now + 23_000);
    h.hb(G, &b, 1, now + 23_000);
    h.c.tick(now + i64::from(REBALANCE) - 1);
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
    h.c.tick(now + i64::from(REBALANCE));
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.hb(G, &b, 1, now + 30_001),
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn a_superseded_parked_request_is_answered() {
    let mut h = H::new();
    let (a, ta, _, _) = h.join_new(G, "a", 0);
    // The same member joins again (another connection): the first one is released.
    let (ta2, o, cs) = h.join(args(G, &a, "a"), 5, 10);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(
        join_of(&cs, ta).error_code,
        ResponseError::RebalanceInProgress.code()
    );
    let cs = h.c.tick(3_000);
    assert_eq!(join_of(&cs, ta2).generation_id, 1);
}

#[test]
fn group_max_size() {
    let mut h = H::with(GroupConfig {
        max_size: 1,
        ..GroupConfig::default()
    });
    let (_, _, o, _) = h.join_new(G, "a", 0);
    assert_eq!(o, Outcome::Parked);
    let (_, o, _) = h.join(args(G, "", "b"), 3, 1);
    let r = now_join(o);
    assert_eq!(r.error_code, ResponseError::GroupMaxSizeReached.code());
    assert_eq!(r.member_id, "");
}

#[test]
fn delete_group_rules() {
    let mut h = H::new();
    assert_eq!(
        h.c.delete_group("nope"),
        ResponseError::GroupIdNotFound.code()
    );
    let (ids, now) = h.stable(G, &["a"], 0);
    assert_eq!(h.c.delete_group(G), ResponseError::NonEmptyGroup.code());
    h.c.leave_group(
        G,
        vec![LeaveMember {
            member_id: ids[0].clone(),
            group_instance_id: None,
        }],
        now,
    );
    assert_eq!(h.c.state(G), Some(GroupState::Empty));
    h.c.take_dirty();
    assert_eq!(h.c.delete_group(G), NONE);
    assert_eq!(h.c.state(G), None);
    assert_eq!(h.c.take_dirty(), vec![G.to_string()]);
    assert_eq!(h.c.group_snapshot(G), None, "tombstone");
    assert_eq!(h.c.delete_group(G), ResponseError::GroupIdNotFound.code());
}

#[test]
fn offset_commit_validation() {
    let mut h = H::new();
    let commit = |generation_id: i32, member: &str| OffsetCommitArgs {
        group_id: G.into(),
        generation_id,
        member_id: member.into(),
        group_instance_id: None,
    };
    // Unknown group with a generation: refused (v9+ says the group is not found).
    assert_eq!(
        h.c.validate_offset_commit(&commit(3, "m"), 8, 0),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        h.c.validate_offset_commit(&commit(3, "m"), 9, 0),
        ResponseError::GroupIdNotFound.code()
    );
    assert_eq!(h.c.state(G), None);
    // Standalone commit: creates an Empty "simple" group.
    assert_eq!(h.c.validate_offset_commit(&commit(-1, ""), 8, 0), NONE);
    assert_eq!(
        h.c.list(&[]),
        vec![GroupListing {
            group_id: G.into(),
            protocol_type: String::new(),
            state: GroupState::Empty,
        }]
    );
    assert_eq!(h.c.validate_offset_commit(&commit(-1, ""), 8, 1), NONE);
    // Empty group, member fields set: unknown member.
    assert_eq!(
        h.c.validate_offset_commit(&commit(0, "m"), 8, 1),
        ResponseError::UnknownMemberId.code()
    );

    // A managed group: the commit must come from a member of the current generation.
    let (a, _, _, _) = h.join_new(G, "a", 10);
    let (_, now) = h.run_until(G, GroupState::CompletingRebalance, 10);
    assert_eq!(
        h.c.validate_offset_commit(&commit(1, &a), 8, now),
        ResponseError::RebalanceInProgress.code()
    );
    h.sync(G, 1, &a, vec![(a.clone(), assignment(&a))], now);
    assert_eq!(
        h.c.validate_offset_commit(&commit(-1, ""), 8, now),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        h.c.validate_offset_commit(&commit(1, "x"), 8, now),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        h.c.validate_offset_commit(&commit(0, &a), 8, now),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(h.c.validate_offset_commit(&commit(1, &a), 8, now), NONE);
    // A commit keeps the session alive like a heartbeat.
    let later = now + 9_000;
    assert_eq!(h.c.validate_offset_commit(&commit(1, &a), 8, later), NONE);
    assert_eq!(h.c.next_deadline(), Some(later + i64::from(SESSION)));
    h.c.tick(now + i64::from(SESSION));
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
    // Commits are still accepted during PreparingRebalance.
    h.join_new(G, "b", later + 1);
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.c.validate_offset_commit(&commit(1, &a), 8, later + 2),
        NONE
    );
}

#[test]
fn list_and_describe() {
    let mut h = H::new();
    let (ids, now) = h.stable("stable-g", &["a", "b"], 0);
    h.join_new("preparing-g", "c", now);
    h.c.validate_offset_commit(
        &OffsetCommitArgs {
            group_id: "empty-g".into(),
            generation_id: -1,
            ..Default::default()
        },
        8,
        now,
    );
    let names = |l: Vec<GroupListing>| -> Vec<(String, &'static str)> {
        l.into_iter()
            .map(|g| (g.group_id, g.state.as_str()))
            .collect()
    };
    assert_eq!(
        names(h.c.list(&[])),
        vec![
            ("empty-g".to_string(), "Empty"),
            ("preparing-g".to_string(), "PreparingRebalance"),
            ("stable-g".to_string(), "Stable"),
        ]
    );
    assert_eq!(
        names(h.c.list(&["stable".into()])),
        vec![("stable-g".to_string(), "Stable")]
    );
    assert_eq!(
        names(h.c.list(&["Empty".into(), "PREPARINGREBALANCE".into()])),
        vec![
            ("empty-g".to_string(), "Empty"),
            ("preparing-g".to_string(), "PreparingRebalance"),
        ]
    );
    assert!(h.c.list(&["Dead".into()]).is_empty());

    let d = h.c.describe("stable-g").expect("group");
    assert_eq!(d.state.as_str(), "Stable");
    assert_eq!(
        (d.protocol_type.as_str(), d.protocol.as_str()),
        ("consumer", "range")
    );
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.members[0].member_id, ids[0]);
    assert_eq!(d.members[0].client_id, "a");
    assert_eq!(d.members[0].client_host, "/127.0.0.1");
    assert_eq!(d.members[0].metadata, meta("a"));
    assert_eq!(d.members[1].assignment, assignment(&ids[1]));

    let d = h.c.describe("preparing-g").expect("group");
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(d.protocol, "");
    assert_eq!(d.protocol_type, "consumer");
    assert!(d.members[0].metadata.is_empty());

    assert_eq!(h.c.describe("nope"), None);
    assert_eq!(GroupDescription::dead("nope").state.as_str(), "Dead");
}

#[test]
fn next_deadline_tracks_every_timer() {
    let mut h = H::new();
    assert_eq!(h.c.next_deadline(), None);
    // A pending member id expires after its session timeout.
    let (_, o, _) = h.join(args(G, "", "a"), 5, 1_000);
    let a = now_join(o).member_id;
    assert_eq!(h.c.next_deadline(), Some(1_000 + i64::from(SESSION)));
    // Joining: the initial delay comes first (the new member's own limit is 5 minutes).
    h.join(args(G, &a, "a"), 5, 2_000);
    assert_eq!(h.c.next_deadline(), Some(5_000));
    // CompletingRebalance: the session (10 s) before the pending sync (30 s).
    h.c.tick(5_000);
    assert_eq!(h.c.next_deadline(), Some(5_000 + i64::from(SESSION)));
    h.sync(G, 1, &a, vec![(a.clone(), assignment(&a))], 6_000);
    assert_eq!(h.c.next_deadline(), Some(6_000 + i64::from(SESSION)));
    h.hb(G, &a, 1, 7_000);
    assert_eq!(h.c.next_deadline(), Some(7_000 + i64::from(SESSION)));
    // A newcomer starts a rebalance: the join phase waits 30 s for a, but a's session (which
    // is not suspended: a has no parked request) runs out first.
    let (tb, o, _) = h.join(args(G, "", "b"), 3, 8_000);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(h.c.next_deadline(), Some(7_000 + i64::from(SESSION)));
    let cs = h.c.tick(17_000);
    assert_eq!(join_of(&cs, tb).generation_id, 2, "a expired, b alone");
    assert_eq!(h.c.state(G), Some(GroupState::CompletingRebalance));
    assert_eq!(h.c.describe(G).expect("group").members.len(), 1);
    // Now b's session and the pending sync.
    assert_eq!(h.c.next_deadline(), Some(17_000 + i64::from(SESSION)));
}

#[test]
fn parked_existing_members_do_not_expire_while_waiting() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b"], 0);
    // a rejoins (parked); b stays silent and is dropped at its session timeout, which
    // completes the join phase; a's own expiry, while parked, is ignored.
    let (ta, o, _) = h.join(args(G, &ids[0], "a"), 5, now + 1);
    assert_eq!(o, Outcome::Parked);
    let cs = h.c.tick(now + i64::from(SESSION));
    let ja = join_of(&cs, ta);
    assert_eq!(ja.error_code, NONE);
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.members.len(), 1);
    // Its session restarts with the answer.
    assert_eq!(h.c.next_deadline(), Some(now + 2 * i64::from(SESSION)));
}

#[test]
fn static_member_not_rejoining_stays_and_leadership_moves() {
    let mut h = H::new();
    let (ids, now) = static_stable(&mut h, &["i-a"]);
    let (tb, o, _) = h.join(args(G, "", "b"), 3, now);
    assert_eq!(o, Outcome::Parked);
    let mut t = now;
    let mut answered = None;
    while answered.is_none() && t < now + 60_000 {
        assert_eq!(
            h.hb(G, &ids[0], 1, t),
            ResponseError::RebalanceInProgress.code()
        );
        t += 5_000;
        let cs = h.c.tick(t);
        answered = cs.iter().find(|c| c.token == tb).cloned().map(|c| (t, c));
    }
    let (at, c) = answered.expect("answered");
    assert_eq!(at, now + i64::from(REBALANCE));
    let CompletedResponse::Join(j) = c.response else {
        panic!("join expected");
    };
    assert_eq!(j.generation_id, 2);
    assert_eq!(
        j.leader, j.member_id,
        "the static leader did not rejoin: b leads"
    );
    assert_eq!(j.members.len(), 2, "the static member stays in the group");
    assert_eq!(
        h.hb(G, &ids[0], 1, at),
        ResponseError::IllegalGeneration.code()
    );
}

#[test]
fn new_member_join_timeout_drops_a_newcomer_stuck_in_a_long_join() {
    let mut h = H::new();
    let mut a = static_args("", "i-a");
    a.rebalance_timeout_ms = 600_000;
    let (ta, _, _) = h.join(a, 5, 0);
    let cs = h.c.tick(3_000);
    let a_id = join_of(&cs, ta).member_id;
    h.sync(G, 1, &a_id, Vec::new(), 3_000);
    assert_eq!(h.c.state(G), Some(GroupState::Stable));
    // b joins; the join phase waits up to 600 s for the static leader, which never rejoins
    // but keeps its session alive.
    let (tb, o, _) = h.join(args(G, "", "b"), 3, 4_000);
    assert_eq!(o, Outcome::Parked);
    let mut t = 4_000;
    let mut answered = None;
    while answered.is_none() && t < 700_000 {
        h.hb(G, &a_id, 1, t);
        t += 5_000;
        answered =
            h.c.tick(t)
                .into_iter()
                .find(|c| c.token == tb)
                .map(|c| (t, c));
    }
    let (at, c) = answered.expect("answered");
    assert_eq!(at, 304_000, "5 minutes after b joined");
    let CompletedResponse::Join(j) = c.response else {
        panic!("join expected");
    };
    assert_eq!(
        (j.error_code, j.member_id.as_str()),
        (ResponseError::UnknownMemberId.code(), "")
    );
    assert_eq!(h.c.describe(G).expect("group").members.len(), 1);
}

#[test]
fn restore_from_snapshot() {
    let mut h = H::new();
    let (ids, now) = h.stable(G, &["a", "b"], 0);
    let snap = h.c.group_snapshot(G).expect("snapshot");

    let mut r = H::new();
    r.c.restore(snap.clone(), 50_000);
    assert_eq!(r.c.state(G), Some(GroupState::Stable));
    assert_eq!(r.c.generation(G), Some(1));
    assert_eq!(r.c.group_snapshot(G), Some(snap));
    assert!(r.c.take_dirty().is_empty());
    assert_eq!(r.c.next_deadline(), Some(50_000 + i64::from(SESSION)));
    assert_eq!(r.hb(G, &ids[1], 1, 50_001), NONE);
    let (_, o, _) = r.sync(G, 1, &ids[1], Vec::new(), 50_002);
    assert_eq!(now_sync(o).assignment, assignment(&ids[1]));
    let d = r.c.describe(G).expect("group");
    assert_eq!(d.members[0].metadata, meta("a"));
    assert_eq!(d.protocol, "range");
    // The leader is the recorded one: its rejoin triggers a rebalance.
    let (_, o, _) = r.join(args(G, &ids[0], "a"), 5, 50_003);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(r.c.state(G), Some(GroupState::PreparingRebalance));
    let _ = now;

    // An empty group comes back Empty; a member-less record keeps its generation.
    let mut e = H::new();
    e.c.restore(
        GroupSnapshot {
            group_id: "e".into(),
            protocol_type: Some("consumer".into()),
            generation_id: 7,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 1,
            members: Vec::new(),
        },
        100,
    );
    assert_eq!(e.c.state("e"), Some(GroupState::Empty));
    assert_eq!(e.c.generation("e"), Some(7));
    assert_eq!(e.c.next_deadline(), None);
    let (t, o, _) = e.join(args("e", "", "x"), 3, 200);
    assert_eq!(o, Outcome::Parked);
    let cs = e.c.tick(3_200);
    assert_eq!(join_of(&cs, t).generation_id, 8);
}

#[test]
fn restored_members_expire_without_heartbeats() {
    let mut h = H::new();
    let (_, _) = h.stable(G, &["a", "b"], 0);
    let snap = h.c.group_snapshot(G).expect("snapshot");
    let mut r = H::new();
    r.c.restore(snap, 1_000);
    r.c.tick(1_000 + i64::from(SESSION));
    assert_eq!(r.c.state(G), Some(GroupState::Empty));
    assert_eq!(r.c.generation(G), Some(2));
    assert_eq!(r.c.take_dirty(), vec![G.to_string()]);
}

#[test]
fn a_leaving_member_with_a_parked_sync_is_answered() {
    let mut h = H::new();
    let (_, _, _, _) = h.join_new(G, "a", 0);
    let (b, _, _, _) = h.join_new(G, "b", 0);
    let (c, _, _, _) = h.join_new(G, "c", 0);
    let (_, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let (tb, _, _) = h.sync(G, 1, &b, Vec::new(), now);
    let (tc, _, _) = h.sync(G, 1, &c, Vec::new(), now);
    let (l, cs) = h.c.leave_group(
        G,
        vec![LeaveMember {
            member_id: b.clone(),
            group_instance_id: None,
        }],
        now + 1,
    );
    assert_eq!(l.members[0].error_code, NONE);
    assert_eq!(
        sync_of(&cs, tb).error_code,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        sync_of(&cs, tc).error_code,
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(cs.len(), 2);
}

#[test]
fn static_member_restart_while_completing_rebalance_fences_the_old_id() {
    let mut h = H::new();
    let mut tokens = Vec::new();
    for i in ["i-a", "i-b"] {
        let (t, _, _) = h.join(static_args("", i), 5, 0);
        tokens.push(t);
    }
    let (cs, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let old_b = join_of(&cs, tokens[1]).member_id;
    let (tb, o, _) = h.sync(G, 1, &old_b, Vec::new(), now);
    assert_eq!(o, Outcome::Parked);
    // i-b restarts before the leader assigned: the old id's parked SyncGroup is fenced and
    // the group rebalances (the leader may be assigning to the old id).
    let (tb2, o, cs) = h.join(static_args("", "i-b"), 5, now + 1);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(
        sync_of(&cs, tb).error_code,
        ResponseError::FencedInstanceId.code()
    );
    assert_eq!(h.c.state(G), Some(GroupState::PreparingRebalance));
    let a = join_of(&h.run_until(G, GroupState::CompletingRebalance, now).0, tb2);
    assert_eq!(a.generation_id, 2);
    assert_ne!(a.member_id, old_b);
}

#[test]
fn a_superseded_parked_sync_is_answered() {
    let mut h = H::new();
    let (_, _, _, _) = h.join_new(G, "a", 0);
    let (b, _, _, _) = h.join_new(G, "b", 0);
    let (_, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let (t1, _, _) = h.sync(G, 1, &b, Vec::new(), now);
    let (t2, o, cs) = h.sync(G, 1, &b, Vec::new(), now + 1);
    assert_eq!(o, Outcome::Parked);
    assert_eq!(
        sync_of(&cs, t1).error_code,
        ResponseError::RebalanceInProgress.code()
    );
    assert_ne!(t1, t2);
}

#[test]
fn first_join_completed_by_a_pending_expiry_can_sync() {
    // Two new consumers with no initial delay: both get MEMBER_ID_REQUIRED, only one rejoins.
    // When the other's pending id expires the join completes, and the leader's SyncGroup right
    // after must be accepted.
    let mut h = H::with(GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    });
    let (_, o, _) = h.join(args(G, "", "a"), 5, 0);
    let a = now_join(o).member_id;
    let (_, o, _) = h.join(args(G, "", "b"), 5, 0);
    assert_eq!(
        now_join(o).error_code,
        ResponseError::MemberIdRequired.code()
    );
    let (ta, o, mut cs) = h.join(args(G, &a, "a"), 5, 0);
    let mut now = 0;
    let ja = match o {
        Outcome::Now(r) => r,
        Outcome::Parked => {
            for _ in 0..10 {
                if cs.iter().any(|c| c.token == ta) {
                    break;
                }
                now = h.c.next_deadline().expect("deadline");
                cs.extend(h.c.tick(now));
            }
            join_of(&cs, ta)
        }
    };
    assert_eq!(ja.error_code, NONE);
    assert_eq!(ja.leader, a);
    let (_, o, _) = h.sync(
        G,
        ja.generation_id,
        &a,
        vec![(a.clone(), assignment(&a))],
        now,
    );
    assert_eq!(now_sync(o).error_code, NONE);
}

#[test]
fn initial_rebalance_without_delay_answers_every_parked_join() {
    let mut h = H::with(GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    });
    let (_, o, _) = h.join(args(G, "", "a"), 5, 0);
    let a = now_join(o).member_id;
    let (_, o, _) = h.join(args(G, "", "b"), 5, 0);
    let b = now_join(o).member_id;
    let (ta, oa, mut cs) = h.join(args(G, &a, "a"), 5, 1);
    let (tb, ob, cs2) = h.join(args(G, &b, "b"), 5, 2);
    cs.extend(cs2);
    let mut now = 2;
    for _ in 0..10 {
        let done_a = matches!(oa, Outcome::Now(_)) || cs.iter().any(|c| c.token == ta);
        let done_b = matches!(ob, Outcome::Now(_)) || cs.iter().any(|c| c.token == tb);
        if done_a && done_b {
            return;
        }
        now =
            h.c.next_deadline()
                .expect("a deadline while joins are parked");
        cs.extend(h.c.tick(now));
    }
    panic!("parked joins not all answered: {cs:?} at {now}");
}

#[test]
fn unloading_answers_parked_requests_with_not_coordinator_and_keeps_other_groups() {
    let mut h = H::new();
    let (ids, now) = h.stable("stays", &["a"], 0);
    // "moves": one member parked in JoinGroup (the initial delay), in another group.
    let (_, t_join, o, _) = h.join_new("moves", "x", now);
    assert_eq!(o, Outcome::Parked);
    let (removed, cs) = h.c.unload(|g| g == "moves");
    assert_eq!(removed, vec!["moves".to_string()]);
    assert_eq!(
        join_of(&cs, t_join).error_code,
        ResponseError::NotCoordinator.code()
    );
    assert_eq!(h.c.state("moves"), None);
    // Nothing to write: the next coordinator reads the group from the log.
    h.c.take_dirty();
    assert!(h.c.take_dirty().is_empty());
    assert_eq!(h.c.state("stays"), Some(GroupState::Stable));
    assert_eq!(h.hb("stays", &ids[0], 1, now + 1), NONE);
    // A member parked in SyncGroup (a follower waiting for the leader) is answered too.
    let mut h = H::new();
    let (_, t_a, _, _) = h.join_new(G, "a", 0);
    let (b, t_b, _, _) = h.join_new(G, "b", 0);
    let (cs, now) = h.run_until(G, GroupState::CompletingRebalance, 0);
    let generation = join_of(&cs, t_a).generation_id;
    assert_eq!(join_of(&cs, t_b).generation_id, generation);
    let follower = if join_of(&cs, t_a).leader == b {
        join_of(&cs, t_a).member_id
    } else {
        b
    };
    let (t_sync, o, _) = h.sync(G, generation, &follower, Vec::new(), now);
    assert_eq!(o, Outcome::Parked);
    let (_, cs) = h.c.unload(|_| true);
    assert_eq!(
        sync_of(&cs, t_sync).error_code,
        ResponseError::NotCoordinator.code()
    );
    assert_eq!(h.c.next_deadline(), None);
}
