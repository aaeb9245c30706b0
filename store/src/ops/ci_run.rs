//! The run of a CI job, with no `--run`, `--job` or `run create`: the
//! CI's identity (`ci`) names the run and job; the run is created on first
//! use from the config the CI names; a later attempt of a GitHub run (its
//! "re-run" buttons) is created as a rerun of the attempt before it, so it
//! keeps the layers of the jobs that do not run again, and a job that does
//! run again replaces, not stacks on, the layers its earlier attempt left.
//! This module knows nothing about files or chunks.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::ci::CiContext;
use crate::error::{Error, Result};
use crate::format::keys::rerun_key;
use crate::format::records::{Record, RerunRecord, Writer};
use crate::id::{JobName, ManifestId, RunName};
use crate::ops::rerun::{rerun, Select};
use crate::repo::Store;

/// The run and job a CI job uses, and how the run came to be.
#[derive(Debug, Clone, Serialize)]
pub struct CiRun {
    /// The store's run.
    pub run: RunName,
    /// The store's job.
    pub job: JobName,
    /// Whether this command created the run.
    pub created: bool,
    /// The earlier attempt this run reruns, if it was created so.
    pub rerun_of: Option<RunName>,
    /// What the config reader could not follow, for the user.
    pub warnings: Vec<String>,
}

/// The run of `ci` in `store`, created if this is its first use: from the
/// config file under `checkout`, or (a later GitHub attempt) as a rerun of
/// the latest earlier attempt the store holds, keeping the layers of every
/// job that left some there (a job that runs again replaces them:
/// `replace_kept_layers`).
pub fn prepare(store: &Store, ci: &CiContext, checkout: &Path) -> Result<CiRun> {
    let run = ci.run_name();
    let job = ci.job_name();
    let mut out = CiRun {
        run: run.clone(),
        job: job.clone(),
        created: false,
        rerun_of: None,
        warnings: Vec::new(),
    };
    match store.run(&run) {
        Ok(record) if record.graph.index_of(&job).is_some() => return Ok(out),
        // The CI's name for the job is not the config's (a reusable
        // workflow's job, a Buildkite label with matrix values): the
        // config says which it is.
        Ok(_) => {
            let graph = ci.read_config(checkout)?;
            out.job = ci.job_in(&graph)?;
            return Ok(out);
        }
        Err(Error::UnknownRun { .. }) => {}
        Err(e) => return Err(e),
    }
    let earlier = ci.attempt.unwrap_or(1);
    for attempt in (1..earlier).rev() {
        let from = ci.run_name_at(Some(attempt));
        match rerun(store, &from, &run, &Select::Unpersisted) {
            Ok(_) => {
                out.created = true;
                out.rerun_of = Some(from);
                if store.run(&run)?.graph.index_of(&job).is_none() {
                    out.job = ci.job_in(&ci.read_config(checkout)?)?;
                }
                return Ok(out);
            }
            Err(Error::UnknownRun { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    let graph = ci.read_config(checkout)?;
    out.job = ci.job_in(&graph)?;
    out.warnings = graph.warnings;
    out.created = store.create_run(&run, graph.graph)?;
    Ok(out)
}

/// After a persist by `writer` (a leg and attempt of `job` in `run`): the
/// layers an earlier attempt of the same leg wrote go (a GitLab retry, a
/// Buildkite retry, a CircleCI rerun into the same workspace), and so do
/// the copies a rerun run kept of an earlier GitHub attempt's layers, so
/// the leg's layers are this attempt's only. Returns how many were dropped.
pub fn replace_earlier_attempts(
    store: &Store,
    run: &RunName,
    job: &JobName,
    writer: &Writer,
) -> Result<usize> {
    let mut dropped = 0;
    for layer in store.layers(run, job)? {
        let earlier = layer
            .record
            .writer
            .as_ref()
            .is_some_and(|w| w.leg == writer.leg && w.attempt != writer.attempt);
        if earlier {
            store.backend().delete(&layer.key)?;
            dropped += 1;
        }
    }
    Ok(dropped + replace_kept_layers(store, run, job)?)
}

/// The copies of an earlier GitHub attempt's layers of `job` that a rerun
/// run kept, dropped once the job persists in this attempt.
fn replace_kept_layers(store: &Store, run: &RunName, job: &JobName) -> Result<usize> {
    let record = match store.backend().get(&rerun_key(run)) {
        Ok(bytes) => RerunRecord::decode(&rerun_key(run), &bytes)?,
        Err(Error::NotFound { .. }) => return Ok(0),
        Err(e) => return Err(e),
    };
    if !record.reused.contains(job) {
        return Ok(0);
    }
    // The kept copies are the earlier attempt's layers of the job, under
    // the same sequence numbers; this attempt's persists come after them.
    let kept: HashSet<(u64, ManifestId)> = store
        .layers(&record.from, job)?
        .into_iter()
        .map(|l| (l.seq, l.record.manifest))
        .collect();
    let mut dropped = 0;
    for layer in store.layers(run, job)? {
        if kept.contains(&(layer.seq, layer.record.manifest)) {
            store.backend().delete(&layer.key)?;
            dropped += 1;
        }
    }
    Ok(dropped)
}
