//! `strata attach`: the merged layers of a job's upstream jobs written
//! into a directory.

use anyhow::Result;
use strata_store::attach::{self, AttachReport};

use crate::args::{AttachArgs, Cli};
use crate::context::open_for_run;
use crate::output::{
    bytes, count, plural, print_json, skipped, step_summary, unchanged, wire, LogGroup,
};

pub(crate) fn exec(cli: &Cli, a: &AttachArgs) -> Result<()> {
    let store = open_for_run(cli, &a.rj)?;
    let (run, job, ci) = a.rj.resolve(&store)?;
    let _group = LogGroup::open(ci.as_ref(), &format!("strata attach {run}/{job}"));
    let report = attach::attach(
        &store,
        &attach::AttachRequest {
            run,
            job,
            at: a.at.clone(),
            keep_setuid: a.keep_setuid,
            only: a.only.paths.clone(),
        },
    )?;
    attached(cli.json, &report);
    Ok(())
}

pub(crate) fn attach_line(r: &AttachReport) -> String {
    let mut jobs: Vec<&str> = r.layers.iter().map(|l| l.job.as_str()).collect();
    jobs.dedup();
    let from = if jobs.is_empty() {
        "no upstream layers".to_string()
    } else {
        format!(
            "{} ({})",
            plural(r.layers.len() as u64, "layer"),
            jobs.join(", ")
        )
    };
    let cached = if r.write.bytes_from_cache > 0 {
        format!(
            ", {} from the runner's cache",
            bytes(r.write.bytes_from_cache)
        )
    } else {
        String::new()
    };
    format!(
        "attached {} ({}) from {from} in {:.1} s: {} read from the store{cached}, {} already in place{}{}{}",
        plural(r.files, "file"),
        bytes(r.bytes),
        r.seconds,
        bytes(r.write.bytes_from_store + r.manifest_bytes_from_store),
        plural(r.write.files_in_place, "file"),
        unchanged(r.write.files_unchanged),
        skipped(&r.only, &r.skipped),
        wire(&r.network)
    )
}

pub(crate) fn attached(json: bool, r: &AttachReport) {
    step_summary(
        "attach",
        &[
            ("run / job", format!("{} / {}", r.run, r.job)),
            ("layers", count(r.layers.len() as u64)),
            ("files", count(r.files)),
            ("bytes", bytes(r.bytes)),
            (
                "from the store",
                bytes(r.write.bytes_from_store + r.manifest_bytes_from_store),
            ),
            ("received", bytes(r.network.received)),
            ("time", format!("{:.1} s", r.seconds)),
        ],
    );
    if json {
        print_json(r);
    } else {
        println!("{}", attach_line(r));
    }
}
