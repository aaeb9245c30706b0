//! strata's own graph file: `jobs: {NAME: [REQUIRES]}` (a name or a list
//! of names per job), for `strata run create --graph` outside a CI.
//! Knows nothing about any CI.

use super::yaml::{Dialect, Value};
use super::{Ctx, Spec};
use crate::error::Result;

/// The jobs of `ctx.entry`.
pub(super) fn read(ctx: &mut Ctx) -> Result<Vec<Spec>> {
    let file = ctx.entry.clone();
    let doc = ctx.load(&file, Dialect::Strict)?;
    let Some(jobs) = doc.get("jobs").and_then(|j| j.entries()) else {
        return Err(Ctx::error(
            &file,
            doc.line,
            "expected a `jobs: {NAME: [REQUIRES]}` mapping, or a CI's config".into(),
        ));
    };
    jobs.iter()
        .map(|e| {
            let requires = match &e.value.value {
                Value::Null => vec![],
                Value::Scalar(s) => vec![s.clone()],
                Value::Seq(items) if items.iter().all(|i| i.as_str().is_some()) => {
                    e.value.strings()
                }
                _ => {
                    return Err(Ctx::error(
                        &file,
                        e.value.line,
                        format!("job {:?}: its requires must be a list of job names", e.key),
                    ))
                }
            };
            Ok(Spec {
                name: e.key.clone(),
                requires,
                at: (file.clone(), e.line),
            })
        })
        .collect()
}
