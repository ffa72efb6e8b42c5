//! Every admin call against a real in-process broker on port 0 (dev-dependency only: the client
//! library itself never depends on the broker).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use vltava_broker::{Broker, BrokerConfig};
use vltava_client::kafka_protocol::messages::{
    ApiKey, GroupId, JoinGroupRequest, LeaveGroupRequest, ProduceRequest, SyncGroupRequest,
    TopicName, join_group_request, produce_request, sync_group_request,
};
use vltava_client::kafka_protocol::protocol::StrBytes;
use vltava_client::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use vltava_client::{
    Admin, ClientConfig, ClientError, Connection, ConsumerAssignment, NewTopic, OffsetSpec,
    PartitionOffset, TopicPartition,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn start(dir: &std::path::Path) -> Result<Broker, Box<dyn std::error::Error>> {
    let mut c = BrokerConfig::default();
    c.set("listen", "127.0.0.1:0")?;
    c.set("data.dir", &dir.display().to_string())?;
    c.set("group.initial.rebalance.delay.ms", "0")?;
    Ok(Broker::start(c).await?)
}

fn config(b: &Broker) -> Result<ClientConfig, ClientError> {
    let mut c = ClientConfig::new(&b.local_addr.to_string())?;
    c.connection.request_timeout = Duration::from_secs(10);
    Ok(c)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Produces `n` records with timestamps 1000, 1001, ... to `topic`/`partition` (raw Produce
/// v9: the client has no producer yet).
async fn produce(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    n: usize,
) -> Result<i64, Box<dyn std::error::Error>> {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: 0,
            timestamp: 1000 + i as i64,
            key: None,
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    let mut pd = produce_request::PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(buf.freeze());
    let mut td = produce_request::TopicProduceData::default();
    td.name = TopicName(s(topic));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![td];
    let r = conn.call_at(&req, 9).await?;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "produce error");
    Ok(p.base_offset)
}

fn tp(t: &str, p: i32) -> TopicPartition {
    TopicPartition::new(t, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_create_describe_partitions_delete() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let mut admin = Admin::connect(config(&b)?).await?;
    assert_eq!(admin.cluster().brokers().len(), 1);
    assert_eq!(
        admin.cluster().brokers()[0].port,
        i32::from(b.local_addr.port())
    );
    assert!(admin.cluster().cluster_id().is_some());

    let created = admin
        .create_topics(&[NewTopic::new("t1", 3), NewTopic::new("t2", 1)], false)
        .await?;
    assert!(created.iter().all(|(_, r)| r.is_ok()), "{created:?}");
    let again = admin
        .create_topics(&[NewTopic::new("t1", 3)], false)
        .await?;
    assert_eq!(
        again[0].1.as_ref().err().and_then(ClientError::code),
        Some(36)
    );
    let bad = admin
        .create_topics(&[NewTopic::new("bad/name", 1)], false)
        .await?;
    assert!(bad[0].1.is_err(), "{bad:?}");
    let validated = admin
        .create_topics(&[NewTopic::new("only-validated", 2)], true)
        .await?;
    assert!(validated[0].1.is_ok());

    let names: Vec<String> = admin
        .list_topics()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"t1".to_string()) && names.contains(&"t2".to_string()));
    assert!(!names.contains(&"only-validated".to_string()));

    let d = admin.describe_topics(&["t1".into(), "nope".into()]).await?;
    let t1 = d[0].1.as_ref().map_err(|e| e.to_string())?;
    assert_eq!(t1.partitions.len(), 3);
    assert!(
        t1.partitions
            .iter()
            .all(|p| p.leader == 1 && p.error.is_none())
    );
    assert!(!t1.topic_id.is_nil());
    assert!(matches!(d[1].1, Err(ClientError::NotFound(_))), "{d:?}");

    let cp = admin.create_partitions(&[("t1".into(), 5)]).await?;
    assert!(cp[0].1.is_ok(), "{cp:?}");
    let shrink = admin.create_partitions(&[("t1".into(), 2)]).await?;
    assert!(shrink[0].1.is_err(), "{shrink:?}");
    let d = admin.describe_topics(&["t1".into()]).await?;
    assert_eq!(d[0].1.as_ref().map(|t| t.partitions.len()).ok(), Some(5));

    let del = admin.delete_topics(&["t2".into(), "nope".into()]).await?;
    assert!(del[0].1.is_ok(), "{del:?}");
    assert_eq!(del[1].1.as_ref().err().and_then(ClientError::code), Some(3));
    let d = admin.describe_topics(&["t2".into()]).await?;
    assert!(d[0].1.is_err());
    drop(admin);
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_timestamp() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let mut admin = Admin::connect(config(&b)?).await?;
    let r = admin
        .create_topics(&[NewTopic::new("lo", 2)], false)
        .await?;
    assert!(r[0].1.is_ok());
    let mut conn = Connection::connect(&b.local_addr.to_string(), &Default::default()).await?;
    assert_eq!(produce(&mut conn, "lo", 0, 5).await?, 0);
    assert_eq!(produce(&mut conn, "lo", 0, 5).await?, 5);

    let parts = [tp("lo", 0), tp("lo", 1)];
    let e = admin.list_offsets(&parts, OffsetSpec::Earliest).await?;
    assert_eq!(
        e.iter().map(|o| o.offset).collect::<Vec<_>>(),
        [Some(0), Some(0)]
    );
    let l = admin.list_offsets(&parts, OffsetSpec::Latest).await?;
    assert_eq!(
        l.iter().map(|o| o.offset).collect::<Vec<_>>(),
        [Some(10), Some(0)]
    );
    assert_eq!((l[0].topic.as_str(), l[0].partition), ("lo", 0));
    // Timestamps 1000..1004 at offsets 0..4 and again at 5..9: the first at or after 1003 is 3.
    let t = admin
        .list_offsets(&[tp("lo", 0)], OffsetSpec::Timestamp(1003))
        .await?;
    assert_eq!(t[0].offset, Some(3));
    assert_eq!(t[0].timestamp, Some(1003));
    let t = admin
        .list_offsets(&[tp("lo", 0)], OffsetSpec::Timestamp(1_000_000))
        .await?;
    assert_eq!(t[0].offset, None, "{t:?}");

    let e = admin
        .list_offsets(&[tp("missing", 0)], OffsetSpec::Latest)
        .await;
    assert!(matches!(e, Err(ClientError::NotFound(_))), "{e:?}");
    let e = admin.list_offsets(&[tp("lo", 7)], OffsetSpec::Latest).await;
    assert!(
        matches!(&e, Err(ClientError::NotFound(m)) if m.contains("no partition 7")),
        "{e:?}"
    );
    // Listing offsets never creates a topic.
    let d = admin.describe_topics(&["missing".into()]).await?;
    assert!(d[0].1.is_err());
    drop(admin);
    b.shutdown().await?;
    Ok(())
}

/// Joins `group` as its only member and hands itself `assignment`; returns the member id.
async fn join_and_sync(
    conn: &mut Connection,
    group: &str,
    assignment: &ConsumerAssignment,
) -> Result<(String, i32), Box<dyn std::error::Error>> {
    let mut proto = join_group_request::JoinGroupRequestProtocol::default();
    proto.name = s("range");
    proto.metadata =
        Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 2, b'g', b't', 0xff, 0xff, 0xff, 0xff]);
    let mut join = JoinGroupRequest::default();
    join.group_id = GroupId(s(group));
    join.session_timeout_ms = 10_000;
    join.rebalance_timeout_ms = 10_000;
    join.protocol_type = s("consumer");
    join.protocols = vec![proto];
    // v3: no MEMBER_ID_REQUIRED round trip.
    let r = conn.call_at(&join, 3).await?;
    assert_eq!(r.error_code, 0, "join error");
    let member = r.member_id.to_string();
    let mut a = sync_group_request::SyncGroupRequestAssignment::default();
    a.member_id = s(&member);
    a.assignment = assignment.encode()?;
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(s(group));
    sync.generation_id = r.generation_id;
    sync.member_id = s(&member);
    sync.assignments = vec![a];
    let sr = conn.call_at(&sync, 2).await?;
    assert_eq!(sr.error_code, 0, "sync error");
    Ok((member, r.generation_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_offsets_describe_commit_delete() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let mut admin = Admin::connect(config(&b)?).await?;
    let r = admin
        .create_topics(&[NewTopic::new("gt", 2)], false)
        .await?;
    assert!(r[0].1.is_ok());

    // A standalone commit creates an Empty group with offsets.
    admin
        .commit_group_offsets(
            "g1",
            &[
                PartitionOffset {
                    topic: "gt".into(),
                    partition: 0,
                    offset: 3,
                },
                PartitionOffset {
                    topic: "gt".into(),
                    partition: 1,
                    offset: 0,
                },
            ],
        )
        .await?;
    let offs = admin.list_group_offsets("g1").await?;
    assert_eq!(
        offs.iter()
            .map(|o| (o.topic.as_str(), o.partition, o.offset))
            .collect::<Vec<_>>(),
        [("gt", 0, 3), ("gt", 1, 0)]
    );
    let e = admin
        .commit_group_offsets(
            "g1",
            &[PartitionOffset {
                topic: "nope".into(),
                partition: 0,
                offset: 1,
            }],
        )
        .await;
    assert_eq!(e.err().and_then(|e| e.code()), Some(3));
    assert!(admin.list_group_offsets("never").await?.is_empty());

    let groups = admin.list_groups(&[]).await?;
    let g1 = groups.iter().find(|g| g.group_id == "g1");
    assert_eq!(
        g1.and_then(|g| g.state.as_deref()),
        Some("Empty"),
        "{groups:?}"
    );
    let empty_only = admin.list_groups(&["empty".into()]).await?;
    assert!(empty_only.iter().any(|g| g.group_id == "g1"));
    let stable_only = admin.list_groups(&["Stable".into()]).await?;
    assert!(!stable_only.iter().any(|g| g.group_id == "g1"));

    let d = admin.describe_groups(&["nope-group".into()]).await?;
    let nope = d[0].1.as_ref().map_err(|e| e.to_string())?;
    assert_eq!(nope.state, "Dead");
    assert!(nope.is_inactive());

    // A live member makes the group Stable: describe shows its assignment, and neither a
    // standalone commit nor a delete is accepted.
    let mut member_conn =
        Connection::connect(&b.local_addr.to_string(), &Default::default()).await?;
    let assignment = ConsumerAssignment {
        version: 1,
        partitions: vec![("gt".into(), vec![0, 1])],
        user_data: None,
    };
    let (member, _gen) = join_and_sync(&mut member_conn, "g2", &assignment).await?;
    let d = admin.describe_groups(&["g2".into()]).await?;
    let g2 = d[0].1.as_ref().map_err(|e| e.to_string())?;
    assert_eq!(g2.state, "Stable");
    assert_eq!(g2.protocol_type, "consumer");
    assert_eq!(g2.protocol, "range");
    assert!(!g2.is_inactive());
    assert_eq!(g2.members.len(), 1);
    assert_eq!(g2.members[0].member_id, member);
    assert_eq!(g2.members[0].consumer_assignment()?, assignment);
    let stable_only = admin.list_groups(&["Stable".into()]).await?;
    assert_eq!(
        stable_only
            .iter()
            .map(|g| g.group_id.as_str())
            .collect::<Vec<_>>(),
        ["g2"]
    );
    assert_eq!(stable_only[0].protocol_type, "consumer");

    let e = admin
        .commit_group_offsets(
            "g2",
            &[PartitionOffset {
                topic: "gt".into(),
                partition: 0,
                offset: 1,
            }],
        )
        .await;
    assert_eq!(
        e.err().and_then(|e| e.code()),
        Some(25),
        "UNKNOWN_MEMBER_ID"
    );
    let del = admin.delete_groups(&["g2".into()]).await?;
    assert_eq!(
        del[0].1.as_ref().err().and_then(ClientError::code),
        Some(68)
    );

    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(s("g2"));
    leave.member_id = s(&member);
    let lr = member_conn.call_at(&leave, 1).await?;
    assert_eq!(lr.error_code, 0);
    let d = admin.describe_groups(&["g2".into()]).await?;
    assert!(d[0].1.as_ref().is_ok_and(|g| g.is_inactive()), "{d:?}");

    let del = admin
        .delete_groups(&["g1".into(), "g2".into(), "never".into()])
        .await?;
    assert!(del[0].1.is_ok() && del[1].1.is_ok(), "{del:?}");
    assert_eq!(
        del[2].1.as_ref().err().and_then(ClientError::code),
        Some(69)
    );
    assert!(admin.list_group_offsets("g1").await?.is_empty());
    let groups = admin.list_groups(&[]).await?;
    assert!(
        groups
            .iter()
            .all(|g| g.group_id != "g1" && g.group_id != "g2")
    );

    // Versions negotiated with our own broker are the newest both sides have.
    let addr = b.local_addr.to_string();
    assert_eq!(admin.api_version(&addr, ApiKey::OffsetFetch).await?, 9);
    assert_eq!(admin.api_version(&addr, ApiKey::Metadata).await?, 12);
    drop(admin);
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bootstrap_is_one_clear_error() -> TestResult {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let e = Admin::connect(ClientConfig::new(&addr)?).await.err();
    assert_eq!(
        e.map(|e| e.to_string()),
        Some(format!("cannot connect to {addr}: connection refused"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_bootstrap_server_is_used_when_the_first_is_down() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let cfg = ClientConfig::new(&format!("{dead},{}", b.local_addr))?;
    let mut admin = Admin::connect(cfg).await?;
    assert!(admin.list_groups(&[]).await?.is_empty());
    drop(admin);
    b.shutdown().await?;
    Ok(())
}
