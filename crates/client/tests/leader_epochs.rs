//! Leader epochs in the consumer against a real in-process broker (KIP-320): positions carry
//! the epoch of the batches read, commits keep it and a restored position is validated with
//! OffsetForLeaderEpoch; a position past the end of its epoch in the leader's log is a
//! truncation (the consumer goes on from the divergence point, or fails with
//! `auto.offset.reset=none`), and an epoch the leader does not know resets by the policy.

use std::time::{Duration, Instant};

use bytes::Bytes;
use vltava_broker::{Broker, BrokerConfig};
use vltava_client::consumer::ConsumerRecord;
use vltava_client::{
    Admin, ClientConfig, ClientError, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};

type BoxError = Box<dyn std::error::Error>;
type TestResult = Result<(), BoxError>;

async fn start(dir: &std::path::Path) -> Result<Broker, BoxError> {
    let mut c = BrokerConfig::default();
    c.set("listen", "127.0.0.1:0")?;
    c.set("data.dir", &dir.display().to_string())?;
    c.set("group.initial.rebalance.delay.ms", "0")?;
    c.set("group.min.session.timeout.ms", "500")?;
    Ok(Broker::start(c).await?)
}

fn client_config(b: &Broker) -> Result<ClientConfig, ClientError> {
    let mut c = ClientConfig::new(&b.local_addr.to_string())?;
    c.connection.request_timeout = Duration::from_secs(10);
    Ok(c)
}

fn consumer_config(
    b: &Broker,
    group: Option<&str>,
    reset: &str,
) -> Result<ConsumerConfig, ClientError> {
    let mut c = ConsumerConfig::with_client(client_config(b)?);
    c.set("auto.offset.reset", reset)?
        .set("fetch.max.wait.ms", "100")?
        .set("enable.auto.commit", "false")?
        .set("session.timeout.ms", "3000")?
        .set("heartbeat.interval.ms", "200")?;
    if let Some(g) = group {
        c.set("group.id", g)?;
    }
    Ok(c)
}

/// Creates `topic` (one partition) and returns its leader epoch.
async fn create_topic(b: &Broker, topic: &str) -> Result<i32, BoxError> {
    let mut admin = Admin::connect(client_config(b)?).await?;
    for (_, r) in admin
        .create_topics(&[NewTopic::new(topic, 1)], false)
        .await?
    {
        r?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let md = admin.cluster().metadata(Some(&[topic.to_string()])).await?;
        if let Some(p) = md
            .topic(topic)
            .and_then(|t| t.partitions.first())
            .filter(|p| p.leader >= 0)
        {
            return Ok(p.leader_epoch);
        }
        if Instant::now() > deadline {
            return Err(format!("no leader for {topic}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn produce(b: &Broker, topic: &str, values: std::ops::Range<usize>) -> TestResult {
    let p = Producer::connect(ProducerConfig::new(&b.local_addr.to_string())?).await?;
    for i in values {
        p.send(ProducerRecord::new(topic, Bytes::from(format!("v{i}"))).with_partition(0))
            .await?;
    }
    p.close().await;
    Ok(())
}

async fn poll_n(c: &mut Consumer, n: usize) -> Result<Vec<ConsumerRecord>, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut out = Vec::new();
    while out.len() < n {
        if Instant::now() > deadline {
            return Err(format!("got {} of {n} records", out.len()).into());
        }
        out.extend(c.poll(Duration::from_millis(200)).await?);
    }
    Ok(out)
}

fn offsets(rs: &[ConsumerRecord]) -> Vec<i64> {
    rs.iter().map(|r| r.offset).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_carry_the_batch_epoch_through_commits_and_are_validated() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let epoch = create_topic(&b, "e").await?;
    assert!(epoch >= 0, "the broker gives leader epochs ({epoch})");
    produce(&b, "e", 0..6).await?;
    let tp = TopicPartition::new("e", 0);

    let mut c = Consumer::new(consumer_config(&b, Some("g"), "earliest")?).await?;
    c.assign(std::slice::from_ref(&tp))?;
    let got = poll_n(&mut c, 6).await?;
    assert_eq!(offsets(&got), (0..6).collect::<Vec<_>>());
    assert!(got.iter().all(|r| r.leader_epoch == epoch));
    assert_eq!(c.position_leader_epoch(&tp), Some(epoch));
    c.commit_sync(None).await?;
    c.close().await?;

    // OffsetCommit v6+ kept the epoch.
    let mut admin = Admin::connect(client_config(&b)?).await?;
    let committed = admin.list_group_offsets("g").await?;
    let row = committed
        .iter()
        .find(|o| o.topic == "e" && o.partition == 0)
        .ok_or("nothing committed")?;
    assert_eq!((row.offset, row.leader_epoch), (6, Some(epoch)));

    // A new consumer restores position and epoch, validates them (the leader still holds
    // offset 6 at that epoch) and reads on from there, neither again nor skipping.
    produce(&b, "e", 6..9).await?;
    let mut c = Consumer::new(consumer_config(&b, Some("g"), "earliest")?).await?;
    c.assign(std::slice::from_ref(&tp))?;
    assert_eq!(c.position(&tp).await?, 6);
    assert_eq!(c.position_leader_epoch(&tp), Some(epoch));
    let got = poll_n(&mut c, 3).await?;
    assert_eq!(offsets(&got), vec![6, 7, 8]);
    c.close().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_past_its_epochs_end_is_a_truncation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let epoch = create_topic(&b, "t").await?;
    produce(&b, "t", 0..4).await?;
    let tp = TopicPartition::new("t", 0);

    // The leader's log ends at 4 for this epoch; a consumer that believes it read up to 10 at
    // that epoch had read records the log no longer holds. With a reset policy it goes on
    // from the divergence point, 4: the next records are read once, none skipped.
    let mut c = Consumer::new(consumer_config(&b, None, "latest")?).await?;
    c.assign(std::slice::from_ref(&tp))?;
    c.seek_with_leader_epoch(&tp, 10, epoch)?;
    assert_eq!(c.position(&tp).await?, 4);
    assert_eq!(c.position_leader_epoch(&tp), Some(epoch));
    produce(&b, "t", 4..7).await?;
    let got = poll_n(&mut c, 3).await?;
    assert_eq!(offsets(&got), vec![4, 5, 6]);
    c.close().await?;

    // auto.offset.reset=none: the truncation is the error, with the divergence point, until
    // the application seeks.
    let mut c = Consumer::new(consumer_config(&b, None, "none")?).await?;
    c.assign(std::slice::from_ref(&tp))?;
    c.seek_with_leader_epoch(&tp, 10, epoch)?;
    for _ in 0..2 {
        match c.poll(Duration::from_millis(500)).await {
            Err(ClientError::LogTruncation {
                offset,
                leader_epoch,
                divergent_offset,
                ..
            }) => {
                assert_eq!(offset, 10);
                assert_eq!(leader_epoch, epoch);
                assert_eq!(divergent_offset, Some((7, epoch)));
            }
            other => return Err(format!("expected a log truncation, got {other:?}").into()),
        }
    }
    c.seek(&tp, 5)?;
    let got = poll_n(&mut c, 2).await?;
    assert_eq!(offsets(&got), vec![5, 6]);
    c.close().await?;

    // A position at the epoch's end is valid.
    let mut c = Consumer::new(consumer_config(&b, None, "none")?).await?;
    c.assign(std::slice::from_ref(&tp))?;
    c.seek_with_leader_epoch(&tp, 7, epoch)?;
    assert_eq!(c.position(&tp).await?, 7);
    assert!(c.poll(Duration::from_millis(300)).await?.is_empty());
    c.close().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_the_leader_never_had_resets_by_the_policy() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let epoch = create_topic(&b, "f").await?;
    produce(&b, "f", 0..5).await?;
    let tp = TopicPartition::new("f", 0);

    // A future epoch: the leader has no end offset for it (UNDEFINED), which the Java client
    // takes as a truncation without a known divergence point and resets by the policy.
    let mut c = Consumer::new(consumer_config(&b, None, "earliest")?).await?;
    c.assign(std::slice::from_ref(&tp))?;
    c.seek_with_leader_epoch(&tp, 3, epoch + 10)?;
    let got = poll_n(&mut c, 5).await?;
    assert_eq!(offsets(&got), vec![0, 1, 2, 3, 4]);
    c.close().await?;

    let mut c = Consumer::new(consumer_config(&b, None, "none")?).await?;
    c.assign(std::slice::from_ref(&tp))?;
    c.seek_with_leader_epoch(&tp, 3, epoch + 10)?;
    match c.poll(Duration::from_millis(500)).await {
        Err(ClientError::LogTruncation {
            divergent_offset: None,
            offset: 3,
            ..
        }) => {}
        other => return Err(format!("expected a log truncation, got {other:?}").into()),
    }
    // A plain seek carries no epoch: nothing to validate.
    c.seek(&tp, 3)?;
    let got = poll_n(&mut c, 2).await?;
    assert_eq!(offsets(&got), vec![3, 4]);
    c.close().await?;
    b.shutdown().await?;
    Ok(())
}
