//! Accepting objects from an untrusted writer (a `strata serve` client):
//! every object is checked before it is stored, so one client can never
//! make a store lie to another.
//!
//! - a pack must hash to its name, and every chunk in it to its id (each
//!   frame is decompressed and each chunk hashed); it is then indexed at
//!   once, so a persist that dies before its index object does not upload
//!   the pack again when retried;
//! - an index object must hash to its name and list only packs the store
//!   holds; in a format-2 store it is written to the index log under this
//!   process's clock;
//! - a manifest root must hash to its name and list only chunks the store
//!   holds;
//! - a run record or layer ref must decode, sit under a well-formed key,
//!   and a layer ref (or cache entry) must point at a manifest the store
//!   holds whose every file chunk the store holds too, so no client can
//!   make a layer visible that a reader could not attach;
//! - the store's config, and gc's records and snapshots, are the server's
//!   to write, never a client's.
//!
//! This module knows nothing about HTTP.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::index::IndexObject;
use crate::format::manifest::ManifestRoot;
use crate::format::pack::verify_pack;
use crate::id::{ChunkId, ManifestId};

use crate::format::keys::{
    cache_hex_of, cache_name, classify, hex_key, index_log_key, manifest_key, pack_key, run_key,
    ObjectKind, RUNS_PREFIX,
};
use crate::format::records::{
    CacheRecord, JobResult, LayerRecord, Record, RerunRecord, RunRecord, UseRecord,
};
use crate::repo::Store;

/// Refuses a ref (`key`) to a manifest the store does not hold.
fn require_manifest(store: &Store, key: &str, manifest: &ManifestId) -> Result<()> {
    if store.backend().exists(&manifest_key(manifest))? {
        Ok(())
    } else {
        Err(Error::corrupt(
            key,
            format!("points at manifest {manifest} which the store does not hold"),
        ))
    }
}

/// Refuses a ref (`key`) to a manifest unless the store holds the manifest
/// and every chunk its files name: a ref is what makes a layer or cache
/// entry visible, so it must never point at data a reader cannot fetch.
/// The whole manifest is checked in one pass over the local index.
fn require_complete(store: &Store, key: &str, manifest: &ManifestId) -> Result<()> {
    require_manifest(store, key, manifest)?;
    let (m, _) = crate::read::load_manifest(store, manifest)?;
    let mut ids: Vec<ChunkId> = m
        .entries
        .iter()
        .flat_map(|e| e.kind.chunks().iter().map(|c| c.id))
        .collect();
    ids.par_sort_unstable();
    ids.dedup();
    let missing = store.chunk_lookup().missing_now(&ids)?;
    let Some((chunk, _)) = ids.iter().zip(missing).find(|(_, m)| *m) else {
        return Ok(());
    };
    // Named by the first file that needs it.
    let user = m
        .entries
        .iter()
        .find(|e| e.kind.chunks().iter().any(|c| c.id == *chunk))
        .expect("every id was taken from an entry");
    Err(Error::Incomplete {
        key: key.to_string(),
        manifest: *manifest,
        chunk: *chunk,
        path: user.path.to_string(),
    })
}

/// Checks `bytes` as the object `key` and stores it. Returns its kind.
pub fn put_checked(store: &Store, key: &str, bytes: &[u8]) -> Result<ObjectKind> {
    let kind = classify(key)?;
    match &kind {
        ObjectKind::Config
        | ObjectKind::Expired(_)
        | ObjectKind::Condemned
        | ObjectKind::Deleted
        | ObjectKind::Lease
        | ObjectKind::Snapshot(_) => {
            return Err(Error::corrupt(
                key,
                "this object is written by the server only (its config and gc)",
            ))
        }
        ObjectKind::Result(run, job) => {
            JobResult::decode(key, bytes)?;
            store.run_job(run, job)?;
            store.backend().put(key, bytes)?;
        }
        ObjectKind::Used(run) => {
            UseRecord::decode(key, bytes)?;
            store.run(run)?;
            store.backend().put(key, bytes)?;
        }
        ObjectKind::Rerun(run) => {
            let record = RerunRecord::decode(key, bytes)?;
            store.run(run)?;
            store.run(&record.from)?;
            store.backend().put(key, bytes)?;
        }
        ObjectKind::Cache => {
            let record = CacheRecord::decode(key, bytes)?;
            // Its name (docs/format.md, "Cache entry names"), or the
            // version 1 name an older client gives a long key.
            let name = cache_hex_of(key);
            if name != Some(cache_name(&record.key).as_str())
                && name != Some(hex_key(&record.key).as_str())
            {
                return Err(Error::corrupt(
                    key,
                    "the entry's key does not match its name",
                ));
            }
            require_complete(store, key, &record.manifest)?;
            store.backend().put(key, bytes)?;
        }
        ObjectKind::CacheUsed => {
            UseRecord::decode(key, bytes)?;
            store.backend().put(key, bytes)?;
        }
        ObjectKind::Pack(id) => {
            let frames = verify_pack(id, bytes, key)?;
            store.backend().put(key, bytes)?;
            store.chunk_lookup().add_pack(id, &frames)?;
        }
        ObjectKind::Index(id) => {
            let object = IndexObject::decode(id, bytes)?;
            for p in &object.packs {
                if !store.backend().exists(&pack_key(&p.pack))? {
                    return Err(Error::corrupt(
                        key,
                        format!("lists pack {} which the store does not hold", p.pack),
                    ));
                }
            }
            // In the index log it is named by this server's clock, not
            // the client's: readers list the log from a time (format.md).
            let key = match store.config().has_index_log() {
                true => index_log_key(id, store.now()),
                false => key.to_string(),
            };
            store.backend().put(&key, bytes)?;
            store.chunk_lookup().add(id, &object)?;
        }
        ObjectKind::Manifest(id) => {
            let root = ManifestRoot::decode(id, bytes)?;
            let ids: Vec<_> = root.chunks.iter().map(|c| c.id).collect();
            let missing = store.chunk_lookup().missing_now(&ids)?;
            if let Some((c, _)) = ids.iter().zip(missing).find(|(_, m)| *m) {
                return Err(Error::MissingChunk {
                    chunk: *c,
                    path: format!("manifest {id}"),
                });
            }
            store.backend().put(key, bytes)?;
        }
        ObjectKind::Run(run) => {
            // Decoding validates the graph (names, requires, no cycle).
            RunRecord::decode(key, bytes)?;
            debug_assert_eq!(run_key(run), key);
            store.backend().put(key, bytes)?;
        }
        ObjectKind::Layer(run, job) => {
            let record = LayerRecord::decode(key, bytes)?;
            store.run_job(run, job)?;
            require_complete(store, key, &record.manifest)?;
            store.backend().put(key, bytes)?;
        }
    }
    Ok(kind)
}

/// Deletes `key` for an untrusted client: only what a client writes for
/// itself (run records, layer refs and a run's other records) may be
/// deleted by it; packs, index objects and manifests are gc's.
pub fn delete_checked(store: &Store, key: &str) -> Result<()> {
    if !key.starts_with(RUNS_PREFIX) {
        return Err(Error::Refused {
            key: key.to_string(),
            reason: "only run records and layer refs may be deleted by a client",
        });
    }
    store.backend().delete(key)
}
