//! Each CI's documented claim set (docs/deploy.md, "CI identities", cites
//! them) against rules: the namespace, the bindings and the scope.

use super::*;
use crate::access::{allow, allow_cache_key, allow_job, allow_run, Request};
use crate::format::keys::ObjectKind;

fn claims(json: &str) -> Claims {
    serde_json::from_str(json).unwrap()
}

fn rule(issuer: &str, pairs: &[(&str, &str)], namespace: &str) -> Rule {
    Rule {
        issuer: issuer.into(),
        claims: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        namespace: namespace.into(),
        role: RoleSpec::Write,
    }
}

/// GitHub's claims for a job of run 123 (attempt 1) on `git_ref`.
pub(crate) fn github(git_ref: &str, event: &str) -> Claims {
    claims(&format!(
        r#"{{"iss": "https://token.actions.githubusercontent.com", "aud": "strata",
            "sub": "repo:acme/web:ref:{git_ref}", "repository": "acme/web",
            "repository_owner": "acme", "ref": "{git_ref}", "ref_type": "branch",
            "event_name": "{event}", "run_id": "123", "run_attempt": "1",
            "run_number": "7", "job_workflow_ref": "acme/web/.github/workflows/ci.yml@{git_ref}",
            "base_ref": "", "head_ref": ""}}"#
    ))
}

#[test]
fn a_github_job_writes_its_run_and_its_refs_scope() {
    let rules = [rule("github", &[("repository", "acme/*")], "{repository}")];
    let g = &grants(
        Ci::Github,
        "github",
        &github("refs/heads/main", "push"),
        &rules,
    )
    .unwrap()[0];
    assert_eq!(g.namespace, "acme.web");
    assert_eq!(g.role, Role::Write);
    let main = "ref:refs/heads/main:";
    assert!(allow_run(g, "gh-123.1", Some(main)).is_ok());
    assert!(allow_cache_key(g, &format!("{main}deps-1")).is_ok());
    // Another run, another attempt: refused, naming the claims.
    let e = allow_run(g, "gh-124.1", Some(main))
        .unwrap_err()
        .to_string();
    assert!(e.contains("run_id 123, run_attempt 1"), "{e}");
    assert!(allow_run(g, "gh-123.2", Some(main)).is_err());
    // Never admin by default.
    assert!(allow(g, "acme.web", &Request::Gc { dry_run: false }).is_err());
    assert!(allow(g, "acme.web", &Request::Put(&ObjectKind::Cache)).is_ok());
}

// The message of the issue: a pull request's token names its ref and the
// run's.
#[test]
fn a_pull_requests_token_never_writes_the_default_branch() {
    let rules = [rule("github", &[("repository", "acme/web")], "web")];
    let c = github("refs/pull/7/merge", "pull_request");
    let g = &grants(Ci::Github, "github", &c, &rules).unwrap()[0];
    let e = allow_run(g, "gh-122.1", Some("ref:refs/heads/main:"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token github acme/web for refs/pull/7/merge may not write run gh-122.1 of refs/heads/main"),
        "{e}"
    );
    // Its own run, recorded under main's ref (a client's lie): refused too.
    assert!(allow_run(g, "gh-123.1", Some("ref:refs/heads/main:")).is_err());
    assert!(allow_run(g, "gh-123.1", Some("ref:refs/pull/7/merge:")).is_ok());
    assert!(allow_cache_key(g, "ref:refs/heads/main:deps").is_err());
    assert!(allow_cache_key(g, "ref:refs/pull/7/merge:deps").is_ok());
    // pull_request_target runs on the base's ref: no cache at all.
    let t = github("refs/heads/main", "pull_request_target");
    let g = &grants(Ci::Github, "github", &t, &rules).unwrap()[0];
    let e = allow_cache_key(g, "ref:refs/heads/main:deps")
        .unwrap_err()
        .to_string();
    assert!(e.contains("event_name is pull_request_target"), "{e}");
    assert!(allow_run(g, "gh-123.1", Some("ref:refs/heads/main:")).is_ok());
}

#[test]
fn no_rule_says_which_claim_did_not_match() {
    let rules = [
        rule("github", &[("repository", "acme/api")], "api"),
        rule("gitlab", &[], "x"),
    ];
    let e = grants(
        Ci::Github,
        "github",
        &github("refs/heads/main", "push"),
        &rules,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("repository is acme/web, not acme/api"), "{e}");
    let e = grants(
        Ci::Github,
        "gh2",
        &github("refs/heads/main", "push"),
        &rules,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no rule for issuer gh2"), "{e}");
    let missing = rule("github", &[("environment", "prod")], "x");
    let e = grants(
        Ci::Github,
        "github",
        &github("refs/heads/main", "push"),
        &[missing],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no claim environment"), "{e}");
}

// docs/deploy.md's GitLab rule: the group and its subgroups, not a group
// whose name starts alike.
#[test]
fn globs_stay_within_path_segments() {
    let r = rule("gitlab", &[("namespace_path", "{acme,acme/**}")], "x");
    let c = |ns: &str| claims(&format!(r#"{{"namespace_path": "{ns}"}}"#));
    for ok in ["acme", "acme/platform", "acme/platform/tools"] {
        assert_eq!(mismatch(&r, &c(ok)), None, "{ok}");
    }
    for bad in ["acme-evil", "acmeevil/x", "evil/acme"] {
        assert!(mismatch(&r, &c(bad)).is_some(), "{bad}");
    }
    let r = rule("github", &[("repository", "acme/*")], "x");
    assert!(mismatch(&r, &claims(r#"{"repository": "acme/a/b"}"#)).is_some());
    assert_eq!(mismatch(&r, &claims(r#"{"repository": "acme/a"}"#)), None);
}

#[test]
fn namespaces_encode_paths_without_collisions() {
    assert_eq!(namespace_part("acme/web"), "acme.web");
    assert_ne!(namespace_part("a.b/c"), namespace_part("a/b.c"));
    assert_ne!(namespace_part("a_2eb/c"), namespace_part("a.b/c"));
    assert_eq!(namespace_part("group/sub/my_app"), "group.sub.my_5fapp");
    let c = github("refs/heads/main", "push");
    assert_eq!(render("ci-{repository_owner}", &c).unwrap(), "ci-acme");
    assert!(render("{nope}", &c).unwrap_err().contains("claim nope"));
}

#[test]
fn a_gitlab_pipeline_writes_its_pipeline_and_protection_class() {
    let c = |git_ref: &str, protected: bool, source: &str| {
        claims(&format!(
            r#"{{"iss": "https://gitlab.example.com", "aud": "strata",
                "sub": "project_path:acme/web:ref_type:branch:ref:{git_ref}",
                "namespace_path": "acme", "project_path": "acme/web", "project_id": "42",
                "pipeline_id": "1045", "pipeline_source": "{source}", "job_id": "9",
                "ref": "{git_ref}", "ref_type": "branch", "ref_protected": "{protected}"}}"#
        ))
    };
    let rules = [rule(
        "gitlab",
        &[("namespace_path", "acme")],
        "{project_path}",
    )];
    let main = &grants(Ci::Gitlab, "gitlab", &c("main", true, "push"), &rules).unwrap()[0];
    assert_eq!(main.namespace, "acme.web");
    assert!(allow_run(main, "gl-1045", Some("ref:refs/heads/main:")).is_ok());
    assert!(allow_run(main, "gl-1044", Some("ref:refs/heads/main:")).is_err());
    assert!(allow_cache_key(main, "ref:refs/heads/main:k").is_ok());
    // An unprotected branch, and a merge request's pipeline even from a
    // protected branch, write the unprotected class only.
    for (r, p, s) in [
        ("feature", false, "push"),
        ("main", true, "merge_request_event"),
    ] {
        let g = &grants(Ci::Gitlab, "gitlab", &c(r, p, s), &rules).unwrap()[0];
        assert!(
            allow_cache_key(g, "ref:refs/heads/main:k").is_err(),
            "{r} {s}"
        );
        let own = format!("ref:unprotected/refs/heads/{r}:k");
        assert!(allow_cache_key(g, &own).is_ok(), "{r} {s}");
    }
}

#[test]
fn a_circleci_job_is_bound_to_its_project_and_ref_only() {
    let c = |vcs_ref: &str| {
        claims(&format!(
            r#"{{"iss": "https://oidc.circleci.com/org/0f3c", "aud": "0f3c",
                "sub": "org/0f3c/project/77aa/user/u1/vcs-origin/github.com/acme/web/vcs-ref/{vcs_ref}",
                "oidc.circleci.com/project-id": "77aa", "oidc.circleci.com/org-id": "0f3c",
                "oidc.circleci.com/context-ids": ["c1", "c2"],
                "oidc.circleci.com/vcs-origin": "github.com/acme/web",
                "oidc.circleci.com/vcs-ref": "{vcs_ref}"}}"#
        ))
    };
    let rules = [rule(
        "circleci",
        &[
            ("oidc.circleci.com/project-id", "77aa"),
            ("oidc.circleci.com/context-ids", "c2"),
        ],
        "web",
    )];
    let g = &grants(Ci::Circleci, "circleci", &c("refs/heads/main"), &rules).unwrap()[0];
    assert_eq!(g.run_names, None);
    assert!(allow_run(g, "cc-any", Some("ref:refs/heads/main:")).is_ok());
    assert!(allow_run(g, "cc-any", Some("ref:refs/heads/dev:")).is_err());
    let pr = &grants(Ci::Circleci, "circleci", &c("refs/pull/7/head"), &rules).unwrap()[0];
    assert!(allow_cache_key(pr, "ref:refs/pull/7/head:k").is_ok());
    assert!(allow_cache_key(pr, "ref:refs/heads/main:k").is_err());
}

#[test]
fn a_buildkite_job_is_bound_to_its_build_and_step() {
    let c = |branch: &str, step: &str| {
        claims(&format!(
            r#"{{"iss": "https://agent.buildkite.com", "aud": "strata",
                "organization_slug": "acme", "pipeline_slug": "web", "build_number": 1042,
                "build_branch": "{branch}", "build_tag": null, "build_commit": "9f31",
                "step_key": {step}, "job_id": "0184", "agent_id": "0185", "build_source": "webhook"}}"#
        ))
    };
    let rules = [rule(
        "buildkite",
        &[("organization_slug", "acme")],
        "{pipeline_slug}",
    )];
    let g = &grants(Ci::Buildkite, "buildkite", &c("main", r#""test""#), &rules).unwrap()[0];
    assert_eq!(g.namespace, "web");
    let main = Some("ref:refs/heads/main:");
    assert!(allow_run(g, "bk-web-1042", main).is_ok());
    assert!(allow_run(g, "bk-web-1041", main).is_err());
    assert!(allow_job(g, "bk-web-1042", "test").is_ok());
    let e = allow_job(g, "bk-web-1042", "deploy")
        .unwrap_err()
        .to_string();
    assert!(e.contains("step_key test"), "{e}");
    // A step without a key writes no layer; a fork's build no cache.
    let g = &grants(Ci::Buildkite, "buildkite", &c("main", "null"), &rules).unwrap()[0];
    assert!(allow_job(g, "bk-web-1042", "test").is_err());
    let fork = &grants(
        Ci::Buildkite,
        "buildkite",
        &c("someone:main", r#""t""#),
        &rules,
    )
    .unwrap()[0];
    assert!(allow_cache_key(fork, "ref:refs/heads/main:k").is_err());
    assert!(allow_cache_key(fork, "ref:refs/heads/someone:main:k").is_err());
}

#[test]
fn admin_only_where_a_rule_says_so() {
    let mut r = rule("github", &[], "web");
    r.role = RoleSpec::Admin;
    let g = &grants(
        Ci::Github,
        "github",
        &github("refs/heads/main", "push"),
        &[r],
    )
    .unwrap()[0];
    assert!(allow(g, "web", &Request::Gc { dry_run: false }).is_ok());
    let parsed: Rule = serde_yaml_ng_free("issuer: github\nnamespace: web\n");
    assert_eq!(parsed.role, RoleSpec::Write);
}

/// A rule as JSON (the store has no YAML parser; the server parses the
/// file): fields default alike.
fn serde_yaml_ng_free(yaml: &str) -> Rule {
    let mut map = serde_json::Map::new();
    for line in yaml.lines() {
        let (k, v) = line.split_once(": ").unwrap();
        map.insert(k.into(), Value::String(v.into()));
    }
    serde_json::from_value(Value::Object(map)).unwrap()
}
