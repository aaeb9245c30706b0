//! Scenario 10's light load generator (`--many N,... --many-replay`): the
//! server's CPU per MB and its scaling from 1 to 2 worker threads, measured
//! without the runners' chunking and compression competing for the same
//! cores. Before anything is timed, each runner's tree (distinct content:
//! a synthetic tree of its own seed, every file marked with the runner's
//! number) is persisted once into a directory
//! store of its own, and the objects that persist wrote are the requests a
//! real `strata persist` sends a server (docs/protocol.md): the hello,
//! `chunks/missing` with the tree's chunk ids, a `PUT` per pack, and the
//! commit as one `objects` request (index object, manifest root, layer
//! ref, in that order). A fresh attach is replayed as its reads: the hello,
//! the listing of the upstream job's layers, `layers`, `chunks/locate` with
//! the chunk ids, and a `ranges` per pack for its frames. One thread per
//! runner of this one process sends them over its own connection with its
//! own token (so the server's fair queue tells the runners apart) to a
//! fresh `strata serve --workers N`, which does its full work: every pack
//! is new to it and verified. Every answer's status is checked, and the
//! bytes each read returns. Knows nothing of the server's insides: it runs
//! the binary and speaks the protocol.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use strata_store::format::index::IndexObject;
use strata_store::format::keys::{classify, ObjectKind};

use crate::many::{process_cpu, Many, Phase};
use crate::measure;

/// Everything the replay measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayResults {
    /// The runners' trees' bytes, summed over the most runners.
    pub tree_bytes: u64,
    pub cores: usize,
    pub load_before: String,
    pub load_after: String,
    /// `runners_cpu_s` is the load generator's CPU (this process).
    pub phases: Vec<Phase>,
}

/// One runner's requests, built before the timed part.
struct Script {
    token: String,
    run: String,
    /// The tree's bytes before chunking.
    raw: u64,
    /// `runs/R/run`, sent untimed (`strata run create`).
    run_record: (String, PathBuf),
    packs: Vec<(String, PathBuf)>,
    /// Index object, manifest root, layer ref: the commit.
    commit: Vec<(String, PathBuf)>,
    /// Every chunk id the index object lists, 32 bytes each.
    ids: Vec<u8>,
    /// Each pack's frames, as `ranges` asks for them.
    frames: Vec<(String, Vec<(u64, u64)>)>,
}

/// Runs the replay with the strata binary `bin`, scratch space in `work`.
pub fn run(r: &Many, bin: &Path, work: &Path) -> Result<ReplayResults> {
    let bin = &bin
        .canonicalize()
        .with_context(|| format!("the strata binary {}", bin.display()))?;
    let most = r.runners.iter().copied().max().unwrap_or(0);
    // Each runner's tree, its directory store and the server's copy.
    let need = r.files * crate::disk::synthetic_file_bytes(None) * most as u64 * 3 + (1 << 30);
    std::fs::create_dir_all(work)?;
    let (free, _) = crate::disk::free(work)?;
    if need > free {
        bail!(
            "refusing the replay: {most} runners need about {} GB in {}, which has {} GB free",
            need >> 30,
            work.display(),
            free >> 30
        );
    }
    let load_before = crate::many::loadavg();
    let scripts = (0..most)
        .map(|i| prepare(bin, &work.join(format!("runner{i}")), i, r.files))
        .collect::<Result<Vec<_>>>()?;
    let mut seen = std::collections::HashSet::new();
    if !scripts
        .iter()
        .flat_map(|s| &s.packs)
        .all(|(k, _)| seen.insert(k))
    {
        bail!("two runners wrote the same pack: their trees are not distinct");
    }
    let tokens = work.join("tokens.yaml");
    std::fs::write(&tokens, token_file(&scripts))?;
    let mut phases = Vec::new();
    for &runners in &r.runners {
        // Alternating the worker counts keeps the two measurements close
        // in time on a machine others share.
        for &workers in &r.workers {
            eprintln!("strata-bench: replaying {runners} runners, server --workers {workers}");
            let root = work.join(format!("srv-w{workers}n{runners}"));
            let measured = measure_one(bin, &root, &tokens, workers, &scripts[..runners]);
            let _ = std::fs::remove_dir_all(&root);
            phases.extend(measured?);
        }
    }
    Ok(ReplayResults {
        tree_bytes: scripts.iter().map(|s| s.raw).sum(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_before,
        load_after: crate::many::loadavg(),
        phases,
    })
}

/// Runner `i`'s tree persisted into a directory store of its own, and its
/// requests read back from that store's objects.
fn prepare(bin: &Path, dir: &Path, i: usize, files: u64) -> Result<Script> {
    let tree = dir.join("tree");
    strata_store::synth::generate(&tree, files, 1000 + i as u64)?;
    let raw = distinct(&tree, i)?;
    let store = dir.join("store");
    let run = format!("c{i}");
    let strata = |args: String| {
        let line = format!(
            "'{}' --store '{}' --cache-dir '{}' {args}",
            bin.display(),
            store.display(),
            dir.join("cache").display()
        );
        measure::run(&line, dir, &[])
    };
    strata(format!("run create --run {run} --job a --job b:a"))?;
    strata(format!(
        "persist --run {run} --job a --root '{}' tree",
        dir.display()
    ))?;
    let mut script = Script {
        token: format!("replay-runner-{i:04}-token"),
        run: run.clone(),
        raw,
        run_record: (
            format!("runs/{run}/run"),
            store.join(format!("runs/{run}/run")),
        ),
        packs: Vec::new(),
        commit: Vec::new(),
        ids: Vec::new(),
        frames: Vec::new(),
    };
    let (mut index, mut manifest, mut layer) = (None, None, None);
    for entry in walkdir::WalkDir::new(&store).sort_by_file_name() {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(&store)?
            .to_string_lossy()
            .to_string();
        let object = (rel.clone(), entry.path().to_path_buf());
        match rel.split('/').next() {
            Some("packs") => script.packs.push(object),
            Some("index") => index = Some(object),
            Some("manifests") => manifest = Some(object),
            Some("runs") if rel.starts_with(&format!("runs/{run}/layers/a/")) => {
                layer = Some(object)
            }
            _ => {}
        }
    }
    let (Some(index), Some(manifest), Some(layer)) = (index, manifest, layer) else {
        bail!(
            "{}: the persist wrote no index object, manifest root or layer ref",
            store.display()
        );
    };
    let ObjectKind::Index(id) = classify(&index.0)? else {
        bail!("{} is not an index object", index.0);
    };
    let listed = IndexObject::decode(&id, &std::fs::read(&index.1)?)?;
    (script.ids, script.frames) = reads_of(&listed);
    script.commit = vec![index, manifest, layer];
    Ok(script)
}

/// The chunk ids an index object lists, 32 bytes each, and each pack's
/// frames as `ranges` asks for them.
#[allow(clippy::type_complexity)]
fn reads_of(listed: &IndexObject) -> (Vec<u8>, Vec<(String, Vec<(u64, u64)>)>) {
    let (mut ids, mut frames) = (Vec::new(), Vec::new());
    for pack in &listed.packs {
        let key = strata_store::format::keys::pack_key(&pack.pack);
        let mut ranges = Vec::new();
        for frame in &pack.frames {
            ranges.push((
                frame.offset as u64,
                (frame.offset + frame.stored_len) as u64,
            ));
            for chunk in &frame.chunks {
                ids.extend_from_slice(&chunk.id.0);
            }
        }
        frames.push((key, ranges));
    }
    (ids, frames)
}

/// Starts every file of runner `i`'s tree with the runner's number: the
/// generated trees share small files (`package.json`s differ only in a
/// version drawn from thirty), and no chunk may be another runner's.
/// Returns the tree's bytes.
fn distinct(tree: &Path, i: usize) -> Result<u64> {
    let mut bytes = 0;
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry?;
        if entry.file_type().is_file() {
            let mut data = format!("/* runner {i} */\n").into_bytes();
            data.extend(std::fs::read(entry.path())?);
            std::fs::write(entry.path(), &data)?;
            bytes += data.len() as u64;
        }
    }
    Ok(bytes)
}

/// The server's config: a write token per runner for namespace `bench`.
fn token_file(scripts: &[Script]) -> String {
    let mut out = "tokens:\n".to_string();
    for (i, s) in scripts.iter().enumerate() {
        out.push_str(&format!(
            "  - name: runner{i}\n    token: \"{}\"\n    namespace: bench\n    scope: write\n",
            s.token
        ));
    }
    out
}

/// A running `strata serve`, killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh server, the runs created (untimed), then every runner's
/// persist at once, then every runner's fresh attach at once.
fn measure_one(
    bin: &Path,
    root: &Path,
    tokens: &Path,
    workers: usize,
    scripts: &[Script],
) -> Result<Vec<Phase>> {
    std::fs::create_dir_all(root)?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--store")
        .arg(root.join("srv"))
        .arg("--cache-dir")
        .arg(root.join("srv-cache"))
        .args(["serve", "--listen", "127.0.0.1:0", "--quiet", "--workers"])
        .arg(workers.to_string())
        .arg("--config")
        .arg(tokens);
    let (child, url) = crate::tools::start_server(cmd)?;
    let server = Server(child);
    let base = format!("{url}/v1/ns/bench/");
    for s in scripts {
        let mut c = Conn::new(&base, &s.token);
        c.expect(
            "PUT",
            &format!("o/{}", s.run_record.0),
            &std::fs::read(&s.run_record.1)?,
            204,
        )?;
    }
    let persist = phase("persist", &server, workers, &base, scripts, persist)?;
    let attach = phase("attach", &server, workers, &base, scripts, attach)?;
    Ok(vec![persist, attach])
}

/// Runs `step` for every runner at once, a thread each, and measures it.
fn phase(
    name: &str,
    server: &Server,
    workers: usize,
    base: &str,
    scripts: &[Script],
    step: fn(&mut Conn, &Script) -> Result<()>,
) -> Result<Phase> {
    let cpu_before = process_cpu(server.0.id())?;
    let own_before = process_cpu(std::process::id())?;
    let started = Instant::now();
    let results: Vec<Result<(Duration, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = scripts
            .iter()
            .map(|script| {
                s.spawn(move || {
                    let mut c = Conn::new(base, &script.token);
                    let at = Instant::now();
                    step(&mut c, script)?;
                    Ok((at.elapsed(), c.sent + c.received))
                })
            })
            .collect();
        let joined = handles.into_iter().map(|h| h.join());
        joined
            .map(|r| r.unwrap_or_else(|_| bail!("a runner's thread panicked")))
            .collect()
    });
    let wall_s = started.elapsed().as_secs_f64();
    let server_cpu_s = process_cpu(server.0.id())? - cpu_before;
    let runners_cpu_s = process_cpu(std::process::id())? - own_before;
    let mut latencies = Vec::new();
    let mut wire_bytes = 0;
    for r in results {
        let (took, bytes) = r.with_context(|| format!("replaying a runner's {name}"))?;
        latencies.push(took.as_secs_f64());
        wire_bytes += bytes;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Phase {
        step: format!("{name} (replayed)"),
        runners: scripts.len(),
        workers,
        wall_s,
        server_cpu_s,
        runners_cpu_s,
        raw_bytes: scripts.iter().map(|s| s.raw).sum(),
        wire_bytes,
        median_s: latencies[latencies.len() / 2],
        slowest_s: latencies.last().copied().unwrap_or(0.0),
    })
}

/// A runner's persist: what it asks, its packs, its commit.
fn persist(c: &mut Conn, s: &Script) -> Result<()> {
    c.expect("GET", "", &[], 200)?;
    let missing = c.expect("POST", "chunks/missing", &s.ids, 200)?;
    let held = missing.iter().filter(|&&b| b != 1).count();
    if missing.len() * 32 != s.ids.len() || held > 0 {
        bail!(
            "chunks/missing: {} answers for {} ids, {held} held already: the trees are not distinct",
            missing.len(),
            s.ids.len() / 32
        );
    }
    for (key, path) in &s.packs {
        c.expect("PUT", &format!("o/{key}"), &std::fs::read(path)?, 204)?;
    }
    let mut parts = Vec::new();
    for (key, path) in &s.commit {
        parts.push((key.as_str(), std::fs::read(path)?));
    }
    let named: Vec<(&str, &[u8])> = parts.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    let query = strata_store::protocol::objects::encode_query(&named);
    let body: Vec<u8> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    c.expect("POST", &format!("objects?{query}"), &body, 204)?;
    Ok(())
}

/// A fresh runner's attach of that persist: its reads.
fn attach(c: &mut Conn, s: &Script) -> Result<()> {
    c.expect("GET", "", &[], 200)?;
    let listed = c.expect(
        "GET",
        &format!("list?prefix=runs/{}/layers/a/", s.run),
        &[],
        200,
    )?;
    let keys: serde_json::Value = serde_json::from_slice(&listed)?;
    let layer = &s.commit[2].0;
    if keys["keys"].as_array().map(|k| k.len()) != Some(1) {
        bail!("list: expected the one layer ref {layer}, got {keys}");
    }
    let ask = serde_json::json!({ "keys": [layer] }).to_string();
    c.expect("POST", "layers", ask.as_bytes(), 200)?;
    c.expect("POST", "chunks/locate", &s.ids, 200)?;
    for (key, ranges) in &s.frames {
        let ask = serde_json::json!({ "key": key, "ranges": ranges }).to_string();
        let got = c.expect("POST", "ranges", ask.as_bytes(), 200)?;
        let want: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        if got.len() as u64 != want {
            bail!("ranges of {key}: {} bytes, asked {want}", got.len());
        }
    }
    Ok(())
}

/// One runner's connection: its token, and the bytes it moved.
struct Conn {
    agent: ureq::Agent,
    base: String,
    auth: String,
    sent: u64,
    received: u64,
}

impl Conn {
    fn new(base: &str, token: &str) -> Conn {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections_per_host(1)
            .build()
            .into();
        Conn {
            agent,
            base: base.to_string(),
            auth: format!("Bearer {token}"),
            sent: 0,
            received: 0,
        }
    }

    /// Sends the request; its answer's body if its status is `want`.
    fn expect(&mut self, method: &str, tail: &str, body: &[u8], want: u16) -> Result<Vec<u8>> {
        let url = format!("{}{tail}", self.base);
        let answer = match method {
            "GET" => self
                .agent
                .get(&url)
                .header("authorization", &self.auth)
                .call(),
            "PUT" => self
                .agent
                .put(&url)
                .header("authorization", &self.auth)
                .send(body),
            _ => self
                .agent
                .post(&url)
                .header("authorization", &self.auth)
                .send(body),
        };
        let mut answer = answer.with_context(|| format!("{method} {url}"))?;
        let status = answer.status().as_u16();
        let bytes = answer
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        self.sent += body.len() as u64;
        self.received += bytes.len() as u64;
        if status != want {
            bail!(
                "{method} {url}: {status} (expected {want}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        Ok(bytes)
    }
}

/// The report: the table, then what the per-core figure says.
pub fn markdown(r: &ReplayResults) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = format!(
        "Scenario 10, replayed (light load generator): {} runners' trees, {:.0} MiB in all; {} cores; \
         server not pinned; load average {} before, {} after. \"generator CPU\" is this process's.\n\n",
        r.phases.iter().map(|p| p.runners).max().unwrap_or(0),
        mib(r.tree_bytes),
        r.cores,
        r.load_before,
        r.load_after
    );
    out.push_str(
        "| step | runners | server workers | wall s | raw MiB/s | wire MiB/s | server CPU s \
         | server ms per raw MiB | server ms per wire MiB | generator CPU s | median s | slowest s | slowest/median |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in &r.phases {
        let (raw, wire) = (mib(p.raw_bytes), mib(p.wire_bytes));
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            p.step,
            p.runners,
            p.workers,
            p.wall_s,
            raw / p.wall_s,
            wire / p.wall_s,
            p.server_cpu_s,
            p.server_cpu_s * 1000.0 / raw,
            p.server_cpu_s * 1000.0 / wire.max(1e-9),
            p.runners_cpu_s,
            p.median_s,
            p.slowest_s,
            p.slowest_s / p.median_s.max(1e-9),
        ));
    }
    out.push('\n');
    for p in r.phases.iter().filter(|p| p.workers == 1) {
        // /proc counts CPU in clock ticks (10 ms): a phase the server
        // spent less than a few ticks on gives no rate worth printing.
        if p.server_cpu_s < 0.05 {
            out.push_str(&format!(
                "- {} with {} runners: the server's CPU ({:.2} s) is too small to give a rate.\n",
                p.step, p.runners, p.server_cpu_s
            ));
            continue;
        }
        let raw = mib(p.raw_bytes);
        let per_core = raw / p.server_cpu_s;
        out.push_str(&format!(
            "- {} with {} runners: one core of server CPU handles {per_core:.0} raw MiB/s; \
             16 cores at that rate, if nothing else limits, {:.0} MiB/s.\n",
            p.step,
            p.runners,
            16.0 * per_core
        ));
    }
    out
}
