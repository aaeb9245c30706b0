//! A process's own metadata slot of a store on this runner, and the file
//! locks that hold slots (and gc's lock): up to `META_SLOTS` processes use
//! one store at once, each with a complete index of its own; a directory
//! store's slot also names its temporary directory. Knows nothing of
//! what a slot's index holds.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use super::Observer;
use crate::error::{Error, IoContext, Result};

/// How many metadata slots one store has on a runner: one for each
/// process using the store at once, up to this many.
const META_SLOTS: usize = 8;

/// A metadata slot for this process: the first of `slot(0)`, `slot(1)`,
/// ... whose lock no other process holds, with its number. A second
/// process on the runner (another job, a second `strata serve` replica)
/// so takes an index of its own instead of waiting for the first; each is
/// a complete cache, synced from the objects, and kept for the next
/// process. Only when all are in use does it wait for the first.
pub(super) fn free_meta_slot(
    slot: impl Fn(usize) -> PathBuf,
    observer: &dyn Observer,
) -> Result<(usize, PathBuf, FileLock)> {
    for i in 0..META_SLOTS {
        let dir = slot(i);
        crate::util::private_dir(&dir).ctx("create directory", &dir)?;
        if let Some(lock) = FileLock::try_take(&dir.join("lock"))? {
            return Ok((i, dir, lock));
        }
    }
    let dir = slot(0);
    let lock_path = dir.join("lock");
    observer.waiting_for_lock(&dir);
    Ok((0, dir, FileLock::take(&lock_path)?))
}

/// The temporary directory of a directory store's slot `i`, emptied: only
/// the slot's holder writes there, so what it holds is from a process
/// that died mid-write. The holder of slot 0 also removes loose files an
/// earlier version left directly in `.tmp`.
pub(super) fn clean_tmp(root: &Path, i: usize) -> Result<PathBuf> {
    let top = root.join(".tmp");
    let tmp = top.join(i.to_string());
    if tmp.exists() {
        fs::remove_dir_all(&tmp).ctx("clean", &tmp)?;
    }
    if i == 0 && top.exists() {
        for entry in fs::read_dir(&top).ctx("read", &top)? {
            let entry = entry.ctx("read", &top)?;
            let path = entry.path();
            if !entry.file_type().ctx("stat", &path)?.is_dir() {
                fs::remove_file(&path).ctx("clean", &path)?;
            }
        }
    }
    Ok(tmp)
}

/// An exclusive file lock (`flock`), held until dropped: a metadata
/// slot's, for as long as its `Store` lives; gc's (`ops::lease`). With `$STRATA_LOCK_LOG` set (tests), taking and releasing it are
/// logged to that file, one line each: `<pid> take|release <path> <unix
/// nanoseconds>`.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// The lock at `path`, or `None` when another process holds it.
    pub(crate) fn try_take(path: &Path) -> Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock::held(file, path))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::io("lock", path, e)),
        }
    }

    /// The lock at `path`, waiting while another process holds it.
    fn take(path: &Path) -> Result<FileLock> {
        let file = open_lock_file(path)?;
        file.lock().ctx("lock", path)?;
        Ok(FileLock::held(file, path))
    }

    /// The locked file (gc writes its holder there).
    pub(crate) fn file(&self) -> &File {
        &self._file
    }

    pub(super) fn held(file: File, path: &Path) -> FileLock {
        log_lock("take", path);
        FileLock {
            _file: file,
            path: path.to_path_buf(),
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        log_lock("release", &self.path);
    }
}

/// Opens (creating) a lock file without truncating it: what its holder
/// wrote there stays readable to the others.
pub(super) fn open_lock_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .mode(crate::util::file_mode())
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx("open", path)
}

/// Appends a line to `$STRATA_LOCK_LOG`, if set (best effort): `event` is
/// `take` or `release`, `path` names the lock (a file, or a store's gc
/// lease).
pub(crate) fn log_lock(event: &str, path: &Path) {
    use std::io::Write;
    let Some(log) = std::env::var_os("STRATA_LOCK_LOG") else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let line = format!(
        "{} {event} {} {nanos}\n",
        std::process::id(),
        path.display()
    );
    if let Ok(mut f) = fs::OpenOptions::new().append(true).create(true).open(log) {
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A second process takes the next slot instead of waiting; a slot
    // freed is taken again first.
    #[test]
    fn each_process_takes_the_first_free_slot() {
        let t = tempfile::tempdir().unwrap();
        let slot = |i: usize| t.path().join(format!("slot-{i}"));
        let (a, _, lock_a) = free_meta_slot(slot, &super::super::Quiet).unwrap();
        let (b, _, _lock_b) = free_meta_slot(slot, &super::super::Quiet).unwrap();
        assert_eq!((a, b), (0, 1));
        drop(lock_a);
        let (c, dir, _) = free_meta_slot(slot, &super::super::Quiet).unwrap();
        assert_eq!((c, dir), (0, slot(0)));
    }

    // What a dead process left in its slot's temporary directory is gone
    // when the slot is taken again; other slots' are not touched.
    #[test]
    fn a_slots_temporary_directory_is_emptied_when_taken() {
        let t = tempfile::tempdir().unwrap();
        for i in [0, 1] {
            fs::create_dir_all(t.path().join(format!(".tmp/{i}"))).unwrap();
            fs::write(t.path().join(format!(".tmp/{i}/half")), "x").unwrap();
        }
        fs::write(t.path().join(".tmp/loose"), "x").unwrap();
        let tmp = clean_tmp(t.path(), 1).unwrap();
        assert_eq!(tmp, t.path().join(".tmp/1"));
        assert!(!tmp.exists() && t.path().join(".tmp/0/half").exists());
        assert!(t.path().join(".tmp/loose").exists(), "slot 0's to remove");
        clean_tmp(t.path(), 0).unwrap();
        assert!(!t.path().join(".tmp/0").exists() && !t.path().join(".tmp/loose").exists());
    }
}
