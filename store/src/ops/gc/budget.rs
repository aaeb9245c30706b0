//! gc's storage budget (docs/lifecycle.md, "Storage budget"): which live
//! runs and cache entries to evict, least recently used first, so that
//! what the rest hold fits under the budget, and which packs to rewrite
//! beyond the usual mostly-dead ones so that the store itself fits once
//! the grace period has passed. Never evicts what was used within the
//! grace period. Measures with `ops::footprint`; knows nothing about how
//! packs are read or written.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::format::records::{DropReason, ExpiredRecord};
use crate::id::{ChunkId, PackId};
use crate::ops::footprint::{stored_shares, Footprint, HolderName, Usage};
use crate::repo::Store;

use super::{count_live, drop_run, expire, survey, GcReport, PackInfo};

/// One run or cache entry the budget evicted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evicted {
    /// Which.
    pub name: HolderName,
    /// Its last use (Unix seconds).
    pub last_use: i64,
    /// Stored bytes no live run or cache entry references once it is gone
    /// (with those evicted before it): what evicting it frees.
    pub held_alone: u64,
}

/// When gc runs, and its grace period: what was used within it stays.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) now: i64,
    pub(super) grace: i64,
}

/// Evicts (unless `dry`) least recently used holders until what the rest
/// reference fits `max` bytes, counts the packs' live bytes, and returns
/// the live chunks and the packs to rewrite beyond the mostly-dead ones.
pub(super) fn keep_to(
    store: &Store,
    mut usage: Usage,
    packs: &mut [PackInfo],
    max: u64,
    at: Window,
    dry: bool,
    report: &mut GcReport,
) -> Result<(HashSet<ChunkId>, HashSet<PackId>)> {
    usage.price(&shares(packs));
    let mut order: Vec<usize> = (0..usage.holders().len()).collect();
    order.sort_by_key(|&i| (usage.holders()[i].last_use, i));
    for i in order {
        let h = &usage.holders()[i];
        // Sorted by last use: once one is within the grace, all after are.
        if usage.live_bytes() <= max || h.last_use.saturating_add(at.grace) > at.now {
            break;
        }
        let (name, last_use) = (h.name.clone(), h.last_use);
        let held_alone = usage.drop_holder(i);
        if !dry {
            evict(store, &name, last_use, max, at.now)?;
        }
        report.evicted.push(Evicted {
            name,
            last_use,
            held_alone,
        });
    }
    report.live_bytes = usage.live_bytes();
    report.over_budget = usage.live_bytes().saturating_sub(max);
    let live: HashSet<ChunkId> = usage.live_chunks().collect();
    count_live(packs, &live);
    Ok((live, compaction(packs, max)))
}

/// Drops an evicted run's layers (leaving a dated record saying why) or
/// deletes an evicted cache entry.
fn evict(store: &Store, name: &HolderName, last_use: i64, max: u64, now: i64) -> Result<()> {
    match name {
        HolderName::Run(run) => {
            let record = ExpiredRecord {
                expired_on: now,
                last_use,
                reason: DropReason::Evicted { budget: max },
            };
            drop_run(store, run, &record)
        }
        HolderName::Cache { object, .. } => crate::ops::caches::delete_object(store, object),
    }
}

/// The packs to rewrite beyond the mostly-dead ones, most garbage first,
/// until the store's packs will fit `max` once the dead ones are deleted
/// and the rewritten ones replaced by their live part.
fn compaction(packs: &[PackInfo], max: u64) -> HashSet<PackId> {
    let live_part = |p: &PackInfo| match p.total_raw {
        0 => 0,
        total => (u128::from(p.size) * u128::from(p.live_raw) / u128::from(total)) as u64,
    };
    let mostly_dead = |p: &PackInfo| p.live_raw * 2 < p.total_raw;
    let mut projected: u64 = packs
        .iter()
        .map(|p| match (p.live_raw, mostly_dead(p)) {
            (0, _) => 0,
            (_, true) => live_part(p),
            (_, false) => p.size,
        })
        .sum();
    let mut candidates: Vec<(u64, PackId)> = packs
        .iter()
        .filter(|p| p.live_raw > 0 && !mostly_dead(p) && p.live_raw < p.total_raw)
        .map(|p| (p.size - live_part(p), p.id))
        .collect();
    candidates.sort_by(|a, b| b.cmp(a));
    let mut extra = HashSet::new();
    for (garbage, id) in candidates {
        if projected <= max {
            break;
        }
        projected -= garbage;
        extra.insert(id);
    }
    extra
}

/// Each located chunk's stored bytes, from the surveyed packs.
fn shares(packs: &[PackInfo]) -> std::collections::HashMap<ChunkId, u64> {
    stored_shares(packs.iter().map(|p| (&p.frames[..], &p.located[..])))
}

/// Every live run's and cache entry's exclusive and shared stored bytes,
/// as gc would count them now (`strata ls --sizes`). Over `strata serve`
/// the server counts (one request).
pub fn footprints(store: &Store) -> Result<Vec<Footprint>> {
    if let Some(server) = store.server() {
        return server.call_json("GET", crate::protocol::route::FOOTPRINTS);
    }
    // A dry expiry: what would stay live, nothing written.
    let mut scratch = GcReport::default();
    let holders = expire(store, store.now(), true, &mut scratch)?;
    let mut usage = Usage::build(store, holders)?;
    let packs = survey(store, &mut scratch)?;
    usage.price(&shares(&packs));
    Ok((0..usage.holders().len())
        .map(|i| usage.footprint(i))
        .collect())
}
