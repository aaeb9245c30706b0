//! A store: its backend (where the durable objects live), its config, the
//! chunk lookup, and the local `sled` metadata that caches them.
//!
//! A store is named by a location (`StoreLocation`): a directory, a
//! `strata serve` namespace (`http(s)://HOST:PORT/NS`) or an S3 prefix
//! (`s3://BUCKET/PREFIX`). A directory keeps its sled metadata inside
//! (`.local/meta`); an S3 store keeps it in the runner's cache directory,
//! one per location; a server client needs none beyond the process (the
//! server answers chunk queries), so its sled is temporary.
//!
//! Opening a directory or an S3 store takes an exclusive lock on a metadata
//! directory for the life of the `Store` (sled allows one process at a
//! time). Processes never queue behind each other for it: each takes a
//! metadata directory, a *slot*, of its own (`free_meta_slot`; up to
//! `META_SLOTS`, then it waits and is told so through
//! `Observer::waiting_for_lock`), a complete index kept in step with the
//! objects like an S3 replica's (`repo::synced`), so several jobs on one
//! runner persist, attach and gc one store at once. A directory store's
//! slot also names its temporary directory (`.tmp/<slot>`), which only the
//! slot's holder writes and which it empties on taking the slot. The sled
//! database is a cache: if it is missing or unreadable it is rebuilt from
//! the objects (`meta::MetaDb`, which alone opens it).
//!
//! By idea: `observer` (what a long operation tells its caller),
//! `location` (where a store is), `options` (how to open one), `open` (the
//! three openers and the config), `slots` (metadata slots and file locks),
//! `synced` and `remote` (the two chunk lookups), `frame_cache`. This module
//! holds the `Store` itself and its methods; it knows nothing of commands.

pub mod frame_cache;
mod location;
mod observer;
mod open;
#[cfg(test)]
mod open_cost;
mod options;
pub mod remote;
mod slots;
pub mod synced;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::http::HttpTransport;
use crate::backend::{Backend, Traffic};
use crate::error::{Error, Result};
use crate::format::config::StoreConfig;
use crate::format::graph::Graph;
use crate::format::keys::run_prefix;
use crate::format::records::RunRecord;
use crate::id::{JobName, RunName};
use crate::lookup::ChunkLookup;
use crate::meta::catalog::{Catalog, LayerRef};
use crate::meta::chunks::ChunkIndex;
use crate::meta::MetaDb;
use crate::util::Clock;
use frame_cache::FrameCache;
use remote::RemoteLookup;
use synced::SyncedIndex;

pub use location::StoreLocation;
use observer::Heard;
pub use observer::{Observer, Progress, Quiet, Step};
pub use options::{default_cache_dir, OpenOptions, StatCacheUse};
pub(crate) use slots::{log_lock, FileLock};

/// Who answers chunk queries.
#[derive(Debug)]
enum Lookup {
    /// This process, from its own index (directory and S3 stores).
    Local(Box<SyncedIndex>),
    /// The server (`strata serve` stores).
    Remote(RemoteLookup),
}

/// A store opened for use: its objects, config, chunk lookup and local
/// caches. Operations reach them through its methods.
#[derive(Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    config: StoreConfig,
    lookup: Lookup,
    catalog: Catalog,
    /// The server, for a `strata serve` store (gc and stats run there).
    server: Option<HttpTransport>,
    /// The runner's chunk cache (remote stores only).
    cache: Option<FrameCache>,
    db: MetaDb,
    location: StoreLocation,
    clock: Clock,
    /// Whether a persist refuses to commit after half the gc grace period
    /// (always, but for the test that shows what the guard prevents).
    commit_guard: bool,
    /// Who hears of progress (`Quiet` unless the caller says).
    observer: Heard,
    /// The runner's stat caches (`tree::stat_cache`): their directory,
    /// and whether they are trusted (else only written).
    stat_cache: Option<(PathBuf, bool)>,
    _lock: Option<FileLock>,
    /// This process cannot write the store (a read-only mount): it is
    /// read without a metadata slot, and reads record no use.
    read_only: bool,
}

impl Store {
    /// Wraps the backend in an adapter of the same trait (fault injection
    /// in tests; caching, limits and the like): wrap, don't flag.
    pub fn wrap_backend(mut self, wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>) -> Self {
        self.backend = wrap(self.backend);
        if let Lookup::Local(index) = &mut self.lookup {
            index.set_backend(self.backend.clone());
        }
        self
    }

    /// Replaces the clock (tests; `$STRATA_NOW`).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        if let Lookup::Local(index) = &mut self.lookup {
            index.set_clock(clock.clone());
        }
        self.clock = clock;
        self
    }

    /// Whether this process cannot write the store (a directory store on
    /// a read-only mount): attach and restore work, recording no use.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Tells `observer` of the progress of persists and attaches.
    pub fn with_observer(mut self, observer: Arc<dyn Observer + Send + Sync>) -> Self {
        self.observer = Heard(observer);
        self
    }

    /// The progress observer, shared (for work on other threads).
    pub(crate) fn observer(&self) -> Arc<dyn Observer + Send + Sync> {
        self.observer.0.clone()
    }

    /// Turns off persist's commit guard (the half-grace-period check), so a
    /// test can show the data loss the guard prevents. Never use it
    /// elsewhere: gc may then reclaim chunks a slow persist reused.
    #[doc(hidden)]
    pub fn without_commit_guard_for_tests(mut self) -> Self {
        self.commit_guard = false;
        self
    }

    /// The store's idea of now, in Unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Where the store is.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Where the runner's stat caches are, and whether persist and attach
    /// trust them (`OpenOptions::stat_cache`); `None`: not used.
    pub(crate) fn stat_cache(&self) -> Option<(&Path, bool)> {
        self.stat_cache
            .as_ref()
            .map(|(dir, trust)| (dir.as_path(), *trust))
    }

    /// Uses the stat caches in `dir` (`trust`: skip reading files whose
    /// stat is unchanged); a store opened with `open_at` does by default.
    pub fn with_stat_cache(mut self, dir: PathBuf, trust: bool) -> Self {
        self.stat_cache = Some((dir, trust));
        self
    }

    /// The server of a `strata serve` store: server-side operations (gc,
    /// stats) go there.
    pub fn server(&self) -> Option<&HttpTransport> {
        self.server.as_ref()
    }

    /// The local chunk index, where this process keeps one.
    pub(crate) fn local_index(&self) -> Option<&ChunkIndex> {
        match &self.lookup {
            Lookup::Local(index) => Some(index.index()),
            Lookup::Remote(_) => None,
        }
    }

    /// What chunk queries go to (the local index or the server).
    pub fn chunk_lookup(&self) -> &dyn ChunkLookup {
        match &self.lookup {
            Lookup::Local(index) => index.as_ref(),
            Lookup::Remote(remote) => remote,
        }
    }

    /// The run and layer records.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The runner's chunk cache (remote stores only).
    pub(crate) fn frame_cache(&self) -> Option<&FrameCache> {
        self.cache.as_ref()
    }

    /// Whether persist's commit guard is on (always, but in one test).
    pub(crate) fn commit_guard(&self) -> bool {
        self.commit_guard
    }

    /// Bytes this store's backend has moved over the network so far.
    pub fn traffic(&self) -> Traffic {
        self.backend.traffic()
    }

    /// The store's config.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Where the objects are.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The backend, shared (for wrapping it).
    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// Creates a run with its job graph (idempotent for the same graph),
    /// recording the ref of the CI job that creates it, if any; a run that
    /// exists for another ref is `Error::RunOfAnotherRef`. Returns whether
    /// it was new.
    pub fn create_run(
        &self,
        run: &RunName,
        graph: Graph,
        ref_scope: Option<String>,
    ) -> Result<bool> {
        let created = self
            .catalog
            .create_run(self.backend(), run, graph, ref_scope, self.now())?;
        self.flush()?;
        Ok(created)
    }

    /// The record of `run`.
    pub fn run(&self, run: &RunName) -> Result<RunRecord> {
        self.catalog.run(self.backend(), run)
    }

    /// The record of `run` and every key under `runs/<run>/` (its layer
    /// refs, results, uses), read at once: one round trip.
    pub fn run_with_keys(&self, run: &RunName) -> Result<(RunRecord, Vec<String>)> {
        let (record, keys) = std::thread::scope(|s| {
            let keys = s.spawn(|| self.backend.list(&run_prefix(run)));
            (self.run(run), keys.join().expect("listing a run panicked"))
        });
        Ok((record?, keys?))
    }

    /// Every run's name, sorted.
    pub fn run_names(&self) -> Result<Vec<RunName>> {
        self.catalog.run_names(self.backend())
    }

    /// The run record and the index of `job` in its graph, or an error
    /// naming the unknown run or job.
    pub fn run_job(&self, run: &RunName, job: &JobName) -> Result<(RunRecord, usize)> {
        let record = self.run(run)?;
        let i = job_index(run, &record, job)?;
        Ok((record, i))
    }

    /// The layers of `job` in `run`, in persist order.
    pub fn layers(&self, run: &RunName, job: &JobName) -> Result<Vec<LayerRef>> {
        self.catalog.layers(self.backend(), run, job)
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()
    }
}

/// The index of `job` in `run`'s graph, or an error naming the unknown job
/// and the known ones.
pub(crate) fn job_index(run: &RunName, record: &RunRecord, job: &JobName) -> Result<usize> {
    record.graph.index_of(job).ok_or_else(|| Error::UnknownJob {
        run: run.clone(),
        job: job.clone(),
        known: record.graph.job_list(),
    })
}
