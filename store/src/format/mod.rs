//! The durable bytes: every object a store holds, how it is named, encoded
//! and checked. Formats are versioned and written down in docs/format.md;
//! this layer reads objects through `backend` and knows nothing about
//! local metadata, the network protocol or the commands.

pub mod chunking;
pub mod codec;
pub mod config;
pub mod graph;
pub mod index;
pub mod index_log;
pub mod keys;
pub mod manifest;
mod manifest_check;
mod manifest_columns;
pub mod manifest_frames;
pub mod manifest_stream;
pub mod pack;
pub mod records;
pub mod work;
