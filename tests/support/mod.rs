//! Real servers for the networked tests, started and stopped by the tests
//! themselves: `strata serve` (the binary under test) and Garage, the
//! S3-compatible store of ../shared/s3-server.md (`.ci/run` installs it).
//! Each is killed when its guard drops, also when a test panics.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod http;

pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

/// A `strata` command with no store settings inherited from the caller.
pub fn strata() -> Command {
    let mut c = Command::new(strata_bin());
    for v in [
        "STRATA_STORE",
        "STRATA_RUN",
        "STRATA_JOB",
        "STRATA_TOKEN",
        "STRATA_CACHE",
        "STRATA_CACHE_MIB",
        "STRATA_CA_CERT",
        "STRATA_NET_TIMEOUT",
    ] {
        c.env_remove(v);
    }
    c
}

/// A running `strata serve`.
pub struct Server {
    child: Child,
    /// Its own cache directory (an S3 store's local index): in the user's
    /// default one, an index left by an earlier test's bucket of the same
    /// name would be taken for this one's.
    _cache: tempfile::TempDir,
    pub url: String,
    /// Lines the server printed to stderr (its access log), as they come.
    pub log: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `strata serve --listen 127.0.0.1:0` with `args`, waits for it
    /// to listen.
    pub fn start(store: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_on("127.0.0.1:0", store, args, env)
    }

    pub fn start_on(listen: &str, store: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(strata(), listen, store, args, env)
    }

    /// `start`, run under `wrapper` (`prlimit --nofile=256:4096`, say).
    pub fn start_under(
        wrapper: &[&str],
        store: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(strata_bin());
        Server::spawn(cmd, "127.0.0.1:0", store, args, env)
    }

    fn spawn(
        mut cmd: Command,
        listen: &str,
        store: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        for v in ["STRATA_STORE", "STRATA_TOKEN", "STRATA_CACHE"] {
            cmd.env_remove(v);
        }
        let cache = tempfile::tempdir().expect("a cache directory for the server");
        cmd.arg("--cache-dir").arg(cache.path());
        cmd.args(["--store", store, "serve", "--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start strata serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("strata serve did not start: {:?}", child.try_wait()));
            if let Some(url) = line
                .strip_prefix("strata serve: listening on ")
                .and_then(|r| r.split(' ').next())
            {
                return Server {
                    child,
                    _cache: cache,
                    url: url.to_string(),
                    log: rx,
                };
            }
        }
    }

    /// The store location of namespace `ns` on this server.
    pub fn ns(&self, ns: &str) -> String {
        format!("{}/{ns}", self.url)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no server log line with {needle:?} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(unused_imports)]
pub use strata_store::testing::garage::{Garage, GarageCluster};

/// Writes `files` (relative path, content) under `root`.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, body) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

/// The relative paths of the regular files under `root`, sorted, as text.
pub fn file_names(root: &Path) -> Vec<String> {
    files(root)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Every regular file under `root`, relative, sorted.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(root).unwrap().to_path_buf())
        .collect();
    v.sort();
    v
}

/// Asserts two trees are the same: every entry's type, bytes, mode, mtime,
/// symlink target and hardlink group, empty directories too (the one tree
/// comparison every test suite uses).
pub fn same_tree(a: &Path, b: &Path) {
    strata_store::testing::assert_same_tree(a, b);
}

/// A client of a store: its location, token and runner cache.
#[derive(Clone)]
pub struct Client {
    pub store: String,
    pub token: Option<String>,
    pub cache: PathBuf,
    pub env: Vec<(&'static str, String)>,
    /// The working directory (cache key templates read files from it).
    pub dir: Option<PathBuf>,
}

impl Client {
    pub fn new(store: &str, cache: &Path) -> Self {
        Client {
            store: store.into(),
            token: None,
            cache: cache.into(),
            env: vec![],
            dir: None,
        }
    }

    pub fn with_token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(&[], args)
    }

    /// `run` with more environment (`STRATA_NOW`, say).
    pub fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.command(env, args).output().unwrap()
    }

    /// Runs and expects failure within `limit`, returning stderr and the
    /// time taken. A command still running at `limit` is killed and the
    /// test fails there and then: a regression to a hang fails, it does
    /// not hang the suite.
    pub fn fails_within(&self, limit: Duration, args: &[&str]) -> (String, Duration) {
        let started = Instant::now();
        let mut child = self
            .command(&[], args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("strata {args:?} was still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        let err = reader.join().unwrap();
        assert!(!status.success(), "strata {args:?} should have failed");
        (err, took)
    }

    /// The `strata` command for `args`, with this client's store, token,
    /// cache, environment and directory.
    pub fn command(&self, env: &[(&str, &str)], args: &[&str]) -> Command {
        let mut c = strata();
        c.arg("--store")
            .arg(&self.store)
            .arg("--cache-dir")
            .arg(&self.cache);
        if let Some(t) = &self.token {
            c.env("STRATA_TOKEN", t);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.envs(env.iter().copied());
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        c.args(args);
        c
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(&[], args)
    }

    /// `ok` with more environment.
    pub fn ok_with(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.run_with(env, args);
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.json_with(&[], args)
    }

    /// Runs with `--json` (and more environment), expects success, parses.
    pub fn json_with(&self, env: &[(&str, &str)], args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok_with(env, &a)).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_with(&[], args)
    }

    /// `fails` with more environment.
    pub fn fails_with(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.run_with(env, args);
        assert!(!out.status.success(), "strata {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn persist(&self, run: &str, job: &str, root: &Path, path: &str) -> Value {
        self.json(&[
            "persist",
            "--run",
            run,
            "--job",
            job,
            "--root",
            root.to_str().unwrap(),
            path,
        ])
    }

    pub fn attach(&self, run: &str, job: &str, at: &Path) -> Value {
        self.json(&[
            "attach",
            "--run",
            run,
            "--job",
            job,
            "--at",
            at.to_str().unwrap(),
        ])
    }
}

/// `files` files of `size` random (incompressible) bytes under `root`.
pub fn random_files(root: &Path, files: usize, size: usize, seed: u64) {
    let mut rng = strata_store::synth::Rng::new(seed);
    std::fs::create_dir_all(root).unwrap();
    for i in 0..files {
        let data: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
        std::fs::write(root.join(format!("blob{i:03}.bin")), data).unwrap();
    }
}

/// `(pid, lock path, taken, released)` from a `$STRATA_LOCK_LOG` file,
/// every lock released.
pub fn lock_intervals(log: &Path) -> Vec<(u32, String, u128, u128)> {
    let (done, open) = lock_log(log);
    assert!(open.is_empty(), "locks never released: {open:?}");
    done
}

/// The intervals of a `$STRATA_LOCK_LOG` file, and the locks still held
/// (`(pid, path)` and when taken).
pub fn lock_log(log: &Path) -> LockLog {
    let text = std::fs::read_to_string(log).unwrap();
    let mut open: std::collections::HashMap<(u32, String), u128> = Default::default();
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (pid, event, path, at) = (f[0].parse().unwrap(), f[1], f[2].to_string(), f[3]);
        let at: u128 = at.parse().unwrap();
        match event {
            "take" => assert!(open.insert((pid, path), at).is_none(), "{line}"),
            "release" => {
                let taken = open.remove(&(pid, path.clone())).expect(line);
                out.push((pid, path, taken, at));
            }
            e => panic!("unknown event {e}"),
        }
    }
    (out, open)
}

/// What `lock_log` reads: released intervals, and locks still held.
pub type LockLog = (
    Vec<(u32, String, u128, u128)>,
    std::collections::HashMap<(u32, String), u128>,
);
