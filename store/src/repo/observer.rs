//! What a long operation tells its caller: progress, waits, and the steps
//! of attach and persist (the library never prints; the CLI draws it).
//! Knows nothing of stores or files.

use std::path::Path;
use std::sync::Arc;

/// What a long operation tells its caller; the library never prints.
pub trait Observer: Sync {
    /// Another process holds the store; this one waits for it.
    fn waiting_for_lock(&self, _store: &Path) {}
    /// Another attach is writing into the same target; this one waits for
    /// it to finish.
    fn waiting_for_target(&self, _target: &Path) {}
    /// A persist or attach moved on (called often, from any thread: the
    /// observer decides what to show, and how often).
    fn progress(&self, _progress: &Progress) {}
    /// A step of attach or persist was reached (`Step` says which), on the
    /// thread doing it. For tests: a hook that runs something at a precise
    /// point between two steps, instead of a sleep hoping to land there.
    fn reached(&self, _step: Step, _path: &Path) {}
}

/// The points of attach and persist an observer hears of (`reached`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Attach holds its target's lock and has not looked at it yet.
    AttachLocked,
    /// Attach has written every file (into the staging directory, for an
    /// empty target), and has not yet recorded them in the stat cache.
    AttachWritten,
    /// Persist has read (and hashed) the file at the path, and has not yet
    /// recorded it in the stat cache.
    PersistRead,
}

/// A store's progress observer (a wrapper, so `Store` stays `Debug`).
#[derive(Clone)]
pub(crate) struct Heard(pub(crate) Arc<dyn Observer + Send + Sync>);

impl std::fmt::Debug for Heard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// How far a persist or attach has come.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Progress {
    /// `persist` or `attach`.
    pub command: &'static str,
    /// Bytes of file content read (persist) or written (attach) so far.
    pub done_bytes: u64,
    /// Bytes of file content in all.
    pub total_bytes: u64,
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl Observer for Quiet {}
