//! Step 6 of attach: for each planned file, whether the target already
//! holds it. A file the stat cache knows unchanged with the planned chunks
//! is kept unread (its mode and mtime fixed if they differ, through a
//! descriptor, only while no other path shares its inode); another is read
//! and hashed, kept if it has the planned chunks, else its chunks seed the
//! new version. What it decides is held compactly (`Decided`: a flag per
//! entry, and the seeds of the few files with other content), not as a
//! job per file. Knows nothing of the store: what is not in place is
//! written by `files`, a batch at a time.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use rayon::prelude::*;

use super::prepare::on;
use super::{open_no_follow, set_mode_and_mtime, Stats, Target, WriteOptions};
use crate::error::{Error, IoContext, Result};
use crate::format::chunking::{chunk_stream, ChunkerParams};
use crate::format::manifest::{ChunkRef, EntryKind};
use crate::id::ChunkId;
use crate::tree::plan::Planned;
use crate::tree::stat_cache::{FileStat, StatLookup};

/// What step 6 decides of one file.
pub(super) enum Classified {
    /// The file at the target already has the planned content (its mode
    /// and mtime were fixed).
    InPlace,
    /// To be written, from these chunks of its old version at its path
    /// (sorted by id: (id, offset)) and the rest.
    Write(Vec<(ChunkId, u64)>),
}

/// What step 6 decided of every planned file, in a form that does not
/// grow with the files beyond a byte each (issue 29: the file jobs are
/// made later, a batch at a time, `files::write_all`).
pub(super) struct Decided {
    /// By plan index: whether the entry is a file to write.
    pub to_write: Vec<bool>,
    /// How many files are to be written.
    pub writes: usize,
    /// The seeds of files whose old version had other content, by plan
    /// index (only those: a fresh target has none).
    pub seeds: HashMap<usize, Vec<(ChunkId, u64)>>,
}

/// Files classified at once: the decisions of a group are held together
/// before they are folded into `Decided`.
const CLASSIFY_GROUP: usize = 1 << 16;

/// What classifying looks with.
pub(super) struct Classify<'t, 'a> {
    pub target: &'t Target,
    pub opts: WriteOptions,
    pub chunker: ChunkerParams,
    /// The runner's stat cache, if it is trusted and not empty.
    pub trusted: Option<&'a StatLookup>,
    pub stats: &'a Stats,
}

impl Classify<'_, '_> {
    /// Classifies every planned file (on `look`, in parallel, a group at a
    /// time): which are in place, and the seeds of the others. Into an
    /// empty target, every file is to be written, and nothing is looked at.
    pub(super) fn all(
        &self,
        entries: &[Planned],
        look: Option<&rayon::ThreadPool>,
    ) -> Result<Decided> {
        let is_file = |e: &Planned| matches!(e.target, EntryKind::File { .. });
        let mut decided = Decided {
            to_write: entries.iter().map(is_file).collect(),
            writes: 0,
            seeds: HashMap::new(),
        };
        if !self.target.direct {
            for (g, group) in entries.chunks(CLASSIFY_GROUP).enumerate() {
                let base = g * CLASSIFY_GROUP;
                let classified: Vec<(usize, Classified)> = on(look, || {
                    group
                        .par_iter()
                        .enumerate()
                        .filter(|(_, e)| is_file(e))
                        .map(|(i, e)| Ok((base + i, self.one(e, base + i)?)))
                        .collect::<Result<_>>()
                })?;
                for (index, c) in classified {
                    match c {
                        Classified::InPlace => decided.to_write[index] = false,
                        Classified::Write(seeds) if seeds.is_empty() => {}
                        Classified::Write(seeds) => {
                            decided.seeds.insert(index, seeds);
                        }
                    }
                }
            }
        }
        decided.writes = decided.to_write.iter().filter(|&&w| w).count();
        let files = entries.iter().filter(|e| is_file(e)).count();
        let in_place = (files - decided.writes) as u64;
        self.stats.files_in_place.fetch_add(in_place, Relaxed);
        Ok(decided)
    }

    /// Classifies the file of plan entry `index` over what the target
    /// holds at its path.
    pub(super) fn one(&self, e: &Planned, index: usize) -> Result<Classified> {
        let dest = self.target.at.join(e.path.to_path());
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_file() => {
                if let Some(kept) = self.known(e, index, &dest, &m)? {
                    return Ok(kept);
                }
                self.read_and_compare(e, index, &dest)
            }
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&dest).ctx("replace directory", &dest)?;
                Ok(Classified::Write(Vec::new()))
            }
            _ => Ok(Classified::Write(Vec::new())),
        }
    }

    /// A file the stat cache knows unchanged with the planned chunks: in
    /// place unread, its mode and mtime fixed if they differ (when the
    /// file opened is still the one trusted and no other path shares its
    /// inode). `None` if the cache cannot tell.
    fn known(
        &self,
        e: &Planned,
        index: usize,
        dest: &Path,
        m: &fs::Metadata,
    ) -> Result<Option<Classified>> {
        let (_, chunks) = planned(e);
        let unchanged = self
            .trusted
            .is_some_and(|c| c.knows(e.path.as_bytes(), &FileStat::of(m), chunks));
        if !unchanged {
            return Ok(None);
        }
        let mode = self.opts.mode(e.mode);
        if has_mode_and_mtime(m, mode, e) {
            self.stats.files_unchanged.fetch_add(1, Relaxed);
            self.stats.files_untouched.fetch_add(1, Relaxed);
            self.target.saw(index, FileStat::of(m));
            return Ok(Some(Classified::InPlace));
        }
        // Known to hold the planned content, with another mode or mtime (a
        // next run's tree, extracted anew): fix those without reading it.
        if m.nlink() == 1 {
            if let Ok(f) = open_no_follow(dest, false) {
                let same = f
                    .metadata()
                    .is_ok_and(|now| FileStat::of(&now) == FileStat::of(m));
                if same {
                    set_mode_and_mtime(&f, dest, mode, e.mtime)?;
                    self.stats.files_unchanged.fetch_add(1, Relaxed);
                    see_through(self.target, index, &f);
                    return Ok(Some(Classified::InPlace));
                }
            }
        }
        Ok(None)
    }

    /// Reads and hashes the file at `dest`: in place if it has the planned
    /// chunks and did not change while it was read (its mode and mtime
    /// fixed, unless another path shares its inode); else to be written,
    /// its chunks the seeds.
    fn read_and_compare(&self, e: &Planned, index: usize, dest: &Path) -> Result<Classified> {
        let file = match open_no_follow(dest, false) {
            Ok(f) => f,
            // Replaced by a symlink since the stat: write it anew.
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                return Ok(Classified::Write(Vec::new()))
            }
            Err(err) => return Err(Error::io("read", dest, err)),
        };
        let m = file.metadata().ctx("stat", dest)?;
        let (mut seeds, len) = hash(&file, &m, self.chunker, dest)?;
        let (size, planned) = planned(e);
        let same = len == size && seeds.iter().map(|s| &s.0).eq(planned.iter().map(|c| &c.id));
        // By id, each at its first offset (the sort is stable).
        seeds.sort_by_key(|s| s.0);
        seeds.dedup_by_key(|s| s.0);
        // Read whole and unchanged while it was read: what it holds is
        // what was hashed.
        let still = file
            .metadata()
            .is_ok_and(|now| FileStat::of(&now) == FileStat::of(&m));
        if still && same {
            let mode = self.opts.mode(e.mode);
            if has_mode_and_mtime(&m, mode, e) {
                self.target.saw(index, FileStat::of(&m));
                return Ok(Classified::InPlace);
            }
            // Another path shares this inode (perhaps outside the target):
            // changing its mode or mtime would change that path too, so the
            // file is written anew instead.
            if m.nlink() == 1 {
                set_mode_and_mtime(&file, dest, mode, e.mtime)?;
                see_through(self.target, index, &file);
                return Ok(Classified::InPlace);
            }
        }
        Ok(Classified::Write(seeds))
    }
}

/// The chunks of `file` in order, each with its offset, and the bytes
/// read.
fn hash(
    file: &File,
    m: &fs::Metadata,
    chunker: ChunkerParams,
    dest: &Path,
) -> Result<(Vec<(ChunkId, u64)>, u64)> {
    let (mut seeds, mut offset) = (Vec::new(), 0u64);
    chunk_stream(
        file,
        m.len(),
        chunker,
        &|err| Error::io("read", dest, err),
        &mut |id, b| {
            seeds.push((id, offset));
            offset += b.len() as u64;
            Ok(())
        },
    )?;
    Ok((seeds, offset))
}

/// The planned file's size and chunks.
fn planned(e: &Planned) -> (u64, &[ChunkRef]) {
    match &e.target {
        EntryKind::File { size, chunks } => (*size, chunks),
        _ => unreachable!("only files are classified"),
    }
}

/// Whether the file has the mode and mtime planned for `e`.
fn has_mode_and_mtime(m: &fs::Metadata, mode: u32, e: &Planned) -> bool {
    let mode_ok = m.permissions().mode() & 0o7777 == mode;
    mode_ok && (m.mtime(), m.mtime_nsec()) == (e.mtime.secs, e.mtime.nanos as i64)
}

/// Notes the stat of the file open as `f`, the one of plan entry `index`.
fn see_through(target: &Target, index: usize, f: &File) {
    if let Ok(m) = f.metadata() {
        target.saw(index, FileStat::of(&m));
    }
}

/// Files already in place stay as they are for the whole attach, so any
/// of their chunks can seed the files that must be written: where the
/// chunks those files need lie in them (a warm runner with little to
/// write does not index every chunk it already has).
pub(super) fn seeds_in_place(
    entries: &[Planned],
    decided: &Decided,
    at: &Path,
) -> HashMap<ChunkId, (PathBuf, u64)> {
    let mut seeds = HashMap::new();
    let is_file = |e: &Planned| matches!(e.target, EntryKind::File { .. });
    let files = entries.iter().enumerate().filter(|(_, e)| is_file(e));
    let (write, in_place): (Vec<_>, Vec<_>) = files.partition(|(i, _)| decided.to_write[*i]);
    if write.is_empty() || in_place.is_empty() {
        return seeds;
    }
    let wanted: HashSet<ChunkId> = write
        .iter()
        .flat_map(|(_, e)| e.target.chunks())
        .map(|c| c.id)
        .collect();
    for (_, e) in in_place {
        let mut offset = 0;
        for c in e.target.chunks() {
            if wanted.contains(&c.id) {
                seeds
                    .entry(c.id)
                    .or_insert_with(|| (at.join(e.path.to_path()), offset));
            }
            offset += c.len as u64;
        }
    }
    seeds
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::format::chunking::chunk_slice;
    use crate::format::manifest::{Mtime, RelPath};

    const MTIME: Mtime = Mtime {
        secs: 1_700_000_000,
        nanos: 5,
    };

    fn planned(path: &str, content: &[u8], mode: u32) -> Planned {
        let mut chunks = Vec::new();
        chunk_slice(content, ChunkerParams::DEFAULT, &mut |id, b| {
            chunks.push(ChunkRef {
                id,
                len: b.len() as u32,
            });
            Ok(())
        })
        .unwrap();
        Planned {
            path: RelPath::new(path.as_bytes().to_vec()).unwrap(),
            mode,
            mtime: MTIME,
            target: EntryKind::File {
                size: content.len() as u64,
                chunks,
            },
            layer: 0,
        }
    }

    fn classify(target: &Target, stats: &Stats, e: &Planned) -> Classified {
        let c = Classify {
            target,
            opts: WriteOptions::default(),
            chunker: ChunkerParams::DEFAULT,
            trusted: None,
            stats,
        };
        c.one(e, 0).unwrap()
    }

    // A file already holding the planned bytes is kept, its mode and
    // mtime set to the plan's (setuid dropped).
    #[test]
    fn a_file_with_the_planned_content_is_kept_and_fixed() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"hello").unwrap();
        let e = planned("f", b"hello", 0o4750);
        let (target, stats) = (Target::new(t.path(), false, 1, true), Stats::default());
        assert!(matches!(classify(&target, &stats, &e), Classified::InPlace));
        let m = fs::metadata(t.path().join("f")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o750);
        assert_eq!((m.mtime(), m.mtime_nsec()), (MTIME.secs, 5));
        assert!(target.seen[0].get().is_some(), "its stat is noted");
    }

    // Other bytes: written anew, the old version's chunks offered as seeds.
    #[test]
    fn a_file_with_other_content_is_written_with_its_chunks_as_seeds() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"old").unwrap();
        let e = planned("f", b"new", 0o644);
        let (target, stats) = (Target::new(t.path(), false, 1, false), Stats::default());
        let Classified::Write(seeds) = classify(&target, &stats, &e) else {
            panic!("other content is not in place");
        };
        assert_eq!(seeds, vec![(ChunkId::of(b"old"), 0)]);
    }

    // A symlink at a file's path is never read through, nor its target
    // chmod'ed, even when what it points at holds the planned bytes.
    #[test]
    fn a_symlink_at_a_files_path_is_not_read_through() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, b"hello").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
        let at = t.path().join("at");
        fs::create_dir(&at).unwrap();
        symlink(&outside, at.join("f")).unwrap();
        let e = planned("f", b"hello", 0o755);
        let (target, stats) = (Target::new(&at, false, 1, false), Stats::default());
        let Classified::Write(seeds) = classify(&target, &stats, &e) else {
            panic!("a symlink is not the planned file");
        };
        assert!(seeds.is_empty());
        let m = fs::metadata(&outside).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }
}
