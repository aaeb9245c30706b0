//! strata as a compared tool: on its embedded local store, and through
//! `strata serve` on loopback (optionally behind the latency proxy).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{q, split, Step, Tool};
use crate::measure::{disk_bytes, run, Sample};
use crate::wire::{Link, LinkProxy};

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

/// Starts `strata serve` (`cmd`, listening on port 0) and waits until it
/// says where it listens: the child and its URL. Its stderr is drained so
/// it never blocks on a pipe.
pub fn start_server(cmd: std::process::Command) -> Result<(std::process::Child, String)> {
    start_server_logged(cmd, |_| {})
}

/// `start_server`, handing each line the server logs after it listens to
/// `log` (on a thread of its own).
pub fn start_server_logged(
    mut cmd: std::process::Command,
    mut log: impl FnMut(String) + Send + 'static,
) -> Result<(std::process::Child, String)> {
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
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(&mut log));
    Ok((child, url))
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
