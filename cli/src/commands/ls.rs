//! `strata ls` and `strata stats`: what the store holds.

use anyhow::Result;
use strata_store::footprint::Footprint;
use strata_store::lifecycle::format_date;
use strata_store::stats::{self, RunListing, StoreListing, StoreStats};
use strata_store::JobStatus;

use crate::args::{Cli, LsArgs};
use crate::context::open;
use crate::output::{bytes, count, plural, print_json};

pub(crate) fn exec(cli: &Cli, a: &LsArgs) -> Result<()> {
    let store = open(cli)?;
    if a.sizes {
        footprints(cli.json, &strata_store::gc::budget::footprints(&store)?);
        return Ok(());
    }
    match &a.run {
        Some(run) => run_listing(cli.json, &stats::list_run(&store, run, a.job.as_ref())?),
        None => store_listing(cli.json, &stats::list_store(&store)?),
    }
    Ok(())
}

pub(crate) fn stats(cli: &Cli) -> Result<()> {
    let store = open(cli)?;
    store_stats(cli.json, &stats::store_stats(&store)?);
    Ok(())
}

pub(crate) fn run_listing(json: bool, l: &RunListing) {
    if json {
        return print_json(l);
    }
    let rerun = match &l.rerun_of {
        Some(r) => format!(", a rerun of {r}"),
        None => String::new(),
    };
    let state = if l.expired { "expired" } else { "expires" };
    println!("run {}{rerun}: {state} on {}", l.run, l.expires_on);
    for j in &l.jobs {
        let requires: Vec<&str> = j.requires.iter().map(|r| r.as_str()).collect();
        let req = if requires.is_empty() {
            String::new()
        } else {
            format!(" (requires {})", requires.join(", "))
        };
        let status = match j.status {
            Some(JobStatus::Success) => ", succeeded",
            Some(JobStatus::Failed) => ", failed",
            None => "",
        };
        let reused = match &j.reused_from {
            Some(r) => format!(", layers kept from {r}"),
            None => String::new(),
        };
        println!(
            "  job {}{req}: {}{status}{reused}",
            j.job,
            plural(j.layers.len() as u64, "layer")
        );
        for layer in &j.layers {
            println!(
                "    layer {} manifest {}: {} files, {}",
                layer.seq,
                layer.manifest.short(),
                count(layer.files),
                bytes(layer.bytes)
            );
        }
    }
}

pub(crate) fn store_listing(json: bool, l: &StoreListing) {
    if json {
        return print_json(l);
    }
    if l.runs.is_empty() && l.caches.is_empty() {
        println!("no runs and no caches");
    }
    for r in &l.runs {
        let state = if r.expired { "expired" } else { "expires" };
        println!(
            "run {}: {}, {}; {state} on {}",
            r.run,
            plural(r.layers, "layer"),
            bytes(r.bytes),
            r.expires_on
        );
    }
    for c in &l.caches {
        println!(
            "cache {:?}: {} files, {}; saved {}, expires on {}",
            c.key,
            count(c.files),
            bytes(c.bytes),
            c.saved_on,
            c.expires_on
        );
    }
}

/// `ls --sizes`: each live run's and cache's stored bytes, alone and shared.
fn footprints(json: bool, f: &[Footprint]) {
    if json {
        return print_json(&f);
    }
    if f.is_empty() {
        println!("no live runs and no caches");
    }
    for h in f {
        println!(
            "{}: {} held alone, {} shared with others; last used {}",
            h.name,
            bytes(h.exclusive_bytes),
            bytes(h.shared_bytes),
            format_date(h.last_use)
        );
    }
}

pub(crate) fn store_stats(json: bool, s: &StoreStats) {
    if json {
        return print_json(s);
    }
    println!(
        "{}: {} runs, {} layers, {} manifests, {} chunks in {} packs; {} of files stored in {} ({:.1}x)",
        s.location,
        count(s.runs),
        count(s.layers),
        count(s.manifests),
        count(s.chunks),
        count(s.packs),
        bytes(s.logical_bytes),
        bytes(s.stored_bytes),
        s.dedup_ratio
    );
    if s.caches > 0 {
        println!(
            "{}: {} of files (stored with the workspaces above)",
            plural(s.caches, "cache entry"),
            bytes(s.cache_bytes)
        );
    }
    println!(
        "gc could reclaim {} now and {} more once condemned packs pass the grace period ({} expired runs, {} expired caches)",
        bytes(s.gc.bytes_reclaimed),
        bytes(s.gc.bytes_pending),
        count(s.gc.runs_expired.len() as u64),
        count(s.gc.caches_expired)
    );
}
