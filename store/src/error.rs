//! The library's error type. Every variant names the thing at fault (a path,
//! an object, a job) so the CLI can print it as is; expected conditions
//! (conflict, not found, corrupt) have variants of their own so callers can
//! match on them instead of on message text.

use std::io;
use std::path::PathBuf;

use crate::id::{ChunkId, JobName, ManifestId, RunName};

mod convert;
mod kind;

pub(crate) use convert::IoContext;
pub use kind::ErrorKind;

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library; each names the thing at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `create`).
        op: &'static str,
        /// The path at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The device holding a path is full.
    #[error("no space left on the device holding {}: {source}", path.display())]
    NoSpace {
        /// The path at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The local metadata index is unreadable (it is rebuilt from the store).
    #[error("local metadata index: {0} (it can be deleted and rebuilt from the store)")]
    Meta(String),

    #[error(
        "attaching needs {needed} bytes but {} has {free} free; no file was written",
        path.display()
    )]
    /// An attach would not fit on the target's file system.
    NoRoom {
        /// The path at fault.
        path: PathBuf,
        /// Bytes the attach needs.
        needed: u64,
        /// Bytes free.
        free: u64,
    },

    /// An object is not in the store.
    #[error("object {key} not found in the store")]
    NotFound {
        /// The object's key.
        key: String,
    },

    /// A string is not a valid id.
    #[error("invalid {what} {value:?}")]
    InvalidId {
        /// What kind of thing it is.
        what: &'static str,
        /// The value given.
        value: String,
    },

    /// A string is not a valid name of its kind.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What kind of thing it is.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// The store refuses to do this to the object (a client deleting gc's objects).
    #[error("{key}: {reason}")]
    Refused {
        /// The object's key.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// An object's bytes are not what its format says.
    #[error("corrupt {object}: {detail}")]
    Corrupt {
        /// The object at fault.
        object: String,
        /// What is wrong, for a person.
        detail: String,
    },

    /// A chunk's bytes do not hash to its id.
    #[error("chunk {chunk} in {object} is corrupt: {detail}")]
    CorruptChunk {
        /// The chunk's id.
        chunk: ChunkId,
        /// The object at fault.
        object: String,
        /// What is wrong, for a person.
        detail: String,
    },

    /// A chunk a tree needs is not in the store.
    #[error("chunk {chunk} is not in the store (needed for {path})")]
    MissingChunk {
        /// The chunk's id.
        chunk: ChunkId,
        /// The path at fault.
        path: String,
    },

    #[error(
        "{key} refused: its manifest {manifest} names chunk {chunk} (for {path}), which the \
         store does not hold; upload the packs before the ref"
    )]
    /// A ref's manifest names a chunk the store does not hold.
    Incomplete {
        /// The object's key.
        key: String,
        /// The manifest's id.
        manifest: ManifestId,
        /// The chunk's id.
        chunk: ChunkId,
        /// The path at fault.
        path: String,
    },

    /// An object has a format version newer than this code reads.
    #[error("{object} has format version {found}, this strata reads up to {supported}")]
    UnsupportedVersion {
        /// The object at fault.
        object: String,
        /// The version found.
        found: u32,
        /// The newest version this code reads.
        supported: u32,
    },

    /// A directory is not a strata store.
    #[error("{} is not a strata store: {detail}", path.display())]
    NotAStore {
        /// The path at fault.
        path: PathBuf,
        /// What is wrong, for a person.
        detail: String,
    },

    /// No run has this name.
    #[error("run {run} does not exist")]
    UnknownRun {
        /// The run.
        run: RunName,
    },

    /// A run with this name exists with another graph.
    #[error("run {run} already exists with a different graph")]
    RunExists {
        /// The run.
        run: RunName,
    },

    /// A run was created for another ref than the job that uses it: a
    /// job of another branch (or pull request) created it first.
    #[error(
        "run {run} was created for {theirs}, not this job's {ours}: refusing to use it \
         (a job of another ref created a run of this name first)"
    )]
    RunOfAnotherRef {
        /// The run.
        run: RunName,
        /// The ref it records.
        theirs: String,
        /// The ref of the job that found it.
        ours: String,
    },

    /// An object that is written once exists with other contents.
    #[error("{key} exists and is never replaced: {detail}")]
    Immutable {
        /// The object.
        key: String,
        /// What differs.
        detail: String,
    },

    /// A client's request is malformed.
    #[error("bad request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },

    /// A client's request asks for more than the server gives at once.
    #[error("request too large: {detail}")]
    TooLarge {
        /// The limit.
        detail: String,
    },

    /// The access rules (docs/deploy.md, "Who may do what") refuse this.
    #[error("not allowed: {detail}")]
    NotAllowed {
        /// Which grant, and what it lacks.
        detail: String,
    },

    /// A gc was asked for with a grace period below the store's.
    #[error(
        "a grace period of {asked} s is below the store's {floor} s (gc_grace_secs): \
         no request may shorten it, since it protects the packs of persists in flight"
    )]
    GraceTooShort {
        /// The grace asked for, in seconds.
        asked: u64,
        /// The store's grace, in seconds.
        floor: u64,
    },

    /// The run's graph has no job of this name.
    #[error("run {run} has no job {job} (its jobs: {known})")]
    UnknownJob {
        /// The run.
        run: RunName,
        /// The job.
        job: JobName,
        /// The jobs the run has.
        known: String,
    },

    /// A graph lists a job twice.
    #[error("job {job} is listed twice in the graph")]
    DuplicateJob {
        /// The job.
        job: String,
    },

    /// A job requires a job the graph does not have.
    #[error("job {job} requires {requires}, which is not a job of the graph")]
    UnknownRequire {
        /// The job.
        job: String,
        /// The job it requires.
        requires: String,
    },

    /// A graph's requires form a cycle.
    #[error("the graph has a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The jobs of the cycle, in order.
        cycle: Vec<String>,
    },

    /// A CI config file (or a file it includes) cannot be read as its CI
    /// reads it; names the file and, where known, the line.
    #[error("{}{}: {detail}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        /// The config file, relative to the checkout.
        file: PathBuf,
        /// The 1-based line at fault.
        line: Option<usize>,
        /// What is wrong, for a person, jobs named as the config writes them.
        detail: String,
    },

    /// A graph file is malformed.
    #[error("graph: {detail}")]
    Graph {
        /// What is wrong, for a person.
        detail: String,
    },

    #[error(
        "workspace conflict at {path}: jobs {first} and {second} both wrote it \
         ({detail}) and neither requires the other"
    )]
    /// Two unrelated jobs wrote one path differently.
    Conflict {
        /// The path at fault.
        path: String,
        /// One job that wrote the path.
        first: JobName,
        /// The other job that wrote it.
        second: JobName,
        /// What is wrong, for a person.
        detail: String,
    },

    /// A path to persist does not exist.
    #[error("{} does not exist", path.display())]
    PathNotFound {
        /// The path at fault.
        path: PathBuf,
    },

    /// A glob among the paths to persist matched nothing.
    #[error(
        "{pattern:?} matches nothing under {} (give --allow-empty if that is expected)",
        root.display()
    )]
    GlobMatchedNothing {
        /// The glob.
        pattern: String,
        /// The directory it was matched under.
        root: PathBuf,
    },

    /// A glob among the paths to persist is not a valid glob.
    #[error("{pattern:?} is not a valid glob: {detail}")]
    BadPattern {
        /// The glob.
        pattern: String,
        /// What is wrong with it.
        detail: String,
    },

    /// An `--only` path or glob (attach, cache restore) selects nothing
    /// in the trees it was to pick from.
    #[error("--only {pattern:?} matches nothing in {among}")]
    OnlyMatchedNothing {
        /// The path or glob as given.
        pattern: String,
        /// What was looked in (`the layers of build, test`).
        among: String,
    },

    /// A path to persist is outside the root.
    #[error("{} is outside the root {}", path.display(), root.display())]
    PathOutsideRoot {
        /// The path at fault.
        path: PathBuf,
        /// The root paths must stay inside.
        root: PathBuf,
    },

    /// A path that must be a directory is not.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path at fault.
        path: PathBuf,
    },

    /// A file's type cannot be stored (a socket, a device).
    #[error("{} is a {kind}, which strata does not store", path.display())]
    UnsupportedFileType {
        /// The path at fault.
        path: PathBuf,
        /// The file's type.
        kind: &'static str,
    },

    /// A manifest names a path that could escape the target.
    #[error("unsafe path {path:?} in {object}: {reason}")]
    UnsafePath {
        /// The path at fault.
        path: String,
        /// The object at fault.
        object: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A run or cache entry expired (or was evicted or removed).
    #[error("{what} expired on {on} ({why}); {remedy}")]
    Expired {
        /// What kind of thing it is.
        what: String,
        /// The date it expired.
        on: String,
        /// Why: "15 days after its last use", or how it was evicted or
        /// removed.
        why: String,
        /// What to do about it.
        remedy: &'static str,
    },

    /// `rm` of a run or cache entry used within the grace period, unforced.
    #[error(
        "{what} was last used at {last_use}, within the store's gc grace period of {grace_secs} s: \
         a job may still be reading it; pass --force to remove it anyway"
    )]
    InUse {
        /// What it is: `run R`, `cache "K"`.
        what: String,
        /// Its last use (UTC).
        last_use: String,
        /// The grace period, in seconds.
        grace_secs: u64,
    },

    /// A cache key template cannot be rendered.
    #[error("cache key {template:?}: {reason}")]
    CacheKey {
        /// The template as given.
        template: String,
        /// Why it is refused.
        reason: String,
    },

    /// A rerun's target run cannot take it.
    #[error("cannot rerun into run {run}: {detail}")]
    RerunInto {
        /// The run.
        run: RunName,
        /// What is wrong, for a person.
        detail: String,
    },

    /// A rerun found no failed jobs to run again.
    #[error("run {run} has no failed jobs: nothing to rerun (name the jobs with --jobs)")]
    NothingToRerun {
        /// The run.
        run: RunName,
    },

    #[error(
        "this persist took {seconds} s, more than half the store's gc grace period ({grace} s): \
         chunks it reused may have been collected meanwhile, so its layer was not committed; \
         run it again"
    )]
    /// A persist outlived half the gc grace period and was not committed.
    PersistTooSlow {
        /// How long the persist took.
        seconds: u64,
        /// The store's gc grace period, in seconds.
        grace: u64,
    },

    /// Another gc holds the store's gc lease (`ops::lease`).
    #[error(
        "another gc is running on this store ({holder}, its lease until {until} Unix time); \
         this one did nothing: one gc at a time is enough"
    )]
    GcBusy {
        /// Who holds the lease.
        holder: String,
        /// When the lease ends, Unix seconds.
        until: i64,
    },

    /// A server answered with an error, or not at all.
    #[error("strata server {server}: {detail}")]
    Remote {
        /// The server's address.
        server: String,
        /// What is wrong, for a person.
        detail: String,
    },

    /// A server cannot be reached: no connection, no answer in time, or a
    /// proxy in front of it saying so (502-504), after every retry.
    #[error("strata server {server}: {detail}")]
    Unreachable {
        /// The server's address.
        server: String,
        /// What is wrong, for a person.
        detail: String,
    },

    /// An error a server raised and named (docs/protocol.md, "Errors"):
    /// its kind and message are what the server's library said, so it
    /// reads as the same error from a local store.
    #[error("{message}")]
    Served {
        /// The kind the server named.
        kind: ErrorKind,
        /// The server's address.
        server: String,
        /// The server's message.
        message: String,
    },

    /// A server refused the token.
    #[error("strata server {server} refused the token: {detail} (pass one with --token or $STRATA_TOKEN)")]
    Unauthorized {
        /// The server's address.
        server: String,
        /// What is wrong, for a person.
        detail: String,
    },

    /// A server forbids this token this operation.
    #[error("strata server {server} forbids this: {detail}")]
    Forbidden {
        /// The server's address.
        server: String,
        /// What is wrong, for a person.
        detail: String,
    },

    /// An object store (S3) request failed.
    #[error("object store {store}: {detail}")]
    ObjectStore {
        /// The object store's location.
        store: String,
        /// What is wrong, for a person.
        detail: String,
    },

    /// The store changed under a running attach.
    #[error("the store changed while attaching: {detail}")]
    Changed {
        /// What is wrong, for a person.
        detail: String,
    },
}
