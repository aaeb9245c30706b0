//! The tools compared: strata and what CI users run today. Each persists a
//! tree as run `n` into its own repository and attaches (restores) run `n`
//! into a directory, as a measured command. This module owns the `Tool`
//! interface; each family of tools is a submodule (`strata`, its local and
//! HTTP stores; `tarball`, one archive per job; `backups`, restic, borg and
//! casync).

mod backups;
mod strata;
mod tarball;

pub use backups::{Borg, Casync, Restic};
pub use strata::{start_server, start_server_logged, Strata, StrataHttp};
pub use tarball::{Tarball, TarballNet};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::measure::{disk_bytes, Sample};

/// A measured step: the sample and the bytes that would cross the network
/// (`None` where the tool gives no honest way to count them).
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub sample: Sample,
    pub network_bytes: Option<u64>,
    /// Of `network_bytes`, those that were file content (strata's attach
    /// also reads manifests).
    pub content_bytes: Option<u64>,
}

pub trait Tool {
    fn name(&self) -> &'static str;
    /// Creates an empty repository in `repo` (untimed).
    fn init(&self, repo: &Path) -> Result<()>;
    /// Persists the directory `tree` as run `n` (timed).
    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step>;
    /// Attaches run `n` into `target`, which may hold an earlier run's tree
    /// (timed). The tree appears as `target/<name of the persisted dir>`.
    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step>;
    /// Whether attach makes use of what `target` already holds; tools
    /// that do not are given a fresh directory for the warm scenario.
    fn reuses_target(&self) -> bool {
        false
    }
    /// The repository's size in bytes, as `du -sb` counts it.
    fn repo_bytes(&self, repo: &Path) -> u64 {
        disk_bytes(repo, &[])
    }
}

pub(crate) fn split(tree: &Path) -> Result<(PathBuf, String)> {
    let parent = tree.parent().context("tree has no parent")?.to_path_buf();
    let name = tree
        .file_name()
        .and_then(|n| n.to_str())
        .context("tree name is not UTF-8")?
        .to_string();
    Ok((parent, name))
}

pub(crate) fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// restic, borg and casync: those installed; `missing` hears the name of
/// each one that is not.
pub fn installed_baselines(missing: &mut dyn FnMut(&str)) -> Vec<Box<dyn Tool>> {
    let mut found = Vec::new();
    for (program, tool) in [
        ("restic", Box::new(Restic) as Box<dyn Tool>),
        ("borg", Box::new(Borg)),
        ("casync", Box::new(Casync)),
    ] {
        match available(program) {
            true => found.push(tool),
            false => missing(program),
        }
    }
    found
}

/// Whether `program` is on the PATH.
pub fn available(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
