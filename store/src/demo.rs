//! `strata demo`: the README's first command. In a temporary store it runs
//! a CircleCI-style workflow twice (the second time after a small
//! dependency change) with each job in its own directory, as on separate
//! machines, and returns what every job persisted and saw.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::format::graph::Graph;
use crate::format::manifest::RelPath;
use crate::id::{JobName, RunName};
use crate::ops::attach::{attach, plan, AttachReport, AttachRequest};
use crate::ops::persist::{persist, PersistReport, PersistRequest};
use crate::repo::{Quiet, Store};
use crate::synth;

/// The seeds' workflow: compile-assets and compile-code, then test;
/// code-coverage after compile-code; deploy after test and code-coverage.
pub const WORKFLOW: &[&str] = &[
    "compile-assets",
    "compile-code",
    "test:compile-assets,compile-code",
    "code-coverage:compile-code",
    "deploy:test,code-coverage",
];

/// One step of the demo, as it happened.
#[derive(Debug)]
pub enum Step {
    /// The run was created.
    RunCreated {
        /// The run.
        run: RunName,
        /// Its jobs and what they require, for a person.
        jobs: String,
    },
    /// A job persisted a layer.
    Persisted(PersistReport),
    /// A job attached its upstream layers.
    Attached(AttachReport),
    /// Which job's layer a path came from, as seen by a job.
    Origin {
        /// The job.
        job: JobName,
        /// The path in conflict.
        path: String,
        /// The job whose layer wins the path.
        from: JobName,
    },
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoReport {
    /// The demo's store directory.
    pub store: PathBuf,
    /// Its steps, in order.
    pub steps: Vec<Step>,
}

/// Runs the demo under `scratch` (created, and removed afterwards unless
/// `keep`), with a `node_modules` of about `files` files.
pub fn run(scratch: &Path, files: u64, keep: bool) -> Result<DemoReport> {
    fs::create_dir_all(scratch).ctx("create directory", scratch)?;
    let result = run_in(scratch, files);
    if !keep {
        let _ = fs::remove_dir_all(scratch);
    }
    result
}

fn job(name: &str) -> JobName {
    JobName::new(name).expect("demo job names are valid")
}

fn run_in(scratch: &Path, files: u64) -> Result<DemoReport> {
    let store_dir = scratch.join("store");
    let store = Store::open(&store_dir, &Quiet)?;
    let mut steps = Vec::new();
    for (n, change) in [(1, 0.0), (2, 0.01)] {
        let run = RunName::new(&format!("demo-run-{n}"))?;
        store.create_run(&run, Graph::from_specs(WORKFLOW)?, None)?;
        steps.push(Step::RunCreated {
            run: run.clone(),
            jobs: WORKFLOW.join(" "),
        });
        let machine = |j: &str| scratch.join(format!("run-{n}/{j}"));
        let write = |dir: &Path, rel: &str, text: &str| -> Result<()> {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().expect("has parent")).ctx("create directory", &p)?;
            fs::write(&p, text).ctx("write", &p)
        };
        let persist_job = |j: &str, paths: &[&str], steps: &mut Vec<Step>| -> Result<()> {
            let report = persist(
                &store,
                &PersistRequest {
                    run: run.clone(),
                    job: job(j),
                    root: machine(j),
                    paths: paths.iter().map(PathBuf::from).collect(),
                    allow_empty: false,
                    writer: None,
                },
            )?;
            steps.push(Step::Persisted(report));
            Ok(())
        };

        let m = machine("compile-assets");
        write(&m, "assets/app.css", "body { margin: 0 }\n")?;
        write(&m, "assets/app.js", "console.log('app');\n")?;
        persist_job("compile-assets", &["assets"], &mut steps)?;

        let m = machine("compile-code");
        synth::generate(&m, files, 42).ctx("generate tree in", &m)?;
        if change > 0.0 {
            synth::mutate(&m.join("node_modules"), change, n).ctx("change tree in", &m)?;
        }
        write(&m, "build/code.jar", "compiled by compile-code\n")?;
        persist_job("compile-code", &["node_modules", "build"], &mut steps)?;

        let attach_job = |j: &str, steps: &mut Vec<Step>| -> Result<PathBuf> {
            let at = machine(j);
            let report = attach(
                &store,
                &AttachRequest {
                    run: run.clone(),
                    job: job(j),
                    at: at.clone(),
                    keep_setuid: false,
                    only: Vec::new(),
                },
            )?;
            steps.push(Step::Attached(report));
            Ok(at)
        };
        let m = attach_job("test", &mut steps)?;
        write(&m, "build/code.jar", "compiled, then tested by test\n")?;
        write(&m, "test-results/junit.xml", "<testsuite tests=\"42\"/>\n")?;
        persist_job("test", &["build/code.jar", "test-results"], &mut steps)?;

        let m = attach_job("code-coverage", &mut steps)?;
        write(&m, "coverage/lcov.info", "TN:\nend_of_record\n")?;
        persist_job("code-coverage", &["coverage"], &mut steps)?;

        attach_job("deploy", &mut steps)?;
        let plan = plan(&store, &run, &job("deploy"), None)?;
        let jar = RelPath::new(b"build/code.jar".to_vec()).expect("valid");
        if let Some(e) = plan.entries.iter().find(|e| e.path == jar) {
            steps.push(Step::Origin {
                job: job("deploy"),
                path: jar.to_string(),
                from: plan.layers[e.layer].job.clone(),
            });
        }
    }
    Ok(DemoReport {
        store: store_dir,
        steps,
    })
}
