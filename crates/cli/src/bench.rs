//! `vltava bench produce`: produce fixed-size records as fast as allowed (or at `--rate`) and
//! report throughput and latency. `vltava bench consume`: read records from the beginning of a
//! topic with the native consumer and report throughput. `vltava bench e2e`: a producer and a
//! consumer in one process; latency from the produce call to the consumer's receipt, carried
//! as a timestamp in each record's value.
//!
//! Latency is measured from the moment `send` is called to its acknowledgement, as the Java
//! client's ProducerPerformance does: for every record at a fixed `--rate`, for every
//! `LATENCY_SAMPLE_EVERY`th record at full speed (reading the clock twice per record costs a
//! tenth of the producer's CPU there, and a million samples a second add nothing to the
//! percentiles). Samples go in microseconds into an HDR histogram
//! (`hdrhistogram`: fixed memory, 3 significant digits at any magnitude, exact percentiles
//! of millions of samples without keeping them). MB/s are decimal megabytes of record values.

use std::io::IsTerminal;

/// At full speed, one record in this many has its latency measured.
const LATENCY_SAMPLE_EVERY: u64 = 16;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Subcommand;
use hdrhistogram::Histogram;
use vltava_client::producer::{Producer, ProducerError, ProducerRecord};
use vltava_client::{
    Admin, ClientConfig, ClientError, Consumer, ConsumerConfig, NewTopic, OffsetSpec,
    TopicPartition,
};

use crate::group::ClientArgs;
use crate::produce::{parse_acks, parse_codec, parse_key_value, producer_config};

/// `vltava bench ...`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Produce records and report MB/s, records/s and latency percentiles (every record at a
    /// fixed --rate, every 16th at full speed).
    Produce(ProduceBench),
    /// Read records from the beginning of a topic and report MB/s and records/s.
    Consume(ConsumeBench),
    /// Produce and consume in one process and report end-to-end latency percentiles.
    E2e(E2eBench),
}

#[derive(clap::Args, Debug)]
struct ConsumeBench {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic to read.
    #[arg(long, default_value = "vltava-bench")]
    topic: String,
    /// Records to read (default: every record the topic holds when the run starts).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct E2eBench {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic (created with --partitions partitions if missing).
    #[arg(long, default_value = "vltava-bench-e2e")]
    topic: String,
    /// Records per second to aim at (default: as fast as possible).
    #[arg(long, value_name = "R", value_parser = positive_f64)]
    rate: Option<f64>,
    /// Records to produce and consume.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Bytes of each record's value (at least 16: a run id and a timestamp).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    record_size: u32,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=10000))]
    partitions: i32,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: String,
    /// linger.ms of the producer.
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ProduceBench {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic (created with --partitions partitions if missing). Several (comma-separated or
    /// repeated) spread the records over them in turn, one topic after the other.
    #[arg(
        long = "topic",
        value_name = "TOPIC",
        default_value = "vltava-bench",
        value_delimiter = ','
    )]
    topics: Vec<String>,
    /// Bytes of each record's value (no key).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    record_size: u32,
    /// Records to produce (default 1000000 unless --duration is given).
    #[arg(long, value_name = "N", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Produce for this many seconds instead of a count.
    #[arg(long, value_name = "S", value_parser = positive_f64)]
    duration: Option<f64>,
    /// Records per second to aim at (default: as fast as possible).
    #[arg(long, value_name = "R", value_parser = positive_f64)]
    rate: Option<f64>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: String,
    /// Compression codec per batch.
    #[arg(long, default_value = "none", value_parser = parse_codec)]
    compression: String,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=10000))]
    partitions: i32,
    /// batch.size (the default matches bench/run.sh's rdkafka_performance run).
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: usize,
    /// linger.ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Any other producer setting by its Kafka name (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}': expected a positive number")),
    }
}

/// Runs `vltava bench ...`.
pub fn main(args: BenchArgs) -> ExitCode {
    let b = match args.command {
        BenchCommand::Produce(b) => b,
        BenchCommand::Consume(c) => return run_bench(consume_bench(c)),
        BenchCommand::E2e(e) => return run_bench(e2e_bench(e)),
    };
    let mut set = vec![
        ("batch.size".to_string(), b.batch_size.to_string()),
        ("linger.ms".to_string(), b.linger_ms.to_string()),
    ];
    set.extend(b.set.iter().cloned());
    let config = match producer_config(&b.client, &b.compression, &b.acks, &set) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    run_bench(produce(b, config))
}

/// Runs a benchmark on a two-thread runtime: exit 0, or one `error: ...` line and exit 1.
fn run_bench(bench: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Latencies and outcomes, written by the delivery callbacks.
struct Stats {
    acked: AtomicU64,
    failed: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<ProducerError>>,
}

/// Value bytes: random text from a 64-letter alphabet (compresses to about 3/4, so codecs do
/// real work but are not flattered). Records are slices of it (no copy per record).
fn payload_pool(record_size: usize) -> Bytes {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let len = (4 << 20) + record_size;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for i in 0..8 {
            v.push(ALPHABET[((x >> (i * 8)) & 63) as usize]);
        }
    }
    v.truncate(len);
    Bytes::from(v)
}

async fn ensure_topic(
    client: &vltava_client::ClientConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), String> {
    let mut admin = Admin::connect(client.clone())
        .await
        .map_err(|e| e.to_string())?;
    let existing = admin
        .describe_topics(&[topic.to_string()])
        .await
        .map_err(|e| e.to_string())?;
    if let Some((_, Ok(t))) = existing.first()
        && t.error.is_none()
        && !t.partitions.is_empty()
    {
        return Ok(());
    }
    let created = admin
        .create_topics(&[NewTopic::new(topic, partitions)], false)
        .await
        .map_err(|e| e.to_string())?;
    for (name, r) in created {
        match r {
            Ok(()) => {}
            Err(e) if e.code() == Some(vltava_client::error::codes::TOPIC_ALREADY_EXISTS) => {}
            Err(e) => return Err(format!("cannot create topic '{name}': {e}")),
        }
    }
    Ok(())
}

async fn produce(b: ProduceBench, config: vltava_client::ProducerConfig) -> Result<(), String> {
    for topic in &b.topics {
        ensure_topic(&config.client, topic, b.partitions).await?;
    }
    let producer = Producer::connect(config).await.map_err(|e| e.to_string())?;
    let size = b.record_size as usize;
    let pool = payload_pool(size);
    let stats = Arc::new(Stats {
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        hist: Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .map_err(|e| format!("histogram: {e}"))?,
        ),
        first_error: Mutex::new(None),
    });
    let count = match (b.count, b.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(1_000_000),
    };
    let duration = b.duration.map(Duration::from_secs_f64);
    let sent = Arc::new(AtomicU64::new(0));
    let progress = std::io::stdout()
        .is_terminal()
        .then(|| spawn_progress(count, duration, Arc::clone(&sent), Arc::clone(&stats), size));

    // Metadata before the clock starts (the producer id is asked for at connect).
    for topic in &b.topics {
        producer
            .partition_count(topic)
            .await
            .map_err(|e| e.to_string())?;
    }

    let sample_every = if b.rate.is_some() {
        1
    } else {
        LATENCY_SAMPLE_EVERY
    };
    let start = Instant::now();
    let mut i: u64 = 0;
    let mut offset = 0usize;
    let mut stop: Option<String> = None;
    loop {
        if count.is_some_and(|n| i >= n) || duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        if let Some(rate) = b.rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let value = pool.slice(offset..offset + size);
        offset = (offset + size) % (pool.len() - size);
        let st = Arc::clone(&stats);
        let t0 = i.is_multiple_of(sample_every).then(Instant::now);
        let topic = b.topics[(i % b.topics.len() as u64) as usize].as_str();
        let r = producer
            .enqueue_with_callback(ProducerRecord::new(topic, value), move |r| match r {
                Ok(_) => {
                    if let Some(t0) = t0 {
                        let us = t0.elapsed().as_micros() as u64;
                        let mut h = st.hist.lock().unwrap_or_else(|p| p.into_inner());
                        h.saturating_record(us.max(1));
                    }
                    st.acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    st.failed.fetch_add(1, Ordering::Relaxed);
                    let mut f = st.first_error.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert(e);
                }
            })
            .await;
        if let Err(e) = r {
            stop = Some(e.to_string());
            break;
        }
        i += 1;
        sent.store(i, Ordering::Relaxed);
    }
    producer.close().await;
    let elapsed = start.elapsed();
    if let Some((bar, task)) = progress {
        task.abort();
        bar.finish_and_clear();
    }
    let acked = stats.acked.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let records_per_sec = acked as f64 / secs;
    let mb_per_sec = acked as f64 * size as f64 / secs / 1e6;
    let h = stats.hist.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if b.json {
        let out = serde_json::json!({
            "topic": b.topics.join(","),
            "records": acked,
            "failed": failed,
            "record_size": size,
            "bytes": acked * size as u64,
            "seconds": round3(secs),
            "records_per_sec": round3(records_per_sec),
            "mb_per_sec": round3(mb_per_sec),
            "latency_ms": latency_json(&h),
            "latency_sampled_every": sample_every,
            "acks": b.acks,
            "compression": b.compression,
            "batch_size": b.batch_size,
            "linger_ms": b.linger_ms,
        });
        println!("{out}");
    } else {
        println!(
            "{acked} records sent, {records_per_sec:.1} records/sec ({mb_per_sec:.2} MB/sec), \
             {:.2} ms avg latency, {:.2} ms max latency",
            h.mean() / 1000.0,
            h.max() as f64 / 1000.0
        );
        println!("{}", latency_line(&h));
    }
    if failed > 0 {
        let first = stats
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(format!(
            "{failed} of {} records failed: {first}",
            acked + failed
        ));
    }
    match stop {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Percentiles of a histogram of microseconds, in milliseconds, as JSON.
fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "mean": round3(h.mean() / 1000.0),
        "p50": ms(0.50),
        "p90": ms(0.90),
        "p99": ms(0.99),
        "p99_9": ms(0.999),
        "max": h.max() as f64 / 1000.0,
    })
}

/// Percentiles of a histogram of microseconds, in milliseconds, on one line.
fn latency_line(h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    )
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A live progress bar (only when stdout is a terminal), redrawn ten times a second.
fn spawn_progress(
    count: Option<u64>,
    duration: Option<Duration>,
    sent: Arc<AtomicU64>,
    stats: Arc<Stats>,
    size: usize,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = match count {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new(duration.map_or(0, |d| d.as_millis() as u64)),
    };
    let template = if count.is_some() {
        "{bar:40} {pos}/{len} records {msg}"
    } else {
        "{bar:40} {elapsed}/{duration} {msg}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    let b = bar.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let acked = stats.acked.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            match count {
                Some(_) => b.set_position(acked),
                None => b.set_position(started.elapsed().as_millis() as u64),
            }
            b.set_message(format!(
                "sent {} acked {acked} | {:.0} rec/s {:.1} MB/s",
                sent.load(Ordering::Relaxed),
                acked as f64 / secs,
                acked as f64 * size as f64 / secs / 1e6
            ));
        }
    });
    (bar, task)
}

/// A consumer of every partition of `topic` (no group), and those partitions.
async fn assigned_consumer(
    args: &ClientArgs,
    topic: &str,
) -> Result<(Consumer, Vec<TopicPartition>), String> {
    let mut client = ClientConfig::new(&args.bootstrap_server).map_err(|e| e.to_string())?;
    client.connection.connect_timeout = Duration::from_secs(args.timeout);
    client.connection.request_timeout = Duration::from_secs(args.timeout);
    client.connection.client_id = "vltava-bench".to_string();
    let mut consumer = Consumer::new(ConsumerConfig::with_client(client))
        .await
        .map_err(|e| e.to_string())?;
    let described = consumer
        .admin()
        .describe_topics(&[topic.to_string()])
        .await
        .map_err(|e| e.to_string())?;
    let t = match described.into_iter().next() {
        Some((_, Ok(t))) => t,
        Some((_, Err(ClientError::NotFound(_)))) | None => {
            return Err(format!("topic '{topic}' does not exist"));
        }
        Some((_, Err(e))) => return Err(e.to_string()),
    };
    let tps: Vec<TopicPartition> = t
        .partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect();
    consumer.assign(&tps).map_err(|e| e.to_string())?;
    Ok((consumer, tps))
}

/// `vltava bench consume`.
async fn consume_bench(b: ConsumeBench) -> Result<(), String> {
    let (mut consumer, tps) = assigned_consumer(&b.client, &b.topic).await?;
    let admin = consumer.admin();
    let starts = admin
        .list_offsets(&tps, OffsetSpec::Earliest)
        .await
        .map_err(|e| e.to_string())?;
    let ends = admin
        .list_offsets(&tps, OffsetSpec::Latest)
        .await
        .map_err(|e| e.to_string())?;
    let available: u64 = starts
        .iter()
        .zip(&ends)
        .map(|(s, e)| {
            let (s, e) = (s.offset.unwrap_or(0), e.offset.unwrap_or(0));
            u64::try_from(e - s).unwrap_or(0)
        })
        .sum();
    let count = b.count.unwrap_or(available);
    if count == 0 {
        return Err(format!("topic '{}' has no records", b.topic));
    }
    if count > available {
        return Err(format!(
            "topic '{}' holds {available} records, fewer than --count {count}",
            b.topic
        ));
    }
    consumer
        .seek_to_beginning(&tps)
        .map_err(|e| e.to_string())?;
    let stall = Duration::from_secs(b.client.timeout);
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < count {
        let batch = consumer
            .poll(Duration::from_millis(500))
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            if last_progress.elapsed() >= stall {
                return Err(format!(
                    "no records for {}s after reading {records} of {count}",
                    stall.as_secs()
                ));
            }
            continue;
        }
        last_progress = Instant::now();
        for r in batch {
            if records == count {
                break;
            }
            records += 1;
            bytes += (r.value.as_ref().map_or(0, |v| v.len())
                + r.key.as_ref().map_or(0, |k| k.len())) as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let _ = consumer.close().await;
    let records_per_sec = records as f64 / secs;
    let mb_per_sec = bytes as f64 / secs / 1e6;
    if b.json {
        let out = serde_json::json!({
            "topic": b.topic,
            "records": records,
            "bytes": bytes,
            "seconds": round3(secs),
            "records_per_sec": round3(records_per_sec),
            "mb_per_sec": round3(mb_per_sec),
        });
        println!("{out}");
    } else {
        println!(
            "{records} records read, {records_per_sec:.1} records/sec ({mb_per_sec:.2} MB/sec), {bytes} bytes in {secs:.3} s"
        );
    }
    Ok(())
}

/// `vltava bench e2e`: each value starts with this run's id and the nanoseconds since the
/// run started at the produce call; the consumer records the difference on receipt.
async fn e2e_bench(b: E2eBench) -> Result<(), String> {
    let set = vec![("linger.ms".to_string(), b.linger_ms.to_string())];
    let config = producer_config(&b.client, "none", &b.acks, &set)?;
    ensure_topic(&config.client, &b.topic, b.partitions).await?;
    let (mut consumer, tps) = assigned_consumer(&b.client, &b.topic).await?;
    consumer.seek_to_end(&tps).map_err(|e| e.to_string())?;
    for tp in &tps {
        consumer.position(tp).await.map_err(|e| e.to_string())?;
    }
    let producer = Arc::new(Producer::connect(config).await.map_err(|e| e.to_string())?);
    producer
        .partition_count(&b.topic)
        .await
        .map_err(|e| e.to_string())?;
    let size = b.record_size as usize;
    let pool = payload_pool(size);
    let run_id: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        | 1;
    let start = Instant::now();
    let (count, rate, topic) = (b.count, b.rate, b.topic.clone());
    let prod = Arc::clone(&producer);
    let mut sender = Some(tokio::spawn(async move {
        let mut offset = 0usize;
        for i in 0..count {
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let mut v = Vec::with_capacity(size);
            v.extend_from_slice(&run_id.to_le_bytes());
            v.extend_from_slice(&(start.elapsed().as_nanos() as u64).to_le_bytes());
            v.extend_from_slice(&pool[offset..offset + size - 16]);
            offset = (offset + size) % (pool.len() - size);
            prod.enqueue(ProducerRecord::new(topic.as_str(), Bytes::from(v)))
                .await
                .map_err(|e| e.to_string())?;
        }
        prod.flush().await;
        Ok::<(), String>(())
    }));
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    let stall = Duration::from_secs(b.client.timeout);
    let mut last_progress = Instant::now();
    let mut received = 0u64;
    while received < b.count {
        let batch = consumer
            .poll(Duration::from_millis(200))
            .await
            .map_err(|e| e.to_string())?;
        let now_ns = start.elapsed().as_nanos() as u64;
        for r in batch {
            let Some(v) = r.value.as_ref().filter(|v| v.len() >= 16) else {
                continue;
            };
            let field = |at: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&v[at..at + 8]);
                u64::from_le_bytes(a)
            };
            if field(0) != run_id {
                continue; // someone else's record
            }
            let us = now_ns.saturating_sub(field(8)) / 1000;
            hist.saturating_record(us.max(1));
            received += 1;
            last_progress = Instant::now();
        }
        if let Some(task) = sender.take_if(|t| t.is_finished()) {
            // Finished: a failure ends the run now rather than after the stall timeout.
            task.await.map_err(|e| format!("producer task: {e}"))??;
        }
        if sender.is_none() && last_progress.elapsed() >= stall {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    if let Some(task) = sender {
        task.await.map_err(|e| format!("producer task: {e}"))??;
    }
    producer.close().await;
    let _ = consumer.close().await;
    if received < b.count {
        return Err(format!(
            "received {received} of {} records within {}s of the last one",
            b.count,
            stall.as_secs()
        ));
    }
    let records_per_sec = received as f64 / secs;
    let mb_per_sec = received as f64 * size as f64 / secs / 1e6;
    if b.json {
        let out = serde_json::json!({
            "topic": b.topic,
            "records": received,
            "record_size": size,
            "bytes": received * size as u64,
            "seconds": round3(secs),
            "records_per_sec": round3(records_per_sec),
            "mb_per_sec": round3(mb_per_sec),
            "latency_ms": latency_json(&hist),
            "acks": b.acks,
            "linger_ms": b.linger_ms,
            "rate": b.rate,
        });
        println!("{out}");
    } else {
        println!(
            "{received} records produced and consumed, {records_per_sec:.1} records/sec ({mb_per_sec:.2} MB/sec), {:.2} ms avg end-to-end latency",
            hist.mean() / 1000.0
        );
        println!("{}", latency_line(&hist));
    }
    Ok(())
}
