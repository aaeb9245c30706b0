//! Scenarios 1 to 5 of docs/benchmarks.md on one pair of trees: each tool
//! persists base then next into its own repository, attaches base on a
//! fresh runner and next over it, `runs` times after a warm-up, the tools
//! interleaved step by step; then ten successive runs with churn. The
//! harness (`strata-bench`) and `strata bench` both run it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::corpus::Corpus;
use crate::measure;
use crate::report::{Record, Results, Scenario};
use crate::tools::{self, Tool};
use crate::wire::Link;

/// How the scenarios are run.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// Measured runs per scenario.
    pub runs: usize,
    /// One unmeasured run first.
    pub warmup: bool,
    /// Scenario 5 (ten successive runs with churn).
    pub ten_runs: bool,
    /// The link between the networked tools and their servers, if any.
    pub link: Option<Link>,
}

/// One round of scenarios 1 to 4 for every tool, interleaved: each step
/// runs for every tool before the next step. `dir` names a tool's
/// directories, `record` takes each measurement; returns the reference of
/// scenario 2, one full read of the next tree.
fn one_round(
    corpus: &Corpus,
    tools: &[Box<dyn Tool>],
    dir: &dyn Fn(&dyn Tool, &str) -> PathBuf,
    record: &mut dyn FnMut(Scenario, &dyn Tool, Record),
) -> Result<Record> {
    for t in tools {
        t.init(&dir(t.as_ref(), "repo"))?;
    }
    for t in tools {
        let repo = dir(t.as_ref(), "repo");
        let step = t.persist(&repo, &corpus.base, 1)?;
        record(
            Scenario::PersistFirst,
            t.as_ref(),
            Record::new(step, Some(t.repo_bytes(&repo))),
        );
    }
    for t in tools {
        let repo = dir(t.as_ref(), "repo");
        let before = t.repo_bytes(&repo);
        let step = t.persist(&repo, &corpus.next, 2)?;
        let growth = t.repo_bytes(&repo) - before;
        record(
            Scenario::PersistNext,
            t.as_ref(),
            Record::new(step, Some(growth)),
        );
    }
    let (sample, _) = measure::run("tar -cf - . | cat > /dev/null", &corpus.next, &[])?;
    let read = Record::new(
        tools::Step {
            sample,
            network_bytes: None,
            content_bytes: None,
        },
        None,
    );
    for t in tools {
        let step = t.attach(&dir(t.as_ref(), "repo"), 1, &dir(t.as_ref(), "fresh"))?;
        record(Scenario::AttachFresh, t.as_ref(), Record::new(step, None));
    }
    for t in tools {
        let target = if t.reuses_target() {
            dir(t.as_ref(), "fresh")
        } else {
            dir(t.as_ref(), "next")
        };
        let step = t.attach(&dir(t.as_ref(), "repo"), 2, &target)?;
        record(Scenario::AttachWarm, t.as_ref(), Record::new(step, None));
    }
    Ok(read)
}

/// Runs scenarios 1 to 5 for `tools` on `corpus`, in `work`.
pub fn run(
    method: &Method,
    corpus: &Corpus,
    tools: &[Box<dyn Tool>],
    work: &Path,
) -> Result<Results> {
    // Read both trees once so every tool starts from a warm page cache.
    for tree in [&corpus.base, &corpus.next] {
        measure::run("tar -cf - . | cat > /dev/null", tree, &[])?;
    }
    let mut results = Results::new(corpus, method.runs);
    results.link = method.link;
    let mut reads = Vec::new();
    let warmups = usize::from(method.warmup);
    for r in 0..warmups + method.runs {
        let measured = r >= warmups;
        let label = if measured {
            format!("run {}", r - warmups + 1)
        } else {
            "warm-up".into()
        };
        eprintln!("strata-bench: {label} of {}", method.runs);
        let dir = |t: &dyn Tool, what: &str| {
            work.join(format!("r{r}/{}/{what}", t.name().replace('|', "-")))
        };
        let mut record = |s: Scenario, t: &dyn Tool, rec: Record| {
            if measured {
                results.add(s, t.name(), rec);
            }
        };
        let read = one_round(corpus, tools, &dir, &mut record)?;
        if measured {
            reads.push(read);
        }
    }
    for rec in reads {
        results.add(Scenario::PersistNext, "read tree", rec);
    }
    if method.ten_runs {
        eprintln!("strata-bench: ten successive runs with churn");
        ten_runs(corpus, tools, work, &mut results)?;
    }
    Ok(results)
}

/// Scenario 5: persist base, next, then eight more runs that each change 1%
/// of the next tree's files; report each repository's size at the end
/// (`work/ten/<tool>`, untouched after).
fn ten_runs(
    corpus: &Corpus,
    tools: &[Box<dyn Tool>],
    work: &Path,
    results: &mut Results,
) -> Result<()> {
    let name = corpus.next.file_name().context("tree has no name")?;
    let tree = work.join("ten/tree").join(name);
    std::fs::create_dir_all(tree.parent().expect("has parent"))?;
    measure::run(
        &format!("cp -a '{}' '{}'", corpus.next.display(), tree.display()),
        work,
        &[],
    )?;
    let repo = |t: &dyn Tool| work.join(format!("ten/{}", t.name().replace('|', "-")));
    for t in tools {
        t.init(&repo(t.as_ref()))?;
        t.persist(&repo(t.as_ref()), &corpus.base, 1)?;
        t.persist(&repo(t.as_ref()), &corpus.next, 2)?;
    }
    for n in 3..=10 {
        strata_store::synth::mutate(&tree, 0.01, n as u64)?;
        for t in tools {
            t.persist(&repo(t.as_ref()), &tree, n)?;
        }
    }
    for t in tools {
        let size = t.repo_bytes(&repo(t.as_ref()));
        results.add(Scenario::TenRuns, t.name(), Record::size_only(size));
    }
    Ok(())
}
