//! Which CI strata runs in and who it is there, from each CI's documented
//! environment variables (docs/ci.md cites each): one function per CI,
//! each filling a `CiContext`. Knows nothing about config files or the
//! store; what the names become is `ci`'s.

use std::path::PathBuf;

use super::{buildkite_run, scope, CiContext, CiSystem, Found};

/// The largest event payload read: GitHub caps webhook payloads at 25 MB.
const MAX_EVENT_BYTES: u64 = 25 << 20;

/// The file at `path` if it holds at most `limit` bytes (never more is
/// read: `GITHUB_EVENT_PATH=/dev/zero` ends); `None` otherwise.
fn read_bounded(path: &std::path::Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).ok()?;
    file.take(limit + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= limit).then_some(bytes)
}

/// Reads the CI's identity from `var` (the environment); `None` outside a
/// CI strata knows, or when a variable it needs is missing. `STRATA_JOB`
/// and `STRATA_CONFIG` win over the CI's job and config.
pub fn detect(var: &dyn Fn(&str) -> Option<String>) -> Option<CiContext> {
    let mut ci = detect_ci(var)?;
    if let Some(job) = var("STRATA_JOB").filter(|v| !v.is_empty()) {
        ci.override_job(&job, "STRATA_JOB");
    }
    if let Some(config) = var("STRATA_CONFIG").filter(|v| !v.is_empty()) {
        ci.override_config(PathBuf::from(config), "STRATA_CONFIG");
    }
    Some(ci)
}

fn detect_ci(var: &dyn Fn(&str) -> Option<String>) -> Option<CiContext> {
    let env = Env(var);
    let writer_vars = writer_vars(var);
    let is = |name: &str| var(name).is_some_and(|v| v == "true");
    if is("GITHUB_ACTIONS") {
        github(&env, writer_vars)
    } else if is("GITLAB_CI") {
        gitlab(&env, writer_vars)
    } else if is("CIRCLECI") {
        circleci(&env, writer_vars)
    } else if is("BUILDKITE") {
        buildkite(&env, writer_vars)
    } else {
        None
    }
}

/// The job's environment, as `detect` is given it.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// A variable's value, empty meaning unset, with its name.
    fn get(&self, name: &'static str) -> Option<Found> {
        (self.0)(name)
            .filter(|v| !v.is_empty())
            .map(|value| Found { value, from: name })
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }
}

/// The variables that name who writes (a job's try, leg, step) and its
/// cache scope, as set.
fn writer_vars(var: &dyn Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    [
        "STRATA_LEG",
        "CI_JOB_ID",
        "CI_JOB_NAME",
        "CIRCLE_BUILD_NUM",
        "BUILDKITE_JOB_ID",
        "BUILDKITE_LABEL",
        "BUILDKITE_COMMAND",
        "BUILDKITE_PLUGINS",
        "BUILDKITE_RETRY_COUNT",
        "BUILDKITE_BUILD_ID",
    ]
    .into_iter()
    .chain(scope::VARS.iter().copied())
    .filter_map(|k| var(k).filter(|v| !v.is_empty()).map(|v| (k, v)))
    .collect()
}

fn github(env: &Env, writer_vars: Vec<(&'static str, String)>) -> Option<CiContext> {
    // `owner/repo/.github/workflows/ci.yml@refs/heads/main`.
    let config = env
        .var("GITHUB_WORKFLOW_REF")
        .and_then(|r| {
            let path = r.split('@').next()?.to_string();
            let at = path.find(".github/")?;
            Some(PathBuf::from(&path[at..]))
        })
        .unwrap_or_else(|| PathBuf::from(".github/workflows"));
    // The default branch is not an environment variable on GitHub; the
    // event payload the runner writes to GITHUB_EVENT_PATH has it.
    let default_branch = env
        .var("GITHUB_EVENT_PATH")
        .and_then(|p| read_bounded(p.as_ref(), MAX_EVENT_BYTES))
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["repository"]["default_branch"]
                .as_str()
                .map(str::to_string)
        })
        .map(|value| Found {
            value,
            from: "GITHUB_EVENT_PATH",
        });
    Some(CiContext {
        system: CiSystem::GithubActions,
        writer_vars,
        run: env.get("GITHUB_RUN_ID")?,
        attempt: env.var("GITHUB_RUN_ATTEMPT").and_then(|a| a.parse().ok()),
        job: env.get("GITHUB_JOB")?,
        leg: None,
        branch: env
            .get("GITHUB_HEAD_REF")
            .or_else(|| env.get("GITHUB_REF_NAME")),
        default_branch,
        commit: env.get("GITHUB_SHA"),
        config,
        config_from: "GITHUB_WORKFLOW_REF",
        checkout: env.get("GITHUB_WORKSPACE"),
    })
}

fn gitlab(env: &Env, writer_vars: Vec<(&'static str, String)>) -> Option<CiContext> {
    Some(CiContext {
        system: CiSystem::Gitlab,
        writer_vars,
        // A merge request pipeline's ref is its source branch; a fork's
        // runs in the fork's project.
        run: env.get("CI_PIPELINE_ID")?,
        attempt: None,
        job: env.get("CI_JOB_NAME")?,
        leg: env.get("CI_NODE_INDEX"),
        branch: env
            .get("CI_COMMIT_BRANCH")
            .or_else(|| env.get("CI_COMMIT_REF_NAME")),
        default_branch: env.get("CI_DEFAULT_BRANCH"),
        commit: env.get("CI_COMMIT_SHA"),
        config: PathBuf::from(
            env.var("CI_CONFIG_PATH")
                .unwrap_or_else(|| ".gitlab-ci.yml".into()),
        ),
        config_from: "CI_CONFIG_PATH",
        checkout: env.get("CI_PROJECT_DIR"),
    })
}

fn circleci(env: &Env, writer_vars: Vec<(&'static str, String)>) -> Option<CiContext> {
    Some(CiContext {
        system: CiSystem::Circleci,
        writer_vars,
        // The workspace id stays the same when a workflow is rerun from
        // failed, as CircleCI's own workspaces do.
        run: env
            .get("CIRCLE_WORKFLOW_WORKSPACE_ID")
            .or_else(|| env.get("CIRCLE_WORKFLOW_ID"))?,
        attempt: None,
        job: env.get("CIRCLE_JOB")?,
        leg: env.get("CIRCLE_NODE_INDEX"),
        branch: env.get("CIRCLE_BRANCH"),
        default_branch: None,
        commit: env.get("CIRCLE_SHA1"),
        config: PathBuf::from(".circleci/config.yml"),
        config_from: "CircleCI's default place",
        checkout: env.get("CIRCLE_WORKING_DIRECTORY"),
    })
}

fn buildkite(env: &Env, writer_vars: Vec<(&'static str, String)>) -> Option<CiContext> {
    Some(CiContext {
        system: CiSystem::Buildkite,
        writer_vars,
        // The pipeline and build number, which the job's OIDC claims name
        // too; the build id (strata's name before) when missing.
        run: match (
            env.get("BUILDKITE_PIPELINE_SLUG"),
            env.get("BUILDKITE_BUILD_NUMBER"),
        ) {
            (Some(slug), Some(number)) => Found {
                value: buildkite_run(&slug.value, &number.value),
                from: "BUILDKITE_PIPELINE_SLUG, BUILDKITE_BUILD_NUMBER",
            },
            _ => env.get("BUILDKITE_BUILD_ID")?,
        },
        attempt: None,
        job: env
            .get("BUILDKITE_STEP_KEY")
            .or_else(|| env.get("BUILDKITE_LABEL"))?,
        leg: env.get("BUILDKITE_PARALLEL_JOB"),
        branch: env.get("BUILDKITE_BRANCH"),
        default_branch: env.get("BUILDKITE_PIPELINE_DEFAULT_BRANCH"),
        commit: env.get("BUILDKITE_COMMIT"),
        config: PathBuf::from(".buildkite/pipeline.yml"),
        config_from: "Buildkite's default place",
        checkout: env.get("BUILDKITE_BUILD_CHECKOUT_PATH"),
    })
}
