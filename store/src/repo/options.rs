//! How to open a store beyond its location: the server's credentials, the
//! runner's cache directory and its bounds, the resync interval, the stat
//! cache's use. Knows nothing of what an opened store holds.

use std::path::PathBuf;

use super::frame_cache::FrameCache;
use crate::backend::http::HttpOptions;
use crate::error::Result;

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
    /// The run the command will read first (a persist's or an attach's):
    /// a `strata serve` store reads its record and lists its keys while it
    /// opens, in the same round trip (`backend::Prefetched`).
    pub prefetch_run: Option<crate::id::RunName>,
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
pub(super) fn open_frame_cache(options: &OpenOptions) -> Result<Option<FrameCache>> {
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
