//! One attach at a time per target directory. Two attaches into one
//! `--at` at once would each see the other's half-built tree: one layer's
//! symlink could replace a directory the other is writing into (its
//! files then land outside the target), and the second sweeps the first's
//! live staging directory. So an attach takes an exclusive `flock` on the
//! target directory itself (no file added to the user's tree) for its
//! whole run, and a second one waits, saying so. Knows nothing about
//! plans or stores.

use std::path::Path;

use rustix::fs::{flock, open, FlockOperation, Mode, OFlags};

use crate::error::{Error, Result};
use crate::repo::Observer;

/// The lock on a target directory, held until dropped.
#[derive(Debug)]
pub(crate) struct TargetLock {
    _dir: std::os::fd::OwnedFd,
}

impl TargetLock {
    /// Locks the directory `at`, waiting (after telling `observer`) while
    /// another attach holds it. A file system without `flock` (some
    /// network mounts refuse it on a directory) leaves the target
    /// unlocked, as before: refusing every attach there would be worse.
    pub(crate) fn take(at: &Path, observer: &dyn Observer) -> Result<TargetLock> {
        let dir = open(
            at,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", at, e.into()))?;
        let unsupported = |e: rustix::io::Errno| {
            matches!(
                e,
                rustix::io::Errno::NOLCK | rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::BADF
            )
        };
        match flock(&dir, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                observer.waiting_for_target(at);
                match flock(&dir, FlockOperation::LockExclusive) {
                    Ok(()) => {}
                    Err(e) if unsupported(e) => {}
                    Err(e) => return Err(Error::io("lock", at, e.into())),
                }
            }
            Err(e) if unsupported(e) => {}
            Err(e) => return Err(Error::io("lock", at, e.into())),
        }
        Ok(TargetLock { _dir: dir })
    }
}
