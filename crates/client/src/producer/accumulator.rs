//! The RecordAccumulator: per partition a queue of batches, the last of which is open for more
//! records. `send` appends under one `std::sync::Mutex` (never held across `.await`); the sender
//! task takes ready batches from the front of each queue.
//!
//! A batch is ready when it is full (the next record of its size would not fit in `batch.size`),
//! when `linger.ms` has passed since it was opened, when a flush or close asks for it, when a
//! `send` is waiting for `buffer.memory`, or when it is a retry whose backoff has passed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::producer::batch::BatchBuilder;
use crate::producer::error::ProducerError;
use crate::producer::metadata::TopicInfo;
use crate::producer::partitioner::{Rng, next_sticky, partition_for_key};
use crate::producer::{Header, RecordMetadata};

/// The result a record's sender is waiting for.
pub(crate) type DeliveryResult = Result<RecordMetadata, ProducerError>;

/// Where a record's result goes.
pub(crate) enum Delivery {
    /// A [`crate::producer::DeliveryFuture`] waits on it.
    Future(tokio::sync::oneshot::Sender<DeliveryResult>),
    /// A callback run on the sender task.
    Callback(Box<dyn FnOnce(DeliveryResult) + Send>),
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Delivery::Future(_) => "Delivery::Future",
            Delivery::Callback(_) => "Delivery::Callback",
        })
    }
}

impl Delivery {
    pub(crate) fn complete(self, result: DeliveryResult) {
        match self {
            // The caller may have dropped its future: nobody to tell.
            Delivery::Future(tx) => {
                let _ = tx.send(result);
            }
            Delivery::Callback(cb) => cb(result),
        }
    }
}

/// One batch of records for one partition.
#[derive(Debug)]
pub(crate) struct ProducerBatch {
    /// Creation order, for flush.
    pub id: u64,
    pub topic: Arc<str>,
    pub partition: i32,
    /// Records being written; `None` once finished into `wire`.
    pub builder: Option<BatchBuilder>,
    /// The finished batch and the producer fields written in it.
    pub wire: Option<(Bytes, i64, i16, i32)>,
    pub record_count: i32,
    pub created: Instant,
    /// Per record: where its result goes, and its create time.
    pub deliveries: Vec<(Delivery, i64)>,
    /// Bytes of `buffer.memory` held until the batch completes.
    pub reserved: usize,
    /// First sequence number (idempotence), -1 until the batch is first drained.
    pub base_sequence: i32,
    /// Retries so far.
    pub attempts: u32,
    /// No retry before this.
    pub retry_at: Option<Instant>,
    /// Closed for appends (the next record would not fit).
    pub full: bool,
    /// An attempt ended without saying whether the batch was appended (no answer, or an error
    /// Kafka gives after the append): it may be in the log under its current producer epoch
    /// and sequence, so it must never be sent again under others.
    pub maybe_written: bool,
}

impl ProducerBatch {
    /// Size on the wire, finished or estimated.
    pub fn size(&self) -> usize {
        match (&self.wire, &self.builder) {
            (Some((w, ..)), _) => w.len(),
            (None, Some(b)) => b.size(),
            (None, None) => 0,
        }
    }

    /// Sequence number after the last record of the batch (wrapping as Kafka does).
    pub fn end_sequence(&self) -> i32 {
        let end = i64::from(self.base_sequence) + i64::from(self.record_count);
        if end > i64::from(i32::MAX) {
            (end - i64::from(i32::MAX) - 1) as i32
        } else {
            end as i32
        }
    }
}

/// One partition's queue and its idempotence state.
#[derive(Debug, Default)]
pub(crate) struct PartitionQueue {
    pub batches: VecDeque<ProducerBatch>,
    /// Sequence of the next batch drained for the first time.
    pub next_sequence: i32,
    /// Sequence the broker is known to expect next (end of the last acknowledged batch).
    pub acked_sequence: i32,
    /// Batches of this partition in requests on the wire.
    pub in_flight: u32,
    /// The broker those batches went to (meaningful while `in_flight > 0`).
    pub in_flight_to: i32,
}

/// The queues of one topic and its sticky partition.
#[derive(Debug)]
pub(crate) struct TopicQueues {
    name: Arc<str>,
    pub partitions: Vec<PartitionQueue>,
    sticky: Option<i32>,
    /// Whether the sticky partition has opened a batch since it was chosen.
    sticky_started: bool,
}

/// What an append changed, for waking the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub partition: i32,
    /// A batch was opened (the sender must start its linger timer).
    pub new_batch: bool,
    /// A batch became full (ready now).
    pub full: bool,
}

/// A record ready to append: already serialized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRecord<'a> {
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header],
    pub timestamp: i64,
    /// Bytes of `buffer.memory` reserved for it.
    pub reserved: usize,
}

/// Every queue of the producer.
#[derive(Debug)]
pub(crate) struct Accumulator {
    pub topics: HashMap<Arc<str>, TopicQueues>,
    next_batch_id: u64,
    /// Ids of batches not yet completed.
    pub incomplete: BTreeSet<u64>,
    /// Batches with a smaller id are ready at once (flush).
    pub flush_upto: u64,
    /// Close: every batch is ready and no record is accepted.
    pub closing: bool,
    batch_size: usize,
    rng: Rng,
    /// A wall-clock reading (ms since the epoch) and the `Instant` it was taken at.
    clock: Option<(Instant, i64)>,
}

impl Accumulator {
    /// Milliseconds since the epoch at `now`, from a wall-clock reading (`read`) at most a
    /// second old: a record's create time then costs no clock read of its own, and a clock
    /// change shows within a second.
    pub(crate) fn wall_ms(&mut self, now: Instant, read: impl FnOnce() -> i64) -> i64 {
        match self.clock {
            Some((at, ms)) => match now.checked_duration_since(at) {
                Some(d) if d < Duration::from_secs(1) => ms + d.as_millis() as i64,
                _ => {
                    let ms = read();
                    self.clock = Some((now, ms));
                    ms
                }
            },
            None => {
                let ms = read();
                self.clock = Some((now, ms));
                ms
            }
        }
    }

    pub(crate) fn new(batch_size: usize) -> Accumulator {
        Accumulator {
            topics: HashMap::new(),
            next_batch_id: 0,
            incomplete: BTreeSet::new(),
            flush_upto: 0,
            closing: false,
            batch_size,
            rng: Rng::seeded(),
            clock: None,
        }
    }

    /// Id the next batch will get.
    pub(crate) fn next_batch_id(&self) -> u64 {
        self.next_batch_id
    }

    /// Appends a record to its partition's open batch (opening one if needed). The partition
    /// is `record.partition`, else murmur2 of the key, else the topic's sticky partition.
    pub(crate) fn append(
        &mut self,
        topic: &str,
        info: &TopicInfo,
        record: NewRecord<'_>,
        delivery: Delivery,
        now: Instant,
    ) -> Appended {
        let count = info.count.max(1);
        let batch_size = self.batch_size;
        if !self.topics.contains_key(topic) {
            let name: Arc<str> = Arc::from(topic);
            self.topics.insert(
                Arc::clone(&name),
                TopicQueues {
                    name,
                    partitions: Vec::new(),
                    sticky: None,
                    sticky_started: false,
                },
            );
        }
        let Some(tq) = self.topics.get_mut(topic) else {
            unreachable_topic()
        };
        let name = Arc::clone(&tq.name);
        if tq.partitions.len() < count as usize {
            tq.partitions
                .resize_with(count as usize, PartitionQueue::default);
        }
        let fits = |q: &PartitionQueue, len: usize| -> bool {
            q.batches.back().is_some_and(|b| {
                !b.full
                    && b.builder
                        .as_ref()
                        .is_some_and(|bb| bb.count() == 0 || bb.size() + len <= batch_size)
            })
        };
        let record_len = |q: &PartitionQueue| -> usize {
            q.batches
                .back()
                .and_then(|b| b.builder.as_ref())
                .map_or(usize::MAX / 4, |bb| {
                    bb.next_record_len(record.timestamp, record.key, record.value, record.headers)
                })
        };
        let partition = if let Some(p) = record.partition {
            p
        } else if let Some(k) = record.key {
            partition_for_key(k, count)
        } else {
            let mut p = match tq.sticky {
                Some(p) if p < count => p,
                _ => {
                    tq.sticky_started = false;
                    next_sticky(&mut self.rng, count, &info.available, None)
                }
            };
            let q = &tq.partitions[p as usize];
            if tq.sticky_started && !fits(q, record_len(q)) {
                // The sticky partition's batch is done: move on to another partition.
                p = next_sticky(&mut self.rng, count, &info.available, Some(p));
                tq.sticky_started = false;
            }
            tq.sticky = Some(p);
            p
        };
        let q = &mut tq.partitions[partition as usize];
        let len = record_len(q);
        let mut new_batch = false;
        if !fits(q, len) {
            if let Some(b) = q.batches.back_mut() {
                b.full = true;
            }
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            self.incomplete.insert(id);
            q.batches.push_back(ProducerBatch {
                id,
                topic: name,
                partition,
                builder: Some(BatchBuilder::new(batch_size)),
                wire: None,
                record_count: 0,
                created: now,
                deliveries: Vec::new(),
                reserved: 0,
                base_sequence: -1,
                attempts: 0,
                retry_at: None,
                full: false,
                maybe_written: false,
            });
            new_batch = true;
            if record.partition.is_none() && record.key.is_none() {
                tq.sticky_started = true;
            }
        }
        let Some(b) = q.batches.back_mut() else {
            unreachable_topic()
        };
        let mut full = false;
        if let Some(bb) = b.builder.as_mut() {
            let len =
                bb.next_record_len(record.timestamp, record.key, record.value, record.headers);
            bb.append(record.timestamp, record.key, record.value, record.headers);
            // Full once a record of the same size would not fit any more.
            if bb.size() + len > batch_size {
                b.full = true;
                full = true;
            }
        }
        b.record_count += 1;
        b.reserved += record.reserved;
        b.deliveries.push((delivery, record.timestamp));
        Appended {
            partition,
            new_batch,
            full,
        }
    }

    /// Puts a batch back for a retry: after the other retries (and, for idempotent batches, in
    /// sequence order), before any batch never sent.
    pub(crate) fn requeue(&mut self, batch: ProducerBatch) {
        let Some(q) = self
            .topics
            .get_mut(&*batch.topic)
            .and_then(|t| t.partitions.get_mut(batch.partition as usize))
        else {
            return;
        };
        let pos = q
            .batches
            .iter()
            .position(|b| {
                b.attempts == 0 && b.wire.is_none()
                    || (batch.base_sequence >= 0
                        && b.base_sequence >= 0
                        && b.base_sequence > batch.base_sequence)
            })
            .unwrap_or(q.batches.len());
        q.batches.insert(pos, batch);
    }

    /// Removes the batches whose `delivery.timeout.ms` has passed (oldest first, from the front
    /// of each queue) and returns them; `next` gets the earliest coming expiry.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        delivery_timeout: Duration,
        next: &mut Option<Instant>,
    ) -> Vec<ProducerBatch> {
        let mut out = Vec::new();
        for tq in self.topics.values_mut() {
            for q in &mut tq.partitions {
                while let Some(b) = q.batches.front() {
                    let deadline = b.created + delivery_timeout;
                    if now >= deadline {
                        if let Some(b) = q.batches.pop_front() {
                            out.push(b);
                        }
                    } else {
                        earliest(next, deadline);
                        break;
                    }
                }
            }
        }
        out
    }

    /// Whether any batch is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.topics
            .values()
            .all(|t| t.partitions.iter().all(|q| q.batches.is_empty()))
    }

    /// Removes every queued batch (a fatal error fails them all).
    pub(crate) fn take_all(&mut self) -> Vec<ProducerBatch> {
        let mut out = Vec::new();
        for tq in self.topics.values_mut() {
            for q in &mut tq.partitions {
                out.extend(q.batches.drain(..));
            }
        }
        out
    }

    /// After a new producer epoch: sequences restart at 0 and queued batches that had one get
    /// a new one when next drained, except those that may already be in the log under the old
    /// epoch: they are taken out and returned, to be failed, because the broker would take
    /// them again under the new epoch as new records (a duplicate that idempotence exists to
    /// prevent). The Java client re-sequences those too; librdkafka fails them as "possibly
    /// persisted", which is what we do.
    pub(crate) fn reset_sequences(&mut self) -> Vec<ProducerBatch> {
        let mut maybe_written = Vec::new();
        for tq in self.topics.values_mut() {
            for q in &mut tq.partitions {
                q.next_sequence = 0;
                q.acked_sequence = 0;
                let (gone, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut q.batches)
                    .into_iter()
                    .partition(|b| b.maybe_written && b.base_sequence >= 0);
                q.batches = kept;
                for b in &mut q.batches {
                    b.base_sequence = -1;
                }
                maybe_written.extend(gone);
            }
        }
        maybe_written
    }
}

/// Lowers `slot` to `t`.
pub(crate) fn earliest(slot: &mut Option<Instant>, t: Instant) {
    if slot.is_none_or(|s| t < s) {
        *slot = Some(t);
    }
}

#[cold]
fn unreachable_topic() -> ! {
    // Both call sites look up an entry inserted or checked just before.
    panic!("accumulator entry vanished under its own lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(count: i32) -> TopicInfo {
        TopicInfo {
            count,
            leaders: vec![1; count as usize],
            epochs: vec![0; count as usize],
            available: (0..count).collect(),
            error: None,
        }
    }

    fn rec<'a>(key: Option<&'a [u8]>, value: &'a [u8]) -> NewRecord<'a> {
        NewRecord {
            partition: None,
            key,
            value: Some(value),
            headers: &[],
            timestamp: 1_000,
            reserved: value.len() + 20,
        }
    }

    fn cb() -> Delivery {
        Delivery::Callback(Box::new(|_| {}))
    }

    #[test]
    fn keyed_records_follow_murmur2_and_batches_fill_to_batch_size() {
        let mut acc = Accumulator::new(1000);
        let now = Instant::now();
        let inf = info(3);
        for _ in 0..30 {
            let a = acc.append("t", &inf, rec(Some(b"key-001"), &[0u8; 100]), cb(), now);
            assert_eq!(a.partition, partition_for_key(b"key-001", 3));
        }
        let q = &acc.topics["t"].partitions[partition_for_key(b"key-001", 3) as usize];
        // 30 records of ~110 bytes in batches of at most 1000 bytes (61-byte header).
        assert!(q.batches.len() >= 4, "{}", q.batches.len());
        for b in q.batches.iter().take(q.batches.len() - 1) {
            assert!(b.full);
            assert!(b.size() <= 1000, "{}", b.size());
        }
        assert_eq!(q.batches.iter().map(|b| b.record_count).sum::<i32>(), 30);
        assert_eq!(acc.incomplete.len(), q.batches.len());
    }

    #[test]
    fn a_record_larger_than_batch_size_gets_its_own_batch() {
        let mut acc = Accumulator::new(200);
        let now = Instant::now();
        let inf = info(1);
        acc.append("t", &inf, rec(None, &[1u8; 10]), cb(), now);
        let a = acc.append("t", &inf, rec(None, &[1u8; 500]), cb(), now);
        assert!(a.new_batch && a.full);
        let q = &acc.topics["t"].partitions[0];
        assert_eq!(q.batches.len(), 2);
        assert_eq!(q.batches[1].record_count, 1);
    }

    #[test]
    fn keyless_records_stick_to_a_partition_until_its_batch_is_full() {
        let mut acc = Accumulator::new(1000);
        let now = Instant::now();
        let inf = info(4);
        let mut runs: Vec<(i32, usize)> = Vec::new();
        for _ in 0..100 {
            let a = acc.append("t", &inf, rec(None, &[0u8; 100]), cb(), now);
            match runs.last_mut() {
                Some((p, n)) if *p == a.partition => *n += 1,
                _ => runs.push((a.partition, 1)),
            }
        }
        // Each stint fills one batch (8 records of ~110 bytes fit in 1000), then moves on to
        // a different partition.
        assert!(runs.len() >= 10, "{runs:?}");
        for w in runs.windows(2) {
            assert_ne!(w[0].0, w[1].0);
        }
        for (_, n) in &runs[..runs.len() - 1] {
            assert_eq!(*n, 8, "{runs:?}");
        }
        let used: BTreeSet<i32> = runs.iter().map(|r| r.0).collect();
        assert!(used.len() > 1);
    }

    #[test]
    fn explicit_partition_wins_over_key() {
        let mut acc = Accumulator::new(1000);
        let inf = info(4);
        let mut r = rec(Some(b"k"), b"v");
        r.partition = Some(3);
        assert_eq!(acc.append("t", &inf, r, cb(), Instant::now()).partition, 3);
    }

    fn sent(mut b: ProducerBatch, seq: i32) -> ProducerBatch {
        b.base_sequence = seq;
        b.wire = Some((Bytes::new(), 1, 0, seq));
        b.builder = None;
        b
    }

    #[test]
    fn retries_go_back_in_sequence_order_before_new_batches() {
        let mut acc = Accumulator::new(150);
        let now = Instant::now();
        let inf = info(1);
        let mut r = rec(Some(b"k"), &[0u8; 100]);
        for _ in 0..4 {
            r.partition = Some(0);
            acc.append("t", &inf, r, cb(), now);
        }
        let Some(q) = acc.topics.get_mut("t").map(|t| &mut t.partitions[0]) else {
            panic!("no queue")
        };
        assert_eq!(q.batches.len(), 4);
        let b0 = q.batches.pop_front().map(|b| sent(b, 0));
        let b1 = q.batches.pop_front().map(|b| sent(b, 1));
        let (Some(b0), Some(b1)) = (b0, b1) else {
            panic!("no batches")
        };
        let ids = (b0.id, b1.id);
        // b1's answer comes first (out of order sequence), then b0's error.
        acc.requeue(b1);
        acc.requeue(b0);
        let q = &acc.topics["t"].partitions[0];
        let order: Vec<u64> = q.batches.iter().map(|b| b.id).collect();
        assert_eq!(order[..2], [ids.0, ids.1]);
        assert_eq!(q.batches.len(), 4);
    }

    #[test]
    fn expiry_takes_old_batches_from_the_front() {
        let mut acc = Accumulator::new(150);
        let t0 = Instant::now();
        let inf = info(1);
        acc.append("t", &inf, rec(None, &[0u8; 100]), cb(), t0);
        acc.append(
            "t",
            &inf,
            rec(None, &[0u8; 100]),
            cb(),
            t0 + Duration::from_secs(5),
        );
        let mut next = None;
        let gone = acc.expire(
            t0 + Duration::from_secs(3),
            Duration::from_secs(2),
            &mut next,
        );
        assert_eq!(gone.len(), 1);
        assert_eq!(next, Some(t0 + Duration::from_secs(7)));
        assert!(!acc.is_empty());
    }
}
