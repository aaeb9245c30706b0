//! The tools compared: strata and what CI users run today. Each persists a
//! tree as run `n` into its own repository and attaches (restores) run `n`
//! into a directory, as a measured command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::measure::{disk_bytes, run, Sample};
use crate::wire::{Link, LinkProxy};

/// A measured step: the sample and the bytes that would cross the network
/// (`None` where the tool gives no honest way to count them).
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub sample: Sample,
    pub network_bytes: Option<u64>,
    /// Of `network_bytes`, those that were file content (strata's attach
    /// also reads manifests).
    pub content_bytes: Option<u64>,
}

pub trait Tool {
    fn name(&self) -> &'static str;
    /// Creates an empty repository in `repo` (untimed).
    fn init(&self, repo: &Path) -> Result<()>;
    /// Persists the directory `tree` as run `n` (timed).
    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step>;
    /// Attaches run `n` into `target`, which may hold an earlier run's tree
    /// (timed). The tree appears as `target/<name of the persisted dir>`.
    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step>;
    /// Whether attach makes use of what `target` already holds; tools
    /// that do not are given a fresh directory for the warm scenario.
    fn reuses_target(&self) -> bool {
        false
    }
    /// The repository's size in bytes, as `du -sb` counts it.
    fn repo_bytes(&self, repo: &Path) -> u64 {
        disk_bytes(repo, &[])
    }
}

fn split(tree: &Path) -> Result<(PathBuf, String)> {
    let parent = tree.parent().context("tree has no parent")?.to_path_buf();
    let name = tree
        .file_name()
        .and_then(|n| n.to_str())
        .context("tree name is not UTF-8")?
        .to_string();
    Ok((parent, name))
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// strata on its embedded (local directory) store.
#[derive(Debug)]
pub struct Strata {
    pub bin: PathBuf,
}

impl Strata {
    fn json(out: &str) -> Result<serde_json::Value> {
        serde_json::from_str(out).context("parsing strata --json output")
    }
}

impl Tool for Strata {
    fn name(&self) -> &'static str {
        "strata"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        std::fs::create_dir_all(repo)?;
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let (parent, name) = split(tree)?;
        let b = q(&self.bin);
        run(
            &format!(
                "{b} --store {} run create --run r{n} --job a --job b:a",
                q(repo)
            ),
            &parent,
            &[],
        )?;
        let (sample, out) = run(
            &format!(
                "{b} --store {} --json persist --run r{n} --job a --root . '{name}'",
                q(repo)
            ),
            &parent,
            &[],
        )?;
        let v = Self::json(&out)?;
        Ok(Step {
            sample,
            network_bytes: v["bytes_written"].as_u64(),
            content_bytes: None,
        })
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        let (sample, out) = run(
            &format!(
                "{} --store {} --json attach --run r{n} --job b --at {}",
                q(&self.bin),
                q(repo),
                q(target)
            ),
            repo,
            &[],
        )?;
        let v = Self::json(&out)?;
        let content = v["bytes_from_store"].as_u64().unwrap_or(0);
        let read = content + v["manifest_bytes_from_store"].as_u64().unwrap_or(0);
        Ok(Step {
            sample,
            network_bytes: Some(read),
            content_bytes: Some(content),
        })
    }

    fn reuses_target(&self) -> bool {
        true
    }

    /// All the store puts on disk: its objects and its `.local` index
    /// (rebuildable, but it is disk the runner pays for); `.tmp` holds
    /// only what a command still writes.
    fn repo_bytes(&self, repo: &Path) -> u64 {
        disk_bytes(repo, &[".tmp"])
    }
}

/// One compressed tarball per run: CircleCI workspaces (`gzip -6`) and the
/// GitHub Actions cache (`zstd -3 -T0`).
#[derive(Debug)]
pub struct Tarball {
    pub name: &'static str,
    pub compress: &'static str,
    pub decompress: &'static str,
    pub ext: &'static str,
}

impl Tarball {
    /// `tar | zstd -3 -T0`: the GitHub Actions cache's.
    pub fn zstd() -> Tarball {
        Tarball {
            name: "tar|zstd",
            compress: "zstd -3 -T0 -q",
            decompress: "zstd -dc",
            ext: "zst",
        }
    }

    /// `tar | gzip -6`: CircleCI workspaces'.
    pub fn gzip() -> Tarball {
        Tarball {
            name: "tar|gzip",
            compress: "gzip -6",
            decompress: "gzip -dc",
            ext: "gz",
        }
    }

    fn archive(&self, repo: &Path, n: usize) -> PathBuf {
        repo.join(format!("run-{n}.tar.{}", self.ext))
    }
}

impl Tool for Tarball {
    fn name(&self) -> &'static str {
        self.name
    }

    fn init(&self, repo: &Path) -> Result<()> {
        std::fs::create_dir_all(repo)?;
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let (parent, name) = split(tree)?;
        let out = self.archive(repo, n);
        let (sample, _) = run(
            &format!("tar -cf - '{name}' | {} > {}", self.compress, q(&out)),
            &parent,
            &[],
        )?;
        Ok(Step {
            sample,
            network_bytes: Some(std::fs::metadata(&out)?.len()),
            content_bytes: None,
        })
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        std::fs::create_dir_all(target)?;
        let archive = self.archive(repo, n);
        let (sample, _) = run(
            &format!("{} < {} | tar -xf -", self.decompress, q(&archive)),
            target,
            &[],
        )?;
        Ok(Step {
            sample,
            network_bytes: Some(std::fs::metadata(&archive)?.len()),
            content_bytes: None,
        })
    }
}

/// `tar | zstd` streamed to a blob server through the latency proxy, and
/// downloaded through it and extracted: the tarball baseline at a real
/// round trip and bandwidth (`--rtt`, `--mbit`; `wire`).
#[derive(Debug)]
pub struct TarballNet {
    /// This benchmark's own binary (its `net-put`/`net-get` subcommands).
    pub bench: PathBuf,
    pub link: Link,
    addr: std::sync::Mutex<Option<(String, LinkProxy)>>,
}

impl TarballNet {
    pub fn new(bench: PathBuf, link: Link) -> Self {
        Self {
            bench,
            link,
            addr: std::sync::Mutex::new(None),
        }
    }

    fn addr(&self) -> String {
        let addr = self.addr.lock().expect("poisoned");
        addr.as_ref().expect("init ran").0.clone()
    }
}

impl Tool for TarballNet {
    fn name(&self) -> &'static str {
        "tar|zstd-net"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        let server = crate::wire::serve(&repo.join("blobs"))?;
        let proxy = LinkProxy::start(server, &self.link)?;
        *self.addr.lock().expect("poisoned") = Some((proxy.addr.to_string(), proxy));
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let (parent, name) = split(tree)?;
        let (sample, _) = run(
            &format!(
                "tar -cf - '{name}' | zstd -3 -T0 -q | {} net-put {} run-{n}",
                q(&self.bench),
                self.addr()
            ),
            &parent,
            &[],
        )?;
        Ok(Step {
            sample,
            network_bytes: Some(std::fs::metadata(repo.join(format!("blobs/run-{n}")))?.len()),
            content_bytes: None,
        })
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        std::fs::create_dir_all(target)?;
        let (sample, _) = run(
            &format!(
                "{} net-get {} run-{n} | zstd -dc | tar -xf -",
                q(&self.bench),
                self.addr()
            ),
            target,
            &[],
        )?;
        Ok(Step {
            sample,
            network_bytes: Some(std::fs::metadata(repo.join(format!("blobs/run-{n}")))?.len()),
            content_bytes: None,
        })
    }
}

/// Runs a backup command and counts what the repository gained as the
/// bytes that would cross the network.
fn backup(
    tool: &dyn Tool,
    repo: &Path,
    script: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> Result<Step> {
    let before = tool.repo_bytes(repo);
    let (sample, _) = run(script, dir, env)?;
    Ok(Step {
        sample,
        network_bytes: Some(tool.repo_bytes(repo) - before),
        content_bytes: None,
    })
}

/// Runs a restore command; what it reads is not counted.
fn restore(script: &str, dir: &Path, env: &[(&str, &str)]) -> Result<Step> {
    let (sample, _) = run(script, dir, env)?;
    Ok(Step {
        sample,
        network_bytes: None,
        content_bytes: None,
    })
}

#[derive(Debug)]
pub struct Restic;

const RESTIC_ENV: &[(&str, &str)] = &[
    ("RESTIC_PASSWORD", "bench"),
    ("RESTIC_CACHE_DIR", "/tmp/strata-bench-restic-cache"),
];

impl Tool for Restic {
    fn name(&self) -> &'static str {
        "restic"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        std::fs::create_dir_all(repo.parent().context("repo has no parent")?)?;
        run(
            &format!("restic init -q --repository-version 2 --repo {}", q(repo)),
            Path::new("/"),
            RESTIC_ENV,
        )?;
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let (parent, name) = split(tree)?;
        let script = format!(
            "restic -r {} backup -q --no-cache --host bench --tag run-{n} '{name}'",
            q(repo)
        );
        backup(self, repo, &script, &parent, RESTIC_ENV)
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        let script = format!(
            "restic -r {} restore -q --no-cache latest --tag run-{n} --target {}",
            q(repo),
            q(target)
        );
        restore(&script, Path::new("/"), RESTIC_ENV)
    }
}

#[derive(Debug)]
pub struct Borg;

const BORG_ENV: &[(&str, &str)] = &[
    ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes"),
    ("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes"),
    ("BORG_CACHE_DIR", "/tmp/strata-bench-borg-cache"),
];

impl Tool for Borg {
    fn name(&self) -> &'static str {
        "borg"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        std::fs::create_dir_all(repo.parent().context("repo has no parent")?)?;
        run(
            &format!("borg init -e none {}", q(repo)),
            Path::new("/"),
            BORG_ENV,
        )?;
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let (parent, name) = split(tree)?;
        let script = format!(
            "borg create --compression zstd,3 {}::run-{n} '{name}'",
            q(repo)
        );
        backup(self, repo, &script, &parent, BORG_ENV)
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        std::fs::create_dir_all(target)?;
        restore(
            &format!("borg extract {}::run-{n}", q(repo)),
            target,
            BORG_ENV,
        )
    }
}

#[derive(Debug)]
pub struct Casync;

impl Tool for Casync {
    fn name(&self) -> &'static str {
        "casync"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        std::fs::create_dir_all(repo)?;
        Ok(())
    }

    fn persist(&self, repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let script = format!(
            "casync make --compression=zstd --store={} {} {}",
            q(&repo.join("store")),
            q(&repo.join(format!("run-{n}.caidx"))),
            q(tree)
        );
        backup(self, repo, &script, repo, &[])
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        std::fs::create_dir_all(target)?;
        let script = format!(
            "casync extract --store={} {} {}",
            q(&repo.join("store")),
            q(&repo.join(format!("run-{n}.caidx"))),
            q(&target.join("tree"))
        );
        restore(&script, repo, &[])
    }

    /// casync can seed from what the output directory holds, but on these
    /// trees its seeding fails ("Failed to run synchronizer: Stale file
    /// handle", casync 2); it gets a fresh directory like the tarballs.
    fn reuses_target(&self) -> bool {
        false
    }
}

/// Starts `strata serve` (`cmd`, listening on port 0) and waits until it
/// says where it listens: the child and its URL. Its stderr is drained so
/// it never blocks on a pipe.
pub fn start_server(mut cmd: std::process::Command) -> Result<(std::process::Child, String)> {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting strata serve")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .context("strata serve exited before listening")??;
        if let Some(rest) = line.strip_prefix("strata serve: listening on ") {
            break rest.split(' ').next().unwrap_or_default().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((child, url))
}

/// restic, borg and casync: those installed; `missing` hears the name of
/// each one that is not.
pub fn installed_baselines(missing: &mut dyn FnMut(&str)) -> Vec<Box<dyn Tool>> {
    let mut found = Vec::new();
    for (program, tool) in [
        ("restic", Box::new(Restic) as Box<dyn Tool>),
        ("borg", Box::new(Borg)),
        ("casync", Box::new(Casync)),
    ] {
        match available(program) {
            true => found.push(tool),
            false => missing(program),
        }
    }
    found
}

/// Whether `program` is on the PATH.
pub fn available(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// strata through `strata serve` on loopback: the store is a directory the
/// server owns; the runner that attaches keeps its chunk cache between the
/// fresh and the warm attach, as one CI machine would. Network bytes are
/// the request and response bodies the client counted; CPU includes the
/// server's. With a link (`--rtt`, `--mbit`), the client reaches the
/// server through the latency proxy.
#[derive(Debug)]
pub struct StrataHttp {
    pub bin: PathBuf,
    link: Option<Link>,
    server: std::sync::Mutex<Option<Served>>,
}

#[derive(Debug)]
struct Served {
    child: std::process::Child,
    _proxy: Option<LinkProxy>,
    url: String,
    /// The runner's cache directory (for attaches).
    cache: PathBuf,
}

impl StrataHttp {
    pub fn new(bin: PathBuf, link: Option<Link>) -> Self {
        Self {
            bin,
            link,
            server: std::sync::Mutex::new(None),
        }
    }

    fn stop(&self) {
        if let Some(mut s) = self.server.lock().expect("poisoned").take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Served) -> T) -> T {
        f(self
            .server
            .lock()
            .expect("poisoned")
            .as_ref()
            .expect("init ran"))
    }

    /// Runs a client command; its sample counts the server's CPU too.
    fn timed(&self, script: &str, dir: &Path) -> Result<(Sample, serde_json::Value)> {
        let cpu = self.server_cpu();
        let (mut sample, out) = run(script, dir, &[])?;
        sample.cpu_s += self.server_cpu() - cpu;
        Ok((sample, Strata::json(&out)?))
    }

    /// The server's CPU seconds so far (utime + stime from /proc).
    fn server_cpu(&self) -> f64 {
        let pid = self.with(|s| s.child.id());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields 14 and 15 of stat; `after` starts at field 3.
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for StrataHttp {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Tool for StrataHttp {
    fn name(&self) -> &'static str {
        "strata-http"
    }

    fn init(&self, repo: &Path) -> Result<()> {
        self.stop();
        std::fs::create_dir_all(repo)?;
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("--store")
            .arg(repo.join("store"))
            .arg("--cache-dir")
            .arg(repo.join("server-meta"))
            .args(["serve", "--listen", "127.0.0.1:0", "--quiet"]);
        let (child, url) = start_server(cmd)?;
        let (url, proxy) = match &self.link {
            None => (url, None),
            Some(link) => {
                let addr = url
                    .strip_prefix("http://")
                    .and_then(|a| a.parse().ok())
                    .with_context(|| format!("strata serve listens on {url}?"))?;
                let proxy = LinkProxy::start(addr, link)?;
                (format!("http://{}", proxy.addr), Some(proxy))
            }
        };
        *self.server.lock().expect("poisoned") = Some(Served {
            child,
            _proxy: proxy,
            url: format!("{url}/bench"),
            cache: repo.join("runner-cache"),
        });
        Ok(())
    }

    fn persist(&self, _repo: &Path, tree: &Path, n: usize) -> Result<Step> {
        let (parent, name) = split(tree)?;
        let b = q(&self.bin);
        let url = self.with(|s| s.url.clone());
        run(
            &format!("{b} --store {url} run create --run r{n} --job a --job b:a"),
            &parent,
            &[],
        )?;
        let (sample, v) = self.timed(
            &format!("{b} --store {url} --cache-size 0 --json persist --run r{n} --job a --root . '{name}'"),
            &parent,
        )?;
        Ok(Step {
            sample,
            network_bytes: v["network"]["sent"].as_u64(),
            content_bytes: None,
        })
    }

    fn attach(&self, repo: &Path, n: usize, target: &Path) -> Result<Step> {
        let (url, cache) = self.with(|s| (s.url.clone(), s.cache.clone()));
        let (sample, v) = self.timed(
            &format!(
                "{} --store {url} --cache-dir {} --json attach --run r{n} --job b --at {}",
                q(&self.bin),
                q(&cache),
                q(target)
            ),
            repo,
        )?;
        Ok(Step {
            sample,
            network_bytes: v["network"]["received"].as_u64(),
            content_bytes: v["bytes_from_store"].as_u64(),
        })
    }

    fn reuses_target(&self) -> bool {
        true
    }

    /// As for `Strata`: the server's objects and its `.local` index.
    fn repo_bytes(&self, repo: &Path) -> u64 {
        disk_bytes(&repo.join("store/bench"), &[".tmp"])
    }
}
