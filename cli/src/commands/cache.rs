//! `strata cache save` and `strata cache restore`: dependency caches
//! under rendered key templates, scoped to the CI's ref.

use anyhow::Result;
use strata_store::attach;
use strata_store::caches::{self, RestoreReport, SaveReport};

use crate::args::{CacheRestoreArgs, CacheSaveArgs, Cli};
use crate::context::{cache_scopes, open, render_key};
use crate::output::{bytes, plural, print_json, skipped, wire};

pub(crate) fn save(cli: &Cli, a: &CacheSaveArgs) -> Result<()> {
    let store = open(cli)?;
    let key = render_key(&a.key, &store)?;
    // Inside a CI, under this job's ref (docs/ci.md, "Caches").
    let key = match cache_scopes(a.unscoped) {
        Some(scopes) => format!("{}{key}", scopes.write),
        None => key,
    };
    cache_saved(cli.json, &caches::save(&store, &key, &a.root, &a.paths)?);
    Ok(())
}

pub(crate) fn restore(cli: &Cli, a: &CacheRestoreArgs) -> Result<()> {
    let store = open(cli)?;
    let keys = a
        .keys
        .iter()
        .map(|k| render_key(k, &store))
        .collect::<Result<Vec<_>>>()?;
    // Inside a CI: this job's ref first, then the default branch.
    let keys = match cache_scopes(a.unscoped) {
        Some(scopes) => scopes
            .read
            .iter()
            .flat_map(|scope| keys.iter().map(move |k| format!("{scope}{k}")))
            .collect(),
        None => keys,
    };
    let options = attach::WriteOptions {
        keep_setuid: a.keep_setuid,
    };
    let report = caches::restore(&store, &keys, &a.at, &a.only.paths, options)?;
    cache_restored(cli.json, &keys, &report);
    Ok(())
}

pub(crate) fn cache_saved(json: bool, r: &SaveReport) {
    if json {
        return print_json(r);
    }
    if r.saved {
        println!(
            "saved cache {:?}: {} ({}) in {:.1} s: {} new{}",
            r.key,
            plural(r.totals.files, "file"),
            bytes(r.totals.bytes),
            r.seconds,
            bytes(r.bytes_new),
            wire(&r.network)
        );
    } else {
        println!(
            "cache {:?} exists (saved {}); keys are immutable, nothing saved",
            r.key,
            r.existing_since.as_deref().unwrap_or("earlier")
        );
    }
}

pub(crate) fn cache_restored(json: bool, keys: &[String], r: &RestoreReport) {
    if json {
        return print_json(r);
    }
    match (&r.restored_key, &r.totals, &r.write) {
        (Some(key), Some(t), Some(w)) => {
            let how = if r.exact {
                "exact match".to_string()
            } else {
                format!("prefix {:?}", r.matched.as_deref().unwrap_or(""))
            };
            println!(
                "restored cache {key:?} ({how}, saved {}): {} ({}) in {:.1} s: {} read from the store, {} already in place{}{}",
                r.saved.as_deref().unwrap_or("?"),
                plural(t.files - r.skipped.files, "file"),
                bytes(t.bytes - r.skipped.bytes),
                r.seconds,
                bytes(w.bytes_from_store),
                plural(w.files_in_place, "file"),
                skipped(&r.only, &r.skipped),
                wire(&r.network)
            );
        }
        _ => println!("no cache matched {}", keys.join(", ")),
    }
}
