//! Replica placement for new partitions: which brokers hold each partition's replicas and which of
//! them is the preferred leader. Pure and deterministic.
//!
//! The rules, in order of priority: the replicas of one partition are on distinct brokers; they
//! cover as many racks as the replication factor allows (a partition survives the loss of a
//! rack); within the topic being placed, leaders per broker differ by at most one and replicas
//! are spread as evenly as the racks allow; ties go to the brokers that hold the least of the
//! rest of the cluster (so a broker that just joined fills up first), then to a rotation that
//! starts at a different broker for each topic.

use std::collections::{BTreeMap, BTreeSet};

/// A broker that may receive replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    /// The broker's id.
    pub id: i32,
    /// Its `broker.rack`, if set.
    pub rack: Option<String>,
}

/// How many leaders and replicas each broker already holds across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterLoad {
    /// Leaders per broker.
    pub leaders: BTreeMap<i32, usize>,
    /// Replicas per broker.
    pub replicas: BTreeMap<i32, usize>,
}

impl ClusterLoad {
    /// Counts a partition placed on `replicas` (first = leader).
    pub fn add(&mut self, replicas: &[i32]) {
        if let Some(leader) = replicas.first() {
            *self.leaders.entry(*leader).or_default() += 1;
        }
        for r in replicas {
            *self.replicas.entry(*r).or_default() += 1;
        }
    }
}

/// Why partitions cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer usable brokers than the replication factor.
    #[error(
        "the target replication factor of {replication_factor} cannot be reached because only {brokers} broker(s) are available"
    )]
    NotEnoughBrokers {
        /// The replication factor asked for.
        replication_factor: usize,
        /// The brokers available.
        brokers: usize,
    },
    /// A replication factor of zero.
    #[error("the replication factor must be at least 1")]
    ZeroReplicationFactor,
}

/// Places `partitions` new partitions of `replication_factor` replicas each. `rotation` picks
/// where ties start (e.g. a hash of the topic name). Returns one replica list per partition,
/// preferred leader first.
pub fn place(
    brokers: &[PlacementBroker],
    load: &ClusterLoad,
    partitions: usize,
    replication_factor: usize,
    rotation: u64,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if replication_factor == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    let mut brokers: Vec<&PlacementBroker> = brokers.iter().collect();
    brokers.sort_by_key(|b| b.id);
    brokers.dedup_by_key(|b| b.id);
    if brokers.len() < replication_factor {
        return Err(PlacementError::NotEnoughBrokers {
            replication_factor,
            brokers: brokers.len(),
        });
    }
    let n = brokers.len();
    let start = (rotation % n as u64) as usize;
    // A broker without a rack is a rack of its own: racks then simply do not constrain it.
    let rack_of = |i: usize| -> (bool, String) {
        match &brokers[i].rack {
            Some(r) => (true, r.clone()),
            None => (false, brokers[i].id.to_string()),
        }
    };
    let turn = |i: usize| (i + n - start) % n;
    let cluster_leaders = |i: usize| load.leaders.get(&brokers[i].id).copied().unwrap_or(0);
    let cluster_replicas = |i: usize| load.replicas.get(&brokers[i].id).copied().unwrap_or(0);

    let mut topic_leaders = vec![0usize; n];
    let mut topic_replicas = vec![0usize; n];
    // Replicas per rack within the topic, so that racks with more brokers take more replicas.
    let mut rack_replicas: BTreeMap<(bool, String), usize> = BTreeMap::new();
    let rack_sizes: BTreeMap<(bool, String), usize> = (0..n).fold(BTreeMap::new(), |mut m, i| {
        *m.entry(rack_of(i)).or_default() += 1;
        m
    });
    let mut out = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let leader = (0..n)
            .min_by_key(|&i| {
                (
                    topic_leaders[i],
                    topic_replicas[i],
                    cluster_leaders(i),
                    cluster_replicas(i),
                    (turn(i) + p) % n,
                )
            })
            .ok_or(PlacementError::NotEnoughBrokers {
                replication_factor,
                brokers: 0,
            })?;
        let mut chosen = vec![leader];
        let mut racks_used: BTreeSet<(bool, String)> = BTreeSet::from([rack_of(leader)]);
        while chosen.len() < replication_factor {
            let fresh_rack_left =
                (0..n).any(|i| !chosen.contains(&i) && !racks_used.contains(&rack_of(i)));
            let next = (0..n)
                .filter(|i| !chosen.contains(i))
                .filter(|i| !fresh_rack_left || !racks_used.contains(&rack_of(*i)))
                .min_by_key(|&i| {
                    let rack = rack_of(i);
                    // Replicas per broker of the rack so far, scaled to compare racks of
                    // different sizes without floating point.
                    let rack_fill = rack_replicas.get(&rack).copied().unwrap_or(0) * n
                        / rack_sizes.get(&rack).copied().unwrap_or(1);
                    (
                        rack_fill,
                        topic_replicas[i],
                        cluster_replicas(i),
                        (turn(i) + p + chosen.len()) % n,
                    )
                })
                .ok_or(PlacementError::NotEnoughBrokers {
                    replication_factor,
                    brokers: n,
                })?;
            racks_used.insert(rack_of(next));
            chosen.push(next);
        }
        topic_leaders[leader] += 1;
        for &i in &chosen {
            topic_replicas[i] += 1;
            *rack_replicas.entry(rack_of(i)).or_default() += 1;
        }
        out.push(chosen.into_iter().map(|i| brokers[i].id).collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| PlacementBroker {
                id: i as i32 + 1,
                rack: r.map(str::to_string),
            })
            .collect()
    }

    fn counts(placed: &[Vec<i32>]) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
        let mut load = ClusterLoad::default();
        for p in placed {
            load.add(p);
        }
        (load.leaders, load.replicas)
    }

    #[test]
    fn a_thousand_partitions_rf3_on_five_brokers_in_three_racks() {
        let b = brokers(&[Some("a"), Some("b"), Some("c"), Some("a"), Some("b")]);
        let placed = place(&b, &ClusterLoad::default(), 1000, 3, 7).expect("place");
        assert_eq!(placed.len(), 1000);
        for replicas in &placed {
            let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                3,
                "two replicas on one broker: {replicas:?}"
            );
            let racks: BTreeSet<&str> = replicas
                .iter()
                .map(|id| b[*id as usize - 1].rack.as_deref().unwrap_or(""))
                .collect();
            assert_eq!(racks.len(), 3, "a rack without a replica: {replicas:?}");
        }
        let (leaders, replicas) = counts(&placed);
        assert_eq!(leaders.len(), 5);
        let (lo, hi) = (leaders.values().min(), leaders.values().max());
        assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{leaders:?}");
        // Rack c has one broker: it holds a replica of every partition; racks a and b split
        // theirs evenly between their two brokers.
        assert_eq!(replicas[&3], 1000);
        for id in [1, 2, 4, 5] {
            assert_eq!(replicas[&id], 500, "{replicas:?}");
        }
    }

    #[test]
    fn without_racks_everything_is_even() {
        let b = brokers(&[None, None, None]);
        let placed = place(&b, &ClusterLoad::default(), 12, 1, 0).expect("place");
        let (leaders, _) = counts(&placed);
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![4, 4, 4]);
        let placed = place(&b, &ClusterLoad::default(), 30, 3, 5).expect("place");
        let (leaders, replicas) = counts(&placed);
        assert!(leaders.values().all(|&l| l == 10), "{leaders:?}");
        assert!(replicas.values().all(|&r| r == 30), "{replicas:?}");
    }

    #[test]
    fn small_topics_go_to_the_least_loaded_brokers() {
        let b = brokers(&[None, None, None, None]);
        let mut load = ClusterLoad::default();
        for _ in 0..10 {
            load.add(&[1]);
            load.add(&[2]);
            load.add(&[3]);
        }
        // Broker 4 just joined: the next single-partition topics land on it first.
        let placed = place(&b, &load, 1, 1, 0).expect("place");
        assert_eq!(placed, vec![vec![4]]);
        // Topic after topic, a rotation would spread single partitions; load does it here.
        let mut seen = BTreeSet::new();
        let mut load = ClusterLoad::default();
        for t in 0..4 {
            let placed = place(&b, &load, 1, 1, t).expect("place");
            load.add(&placed[0]);
            seen.insert(placed[0][0]);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn too_few_brokers_is_an_error() {
        let b = brokers(&[None, None]);
        assert_eq!(
            place(&b, &ClusterLoad::default(), 1, 3, 0),
            Err(PlacementError::NotEnoughBrokers {
                replication_factor: 3,
                brokers: 2
            })
        );
        assert_eq!(
            place(&b, &ClusterLoad::default(), 1, 0, 0),
            Err(PlacementError::ZeroReplicationFactor)
        );
    }
}
