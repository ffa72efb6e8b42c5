//! `vltava consume`: read a topic with the native consumer and print its records.
//!
//! Without `--group` every partition (or the one `--partition` names) is assigned and read
//! from the log end, the log start (`--from-beginning`), an offset (`--offset`, kept within
//! the log) or a time (`--from-timestamp`). With `--group` the consumer joins that group,
//! reads the partitions the group assigns it, starts at the group's committed offsets
//! (`--from-beginning` only decides where partitions without one start) and commits as it
//! goes. With `--pattern REGEX --group G` it subscribes to every topic whose whole name
//! matches (internal topics excepted) and follows topics created or deleted later, at each
//! metadata refresh. It stops after `--count` records or at SIGINT/SIGTERM, leaving the
//! group cleanly.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::ValueEnum;
use vltava_client::consumer::{ConsumerRecord, TopicPattern};
use vltava_client::{
    ClientConfig, ClientError, Consumer, ConsumerConfig, OffsetSpec, TopicPartition,
};

use crate::group::{ClientArgs, Failure};
use crate::timestamp::parse_timestamp_ms;

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value, one per line (`null` for a null value).
    Value,
    /// Key, a tab, then the value.
    Kv,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    /// Keys and values are strings when they are UTF-8, `{"base64": "..."}` otherwise, null
    /// when absent; headers are `[{"key": ..., "value": ...}]` in the order written.
    Json,
}

/// `vltava consume ...`.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("start")
        .multiple(false)
        .args(["from_beginning", "offset", "from_timestamp"])
))]
pub struct ConsumeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic to read.
    #[arg(required_unless_present = "pattern", conflicts_with = "pattern")]
    topic: Option<String>,
    /// Read every topic whose whole name matches this regular expression (internal topics
    /// excepted) as a member of --group; topics created or deleted later are followed at the
    /// next metadata refresh (metadata.max.age.ms, default 5 min; e.g. --set
    /// metadata.max.age.ms=1000).
    #[arg(long, value_name = "REGEX", requires = "group", value_parser = parse_pattern)]
    pattern: Option<String>,
    /// Start at the log start (with --group: where the group has no committed offset).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset (kept within the log start and end offsets).
    #[arg(long, value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..), conflicts_with = "group")]
    offset: Option<i64>,
    /// Start at the first record at or after this time: RFC 3339 or epoch ms.
    #[arg(long, value_name = "TIMESTAMP", value_parser = parse_timestamp_ms, conflicts_with = "group")]
    from_timestamp: Option<i64>,
    /// Read only this partition (default: all of them).
    #[arg(long, value_name = "PARTITION", value_parser = clap::value_parser!(i32).range(0..), conflicts_with = "group")]
    partition: Option<i32>,
    /// Read as a member of this consumer group (partitions assigned by the group, offsets
    /// committed).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Exit after printing this many records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Value)]
    format: Format,
    /// Set a consumer setting by its Kafka name, e.g. --set session.timeout.ms=10000
    /// (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Checks the pattern while parsing arguments, so a bad one is a usage error (exit 2).
fn parse_pattern(s: &str) -> Result<String, String> {
    TopicPattern::new(s)
        .map(|_| s.to_string())
        .map_err(|e| match e {
            ClientError::InvalidArgument(m) => m,
            other => other.to_string(),
        })
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON string literal for `s`, escaped.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str cannot fail; the fallback keeps the output valid JSON regardless.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Bytes as JSON: a string when UTF-8, `{"base64": ...}` otherwise, null when absent.
fn json_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(b"null"),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => json_str(out, s),
            Err(_) => {
                out.extend_from_slice(b"{\"base64\":\"");
                out.extend_from_slice(base64(b).as_bytes());
                out.extend_from_slice(b"\"}");
            }
        },
    }
}

/// One record as a JSON object (written directly: this is the hot path of `--format json`).
fn render_json(out: &mut Vec<u8>, r: &ConsumerRecord) {
    out.extend_from_slice(b"{\"topic\":");
    json_str(out, &r.topic);
    let _ = write!(
        out,
        ",\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":",
        r.partition, r.offset, r.timestamp
    );
    json_bytes(out, r.key.as_deref());
    out.extend_from_slice(b",\"value\":");
    json_bytes(out, r.value.as_deref());
    out.extend_from_slice(b",\"headers\":[");
    for (i, h) in r.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        json_str(out, &h.key);
        out.extend_from_slice(b",\"value\":");
        json_bytes(out, h.value.as_deref());
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// Appends one record to `out` in `format`.
fn render(out: &mut Vec<u8>, r: &ConsumerRecord, format: Format) {
    let raw = |out: &mut Vec<u8>, b: Option<&[u8]>| match b {
        None => out.extend_from_slice(b"null"),
        Some(b) => out.extend_from_slice(b),
    };
    match format {
        Format::Value => raw(out, r.value.as_deref()),
        Format::Kv => {
            raw(out, r.key.as_deref());
            out.push(b'\t');
            raw(out, r.value.as_deref());
        }
        Format::Json => render_json(out, r),
    }
    out.push(b'\n');
}

fn consumer_config(args: &ConsumeArgs) -> Result<ConsumerConfig, Failure> {
    let mut client = ClientConfig::new(&args.client.bootstrap_server)?;
    client.connection.connect_timeout = Duration::from_secs(args.client.timeout);
    client.connection.request_timeout = Duration::from_secs(args.client.timeout);
    client.connection.client_id = "vltava-consume".to_string();
    let mut config = ConsumerConfig::with_client(client);
    let reset = if args.from_beginning {
        "earliest"
    } else {
        "latest"
    };
    config.set("auto.offset.reset", reset)?;
    if let Some(g) = &args.group {
        if g.is_empty() {
            return Err(Failure("--group: empty group id".into()));
        }
        config.set("group.id", g)?;
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Failure(format!("--set expects KEY=VALUE, got '{kv}'")))?;
        config.set(k.trim(), v.trim())?;
    }
    config.validate()?;
    Ok(config)
}

/// The partitions of `topic` (all, or the one asked for); fails if they do not exist.
async fn partitions(
    consumer: &mut Consumer,
    topic: &str,
    partition: Option<i32>,
) -> Result<Vec<i32>, Failure> {
    let mut described = consumer
        .admin()
        .describe_topics(&[topic.to_string()])
        .await?;
    let t = match described.pop() {
        Some((_, Ok(t))) => t,
        Some((_, Err(ClientError::NotFound(_)))) | None => {
            return Err(Failure(format!("topic '{topic}' does not exist")));
        }
        Some((_, Err(e))) => return Err(e.into()),
    };
    let all: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
    match partition {
        None => Ok(all),
        Some(p) if all.contains(&p) => Ok(vec![p]),
        Some(p) => Err(Failure(format!("topic '{topic}' has no partition {p}"))),
    }
}

/// Positions the assigned partitions where the arguments say.
async fn start_positions(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    tps: &[TopicPartition],
) -> Result<(), Failure> {
    if args.from_beginning {
        consumer.seek_to_beginning(tps)?;
    } else if let Some(ts) = args.from_timestamp {
        consumer.seek_to_timestamp(tps, ts)?;
    } else if let Some(n) = args.offset {
        let lo = consumer
            .admin()
            .list_offsets(tps, OffsetSpec::Earliest)
            .await?;
        let hi = consumer
            .admin()
            .list_offsets(tps, OffsetSpec::Latest)
            .await?;
        for (tp, (lo, hi)) in tps.iter().zip(lo.iter().zip(hi.iter())) {
            let lo = lo.offset.unwrap_or(0);
            let hi = hi.offset.unwrap_or(lo);
            let at = if n < lo {
                eprintln!(
                    "warning: {}-{}: offset {n} is below the log start offset; starting at {lo}",
                    tp.topic, tp.partition
                );
                lo
            } else if n > hi {
                eprintln!(
                    "warning: {}-{}: offset {n} is beyond the log end offset; starting at {hi}",
                    tp.topic, tp.partition
                );
                hi
            } else {
                n
            };
            consumer.seek(tp, at)?;
        }
    } else {
        consumer.seek_to_end(tps)?;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs `vltava consume`.
pub async fn run(args: ConsumeArgs) -> Result<(), Failure> {
    let config = consumer_config(&args)?;
    let mut consumer = Consumer::new(config).await?;
    match (&args.pattern, &args.topic) {
        (Some(pattern), _) => consumer.subscribe_pattern(pattern)?,
        (None, Some(topic)) => {
            let tps: Vec<TopicPartition> = partitions(&mut consumer, topic, args.partition)
                .await?
                .into_iter()
                .map(|p| TopicPartition::new(topic.clone(), p))
                .collect();
            if args.group.is_some() {
                consumer.subscribe(std::slice::from_ref(topic))?;
            } else {
                consumer.assign(&tps)?;
                start_positions(&mut consumer, &args, &tps).await?;
            }
        }
        // clap requires one of the two.
        (None, None) => return Err(Failure("a topic or --pattern is required".into())),
    }
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut printed: u64 = 0;
    let mut stdout = std::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    let outcome: Result<(), Failure> = loop {
        if args.count.is_some_and(|n| printed >= n) {
            break Ok(());
        }
        let records = tokio::select! {
            r = consumer.poll(Duration::from_millis(500)) => r,
            _ = &mut signal => break Ok(()),
        };
        let records = match records {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        buf.clear();
        // Past --count: the first record not printed of each partition is where reading (and
        // the group's committed offset) should stand.
        let mut rewind: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for r in &records {
            if args.count.is_some_and(|n| printed >= n) {
                rewind
                    .entry((r.topic.to_string(), r.partition))
                    .or_insert(r.offset);
                continue;
            }
            render(&mut buf, r, args.format);
            printed += 1;
        }
        for ((topic, partition), offset) in rewind {
            consumer.seek(&TopicPartition::new(topic, partition), offset)?;
        }
        if buf.is_empty() {
            continue;
        }
        let written = stdout.write_all(&buf).and_then(|()| stdout.flush());
        if let Err(e) = written {
            // A closed pipe (`| head`) ends the run quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break Ok(());
            }
            break Err(Failure(format!("cannot write to stdout: {e}")));
        }
    };
    let closed = consumer.close().await;
    outcome?;
    closed.map_err(Failure::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vltava_client::consumer::{Header, TimestampType};

    #[derive(clap::Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        args: ConsumeArgs,
    }

    fn parse(argv: &[&str]) -> Result<ConsumeArgs, clap::Error> {
        use clap::Parser;
        Cmd::try_parse_from(std::iter::once("consume").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn pattern_arguments() {
        let a = parse(&["--pattern", "orders-.*", "--group", "g"]);
        assert!(a.is_ok_and(|a| a.pattern.as_deref() == Some("orders-.*") && a.topic.is_none()));
        for bad in [
            &["--pattern", "orders-(", "--group", "g"][..],
            &["--pattern", "orders-.*"],
            &["orders", "--pattern", "orders-.*", "--group", "g"],
            &["--pattern", "o.*", "--group", "g", "--partition", "1"],
            &["--group", "g"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_pattern("orders-("),
            Err("invalid topic pattern 'orders-(': unclosed group".to_string())
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn formats() {
        let r = ConsumerRecord {
            topic: Arc::from("t"),
            partition: 2,
            offset: 7,
            timestamp: 1000,
            timestamp_type: TimestampType::CreateTime,
            leader_epoch: 0,
            key: Some((&b"k"[..]).into()),
            value: Some(vec![0xff, 0x00].into()),
            headers: vec![Header {
                key: "h".into(),
                value: None,
            }],
        };
        let mut out = Vec::new();
        render(&mut out, &r, Format::Kv);
        assert_eq!(out, b"k\t\xff\x00\n");
        let mut out = Vec::new();
        render(&mut out, &r, Format::Json);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
        assert_eq!(v["partition"], 2);
        assert_eq!(v["offset"], 7);
        assert_eq!(v["key"], "k");
        assert_eq!(v["value"]["base64"], "/wA=");
        assert_eq!(v["headers"][0]["key"], "h");
        assert!(v["headers"][0]["value"].is_null());
    }
}
