//! Scenario 8, a warm runner with a cold page cache: the runner's
//! workspace already holds the corpus's base tree (it attached the layer,
//! then persisted the tree as a job's output would be), the page cache is
//! dropped, and the layer is attached over it again: with the runner's stat
//! cache, without it (`--no-stat-cache`: every file read and hashed), and,
//! as the baseline, the tar.zst extracted over a copy of the same tree.
//! Issue 15's target: the first at most 0.3x the last, at 10^5 and 10^6
//! files. Dropping the page cache needs root (`/proc/sys/vm/drop_caches`);
//! without it the scenario refuses rather than time a warm cache.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::corpus::Corpus;
use crate::measure::{run, tree_bytes, Sample};
use crate::report::count_files;

/// One round of the three attaches, each after the page cache was dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    /// strata attach over the workspace, trusting the stat cache.
    pub stat_cache: Sample,
    /// The same with `--no-stat-cache`.
    pub no_stat_cache: Sample,
    /// `zstd -dc | tar -x` over a copy of the same tree.
    pub tar: Sample,
    /// Files the stat-cache attach did not read (from its JSON).
    pub files_unchanged: u64,
}

/// Every round, and what the tree was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cold {
    pub corpus: String,
    pub files: u64,
    pub bytes: u64,
    pub rounds: Vec<Round>,
}

/// Empties the page cache (and the dentry and inode caches), after
/// writing back what is dirty, so a timed step reads from the disk.
fn drop_caches() -> Result<()> {
    run("sync", Path::new("/"), &[])?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context(
        "scenario 8 drops the page cache through /proc/sys/vm/drop_caches, which needs root",
    )
}

/// Runs scenario 8 `runs` times on the corpus's base tree.
pub fn run_cold(bin: &Path, corpus: &Corpus, runs: usize, work: &Path) -> Result<Cold> {
    drop_caches()?;
    let q = |p: &Path| format!("'{}'", p.display());
    let store = work.join("store");
    let cache = work.join("runner-cache");
    let strata = format!(
        "{} --store {} --cache-dir {} --json --progress none",
        q(bin),
        q(&store),
        q(&cache)
    );
    let parent = corpus.base.parent().context("the tree has no parent")?;
    let name = corpus
        .base
        .file_name()
        .context("the tree has no name")?
        .to_string_lossy()
        .into_owned();
    let ws = work.join("workspace");
    let persist = |run_name: &str, dir: &Path| {
        let script = format!("{strata} persist --run {run_name} --job a --root . '{name}'");
        run(&script, dir, &[])
    };
    let attach = |flags: &str| format!("{strata} {flags} attach --run r1 --job b --at {}", q(&ws));
    // The layer, and a workspace that attached it and persisted it again.
    for create in ["--run r1 --job a --job b:a", "--run r2 --job a"] {
        run(&format!("{strata} run create {create}"), work, &[])?;
    }
    persist("r1", parent)?;
    run(&attach(""), work, &[])?;
    // A job runs between its attach and its persist: past the stat
    // cache's racy margin (100 ms), so the files just written are recorded.
    std::thread::sleep(std::time::Duration::from_millis(500));
    persist("r2", &ws)?;
    // The baseline's archive, and its own copy of the tree to extract over.
    let archive = work.join("base.tar.zst");
    run(
        &format!("tar -cf - '{name}' | zstd -3 -T0 -q > {}", q(&archive)),
        parent,
        &[],
    )?;
    let checkout = work.join("checkout");
    std::fs::create_dir_all(&checkout)?;
    let extract = format!("zstd -dc {} | tar -xf -", q(&archive));
    run(&extract, &checkout, &[])?;

    let mut rounds = Vec::new();
    for _ in 0..runs {
        drop_caches()?;
        let (stat_cache, out) = run(&attach(""), work, &[])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("strata attach printed {out:?}"))?;
        drop_caches()?;
        let (no_stat_cache, _) = run(&attach("--no-stat-cache"), work, &[])?;
        drop_caches()?;
        let (tar, _) = run(&extract, &checkout, &[])?;
        rounds.push(Round {
            stat_cache,
            no_stat_cache,
            tar,
            files_unchanged: v["files_unchanged"].as_u64().unwrap_or(0),
        });
    }
    Ok(Cold {
        corpus: corpus.name.clone(),
        files: count_files(&corpus.base),
        bytes: tree_bytes(&corpus.base, &[]),
        rounds,
    })
}

/// The report: each round's three times, and the target's ratio.
pub fn markdown(c: &Cold) -> String {
    let mut out = format!(
        "## 8. A warm runner with a cold page cache ({}: {} files, {:.1} MB)\n\n\
         | round | strata, stat cache (s) | files not read | peak RSS | `--no-stat-cache` (s) | extracting the tar.zst (s) | strata / tar |\n\
         |---|---|---|---|---|---|---|\n",
        c.corpus,
        c.files,
        c.bytes as f64 / 1e6
    );
    for (i, r) in c.rounds.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.2} | {} | {} MiB | {:.2} | {:.2} | {:.2}x |\n",
            i + 1,
            r.stat_cache.wall_s,
            r.files_unchanged,
            r.stat_cache.peak_rss_bytes >> 20,
            r.no_stat_cache.wall_s,
            r.tar.wall_s,
            r.stat_cache.wall_s / r.tar.wall_s.max(1e-9)
        ));
    }
    out.push_str("\nTarget (issue 15): strata with its stat cache at most 0.3x the tar.\n");
    out
}
