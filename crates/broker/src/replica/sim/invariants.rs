//! The invariants the replication simulation checks after every event it processes, as a
//! checker fed plain observations (what each replica does and holds, what the controller
//! committed). Kept apart from the simulation so that each check can be fed a deliberately
//! wrong history in the tests below: a check that cannot fail proves nothing.
//!
//! The exact forms, and why they are the ones Kafka's design promises:
//! - **one leader per epoch**: no two brokers (nor two lives of one broker) ever act as leader
//!   of a partition in the same leader epoch, and a broker acts as leader only in an epoch the
//!   controller committed with it as the leader.
//! - **high watermark monotonic**: within one leader epoch the leader's high watermark never
//!   goes back. Across epochs it may: a new leader starts from the high watermark it last
//!   learned as a follower, which can lag its predecessor's (Kafka's too); what must not go is
//!   the data under the old one, which the next two invariants cover.
//! - **ISR holds the high watermark**: the leader the controller's committed image names,
//!   acting in that image's epoch, has its high watermark at or below its log end, and every
//!   other member of that committed ISR that is running and has joined the cluster holds every
//!   offset below that high watermark, in the same batches (base, last offset, epoch, CRC).
//!   This holds because the leader moves the high watermark only to the smallest log end over
//!   the committed ISR plus any member whose addition is in flight, and an added member must
//!   first have reached it. A member that is down is skipped (its disk is checked when it
//!   runs again). A member that lost unflushed data in a power loss is not exempted: it
//!   cannot rejoin while its old session is alive (DUPLICATE_BROKER_REGISTRATION), and its
//!   new registration fences the old one, which removes it from every ISR before it runs as a
//!   member again; the only way back into a committed ISR with a short log would be as the
//!   last member standing (KIP-966's case), which the schedule never creates and which this
//!   invariant would then rightly report.
//! - **committed batches kept**: the batches below the highest high watermark any leader ever
//!   published are fixed: every acting leader agrees with them where its own high watermark
//!   reaches, and the leader the committed image names, in its epoch, holds all of them.
//! - **committed metadata kept**: the controller's image only moves forward and is, at the
//!   end, exactly the fold of every committed record batch; every image a broker holds is one
//!   the controller committed at that offset, and a broker's image never goes back within a
//!   process lifetime.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use vltava_controller::image::MetadataImage;
use vltava_controller::records::MetadataRecord;
use vltava_storage::Log;

/// Which invariant a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Invariant {
    OneLeaderPerEpoch,
    HighWatermarkMonotonic,
    IsrHoldsHighWatermark,
    CommittedBatchesKept,
    CommittedMetadataKept,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::OneLeaderPerEpoch => "one leader per epoch",
            Invariant::HighWatermarkMonotonic => "high watermark never goes back",
            Invariant::IsrHoldsHighWatermark => "every ISR member holds the high watermark",
            Invariant::CommittedBatchesKept => "committed batches are kept",
            Invariant::CommittedMetadataKept => "committed metadata is kept",
        })
    }
}

/// A broken invariant and the facts that break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant \"{}\" violated: {}",
            self.invariant, self.detail
        )
    }
}

fn violation(invariant: Invariant, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// What identifies a batch: the CRC covers everything after the epoch, so together they
/// say "the same bytes" without keeping the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchId {
    pub base: u64,
    pub last: u64,
    pub epoch: i32,
    pub crc: u32,
}

/// A replica's log as batch identities, kept up to date by re-reading only what changed.
#[derive(Debug, Clone, Default)]
pub(super) struct LogView {
    pub start: u64,
    pub end: u64,
    pub batches: Vec<BatchId>,
    /// Changes whenever a batch already in the view may have changed (the view was rebuilt);
    /// between changes the view only grows, so what it was found to agree on stays agreed.
    pub generation: u64,
}

impl LogView {
    /// Brings the view up to `log`. An event changes a log by one append or one truncation,
    /// so the view re-reads from its last known batch, which must still be there unchanged;
    /// anything else (a truncation, a new log start) rebuilds it from the start.
    pub fn refresh(&mut self, log: &Log, generations: &mut u64) -> Result<(), String> {
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        if start == self.start && end == self.end {
            return Ok(());
        }
        if start == self.start
            && end > self.end
            && let Some(last) = self.batches.pop()
        {
            let mut tail = Vec::new();
            read_ids(log, last.base, end, &mut tail)?;
            if tail.first() == Some(&last) {
                self.batches.extend(tail);
                self.end = end;
                return Ok(());
            }
        }
        self.batches.clear();
        *generations += 1;
        self.generation = *generations;
        read_ids(log, start, end, &mut self.batches)?;
        self.start = start;
        self.end = end;
        Ok(())
    }

    fn below(&self, offset: u64) -> &[BatchId] {
        let n = self.batches.partition_point(|b| b.base < offset);
        &self.batches[..n]
    }
}

fn read_ids(log: &Log, from: u64, end: u64, out: &mut Vec<BatchId>) -> Result<(), String> {
    super::for_each_batch(log, from, end, |h, _| {
        out.push(BatchId {
            base: h.base_offset as u64,
            last: h.last_offset() as u64,
            epoch: h.partition_leader_epoch,
            crc: h.crc,
        });
        Ok(())
    })
}

/// One running, joined broker's replica of one partition.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replica<'a> {
    pub broker: i32,
    /// The process lifetime (grows at each restart).
    pub incarnation: u64,
    pub partition: i32,
    /// The epoch it acts as leader in; `None` on a follower.
    pub leading: Option<i32>,
    pub high_watermark: u64,
    pub log: &'a LogView,
}

/// A partition as the controller's committed image has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Committed {
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
}

/// A broker's view of the metadata: the images its quorum member and its replicas hold.
#[derive(Debug, Clone)]
pub(super) struct BrokerMetadata<'a> {
    pub broker: i32,
    pub incarnation: u64,
    pub images: [&'a Arc<MetadataImage>; 2],
}

/// Everything the checks look at after one event.
pub(super) struct View<'a> {
    pub partitions: &'a BTreeMap<i32, Committed>,
    pub replicas: &'a [Replica<'a>],
}

/// The history the checks need: who led which epoch, the highest high watermark per epoch,
/// the committed batches, the committed metadata.
#[derive(Default)]
pub(super) struct Checker {
    /// (partition, epoch) → the broker the controller committed as its leader.
    granted: BTreeMap<(i32, i32), i32>,
    /// (partition, epoch) → (broker, incarnation) that acted as leader in it.
    acted: BTreeMap<(i32, i32), (i32, u64)>,
    /// (partition, epoch) → the highest high watermark its leader published.
    hw: BTreeMap<(i32, i32), u64>,
    /// partition → the batches below the highest high watermark ever, and that watermark.
    committed: BTreeMap<i32, (Vec<BatchId>, u64)>,
    /// Every image the controller committed, by offset, and the records of each.
    images: BTreeMap<u64, Arc<MetadataImage>>,
    records: Vec<(u64, Vec<MetadataRecord>)>,
    /// (broker, incarnation) → the newest image offset it held.
    broker_offsets: BTreeMap<(i32, u64), Option<u64>>,
    /// (generation, generation) → how many leading batches those views agree on.
    agree: BTreeMap<(u64, u64), usize>,
}

impl Checker {
    /// The controller committed `records` at `offset`, giving `image`.
    pub fn committed_metadata(
        &mut self,
        offset: u64,
        records: &[MetadataRecord],
        image: &Arc<MetadataImage>,
    ) -> Result<(), Violation> {
        if let Some((last, _)) = self.images.last_key_value()
            && *last >= offset
        {
            return Err(violation(
                Invariant::CommittedMetadataKept,
                format!("the controller committed offset {offset} after offset {last}"),
            ));
        }
        if image.offset != Some(offset) {
            return Err(violation(
                Invariant::CommittedMetadataKept,
                format!(
                    "the image committed at {offset} says it is at {:?}",
                    image.offset
                ),
            ));
        }
        self.images.insert(offset, Arc::clone(image));
        self.records.push((offset, records.to_vec()));
        Ok(())
    }

    /// The controller's committed view of the partitions changed: who it made leader of
    /// which epoch.
    pub fn committed_partitions(
        &mut self,
        partitions: &BTreeMap<i32, Committed>,
    ) -> Result<(), Violation> {
        for (index, p) in partitions {
            if p.leader < 0 {
                continue;
            }
            let granted = *self
                .granted
                .entry((*index, p.leader_epoch))
                .or_insert(p.leader);
            if granted != p.leader {
                return Err(violation(
                    Invariant::OneLeaderPerEpoch,
                    format!(
                        "partition {index}: the controller gave epoch {} to broker {granted}, then to broker {}",
                        p.leader_epoch, p.leader
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The metadata a running broker holds.
    pub fn broker_metadata(&mut self, b: &BrokerMetadata<'_>) -> Result<(), Violation> {
        for image in b.images {
            let Some(offset) = image.offset else {
                continue;
            };
            match self.images.get(&offset) {
                Some(ours) if Arc::ptr_eq(ours, image) || **ours == **image => {}
                Some(_) => {
                    return Err(violation(
                        Invariant::CommittedMetadataKept,
                        format!(
                            "broker {} holds an image at offset {offset} that differs from the one the controller committed there",
                            b.broker
                        ),
                    ));
                }
                None => {
                    return Err(violation(
                        Invariant::CommittedMetadataKept,
                        format!(
                            "broker {} holds an image at offset {offset}, which the controller never committed",
                            b.broker
                        ),
                    ));
                }
            }
        }
        let newest = b.images[0].offset;
        let seen = self
            .broker_offsets
            .entry((b.broker, b.incarnation))
            .or_insert(newest);
        if newest < *seen {
            return Err(violation(
                Invariant::CommittedMetadataKept,
                format!(
                    "broker {}'s metadata went back from offset {seen:?} to {newest:?} without a restart",
                    b.broker
                ),
            ));
        }
        *seen = newest;
        Ok(())
    }

    /// Replays every committed record batch into an empty image: the controller's final
    /// image must be exactly that, or a record was lost (or one not committed slipped in).
    pub fn replay_metadata(&self, image: &MetadataImage) -> Result<(), Violation> {
        let mut replayed = MetadataImage::default();
        for (offset, records) in &self.records {
            replayed.apply_batch(*offset, records).map_err(|e| {
                violation(
                    Invariant::CommittedMetadataKept,
                    format!("the committed batch at {offset} does not replay: {e}"),
                )
            })?;
        }
        if replayed != *image {
            return Err(violation(
                Invariant::CommittedMetadataKept,
                format!(
                    "the controller's image (offset {:?}) is not the replay of its {} committed batches (offset {:?})",
                    image.offset,
                    self.records.len(),
                    replayed.offset
                ),
            ));
        }
        Ok(())
    }

    /// The replica checks, after one event.
    pub fn check(&mut self, view: &View<'_>) -> Result<(), Violation> {
        for r in view.replicas {
            let Some(epoch) = r.leading else {
                continue;
            };
            let p = r.partition;
            self.one_leader(r, epoch)?;
            let key = (p, epoch);
            let best = self.hw.entry(key).or_insert(r.high_watermark);
            if r.high_watermark < *best {
                return Err(violation(
                    Invariant::HighWatermarkMonotonic,
                    format!(
                        "partition {p}: broker {}'s high watermark went back from {best} to {} in epoch {epoch}",
                        r.broker, r.high_watermark
                    ),
                ));
            }
            *best = r.high_watermark;
            let current = view
                .partitions
                .get(&p)
                .is_some_and(|c| c.leader == r.broker && c.leader_epoch == epoch);
            self.committed_batches(r, current)?;
        }
        for (index, c) in view.partitions {
            let Some(leader) = view.replicas.iter().find(|r| {
                r.partition == *index && r.broker == c.leader && r.leading == Some(c.leader_epoch)
            }) else {
                continue;
            };
            self.isr_holds(leader, c, view.replicas)?;
        }
        Ok(())
    }

    fn one_leader(&mut self, r: &Replica<'_>, epoch: i32) -> Result<(), Violation> {
        let p = r.partition;
        match self.granted.get(&(p, epoch)) {
            Some(g) if *g == r.broker => {}
            Some(g) => {
                return Err(violation(
                    Invariant::OneLeaderPerEpoch,
                    format!(
                        "partition {p}: broker {} acts as leader in epoch {epoch}, which the controller gave to broker {g}",
                        r.broker
                    ),
                ));
            }
            None => {
                return Err(violation(
                    Invariant::OneLeaderPerEpoch,
                    format!(
                        "partition {p}: broker {} acts as leader in epoch {epoch}, which the controller never committed",
                        r.broker
                    ),
                ));
            }
        }
        let first = *self
            .acted
            .entry((p, epoch))
            .or_insert((r.broker, r.incarnation));
        if first != (r.broker, r.incarnation) {
            return Err(violation(
                Invariant::OneLeaderPerEpoch,
                format!(
                    "partition {p}: broker {} (life {}) and broker {} (life {}) both acted as leader in epoch {epoch}",
                    first.0, first.1, r.broker, r.incarnation
                ),
            ));
        }
        Ok(())
    }

    fn committed_batches(&mut self, r: &Replica<'_>, current: bool) -> Result<(), Violation> {
        let p = r.partition;
        let prefix_generation = PREFIX_GENERATIONS - p as u64;
        let (prefix, hw) = self.committed.entry(p).or_default();
        if current && r.log.end < *hw {
            return Err(violation(
                Invariant::CommittedBatchesKept,
                format!(
                    "partition {p}: the committed leader {} (epoch {:?}) ends at {}, below the committed offset {hw}",
                    r.broker, r.leading, r.log.end
                ),
            ));
        }
        // The committed leader holds every committed batch; any other leader agrees with them
        // as far as its own high watermark reaches.
        let bound = if current {
            *hw
        } else {
            r.high_watermark.min(*hw)
        };
        let theirs = r.log.below(bound);
        let ours = &prefix[prefix.partition_point(|b| b.base < r.log.start)..];
        let ours = &ours[..ours.partition_point(|b| b.base < bound)];
        if let Some(first) = same(
            &mut self.agree,
            (prefix_generation, ours),
            (r.log.generation, theirs),
        ) {
            return Err(violation(
                Invariant::CommittedBatchesKept,
                format!(
                    "partition {p}: leader {} (epoch {:?}) does not hold the committed batches below {bound}: {first}",
                    r.broker, r.leading
                ),
            ));
        }
        if r.high_watermark > *hw && r.high_watermark <= r.log.end {
            let from = prefix.last().map_or(0, |b| b.last + 1);
            let new = r.log.below(r.high_watermark);
            let n = new.partition_point(|b| b.base < from);
            prefix.extend_from_slice(&new[n..]);
            *hw = r.high_watermark;
        }
        Ok(())
    }

    fn isr_holds(
        &mut self,
        leader: &Replica<'_>,
        c: &Committed,
        replicas: &[Replica<'_>],
    ) -> Result<(), Violation> {
        let p = leader.partition;
        let hw = leader.high_watermark;
        if hw > leader.log.end {
            return Err(violation(
                Invariant::IsrHoldsHighWatermark,
                format!(
                    "partition {p}: leader {}'s high watermark {hw} is above its log end {}",
                    leader.broker, leader.log.end
                ),
            ));
        }
        let ours = leader.log.below(hw);
        for m in &c.isr {
            if *m == leader.broker {
                continue;
            }
            let Some(r) = replicas.iter().find(|r| r.partition == p && r.broker == *m) else {
                continue;
            };
            if r.log.end < hw {
                return Err(violation(
                    Invariant::IsrHoldsHighWatermark,
                    format!(
                        "partition {p}: ISR member {m} ends at {}, below leader {}'s high watermark {hw} (epoch {}, isr {:?})",
                        r.log.end, leader.broker, c.leader_epoch, c.isr
                    ),
                ));
            }
            // Below the other's log start either may keep more; compare what both have.
            let theirs = r.log.below(hw);
            let theirs = &theirs[theirs.partition_point(|b| b.base < leader.log.start)..];
            let ours = &ours[ours.partition_point(|b| b.base < r.log.start)..];
            if let Some(first) = same(
                &mut self.agree,
                (leader.log.generation, ours),
                (r.log.generation, theirs),
            ) {
                return Err(violation(
                    Invariant::IsrHoldsHighWatermark,
                    format!(
                        "partition {p}: ISR member {m}'s batches below leader {}'s high watermark {hw} differ: {first}",
                        leader.broker
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Generations of the committed prefixes (one per partition), above any a log view gets.
const PREFIX_GENERATIONS: u64 = u64::MAX;

/// `None` when `a` and `b` hold the same batches, else the first difference. Each is a
/// prefix of a view of the given generation, which only grows, so the leading batches found
/// equal once stay equal: only what is new is compared (else every event would compare
/// whole logs, quadratic over a run).
fn same(
    agree: &mut BTreeMap<(u64, u64), usize>,
    (ga, a): (u64, &[BatchId]),
    (gb, b): (u64, &[BatchId]),
) -> Option<String> {
    let n = a.len().min(b.len());
    let known = agree.get(&(ga, gb)).copied().unwrap_or(0).min(n);
    let differs = a[known..n]
        .iter()
        .zip(&b[known..n])
        .position(|(x, y)| x != y)
        .map(|i| i + known);
    if differs.unwrap_or(n) != known {
        agree.insert((ga, gb), differs.unwrap_or(n));
    }
    if differs.is_none() && a.len() == b.len() {
        return None;
    }
    let at = differs.unwrap_or(n);
    Some(format!(
        "batch #{at}: expected {:?}, found {:?} ({} vs {} batches)",
        a.get(at),
        b.get(at),
        a.len(),
        b.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(base: u64, last: u64, epoch: i32, crc: u32) -> BatchId {
        BatchId {
            base,
            last,
            epoch,
            crc,
        }
    }

    fn log(batches: &[BatchId]) -> LogView {
        thread_local! {
            static GENERATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        LogView {
            generation: GENERATIONS.with(|g| {
                g.set(g.get() + 1);
                g.get()
            }),
            start: batches.first().map_or(0, |b| b.base),
            end: batches.last().map_or(0, |b| b.last + 1),
            batches: batches.to_vec(),
        }
    }

    fn leader(broker: i32, epoch: i32, hw: u64, log: &LogView) -> Replica<'_> {
        Replica {
            broker,
            incarnation: 1,
            partition: 0,
            leading: Some(epoch),
            high_watermark: hw,
            log,
        }
    }

    fn follower(broker: i32, log: &LogView) -> Replica<'_> {
        Replica {
            broker,
            incarnation: 1,
            partition: 0,
            leading: None,
            high_watermark: 0,
            log,
        }
    }

    fn committed(leader: i32, epoch: i32, isr: &[i32]) -> BTreeMap<i32, Committed> {
        BTreeMap::from([(
            0,
            Committed {
                leader,
                leader_epoch: epoch,
                isr: isr.to_vec(),
            },
        )])
    }

    /// A checker that has seen the controller give epoch 1 to broker 1 and epoch 2 to 2.
    fn checker() -> Checker {
        let mut c = Checker::default();
        c.committed_partitions(&committed(1, 1, &[1, 2, 3]))
            .expect("no violation");
        c.committed_partitions(&committed(2, 2, &[2, 3]))
            .expect("no violation");
        c
    }

    fn check(
        c: &mut Checker,
        partitions: &BTreeMap<i32, Committed>,
        replicas: &[Replica<'_>],
    ) -> Result<(), Violation> {
        c.check(&View {
            partitions,
            replicas,
        })
    }

    fn broken(r: Result<(), Violation>) -> Invariant {
        r.expect_err("the checker must report this").invariant
    }

    #[test]
    fn a_consistent_history_passes() {
        let mut c = checker();
        let a = log(&[id(0, 1, 1, 10), id(2, 2, 1, 11)]);
        let b = log(&[id(0, 1, 1, 10)]);
        let p1 = committed(1, 1, &[1, 2, 3]);
        check(
            &mut c,
            &p1,
            &[leader(1, 1, 2, &a), follower(2, &b), follower(3, &b)],
        )
        .expect("no violation");
        let full = log(&[id(0, 1, 1, 10), id(2, 2, 1, 11)]);
        check(
            &mut c,
            &p1,
            &[leader(1, 1, 3, &a), follower(2, &full), follower(3, &full)],
        )
        .expect("no violation");
        // A failover to broker 2 in epoch 2; its own high watermark starts lower, which
        // Kafka allows, and it still holds every committed batch.
        let p2 = committed(2, 2, &[2, 3]);
        check(&mut c, &p2, &[leader(2, 2, 2, &full), follower(3, &full)]).expect("no violation");
    }

    #[test]
    fn two_brokers_leading_one_epoch_is_reported() {
        let mut c = checker();
        let a = log(&[id(0, 0, 1, 1)]);
        let p = committed(1, 1, &[1, 2, 3]);
        check(&mut c, &p, &[leader(1, 1, 0, &a)]).expect("no violation");
        // Broker 2 believes it leads epoch 1 (a stale or forged image).
        assert_eq!(
            broken(check(&mut c, &p, &[leader(2, 1, 0, &a)])),
            Invariant::OneLeaderPerEpoch
        );
        // A restarted broker 1 acting in the epoch of its previous life.
        let mut again = leader(1, 1, 0, &a);
        again.incarnation = 2;
        assert_eq!(
            broken(check(&mut c, &p, &[again])),
            Invariant::OneLeaderPerEpoch
        );
        // An epoch the controller never committed.
        assert_eq!(
            broken(check(&mut checker(), &p, &[leader(1, 7, 0, &a)])),
            Invariant::OneLeaderPerEpoch
        );
        // The controller itself giving one epoch to two brokers.
        assert_eq!(
            broken(checker().committed_partitions(&committed(3, 2, &[3]))),
            Invariant::OneLeaderPerEpoch
        );
    }

    #[test]
    fn a_high_watermark_going_back_is_reported() {
        let mut c = checker();
        let a = log(&[id(0, 4, 1, 1)]);
        let p = committed(1, 1, &[1]);
        check(&mut c, &p, &[leader(1, 1, 5, &a)]).expect("no violation");
        assert_eq!(
            broken(check(&mut c, &p, &[leader(1, 1, 3, &a)])),
            Invariant::HighWatermarkMonotonic
        );
    }

    #[test]
    fn an_isr_member_short_of_the_high_watermark_is_reported() {
        let a = log(&[id(0, 1, 1, 10), id(2, 2, 1, 11)]);
        let short = log(&[id(0, 1, 1, 10)]);
        let p = committed(1, 1, &[1, 2, 3]);
        // Broker 3 lags but has the high watermark; broker 2 does not.
        assert_eq!(
            broken(check(
                &mut checker(),
                &p,
                &[leader(1, 1, 3, &a), follower(2, &short), follower(3, &a)]
            )),
            Invariant::IsrHoldsHighWatermark
        );
        // The same lag outside the ISR is fine.
        let out = committed(1, 1, &[1, 3]);
        check(
            &mut checker(),
            &out,
            &[leader(1, 1, 3, &a), follower(2, &short), follower(3, &a)],
        )
        .expect("no violation");
        // Same offsets, different bytes (another CRC) below the high watermark.
        let forked = log(&[id(0, 1, 1, 10), id(2, 2, 1, 99)]);
        assert_eq!(
            broken(check(
                &mut checker(),
                &p,
                &[leader(1, 1, 3, &a), follower(2, &forked)]
            )),
            Invariant::IsrHoldsHighWatermark
        );
        // A leader whose high watermark passed its own log end.
        assert_eq!(
            broken(check(&mut checker(), &p, &[leader(1, 1, 9, &a)])),
            Invariant::IsrHoldsHighWatermark
        );
    }

    #[test]
    fn a_new_leader_without_the_committed_batches_is_reported() {
        let mut c = checker();
        let a = log(&[id(0, 1, 1, 10), id(2, 2, 1, 11)]);
        let p1 = committed(1, 1, &[1]);
        check(&mut c, &p1, &[leader(1, 1, 3, &a)]).expect("no violation");
        // Broker 2 takes over in epoch 2 with the last committed batch missing.
        let short = log(&[id(0, 1, 1, 10)]);
        let p2 = committed(2, 2, &[2]);
        assert_eq!(
            broken(check(&mut c, &p2, &[leader(2, 2, 2, &short)])),
            Invariant::CommittedBatchesKept
        );
        // Or with it, but other bytes at that offset (one offset, two values).
        let mut c = checker();
        check(&mut c, &p1, &[leader(1, 1, 3, &a)]).expect("no violation");
        let other = log(&[id(0, 1, 1, 10), id(2, 2, 2, 77)]);
        assert_eq!(
            broken(check(&mut c, &p2, &[leader(2, 2, 2, &other)])),
            Invariant::CommittedBatchesKept
        );
        // A deposed leader (not the committed one) with a divergent committed prefix.
        let mut c = checker();
        check(&mut c, &p1, &[leader(1, 1, 3, &a)]).expect("no violation");
        let fork = log(&[id(0, 1, 1, 12)]);
        assert_eq!(
            broken(check(
                &mut c,
                &p2,
                &[leader(1, 1, 3, &a), leader(2, 2, 2, &fork)]
            )),
            Invariant::CommittedBatchesKept
        );
    }

    fn image_at(offset: u64) -> Arc<MetadataImage> {
        let mut image = MetadataImage::default();
        image
            .apply_batch(offset, &[])
            .expect("an empty batch applies");
        Arc::new(image)
    }

    #[test]
    fn lost_or_forged_metadata_is_reported() {
        let mut c = Checker::default();
        let (i0, i1) = (image_at(0), image_at(1));
        c.committed_metadata(0, &[], &i0).expect("no violation");
        c.committed_metadata(1, &[], &i1).expect("no violation");
        c.replay_metadata(&i1).expect("no violation");
        let ok = BrokerMetadata {
            broker: 1,
            incarnation: 1,
            images: [&i1, &i0],
        };
        c.broker_metadata(&ok).expect("no violation");
        // The controller's offset going back.
        assert_eq!(
            broken(c.committed_metadata(1, &[], &i1)),
            Invariant::CommittedMetadataKept
        );
        // A broker's image going back within one process lifetime (a restart may).
        let back = BrokerMetadata {
            images: [&i0, &i0],
            ..ok.clone()
        };
        assert_eq!(
            broken(c.broker_metadata(&back)),
            Invariant::CommittedMetadataKept
        );
        c.broker_metadata(&BrokerMetadata {
            incarnation: 2,
            ..back
        })
        .expect("no violation");
        // An image the controller never committed, or another one at a committed offset.
        let i7 = image_at(7);
        let forged = {
            let mut f = MetadataImage::default();
            let level =
                MetadataRecord::FeatureLevel(vltava_controller::records::FeatureLevelRecord {
                    name: "forged".into(),
                    feature_level: 1,
                });
            f.apply_batch(1, &[level]).expect("a feature level applies");
            Arc::new(f)
        };
        for bad in [&i7, &forged] {
            let b = BrokerMetadata {
                images: [bad, &i0],
                ..ok.clone()
            };
            assert_eq!(
                broken(c.broker_metadata(&b)),
                Invariant::CommittedMetadataKept
            );
        }
        // A final image that is not the fold of the committed batches.
        assert_eq!(
            broken(c.replay_metadata(&forged)),
            Invariant::CommittedMetadataKept
        );
    }
}
