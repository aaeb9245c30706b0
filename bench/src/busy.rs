//! Scenario 7, a busy runner: N jobs on one machine and one local store at
//! once (a runner with several executors), a mix of persists and attaches,
//! against the same jobs one after another. Each job's latency alone and
//! in the crowd, the total, and the one the issue names: a small attach
//! started during a large persist. docs/benchmarks.md has the numbers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::corpus::Corpus;
use crate::measure::{run, Sample};

/// One job of the mix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// What it does: `persist large`, `attach small`, ...
    pub what: String,
    /// Alone, one after another.
    pub alone: Sample,
    /// With the others at once.
    pub together: Sample,
}

/// One crowd size's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crowd {
    pub jobs: Vec<Job>,
    /// The jobs one after another: the sum of their times.
    pub sequential_s: f64,
    /// The jobs at once: from the first start to the last end.
    pub concurrent_s: f64,
    /// Opening a metadata slot for the first time (its index rebuilt from
    /// the objects), per slot: paid once per slot on a runner, before the
    /// jobs at once are timed.
    pub cold_slot_s: f64,
}

/// Every crowd size measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Busy {
    pub corpus: String,
    pub crowds: Vec<Crowd>,
}

/// How long after the large persist the small attach starts.
const SMALL_DELAY: Duration = Duration::from_millis(300);

/// What a job runs: its shell command, in its directory.
#[derive(Debug, Clone)]
struct Command {
    what: String,
    script: String,
    dir: PathBuf,
    delay: Duration,
}

/// The jobs of a crowd of `n`, round `round` (fresh runs and targets): a
/// large persist of new content (`large`), a small attach started during
/// it, then alternately an attach of the corpus's base layer and a persist
/// of a medium tree of its own.
fn jobs(
    bin: &Path,
    store: &Path,
    large: &Path,
    medium: &[PathBuf],
    n: usize,
    round: &str,
    work: &Path,
) -> Vec<Command> {
    let s = |p: &Path| format!("'{}'", p.display());
    let strata = format!("{} --store {} --json --progress none", s(bin), s(store));
    let persist = |run: &str, tree: &Path| {
        let parent = tree.parent().expect("trees have a parent").to_path_buf();
        let name = tree
            .file_name()
            .expect("trees have a name")
            .to_string_lossy()
            .into_owned();
        (
            format!("{strata} run create --run {run} --job a >/dev/null && {strata} persist --run {run} --job a --root . '{name}'"),
            parent,
        )
    };
    let attach =
        |job: &str, at: PathBuf| format!("{strata} attach --run pre --job {job} --at {}", s(&at));
    let (large, dir) = persist(&format!("large-{round}"), large);
    let mut out = vec![
        Command {
            what: "persist large".into(),
            script: large,
            dir,
            delay: Duration::ZERO,
        },
        Command {
            what: "attach small".into(),
            script: attach("small-down", work.join(format!("small-{round}"))),
            dir: work.to_path_buf(),
            delay: SMALL_DELAY,
        },
    ];
    for (i, tree) in medium.iter().enumerate().take(n).skip(2) {
        if i % 2 == 0 {
            out.push(Command {
                what: "attach base".into(),
                script: attach("base-down", work.join(format!("base-{round}-{i}"))),
                dir: work.to_path_buf(),
                delay: Duration::ZERO,
            });
        } else {
            let (script, dir) = persist(&format!("medium-{round}-{i}"), tree);
            out.push(Command {
                what: "persist medium".into(),
                script,
                dir,
                delay: Duration::ZERO,
            });
        }
    }
    out
}

/// Makes `store` hold the layers the attaches read: run `pre` with the
/// corpus's base tree and a small tree.
fn seed(bin: &Path, store: &Path, corpus: &Corpus, small: &Path, work: &Path) -> Result<()> {
    let strata = format!("'{}' --store '{}'", bin.display(), store.display());
    run(
        &format!("{strata} run create --run pre --job base --job base-down:base --job small --job small-down:small"),
        work,
        &[],
    )?;
    let parent = corpus.base.parent().expect("a parent");
    let name = corpus
        .base
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    run(
        &format!("{strata} persist --run pre --job base --root . '{name}'"),
        parent,
        &[],
    )?;
    run(
        &format!("{strata} persist --run pre --job small --root . node_modules"),
        small,
        &[],
    )?;
    Ok(())
}

/// Opens `n` processes' worth of metadata slots of `store` at once, so
/// each holds the store's index, as on a runner that has been busy a
/// while; returns the time per slot. A slot's first use (its index
/// rebuilt from the objects) is a one-time cost, reported on its own.
fn warm_slots(store: &Path, n: usize) -> Result<f64> {
    let started = Instant::now();
    let open: Vec<strata_store::Store> = (0..n)
        .map(|_| strata_store::Store::open(store, &strata_store::Quiet))
        .collect::<strata_store::Result<_>>()?;
    let took = started.elapsed().as_secs_f64();
    drop(open);
    Ok(took / n.max(1) as f64)
}

/// Runs scenario 7 for each crowd size in `sizes`. Alone and at once each
/// run on a store of their own, seeded alike, so neither finds the
/// other's chunks stored.
pub fn run_busy(bin: &Path, corpus: &Corpus, sizes: &[usize], work: &Path) -> Result<Busy> {
    let most = sizes.iter().copied().max().unwrap_or(4);
    // Medium trees (2000 files each, different seeds) and a small one.
    let mut medium = Vec::new();
    for i in 0..most {
        let root = work.join(format!("medium-{i}"));
        strata_store::synth::generate(&root, 2000, 100 + i as u64)?;
        medium.push(root.join("node_modules"));
    }
    let small = work.join("small");
    strata_store::synth::generate(&small, 100, 7)?;
    // New content for the large persist (about 150 MiB), in no store yet.
    let large = work.join("large");
    strata_store::synth::generate(&large, 20_000, 5)?;
    let large = large.join("node_modules");

    let mut crowds = Vec::new();
    for &n in sizes {
        // Alone: one after another.
        let store = work.join(format!("store-{n}-alone"));
        seed(bin, &store, corpus, &small, work)?;
        let mut alone = Vec::new();
        for c in jobs(bin, &store, &large, &medium, n, &format!("{n}-alone"), work) {
            alone.push(run(&c.script, &c.dir, &[])?.0);
        }
        // Together: all at once (the small attach a moment later).
        let store = work.join(format!("store-{n}-together"));
        seed(bin, &store, corpus, &small, work)?;
        let cold_slot_s = warm_slots(&store, n)?;
        let commands = jobs(
            bin,
            &store,
            &large,
            &medium,
            n,
            &format!("{n}-together"),
            work,
        );
        let started = Instant::now();
        let together: Vec<Result<(Sample, Instant)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = commands
                .iter()
                .map(|c| {
                    scope.spawn(move || {
                        std::thread::sleep(c.delay);
                        let (sample, _) = run(&c.script, &c.dir, &[])?;
                        Ok((sample, Instant::now()))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a job thread panicked"))
                .collect()
        });
        let mut jobs_out = Vec::new();
        let mut last_end = started;
        for ((c, alone), together) in commands.iter().zip(alone).zip(together) {
            let (sample, ended) = together?;
            last_end = last_end.max(ended);
            jobs_out.push(Job {
                what: c.what.clone(),
                alone,
                together: sample,
            });
        }
        crowds.push(Crowd {
            sequential_s: jobs_out.iter().map(|j| j.alone.wall_s).sum(),
            concurrent_s: last_end.duration_since(started).as_secs_f64(),
            cold_slot_s,
            jobs: jobs_out,
        });
    }
    Ok(Busy {
        corpus: corpus.name.clone(),
        crowds,
    })
}

/// The report: per crowd, each job alone and together.
pub fn markdown(b: &Busy) -> String {
    let mut out = format!(
        "## Busy runner: jobs on one local store at once ({})\n\n",
        b.corpus
    );
    for c in &b.crowds {
        out.push_str(&format!(
            "### {} jobs: one after another {:.2} s, at once {:.2} s (a slot's first use: {:.2} s)\n\n",
            c.jobs.len(),
            c.sequential_s,
            c.concurrent_s,
            c.cold_slot_s
        ));
        out.push_str("| job | alone (s) | at once (s) | ratio |\n|---|---|---|---|\n");
        for j in &c.jobs {
            out.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2}x |\n",
                j.what,
                j.alone.wall_s,
                j.together.wall_s,
                j.together.wall_s / j.alone.wall_s.max(1e-9)
            ));
        }
        out.push('\n');
    }
    out
}
