//! The run of a CI job, with no `--run`, `--job` or `run create`: the
//! CI's identity (`ci`) names the run and job; the run is created on first
//! use from the config the CI names; a later attempt of a GitHub run (its
//! "re-run" buttons) is created as a rerun of the attempt before it, so it
//! keeps the layers of the jobs that do not run again (a job that does run
//! again supersedes them: format.md, "Layer refs"). A run records the ref
//! of the job that created it, and a job of another ref refuses it.
//! This module knows nothing about files or chunks.

use std::path::Path;

use serde::Serialize;

use crate::ci::CiContext;
use crate::error::{Error, Result};
use crate::id::{JobName, RunName};
use crate::meta::catalog::require_ref;
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
/// job that left some there. A run (or earlier attempt) created for
/// another ref than this job's is `Error::RunOfAnotherRef`.
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
    let ours = ci.cache_scopes().map(|s| s.write);
    match store.run(&run) {
        Ok(record) => {
            require_ref(&run, &record, ours.as_deref())?;
            if record.graph.index_of(&job).is_none() {
                // The CI's name for the job is not the config's (a
                // reusable workflow's job, a Buildkite label with matrix
                // values): the config says which it is.
                let graph = ci.read_config(checkout)?;
                out.job = ci.job_in(&graph)?;
            }
            return Ok(out);
        }
        Err(Error::UnknownRun { .. }) => {}
        Err(e) => return Err(e),
    }
    // A run an earlier strata created under its old name (a build that
    // began before the upgrade) is still this run.
    for old in ci.earlier_run_names() {
        match store.run(&old) {
            Ok(record) => {
                require_ref(&old, &record, ours.as_deref())?;
                out.run = old;
                if record.graph.index_of(&job).is_none() {
                    out.job = ci.job_in(&ci.read_config(checkout)?)?;
                }
                return Ok(out);
            }
            Err(Error::UnknownRun { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let earlier = ci.attempt.unwrap_or(1);
    for attempt in (1..earlier).rev() {
        let from = ci.run_name_at(Some(attempt));
        match store.run(&from) {
            Ok(record) => require_ref(&from, &record, ours.as_deref())?,
            Err(Error::UnknownRun { .. }) => continue,
            Err(e) => return Err(e),
        }
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
    out.created = store.create_run(&run, graph.graph, ours)?;
    Ok(out)
}
