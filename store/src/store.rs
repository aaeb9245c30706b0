//! A store: its backend (where the durable objects live), its config, and
//! the local `sled` metadata that indexes them.
//!
//! Opening a local store directory takes an exclusive lock for the life of
//! the `Store` (sled allows one process at a time); a second process waits
//! and is told so through `Observer::waiting_for_lock`. The sled database is
//! a cache: if it is missing or unreadable it is rebuilt from the objects.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, LocalDir};
use crate::config::{StoreConfig, CONFIG_KEY};
use crate::error::{Error, IoContext, Result};
use crate::graph::Graph;
use crate::id::{JobName, RunName};
use crate::index::ChunkIndex;
use crate::refs::{Catalog, LayerRef, RunRecord};

/// What a long operation tells its caller; the library never prints.
pub trait Observer: Sync {
    /// Another process holds the store; this one waits for it.
    fn waiting_for_lock(&self, _store: &Path) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl Observer for Quiet {}

/// The current time as Unix seconds; stores take a clock so tests (and
/// retention, later) can set it.
pub type Clock = fn() -> i64;

pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug)]
pub struct Store {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: StoreConfig,
    pub(crate) index: ChunkIndex,
    pub(crate) catalog: Catalog,
    db: sled::Db,
    root: PathBuf,
    pub(crate) clock: Clock,
    _lock: File,
}

impl Store {
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
        let local = root.join(".local");
        fs::create_dir_all(&local).ctx("create directory", &local)?;
        let lock_path = local.join("lock");
        let lock = File::create(&lock_path).ctx("create", &lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                observer.waiting_for_lock(root);
                lock.lock().ctx("lock", &lock_path)?;
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        // Holding the lock, no other process is writing: temporary files
        // left in .tmp are from one that died mid-write.
        let tmp = root.join(".tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).ctx("clean", &tmp)?;
        }
        let backend: Arc<dyn Backend> = Arc::new(LocalDir::new(root, tmp)?);
        let config = match backend.get(CONFIG_KEY) {
            Ok(bytes) => StoreConfig::decode(&bytes)?,
            Err(Error::NotFound { .. }) => {
                let config = StoreConfig::new(crate::refs::nonce());
                backend.put(CONFIG_KEY, &config.encode())?;
                config
            }
            Err(e) => return Err(e),
        };
        let db = open_meta(&local.join("meta"))?;
        let index = ChunkIndex::open(&db)?;
        let catalog = Catalog::open(&db)?;
        index.sync(backend.as_ref())?;
        Ok(Store {
            backend,
            config,
            index,
            catalog,
            db,
            root: root.to_path_buf(),
            clock: system_clock,
            _lock: lock,
        })
    }

    /// Wraps the backend in an adapter of the same trait (fault injection
    /// in tests; caching, limits and the like): wrap, don't flag.
    pub fn wrap_backend(mut self, wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>) -> Self {
        self.backend = wrap(self.backend);
        self
    }

    /// Replaces the clock (tests, and later retention).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The backend, shared (for wrapping it).
    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// Creates a run with its job graph (idempotent for the same graph).
    /// Returns whether it was new.
    pub fn create_run(&self, run: &RunName, graph: Graph) -> Result<bool> {
        let created = self
            .catalog
            .create_run(self.backend(), run, graph, (self.clock)())?;
        self.flush()?;
        Ok(created)
    }

    pub fn run(&self, run: &RunName) -> Result<RunRecord> {
        self.catalog.run(self.backend(), run)
    }

    pub fn run_names(&self) -> Result<Vec<RunName>> {
        self.catalog.run_names(self.backend())
    }

    /// The run record and the index of `job` in its graph, or an error
    /// naming the unknown run or job.
    pub fn run_job(&self, run: &RunName, job: &JobName) -> Result<(RunRecord, usize)> {
        let record = self.run(run)?;
        let i = record
            .graph
            .index_of(job)
            .ok_or_else(|| Error::UnknownJob {
                run: run.clone(),
                job: job.clone(),
                known: record.graph.job_list(),
            })?;
        Ok((record, i))
    }

    pub fn layers(&self, run: &RunName, job: &JobName) -> Result<Vec<LayerRef>> {
        self.catalog.layers(self.backend(), run, job)
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// Opens the sled cache; if it cannot be read (say, after a crash mid-write
/// of sled's own files) it is thrown away and rebuilt from the objects.
fn open_meta(path: &Path) -> Result<sled::Db> {
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
