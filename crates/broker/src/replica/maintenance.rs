//! Background log maintenance the broker's timers run: retention, time-based flushes,
//! compaction, checkpoints, and the clean shutdown.

use vltava_storage::{CleanOptions, StorageError};

use super::{ReplicaManager, now_ms};
use crate::disk;

impl ReplicaManager {
    /// Deletes segments past retention in every partition.
    pub fn apply_retention(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            for p in t.local_partitions() {
                let deleted = {
                    let mut log = p.log();
                    let hw = log.high_watermark();
                    log.apply_retention_below(now, hw).map_err(disk::on_error)
                };
                match deleted {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %t.name, partition = p.index, segments = n, "retention deleted segments")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %t.name, partition = p.index, error = %e, "retention failed")
                    }
                }
            }
        }
    }

    /// Runs the time-based flush policy (`flush.ms`) of every partition.
    pub fn maybe_flush_all(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            for p in t.local_partitions() {
                if let Err(e) = p.log().maybe_flush(now).map_err(disk::on_error) {
                    tracing::warn!(topic = %t.name, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Compacts every log whose policy includes `compact` and that has enough dirty bytes,
    /// never at or above its high watermark (records there may still be truncated by a leader
    /// change, and must not have removed older values).
    pub fn clean_all(&self) {
        let high_watermarks: std::collections::HashMap<(String, i32), u64> = self
            .all_topics()
            .iter()
            .flat_map(|t| {
                t.local_partitions()
                    .map(|p| ((t.name.clone(), p.index), p.log().high_watermark()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let result = self
            .lock_logs()
            .clean_all_with(now_ms(), |tp| CleanOptions {
                max_offset: high_watermarks
                    .get(&(tp.topic.clone(), tp.partition))
                    .copied()
                    .unwrap_or(0),
                ..CleanOptions::default()
            })
            .map_err(disk::on_error);
        match result {
            Ok(cleaned) => {
                for (tp, stats) in cleaned {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, ?stats, "compacted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "log cleaner failed"),
        }
    }

    /// Writes recovery-point and log-start checkpoints.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.lock_logs().checkpoint().map_err(disk::on_error)
    }

    /// Flushes every log, writes checkpoints and marks the shutdown clean, so the next start
    /// recovers nothing.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        self.lock_logs().shutdown_cleanly()
    }
}
