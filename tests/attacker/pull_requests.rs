//! The same shared server tried by a pull request's CI job (issue 25, hole
//! 3): a token limited to its own refs may not write into the default
//! branch's runs, nor create the default branch's next run before its
//! first job. The server, its tokens and raw requests are `server`'s.

use std::path::Path;

use super::server::{keys, o, raw, server, A_PR, A_READ, A_WRITE};
use crate::support::{write_files, Client, Server};

/// A GitHub job's environment in `repo` for run `id`, on `git_ref`.
fn github(repo: &Path, id: &str, git_ref: &str, job: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GITHUB_ACTIONS", "true".into()),
        ("GITHUB_RUN_ID", id.into()),
        ("GITHUB_RUN_ATTEMPT", "1".into()),
        ("GITHUB_JOB", job.into()),
        ("GITHUB_REF", git_ref.into()),
        (
            "GITHUB_WORKFLOW_REF",
            "o/r/.github/workflows/ci.yml@refs/heads/main".into(),
        ),
        ("GITHUB_WORKSPACE", repo.to_str().unwrap().into()),
    ]
}

/// `strata ARGS` in `repo` with a CI's environment.
fn in_ci(
    s: &Server,
    repo: &Path,
    token: &str,
    env: &[(&'static str, String)],
    args: &[&str],
) -> std::process::Output {
    let mut c = Client::new(&s.ns("a"), &repo.join("../cache")).with_token(token);
    c.dir = Some(repo.to_path_buf());
    c.env = env.to_vec();
    c.run(args)
}

// Hole 3: a pull request's token, limited to its own refs, wrote into the
// default branch's run and could create the default branch's next run
// before its first job. The server refuses both; a default-branch job that
// finds its run created under another ref refuses it, naming both refs.
#[test]
fn a_pull_request_token_cannot_write_or_squat_the_default_branchs_runs() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), true, &[]);
    let repo = d.path().join("repo");
    write_files(
        &repo,
        &[
            (
                ".github/workflows/ci.yml",
                "jobs:\n  build: {}\n  deploy: {needs: build}\n",
            ),
            ("out/app", "built on main"),
        ],
    );
    let main = github(&repo, "100", "refs/heads/main", "build");
    let out = in_ci(&s, &repo, A_WRITE, &main, &["persist", "out"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Into main's run, raw: a copy of main's own ref under a new name.
    let layer = keys(&s, "a", "runs/gh-100.1/layers/build/", A_READ).remove(0);
    let bytes = raw(&s, "GET", &o("a", &layer), Some(A_READ), b"").body;
    let forged = "runs/gh-100.1/layers/build/0000000009-00ff00ff";
    let a = raw(&s, "PUT", &o("a", forged), Some(A_PR), &bytes);
    assert_eq!(a.status, 403, "a PR token wrote main's run: {a:?}");
    assert!(a.text().contains("refs/heads/main"), "{a:?}");
    // Main's next run, pre-created by the PR's token claiming main's ref.
    let squat = github(&repo, "101", "refs/heads/main", "build");
    let out = in_ci(&s, &repo, A_PR, &squat, &["persist", "out"]);
    assert!(!out.status.success(), "a PR token created a run of main");
    assert!(keys(&s, "a", "runs/gh-101.1/", A_READ).is_empty());
    // ...or under its own ref, with main's next run id: main refuses it.
    let squat = github(&repo, "102", "refs/pull/7/merge", "build");
    let out = in_ci(&s, &repo, A_PR, &squat, &["persist", "out"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let main = github(&repo, "102", "refs/heads/main", "deploy");
    let at = d.path().join("at");
    let out = in_ci(
        &s,
        &repo,
        A_WRITE,
        &main,
        &["attach", "--at", at.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "main attached a squatted run");
    assert!(
        err.contains("refs/pull/7/merge") && err.contains("refs/heads/main"),
        "{err}"
    );
    assert!(!at.join("out/app").exists());
}
