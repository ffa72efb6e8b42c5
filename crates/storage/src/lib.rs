//! Vltava's storage layer: it keeps partition logs on disk in Kafka's layout (segments with
//! sparse offset and time indexes), appends and reads record batches, recovers after a crash,
//! applies retention, compacts logs by key, and tracks idempotent producer state. It knows
//! nothing of the network.

mod checkpoint;
mod cleaner;
mod config;
mod epoch;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faultfs;
mod fileio;
mod fsync_stats;
mod group_commit;
mod index;
mod log;
mod manager;
mod producer;
mod segment;
mod simfs;

#[cfg(test)]
mod testutil;

pub use cleaner::{CleanOptions, CleanStats, DEFAULT_MAP_BUDGET_BYTES};
pub use config::{CleanupPolicy, LogConfig};
pub use epoch::{EpochEntry, LEADER_EPOCH_CHECKPOINT_FILE, LeaderEpochCache};
pub use error::StorageError;
pub use fileio::{DirEntry, FileLock, Fs, FsFile, RealFs, atomic_write, atomic_write_with};
pub use fsync_stats::{FSYNC_BUCKETS_MS, FsyncSnapshot, fsync_stats};
pub use group_commit::GroupCommit;
pub use log::{
    AppendInfo, CLEAN_RECOVERY_POINT, COMPACTION_METADATA_FILE, FileRegion, FlushHandle, Log,
    PARTITION_METADATA_FILE, ReadSlice, RegionSlice,
};
pub use manager::{
    CLEAN_SHUTDOWN_FILE, CLEANER_CHECKPOINT_FILE, LOG_START_CHECKPOINT_FILE, LogManager,
    METADATA_LOG_DIR, RECOVERY_CHECKPOINT_FILE, REPLICATION_CHECKPOINT_FILE, TopicPartition,
};
pub use producer::{BatchMetadata, ProducerEntry, ProducerStateManager, RETAINED_BATCHES};
pub use simfs::{CrashMode, Fault, FaultKind, FaultOp, SimFs, SimStats};
