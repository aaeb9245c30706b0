//! The library's error type. Every variant names the thing at fault (a path,
//! an object, a job) so the CLI can print it as is; expected conditions
//! (conflict, not found, corrupt) have variants of their own so callers can
//! match on them instead of on message text.

use std::io;
use std::path::PathBuf;

use crate::id::{ChunkId, IdError, JobName, ManifestId, RunName};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("no space left on the device holding {}: {source}", path.display())]
    NoSpace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("local metadata index: {0} (it can be deleted and rebuilt from the store)")]
    Meta(String),

    #[error(
        "attaching needs {needed} bytes but {} has {free} free; no file was written",
        path.display()
    )]
    NoRoom {
        path: PathBuf,
        needed: u64,
        free: u64,
    },

    #[error("object {key} not found in the store")]
    NotFound { key: String },

    #[error("invalid {what} {value:?}")]
    InvalidId { what: &'static str, value: String },

    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("{key}: {reason}")]
    Refused { key: String, reason: &'static str },

    #[error("corrupt {object}: {detail}")]
    Corrupt { object: String, detail: String },

    #[error("chunk {chunk} in {object} is corrupt: {detail}")]
    CorruptChunk {
        chunk: ChunkId,
        object: String,
        detail: String,
    },

    #[error("chunk {chunk} is not in the store (needed for {path})")]
    MissingChunk { chunk: ChunkId, path: String },

    #[error(
        "{key} refused: its manifest {manifest} names chunk {chunk} (for {path}), which the \
         store does not hold; upload the packs before the ref"
    )]
    Incomplete {
        key: String,
        manifest: ManifestId,
        chunk: ChunkId,
        path: String,
    },

    #[error("{object} has format version {found}, this strata reads up to {supported}")]
    UnsupportedVersion {
        object: String,
        found: u32,
        supported: u32,
    },

    #[error("{} is not a strata store: {detail}", path.display())]
    NotAStore { path: PathBuf, detail: String },

    #[error("run {run} does not exist")]
    UnknownRun { run: RunName },

    #[error("run {run} already exists with a different graph")]
    RunExists { run: RunName },

    #[error("run {run} has no job {job} (its jobs: {known})")]
    UnknownJob {
        run: RunName,
        job: JobName,
        known: String,
    },

    #[error("job {job} is listed twice in the graph")]
    DuplicateJob { job: String },

    #[error("job {job} requires {requires}, which is not a job of the graph")]
    UnknownRequire { job: String, requires: String },

    #[error("the graph has a cycle: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },

    #[error("graph: {detail}")]
    Graph { detail: String },

    #[error(
        "workspace conflict at {path}: jobs {first} and {second} both wrote it \
         ({detail}) and neither requires the other"
    )]
    Conflict {
        path: String,
        first: JobName,
        second: JobName,
        detail: String,
    },

    #[error("{} does not exist", path.display())]
    PathNotFound { path: PathBuf },

    #[error("{} is outside the root {}", path.display(), root.display())]
    PathOutsideRoot { path: PathBuf, root: PathBuf },

    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },

    #[error("{} is a {kind}, which strata does not store", path.display())]
    UnsupportedFileType { path: PathBuf, kind: &'static str },

    #[error("unsafe path {path:?} in {object}: {reason}")]
    UnsafePath {
        path: String,
        object: String,
        reason: &'static str,
    },

    #[error("{what} expired on {on} ({days} days after its last use); {remedy}")]
    Expired {
        what: String,
        on: String,
        days: u32,
        remedy: &'static str,
    },

    #[error("cache key {template:?}: {reason}")]
    CacheKey { template: String, reason: String },

    #[error("cannot rerun into run {run}: {detail}")]
    RerunInto { run: RunName, detail: String },

    #[error("run {run} has no failed jobs: nothing to rerun (name the jobs with --jobs)")]
    NothingToRerun { run: RunName },

    #[error(
        "this persist took {seconds} s, more than half the store's gc grace period ({grace} s): \
         chunks it reused may have been collected meanwhile, so its layer was not committed; \
         run it again"
    )]
    PersistTooSlow { seconds: u64, grace: u64 },

    #[error("strata server {server}: {detail}")]
    Remote { server: String, detail: String },

    #[error("strata server {server} refused the token: {detail} (pass one with --token or $STRATA_TOKEN)")]
    Unauthorized { server: String, detail: String },

    #[error("strata server {server} forbids this: {detail}")]
    Forbidden { server: String, detail: String },

    #[error("object store {store}: {detail}")]
    ObjectStore { store: String, detail: String },

    #[error("the store changed while attaching: {detail}")]
    Changed { detail: String },
}

impl Error {
    /// Wraps an I/O error with the operation and path it concerns; a full
    /// disk gets its own variant so users see "no space left" plainly.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace { path, source }
        } else {
            Error::Io { op, path, source }
        }
    }

    pub fn corrupt(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            detail: detail.into(),
        }
    }

    /// True for a workspace conflict between two jobs (CLI exit code 3).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

impl From<IdError> for Error {
    fn from(e: IdError) -> Self {
        match e {
            IdError::InvalidId { what, value } => Error::InvalidId { what, value },
            IdError::InvalidName {
                what,
                value,
                reason,
            } => Error::InvalidName {
                what,
                value,
                reason,
            },
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Meta(e.to_string())
    }
}

/// Shorthand for attaching a path and operation to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
