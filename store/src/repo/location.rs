//! Where a store is: a directory, a `strata serve` namespace or an S3
//! prefix, as `--store` names it. Knows nothing of opening one.

use std::path::PathBuf;

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory.
    Dir(PathBuf),
    /// `http(s)://HOST:PORT/NAMESPACE`.
    Http(String),
    /// `s3://BUCKET/PREFIX`.
    S3(String),
}

impl StoreLocation {
    /// Reads `--store`: a URL by its scheme, else a directory.
    pub fn parse(s: &str) -> StoreLocation {
        if s.starts_with("http://") || s.starts_with("https://") {
            StoreLocation::Http(s.to_string())
        } else if s.starts_with("s3://") {
            StoreLocation::S3(s.to_string())
        } else {
            StoreLocation::Dir(PathBuf::from(s))
        }
    }

    /// Whether it is reached over the network.
    pub fn is_remote(&self) -> bool {
        !matches!(self, StoreLocation::Dir(_))
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Dir(p) => write!(f, "{}", p.display()),
            StoreLocation::Http(u) | StoreLocation::S3(u) => f.write_str(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_named_by_its_scheme_else_a_directory() {
        let http = StoreLocation::parse("https://h:8427/ns");
        assert_eq!(http, StoreLocation::Http("https://h:8427/ns".into()));
        assert!(http.is_remote());
        assert!(StoreLocation::parse("s3://b/p").is_remote());
        let dir = StoreLocation::parse("s3-not-a-url");
        assert_eq!(dir, StoreLocation::Dir("s3-not-a-url".into()));
        assert!(!dir.is_remote());
        assert_eq!(dir.to_string(), "s3-not-a-url");
    }
}
