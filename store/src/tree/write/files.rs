//! Steps 7 and 8 of attach: the space check, then a file job per file
//! to write: chunks copied from files already at the target (seeds),
//! the rest located and fetched from the store in one batch, each
//! written at its offsets; a file is renamed into place (or, in a staging
//! directory, written under its final name) once its last chunk is
//! written, with mode and mtime set. A failed write removes its temporary
//! files. Knows nothing of how files were classified.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicUsize,
    Ordering::{AcqRel, Relaxed},
};
use std::sync::Mutex;

use rayon::prelude::*;

use super::classify::Decided;
use super::{set_mode_and_mtime, Stats, Target, WriteOptions};
use crate::error::{Error, IoContext, Result};
use crate::format::manifest::EntryKind;
use crate::id::ChunkId;
use crate::read::fetch_chunks;
use crate::repo::Store;
use crate::tree::plan::Planned;
use crate::tree::stat_cache::FileStat;

/// A regular file being written. A few words: an attach of a million
/// files holds a million of these, so paths are made when needed.
pub(super) struct FileJob<'p> {
    pub(super) entry: &'p Planned,
    /// Where the tree is written, and the temporary names reserved for it.
    target: &'p Target,
    /// The entry's index in the plan: which temporary name is its own.
    index: usize,
    pub(super) size: u64,
    /// Chunk placements still to write; the file is renamed at zero.
    remaining: AtomicUsize,
    /// Whether the temporary file exists (so cleanup knows to remove it).
    created: Mutex<bool>,
    /// Chunks the file's old version at its path can provide, sorted by
    /// id: (id, offset).
    pub(super) seeds: Vec<(ChunkId, u64)>,
    /// The mode the file gets.
    mode: u32,
}

/// A chunk copied from a file already at the target (the file's own old
/// version when `source` is `None`) at `from` to `to` in the new file.
struct SeedCopy<'a> {
    id: ChunkId,
    source: Option<&'a Path>,
    from: u64,
    to: u64,
    len: u32,
}

/// A batch of file jobs holds at most this many files, or this many
/// chunks (a file with more is a batch of its own): the jobs, their chunk
/// placements and the chunks' locations are held for a batch, not for
/// every file of the tree (issue 29: at 10^6 files they took ~280 MB,
/// about 280 bytes a file; a batch holds about 18 MB). Each batch locates
/// and fetches its chunks in round trips of its own (issue 31), so a
/// batch is large enough that trees of up to 65,536 files to write (a
/// large `node_modules`) take one; a larger tree takes one more locate
/// and fetch wave per 65,536 files.
const BATCH_FILES: usize = 1 << 16;
const BATCH_CHUNKS: usize = 1 << 18;

/// The files to write, as step 6 decided, and how.
pub(super) struct ToWrite<'p> {
    /// The plan's entries (sorted by path).
    pub entries: &'p [Planned],
    /// Which of them to write, with seeds.
    pub decided: Decided,
    /// Where.
    pub target: &'p Target,
    pub opts: WriteOptions,
}

/// Steps 7 and 8: refuses the attach if the files do not fit, then writes
/// (at `at`) every file to write, a batch at a time in plan order, running
/// `alongside` on its own thread meanwhile (its error is the result if the
/// writing succeeded). A failed write removes the temporary files of its
/// batch (every file of an earlier batch is complete).
pub(super) fn write_all(
    store: &Store,
    mut files: ToWrite<'_>,
    in_place: &HashMap<ChunkId, (PathBuf, u64)>,
    stats: &Stats,
    at: &Path,
    alongside: impl FnOnce() -> Result<()> + Send,
) -> Result<()> {
    let needed = files
        .to_write()
        .map(|i| match files.entries[i].target {
            EntryKind::File { size, .. } => size,
            _ => 0,
        })
        .fold(0u64, u64::saturating_add);
    check_space(at, needed)?;
    // A large attach yields the CPU to small jobs.
    crate::util::yield_to_small_jobs(needed);
    let (result, beside) = std::thread::scope(|s| {
        let beside = s.spawn(alongside);
        let result = files.each_batch(|jobs| write_batch(store, jobs, in_place, stats));
        (result, beside.join().expect("the work alongside panicked"))
    });
    result?;
    beside
}

impl<'p> ToWrite<'p> {
    /// The plan indices of the files to write.
    fn to_write(&self) -> impl Iterator<Item = usize> + '_ {
        let flags = self.decided.to_write.iter().enumerate();
        flags.filter(|(_, &w)| w).map(|(i, _)| i)
    }

    /// Runs `f` on the jobs of each batch in turn, in plan order (each
    /// batch's jobs dropped before the next's are made); stops at an error.
    fn each_batch(&mut self, mut f: impl FnMut(&[FileJob<'p>]) -> Result<()>) -> Result<()> {
        let mut from = 0;
        while from < self.entries.len() {
            let end = batch_end(self.entries, &self.decided.to_write, from);
            f(&self.jobs(from..end))?;
            from = end;
        }
        Ok(())
    }

    /// The jobs of the files to write among plan entries `range` (their
    /// seeds taken).
    fn jobs(&mut self, range: Range<usize>) -> Vec<FileJob<'p>> {
        let (entries, target) = (self.entries, self.target);
        range
            .filter(|&i| self.decided.to_write[i])
            .map(|i| {
                let e = &entries[i];
                let seeds = self.decided.seeds.remove(&i).unwrap_or_default();
                FileJob::new(e, target, i, self.opts.mode(e.mode), seeds)
            })
            .collect()
    }
}

/// Where the batch of plan entries starting at `from` ends: after
/// `BATCH_FILES` files to write or `BATCH_CHUNKS` of their chunks
/// (at least one file), or at the end of the plan.
fn batch_end(entries: &[Planned], to_write: &[bool], from: usize) -> usize {
    let (mut files, mut chunks) = (0, 0);
    for (i, e) in entries.iter().enumerate().skip(from) {
        if !to_write[i] {
            continue;
        }
        let n = e.target.chunks().len();
        if files > 0 && (files == BATCH_FILES || chunks + n > BATCH_CHUNKS) {
            return i;
        }
        files += 1;
        chunks += n;
    }
    entries.len()
}

/// Writes one batch's files; on failure, removes the temporary files it
/// made and did not complete.
fn write_batch(
    store: &Store,
    jobs: &[FileJob],
    in_place: &HashMap<ChunkId, (PathBuf, u64)>,
    stats: &Stats,
) -> Result<()> {
    let result = write_files(store, jobs, in_place, stats);
    if result.is_err() {
        for job in jobs {
            if *job.created.lock().expect("poisoned") && job.remaining.load(Relaxed) > 0 {
                let _ = fs::remove_file(job.tmp());
            }
        }
    }
    result
}

/// Refuses, before writing anything, an attach whose files (`needed`
/// bytes) cannot fit on the target's file system: a full disk would fail
/// it halfway anyway, and a hostile manifest can claim any size (one chunk
/// listed a million times).
fn check_space(at: &Path, needed: u64) -> Result<()> {
    let stat =
        rustix::fs::statvfs(at).map_err(|e| Error::io("check free space on", at, e.into()))?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if needed > free {
        return Err(Error::NoRoom {
            path: at.to_path_buf(),
            needed,
            free,
        });
    }
    Ok(())
}

/// Which placements come from files at the target (by job), and which
/// from the store: (chunk, job, offset), sorted by chunk.
type Placements<'a> = (Vec<(ChunkId, usize, u64)>, Vec<(usize, Vec<SeedCopy<'a>>)>);

/// Splits every job's chunks into copies from the target (the file's own
/// old version first, then files in place) and placements of chunks to
/// fetch from the store.
fn placements<'a>(
    jobs: &[FileJob],
    in_place: &'a HashMap<ChunkId, (PathBuf, u64)>,
) -> Placements<'a> {
    let mut from_store: Vec<(ChunkId, usize, u64)> = Vec::new();
    let mut seeded: Vec<(usize, Vec<SeedCopy>)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let mut offset = 0u64;
        let mut mine = Vec::new();
        for c in job.entry.target.chunks() {
            let own = job.seeds.binary_search_by_key(&c.id, |s| s.0).ok();
            let seed = match (own.map(|i| job.seeds[i].1), in_place.get(&c.id)) {
                (Some(from), _) => Some((None, from)),
                (None, Some((path, from))) => Some((Some(path.as_path()), *from)),
                (None, None) => None,
            };
            match seed {
                Some((source, from)) => mine.push(SeedCopy {
                    id: c.id,
                    source,
                    from,
                    to: offset,
                    len: c.len,
                }),
                None => from_store.push((c.id, j, offset)),
            }
            offset += c.len as u64;
        }
        if !mine.is_empty() {
            seeded.push((j, mine));
        }
    }
    from_store.sort_unstable_by_key(|p| p.0);
    (from_store, seeded)
}

fn write_files(
    store: &Store,
    jobs: &[FileJob],
    in_place: &HashMap<ChunkId, (PathBuf, u64)>,
    stats: &Stats,
) -> Result<()> {
    let (from_store, seeded) = placements(jobs, in_place);
    // Empty files have no chunk to trigger their completion.
    jobs.par_iter()
        .filter(|j| j.size == 0)
        .try_for_each(|j| j.complete(stats))?;
    copy_seeds(jobs, &seeded, stats)?;
    fetch(store, jobs, &from_store, stats)
}

/// Copies the seeded chunks, each checked against its id. A file's old
/// version is read only by its own job, before that job renames the new
/// one over it; files in place are never rewritten.
fn copy_seeds(jobs: &[FileJob], seeded: &[(usize, Vec<SeedCopy>)], stats: &Stats) -> Result<()> {
    seeded.par_iter().try_for_each(|(j, placements)| {
        let job = &jobs[*j];
        let dest = job.dest();
        for c in placements {
            let source = c.source.unwrap_or(&dest);
            let mut buf = vec![0u8; c.len as usize];
            File::open(source)
                .and_then(|f| f.read_exact_at(&mut buf, c.from))
                .ctx("read", source)?;
            if ChunkId::of(&buf) != c.id {
                return Err(Error::Changed {
                    detail: format!("{} changed while being attached over", source.display()),
                });
            }
            stats.chunks_from_target.fetch_add(1, Relaxed);
            job.write(c.to, &buf, stats)?;
        }
        Ok(())
    })
}

/// Fetches the chunks `from_store` places (sorted by chunk) in one batch
/// and writes each at its placements.
fn fetch(
    store: &Store,
    jobs: &[FileJob],
    from_store: &[(ChunkId, usize, u64)],
    stats: &Stats,
) -> Result<()> {
    let placements = |id: ChunkId| {
        let start = from_store.partition_point(|p| p.0 < id);
        let end = start + from_store[start..].partition_point(|p| p.0 == id);
        &from_store[start..end]
    };
    let mut ids: Vec<ChunkId> = from_store.iter().map(|p| p.0).collect();
    ids.dedup();
    let fetched = fetch_chunks(
        store,
        ids,
        &|id| Error::MissingChunk {
            chunk: id,
            path: jobs[placements(id)[0].1].entry.path.to_string(),
        },
        &|id, bytes| {
            for &(_, j, offset) in placements(id) {
                jobs[j].write(offset, bytes, stats)?;
            }
            Ok(())
        },
    )?;
    stats.chunks_from_store.fetch_add(fetched.chunks, Relaxed);
    stats.bytes_from_store.fetch_add(fetched.bytes, Relaxed);
    stats
        .bytes_from_cache
        .fetch_add(fetched.cached_bytes, Relaxed);
    Ok(())
}

impl<'p> FileJob<'p> {
    /// A job writing `entry` (plan entry `index`) with `mode`, from the
    /// chunks its old version at the path offers (`seeds`) and the rest.
    pub(super) fn new(
        entry: &'p Planned,
        target: &'p Target,
        index: usize,
        mode: u32,
        seeds: Vec<(ChunkId, u64)>,
    ) -> FileJob<'p> {
        let EntryKind::File { size, chunks } = &entry.target else {
            unreachable!("only files are written")
        };
        FileJob {
            target,
            index,
            size: *size,
            remaining: AtomicUsize::new(chunks.len()),
            created: Mutex::new(false),
            seeds,
            mode,
            entry,
        }
    }

    /// Where the file goes (for an empty target, in the staging directory).
    fn dest(&self) -> PathBuf {
        self.target.at.join(self.entry.path.to_path())
    }

    /// Where it is written first: beside where it goes, or there in a
    /// staging directory.
    fn tmp(&self) -> PathBuf {
        let dest = self.dest();
        match self.target.direct {
            true => dest,
            false => dest.with_file_name(self.target.names.name(self.index)),
        }
    }

    /// Writes one chunk placement; the last one completes the file.
    fn write(&self, offset: u64, bytes: &[u8], stats: &Stats) -> Result<()> {
        let single = self.size == bytes.len() as u64;
        let tmp = self.tmp();
        {
            let mut created = self.created.lock().expect("poisoned");
            if !*created {
                let f = create_tmp(&tmp)?;
                if !single {
                    f.set_len(self.size).ctx("write", &tmp)?;
                }
                *created = true;
                if single {
                    drop(created);
                    f.write_all_at(bytes, 0).ctx("write", &tmp)?;
                    stats.wrote(bytes.len() as u64);
                    self.remaining.fetch_sub(1, Relaxed);
                    return self.finish(f, &tmp, stats);
                }
            }
        }
        let f = OpenOptions::new()
            .write(true)
            .open(&tmp)
            .ctx("write", &tmp)?;
        f.write_all_at(bytes, offset).ctx("write", &tmp)?;
        stats.wrote(bytes.len() as u64);
        // AcqRel: the thread that writes the last placement must see every
        // other placement's write as done before it renames the file.
        if self.remaining.fetch_sub(1, AcqRel) == 1 {
            self.finish(f, &tmp, stats)?;
        }
        Ok(())
    }

    /// An empty file: create and complete it.
    fn complete(&self, stats: &Stats) -> Result<()> {
        let tmp = self.tmp();
        let f = create_tmp(&tmp)?;
        *self.created.lock().expect("poisoned") = true;
        self.finish(f, &tmp, stats)
    }

    fn finish(&self, f: File, tmp: &Path, stats: &Stats) -> Result<()> {
        set_mode_and_mtime(&f, tmp, self.mode, self.entry.mtime)?;
        // The stat the stat cache may record: from the descriptor just
        // written, so it is this content's, whatever happens at the path
        // later. The rename moves its ctime; a stat that changed in more
        // than that meanwhile (another writer) is not kept.
        let written = f.metadata().ok().map(|m| FileStat::of(&m));
        if !self.target.direct {
            let dest = self.dest();
            fs::rename(tmp, &dest).ctx("rename into", &dest)?;
        }
        let now = f.metadata().ok().map(|m| FileStat::of(&m));
        if let (Some(written), Some(now)) = (written, now) {
            let moved_only = FileStat {
                ctime: now.ctime,
                ..written
            };
            if moved_only == now {
                self.target.saw(self.index, now);
            }
        }
        drop(f);
        stats.files_written.fetch_add(1, Relaxed);
        Ok(())
    }
}

fn create_tmp(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .ctx("create", path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{ChunkRef, Mtime, RelPath};

    fn file(path: &str, chunks: &[ChunkId]) -> Planned {
        let chunks: Vec<ChunkRef> = chunks.iter().map(|&id| ChunkRef { id, len: 10 }).collect();
        Planned {
            path: RelPath::new(path.as_bytes().to_vec()).unwrap(),
            mode: 0o644,
            mtime: Mtime { secs: 0, nanos: 0 },
            target: EntryKind::File {
                size: 10 * chunks.len() as u64,
                chunks,
            },
            layer: 0,
        }
    }

    // A chunk comes from the file's own old version first, then from a
    // file in place, and only else from the store.
    #[test]
    fn chunks_come_from_the_target_before_the_store() {
        let [a, b, c] = [b"a", b"b", b"c"].map(|x| ChunkId::of(x));
        let e = file("f", &[a, b, c, b]);
        let t = tempfile::tempdir().unwrap();
        let target = Target::new(t.path(), false, 1, false);
        let job = FileJob::new(&e, &target, 0, 0o644, vec![(a, 30)]);
        let mut in_place = HashMap::new();
        in_place.insert(a, (PathBuf::from("other"), 0));
        in_place.insert(b, (PathBuf::from("other"), 70));
        let jobs = [job];
        let (from_store, seeded) = placements(&jobs, &in_place);
        assert_eq!(from_store, vec![(c, 0, 20)]);
        let copies: Vec<_> = seeded[0]
            .1
            .iter()
            .map(|s| (s.id, s.source.map(Path::to_path_buf), s.from, s.to))
            .collect();
        let other = Some(PathBuf::from("other"));
        let expected = vec![
            (a, None, 30, 0),
            (b, other.clone(), 70, 10),
            (b, other, 70, 30),
        ];
        assert_eq!(copies, expected);
    }

    // Issue 29: the file jobs and chunk placements of an attach are held a
    // batch at a time, not for every file of the plan: over five batches'
    // files (327,680, one chunk each), making each batch's jobs and
    // placements in turn holds well under what making them for all the
    // files at once (as the attach did before) holds.
    #[test]
    fn writing_five_batches_of_files_holds_a_batch_of_jobs_not_every_files() {
        let n = 5 * BATCH_FILES as u32;
        let entries: Vec<Planned> = (0..n)
            .map(|i| file(&format!("d/{i:06}"), &[ChunkId::of(&i.to_le_bytes())]))
            .collect();
        let t = tempfile::tempdir().unwrap();
        let target = Target::new(t.path(), true, 0, false);
        let to_write = |entries| ToWrite {
            entries,
            decided: Decided {
                to_write: vec![true; n as usize],
                writes: n as usize,
                seeds: HashMap::new(),
            },
            target: &target,
            opts: WriteOptions::default(),
        };
        let in_place = HashMap::new();
        let (mut files, mut whole) = (to_write(&entries), to_write(&entries));
        let ((placed, batches), peak, _) = crate::testing::heap::measure(|| {
            let (mut placed, mut batches) = (0, 0);
            files
                .each_batch(|jobs| {
                    placed += placements(jobs, &in_place).0.len();
                    batches += 1;
                    Ok(())
                })
                .unwrap();
            (placed, batches)
        });
        assert_eq!(placed, n as usize, "every file's chunk is placed once");
        assert_eq!(batches, (n as usize).div_ceil(BATCH_FILES));
        let (_, whole_peak, _) = crate::testing::heap::measure(|| {
            let jobs = whole.jobs(0..n as usize);
            placements(&jobs, &in_place).0.len()
        });
        eprintln!("batches held {peak} bytes at most; every file's jobs at once {whole_peak}");
        // About 170 bytes a file: a batch ~11 MB, every file ~55 MB.
        let bound = 24 << 20;
        assert!(peak < bound, "the batches held {peak} bytes, over {bound}");
        assert!(whole_peak > bound, "all the jobs at once held {whole_peak}");
    }

    // A manifest claiming more than the disk holds is refused before any
    // file is written.
    #[test]
    fn files_that_cannot_fit_are_refused_first() {
        let e = file("f", &[ChunkId::of(b"x")]);
        let t = tempfile::tempdir().unwrap();
        let target = Target::new(t.path(), false, 1, false);
        let job = FileJob::new(&e, &target, 0, 0o644, Vec::new());
        check_space(t.path(), job.size).unwrap();
        let err = check_space(t.path(), u64::MAX).unwrap_err();
        assert!(matches!(err, Error::NoRoom { .. }), "{err}");
    }
}
