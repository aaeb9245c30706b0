//! `strata rm --run R` and `strata cache rm --key K`: dropping one run's
//! workspace, or every entry of one cache key, on an admin's request, by
//! gc's safety rules (docs/lifecycle.md, "Removing a run or a cache"):
//! the refs go at once, leaving a dated `expired` record that says who
//! removed the run; the chunks only through gc's condemnation and grace
//! period, so an attach or persist in flight keeps what it reads; and
//! nothing used within the grace period unless forced. Over `strata serve`
//! the server does it (`POST remove`), naming the grant that asked.
//! Knows nothing about packs.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::keys::run_prefix;
use crate::format::records::{DropReason, ExpiredRecord, LayerRecord, Record};
use crate::id::RunName;
use crate::ops::footprint::HolderName;
use crate::ops::lifecycle::{check_live, format_time};
use crate::protocol::RemoveQuery;
use crate::repo::Store;

/// What `rm` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveReport {
    /// The run, or each entry of the cache key.
    pub removed: Vec<HolderName>,
}

/// Drops `run`'s layers, results and uses; `by` is who asked (recorded).
/// Refuses a run used within the grace period unless `force`.
pub fn remove_run(store: &Store, run: &RunName, by: &str, force: bool) -> Result<RemoveReport> {
    if let Some(server) = store.server() {
        let query = RemoveQuery {
            run: Some(run.to_string()),
            cache_key: None,
            force,
        };
        return server.call_json("POST", &query.path());
    }
    // An unknown run is `UnknownRun`; one already dropped says when and why.
    let life = check_live(store, run)?;
    let b = store.backend();
    let mut last_use = life.last_use;
    for key in b.list(&format!("{}layers/", run_prefix(run)))? {
        last_use = last_use.max(LayerRecord::decode(&key, &b.get(&key)?)?.created);
    }
    let name = HolderName::Run(run.clone());
    refuse_if_in_use(store, &name, last_use, force)?;
    let record = ExpiredRecord {
        expired_on: store.now(),
        last_use,
        reason: DropReason::Removed { by: by.to_string() },
    };
    crate::ops::gc::drop_run(store, run, &record)?;
    Ok(RemoveReport {
        removed: vec![name],
    })
}

/// Deletes every entry of cache key `key` (exactly that key). Refuses if
/// any was saved or restored within the grace period unless `force`.
pub fn remove_cache(store: &Store, key: &str, force: bool) -> Result<RemoveReport> {
    if let Some(server) = store.server() {
        let query = RemoveQuery {
            run: None,
            cache_key: Some(key.to_string()),
            force,
        };
        return server.call_json("POST", &query.path());
    }
    let entries: Vec<_> = crate::ops::caches::entries_under(store, key)?
        .into_iter()
        .filter(|e| e.record.key == key)
        .collect();
    if entries.is_empty() {
        return Err(Error::NotFound {
            key: format!("cache key {key:?}"),
        });
    }
    let names: Vec<HolderName> = entries
        .iter()
        .map(|e| HolderName::Cache {
            key: e.record.key.clone(),
            object: e.object.clone(),
        })
        .collect();
    for (e, name) in entries.iter().zip(&names) {
        refuse_if_in_use(store, name, e.last_use, force)?;
    }
    for e in &entries {
        crate::ops::caches::delete_entry(store, e)?;
    }
    Ok(RemoveReport { removed: names })
}

/// `Error::InUse` if `last_use` is within the store's grace period.
fn refuse_if_in_use(store: &Store, name: &HolderName, last_use: i64, force: bool) -> Result<()> {
    let grace_secs = store.config().gc_grace_secs;
    let grace = i64::try_from(grace_secs).unwrap_or(i64::MAX);
    if !force && last_use.saturating_add(grace) > store.now() {
        return Err(Error::InUse {
            what: name.to_string(),
            last_use: format_time(last_use),
            grace_secs,
        });
    }
    Ok(())
}
