//! `--only`: the part of a tree an attach or a cache restore writes. Paths
//! and globs, relative to the layers' roots, as persist takes them: a
//! path or a glob that names a directory takes everything below it, and
//! `!glob` drops what it matches. A path is *kept* when a pattern selects
//! it, or when it is a directory above a selected path in any layer (the
//! directories a selected file needs to stand in). Everything else is
//! left alone: not planned, not checked for conflicts, not fetched.
//! Knows nothing of layers' writers or of the disk.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use globset::GlobMatcher;

use crate::error::{Error, Result};
use crate::format::manifest::Manifest;
use crate::tree::scan::patterns::{glob, is_pattern};

/// One `--only` pattern.
#[derive(Debug)]
enum Pattern {
    /// A path: itself and everything below it.
    Path(Vec<u8>),
    /// A glob: what it matches, and everything below that.
    Glob(GlobMatcher),
}

impl Pattern {
    /// Whether the pattern selects `path`: matches it or a directory above it.
    fn selects(&self, path: &[u8]) -> bool {
        match self {
            Pattern::Path(p) => {
                path.starts_with(p) && (path.len() == p.len() || path[p.len()] == b'/')
            }
            Pattern::Glob(g) => std::iter::once(path)
                .chain(ancestors(path))
                .any(|a| g.is_match(Path::new(OsStr::from_bytes(a)))),
        }
    }
}

/// The patterns of an `--only`, compiled (checked before anything is
/// fetched).
#[derive(Debug)]
pub struct Only {
    /// Each pattern as the user wrote it, and compiled.
    wanted: Vec<(String, Pattern)>,
    excluded: Vec<GlobMatcher>,
}

impl Only {
    /// Compiles `patterns`; `None` when there are none (the whole tree).
    /// A pattern that is absolute or climbs out with `..` is refused.
    pub fn new(patterns: &[PathBuf]) -> Result<Option<Only>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut only = Only {
            wanted: Vec::new(),
            excluded: Vec::new(),
        };
        for given in patterns {
            let text = given.to_string_lossy().into_owned();
            if let Some(rest) = text.strip_prefix('!') {
                only.excluded.push(glob(rest)?);
            } else if is_pattern(given) {
                only.wanted
                    .push((text.clone(), Pattern::Glob(glob(&text)?)));
            } else {
                only.wanted.push((text, Pattern::Path(plain(given)?)));
            }
        }
        if only.wanted.is_empty() {
            return Err(Error::BadPattern {
                pattern: patterns[0].to_string_lossy().into_owned(),
                detail: "--only needs a path or glob to keep, not only exclusions".into(),
            });
        }
        Ok(Some(only))
    }

    /// Whether `path` is selected: some pattern selects it and no
    /// exclusion matches it or a directory above it.
    fn selects(&self, path: &[u8]) -> bool {
        self.wanted.iter().any(|(_, p)| p.selects(path)) && !self.excludes(path)
    }

    fn excludes(&self, path: &[u8]) -> bool {
        self.excluded.iter().any(|g| {
            std::iter::once(path)
                .chain(ancestors(path))
                .any(|a| g.is_match(Path::new(OsStr::from_bytes(a))))
        })
    }

    /// What the patterns keep of `trees` (the layers an attach merges, or
    /// one cache entry): every selected path, and the directories above
    /// them. A pattern that selects nothing in any of them is an error
    /// naming it (`among` says what was looked in).
    pub fn select<'m>(
        &self,
        trees: impl IntoIterator<Item = &'m Manifest>,
        among: &str,
    ) -> Result<Selection<'_>> {
        let mut matched = vec![false; self.wanted.len()];
        let mut holders: HashSet<Vec<u8>> = HashSet::new();
        for tree in trees {
            for e in &tree.entries {
                let path = e.path.as_bytes();
                let mut selected = false;
                for (i, (_, p)) in self.wanted.iter().enumerate() {
                    if p.selects(path) {
                        matched[i] = true;
                        selected = true;
                    }
                }
                if !selected || self.excludes(path) {
                    continue;
                }
                for a in ancestors(path) {
                    if !holders.insert(a.to_vec()) {
                        break;
                    }
                }
            }
        }
        if let Some(i) = matched.iter().position(|m| !m) {
            return Err(Error::OnlyMatchedNothing {
                pattern: self.wanted[i].0.clone(),
                among: among.to_string(),
            });
        }
        Ok(Selection {
            only: self,
            holders,
        })
    }
}

/// What an `--only` keeps of the trees it was selected over.
#[derive(Debug)]
pub struct Selection<'o> {
    only: &'o Only,
    /// Directories above a selected path.
    holders: HashSet<Vec<u8>>,
}

impl Selection<'_> {
    /// Whether `path` is written: selected, or a directory above a path
    /// that is.
    pub fn keeps(&self, path: &[u8]) -> bool {
        self.holders.contains(path) || self.only.selects(path)
    }
}

/// A plain `--only` path as the bytes of a layer's path: `./` and a
/// trailing `/` dropped; absolute or `..` refused.
fn plain(given: &Path) -> Result<Vec<u8>> {
    let bad = |detail: &str| Error::BadPattern {
        pattern: given.to_string_lossy().into_owned(),
        detail: detail.into(),
    };
    let mut out: Vec<u8> = Vec::new();
    for c in given.components() {
        match c {
            Component::Normal(name) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(name.as_bytes());
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("a path is relative to the layers' roots"))
            }
            Component::ParentDir => return Err(bad("a path may not climb out with `..`")),
        }
    }
    if out.is_empty() {
        return Err(bad("an empty path"));
    }
    Ok(out)
}

/// The proper ancestors of `path`, deepest first.
pub(crate) fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{Entry, EntryKind, Mtime, RelPath};

    fn tree(paths: &[&str]) -> Manifest {
        let entries = paths
            .iter()
            .map(|p| Entry {
                path: RelPath::new(p.as_bytes().to_vec()).unwrap(),
                mode: 0o644,
                mtime: Mtime::default(),
                kind: if p.contains('.') {
                    EntryKind::File {
                        size: 0,
                        chunks: vec![],
                    }
                } else {
                    EntryKind::Dir
                },
            })
            .collect();
        Manifest { entries }
    }

    fn only(patterns: &[&str]) -> Only {
        let given: Vec<PathBuf> = patterns.iter().map(PathBuf::from).collect();
        Only::new(&given).unwrap().unwrap()
    }

    // A path takes itself and what is below it, not a sibling sharing its
    // prefix; the directories above a kept path are kept to hold it.
    #[test]
    fn paths_take_what_is_below_and_the_directories_above() {
        let t = tree(&[
            "a",
            "a/b",
            "a/b/x.js",
            "a/b/y.map",
            "a/bc",
            "a/bc/z.js",
            "c.txt",
        ]);
        let o = only(&["./a/b/"]);
        let s = o.select([&t], "the layers").unwrap();
        let kept: Vec<&str> = [
            "a",
            "a/b",
            "a/b/x.js",
            "a/b/y.map",
            "a/bc",
            "a/bc/z.js",
            "c.txt",
        ]
        .into_iter()
        .filter(|p| s.keeps(p.as_bytes()))
        .collect();
        assert_eq!(kept, ["a", "a/b", "a/b/x.js", "a/b/y.map"]);
        let o = only(&["a/**/*.js", "!a/bc"]);
        let s = o.select([&t], "the layers").unwrap();
        assert!(s.keeps(b"a/b/x.js") && s.keeps(b"a/b") && s.keeps(b"a"));
        assert!(!s.keeps(b"a/b/y.map") && !s.keeps(b"a/bc/z.js") && !s.keeps(b"c.txt"));
    }

    // A pattern no tree holds is an error naming it; absolute and
    // climbing paths are refused before anything is looked at.
    #[test]
    fn a_pattern_that_selects_nothing_is_named() {
        let t = tree(&["a", "a/x.js"]);
        let e = only(&["a", "dist"]).select([&t], "the layers").unwrap_err();
        assert!(
            matches!(&e, Error::OnlyMatchedNothing { pattern, .. } if pattern == "dist"),
            "{e}"
        );
        for bad in ["/etc", "a/../../b", "!a"] {
            let e = Only::new(&[PathBuf::from(bad)]).unwrap_err();
            assert!(matches!(e, Error::BadPattern { .. }), "{bad}: {e}");
        }
        assert!(Only::new(&[]).unwrap().is_none());
    }
}
