//! CircleCI configs (CircleCI's configuration reference, "Using matrix
//! jobs", "Pipeline values and parameters"): the jobs of a workflow, each
//! named by its `name:` else the job it references; `requires` (names, or
//! `{name: status}` / `{name: [statuses]}`, which wait all the same);
//! `matrix.parameters` expanded into one job per combination (less
//! `exclude`), named by a `name:` template with `<< matrix.x >>`
//! substituted, else `<name>-<value>-<value>`; a `requires` naming the
//! matrix job (or its `alias`) waits for every leg; `<< matrix.x >>` in a
//! leg's `requires` and `<< pipeline.parameters.x >>` (the parameter's
//! default) in names are substituted. Which workflow: the one asked for,
//! or every workflow holding the running job (CircleCI's environment does
//! not name it; the union is kept). Knows nothing about the store.

use std::path::Path;

use super::yaml::{Dialect, Node, Value};
use super::{Ctx, Select, Spec};
use crate::error::Result;

/// The jobs of the chosen workflows of `ctx.entry`.
pub(super) fn read(ctx: &mut Ctx, select: Select) -> Result<Vec<Spec>> {
    let file = ctx.entry.clone();
    let doc = ctx.load(&file, Dialect::Sequential)?;
    let Some(workflows) = doc.get("workflows").and_then(Node::entries) else {
        return Err(Ctx::error(
            &file,
            doc.line,
            "a CircleCI config needs `workflows:`".into(),
        ));
    };
    let params = Params::of(&doc);
    let mut all = Vec::new();
    for w in workflows {
        let Some(list) = w.value.get("jobs").and_then(Node::items) else {
            continue; // `version: 2`
        };
        all.push((w.key.clone(), workflow(&file, list, &params, ctx)?));
    }
    let list = || {
        all.iter()
            .map(|(w, _)| w.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen: Vec<&Vec<Spec>> = match select {
        Select::Workflow(name) => all
            .iter()
            .filter(|(w, _)| w == name)
            .map(|(_, s)| s)
            .collect(),
        Select::Job(job) => all
            .iter()
            .filter(|(_, s)| s.iter().any(|j| j.name == job))
            .map(|(_, s)| s)
            .collect(),
        Select::Only if all.len() == 1 => vec![&all[0].1],
        Select::Only => {
            return Err(Ctx::error(
                &file,
                doc.line,
                format!("several workflows ({}): pick one", list()),
            ))
        }
    };
    if chosen.is_empty() {
        let what = match select {
            Select::Workflow(w) => format!("no workflow {w:?}"),
            Select::Job(j) => format!("no workflow has a job {j:?}"),
            Select::Only => "no workflow".into(),
        };
        return Err(Ctx::error(
            &file,
            doc.line,
            format!("{what} (workflows: {})", list()),
        ));
    }
    // The union: a job in several workflows requires what any says.
    let mut merged: Vec<Spec> = Vec::new();
    for specs in chosen {
        for s in specs {
            match merged.iter_mut().find(|m| m.name == s.name) {
                Some(m) => {
                    for r in &s.requires {
                        if !m.requires.contains(r) {
                            m.requires.push(r.clone());
                        }
                    }
                }
                None => merged.push(s.clone()),
            }
        }
    }
    Ok(merged)
}

/// Pipeline parameters' defaults, for `<< pipeline.parameters.x >>`.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(doc: &Node) -> Params {
        let entries = doc.get("parameters").and_then(Node::entries).unwrap_or(&[]);
        Params(
            entries
                .iter()
                .filter_map(|e| {
                    let d = e.value.get("default")?;
                    Some((format!("pipeline.parameters.{}", e.key), scalar(d)))
                })
                .collect(),
        )
    }
}

/// A scalar as CircleCI writes it into a name.
fn scalar(n: &Node) -> String {
    match &n.value {
        Value::Scalar(s) => s.clone(),
        Value::Null => String::new(),
        _ => String::new(),
    }
}

/// `text` with every `<< name >>` whose name `values` has replaced.
fn substitute(text: &str, values: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("<<") {
        let Some(close) = rest[open..].find(">>") else {
            break;
        };
        let name = rest[open + 2..open + close].trim();
        out.push_str(&rest[..open]);
        match values.iter().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// One entry of a workflow's `jobs:`: its legs (name and matrix values)
/// and the names that mean all of them.
struct Entry {
    legs: Vec<(String, Vec<(String, String)>)>,
    aliases: Vec<String>,
    requires: Vec<String>,
    line: usize,
}

fn workflow(file: &Path, list: &[Node], params: &Params, ctx: &mut Ctx) -> Result<Vec<Spec>> {
    let mut entries = Vec::new();
    for item in list {
        let (job, conf) = match (&item.value, item.entries()) {
            (Value::Scalar(s), _) => (s.clone(), None),
            (_, Some([e])) => (e.key.clone(), Some(&e.value)),
            _ => {
                return Err(Ctx::error(
                    file,
                    item.line,
                    "a workflow job is a name or a one-key mapping".into(),
                ))
            }
        };
        entries.push(entry(&job, conf, item.line, params));
    }
    let mut specs = Vec::new();
    for e in &entries {
        for (leg, values) in &e.legs {
            let mut requires = Vec::new();
            for r in &e.requires {
                let r = substitute(r, values);
                match entries.iter().find(|x| x.aliases.contains(&r)) {
                    Some(x) => requires.extend(x.legs.iter().map(|(n, _)| n.clone())),
                    None => requires.push(r),
                }
            }
            if leg.contains("<<") {
                ctx.warnings.push(format!(
                    "{}:{}: job name {leg:?} holds a value strata cannot know",
                    file.display(),
                    e.line
                ));
            }
            specs.push(Spec {
                name: leg.clone(),
                requires,
                at: (file.to_path_buf(), e.line),
            });
        }
    }
    Ok(specs)
}

fn entry(job: &str, conf: Option<&Node>, line: usize, params: &Params) -> Entry {
    let get = |k: &str| conf.and_then(|c| c.get(k));
    let template = get("name").map(scalar);
    let requires = requires_of(get("requires"))
        .iter()
        .map(|r| substitute(r, &params.0))
        .collect();
    let matrix = get("matrix");
    let Some(parameters) = matrix
        .and_then(|m| m.get("parameters"))
        .and_then(Node::entries)
    else {
        let name = substitute(template.as_deref().unwrap_or(job), &params.0);
        return Entry {
            legs: vec![(name.clone(), vec![])],
            aliases: vec![name],
            requires,
            line,
        };
    };
    let legs = combinations(parameters)
        .into_iter()
        .filter(|c| !excluded(matrix, c))
        .map(|c| {
            let mut values = params.0.clone();
            values.extend(c.iter().cloned());
            let name = match &template {
                Some(t) if t.contains("matrix.") => substitute(t, &values),
                other => {
                    let base = substitute(other.as_deref().unwrap_or(job), &values);
                    let vals: Vec<&str> = c.iter().map(|(_, v)| v.as_str()).collect();
                    format!("{base}-{}", vals.join("-"))
                }
            };
            (name, c)
        })
        .collect();
    let alias = matrix
        .and_then(|m| m.get("alias"))
        .and_then(Node::as_str)
        .map(str::to_string);
    let mut aliases = vec![alias.unwrap_or_else(|| job.to_string())];
    if let Some(t) = template.filter(|t| !t.contains("<<")) {
        aliases.push(t);
    }
    Entry {
        legs,
        aliases,
        requires,
        line,
    }
}

/// A workflow entry's `requires:`: names, or `- build: failed` /
/// `- build: [success, failed]` maps, whose keys are the names.
fn requires_of(requires: Option<&Node>) -> Vec<String> {
    match requires.map(|r| &r.value) {
        Some(Value::Seq(items)) => items
            .iter()
            .flat_map(|i| match &i.value {
                Value::Scalar(s) => vec![s.clone()],
                Value::Map(m) => m.iter().map(|e| e.key.clone()).collect(),
                _ => vec![],
            })
            .collect(),
        Some(Value::Scalar(s)) => vec![s.clone()],
        _ => vec![],
    }
}

/// Every combination of a matrix's `parameters`, as `matrix.<name>` =
/// value pairs in the order the parameters are listed.
fn combinations(parameters: &[super::yaml::Entry]) -> Vec<Vec<(String, String)>> {
    let mut combos: Vec<Vec<(String, String)>> = vec![vec![]];
    for p in parameters {
        let values: Vec<String> = p.value.items().unwrap_or(&[]).iter().map(scalar).collect();
        combos = combos
            .iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((format!("matrix.{}", p.key), v.clone()));
                    c
                })
            })
            .collect();
    }
    combos
}

/// Whether the matrix's `exclude:` names combination `c`.
fn excluded(matrix: Option<&Node>, c: &[(String, String)]) -> bool {
    let ex = matrix.and_then(|m| m.get("exclude")).and_then(Node::items);
    ex.unwrap_or(&[]).iter().any(|x| {
        x.entries().is_some_and(|es| {
            es.iter().all(|e| {
                c.iter()
                    .any(|(k, v)| *k == format!("matrix.{}", e.key) && *v == scalar(&e.value))
            })
        })
    })
}
