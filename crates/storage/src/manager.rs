//! All partition logs of one data directory, and the broker-wide checkpoint files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checkpoint;
use crate::cleaner::{CleanOptions, CleanStats};
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::fileio::{self, FileLock, Fs};
use crate::log::{CLEAN_RECOVERY_POINT, Log};

/// Broker-wide file of per-partition recovery points.
pub const RECOVERY_CHECKPOINT_FILE: &str = "recovery-point-offset-checkpoint";
/// Broker-wide file of per-partition log start offsets.
pub const LOG_START_CHECKPOINT_FILE: &str = "log-start-offset-checkpoint";
/// Broker-wide file of per-partition high watermarks (Kafka's name and format).
pub const REPLICATION_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";
/// Broker-wide file of per-partition cleaner checkpoints (first offset not yet cleaned).
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
const LOCK_FILE: &str = ".lock";
/// Present only between a clean shutdown and the next start (Kafka's name and meaning): every
/// log was flushed, so no segment needs recovery.
pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
/// The directory of the cluster metadata log, which the log manager leaves alone.
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";
/// Logs opened in parallel by [`LogManager::open`]: opening is mostly waiting for the disk
/// (Kafka's num.recovery.threads.per.data.dir).
const RECOVERY_THREADS: usize = 8;
const DELETE_SUFFIX: &str = "-delete";

/// A topic name and partition number; names the directory `<topic>-<partition>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Builds a topic partition (not validated; see [`TopicPartition::validate`]).
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    /// Checks Kafka's topic name rules (1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`) and a
    /// non-negative partition, which also keeps the directory name inside the data directory.
    pub fn validate(&self) -> Result<(), StorageError> {
        let t = &self.topic;
        let legal = !t.is_empty()
            && t.len() <= 249
            && t != "."
            && t != ".."
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !legal || self.partition < 0 {
            return Err(StorageError::InvalidTopicPartition(self.to_string()));
        }
        Ok(())
    }

    /// Directory name, `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        self.to_string()
    }

    /// Parses a partition directory name. Topic names may contain `-`, so the partition is
    /// what follows the last one.
    pub fn parse_dir_name(name: &str) -> Option<TopicPartition> {
        let (topic, partition) = name.rsplit_once('-')?;
        if !partition.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let tp = TopicPartition::new(topic, partition.parse().ok()?);
        tp.validate().ok()?;
        Some(tp)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Locks a log even if a previous holder panicked: `Log` has no panicking paths by design, and
/// should one appear, the files are still recovered at the next open, so carrying on beats
/// turning one bug into a panic on every later request for the partition.
fn lock_log(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

type LogMap = BTreeMap<TopicPartition, Arc<Mutex<Log>>>;

/// The cleaner checkpoint entry of a log, if it has cleaned anything past its start.
fn cleaner_entry(tp: &TopicPartition, log: &Log) -> Option<(TopicPartition, u64)> {
    let cp = log.cleaner_checkpoint();
    (cp > log.log_start_offset()).then(|| (tp.clone(), cp))
}

/// Owns the partition logs of a data directory. Each log sits behind its own mutex so that
/// the broker locks one partition at a time; the map lock is held only to look logs up.
#[derive(Debug)]
pub struct LogManager {
    fs: Arc<dyn Fs>,
    data_dir: PathBuf,
    default_config: LogConfig,
    logs: RwLock<LogMap>,
    /// Serialises checkpoint writers, which share temporary file names.
    checkpointing: Mutex<()>,
    /// Held for the manager's lifetime: one process per data directory.
    _dir_lock: FileLock,
}

impl LogManager {
    /// Opens the data directory (creating it if missing): takes its lock, finishes
    /// interrupted topic deletions, and opens every `<topic>-<partition>` directory with the
    /// recovery point, log start offset, cleaner checkpoint and high watermark from the
    /// checkpoint files (a missing or corrupt checkpoint means full recovery, a cleaner
    /// starting over, and high watermarks at the log start). Logs get `default_config` until
    /// `set_config`.
    pub fn open(
        data_dir: &Path,
        default_config: LogConfig,
        now_ms: i64,
    ) -> Result<LogManager, StorageError> {
        LogManager::open_with_threads(
            fileio::real_fs(),
            data_dir,
            default_config,
            now_ms,
            RECOVERY_THREADS,
        )
    }

    /// [`LogManager::open`] on the file system `fs` (a simulated one in tests); every log it
    /// opens or creates lives there too.
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        data_dir: &Path,
        default_config: LogConfig,
        now_ms: i64,
    ) -> Result<LogManager, StorageError> {
        LogManager::open_with_threads(fs, data_dir, default_config, now_ms, 1)
    }

    /// [`LogManager::open_with_fs`] opening up to `threads` logs at once.
    pub fn open_with_threads(
        fs: Arc<dyn Fs>,
        data_dir: &Path,
        default_config: LogConfig,
        now_ms: i64,
        threads: usize,
    ) -> Result<LogManager, StorageError> {
        fs.create_dir_all(data_dir)?;
        let dir_lock = fs
            .try_lock(&data_dir.join(LOCK_FILE))?
            .ok_or_else(|| StorageError::DataDirLocked(data_dir.to_path_buf()))?;
        let recovery_points = checkpoint::read(&*fs, &data_dir.join(RECOVERY_CHECKPOINT_FILE))?;
        let log_starts = checkpoint::read(&*fs, &data_dir.join(LOG_START_CHECKPOINT_FILE))?;
        let cleaned = checkpoint::read(&*fs, &data_dir.join(CLEANER_CHECKPOINT_FILE))?;
        let high_watermarks = checkpoint::read(&*fs, &data_dir.join(REPLICATION_CHECKPOINT_FILE))?;
        let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = fileio::read_optional(&*fs, &marker)?.is_some();
        let mut removed = false;
        let mut found = Vec::new();
        for entry in fs.list_dir(data_dir)? {
            if !entry.is_dir {
                continue;
            }
            if entry.name.ends_with(DELETE_SUFFIX) {
                fileio::remove_dir_all(&*fs, &entry.path)?;
                removed = true;
                continue;
            }
            // The metadata log is the quorum's (vltava-controller opens it with its own rules).
            if entry.name == METADATA_LOG_DIR {
                continue;
            }
            if let Some(tp) = TopicPartition::parse_dir_name(&entry.name) {
                found.push((tp, entry.path));
            }
        }
        let open_one = |(tp, path): &(TopicPartition, PathBuf)| -> Result<Log, StorageError> {
            let recovery_point = if clean {
                CLEAN_RECOVERY_POINT
            } else {
                recovery_points.get(tp).copied().unwrap_or(0)
            };
            let mut log = Log::open_with_fs(
                Arc::clone(&fs),
                path,
                default_config.clone(),
                recovery_point,
                log_starts.get(tp).copied(),
                now_ms,
            )?;
            if let Some(&offset) = cleaned.get(tp) {
                log.set_cleaner_checkpoint(offset);
            }
            // Clamped to what recovery kept: a crash may have taken records below it.
            if let Some(&hw) = high_watermarks.get(tp) {
                log.set_high_watermark(hw);
            }
            Ok(log)
        };
        let opened = open_all(&found, threads.max(1), open_one)?;
        let mut logs = LogMap::new();
        for ((tp, _), log) in found.into_iter().zip(opened) {
            logs.insert(tp, Arc::new(Mutex::new(log)));
        }
        // From here on the logs change: the next start must not trust them blindly.
        if clean {
            fileio::remove_file(&*fs, &marker)?;
            removed = true;
        }
        if removed {
            fs.sync_dir(data_dir)?;
        }
        let manager = LogManager {
            fs,
            data_dir: data_dir.to_path_buf(),
            default_config,
            logs: RwLock::new(logs),
            checkpointing: Mutex::new(()),
            _dir_lock: dir_lock,
        };
        // Recovery moved recovery points forward; record that so a crash soon after does not
        // scan everything again.
        manager.checkpoint()?;
        Ok(manager)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file system the logs live on.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// Config that logs found at open were given.
    pub fn default_config(&self) -> &LogConfig {
        &self.default_config
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, LogMap> {
        self.logs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn map_mut(&self) -> std::sync::RwLockWriteGuard<'_, LogMap> {
        self.logs.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The log of `topic`/`partition`, if it exists.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Mutex<Log>>> {
        self.map()
            .get(&TopicPartition::new(topic, partition))
            .cloned()
    }

    /// Every log, ordered by topic and partition.
    pub fn logs(&self) -> Vec<(TopicPartition, Arc<Mutex<Log>>)> {
        self.map()
            .iter()
            .map(|(tp, log)| (tp.clone(), Arc::clone(log)))
            .collect()
    }

    /// Every topic partition with a log.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.map().keys().cloned().collect()
    }

    /// Creates the log of `topic`/`partition` with `config`, or returns the existing one
    /// unchanged.
    pub fn create_log(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<Arc<Mutex<Log>>, StorageError> {
        let tp = TopicPartition::new(topic, partition);
        tp.validate()?;
        let mut map = self.map_mut();
        if let Some(log) = map.get(&tp) {
            return Ok(Arc::clone(log));
        }
        // A new log's clock only starts its flush.ms timer, so wall time is good enough.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let log = Log::open_with_fs(
            Arc::clone(&self.fs),
            &self.data_dir.join(tp.dir_name()),
            config,
            0,
            None,
            now_ms,
        )?;
        self.fs.sync_dir(&self.data_dir)?;
        let log = Arc::new(Mutex::new(log));
        map.insert(tp, Arc::clone(&log));
        Ok(log)
    }

    /// Deletes the log of `tp`; returns false if there was none. Handles to it still held
    /// elsewhere fail on further writes.
    pub fn delete_log(&self, tp: &TopicPartition) -> Result<bool, StorageError> {
        let Some(log) = self.map_mut().remove(tp) else {
            return Ok(false);
        };
        self.remove_log_dir(tp, &log)?;
        Ok(true)
    }

    /// Deletes every partition of `topic`; returns how many.
    pub fn delete_topic(&self, topic: &str) -> Result<usize, StorageError> {
        let doomed: Vec<_> = {
            let mut map = self.map_mut();
            let keys: Vec<_> = map.keys().filter(|tp| tp.topic == topic).cloned().collect();
            keys.into_iter()
                .filter_map(|tp| map.remove(&tp).map(|log| (tp, log)))
                .collect()
        };
        for (tp, log) in &doomed {
            self.remove_log_dir(tp, log)?;
        }
        Ok(doomed.len())
    }

    /// Renames the directory to `<topic>-<partition>.<uuid>-delete` first, so that a crash
    /// mid-removal leaves a name the next start deletes instead of a half-deleted log.
    fn remove_log_dir(&self, tp: &TopicPartition, log: &Mutex<Log>) -> Result<(), StorageError> {
        let doomed = {
            let mut log = lock_log(log);
            log.mark_deleted();
            let doomed = self.data_dir.join(format!(
                "{}.{}{DELETE_SUFFIX}",
                tp.dir_name(),
                uuid::Uuid::new_v4().simple()
            ));
            self.fs.rename(log.dir(), &doomed)?;
            doomed
        };
        self.fs.sync_dir(&self.data_dir)?;
        fileio::remove_dir_all(&*self.fs, &doomed)?;
        Ok(())
    }

    /// Writes the checkpoint files (recovery points, log start offsets, high watermarks,
    /// cleaner checkpoints) atomically.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        let _one_writer = self
            .checkpointing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut recovery_points = Vec::new();
        let mut log_starts = Vec::new();
        let mut high_watermarks = Vec::new();
        let mut cleaned = Vec::new();
        for (tp, log) in self.logs() {
            let log = lock_log(&log);
            recovery_points.push((tp.clone(), log.recovery_point()));
            log_starts.push((tp.clone(), log.log_start_offset()));
            high_watermarks.push((tp.clone(), log.high_watermark()));
            if let Some(entry) = cleaner_entry(&tp, &log) {
                cleaned.push(entry);
            }
        }
        let fs = &*self.fs;
        checkpoint::write(
            fs,
            &self.data_dir.join(RECOVERY_CHECKPOINT_FILE),
            &recovery_points,
        )?;
        checkpoint::write(
            fs,
            &self.data_dir.join(LOG_START_CHECKPOINT_FILE),
            &log_starts,
        )?;
        checkpoint::write(
            fs,
            &self.data_dir.join(REPLICATION_CHECKPOINT_FILE),
            &high_watermarks,
        )?;
        checkpoint::write(fs, &self.data_dir.join(CLEANER_CHECKPOINT_FILE), &cleaned)?;
        Ok(())
    }

    /// Writes `cleaner-offset-checkpoint` alone, atomically.
    fn write_cleaner_checkpoint(&self) -> Result<(), StorageError> {
        let _one_writer = self
            .checkpointing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cleaned: Vec<_> = self
            .logs()
            .into_iter()
            .filter_map(|(tp, log)| cleaner_entry(&tp, &lock_log(&log)))
            .collect();
        checkpoint::write(
            &*self.fs,
            &self.data_dir.join(CLEANER_CHECKPOINT_FILE),
            &cleaned,
        )?;
        Ok(())
    }

    /// Cleans every log that [`Log::needs_cleaning`] (its policy includes compact, and it is
    /// dirty enough or has tombstones past their delete horizon), one lock at a time, then
    /// writes `cleaner-offset-checkpoint`. A log that fails to clean does not stop the others:
    /// the first error is returned after all were tried and the checkpoint was written.
    /// Each log is locked while it is cleaned, so the broker should call this off its
    /// request-handling threads.
    pub fn clean_all(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(TopicPartition, CleanStats)>, StorageError> {
        self.clean_all_with(now_ms, |_| CleanOptions::default())
    }

    /// [`LogManager::clean_all`] with per-log options: a replicated broker passes each
    /// partition's high watermark as `max_offset`, so that records a leader change may still
    /// truncate never cause older ones to be removed.
    pub fn clean_all_with(
        &self,
        now_ms: i64,
        options: impl Fn(&TopicPartition) -> CleanOptions,
    ) -> Result<Vec<(TopicPartition, CleanStats)>, StorageError> {
        let mut cleaned = Vec::new();
        let mut first_error = None;
        for (tp, log) in self.logs() {
            let mut log = lock_log(&log);
            if !log.needs_cleaning(now_ms) {
                continue;
            }
            match log.clean_with(now_ms, &options(&tp)) {
                Ok(stats) => cleaned.push((tp, stats)),
                Err(e) => {
                    tracing::warn!(partition = %tp, "cleaning failed: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.write_cleaner_checkpoint()?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(cleaned),
        }
    }

    /// Applies retention to every log, one lock at a time; returns segments deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let mut deleted = 0;
        for (_, log) in self.logs() {
            deleted += lock_log(&log).apply_retention(now_ms)?;
        }
        Ok(deleted)
    }

    /// Runs every log's time- and count-based flush policy, one lock at a time.
    pub fn maybe_flush_all(&self, now_ms: i64) -> Result<(), StorageError> {
        for (_, log) in self.logs() {
            lock_log(&log).maybe_flush(now_ms)?;
        }
        Ok(())
    }

    /// Flushes every log and writes the checkpoints (clean shutdown).
    pub fn close(self) -> Result<(), StorageError> {
        self.shutdown_cleanly()
    }

    /// Flushes every log, writes the checkpoints and then the clean-shutdown marker, so the
    /// next start recovers nothing. Nothing may write to the logs afterwards.
    pub fn shutdown_cleanly(&self) -> Result<(), StorageError> {
        for (_, log) in self.logs() {
            lock_log(&log).flush()?;
        }
        self.checkpoint()?;
        fileio::atomic_write_with(&*self.fs, &self.data_dir.join(CLEAN_SHUTDOWN_FILE), b"")?;
        Ok(())
    }
}

/// Runs `f` on every item with up to `threads` threads; results in item order, or the first
/// error (in item order).
fn open_all<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R, StorageError> + Sync,
) -> Result<Vec<R>, StorageError> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<R, StorageError>>> = Vec::new();
    results.resize_with(items.len(), || None);
    let slots = Mutex::new(results);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    let failed = r.is_err();
                    slots.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(r);
                    if failed {
                        // Others stop picking up new work; the first error wins below.
                        next.store(items.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let results = slots.into_inner().unwrap_or_else(PoisonError::into_inner);
    let mut out = Vec::with_capacity(items.len());
    let mut first_error = None;
    for r in results {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            // Skipped because another item failed.
            None => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(out)
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::testutil::{Kv, Spec, appendable, kv_batch, one};
    use vltava_protocol::batch::Compression;

    const NOW: i64 = 1_700_000_000_000;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 600,
            retention_ms: -1,
            ..LogConfig::default()
        }
    }

    fn append(log: &Arc<Mutex<Log>>, n: usize) -> Result<(), StorageError> {
        let mut log = lock_log(log);
        for _ in 0..n {
            log.append(&one(Spec::plain(2, 80)), 0, NOW)?;
        }
        Ok(())
    }

    #[test]
    fn dir_names() {
        let tp = TopicPartition::parse_dir_name("my-topic.v1-12");
        assert_eq!(tp, Some(TopicPartition::new("my-topic.v1", 12)));
        for bad in [
            "nodash",
            "t-",
            "-3",
            "t-+1",
            "t-1x",
            "t-0.abc-delete",
            "a/b-0",
            "..-0",
        ] {
            assert_eq!(TopicPartition::parse_dir_name(bad), None, "{bad}");
        }
        assert_eq!(
            TopicPartition::parse_dir_name("t--1"),
            Some(TopicPartition::new("t-", 1))
        );
        assert_eq!(TopicPartition::new("t", 3).dir_name(), "t-3");
        assert!(TopicPartition::new("x".repeat(250), 0).validate().is_err());
        assert!(TopicPartition::new("ok", -1).validate().is_err());
    }

    #[test]
    fn checkpoints_carry_recovery_points_and_log_starts() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        {
            let m = LogManager::open(dir.path(), config(), NOW)?;
            let a = m.create_log("orders-eu", 0, config())?;
            let b = m.create_log("orders-eu", 1, config())?;
            assert!(Arc::ptr_eq(&a, &m.create_log("orders-eu", 0, config())?));
            append(&a, 6)?;
            append(&b, 2)?;
            lock_log(&a).flush()?;
            lock_log(&a).delete_records_before(5)?;
            m.checkpoint()?;
            let text = fs::read_to_string(dir.path().join(RECOVERY_CHECKPOINT_FILE))?;
            assert_eq!(text, "0\n2\norders-eu 0 12\norders-eu 1 0\n");
            let text = fs::read_to_string(dir.path().join(LOG_START_CHECKPOINT_FILE))?;
            assert_eq!(text, "0\n2\norders-eu 0 5\norders-eu 1 0\n");
        }
        let m = LogManager::open(dir.path(), config(), NOW)?;
        assert_eq!(
            m.partitions(),
            vec![
                TopicPartition::new("orders-eu", 0),
                TopicPartition::new("orders-eu", 1)
            ]
        );
        let a = m.get("orders-eu", 0);
        let a = a.ok_or_else(|| StorageError::Corrupt("log missing".into()))?;
        let a = lock_log(&a);
        assert_eq!((a.log_start_offset(), a.log_end_offset()), (5, 12));
        let b = m.get("orders-eu", 1);
        assert_eq!(b.map(|b| lock_log(&b).log_end_offset()), Some(4));
        // Opening recovered everything and checkpointed the new recovery points.
        let text = fs::read_to_string(dir.path().join(RECOVERY_CHECKPOINT_FILE))?;
        assert_eq!(text, "0\n2\norders-eu 0 12\norders-eu 1 4\n");
        Ok(())
    }

    #[test]
    fn a_clean_shutdown_skips_recovery_once() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        let marker = dir.path().join(CLEAN_SHUTDOWN_FILE);
        let seg = dir.path().join("t-0").join("00000000000000000000.log");
        {
            let m = LogManager::open(dir.path(), config(), NOW)?;
            for p in 0..12 {
                append(&m.create_log("t", p, config())?, 2)?;
            }
            m.close()?;
        }
        assert!(marker.exists(), "a clean close leaves the marker");
        // Damage the last batch of a flushed, cleanly closed log: a trusting open does not
        // look (as in Kafka), which shows recovery was skipped.
        let len = fs::metadata(&seg)?.len();
        {
            let f = fs::OpenOptions::new().write(true).open(&seg)?;
            std::os::unix::fs::FileExt::write_all_at(&f, b"X", len - 3)?;
        }
        {
            let m = LogManager::open(dir.path(), config(), NOW)?;
            assert!(
                !marker.exists(),
                "the marker goes as soon as the logs may change"
            );
            let log = m
                .get("t", 0)
                .ok_or_else(|| StorageError::Corrupt("missing".into()))?;
            assert_eq!(lock_log(&log).log_end_offset(), 4);
            for p in 0..12 {
                let log = m
                    .get("t", p)
                    .ok_or_else(|| StorageError::Corrupt("missing".into()))?;
                assert_eq!(lock_log(&log).log_end_offset(), 4, "partition {p}");
            }
            // Dropped without close: a crash.
        }
        // Without the marker the recovery point decides again; the damaged batch lies in
        // the segment holding it, so recovery finds it and truncates there.
        let m = LogManager::open(dir.path(), config(), NOW)?;
        let log = m
            .get("t", 0)
            .ok_or_else(|| StorageError::Corrupt("missing".into()))?;
        assert_eq!(lock_log(&log).log_end_offset(), 2);
        for p in 1..12 {
            let log = m
                .get("t", p)
                .ok_or_else(|| StorageError::Corrupt("missing".into()))?;
            assert_eq!(lock_log(&log).log_end_offset(), 4, "partition {p}");
        }
        Ok(())
    }

    #[test]
    fn corrupt_checkpoints_do_not_prevent_start() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        {
            let m = LogManager::open(dir.path(), config(), NOW)?;
            append(&m.create_log("t", 0, config())?, 3)?;
            m.close()?;
        }
        fs::write(dir.path().join(RECOVERY_CHECKPOINT_FILE), b"0\n7\nt 0")?;
        fs::write(dir.path().join(LOG_START_CHECKPOINT_FILE), [0xFFu8; 9])?;
        let m = LogManager::open(dir.path(), config(), NOW)?;
        let log = m.get("t", 0);
        assert_eq!(log.map(|l| lock_log(&l).log_end_offset()), Some(6));
        Ok(())
    }

    #[test]
    fn delete_topic_removes_directories() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        let m = LogManager::open(dir.path(), config(), NOW)?;
        let held = m.create_log("doomed-topic", 0, config())?;
        m.create_log("doomed-topic", 1, config())?;
        m.create_log("doomed", 0, config())?;
        append(&held, 2)?;
        assert_eq!(m.delete_topic("doomed-topic")?, 2);
        assert!(!dir.path().join("doomed-topic-0").exists());
        assert!(!dir.path().join("doomed-topic-1").exists());
        assert!(
            dir.path().join("doomed-0").exists(),
            "a prefix of the name is another topic"
        );
        assert!(matches!(append(&held, 1), Err(StorageError::LogDeleted(_))));
        assert_eq!(m.partitions(), vec![TopicPartition::new("doomed", 0)]);
        assert!(m.delete_log(&TopicPartition::new("doomed", 0))?);
        assert!(!m.delete_log(&TopicPartition::new("doomed", 0))?);
        m.checkpoint()?;
        let text = fs::read_to_string(dir.path().join(RECOVERY_CHECKPOINT_FILE))?;
        assert_eq!(text, "0\n0\n");
        Ok(())
    }

    #[test]
    fn interrupted_deletes_finish_and_strays_are_ignored() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        let leftover = dir
            .path()
            .join("t-0.0123456789abcdef0123456789abcdef-delete");
        fs::create_dir_all(&leftover)?;
        fs::write(leftover.join("00000000000000000000.log"), b"junk")?;
        fs::create_dir_all(dir.path().join("not a partition"))?;
        fs::write(dir.path().join("meta.properties"), b"node.id=1\n")?;
        let m = LogManager::open(dir.path(), config(), NOW)?;
        assert!(!leftover.exists());
        assert!(m.partitions().is_empty());
        Ok(())
    }

    #[test]
    fn one_process_per_data_dir() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        let m = LogManager::open(dir.path(), config(), NOW)?;
        assert!(matches!(
            LogManager::open(dir.path(), config(), NOW),
            Err(StorageError::DataDirLocked(_))
        ));
        drop(m);
        LogManager::open(dir.path(), config(), NOW)?;
        Ok(())
    }

    #[test]
    fn invalid_names_are_refused() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        let m = LogManager::open(dir.path(), config(), NOW)?;
        for bad in ["", ".", "..", "../escape", "a b"] {
            assert!(matches!(
                m.create_log(bad, 0, config()),
                Err(StorageError::InvalidTopicPartition(_))
            ));
        }
        Ok(())
    }

    #[test]
    fn clean_all_cleans_dirty_compacted_logs_and_checkpoints_them() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        let compact = LogConfig {
            cleanup_policy: crate::CleanupPolicy::Compact,
            ..config()
        };
        let mut active;
        {
            let m = LogManager::open(dir.path(), config(), NOW)?;
            let c = m.create_log("compacted", 0, compact.clone())?;
            let d = m.create_log("plain", 0, config())?;
            append(&c, 8)?;
            append(&d, 8)?;
            active = lock_log(&c)
                .segment_base_offsets()
                .last()
                .copied()
                .unwrap_or(0);
            assert!(active > 0, "fixture has cleanable segments");
            let plain_size = lock_log(&d).size_bytes();
            let cleaned = m.clean_all(NOW)?;
            assert_eq!(cleaned.len(), 1);
            assert_eq!(cleaned[0].0, TopicPartition::new("compacted", 0));
            assert_eq!(cleaned[0].1.cleaned_upto, active);
            assert!(cleaned[0].1.records_superseded > 0);
            assert_eq!(
                lock_log(&d).size_bytes(),
                plain_size,
                "delete policy: untouched"
            );
            let text = fs::read_to_string(dir.path().join(CLEANER_CHECKPOINT_FILE))?;
            assert_eq!(text, format!("0\n1\ncompacted 0 {active}\n"));
            assert!(m.clean_all(NOW)?.is_empty(), "nothing dirty any more");
            // Unique keys make a large clean part; a little more data after it is then not
            // dirty enough for min.cleanable.dirty.ratio.
            let keyed =
                |key: &str| appendable(kv_batch(&[Kv::put(key, "v")], Compression::None, NOW));
            {
                let mut log = lock_log(&c);
                for i in 0..20 {
                    log.append(&[keyed(&format!("u{i}"))], 0, NOW)?;
                }
                log.roll()?;
            }
            assert_eq!(m.clean_all(NOW)?.len(), 1);
            {
                let mut log = lock_log(&c);
                log.append(&[keyed("late")], 0, NOW)?;
                log.roll()?;
                assert!(log.cleanable_dirty_ratio(NOW) < 0.5);
                active = log.cleaner_checkpoint();
            }
            assert!(m.clean_all(NOW)?.is_empty());
        }
        let m = LogManager::open(dir.path(), config(), NOW)?;
        let c = m.get("compacted", 0);
        let c = c.ok_or_else(|| StorageError::Corrupt("log missing".into()))?;
        let mut c = lock_log(&c);
        c.set_config(compact);
        assert_eq!(
            c.cleaner_checkpoint(),
            active,
            "read back from the checkpoint"
        );
        assert!(!c.needs_cleaning(NOW));
        Ok(())
    }

    #[test]
    fn retention_and_flush_across_logs() -> Result<(), StorageError> {
        let dir = tempfile::tempdir()?;
        let m = LogManager::open(dir.path(), config(), NOW)?;
        let mut c = config();
        c.retention_bytes = 0;
        c.flush_interval_ms = 10;
        let a = m.create_log("a", 0, c.clone())?;
        let b = m.create_log("b", 0, c)?;
        append(&a, 6)?;
        append(&b, 6)?;
        let segments = lock_log(&a).segment_count() + lock_log(&b).segment_count();
        assert_eq!(m.apply_retention(NOW)?, segments - 2);
        m.maybe_flush_all(i64::MAX / 2)?;
        assert_eq!(lock_log(&a).recovery_point(), 12);
        Ok(())
    }
}
