//! GitLab CI configs (GitLab's CI/CD YAML reference): `include:` of files
//! in the repository (`local:`, a path or a list of them, wildcards `*`
//! and `**`), merged under the including file, which wins, hashes merged
//! deeply; `!reference [job, key, ...]`; `extends` (one or a list, merged
//! deeply in order, each parent resolved first; a cycle refused); `stages`
//! (default `build, test, deploy`, with `.pre` first and `.post` last) and
//! `needs`: a job without `needs` waits for every job of the earlier
//! stages, one with `needs` for those only; a need on another pipeline
//! (`pipeline:`, `project:`) is not a job of this run and is left out, as
//! is an `optional: true` need on a job the config does not define.
//! Includes strata cannot read (`remote`, `project`, `template`,
//! `component`, a path with a variable) are warned about, naming them.
//! Every job the config defines is a job, whatever its `rules`: one that
//! does not run in a pipeline persists nothing, so attaching from it adds
//! nothing. A `parallel` job is one job. Knows nothing about the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::yaml::{Dialect, Entry, Node, Value};
use super::{gitlab_job_of_leg, Ctx, Spec};
use crate::error::Result;

/// Top-level keys that are not jobs.
const KEYWORDS: &[&str] = &[
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
];

/// GitLab's limit on nested includes.
const MAX_INCLUDES: usize = 150;

/// The jobs of `ctx.entry` and the files it includes.
pub(super) fn read(ctx: &mut Ctx) -> Result<Vec<Spec>> {
    let entry = ctx.entry.clone();
    let mut count = 0;
    let mut doc: Vec<(Entry, PathBuf)> = Vec::new();
    load(ctx, &entry, &mut doc, &mut count)?;
    let raw: Vec<Entry> = doc.iter().map(|(e, _)| e.clone()).collect();
    let top = Node::new(1, Value::Map(raw));
    let mut resolved: HashMap<String, Node> = HashMap::new();
    let mut jobs = Vec::new();
    for (e, file) in &doc {
        if e.key.starts_with('.') || KEYWORDS.contains(&e.key.as_str()) {
            continue;
        }
        if e.value.entries().is_none() {
            continue;
        }
        let job = extended(&top, &e.key, file, &mut resolved, &mut Vec::new())?;
        jobs.push((e.key.clone(), job, file.clone(), e.line));
    }
    let stages = match top
        .get("stages")
        .map(|s| references(&top, s, file_of(&doc, "stages"), 0))
    {
        Some(s) => s?.strings(),
        None => vec!["build".into(), "test".into(), "deploy".into()],
    };
    let index = |s: &str| match s {
        ".pre" => Some(0),
        ".post" => Some(usize::MAX),
        s => stages.iter().position(|x| x == s).map(|i| i + 1),
    };
    let mut staged = Vec::new();
    for (name, job, file, line) in &jobs {
        let stage = job.get("stage").and_then(Node::as_str).unwrap_or("test");
        let i = index(stage).ok_or_else(|| {
            Ctx::error(
                file,
                *line,
                format!(
                    "job {name:?}: stage {stage:?} is not one of `stages` ({})",
                    stages.join(", ")
                ),
            )
        })?;
        staged.push(i);
    }
    let names: Vec<&str> = jobs.iter().map(|(n, ..)| n.as_str()).collect();
    let mut specs = Vec::new();
    for (k, (name, job, file, line)) in jobs.iter().enumerate() {
        let requires = match job.get("needs") {
            Some(needs) => needs_of(needs, &names),
            None => (0..jobs.len())
                .filter(|&o| staged[o] < staged[k])
                .map(|o| jobs[o].0.clone())
                .collect(),
        };
        specs.push(Spec {
            name: name.clone(),
            requires,
            at: (file.clone(), *line),
        });
    }
    Ok(specs)
}

fn file_of(doc: &[(Entry, PathBuf)], key: &str) -> PathBuf {
    doc.iter()
        .find(|(e, _)| e.key == key)
        .map(|(_, f)| f.clone())
        .unwrap_or_default()
}

/// A job's `needs`, as job names of this pipeline.
fn needs_of(needs: &Node, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for n in needs.items().unwrap_or(&[]) {
        let (job, optional) = match &n.value {
            Value::Scalar(s) => (s.as_str(), false),
            Value::Map(_) => {
                // Another pipeline's or project's job: not in this run.
                if n.get("pipeline").is_some() || n.get("project").is_some() {
                    continue;
                }
                let Some(job) = n.get("job").and_then(Node::as_str) else {
                    continue;
                };
                (
                    job,
                    n.get("optional").and_then(Node::as_str) == Some("true"),
                )
            }
            _ => continue,
        };
        let job = if names.contains(&job) {
            job
        } else {
            gitlab_job_of_leg(job)
        };
        if optional && !names.contains(&job) {
            continue;
        }
        out.push(job.to_string());
    }
    out
}

/// Appends the entries of `file` to `doc`, its includes first (a later
/// file's keys merged over an earlier's).
fn load(
    ctx: &mut Ctx,
    file: &Path,
    doc: &mut Vec<(Entry, PathBuf)>,
    count: &mut usize,
) -> Result<()> {
    *count += 1;
    if *count > MAX_INCLUDES {
        return Err(Ctx::error(
            file,
            1,
            format!("more than {MAX_INCLUDES} included files"),
        ));
    }
    let node = ctx.load(file, Dialect::Sequential)?;
    // A file with a `spec:` header (inputs) holds the config in its second
    // document; the loader reads the first, so look past the header.
    let node = match node.get("spec") {
        Some(_) if node.entries().is_some_and(|e| e.len() == 1) => second_document(ctx, file)?,
        _ => node,
    };
    let Some(entries) = node.entries() else {
        return Err(Ctx::error(
            file,
            node.line,
            "a GitLab CI config is a mapping".into(),
        ));
    };
    if let Some(inc) = node.get("include") {
        for path in includes(ctx, file, inc)? {
            load(ctx, &path, doc, count)?;
        }
    }
    for e in entries.iter().filter(|e| e.key != "include") {
        match doc.iter_mut().find(|(d, _)| d.key == e.key) {
            Some((d, f)) => {
                d.value = deep_merge(&d.value, &e.value);
                d.line = e.line;
                *f = file.to_path_buf();
            }
            None => doc.push((e.clone(), file.to_path_buf())),
        }
    }
    Ok(())
}

fn second_document(ctx: &Ctx, file: &Path) -> Result<Node> {
    let text = std::fs::read_to_string(ctx.checkout.join(file)).unwrap_or_default();
    let mut lines = 0;
    for (i, l) in text.lines().enumerate() {
        if l.trim_end() == "---" {
            lines = i + 1;
            break;
        }
    }
    let rest: String = text.lines().skip(lines).collect::<Vec<_>>().join("\n");
    let mut node = super::yaml::load(&rest, Dialect::Sequential)
        .map_err(|e| Ctx::error(file, e.line + lines, e.message))?;
    shift(&mut node, lines);
    Ok(node)
}

fn shift(node: &mut Node, by: usize) {
    node.line += by;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| shift(i, by)),
        Value::Map(entries) => entries.iter_mut().for_each(|e| {
            e.line += by;
            shift(&mut e.value, by);
        }),
        _ => {}
    }
}

/// The repository files an `include:` names; what it cannot follow is
/// warned about.
fn includes(ctx: &mut Ctx, file: &Path, inc: &Node) -> Result<Vec<PathBuf>> {
    let items: Vec<&Node> = match &inc.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![inc],
    };
    let mut out = Vec::new();
    for item in items {
        let (path, what) = match (&item.value, item.get("local")) {
            (Value::Scalar(s), _) if !s.contains("://") => (Some(s.as_str()), None),
            (Value::Scalar(s), _) => (None, Some(format!("remote {s}"))),
            (_, Some(local)) => (local.as_str(), None),
            _ => (None, Some(describe(item))),
        };
        let Some(path) = path.filter(|p| !p.contains('$')) else {
            let what = what.unwrap_or_else(|| describe(item));
            ctx.warnings.push(format!(
                "{}:{}: the include of {what} is not followed: jobs and templates it defines are \
                 missing from the graph (give the job STRATA_JOB, or the config STRATA_CONFIG)",
                file.display(),
                item.line
            ));
            continue;
        };
        let found = local_paths(&ctx.checkout, path.trim_start_matches('/'));
        if found.is_empty() {
            return Err(Ctx::error(
                file,
                item.line,
                format!("`include: {path}` matches no file of the repository"),
            ));
        }
        out.extend(found);
    }
    Ok(out)
}

fn describe(item: &Node) -> String {
    for k in ["remote", "project", "template", "component"] {
        if let Some(v) = item.get(k) {
            let file = item.get("file").map(|f| f.strings().join(", "));
            return match file {
                Some(f) => format!("{k} {} ({f})", v.as_str().unwrap_or("?")),
                None => format!("{k} {}", v.as_str().unwrap_or("?")),
            };
        }
    }
    format!("the entry at line {}", item.line)
}

/// `pattern` (a path, or one with `*` and `**`) under `checkout`.
fn local_paths(checkout: &Path, pattern: &str) -> Vec<PathBuf> {
    if !pattern.contains('*') {
        let p = PathBuf::from(pattern);
        return if checkout.join(&p).is_file() {
            vec![p]
        } else {
            vec![]
        };
    }
    let Ok(glob) = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
    else {
        return vec![];
    };
    let matcher = glob.compile_matcher();
    let mut found: Vec<PathBuf> = walkdir::WalkDir::new(checkout)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.path().strip_prefix(checkout).ok().map(Path::to_path_buf))
        .filter(|p| matcher.is_match(p))
        .collect();
    found.sort();
    found
}

/// `over` merged into `base` as GitLab merges: mappings key by key, deeply;
/// anything else replaced.
fn deep_merge(base: &Node, over: &Node) -> Node {
    let (Some(b), Some(o)) = (base.entries(), over.entries()) else {
        return over.clone();
    };
    let mut out = b.to_vec();
    for e in o {
        match out.iter_mut().find(|x| x.key == e.key) {
            Some(x) => x.value = deep_merge(&x.value, &e.value),
            None => out.push(e.clone()),
        }
    }
    let mut node = over.clone();
    node.value = Value::Map(out);
    node
}

/// Job `name` with its `extends` applied (and its `!reference`s).
fn extended(
    top: &Node,
    name: &str,
    file: &Path,
    done: &mut HashMap<String, Node>,
    chain: &mut Vec<String>,
) -> Result<Node> {
    if let Some(n) = done.get(name) {
        return Ok(n.clone());
    }
    let line = top
        .entries()
        .and_then(|es| es.iter().find(|e| e.key == name))
        .map_or(1, |e| e.line);
    if chain.iter().any(|c| c == name) {
        chain.push(name.to_string());
        return Err(Ctx::error(
            file,
            line,
            format!("`extends` goes round in a circle: {}", chain.join(" -> ")),
        ));
    }
    let Some(job) = top.get(name) else {
        return Err(Ctx::error(
            file,
            line,
            format!(
                "job {:?} extends {name:?}, which the config does not define",
                chain.last().map_or("", |s| s.as_str())
            ),
        ));
    };
    let job = references(top, job, file.to_path_buf(), 0)?;
    chain.push(name.to_string());
    let mut merged = Node::new(job.line, Value::Map(vec![]));
    for parent in job.get("extends").map(Node::strings).unwrap_or_default() {
        let p = extended(top, &parent, file, done, chain)?;
        merged = deep_merge(&merged, &p);
    }
    chain.pop();
    let mut own = job.clone();
    if let Value::Map(entries) = &mut own.value {
        entries.retain(|e| e.key != "extends");
    }
    let merged = deep_merge(&merged, &own);
    done.insert(name.to_string(), merged.clone());
    Ok(merged)
}

/// `node` with every `!reference [job, key, ...]` replaced by the value
/// it names (a list's items spliced into the list holding it).
fn references(top: &Node, node: &Node, file: PathBuf, depth: usize) -> Result<Node> {
    if depth > 10 {
        return Err(Ctx::error(
            &file,
            node.line,
            "`!reference` nested past 10 levels".into(),
        ));
    }
    if node.tag.as_deref() == Some("reference") {
        let path = node.strings();
        let mut at = Some(top);
        for key in &path {
            at = at.and_then(|n| n.get(key));
        }
        let Some(target) = at else {
            return Err(Ctx::error(
                &file,
                node.line,
                format!(
                    "`!reference [{}]` names nothing the config defines",
                    path.join(", ")
                ),
            ));
        };
        return references(top, target, file, depth + 1);
    }
    let mut out = node.clone();
    match (&node.value, &mut out.value) {
        (Value::Seq(items), Value::Seq(new)) => {
            new.clear();
            for i in items {
                let r = references(top, i, file.clone(), depth)?;
                match (i.tag.as_deref(), &r.value) {
                    (Some("reference"), Value::Seq(inner)) => new.extend(inner.iter().cloned()),
                    _ => new.push(r),
                }
            }
        }
        (Value::Map(entries), Value::Map(new)) => {
            for (e, n) in entries.iter().zip(new.iter_mut()) {
                n.value = references(top, &e.value, file.clone(), depth)?;
            }
        }
        _ => {}
    }
    Ok(out)
}
