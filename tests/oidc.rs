//! CI identities (`strata serve --oidc`, docs/deploy.md, "CI identities"):
//! a test issuer on loopback over HTTPS, with its own CA, key pair,
//! discovery document and JWKS, signs tokens carrying each CI's
//! documented claims; jobs with each CI's documented environment and its
//! token source stubbed (GitHub's request URL, GitLab's and CircleCI's
//! variables, a `buildkite-agent` on PATH) persist, attach and cache with
//! nothing but the store URL; forged, expired and misdirected tokens are
//! refused, each naming why.

mod issuer;
use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use issuer::{
    buildkite_claims, circleci_claims, github_claims, gitlab_claims, new_key, now, sign_with,
    token_endpoint, Issuer, Key, CIS,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{strata_bin, write_files as write, Server};

/// The server's `--oidc` file: the four CIs of the test issuer, each rule
/// mapping `acme/web` to namespace `acme.web`.
fn oidc_file(dir: &Path, issuer: &Issuer) -> PathBuf {
    let mut yaml = String::from("refetch_floor_secs: 0\nclock_skew_secs: 30\nissuers:\n");
    for (ci, aud) in CIS {
        yaml.push_str(&format!(
            "  - {{name: {ci}, ci: {ci}, issuer: \"{}\", audience: \"{aud}\", ca_cert: \"{}\"}}\n",
            issuer.iss(ci),
            issuer.ca.display()
        ));
    }
    yaml.push_str(
        "rules:\n\
         \x20 - {issuer: github, claims: {repository: \"acme/*\"}, namespace: \"{repository}\"}\n\
         \x20 - {issuer: gitlab, claims: {namespace_path: acme}, namespace: \"{project_path}\"}\n\
         \x20 - {issuer: circleci, claims: {\"oidc.circleci.com/project-id\": 77aa}, namespace: acme.web}\n\
         \x20 - {issuer: buildkite, claims: {organization_slug: acme}, namespace: \"acme.{pipeline_slug}\"}\n",
    );
    let path = dir.join("oidc.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The issuer and a `strata serve --oidc` trusting it.
fn setup(dir: &Path) -> (Issuer, Server) {
    let issuer = Issuer::start(&dir.join("issuer"));
    let file = oidc_file(dir, &issuer);
    let server = Server::start(
        dir.join("srv").to_str().unwrap(),
        &["--oidc", file.to_str().unwrap()],
        &[],
    );
    (issuer, server)
}

/// `strata ARGS` as a CI job runs it: exactly `env` (and PATH, HOME), the
/// store URL and nothing else about the server.
fn job(dir: &Path, store: &str, env: &[(&str, String)], args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(strata_bin())
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir)
        .env("STRATA_STORE", store)
        .env("STRATA_CACHE", dir.join("cache"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.join("repo"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(out: Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should have been refused");
    String::from_utf8(out.stderr).unwrap()
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .map(|(k, v)| (&*String::leak(k.to_string()), v.to_string()))
        .collect()
}

/// A job persists, the next attaches what it persisted, and a cache is
/// saved and restored: each with its own env, in `repo`.
fn persist_attach_cache(
    dir: &Path,
    store: &str,
    first: &[(&str, String)],
    second: &[(&str, String)],
) {
    let repo = dir.join("repo");
    write(
        &repo,
        &[("dist/app.js", "built"), ("node_modules/dep/i.js", "dep")],
    );
    ok(job(dir, store, first, &["persist", "dist"]), "persist");
    let at = dir.join("attached");
    ok(
        job(
            dir,
            store,
            second,
            &["attach", "--at", at.to_str().unwrap()],
        ),
        "attach",
    );
    assert_eq!(
        std::fs::read_to_string(at.join("dist/app.js")).unwrap(),
        "built"
    );
    ok(
        job(
            dir,
            store,
            first,
            &["cache", "save", "--key", "deps-1", "node_modules"],
        ),
        "cache save",
    );
    let back = dir.join("restored");
    let r = ok(
        job(
            dir,
            store,
            second,
            &[
                "--json",
                "cache",
                "restore",
                "--key",
                "deps-",
                "--at",
                back.to_str().unwrap(),
            ],
        ),
        "cache restore",
    );
    assert!(r.contains("deps-1"), "{r}");
    assert_eq!(
        std::fs::read_to_string(back.join("node_modules/dep/i.js")).unwrap(),
        "dep"
    );
}

fn github_env(
    dir: &Path,
    endpoint: Option<&str>,
    git_ref: &str,
    run_id: &str,
    job: &str,
    event: &str,
) -> Vec<(&'static str, String)> {
    let repo = dir.join("repo");
    let mut env = vars(&[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_RUN_ID", run_id),
        ("GITHUB_RUN_ATTEMPT", "1"),
        ("GITHUB_JOB", job),
        (
            "GITHUB_WORKFLOW_REF",
            &format!("acme/web/.github/workflows/ci.yml@{git_ref}"),
        ),
        ("GITHUB_REF", git_ref),
        ("GITHUB_EVENT_NAME", event),
        ("GITHUB_WORKSPACE", repo.to_str().unwrap()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "req-secret"),
    ]);
    if let Some(url) = endpoint {
        env.push(("ACTIONS_ID_TOKEN_REQUEST_URL", url.to_string()));
    }
    env
}

fn github_repo(dir: &Path) {
    write(
        &dir.join("repo"),
        &[(
            ".github/workflows/ci.yml",
            "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n  test:\n    needs: build\n",
        )],
    );
}

// A GitHub job, with `permissions: id-token: write` and only the store URL
// configured, asks its request URL for a token with the audience the
// server announces, and persists, attaches and caches.
#[test]
fn github_jobs_need_nothing_but_the_store_url() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (issuer, server) = setup(dir);
    let key = issuer.keys[0].clone();
    let base = issuer.claims("github", github_claims("refs/heads/main", "push", "123"));
    let endpoint = token_endpoint(move |_| sign_with(&key, &base));
    github_repo(dir);
    let env = |job| {
        github_env(
            dir,
            Some(&endpoint.url),
            "refs/heads/main",
            "123",
            job,
            "push",
        )
    };
    let store = server.ns("acme.web");
    persist_attach_cache(dir, &store, &env("build"), &env("test"));
    assert!(
        endpoint
            .audiences
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == "strata-test"),
        "{:?}",
        endpoint.audiences.lock().unwrap()
    );
    let shown = ok(job(dir, &store, &env("build"), &["ci"]), "strata ci");
    assert!(shown.contains("ACTIONS_ID_TOKEN_REQUEST_URL"), "{shown}");
    // Another namespace: the rule's namespace only.
    let e = refused(job(dir, &server.ns("other"), &env("build"), &["ls"]), "ls");
    assert!(e.contains("is not for namespace other"), "{e}");
}

// GitHub tokens expire within minutes: one the server refuses as expired
// is asked for again, once, from the request URL.
#[test]
fn an_expired_github_token_is_renewed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (issuer, server) = setup(dir);
    let key = issuer.keys[0].clone();
    let mut old = issuer.claims("github", github_claims("refs/heads/main", "push", "123"));
    let fresh = old.clone();
    old["exp"] = json!(now() - 600);
    old["iat"] = json!(now() - 900);
    old["nbf"] = json!(now() - 900);
    let endpoint = token_endpoint(move |n| sign_with(&key, if n == 1 { &old } else { &fresh }));
    github_repo(dir);
    write(&dir.join("repo"), &[("dist/a", "1")]);
    let env = github_env(
        dir,
        Some(&endpoint.url),
        "refs/heads/main",
        "123",
        "build",
        "push",
    );
    let out = job(dir, &server.ns("acme.web"), &env, &["persist", "dist"]);
    if !out.status.success() {
        while let Ok(l) = server.log.recv_timeout(Duration::from_millis(200)) {
            eprintln!("server: {l}");
        }
    }
    ok(out, "persist");
    assert_eq!(endpoint.audiences.lock().unwrap().len(), 2);
}

// GitHub gives a pull request from a fork no OIDC token: its job gets
// nothing from the store, and says why.
#[test]
fn a_fork_pull_request_on_github_gets_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_issuer, server) = setup(dir);
    github_repo(dir);
    write(&dir.join("repo"), &[("dist/a", "1")]);
    let env = github_env(
        dir,
        None,
        "refs/pull/7/merge",
        "130",
        "build",
        "pull_request",
    );
    let store = server.ns("acme.web");
    let e = refused(
        job(dir, &store, &env, &["persist", "dist"]),
        "a fork's persist",
    );
    assert!(
        e.contains("GitHub gives no OIDC token to a pull request from a fork"),
        "{e}"
    );
    let e = refused(job(dir, &store, &env, &["ls"]), "a fork's ls");
    assert!(e.contains("no OIDC token"), "{e}");
    let shown = ok(job(dir, &store, &env, &["ci"]), "strata ci");
    assert!(
        shown.contains("identity for a strata serve store: none"),
        "{shown}"
    );
}

// A pull request's job writes its own run and its own ref's cache scope;
// with its environment lying about run or ref, the claims win.
#[test]
fn a_pull_requests_token_writes_only_its_own_run_and_scope() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (issuer, server) = setup(dir);
    github_repo(dir);
    let store = server.ns("acme.web");
    let token = |git_ref: &str, event: &str, run: &str| {
        issuer.sign("github", github_claims(git_ref, event, run))
    };
    let with_token = |env: Vec<(&'static str, String)>, t: String| {
        let mut env = env;
        env.push(("STRATA_TOKEN", t));
        env
    };
    // main's run 123 and its cache.
    let main = with_token(
        github_env(dir, None, "refs/heads/main", "123", "build", "push"),
        token("refs/heads/main", "push", "123"),
    );
    write(
        &dir.join("repo"),
        &[("dist/a", "main"), ("node_modules/d", "main")],
    );
    ok(
        job(dir, &store, &main, &["persist", "dist"]),
        "main's persist",
    );
    // The pull request's own run and scope: allowed.
    let pr_token = token("refs/pull/7/merge", "pull_request", "124");
    let pr = with_token(
        github_env(
            dir,
            None,
            "refs/pull/7/merge",
            "124",
            "build",
            "pull_request",
        ),
        pr_token.clone(),
    );
    write(
        &dir.join("repo"),
        &[("dist/a", "pr"), ("node_modules/d", "pr")],
    );
    ok(
        job(dir, &store, &pr, &["persist", "dist"]),
        "the PR's persist",
    );
    ok(
        job(
            dir,
            &store,
            &pr,
            &["cache", "save", "--key", "deps-1", "node_modules"],
        ),
        "the PR's cache save",
    );
    // Its token with main's run id and ref in the environment: refused,
    // naming the claims.
    let lying = with_token(
        github_env(dir, None, "refs/heads/main", "123", "build", "push"),
        pr_token.clone(),
    );
    let e = refused(
        job(dir, &store, &lying, &["persist", "dist"]),
        "writing main's run",
    );
    assert!(
        e.contains("for refs/pull/7/merge may not write run gh-123.1 of refs/heads/main"),
        "{e}"
    );
    // Its own run id but main's ref: the cache save and the run refused.
    let lying = with_token(
        github_env(dir, None, "refs/heads/main", "124", "build", "push"),
        pr_token,
    );
    let e = refused(
        job(
            dir,
            &store,
            &lying,
            &["cache", "save", "--key", "deps-2", "node_modules"],
        ),
        "saving under main's scope",
    );
    assert!(
        e.contains("may save caches only under ref:refs/pull/7/merge:"),
        "{e}"
    );
    // main restores its own entry, never the pull request's.
    let back = dir.join("back");
    ok(
        job(
            dir,
            &store,
            &main,
            &["cache", "save", "--key", "deps-0", "node_modules"],
        ),
        "main's cache save",
    );
    let r = ok(
        job(
            dir,
            &store,
            &main,
            &[
                "--json",
                "cache",
                "restore",
                "--key",
                "deps-",
                "--at",
                back.to_str().unwrap(),
            ],
        ),
        "main's restore",
    );
    assert!(r.contains("ref:refs/heads/main:deps-0"), "{r}");
}

// pull_request_target runs for a pull request on main's ref (with the
// pull request's code, if the workflow checks it out): its own run, but no
// cache at all.
#[test]
fn pull_request_target_saves_no_cache() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (issuer, server) = setup(dir);
    github_repo(dir);
    write(
        &dir.join("repo"),
        &[("dist/a", "x"), ("node_modules/d", "x")],
    );
    let store = server.ns("acme.web");
    let mut target = github_env(
        dir,
        None,
        "refs/heads/main",
        "125",
        "build",
        "pull_request_target",
    );
    target.push((
        "STRATA_TOKEN",
        issuer.sign(
            "github",
            github_claims("refs/heads/main", "pull_request_target", "125"),
        ),
    ));
    ok(
        job(dir, &store, &target, &["persist", "dist"]),
        "its own run",
    );
    let e = refused(
        job(
            dir,
            &store,
            &target,
            &["cache", "save", "--key", "deps-3", "node_modules"],
        ),
        "pull_request_target's cache save",
    );
    assert!(e.contains("event_name is pull_request_target"), "{e}");
}

/// `strata ls` with `token`: its stderr, expecting a refusal.
fn ls_refused(dir: &Path, store: &str, token: &str) -> String {
    refused(
        job(dir, store, &[("STRATA_TOKEN", token.to_string())], &["ls"]),
        "ls with a bad token",
    )
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

// Tokens that do not verify: each refused with 401, naming why.
#[test]
fn forged_expired_and_misdirected_tokens_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    let (issuer, server) = setup(dir);
    let store = server.ns("acme.web");
    let good = issuer.claims("github", github_claims("refs/heads/main", "push", "1"));
    ok(
        job(
            dir,
            &store,
            &[("STRATA_TOKEN", sign_with(&issuer.keys[0], &good))],
            &["ls"],
        ),
        "a good token",
    );
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        sign_with(&issuer.keys[0], &c)
    };
    let cases = [
        ("expired", with("exp", json!(now() - 600)), "expired"),
        (
            "wrong audience",
            with("aud", json!("someone-else")),
            "aud is \"someone-else\"",
        ),
        (
            "wrong issuer",
            with("iss", json!("https://evil.example")),
            "no issuer this server trusts",
        ),
        (
            "not yet valid",
            with("nbf", json!(now() + 3600)),
            "not valid yet",
        ),
    ];
    for (what, token, says) in cases {
        let e = ls_refused(dir, &store, &token);
        assert!(
            e.contains(says) && e.contains("refused the token"),
            "{what}: {e}"
        );
    }
    // alg none: no signature at all.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let e = ls_refused(dir, &store, &none);
    assert!(e.contains("alg none"), "{e}");
    // HMAC signed with the issuer's public key as the secret.
    let public = serde_json::to_vec(&issuer.keys[0].jwk).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("kid-1".into());
    let hmac =
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&public).unwrap()).unwrap();
    let e = ls_refused(dir, &store, &hmac);
    assert!(e.contains("HMAC"), "{e}");
    // A key the issuer does not publish.
    let stranger = new_key(&issuer.dir, "kid-stranger");
    let e = ls_refused(dir, &store, &sign_with(&stranger, &good));
    assert!(e.contains("kid kid-stranger"), "{e}");
    // A stranger's key under the issuer's key id: the signature fails.
    let forged = Key {
        kid: "kid-1".into(),
        ..stranger
    };
    let e = ls_refused(dir, &store, &sign_with(&forged, &good));
    assert!(e.contains("signature does not verify"), "{e}");
    // A valid token no rule grants: 403, naming the claim.
    let mut other = good.clone();
    other["repository"] = json!("evil/web");
    let e = ls_refused(dir, &store, &sign_with(&issuer.keys[0], &other));
    assert!(e.contains("repository is evil/web, not acme/*"), "{e}");
}

// The issuer rotates its key: a token with the new key id makes the
// server fetch the JWKS again. With the issuer down, tokens whose keys
// are known still work; a new key id is refused.
#[test]
fn keys_rotate_and_outlive_an_issuer_that_is_down() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    let (mut issuer, server) = setup(dir);
    let store = server.ns("acme.web");
    let claims = || issuer.claims("github", github_claims("refs/heads/main", "push", "1"));
    let first = issuer.keys[0].clone();
    let ls = |token: String| job(dir, &store, &[("STRATA_TOKEN", token)], &["ls"]);
    ok(ls(sign_with(&first, &claims())), "the first key");
    let second = issuer.rotate("kid-2");
    ok(
        ls(sign_with(
            &second,
            &issuer.claims("github", github_claims("refs/heads/main", "push", "1")),
        )),
        "the new key",
    );
    issuer.stop();
    let c = issuer.claims("github", github_claims("refs/heads/main", "push", "1"));
    ok(ls(sign_with(&first, &c)), "a known key, the issuer down");
    ok(
        ls(sign_with(&second, &c)),
        "the other known key, the issuer down",
    );
    let third = new_key(&issuer.dir, "kid-3");
    let e = refused(ls(sign_with(&third, &c)), "an unknown key, the issuer down");
    assert!(e.contains("kid kid-3"), "{e}");
    server.wait_for_log("OIDC keys:", Duration::from_secs(5));
}

// A site that cannot reach its issuer keeps the issuer's JWKS in a file,
// read again when a token names a key it lacks.
#[test]
fn an_air_gapped_server_reads_the_keys_from_a_file() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    let mut issuer = Issuer::start(&dir.join("issuer"));
    issuer.stop();
    let jwks = issuer.dir.join("www/github/jwks.json");
    let file = dir.join("oidc.yaml");
    std::fs::write(
        &file,
        format!(
            "refetch_floor_secs: 0\nissuers:\n  - {{name: github, ci: github, issuer: \"{}\", \
             audience: strata-test, jwks_file: \"{}\"}}\nrules:\n  - {{issuer: github, \
             claims: {{repository: \"acme/*\"}}, namespace: \"{{repository}}\"}}\n",
            issuer.iss("github"),
            jwks.display()
        ),
    )
    .unwrap();
    let server = Server::start(
        dir.join("srv").to_str().unwrap(),
        &["--oidc", file.to_str().unwrap()],
        &[],
    );
    let store = server.ns("acme.web");
    let claims = issuer.claims("github", github_claims("refs/heads/main", "push", "1"));
    let ls = |token: String| job(dir, &store, &[("STRATA_TOKEN", token)], &["ls"]);
    ok(ls(sign_with(&issuer.keys[0], &claims)), "a key of the file");
    let second = issuer.rotate("kid-2");
    ok(ls(sign_with(&second, &claims)), "a key added to the file");
}

// Static tokens keep working beside CI identities.
#[test]
fn static_tokens_work_beside_ci_identities() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    let issuer = Issuer::start(&dir.join("issuer"));
    let file = oidc_file(dir, &issuer);
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        "tokens:\n  - {name: ops, token: static-token-0123456789, namespace: acme.web, scope: admin}\n",
    )
    .unwrap();
    let server = Server::start(
        dir.join("srv").to_str().unwrap(),
        &[
            "--oidc",
            file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    let store = server.ns("acme.web");
    ok(
        job(
            dir,
            &store,
            &[("STRATA_TOKEN", "static-token-0123456789".into())],
            &["gc"],
        ),
        "gc with the static admin token",
    );
    let token = issuer.sign("github", github_claims("refs/heads/main", "push", "1"));
    ok(
        job(dir, &store, &[("STRATA_TOKEN", token.clone())], &["ls"]),
        "a CI token",
    );
    // A CI identity is never admin unless a rule says so.
    let e = refused(
        job(dir, &store, &[("STRATA_TOKEN", token)], &["gc"]),
        "gc with a CI token",
    );
    assert!(e.contains("may not administer"), "{e}");
    let e = ls_refused(dir, &store, "not-a-known-static-token");
    assert!(e.contains("unknown token"), "{e}");
}

// A GitLab job declares STRATA_ID_TOKEN under id_tokens: and needs
// nothing else; a merge request's pipeline never saves what a protected
// branch restores.
#[test]
fn gitlab_jobs_need_nothing_but_the_store_url() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (issuer, server) = setup(dir);
    let repo = dir.join("repo");
    write(
        &repo,
        &[(
            ".gitlab-ci.yml",
            "stages: [build, test]\nbuild:\n  stage: build\n  script: make\ntest:\n  stage: test\n  script: make test\n",
        )],
    );
    let env = |job: &str, pipeline: &str, token: String| {
        let mut e = vars(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", pipeline),
            ("CI_JOB_NAME", job),
            ("CI_JOB_ID", "900"),
            ("CI_COMMIT_REF_NAME", "main"),
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_COMMIT_REF_PROTECTED", "true"),
            ("CI_DEFAULT_BRANCH", "main"),
            ("CI_PIPELINE_SOURCE", "push"),
            ("CI_PROJECT_DIR", repo.to_str().unwrap()),
        ]);
        e.push(("STRATA_ID_TOKEN", token));
        e
    };
    let token = issuer.sign("gitlab", gitlab_claims("1045", "push"));
    let store = server.ns("acme.web");
    persist_attach_cache(
        dir,
        &store,
        &env("build", "1045", token.clone()),
        &env("test", "1045", token.clone()),
    );
    // Its token for another pipeline.
    let e = refused(
        job(
            dir,
            &store,
            &env("build", "1044", token),
            &["persist", "dist"],
        ),
        "another pipeline",
    );
    assert!(e.contains("pipeline_id 1045"), "{e}");
    // A merge request's token, its job claiming a protected push.
    let mr = issuer.sign("gitlab", gitlab_claims("1046", "merge_request_event"));
    let e = refused(
        job(
            dir,
            &store,
            &env("build", "1046", mr),
            &["cache", "save", "--key", "deps-9", "node_modules"],
        ),
        "a merge request saving under main's protected scope",
    );
    assert!(
        e.contains("only under ref:unprotected/refs/heads/main:"),
        "{e}"
    );
}

// CircleCI's v2 token is in CIRCLE_OIDC_TOKEN_V2; its audience is the
// organization's id. Runs are bound to the project and ref only.
#[test]
fn circleci_jobs_need_nothing_but_the_store_url() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (issuer, server) = setup(dir);
    let repo = dir.join("repo");
    write(
        &repo,
        &[(
            ".circleci/config.yml",
            "version: 2.1\nworkflows:\n  main:\n    jobs:\n      - build\n      - test:\n          requires: [build]\n",
        )],
    );
    let token = issuer.sign("circleci", circleci_claims());
    let env = |job: &str, branch: &str| {
        let mut e = vars(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_WORKFLOW_ID", "wf-1"),
            ("CIRCLE_WORKFLOW_WORKSPACE_ID", "ws-1"),
            ("CIRCLE_JOB", job),
            ("CIRCLE_BUILD_NUM", "11"),
            ("CIRCLE_BRANCH", branch),
            ("CIRCLE_WORKING_DIRECTORY", repo.to_str().unwrap()),
        ]);
        e.push(("CIRCLE_OIDC_TOKEN_V2", token.clone()));
        e
    };
    let store = server.ns("acme.web");
    persist_attach_cache(dir, &store, &env("build", "main"), &env("test", "main"));
    // Its token with another branch in the environment: refused.
    let e = refused(
        job(
            dir,
            &store,
            &env("build", "release"),
            &["cache", "save", "--key", "deps-2", "node_modules"],
        ),
        "another branch",
    );
    assert!(e.contains("only under ref:refs/heads/main:"), "{e}");
}

// Buildkite: the run is the pipeline's build (`bk-web-1042`), named the
// same by the job's environment and its claims; a job writes only its
// step's layers. `buildkite-agent oidc request-token` is a stub on PATH.
#[test]
fn buildkite_jobs_need_nothing_but_the_store_url() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (issuer, server) = setup(dir);
    let repo = dir.join("repo");
    write(
        &repo,
        &[(
            ".buildkite/pipeline.yml",
            "steps:\n  - key: build\n    command: make\n  - key: test\n    depends_on: build\n    command: make test\n",
        )],
    );
    // The stub prints the token of the step it is told to be, for the
    // audience it is asked; anything else fails as the agent would.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for step in ["build", "test"] {
        std::fs::write(
            dir.join(format!("token-{step}")),
            issuer.sign("buildkite", buildkite_claims(step)),
        )
        .unwrap();
    }
    let stub = bin.join("buildkite-agent");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\n[ \"$1 $2 $3 $4\" = \"oidc request-token --audience strata-test\" ] || {{ echo \"bad arguments: $*\" >&2; exit 1; }}\n\
             [ -n \"$BUILDKITE_AGENT_ACCESS_TOKEN\" ] || {{ echo 'no agent token' >&2; exit 1; }}\n\
             cat \"{}/token-$STUB_STEP\"\n",
            dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = |step: &str, token_of: &str| {
        vars(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_ID", "0190a-b"),
            ("BUILDKITE_PIPELINE_SLUG", "web"),
            ("BUILDKITE_BUILD_NUMBER", "1042"),
            ("BUILDKITE_STEP_KEY", step),
            ("BUILDKITE_JOB_ID", &format!("job-{step}")),
            ("BUILDKITE_RETRY_COUNT", "0"),
            ("BUILDKITE_BRANCH", "main"),
            ("BUILDKITE_BUILD_CHECKOUT_PATH", repo.to_str().unwrap()),
            ("BUILDKITE_AGENT_ACCESS_TOKEN", "agent-secret"),
            ("STUB_STEP", token_of),
        ])
    };
    let store = server.ns("acme.web");
    persist_attach_cache(dir, &store, &env("build", "build"), &env("test", "test"));
    let ls = ok(job(dir, &store, &env("build", "build"), &["ls"]), "ls");
    assert!(ls.contains("bk-web-1042"), "{ls}");
    // The test step's token, its job claiming to be the build step.
    let e = refused(
        job(dir, &store, &env("build", "test"), &["persist", "dist"]),
        "another step's layer",
    );
    assert!(e.contains("(step_key test) name only job test"), "{e}");
}
