//! The leader-side replication state of one partition, as a pure state machine: no I/O, no
//! locks, no clock of its own (every event carries `now_ms`). The shell feeds it the leader's
//! log end, the followers' fetches, timer ticks, the controller's answers to ISR changes and
//! committed metadata; it answers with high watermark moves and ISR change proposals to send
//! to the controller (AlterPartition, KIP-497).
//!
//! The rules, after Kafka's `Partition` and `Replica`:
//! - A follower's log end offset is the fetch offset of its last fetch. Its
//!   `last_caught_up_ms` is the latest time at which that offset reached the leader's log
//!   end: the fetch time if the fetch reached the leader's end now, else the previous fetch
//!   time if the fetch reached the leader's end as of the previous fetch (so a follower that
//!   fetches everything there is, while the leader keeps appending, stays caught up).
//! - The high watermark is the smallest log end offset over the maximal ISR (the committed ISR
//!   plus the members of an in-flight expansion; during an in-flight shrink, the committed
//!   ISR), the leader's own log end included, and over the followers outside the ISR that are
//!   caught up (Kafka waits for them so they can join). A member whose log end is unknown (it
//!   has not fetched since this replica became leader) holds it where it is. It never goes
//!   back, never passes the leader's log end, and does not move at all while the committed ISR
//!   is smaller than min.insync.replicas (capped at the replication factor; KIP-966).
//! - A follower outside the ISR whose fetch reaches both the high watermark and the start of
//!   the current leader epoch is proposed for addition (on that fetch: a fetch is what shows
//!   it alive). An ISR member that is not at the leader's log end and has not been caught up
//!   for more than `replica.lag.time.max.ms` is proposed for removal (on a tick); all such
//!   laggards in one proposal.
//! - One proposal at a time. Until the controller answers, the proposal's ISR counts for the
//!   high watermark only when it is larger (an expansion), so an unknown outcome is never
//!   unsafe. Answers: committed (the new ISR and partition epoch), stale (wait for newer
//!   metadata), rejected (known not applied: back to the committed ISR), retry later (the same
//!   change is sent again after [`ISR_CHANGE_RETRY_BACKOFF_MS`]). Metadata with a newer
//!   partition epoch replaces the ISR and drops the proposal.
//!
//! Driving it: call [`LeaderState::tick`] no later than [`LeaderState::next_deadline_ms`]
//! (re-read after every call), publish every high watermark an event returns, send every
//! proposal it returns and feed the answer back with the proposal's id.

use std::collections::{BTreeMap, BTreeSet};

/// How long after a "retry later" answer (a timeout, NOT_CONTROLLER, a full queue) the same
/// ISR change is sent again, and after a rejection before any new change is proposed.
pub const ISR_CHANGE_RETRY_BACKOFF_MS: i64 = 100;

/// The topic and broker settings the replication rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: how long an ISR member may go without catching up to the
    /// leader's log end before it is proposed for removal.
    pub replica_lag_time_max_ms: i64,
    /// `min.insync.replicas`: below this many committed ISR members (or the replication
    /// factor, if smaller) the high watermark stops and acks=all is refused.
    pub min_insync_replicas: usize,
}

/// An ISR change for the controller (one AlterPartition partition entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// Identifies this proposal (and each resend of it) in [`LeaderState::on_proposal_result`].
    pub id: u64,
    /// The proposed ISR, sorted by broker id: `(broker id, broker epoch)`, the broker epoch
    /// being the one the follower's last fetch carried (KIP-903), -1 when unknown. The
    /// leader's own entry carries -1 (the controller accepts it); the shell may put its own
    /// broker epoch there.
    pub new_isr: Vec<(i32, i64)>,
    /// The leader epoch the change is based on.
    pub leader_epoch: i32,
    /// The partition epoch the change is based on.
    pub partition_epoch: i32,
}

impl IsrProposal {
    /// The broker ids of [`IsrProposal::new_isr`].
    pub fn isr_ids(&self) -> Vec<i32> {
        self.new_isr.iter().map(|&(id, _)| id).collect()
    }
}

/// The controller's answer to an [`IsrProposal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalResult {
    /// The controller's partition state after the request: the ISR, leader epoch and
    /// partition epoch it answered with.
    Committed {
        /// The committed ISR.
        isr: Vec<i32>,
        /// The leader epoch.
        leader_epoch: i32,
        /// The partition epoch.
        partition_epoch: i32,
    },
    /// This leader's view is out of date (INVALID_UPDATE_VERSION, FENCED_LEADER_EPOCH, and
    /// the other "wait for metadata" errors): nothing is proposed until newer metadata.
    Stale,
    /// The controller did not apply the change and says so (INELIGIBLE_REPLICA,
    /// OPERATION_NOT_ATTEMPTED): back to the committed ISR; the rejected joiners are not
    /// proposed again until newer metadata, a new broker epoch or `replica.lag.time.max.ms`.
    Rejected,
    /// The outcome is unknown or the controller could not be reached (timeouts,
    /// NOT_CONTROLLER, anything else): the same change is sent again later.
    RetryLater,
}

impl ProposalResult {
    /// The answer for a non-zero AlterPartition error code (partition-level, or top-level if
    /// the whole request failed), as Kafka's leader treats it.
    pub fn for_error_code(code: i16) -> ProposalResult {
        match code {
            // FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION, UNKNOWN_TOPIC_OR_PARTITION,
            // UNKNOWN_TOPIC_ID, INVALID_REQUEST, NEW_LEADER_ELECTED.
            74 | 95 | 3 | 100 | 42 | 108 => ProposalResult::Stale,
            // OPERATION_NOT_ATTEMPTED, INELIGIBLE_REPLICA.
            55 | 107 => ProposalResult::Rejected,
            _ => ProposalResult::RetryLater,
        }
    }
}

/// What an event did: a high watermark to publish, an ISR change to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Effect {
    /// The new high watermark, if it moved.
    pub high_watermark_moved: Option<u64>,
    /// An ISR change to send to the controller.
    pub proposal: Option<IsrProposal>,
}

/// Where an acks=all produce request stands ([`LeaderState::acks_all_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksAllStatus {
    /// The high watermark has not passed the batch yet.
    Waiting,
    /// The batch is committed: answer success.
    Done,
    /// The batch is committed, but the ISR has since fallen below min.insync.replicas:
    /// answer NOT_ENOUGH_REPLICAS_AFTER_APPEND (Kafka's `checkEnoughReplicasReachOffset`).
    NotEnoughReplicasAfterAppend,
}

/// One remote replica as this leader sees it.
#[derive(Debug, Clone, Default)]
struct Follower {
    /// The fetch offset of its last fetch; `None` before its first fetch to this leader.
    log_end_offset: Option<u64>,
    /// The latest time its last fetch offset was at the leader's log end as of that time;
    /// `None`: not since this replica became leader.
    last_caught_up_ms: Option<i64>,
    /// The leader's log end and the time at its last fetch.
    last_fetch: Option<(u64, i64)>,
    /// The broker epoch its last fetch carried (-1: the follower did not say).
    broker_epoch: Option<i64>,
    /// The controller rejected adding it: not proposed (nor waited for) before this time.
    join_barred_until_ms: Option<i64>,
}

impl Follower {
    /// Kafka's `Replica.updateFetchState`.
    fn record_fetch(&mut self, fetch_offset: u64, leader_end: u64, broker_epoch: i64, now_ms: i64) {
        let caught_up_at = if fetch_offset >= leader_end {
            Some(now_ms)
        } else {
            match self.last_fetch {
                Some((end_then, at)) if fetch_offset >= end_then => Some(at),
                _ => None,
            }
        };
        if let Some(t) = caught_up_at {
            self.last_caught_up_ms = Some(self.last_caught_up_ms.map_or(t, |c| c.max(t)));
        }
        let end = self
            .last_fetch
            .map_or(leader_end, |(e, _)| e.max(leader_end));
        self.last_fetch = Some((end, now_ms));
        self.log_end_offset = Some(fetch_offset);
        self.broker_epoch = Some(broker_epoch);
    }

    /// Kafka's `isCaughtUp`: at the leader's log end, or caught up within the allowed lag.
    fn is_caught_up(&self, leader_end: u64, now_ms: i64, max_lag_ms: i64) -> bool {
        self.log_end_offset == Some(leader_end)
            || self
                .last_caught_up_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= max_lag_ms)
    }

    fn is_barred(&self, now_ms: i64) -> bool {
        self.join_barred_until_ms.is_some_and(|t| now_ms < t)
    }
}

/// What the shell still owes the in-flight proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The controller's answer.
    Response,
    /// Nothing: it is sent again at this time.
    RetryAt(i64),
    /// Nothing: only newer metadata resolves it.
    Metadata,
}

#[derive(Debug, Clone)]
struct InFlight {
    proposal: IsrProposal,
    wait: Wait,
}

/// The leader-side replication state of one partition. See the module documentation.
#[derive(Debug, Clone)]
pub struct LeaderState {
    local_id: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    epoch_start_offset: u64,
    replicas: Vec<i32>,
    /// The committed ISR, sorted.
    isr: Vec<i32>,
    followers: BTreeMap<i32, Follower>,
    log_start_offset: u64,
    log_end_offset: u64,
    high_watermark: u64,
    config: ReplicationConfig,
    in_flight: Option<InFlight>,
    next_proposal_id: u64,
    /// After a rejection, no proposal before this time.
    no_proposal_before_ms: i64,
    /// The latest `now_ms` any event carried.
    last_now_ms: i64,
    /// Brokers that are registered, unfenced and not shutting down, with their registration
    /// epochs, as the last metadata said; `None` until the shell says (everyone counts).
    eligible: Option<BTreeMap<i32, i64>>,
}

impl LeaderState {
    /// This broker (`local_id`) became the leader in `leader_epoch`, whose first offset is
    /// `epoch_start_offset` (the log end when it took over, already in the leader-epoch
    /// cache). Followers start with unknown log ends: the high watermark waits for every ISR
    /// member's first fetch; ISR members get a full `replica.lag.time.max.ms` from `now_ms`
    /// before they count as lagging. The high watermark starts at `high_watermark` clamped
    /// into the log; the next event may move it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        local_id: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        epoch_start_offset: u64,
        replicas: &[i32],
        isr: &[i32],
        log_start_offset: u64,
        log_end_offset: u64,
        high_watermark: u64,
        now_ms: i64,
        config: ReplicationConfig,
    ) -> Self {
        let log_end_offset = log_end_offset.max(log_start_offset);
        let mut state = LeaderState {
            local_id,
            leader_epoch,
            partition_epoch,
            epoch_start_offset,
            replicas: Vec::new(),
            isr: Vec::new(),
            followers: BTreeMap::new(),
            log_start_offset,
            log_end_offset,
            high_watermark: high_watermark.clamp(log_start_offset, log_end_offset),
            config,
            in_flight: None,
            next_proposal_id: 1,
            no_proposal_before_ms: i64::MIN,
            last_now_ms: now_ms,
            eligible: None,
        };
        state.set_membership(replicas, isr);
        let members: Vec<i32> = state.isr.clone();
        for id in members {
            if let Some(f) = state.followers.get_mut(&id) {
                f.last_caught_up_ms = Some(now_ms);
            }
        }
        state
    }

    /// Committed metadata for the partition. It replaces the replicas and the ISR, and drops
    /// the in-flight proposal, when its partition epoch is newer (the controller committed our
    /// change, or changed the ISR itself, e.g. fencing a broker); a newer leader epoch also
    /// starts a new epoch at the current log end (record it in the leader-epoch cache) and
    /// resets the followers' catch-up state, ISR members getting a full lag allowance from
    /// `now_ms`. Older metadata is ignored. Any call lifts the bars left by rejections.
    /// Returns the new high watermark if it moved.
    pub fn update_metadata(
        &mut self,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        now_ms: i64,
    ) -> Option<u64> {
        self.observe(now_ms);
        let newer_epoch = leader_epoch > self.leader_epoch;
        let newer_version = partition_epoch > self.partition_epoch;
        if leader_epoch >= self.leader_epoch
            && partition_epoch >= self.partition_epoch
            && (newer_epoch || newer_version)
        {
            let old_isr = std::mem::take(&mut self.isr);
            self.set_membership(replicas, isr);
            self.in_flight = None;
            self.partition_epoch = partition_epoch;
            if newer_epoch {
                self.leader_epoch = leader_epoch;
                self.epoch_start_offset = self.log_end_offset;
                let leader_end = self.log_end_offset;
                for (id, f) in self.followers.iter_mut() {
                    // Kafka's resetReplicaState for a re-elected leader: the log end stays.
                    let in_isr = self.isr.binary_search(id).is_ok();
                    f.last_caught_up_ms = in_isr.then_some(now_ms);
                    f.last_fetch = in_isr.then_some((leader_end, now_ms));
                }
            } else {
                self.grant_joiners(&old_isr, now_ms);
            }
        } else if leader_epoch == self.leader_epoch
            && partition_epoch == self.partition_epoch
            && (replicas != self.replicas.as_slice() || !same_members(isr, &self.isr))
        {
            // The state an answer to our own proposal already took, seen in full: that answer
            // carried the ISR but not the replica set, which a reassignment completed in the
            // same batch changes (a removed replica must stop holding the high watermark).
            let old_isr = std::mem::take(&mut self.isr);
            self.set_membership(replicas, isr);
            self.grant_joiners(&old_isr, now_ms);
        }
        for f in self.followers.values_mut() {
            f.join_barred_until_ms = None;
        }
        self.no_proposal_before_ms = i64::MIN;
        self.update_high_watermark(now_ms)
    }

    /// Which brokers may join the ISR and hold the high watermark for joining (Kafka's
    /// `isReplicaIsrEligible`): those registered, unfenced and not in controlled shutdown, by
    /// registration epoch. A follower outside the ISR that was caught up when its broker died
    /// would otherwise hold the high watermark, and every acks=all produce, for up to
    /// replica.lag.time.max.ms after the controller fenced it. Returns the new high watermark
    /// if it moved.
    pub fn set_eligible_brokers(
        &mut self,
        eligible: BTreeMap<i32, i64>,
        now_ms: i64,
    ) -> Option<u64> {
        self.observe(now_ms);
        self.eligible = Some(eligible);
        self.update_high_watermark(now_ms)
    }

    /// Whether follower `id` may join the ISR: its broker is eligible, and the incarnation
    /// that fetched is the registered one (KIP-903; an epoch of -1 is a fetcher that does not
    /// send one).
    fn is_isr_eligible(&self, id: i32, f: &Follower) -> bool {
        match &self.eligible {
            None => true,
            Some(brokers) => brokers.get(&id).is_some_and(|registered| {
                f.broker_epoch.is_none_or(|e| e == -1 || e == *registered)
            }),
        }
    }

    /// New settings. They apply from the next event (that event returns any high watermark
    /// move they allow, e.g. a lower min.insync.replicas).
    pub fn set_config(&mut self, config: ReplicationConfig) {
        self.config = config;
    }

    /// The leader's log end offset (the end the high watermark may reach) is now
    /// `log_end_offset`; a smaller value than before is ignored (a leader never truncates).
    /// Returns the new high watermark if it moved.
    pub fn on_local_append(&mut self, log_end_offset: u64) -> Option<u64> {
        self.log_end_offset = self.log_end_offset.max(log_end_offset);
        self.update_high_watermark(self.last_now_ms)
    }

    /// A follower fetched from `fetch_offset` carrying `broker_epoch` (-1: not sent). Ignored
    /// for a replica outside the replica set and for a broker epoch older than the one this
    /// follower last sent (a fetch from its previous life, KIP-903). A fetch offset beyond the
    /// leader's log end (which the shell answers OFFSET_OUT_OF_RANGE) counts as the log end.
    pub fn on_follower_fetch(
        &mut self,
        replica_id: i32,
        broker_epoch: i64,
        fetch_offset: u64,
        now_ms: i64,
    ) -> Effect {
        self.observe(now_ms);
        if replica_id == self.local_id || !self.replicas.contains(&replica_id) {
            return Effect::default();
        }
        let leader_end = self.log_end_offset;
        let Some(f) = self.followers.get_mut(&replica_id) else {
            return Effect::default();
        };
        if broker_epoch >= 0 {
            match f.broker_epoch {
                Some(stored) if stored > broker_epoch => return Effect::default(),
                Some(stored) if stored != broker_epoch => f.join_barred_until_ms = None,
                _ => {}
            }
        }
        f.record_fetch(
            fetch_offset.min(leader_end),
            leader_end,
            broker_epoch,
            now_ms,
        );
        // Propose before updating the high watermark: an expansion's joiner bounds it at once.
        let proposal = self.maybe_expand(replica_id, now_ms);
        Effect {
            high_watermark_moved: self.update_high_watermark(now_ms),
            proposal,
        }
    }

    /// The timer: proposes removing lagging ISR members, resends a change due for a retry, and moves the high watermark a follower outside the
    /// ISR stopped holding back.
    pub fn tick(&mut self, now_ms: i64) -> Effect {
        self.observe(now_ms);
        let proposal = match &mut self.in_flight {
            Some(f) => match f.wait {
                Wait::RetryAt(t) if now_ms >= t => {
                    f.proposal.id = self.next_proposal_id;
                    self.next_proposal_id += 1;
                    f.wait = Wait::Response;
                    Some(f.proposal.clone())
                }
                _ => None,
            },
            None => self.maybe_shrink(now_ms),
        };
        Effect {
            high_watermark_moved: self.update_high_watermark(now_ms),
            proposal,
        }
    }

    /// The controller's answer to the proposal `proposal_id`; an answer to anything but the
    /// proposal now awaiting one is ignored. A committed answer for another leader epoch, or
    /// an older partition epoch, counts as stale. Returns the new high watermark if it moved.
    pub fn on_proposal_result(
        &mut self,
        proposal_id: u64,
        result: ProposalResult,
        now_ms: i64,
    ) -> Option<u64> {
        self.observe(now_ms);
        let Some(flight) = &mut self.in_flight else {
            return self.update_high_watermark(now_ms);
        };
        if flight.proposal.id != proposal_id || flight.wait != Wait::Response {
            return self.update_high_watermark(now_ms);
        }
        match result {
            ProposalResult::Committed {
                isr,
                leader_epoch,
                partition_epoch,
            } => {
                if leader_epoch != self.leader_epoch || partition_epoch < self.partition_epoch {
                    flight.wait = Wait::Metadata;
                } else {
                    self.in_flight = None;
                    let old_isr = std::mem::take(&mut self.isr);
                    let replicas = std::mem::take(&mut self.replicas);
                    self.set_membership(&replicas, &isr);
                    self.partition_epoch = partition_epoch;
                    self.grant_joiners(&old_isr, now_ms);
                }
            }
            ProposalResult::Stale => flight.wait = Wait::Metadata,
            ProposalResult::RetryLater => {
                flight.wait = Wait::RetryAt(now_ms.saturating_add(ISR_CHANGE_RETRY_BACKOFF_MS));
            }
            ProposalResult::Rejected => {
                let proposed = flight.proposal.isr_ids();
                self.in_flight = None;
                let until = now_ms.saturating_add(self.config.replica_lag_time_max_ms.max(0));
                for id in proposed {
                    if self.isr.binary_search(&id).is_err()
                        && let Some(f) = self.followers.get_mut(&id)
                    {
                        f.join_barred_until_ms = Some(until);
                    }
                }
                self.no_proposal_before_ms = now_ms.saturating_add(ISR_CHANGE_RETRY_BACKOFF_MS);
            }
        }
        self.update_high_watermark(now_ms)
    }

    /// The leader's log start offset moved up to `log_start_offset` (retention, DeleteRecords;
    /// normally not past the high watermark). Returns the new high watermark if it had to
    /// follow.
    pub fn on_log_start_moved(&mut self, log_start_offset: u64) -> Option<u64> {
        self.log_start_offset = self.log_start_offset.max(log_start_offset);
        self.log_end_offset = self.log_end_offset.max(self.log_start_offset);
        if self.high_watermark < self.log_start_offset {
            self.high_watermark = self.log_start_offset;
            return Some(self.high_watermark);
        }
        None
    }

    /// When [`LeaderState::tick`] next has something to do: `None` if only another event
    /// can change anything. A time not after the latest event's means "now".
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let lag = self.config.replica_lag_time_max_ms;
        let maximal = self.maximal_isr_set();
        let mut deadline: Option<i64> = None;
        let mut consider = |t: i64| deadline = Some(deadline.map_or(t, |d: i64| d.min(t)));
        // A follower outside the ISR stops holding the high watermark back.
        for (id, f) in &self.followers {
            if maximal.contains(id) || f.log_end_offset.is_none_or(|l| l >= self.log_end_offset) {
                continue;
            }
            if let Some(t) = f.last_caught_up_ms {
                let expiry = t.saturating_add(lag).saturating_add(1);
                if expiry > self.last_now_ms {
                    consider(expiry);
                }
            }
        }
        match self.in_flight.as_ref().map(|f| f.wait) {
            Some(Wait::RetryAt(t)) => consider(t),
            Some(_) => {}
            None => {
                let floor = self.no_proposal_before_ms.max(self.last_now_ms);
                for id in self.isr.iter().filter(|&&id| id != self.local_id) {
                    let Some(f) = self.followers.get(id) else {
                        consider(floor);
                        continue;
                    };
                    if f.log_end_offset == Some(self.log_end_offset) {
                        continue;
                    }
                    let out_at = f
                        .last_caught_up_ms
                        .map_or(i64::MIN, |t| t.saturating_add(lag).saturating_add(1));
                    consider(out_at.max(floor));
                }
            }
        }
        deadline
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// The leader's log end offset as last reported.
    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    /// The leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// The partition epoch of the committed ISR.
    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    /// The first offset of the current leader epoch: followers join the ISR only past it.
    pub fn epoch_start_offset(&self) -> u64 {
        self.epoch_start_offset
    }

    /// The replica set, in assignment order.
    pub fn replicas(&self) -> &[i32] {
        &self.replicas
    }

    /// The committed ISR, sorted by broker id.
    pub fn isr(&self) -> &[i32] {
        &self.isr
    }

    /// A follower's last fetch offset and when it was last caught up, if it is a replica
    /// (what KIP-392's replica selector compares).
    pub fn follower_progress(&self, id: i32) -> Option<(Option<u64>, Option<i64>)> {
        self.followers
            .get(&id)
            .map(|f| (f.log_end_offset, f.last_caught_up_ms))
    }

    /// The committed ISR plus the members of an in-flight expansion, sorted: the replicas the
    /// high watermark waits for.
    pub fn maximal_isr(&self) -> Vec<i32> {
        self.maximal_isr_set().into_iter().collect()
    }

    /// The proposal sent and not yet resolved, if any.
    pub fn in_flight(&self) -> Option<&IsrProposal> {
        self.in_flight.as_ref().map(|f| &f.proposal)
    }

    /// True when the committed ISR is smaller than min.insync.replicas (capped at the
    /// replication factor): acks=all is refused with NOT_ENOUGH_REPLICAS and the high
    /// watermark does not move.
    pub fn is_under_min_isr(&self) -> bool {
        self.isr.len() < self.effective_min_isr()
    }

    /// True when the record at `offset` is committed (the high watermark is past it).
    pub fn is_committed(&self, offset: u64) -> bool {
        self.high_watermark > offset
    }

    /// Where an acks=all produce whose last record is at `last_offset` stands.
    pub fn acks_all_status(&self, last_offset: u64) -> AcksAllStatus {
        if !self.is_committed(last_offset) {
            AcksAllStatus::Waiting
        } else if self.maximal_isr_set().len() < self.effective_min_isr() {
            AcksAllStatus::NotEnoughReplicasAfterAppend
        } else {
            AcksAllStatus::Done
        }
    }

    fn observe(&mut self, now_ms: i64) {
        self.last_now_ms = self.last_now_ms.max(now_ms);
    }

    /// min.insync.replicas capped at the replication factor (Kafka's `effectiveMinIsr`).
    fn effective_min_isr(&self) -> usize {
        let remote = self
            .replicas
            .iter()
            .filter(|&&r| r != self.local_id)
            .count();
        self.config.min_insync_replicas.min(remote + 1)
    }

    /// Stores the replica set and ISR, keeping the state of followers that stay.
    fn set_membership(&mut self, replicas: &[i32], isr: &[i32]) {
        let mut seen = BTreeSet::new();
        self.replicas = replicas
            .iter()
            .copied()
            .filter(|r| seen.insert(*r))
            .collect();
        let mut isr = isr.to_vec();
        isr.sort_unstable();
        isr.dedup();
        self.isr = isr;
        let local = self.local_id;
        let wanted: BTreeSet<i32> = self
            .replicas
            .iter()
            .chain(&self.isr)
            .copied()
            .filter(|&id| id != local)
            .collect();
        self.followers.retain(|id, _| wanted.contains(id));
        for id in wanted {
            self.followers.entry(id).or_default();
        }
    }

    /// Members new to the committed ISR get a full lag allowance from now, so a follower that
    /// reached the high watermark but not the leader's end is not thrown out right after it
    /// joined.
    fn grant_joiners(&mut self, old_isr: &[i32], now_ms: i64) {
        for id in &self.isr {
            if old_isr.binary_search(id).is_err()
                && let Some(f) = self.followers.get_mut(id)
            {
                f.last_caught_up_ms = Some(f.last_caught_up_ms.map_or(now_ms, |t| t.max(now_ms)));
            }
        }
    }

    fn maximal_isr_set(&self) -> BTreeSet<i32> {
        let mut set: BTreeSet<i32> = self.isr.iter().copied().collect();
        if let Some(f) = &self.in_flight {
            set.extend(f.proposal.new_isr.iter().map(|&(id, _)| id));
        }
        set
    }

    /// A follower outside the committed ISR that has caught up in this epoch, and is not
    /// barred at `now_ms`.
    fn can_join(&self, id: i32, f: &Follower, now_ms: i64) -> bool {
        id != self.local_id
            && self.replicas.contains(&id)
            && self.isr.binary_search(&id).is_err()
            && !f.is_barred(now_ms)
            && self.is_isr_eligible(id, f)
            && f.log_end_offset
                .is_some_and(|l| l >= self.high_watermark && l >= self.epoch_start_offset)
    }

    /// Whether a new proposal may go out now.
    fn may_propose(&self, now_ms: i64) -> bool {
        self.in_flight.is_none() && now_ms >= self.no_proposal_before_ms
    }

    /// Kafka's `maybeShrinkIsr`: every lagging ISR member out, in one proposal.
    fn maybe_shrink(&mut self, now_ms: i64) -> Option<IsrProposal> {
        if !self.may_propose(now_ms) {
            return None;
        }
        let lag = self.config.replica_lag_time_max_ms;
        let leader_end = self.log_end_offset;
        let keep: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|&id| {
                id == self.local_id
                    || self
                        .followers
                        .get(&id)
                        .is_some_and(|f| f.is_caught_up(leader_end, now_ms, lag))
            })
            .collect();
        (keep.len() < self.isr.len()).then(|| self.propose(keep))
    }

    /// Kafka's `maybeExpandIsr`: the follower that just fetched in, if it caught up.
    fn maybe_expand(&mut self, id: i32, now_ms: i64) -> Option<IsrProposal> {
        if !self.may_propose(now_ms)
            || !self
                .followers
                .get(&id)
                .is_some_and(|f| self.can_join(id, f, now_ms))
        {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.push(id);
        isr.sort_unstable();
        Some(self.propose(isr))
    }

    /// Puts `new_isr` (sorted) in flight.
    fn propose(&mut self, new_isr: Vec<i32>) -> IsrProposal {
        let proposal = IsrProposal {
            id: self.next_proposal_id,
            new_isr: new_isr
                .iter()
                .map(|&id| {
                    let epoch = self.followers.get(&id).and_then(|f| f.broker_epoch);
                    (id, epoch.unwrap_or(-1))
                })
                .collect(),
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
        };
        self.next_proposal_id += 1;
        self.in_flight = Some(InFlight {
            proposal: proposal.clone(),
            wait: Wait::Response,
        });
        proposal
    }

    /// Kafka's `maybeIncrementLeaderHW`.
    fn update_high_watermark(&mut self, now_ms: i64) -> Option<u64> {
        if self.is_under_min_isr() {
            return None;
        }
        let lag = self.config.replica_lag_time_max_ms;
        let leader_end = self.log_end_offset;
        let maximal = self.maximal_isr_set();
        let mut candidate = leader_end;
        for &id in maximal.iter().filter(|&&id| id != self.local_id) {
            match self.followers.get(&id).and_then(|f| f.log_end_offset) {
                Some(end) => candidate = candidate.min(end),
                None => return None,
            }
        }
        for (id, f) in &self.followers {
            if maximal.contains(id)
                || !self.replicas.contains(id)
                || f.is_barred(now_ms)
                || !self.is_isr_eligible(*id, f)
            {
                continue;
            }
            if let Some(end) = f.log_end_offset
                && f.is_caught_up(leader_end, now_ms, lag)
            {
                candidate = candidate.min(end);
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

/// Whether `isr` (any order) holds exactly the members of `sorted`.
fn same_members(isr: &[i32], sorted: &[i32]) -> bool {
    let mut isr = isr.to_vec();
    isr.sort_unstable();
    isr.dedup();
    isr == sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 1000;

    fn config(min_insync_replicas: usize) -> ReplicationConfig {
        ReplicationConfig {
            replica_lag_time_max_ms: LAG,
            min_insync_replicas,
        }
    }

    /// Broker 1 leads epoch 5 (partition epoch 10) from offset 0, empty log, at time 0.
    fn leader(replicas: &[i32], isr: &[i32], min_isr: usize) -> LeaderState {
        LeaderState::new(1, 5, 10, 0, replicas, isr, 0, 0, 0, 0, config(min_isr))
    }

    fn committed(s: &LeaderState, p: &IsrProposal) -> ProposalResult {
        ProposalResult::Committed {
            isr: p.isr_ids(),
            leader_epoch: s.leader_epoch(),
            partition_epoch: s.partition_epoch() + 1,
        }
    }

    fn commit(s: &mut LeaderState, p: &IsrProposal, now: i64) -> Option<u64> {
        let r = committed(s, p);
        s.on_proposal_result(p.id, r, now)
    }

    #[test]
    fn high_watermark_is_the_smallest_isr_log_end() {
        let mut s = leader(&[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            s.on_local_append(10),
            None,
            "followers' log ends are unknown"
        );
        assert_eq!(s.on_follower_fetch(2, 7, 6, 1).high_watermark_moved, None);
        assert_eq!(
            s.on_follower_fetch(3, 7, 4, 2).high_watermark_moved,
            Some(4)
        );
        assert_eq!(
            s.on_follower_fetch(3, 7, 10, 3).high_watermark_moved,
            Some(6)
        );
        assert_eq!(
            s.on_follower_fetch(2, 7, 10, 4).high_watermark_moved,
            Some(10)
        );
        assert!(s.is_committed(9));
        assert!(!s.is_committed(10));
        assert_eq!(s.on_local_append(12), None);
        assert_eq!(s.high_watermark(), 10);
    }

    #[test]
    fn high_watermark_never_goes_back_nor_past_the_leader_end() {
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let _ = s.on_local_append(10);
        assert_eq!(
            s.on_follower_fetch(2, 7, 8, 1).high_watermark_moved,
            Some(8)
        );
        // The follower comes back lower (it lost data): the high watermark stays.
        assert_eq!(s.on_follower_fetch(2, 7, 3, 2).high_watermark_moved, None);
        assert_eq!(s.high_watermark(), 8);
        // A fetch beyond the leader's end counts as the leader's end.
        assert_eq!(
            s.on_follower_fetch(2, 7, 50, 3).high_watermark_moved,
            Some(10)
        );
        assert_eq!(s.high_watermark(), 10);
        assert_eq!(
            s.on_local_append(5),
            None,
            "a leader's log end never goes back"
        );
        assert_eq!(s.log_end_offset(), 10);
        // new() clamps the high watermark into the log.
        let s = LeaderState::new(1, 1, 1, 5, &[1], &[1], 3, 5, 9, 0, config(1));
        assert_eq!(s.high_watermark(), 5);
        let s = LeaderState::new(1, 1, 1, 5, &[1], &[1], 3, 5, 1, 0, config(1));
        assert_eq!(s.high_watermark(), 3);
    }

    #[test]
    fn high_watermark_stops_below_min_isr_and_resumes() {
        let mut s = leader(&[1, 2, 3], &[1, 2, 3], 2);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 10, 1);
        let _ = s.on_follower_fetch(3, 7, 10, 1);
        assert_eq!(s.high_watermark(), 10);
        // Both followers go silent; the leader appends; they are dropped from the ISR.
        let _ = s.on_local_append(20);
        let p = s.tick(LAG + 2).proposal.expect("shrink");
        assert_eq!(p.isr_ids(), vec![1]);
        assert_eq!(commit(&mut s, &p, LAG + 2), None);
        assert!(s.is_under_min_isr());
        assert_eq!(
            s.on_local_append(30),
            None,
            "KIP-966: no progress below min ISR"
        );
        assert_eq!(s.tick(LAG + 3).high_watermark_moved, None);
        assert_eq!(s.high_watermark(), 10);
        // Follower 2 catches up and rejoins: the high watermark resumes.
        let e = s.on_follower_fetch(2, 7, 30, LAG + 4);
        let p = e.proposal.expect("expansion");
        assert_eq!(p.isr_ids(), vec![1, 2]);
        assert_eq!(
            e.high_watermark_moved, None,
            "still under min ISR until committed"
        );
        assert_eq!(commit(&mut s, &p, LAG + 5), Some(30));
        assert!(!s.is_under_min_isr());
    }

    #[test]
    fn min_isr_is_capped_at_the_replication_factor() {
        let mut s = leader(&[1], &[1], 3);
        assert!(!s.is_under_min_isr());
        assert_eq!(s.on_local_append(4), Some(4));
    }

    #[test]
    fn lagging_follower_leaves_after_the_lag_time_not_before() {
        let mut s = leader(&[1, 2, 3], &[1, 2, 3], 1);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 10, 100);
        let _ = s.on_follower_fetch(3, 7, 10, 100);
        let _ = s.on_local_append(11);
        // 3 keeps fetching everything; 2 goes silent after its fetch at 100.
        let _ = s.on_follower_fetch(3, 7, 11, 600);
        assert_eq!(s.next_deadline_ms(), Some(100 + LAG + 1));
        assert_eq!(s.tick(100 + LAG).proposal, None);
        let p = s.tick(100 + LAG + 1).proposal.expect("shrink");
        assert_eq!(p.isr_ids(), vec![1, 3]);
        assert_eq!(
            (p.leader_epoch, p.partition_epoch),
            (5, 10),
            "based on the current epochs"
        );
        assert_eq!(commit(&mut s, &p, 100 + LAG + 2), Some(11));
        assert_eq!(s.isr(), &[1, 3]);
        assert_eq!(s.partition_epoch(), 11);
    }

    #[test]
    fn follower_at_the_leader_end_stays_however_long_it_is_idle() {
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 10, 1);
        assert_eq!(s.next_deadline_ms(), None);
        assert_eq!(s.tick(100 * LAG).proposal, None);
    }

    #[test]
    fn all_laggards_leave_in_one_proposal() {
        let mut s = leader(&[1, 2, 3, 4], &[1, 2, 3, 4], 1);
        let _ = s.on_local_append(10);
        for id in [2, 3, 4] {
            let _ = s.on_follower_fetch(id, 7, 5, 1);
        }
        let _ = s.on_follower_fetch(4, 7, 10, LAG);
        let p = s.tick(LAG + 1).proposal.expect("shrink");
        assert_eq!(p.isr_ids(), vec![1, 4]);
    }

    #[test]
    fn follower_rejoins_only_at_the_high_watermark_and_in_this_epoch() {
        // Epoch 5 started at 50; the high watermark is still 40 (followers had not confirmed).
        let mut s = LeaderState::new(1, 5, 10, 50, &[1, 2, 3], &[1, 2], 0, 50, 40, 0, config(1));
        let e = s.on_follower_fetch(3, 9, 45, 1);
        assert_eq!(
            e.proposal, None,
            "past the high watermark, not the epoch start"
        );
        let e = s.on_follower_fetch(3, 9, 50, 2);
        let p = e.proposal.expect("expansion");
        assert_eq!(p.new_isr, vec![(1, -1), (2, -1), (3, 9)]);
        // The joiner counts for the high watermark while the change is in flight.
        assert_eq!(s.maximal_isr(), vec![1, 2, 3]);
        let _ = s.on_local_append(60);
        assert_eq!(
            s.on_follower_fetch(2, 7, 60, 3).high_watermark_moved,
            Some(50)
        );
        assert_eq!(commit(&mut s, &p, 4), None);
        assert_eq!(s.isr(), &[1, 2, 3]);

        // Below the high watermark: not added.
        let mut s = leader(&[1, 2, 3], &[1, 2], 1);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 10, 1);
        assert_eq!(s.on_follower_fetch(3, 7, 9, 2).proposal, None);
        assert!(s.on_follower_fetch(3, 7, 10, 3).proposal.is_some());
    }

    #[test]
    fn a_replica_removed_with_the_isr_change_that_completed_a_reassignment_stops_counting() {
        // Replicas {1,2,3} moving to {1,2,4}: 4 joins, and the controller's answer (the ISR,
        // the final partition epoch) comes before the image that also drops 3 from the replicas.
        let mut s = leader(&[1, 2, 4, 3], &[1, 2, 3], 2);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 10, 1);
        let _ = s.on_follower_fetch(3, 8, 10, 1);
        let p = s.on_follower_fetch(4, 9, 10, 2).proposal.expect("4 joins");
        let answer = ProposalResult::Committed {
            isr: vec![1, 2, 4],
            leader_epoch: 5,
            partition_epoch: 12,
        };
        let _ = s.on_proposal_result(p.id, answer, 3);
        assert_eq!(s.isr(), &[1, 2, 4]);
        // The image of that same partition epoch: replica 3 is gone.
        let _ = s.update_metadata(5, 12, &[1, 2, 4], &[1, 2, 4], 4);
        let _ = s.on_local_append(20);
        let _ = s.on_follower_fetch(2, 7, 20, 5);
        let e = s.on_follower_fetch(4, 9, 20, 5);
        assert_eq!(e.high_watermark_moved, Some(20), "3 no longer holds it");
    }

    #[test]
    fn a_fenced_follower_outside_the_isr_stops_holding_the_high_watermark() {
        // Follower 3 was caught up when its broker died; the controller fenced it and took
        // it out of the ISR. min.insync=2 with {1, 2} left.
        let mut s = leader(&[1, 2, 3], &[1, 2, 3], 2);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 10, 1);
        let _ = s.on_follower_fetch(3, 9, 10, 1);
        assert_eq!(s.high_watermark(), 10);
        let _ = s.update_metadata(5, 11, &[1, 2, 3], &[1, 2], 2);
        let _ = s.on_local_append(20);
        let _ = s.on_follower_fetch(2, 7, 20, 3);
        assert_eq!(
            s.high_watermark(),
            10,
            "without broker states, a caught-up follower is waited for (Kafka's rule)"
        );
        let alive = BTreeMap::from([(1, 1), (2, 7)]);
        assert_eq!(
            s.set_eligible_brokers(alive, 4),
            Some(20),
            "fenced 3 no longer counts"
        );
        // Back with a new registration, at the high watermark: it joins, with its new epoch.
        let back = BTreeMap::from([(1, 1), (2, 7), (3, 12)]);
        assert_eq!(s.set_eligible_brokers(back, 5), None);
        assert_eq!(
            s.on_follower_fetch(3, 9, 20, 6).proposal,
            None,
            "its old incarnation may not"
        );
        let p = s
            .on_follower_fetch(3, 12, 20, 7)
            .proposal
            .expect("expansion");
        assert_eq!(p.new_isr, vec![(1, -1), (2, 7), (3, 12)]);
    }

    #[test]
    fn follower_behind_an_appending_leader_still_counts_as_caught_up() {
        // Kafka's last_fetch_leader_leo rule: each fetch reaches where the leader was at the
        // previous fetch, so the follower is caught up as of the previous fetch's time.
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let mut end = 0;
        let mut follower_end = 0;
        for round in 1..=100 {
            let now = round * 300;
            end += 5;
            let _ = s.on_local_append(end);
            let e = s.tick(now);
            assert_eq!(e.proposal, None, "round {round}: never lagging");
            let _ = s.on_follower_fetch(2, 7, follower_end, now);
            follower_end = end;
            assert!(
                s.followers[&2].log_end_offset.expect("follower 2 fetched") < s.log_end_offset()
            );
        }
        assert_eq!(s.isr(), &[1, 2]);
        assert_eq!(s.high_watermark(), end - 5);

        // One that fetches as often but never gets further is thrown out.
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let _ = s.on_local_append(5);
        let mut proposal = None;
        for round in 1..=10 {
            let now = round * 300;
            let _ = s.on_local_append(5 + round as u64);
            let _ = s.on_follower_fetch(2, 7, 5, now);
            proposal = proposal.or(s.tick(now).proposal);
        }
        assert_eq!(proposal.expect("shrink").isr_ids(), vec![1]);
    }

    #[test]
    fn follower_outside_the_isr_catches_up_behind_an_appending_leader() {
        // The leader is alone in the ISR and appends before every fetch; the follower, always
        // one fetch behind, still joins because the high watermark waits for a caught-up
        // follower (Kafka's shouldWaitForReplicaToJoinIsr).
        let mut s = leader(&[1, 2], &[1], 1);
        let mut end = 0;
        let mut follower_end = 0;
        let mut joined = false;
        for round in 1..=20 {
            let now = round * 100;
            end += 5;
            let _ = s.on_local_append(end);
            let e = s.on_follower_fetch(2, 7, follower_end, now);
            follower_end = end;
            if let Some(p) = e.proposal {
                let _ = commit(&mut s, &p, now);
                joined = true;
            }
            if joined {
                assert!(
                    s.high_watermark()
                        <= s.followers[&2].log_end_offset.expect("follower 2 fetched")
                );
            }
        }
        assert!(joined);
        assert_eq!(s.isr(), &[1, 2]);
    }

    #[test]
    fn a_caught_up_outsider_stops_holding_the_high_watermark_after_the_lag() {
        let mut s = leader(&[1, 2], &[1], 1);
        let _ = s.on_local_append(10);
        assert_eq!(s.high_watermark(), 10);
        // Follower 2 reaches the leader's end and is proposed, but the controller rejects it.
        let _ = s.on_follower_fetch(2, 7, 10, 0);
        let p = s.in_flight().cloned().expect("joins at the high watermark");
        let _ = s.on_proposal_result(p.id, ProposalResult::Rejected, 1);
        // Rejected: barred, so it does not hold the high watermark back.
        assert_eq!(s.on_local_append(20), Some(20));

        let mut s = leader(&[1, 2], &[1], 1);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 8, 0);
        let _ = s.on_follower_fetch(2, 7, 10, 100);
        let p = s.in_flight().cloned().expect("expansion");
        let _ = s.on_proposal_result(p.id, ProposalResult::Stale, 100);
        let _ = s.update_metadata(5, 11, &[1, 2], &[1], 150);
        let _ = s.on_local_append(20);
        assert_eq!(s.high_watermark(), 10, "held back by caught-up follower 2");
        assert_eq!(s.next_deadline_ms(), Some(100 + LAG + 1));
        assert_eq!(s.tick(100 + LAG).high_watermark_moved, None);
        assert_eq!(s.tick(100 + LAG + 1).high_watermark_moved, Some(20));
        assert_eq!(s.next_deadline_ms(), None);
    }

    #[test]
    fn one_proposal_in_flight_at_a_time() {
        let mut s = leader(&[1, 2, 3, 4], &[1, 2, 3], 1);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 10, 1);
        let p = s
            .on_follower_fetch(4, 7, 10, 1)
            .proposal
            .expect("expansion");
        assert_eq!(p.isr_ids(), vec![1, 2, 3, 4]);
        // 3 never fetched: it lags, but nothing more is proposed while 4's change is out.
        assert_eq!(s.next_deadline_ms(), None);
        assert_eq!(s.tick(10 * LAG).proposal, None);
        assert_eq!(s.on_follower_fetch(2, 7, 10, 10 * LAG).proposal, None);
        let _ = commit(&mut s, &p, 10 * LAG);
        let p = s.tick(10 * LAG).proposal.expect("now the shrink");
        assert_eq!(p.isr_ids(), vec![1, 2, 4]);
    }

    #[test]
    fn stale_answer_waits_for_metadata() {
        let mut s = leader(&[1, 2, 3], &[1, 2, 3], 1);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 10, 1);
        let p = s.tick(LAG + 1).proposal.expect("shrink 3");
        assert_eq!(
            s.on_proposal_result(p.id, ProposalResult::Stale, LAG + 2),
            None
        );
        assert_eq!(s.next_deadline_ms(), None);
        assert_eq!(s.tick(100 * LAG).proposal, None);
        assert_eq!(s.in_flight(), Some(&p));
        // Same version again: nothing changes.
        let _ = s.update_metadata(5, 10, &[1, 2, 3], &[1, 2, 3], 100 * LAG);
        assert_eq!(s.in_flight(), Some(&p));
        // The controller had fenced broker 3 itself.
        assert_eq!(
            s.update_metadata(5, 11, &[1, 2, 3], &[1, 2], 100 * LAG),
            Some(10)
        );
        assert_eq!(s.in_flight(), None);
        assert_eq!(s.isr(), &[1, 2]);
        // A late answer to the dropped proposal is ignored.
        let late = ProposalResult::Committed {
            isr: vec![1],
            leader_epoch: 5,
            partition_epoch: 12,
        };
        let _ = s.on_proposal_result(p.id, late, 100 * LAG);
        assert_eq!(s.isr(), &[1, 2]);
        assert_eq!(s.partition_epoch(), 11);
    }

    #[test]
    fn committed_answer_for_another_epoch_counts_as_stale() {
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let p = s.tick(LAG + 1).proposal.expect("shrink");
        let r = ProposalResult::Committed {
            isr: vec![1],
            leader_epoch: 6,
            partition_epoch: 11,
        };
        let _ = s.on_proposal_result(p.id, r, LAG + 1);
        assert_eq!(s.isr(), &[1, 2]);
        assert_eq!(s.tick(10 * LAG).proposal, None);
        assert!(s.in_flight().is_some());
    }

    #[test]
    fn retry_later_resends_the_same_change_after_the_backoff() {
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let p = s.tick(LAG + 1).proposal.expect("shrink");
        let _ = s.on_proposal_result(p.id, ProposalResult::RetryLater, LAG + 1);
        let due = LAG + 1 + ISR_CHANGE_RETRY_BACKOFF_MS;
        assert_eq!(s.next_deadline_ms(), Some(due));
        assert_eq!(s.tick(due - 1).proposal, None);
        let again = s.tick(due).proposal.expect("retry");
        assert_ne!(again.id, p.id);
        assert_eq!(again.new_isr, p.new_isr);
        assert_eq!(s.next_deadline_ms(), None);
        // An answer to the first send is no longer the one awaited.
        let _ = s.on_proposal_result(p.id, committed(&s, &p), due);
        assert_eq!(s.isr(), &[1, 2]);
        let _ = commit(&mut s, &again, due);
        assert_eq!(s.isr(), &[1]);
    }

    #[test]
    fn rejected_joiner_is_barred_until_metadata() {
        let mut s = leader(&[1, 2], &[1], 1);
        let _ = s.on_local_append(10);
        let p = s
            .on_follower_fetch(2, 7, 10, 0)
            .proposal
            .expect("expansion");
        let _ = s.on_proposal_result(p.id, ProposalResult::Rejected, 0);
        assert_eq!(s.maximal_isr(), vec![1]);
        assert_eq!(s.on_follower_fetch(2, 7, 10, 500).proposal, None);
        assert_eq!(s.next_deadline_ms(), None, "nothing for a tick to do");
        let _ = s.update_metadata(5, 10, &[1, 2], &[1], 600);
        assert!(s.on_follower_fetch(2, 7, 10, 600).proposal.is_some());
        // The bar also ends after replica.lag.time.max.ms.
        let mut s = leader(&[1, 2], &[1], 1);
        let p = s.on_follower_fetch(2, 7, 0, 0).proposal.expect("expansion");
        let _ = s.on_proposal_result(p.id, ProposalResult::Rejected, 0);
        assert_eq!(s.on_follower_fetch(2, 7, 0, LAG - 1).proposal, None);
        assert!(s.on_follower_fetch(2, 7, 0, LAG).proposal.is_some());
        // A new broker epoch lifts the bar too.
        let mut s = leader(&[1, 2], &[1], 1);
        let p = s.on_follower_fetch(2, 7, 0, 0).proposal.expect("expansion");
        let _ = s.on_proposal_result(p.id, ProposalResult::Rejected, 0);
        assert_eq!(s.on_follower_fetch(2, 7, 0, 200).proposal, None);
        let p = s
            .on_follower_fetch(2, 8, 0, 200)
            .proposal
            .expect("new life");
        assert_eq!(p.new_isr, vec![(1, -1), (2, 8)]);
    }

    #[test]
    fn stale_broker_epoch_fetch_is_ignored() {
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 8, 4, 1);
        let _ = s.on_follower_fetch(2, 7, 10, 2);
        assert_eq!(s.followers[&2].log_end_offset, Some(4));
        assert_eq!(s.high_watermark(), 4);
        let _ = s.on_follower_fetch(2, -1, 10, 3);
        assert_eq!(s.high_watermark(), 10);
    }

    #[test]
    fn fetch_from_outside_the_replica_set_is_ignored() {
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let _ = s.on_local_append(10);
        assert_eq!(s.on_follower_fetch(9, 1, 10, 1), Effect::default());
        assert_eq!(s.on_follower_fetch(1, 1, 10, 1), Effect::default());
        assert!(!s.followers.contains_key(&9));
        assert_eq!(s.high_watermark(), 0);
    }

    #[test]
    fn new_leader_epoch_resets_followers_and_moves_the_epoch_start() {
        let mut s = leader(&[1, 2, 3], &[1, 2], 1);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 5, 1);
        let _ = s.on_follower_fetch(3, 7, 3, 1);
        let p = s.tick(LAG + 1).proposal.expect("shrink 2");
        let _ = s.update_metadata(6, 11, &[1, 2, 3], &[1, 2], 5 * LAG);
        assert_eq!(s.in_flight(), None);
        assert_eq!(s.leader_epoch(), 6);
        assert_eq!(s.epoch_start_offset(), 10);
        assert_ne!(p.leader_epoch, s.leader_epoch());
        // 2 gets a fresh allowance; its known log end still bounds the high watermark.
        assert_eq!(s.tick(5 * LAG + LAG).proposal, None);
        assert_eq!(s.high_watermark(), 5);
        assert_eq!(s.next_deadline_ms(), Some(6 * LAG + 1));
        // 3 must reach the new epoch's start, not just the high watermark.
        let _ = s.on_follower_fetch(2, 7, 10, 6 * LAG);
        assert_eq!(s.on_follower_fetch(3, 7, 9, 6 * LAG).proposal, None);
        assert!(s.on_follower_fetch(3, 7, 10, 6 * LAG).proposal.is_some());
    }

    #[test]
    fn log_start_pulls_the_high_watermark_up() {
        let mut s = leader(&[1, 2], &[1, 2], 1);
        let _ = s.on_local_append(10);
        assert_eq!(s.on_log_start_moved(0), None);
        assert_eq!(s.on_log_start_moved(4), Some(4));
        assert_eq!(s.high_watermark(), 4);
        assert_eq!(s.on_log_start_moved(2), None);
    }

    #[test]
    fn acks_all_status_follows_the_high_watermark_and_min_isr() {
        let mut s = leader(&[1, 2], &[1, 2], 2);
        let _ = s.on_local_append(10);
        let _ = s.on_follower_fetch(2, 7, 6, 1);
        assert_eq!(s.acks_all_status(5), AcksAllStatus::Done);
        assert_eq!(s.acks_all_status(6), AcksAllStatus::Waiting);
        let p = s.tick(LAG + 2).proposal.expect("shrink");
        assert_eq!(
            s.acks_all_status(5),
            AcksAllStatus::Done,
            "shrink not committed"
        );
        let _ = commit(&mut s, &p, LAG + 2);
        assert_eq!(
            s.acks_all_status(5),
            AcksAllStatus::NotEnoughReplicasAfterAppend
        );
        assert_eq!(s.acks_all_status(6), AcksAllStatus::Waiting);
    }

    #[test]
    fn error_codes_map_to_results() {
        assert_eq!(ProposalResult::for_error_code(95), ProposalResult::Stale);
        assert_eq!(ProposalResult::for_error_code(74), ProposalResult::Stale);
        assert_eq!(
            ProposalResult::for_error_code(107),
            ProposalResult::Rejected
        );
        assert_eq!(
            ProposalResult::for_error_code(41),
            ProposalResult::RetryLater
        );
        assert_eq!(
            ProposalResult::for_error_code(7),
            ProposalResult::RetryLater
        );
    }

    // ---- Randomized schedules ----

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// The controller's view of the partition.
    struct Controller {
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    }

    struct World {
        rng: Lcg,
        s: LeaderState,
        ctrl: Controller,
        replicas: Vec<i32>,
        /// Each follower's latest accepted fetch offset (its log end as far as we know).
        pos: BTreeMap<i32, u64>,
        broker_epoch: BTreeMap<i32, i64>,
        /// Proposals sent and not answered yet.
        net: Vec<IsrProposal>,
        now: i64,
        lag: i64,
    }

    impl World {
        fn new(seed: u64) -> World {
            let mut rng = Lcg(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed);
            rng.next();
            let n = 1 + rng.below(4) as i32;
            let replicas: Vec<i32> = (1..=n).collect();
            let lag = 20 + rng.below(400) as i64;
            let min_isr = 1 + rng.below(n as u64 + 1) as usize;
            let mut isr = vec![1];
            isr.extend((2..=n).filter(|_| rng.chance(60)));
            let log_start = rng.below(10);
            let log_end = log_start + rng.below(20);
            let hw = log_start + rng.below(log_end - log_start + 1);
            let mut pos = BTreeMap::new();
            let mut broker_epoch = BTreeMap::new();
            for id in 2..=n {
                let p = if isr.contains(&id) {
                    hw + rng.below(log_end - hw + 1)
                } else {
                    rng.below(log_end + 1)
                };
                pos.insert(id, p);
                broker_epoch.insert(id, 100 + id as i64);
            }
            let cfg = ReplicationConfig {
                replica_lag_time_max_ms: lag,
                min_insync_replicas: min_isr,
            };
            let now = 1000;
            let s = LeaderState::new(
                1, 3, 7, log_end, &replicas, &isr, log_start, log_end, hw, now, cfg,
            );
            World {
                rng,
                s,
                ctrl: Controller {
                    leader_epoch: 3,
                    partition_epoch: 7,
                    isr,
                },
                replicas,
                pos,
                broker_epoch,
                net: Vec::new(),
                now,
                lag,
            }
        }

        fn followers(&self) -> Vec<i32> {
            self.replicas
                .iter()
                .copied()
                .filter(|&id| id != 1)
                .collect()
        }

        /// The controller handles one AlterPartition; `faithful`: no failures.
        fn deliver(&mut self, index: usize, faithful: bool) -> Option<u64> {
            let p = self.net.remove(index);
            let matches = p.leader_epoch == self.ctrl.leader_epoch
                && p.partition_epoch == self.ctrl.partition_epoch;
            let result = if !matches {
                ProposalResult::Stale
            } else {
                let roll = if faithful { 0 } else { self.rng.below(10) };
                let is_expansion = p.new_isr.len() > self.ctrl.isr.len();
                match roll {
                    0..=5 => {
                        self.ctrl.isr = p.isr_ids();
                        self.ctrl.partition_epoch += 1;
                        ProposalResult::Committed {
                            isr: self.ctrl.isr.clone(),
                            leader_epoch: self.ctrl.leader_epoch,
                            partition_epoch: self.ctrl.partition_epoch,
                        }
                    }
                    6 => {
                        // Applied, answer lost.
                        self.ctrl.isr = p.isr_ids();
                        self.ctrl.partition_epoch += 1;
                        ProposalResult::RetryLater
                    }
                    7 if is_expansion => ProposalResult::Rejected,
                    _ => ProposalResult::RetryLater,
                }
            };
            self.s.on_proposal_result(p.id, result, self.now)
        }

        fn deliver_metadata(&mut self) -> Option<u64> {
            let isr = self.ctrl.isr.clone();
            let replicas = self.replicas.clone();
            self.s.update_metadata(
                self.ctrl.leader_epoch,
                self.ctrl.partition_epoch,
                &replicas,
                &isr,
                self.now,
            )
        }

        fn sent(&mut self, p: Option<IsrProposal>, before: &Option<InFlight>, by_tick: bool) {
            let Some(p) = p else { return };
            match before.as_ref().map(|f| f.wait) {
                None => {}
                Some(Wait::RetryAt(t)) if by_tick && t <= self.now => {}
                other => panic!("proposal {p:?} while {other:?} in flight"),
            }
            assert_eq!(p.leader_epoch, self.s.leader_epoch());
            assert_eq!(p.partition_epoch, self.s.partition_epoch());
            let ids = p.isr_ids();
            assert!(ids.contains(&1), "the leader stays in the ISR");
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
            let old: BTreeSet<i32> = self.s.isr().iter().copied().collect();
            let new: BTreeSet<i32> = ids.iter().copied().collect();
            assert!(new != old && (new.is_subset(&old) || new.is_superset(&old)));
            for &(id, epoch) in &p.new_isr {
                if id != 1 && epoch != -1 {
                    assert_eq!(epoch, self.broker_epoch[&id]);
                }
            }
            self.net.push(p);
        }

        fn fetch(&mut self, id: i32, offset: u64) -> Effect {
            let e = self
                .s
                .on_follower_fetch(id, self.broker_epoch[&id], offset, self.now);
            let p = self.pos.get_mut(&id).expect("a position per replica");
            *p = offset.min(self.s.log_end_offset());
            e
        }

        fn step(&mut self) {
            let before = self.s.in_flight.clone();
            let prev_hw = self.s.high_watermark();
            let mut reported: Option<u64> = None;
            let mut via_log_start = false;
            let followers = self.followers();
            match self.rng.below(100) {
                0..=14 => {
                    let end = self.s.log_end_offset();
                    let to = if self.rng.chance(10) {
                        end.saturating_sub(self.rng.below(3))
                    } else {
                        end + self.rng.below(6)
                    };
                    reported = self.s.on_local_append(to);
                }
                15..=44 if !followers.is_empty() => {
                    let id = followers[self.rng.below(followers.len() as u64) as usize];
                    let from = self.pos[&id];
                    let end = self.s.log_end_offset();
                    let offset = match self.rng.below(4) {
                        0 => from,
                        1 => end,
                        _ => from + self.rng.below(end - from + 1),
                    };
                    let e = self.fetch(id, offset);
                    reported = e.high_watermark_moved;
                    self.sent(e.proposal, &before, false);
                }
                45..=59 => {
                    self.now += self.rng.below(self.lag as u64 * 2) as i64;
                    if self.rng.chance(30)
                        && let Some(d) = self.s.next_deadline_ms()
                    {
                        self.now = self.now.max(d);
                    }
                    let e = self.s.tick(self.now);
                    reported = e.high_watermark_moved;
                    self.sent(e.proposal, &before, true);
                    if let Some(d) = self.s.next_deadline_ms() {
                        assert!(d > self.now, "deadline {d} not after tick at {}", self.now);
                    }
                }
                60..=71 if !self.net.is_empty() => {
                    let i = self.rng.below(self.net.len() as u64) as usize;
                    reported = self.deliver(i, false);
                }
                72..=79 => reported = self.deliver_metadata(),
                80..=83 => {
                    // The controller fences a follower.
                    let members: Vec<i32> = self
                        .ctrl
                        .isr
                        .iter()
                        .copied()
                        .filter(|&id| id != 1)
                        .collect();
                    if !members.is_empty() {
                        let id = members[self.rng.below(members.len() as u64) as usize];
                        self.ctrl.isr.retain(|&m| m != id);
                        self.ctrl.partition_epoch += 1;
                    }
                }
                84..=85 => {
                    // Re-elected: a new leader epoch for the same leader.
                    self.ctrl.leader_epoch += 1;
                    self.ctrl.partition_epoch += 1;
                }
                86..=88 => {
                    let isr = self.s.isr().to_vec();
                    let flight = self.s.in_flight.clone();
                    let id = flight.as_ref().map_or(0, |f| f.proposal.id) + 1 + self.rng.below(3);
                    let r = ProposalResult::Committed {
                        isr: vec![1],
                        leader_epoch: self.s.leader_epoch(),
                        partition_epoch: self.s.partition_epoch() + 1,
                    };
                    reported = self.s.on_proposal_result(id, r, self.now);
                    assert_eq!(self.s.isr(), &isr[..]);
                    assert_eq!(
                        self.s.in_flight.as_ref().map(|f| f.wait),
                        flight.map(|f| f.wait)
                    );
                }
                89..=91 if !followers.is_empty() => {
                    let id = followers[self.rng.below(followers.len() as u64) as usize];
                    if self.rng.chance(50) {
                        // A fetch from the follower's previous life: ignored.
                        let known = self.s.followers[&id].log_end_offset;
                        let had_epoch = self.s.followers[&id].broker_epoch.is_some();
                        let from = self.pos[&id];
                        let offset = from + self.rng.below(self.s.log_end_offset() - from + 1);
                        let e = self.s.on_follower_fetch(
                            id,
                            self.broker_epoch[&id] - 1,
                            offset,
                            self.now,
                        );
                        if had_epoch {
                            assert_eq!(e, Effect::default());
                            assert_eq!(self.s.followers[&id].log_end_offset, known);
                        } else {
                            // It had not fetched yet: the fetch stands (and sets the epoch).
                            *self.pos.get_mut(&id).expect("a position per replica") =
                                self.s.followers[&id]
                                    .log_end_offset
                                    .expect("the follower fetched");
                            self.broker_epoch.insert(id, self.broker_epoch[&id] - 1);
                            reported = e.high_watermark_moved;
                            self.sent(e.proposal, &before, false);
                        }
                    } else {
                        // Beyond the leader's end: answered OFFSET_OUT_OF_RANGE, counts as the end.
                        let offset = self.s.log_end_offset() + 1 + self.rng.below(5);
                        let e = self.fetch(id, offset);
                        reported = e.high_watermark_moved;
                        self.sent(e.proposal, &before, false);
                    }
                }
                92..=93 => {
                    let to = self.rng.below(self.s.high_watermark() + 1);
                    assert_eq!(self.s.on_log_start_moved(to), None);
                    via_log_start = true;
                }
                94..=95 => {
                    let cfg = ReplicationConfig {
                        replica_lag_time_max_ms: self.lag,
                        min_insync_replicas: 1 + self.rng.below(self.replicas.len() as u64 + 1)
                            as usize,
                    };
                    self.s.set_config(cfg);
                }
                _ => self.now += self.rng.below(self.lag as u64) as i64,
            }
            self.check(prev_hw, reported, via_log_start);
        }

        fn check(&self, prev_hw: u64, reported: Option<u64>, via_log_start: bool) {
            let s = &self.s;
            let hw = s.high_watermark();
            assert!(hw >= prev_hw, "high watermark went back {prev_hw} -> {hw}");
            assert!(hw <= s.log_end_offset());
            assert!(hw >= s.log_start_offset);
            if hw != prev_hw {
                assert_eq!(reported, Some(hw), "an unreported move");
                if !via_log_start {
                    assert!(!s.is_under_min_isr(), "moved under min ISR (KIP-966)");
                }
            } else {
                assert_eq!(reported, None);
            }
            // Never past a follower the controller has (or may have) in the ISR.
            for &id in self.ctrl.isr.iter().chain(&s.maximal_isr()) {
                if id != 1 {
                    assert!(hw <= self.pos[&id], "hw {hw} past ISR member {id}");
                }
            }
            assert!(s.isr().contains(&1));
            assert!(s.partition_epoch() <= self.ctrl.partition_epoch);
            if let Some(f) = &s.in_flight {
                assert_eq!(f.proposal.leader_epoch, s.leader_epoch());
                assert_eq!(f.proposal.partition_epoch, s.partition_epoch());
            }
        }

        /// Everything heals: every follower fetches to the end, the controller applies every
        /// change, metadata flows. The ISR must come back whole and the high watermark reach
        /// the log end.
        fn heal(&mut self) {
            let cfg = ReplicationConfig {
                replica_lag_time_max_ms: self.lag,
                min_insync_replicas: 1 + self.rng.below(self.replicas.len() as u64) as usize,
            };
            self.s.set_config(cfg);
            for _ in 0..10 {
                while !self.net.is_empty() {
                    let prev_hw = self.s.high_watermark();
                    let moved = self.deliver(0, true);
                    self.check(prev_hw, moved, false);
                }
                let prev_hw = self.s.high_watermark();
                let moved = self.deliver_metadata();
                self.check(prev_hw, moved, false);
                self.now += ISR_CHANGE_RETRY_BACKOFF_MS + 1;
                for id in self.followers() {
                    let before = self.s.in_flight.clone();
                    let prev_hw = self.s.high_watermark();
                    let end = self.s.log_end_offset();
                    let e = self.fetch(id, end);
                    self.check(prev_hw, e.high_watermark_moved, false);
                    self.sent(e.proposal, &before, false);
                }
                let before = self.s.in_flight.clone();
                let prev_hw = self.s.high_watermark();
                let e = self.s.tick(self.now);
                self.check(prev_hw, e.high_watermark_moved, false);
                self.sent(e.proposal, &before, true);
            }
            let mut all = self.replicas.clone();
            all.sort_unstable();
            assert_eq!(self.s.isr(), &all[..], "ISR did not heal");
            assert_eq!(self.s.high_watermark(), self.s.log_end_offset());
            assert!(self.s.in_flight().is_none());
        }
    }

    #[test]
    fn random_schedules_keep_the_invariants() {
        for seed in 0..3000u64 {
            let run = std::panic::catch_unwind(|| {
                let mut w = World::new(seed);
                let steps = 100 + w.rng.below(300);
                for _ in 0..steps {
                    w.step();
                }
                w.heal();
            });
            if run.is_err() {
                panic!("schedule with seed {seed} failed");
            }
        }
    }
}
