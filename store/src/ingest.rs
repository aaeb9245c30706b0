//! Accepting objects from an untrusted writer (a `strata serve` client):
//! every object is checked before it is stored, so one client can never
//! make a store lie to another.
//!
//! - a pack must hash to its name, and every chunk in it to its id (each
//!   frame is decompressed and each chunk hashed); it is then indexed at
//!   once, so a persist that dies before its index object does not upload
//!   the pack again when retried;
//! - an index object must hash to its name and list only packs the store
//!   holds;
//! - a manifest root must hash to its name and list only chunks the store
//!   holds;
//! - a run record or layer ref must decode, sit under a well-formed key,
//!   and a layer ref (or cache entry) must point at a manifest the store
//!   holds whose every file chunk the store holds too, so no client can
//!   make a layer visible that a reader could not attach;
//! - the store's config is the server's to write, never a client's.
//!
//! This module knows nothing about HTTP.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::id::{ChunkId, IndexId, JobName, ManifestId, PackId, RunName};
use crate::index::{pack_key, IndexObject};
use crate::manifest::{manifest_key, EntryKind, ManifestRoot, RelPath};
use crate::pack::verify_pack;
use crate::refs::{decode_layer, decode_run, run_key};
use crate::store::Store;

/// What kind of object a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKind {
    Config,
    Pack(PackId),
    Index(IndexId),
    Manifest(ManifestId),
    Run(RunName),
    Layer(RunName, JobName),
    /// `runs/R/results/J/<time>-<nonce>`
    Result(RunName, JobName),
    /// `runs/R/used/<time>-<nonce>`
    Used(RunName),
    /// `runs/R/rerun`
    Rerun(RunName),
    /// `runs/R/expired` (gc's)
    Expired(RunName),
    /// `caches/<hex key>/<time>-<nonce>`
    Cache,
    /// `cache-used/<hex key>/<time>-<nonce>`
    CacheUsed,
    /// `gc/condemned/<time>-<nonce>` (gc's)
    Condemned,
}

impl ObjectKind {
    /// Use records are written by readers too: an attach or restore by a
    /// read-only token still counts as a use.
    pub fn is_use_record(&self) -> bool {
        matches!(self, ObjectKind::Used(_) | ObjectKind::CacheUsed)
    }
}

fn is_timed(name: &str) -> bool {
    crate::lifecycle::key_time(name).is_some()
        && name
            .split_once('-')
            .is_some_and(|(_, n)| n.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_hex_key(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 2 * crate::cache_key::MAX_KEY_LEN
        && h.len().is_multiple_of(2)
        && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Classifies a key, or says why it is not one a store holds.
pub fn classify(key: &str) -> Result<ObjectKind> {
    let bad = |why: &str| Error::corrupt(format!("object key {key:?}"), why.to_string());
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["config"] => Ok(ObjectKind::Config),
        ["packs", _, id] => {
            let id: PackId = id.parse().map_err(|_| bad("not a pack id"))?;
            (pack_key(&id) == key)
                .then_some(ObjectKind::Pack(id))
                .ok_or_else(|| bad("pack in the wrong directory"))
        }
        ["index", id] => Ok(ObjectKind::Index(
            id.parse().map_err(|_| bad("not an index id"))?,
        )),
        ["manifests", _, id] => {
            let id: ManifestId = id.parse().map_err(|_| bad("not a manifest id"))?;
            (manifest_key(&id) == key)
                .then_some(ObjectKind::Manifest(id))
                .ok_or_else(|| bad("manifest in the wrong directory"))
        }
        ["runs", run, "run"] => Ok(ObjectKind::Run(RunName::new(run)?)),
        ["runs", run, "rerun"] => Ok(ObjectKind::Rerun(RunName::new(run)?)),
        ["runs", run, "expired"] => Ok(ObjectKind::Expired(RunName::new(run)?)),
        ["runs", run, "results", job, name] if is_timed(name) => {
            Ok(ObjectKind::Result(RunName::new(run)?, JobName::new(job)?))
        }
        ["runs", run, "used", name] if is_timed(name) => Ok(ObjectKind::Used(RunName::new(run)?)),
        ["caches", hex, name] if is_hex_key(hex) && is_timed(name) => Ok(ObjectKind::Cache),
        ["cache-used", hex, name] if is_hex_key(hex) && is_timed(name) => Ok(ObjectKind::CacheUsed),
        ["gc", "condemned", name] if is_timed(name) => Ok(ObjectKind::Condemned),
        ["runs", run, "layers", job, name] => {
            let well_formed = name.split_once('-').is_some_and(|(seq, nonce)| {
                seq.len() == 10
                    && seq.bytes().all(|b| b.is_ascii_digit())
                    && !nonce.is_empty()
                    && nonce.bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !well_formed {
                return Err(bad("a layer ref is named <10-digit seq>-<hex nonce>"));
            }
            Ok(ObjectKind::Layer(RunName::new(run)?, JobName::new(job)?))
        }
        _ => Err(bad("not a key a strata store holds")),
    }
}

/// Refuses a ref (`key`) to a manifest the store does not hold.
fn require_manifest(store: &Store, key: &str, manifest: &ManifestId) -> Result<()> {
    if store.backend.exists(&manifest_key(manifest))? {
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
    let (m, _) = crate::fetch::load_manifest(store, manifest)?;
    let mut first_user: HashMap<ChunkId, &RelPath> = HashMap::new();
    for e in &m.entries {
        if let EntryKind::File { chunks, .. } = &e.kind {
            for c in chunks {
                first_user.entry(c.id).or_insert(&e.path);
            }
        }
    }
    let mut ids: Vec<ChunkId> = first_user.keys().copied().collect();
    ids.sort_unstable();
    let missing = store.index.missing(&ids)?;
    match ids.iter().zip(missing).find(|(_, m)| *m) {
        None => Ok(()),
        Some((chunk, _)) => Err(Error::Incomplete {
            key: key.to_string(),
            manifest: *manifest,
            chunk: *chunk,
            path: first_user[chunk].to_string(),
        }),
    }
}

/// Checks `bytes` as the object `key` and stores it. Returns its kind.
pub fn put_checked(store: &Store, key: &str, bytes: &[u8]) -> Result<ObjectKind> {
    let kind = classify(key)?;
    match &kind {
        ObjectKind::Config | ObjectKind::Expired(_) | ObjectKind::Condemned => {
            return Err(Error::corrupt(
                key,
                "this object is written by the server only (its config and gc)",
            ))
        }
        ObjectKind::Result(run, job) => {
            crate::lifecycle::decode_result(key, bytes)?;
            store.run_job(run, job)?;
            store.backend.put(key, bytes)?;
        }
        ObjectKind::Used(run) => {
            crate::lifecycle::decode_use(key, bytes)?;
            store.run(run)?;
            store.backend.put(key, bytes)?;
        }
        ObjectKind::Rerun(run) => {
            let record = crate::rerun::decode_rerun(key, bytes)?;
            store.run(run)?;
            store.run(&record.from)?;
            store.backend.put(key, bytes)?;
        }
        ObjectKind::Cache => {
            let record = crate::caches::decode_cache(key, bytes)?;
            let hex = key.split('/').nth(1).unwrap_or_default();
            if crate::caches::hex_key(&record.key) != hex {
                return Err(Error::corrupt(
                    key,
                    "the entry's key does not match its name",
                ));
            }
            require_complete(store, key, &record.manifest)?;
            store.backend.put(key, bytes)?;
        }
        ObjectKind::CacheUsed => {
            crate::lifecycle::decode_use(key, bytes)?;
            store.backend.put(key, bytes)?;
        }
        ObjectKind::Pack(id) => {
            let frames = verify_pack(id, bytes, key)?;
            store.backend.put(key, bytes)?;
            store.index.add_pack(id, &frames)?;
        }
        ObjectKind::Index(id) => {
            let object = IndexObject::decode(id, bytes)?;
            for p in &object.packs {
                if !store.backend.exists(&pack_key(&p.pack))? {
                    return Err(Error::corrupt(
                        key,
                        format!("lists pack {} which the store does not hold", p.pack),
                    ));
                }
            }
            store.backend.put(key, bytes)?;
            store.index.add(id, &object)?;
        }
        ObjectKind::Manifest(id) => {
            let root = ManifestRoot::decode(id, bytes)?;
            let ids: Vec<_> = root.chunks.iter().map(|c| c.id).collect();
            let missing = store.index.missing(&ids)?;
            if let Some((c, _)) = ids.iter().zip(missing).find(|(_, m)| *m) {
                return Err(Error::MissingChunk {
                    chunk: *c,
                    path: format!("manifest {id}"),
                });
            }
            store.backend.put(key, bytes)?;
        }
        ObjectKind::Run(run) => {
            // Decoding validates the graph (names, requires, no cycle).
            decode_run(key, bytes)?;
            debug_assert_eq!(run_key(run), key);
            store.backend.put(key, bytes)?;
        }
        ObjectKind::Layer(run, job) => {
            let record = decode_layer(key, bytes)?;
            store.run_job(run, job)?;
            require_complete(store, key, &record.manifest)?;
            store.backend.put(key, bytes)?;
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_strictly() {
        assert_eq!(classify("config").unwrap(), ObjectKind::Config);
        assert!(classify("runs/r1/run").is_ok());
        assert!(classify("runs/r1/layers/build/0000000001-00ff").is_ok());
        for bad in [
            "runs/r1/layers/build/1-00ff",
            "runs/r1/layers/build/0000000001-xyz",
            "runs/r1/other",
            "packs/00/zz",
            "manifests/00/00",
            "tmp/x",
            "index/abc",
        ] {
            assert!(classify(bad).is_err(), "{bad}");
        }
        let id = PackId::of(b"x");
        assert!(classify(&pack_key(&id)).is_ok());
        let wrong_dir = format!("packs/zz/{}", id.to_hex());
        assert!(classify(&wrong_dir).is_err());
    }
}
