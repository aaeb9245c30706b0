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
//! The file is checked (BLAKE3 of its body, hashed as it is read and
//! written, so a large cache is never held twice); one that is
//! unreadable, corrupt or of another version counts as empty. A save
//! removes the directory's cache files not written for `STALE_AFTER` (a
//! store or a workspace the runner no longer uses; every persist writes
//! its file again, and every attach that changed something) and temporary
//! files older than `TMP_STALE_AFTER` (a save that died). Knows nothing
//! about stores, packs or manifests beyond chunk references.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::manifest::ChunkRef;
use crate::util::unique_tmp_name;

mod codec;
mod lookup;
mod spill;
pub use codec::{decode, encode};
use codec::{decode_each, decode_from, encode_fed, write_record, HEADER_LEN, MIN_ENTRY};
pub use lookup::StatLookup;
pub use spill::Spill;

const MAGIC: &[u8; 8] = b"STRASTAT";
/// A cache file not written for this long is removed by the next save in
/// its directory: its store or tree root is not in use on this runner.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// A temporary file this old is a save that died.
pub const TMP_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
/// Temporary files of a save start with this.
const TMP_PREFIX: &str = ".tmp-";
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

/// A file to remember, borrowed from what holds it (`StatCache::save_with`).
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Its path under the root.
    pub rel: &'a [u8],
    /// The stat it had when its content was `chunks`.
    pub stat: FileStat,
    /// Its content.
    pub chunks: &'a [ChunkRef],
}

impl<'a> Record<'a> {
    fn known((rel, k): (&'a Vec<u8>, &'a Known)) -> Self {
        Record {
            rel,
            stat: k.stat,
            chunks: &k.chunks,
        }
    }
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
        Self::load(dir, store_id, root, None)
    }

    /// `open`, leaving out the paths `skip` names: a command about to
    /// record a whole tree again loads only what lies outside it, rather
    /// than a second copy of every path and chunk list.
    pub fn open_except(
        dir: &Path,
        store_id: &str,
        root: &Path,
        skip: impl Fn(&[u8]) -> bool,
    ) -> StatCache {
        Self::load(dir, store_id, root, Some(&skip))
    }

    fn load(dir: &Path, store_id: &str, root: &Path, skip: Option<Skip<'_>>) -> StatCache {
        let file = cache_file(dir, store_id, root);
        let known = fs::File::open(&file)
            .ok()
            .and_then(|f| {
                let size = f.metadata().ok()?.len();
                decode_from(f, size, skip).ok()
            })
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

    /// `get`, taking the chunks out of the cache (the path is forgotten
    /// either way).
    pub fn take(&mut self, rel: &[u8], stat: &FileStat) -> Option<Vec<ChunkRef>> {
        self.known
            .remove(rel)
            .filter(|k| k.stat == *stat)
            .map(|k| k.chunks)
    }

    /// Every file the cache of the tree at `root` knows, handed to `each`
    /// as the cache's file is read (its path, stat and chunks), with no
    /// table of them held: a persist of a million files looks its files up
    /// this way rather than loading about 240 MB of table (issue 29). The
    /// file is checked only at its end: `false` (unreadable, corrupt, of
    /// another version, or none) means whatever `each` was handed is not
    /// the cache's and must be forgotten.
    pub fn read_each(
        dir: &Path,
        store_id: &str,
        root: &Path,
        each: &mut dyn FnMut(Vec<u8>, Known),
    ) -> bool {
        let file = cache_file(dir, store_id, root);
        let Ok(f) = fs::File::open(&file) else {
            return false;
        };
        let Ok(size) = f.metadata().map(|m| m.len()) else {
            return false;
        };
        decode_each(f, size, &mut |_| {}, each).is_ok()
    }

    /// Whether it knows no file.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Remembers the file at `rel` as `stat` (taken at `taken_at`) with
    /// `chunks`, unless the stat is racy; a racy one forgets the path.
    pub fn record(&mut self, rel: Vec<u8>, stat: FileStat, chunks: Vec<ChunkRef>, taken_at: i128) {
        if stat.is_racy(taken_at) {
            self.known.remove(&rel);
        } else {
            self.known.insert(rel, Known { stat, chunks });
        }
    }

    /// Writes the cache (to a temporary name, renamed into place).
    pub fn save(&self) -> Result<()> {
        self.write(std::iter::empty())
    }

    /// Writes the cache with `records` in it too, each unless its stat is
    /// racy (`record`'s rule, against `taken_at`): a record's path replaces
    /// what the cache knew there, a racy record forgets it. The records are
    /// written from where they are (a manifest, a plan), not gathered into
    /// the cache's table first: at 10^6 files that table alone takes about
    /// 240 MB (issue 29, benchmarks.md "Where the memory goes at 10^6").
    pub fn save_with<'a, I>(mut self, records: I, taken_at: i128) -> Result<()>
    where
        I: Iterator<Item = Record<'a>> + Clone,
    {
        if !self.known.is_empty() {
            for r in records.clone() {
                self.known.remove(r.rel);
            }
        }
        self.write(records.filter(move |r| !r.stat.is_racy(taken_at)))
    }

    fn write<'s, 'a: 's>(
        &'s self,
        records: impl Iterator<Item = Record<'a>> + Clone,
    ) -> Result<()> {
        let count = records.clone().count();
        self.write_fed(count, |put| records.clone().try_for_each(put))
    }

    /// Writes the cache's file: what it knows, then the `count` records
    /// `feed` hands to the function it is given.
    fn write_fed(
        &self,
        count: usize,
        feed: impl FnOnce(&mut dyn FnMut(Record<'_>) -> io::Result<()>) -> io::Result<()>,
    ) -> Result<()> {
        let dir = self.file.parent().expect("the cache file has a directory");
        crate::util::private_dir(dir).ctx("create directory", dir)?;
        let tmp = dir.join(unique_tmp_name(TMP_PREFIX));
        let count = self.known.len() + count;
        let written = crate::util::private_file(&tmp).and_then(|f| {
            let mut w = BufWriter::with_capacity(1 << 20, f);
            encode_fed(count, &mut w, |put| {
                self.known
                    .iter()
                    .map(Record::known)
                    .try_for_each(&mut *put)?;
                feed(put)
            })?;
            w.flush()
        });
        if let Err(err) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("write", &tmp, err));
        }
        fs::rename(&tmp, &self.file).ctx("rename into", &self.file)?;
        prune(dir);
        Ok(())
    }
}

/// The cache file of the tree at `root` for the store `store_id` in `dir`.
fn cache_file(dir: &Path, store_id: &str, root: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut h = blake3::Hasher::new();
    h.update(store_id.as_bytes());
    h.update(&[0]);
    h.update(root.as_os_str().as_bytes());
    dir.join(&h.finalize().to_hex()[..32])
}

/// Removes, best effort, the cache files of `dir` not written for
/// `STALE_AFTER` and its temporary files older than `TMP_STALE_AFTER`.
/// Only names a cache or a save makes are looked at.
fn prune(dir: &Path) {
    let now = std::time::SystemTime::now();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_cache = name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let keep_for = if is_cache {
            STALE_AFTER
        } else if name.starts_with(TMP_PREFIX) {
            TMP_STALE_AFTER
        } else {
            continue;
        };
        let written = entry.metadata().and_then(|m| m.modified());
        let age = written.map(|w| now.duration_since(w).unwrap_or_default());
        if age.is_ok_and(|age| age > keep_for) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Which paths a load leaves out.
type Skip<'a> = &'a dyn Fn(&[u8]) -> bool;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;
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

    /// Issue 29: saving a cache with 10^5 borrowed records holds the
    /// writer's buffers, not a table of the records (at 10^6 files that
    /// table was about 240 MB of a persist's or an attach's peak). The
    /// old way, recording each file into the cache and then saving it,
    /// fails the bound (asserted too, so the bound tells them apart). A
    /// record replaces what the cache knew at its path, and a racy one
    /// forgets it, as `record` does.
    #[test]
    fn saving_100000_records_holds_the_writer_not_a_table_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/w");
        let chunk = |i: u32| ChunkRef {
            id: ChunkId::of(&i.to_le_bytes()),
            len: 10,
        };
        let files: Vec<(Vec<u8>, FileStat, Vec<ChunkRef>)> = (0..100_000u32)
            .map(|i| {
                (
                    format!("d/{i:06}").into_bytes(),
                    stat(10, 1),
                    vec![chunk(i)],
                )
            })
            .collect();
        // What the cache knew before: a file the records replace (with a
        // racy stat: forgotten), one they keep, one they leave alone.
        let mut before = StatCache::open(dir.path(), "s", root);
        for rel in ["d/000000", "d/000001", "other"] {
            before.record(rel.into(), stat(0, 1), vec![], T);
        }
        before.save().unwrap();
        let mut racy = files[0].clone();
        racy.1 = stat(10, (T / 1_000_000_000) as i64);
        let records = std::iter::once(&racy).chain(&files[1..]).map(|f| Record {
            rel: &f.0,
            stat: f.1,
            chunks: &f.2,
        });
        let cache = StatCache::open(dir.path(), "s", root);
        let (saved, peak, _) = crate::testing::heap::measure(|| cache.save_with(records, T));
        saved.unwrap();
        let back = StatCache::open(dir.path(), "s", root);
        assert_eq!(
            back.known.len(),
            100_000,
            "99,999 records (not the racy one) and `other`"
        );
        assert_eq!(
            back.get(b"d/000000", &stat(0, 1)),
            None,
            "the racy one forgot it"
        );
        assert_eq!(back.get(b"other", &stat(0, 1)), Some(&[][..]));
        for (rel, st, chunks) in &files[1..] {
            assert_eq!(back.get(rel, st), Some(&chunks[..]));
        }
        let (_, table_peak, _) = crate::testing::heap::measure(|| {
            let mut c = StatCache::open_except(dir.path(), "s", root, |_| true);
            for (rel, st, chunks) in files {
                c.record(rel, st, chunks, T);
            }
            c.save().unwrap();
        });
        eprintln!("save_with held {peak} bytes at most; recording first {table_peak}");
        let bound = 2 << 20;
        assert!(peak < bound, "save_with held {peak} bytes, over {bound}");
        assert!(table_peak > bound, "recording first held {table_peak}");
    }

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
        c.record(b"a".to_vec(), s, chunks.clone(), T + 50_000_000);
        assert!(c.get(b"a", &s).is_none());
        c.record(b"a".to_vec(), s, chunks.clone(), T + 1_000_000_000);
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
        c.record(b"a".to_vec(), s, chunks, T);
        assert!(c.is_empty());
    }

    #[test]
    fn a_save_removes_stale_caches_and_dead_saves_only() {
        let dir = tempfile::tempdir().unwrap();
        let aged = |name: &str, age: std::time::Duration| {
            let p = dir.path().join(name);
            fs::write(&p, b"x").unwrap();
            let when = std::time::SystemTime::now() - age;
            filetime::set_file_mtime(&p, filetime::FileTime::from_system_time(when)).unwrap();
            p
        };
        let day = std::time::Duration::from_secs(24 * 3600);
        let stale = aged("0123456789abcdef0123456789abcdef", STALE_AFTER + day);
        let recent = aged("fedcba9876543210fedcba9876543210", STALE_AFTER - day);
        let dead_save = aged(".tmp-1-2-3", TMP_STALE_AFTER + day);
        let live_save = aged(".tmp-4-5-6", std::time::Duration::from_secs(60));
        let other = aged("notes.txt", STALE_AFTER + day);
        let mut c = StatCache::open(dir.path(), "s", Path::new("/w"));
        c.record(b"a".to_vec(), stat(0, 1), vec![], T);
        c.save().unwrap();
        assert!(!stale.exists() && !dead_save.exists());
        assert!(recent.exists() && live_save.exists() && other.exists());
        assert!(c.file.exists(), "the cache just saved is kept");
    }

    #[test]
    fn saved_and_opened_again_and_corruption_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = StatCache::open(dir.path(), "s", Path::new("/w"));
        let s = stat(0, 1);
        c.record(b"dir/a".to_vec(), s, vec![], T);
        c.save().unwrap();
        let mut again = StatCache::open(dir.path(), "s", Path::new("/w"));
        assert_eq!(again.get(b"dir/a", &s), Some(&[][..]));
        // Taken once: another stat misses and forgets it too.
        assert!(again.take(b"dir/a", &FileStat { ino: 9, ..s }).is_none());
        assert!(again.take(b"dir/a", &s).is_none());
        let mut again = StatCache::open(dir.path(), "s", Path::new("/w"));
        assert_eq!(again.take(b"dir/a", &s), Some(vec![]));
        assert!(again.is_empty());
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
    fn opened_except_a_tree_keeps_only_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = StatCache::open(dir.path(), "s", Path::new("/w"));
        for rel in ["x/1", "x/2", "y/1"] {
            c.record(rel.as_bytes().to_vec(), stat(0, 1), vec![], T);
        }
        c.save().unwrap();
        let rest = StatCache::open_except(dir.path(), "s", Path::new("/w"), |rel| {
            rel.starts_with(b"x/")
        });
        assert_eq!(rest.known.keys().collect::<Vec<_>>(), [&b"y/1".to_vec()]);
    }

    #[test]
    fn a_claimed_length_is_checked_before_any_count_is_believed() {
        // Found by the fuzzer: a header claiming a huge body and a body
        // claiming a huge entry count made decode reserve that many.
        let known = HashMap::from([(
            b"a".to_vec(),
            Known {
                stat: stat(0, 0),
                chunks: vec![],
            },
        )]);
        let mut bytes = encode(&known);
        bytes[12..20].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        bytes[52..60].copy_from_slice(&(u64::MAX / 200).to_le_bytes());
        assert!(decode(&bytes).is_err());
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
