//! A seeded, deterministic, in-process simulation of the classic consumer-group protocol: two
//! to six consumers of one group, subscribed to one topic of 1-12 partitions, run against the
//! real [`GroupCoordinator`] on a virtual millisecond clock, while the seed loses requests and
//! responses, delays (and so reorders) deliveries, crashes, pauses and closes consumers, and
//! fails the coordinator over to a new one restored from what was durably persisted.
//!
//! Each consumer behaves as the classic clients do (Kafka's `ConsumerCoordinator`, librdkafka):
//! JoinGroup (JoinGroup v5-9, so MEMBER_ID_REQUIRED first for a dynamic member), SyncGroup
//! where the leader computes a range assignment, Heartbeat every third of its session timeout
//! during CompletingRebalance and Stable, an OffsetCommit now and then while Stable, eager
//! revocation (every partition is given up before the member rejoins), rejoining on
//! REBALANCE_IN_PROGRESS, and resetting on ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID; a
//! FENCED_INSTANCE_ID is fatal, as in both clients. A request unanswered within its timeout
//! (JoinGroup: the rebalance timeout plus 5 s) closes the connection and fails everything in
//! flight on it; the member looks the coordinator up again and retries, or rejoins if a
//! SyncGroup was lost. LeaveGroup is sent on a clean close by dynamic members only (static
//! members, with a `group.instance.id`, leave it to the session timeout). Half of the consumers
//! follow librdkafka where it differs: ILLEGAL_GENERATION keeps the member id, and the client's
//! own session timer revokes the assignment when no heartbeat succeeded for a session timeout.
//!
//! The network is one connection per consumer incarnation, FIFO in each direction as TCP is.
//! The coordinator's side reads a connection's next request only once it answered the current
//! one (a parked JoinGroup holds the heartbeats sent behind it), as Kafka and `server.rs` do. A
//! lost request or response kills the connection silently: nothing more passes on it, and the
//! client notices at its request timeout. Requests still travelling on a connection the client
//! gave up on are delivered late, after newer ones on its new connection.
//!
//! Persistence follows the order `mod.rs` prescribes: after every coordinator call the groups
//! [`GroupCoordinator::take_dirty`] lists are written (a write becomes durable after a latency,
//! in order), and the call's own answer and completions go out only once those writes are
//! durable. A coordinator failover (at a random moment, or armed to strike while the next
//! write is in flight) keeps the writes that had reached the replicas (a prefix of those in
//! flight), drops the rest, fails every connection (parked requests fail as lost connections),
//! and after a load delay restores a new coordinator from the durable record.
//!
//! Found by this simulation, and fixed in `groups.rs`: the leader's SyncGroup makes the group
//! Stable at once, before its GroupMetadata record is durable, so a follower's SyncGroup that
//! arrives while that write is in flight is answered immediately with its assignment by a call
//! that made nothing dirty. Had that answer gone out, a failover losing the write would
//! restore the previous generation, and the next rebalance would hand the same generation
//! number out again while that follower still runs with the lost one. Kafka keeps the group in
//! CompletingRebalance until the record is stored; `groups.rs` instead holds every JoinGroup
//! and SyncGroup answer of a group until the group's latest record is stored, which
//! [`Shell::GroupBarrier`] models and every seed runs under. [`Shell::PerCall`] is the
//! contract before the fix (a call's answers wait only for that call's writes):
//! `per_call_answers_lose_a_generation_seed_326` shows the shortest seeded schedule losing a
//! generation under it and keeping it under the barrier.
//!
//! Checked after every step (one event: a delivery, a timer, a consumer's poll, a fault):
//! 1. Exclusive ownership: no partition is considered its own by two consumers that both hold a
//!    membership the coordinator currently accepts, that is whose member id is in the group
//!    (for a static member: the id its instance maps to) and whose generation is the group's
//!    generation. This is what the eager protocol promises: the assignment of one generation
//!    is a partition of the topic, members revoke everything before joining the next one, and
//!    a member of an older generation (a zombie that has not yet heard it is fenced) cannot
//!    commit offsets, so its processing never becomes effective. A zombie therefore may still
//!    hold a partition someone else owns; what is checked for it is that the coordinator never
//!    accepts a heartbeat or commit of a membership the durable group record has superseded
//!    (an older generation, or an id replaced within the same generation).
//! 2. Generations never go back: within one coordinator at every step; the durable records'
//!    generations never decrease; and a restored coordinator is never below a generation for
//!    which some member was handed its assignment (with the barrier shell, no assignment goes
//!    out before its generation's record is durable at all). A restored coordinator may be
//!    below the generation the old one had reached in memory: the generation a join phase
//!    starts is not persisted until its assignment is, in Kafka too, and the members of that
//!    generation hold no partitions yet (they revoked before joining).
//! 3. Every parked JoinGroup/SyncGroup is answered exactly once, within a bound derived from
//!    the timeouts (new-member join timeout plus twice the rebalance timeout plus a session),
//!    and a coordinator that fails over still knows every request it parked.
//! 4. Once the faults stop, the run quiesces within five virtual minutes into a group that is
//!    Stable for several session timeouts with exactly the live consumers as members, each at
//!    the group's generation, the assignment giving every partition to exactly one of them,
//!    each owning exactly what its SyncGroup answer said; nothing is left parked.
//!
//! Not covered: the async shell itself (`groups.rs`: its tasks, timeouts and NOT_COORDINATOR
//! mapping are modelled, not run), the wire codecs, several groups or topics, subscription
//! changes and protocol selection among several assignors, the cooperative protocol,
//! DescribeGroups/ListGroups/DeleteGroups, offset storage and expiry, and clock skew.
//!
//! `VLTAVA_GROUP_SIM_SEED=N` runs only seed N (every failure prints its seed and the trace of
//! its last events); `VLTAVA_GROUP_SIM_SEEDS=N` sets how many seeds run;
//! `VLTAVA_GROUP_SIM_VERBOSE=1` prints each seed's statistics.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::errors::NONE;

const GROUP: &str = "sim-group";
const TOPIC: &str = "sim-topic";
const HOST: &str = "/10.0.0.7";
const PROTOCOL_TYPE: &str = "consumer";
const ASSIGNOR: &str = "range";
const COMMIT_VERSION: i16 = 8;

const MEMBER_ID_REQUIRED: i16 = ResponseError::MemberIdRequired.code();
const REBALANCE_IN_PROGRESS: i16 = ResponseError::RebalanceInProgress.code();
const ILLEGAL_GENERATION: i16 = ResponseError::IllegalGeneration.code();
const UNKNOWN_MEMBER_ID: i16 = ResponseError::UnknownMemberId.code();
const FENCED_INSTANCE_ID: i16 = ResponseError::FencedInstanceId.code();
const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();
const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
const COORDINATOR_LOAD_IN_PROGRESS: i16 = ResponseError::CoordinatorLoadInProgress.code();

/// Kafka's `retry.backoff.ms`.
const RETRY_BACKOFF_MS: i64 = 100;
/// Kafka's `JOIN_GROUP_TIMEOUT_LAPSE`: a JoinGroup may legitimately wait the whole rebalance.
const JOIN_TIMEOUT_LAPSE_MS: i64 = 5_000;
/// How long after the faults stop the group must have settled.
const QUIESCE_LIMIT_MS: i64 = 300_000;
/// Lines of trace a failure prints.
const TRACE_LINES: usize = 400;
/// A run that takes more steps than this is spinning.
const STEP_LIMIT: u64 = 3_000_000;
/// Seeds per `cargo test` run.
const DEFAULT_SEEDS: u64 = 500;

fn error_name(code: i16) -> String {
    if code == NONE {
        return "NONE".to_string();
    }
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("error {code}"),
    }
}

fn partitions_of(assignment: &Bytes) -> Vec<i32> {
    assignment.iter().map(|&p| i32::from(p)).collect()
}

/// The range assignor over one topic. Members are ordered by their subscription bytes, which
/// carry the consumer's own name, so that the assignment does not depend on the random part of
/// the member ids the coordinator hands out (which would make a seed unrepeatable).
fn range_assign(members: &[JoinMember], partitions: i32) -> Vec<(String, Bytes)> {
    let mut sorted: Vec<&JoinMember> = members.iter().collect();
    sorted.sort_by(|a, b| {
        a.metadata
            .cmp(&b.metadata)
            .then_with(|| a.member_id.cmp(&b.member_id))
    });
    let n = i32::try_from(sorted.len()).unwrap_or(i32::MAX).max(1);
    let (per, extra) = (partitions / n, partitions % n);
    let mut next = 0;
    let mut out = Vec::with_capacity(sorted.len());
    for (k, m) in sorted.iter().enumerate() {
        let count = per + i32::from(i32::try_from(k).unwrap_or(i32::MAX) < extra);
        let owned: Vec<u8> = (next..next + count)
            .map(|p| u8::try_from(p).unwrap_or(u8::MAX))
            .collect();
        next += count;
        out.push((m.member_id.clone(), Bytes::from(owned)));
    }
    out
}

/// What the runs did, summed: proof that the faults were real.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    steps: u64,
    virtual_ms: u64,
    requests: u64,
    lost_requests: u64,
    lost_responses: u64,
    delayed: u64,
    timeouts: u64,
    crashes: u64,
    restarts: u64,
    pauses: u64,
    zombies: u64,
    zombies_fenced: u64,
    self_fenced: u64,
    closes: u64,
    failovers: u64,
    writes: u64,
    writes_lost: u64,
    generations: u64,
    revocations: u64,
    member_id_required: u64,
    rebalance_in_progress: u64,
    illegal_generation: u64,
    unknown_member: u64,
    fenced_instance: u64,
    static_rejoins: u64,
    early_assignments: u64,
    longest_park_ms: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.virtual_ms += o.virtual_ms;
        self.requests += o.requests;
        self.lost_requests += o.lost_requests;
        self.lost_responses += o.lost_responses;
        self.delayed += o.delayed;
        self.timeouts += o.timeouts;
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.pauses += o.pauses;
        self.zombies += o.zombies;
        self.zombies_fenced += o.zombies_fenced;
        self.self_fenced += o.self_fenced;
        self.closes += o.closes;
        self.failovers += o.failovers;
        self.writes += o.writes;
        self.writes_lost += o.writes_lost;
        self.generations += o.generations;
        self.revocations += o.revocations;
        self.member_id_required += o.member_id_required;
        self.rebalance_in_progress += o.rebalance_in_progress;
        self.illegal_generation += o.illegal_generation;
        self.unknown_member += o.unknown_member;
        self.fenced_instance += o.fenced_instance;
        self.static_rejoins += o.static_rejoins;
        self.early_assignments += o.early_assignments;
        self.longest_park_ms = self.longest_park_ms.max(o.longest_park_ms);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Join,
    Sync,
    Heartbeat,
    Commit,
    Leave,
}

#[derive(Debug)]
enum Req {
    Join(JoinGroupArgs, i16),
    Sync(SyncGroupArgs),
    Heartbeat(HeartbeatArgs),
    Commit(OffsetCommitArgs),
    Leave(LeaveMember),
}

impl Req {
    fn kind(&self) -> Kind {
        match self {
            Req::Join(..) => Kind::Join,
            Req::Sync(_) => Kind::Sync,
            Req::Heartbeat(_) => Kind::Heartbeat,
            Req::Commit(_) => Kind::Commit,
            Req::Leave(_) => Kind::Leave,
        }
    }
}

#[derive(Debug)]
enum Resp {
    Join(JoinResult),
    Sync(SyncResult),
    Heartbeat(i16),
    Commit(i16),
    Leave(LeaveResult),
}

#[derive(Debug)]
enum Ev {
    /// A request reaches the coordinator's side of a connection.
    ToServer { conn: usize, id: u64, req: Req },
    /// The coordinator's side writes an answer (once what it announces is durable).
    Release {
        conn: usize,
        id: u64,
        resp: Resp,
        epoch: u32,
        generation: i32,
    },
    /// An answer reaches the client.
    ToClient { conn: usize, id: u64, resp: Resp },
    /// The client sees its connection reset (the coordinator died).
    Disconnected { conn: usize },
    /// The oldest group-metadata write in flight has reached the replicas.
    Durable { seq: u64, epoch: u32 },
    /// The new coordinator has loaded the group.
    CoordinatorUp { epoch: u32 },
    /// The coordinator dies.
    Failover { load_ms: i64 },
}

/// One connection from a consumer incarnation to one coordinator.
#[derive(Debug)]
struct Conn {
    consumer: usize,
    epoch: u32,
    /// A message on it was lost: nothing more passes, in either direction.
    broken: bool,
    /// The request being handled: the next one is read only once this one is answered.
    current: Option<u64>,
    backlog: VecDeque<(u64, Req)>,
    last_up: i64,
    last_down: i64,
}

#[derive(Debug)]
struct Parked {
    conn: usize,
    kind: Kind,
    since: i64,
    generation: i32,
}

#[derive(Debug)]
struct Write {
    seq: u64,
    snapshot: Option<GroupSnapshot>,
}

#[derive(Debug, Clone, Copy)]
struct ClientCfg {
    session_ms: i64,
    rebalance_ms: i64,
    heartbeat_ms: i64,
    request_timeout_ms: i64,
    commit_ms: i64,
    join_version: i16,
    /// librdkafka's behaviour where it differs from the Java client's.
    rdkafka: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proc {
    Up,
    Paused {
        until: i64,
    },
    /// `None`: closed for good.
    Down {
        restart_at: Option<i64>,
    },
}

/// Kafka's `MemberState`, with PREPARING_REBALANCE split by whether the JoinGroup is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Unjoined,
    Joining,
    Syncing,
    Stable,
}

#[derive(Debug, Clone)]
struct Flight {
    id: u64,
    kind: Kind,
    deadline: i64,
    member_id: String,
    generation: i32,
}

#[derive(Debug)]
struct Consumer {
    idx: usize,
    instance: Option<String>,
    cfg: ClientCfg,
    process: Proc,
    incarnation: u32,
    /// Bumped whenever the member id is dropped, so that each id has its own subscription tag.
    sub: u32,
    client_id: String,
    member_id: String,
    generation: i32,
    phase: Phase,
    owned: Vec<i32>,
    conn: Option<usize>,
    discover_at: i64,
    flights: Vec<Flight>,
    join_at: i64,
    next_hb: i64,
    next_commit: i64,
    last_hb_ok: i64,
    inbox: VecDeque<Ev>,
    paused_since: i64,
    /// Resumed after a pause longer than its session: waiting to hear it is fenced.
    zombie: bool,
    permanent: bool,
}

impl Consumer {
    fn new(idx: usize, instance: Option<String>, cfg: ClientCfg, start_at: i64) -> Consumer {
        Consumer {
            idx,
            instance,
            cfg,
            process: Proc::Down {
                restart_at: Some(start_at),
            },
            incarnation: 0,
            sub: 0,
            client_id: String::new(),
            member_id: String::new(),
            generation: -1,
            phase: Phase::Unjoined,
            owned: Vec::new(),
            conn: None,
            discover_at: 0,
            flights: Vec::new(),
            join_at: 0,
            next_hb: 0,
            next_commit: 0,
            last_hb_ok: 0,
            inbox: VecDeque::new(),
            paused_since: 0,
            zombie: false,
            permanent: false,
        }
    }

    fn name(&self) -> String {
        match &self.instance {
            Some(i) => format!("c{}.{}[{i}]", self.idx, self.incarnation),
            None => format!("c{}.{}", self.idx, self.incarnation),
        }
    }

    fn metadata(&self) -> Bytes {
        // A static member's subscription is the same in every incarnation, as a restarted
        // process with the same configuration sends.
        match &self.instance {
            Some(i) => Bytes::from(format!("{TOPIC}|{i}")),
            None => Bytes::from(format!("{TOPIC}|{}.{}", self.client_id, self.sub)),
        }
    }

    fn in_flight(&self, kind: Kind) -> bool {
        self.flights.iter().any(|f| f.kind == kind)
    }

    /// When this consumer next has something to do on its own.
    fn wake(&self) -> Option<i64> {
        match self.process {
            Proc::Down { restart_at } => restart_at,
            Proc::Paused { until } => Some(until),
            Proc::Up => {
                let mut t = self
                    .flights
                    .iter()
                    .map(|f| f.deadline)
                    .min()
                    .unwrap_or(i64::MAX);
                if self.cfg.rdkafka && self.phase == Phase::Stable {
                    t = t.min(self.last_hb_ok + self.cfg.session_ms + 1);
                }
                if self.conn.is_none() {
                    t = t.min(self.discover_at);
                } else {
                    match self.phase {
                        Phase::Unjoined => t = t.min(self.join_at),
                        Phase::Syncing | Phase::Stable => {
                            if !self.in_flight(Kind::Heartbeat) {
                                t = t.min(self.next_hb);
                            }
                            if self.phase == Phase::Stable && !self.in_flight(Kind::Commit) {
                                t = t.min(self.next_commit);
                            }
                        }
                        Phase::Joining => {}
                    }
                }
                (t < i64::MAX).then_some(t)
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Fault {
    Crash {
        who: usize,
        down_ms: i64,
    },
    /// Paused for this many percent of its session timeout.
    Pause {
        who: usize,
        percent: i64,
    },
    /// `None`: for good.
    Close {
        who: usize,
        down_ms: Option<i64>,
    },
    /// With `during_write`, it strikes while the next group-metadata write is in flight.
    Failover {
        load_ms: i64,
        during_write: bool,
    },
    Delays {
        for_ms: i64,
        max_ms: i64,
    },
    Losses {
        for_ms: i64,
        permille: u32,
    },
}

#[derive(Debug, Clone)]
struct Plan {
    consumers: usize,
    partitions: i32,
    statics: usize,
    rdkafka: usize,
    faults_until: i64,
    loss_permille: u32,
    jitter_ms: i64,
    faults: Vec<(i64, Fault)>,
}

/// The coordinator's group as the checks see it, refreshed after every coordinator call.
#[derive(Debug, Clone)]
struct View {
    generation: i32,
    state: GroupState,
    /// (member id, instance id, assignment when Stable)
    members: Vec<(String, Option<String>, Bytes)>,
}

impl View {
    fn accepts(&self, member_id: &str, instance: Option<&str>, generation: i32) -> bool {
        generation == self.generation
            && self
                .members
                .iter()
                .any(|(m, i, _)| m == member_id && i.as_deref() == instance)
    }
}

/// How the modelled async layer orders answers after group-metadata writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shell {
    /// The contract before the fix: a call's answers wait only for the writes that call made
    /// dirty. Kept to show what it loses.
    PerCall,
    /// What `groups.rs` does: every JoinGroup/SyncGroup answer of the group also waits for the
    /// group's writes still in flight (the simulation has one group, so: every write).
    GroupBarrier,
}

/// How to run a seed.
#[derive(Debug, Clone)]
struct Opts {
    trace: bool,
    shell: Shell,
    /// Keep only these faults of the seed's plan (by index), for minimising a failure.
    faults: Option<Vec<usize>>,
    /// No background message loss (bursts in the plan still lose).
    no_background_loss: bool,
}

impl Opts {
    fn new(shell: Shell) -> Opts {
        Opts {
            trace: false,
            shell,
            faults: None,
            no_background_loss: false,
        }
    }

    fn traced(&self) -> Opts {
        Opts {
            trace: true,
            ..self.clone()
        }
    }
}

macro_rules! note {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.trace.is_some() {
            let line = format!($($arg)*);
            $sim.push_note(line);
        }
    };
}

struct Sim {
    now: i64,
    shell: Shell,
    rng: StdRng,
    plan: Plan,
    cfg: GroupConfig,
    coord: Option<GroupCoordinator>,
    epoch: u32,
    view: Option<View>,
    consumers: Vec<Consumer>,
    conns: Vec<Conn>,
    queue: BTreeMap<(i64, u64), Ev>,
    seq: u64,
    next_id: u64,
    parked: BTreeMap<u64, Parked>,
    writes: VecDeque<Write>,
    last_write_at: i64,
    durable: Option<GroupSnapshot>,
    written_generation: i32,
    /// The highest generation whose SyncGroup assignment went out to a member.
    announced: i32,
    /// Invariant 2 failed at a failover: a generation members run with was lost.
    lost_generation: bool,
    next_fault: usize,
    armed_failover: Option<i64>,
    healed: bool,
    delay_until: i64,
    delay_max: i64,
    loss_until: i64,
    burst_loss: u32,
    /// Invariant 3's bound on how long a request may stay parked.
    park_bound_ms: i64,
    stats: Stats,
    trace: Option<VecDeque<String>>,
    labels: BTreeMap<String, String>,
    label_counts: BTreeMap<String, u32>,
}

impl Sim {
    fn new(seed: u64, opts: &Opts) -> Sim {
        let mut root = StdRng::seed_from_u64(seed);
        let n = root.gen_range(2..=6usize);
        let partitions = root.gen_range(1..=12i32);
        let cfg = GroupConfig {
            initial_rebalance_delay_ms: if root.gen_bool(0.3) {
                0
            } else {
                root.gen_range(100..=3_000)
            },
            new_member_join_timeout_ms: root.gen_range(20_000..=60_000),
            ..GroupConfig::default()
        };
        let consumers: Vec<Consumer> = (0..n)
            .map(|i| {
                let session = root.gen_range(6_000..=12_000i64);
                let cfg = ClientCfg {
                    session_ms: session,
                    heartbeat_ms: session / 3,
                    rebalance_ms: root.gen_range(6_000..=20_000),
                    request_timeout_ms: root.gen_range(2_000..=6_000),
                    commit_ms: root.gen_range(1_000..=5_000),
                    join_version: root.gen_range(5..=9),
                    rdkafka: root.gen_bool(0.5),
                };
                let instance = root.gen_bool(0.4).then(|| format!("i{i}"));
                Consumer::new(i, instance, cfg, root.gen_range(0..=2_000))
            })
            .collect();
        let faults_until = root.gen_range(20_000..=60_000i64);
        let mut faults = Vec::new();
        let mut t = root.gen_range(3_000..=6_000i64);
        while t < faults_until {
            let who = root.gen_range(0..n);
            let fault = match root.gen_range(0..100) {
                0..=19 => Fault::Crash {
                    who,
                    down_ms: root.gen_range(200..=20_000),
                },
                20..=39 => Fault::Pause {
                    who,
                    percent: if root.gen_bool(0.5) {
                        root.gen_range(30..=90)
                    } else {
                        root.gen_range(120..=300)
                    },
                },
                40..=49 => Fault::Close {
                    who,
                    down_ms: (!root.gen_bool(0.3)).then(|| root.gen_range(500..=20_000)),
                },
                50..=64 => Fault::Failover {
                    load_ms: root.gen_range(50..=3_000),
                    during_write: root.gen_bool(0.5),
                },
                65..=82 => Fault::Delays {
                    for_ms: root.gen_range(500..=5_000),
                    max_ms: root.gen_range(100..=3_000),
                },
                _ => Fault::Losses {
                    for_ms: root.gen_range(500..=5_000),
                    permille: root.gen_range(100..=300),
                },
            };
            faults.push((t, fault));
            t += root.gen_range(500..=6_000);
        }
        if let Some(keep) = &opts.faults {
            faults = faults
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep.contains(i))
                .map(|(_, f)| f)
                .collect();
        }
        let loss_permille = root.gen_range(0..=20);
        let plan = Plan {
            consumers: n,
            partitions,
            statics: consumers.iter().filter(|c| c.instance.is_some()).count(),
            rdkafka: consumers.iter().filter(|c| c.cfg.rdkafka).count(),
            faults_until,
            loss_permille: if opts.no_background_loss {
                0
            } else {
                loss_permille
            },
            jitter_ms: root.gen_range(1..=10),
            faults,
        };
        let max_rebalance = consumers
            .iter()
            .map(|c| c.cfg.rebalance_ms)
            .max()
            .unwrap_or(0);
        let max_session = consumers
            .iter()
            .map(|c| c.cfg.session_ms)
            .max()
            .unwrap_or(0);
        let park_bound_ms = i64::from(cfg.new_member_join_timeout_ms)
            + 2 * max_rebalance
            + max_session
            + i64::from(cfg.initial_rebalance_delay_ms)
            + 1_000;
        let mut sim = Sim {
            now: 0,
            shell: opts.shell,
            rng: StdRng::seed_from_u64(root.r#gen()),
            plan,
            cfg,
            coord: Some(GroupCoordinator::new(cfg)),
            epoch: 0,
            view: None,
            consumers,
            conns: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            next_id: 1,
            parked: BTreeMap::new(),
            writes: VecDeque::new(),
            last_write_at: 0,
            durable: None,
            written_generation: 0,
            announced: 0,
            lost_generation: false,
            next_fault: 0,
            armed_failover: None,
            healed: false,
            delay_until: 0,
            delay_max: 0,
            loss_until: 0,
            burst_loss: 0,
            park_bound_ms,
            stats: Stats::default(),
            trace: opts.trace.then(VecDeque::new),
            labels: BTreeMap::new(),
            label_counts: BTreeMap::new(),
        };
        note!(
            sim,
            "seed {seed}: {} consumers ({} static, {} librdkafka), {} partitions, faults until {} ms, loss {}‰, jitter {} ms, {:?}, consumers {:?}",
            sim.plan.consumers,
            sim.plan.statics,
            sim.plan.rdkafka,
            sim.plan.partitions,
            sim.plan.faults_until,
            sim.plan.loss_permille,
            sim.plan.jitter_ms,
            sim.cfg,
            sim.consumers
                .iter()
                .map(|c| (c.instance.clone(), c.cfg))
                .collect::<Vec<_>>()
        );
        sim
    }

    fn push_note(&mut self, line: String) {
        let now = self.now;
        if let Some(t) = &mut self.trace {
            if t.len() == TRACE_LINES {
                t.pop_front();
            }
            t.push_back(format!("{now:>7} ms  {line}"));
        }
    }

    /// A short, seed-stable name for a member id (its prefix, and the order ids of that prefix
    /// were first seen): the random part would make two traces of one seed differ.
    fn register(&mut self, member_id: &str) {
        if self.trace.is_none() || member_id.is_empty() || self.labels.contains_key(member_id) {
            return;
        }
        let prefix = member_id
            .len()
            .checked_sub(37)
            .and_then(|n| member_id.get(..n))
            .unwrap_or(member_id)
            .to_string();
        let n = self.label_counts.entry(prefix.clone()).or_insert(0);
        *n += 1;
        let label = format!("{prefix}#{n}");
        self.labels.insert(member_id.to_string(), label);
    }

    fn label(&self, member_id: &str) -> String {
        if member_id.is_empty() {
            return "\"\"".to_string();
        }
        self.labels
            .get(member_id)
            .cloned()
            .unwrap_or_else(|| "?".to_string())
    }

    fn at(&mut self, t: i64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((t, self.seq), ev);
    }

    // -----------------------------------------------------------------------------------------
    // The network.
    // -----------------------------------------------------------------------------------------

    /// When a message sent now on `conn` arrives (in order with the others of its direction),
    /// or `None` if it is lost, which kills the connection.
    fn transmit(&mut self, conn: usize, up: bool) -> Option<i64> {
        let now = self.now;
        let faulty = !self.healed;
        let c = &mut self.conns[conn];
        if c.broken {
            return None;
        }
        let mut loss = if faulty { self.plan.loss_permille } else { 0 };
        if faulty && now < self.loss_until {
            loss += self.burst_loss;
        }
        if self.rng.gen_range(0..1000) < loss {
            c.broken = true;
            if up {
                self.stats.lost_requests += 1;
            } else {
                self.stats.lost_responses += 1;
            }
            return None;
        }
        let mut delay = self.rng.gen_range(1..=self.plan.jitter_ms);
        if faulty && now < self.delay_until && self.rng.gen_bool(0.5) {
            delay += self.rng.gen_range(0..=self.delay_max);
            self.stats.delayed += 1;
        }
        let last = if up { &mut c.last_up } else { &mut c.last_down };
        let t = (now + delay).max(*last);
        *last = t;
        Some(t)
    }

    fn open_conn(&mut self, i: usize) -> usize {
        self.conns.push(Conn {
            consumer: i,
            epoch: self.epoch,
            broken: false,
            current: None,
            backlog: VecDeque::new(),
            last_up: self.now,
            last_down: self.now,
        });
        self.conns.len() - 1
    }

    // -----------------------------------------------------------------------------------------
    // The coordinator's side.
    // -----------------------------------------------------------------------------------------

    fn serve(&mut self, conn: usize) -> Result<(), String> {
        if self.conns[conn].current.is_some() || self.conns[conn].epoch != self.epoch {
            return Ok(());
        }
        let Some((id, req)) = self.conns[conn].backlog.pop_front() else {
            return Ok(());
        };
        let now = self.now;
        let kind = req.kind();
        let generation = match &req {
            Req::Sync(a) => a.generation_id,
            _ => -1,
        };
        note!(
            self,
            "coordinator <- {}: {}",
            self.consumers[self.conns[conn].consumer].name(),
            self.describe_req(&req)
        );
        let Some(coord) = self.coord.as_mut() else {
            return Ok(());
        };
        self.conns[conn].current = Some(id);
        let mut accepted = None;
        let mut static_rejoin = false;
        let (answer, completions) = match req {
            Req::Join(args, version) => {
                static_rejoin = args.member_id.is_empty() && args.group_instance_id.is_some();
                let (o, cs) = coord.join_group(id, args, version, now);
                (now_or_parked(o).map(Resp::Join), cs)
            }
            Req::Sync(args) => {
                let (o, cs) = coord.sync_group(id, args, now);
                (now_or_parked(o).map(Resp::Sync), cs)
            }
            Req::Heartbeat(args) => {
                let (m, g) = (args.member_id.clone(), args.generation_id);
                let code = coord.heartbeat(args, now);
                if code == NONE {
                    accepted = Some((m, g, "heartbeat"));
                }
                (Some(Resp::Heartbeat(code)), Vec::new())
            }
            Req::Commit(args) => {
                let code = coord.validate_offset_commit(&args, COMMIT_VERSION, now);
                if code == NONE {
                    accepted = Some((args.member_id, args.generation_id, "commit"));
                }
                (Some(Resp::Commit(code)), Vec::new())
            }
            Req::Leave(m) => {
                let (r, cs) = coord.leave_group(GROUP, vec![m], now);
                (Some(Resp::Leave(r)), cs)
            }
        };
        if static_rejoin && matches!(&answer, Some(Resp::Join(r)) if r.error_code == NONE) {
            self.stats.static_rejoins += 1;
        }
        if answer.is_none() {
            self.parked.insert(
                id,
                Parked {
                    conn,
                    kind,
                    since: now,
                    generation,
                },
            );
        }
        if let Some((member, generation, what)) = accepted {
            self.check_fence(&member, generation, what)?;
        }
        let own = answer.map(|resp| (conn, id, generation, resp));
        self.after_call(completions, own)
    }

    /// Invariant 1's second half: an accepted heartbeat or commit must not come from a
    /// membership the durable record has superseded.
    fn check_fence(&self, member: &str, generation: i32, what: &str) -> Result<(), String> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let listed = d.members.iter().any(|m| m.member_id == member);
        if generation < d.generation_id || (generation == d.generation_id && !listed) {
            return Err(format!(
                "the coordinator accepted a {what} of {} at generation {generation}, a membership the durable group record (generation {}, members {:?}) has fenced",
                self.label(member),
                d.generation_id,
                d.members
                    .iter()
                    .map(|m| self.label(&m.member_id))
                    .collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), String> {
        let now = self.now;
        let Some(coord) = self.coord.as_mut() else {
            return Ok(());
        };
        let cs = coord.tick(now);
        note!(self, "coordinator timers fire ({} answers)", cs.len());
        self.after_call(cs, None)
    }

    /// What every coordinator call is followed by: the checks of its new state, the writes of
    /// what it made dirty, and its answers, held until those writes are durable.
    fn after_call(
        &mut self,
        completions: Vec<Completion>,
        own: Option<(usize, u64, i32, Resp)>,
    ) -> Result<(), String> {
        self.refresh_view()?;
        let release = self.persist()?;
        let mut completions = completions;
        // Tokens are ours: ordering by them keeps a seed repeatable whatever order the
        // coordinator found them in.
        completions.sort_by_key(|c| c.token);
        let mut answers = Vec::with_capacity(completions.len() + 1);
        for c in completions {
            let Some(p) = self.parked.remove(&c.token) else {
                return Err(format!(
                    "completion for token {} which is not parked (answered twice, or never parked)",
                    c.token
                ));
            };
            let waited = u64::try_from(self.now - p.since).unwrap_or(0);
            self.stats.longest_park_ms = self.stats.longest_park_ms.max(waited);
            let resp = match (p.kind, c.response) {
                (Kind::Join, CompletedResponse::Join(j)) => Resp::Join(j),
                (Kind::Sync, CompletedResponse::Sync(s)) => Resp::Sync(s),
                (kind, r) => {
                    return Err(format!(
                        "a parked {kind:?} (token {}) was completed with {r:?}",
                        c.token
                    ));
                }
            };
            answers.push((p.conn, c.token, p.generation, resp));
        }
        answers.extend(own);
        let mut t = release.unwrap_or(self.now);
        if self.shell == Shell::GroupBarrier
            && !self.writes.is_empty()
            && answers
                .iter()
                .any(|a| matches!(a.3, Resp::Join(_) | Resp::Sync(_)))
        {
            t = t.max(self.last_write_at);
        }
        let epoch = self.epoch;
        for (conn, id, generation, resp) in answers {
            self.at(
                t,
                Ev::Release {
                    conn,
                    id,
                    resp,
                    epoch,
                    generation,
                },
            );
        }
        Ok(())
    }

    /// Starts the writes of the groups the last call made dirty; returns when the last of them
    /// will be durable.
    fn persist(&mut self) -> Result<Option<i64>, String> {
        let Some(coord) = self.coord.as_mut() else {
            return Ok(None);
        };
        let dirty = coord.take_dirty();
        if dirty.is_empty() {
            return Ok(None);
        }
        let mut snapshots = Vec::with_capacity(dirty.len());
        for g in &dirty {
            if g != GROUP {
                return Err(format!("take_dirty reported an unknown group {g:?}"));
            }
            snapshots.push(coord.group_snapshot(g));
        }
        let mut release = None;
        for snapshot in snapshots {
            if let Some(s) = &snapshot {
                if s.generation_id < self.written_generation {
                    return Err(format!(
                        "a group record of generation {} is written after one of generation {}",
                        s.generation_id, self.written_generation
                    ));
                }
                self.written_generation = s.generation_id;
            }
            let latency = if self.rng.gen_bool(0.05) {
                self.rng.gen_range(20..=400)
            } else {
                self.rng.gen_range(1..=15)
            };
            let t = (self.now + latency).max(self.last_write_at);
            self.last_write_at = t;
            self.seq += 1;
            let seq = self.seq;
            self.stats.writes += 1;
            note!(
                self,
                "write #{seq} of {} started, durable at {t} ms",
                self.describe_snapshot(snapshot.as_ref())
            );
            self.writes.push_back(Write { seq, snapshot });
            let epoch = self.epoch;
            self.at(t, Ev::Durable { seq, epoch });
            if let Some(load_ms) = self.armed_failover.take() {
                let strike = self.now + self.rng.gen_range(0..t - self.now);
                self.at(strike, Ev::Failover { load_ms });
            }
            release = Some(t);
        }
        Ok(release)
    }

    fn make_durable(&mut self, w: Write) -> Result<(), String> {
        if let (Some(new), Some(old)) = (&w.snapshot, &self.durable)
            && new.generation_id < old.generation_id
        {
            return Err(format!(
                "the durable group record went back from generation {} to {}",
                old.generation_id, new.generation_id
            ));
        }
        note!(self, "write #{} durable", w.seq);
        self.durable = w.snapshot;
        Ok(())
    }

    fn refresh_view(&mut self) -> Result<(), String> {
        let Some(coord) = &self.coord else {
            self.view = None;
            return Ok(());
        };
        let generation = coord.generation(GROUP).unwrap_or(0);
        let (state, members) = match coord.describe(GROUP) {
            Some(d) => (
                d.state,
                d.members
                    .into_iter()
                    .map(|m| (m.member_id, m.group_instance_id, m.assignment))
                    .collect(),
            ),
            None => (GroupState::Empty, Vec::new()),
        };
        let view = View {
            generation,
            state,
            members,
        };
        let changed = match &self.view {
            Some(prev) => {
                if generation < prev.generation {
                    return Err(format!(
                        "the coordinator's generation went back from {} to {generation}",
                        prev.generation
                    ));
                }
                self.stats.generations += u64::try_from(generation - prev.generation).unwrap_or(0);
                prev.state != state
                    || prev.generation != generation
                    || prev.members.len() != view.members.len()
                    || prev
                        .members
                        .iter()
                        .zip(&view.members)
                        .any(|(a, b)| a.0 != b.0 || a.2 != b.2)
            }
            None => true,
        };
        if changed && self.trace.is_some() {
            for (m, _, _) in &view.members {
                self.register(m);
            }
            let line = format!(
                "group {} generation {generation} members [{}]",
                state,
                view.members
                    .iter()
                    .map(|(m, _, a)| if state == GroupState::Stable {
                        format!("{} {:?}", self.label(m), partitions_of(a))
                    } else {
                        self.label(m)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.push_note(line);
        }
        self.view = Some(view);
        Ok(())
    }

    fn describe_req(&self, req: &Req) -> String {
        match req {
            Req::Join(a, v) => format!(
                "JoinGroup v{v} member {}{}",
                self.label(&a.member_id),
                a.group_instance_id
                    .as_ref()
                    .map(|i| format!(" instance {i}"))
                    .unwrap_or_default()
            ),
            Req::Sync(a) => format!(
                "SyncGroup member {} generation {}{}",
                self.label(&a.member_id),
                a.generation_id,
                if a.assignments.is_empty() {
                    String::new()
                } else {
                    format!(
                        " assigning [{}]",
                        a.assignments
                            .iter()
                            .map(|(m, b)| format!("{} {:?}", self.label(m), partitions_of(b)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
            Req::Heartbeat(a) => format!(
                "Heartbeat member {} generation {}",
                self.label(&a.member_id),
                a.generation_id
            ),
            Req::Commit(a) => format!(
                "OffsetCommit member {} generation {}",
                self.label(&a.member_id),
                a.generation_id
            ),
            Req::Leave(m) => format!("LeaveGroup member {}", self.label(&m.member_id)),
        }
    }

    fn describe_resp(&self, resp: &Resp) -> String {
        match resp {
            Resp::Join(r) if r.error_code == NONE => format!(
                "JoinGroup NONE member {} generation {} leader {}{}{}",
                self.label(&r.member_id),
                r.generation_id,
                self.label(&r.leader),
                if r.members.is_empty() {
                    String::new()
                } else {
                    format!(" with {} members", r.members.len())
                },
                if r.skip_assignment {
                    " skip assignment"
                } else {
                    ""
                }
            ),
            Resp::Join(r) => format!(
                "JoinGroup {} member {}",
                error_name(r.error_code),
                self.label(&r.member_id)
            ),
            Resp::Sync(s) if s.error_code == NONE => {
                format!("SyncGroup NONE {:?}", partitions_of(&s.assignment))
            }
            Resp::Sync(s) => format!("SyncGroup {}", error_name(s.error_code)),
            Resp::Heartbeat(e) => format!("Heartbeat {}", error_name(*e)),
            Resp::Commit(e) => format!("OffsetCommit {}", error_name(*e)),
            Resp::Leave(r) => format!(
                "LeaveGroup {} {:?}",
                error_name(r.error_code),
                r.members
                    .iter()
                    .map(|m| error_name(m.error_code))
                    .collect::<Vec<_>>()
            ),
        }
    }

    fn describe_snapshot(&self, s: Option<&GroupSnapshot>) -> String {
        match s {
            None => "a tombstone".to_string(),
            Some(s) => format!(
                "generation {} members [{}]",
                s.generation_id,
                s.members
                    .iter()
                    .map(|m| format!(
                        "{} {:?}",
                        self.label(&m.member_id),
                        partitions_of(&m.assignment)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Coordinator failover.
    // -----------------------------------------------------------------------------------------

    fn failover(&mut self, load_ms: i64) -> Result<(), String> {
        let Some(mut old) = self.coord.take() else {
            return Ok(());
        };
        self.stats.failovers += 1;
        // Unloading answers everything the old coordinator still holds; those answers are
        // thrown away (its connections die with it), but they must cover every request it
        // parked, or a connection would have waited forever.
        let (_, cs) = old.unload(|_| true);
        let answered: BTreeSet<u64> = cs.iter().map(|c| c.token).collect();
        let parked: BTreeSet<u64> = self.parked.keys().copied().collect();
        if answered != parked {
            return Err(format!(
                "at failover the coordinator held parked requests {answered:?}, the connections wait on {parked:?}"
            ));
        }
        self.parked.clear();
        let survive = self.rng.gen_range(0..=self.writes.len());
        note!(
            self,
            "COORDINATOR FAILS OVER: {} of {} writes in flight reach the replicas, new coordinator in {load_ms} ms",
            survive,
            self.writes.len()
        );
        for _ in 0..survive {
            if let Some(w) = self.writes.pop_front() {
                self.make_durable(w)?;
            }
        }
        self.stats.writes_lost += self.writes.len() as u64;
        self.writes.clear();
        self.epoch += 1;
        self.view = None;
        for i in 0..self.consumers.len() {
            if let Some(conn) = self.consumers[i].conn {
                // The reset comes after whatever the coordinator had already sent on it.
                let t = (self.now + self.rng.gen_range(1..=5)).max(self.conns[conn].last_down);
                self.at(t, Ev::Disconnected { conn });
            }
        }
        let epoch = self.epoch;
        self.at(self.now + load_ms, Ev::CoordinatorUp { epoch });
        Ok(())
    }

    fn coordinator_up(&mut self) -> Result<(), String> {
        let mut coord = GroupCoordinator::new(self.cfg);
        if let Some(s) = self.durable.clone() {
            coord.restore(s, self.now);
        }
        let generation = coord.generation(GROUP).unwrap_or(0);
        self.coord = Some(coord);
        self.written_generation = self.durable.as_ref().map_or(0, |d| d.generation_id);
        note!(
            self,
            "new coordinator restored {}",
            match &self.durable {
                Some(_) => self.describe_snapshot(self.durable.as_ref()),
                None => "nothing: no group record is durable".to_string(),
            }
        );
        if generation < self.announced {
            self.lost_generation = true;
            return Err(format!(
                "the restored coordinator is at generation {generation}, but members were handed assignments of generation {}",
                self.announced
            ));
        }
        self.refresh_view()
    }

    // -----------------------------------------------------------------------------------------
    // The consumers.
    // -----------------------------------------------------------------------------------------

    fn send(&mut self, i: usize, req: Req) {
        let now = self.now;
        let Some(conn) = self.consumers[i].conn else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let c = &mut self.consumers[i];
        let timeout = if matches!(req, Req::Join(..)) {
            c.cfg
                .request_timeout_ms
                .max(c.cfg.rebalance_ms + JOIN_TIMEOUT_LAPSE_MS)
        } else {
            c.cfg.request_timeout_ms
        };
        c.flights.push(Flight {
            id,
            kind: req.kind(),
            deadline: now + timeout,
            member_id: c.member_id.clone(),
            generation: c.generation,
        });
        self.stats.requests += 1;
        note!(
            self,
            "{} -> {}",
            self.consumers[i].name(),
            self.describe_req(&req)
        );
        if let Some(t) = self.transmit(conn, true) {
            self.at(t, Ev::ToServer { conn, id, req });
        }
    }

    /// Eager revocation: the member gives up everything it owns.
    fn revoke(&mut self, i: usize) {
        let c = &mut self.consumers[i];
        if !c.owned.is_empty() {
            c.owned.clear();
            self.stats.revocations += 1;
        }
    }

    /// Rejoins keeping the member id (REBALANCE_IN_PROGRESS, a lost SyncGroup).
    fn rejoin(&mut self, i: usize, delay: i64) {
        self.revoke(i);
        let now = self.now;
        let c = &mut self.consumers[i];
        c.phase = Phase::Unjoined;
        c.join_at = now + delay;
        c.flights
            .retain(|f| !matches!(f.kind, Kind::Join | Kind::Sync));
    }

    /// Forgets the generation (and the member id if `drop_id`), then rejoins.
    fn reset(&mut self, i: usize, drop_id: bool) {
        self.rejoin(i, 0);
        let c = &mut self.consumers[i];
        c.generation = -1;
        if drop_id && !c.member_id.is_empty() {
            c.member_id.clear();
            c.sub += 1;
        }
    }

    fn send_join(&mut self, i: usize) {
        self.revoke(i);
        let c = &mut self.consumers[i];
        c.phase = Phase::Joining;
        let args = JoinGroupArgs {
            group_id: GROUP.to_string(),
            member_id: c.member_id.clone(),
            group_instance_id: c.instance.clone(),
            client_id: c.client_id.clone(),
            client_host: HOST.to_string(),
            session_timeout_ms: i32::try_from(c.cfg.session_ms).unwrap_or(i32::MAX),
            rebalance_timeout_ms: i32::try_from(c.cfg.rebalance_ms).unwrap_or(i32::MAX),
            protocol_type: PROTOCOL_TYPE.to_string(),
            protocols: vec![Protocol::new(ASSIGNOR, c.metadata())],
        };
        let version = c.cfg.join_version;
        self.send(i, Req::Join(args, version));
    }

    fn send_heartbeat(&mut self, i: usize) {
        let c = &mut self.consumers[i];
        c.next_hb = self.now + c.cfg.heartbeat_ms;
        let args = HeartbeatArgs {
            group_id: GROUP.to_string(),
            member_id: c.member_id.clone(),
            group_instance_id: c.instance.clone(),
            generation_id: c.generation,
        };
        self.send(i, Req::Heartbeat(args));
    }

    fn send_commit(&mut self, i: usize) {
        let c = &mut self.consumers[i];
        c.next_commit = self.now + c.cfg.commit_ms;
        let args = OffsetCommitArgs {
            group_id: GROUP.to_string(),
            generation_id: c.generation,
            member_id: c.member_id.clone(),
            group_instance_id: c.instance.clone(),
        };
        self.send(i, Req::Commit(args));
    }

    /// The client closes its connection (a timeout, or the coordinator's reset): everything in
    /// flight on it fails, and the coordinator is looked up again.
    fn disconnect(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.consumers[i];
        c.conn = None;
        c.discover_at = now + RETRY_BACKOFF_MS;
        let lost_round = c
            .flights
            .iter()
            .any(|f| matches!(f.kind, Kind::Join | Kind::Sync));
        c.flights.clear();
        if lost_round {
            self.rejoin(i, RETRY_BACKOFF_MS);
        }
    }

    fn fatal(&mut self, i: usize) {
        // Both clients raise FENCED_INSTANCE_ID to the application, which here restarts the
        // process.
        self.stats.fenced_instance += 1;
        let t = self.now + self.rng.gen_range(1_000..=5_000);
        self.crash(i, Some(t));
    }

    fn crash(&mut self, i: usize, restart_at: Option<i64>) {
        let c = &mut self.consumers[i];
        c.process = Proc::Down { restart_at };
        c.owned.clear();
        c.flights.clear();
        c.conn = None;
        c.inbox.clear();
        c.phase = Phase::Unjoined;
        c.zombie = false;
    }

    fn restart(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.consumers[i];
        c.incarnation += 1;
        if c.incarnation > 1 {
            self.stats.restarts += 1;
        }
        c.client_id = format!("c{}.{}", c.idx, c.incarnation);
        c.member_id.clear();
        c.generation = -1;
        c.sub = 0;
        c.phase = Phase::Unjoined;
        c.owned.clear();
        c.flights.clear();
        c.conn = None;
        c.discover_at = now;
        c.join_at = now;
        c.process = Proc::Up;
        c.zombie = false;
        c.inbox.clear();
        note!(self, "{} starts", self.consumers[i].name());
    }

    fn resume(&mut self, i: usize) -> Result<(), String> {
        let now = self.now;
        let c = &mut self.consumers[i];
        c.process = Proc::Up;
        if now - c.paused_since > c.cfg.session_ms && !c.owned.is_empty() {
            c.zombie = true;
            self.stats.zombies += 1;
        }
        note!(
            self,
            "{} resumes after {} ms{}",
            self.consumers[i].name(),
            now - self.consumers[i].paused_since,
            if self.consumers[i].zombie {
                ", a zombie"
            } else {
                ""
            }
        );
        // What reached the socket during the pause is read first.
        while let Some(ev) = self.consumers[i].inbox.pop_front() {
            self.client_event(i, ev)?;
            if self.consumers[i].process != Proc::Up {
                break;
            }
        }
        Ok(())
    }

    fn poll(&mut self, i: usize) -> Result<(), String> {
        let now = self.now;
        match self.consumers[i].process {
            Proc::Down {
                restart_at: Some(t),
            } if t <= now => self.restart(i),
            Proc::Paused { until } if until <= now => {
                self.resume(i)?;
                if self.consumers[i].process != Proc::Up {
                    return Ok(());
                }
            }
            Proc::Up => {}
            _ => return Ok(()),
        }
        if self.consumers[i].flights.iter().any(|f| f.deadline <= now) {
            self.stats.timeouts += 1;
            note!(
                self,
                "{}: request timed out, closing the connection",
                self.consumers[i].name()
            );
            self.disconnect(i);
        }
        if self.consumers[i].conn.is_none() && self.consumers[i].discover_at <= now {
            if self.coord.is_some() {
                let conn = self.open_conn(i);
                self.consumers[i].conn = Some(conn);
            } else {
                self.consumers[i].discover_at = now + RETRY_BACKOFF_MS;
            }
        }
        let c = &self.consumers[i];
        if c.cfg.rdkafka && c.phase == Phase::Stable && now - c.last_hb_ok > c.cfg.session_ms {
            // librdkafka's own session timer: no heartbeat succeeded for a session timeout,
            // so the assignment is lost.
            self.stats.self_fenced += 1;
            note!(
                self,
                "{}: session timed out on the client, revoking",
                c.name()
            );
            if self.consumers[i].zombie {
                self.consumers[i].zombie = false;
                self.stats.zombies_fenced += 1;
            }
            self.rejoin(i, 0);
        }
        if self.consumers[i].conn.is_none() {
            return Ok(());
        }
        let c = &self.consumers[i];
        match c.phase {
            Phase::Unjoined if c.join_at <= now => self.send_join(i),
            Phase::Syncing | Phase::Stable => {
                if c.next_hb <= now && !c.in_flight(Kind::Heartbeat) {
                    self.send_heartbeat(i);
                }
                let c = &self.consumers[i];
                if c.phase == Phase::Stable && c.next_commit <= now && !c.in_flight(Kind::Commit) {
                    self.send_commit(i);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn client_event(&mut self, i: usize, ev: Ev) -> Result<(), String> {
        match self.consumers[i].process {
            Proc::Down { .. } => return Ok(()),
            Proc::Paused { .. } => {
                self.consumers[i].inbox.push_back(ev);
                return Ok(());
            }
            Proc::Up => {}
        }
        match ev {
            Ev::Disconnected { conn } => {
                if self.consumers[i].conn == Some(conn) {
                    note!(self, "{}: connection reset", self.consumers[i].name());
                    self.disconnect(i);
                }
                Ok(())
            }
            Ev::ToClient { conn, id, resp } => {
                if self.consumers[i].conn != Some(conn) {
                    return Ok(());
                }
                let Some(pos) = self.consumers[i].flights.iter().position(|f| f.id == id) else {
                    return Ok(());
                };
                let flight = self.consumers[i].flights.remove(pos);
                if let Resp::Join(r) = &resp {
                    self.register(&r.member_id);
                }
                note!(
                    self,
                    "{} <- {}",
                    self.consumers[i].name(),
                    self.describe_resp(&resp)
                );
                self.on_response(i, flight, resp)
            }
            _ => Ok(()),
        }
    }

    fn count_error(&mut self, code: i16) {
        match code {
            REBALANCE_IN_PROGRESS => self.stats.rebalance_in_progress += 1,
            ILLEGAL_GENERATION => self.stats.illegal_generation += 1,
            UNKNOWN_MEMBER_ID => self.stats.unknown_member += 1,
            MEMBER_ID_REQUIRED => self.stats.member_id_required += 1,
            _ => {}
        }
    }

    /// What both clients do on the errors that Join, Sync, Heartbeat and OffsetCommit answers
    /// share: forget the member id or only the generation, stop on a fenced static member, or
    /// find the coordinator again (and, for a rebalance step, rejoin after the backoff).
    fn on_member_error(
        &mut self,
        i: usize,
        code: i16,
        rebalancing: bool,
        api: &str,
    ) -> Result<(), String> {
        let rdkafka = self.consumers[i].cfg.rdkafka;
        match code {
            UNKNOWN_MEMBER_ID => self.reset(i, true),
            ILLEGAL_GENERATION => self.reset(i, !rdkafka),
            FENCED_INSTANCE_ID => self.fatal(i),
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS => {
                self.disconnect(i);
                if rebalancing {
                    self.rejoin(i, RETRY_BACKOFF_MS);
                }
            }
            e => return Err(format!("{api} answered {}", error_name(e))),
        }
        Ok(())
    }

    fn on_response(&mut self, i: usize, f: Flight, resp: Resp) -> Result<(), String> {
        let now = self.now;
        match resp {
            Resp::Join(r) => {
                self.count_error(r.error_code);
                match r.error_code {
                    NONE => {
                        self.register(&r.member_id);
                        let partitions = self.plan.partitions;
                        let c = &mut self.consumers[i];
                        c.member_id = r.member_id.clone();
                        c.generation = r.generation_id;
                        c.phase = Phase::Syncing;
                        c.next_hb = now + c.cfg.heartbeat_ms;
                        c.last_hb_ok = now;
                        let assignments = if r.leader == r.member_id && !r.skip_assignment {
                            range_assign(&r.members, partitions)
                        } else {
                            Vec::new()
                        };
                        let args = SyncGroupArgs {
                            group_id: GROUP.to_string(),
                            generation_id: r.generation_id,
                            member_id: r.member_id,
                            group_instance_id: c.instance.clone(),
                            protocol_type: Some(PROTOCOL_TYPE.to_string()),
                            protocol_name: r.protocol_name,
                            assignments,
                        };
                        self.send(i, Req::Sync(args));
                    }
                    MEMBER_ID_REQUIRED => {
                        self.register(&r.member_id);
                        self.consumers[i].member_id = r.member_id;
                        self.rejoin(i, 0);
                    }
                    REBALANCE_IN_PROGRESS => self.rejoin(i, 0),
                    e => self.on_member_error(i, e, true, "JoinGroup")?,
                }
            }
            Resp::Sync(s) => {
                self.count_error(s.error_code);
                let c = &self.consumers[i];
                if c.phase != Phase::Syncing || f.generation != c.generation {
                    return Ok(());
                }
                match s.error_code {
                    NONE => {
                        let owned = partitions_of(&s.assignment);
                        if let Some(p) = owned.iter().find(|&&p| p >= self.plan.partitions) {
                            return Err(format!("an assignment names partition {p}"));
                        }
                        let c = &mut self.consumers[i];
                        c.owned = owned;
                        c.phase = Phase::Stable;
                        c.last_hb_ok = now;
                        c.next_commit = now + c.cfg.commit_ms;
                    }
                    REBALANCE_IN_PROGRESS => self.rejoin(i, 0),
                    e => self.on_member_error(i, e, true, "SyncGroup")?,
                }
            }
            Resp::Heartbeat(code) | Resp::Commit(code) => {
                self.count_error(code);
                let c = &self.consumers[i];
                // Both clients ignore errors about a generation they have since left.
                let unchanged = f.member_id == c.member_id && f.generation == c.generation;
                if !unchanged || !matches!(c.phase, Phase::Syncing | Phase::Stable) {
                    return Ok(());
                }
                if c.zombie {
                    self.consumers[i].zombie = false;
                    if code != NONE {
                        self.stats.zombies_fenced += 1;
                    }
                }
                match code {
                    NONE => {
                        if f.kind == Kind::Heartbeat {
                            self.consumers[i].last_hb_ok = now;
                        }
                    }
                    REBALANCE_IN_PROGRESS => {
                        // During CompletingRebalance the SyncGroup answer is awaited instead.
                        if self.consumers[i].phase == Phase::Stable {
                            self.rejoin(i, 0);
                        }
                    }
                    e => self.on_member_error(i, e, false, &format!("{:?}", f.kind))?,
                }
            }
            Resp::Leave(_) => {}
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Faults.
    // -----------------------------------------------------------------------------------------

    fn apply(&mut self, fault: Fault) -> Result<(), String> {
        let now = self.now;
        match fault {
            Fault::Crash { who, down_ms } => {
                if matches!(self.consumers[who].process, Proc::Down { .. }) {
                    return Ok(());
                }
                self.stats.crashes += 1;
                note!(
                    self,
                    "CRASH {} (restarts in {down_ms} ms)",
                    self.consumers[who].name()
                );
                self.crash(who, Some(now + down_ms));
            }
            Fault::Pause { who, percent } => {
                let c = &mut self.consumers[who];
                if c.process != Proc::Up {
                    return Ok(());
                }
                let pause = c.cfg.session_ms * percent / 100;
                c.process = Proc::Paused { until: now + pause };
                c.paused_since = now;
                self.stats.pauses += 1;
                note!(
                    self,
                    "PAUSE {} for {pause} ms (session {} ms), owning {:?}",
                    self.consumers[who].name(),
                    self.consumers[who].cfg.session_ms,
                    self.consumers[who].owned
                );
            }
            Fault::Close { who, down_ms } => {
                if self.consumers[who].process != Proc::Up {
                    return Ok(());
                }
                // At least one consumer stays, so that the end state has a group to check.
                let others = self
                    .consumers
                    .iter()
                    .filter(|c| c.idx != who && !c.permanent)
                    .count();
                let down_ms = if others == 0 {
                    Some(down_ms.unwrap_or(1_000))
                } else {
                    down_ms
                };
                self.stats.closes += 1;
                note!(
                    self,
                    "CLOSE {}{}",
                    self.consumers[who].name(),
                    match down_ms {
                        Some(d) => format!(" (restarts in {d} ms)"),
                        None => " for good".to_string(),
                    }
                );
                self.revoke(who);
                let c = &self.consumers[who];
                if c.instance.is_none() && !c.member_id.is_empty() {
                    let leave = LeaveMember {
                        member_id: c.member_id.clone(),
                        group_instance_id: None,
                    };
                    self.send(who, Req::Leave(leave));
                }
                self.consumers[who].permanent = down_ms.is_none();
                self.crash(who, down_ms.map(|d| now + d));
            }
            Fault::Failover {
                load_ms,
                during_write: false,
            } => self.failover(load_ms)?,
            Fault::Failover {
                load_ms,
                during_write: true,
            } => {
                note!(self, "FAILOVER armed for the next write");
                self.armed_failover = Some(load_ms);
            }
            Fault::Delays { for_ms, max_ms } => {
                note!(self, "DELAYS up to {max_ms} ms for {for_ms} ms");
                self.delay_until = now + for_ms;
                self.delay_max = max_ms;
            }
            Fault::Losses { for_ms, permille } => {
                note!(self, "LOSSES of {permille}‰ for {for_ms} ms");
                self.loss_until = now + for_ms;
                self.burst_loss = permille;
            }
        }
        Ok(())
    }

    fn heal(&mut self) {
        self.healed = true;
        self.armed_failover = None;
        let now = self.now;
        note!(self, "HEAL: no more faults");
        for c in &mut self.consumers {
            match c.process {
                Proc::Paused { .. } => c.process = Proc::Paused { until: now },
                Proc::Down { restart_at: None } if !c.permanent => {
                    c.process = Proc::Down {
                        restart_at: Some(now),
                    }
                }
                _ => {}
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The checks.
    // -----------------------------------------------------------------------------------------

    fn check(&self) -> Result<(), String> {
        if let Some(v) = &self.view {
            let mut owner: Vec<Option<usize>> =
                vec![None; usize::try_from(self.plan.partitions).unwrap_or(0)];
            for c in &self.consumers {
                if c.owned.is_empty() {
                    continue;
                }
                if matches!(c.process, Proc::Down { .. }) {
                    return Err(format!("{} is down but owns {:?}", c.name(), c.owned));
                }
                if !v.accepts(&c.member_id, c.instance.as_deref(), c.generation) {
                    continue;
                }
                for &p in &c.owned {
                    let slot = &mut owner[usize::try_from(p).unwrap_or(0)];
                    if let Some(o) = *slot {
                        let other = &self.consumers[o];
                        return Err(format!(
                            "partition {p} is owned by both {} ({} generation {}) and {} ({} generation {}), both current members of generation {}",
                            other.name(),
                            self.label(&other.member_id),
                            other.generation,
                            c.name(),
                            self.label(&c.member_id),
                            c.generation,
                            v.generation
                        ));
                    }
                    *slot = Some(c.idx);
                }
            }
        }
        if let Some((token, p)) = self.parked.iter().min_by_key(|(_, p)| p.since)
            && self.now - p.since > self.park_bound_ms
        {
            return Err(format!(
                "a {:?} (token {token}) has been parked since {} ms, longer than {} ms",
                p.kind, p.since, self.park_bound_ms
            ));
        }
        Ok(())
    }

    /// Invariant 4: `Err` says what is not settled yet.
    fn settled(&self) -> Result<(), String> {
        let v = self.view.as_ref().ok_or("no coordinator")?;
        if v.state != GroupState::Stable {
            return Err(format!("the group is {}", v.state));
        }
        if !self.parked.is_empty() {
            return Err(format!("{} requests are parked", self.parked.len()));
        }
        let live: Vec<&Consumer> = self.consumers.iter().filter(|c| !c.permanent).collect();
        let mut owner: BTreeMap<i32, usize> = BTreeMap::new();
        for c in &live {
            if c.process != Proc::Up || c.phase != Phase::Stable {
                return Err(format!("{} is {:?} {:?}", c.name(), c.process, c.phase));
            }
            let Some((_, _, assignment)) = v
                .members
                .iter()
                .find(|(m, i, _)| *m == c.member_id && *i == c.instance)
            else {
                return Err(format!("{} is not a member", c.name()));
            };
            if c.generation != v.generation {
                return Err(format!(
                    "{} is at generation {}, the group at {}",
                    c.name(),
                    c.generation,
                    v.generation
                ));
            }
            let mut told = c.owned.clone();
            told.sort_unstable();
            if told != partitions_of(assignment) {
                return Err(format!(
                    "{} owns {:?}, the group assigns it {:?}",
                    c.name(),
                    told,
                    partitions_of(assignment)
                ));
            }
            for &p in &told {
                if let Some(o) = owner.insert(p, c.idx) {
                    return Err(format!(
                        "partition {p} is assigned to c{o} and {}",
                        c.name()
                    ));
                }
            }
        }
        if v.members.len() != live.len() {
            return Err(format!(
                "the group has {} members, {} consumers are live",
                v.members.len(),
                live.len()
            ));
        }
        if owner.len() != usize::try_from(self.plan.partitions).unwrap_or(0) {
            return Err(format!(
                "only partitions {:?} of {} are assigned",
                owner.keys().collect::<Vec<_>>(),
                self.plan.partitions
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The scheduler.
    // -----------------------------------------------------------------------------------------

    fn run(&mut self) -> Result<(), String> {
        let heal_at = self.plan.faults_until;
        let limit = heal_at + QUIESCE_LIMIT_MS;
        let hold = 3 * self
            .consumers
            .iter()
            .map(|c| c.cfg.session_ms)
            .max()
            .unwrap_or(0);
        let mut settled_since: Option<i64> = None;
        loop {
            self.stats.steps += 1;
            if self.stats.steps > STEP_LIMIT {
                return Err(format!("more than {STEP_LIMIT} steps: the run spins"));
            }
            self.step(heal_at)?;
            self.check()?;
            if self.healed {
                match self.settled() {
                    Ok(()) => {
                        let since = *settled_since.get_or_insert(self.now);
                        if self.now - since >= hold {
                            self.stats.virtual_ms = u64::try_from(self.now).unwrap_or(0);
                            note!(self, "settled since {since} ms");
                            return Ok(());
                        }
                    }
                    Err(why) => {
                        settled_since = None;
                        if self.now > limit {
                            return Err(format!(
                                "not settled {QUIESCE_LIMIT_MS} ms after the faults stopped: {why}"
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Does the earliest thing due: a coordinator timer, then a delivery, then a consumer's
    /// own work, then a fault; at equal times in that order.
    fn step(&mut self, heal_at: i64) -> Result<(), String> {
        let t_tick = self
            .coord
            .as_ref()
            .and_then(GroupCoordinator::next_deadline);
        let t_event = self.queue.first_key_value().map(|(k, _)| k.0);
        let mut wake: Option<(i64, usize)> = None;
        for c in &self.consumers {
            if let Some(t) = c.wake()
                && wake.is_none_or(|(w, _)| t < w)
            {
                wake = Some((t, c.idx));
            }
        }
        let t_fault = if self.healed {
            None
        } else {
            Some(
                self.plan
                    .faults
                    .get(self.next_fault)
                    .map_or(heal_at, |f| f.0.min(heal_at)),
            )
        };
        let next = [t_tick, t_event, wake.map(|w| w.0), t_fault]
            .into_iter()
            .flatten()
            .min()
            .ok_or("nothing left to happen")?;
        self.now = self.now.max(next);
        if t_tick.is_some_and(|t| t <= next) {
            return self.tick();
        }
        if t_event.is_some_and(|t| t <= next) {
            let Some((_, ev)) = self.queue.pop_first() else {
                return Ok(());
            };
            return self.event(ev);
        }
        if let Some((t, i)) = wake
            && t <= next
        {
            return self.poll(i);
        }
        match self.plan.faults.get(self.next_fault) {
            Some((t, f)) if *t <= next && *t < heal_at => {
                let f = f.clone();
                self.next_fault += 1;
                self.apply(f)
            }
            _ => {
                self.heal();
                Ok(())
            }
        }
    }

    fn event(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::ToServer { conn, id, req } => {
                if self.conns[conn].epoch != self.epoch {
                    return Ok(());
                }
                self.conns[conn].backlog.push_back((id, req));
                self.serve(conn)
            }
            Ev::Release {
                conn,
                id,
                resp,
                epoch,
                generation,
            } => {
                if epoch != self.epoch {
                    return Ok(());
                }
                if let Resp::Sync(s) = &resp
                    && s.error_code == NONE
                {
                    self.announced = self.announced.max(generation);
                    let durable = self.durable.as_ref().map_or(0, |d| d.generation_id);
                    if durable < generation {
                        if self.shell == Shell::GroupBarrier {
                            return Err(format!(
                                "an assignment of generation {generation} went out while the durable record is at {durable}"
                            ));
                        }
                        self.stats.early_assignments += 1;
                        note!(
                            self,
                            "an assignment of generation {generation} goes out while the durable record is at {durable}"
                        );
                    }
                }
                if let Some(t) = self.transmit(conn, false) {
                    self.at(t, Ev::ToClient { conn, id, resp });
                }
                if self.conns[conn].current == Some(id) {
                    self.conns[conn].current = None;
                    self.serve(conn)?;
                }
                Ok(())
            }
            Ev::ToClient { conn, .. } | Ev::Disconnected { conn } => {
                let i = self.conns[conn].consumer;
                self.client_event(i, ev)
            }
            Ev::Durable { seq, epoch } => {
                if epoch == self.epoch
                    && self.writes.front().is_some_and(|w| w.seq == seq)
                    && let Some(w) = self.writes.pop_front()
                {
                    self.make_durable(w)?;
                }
                Ok(())
            }
            Ev::CoordinatorUp { epoch } => {
                if epoch == self.epoch && self.coord.is_none() {
                    self.coordinator_up()?;
                }
                Ok(())
            }
            Ev::Failover { load_ms } if !self.healed => self.failover(load_ms),
            Ev::Failover { .. } => Ok(()),
        }
    }
}

fn now_or_parked<R>(o: Outcome<R>) -> Option<R> {
    match o {
        Outcome::Now(r) => Some(r),
        Outcome::Parked => None,
    }
}

/// One seed's run.
struct Run {
    result: Result<Stats, String>,
    /// The last events, when traced.
    trace: Vec<String>,
    lost_generation: bool,
}

/// Runs one seed. A failing seed is run again traced to show its last events: it replays
/// exactly.
fn run_seed(seed: u64, opts: &Opts) -> Run {
    let mut sim = Sim::new(seed, opts);
    let result = sim.run().map(|()| sim.stats).map_err(|e| {
        let plan: Vec<String> = sim
            .plan
            .faults
            .iter()
            .enumerate()
            .map(|(i, (t, f))| format!("#{i} at {t} ms {f:?}"))
            .collect();
        format!(
            "at {} ms: {e}\n{:?} shell, fault plan: {}",
            sim.now,
            opts.shell,
            plan.join(", ")
        )
    });
    Run {
        result,
        trace: sim.trace.take().map(Vec::from).unwrap_or_default(),
        lost_generation: sim.lost_generation,
    }
}

fn env(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn fail(seed: u64, opts: &Opts, e: &str) -> ! {
    let trace = run_seed(seed, &opts.traced()).trace;
    panic!(
        "group simulation failed with seed {seed} (replay: VLTAVA_GROUP_SIM_SEED={seed}): {e}\nlast events:\n{}",
        trace.join("\n")
    );
}

#[test]
fn classic_group_survives_seeded_fault_schedules() {
    let verbose = std::env::var("VLTAVA_GROUP_SIM_VERBOSE").is_ok_and(|v| v != "0");
    let seeds: Vec<u64> = match env("VLTAVA_GROUP_SIM_SEED") {
        Some(s) => vec![s],
        None => (0..env("VLTAVA_GROUP_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let single = seeds.len() == 1;
    let mut total = Stats::default();
    let started = std::time::Instant::now();
    for &seed in &seeds {
        let opts = Opts::new(Shell::GroupBarrier);
        let run = run_seed(seed, &opts);
        match run.result {
            Ok(stats) => {
                if verbose {
                    println!("seed {seed}: {stats:?}");
                }
                total.add(&stats);
            }
            Err(e) => fail(seed, &opts, &e),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds in {secs:.2} s ({:.0} seeds/s): {total:?}",
        seeds.len(),
        seeds.len() as f64 / secs.max(1e-9)
    );
    if single {
        return;
    }
    // A seed replays exactly: the trace a failure prints is the run that failed.
    let traced = Opts::new(Shell::GroupBarrier).traced();
    let (a, b) = (run_seed(seeds[0], &traced), run_seed(seeds[0], &traced));
    assert_eq!(
        format!("{:?}", a.result),
        format!("{:?}", b.result),
        "seed {} is not deterministic",
        seeds[0]
    );
    assert_eq!(
        a.trace, b.trace,
        "seed {} does not replay the same events",
        seeds[0]
    );
    // The faults were real: a simulation in which nothing went wrong proves nothing.
    assert!(
        total.lost_requests > 0 && total.lost_responses > 0,
        "nothing lost: {total:?}"
    );
    assert!(total.delayed > 0, "nothing delayed: {total:?}");
    assert!(total.timeouts > 0, "no request timed out: {total:?}");
    assert!(
        total.crashes > 0 && total.restarts > 0,
        "no crash: {total:?}"
    );
    assert!(total.closes > 0, "no clean close: {total:?}");
    assert!(
        total.zombies > 0 && total.zombies_fenced > 0,
        "no zombie fenced: {total:?}"
    );
    assert!(
        total.failovers > 0 && total.writes_lost > 0,
        "no failover: {total:?}"
    );
    assert!(
        total.generations > 0 && total.revocations > 0,
        "no rebalance: {total:?}"
    );
    assert!(
        total.member_id_required > 0,
        "no MEMBER_ID_REQUIRED: {total:?}"
    );
    assert!(
        total.rebalance_in_progress > 0,
        "no REBALANCE_IN_PROGRESS: {total:?}"
    );
    assert!(total.unknown_member > 0, "no member fenced: {total:?}");
    assert!(
        total.static_rejoins > 0,
        "no static member rejoined: {total:?}"
    );
}

/// The shortest seeded schedule of the bug the barrier fixes: seed 326 with only its one
/// fault, a coordinator failover while the first group record is being written, and no
/// background loss. Three consumers (two static) form generation 1; the leader's SyncGroup at
/// 5796 ms makes the group Stable and starts the write of its record; the SyncGroup of the
/// static follower `i1` arrives in the same millisecond. Answered at once (per call), it
/// reaches `i1` at 5799 ms, the coordinator dies before the write is durable, and the new one
/// restores nothing: generation 1, which `i1` runs with, is gone. Held behind the group's
/// write (the barrier), the answer never goes out early and the run passes every check.
#[test]
fn per_call_answers_lose_a_generation_seed_326() {
    let per_call = Opts {
        faults: Some(vec![0]),
        no_background_loss: true,
        ..Opts::new(Shell::PerCall)
    };
    let run = run_seed(326, &per_call);
    assert!(
        run.lost_generation && run.result.is_err(),
        "seed 326 under the per-call contract was expected to lose generation 1: {:?}",
        run.result
    );
    let barrier = Opts {
        shell: Shell::GroupBarrier,
        ..per_call
    };
    let run = run_seed(326, &barrier);
    assert!(!run.lost_generation);
    if let Err(e) = run.result {
        fail(326, &barrier, &e);
    }
}
