//! Job graphs from CI config files, as each CI reads them: a GitHub
//! workflow's `jobs.<id>.needs`; GitLab's `stages`, `needs`, `extends` and
//! `parallel`; CircleCI's workflows with `requires`, `name:` and `matrix`
//! legs; Buildkite's `key`, `depends_on` and `wait`. YAML anchors and merge
//! keys are resolved first. Job names are the CI's own, encoded by
//! `ci::job_name`. Knows nothing about the store.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::{job_name, CiSystem};
use crate::error::{Error, Result};
use crate::format::graph::{Graph, JobSpec};

/// The graph `text` (the config file of `system`) defines. `job` is the
/// running job's CI name: CircleCI's config may hold several workflows,
/// and the one that holds `job` is read.
pub fn graph(system: CiSystem, text: &str, job: &str) -> Result<Graph> {
    let mut doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| bad(format!("invalid YAML: {e}")))?;
    doc.apply_merge()
        .map_err(|e| bad(format!("YAML merge keys: {e}")))?;
    let specs = match system {
        CiSystem::GithubActions => github(&doc)?,
        CiSystem::Gitlab => gitlab(&doc)?,
        CiSystem::Circleci => circleci(&doc, job)?,
        CiSystem::Buildkite => buildkite(&doc)?,
    };
    Graph::new(
        specs
            .into_iter()
            .map(|(name, requires)| JobSpec {
                name: job_name(&name),
                requires: requires.iter().map(|r| job_name(r)).collect(),
            })
            .collect(),
    )
}

/// The name GitLab gives every leg of a `parallel` job, as the config
/// names the job: `rspec 1/20` is `rspec`, `deploy: [aws, app1]` is
/// `deploy`. Other names are themselves.
pub fn gitlab_job_of_leg(name: &str) -> &str {
    if let Some((base, n)) = name.rsplit_once(' ') {
        let leg = n.split_once('/').is_some_and(|(i, t)| {
            !i.is_empty()
                && !t.is_empty()
                && (i.bytes().chain(t.bytes())).all(|b| b.is_ascii_digit())
        });
        if leg {
            return base;
        }
    }
    if name.ends_with(']') {
        if let Some((base, _)) = name.split_once(": [") {
            return base;
        }
    }
    name
}

fn bad(detail: String) -> Error {
    Error::Graph { detail }
}

/// A string or a list of strings (or of `{key: name}` mappings).
fn names(v: Option<&Value>, key: &str) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(seq)) => seq
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Mapping(_) => x.get(key).and_then(Value::as_str).map(str::to_string),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

type Specs = Vec<(String, Vec<String>)>;

/// `jobs.<id>.needs`: a matrix job is one job (its legs all finish before
/// its dependents start).
fn github(doc: &Value) -> Result<Specs> {
    let jobs = doc
        .get("jobs")
        .and_then(Value::as_mapping)
        .ok_or_else(|| bad("a GitHub workflow needs a `jobs:` mapping".into()))?;
    Ok(jobs
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), names(v.get("needs"), "job"))))
        .collect())
}

/// Top-level keys that are not jobs in a `.gitlab-ci.yml`.
const GITLAB_KEYWORDS: &[&str] = &[
    "stages",
    "variables",
    "default",
    "include",
    "workflow",
    "image",
    "services",
    "before_script",
    "after_script",
    "cache",
    "types",
    "spec",
    "pages:deploy",
];

/// `stages` order the jobs; a job without `needs` requires every job of
/// the stages before its own; `needs` (also through `extends`) replaces
/// that.
fn gitlab(doc: &Value) -> Result<Specs> {
    let map = doc
        .as_mapping()
        .ok_or_else(|| bad("a .gitlab-ci.yml is a mapping".into()))?;
    let stages: Vec<String> = match doc.get("stages") {
        Some(s) => names(Some(s), "stage"),
        None => vec!["build".into(), "test".into(), "deploy".into()],
    };
    let stage_index = |s: &str| match s {
        ".pre" => Some(0),
        ".post" => Some(usize::MAX),
        s => stages.iter().position(|x| x == s).map(|i| i + 1),
    };
    // What a job says, itself or through `extends` (nearest wins).
    let lookup = |job: &Value, key: &str| -> Option<Value> {
        let mut at = Some(job.clone());
        for _ in 0..10 {
            let here = at?;
            if let Some(v) = here.get(key) {
                return Some(v.clone());
            }
            let parents = names(here.get("extends"), "");
            at = parents.last().and_then(|p| doc.get(p.as_str()).cloned());
        }
        None
    };
    let mut jobs: Vec<(String, usize, Option<Vec<String>>)> = Vec::new();
    for (k, v) in map {
        let Some(name) = k.as_str() else { continue };
        if name.starts_with('.') || GITLAB_KEYWORDS.contains(&name) || !v.is_mapping() {
            continue;
        }
        let stage = lookup(v, "stage")
            .and_then(|s| s.as_str().map(str::to_string))
            .unwrap_or_else(|| "test".into());
        let index = stage_index(&stage)
            .ok_or_else(|| bad(format!("job {name:?}: stage {stage:?} is not in `stages`")))?;
        let needs = lookup(v, "needs").map(|n| names(Some(&n), "job"));
        jobs.push((name.to_string(), index, needs));
    }
    Ok(jobs
        .iter()
        .map(|(name, index, needs)| {
            let requires = match needs {
                Some(n) => n.clone(),
                None => jobs
                    .iter()
                    .filter(|(_, i, _)| i < index)
                    .map(|(n, _, _)| n.clone())
                    .collect(),
            };
            (name.clone(), requires)
        })
        .collect())
}

/// Every workflow that holds `job` (by its name in the config, after
/// matrix expansion), merged: CircleCI does not say which workflow runs, a
/// job such as `setup` may sit in several, and the workflows agree on what
/// a name requires (where they do not, the union is kept). `requires` of a
/// matrix job's name means all its legs.
fn circleci(doc: &Value, job: &str) -> Result<Specs> {
    let workflows = doc
        .get("workflows")
        .and_then(Value::as_mapping)
        .ok_or_else(|| bad("a CircleCI config needs `workflows:`".into()))?;
    let mut known = Vec::new();
    let mut merged: Specs = Vec::new();
    for (w, wf) in workflows {
        let (Some(w), Some(list)) = (w.as_str(), wf.get("jobs").and_then(Value::as_sequence))
        else {
            continue;
        };
        known.push(w.to_string());
        let specs = circleci_workflow(list)?;
        if !specs.iter().any(|(n, _)| n == job) {
            continue;
        }
        for (name, requires) in specs {
            match merged.iter_mut().find(|(n, _)| *n == name) {
                Some((_, r)) => {
                    for req in requires {
                        if !r.contains(&req) {
                            r.push(req);
                        }
                    }
                }
                None => merged.push((name, requires)),
            }
        }
    }
    if merged.is_empty() {
        return Err(bad(format!(
            "no workflow of the CircleCI config has a job {job:?} (workflows: {})",
            known.join(", ")
        )));
    }
    Ok(merged)
}

fn circleci_workflow(list: &[Value]) -> Result<Specs> {
    // Each entry: its legs' names, its alias, and what it requires.
    let mut entries: Vec<(Vec<String>, String, Vec<String>)> = Vec::new();
    for item in list {
        let (job, params) = match item {
            Value::String(s) => (s.clone(), Value::Null),
            Value::Mapping(m) if m.len() == 1 => {
                let (k, v) = m.iter().next().expect("one entry");
                let k = k
                    .as_str()
                    .ok_or_else(|| bad("a CircleCI job name is not a string".into()))?;
                (k.to_string(), v.clone())
            }
            _ => {
                return Err(bad(
                    "a CircleCI workflow job is a name or a one-key mapping".into(),
                ))
            }
        };
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(&job)
            .to_string();
        let requires = names(params.get("requires"), "");
        let matrix = params
            .get("matrix")
            .and_then(|m| m.get("parameters"))
            .and_then(Value::as_mapping);
        let (legs, alias) = match matrix {
            None => (vec![name.clone()], name),
            Some(parameters) => {
                let alias = params
                    .get("matrix")
                    .and_then(|m| m.get("alias"))
                    .and_then(Value::as_str)
                    .unwrap_or(&job)
                    .to_string();
                let mut legs = vec![name.clone()];
                for (_, values) in parameters {
                    let values: Vec<String> = values
                        .as_sequence()
                        .map(|s| s.iter().map(scalar).collect())
                        .unwrap_or_default();
                    legs = legs
                        .iter()
                        .flat_map(|l| values.iter().map(move |v| format!("{l}-{v}")))
                        .collect();
                }
                (legs, alias)
            }
        };
        entries.push((legs, alias, requires));
    }
    let mut by_alias: BTreeMap<&str, &Vec<String>> = BTreeMap::new();
    for (legs, alias, _) in &entries {
        by_alias.insert(alias, legs);
    }
    Ok(entries
        .iter()
        .flat_map(|(legs, _, requires)| {
            let requires: Vec<String> = requires
                .iter()
                .flat_map(|r| match by_alias.get(r.as_str()) {
                    Some(legs) => (*legs).clone(),
                    None => vec![r.clone()],
                })
                .collect();
            legs.iter().map(move |l| (l.clone(), requires.clone()))
        })
        .collect())
}

/// A matrix value as CircleCI writes it into a leg's name.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// `steps:` with `key` (or `label`), `depends_on`; a `wait` step makes
/// every later step require every earlier one, except a step whose
/// `depends_on` is null (it runs at once); `group` steps hold steps of
/// their own.
fn buildkite(doc: &Value) -> Result<Specs> {
    let steps = doc
        .get("steps")
        .and_then(Value::as_sequence)
        .ok_or_else(|| bad("a Buildkite pipeline needs a `steps:` list".into()))?;
    let mut specs: Specs = Vec::new();
    let mut before_wait: Vec<String> = Vec::new();
    buildkite_steps(steps, &mut specs, &mut before_wait);
    Ok(specs)
}

fn buildkite_steps(steps: &[Value], specs: &mut Specs, before_wait: &mut Vec<String>) {
    for step in steps {
        let is_wait = step.as_str() == Some("wait")
            || step.as_mapping().is_some_and(|m| m.contains_key("wait"));
        if is_wait {
            *before_wait = specs.iter().map(|(n, _)| n.clone()).collect();
            continue;
        }
        if let Some(inner) = step.get("steps").and_then(Value::as_sequence) {
            buildkite_steps(inner, specs, before_wait);
            continue;
        }
        let Some(name) = ["key", "id", "label"]
            .iter()
            .find_map(|k| step.get(*k).and_then(Value::as_str))
        else {
            continue;
        };
        let mut requires = match step.get("depends_on") {
            Some(Value::Null) => Vec::new(),
            _ => before_wait.clone(),
        };
        for d in names(step.get("depends_on"), "step") {
            if !requires.contains(&d) {
                requires.push(d);
            }
        }
        specs.push((name.to_string(), requires));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `job` requires (names encoded as the graph's).
    fn requires(g: &Graph, job: &str) -> Vec<crate::id::JobName> {
        let i = g
            .index_of(&job_name(job))
            .unwrap_or_else(|| panic!("no job {job}: {}", g.job_list()));
        g.jobs()[i].requires.clone()
    }

    /// CI names, encoded.
    fn named(names: &[&str]) -> Vec<crate::id::JobName> {
        names.iter().map(|n| job_name(n)).collect()
    }

    #[test]
    fn github_needs() {
        let g = graph(
            CiSystem::GithubActions,
            "on: push\njobs:\n  build:\n    strategy: {matrix: {node: [18, 20]}}\n  test:\n    needs: build\n  deploy:\n    needs: [build, test]\n",
            "test",
        )
        .unwrap();
        assert_eq!(requires(&g, "deploy"), named(&["build", "test"]));
        assert_eq!(requires(&g, "test"), named(&["build"]));
    }

    #[test]
    fn gitlab_stages_needs_extends_and_anchors() {
        let text = r#"
stages: [build, test, deploy]
.defaults: &defaults
  image: ruby
.tests:
  stage: test
  needs: [compile]
compile:
  <<: *defaults
  stage: build
lint:
  stage: build
rspec:
  extends: .tests
  parallel: 20
package:
  stage: deploy
"#;
        let g = graph(CiSystem::Gitlab, text, "rspec").unwrap();
        assert_eq!(requires(&g, "rspec"), named(&["compile"]));
        assert_eq!(
            requires(&g, "package"),
            named(&["compile", "lint", "rspec"])
        );
        assert!(requires(&g, "lint").is_empty());
        assert_eq!(gitlab_job_of_leg("rspec 3/20"), "rspec");
        assert_eq!(gitlab_job_of_leg("deploy: [aws, app1]"), "deploy");
        assert_eq!(gitlab_job_of_leg("build 2024"), "build 2024");
    }

    #[test]
    fn circleci_matrix_names_and_workflows() {
        let text = r#"
version: 2.1
workflows:
  build-and-test:
    jobs:
      - setup
      - yarn_test:
          requires: [setup]
          matrix:
            parameters:
              args: ["-r=stable", "-r=experimental"]
      - publish:
          name: Publish to Next channel
          requires: [yarn_test]
  nightly:
    jobs:
      - other
"#;
        let g = graph(CiSystem::Circleci, text, "yarn_test--r=stable").unwrap();
        assert_eq!(
            requires(&g, "Publish to Next channel"),
            named(&["yarn_test--r=stable", "yarn_test--r=experimental"])
        );
        assert!(graph(CiSystem::Circleci, text, "other").is_ok());
        let err = graph(CiSystem::Circleci, text, "nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("build-and-test, nightly"), "{err}");
    }

    #[test]
    fn buildkite_keys_depends_on_and_wait() {
        let text = r#"
steps:
  - label: ":hammer: Build"
    key: build
    command: make
  - key: lint
    command: make lint
  - wait
  - key: test
    command: make test
  - key: deploy
    depends_on: [{step: test}]
"#;
        let g = graph(CiSystem::Buildkite, text, "test").unwrap();
        assert_eq!(requires(&g, "test"), named(&["build", "lint"]));
        assert_eq!(requires(&g, "deploy"), named(&["build", "lint", "test"]));
    }
}
