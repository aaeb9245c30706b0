//! Job graphs read from configs written in the shape of real projects'
//! (tests/fixtures/ci, each file says whose): what each produces.

use std::path::Path;

use strata_store::ci::config::{read, Format, Select};
use strata_store::ci::{job_name, CiSystem};
use strata_store::Graph;

/// The graph of fixture `name` as `system`'s CI reads it, from the
/// workflows holding `job`.
fn graph(system: CiSystem, name: &str, job: &str) -> strata_store::Result<Graph> {
    let dir = format!("{}/../tests/fixtures/ci", env!("CARGO_MANIFEST_DIR"));
    let g = read(
        Format::of(system),
        Path::new(&dir),
        Path::new(name),
        Select::Job(job),
    )?;
    Ok(g.graph)
}

/// What `job` requires, as the CI names them (encoded), sorted.
fn requires(g: &Graph, job: &str) -> Vec<String> {
    let i = g
        .index_of(&job_name(job))
        .unwrap_or_else(|| panic!("no job {job:?} in {}", g.job_list()));
    let mut v: Vec<String> = g.jobs()[i].requires.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

fn encoded(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| job_name(n).to_string()).collect();
    v.sort();
    v
}

#[test]
fn circleci_react_like() {
    let text = "circleci-react-like.yml";
    // setup is in three workflows: their union.
    let g = graph(CiSystem::Circleci, text, "setup").unwrap();
    assert_eq!(g.jobs().len(), 8, "{}", g.job_list());
    assert_eq!(
        requires(&g, "yarn_test--r=stable --env=development"),
        encoded(&["setup"])
    );
    assert_eq!(
        requires(&g, "Publish to Experimental channel"),
        encoded(&["Publish to Next channel"])
    );
    assert_eq!(requires(&g, "test_fuzz"), encoded(&["setup"]));
    // A matrix leg's own workflow only.
    let g = graph(
        CiSystem::Circleci,
        text,
        "yarn_test--r=experimental --env=production",
    )
    .unwrap();
    assert_eq!(requires(&g, "sizebot"), encoded(&["yarn_build"]));
    assert!(g.index_of(&job_name("test_fuzz")).is_none());
}

#[test]
fn github_rust_analyzer_like() {
    let g = graph(
        CiSystem::GithubActions,
        "github-rust-analyzer-like.yml",
        "rust",
    )
    .unwrap();
    assert_eq!(g.jobs().len(), 7);
    assert_eq!(
        requires(&g, "conclusion"),
        encoded(&["rust", "rust-cross", "typescript", "clippy"])
    );
    assert_eq!(requires(&g, "typescript"), encoded(&["changes"]));
    assert_eq!(requires(&g, "cancel-if-matrix-failed"), encoded(&["rust"]));
}

#[test]
fn buildkite_vllm_like() {
    let g = graph(
        CiSystem::Buildkite,
        "buildkite-vllm-like.yml",
        "image-build",
    )
    .unwrap();
    assert!(requires(&g, "Simple Unit Test").is_empty());
    assert_eq!(
        requires(&g, "Diffusion Model Test"),
        encoded(&["image-build"])
    );
    // After the wait: every earlier step, and the group's own edges.
    assert_eq!(
        requires(&g, "publish"),
        encoded(&["image-build", "Simple Unit Test", "Diffusion Model Test"])
    );
    assert_eq!(
        requires(&g, "Announce"),
        encoded(&[
            "image-build",
            "Simple Unit Test",
            "Diffusion Model Test",
            "publish"
        ])
    );
}

#[test]
fn gitlab_monorepo_like() {
    let g = graph(CiSystem::Gitlab, "gitlab-monorepo-like.yml", "jest").unwrap();
    // Hidden templates and keywords are not jobs.
    assert_eq!(g.jobs().len(), 7, "{}", g.job_list());
    assert_eq!(requires(&g, "setup-db"), encoded(&["lint"]));
    assert_eq!(
        requires(&g, "compile assets"),
        encoded(&["lint", "setup-db"])
    );
    // needs through two levels of extends.
    assert_eq!(requires(&g, "rspec unit"), encoded(&["compile assets"]));
    assert_eq!(requires(&g, "jest"), encoded(&["compile assets"]));
    assert_eq!(
        requires(&g, "deploy review"),
        encoded(&["rspec unit", "jest"])
    );
    assert_eq!(
        requires(&g, "pages"),
        encoded(&["lint", "setup-db", "compile assets", "rspec unit", "jest"])
    );
}
