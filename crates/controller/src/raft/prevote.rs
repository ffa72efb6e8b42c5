//! Pre-vote: a voter asks the others whether they would vote for it before it starts an
//! election, so that a voter cut off from the quorum does not raise its term while alone and
//! then, on its return, depose a leader that did nothing wrong (KRaft does the same, KIP-996;
//! openraft 0.9 has no pre-vote of its own).
//!
//! openraft's own election timer is turned off on the nodes that use this (see
//! `crate::node`); the election loop there asks [`ElectionTimer`] when a pre-vote round is due,
//! sends [`PreVoteRequest`]s, and triggers openraft's election only when a majority of the
//! voters, itself included, granted one. A voter grants a pre-vote ([`grant_pre_vote`]) only
//! when it has not heard from a leader for longer than openraft's leader lease and the
//! candidate's log is at least as up to date as its own: exactly the votes the real election
//! would then get.
//!
//! The decisions here are pure: time is passed in as milliseconds of a monotonic clock
//! ([`PreVoteState::now_ms`] in the node).

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::LogId;

use super::RaftNodeId;

/// A pre-vote request: "would you vote for me at `term`, with my log ending at
/// `last_log_id`?". Answering it changes nothing on the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreVoteRequest {
    /// The candidate.
    pub candidate: RaftNodeId,
    /// The term the candidate would stand in: its current term plus one.
    pub term: u64,
    /// The last entry of the candidate's log.
    pub last_log_id: Option<LogId<RaftNodeId>>,
}

/// The answer to a [`PreVoteRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreVoteResponse {
    /// Whether the voter would vote for the candidate now.
    pub granted: bool,
    /// The voter's current term, for the candidate's log.
    pub term: u64,
}

/// What a voter knows about itself when it answers a pre-vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterView {
    /// This voter is the leader.
    pub is_leader: bool,
    /// Milliseconds since this voter last heard from a leader (or granted a vote); `None`
    /// when it has not since it started.
    pub since_contact_ms: Option<u64>,
    /// The last entry of this voter's log.
    pub last_log_id: Option<LogId<RaftNodeId>>,
}

/// Whether a voter grants `request`. `lease_ms` is openraft's leader lease (its
/// `election_timeout_max`): within it, openraft refuses real votes, so a pre-vote granted then
/// would start an election that cannot win and only raises the term.
///
/// The candidate's term is deliberately not compared: a voter ahead in term refuses the real
/// vote and tells the candidate its term, which the candidate needs to learn; refusing the
/// pre-vote on the term instead could leave two voters refusing each other forever.
pub fn grant_pre_vote(view: &VoterView, request: &PreVoteRequest, lease_ms: u64) -> bool {
    if view.is_leader {
        return false;
    }
    let leader_recent = view.since_contact_ms.is_some_and(|ms| ms <= lease_ms);
    if leader_recent {
        return false;
    }
    // `None < Some(_)`, and log ids order by (leader id, index): Raft's "at least as up to
    // date".
    request.last_log_id >= view.last_log_id
}

/// The last time this node heard from a leader, shared between the raft service (which
/// records it) and the election loop and pre-vote answers (which read it). Times are
/// milliseconds of the node's monotonic clock; zero means never.
#[derive(Debug, Default)]
pub struct LeaderContact {
    // Stored plus one, so that zero can mean "never" even at clock time zero.
    last_ms_plus_one: AtomicU64,
}

impl LeaderContact {
    /// A contact that has never happened.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records contact at `now_ms`; an older time than the one recorded is ignored.
    pub fn touch(&self, now_ms: u64) {
        self.last_ms_plus_one
            .fetch_max(now_ms.saturating_add(1), Ordering::Relaxed);
    }

    /// The last contact, if any.
    pub fn last_ms(&self) -> Option<u64> {
        match self.last_ms_plus_one.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t - 1),
        }
    }

    /// Milliseconds from the last contact to `now_ms`, if there was one.
    pub fn since_ms(&self, now_ms: u64) -> Option<u64> {
        self.last_ms().map(|t| now_ms.saturating_sub(t))
    }
}

/// What the raft service and the election loop of one node share: the node's monotonic clock,
/// its leader contact and openraft's leader lease.
#[derive(Debug)]
pub struct PreVoteState {
    // tokio's clock, as openraft's: a test on a paused clock moves both together.
    origin: tokio::time::Instant,
    /// The last leader contact.
    pub contact: LeaderContact,
    /// openraft's leader lease: its `election_timeout_max`, in milliseconds.
    pub lease_ms: u64,
}

impl PreVoteState {
    /// State for a node whose leader lease is `lease_ms`, its clock starting now.
    pub fn new(lease_ms: u64) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            contact: LeaderContact::new(),
            lease_ms,
        }
    }

    /// Milliseconds since this state was made.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// When this voter should next ask for pre-votes.
///
/// A voter that has heard from a leader waits out the leader lease (the other voters would
/// refuse it until then) plus a random part of the election timeout's spread, so that two
/// voters rarely ask at once. One that has not heard from a leader since it started (a fresh
/// cluster, or a restart) waits a random election timeout from its start, as Raft does. After
/// a round that did not lead to an election, the next waits a fresh random election timeout.
#[derive(Debug, Clone)]
pub struct ElectionTimer {
    timeout_min_ms: u64,
    timeout_max_ms: u64,
    started_ms: u64,
    last_round_ms: Option<u64>,
    jitter_ms: u64,
}

impl ElectionTimer {
    /// A timer for a node started at `now_ms`, with openraft's election timeout bounds;
    /// `jitter_ms` is a random value in `0..(timeout_max_ms - timeout_min_ms)` (drawn by
    /// the caller, so this stays deterministic), redrawn with [`ElectionTimer::round_done`].
    pub fn new(timeout_min_ms: u64, timeout_max_ms: u64, now_ms: u64, jitter_ms: u64) -> Self {
        Self {
            timeout_min_ms,
            timeout_max_ms: timeout_max_ms.max(timeout_min_ms),
            started_ms: now_ms,
            last_round_ms: None,
            jitter_ms,
        }
    }

    /// The leader lease: openraft's `election_timeout_max`.
    pub fn lease_ms(&self) -> u64 {
        self.timeout_max_ms
    }

    /// Whether a pre-vote round is due at `now_ms`, given the last leader contact.
    pub fn due(&self, now_ms: u64, last_contact_ms: Option<u64>) -> bool {
        let from_contact = match last_contact_ms {
            Some(t) => t + self.timeout_max_ms + self.jitter_ms,
            None => self.started_ms + self.timeout_min_ms + self.jitter_ms,
        };
        let from_round = self
            .last_round_ms
            .map_or(0, |t| t + self.timeout_min_ms + self.jitter_ms);
        now_ms >= from_contact.max(from_round)
    }

    /// Records that a round ran at `now_ms`, and the next round's jitter.
    pub fn round_done(&mut self, now_ms: u64, next_jitter_ms: u64) {
        self.last_round_ms = Some(now_ms);
        self.jitter_ms = next_jitter_ms;
    }

    /// The spread from which the caller draws jitter.
    pub fn jitter_range_ms(&self) -> u64 {
        self.timeout_max_ms - self.timeout_min_ms
    }
}

/// Whether `granted` votes (the candidate's own included) out of `voters` win.
pub fn is_majority(granted: usize, voters: usize) -> bool {
    granted * 2 > voters
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(term: u64, index: u64) -> Option<LogId<RaftNodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn request(last: Option<LogId<RaftNodeId>>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 2,
            term: 5,
            last_log_id: last,
        }
    }

    fn view(since_contact_ms: Option<u64>, last: Option<LogId<RaftNodeId>>) -> VoterView {
        VoterView {
            is_leader: false,
            since_contact_ms,
            last_log_id: last,
        }
    }

    #[test]
    fn a_voter_that_hears_from_its_leader_refuses() {
        let r = request(log_id(4, 100));
        assert!(!grant_pre_vote(&view(Some(0), log_id(4, 10)), &r, 2000));
        assert!(!grant_pre_vote(&view(Some(2000), log_id(4, 10)), &r, 2000));
        assert!(grant_pre_vote(&view(Some(2001), log_id(4, 10)), &r, 2000));
        assert!(grant_pre_vote(&view(None, log_id(4, 10)), &r, 2000));
    }

    #[test]
    fn the_leader_refuses() {
        let mut v = view(None, None);
        v.is_leader = true;
        assert!(!grant_pre_vote(&v, &request(log_id(9, 9)), 2000));
    }

    #[test]
    fn a_candidate_behind_in_log_is_refused() {
        let mine = log_id(4, 10);
        assert!(!grant_pre_vote(
            &view(None, mine),
            &request(log_id(4, 9)),
            2000
        ));
        assert!(!grant_pre_vote(
            &view(None, mine),
            &request(log_id(3, 50)),
            2000
        ));
        assert!(!grant_pre_vote(&view(None, mine), &request(None), 2000));
        assert!(grant_pre_vote(
            &view(None, mine),
            &request(log_id(4, 10)),
            2000
        ));
        assert!(grant_pre_vote(
            &view(None, mine),
            &request(log_id(5, 1)),
            2000
        ));
        assert!(grant_pre_vote(&view(None, None), &request(None), 2000));
    }

    #[test]
    fn contact_is_monotonic_and_zero_time_counts() {
        let c = LeaderContact::new();
        assert_eq!(c.last_ms(), None);
        assert_eq!(c.since_ms(50), None);
        c.touch(0);
        assert_eq!(c.last_ms(), Some(0));
        c.touch(100);
        c.touch(40);
        assert_eq!(c.last_ms(), Some(100));
        assert_eq!(c.since_ms(130), Some(30));
        assert_eq!(c.since_ms(10), Some(0));
    }

    #[test]
    fn a_fresh_node_asks_after_a_random_election_timeout() {
        let t = ElectionTimer::new(1000, 2000, 500, 300);
        assert!(!t.due(1799, None));
        assert!(t.due(1800, None));
    }

    #[test]
    fn a_follower_waits_out_the_lease_after_its_last_contact() {
        let t = ElectionTimer::new(1000, 2000, 0, 250);
        assert!(!t.due(10_000 + 2249, Some(10_000)));
        assert!(t.due(10_000 + 2250, Some(10_000)));
    }

    #[test]
    fn rounds_are_spaced_by_an_election_timeout() {
        let mut t = ElectionTimer::new(1000, 2000, 0, 0);
        assert!(t.due(5000, Some(1000)));
        t.round_done(5000, 400);
        assert!(!t.due(6399, Some(1000)));
        assert!(t.due(6400, Some(1000)));
        // Contact after the round pushes the next one out to the lease again.
        assert!(!t.due(6400, Some(6000)));
        assert!(t.due(8400, Some(6000)));
    }

    #[test]
    fn majority_counts_the_candidate() {
        assert!(is_majority(1, 1));
        assert!(!is_majority(1, 2));
        assert!(is_majority(2, 3));
        assert!(!is_majority(2, 4));
        assert!(is_majority(3, 5));
    }
}
