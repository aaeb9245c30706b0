//! The runner's stat cache, as storing a tree uses it: which scanned files
//! it knows unchanged (their chunk lists reused, if the store still holds
//! every chunk: one batched query), and what the tree's files are
//! remembered as afterwards. When a stat is trusted is
//! `tree::stat_cache`'s; this module knows no packs or pipeline.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::manifest::ChunkRef;
use crate::id::ChunkId;
use crate::repo::Store;
use crate::tree::scan::{ScanKind, Tree, Walked};
use crate::tree::stat_cache::StatCache;

use super::manifest_out::Records;

/// For each scanned entry, the chunks of a file the stat cache knows
/// unchanged and whose every chunk the store holds (asked in batches, in
/// parallel): those files are not read. `None` for the rest; no list at
/// all if the cache knows nothing. The chunk lists are taken out of the
/// cache, not copied.
pub(super) fn unchanged_files(
    store: &Store,
    tree: &Tree,
    dir: &Path,
) -> Result<Option<Vec<Option<Vec<ChunkRef>>>>> {
    // The scanned files by path, for each of the cache's entries to find
    // its own as the cache's file is read: no table of the cache is held
    // (at 10^6 files about 240 MB; this index, about 50 MB, built at the
    // cache's first entry: none without a cache).
    let index = || -> HashMap<&[u8], u32> {
        (tree.entries.iter().enumerate())
            .filter(|(_, s)| matches!(s.kind, ScanKind::File { .. }))
            .map(|(i, s)| (s.rel.as_bytes(), i as u32))
            .collect()
    };
    let mut by_path = None;
    let mut known: Vec<Option<Vec<ChunkRef>>> = Vec::new();
    let read = StatCache::read_each(dir, &store.config().store_id, &tree.root, &mut |rel, k| {
        let Some(&i) = by_path.get_or_insert_with(index).get(&rel[..]) else {
            return;
        };
        let ScanKind::File { stat, .. } = &tree.entries[i as usize].kind else {
            return;
        };
        if known.is_empty() {
            known = vec![None; tree.entries.len()];
        }
        known[i as usize] = (k.stat == *stat).then_some(k.chunks);
    });
    drop(by_path);
    if !read || known.is_empty() {
        return Ok(None);
    }
    let mut ids: Vec<ChunkId> = known.iter().flatten().flatten().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    const ASK: usize = 8192;
    let threads = super::pipeline::query_threads(store);
    let lookup = store.chunk_lookup();
    let answers: Vec<Vec<bool>> = std::thread::scope(|s| {
        let mut out = Vec::new();
        for group in ids.chunks(ASK * threads) {
            let asked: Vec<_> = group
                .chunks(ASK)
                .map(|part| s.spawn(move || lookup.missing(part)))
                .collect();
            for a in asked {
                out.push(a.join().expect("a chunk query panicked")?);
            }
        }
        Ok::<_, Error>(out)
    })?;
    let missing: HashSet<ChunkId> = ids
        .iter()
        .zip(answers.into_iter().flatten())
        .filter(|(_, m)| *m)
        .map(|(id, _)| *id)
        .collect();
    if !missing.is_empty() {
        for k in &mut known {
            if k.as_ref()
                .is_some_and(|c| c.iter().any(|c| missing.contains(&c.id)))
            {
                *k = None;
            }
        }
    }
    Ok(Some(known))
}

/// What the scan saw of a tree: where it is rooted, which directories it
/// walked whole, and when it took its stats.
pub(super) struct Seen<'t> {
    pub root: &'t Path,
    pub walked: &'t Walked,
    pub scanned_at: i128,
}

impl Seen<'_> {
    /// Records the stored tree's files (spilled as its manifest was
    /// written) in the stat cache at `dir`, in place of what the tree
    /// covers: the files of the manifest (those no walked directory holds
    /// are named in `records.outside`) and anything in a directory the
    /// scan walked whole (found again, or deleted since). The directories
    /// between the root and a given path are in the manifest but were not
    /// walked: what else they hold is kept. A cache that cannot be written
    /// costs the next run its reads, not this command its result.
    pub(super) fn save(&self, store: &Store, dir: &Path, records: Records) {
        // What the tree covers is recorded again: only the rest is loaded.
        let store_id = &store.config().store_id;
        let Records { spill, outside } = records;
        let skip = |rel: &[u8]| outside.contains(rel) || self.walked.holds(rel);
        let cache = StatCache::open_except(dir, store_id, self.root, skip);
        drop(outside);
        let _ = cache.save_spilled(spill, self.scanned_at);
    }
}
