//! `strata demo`: the seed workflow run twice in a temporary store.

use anyhow::Result;
use strata_store::demo::{DemoReport, Step};

use super::attach::attach_line;
use super::persist::persist_line;
use crate::args::{Cli, DemoArgs};
use crate::output::print_json;

pub(crate) fn exec(cli: &Cli, a: &DemoArgs) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("strata-demo-{}", std::process::id()));
    let report = strata_store::demo::run(&scratch, a.files, a.keep)?;
    demo(cli.json, &report, a.keep);
    Ok(())
}

pub(crate) fn demo(json: bool, d: &DemoReport, kept: bool) {
    if json {
        let steps: Vec<serde_json::Value> = d
            .steps
            .iter()
            .map(|s| match s {
                Step::RunCreated { run, jobs } => {
                    serde_json::json!({"run_created": run, "jobs": jobs})
                }
                Step::Persisted(r) => serde_json::json!({ "persisted": r }),
                Step::Attached(r) => serde_json::json!({ "attached": r }),
                Step::Origin { job, path, from } => {
                    serde_json::json!({"origin": {"job": job, "path": path, "from": from}})
                }
            })
            .collect();
        return print_json(&serde_json::json!({ "store": d.store, "steps": steps }));
    }
    for s in &d.steps {
        match s {
            Step::RunCreated { run, jobs } => println!("\nrun {run}: jobs {jobs}"),
            Step::Persisted(r) => println!("  {:<14} {}", r.job.as_str(), persist_line(r)),
            Step::Attached(r) => println!("  {:<14} {}", r.job.as_str(), attach_line(r)),
            Step::Origin { job, path, from } => {
                println!("  {:<14} sees {path} from {from}", job.as_str())
            }
        }
    }
    if kept {
        println!(
            "\nstore and job directories kept in {}",
            d.store.parent().unwrap_or(&d.store).display()
        );
    }
}
