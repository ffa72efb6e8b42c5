//! The election timer of a controller node, with pre-vote (`super::prevote`): the thin async
//! layer around the pure decisions there. openraft's own election timer is off on a node that
//! runs this.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;

use super::network::{ControllerCallError, NetworkConfig, Transport, call_pre_vote};
use super::prevote::{ElectionTimer, PreVoteRequest, PreVoteState, is_majority};
use super::wire::{RejectReason, RemoteFailure};
use super::{ControllerNode, MetadataRaft, RaftNodeId};

/// openraft's election timeout bounds, which the timer keeps.
#[derive(Debug, Clone, Copy)]
pub struct ElectionTiming {
    /// Lower end of the election timeout (ms).
    pub election_timeout_min_ms: u64,
    /// Upper end of the election timeout (ms); also openraft's leader lease.
    pub election_timeout_max_ms: u64,
}

/// How often the election loop looks at the raft state.
const ELECTION_TICK: Duration = Duration::from_millis(50);
/// The longest a pre-vote round waits for the voters' answers.
const PRE_VOTE_TIMEOUT: Duration = Duration::from_millis(500);

/// The election timer of a controller node (`raft::prevote`): when no leader has been heard
/// from for an election timeout, asks the other voters for pre-votes, and starts openraft's
/// election only when a majority would vote for this node. A lone voter elects itself at once.
pub async fn run_elections<T: Transport>(
    raft: MetadataRaft,
    transport: Arc<T>,
    net_config: NetworkConfig,
    state: Arc<PreVoteState>,
    timing: ElectionTiming,
    mut stop: watch::Receiver<bool>,
) {
    use rand::{Rng, SeedableRng};
    let me = net_config.node_id;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let spread = timing
        .election_timeout_max_ms
        .saturating_sub(timing.election_timeout_min_ms)
        .max(1);
    let mut timer = ElectionTimer::new(
        timing.election_timeout_min_ms,
        timing.election_timeout_max_ms,
        state.now_ms(),
        rng.gen_range(0..spread),
    );
    let mut tick = tokio::time::interval(ELECTION_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (server_state, term, voters) = {
            let m = raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<(RaftNodeId, ControllerNode)> = membership
                .voter_ids()
                .map(|v| (v, membership.get_node(&v).cloned().unwrap_or_default()))
                .collect();
            (m.state, m.current_term, voters)
        };
        if !voters.iter().any(|(v, _)| *v == me) {
            continue;
        }
        let now_ms = state.now_ms();
        if server_state == ServerState::Leader {
            // A leader hears from itself: once deposed, it waits out a lease like any
            // follower before it stands again.
            state.contact.touch(now_ms);
            continue;
        }
        if voters.len() > 1 && !timer.due(now_ms, state.contact.last_ms()) {
            continue;
        }
        if voters.len() == 1 {
            if server_state == ServerState::Candidate && !timer.due(now_ms, None) {
                continue;
            }
            timer.round_done(now_ms, rng.gen_range(0..spread));
            if raft.trigger().elect().await.is_err() {
                return;
            }
            continue;
        }
        timer.round_done(now_ms, rng.gen_range(0..spread));
        let request = PreVoteRequest {
            candidate: me,
            term: term + 1,
            last_log_id: raft.data_metrics().borrow().last_log,
        };
        let mut asks = tokio::task::JoinSet::new();
        for (voter, node) in voters.iter().filter(|(v, _)| *v != me).cloned() {
            let transport = Arc::clone(&transport);
            let net_config = net_config.clone();
            let request = request.clone();
            asks.spawn(async move {
                let answer = call_pre_vote(
                    &*transport,
                    &net_config,
                    voter,
                    &node,
                    request,
                    PRE_VOTE_TIMEOUT,
                )
                .await;
                (voter, answer)
            });
        }
        let mut granted = 1;
        let mut answers = Vec::new();
        while let Some(joined) = asks.join_next().await {
            let Ok((voter, answer)) = joined else {
                continue;
            };
            let yes = match &answer {
                Ok(resp) => resp.granted,
                // A voter of a release without pre-vote cannot answer; it decides in the real
                // election, as before.
                Err(ControllerCallError::Remote(RemoteFailure::Rejected {
                    reason: RejectReason::Malformed,
                    ..
                })) => true,
                Err(_) => false,
            };
            granted += usize::from(yes);
            answers.push(match answer {
                Ok(resp) => format!(
                    "{voter}:{}@{}",
                    if resp.granted { "yes" } else { "no" },
                    resp.term
                ),
                Err(e) => format!("{voter}:{e}"),
            });
        }
        let heard_meanwhile = state.contact.last_ms().is_some_and(|t| t >= now_ms);
        if is_majority(granted, voters.len()) && !heard_meanwhile {
            tracing::info!(
                term = request.term,
                granted,
                voters = voters.len(),
                answers = ?answers,
                "pre-vote won; standing for election"
            );
            if raft.trigger().elect().await.is_err() {
                return;
            }
        } else {
            tracing::debug!(
                term = request.term,
                granted,
                voters = voters.len(),
                answers = ?answers,
                heard_meanwhile,
                "pre-vote lost; not standing"
            );
        }
    }
}
