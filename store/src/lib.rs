#![warn(missing_docs)]
//! strata's store: everything behind the `strata` command. The CLI and the
//! server parse, call what this crate exports, and print.
//!
//! The crate is layered; a module imports only from layers below its own
//! (docs/architecture.md draws them, and `.ci/imports.py` checks it):
//!
//! 1. `error`, `id`, `util`: typed errors, content ids and names, clocks and
//!    nonces;
//! 2. `backend`: where objects live (directory, memory, S3, `strata serve`'s
//!    object API), and the HTTP transport;
//! 3. `format`: the durable bytes (object keys, chunking, packs, manifests,
//!    index objects, records, the config, workflow graphs);
//! 4. `protocol`, `access`: `strata serve`'s wire format, shared with the
//!    server, and who may do what through it;
//! 5. `lookup`: the chunk lookup contract;
//! 6. `meta`: the local `sled` caches (chunk index, run catalog);
//! 7. `repo`: a `Store` opened for use, and the runner's frame cache;
//! 8. `read`: fetching chunks and manifests;
//! 9. `tree`: files on disk (scan, plan, write);
//! 10. `ops`: one module per command;
//! 11. `demo`, `synth`, `testing`: the README's first command, generated
//!     trees, and what the test suites share.

pub mod access;
pub mod backend;
pub mod ci;
pub mod demo;
pub mod error;
pub mod format;
pub mod id;
pub mod lookup;
pub(crate) mod meta;
pub(crate) mod ops;
pub mod protocol;
pub(crate) mod read;
pub(crate) mod repo;
pub mod synth;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub(crate) mod tree;
pub mod util;

pub use error::{Error, ErrorKind, Result};
pub use format::graph::Graph;
pub use format::records::{JobResult, JobStatus};
pub use id::{ChunkId, JobName, ManifestId, RunName};
pub use lookup::ChunkLookup;
pub use ops::attach::{attach, AttachReport, AttachRequest};
pub use ops::persist::{persist, PersistReport, PersistRequest};
pub use ops::{
    attach, cache_key, caches, ci_run, gc, ingest, lifecycle, persist, rerun, stats, verify,
};
pub use repo::remote::RemoteLookup;
pub use repo::{
    default_cache_dir, Observer, OpenOptions, Progress, Quiet, StatCacheUse, Step, Store,
    StoreLocation,
};
pub use tree::stat_cache;
pub use util::Clock;
