//! Building errors: from an I/O error and the path it concerns, from the
//! errors of ids and of sled, and the `ctx` shorthand on `io::Result`.

use std::io;
use std::path::PathBuf;

use super::{Error, ErrorKind, Result};
use crate::id::IdError;

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

    /// An `Error::Corrupt` for `object`.
    pub fn corrupt(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            detail: detail.into(),
        }
    }

    /// True for a workspace conflict between two jobs (CLI exit code 3).
    pub fn is_conflict(&self) -> bool {
        self.kind() == ErrorKind::Conflict
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
