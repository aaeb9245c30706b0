//! Loading a manifest as a stream of entries (issue 29): its root object,
//! then its encoding's chunks in order, in batches of about 4 MiB, each
//! batch fetched (and its chunks checked) when the reader reaches it. The
//! first batch is fetched when the stream is opened, so an attach that
//! opens its layers side by side still waits for one round of requests
//! for all of them (most manifests are one batch); a larger manifest costs
//! a round of requests per later batch, and holds one batch, not its
//! whole encoding.
//!
//! This module knows where the bytes come from; decoding and checking
//! them is `format::manifest_stream`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::format::keys::manifest_key;
use crate::format::manifest::{ChunkRef, ManifestRoot};
use crate::format::manifest_stream::EntryStream;
use crate::id::{ChunkId, ManifestId};
use crate::read::fetch_located;
use crate::repo::Store;

/// The most bytes of a manifest's encoding fetched and held at once
/// (a batch is at least one chunk).
pub(crate) const BATCH_BYTES: u64 = 4 << 20;

/// A manifest's entries, read as they are fetched.
pub(crate) type ManifestStream<'s> = EntryStream<Batches<'s>, Vec<u8>>;

/// Opens manifest `id` as a stream: its root and first batch are read
/// now; `read` counts the bytes read from the store, now and later. A
/// `body` already fetched (the whole encoding, from a `layers` answer) is
/// read from instead; it is checked against `id` all the same.
pub(crate) fn open_manifest<'s>(
    store: &'s Store,
    id: &ManifestId,
    body: Option<Vec<u8>>,
    read: &'s AtomicU64,
) -> Result<ManifestStream<'s>> {
    if let Some(body) = body {
        read.fetch_add(body.len() as u64, Relaxed);
        let whole = Batches {
            store,
            id: *id,
            chunks: Vec::new(),
            next: 0,
            first: Some(body),
            read,
        };
        return Ok(EntryStream::new(*id, whole));
    }
    let root_bytes = store.backend().get(&manifest_key(id))?;
    read.fetch_add(root_bytes.len() as u64, Relaxed);
    let root = ManifestRoot::decode(id, &root_bytes)?;
    let mut batches = Batches {
        store,
        id: *id,
        chunks: root.chunks,
        next: 0,
        first: None,
        read,
    };
    batches.first = batches.fetch_next()?;
    Ok(EntryStream::new(*id, batches))
}

/// The encoding's bytes, a batch of chunks at a time, in order.
pub(crate) struct Batches<'s> {
    store: &'s Store,
    id: ManifestId,
    chunks: Vec<ChunkRef>,
    /// The first chunk not fetched yet.
    next: usize,
    /// The batch fetched at opening, not yet handed out.
    first: Option<Vec<u8>>,
    read: &'s AtomicU64,
}

impl Batches<'_> {
    /// Fetches the next batch's chunks into one buffer, each at its place.
    fn fetch_next(&mut self) -> Result<Option<Vec<u8>>> {
        let start = self.next;
        let mut len = 0u64;
        while let Some(c) = self.chunks.get(self.next) {
            if self.next > start && len + c.len as u64 > BATCH_BYTES {
                break;
            }
            len += c.len as u64;
            self.next += 1;
        }
        let batch = &self.chunks[start..self.next];
        if batch.is_empty() {
            return Ok(None);
        }
        let mut offsets: HashMap<ChunkId, Vec<usize>> = HashMap::new();
        let mut at = 0usize;
        for c in batch {
            offsets.entry(c.id).or_default().push(at);
            at += c.len as usize;
        }
        let body = Mutex::new(vec![0u8; len as usize]);
        let id = self.id;
        let store = self.store;
        let fetched = fetch_located(
            store,
            &|ids| store.chunk_lookup().locate(ids),
            batch.iter().map(|c| c.id),
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
        self.read.fetch_add(fetched.bytes, Relaxed);
        Ok(Some(body.into_inner().expect("poisoned")))
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        match self.first.take() {
            Some(first) => Some(Ok(first)),
            None => self.fetch_next().transpose(),
        }
    }
}
