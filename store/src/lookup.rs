//! What persist and attach ask about chunks: `ChunkLookup`. A directory or
//! S3 store answers from this process's own index (`meta::chunks`); a
//! `strata serve` client asks the server (`repo::remote`).
//!
//! The contract both meet:
//! - `missing` may err only towards "missing" (a chunk uploaded twice is
//!   harmless; a chunk reused that is not in the store loses data), so a
//!   chunk in a pack gc has condemned counts as missing;
//! - `locate` answers for every chunk whose pack and index the store holds
//!   when the call is made, and so does `missing_now`, which a server's
//!   checks use where "missing" refuses something;
//! - `add_pack` and `add` are told of every pack and index object this
//!   process writes, before the next query (a server indexes what it
//!   receives, so a remote lookup ignores them).
//!
//! It knows nothing about files, manifests or where the answers come from.

use crate::error::Result;
use crate::format::index::{IndexObject, Location};
use crate::format::pack::FrameEntry;
use crate::id::{ChunkId, IndexId, PackId};

/// What persist and attach ask about chunks, in batches (a remote store
/// answers a whole batch in one round trip).
pub trait ChunkLookup: Send + Sync + std::fmt::Debug {
    /// For each id, whether the store lacks it.
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>>;
    /// `missing`, never stale: a chunk stored before the call, by any
    /// process, counts as present (a chunk in a condemned pack still does
    /// not). For checks that refuse what lacks a chunk.
    fn missing_now(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        self.missing(ids)
    }
    /// For each id, where it is stored, if anywhere.
    fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>>;
    /// Records a pack just written (before its index object exists).
    fn add_pack(&self, pack: &PackId, frames: &[FrameEntry]) -> Result<()>;
    /// Records an index object just written.
    fn add(&self, id: &IndexId, object: &IndexObject) -> Result<()>;
    /// How many chunks are indexed.
    fn count(&self) -> Result<u64>;
    /// How many batch questions to keep in flight at once: the cores' worth
    /// where the answer is computed here, more where each answer waits a
    /// round trip (persist's query pool has this many threads).
    fn in_flight(&self) -> usize {
        rayon::current_num_threads()
    }
    /// How many times it has read other writers' index objects since it
    /// was opened (a server's metrics: a replica's syncs). A lookup that
    /// never syncs (a runner's own index, a remote store's) has none.
    fn syncs(&self) -> u64 {
        0
    }
}
