//! A simulated, in-memory file system for crash and fault tests ([`SimFs`]).
//!
//! It tracks what the real one would have on disk after a power cut: for every file the
//! contents as of its last fsync, and for every directory its entries as of its last directory
//! fsync (a created, renamed or removed entry is not durable before that, as POSIX allows).
//! [`SimFs::crash`] then throws away what a crash of the chosen kind would lose, and every
//! handle opened before it stops working, as if the process had died; the storage is then
//! reopened on the same `SimFs`.
//!
//! Faults ([`Fault`]): ENOSPC or EIO on chosen operations, after a number of successful ones,
//! a number of times or until cleared, with an optional short write first (as a full disk
//! does). fsyncs can be held back ([`SimFs::pause_syncs`]) to make concurrency tests
//! deterministic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{self, IoSlice};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::fileio::{DirEntry, FileLock, Fs, FsFile};

/// What a simulated crash loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Power loss: every byte not fsynced and every directory change not made durable by a
    /// directory fsync is lost.
    PowerLoss,
    /// The process dies (kill -9) but the machine stays up: everything written is kept (and
    /// stays as durable or not as it was).
    ProcessKill,
    /// The process dies in the middle of its last write: that write keeps only its first
    /// `keep` bytes; everything else written is kept.
    TornLastWrite {
        /// Bytes of the last write that reach the file.
        keep: usize,
    },
    /// Power loss after the disk got part of what was pending: each file keeps its fsynced
    /// contents plus a random prefix of what was written since (sometimes zero-filled at the
    /// end, as when a size update reaches the disk before the data, or with a flipped bit, as
    /// from a torn sector), or loses a pending truncation; each directory keeps a random prefix of its pending changes (a rename is one
    /// change: its old and new names never both survive nor both vanish).
    Random {
        /// Seed of the choices.
        seed: u64,
    },
}

/// An operation a [`Fault`] can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// A write (append) to a file.
    Write,
    /// A file fsync.
    Sync,
    /// A directory fsync.
    SyncDir,
    /// Changing a file's length (truncation, also opening with truncation).
    SetLen,
    /// Creating, renaming or removing a directory entry (files and directories).
    Metadata,
    /// Reading a file.
    Read,
}

/// The error a [`Fault`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// ENOSPC, "No space left on device".
    NoSpace,
    /// EIO, "Input/output error".
    Io,
}

impl FaultKind {
    fn error(self) -> io::Error {
        // The values are the same on Linux and the BSDs.
        match self {
            FaultKind::NoSpace => io::Error::from_raw_os_error(28),
            FaultKind::Io => io::Error::from_raw_os_error(5),
        }
    }
}

/// An injected failure: operations in `ops` on matching paths fail with `kind`.
#[derive(Debug, Clone)]
pub struct Fault {
    ops: Vec<FaultOp>,
    kind: FaultKind,
    skip: u64,
    times: Option<u64>,
    partial: usize,
    path_contains: Option<String>,
}

impl Fault {
    /// Every operation in `ops` fails with `kind` until the fault is cleared.
    pub fn new(kind: FaultKind, ops: &[FaultOp]) -> Fault {
        Fault {
            ops: ops.to_vec(),
            kind,
            skip: 0,
            times: None,
            partial: 0,
            path_contains: None,
        }
    }

    /// Lets the first `n` matching operations succeed.
    pub fn after(mut self, n: u64) -> Fault {
        self.skip = n;
        self
    }

    /// Fails only `n` times, then lets operations through again.
    pub fn times(mut self, n: u64) -> Fault {
        self.times = Some(n);
        self
    }

    /// The first failing write still writes up to `bytes` bytes and reports a short write;
    /// only the next one fails (what a filling disk does).
    pub fn partial(mut self, bytes: usize) -> Fault {
        self.partial = bytes;
        self
    }

    /// Hits only paths containing `text`.
    pub fn on_paths(mut self, text: &str) -> Fault {
        self.path_contains = Some(text.to_owned());
        self
    }
}

/// Counters of a [`SimFs`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Successful write calls.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Successful file fsyncs.
    pub file_syncs: u64,
    /// Successful directory fsyncs.
    pub dir_syncs: u64,
    /// Operations failed by a fault.
    pub faults_fired: u64,
    /// Simulated crashes.
    pub crashes: u64,
}

#[derive(Debug)]
struct FileNode {
    data: Vec<u8>,
    /// Contents as of the last fsync; equal to `data` below `dirty_from`.
    durable: Vec<u8>,
    /// Lowest position changed since the last fsync, if any.
    dirty_from: Option<usize>,
    syncs: u64,
}

impl FileNode {
    fn touch(&mut self, pos: usize) {
        self.dirty_from = Some(self.dirty_from.map_or(pos, |d| d.min(pos)));
    }

    fn sync(&mut self) {
        if let Some(from) = self.dirty_from.take() {
            self.durable.truncate(from);
            self.durable
                .extend_from_slice(&self.data[from.min(self.data.len())..]);
        }
        self.syncs += 1;
    }
}

/// Directory changes applied together (a rename within one directory is one).
type DirOp = Vec<(String, Option<u64>)>;

#[derive(Debug, Default)]
struct DirNode {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

impl DirNode {
    fn apply(map: &mut BTreeMap<String, u64>, op: &DirOp) {
        for (name, ino) in op {
            match ino {
                Some(i) => map.insert(name.clone(), *i),
                None => map.remove(name),
            };
        }
    }

    fn change(&mut self, op: DirOp) {
        DirNode::apply(&mut self.entries, &op);
        self.pending.push(op);
    }
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct ActiveFault {
    fault: Fault,
    skipped: u64,
    fired: u64,
    partial_left: usize,
}

enum Hit {
    Fail(io::Error),
    Short(usize),
}

const ROOT: u64 = 0;

#[derive(Debug)]
struct State {
    /// Bumped by every crash; handles from an earlier epoch are dead.
    epoch: u64,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// File, position and length of the last write.
    last_write: Option<(u64, usize, usize)>,
    locks: HashSet<u64>,
    faults: Vec<ActiveFault>,
    stats: SimStats,
    syncs_paused: bool,
    syncs_blocked: usize,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn other(path: &Path, what: &str) -> io::Error {
    io::Error::other(format!("{}: {what}", path.display()))
}

/// The names along `path` (the root and `.` are skipped; `..` is refused).
fn components(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(
                s.to_str()
                    .ok_or_else(|| other(path, "name is not UTF-8"))?
                    .to_owned(),
            ),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(other(path, "`..` is not supported")),
        }
    }
    Ok(out)
}

impl State {
    fn dir(&self, ino: u64) -> Option<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Option<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn file_mut(&mut self, ino: u64) -> Option<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Some(f),
            _ => None,
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let mut ino = ROOT;
        for name in components(path)? {
            let dir = self
                .dir(ino)
                .ok_or_else(|| other(path, "not a directory"))?;
            ino = *dir.entries.get(&name).ok_or_else(|| not_found(path))?;
        }
        Ok(ino)
    }

    /// The directory holding `path` and the last name of `path`.
    fn parent(&self, path: &Path) -> io::Result<(u64, String)> {
        let mut names = components(path)?;
        let name = names
            .pop()
            .ok_or_else(|| other(path, "the root has no parent"))?;
        let mut ino = ROOT;
        for n in names {
            let dir = self
                .dir(ino)
                .ok_or_else(|| other(path, "not a directory"))?;
            ino = *dir.entries.get(&n).ok_or_else(|| not_found(path))?;
        }
        if self.dir(ino).is_none() {
            return Err(other(path, "parent is not a directory"));
        }
        Ok((ino, name))
    }

    fn new_node(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn link(&mut self, dir: u64, op: DirOp) {
        if let Some(d) = self.dir_mut(dir) {
            d.change(op);
        }
    }

    fn check(&mut self, op: FaultOp, path: &Path, len: usize) -> Option<Hit> {
        let text = path.to_string_lossy();
        for f in &mut self.faults {
            if !f.fault.ops.contains(&op)
                || f.fault
                    .path_contains
                    .as_deref()
                    .is_some_and(|p| !text.contains(p))
            {
                continue;
            }
            if f.skipped < f.fault.skip {
                f.skipped += 1;
                continue;
            }
            if f.fault.times.is_some_and(|t| f.fired >= t) {
                continue;
            }
            if op == FaultOp::Write && f.partial_left > 0 && len > 1 {
                let n = f.partial_left.min(len - 1);
                f.partial_left -= n;
                return Some(Hit::Short(n));
            }
            f.fired += 1;
            self.stats.faults_fired += 1;
            return Some(Hit::Fail(f.fault.kind.error()));
        }
        None
    }

    fn check_err(&mut self, op: FaultOp, path: &Path) -> io::Result<()> {
        match self.check(op, path, 0) {
            Some(Hit::Fail(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn crash(&mut self, mode: CrashMode) {
        self.epoch += 1;
        self.stats.crashes += 1;
        self.locks.clear();
        let last_write = self.last_write.take();
        match mode {
            CrashMode::ProcessKill => {}
            CrashMode::TornLastWrite { keep } => {
                if let Some((ino, pos, len)) = last_write
                    && let Some(f) = self.file_mut(ino)
                    && f.data.len() == pos + len
                {
                    f.data.truncate(pos + keep.min(len));
                    f.touch(pos);
                }
            }
            CrashMode::PowerLoss => {
                for node in self.nodes.values_mut() {
                    match node {
                        Node::File(f) => {
                            if f.dirty_from.take().is_some() {
                                f.data = f.durable.clone();
                            }
                        }
                        Node::Dir(d) => {
                            d.entries = d.durable.clone();
                            d.pending.clear();
                        }
                    }
                }
            }
            CrashMode::Random { seed } => {
                let mut rng = Rng(seed ^ 0x5EED_F00D_CAFE_BABE);
                let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
                inos.sort_unstable();
                for ino in inos {
                    match self.nodes.get_mut(&ino) {
                        Some(Node::File(f)) => {
                            let Some(from) = f.dirty_from.take() else {
                                continue;
                            };
                            if rng.below(4) == 0 {
                                f.data = f.durable.clone();
                                continue;
                            }
                            let from = from.min(f.data.len());
                            let keep = from + rng.below(f.data.len() - from + 1);
                            f.data.truncate(keep);
                            match rng.below(4) {
                                0 => {
                                    let zero_from = from + rng.below(keep - from + 1);
                                    f.data[zero_from..].fill(0);
                                }
                                1 if keep > from => {
                                    let at = from + rng.below(keep - from);
                                    f.data[at] ^= 1 << rng.below(8);
                                }
                                _ => {}
                            }
                            f.durable = f.data.clone();
                        }
                        Some(Node::Dir(d)) => {
                            let n = rng.below(d.pending.len() + 1);
                            for op in &d.pending[..n] {
                                DirNode::apply(&mut d.durable, op);
                            }
                            d.pending.clear();
                            d.entries = d.durable.clone();
                        }
                        None => {}
                    }
                }
            }
        }
    }
}

/// splitmix64: enough randomness for crash choices without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `[0, n)`; 0 when `n` is 0.
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

struct Inner {
    state: Mutex<State>,
    /// Signalled when fsyncs are resumed or one starts waiting.
    sync_gate: Condvar,
}

/// A simulated file system (see the module docs). Clones share the same files: keep one to
/// crash, inspect and inject faults, give another to the storage (`Arc::new(sim.clone())`).
#[derive(Clone)]
pub struct SimFs {
    inner: Arc<Inner>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("SimFs")
            .field("epoch", &st.epoch)
            .field("nodes", &st.nodes.len())
            .field("stats", &st.stats)
            .finish()
    }
}

impl Default for SimFs {
    fn default() -> Self {
        SimFs::new()
    }
}

impl SimFs {
    /// An empty file system holding only its (durable) root directory.
    pub fn new() -> SimFs {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        SimFs {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    epoch: 0,
                    nodes,
                    next_ino: ROOT + 1,
                    last_write: None,
                    locks: HashSet::new(),
                    faults: Vec::new(),
                    stats: SimStats::default(),
                    syncs_paused: false,
                    syncs_blocked: 0,
                }),
                sync_gate: Condvar::new(),
            }),
        }
    }

    /// This file system as an `Arc<dyn Fs>`, for [`crate::Log::open_with_fs`] and
    /// [`crate::LogManager::open_with_fs`].
    pub fn shared(&self) -> Arc<dyn Fs> {
        Arc::new(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulates a crash of kind `mode`. Every handle opened before fails from now on and
    /// locks are released; reopen the storage on this file system.
    pub fn crash(&self, mode: CrashMode) {
        self.state().crash(mode);
        self.inner.sync_gate.notify_all();
    }

    /// Adds a fault; it stays until [`SimFs::clear_faults`] (or until its `times` are used).
    pub fn inject(&self, fault: Fault) {
        let partial_left = fault.partial;
        self.state().faults.push(ActiveFault {
            fault,
            skipped: 0,
            fired: 0,
            partial_left,
        });
    }

    /// Removes every fault: operations succeed again.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.state().stats
    }

    /// Successful fsyncs of the file now at `path` (0 if there is none).
    pub fn syncs_of(&self, path: &Path) -> u64 {
        let mut st = self.state();
        match st.lookup(path) {
            Ok(ino) => st.file_mut(ino).map_or(0, |f| f.syncs),
            Err(_) => 0,
        }
    }

    /// Position and length of the last write, if it was not undone by a crash.
    pub fn last_write(&self) -> Option<(usize, usize)> {
        self.state().last_write.map(|(_, pos, len)| (pos, len))
    }

    /// True if `path` exists now.
    pub fn exists(&self, path: &Path) -> bool {
        self.state().lookup(path).is_ok()
    }

    /// Replaces the file at `path` (whose directory must exist) with `bytes`, durably, as a
    /// test corrupting files on disk would; faults do not apply.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state();
        let (dir, name) = st.parent(path)?;
        let existing = st.dir(dir).and_then(|d| d.entries.get(&name).copied());
        let ino = match existing {
            Some(ino) => ino,
            None => st.new_node(Node::File(FileNode {
                data: Vec::new(),
                durable: Vec::new(),
                dirty_from: None,
                syncs: 0,
            })),
        };
        let f = st
            .file_mut(ino)
            .ok_or_else(|| other(path, "is a directory"))?;
        f.data = bytes.to_vec();
        f.durable = bytes.to_vec();
        f.dirty_from = None;
        if let Some(d) = st.dir_mut(dir) {
            d.entries.insert(name.clone(), ino);
            d.durable.insert(name, ino);
        }
        Ok(())
    }

    /// Holds every file fsync back until [`SimFs::resume_syncs`].
    pub fn pause_syncs(&self) {
        self.state().syncs_paused = true;
    }

    /// Lets held-back fsyncs go on.
    pub fn resume_syncs(&self) {
        self.state().syncs_paused = false;
        self.inner.sync_gate.notify_all();
    }

    /// Waits (at most `timeout`) until `n` fsyncs are held back; returns whether they are.
    pub fn wait_for_paused_syncs(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        while st.syncs_blocked < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .inner
                .sync_gate
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn create_file(st: &mut State, path: &Path) -> io::Result<u64> {
        let (dir, name) = st.parent(path)?;
        if let Some(&ino) = st.dir(dir).and_then(|d| d.entries.get(&name)) {
            return match st.nodes.get(&ino) {
                Some(Node::File(_)) => Ok(ino),
                _ => Err(other(path, "is a directory")),
            };
        }
        st.check_err(FaultOp::Metadata, path)?;
        let ino = st.new_node(Node::File(FileNode {
            data: Vec::new(),
            durable: Vec::new(),
            dirty_from: None,
            syncs: 0,
        }));
        st.link(dir, vec![(name, Some(ino))]);
        Ok(ino)
    }
}

/// A file opened on a [`SimFs`].
struct SimFile {
    inner: Arc<Inner>,
    ino: u64,
    epoch: u64,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl SimFile {
    /// The state, if this handle survived every crash so far.
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if st.epoch != self.epoch {
            return Err(io::Error::other(format!(
                "{}: handle from before a simulated crash",
                self.path.display()
            )));
        }
        Ok(st)
    }

    fn with_file<T>(&self, st: &mut State, f: impl FnOnce(&mut FileNode) -> T) -> io::Result<T> {
        st.file_mut(self.ino)
            .map(f)
            .ok_or_else(|| other(&self.path, "file vanished"))
    }
}

impl FsFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut st = self.state()?;
        self.with_file(&mut st, |f| f.data.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let mut st = self.state()?;
        st.check_err(FaultOp::Read, &self.path)?;
        self.with_file(&mut st, |f| {
            let start = usize::try_from(pos).unwrap_or(usize::MAX);
            match start
                .checked_add(buf.len())
                .and_then(|end| f.data.get(start..end))
            {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "failed to fill whole buffer",
                )),
            }
        })?
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut st = self.state()?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let limit = match st.check(FaultOp::Write, &self.path, total) {
            Some(Hit::Fail(e)) => return Err(e),
            Some(Hit::Short(n)) => n,
            None => total,
        };
        let ino = self.ino;
        let pos = self.with_file(&mut st, |f| {
            let pos = f.data.len();
            let mut left = limit;
            for b in bufs {
                let n = left.min(b.len());
                f.data.extend_from_slice(&b[..n]);
                left -= n;
            }
            if limit > 0 {
                f.touch(pos);
            }
            pos
        })?;
        if limit > 0 {
            st.last_write = Some((ino, pos, limit));
            st.stats.writes += 1;
            st.stats.bytes_written += limit as u64;
        }
        Ok(limit)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state()?;
        st.check_err(FaultOp::SetLen, &self.path)?;
        let len = usize::try_from(len).map_err(|_| other(&self.path, "file too large"))?;
        self.with_file(&mut st, |f| {
            if len != f.data.len() {
                let from = len.min(f.data.len());
                f.data.resize(len, 0);
                f.touch(from);
            }
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state()?;
        while st.syncs_paused {
            st.syncs_blocked += 1;
            self.inner.sync_gate.notify_all();
            st = self
                .inner
                .sync_gate
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
            st.syncs_blocked -= 1;
            if st.epoch != self.epoch {
                return Err(io::Error::other("crashed while waiting to sync"));
            }
        }
        st.check_err(FaultOp::Sync, &self.path)?;
        self.with_file(&mut st, FileNode::sync)?;
        st.stats.file_syncs += 1;
        // A synced write can no longer be torn.
        if st.last_write.is_some_and(|(ino, _, _)| ino == self.ino) {
            st.last_write = None;
        }
        Ok(())
    }
}

/// A lock on a [`SimFs`] file, released on drop unless a crash released it first.
struct SimLock {
    inner: Arc<Inner>,
    ino: u64,
    epoch: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if st.epoch == self.epoch {
            st.locks.remove(&self.ino);
        }
    }
}

impl Fs for SimFs {
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn FsFile>> {
        let mut st = self.state();
        let ino = SimFs::create_file(&mut st, path)?;
        if truncate {
            st.check_err(FaultOp::SetLen, path)?;
            if let Some(f) = st.file_mut(ino)
                && !f.data.is_empty()
            {
                f.data.clear();
                f.touch(0);
            }
        }
        Ok(Arc::new(SimFile {
            inner: Arc::clone(&self.inner),
            ino,
            epoch: st.epoch,
            path: path.to_path_buf(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.state();
        st.check_err(FaultOp::Read, path)?;
        let ino = st.lookup(path)?;
        match st.nodes.get(&ino) {
            Some(Node::File(f)) => Ok(f.data.clone()),
            _ => Err(other(path, "is a directory")),
        }
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        let mut ino = ROOT;
        for name in components(dir)? {
            let next = st
                .dir(ino)
                .ok_or_else(|| other(dir, "not a directory"))?
                .entries
                .get(&name)
                .copied();
            ino = match next {
                Some(i) => i,
                None => {
                    st.check_err(FaultOp::Metadata, dir)?;
                    let child = st.new_node(Node::Dir(DirNode::default()));
                    st.link(ino, vec![(name, Some(child))]);
                    child
                }
            };
        }
        if st.dir(ino).is_none() {
            return Err(other(dir, "not a directory"));
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        let (dir, name) = st.parent(path)?;
        let ino = *st
            .dir(dir)
            .and_then(|d| d.entries.get(&name))
            .ok_or_else(|| not_found(path))?;
        if !matches!(st.nodes.get(&ino), Some(Node::File(_))) {
            return Err(other(path, "is a directory"));
        }
        st.check_err(FaultOp::Metadata, path)?;
        st.link(dir, vec![(name, None)]);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        let (dir, name) = st.parent(path)?;
        let ino = *st
            .dir(dir)
            .and_then(|d| d.entries.get(&name))
            .ok_or_else(|| not_found(path))?;
        if st.dir(ino).is_none() {
            return Err(other(path, "not a directory"));
        }
        st.check_err(FaultOp::Metadata, path)?;
        // The subtree becomes unreachable; like a real removal, it is durable once the
        // parent is synced.
        st.link(dir, vec![(name, None)]);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state();
        let (from_dir, from_name) = st.parent(from)?;
        let (to_dir, to_name) = st.parent(to)?;
        let ino = *st
            .dir(from_dir)
            .and_then(|d| d.entries.get(&from_name))
            .ok_or_else(|| not_found(from))?;
        let target = st
            .dir(to_dir)
            .and_then(|d| d.entries.get(&to_name))
            .copied();
        if let Some(t) = target
            && (st.dir(t).is_some() || st.dir(ino).is_some())
            && t != ino
        {
            return Err(other(
                to,
                "cannot replace a directory, or a file by a directory",
            ));
        }
        st.check_err(FaultOp::Metadata, to)?;
        if from_dir == to_dir {
            st.link(from_dir, vec![(from_name, None), (to_name, Some(ino))]);
        } else {
            st.link(from_dir, vec![(from_name, None)]);
            st.link(to_dir, vec![(to_name, Some(ino))]);
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let st = self.state();
        let ino = st.lookup(dir)?;
        let d = st.dir(ino).ok_or_else(|| other(dir, "not a directory"))?;
        Ok(d.entries
            .iter()
            .map(|(name, child)| DirEntry {
                name: name.clone(),
                path: dir.join(name),
                is_dir: matches!(st.nodes.get(child), Some(Node::Dir(_))),
            })
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        let ino = st.lookup(dir)?;
        st.check_err(FaultOp::SyncDir, dir)?;
        let d = st
            .dir_mut(ino)
            .ok_or_else(|| other(dir, "not a directory"))?;
        for op in std::mem::take(&mut d.pending) {
            DirNode::apply(&mut d.durable, &op);
        }
        st.stats.dir_syncs += 1;
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<FileLock>> {
        let mut st = self.state();
        let ino = SimFs::create_file(&mut st, path)?;
        if !st.locks.insert(ino) {
            return Ok(None);
        }
        Ok(Some(FileLock::new(SimLock {
            inner: Arc::clone(&self.inner),
            ino,
            epoch: st.epoch,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileio::{DataFile, atomic_write_with};

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// A directory whose entry in its parent is durable.
    fn durable_dir(fs: &SimFs, dir: &str) -> io::Result<()> {
        fs.create_dir_all(&p(dir))?;
        let mut cur = PathBuf::from("/");
        fs.sync_dir(&cur)?;
        for c in components(&p(dir))? {
            cur.push(c);
            fs.sync_dir(&cur)?;
        }
        Ok(())
    }

    #[test]
    fn unsynced_data_is_lost_on_power_loss_only() -> io::Result<()> {
        let fs = SimFs::new();
        durable_dir(&fs, "/d")?;
        let mut f = DataFile::open(&fs, &p("/d/a"))?;
        fs.sync_dir(&p("/d"))?;
        f.append(b"hello")?;
        f.sync()?;
        f.append(b" world")?;
        fs.crash(CrashMode::ProcessKill);
        assert_eq!(fs.read(&p("/d/a"))?, b"hello world");
        assert!(f.append(b"!").is_err(), "handles die with the process");
        fs.crash(CrashMode::PowerLoss);
        assert_eq!(fs.read(&p("/d/a"))?, b"hello", "never synced");
        let mut f = DataFile::open(&fs, &p("/d/a"))?;
        f.truncate(2)?;
        fs.crash(CrashMode::PowerLoss);
        assert_eq!(fs.read(&p("/d/a"))?, b"hello", "unsynced truncation undone");
        Ok(())
    }

    #[test]
    fn directory_entries_need_a_directory_sync() -> io::Result<()> {
        let fs = SimFs::new();
        durable_dir(&fs, "/d")?;
        let f = DataFile::open(&fs, &p("/d/new"))?;
        f.sync()?;
        fs.crash(CrashMode::PowerLoss);
        assert!(!fs.exists(&p("/d/new")), "synced file, unsynced entry");
        atomic_write_with(&fs, &p("/d/meta"), b"v1")?;
        // The rename of a second version does not reach the disk: its directory sync fails.
        fs.inject(Fault::new(FaultKind::Io, &[FaultOp::SyncDir]));
        assert!(atomic_write_with(&fs, &p("/d/meta"), b"v2").is_err());
        assert_eq!(fs.read(&p("/d/meta"))?, b"v2", "visible before the crash");
        fs.clear_faults();
        fs.crash(CrashMode::PowerLoss);
        assert_eq!(fs.read(&p("/d/meta"))?, b"v1", "the rename was lost");
        Ok(())
    }

    #[test]
    fn torn_last_write_keeps_a_prefix() -> io::Result<()> {
        for keep in 0..=4 {
            let fs = SimFs::new();
            durable_dir(&fs, "/d")?;
            let mut f = DataFile::open(&fs, &p("/d/a"))?;
            f.append(b"abc")?;
            f.append(b"defg")?;
            assert_eq!(fs.last_write(), Some((3, 4)));
            fs.crash(CrashMode::TornLastWrite { keep });
            assert_eq!(fs.read(&p("/d/a"))?, &b"abcdefg"[..3 + keep]);
        }
        Ok(())
    }

    #[test]
    fn faults_fire_partially_and_clear() -> io::Result<()> {
        let fs = SimFs::new();
        durable_dir(&fs, "/d")?;
        let mut f = DataFile::open(&fs, &p("/d/a"))?;
        fs.inject(
            Fault::new(FaultKind::NoSpace, &[FaultOp::Write])
                .after(1)
                .partial(2),
        );
        f.append(b"ok")?;
        let e = f.append(b"12345").err().map(|e| e.kind());
        assert_eq!(e, Some(io::ErrorKind::StorageFull));
        assert_eq!(
            fs.read(&p("/d/a"))?,
            b"ok12",
            "short write before the error"
        );
        fs.clear_faults();
        f.truncate(2)?;
        f.append(b"!")?;
        assert_eq!(fs.read(&p("/d/a"))?, b"ok!");
        fs.inject(Fault::new(FaultKind::Io, &[FaultOp::Sync]).times(1));
        assert!(f.sync().is_err());
        f.sync()?;
        assert_eq!(fs.stats().faults_fired, 2);
        Ok(())
    }

    #[test]
    fn random_crashes_keep_renames_atomic() -> io::Result<()> {
        for seed in 0..200 {
            let fs = SimFs::new();
            durable_dir(&fs, "/d")?;
            atomic_write_with(&fs, &p("/d/cp"), b"0")?;
            for v in 1..4u8 {
                let text = [b'0' + v];
                // Sometimes the directory sync fails: the rename is then pending.
                if seed % 3 == u64::from(v) {
                    fs.inject(Fault::new(FaultKind::Io, &[FaultOp::SyncDir]).times(1));
                }
                // An error here only means the new version may not have become durable.
                let _ = atomic_write_with(&fs, &p("/d/cp"), &text);
            }
            fs.crash(CrashMode::Random { seed });
            let got = fs.read(&p("/d/cp"))?;
            assert!(
                [&b"0"[..], b"1", b"2", b"3"].contains(&got.as_slice()),
                "seed {seed}: {got:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn removed_and_renamed_directories() -> io::Result<()> {
        let fs = SimFs::new();
        durable_dir(&fs, "/data/t-0")?;
        fs.put_file(&p("/data/t-0/x"), b"x")?;
        fs.rename(&p("/data/t-0"), &p("/data/t-0.del"))?;
        assert_eq!(fs.read(&p("/data/t-0.del/x"))?, b"x");
        fs.remove_dir_all(&p("/data/t-0.del"))?;
        let names: Vec<_> = fs
            .list_dir(&p("/data"))?
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.is_empty());
        fs.crash(CrashMode::PowerLoss);
        assert_eq!(fs.read(&p("/data/t-0/x"))?, b"x", "nothing was synced");
        let lock = fs.try_lock(&p("/data/.lock"))?;
        assert!(lock.is_some());
        assert!(fs.try_lock(&p("/data/.lock"))?.is_none());
        fs.crash(CrashMode::ProcessKill);
        assert!(
            fs.try_lock(&p("/data/.lock"))?.is_some(),
            "a crash frees locks"
        );
        drop(lock);
        Ok(())
    }
}
