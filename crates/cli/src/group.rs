//! `vltava group`: list, describe, reset offsets of and delete consumer groups.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use clap::{ArgGroup, Subcommand};
use vltava_client::error::codes;
use vltava_client::{
    Admin, ClientConfig, ClientError, GroupDescription, OffsetSpec, PartitionOffset, TopicPartition,
};

use crate::timestamp::parse_timestamp_ms;

/// Connection flags shared by the client commands.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Broker(s) to bootstrap from.
    #[arg(
        long,
        global = true,
        env = "VLTAVA_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT[,HOST:PORT]",
        value_parser = parse_bootstrap
    )]
    pub bootstrap_server: String,
    /// Seconds to wait for a connection or for each response.
    #[arg(
        long,
        global = true,
        default_value_t = 30,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: u64,
}

impl ClientArgs {
    /// An admin client on these flags.
    pub async fn admin(&self) -> Result<Admin, Failure> {
        let mut config = ClientConfig::new(&self.bootstrap_server)?;
        config.connection.connect_timeout = Duration::from_secs(self.timeout);
        config.connection.request_timeout = Duration::from_secs(self.timeout);
        config.connection.client_id = "vltava-cli".to_string();
        Ok(Admin::connect(config).await?)
    }
}

fn parse_bootstrap(s: &str) -> Result<String, String> {
    vltava_client::cluster::parse_bootstrap(s)
        .map(|_| s.to_string())
        .map_err(|_| format!("'{s}': expected HOST:PORT[,HOST:PORT...]"))
}

/// `vltava group ...`.
#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List groups: name, state, protocol type.
    List {
        /// Only groups in this state (Empty, Stable, PreparingRebalance, CompletingRebalance,
        /// Dead); repeatable or comma-separated.
        #[arg(long = "state", value_name = "STATE", value_delimiter = ',', value_parser = parse_state)]
        states: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a group's state, members and, per partition, committed offset, log end and lag.
    Describe {
        /// Group id.
        group: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a group's committed offsets (only while the group has no active members).
    ResetOffsets(ResetArgs),
    /// Delete groups and their committed offsets (only groups without active members).
    Delete {
        /// Group ids.
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .multiple(false)
        .args(["to_earliest", "to_latest", "to_offset", "to_datetime"])
))]
struct ResetArgs {
    /// Group id.
    group: String,
    /// Topic to reset, all partitions or the listed ones (repeatable).
    #[arg(long = "topic", required = true, value_name = "TOPIC[:P,P...]", value_parser = parse_topic_spec)]
    topics: Vec<TopicSpec>,
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// To this offset (kept within the log start and end offsets).
    #[arg(long, value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..))]
    to_offset: Option<i64>,
    /// To the first offset at or after this time: RFC 3339 (2026-11-27T12:00:00Z) or epoch ms;
    /// partitions with nothing that recent go to their log end.
    #[arg(long, value_name = "TIMESTAMP", value_parser = parse_timestamp_ms)]
    to_datetime: Option<i64>,
    /// Print the new offsets without committing them.
    #[arg(long)]
    dry_run: bool,
}

/// `--topic t` or `--topic t:0,2`.
#[derive(Debug, Clone)]
struct TopicSpec {
    topic: String,
    partitions: Option<Vec<i32>>,
}

fn parse_topic_spec(s: &str) -> Result<TopicSpec, String> {
    let (topic, parts) = match s.split_once(':') {
        None => (s, None),
        Some((t, p)) => {
            let parts: Result<Vec<i32>, _> = p
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<i32>()
                        .map_err(|_| ())
                        .and_then(|n| if n >= 0 { Ok(n) } else { Err(()) })
                })
                .collect();
            let parts = parts
                .map_err(|_| format!("'{s}': expected TOPIC or TOPIC:PARTITION[,PARTITION...]"))?;
            (t, Some(parts))
        }
    };
    if topic.is_empty() {
        return Err(format!("'{s}': empty topic name"));
    }
    Ok(TopicSpec {
        topic: topic.to_string(),
        partitions: parts,
    })
}

const STATES: [&str; 5] = [
    "Empty",
    "Stable",
    "PreparingRebalance",
    "CompletingRebalance",
    "Dead",
];

fn parse_state(s: &str) -> Result<String, String> {
    STATES
        .iter()
        .find(|k| k.eq_ignore_ascii_case(s.trim()))
        .map(|k| k.to_string())
        .ok_or_else(|| format!("'{s}': expected one of {}", STATES.join(", ")))
}

/// A failure with its one-line message (printed as `error: <message>`, exit code 1).
pub struct Failure(pub String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(e.to_string())
    }
}

/// Runs a `vltava group` command.
pub async fn run(args: GroupArgs) -> Result<(), Failure> {
    let mut admin = args.client.admin().await?;
    match args.command {
        GroupCommand::List { states, json } => list(&mut admin, &states, json).await,
        GroupCommand::Describe { group, json } => describe(&mut admin, &group, json).await,
        GroupCommand::ResetOffsets(r) => reset_offsets(&mut admin, r).await,
        GroupCommand::Delete { groups } => delete(&mut admin, &groups).await,
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(c.chars().count()) + 2;
                l.push_str(c);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

async fn list(admin: &mut Admin, states: &[String], json: bool) -> Result<(), Failure> {
    let groups = admin.list_groups(states).await?;
    if json {
        let v: Vec<serde_json::Value> = groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "group": g.group_id,
                    "state": g.state,
                    "protocol_type": g.protocol_type,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if groups.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group_id.clone(),
                g.state.clone().unwrap_or_else(|| "-".into()),
                dash(&g.protocol_type),
            ]
        })
        .collect();
    print!("{}", table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows));
    Ok(())
}

async fn describe_one(admin: &mut Admin, group: &str) -> Result<GroupDescription, Failure> {
    let mut d = admin.describe_groups(&[group.to_string()]).await?;
    match d.pop() {
        Some((_, r)) => Ok(r?),
        None => Err(Failure(format!("no description of group '{group}'"))),
    }
}

/// A member's assigned partitions per topic.
type Assigned = Vec<(String, Vec<i32>)>;

/// One row of the describe table.
struct PartitionRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: Option<i64>,
    consumer: Option<String>,
}

impl PartitionRow {
    fn lag(&self) -> Option<i64> {
        Some((self.log_end? - self.committed?).max(0))
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

async fn describe(admin: &mut Admin, group: &str, json: bool) -> Result<(), Failure> {
    let d = describe_one(admin, group).await?;
    let committed = admin.list_group_offsets(group).await?;
    if d.state == "Dead" && d.members.is_empty() && committed.is_empty() {
        return Err(Failure(format!("group '{group}' does not exist")));
    }
    // Partitions: those with a committed offset and those assigned to a member.
    let mut rows: BTreeMap<(String, i32), PartitionRow> = BTreeMap::new();
    let new_row = |t: &str, p: i32| PartitionRow {
        topic: t.to_string(),
        partition: p,
        committed: None,
        log_end: None,
        consumer: None,
    };
    for c in &committed {
        rows.entry((c.topic.clone(), c.partition))
            .or_insert_with(|| new_row(&c.topic, c.partition))
            .committed = Some(c.offset);
    }
    let consumer_protocol = d.protocol_type == "consumer" || d.protocol_type.is_empty();
    let mut assignments: Vec<Result<Assigned, String>> = Vec::new();
    for m in &d.members {
        if !consumer_protocol {
            assignments.push(Err(format!("({} protocol)", d.protocol_type)));
            continue;
        }
        match m.consumer_assignment() {
            Ok(a) => {
                for (t, ps) in &a.partitions {
                    for p in ps {
                        rows.entry((t.clone(), *p))
                            .or_insert_with(|| new_row(t, *p))
                            .consumer = Some(m.member_id.clone());
                    }
                }
                assignments.push(Ok(a.partitions));
            }
            Err(e) => assignments.push(Err(format!("({e})"))),
        }
    }
    // Log end offsets, for the topics that still exist.
    let topics: Vec<String> = rows
        .keys()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut existing: BTreeSet<(String, i32)> = BTreeSet::new();
    for (name, r) in admin.describe_topics(&topics).await? {
        if let Ok(t) = r {
            existing.extend(t.partitions.iter().map(|p| (name.clone(), p.partition)));
        }
    }
    let wanted: Vec<TopicPartition> = rows
        .keys()
        .filter(|k| existing.contains(*k))
        .map(|(t, p)| TopicPartition::new(t.clone(), *p))
        .collect();
    for o in admin.list_offsets(&wanted, OffsetSpec::Latest).await? {
        if let Some(r) = rows.get_mut(&(o.topic.clone(), o.partition)) {
            r.log_end = o.offset;
        }
    }

    if json {
        let members: Vec<serde_json::Value> = d
            .members
            .iter()
            .zip(&assignments)
            .map(|(m, a)| {
                let assignment = match a {
                    Ok(parts) => serde_json::json!(
                        parts
                            .iter()
                            .map(|(t, ps)| serde_json::json!({"topic": t, "partitions": ps}))
                            .collect::<Vec<_>>()
                    ),
                    Err(_) => serde_json::Value::Null,
                };
                serde_json::json!({
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "host": m.client_host,
                    "assignment": assignment,
                })
            })
            .collect();
        let offsets: Vec<serde_json::Value> = rows
            .values()
            .map(|r| {
                serde_json::json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "current_offset": r.committed,
                    "log_end_offset": r.log_end,
                    "lag": r.lag(),
                    "consumer_id": r.consumer,
                })
            })
            .collect();
        let v = serde_json::json!({
            "group": d.group_id,
            "state": d.state,
            "protocol_type": d.protocol_type,
            "protocol": d.protocol,
            "members": members,
            "offsets": offsets,
        });
        println!("{v}");
        return Ok(());
    }

    let protocol = match (d.protocol_type.is_empty(), d.protocol.is_empty()) {
        (true, _) => "-".to_string(),
        (false, true) => d.protocol_type.clone(),
        (false, false) => format!("{} ({})", d.protocol_type, d.protocol),
    };
    println!("GROUP     {}", d.group_id);
    println!("STATE     {}", d.state);
    println!("PROTOCOL  {protocol}");
    println!("MEMBERS   {}", d.members.len());
    if !d.members.is_empty() {
        let member_rows: Vec<Vec<String>> = d
            .members
            .iter()
            .zip(&assignments)
            .map(|(m, a)| {
                let assigned = match a {
                    Ok(parts) if parts.iter().all(|(_, p)| p.is_empty()) => "-".to_string(),
                    Ok(parts) => parts
                        .iter()
                        .filter(|(_, p)| !p.is_empty())
                        .map(|(t, ps)| {
                            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                            format!("{t}:{}", ps.join(","))
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    Err(e) => e.clone(),
                };
                vec![
                    m.member_id.clone(),
                    dash(&m.client_id),
                    dash(&m.client_host),
                    assigned,
                ]
            })
            .collect();
        println!();
        print!(
            "{}",
            table(
                &["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"],
                &member_rows
            )
        );
    }
    if !rows.is_empty() {
        let part_rows: Vec<Vec<String>> = rows
            .values()
            .map(|r| {
                vec![
                    r.topic.clone(),
                    r.partition.to_string(),
                    opt(r.committed),
                    opt(r.log_end),
                    opt(r.lag()),
                    r.consumer.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        println!();
        print!(
            "{}",
            table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "CONSUMER-ID"
                ],
                &part_rows
            )
        );
    }
    Ok(())
}

fn active_members(group: &str, what: &str) -> Failure {
    Failure(format!(
        "group '{group}' has active members; stop them before {what}"
    ))
}

async fn reset_offsets(admin: &mut Admin, args: ResetArgs) -> Result<(), Failure> {
    let group = args.group.as_str();
    let d = describe_one(admin, group).await?;
    if !d.is_inactive() {
        return Err(active_members(group, "resetting offsets"));
    }
    // Resolve the partitions.
    let names: Vec<String> = args
        .topics
        .iter()
        .map(|t| t.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut partitions: BTreeSet<TopicPartition> = BTreeSet::new();
    let described: BTreeMap<String, _> = admin.describe_topics(&names).await?.into_iter().collect();
    for spec in &args.topics {
        let t = match described.get(&spec.topic) {
            Some(Ok(t)) => t,
            Some(Err(ClientError::NotFound(_))) | None => {
                return Err(Failure(format!("topic '{}' does not exist", spec.topic)));
            }
            Some(Err(e)) => return Err(Failure(e.to_string())),
        };
        match &spec.partitions {
            None => partitions.extend(
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(spec.topic.clone(), p.partition)),
            ),
            Some(ps) => {
                for p in ps {
                    if !t.partitions.iter().any(|x| x.partition == *p) {
                        return Err(Failure(format!(
                            "topic '{}' has no partition {p}",
                            spec.topic
                        )));
                    }
                    partitions.insert(TopicPartition::new(spec.topic.clone(), *p));
                }
            }
        }
    }
    let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
    let earliest = offsets_by_partition(admin, &partitions, OffsetSpec::Earliest).await?;
    let latest = offsets_by_partition(admin, &partitions, OffsetSpec::Latest).await?;
    let by_time = match args.to_datetime {
        Some(ts) => {
            Some(offsets_by_partition(admin, &partitions, OffsetSpec::Timestamp(ts)).await?)
        }
        None => None,
    };
    let mut new_offsets = Vec::with_capacity(partitions.len());
    for tp in &partitions {
        let lo = earliest.get(tp).copied().flatten().unwrap_or(0);
        let hi = latest.get(tp).copied().flatten().unwrap_or(lo);
        let target = if args.to_earliest {
            lo
        } else if args.to_latest {
            hi
        } else if let Some(n) = args.to_offset {
            if n < lo {
                eprintln!(
                    "warning: {}-{}: offset {n} is below the log start offset; using {lo}",
                    tp.topic, tp.partition
                );
                lo
            } else if n > hi {
                eprintln!(
                    "warning: {}-{}: offset {n} is beyond the log end offset; using {hi}",
                    tp.topic, tp.partition
                );
                hi
            } else {
                n
            }
        } else {
            // --to-datetime: the first offset at or after the time, else the log end.
            by_time
                .as_ref()
                .and_then(|m| m.get(tp).copied().flatten())
                .unwrap_or(hi)
        };
        new_offsets.push(PartitionOffset {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: target,
        });
    }
    if !args.dry_run
        && let Err(e) = admin.commit_group_offsets(group, &new_offsets).await
    {
        return Err(match e.code() {
            Some(
                codes::UNKNOWN_MEMBER_ID | codes::ILLEGAL_GENERATION | codes::REBALANCE_IN_PROGRESS,
            ) => active_members(group, "resetting offsets"),
            _ => e.into(),
        });
    }
    let rows: Vec<Vec<String>> = new_offsets
        .iter()
        .map(|o| {
            vec![
                group.to_string(),
                o.topic.clone(),
                o.partition.to_string(),
                o.offset.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows)
    );
    if args.dry_run {
        eprintln!("dry run: offsets not committed");
    }
    Ok(())
}

async fn offsets_by_partition(
    admin: &mut Admin,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
) -> Result<BTreeMap<TopicPartition, Option<i64>>, Failure> {
    Ok(admin
        .list_offsets(partitions, spec)
        .await?
        .into_iter()
        .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
        .collect())
}

async fn delete(admin: &mut Admin, groups: &[String]) -> Result<(), Failure> {
    let results = admin.delete_groups(groups).await?;
    let mut failures = Vec::new();
    for (group, r) in results {
        match r {
            Ok(()) => println!("Deleted group '{group}'"),
            Err(e) => failures.push(match e.code() {
                Some(codes::NON_EMPTY_GROUP) => active_members(&group, "deleting it").0,
                Some(codes::GROUP_ID_NOT_FOUND) => format!("group '{group}' does not exist"),
                _ => e.to_string(),
            }),
        }
    }
    match failures.len() {
        0 => Ok(()),
        _ => {
            let last = failures.pop().unwrap_or_default();
            for f in failures {
                eprintln!("error: {f}");
            }
            Err(Failure(last))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_specs() {
        let t = parse_topic_spec("orders").ok();
        assert!(t.is_some_and(|t| t.topic == "orders" && t.partitions.is_none()));
        let t = parse_topic_spec("orders:0, 2").ok();
        assert!(t.is_some_and(|t| t.partitions == Some(vec![0, 2])));
        for bad in [":1", "t:", "t:x", "t:-1", "t:1,,2"] {
            assert!(parse_topic_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_are_case_insensitive() {
        assert_eq!(parse_state("empty"), Ok("Empty".into()));
        assert_eq!(
            parse_state("PREPARINGREBALANCE"),
            Ok("PreparingRebalance".into())
        );
        assert!(parse_state("Running").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "BB", "C"],
            &[vec!["xxx".into(), "y".into(), "z".into()]],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   z\n");
    }
}
