//! What dedup saved, run by run: each run's bytes of file content
//! (logical) beside what its chunks added to the store when it was the
//! first run to hold them (stored: each such chunk at its frame's
//! compression ratio, from the index's frame records, so from pack sizes).
//! Runs are taken in creation order, so a chunk counts for the first run
//! that holds it. The store keeps no history of its size; this is worked
//! out from the runs it holds now (an expired run counts for nothing).

use std::collections::HashSet;

use crate::error::Result;
use crate::id::RunName;
use crate::ops::stats::{list_run, list_store};
use crate::read::load_manifest;
use crate::repo::Store;

/// One run's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunBytes {
    /// The run.
    pub run: RunName,
    /// When it was created (Unix seconds).
    pub created: i64,
    /// Bytes of file content of its layers.
    pub logical: u64,
    /// Bytes of packs its new chunks take (compressed).
    pub stored: u64,
}

/// Every live run's bytes, oldest first. Reads every manifest of every
/// run: for a page, not for a hot path.
pub fn run_bytes(store: &Store) -> Result<Vec<RunBytes>> {
    let mut runs = list_store(store)?.runs;
    runs.retain(|r| !r.expired);
    runs.sort_by(|a, b| (a.created, &a.run).cmp(&(b.created, &b.run)));
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let mut new = Vec::new();
        for job in list_run(store, &r.run, None)?.jobs {
            for layer in job.layers {
                let (m, _) = load_manifest(store, &layer.manifest)?;
                for c in m.entries.iter().flat_map(|e| e.kind.chunks()) {
                    if seen.insert(c.id) {
                        new.push(*c);
                    }
                }
            }
        }
        let ids: Vec<_> = new.iter().map(|c| c.id).collect();
        let located = store.chunk_lookup().locate(&ids)?;
        let stored = new
            .iter()
            .zip(located)
            .filter_map(|(c, l)| {
                let f = l?.frame;
                Some(u64::from(c.len) * u64::from(f.stored_len) / u64::from(f.raw_len.max(1)))
            })
            .sum();
        out.push(RunBytes {
            run: r.run,
            created: r.created,
            logical: r.bytes,
            stored,
        });
    }
    Ok(out)
}
