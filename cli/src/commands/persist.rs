//! `strata persist`: paths saved as a new layer of a job.

use anyhow::Result;
use strata_store::persist::{self, PersistReport};

use crate::args::{Cli, PersistArgs};
use crate::context::open_for_run;
use crate::output::{
    bytes, count, percent, plural, print_json, step_summary, unchanged, wire, LogGroup,
};

pub(crate) fn exec(cli: &Cli, a: &PersistArgs) -> Result<()> {
    let store = open_for_run(cli, &a.rj)?;
    let (run, job, ci) = a.rj.resolve(&store)?;
    let writer = ci.as_ref().map(|ci| ci.writer());
    let _group = LogGroup::open(ci.as_ref(), &format!("strata persist {run}/{job}"));
    let report = persist::persist(
        &store,
        &persist::PersistRequest {
            run,
            job,
            root: a.root.clone(),
            paths: a.paths.clone(),
            allow_empty: a.allow_empty,
            writer,
        },
    )?;
    persisted(cli.json, &report);
    Ok(())
}

pub(crate) fn persist_line(r: &PersistReport) -> String {
    format!(
        "persisted {} ({}) in {:.1} s: {} new, {:.1}% reused{}{}",
        plural(r.totals.files, "file"),
        bytes(r.totals.bytes),
        r.seconds,
        bytes(r.bytes_new),
        percent(r.bytes_reused, r.totals.bytes),
        unchanged(r.files_unchanged),
        wire(&r.network)
    )
}

pub(crate) fn persisted(json: bool, r: &PersistReport) {
    if json {
        print_json(r);
    } else {
        println!("{}", persist_line(r));
    }
    step_summary(
        "persist",
        &[
            ("run / job", format!("{} / {}", r.run, r.job)),
            ("files", count(r.totals.files)),
            ("bytes", bytes(r.totals.bytes)),
            (
                "new",
                format!(
                    "{} ({:.1}%)",
                    bytes(r.bytes_new),
                    100.0 - percent(r.bytes_reused, r.totals.bytes)
                ),
            ),
            ("sent", bytes(r.network.sent)),
            ("received", bytes(r.network.received)),
            ("time", format!("{:.1} s", r.seconds)),
        ],
    );
}
