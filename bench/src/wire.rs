//! The tarball baseline over the network: a blob server on loopback that
//! stores what a client streams to it and streams it back, and the client
//! (`strata-bench net-put|net-get`, hidden subcommands a shell pipeline
//! calls). Through the latency proxy, it is what `tar | zstd` piped to a
//! socket costs at a given round trip and bandwidth: the upload ends when
//! the server has every byte (it acknowledges after the end of the
//! stream), the download when the last byte arrived.
//!
//! Protocol: `PUT NAME\n` then the bytes, then the client's half-close;
//! the server answers `ok\n`. `GET NAME\n`; the server sends the bytes and
//! closes. Names are plain file names. Knows nothing about tarballs.
//!
//! Also the link (`Link`) and the latency proxy (`LinkProxy`) that puts it
//! in front of either server: the
//! `strata-proxy` command, run as a process of its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

/// A link through the latency proxy: its round trip, and a bandwidth cap.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Link {
    pub rtt_ms: f64,
    pub mbit: Option<f64>,
}

use anyhow::{bail, Context, Result};

/// A blob server on an ephemeral loopback port, storing under `dir`; it
/// runs until the process ends.
pub fn serve(dir: &Path) -> Result<SocketAddr> {
    std::fs::create_dir_all(dir)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                if let Err(e) = answer(conn, &dir) {
                    eprintln!("strata-bench: blob server: {e:#}");
                }
            });
        }
    });
    Ok(addr)
}

fn answer(conn: TcpStream, dir: &Path) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let (verb, name) = line
        .trim_end()
        .split_once(' ')
        .context("a request line is VERB NAME")?;
    let path = blob(dir, name)?;
    let mut conn = conn;
    match verb {
        "PUT" => {
            let mut file = std::fs::File::create(&path)?;
            std::io::copy(&mut reader, &mut file)?;
            conn.write_all(b"ok\n")?;
        }
        "GET" => {
            std::io::copy(&mut std::fs::File::open(&path)?, &mut conn)?;
        }
        _ => bail!("unknown verb {verb:?}"),
    }
    Ok(())
}

fn blob(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("bad blob name {name:?}");
    }
    Ok(dir.join(name))
}

/// The latency proxy (`strata-proxy`, built beside this binary) in front
/// of `upstream`, as a process of its own; killed when dropped. Not in
/// this process: its buffers would count in the peak RSS of every command
/// the benchmark forks (a forked child's peak starts at its parent's
/// size), and its threads would run in the benchmark.
#[derive(Debug)]
pub struct LinkProxy {
    child: Child,
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl LinkProxy {
    pub fn start(upstream: SocketAddr, link: &Link) -> Result<LinkProxy> {
        let bin = std::env::current_exe()?.with_file_name("strata-proxy");
        let mut cmd = Command::new(&bin);
        cmd.arg(upstream.to_string())
            .arg("--one-way-ms")
            .arg((link.rtt_ms / 2.0).to_string());
        if let Some(mbit) = link.mbit {
            cmd.arg("--mbit").arg(mbit.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (cargo build --release -p strata-proxy)",
                    bin.display()
                )
            })?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("strata-proxy printed {line:?}, not its address"))?;
        Ok(LinkProxy { child, addr })
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `net-put ADDR NAME`: streams stdin to the blob server as NAME and
/// waits for its acknowledgement.
pub fn put(addr: &str, name: &str) -> Result<()> {
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.write_all(format!("PUT {name}\n").as_bytes())?;
    std::io::copy(&mut std::io::stdin().lock(), &mut conn)?;
    conn.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    if answer != "ok\n" {
        bail!("the blob server answered {answer:?}");
    }
    Ok(())
}

/// `net-get ADDR NAME`: streams blob NAME to stdout.
pub fn get(addr: &str, name: &str) -> Result<()> {
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.write_all(format!("GET {name}\n").as_bytes())?;
    std::io::copy(&mut conn, &mut std::io::stdout().lock())?;
    Ok(())
}
