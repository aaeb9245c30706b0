//! A runner's stat cache read for lookups only (attach's step 6, issue
//! 29): the file kept as it is encoded, in one buffer, with an index of
//! its records sorted by a hash of their paths. `StatCache`'s table of
//! owned paths and chunk lists takes about 2.5 times the file's bytes (at
//! 10^6 files, ~325 MB of a warm attach's peak); this holds the file's
//! bytes and 16 more a record. It checks what `StatCache`'s load checks
//! (the header, the body's BLAKE3, every record), and a file that is
//! unreadable, corrupt or of another version counts as empty. Knows
//! nothing of what asks (`tree::write`).

use std::fs;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::path::Path;

use super::{cache_file, FileStat, HEADER_LEN, MAGIC, MIN_ENTRY, VERSION};
use crate::error::{Error, Result};
use crate::format::manifest::{ChunkRef, MAX_PATH_LEN};

/// The bytes of one chunk reference in a record: its id and length.
const CHUNK_LEN: usize = 32 + 4;

/// The records of one tree root's stat cache, looked up in place.
#[derive(Debug, Default)]
pub struct StatLookup {
    /// The cache file's bytes.
    bytes: Vec<u8>,
    /// Each record's path's hash and offset in `bytes`, sorted.
    index: Vec<(u64, usize)>,
}

/// One record, parsed where it lies.
struct Rec<'a> {
    rel: &'a [u8],
    stat: FileStat,
    /// Its chunk references, `CHUNK_LEN` bytes each.
    chunks: &'a [u8],
    /// Where the next record starts.
    next: usize,
}

fn path_hash(rel: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(rel)
}

impl StatLookup {
    /// The cache of the tree at `root` for the store `store_id`, kept in
    /// `dir` (`StatCache::open`'s file); empty if there is none or it
    /// cannot be read.
    pub fn open(dir: &Path, store_id: &str, root: &Path) -> StatLookup {
        let file = cache_file(dir, store_id, root);
        fs::read(file)
            .ok()
            .and_then(|bytes| Self::parse(bytes).ok())
            .unwrap_or_default()
    }

    /// Checks and indexes a cache file's bytes.
    pub fn parse(bytes: Vec<u8>) -> Result<StatLookup> {
        let bad = |detail: &str| Error::corrupt("stat cache", detail);
        let header = bytes.get(..HEADER_LEN).ok_or_else(|| bad("truncated"))?;
        if &header[..8] != MAGIC {
            return Err(bad("not a strata stat cache"));
        }
        if header[8..12] != VERSION.to_le_bytes() {
            return Err(bad("another version"));
        }
        let len = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        let body = &bytes[HEADER_LEN..];
        if len != body.len() as u64 || blake3::hash(body).as_bytes() != &header[20..52] {
            return Err(bad("checksum mismatch"));
        }
        let mut at = HEADER_LEN;
        let count = u64::from_le_bytes(field(&bytes, &mut at).ok_or_else(|| bad("truncated"))?);
        if count > (bytes.len() - at) as u64 / MIN_ENTRY {
            return Err(bad("entry count larger than the file"));
        }
        let mut index = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let rec = record(&bytes, at).ok_or_else(|| bad("bad entry"))?;
            index.push((path_hash(rec.rel), at));
            at = rec.next;
        }
        if at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        index.sort_unstable();
        Ok(StatLookup { bytes, index })
    }

    /// Whether it knows no file.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether the file at `rel` is known with the stat `stat` exactly
    /// and the content `chunks` (`StatCache::get`'s answer compared; of a
    /// path recorded twice, the later record counts, as in `StatCache`).
    pub fn knows(&self, rel: &[u8], stat: &FileStat, chunks: &[ChunkRef]) -> bool {
        let h = path_hash(rel);
        let from = self.index.partition_point(|&(x, _)| x < h);
        let found = self.index[from..]
            .iter()
            .take_while(|&&(x, _)| x == h)
            .filter_map(|&(_, at)| record(&self.bytes, at))
            .filter(|r| r.rel == rel)
            .last();
        let Some(r) = found else {
            return false;
        };
        r.stat == *stat
            && r.chunks.len() == chunks.len() * CHUNK_LEN
            && r.chunks
                .chunks_exact(CHUNK_LEN)
                .zip(chunks)
                .all(|(b, c)| b[..32] == c.id.0 && b[32..] == c.len.to_le_bytes())
    }
}

/// `N` bytes at `*at`, moving past them.
fn field<const N: usize>(bytes: &[u8], at: &mut usize) -> Option<[u8; N]> {
    let b = bytes.get(*at..at.checked_add(N)?)?;
    *at += N;
    Some(b.try_into().expect("N bytes"))
}

/// The record at `at`, checked as `StatCache`'s load checks one (a path
/// of 1 to `MAX_PATH_LEN` bytes, its chunks within the file and adding up
/// to its size); `None` if it is malformed.
fn record(bytes: &[u8], mut at: usize) -> Option<Rec<'_>> {
    let u64_at = |at: &mut usize| field(bytes, at).map(u64::from_le_bytes);
    let u32_at = |at: &mut usize| field(bytes, at).map(u32::from_le_bytes);
    let n = field(bytes, &mut at).map(u16::from_le_bytes)? as usize;
    if n == 0 || n > MAX_PATH_LEN {
        return None;
    }
    let rel = bytes.get(at..at + n)?;
    at += n;
    let (dev, ino, size) = (u64_at(&mut at)?, u64_at(&mut at)?, u64_at(&mut at)?);
    let (ms, cs) = (u64_at(&mut at)? as i64, u64_at(&mut at)? as i64);
    let (mn, cn) = (u32_at(&mut at)?, u32_at(&mut at)?);
    let (mode, count) = (u32_at(&mut at)?, u32_at(&mut at)? as usize);
    let chunks = bytes.get(at..at.checked_add(count.checked_mul(CHUNK_LEN)?)?)?;
    let total: u64 = chunks
        .chunks_exact(CHUNK_LEN)
        .map(|c| u32::from_le_bytes(c[32..].try_into().expect("4 bytes")) as u64)
        .sum();
    (total == size).then_some(Rec {
        rel,
        stat: FileStat {
            dev,
            ino,
            size,
            mtime: (ms, mn),
            ctime: (cs, cn),
            mode,
        },
        chunks,
        next: at + chunks.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{encode, Known, StatCache};
    use super::*;
    use crate::id::ChunkId;
    use std::collections::HashMap;

    fn stat(size: u64, ino: u64) -> FileStat {
        FileStat {
            dev: 1,
            ino,
            size,
            mtime: (1_700_000_000, 5),
            ctime: (1_700_000_000, 7),
            mode: 0o100644,
        }
    }

    fn chunk(b: &[u8]) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(b),
            len: b.len() as u32,
        }
    }

    // It answers as `StatCache::get` does: a file known with its exact
    // stat and chunks, and nothing for another stat, other chunks or an
    // unknown path; a corrupt file counts as empty.
    #[test]
    fn it_answers_as_the_cache_does() {
        let known: HashMap<Vec<u8>, Known> = (0..1000u64)
            .map(|i| {
                let content = format!("file {i}");
                let k = Known {
                    stat: stat(content.len() as u64, i),
                    chunks: vec![chunk(content.as_bytes())],
                };
                (format!("d/{i}").into_bytes(), k)
            })
            .collect();
        let bytes = encode(&known);
        let lookup = StatLookup::parse(bytes.clone()).unwrap();
        for (rel, k) in &known {
            assert!(lookup.knows(rel, &k.stat, &k.chunks));
            let mut other = k.stat;
            other.ctime.1 += 1;
            assert!(!lookup.knows(rel, &other, &k.chunks), "another stat");
            assert!(!lookup.knows(rel, &k.stat, &[chunk(b"x")]), "other chunks");
            assert!(!lookup.knows(rel, &k.stat, &[]), "no chunks");
        }
        assert!(!lookup.knows(b"d/1000", &stat(9, 1000), &[chunk(b"file 1000")]));
        let empty = StatLookup::parse(encode(&HashMap::new())).unwrap();
        assert!(empty.is_empty());
        let mut corrupt = bytes;
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(StatLookup::parse(corrupt).is_err());
        // The same file, as `StatCache` and as a lookup, from disk.
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/w");
        let mut c = StatCache::open(dir.path(), "s", root);
        let k = &known[&b"d/7"[..]];
        c.record(b"d/7".to_vec(), k.stat, k.chunks.clone(), i128::MAX);
        c.save().unwrap();
        let lookup = StatLookup::open(dir.path(), "s", root);
        assert!(lookup.knows(b"d/7", &k.stat, &k.chunks));
        assert!(!lookup.knows(b"d/8", &k.stat, &k.chunks));
        assert!(StatLookup::open(dir.path(), "other store", root).is_empty());
    }

    // Issue 29: a warm attach's lookups hold the cache file's bytes and an
    // index, not a table of owned paths and chunk lists: over 100,000
    // records, under 1.3 times the file's bytes, where `StatCache`'s load
    // holds more than twice them.
    #[test]
    fn a_lookup_of_100000_records_holds_the_file_not_a_table() {
        let known: HashMap<Vec<u8>, Known> = (0..100_000u64)
            .map(|i| {
                let k = Known {
                    stat: stat(4, i),
                    chunks: vec![chunk(&(i as u32).to_le_bytes())],
                };
                (
                    format!("node_modules/pkg{}/lib/file{i}.js", i / 50).into_bytes(),
                    k,
                )
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/w");
        let file = cache_file(dir.path(), "s", root);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        let bytes = encode(&known);
        let size = bytes.len() as u64;
        fs::write(&file, bytes).unwrap();
        drop(known);
        let (lookup, peak, _) =
            crate::testing::heap::measure(|| StatLookup::open(dir.path(), "s", root));
        assert_eq!(lookup.index.len(), 100_000);
        drop(lookup);
        let (cache, table_peak, _) =
            crate::testing::heap::measure(|| StatCache::open(dir.path(), "s", root));
        assert!(!cache.is_empty());
        eprintln!("the file {size} bytes; the lookup held {peak}, the table {table_peak}");
        let bound = size * 13 / 10;
        assert!(peak < bound, "the lookup held {peak} bytes, over {bound}");
        assert!(table_peak > 2 * size, "the table held {table_peak}");
    }
}
