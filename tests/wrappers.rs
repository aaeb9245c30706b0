//! The CI wrappers in `wrappers/` (docs/ci.md, "Wrappers"), each run with
//! the environment its CI would set and the strata binary under test: the
//! GitHub Action's steps under node, the Buildkite plugin's hooks under
//! bash, the CircleCI orb's and the GitLab component's commands under sh.

use crate::support;

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

/// Runs `program args` in `dir` with only `env` and PATH (holding the
/// strata under test when `strata` is true).
fn outcome(
    dir: &Path,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    strata: bool,
) -> std::process::Output {
    let path = match strata {
        true => path_with_strata(),
        // The machine's PATH without any directory holding a strata.
        false => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .filter(|d| !d.join("strata").exists())
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    };
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        // A home of its own, as a runner's is, outside the checkout.
        .env("HOME", dir.with_extension("home"))
        // The strata under test (or none), not an installed release:
        // `installers_run_only_the_pinned_release` turns installing on.
        .env("STRATA_INSTALL", "false")
        .env("INPUT_INSTALL", "false")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} (the wrapper's runtime) cannot run: {e}"))
}

/// Runs `program args` in `dir` with only `env` (and PATH): it must succeed.
fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) {
    let out = outcome(dir, program, args, env, true);
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
    write(
        &repo,
        &[
            ("dist/app.js", "app"),
            ("dist/app.js.map", "map"),
            ("dist/lib/x.js", "x"),
        ],
    );
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
    assert_eq!(files(&at), ["dist/app.js", "dist/lib/x.js"]);
    // `only`: one path or glob a line.
    let part = d.path().join("part");
    let only = [
        ("INPUT_ATTACH", part.to_str().unwrap()),
        (
            "INPUT_ONLY",
            "dist/lib
",
        ),
    ];
    step("main.js", "test", &only);
    assert_eq!(files(&part), ["dist/lib/x.js"]);
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
    // `only`, a list.
    let part = d.path().join("part");
    hook(
        "pre-command",
        "test",
        &[
            ("BUILDKITE_PLUGIN_STRATA_ATTACH", part.to_str().unwrap()),
            ("BUILDKITE_PLUGIN_STRATA_ONLY_0", "docs/*.md"),
        ],
    );
    assert_eq!(files(&part), ["docs/a.md"]);
}

/// The `run:` step of an orb command, its parameters filled in as
/// CircleCI fills them: its command, and its `environment`.
fn orb_step(
    orb: &Value,
    command: &str,
    params: &[(&str, &str)],
) -> (String, Vec<(String, String)>) {
    let fill = |text: &str| {
        let mut text = text.to_string();
        for (k, v) in params {
            text = text.replace(&format!("<< parameters.{k} >>"), v);
        }
        assert!(!text.contains("<<"), "an unfilled parameter: {text}");
        text
    };
    let step = &orb["commands"][command]["steps"][0]["run"];
    let env = step["environment"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), fill(v.as_str().unwrap())))
        .collect();
    (fill(step["command"].as_str().unwrap()), env)
}

/// Runs an orb step in `dir` with the CI's `env` beside its own.
fn orb_run(
    dir: &Path,
    (command, own): &(String, Vec<(String, String)>),
    env: &[(&str, &str)],
    strata: bool,
) -> std::process::Output {
    let mut all: Vec<(&str, &str)> = env.to_vec();
    all.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    outcome(dir, "sh", &["-c", command], &all, strata)
}

// The CircleCI orb's persist and attach commands, as CircleCI would run
// them in two jobs of one workflow.
#[test]
fn circleci_orb_commands() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    write(&repo, &[(".circleci/config.yml", "version: 2.1\nworkflows:\n  main:\n    jobs:\n      - build\n      - test: {requires: [build]}\n")]);
    write(&repo, &[("sandbox/app/x", "x"), ("sandbox/other/y", "y")]);
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
    let persist = orb_step(
        &orb,
        "persist",
        &[("store", store_s), ("paths", "sandbox/**")],
    );
    assert!(orb_run(&repo, &persist, &env("build"), true)
        .status
        .success());
    let at = d.path().join("at");
    let attach = orb_step(
        &orb,
        "attach",
        &[
            ("store", store_s),
            ("at", at.to_str().unwrap()),
            ("only", ""),
        ],
    );
    assert!(orb_run(&repo, &attach, &env("test"), true).status.success());
    assert_eq!(files(&at), ["sandbox/app/x", "sandbox/other/y"]);
    // `only`, space-separated, a glob as written.
    let part = d.path().join("part");
    let attach = orb_step(
        &orb,
        "attach",
        &[
            ("store", store_s),
            ("at", part.to_str().unwrap()),
            ("only", "sandbox/a* sandbox/none/.."),
        ],
    );
    let out = orb_run(&repo, &attach, &env("test"), true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not climb out"), "{err}");
    let attach = orb_step(
        &orb,
        "attach",
        &[
            ("store", store_s),
            ("at", part.to_str().unwrap()),
            ("only", "sandbox/a*"),
        ],
    );
    assert!(orb_run(&repo, &attach, &env("test"), true).status.success());
    assert_eq!(files(&part), ["sandbox/app/x"]);
}

// The GitLab component: `.strata-persist`'s script persists as part of
// the job's script; `.strata`'s before_script attaches.
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
    write(&repo, &[("public/app.css", "c"), ("public/app.js", "j")]);
    let store = d.path().join("store");
    let (repo_s, store_s) = (repo.to_str().unwrap(), store.to_str().unwrap());
    let text = fs::read_to_string(wrappers().join("gitlab/templates/strata.yml")).unwrap();
    let (spec, body) = text
        .split_once("\n---\n")
        .expect("a spec header and a body");
    let spec: Value = serde_yaml_ng::from_str(spec).unwrap();
    assert!(spec["spec"]["inputs"]["store"].is_mapping());
    // The job's OIDC token, for a server with --oidc (docs/ci.md, "No
    // secrets"), under the name strata reads by default.
    let doc: Value = serde_yaml_ng::from_str(body).unwrap();
    assert_eq!(
        doc[".strata"]["id_tokens"]["STRATA_ID_TOKEN"]["aud"],
        "$[[ inputs.audience ]]"
    );
    assert!(spec["spec"]["inputs"]["audience"].is_mapping());
    let mut component = Component {
        body: body.to_string(),
        store: store_s.to_string(),
        only: String::new(),
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
    assert!(component
        .run(&repo, "persist", "public", &env("build", "running"), true)
        .status
        .success());
    let at = d.path().join("at");
    fs::create_dir_all(&at).unwrap();
    assert!(component
        .run(&at, "attach", "", &env("test", "running"), true)
        .status
        .success());
    assert_eq!(files(&at), ["public/app.css", "public/app.js"]);
    // `only`, space-separated.
    component.only = "public/*.css".into();
    let part = d.path().join("part");
    fs::create_dir_all(&part).unwrap();
    assert!(component
        .run(&part, "attach", "", &env("test", "running"), true)
        .status
        .success());
    assert_eq!(files(&part), ["public/app.css"]);
}

/// The GitLab component's body, for one store.
struct Component {
    body: String,
    store: String,
    /// The `only` input.
    only: String,
}

impl Component {
    /// Runs its `attach` (`.strata`'s before_script) or `persist`
    /// (`.strata-persist`'s script) lines under sh, with `.strata`'s
    /// variables, its inputs filled in as GitLab fills them; stops at the
    /// first line that fails, as a job does.
    fn run(
        &self,
        dir: &Path,
        what: &str,
        persist: &str,
        ci: &[(&str, &str)],
        strata: bool,
    ) -> std::process::Output {
        let filled = self
            .body
            .replace("$[[ inputs.store ]]", &self.store)
            .replace("$[[ inputs.persist ]]", persist)
            .replace("$[[ inputs.only ]]", &self.only);
        let doc: Value = serde_yaml_ng::from_str(&filled).unwrap();
        let mut env: Vec<(String, String)> = ci
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in doc[".strata"]["variables"].as_mapping().unwrap() {
            env.push((k.as_str().unwrap().into(), v.as_str().unwrap().into()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let lines = match what {
            "attach" => &doc[".strata"]["before_script"],
            _ => &doc[".strata-persist"]["script"],
        };
        // One shell for all of them, stopping at the first that fails, as
        // GitLab runs a job's before_script and script.
        let script: Vec<&str> = lines
            .as_sequence()
            .expect("the component's lines")
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        outcome(dir, "sh", &["-ec", &script.join("\n")], &env, strata)
    }
}

/// What each wrapper does with an input, persisting in job `build` and
/// attaching in job `test` of one run (its CI's environment): the outcome
/// of `persist` of `paths` (one per line, or as the wrapper separates
/// them), or of `attach` into `at`.
enum Act<'a> {
    Persist(&'a [&'a str]),
    Attach(&'a Path),
}

/// Runs `act` through the wrapper named `wrapper`, in `repo`, with `store`
/// (and strata on the PATH when `strata`).
fn through(
    wrapper: &str,
    repo: &Path,
    store: &str,
    act: Act,
    strata: bool,
) -> std::process::Output {
    through_with(wrapper, repo, store, act, strata, &[])
}

/// `through`, with `more` in the environment.
fn through_with(
    wrapper: &str,
    repo: &Path,
    store: &str,
    act: Act,
    strata: bool,
    more: &[(&str, &str)],
) -> std::process::Output {
    let repo_s = repo.to_str().unwrap();
    let job = match act {
        Act::Persist(_) => "build",
        Act::Attach(_) => "test",
    };
    match wrapper {
        "github" => {
            let script = wrappers().join("github").join(match act {
                Act::Persist(_) => "post.js",
                Act::Attach(_) => "main.js",
            });
            let (input, value) = match act {
                Act::Persist(paths) => ("INPUT_PATH", paths.join("\n")),
                Act::Attach(at) => ("INPUT_ATTACH", at.to_str().unwrap().to_string()),
            };
            let env = [
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_RUN_ID", "42"),
                ("GITHUB_RUN_ATTEMPT", "1"),
                ("GITHUB_JOB", job),
                (
                    "GITHUB_WORKFLOW_REF",
                    "o/r/.github/workflows/ci.yml@refs/heads/main",
                ),
                ("GITHUB_WORKSPACE", repo_s),
                ("INPUT_STORE", store),
                (input, value.as_str()),
            ];
            let env = [&env[..], more].concat();
            outcome(repo, "node", &[script.to_str().unwrap()], &env, strata)
        }
        "buildkite" => {
            let hook = wrappers().join("buildkite/hooks").join(match act {
                Act::Persist(_) => "post-command",
                Act::Attach(_) => "pre-command",
            });
            let mut env: Vec<(String, String)> = [
                ("BUILDKITE", "true"),
                ("BUILDKITE_BUILD_ID", "b-1"),
                ("BUILDKITE_STEP_KEY", job),
                ("BUILDKITE_JOB_ID", job),
                ("BUILDKITE_BUILD_CHECKOUT_PATH", repo_s),
                ("BUILDKITE_PLUGIN_STRATA_STORE", store),
                ("BUILDKITE_COMMAND_EXIT_STATUS", "0"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            match act {
                Act::Persist(paths) => env.extend(paths.iter().enumerate().map(|(i, p)| {
                    (
                        format!("BUILDKITE_PLUGIN_STRATA_PERSIST_{i}"),
                        p.to_string(),
                    )
                })),
                Act::Attach(at) => env.push((
                    "BUILDKITE_PLUGIN_STRATA_ATTACH".into(),
                    at.to_str().unwrap().into(),
                )),
            }
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let env = [&env[..], more].concat();
            outcome(repo, "bash", &[hook.to_str().unwrap()], &env, strata)
        }
        "circleci" => {
            let orb: Value = serde_yaml_ng::from_str(
                &fs::read_to_string(wrappers().join("circleci/orb.yml")).unwrap(),
            )
            .unwrap();
            let env = [
                ("CIRCLECI", "true"),
                ("CIRCLE_WORKFLOW_WORKSPACE_ID", "ws-9"),
                ("CIRCLE_JOB", job),
                ("CIRCLE_BUILD_NUM", job),
                ("CIRCLE_WORKING_DIRECTORY", repo_s),
            ];
            let step = match act {
                Act::Persist(paths) => orb_step(
                    &orb,
                    "persist",
                    &[("store", store), ("paths", &paths.join(" "))],
                ),
                Act::Attach(at) => orb_step(
                    &orb,
                    "attach",
                    &[("store", store), ("at", at.to_str().unwrap()), ("only", "")],
                ),
            };
            orb_run(repo, &step, &[&env[..], more].concat(), strata)
        }
        _ => {
            let text = fs::read_to_string(wrappers().join("gitlab/templates/strata.yml")).unwrap();
            let (_, body) = text.split_once("\n---\n").unwrap();
            let component = Component {
                body: body.to_string(),
                store: store.to_string(),
                only: String::new(),
            };
            let env = [
                ("GITLAB_CI", "true"),
                ("CI_PIPELINE_ID", "31"),
                ("CI_JOB_NAME", job),
                ("CI_JOB_ID", job),
                ("CI_PROJECT_DIR", repo_s),
            ];
            let env = [&env[..], more].concat();
            match act {
                Act::Persist(paths) => {
                    component.run(repo, "persist", &paths.join(" "), &env, strata)
                }
                Act::Attach(at) => {
                    fs::create_dir_all(at).unwrap();
                    component.run(at, "attach", "", &env, strata)
                }
            }
        }
    }
}

// Every wrapper under its CI's environment: a glob reaches strata as
// written (`dist/**/*.js` persisted 1 of 3 files through the orb and the
// component, whose sh expanded it), `$(...)` in an input is a path, never
// run, a path `--help` is a path (no wrapper passed `--`), and the step
// fails when persist fails, when attach fails, and when strata is missing
// (the GitLab component persisted in after_script, whose failure GitLab
// ignores).
#[test]
fn every_wrapper_passes_inputs_as_written_and_fails_when_strata_fails() {
    for wrapper in ["github", "buildkite", "circleci", "gitlab"] {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        write(
            &repo,
            &[
                (".github/workflows/ci.yml", "jobs:\n  build: {}\n  test: {needs: build}\n"),
                (".buildkite/pipeline.yml", "steps:\n  - key: build\n  - wait\n  - key: test\n"),
                (".circleci/config.yml", "version: 2.1\nworkflows:\n  main:\n    jobs:\n      - build\n      - test: {requires: [build]}\n"),
                (".gitlab-ci.yml", "stages: [build, test]\nbuild:\n  stage: build\ntest:\n  stage: test\n"),
                ("dist/a.js", "a"),
                ("dist/sub/b.js", "b"),
                ("dist/sub/deep/c.js", "c"),
                ("dist/sub/b.css", "css"),
            ],
        );
        let store = d.path().join("store");
        let store_s = store.to_str().unwrap();
        let fails = |out: std::process::Output, what: &str| {
            assert!(
                !out.status.success(),
                "{wrapper}: {what} did not fail the step"
            );
        };
        // Persist fails: a path that is not there, `--help`, `$(...)`.
        fails(
            through(wrapper, &repo, store_s, Act::Persist(&["missing"]), true),
            "a missing path",
        );
        fails(
            through(wrapper, &repo, store_s, Act::Persist(&["--help"]), true),
            "the path --help",
        );
        fails(
            through(
                wrapper,
                &repo,
                store_s,
                Act::Persist(&["$(touch pwned)"]),
                true,
            ),
            "$(touch pwned)",
        );
        assert!(!repo.join("pwned").exists(), "{wrapper} ran $(touch pwned)");
        // strata missing.
        fails(
            through(wrapper, &repo, store_s, Act::Persist(&["dist"]), false),
            "a missing strata",
        );
        // The glob reaches strata whole.
        let out = through(
            wrapper,
            &repo,
            store_s,
            Act::Persist(&["dist/**/*.js"]),
            true,
        );
        assert!(
            out.status.success(),
            "{wrapper}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let at = d.path().join("at");
        let out = through(wrapper, &repo, store_s, Act::Attach(&at), true);
        assert!(
            out.status.success(),
            "{wrapper}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            files(&at),
            ["dist/a.js", "dist/sub/b.js", "dist/sub/deep/c.js"],
            "{wrapper}"
        );
        // Attach fails: a store that is a file; strata missing.
        let not_a_store = d.path().join("file");
        fs::write(&not_a_store, "x").unwrap();
        let at2 = d.path().join("at2");
        fails(
            through(
                wrapper,
                &repo,
                not_a_store.to_str().unwrap(),
                Act::Attach(&at2),
                true,
            ),
            "a bad store",
        );
        fails(
            through(wrapper, &repo, store_s, Act::Attach(&at2), false),
            "a missing strata",
        );
    }
}

/// Serves the files of `root` over HTTP on loopback (GET only, one
/// request per connection) until the test ends; its base URL.
fn serve_files(root: &Path) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The rest of the head.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split(' ').nth(1).unwrap_or("/");
            let file = root.join(path.trim_start_matches('/'));
            let (status, body) = match fs::read(&file) {
                Ok(body) if !path.contains("..") => ("200 OK", body),
                _ => ("404 Not Found", b"not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

/// A release tarball under `dir/name` whose `strata` is a script that
/// appends its arguments to `log`, and its SHA-256.
fn fake_release(dir: &Path, name: &str, log: &Path, word: &str) -> String {
    let stage = dir.join(format!("{word}-stage"));
    fs::create_dir_all(&stage).unwrap();
    let script = format!("#!/bin/sh\necho \"{word} $*\" >> '{}'\n", log.display());
    fs::write(stage.join("strata"), script).unwrap();
    run(&stage, "chmod", &["755", "strata"], &[]);
    fs::create_dir_all(dir).unwrap();
    let tarball = dir.join(name);
    run(
        &stage,
        "tar",
        &["-czf", tarball.to_str().unwrap(), "strata"],
        &[],
    );
    sha256(&tarball)
}

fn sha256(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

// Each wrapper installs the release it is given from a loopback server:
// a tarball with the pinned SHA-256 installs and runs, and is kept (the
// next job runs it with the server gone); a tampered tarball is refused
// with a message saying so, and nothing in it runs or is kept.
#[test]
fn installers_run_only_the_pinned_release() {
    for wrapper in ["github", "buildkite", "circleci", "gitlab"] {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        let name = "strata-9.9.9-x86_64-unknown-linux-gnu.tar.gz";
        let log = d.join("ran.log");
        let good = fake_release(&d.join("srv/good"), name, &log, "good");
        let bad = fake_release(&d.join("srv/bad"), name, &log, "tampered");
        assert_ne!(good, bad);
        let base = serve_files(&d.join("srv"));
        let repo = d.join("repo");
        fs::create_dir_all(&repo).unwrap();
        let attach = |runner: &str, url: &str| {
            let (cache, tools) = (d.join(runner).join("cache"), d.join(runner).join("tools"));
            let env = [
                ("STRATA_INSTALL", "true"),
                ("STRATA_VERSION", "9.9.9"),
                ("STRATA_SHA256", good.as_str()),
                ("STRATA_RELEASE_URL", url),
                ("XDG_CACHE_HOME", cache.to_str().unwrap()),
                ("INPUT_INSTALL", "true"),
                ("INPUT_VERSION", "9.9.9"),
                ("INPUT_SHA256", good.as_str()),
                ("INPUT_RELEASE-URL", url),
                ("RUNNER_TOOL_CACHE", tools.to_str().unwrap()),
            ];
            let at = d.join("at");
            let out = through_with(wrapper, &repo, "store", Act::Attach(&at), false, &env);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        };
        let ran = || fs::read_to_string(&log).unwrap_or_default();

        let (ok, text) = attach("tampered-runner", &format!("{base}/bad"));
        assert!(!ok, "{wrapper} ran a tampered release: {text}");
        assert!(
            text.contains(&format!("has SHA-256 {bad}, not the pinned {good}")),
            "{wrapper}: {text}"
        );
        assert_eq!(ran(), "", "{wrapper} ran something of the tampered release");
        let kept: Vec<_> = walkdir::WalkDir::new(d.join("tampered-runner"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() == "strata")
            .collect();
        assert!(kept.is_empty(), "{wrapper} kept {kept:?}");

        let (ok, text) = attach("runner", &format!("{base}/good"));
        assert!(ok, "{wrapper}: {text}");
        assert!(
            ran().starts_with("good attach --at="),
            "{wrapper}: {}",
            ran()
        );
        // Kept on the runner: no download the second time.
        let (ok, text) = attach("runner", &format!("{base}/gone"));
        assert!(ok, "{wrapper}: {text}");
        assert_eq!(ran().lines().count(), 2, "{wrapper}");
    }
}

/// The two pins (version, SHA-256) a wrapper's installer holds.
fn pins(text: &str, version: &str, sha: &str) -> (String, String) {
    let value = |key: &str| {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} pin"));
        line.trim_start()[key.len()..]
            .trim_matches(|c: char| c == '"' || c == ';' || c == ' ')
            .to_string()
    };
    (value(version), value(sha))
}

// The release each wrapper installs is the one release/SHA256SUMS lists
// (release/build.sh --pin writes both), and the CircleCI orb and the
// GitLab component carry the Buildkite plugin's installer as it is.
#[test]
fn every_wrapper_pins_the_release_of_sha256sums() {
    let root = wrappers().join("..");
    let sums = fs::read_to_string(root.join("release/SHA256SUMS")).unwrap();
    let shell = fs::read_to_string(wrappers().join("buildkite/lib/install.sh")).unwrap();
    let js = fs::read_to_string(wrappers().join("github/install.js")).unwrap();
    let pinned = [
        pins(&shell, "strata_version=", "strata_sha256="),
        pins(&js, "const VERSION = ", "const SHA256 = "),
    ];
    for (version, sha) in &pinned {
        let line = format!("{sha}  strata-{version}-x86_64-unknown-linux-gnu.tar.gz");
        assert!(sums.lines().any(|l| l == line), "{line:?} not in {sums}");
    }
    let orb = fs::read_to_string(wrappers().join("circleci/orb.yml")).unwrap();
    let orb: Value = serde_yaml_ng::from_str(&orb).unwrap();
    for command in ["attach", "persist"] {
        let text = orb["commands"][command]["steps"][0]["run"]["command"].as_str();
        assert!(
            text.unwrap().contains(&shell),
            "the orb's {command} lacks the installer"
        );
    }
    let gitlab = fs::read_to_string(wrappers().join("gitlab/templates/strata.yml")).unwrap();
    let (_, body) = gitlab.split_once("\n---\n").unwrap();
    let body: Value = serde_yaml_ng::from_str(body).unwrap();
    assert_eq!(
        body[".strata"]["before_script"][0].as_str(),
        Some(shell.as_str())
    );
}
