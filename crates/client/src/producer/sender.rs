//! The sender task: takes ready batches from the accumulator, groups them per leader broker
//! into one Produce request, keeps up to `max.in.flight.requests.per.connection` requests on
//! each (pipelined) connection, and completes, retries or fails each batch from its answer.
//!
//! Ordering with idempotence: a batch gets its sequence number when first drained and keeps it
//! through every retry. A batch that comes back for a retry goes to the front of its partition
//! (in sequence order, before any batch never sent) and is resent only once nothing else of its
//! partition is in flight, so the broker always sees sequences in order; later batches that the
//! broker refused as OUT_OF_ORDER_SEQUENCE_NUMBER because an earlier one failed are retried the
//! same way. A batch that fails for good after getting a sequence leaves the broker's sequence
//! state unknown: the sender then waits for every request to finish, bumps the producer epoch
//! (InitProducerId with the current id, KIP-360) and numbers the queued batches again from 0.
//!
//! Everything here runs on one task; the accumulator lock is taken briefly and never across an
//! `.await`, and record callbacks run after it is released.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, TopicName, produce_request,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::cluster::join_host_port;
use crate::error::{ClientError, ErrorCode, codes};
use crate::producer::RecordMetadata;
use crate::producer::Shared;
use crate::producer::accumulator::{Accumulator, ProducerBatch, earliest};
use crate::producer::config::Acks;
use crate::producer::conn::{
    PRODUCE_VERSIONS, PipelinedConn, decode_response_header, encode_produce_frame, open,
};
use crate::producer::error::ProducerError;
use crate::producer::metadata::{
    Command, ProducerIdResult, TopicInfo, backoff, pick_version, update_leader,
};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
const KAFKA_STORAGE_ERROR: i16 = 56;
const REQUEST_TIMED_OUT: i16 = 7;
const UNKNOWN_SERVER_ERROR: i16 = -1;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// What the sender task reacts to, besides wake-ups from `send` and metadata changes.
#[derive(Debug)]
pub(crate) enum Event {
    /// A connection attempt finished.
    Connected {
        node: i32,
        conn_id: u64,
        addr: String,
        result: Result<(TcpStream, Option<(i16, i16)>), ClientError>,
    },
    /// A response frame arrived.
    Frame { conn_id: u64, frame: Bytes },
    /// A request frame was written to the socket.
    Written { conn_id: u64 },
    /// The connection failed (reported once, by its reader or writer).
    Failed { conn_id: u64, error: ClientError },
    /// An InitProducerId answer from the control task.
    ProducerId(ProducerIdResult),
}

/// A Produce request on the wire.
#[derive(Debug)]
struct InFlight {
    cid: i32,
    version: i16,
    sent: Instant,
    batches: Vec<ProducerBatch>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    addr: String,
    version: i16,
    io: PipelinedConn,
    next_cid: i32,
    in_flight: VecDeque<InFlight>,
}

#[derive(Debug)]
enum Slot {
    Connecting {
        conn_id: u64,
        failures: u32,
    },
    Ready(Conn),
    Backoff {
        until: Instant,
        failures: u32,
    },
    /// The broker cannot take our Produce requests (no common version): its batches fail.
    Unusable(ProducerError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pid {
    /// Not an idempotent producer.
    Disabled,
    Unknown,
    Requesting,
    Known(i64, i16),
    RetryAt(Instant),
    Failed,
}

/// Why a batch did not make it this time.
#[derive(Debug)]
enum Failure {
    /// A Kafka error code for its partition.
    Broker(i16, Option<String>),
    /// The request never got a usable answer (connection lost, timeout, bad response).
    Network(ProducerError),
}

type Outcome = Result<(i64, i64), ProducerError>;

/// A partition's answer: error code, base offset, log append time, error message.
type Answer = (i16, i64, i64, Option<String>);

pub(crate) struct Sender {
    shared: Arc<Shared>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    events_tx: mpsc::UnboundedSender<Event>,
    commands: mpsc::UnboundedSender<Command>,
    md_rx: watch::Receiver<u64>,
    md_topics: HashMap<String, Arc<TopicInfo>>,
    md_brokers: HashMap<i32, String>,
    slots: HashMap<i32, Slot>,
    next_conn_id: u64,
    pid: Pid,
    current_pid: Option<(i64, i16)>,
    pid_failures: u32,
    bump_needed: bool,
    last_error: Option<String>,
    /// Completed batches whose records are told after the accumulator lock is released.
    done: Vec<(ProducerBatch, Outcome)>,
    client_id: StrBytes,
}

impl Sender {
    pub(crate) fn new(
        shared: Arc<Shared>,
        events_rx: mpsc::UnboundedReceiver<Event>,
        events_tx: mpsc::UnboundedSender<Event>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Sender {
        let md_rx = shared.metadata.version.subscribe();
        let pid = if shared.idempotent {
            Pid::Unknown
        } else {
            Pid::Disabled
        };
        let client_id = StrBytes::from_string(shared.config.client.connection.client_id.clone());
        Sender {
            shared,
            events_rx,
            events_tx,
            commands,
            md_rx,
            md_topics: HashMap::new(),
            md_brokers: HashMap::new(),
            slots: HashMap::new(),
            next_conn_id: 0,
            pid,
            current_pid: None,
            pid_failures: 0,
            bump_needed: false,
            last_error: None,
            done: Vec::new(),
            client_id,
        }
    }

    /// Runs until the producer is closed and every accepted record has its answer.
    pub(crate) async fn run(mut self) {
        self.refresh_metadata_view();
        loop {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            self.check_request_timeouts(now, &mut next);
            self.expire(now, &mut next);
            self.manage_pid(now, &mut next);
            self.drain(now, &mut next);
            self.run_completions();
            if self.finished() {
                break;
            }
            let sleep = next.unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                ev = self.events_rx.recv() => {
                    if let Some(ev) = ev {
                        self.handle(ev);
                        while let Ok(ev) = self.events_rx.try_recv() {
                            self.handle(ev);
                        }
                    }
                }
                _ = self.shared.wake.notified() => {}
                r = self.md_rx.changed() => {
                    if r.is_ok() {
                        self.refresh_metadata_view();
                    }
                }
                _ = tokio::time::sleep_until(sleep.into()) => {}
            }
            self.run_completions();
        }
    }

    fn finished(&self) -> bool {
        let closing = self.shared.lock_acc().closing;
        closing
            && self.in_flight_total() == 0
            && self.done.is_empty()
            && self.shared.lock_acc().is_empty()
    }

    fn in_flight_total(&self) -> usize {
        self.slots
            .values()
            .map(|s| match s {
                Slot::Ready(c) => c.in_flight.len(),
                _ => 0,
            })
            .sum()
    }

    fn refresh_metadata_view(&mut self) {
        let md = self.shared.metadata.lock();
        self.md_topics = md.topics.clone();
        self.md_brokers = md.brokers.clone();
        if let Some(e) = &md.last_error {
            self.last_error = Some(e.clone());
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Connected {
                node,
                conn_id,
                addr,
                result,
            } => self.on_connected(node, conn_id, addr, result, now),
            Event::Frame { conn_id, frame } => self.on_frame(conn_id, frame, now),
            Event::Written { conn_id } => {
                if self.shared.config.acks == Acks::None {
                    self.on_written(conn_id);
                }
            }
            Event::Failed { conn_id, error } => {
                if let Some(node) = self.node_of(conn_id) {
                    self.connection_failed(node, error, now);
                }
            }
            Event::ProducerId(r) => self.on_producer_id(r, now),
        }
    }

    fn node_of(&self, conn_id: u64) -> Option<i32> {
        self.slots.iter().find_map(|(n, s)| match s {
            Slot::Ready(c) if c.id == conn_id => Some(*n),
            _ => None,
        })
    }

    // ------------------------------------------------------------------ producer id

    fn manage_pid(&mut self, now: Instant, next: &mut Option<Instant>) {
        let ask = match self.pid {
            Pid::Unknown => true,
            Pid::RetryAt(t) if now >= t => true,
            Pid::RetryAt(t) => {
                earliest(next, t);
                false
            }
            Pid::Known(..) => self.bump_needed && self.in_flight_total() == 0,
            Pid::Disabled | Pid::Requesting | Pid::Failed => false,
        };
        if ask {
            let current = if self.bump_needed {
                self.current_pid
            } else {
                None
            };
            if self
                .commands
                .send(Command::InitProducerId { current })
                .is_ok()
            {
                self.pid = Pid::Requesting;
            }
        }
    }

    fn on_producer_id(&mut self, r: ProducerIdResult, now: Instant) {
        match r {
            Ok((id, epoch)) => {
                self.pid = Pid::Known(id, epoch);
                self.current_pid = Some((id, epoch));
                self.pid_failures = 0;
                if self.bump_needed {
                    let maybe_written = self.shared.lock_acc().reset_sequences();
                    self.bump_needed = false;
                    for b in maybe_written {
                        let e = self.possibly_persisted_error(&b, epoch);
                        self.done.push((b, Err(e)));
                    }
                }
            }
            Err((e, true)) => {
                self.pid_failures = self.pid_failures.saturating_add(1);
                self.last_error = Some(e.to_string());
                let c = &self.shared.config;
                self.pid = Pid::RetryAt(
                    now + backoff(c.retry_backoff, c.retry_backoff_max, self.pid_failures),
                );
            }
            Err((e, false)) => {
                self.pid = Pid::Failed;
                let fatal = ProducerError::Fatal(e.to_string());
                self.shared.set_fatal(fatal.clone());
                let shared = Arc::clone(&self.shared);
                let mut acc = shared.lock_acc();
                for b in acc.take_all() {
                    self.done.push((b, Err(fatal.clone())));
                }
            }
        }
    }

    // ------------------------------------------------------------------ connections

    fn ensure_connecting(&mut self, node: i32, now: Instant, next: &mut Option<Instant>) {
        let failures = match self.slots.get(&node) {
            Some(Slot::Ready(_) | Slot::Connecting { .. } | Slot::Unusable(_)) => return,
            Some(Slot::Backoff { until, failures }) => {
                if *until > now {
                    earliest(next, *until);
                    return;
                }
                *failures
            }
            None => 0,
        };
        let Some(addr) = self.md_brokers.get(&node).cloned() else {
            self.shared.metadata.request_refresh();
            return;
        };
        let conn_id = self.next_conn_id;
        self.next_conn_id += 1;
        let mut cfg = self.shared.config.client.connection.clone();
        cfg.request_timeout = self.shared.config.request_timeout;
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let result = open(&addr, &cfg).await;
            let _ = tx.send(Event::Connected {
                node,
                conn_id,
                addr,
                result,
            });
        });
        self.slots
            .insert(node, Slot::Connecting { conn_id, failures });
    }

    fn on_connected(
        &mut self,
        node: i32,
        conn_id: u64,
        addr: String,
        result: Result<(TcpStream, Option<(i16, i16)>), ClientError>,
        now: Instant,
    ) {
        let failures = match self.slots.get(&node) {
            Some(Slot::Connecting {
                conn_id: c,
                failures,
            }) if *c == conn_id => *failures,
            _ => return,
        };
        let cfg = &self.shared.config;
        let slot = match result {
            Ok((stream, range)) => match pick_version(range, PRODUCE_VERSIONS) {
                None => Slot::Unusable(ProducerError::from(ClientError::UnsupportedApi {
                    addr,
                    api: ApiKey::Produce,
                    ours: format!("v{}-v{}", PRODUCE_VERSIONS.0, PRODUCE_VERSIONS.1),
                    broker: range.map_or("none".into(), |(a, b)| format!("v{a}-v{b}")),
                })),
                Some(v)
                    if cfg.compression == vltava_protocol::batch::Compression::Zstd && v < 7 =>
                {
                    Slot::Unusable(ProducerError::Config(format!(
                        "compression.type=zstd needs Produce v7, {addr} speaks up to v{v}"
                    )))
                }
                Some(version) => {
                    let io = PipelinedConn::start(
                        stream,
                        conn_id,
                        addr.clone(),
                        cfg.client.connection.max_response_bytes,
                        self.events_tx.clone(),
                    );
                    Slot::Ready(Conn {
                        id: conn_id,
                        addr,
                        version,
                        io,
                        next_cid: 0,
                        in_flight: VecDeque::new(),
                    })
                }
            },
            Err(e) => {
                self.last_error = Some(e.to_string());
                self.shared.metadata.request_refresh();
                let failures = failures.saturating_add(1);
                Slot::Backoff {
                    until: now + backoff(cfg.retry_backoff, cfg.retry_backoff_max, failures),
                    failures,
                }
            }
        };
        self.slots.insert(node, slot);
    }

    /// Drops the connection to `node`: every request on it failed (retried if allowed).
    fn connection_failed(&mut self, node: i32, error: ClientError, now: Instant) {
        let Some(Slot::Ready(conn)) = self.slots.remove(&node) else {
            return;
        };
        let cfg = &self.shared.config;
        self.slots.insert(
            node,
            Slot::Backoff {
                until: now + cfg.retry_backoff,
                failures: 1,
            },
        );
        self.last_error = Some(error.to_string());
        self.shared.metadata.request_refresh();
        let err = ProducerError::from(error);
        let shared = Arc::clone(&self.shared);
        let mut acc = shared.lock_acc();
        let Conn { in_flight, .. } = conn;
        for inf in in_flight {
            for b in inf.batches {
                release_in_flight(&mut acc, &b);
                self.batch_failed(&mut acc, b, Failure::Network(err.clone()), now);
            }
        }
    }

    fn check_request_timeouts(&mut self, now: Instant, next: &mut Option<Instant>) {
        let limit = self.shared.config.request_timeout;
        let mut late = Vec::new();
        for (node, slot) in &self.slots {
            if let Slot::Ready(c) = slot
                && let Some(f) = c.in_flight.front()
            {
                if now >= f.sent + limit {
                    late.push((*node, c.addr.clone()));
                } else {
                    earliest(next, f.sent + limit);
                }
            }
        }
        for (node, addr) in late {
            let e = ClientError::Timeout {
                addr,
                api: ApiKey::Produce,
                after: limit,
            };
            self.connection_failed(node, e, now);
        }
    }

    // ------------------------------------------------------------------ batches

    fn expire(&mut self, now: Instant, next: &mut Option<Instant>) {
        let shared = Arc::clone(&self.shared);
        let timeout = shared.config.delivery_timeout;
        let mut acc = shared.lock_acc();
        for b in acc.expire(now, timeout, next) {
            if self.shared.idempotent && b.base_sequence >= 0 {
                self.bump_needed = true;
            }
            let e = self.expired_error(&b);
            self.done.push((b, Err(e)));
        }
    }

    fn possibly_persisted_error(&self, b: &ProducerBatch, new_epoch: i16) -> ProducerError {
        let detail = self
            .last_error
            .as_ref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        let old_epoch = b.wire.as_ref().map_or(-1, |w| w.2);
        ProducerError::PossiblyPersisted(format!(
            "{} record(s) for {}-{} may have been written: sent under producer epoch {old_epoch} \
             without an answer, and the epoch had to be bumped to {new_epoch}, under which they \
             would be written again{detail}",
            b.record_count, b.topic, b.partition,
        ))
    }

    fn expired_error(&self, b: &ProducerBatch) -> ProducerError {
        let detail = self
            .last_error
            .as_ref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        ProducerError::Timeout(format!(
            "{} record(s) for {}-{} expired: delivery.timeout.ms ({} ms) passed{detail}",
            b.record_count,
            b.topic,
            b.partition,
            self.shared.config.delivery_timeout.as_millis()
        ))
    }

    /// Takes the ready batches that can go now, one per partition and one request per
    /// leader, and sends them.
    fn drain(&mut self, now: Instant, next: &mut Option<Instant>) {
        let pid = match self.pid {
            Pid::Disabled => (-1, -1),
            Pid::Known(id, epoch) if !self.bump_needed => (id, epoch),
            _ => return,
        };
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let idempotent = shared.idempotent;
        let exhausted = shared.memory_waiters.load(Ordering::Relaxed) > 0;
        let mut requests: HashMap<i32, (Vec<ProducerBatch>, usize)> = HashMap::new();
        let mut connect: Vec<i32> = Vec::new();
        let mut need_refresh = false;
        {
            let mut acc = shared.lock_acc();
            let flush_upto = acc.flush_upto;
            let closing = acc.closing;
            let topics: Vec<Arc<str>> = acc.topics.keys().cloned().collect();
            for topic in topics {
                let info = self.md_topics.get(&*topic).cloned();
                let mut unusable: Vec<(usize, ProducerError)> = Vec::new();
                let Some(tq) = acc.topics.get_mut(&topic) else {
                    continue;
                };
                for (p, q) in tq.partitions.iter_mut().enumerate() {
                    let Some(head) = q.batches.front() else {
                        continue;
                    };
                    if let Some(t) = head.retry_at
                        && t > now
                    {
                        earliest(next, t);
                        continue;
                    }
                    let linger_end = head.created + cfg.linger;
                    let ready = head.full
                        || q.batches.len() > 1
                        || head.attempts > 0
                        || head.id < flush_upto
                        || closing
                        || exhausted
                        || now >= linger_end;
                    if !ready {
                        earliest(next, linger_end);
                        continue;
                    }
                    let leader = info
                        .as_ref()
                        .and_then(|i| i.leaders.get(p).copied())
                        .unwrap_or(-1);
                    if leader < 0 {
                        need_refresh = true;
                        continue;
                    }
                    match self.slots.get(&leader) {
                        Some(Slot::Ready(c)) => {
                            if c.in_flight.len() >= cfg.max_in_flight {
                                continue;
                            }
                        }
                        Some(Slot::Unusable(e)) => {
                            unusable.push((p, e.clone()));
                            continue;
                        }
                        _ => {
                            connect.push(leader);
                            continue;
                        }
                    }
                    // A retry waits until nothing of its partition is in flight, so that
                    // sequences reach the broker in order. And a partition's batches go to one
                    // broker at a time: new batches sent to a new leader while the old one
                    // still holds unanswered ones (appended there, and replicated) could put
                    // those more than the five batches a broker remembers per producer behind
                    // the log end, and their retry would then be refused as out of order
                    // rather than recognised as a duplicate. librdkafka waits the same way.
                    if idempotent
                        && q.in_flight > 0
                        && (head.base_sequence >= 0 || q.in_flight_to != leader)
                    {
                        continue;
                    }
                    let req = requests.entry(leader).or_default();
                    let size = head.size();
                    if !req.0.is_empty() && req.1 + size > cfg.max_request_size {
                        continue;
                    }
                    let Some(mut b) = q.batches.pop_front() else {
                        continue;
                    };
                    if idempotent && b.base_sequence < 0 {
                        b.base_sequence = q.next_sequence;
                        q.next_sequence = b.end_sequence();
                    }
                    b.full = true;
                    q.in_flight += 1;
                    q.in_flight_to = leader;
                    req.1 += size;
                    req.0.push(b);
                }
                for (p, e) in unusable {
                    if let Some(b) = acc
                        .topics
                        .get_mut(&topic)
                        .and_then(|t| t.partitions.get_mut(p))
                        .and_then(|q| q.batches.pop_front())
                    {
                        self.done.push((b, Err(e)));
                    }
                }
            }
        }
        if need_refresh {
            shared.metadata.request_refresh();
        }
        for node in connect {
            self.ensure_connecting(node, now, next);
        }
        for (node, (batches, _size)) in requests {
            self.send_request(node, batches, pid, now);
        }
    }

    /// Finishes the batches (compression, header, CRC) and writes one Produce request.
    fn send_request(
        &mut self,
        node: i32,
        batches: Vec<ProducerBatch>,
        pid: (i64, i16),
        now: Instant,
    ) {
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let mut ready = Vec::with_capacity(batches.len());
        let mut broken = Vec::new();
        for mut b in batches {
            let seq = b.base_sequence;
            if let Some(builder) = b.builder.take() {
                match builder.finish(cfg.compression, pid.0, pid.1, seq) {
                    Ok(w) => b.wire = Some((w, pid.0, pid.1, seq)),
                    Err(e) => {
                        broken.push((b, ProducerError::InvalidRecord(e.to_string())));
                        continue;
                    }
                }
            } else if let Some((w, id, epoch, s)) = &b.wire
                && (*id, *epoch, *s) != (pid.0, pid.1, seq)
            {
                let w = crate::producer::batch::rewrite_producer_fields(w, pid.0, pid.1, seq);
                b.wire = Some((w, pid.0, pid.1, seq));
            }
            ready.push(b);
        }
        if !broken.is_empty() {
            let mut acc = shared.lock_acc();
            for (b, e) in broken {
                release_in_flight(&mut acc, &b);
                self.done.push((b, Err(e)));
            }
        }
        if ready.is_empty() {
            return;
        }
        let Some(Slot::Ready(conn)) = self.slots.get_mut(&node) else {
            let mut acc = shared.lock_acc();
            for b in ready {
                release_in_flight(&mut acc, &b);
                acc.requeue(b);
            }
            return;
        };
        let mut req = ProduceRequest::default();
        req.transactional_id = None;
        req.acks = cfg.acks.wire();
        req.timeout_ms = i32::try_from(cfg.request_timeout.as_millis()).unwrap_or(i32::MAX);
        for b in &ready {
            let Some((w, ..)) = &b.wire else { continue };
            let mut pd = produce_request::PartitionProduceData::default();
            pd.index = b.partition;
            pd.records = Some(w.clone());
            match req
                .topic_data
                .iter_mut()
                .find(|t| t.name.0.as_str() == &*b.topic)
            {
                Some(t) => t.partition_data.push(pd),
                None => {
                    let mut td = produce_request::TopicProduceData::default();
                    td.name = TopicName(StrBytes::from_string(b.topic.to_string()));
                    td.partition_data.push(pd);
                    req.topic_data.push(td);
                }
            }
        }
        let cid = conn.next_cid;
        conn.next_cid = conn.next_cid.wrapping_add(1);
        let frame = match encode_produce_frame(conn.version, cid, &self.client_id, &req) {
            Ok(f) => f,
            Err(e) => {
                let e = ProducerError::from(e);
                let mut acc = shared.lock_acc();
                for b in ready {
                    release_in_flight(&mut acc, &b);
                    self.done.push((b, Err(e.clone())));
                }
                return;
            }
        };
        conn.in_flight.push_back(InFlight {
            cid,
            version: conn.version,
            sent: now,
            batches: ready,
        });
        if !conn.io.write(frame) {
            let addr = conn.addr.clone();
            let e = ClientError::Io {
                addr,
                source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "writer stopped"),
            };
            self.connection_failed(node, e, now);
        }
    }

    /// acks=0: a request counts as done once written.
    fn on_written(&mut self, conn_id: u64) {
        let Some(node) = self.node_of(conn_id) else {
            return;
        };
        let Some(Slot::Ready(conn)) = self.slots.get_mut(&node) else {
            return;
        };
        let Some(inf) = conn.in_flight.pop_front() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let mut acc = shared.lock_acc();
        for b in inf.batches {
            release_in_flight(&mut acc, &b);
            self.done.push((b, Ok((-1, -1))));
        }
    }

    fn on_frame(&mut self, conn_id: u64, frame: Bytes, now: Instant) {
        let Some(node) = self.node_of(conn_id) else {
            return;
        };
        let Some(Slot::Ready(conn)) = self.slots.get_mut(&node) else {
            return;
        };
        let Some(inf) = conn.in_flight.pop_front() else {
            let e = ClientError::Protocol {
                addr: conn.addr.clone(),
                message: "response without a request".into(),
            };
            self.connection_failed(node, e, now);
            return;
        };
        let addr = conn.addr.clone();
        let decoded = decode_response_header(frame, ApiKey::Produce, inf.version, inf.cid, &addr)
            .and_then(|mut body| {
                ProduceResponse::decode(&mut body, inf.version).map_err(|e| ClientError::Protocol {
                    addr: addr.clone(),
                    message: format!("cannot decode Produce v{} response: {e}", inf.version),
                })
            });
        let resp = match decoded {
            Ok(r) => r,
            Err(e) => {
                conn.in_flight.push_front(inf);
                self.connection_failed(node, e, now);
                return;
            }
        };
        // KIP-951 (Produce v10+): a partition that moved names its new leader, and the
        // response the addresses of the brokers it names. Taken before the batches are
        // handled, so their retries go straight to the new leader.
        let endpoints: Vec<(i32, String)> = resp
            .node_endpoints
            .iter()
            .map(|n| (n.node_id.0, join_host_port(&n.host, n.port)))
            .collect();
        let mut moved: Vec<(String, i32)> = Vec::new();
        for t in &resp.responses {
            for p in &t.partition_responses {
                let leader = &p.current_leader;
                if matches!(
                    p.error_code,
                    codes::NOT_LEADER_OR_FOLLOWER | FENCED_LEADER_EPOCH
                ) && leader.leader_id.0 >= 0
                    && leader.leader_epoch >= 0
                    && update_leader(
                        &self.shared.metadata,
                        t.name.0.as_str(),
                        p.index,
                        (leader.leader_id.0, leader.leader_epoch),
                        &endpoints,
                    )
                {
                    tracing::debug!(topic = %t.name.0, partition = p.index, leader = leader.leader_id.0, leader_epoch = leader.leader_epoch, "new leader from the produce answer");
                    moved.push((t.name.0.to_string(), p.index));
                }
            }
        }
        if !moved.is_empty() {
            self.refresh_metadata_view();
        }
        let mut answers: HashMap<(&str, i32), Answer> = HashMap::new();
        for t in &resp.responses {
            for p in &t.partition_responses {
                answers.insert(
                    (t.name.0.as_str(), p.index),
                    (
                        p.error_code,
                        p.base_offset,
                        p.log_append_time_ms,
                        p.error_message.as_ref().map(|m| m.to_string()),
                    ),
                );
            }
        }
        let shared = Arc::clone(&self.shared);
        let mut acc = shared.lock_acc();
        for b in inf.batches {
            let answer = answers.get(&(&*b.topic, b.partition)).cloned();
            let Some(q) = partition_queue(&mut acc, &b) else {
                continue;
            };
            q.in_flight = q.in_flight.saturating_sub(1);
            match answer {
                Some((code, base, append_time, _))
                    if code == 0 || code == DUPLICATE_SEQUENCE_NUMBER =>
                {
                    if shared.idempotent && b.base_sequence >= 0 {
                        q.acked_sequence = b.end_sequence();
                    }
                    self.done.push((b, Ok((base, append_time))));
                }
                Some((code, _, _, message)) => {
                    let leader_moved = moved
                        .iter()
                        .any(|(t, p)| t.as_str() == &*b.topic && *p == b.partition);
                    self.batch_failed_to(
                        &mut acc,
                        b,
                        Failure::Broker(code, message),
                        leader_moved,
                        now,
                    );
                }
                None => {
                    let e = ProducerError::from(ClientError::Protocol {
                        addr: addr.clone(),
                        message: format!(
                            "the Produce response has no answer for {}-{}",
                            b.topic, b.partition
                        ),
                    });
                    self.batch_failed(&mut acc, b, Failure::Network(e), now);
                }
            }
        }
    }

    /// A batch failed: back to its queue for a retry if the error is retriable and time and
    /// retries allow, else failed for good.
    fn batch_failed(
        &mut self,
        acc: &mut Accumulator,
        b: ProducerBatch,
        failure: Failure,
        now: Instant,
    ) {
        self.batch_failed_to(acc, b, failure, false, now);
    }

    /// [`Sender::batch_failed`]; `leader_moved`: the answer named a new leader, already taken
    /// (KIP-951), so the retry goes to it without the retry backoff, as in the Java client.
    /// An idempotent batch keeps its producer id, epoch and sequence: the new leader has the
    /// partition's producer state and deduplicates a batch the old one had appended.
    fn batch_failed_to(
        &mut self,
        acc: &mut Accumulator,
        mut b: ProducerBatch,
        failure: Failure,
        leader_moved: bool,
        now: Instant,
    ) {
        let cfg = &self.shared.config;
        let idempotent = self.shared.idempotent;
        let acked = partition_queue(acc, &b).map_or(0, |q| q.acked_sequence);
        let (code, err) = match failure {
            Failure::Broker(code, message) => (
                Some(code),
                ProducerError::broker(&b.topic, b.partition, code, message),
            ),
            Failure::Network(e) => (None, e),
        };
        // Kafka answers these after appending the batch (or a network failure left no answer):
        // the attempt may be in the log. Any other partition error means it was not appended.
        if matches!(
            code,
            None | Some(
                REQUEST_TIMED_OUT
                    | NOT_ENOUGH_REPLICAS_AFTER_APPEND
                    | KAFKA_STORAGE_ERROR
                    | UNKNOWN_SERVER_ERROR
            )
        ) {
            b.maybe_written = true;
        }
        let retriable = match code {
            None => true,
            // Refused because an earlier batch of the partition is missing: that one is being
            // retried, this one follows it.
            Some(OUT_OF_ORDER_SEQUENCE_NUMBER) => {
                idempotent && b.base_sequence >= 0 && b.base_sequence != acked
            }
            Some(c) => ErrorCode(c).is_retriable(),
        };
        let stale_metadata = code.is_none_or(|c| {
            matches!(
                c,
                codes::NOT_LEADER_OR_FOLLOWER
                    | codes::UNKNOWN_TOPIC_OR_PARTITION
                    | codes::LEADER_NOT_AVAILABLE
                    | NOT_ENOUGH_REPLICAS
                    | NOT_ENOUGH_REPLICAS_AFTER_APPEND
                    | KAFKA_STORAGE_ERROR
                    | FENCED_LEADER_EPOCH
                    | UNKNOWN_LEADER_EPOCH
            )
        });
        if stale_metadata {
            self.shared.metadata.request_refresh();
        }
        if code.is_some() {
            self.last_error = Some(err.to_string());
        }
        let expired = now >= b.created + cfg.delivery_timeout;
        if retriable && !expired && b.attempts < cfg.retries {
            b.attempts += 1;
            b.retry_at = if leader_moved {
                None
            } else {
                Some(now + backoff(cfg.retry_backoff, cfg.retry_backoff_max, b.attempts))
            };
            acc.requeue(b);
            return;
        }
        if idempotent && b.base_sequence >= 0 {
            self.bump_needed = true;
        }
        let err = if retriable && expired {
            self.expired_error(&b)
        } else {
            err
        };
        self.done.push((b, Err(err)));
    }

    /// Tells every record of the completed batches, gives their memory back and wakes
    /// `flush` callers. Runs with no lock held (callbacks are user code).
    fn run_completions(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let done = std::mem::take(&mut self.done);
        let mut ids = Vec::with_capacity(done.len());
        for (b, outcome) in done {
            self.shared.memory.add_permits(b.reserved);
            ids.push(b.id);
            let partition = b.partition;
            match outcome {
                Ok((base, append_time)) => {
                    for (i, (d, ts)) in b.deliveries.into_iter().enumerate() {
                        d.complete(Ok(RecordMetadata {
                            partition,
                            offset: if base >= 0 { base + i as i64 } else { -1 },
                            timestamp: if append_time >= 0 { append_time } else { ts },
                        }));
                    }
                }
                Err(e) => {
                    for (d, _) in b.deliveries {
                        d.complete(Err(e.clone()));
                    }
                }
            }
        }
        {
            let mut acc = self.shared.lock_acc();
            for id in ids {
                acc.incomplete.remove(&id);
            }
        }
        self.shared.flushed.notify_waiters();
    }
}

/// One batch of the partition left the wire.
fn release_in_flight(acc: &mut Accumulator, b: &ProducerBatch) {
    if let Some(q) = partition_queue(acc, b) {
        q.in_flight = q.in_flight.saturating_sub(1);
    }
}

fn partition_queue<'a>(
    acc: &'a mut Accumulator,
    b: &ProducerBatch,
) -> Option<&'a mut crate::producer::accumulator::PartitionQueue> {
    acc.topics
        .get_mut(&*b.topic)
        .and_then(|t| t.partitions.get_mut(b.partition as usize))
}
