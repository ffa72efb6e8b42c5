//! openraft's log storage on a vltava-storage partition log in Kafka's layout.
//!
//! The metadata log lives in `<data-dir>/__cluster_metadata-0/`, as KRaft's does. Each raft entry
//! is one record batch holding one record: the batch's `baseOffset` is the raft index and its
//! `partitionLeaderEpoch` the raft term, so Kafka's tools read the file as an ordinary log; the
//! record value carries what the batch header cannot (the proposing leader's node id and the
//! payload) in the versioned encoding of [`encode_entry_value`].
//!
//! Beside the segments: `quorum-state` holds the vote (JSON, as Kafka's file of that name) and
//! `purged-log-id` the last purged log id (JSON); both are replaced atomically with fsync.
//!
//! Durability: `append` fsyncs the segments before its callback fires and `save_vote` fsyncs the
//! vote file before it returns, so after kill -9 the files are the source of truth; reopening
//! CRC-checks every batch and cuts the log at the first torn or corrupt one.
//!
//! Blocking I/O runs under `tokio::task::spawn_blocking`, not `block_in_place`: the latter panics
//! on a current-thread runtime, while `spawn_blocking` works on both flavours and, with a paused
//! test clock, keeps time from auto-advancing while the I/O is in flight.
//!
//! Trimming: openraft purges the log once a snapshot covers it, keeping the newest
//! `openraft::Config::max_in_snapshot_log_to_keep` entries below the snapshot (default 1000;
//! 0 trims everything the snapshot holds) in batches of `purge_batch_size`. `purge` moves the log
//! start with `Log::delete_records_before`, which deletes whole segments below it, so disk use
//! is bounded by the kept entries plus one segment ([`metadata_log_config`] keeps segments small).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LeaderId, LogId, LogState, Membership,
    OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};
use vltava_protocol::batch::{
    BatchError, BatchHeader, Compression, HEADER_LEN, build_batch, parse_header, verify,
};
use vltava_protocol::records::{RecordView, parse_records};
use vltava_storage::{LogConfig, atomic_write};

use super::{ControllerNode, MetadataPayload, MetadataRaftConfig, RaftNodeId};

/// The metadata log's partition directory under the data directory (KRaft's name).
pub const METADATA_PARTITION_DIR: &str = vltava_storage::METADATA_LOG_DIR;
/// The vote's file in the partition directory (KRaft's name).
pub const QUORUM_STATE_FILE: &str = "quorum-state";
/// The last purged log id's file in the partition directory (Vltava's own).
pub const PURGED_LOG_ID_FILE: &str = "purged-log-id";

/// A raft entry of the metadata quorum.
pub type MetadataEntry = Entry<MetadataRaftConfig>;
/// A raft log id of the metadata quorum.
pub type MetadataLogId = LogId<RaftNodeId>;
/// A cluster membership of the metadata quorum.
pub type MetadataMembership = Membership<RaftNodeId, ControllerNode>;

/// Version of the record-value encoding written by [`encode_entry_value`].
const ENTRY_FORMAT_VERSION: u8 = 0;
const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;
/// Version of the JSON state files.
const STATE_FILE_VERSION: u16 = 0;
/// Reads in pieces of this size, so a long range does not need one buffer as large as itself.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// What one `limited_get_log_entries` call (replication) reads at most, beyond one entry.
const LIMITED_READ_BYTES: usize = 4 << 20;
/// Largest record value: what fits a record batch (lengths are i32) with room for the framing.
const MAX_VALUE_BYTES: usize = i32::MAX as usize - 1024;

/// The partition directory of the metadata log under `data_dir`.
pub fn metadata_partition_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(METADATA_PARTITION_DIR)
}

/// Log settings for the metadata log: small segments, so that purging below a snapshot frees
/// space soon; no retention, because only snapshots may trim the raft log; no flush policy,
/// because the store fsyncs every append itself.
pub fn metadata_log_config() -> LogConfig {
    const SEGMENT_BYTES: u64 = 8 << 20;
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        max_message_bytes: SEGMENT_BYTES,
        retention_ms: -1,
        retention_bytes: -1,
        flush_interval_messages: u64::MAX,
        flush_interval_ms: i64::MAX,
        flush_on_append: false,
        ..LogConfig::default()
    }
}

/// Why an entry could not be encoded as a record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryEncodeError {
    /// Kafka's `partitionLeaderEpoch` is an i32.
    #[error("term {0} does not fit a record batch's partitionLeaderEpoch")]
    TermTooLarge(u64),
    /// Kafka's `baseOffset` is an i64.
    #[error("index {0} does not fit a record batch's baseOffset")]
    IndexTooLarge(u64),
    /// A length or count beyond what the encoding (or a record batch) can frame.
    #[error("{what} of {len} is too large to encode")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length or count.
        len: usize,
    },
}

/// Why bytes are not an encoded entry. Decoding never panics and never allocates more than the
/// input can hold, whatever the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryDecodeError {
    /// The record batch itself is malformed (framing, magic, CRC, records).
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
    /// Bytes after the batch's declared end.
    #[error("{0} bytes follow the record batch")]
    TrailingBatchBytes(usize),
    /// Metadata batches are written uncompressed.
    #[error("record batch is compressed or has an unknown codec")]
    Compressed,
    /// One entry is one record.
    #[error("record batch holds {0} records, not one")]
    RecordCount(i32),
    /// Negative `baseOffset` or `partitionLeaderEpoch`.
    #[error("record batch has a negative base offset or leader epoch")]
    Negative,
    /// The record has a null value.
    #[error("record has no value")]
    NullValue,
    /// The value ends early.
    #[error("entry value truncated at byte {at}: {needed} more bytes needed")]
    Truncated {
        /// Where reading stopped.
        at: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// Written by a newer version of Vltava.
    #[error("unknown entry format version {0}")]
    UnknownVersion(u8),
    /// Not blank, normal or membership.
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    /// A count larger than the remaining bytes could hold.
    #[error("count {count} at byte {at} exceeds the remaining bytes")]
    CountTooLarge {
        /// The declared count.
        count: u32,
        /// Where it was read.
        at: usize,
    },
    /// A node address that is not UTF-8.
    #[error("node address at byte {0} is not UTF-8")]
    InvalidUtf8(usize),
    /// Bytes after the value's last field.
    #[error("{0} trailing bytes after the entry value")]
    TrailingBytes(usize),
}

/// Why the log store failed. openraft sees it as a `StorageError`, which stops the node.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The partition log failed.
    #[error(transparent)]
    Storage(#[from] vltava_storage::StorageError),
    /// A file operation on the state files or the directory failed.
    #[error("metadata log I/O: {0}")]
    Io(#[from] io::Error),
    /// An entry could not be encoded.
    #[error(transparent)]
    Encode(#[from] EntryEncodeError),
    /// A stored batch does not decode as an entry.
    #[error("metadata log entry at offset {offset}: {source}")]
    Decode {
        /// Offset of the batch.
        offset: i64,
        /// What was wrong with it.
        source: EntryDecodeError,
    },
    /// `quorum-state` or `purged-log-id` is unreadable; starting without it could mean voting
    /// twice in a term, so the node must not start.
    #[error("{path}: {reason}")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Entries that would leave a hole in the log or overwrite it without a truncation.
    #[error("entry at index {got} does not follow the log end {expected}")]
    NotContiguous {
        /// The index the next entry must have.
        expected: u64,
        /// The index it had.
        got: u64,
    },
    /// A truncation at or below the last purged index.
    #[error("index {index} is at or below the last purged index {purged}")]
    BelowPurged {
        /// The index asked for.
        index: u64,
        /// The last purged index.
        purged: u64,
    },
    /// The log assigned an offset other than the entry's index.
    #[error("log appended index {expected} at offset {got}")]
    OffsetMismatch {
        /// The entry's index.
        expected: u64,
        /// The offset it got.
        got: u64,
    },
    /// A previous operation panicked while holding the log.
    #[error("metadata log lock poisoned by a panic")]
    Poisoned,
    /// The blocking task running the I/O panicked or was cancelled.
    #[error("metadata log I/O task failed: {0}")]
    Task(String),
}

// ---------------------------------------------------------------------------------------------
// Entry encoding.

/// Appends big-endian fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// A count or length as u32.
    pub(crate) fn len(&mut self, what: &'static str, len: usize) -> Result<(), EntryEncodeError> {
        let v = u32::try_from(len).map_err(|_| EntryEncodeError::TooLarge { what, len })?;
        self.u32(v);
        Ok(())
    }
    /// Length-prefixed bytes.
    pub(crate) fn bytes(&mut self, what: &'static str, b: &[u8]) -> Result<(), EntryEncodeError> {
        self.len(what, b.len())?;
        self.0.extend_from_slice(b);
        Ok(())
    }
    pub(crate) fn log_id(&mut self, id: &Option<MetadataLogId>) {
        match id {
            None => self.u8(0),
            Some(id) => {
                self.u8(1);
                self.u64(id.leader_id.term);
                self.u64(id.leader_id.node_id);
                self.u64(id.index);
            }
        }
    }
    pub(crate) fn membership(&mut self, m: &MetadataMembership) -> Result<(), EntryEncodeError> {
        let configs = m.get_joint_config();
        self.len("membership config count", configs.len())?;
        for config in configs {
            self.len("voter count", config.len())?;
            for id in config {
                self.u64(*id);
            }
        }
        let nodes: Vec<_> = m.nodes().collect();
        self.len("node count", nodes.len())?;
        for (id, node) in nodes {
            self.u64(*id);
            self.bytes("node address", node.addr.as_bytes())?;
        }
        Ok(())
    }
}

/// Reads big-endian fields, failing with a typed error at the end of the input.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], EntryDecodeError> {
        if n > self.remaining() {
            return Err(EntryDecodeError::Truncated {
                at: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, EntryDecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, EntryDecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, EntryDecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    /// A count of items of at least `min_item_bytes` each, refused if the remaining bytes could
    /// not hold them: this is what keeps a forged count from reserving memory.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, EntryDecodeError> {
        let at = self.pos;
        let count = self.u32()?;
        let n = count as usize;
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(EntryDecodeError::CountTooLarge { count, at });
        }
        Ok(n)
    }
    /// Length-prefixed bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], EntryDecodeError> {
        let n = self.count(1)?;
        self.take(n)
    }
    pub(crate) fn log_id(&mut self) -> Result<Option<MetadataLogId>, EntryDecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let term = self.u64()?;
                let node_id = self.u64()?;
                let index = self.u64()?;
                Ok(Some(LogId::new(
                    CommittedLeaderId::new(term, node_id),
                    index,
                )))
            }
            other => Err(EntryDecodeError::UnknownKind(other)),
        }
    }
    pub(crate) fn membership(&mut self) -> Result<MetadataMembership, EntryDecodeError> {
        let config_count = self.count(4)?;
        let mut configs = Vec::with_capacity(config_count);
        for _ in 0..config_count {
            let voters = self.count(8)?;
            let mut config = BTreeSet::new();
            for _ in 0..voters {
                config.insert(self.u64()?);
            }
            configs.push(config);
        }
        let node_count = self.count(12)?;
        let mut nodes = BTreeMap::new();
        for _ in 0..node_count {
            let id = self.u64()?;
            let at = self.pos;
            let addr = std::str::from_utf8(self.bytes()?)
                .map_err(|_| EntryDecodeError::InvalidUtf8(at))?;
            nodes.insert(
                id,
                ControllerNode {
                    addr: addr.to_owned(),
                },
            );
        }
        Ok(Membership::new(configs, nodes))
    }
    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), EntryDecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(EntryDecodeError::TrailingBytes(n)),
        }
    }
}

/// The record value of `entry` (format version 0): `version: u8`, `leader node id: u64`,
/// `kind: u8` (0 blank, 1 normal, 2 membership), then for normal `len: u32` + payload, for
/// membership `configs: u32` × (`voters: u32` × `id: u64`) and `nodes: u32` × (`id: u64`,
/// `len: u32` + address). Integers are big-endian. The term and index are not repeated: they are
/// the batch's leader epoch and base offset.
pub fn encode_entry_value(entry: &MetadataEntry) -> Result<Vec<u8>, EntryEncodeError> {
    let mut w = Writer::default();
    w.u8(ENTRY_FORMAT_VERSION);
    w.u64(entry.log_id.leader_id.node_id);
    match &entry.payload {
        EntryPayload::Blank => w.u8(KIND_BLANK),
        EntryPayload::Normal(p) => {
            w.u8(KIND_NORMAL);
            w.bytes("payload", &p.0)?;
        }
        EntryPayload::Membership(m) => {
            w.u8(KIND_MEMBERSHIP);
            w.membership(m)?;
        }
    }
    if w.0.len() > MAX_VALUE_BYTES {
        return Err(EntryEncodeError::TooLarge {
            what: "entry",
            len: w.0.len(),
        });
    }
    Ok(w.0)
}

/// Decodes a record value written by [`encode_entry_value`]: the leader node id and the payload.
pub fn decode_entry_value(
    value: &[u8],
) -> Result<(RaftNodeId, EntryPayload<MetadataRaftConfig>), EntryDecodeError> {
    let mut r = Reader::new(value);
    let version = r.u8()?;
    if version != ENTRY_FORMAT_VERSION {
        return Err(EntryDecodeError::UnknownVersion(version));
    }
    let leader = r.u64()?;
    let payload = match r.u8()? {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(MetadataPayload(Bytes::copy_from_slice(r.bytes()?))),
        KIND_MEMBERSHIP => EntryPayload::Membership(r.membership()?),
        other => return Err(EntryDecodeError::UnknownKind(other)),
    };
    r.finish()?;
    Ok((leader, payload))
}

/// The record batch storing `entry`: base offset = index, partition leader epoch = term, one
/// uncompressed record with a null key and [`encode_entry_value`] as its value.
pub fn encode_entry(entry: &MetadataEntry, timestamp_ms: i64) -> Result<Vec<u8>, EntryEncodeError> {
    let term = entry.log_id.leader_id.term;
    let epoch = i32::try_from(term).map_err(|_| EntryEncodeError::TermTooLarge(term))?;
    let index = entry.log_id.index;
    let base_offset = i64::try_from(index).map_err(|_| EntryEncodeError::IndexTooLarge(index))?;
    let value = encode_entry_value(entry)?;
    let mut records = Vec::with_capacity(value.len() + 16);
    RecordView {
        attributes: 0,
        timestamp_delta: 0,
        offset_delta: 0,
        key: None,
        value: Some(&value),
        // No headers: a header count of zero.
        headers: &[0],
    }
    .encode(&mut records);
    let header = BatchHeader {
        base_offset,
        batch_length: 0,
        partition_leader_epoch: epoch,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: 0,
        base_timestamp: timestamp_ms,
        max_timestamp: timestamp_ms,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: 1,
    };
    Ok(build_batch(&header, &records))
}

/// Decodes one record batch written by [`encode_entry`] (CRC checked) back into the entry.
pub fn decode_entry(batch: &[u8]) -> Result<MetadataEntry, EntryDecodeError> {
    let header = verify(batch)?;
    let total = header.total_len();
    if batch.len() > total {
        return Err(EntryDecodeError::TrailingBatchBytes(batch.len() - total));
    }
    if header.compression() != Some(Compression::None) {
        return Err(EntryDecodeError::Compressed);
    }
    if header.record_count != 1 || header.last_offset_delta != 0 {
        return Err(EntryDecodeError::RecordCount(header.record_count));
    }
    let (Ok(index), Ok(term)) = (
        u64::try_from(header.base_offset),
        u64::try_from(header.partition_leader_epoch),
    ) else {
        return Err(EntryDecodeError::Negative);
    };
    let records = parse_records(&batch[HEADER_LEN..total], 1)?;
    let value = records
        .first()
        .and_then(|r| r.value)
        .ok_or(EntryDecodeError::NullValue)?;
    let (leader, payload) = decode_entry_value(value)?;
    Ok(Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
        payload,
    })
}

// ---------------------------------------------------------------------------------------------
// State files.

/// `quorum-state`, with Kafka's field names where they mean the same thing.
#[derive(Serialize, Deserialize)]
struct QuorumStateFile {
    data_version: u16,
    #[serde(rename = "leaderEpoch")]
    leader_epoch: u64,
    #[serde(rename = "votedId")]
    voted_id: u64,
    /// openraft's committed vote: a quorum granted it, so `votedId` is the leader.
    committed: bool,
}

/// `purged-log-id`.
#[derive(Serialize, Deserialize)]
struct PurgedFile {
    data_version: u16,
    term: u64,
    #[serde(rename = "nodeId")]
    node_id: u64,
    index: u64,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, LogStoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| LogStoreError::StateFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), LogStoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| LogStoreError::StateFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    atomic_write(path, &bytes)?;
    Ok(())
}

fn check_version(path: &Path, version: u16) -> Result<(), LogStoreError> {
    if version == STATE_FILE_VERSION {
        Ok(())
    } else {
        Err(LogStoreError::StateFile {
            path: path.to_path_buf(),
            reason: format!("unknown data_version {version}"),
        })
    }
}

fn read_vote(dir: &Path) -> Result<Option<Vote<RaftNodeId>>, LogStoreError> {
    let path = dir.join(QUORUM_STATE_FILE);
    let Some(f) = read_json::<QuorumStateFile>(&path)? else {
        return Ok(None);
    };
    check_version(&path, f.data_version)?;
    Ok(Some(Vote {
        leader_id: LeaderId::new(f.leader_epoch, f.voted_id),
        committed: f.committed,
    }))
}

fn read_purged(dir: &Path) -> Result<Option<MetadataLogId>, LogStoreError> {
    let path = dir.join(PURGED_LOG_ID_FILE);
    let Some(f) = read_json::<PurgedFile>(&path)? else {
        return Ok(None);
    };
    check_version(&path, f.data_version)?;
    Ok(Some(LogId::new(
        CommittedLeaderId::new(f.term, f.node_id),
        f.index,
    )))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// True for the files of a segment: `<20 digits>.log|.index|.timeindex`.
fn is_segment_file(name: &str) -> bool {
    let Some((stem, ext)) = name.split_once('.') else {
        return false;
    };
    stem.len() == 20
        && stem.bytes().all(|b| b.is_ascii_digit())
        && matches!(ext, "log" | "index" | "timeindex")
}

// ---------------------------------------------------------------------------------------------
// The store.

/// The open log and what is cached about it. Every method does blocking I/O.
struct LogInner {
    dir: PathBuf,
    config: LogConfig,
    log: vltava_storage::Log,
    last_purged: Option<MetadataLogId>,
    /// Id of the last entry in the log; `None` when the log holds no entry.
    last_log_id: Option<MetadataLogId>,
    vote: Option<Vote<RaftNodeId>>,
}

impl LogInner {
    fn open(dir: PathBuf, config: LogConfig) -> Result<LogInner, LogStoreError> {
        std::fs::create_dir_all(&dir)?;
        let vote = read_vote(&dir)?;
        let last_purged = read_purged(&dir)?;
        let start = last_purged.map(|p| p.index.saturating_add(1));
        // Recovery point 0: every batch is CRC-checked, so a torn tail is cut off. The metadata
        // log is small (trimmed below snapshots), so the full scan is cheap.
        let log =
            vltava_storage::Log::open_with_log_start(&dir, config.clone(), 0, start, now_ms())?;
        let mut inner = LogInner {
            dir,
            config,
            log,
            last_purged,
            last_log_id: None,
            vote,
        };
        if let Some(start) = start {
            // A crash between recording a purge and trimming the log leaves this to redo.
            inner.trim_to(start)?;
        }
        inner.last_log_id = inner.read_last_log_id()?;
        Ok(inner)
    }

    fn is_empty(&self) -> bool {
        self.log.log_end_offset() <= self.log.log_start_offset()
    }

    /// Makes the log start at `start` or later.
    fn trim_to(&mut self, start: u64) -> Result<(), LogStoreError> {
        if self.log.log_end_offset() < start {
            self.restart_at(start)?;
        } else if self.log.log_start_offset() < start {
            self.log.delete_records_before(start)?;
        }
        Ok(())
    }

    /// Empties the log and makes its next offset `start`, which lies beyond its end (after a
    /// purge past the last entry, when a follower installed a snapshot ahead of its log). `Log`
    /// cannot move an empty log's end forward, so its segment files are removed and it is
    /// reopened at `start`. A crash halfway leaves only entries below `start`, which the next
    /// open trims again from the purged log id (or, with no purge, the next append).
    fn restart_at(&mut self, start: u64) -> Result<(), LogStoreError> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_str().is_some_and(is_segment_file) {
                std::fs::remove_file(entry.path())?;
            }
        }
        sync_dir(&self.dir)?;
        self.log = vltava_storage::Log::open_with_log_start(
            &self.dir,
            self.config.clone(),
            0,
            Some(start),
            now_ms(),
        )?;
        self.last_log_id = None;
        Ok(())
    }

    fn read_last_log_id(&self) -> Result<Option<MetadataLogId>, LogStoreError> {
        if self.is_empty() {
            return Ok(None);
        }
        let end = self.log.log_end_offset();
        Ok(self
            .read_range(end - 1, end, usize::MAX)?
            .last()
            .map(|e| e.log_id))
    }

    /// Entries with indexes in `[start, end)` that are in the log, reading at most about
    /// `max_bytes` (always at least one entry if there is one).
    fn read_range(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<MetadataEntry>, LogStoreError> {
        let start = start.max(self.log.log_start_offset());
        let end = end.min(self.log.log_end_offset());
        let mut out = Vec::new();
        let mut next = start;
        let mut budget = max_bytes;
        while next < end && budget > 0 {
            let slice = self
                .log
                .read(next, budget.min(READ_CHUNK_BYTES), end, true)?;
            if slice.bytes.is_empty() {
                break;
            }
            let mut rest: &[u8] = &slice.bytes;
            while !rest.is_empty() {
                let header = parse_header(rest).map_err(|e| LogStoreError::Decode {
                    offset: next as i64,
                    source: e.into(),
                })?;
                let len = header.total_len().min(rest.len());
                let (batch, tail) = rest.split_at(len);
                rest = tail;
                let entry = decode_entry(batch).map_err(|source| LogStoreError::Decode {
                    offset: header.base_offset,
                    source,
                })?;
                if (start..end).contains(&entry.log_id.index) {
                    out.push(entry);
                }
            }
            budget = budget.saturating_sub(slice.bytes.len());
            if slice.next_offset <= next {
                break;
            }
            next = slice.next_offset;
        }
        Ok(out)
    }

    fn append(&mut self, mut batches: Vec<(MetadataLogId, Vec<u8>)>) -> Result<(), LogStoreError> {
        // Entries at or below the purged id are committed and held by a snapshot already, so a
        // copy sent again has nothing to add (and the log no longer starts that low).
        if let Some(p) = self.last_purged {
            batches.retain(|(id, _)| id.index > p.index);
        }
        let Some((first, _)) = batches.first() else {
            return Ok(());
        };
        let first_index = first.index;
        let end = self.log.log_end_offset();
        if first_index != end {
            // An empty log may start anywhere after the purged id: openraft appends a
            // follower's first entry wherever the leader's log is.
            if self.is_empty() && first_index > end {
                tracing::warn!(dir = %self.dir.display(), log_end = end, first_index, "metadata log restarts at an entry past its end");
                self.restart_at(first_index)?;
            } else {
                return Err(LogStoreError::NotContiguous {
                    expected: end,
                    got: first_index,
                });
            }
        }
        let now = now_ms();
        let mut expected = first_index;
        let mut rest = batches.as_slice();
        // `Log::append` stamps one leader epoch on all its batches, so entries go in runs of
        // one term.
        while let Some((head, _)) = rest.first() {
            let term = head.leader_id.term;
            let run = rest
                .iter()
                .take_while(|(id, _)| id.leader_id.term == term)
                .count();
            let (group, tail) = rest.split_at(run);
            rest = tail;
            let mut framed = Vec::with_capacity(group.len());
            for (id, bytes) in group {
                if id.index != expected {
                    return Err(LogStoreError::NotContiguous {
                        expected,
                        got: id.index,
                    });
                }
                expected += 1;
                let header = parse_header(bytes).map_err(|e| LogStoreError::Decode {
                    offset: id.index as i64,
                    source: e.into(),
                })?;
                framed.push((header, bytes.as_slice()));
            }
            let epoch = i32::try_from(term).map_err(|_| EntryEncodeError::TermTooLarge(term))?;
            let info = self.log.append(&framed, epoch, now)?;
            if info.first_offset != head.index {
                return Err(LogStoreError::OffsetMismatch {
                    expected: head.index,
                    got: info.first_offset,
                });
            }
        }
        self.log.flush()?;
        self.last_log_id = batches.last().map(|(id, _)| *id);
        Ok(())
    }

    fn truncate(&mut self, index: u64) -> Result<(), LogStoreError> {
        if let Some(p) = self.last_purged
            && index <= p.index
        {
            return Err(LogStoreError::BelowPurged {
                index,
                purged: p.index,
            });
        }
        self.log.truncate_to(index)?;
        // Durable now, so that removed entries cannot reappear after a crash once the vote or
        // later appends have moved on.
        self.log.flush()?;
        self.last_log_id = self.read_last_log_id()?;
        Ok(())
    }

    fn purge(&mut self, log_id: MetadataLogId) -> Result<(), LogStoreError> {
        if self.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        // Recorded first: the next open trims the log to it, so a crash during the trim is
        // harmless, whereas a trim without the record would lose the purged id.
        write_json(
            &self.dir.join(PURGED_LOG_ID_FILE),
            &PurgedFile {
                data_version: STATE_FILE_VERSION,
                term: log_id.leader_id.term,
                node_id: log_id.leader_id.node_id,
                index: log_id.index,
            },
        )?;
        self.last_purged = Some(log_id);
        self.trim_to(log_id.index.saturating_add(1))?;
        if self.is_empty() {
            self.last_log_id = None;
        }
        Ok(())
    }

    fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> Result<(), LogStoreError> {
        write_json(
            &self.dir.join(QUORUM_STATE_FILE),
            &QuorumStateFile {
                data_version: STATE_FILE_VERSION,
                leader_epoch: vote.leader_id.term,
                voted_id: vote.leader_id.node_id,
                committed: vote.committed,
            },
        )?;
        self.vote = Some(*vote);
        Ok(())
    }

    fn log_state(&self) -> LogState<MetadataRaftConfig> {
        LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: self.last_log_id.or(self.last_purged),
        }
    }
}

type Shared = Arc<RwLock<LogInner>>;

/// Runs `f` on the log under the write lock, on tokio's blocking pool.
async fn with_write<T, F>(shared: &Shared, f: F) -> Result<T, LogStoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut LogInner) -> Result<T, LogStoreError> + Send + 'static,
{
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let mut inner = shared.write().map_err(|_| LogStoreError::Poisoned)?;
        f(&mut inner)
    })
    .await
    .map_err(|e| LogStoreError::Task(e.to_string()))?
}

/// Runs `f` on the log under the read lock, on tokio's blocking pool.
async fn with_read<T, F>(shared: &Shared, f: F) -> Result<T, LogStoreError>
where
    T: Send + 'static,
    F: FnOnce(&LogInner) -> Result<T, LogStoreError> + Send + 'static,
{
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let inner = shared.read().map_err(|_| LogStoreError::Poisoned)?;
        f(&inner)
    })
    .await
    .map_err(|e| LogStoreError::Task(e.to_string()))?
}

/// Half-open `[start, end)` of a range of indexes.
fn index_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

fn read_error(e: LogStoreError) -> StorageError<RaftNodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_error(e: LogStoreError) -> StorageError<RaftNodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// openraft's log storage for the metadata quorum (see the module documentation). Write
/// operations take `&mut self` and are awaited one at a time, which serialises them as openraft
/// requires; readers from [`RaftLogStorage::get_log_reader`] read concurrently.
pub struct MetadataLogStore {
    shared: Shared,
    dir: PathBuf,
}

/// A reader of the metadata log, sharing the store's open log (replication tasks hold these).
#[derive(Clone)]
pub struct MetadataLogReader {
    shared: Shared,
}

impl MetadataLogStore {
    /// Opens (creating if missing) the metadata log under `data_dir`, with
    /// [`metadata_log_config`].
    pub async fn open(data_dir: &Path) -> Result<MetadataLogStore, LogStoreError> {
        MetadataLogStore::open_with_config(data_dir, metadata_log_config()).await
    }

    /// [`MetadataLogStore::open`] with other log settings (tests use tiny segments).
    pub async fn open_with_config(
        data_dir: &Path,
        config: LogConfig,
    ) -> Result<MetadataLogStore, LogStoreError> {
        let dir = metadata_partition_dir(data_dir);
        let open_dir = dir.clone();
        let inner = tokio::task::spawn_blocking(move || LogInner::open(open_dir, config))
            .await
            .map_err(|e| LogStoreError::Task(e.to_string()))??;
        Ok(MetadataLogStore {
            shared: Arc::new(RwLock::new(inner)),
            dir,
        })
    }

    /// The partition directory holding the log, the vote and the purged log id.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `(log start offset, log end offset)` of the partition log.
    pub async fn offsets(&self) -> Result<(u64, u64), LogStoreError> {
        with_read(&self.shared, |inner| {
            Ok((inner.log.log_start_offset(), inner.log.log_end_offset()))
        })
        .await
    }

    fn reader(&self) -> MetadataLogReader {
        MetadataLogReader {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl RaftLogReader<MetadataRaftConfig> for MetadataLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetadataEntry>, StorageError<RaftNodeId>> {
        let (start, end) = index_bounds(&range);
        with_read(&self.shared, move |inner| {
            inner.read_range(start, end, usize::MAX)
        })
        .await
        .map_err(read_error)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<MetadataEntry>, StorageError<RaftNodeId>> {
        with_read(&self.shared, move |inner| {
            inner.read_range(start, end, LIMITED_READ_BYTES)
        })
        .await
        .map_err(read_error)
    }
}

impl RaftLogReader<MetadataRaftConfig> for MetadataLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetadataEntry>, StorageError<RaftNodeId>> {
        self.reader().try_get_log_entries(range).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<MetadataEntry>, StorageError<RaftNodeId>> {
        self.reader().limited_get_log_entries(start, end).await
    }
}

impl RaftLogStorage<MetadataRaftConfig> for MetadataLogStore {
    type LogReader = MetadataLogReader;

    async fn get_log_state(
        &mut self,
    ) -> Result<LogState<MetadataRaftConfig>, StorageError<RaftNodeId>> {
        with_read(&self.shared, |inner| Ok(inner.log_state()))
            .await
            .map_err(read_error)
    }

    async fn get_log_reader(&mut self) -> MetadataLogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> Result<(), StorageError<RaftNodeId>> {
        let vote = *vote;
        with_write(&self.shared, move |inner| inner.save_vote(&vote))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftNodeId>>, StorageError<RaftNodeId>> {
        with_read(&self.shared, |inner| Ok(inner.vote))
            .await
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetadataRaftConfig>,
    ) -> Result<(), StorageError<RaftNodeId>>
    where
        I: IntoIterator<Item = MetadataEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let now = now_ms();
        let mut batches = Vec::new();
        for entry in entries {
            let bytes =
                encode_entry(&entry, now).map_err(|e| write_error(LogStoreError::Encode(e)))?;
            batches.push((entry.log_id, bytes));
        }
        // Appending and fsyncing before the callback: simple, and the metadata log's entries are
        // few, so overlapping the fsync with the next append would gain little.
        match with_write(&self.shared, move |inner| inner.append(batches)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(write_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: MetadataLogId) -> Result<(), StorageError<RaftNodeId>> {
        with_write(&self.shared, move |inner| inner.truncate(log_id.index))
            .await
            .map_err(write_error)
    }

    async fn purge(&mut self, log_id: MetadataLogId) -> Result<(), StorageError<RaftNodeId>> {
        with_write(&self.shared, move |inner| inner.purge(log_id))
            .await
            .map_err(write_error)
    }
}
