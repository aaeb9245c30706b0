//! `strata run create` and `strata run rerun`: a run and its graph.

use anyhow::{Context, Result};
use strata_store::ci::config::{CiGraph, Format, Select};
use strata_store::rerun::{self, RerunReport};
use strata_store::{Graph, JobName, RunName};

use crate::args::{Cli, CreateArgs, RerunArgs};
use crate::context::open;
use crate::output::{bytes, plural, print_json, wire};

pub(crate) fn create(cli: &Cli, a: &CreateArgs) -> Result<()> {
    let run = a.run()?;
    let graph = match &a.graph {
        Some(file) => {
            let read = graph_file(file, a)?;
            for w in &read.warnings {
                eprintln!("strata: warning: {w}");
            }
            read.graph
        }
        None => Graph::from_specs(&a.jobs)?,
    };
    let store = open(cli)?;
    let created = store.create_run(&run, graph.clone(), None)?;
    run_created(cli.json, &run, &graph, created);
    Ok(())
}

pub(crate) fn rerun(cli: &Cli, a: &RerunArgs) -> Result<()> {
    let select = if a.failed {
        rerun::Select::Failed
    } else {
        rerun::Select::Jobs(a.jobs.clone())
    };
    let store = open(cli)?;
    reran(cli.json, &rerun::rerun(&store, &a.from, &a.run, &select)?);
    Ok(())
}

/// The graph of `run create --graph FILE`, read by the CI's own reader.
fn graph_file(file: &std::path::Path, a: &CreateArgs) -> Result<CiGraph> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading graph {}", file.display()))?;
    let format = a.ci.unwrap_or_else(|| Format::guess(file, &text));
    let entry = file.strip_prefix(&a.checkout).unwrap_or(file);
    let select = match &a.workflow {
        Some(w) => Select::Workflow(w),
        None => Select::Only,
    };
    Ok(strata_store::ci::config::read(
        format,
        &a.checkout,
        entry,
        select,
    )?)
}

pub(crate) fn run_created(json: bool, run: &RunName, graph: &Graph, created: bool) {
    if json {
        print_json(&serde_json::json!({ "run": run, "created": created, "jobs": graph.jobs() }));
    } else if created {
        println!("created run {run} with jobs {}", graph.job_list());
    } else {
        println!("run {run} already exists with the same jobs");
    }
}

pub(crate) fn reran(json: bool, r: &RerunReport) {
    if json {
        return print_json(r);
    }
    let names = |v: &[JobName]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(|j| j.as_str()).collect::<Vec<_>>().join(", ")
        }
    };
    println!(
        "created run {} from {}: rerun {}; kept {} ({}, {} of files, not copied; {} written, {}){}",
        r.run,
        r.from,
        names(&r.rerun),
        names(&r.reused),
        plural(r.layers_reused, "layer"),
        bytes(r.bytes_reused),
        plural(r.objects_written, "ref"),
        bytes(r.bytes_written),
        wire(&r.network)
    );
}
