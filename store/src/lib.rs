//! strata's store: everything behind the `strata` command.
//!
//! The parts, each in one module (docs/architecture.md draws them):
//! - `chunking`: FastCDC boundaries and chunk ids;
//! - `pack`: the pack file format and frame compression;
//! - `index`: index objects and the local chunk -> pack index;
//! - `ingest`: checking objects from untrusted writers (server side);
//! - `manifest`: a layer's tree and its validation;
//! - `graph`: workflow graphs;
//! - `refs`: run records and layer refs;
//! - `lifecycle`: job results, uses, retention and expiry;
//! - `rerun`: reruns that keep the layers of jobs that succeeded;
//! - `caches`, `cache_key`: dependency caches and their key templates;
//! - `gc`: dropping what expired, reclaiming unreferenced chunks;
//! - `backend`: where objects live (directory, `strata serve`, S3);
//! - `runner_cache`: the runner's cache of frames fetched over the network;
//! - `store`: a store opened for use;
//! - `scan` and `persist`: disk -> layer;
//! - `attach`: layers -> disk;
//! - `stats`: what a store holds;
//! - `synth`: generated `node_modules`-like trees (demo, tests, benchmark);
//! - `testing`: the one tree comparison every test suite uses;
//! - `verify`: checking the durable objects;
//! - `util`: unique names, nonces and salts;
//! - `demo`: the README's first command.

pub mod attach;
pub mod backend;
pub mod cache_key;
pub mod caches;
pub mod chunking;
pub mod codec;
pub mod config;
pub mod demo;
pub mod error;
pub mod fetch;
pub mod gc;
pub mod graph;
pub mod id;
pub mod index;
pub mod ingest;
pub mod lifecycle;
pub mod manifest;
pub mod pack;
pub mod persist;
pub mod refs;
pub mod rerun;
pub mod runner_cache;
pub mod scan;
pub mod stats;
pub mod store;
pub mod synth;
pub mod testing;
pub mod util;
pub mod verify;

pub use attach::{attach, AttachReport, AttachRequest};
pub use error::{Error, Result};
pub use graph::Graph;
pub use id::{ChunkId, JobName, ManifestId, RunName};
pub use persist::{persist, PersistReport, PersistRequest};
pub use store::{Observer, OpenOptions, Quiet, Store, StoreLocation};
