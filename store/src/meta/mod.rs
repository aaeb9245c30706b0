//! The process's local metadata: the only user of `sled` (it opens the
//! database too: `MetaDb`). Everything here is a rebuildable cache of the
//! objects (`format`), read and written through `backend`; it knows
//! nothing about commands.

pub mod catalog;
pub mod chunks;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::error::{IoContext, Result};

/// The sled database the local caches live in, and the chunk log beside
/// it (`chunks::log`: where each chunk lies, outside sled).
#[derive(Debug, Clone)]
pub(crate) struct MetaDb(sled::Db, Arc<chunks::log::ChunkLog>);

impl MetaDb {
    /// Opens the database at `path`; if it cannot be read (say, after a
    /// crash mid-write of sled's own files) it is thrown away and rebuilt
    /// from the objects.
    pub(crate) fn open(path: &Path) -> Result<MetaDb> {
        // sled makes what it lacks 0755; its directory is made private first.
        crate::util::private_dir(path).ctx("create directory", path)?;
        let config = || {
            sled::Config::new()
                .path(path)
                .cache_capacity(8 << 20)
                .flush_every_ms(None)
        };
        // Beside sled's directory: `ChunkIndex::open` checks that it
        // belongs to this database.
        let log = path.with_file_name("chunk-log");
        let db = match config().open() {
            Ok(db) => db,
            Err(_) => {
                fs::remove_dir_all(path).ctx("remove unreadable metadata", path)?;
                config().open()?
            }
        };
        Ok(MetaDb(db, Arc::new(chunks::log::ChunkLog::open(Some(log)))))
    }

    /// A database in memory, for this process only (a server's client; a
    /// read-only mount).
    pub(crate) fn temporary() -> Result<MetaDb> {
        let db = sled::Config::new().temporary(true).open()?;
        Ok(MetaDb(db, Arc::new(chunks::log::ChunkLog::open(None))))
    }

    /// Writes what is cached to disk.
    pub(crate) fn flush(&self) -> Result<()> {
        // The log first: sled's count of records must never be durable
        // before the records are.
        self.1
            .sync()
            .map_err(|e| crate::error::Error::io("sync", "chunk log", e))?;
        self.0.flush()?;
        Ok(())
    }
}
