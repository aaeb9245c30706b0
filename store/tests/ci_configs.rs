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

/// The corpus (tests/fixtures/ci/corpus/<ci>/<fixture>/): real public
/// configs at their repository paths, each with an `expected.yml` derived
/// by hand from the CI's documentation for one pipeline. For every job it
/// lists, the jobs it transitively waits for (among the jobs listed) must
/// be the ones strata's reader gives it.
#[test]
fn corpus_graphs_match_the_ones_derived_from_each_cis_documentation() {
    use std::collections::{BTreeMap, BTreeSet};
    use strata_store::ci::config::yaml::{load, Dialect, Node};

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ci/corpus");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|ci| ci.unwrap().path())
        .filter(|ci| ci.is_dir())
        .flat_map(|ci| std::fs::read_dir(ci).unwrap())
        .map(|d| d.unwrap().path())
        .filter(|d| d.join("expected.yml").is_file())
        .collect();
    dirs.sort();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(dir.join("expected.yml")).unwrap();
        let expected = load(&text, Dialect::Strict).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let field = |k: &str| expected.get(k).and_then(Node::as_str).map(str::to_string);
        let format = match field("ci").as_deref() {
            Some("github") => Format::Github,
            Some("gitlab") => Format::Gitlab,
            Some("circleci") => Format::Circleci,
            Some("buildkite") => Format::Buildkite,
            other => panic!("{name}: ci {other:?}"),
        };
        let entry = field("entry").unwrap_or_else(|| panic!("{name}: no entry"));
        let workflow = field("workflow");
        let select = match &workflow {
            Some(w) => Select::Workflow(w),
            None => Select::Only,
        };
        // The expected graph and its transitive closure.
        let jobs: BTreeMap<String, Vec<String>> = expected
            .get("jobs")
            .and_then(Node::entries)
            .unwrap_or_else(|| panic!("{name}: no jobs"))
            .iter()
            .map(|e| (e.key.clone(), e.value.strings()))
            .collect();
        let closure = |job: &str| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![job.to_string()];
            while let Some(j) = todo.pop() {
                for r in jobs.get(&j).into_iter().flatten() {
                    if jobs.contains_key(r) && seen.insert(r.clone()) {
                        todo.push(r.clone());
                    }
                }
            }
            seen
        };
        let g = match read(format, dir, Path::new(&entry), select) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{name}: strata cannot read it: {e}"));
                continue;
            }
        };
        let mut diffs = Vec::new();
        for job in jobs.keys() {
            let want = closure(job);
            let Some(got) = g.ancestors(job) else {
                diffs.push(format!("  {job:?}: not a job strata read"));
                continue;
            };
            let got: BTreeSet<String> = got.into_iter().filter(|a| jobs.contains_key(a)).collect();
            if got != want {
                let missing: Vec<_> = want.difference(&got).collect();
                let extra: Vec<_> = got.difference(&want).collect();
                diffs.push(format!("  {job:?}: missing {missing:?}, extra {extra:?}"));
            }
        }
        if !diffs.is_empty() {
            failures.push(format!("{name}:\n{}", diffs.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus fixtures differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}
