//! In-process protocol tests: a broker on port 0 driven with raw Kafka requests encoded by the
//! `kafka-protocol` crate. Real-client interop lives in tests/e2e.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vltava_broker::{Broker, BrokerConfig};

async fn start(dir: &std::path::Path, sets: &[(&str, &str)]) -> Result<Broker> {
    let mut c = BrokerConfig::default();
    c.set("listen", "127.0.0.1:0")?;
    c.set("data.dir", &dir.display().to_string())?;
    for (k, v) in sets {
        c.set(k, v)?;
    }
    Ok(Broker::start(c).await?)
}

struct Conn {
    s: TcpStream,
    next: i32,
}

impl Conn {
    async fn connect(b: &Broker) -> Result<Conn> {
        Ok(Conn {
            s: TcpStream::connect(b.local_addr).await?,
            next: 1,
        })
    }

    async fn send(&mut self, api: ApiKey, version: i16, req: &RequestKind) -> Result<i32> {
        let cid = self.next;
        self.next += 1;
        let mut h = RequestHeader::default();
        h.request_api_key = api as i16;
        h.request_api_version = version;
        h.correlation_id = cid;
        h.client_id = Some(StrBytes::from_static_str("test"));
        let mut body = BytesMut::new();
        h.encode(&mut body, api.request_header_version(version))?;
        req.encode(&mut body, version)?;
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.s.write_all(&frame).await?;
        Ok(cid)
    }

    async fn recv_raw(&mut self) -> Result<Bytes> {
        let len = tokio::time::timeout(Duration::from_secs(10), self.s.read_i32()).await??;
        let mut buf = vec![0u8; len as usize];
        self.s.read_exact(&mut buf).await?;
        Ok(Bytes::from(buf))
    }

    async fn recv(&mut self, api: ApiKey, version: i16, cid: i32) -> Result<ResponseKind> {
        let mut buf = self.recv_raw().await?;
        let hv = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let h = ResponseHeader::decode(&mut buf, hv)?;
        if h.correlation_id != cid {
            bail!("correlation id {} != {}", h.correlation_id, cid);
        }
        let r = ResponseKind::decode(api, &mut buf, version)?;
        if buf.has_remaining() {
            bail!(
                "{} trailing bytes in {api:?} v{version} response",
                buf.remaining()
            );
        }
        Ok(r)
    }

    async fn call(&mut self, api: ApiKey, version: i16, req: RequestKind) -> Result<ResponseKind> {
        let cid = self.send(api, version, &req).await?;
        self.recv(api, version, cid).await
    }
}

fn batch(values: &[&[u8]], producer: Option<(i64, i32)>, compression: Compression) -> Bytes {
    let recs: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: producer.map_or(-1, |p| p.0),
            producer_epoch: if producer.is_some() { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: producer.map_or(0, |p| p.1) + i as i32,
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn produce_req(topic: &str, partition: i32, records: Bytes, acks: i16) -> RequestKind {
    let mut pd = produce_request::PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(records);
    let mut td = produce_request::TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.to_string()));
    td.partition_data = vec![pd];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 5000;
    r.topic_data = vec![td];
    RequestKind::Produce(r)
}

fn produce_partition(r: ResponseKind) -> Result<produce_response::PartitionProduceResponse> {
    let ResponseKind::Produce(r) = r else {
        bail!("not a produce response")
    };
    Ok(r.responses[0].partition_responses[0].clone())
}

fn fetch_req(topic: &str, offset: i64, max_wait_ms: i32, min_bytes: i32) -> RequestKind {
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
    ft.partitions = vec![fp];
    let mut r = FetchRequest::default();
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = min_bytes;
    r.max_bytes = 50 << 20;
    r.topics = vec![ft];
    RequestKind::Fetch(r)
}

async fn create_topic(c: &mut Conn, name: &str) -> Result<()> {
    let mut m = MetadataRequest::default();
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
    m.topics = Some(vec![t]);
    m.allow_auto_topic_creation = true;
    let ResponseKind::Metadata(r) = c
        .call(ApiKey::Metadata, 12, RequestKind::Metadata(m))
        .await?
    else {
        bail!("not metadata")
    };
    if r.topics[0].error_code != 0 {
        bail!("metadata error {}", r.topics[0].error_code);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_every_version_and_kip511() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path(), &[]).await?;
    let mut c = Conn::connect(&b).await?;
    for v in 0..=4 {
        let r = c
            .call(
                ApiKey::ApiVersions,
                v,
                RequestKind::ApiVersions(ApiVersionsRequest::default()),
            )
            .await?;
        let ResponseKind::ApiVersions(r) = r else {
            bail!("wrong type")
        };
        assert_eq!(r.error_code, 0);
        assert!(
            r.api_keys
                .iter()
                .any(|k| k.api_key == 0 && k.max_version == 11)
        );
    }
    // v5 is unknown to us: the answer is UNSUPPORTED_VERSION in the v0 layout.
    let cid = c
        .send(
            ApiKey::ApiVersions,
            4,
            &RequestKind::ApiVersions(ApiVersionsRequest::default()),
        )
        .await?;
    let _ = c.recv(ApiKey::ApiVersions, 4, cid).await?;
    let mut raw = BytesMut::new();
    raw.put_i16(18);
    raw.put_i16(9);
    raw.put_i32(77);
    raw.put_i16(-1);
    raw.put_u8(0);
    let mut frame = BytesMut::new();
    frame.put_i32(raw.len() as i32);
    frame.extend_from_slice(&raw);
    c.s.write_all(&frame).await?;
    let mut resp = c.recv_raw().await?;
    assert_eq!(resp.get_i32(), 77);
    let r = ApiVersionsResponse::decode(&mut resp, 0)?;
    assert_eq!(r.error_code, 35);
    assert!(!r.api_keys.is_empty());
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_fetch_roundtrip_every_codec() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path(), &[]).await?;
    let mut c = Conn::connect(&b).await?;
    create_topic(&mut c, "t1").await?;
    let mut expected = Vec::new();
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = batch(&[b"alpha", b"beta", b"gamma"], None, codec);
        let p = produce_partition(
            c.call(ApiKey::Produce, 9, produce_req("t1", 0, bytes.clone(), 1))
                .await?,
        )?;
        assert_eq!(p.error_code, 0);
        assert_eq!(p.base_offset, expected.len() as i64 * 3);
        expected.push(bytes);
    }
    let ResponseKind::Fetch(f) = c.call(ApiKey::Fetch, 11, fetch_req("t1", 0, 0, 0)).await? else {
        bail!("not fetch")
    };
    let pd = &f.responses[0].partitions[0];
    assert_eq!(pd.error_code, 0);
    assert_eq!(pd.high_watermark, 15);
    let mut records = pd.records.clone().context("records")?;
    // Stored byte-identical except baseOffset (bytes 0..8) and leader epoch (12..16).
    for (i, sent) in expected.iter().enumerate() {
        let got = records.split_to(sent.len());
        assert_eq!(&got[8..12], &sent[8..12]);
        assert_eq!(&got[16..], &sent[16..], "batch {i} bytes differ");
        assert_eq!(i64::from_be_bytes(got[0..8].try_into()?), i as i64 * 3);
    }
    assert!(records.is_empty());
    // Decoding what we fetched gives back the values.
    let mut all = pd.records.clone().context("records")?;
    let sets = RecordBatchDecoder::decode_all(&mut all)?;
    let values: Vec<_> = sets
        .iter()
        .flat_map(|s| s.records.iter().map(|r| r.value.clone()))
        .collect();
    assert_eq!(values.len(), 15);
    // Out of range.
    let ResponseKind::Fetch(f) = c.call(ApiKey::Fetch, 11, fetch_req("t1", 99, 0, 0)).await? else {
        bail!("not fetch")
    };
    assert_eq!(f.responses[0].partitions[0].error_code, 1);
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_woken_by_append() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path(), &[]).await?;
    let mut c = Conn::connect(&b).await?;
    let mut p = Conn::connect(&b).await?;
    create_topic(&mut c, "lp").await?;
    let started = std::time::Instant::now();
    let cid = c
        .send(ApiKey::Fetch, 11, &fetch_req("lp", 0, 20_000, 1))
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = produce_partition(
        p.call(
            ApiKey::Produce,
            9,
            produce_req("lp", 0, batch(&[b"x"], None, Compression::None), 1),
        )
        .await?,
    )?;
    assert_eq!(r.error_code, 0);
    let ResponseKind::Fetch(f) = c.recv(ApiKey::Fetch, 11, cid).await? else {
        bail!("not fetch")
    };
    // Woken by the append, long before max.wait.ms: an ordering check, not a timing assertion.
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        !f.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default()
            .is_empty()
    );
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_answered_in_order_and_acks0_silent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path(), &[]).await?;
    let mut c = Conn::connect(&b).await?;
    create_topic(&mut c, "pipe").await?;
    // acks=0 produces no response; the next responses prove it was still appended (offset 0).
    c.send(
        ApiKey::Produce,
        9,
        &produce_req("pipe", 0, batch(&[b"a"], None, Compression::None), 0),
    )
    .await?;
    let mut cids = vec![];
    for i in 0..10 {
        let v = format!("v{i}");
        cids.push(
            c.send(
                ApiKey::Produce,
                9,
                &produce_req(
                    "pipe",
                    0,
                    batch(&[v.as_bytes()], None, Compression::None),
                    1,
                ),
            )
            .await?,
        );
    }
    for (i, cid) in cids.into_iter().enumerate() {
        let p = produce_partition(c.recv(ApiKey::Produce, 9, cid).await?)?;
        assert_eq!(p.base_offset, i as i64 + 1);
    }
    b.shutdown().await?;
    Ok(())
}

/// With flush.on.append the connection reads on while a Produce waits for its fsync (so the
/// requests share fsyncs), yet applies and answers them in order, and a record is readable
/// only once it is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_produces_pipeline_in_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path(), &[("flush.on.append", "true")]).await?;
    let mut c = Conn::connect(&b).await?;
    create_topic(&mut c, "durable").await?;
    let mut cids = vec![];
    for i in 0..30 {
        let v = format!("v{i}");
        let req = produce_req(
            "durable",
            0,
            batch(&[v.as_bytes(), b"x"], None, Compression::None),
            -1,
        );
        cids.push(c.send(ApiKey::Produce, 9, &req).await?);
    }
    let fetch = c
        .send(ApiKey::Fetch, 11, &fetch_req("durable", 0, 0, 0))
        .await?;
    for (i, cid) in cids.into_iter().enumerate() {
        let p = produce_partition(c.recv(ApiKey::Produce, 9, cid).await?)?;
        assert_eq!((p.error_code, p.base_offset), (0, 2 * i as i64));
    }
    // The Fetch was read after every Produce was written but may have run before their
    // fsyncs: it never sees past the high watermark, which only durable records pass.
    let ResponseKind::Fetch(f) = c.recv(ApiKey::Fetch, 11, fetch).await? else {
        bail!("not fetch")
    };
    let hw = f.responses[0].partitions[0].high_watermark;
    assert!((0..=60).contains(&hw) && hw % 2 == 0, "high watermark {hw}");
    let ResponseKind::Fetch(f) = c
        .call(ApiKey::Fetch, 11, fetch_req("durable", 0, 0, 0))
        .await?
    else {
        bail!("not fetch")
    };
    assert_eq!(f.responses[0].partitions[0].high_watermark, 60);
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_duplicates_and_gaps() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path(), &[]).await?;
    let mut c = Conn::connect(&b).await?;
    create_topic(&mut c, "idem").await?;
    let ResponseKind::InitProducerId(ip) = c
        .call(
            ApiKey::InitProducerId,
            4,
            RequestKind::InitProducerId({
                let mut r = InitProducerIdRequest::default();
                r.transactional_id = None;
                r.transaction_timeout_ms = 60000;
                r
            }),
        )
        .await?
    else {
        bail!("not init")
    };
    assert_eq!(ip.error_code, 0);
    let pid = ip.producer_id.0;
    let b0 = batch(&[b"a", b"b"], Some((pid, 0)), Compression::None);
    let r1 = produce_partition(
        c.call(ApiKey::Produce, 9, produce_req("idem", 0, b0.clone(), -1))
            .await?,
    )?;
    assert_eq!((r1.error_code, r1.base_offset), (0, 0));
    let r2 = produce_partition(
        c.call(ApiKey::Produce, 9, produce_req("idem", 0, b0, -1))
            .await?,
    )?;
    assert_eq!(
        (r2.error_code, r2.base_offset),
        (0, 0),
        "duplicate answered with original offset"
    );
    let gap = batch(&[b"c"], Some((pid, 5)), Compression::None);
    let r3 = produce_partition(
        c.call(ApiKey::Produce, 9, produce_req("idem", 0, gap, -1))
            .await?,
    )?;
    assert_eq!(r3.error_code, 45);
    let next = batch(&[b"c"], Some((pid, 2)), Compression::None);
    let r4 = produce_partition(
        c.call(ApiKey::Produce, 9, produce_req("idem", 0, next, -1))
            .await?,
    )?;
    assert_eq!((r4.error_code, r4.base_offset), (0, 2));
    b.shutdown().await?;
    // Producer state is rebuilt from the log: the duplicate is still recognised after restart.
    let b = start(dir.path(), &[]).await?;
    let mut c = Conn::connect(&b).await?;
    let again = batch(&[b"c"], Some((pid, 2)), Compression::None);
    let r5 = produce_partition(
        c.call(ApiKey::Produce, 9, produce_req("idem", 0, again, -1))
            .await?,
    )?;
    assert_eq!((r5.error_code, r5.base_offset), (0, 2));
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_connection_broker_survives() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path(), &[]).await?;
    // Declared length far above socket.request.max.bytes: closed without allocating.
    let mut s = TcpStream::connect(b.local_addr).await?;
    s.write_all(&i32::MAX.to_be_bytes()).await?;
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    assert_eq!(n, 0, "connection closed");
    // A metadata request claiming 2^31-1 topics in a tiny frame.
    let mut s = TcpStream::connect(b.local_addr).await?;
    let mut body = BytesMut::new();
    body.put_i16(3);
    body.put_i16(1);
    body.put_i32(5);
    body.put_i16(-1);
    body.put_i32(i32::MAX);
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    s.write_all(&frame).await?;
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    assert_eq!(n, 0, "connection closed");
    // Unknown api key: answered, connection stays usable.
    let mut c = Conn::connect(&b).await?;
    let mut raw = BytesMut::new();
    raw.put_i16(999);
    raw.put_i16(0);
    raw.put_i32(3);
    raw.put_i16(-1);
    let mut frame = BytesMut::new();
    frame.put_i32(raw.len() as i32);
    frame.extend_from_slice(&raw);
    c.s.write_all(&frame).await?;
    let mut resp = c.recv_raw().await?;
    assert_eq!(resp.get_i32(), 3);
    assert_eq!(resp.get_i16(), 35);
    let r = c
        .call(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        )
        .await?;
    assert!(matches!(r, ResponseKind::ApiVersions(_)));
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_too_large_and_unknown_topic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(
        dir.path(),
        &[
            ("message.max.bytes", "1000"),
            ("auto.create.topics.enable", "false"),
        ],
    )
    .await?;
    let mut c = Conn::connect(&b).await?;
    let ResponseKind::CreateTopics(ct) = c
        .call(
            ApiKey::CreateTopics,
            7,
            RequestKind::CreateTopics({
                let mut t = create_topics_request::CreatableTopic::default();
                t.name = TopicName(StrBytes::from_static_str("big"));
                t.num_partitions = -1;
                t.replication_factor = -1;
                let mut r = CreateTopicsRequest::default();
                r.topics = vec![t];
                r.timeout_ms = 5000;
                r
            }),
        )
        .await?
    else {
        bail!("not create")
    };
    assert_eq!(ct.topics[0].error_code, 0);
    assert_eq!(ct.topics[0].num_partitions, 1);
    let big = vec![7u8; 5000];
    let p = produce_partition(
        c.call(
            ApiKey::Produce,
            9,
            produce_req("big", 0, batch(&[&big], None, Compression::None), 1),
        )
        .await?,
    )?;
    assert_eq!(p.error_code, 10);
    let p = produce_partition(
        c.call(
            ApiKey::Produce,
            9,
            produce_req("big", 0, batch(&[b"small"], None, Compression::None), 1),
        )
        .await?,
    )?;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    let p = produce_partition(
        c.call(
            ApiKey::Produce,
            9,
            produce_req("nope", 0, batch(&[b"x"], None, Compression::None), 1),
        )
        .await?,
    )?;
    assert_eq!(p.error_code, 3);
    let p = produce_partition(
        c.call(
            ApiKey::Produce,
            9,
            produce_req("bad name!", 0, batch(&[b"x"], None, Compression::None), 1),
        )
        .await?,
    )?;
    assert_eq!(p.error_code, 17);
    b.shutdown().await?;
    Ok(())
}

/// A free port on 127.0.0.1 (bound and released; good enough between two in-process brokers).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_at_a_broker_that_does_not_lead_name_the_leader_kip951() -> Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let ctrl = [free_port()?, free_port()?];
    let voters = format!("1@127.0.0.1:{},2@127.0.0.1:{}", ctrl[0], ctrl[1]);
    let node = |i: usize| {
        let voters = voters.clone();
        let dir = dirs[i].path().to_path_buf();
        let ctrl = ctrl[i];
        async move {
            let id = (i + 1).to_string();
            let listen = format!("127.0.0.1:{ctrl}");
            start(
                &dir,
                &[
                    ("node.id", id.as_str()),
                    ("controller.listen", listen.as_str()),
                    ("controller.quorum.voters", voters.as_str()),
                ],
            )
            .await
        }
    };
    // Together: each start waits for a quorum, which needs the other.
    let (b1, b2) = tokio::join!(node(0), node(1));
    let brokers = [b1?, b2?];
    let mut c = Conn::connect(&brokers[0]).await?;
    let mut ct = create_topics_request::CreatableTopic::default();
    ct.name = TopicName(StrBytes::from_static_str("led"));
    ct.num_partitions = 2;
    ct.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![ct];
    req.timeout_ms = 30_000;
    let ResponseKind::CreateTopics(r) = c
        .call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req))
        .await?
    else {
        bail!("not a CreateTopics response")
    };
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    // Each broker leads one partition (placement spreads leaders); find broker 1's other one.
    let mut md = MetadataRequest::default();
    let mut mt = metadata_request::MetadataRequestTopic::default();
    mt.name = Some(TopicName(StrBytes::from_static_str("led")));
    md.topics = Some(vec![mt]);
    let ResponseKind::Metadata(m) = c
        .call(ApiKey::Metadata, 12, RequestKind::Metadata(md))
        .await?
    else {
        bail!("not metadata")
    };
    let topic = &m.topics[0];
    let foreign = topic
        .partitions
        .iter()
        .find(|p| p.leader_id.0 == 2)
        .context("a partition led by broker 2")?;
    let (index, epoch) = (foreign.partition_index, foreign.leader_epoch);
    let b2_port = i32::from(brokers[1].local_addr.port());

    let produced = c
        .call(
            ApiKey::Produce,
            11,
            produce_req("led", index, batch(&[b"x"], None, Compression::None), 1),
        )
        .await?;
    let ResponseKind::Produce(p) = produced else {
        bail!("not a produce response")
    };
    let pr = &p.responses[0].partition_responses[0];
    assert_eq!(pr.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(
        (
            pr.current_leader.leader_id.0,
            pr.current_leader.leader_epoch
        ),
        (2, epoch)
    );
    assert_eq!(
        p.node_endpoints
            .iter()
            .map(|e| (e.node_id.0, e.port))
            .collect::<Vec<_>>(),
        vec![(2, b2_port)]
    );

    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = index;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic_id = topic.topic_id;
    ft.partitions = vec![fp];
    let mut fr = FetchRequest::default();
    fr.max_bytes = 1 << 20;
    fr.topics = vec![ft];
    let ResponseKind::Fetch(f) = c.call(ApiKey::Fetch, 16, RequestKind::Fetch(fr)).await? else {
        bail!("not a fetch response")
    };
    let fpr = &f.responses[0].partitions[0];
    assert_eq!(fpr.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(
        (
            fpr.current_leader.leader_id.0,
            fpr.current_leader.leader_epoch
        ),
        (2, epoch)
    );
    assert_eq!(
        f.node_endpoints
            .iter()
            .map(|e| (e.node_id.0, e.port))
            .collect::<Vec<_>>(),
        vec![(2, b2_port)]
    );
    drop(c);
    let [b1, b2] = brokers;
    // The second to stop has no quorum left for its controlled shutdown and waits it out
    // (10 s), as a Kafka broker would.
    let (r1, r2) = tokio::join!(b1.shutdown(), b2.shutdown());
    r1?;
    r2?;
    Ok(())
}
