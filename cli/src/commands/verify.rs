//! `strata verify`: the store's objects checked; exit 1 on any problem.

use anyhow::Result;
use strata_store::verify::{self, VerifyReport};

use crate::args::{Cli, VerifyArgs};
use crate::context::open;
use crate::output::{bytes, count, plural, print_json};

pub(crate) fn exec(cli: &Cli, a: &VerifyArgs) -> Result<()> {
    let store = open(cli)?;
    let report = verify::verify(&store, a.read_data)?;
    verified(cli.json, &report);
    if !report.problems.is_empty() {
        anyhow::bail!("the store has {} problem(s)", report.problems.len());
    }
    Ok(())
}

pub(crate) fn verified(json: bool, r: &VerifyReport) {
    if json {
        return print_json(r);
    }
    for p in &r.problems {
        let affects = if p.affects.is_empty() {
            String::new()
        } else {
            format!(" (affects {})", p.affects.join(", "))
        };
        println!("problem: {}: {}{affects}", p.object, p.detail);
    }
    println!(
        "verified {} index objects, {} packs{}, {} chunks, {} runs, {}: {}",
        count(r.index_objects),
        count(r.packs),
        if r.bytes_read > 0 {
            format!(" ({} read)", bytes(r.bytes_read))
        } else {
            String::new()
        },
        count(r.chunks),
        count(r.runs),
        plural(r.layers, "layer"),
        if r.problems.is_empty() {
            "no problems".to_string()
        } else {
            plural(r.problems.len() as u64, "problem")
        }
    );
}
