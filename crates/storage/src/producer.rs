//! Idempotent producer state (KIP-98): per producer id, its epoch and its last five batches,
//! used to drop retried duplicates and to reject sequence gaps.

use std::collections::{HashMap, HashSet, VecDeque};

use vltava_protocol::batch::BatchHeader;

use crate::error::StorageError;

/// Batches remembered per producer; Kafka producers keep at most five requests in flight.
pub const RETAINED_BATCHES: usize = 5;

/// What the log remembers of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
}

/// State of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
    last_timestamp: i64,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(RETAINED_BATCHES),
            last_timestamp: -1,
        }
    }

    /// Latest epoch seen.
    pub fn epoch(&self) -> i16 {
        self.epoch
    }

    /// Sequence of the last record written in the current epoch, if any.
    pub fn last_sequence(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    /// Up to the last [`RETAINED_BATCHES`] batches of the current epoch, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    /// Largest timestamp of the producer's last batch (-1 if none), for expiration.
    pub fn last_timestamp(&self) -> i64 {
        self.last_timestamp
    }

    /// Moves to `epoch`, forgetting batches of an older one.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    fn push(&mut self, meta: BatchMetadata) {
        if self.batches.len() == RETAINED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(meta);
        self.last_timestamp = meta.max_timestamp;
    }
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
}

/// Outcome of checking one batch against producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Not idempotent, or the next batch in sequence: write it.
    Append,
    /// A retry of this already written batch: do not write it again.
    Duplicate(BatchMetadata),
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerStateManager {
    /// An empty state.
    pub fn new() -> ProducerStateManager {
        ProducerStateManager::default()
    }

    /// State of `producer_id`, if the log knows it.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every tracked producer as `(producer id, state)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(&pid, e)| (pid, e))
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True if no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Forgets producers whose last batch is older than `max_age_ms` (Kafka's
    /// `producer.id.expiration.ms`); returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, max_age_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < max_age_ms);
        before - self.producers.len()
    }

    /// `(producer id, last offset)` of every batch the state remembers: the cleaner keeps
    /// (at least the header of) each of them, so that a rebuild from the log finds them again.
    pub(crate) fn remembered_batches(&self) -> HashSet<(i64, u64)> {
        self.producers
            .iter()
            .flat_map(|(&pid, e)| e.batches.iter().map(move |b| (pid, b.last_offset)))
            .collect()
    }

    /// Forgets every producer (before a rebuild).
    pub(crate) fn clear(&mut self) {
        self.producers.clear();
    }

    /// Updates state from a batch read back from the log, without validation: used to rebuild
    /// the state at open and after truncation.
    pub(crate) fn replay(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry::new(h.producer_epoch));
        if h.producer_epoch < entry.epoch {
            return;
        }
        entry.set_epoch(h.producer_epoch);
        if h.is_control() || h.base_sequence < 0 {
            return;
        }
        entry.push(BatchMetadata {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            first_offset: h.base_offset as u64,
            last_offset: h.last_offset() as u64,
            max_timestamp: h.max_timestamp,
        });
    }

    /// Checks a request's batches against the state, as if they were appended in order from
    /// `first_offset`, without changing anything. Returns the state to `commit` once the
    /// batches are written, or the first duplicate found (Kafka answers a request holding a
    /// duplicate with the duplicate's offsets and writes nothing).
    pub(crate) fn check<'h>(
        &self,
        headers: impl Iterator<Item = &'h BatchHeader>,
        first_offset: u64,
    ) -> Result<Result<PendingProducers, BatchMetadata>, StorageError> {
        let mut pending = PendingProducers::default();
        let mut offset = first_offset;
        for h in headers {
            let first = offset;
            let last = offset + h.last_offset_delta as u64;
            offset = last + 1;
            if h.producer_id < 0 {
                continue;
            }
            let current = pending
                .updates
                .get(&h.producer_id)
                .or_else(|| self.producers.get(&h.producer_id));
            if h.is_control() {
                if let Some(e) = current
                    && h.producer_epoch < e.epoch
                {
                    return Err(StorageError::InvalidProducerEpoch {
                        producer_id: h.producer_id,
                        epoch: h.producer_epoch,
                        current: e.epoch,
                    });
                }
                let mut e = current
                    .cloned()
                    .unwrap_or_else(|| ProducerEntry::new(h.producer_epoch));
                e.set_epoch(h.producer_epoch);
                pending.updates.insert(h.producer_id, e);
                continue;
            }
            if h.producer_epoch < 0 || h.base_sequence < 0 {
                return Err(StorageError::InvalidRecord(format!(
                    "producer {} sent epoch {} sequence {}",
                    h.producer_id, h.producer_epoch, h.base_sequence
                )));
            }
            if let SequenceCheck::Duplicate(meta) = check_sequence(current, h)? {
                return Ok(Err(meta));
            }
            let mut e = current
                .cloned()
                .unwrap_or_else(|| ProducerEntry::new(h.producer_epoch));
            e.set_epoch(h.producer_epoch);
            e.push(BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: h.last_sequence(),
                first_offset: first,
                last_offset: last,
                max_timestamp: h.max_timestamp,
            });
            pending.updates.insert(h.producer_id, e);
        }
        Ok(Ok(pending))
    }

    /// Applies the result of a successful `check` after its batches were written.
    pub(crate) fn commit(&mut self, pending: PendingProducers) {
        self.producers.extend(pending.updates);
    }
}

/// Producer entries as they will be once a checked request is written.
#[derive(Debug, Default)]
pub(crate) struct PendingProducers {
    updates: HashMap<i64, ProducerEntry>,
}

/// Kafka's rules (ProducerAppendInfo.checkSequence): an exact retry of one of the last five
/// batches is a duplicate; an older epoch is fenced; a newer epoch starts at sequence 0; the
/// same epoch continues at last + 1 (wrapping after `i32::MAX`). An unknown producer may start
/// anywhere, since its earlier batches may have been removed by retention.
fn check_sequence(
    current: Option<&ProducerEntry>,
    h: &BatchHeader,
) -> Result<SequenceCheck, StorageError> {
    let Some(e) = current else {
        return Ok(SequenceCheck::Append);
    };
    let first = h.base_sequence;
    if h.producer_epoch == e.epoch
        && let Some(dup) = e
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == h.last_sequence())
    {
        return Ok(SequenceCheck::Duplicate(*dup));
    }
    if h.producer_epoch < e.epoch {
        return Err(StorageError::InvalidProducerEpoch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            current: e.epoch,
        });
    }
    let expected = if h.producer_epoch > e.epoch {
        0
    } else {
        e.last_sequence().map_or(0, next_sequence)
    };
    if first != expected {
        return Err(StorageError::OutOfOrderSequence {
            producer_id: h.producer_id,
            expected,
            received: first,
        });
    }
    Ok(SequenceCheck::Append)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 1000,
            max_timestamp: 1000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    fn append(
        state: &mut ProducerStateManager,
        h: &BatchHeader,
        offset: u64,
    ) -> Result<Result<(), BatchMetadata>, StorageError> {
        Ok(state
            .check(std::iter::once(h), offset)?
            .map(|p| state.commit(p)))
    }

    #[test]
    fn sequence_rules() -> Result<(), StorageError> {
        let mut s = ProducerStateManager::new();
        assert_eq!(
            append(&mut s, &header(1, 0, 7, 3), 0)?,
            Ok(()),
            "unknown producer starts anywhere"
        );
        assert_eq!(append(&mut s, &header(1, 0, 10, 2), 3)?, Ok(()));
        let dup = append(&mut s, &header(1, 0, 7, 3), 5)?;
        assert_eq!(
            dup.map_err(|m| (m.first_offset, m.last_offset)),
            Err((0, 2))
        );
        assert!(matches!(
            append(&mut s, &header(1, 0, 13, 1), 5),
            Err(StorageError::OutOfOrderSequence {
                expected: 12,
                received: 13,
                ..
            })
        ));
        assert!(matches!(
            append(&mut s, &header(1, 1, 5, 1), 5),
            Err(StorageError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(append(&mut s, &header(1, 1, 0, 1), 5)?, Ok(()));
        assert!(matches!(
            append(&mut s, &header(1, 0, 12, 1), 6),
            Err(StorageError::InvalidProducerEpoch {
                epoch: 0,
                current: 1,
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn sequence_wraps_after_i32_max() -> Result<(), StorageError> {
        let mut s = ProducerStateManager::new();
        append(&mut s, &header(9, 0, i32::MAX - 1, 2), 0)?.ok();
        assert_eq!(
            s.get(9).and_then(ProducerEntry::last_sequence),
            Some(i32::MAX)
        );
        assert_eq!(append(&mut s, &header(9, 0, 0, 1), 2)?, Ok(()));
        Ok(())
    }

    #[test]
    fn only_five_batches_are_remembered() -> Result<(), StorageError> {
        let mut s = ProducerStateManager::new();
        for i in 0..7 {
            append(&mut s, &header(3, 0, i, 1), i as u64)?.ok();
        }
        assert_eq!(
            s.get(3).map(|e| e.batches().count()),
            Some(RETAINED_BATCHES)
        );
        assert!(
            append(&mut s, &header(3, 0, 2, 1), 7)?.is_err(),
            "seq 2 is still cached"
        );
        assert!(
            append(&mut s, &header(3, 0, 1, 1), 7).is_err(),
            "seq 1 fell out of the cache: out of order, not duplicate"
        );
        Ok(())
    }

    #[test]
    fn a_rejected_request_changes_nothing() -> Result<(), StorageError> {
        let mut s = ProducerStateManager::new();
        append(&mut s, &header(1, 0, 0, 1), 0)?.ok();
        let before = s.clone();
        let good = header(1, 0, 1, 1);
        let gap = header(1, 0, 5, 1);
        assert!(s.check([good, gap].iter(), 1).is_err());
        assert_eq!(s, before);
        Ok(())
    }

    #[test]
    fn iter_lists_every_producer() -> Result<(), StorageError> {
        let mut s = ProducerStateManager::new();
        append(&mut s, &header(1, 0, 0, 3), 0)?.ok();
        append(&mut s, &header(2, 4, 10, 1), 3)?.ok();
        let mut seen: Vec<(i64, i16, Option<i32>)> = s
            .iter()
            .map(|(pid, e)| (pid, e.epoch(), e.last_sequence()))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![(1, 0, Some(2)), (2, 4, Some(10))]);
        Ok(())
    }

    #[test]
    fn expiration() -> Result<(), StorageError> {
        let mut s = ProducerStateManager::new();
        append(&mut s, &header(1, 0, 0, 1), 0)?.ok();
        assert_eq!(s.remove_expired(1500, 1000), 0);
        assert_eq!(s.remove_expired(2000, 1000), 1);
        assert!(s.is_empty());
        Ok(())
    }
}
