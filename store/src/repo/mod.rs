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
//! Opening a directory or an S3 store takes an exclusive lock on a sled
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
//! the objects.

pub mod frame_cache;
#[cfg(test)]
mod open_cost;
pub mod remote;
pub mod synced;

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::backend::http::{HttpOptions, HttpStore, HttpTransport};
use crate::backend::s3::S3;
use crate::backend::{Backend, LocalDir, Traffic};
use crate::error::{Error, IoContext, Result};
use crate::format::config::StoreConfig;
use crate::format::graph::Graph;
use crate::format::keys::{run_prefix, CONFIG_KEY};
use crate::format::records::RunRecord;
use crate::id::{JobName, RunName};
use crate::lookup::ChunkLookup;
use crate::meta::catalog::{Catalog, LayerRef};
use crate::meta::chunks::ChunkIndex;
use crate::util::Clock;
use frame_cache::FrameCache;
use remote::RemoteLookup;
use synced::{SyncedIndex, DEFAULT_RESYNC_EVERY};

/// What a long operation tells its caller; the library never prints.
pub trait Observer: Sync {
    /// Another process holds the store; this one waits for it.
    fn waiting_for_lock(&self, _store: &Path) {}
    /// Another attach is writing into the same target; this one waits for
    /// it to finish.
    fn waiting_for_target(&self, _target: &Path) {}
    /// A persist or attach moved on (called often, from any thread: the
    /// observer decides what to show, and how often).
    fn progress(&self, _progress: &Progress) {}
    /// A step of attach or persist was reached (`Step` says which), on the
    /// thread doing it. For tests: a hook that runs something at a precise
    /// point between two steps, instead of a sleep hoping to land there.
    fn reached(&self, _step: Step, _path: &Path) {}
}

/// The points of attach and persist an observer hears of (`reached`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Attach holds its target's lock and has not looked at it yet.
    AttachLocked,
    /// Attach has written every file (into the staging directory, for an
    /// empty target), and has not yet recorded them in the stat cache.
    AttachWritten,
    /// Persist has read (and hashed) the file at the path, and has not yet
    /// recorded it in the stat cache.
    PersistRead,
}

/// A store's progress observer (a wrapper, so `Store` stays `Debug`).
#[derive(Clone)]
struct Heard(Arc<dyn Observer + Send + Sync>);

impl std::fmt::Debug for Heard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// How far a persist or attach has come.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Progress {
    /// `persist` or `attach`.
    pub command: &'static str,
    /// Bytes of file content read (persist) or written (attach) so far.
    pub done_bytes: u64,
    /// Bytes of file content in all.
    pub total_bytes: u64,
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl Observer for Quiet {}

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory.
    Dir(PathBuf),
    /// `http(s)://HOST:PORT/NAMESPACE`.
    Http(String),
    /// `s3://BUCKET/PREFIX`.
    S3(String),
}

impl StoreLocation {
    /// Reads `--store`: a URL by its scheme, else a directory.
    pub fn parse(s: &str) -> StoreLocation {
        if s.starts_with("http://") || s.starts_with("https://") {
            StoreLocation::Http(s.to_string())
        } else if s.starts_with("s3://") {
            StoreLocation::S3(s.to_string())
        } else {
            StoreLocation::Dir(PathBuf::from(s))
        }
    }

    /// Whether it is reached over the network.
    pub fn is_remote(&self) -> bool {
        !matches!(self, StoreLocation::Dir(_))
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Dir(p) => write!(f, "{}", p.display()),
            StoreLocation::Http(u) | StoreLocation::S3(u) => f.write_str(u),
        }
    }
}

/// How to open a store beyond its location.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// For `strata serve`: the bearer token and trusted CA.
    pub http: HttpOptions,
    /// The runner's cache directory (`$STRATA_CACHE`): the chunk cache of
    /// remote stores, and an S3 store's metadata. `None`: the per-user
    /// default.
    pub cache_dir: Option<PathBuf>,
    /// The chunk cache's size bound in bytes; 0 turns it off.
    pub cache_bytes: Option<u64>,
    /// How stale an S3 store's local chunk index may grow before a chunk
    /// query syncs it (`repo::synced`); `None`: `DEFAULT_RESYNC_EVERY`.
    /// A long-lived process (a `strata serve` replica) sees other
    /// replicas' writes within this.
    pub resync_every: Option<std::time::Duration>,
    /// Whether persist and attach use the runner's stat cache
    /// (`$STRATA_CACHE/trees`, `tree::stat_cache`).
    pub stat_cache: StatCacheUse,
}

/// Whether persist and attach use the runner's stat cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatCacheUse {
    /// Skip reading a file whose stat is what the cache remembers; remember
    /// what was read or written.
    #[default]
    Trust,
    /// Read every file (`--no-stat-cache`); still remember what was read.
    Refresh,
    /// Neither read nor write the cache.
    Off,
}

/// The default cache bound: 2 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

/// The chunk cache `options` name, or `None` when it is turned off (a
/// bound of 0).
fn open_frame_cache(options: &OpenOptions) -> Result<Option<FrameCache>> {
    let limit = options.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES);
    if limit == 0 {
        return Ok(None);
    }
    FrameCache::at(&options.cache_root().join("frames"), limit).map(Some)
}

impl OpenOptions {
    /// The runner's cache directory: `cache_dir`, or the per-user default.
    pub fn cache_root(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(default_cache_dir)
    }
}

/// `$XDG_CACHE_HOME/strata` or `~/.cache/strata`.
pub fn default_cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("strata")
}

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
    db: sled::Db,
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
    /// Opens the store at `location`.
    pub fn open_at(
        location: &StoreLocation,
        options: &OpenOptions,
        observer: &dyn Observer,
    ) -> Result<Store> {
        let mut store = Store::open_location(location, options, observer)?;
        store.stat_cache = match options.stat_cache {
            StatCacheUse::Off => None,
            u => Some((options.cache_root().join("trees"), u == StatCacheUse::Trust)),
        };
        Ok(store)
    }

    fn open_location(
        location: &StoreLocation,
        options: &OpenOptions,
        observer: &dyn Observer,
    ) -> Result<Store> {
        match location {
            StoreLocation::Dir(root) => Store::open(root, observer),
            StoreLocation::Http(url) => {
                let http = HttpStore::new(url, options.http.clone())?;
                let transport = http.transport().clone();
                let backend: Arc<dyn Backend> = Arc::new(http);
                // The handshake and the config at once (one round trip);
                // the handshake's error, if any, says more.
                let (hello, config) = std::thread::scope(|s| {
                    let config = s.spawn(|| read_config(backend.as_ref()));
                    (
                        transport.handshake(),
                        config.join().expect("reading the config panicked"),
                    )
                });
                hello?;
                let config = config?;
                let db = sled::Config::new().temporary(true).open()?;
                let catalog = Catalog::open(&db)?;
                Ok(Store {
                    backend,
                    config,
                    lookup: Lookup::Remote(RemoteLookup::new(transport.clone())),
                    server: Some(transport),
                    catalog,
                    cache: open_frame_cache(options)?,
                    db,
                    location: location.clone(),
                    clock: Clock::System,
                    commit_guard: true,
                    observer: Heard(Arc::new(Quiet)),
                    stat_cache: None,
                    _lock: None,
                    read_only: false,
                })
            }
            StoreLocation::S3(url) => {
                let stall = options
                    .http
                    .stall_timeout
                    .unwrap_or(crate::backend::http::DEFAULT_STALL_TIMEOUT);
                let s3 = S3::with_stall_timeout(url, stall)?;
                let backend: Arc<dyn Backend> = Arc::new(s3);
                // The metadata cache is per store location on this runner,
                // and per process using it at once.
                let base = options
                    .cache_root()
                    .join("stores")
                    .join(&blake3::hash(url.as_bytes()).to_hex()[..16]);
                let slot = |i: usize| match i {
                    0 => base.clone(),
                    i => base.with_extension(i.to_string()),
                };
                let (_, dir, lock) = free_meta_slot(slot, observer)?;
                let cache = open_frame_cache(options)?;
                let every = options.resync_every.unwrap_or(DEFAULT_RESYNC_EVERY);
                let db = open_meta(&dir.join("meta"))?;
                Store::with_local_index(
                    backend,
                    db,
                    Some(lock),
                    cache,
                    location.clone(),
                    Some(every),
                )
            }
        }
    }

    /// Opens the store directory `root`, creating it if it does not exist
    /// (or is an empty directory). A non-empty directory without a strata
    /// config is refused, so a mistyped `--store` never scribbles into it.
    pub fn open(root: &Path, observer: &dyn Observer) -> Result<Store> {
        let fresh = match fs::read_dir(root) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::NotAStore {
                    path: root.into(),
                    detail: "it is not a directory".into(),
                })
            }
            Err(e) => return Err(Error::io("read", root, e)),
        };
        if !fresh && !root.join(CONFIG_KEY).exists() {
            return Err(Error::NotAStore {
                path: root.into(),
                detail: "it is not empty and has no strata config".into(),
            });
        }
        if !fresh && cannot_write(root) {
            // A read-only mount of a shared store: an index in memory,
            // built from the objects, and no slot or temporary directory.
            let backend: Arc<dyn Backend> = Arc::new(LocalDir::read_only(root));
            let db = sled::Config::new().temporary(true).open()?;
            let location = StoreLocation::Dir(root.to_path_buf());
            let mut store = Store::with_local_index(backend, db, None, None, location, None)?;
            store.read_only = true;
            return Ok(store);
        }
        let local = root.join(".local");
        crate::util::private_dir(&local).ctx("create directory", &local)?;
        // Slot 0 is `.local` itself, where a store of an earlier version
        // kept its one index.
        let slot = |i: usize| match i {
            0 => local.clone(),
            i => local.join(format!("slot-{i}")),
        };
        let (i, dir, lock) = free_meta_slot(slot, observer)?;
        let tmp = clean_tmp(root, i)?;
        let backend: Arc<dyn Backend> = Arc::new(LocalDir::new(root, tmp)?);
        let location = StoreLocation::Dir(root.to_path_buf());
        // Other jobs on the runner may write here meanwhile, as replicas
        // over a bucket do: the index syncs on a miss and every interval.
        let db = open_meta(&dir.join("meta"))?;
        let every = Some(DEFAULT_RESYNC_EVERY);
        Store::with_local_index(backend, db, Some(lock), None, location, every)
    }

    /// A store whose chunk queries this process answers from its own sled
    /// index (`meta`), synced with the backend first and then on a miss and,
    /// where other processes write too, every `resync_every`
    /// (`repo::synced`): a directory or S3.
    fn with_local_index(
        backend: Arc<dyn Backend>,
        db: sled::Db,
        lock: Option<FileLock>,
        cache: Option<FrameCache>,
        location: StoreLocation,
        resync_every: Option<std::time::Duration>,
    ) -> Result<Store> {
        let config = read_or_create_config(backend.as_ref())?;
        let index = ChunkIndex::open(&db)?;
        let catalog = Catalog::open(&db)?;
        // gc's safety argument allows a persist's view of condemned packs
        // to be up to half the grace period old (docs/lifecycle.md); a
        // quarter leaves room for the sync itself and clocks apart.
        let every = resync_every.map_or(std::time::Duration::MAX, |every| {
            every.min(std::time::Duration::from_secs(config.gc_grace_secs / 4))
        });
        let index = SyncedIndex::new(index, backend.clone(), every, config.has_index_log())?;
        Ok(Store {
            backend,
            config,
            lookup: Lookup::Local(Box::new(index)),
            server: None,
            catalog,
            cache,
            db,
            location,
            clock: Clock::System,
            commit_guard: true,
            observer: Heard(Arc::new(Quiet)),
            stat_cache: None,
            _lock: lock,
            read_only: false,
        })
    }

    /// A store over `backend` as an S3 store is opened (shared with other
    /// processes), its metadata in `meta`: for tests of what processes
    /// sharing a bucket do, with any backend.
    #[cfg(test)]
    pub(crate) fn shared_for_tests(backend: Arc<dyn Backend>, meta: &Path) -> Store {
        fs::create_dir_all(meta).unwrap();
        // Not locked: a test may open the same metadata twice on purpose.
        let path = meta.join("lock");
        let lock = FileLock::held(open_lock_file(&path).unwrap(), &path);
        let location = StoreLocation::S3("s3://shared/test".into());
        let every = Some(std::time::Duration::from_secs(3600));
        let db = open_meta(&meta.join("meta")).unwrap();
        Store::with_local_index(backend, db, Some(lock), None, location, every).unwrap()
    }

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
        self.db.flush()?;
        Ok(())
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

/// Whether this process cannot write the directory `root` (a read-only
/// mount, or a store another user owns).
fn cannot_write(root: &Path) -> bool {
    use rustix::fs::{access, Access};
    matches!(
        access(root, Access::WRITE_OK),
        Err(rustix::io::Errno::ROFS | rustix::io::Errno::ACCESS)
    )
}

/// How many metadata slots one store has on a runner: one for each
/// process using the store at once, up to this many.
const META_SLOTS: usize = 8;

/// A metadata slot for this process: the first of `slot(0)`, `slot(1)`,
/// ... whose lock no other process holds, with its number. A second
/// process on the runner (another job, a second `strata serve` replica)
/// so takes an index of its own instead of waiting for the first; each is
/// a complete cache, synced from the objects, and kept for the next
/// process. Only when all are in use does it wait for the first.
fn free_meta_slot(
    slot: impl Fn(usize) -> PathBuf,
    observer: &dyn Observer,
) -> Result<(usize, PathBuf, FileLock)> {
    for i in 0..META_SLOTS {
        let dir = slot(i);
        crate::util::private_dir(&dir).ctx("create directory", &dir)?;
        if let Some(lock) = FileLock::try_take(&dir.join("lock"))? {
            return Ok((i, dir, lock));
        }
    }
    let dir = slot(0);
    let lock_path = dir.join("lock");
    observer.waiting_for_lock(&dir);
    Ok((0, dir, FileLock::take(&lock_path)?))
}

/// The temporary directory of a directory store's slot `i`, emptied: only
/// the slot's holder writes there, so what it holds is from a process
/// that died mid-write. The holder of slot 0 also removes loose files an
/// earlier version left directly in `.tmp`.
fn clean_tmp(root: &Path, i: usize) -> Result<PathBuf> {
    let top = root.join(".tmp");
    let tmp = top.join(i.to_string());
    if tmp.exists() {
        fs::remove_dir_all(&tmp).ctx("clean", &tmp)?;
    }
    if i == 0 && top.exists() {
        for entry in fs::read_dir(&top).ctx("read", &top)? {
            let entry = entry.ctx("read", &top)?;
            let path = entry.path();
            if !entry.file_type().ctx("stat", &path)?.is_dir() {
                fs::remove_file(&path).ctx("clean", &path)?;
            }
        }
    }
    Ok(tmp)
}

/// An exclusive file lock (`flock`), held until dropped: a metadata
/// slot's, for as long as its `Store` lives; gc's (`ops::lease`). With `$STRATA_LOCK_LOG` set (tests), taking and releasing it are
/// logged to that file, one line each: `<pid> take|release <path> <unix
/// nanoseconds>`.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// The lock at `path`, or `None` when another process holds it.
    pub(crate) fn try_take(path: &Path) -> Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock::held(file, path))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::io("lock", path, e)),
        }
    }

    /// The lock at `path`, waiting while another process holds it.
    fn take(path: &Path) -> Result<FileLock> {
        let file = open_lock_file(path)?;
        file.lock().ctx("lock", path)?;
        Ok(FileLock::held(file, path))
    }

    /// The locked file (gc writes its holder there).
    pub(crate) fn file(&self) -> &File {
        &self._file
    }

    fn held(file: File, path: &Path) -> FileLock {
        log_lock("take", path);
        FileLock {
            _file: file,
            path: path.to_path_buf(),
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        log_lock("release", &self.path);
    }
}

/// Opens (creating) a lock file without truncating it: what its holder
/// wrote there stays readable to the others.
fn open_lock_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .mode(crate::util::file_mode())
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx("open", path)
}

/// Appends a line to `$STRATA_LOCK_LOG`, if set (best effort).
fn log_lock(event: &str, path: &Path) {
    use std::io::Write;
    let Some(log) = std::env::var_os("STRATA_LOCK_LOG") else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let line = format!(
        "{} {event} {} {nanos}\n",
        std::process::id(),
        path.display()
    );
    if let Ok(mut f) = fs::OpenOptions::new().append(true).create(true).open(log) {
        let _ = f.write_all(line.as_bytes());
    }
}

fn read_config(backend: &dyn Backend) -> Result<StoreConfig> {
    StoreConfig::decode(&backend.get(CONFIG_KEY)?)
}

/// Reads the store's config, creating the store if there is none. Two
/// processes creating one store at once may both write a config; the
/// chunking parameters are the defaults either way, and the last write
/// wins the random store id, which only names local caches.
fn read_or_create_config(backend: &dyn Backend) -> Result<StoreConfig> {
    match read_config(backend) {
        Err(Error::NotFound { .. }) => {
            let config = StoreConfig::new(crate::util::nonce());
            backend.put(CONFIG_KEY, &config.encode())?;
            Ok(config)
        }
        r => r,
    }
}

/// Opens the sled cache; if it cannot be read (say, after a crash mid-write
/// of sled's own files) it is thrown away and rebuilt from the objects.
fn open_meta(path: &Path) -> Result<sled::Db> {
    // sled makes what it lacks 0755; its directory is made private first.
    crate::util::private_dir(path).ctx("create directory", path)?;
    let config = || {
        sled::Config::new()
            .path(path)
            .cache_capacity(8 << 20)
            .flush_every_ms(None)
    };
    match config().open() {
        Ok(db) => Ok(db),
        Err(_) => {
            fs::remove_dir_all(path).ctx("remove unreadable metadata", path)?;
            Ok(config().open()?)
        }
    }
}
