//! Job graphs from CI config files, as each CI reads them: one reader per
//! CI (`github`, `gitlab`, `circleci`, `buildkite`) and strata's own
//! `jobs: {NAME: [REQUIRES]}` (`plain`), used both by a CI job creating
//! its run and by `strata run create --graph`. A reader returns the jobs by
//! the names the config writes, each with the file and line that defines
//! it; this module checks them (every required job known, no cycle) and
//! names errors that way, then encodes the names for the store
//! (`ci::job_name`). Files are read under a checkout directory, so includes
//! and reusable workflows resolve as the CI resolves them. Knows nothing
//! about the store.

mod buildkite;
mod circleci;
mod github;
mod gitlab;
mod plain;
pub mod yaml;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::{job_name, CiSystem};
use crate::error::{Error, Result};
use crate::format::graph::{Graph, JobSpec};
use crate::id::JobName;
use yaml::{Dialect, Node, Value};

/// The kinds of config file a reader exists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A GitHub Actions workflow.
    Github,
    /// A `.gitlab-ci.yml`.
    Gitlab,
    /// A CircleCI `config.yml`.
    Circleci,
    /// A Buildkite pipeline.
    Buildkite,
    /// strata's own `jobs: {NAME: [REQUIRES]}`.
    Plain,
}

impl Format {
    /// The format of `system`'s config.
    pub fn of(system: CiSystem) -> Format {
        match system {
            CiSystem::GithubActions => Format::Github,
            CiSystem::Gitlab => Format::Gitlab,
            CiSystem::Circleci => Format::Circleci,
            CiSystem::Buildkite => Format::Buildkite,
        }
    }

    /// The format a file's path says (`.github/workflows/`, `.gitlab-ci`,
    /// `.circleci/`, `.buildkite/`), else its top-level keys: `workflows`
    /// CircleCI, `steps` Buildkite, `stages` GitLab, `jobs` whose values
    /// are lists strata's own, other `jobs` GitHub.
    pub fn guess(path: &Path, text: &str) -> Format {
        let p = path.to_string_lossy();
        if p.contains(".github/workflows/") {
            return Format::Github;
        }
        if p.contains(".gitlab-ci") {
            return Format::Gitlab;
        }
        if p.contains(".circleci/") {
            return Format::Circleci;
        }
        if p.contains(".buildkite/") {
            return Format::Buildkite;
        }
        let Ok(doc) = yaml::load(text, Dialect::Sequential) else {
            return Format::Plain;
        };
        if doc.get("workflows").is_some() {
            return Format::Circleci;
        }
        if doc.get("steps").is_some() {
            return Format::Buildkite;
        }
        match doc.get("jobs").and_then(Node::entries) {
            Some(jobs) if jobs.iter().any(|e| e.value.entries().is_some()) => Format::Github,
            Some(_) => Format::Plain,
            None if doc.get("stages").is_some() => Format::Gitlab,
            None => Format::Plain,
        }
    }
}

/// Which part of a config holds the graph, where it has several
/// (CircleCI's workflows).
#[derive(Debug, Clone, Copy)]
pub enum Select<'a> {
    /// The workflows that hold this job (the CI path: the running job).
    Job(&'a str),
    /// This workflow.
    Workflow(&'a str),
    /// The only one (an error naming them when there are several).
    Only,
}

/// A graph read from a config, with the names the config writes.
#[derive(Debug, Clone)]
pub struct CiGraph {
    /// The graph, its jobs named for the store.
    pub graph: Graph,
    /// The config file read first, relative to the checkout.
    pub file: PathBuf,
    /// What could not be followed (a remote include, ...), for the user.
    pub warnings: Vec<String>,
    written: HashMap<JobName, String>,
}

impl CiGraph {
    /// The name the config writes for a store job name.
    pub fn written<'a>(&'a self, name: &'a JobName) -> &'a str {
        self.written
            .get(name)
            .map(String::as_str)
            .unwrap_or(name.as_str())
    }

    /// Every job by its written name, comma-separated, for messages.
    pub fn known(&self) -> String {
        self.names().join(", ")
    }

    /// Every job's written name, in the graph's order.
    pub fn names(&self) -> Vec<String> {
        self.graph
            .jobs()
            .iter()
            .map(|j| self.written(&j.name).to_string())
            .collect()
    }

    /// The store name of a job the config writes as `written`.
    pub fn find(&self, written: &str) -> Option<JobName> {
        let name = job_name(written);
        self.graph.index_of(&name).map(|_| name)
    }

    /// The written names of every job `written` transitively requires.
    pub fn ancestors(&self, written: &str) -> Option<BTreeSet<String>> {
        let i = self.graph.index_of(&job_name(written))?;
        Some(
            self.graph
                .ancestors(i)
                .iter()
                .map(|&a| self.written(&self.graph.jobs()[a].name).to_string())
                .collect(),
        )
    }
}

/// One job as a reader found it.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Its name as the config writes it (as the CI shows it).
    pub name: String,
    /// The jobs it waits for, by written name.
    pub requires: Vec<String>,
    /// The file and line that define it.
    pub at: (PathBuf, usize),
}

/// What a reader needs: the checkout, the file it started from, and the
/// warnings it collects.
pub(crate) struct Ctx {
    pub checkout: PathBuf,
    pub entry: PathBuf,
    pub warnings: Vec<String>,
}

impl Ctx {
    /// Reads and parses `path` (relative to the checkout).
    pub fn load(&self, path: &Path, dialect: Dialect) -> Result<Node> {
        let text =
            std::fs::read_to_string(self.checkout.join(path)).map_err(|e| Error::Config {
                file: path.to_path_buf(),
                line: None,
                detail: format!("cannot read it under {}: {e}", self.checkout.display()),
            })?;
        yaml::load(&text, dialect).map_err(|e| Error::Config {
            file: path.to_path_buf(),
            line: Some(e.line),
            detail: e.message,
        })
    }

    /// An error at `line` of `file`.
    pub fn error(file: &Path, line: usize, detail: String) -> Error {
        Error::Config {
            file: file.to_path_buf(),
            line: Some(line),
            detail,
        }
    }
}

/// The graph of the config `entry` (relative to `checkout`), read as
/// `format`'s CI reads it.
pub fn read(format: Format, checkout: &Path, entry: &Path, select: Select) -> Result<CiGraph> {
    let mut ctx = Ctx {
        checkout: checkout.to_path_buf(),
        entry: entry.to_path_buf(),
        warnings: Vec::new(),
    };
    let specs = match format {
        Format::Github => github::read(&mut ctx)?,
        Format::Gitlab => gitlab::read(&mut ctx)?,
        Format::Circleci => circleci::read(&mut ctx, select)?,
        Format::Buildkite => buildkite::read(&mut ctx)?,
        Format::Plain => plain::read(&mut ctx)?,
    };
    build(specs, ctx)
}

/// Checks `specs` by their written names and builds the graph.
fn build(specs: Vec<Spec>, ctx: Ctx) -> Result<CiGraph> {
    if specs.is_empty() {
        return Err(Error::Config {
            file: ctx.entry.clone(),
            line: None,
            detail: "the config defines no job".into(),
        });
    }
    let mut written: HashMap<JobName, String> = HashMap::new();
    for s in &specs {
        let name = job_name(&s.name);
        if let Some(other) = written.insert(name, s.name.clone()) {
            return Err(Ctx::error(
                &s.at.0,
                s.at.1,
                format!("job {:?} is defined twice ({other:?})", s.name),
            ));
        }
    }
    for s in &specs {
        for r in &s.requires {
            if !written.contains_key(&job_name(r)) {
                let mut known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                known.sort_unstable();
                return Err(Ctx::error(
                    &s.at.0,
                    s.at.1,
                    format!(
                        "job {:?} needs {r:?}, which is not a job of this config (its jobs: {})",
                        s.name,
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    let jobs = specs
        .iter()
        .map(|s| JobSpec {
            name: job_name(&s.name),
            requires: dedup(s.requires.iter().map(|r| job_name(r)).collect()),
        })
        .collect();
    let graph = Graph::new(jobs).map_err(|e| match e {
        Error::Cycle { cycle } => Error::Config {
            file: ctx.entry.clone(),
            line: None,
            detail: format!(
                "the jobs wait for each other in a circle: {}",
                cycle
                    .iter()
                    .map(|c| written
                        .get(&JobName::new(c).expect("a graph name"))
                        .cloned()
                        .unwrap_or_else(|| c.clone()))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ),
        },
        e => e,
    })?;
    Ok(CiGraph {
        graph,
        file: ctx.entry,
        warnings: ctx.warnings,
        written,
    })
}

fn dedup(mut v: Vec<JobName>) -> Vec<JobName> {
    let mut seen = BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// The name GitLab gives every leg of a `parallel` job, as the config
/// names the job: `rspec 1/20` is `rspec`, `deploy: [aws, app1]` is
/// `deploy`. Other names are themselves.
pub fn gitlab_job_of_leg(name: &str) -> &str {
    if let Some((base, n)) = name.rsplit_once(' ') {
        let leg = n.split_once('/').is_some_and(|(i, t)| {
            !i.is_empty()
                && !t.is_empty()
                && (i.bytes().chain(t.bytes())).all(|b| b.is_ascii_digit())
        });
        if leg {
            return base;
        }
    }
    if name.ends_with(']') {
        if let Some((base, _)) = name.split_once(": [") {
            return base;
        }
    }
    name
}

/// A string or a list of strings, or of mappings' `key` values.
pub(crate) fn names(v: Option<&Node>, key: &str) -> Vec<String> {
    match v.map(|n| &n.value) {
        Some(Value::Scalar(s)) => vec![s.clone()],
        Some(Value::Seq(items)) => items
            .iter()
            .filter_map(|x| match &x.value {
                Value::Scalar(s) => Some(s.clone()),
                Value::Map(_) => x.get(key).and_then(Node::as_str).map(str::to_string),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests;
