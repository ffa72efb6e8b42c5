//! DescribeConfigs, IncrementalAlterConfigs and DeleteRecords against a real in-process broker
//! on port 0.

use std::time::Duration;

use vltava_broker::{Broker, BrokerConfig};
use vltava_client::{
    Admin, ClientConfig, ClientError, ConfigSource, NewTopic, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn start(dir: &std::path::Path) -> Result<Broker, Box<dyn std::error::Error>> {
    let mut c = BrokerConfig::default();
    c.set("listen", "127.0.0.1:0")?;
    c.set("data.dir", &dir.display().to_string())?;
    Ok(Broker::start(c).await?)
}

fn config(b: &Broker) -> Result<ClientConfig, ClientError> {
    let mut c = ClientConfig::new(&b.local_addr.to_string())?;
    c.connection.request_timeout = Duration::from_secs(10);
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_alter_topic_configs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let mut admin = Admin::connect(config(&b)?).await?;
    let mut t = NewTopic::new("c1", 1);
    t.configs = vec![("retention.ms".into(), "60000".into())];
    let created = admin.create_topics(&[t], false).await?;
    assert!(created[0].1.is_ok(), "{created:?}");

    let entries = admin.describe_configs("c1").await?;
    let retention = entries
        .iter()
        .find(|e| e.name == "retention.ms")
        .ok_or("no retention.ms")?;
    assert_eq!(retention.value.as_deref(), Some("60000"));
    assert_eq!(retention.source, ConfigSource::Topic);
    assert!(!retention.is_default);
    let defaults: Vec<_> = entries.iter().filter(|e| e.is_default).collect();
    assert!(!defaults.is_empty(), "{entries:?}");
    assert!(entries.windows(2).all(|w| w[0].name < w[1].name), "sorted");

    admin
        .alter_topic_configs(
            "c1",
            &[("segment.bytes".into(), "1048576".into())],
            &["retention.ms".into()],
        )
        .await?;
    let entries = admin.describe_configs("c1").await?;
    let get = |n: &str| entries.iter().find(|e| e.name == n).cloned();
    let seg = get("segment.bytes").ok_or("no segment.bytes")?;
    assert_eq!(seg.value.as_deref(), Some("1048576"));
    assert_eq!(seg.source, ConfigSource::Topic);
    let retention = get("retention.ms").ok_or("no retention.ms")?;
    assert!(retention.is_default, "{retention:?}");
    assert_ne!(retention.value.as_deref(), Some("60000"));

    // Nothing to change: no request, no error.
    admin.alter_topic_configs("c1", &[], &[]).await?;

    let bad = admin
        .alter_topic_configs("c1", &[("no.such.setting".into(), "1".into())], &[])
        .await;
    assert!(bad.is_err(), "{bad:?}");

    let missing = admin.describe_configs("nope").await;
    assert_eq!(
        missing.err().map(|e| e.to_string()).as_deref(),
        Some("topic 'nope' does not exist")
    );
    let missing = admin
        .alter_topic_configs("nope", &[("retention.ms".into(), "1".into())], &[])
        .await;
    assert!(missing.is_err());
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path()).await?;
    let mut admin = Admin::connect(config(&b)?).await?;
    let created = admin
        .create_topics(&[NewTopic::new("d1", 2)], false)
        .await?;
    assert!(created[0].1.is_ok(), "{created:?}");
    let producer = Producer::connect(ProducerConfig::new(&b.local_addr.to_string())?).await?;
    for p in 0..2 {
        for i in 0..10 {
            producer
                .send(
                    ProducerRecord::new("d1", bytes::Bytes::from(format!("v{i}")))
                        .with_partition(p),
                )
                .await?;
        }
    }
    producer.close().await;

    let tp0 = TopicPartition::new("d1", 0);
    let tp1 = TopicPartition::new("d1", 1);
    let r = admin
        .delete_records(&[
            (tp0.clone(), 4),
            (tp1.clone(), -1),
            (TopicPartition::new("d1", 7), 1),
            (TopicPartition::new("nope", 0), 1),
        ])
        .await?;
    assert_eq!(r.len(), 4);
    assert_eq!(r[0].1.as_ref().ok(), Some(&4));
    assert_eq!(r[1].1.as_ref().ok(), Some(&10));
    assert!(r[2].1.is_err());
    assert_eq!(
        r[3].1.as_ref().err().map(ToString::to_string).as_deref(),
        Some("topic 'nope' does not exist")
    );
    let starts = admin
        .list_offsets(&[tp0.clone(), tp1.clone()], OffsetSpec::Earliest)
        .await?;
    assert_eq!(starts[0].offset, Some(4));
    assert_eq!(starts[1].offset, Some(10));

    // Beyond the high watermark: OFFSET_OUT_OF_RANGE.
    let r = admin.delete_records(&[(tp0.clone(), 100)]).await?;
    assert_eq!(r[0].1.as_ref().err().and_then(ClientError::code), Some(1));
    b.shutdown().await?;
    Ok(())
}
