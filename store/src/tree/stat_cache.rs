//! What a runner remembers of the files it persisted or attached, so that
//! the next persist or attach over the same tree need not read a file
//! whose stat is unchanged: git's index, restic's parent snapshot.
//!
//! One file per store and tree root in the runner's cache directory
//! (`<cache>/trees/<hash of store id and root>`), listing for each regular
//! file its path under the root, its `FileStat` (device, inode, size,
//! mtime, ctime, mode) and its chunk list. An entry is trusted when the
//! file's stat now equals the recorded one exactly: any write to a file
//! moves its ctime, which no user call can set back, and a file replaced
//! by another has another inode.
//!
//! Racy entries (git's "racily clean") are never recorded: a file written
//! within the same clock tick as the stat that recorded it could change
//! again in that tick and keep every field. So an entry is recorded only
//! when the stat was taken at least `RACY_MARGIN` after the file's ctime
//! and mtime (2 s on a file system whose timestamps have whole seconds);
//! a file changed just before a persist is read again next time.
//!
//! The file is checked (BLAKE3 of its body) and read whole; one that is
//! unreadable, corrupt or of another version counts as empty. Knows
//! nothing about stores, packs or manifests beyond chunk references.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{ChunkRef, MAX_PATH_LEN};
use crate::id::ChunkId;
use crate::util::unique_tmp_name;

const MAGIC: &[u8; 8] = b"STRASTAT";
const VERSION: u32 = 1;
/// How long after a file's last change a stat of it may be recorded, in
/// nanoseconds: well over a kernel clock tick (1-10 ms).
pub const RACY_MARGIN_NANOS: i128 = 100_000_000;
/// The same on a file system that keeps whole seconds.
const RACY_MARGIN_COARSE_NANOS: i128 = 2_000_000_000;

/// What a file's stat says, as far as telling whether it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStat {
    /// The device holding it.
    pub dev: u64,
    /// Its inode number.
    pub ino: u64,
    /// Its length in bytes.
    pub size: u64,
    /// Last modification: seconds and nanoseconds since the Unix epoch.
    pub mtime: (i64, u32),
    /// Last change of content or metadata, the same way.
    pub ctime: (i64, u32),
    /// `st_mode`: file type and permissions.
    pub mode: u32,
}

impl FileStat {
    /// The stat of `m`.
    pub fn of(m: &fs::Metadata) -> FileStat {
        FileStat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec() as u32),
            ctime: (m.ctime(), m.ctime_nsec() as u32),
            mode: m.mode(),
        }
    }

    /// Whether a stat taken at `taken_at` (Unix nanoseconds) is too close
    /// to the file's last change to be trusted later.
    pub fn is_racy(&self, taken_at: i128) -> bool {
        let ns = |(s, n): (i64, u32)| s as i128 * 1_000_000_000 + n as i128;
        let margin = match (self.mtime.1, self.ctime.1) {
            (0, 0) => RACY_MARGIN_COARSE_NANOS,
            _ => RACY_MARGIN_NANOS,
        };
        taken_at - ns(self.mtime).max(ns(self.ctime)) < margin
    }
}

/// Now, in Unix nanoseconds: taken before a stat, it is the stat's time
/// for `FileStat::is_racy` (earlier, so on the safe side).
pub fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A file as last seen: its stat and chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The stat it had.
    pub stat: FileStat,
    /// Its content then.
    pub chunks: Vec<ChunkRef>,
}

/// The remembered files of one tree root.
#[derive(Debug, Default)]
pub struct StatCache {
    file: PathBuf,
    known: HashMap<Vec<u8>, Known>,
}

impl StatCache {
    /// The cache of the tree at `root` (absolute) for the store
    /// `store_id`, kept in `dir`; empty if there is none or it cannot be
    /// read.
    pub fn open(dir: &Path, store_id: &str, root: &Path) -> StatCache {
        use std::os::unix::ffi::OsStrExt;
        let mut h = blake3::Hasher::new();
        h.update(store_id.as_bytes());
        h.update(&[0]);
        h.update(root.as_os_str().as_bytes());
        let file = dir.join(&h.finalize().to_hex()[..32]);
        let known = fs::read(&file)
            .ok()
            .and_then(|bytes| decode(&bytes).ok())
            .unwrap_or_default();
        StatCache { file, known }
    }

    /// The chunks of the file at `rel` if its stat is `stat` exactly.
    pub fn get(&self, rel: &[u8], stat: &FileStat) -> Option<&[ChunkRef]> {
        self.known
            .get(rel)
            .filter(|k| k.stat == *stat)
            .map(|k| &k.chunks[..])
    }

    /// Whether it knows no file.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Remembers the file at `rel` as `stat` (taken at `taken_at`) with
    /// `chunks`, unless the stat is racy; a racy one forgets the path.
    pub fn record(&mut self, rel: &[u8], stat: FileStat, chunks: Vec<ChunkRef>, taken_at: i128) {
        if stat.is_racy(taken_at) {
            self.known.remove(rel);
        } else {
            self.known.insert(rel.to_vec(), Known { stat, chunks });
        }
    }

    /// Forgets every path `drop` says to (files gone from a tree walked).
    pub fn forget(&mut self, drop: impl Fn(&[u8]) -> bool) {
        self.known.retain(|rel, _| !drop(rel));
    }

    /// Writes the cache (to a temporary name, renamed into place).
    pub fn save(&self) -> Result<()> {
        let dir = self.file.parent().expect("the cache file has a directory");
        fs::create_dir_all(dir).ctx("create directory", dir)?;
        let tmp = dir.join(unique_tmp_name(".tmp-"));
        fs::write(&tmp, encode(&self.known)).ctx("write", &tmp)?;
        fs::rename(&tmp, &self.file).ctx("rename into", &self.file)
    }
}

/// The cache's bytes: magic, version, the body's length and BLAKE3, the
/// body (the entry count, then each entry).
pub fn encode(known: &HashMap<Vec<u8>, Known>) -> Vec<u8> {
    let mut body = Vec::with_capacity(known.len() * 120);
    body.extend_from_slice(&(known.len() as u64).to_le_bytes());
    for (rel, k) in known {
        body.extend_from_slice(&(rel.len() as u16).to_le_bytes());
        body.extend_from_slice(rel);
        let s = &k.stat;
        for v in [s.dev, s.ino, s.size, s.mtime.0 as u64, s.ctime.0 as u64] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for v in [s.mtime.1, s.ctime.1, s.mode, k.chunks.len() as u32] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for c in &k.chunks {
            body.extend_from_slice(&c.id.0);
            body.extend_from_slice(&c.len.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(body.len() + 52);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out.extend_from_slice(&body);
    out
}

/// The smallest entry: the path's length (2), a one-byte path, five u64s
/// and four u32s, no chunks.
const MIN_ENTRY: u64 = 2 + 1 + 5 * 8 + 4 * 4;

/// Reads `encode`'s bytes, checking everything.
pub fn decode(bytes: &[u8]) -> Result<HashMap<Vec<u8>, Known>> {
    let bad = |detail: &str| Error::corrupt("stat cache", detail);
    let mut r = Reader(bytes);
    if r.take(8).ok_or_else(|| bad("truncated"))? != MAGIC {
        return Err(bad("not a strata stat cache"));
    }
    if r.u32() != Some(VERSION) {
        return Err(bad("another version"));
    }
    let len = r.u64().ok_or_else(|| bad("truncated"))?;
    let sum = r.take(32).ok_or_else(|| bad("truncated"))?;
    if len != r.0.len() as u64 || blake3::hash(r.0).as_bytes() != sum {
        return Err(bad("checksum mismatch"));
    }
    let count = r.u64().ok_or_else(|| bad("truncated"))?;
    // An entry takes at least MIN_ENTRY bytes: a count beyond that is a lie.
    if count > r.0.len() as u64 / MIN_ENTRY {
        return Err(bad("entry count larger than the file"));
    }
    let mut known = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let entry = (|| {
            let n = r.u16()? as usize;
            let rel = r.take(n)?.to_vec();
            let (dev, ino, size) = (r.u64()?, r.u64()?, r.u64()?);
            let (ms, cs) = (r.u64()? as i64, r.u64()? as i64);
            let (mn, cn, mode, chunks) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
            if rel.is_empty() || n > MAX_PATH_LEN || chunks as usize > r.0.len() / 36 {
                return None;
            }
            let chunks = (0..chunks)
                .map(|_| {
                    let id = ChunkId(r.take(32)?.try_into().ok()?);
                    Some(ChunkRef { id, len: r.u32()? })
                })
                .collect::<Option<Vec<_>>>()?;
            let stat = FileStat {
                dev,
                ino,
                size,
                mtime: (ms, mn),
                ctime: (cs, cn),
                mode,
            };
            let total: u64 = chunks.iter().map(|c| c.len as u64).sum();
            (total == size).then_some((rel, Known { stat, chunks }))
        })()
        .ok_or_else(|| bad("bad entry"))?;
        known.insert(entry.0, entry.1);
    }
    if !r.0.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(known)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stat(size: u64, secs: i64) -> FileStat {
        FileStat {
            dev: 1,
            ino: 2,
            size,
            mtime: (secs, 5),
            ctime: (secs, 7),
            mode: 0o100644,
        }
    }

    const T: i128 = 1_800_000_000 * 1_000_000_000;

    #[test]
    fn racy_stats_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = StatCache::open(dir.path(), "s", Path::new("/w"));
        let chunks = vec![ChunkRef {
            id: ChunkId::of(b"x"),
            len: 3,
        }];
        // Changed 50 ms before the stat: racy. 1 s before: trusted.
        let s = stat(3, 1_800_000_000);
        c.record(b"a", s, chunks.clone(), T + 50_000_000);
        assert!(c.get(b"a", &s).is_none());
        c.record(b"a", s, chunks.clone(), T + 1_000_000_000);
        assert_eq!(c.get(b"a", &s), Some(&chunks[..]));
        // Whole-second timestamps need two seconds.
        let coarse = FileStat {
            mtime: (1_800_000_000, 0),
            ctime: (1_800_000_000, 0),
            ..s
        };
        assert!(coarse.is_racy(T + 1_500_000_000));
        assert!(!coarse.is_racy(T + 2_000_000_000));
        // Any field that differs misses; a racy record forgets the path.
        assert!(c.get(b"a", &FileStat { ino: 3, ..s }).is_none());
        assert!(c.get(b"a", &FileStat { ctime: (1, 0), ..s }).is_none());
        c.record(b"a", s, chunks, T);
        assert!(c.is_empty());
    }

    #[test]
    fn saved_and_opened_again_and_corruption_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = StatCache::open(dir.path(), "s", Path::new("/w"));
        let s = stat(0, 1);
        c.record(b"dir/a", s, vec![], T);
        c.save().unwrap();
        let again = StatCache::open(dir.path(), "s", Path::new("/w"));
        assert_eq!(again.get(b"dir/a", &s), Some(&[][..]));
        // Another root or store: another cache.
        assert!(StatCache::open(dir.path(), "s", Path::new("/v")).is_empty());
        assert!(StatCache::open(dir.path(), "t", Path::new("/w")).is_empty());
        let mut bytes = fs::read(&c.file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&c.file, bytes).unwrap();
        assert!(StatCache::open(dir.path(), "s", Path::new("/w")).is_empty());
    }

    #[test]
    fn the_smallest_entry_decodes() {
        // A one-byte path of an empty file: exactly MIN_ENTRY bytes.
        let known = HashMap::from([(
            b"a".to_vec(),
            Known {
                stat: stat(0, 0),
                chunks: vec![],
            },
        )]);
        let bytes = encode(&known);
        assert_eq!(bytes.len() as u64, 52 + 8 + MIN_ENTRY);
        assert_eq!(decode(&bytes).unwrap(), known);
    }

    proptest! {
        #[test]
        fn round_trip(entries in proptest::collection::vec(
            ("[a-z/]{1,20}", any::<u64>(), any::<i64>(), any::<u32>(),
             proptest::collection::vec((any::<[u8; 32]>(), 0u32..1000), 0..4)),
            0..20,
        )) {
            let known: HashMap<Vec<u8>, Known> = entries
                .into_iter()
                .map(|(p, ino, t, n, chunks)| {
                    let chunks: Vec<ChunkRef> = chunks
                        .into_iter()
                        .map(|(id, len)| ChunkRef { id: ChunkId(id), len })
                        .collect();
                    let size = chunks.iter().map(|c| c.len as u64).sum();
                    let stat = FileStat { dev: 9, ino, size, mtime: (t, n), ctime: (t, n), mode: 0o644 };
                    (p.into_bytes(), Known { stat, chunks })
                })
                .collect();
            prop_assert_eq!(decode(&encode(&known)).unwrap(), known);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
