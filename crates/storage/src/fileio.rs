//! Every file-system call of the crate goes through this module, so that a fault-injecting
//! implementation can later be slid underneath in one place.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A file that grows only at its end and is read at explicit positions.
#[derive(Debug)]
pub(crate) struct DataFile {
    file: File,
}

impl DataFile {
    /// Opens `path` for reading and appending, creating it if missing.
    pub(crate) fn open(path: &Path) -> io::Result<DataFile> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        Ok(DataFile { file })
    }

    /// Opens `path` empty, discarding anything a previous incarnation left there.
    pub(crate) fn create_empty(path: &Path) -> io::Result<DataFile> {
        let f = DataFile::open(path)?;
        f.file.set_len(0)?;
        Ok(f)
    }

    /// Current length of the file.
    pub(crate) fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Fills `buf` from position `pos` (pread); a short file is an error.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    /// Appends all of `bufs` at the end of the file, looping over short writes.
    pub(crate) fn append_all(&mut self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        while !bufs.is_empty() {
            match self.file.write_vectored(bufs) {
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
        self.file.write_all(buf)
    }

    /// Cuts (or extends with zeros) the file to `len` bytes.
    pub(crate) fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// Makes the contents and size durable (fdatasync).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second descriptor for the same file, so it can be synced without the owner's lock.
    pub(crate) fn try_clone(&self) -> io::Result<DataFile> {
        Ok(DataFile {
            file: self.file.try_clone()?,
        })
    }
}

/// Creates `dir` and its parents if missing.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Removes a file; a file that is already gone is not an error.
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes a directory tree; a tree that is already gone is not an error.
pub(crate) fn remove_dir_all(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Renames `from` to `to` (atomic within one file system).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// One entry of a directory listing.
pub(crate) struct DirEntry {
    /// File name, if it is valid UTF-8 (others are never ours).
    pub(crate) name: String,
    /// Full path.
    pub(crate) path: PathBuf,
    /// True for a directory.
    pub(crate) is_dir: bool,
}

/// Lists `dir`, skipping names that are not UTF-8.
pub(crate) fn list_dir(dir: &Path) -> io::Result<Vec<DirEntry>> {
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

/// Whole contents of a file, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An exclusive advisory lock, released when dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

/// Takes an exclusive advisory lock on `path` (created if missing). `Ok(None)` if another
/// holder has it.
pub(crate) fn try_lock_file(path: &Path) -> io::Result<Option<FileLock>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(FileLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new contents:
/// write a temporary file beside it, fsync it, rename it over `path`, fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(parent)
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
        let mut f = DataFile::open(&dir.path().join("x"))?;
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
        Ok(())
    }

    #[test]
    fn second_lock_is_refused() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join(".lock");
        let first = try_lock_file(&p)?;
        assert!(first.is_some());
        assert!(try_lock_file(&p)?.is_none());
        drop(first);
        assert!(try_lock_file(&p)?.is_some());
        Ok(())
    }
}
