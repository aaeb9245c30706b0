//! Scenario 6, past one server: N `strata serve` replicas over one bucket
//! (a Garage node on loopback) with M clients persisting and attaching at
//! once, against one replica; and what opening a store costs, in requests
//! and seconds, as it grows to 10^3, 10^4, 10^5 packs (format 2, and
//! format 1 for comparison). docs/benchmarks.md has the numbers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use strata_store::backend::Backend;
use strata_store::format::config::StoreConfig;
use strata_store::format::index::{IndexObject, IndexedPack};
use strata_store::format::keys::{index_key, index_log_key, pack_key, snapshot_key, CONFIG_KEY};
use strata_store::format::pack::{FrameBuilder, PackBuilder};
use strata_store::testing::garage::Garage;
use strata_store::{ChunkId, OpenOptions, Quiet, Store, StoreLocation};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Replicas of the multi-replica run (compared with one).
    pub replicas: usize,
    /// Clients at once.
    pub clients: usize,
    /// Files of the generated tree each client persists.
    pub files: u64,
    /// Store sizes, in packs, whose open cost is measured.
    pub open_packs: Vec<u64>,
}

/// One throughput run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub replicas: usize,
    pub clients: usize,
    /// Bytes of one client's tree.
    pub tree_bytes: u64,
    /// Wall seconds for all clients' persists, and attaches (fresh).
    pub persist_s: f64,
    pub attach_s: f64,
}

impl Throughput {
    fn mib_s(&self, secs: f64) -> f64 {
        (self.tree_bytes * self.clients as u64) as f64 / (1 << 20) as f64 / secs
    }
}

/// The cost of opening a store of `packs` packs with a cold cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenCost {
    pub packs: u64,
    pub format: u32,
    pub requests: u64,
    pub seconds: f64,
}

/// Everything scenario 6 measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleResults {
    pub throughput: Vec<Throughput>,
    pub open: Vec<OpenCost>,
}

/// Runs scenario 6 with the strata binary `bin`, scratch space in `work`.
pub fn run(scale: &Scale, bin: &Path, work: &Path) -> Result<ScaleResults> {
    let garage = Garage::start();
    for (k, v) in garage.env() {
        // The library's S3 client (open cost) reads these; the bench is
        // one process with one Garage.
        std::env::set_var(k, v);
    }
    let mut results = ScaleResults {
        throughput: Vec::new(),
        open: Vec::new(),
    };
    let trees =
        crate::corpus::next_run_trees(&work.join("scale"), "client", scale.clients, scale.files)?;
    let mut counts = vec![1, scale.replicas];
    counts.dedup();
    for replicas in counts {
        eprintln!(
            "strata-bench: {replicas} replica(s), {} clients",
            scale.clients
        );
        results
            .throughput
            .push(throughput(&garage, bin, work, &trees, replicas)?);
    }
    for &packs in &scale.open_packs {
        for format in [2, 1] {
            // Format 1 reads every index object: at 10^5 that is minutes
            // of GETs, which the 10^4 row already shows.
            if format == 1 && packs > 10_000 {
                continue;
            }
            eprintln!("strata-bench: open cost, {packs} packs, format {format}");
            results.open.push(open_cost(&garage, work, packs, format)?);
        }
    }
    Ok(results)
}

/// A `strata serve` over `store`, and its URL.
struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_replica(bin: &Path, store: &str, meta: &Path, garage: &Garage) -> Result<Replica> {
    let mut cmd = Command::new(bin);
    cmd.arg("--store")
        .arg(store)
        .arg("--cache-dir")
        .arg(meta)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--resync-every",
            "1s",
        ])
        .envs(garage.env());
    let (child, url) = crate::tools::start_server(cmd)?;
    Ok(Replica { child, url })
}

/// Runs `strata` with `args`; fails with its stderr.
fn strata(bin: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(bin).args(args).output()?;
    if !out.status.success() {
        bail!(
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Every client persists its tree through replica `i % replicas`, all at
/// once (timed), after the base was persisted; then every client attaches
/// its layer fresh through the next replica, all at once (timed).
fn throughput(
    garage: &Garage,
    bin: &Path,
    work: &Path,
    (base, trees, tree_bytes): &(PathBuf, Vec<PathBuf>, u64),
    replicas: usize,
) -> Result<Throughput> {
    let root = work.join(format!("scale/r{replicas}"));
    let store = garage.location(&format!("scale-r{replicas}"));
    let servers: Vec<Replica> = (0..replicas)
        .map(|i| start_replica(bin, &store, &root.join(format!("meta{i}")), garage))
        .collect::<Result<_>>()?;
    let ns = |i: usize| format!("{}/bench", servers[i % replicas].url);
    let cache = |i: usize| root.join(format!("cache{i}"));
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    set_up(bin, &ns, &cache(999), base, trees.len())?;
    // Past the replicas' resync interval: each knows the base's chunks.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let all = |step: &(dyn Fn(usize) -> Result<()> + Sync)| at_once(trees.len(), step);
    let persist_s = all(&|i| {
        let tree = &trees[i];
        strata(
            bin,
            &[
                "--store",
                &ns(i),
                "--cache-dir",
                &s(&cache(i)),
                "persist",
                "--run",
                &format!("c{i}"),
                "--job",
                "a",
                "--root",
                &s(tree.parent().expect("has parent")),
                "tree",
            ],
        )
    })?;
    let attach_s = all(&|i| {
        strata(
            bin,
            &[
                "--store",
                &ns(i + 1),
                "--cache-dir",
                &s(&cache(i + 1000)),
                "attach",
                "--run",
                &format!("c{i}"),
                "--job",
                "b",
                "--at",
                &s(&root.join(format!("at{i}"))),
            ],
        )
    })?;
    Ok(Throughput {
        replicas,
        clients: trees.len(),
        tree_bytes: *tree_bytes,
        persist_s,
        attach_s,
    })
}

/// Run `base` with `base` persisted by job a (through replica 0, runner
/// cache `cache`), and runs `c0`..`c<clients>` created.
fn set_up(
    bin: &Path,
    ns: &dyn Fn(usize) -> String,
    cache: &Path,
    base: &Path,
    clients: usize,
) -> Result<()> {
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let create = |i: usize, run: &str| {
        strata(
            bin,
            &[
                "--store",
                &ns(i),
                "run",
                "create",
                "--run",
                run,
                "--job",
                "a",
                "--job",
                "b:a",
            ],
        )
    };
    create(0, "base")?;
    strata(
        bin,
        &[
            "--store",
            &ns(0),
            "--cache-dir",
            &s(cache),
            "persist",
            "--run",
            "base",
            "--job",
            "a",
            "--root",
            &s(base.parent().expect("has parent")),
            "tree",
        ],
    )?;
    for i in 0..clients {
        create(i, &format!("c{i}"))?;
    }
    Ok(())
}

/// Runs `step` for clients 0..`n` all at once; the seconds until the last
/// ended.
fn at_once(n: usize, step: &(dyn Fn(usize) -> Result<()> + Sync)) -> Result<f64> {
    let started = Instant::now();
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n).map(|i| sc.spawn(move || step(i))).collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("client panicked"))
    })?;
    Ok(started.elapsed().as_secs_f64())
}

/// Fills `s3://…/open-<packs>-f<format>` with `packs` packs of one chunk
/// each, as persists would, then opens it with a cold cache and counts.
/// Format 2: the packs as the last gc left them (one snapshot listing
/// them all) plus ten persists since; format 1: one index object per
/// persist.
fn open_cost(garage: &Garage, work: &Path, packs: u64, format: u32) -> Result<OpenCost> {
    let location = StoreLocation::S3(garage.location(&format!("open-{packs}-f{format}")));
    let options = |dir: &str| OpenOptions {
        cache_dir: Some(work.join(format!("scale/open-{packs}-f{format}/{dir}"))),
        cache_bytes: Some(0),
        ..OpenOptions::default()
    };
    let writer = Store::open_at(&location, &options("writer"), &Quiet)?;
    let b: Arc<dyn Backend> = writer.backend_arc();
    let mut config = StoreConfig::new(format!("open-cost-{packs}"));
    config.format = format;
    b.put(CONFIG_KEY, &config.encode())?;
    let now = writer.now();
    // Written 32 at a time: a bucket of 10^5 objects fills in minutes.
    let threads = 32u64;
    let written: Vec<IndexedPack> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let b = b.clone();
                sc.spawn(move || -> Result<Vec<IndexedPack>> {
                    let mut out = Vec::new();
                    for i in (t..packs).step_by(threads as usize) {
                        let indexed = one_pack(b.as_ref(), i)?;
                        if format == 1 {
                            let (id, bytes) = IndexObject {
                                packs: vec![indexed.clone()],
                            }
                            .encode();
                            b.put(&index_key(&id), &bytes)?;
                        }
                        out.push(indexed);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer panicked"))
            .collect::<Result<Vec<_>>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    if format == 2 {
        let (id, bytes) = IndexObject { packs: written }.encode();
        b.put(&snapshot_key(&id, now - 600), &bytes)?;
        for i in 0..10 {
            let indexed = one_pack(b.as_ref(), packs + i)?;
            let (id, bytes) = IndexObject {
                packs: vec![indexed],
            }
            .encode();
            b.put(&index_log_key(&id, now), &bytes)?;
        }
    }
    drop(writer);
    let started = Instant::now();
    let reader = Store::open_at(&location, &options("reader"), &Quiet)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(OpenCost {
        packs,
        format,
        requests: reader.traffic().requests,
        seconds,
    })
}

/// Writes pack `i`: one frame of one small chunk.
fn one_pack(b: &dyn Backend, i: u64) -> Result<IndexedPack> {
    let bytes = format!("open-cost chunk {i}").into_bytes();
    let mut frame = FrameBuilder::default();
    frame.push(ChunkId::of(&bytes), &bytes);
    let mut compressor = zstd::bulk::Compressor::new(1)?;
    let mut pack = PackBuilder::new();
    pack.push(frame.seal(&mut compressor));
    let (id, pack_bytes, frames) = pack.finish();
    b.put(&pack_key(&id), &pack_bytes)?;
    Ok(IndexedPack { pack: id, frames })
}

/// The report of scenario 6, as markdown.
pub fn markdown(r: &ScaleResults) -> String {
    let mut s = String::from(
        "## Scenario 6: replicas over one bucket\n\n\
         | replicas | clients | persist: s, MiB/s, layers/s | attach fresh: s, MiB/s, layers/s |\n\
         |---|---|---|---|\n",
    );
    for t in &r.throughput {
        s.push_str(&format!(
            "| {} | {} | {:.2} s, {:.1} MiB/s, {:.1}/s | {:.2} s, {:.1} MiB/s, {:.1}/s |\n",
            t.replicas,
            t.clients,
            t.persist_s,
            t.mib_s(t.persist_s),
            t.clients as f64 / t.persist_s,
            t.attach_s,
            t.mib_s(t.attach_s),
            t.clients as f64 / t.attach_s,
        ));
    }
    s.push_str("\n## Opening a store (cold cache)\n\n| packs | format | requests | seconds |\n|---|---|---|---|\n");
    for o in &r.open {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} |\n",
            o.packs, o.format, o.requests, o.seconds
        ));
    }
    s
}
