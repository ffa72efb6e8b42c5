//! A failing disk for tests of whole broker processes (built only with the `fault-injection`
//! feature): [`FaultFs`] wraps the real file system and, while a fault is set, fails writes
//! with EIO, fsyncs with EIO, or appends with ENOSPC; or it crashes the process after cutting
//! every file back to what was last synced, as a power loss would leave it.
//!
//! A broker built with the feature and started with `VLTAVA_DISK_FAULT_FILE=<path>` uses it
//! for every log and checkpoint; a thread reads that file every [`POLL_INTERVAL`] and applies
//! what it says (one word: `none`, `eio-write`, `eio-fsync`, `enospc`, `crash-unsynced`), so a
//! test switches faults on and off by writing the file. Without the variable the real file
//! system is used unchanged. Reads are never failed: the point is what the broker does when it
//! cannot make data durable.

use std::fmt;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::fileio::{DirEntry, FileLock, Fs, FsFile, RealFs};

/// The environment variable naming the control file.
pub const DISK_FAULT_FILE_ENV: &str = "VLTAVA_DISK_FAULT_FILE";

/// How often the control file is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What the disk does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// Works.
    None,
    /// Writes, truncations, creations, renames and removals fail with EIO.
    EioWrite,
    /// fsyncs (of files and directories) fail with EIO.
    EioFsync,
    /// Appends fail with ENOSPC; truncating still works, as on a full disk.
    Enospc,
}

impl DiskFault {
    fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::EioWrite => 1,
            Self::EioFsync => 2,
            Self::Enospc => 3,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::EioWrite,
            2 => Self::EioFsync,
            3 => Self::Enospc,
            _ => Self::None,
        }
    }
}

/// What a control file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Set this fault (or clear it).
    Set(DiskFault),
    /// Cut every file back to its synced length and abort the process.
    CrashUnsynced,
}

/// Parses a control file's contents; `None` for anything else (ignored, with a warning).
pub fn parse_command(text: &str) -> Option<Command> {
    Some(match text.trim() {
        "" | "none" => Command::Set(DiskFault::None),
        "eio-write" => Command::Set(DiskFault::EioWrite),
        "eio-fsync" => Command::Set(DiskFault::EioFsync),
        "enospc" => Command::Set(DiskFault::Enospc),
        "crash-unsynced" => Command::CrashUnsynced,
        _ => return None,
    })
}

struct Shared {
    fault: AtomicU8,
    // Files opened since start, to cut back on a crash; dead ones are pruned on open.
    files: Mutex<Vec<Weak<FaultFile>>>,
}

impl Shared {
    fn fault(&self) -> DiskFault {
        DiskFault::from_code(self.fault.load(Ordering::Relaxed))
    }

    fn check(&self, op: Op) -> io::Result<()> {
        let failing = match (self.fault(), op) {
            (DiskFault::None, _) => false,
            (DiskFault::EioWrite, op) => op != Op::Sync,
            (DiskFault::EioFsync, op) => op == Op::Sync,
            (DiskFault::Enospc, op) => op == Op::Append || op == Op::Create,
        };
        if !failing {
            return Ok(());
        }
        Err(match self.fault() {
            DiskFault::Enospc => io::Error::from_raw_os_error(28), // ENOSPC
            _ => io::Error::from_raw_os_error(5),                  // EIO
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Append,
    Create,
    Modify,
    Sync,
}

/// The real file system with switchable faults.
pub struct FaultFs {
    inner: Arc<dyn Fs>,
    shared: Arc<Shared>,
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFs")
            .field("fault", &self.shared.fault())
            .finish()
    }
}

impl FaultFs {
    /// Wraps `inner`, working until a fault is set.
    pub fn new(inner: Arc<dyn Fs>) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared {
                fault: AtomicU8::new(DiskFault::None.code()),
                files: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sets (or, with [`DiskFault::None`], clears) the fault.
    pub fn set_fault(&self, fault: DiskFault) {
        self.shared.fault.store(fault.code(), Ordering::Relaxed);
    }

    /// Cuts every file opened through this file system back to the length it had when last
    /// synced (or when opened, if never), dropping what a power loss would drop. Returns the
    /// files cut and the bytes dropped.
    pub fn drop_unsynced(&self) -> (usize, u64) {
        let files: Vec<Arc<FaultFile>> = self
            .shared
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let (mut cut, mut dropped) = (0, 0);
        for f in files {
            let synced = f.synced_len.load(Ordering::Relaxed);
            if let Ok(len) = f.inner.len()
                && len > synced
                && f.inner.set_len(synced).is_ok()
            {
                cut += 1;
                dropped += len - synced;
            }
        }
        (cut, dropped)
    }
}

struct FaultFile {
    inner: Arc<dyn FsFile>,
    path: PathBuf,
    synced_len: AtomicU64,
    shared: Arc<Shared>,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("path", &self.path)
            .finish()
    }
}

/// An `Arc<FaultFile>` as the `FsFile` the storage code holds; the registry keeps a `Weak`.
#[derive(Debug)]
struct Handle(Arc<FaultFile>);

impl FsFile for Handle {
    fn len(&self) -> io::Result<u64> {
        self.0.inner.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.inner.read_exact_at(buf, pos)
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.shared.check(Op::Append)?;
        self.0.inner.append(bufs)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.shared.check(Op::Modify)?;
        self.0.inner.set_len(len)?;
        // What was synced beyond the cut is gone; a crash cannot bring it back.
        self.0.synced_len.fetch_min(len, Ordering::Relaxed);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.shared.check(Op::Sync)?;
        let len = self.0.inner.len()?;
        self.0.inner.sync_data()?;
        self.0.synced_len.store(len, Ordering::Relaxed);
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.shared.check(Op::Sync)?;
        let len = self.0.inner.len()?;
        self.0.inner.sync_all()?;
        self.0.synced_len.store(len, Ordering::Relaxed);
        Ok(())
    }

    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.0.inner.as_fd()
    }
}

impl Fs for FaultFs {
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn FsFile>> {
        if truncate || !path.exists() {
            self.shared.check(Op::Create)?;
        }
        let inner = self.inner.open(path, truncate)?;
        // Whatever the file held at open is taken as durable: it was there before this
        // process could have written it.
        let len = inner.len()?;
        let file = Arc::new(FaultFile {
            inner,
            path: path.to_owned(),
            synced_len: AtomicU64::new(len),
            shared: Arc::clone(&self.shared),
        });
        let mut files = self.shared.files.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|w| w.strong_count() > 0);
        files.push(Arc::downgrade(&file));
        Ok(Arc::new(Handle(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if !dir.exists() {
            self.shared.check(Op::Create)?;
        }
        self.inner.create_dir_all(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.check(Op::Modify)?;
        self.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.check(Op::Modify)?;
        self.inner.remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.shared.check(Op::Modify)?;
        self.inner.rename(from, to)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.list_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.shared.check(Op::Sync)?;
        self.inner.sync_dir(dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<FileLock>> {
        self.inner.try_lock(path)
    }
}

/// The process's file system: a [`FaultFs`] controlled by the file named in
/// [`DISK_FAULT_FILE_ENV`] when that is set, else `None` (use the real one).
pub fn from_env() -> Option<Arc<dyn Fs>> {
    static INSTALLED: OnceLock<Option<Arc<FaultFs>>> = OnceLock::new();
    let fs = INSTALLED.get_or_init(|| {
        let control = PathBuf::from(std::env::var_os(DISK_FAULT_FILE_ENV)?);
        let fs = Arc::new(FaultFs::new(RealFs::shared()));
        let watched = Arc::clone(&fs);
        let spawned = std::thread::Builder::new()
            .name("disk-faults".into())
            .spawn(move || watch(&watched, &control));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the disk-fault thread; faults stay off");
        }
        Some(fs)
    });
    fs.as_ref().map(|f| Arc::clone(f) as Arc<dyn Fs>)
}

fn watch(fs: &FaultFs, control: &Path) {
    tracing::warn!(control = %control.display(), "disk fault injection is on (test build)");
    let mut last = String::new();
    loop {
        let text = std::fs::read_to_string(control).unwrap_or_default();
        if text != last {
            match parse_command(&text) {
                Some(Command::Set(fault)) => {
                    tracing::warn!(?fault, "disk fault set");
                    fs.set_fault(fault);
                }
                Some(Command::CrashUnsynced) => {
                    let (files, bytes) = fs.drop_unsynced();
                    tracing::warn!(
                        files,
                        bytes,
                        "disk crash: unsynced writes dropped, aborting"
                    );
                    std::process::abort();
                }
                None => tracing::warn!(text = text.trim(), "unknown disk fault command ignored"),
            }
            last = text;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(e: &io::Error) -> Option<i32> {
        e.raw_os_error()
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_command(" none\n"),
            Some(Command::Set(DiskFault::None))
        );
        assert_eq!(parse_command(""), Some(Command::Set(DiskFault::None)));
        assert_eq!(
            parse_command("eio-write"),
            Some(Command::Set(DiskFault::EioWrite))
        );
        assert_eq!(
            parse_command("eio-fsync"),
            Some(Command::Set(DiskFault::EioFsync))
        );
        assert_eq!(
            parse_command("enospc"),
            Some(Command::Set(DiskFault::Enospc))
        );
        assert_eq!(
            parse_command("crash-unsynced"),
            Some(Command::CrashUnsynced)
        );
        assert_eq!(parse_command("explode"), None);
    }

    #[test]
    fn faults_fail_what_they_name_and_clear() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let fs = FaultFs::new(RealFs::shared());
        let f = fs.open(&dir.path().join("a.log"), false)?;
        f.append(&[IoSlice::new(b"hello")])?;

        fs.set_fault(DiskFault::EioWrite);
        let e = f.append(&[IoSlice::new(b"x")]).expect_err("eio on append");
        assert_eq!(raw(&e), Some(5));
        assert!(
            fs.rename(&dir.path().join("a.log"), &dir.path().join("b.log"))
                .is_err()
        );
        f.sync_data()?; // EIO on writes leaves fsync working

        fs.set_fault(DiskFault::EioFsync);
        f.append(&[IoSlice::new(b"!")])?;
        assert_eq!(raw(&f.sync_data().expect_err("eio on fsync")), Some(5));
        assert!(fs.sync_dir(dir.path()).is_err());

        fs.set_fault(DiskFault::Enospc);
        let e = f.append(&[IoSlice::new(b"x")]).expect_err("enospc");
        assert_eq!(raw(&e), Some(28));
        f.set_len(3)?; // a full disk still truncates

        fs.set_fault(DiskFault::None);
        f.append(&[IoSlice::new(b"lo")])?;
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 0)?;
        assert_eq!(&buf, b"hello");
        Ok(())
    }

    #[test]
    fn a_crash_drops_exactly_what_was_not_synced() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("old.log"), b"before")?;
        let fs = FaultFs::new(RealFs::shared());
        let old = fs.open(&dir.path().join("old.log"), false)?;
        let new = fs.open(&dir.path().join("new.log"), false)?;
        old.append(&[IoSlice::new(b"+unsynced")])?;
        new.append(&[IoSlice::new(b"synced")])?;
        new.sync_data()?;
        new.append(&[IoSlice::new(b"+lost")])?;
        let (files, bytes) = fs.drop_unsynced();
        assert_eq!((files, bytes), (2, 9 + 5));
        assert_eq!(std::fs::read(dir.path().join("old.log"))?, b"before");
        assert_eq!(std::fs::read(dir.path().join("new.log"))?, b"synced");
        // A truncation below the synced length lowers it.
        new.set_len(2)?;
        new.append(&[IoSlice::new(b"zz")])?;
        assert_eq!(fs.drop_unsynced(), (1, 2));
        assert_eq!(std::fs::read(dir.path().join("new.log"))?, b"sy");
        Ok(())
    }
}
