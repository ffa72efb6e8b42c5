//! The metadata quorum under faults: real openraft nodes on the on-disk log and state machine
//! (tempdirs), talking through the fault-injecting simulated transport, on tokio's paused
//! clock. Every test runs for `VLTAVA_QUORUM_SEEDS` fixed seeds (8) and a fresh one, or the one
//! in `VLTAVA_SEED`, and names the seed when it fails.
//!
//! What is checked, besides liveness (a leader is elected, writes continue after healing):
//! - every write the leader acknowledged is applied on every node, at the index it was
//!   acknowledged at, and every node applied the same entries in the same order;
//! - no node holds leadership under a vote that names another node, and two leaders of the same
//!   term never both commit entries at the same index (the log check above). openraft's default
//!   "advanced" leader ids allow several leaders in one term (each `(term, node)` is its own
//!   leader id; see openraft's `docs/data/leader_id.md`), so "one leader per term" is checked as
//!   "one leader per leader id"; the number of same-term leaders seen is printed.
//!
//! Some of it is checked at every step of every node, not only at the end: on each entry a
//! node's state machine applies, that no node ever applied another payload at that index (state
//! machine safety, across restarts and snapshot installs); on each change of a node's metrics,
//! that its leader id is held by no other node and that its term never went back, not even
//! across a restart (the vote is durable). A node's tasks cannot fail the test themselves, so
//! a violation is recorded with the node, the step (the how-manieth check) and the virtual time,
//! and the test fails at its next action.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use vltava_controller::raft::election::{ElectionTiming, run_elections};
use vltava_controller::raft::log_store::MetadataLogStore;
use vltava_controller::raft::network::{Network, NetworkConfig, RaftService};
use vltava_controller::raft::prevote::PreVoteState;
use vltava_controller::raft::sim::SimNetwork;
use vltava_controller::raft::state_machine::MetadataStateMachine;
use vltava_controller::raft::{
    ApplyError, ControllerNode, MetadataPayload, MetadataRaft, RaftNodeId, ReplicatedState,
};

const CLUSTER: &str = "quorum-test";

/// What a node applied, shared with the test so it can be read while the node runs.
type Applied = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// The per-step checks' shared history, over every node and every restart.
#[derive(Default)]
struct Checks {
    /// What any node applied at each index.
    applied: BTreeMap<u64, (RaftNodeId, Bytes)>,
    /// Leader ids `(term, node)` seen, each with the nodes that held it.
    leaders: BTreeMap<(u64, RaftNodeId), BTreeSet<RaftNodeId>>,
    /// Each node's highest term seen.
    terms: BTreeMap<RaftNodeId, u64>,
    steps: u64,
    violations: Vec<String>,
}

type SharedChecks = Arc<Mutex<Checks>>;

impl Checks {
    fn violation(&mut self, node: RaftNodeId, what: String) {
        self.violations.push(format!(
            "node {node}, step {} at {:?} (virtual): {what}",
            self.steps,
            tokio::time::Instant::now()
        ));
    }

    fn on_apply(&mut self, node: RaftNodeId, offset: u64, payload: &[u8]) {
        self.steps += 1;
        match self.applied.get(&offset) {
            Some((other, theirs)) if theirs.as_ref() != payload => {
                let other = *other;
                self.violation(
                    node,
                    format!(
                        "applied {payload:?} at {offset}, where node {other} applied {theirs:?}"
                    ),
                );
            }
            Some(_) => {}
            None => {
                self.applied
                    .insert(offset, (node, Bytes::copy_from_slice(payload)));
            }
        }
    }

    fn on_metrics(&mut self, node: RaftNodeId, term: u64, leading: Option<(u64, RaftNodeId)>) {
        self.steps += 1;
        let highest = self.terms.entry(node).or_insert(term);
        if term < *highest {
            let before = *highest;
            self.violation(node, format!("term went back from {before} to {term}"));
        } else {
            *highest = term;
        }
        if let Some(id) = leading {
            let holders = self.leaders.entry(id).or_default();
            holders.insert(node);
            if holders.len() > 1 || id.1 != node {
                let holders = holders.clone();
                self.violation(node, format!("leader id {id:?} held by {holders:?}"));
            }
        }
    }
}

/// The test's state: the list of everything applied, in order (with the checks' history).
struct AppliedList(Applied, SharedChecks, RaftNodeId);

impl ReplicatedState for AppliedList {
    fn apply(&mut self, offset: u64, payload: &[u8]) -> Result<(), ApplyError> {
        self.1.lock().unwrap().on_apply(self.2, offset, payload);
        let mut list = self.0.lock().unwrap();
        if let Some((last, _)) = list.last()
            && *last >= offset
        {
            return Err(ApplyError {
                offset,
                reason: format!("applied out of order after {last}"),
            });
        }
        list.push((offset, Bytes::copy_from_slice(payload)));
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let list = self.0.lock().unwrap();
        let mut out = Vec::new();
        for (offset, payload) in list.iter() {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    fn restore(&mut self, offset: u64, mut snapshot: &[u8]) -> Result<(), ApplyError> {
        let bad = |reason: &str| ApplyError {
            offset,
            reason: reason.to_owned(),
        };
        let mut list = Vec::new();
        while !snapshot.is_empty() {
            if snapshot.len() < 12 {
                return Err(bad("truncated snapshot"));
            }
            let o = u64::from_be_bytes(snapshot[..8].try_into().unwrap());
            let n = u32::from_be_bytes(snapshot[8..12].try_into().unwrap()) as usize;
            if snapshot.len() < 12 + n {
                return Err(bad("truncated snapshot"));
            }
            list.push((o, Bytes::copy_from_slice(&snapshot[12..12 + n])));
            snapshot = &snapshot[12 + n..];
        }
        *self.0.lock().unwrap() = list;
        Ok(())
    }
}

/// The seeds to run: `VLTAVA_SEED` alone when set, else `VLTAVA_QUORUM_SEEDS` fixed ones and a
/// fresh one.
fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("VLTAVA_SEED") {
        return vec![s.parse().expect("VLTAVA_SEED is a u64")];
    }
    let n: u64 = std::env::var("VLTAVA_QUORUM_SEEDS")
        .ok()
        .map_or(DEFAULT_SEEDS, |v| {
            v.parse().expect("VLTAVA_QUORUM_SEEDS is a u64")
        });
    let fresh = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (1..=n).chain([fresh]).collect()
}

/// Fixed seeds per test: each seed costs the slowest test about 0.7 s (mostly fsyncs), and
/// the tests run side by side.
const DEFAULT_SEEDS: u64 = 8;

/// Prints the seed if the test panics while it is alive.
struct SeedGuard(u64, &'static str);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {}; rerun with VLTAVA_SEED={}",
                self.1, self.0, self.0
            );
        }
    }
}

fn raft_config() -> Arc<Config> {
    let config = Config {
        cluster_name: CLUSTER.into(),
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Generous: simulated delays plus disk writes on a loaded machine, on a paused clock
        // that only advances when everything is idle.
        install_snapshot_timeout: 2000,
        // Small enough that every test builds snapshots, purges logs, and (after partitions
        // and restarts) sends snapshots to lagging nodes.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(25),
        max_in_snapshot_log_to_keep: 5,
        purge_batch_size: 5,
        max_payload_entries: 20,
        snapshot_max_chunk_size: 512,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

fn addr(id: RaftNodeId) -> ControllerNode {
    ControllerNode {
        addr: format!("sim-{id}:9093"),
    }
}

struct Node {
    raft: MetadataRaft,
    applied: Applied,
    /// Stops the node's election loop.
    stop: watch::Sender<bool>,
}

struct Cluster {
    seed: u64,
    net: Arc<SimNetwork>,
    dir: tempfile::TempDir,
    config: Arc<Config>,
    nodes: BTreeMap<RaftNodeId, Node>,
    /// The per-step checks' history, leader ids seen among it.
    checks: SharedChecks,
    /// Writes acknowledged by a leader: log index to payload.
    acked: BTreeMap<u64, Bytes>,
    next_write: u64,
    /// Nodes stand for election after a pre-vote, as controller nodes do (`raft::election`);
    /// off, openraft's own election timer runs.
    pre_vote: bool,
}

impl Cluster {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            net: SimNetwork::new(seed),
            dir: tempfile::tempdir().expect("tempdir"),
            config: raft_config(),
            nodes: BTreeMap::new(),
            checks: Arc::default(),
            acked: BTreeMap::new(),
            next_write: 0,
            pre_vote: true,
        }
    }

    fn node_dir(&self, id: RaftNodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Starts (or restarts, on the same data dir) node `id`.
    async fn start(&mut self, id: RaftNodeId) {
        let dir = self.node_dir(id);
        std::fs::create_dir_all(&dir).expect("node dir");
        let applied: Applied = Arc::default();
        let state = AppliedList(Arc::clone(&applied), Arc::clone(&self.checks), id);
        let (log, sm) = open_storage(&dir, state).await;
        let net_config = NetworkConfig::new(CLUSTER, id);
        let network = Network::new(self.net.transport(id), net_config.clone());
        let raft = MetadataRaft::new(id, Arc::clone(&self.config), network, log, sm)
            .await
            .expect("raft starts");
        let (stop, stopped) = watch::channel(false);
        let mut service = RaftService::new(raft.clone(), net_config.clone());
        if self.pre_vote {
            let state = Arc::new(PreVoteState::new(self.config.election_timeout_max));
            raft.runtime_config().elect(false);
            service = service.with_pre_vote(Arc::clone(&state));
            tokio::spawn(run_elections(
                raft.clone(),
                self.net.transport(id),
                net_config,
                state,
                ElectionTiming {
                    election_timeout_min_ms: self.config.election_timeout_min,
                    election_timeout_max_ms: self.config.election_timeout_max,
                },
                stopped,
            ));
        }
        self.net.register(id, Arc::new(service));
        self.watch_leadership(id, &raft);
        self.nodes.insert(
            id,
            Node {
                raft,
                applied,
                stop,
            },
        );
    }

    /// Stops node `id`; its data dir stays for a restart.
    async fn stop(&mut self, id: RaftNodeId) {
        self.net.unregister(id);
        if let Some(node) = self.nodes.remove(&id) {
            let _ = node.stop.send(true);
            node.raft.shutdown().await.expect("raft shuts down");
        }
    }

    fn watch_leadership(&self, id: RaftNodeId, raft: &MetadataRaft) {
        let mut metrics = raft.metrics();
        let checks = Arc::clone(&self.checks);
        tokio::spawn(async move {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    let v = m.vote.leader_id;
                    let leading = (m.state == ServerState::Leader).then_some((v.term, v.node_id));
                    checks
                        .lock()
                        .unwrap()
                        .on_metrics(id, m.current_term, leading);
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Starts voters `ids` and initializes the cluster with them.
    async fn bootstrap(&mut self, ids: &[RaftNodeId]) {
        for &id in ids {
            self.start(id).await;
        }
        let members: BTreeMap<_, _> = ids.iter().map(|&id| (id, addr(id))).collect();
        self.nodes[&ids[0]]
            .raft
            .initialize(members)
            .await
            .expect("initialize");
    }

    /// The current leader, waiting at most `within` (virtual time). A deposed leader that has
    /// not noticed yet (cut off by a partition) still says it leads; the one with the greatest
    /// vote is the real one.
    async fn leader(&self, within: Duration) -> RaftNodeId {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.assert_no_violation();
            let best = self
                .nodes
                .iter()
                .filter_map(|(&id, node)| {
                    let m = node.raft.metrics().borrow().clone();
                    (m.state == ServerState::Leader && m.current_leader == Some(id))
                        .then_some((m.vote, id))
                })
                .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
            if let Some((_, id)) = best {
                return id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "seed {}: no leader within {within:?}",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes one payload through whichever node is leader. Returns whether it was
    /// acknowledged; unacknowledged writes may still commit, and the checks allow for that.
    async fn write(&mut self) -> bool {
        let payload = Bytes::from(format!("seed{}-w{}", self.seed, self.next_write));
        self.next_write += 1;
        let leader = self.leader(Duration::from_secs(30)).await;
        let raft = self.nodes[&leader].raft.clone();
        let res = tokio::time::timeout(
            Duration::from_secs(3),
            raft.client_write(MetadataPayload(payload.clone())),
        )
        .await;
        match res {
            Ok(Ok(resp)) => {
                let prev = self.acked.insert(resp.log_id.index, payload);
                assert!(
                    prev.is_none(),
                    "seed {}: index acknowledged twice",
                    self.seed
                );
                true
            }
            _ => false,
        }
    }

    /// Writes until `n` writes were acknowledged, within a bounded number of attempts.
    async fn write_acked(&mut self, n: usize) {
        let mut acked = 0;
        for _ in 0..n * 20 {
            if self.write().await {
                acked += 1;
                if acked == n {
                    return;
                }
            }
        }
        panic!(
            "seed {}: only {acked} of {n} writes acknowledged",
            self.seed
        );
    }

    /// Waits until every running node has applied everything the leader has, then checks that
    /// they all applied the same entries, in order, including every acknowledged write.
    async fn converge_and_check(&self) {
        let leader = self.leader(Duration::from_secs(30)).await;
        // A write of its own term makes the leader's applied index cover everything committed.
        let last = self.nodes[&leader].raft.metrics().borrow().last_log_index;
        for (id, node) in &self.nodes {
            node.raft
                .wait(Some(Duration::from_secs(60)))
                .applied_index_at_least(last, "catch up")
                .await
                .unwrap_or_else(|e| panic!("seed {}: node {id} did not catch up: {e}", self.seed));
        }
        let reference = self.nodes[&leader].applied.lock().unwrap().clone();
        assert!(
            reference.windows(2).all(|w| w[0].0 < w[1].0),
            "seed {}: leader applied out of order",
            self.seed
        );
        for (id, node) in &self.nodes {
            let applied = node.applied.lock().unwrap().clone();
            let upto = applied.len().min(reference.len());
            assert_eq!(
                applied[..upto],
                reference[..upto],
                "seed {}: node {id} applied differently from leader {leader}",
                self.seed
            );
            let by_index: BTreeMap<_, _> = applied.iter().cloned().collect();
            for (index, payload) in &self.acked {
                assert_eq!(
                    by_index.get(index),
                    Some(payload),
                    "seed {}: node {id} lacks acknowledged write at {index}",
                    self.seed
                );
            }
        }
        self.check_leaders();
    }

    /// Fails on the first violation the per-step checks recorded.
    fn assert_no_violation(&self) {
        let checks = self.checks.lock().unwrap();
        if let Some(v) = checks.violations.first() {
            panic!("seed {}: {v}", self.seed);
        }
    }

    fn check_leaders(&self) {
        self.assert_no_violation();
        let checks = self.checks.lock().unwrap();
        let mut per_term: BTreeMap<u64, usize> = BTreeMap::new();
        for (&(term, leader), holders) in checks.leaders.iter() {
            assert_eq!(
                holders,
                &BTreeSet::from([leader]),
                "seed {}: leader id ({term}, {leader}) held by {holders:?}",
                self.seed
            );
            *per_term.entry(term).or_default() += 1;
        }
        let shared: Vec<_> = per_term.iter().filter(|(_, n)| **n > 1).collect();
        eprintln!(
            "seed {}: {} leader terms, terms with several leaders: {shared:?}, {} steps checked, network {:?}",
            self.seed,
            per_term.len(),
            checks.steps,
            self.net.stats()
        );
    }

    async fn shutdown(mut self) {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// Opens a node's log and state machine on `dir` (the storage half, `raft::log_store` and
/// `raft::state_machine`).
async fn open_storage(
    dir: &Path,
    state: AppliedList,
) -> (MetadataLogStore, MetadataStateMachine<AppliedList>) {
    let log = MetadataLogStore::open(dir).await.expect("log opens");
    let sm = MetadataStateMachine::open(dir, state)
        .await
        .expect("state machine opens");
    (log, sm)
}

async fn faults_keep_committed_writes(voters: &[RaftNodeId], seed: u64) {
    let _guard = SeedGuard(seed, "faults_keep_committed_writes");
    let mut c = Cluster::new(seed);
    c.bootstrap(voters).await;
    c.leader(Duration::from_secs(30)).await;
    c.write_acked(10).await;

    // Loss and duplication everywhere.
    c.net.set_loss(0.1);
    c.net.set_duplication(0.1);
    c.net
        .set_delay(Duration::from_millis(1), Duration::from_millis(20));
    c.write_acked(15).await;

    // Isolate the leader: the others elect a new one and writes continue.
    let old = c.leader(Duration::from_secs(30)).await;
    c.net.isolate(old);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = c.leader(Duration::from_secs(30)).await;
        if now != old {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: no new leader after isolating {old}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes go to the new leader (the isolated one can no longer commit).
    for _ in 0..10 {
        let leader = c.leader(Duration::from_secs(30)).await;
        if leader != old {
            c.write_acked(1).await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c.net.heal();
    c.write_acked(5).await;

    // A minority/majority split, then healed.
    let (minority, majority) = voters.split_at(voters.len() / 2);
    c.net.partition(&[minority, majority]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..5 {
        let leader = c.leader(Duration::from_secs(30)).await;
        if majority.contains(&leader) {
            c.write().await;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    c.net.heal();
    c.net.set_loss(0.0);
    c.net.set_duplication(0.0);
    c.write_acked(5).await;
    c.converge_and_check().await;
    let stats = c.net.stats();
    assert!(
        stats.lost > 0 && stats.duplicated > 0 && stats.refused > 0,
        "seed {seed}: faults were not injected: {stats:?}"
    );
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn three_voters_keep_committed_writes_under_faults() {
    for seed in seeds() {
        faults_keep_committed_writes(&[1, 2, 3], seed).await;
    }
}

#[tokio::test(start_paused = true)]
async fn five_voters_keep_committed_writes_under_faults() {
    for seed in seeds() {
        faults_keep_committed_writes(&[1, 2, 3, 4, 5], seed).await;
    }
}

#[tokio::test(start_paused = true)]
async fn restarted_node_rebuilds_the_same_state() {
    for seed in seeds() {
        let _guard = SeedGuard(seed, "restarted_node_rebuilds_the_same_state");
        let mut c = Cluster::new(seed);
        c.bootstrap(&[1, 2, 3]).await;
        c.write_acked(60).await;
        c.converge_and_check().await;

        // A follower restarts from its snapshot and log, then catches up on what it missed.
        let leader = c.leader(Duration::from_secs(30)).await;
        let follower = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
        c.stop(follower).await;
        c.write_acked(40).await;
        c.start(follower).await;
        c.write_acked(5).await;
        c.converge_and_check().await;

        // The leader restarts too: a new leader is elected, the old one rejoins.
        let leader = c.leader(Duration::from_secs(30)).await;
        c.stop(leader).await;
        c.write_acked(10).await;
        c.start(leader).await;
        c.write_acked(5).await;
        c.converge_and_check().await;

        // The whole cluster restarts: all state comes from disk.
        for id in [1, 2, 3] {
            c.stop(id).await;
        }
        for id in [1, 2, 3] {
            c.start(id).await;
        }
        c.write_acked(5).await;
        c.converge_and_check().await;
        c.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn membership_changes_keep_committed_writes() {
    for seed in seeds() {
        let _guard = SeedGuard(seed, "membership_changes_keep_committed_writes");
        let mut c = Cluster::new(seed);
        c.bootstrap(&[1, 2, 3]).await;
        c.net.set_loss(0.05);
        c.write_acked(10).await;
        let mut voters: BTreeSet<RaftNodeId> = BTreeSet::from([1, 2, 3]);
        // Three rounds: add a learner, promote it, remove the oldest voter.
        for new in 4..=6 {
            c.start(new).await;
            change(&c, |raft| async move {
                raft.add_learner(new, addr(new), true).await.map(|_| ())
            })
            .await;
            c.write_acked(5).await;
            voters.insert(new);
            let promoted = voters.clone();
            change(&c, move |raft| {
                let promoted = promoted.clone();
                async move { raft.change_membership(promoted, false).await.map(|_| ()) }
            })
            .await;
            c.write_acked(5).await;
            let removed = *voters.iter().next().unwrap();
            voters.remove(&removed);
            let remaining = voters.clone();
            change(&c, move |raft| {
                let remaining = remaining.clone();
                async move { raft.change_membership(remaining, false).await.map(|_| ()) }
            })
            .await;
            c.stop(removed).await;
            c.write_acked(5).await;
            let m = c.nodes[&c.leader(Duration::from_secs(30)).await]
                .raft
                .metrics()
                .borrow()
                .membership_config
                .clone();
            let now: BTreeSet<_> = m.voter_ids().collect();
            assert_eq!(now, voters, "seed {seed}: voters after round {new}");
        }
        c.net.set_loss(0.0);
        c.converge_and_check().await;
        c.shutdown().await;
    }
}

/// A follower cut off from the other voters for many election timeouts, then healed. With
/// pre-vote its term stays where it was and the leader keeps leading; without (openraft's own
/// timer, the control) the lone voter raises its term election after election and deposes the
/// leader when it returns, which is what pre-vote is for.
async fn isolated_follower_returns(seed: u64, pre_vote: bool) -> (u64, u64, bool) {
    let _guard = SeedGuard(seed, "an_isolated_voter_does_not_depose_the_leader");
    let mut c = Cluster::new(seed);
    c.pre_vote = pre_vote;
    c.bootstrap(&[1, 2, 3]).await;
    c.write_acked(5).await;
    let leader = c.leader(Duration::from_secs(30)).await;
    let vote_before = c.nodes[&leader].raft.metrics().borrow().vote;
    let follower = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    c.net.isolate(follower);
    // Twenty election timeouts alone.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let term_alone = c.nodes[&follower].raft.metrics().borrow().current_term;
    c.net.heal();
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.write_acked(5).await;
    let leader_after = c.leader(Duration::from_secs(30)).await;
    let vote_after = c.nodes[&leader_after].raft.metrics().borrow().vote;
    c.converge_and_check().await;
    c.shutdown().await;
    (
        vote_before.leader_id.term,
        term_alone,
        vote_after == vote_before,
    )
}

#[tokio::test(start_paused = true)]
async fn an_isolated_voter_does_not_depose_the_leader() {
    for seed in seeds() {
        let (term, term_alone, same_leader) = isolated_follower_returns(seed, true).await;
        assert_eq!(
            term_alone, term,
            "seed {seed}: the isolated voter raised its term with pre-vote"
        );
        assert!(
            same_leader,
            "seed {seed}: the leader changed when the isolated voter returned"
        );
        // The control: the same schedule with openraft's own election timer.
        let (term, term_alone, same_leader) = isolated_follower_returns(seed, false).await;
        assert!(
            term_alone > term && !same_leader,
            "seed {seed}: without pre-vote the isolated voter was expected to raise its term \
             ({term} -> {term_alone}) and depose the leader (same leader: {same_leader})"
        );
    }
}

/// Runs a membership change on the leader, retrying (bounded) while leadership moves.
async fn change<F, Fut, E>(c: &Cluster, op: F)
where
    F: Fn(MetadataRaft) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut last = String::new();
    for _ in 0..20 {
        let leader = c.leader(Duration::from_secs(30)).await;
        match tokio::time::timeout(Duration::from_secs(10), op(c.nodes[&leader].raft.clone())).await
        {
            Ok(Ok(())) => return,
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("seed {}: membership change kept failing: {last}", c.seed);
}

/// The production transport end to end, on the real clock (sockets need it): three nodes on
/// loopback elect a leader, replicate writes, and refuse a request for another cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_over_tcp() {
    use vltava_controller::raft::tcp::{TcpConfig, TcpTransport, serve_raft};

    let dir = tempfile::tempdir().expect("tempdir");
    // Slower than the simulated cluster: a loaded machine's fsyncs must fit in a heartbeat.
    let config = Arc::new(
        Config {
            cluster_name: CLUSTER.into(),
            heartbeat_interval: 200,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            ..Default::default()
        }
        .validate()
        .expect("valid raft config"),
    );
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let node = ControllerNode {
            addr: l.local_addr().expect("bound").to_string(),
        };
        listeners.insert(id, (l, node));
    }
    let members: BTreeMap<_, _> = listeners
        .iter()
        .map(|(&id, (_, n))| (id, n.clone()))
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rafts = BTreeMap::new();
    let mut applied = BTreeMap::new();
    let mut servers = Vec::new();
    let checks = SharedChecks::default();
    for (id, (listener, _)) in listeners {
        let node_dir = dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let list: Applied = Arc::default();
        let state = AppliedList(Arc::clone(&list), Arc::clone(&checks), id);
        let (log, sm) = open_storage(&node_dir, state).await;
        let net_config = NetworkConfig::new(CLUSTER, id);
        let transport = Arc::new(TcpTransport::new(TcpConfig::default()));
        let raft = MetadataRaft::new(
            id,
            Arc::clone(&config),
            Network::new(transport, net_config.clone()),
            log,
            sm,
        )
        .await
        .expect("raft starts");
        let mut stop = stop_rx.clone();
        servers.push(tokio::spawn(serve_raft(
            listener,
            raft.clone(),
            net_config,
            TcpConfig::default(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
        rafts.insert(id, raft);
        applied.insert(id, list);
    }
    rafts[&1]
        .initialize(members.clone())
        .await
        .expect("initialize");
    let leader = rafts[&1]
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("a leader within 30 s")
        .current_leader
        .expect("leader");
    let mut last = 0;
    for i in 0..20 {
        let resp = rafts[&leader]
            .client_write(MetadataPayload(Bytes::from(format!("tcp-{i}"))))
            .await
            .expect("write");
        last = resp.log_id.index;
    }
    for (id, raft) in &rafts {
        raft.wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(Some(last), "replicated")
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
    }
    let reference = applied[&leader].lock().unwrap().clone();
    assert_eq!(reference.len(), 20);
    for list in applied.values() {
        assert_eq!(*list.lock().unwrap(), reference);
    }

    // A node of another cluster is refused, and openraft's network reports it unreachable.
    {
        use openraft::RaftNetworkFactory;
        use openraft::network::{RPCOption, RaftNetwork};
        use openraft::raft::VoteRequest;
        let transport = Arc::new(TcpTransport::new(TcpConfig::default()));
        let mut foreign = Network::new(transport, NetworkConfig::new("another-cluster", 9));
        let mut client = foreign.new_client(1, &members[&1]).await;
        let r = client
            .vote(
                VoteRequest::new(openraft::Vote::new(1_000, 9), None),
                RPCOption::new(Duration::from_secs(5)),
            )
            .await;
        assert!(
            matches!(r, Err(openraft::error::RPCError::Unreachable(_))),
            "{r:?}"
        );
    }

    stop_tx.send(true).expect("servers listening");
    for s in servers {
        s.await.expect("server task").expect("server");
    }
    for raft in rafts.values() {
        raft.shutdown().await.expect("shutdown");
    }
}

/// The per-step checks can fail: each is fed a history that breaks it.
#[tokio::test(start_paused = true)]
async fn the_per_step_checks_report_wrong_histories() {
    let mut c = Checks::default();
    c.on_apply(1, 7, b"a");
    c.on_apply(2, 7, b"a");
    c.on_metrics(1, 3, Some((3, 1)));
    c.on_metrics(1, 4, None);
    assert!(c.violations.is_empty(), "{:?}", c.violations);

    let mut c = Checks::default();
    c.on_apply(1, 7, b"a");
    c.on_apply(2, 7, b"b");
    assert!(
        c.violations[0].contains("where node 1 applied"),
        "{:?}",
        c.violations
    );

    let mut c = Checks::default();
    c.on_metrics(1, 5, None);
    c.on_metrics(1, 4, None);
    assert!(
        c.violations[0].contains("term went back"),
        "{:?}",
        c.violations
    );

    let mut c = Checks::default();
    c.on_metrics(1, 5, Some((5, 1)));
    c.on_metrics(2, 5, Some((5, 1)));
    assert!(c.violations[0].contains("held by"), "{:?}", c.violations);
}
