//! Buildkite pipelines (Buildkite's "Defining steps", "Depends on",
//! "Group step" pages): command steps named by `key` (aliases `id`,
//! `identifier`), else `label` (alias `name`); `depends_on` (a key, a
//! list of keys or of `{step: key, allow_failure: ...}`; `~` or `[]` for
//! none); `wait` and `block` steps as barriers: a step after one waits for
//! every step before it, unless it has its own `depends_on`, which then
//! replaces the barrier ("a step with an explicit dependency ... will run
//! immediately after the dependency step has completed, without waiting
//! for block or wait steps unless those are also explicit dependencies");
//! `input` and `trigger` steps order nothing by themselves; a `group`
//! waits as one step, its `depends_on` applies to all its steps, its
//! waits to its own steps only, and a step that depends on the group waits
//! for all its steps. A matrix or parallel step is one job. Steps with the
//! same label and no key are one job. Knows nothing about the store.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::yaml::{Dialect, Node, Value};
use super::{Ctx, Spec};
use crate::error::Result;

/// The jobs of the pipeline `ctx.entry`.
pub(super) fn read(ctx: &mut Ctx) -> Result<Vec<Spec>> {
    let file = ctx.entry.clone();
    let doc = ctx.load(&file, Dialect::MergeSpec)?;
    let steps = doc.get("steps").unwrap_or(&doc);
    let Some(steps) = steps.items() else {
        return Err(Ctx::error(
            &file,
            doc.line,
            "a Buildkite pipeline needs a `steps:` list".into(),
        ));
    };
    let mut p = Pipeline::default();
    p.walk(steps, &[])?;
    p.drop_unknown_keys(&file, &mut ctx.warnings);
    p.specs(&file)
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Command(String),
    /// `wait` or `block`.
    Barrier,
    /// `input` or `trigger`: depended on, it stands for what it waits for.
    Pass,
    /// Its steps (indices).
    Group(Vec<usize>),
}

#[derive(Debug, Clone)]
enum Ref {
    Item(usize),
    Key(String, usize),
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    key: Option<String>,
    refs: Vec<Ref>,
    line: usize,
}

#[derive(Default)]
struct Pipeline {
    items: Vec<Item>,
}

fn text(step: &Node, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| step.get(k).and_then(Node::as_str))
        .map(str::to_string)
}

/// A step's `depends_on`, when it has one (`~` and `[]`: none).
fn depends_on(step: &Node) -> Option<Vec<Ref>> {
    let d = step.get("depends_on")?;
    let refs = match &d.value {
        Value::Scalar(s) => vec![Ref::Key(s.clone(), d.line)],
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| match &i.value {
                Value::Scalar(s) => Some(Ref::Key(s.clone(), i.line)),
                Value::Map(_) => i
                    .get("step")
                    .and_then(Node::as_str)
                    .map(|s| Ref::Key(s.to_string(), i.line)),
                _ => None,
            })
            .collect(),
        _ => vec![],
    };
    Some(refs)
}

fn kind_of(step: &Node) -> Kind {
    if let Some(s) = step.as_str() {
        return match s {
            "wait" | "waiter" | "block" => Kind::Barrier,
            _ => Kind::Pass,
        };
    }
    let has = |k: &str| step.get(k).is_some();
    let typed = step.get("type").and_then(Node::as_str);
    if has("wait") || has("waiter") || has("block") || matches!(typed, Some("wait" | "block")) {
        return Kind::Barrier;
    }
    if has("input") || has("trigger") || matches!(typed, Some("input" | "trigger")) {
        return Kind::Pass;
    }
    if has("group") || has("steps") {
        return Kind::Group(vec![]);
    }
    match text(step, &["key", "id", "identifier"]).or_else(|| text(step, &["label", "name"])) {
        Some(name) => Kind::Command(name),
        // A step with no name cannot be asked for, and no job attaches
        // from it; what waits on it still waits through the barriers.
        None => Kind::Pass,
    }
}

impl Pipeline {
    /// Reads `steps` (the pipeline's, or a group's with `base` the group's
    /// own dependencies); returns the items it made, in order.
    fn walk(&mut self, steps: &[Node], base: &[Ref]) -> Result<Vec<usize>> {
        let mut seen: Vec<usize> = Vec::new();
        let mut implicit: Vec<Ref> = Vec::new();
        for step in steps {
            let kind = kind_of(step);
            let own = depends_on(step);
            let mut refs = base.to_vec();
            match (&kind, own) {
                (_, Some(explicit)) => refs.extend(explicit),
                (Kind::Barrier, None) => refs.extend(seen.iter().map(|&i| Ref::Item(i))),
                (_, None) => refs.extend(implicit.iter().cloned()),
            }
            let index = self.items.len();
            self.items.push(Item {
                kind: kind.clone(),
                key: text(step, &["key", "id", "identifier"]),
                refs: refs.clone(),
                line: step.line,
            });
            if let Kind::Group(_) = kind {
                let inner = step.get("steps").and_then(Node::items).unwrap_or(&[]);
                let members = self.walk(inner, &refs)?;
                self.items[index].kind = Kind::Group(members);
            }
            if kind == Kind::Barrier {
                implicit = vec![Ref::Item(index)];
            }
            seen.push(index);
        }
        Ok(seen)
    }

    /// Buildkite runs a pipeline whose `depends_on` names no step: the
    /// step that depends on it does not run ("If the step you're dependent
    /// on doesn't exist, the build will fail without running the step that
    /// is waiting for the dependency"). So the graph keeps the rest, and
    /// the user is told.
    fn drop_unknown_keys(&mut self, file: &Path, warnings: &mut Vec<String>) {
        let keys: BTreeSet<String> = self.items.iter().filter_map(|i| i.key.clone()).collect();
        for item in &mut self.items {
            item.refs.retain(|r| match r {
                Ref::Key(k, line) if !keys.contains(k) => {
                    warnings.push(format!(
                        "{}:{line}: `depends_on: {k}` names no step of this pipeline:                          Buildkite does not run the step that waits for it",
                        file.display()
                    ));
                    false
                }
                _ => true,
            });
        }
    }

    fn resolve(&self, file: &Path, r: &Ref) -> Result<usize> {
        match r {
            Ref::Item(i) => Ok(*i),
            Ref::Key(k, line) => self
                .items
                .iter()
                .position(|i| i.key.as_deref() == Some(k))
                .ok_or_else(|| {
                    Ctx::error(
                        file,
                        *line,
                        format!("`depends_on: {k}` names no step of this pipeline"),
                    )
                }),
        }
    }

    /// The jobs a dependency on item `i` waits for.
    fn stands_for(&self, file: &Path, i: usize, depth: usize) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        if depth > self.items.len() {
            return Err(Ctx::error(
                file,
                self.items[i].line,
                "steps depend on each other in a circle".into(),
            ));
        }
        match &self.items[i].kind {
            Kind::Command(name) => {
                out.insert(name.clone());
            }
            Kind::Group(members) => {
                for &m in members {
                    if let Kind::Command(_) | Kind::Group(_) = self.items[m].kind {
                        out.extend(self.stands_for(file, m, depth + 1)?);
                    }
                }
            }
            Kind::Barrier | Kind::Pass => {
                for r in &self.items[i].refs {
                    let j = self.resolve(file, r)?;
                    out.extend(self.stands_for(file, j, depth + 1)?);
                }
            }
        }
        Ok(out)
    }

    fn specs(&self, file: &Path) -> Result<Vec<Spec>> {
        let mut specs: Vec<Spec> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for item in &self.items {
            let Kind::Command(name) = &item.kind else {
                continue;
            };
            let mut requires = Vec::new();
            for r in &item.refs {
                let j = self.resolve(file, r)?;
                requires.extend(self.stands_for(file, j, 0)?);
            }
            match at.get(name) {
                Some(&s) => specs[s].requires.extend(requires),
                None => {
                    at.insert(name.clone(), specs.len());
                    specs.push(Spec {
                        name: name.clone(),
                        requires,
                        at: (file.to_path_buf(), item.line),
                    });
                }
            }
        }
        Ok(specs)
    }
}
