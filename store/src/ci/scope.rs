//! Cache scopes: the one place that decides under which scope a job's
//! `cache save` writes and which scopes its `cache restore` reads, as each
//! CI's own cache does (docs/ci.md, "Caches"). `scopes` is a pure function
//! of facts about the job's ref (which CI, branch or tag or change, whether
//! protected, whether from a fork), so the same rule can be applied to
//! facts a server verified (a CI's OIDC claims) instead of a runner's
//! environment; `facts` reads them from the environment. Knows nothing
//! about the store or about keys beyond the scope prefix.

use serde::Serialize;

use super::CiSystem;

/// What kind of ref a job runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefKind {
    /// A branch of the project (for a change from the project itself, its
    /// source branch).
    Branch,
    /// A tag.
    Tag,
    /// A change (pull or merge request) whose code is not the project's
    /// own branch: `id` is its number. Every GitHub pull request (its
    /// `GITHUB_REF` is `refs/pull/N/merge`), and elsewhere a change from a
    /// fork, whose branch name may be any of the project's.
    Change {
        /// The change's number (`7` of `refs/pull/7/merge`).
        id: String,
    },
    /// A full ref the CI gave that is none of the above
    /// (`refs/remotes/...`): scoped as it is.
    Other,
}

/// What a job's cache scope is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefFacts {
    /// The CI the job runs in.
    pub system: CiSystem,
    /// The branch or tag name (`main`, `v1.2`); for `RefKind::Other` the
    /// full ref; for a change, its source branch (unused in its scope).
    pub name: String,
    /// Branch, tag or change.
    pub kind: RefKind,
    /// Whether the ref is protected, on a CI that has protected refs
    /// (GitLab); `None` on one that has not.
    pub protected: Option<bool>,
    /// A change's target branch, whose caches it may read.
    pub base: Option<String>,
    /// The project's default branch, whose caches every ref may read.
    pub default_branch: Option<String>,
}

/// The scope a job saves under and the scopes it restores from, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheScopes {
    /// Prepended to the key of every entry this job saves.
    pub write: String,
    /// Tried in order, each with every key, on restore; `write` first.
    pub read: Vec<String>,
}

/// The rule (docs/ci.md, "Caches"). A scope is `ref:<full ref>:`, and
/// `ref:unprotected/<full ref>:` for an unprotected ref of a CI that keeps
/// protected refs apart (GitLab). A full ref is `refs/heads/B`,
/// `refs/tags/T`, or a change's own ref (`refs/pull/N/merge` on GitHub,
/// `refs/merge-requests/N/head` on GitLab, `refs/pull/N/head` elsewhere),
/// so a tag `main`, a branch `main` and a fork's change from its own
/// `main` never share a scope: git refs hold no `:`, and every full ref
/// starts with `refs/`. A job reads its own scope, then a change's base
/// branch, then the default branch, each in its own protection class:
/// nothing a less trusted ref saves is ever read by a more trusted one,
/// and an unprotected ref reads no protected ref's cache (GitLab's
/// separated caches).
pub fn scopes(facts: &RefFacts) -> CacheScopes {
    let own = match &facts.kind {
        RefKind::Branch => format!("refs/heads/{}", facts.name),
        RefKind::Tag => format!("refs/tags/{}", facts.name),
        RefKind::Change { id } => match facts.system {
            CiSystem::GithubActions => format!("refs/pull/{id}/merge"),
            CiSystem::Gitlab => format!("refs/merge-requests/{id}/head"),
            CiSystem::Circleci | CiSystem::Buildkite => format!("refs/pull/{id}/head"),
        },
        RefKind::Other => facts.name.clone(),
    };
    // A change from a fork is never protected, whatever a CI says.
    let unprotected = match facts.kind {
        RefKind::Change { .. } => facts.protected.is_some(),
        _ => facts.protected == Some(false),
    };
    let scope = |full_ref: &str| match unprotected {
        true => format!("ref:unprotected/{full_ref}:"),
        false => format!("ref:{full_ref}:"),
    };
    let write = scope(&own);
    let mut read = vec![write.clone()];
    let base = match facts.kind {
        RefKind::Change { .. } => facts.base.as_ref(),
        _ => None,
    };
    for branch in base.into_iter().chain(facts.default_branch.as_ref()) {
        let s = scope(&format!("refs/heads/{branch}"));
        if !read.contains(&s) {
            read.push(s);
        }
    }
    CacheScopes { write, read }
}

/// Every variable `facts` reads, for a caller that captures them.
pub const VARS: &[&str] = &[
    "GITHUB_REF",
    "GITHUB_HEAD_REF",
    "GITHUB_BASE_REF",
    "CI_COMMIT_REF_PROTECTED",
    "CI_PIPELINE_SOURCE",
    "CI_MERGE_REQUEST_SOURCE_PROJECT_ID",
    "CI_MERGE_REQUEST_PROJECT_ID",
    "CI_COMMIT_TAG",
    "CI_MERGE_REQUEST_IID",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
    "CI_COMMIT_BRANCH",
    "CI_COMMIT_REF_NAME",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
    "CIRCLE_PR_NUMBER",
    "CIRCLE_BRANCH",
    "CIRCLE_TAG",
    "BUILDKITE_PULL_REQUEST",
    "BUILDKITE_PULL_REQUEST_REPO",
    "BUILDKITE_REPO",
    "BUILDKITE_TAG",
    "BUILDKITE_BRANCH",
    "BUILDKITE_PULL_REQUEST_BASE_BRANCH",
];

/// Reads a job's ref facts from its CI's environment (`var`), the
/// variables each CI documents (docs/ci.md cites them); `None` when the CI
/// names no ref. `default_branch` is what `ci::detect` found (GitHub's is
/// in the event payload, not a variable).
pub fn facts(
    system: CiSystem,
    var: &dyn Fn(&str) -> Option<String>,
    default_branch: Option<String>,
) -> Option<RefFacts> {
    let get = |name: &str| var(name).filter(|v| !v.is_empty());
    let mut facts = RefFacts {
        system,
        name: String::new(),
        kind: RefKind::Branch,
        protected: None,
        base: None,
        default_branch,
    };
    match system {
        CiSystem::GithubActions => github_facts(&get, &mut facts)?,
        CiSystem::Gitlab => gitlab_facts(&get, &mut facts)?,
        CiSystem::Circleci => circleci_facts(&get, &mut facts)?,
        CiSystem::Buildkite => buildkite_facts(&get, &mut facts)?,
    }
    Some(facts)
}

/// A variable's value, empty meaning unset.
type Get<'a> = dyn Fn(&str) -> Option<String> + 'a;

fn github_facts(get: &Get, facts: &mut RefFacts) -> Option<()> {
    let full = get("GITHUB_REF")?;
    let pull = full
        .strip_prefix("refs/pull/")
        .and_then(|r| r.strip_suffix("/merge"));
    (facts.kind, facts.name) = if let Some(b) = full.strip_prefix("refs/heads/") {
        (RefKind::Branch, b.to_string())
    } else if let Some(t) = full.strip_prefix("refs/tags/") {
        (RefKind::Tag, t.to_string())
    } else if let Some(n) = pull {
        let id = n.to_string();
        (
            RefKind::Change { id },
            get("GITHUB_HEAD_REF").unwrap_or_default(),
        )
    } else {
        (RefKind::Other, full.clone())
    };
    facts.base = get("GITHUB_BASE_REF");
    Some(())
}

fn gitlab_facts(get: &Get, facts: &mut RefFacts) -> Option<()> {
    // A merge request's pipeline runs the request's code: never in the
    // protected class, whatever its source branch is, so the default
    // branch never restores what it saves.
    let request = get("CI_PIPELINE_SOURCE").as_deref() == Some("merge_request_event");
    facts.protected = Some(!request && get("CI_COMMIT_REF_PROTECTED").as_deref() == Some("true"));
    let source = get("CI_MERGE_REQUEST_SOURCE_PROJECT_ID");
    let fork = source.is_some() && source != get("CI_MERGE_REQUEST_PROJECT_ID");
    if let Some(tag) = get("CI_COMMIT_TAG") {
        (facts.kind, facts.name) = (RefKind::Tag, tag);
    } else if fork {
        let id = get("CI_MERGE_REQUEST_IID")?;
        facts.kind = RefKind::Change { id };
        facts.name = get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME").unwrap_or_default();
    } else {
        facts.name = get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME")
            .or_else(|| get("CI_COMMIT_BRANCH"))
            .or_else(|| get("CI_COMMIT_REF_NAME"))?;
    }
    facts.base = get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME");
    Some(())
}

fn circleci_facts(get: &Get, facts: &mut RefFacts) -> Option<()> {
    // CIRCLE_PR_NUMBER is set for a pull request from a fork only; its
    // CIRCLE_BRANCH is `pull/N`, a name a branch may have.
    if let Some(id) = get("CIRCLE_PR_NUMBER") {
        facts.kind = RefKind::Change { id };
        facts.name = get("CIRCLE_BRANCH").unwrap_or_default();
    } else if let Some(branch) = get("CIRCLE_BRANCH") {
        facts.name = branch;
    } else {
        (facts.kind, facts.name) = (RefKind::Tag, get("CIRCLE_TAG")?);
    }
    Some(())
}

fn buildkite_facts(get: &Get, facts: &mut RefFacts) -> Option<()> {
    let pr = get("BUILDKITE_PULL_REQUEST").filter(|p| p != "false");
    let repo = get("BUILDKITE_PULL_REQUEST_REPO");
    let fork = repo.is_some() && repo != get("BUILDKITE_REPO");
    if let Some(tag) = get("BUILDKITE_TAG") {
        (facts.kind, facts.name) = (RefKind::Tag, tag);
    } else if let (Some(id), true) = (pr, fork) {
        facts.kind = RefKind::Change { id };
        facts.name = get("BUILDKITE_BRANCH").unwrap_or_default();
    } else {
        facts.name = get("BUILDKITE_BRANCH")?;
    }
    facts.base = get("BUILDKITE_PULL_REQUEST_BASE_BRANCH");
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of(system: CiSystem, pairs: &[(&str, &str)], default: &str) -> RefFacts {
        let var = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        facts(
            system,
            &var,
            Some(default.to_string()).filter(|d| !d.is_empty()),
        )
        .unwrap()
    }

    fn write(system: CiSystem, pairs: &[(&str, &str)]) -> String {
        scopes(&facts_of(system, pairs, "main")).write
    }

    // Per CI, the refs that must never share a scope: a branch `main`, a
    // tag `main`, a change from a fork's `main`, and (GitLab) protected
    // against unprotected `main`.
    #[test]
    fn different_kinds_of_ref_never_share_a_scope() {
        use CiSystem::*;
        type Env<'a> = Vec<(&'a str, &'a str)>;
        let cases: Vec<(CiSystem, Vec<Env>)> = vec![
            (
                GithubActions,
                vec![
                    vec![("GITHUB_REF", "refs/heads/main")],
                    vec![("GITHUB_REF", "refs/tags/main")],
                    vec![
                        ("GITHUB_REF", "refs/pull/7/merge"),
                        ("GITHUB_HEAD_REF", "main"),
                    ],
                ],
            ),
            (
                Gitlab,
                vec![
                    vec![
                        ("CI_COMMIT_REF_NAME", "main"),
                        ("CI_COMMIT_REF_PROTECTED", "true"),
                    ],
                    vec![
                        ("CI_COMMIT_REF_NAME", "main"),
                        ("CI_COMMIT_REF_PROTECTED", "false"),
                    ],
                    vec![
                        ("CI_COMMIT_REF_NAME", "main"),
                        ("CI_COMMIT_TAG", "main"),
                        ("CI_COMMIT_REF_PROTECTED", "true"),
                    ],
                    vec![
                        ("CI_COMMIT_REF_NAME", "main"),
                        ("CI_MERGE_REQUEST_IID", "7"),
                        ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "main"),
                        ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", "99"),
                        ("CI_MERGE_REQUEST_PROJECT_ID", "1"),
                        // Even a CI that calls it protected.
                        ("CI_COMMIT_REF_PROTECTED", "true"),
                    ],
                ],
            ),
            (
                Circleci,
                vec![
                    vec![("CIRCLE_BRANCH", "main")],
                    vec![("CIRCLE_TAG", "main")],
                    vec![("CIRCLE_BRANCH", "pull/7"), ("CIRCLE_PR_NUMBER", "7")],
                    vec![("CIRCLE_BRANCH", "pull/7")],
                ],
            ),
            (
                Buildkite,
                vec![
                    vec![
                        ("BUILDKITE_BRANCH", "main"),
                        ("BUILDKITE_PULL_REQUEST", "false"),
                    ],
                    vec![("BUILDKITE_BRANCH", "main"), ("BUILDKITE_TAG", "main")],
                    vec![
                        ("BUILDKITE_BRANCH", "main"),
                        ("BUILDKITE_PULL_REQUEST", "7"),
                        ("BUILDKITE_REPO", "git@github.com:o/r.git"),
                        ("BUILDKITE_PULL_REQUEST_REPO", "git://github.com/fork/r.git"),
                    ],
                ],
            ),
        ];
        for (system, refs) in cases {
            let scopes: Vec<String> = refs.iter().map(|r| write(system, r)).collect();
            let mut unique = scopes.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), scopes.len(), "{system:?}: {scopes:?}");
        }
    }

    #[test]
    fn each_ci_reads_as_its_own_cache_does() {
        use CiSystem::*;
        // GitHub: the pull request's ref, its base, the default branch.
        let pr = facts_of(
            GithubActions,
            &[
                ("GITHUB_REF", "refs/pull/7/merge"),
                ("GITHUB_BASE_REF", "release"),
            ],
            "main",
        );
        assert_eq!(
            scopes(&pr).read,
            [
                "ref:refs/pull/7/merge:",
                "ref:refs/heads/release:",
                "ref:refs/heads/main:"
            ]
        );
        // The default branch reads its own scope only.
        let main = facts_of(GithubActions, &[("GITHUB_REF", "refs/heads/main")], "main");
        assert_eq!(scopes(&main).read, ["ref:refs/heads/main:"]);
        // GitLab: an unprotected branch reads unprotected scopes only.
        let feature = facts_of(
            Gitlab,
            &[
                ("CI_COMMIT_REF_NAME", "feature"),
                ("CI_COMMIT_REF_PROTECTED", "false"),
            ],
            "main",
        );
        assert_eq!(
            scopes(&feature).read,
            [
                "ref:unprotected/refs/heads/feature:",
                "ref:unprotected/refs/heads/main:"
            ]
        );
        // A merge request's pipeline is unprotected, even from a protected
        // source branch.
        let mr = facts_of(
            Gitlab,
            &[
                ("CI_COMMIT_REF_NAME", "main"),
                ("CI_COMMIT_REF_PROTECTED", "true"),
                ("CI_PIPELINE_SOURCE", "merge_request_event"),
            ],
            "main",
        );
        assert_eq!(scopes(&mr).write, "ref:unprotected/refs/heads/main:");
        let tag = facts_of(
            Gitlab,
            &[("CI_COMMIT_TAG", "v1"), ("CI_COMMIT_REF_PROTECTED", "true")],
            "main",
        );
        assert_eq!(
            scopes(&tag).read,
            ["ref:refs/tags/v1:", "ref:refs/heads/main:"]
        );
        // CircleCI names no default branch: a tag reads its own scope.
        let cc = facts_of(Circleci, &[("CIRCLE_TAG", "v1")], "");
        assert_eq!(scopes(&cc).read, ["ref:refs/tags/v1:"]);
        assert_eq!(
            write(
                Circleci,
                &[("CIRCLE_BRANCH", "pull/7"), ("CIRCLE_PR_NUMBER", "7")]
            ),
            "ref:refs/pull/7/head:"
        );
        // Buildkite: a fork's pull request reads its base, then default.
        let bk = facts_of(
            Buildkite,
            &[
                ("BUILDKITE_BRANCH", "main"),
                ("BUILDKITE_PULL_REQUEST", "7"),
                ("BUILDKITE_PULL_REQUEST_BASE_BRANCH", "main"),
                ("BUILDKITE_PULL_REQUEST_REPO", "git://github.com/fork/r.git"),
            ],
            "main",
        );
        assert_eq!(
            scopes(&bk).read,
            ["ref:refs/pull/7/head:", "ref:refs/heads/main:"]
        );
    }

    // `facts` reads only variables `VARS` lists (what `CiContext` keeps).
    #[test]
    fn vars_lists_every_variable_facts_reads() {
        use std::cell::RefCell;
        for system in [
            CiSystem::GithubActions,
            CiSystem::Gitlab,
            CiSystem::Circleci,
            CiSystem::Buildkite,
        ] {
            let asked = RefCell::new(Vec::new());
            let var = |k: &str| {
                asked.borrow_mut().push(k.to_string());
                Some("x".to_string())
            };
            facts(system, &var, None);
            for k in asked.borrow().iter() {
                assert!(VARS.contains(&k.as_str()), "{k}");
            }
        }
    }
}
