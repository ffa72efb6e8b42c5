//! `vltava cluster`: `describe` shows the brokers (address, rack, state, broker epoch) and the
//! metadata quorum (leader, epoch, each voter's log end and lag); `add-controller` and
//! `remove-controller` change the quorum's voters on a running cluster; `elect-leaders` runs
//! preferred or unclean leader elections.

use clap::Subcommand;
use serde_json::json;
use vltava_client::{ClusterDescription, QuorumDescription, QuorumMember};

use crate::group::{ClientArgs, Failure, table};

/// `vltava cluster ...`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The brokers and the metadata quorum.
    Describe {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Make a running node a voter of the metadata quorum. Start it first with
    /// --controller-listen and --controller-quorum-bootstrap-servers (it joins as an observer);
    /// it is caught up before it counts.
    AddController {
        /// The node's id.
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i32).range(0..))]
        node_id: i32,
        /// The node's controller listener.
        #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
        controller_address: (String, u16),
    },
    /// Remove a voter from the metadata quorum; the node keeps following the metadata as an
    /// observer (and stays a broker).
    RemoveController {
        /// The voter's id.
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i32).range(0..))]
        node_id: i32,
    },
    /// Move leadership back to each partition's preferred replica where it is in sync (all
    /// partitions, or --topic's), or with --unclean elect any live replica of partitions that
    /// have no leader (this can lose acknowledged records).
    ElectLeaders {
        /// Only this topic's partitions.
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
        /// Only these partitions of --topic (repeatable).
        #[arg(long, value_name = "P", requires = "topic", value_parser = clap::value_parser!(i32).range(0..))]
        partition: Vec<i32>,
        /// Unclean election instead of preferred.
        #[arg(long)]
        unclean: bool,
    },
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| format!("'{s}': expected HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{s}': the port must be 1-65535"))?;
    Ok((host.to_string(), port))
}

/// Runs a `vltava cluster` command.
pub async fn run(args: ClusterArgs) -> Result<(), Failure> {
    let mut admin = args.client.admin().await?;
    match args.command {
        ClusterCommand::Describe { json } => {
            let cluster = admin.describe_cluster().await?;
            let quorum = admin.describe_quorum().await?;
            if json {
                println!("{}", to_json(&cluster, &quorum));
            } else {
                print!("{}", to_text(&cluster, &quorum));
            }
            Ok(())
        }
        ClusterCommand::AddController {
            node_id,
            controller_address: (host, port),
        } => {
            let timeout_ms =
                i32::try_from(args.client.timeout.saturating_mul(1000)).unwrap_or(i32::MAX);
            admin
                .add_raft_voter(node_id, &host, port, timeout_ms)
                .await?;
            println!("node {node_id} ({host}:{port}) is now a voter");
            Ok(())
        }
        ClusterCommand::RemoveController { node_id } => {
            admin.remove_raft_voter(node_id).await?;
            println!("node {node_id} is no longer a voter");
            Ok(())
        }
        ClusterCommand::ElectLeaders {
            topic,
            partition,
            unclean,
        } => crate::reassign::elect_leaders(&mut admin, topic, partition, unclean).await,
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn to_text(c: &ClusterDescription, q: &QuorumDescription) -> String {
    let brokers: Vec<Vec<String>> = c
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.node_id.to_string(),
                format!("{}:{}", b.host, b.port),
                or_dash(b.rack.as_deref()),
                or_dash(b.state.map(|s| s.name())),
                or_dash(b.broker_epoch),
            ]
        })
        .collect();
    let members = |ms: &[QuorumMember], leader: i32| -> Vec<Vec<String>> {
        ms.iter()
            .map(|m| {
                vec![
                    m.node_id.to_string(),
                    if m.node_id == leader {
                        "leader".to_string()
                    } else {
                        "follower".to_string()
                    },
                    if m.log_end_offset < 0 {
                        "-".to_string()
                    } else {
                        m.log_end_offset.to_string()
                    },
                    or_dash(m.lag),
                ]
            })
            .collect()
    };
    let mut out = format!("Cluster id: {}\n\nBrokers:\n", c.cluster_id);
    out.push_str(&table(
        &["ID", "ADDRESS", "RACK", "STATE", "BROKER EPOCH"],
        &brokers,
    ));
    out.push_str(&format!(
        "\nQuorum: leader {}, epoch {}, high watermark {}\n",
        q.leader_id, q.leader_epoch, q.high_watermark
    ));
    out.push_str(&table(
        &["VOTER", "ROLE", "LOG END OFFSET", "LAG"],
        &members(&q.voters, q.leader_id),
    ));
    if !q.observers.is_empty() {
        let observers: Vec<Vec<String>> = members(&q.observers, q.leader_id)
            .into_iter()
            .map(|mut r| {
                r[1] = "observer".to_string();
                r
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["OBSERVER", "ROLE", "LOG END OFFSET", "LAG"],
            &observers,
        ));
    }
    out
}

fn to_json(c: &ClusterDescription, q: &QuorumDescription) -> serde_json::Value {
    let member = |m: &QuorumMember| json!({"node_id": m.node_id, "log_end_offset": m.log_end_offset, "lag": m.lag});
    json!({
        "cluster_id": c.cluster_id,
        "controller_id": c.controller_id,
        "brokers": c.brokers.iter().map(|b| json!({
            "node_id": b.node_id,
            "host": b.host,
            "port": b.port,
            "rack": b.rack,
            "state": b.state.map(|s| s.name()),
            "broker_epoch": b.broker_epoch,
        })).collect::<Vec<_>>(),
        "quorum": {
            "leader_id": q.leader_id,
            "leader_epoch": q.leader_epoch,
            "high_watermark": q.high_watermark,
            "voters": q.voters.iter().map(member).collect::<Vec<_>>(),
            "observers": q.observers.iter().map(member).collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vltava_client::{BrokerDescription, BrokerState};

    #[test]
    fn controller_addresses_are_host_and_port() {
        assert_eq!(
            parse_host_port("127.0.0.1:9093"),
            Ok(("127.0.0.1".to_string(), 9093))
        );
        assert!(parse_host_port("127.0.0.1").is_err());
        assert!(parse_host_port(":9093").is_err());
        assert!(parse_host_port("h:0").is_err());
        assert!(parse_host_port("h:70000").is_err());
    }

    #[test]
    fn describes_brokers_and_quorum_as_tables() {
        let c = ClusterDescription {
            cluster_id: "abc".into(),
            controller_id: 1,
            brokers: vec![
                BrokerDescription {
                    node_id: 1,
                    host: "127.0.0.1".into(),
                    port: 9092,
                    rack: Some("r1".into()),
                    state: Some(BrokerState::Active),
                    broker_epoch: Some(7),
                },
                BrokerDescription {
                    node_id: 2,
                    host: "127.0.0.1".into(),
                    port: 9093,
                    rack: None,
                    state: Some(BrokerState::Fenced),
                    broker_epoch: Some(12),
                },
            ],
        };
        let q = QuorumDescription {
            leader_id: 1,
            leader_epoch: 3,
            high_watermark: 40,
            voters: vec![
                QuorumMember {
                    node_id: 1,
                    log_end_offset: 40,
                    lag: Some(0),
                },
                QuorumMember {
                    node_id: 2,
                    log_end_offset: -1,
                    lag: None,
                },
            ],
            observers: Vec::new(),
        };
        let text = to_text(&c, &q);
        assert!(
            text.contains("1   127.0.0.1:9092  r1    active  7"),
            "{text}"
        );
        assert!(
            text.contains("2   127.0.0.1:9093  -     fenced  12"),
            "{text}"
        );
        assert!(
            text.contains("Quorum: leader 1, epoch 3, high watermark 40"),
            "{text}"
        );
        assert!(
            text.contains("2      follower  -               -"),
            "{text}"
        );
        let j = to_json(&c, &q);
        assert_eq!(j["brokers"][1]["state"], "fenced");
        assert_eq!(j["quorum"]["voters"][0]["lag"], 0);
    }
}
