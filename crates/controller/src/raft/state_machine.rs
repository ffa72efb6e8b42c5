//! openraft's state machine for the metadata quorum: committed entries applied to a
//! [`ReplicatedState`], snapshots of it kept as Kafka-named checkpoint files.
//!
//! A snapshot is `<data-dir>/__cluster_metadata-0/<end offset>-<epoch>.checkpoint`, both numbers
//! 20 digits as in KRaft: the end offset is the index of the first entry the snapshot does not
//! hold (last applied index + 1, 0 for none) and the epoch the term of the last entry it holds.
//! Its contents are Vltava's own (see [`encode_snapshot_file`]), ending in a CRC32C; the same
//! bytes are what openraft ships to followers as the snapshot data, so a follower checks them
//! end to end before installing. A new snapshot is written atomically (temporary file, fsync,
//! rename, directory fsync) and only then are older ones removed. On open, the newest file that
//! decodes is restored; a corrupt newer one is skipped with a warning.
//! [`ReplicatedState::restore`] is given the snapshot's end offset (the first index it does not
//! hold), the number in its file name.
//!
//! The state itself is in memory; durability comes from the snapshots plus the log, which
//! openraft re-applies from the last snapshot after a restart once the commit index is known.
//! Blocking file I/O runs on tokio's blocking pool (see the log store for why).

use std::fmt;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use super::log_store::{
    EntryDecodeError, EntryEncodeError, MetadataEntry, MetadataLogId, Reader, Writer,
    metadata_partition_dir, sync_dir,
};
use super::{ApplyError, ControllerNode, MetadataRaftConfig, RaftNodeId, ReplicatedState};

/// Extension of snapshot files (Kafka's).
pub const SNAPSHOT_EXTENSION: &str = "checkpoint";
/// First bytes of a snapshot file.
const SNAPSHOT_MAGIC: &[u8; 4] = b"VMSN";
const SNAPSHOT_FORMAT_VERSION: u8 = 0;
/// Suffix of a snapshot being written. Not `.tmp`: opening the partition log removes `.tmp`
/// files, and the log store may reopen it while a snapshot is being written.
const PARTIAL_SUFFIX: &str = ".part";

/// The membership as the state machine stores it.
pub type MetadataStoredMembership = StoredMembership<RaftNodeId, ControllerNode>;
/// A snapshot's metadata.
pub type MetadataSnapshotMeta = SnapshotMeta<RaftNodeId, ControllerNode>;

/// Why the state machine or a snapshot failed. openraft sees it as a `StorageError`, which stops
/// the node.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    /// A file operation failed.
    #[error("metadata snapshot I/O: {0}")]
    Io(#[from] io::Error),
    /// A snapshot file or received snapshot is not a valid snapshot.
    #[error("invalid metadata snapshot: {0}")]
    Decode(#[from] EntryDecodeError),
    /// The snapshot does not start with the snapshot magic.
    #[error("not a metadata snapshot (bad magic or version)")]
    BadMagic,
    /// The snapshot's CRC does not match its bytes.
    #[error("metadata snapshot CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// CRC at the end of the file.
        stored: u32,
        /// CRC of the bytes before it.
        computed: u32,
    },
    /// The snapshot could not be encoded.
    #[error(transparent)]
    Encode(#[from] EntryEncodeError),
    /// A received snapshot's bytes describe another snapshot than the metadata sent with it.
    #[error("received snapshot data do not match its metadata: {0}")]
    MetaMismatch(String),
    /// The state refused an entry or a snapshot.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A previous operation panicked while holding the state.
    #[error("metadata state lock poisoned by a panic")]
    Poisoned,
    /// The blocking task running the I/O panicked or was cancelled.
    #[error("metadata snapshot I/O task failed: {0}")]
    Task(String),
}

// ---------------------------------------------------------------------------------------------
// Snapshot files.

/// The file name of a snapshot whose last entry is `last` (Kafka's `<offset>-<epoch>`).
pub fn snapshot_file_name(last: Option<&MetadataLogId>) -> String {
    let (end, epoch) = last.map_or((0, 0), |id| (id.index.saturating_add(1), id.leader_id.term));
    format!("{end:020}-{epoch:020}.{SNAPSHOT_EXTENSION}")
}

/// `(end offset, epoch)` named by a snapshot file name, if it is one.
fn parse_snapshot_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SNAPSHOT_EXTENSION)?.strip_suffix('.')?;
    let (end, epoch) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(end) || !digits(epoch) {
        return None;
    }
    Some((end.parse().ok()?, epoch.parse().ok()?))
}

/// A snapshot file's bytes: `magic "VMSN"`, `version: u8`, last applied log id, the
/// membership's log id and config (as in entries), `snapshot id: u32 len + UTF-8`,
/// `state: u64 len + bytes`, then a CRC32C of everything before it. Integers are big-endian.
pub fn encode_snapshot_file(
    meta: &MetadataSnapshotMeta,
    state: &[u8],
) -> Result<Vec<u8>, EntryEncodeError> {
    let mut w = Writer::default();
    w.0.extend_from_slice(SNAPSHOT_MAGIC);
    w.u8(SNAPSHOT_FORMAT_VERSION);
    w.log_id(&meta.last_log_id);
    w.log_id(meta.last_membership.log_id());
    w.membership(meta.last_membership.membership())?;
    w.bytes("snapshot id", meta.snapshot_id.as_bytes())?;
    w.u64(state.len() as u64);
    w.0.extend_from_slice(state);
    let crc = crc32c::crc32c(&w.0);
    w.u32(crc);
    Ok(w.0)
}

/// Decodes [`encode_snapshot_file`]'s bytes into the metadata and the state bytes. Never panics.
pub fn decode_snapshot_file(
    bytes: &[u8],
) -> Result<(MetadataSnapshotMeta, &[u8]), StateMachineError> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(StateMachineError::BadMagic);
    };
    let (body, crc) = bytes.split_at(body_len);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc);
    let stored = u32::from_be_bytes(stored);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(StateMachineError::BadCrc { stored, computed });
    }
    let mut r = Reader::new(body);
    if r.take(4).ok() != Some(SNAPSHOT_MAGIC.as_slice()) || r.u8()? != SNAPSHOT_FORMAT_VERSION {
        return Err(StateMachineError::BadMagic);
    }
    let last_log_id = r.log_id()?;
    let membership_log_id = r.log_id()?;
    let membership = r.membership()?;
    let at = r.position();
    let snapshot_id = std::str::from_utf8(r.bytes()?)
        .map_err(|_| EntryDecodeError::InvalidUtf8(at))?
        .to_owned();
    let state_len = usize::try_from(r.u64()?).unwrap_or(usize::MAX);
    let state = r.take(state_len)?;
    r.finish()?;
    Ok((
        SnapshotMeta {
            last_log_id,
            last_membership: StoredMembership::new(membership_log_id, membership),
            snapshot_id,
        },
        state,
    ))
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new file: write beside it,
/// fsync, rename, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(PARTIAL_SUFFIX);
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Snapshot files in `dir`, newest first, after removing leftovers of interrupted writes.
fn list_snapshots(dir: &Path) -> io::Result<Vec<((u64, u64), PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(&format!(".{SNAPSHOT_EXTENSION}{PARTIAL_SUFFIX}")) {
            std::fs::remove_file(entry.path())?;
        } else if let Some(id) = parse_snapshot_file_name(name) {
            found.push((id, entry.path()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// The snapshot in `path`, checked against its file name.
fn load_snapshot(
    path: &Path,
    id: (u64, u64),
) -> Result<(MetadataSnapshotMeta, Vec<u8>), StateMachineError> {
    let bytes = std::fs::read(path)?;
    let (meta, _) = decode_snapshot_file(&bytes)?;
    let named = snapshot_file_name(meta.last_log_id.as_ref());
    if parse_snapshot_file_name(&named) != Some(id) {
        return Err(StateMachineError::MetaMismatch(format!(
            "file name says {id:?}, contents say {named}"
        )));
    }
    Ok((meta, bytes))
}

// ---------------------------------------------------------------------------------------------
// The state machine.

/// The state and how far it has applied the log, changed together under one lock.
struct Applied<S> {
    state: S,
    last_applied: Option<MetadataLogId>,
    membership: MetadataStoredMembership,
}

/// The current snapshot file.
struct Current {
    meta: MetadataSnapshotMeta,
    path: PathBuf,
}

struct SmShared<S> {
    dir: PathBuf,
    applied: RwLock<Applied<S>>,
    /// Held while a snapshot file is written or read, which serialises them.
    current: Mutex<Option<Current>>,
    applied_tx: watch::Sender<Option<u64>>,
}

impl<S> SmShared<S> {
    /// Writes a snapshot's file and makes it current, unless a newer one already is (a build
    /// that finished after an install). Older files are removed once the new one is durable.
    fn store_snapshot(
        &self,
        meta: &MetadataSnapshotMeta,
        bytes: &[u8],
    ) -> Result<(), StateMachineError> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| StateMachineError::Poisoned)?;
        if current
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id > meta.last_log_id)
        {
            return Ok(());
        }
        let name = snapshot_file_name(meta.last_log_id.as_ref());
        let path = self.dir.join(&name);
        write_atomically(&path, bytes)?;
        for (_, old) in list_snapshots(&self.dir)? {
            if old != path {
                std::fs::remove_file(&old)?;
            }
        }
        *current = Some(Current {
            meta: meta.clone(),
            path,
        });
        Ok(())
    }

    fn read_current(&self) -> Result<Option<(MetadataSnapshotMeta, Vec<u8>)>, StateMachineError> {
        let current = self
            .current
            .lock()
            .map_err(|_| StateMachineError::Poisoned)?;
        match current.as_ref() {
            None => Ok(None),
            Some(c) => Ok(Some((c.meta.clone(), std::fs::read(&c.path)?))),
        }
    }
}

impl<S: ReplicatedState> SmShared<S> {
    /// Snapshots the state as it is now and stores the snapshot.
    fn build_snapshot(&self) -> Result<(MetadataSnapshotMeta, Vec<u8>), StateMachineError> {
        let (meta, bytes) = {
            let applied = self
                .applied
                .read()
                .map_err(|_| StateMachineError::Poisoned)?;
            let (end, epoch) = applied
                .last_applied
                .map_or((0, 0), |id| (id.index.saturating_add(1), id.leader_id.term));
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id: format!("{end}-{epoch}-{}", uuid::Uuid::new_v4().simple()),
            };
            let bytes = encode_snapshot_file(&meta, &applied.state.snapshot())?;
            (meta, bytes)
        };
        self.store_snapshot(&meta, &bytes)?;
        Ok((meta, bytes))
    }

    /// Replaces the state with a received snapshot, then stores the snapshot.
    fn install_snapshot(
        &self,
        meta: &MetadataSnapshotMeta,
        bytes: &[u8],
    ) -> Result<(), StateMachineError> {
        {
            let (file_meta, state_bytes) = decode_snapshot_file(bytes)?;
            if file_meta != *meta {
                return Err(StateMachineError::MetaMismatch(format!(
                    "data hold {file_meta}, metadata say {meta}"
                )));
            }
            let mut applied = self
                .applied
                .write()
                .map_err(|_| StateMachineError::Poisoned)?;
            let end = meta.last_log_id.map_or(0, |id| id.index.saturating_add(1));
            applied.state.restore(end, state_bytes)?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        self.applied_tx
            .send_replace(meta.last_log_id.map(|id| id.index));
        self.store_snapshot(meta, bytes)
    }
}

async fn blocking<T, F>(f: F) -> Result<T, StateMachineError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StateMachineError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StateMachineError::Task(e.to_string()))?
}

/// openraft's state machine for the metadata quorum: applies normal entries to `S` in log order
/// and keeps snapshots (see the module documentation). Before handing it to openraft, take
/// [`MetadataStateMachine::state`] and [`MetadataStateMachine::subscribe_applied`] for readers.
pub struct MetadataStateMachine<S: ReplicatedState> {
    shared: Arc<SmShared<S>>,
}

/// Builds snapshots of a [`MetadataStateMachine`]'s state as it is when `build_snapshot` runs.
pub struct MetadataSnapshotBuilder<S: ReplicatedState> {
    shared: Arc<SmShared<S>>,
}

/// Shared read access to the applied state (brokers and the controller read the metadata image
/// through it).
pub struct StateReader<S: ReplicatedState> {
    shared: Arc<SmShared<S>>,
}

impl<S: ReplicatedState> Clone for StateReader<S> {
    fn clone(&self) -> Self {
        StateReader {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: ReplicatedState> fmt::Debug for MetadataStateMachine<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataStateMachine")
            .field("dir", &self.shared.dir)
            .field("applied", &*self.shared.applied_tx.borrow())
            .finish()
    }
}

impl<S: ReplicatedState> StateReader<S> {
    /// Runs `f` on the state and the index of the last applied entry, under a read lock: keep it
    /// short, applying waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&S, Option<u64>) -> R) -> Result<R, StateMachineError> {
        let applied = self
            .shared
            .applied
            .read()
            .map_err(|_| StateMachineError::Poisoned)?;
        Ok(f(&applied.state, applied.last_applied.map(|id| id.index)))
    }
}

impl<S: ReplicatedState> MetadataStateMachine<S> {
    /// Opens the state machine of the metadata log under `data_dir`: the newest valid snapshot
    /// there, if any, is restored into `state` (which should be empty); otherwise `state` is
    /// used as it is, with nothing applied.
    pub async fn open(
        data_dir: &Path,
        state: S,
    ) -> Result<MetadataStateMachine<S>, StateMachineError> {
        let dir = metadata_partition_dir(data_dir);
        let (applied, dir, current) = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let mut applied = Applied {
                state,
                last_applied: None,
                membership: StoredMembership::default(),
            };
            let mut current = None;
            for (id, path) in list_snapshots(&dir)? {
                let (meta, bytes) = match load_snapshot(&path, id) {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "skipping unusable metadata snapshot: {e}");
                        continue;
                    }
                };
                let (_, state_bytes) = decode_snapshot_file(&bytes)?;
                let end = meta.last_log_id.map_or(0, |id| id.index.saturating_add(1));
                // A snapshot that decodes but that the state refuses is not corruption but an
                // incompatibility: falling back to an older one would hide it.
                applied.state.restore(end, state_bytes)?;
                applied.last_applied = meta.last_log_id;
                applied.membership = meta.last_membership.clone();
                current = Some(Current { meta, path });
                break;
            }
            Ok((applied, dir, current))
        })
        .await?;
        let (applied_tx, _) = watch::channel(applied.last_applied.map(|id| id.index));
        Ok(MetadataStateMachine {
            shared: Arc::new(SmShared {
                dir,
                applied: RwLock::new(applied),
                current: Mutex::new(current),
                applied_tx,
            }),
        })
    }

    /// The index of the last applied entry (`None` before the first), updated after every apply
    /// and snapshot install. Wait for "applied up to N" with
    /// `rx.wait_for(|a| a.is_some_and(|a| a >= n))`.
    pub fn subscribe_applied(&self) -> watch::Receiver<Option<u64>> {
        self.shared.applied_tx.subscribe()
    }

    /// Read access to the state, usable after the state machine was handed to openraft.
    pub fn state(&self) -> StateReader<S> {
        StateReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The partition directory holding the snapshots.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    fn publish(&self, last: Option<MetadataLogId>) {
        self.shared.applied_tx.send_replace(last.map(|id| id.index));
    }
}

fn snapshot_error(
    meta: Option<&MetadataSnapshotMeta>,
    e: StateMachineError,
) -> StorageError<RaftNodeId> {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), AnyError::new(&e)).into()
}

impl<S: ReplicatedState> RaftSnapshotBuilder<MetadataRaftConfig> for MetadataSnapshotBuilder<S> {
    async fn build_snapshot(
        &mut self,
    ) -> Result<Snapshot<MetadataRaftConfig>, StorageError<RaftNodeId>> {
        let shared = Arc::clone(&self.shared);
        // Serialising a large state is heavy CPU work, so it leaves the runtime's threads too.
        let (meta, bytes) = blocking(move || shared.build_snapshot())
            .await
            .map_err(|e| snapshot_error(None, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl<S: ReplicatedState> RaftStateMachine<MetadataRaftConfig> for MetadataStateMachine<S> {
    type SnapshotBuilder = MetadataSnapshotBuilder<S>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<MetadataLogId>, MetadataStoredMembership), StorageError<RaftNodeId>> {
        let applied = self.shared.applied.read().map_err(|_| {
            StorageError::from(StorageIOError::read_state_machine(AnyError::new(
                &StateMachineError::Poisoned,
            )))
        })?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<u64>, StorageError<RaftNodeId>>
    where
        I: IntoIterator<Item = MetadataEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let result = {
            let mut applied = self.shared.applied.write().map_err(|_| {
                StorageError::from(StorageIOError::write_state_machine(AnyError::new(
                    &StateMachineError::Poisoned,
                )))
            })?;
            let mut result = Ok(());
            // Applying is in-memory work on the runtime's thread: entries are small, and
            // readers hold the lock only briefly.
            for entry in entries {
                let log_id = entry.log_id;
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(payload) => {
                        if let Err(e) = applied.state.apply(log_id.index, &payload.0) {
                            // Not skipped: this node cannot follow the log any more, and
                            // openraft stops it on this error.
                            result = Err(StorageError::from(StorageIOError::apply(
                                log_id,
                                AnyError::new(&e),
                            )));
                            break;
                        }
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(log_id), m);
                    }
                }
                applied.last_applied = Some(log_id);
                responses.push(log_id.index);
            }
            self.publish(applied.last_applied);
            result
        };
        result.map(|()| responses)
    }

    async fn get_snapshot_builder(&mut self) -> MetadataSnapshotBuilder<S> {
        MetadataSnapshotBuilder {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftNodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &MetadataSnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftNodeId>> {
        let bytes = snapshot.into_inner();
        let shared = Arc::clone(&self.shared);
        let meta2 = meta.clone();
        blocking(move || shared.install_snapshot(&meta2, &bytes))
            .await
            .map_err(|e| snapshot_error(Some(meta), e))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<MetadataRaftConfig>>, StorageError<RaftNodeId>> {
        let shared = Arc::clone(&self.shared);
        let current = blocking(move || shared.read_current()).await.map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)))
        })?;
        Ok(current.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
