//! GitHub Actions workflows: `jobs.<id>.needs`, and reusable workflows in
//! the repository (`jobs.<id>.uses: ./.github/workflows/x.yml`), whose
//! jobs are jobs of the run named `<caller id> / <callee id>` as GitHub
//! shows them; the caller itself runs nothing. A called job waits for the
//! caller's `needs` and for its own `needs` inside the called workflow; a
//! job that needs the caller waits for every called job. A workflow in
//! another repository cannot be read: its caller stays one job, with a
//! warning. A matrix job is one job. Knows nothing about the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::yaml::{Dialect, Node};
use super::{names, Ctx, Spec};
use crate::error::Result;

/// GitHub's limit: a caller and three levels of called workflows.
const MAX_DEPTH: usize = 4;

/// The jobs of the workflow `ctx.entry` and of the workflows it calls.
pub(super) fn read(ctx: &mut Ctx) -> Result<Vec<Spec>> {
    let entry = ctx.entry.clone();
    let mut out = Vec::new();
    workflow(ctx, &entry, "", &[], 1, &mut out)?;
    Ok(out)
}

/// What a job of a workflow is: its own node, or the jobs of the workflow
/// it calls.
enum Kind {
    Job,
    Calls(PathBuf),
}

/// Appends the jobs of `file` to `out`, named `prefix` + id, each also
/// waiting for `outer` (the caller's `needs`, as job names). Returns every
/// name it appended.
fn workflow(
    ctx: &mut Ctx,
    file: &Path,
    prefix: &str,
    outer: &[String],
    depth: usize,
    out: &mut Vec<Spec>,
) -> Result<Vec<String>> {
    let doc = ctx.load(file, Dialect::Strict)?;
    let Some(jobs) = doc.get("jobs").and_then(Node::entries) else {
        return Err(Ctx::error(
            file,
            doc.line,
            "a GitHub workflow needs a `jobs:` mapping".into(),
        ));
    };
    // Each job's kind and the names it stands for (a caller: every job of
    // the workflow it calls), before any `needs` is resolved.
    let mut kinds = Vec::new();
    let mut stands_for: HashMap<&str, Vec<String>> = HashMap::new();
    for e in jobs {
        let kind = kind_of(ctx, file, &e.key, e.value.get("uses"), depth)?;
        let names = match &kind {
            Kind::Job => vec![format!("{prefix}{}", e.key)],
            Kind::Calls(callee) => {
                let mut scratch = Vec::new();
                let p = format!("{prefix}{} / ", e.key);
                workflow(ctx, callee, &p, &[], depth + 1, &mut scratch)?
            }
        };
        stands_for.insert(&e.key, names);
        kinds.push(kind);
    }
    let mut appended = Vec::new();
    for (e, kind) in jobs.iter().zip(kinds) {
        let mut requires = outer.to_vec();
        for need in names(e.value.get("needs"), "") {
            match stands_for.get(need.as_str()) {
                Some(names) => requires.extend(names.iter().cloned()),
                // Not a job of this workflow: left for the check to name.
                None => requires.push(format!("{prefix}{need}")),
            }
        }
        match kind {
            Kind::Job => {
                let name = format!("{prefix}{}", e.key);
                appended.push(name.clone());
                out.push(Spec {
                    name,
                    requires,
                    at: (file.to_path_buf(), e.line),
                });
            }
            Kind::Calls(callee) => {
                let p = format!("{prefix}{} / ", e.key);
                appended.extend(workflow(ctx, &callee, &p, &requires, depth + 1, out)?);
            }
        }
    }
    Ok(appended)
}

/// Whether job `id` runs steps or calls a workflow this reader can follow.
fn kind_of(
    ctx: &mut Ctx,
    file: &Path,
    id: &str,
    uses: Option<&Node>,
    depth: usize,
) -> Result<Kind> {
    let Some((uses, line)) = uses.and_then(|n| Some((n.as_str()?, n.line))) else {
        return Ok(Kind::Job);
    };
    let Some(local) = uses.strip_prefix("./").filter(|p| !p.contains('@')) else {
        ctx.warnings.push(format!(
            "{}: job {id:?} calls {uses}, a workflow outside this repository that strata \
             cannot read: its jobs are one job {id:?} here (give them STRATA_JOB={id:?})",
            file.display()
        ));
        return Ok(Kind::Job);
    };
    if depth >= MAX_DEPTH {
        return Err(Ctx::error(
            file,
            line,
            format!("job {id:?} calls {uses} past GitHub's {MAX_DEPTH} levels of workflows"),
        ));
    }
    Ok(Kind::Calls(PathBuf::from(local)))
}
