//! Step 5 and the ref: once the packs are stored, the index object
//! listing them and the manifest's root, then the ref that names the
//! manifest (a layer ref, a cache entry), within the commit guard. The
//! backend sends them in one round trip where it can (`put_then`: a
//! `strata serve` with the `objects` feature), and then the last pack
//! rides ahead of them (`LastPack`); else the index and the root at once
//! and then the ref. Knows no runs, jobs or caches: the ref
//! comes as a key and its bytes.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::keys::{index_key, index_log_key, manifest_key};
use crate::format::manifest::ManifestRoot;
use crate::id::{IndexId, ManifestId};
use crate::repo::Store;

use super::pipeline::LastPack;

/// What a stored tree still has to write: the index object (if any pack
/// is new) and the manifest's root, and when the work started, by the
/// store's clock and this process's (the commit guard's).
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// The last pack, when the pipeline left it for the commit to store
    /// ahead of the index object (`pipeline::LastPack`).
    last_pack: Option<LastPack>,
    index: Option<(IndexId, Vec<u8>, IndexObject)>,
    root_key: String,
    root_bytes: Vec<u8>,
    clock_start: i64,
    started: Instant,
}

impl Pending {
    pub(super) fn new(
        packs: Vec<IndexedPack>,
        (manifest, root): (&ManifestId, &ManifestRoot),
        (clock_start, started): (i64, Instant),
    ) -> Self {
        let index = (!packs.is_empty()).then(|| {
            let object = IndexObject { packs };
            let (id, bytes) = object.encode();
            (id, bytes, object)
        });
        Pending {
            last_pack: None,
            index,
            root_key: manifest_key(manifest),
            root_bytes: root.encode(),
            clock_start,
            started,
        }
    }

    /// The bytes the index object and the root take.
    pub(super) fn bytes(&self) -> u64 {
        self.root_bytes.len() as u64 + self.index.as_ref().map_or(0, |(_, b, _)| b.len() as u64)
    }

    /// The commit stores `pack` first (already listed by the index object,
    /// and counted as written by the pipeline).
    pub(super) fn carrying(self, last_pack: Option<LastPack>) -> Self {
        Pending { last_pack, ..self }
    }

    /// Refuses to go on once the work has taken half the gc grace period
    /// (`commit_guard`).
    pub(super) fn guard(&self, store: &Store) -> Result<()> {
        commit_guard(store, self.clock_start, self.started)
    }
}

/// Writes the index object and the root (both name only what is stored
/// already, and nothing names them until the ref does), then the ref
/// (`key`, `bytes`): the one moment the tree becomes visible. Only within
/// half the grace period of the start: an index object never lists a pack
/// gc deleted before it was written (docs/format.md, the index log), and
/// no ref names chunks gc may have taken.
pub(crate) fn commit(store: &Store, pending: Pending, (key, bytes): (&str, &[u8])) -> Result<()> {
    pending.guard(store)?;
    let index_key = pending
        .index
        .as_ref()
        .map(|(id, _, _)| match store.config().has_index_log() {
            true => index_log_key(id, store.now()),
            false => index_key(id),
        });
    let mut first: Vec<(&str, &[u8])> = Vec::with_capacity(3);
    // Only where the backend stores these in order: the pack before the
    // index object that names it.
    if let Some(p) = &pending.last_pack {
        first.push((&p.key, &p.bytes));
    }
    if let (Some(k), Some((_, b, _))) = (&index_key, &pending.index) {
        first.push((k, b));
    }
    // Content-addressed, so writing the root again when the store has it
    // is harmless, and cheaper than asking first.
    first.push((&pending.root_key, &pending.root_bytes));
    // Checked again just before the ref goes: writing the index object
    // and the root may have taken long (a stalled store).
    store
        .backend()
        .put_then(&first, (key, bytes), &|| pending.guard(store))?;
    if let Some(p) = &pending.last_pack {
        store
            .chunk_lookup()
            .add_pack(&p.pack.pack, &p.pack.frames)?;
    }
    if let Some((id, _, object)) = &pending.index {
        store.chunk_lookup().add(id, object)?;
    }
    Ok(())
}

/// A persist must commit within the grace period of its first reuse
/// decision; it checks before the ref (and before the index object) against
/// half of it, so the other half covers the moment between this check and
/// the write (and clocks a little apart).
pub(super) fn commit_guard(store: &Store, clock_start: i64, started: Instant) -> Result<()> {
    let grace = store.config().gc_grace_secs;
    let took = (store.now() - clock_start).max(started.elapsed().as_secs() as i64) as u64;
    if store.commit_guard() && took.saturating_mul(2) >= grace {
        return Err(Error::PersistTooSlow {
            seconds: took,
            grace,
        });
    }
    Ok(())
}
