//! One archive per job, as CI workspaces and artifacts keep them today:
//! `tar | zstd` or `tar | gzip` to a file, or streamed through the link.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{q, split, Step, Tool};
use crate::measure::run;
use crate::wire::{Link, LinkProxy};

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
