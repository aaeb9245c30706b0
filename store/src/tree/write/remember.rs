//! Step 12 of attach: the runner's stat cache after the tree is written.
//! Every planned file is recorded with the stat this attach took from its
//! descriptor, if the file still has it; an attach that wrote nothing and
//! found every file as the cache knows it leaves the cache alone. When a
//! stat is trusted is `tree::stat_cache`'s; this module knows nothing of
//! chunks' bytes or the store's packs.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::Stats;
use crate::format::manifest::EntryKind;
use crate::repo::Store;
use crate::tree::plan::Planned;
use crate::tree::stat_cache::{now_nanos, FileStat, StatCache};

/// The stat cache at `dir` for the target `at`, if it knows anything.
pub(super) fn open_trusted(store: &Store, dir: &Path, at: &Path) -> Option<StatCache> {
    Some(StatCache::open(dir, &store.config().store_id, at)).filter(|c| !c.is_empty())
}

/// Records the planned `entries` in the stat cache at `dir`, unless
/// nothing was written and every file was as the cache knows it: then its
/// entries are what recording them again would write (a runner attaching
/// the same layers again skips a second stat of every file).
pub(super) fn after_attach(
    store: &Store,
    dir: &Path,
    entries: Vec<Planned>,
    at: &Path,
    seen: &[OnceLock<FileStat>],
    wrote_nothing: bool,
    stats: &Stats,
) {
    let planned_files = entries
        .iter()
        .filter(|e| matches!(e.target, EntryKind::File { .. }))
        .count() as u64;
    if wrote_nothing && stats.files_untouched.load(Relaxed) == planned_files {
        return;
    }
    // Every planned file is recorded again: only the rest is loaded.
    let planned = |rel: &[u8]| {
        let found = entries.binary_search_by(|e| e.path.as_bytes().cmp(rel));
        found.is_ok_and(|i| matches!(entries[i].target, EntryKind::File { .. }))
    };
    let store_id = &store.config().store_id;
    let mut cache = StatCache::open_except(dir, store_id, at, planned);
    remember(&mut cache, entries, at, seen);
    // A cache that cannot be written costs the next run its reads, not
    // this attach its result.
    let _ = cache.save();
}

/// Records every planned file in `cache` with the stat this attach saw
/// when it wrote the file or found it in place (`seen`, from the file's
/// descriptor), and its planned chunks, which it takes from the plan
/// rather than copying them; only if the file has that stat still, taken
/// after the clock is read (so a file written in the last moments is racy
/// and not recorded). A file changed since this attach wrote it has
/// other content than the plan's, and is read again next time.
fn remember(cache: &mut StatCache, entries: Vec<Planned>, at: &Path, seen: &[OnceLock<FileStat>]) {
    let taken_at = now_nanos();
    let stats: Vec<Option<FileStat>> = entries
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
    for (e, stat) in entries.into_iter().zip(stats) {
        if let (Some(stat), EntryKind::File { chunks, .. }) = (stat, e.target) {
            cache.record(e.path.into(), stat, chunks, taken_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{ChunkRef, Mtime, RelPath};
    use crate::id::ChunkId;

    // A file the job changed after the attach saw it is not remembered
    // with the plan's chunks (it is read again next time); one unchanged is.
    #[test]
    fn only_files_still_as_the_attach_left_them_are_remembered() {
        let t = tempfile::tempdir().unwrap();
        let (at, dir) = (t.path().join("at"), t.path().join("cache"));
        fs::create_dir_all(&at).unwrap();
        let chunks = vec![ChunkRef {
            id: ChunkId::of(b"x"),
            len: 1,
        }];
        let file = |p: &str| Planned {
            path: RelPath::new(p.as_bytes().to_vec()).unwrap(),
            mode: 0o644,
            mtime: Mtime { secs: 0, nanos: 0 },
            target: EntryKind::File {
                size: 1,
                chunks: chunks.clone(),
            },
            layer: 0,
        };
        fs::write(at.join("kept"), "x").unwrap();
        fs::write(at.join("changed"), "x").unwrap();
        let seen: Vec<OnceLock<FileStat>> = ["changed", "kept"]
            .iter()
            .map(|p| OnceLock::from(FileStat::of(&fs::metadata(at.join(p)).unwrap())))
            .collect();
        fs::write(at.join("changed"), "xy").unwrap();
        // Past the racy window of the files' ctimes.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let mut cache = StatCache::open(&dir, "store", &at);
        remember(&mut cache, vec![file("changed"), file("kept")], &at, &seen);
        let now = |p: &str| FileStat::of(&fs::metadata(at.join(p)).unwrap());
        assert_eq!(cache.get(b"kept", &now("kept")), Some(&chunks[..]));
        assert_eq!(cache.get(b"changed", &now("changed")), None);
        assert_eq!(cache.get(b"changed", seen[0].get().unwrap()), None);
    }
}
