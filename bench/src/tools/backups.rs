//! The deduplicating backup tools CI users reach for: restic, borg and
//! casync, each on its own repository.

use std::path::Path;

use anyhow::{Context, Result};

use super::{q, split, Step, Tool};
use crate::measure::run;

/// Runs a backup command and counts what the repository gained as the
/// bytes that would cross the network.
fn backup(
    tool: &dyn Tool,
    repo: &Path,
    script: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> Result<Step> {
    let before = tool.repo_bytes(repo);
    let (sample, _) = run(script, dir, env)?;
    Ok(Step {
        sample,
        network_bytes: Some(tool.repo_bytes(repo) - before),
        content_bytes: None,
    })
}

/// Runs a restore command; what it reads is not counted.
fn restore(script: &str, dir: &Path, env: &[(&str, &str)]) -> Result<Step> {
    let (sample, _) = run(script, dir, env)?;
    Ok(Step {
        sample,
        network_bytes: None,
        content_bytes: None,
    })
}

#[derive(Debug)]
pub struct Restic;

const RESTIC_ENV: &[(&str, &str)] = &[
    ("RESTIC_PASSWORD", "bench"),
    ("RESTIC_CACHE_DIR", "/tmp/strata-bench-restic-cache"),
];

impl Tool for Restic {
    fn name(&self) -> &'static str {
        "restic"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        std::fs::create_dir_all(repo.parent().context("repo has no parent")?)?;
        run(
            &format!("restic init -q --repository-version 2 --repo {}", q(repo)),
            Path::new("/"),
            RESTIC_ENV,
        )?;
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let (parent, name) = split(tree)?;
        let script = format!(
            "restic -r {} backup -q --no-cache --host bench --tag run-{n} '{name}'",
            q(repo)
        );
        backup(self, repo, &script, &parent, RESTIC_ENV)
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        let script = format!(
            "restic -r {} restore -q --no-cache latest --tag run-{n} --target {}",
            q(repo),
            q(target)
        );
        restore(&script, Path::new("/"), RESTIC_ENV)
    }
}

#[derive(Debug)]
pub struct Borg;

const BORG_ENV: &[(&str, &str)] = &[
    ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes"),
    ("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes"),
    ("BORG_CACHE_DIR", "/tmp/strata-bench-borg-cache"),
];

impl Tool for Borg {
    fn name(&self) -> &'static str {
        "borg"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        std::fs::create_dir_all(repo.parent().context("repo has no parent")?)?;
        run(
            &format!("borg init -e none {}", q(repo)),
            Path::new("/"),
            BORG_ENV,
        )?;
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let (parent, name) = split(tree)?;
        let script = format!(
            "borg create --compression zstd,3 {}::run-{n} '{name}'",
            q(repo)
        );
        backup(self, repo, &script, &parent, BORG_ENV)
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        std::fs::create_dir_all(target)?;
        restore(
            &format!("borg extract {}::run-{n}", q(repo)),
            target,
            BORG_ENV,
        )
    }
}

#[derive(Debug)]
pub struct Casync;

impl Tool for Casync {
    fn name(&self) -> &'static str {
        "casync"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        std::fs::create_dir_all(repo)?;
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let script = format!(
            "casync make --compression=zstd --store={} {} {}",
            q(&repo.join("store")),
            q(&repo.join(format!("run-{n}.caidx"))),
            q(tree)
        );
        backup(self, repo, &script, repo, &[])
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        std::fs::create_dir_all(target)?;
        let script = format!(
            "casync extract --store={} {} {}",
            q(&repo.join("store")),
            q(&repo.join(format!("run-{n}.caidx"))),
            q(&target.join("tree"))
        );
        restore(&script, repo, &[])
    }

    /// casync can seed from what the output directory holds, but on these
    /// trees its seeding fails ("Failed to run synchronizer: Stale file
    /// handle", casync 2); it gets a fresh directory like the tarballs.
    fn reuses_target(&self) -> bool {
        false
    }
}
