//! `strata bench`: the benchmark of docs/benchmarks.md on the user's own
//! trees, run by the `strata_bench` library the harness uses: strata (this
//! binary) against `tar | zstd`, and restic, borg and casync when
//! installed; scenarios 1 to 5, and the store over several runs when
//! several trees are given. A Markdown report (or JSON) on stdout, an SVG
//! chart with `--svg`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use strata_bench::report::{self, Results};
use strata_bench::series::{self, Series};
use strata_bench::tools::{self, Strata, Tarball, Tool};
use strata_bench::{compare, corpus};

use crate::args::{BenchArgs, Cli};
use crate::output::print_json;

/// What `--json` prints.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    results: &'a Results,
    /// The store over the runs, with several `--next`.
    series: Option<&'a Series>,
    /// The scratch space, when kept.
    work: Option<&'a PathBuf>,
}

pub(crate) fn exec(cli: &Cli, a: &BenchArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let next = a.next.first().unwrap_or(&a.path);
    let corpus = corpus::from_dirs(&a.path, next)?;
    let tools = compared()?;
    let work = match &a.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("strata-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let method = compare::Method {
        runs: a.runs,
        warmup: true,
        ten_runs: true,
        link: None,
    };
    let measured = compare::run(&method, &corpus, &tools, &work).and_then(|results| {
        let series = match a.next.len() {
            0 | 1 => None,
            _ => {
                let mut trees = vec![corpus.base.clone()];
                for t in &a.next {
                    trees.push(std::fs::canonicalize(t)?);
                }
                Some(series::run(&trees, &tools, &work)?)
            }
        };
        Ok((results, series))
    });
    if !a.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    let (results, series) = measured?;
    if let Some(svg) = &a.svg {
        report::svg(&results, svg)?;
        if let Some(s) = &series {
            series::svg(s, &svg.with_file_name(runs_svg_name(svg)))?;
        }
    }
    if cli.json {
        print_json(&Report {
            results: &results,
            series: series.as_ref(),
            work: a.keep_work.then_some(&work),
        });
    } else {
        print!("{}", report::markdown(&results));
        if let Some(s) = &series {
            print!("{}", series::markdown(s));
        }
    }
    Ok(())
}

/// strata (this very binary) and what CI users run today: one `tar | zstd`
/// per run (the GitHub Actions cache's), and restic, borg and casync where
/// they are installed.
fn compared() -> Result<Vec<Box<dyn Tool>>> {
    if !tools::available("zstd") {
        bail!("zstd is not installed: strata bench compares against tar | zstd");
    }
    let mut all: Vec<Box<dyn Tool>> = vec![
        Box::new(Strata {
            bin: std::env::current_exe().context("finding the strata binary")?,
        }),
        Box::new(Tarball::zstd()),
    ];
    all.extend(tools::installed_baselines(&mut |program| {
        eprintln!("strata bench: {program} is not installed; leaving it out")
    }));
    Ok(all)
}

/// `chart.svg` -> `chart-runs.svg`.
fn runs_svg_name(svg: &std::path::Path) -> String {
    let stem = svg.file_stem().unwrap_or_default().to_string_lossy();
    format!("{stem}-runs.svg")
}
