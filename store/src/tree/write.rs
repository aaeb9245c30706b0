//! Executing an attach plan: making the target directory hold the planned
//! tree while reading as little as possible from the store.
//!
//! Order: directories (parents first), then regular files in parallel, then
//! symlinks and hardlinks, then directory modes and mtimes deepest first (so
//! read-only directories can still be filled). A failed attach never leaves
//! a half-written file under a final name: into a target already holding
//! something, every file is written under a temporary name in its final
//! directory and renamed into place complete, and an existing symlink at a
//! final name is replaced, never written through; into an empty target (a
//! fresh runner's), the tree is built in a staging directory inside it and
//! its top-level entries are moved into place once all of it is complete
//! (one rename for a whole `node_modules`, not one per file).
//!
//! A file already at the target with the same content is left alone; one
//! with other content lends the chunks it shares (desync's "seed"). Whether
//! it has the same content is read and hashed, unless the runner's stat
//! cache (`tree::stat_cache`) knows the file unchanged since it last wrote
//! or read it with the planned chunks; into an empty target nothing is
//! looked at first. Every planned file is remembered there once the attach
//! is done (unless the attach changed nothing the cache knows: then it is
//! left as it is). Chunks come from the store pack by pack, each pack's
//! needed ranges read in one request, and are checked against their ids.
//!
//! Nothing outside the target is ever changed: modes and mtimes are set
//! through a descriptor opened without following links, and a file already
//! in place that shares its inode with another path (a hardlink made by an
//! earlier step of the job) is replaced rather than chmod'ed, unless it
//! already has the planned mode and mtime. setuid and setgid bits are
//! dropped unless the caller keeps them (`WriteOptions::keep_setuid`): a
//! job that can persist must not plant a setuid binary for a later job run
//! as root. Temporary files and a staging directory a killed attach left
//! in the target (recognisable by their names) are removed first.
//!
//! Knows nothing about graphs or conflicts: the plan is already final.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Relaxed},
};
use std::sync::{Mutex, OnceLock};

use filetime::FileTime;
use rayon::prelude::*;
use serde::Serialize;

use super::plan::{Plan, Planned};
use crate::error::{Error, IoContext, Result};
use crate::format::chunking::chunk_stream;
use crate::format::manifest::EntryKind;
use crate::format::manifest::Mtime;
use crate::id::ChunkId;
use crate::read::fetch_chunks;
use crate::repo::{Observer, Progress, Step, Store};
use crate::tree::reserved::{
    held_by_another_live_process, is_temp_name, STAGING_PREFIX, TMP_PREFIX,
};
use crate::tree::stat_cache::{now_nanos, FileStat, StatCache};
use crate::tree::target::TargetLock;
use crate::util::{unique_tmp_name, TmpNames};

/// How a tree is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Keep setuid and setgid bits as stored (`--keep-setuid`); by default
    /// they are dropped, as GNU tar does for users other than root.
    pub keep_setuid: bool,
}

impl WriteOptions {
    /// The mode a planned entry gets on disk.
    fn mode(&self, planned: u32) -> u32 {
        if self.keep_setuid {
            planned
        } else {
            planned & !0o6000
        }
    }
}

/// What writing a tree did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WriteStats {
    /// Regular files written (new or changed).
    pub files_written: u64,
    /// Regular files already at the target with the right content.
    pub files_in_place: u64,
    /// Of those, files not read: the runner's stat cache knew them
    /// unchanged, with the planned chunks.
    pub files_unchanged: u64,
    /// Distinct chunks read from the store, and the stored bytes read.
    pub chunks_from_store: u64,
    /// Bytes of chunks read from the store (not already on disk).
    pub bytes_from_store: u64,
    /// Stored bytes of file content read from the runner's chunk cache.
    pub bytes_from_cache: u64,
    /// Chunks copied from the old version of a file at the target.
    pub chunks_from_target: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
    /// Temporary files of an earlier, interrupted attach that were removed
    /// (its staging directory, if it left one, counts as one).
    pub stale_temp_files_removed: u64,
}

/// A regular file being written. A few words: an attach of a million
/// files holds a million of these, so paths are made when needed.
struct FileJob<'p> {
    entry: &'p Planned,
    /// Where the tree is written, and the temporary names reserved for it.
    target: &'p Target,
    /// The entry's index in the plan: which temporary name is its own.
    index: usize,
    size: u64,
    /// Chunk placements still to write; the file is renamed at zero.
    remaining: AtomicUsize,
    /// Whether the temporary file exists (so cleanup knows to remove it).
    created: Mutex<bool>,
    /// Chunks the file's old version at its path can provide, sorted by
    /// id: (id, offset).
    seeds: Vec<(ChunkId, u64)>,
    /// The mode the file gets.
    mode: u32,
}

/// The directory a plan is written to, and a temporary name for each of
/// the plan's entries.
struct Target {
    at: PathBuf,
    names: TmpNames,
    /// Files are written under their final names: `at` is a staging
    /// directory no one else looks at until the attach moves it in.
    direct: bool,
    /// When the stat cache is kept, each planned file's stat as this
    /// attach left it, taken from its descriptor when it was written or
    /// found in place (by plan index): what the stat cache records, if the
    /// file still has it at the end.
    seen: Vec<OnceLock<FileStat>>,
}

impl Target {
    /// Notes the stat of the file of plan entry `index` as written or found.
    fn saw(&self, index: usize, stat: FileStat) {
        if let Some(slot) = self.seen.get(index) {
            let _ = slot.set(stat);
        }
    }
}

/// Where an attach into an empty target builds the tree: a directory at
/// the target's top whose top-level entries are moved into the target once
/// every file in them is complete. Removed, with whatever is left in it,
/// when dropped (an attach that fails leaves nothing of its own behind).
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn make(at: &Path) -> Result<Staging> {
        let dir = at.join(unique_tmp_name(STAGING_PREFIX));
        fs::create_dir(&dir).ctx("create directory", &dir)?;
        Ok(Staging { dir })
    }

    /// Moves each of `names` from the staging directory into `at`, never
    /// over something that has appeared there since the attach began.
    fn move_into(&self, at: &Path, names: &[&Path]) -> Result<()> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        for name in names {
            let (from, to) = (self.dir.join(name), at.join(name));
            match renameat_with(CWD, &from, CWD, &to, RenameFlags::NOREPLACE) {
                Ok(()) => continue,
                Err(rustix::io::Errno::EXIST) => {}
                // A file system without RENAME_NOREPLACE: look, then rename.
                Err(rustix::io::Errno::INVAL) if fs::symlink_metadata(&to).is_err() => {
                    fs::rename(&from, &to).ctx("move into", &to)?;
                    continue;
                }
                Err(rustix::io::Errno::INVAL) => {}
                Err(e) => return Err(Error::io("move into", &to, e.into())),
            }
            return Err(Error::Changed {
                detail: format!("{} appeared while the attach was writing it", to.display()),
            });
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn execute(store: &Store, plan: Plan, at: &Path, opts: WriteOptions) -> Result<WriteStats> {
    execute_with(store, plan, at, opts, || Ok(()))
}

/// `execute`, running `alongside` on its own thread once the target has
/// passed its checks (it is a directory, the disk has room), while the
/// files are fetched and written: attach records the workspace's use
/// there, so the record costs no round trip of its own, and a command that
/// fails its checks writes nothing to the store. Its error, if the write
/// succeeded, is the result.
pub fn execute_with(
    store: &Store,
    plan: Plan,
    at: &Path,
    opts: WriteOptions,
    alongside: impl FnOnce() -> Result<()> + Send,
) -> Result<WriteStats> {
    let at = prepare_target(at)?;
    // One attach at a time into a target: held until the end (dropped
    // after the staging directory).
    let _lock = TargetLock::take(&at, store.observer().as_ref())?;
    store.observer().reached(Step::AttachLocked, &at);
    // Empty (a fresh runner's): nothing in it needs a look first.
    let fresh = fs::read_dir(&at).ctx("list", &at)?.next().is_none();
    let dest = |e: &Planned| at.join(e.path.to_path());
    // Where the tree is built: the target, or its staging directory.
    let staging = fresh.then(|| Staging::make(&at)).transpose()?;
    let root = staging.as_ref().map_or(&at, |s| &s.dir);
    let built = |e: &Planned| root.join(e.path.to_path());
    // The stat cache is held while files are classified, not while they
    // are written (read again to update it at the end).
    let cache_at = store
        .stat_cache()
        .map(|(dir, trust)| (dir.to_path_buf(), trust));
    let target = Target {
        at: root.clone(),
        names: TmpNames::reserve(TMP_PREFIX, plan.entries.len()),
        direct: fresh,
        seen: match cache_at {
            Some(_) => (0..plan.entries.len()).map(|_| OnceLock::new()).collect(),
            None => Vec::new(),
        },
    };
    let open_cache = |dir: &Path| StatCache::open(dir, &store.config().store_id, &at);
    let trusted = match &cache_at {
        Some((dir, true)) => Some(open_cache(dir)).filter(|c| !c.is_empty()),
        _ => None,
    };

    // Over a tree already there, the look at every directory and file is
    // mostly waiting on the disk when the page cache is cold: more threads
    // than cores keep more of those reads in flight (git's preload-index).
    let look = (!fresh).then(metadata_threads).flatten();
    let look = look.as_ref();
    // Parents before children: one depth at a time, each in parallel.
    let mut made: Vec<(usize, PathBuf)> = plan
        .entries
        .iter()
        .filter(|e| e.target == EntryKind::Dir)
        .map(|e| (e.path.depth(), built(e)))
        .collect();
    made.sort_by_key(|d| d.0);
    for level in made.chunk_by(|a, b| a.0 == b.0) {
        on(look, || {
            level.par_iter().try_for_each(|(_, d)| match fresh {
                true => make_dir(d),
                false => ensure_dir(d),
            })
        })?;
    }
    let total: u64 = plan
        .entries
        .iter()
        .map(|e| match &e.target {
            EntryKind::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    let stats = Stats {
        progress: Some((store.observer(), total)),
        ..Stats::default()
    };
    // An empty target has no temporary files, nor any file to classify.
    let swept: u64 = match fresh {
        true => 0,
        false => on(look, || {
            let below: u64 = made
                .par_iter()
                .map(|(_, d)| sweep_temp_files(d, false))
                .try_reduce(|| 0, |a, b| Ok(a + b))?;
            Ok::<_, Error>(below + sweep_temp_files(&at, true)?)
        })?,
    };
    drop(made);
    stats.stale_temp_files_removed.fetch_add(swept, Relaxed);

    // Decide, for every regular file, whether it is already in place.
    let chunker = store.config().chunker;
    let candidates: Vec<Classified> = on(look, || {
        plan.entries
            .par_iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.target, EntryKind::File { .. }))
            .map(|(index, e)| {
                let job = (&target, index, opts.mode(e.mode));
                match fresh {
                    true => write_job(e, job, Vec::new()),
                    false => classify(e, job, chunker, trusted.as_ref(), &stats),
                }
            })
            .collect::<Result<_>>()
    })?;
    drop(trusted);
    let mut in_place = Vec::new();
    let mut jobs = Vec::new();
    for c in candidates {
        match c {
            Classified::InPlace(e) => in_place.push(e),
            Classified::Write(job) => jobs.push(job),
        }
    }
    stats
        .files_in_place
        .fetch_add(in_place.len() as u64, Relaxed);
    // Files already in place stay as they are for the whole attach, so any
    // of their chunks can seed the files that must be written: the chunks
    // those files need, located (a warm runner with little to write does
    // not index every chunk it already has).
    let mut seeds: HashMap<ChunkId, (PathBuf, u64)> = HashMap::new();
    if !jobs.is_empty() && !in_place.is_empty() {
        let wanted: HashSet<ChunkId> = jobs
            .iter()
            .flat_map(|j| j.entry.target.chunks())
            .map(|c| c.id)
            .collect();
        for e in in_place {
            let mut offset = 0;
            for c in e.target.chunks() {
                if wanted.contains(&c.id) {
                    seeds.entry(c.id).or_insert_with(|| (dest(e), offset));
                }
                offset += c.len as u64;
            }
        }
    }

    check_space(&at, &jobs)?;
    // A large attach yields the CPU to small jobs.
    crate::util::yield_to_small_jobs(jobs.iter().map(|j| j.size).sum());
    let (result, beside) = std::thread::scope(|s| {
        let beside = s.spawn(alongside);
        let result = write_files(store, &jobs, &seeds, &stats);
        (result, beside.join().expect("the work alongside panicked"))
    });
    if result.is_err() {
        for job in &jobs {
            if *job.created.lock().expect("poisoned") && job.remaining.load(Relaxed) > 0 {
                let _ = fs::remove_file(job.tmp());
            }
        }
    }
    result?;
    beside?;

    for e in &plan.entries {
        match &e.target {
            EntryKind::Symlink { target } => place_symlink(&built(e), target, e.mtime, fresh)?,
            EntryKind::Hardlink { target } => {
                place_hardlink(&root.join(target.to_path()), &built(e), fresh)?
            }
            _ => {}
        }
    }
    store.observer().reached(Step::AttachWritten, &at);
    if let Some(staging) = staging {
        let top: Vec<&Path> = plan
            .entries
            .iter()
            .filter(|e| e.path.depth() == 1)
            .map(|e| e.path.to_path())
            .collect();
        staging.move_into(&at, &top)?;
    }
    let mut dirs: Vec<&Planned> = plan
        .entries
        .iter()
        .filter(|e| e.target == EntryKind::Dir)
        .collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.depth()));
    for e in dirs {
        let d = dest(e);
        let f = open_no_follow(&d, true).ctx("open directory", &d)?;
        set_mode_and_mtime(&f, &d, opts.mode(e.mode), e.mtime)?;
    }
    // Nothing written and every file as the stat cache knows it: its
    // entries are what recording them again would write (a runner
    // attaching the same layers again skips a second stat of every file).
    let planned_files = plan
        .entries
        .iter()
        .filter(|e| matches!(e.target, EntryKind::File { .. }))
        .count() as u64;
    let all_known = jobs.is_empty() && stats.files_untouched.load(Relaxed) == planned_files;
    if let Some((dir, _)) = cache_at.as_ref().filter(|_| !all_known) {
        // Every planned file is recorded again: only the rest is loaded.
        let planned = |rel: &[u8]| {
            let found = plan
                .entries
                .binary_search_by(|e| e.path.as_bytes().cmp(rel));
            found.is_ok_and(|i| matches!(plan.entries[i].target, EntryKind::File { .. }))
        };
        let store_id = &store.config().store_id;
        let mut cache = StatCache::open_except(dir, store_id, &at, planned);
        remember(&mut cache, plan, &at, &target.seen);
        // A cache that cannot be written costs the next run its reads,
        // not this attach its result.
        let _ = cache.save();
    }
    Ok(stats.snapshot())
}

/// Records every planned file in `cache` with the stat this attach saw
/// when it wrote the file or found it in place (`seen`, from the file's
/// descriptor), and its planned chunks, which it takes from the plan
/// rather than copying them; only if the file has that stat still, taken
/// after the clock is read (so a file written in the last moments is racy
/// and not recorded). A file changed since this attach wrote it has
/// other content than the plan's, and is read again next time.
fn remember(cache: &mut StatCache, plan: Plan, at: &Path, seen: &[OnceLock<FileStat>]) {
    let taken_at = now_nanos();
    let stats: Vec<Option<FileStat>> = plan
        .entries
        .par_iter()
        .enumerate()
        .map(|(i, e)| match e.target {
            EntryKind::File { .. } => {
                let seen = *seen.get(i)?.get()?;
                // Gone, replaced or changed already (the job is running):
                // not remembered.
                let m = fs::symlink_metadata(at.join(e.path.to_path())).ok()?;
                (m.is_file() && FileStat::of(&m) == seen).then_some(seen)
            }
            _ => None,
        })
        .collect();
    cache.reserve_for(stats.iter().flatten().count());
    for (e, stat) in plan.entries.into_iter().zip(stats) {
        if let (Some(stat), EntryKind::File { chunks, .. }) = (stat, e.target) {
            cache.record(e.path.into(), stat, chunks, taken_at);
        }
    }
}

/// Threads for looking at what a target holds: a stat or a directory
/// listing from a cold page cache waits on the disk, not on a core.
const LOOK_THREADS: usize = 16;

/// A pool of `LOOK_THREADS` threads (none if one cannot be started: the
/// work then runs on the caller's pool).
fn metadata_threads() -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(LOOK_THREADS.max(rayon::current_num_threads()))
        .thread_name(|i| format!("strata-look-{i}"))
        .build()
        .ok()
}

/// Runs `f` on `pool`, or where it is called without one.
fn on<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// Opens `path` itself, never what a symlink there points at; the result
/// is where modes and mtimes are set, so they cannot leak outside the
/// target through a link.
fn open_no_follow(path: &Path, dir: bool) -> std::io::Result<File> {
    let flags = libc::O_NOFOLLOW | if dir { libc::O_DIRECTORY } else { 0 };
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

fn set_mode_and_mtime(f: &File, path: &Path, mode: u32, mtime: Mtime) -> Result<()> {
    f.set_permissions(fs::Permissions::from_mode(mode))
        .ctx("set mode of", path)?;
    filetime::set_file_handle_times(f, None, Some(to_filetime(mtime))).ctx("set mtime of", path)
}

/// Removes the temporary files an interrupted attach left in `dir` (files
/// and symlinks only: a directory of that name is the user's), and, at the
/// target's `top`, its staging directory; never one another running
/// process made (an attach into a directory below this target).
fn sweep_temp_files(dir: &Path, top: bool) -> Result<u64> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name();
        if held_by_another_live_process(&name, TMP_PREFIX)
            || held_by_another_live_process(&name, STAGING_PREFIX)
        {
            continue;
        }
        let is_dir = || entry.file_type().map(|t| t.is_dir());
        if is_temp_name(&name, TMP_PREFIX) && !is_dir().ctx("stat", entry.path())? {
            fs::remove_file(entry.path()).ctx("remove stale temporary file", entry.path())?;
            removed += 1;
        } else if top
            && is_temp_name(&name, STAGING_PREFIX)
            && is_dir().ctx("stat", entry.path())?
        {
            fs::remove_dir_all(entry.path()).ctx("remove stale staging directory", entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[derive(Default)]
struct Stats {
    /// Who hears of progress, and the bytes of file content in all.
    progress: Option<(std::sync::Arc<dyn Observer + Send + Sync>, u64)>,
    files_written: AtomicU64,
    files_in_place: AtomicU64,
    files_unchanged: AtomicU64,
    /// Of those, files left exactly as the stat cache knows them (no mode
    /// or mtime fixed): their entries need no recording again.
    files_untouched: AtomicU64,
    chunks_from_store: AtomicU64,
    bytes_from_store: AtomicU64,
    bytes_from_cache: AtomicU64,
    chunks_from_target: AtomicU64,
    bytes_written: AtomicU64,
    stale_temp_files_removed: AtomicU64,
}

impl Stats {
    /// Counts `n` bytes written, and tells the observer.
    fn wrote(&self, n: u64) {
        let done = self.bytes_written.fetch_add(n, Relaxed) + n;
        if let Some((observer, total)) = &self.progress {
            observer.progress(&Progress {
                command: "attach",
                done_bytes: done,
                total_bytes: *total,
            });
        }
    }

    fn snapshot(&self) -> WriteStats {
        WriteStats {
            files_written: self.files_written.load(Relaxed),
            files_in_place: self.files_in_place.load(Relaxed),
            files_unchanged: self.files_unchanged.load(Relaxed),
            chunks_from_store: self.chunks_from_store.load(Relaxed),
            bytes_from_store: self.bytes_from_store.load(Relaxed),
            bytes_from_cache: self.bytes_from_cache.load(Relaxed),
            chunks_from_target: self.chunks_from_target.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            stale_temp_files_removed: self.stale_temp_files_removed.load(Relaxed),
        }
    }
}

/// Refuses, before writing anything, an attach whose files cannot fit on
/// the target's file system: a full disk would fail it halfway anyway, and
/// a hostile manifest can claim any size (one chunk listed a million times).
fn check_space(at: &Path, jobs: &[FileJob]) -> Result<()> {
    let needed: u64 = jobs.iter().map(|j| j.size).fold(0u64, u64::saturating_add);
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

/// The attach directory, created if missing; a regular file there is an
/// error. The user named it, so a symlink to a directory is followed here,
/// and nowhere below.
fn prepare_target(at: &Path) -> Result<PathBuf> {
    match fs::metadata(at) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::NotADirectory { path: at.into() }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(at).ctx("create directory", at)?;
        }
        Err(e) => return Err(Error::io("stat", at, e)),
    }
    fs::canonicalize(at).ctx("resolve", at)
}

/// `ensure_dir` in the staging directory of a target that was empty: made
/// without a look first, unless something has appeared there since.
fn make_dir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => ensure_dir(path),
        done => done.ctx("create directory", path),
    }
}

/// Makes `path` a real, writable directory, replacing a file or symlink.
fn ensure_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o700 != 0o700 {
                let mode = m.permissions().mode() | 0o700;
                fs::set_permissions(path, fs::Permissions::from_mode(mode))
                    .ctx("make writable", path)?;
            }
            return Ok(());
        }
        Ok(_) => fs::remove_file(path).ctx("replace", path)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("stat", path, e)),
    }
    fs::create_dir(path).ctx("create directory", path)
}

/// Removes whatever is at `path` if it is a directory, so a rename can
/// replace it (rename replaces files and symlinks by itself).
fn clear_dir_at(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).ctx("replace directory", path),
        _ => Ok(()),
    }
}

enum Classified<'p> {
    /// The file at the target already has the planned content (its mode
    /// and mtime were fixed).
    InPlace(&'p Planned),
    Write(FileJob<'p>),
}

/// Where a file job writes: the target, the entry's index, its mode.
type JobAt<'p> = (&'p Target, usize, u32);

fn classify<'p>(
    e: &'p Planned,
    (target, index, mode): JobAt<'p>,
    chunker: crate::format::chunking::ChunkerParams,
    trusted: Option<&StatCache>,
    stats: &Stats,
) -> Result<Classified<'p>> {
    let EntryKind::File { size, chunks } = &e.target else {
        unreachable!("only files are classified")
    };
    let dest = target.at.join(e.path.to_path());
    let job = (target, index, mode);
    let mut seeds = Vec::new();
    match fs::symlink_metadata(&dest) {
        Ok(m) if m.is_file() => {
            // Known unchanged since this runner wrote or read it with the
            // planned content, mode and mtime: nothing to read or fix.
            let unchanged = trusted
                .and_then(|c| c.get(e.path.as_bytes(), &FileStat::of(&m)))
                .is_some_and(|known| known == &chunks[..]);
            let mode_ok = m.permissions().mode() & 0o7777 == mode;
            let mtime_ok = (m.mtime(), m.mtime_nsec()) == (e.mtime.secs, e.mtime.nanos as i64);
            if unchanged && mode_ok && mtime_ok {
                stats.files_unchanged.fetch_add(1, Relaxed);
                stats.files_untouched.fetch_add(1, Relaxed);
                target.saw(index, FileStat::of(&m));
                return Ok(Classified::InPlace(e));
            }
            // Known to hold the planned content, with another mode or
            // mtime (a next run's tree, extracted anew): fix those without
            // reading it, if the file opened is still the one trusted and
            // no other path shares its inode.
            if unchanged && m.nlink() == 1 {
                if let Ok(f) = open_no_follow(&dest, false) {
                    let same = f
                        .metadata()
                        .is_ok_and(|now| FileStat::of(&now) == FileStat::of(&m));
                    if same {
                        set_mode_and_mtime(&f, &dest, mode, e.mtime)?;
                        stats.files_unchanged.fetch_add(1, Relaxed);
                        see_through(target, index, &f);
                        return Ok(Classified::InPlace(e));
                    }
                }
            }
            let file = match open_no_follow(&dest, false) {
                Ok(f) => f,
                // Replaced by a symlink since the stat: write it anew.
                Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                    return write_job(e, job, seeds)
                }
                Err(err) => return Err(Error::io("read", &dest, err)),
            };
            let m = file.metadata().ctx("stat", &dest)?;
            let mut ids = Vec::new();
            let mut offset = 0u64;
            chunk_stream(
                &file,
                m.len(),
                chunker,
                &|err| Error::io("read", &dest, err),
                &mut |id, b| {
                    ids.push(id);
                    seeds.push((id, offset));
                    offset += b.len() as u64;
                    Ok(())
                },
            )?;
            // By id, each at its first offset (the sort is stable).
            seeds.sort_by_key(|s| s.0);
            seeds.dedup_by_key(|s| s.0);
            // Read whole and unchanged while it was read: what it holds is
            // what was hashed.
            let still = file
                .metadata()
                .is_ok_and(|now| FileStat::of(&now) == FileStat::of(&m));
            if still && offset == *size && ids.iter().eq(chunks.iter().map(|c| &c.id)) {
                let mode_ok = m.permissions().mode() & 0o7777 == mode;
                let mtime_ok = (m.mtime(), m.mtime_nsec()) == (e.mtime.secs, e.mtime.nanos as i64);
                if mode_ok && mtime_ok {
                    target.saw(index, FileStat::of(&m));
                    return Ok(Classified::InPlace(e));
                }
                // Another path shares this inode (perhaps outside the
                // target): changing its mode or mtime would change that
                // path too, so the file is written anew instead.
                if m.nlink() == 1 {
                    set_mode_and_mtime(&file, &dest, mode, e.mtime)?;
                    see_through(target, index, &file);
                    return Ok(Classified::InPlace(e));
                }
            }
        }
        Ok(m) if m.is_dir() => fs::remove_dir_all(&dest).ctx("replace directory", &dest)?,
        _ => {}
    }
    write_job(e, job, seeds)
}

fn write_job<'p>(
    e: &'p Planned,
    (target, index, mode): JobAt<'p>,
    seeds: Vec<(ChunkId, u64)>,
) -> Result<Classified<'p>> {
    let EntryKind::File { size, chunks } = &e.target else {
        unreachable!("only files are written")
    };
    Ok(Classified::Write(FileJob {
        target,
        index,
        size: *size,
        remaining: AtomicUsize::new(chunks.len()),
        created: Mutex::new(false),
        seeds,
        mode,
        entry: e,
    }))
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

fn write_files(
    store: &Store,
    jobs: &[FileJob],
    in_place: &HashMap<ChunkId, (PathBuf, u64)>,
    stats: &Stats,
) -> Result<()> {
    // Which placements come from files at the target, and which from the
    // store: (chunk, job, offset), sorted by chunk once all are known.
    let mut from_store: Vec<(ChunkId, usize, u64)> = Vec::new();
    let mut seeded: Vec<(usize, Vec<SeedCopy>)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let EntryKind::File { chunks, .. } = &job.entry.target else {
            unreachable!()
        };
        let mut offset = 0u64;
        let mut mine = Vec::new();
        for c in chunks {
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
    let placements = |id: ChunkId| {
        let start = from_store.partition_point(|p| p.0 < id);
        let end = start + from_store[start..].partition_point(|p| p.0 == id);
        &from_store[start..end]
    };
    let mut ids: Vec<ChunkId> = from_store.iter().map(|p| p.0).collect();
    ids.dedup();

    // Empty files have no chunk to trigger their completion.
    jobs.par_iter()
        .filter(|j| j.size == 0)
        .try_for_each(|j| j.complete(stats))?;

    // A file's old version is read only by its own job, before that job
    // renames the new one over it; files in place are never rewritten.
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
    })?;

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

impl FileJob<'_> {
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

/// Notes the stat of the file open as `f`, the one of plan entry `index`.
fn see_through(target: &Target, index: usize, f: &File) {
    if let Ok(m) = f.metadata() {
        target.saw(index, FileStat::of(&m));
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

/// Makes `dest` a symlink to `target` (in an empty staging directory,
/// `direct`: made there, with nothing to replace).
fn place_symlink(dest: &Path, target: &[u8], mtime: Mtime, direct: bool) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = Path::new(std::ffi::OsStr::from_bytes(target));
    if direct {
        std::os::unix::fs::symlink(target, dest).ctx("create symlink", dest)?;
    } else if !fs::read_link(dest).is_ok_and(|t| t == target) {
        clear_dir_at(dest)?;
        let tmp = dest.with_file_name(unique_tmp_name(TMP_PREFIX));
        std::os::unix::fs::symlink(target, &tmp).ctx("create symlink", &tmp)?;
        if let Err(e) = fs::rename(&tmp, dest) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rename into", dest, e));
        }
    }
    filetime::set_symlink_file_times(dest, to_filetime(mtime), to_filetime(mtime))
        .ctx("set mtime of", dest)
}

/// Makes `dest` a hardlink to `original` (`direct` as `place_symlink`'s).
fn place_hardlink(original: &Path, dest: &Path, direct: bool) -> Result<()> {
    if direct {
        return fs::hard_link(original, dest).ctx("create hardlink", dest);
    }
    let orig = fs::symlink_metadata(original).ctx("stat", original)?;
    if let Ok(m) = fs::symlink_metadata(dest) {
        if m.dev() == orig.dev() && m.ino() == orig.ino() {
            return Ok(());
        }
    }
    clear_dir_at(dest)?;
    let tmp = dest.with_file_name(unique_tmp_name(TMP_PREFIX));
    fs::hard_link(original, &tmp).ctx("create hardlink", &tmp)?;
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("rename into", dest, e));
    }
    Ok(())
}

fn to_filetime(m: Mtime) -> FileTime {
    FileTime::from_unix_time(m.secs, m.nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The staging directory's entries move in whole; one that appeared at
    // the target meanwhile is never replaced, and dropping the staging
    // directory removes what was not moved.
    #[test]
    fn staging_moves_in_without_replacing() {
        let t = tempfile::tempdir().unwrap();
        let staging = Staging::make(t.path()).unwrap();
        let dir = staging.dir.clone();
        assert!(is_temp_name(dir.file_name().unwrap(), STAGING_PREFIX));
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/f"), "new").unwrap();
        fs::write(dir.join("g"), "new").unwrap();
        fs::write(t.path().join("g"), "theirs").unwrap();
        let err = staging
            .move_into(t.path(), &[Path::new("a"), Path::new("g")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("appeared while the attach was writing it"),
            "{err}"
        );
        assert_eq!(fs::read(t.path().join("a/b/f")).unwrap(), b"new");
        assert_eq!(fs::read(t.path().join("g")).unwrap(), b"theirs");
        drop(staging);
        assert!(!dir.exists());
    }
}
