//! Real servers for the networked tests, started and stopped by the tests
//! themselves: `strata serve` (the binary under test) and Garage, the
//! S3-compatible store of ../shared/s3-server.md (`.ci/run` installs it).
//! Each is killed when its guard drops, also when a test panics.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

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
        let mut cmd = strata();
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

/// A single-node Garage on loopback with one bucket.
pub struct Garage {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn hex(n: usize) -> String {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut seed)
        .unwrap();
    let mut out = String::new();
    let mut h = blake3::Hasher::new();
    h.update(&seed);
    let mut reader = h.finalize_xof();
    while out.len() < n {
        let mut b = [0u8; 1];
        reader.fill(&mut b);
        out.push_str(&format!("{:02x}", b[0]));
    }
    out.truncate(n);
    out
}

/// The garage binary: on PATH, or where `cargo install` puts it.
pub fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GARAGE_BIN") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .find(|p| p.exists())
        })
        .unwrap_or_default();
    let cargo = dirs::home_dir().map(|h| h.join(".cargo/bin/garage"));
    on_path.or(cargo.filter(|p| p.exists())).unwrap_or_else(|| {
        panic!(
            "garage (the S3-compatible server these tests run against) is not installed: \
                 run `cargo install --locked garage --version 2.5.0`, or ./.ci/test, which does"
        )
    })
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (rpc, s3) = (free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                dir.path().display(),
                secret = hex(64),
            ),
        )
        .unwrap();
        let access_key = format!("GK{}", hex(24));
        let secret_key = hex(64);
        let bucket = "strata-test".to_string();
        let child = Command::new(garage_bin())
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_CONFIG_FILE", &config)
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &bucket)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start garage");
        let mut g = Garage {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket,
            access_key,
            secret_key,
        };
        g.wait_ready();
        g
    }

    /// Waits until the S3 port answers HTTP and the default bucket exists.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("garage exited at start: {status}");
            }
            if let Ok(mut s) = TcpStream::connect(&addr) {
                use std::io::Write;
                let req = format!(
                    "HEAD /{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                    self.bucket
                );
                let mut answer = String::new();
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.1")
                {
                    // Any HTTP answer: the API is up. Give the default
                    // bucket's creation a moment to land.
                    std::thread::sleep(Duration::from_millis(300));
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("garage did not answer on {} within 30 s", self.endpoint);
    }

    /// The environment a strata process needs to reach the bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "garage".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }

    /// Sets that environment in this (test) process, for library calls.
    pub fn set_env(&self) {
        for (k, v) in self.env() {
            // Tests using this run one Garage per process.
            std::env::set_var(k, v);
        }
    }

    /// An `s3://` location under a fresh prefix.
    pub fn location(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-node Garage cluster on loopback (replication factor 3, one zone
/// per node), with one bucket and a key for it: ../shared/s3-server.md.
pub struct GarageCluster {
    nodes: Vec<Option<Child>>,
    configs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
    /// Each node's S3 endpoint.
    pub endpoints: Vec<String>,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl GarageCluster {
    pub fn start() -> GarageCluster {
        let dir = tempfile::tempdir().unwrap();
        let secret = hex(64);
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..3 {
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let node = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node).unwrap();
            let config = node.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = 3\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                     [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                    node.display(),
                ),
            )
            .unwrap();
            let child = Command::new(garage_bin())
                .arg("server")
                .env("GARAGE_CONFIG_FILE", &config)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start garage");
            nodes.push(Some(child));
            configs.push(config);
            endpoints.push(format!("http://127.0.0.1:{s3}"));
        }
        let mut cluster = GarageCluster {
            nodes,
            configs,
            _dir: dir,
            endpoints,
            bucket: "strata-cluster".into(),
            access_key: String::new(),
            secret_key: String::new(),
        };
        cluster.form();
        cluster
    }

    /// `garage` with node `i`'s config: its output, or a panic naming it.
    fn admin(&self, i: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(&self.configs[i])
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            // The node may still be starting: its RPC port answers soon.
            if Instant::now() > deadline {
                panic!(
                    "garage {args:?} on node {i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Connects the nodes, applies a layout of one zone each, creates the
    /// bucket and its key.
    fn form(&mut self) {
        let ids: Vec<String> = (0..3)
            .map(|i| self.admin(i, &["node", "id", "-q"]).trim().to_string())
            .collect();
        for id in &ids[1..] {
            self.admin(0, &["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            let zone = format!("dc{}", i + 1);
            self.admin(0, &["layout", "assign", "-z", &zone, "-c", "1G", short]);
        }
        self.admin(0, &["layout", "apply", "--version", "1"]);
        self.admin(0, &["bucket", "create", &self.bucket]);
        let key = self.admin(0, &["key", "create", "strata-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name:?} in garage's answer: {key}"))
        };
        self.access_key = field("Key ID:");
        self.secret_key = field("Secret key:");
        self.admin(
            0,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                &self.bucket,
                "--key",
                "strata-key",
            ],
        );
        // Wait until node 0's S3 API serves the bucket.
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.endpoints[0].trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if TcpStream::connect(&addr).is_ok() {
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("garage cluster's S3 API did not answer within 30 s");
    }

    /// The environment a strata process needs to reach the bucket through
    /// node `node`'s S3 API.
    pub fn env(&self, node: usize) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoints[node].clone()),
            ("AWS_REGION", "garage".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }

    /// An `s3://` location under `prefix`.
    pub fn location(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Stops node `i` (SIGKILL): the others keep a quorum of two.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
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
        let mut c = strata();
        c.arg("--store")
            .arg(&self.store)
            .arg("--cache")
            .arg(&self.cache);
        if let Some(t) = &self.token {
            c.env("STRATA_TOKEN", t);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.envs(env.iter().copied());
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        c.args(args).output().unwrap()
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
