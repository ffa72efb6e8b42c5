//! `vltava topic`: create, list, describe, alter and delete topics; reassign partitions.

use std::fmt::Write as _;

use clap::{ArgGroup, Subcommand};
use vltava_client::error::codes;
use vltava_client::{Admin, ClientError, NewTopic, OffsetSpec, TopicMetadata, TopicPartition};

use crate::group::{ClientArgs, Failure};

/// `vltava topic ...`.
#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        topic: String,
        /// Partition count (default: the broker's num.partitions).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(long, value_name = "R", value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: Option<i16>,
        /// A topic setting, e.g. --config retention.ms=60000 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
    },
    /// List topics (internal ones with --internal).
    List {
        /// Include internal topics (__consumer_offsets).
        #[arg(long)]
        internal: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a topic's partitions (leader, replicas, ISR, log start and end offsets) and its
    /// settings that differ from the defaults.
    Describe {
        /// Topic name.
        topic: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a topic: raise its partition count, set or remove settings.
    Alter(AlterArgs),
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        topic: String,
    },
    /// Move partitions to other brokers: the new replicas copy the log, and once they are in
    /// sync leadership moves and the old replicas are removed (or --cancel a move).
    #[command(group(ArgGroup::new("target").required(true).args(["replicas", "cancel"])))]
    Reassign {
        /// Topic name.
        topic: String,
        /// A partition to move (repeatable).
        #[arg(long, value_name = "P", required = true, value_parser = clap::value_parser!(i32).range(0..))]
        partition: Vec<i32>,
        /// The target replicas, preferred leader first, e.g. 2,3,4.
        #[arg(long, value_name = "IDS", value_parser = crate::reassign::parse_replicas)]
        replicas: Option<crate::reassign::ReplicaList>,
        /// Cancel the partitions' reassignment in progress.
        #[arg(long)]
        cancel: bool,
        /// Wait up to this many seconds for the reassignment to complete.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        wait: Option<u64>,
    },
    /// The reassignments in progress.
    Reassignments {
        /// Only this topic's.
        topic: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["partitions", "configs", "delete_configs"])
))]
struct AlterArgs {
    /// Topic name.
    topic: String,
    /// New (larger) partition count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Set a setting, e.g. --config retention.ms=60000 (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_kv)]
    configs: Vec<(String, String)>,
    /// Remove a setting, back to its default (repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    delete_configs: Vec<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{s}': expected KEY=VALUE")),
    }
}

/// Runs a `vltava topic` command.
pub async fn run(args: TopicArgs) -> Result<(), Failure> {
    let mut admin = args.client.admin().await?;
    match args.command {
        TopicCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            create(
                &mut admin,
                NewTopic {
                    name: topic,
                    partitions: partitions.unwrap_or(-1),
                    replication_factor: replication_factor.unwrap_or(-1),
                    configs,
                },
            )
            .await
        }
        TopicCommand::List { internal, json } => list(&mut admin, internal, json).await,
        TopicCommand::Describe { topic, json } => describe(&mut admin, &topic, json).await,
        TopicCommand::Alter(a) => alter(&mut admin, a).await,
        TopicCommand::Delete { topic } => delete(&mut admin, &topic).await,
        TopicCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel: _,
            wait,
        } => {
            crate::reassign::reassign(
                &mut admin,
                &topic,
                &partition,
                replicas.map(|r| r.0),
                wait.map(std::time::Duration::from_secs),
            )
            .await
        }
        TopicCommand::Reassignments { topic, json } => {
            crate::reassign::list(&mut admin, topic.as_deref(), json).await
        }
    }
}

fn not_found(topic: &str) -> Failure {
    Failure(format!("topic '{topic}' does not exist"))
}

/// The one result of a single-item admin call, with unknown topics named plainly.
fn single(topic: &str, r: Vec<(String, vltava_client::Result<()>)>) -> Result<(), Failure> {
    match r.into_iter().next() {
        None => Err(Failure(format!("no result for topic '{topic}'"))),
        Some((_, Ok(()))) => Ok(()),
        Some((_, Err(e))) => Err(match e.code() {
            Some(codes::UNKNOWN_TOPIC_OR_PARTITION) => not_found(topic),
            Some(codes::TOPIC_ALREADY_EXISTS) => Failure(format!("topic '{topic}' already exists")),
            _ => Failure(e.to_string()),
        }),
    }
}

async fn create(admin: &mut Admin, topic: NewTopic) -> Result<(), Failure> {
    let name = topic.name.clone();
    let r = admin.create_topics(&[topic], false).await?;
    single(&name, r)?;
    println!("created topic '{name}'");
    Ok(())
}

async fn list(admin: &mut Admin, internal: bool, json: bool) -> Result<(), Failure> {
    let topics: Vec<TopicMetadata> = admin
        .list_topics()
        .await?
        .into_iter()
        .filter(|t| internal || !t.internal)
        .collect();
    if json {
        let v: Vec<serde_json::Value> = topics
            .iter()
            .map(|t| {
                serde_json::json!({
                    "topic": t.name,
                    "partitions": t.partitions.len(),
                    "internal": t.internal,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    for t in &topics {
        println!("{}", t.name);
    }
    Ok(())
}

/// Metadata of one topic, or "does not exist".
async fn topic_metadata(admin: &mut Admin, topic: &str) -> Result<TopicMetadata, Failure> {
    let mut d = admin.describe_topics(&[topic.to_string()]).await?;
    match d.pop() {
        Some((_, Ok(t))) => Ok(t),
        Some((_, Err(ClientError::NotFound(_)))) => Err(not_found(topic)),
        Some((_, Err(e))) => Err(Failure(e.to_string())),
        None => Err(not_found(topic)),
    }
}

fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

async fn describe(admin: &mut Admin, topic: &str, json: bool) -> Result<(), Failure> {
    let t = topic_metadata(admin, topic).await?;
    // An offline partition (no leader) has no one to ask for its offsets: it is shown with
    // leader -1 and "-" offsets instead of failing the whole description.
    let tps: Vec<TopicPartition> = t
        .partitions
        .iter()
        .filter(|p| p.leader >= 0)
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect();
    let starts = admin.list_offsets(&tps, OffsetSpec::Earliest).await?;
    let ends = admin.list_offsets(&tps, OffsetSpec::Latest).await?;
    let offset_of = |list: &[vltava_client::ListedOffset], p: i32| {
        list.iter()
            .find(|o| o.partition == p)
            .and_then(|o| o.offset)
    };
    let configs: Vec<(String, String)> = admin
        .describe_configs(topic)
        .await?
        .into_iter()
        .filter(|c| !c.is_default)
        .map(|c| (c.name, c.value.unwrap_or_default()))
        .collect();
    let replication = t.partitions.first().map_or(0, |p| p.replicas.len());
    if json {
        let parts: Vec<serde_json::Value> = t
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "partition": p.partition,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "log_start_offset": offset_of(&starts, p.partition),
                    "log_end_offset": offset_of(&ends, p.partition),
                })
            })
            .collect();
        let cfg: serde_json::Map<String, serde_json::Value> = configs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let v = serde_json::json!({
            "topic": t.name,
            "topic_id": t.topic_id.to_string(),
            "internal": t.internal,
            "replication_factor": replication,
            "partitions": parts,
            "configs": cfg,
        });
        println!("{v}");
        return Ok(());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Topic: {}  Id: {}  Partitions: {}  ReplicationFactor: {}",
        t.name,
        t.topic_id,
        t.partitions.len(),
        replication
    );
    let cfg: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "Configs: {}",
        if cfg.is_empty() {
            "-".to_string()
        } else {
            cfg.join(",")
        }
    );
    let rows: Vec<[String; 6]> = t
        .partitions
        .iter()
        .map(|p| {
            let off = |list: &[vltava_client::ListedOffset]| {
                offset_of(list, p.partition).map_or_else(|| "-".into(), |o| o.to_string())
            };
            [
                p.partition.to_string(),
                p.leader.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                off(&starts),
                off(&ends),
            ]
        })
        .collect();
    let header = [
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "LOG-START-OFFSET",
        "LOG-END-OFFSET",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
    print!("{out}");
    Ok(())
}

async fn alter(admin: &mut Admin, a: AlterArgs) -> Result<(), Failure> {
    let t = topic_metadata(admin, &a.topic).await?;
    if let Some(n) = a.partitions {
        let current = t.partitions.len();
        if usize::try_from(n).unwrap_or(0) < current {
            return Err(Failure(format!(
                "topic '{}' has {current} partitions; the count can only grow",
                a.topic
            )));
        }
        if usize::try_from(n).unwrap_or(0) > current {
            let r = admin.create_partitions(&[(a.topic.clone(), n)]).await?;
            single(&a.topic, r)?;
        }
    }
    if !a.configs.is_empty() || !a.delete_configs.is_empty() {
        admin
            .alter_topic_configs(&a.topic, &a.configs, &a.delete_configs)
            .await
            .map_err(|e| match e {
                ClientError::NotFound(_) => not_found(&a.topic),
                e => Failure(e.to_string()),
            })?;
    }
    println!("altered topic '{}'", a.topic);
    Ok(())
}

async fn delete(admin: &mut Admin, topic: &str) -> Result<(), Failure> {
    let r = admin.delete_topics(&[topic.to_string()]).await?;
    single(topic, r)?;
    println!("deleted topic '{topic}'");
    Ok(())
}
