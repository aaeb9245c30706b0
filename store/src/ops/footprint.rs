//! What each live run and cache entry holds in the store: the stored bytes
//! of the chunks it alone references (what dropping it would free) and of
//! those it shares with others. gc's storage budget (`ops::gc::budget`)
//! evicts by these figures, and `strata ls --sizes` shows them.
//!
//! A chunk's stored bytes are its share of its frame as the index locates
//! it: the frame's stored length times the chunk's part of the frame's
//! decoded length (a frame compresses its chunks together, so no finer
//! figure exists). A holder's chunks are those of its manifests' files and
//! of the manifests' own encodings.
//!
//! This module decides nothing and deletes nothing: it counts. It knows
//! nothing about packs beyond their trailers' frame tables.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::format::manifest::EntryKind;
use crate::format::pack::FrameEntry;
use crate::id::{ChunkId, ManifestId, RunName};
use crate::read::load_manifest_and_root;
use crate::repo::Store;

/// What holds chunks: a run's workspace or a dependency cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderName {
    /// A run: all of its jobs' layers.
    Run(RunName),
    /// A cache entry: its key, and the object that records it.
    Cache {
        /// The cache key, as the user wrote it.
        key: String,
        /// The entry's object key.
        object: String,
    },
}

impl std::fmt::Display for HolderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HolderName::Run(r) => write!(f, "run {r}"),
            HolderName::Cache { key, .. } => write!(f, "cache {key:?}"),
        }
    }
}

/// A live run or cache entry, as gc's expiry step leaves it.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Which.
    pub name: HolderName,
    /// Its last use (Unix seconds): creation, a job's finish, an attach,
    /// a save or a restore.
    pub last_use: i64,
    /// The manifests it references.
    pub manifests: Vec<ManifestId>,
}

/// One holder's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footprint {
    /// Which.
    pub name: HolderName,
    /// Its last use (Unix seconds).
    pub last_use: i64,
    /// Stored bytes of the chunks only it references: what dropping it
    /// frees once gc has reclaimed them.
    pub exclusive_bytes: u64,
    /// Stored bytes of the chunks it references that others do too.
    pub shared_bytes: u64,
}

/// Every holder's chunks, and how many holders reference each chunk.
#[derive(Debug)]
pub struct Usage {
    holders: Vec<Holder>,
    /// Per holder, the indices (into `stored`) of its distinct chunks.
    chunks_of: Vec<Vec<u32>>,
    /// Per chunk index: its stored bytes.
    stored: Vec<u64>,
    /// Per chunk index: how many holders (not dropped) reference it.
    count: Vec<u32>,
    ids: Vec<ChunkId>,
    dropped: Vec<bool>,
    live_bytes: u64,
}

impl Usage {
    /// Reads `holders`' manifests, each once, and counts which holders
    /// reference each chunk. Every chunk's stored bytes count 0 until
    /// `price` gives them.
    pub fn build(store: &Store, holders: Vec<Holder>) -> Result<Usage> {
        let mut index: HashMap<ChunkId, u32> = HashMap::new();
        let mut ids = Vec::new();
        let mut of_manifest: HashMap<ManifestId, Vec<u32>> = HashMap::new();
        let mut chunks_of = Vec::with_capacity(holders.len());
        for h in &holders {
            let mut mine: Vec<u32> = Vec::new();
            for m in &h.manifests {
                if !of_manifest.contains_key(m) {
                    let list = manifest_chunks(store, m)?
                        .into_iter()
                        .map(|c| {
                            *index.entry(c).or_insert_with(|| {
                                ids.push(c);
                                (ids.len() - 1) as u32
                            })
                        })
                        .collect();
                    of_manifest.insert(*m, list);
                }
                mine.extend_from_slice(&of_manifest[m]);
            }
            mine.sort_unstable();
            mine.dedup();
            chunks_of.push(mine);
        }
        let mut count = vec![0u32; ids.len()];
        for mine in &chunks_of {
            for &c in mine {
                count[c as usize] += 1;
            }
        }
        Ok(Usage {
            dropped: vec![false; holders.len()],
            holders,
            chunks_of,
            stored: vec![0; ids.len()],
            count,
            ids,
            live_bytes: 0,
        })
    }

    /// Gives each chunk its stored bytes (`stored_shares`); a chunk
    /// `stored` lacks counts 0.
    pub fn price(&mut self, stored: &HashMap<ChunkId, u64>) {
        self.stored = self
            .ids
            .iter()
            .map(|c| stored.get(c).copied().unwrap_or(0))
            .collect();
        self.live_bytes = self
            .stored
            .iter()
            .zip(&self.count)
            .filter(|(_, n)| **n > 0)
            .map(|(b, _)| b)
            .sum();
    }

    /// The holders, in the order given.
    pub fn holders(&self) -> &[Holder] {
        &self.holders
    }

    /// Stored bytes of every chunk some holder not dropped references.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Holder `i`'s figures as things stand (dropped holders no longer
    /// share anything).
    pub fn footprint(&self, i: usize) -> Footprint {
        let (mut exclusive_bytes, mut shared_bytes) = (0, 0);
        for &c in &self.chunks_of[i] {
            match self.count[c as usize] {
                1 => exclusive_bytes += self.stored[c as usize],
                _ => shared_bytes += self.stored[c as usize],
            }
        }
        Footprint {
            name: self.holders[i].name.clone(),
            last_use: self.holders[i].last_use,
            exclusive_bytes,
            shared_bytes,
        }
    }

    /// Drops holder `i`: its chunks no longer count for it. Returns the
    /// stored bytes that no holder references any more (what it held
    /// alone at this point).
    pub fn drop_holder(&mut self, i: usize) -> u64 {
        if self.dropped[i] {
            return 0;
        }
        self.dropped[i] = true;
        let mut freed = 0;
        for &c in &self.chunks_of[i] {
            let n = &mut self.count[c as usize];
            *n -= 1;
            if *n == 0 {
                freed += self.stored[c as usize];
            }
        }
        self.live_bytes -= freed;
        freed
    }

    /// Whether holder `i` was dropped.
    pub fn is_dropped(&self, i: usize) -> bool {
        self.dropped[i]
    }

    /// Every chunk some holder not dropped references.
    pub fn live_chunks(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.ids
            .iter()
            .zip(&self.count)
            .filter(|(_, n)| **n > 0)
            .map(|(id, _)| *id)
    }
}

/// A manifest's chunks: its files' and its own encoding's.
pub fn manifest_chunks(store: &Store, id: &ManifestId) -> Result<Vec<ChunkId>> {
    let (manifest, root) = load_manifest_and_root(store, id)?;
    let mut out: Vec<ChunkId> = root.chunks.iter().map(|c| c.id).collect();
    for e in &manifest.entries {
        if let EntryKind::File { chunks, .. } = &e.kind {
            out.extend(chunks.iter().map(|c| c.id));
        }
    }
    Ok(out)
}

/// Each chunk's stored bytes in the pack the index locates it in, from
/// the packs' frame tables: per pack, its frames and, per chunk in frame
/// order, whether the index locates that chunk there.
pub fn stored_shares<'a>(
    packs: impl IntoIterator<Item = (&'a [FrameEntry], &'a [bool])>,
) -> HashMap<ChunkId, u64> {
    let mut out = HashMap::new();
    for (frames, located) in packs {
        let chunks = frames
            .iter()
            .flat_map(|f| f.chunks.iter().map(move |c| (f, c)));
        for ((f, c), here) in chunks.zip(located) {
            if *here {
                out.insert(c.id, share(f, c.len));
            }
        }
    }
    out
}

/// A chunk of `len` decoded bytes' share of frame `f`'s stored bytes.
fn share(f: &FrameEntry, len: u32) -> u64 {
    match f.raw_len {
        0 => 0,
        raw => (u64::from(f.stored_len) * u64::from(len)).div_ceil(u64::from(raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunks_share_is_its_part_of_the_frame() {
        let f = FrameEntry {
            offset: 0,
            stored_len: 1000,
            raw_len: 4000,
            compression: crate::format::pack::Compression::Zstd,
            chunks: Vec::new(),
        };
        assert_eq!(share(&f, 1000), 250);
        assert_eq!(share(&f, 4000), 1000);
        // Rounded up: the shares of a frame's chunks cover it.
        assert_eq!(share(&f, 1), 1);
    }
}
