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
        let demo = Demo {
            store: &store,
            scratch,
            run,
            n,
        };
        demo.workflow(files, change, &mut steps)?;
    }
    Ok(DemoReport {
        store: store_dir,
        steps,
    })
}

/// Run `n` of the demo workflow: its jobs each on a "machine" of their own
/// (a directory under the scratch directory).
struct Demo<'a> {
    store: &'a Store,
    scratch: &'a Path,
    run: RunName,
    n: u64,
}

impl Demo<'_> {
    /// The jobs of the workflow in order, `change` of the generated tree
    /// changed from the first run's.
    fn workflow(&self, files: u64, change: f64, steps: &mut Vec<Step>) -> Result<()> {
        let m = self.machine("compile-assets");
        write(&m, "assets/app.css", "body { margin: 0 }\n")?;
        write(&m, "assets/app.js", "console.log('app');\n")?;
        self.persist("compile-assets", &["assets"], steps)?;

        let m = self.machine("compile-code");
        synth::generate(&m, files, 42).ctx("generate tree in", &m)?;
        if change > 0.0 {
            synth::mutate(&m.join("node_modules"), change, self.n).ctx("change tree in", &m)?;
        }
        write(&m, "build/code.jar", "compiled by compile-code\n")?;
        self.persist("compile-code", &["node_modules", "build"], steps)?;

        let m = self.attach("test", steps)?;
        write(&m, "build/code.jar", "compiled, then tested by test\n")?;
        write(&m, "test-results/junit.xml", "<testsuite tests=\"42\"/>\n")?;
        self.persist("test", &["build/code.jar", "test-results"], steps)?;

        let m = self.attach("code-coverage", steps)?;
        write(&m, "coverage/lcov.info", "TN:\nend_of_record\n")?;
        self.persist("code-coverage", &["coverage"], steps)?;

        self.attach("deploy", steps)?;
        let plan = plan(self.store, &self.run, &job("deploy"), None)?;
        let jar = RelPath::new(b"build/code.jar".to_vec()).expect("valid");
        if let Some(e) = plan.entries.iter().find(|e| e.path == jar) {
            steps.push(Step::Origin {
                job: job("deploy"),
                path: jar.to_string(),
                from: plan.layers[e.layer].job.clone(),
            });
        }
        Ok(())
    }

    fn machine(&self, j: &str) -> PathBuf {
        self.scratch.join(format!("run-{}/{j}", self.n))
    }

    fn persist(&self, j: &str, paths: &[&str], steps: &mut Vec<Step>) -> Result<()> {
        let report = persist(
            self.store,
            &PersistRequest {
                run: self.run.clone(),
                job: job(j),
                root: self.machine(j),
                paths: paths.iter().map(PathBuf::from).collect(),
                allow_empty: false,
                writer: None,
            },
        )?;
        steps.push(Step::Persisted(report));
        Ok(())
    }

    fn attach(&self, j: &str, steps: &mut Vec<Step>) -> Result<PathBuf> {
        let at = self.machine(j);
        let report = attach(
            self.store,
            &AttachRequest {
                run: self.run.clone(),
                job: job(j),
                at: at.clone(),
                keep_setuid: false,
                only: Vec::new(),
            },
        )?;
        steps.push(Step::Attached(report));
        Ok(at)
    }
}

/// Writes `text` to `dir/rel`, making its directory.
fn write(dir: &Path, rel: &str, text: &str) -> Result<()> {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().expect("has parent")).ctx("create directory", &p)?;
    fs::write(&p, text).ctx("write", &p)
}
