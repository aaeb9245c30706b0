//! The stat cache's records spilled to disk as a command makes them
//! (issue 29): a persist of a million files writes each file's record as
//! its manifest entry is encoded, and the cache is written from the spill,
//! so that neither the records nor a table of them are held. The spill is
//! in the cache file's own record layout; this module knows that layout's
//! records, not the file's header or checks (`stat_cache`'s).

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{unique_tmp_name, write_record, FileStat, Record, StatCache, TMP_PREFIX};
use crate::error::{IoContext, Result};
use crate::format::manifest::ChunkRef;
use crate::id::ChunkId;

impl StatCache {
    /// `save_with` for records a command spilled to disk as it went
    /// (`Spill`), so that neither they nor a table of them are held: a
    /// persist of a million files writes them as its manifest is encoded
    /// (issue 29). The cache is written with them in it, each unless its
    /// stat is racy against `taken_at`; a record's path replaces what the
    /// cache knew there, a racy record forgets it.
    pub fn save_spilled(mut self, mut spill: Spill, taken_at: i128) -> Result<()> {
        let spilled = &spill.file;
        spill.w.flush().ctx("write", spilled)?;
        let mut count = 0;
        spill
            .each(|r| {
                self.known.remove(r.rel);
                count += usize::from(!r.stat.is_racy(taken_at));
                Ok(())
            })
            .ctx("read", spilled)?;
        self.write_fed(count, |put| {
            spill.each(|r| match r.stat.is_racy(taken_at) {
                true => Ok(()),
                false => put(r),
            })
        })
    }
}

/// Records written to a temporary file in the cache's directory as they
/// come, in the cache's own layout, for `StatCache::save_spilled`; the
/// file is removed when the spill is dropped (or, if the process dies,
/// by a later save's clean-up of old temporary files).
#[derive(Debug)]
pub struct Spill {
    file: PathBuf,
    w: BufWriter<fs::File>,
}

impl Spill {
    /// An empty spill in the cache directory `dir`.
    pub fn create(dir: &Path) -> Result<Spill> {
        crate::util::private_dir(dir).ctx("create directory", dir)?;
        let file = dir.join(unique_tmp_name(TMP_PREFIX));
        let f = crate::util::private_file(&file).ctx("create", &file)?;
        Ok(Spill {
            w: BufWriter::with_capacity(256 << 10, f),
            file,
        })
    }

    /// Appends a record.
    pub fn push(&mut self, r: Record<'_>) -> Result<()> {
        write_record(&mut self.w, &r).ctx("write", &self.file)
    }

    /// Reads the records back in order, each handed to `f` (its path
    /// and chunks in buffers reused from one record to the next).
    fn each(&self, mut f: impl FnMut(Record<'_>) -> io::Result<()>) -> io::Result<()> {
        let mut r = BufReader::with_capacity(256 << 10, fs::File::open(&self.file)?);
        let (mut rel, mut chunks) = (Vec::new(), Vec::new());
        while let Some(stat) = read_record(&mut r, &mut rel, &mut chunks)? {
            f(Record {
                rel: &rel,
                stat,
                chunks: &chunks,
            })?;
        }
        Ok(())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}

/// Reads one record as `write_record` wrote it into `rel` and `chunks`;
/// `None` at the end of the input.
fn read_record(
    r: &mut impl Read,
    rel: &mut Vec<u8>,
    chunks: &mut Vec<ChunkRef>,
) -> io::Result<Option<FileStat>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    rel.resize(u16::from_le_bytes(len) as usize, 0);
    r.read_exact(rel)?;
    let mut fixed = [0u8; 5 * 8 + 4 * 4];
    r.read_exact(&mut fixed)?;
    let u64_at = |i: usize| u64::from_le_bytes(fixed[i * 8..i * 8 + 8].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(fixed[40 + i * 4..44 + i * 4].try_into().unwrap());
    let stat = FileStat {
        dev: u64_at(0),
        ino: u64_at(1),
        size: u64_at(2),
        mtime: (u64_at(3) as i64, u32_at(0)),
        ctime: (u64_at(4) as i64, u32_at(1)),
        mode: u32_at(2),
    };
    chunks.clear();
    for _ in 0..u32_at(3) {
        let mut c = [0u8; 36];
        r.read_exact(&mut c)?;
        chunks.push(ChunkRef {
            id: ChunkId(c[..32].try_into().unwrap()),
            len: u32::from_le_bytes(c[32..].try_into().unwrap()),
        });
    }
    Ok(Some(stat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(ino: u64, secs: i64) -> FileStat {
        FileStat {
            ino,
            size: 3,
            mtime: (secs, 5),
            ctime: (secs, 5),
            ..FileStat::default()
        }
    }

    // Saved from a spill: what the cache knew elsewhere is kept, a spilled
    // record replaces what it knew at its path, a racy one forgets it, and
    // the spill's file is gone afterwards; read back as the file is read,
    // the cache holds exactly that.
    #[test]
    fn a_spilled_save_replaces_and_keeps_as_save_with_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/w");
        let at = 2_000_000_000 * 1_000_000_000i128;
        let chunks = |b: &[u8]| {
            vec![ChunkRef {
                id: ChunkId::of(b),
                len: 3,
            }]
        };
        let mut c = StatCache::open(dir.path(), "s", root);
        for (rel, ino) in [(&b"kept"[..], 1), (b"replaced", 2), (b"racy", 3)] {
            c.record(rel.to_vec(), stat(ino, 1_000), chunks(rel), at);
        }
        c.save().unwrap();
        let mut spill = Spill::create(dir.path()).unwrap();
        let replaced = chunks(b"new");
        let spilled = [
            (&b"replaced"[..], stat(20, 1_000), &replaced),
            (b"racy", stat(30, 2_000_000_000), &replaced),
            (b"added", stat(40, 1_000), &replaced),
        ];
        for (rel, stat, chunks) in spilled {
            spill.push(Record { rel, stat, chunks }).unwrap();
        }
        let file = spill.file.clone();
        let c = StatCache::open(dir.path(), "s", root);
        c.save_spilled(spill, at).unwrap();
        assert!(!file.exists(), "the spill is removed");
        let mut read = Vec::new();
        let ok = StatCache::read_each(dir.path(), "s", root, &mut |rel, k| {
            read.push((rel, k.stat.ino, k.chunks));
        });
        assert!(ok);
        read.sort_by(|a, b| a.0.cmp(&b.0));
        let want = vec![
            (b"added".to_vec(), 40, replaced.clone()),
            (b"kept".to_vec(), 1, chunks(b"kept")),
            (b"replaced".to_vec(), 20, replaced.clone()),
        ];
        assert_eq!(read, want);
    }
}
