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
//! The steps (docs/architecture.md, "Attach, step by step", 5 to 12), each
//! a call of `execute_with`: `prepare` (the target, its lock, staging,
//! directories, the temporary-file sweep; steps 5 and 10), `classify`
//! (which files are in place, and seeds; step 6), `files` (the space
//! check, file jobs and the fetch; steps 7 and 8), `links` (symlinks,
//! hardlinks, directory modes; steps 9 and 11) and `remember` (the stat
//! cache; step 12).
//!
//! Knows nothing about graphs, runs or conflicts: the planned entries are
//! already final.

mod classify;
mod files;
mod links;
mod prepare;
mod remember;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use filetime::FileTime;
use serde::Serialize;

use super::plan::Planned;
use crate::error::{IoContext, Result};
use crate::format::manifest::{EntryKind, Mtime};
use crate::repo::{Observer, Progress, Step, Store};
use crate::tree::stat_cache::FileStat;
use crate::tree::target::TargetLock;
use crate::util::TmpNames;

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
    /// The target `at` (the staging directory when `direct`), with a
    /// temporary name for each of `entries` entries, and a slot for each
    /// one's stat when the stat cache is `kept`.
    fn new(at: &Path, direct: bool, entries: usize, kept: bool) -> Target {
        Target {
            at: at.to_path_buf(),
            names: TmpNames::reserve(crate::tree::reserved::TMP_PREFIX, entries),
            direct,
            seen: match kept {
                true => (0..entries).map(|_| OnceLock::new()).collect(),
                false => Vec::new(),
            },
        }
    }

    /// Each planned file's stat as this attach left it (by plan index).
    fn into_seen(self) -> Vec<OnceLock<FileStat>> {
        self.seen
    }

    /// Notes the stat of the file of plan entry `index` as written or found.
    fn saw(&self, index: usize, stat: FileStat) {
        if let Some(slot) = self.seen.get(index) {
            let _ = slot.set(stat);
        }
    }
}

/// Writes the planned `entries` (sorted by path) at `at`.
pub fn execute(
    store: &Store,
    entries: Vec<Planned>,
    at: &Path,
    opts: WriteOptions,
) -> Result<WriteStats> {
    execute_with(store, entries, at, opts, || Ok(()))
}

/// `execute`, running `alongside` on its own thread once the target has
/// passed its checks (it is a directory, the disk has room), while the
/// files are fetched and written: attach records the workspace's use
/// there, so the record costs no round trip of its own, and a command that
/// fails its checks writes nothing to the store. Its error, if the write
/// succeeded, is the result.
pub fn execute_with(
    store: &Store,
    entries: Vec<Planned>,
    at: &Path,
    opts: WriteOptions,
    alongside: impl FnOnce() -> Result<()> + Send,
) -> Result<WriteStats> {
    let at = prepare::prepare_target(at)?;
    // One attach at a time into a target: held until the end (dropped
    // after the staging directory).
    let _lock = TargetLock::take(&at, store.observer().as_ref())?;
    store.observer().reached(Step::AttachLocked, &at);
    // Empty (a fresh runner's): nothing in it needs a look first, and the
    // tree is built in a staging directory.
    let fresh = fs::read_dir(&at).ctx("list", &at)?.next().is_none();
    let staging = fresh.then(|| prepare::Staging::make(&at)).transpose()?;
    let root = staging.as_ref().map_or(&at, |s| s.dir());
    // The stat cache is held while files are classified, not while they
    // are written (read again to update it at the end).
    let cache_at = store
        .stat_cache()
        .map(|(dir, trust)| (dir.to_path_buf(), trust));
    let target = Target::new(root, fresh, entries.len(), cache_at.is_some());
    let stats = Stats::new(store.observer(), &entries);
    // Over a tree already there, the look at every directory and file is
    // mostly waiting on the disk when the page cache is cold: more threads
    // than cores keep more of those reads in flight (git's preload-index).
    let look = (!fresh).then(prepare::metadata_threads).flatten();
    let swept = prepare::make_dirs(&entries, &target, &at, look.as_ref())?;
    stats.stale_temp_files_removed.fetch_add(swept, Relaxed);

    let trusted = match &cache_at {
        Some((dir, true)) => remember::open_trusted(store, dir, &at),
        _ => None,
    };
    let classify = classify::Classify {
        target: &target,
        opts,
        chunker: store.config().chunker,
        trusted: trusted.as_ref(),
        stats: &stats,
    };
    let decided = classify.all(&entries, look.as_ref())?;
    drop(trusted);
    let seeds = classify::seeds_in_place(&entries, &decided, &at);
    let wrote_nothing = decided.writes == 0;
    let files = files::ToWrite {
        entries: &entries,
        decided,
        target: &target,
        opts,
    };
    files::write_all(store, files, &seeds, &stats, &at, alongside)?;

    links::place_links(&entries, root, fresh)?;
    store.observer().reached(Step::AttachWritten, &at);
    if let Some(staging) = staging {
        staging.move_into(&at, &prepare::top_level(&entries))?;
    }
    links::set_dir_modes(&entries, &at, opts)?;
    if let Some((dir, _)) = &cache_at {
        let seen = target.into_seen();
        remember::after_attach(store, dir, entries, &at, seen, wrote_nothing, &stats);
    }
    Ok(stats.snapshot())
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

fn to_filetime(m: Mtime) -> FileTime {
    FileTime::from_unix_time(m.secs, m.nanos)
}

/// What the attach did so far, counted from many threads.
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
    /// Counters at zero; `observer` hears of the bytes written of all the
    /// planned files' bytes.
    fn new(observer: std::sync::Arc<dyn Observer + Send + Sync>, entries: &[Planned]) -> Stats {
        let total: u64 = entries
            .iter()
            .map(|e| match &e.target {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            })
            .sum();
        Stats {
            progress: Some((observer, total)),
            ..Stats::default()
        }
    }

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
