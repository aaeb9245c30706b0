//! Stable names for the library's errors: what a program matches on
//! instead of message text, and what `strata serve` sends in an error
//! body's `kind` (docs/protocol.md, "Errors") so a client turns a server's
//! answer back into the error a local store gives.

use super::Error;

/// Lists each variant of `Error` once with its stable name (the variant's
/// name in snake case); `Error::kind` is generated from the same list, so
/// a variant added to `Error` and not here fails to compile.
macro_rules! kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// What kind of error an `Error` is, by a name that does not change
        /// (`ErrorKind::name`): the same for an error raised here and for
        /// one a server raised and a client read back.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $(
                #[doc = concat!("`Error::", stringify!($variant), "`, named `", $name, "`.")]
                $variant,
            )*
        }

        impl ErrorKind {
            /// Every kind.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant),*];

            /// The stable name, as the wire's error body carries it.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => $name,)*
                }
            }

            /// The kind of a stable name; `None` for a name this version
            /// does not know (a newer server's).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(ErrorKind::$variant),)*
                    _ => None,
                }
            }
        }

        impl Error {
            /// What kind of error this is; for an error a server raised,
            /// the kind it raised.
            pub fn kind(&self) -> ErrorKind {
                match self {
                    $(Error::$variant { .. } => ErrorKind::$variant,)*
                    Error::Served { kind, .. } => *kind,
                }
            }
        }
    };
}

kinds! {
    Io => "io",
    NoSpace => "no_space",
    Meta => "meta",
    NoRoom => "no_room",
    NotFound => "not_found",
    InvalidId => "invalid_id",
    InvalidName => "invalid_name",
    Refused => "refused",
    Corrupt => "corrupt",
    CorruptChunk => "corrupt_chunk",
    MissingChunk => "missing_chunk",
    Incomplete => "incomplete",
    UnsupportedVersion => "unsupported_version",
    NotAStore => "not_a_store",
    UnknownRun => "unknown_run",
    RunExists => "run_exists",
    RunOfAnotherRef => "run_of_another_ref",
    Immutable => "immutable",
    BadRequest => "bad_request",
    TooLarge => "too_large",
    NotAllowed => "not_allowed",
    GraceTooShort => "grace_too_short",
    UnknownJob => "unknown_job",
    DuplicateJob => "duplicate_job",
    UnknownRequire => "unknown_require",
    Cycle => "cycle",
    Config => "config",
    Graph => "graph",
    Conflict => "conflict",
    PathNotFound => "path_not_found",
    GlobMatchedNothing => "glob_matched_nothing",
    BadPattern => "bad_pattern",
    OnlyMatchedNothing => "only_matched_nothing",
    PathOutsideRoot => "path_outside_root",
    NotADirectory => "not_a_directory",
    UnsupportedFileType => "unsupported_file_type",
    UnsafePath => "unsafe_path",
    Expired => "expired",
    InUse => "in_use",
    CacheKey => "cache_key",
    RerunInto => "rerun_into",
    NothingToRerun => "nothing_to_rerun",
    PersistTooSlow => "persist_too_slow",
    GcBusy => "gc_busy",
    Remote => "remote",
    Unreachable => "unreachable",
    Unauthorized => "unauthorized",
    Forbidden => "forbidden",
    ObjectStore => "object_store",
    Changed => "changed",
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire's names are the variants' names in snake case, each once,
    /// and read back to the same kind.
    #[test]
    fn names_are_the_variants_in_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &kind in ErrorKind::ALL {
            let mut snake = String::new();
            for (i, c) in format!("{kind:?}").chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            assert_eq!(kind.name(), snake);
            assert!(seen.insert(kind.name()), "{} twice", kind.name());
            assert_eq!(ErrorKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ErrorKind::from_name("a_kind_from_the_future"), None);
    }

    /// A served error keeps its kind and its message.
    #[test]
    fn a_served_error_is_its_kind_and_says_its_message() {
        let e = Error::Served {
            kind: ErrorKind::UnknownJob,
            server: "http://h:1/ns".into(),
            message: "run r has no job j (its jobs: a)".into(),
        };
        assert_eq!(e.kind(), ErrorKind::UnknownJob);
        assert_eq!(e.to_string(), "run r has no job j (its jobs: a)");
    }
}
