//! `strata serve`: an HTTP server over a strata store, so runners on many
//! machines share one store (docs/protocol.md is the API, docs/deploy.md
//! how to run it).
//!
//! A thin adapter: every request is authenticated (`auth`) and allowed
//! (`strata_store::access`) before its body is read, then parsed, and the
//! store library is called on one of `--workers` store-work threads, in
//! turn per client (`sched`); objects a client writes
//! are checked by `strata_store::ingest` before they are stored. `listen`
//! accepts connections within the limits and timeouts. Each namespace is a store of its own (a directory or an S3
//! prefix under `--store`), so namespaces share nothing: a client cannot
//! read another namespace's chunks, nor learn whether they exist.
//!
//! The server knows nothing about chunking, persist or attach: clients do
//! that work and the server answers "which of these chunks are missing",
//! "where are these chunks", and moves objects.

// What a request reaches must not panic: every unwrap or expect here is
// refused unless its line says why it cannot fail.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod config;
mod layers;
mod limits;
mod listen;
mod log;
mod metrics;
mod objects;
pub mod oidc;
mod presign;
mod queue_metrics;
mod routes;
mod sched;
mod state;
mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use strata_store::Store;
use strata_store::{Clock, Observer, OpenOptions, StoreLocation};

pub use auth::{Auth, Scope};
pub use limits::RateLimit;
pub use listen::Limits;
pub use sched::THREAD_PREFIX as STORE_THREAD_PREFIX;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// A directory or `s3://BUCKET/PREFIX`; namespace N lives at `<store>/N`.
    pub store: String,
    pub auth: Option<Auth>,
    /// CI identities it accepts (`--oidc`), beside the static tokens.
    pub oidc: Option<Arc<oidc::Oidc>>,
    /// Serve without tokens on a non-loopback address.
    pub insecure: bool,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The largest request body accepted (a pack is about 4 MiB).
    pub max_body: usize,
    /// Timeouts and the connection cap.
    pub limits: Limits,
    /// Requests per second per token (per client address without auth).
    pub rate: Option<RateLimit>,
    /// Where S3 namespaces keep their local metadata.
    pub meta_dir: PathBuf,
    /// Log each write request to stderr.
    pub log: bool,
    /// Run gc on every namespace this often.
    pub gc_every: Option<std::time::Duration>,
    /// Storage budgets gc keeps each namespace under.
    pub budgets: config::Budgets,
    /// How stale an S3 namespace's chunk index may grow before a chunk
    /// query syncs it from the bucket: other replicas' writes are seen
    /// within this (`None`: the library's default).
    pub resync_every: Option<std::time::Duration>,
    /// The stores' clock (`$STRATA_NOW` for tests).
    pub clock: Clock,
    /// Hand out presigned URLs valid this long to read packs from the
    /// bucket (an `s3://` store only; docs/deploy.md, "Reads straight
    /// from the bucket").
    pub presign_ttl: Option<std::time::Duration>,
    /// Threads for async I/O, and as many again for store work (`sched`):
    /// one per core by default (`--workers`).
    pub workers: usize,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve {0} without --auth: anyone who can reach it could read and write \
         every namespace; give --auth FILE, listen on 127.0.0.1, or pass --insecure"
    )]
    InsecureAddress(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS certificate or key: {0}")]
    Tls(std::io::Error),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("--presign-ttl: {0}")]
    Presign(&'static str),
}

/// Says in the log why a request waits when another process holds a
/// namespace's store directory (a second server on it, or a `strata`
/// command run there by hand), so the wait is never silent.
struct LockLog;

impl Observer for LockLog {
    fn waiting_for_lock(&self, dir: &std::path::Path) {
        log::line(format_args!(
            "waiting for another process to release {}: its 8 metadata slots are all in use \
             by strata serve or strata commands on this store",
            dir.display()
        ));
    }
}

/// The open namespaces.
#[derive(Debug)]
pub(crate) struct Namespaces {
    base: String,
    meta_dir: PathBuf,
    resync_every: Option<std::time::Duration>,
    clock: Clock,
    open: Mutex<HashMap<String, Arc<Store>>>,
    /// Held while a namespace is opened, so two first requests at once
    /// open it once: a second open would take a second metadata slot, and
    /// whichever came second into `open` would win, perhaps a fresh slot
    /// that does not know the packs that arrived without an index object
    /// (tests/network.rs, the server killed mid-persist).
    opening: Mutex<()>,
}

impl Namespaces {
    /// The store of namespace `ns`, opened (and created) on first use.
    pub(crate) fn get(&self, ns: &str) -> strata_store::Result<Arc<Store>> {
        let known = |open: &Mutex<HashMap<String, Arc<Store>>>| {
            open.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(ns)
                .cloned()
        };
        if let Some(s) = known(&self.open) {
            return Ok(s);
        }
        let _opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = known(&self.open) {
            return Ok(s);
        }
        let location = if self.base.starts_with("s3://") {
            StoreLocation::S3(format!("{}/{ns}", self.base.trim_end_matches('/')))
        } else {
            StoreLocation::Dir(PathBuf::from(&self.base).join(ns))
        };
        let options = OpenOptions {
            cache_dir: Some(self.meta_dir.clone()),
            cache_bytes: Some(0),
            resync_every: self.resync_every,
            ..OpenOptions::default()
        };
        let store =
            Arc::new(Store::open_at(&location, &options, &LockLog)?.with_clock(self.clock.clone()));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(ns.to_string(), store.clone());
        Ok(store)
    }

    /// The namespaces opened since the server started.
    pub(crate) fn open_names(&self) -> Vec<String> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.keys().cloned().collect()
    }

    /// The namespaces there are: a directory store's subdirectories, or
    /// (S3) those opened since the server started.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        if !self.base.starts_with("s3://") {
            if let Ok(dir) = std::fs::read_dir(&self.base) {
                for e in dir.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let is_store = e
                        .path()
                        .join(strata_store::format::keys::CONFIG_KEY)
                        .exists();
                    if is_store && strata_store::protocol::validate_namespace(&name).is_ok() {
                        names.push(name);
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

/// Runs gc on every namespace, one after another, forever. Every replica
/// may: on a shared store one gc at a time runs (`ops::lease`).
async fn scheduled_gc(state: Arc<state::State>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for ns in state.namespaces.names() {
                let options = strata_store::gc::GcOptions {
                    max_size: state.budgets.of(&ns),
                    ..Default::default()
                };
                let result = state
                    .namespaces
                    .get(&ns)
                    .and_then(|store| strata_store::gc::gc(&store, &options));
                state.metrics.gc_pass(&ns, &result);
                match result {
                    Ok(r) => log::line(format_args!(
                        "scheduled gc {ns}: {} runs expired, {} caches expired, \
                         {} evicted over budget, {} packs deleted, {} B reclaimed{}",
                        r.runs_expired.len(),
                        r.caches_expired,
                        r.evicted.len(),
                        r.packs_deleted,
                        r.bytes_reclaimed,
                        match r.over_budget {
                            0 => String::new(),
                            b => format!("; {b} B over budget in runs used within the grace"),
                        }
                    )),
                    // Another replica's gc holds the lease: its turn.
                    Err(e @ strata_store::Error::GcBusy { .. }) => {
                        log::line(format_args!("scheduled gc {ns} skipped: {e}"))
                    }
                    Err(e) => log::line(format_args!("scheduled gc {ns} failed: {e}")),
                }
            }
        })
        .await;
    }
}

/// What every handler shares, from the config; `pool` runs store work.
fn shared_state(config: &ServerConfig, pool: sched::Pool) -> state::State {
    state::State {
        namespaces: Namespaces {
            base: config.store.clone(),
            meta_dir: config.meta_dir.clone(),
            resync_every: config.resync_every,
            clock: config.clock.clone(),
            open: Mutex::new(HashMap::new()),
            opening: Mutex::new(()),
        },
        auth: config.auth.clone(),
        oidc: config.oidc.clone(),
        budgets: config.budgets.clone(),
        limiter: config.rate.map(limits::Limiter::new),
        max_body: config.max_body,
        log: config.log,
        metrics: Arc::new(metrics::Metrics::new()),
        tls: config.tls.is_some(),
        presign_ttl: config.presign_ttl,
        pool,
    }
}

/// What the server says when it starts.
#[derive(Debug, Clone)]
pub struct Started {
    pub addr: SocketAddr,
    pub url: String,
    pub warning: Option<String>,
}

/// Runs the server until the process is stopped. `ready` is called once it
/// listens (with the actual address, for `--listen 127.0.0.1:0`).
pub fn serve(config: ServerConfig, ready: impl FnOnce(&Started)) -> Result<(), ServeError> {
    let loopback = config.listen.ip().is_loopback();
    let open = config.auth.is_none() && config.oidc.is_none();
    if open && !loopback && !config.insecure {
        return Err(ServeError::InsecureAddress(config.listen));
    }
    if let Some(ttl) = config.presign_ttl {
        if !config.store.starts_with("s3://") {
            return Err(ServeError::Presign(
                "URLs read from a bucket: the store must be s3://BUCKET/PREFIX",
            ));
        }
        if ttl < std::time::Duration::from_secs(1) || ttl > presign::MAX_TTL {
            return Err(ServeError::Presign("between 1s and 7d (S3's limits)"));
        }
    }
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let warning = open.then(|| {
        if loopback {
            "no --auth: serving anyone, so listening on loopback only".to_string()
        } else {
            "no --auth and --insecure: serving anyone who can reach this address".to_string()
        }
    });
    let descriptors = listen::raise_descriptor_limit();
    let cap = listen::connection_cap(config.limits.max_connections, descriptors);
    if cap < config.limits.max_connections {
        log::line(format_args!(
            "serving at most {cap} connections at once: {descriptors} descriptors allowed"
        ));
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(listen::tls_acceptor(cert, key).map_err(ServeError::Tls)?),
        None => None,
    };
    let workers = config.workers.max(1);
    // What still runs on tokio's blocking threads is not a request's store
    // call: a CI token's check, scheduled gc, and the web page's archive
    // downloads, which stream at the browser's pace and so must not hold a
    // store-work thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("strata-async")
        .enable_all()
        .build()?;
    let state = Arc::new(shared_state(&config, sched::Pool::new(workers)?));
    let metrics = state.metrics.clone();
    let app = routes::router(state.clone());
    let started = Started {
        addr,
        url: format!("{scheme}://{addr}"),
        warning,
    };
    if let Some(every) = config.gc_every {
        runtime.spawn(scheduled_gc(state, every));
    }
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        ready(&started);
        listen::serve(listener, tls, app, config.limits, cap, metrics).await;
        Ok(())
    });
    // The stores (and an S3 store's own runtime) are dropped here, outside
    // any async context.
    runtime.shutdown_background();
    result
}
