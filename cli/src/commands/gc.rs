//! `strata gc`: expired runs and caches dropped, unreferenced chunks
//! reclaimed.

use anyhow::Result;
use strata_store::gc::{self, GcReport};

use crate::args::{Cli, GcArgs};
use crate::context::open;
use crate::output::{bytes, count, plural, print_json};
use strata_store::lifecycle::format_date;

pub(crate) fn exec(cli: &Cli, a: &GcArgs) -> Result<()> {
    let store = open(cli)?;
    let options = gc::GcOptions {
        dry_run: a.dry_run,
        grace_secs: a.grace_secs(),
        max_size: a.max_size,
        ..Default::default()
    };
    collected(cli.json, &gc::gc(&store, &options)?);
    Ok(())
}

pub(crate) fn collected(json: bool, r: &GcReport) {
    if json {
        return print_json(r);
    }
    // What it did in the past tense; a dry run says what it would do.
    let did = |past: &str, present: &str| {
        if r.dry_run {
            format!("would {present}")
        } else {
            past.to_string()
        }
    };
    let expired: Vec<&str> = r.runs_expired.iter().map(|r| r.as_str()).collect();
    println!(
        "gc: {} {}{} and {}; {} live manifests, {} live chunks in {} packs",
        did("dropped", "drop"),
        plural(expired.len() as u64, "expired run"),
        if expired.is_empty() {
            String::new()
        } else {
            format!(" ({})", expired.join(", "))
        },
        plural(r.caches_expired, "expired cache"),
        count(r.live_manifests),
        count(r.live_chunks),
        count(r.packs)
    );
    println!(
        "gc: {} {} ({}), {} {}, {} {}; {} in {} condemned packs wait for the grace period",
        did("deleted", "delete"),
        plural(r.packs_deleted, "pack"),
        bytes(r.bytes_reclaimed),
        did("rewrote", "rewrite"),
        plural(r.packs_rewritten, "pack"),
        did("condemned", "condemn"),
        plural(r.packs_condemned, "pack"),
        bytes(r.bytes_pending),
        count(r.packs_pending)
    );
    if let Some(budget) = r.budget {
        budget_lines(r, budget, &did);
    }
}

/// What a budget made gc do.
fn budget_lines(r: &GcReport, budget: u64, did: &dyn Fn(&str, &str) -> String) {
    println!(
        "gc: budget {}: {} {}, least recently used first; {} of live data left",
        bytes(budget),
        did("evicted", "evict"),
        match r.evicted.len() {
            1 => "1 run or cache entry".to_string(),
            n => format!("{} runs and cache entries", count(n as u64)),
        },
        bytes(r.live_bytes)
    );
    for e in &r.evicted {
        println!(
            "gc:   {} (last used {}) held {} alone",
            e.name,
            format_date(e.last_use),
            bytes(e.held_alone)
        );
    }
    if r.over_budget > 0 {
        println!(
            "gc: still {} over the budget: what is left was used within the grace period, \
             which gc never evicts",
            bytes(r.over_budget)
        );
    }
}
