//! Who is running strata, read from the CI system's own environment: the
//! run, attempt, job and leg of GitHub Actions, GitLab CI, CircleCI and
//! Buildkite, from their documented variables (docs/ci.md cites each), and
//! the store names they map to; the overrides `STRATA_JOB`, `STRATA_LEG`
//! and `STRATA_CONFIG` win over what the CI says. `detect` reads the
//! variables, `config` reads the job graph from the CI's config file,
//! `resolve` finds the running job in it.
//! Knows nothing about the store.

pub mod config;
mod detect;
mod resolve;
pub mod scope;
pub mod token;

use std::path::PathBuf;

use serde::Serialize;

use crate::format::records::{Writer, FIRST_TRY};
use crate::id::{JobName, RunName};

pub use detect::detect;

/// A CI system strata knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CiSystem {
    /// GitHub Actions (`GITHUB_ACTIONS=true`).
    GithubActions,
    /// GitLab CI (`GITLAB_CI=true`).
    Gitlab,
    /// CircleCI (`CIRCLECI=true`).
    Circleci,
    /// Buildkite (`BUILDKITE=true`).
    Buildkite,
}

impl CiSystem {
    /// Its name where a server names the CI identities it accepts
    /// (`github`, `gitlab`, `circleci`, `buildkite`).
    pub fn oidc_name(self) -> &'static str {
        match self {
            CiSystem::GithubActions => "github",
            CiSystem::Gitlab => "gitlab",
            CiSystem::Circleci => "circleci",
            CiSystem::Buildkite => "buildkite",
        }
    }

    /// The short prefix of its run names.
    fn prefix(self) -> &'static str {
        match self {
            CiSystem::GithubActions => "gh",
            CiSystem::Gitlab => "gl",
            CiSystem::Circleci => "cc",
            CiSystem::Buildkite => "bk",
        }
    }
}

/// One value and the variable it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The value.
    pub value: String,
    /// The environment variable it was read from.
    pub from: &'static str,
}

/// What the CI's environment says about this job.
#[derive(Debug, Clone, Serialize)]
pub struct CiContext {
    /// The CI system.
    pub system: CiSystem,
    /// The run (GitHub run, GitLab pipeline, CircleCI workflow workspace,
    /// Buildkite build): what jobs that pass files share.
    pub run: Found,
    /// The attempt of the run (GitHub), when the CI numbers them.
    pub attempt: Option<u32>,
    /// The job, by the name the config gives it.
    pub job: Found,
    /// The parallel leg or node, when the job runs as several.
    pub leg: Option<Found>,
    /// The branch.
    pub branch: Option<Found>,
    /// The repository's default branch, when the CI says it.
    pub default_branch: Option<Found>,
    /// The commit.
    pub commit: Option<Found>,
    /// The config file that defines the job graph, relative to the
    /// checkout.
    pub config: PathBuf,
    /// Where `config` came from: a variable, or the CI's default place.
    pub config_from: &'static str,
    /// Where the checkout is, when the CI says it.
    pub checkout: Option<Found>,
    /// The variables `writer` and `cache_scopes` read (leg and attempt
    /// ids; the ref's kind, protection and fork: `scope::VARS`).
    #[serde(skip)]
    writer_vars: Vec<(&'static str, String)>,
}

impl CiContext {
    /// The store's name for this run (and attempt): `gh-<run id>.<attempt>`,
    /// `gl-<pipeline>`, `cc-<workspace id>`, `bk-<pipeline slug>-<build
    /// number>` (`run_name`).
    pub fn run_name(&self) -> RunName {
        self.run_name_at(self.attempt)
    }

    /// The store's name for attempt `attempt` of this run.
    pub fn run_name_at(&self, attempt: Option<u32>) -> RunName {
        run_name(
            self.system,
            &self.run.value,
            attempt.map(|a| a.to_string()).as_deref(),
        )
    }

    /// Names this run had in earlier versions of strata, which a job of a
    /// run created by one still uses (docs/format.md, "Run names"):
    /// Buildkite's `bk-<BUILDKITE_BUILD_ID>`.
    pub fn earlier_run_names(&self) -> Vec<RunName> {
        let build_id = self
            .writer_vars
            .iter()
            .find(|(k, _)| *k == "BUILDKITE_BUILD_ID")
            .map(|(_, v)| v.as_str());
        match (self.system, build_id) {
            (CiSystem::Buildkite, Some(id)) if self.run.from != "BUILDKITE_BUILD_ID" => {
                vec![run_name(CiSystem::Buildkite, id, None)]
            }
            _ => Vec::new(),
        }
    }

    /// Cache scoping as the CI's own caches do it (`scope::scopes`, from
    /// the ref facts the environment gave): the scope this job's saves go
    /// under, and the scopes its restores try, in order. A pull request's
    /// job writes under its own ref, so nothing it saves is ever restored
    /// on the default branch (cache poisoning: CVE-2025-36852). `None`
    /// when the CI names no ref.
    pub fn cache_scopes(&self) -> Option<scope::CacheScopes> {
        let default = self.default_branch.as_ref().map(|d| d.value.clone());
        let var = |v: &str| {
            self.writer_vars
                .iter()
                .find(|(k, _)| *k == v)
                .map(|(_, x)| x.clone())
        };
        scope::facts(self.system, &var, default).map(|f| scope::scopes(&f))
    }

    /// Where the checkout is, as a path: CircleCI writes its working
    /// directory as `~/project`, so a leading `~/` is `home`.
    pub fn checkout_dir(&self, home: Option<&std::path::Path>) -> Option<PathBuf> {
        let value = &self.checkout.as_ref()?.value;
        match (value.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => Some(home.join(rest)),
            _ => Some(PathBuf::from(value)),
        }
    }

    /// Which leg and attempt of the job this is, for its layer refs
    /// (docs/format.md, layer refs version 2).
    pub fn writer(&self) -> Writer {
        let env = |v: &str| {
            self.writer_vars
                .iter()
                .find(|(k, _)| *k == v)
                .map(|(_, x)| x.clone())
        };
        let (leg, attempt) = match self.system {
            CiSystem::GithubActions => (env("STRATA_LEG"), self.attempt.map(|a| a.to_string())),
            // The leg's whole name: `rspec 1/20`, `deploy: [aws, app1]`.
            CiSystem::Gitlab => (
                env("STRATA_LEG").or_else(|| env("CI_JOB_NAME")),
                env("CI_JOB_ID"),
            ),
            CiSystem::Circleci => (
                env("STRATA_LEG").or_else(|| self.leg.as_ref().map(|l| l.value.clone())),
                env("CIRCLE_BUILD_NUM"),
            ),
            CiSystem::Buildkite => (
                env("STRATA_LEG")
                    .or_else(|| self.leg.as_ref().map(|l| l.value.clone()))
                    .or_else(|| buildkite_matrix_leg(&env)),
                env("BUILDKITE_JOB_ID"),
            ),
        };
        let attempt = attempt.unwrap_or_default();
        // Buildkite numbers a job's tries (`BUILDKITE_RETRY_COUNT`, 0 for
        // the first): a first try supersedes nothing, so two jobs strata
        // could not tell apart as legs never hide each other's layers.
        let first_try = self.system == CiSystem::Buildkite
            && env("BUILDKITE_RETRY_COUNT").as_deref() == Some("0");
        Writer {
            leg: leg.unwrap_or_default(),
            attempt: match first_try {
                true => format!("{FIRST_TRY}{attempt}"),
                false => attempt,
            },
        }
    }

    /// The store's name for this job: the CI's name of the job (a GitLab
    /// `parallel` leg's job is the one the config names), encoded.
    pub fn job_name(&self) -> JobName {
        match (self.system, self.job.from) {
            (CiSystem::Gitlab, "CI_JOB_NAME") => {
                job_name(config::gitlab_job_of_leg(&self.job.value))
            }
            _ => job_name(&self.job.value),
        }
    }

    /// The job as the user named it (`--job`), which wins over the CI's.
    pub fn override_job(&mut self, written: &str, from: &'static str) {
        self.job = Found {
            value: written.to_string(),
            from,
        };
    }

    /// The config as the user named it (`--config`), which wins over the
    /// CI's.
    pub fn override_config(&mut self, path: PathBuf, from: &'static str) {
        self.config = path;
        self.config_from = from;
    }
}

/// The store's name for run `run` (attempt `attempt`) of `system`:
/// `gh-<run id>.<attempt>`, `gl-<pipeline id>`, `cc-<workspace id>`,
/// `bk-<pipeline slug>-<build number>`. The one rule, for a runner's
/// environment and for a CI's verified claims (`crate::oidc`) alike.
pub fn run_name(system: CiSystem, run: &str, attempt: Option<&str>) -> RunName {
    let base = format!("{}-{}", system.prefix(), safe(run));
    let name = match attempt {
        Some(a) => format!("{base}.{}", safe(a)),
        None => base,
    };
    RunName::new(&name).unwrap_or_else(|_| {
        RunName::new(&format!("{}-{}", system.prefix(), short_hash(&name)))
            .expect("a hash is a valid name")
    })
}

/// The run of a Buildkite build as its claims name it too: the pipeline's
/// slug and the build's number (`bk-web-1042`). A slug holds no `.` and a
/// number only digits, so two builds never share a name.
pub fn buildkite_run(pipeline_slug: &str, build_number: &str) -> String {
    format!("{pipeline_slug}-{build_number}")
}

/// The store's name for a CI job name: kept as it is when it is a valid
/// name; otherwise every byte outside `A-Z a-z 0-9 . -` becomes `_xx` (its
/// hex), so "Publish to Next channel" is `Publish_20to_20Next_20channel`
/// and two different names never meet. A name whose encoding is too long
/// keeps its start and a hash of the whole.
pub fn job_name(ci: &str) -> JobName {
    if let Ok(name) = JobName::new(ci) {
        if !ci.contains('_') {
            return name;
        }
    }
    let mut out = String::new();
    for b in ci.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => out.push(b as char),
            _ => out.push_str(&format!("_{b:02x}")),
        }
    }
    if out.starts_with('.') {
        out.replace_range(..1, "_2e");
    }
    if out.len() > 128 {
        let hash = short_hash(ci);
        out.truncate(128 - hash.len() - 1);
        out.push('-');
        out.push_str(&hash);
    }
    JobName::new(&out).expect("the encoding is a valid name")
}

/// The leg of a Buildkite matrix job. The agent names no matrix values
/// (Buildkite's environment variables list none: docs/ci.md), and a matrix
/// job shares its step's key; but Buildkite interpolates the values into
/// the job's label, command and plugins, which the agent exports
/// (`BUILDKITE_LABEL`, `BUILDKITE_COMMAND`, `BUILDKITE_PLUGINS`) and which a
/// retry of the job keeps. So the leg is the label, with a hash of the
/// command and plugins: distinct legs for distinct matrix values, the same
/// leg for a retry. A step that is not a matrix has one leg, which this
/// names too.
fn buildkite_matrix_leg(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let label = env("BUILDKITE_LABEL").unwrap_or_default();
    let command = env("BUILDKITE_COMMAND");
    let plugins = env("BUILDKITE_PLUGINS");
    if command.is_none() && plugins.is_none() {
        return (!label.is_empty()).then_some(label);
    }
    let body = format!(
        "{}\0{}",
        command.unwrap_or_default(),
        plugins.unwrap_or_default()
    );
    Some(format!("{label} #{}", &short_hash(&body)[..8]))
}

/// Keeps the characters run names take; others become `-`.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .collect()
}

fn short_hash(s: &str) -> String {
    blake3::hash(s.as_bytes()).to_hex()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn reads_each_ci_from_its_documented_variables() {
        let gh = detect(&env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "1658821493"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "build"),
            (
                "GITHUB_WORKFLOW_REF",
                "octo/app/.github/workflows/ci.yml@refs/heads/main",
            ),
        ]))
        .unwrap();
        assert_eq!(gh.run_name().as_str(), "gh-1658821493.2");
        assert_eq!(gh.run_name_at(Some(1)).as_str(), "gh-1658821493.1");
        assert_eq!(gh.config, PathBuf::from(".github/workflows/ci.yml"));
        assert_eq!(gh.job.from, "GITHUB_JOB");
        let gl = detect(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "1045"),
            ("CI_JOB_NAME", "rspec 1/20"),
            ("CI_NODE_INDEX", "1"),
            ("CI_DEFAULT_BRANCH", "main"),
        ]))
        .unwrap();
        assert_eq!(gl.run_name().as_str(), "gl-1045");
        assert_eq!(gl.job_name().as_str(), "rspec");
        assert_eq!(gl.default_branch.unwrap().value, "main");
        let cc = detect(&env(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_WORKFLOW_ID", "w-1"),
            ("CIRCLE_WORKFLOW_WORKSPACE_ID", "ws-1"),
            ("CIRCLE_JOB", "Publish to Next channel"),
        ]))
        .unwrap();
        assert_eq!(cc.run.from, "CIRCLE_WORKFLOW_WORKSPACE_ID");
        assert!(cc.checkout.is_none());
        assert_eq!(cc.job_name().as_str(), "Publish_20to_20Next_20channel");
        let bk = detect(&env(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_ID", "0190-ab"),
            ("BUILDKITE_STEP_KEY", "test"),
        ]))
        .unwrap();
        assert_eq!(bk.run_name().as_str(), "bk-0190-ab");
        assert!(bk.earlier_run_names().is_empty());
        // Named by pipeline and build number, as its OIDC claims name it;
        // the build id is the name an earlier strata gave it.
        let bk = detect(&env(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_ID", "0190-ab"),
            ("BUILDKITE_PIPELINE_SLUG", "web"),
            ("BUILDKITE_BUILD_NUMBER", "1042"),
            ("BUILDKITE_STEP_KEY", "test"),
        ]))
        .unwrap();
        assert_eq!(bk.run_name().as_str(), "bk-web-1042");
        assert_eq!(bk.earlier_run_names()[0].as_str(), "bk-0190-ab");
        assert!(detect(&env(&[("CI", "true")])).is_none());
        // A CI without the variables it needs is not detected.
        assert!(detect(&env(&[("GITHUB_ACTIONS", "true")])).is_none());
    }

    #[test]
    fn caches_are_scoped_to_the_ref_then_the_default_branch() {
        let dir = tempfile::tempdir().unwrap();
        let event = dir.path().join("event.json");
        std::fs::write(&event, r#"{"repository": {"default_branch": "main"}}"#).unwrap();
        let event = event.to_str().unwrap();
        let pr = detect(&env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "1"),
            ("GITHUB_JOB", "build"),
            ("GITHUB_REF", "refs/pull/7/merge"),
            ("GITHUB_EVENT_PATH", event),
        ]))
        .unwrap();
        let s = pr.cache_scopes().unwrap();
        assert_eq!(s.write, "ref:refs/pull/7/merge:");
        assert_eq!(s.read, ["ref:refs/pull/7/merge:", "ref:refs/heads/main:"]);
        let main_env = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "2"),
            ("GITHUB_JOB", "build"),
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_EVENT_PATH", event),
        ];
        let main = detect(&env(&main_env)).unwrap();
        // The default branch reads its own scope only: never a PR's.
        let s = main.cache_scopes().unwrap();
        assert_eq!(s.read, ["ref:refs/heads/main:"]);
        let gl_env = [
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "3"),
            ("CI_JOB_NAME", "deps"),
            ("CI_COMMIT_REF_NAME", "feature"),
            ("CI_COMMIT_REF_PROTECTED", "true"),
            ("CI_DEFAULT_BRANCH", "main"),
        ];
        let gl = detect(&env(&gl_env)).unwrap();
        assert_eq!(
            gl.cache_scopes().unwrap().read,
            ["ref:refs/heads/feature:", "ref:refs/heads/main:"]
        );
    }

    #[test]
    fn circleci_working_directory_is_under_home() {
        let cc = detect(&env(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_WORKFLOW_ID", "w"),
            ("CIRCLE_JOB", "build"),
            ("CIRCLE_WORKING_DIRECTORY", "~/project"),
        ]))
        .unwrap();
        assert_eq!(
            cc.checkout_dir(Some(std::path::Path::new("/home/circleci"))),
            Some(PathBuf::from("/home/circleci/project"))
        );
    }

    #[test]
    fn job_names_are_encoded_without_collisions() {
        assert_eq!(job_name("build").as_str(), "build");
        assert_eq!(job_name("a_b").as_str(), "a_5fb");
        assert_ne!(job_name("a b"), job_name("a_20b"));
        assert_eq!(
            job_name("deploy: [aws, app1]").as_str(),
            "deploy_3a_20_5baws_2c_20app1_5d"
        );
        let long = "x ".repeat(100);
        assert!(job_name(&long).as_str().len() <= 128);
        assert_ne!(job_name(&long), job_name(&"x ".repeat(101)));
    }
}
