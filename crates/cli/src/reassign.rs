//! `vltava topic reassign` and `vltava topic reassignments`: move partitions to other brokers
//! (AlterPartitionReassignments) and show the moves in progress; `vltava cluster
//! elect-leaders` (ElectLeaders).

use std::time::{Duration, Instant};

use vltava_client::error::codes;
use vltava_client::{Admin, Election, PartitionOutcome};

use crate::group::{Failure, table};

/// A replica list given as one argument (`2,3,4`), so that clap keeps it one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaList(pub Vec<i32>);

/// Parses a replica list: `2,3,4`.
pub fn parse_replicas(s: &str) -> Result<ReplicaList, String> {
    let ids: Result<Vec<i32>, _> = s.split(',').map(|p| p.trim().parse::<i32>()).collect();
    match ids {
        Ok(ids) if !ids.is_empty() && ids.iter().all(|i| *i >= 0) => Ok(ReplicaList(ids)),
        _ => Err(format!(
            "'{s}': expected broker ids separated by commas, e.g. 2,3,4"
        )),
    }
}

fn report(outcomes: Vec<PartitionOutcome>, done: &str) -> Result<usize, Failure> {
    let mut failed = Vec::new();
    let mut ok = 0;
    for (topic, partition, result) in outcomes {
        match result {
            Ok(()) => {
                ok += 1;
                println!("{topic}-{partition}: {done}");
            }
            Err(e) if e.code() == Some(codes::ELECTION_NOT_NEEDED) => {
                println!("{topic}-{partition}: no election needed");
            }
            Err(e) => failed.push(format!("{topic}-{partition}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(ok)
    } else {
        Err(Failure(failed.join("\n")))
    }
}

/// `vltava topic reassign TOPIC --partition P... (--replicas IDS | --cancel) [--wait]`.
pub async fn reassign(
    admin: &mut Admin,
    topic: &str,
    partitions: &[i32],
    target: Option<Vec<i32>>,
    wait: Option<Duration>,
) -> Result<(), Failure> {
    let moves: Vec<(String, i32, Option<Vec<i32>>)> = partitions
        .iter()
        .map(|p| (topic.to_string(), *p, target.clone()))
        .collect();
    let outcomes = admin.alter_partition_reassignments(&moves).await?;
    let what = match &target {
        Some(t) => format!("reassignment to {t:?} started"),
        None => "reassignment cancelled".to_string(),
    };
    report(outcomes, &what)?;
    let (Some(limit), Some(_)) = (wait, &target) else {
        return Ok(());
    };
    let filter = [(topic.to_string(), partitions.to_vec())];
    let deadline = Instant::now() + limit;
    loop {
        let ongoing = admin.list_partition_reassignments(Some(&filter)).await?;
        if ongoing.is_empty() {
            println!("reassignment complete");
            return Ok(());
        }
        if Instant::now() >= deadline {
            let left: Vec<String> = ongoing
                .iter()
                .map(|r| format!("{}-{} (adding {:?})", r.topic, r.partition, r.adding))
                .collect();
            return Err(Failure(format!(
                "still reassigning after {} s: {}",
                limit.as_secs(),
                left.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `vltava topic reassignments [TOPIC]`.
pub async fn list(admin: &mut Admin, topic: Option<&str>, json: bool) -> Result<(), Failure> {
    let mut ongoing = admin.list_partition_reassignments(None).await?;
    if let Some(t) = topic {
        ongoing.retain(|r| r.topic == t);
    }
    if json {
        let v: Vec<serde_json::Value> = ongoing
            .iter()
            .map(|r| {
                serde_json::json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "replicas": r.replicas,
                    "adding": r.adding,
                    "removing": r.removing,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if ongoing.is_empty() {
        println!("no reassignment in progress");
        return Ok(());
    }
    let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let rows: Vec<Vec<String>> = ongoing
        .iter()
        .map(|r| {
            vec![
                r.topic.clone(),
                r.partition.to_string(),
                ids(&r.replicas),
                ids(&r.adding),
                ids(&r.removing),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
            &rows
        )
    );
    Ok(())
}

/// `vltava cluster elect-leaders [--topic T [--partition P]...] [--unclean]`.
pub async fn elect_leaders(
    admin: &mut Admin,
    topic: Option<String>,
    partitions: Vec<i32>,
    unclean: bool,
) -> Result<(), Failure> {
    let election = if unclean {
        Election::Unclean
    } else {
        Election::Preferred
    };
    let wanted: Option<Vec<(String, Vec<i32>)>> = match topic {
        None => None,
        Some(t) => {
            let partitions = if partitions.is_empty() {
                let described = admin.describe_topics(std::slice::from_ref(&t)).await?;
                match described.into_iter().next() {
                    Some((_, Ok(m))) => m.partitions.iter().map(|p| p.partition).collect(),
                    Some((_, Err(e))) => return Err(Failure(e.to_string())),
                    None => return Err(Failure(format!("topic '{t}' does not exist"))),
                }
            } else {
                partitions
            };
            Some(vec![(t, partitions)])
        }
    };
    let outcomes = admin.elect_leaders(election, wanted.as_deref()).await?;
    let none = outcomes.is_empty();
    report(outcomes, "leader elected")?;
    if none {
        println!("no leader election needed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lists_parse_or_say_why() {
        assert_eq!(parse_replicas("2,3,4"), Ok(ReplicaList(vec![2, 3, 4])));
        assert_eq!(parse_replicas(" 1 , 2"), Ok(ReplicaList(vec![1, 2])));
        for bad in ["", "1,,2", "a", "-1,2"] {
            assert!(parse_replicas(bad).is_err(), "{bad}");
        }
    }
}
