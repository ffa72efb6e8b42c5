//! Partition assignors run by the group leader: `range` and `roundrobin`, with the Java
//! client's (and librdkafka's) exact results, so a group may mix this client with others and
//! whichever member leads assigns the same way; and `cooperative-sticky`, which balances the
//! partitions while leaving as many as it can with their current owners, then holds back
//! every partition that changes owner until its owner has revoked it (the incremental
//! cooperative protocol, KIP-429).
//!
//! Members are ordered as Java orders them: members with a group instance id first, by
//! instance id, then the others by member id.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::admin::TopicPartition;
use crate::consumer::config::AssignmentStrategy;

/// A member's subscription, as the leader received it in JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    /// Member id given by the coordinator.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Partitions the member says it owns (subscription v1+).
    pub owned_partitions: Vec<TopicPartition>,
    /// Generation in which the member got those partitions (subscription v2+), -1 if unknown.
    pub generation_id: i32,
}

/// Member id -> partitions, for every member (members that get nothing map to an empty list).
pub type GroupAssignment = BTreeMap<String, Vec<TopicPartition>>;

/// A leader-side partition assignor.
pub trait PartitionAssignor {
    /// Protocol name in JoinGroup (`range`, `roundrobin`).
    fn name(&self) -> &'static str;
    /// Assigns the partitions of `partitions_per_topic` (topic -> partition count; topics
    /// missing from it do not exist and are skipped) to `members`.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> GroupAssignment;
}

/// Java's `MemberInfo` order: instance ids first (by instance id), then member ids.
fn member_order(a: &MemberSubscription, b: &MemberSubscription) -> Ordering {
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    }
}

fn empty_assignment(members: &[MemberSubscription]) -> GroupAssignment {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

/// `range`: for each topic, the members subscribed to it (in member order) get consecutive
/// ranges of its partitions; the first `partitions % members` get one extra.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl PartitionAssignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> GroupAssignment {
        let mut out = empty_assignment(members);
        let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
        sorted.sort_by(|a, b| member_order(a, b));
        for (topic, &count) in partitions_per_topic {
            let subscribers: Vec<&&MemberSubscription> = sorted
                .iter()
                .filter(|m| m.topics.iter().any(|t| t == topic))
                .collect();
            if subscribers.is_empty() || count <= 0 {
                continue;
            }
            let n = subscribers.len() as i32;
            let per = count / n;
            let extra = count % n;
            for (i, m) in subscribers.iter().enumerate() {
                let i = i as i32;
                let start = per * i + i.min(extra);
                let len = per + i32::from(i < extra);
                if let Some(list) = out.get_mut(&m.member_id) {
                    list.extend(
                        (start..start + len).map(|p| TopicPartition::new(topic.clone(), p)),
                    );
                }
            }
        }
        out
    }
}

/// `roundrobin`: every partition of every subscribed topic, sorted by topic and partition, is
/// dealt to the members in member order, skipping members not subscribed to its topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl PartitionAssignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> GroupAssignment {
        let mut out = empty_assignment(members);
        let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
        sorted.sort_by(|a, b| member_order(a, b));
        if sorted.is_empty() {
            return out;
        }
        let topics: BTreeSet<&String> = members
            .iter()
            .flat_map(|m| m.topics.iter())
            .filter(|t| partitions_per_topic.contains_key(*t))
            .collect();
        let mut next = 0usize;
        for topic in topics {
            let count = partitions_per_topic.get(topic).copied().unwrap_or(0);
            for p in 0..count {
                // Someone is subscribed to `topic` (it came from a subscription), so this
                // finds a member within one turn.
                for _ in 0..sorted.len() {
                    let m = sorted[next % sorted.len()];
                    next = (next + 1) % sorted.len();
                    if m.topics.iter().any(|t| t == topic) {
                        if let Some(list) = out.get_mut(&m.member_id) {
                            list.push(TopicPartition::new(topic.clone(), p));
                        }
                        break;
                    }
                }
            }
        }
        out
    }
}

/// `cooperative-sticky`: a balanced assignment (member partition counts differ by at most
/// one where subscriptions allow) that keeps each member's valid owned partitions up to its
/// share; then every partition whose owner changes is left out, to be assigned in the
/// rebalance that follows once its owner has revoked it.
///
/// Owned partitions claimed by several members go to the claim with the highest generation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl CooperativeStickyAssignor {
    /// The sticky target assignment, before partitions changing owner are held back.
    pub fn sticky_assign(
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> GroupAssignment {
        let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
        sorted.sort_by(|a, b| member_order(a, b));
        let subscribes = |m: &MemberSubscription, topic: &str| m.topics.iter().any(|t| t == topic);
        let all: BTreeSet<TopicPartition> = partitions_per_topic
            .iter()
            .filter(|(t, _)| sorted.iter().any(|m| subscribes(m, t)))
            .flat_map(|(t, n)| (0..*n).map(move |p| TopicPartition::new(t.clone(), p)))
            .collect();
        let eligible: Vec<usize> = (0..sorted.len())
            .filter(|&i| all.iter().any(|tp| subscribes(sorted[i], &tp.topic)))
            .collect();
        let mut assigned: Vec<Vec<TopicPartition>> = vec![Vec::new(); sorted.len()];
        if !eligible.is_empty() {
            let owners = valid_owners(&sorted, &all);
            let min_quota = all.len() / eligible.len();
            let extra = all.len() % eligible.len();
            let max_quota = min_quota + usize::from(extra > 0);
            // Keep owned partitions up to the quota; only `extra` members may hold one more.
            let mut at_max = 0;
            for &i in &eligible {
                let mut mine: Vec<TopicPartition> = owners
                    .iter()
                    .filter(|(_, (o, _))| *o == i)
                    .map(|(tp, _)| tp.clone())
                    .collect();
                mine.truncate(max_quota);
                if mine.len() > min_quota {
                    if at_max < extra {
                        at_max += 1;
                    } else {
                        mine.truncate(min_quota);
                    }
                }
                assigned[i] = mine;
            }
            // The rest to the least loaded subscribed member.
            let taken: BTreeSet<TopicPartition> = assigned.iter().flatten().cloned().collect();
            for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
                let best = eligible
                    .iter()
                    .copied()
                    .filter(|&i| subscribes(sorted[i], &tp.topic))
                    .min_by_key(|&i| assigned[i].len());
                if let Some(i) = best {
                    assigned[i].push(tp.clone());
                }
            }
            rebalance(&sorted, &eligible, &owners, &mut assigned, all.len());
        }
        sorted
            .iter()
            .zip(assigned)
            .map(|(m, mut tps)| {
                tps.sort();
                (m.member_id.clone(), tps)
            })
            .collect()
    }
}

/// Valid ownership claims: partition -> (member index, generation). A claim is valid for an
/// existing partition of a topic the member subscribes to; the highest generation wins.
fn valid_owners(
    sorted: &[&MemberSubscription],
    all: &BTreeSet<TopicPartition>,
) -> BTreeMap<TopicPartition, (usize, i32)> {
    let mut owners: BTreeMap<TopicPartition, (usize, i32)> = BTreeMap::new();
    for (i, m) in sorted.iter().enumerate() {
        for tp in &m.owned_partitions {
            if !all.contains(tp) || !m.topics.contains(&tp.topic) {
                continue;
            }
            match owners.get(tp) {
                Some((_, g)) if *g >= m.generation_id => {}
                _ => {
                    owners.insert(tp.clone(), (i, m.generation_id));
                }
            }
        }
    }
    owners
}

/// Moves partitions from the most to the least loaded members while they differ by more than
/// one and a move is possible (different subscriptions can prevent it); prefers moving
/// partitions the giver did not own before.
fn rebalance(
    sorted: &[&MemberSubscription],
    eligible: &[usize],
    owners: &BTreeMap<TopicPartition, (usize, i32)>,
    assigned: &mut [Vec<TopicPartition>],
    bound: usize,
) {
    for _ in 0..bound {
        let mut by_load: Vec<usize> = eligible.to_vec();
        by_load.sort_by_key(|&i| (assigned[i].len(), i));
        let mut moved = false;
        'search: for &hi in by_load.iter().rev() {
            for &lo in &by_load {
                if assigned[hi].len() <= assigned[lo].len() + 1 {
                    break;
                }
                let candidate = |tp: &&TopicPartition| sorted[lo].topics.contains(&tp.topic);
                let pick = assigned[hi]
                    .iter()
                    .filter(candidate)
                    .find(|tp| owners.get(*tp).is_none_or(|(o, _)| *o != hi))
                    .or_else(|| assigned[hi].iter().rev().find(candidate))
                    .cloned();
                if let Some(tp) = pick {
                    assigned[hi].retain(|x| *x != tp);
                    assigned[lo].push(tp);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

impl PartitionAssignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> GroupAssignment {
        let mut target = Self::sticky_assign(partitions_per_topic, members);
        // Hold back partitions changing owner: the owner revokes them first.
        let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
        sorted.sort_by(|a, b| member_order(a, b));
        let all: BTreeSet<TopicPartition> = target.values().flatten().cloned().collect();
        let owners = valid_owners(&sorted, &all);
        for (member, tps) in target.iter_mut() {
            tps.retain(|tp| {
                owners
                    .get(tp)
                    .is_none_or(|(o, _)| sorted[*o].member_id == *member)
            });
        }
        target
    }
}

/// The assignor for a protocol name the coordinator chose, if this client has it.
pub fn assignor_for(name: &str) -> Option<Box<dyn PartitionAssignor + Send + Sync>> {
    match name {
        "range" => Some(Box::new(RangeAssignor)),
        "roundrobin" => Some(Box::new(RoundRobinAssignor)),
        "cooperative-sticky" => Some(Box::new(CooperativeStickyAssignor)),
        _ => None,
    }
}

/// The assignor of a configured strategy.
pub fn assignor_of(s: AssignmentStrategy) -> Box<dyn PartitionAssignor + Send + Sync> {
    match s {
        AssignmentStrategy::Range => Box::new(RangeAssignor),
        AssignmentStrategy::RoundRobin => Box::new(RoundRobinAssignor),
        AssignmentStrategy::CooperativeSticky => Box::new(CooperativeStickyAssignor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.into(),
            group_instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned_partitions: Vec::new(),
            generation_id: -1,
        }
    }

    fn owning(
        id: &str,
        topics: &[&str],
        owned: &[(&str, i32)],
        generation: i32,
    ) -> MemberSubscription {
        MemberSubscription {
            owned_partitions: owned
                .iter()
                .map(|(t, p)| TopicPartition::new(*t, *p))
                .collect(),
            generation_id: generation,
            ..member(id, topics)
        }
    }

    fn counts(c: &[(&str, i32)]) -> BTreeMap<String, i32> {
        c.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    /// member -> "t0 t1 u2" for compact expectations.
    fn show(a: &GroupAssignment) -> Vec<(String, String)> {
        a.iter()
            .map(|(m, tps)| {
                let s: Vec<String> = tps
                    .iter()
                    .map(|tp| format!("{}{}", tp.topic, tp.partition))
                    .collect();
                (m.clone(), s.join(" "))
            })
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn range_splits_each_topic_in_member_order() {
        // Members given out of order: c1 sorts before c2.
        let members = [member("c2", &["t", "u"]), member("c1", &["t", "u"])];
        let a = RangeAssignor.assign(&counts(&[("t", 3), ("u", 4)]), &members);
        assert_eq!(
            show(&a),
            pairs(&[("c1", "t0 t1 u0 u1"), ("c2", "t2 u2 u3")])
        );
    }

    #[test]
    fn range_with_more_members_than_partitions_and_partial_subscriptions() {
        let members = [
            member("a", &["t"]),
            member("b", &["t", "u"]),
            member("c", &["t"]),
            member("d", &["u", "missing"]),
        ];
        let a = RangeAssignor.assign(&counts(&[("t", 2), ("u", 3)]), &members);
        assert_eq!(
            show(&a),
            pairs(&[("a", "t0"), ("b", "t1 u0 u1"), ("c", ""), ("d", "u2")])
        );
    }

    #[test]
    fn roundrobin_deals_all_partitions_in_turn() {
        let members = [member("m2", &["t", "u"]), member("m1", &["t", "u"])];
        let a = RoundRobinAssignor.assign(&counts(&[("t", 3), ("u", 2)]), &members);
        assert_eq!(show(&a), pairs(&[("m1", "t0 t2 u1"), ("m2", "t1 u0")]));
    }

    #[test]
    fn roundrobin_skips_members_not_subscribed() {
        // Java's documented example: C0 [t0], C1 [t0, t1], C2 [t0, t1, t2], 1/2/3 partitions.
        let members = [
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1", "t2"]),
        ];
        let a = RoundRobinAssignor.assign(&counts(&[("t0", 1), ("t1", 2), ("t2", 3)]), &members);
        assert_eq!(
            show(&a),
            pairs(&[("C0", "t00"), ("C1", "t10"), ("C2", "t11 t20 t21 t22")])
        );
    }

    #[test]
    fn static_members_sort_first_by_instance_id() {
        let mut a = member("zz", &["t"]);
        a.group_instance_id = Some("i2".into());
        let mut b = member("yy", &["t"]);
        b.group_instance_id = Some("i1".into());
        let c = member("aa", &["t"]);
        let r = RangeAssignor.assign(&counts(&[("t", 3)]), &[a, b, c]);
        assert_eq!(show(&r), pairs(&[("aa", "t2"), ("yy", "t0"), ("zz", "t1")]));
    }

    #[test]
    fn four_partitions_two_members_every_assignor_covers_disjointly() {
        let members = [member("x", &["t"]), member("y", &["t"])];
        for assignor in [assignor_for("range"), assignor_for("roundrobin")]
            .into_iter()
            .flatten()
        {
            let a = assignor.assign(&counts(&[("t", 4)]), &members);
            let mut all: Vec<i32> = a.values().flatten().map(|tp| tp.partition).collect();
            all.sort();
            assert_eq!(all, vec![0, 1, 2, 3], "{}", assignor.name());
            assert!(a.values().all(|v| v.len() == 2), "{}", assignor.name());
        }
        assert!(assignor_for("sticky").is_none());
    }

    #[test]
    fn cooperative_sticky_fresh_group_is_balanced() {
        let members = [
            member("a", &["t", "u"]),
            member("b", &["t", "u"]),
            member("c", &["t", "u"]),
        ];
        let a = CooperativeStickyAssignor.assign(&counts(&[("t", 4), ("u", 3)]), &members);
        assert_eq!(
            show(&a),
            pairs(&[("a", "t0 t3 u2"), ("b", "t1 u0"), ("c", "t2 u1")])
        );
    }

    #[test]
    fn cooperative_sticky_moves_partitions_in_two_rebalances() {
        let c = counts(&[("t", 4)]);
        // a owns everything; b joins. First round: a keeps t0 t1, t2 t3 are held back.
        let a0 = owning("a", &["t"], &[("t", 0), ("t", 1), ("t", 2), ("t", 3)], 1);
        let round1 = CooperativeStickyAssignor.assign(&c, &[a0, member("b", &["t"])]);
        assert_eq!(show(&round1), pairs(&[("a", "t0 t1"), ("b", "")]));
        // a revoked t2 t3 and rejoined: now b gets them.
        let a1 = owning("a", &["t"], &[("t", 0), ("t", 1)], 2);
        let round2 = CooperativeStickyAssignor.assign(&c, &[a1.clone(), member("b", &["t"])]);
        assert_eq!(show(&round2), pairs(&[("a", "t0 t1"), ("b", "t2 t3")]));
        // b leaves: a keeps its two and gets the others at once (nobody owns them).
        let alone = CooperativeStickyAssignor.assign(&c, &[a1]);
        assert_eq!(show(&alone), pairs(&[("a", "t0 t1 t2 t3")]));
    }

    #[test]
    fn cooperative_sticky_keeps_owners_and_resolves_stale_claims() {
        let c = counts(&[("t", 6)]);
        // b claims t0 from an older generation than a: a's claim wins.
        let a = owning("a", &["t"], &[("t", 0), ("t", 1), ("t", 2)], 5);
        let b = owning("b", &["t"], &[("t", 0), ("t", 3), ("t", 4)], 4);
        let r = CooperativeStickyAssignor::sticky_assign(&c, &[a.clone(), b.clone()]);
        assert_eq!(show(&r), pairs(&[("a", "t0 t1 t2"), ("b", "t3 t4 t5")]));
        // With a third member, each gives up one partition and nothing else moves.
        let r = CooperativeStickyAssignor::sticky_assign(&c, &[a, b, member("c", &["t"])]);
        assert_eq!(r["a"].len(), 2);
        assert_eq!(r["b"].len(), 2);
        assert_eq!(r["c"].len(), 2);
        assert!(r["a"].iter().all(|tp| tp.partition <= 2));
        assert!(r["b"].iter().all(|tp| (3..=4).contains(&tp.partition)));
    }

    #[test]
    fn cooperative_sticky_respects_subscriptions() {
        let members = [
            member("a", &["t"]),
            member("b", &["t", "u"]),
            member("c", &["u"]),
        ];
        let r = CooperativeStickyAssignor.assign(&counts(&[("t", 3), ("u", 3)]), &members);
        for (m, tps) in &r {
            let subscribed = &members
                .iter()
                .find(|x| &x.member_id == m)
                .map(|x| x.topics.clone());
            assert!(
                tps.iter()
                    .all(|tp| subscribed.as_ref().is_some_and(|s| s.contains(&tp.topic)))
            );
        }
        let total: usize = r.values().map(Vec::len).sum();
        assert_eq!(total, 6);
        assert!(r.values().all(|v| v.len() == 2), "{r:?}");
    }
}
