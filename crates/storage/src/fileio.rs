//! Every file-system call of the crate goes through the [`Fs`] trait, so that a simulated file
//! system ([`crate::SimFs`]) can be slid underneath to test crashes, torn writes and I/O
//! errors. [`RealFs`] is the operating system's; it is what [`crate::Log::open`] and
//! [`crate::LogManager::open`] use.

use std::any::Any;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file of an [`Fs`]: it grows only at its end and is read at explicit positions.
/// Shared between threads: a flush fsyncs it without the log's lock while appends go on.
pub trait FsFile: Send + Sync + fmt::Debug {
    /// Current length.
    fn len(&self) -> io::Result<u64>;

    /// True if the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from position `pos` (pread); a short file is an error.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;

    /// Appends (a prefix of) `bufs` at the end of the file in one write call; returns the
    /// number of bytes written, which may be short.
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Cuts (or extends with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the contents and size durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the contents and all metadata durable (fsync).
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    /// The operating system's descriptor, for zero-copy transfers (sendfile) by the layers
    /// above; `None` for files that exist only in memory.
    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// File name, if it is valid UTF-8 (others are never ours).
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// True for a directory.
    pub is_dir: bool,
}

/// An exclusive advisory lock, released when dropped.
pub struct FileLock {
    _guard: Box<dyn Any + Send + Sync>,
}

impl FileLock {
    /// A lock released when `guard` is dropped (for [`Fs`] implementations).
    pub fn new(guard: impl Any + Send + Sync) -> FileLock {
        FileLock {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for FileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileLock")
    }
}

/// The file-system operations the storage layer uses. Paths are those the caller passes in;
/// durability follows POSIX: written data is durable once its file is synced, and a created,
/// renamed or removed directory entry once its directory is synced ([`Fs::sync_dir`]).
pub trait Fs: Send + Sync + fmt::Debug {
    /// Opens `path` for reading and appending, creating it if missing; `truncate` empties it.
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn FsFile>>;

    /// Whole contents of a file (`NotFound` if missing).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Removes a file (`NotFound` if missing).
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes a directory tree (`NotFound` if missing).
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Renames `from` to `to`, replacing a file at `to` (atomic within one file system).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Lists `dir`, skipping names that are not UTF-8.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;

    /// Makes a directory's entries (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Takes an exclusive lock on `path` (created if missing). `Ok(None)` if another holder
    /// has it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<FileLock>>;
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl RealFs {
    /// A shareable handle, what [`crate::Log::open`] uses.
    pub fn shared() -> Arc<dyn Fs> {
        Arc::new(RealFs)
    }
}

#[derive(Debug)]
struct RealFile(File);

impl FsFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Opened with O_APPEND: every write lands at the end.
        (&self.0).write_vectored(bufs)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        crate::fsync_stats::timed(|| self.0.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        crate::fsync_stats::timed(|| self.0.sync_all())
    }

    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(std::os::fd::AsFd::as_fd(&self.0))
    }
}

impl Fs for RealFs {
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        // ext4 flushes a file's dirty pages at close and unlink once it has been truncated
        // (auto_da_alloc), so a truncation that changes nothing must not happen.
        if truncate && file.metadata()?.len() > 0 {
            file.set_len(0)?;
        }
        Ok(Arc::new(RealFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            out.push(DirEntry {
                name,
                path: entry.path(),
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        Ok(out)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = File::open(dir)?;
        crate::fsync_stats::timed(|| dir.sync_all())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<FileLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock::new(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A file that grows only at its end and is read at explicit positions. Clones share the
/// open file, so one can be synced without the owner's lock.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    file: Arc<dyn FsFile>,
}

impl DataFile {
    /// Opens `path` for reading and appending, creating it if missing.
    pub(crate) fn open(fs: &dyn Fs, path: &Path) -> io::Result<DataFile> {
        Ok(DataFile {
            file: fs.open(path, false)?,
        })
    }

    /// Opens `path` empty, discarding anything a previous incarnation left there.
    pub(crate) fn create_empty(fs: &dyn Fs, path: &Path) -> io::Result<DataFile> {
        Ok(DataFile {
            file: fs.open(path, true)?,
        })
    }

    /// Current length of the file.
    pub(crate) fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    /// The shared open file, kept alive by whoever holds the clone.
    pub(crate) fn shared(&self) -> Arc<dyn FsFile> {
        Arc::clone(&self.file)
    }

    /// Fills `buf` from position `pos` (pread); a short file is an error.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    /// Appends all of `bufs` at the end of the file, looping over short writes. On error a
    /// prefix may have been written.
    pub(crate) fn append_all(&mut self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        // Skip empty leading slices so that a zero-byte write means "no space", not "done".
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match self.file.append(bufs) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write whole buffer",
                    ));
                }
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Appends `buf` at the end of the file.
    pub(crate) fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.append_all(&mut [IoSlice::new(buf)])
    }

    /// Cuts (or extends with zeros) the file to `len` bytes.
    pub(crate) fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// Makes the contents and size durable (fdatasync).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The operating system's file system, shared.
pub(crate) fn real_fs() -> Arc<dyn Fs> {
    #[cfg(feature = "fault-injection")]
    if let Some(fs) = crate::faultfs::from_env() {
        return fs;
    }
    RealFs::shared()
}

/// Removes a file; a file that is already gone is not an error.
pub(crate) fn remove_file(fs: &dyn Fs, path: &Path) -> io::Result<()> {
    match fs.remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes a directory tree; a tree that is already gone is not an error.
pub(crate) fn remove_dir_all(fs: &dyn Fs, path: &Path) -> io::Result<()> {
    match fs.remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whole contents of a file, or `None` if it does not exist.
pub(crate) fn read_optional(fs: &dyn Fs, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs.read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` on the operating system's file system so that a crash leaves
/// either the old or the new contents (see [`atomic_write_with`]).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_with(&RealFs, path, bytes)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new contents:
/// write a temporary file beside it, fsync it, rename it over `path`, fsync the directory.
/// Concurrent writers of the same path must be serialised by the caller (they share the
/// temporary name).
pub fn atomic_write_with(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_checked(fs, path, bytes).map_err(|e| e.error)
}

/// Why [`atomic_write_checked`] failed.
#[derive(Debug)]
pub(crate) struct AtomicWriteError {
    pub(crate) error: io::Error,
    /// An fsync failed (of the file or of the directory), rather than a write or rename: the
    /// caller may have to treat the directory's durability as unknown.
    pub(crate) sync_failed: bool,
}

/// [`atomic_write_with`], saying whether an fsync is what failed.
pub(crate) fn atomic_write_checked(
    fs: &dyn Fs,
    path: &Path,
    bytes: &[u8],
) -> Result<(), AtomicWriteError> {
    let other = |error| AtomicWriteError {
        error,
        sync_failed: false,
    };
    let synced = |error| AtomicWriteError {
        error,
        sync_failed: true,
    };
    let file_name = path.file_name().ok_or_else(|| {
        other(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ))
    })?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = DataFile::create_empty(fs, &tmp).map_err(other)?;
        f.append(bytes).map_err(other)?;
        f.file.sync_all().map_err(synced)?;
    }
    fs.rename(&tmp, path).map_err(other)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs.sync_dir(parent).map_err(synced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_contents() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("meta.properties");
        atomic_write(&p, b"one")?;
        atomic_write(&p, b"two")?;
        assert_eq!(fs::read(&p)?, b"two");
        assert!(!dir.path().join("meta.properties.tmp").exists());
        Ok(())
    }

    #[test]
    fn append_vectored_and_read_back() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut f = DataFile::open(&RealFs, &dir.path().join("x"))?;
        let a = vec![1u8; 3000];
        let b = vec![2u8; 5000];
        let mut slices = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(b"end")];
        f.append_all(&mut slices)?;
        assert_eq!(f.len()?, 8003);
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 2998)?;
        assert_eq!(buf, [1, 1, 2, 2, 2]);
        f.truncate(10)?;
        f.append(b"z")?;
        assert_eq!(f.len()?, 11);
        f.append(b"")?;
        assert_eq!(f.len()?, 11);
        Ok(())
    }

    #[test]
    fn second_lock_is_refused() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join(".lock");
        let first = RealFs.try_lock(&p)?;
        assert!(first.is_some());
        assert!(RealFs.try_lock(&p)?.is_none());
        drop(first);
        assert!(RealFs.try_lock(&p)?.is_some());
        Ok(())
    }
}
