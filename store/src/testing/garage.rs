//! Garage, the S3-compatible store the tests and the benchmark run
//! against (../shared/s3-server.md): a single node, or a three-node
//! cluster, on loopback, started and stopped by whoever needs one. Each is
//! killed when its guard drops, also when a test panics. `.ci/test`
//! installs the binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A single-node Garage on loopback with one bucket.
#[derive(Debug)]
pub struct Garage {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The key's id.
    pub access_key: String,
    /// The key's secret.
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

/// Writes a node's `garage.toml` under `dir` (its metadata and data there
/// too, its RPC port free), replicating `replication` times, serving S3 on
/// port `s3`, with `extra` sections appended; returns its path.
fn write_config(dir: &Path, replication: u32, secret: &str, s3: u16, extra: &str) -> PathBuf {
    write_config_rpc(dir, replication, secret, s3, free_port(), extra)
}

/// `write_config` with the RPC port given.
fn write_config_rpc(
    dir: &Path,
    replication: u32,
    secret: &str,
    s3: u16,
    rpc: u16,
    extra: &str,
) -> PathBuf {
    let config = dir.join("garage.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = {replication}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n{extra}",
            dir.display(),
        ),
    )
    .unwrap();
    config
}

impl Garage {
    /// Starts one, waiting until it serves its bucket.
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let s3 = free_port();
        let config = write_config(dir.path(), 1, &hex(64), s3, "");
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
#[derive(Debug)]
pub struct GarageCluster {
    nodes: Vec<Option<Child>>,
    configs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
    /// Each node's S3 endpoint.
    pub endpoints: Vec<String>,
    /// The bucket.
    pub bucket: String,
    /// The key's id.
    pub access_key: String,
    /// The key's secret.
    pub secret_key: String,
}

impl GarageCluster {
    /// Starts the three nodes and forms the cluster. A port picked free
    /// can be taken by another process before the node binds it (tests
    /// run in parallel): a node that exits, or whose RPC port does not
    /// answer, has all three started again on new ports.
    pub fn start() -> GarageCluster {
        for _ in 0..5 {
            if let Some(mut cluster) = GarageCluster::spawn() {
                cluster.form();
                return cluster;
            }
        }
        panic!("a three-node garage cluster did not start in five tries");
    }

    /// Starts the nodes; `None` if one exits or does not listen.
    fn spawn() -> Option<GarageCluster> {
        let dir = tempfile::tempdir().unwrap();
        let secret = hex(64);
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        let mut endpoints = Vec::new();
        let mut rpcs = Vec::new();
        for i in 0..3 {
            let (s3, rpc) = (free_port(), free_port());
            let node = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node).unwrap();
            let admin = format!("\n[admin]\napi_bind_addr = \"127.0.0.1:{}\"\n", free_port());
            let config = write_config_rpc(&node, 3, &secret, s3, rpc, &admin);
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
            rpcs.push(rpc);
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
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut up = [false; 3];
        while !up.iter().all(|u| *u) {
            for (i, rpc) in rpcs.iter().enumerate() {
                let node = cluster.nodes[i].as_mut().expect("started");
                if node.try_wait().ok().flatten().is_some() {
                    return None; // dropped: the others are killed
                }
                up[i] = up[i] || TcpStream::connect(("127.0.0.1", *rpc)).is_ok();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(cluster)
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
