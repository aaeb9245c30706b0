//! The store's configuration object (`config`, JSON): the format version and
//! the parameters that decide chunk ids and so must never change for a
//! store's life (chunk sizes), plus tunables that may (pack size, zstd level).
//!
//! Written once when the store is created; every process reads it on open.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::chunking::ChunkerParams;

/// The store format this build writes and the newest it reads.
pub const STORE_FORMAT: u32 = 2;

/// A store's config (`config`): its format, id, chunking and pack sizes,
/// retention and gc grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Store format version; see docs/format.md.
    pub format: u32,
    /// A random id, so caches kept for one store are never used for another.
    pub store_id: String,
    /// How files are cut into chunks (fixed for the store's life).
    pub chunker: ChunkerParams,
    /// How manifests' encodings are cut into chunks.
    pub manifest_chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_target_bytes: u32,
    /// Frames (runs of chunks compressed together) are closed once they
    /// hold this many uncompressed bytes.
    pub frame_target_bytes: u32,
    /// zstd level for chunk compression.
    pub zstd_level: i32,
    /// Days a run's workspace (and a cache entry) lives after its last use.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Seconds a pack gc condemned waits before it is deleted; also the
    /// longest a persist may take (docs/lifecycle.md, "Garbage collection").
    #[serde(default = "default_gc_grace_secs")]
    pub gc_grace_secs: u64,
}

fn default_retention_days() -> u32 {
    15
}

fn default_gc_grace_secs() -> u64 {
    3600
}

impl StoreConfig {
    /// The default config for a new store named `store_id`.
    /// Whether index objects go to the time-ordered index log, with
    /// snapshots and tombstones (format 2; docs/format.md).
    pub fn has_index_log(&self) -> bool {
        self.format >= 2
    }

    /// The config of a new store: this build's format, the defaults.
    pub fn new(store_id: String) -> Self {
        Self {
            format: STORE_FORMAT,
            store_id,
            chunker: ChunkerParams::DEFAULT,
            manifest_chunker: ChunkerParams::METADATA,
            pack_target_bytes: 4 << 20,
            frame_target_bytes: 2 << 20,
            zstd_level: 3,
            retention_days: default_retention_days(),
            gc_grace_secs: default_gc_grace_secs(),
        }
    }

    /// The config's bytes (JSON).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = serde_json::to_vec_pretty(self).expect("config serializes");
        s.push(b'\n');
        s
    }

    /// Reads and checks a config.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let config: StoreConfig = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt("store config", e.to_string()))?;
        if config.format == 0 || config.format > STORE_FORMAT {
            return Err(Error::UnsupportedVersion {
                object: "store config".into(),
                found: config.format,
                supported: STORE_FORMAT,
            });
        }
        config.chunker.validate()?;
        config.manifest_chunker.validate()?;
        if !(1 << 16..=1 << 30).contains(&config.pack_target_bytes) {
            return Err(Error::corrupt(
                "store config",
                format!(
                    "pack_target_bytes {} out of range",
                    config.pack_target_bytes
                ),
            ));
        }
        if !(1 << 12..=16 << 20).contains(&config.frame_target_bytes) {
            return Err(Error::corrupt(
                "store config",
                format!(
                    "frame_target_bytes {} out of range",
                    config.frame_target_bytes
                ),
            ));
        }
        Ok(config)
    }
}
