//! Scenario 9, the server off the data path: `strata serve` over a
//! three-node Garage cluster, a tree persisted once, then attached fresh
//! `rounds` times, through a server that reads the packs for its runners
//! against one that hands them presigned URLs (`--presign-ttl`;
//! docs/protocol.md, "Reading packs from the bucket"). Reports the
//! server's CPU and the pack bytes it moved per attached GB, and the
//! clients' wall and CPU. Knows nothing about how the URLs work: it only
//! starts servers with and without the option and counts.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use strata_store::testing::garage::GarageCluster;

use crate::tools::start_server_logged;

/// What scenario 9 measured for one kind of server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Direct {
    /// Whether the server handed out URLs.
    pub urls: bool,
    /// Bytes of the tree attached each round.
    pub tree_bytes: u64,
    /// Fresh attaches.
    pub rounds: usize,
    /// Median wall of one attach, seconds.
    pub attach_s: f64,
    /// The server's CPU seconds over all the attaches.
    pub server_cpu_s: f64,
    /// The clients' CPU seconds over all the attaches.
    pub client_cpu_s: f64,
    /// Pack bytes the server read from the bucket and sent (its log's
    /// `ranges` lines).
    pub server_pack_bytes: u64,
    /// Bytes the clients received (from the server and the bucket).
    pub client_received: u64,
}

/// A `strata serve` whose log lines are kept.
struct Served {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(
    bin: &Path,
    store: &str,
    meta: &Path,
    env: &[(&str, String)],
    urls: bool,
) -> Result<Served> {
    let mut cmd = Command::new(bin);
    cmd.arg("--store").arg(store).arg("--cache-dir").arg(meta);
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    if urls {
        cmd.args(["--presign-ttl", "10m"]);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let log = Arc::new(Mutex::new(Vec::new()));
    let keep = log.clone();
    let (child, url) = start_server_logged(cmd, move |line| {
        keep.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    })?;
    Ok(Served { child, url, log })
}

/// A process's CPU seconds so far (user and system, all its threads).
#[allow(unsafe_code)]
fn cpu_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// The CPU seconds of this process's waited-for children so far.
#[allow(unsafe_code)]
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn strata(bin: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(bin).args(args).output()?;
    if !out.status.success() {
        bail!(
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or_default())
}

/// Runs scenario 9 on a tree of about `files` synthetic files, `rounds`
/// fresh attaches per kind of server, scratch space in `work`.
pub fn run(bin: &Path, work: &Path, files: u64, rounds: usize) -> Result<Vec<Direct>> {
    let cluster = GarageCluster::start();
    let env = cluster.env(0);
    let tree = work.join("direct/src/tree");
    let summary = strata_store::synth::generate(&tree, files, 9)?;
    let mut results = Vec::new();
    for urls in [false, true] {
        let store = cluster.location(if urls {
            "direct-urls"
        } else {
            "direct-through"
        });
        let server = serve(
            bin,
            &store,
            &work.join(format!("direct/meta-{urls}")),
            &env,
            urls,
        )?;
        let ns = format!("{}/bench", server.url);
        persist_base(bin, work, &ns)?;
        server.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let (cpu0, client0) = (cpu_of(server.child.id())?, children_cpu());
        let (mut walls, received) = attach_rounds(bin, work, &ns, urls, rounds)?;
        let server_cpu_s = cpu_of(server.child.id())? - cpu0;
        let client_cpu_s = children_cpu() - client0;
        let server_pack_bytes = ranges_bytes(&server.log.lock().unwrap_or_else(|p| p.into_inner()));
        walls.sort_by(f64::total_cmp);
        results.push(Direct {
            urls,
            tree_bytes: summary.bytes,
            rounds,
            attach_s: walls[walls.len() / 2],
            server_cpu_s,
            client_cpu_s,
            server_pack_bytes,
            client_received: received,
        });
    }
    Ok(results)
}

/// A path as the argument it is on a command line.
fn arg(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// Creates run `r` (jobs `a`, and `b` downstream of it) and persists the
/// tree as `a`'s layer.
fn persist_base(bin: &Path, work: &Path, ns: &str) -> Result<()> {
    let writer = arg(&work.join("direct/writer-cache"));
    let store = ["--store", ns, "--cache-dir", &writer];
    let create = ["run", "create", "--run", "r", "--job", "a", "--job", "b:a"];
    strata(bin, &[&store[..], &create[..]].concat())?;
    let root = arg(&work.join("direct/src"));
    let persist = [
        "persist", "--run", "r", "--job", "a", "--root", &root, "tree",
    ];
    strata(bin, &[&store[..], &persist[..]].concat())?;
    Ok(())
}

/// `rounds` fresh attaches of job `b`, each into a new directory with a
/// new cache: their wall times and the bytes the client received.
fn attach_rounds(
    bin: &Path,
    work: &Path,
    ns: &str,
    urls: bool,
    rounds: usize,
) -> Result<(Vec<f64>, u64)> {
    let mut walls = Vec::new();
    let mut received = 0;
    for i in 0..rounds {
        let at = work.join(format!("direct/at{i}"));
        let cache = arg(&work.join(format!("direct/cache-{urls}-{i}")));
        let started = Instant::now();
        let attach = [
            "--store",
            ns,
            "--cache-dir",
            &cache,
            "attach",
            "--json",
            "--run",
            "r",
            "--job",
            "b",
            "--at",
            &arg(&at),
        ];
        let report = strata(bin, &attach)?;
        walls.push(started.elapsed().as_secs_f64());
        received += report["network"]["received"].as_u64().unwrap_or(0);
        std::fs::remove_dir_all(&at)?;
        let _ = std::fs::remove_dir_all(&cache);
    }
    Ok((walls, received))
}

/// The pack bytes the server sent in `ranges` answers, from its log lines
/// (`… ranges, N B`).
fn ranges_bytes(log: &[String]) -> u64 {
    log.iter()
        .filter_map(|l| {
            l.split(" ranges, ")
                .nth(1)?
                .strip_suffix(" B")?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The results as a markdown table, per attached GB.
pub fn markdown(results: &[Direct]) -> String {
    let mut out = String::from(
        "| server | attach (median) | server CPU per attached GB | pack bytes through the server per attached GB | client CPU per attached GB | client received per attached GB |\n|---|---|---|---|---|---|\n",
    );
    for r in results {
        let gb = (r.tree_bytes * r.rounds as u64) as f64 / 1e9;
        out.push_str(&format!(
            "| {} | {:.2} s | {:.2} s | {:.3} GB | {:.2} s | {:.3} GB |\n",
            if r.urls {
                "presigned URLs"
            } else {
                "through the server"
            },
            r.attach_s,
            r.server_cpu_s / gb,
            r.server_pack_bytes as f64 / 1e9 / gb,
            r.client_cpu_s / gb,
            r.client_received as f64 / 1e9 / gb,
        ));
    }
    out
}
