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
//!   to write, never a client's;
//! - run records, layer refs and rerun records are create-only (the same
//!   object again is a retry; another under the name is refused), a run's
//!   writes follow its name and recorded ref (`access::allow_run`), a
//!   layer's and a result's their job (`access::allow_job`), a cache entry
//!   its key (`access::allow_cache_key`), and every time in an object is
//!   the server's.
//!
//! This module knows nothing about HTTP.

// What a request reaches must not panic: every unwrap or expect here is
// refused unless its line says why it cannot fail.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::sync::Mutex;

use rayon::prelude::*;

use crate::access::{self, Grant};
use crate::error::{Error, Result};
use crate::format::index::IndexObject;
use crate::format::manifest::ManifestRoot;
use crate::format::pack::verify_pack;
use crate::id::{ChunkId, IndexId, JobName, ManifestId, RunName};

use crate::format::keys::{
    cache_hex_of, cache_name, cache_prefix, cache_used_hex_of, cache_used_prefix, classify,
    hex_key, index_log_key, job_results_prefix, manifest_key, pack_key, run_key, timed_key,
    used_prefix, ObjectKind,
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
/// The whole manifest is checked in one pass over the local index. The
/// ref's `totals` must be its manifest's, so what `ls` and the server's
/// metrics read from a ref is what its files hold.
fn require_complete(
    store: &Store,
    key: &str,
    manifest: &ManifestId,
    totals: &crate::format::manifest::Totals,
) -> Result<()> {
    require_manifest(store, key, manifest)?;
    let (m, _) = crate::read::load_manifest(store, manifest)?;
    if m.totals() != *totals {
        return Err(Error::corrupt(
            key,
            format!("its totals are not those of manifest {manifest}"),
        ));
    }
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
    let path = m
        .entries
        .iter()
        .find(|e| e.kind.chunks().iter().any(|c| c.id == *chunk))
        .map(|e| e.path.to_string())
        .unwrap_or_default();
    Err(Error::Incomplete {
        key: key.to_string(),
        manifest: *manifest,
        chunk: *chunk,
        path,
    })
}

/// Create-only objects (run records, layer refs, rerun records) are
/// checked for an existing copy and written under this lock, so two
/// requests to this process never both find the name free. (Replicas
/// over one bucket do not share it: there the only writer of a name is
/// the client whose nonce or run it is, and correctness never depends on
/// a conditional write.)
static CREATE: Mutex<()> = Mutex::new(());

/// Checks `bytes` as the object `key`, written by a client holding
/// `grant` (already allowed to write this kind: `access::allow`), and
/// stores it, under the server's clock wherever the object holds a time
/// (so no client moves an expiry date). Returns the key it was stored
/// under, which for a use, a result or a cache entry is a new name of the
/// server's time.
pub fn put_checked(store: &Store, grant: &Grant, key: &str, bytes: &[u8]) -> Result<String> {
    let kind = classify(key)?;
    let now = store.now();
    match &kind {
        ObjectKind::Config
        | ObjectKind::Expired(_)
        | ObjectKind::Condemned
        | ObjectKind::Deleted
        | ObjectKind::Lease
        | ObjectKind::Snapshot(_) => Err(Error::corrupt(
            key,
            "this object is written by the server only (its config and gc)",
        )),
        ObjectKind::Result(run, job) => {
            let record = JobResult::decode(key, bytes)?;
            let (run_record, _) = store.run_job(run, job)?;
            access::allow_run(grant, run.as_str(), run_record.ref_scope.as_deref())?;
            access::allow_job(grant, run.as_str(), job.as_str())?;
            let stamped = JobResult {
                finished: now,
                ..record
            };
            let key = timed_key(&job_results_prefix(run, job), now);
            store.backend().put(&key, &stamped.encode())?;
            Ok(key)
        }
        ObjectKind::Used(run) => {
            UseRecord::decode(key, bytes)?;
            store.run(run)?;
            put_use(store, &used_prefix(run), now)
        }
        ObjectKind::CacheUsed => {
            UseRecord::decode(key, bytes)?;
            let hex = cache_used_hex_of(key).unwrap_or_default();
            put_use(store, &cache_used_prefix(&format!("{hex}/")), now)
        }
        ObjectKind::Rerun(run) => put_rerun(store, grant, key, run, bytes, now),
        ObjectKind::Cache => put_cache(store, grant, key, bytes, now),
        ObjectKind::Pack(id) => {
            let frames = verify_pack(id, bytes, key)?;
            store.backend().put(key, bytes)?;
            store.chunk_lookup().add_pack(id, &frames)?;
            // Durable before the answer: a pack no index object lists yet
            // is known only here, so a server killed after this answer
            // still knows it when it comes back, and the client's retry
            // sends only what had not arrived (tests/network.rs).
            store.flush()?;
            Ok(key.to_string())
        }
        ObjectKind::Index(id) => put_index(store, key, id, bytes),
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
            Ok(key.to_string())
        }
        ObjectKind::Run(run) => put_run(store, grant, key, run, bytes, now),
        ObjectKind::Layer(run, job) => put_layer(store, grant, key, (run, job), bytes, now),
    }
}

/// A use (of a run or a cache key), at the server's time.
fn put_use(store: &Store, prefix: &str, now: i64) -> Result<String> {
    let key = timed_key(prefix, now);
    store.backend().put(&key, &UseRecord { at: now }.encode())?;
    Ok(key)
}

fn put_index(store: &Store, key: &str, id: &IndexId, bytes: &[u8]) -> Result<String> {
    let object = IndexObject::decode(id, bytes)?;
    for p in &object.packs {
        if !store.backend().exists(&pack_key(&p.pack))? {
            return Err(Error::corrupt(
                key,
                format!("lists pack {} which the store does not hold", p.pack),
            ));
        }
    }
    // In the index log it is named by this server's clock, not the
    // client's: readers list the log from a time (format.md).
    let key = match store.config().has_index_log() {
        true => index_log_key(id, store.now()),
        false => key.to_string(),
    };
    store.backend().put(&key, bytes)?;
    store.chunk_lookup().add(id, &object)?;
    Ok(key)
}

/// Writes `record` under `key` unless the name holds one already: one
/// that is `same` (a retry, whatever its time) leaves it as it is, and
/// another is `Error::Immutable` (it holds `what`).
fn create_only<R: Record>(
    store: &Store,
    key: &str,
    record: R,
    same: impl Fn(&R, &R) -> bool,
    what: &str,
) -> Result<()> {
    let _create = CREATE.lock().unwrap_or_else(|p| p.into_inner());
    let old = match store.backend().get(key) {
        Ok(bytes) => R::decode(key, &bytes)?,
        Err(Error::NotFound { .. }) => return store.backend().put(key, &record.encode()),
        Err(e) => return Err(e),
    };
    match same(&old, &record) {
        true => Ok(()),
        false => Err(Error::Immutable {
            key: key.to_string(),
            detail: format!("it holds {what}"),
        }),
    }
}

fn put_run(
    store: &Store,
    grant: &Grant,
    key: &str,
    run: &RunName,
    bytes: &[u8],
    now: i64,
) -> Result<String> {
    // Decoding validates the graph (names, requires, no cycle).
    let record = RunRecord::decode(key, bytes)?;
    debug_assert_eq!(run_key(run), key);
    access::allow_run(grant, run.as_str(), record.ref_scope.as_deref())?;
    let stamped = RunRecord {
        created: now,
        ..record
    };
    create_only(
        store,
        key,
        stamped,
        RunRecord::same_run,
        "another graph or ref",
    )?;
    Ok(key.to_string())
}

fn put_layer(
    store: &Store,
    grant: &Grant,
    key: &str,
    (run, job): (&RunName, &JobName),
    bytes: &[u8],
    now: i64,
) -> Result<String> {
    let record = LayerRecord::decode(key, bytes)?;
    let (run_record, _) = store.run_job(run, job)?;
    access::allow_run(grant, run.as_str(), run_record.ref_scope.as_deref())?;
    access::allow_job(grant, run.as_str(), job.as_str())?;
    require_complete(store, key, &record.manifest, &record.totals)?;
    let stamped = LayerRecord {
        created: now,
        ..record
    };
    let same = |a: &LayerRecord, b: &LayerRecord| {
        (a.manifest, a.totals, &a.writer) == (b.manifest, b.totals, &b.writer)
    };
    create_only(store, key, stamped, same, "another layer")?;
    Ok(key.to_string())
}

fn put_rerun(
    store: &Store,
    grant: &Grant,
    key: &str,
    run: &RunName,
    bytes: &[u8],
    now: i64,
) -> Result<String> {
    let record = RerunRecord::decode(key, bytes)?;
    let run_record = store.run(run)?;
    access::allow_run(grant, run.as_str(), run_record.ref_scope.as_deref())?;
    store.run(&record.from)?;
    let stamped = RerunRecord {
        created: now,
        ..record
    };
    let same = |a: &RerunRecord, b: &RerunRecord| {
        (&a.from, &a.rerun, &a.reused) == (&b.from, &b.rerun, &b.reused)
    };
    create_only(store, key, stamped, same, "another rerun")?;
    Ok(key.to_string())
}

/// A cache entry: under a new name of the server's time, so no entry is
/// ever replaced and none is dated by the client.
fn put_cache(store: &Store, grant: &Grant, key: &str, bytes: &[u8], now: i64) -> Result<String> {
    let record = CacheRecord::decode(key, bytes)?;
    // Its name (docs/format.md, "Cache entry names"), or the version 1
    // name an older client gives a long key (kept: that client finds it
    // there; today's find it by prefix).
    let name = cache_hex_of(key).unwrap_or_default();
    if name != cache_name(&record.key) && name != hex_key(&record.key) {
        return Err(Error::corrupt(
            key,
            "the entry's key does not match its name",
        ));
    }
    access::allow_cache_key(grant, &record.key)?;
    require_complete(store, key, &record.manifest, &record.totals)?;
    let key = timed_key(&cache_prefix(&format!("{name}/")), now);
    let stamped = CacheRecord {
        created: now,
        ..record
    };
    store.backend().put(&key, &stamped.encode())?;
    Ok(key)
}

/// Deletes `key` for a client holding `grant` (already allowed to delete
/// this kind: `access::allow`, an admin's): only runs' records and cache
/// entries and uses; packs, index objects and manifests are gc's.
pub fn delete_checked(store: &Store, key: &str) -> Result<()> {
    if access::deletable(&classify(key)?) {
        store.backend().delete(key)
    } else {
        Err(Error::Refused {
            key: key.to_string(),
            reason: "only runs' records and cache entries may be deleted by a client",
        })
    }
}
