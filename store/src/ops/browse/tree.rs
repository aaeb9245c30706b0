//! A layer's files as a tree: the children of one directory of a
//! manifest, each with its size (a directory's: of the files under it)
//! and mode, for a page that walks the tree one directory at a time.

use crate::error::{Error, Result};
use crate::format::manifest::{EntryKind, Manifest, RelPath};
use crate::id::ManifestId;
use crate::read::load_manifest;
use crate::repo::Store;

/// One child of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// Its name in the directory (bytes as stored; not always UTF-8).
    pub name: Vec<u8>,
    /// Its path in the layer.
    pub path: RelPath,
    /// What it is.
    pub kind: ChildKind,
    /// Its permission bits.
    pub mode: u32,
    /// A file's bytes, or a directory's: those of the files under it.
    pub size: u64,
}

/// What a child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// A directory.
    Dir,
    /// A regular file (or a hard link to one).
    File,
    /// A symbolic link.
    Symlink,
}

/// A layer's manifest, loaded.
pub fn manifest(store: &Store, id: &ManifestId) -> Result<Manifest> {
    Ok(load_manifest(store, id)?.0)
}

/// Whether `path` is `dir` itself or under it (`dir` empty: the root).
pub fn is_under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// The children of `dir` (empty: the layer's root), sorted by name.
/// `Err(NotFound)` when the layer holds no such directory.
pub fn children(m: &Manifest, dir: &[u8]) -> Result<Vec<Child>> {
    if !dir.is_empty()
        && !m
            .entries
            .iter()
            .any(|e| e.path.as_bytes() == dir && e.is_dir())
    {
        return Err(Error::NotFound {
            key: String::from_utf8_lossy(dir).into_owned(),
        });
    }
    let prefix_len = if dir.is_empty() { 0 } else { dir.len() + 1 };
    let mut out: Vec<Child> = Vec::new();
    for e in &m.entries {
        let p = e.path.as_bytes();
        if p == dir || !is_under(p, dir) {
            continue;
        }
        let rest = &p[prefix_len..];
        if rest.contains(&b'/') {
            continue;
        }
        let (kind, size) = match &e.kind {
            EntryKind::Dir => (ChildKind::Dir, dir_size(m, p)),
            EntryKind::File { size, .. } => (ChildKind::File, *size),
            EntryKind::Hardlink { target } => (ChildKind::File, file_size(m, target)),
            EntryKind::Symlink { target } => (ChildKind::Symlink, target.len() as u64),
        };
        out.push(Child {
            name: rest.to_vec(),
            path: e.path.clone(),
            kind,
            mode: e.mode,
            size,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Bytes of the files under `dir`.
pub fn dir_size(m: &Manifest, dir: &[u8]) -> u64 {
    m.entries
        .iter()
        .filter(|e| is_under(e.path.as_bytes(), dir))
        .map(|e| match &e.kind {
            EntryKind::File { size, .. } => *size,
            _ => 0,
        })
        .sum()
}

fn file_size(m: &Manifest, path: &RelPath) -> u64 {
    match m.get(path).map(|e| &e.kind) {
        Some(EntryKind::File { size, .. }) => *size,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_is_by_whole_components() {
        assert!(is_under(b"a/b", b"a"));
        assert!(is_under(b"a", b"a"));
        assert!(!is_under(b"ab/c", b"a"));
        assert!(is_under(b"x", b""));
    }
}
