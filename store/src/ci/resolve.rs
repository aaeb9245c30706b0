//! Which job of its config's graph the running CI job is. Mostly the name
//! the CI gives it, but a CI does not always give the name its config
//! writes: inside a GitHub reusable workflow `GITHUB_JOB` is the called
//! job's id alone (the run shows `<caller> / <id>`, and no variable names
//! the caller: docs/ci.md), and a Buildkite step with no key is known by
//! its label, which Buildkite fills with the matrix values
//! (`build {{matrix}}` runs as `build linux`). Where one job of the graph
//! fits, it is that job; where none or several do, the error names them as
//! the config writes them and says to set `STRATA_JOB`. Knows nothing
//! about the store.

use super::config::{self, CiGraph, Format, Select};
use super::{job_name, CiContext, CiSystem};
use crate::error::{Error, Result};
use crate::id::JobName;

impl CiContext {
    /// The graph of this job's config, under `checkout`.
    pub fn read_config(&self, checkout: &std::path::Path) -> Result<CiGraph> {
        config::read(
            Format::of(self.system),
            checkout,
            &self.config,
            Select::Job(&self.written_job()),
        )
    }

    /// The job's name as its config writes it, as far as the CI says.
    fn written_job(&self) -> String {
        match (self.system, self.job.from) {
            (CiSystem::Gitlab, "CI_JOB_NAME") => {
                config::gitlab_job_of_leg(&self.job.value).to_string()
            }
            _ => self.job.value.clone(),
        }
    }

    /// The store name of this job in `graph`.
    pub fn job_in(&self, graph: &CiGraph) -> Result<JobName> {
        let written = self.written_job();
        if let Some(name) = graph.find(&written) {
            return Ok(name);
        }
        let names = graph.names();
        let fits: Vec<&String> = match self.system {
            CiSystem::GithubActions => names
                .iter()
                .filter(|n| n.ends_with(&format!(" / {written}")))
                .collect(),
            CiSystem::Buildkite => names
                .iter()
                .filter(|n| n.contains("{{") && template_fits(n, &written))
                .collect(),
            _ => vec![],
        };
        if let [one] = fits.as_slice() {
            return Ok(job_name(one));
        }
        let hint = if fits.is_empty() {
            format!("its jobs: {}", graph.known())
        } else {
            format!(
                "it may be any of {}, and the CI does not say which",
                fits.iter()
                    .map(|f| format!("{f:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Err(Error::Config {
            file: graph.file.clone(),
            line: None,
            detail: format!(
                "the job {written:?} (from {}) is not a job of this config ({hint}); \
                 set STRATA_JOB to its name as the config writes it",
                self.job.from
            ),
        })
    }
}

/// Whether `name` is `template` with each `{{...}}` filled in.
fn template_fits(template: &str, name: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        parts.push(&rest[..open]);
        rest = &rest[open + close + 2..];
    }
    parts.push(rest);
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return template == name;
    }
    let Some(mut at) = name.strip_prefix(first) else {
        return false;
    };
    for p in &parts[1..parts.len() - 1] {
        match at.find(p) {
            Some(i) => at = &at[i + p.len()..],
            None => return false,
        }
    }
    at.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fit_their_filled_names() {
        assert!(template_fits("build {{matrix}}", "build linux"));
        assert!(template_fits(
            "{{matrix.os}} on {{matrix.arch}}",
            "linux on arm64"
        ));
        assert!(!template_fits("build {{matrix}}", "test linux"));
        assert!(!template_fits("build", "build linux"));
    }
}
