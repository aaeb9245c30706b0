//! Reruns: a new run with an earlier run's graph, keeping the layers of the
//! jobs that need not run again.
//!
//! `rerun(from R1, to R2, jobs)`: the rerun set is the named jobs (or R1's
//! jobs without a success, for `--failed`) and every job downstream of
//! them. Every other job keeps its layers in R2 by reference: R2 gets new
//! layer refs pointing at the same manifests, and the job's success result,
//! so no chunk, pack or manifest is copied and the cost depends on the
//! number of layers, never on their size. Rerun jobs persist anew in R2;
//! attach in R2 follows the usual rules over reused and new layers. A rerun
//! of a rerun works the same way (R2's results say what succeeded).
//!
//! `runs/R2/rerun` records what was done; it is written last, and a rerun
//! interrupted before it can be run again with the same arguments.
//! This module knows nothing about chunks or files.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::backend::Traffic;
use crate::error::{Error, Result};
use crate::id::{JobName, RunName};
use crate::ops::lifecycle::{check_live, job_results};

use crate::format::graph::Graph;
use crate::format::keys::rerun_key;
use crate::format::keys::{job_results_prefix, timed_key};
use crate::format::records::{JobResult, JobStatus, Record, RerunRecord};
use crate::repo::Store;

/// Which jobs to run again.
#[derive(Debug, Clone)]
pub enum Select {
    /// Those without a success in the earlier run.
    Failed,
    /// These jobs.
    Jobs(Vec<JobName>),
    /// Every job that left no layer, and no other: a CI's own rerun
    /// (`ci_run`), where a job that runs again replaces its kept layers.
    Unpersisted,
}

/// What a rerun did.
#[derive(Debug, Clone, Serialize)]
pub struct RerunReport {
    /// The run rerun.
    pub from: RunName,
    /// The new run.
    pub run: RunName,
    /// Jobs that run again.
    pub rerun: Vec<JobName>,
    /// Jobs whose layers were kept.
    pub reused: Vec<JobName>,
    /// Layer refs written for the reused jobs (each a few dozen bytes).
    pub layers_reused: u64,
    /// Bytes of the reused layers' files, not copied.
    pub bytes_reused: u64,
    /// Objects and bytes this rerun wrote to the store: refs and records.
    pub objects_written: u64,
    /// Bytes of objects written to the store.
    pub bytes_written: u64,
    /// Bytes and requests that crossed the network.
    pub network: Traffic,
}

/// Creates run `to` as a rerun of `from`: the jobs `select` picks run
/// again; every other job keeps its layers, by reference.
pub fn rerun(store: &Store, from: &RunName, to: &RunName, select: &Select) -> Result<RerunReport> {
    let traffic = store.traffic();
    if from == to {
        return Err(Error::RerunInto {
            run: to.clone(),
            detail: "a run cannot be a rerun of itself; name a new run".into(),
        });
    }
    let source = store.run(from)?;
    check_live(store, from)?;
    let graph = &source.graph;
    let results = job_results(store, from)?;
    let again = rerun_set(store, from, graph, &results, select)?;
    // A rerun belongs to the ref its run was created for.
    if !store.create_run(to, graph.clone(), source.ref_scope.clone())? {
        check_resumable(store, from, to, graph, &again)?;
    }
    let mut report = RerunReport {
        from: from.clone(),
        run: to.clone(),
        rerun: Vec::new(),
        reused: Vec::new(),
        layers_reused: 0,
        bytes_reused: 0,
        objects_written: 1,
        bytes_written: 0,
        network: Traffic::default(),
    };
    let now = store.now();
    for (i, job) in graph.jobs().iter().enumerate() {
        let name = &job.name;
        if again.contains(&i) {
            report.rerun.push(name.clone());
            continue;
        }
        report.reused.push(name.clone());
        let result = results.get(name).copied().unwrap_or(JobResult {
            status: JobStatus::Success,
            finished: now,
        });
        keep_job(store, (from, to), name, result, &mut report)?;
    }
    let record = RerunRecord {
        from: from.clone(),
        rerun: report.rerun.clone(),
        reused: report.reused.clone(),
        created: now,
    };
    let bytes = record.encode();
    store.backend().put(&rerun_key(to), &bytes)?;
    report.objects_written += 1;
    report.bytes_written += bytes.len() as u64;
    report.network = store.traffic().since(traffic);
    Ok(report)
}

/// The jobs that run again (by index in `graph`): those `select` picks
/// and everything downstream of them (only the picked for `Unpersisted`:
/// the CI decides what runs again). Picking nothing is an error, but for
/// `Unpersisted`.
fn rerun_set(
    store: &Store,
    from: &RunName,
    graph: &Graph,
    results: &BTreeMap<JobName, JobResult>,
    select: &Select,
) -> Result<BTreeSet<usize>> {
    let unpersisted = matches!(select, Select::Unpersisted);
    let seeds: Vec<usize> = match select {
        Select::Unpersisted => {
            let mut none = Vec::new();
            for (i, j) in graph.jobs().iter().enumerate() {
                if store.layers(from, &j.name)?.is_empty() {
                    none.push(i);
                }
            }
            none
        }
        Select::Failed => graph
            .jobs()
            .iter()
            .enumerate()
            .filter(|(_, j)| {
                results
                    .get(&j.name)
                    .is_none_or(|r| r.status != JobStatus::Success)
            })
            .map(|(i, _)| i)
            .collect(),
        Select::Jobs(names) => names
            .iter()
            .map(|n| {
                graph.index_of(n).ok_or_else(|| Error::UnknownJob {
                    run: from.clone(),
                    job: n.clone(),
                    known: graph.job_list(),
                })
            })
            .collect::<Result<_>>()?,
    };
    if seeds.is_empty() && !unpersisted {
        return Err(Error::NothingToRerun { run: from.clone() });
    }
    Ok((0..graph.jobs().len())
        .filter(|&j| {
            seeds
                .iter()
                .any(|&s| s == j || (!unpersisted && graph.is_ancestor(s, j)))
        })
        .collect())
}

/// A job the rerun keeps: its layer refs copied from `from` to `to` (the
/// layers themselves by reference; refs an interrupted rerun already
/// copied are not copied twice), and its result.
fn keep_job(
    store: &Store,
    (from, to): (&RunName, &RunName),
    name: &JobName,
    result: JobResult,
    report: &mut RerunReport,
) -> Result<()> {
    let have: BTreeSet<_> = store
        .layers(to, name)?
        .into_iter()
        .map(|l| (l.seq, l.record.manifest))
        .collect();
    for layer in store.layers(from, name)? {
        report.layers_reused += 1;
        report.bytes_reused += layer.record.totals.bytes;
        if have.contains(&(layer.seq, layer.record.manifest)) {
            continue;
        }
        let written =
            store
                .catalog()
                .put_layer(store.backend(), to, name, layer.seq, &layer.record)?;
        report.objects_written += 1;
        report.bytes_written += written as u64;
    }
    let key = timed_key(&job_results_prefix(to, name), result.finished);
    let bytes = result.encode();
    store.backend().put(&key, &bytes)?;
    report.objects_written += 1;
    report.bytes_written += bytes.len() as u64;
    Ok(())
}

/// `to` exists already: the rerun goes on only if `to` is this same rerun,
/// interrupted or done (every layer and result it holds is one this rerun
/// copies from `from`); anything else in it is another run's work, which a
/// rerun must neither mix with nor overwrite.
fn check_resumable(
    store: &Store,
    from: &RunName,
    to: &RunName,
    graph: &crate::format::graph::Graph,
    again: &BTreeSet<usize>,
) -> Result<()> {
    let refuse = |detail: String| Error::RerunInto {
        run: to.clone(),
        detail,
    };
    if let Some(record) = rerun_of(store, to)? {
        if &record.from != from {
            return Err(refuse(format!(
                "it is already a rerun of {}; name a new run",
                record.from
            )));
        }
    }
    let results = job_results(store, to)?;
    let source_results = job_results(store, from)?;
    for (i, job) in graph.jobs().iter().enumerate() {
        let name = &job.name;
        let mine = store.layers(to, name)?;
        if again.contains(&i) {
            if !mine.is_empty() || results.contains_key(name) {
                return Err(refuse(format!(
                    "it already exists, and job {name} (which this rerun runs again) has \
                     layers or a result there; name a new run"
                )));
            }
            continue;
        }
        let theirs: BTreeSet<_> = store
            .layers(from, name)?
            .into_iter()
            .map(|l| (l.seq, l.record.manifest))
            .collect();
        if let Some(l) = mine
            .iter()
            .find(|l| !theirs.contains(&(l.seq, l.record.manifest)))
        {
            return Err(refuse(format!(
                "it already exists with other content (layer {} of job {name} is not one of {from}'s); \
                 name a new run",
                l.key
            )));
        }
        if let (Some(r), Some(s)) = (results.get(name), source_results.get(name)) {
            if r.status != s.status {
                return Err(refuse(format!(
                    "it already exists with other content (job {name}'s result differs from {from}'s); \
                     name a new run"
                )));
            }
        }
    }
    Ok(())
}

/// The rerun record of `run`, if it is a rerun.
pub fn rerun_of(store: &Store, run: &RunName) -> Result<Option<RerunRecord>> {
    let key = rerun_key(run);
    match store.backend().get(&key) {
        Ok(b) => RerunRecord::decode(&key, &b).map(Some),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
