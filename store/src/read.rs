//! Reading chunks from the store: locates the wanted chunks in one batch,
//! groups them by pack and frame, takes the frames the runner's cache holds
//! from it, reads each pack's other frames in one request (nearby frames
//! coalesced), decodes each frame once, and checks every chunk against its
//! id before handing it on. Packs are read in parallel; from a network
//! backend with more requests in flight than cores, but decoded, checked
//! and handed on by as many threads as cores (`two_stage`).
//!
//! Attach uses it for file contents and manifests alike. Knows nothing
//! about where the bytes go.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::index::Location;
use crate::format::keys::{manifest_key, pack_key};
use crate::format::manifest::{Manifest, ManifestRoot};
use crate::format::pack::{chunk_of, decode_frame, FrameChunk, FrameRef};
use crate::id::{ChunkId, ManifestId, PackId};
use crate::repo::Store;

pub(crate) mod manifests;
mod two_stage;

/// What a fetch read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fetched {
    pub chunks: u64,
    /// Stored bytes read from the backend.
    pub bytes: u64,
    /// Stored bytes read from the runner's chunk cache instead.
    pub cached_bytes: u64,
}

/// Reads every chunk of `wanted` once and calls `each(id, bytes)` with its
/// verified bytes, from several threads. A chunk the store lacks is
/// reported with `missing(id)`.
pub fn fetch_chunks(
    store: &Store,
    wanted: impl IntoIterator<Item = ChunkId>,
    missing: &(dyn Fn(ChunkId) -> Error + Sync),
    each: &(dyn Fn(ChunkId, &[u8]) -> Result<()> + Sync),
) -> Result<Fetched> {
    fetch_located(
        store,
        &|ids| store.chunk_lookup().locate(ids),
        wanted,
        missing,
        each,
    )
}

/// Finds where chunks are stored, in one batch: the store's chunk lookup,
/// or (for `verify`) a map built from the index objects themselves.
pub type Locate<'a> = dyn Fn(&[ChunkId]) -> Result<Vec<Option<Location>>> + Sync + 'a;

/// `fetch_chunks` with chunk locations from `locate`.
pub fn fetch_located(
    store: &Store,
    locate: &Locate<'_>,
    wanted: impl IntoIterator<Item = ChunkId>,
    missing: &(dyn Fn(ChunkId) -> Error + Sync),
    each: &(dyn Fn(ChunkId, &[u8]) -> Result<()> + Sync),
) -> Result<Fetched> {
    let mut seen = HashSet::new();
    let ids: Vec<ChunkId> = wanted.into_iter().filter(|id| seen.insert(*id)).collect();
    if ids.is_empty() {
        return Ok(Fetched::default());
    }
    let locations = locate(&ids)?;
    let mut packs: BTreeMap<PackId, BTreeMap<FrameRef, Vec<FrameChunk>>> = BTreeMap::new();
    for (id, loc) in ids.iter().zip(locations) {
        let loc = loc.ok_or_else(|| missing(*id))?;
        packs
            .entry(loc.pack)
            .or_default()
            .entry(loc.frame)
            .or_default()
            .push(loc.chunk);
    }
    // One request for whatever each pack needs first (a `strata serve`
    // over S3: its URLs), not one per pack.
    let keys: Vec<String> = packs.keys().map(pack_key).collect();
    store.backend().will_read(&keys)?;
    let counts = Counts::default();
    let read = |(pack, frames): (&PackId, &BTreeMap<FrameRef, Vec<FrameChunk>>)| {
        read_pack(store, pack, frames, &counts, each)
    };
    // Network backends wait on round trips, not on the CPU: keep more
    // requests in flight than there are cores, but decode, verify and
    // write on as many threads as a local read (creating files on eight
    // threads at once contends in the kernel).
    let fetchers = store.backend().parallelism().min(packs.len()).max(1);
    let workers = rayon::current_num_threads();
    if fetchers > workers {
        let packs: Vec<_> = packs.iter().collect();
        two_stage::fetch_then_work(
            &packs,
            fetchers,
            workers,
            |&(pack, frames)| gather(store, pack, frames),
            |gathered| deliver_pack(store, gathered, &counts, each),
        )?;
    } else {
        packs.par_iter().try_for_each(read)?;
    }
    Ok(Fetched {
        chunks: counts.chunks.load(Relaxed),
        bytes: counts.bytes.load(Relaxed),
        cached_bytes: counts.cached.load(Relaxed),
    })
}

#[derive(Default)]
struct Counts {
    chunks: AtomicU64,
    bytes: AtomicU64,
    cached: AtomicU64,
}

/// Reads the wanted frames of one pack: from the runner's cache where it
/// has them, the rest in one request (nearby frames coalesced).
fn read_pack(
    store: &Store,
    pack: &PackId,
    frames: &BTreeMap<FrameRef, Vec<FrameChunk>>,
    counts: &Counts,
    each: &Each<'_>,
) -> Result<()> {
    deliver_pack(store, gather(store, pack, frames)?, counts, each)
}

/// What `deliver`s a chunk's verified bytes to.
type Each<'a> = dyn Fn(ChunkId, &[u8]) -> Result<()> + Sync + 'a;

/// A frame and the chunks wanted from it.
type Wanted<'a> = (&'a FrameRef, &'a Vec<FrameChunk>);

/// One pack's wanted frames as read, not yet decoded: the frames the
/// runner's cache held, with their stored bytes, and the others fetched
/// from the store in coalesced ranges.
struct Gathered<'a> {
    pack: &'a PackId,
    key: String,
    cached: Vec<(Wanted<'a>, Vec<u8>)>,
    fetched: FetchedFrames<'a>,
}

/// Frames read from the store: the frames, the coalesced spans (range,
/// frame indices) and each span's bytes.
struct FetchedFrames<'a> {
    frames: Vec<Wanted<'a>>,
    spans: Vec<(Range<u64>, Range<usize>)>,
    data: Vec<Vec<u8>>,
}

/// Reads the wanted frames of one pack (the I/O, no decoding): from the
/// runner's cache where it has them, the rest in one request.
fn gather<'a>(
    store: &Store,
    pack: &'a PackId,
    frames: &'a BTreeMap<FrameRef, Vec<FrameChunk>>,
) -> Result<Gathered<'a>> {
    let key = pack_key(pack);
    let mut cached = Vec::new();
    let mut remote = Vec::new();
    for wanted in frames {
        let stored = store
            .frame_cache()
            .as_ref()
            .and_then(|c| c.get(pack, wanted.0));
        match stored {
            Some(stored) => cached.push((wanted, stored)),
            None => remote.push(wanted),
        }
    }
    let fetched = fetch_frames(store, &key, remote)?;
    Ok(Gathered {
        pack,
        key,
        cached,
        fetched,
    })
}

/// Reads `frames` (offset-sorted) of the pack at `key`, nearby frames
/// coalesced, in one request (none if there is none to read).
fn fetch_frames<'a>(
    store: &Store,
    key: &str,
    frames: Vec<Wanted<'a>>,
) -> Result<FetchedFrames<'a>> {
    let spans = coalesce(&frames, store.backend().coalesce_gap());
    let ranges: Vec<Range<u64>> = spans.iter().map(|(r, _)| r.clone()).collect();
    let data = match ranges.is_empty() {
        true => Vec::new(),
        false => store.backend().get_ranges(key, &ranges)?,
    };
    Ok(FetchedFrames {
        frames,
        spans,
        data,
    })
}

/// Decodes, checks and hands on a gathered pack's chunks. A bad cached
/// frame is dropped from the cache and read again from the store.
fn deliver_pack(store: &Store, g: Gathered<'_>, counts: &Counts, each: &Each<'_>) -> Result<()> {
    let mut bad = Vec::new();
    for ((frame, wanted), stored) in &g.cached {
        match deliver(frame, stored, wanted, &g.key, counts, each) {
            Ok(()) => {
                counts.cached.fetch_add(stored.len() as u64, Relaxed);
            }
            // An error from `each` is the caller's and stands.
            Err(Delivery::Bad(_)) => {
                if let Some(c) = &store.frame_cache() {
                    c.remove(g.pack, frame);
                }
                bad.push((*frame, *wanted));
            }
            Err(Delivery::Each(e)) => return Err(e),
        }
    }
    deliver_fetched(store, g.pack, &g.key, &g.fetched, counts, each)?;
    if !bad.is_empty() {
        let again = fetch_frames(store, &g.key, bad)?;
        deliver_fetched(store, g.pack, &g.key, &again, counts, each)?;
    }
    Ok(())
}

/// Decodes, checks and hands on the chunks of frames read from the store,
/// keeping each good frame in the runner's cache.
fn deliver_fetched(
    store: &Store,
    pack: &PackId,
    key: &str,
    fetched: &FetchedFrames<'_>,
    counts: &Counts,
    each: &Each<'_>,
) -> Result<()> {
    for ((range, members), bytes) in fetched.spans.iter().zip(&fetched.data) {
        counts.bytes.fetch_add(bytes.len() as u64, Relaxed);
        for (frame, wanted) in &fetched.frames[members.clone()] {
            let start = (frame.offset as u64 - range.start) as usize;
            let stored = bytes
                .get(start..start + frame.stored_len as usize)
                .ok_or_else(|| Error::corrupt(key.to_string(), "a range came back short"))?;
            match deliver(frame, stored, wanted, key, counts, each) {
                Ok(()) => {
                    if let Some(c) = &store.frame_cache() {
                        c.put(pack, frame, stored);
                    }
                }
                Err(Delivery::Bad(e) | Delivery::Each(e)) => return Err(e),
            }
        }
    }
    Ok(())
}

enum Delivery {
    /// The frame is corrupt.
    Bad(Error),
    /// The caller's `each` failed.
    Each(Error),
}

/// Decodes a frame, checks every wanted chunk against its id, then hands
/// them to `each` (only once all are good, so a bad frame delivers none).
fn deliver(
    frame: &FrameRef,
    stored: &[u8],
    wanted: &[FrameChunk],
    key: &str,
    counts: &Counts,
    each: &(dyn Fn(ChunkId, &[u8]) -> Result<()> + Sync),
) -> std::result::Result<(), Delivery> {
    // A frame that does not decode is reported against the first chunk
    // wanted from it, so errors always name one.
    let raw = decode_frame(frame, stored, key).map_err(|e| {
        Delivery::Bad(Error::CorruptChunk {
            chunk: wanted[0].id,
            object: key.to_string(),
            detail: e.to_string(),
        })
    })?;
    let chunks = wanted
        .iter()
        .map(|c| chunk_of(&raw, c, key).map(|b| (c.id, b)))
        .collect::<Result<Vec<_>>>()
        .map_err(Delivery::Bad)?;
    for (id, bytes) in chunks {
        each(id, bytes).map_err(Delivery::Each)?;
        counts.chunks.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// Loads a manifest: its root object, then the chunks of its encoding.
/// Returns it with the bytes read.
pub fn load_manifest(store: &Store, id: &ManifestId) -> Result<(Manifest, u64)> {
    load_manifest_located(store, &|ids| store.chunk_lookup().locate(ids), id)
}

/// `load_manifest` with chunk locations from `locate`.
pub fn load_manifest_located(
    store: &Store,
    locate: &Locate<'_>,
    id: &ManifestId,
) -> Result<(Manifest, u64)> {
    let (mut bodies, read) = manifest_bodies(store, locate, std::slice::from_ref(id), u64::MAX)?;
    let body = bodies.pop().expect("one body per id");
    Ok((Manifest::decode(id, &body)?, read))
}

/// The encodings of the manifests `ids`, in order: each root object,
/// then the chunks of all of them in one fetch (a chunk several of them
/// hold is read and checked once). Returns them with the bytes read;
/// `TooLarge` before any chunk is read if the roots declare more than
/// `most` bytes in all.
pub fn manifest_bodies(
    store: &Store,
    locate: &Locate<'_>,
    ids: &[ManifestId],
    most: u64,
) -> Result<(Vec<Vec<u8>>, u64)> {
    let (bodies, _, read) = bodies_and_roots(store, locate, ids, most)?;
    Ok((bodies, read))
}

/// A manifest and its root object (whose chunks store its encoding).
pub fn load_manifest_and_root(store: &Store, id: &ManifestId) -> Result<(Manifest, ManifestRoot)> {
    let locate = |ids: &[ChunkId]| store.chunk_lookup().locate(ids);
    let (mut bodies, mut roots, _) =
        bodies_and_roots(store, &locate, std::slice::from_ref(id), u64::MAX)?;
    let body = bodies.pop().expect("one body per id");
    Ok((
        Manifest::decode(id, &body)?,
        roots.pop().expect("one root per id"),
    ))
}

/// `manifest_bodies`, with the manifests' root objects.
fn bodies_and_roots(
    store: &Store,
    locate: &Locate<'_>,
    ids: &[ManifestId],
    most: u64,
) -> Result<(Vec<Vec<u8>>, Vec<ManifestRoot>, u64)> {
    let roots: Vec<Vec<u8>> = ids
        .par_iter()
        .map(|id| store.backend().get(&manifest_key(id)))
        .collect::<Result<_>>()?;
    let mut read: u64 = roots.iter().map(|r| r.len() as u64).sum();
    // Where each chunk goes: (manifest, offset) for every place it fills.
    let mut places: HashMap<ChunkId, Vec<(usize, usize)>> = HashMap::new();
    let mut bodies = Vec::with_capacity(ids.len());
    let mut decoded = Vec::with_capacity(ids.len());
    for (m, (id, bytes)) in ids.iter().zip(&roots).enumerate() {
        let root = ManifestRoot::decode(id, bytes)?;
        let mut at = 0usize;
        for c in &root.chunks {
            places.entry(c.id).or_default().push((m, at));
            at += c.len as usize;
        }
        bodies.push(root.len);
        decoded.push(root);
    }
    let total: u64 = bodies.iter().sum();
    if total > most {
        return Err(Error::TooLarge {
            detail: format!("manifests of {total} bytes, more than {most} at once"),
        });
    }
    let bodies: Vec<Mutex<Vec<u8>>> = bodies
        .into_iter()
        .map(|len| Mutex::new(vec![0u8; len as usize]))
        .collect();
    // A chunk is named in the error by the first manifest that holds it.
    let fetched = fetch_located(
        store,
        locate,
        places.keys().copied(),
        &|chunk| Error::MissingChunk {
            chunk,
            path: format!("manifest {}", ids[places[&chunk][0].0]),
        },
        &|chunk, bytes| {
            for &(m, o) in &places[&chunk] {
                let mut body = bodies[m].lock().expect("poisoned");
                let place = body.get_mut(o..o + bytes.len()).ok_or_else(|| {
                    Error::corrupt(manifest_key(&ids[m]), "chunk lengths do not add up")
                })?;
                place.copy_from_slice(bytes);
            }
            Ok(())
        },
    )?;
    read += fetched.bytes;
    let bodies = bodies
        .into_iter()
        .map(|b| b.into_inner().expect("poisoned"))
        .collect();
    Ok((bodies, decoded, read))
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
mod threads_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::Compression;

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
