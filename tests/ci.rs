//! strata inside real CI systems, driven with each system's documented
//! environment and a config of its format: no `--run`, `--job` or `run
//! create`; reruns and retries as the CI does them (docs/ci.md).

use crate::support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use support::{file_names as files, strata, write_files as write};

/// Runs `strata ARGS` in `dir` with exactly `env` from the CI (and the
/// store): its JSON output, or a panic with its stderr.
fn ci(dir: &Path, store: &Path, env: &[(&str, &str)], args: &[&str]) -> Value {
    let out = run(dir, store, env, args);
    assert!(
        out.status.success(),
        "strata {args:?} with {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run(dir: &Path, store: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = strata();
    for v in CI_VARS {
        c.env_remove(v);
    }
    c.current_dir(dir)
        .arg("--store")
        .arg(store)
        .arg("--json")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Every variable the tests set, removed first so the machine's own CI
/// (when the tests run inside one) never leaks in.
const CI_VARS: &[&str] = &[
    "GITHUB_ACTIONS",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_JOB",
    "GITHUB_WORKFLOW_REF",
    "GITHUB_WORKSPACE",
    "GITHUB_REF_NAME",
    "GITHUB_HEAD_REF",
    "GITHUB_SHA",
    "GITLAB_CI",
    "CI_PIPELINE_ID",
    "CI_JOB_NAME",
    "CI_JOB_ID",
    "CI_NODE_INDEX",
    "CI_CONFIG_PATH",
    "CI_PROJECT_DIR",
    "CI_COMMIT_BRANCH",
    "CI_COMMIT_REF_NAME",
    "CI_DEFAULT_BRANCH",
    "CI_COMMIT_SHA",
    "CIRCLECI",
    "CIRCLE_WORKFLOW_ID",
    "CIRCLE_WORKFLOW_WORKSPACE_ID",
    "CIRCLE_JOB",
    "CIRCLE_NODE_INDEX",
    "CIRCLE_BRANCH",
    "CIRCLE_SHA1",
    "CIRCLE_WORKING_DIRECTORY",
    "BUILDKITE",
    "BUILDKITE_BUILD_ID",
    "BUILDKITE_STEP_KEY",
    "BUILDKITE_LABEL",
    "BUILDKITE_PARALLEL_JOB",
    "BUILDKITE_BRANCH",
    "BUILDKITE_COMMIT",
    "BUILDKITE_PIPELINE_DEFAULT_BRANCH",
    "BUILDKITE_BUILD_CHECKOUT_PATH",
    "STRATA_RUN",
    "STRATA_JOB",
    "STRATA_LEG",
    "CIRCLE_BUILD_NUM",
    "BUILDKITE_JOB_ID",
    "BUILDKITE_COMMAND",
    "BUILDKITE_PLUGINS",
    "BUILDKITE_RETRY_COUNT",
    "STRATA_CONFIG",
    "GITHUB_REF",
    "GITHUB_BASE_REF",
    "GITHUB_EVENT_PATH",
    "CI_COMMIT_TAG",
    "CI_COMMIT_REF_PROTECTED",
    "CI_MERGE_REQUEST_IID",
    "CI_MERGE_REQUEST_PROJECT_ID",
    "CI_MERGE_REQUEST_SOURCE_PROJECT_ID",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
    "CIRCLE_TAG",
    "CIRCLE_PR_NUMBER",
    "BUILDKITE_TAG",
    "BUILDKITE_REPO",
    "BUILDKITE_PULL_REQUEST",
    "BUILDKITE_PULL_REQUEST_REPO",
    "BUILDKITE_PULL_REQUEST_BASE_BRANCH",
    "BUILDKITE_PIPELINE_SLUG",
    "BUILDKITE_BUILD_NUMBER",
    "CI_PIPELINE_SOURCE",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "STRATA_ID_TOKEN",
    "CIRCLE_OIDC_TOKEN_V2",
];

// GitHub Actions: attempt 1 builds and tests, deploy fails; "re-run failed
// jobs" (attempt 2) reruns deploy, which sees attempt 1's layers; "re-run
// all jobs" (attempt 3) rebuilds, and its test sees the new build only.
#[test]
fn github_actions_attempts_keep_and_replace_layers() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[(
            ".github/workflows/ci.yml",
            "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n  test:\n    needs: build\n  deploy:\n    needs: [build, test]\n",
        )],
    );
    let repo_s = repo.to_str().unwrap();
    let summary = d.path().join("summary.md");
    let summary_s = summary.to_str().unwrap();
    let env = |attempt: &'static str, job: &'static str| {
        vec![
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary_s),
            ("GITHUB_RUN_ID", "9100"),
            ("GITHUB_RUN_ATTEMPT", attempt),
            ("GITHUB_JOB", job),
            (
                "GITHUB_WORKFLOW_REF",
                "octo/app/.github/workflows/ci.yml@refs/heads/main",
            ),
            ("GITHUB_WORKSPACE", repo_s),
        ]
    };
    // `strata ci` says what it read, and from where.
    let shown = ci(&repo, &store, &env("1", "build"), &["ci"]);
    assert_eq!(shown["store_run"], "gh-9100.1");
    assert_eq!(shown["job"]["from"], "GITHUB_JOB");
    // Attempt 1.
    write(&repo, &[("dist/app.js", "v1"), ("dist/old.js", "old")]);
    let p = ci(&repo, &store, &env("1", "build"), &["persist", "dist"]);
    assert_eq!(p["run"], "gh-9100.1");
    // The command's lines sit in a collapsible group of the job's log.
    let look = d.path().join("look");
    let out = run(
        &repo,
        &store,
        &env("1", "test"),
        &["attach", "--at", look.to_str().unwrap()],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let open = log.find("::group::strata attach gh-9100.1/test");
    assert!(open.is_some() && log.find("::endgroup::") > open, "{log}");
    // The job's summary page gets a table of what it did.
    let table = fs::read_to_string(&summary).unwrap();
    assert!(table.contains("### strata persist"), "{table}");
    assert!(table.contains("| gh-9100.1 / build | 2 |"), "{table}");
    let at = d.path().join("t1");
    ci(
        &repo,
        &store,
        &env("1", "test"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(files(&at), ["dist/app.js", "dist/old.js"]);
    write(&repo, &[("report/junit.xml", "ok")]);
    ci(&repo, &store, &env("1", "test"), &["persist", "report"]);
    // deploy fails in attempt 1 (no persist). Attempt 2 reruns it alone.
    let at = d.path().join("d2");
    ci(
        &repo,
        &store,
        &env("2", "deploy"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(
        files(&at),
        ["dist/app.js", "dist/old.js", "report/junit.xml"]
    );
    // Attempt 3 reruns every job: build's new layer replaces attempt 1's.
    fs::remove_file(repo.join("dist/old.js")).unwrap();
    write(&repo, &[("dist/app.js", "v3"), ("dist/new.js", "new")]);
    ci(&repo, &store, &env("3", "build"), &["persist", "dist"]);
    let at = d.path().join("t3");
    ci(
        &repo,
        &store,
        &env("3", "test"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(files(&at), ["dist/app.js", "dist/new.js"]);
    assert_eq!(fs::read_to_string(at.join("dist/app.js")).unwrap(), "v3");
    // Until test runs again in attempt 3, deploy there sees its report
    // from attempt 1 beside the new build.
    let at = d.path().join("d3");
    ci(
        &repo,
        &store,
        &env("3", "deploy"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(
        files(&at),
        ["dist/app.js", "dist/new.js", "report/junit.xml"]
    );
    // A job the config does not have is refused, naming the known ones.
    let out = run(&repo, &store, &env("4", "nope"), &["attach", "--at", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("build"), "{err}");
    // ...and shown on the run as an error annotation.
    assert!(err.contains("::error title=strata::"), "{err}");
}

// GitLab CI: stages and needs from .gitlab-ci.yml, names with spaces, and
// the legs of a `parallel` job all reaching the job that needs it.
#[test]
fn gitlab_pipeline_with_parallel_legs() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[(
            ".gitlab-ci.yml",
            "stages: [build, test, deploy]\ncompile assets:\n  stage: build\n  script: make\nrspec:\n  stage: test\n  parallel: 2\n  script: rspec\ndeploy prod:\n  stage: deploy\n  script: deploy\n",
        )],
    );
    let repo_s = repo.to_str().unwrap();
    let env_try =
        |pipeline: &'static str, job: &'static str, node: &'static str, id: &'static str| {
            vec![
                ("GITLAB_CI", "true"),
                ("CI_PIPELINE_ID", pipeline),
                ("CI_JOB_NAME", job),
                ("CI_JOB_ID", id),
                ("CI_NODE_INDEX", node),
                ("CI_PROJECT_DIR", repo_s),
            ]
        };
    let env = |job: &'static str, node: &'static str| env_try("5501", job, node, "100");
    write(&repo, &[("public/app.css", "body{}")]);
    ci(
        &repo,
        &store,
        &env("compile assets", ""),
        &["persist", "public"],
    );
    for (leg, node) in [("rspec 1/2", "1"), ("rspec 2/2", "2")] {
        let at = d.path().join(format!("at-{node}"));
        ci(
            &repo,
            &store,
            &env(leg, node),
            &["attach", "--at", at.to_str().unwrap()],
        );
        assert_eq!(files(&at), ["public/app.css"]);
        write(&repo, &[(&format!("coverage/leg{node}.json"), node)]);
        ci(
            &repo,
            &store,
            &env(leg, node),
            &["persist", &format!("coverage/leg{node}.json")],
        );
    }
    let at = d.path().join("deploy");
    ci(
        &repo,
        &store,
        &env("deploy prod", ""),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(
        files(&at),
        ["coverage/leg1.json", "coverage/leg2.json", "public/app.css"]
    );
    // GitLab's log: a collapsed section around the command.
    let out = run(
        &repo,
        &store,
        &env("deploy prod", ""),
        &["attach", "--at", d.path().join("sec").to_str().unwrap()],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(":strata[collapsed=true]") && log.contains("section_end:"),
        "{log}"
    );
    // A retry of leg 1 (a new CI_JOB_ID) replaces what its failed try
    // persisted; leg 2's layers stay.
    fs::remove_file(repo.join("coverage/leg1.json")).unwrap();
    write(&repo, &[("coverage/retry1.json", "again")]);
    ci(
        &repo,
        &store,
        &env_try("5501", "rspec 1/2", "1", "101"),
        &["persist", "coverage/retry1.json"],
    );
    let at = d.path().join("deploy-after-retry");
    ci(
        &repo,
        &store,
        &env("deploy prod", ""),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(
        files(&at),
        [
            "coverage/leg2.json",
            "coverage/retry1.json",
            "public/app.css"
        ]
    );
    // Two legs writing one path differently: a conflict naming both legs.
    for (leg, node) in [("rspec 1/2", "1"), ("rspec 2/2", "2")] {
        write(&repo, &[("coverage/summary.json", node)]);
        ci(
            &repo,
            &store,
            &env_try("5502", leg, node, "200"),
            &["persist", "coverage/summary.json"],
        );
    }
    let out = run(
        &repo,
        &store,
        &env_try("5502", "deploy prod", "", "201"),
        &["attach", "--at", "x"],
    );
    assert_eq!(out.status.code(), Some(3), "a conflict exits 3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("coverage/summary.json")
            && err.contains("rspec 1/2")
            && err.contains("rspec 2/2"),
        "{err}"
    );
}

// CircleCI: the workflow that holds the job, a renamed job with spaces,
// and matrix legs a later job requires all of.
#[test]
fn circleci_workflow_with_matrix_and_renamed_jobs() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[(
            ".circleci/config.yml",
            "version: 2.1\nworkflows:\n  main:\n    jobs:\n      - setup\n      - yarn_test:\n          requires: [setup]\n          matrix:\n            parameters:\n              channel: [stable, experimental]\n      - publish:\n          name: Publish to Next channel\n          requires: [yarn_test]\n  nightly:\n    jobs: [other]\n",
        )],
    );
    let repo_s = repo.to_str().unwrap();
    let env = |job: &'static str| {
        vec![
            ("CIRCLECI", "true"),
            ("CIRCLE_WORKFLOW_ID", "wf-1"),
            ("CIRCLE_WORKFLOW_WORKSPACE_ID", "ws-77"),
            ("CIRCLE_JOB", job),
            ("CIRCLE_WORKING_DIRECTORY", repo_s),
        ]
    };
    write(&repo, &[("node_modules/a/index.js", "a")]);
    ci(&repo, &store, &env("setup"), &["persist", "node_modules"]);
    for leg in ["stable", "experimental"] {
        write(&repo, &[(&format!("build/{leg}/out.js"), leg)]);
        let job: &'static str = Box::leak(format!("yarn_test-{leg}").into_boxed_str());
        ci(
            &repo,
            &store,
            &env(job),
            &["persist", &format!("build/{leg}")],
        );
    }
    let at = d.path().join("publish");
    let p = ci(
        &repo,
        &store,
        &env("Publish to Next channel"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(p["run"], "cc-ws-77");
    assert_eq!(
        files(&at),
        [
            "build/experimental/out.js",
            "build/stable/out.js",
            "node_modules/a/index.js"
        ]
    );
    // "Rerun workflow from failed": the same workspace, the leg's new try
    // (a new CIRCLE_BUILD_NUM) replaces what its first try persisted.
    let try_env = |job: &'static str, num: &'static str| {
        let mut e = env(job);
        e.push(("CIRCLE_BUILD_NUM", num));
        e
    };
    write(&repo, &[("build/stable/first.js", "1")]);
    ci(
        &repo,
        &store,
        &try_env("yarn_test-stable", "11"),
        &["persist", "build/stable/first.js"],
    );
    write(&repo, &[("build/stable/second.js", "2")]);
    ci(
        &repo,
        &store,
        &try_env("yarn_test-stable", "12"),
        &["persist", "build/stable/second.js"],
    );
    let at = d.path().join("publish-again");
    ci(
        &repo,
        &store,
        &env("Publish to Next channel"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    let got = files(&at);
    assert!(
        got.contains(&"build/stable/second.js".to_string()),
        "{got:?}"
    );
    assert!(
        !got.contains(&"build/stable/first.js".to_string()),
        "{got:?}"
    );
}

// GitHub matrix legs, named by STRATA_LEG (GitHub's environment does not
// name them): each leg's files reach the job that needs them; two legs
// writing one path differently are a conflict naming both.
#[test]
fn github_matrix_legs_are_separate_writers() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[(
            ".github/workflows/ci.yml",
            "jobs:\n  build:\n    strategy: {matrix: {os: [linux, mac]}}\n  ship: {needs: build}\n",
        )],
    );
    let repo_s = repo.to_str().unwrap();
    let env = |run: &'static str, job: &'static str, leg: &'static str| {
        vec![
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", run),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_JOB", job),
            ("STRATA_LEG", leg),
            (
                "GITHUB_WORKFLOW_REF",
                "o/r/.github/workflows/ci.yml@refs/heads/main",
            ),
            ("GITHUB_WORKSPACE", repo_s),
        ]
    };
    for leg in ["linux", "mac"] {
        write(&repo, &[(&format!("out/{leg}/tool"), leg)]);
        ci(
            &repo,
            &store,
            &env("1", "build", leg),
            &["persist", &format!("out/{leg}")],
        );
    }
    let at = d.path().join("ship");
    ci(
        &repo,
        &store,
        &env("1", "ship", ""),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(files(&at), ["out/linux/tool", "out/mac/tool"]);
    for leg in ["linux", "mac"] {
        write(&repo, &[("out/VERSION", leg)]);
        ci(
            &repo,
            &store,
            &env("2", "build", leg),
            &["persist", "out/VERSION"],
        );
    }
    let out = run(
        &repo,
        &store,
        &env("2", "ship", ""),
        &["attach", "--at", "x"],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("out/VERSION") && err.contains("linux") && err.contains("mac"),
        "{err}"
    );
}

// Buildkite: keys, `depends_on` and a `wait` step; paths given as globs.
#[test]
fn buildkite_steps_with_wait_and_depends_on() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[(
            ".buildkite/pipeline.yml",
            "steps:\n  - label: \":hammer: Build\"\n    key: build\n    command: make\n  - wait\n  - key: test\n    command: make test\n  - key: package\n    depends_on: test\n    command: make package\n",
        )],
    );
    let repo_s = repo.to_str().unwrap();
    let env = |step: &'static str| {
        vec![
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_ID", "0190a-b"),
            ("BUILDKITE_STEP_KEY", step),
            ("BUILDKITE_BUILD_CHECKOUT_PATH", repo_s),
        ]
    };
    // Paths as CI configs write them: a glob and an exclusion.
    write(&repo, &[("bin/tool", "elf"), ("bin/tool.tmp", "scratch")]);
    ci(
        &repo,
        &store,
        &env("build"),
        &["persist", "bin/**", "!bin/*.tmp"],
    );
    let out = run(&repo, &store, &env("build"), &["persist", "logs/**/*.txt"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"logs/**/*.txt\" matches nothing"), "{err}");
    ci(
        &repo,
        &store,
        &env("build"),
        &["persist", "--allow-empty", "logs/**/*.txt"],
    );
    write(&repo, &[("results/t.xml", "ok")]);
    ci(&repo, &store, &env("test"), &["persist", "results"]);
    let at = d.path().join("pkg");
    ci(
        &repo,
        &store,
        &env("package"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(files(&at), ["bin/tool", "results/t.xml"]);
    // A retried step (a new BUILDKITE_JOB_ID) replaces its failed try's
    // layers; parallel jobs of one step (BUILDKITE_PARALLEL_JOB) both count.
    let job_env = |step: &'static str, job: &'static str, leg: &'static str| {
        let mut e = env(step);
        e.push(("BUILDKITE_JOB_ID", job));
        e.push(("BUILDKITE_PARALLEL_JOB", leg));
        e
    };
    write(&repo, &[("shards/0/partial.xml", "try 1")]);
    ci(
        &repo,
        &store,
        &job_env("test", "j-1", "0"),
        &["persist", "shards/0/partial.xml"],
    );
    write(
        &repo,
        &[
            ("shards/0/full.xml", "try 2"),
            ("shards/1/full.xml", "leg 1"),
        ],
    );
    ci(
        &repo,
        &store,
        &job_env("test", "j-2", "0"),
        &["persist", "shards/0/full.xml"],
    );
    ci(
        &repo,
        &store,
        &job_env("test", "j-3", "1"),
        &["persist", "shards/1/full.xml"],
    );
    let at = d.path().join("pkg2");
    ci(
        &repo,
        &store,
        &env("package"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    let got = files(&at);
    assert!(
        got.contains(&"shards/0/full.xml".to_string())
            && got.contains(&"shards/1/full.xml".to_string())
            && !got.contains(&"shards/0/partial.xml".to_string()),
        "{got:?}"
    );
}

// Buildkite runs are named by pipeline and build number, as the job's
// OIDC claims name them; a build begun under an earlier strata (its run
// named by the build id) is still found by the jobs of this one.
#[test]
fn buildkite_runs_by_pipeline_and_number_find_an_earlier_builds_run() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[(
            ".buildkite/pipeline.yml",
            "steps:\n  - key: build\n    command: make\n  - key: test\n    depends_on: build\n    command: make test\n",
        )],
    );
    let repo_s = repo.to_str().unwrap();
    let env = |step: &'static str, build: &'static str, named: bool| {
        let mut e = vec![
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_ID", build),
            ("BUILDKITE_STEP_KEY", step),
            ("BUILDKITE_BUILD_CHECKOUT_PATH", repo_s),
        ];
        if named {
            e.push(("BUILDKITE_PIPELINE_SLUG", "web"));
            e.push(("BUILDKITE_BUILD_NUMBER", "1042"));
        }
        e
    };
    write(&repo, &[("bin/tool", "v1")]);
    // An earlier strata's job (no slug or number read): run bk-<build id>.
    let p = ci(
        &repo,
        &store,
        &env("build", "0190a-old", false),
        &["persist", "bin"],
    );
    assert_eq!(p["run"], "bk-0190a-old", "{p}");
    // This version's job of the same build attaches from that run.
    let at = d.path().join("at");
    let a = ci(
        &repo,
        &store,
        &env("test", "0190a-old", true),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(a["run"], "bk-0190a-old", "{a}");
    assert_eq!(files(&at), ["bin/tool"]);
    // A new build is named by pipeline and number.
    let p = ci(
        &repo,
        &store,
        &env("build", "0190a-new", true),
        &["persist", "bin"],
    );
    assert_eq!(p["run"], "bk-web-1042", "{p}");
}

// Buildkite matrix jobs share BUILDKITE_STEP_KEY and have no
// BUILDKITE_PARALLEL_JOB: two matrix jobs persist different binaries, a
// downstream job attaches both, and a retry of one replaces its own failed
// try and not the other leg's layer (issue 27: each later persist used to
// replace the earlier leg's).
#[test]
fn buildkite_matrix_jobs_are_separate_writers() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    // Buildkite's own example: one label for every leg, the values in the
    // command only.
    write(
        &repo,
        &[(
            ".buildkite/pipeline.yml",
            "steps:\n  - label: \"Matrix build\"\n    key: build\n    command: \"make {{matrix}}\"\n    matrix: [linux, darwin]\n  - wait\n  - key: package\n    command: make package\n",
        )],
    );
    let repo_s = repo.to_str().unwrap();
    let env = |step: &'static str, cmd: &'static str, job: &'static str, retry: &'static str| {
        vec![
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_ID", "0190b-m"),
            ("BUILDKITE_STEP_KEY", step),
            (
                "BUILDKITE_LABEL",
                if step == "build" {
                    "Matrix build"
                } else {
                    "package"
                },
            ),
            ("BUILDKITE_COMMAND", cmd),
            ("BUILDKITE_JOB_ID", job),
            ("BUILDKITE_RETRY_COUNT", retry),
            ("BUILDKITE_BUILD_CHECKOUT_PATH", repo_s),
        ]
    };
    write(
        &repo,
        &[("bin/linux/tool", "elf"), ("bin/darwin/tool", "mach-o")],
    );
    ci(
        &repo,
        &store,
        &env("build", "make linux", "j-1", "0"),
        &["persist", "bin/linux"],
    );
    ci(
        &repo,
        &store,
        &env("build", "make darwin", "j-2", "0"),
        &["persist", "bin/darwin"],
    );
    let at = d.path().join("pkg");
    ci(
        &repo,
        &store,
        &env("package", "make package", "j-3", "0"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(files(&at), ["bin/darwin/tool", "bin/linux/tool"]);
    // The linux job is retried (a new job id, BUILDKITE_RETRY_COUNT 1): its
    // new layer replaces its first try's, darwin's stays.
    write(&repo, &[("bin/linux/tool2", "elf 2")]);
    ci(
        &repo,
        &store,
        &env("build", "make linux", "j-4", "1"),
        &["persist", "bin/linux/tool2"],
    );
    let at = d.path().join("pkg2");
    ci(
        &repo,
        &store,
        &env("package", "make package", "j-3", "0"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(files(&at), ["bin/darwin/tool", "bin/linux/tool2"]);
}

// Caches scoped like the CI's own: a pull request restores what its base
// saved, but what it saves is never restored on the default branch.
#[test]
fn github_caches_are_scoped_to_the_ref() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[(".github/workflows/ci.yml", "jobs:\n  build: {}\n")],
    );
    let event = d.path().join("event.json");
    fs::write(&event, r#"{"repository": {"default_branch": "main"}}"#).unwrap();
    let (repo_s, event_s) = (repo.to_str().unwrap(), event.to_str().unwrap());
    let env = |git_ref: &'static str| {
        vec![
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "77"),
            ("GITHUB_JOB", "build"),
            ("GITHUB_REF", git_ref),
            ("GITHUB_EVENT_PATH", event_s),
            ("GITHUB_WORKSPACE", repo_s),
        ]
    };
    let (main, pr) = (env("refs/heads/main"), env("refs/pull/7/merge"));
    write(&repo, &[("node_modules/dep/index.js", "from main")]);
    ci(
        &repo,
        &store,
        &main,
        &["cache", "save", "--key", "deps-1", "node_modules"],
    );
    // The pull request restores main's entry.
    let at = d.path().join("pr");
    let r = ci(
        &repo,
        &store,
        &pr,
        &[
            "cache",
            "restore",
            "--key",
            "deps-",
            "--at",
            at.to_str().unwrap(),
        ],
    );
    assert_eq!(r["restored_key"], "ref:refs/heads/main:deps-1", "{r}");
    // It saves a poisoned entry under a key main would match...
    write(
        &repo,
        &[("node_modules/dep/index.js", "from a pull request")],
    );
    ci(
        &repo,
        &store,
        &pr,
        &["cache", "save", "--key", "deps-2", "node_modules"],
    );
    // ...which main never restores: it still gets its own.
    let at = d.path().join("main");
    ci(
        &repo,
        &store,
        &main,
        &[
            "cache",
            "restore",
            "--key",
            "deps-",
            "--at",
            at.to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::read_to_string(at.join("node_modules/dep/index.js")).unwrap(),
        "from main"
    );
}

// GitHub reusable workflows: inside the called workflow GITHUB_JOB is the
// called job's id and GITHUB_WORKFLOW_REF the caller's file. A called job
// that only one caller has is found as `<caller> / <id>`; where two
// callers call the same workflow the job says which with STRATA_JOB, also
// when it is the first job of the run.
#[test]
fn github_reusable_workflow_jobs_and_the_override_on_run_creation() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[
            (
                ".github/workflows/ci.yml",
                "on: push\njobs:\n  linux:\n    uses: ./.github/workflows/build.yml\n  mac:\n    uses: ./.github/workflows/build.yml\n  ship:\n    needs: [linux, mac]\n",
            ),
            (
                ".github/workflows/build.yml",
                "on: workflow_call\njobs:\n  compile: {}\n",
            ),
        ],
    );
    let repo_s = repo.to_str().unwrap();
    let env = |job: &'static str, over: Option<&'static str>| {
        let mut e = vec![
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "31"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_JOB", job),
            (
                "GITHUB_WORKFLOW_REF",
                "o/r/.github/workflows/ci.yml@refs/heads/main",
            ),
            ("GITHUB_WORKSPACE", repo_s),
        ];
        if let Some(o) = over {
            e.push(("STRATA_JOB", o));
        }
        e
    };
    // Two callers: the job cannot tell which it is, and says so.
    let out = run(&repo, &store, &env("compile", None), &["persist", "."]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"linux / compile\", \"mac / compile\"") && err.contains("STRATA_JOB"),
        "{err}"
    );
    // STRATA_JOB, given as the run shows the job, creates the run.
    for (leg, file) in [
        ("linux / compile", "out/linux"),
        ("mac / compile", "out/mac"),
    ] {
        write(&repo, &[(file, leg)]);
        let leak: &'static str = Box::leak(leg.to_string().into_boxed_str());
        ci(
            &repo,
            &store,
            &env("compile", Some(leak)),
            &["persist", file],
        );
    }
    let at = d.path().join("ship");
    ci(
        &repo,
        &store,
        &env("ship", None),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(files(&at), ["out/linux", "out/mac"]);
}

// STRATA_CONFIG: a CircleCI continuation's graph lives in another file.
#[test]
fn circleci_continuation_config_from_strata_config() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[
            (
                ".circleci/config.yml",
                "version: 2.1\nsetup: true\nworkflows:\n  setup:\n    jobs: [generate]\n",
            ),
            (
                ".circleci/continue.yml",
                "version: 2.1\nworkflows:\n  main:\n    jobs:\n      - build\n      - test: {requires: [build]}\n",
            ),
        ],
    );
    let repo_s = repo.to_str().unwrap();
    let env = |job: &'static str| {
        vec![
            ("CIRCLECI", "true"),
            ("CIRCLE_WORKFLOW_ID", "wf-9"),
            ("CIRCLE_JOB", job),
            ("CIRCLE_WORKING_DIRECTORY", repo_s),
            ("STRATA_CONFIG", ".circleci/continue.yml"),
        ]
    };
    write(&repo, &[("dist/app", "1")]);
    ci(&repo, &store, &env("build"), &["persist", "dist"]);
    let at = d.path().join("t");
    ci(
        &repo,
        &store,
        &env("test"),
        &["attach", "--at", at.to_str().unwrap()],
    );
    assert_eq!(files(&at), ["dist/app"]);
    let shown = ci(&repo, &store, &env("test"), &["ci"]);
    assert_eq!(shown["config_from"], "STRATA_CONFIG", "{shown}");
}

// `strata run create --graph` reads a config with the CI path's reader:
// CircleCI matrix legs, names with spaces.
#[test]
fn run_create_graph_uses_the_ci_readers() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    write(
        d.path(),
        &[(
            ".circleci/config.yml",
            "version: 2.1\nworkflows:\n  w:\n    jobs:\n      - build:\n          matrix: {parameters: {os: [linux, mac]}}\n      - publish:\n          name: Publish to Next channel\n          requires: [build]\n",
        )],
    );
    let r = ci(
        d.path(),
        &store,
        &[],
        &[
            "run",
            "create",
            "--run",
            "r1",
            "--graph",
            ".circleci/config.yml",
        ],
    );
    let jobs: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        jobs,
        ["build-linux", "build-mac", "Publish_20to_20Next_20channel"]
    );
}

/// Saves `node_modules` holding `content` as cache `key` in the job `env`
/// describes, run in `repo`.
fn save_cache(repo: &Path, store: &Path, env: &[(&str, &str)], key: &str, content: &str) {
    write(repo, &[("node_modules/dep/index.js", content)]);
    ci(
        repo,
        store,
        env,
        &["cache", "save", "--key", key, "node_modules"],
    );
}

/// What a restore of `keys` in the job `env` describes writes to
/// `node_modules/dep/index.js` (`None`: nothing matched).
fn restored(repo: &Path, store: &Path, env: &[(&str, &str)], keys: &[&str]) -> Option<String> {
    let at = tempfile::tempdir_in(repo.parent().unwrap()).unwrap();
    let mut args = vec!["cache", "restore", "--at", at.path().to_str().unwrap()];
    for k in keys {
        args.extend(["--key", k]);
    }
    let r = ci(repo, store, env, &args);
    r["restored_key"].as_str()?;
    Some(fs::read_to_string(at.path().join("node_modules/dep/index.js")).unwrap())
}

// GitLab: a merge request from a fork whose branch is also named `main`,
// a tag `main` and an unprotected `main` each save a poisoned entry under
// a key the protected default branch matches by prefix; main restores its
// own (issue 26: they all saved into `ref:main:`).
#[test]
fn gitlab_forks_tags_and_unprotected_refs_cannot_poison_protected_main() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(&repo, &[(".gitlab-ci.yml", "deps:\n  script: [make]\n")]);
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "5"),
            ("CI_JOB_NAME", "deps"),
            ("CI_COMMIT_REF_NAME", "main"),
            ("CI_DEFAULT_BRANCH", "main"),
        ];
        env.extend_from_slice(extra);
        env
    };
    let main = base(&[
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_PROTECTED", "true"),
    ]);
    save_cache(&repo, &store, &main, "deps-1", "from main");
    let fork = base(&[
        ("CI_MERGE_REQUEST_IID", "7"),
        ("CI_MERGE_REQUEST_PROJECT_ID", "1"),
        ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", "99"),
        ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "main"),
        ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
        ("CI_COMMIT_REF_PROTECTED", "false"),
    ]);
    save_cache(&repo, &store, &fork, "deps-2", "from a fork");
    let tag = base(&[
        ("CI_COMMIT_TAG", "main"),
        ("CI_COMMIT_REF_PROTECTED", "true"),
    ]);
    save_cache(&repo, &store, &tag, "deps-3", "from a tag");
    let unprotected = base(&[
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_PROTECTED", "false"),
    ]);
    save_cache(&repo, &store, &unprotected, "deps-4", "unprotected");
    assert_eq!(
        restored(&repo, &store, &main, &["deps-"]).as_deref(),
        Some("from main")
    );
    // Each reads its own; the fork's merge request no protected cache.
    assert_eq!(
        restored(&repo, &store, &fork, &["deps-"]).as_deref(),
        Some("from a fork")
    );
    assert_eq!(
        restored(&repo, &store, &tag, &["deps-"]).as_deref(),
        Some("from a tag")
    );
    assert_eq!(
        restored(&repo, &store, &tag, &["deps-1"]).as_deref(),
        Some("from main")
    );
    assert_eq!(restored(&repo, &store, &fork, &["deps-1"]), None);
}

// Buildkite (no protected refs) and CircleCI: a fork's pull request from a
// branch named `main`, and a tag `main`, save into scopes of their own; a
// CircleCI tag build (no CIRCLE_BRANCH) is scoped, not saved unscoped where
// every ref's `--unscoped` restore would read it.
#[test]
fn buildkite_and_circleci_tags_and_forks_get_scopes_of_their_own() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[
            (
                ".buildkite/pipeline.yml",
                "steps:\n  - key: deps\n    command: make\n",
            ),
            (
                ".circleci/config.yml",
                "workflows:\n  w:\n    jobs: [deps]\n",
            ),
        ],
    );
    let bk = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_ID", "b-1"),
            ("BUILDKITE_STEP_KEY", "deps"),
            ("BUILDKITE_BRANCH", "main"),
            ("BUILDKITE_PIPELINE_DEFAULT_BRANCH", "main"),
            ("BUILDKITE_REPO", "git@github.com:org/app.git"),
        ];
        env.extend_from_slice(extra);
        env
    };
    let main = bk(&[("BUILDKITE_PULL_REQUEST", "false")]);
    save_cache(&repo, &store, &main, "deps-1", "from main");
    let fork = bk(&[
        ("BUILDKITE_PULL_REQUEST", "7"),
        ("BUILDKITE_PULL_REQUEST_BASE_BRANCH", "main"),
        (
            "BUILDKITE_PULL_REQUEST_REPO",
            "git://github.com/fork/app.git",
        ),
    ]);
    save_cache(&repo, &store, &fork, "deps-2", "from a fork");
    save_cache(
        &repo,
        &store,
        &bk(&[("BUILDKITE_TAG", "main")]),
        "deps-3",
        "from a tag",
    );
    assert_eq!(
        restored(&repo, &store, &main, &["deps-"]).as_deref(),
        Some("from main")
    );
    // The fork's pull request still reads its base branch's.
    assert_eq!(
        restored(&repo, &store, &fork, &["deps-1"]).as_deref(),
        Some("from main")
    );

    let cc = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![
            ("CIRCLECI", "true"),
            ("CIRCLE_WORKFLOW_ID", "w-1"),
            ("CIRCLE_JOB", "deps"),
        ];
        env.extend_from_slice(extra);
        env
    };
    let branch = cc(&[("CIRCLE_BRANCH", "pull/7")]);
    save_cache(&repo, &store, &branch, "cc-1", "from branch pull/7");
    let pr = cc(&[("CIRCLE_BRANCH", "pull/7"), ("CIRCLE_PR_NUMBER", "7")]);
    save_cache(&repo, &store, &pr, "cc-2", "from a fork");
    let tag = cc(&[("CIRCLE_TAG", "v1")]);
    save_cache(&repo, &store, &tag, "cc-3", "from a tag");
    assert_eq!(
        restored(&repo, &store, &branch, &["cc-"]).as_deref(),
        Some("from branch pull/7")
    );
    assert_eq!(
        restored(&repo, &store, &tag, &["cc-"]).as_deref(),
        Some("from a tag")
    );
    let unscoped = ci(
        &repo,
        &store,
        &branch,
        &["cache", "restore", "--unscoped", "--key", "cc-"],
    );
    assert!(unscoped["restored_key"].is_null(), "{unscoped}");
}

// A cache key of 150 bytes (with its scope, 170) is saved on a directory
// store and restored exactly and by prefix (it failed with "File name too
// long" after uploading the packs); a restore whose listing fails is an
// error, never "no cache matched" with exit 0.
#[test]
fn long_cache_keys_save_and_restore_and_a_failed_listing_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let (repo, store) = (d.path().join("repo"), d.path().join("store"));
    write(
        &repo,
        &[(".github/workflows/ci.yml", "jobs:\n  build: {}\n")],
    );
    let env = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_RUN_ID", "9"),
        ("GITHUB_JOB", "build"),
        ("GITHUB_REF", "refs/heads/main"),
    ];
    let long = format!("deps-linux-x64-{}", "0123456789abcdef".repeat(8));
    let longer = format!("{long}-node-22.11.0-with-a-tail");
    save_cache(&repo, &store, &env, &long, "long");
    save_cache(&repo, &store, &env, &longer, "longer");
    assert_eq!(
        restored(&repo, &store, &env, &[&long]).as_deref(),
        Some("long")
    );
    assert_eq!(
        restored(&repo, &store, &env, &[&longer]).as_deref(),
        Some("longer")
    );
    assert_eq!(
        restored(&repo, &store, &env, &["deps-linux"]).as_deref(),
        Some("longer")
    );
    assert_eq!(
        restored(&repo, &store, &env, &[&long[..130]]).as_deref(),
        Some("longer")
    );
    // The store's caches/ is not a directory: an error, exit 1.
    fs::rename(store.join("caches"), d.path().join("moved")).unwrap();
    fs::write(store.join("caches"), "not a directory").unwrap();
    let out = run(&repo, &store, &env, &["cache", "restore", "--key", "deps-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("caches"), "{stderr}");
}
