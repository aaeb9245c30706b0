//! Reading chunks from the store: groups the wanted chunks by pack and
//! frame, reads each pack's frames in one request (nearby frames
//! coalesced), decodes each frame once, and checks every chunk against its
//! id before handing it on. Packs are read in parallel.
//!
//! Attach uses it for file contents and manifests alike. Knows nothing
//! about where the bytes go.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::id::{ChunkId, ManifestId, PackId};
use crate::index::{pack_key, Location};
use crate::manifest::{manifest_key, Manifest, ManifestRoot};
use crate::pack::{chunk_of, decode_frame, FrameChunk, FrameRef};
use crate::store::Store;

/// What a fetch read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fetched {
    pub chunks: u64,
    /// Stored bytes read from the backend.
    pub bytes: u64,
}

/// Reads every chunk of `wanted` once and calls `each(id, bytes)` with its
/// verified bytes, from several threads. A chunk the index lacks is
/// reported with `missing(id)`.
pub fn fetch_chunks(
    store: &Store,
    wanted: impl IntoIterator<Item = ChunkId>,
    missing: &(dyn Fn(ChunkId) -> Error + Sync),
    each: &(dyn Fn(ChunkId, &[u8]) -> Result<()> + Sync),
) -> Result<Fetched> {
    fetch_located(store, &|id| store.index.get(id), wanted, missing, each)
}

/// Finds where a chunk is stored: the local index, or (for `verify`) a map
/// built from the index objects themselves.
pub type Locate<'a> = dyn Fn(&ChunkId) -> Result<Option<Location>> + Sync + 'a;

/// `fetch_chunks` with chunk locations from `locate`.
pub fn fetch_located(
    store: &Store,
    locate: &Locate<'_>,
    wanted: impl IntoIterator<Item = ChunkId>,
    missing: &(dyn Fn(ChunkId) -> Error + Sync),
    each: &(dyn Fn(ChunkId, &[u8]) -> Result<()> + Sync),
) -> Result<Fetched> {
    let mut packs: BTreeMap<PackId, BTreeMap<FrameRef, Vec<FrameChunk>>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for id in wanted {
        if !seen.insert(id) {
            continue;
        }
        let loc = locate(&id)?.ok_or_else(|| missing(id))?;
        packs
            .entry(loc.pack)
            .or_default()
            .entry(loc.frame)
            .or_default()
            .push(loc.chunk);
    }
    let chunks = AtomicU64::new(0);
    let bytes_read = AtomicU64::new(0);
    packs.par_iter().try_for_each(|(pack, frames)| {
        let key = pack_key(pack);
        let frames: Vec<(&FrameRef, &Vec<FrameChunk>)> = frames.iter().collect();
        let spans = coalesce(&frames, store.backend.coalesce_gap());
        let ranges: Vec<Range<u64>> = spans.iter().map(|(r, _)| r.clone()).collect();
        let data = store.backend.get_ranges(&key, &ranges)?;
        for ((range, members), bytes) in spans.iter().zip(&data) {
            bytes_read.fetch_add(bytes.len() as u64, Relaxed);
            for (frame, wanted) in &frames[members.clone()] {
                let start = (frame.offset as u64 - range.start) as usize;
                let stored = &bytes[start..start + frame.stored_len as usize];
                // A frame that does not decode is reported against the
                // first chunk wanted from it, so errors always name one.
                let raw = decode_frame(frame, stored, &key).map_err(|e| Error::CorruptChunk {
                    chunk: wanted[0].id,
                    object: key.clone(),
                    detail: e.to_string(),
                })?;
                for c in wanted.iter() {
                    each(c.id, chunk_of(&raw, c, &key)?)?;
                    chunks.fetch_add(1, Relaxed);
                }
            }
        }
        Ok::<(), Error>(())
    })?;
    Ok(Fetched {
        chunks: chunks.load(Relaxed),
        bytes: bytes_read.load(Relaxed),
    })
}

/// Loads a manifest: its root object, then the chunks of its encoding.
/// Returns it with the bytes read.
pub fn load_manifest(store: &Store, id: &ManifestId) -> Result<(Manifest, u64)> {
    load_manifest_located(store, &|c| store.index.get(c), id)
}

/// `load_manifest` with chunk locations from `locate`.
pub fn load_manifest_located(
    store: &Store,
    locate: &Locate<'_>,
    id: &ManifestId,
) -> Result<(Manifest, u64)> {
    let key = manifest_key(id);
    let root_bytes = store.backend.get(&key)?;
    let root = ManifestRoot::decode(id, &root_bytes)?;
    let mut offsets: HashMap<ChunkId, Vec<usize>> = HashMap::new();
    let mut at = 0usize;
    for c in &root.chunks {
        offsets.entry(c.id).or_default().push(at);
        at += c.len as usize;
    }
    let body = Mutex::new(vec![0u8; root.len as usize]);
    let fetched = fetch_located(
        store,
        locate,
        root.chunks.iter().map(|c| c.id),
        &|chunk| Error::MissingChunk {
            chunk,
            path: format!("manifest {id}"),
        },
        &|chunk, bytes| {
            let mut body = body.lock().expect("poisoned");
            for &o in &offsets[&chunk] {
                body[o..o + bytes.len()].copy_from_slice(bytes);
            }
            Ok(())
        },
    )?;
    let manifest = Manifest::decode(id, &body.into_inner().expect("poisoned"))?;
    Ok((manifest, root_bytes.len() as u64 + fetched.bytes))
}

/// Groups offset-sorted frames into read ranges: (range, frame indices).
fn coalesce<T>(frames: &[(&FrameRef, T)], gap: u64) -> Vec<(Range<u64>, Range<usize>)> {
    let mut spans: Vec<(Range<u64>, Range<usize>)> = Vec::new();
    for (i, (f, _)) in frames.iter().enumerate() {
        let (start, end) = (f.offset as u64, f.offset as u64 + f.stored_len as u64);
        match spans.last_mut() {
            Some((r, m)) if start <= r.end + gap => {
                r.end = r.end.max(end);
                m.end = i + 1;
            }
            _ => spans.push((start..end, i..i + 1)),
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Compression;

    #[test]
    fn coalesces_nearby_frames_only() {
        let f = |offset, stored_len| FrameRef {
            offset,
            stored_len,
            raw_len: 1,
            compression: Compression::Raw,
        };
        let (a, b, c) = (f(12, 100), f(112, 50), f(1 << 20, 10));
        let frames = [(&a, ()), (&b, ()), (&c, ())];
        let spans = coalesce(&frames, 64 << 10);
        assert_eq!(
            spans,
            vec![(12..162, 0..2), ((1 << 20)..(1 << 20) + 10, 2..3)]
        );
        // Adjacent frames are one read even with no gap allowed.
        assert_eq!(coalesce(&frames, 0).len(), 2);
    }
}
