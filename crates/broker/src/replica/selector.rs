//! Fetch from the closest replica (KIP-392): which replica a leader tells a consumer to read
//! a partition from, as a pure function of the partition's replicas, its ISR, the followers'
//! fetch positions, the live brokers' racks and the consumer's `client.rack`.
//!
//! The rules are Kafka's `ReplicaManager.findPreferredReadReplica` with its
//! `RackAwareReplicaSelector`:
//! - only a consumer's fetch is redirected (a follower's never), and only by the leader;
//! - the candidates are the leader and the followers that are in the ISR, alive (registered
//!   and not fenced: a fenced broker has no endpoint to give), and whose last fetch position
//!   reaches the consumer's fetch offset;
//! - without a client rack, or with no candidate in the client's rack, or with the leader in
//!   it, the leader serves; otherwise the most caught-up candidate in that rack (largest log
//!   end, then the most recently caught up; ties to the lowest broker id);
//! - choosing the leader is "no preferred read replica": the fetch is served as usual.

use std::collections::BTreeMap;

/// The fully qualified name Kafka's clients and configs use for the rack-aware selector.
pub const RACK_AWARE_CLASS: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";

/// `replica.selector.class`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplicaSelector {
    /// No selector (Kafka's default): consumers read from the leader only.
    #[default]
    LeaderOnly,
    /// `RackAwareReplicaSelector`: a replica in the consumer's rack.
    RackAware,
}

impl ReplicaSelector {
    /// The setting's value: empty for none, the Kafka class name (or `RackAwareReplicaSelector`,
    /// `rack-aware`) for the rack-aware selector; `None` for anything else.
    pub fn parse(value: &str) -> Option<ReplicaSelector> {
        match value.trim() {
            "" => Some(ReplicaSelector::LeaderOnly),
            RACK_AWARE_CLASS | "RackAwareReplicaSelector" | "rack-aware" => {
                Some(ReplicaSelector::RackAware)
            }
            _ => None,
        }
    }

    /// Whether a selector is configured: then followers serve consumer fetches (Fetch v11+).
    pub fn is_configured(self) -> bool {
        self != ReplicaSelector::LeaderOnly
    }
}

/// A follower as the leader's replication state sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The fetch offset of its last fetch (its log end); `None` before its first fetch to
    /// this leader.
    pub log_end_offset: Option<u64>,
    /// When its log end last reached the leader's; `None`: not since this leader took over.
    pub last_caught_up_ms: Option<i64>,
}

/// One partition as the leader sees it when a consumer's fetch arrives.
#[derive(Debug, Clone)]
pub struct PartitionView<'a> {
    /// The leader (this broker).
    pub leader: i32,
    /// All replicas.
    pub replicas: &'a [i32],
    /// The in-sync replicas.
    pub isr: &'a [i32],
    /// Followers' fetch positions by broker id (missing: unknown).
    pub progress: &'a BTreeMap<i32, FollowerProgress>,
}

/// The read replica for a consumer fetch at `fetch_offset` from `client_rack`, or `None` to be
/// served by the leader. `alive` maps every live broker to its rack.
pub fn preferred_read_replica(
    selector: ReplicaSelector,
    partition: &PartitionView<'_>,
    alive: &BTreeMap<i32, Option<String>>,
    client_rack: Option<&str>,
    fetch_offset: i64,
    now_ms: i64,
) -> Option<i32> {
    if selector != ReplicaSelector::RackAware {
        return None;
    }
    let rack = client_rack.filter(|r| !r.is_empty())?;
    let in_rack = |id: i32| alive.get(&id).is_some_and(|r| r.as_deref() == Some(rack));
    if in_rack(partition.leader) {
        return None;
    }
    let fetch_offset = u64::try_from(fetch_offset).ok()?;
    partition
        .replicas
        .iter()
        .copied()
        .filter(|&id| id != partition.leader && partition.isr.contains(&id) && in_rack(id))
        .filter_map(|id| {
            let p = partition.progress.get(&id)?;
            let end = p.log_end_offset.filter(|&end| end >= fetch_offset)?;
            // Kafka's ReplicaView comparator: the larger log end, then the shorter time since
            // the replica was last caught up (never caught up counts as longest).
            let since = p
                .last_caught_up_ms
                .map_or(i64::MAX, |t| now_ms.saturating_sub(t).max(0));
            Some((end, std::cmp::Reverse(since), std::cmp::Reverse(id)))
        })
        .max()
        .map(|(_, _, std::cmp::Reverse(id))| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn racks(list: &[(i32, Option<&str>)]) -> BTreeMap<i32, Option<String>> {
        list.iter()
            .map(|(id, r)| (*id, r.map(str::to_string)))
            .collect()
    }

    fn progress(list: &[(i32, u64, i64)]) -> BTreeMap<i32, FollowerProgress> {
        list.iter()
            .map(|&(id, end, t)| {
                (
                    id,
                    FollowerProgress {
                        log_end_offset: Some(end),
                        last_caught_up_ms: Some(t),
                    },
                )
            })
            .collect()
    }

    const NOW: i64 = 10_000;

    fn pick(
        replicas: &[i32],
        isr: &[i32],
        alive: &BTreeMap<i32, Option<String>>,
        prog: &BTreeMap<i32, FollowerProgress>,
        rack: Option<&str>,
        offset: i64,
    ) -> Option<i32> {
        let view = PartitionView {
            leader: 1,
            replicas,
            isr,
            progress: prog,
        };
        preferred_read_replica(ReplicaSelector::RackAware, &view, alive, rack, offset, NOW)
    }

    #[test]
    fn settings() {
        assert_eq!(
            ReplicaSelector::parse(""),
            Some(ReplicaSelector::LeaderOnly)
        );
        assert_eq!(
            ReplicaSelector::parse(RACK_AWARE_CLASS),
            Some(ReplicaSelector::RackAware)
        );
        assert_eq!(
            ReplicaSelector::parse(" rack-aware "),
            Some(ReplicaSelector::RackAware)
        );
        assert_eq!(ReplicaSelector::parse("com.example.Mine"), None);
        assert!(!ReplicaSelector::LeaderOnly.is_configured());
        assert!(ReplicaSelector::RackAware.is_configured());
    }

    #[test]
    fn the_follower_in_the_clients_rack_is_chosen() {
        let alive = racks(&[(1, Some("r1")), (2, Some("r2")), (3, Some("r3"))]);
        let prog = progress(&[(2, 100, NOW), (3, 100, NOW)]);
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &prog, Some("r2"), 50),
            Some(2)
        );
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &prog, Some("r3"), 100),
            Some(3)
        );
    }

    #[test]
    fn the_leader_serves_without_a_selector_a_rack_or_a_match() {
        let alive = racks(&[(1, Some("r1")), (2, Some("r2")), (3, Some("r3"))]);
        let prog = progress(&[(2, 100, NOW), (3, 100, NOW)]);
        let view = PartitionView {
            leader: 1,
            replicas: &[1, 2, 3],
            isr: &[1, 2, 3],
            progress: &prog,
        };
        let none = ReplicaSelector::LeaderOnly;
        assert_eq!(
            preferred_read_replica(none, &view, &alive, Some("r2"), 0, NOW),
            None
        );
        // No client rack (absent or empty), or a rack no replica is in.
        assert_eq!(pick(&[1, 2, 3], &[1, 2, 3], &alive, &prog, None, 0), None);
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &prog, Some(""), 0),
            None
        );
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &prog, Some("r9"), 0),
            None
        );
        // The leader is in the client's rack: it serves, even with a follower there too.
        let shared = racks(&[(1, Some("r2")), (2, Some("r2")), (3, Some("r3"))]);
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &shared, &prog, Some("r2"), 0),
            None
        );
        // Brokers without a rack match no client rack.
        let rackless = racks(&[(1, None), (2, None), (3, None)]);
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &rackless, &prog, Some("r2"), 0),
            None
        );
    }

    #[test]
    fn only_live_in_sync_followers_that_hold_the_offset_are_candidates() {
        let alive = racks(&[(1, Some("r1")), (2, Some("r2")), (3, Some("r3"))]);
        let prog = progress(&[(2, 100, NOW), (3, 100, NOW)]);
        // Out of the ISR.
        assert_eq!(
            pick(&[1, 2, 3], &[1, 3], &alive, &prog, Some("r2"), 0),
            None
        );
        // Fenced or unregistered: not among the live brokers.
        let without_2 = racks(&[(1, Some("r1")), (3, Some("r3"))]);
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &without_2, &prog, Some("r2"), 0),
            None
        );
        // Not a replica of the partition at all, though in the rack.
        let four = racks(&[(1, Some("r1")), (3, Some("r3")), (4, Some("r2"))]);
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &four, &prog, Some("r2"), 0),
            None
        );
        // Its log ends before the fetch offset, or it has not fetched from this leader yet.
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &prog, Some("r2"), 101),
            None
        );
        let mut unknown = prog.clone();
        unknown.remove(&2);
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &unknown, Some("r2"), 0),
            None
        );
        unknown.insert(
            2,
            FollowerProgress {
                log_end_offset: None,
                last_caught_up_ms: None,
            },
        );
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &unknown, Some("r2"), 0),
            None
        );
        // A negative fetch offset is the leader's to answer (OFFSET_OUT_OF_RANGE).
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &prog, Some("r2"), -1),
            None
        );
    }

    #[test]
    fn the_most_caught_up_follower_of_the_rack_wins() {
        let alive = racks(&[
            (1, Some("r1")),
            (2, Some("r2")),
            (3, Some("r2")),
            (4, Some("r2")),
        ]);
        let replicas = [1, 2, 3, 4];
        // The larger log end first.
        let prog = progress(&[(2, 90, NOW), (3, 100, NOW - 500), (4, 95, NOW)]);
        assert_eq!(
            pick(&replicas, &replicas, &alive, &prog, Some("r2"), 10),
            Some(3)
        );
        // Equal log ends: the one caught up most recently.
        let prog = progress(&[
            (2, 100, NOW - 300),
            (3, 100, NOW - 500),
            (4, 100, NOW - 100),
        ]);
        assert_eq!(
            pick(&replicas, &replicas, &alive, &prog, Some("r2"), 10),
            Some(4)
        );
        // A full tie: the lowest broker id, so that the answer is stable.
        let prog = progress(&[(2, 100, NOW), (3, 100, NOW), (4, 100, NOW)]);
        assert_eq!(
            pick(&replicas, &replicas, &alive, &prog, Some("r2"), 10),
            Some(2)
        );
        // Never caught up counts as the longest ago.
        let mut prog = progress(&[(3, 100, NOW - 5_000)]);
        prog.insert(
            2,
            FollowerProgress {
                log_end_offset: Some(100),
                last_caught_up_ms: None,
            },
        );
        assert_eq!(
            pick(&[1, 2, 3], &[1, 2, 3], &alive, &prog, Some("r2"), 10),
            Some(3)
        );
    }
}
