//! Dependency caches (`strata cache save|restore`), in the same chunk store
//! as workspaces: a `node_modules` saved as a cache and persisted to a
//! workspace is stored once.
//!
//! Objects:
//! - `caches/<name of key>/<time>-<nonce>`: a cache entry (key, manifest,
//!   totals); the name (`keys::cache_name`: hex, a long key's head in hex
//!   and a hash) keeps any key a valid object key that fits a file name,
//!   and a key's prefix a prefix of the name, so a prefix restore is one
//!   listing;
//! - `cache-used/<name of key>/<time>-<nonce>`: written by every restore.
//!
//! A key is immutable: saving a key that has a live entry is a no-op, and
//! if two jobs save one key at once the earliest entry is the one restored.
//! Restore tries each key in order, first exactly, then as a prefix (the
//! most recently saved match). An entry expires `retention_days` after its
//! last save or restore. This module knows nothing about runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::backend::Traffic;
use crate::error::Result;
use crate::format::keys::{cache_name, cache_name_prefix, CACHES_PREFIX, CACHE_USED_PREFIX};
use crate::format::keys::{key_time, timed_key};
use crate::format::manifest::Totals;
use crate::format::records::{CacheRecord, Record, UseRecord};
use crate::id::ManifestId;
use crate::ops::lifecycle::{format_date, DAY};
use crate::read::load_manifest;
use crate::repo::Store;
use crate::tree::plan::whole;
use crate::tree::subset::Only;
use crate::tree::write;

/// A cache entry as found in the store.
#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    /// The entry's object key.
    pub object: String,
    /// The entry.
    pub record: CacheRecord,
    /// When it was last used (Unix seconds).
    pub last_use: i64,
    /// When it expires (Unix seconds).
    pub expires: i64,
}

/// Every cache entry, oldest first.
pub fn entries(store: &Store) -> Result<Vec<CacheEntry>> {
    entries_under(store, "")
}

/// The entries whose key starts with `key_prefix`, oldest first: one
/// listing of the names that may hold such keys (`cache_name_prefix`), a
/// read of only the entries it finds, and those whose record's key starts
/// with the prefix kept (a long key's name holds only its head).
pub fn entries_under(store: &Store, key_prefix: &str) -> Result<Vec<CacheEntry>> {
    let b = store.backend();
    let days = store.config().retention_days as i64;
    let hex_prefix = cache_name_prefix(key_prefix);
    let mut used: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for key in b.list(&format!("{CACHE_USED_PREFIX}{hex_prefix}"))? {
        let hex = key[CACHE_USED_PREFIX.len()..]
            .split('/')
            .next()
            .unwrap_or("");
        if let Some(t) = key_time(&key) {
            let e = used.entry(hex.to_string()).or_insert(t);
            *e = (*e).max(t);
        }
    }
    let mut out = Vec::new();
    for object in b.list(&format!("{CACHES_PREFIX}{hex_prefix}"))? {
        let record = match b.get(&object) {
            Ok(bytes) => CacheRecord::decode(&object, &bytes)?,
            Err(crate::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        if !record.key.starts_with(key_prefix) {
            continue;
        }
        let hex = object[CACHES_PREFIX.len()..]
            .split('/')
            .next()
            .unwrap_or("");
        let last_use = used.get(hex).copied().unwrap_or(0).max(record.created);
        out.push(CacheEntry {
            object,
            expires: last_use + days * DAY,
            last_use,
            record,
        });
    }
    out.sort_by_key(|e| (e.record.created, e.object.clone()));
    Ok(out)
}

/// The name an entry is stored under (a version 1 name of a long key
/// stays its own: its uses go beside it).
fn name_of(object: &str) -> &str {
    object[CACHES_PREFIX.len()..]
        .split('/')
        .next()
        .unwrap_or("")
}

/// Deletes an entry (gc, once it expired or to keep a budget; `rm`) and,
/// when it was the key's last entry, the key's use records.
pub fn delete_entry(store: &Store, entry: &CacheEntry) -> Result<()> {
    delete_object(store, &entry.object)
}

/// `delete_entry` by the entry's object key.
pub(crate) fn delete_object(store: &Store, object: &str) -> Result<()> {
    let b = store.backend();
    b.delete(object)?;
    let hex = name_of(object);
    if b.list(&format!("{CACHES_PREFIX}{hex}/"))?.is_empty() {
        for key in b.list(&format!("{CACHE_USED_PREFIX}{hex}/"))? {
            b.delete(&key)?;
        }
    }
    Ok(())
}

/// What a cache save did.
#[derive(Debug, Clone, Serialize)]
pub struct SaveReport {
    /// The cache key.
    pub key: String,
    /// False: the key already had an entry; nothing was stored.
    pub saved: bool,
    /// When the existing entry was saved (if not saved now).
    pub existing_since: Option<String>,
    /// The saved tree's manifest.
    pub manifest: ManifestId,
    /// What the saved tree holds.
    pub totals: Totals,
    /// Bytes of chunks the store did not have before.
    pub bytes_new: u64,
    /// Bytes of objects written to the store.
    pub bytes_written: u64,
    /// Bytes and requests that crossed the network.
    pub network: Traffic,
    /// Wall-clock seconds the command took.
    pub seconds: f64,
}

/// Saves `paths` under `root` as cache `key` (already rendered).
pub fn save(store: &Store, key: &str, root: &Path, paths: &[PathBuf]) -> Result<SaveReport> {
    let started = Instant::now();
    let traffic = store.traffic();
    let now = store.now();
    if let Some(e) = entries_under(store, key)?
        .into_iter()
        .find(|e| e.record.key == key && e.expires > now)
    {
        return Ok(SaveReport {
            key: key.into(),
            saved: false,
            existing_since: Some(format_date(e.record.created)),
            manifest: e.record.manifest,
            totals: e.record.totals,
            bytes_new: 0,
            bytes_written: 0,
            network: store.traffic().since(traffic),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let scanned = crate::tree::scan::scan(root, paths, false)?;
    let tree = crate::ops::store_tree::write_tree(store, scanned, started)?;
    let record = CacheRecord {
        key: key.into(),
        manifest: tree.manifest,
        created: store.now(),
        totals: tree.totals,
    };
    let object = timed_key(
        &format!("{CACHES_PREFIX}{}/", cache_name(key)),
        record.created,
    );
    let bytes = record.encode();
    let written = tree.bytes_written;
    crate::ops::store_tree::commit(store, tree.pending, (&object, &bytes))?;
    Ok(SaveReport {
        key: key.into(),
        saved: true,
        existing_since: None,
        manifest: tree.manifest,
        totals: tree.totals,
        bytes_new: tree.bytes_new,
        bytes_written: written + bytes.len() as u64,
        network: store.traffic().since(traffic),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a cache restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The key asked for that matched, and the key restored.
    pub matched: Option<String>,
    /// The key of the entry restored, if any matched.
    pub restored_key: Option<String>,
    /// Whether it matched exactly, not as a prefix.
    pub exact: bool,
    /// When the entry was saved (UTC date).
    pub saved: Option<String>,
    /// What the restored tree holds.
    pub totals: Option<Totals>,
    /// The `--only` paths and globs, as given (empty: the whole tree).
    pub only: Vec<String>,
    /// What the entry holds outside `only`, left alone.
    pub skipped: Totals,
    /// What writing the tree did.
    #[serde(flatten)]
    pub write: Option<write::WriteStats>,
    /// Bytes and requests that crossed the network.
    pub network: Traffic,
    /// Wall-clock seconds the command took.
    pub seconds: f64,
}

/// Finds the entry `keys` select: each key exactly, then as a prefix.
pub fn find(store: &Store, keys: &[String]) -> Result<Option<(String, CacheEntry, bool)>> {
    let now = store.now();
    for k in keys {
        let live: Vec<CacheEntry> = entries_under(store, k)?
            .into_iter()
            .filter(|e| e.expires > now)
            .collect();
        // Exact: the earliest entry (a key is immutable; a racing second
        // save loses).
        if let Some(e) = live.iter().find(|e| &e.record.key == k) {
            return Ok(Some((k.clone(), e.clone(), true)));
        }
        // Prefix: the most recently saved.
        if let Some(e) = live
            .into_iter()
            .max_by_key(|e| (e.record.created, e.object.clone()))
        {
            return Ok(Some((k.clone(), e, false)));
        }
    }
    Ok(None)
}

/// Restores the first entry `keys` select into `at` (only the paths and
/// globs of `only`, if any: `tree::subset`).
pub fn restore(
    store: &Store,
    keys: &[String],
    at: &Path,
    only: &[PathBuf],
    options: write::WriteOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let traffic = store.traffic();
    let patterns = Only::new(only)?;
    let only: Vec<String> = only.iter().map(|p| p.to_string_lossy().into()).collect();
    let Some((asked, entry, exact)) = find(store, keys)? else {
        return Ok(RestoreReport {
            matched: None,
            restored_key: None,
            exact: false,
            saved: None,
            totals: None,
            only,
            skipped: Totals::default(),
            write: None,
            network: store.traffic().since(traffic),
            seconds: started.elapsed().as_secs_f64(),
        });
    };
    let (manifest, _) = load_manifest(store, &entry.record.manifest)?;
    let selection = match &patterns {
        Some(p) => Some(p.select([&manifest], &format!("cache {:?}", entry.record.key))?),
        None => None,
    };
    let (planned, skipped) = whole(manifest, selection.as_ref());
    let stats = write::execute(store, planned, at, options)?;
    if let Some(cache) = &store.frame_cache() {
        cache.trim_if_grown()?;
    }
    let now = store.now();
    let used = timed_key(
        &format!("{CACHE_USED_PREFIX}{}/", name_of(&entry.object)),
        now,
    );
    if !store.is_read_only() {
        store
            .backend()
            .put(&used, &UseRecord { at: now }.encode())?;
    }
    Ok(RestoreReport {
        matched: Some(asked),
        restored_key: Some(entry.record.key.clone()),
        exact,
        saved: Some(format_date(entry.record.created)),
        totals: Some(entry.record.totals),
        only,
        skipped,
        write: Some(stats),
        network: store.traffic().since(traffic),
        seconds: started.elapsed().as_secs_f64(),
    })
}
