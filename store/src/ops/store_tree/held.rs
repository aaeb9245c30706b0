//! Issue 29's test that a persist never holds its manifest whole: what
//! storing a scanned tree of 10^5 files holds at once, on all the threads
//! it works on, against what the tree's manifest takes decoded.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::format::manifest::{ChunkRef, Entry, EntryKind};
use crate::id::ChunkId;
use crate::repo::{Quiet, Store};
use crate::testing::heap::{join_group, measure, measure_group};
use crate::tree::scan::{scan, ScanKind, Tree};

/// `files` files of a few bytes each (distinct), 1,000 to a directory,
/// under `root/t`.
fn small_files(root: &Path, files: u32) {
    for i in 0..files {
        let dir = root.join(format!("t/d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("f{i:06}")), i.to_string()).unwrap();
    }
}

/// What the tree's manifest takes decoded (its entries, exactly sized,
/// their paths and their one-chunk lists), measured with the counting
/// allocator.
fn decoded_bytes(tree: &Tree) -> u64 {
    let (entries, _, held) = measure(|| {
        let mut entries = Vec::with_capacity(tree.entries.len());
        entries.extend(tree.entries.iter().map(|s| Entry {
            path: s.rel.clone(),
            mode: s.mode,
            mtime: s.mtime,
            kind: match &s.kind {
                ScanKind::File { size, .. } => EntryKind::File {
                    size: *size,
                    chunks: vec![ChunkRef {
                        id: ChunkId([0; 32]),
                        len: *size as u32,
                    }],
                },
                _ => EntryKind::Dir,
            },
        }));
        entries
    });
    drop(entries);
    held
}

/// Issue 29: storing a scanned tree of 10^5 files holds, on its threads
/// together, under a fifth of the bytes its manifest takes decoded, beyond
/// the scanned tree it is given (which it frees as it goes). The store
/// already holds the files' content (a persist next with a cold stat
/// cache, which has a stat cache to write): what a persist holds per new
/// chunk (the index object's records, the set of chunks added, the chunk
/// log's table) is not the manifest's. Before, the manifest was built
/// whole from the scanned tree, then encoded, then recorded in the stat
/// cache: that held more than the whole decoded manifest.
#[test]
fn storing_100000_files_never_holds_the_manifest_whole() {
    let dir = tempfile::tempdir().unwrap();
    let files = 100_000;
    small_files(dir.path(), files);
    let store = |cache: &str| {
        Store::open(&dir.path().join("store"), &Quiet)
            .unwrap()
            .with_stat_cache(dir.path().join(cache), true)
    };
    let first = scan(dir.path(), &[PathBuf::from("t")], false).unwrap();
    super::write_tree(&store("cache-1"), first, Instant::now()).unwrap();
    let store = store("cache-2");
    let tree = scan(dir.path(), &[PathBuf::from("t")], false).unwrap();
    assert_eq!(tree.entries.len(), files as usize + 101);
    let decoded = decoded_bytes(&tree);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(|_| join_group(true))
        .build()
        .unwrap();
    let (written, peak) =
        measure_group(|| pool.install(|| super::write_tree(&store, tree, Instant::now())));
    let written = written.unwrap();
    assert_eq!(written.totals.files, files as u64);
    assert_eq!((written.files_read, written.chunks_new), (files as u64, 0));
    eprintln!("storing held {peak} bytes at most; the manifest decoded takes {decoded}");
    let bound = decoded / 5;
    assert!(peak < bound, "storing held {peak} bytes, over {bound}");
}
