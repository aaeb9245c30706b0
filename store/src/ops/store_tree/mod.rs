//! Storing a scanned tree: its files chunked and their new chunks packed
//! and uploaded (`pipeline`, fed by `feed`), files the runner's stat cache
//! knows unchanged reused unread (`reuse`), the manifest stored as chunks,
//! then the index object and the manifest's root with the ref that names
//! the result, within the commit guard (`commit`). Persist and cache save
//! both call `write_tree`, then `commit` with their own ref (a layer ref,
//! a cache entry). This module knows no
//! runs, jobs or caches: only a tree and a store.

mod commit;
mod feed;
#[cfg(test)]
mod held;
mod manifest_out;
mod ordered;
mod pipeline;
mod reuse;

pub(crate) use commit::{commit, Pending};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::error::Result;
use crate::format::index::IndexedPack;
use crate::format::manifest::{ChunkRef, Totals};
use crate::id::ManifestId;
use crate::repo::{Progress, Store};
use crate::tree::scan::{ScanKind, Scanned, Tree};
use crate::tree::stat_cache::Spill;

use feed::batches;
use manifest_out::{ManifestOut, Written};
use pipeline::ChunkSink;

/// A tree stored: its manifest and what storing it cost.
#[derive(Debug, Clone)]
pub(crate) struct WrittenTree {
    pub manifest: ManifestId,
    pub totals: Totals,
    pub chunks: u64,
    pub chunks_new: u64,
    pub bytes_new: u64,
    pub bytes_written: u64,
    pub packs_written: u64,
    pub files_read: u64,
    pub files_unchanged: u64,
    /// The index object and the manifest's root, for `commit` to write
    /// with the ref.
    pub pending: Pending,
}

/// Persist's steps 3 to 5: stores the scanned `tree`, everything but the
/// ref that will name the result (a layer ref, a cache entry). Refuses to
/// finish once the work has taken half the gc grace period, since gc may
/// then collect chunks it chose to reuse before the ref lands
/// (docs/lifecycle.md).
///
/// Memory (issue 29): the scanned entries are handed to the chunking
/// threads batch by batch and freed once their manifest entries are
/// encoded (`manifest_out`); no manifest is ever held whole, and the stat
/// cache is written from the records spilled as the manifest was.
pub(crate) fn write_tree(store: &Store, tree: Tree, started: Instant) -> Result<WrittenTree> {
    let clock_start = store.now();
    // After the clock starts: reusing a cached file's chunks is a reuse
    // decision like any other, within the commit guard. The cache is not
    // held while the files are read and stored (read again to update it).
    let cache_at = store
        .stat_cache()
        .map(|(dir, trust)| (dir.to_path_buf(), trust));
    let (root, scanned_at) = (tree.root.clone(), tree.scanned_at);
    let walked = tree.walked.clone();
    let unchanged = match &cache_at {
        Some((dir, true)) => reuse::unchanged_files(store, &tree, dir)?,
        _ => None,
    };
    let files_unchanged = unchanged.iter().flatten().filter(|u| u.is_some()).count() as u64;
    let files = tree
        .entries
        .iter()
        .filter(|s| matches!(s.kind, ScanKind::File { .. }))
        .count() as u64;
    // The stat cache's records, spilled as the manifest is written (none
    // if the spill cannot be made: the next run reads its files again).
    let spill = cache_at
        .as_ref()
        .and_then(|(dir, _)| Spill::create(dir).ok());

    let sink = ChunkSink::new(store);
    let (stored, packs) = chunk_tree(store, &sink, tree, unchanged, spill)?;
    let packs_written = packs.len() as u64;
    let pending = Pending::new(packs, (&stored.id, &stored.root), (clock_start, started))
        .carrying(sink.take_last_pack());
    let bytes_written = sink.pack_bytes() + pending.bytes();
    let (chunks_new, bytes_new) = sink.new_content();
    // What the stat cache is built in: the set of chunks added is not
    // needed any more.
    drop(sink);

    pending.guard(store)?;
    if let (Some((dir, _)), Some(records)) = (&cache_at, stored.records) {
        let cache = reuse::Seen {
            root: &root,
            walked: &walked,
            scanned_at,
        };
        cache.save(store, dir, records);
    }
    Ok(WrittenTree {
        manifest: stored.id,
        totals: stored.totals,
        chunks: stored.chunk_refs,
        chunks_new,
        bytes_new,
        bytes_written,
        packs_written,
        files_read: files - files_unchanged,
        files_unchanged,
        pending,
    })
}

/// How many batches may be chunked past the oldest one whose entries are
/// not yet in the manifest, per chunking thread.
const AHEAD_PER_THREAD: usize = 4;

/// Reads and chunks the tree's files in batches on rayon's threads (a file
/// `unchanged` gives chunks for is not read), feeding `sink`'s pools, and
/// writes the manifest from the batches in order as they finish, its
/// encoding stored as chunks too; returns it and the packs written.
fn chunk_tree(
    store: &Store,
    sink: &ChunkSink<'_>,
    mut tree: Tree,
    unchanged: Option<Vec<Option<Vec<ChunkRef>>>>,
    spill: Option<Spill>,
) -> Result<(Written, Vec<IndexedPack>)> {
    let size = |s: &Scanned| match s.kind {
        ScanKind::File { size, .. } => size,
        _ => 0,
    };
    let total_bytes: u64 = tree.entries.iter().map(size).sum();
    // Bytes to read: a large persist yields the CPU to small jobs.
    let to_read: u64 = match &unchanged {
        Some(known) => (tree.entries.iter().zip(known))
            .filter(|(_, u)| u.is_none())
            .map(|(s, _)| size(s))
            .sum(),
        None => total_bytes,
    };
    crate::util::yield_to_small_jobs(to_read);
    let done_bytes = AtomicU64::new(0);
    let observer = store.observer();
    // Each batch takes its entries and its files' known chunk lists
    // (moved, not copied): the whole scan is not held past this point.
    let entries = std::mem::take(&mut tree.entries);
    let ranges = batches(&entries);
    let mut out = ManifestOut::new(&entries, &tree.walked, spill);
    let known = match unchanged {
        Some(known) => ordered::split(known, &ranges),
        None => ranges.iter().map(|_| Vec::new()).collect(),
    };
    let work: Vec<_> = ordered::split(entries, &ranges)
        .into_iter()
        .zip(known)
        .collect();
    drop(ranges);
    let tree = &tree;
    sink.run(|pipe| {
        let ahead = AHEAD_PER_THREAD * rayon::current_num_threads();
        let chunk = |(batch, known): (Vec<Scanned>, Vec<Option<Vec<ChunkRef>>>)| {
            let known = match known.is_empty() {
                true => vec![None; batch.len()],
                false => known,
            };
            let content = pipe.add_batch(tree, &batch, known)?;
            let read: u64 = batch.iter().map(size).sum();
            observer.progress(&Progress {
                command: "persist",
                done_bytes: done_bytes.fetch_add(read, Relaxed) + read,
                total_bytes,
            });
            Ok((batch, content))
        };
        ordered::in_order(work, ahead, chunk, |(batch, content)| {
            out.add(pipe, batch, content)
        })?;
        // The manifest's encoding is stored as chunks, like file content,
        // so what it shares with earlier manifests is not stored again.
        out.finish(pipe)
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::ops::attach::{attach, AttachRequest};
    use crate::ops::persist::{persist, PersistReport, PersistRequest};
    use crate::repo::{Quiet, Store};
    use crate::{Graph, JobName, RunName};

    fn persist_tree(store: &Store, run: &str, root: &Path) -> PersistReport {
        let run = RunName::new(run).unwrap();
        let graph = Graph::from_specs(&["a", "b:a"]).unwrap();
        store.create_run(&run, graph, None).unwrap();
        let req = PersistRequest {
            run,
            job: JobName::new("a").unwrap(),
            root: root.to_path_buf(),
            paths: vec!["t".into()],
            allow_empty: false,
            writer: None,
        };
        persist(store, &req).unwrap()
    }

    fn reads(store: &Store) -> u64 {
        store.local_index().unwrap().lookup_reads()
    }

    // Issue 29: a persist asks about every chunk it reads, and the local
    // index answers each with a probe of the chunk log in memory; sled is
    // read only for frame records (a few per call, whatever the store's
    // size). A persist of new content into stores of two sizes reads sled
    // no more often in the larger; a persist of known content and an
    // attach read it at most once a chunk.
    #[test]
    fn sled_reads_per_chunk_are_bounded_whatever_the_store_size() {
        let dir = tempfile::tempdir().unwrap();
        let tree = |name: &str, files: u64, seed: u64| {
            let root = dir.path().join(name);
            crate::synth::generate_capped(&root.join("t"), files, seed, 4096).unwrap();
            root
        };
        let (small, large) = (tree("small", 500, 1), tree("large", 3000, 2));
        let new = tree("new", 1000, 3);
        let mut per_chunk = Vec::new();
        for (name, held) in [("s1", &small), ("s2", &large)] {
            let store = Store::open(&dir.path().join(name), &Quiet).unwrap();
            persist_tree(&store, "r1", held);
            let before = reads(&store);
            let r = persist_tree(&store, "r2", &new);
            assert!(r.chunks_new * 100 >= r.chunks * 99, "(nearly) all new");
            let read = reads(&store) - before;
            per_chunk.push(read as f64 / r.chunks as f64);
            // Again: every chunk is known now.
            let before = reads(&store);
            let again = persist_tree(&store, "r3", &new);
            assert_eq!(again.chunks_new, 0);
            assert!(
                reads(&store) - before <= again.chunks,
                "at most one a chunk"
            );
            // The attach locates every chunk of the layer.
            let before = reads(&store);
            let req = AttachRequest {
                run: RunName::new("r3").unwrap(),
                job: JobName::new("b").unwrap(),
                at: dir.path().join(format!("{name}-at")),
                keep_setuid: false,
                only: Vec::new(),
            };
            attach(&store, &req).unwrap();
            assert!(
                reads(&store) - before <= again.chunks,
                "at most one a chunk"
            );
        }
        assert!(
            per_chunk.iter().all(|r| *r < 0.01),
            "new chunks are settled without sled: {per_chunk:?}"
        );
    }
}
