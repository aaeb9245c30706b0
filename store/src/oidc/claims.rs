//! What each CI's documented claim set says about a job (docs/deploy.md,
//! "CI identities", cites each claim): the run it may write, the job
//! (Buildkite's step), and the facts its cache scope is computed from,
//! stated as the runner's variables so that `ci::scope::facts` reads
//! claims and environment alike.

use crate::access::Bound;
use crate::ci::scope::{facts, scopes};
use crate::ci::{buildkite_run, job_name, run_name, CiSystem};
use crate::error::{Error, Result};

use super::{claim_text, Ci, Claims};

/// What a CI's claims say about the job, as far as the bindings care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Who, for logs and refusals: `acme/web for refs/pull/7/merge`.
    pub label: String,
    /// The run it may write, if the claims name one.
    pub run_names: Option<Bound>,
    /// The job it may write, if the claims name one.
    pub jobs: Option<Bound>,
    /// The scope its runs record and its caches are saved under.
    pub scope: String,
    /// Why it may save no cache at all, if so.
    pub no_caches: Option<String>,
}

/// One CI's claims read, before the scope is computed.
#[derive(Default)]
struct Read {
    who: String,
    run_names: Option<Bound>,
    jobs: Option<Bound>,
    /// The runner's variables, as the claims state them.
    vars: Vec<(&'static str, String)>,
    no_caches: Option<String>,
}

/// The claims of one token of `ci`.
struct Reader<'a> {
    ci: Ci,
    claims: &'a Claims,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<String> {
        claim_text(self.claims, name).filter(|v| !v.is_empty())
    }

    /// A claim the CI documents; without it the token cannot write.
    fn need(&self, name: &str) -> Result<String> {
        self.get(name).ok_or_else(|| Error::NotAllowed {
            detail: format!("the {} token has no claim {name}", self.ci.name()),
        })
    }
}

fn bound(name: String, from: String) -> Option<Bound> {
    Some(Bound {
        names: vec![name],
        from,
    })
}

/// Reads the bindings of `ci`'s claim set. A claim the CI documents that
/// this token lacks makes it unusable: an error naming the claim.
pub fn identity(ci: Ci, claims: &Claims) -> Result<Identity> {
    let c = Reader { ci, claims };
    let read = match ci {
        Ci::Github => github(&c)?,
        Ci::Gitlab => gitlab(&c)?,
        Ci::Circleci => circleci(&c)?,
        Ci::Buildkite => buildkite(&c)?,
    };
    let var = |name: &str| {
        read.vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let facts = facts(ci.system(), &var, None).ok_or_else(|| Error::NotAllowed {
        detail: format!("the {} token names no ref", ci.name()),
    })?;
    let scope = scopes(&facts).write;
    let bare = scope
        .strip_prefix("ref:")
        .and_then(|s| s.strip_suffix(':'))
        .unwrap_or(&scope);
    Ok(Identity {
        label: format!("{} for {bare}", read.who),
        run_names: read.run_names,
        jobs: read.jobs,
        no_caches: read.no_caches,
        scope,
    })
}

/// GitHub: run `run_id` + `run_attempt`; the scope of `ref`.
fn github(c: &Reader) -> Result<Read> {
    let (id, attempt) = (c.need("run_id")?, c.need("run_attempt")?);
    let run = run_name(CiSystem::GithubActions, &id, Some(&attempt));
    let mut vars = vec![("GITHUB_REF", c.need("ref")?)];
    for (var, claim) in [
        ("GITHUB_HEAD_REF", "head_ref"),
        ("GITHUB_BASE_REF", "base_ref"),
    ] {
        if let Some(v) = c.get(claim) {
            vars.push((var, v));
        }
    }
    // pull_request_target runs for a pull request on the base branch's
    // ref, and its claims name no pull request: it may write its own run,
    // never a cache.
    let event = c.get("event_name").unwrap_or_default();
    Ok(Read {
        who: c.need("repository")?,
        run_names: bound(
            run.to_string(),
            format!("run_id {id}, run_attempt {attempt}"),
        ),
        jobs: None,
        vars,
        no_caches: (event == "pull_request_target").then(|| format!("its event_name is {event}")),
    })
}

/// GitLab: run `pipeline_id`; the scope of `ref`, `ref_type`,
/// `ref_protected` and `pipeline_source` (a merge request's is
/// unprotected).
fn gitlab(c: &Reader) -> Result<Read> {
    let pipeline = c.need("pipeline_id")?;
    let run = run_name(CiSystem::Gitlab, &pipeline, None);
    let git_ref = c.need("ref")?;
    let mut vars = match c.get("ref_type").as_deref() {
        Some("tag") => vec![("CI_COMMIT_TAG", git_ref.clone())],
        _ => vec![("CI_COMMIT_BRANCH", git_ref.clone())],
    };
    vars.push(("CI_COMMIT_REF_NAME", git_ref));
    for (var, claim) in [
        ("CI_COMMIT_REF_PROTECTED", "ref_protected"),
        ("CI_PIPELINE_SOURCE", "pipeline_source"),
    ] {
        if let Some(v) = c.get(claim) {
            vars.push((var, v));
        }
    }
    Ok(Read {
        who: c.need("project_path")?,
        run_names: bound(run.to_string(), format!("pipeline_id {pipeline}")),
        vars,
        ..Read::default()
    })
}

/// CircleCI: the token names no workflow, so runs are bound to the project
/// (the rule's namespace) and the ref of `oidc.circleci.com/vcs-ref`.
fn circleci(c: &Reader) -> Result<Read> {
    let vcs_ref = c.need("oidc.circleci.com/vcs-ref")?;
    let mut no_caches = None;
    let vars = if let Some(b) = vcs_ref.strip_prefix("refs/heads/") {
        vec![("CIRCLE_BRANCH", b.to_string())]
    } else if let Some(t) = vcs_ref.strip_prefix("refs/tags/") {
        vec![("CIRCLE_TAG", t.to_string())]
    } else if let Some(n) = vcs_ref
        .strip_prefix("refs/pull/")
        .and_then(|r| r.split('/').next())
    {
        vec![
            ("CIRCLE_PR_NUMBER", n.to_string()),
            ("CIRCLE_BRANCH", format!("pull/{n}")),
        ]
    } else {
        no_caches = Some(format!(
            "its vcs-ref {vcs_ref} is no branch, tag or pull request"
        ));
        vec![("CIRCLE_BRANCH", vcs_ref.clone())]
    };
    Ok(Read {
        who: c
            .get("oidc.circleci.com/vcs-origin")
            .or_else(|| c.get("oidc.circleci.com/project-id"))
            .unwrap_or_default(),
        vars,
        no_caches,
        ..Read::default()
    })
}

/// Buildkite: run `pipeline_slug` + `build_number`, job `step_key`; the
/// scope of `build_branch` or `build_tag`.
fn buildkite(c: &Reader) -> Result<Read> {
    let (slug, number) = (c.need("pipeline_slug")?, c.need("build_number")?);
    let run = run_name(CiSystem::Buildkite, &buildkite_run(&slug, &number), None);
    let branch = c.need("build_branch")?;
    // Buildkite's claims name no pull request; a fork's build has the
    // fork's owner before its branch name (the pipeline's setting to
    // prefix them), which saves no caches.
    let no_caches = branch
        .contains(':')
        .then(|| format!("its build_branch {branch} is a fork's"));
    let mut vars = vec![("BUILDKITE_BRANCH", branch)];
    if let Some(tag) = c.get("build_tag") {
        vars.push(("BUILDKITE_TAG", tag));
    }
    let step = c.get("step_key");
    Ok(Read {
        who: format!("{}/{slug}", c.get("organization_slug").unwrap_or_default()),
        run_names: bound(
            run.to_string(),
            format!("pipeline_slug {slug}, build_number {number}"),
        ),
        jobs: Some(Bound {
            names: step.iter().map(|s| job_name(s).to_string()).collect(),
            from: format!("step_key {}", step.as_deref().unwrap_or("null")),
        }),
        vars,
        no_caches,
    })
}
