//! Looking into a store without changing it, for `strata serve`'s web page
//! and metrics: a layer's files as a tree (`tree`), a file or a directory
//! streamed from its chunks (`archive`), and what a layer ref a
//! server accepted holds (`accepted_bytes`).
//!
//! Every function here only reads. It knows nothing about HTTP or HTML:
//! the server parses a request, calls here, and renders.

use crate::error::Result;
use crate::format::keys::{classify, ObjectKind};
use crate::format::records::{CacheRecord, LayerRecord, Record};
use crate::repo::Store;

/// The bytes of file content a layer ref or a cache entry `bytes`, just
/// stored under `key`, made visible: its totals, which `ops::ingest`
/// checked against its manifest before storing it; `None` for any other
/// object.
pub fn accepted_bytes(_store: &Store, key: &str, bytes: &[u8]) -> Result<Option<u64>> {
    // The ref's totals: `ingest` refused it unless they are its
    // manifest's, so the manifest is not read (and decoded) twice.
    Ok(match classify(key)? {
        ObjectKind::Layer(..) => Some(LayerRecord::decode(key, bytes)?.totals.bytes),
        ObjectKind::Cache => Some(CacheRecord::decode(key, bytes)?.totals.bytes),
        _ => None,
    })
}

pub mod archive;
pub mod sizes;
pub mod tree;
