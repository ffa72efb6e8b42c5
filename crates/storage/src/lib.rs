//! Vltava's storage layer: it keeps partition logs on disk in Kafka's layout (segments with
//! sparse offset and time indexes), appends and reads record batches, recovers after a crash,
//! applies retention, and tracks idempotent producer state. It knows nothing of the network.

mod checkpoint;
mod config;
mod error;
mod fileio;
mod index;
mod log;
mod manager;
mod producer;
mod segment;

#[cfg(test)]
mod testutil;

pub use config::LogConfig;
pub use error::StorageError;
pub use fileio::atomic_write;
pub use log::{AppendInfo, FlushHandle, Log, PARTITION_METADATA_FILE, ReadSlice};
pub use manager::{
    LOG_START_CHECKPOINT_FILE, LogManager, RECOVERY_CHECKPOINT_FILE, TopicPartition,
};
pub use producer::{BatchMetadata, ProducerEntry, ProducerStateManager, RETAINED_BATCHES};
