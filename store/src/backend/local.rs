//! The embedded default backend: objects are files under a directory.
//!
//! `put` writes a temporary file, fsyncs it, renames it into place and
//! fsyncs the directory, so an object is either absent or complete and
//! durable, even across a crash.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{validate_key, validate_prefix, Backend};
use crate::error::{Error, IoContext, Result};
use crate::util::unique_tmp_name;

/// Objects stored as files below `root`; temporary files go to `tmp`, which
/// must be on the same file system so that rename is atomic.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    tmp: PathBuf,
}

/// fsync a directory so that renames into it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("sync directory", dir)
}

impl LocalDir {
    /// Objects under `root`; temporary files in `tmp` (same file system).
    pub fn new(root: impl Into<PathBuf>, tmp: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = tmp.into();
        crate::util::private_dir(&root).ctx("create directory", &root)?;
        crate::util::private_dir(&tmp).ctx("create directory", &tmp)?;
        Ok(Self { root, tmp })
    }

    /// Objects under `root`, which this process cannot write (a read-only
    /// mount): nothing is created; a write fails naming `root/.tmp`.
    pub fn read_only(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let tmp = root.join(".tmp");
        Self { root, tmp }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn write_tmp(&self, data: &[u8]) -> Result<PathBuf> {
        let tmp = self.tmp.join(unique_tmp_name("put-"));
        let mut f = crate::util::private_file(&tmp).ctx("create", &tmp)?;
        let res = crate::util::write_in_pieces(&mut f, data)
            .and_then(|_| f.sync_all())
            .ctx("write", &tmp);
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|_| tmp)
    }
}

impl Backend for LocalDir {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let dir = path
            .parent()
            .ok_or_else(|| Error::corrupt(format!("object key {key:?}"), "not a valid key"))?;
        let tmp = self.write_tmp(data)?;
        let moved = crate::util::private_dir(dir)
            .ctx("create directory", dir)
            .and_then(|_| fs::rename(&tmp, &path).ctx("rename into", &path));
        if moved.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        moved?;
        sync_dir(dir)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        fs::read(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::NotFound { key: key.into() },
            _ => Error::io("read", &path, e),
        })
    }

    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let path = self.path(key)?;
        let file = File::open(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::NotFound { key: key.into() },
            _ => Error::io("open", &path, e),
        })?;
        let len = file.metadata().ctx("stat", &path)?.len();
        if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end > len) {
            // Refused before any buffer is sized by the range.
            return Err(Error::corrupt(
                format!("object {key}"),
                format!("shorter than the range {}..{}", r.start, r.end),
            ));
        }
        // Read into reserved capacity: no buffer is zeroed first (a
        // `strata serve` answering a fresh attach spent a sixth of its CPU
        // zeroing range buffers it then overwrote).
        let mut reader = &file;
        ranges
            .iter()
            .map(|r| {
                let want = (r.end - r.start) as usize;
                let mut buf = Vec::with_capacity(want);
                reader
                    .seek(SeekFrom::Start(r.start))
                    .and_then(|_| reader.take(want as u64).read_to_end(&mut buf))
                    .map_err(|e| Error::io("read", &path, e))?;
                if buf.len() != want {
                    return Err(Error::corrupt(
                        format!("object {key}"),
                        format!("shorter than the range {}..{}", r.start, r.end),
                    ));
                }
                Ok(buf)
            })
            .collect()
    }

    fn size(&self, key: &str) -> Result<u64> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::NotFound { key: key.into() }),
            Err(e) => Err(Error::io("stat", &path, e)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", &path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        // Walk only the directory that holds the prefix, then filter.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = self.root.join(dir_part);
        let mut keys = Vec::new();
        // Missing: no keys. Any other error (a name too long, no
        // permission) is one, never an empty answer.
        match fs::symlink_metadata(&start) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(Error::io("list", &start, e)),
            Ok(m) if !m.is_dir() => {
                let e = std::io::Error::from_raw_os_error(libc::ENOTDIR);
                return Err(Error::io("list", &start, e));
            }
            Ok(_) => {}
        }
        for entry in walkdir::WalkDir::new(&start).min_depth(1) {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&start).to_path_buf();
                Error::io("list", path, e.into())
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            let Some(key) = rel.to_str() else { continue };
            // Only objects: not the local index or temporary files.
            if key.starts_with(prefix) && validate_key(key).is_ok() {
                keys.push(key.to_string());
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}
