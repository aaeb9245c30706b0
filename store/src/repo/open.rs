//! Opening a store: a directory (its slot, temporary directory, or a
//! read-only mount's index in memory), a `strata serve` namespace (the
//! handshake and the config in one round trip), an S3 prefix (a slot in the
//! runner's cache); the config read, or written for a new store. Knows
//! nothing of commands.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::frame_cache::FrameCache;
use super::observer::Heard;
use super::options::open_frame_cache;
use super::remote::RemoteLookup;
use super::slots::{clean_tmp, free_meta_slot, FileLock};
use super::synced::{SyncedIndex, DEFAULT_RESYNC_EVERY};
use super::{Lookup, Observer, OpenOptions, Quiet, StatCacheUse, Store, StoreLocation};
use crate::backend::http::HttpStore;
use crate::backend::s3::S3;
use crate::backend::{Backend, LocalDir, Prefetched};
use crate::error::{Error, IoContext, Result};
use crate::format::config::StoreConfig;
use crate::format::keys::{run_key, run_prefix, CONFIG_KEY};
use crate::meta::catalog::Catalog;
use crate::meta::chunks::ChunkIndex;
use crate::meta::MetaDb;
use crate::util::Clock;

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
            StoreLocation::Http(url) => Store::open_http(url, location, options),
            StoreLocation::S3(url) => Store::open_s3(url, location, options, observer),
        }
    }

    /// A `strata serve` namespace: the server answers chunk queries; the
    /// run catalog is cached in memory for this process.
    fn open_http(url: &str, location: &StoreLocation, options: &OpenOptions) -> Result<Store> {
        let store = Arc::new(HttpStore::new(url, options.http.clone())?);
        let transport = store.transport().clone();
        let http: Arc<dyn Backend> = store.clone();
        // The handshake and the config at once (one round trip), and the
        // run the command reads first, if it said; the handshake's error,
        // if any, says more.
        let (gets, lists) = match &options.prefetch_run {
            Some(run) => (vec![run_key(run)], vec![run_prefix(run)]),
            None => (Vec::new(), Vec::new()),
        };
        let (prefetched, (hello, config)) = Prefetched::fetch(http.clone(), &gets, &lists, || {
            std::thread::scope(|s| {
                let config = s.spawn(|| read_config(http.as_ref()));
                (
                    transport.handshake(),
                    config.join().expect("reading the config panicked"),
                )
            })
        });
        hello?;
        store.use_urls(transport.urls_offered());
        let config = config?;
        let backend: Arc<dyn Backend> = match gets.is_empty() {
            true => http,
            false => Arc::new(prefetched),
        };
        let db = MetaDb::temporary()?;
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

    /// An S3 prefix: a store other processes share (`open_shared`).
    fn open_s3(
        url: &str,
        location: &StoreLocation,
        options: &OpenOptions,
        observer: &dyn Observer,
    ) -> Result<Store> {
        let stall = options
            .http
            .stall_timeout
            .unwrap_or(crate::backend::http::DEFAULT_STALL_TIMEOUT);
        let backend: Arc<dyn Backend> = Arc::new(S3::with_stall_timeout(url, stall)?);
        Store::open_shared(backend, url, location, options, observer)
    }

    /// A store other processes share, at `url`: its index in a slot of the
    /// runner's cache, one per store and per process using it at once. A
    /// store is its location *and* its id (the config's `store_id`): one
    /// deleted and made again at the same location (an emptied bucket, a
    /// reused prefix) is another store, and must never be answered from the
    /// old one's index, or a persist would skip uploading chunks the new
    /// one lacks.
    fn open_shared(
        backend: Arc<dyn Backend>,
        url: &str,
        location: &StoreLocation,
        options: &OpenOptions,
        observer: &dyn Observer,
    ) -> Result<Store> {
        let config = read_or_create_config(backend.as_ref())?;
        let name = format!("{url}\n{}", config.store_id);
        let base = options
            .cache_root()
            .join("stores")
            .join(&blake3::hash(name.as_bytes()).to_hex()[..16]);
        let slot = |i: usize| match i {
            0 => base.clone(),
            i => base.with_extension(i.to_string()),
        };
        let (_, dir, lock) = free_meta_slot(slot, observer)?;
        let cache = open_frame_cache(options)?;
        let every = options.resync_every.unwrap_or(DEFAULT_RESYNC_EVERY);
        let db = MetaDb::open(&dir.join("meta"))?;
        let location = location.clone();
        Store::with_local_index(
            backend,
            config,
            db,
            Some(lock),
            cache,
            location,
            Some(every),
        )
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
            let db = MetaDb::temporary()?;
            let location = StoreLocation::Dir(root.to_path_buf());
            let config = read_or_create_config(backend.as_ref())?;
            let mut store =
                Store::with_local_index(backend, config, db, None, None, location, None)?;
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
        let db = MetaDb::open(&dir.join("meta"))?;
        let every = Some(DEFAULT_RESYNC_EVERY);
        let config = read_or_create_config(backend.as_ref())?;
        Store::with_local_index(backend, config, db, Some(lock), None, location, every)
    }

    /// A store whose chunk queries this process answers from its own sled
    /// index (`meta`), synced with the backend first and then on a miss and,
    /// where other processes write too, every `resync_every`
    /// (`repo::synced`): a directory or S3.
    fn with_local_index(
        backend: Arc<dyn Backend>,
        config: StoreConfig,
        db: MetaDb,
        lock: Option<FileLock>,
        cache: Option<FrameCache>,
        location: StoreLocation,
        resync_every: Option<std::time::Duration>,
    ) -> Result<Store> {
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
        let lock = FileLock::held(super::slots::open_lock_file(&path).unwrap(), &path);
        let location = StoreLocation::S3("s3://shared/test".into());
        let every = Some(std::time::Duration::from_secs(3600));
        let db = MetaDb::open(&meta.join("meta")).unwrap();
        let config = read_or_create_config(backend.as_ref()).unwrap();
        Store::with_local_index(backend, config, db, Some(lock), None, location, every).unwrap()
    }
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

/// The store's config.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Memory;
    use crate::format::pack::{FrameBuilder, PackBuilder};
    use crate::id::ChunkId;

    /// A pack holding one chunk: its id, the pack's id and frames.
    fn one_chunk_pack() -> (
        ChunkId,
        crate::id::PackId,
        Vec<crate::format::pack::FrameEntry>,
    ) {
        let data = b"a chunk only the first store holds";
        let chunk = ChunkId::of(data);
        let mut frame = FrameBuilder::default();
        frame.push(chunk, data);
        let mut pack = PackBuilder::new();
        pack.push(frame.seal(&mut zstd::bulk::Compressor::new(3).unwrap()));
        let (id, _, frames) = pack.finish();
        (chunk, id, frames)
    }

    // A store deleted and made again at the same location (an emptied
    // bucket, a reused prefix) is another store: the runner's index of the
    // old one must not answer for it, or a persist would skip uploading
    // what the new one lacks. (Keyed by location alone, the new store
    // found the old one's chunk.)
    #[test]
    fn a_store_made_again_where_one_was_is_not_answered_from_the_old_ones_index() {
        let cache = tempfile::tempdir().unwrap();
        let options = OpenOptions {
            cache_dir: Some(cache.path().into()),
            ..Default::default()
        };
        let url = "s3://bucket/prefix";
        let location = StoreLocation::S3(url.into());
        let open = |b: &Arc<Memory>| {
            let backend: Arc<dyn Backend> = b.clone();
            Store::open_shared(backend, url, &location, &options, &Quiet).unwrap()
        };
        let (chunk, pack, frames) = one_chunk_pack();
        let old_bucket = Arc::new(Memory::new());
        {
            let old = open(&old_bucket);
            old.chunk_lookup().add_pack(&pack, &frames).unwrap();
            old.flush().unwrap();
        }
        let new = open(&Arc::new(Memory::new()));
        assert_eq!(new.chunk_lookup().locate(&[chunk]).unwrap()[0], None);
        drop(new);
        // The old store, opened again, still has its index.
        let old = open(&old_bucket);
        assert!(old.chunk_lookup().locate(&[chunk]).unwrap()[0].is_some());
    }
}
