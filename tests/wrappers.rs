//! The CI wrappers in `wrappers/` (docs/ci.md, "Wrappers"), each run with
//! the environment its CI would set and the strata binary under test: the
//! GitHub Action's steps under node, the Buildkite plugin's hooks under
//! bash, the CircleCI orb's and the GitLab component's commands under sh.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;
use support::{file_names as files, write_files as write};

fn wrappers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wrappers")
}

/// PATH with the strata under test first.
fn path_with_strata() -> String {
    let bin = Path::new(support::strata_bin()).parent().unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `program args` in `dir` with only `env` (and PATH): it must succeed.
fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path_with_strata())
        // A home of its own, as a runner's is, outside the checkout.
        .env("HOME", dir.with_extension("home"))
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} (the wrapper's runtime) cannot run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// The GitHub Action: post persists `path` after the build job; main
// attaches in the test job; with `key`, a cache is saved and restored.
#[test]
fn github_action_steps() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    write(
        &repo,
        &[(
            ".github/workflows/ci.yml",
            "jobs:\n  build: {}\n  test: {needs: build}\n",
        )],
    );
    write(&repo, &[("dist/app.js", "app"), ("dist/app.js.map", "map")]);
    let store = d.path().join("store");
    let (repo_s, store_s) = (repo.to_str().unwrap(), store.to_str().unwrap());
    let action = wrappers().join("github");
    let step = |script: &str, job: &str, inputs: &[(&str, &str)]| {
        let mut env = vec![
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_JOB", job),
            ("GITHUB_REF", "refs/heads/main"),
            (
                "GITHUB_WORKFLOW_REF",
                "o/r/.github/workflows/ci.yml@refs/heads/main",
            ),
            ("GITHUB_WORKSPACE", repo_s),
            ("INPUT_STORE", store_s),
        ];
        env.extend_from_slice(inputs);
        let script = action.join(script);
        run(&repo, "node", &[script.to_str().unwrap()], &env);
    };
    step(
        "post.js",
        "build",
        &[("INPUT_PATH", "dist/**\n!dist/*.map\n")],
    );
    let at = d.path().join("at");
    step("main.js", "test", &[("INPUT_ATTACH", at.to_str().unwrap())]);
    assert_eq!(files(&at), ["dist/app.js"]);
    // A dependency cache, keyed like actions/cache.
    write(&repo, &[("node_modules/x/index.js", "x")]);
    step(
        "post.js",
        "build",
        &[("INPUT_KEY", "npm-abc"), ("INPUT_PATH", "node_modules")],
    );
    fs::remove_dir_all(repo.join("node_modules")).unwrap();
    step(
        "main.js",
        "test",
        &[("INPUT_KEY", "npm-zzz"), ("INPUT_RESTORE-KEYS", "npm-\n")],
    );
    assert!(repo.join("node_modules/x/index.js").exists());
}

// The Buildkite plugin: post-command persists the list after a successful
// command (and nothing after a failed one); pre-command attaches.
#[test]
fn buildkite_plugin_hooks() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    write(
        &repo,
        &[(
            ".buildkite/pipeline.yml",
            "steps:\n  - key: build\n  - wait\n  - key: test\n",
        )],
    );
    write(
        &repo,
        &[("bin/tool", "elf"), ("docs/a.md", "a"), ("junk", "j")],
    );
    let store = d.path().join("store");
    let (repo_s, store_s) = (repo.to_str().unwrap(), store.to_str().unwrap());
    let hooks = wrappers().join("buildkite/hooks");
    let hook = |name: &str, step: &str, more: &[(&str, &str)]| {
        let mut env = vec![
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_ID", "b-1"),
            ("BUILDKITE_STEP_KEY", step),
            ("BUILDKITE_JOB_ID", step),
            ("BUILDKITE_BUILD_CHECKOUT_PATH", repo_s),
            ("BUILDKITE_PLUGIN_STRATA_STORE", store_s),
        ];
        env.extend_from_slice(more);
        run(&repo, "bash", &[hooks.join(name).to_str().unwrap()], &env);
    };
    // A failed command persists nothing...
    hook(
        "post-command",
        "build",
        &[
            ("BUILDKITE_COMMAND_EXIT_STATUS", "1"),
            ("BUILDKITE_PLUGIN_STRATA_PERSIST_0", "junk"),
        ],
    );
    // ...a successful one its list.
    hook(
        "post-command",
        "build",
        &[
            ("BUILDKITE_COMMAND_EXIT_STATUS", "0"),
            ("BUILDKITE_PLUGIN_STRATA_PERSIST_0", "bin"),
            ("BUILDKITE_PLUGIN_STRATA_PERSIST_1", "docs/*.md"),
        ],
    );
    let at = d.path().join("at");
    hook(
        "pre-command",
        "test",
        &[("BUILDKITE_PLUGIN_STRATA_ATTACH", at.to_str().unwrap())],
    );
    assert_eq!(files(&at), ["bin/tool", "docs/a.md"]);
}

/// The `run: command:` of an orb command, its parameters filled in.
fn orb_command(orb: &Value, command: &str, params: &[(&str, &str)]) -> String {
    let mut text = orb["commands"][command]["steps"][0]["run"]["command"]
        .as_str()
        .unwrap()
        .to_string();
    for (k, v) in params {
        text = text.replace(&format!("<< parameters.{k} >>"), v);
    }
    assert!(!text.contains("<<"), "an unfilled parameter: {text}");
    text
}

// The CircleCI orb's persist and attach commands, as CircleCI would run
// them in two jobs of one workflow.
#[test]
fn circleci_orb_commands() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    write(&repo, &[(".circleci/config.yml", "version: 2.1\nworkflows:\n  main:\n    jobs:\n      - build\n      - test: {requires: [build]}\n")]);
    write(&repo, &[("sandbox/app/x", "x")]);
    let store = d.path().join("store");
    let (repo_s, store_s) = (repo.to_str().unwrap(), store.to_str().unwrap());
    let orb: Value =
        serde_yaml_ng::from_str(&fs::read_to_string(wrappers().join("circleci/orb.yml")).unwrap())
            .unwrap();
    let env = |job: &'static str| {
        vec![
            ("CIRCLECI", "true"),
            ("CIRCLE_WORKFLOW_WORKSPACE_ID", "ws-9"),
            ("CIRCLE_JOB", job),
            ("CIRCLE_BUILD_NUM", job),
            ("CIRCLE_WORKING_DIRECTORY", repo_s),
        ]
    };
    let persist = orb_command(
        &orb,
        "persist",
        &[("store", store_s), ("paths", "'sandbox/**'")],
    );
    run(&repo, "sh", &["-c", &persist], &env("build"));
    let at = d.path().join("at");
    let attach = orb_command(
        &orb,
        "attach",
        &[("store", store_s), ("at", at.to_str().unwrap())],
    );
    run(&repo, "sh", &["-c", &attach], &env("test"));
    assert_eq!(files(&at), ["sandbox/app/x"]);
}

// The GitLab component's `.strata` job template: after_script persists
// only when the job succeeded; before_script attaches.
#[test]
fn gitlab_component_template() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    write(
        &repo,
        &[(
            ".gitlab-ci.yml",
            "stages: [build, test]\nbuild:\n  stage: build\ntest:\n  stage: test\n",
        )],
    );
    write(&repo, &[("public/app.css", "c")]);
    let store = d.path().join("store");
    let (repo_s, store_s) = (repo.to_str().unwrap(), store.to_str().unwrap());
    let text = fs::read_to_string(wrappers().join("gitlab/templates/strata.yml")).unwrap();
    let (spec, body) = text
        .split_once("\n---\n")
        .expect("a spec header and a body");
    let spec: Value = serde_yaml_ng::from_str(spec).unwrap();
    assert!(spec["spec"]["inputs"]["store"].is_mapping());
    let lines = |section: &str, persist: &str| -> Vec<String> {
        let filled = body
            .replace("$[[ inputs.store ]]", store_s)
            .replace("$[[ inputs.persist ]]", persist);
        let doc: Value = serde_yaml_ng::from_str(&filled).unwrap();
        doc[".strata"][section]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    };
    let env = |job: &'static str, status: &'static str| {
        vec![
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "31"),
            ("CI_JOB_NAME", job),
            ("CI_JOB_ID", job),
            ("CI_JOB_STATUS", status),
            ("CI_PROJECT_DIR", repo_s),
        ]
    };
    for line in lines("after_script", "public") {
        run(&repo, "sh", &["-c", &line], &env("build", "success"));
    }
    let at = d.path().join("at");
    fs::create_dir_all(&at).unwrap();
    for line in lines("before_script", "") {
        run(&at, "sh", &["-c", &line], &env("test", "running"));
    }
    assert_eq!(files(&at), ["public/app.css"]);
}
