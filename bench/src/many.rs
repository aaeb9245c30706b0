//! Scenario 10, one server for many runners (issue 31, item 2): N runners
//! persisting their own next-run trees through one `strata serve` at
//! once, then N fresh runners attaching them at once, with the server
//! given 1 and then 2 worker threads (`--workers`). On a small machine
//! the server is pinned to the first core and the runners to the others
//! (`taskset`), so the server's CPU per MB is its own and not the
//! runners' contention. Measures each phase's wall, the server's CPU and
//! the runners', and each runner's latency (the slowest against the
//! median). docs/benchmarks.md, "One server, many runners", has the
//! numbers. Knows nothing of the server's insides: it runs the binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::measure::{self, Sample};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Many {
    /// Runners at once, one measurement each (16, 64).
    pub runners: Vec<usize>,
    /// The server's `--workers`, one measurement each (1, 2).
    pub workers: Vec<usize>,
    /// Files of each runner's synthetic tree (about 8 kB each).
    pub files: u64,
}

/// One phase (every runner persisting, or attaching) of one measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub step: String,
    pub runners: usize,
    pub workers: usize,
    /// From the first runner's start to the last one's end.
    pub wall_s: f64,
    /// The server process's CPU (user + system) over the phase.
    pub server_cpu_s: f64,
    /// The runners' CPU, summed.
    pub runners_cpu_s: f64,
    /// The trees' bytes (each runner's whole tree): what was persisted or
    /// attached, before chunking and compression.
    pub raw_bytes: u64,
    /// Bytes the runners sent (persist) or received (attach), as they say.
    pub wire_bytes: u64,
    /// Runner latencies: the median and the slowest.
    pub median_s: f64,
    pub slowest_s: f64,
}

/// Everything scenario 10 measured, and where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManyResults {
    pub tree_bytes: u64,
    pub cores: usize,
    /// Whether the server and the runners ran on cores of their own.
    pub pinned: bool,
    /// `/proc/loadavg` before and after.
    pub load_before: String,
    pub load_after: String,
    pub phases: Vec<Phase>,
}

/// Runs scenario 10 with the strata binary `bin`, scratch space in `work`.
pub fn run(m: &Many, bin: &Path, work: &Path) -> Result<ManyResults> {
    // The runners start in their own directories.
    let bin = &bin
        .canonicalize()
        .with_context(|| format!("the strata binary {}", bin.display()))?;
    let most = m.runners.iter().copied().max().unwrap_or(0);
    let tree_est = m.files * crate::disk::synthetic_file_bytes(None);
    // The runners' trees and attach targets, the store, the runners'
    // caches: about four trees per runner, and a margin for the others
    // sharing the disk.
    let need = tree_est * most as u64 * 4 + (1 << 30);
    std::fs::create_dir_all(work)?;
    let (free, _) = crate::disk::free(work)?;
    if need > free {
        bail!(
            "refusing scenario 10: {most} runners of {} MB need about {} GB in {}, which has {} GB free \
             (fewer runners, or fewer --synthetic files)",
            tree_est >> 20,
            need >> 30,
            work.display(),
            free >> 30
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2 && crate::tools::available("taskset");
    let load_before = loadavg();
    let (base, trees, tree_bytes) =
        crate::corpus::next_run_trees(&work.join("many"), "runner", most, m.files)?;
    let mut phases = Vec::new();
    for &workers in &m.workers {
        for &runners in &m.runners {
            eprintln!("strata-bench: {runners} runners, server --workers {workers}");
            let at = Setup {
                bin,
                root: &work.join(format!("many/w{workers}n{runners}")),
                pinned,
                cores,
                workers,
            };
            let measured = at.measure(&base, &trees[..runners], tree_bytes);
            let _ = std::fs::remove_dir_all(at.root);
            phases.extend(measured?);
        }
    }
    Ok(ManyResults {
        tree_bytes,
        cores,
        pinned,
        load_before,
        load_after: loadavg(),
        phases,
    })
}

pub(crate) fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// One measurement's server and places.
struct Setup<'a> {
    bin: &'a Path,
    root: &'a Path,
    pinned: bool,
    cores: usize,
    workers: usize,
}

/// A running `strata serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Setup<'_> {
    /// `taskset -c CORES` for the server (`server`) or the runners, when
    /// pinned: the server on the first core (with 2 workers, the first
    /// two), the runners on every other.
    fn pin(&self, server: bool) -> String {
        match (self.pinned, server) {
            (false, _) => String::new(),
            (true, true) => format!("taskset -c 0-{} ", self.workers.min(self.cores) - 1),
            (true, false) => format!("taskset -c 1-{} ", self.cores - 1),
        }
    }

    fn start(&self) -> Result<Server> {
        let mut cmd = Command::new("sh");
        let script = format!(
            "exec {}'{}' --store '{}' --cache-dir '{}' serve --listen 127.0.0.1:0 --quiet --workers {}",
            self.pin(true),
            self.bin.display(),
            self.root.join("srv").display(),
            self.root.join("srv-cache").display(),
            self.workers
        );
        cmd.arg("-c").arg(script);
        let (child, url) = crate::tools::start_server(cmd)?;
        Ok(Server { child, url })
    }

    /// `strata ARGS` for runner `cache` as a shell line, pinned.
    fn strata(&self, url: &str, cache: &str, args: &str) -> String {
        format!(
            "{}'{}' --store '{url}/bench' --cache-dir '{}' --json {args}",
            self.pin(false),
            self.bin.display(),
            self.root.join(cache).display()
        )
    }

    /// The base persisted and runs created (not measured), then every
    /// runner persisting its tree at once, then as many attaching.
    fn measure(&self, base: &Path, trees: &[PathBuf], tree_bytes: u64) -> Result<Vec<Phase>> {
        std::fs::create_dir_all(self.root)?;
        let server = self.start()?;
        let url = server.url.as_str();
        let dir = |p: &Path| p.parent().map(|d| d.display().to_string());
        let setup = [
            "run create --run base --job a".to_string(),
            format!(
                "persist --run base --job a --root '{}' tree",
                dir(base).unwrap_or_default()
            ),
        ];
        for args in setup.iter().chain(
            (0..trees.len())
                .map(|i| format!("run create --run c{i} --job a --job b:a"))
                .collect::<Vec<_>>()
                .iter(),
        ) {
            measure::run(&self.strata(url, "setup", args), self.root, &[])?;
        }
        let persist = self.phase("persist", &server, trees.len(), tree_bytes, |i| {
            format!(
                "persist --run c{i} --job a --root '{}' tree",
                dir(&trees[i]).unwrap_or_default()
            )
        })?;
        let at = self.root.join("at");
        let attach = self.phase("attach", &server, trees.len(), tree_bytes, |i| {
            format!(
                "attach --run c{i} --job b --at '{}'",
                at.join(i.to_string()).display()
            )
        })?;
        Ok(vec![persist, attach])
    }

    /// Runs `args(i)` for every runner at once, runner i with its own
    /// cache (`cache-STEP-i`), and measures the phase.
    fn phase(
        &self,
        step: &str,
        server: &Server,
        runners: usize,
        tree_bytes: u64,
        args: impl Fn(usize) -> String + Sync,
    ) -> Result<Phase> {
        let cpu_before = process_cpu(server.child.id())?;
        let started = Instant::now();
        let results: Vec<Result<(Sample, String)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..runners)
                .map(|i| {
                    let line = self.strata(&server.url, &format!("cache-{step}-{i}"), &args(i));
                    s.spawn(move || measure::run(&line, self.root, &[]))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("a runner's thread panicked"))
                })
                .collect()
        });
        let wall_s = started.elapsed().as_secs_f64();
        let server_cpu_s = process_cpu(server.child.id())? - cpu_before;
        let mut latencies = Vec::new();
        let (mut runners_cpu_s, mut wire_bytes) = (0.0, 0);
        for r in results {
            let (sample, out) = r?;
            latencies.push(sample.wall_s);
            runners_cpu_s += sample.cpu_s;
            wire_bytes += wire(&out, step);
        }
        latencies.sort_by(f64::total_cmp);
        Ok(Phase {
            step: step.to_string(),
            runners,
            workers: self.workers,
            wall_s,
            server_cpu_s,
            runners_cpu_s,
            raw_bytes: tree_bytes * runners as u64,
            wire_bytes,
            median_s: latencies[latencies.len() / 2],
            slowest_s: latencies.last().copied().unwrap_or(0.0),
        })
    }
}

/// The bytes a runner's `--json` answer says it sent (persist) or
/// received (attach).
fn wire(json: &str, step: &str) -> u64 {
    let key = if step == "persist" {
        "sent"
    } else {
        "received"
    };
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["network"][key].as_u64())
        .unwrap_or(0)
}

/// CPU seconds (user + system) process `pid` used so far, all its threads
/// (`/proc/PID/stat`, fields 14 and 15, in clock ticks).
#[allow(unsafe_code)]
pub(crate) fn process_cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The fields after the command's name, which is in parentheses.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields 14 (utime) and 15 (stime), counted from 3 (the state) as 0.
    Ok((ticks(11) + ticks(12)) as f64 / per_second)
}

/// The report: a table per phase, then what it says per core.
pub fn markdown(r: &ManyResults) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = format!(
        "Scenario 10: one server, many runners. Each runner's tree {:.1} MiB; {} cores; {}; \
         load average {} before, {} after.\n\n",
        mib(r.tree_bytes),
        r.cores,
        if r.pinned {
            "server pinned to core 0 (with 2 workers, cores 0-1), runners to the others"
        } else {
            "not pinned (no taskset, or one core)"
        },
        r.load_before,
        r.load_after
    );
    out.push_str(
        "| step | runners | server workers | wall s | raw MiB/s | server CPU s | server ms per raw MiB \
         | server MiB per CPU-s | runners CPU s | server/runners CPU | wire MiB | median s | slowest s | slowest/median |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in &r.phases {
        let raw = mib(p.raw_bytes);
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} |\n",
            p.step,
            p.runners,
            p.workers,
            p.wall_s,
            raw / p.wall_s,
            p.server_cpu_s,
            p.server_cpu_s * 1000.0 / raw,
            raw / p.server_cpu_s.max(1e-9),
            p.runners_cpu_s,
            p.server_cpu_s / p.runners_cpu_s.max(1e-9),
            mib(p.wire_bytes),
            p.median_s,
            p.slowest_s,
            p.slowest_s / p.median_s.max(1e-9),
        ));
    }
    out
}
