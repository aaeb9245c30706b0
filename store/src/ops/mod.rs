//! One module per command: each composes the layers below (a `Store`,
//! `read`, `tree`, the formats) into what the CLI and the server call.
//! Nothing below `ops` imports from it.

pub mod attach;
pub mod browse;
pub mod cache_key;
pub mod caches;
pub mod ci_run;
pub mod footprint;
pub mod gc;
pub mod ingest;
pub mod layers;
pub mod lease;
pub mod lifecycle;
pub mod persist;
pub mod remove;
pub mod rerun;
pub mod stats;
pub(crate) mod store_tree;
pub mod verify;
