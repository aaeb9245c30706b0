//! `strata rm --run R` and `strata cache rm --key K`: removing a run's
//! workspace or a cache key's entries now (docs/lifecycle.md, "Removing a
//! run or a cache").

use anyhow::{Context, Result};
use strata_store::remove::{self, RemoveReport};

use crate::args::{CacheRmArgs, Cli, RmArgs};
use crate::context::open;
use crate::output::print_json;

pub(crate) fn run(cli: &Cli, a: &RmArgs) -> Result<()> {
    let store = open(cli)?;
    // Recorded in the run's `expired` record; over a server, the server
    // records its grant's name instead.
    let by = std::env::var("USER").unwrap_or_else(|_| "a local user".into());
    let report = remove::remove_run(&store, &a.run, &by, a.force)
        .with_context(|| format!("cannot remove run {}", a.run))?;
    removed(cli.json, &report);
    Ok(())
}

pub(crate) fn cache(cli: &Cli, a: &CacheRmArgs) -> Result<()> {
    let store = open(cli)?;
    let report = remove::remove_cache(&store, &a.key, a.force)
        .with_context(|| format!("cannot remove cache key {:?}", a.key))?;
    removed(cli.json, &report);
    Ok(())
}

fn removed(json: bool, r: &RemoveReport) {
    if json {
        return print_json(r);
    }
    for name in &r.removed {
        println!("removed {name}; its chunks go with gc, after the grace period");
    }
}
