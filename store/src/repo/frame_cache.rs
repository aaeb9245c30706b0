//! The runner's chunk cache (`$STRATA_CACHE/frames`): pack frames fetched
//! from a remote store, kept so a later attach on the same machine reads
//! them from disk instead of the network.
//!
//! The unit is a stored (compressed) frame, named by its pack and place in
//! it: packs are content-addressed, so a name always means the same bytes,
//! whichever store or namespace it came from. Caching frames rather than
//! chunks keeps the cache compressed and its files few (a 2 MiB frame holds
//! dozens of small files' chunks). Cached bytes are trusted no more than the
//! network's: every chunk is checked against its id when used, and a frame
//! that fails is dropped and fetched again.
//!
//! Several processes may share the cache: files are written under a unique
//! temporary name and renamed into place; a file evicted while another
//! process reads it stays readable through its open handle. The size is
//! bounded: after an attach adds to it, the least recently used frames
//! (by modification time, refreshed on every hit) are evicted down to 90%
//! of the bound. This module knows nothing about stores or attach.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{IoContext, Result};
use crate::format::pack::FrameRef;
use crate::id::PackId;

#[derive(Debug)]
pub struct FrameCache {
    dir: PathBuf,
    limit: u64,
    /// Bytes added by this process since the last trim.
    added: AtomicU64,
}

/// What a trim did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub files: u64,
    pub bytes: u64,
    /// Bytes left in the cache.
    pub kept: u64,
}

impl FrameCache {
    pub fn at(dir: &Path, limit: u64) -> Result<FrameCache> {
        crate::util::private_dir(dir).ctx("create cache directory", dir)?;
        Ok(FrameCache {
            dir: dir.to_path_buf(),
            limit,
            added: AtomicU64::new(0),
        })
    }

    fn path(&self, pack: &PackId, frame: &FrameRef) -> PathBuf {
        let hex = pack.to_hex();
        self.dir
            .join(&hex[..2])
            .join(format!("{hex}-{}-{}", frame.offset, frame.stored_len))
    }

    /// The stored bytes of a cached frame, if cached (and of the right
    /// length); marks it recently used.
    pub fn get(&self, pack: &PackId, frame: &FrameRef) -> Option<Vec<u8>> {
        let path = self.path(pack, frame);
        let bytes = fs::read(&path).ok()?;
        if bytes.len() != frame.stored_len as usize {
            let _ = fs::remove_file(&path);
            return None;
        }
        let _ = filetime::set_file_mtime(&path, filetime::FileTime::now());
        Some(bytes)
    }

    /// Caches a frame's stored bytes. Best effort: a cache that cannot be
    /// written (full disk, permissions) costs a later download, not this
    /// attach.
    pub fn put(&self, pack: &PackId, frame: &FrameRef, stored: &[u8]) {
        let path = self.path(pack, frame);
        if path.exists() {
            return;
        }
        let write = || -> std::io::Result<()> {
            let dir = path.parent().expect("has a parent");
            crate::util::private_dir(dir)?;
            let tmp = dir.join(crate::util::unique_tmp_name(".tmp-"));
            let mut f = crate::util::private_file(&tmp)?;
            let done =
                crate::util::write_in_pieces(&mut f, stored).and_then(|_| fs::rename(&tmp, &path));
            if done.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            done
        };
        if write().is_ok() {
            self.added.fetch_add(stored.len() as u64, Relaxed);
        }
    }

    /// Drops a cached frame that turned out bad.
    pub fn remove(&self, pack: &PackId, frame: &FrameRef) {
        let _ = fs::remove_file(self.path(pack, frame));
    }

    /// Evicts the least recently used frames once the cache is over its
    /// bound, down to 90% of it. Cheap when this process added nothing.
    pub fn trim_if_grown(&self) -> Result<Trimmed> {
        if self.added.swap(0, Relaxed) == 0 {
            return Ok(Trimmed::default());
        }
        self.trim()
    }

    pub fn trim(&self) -> Result<Trimmed> {
        let mut files = Vec::new();
        let mut total = 0u64;
        for entry in walkdir::WalkDir::new(&self.dir).min_depth(2).max_depth(2) {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy();
            let modified = meta.modified().ok();
            // Temporary files of a writer that died are removed after a
            // day; fresh ones belong to a writer still at work.
            if name.starts_with(".tmp-") {
                let stale = modified
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 86_400);
                if stale {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            total += meta.len();
            files.push((modified, meta.len(), entry.into_path()));
        }
        let mut out = Trimmed {
            kept: total,
            ..Trimmed::default()
        };
        if total <= self.limit {
            return Ok(out);
        }
        files.sort();
        let goal = self.limit / 10 * 9;
        for (_, len, path) in files {
            if out.kept <= goal {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                out.files += 1;
                out.bytes += len;
                out.kept -= len;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::Compression;

    fn frame(offset: u32, len: u32) -> FrameRef {
        FrameRef {
            offset,
            stored_len: len,
            raw_len: len,
            compression: Compression::Raw,
        }
    }

    #[test]
    fn round_trip_and_lru_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FrameCache::at(dir.path(), 250).unwrap();
        let pack = PackId::of(b"p");
        let frames: Vec<FrameRef> = (0..4).map(|i| frame(12 + i * 100, 100)).collect();
        assert!(cache.get(&pack, &frames[0]).is_none());
        for (i, f) in frames.iter().enumerate() {
            cache.put(&pack, f, &[i as u8; 100]);
            // Distinct modification times, oldest first.
            let p = cache.path(&pack, f);
            filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(1000 + i as i64, 0))
                .unwrap();
        }
        // Frame 0 is used again: it becomes the most recent.
        assert_eq!(cache.get(&pack, &frames[0]).unwrap(), vec![0u8; 100]);
        let t = cache.trim_if_grown().unwrap();
        assert_eq!((t.files, t.bytes, t.kept), (2, 200, 200));
        assert!(cache.get(&pack, &frames[0]).is_some());
        assert!(cache.get(&pack, &frames[1]).is_none());
        assert!(cache.get(&pack, &frames[2]).is_none());
        assert!(cache.get(&pack, &frames[3]).is_some());
        // Nothing added since: no walk at all.
        assert_eq!(cache.trim_if_grown().unwrap(), Trimmed::default());
        // A file of the wrong length is not trusted.
        fs::write(cache.path(&pack, &frames[3]), b"short").unwrap();
        assert!(cache.get(&pack, &frames[3]).is_none());
    }
}
