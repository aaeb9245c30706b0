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
use crate::tree::stat_cache::{now_nanos, FileStat, Record, StatCache, StatLookup};

/// The stat cache at `dir` for the target `at`, read for lookups (its
/// file's bytes, not a table of them), if it knows anything.
pub(super) fn open_trusted(store: &Store, dir: &Path, at: &Path) -> Option<StatLookup> {
    Some(StatLookup::open(dir, &store.config().store_id, at)).filter(|c| !c.is_empty())
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
    mut seen: Vec<OnceLock<FileStat>>,
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
    let cache = StatCache::open_except(dir, store_id, at, planned);
    let taken_at = still_as_seen(&entries, at, &mut seen);
    // A cache that cannot be written costs the next run its reads, not
    // this attach its result.
    let _ = cache.save_with(records(&entries, &seen), taken_at);
}

/// Keeps in `seen` the stat of each planned file this attach saw when it
/// wrote the file or found it in place (from the file's descriptor) only
/// if the file has that stat still, taken after the clock is read
/// (returned: so a file written in the last moments is racy and not
/// recorded); empties the other slots. A file changed since this attach
/// wrote it has other content than the plan's, and is read again next
/// time. In place: a second vector of a stat per entry would cost as much
/// as `seen` (issue 29: ~70 MB at 10^6 files).
fn still_as_seen(entries: &[Planned], at: &Path, seen: &mut [OnceLock<FileStat>]) -> i128 {
    let taken_at = now_nanos();
    seen.par_iter_mut().enumerate().for_each(|(i, slot)| {
        let still = match (slot.get(), entries.get(i).map(|e| (e, &e.target))) {
            (Some(seen), Some((e, EntryKind::File { .. }))) => {
                // Gone, replaced or changed already (the job is running):
                // not remembered.
                fs::symlink_metadata(at.join(e.path.to_path()))
                    .is_ok_and(|m| m.is_file() && FileStat::of(&m) == *seen)
            }
            _ => false,
        };
        if !still {
            slot.take();
        }
    });
    taken_at
}

/// The planned files to record (those `seen` still gives a stat) with
/// their planned chunks, borrowed from the plan rather than copied into
/// the cache's table (issue 29: at 10^6 files that table is ~240 MB).
fn records<'a>(
    entries: &'a [Planned],
    seen: &'a [OnceLock<FileStat>],
) -> impl Iterator<Item = Record<'a>> + Clone {
    entries
        .iter()
        .zip(seen)
        .filter_map(|(e, stat)| match (stat.get(), &e.target) {
            (Some(stat), EntryKind::File { chunks, .. }) => Some(Record {
                rel: e.path.as_bytes(),
                stat: *stat,
                chunks,
            }),
            _ => None,
        })
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
        let mut seen: Vec<OnceLock<FileStat>> = ["changed", "kept"]
            .iter()
            .map(|p| OnceLock::from(FileStat::of(&fs::metadata(at.join(p)).unwrap())))
            .collect();
        fs::write(at.join("changed"), "xy").unwrap();
        // Past the racy window of the files' ctimes.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let entries = vec![file("changed"), file("kept")];
        let changed_as_seen = *seen[0].get().unwrap();
        let taken_at = still_as_seen(&entries, &at, &mut seen);
        assert!(seen[0].get().is_none() && seen[1].get().is_some());
        let cache = StatCache::open(&dir, "store", &at);
        cache.save_with(records(&entries, &seen), taken_at).unwrap();
        let cache = StatCache::open(&dir, "store", &at);
        let now = |p: &str| FileStat::of(&fs::metadata(at.join(p)).unwrap());
        assert_eq!(cache.get(b"kept", &now("kept")), Some(&chunks[..]));
        assert_eq!(cache.get(b"changed", &now("changed")), None);
        assert_eq!(cache.get(b"changed", &changed_as_seen), None);
    }
}
