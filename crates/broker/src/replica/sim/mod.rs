//! A seeded, deterministic, in-process simulation of partition replication: one controller and
//! three brokers exchange messages over a simulated network that loses, delays (and so
//! reorders) and partitions them, on a virtual millisecond clock, while brokers crash and
//! restart and a client produces with acks=all. After every event the scheduler processes (a
//! message delivered, a node's step, a fault) it checks the invariants of [`invariants`]: one
//! leader per epoch, the high watermark never back within an epoch, every committed-ISR member
//! holding the batches below the leader's high watermark, committed batches kept by every later
//! leader, committed metadata kept; a failure names the seed, the event, its virtual time and
//! the invariant. After every fault schedule it also checks that no acknowledged write is
//! missing from the final leader's log, that every replica holds the same batches, and that
//! each replica's leader-epoch cache matches its batches.
//!
//! What runs is the project's own decision code, not a model of it:
//! - the controller's pure state machine ([`vltava_controller::controller::Controller`]:
//!   registration, heartbeats and session fencing, ISR-only elections, AlterPartition) over a
//!   [`MetadataImage`]; its records count as committed at once (the quorum has its own
//!   simulation in `vltava_controller::raft::sim`);
//! - per broker, real [`Partition`]s (become_leader / become_follower, appends under the role
//!   lock, the leader state of `replication.rs`, acks=all through
//!   [`Partition::wait_for_high_watermark`]) on real storage [`vltava_storage::Log`]s kept in a
//!   [`SimFs`], so that a crash drops what was never fsynced;
//! - the follower's side of replication from `fetcher.rs` ([`fetcher::fetch_partition`] builds
//!   each partition's fetch, [`fetcher::apply_partition`] applies the answer: appends,
//!   diverging-epoch truncation, OFFSET_OUT_OF_RANGE).
//!
//! What is mirrored here, because it lives in files this module must not depend on the shape
//! of (and is thin glue): the leader's Fetch handling for followers (`handlers/fetch.rs`: the
//! lookup and epoch checks, the KIP-320 divergence check, the read up to the log end, the
//! follower's position fed to the leader state, the long poll), the Produce handler's acks=all
//! steps (`handlers/produce.rs`), the image → roles step of `replica/metadata.rs`, and the
//! heartbeat / AlterPartition shells of `cluster.rs` and the controller node.
//!
//! What it does not prove: the async shells themselves (tasks, channels, select loops), TCP and
//! the wire codecs, the Raft quorum (records commit instantly and are never lost), the metadata
//! log's replay on brokers (an image is delivered whole), flush.on.append, compaction,
//! retention and DeleteRecords, consumer reads, transactions, and disk errors other than
//! crashes. Message loss is modelled as the loss of one request or response (a broken
//! connection), which the sender notices by a timeout.
//!
//! Virtual time jumps over the milliseconds in which nothing is due (no message arrives, no
//! timer of any node expires): a node would find nothing to do in them, so skipping them
//! changes nothing it does (the test runs a seed both ways and compares), and a seed runs in
//! about a third of the steps.
//!
//! `VLTAVA_SIM_SEED=N` runs only seed N (printed on every failure, and replayed exactly);
//! `VLTAVA_SIM_SEEDS=N` sets how many seeds the test runs, from `VLTAVA_SIM_FIRST` (0);
//! `VLTAVA_SIM_THREADS=N` runs seeds on N threads (default: up to 2); `VLTAVA_SIM_KEEP_GOING=1` reports every
//! failing seed rather than stopping at the first; `VLTAVA_SIM_EVERY_MS=1` steps through every
//! millisecond (the same runs, slower); `VLTAVA_SIM_VERBOSE=1` prints each run's statistics. A campaign (about 150 seeds/s per thread in release):
//!
//! ```text
//! VLTAVA_SIM_SEEDS=20000 VLTAVA_SIM_THREADS=2 VLTAVA_SIM_KEEP_GOING=1 \
//!     cargo test --release -p vltava-broker --lib replica::sim -- --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::PartitionData;
use uuid::Uuid;
use vltava_controller::controller::{
    AlterPartitionData, AlterPartitionReply, AlterPartitionRequest, AlterPartitionTopic,
    BrokerHeartbeatRequest, BrokerRegistrationRequest, Controller, ControllerConfig,
    ControllerError, CreateTopicRequest, HeartbeatReply, IsrMember, LEADER_RECOVERED,
};
use vltava_controller::image::MetadataImage;
use vltava_controller::records::{BrokerEndpoint, MetadataRecord};
use vltava_protocol::batch::{self, BatchHeader, HEADER_LEN};
use vltava_protocol::records::{parse_records, write_varint, write_varlong};
use vltava_storage::{CrashMode, LogConfig, LogManager, SimFs};

use self::invariants::{BrokerMetadata, Checker, Committed, LogView, Replica, View};
use super::fetcher;
use super::partition::sim_clock;
use super::replication::{IsrProposal, ProposalResult, ReplicationConfig};
use super::{AckWait, AppendError, FetchPosition, Partition};
use crate::errors::storage_code;

mod invariants;

/// Virtual time starts here: far in the future of any wall clock, so that the few places in
/// storage that still read the wall clock (a new log's first flush timer) see time as already
/// passed rather than as lying ahead.
const T0: i64 = 4_000_000_000_000;
const TOPIC: &str = "sim";
const PARTITIONS: i32 = 2;
const BROKERS: [i32; 3] = [1, 2, 3];
/// Network node ids: the controller, the brokers by their ids, the client.
const CTL: usize = 0;
const CLIENT: usize = 4;
const NODES: usize = 5;
const MIN_ISR: usize = 2;

const SESSION_TIMEOUT_MS: i64 = 1500;
const HEARTBEAT_MS: i64 = 250;
const LAG_MAX_MS: i64 = 1000;
/// `Cluster::run_isr_changes`' REPLICATION_TICK.
const REPLICATION_TICK_MS: i64 = 250;
const FETCH_WAIT_MS: i64 = 200;
/// Shorter than the fetcher's real margin (10 s) so that a lost answer costs a run little.
const FETCH_TIMEOUT_MS: i64 = FETCH_WAIT_MS + 800;
const FETCH_BACKOFF_MS: i64 = 100;
const CALL_TIMEOUT_MS: i64 = 1000;
/// `Cluster::join`'s wait before registering again while the previous incarnation's session
/// still runs.
const DUPLICATE_REGISTRATION_BACKOFF_MS: i64 = 500;
const PRODUCE_TIMEOUT_MS: i64 = 1000;
const CLIENT_TIMEOUT_MS: i64 = 1500;
const MAINTENANCE_MS: i64 = 500;
const QUIESCE_LIMIT_MS: i64 = 30_000;

/// splitmix64: small, seedable, and the same everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(0) as u64 + 1) as i64
    }
    /// True with probability `permille`/1000.
    fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }
    fn uuid(&mut self) -> Uuid {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_le_bytes());
        b[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// What the runs did, summed: proof that the faults were real.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    sent: u64,
    lost: u64,
    cut: u64,
    partitions: u64,
    leader_isolations: u64,
    controller_cuts: u64,
    one_way_cuts: u64,
    loss_bursts: u64,
    delay_bursts: u64,
    kills: u64,
    power_losses: u64,
    pauses: u64,
    diverging: u64,
    out_of_range: u64,
    leader_changes: u64,
    isr_changes: u64,
    truncations: u64,
    produced: u64,
    acked: u64,
    produce_errors: u64,
    /// Milliseconds the scheduler ran (the rest had nothing due), and events it processed,
    /// each followed by the invariant checks.
    steps: u64,
    events: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.sent += o.sent;
        self.lost += o.lost;
        self.cut += o.cut;
        self.partitions += o.partitions;
        self.leader_isolations += o.leader_isolations;
        self.controller_cuts += o.controller_cuts;
        self.one_way_cuts += o.one_way_cuts;
        self.loss_bursts += o.loss_bursts;
        self.delay_bursts += o.delay_bursts;
        self.kills += o.kills;
        self.power_losses += o.power_losses;
        self.pauses += o.pauses;
        self.diverging += o.diverging;
        self.out_of_range += o.out_of_range;
        self.leader_changes += o.leader_changes;
        self.isr_changes += o.isr_changes;
        self.truncations += o.truncations;
        self.produced += o.produced;
        self.acked += o.acked;
        self.produce_errors += o.produce_errors;
        self.steps += o.steps;
        self.events += o.events;
    }
}

#[derive(Debug)]
enum Msg {
    Register(BrokerRegistrationRequest),
    Registered(Result<i64, ControllerError>),
    Heartbeat(BrokerHeartbeatRequest),
    HeartbeatReply(Result<HeartbeatReply, ControllerError>),
    AlterPartition {
        id: u64,
        request: AlterPartitionRequest,
    },
    AlterPartitionReply {
        id: u64,
        reply: Result<AlterPartitionReply, ControllerError>,
        image: Arc<MetadataImage>,
    },
    Image(Arc<MetadataImage>),
    Fetch {
        id: u64,
        replica_epoch: i64,
        partitions: Vec<(Uuid, FetchPartition)>,
    },
    FetchReply {
        id: u64,
        partitions: Vec<(Uuid, PartitionData)>,
    },
    Metadata,
    MetadataReply(BTreeMap<i32, i32>),
    Produce {
        producer: usize,
        seq: i32,
        partition: i32,
        records: Bytes,
    },
    ProduceReply {
        producer: usize,
        seq: i32,
        result: Result<i64, i16>,
    },
}

struct Envelope {
    from: Peer,
    to: usize,
    /// The incarnation of the receiver it is for: a connection dies with its process.
    to_incarnation: u64,
    msg: Msg,
}

/// A node in one process lifetime: where an answer goes. An answer travels back on the
/// connection its request came on, so it reaches only the process that asked, never the one
/// started after it (which would otherwise take, say, its predecessor's heartbeat answer for
/// its own and join the cluster unregistered).
#[derive(Debug, Clone, Copy)]
struct Peer {
    node: usize,
    incarnation: u64,
}

/// The network: per-message loss, delay (so reordering between messages), and directed cuts.
struct Net {
    rng: Rng,
    queue: BTreeMap<(i64, u64), Envelope>,
    next_seq: u64,
    loss_permille: u64,
    jitter_ms: i64,
    /// Directed links that deliver nothing, until when.
    cuts: Vec<(i64, BTreeSet<(usize, usize)>)>,
    incarnations: [u64; NODES],
    stats: Stats,
}

impl Net {
    fn is_cut(&self, from: usize, to: usize, now: i64) -> bool {
        from != to
            && self
                .cuts
                .iter()
                .any(|(until, links)| *until > now && links.contains(&(from, to)))
    }

    /// Sends a request (or a push) to whatever process now runs on `to`.
    fn send(&mut self, now: i64, from: usize, to: usize, msg: Msg) {
        let to = Peer {
            node: to,
            incarnation: self.incarnations[to],
        };
        self.reply(now, from, to, msg);
    }

    /// Sends to one process lifetime of a node: the answer to a request from `to`.
    fn reply(&mut self, now: i64, from: usize, to: Peer, msg: Msg) {
        let Peer {
            node: to,
            incarnation: to_incarnation,
        } = to;
        self.stats.sent += 1;
        if self.is_cut(from, to, now) {
            self.stats.cut += 1;
            return;
        }
        if self.rng.chance(self.loss_permille) {
            self.stats.lost += 1;
            return;
        }
        let delay = 1 + self.rng.below(self.jitter_ms as u64 + 1) as i64;
        self.next_seq += 1;
        let env = Envelope {
            from: Peer {
                node: from,
                incarnation: self.incarnations[from],
            },
            to,
            to_incarnation,
            msg,
        };
        self.queue.insert((now + delay, self.next_seq), env);
    }

    fn due(&mut self, now: i64) -> Option<Envelope> {
        loop {
            let entry = self.queue.first_entry()?;
            if entry.key().0 > now {
                return None;
            }
            let env = entry.remove();
            // A partition that starts while a message is on its way stops it too.
            if self.is_cut(env.from.node, env.to, now) {
                self.stats.cut += 1;
                continue;
            }
            if env.to_incarnation != self.incarnations[env.to] {
                continue;
            }
            return Some(env);
        }
    }
}

/// The active controller: the real decision logic over an image whose records commit at once.
struct Ctl {
    controller: Controller,
    image: Arc<MetadataImage>,
    next_push: i64,
    last_leaders: BTreeMap<i32, (i32, i32)>,
    /// When each broker's last heartbeat arrived.
    last_heartbeat: BTreeMap<i32, i64>,
    /// Batches committed since the checks last looked: (offset, records, resulting image).
    committed: Vec<(u64, Vec<MetadataRecord>, Arc<MetadataImage>)>,
    /// The controller's next timer (session expiry), as of its last step.
    deadline: Option<i64>,
}

impl Ctl {
    fn commit(&mut self, records: &[MetadataRecord]) -> Option<u64> {
        if records.is_empty() {
            return None;
        }
        let mut image = (*self.image).clone();
        let offset = image.offset.map_or(0, |o| o + 1);
        image
            .apply_batch(offset, records)
            .expect("the controller's records fit its image");
        self.image = Arc::new(image);
        self.committed
            .push((offset, records.to_vec(), Arc::clone(&self.image)));
        Some(offset)
    }

    fn handle(&mut self, net: &mut Net, now: i64, from: Peer, msg: Msg) {
        match msg {
            Msg::Register(req) => {
                let broker = req.broker_id;
                let reply = match self.controller.register_broker(&self.image, req, now) {
                    Ok(d) => {
                        let offset = self.commit(&d.records).expect("a registration writes");
                        self.controller.registration_committed(broker, offset, now);
                        Ok(offset as i64)
                    }
                    Err(e) => Err(e),
                };
                net.reply(now, CTL, from, Msg::Registered(reply));
            }
            Msg::Heartbeat(req) => {
                self.last_heartbeat.insert(req.broker_id, now);
                let reply = self.controller.heartbeat(&self.image, &req, now).map(|d| {
                    self.commit(&d.records);
                    d.reply
                });
                net.reply(now, CTL, from, Msg::HeartbeatReply(reply));
            }
            Msg::AlterPartition { id, request } => {
                let reply = self
                    .controller
                    .alter_partition(&self.image, &request)
                    .map(|d| {
                        if self.commit(&d.records).is_some() {
                            net.stats.isr_changes += 1;
                        }
                        d.reply
                    });
                let image = Arc::clone(&self.image);
                net.reply(
                    now,
                    CTL,
                    from,
                    Msg::AlterPartitionReply { id, reply, image },
                );
            }
            _ => {}
        }
    }

    fn step(&mut self, net: &mut Net, now: i64, delivered: bool) {
        if delivered {
            self.deadline = self.controller.next_deadline_ms(&self.image);
        }
        if self.deadline.is_some_and(|t| t <= now) {
            let records = self.controller.tick(&self.image, now);
            self.commit(&records);
        }
        if self.image.topic_by_name(TOPIC).is_none() && self.image.usable_brokers().count() == 3 {
            let d = self.controller.create_topics(
                &self.image,
                &[CreateTopicRequest {
                    name: TOPIC.into(),
                    num_partitions: PARTITIONS,
                    replication_factor: 3,
                    ..Default::default()
                }],
                false,
            );
            self.commit(&d.records);
        }
        if let Some(t) = self.image.topic_by_name(TOPIC) {
            for (index, p) in &t.partitions {
                let now_leader = (p.leader, p.leader_epoch);
                if let Some(old) = self.last_leaders.insert(*index, now_leader)
                    && old.0 != now_leader.0
                {
                    net.stats.leader_changes += 1;
                }
            }
        }
        // Brokers follow the metadata log as learners; here they get the image whole, with
        // the same losses and delays as everything else.
        if now >= self.next_push {
            self.next_push = now + 50;
            for b in BROKERS {
                net.send(now, CTL, b as usize, Msg::Image(Arc::clone(&self.image)));
            }
        }
        // Only a delivered message changes the image or the sessions between two steps.
        self.deadline = self.controller.next_deadline_ms(&self.image);
    }

    /// When this controller next has something to do without a message arriving.
    fn wake(&self) -> i64 {
        self.deadline.unwrap_or(i64::MAX).min(self.next_push)
    }
}

/// Polls a future once; the simulation re-polls every millisecond, so no waker is needed.
fn poll_once<T>(fut: &mut Pin<Box<dyn Future<Output = T>>>) -> Poll<T> {
    let mut cx = Context::from_waker(Waker::noop());
    fut.as_mut().poll(&mut cx)
}

/// A follower fetch parked on the leader until data arrives or its wait ends.
struct Parked {
    from: Peer,
    id: u64,
    replica_epoch: i64,
    partitions: Vec<(Uuid, FetchPartition)>,
    deadline: i64,
    seen: Vec<(u64, u64, i32)>,
}

/// An acks=all produce waiting for the high watermark.
struct PendingAck {
    producer: usize,
    seq: i32,
    base_offset: i64,
    deadline: i64,
    partition: Arc<Partition>,
    wait: Pin<Box<dyn Future<Output = AckWait>>>,
}

/// One leader's fetcher (as `fetch_from_leader`): one request at a time for all the
/// partitions followed there.
struct Fetcher {
    partitions: Vec<Arc<Partition>>,
    delayed_until: BTreeMap<i32, i64>,
    in_flight: Option<(u64, i64, Vec<Sent>)>,
    next_at: i64,
    round: usize,
}

/// A partition of a fetch in flight and where it stood when sent.
type Sent = (Arc<Partition>, FetchPosition);
/// An ISR change a leader here proposed.
type Change = (Arc<Partition>, IsrProposal);

/// A running broker process.
struct Live {
    logs: LogManager,
    incarnation_id: Uuid,
    broker_epoch: i64,
    registered: bool,
    register_sent: Option<i64>,
    /// Not before: `Cluster::join` waits this long after DUPLICATE_BROKER_REGISTRATION.
    register_at: i64,
    joined: bool,
    /// The newest image this node's quorum member has.
    image: Arc<MetadataImage>,
    /// The image the replicas were last brought up to.
    published: Arc<MetadataImage>,
    partitions: BTreeMap<i32, Arc<Partition>>,
    heartbeat_sent: Option<i64>,
    next_heartbeat: i64,
    isr_queue: Vec<(Arc<Partition>, IsrProposal)>,
    alter_in_flight: Option<(u64, i64, Vec<Change>)>,
    next_replication_tick: i64,
    next_maintenance: i64,
    fetchers: BTreeMap<i32, Fetcher>,
    parked: Vec<Parked>,
    acks: Vec<PendingAck>,
    next_id: u64,
}

struct Broker {
    id: i32,
    /// Its own draws (incarnation ids), so that how often the scheduler steps does not change
    /// what any other generator draws: a seed's schedule depends on what happens, not on
    /// which quiet milliseconds were skipped.
    rng: Rng,
    fs: SimFs,
    log_config: LogConfig,
    incarnation: u64,
    live: Option<Live>,
    restart_at: Option<i64>,
    /// It lost unsynced writes and has not yet caught up into every ISR again.
    power_lost: bool,
    /// Last log end per partition, to count truncations.
    last_ends: BTreeMap<i32, u64>,
    /// A stopped process (SIGSTOP, a long GC pause): nothing runs and messages wait.
    paused_until: i64,
    /// The checks' view of each hosted log in this process lifetime.
    views: BTreeMap<i32, LogView>,
}

fn data_dir(id: i32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/broker-{id}"))
}

impl Broker {
    fn start(&mut self, now: i64) -> Result<(), String> {
        let logs = LogManager::open_with_fs(
            self.fs.shared(),
            &data_dir(self.id),
            self.log_config.clone(),
            now,
        )
        .map_err(|e| format!("broker {} cannot open its logs: {e}", self.id))?;
        self.incarnation += 1;
        self.views.clear();
        self.live = Some(Live {
            logs,
            incarnation_id: self.rng.uuid(),
            broker_epoch: -1,
            registered: false,
            register_sent: None,
            register_at: now,
            joined: false,
            image: Arc::new(MetadataImage::default()),
            published: Arc::new(MetadataImage::default()),
            partitions: BTreeMap::new(),
            heartbeat_sent: None,
            next_heartbeat: now,
            isr_queue: Vec::new(),
            alter_in_flight: None,
            next_replication_tick: now + REPLICATION_TICK_MS,
            next_maintenance: now + MAINTENANCE_MS,
            fetchers: BTreeMap::new(),
            parked: Vec::new(),
            acks: Vec::new(),
            next_id: 0,
        });
        Ok(())
    }

    fn crash(&mut self, mode: CrashMode, restart_at: i64) {
        // The file system loses what the crash loses before any handle is dropped, so that
        // nothing the dying process would still do reaches the disk.
        self.fs.crash(mode);
        self.live = None;
        self.restart_at = Some(restart_at);
    }

    fn node(&self) -> usize {
        self.id as usize
    }

    /// When this broker next has something to do without a message arriving: every timer its
    /// step looks at. What it does otherwise reacts to a message, and the simulation steps
    /// again right after any delivery.
    fn wake(&self, now: i64) -> i64 {
        let Some(live) = &self.live else {
            return self.restart_at.unwrap_or(i64::MAX);
        };
        if self.paused_until > now {
            return self.paused_until;
        }
        let mut t = if live.registered {
            live.heartbeat_sent.map_or(live.next_heartbeat, |sent| {
                live.next_heartbeat.max(sent + 2 * HEARTBEAT_MS)
            })
        } else {
            live.register_sent
                .map_or(now, |sent| sent + CALL_TIMEOUT_MS)
                .max(live.register_at)
        };
        t = t.min(live.next_replication_tick).min(live.next_maintenance);
        match &live.alter_in_flight {
            Some((_, sent, _)) => t = t.min(sent + CALL_TIMEOUT_MS),
            None if live.registered && !live.isr_queue.is_empty() => t = now,
            None => {}
        }
        for f in live.fetchers.values() {
            match &f.in_flight {
                Some((_, sent, _)) => t = t.min(sent + FETCH_TIMEOUT_MS),
                None if !f.partitions.is_empty() => t = t.min(f.next_at),
                None => {}
            }
        }
        for p in &live.parked {
            // A fetch parked before the log moved under it (another fetch, served after it in
            // the same step, moved the high watermark) is answered at the next step.
            if live.fingerprint(&p.partitions) != p.seen {
                return now;
            }
            t = t.min(p.deadline);
        }
        for a in &live.acks {
            t = t.min(a.deadline);
        }
        t
    }

    fn handle(&mut self, net: &mut Net, now: i64, from: Peer, msg: Msg) -> Result<(), String> {
        let node = self.node();
        let id = self.id;
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        match msg {
            Msg::Registered(r) => {
                live.register_sent = None;
                match r {
                    Ok(epoch) => {
                        live.broker_epoch = epoch;
                        live.registered = true;
                        live.next_heartbeat = now;
                    }
                    Err(e) if e.error == ResponseError::DuplicateBrokerRegistration => {
                        live.register_at = now + DUPLICATE_REGISTRATION_BACKOFF_MS;
                    }
                    Err(_) => {}
                }
            }
            Msg::HeartbeatReply(r) => {
                live.heartbeat_sent = None;
                match r {
                    Ok(reply) => {
                        if !reply.is_fenced && !live.joined {
                            live.joined = true;
                            live.publish(id, now)?;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.error,
                            ResponseError::StaleBrokerEpoch | ResponseError::BrokerIdNotRegistered
                        ) =>
                    {
                        live.registered = false;
                    }
                    Err(_) => {}
                }
            }
            Msg::Image(image) if image.offset > live.image.offset => {
                live.image = image;
                if live.joined {
                    live.publish(id, now)?;
                }
            }
            Msg::AlterPartitionReply {
                id: call,
                reply,
                image,
            } => {
                let Some((sent_id, sent_at, changes)) = live.alter_in_flight.take() else {
                    return Ok(());
                };
                if sent_id != call {
                    live.alter_in_flight = Some((sent_id, sent_at, changes));
                    return Ok(());
                }
                // The shell answers only once this node applied the committed change.
                if image.offset > live.image.offset {
                    live.image = image;
                }
                if live.joined {
                    live.publish(id, now)?;
                }
                answer_alter_partition(changes, reply);
            }
            Msg::Fetch {
                id: call,
                replica_epoch,
                partitions,
            } => {
                let parked = Parked {
                    from,
                    id: call,
                    replica_epoch,
                    partitions,
                    deadline: now + FETCH_WAIT_MS,
                    seen: Vec::new(),
                };
                live.serve_fetch(net, node, id, now, parked, false);
            }
            Msg::FetchReply {
                id: call,
                partitions,
            } => {
                let Some(leader) = live
                    .fetchers
                    .iter()
                    .find(|(_, f)| f.in_flight.as_ref().is_some_and(|(i, _, _)| *i == call))
                    .map(|(l, _)| *l)
                else {
                    return Ok(());
                };
                let f = live.fetchers.get_mut(&leader).expect("found above");
                let (_, _, sent) = f.in_flight.take().expect("found above");
                for (_, pd) in partitions {
                    let Some((p, at)) = sent.iter().find(|(p, _)| p.index == pd.partition_index)
                    else {
                        continue;
                    };
                    if fetcher::apply_partition(p, *at, pd).is_err() {
                        f.delayed_until.insert(p.index, now + FETCH_BACKOFF_MS);
                    }
                }
                f.next_at = now;
            }
            Msg::Metadata => {
                let leaders = live
                    .published
                    .topic_by_name(TOPIC)
                    .map(|t| t.partitions.iter().map(|(i, p)| (*i, p.leader)).collect())
                    .unwrap_or_default();
                net.reply(now, node, from, Msg::MetadataReply(leaders));
            }
            Msg::Produce {
                producer,
                seq,
                partition,
                records,
            } => {
                let result = live.produce(now, id, producer, seq, partition, records);
                if let Err(code) = result {
                    net.reply(
                        now,
                        node,
                        from,
                        Msg::ProduceReply {
                            producer,
                            seq,
                            result: Err(code),
                        },
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn step(&mut self, net: &mut Net, now: i64) -> Result<(), String> {
        if self.live.is_none() {
            if self.restart_at.is_some_and(|t| t <= now) {
                self.restart_at = None;
                net.incarnations[self.node()] += 1;
                self.start(now)?;
            }
            return Ok(());
        }
        let node = self.node();
        let id = self.id;
        let live = self.live.as_mut().expect("checked above");
        if !live.registered
            && now >= live.register_at
            && live
                .register_sent
                .is_none_or(|t| now - t >= CALL_TIMEOUT_MS)
        {
            live.register_sent = Some(now);
            let request = BrokerRegistrationRequest {
                broker_id: id,
                incarnation_id: live.incarnation_id,
                listeners: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: format!("broker-{id}"),
                    port: 9092,
                    security_protocol: 0,
                }],
                rack: None,
            };
            net.send(now, node, CTL, Msg::Register(request));
        }
        if live.registered
            && now >= live.next_heartbeat
            && live
                .heartbeat_sent
                .is_none_or(|t| now - t >= 2 * HEARTBEAT_MS)
        {
            live.next_heartbeat = now + HEARTBEAT_MS;
            live.heartbeat_sent = Some(now);
            let request = BrokerHeartbeatRequest {
                broker_id: id,
                broker_epoch: live.broker_epoch,
                current_metadata_offset: live.image.offset.map_or(-1, |o| o as i64),
                want_fence: false,
                want_shutdown: false,
            };
            net.send(now, node, CTL, Msg::Heartbeat(request));
        }
        if now >= live.next_replication_tick {
            live.next_replication_tick = now + REPLICATION_TICK_MS;
            for p in live.partitions.values() {
                if let Some(proposal) = p.replication_tick(now) {
                    live.isr_queue.push((Arc::clone(p), proposal));
                }
            }
        }
        if let Some((_, sent, _)) = &live.alter_in_flight
            && now - sent >= CALL_TIMEOUT_MS
        {
            let (_, _, changes) = live.alter_in_flight.take().expect("checked above");
            for (p, proposal) in changes {
                p.on_isr_change_result(proposal.id, ProposalResult::RetryLater);
            }
        }
        if live.alter_in_flight.is_none() && !live.isr_queue.is_empty() && live.registered {
            live.next_id += 1;
            let changes = std::mem::take(&mut live.isr_queue);
            let request = alter_partition_request(id, live.broker_epoch, &changes);
            live.alter_in_flight = Some((live.next_id, now, changes));
            net.send(
                now,
                node,
                CTL,
                Msg::AlterPartition {
                    id: live.next_id,
                    request,
                },
            );
        }
        if now >= live.next_maintenance {
            live.next_maintenance = now + MAINTENANCE_MS;
            for p in live.partitions.values() {
                // A failed flush takes the log offline, which the checks then report.
                let _ = p.log().maybe_flush(now);
            }
            let _ = live.logs.checkpoint();
        }
        live.run_fetchers(net, node, now);
        let parked = std::mem::take(&mut live.parked);
        for p in parked {
            live.serve_fetch(net, node, id, now, p, true);
        }
        live.poll_acks(net, node, now);
        Ok(())
    }
}

impl Live {
    /// The image → roles step of `ReplicaManager::apply_image` for the simulated topic.
    fn publish(&mut self, id: i32, now: i64) -> Result<(), String> {
        if self.image.offset <= self.published.offset {
            return Ok(());
        }
        let image = Arc::clone(&self.image);
        let config = ReplicationConfig {
            replica_lag_time_max_ms: LAG_MAX_MS,
            min_insync_replicas: MIN_ISR,
        };
        let mut by_leader: BTreeMap<i32, Vec<Arc<Partition>>> = BTreeMap::new();
        if let Some(t) = image.topic_by_name(TOPIC) {
            for (index, p) in &t.partitions {
                if !p.replicas.contains(&id) {
                    continue;
                }
                let local = match self.partitions.get(index) {
                    Some(local) => Arc::clone(local),
                    None => {
                        let log = match self.logs.get(TOPIC, *index) {
                            Some(l) => l,
                            None => {
                                let l = self
                                    .logs
                                    .create_log(TOPIC, *index, self.logs.default_config().clone())
                                    .map_err(|e| format!("broker {id}: create log: {e}"))?;
                                super::lock_log(&l)
                                    .set_topic_id(&t.id.to_string())
                                    .map_err(|e| format!("broker {id}: topic id: {e}"))?;
                                l
                            }
                        };
                        let local = Arc::new(Partition::new(
                            Arc::from(TOPIC),
                            t.id,
                            *index,
                            p.leader_epoch,
                            log,
                        ));
                        self.partitions.insert(*index, Arc::clone(&local));
                        local
                    }
                };
                if p.leader == id {
                    local.become_leader(
                        p.leader_epoch,
                        p.partition_epoch,
                        &p.replicas,
                        &p.isr,
                        config,
                        id,
                    );
                    let eligible: BTreeMap<i32, i64> = image
                        .brokers
                        .values()
                        .filter(|b| b.is_usable())
                        .map(|b| (b.id, b.epoch))
                        .collect();
                    local.set_eligible_brokers(&eligible);
                } else {
                    local.become_follower(p.leader, p.leader_epoch);
                    if p.leader >= 0 {
                        by_leader.entry(p.leader).or_default().push(local);
                    }
                }
            }
        }
        self.fetchers
            .retain(|leader, _| by_leader.contains_key(leader));
        for (leader, partitions) in by_leader {
            let f = self.fetchers.entry(leader).or_insert_with(|| Fetcher {
                partitions: Vec::new(),
                delayed_until: BTreeMap::new(),
                in_flight: None,
                next_at: now,
                round: 0,
            });
            f.partitions = partitions;
        }
        self.published = image;
        Ok(())
    }

    /// `fetch_from_leader`'s loop body: one request at a time, timeouts, backoffs, the
    /// rotating partition order; each partition's entry comes from the real fetcher code.
    fn run_fetchers(&mut self, net: &mut Net, node: usize, now: i64) {
        let broker_epoch = self.broker_epoch;
        for (leader, f) in self.fetchers.iter_mut() {
            if let Some((_, sent, _)) = &f.in_flight {
                if now - sent < FETCH_TIMEOUT_MS {
                    continue;
                }
                f.in_flight = None;
                f.next_at = now + FETCH_BACKOFF_MS;
            }
            if now < f.next_at || f.partitions.is_empty() {
                continue;
            }
            f.round = f.round.wrapping_add(1);
            let start = f.round % f.partitions.len();
            let mut entries = Vec::new();
            let mut sent = Vec::new();
            for p in f.partitions[start..].iter().chain(&f.partitions[..start]) {
                if f.delayed_until.get(&p.index).is_some_and(|t| *t > now) {
                    continue;
                }
                f.delayed_until.remove(&p.index);
                let (fp, at) = fetcher::fetch_partition(p, *leader, p.index, PARTITION_MAX_BYTES);
                entries.push((p.topic_id, fp));
                sent.push((Arc::clone(p), at));
            }
            if entries.is_empty() {
                f.next_at = f.delayed_until.values().copied().min().unwrap_or(now + 1);
                continue;
            }
            self.next_id += 1;
            f.in_flight = Some((self.next_id, now, sent));
            net.send(
                now,
                node,
                *leader as usize,
                Msg::Fetch {
                    id: self.next_id,
                    replica_epoch: broker_epoch,
                    partitions: entries,
                },
            );
        }
    }

    /// The leader's side of a follower fetch (`handlers::fetch`): answer at once when there is
    /// data or an error, else park until something moves or the wait ends.
    fn serve_fetch(
        &mut self,
        net: &mut Net,
        node: usize,
        id: i32,
        now: i64,
        mut parked: Parked,
        was_parked: bool,
    ) {
        let seen = self.fingerprint(&parked.partitions);
        if was_parked && seen == parked.seen && now < parked.deadline {
            self.parked.push(parked);
            return;
        }
        let replica_id = parked.from.node as i32;
        let mut total = 0usize;
        let mut has_error = false;
        let mut out = Vec::with_capacity(parked.partitions.len());
        for (topic_id, fp) in &parked.partitions {
            let (pd, bytes, error) =
                self.serve_partition(id, replica_id, parked.replica_epoch, *topic_id, fp, total);
            total += bytes;
            has_error |= error;
            if pd.diverging_epoch.epoch >= 0 {
                net.stats.diverging += 1;
            }
            if pd.error_code == ResponseError::OffsetOutOfRange.code() {
                net.stats.out_of_range += 1;
            }
            out.push((*topic_id, pd));
        }
        if total == 0 && !has_error && now < parked.deadline {
            // Positions were recorded; wait for the log to move, as a parked fetch does.
            parked.seen = self.fingerprint(&parked.partitions);
            self.parked.push(parked);
            return;
        }
        net.reply(
            now,
            node,
            parked.from,
            Msg::FetchReply {
                id: parked.id,
                partitions: out,
            },
        );
    }

    fn fingerprint(&self, partitions: &[(Uuid, FetchPartition)]) -> Vec<(u64, u64, i32)> {
        partitions
            .iter()
            .filter_map(|(_, fp)| self.partitions.get(&fp.partition))
            .map(|p| {
                let log = p.log();
                (log.log_end_offset(), log.high_watermark(), p.leader_epoch())
            })
            .collect()
    }

    /// `fetch_once` for one partition of a follower's fetch.
    fn serve_partition(
        &mut self,
        local_id: i32,
        replica_id: i32,
        replica_epoch: i64,
        topic_id: Uuid,
        fp: &FetchPartition,
        total: usize,
    ) -> (PartitionData, usize, bool) {
        let mut pd = PartitionData::default();
        pd.partition_index = fp.partition;
        let fail = |mut pd: PartitionData, code: i16| {
            pd.error_code = code;
            (pd, 0, true)
        };
        let Some(t) = self.published.topics.get(&topic_id) else {
            return fail(pd, ResponseError::UnknownTopicId.code());
        };
        let Some(state) = t.partitions.get(&fp.partition) else {
            return fail(pd, ResponseError::UnknownTopicOrPartition.code());
        };
        if !state.replicas.contains(&replica_id) {
            return fail(pd, ResponseError::NotLeaderOrFollower.code());
        }
        if state.leader < 0 {
            return fail(pd, ResponseError::LeaderNotAvailable.code());
        }
        let partition = match self.partitions.get(&fp.partition) {
            Some(p) if state.leader == local_id => Arc::clone(p),
            _ => {
                pd.current_leader.leader_id = BrokerId(state.leader);
                pd.current_leader.leader_epoch = state.leader_epoch;
                return fail(pd, ResponseError::NotLeaderOrFollower.code());
            }
        };
        if fp.current_leader_epoch >= 0 {
            if fp.current_leader_epoch < state.leader_epoch {
                return fail(pd, ResponseError::FencedLeaderEpoch.code());
            }
            if fp.current_leader_epoch > state.leader_epoch {
                return fail(pd, ResponseError::UnknownLeaderEpoch.code());
            }
        }
        if fp.last_fetched_epoch >= 0 {
            let ours = partition.end_offset_for_epoch(fp.last_fetched_epoch);
            let diverging = ours.filter(|&(epoch, end)| {
                epoch < fp.last_fetched_epoch || (end as i64) < fp.fetch_offset
            });
            if let Some((epoch, end)) = diverging {
                pd.diverging_epoch.epoch = epoch;
                pd.diverging_epoch.end_offset = end as i64;
                let wm = partition.watermarks();
                pd.high_watermark = wm.high_watermark;
                pd.last_stable_offset = wm.high_watermark;
                pd.log_start_offset = wm.log_start_offset;
                pd.records = Some(Bytes::new());
                return (pd, 0, true);
            }
        }
        let budget =
            (fp.partition_max_bytes.max(0) as usize).min(RESPONSE_MAX_BYTES.saturating_sub(total));
        match partition.read_regions_for_replica(fp.fetch_offset, budget, total == 0) {
            Ok((slice, _)) => {
                if let Some(proposal) =
                    partition.on_follower_fetch(replica_id, replica_epoch, fp.fetch_offset as u64)
                {
                    self.isr_queue.push((Arc::clone(&partition), proposal));
                }
                let wm = partition.watermarks();
                pd.high_watermark = wm.high_watermark;
                pd.last_stable_offset = wm.high_watermark;
                pd.log_start_offset = wm.log_start_offset;
                let bytes = slice.len();
                let records = slice.materialize().map(|s| s.bytes).unwrap_or_default();
                pd.records = Some(records);
                (pd, bytes, false)
            }
            Err(e) => {
                let wm = partition.watermarks();
                pd.error_code = storage_code(&e);
                pd.high_watermark = wm.high_watermark;
                pd.last_stable_offset = wm.high_watermark;
                pd.log_start_offset = wm.log_start_offset;
                pd.records = Some(Bytes::new());
                (pd, 0, true)
            }
        }
    }

    /// The Produce handler's steps for one acks=all partition.
    fn produce(
        &mut self,
        now: i64,
        id: i32,
        producer: usize,
        seq: i32,
        partition: i32,
        records: Bytes,
    ) -> Result<(), i16> {
        let state = self
            .published
            .topic_by_name(TOPIC)
            .and_then(|t| t.partitions.get(&partition))
            .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
        let p = match self.partitions.get(&partition) {
            Some(p) if state.leader == id => Arc::clone(p),
            _ => return Err(ResponseError::NotLeaderOrFollower.code()),
        };
        if p.is_under_min_isr() {
            return Err(ResponseError::NotEnoughReplicas.code());
        }
        let batches =
            batch::split_produced(records).map_err(|_| ResponseError::InvalidRecord.code())?;
        let pending = match p.append_start(&batches) {
            Ok(pending) => pending,
            Err(AppendError::NotLeader) => return Err(ResponseError::NotLeaderOrFollower.code()),
            Err(AppendError::Storage(e)) => return Err(storage_code(&e)),
        };
        let epoch = pending.leader_epoch();
        let mut finish: Pin<Box<dyn Future<Output = _>>> = Box::pin(pending.finish());
        let info = match poll_once(&mut finish) {
            Poll::Ready(Ok(info)) => info,
            Poll::Ready(Err(e)) => return Err(storage_code(&e)),
            // Only flush.on.append waits here, and the simulation does not use it.
            Poll::Pending => return Err(ResponseError::UnknownServerError.code()),
        };
        let waiter = Arc::clone(&p);
        let last = info.last_offset as i64;
        let wait: Pin<Box<dyn Future<Output = AckWait>>> = Box::pin(async move {
            // The request timeout is the simulation's (virtual) one, below.
            waiter
                .wait_for_high_watermark(epoch, last, Duration::from_secs(3600))
                .await
        });
        self.acks.push(PendingAck {
            producer,
            seq,
            base_offset: info.first_offset as i64,
            deadline: now + PRODUCE_TIMEOUT_MS,
            partition: p,
            wait,
        });
        Ok(())
    }

    fn poll_acks(&mut self, net: &mut Net, node: usize, now: i64) {
        let mut i = 0;
        while i < self.acks.len() {
            let a = &mut self.acks[i];
            let result = match poll_once(&mut a.wait) {
                Poll::Ready(AckWait::Replicated) => Some(Ok(a.base_offset)),
                Poll::Ready(AckWait::NotLeader) => {
                    Some(Err(ResponseError::NotLeaderOrFollower.code()))
                }
                Poll::Ready(AckWait::TimedOut { .. }) => {
                    Some(Err(ResponseError::RequestTimedOut.code()))
                }
                Poll::Pending if now >= a.deadline => {
                    Some(Err(if a.partition.is_under_min_isr() {
                        ResponseError::NotEnoughReplicasAfterAppend.code()
                    } else {
                        ResponseError::RequestTimedOut.code()
                    }))
                }
                Poll::Pending => None,
            };
            match result {
                Some(result) => {
                    let a = self.acks.swap_remove(i);
                    net.send(
                        now,
                        node,
                        CLIENT,
                        Msg::ProduceReply {
                            producer: a.producer,
                            seq: a.seq,
                            result,
                        },
                    );
                }
                None => i += 1,
            }
        }
    }
}

const PARTITION_MAX_BYTES: i32 = 700;
const RESPONSE_MAX_BYTES: usize = 1500;

/// `Cluster::alter_partition`'s request: the leader's own entry carries its broker epoch.
fn alter_partition_request(
    id: i32,
    broker_epoch: i64,
    changes: &[(Arc<Partition>, IsrProposal)],
) -> AlterPartitionRequest {
    let mut topics: Vec<AlterPartitionTopic> = Vec::new();
    for (p, proposal) in changes {
        let data = AlterPartitionData {
            partition_index: p.index,
            leader_epoch: proposal.leader_epoch,
            new_isr_with_epochs: proposal
                .new_isr
                .iter()
                .map(|&(broker_id, epoch)| IsrMember {
                    broker_id,
                    broker_epoch: if broker_id == id { broker_epoch } else { epoch },
                })
                .collect(),
            leader_recovery_state: LEADER_RECOVERED,
            partition_epoch: proposal.partition_epoch,
        };
        match topics.iter_mut().find(|t| t.topic_id == p.topic_id) {
            Some(t) => t.partitions.push(data),
            None => topics.push(AlterPartitionTopic {
                topic_id: p.topic_id,
                partitions: vec![data],
            }),
        }
    }
    AlterPartitionRequest {
        broker_id: id,
        broker_epoch,
        topics,
    }
}

/// `Cluster::alter_partition`'s handling of the answer.
fn answer_alter_partition(
    changes: Vec<(Arc<Partition>, IsrProposal)>,
    reply: Result<AlterPartitionReply, ControllerError>,
) {
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            for (p, proposal) in changes {
                p.on_isr_change_result(proposal.id, ProposalResult::for_error_code(e.code()));
            }
            return;
        }
    };
    let mut results = BTreeMap::new();
    for t in reply {
        for (index, r) in t.partitions {
            results.entry((t.topic_id, index)).or_insert(r);
        }
    }
    for (p, proposal) in changes {
        let result = match results.remove(&(p.topic_id, p.index)) {
            Some(Ok(a)) => ProposalResult::Committed {
                isr: a.isr,
                leader_epoch: a.leader_epoch,
                partition_epoch: a.partition_epoch,
            },
            Some(Err(e)) => ProposalResult::for_error_code(e.code()),
            None => ProposalResult::RetryLater,
        };
        p.on_isr_change_result(proposal.id, result);
    }
}

/// One idempotent producer with one request in flight, retrying its batch (same sequence)
/// until it is acknowledged.
struct Producer {
    partition: i32,
    producer_id: i64,
    next_seq: i32,
    current: Option<(i32, Vec<String>, Bytes)>,
    in_flight: Option<i64>,
    retry_at: i64,
    last_error: Option<i16>,
}

struct Client {
    rng: Rng,
    producers: Vec<Producer>,
    leaders: BTreeMap<i32, i32>,
    metadata_sent: Option<i64>,
    /// Values acknowledged, by partition: value → the offset the leader gave it.
    acked: BTreeMap<i32, BTreeMap<String, i64>>,
    /// Every value ever sent, by partition.
    sent: BTreeMap<i32, BTreeSet<String>>,
}

fn encode_batch(producer_id: i64, seq: i32, values: &[String], now: i64) -> Bytes {
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut body = vec![0u8];
        write_varlong(&mut body, 0);
        write_varint(&mut body, i as i32);
        write_varint(&mut body, -1);
        write_varint(&mut body, v.len() as i32);
        body.extend_from_slice(v.as_bytes());
        write_varint(&mut body, 0);
        write_varint(&mut records, body.len() as i32);
        records.extend_from_slice(&body);
    }
    let header = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: values.len() as i32 - 1,
        base_timestamp: now,
        max_timestamp: now,
        producer_id,
        producer_epoch: 0,
        base_sequence: seq,
        record_count: values.len() as i32,
    };
    Bytes::from(batch::build_batch(&header, &records))
}

impl Client {
    fn handle(&mut self, now: i64, msg: Msg, stats: &mut Stats) {
        match msg {
            Msg::MetadataReply(leaders) => {
                self.metadata_sent = None;
                self.leaders = leaders;
            }
            Msg::ProduceReply {
                producer,
                seq,
                result,
            } => {
                let p = &mut self.producers[producer];
                let Some((cur, values, _)) = &p.current else {
                    return;
                };
                if *cur != seq {
                    return;
                }
                match result {
                    Ok(base) => {
                        let acked = self.acked.entry(p.partition).or_default();
                        for (i, v) in values.iter().enumerate() {
                            acked.insert(v.clone(), base + i as i64);
                        }
                        stats.acked += values.len() as u64;
                        p.current = None;
                        p.in_flight = None;
                        p.retry_at = now + self.rng.range(0, 20);
                    }
                    Err(code) => {
                        stats.produce_errors += 1;
                        p.last_error = Some(code);
                        p.in_flight = None;
                        p.retry_at = now + self.rng.range(20, 120);
                        self.metadata_sent.get_or_insert(i64::MIN);
                    }
                }
            }
            _ => {}
        }
    }

    /// When the client next has something to do without an answer arriving.
    fn wake(&self, producing: bool) -> i64 {
        let mut t = self
            .metadata_sent
            .map_or(i64::MIN, |sent| sent.saturating_add(300));
        for p in &self.producers {
            match p.in_flight {
                Some(sent) => t = t.min(sent + CLIENT_TIMEOUT_MS),
                None if p.current.is_some() || producing => t = t.min(p.retry_at),
                None => {}
            }
        }
        t
    }

    fn step(&mut self, net: &mut Net, now: i64, producing: bool) {
        if self
            .metadata_sent
            .is_none_or(|t| now.saturating_sub(t) >= 300)
        {
            // Kafka's metadata refresh: a random broker's view of the leaders.
            let to = BROKERS[self.rng.below(3) as usize] as usize;
            net.send(now, CLIENT, to, Msg::Metadata);
            self.metadata_sent = Some(now);
        }
        for (i, p) in self.producers.iter_mut().enumerate() {
            if let Some(sent) = p.in_flight
                && now - sent >= CLIENT_TIMEOUT_MS
            {
                p.in_flight = None;
                p.retry_at = now;
            }
            if p.current.is_none() {
                if !producing || now < p.retry_at {
                    continue;
                }
                let n = self.rng.range(1, 3) as i32;
                let values: Vec<String> =
                    (0..n).map(|k| format!("p{i}-{}", p.next_seq + k)).collect();
                let bytes = encode_batch(p.producer_id, p.next_seq, &values, now);
                for v in &values {
                    self.sent.entry(p.partition).or_default().insert(v.clone());
                }
                net.stats.produced += values.len() as u64;
                p.current = Some((p.next_seq, values, bytes));
                p.next_seq += n;
            }
            if p.in_flight.is_some() || now < p.retry_at {
                continue;
            }
            let Some(&leader) = self.leaders.get(&p.partition).filter(|l| **l >= 0) else {
                p.retry_at = now + 50;
                continue;
            };
            let (seq, _, bytes) = p.current.as_ref().expect("set above");
            p.in_flight = Some(now);
            net.send(
                now,
                CLIENT,
                leader as usize,
                Msg::Produce {
                    producer: i,
                    seq: *seq,
                    partition: p.partition,
                    records: bytes.clone(),
                },
            );
        }
    }
}

/// One replica's log as (base offset, last offset, epoch, bytes, values) per batch.
type Batches = Vec<(u64, u64, i32, Bytes, Vec<String>)>;

/// Calls `f` with every batch of `log` in `[from, end)`, CRC-checked, as the log holds it.
pub(super) fn for_each_batch(
    log: &vltava_storage::Log,
    from: u64,
    end: u64,
    mut f: impl FnMut(&BatchHeader, Bytes) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = from;
    while at < end {
        let slice = log
            .read(at, 1 << 20, end, true)
            .map_err(|e| format!("read at {at}: {e}"))?;
        if slice.bytes.is_empty() {
            return Err(format!("nothing readable at {at} below the log end {end}"));
        }
        let mut bytes = slice.bytes.clone();
        while !bytes.is_empty() {
            let total = match batch::peek_total_len(&bytes) {
                Some(Ok(t)) if t <= bytes.len() => t,
                _ => return Err(format!("a bad batch near {at}")),
            };
            let b = bytes.split_to(total);
            let h = batch::verify(&b).map_err(|e| format!("bad batch near {at}: {e}"))?;
            f(&h, b)?;
        }
        at = slice.next_offset;
    }
    Ok(())
}

fn read_batches(p: &Partition) -> Result<Batches, String> {
    let log = p.log();
    let mut out = Vec::new();
    for_each_batch(
        &log,
        log.log_start_offset(),
        log.log_end_offset(),
        |h, b| {
            let at = h.base_offset;
            let values = parse_records(&b[HEADER_LEN..], h.record_count)
                .map_err(|e| format!("bad records near {at}: {e}"))?
                .iter()
                .map(|r| String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned())
                .collect();
            out.push((
                h.base_offset as u64,
                h.last_offset() as u64,
                h.partition_leader_epoch,
                b,
                values,
            ));
            Ok(())
        },
    )?;
    Ok(out)
}

/// The knobs one seed draws.
#[derive(Debug, Clone)]
struct Plan {
    workload_ms: i64,
    fault_gap_ms: (i64, i64),
    flush_ms: Option<i64>,
}

struct Sim {
    now: i64,
    net: Net,
    ctl: Ctl,
    brokers: Vec<Broker>,
    client: Client,
    faults: Rng,
    plan: Plan,
    next_fault: i64,
    burst_until: i64,
    /// The image the trace last described.
    traced: Arc<MetadataImage>,
    log: Vec<String>,
    seed: u64,
    checker: Checker,
    /// Log view generations handed out (see [`LogView::generation`]).
    generations: u64,
    /// Events processed: what a failure names, with the time.
    events: u64,
    /// The controller's committed partitions, as of `committed_at`.
    committed: BTreeMap<i32, Committed>,
    committed_at: Option<u64>,
    /// Step every millisecond rather than skip the quiet ones (to prove skipping exact).
    every_ms: bool,
    /// What the replica checks last looked at: (broker index, incarnation, partition,
    /// leading epoch, high watermark, log view generation, log end). Most events (a
    /// heartbeat, a metadata request, a fetch that finds nothing) change none of it, and the
    /// checks of an unchanged state against an unchanged history find nothing new.
    checked: [Vec<Seen>; 3],
    /// Per broker, the images its metadata check last looked at (incarnation, then offset and
    /// address of each image).
    checked_images: [Option<ImagesSeen>; 3],
}

type Seen = (usize, u64, i32, Option<i32>, u64, u64, u64);
type ImagesSeen = (u64, [(Option<u64>, usize); 2]);

/// What the scheduler just processed: the checks run after each one.
#[derive(Debug, Clone, Copy)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        what: &'static str,
    },
    Controller,
    Broker(i32),
    Client,
    /// A fault injected (a crash among them).
    Fault,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let node = |n: usize| match n {
            CTL => "the controller".to_string(),
            CLIENT => "the client".to_string(),
            b => format!("broker {b}"),
        };
        match self {
            Event::Deliver { from, to, what } => {
                write!(f, "{what} from {} to {}", node(*from), node(*to))
            }
            Event::Controller => f.write_str("the controller's step"),
            Event::Broker(b) => write!(f, "broker {b}'s step"),
            Event::Client => f.write_str("the client's step"),
            Event::Fault => f.write_str("a fault"),
        }
    }
}

impl Msg {
    fn kind(&self) -> &'static str {
        match self {
            Msg::Register(_) => "Register",
            Msg::Registered(_) => "Registered",
            Msg::Heartbeat(_) => "Heartbeat",
            Msg::HeartbeatReply(_) => "HeartbeatReply",
            Msg::AlterPartition { .. } => "AlterPartition",
            Msg::AlterPartitionReply { .. } => "AlterPartitionReply",
            Msg::Image(_) => "Image",
            Msg::Fetch { .. } => "Fetch",
            Msg::FetchReply { .. } => "FetchReply",
            Msg::Metadata => "Metadata",
            Msg::MetadataReply(_) => "MetadataReply",
            Msg::Produce { .. } => "Produce",
            Msg::ProduceReply { .. } => "ProduceReply",
        }
    }
}

impl Sim {
    fn new(seed: u64) -> Result<Sim, String> {
        let mut rng = Rng::new(seed);
        let plan = Plan {
            workload_ms: rng.range(6_000, 12_000),
            fault_gap_ms: if rng.chance(300) {
                (100, 600)
            } else {
                (300, 1500)
            },
            flush_ms: if rng.chance(500) {
                None
            } else {
                Some(rng.range(50, 2000))
            },
        };
        let log_config = LogConfig {
            segment_bytes: rng.range(2_000, 50_000) as u64,
            index_interval_bytes: 256,
            flush_interval_ms: plan.flush_ms.unwrap_or(i64::MAX),
            ..LogConfig::default()
        };
        let controller = Controller::new(ControllerConfig {
            session_timeout_ms: SESSION_TIMEOUT_MS,
            default_replication_factor: 3,
            max_replication_factor: None,
            seed,
            ..ControllerConfig::default()
        });
        let mut sim = Sim {
            now: T0,
            net: Net {
                rng: Rng::new(rng.next()),
                queue: BTreeMap::new(),
                next_seq: 0,
                loss_permille: 0,
                jitter_ms: 4,
                cuts: Vec::new(),
                incarnations: [0; NODES],
                stats: Stats::default(),
            },
            ctl: Ctl {
                controller,
                image: Arc::new(MetadataImage::default()),
                next_push: T0,
                last_leaders: BTreeMap::new(),
                last_heartbeat: BTreeMap::new(),
                committed: Vec::new(),
                deadline: None,
            },
            brokers: BROKERS
                .iter()
                .map(|&id| Broker {
                    id,
                    rng: Rng::new(rng.next()),
                    fs: SimFs::new(),
                    log_config: log_config.clone(),
                    incarnation: 0,
                    live: None,
                    restart_at: Some(T0),
                    power_lost: false,
                    last_ends: BTreeMap::new(),
                    paused_until: 0,
                    views: BTreeMap::new(),
                })
                .collect(),
            client: Client {
                rng: Rng::new(rng.next()),
                producers: (0..3i32)
                    .map(|i| Producer {
                        partition: i % PARTITIONS,
                        producer_id: 1000 + i64::from(i),
                        next_seq: 0,
                        current: None,
                        in_flight: None,
                        retry_at: T0 + 1000,
                        last_error: None,
                    })
                    .collect(),
                leaders: BTreeMap::new(),
                metadata_sent: None,
                acked: BTreeMap::new(),
                sent: BTreeMap::new(),
            },
            faults: Rng::new(rng.next()),
            plan,
            next_fault: T0 + 2000,
            burst_until: 0,
            traced: Arc::new(MetadataImage::default()),
            log: Vec::new(),
            seed,
            checker: Checker::default(),
            generations: 0,
            events: 0,
            committed: BTreeMap::new(),
            committed_at: None,
            every_ms: false,
            checked: Default::default(),
            checked_images: [None; 3],
        };
        sim.note(format!("seed {seed}: plan {:?}", sim.plan));
        Ok(sim)
    }

    fn note(&mut self, what: String) {
        let t = self.now - T0;
        self.log.push(format!("{t:>6} ms  {what}"));
    }

    fn broker(&mut self, id: i32) -> &mut Broker {
        &mut self.brokers[(id - 1) as usize]
    }

    /// Runs one millisecond of the simulation, checking the invariants after every event.
    fn step(&mut self, producing: bool) -> Result<(), String> {
        let now = self.now;
        sim_clock::set(Some(now));
        let mut to_ctl = false;
        while let Some(env) = self.net.due(now) {
            if (1..=3).contains(&env.to) && self.brokers[env.to - 1].paused_until > now {
                // The kernel holds what reaches a stopped process until it runs again.
                let at = self.brokers[env.to - 1].paused_until;
                self.net.next_seq += 1;
                self.net.queue.insert((at, self.net.next_seq), env);
                continue;
            }
            let event = Event::Deliver {
                from: env.from.node,
                to: env.to,
                what: env.msg.kind(),
            };
            match env.to {
                CTL => {
                    to_ctl = true;
                    self.ctl.handle(&mut self.net, now, env.from, env.msg)
                }
                CLIENT => self.client.handle(now, env.msg, &mut self.net.stats),
                b => self.brokers[b - 1].handle(&mut self.net, now, env.from, env.msg)?,
            }
            let touched = env.to.checked_sub(1).filter(|b| *b < 3);
            self.after(event, touched.as_slice())?;
        }
        self.ctl.step(&mut self.net, now, to_ctl);
        self.after(Event::Controller, &[])?;
        for i in 0..self.brokers.len() {
            let b = &mut self.brokers[i];
            if b.paused_until <= now {
                b.step(&mut self.net, now)?;
                let id = b.id;
                self.after(Event::Broker(id), &[i])?;
            }
        }
        self.client.step(&mut self.net, now, producing);
        self.after(Event::Client, &[])?;
        self.observe();
        Ok(())
    }

    /// The next millisecond at which anything can happen: the earliest timer of any node,
    /// message in flight or fault. Skipping the quiet milliseconds between changes nothing a
    /// node does (each would have found all its timers in the future and no message due),
    /// which the test checks by running a seed both ways.
    fn next_time(&self, producing: bool, end: i64) -> i64 {
        let now = self.now;
        if self.every_ms {
            return now + 1;
        }
        let mut t = end.min(self.ctl.wake()).min(self.client.wake(producing));
        if let Some(((at, _), _)) = self.net.queue.first_key_value() {
            t = t.min(*at);
        }
        for b in &self.brokers {
            t = t.min(b.wake(now));
        }
        if producing {
            t = t.min(self.next_fault);
        }
        if self.burst_until != 0 {
            t = t.min(self.burst_until);
        }
        t.max(now + 1)
    }

    /// Runs the invariant checks after one event; a failure names the seed, the event and its
    /// time, and the invariant.
    /// `brokers` are those the event ran on: an event changes only the state of the nodes it
    /// runs on, so only their replicas are looked at again.
    fn after(&mut self, event: Event, brokers: &[usize]) -> Result<(), String> {
        self.events += 1;
        self.net.stats.events += 1;
        self.verify(brokers).map_err(|why| {
            format!(
                "seed {}, event {} at {} ms ({event}): {why}",
                self.seed,
                self.events,
                self.now - T0
            )
        })
    }

    fn verify(&mut self, touched: &[usize]) -> Result<(), String> {
        for (offset, records, image) in std::mem::take(&mut self.ctl.committed) {
            self.checker
                .committed_metadata(offset, &records, &image)
                .map_err(|v| v.to_string())?;
        }
        let committed_moved = self.ctl.image.offset != self.committed_at;
        if committed_moved {
            self.committed_at = self.ctl.image.offset;
            self.committed = self
                .ctl
                .image
                .topic_by_name(TOPIC)
                .map(|t| {
                    t.partitions
                        .iter()
                        .map(|(i, p)| {
                            let c = Committed {
                                leader: p.leader,
                                leader_epoch: p.leader_epoch,
                                isr: p.isr.clone(),
                            };
                            (*i, c)
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.checker
                .committed_partitions(&self.committed)
                .map_err(|v| v.to_string())?;
        }
        let mut moved = committed_moved;
        for &i in touched {
            moved |= self.look_at(i)?;
        }
        if !moved {
            return Ok(());
        }
        let replicas: Vec<Replica<'_>> = self
            .checked
            .iter()
            .flatten()
            .map(
                |&(i, incarnation, partition, leading, high_watermark, _, _)| {
                    let b = &self.brokers[i];
                    Replica {
                        broker: b.id,
                        incarnation,
                        partition,
                        leading,
                        high_watermark,
                        log: &b.views[&partition],
                    }
                },
            )
            .collect();
        self.checker
            .check(&View {
                partitions: &self.committed,
                replicas: &replicas,
            })
            .map_err(|v| v.to_string())
    }

    /// Brings the checks' view of broker `i` up to date (its metadata checked on the way);
    /// true if anything the replica checks look at changed.
    fn look_at(&mut self, i: usize) -> Result<bool, String> {
        let b = &mut self.brokers[i];
        let mut seen: Vec<Seen> = Vec::with_capacity(self.checked[i].len());
        if let Some(live) = &b.live {
            let images = [&live.image, &live.published];
            let key = (
                b.incarnation,
                images.map(|m| (m.offset, Arc::as_ptr(m) as usize)),
            );
            if self.checked_images[i] != Some(key) {
                self.checked_images[i] = Some(key);
                self.checker
                    .broker_metadata(&BrokerMetadata {
                        broker: b.id,
                        incarnation: b.incarnation,
                        images,
                    })
                    .map_err(|v| v.to_string())?;
            }
            for (index, p) in &live.partitions {
                let leading = p.with_leader_state(|_| ()).map(|()| p.leader_epoch());
                let view = b.views.entry(*index).or_default();
                let log = p.log();
                view.refresh(&log, &mut self.generations)
                    .map_err(|e| format!("broker {}: partition {index}: {e}", b.id))?;
                let hw = log.high_watermark();
                seen.push((
                    i,
                    b.incarnation,
                    *index,
                    leading,
                    hw,
                    view.generation,
                    view.end,
                ));
            }
        } else {
            self.checked_images[i] = None;
        }
        if seen == self.checked[i] {
            return Ok(false);
        }
        self.checked[i] = seen;
        Ok(true)
    }

    /// The trace, the truncation count, and the bookkeeping of power losses.
    fn observe(&mut self) {
        if self.ctl.image.offset != self.traced.offset {
            let image = Arc::clone(&self.ctl.image);
            for (id, b) in &image.brokers {
                let before = self.traced.brokers.get(id).map(|o| (o.epoch, o.fenced));
                if before != Some((b.epoch, b.fenced)) {
                    self.note(format!("broker {id} epoch {} fenced {}", b.epoch, b.fenced));
                }
            }
            if let Some(t) = image.topic_by_name(TOPIC) {
                for (index, p) in &t.partitions {
                    let before = self
                        .traced
                        .topic_by_name(TOPIC)
                        .and_then(|o| o.partitions.get(index));
                    if before != Some(p) {
                        self.note(format!(
                            "partition {index}: leader {} epoch {} isr {:?} partition epoch {}",
                            p.leader, p.leader_epoch, p.isr, p.partition_epoch
                        ));
                    }
                }
            }
            self.traced = image;
        }
        let in_every_isr = |id: i32| {
            self.committed.len() == PARTITIONS as usize
                && self.committed.values().all(|c| c.isr.contains(&id))
        };
        for b in &mut self.brokers {
            let Some(live) = &b.live else { continue };
            for (index, view) in &b.views {
                let end = view.end;
                if let Some(last) = b.last_ends.insert(*index, end)
                    && end < last
                {
                    self.net.stats.truncations += 1;
                    let t = self.now - T0;
                    self.log.push(format!(
                        "{t:>6} ms  broker {}: partition {index} truncated {last} -> {end}",
                        b.id
                    ));
                }
            }
            if b.power_lost && live.joined && in_every_isr(b.id) {
                b.power_lost = false;
            }
        }
    }

    fn nodes_of_leader(&self, partition: i32) -> Option<i32> {
        self.ctl
            .image
            .topic_by_name(TOPIC)
            .and_then(|t| t.partitions.get(&partition))
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }

    fn cut(&mut self, until: i64, side: &BTreeSet<usize>, one_way: bool) {
        let mut links = BTreeSet::new();
        for a in 0..NODES {
            for b in 0..NODES {
                if side.contains(&a) && !side.contains(&b) {
                    links.insert((a, b));
                    if !one_way {
                        links.insert((b, a));
                    }
                }
            }
        }
        self.net.cuts.push((until, links));
    }

    /// One fault, drawn from the schedule's generator.
    fn inject(&mut self) {
        let now = self.now;
        let recovering = self.brokers.iter().find(|b| b.power_lost).map(|b| b.id);
        let r = &mut self.faults;
        let mut kind = r.below(10);
        if let Some(x) = recovering {
            // See `power_loss_allowed`: until the broker that lost its page cache is back in
            // every ISR, only it may fail again.
            let dur = r.range(300, 3000);
            if r.chance(500) {
                self.net.stats.partitions += 1;
                self.cut(now + dur, &BTreeSet::from([x as usize]), false);
                self.note(format!("isolate broker {x} for {dur} ms (recovering)"));
                return;
            }
            kind = 8;
        }
        let r = &mut self.faults;
        let dur = r.range(300, 3000);
        let until = now + dur;
        match kind {
            0 | 1 => {
                // Isolate a partition's leader (or any broker) from everyone.
                let target = if r.chance(700) {
                    let p = r.below(PARTITIONS as u64) as i32;
                    self.nodes_of_leader(p)
                } else {
                    None
                };
                let target = target.unwrap_or(BROKERS[self.faults.below(3) as usize]);
                if self.nodes_of_leader(0) == Some(target)
                    || self.nodes_of_leader(1) == Some(target)
                {
                    self.net.stats.leader_isolations += 1;
                }
                self.net.stats.partitions += 1;
                self.cut(until, &BTreeSet::from([target as usize]), false);
                self.note(format!("isolate broker {target} for {dur} ms"));
            }
            2 => {
                // Split: a minority broker with (or without) the controller and the client.
                let b = BROKERS[r.below(3) as usize] as usize;
                let mut side = BTreeSet::from([b]);
                if r.chance(500) {
                    side.insert(CTL);
                }
                if r.chance(500) {
                    side.insert(CLIENT);
                }
                self.net.stats.partitions += 1;
                self.note(format!("split {side:?} from the rest for {dur} ms"));
                self.cut(until, &side, false);
            }
            3 => {
                let b = BROKERS[r.below(3) as usize] as usize;
                let one_way = r.chance(300);
                self.net.stats.controller_cuts += 1;
                let links = if one_way {
                    BTreeSet::from([(b, CTL)])
                } else {
                    BTreeSet::from([(b, CTL), (CTL, b)])
                };
                self.net.cuts.push((until, links));
                self.note(format!(
                    "cut broker {b} from the controller ({}) for {dur} ms",
                    if one_way { "one way" } else { "both ways" }
                ));
            }
            4 => {
                // One broker-to-broker link, one way: fetches go out, answers do not.
                let a = BROKERS[r.below(3) as usize] as usize;
                let b = BROKERS[r.below(3) as usize] as usize;
                if a != b {
                    self.net.stats.one_way_cuts += 1;
                    self.net.cuts.push((until, BTreeSet::from([(a, b)])));
                    self.note(format!("cut link {a} -> {b} for {dur} ms"));
                }
            }
            5 => {
                self.net.loss_permille = r.range(20, 300) as u64;
                self.burst_until = until;
                self.net.stats.loss_bursts += 1;
                let loss = self.net.loss_permille;
                self.note(format!("loss {loss}‰ for {dur} ms"));
            }
            6 => {
                self.net.jitter_ms = r.range(30, 400);
                self.burst_until = until;
                self.net.stats.delay_bursts += 1;
                let j = self.net.jitter_ms;
                self.note(format!("delays up to {j} ms for {dur} ms"));
            }
            7 => {
                // Stop a broker (often a leader) for a while, past its session or not.
                let target = if r.chance(600) {
                    let p = r.below(PARTITIONS as u64) as i32;
                    self.nodes_of_leader(p)
                } else {
                    None
                };
                let target = target.unwrap_or(BROKERS[self.faults.below(3) as usize]);
                let dur = self.faults.range(200, 3000);
                self.net.stats.pauses += 1;
                self.broker(target).paused_until = now + dur;
                self.note(format!("pause broker {target} for {dur} ms"));
            }
            _ => {
                let target = if r.chance(600) {
                    let p = r.below(PARTITIONS as u64) as i32;
                    self.nodes_of_leader(p)
                } else {
                    None
                };
                let target = recovering
                    .or(target)
                    .unwrap_or(BROKERS[self.faults.below(3) as usize]);
                let restart = now + self.faults.range(50, 3000);
                let want_power = self.faults.chance(350);
                if self.broker(target).live.is_none() {
                    return;
                }
                let mode = if want_power
                    && (recovering == Some(target) || self.power_loss_allowed(target))
                {
                    if self.faults.chance(500) {
                        CrashMode::PowerLoss
                    } else {
                        CrashMode::Random {
                            seed: self.faults.next(),
                        }
                    }
                } else {
                    CrashMode::ProcessKill
                };
                match mode {
                    CrashMode::ProcessKill => self.net.stats.kills += 1,
                    _ => {
                        self.net.stats.power_losses += 1;
                        self.broker(target).power_lost = true;
                    }
                }
                self.net.incarnations[target as usize] += 1;
                self.note(format!(
                    "crash broker {target} ({mode:?}), restart in {} ms",
                    restart - now
                ));
                self.broker(target).crash(mode, restart);
            }
        }
    }

    /// Replication without fsync (Kafka's model) keeps an acknowledged write as long as one
    /// in-sync replica that has it keeps its page cache and stays eligible to lead. A power
    /// loss (unsynced writes gone) on top of any other failure can legitimately lose
    /// acknowledged writes: if the members that have them are fenced meanwhile (say, cut from
    /// the controller), the ISR shrinks to the broker that lost them, which then leads again
    /// with a short log (the "last replica standing" case that KIP-966's eligible leader
    /// replicas, not built yet, address). So a power loss hits only a healthy cluster (no
    /// fault active, every broker up, unfenced and fresh from a heartbeat, so that no session
    /// still runs out because of an earlier fault, every ISR full), and until that broker is
    /// back in every ISR only it may fail again.
    fn power_loss_allowed(&self, target: i32) -> bool {
        let fresh = BROKERS.iter().all(|b| {
            self.ctl
                .last_heartbeat
                .get(b)
                .is_some_and(|t| self.now - t <= 2 * HEARTBEAT_MS)
        });
        if !fresh {
            return false;
        }
        let now = self.now;
        if self
            .brokers
            .iter()
            .any(|b| b.power_lost || b.live.is_none() || b.paused_until > now)
            || self.net.cuts.iter().any(|(until, _)| *until > now)
            || self.burst_until != 0
            || !BROKERS.iter().all(|b| self.ctl.image.is_unfenced(*b))
        {
            return false;
        }
        let Some(t) = self.ctl.image.topic_by_name(TOPIC) else {
            return false;
        };
        t.partitions
            .values()
            .all(|p| p.isr.len() == p.replicas.len() && p.isr.iter().any(|r| *r != target))
    }

    fn heal(&mut self) {
        self.net.cuts.clear();
        self.net.loss_permille = 0;
        self.net.jitter_ms = 4;
        let now = self.now;
        for b in &mut self.brokers {
            if b.live.is_none() {
                b.restart_at = Some(now);
            }
            b.paused_until = b.paused_until.min(now);
        }
        self.note("heal".into());
    }

    /// Everything healed has converged: every broker in, every ISR full, every replica at the
    /// leader's log end, which the high watermark has reached, and no produce outstanding.
    /// `Err` says what is still missing.
    fn quiet(&self) -> Result<(), String> {
        if let Some((i, p)) = self
            .client
            .producers
            .iter()
            .enumerate()
            .find(|(_, p)| p.current.is_some())
        {
            let seq = p.current.as_ref().map(|c| c.0);
            return Err(format!(
                "producer p{i} still retries sequence {seq:?} (its last error: {:?})",
                p.last_error
            ));
        }
        let image = &self.ctl.image;
        let t = image.topic_by_name(TOPIC).ok_or("no topic")?;
        if let Some(b) = BROKERS.iter().find(|b| !image.is_unfenced(**b)) {
            return Err(format!("broker {b} is fenced"));
        }
        for (index, p) in &t.partitions {
            if p.leader < 0 || p.isr.len() != 3 {
                return Err(format!(
                    "partition {index}: leader {} isr {:?}",
                    p.leader, p.isr
                ));
            }
            let leader = self.replica(p.leader, *index).ok_or(format!(
                "partition {index}: leader {} not serving",
                p.leader
            ))?;
            let (end, hw) = {
                let log = leader.log();
                (log.log_end_offset(), log.high_watermark())
            };
            if hw != end || leader.leader_epoch() != p.leader_epoch || leader.isr().len() != 3 {
                return Err(format!(
                    "partition {index}: leader {} at high watermark {hw}, log end {end}, epoch {} (metadata {}), isr {:?}",
                    p.leader,
                    leader.leader_epoch(),
                    p.leader_epoch,
                    leader.isr()
                ));
            }
            for b in BROKERS {
                let theirs = self.replica(b, *index).map(|r| r.log().log_end_offset());
                if theirs != Some(end) {
                    return Err(format!(
                        "partition {index}: broker {b} at {theirs:?}, the leader at {end}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn replica(&self, broker: i32, partition: i32) -> Option<&Arc<Partition>> {
        self.brokers[(broker - 1) as usize]
            .live
            .as_ref()
            .filter(|l| l.joined)
            .and_then(|l| l.partitions.get(&partition))
    }

    fn run(&mut self) -> Result<(), String> {
        let end = T0 + 1000 + self.plan.workload_ms;
        while self.now < end {
            if self.now >= self.next_fault {
                self.inject();
                self.after(Event::Fault, &[0, 1, 2])?;
                let (lo, hi) = self.plan.fault_gap_ms;
                self.next_fault = self.now + self.faults.range(lo, hi);
            }
            self.net.stats.steps += 1;
            if self.burst_until != 0 && self.now >= self.burst_until {
                self.net.loss_permille = 0;
                self.net.jitter_ms = 4;
                self.burst_until = 0;
            }
            let now = self.now;
            self.net.cuts.retain(|(until, _)| *until > now);
            self.step(true)?;
            self.now = self.next_time(true, end);
        }
        self.heal();
        let limit = self.now + QUIESCE_LIMIT_MS;
        while let Err(why) = self.quiet() {
            if self.now >= limit {
                // A lost write often shows as a producer stuck behind it: say which.
                self.check()?;
                return Err(format!(
                    "no convergence {QUIESCE_LIMIT_MS} ms after healing: {why}"
                ));
            }
            self.net.stats.steps += 1;
            self.step(false)?;
            self.now = self.next_time(false, limit);
        }
        self.check()
    }

    fn check(&mut self) -> Result<(), String> {
        let image = Arc::clone(&self.ctl.image);
        self.checker
            .replay_metadata(&image)
            .map_err(|v| format!("seed {}, at the end: {v}", self.seed))?;
        let t = image.topic_by_name(TOPIC).ok_or("no topic")?;
        for (index, p) in &t.partitions {
            let leader = self.replica(p.leader, *index).ok_or("no leader replica")?;
            let hw = leader.log().high_watermark();
            let ours = read_batches(leader)?;
            // (1) Every acknowledged value is in the final leader's log, once, at the offset
            // its acknowledgement named; no value appears twice at all.
            let mut at: BTreeMap<&str, u64> = BTreeMap::new();
            for (base, _, _, _, values) in &ours {
                for (i, v) in values.iter().enumerate() {
                    if at.insert(v, base + i as u64).is_some() {
                        return Err(format!("partition {index}: value {v} appears twice"));
                    }
                }
            }
            let empty = BTreeMap::new();
            let acked = self.client.acked.get(index).unwrap_or(&empty);
            for (v, offset) in acked {
                match at.get(v.as_str()) {
                    None => {
                        return Err(format!(
                            "partition {index}: acknowledged value {v} (offset {offset}) is lost"
                        ));
                    }
                    Some(o) if *o as i64 != *offset => {
                        return Err(format!(
                            "partition {index}: acknowledged value {v} was at offset {offset}, is at {o}"
                        ));
                    }
                    Some(_) => {}
                }
            }
            let sent = self.client.sent.get(index);
            for v in at.keys() {
                if !sent.is_some_and(|s| s.contains(*v)) {
                    return Err(format!("partition {index}: value {v} was never sent"));
                }
            }
            // Per producer, values stay in the order they were sent.
            let mut last: BTreeMap<&str, i64> = BTreeMap::new();
            for (_, _, _, _, values) in &ours {
                for v in values {
                    let (prod, n) = v.split_once('-').ok_or("bad value")?;
                    let n: i64 = n.parse().map_err(|_| "bad value")?;
                    if let Some(prev) = last.insert(prod, n)
                        && prev >= n
                    {
                        return Err(format!(
                            "partition {index}: {prod} out of order: {prev} then {n}"
                        ));
                    }
                }
            }
            // (2) Every replica holds the same batches below the high watermark (which is the
            // log end once quiet).
            for b in BROKERS {
                let r = self.replica(b, *index).ok_or("missing replica")?;
                let theirs = read_batches(r)?;
                let below = |v: &Batches| -> Vec<(u64, u64, i32, Bytes)> {
                    v.iter()
                        .filter(|x| x.0 < hw)
                        .map(|x| (x.0, x.1, x.2, x.3.clone()))
                        .collect()
                };
                if below(&ours) != below(&theirs) {
                    let first = below(&ours)
                        .iter()
                        .zip(below(&theirs).iter())
                        .find(|(a, b)| a != b)
                        .map(|(a, b)| {
                            format!(
                                "leader {:?} vs replica {:?}",
                                (a.0, a.1, a.2),
                                (b.0, b.1, b.2)
                            )
                        });
                    return Err(format!(
                        "partition {index}: broker {b}'s log differs from the leader's below {hw}: {first:?}"
                    ));
                }
                // (4) The epoch cache agrees with the batches.
                let log = r.log();
                let entries = log.epoch_entries().to_vec();
                for w in entries.windows(2) {
                    if w[0].epoch >= w[1].epoch || w[0].start_offset > w[1].start_offset {
                        return Err(format!(
                            "partition {index}: broker {b}'s epoch cache is not increasing: {entries:?}"
                        ));
                    }
                }
                for (base, _, epoch, _, _) in &theirs {
                    let cached = log.epoch_for_offset(*base);
                    if cached != Some(*epoch) {
                        return Err(format!(
                            "partition {index}: broker {b}'s batch at {base} has epoch {epoch}, its cache says {cached:?} ({entries:?})"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Clears the thread's simulated clock however a run ends.
struct ClockGuard;

impl Drop for ClockGuard {
    fn drop(&mut self) {
        sim_clock::set(None);
    }
}

/// A seed's statistics, or its error and trace.
type Outcome = Result<Stats, (String, Vec<String>)>;

fn run_seed(seed: u64) -> Outcome {
    run_seed_stepping(seed, std::env::var("VLTAVA_SIM_EVERY_MS").is_ok())
}

fn run_seed_stepping(seed: u64, every_ms: bool) -> Outcome {
    let _clock = ClockGuard;
    // acks=all waits build a tokio timeout; it needs a runtime's timer, never driven here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _rt = rt.enter();
    let mut sim = Sim::new(seed).map_err(|e| (e, Vec::new()))?;
    sim.every_ms = every_ms;
    match sim.run() {
        Ok(()) => Ok(sim.net.stats),
        Err(e) => Err((e, std::mem::take(&mut sim.log))),
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// What one failed seed printed: the error and the trace's plan line and tail.
fn failure_report(seed: u64, e: &str, log: &[String]) -> String {
    let tail = log.len().saturating_sub(150);
    format!(
        "replication simulation failed with seed {seed} (replay: VLTAVA_SIM_SEED={seed}): {e}\nplan and last faults:\n{}\n{}",
        log.first().cloned().unwrap_or_default(),
        log[tail..].join("\n")
    )
}

/// Runs `seeds` on `threads` threads (each seed is independent and its own clock is
/// thread-local), giving each outcome in the order of `seeds`.
fn run_seeds(seeds: &[u64], threads: usize) -> Vec<Outcome> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(seeds.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    let outcome = run_seed(seed);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(outcome);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every seed ran"))
        .collect()
}

#[test]
fn replication_survives_seeded_fault_schedules() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let verbose = std::env::var("VLTAVA_SIM_VERBOSE").is_ok();
    let keep_going = std::env::var("VLTAVA_SIM_KEEP_GOING").is_ok();
    let threads = env("VLTAVA_SIM_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        |n| n as usize,
    );
    let seeds: Vec<u64> = match env("VLTAVA_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env("VLTAVA_SIM_FIRST").unwrap_or(0);
            (first..first + env("VLTAVA_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
        }
    };
    let single = seeds.len() == 1;
    let mut total = Stats::default();
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    for (seed, outcome) in seeds.iter().copied().zip(run_seeds(&seeds, threads)) {
        match outcome {
            Ok(stats) => {
                if verbose {
                    println!("seed {seed}: {stats:?}");
                }
                total.add(&stats);
            }
            Err((e, log)) if keep_going => {
                println!("{}", failure_report(seed, &e, &log));
                failed.push(seed);
            }
            Err((e, log)) => panic!("{}", failure_report(seed, &e, &log)),
        }
    }
    assert!(failed.is_empty(), "failed seeds: {failed:?}");
    println!(
        "{} seeds in {:.1} s: {total:?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    if !single {
        // A seed replays exactly: the failure a seed prints is the failure it reproduces.
        let again = run_seed(seeds[0]).map_err(|(e, _)| e);
        let first = run_seed(seeds[0]).map_err(|(e, _)| e);
        assert_eq!(
            format!("{again:?}"),
            format!("{first:?}"),
            "seed {} is not deterministic",
            seeds[0]
        );
        // Skipping quiet milliseconds is exact: stepping through every one of them gives the
        // same run (only the counts of steps and events differ).
        let uncounted = |r: Outcome| {
            r.map(|s| Stats {
                steps: 0,
                events: 0,
                ..s
            })
            .map_err(|(e, _)| e)
        };
        let skipping = uncounted(run_seed(seeds[0]));
        let stepping = uncounted(run_seed_stepping(seeds[0], true));
        assert_eq!(
            format!("{skipping:?}"),
            format!("{stepping:?}"),
            "seed {}: skipping quiet milliseconds changed the run",
            seeds[0]
        );
        // The faults were real: a simulation in which nothing failed proves nothing.
        assert!(total.lost > 0, "no message was lost: {total:?}");
        assert!(
            total.cut > 0 && total.partitions > 0,
            "no partition: {total:?}"
        );
        assert!(total.leader_isolations > 0, "no leader isolated: {total:?}");
        assert!(total.controller_cuts > 0, "no controller cut: {total:?}");
        assert!(total.kills > 0, "no broker killed: {total:?}");
        assert!(total.power_losses > 0, "no power loss: {total:?}");
        assert!(total.pauses > 0, "no broker paused: {total:?}");
        assert!(
            total.diverging > 0,
            "no diverging epoch answered: {total:?}"
        );
        assert!(total.leader_changes > 0, "no leader change: {total:?}");
        assert!(total.isr_changes > 0, "no ISR change: {total:?}");
        assert!(total.truncations > 0, "no follower truncated: {total:?}");
        assert!(total.acked > 0, "nothing acknowledged: {total:?}");
    }
}

/// Seeds per `cargo test` run: about 10 s of a debug build on two idle cores (20 s of CPU).
const DEFAULT_SEEDS: u64 = 200;

/// Found by the per-event checks at seeds 3385, 6252, 6686 and 10986 (4 of the first 12,000,
/// as the schedules were at this test's writing): a crash that tears the unflushed tail of a
/// follower's log flipped one bit in a batch's partitionLeaderEpoch field (0 became 2^20,
/// 2^14, 2^28, 4). That field lies outside the batch CRC (v2 covers attributes onwards), so
/// recovery kept the batch, and the broker rejoined the ISR holding, below the high
/// watermark, a batch whose bytes differed from the leader's. Kafka's recovery has the same
/// blind spot. Storage now writes each epoch start to `leader-epoch-checkpoint` before the
/// epoch's first record and, past the recovery point, ends the log at a batch whose epoch the
/// file does not give for its offset.
#[test]
fn regression_a_torn_leader_epoch_field_is_cut_at_recovery() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for seed in [3385, 6252, 6686, 10986] {
        if let Err((e, log)) = run_seed(seed) {
            panic!("{}", failure_report(seed, &e, &log));
        }
    }
}
