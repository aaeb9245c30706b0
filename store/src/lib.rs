#![warn(missing_docs)]
//! strata's store: everything behind the `strata` command. The CLI and the
//! server parse, call what this crate exports, and print.
//!
//! The crate is layered; a module imports only from its own layer or
//! those below it (docs/architecture.md's table lists the same layers, and
//! `.ci/imports.py --layers` checks both the imports and that the two
//! lists agree):
//!
//! 1. `error`, `id`, `util`, `size`, `protocol`: typed errors, content ids and
//!    names, clocks and nonces, sizes as people write them; `strata serve`'s wire format, shared by the
//!    HTTP transport and the server;
//! 2. `backend`: where objects live (directory, memory, S3, `strata serve`'s
//!    object API), and the HTTP transport;
//! 3. `format`, `ci`: the durable bytes (object keys, chunking, packs,
//!    manifests, index objects, records, the config, workflow graphs); a
//!    CI's identity and job graph, read from its environment and config;
//! 4. `lookup`, `access`, `oidc`: the chunk lookup contract; who may do
//!    what to a shared store; a CI's verified claims as grants;
//! 5. `meta`: the local `sled` caches (chunk index, run catalog) and the
//!    database they live in;
//! 6. `repo`: a `Store` opened for use, and the runner's frame cache;
//! 7. `read`: fetching chunks and manifests;
//! 8. `tree`: files on disk (scan, plan, write);
//! 9. `ops`: one module per command, and storing a tree;
//! 10. `demo`, `synth`, `testing`: the README's first command, generated
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
pub mod oidc;
pub(crate) mod ops;
pub mod protocol;
pub(crate) mod read;
pub(crate) mod repo;
pub mod size;
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
    attach, browse, cache_key, caches, ci_run, footprint, gc, ingest, layers, lifecycle, persist,
    remove, rerun, stats, verify,
};
pub use repo::remote::RemoteLookup;
pub use repo::{
    default_cache_dir, Observer, OpenOptions, Progress, Quiet, StatCacheUse, Step, Store,
    StoreLocation,
};
pub use tree::stat_cache;
pub use util::Clock;
