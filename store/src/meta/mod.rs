//! The process's local metadata: the only user of `sled` (it opens the
//! database too: `MetaDb`). Everything here is a rebuildable cache of the
//! objects (`format`), read and written through `backend`; it knows
//! nothing about commands.

pub mod catalog;
pub mod chunks;

use std::fs;
use std::path::Path;

use crate::error::{IoContext, Result};

/// The sled database the local caches live in.
#[derive(Debug, Clone)]
pub(crate) struct MetaDb(sled::Db);

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
        match config().open() {
            Ok(db) => Ok(MetaDb(db)),
            Err(_) => {
                fs::remove_dir_all(path).ctx("remove unreadable metadata", path)?;
                Ok(MetaDb(config().open()?))
            }
        }
    }

    /// A database in memory, for this process only (a server's client; a
    /// read-only mount).
    pub(crate) fn temporary() -> Result<MetaDb> {
        Ok(MetaDb(sled::Config::new().temporary(true).open()?))
    }

    /// Writes what is cached to disk.
    pub(crate) fn flush(&self) -> Result<()> {
        self.0.flush()?;
        Ok(())
    }
}
