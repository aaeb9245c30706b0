//! One small config per feature, each as its CI reads it (issue 27 lists
//! what an earlier reader got wrong with each).

use std::collections::BTreeSet;
use std::path::Path;

use super::{read, CiGraph, Format, Select};

/// Writes `files` into a fresh checkout and reads `entry` from it.
fn graph(format: Format, files: &[(&str, &str)], select: Select) -> crate::error::Result<CiGraph> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    read(format, dir.path(), Path::new(files[0].0), select)
}

/// The written names `job` transitively waits for.
fn up(g: &CiGraph, job: &str) -> Vec<String> {
    let set: BTreeSet<String> = g
        .ancestors(job)
        .unwrap_or_else(|| panic!("no job {job:?}: {}", g.known()));
    set.into_iter().collect()
}

#[test]
fn gitlab_and_circleci_accept_several_merge_keys_and_repeated_keys() {
    let text = ".a: &a {stage: build}\n.b: &b {script: x}\nbuild:\n  <<: *a\n  <<: *b\ntest:\n  stage: build\n  stage: test\n";
    let g = graph(Format::Gitlab, &[(".gitlab-ci.yml", text)], Select::Only).unwrap();
    assert_eq!(up(&g, "test"), ["build"]);
    let cc = "x: &x {requires: [a]}\nworkflows:\n  w:\n    jobs:\n      - a\n      - b:\n          <<: *x\n      - b:\n          name: c\n          requires: [a]\n          requires: [b]\n";
    let g = graph(
        Format::Circleci,
        &[(".circleci/config.yml", cc)],
        Select::Only,
    )
    .unwrap();
    assert_eq!(up(&g, "c"), ["a", "b"]);
}

#[test]
fn github_refuses_a_repeated_key_naming_file_and_line() {
    let text = "on: push\njobs:\n  build: {}\n  test: {needs: build}\n  build: {}\n";
    let e = graph(
        Format::Github,
        &[(".github/workflows/ci.yml", text)],
        Select::Only,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with(".github/workflows/ci.yml:5:"), "{e}");
}

#[test]
fn gitlab_extends_merges_deeply_in_order_and_refuses_a_cycle() {
    let text = "stages: [build, test]\n.a:\n  stage: test\n  needs: [compile]\n  variables: {A: 1}\n.b:\n  variables: {B: 2}\ncompile: {stage: build}\nlint: {stage: build}\nunit:\n  extends: [.a, .b]\n";
    let g = graph(Format::Gitlab, &[(".gitlab-ci.yml", text)], Select::Only).unwrap();
    assert_eq!(up(&g, "unit"), ["compile"]);
    let cycle = "a: {extends: .b, script: x}\n.b: {extends: .c}\n.c: {extends: .b}\n";
    let e = graph(Format::Gitlab, &[(".gitlab-ci.yml", cycle)], Select::Only).unwrap_err();
    assert!(e.to_string().contains(".b -> .c -> .b"), "{e}");
}

#[test]
fn gitlab_includes_references_and_needs_across_pipelines() {
    let main = "include:\n  - local: ci/templates.yml\n  - 'ci/jobs/*.yml'\n  - remote: https://example.com/x.yml\n  - project: group/other\n    file: /t.yml\nstages: [build, test, deploy]\ncompile:\n  extends: .compile\ndeploy:\n  stage: deploy\n  needs:\n    - !reference [.deploy-needs, needs]\n    - {pipeline: $PARENT_PIPELINE_ID, job: gen}\n    - {project: g/p, job: x, ref: main}\n    - {job: ghost, optional: true}\n";
    let templates = ".compile: {stage: build, script: make}\n.deploy-needs:\n  needs: [unit]\n";
    let jobs = "unit:\n  stage: test\n  needs: [compile]\n";
    let g = graph(
        Format::Gitlab,
        &[
            (".gitlab-ci.yml", main),
            ("ci/templates.yml", templates),
            ("ci/jobs/unit.yml", jobs),
        ],
        Select::Only,
    )
    .unwrap();
    assert_eq!(up(&g, "deploy"), ["compile", "unit"]);
    assert_eq!(g.warnings.len(), 2, "{:?}", g.warnings);
    assert!(
        g.warnings[0].contains("https://example.com/x.yml"),
        "{:?}",
        g.warnings
    );
    assert!(g.warnings[1].contains("group/other"), "{:?}", g.warnings);
}

#[test]
fn circleci_matrix_templates_statuses_and_pipeline_parameters() {
    let text = r#"
version: 2.1
parameters:
  target: {type: string, default: linux}
workflows:
  w:
    jobs:
      - build:
          name: build-<< pipeline.parameters.target >>
      - login:
          name: login-<<matrix.executor>>
          matrix:
            parameters:
              executor: [arm64, amd64]
          requires:
            - build-<< pipeline.parameters.target >>: [success, failed]
      - deploy:
          requires:
            - login-arm64
            - build-linux: failed
"#;
    let g = graph(
        Format::Circleci,
        &[(".circleci/config.yml", text)],
        Select::Only,
    )
    .unwrap();
    assert_eq!(up(&g, "login-amd64"), ["build-linux"]);
    assert_eq!(up(&g, "deploy"), ["build-linux", "login-arm64"]);
}

#[test]
fn buildkite_names_groups_and_barriers_as_documented() {
    let text = r#"
steps:
  - name: "Lint"
    command: make lint
  - key: build
    command: make
  - wait
  - group: "Tests"
    key: tests
    depends_on: build
    steps:
      - label: unit
        command: make unit
      - id: e2e
        command: make e2e
  - label: docs
    depends_on:
      - step: tests
        allow_failure: true
  - block: "Release?"
  - key: release
    command: make release
"#;
    let g = graph(
        Format::Buildkite,
        &[(".buildkite/pipeline.yml", text)],
        Select::Only,
    )
    .unwrap();
    assert_eq!(up(&g, "unit"), ["build"]);
    // depends_on replaces the wait: docs waits for the group only.
    assert_eq!(up(&g, "docs"), ["build", "e2e", "unit"]);
    // A block is a barrier: release waits for everything before it.
    assert_eq!(up(&g, "release"), ["Lint", "build", "docs", "e2e", "unit"]);
}

#[test]
fn github_reusable_workflows_are_caller_slash_callee() {
    let caller = "on: push\njobs:\n  setup: {}\n  build:\n    needs: setup\n    uses: ./.github/workflows/build.yml\n  deploy:\n    needs: build\n  other:\n    uses: octo/x/.github/workflows/y.yml@v1\n";
    let callee = "on: workflow_call\njobs:\n  compile: {}\n  test: {needs: compile}\n";
    let g = graph(
        Format::Github,
        &[
            (".github/workflows/ci.yml", caller),
            (".github/workflows/build.yml", callee),
        ],
        Select::Only,
    )
    .unwrap();
    assert_eq!(up(&g, "build / test"), ["build / compile", "setup"]);
    assert_eq!(
        up(&g, "deploy"),
        ["build / compile", "build / test", "setup"]
    );
    assert!(g.find("build").is_none());
    assert!(
        g.warnings[0].contains("octo/x/.github/workflows/y.yml@v1"),
        "{:?}",
        g.warnings
    );
}

#[test]
fn errors_name_the_file_line_and_jobs_as_written() {
    let text = "stages: [build]\nsource package:\n  stage: build\n  needs: [ghost]\n";
    let e = graph(Format::Gitlab, &[(".gitlab-ci.yml", text)], Select::Only)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(".gitlab-ci.yml:2:"), "{e}");
    assert!(e.contains("\"source package\" needs \"ghost\""), "{e}");
    assert!(e.contains("its jobs: source package"), "{e}");
}

#[test]
fn run_create_reads_plain_graphs_and_guesses_formats() {
    let g = graph(
        Format::Plain,
        &[(
            "graph.yml",
            "jobs:\n  compile: []\n  unit tests: [compile]\n",
        )],
        Select::Only,
    )
    .unwrap();
    assert_eq!(up(&g, "unit tests"), ["compile"]);
    let guess = |p: &str, t: &str| Format::guess(Path::new(p), t);
    assert_eq!(
        guess("g.yml", "workflows: {w: {jobs: [a]}}"),
        Format::Circleci
    );
    assert_eq!(guess("g.yml", "jobs: {a: [], b: [a]}"), Format::Plain);
    assert_eq!(guess("g.yml", "jobs: {a: {runs-on: x}}"), Format::Github);
    assert_eq!(guess(".buildkite/p.yml", ""), Format::Buildkite);
}
