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
use crate::read::load_manifest;
use crate::repo::Store;

/// The bytes of file content a layer ref or a cache entry `bytes`, just
/// stored under `key`, made visible, counted from its manifest (not from
/// the totals the client wrote in it); `None` for any other object.
pub fn accepted_bytes(store: &Store, key: &str, bytes: &[u8]) -> Result<Option<u64>> {
    let manifest = match classify(key)? {
        ObjectKind::Layer(..) => LayerRecord::decode(key, bytes)?.manifest,
        ObjectKind::Cache => CacheRecord::decode(key, bytes)?.manifest,
        _ => return Ok(None),
    };
    let (m, _) = load_manifest(store, &manifest)?;
    Ok(Some(m.totals().bytes))
}

pub mod archive;
pub mod sizes;
pub mod tree;
