//! Producer tests: a programmable in-process fake broker for the accumulator, the sender's
//! pipelining, retries, timeouts and idempotence bookkeeping; and a real in-process
//! `vltava_broker::Broker` (dev-dependency) for end-to-end checks, including connections cut
//! while Produce requests are in flight (retried batches keep their sequence: no duplicate, no
//! reordering).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchRequest, FetchResponse, InitProducerIdResponse,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestKind, ResponseKind, TopicName,
    fetch_request,
};
use kafka_protocol::protocol::StrBytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vltava_protocol::batch::{Compression, HEADER_LEN, parse_header, peek_total_len, read_varint};

use super::*;
use crate::cluster::ClientConfig;
use crate::connection::{Connection, ConnectionConfig};
use crate::error::codes;

type TestResult = Result<(), Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------- the fake

/// What the fake does with one request.
enum Act {
    /// Answer now (after any deferred answers of this connection, in order).
    Respond(ResponseKind),
    /// Keep the answer back until the next `Respond` on this connection.
    Defer(ResponseKind),
    /// Never answer.
    Silence,
    /// Close the connection.
    Close,
}

type Handler = dyn Fn(usize, ApiKey, i16, RequestKind) -> Act + Send + Sync;

struct Fake {
    addr: String,
}

impl Fake {
    async fn start(make: impl FnOnce(u16) -> Arc<Handler>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let local = listener.local_addr().expect("fake addr");
        let handler = make(local.port());
        let conns = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = conns.fetch_add(1, AtomicOrdering::SeqCst);
                tokio::spawn(serve(stream, n, Arc::clone(&handler)));
            }
        });
        Fake {
            addr: local.to_string(),
        }
    }
}

async fn serve(mut stream: TcpStream, conn: usize, handler: Arc<Handler>) {
    let mut deferred: Vec<Vec<u8>> = Vec::new();
    loop {
        let Ok(len) = stream.read_i32().await else {
            return;
        };
        let mut buf = vec![0u8; len.max(0) as usize];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Ok(raw) = vltava_protocol::frame::decode_header(Bytes::from(buf)) else {
            return;
        };
        let (api, version, cid) = (
            raw.api_key,
            raw.header.request_api_version,
            raw.header.correlation_id,
        );
        let Ok(req) = vltava_protocol::frame::decode_body(api, version, raw.body) else {
            return;
        };
        let encode = |body: &ResponseKind| -> Vec<u8> {
            vltava_protocol::frame::encode_response(api, version, cid, body)
                .expect("encode fake response")
                .to_vec()
        };
        match handler(conn, api, version, req) {
            Act::Respond(body) => {
                deferred.push(encode(&body));
                for f in deferred.drain(..) {
                    if stream.write_all(&f).await.is_err() {
                        return;
                    }
                }
            }
            Act::Defer(body) => deferred.push(encode(&body)),
            Act::Silence => {}
            Act::Close => return,
        }
    }
}

/// One Produce attempt as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    conn: usize,
    acks: i16,
    partition: i32,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    records: i32,
    compression: Option<Compression>,
}

/// What a scripted broker remembers.
#[derive(Debug, Default)]
struct FakeState {
    requests: HashMap<i16, usize>,
    attempts: Vec<Attempt>,
    next_offset: HashMap<i32, i64>,
    init_pid_requests: Vec<(i64, i16)>,
}

/// Decides a Produce partition's fate: `None` answers with success (assigning offsets),
/// `Some(code)` with that error; or the whole request is deferred, ignored or closed.
enum ProduceFate {
    Partitions(Box<PartitionFate>),
}

/// (attempt, attempt number from 0) -> error code to answer, or `None` for success.
type PartitionFate = dyn Fn(&Attempt, usize) -> Option<i16> + Send + Sync;

/// (Produce request number from 0, state) -> what to do with the whole request.
type RequestFateFn = dyn Fn(usize, &FakeState) -> RequestFate + Send + Sync;

struct Script {
    partitions: i32,
    /// Topic error in Metadata (for an unknown topic).
    topic_error: i16,
    /// (attempt number from 0) -> how to treat this Produce request.
    produce: Box<RequestFateFn>,
    fate: ProduceFate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFate {
    Answer,
    Defer,
    Silence,
}

fn ok_script(partitions: i32) -> Script {
    Script {
        partitions,
        topic_error: 0,
        produce: Box::new(|_, _| RequestFate::Answer),
        fate: ProduceFate::Partitions(Box::new(|_, _| None)),
    }
}

fn api_versions() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    for (k, min, max) in [
        (ApiKey::ApiVersions, 0, 4),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::Produce, 3, 11),
        (ApiKey::InitProducerId, 0, 4),
    ] {
        let mut v = ApiVersion::default();
        v.api_key = k as i16;
        v.min_version = min;
        v.max_version = max;
        r.api_keys.push(v);
    }
    r
}

/// A broker at 127.0.0.1:`port` (node 0) leading every partition of every topic asked for.
fn scripted(script: Script) -> (Arc<StdMutex<FakeState>>, impl FnOnce(u16) -> Arc<Handler>) {
    let state = Arc::new(StdMutex::new(FakeState::default()));
    let st = Arc::clone(&state);
    let make = move |port: u16| -> Arc<Handler> {
        Arc::new(move |conn, api, _version, req| {
            let mut s = st.lock().expect("fake state");
            *s.requests.entry(api as i16).or_default() += 1;
            match req {
                RequestKind::ApiVersions(_) => {
                    Act::Respond(ResponseKind::ApiVersions(api_versions()))
                }
                RequestKind::Metadata(m) => {
                    let mut r = MetadataResponse::default();
                    let mut b = MetadataResponseBroker::default();
                    b.node_id = 0.into();
                    b.host = StrBytes::from_static_str("127.0.0.1");
                    b.port = i32::from(port);
                    r.brokers.push(b);
                    r.controller_id = 0.into();
                    for t in m.topics.unwrap_or_default() {
                        let mut rt = MetadataResponseTopic::default();
                        rt.name = t.name;
                        rt.error_code = script.topic_error;
                        if script.topic_error == 0 {
                            for i in 0..script.partitions {
                                let mut p = MetadataResponsePartition::default();
                                p.partition_index = i;
                                p.leader_id = 0.into();
                                p.replica_nodes = vec![0.into()];
                                p.isr_nodes = vec![0.into()];
                                rt.partitions.push(p);
                            }
                        }
                        r.topics.push(rt);
                    }
                    Act::Respond(ResponseKind::Metadata(r))
                }
                RequestKind::InitProducerId(r) => {
                    s.init_pid_requests
                        .push((r.producer_id.0, r.producer_epoch));
                    let mut resp = InitProducerIdResponse::default();
                    if r.producer_id.0 >= 0 {
                        resp.producer_id = r.producer_id;
                        resp.producer_epoch = r.producer_epoch + 1;
                    } else {
                        resp.producer_id = 1000.into();
                        resp.producer_epoch = 0;
                    }
                    Act::Respond(ResponseKind::InitProducerId(resp))
                }
                RequestKind::Produce(p) => {
                    let n = s
                        .requests
                        .get(&(ApiKey::Produce as i16))
                        .copied()
                        .unwrap_or(1)
                        - 1;
                    let fate = (script.produce)(n, &s);
                    let resp = produce_answer(conn, &p, &mut s, &script.fate);
                    if p.acks == 0 {
                        return Act::Silence;
                    }
                    match fate {
                        RequestFate::Answer => Act::Respond(ResponseKind::Produce(resp)),
                        RequestFate::Defer => Act::Defer(ResponseKind::Produce(resp)),
                        RequestFate::Silence => Act::Silence,
                    }
                }
                _ => Act::Close,
            }
        })
    };
    (state, make)
}

fn produce_answer(
    conn: usize,
    p: &ProduceRequest,
    s: &mut FakeState,
    fate: &ProduceFate,
) -> ProduceResponse {
    let ProduceFate::Partitions(decide) = fate;
    let mut resp = ProduceResponse::default();
    for t in &p.topic_data {
        let mut tr = TopicProduceResponse::default();
        tr.name = t.name.clone();
        for pd in &t.partition_data {
            let records = pd.records.clone().unwrap_or_default();
            let h = parse_header(&records).expect("fake: batch header");
            let attempt = Attempt {
                conn,
                acks: p.acks,
                partition: pd.index,
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                base_sequence: h.base_sequence,
                records: h.record_count,
                compression: h.compression(),
            };
            let n = s.attempts.len();
            s.attempts.push(attempt.clone());
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            match decide(&attempt, n) {
                None => {
                    let next = s.next_offset.entry(pd.index).or_default();
                    pr.base_offset = *next;
                    *next += i64::from(h.record_count);
                }
                Some(code) => {
                    pr.error_code = code;
                    pr.base_offset = -1;
                }
            }
            pr.log_append_time_ms = -1;
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    resp
}

fn config(addr: &str) -> ProducerConfig {
    let mut c = ProducerConfig::new(addr).expect("config");
    c.client.connection.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(5);
    c.delivery_timeout = Duration::from_secs(20);
    c.retry_backoff = Duration::from_millis(20);
    c.retry_backoff_max = Duration::from_millis(100);
    c.linger = Duration::from_millis(0);
    c
}

fn rec(topic: &str, v: &str) -> ProducerRecord<Bytes, Bytes> {
    ProducerRecord::new(topic, Bytes::from(v.to_string()))
}

fn produce_count(state: &Arc<StdMutex<FakeState>>) -> usize {
    state.lock().map(|s| s.attempts.len()).unwrap_or(0)
}

// ------------------------------------------------------------------- accumulator readiness

#[tokio::test]
async fn linger_holds_a_lone_batch_until_it_passes() -> TestResult {
    let (_state, make) = scripted(ok_script(1));
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.linger = Duration::from_millis(300);
    let p = Producer::connect(c).await?;
    // Warm up metadata and the producer id so only linger is measured.
    p.send(rec("t", "warm")).await?;
    let t0 = Instant::now();
    let md = p.send(rec("t", "x")).await?;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!((md.partition, md.offset), (0, 1));
    p.close().await;
    Ok(())
}

#[tokio::test]
async fn full_batches_leave_without_waiting_for_linger() -> TestResult {
    let (state, make) = scripted(ok_script(1));
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.linger = Duration::from_secs(30);
    c.delivery_timeout = Duration::from_secs(60);
    c.batch_size = 1000;
    let p = Producer::connect(c).await?;
    let value = "v".repeat(100);
    let mut futs = Vec::new();
    for _ in 0..20 {
        futs.push(p.enqueue(rec("t", &value)).await?);
    }
    // ~108 bytes a record: 8 per 1000-byte batch. Two full batches, one open.
    let last = futs.pop().ok_or("no futures")?;
    for f in futs.drain(..16) {
        tokio::time::timeout(Duration::from_secs(5), f).await??;
    }
    assert_eq!(produce_count(&state), 2);
    let mut last = Box::pin(last);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), last.as_mut())
            .await
            .is_err(),
        "the open batch must wait for linger.ms"
    );
    let t0 = Instant::now();
    p.flush().await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    let md = last.await?;
    assert_eq!(md.offset, 19);
    assert_eq!(produce_count(&state), 3);
    let s = state.lock().map_err(|_| "lock")?;
    assert_eq!(
        s.attempts.iter().map(|a| a.records).collect::<Vec<_>>(),
        vec![8, 8, 4]
    );
    assert_eq!(
        s.attempts
            .iter()
            .map(|a| a.base_sequence)
            .collect::<Vec<_>>(),
        vec![0, 8, 16],
        "sequences count records"
    );
    Ok(())
}

// ------------------------------------------------------------------------------ sender

#[tokio::test]
async fn requests_are_pipelined_up_to_max_in_flight() -> TestResult {
    let mut script = ok_script(1);
    // Hold the answers to the first four Produce requests; the fifth releases them all. A
    // producer that waited for each answer before sending the next would hang here.
    script.produce = Box::new(|n, _| {
        if n < 4 {
            RequestFate::Defer
        } else {
            RequestFate::Answer
        }
    });
    let (state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.batch_size = 500;
    let p = Producer::connect(c).await?;
    let mut futs = Vec::new();
    for i in 0..30 {
        futs.push(p.enqueue(rec("t", &format!("{i:0>200}"))).await?);
    }
    for (i, f) in futs.into_iter().enumerate() {
        let md = tokio::time::timeout(Duration::from_secs(10), f).await??;
        assert_eq!(md.offset, i as i64);
    }
    let s = state.lock().map_err(|_| "lock")?;
    assert!(s.attempts.len() >= 5, "{:?}", s.attempts);
    // All on one connection, sequences consecutive.
    let conns: std::collections::BTreeSet<usize> = s.attempts.iter().map(|a| a.conn).collect();
    assert_eq!(conns.len(), 1);
    let mut seq = 0;
    for a in &s.attempts {
        assert_eq!(a.base_sequence, seq);
        seq += a.records;
    }
    Ok(())
}

#[tokio::test]
async fn retriable_errors_are_retried_with_the_same_sequence() -> TestResult {
    let mut script = ok_script(1);
    script.fate = ProduceFate::Partitions(Box::new(|_, n| {
        (n < 2).then_some(codes::NOT_LEADER_OR_FOLLOWER)
    }));
    let (state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let p = Producer::connect(config(&fake.addr)).await?;
    let md = p.send(rec("t", "hello")).await?;
    assert_eq!(md.offset, 0);
    let s = state.lock().map_err(|_| "lock")?;
    assert_eq!(s.attempts.len(), 3);
    for a in &s.attempts {
        assert_eq!((a.producer_id, a.epoch, a.base_sequence), (1000, 0, 0));
    }
    // NOT_LEADER_OR_FOLLOWER made the producer ask for metadata again.
    assert!(
        s.requests[&(ApiKey::Metadata as i16)] >= 3,
        "{:?}",
        s.requests
    );
    Ok(())
}

#[tokio::test]
async fn out_of_order_answers_behind_a_failed_batch_are_retried_in_order() -> TestResult {
    // The first batch fails once (retriable); the broker then refuses the batches pipelined
    // behind it as OUT_OF_ORDER_SEQUENCE_NUMBER, as Kafka does. All must arrive, in order.
    let mut script = ok_script(1);
    let failed = Arc::new(StdMutex::new(false));
    let expected = Arc::new(StdMutex::new(0i32));
    script.fate = ProduceFate::Partitions(Box::new(move |a, _| {
        let mut f = failed.lock().expect("lock");
        let mut e = expected.lock().expect("lock");
        if !*f {
            *f = true;
            return Some(codes::NOT_LEADER_OR_FOLLOWER);
        }
        if a.base_sequence != *e {
            return Some(45);
        }
        *e += a.records;
        None
    }));
    let (state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.batch_size = 400;
    let p = Producer::connect(c).await?;
    let mut futs = Vec::new();
    for i in 0..40 {
        futs.push(p.enqueue(rec("t", &format!("{i:0>100}"))).await?);
    }
    for (i, f) in futs.into_iter().enumerate() {
        let md = tokio::time::timeout(Duration::from_secs(10), f).await??;
        assert_eq!(md.offset, i as i64, "record {i}");
    }
    let s = state.lock().map_err(|_| "lock")?;
    assert_eq!(s.init_pid_requests.len(), 1, "no epoch bump needed");
    Ok(())
}

#[tokio::test]
async fn non_retriable_errors_fail_the_records_and_bump_the_epoch() -> TestResult {
    let mut script = ok_script(1);
    script.fate = ProduceFate::Partitions(Box::new(|_, n| (n == 0).then_some(87)));
    let (state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let p = Producer::connect(config(&fake.addr)).await?;
    let e = p.send(rec("t", "bad")).await.err();
    assert!(
        matches!(&e, Some(ProducerError::Broker { code: 87, name, .. }) if name == "INVALID_RECORD"),
        "{e:?}"
    );
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some("produce to t-0 failed: INVALID_RECORD")
    );
    let md = p.send(rec("t", "good")).await?;
    assert_eq!(md.offset, 0);
    let s = state.lock().map_err(|_| "lock")?;
    assert_eq!(
        s.init_pid_requests,
        vec![(-1, -1), (1000, 0)],
        "KIP-360 bump"
    );
    let last = s.attempts.last().ok_or("no attempt")?;
    assert_eq!((last.epoch, last.base_sequence), (1, 0));
    Ok(())
}

#[tokio::test]
async fn an_epoch_bump_never_resends_a_batch_that_may_be_in_the_log() -> TestResult {
    // Request 0 carries A (p0) and B (p1) and is never answered, but the fake appends both, as
    // a broker whose answer was lost would. On the retry A gets OUT_OF_ORDER_SEQUENCE_NUMBER as
    // the partition's next batch (not retriable: the epoch is bumped) and B a retriable error.
    // B must not go again under the new epoch, where sequence 0 is new to the broker and it
    // would be appended twice: it fails as possibly persisted. A record sent after the bump
    // goes through under the new epoch.
    let mut script = ok_script(2);
    script.produce = Box::new(|n, _| {
        if n == 0 {
            RequestFate::Silence
        } else {
            RequestFate::Answer
        }
    });
    script.fate = ProduceFate::Partitions(Box::new(|a, n| match (n, a.partition) {
        (2 | 3, 0) => Some(45),
        (2 | 3, _) => Some(codes::NOT_LEADER_OR_FOLLOWER),
        _ => None,
    }));
    let (state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.request_timeout = Duration::from_millis(300);
    c.linger = Duration::from_millis(50);
    let p = Producer::connect(c).await?;
    let mut a = rec("t", "a");
    a.partition = Some(0);
    let mut b = rec("t", "b");
    b.partition = Some(1);
    let fa = p.enqueue(a).await?;
    let fb = p.enqueue(b).await?;
    let ea = tokio::time::timeout(Duration::from_secs(10), fa)
        .await?
        .err();
    assert!(
        matches!(&ea, Some(ProducerError::Broker { code: 45, .. })),
        "{ea:?}"
    );
    let eb = tokio::time::timeout(Duration::from_secs(10), fb)
        .await?
        .err();
    assert!(
        matches!(&eb, Some(ProducerError::PossiblyPersisted(m)) if m.contains("t-1") && m.contains("epoch 0")),
        "{eb:?}"
    );
    let mut c2 = rec("t", "c");
    c2.partition = Some(1);
    let md = p.send(c2).await?;
    // B's one copy is at offset 0 of p1; C follows it.
    assert_eq!((md.partition, md.offset), (1, 1));
    let s = state.lock().map_err(|_| "lock")?;
    let p1_new_epoch: Vec<_> = s
        .attempts
        .iter()
        .filter(|a| a.partition == 1 && a.epoch == 1)
        .collect();
    assert_eq!(
        p1_new_epoch.len(),
        1,
        "only C under the new epoch: {:?}",
        s.attempts
    );
    assert_eq!(p1_new_epoch[0].base_sequence, 0);
    Ok(())
}

#[tokio::test]
async fn delivery_timeout_fails_records_that_never_get_through() -> TestResult {
    let mut script = ok_script(1);
    script.fate = ProduceFate::Partitions(Box::new(|_, _| Some(codes::NOT_LEADER_OR_FOLLOWER)));
    let (_state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.request_timeout = Duration::from_millis(300);
    c.delivery_timeout = Duration::from_millis(600);
    let p = Producer::connect(c).await?;
    let t0 = Instant::now();
    let e = p.send(rec("t", "x")).await.err();
    assert!(
        matches!(&e, Some(ProducerError::Timeout(m)) if m.contains("delivery.timeout.ms") && m.contains("NOT_LEADER_OR_FOLLOWER")),
        "{e:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(550));
    assert!(t0.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test]
async fn unanswered_requests_time_out_and_go_again_on_a_new_connection() -> TestResult {
    let mut script = ok_script(1);
    script.produce = Box::new(|n, _| {
        if n == 0 {
            RequestFate::Silence
        } else {
            RequestFate::Answer
        }
    });
    let (state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.request_timeout = Duration::from_millis(300);
    let p = Producer::connect(c).await?;
    let md = p.send(rec("t", "x")).await?;
    // The fake wrote the unanswered attempt too (it does not deduplicate; a broker would).
    assert_eq!(md.offset, 1);
    let s = state.lock().map_err(|_| "lock")?;
    assert_eq!(s.attempts.len(), 2);
    assert_ne!(s.attempts[0].conn, s.attempts[1].conn);
    assert_eq!(s.attempts[0].base_sequence, s.attempts[1].base_sequence);
    Ok(())
}

#[tokio::test]
async fn acks_zero_completes_on_write_without_offsets() -> TestResult {
    let (state, make) = scripted(ok_script(1));
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.set("acks", "0")?;
    let p = Producer::connect(c).await?;
    assert!(!p.is_idempotent());
    let md = p.send(rec("t", "x").with_timestamp(1234)).await?;
    assert_eq!((md.offset, md.timestamp), (-1, 1234));
    // Delivered once written: the fake may not have read it yet.
    let t0 = Instant::now();
    while produce_count(&state) == 0 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = state.lock().map_err(|_| "lock")?;
    assert_eq!(s.attempts[0].acks, 0);
    assert_eq!(
        (s.attempts[0].producer_id, s.attempts[0].base_sequence),
        (-1, -1)
    );
    assert!(s.init_pid_requests.is_empty());
    Ok(())
}

#[tokio::test]
async fn full_buffer_memory_blocks_send_up_to_max_block() -> TestResult {
    let mut script = ok_script(1);
    script.produce = Box::new(|_, _| RequestFate::Silence);
    let (_state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.buffer_memory = 3000;
    c.max_block = Duration::from_millis(300);
    let p = Producer::connect(c).await?;
    let value = "v".repeat(900);
    let mut accepted = 0;
    let t0 = Instant::now();
    let err = loop {
        match p.enqueue(rec("t", &value)).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 10, "buffer.memory not enforced");
    };
    assert_eq!(accepted, 3);
    assert!(
        matches!(&err, ProducerError::Timeout(m) if m.contains("buffer.memory")),
        "{err:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(290));
    let e = p.enqueue(rec("t", &"v".repeat(5000))).await.err();
    assert!(
        matches!(
            e,
            Some(ProducerError::RecordTooLarge {
                setting: "buffer.memory",
                ..
            })
        ),
        "{e:?}"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_topics_time_out_after_max_block() -> TestResult {
    let mut script = ok_script(1);
    script.topic_error = codes::UNKNOWN_TOPIC_OR_PARTITION;
    let (_state, make) = scripted(script);
    let fake = Fake::start(make).await;
    let mut c = config(&fake.addr);
    c.max_block = Duration::from_millis(300);
    let p = Producer::connect(c).await?;
    let e = p.send(rec("nope", "x")).await.err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("topic 'nope' not present in metadata after 300 ms: UNKNOWN_TOPIC_OR_PARTITION")
    );
    Ok(())
}

#[tokio::test]
async fn bad_partitions_and_closed_producers_are_refused() -> TestResult {
    let (_state, make) = scripted(ok_script(2));
    let fake = Fake::start(make).await;
    let p = Producer::connect(config(&fake.addr)).await?;
    let e = p
        .send(rec("t", "x").with_partition(2))
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("partition 2 of topic 't' does not exist (it has 2 partitions)")
    );
    let md = p.send(rec("t", "x").with_partition(1)).await?;
    assert_eq!(md.partition, 1);
    p.close().await;
    assert!(matches!(
        p.send(rec("t", "x")).await,
        Err(ProducerError::Closed)
    ));
    Ok(())
}

#[tokio::test]
async fn typed_producers_serialize_keys_and_values() -> TestResult {
    #[derive(serde::Serialize)]
    struct Event {
        id: u32,
    }
    let (_state, make) = scripted(ok_script(4));
    let fake = Fake::start(make).await;
    let p: Producer<String, Event> =
        Producer::with_serializers(config(&fake.addr), StringSerializer, JsonSerializer).await?;
    let md = p
        .send(ProducerRecord::new("t", Event { id: 7 }).with_key("key-001".to_string()))
        .await?;
    assert_eq!(md.partition, partition_for_key(b"key-001", 4));
    Ok(())
}

#[tokio::test]
async fn connect_fails_fast_without_a_broker() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ok();
        l.and_then(|l| l.local_addr().ok())
            .map_or_else(|| "127.0.0.1:1".to_string(), |a| a.to_string())
    };
    let e = Producer::connect(config(&addr))
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e,
        Some(format!("cannot connect to {addr}: connection refused"))
    );
}

// ------------------------------------------------------------------------- real broker

async fn start_broker(
    dir: &std::path::Path,
    settings: &[(&str, &str)],
) -> Result<vltava_broker::Broker, Box<dyn std::error::Error>> {
    let mut c = vltava_broker::BrokerConfig::default();
    c.set("listen", "127.0.0.1:0")?;
    c.set("data.dir", &dir.display().to_string())?;
    for (k, v) in settings {
        c.set(k, v)?;
    }
    Ok(vltava_broker::Broker::start(c).await?)
}

/// A record read back: offset, key, value, headers.
type ReadRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn parse_headers(mut b: &[u8]) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let count = read_varint(&mut b).unwrap_or(0);
    let take = |b: &mut &[u8]| -> Option<Vec<u8>> {
        let len = read_varint(b)?;
        let len = usize::try_from(len).ok()?;
        let (x, rest) = b.split_at(len);
        *b = rest;
        Some(x.to_vec())
    };
    for _ in 0..count {
        let k = take(&mut b).unwrap_or_default();
        let v = take(&mut b);
        out.push((String::from_utf8_lossy(&k).into_owned(), v));
    }
    out
}

/// Every record of `topic`/`partition` from offset 0, with a raw Fetch v11 (the client has no
/// consumer yet), inflating compressed batches.
async fn read_partition(
    addr: &str,
    topic: &str,
    partition: i32,
) -> Result<Vec<ReadRecord>, Box<dyn std::error::Error>> {
    let mut conn = Connection::connect(addr, &ConnectionConfig::default()).await?;
    let mut out: Vec<ReadRecord> = Vec::new();
    let mut offset = 0i64;
    loop {
        let mut fp = fetch_request::FetchPartition::default();
        fp.partition = partition;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = 4 << 20;
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
        ft.partitions.push(fp);
        let mut req = FetchRequest::default();
        req.replica_id = (-1).into();
        req.max_bytes = 8 << 20;
        req.session_epoch = -1;
        req.topics.push(ft);
        let resp: FetchResponse = conn.call_at(&req, 11).await?;
        let pd = &resp.responses[0].partitions[0];
        assert_eq!(pd.error_code, 0);
        let records = pd.records.clone().unwrap_or_default();
        if records.is_empty() {
            return Ok(out);
        }
        let mut rest: &[u8] = &records;
        while let Some(Ok(total)) = peek_total_len(rest) {
            if total > rest.len() {
                break;
            }
            let (batch, tail) = rest.split_at(total);
            rest = tail;
            let h = vltava_protocol::batch::verify(batch)?;
            let codec = h.compression().ok_or("codec")?;
            let payload =
                vltava_protocol::compression::decompress(codec, &batch[HEADER_LEN..], 64 << 20)?;
            for r in vltava_protocol::records::parse_records(&payload, h.record_count)? {
                let off = h.base_offset + i64::from(r.offset_delta);
                if off >= offset {
                    out.push((
                        off,
                        r.key.map(<[u8]>::to_vec),
                        r.value.map(<[u8]>::to_vec),
                        parse_headers(r.headers),
                    ));
                }
            }
            offset = h.last_offset() + 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_broker_keys_headers_codecs_and_partitions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), &[("num.partitions", "3")]).await?;
    let addr = broker.local_addr.to_string();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("t-{codec}");
        let mut c = config(&addr);
        c.set("compression.type", codec)?;
        c.linger = Duration::from_millis(5);
        let p = Producer::connect(c).await?;
        let mut futs = Vec::new();
        for i in 0..300 {
            let mut r = ProducerRecord::new(topic.as_str(), Bytes::from(format!("value-{i}")))
                .with_key(Bytes::from(format!("key-{:03}", i % 37)))
                .with_header("seq", i.to_string())
                .with_timestamp(1_700_000_000_000 + i);
            if i % 10 == 0 {
                r.headers.push(Header {
                    key: "null".into(),
                    value: None,
                });
            }
            futs.push((i, p.enqueue(r).await?));
        }
        let mut acked = HashMap::new();
        for (i, f) in futs {
            let md = f.await?;
            assert_eq!(
                md.partition,
                partition_for_key(format!("key-{:03}", i % 37).as_bytes(), 3)
            );
            assert_eq!(md.timestamp, 1_700_000_000_000 + i);
            acked.insert((md.partition, md.offset), i);
        }
        p.close().await;
        let mut seen = 0;
        for part in 0..3 {
            let recs = read_partition(&addr, &topic, part).await?;
            for (off, key, value, headers) in recs {
                let i = acked[&(part, off)];
                assert_eq!(key, Some(format!("key-{:03}", i % 37).into_bytes()));
                assert_eq!(value, Some(format!("value-{i}").into_bytes()));
                assert_eq!(
                    headers[0],
                    ("seq".to_string(), Some(i.to_string().into_bytes()))
                );
                if i % 10 == 0 {
                    assert_eq!(headers[1], ("null".to_string(), None));
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 300, "{codec}");
    }
    broker.shutdown().await?;
    Ok(())
}

/// A TCP proxy in front of the broker that can cut connections: `cut` asks it to drop the
/// next connection that has a response to pass on, before passing it on (the request already
/// reached the broker, so the records are written but never acknowledged).
struct CuttingProxy {
    addr: String,
    upstream: Arc<StdMutex<String>>,
    cuts: Arc<AtomicUsize>,
    cut_done: Arc<AtomicUsize>,
}

impl CuttingProxy {
    async fn start() -> Result<CuttingProxy, Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let upstream = Arc::new(StdMutex::new(String::new()));
        let cuts = Arc::new(AtomicUsize::new(0));
        let cut_done = Arc::new(AtomicUsize::new(0));
        let (up, c, d) = (
            Arc::clone(&upstream),
            Arc::clone(&cuts),
            Arc::clone(&cut_done),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = up.lock().map(|s| s.clone()).unwrap_or_default();
                let (c, d) = (Arc::clone(&c), Arc::clone(&d));
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let cut = c
                            .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |v| {
                                v.checked_sub(1)
                            })
                            .is_ok();
                        if cut {
                            d.fetch_add(1, AtomicOrdering::SeqCst);
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        Ok(CuttingProxy {
            addr,
            upstream,
            cuts,
            cut_done,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_after_cut_connections_neither_duplicate_nor_reorder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let proxy = CuttingProxy::start().await?;
    let broker = start_broker(
        dir.path(),
        &[
            ("num.partitions", "1"),
            ("advertised.listener", &proxy.addr),
        ],
    )
    .await?;
    *proxy.upstream.lock().map_err(|_| "lock")? = broker.local_addr.to_string();
    let mut c = config(&proxy.addr);
    c.batch_size = 2000;
    c.linger = Duration::from_millis(1);
    let p = Producer::connect(c).await?;
    assert!(p.is_idempotent());
    let n = 3000usize;
    let mut futs = Vec::with_capacity(n);
    for i in 0..n {
        if i % 500 == 250 {
            proxy.cuts.fetch_add(1, AtomicOrdering::SeqCst);
        }
        futs.push(
            p.enqueue(rec("idem", &format!("v{i:05}-{}", "x".repeat(60))))
                .await?,
        );
    }
    let mut offsets = Vec::with_capacity(n);
    for f in futs {
        offsets.push(
            tokio::time::timeout(Duration::from_secs(60), f)
                .await??
                .offset,
        );
    }
    p.close().await;
    assert!(
        proxy.cut_done.load(AtomicOrdering::SeqCst) >= 3,
        "the proxy cut too few connections"
    );
    assert_eq!(
        offsets,
        (0..n as i64).collect::<Vec<_>>(),
        "acknowledged offsets"
    );
    let recs = read_partition(&broker.local_addr.to_string(), "idem", 0).await?;
    assert_eq!(recs.len(), n, "records in the log (duplicates?)");
    for (i, (off, _, value, _)) in recs.iter().enumerate() {
        assert_eq!(*off, i as i64);
        let want = format!("v{i:05}-{}", "x".repeat(60)).into_bytes();
        assert_eq!(value.as_deref(), Some(&want[..]), "offset {off}");
    }
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_partitioning_spreads_keyless_records_batch_by_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), &[("num.partitions", "4")]).await?;
    let mut c = config(&broker.local_addr.to_string());
    c.batch_size = 1000;
    c.linger = Duration::from_millis(50);
    let p = Producer::connect(c).await?;
    let mut futs = Vec::new();
    for i in 0..400 {
        futs.push(p.enqueue(rec("sticky", &format!("{i:0>100}"))).await?);
    }
    let mut parts = Vec::new();
    for f in futs {
        parts.push(f.await?.partition);
    }
    // Runs of one partition, each about one batch (8 records) long; several partitions used.
    let runs = parts.chunk_by(|a, b| a == b).count();
    let used: std::collections::BTreeSet<i32> = parts.iter().copied().collect();
    assert!(used.len() >= 3, "{used:?}");
    assert!((40..=60).contains(&runs), "{runs} runs");
    p.close().await;
    broker.shutdown().await?;
    Ok(())
}

#[test]
fn client_config_default_is_reused() {
    let c = ClientConfig::new("127.0.0.1:9092").map(ProducerConfig::from_client);
    assert!(c.is_ok_and(|c| c.client.bootstrap == vec!["127.0.0.1:9092".to_string()]));
}

/// Handles and futures can move between tasks (compile-time check).
#[allow(dead_code)]
fn futures_are_send(p: &Producer, typed: &Producer<String, serde_json::Value>) {
    fn require_send<F: std::future::Future + Send>(_: F) {}
    fn require_send_sync<T: Send + Sync>(_: &T) {}
    require_send_sync(p);
    require_send(p.send(rec("t", "x")));
    require_send(p.enqueue(rec("t", "x")));
    require_send(p.flush());
    require_send(p.close());
    require_send(typed.send(ProducerRecord::new("t", serde_json::Value::Null)));
}

/// KIP-951: a NOT_LEADER_OR_FOLLOWER answer naming the new leader (and its address) sends the
/// retry there at once, even while Metadata still names the old leader (its older epoch does
/// not move the leader back), and the idempotent batch keeps its producer id, epoch and
/// sequence, so the new leader can deduplicate it.
#[tokio::test]
async fn a_leader_named_in_the_produce_answer_takes_the_retry() -> TestResult {
    use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint};
    let (new_state, make_new) = scripted(ok_script(1));
    let new_leader = Fake::start(make_new).await;
    let new_port: i32 = new_leader
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or("port")?;
    let old_attempts = Arc::new(StdMutex::new(Vec::<Attempt>::new()));
    let seen = Arc::clone(&old_attempts);
    let old_leader = Fake::start(move |port: u16| -> Arc<Handler> {
        Arc::new(move |conn, _api, _version, req| match req {
            RequestKind::ApiVersions(_) => Act::Respond(ResponseKind::ApiVersions(api_versions())),
            RequestKind::Metadata(m) => {
                // Stale: node 0 (this broker) at epoch 1, whatever happened.
                let mut r = MetadataResponse::default();
                let mut b = MetadataResponseBroker::default();
                b.node_id = 0.into();
                b.host = StrBytes::from_static_str("127.0.0.1");
                b.port = i32::from(port);
                r.brokers.push(b);
                for t in m.topics.unwrap_or_default() {
                    let mut rt = MetadataResponseTopic::default();
                    rt.name = t.name;
                    let mut p = MetadataResponsePartition::default();
                    p.leader_id = 0.into();
                    p.leader_epoch = 1;
                    rt.partitions.push(p);
                    r.topics.push(rt);
                }
                Act::Respond(ResponseKind::Metadata(r))
            }
            RequestKind::InitProducerId(_) => {
                let mut resp = InitProducerIdResponse::default();
                resp.producer_id = 1000.into();
                Act::Respond(ResponseKind::InitProducerId(resp))
            }
            RequestKind::Produce(p) => {
                let mut resp = ProduceResponse::default();
                for t in &p.topic_data {
                    let mut tr = TopicProduceResponse::default();
                    tr.name = t.name.clone();
                    for pd in &t.partition_data {
                        let records = pd.records.clone().unwrap_or_default();
                        if let Ok(h) = parse_header(&records)
                            && let Ok(mut a) = seen.lock()
                        {
                            a.push(Attempt {
                                conn,
                                acks: p.acks,
                                partition: pd.index,
                                producer_id: h.producer_id,
                                epoch: h.producer_epoch,
                                base_sequence: h.base_sequence,
                                records: h.record_count,
                                compression: h.compression(),
                            });
                        }
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = pd.index;
                        pr.error_code = codes::NOT_LEADER_OR_FOLLOWER;
                        pr.base_offset = -1;
                        let mut leader = LeaderIdAndEpoch::default();
                        leader.leader_id = 1.into();
                        leader.leader_epoch = 2;
                        pr.current_leader = leader;
                        tr.partition_responses.push(pr);
                    }
                    resp.responses.push(tr);
                }
                let mut n = NodeEndpoint::default();
                n.node_id = 1.into();
                n.host = StrBytes::from_static_str("127.0.0.1");
                n.port = new_port;
                resp.node_endpoints.push(n);
                Act::Respond(ResponseKind::Produce(resp))
            }
            _ => Act::Close,
        })
    })
    .await;
    let mut c = config(&old_leader.addr);
    // A retry waiting for the backoff would show as a slow send.
    c.retry_backoff = Duration::from_secs(5);
    c.retry_backoff_max = Duration::from_secs(5);
    let p = Producer::connect(c).await?;
    let started = Instant::now();
    let md = p.send(rec("t", "moved")).await?;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(md.offset, 0);
    let old = old_attempts.lock().map_err(|_| "lock")?.clone();
    let new = new_state.lock().map_err(|_| "lock")?.attempts.clone();
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(new.len(), 1, "{new:?}");
    for a in old.iter().chain(&new) {
        assert_eq!((a.producer_id, a.epoch, a.base_sequence), (1000, 0, 0));
    }
    // A second record goes to the new leader directly: the stale Metadata answers since
    // (epoch 1) did not move the leader back.
    p.send(rec("t", "again")).await?;
    assert_eq!(old_attempts.lock().map_err(|_| "lock")?.len(), 1);
    assert_eq!(new_state.lock().map_err(|_| "lock")?.attempts.len(), 2);
    p.close().await;
    Ok(())
}

/// Two fake brokers for one leader move. Node 1 leads partition 1 throughout; node 0 leads
/// partition 0 until its first Produce arrives, which it never answers (a leader cut off after
/// it appended), and from then on node 1 leads it (Metadata from either says so). Node 1
/// refuses the first batch of partition 1 with NOT_LEADER_OR_FOLLOWER, which makes the
/// producer refresh its metadata, and appends everything else.
struct MovingLeader {
    ports: [AtomicUsize; 2],
    moved: std::sync::atomic::AtomicBool,
    /// (node, attempt) of every Produce partition, in arrival order.
    attempts: StdMutex<Vec<(i32, Attempt)>>,
}

impl MovingLeader {
    fn handler(self: &Arc<Self>, node: i32) -> impl FnOnce(u16) -> Arc<Handler> + use<> {
        let fake = Arc::clone(self);
        move |port: u16| -> Arc<Handler> {
            fake.ports[node as usize].store(usize::from(port), AtomicOrdering::SeqCst);
            Arc::new(move |conn, _api, _version, req| fake.answer(node, conn, req))
        }
    }

    fn answer(&self, node: i32, conn: usize, req: RequestKind) -> Act {
        let moved = self.moved.load(AtomicOrdering::SeqCst);
        let leader = i32::from(moved);
        match req {
            RequestKind::ApiVersions(_) => Act::Respond(ResponseKind::ApiVersions(api_versions())),
            RequestKind::Metadata(m) => {
                let mut r = MetadataResponse::default();
                for id in 0..2 {
                    let mut b = MetadataResponseBroker::default();
                    b.node_id = id.into();
                    b.host = StrBytes::from_static_str("127.0.0.1");
                    b.port = self.ports[id as usize].load(AtomicOrdering::SeqCst) as i32;
                    r.brokers.push(b);
                }
                r.controller_id = 0.into();
                for t in m.topics.unwrap_or_default() {
                    let mut rt = MetadataResponseTopic::default();
                    rt.name = t.name;
                    for i in 0..2 {
                        let mut p = MetadataResponsePartition::default();
                        p.partition_index = i;
                        let leader = if i == 0 { leader } else { 1 };
                        p.leader_id = leader.into();
                        p.leader_epoch = 1 + leader;
                        p.replica_nodes = vec![0.into(), 1.into()];
                        p.isr_nodes = vec![0.into(), 1.into()];
                        rt.partitions.push(p);
                    }
                    r.topics.push(rt);
                }
                Act::Respond(ResponseKind::Metadata(r))
            }
            RequestKind::InitProducerId(_) => {
                let mut resp = InitProducerIdResponse::default();
                resp.producer_id = 1000.into();
                Act::Respond(ResponseKind::InitProducerId(resp))
            }
            RequestKind::Produce(p) => {
                let mut resp = ProduceResponse::default();
                let mut attempts = self.attempts.lock().expect("attempts");
                for t in &p.topic_data {
                    let mut tr = TopicProduceResponse::default();
                    tr.name = t.name.clone();
                    for pd in &t.partition_data {
                        let records = pd.records.clone().unwrap_or_default();
                        let h = parse_header(&records).expect("fake: batch header");
                        let on_node_1 = |a: &&(i32, Attempt)| a.0 == 1 && a.1.partition == pd.index;
                        let seen = attempts.iter().filter(on_node_1).count();
                        // Partition 1's first batch is refused; everything else node 1 gets is
                        // appended, one record per batch.
                        let appended = seen - usize::from(pd.index == 1 && seen > 0);
                        let refuse = node == 0 || (pd.index == 1 && seen == 0);
                        attempts.push((
                            node,
                            Attempt {
                                conn,
                                acks: p.acks,
                                partition: pd.index,
                                producer_id: h.producer_id,
                                epoch: h.producer_epoch,
                                base_sequence: h.base_sequence,
                                records: h.record_count,
                                compression: h.compression(),
                            },
                        ));
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = pd.index;
                        if refuse {
                            pr.error_code = codes::NOT_LEADER_OR_FOLLOWER;
                            pr.base_offset = -1;
                        } else {
                            pr.base_offset = appended as i64;
                        }
                        pr.log_append_time_ms = -1;
                        tr.partition_responses.push(pr);
                    }
                    resp.responses.push(tr);
                }
                if node == 0 && !moved {
                    self.moved.store(true, AtomicOrdering::SeqCst);
                    return Act::Silence;
                }
                Act::Respond(ResponseKind::Produce(resp))
            }
            _ => Act::Close,
        }
    }
}

/// While the old leader still holds a partition's unanswered batch, a new batch of that
/// partition must not go to the new leader ahead of it (a way to the "expected sequence 172,
/// got 97" the chaos workload once met). The old leader may have appended (and replicated) the
/// unanswered batch; new batches appended after it on the new leader push it further behind the
/// log end, past the five batches a broker remembers per producer, and its retry is then
/// refused as out of order instead of recognised as a duplicate.
#[tokio::test]
async fn a_new_batch_never_overtakes_one_the_old_leader_holds() -> TestResult {
    let fake = Arc::new(MovingLeader {
        ports: [AtomicUsize::new(0), AtomicUsize::new(0)],
        moved: Default::default(),
        attempts: StdMutex::new(Vec::new()),
    });
    let old_leader = Fake::start(fake.handler(0)).await;
    let _new_leader = Fake::start(fake.handler(1)).await;
    let mut c = config(&old_leader.addr);
    c.request_timeout = Duration::from_millis(800);
    let p = Producer::connect(c).await?;
    let mut a = rec("t", "a");
    a.partition = Some(0);
    let fa = p.enqueue(a).await?;
    let arrived = || fake.attempts.lock().map(|a| !a.is_empty()).unwrap_or(false);
    let waited = Instant::now();
    while !arrived() && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // B (p1) is refused once by node 1, which makes the producer refresh its metadata and
    // learn that node 1 now leads p0 too, and then goes through, while A's request to node 0
    // is still unanswered.
    let mut b = rec("t", "b");
    b.partition = Some(1);
    assert_eq!(p.send(b).await?.offset, 0);
    let mut c2 = rec("t", "c");
    c2.partition = Some(0);
    let fc = p.enqueue(c2).await?;
    let (ma, mc) =
        tokio::time::timeout(Duration::from_secs(10), async { (fa.await, fc.await) }).await?;
    assert_eq!((ma?.offset, mc?.offset), (0, 1));
    let attempts = fake.attempts.lock().map_err(|_| "lock")?.clone();
    let on_new: Vec<i32> = attempts
        .iter()
        .filter(|(node, a)| *node == 1 && a.partition == 0)
        .map(|(_, a)| a.base_sequence)
        .collect();
    assert_eq!(on_new, [0, 1], "A's retry first, then C: {attempts:?}");
    p.close().await;
    Ok(())
}
