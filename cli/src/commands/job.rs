//! `strata job finish`: a job's result, which reruns read.

use anyhow::Result;
use strata_store::{lifecycle, JobName, JobResult, JobStatus, RunName};

use crate::args::{Cli, FinishArgs};
use crate::context::open;
use crate::output::print_json;

pub(crate) fn finish(cli: &Cli, a: &FinishArgs) -> Result<()> {
    let status: JobStatus = a.status.parse()?;
    let store = open(cli)?;
    let (run, job, _) = a.rj.resolve(&store)?;
    let result = lifecycle::finish_job(&store, &run, &job, status)?;
    finished(cli.json, &run, &job, &result);
    Ok(())
}

pub(crate) fn finished(json: bool, run: &RunName, job: &JobName, r: &JobResult) {
    if json {
        return print_json(r);
    }
    let status = match r.status {
        JobStatus::Success => "succeeded",
        JobStatus::Failed => "failed",
    };
    println!("job {job} of run {run} {status}");
}
