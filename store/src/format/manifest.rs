//! Manifests: what one layer holds. A manifest lists every path of the layer
//! (files with their chunk lists, directories including empty ones, symlinks,
//! hardlinks) with modes and mtimes, sorted by path bytes, and is named by
//! the BLAKE3 of its encoding.
//!
//! The encoding is columnar (front-coded paths, then types and contents,
//! then modes, then mtimes) so that a next run's manifest differs from the
//! last one only where files changed, plus the mtimes. The store cuts the
//! encoding into chunks like file content, so unchanged stretches of a
//! manifest are stored once; `ManifestRoot` lists those chunks.
//!
//! A manifest is untrusted input at attach (a store is shared by many jobs),
//! so `decode` validates everything attach relies on: safe relative paths,
//! strict order, every parent present as a directory, hardlinks pointing at
//! files of the same manifest, sizes that add up. This module knows nothing
//! about how a manifest is built from disk or written back to it.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::keys::manifest_key;
use crate::format::pack::MAX_CHUNK_LEN;
use crate::id::{ChunkId, ManifestId};

/// The magic of manifest encodings.
pub const MANIFEST_MAGIC: &[u8; 8] = b"STRAMANI";
/// The format version of manifests written (2: frames); readers read 1
/// and 2.
pub const MANIFEST_VERSION: u32 = 2;
const ROOT_MAGIC: &[u8; 8] = b"STRAMROT";
const ROOT_VERSION: u32 = 1;
/// The most bytes a manifest's encoding may claim (a root is untrusted).
pub const MAX_MANIFEST_LEN: u64 = 4 << 30;
/// Longest path accepted, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component accepted, in bytes (Linux's NAME_MAX).
pub const MAX_COMPONENT_LEN: usize = 255;

/// A path inside a layer: relative, `/`-separated, no empty, `.` or `..`
/// components, no NUL. Kept as bytes, because file names need not be UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Checks `bytes` as a path inside a layer.
    pub fn new(bytes: Vec<u8>) -> std::result::Result<Self, &'static str> {
        if bytes.is_empty() {
            return Err("empty path");
        }
        if bytes.len() > MAX_PATH_LEN {
            return Err("path longer than 4096 bytes");
        }
        if bytes[0] == b'/' {
            return Err("absolute path");
        }
        if bytes.contains(&0) {
            return Err("NUL byte in path");
        }
        for c in bytes.split(|b| *b == b'/') {
            match c {
                b"" => return Err("empty path component"),
                b"." => return Err("'.' component"),
                b".." => return Err("'..' component"),
                c if c.len() > MAX_COMPONENT_LEN => return Err("component longer than 255 bytes"),
                _ => {}
            }
        }
        Ok(Self(bytes))
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As a relative OS path.
    pub fn to_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }

    /// The number of components: directories deeper in the tree have more.
    pub fn depth(&self) -> usize {
        self.0.iter().filter(|b| **b == b'/').count() + 1
    }
}

impl TryFrom<Vec<u8>> for RelPath {
    type Error = String;
    fn try_from(v: Vec<u8>) -> std::result::Result<Self, String> {
        RelPath::new(v).map_err(str::to_string)
    }
}

impl From<RelPath> for Vec<u8> {
    fn from(p: RelPath) -> Vec<u8> {
        p.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mtime {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds past `secs`.
    pub nanos: u32,
}

/// One chunk of a file, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk's id.
    pub id: ChunkId,
    /// Length in bytes.
    pub len: u32,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file and its chunks.
    File {
        /// The file's length in bytes.
        size: u64,
        /// Its chunks, in order.
        chunks: Vec<ChunkRef>,
    },
    /// The link's target exactly as written; never followed.
    Symlink {
        /// The target's bytes.
        target: Vec<u8>,
    },
    /// Another name for the `File` entry at `target` in the same manifest.
    Hardlink {
        /// The path of the file entry it names.
        target: RelPath,
    },
}

impl EntryKind {
    /// A file's chunks, in order (none for any other kind).
    pub fn chunks(&self) -> &[ChunkRef] {
        match self {
            EntryKind::File { chunks, .. } => chunks,
            _ => &[],
        }
    }
}

/// One path of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its path inside the layer.
    pub path: RelPath,
    /// Permission bits (`0o7777` at most); the type is in `kind`.
    pub mode: u32,
    /// Its modification time.
    pub mtime: Mtime,
    /// What it is.
    pub kind: EntryKind,
}

impl Entry {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }

    /// Whether it is a regular file (not a hardlink to one).
    pub fn is_file(&self) -> bool {
        matches!(self.kind, EntryKind::File { .. })
    }
}

/// Totals over a manifest, for reports and `ls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Extra names of hardlinked files.
    pub hardlinks: u64,
    /// Bytes of regular files' content (each hardlinked file counted once).
    pub bytes: u64,
}

impl Totals {
    /// Counts one entry of `kind`.
    pub fn count(&mut self, kind: &EntryKind) {
        match kind {
            EntryKind::Dir => self.dirs += 1,
            EntryKind::File { size, .. } => {
                self.files += 1;
                self.bytes += size;
            }
            EntryKind::Symlink { .. } => self.symlinks += 1,
            EntryKind::Hardlink { .. } => self.hardlinks += 1,
        }
    }
}

/// A layer's tree: its entries, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The entries, sorted by path, parents first.
    pub entries: Vec<Entry>,
}

/// The stored form of a manifest: one column per field, so that what
/// changes between runs (mtimes) does not disturb what does not. Written
/// from `ColumnsRef` and read by `manifest_columns` straight into entries;
/// this derived form is what both must agree with (their tests).
#[cfg(test)]
#[derive(Serialize, Deserialize)]
pub(crate) struct Columns {
    /// Front-coded paths: bytes shared with the previous path, then the rest.
    pub paths: Vec<(u32, Vec<u8>)>,
    pub kinds: Vec<EntryKind>,
    pub modes: Vec<u32>,
    /// Seconds as the difference from the previous entry's, and nanoseconds.
    pub mtimes: Vec<(i64, u32)>,
}

/// `Columns` as version 1 wrote them: borrowing the manifest's paths and contents
/// rather than copying them (a million-file manifest is not held twice).
/// It serializes to the same bytes as `Columns`.
#[cfg(test)]
#[derive(Serialize)]
struct ColumnsRef<'a> {
    paths: Vec<(u32, &'a [u8])>,
    kinds: Vec<&'a EntryKind>,
    modes: Vec<u32>,
    mtimes: Vec<(i64, u32)>,
}

/// The object at `manifests/<id>`: the chunks that hold the manifest's
/// encoding, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRoot {
    /// Length of the manifest's encoding in bytes.
    pub len: u64,
    /// Its chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

impl ManifestRoot {
    /// The object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(ROOT_MAGIC, ROOT_VERSION, self)
    }

    /// Reads and checks the object's bytes.
    pub fn decode(id: &ManifestId, bytes: &[u8]) -> Result<Self> {
        let object = manifest_key(id);
        let root: ManifestRoot = codec::decode(ROOT_MAGIC, ROOT_VERSION, &object, bytes)?;
        let sum: u64 = root.chunks.iter().map(|c| c.len as u64).sum();
        if sum != root.len
            || root.len > MAX_MANIFEST_LEN
            || root
                .chunks
                .iter()
                .any(|c| c.len == 0 || c.len > MAX_CHUNK_LEN)
        {
            return Err(Error::corrupt(object, "chunk lengths do not add up"));
        }
        Ok(root)
    }
}

impl Manifest {
    /// Sorts the entries; call before `encode` when building.
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
    }

    /// The bytes version 1 wrote (one column per field over the whole
    /// manifest), for tests that readers still read it.
    #[cfg(test)]
    pub(crate) fn encode_v1(&self) -> (ManifestId, Vec<u8>) {
        let mut cols = ColumnsRef {
            paths: Vec::with_capacity(self.entries.len()),
            kinds: Vec::with_capacity(self.entries.len()),
            modes: Vec::with_capacity(self.entries.len()),
            mtimes: Vec::with_capacity(self.entries.len()),
        };
        let mut prev: &[u8] = b"";
        let mut prev_secs = 0i64;
        for e in &self.entries {
            let p = e.path.as_bytes();
            let shared = p.iter().zip(prev).take_while(|(a, b)| a == b).count();
            cols.paths.push((shared as u32, &p[shared..]));
            prev = p;
            cols.kinds.push(&e.kind);
            cols.modes.push(e.mode);
            cols.mtimes
                .push((e.mtime.secs.wrapping_sub(prev_secs), e.mtime.nanos));
            prev_secs = e.mtime.secs;
        }
        let bytes = codec::encode(MANIFEST_MAGIC, 1, &cols);
        (ManifestId::of(&bytes), bytes)
    }

    /// Checks the invariants attach relies on (see the module comment).
    pub fn validate(&self, object: &str) -> Result<()> {
        let unsafe_path = |p: &RelPath, reason: &'static str| Error::UnsafePath {
            path: p.to_string(),
            object: object.to_string(),
            reason,
        };
        let mut dirs: HashSet<&[u8]> = HashSet::new();
        let mut prev: Option<&RelPath> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if prev.is_some_and(|p| p >= &e.path) {
                return Err(unsafe_path(&e.path, "entries not sorted or duplicated"));
            }
            prev = Some(&e.path);
            let path = e.path.as_bytes();
            if let Some(end) = path.iter().rposition(|b| *b == b'/') {
                if !dirs.contains(&path[..end]) {
                    return Err(unsafe_path(
                        &e.path,
                        "its parent is not a directory of the layer",
                    ));
                }
            }
            check_content(e).map_err(|why| unsafe_path(&e.path, why))?;
            match &e.kind {
                EntryKind::Dir => {
                    dirs.insert(path);
                }
                EntryKind::File { .. } | EntryKind::Symlink { .. } => {}
                EntryKind::Hardlink { target } => {
                    // Entries are sorted: an earlier file is found before `i`.
                    let earlier = &self.entries[..i];
                    let found = earlier.binary_search_by(|x| x.path.cmp(target));
                    let is_file = |j: usize| matches!(earlier[j].kind, EntryKind::File { .. });
                    if !found.is_ok_and(is_file) {
                        return Err(unsafe_path(
                            &e.path,
                            "hardlink to no earlier file of the layer",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// What the tree holds.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for e in &self.entries {
            t.count(&e.kind);
        }
        t
    }

    /// The entry at `path`, by binary search.
    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// The checks of one entry on its own (both versions): its mode, a
/// file's chunk lengths against its size, a symlink's target.
pub(crate) fn check_content(e: &Entry) -> std::result::Result<(), &'static str> {
    if e.mode > 0o7777 {
        return Err("invalid mode");
    }
    match &e.kind {
        EntryKind::File { size, chunks } => {
            let mut sum: u64 = 0;
            for c in chunks {
                if c.len == 0 || c.len > MAX_CHUNK_LEN {
                    return Err("chunk length out of range");
                }
                sum += c.len as u64;
            }
            if sum != *size {
                return Err("size does not match its chunks");
            }
        }
        EntryKind::Symlink { target } => {
            if target.is_empty() || target.contains(&0) || target.len() > MAX_PATH_LEN {
                return Err("invalid symlink target");
            }
        }
        EntryKind::Dir | EntryKind::Hardlink { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s.as_bytes().to_vec()).unwrap()
    }

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: p(path),
            mode: 0o755,
            mtime: Mtime::default(),
            kind,
        }
    }

    /// The borrowed columns write what the owned ones always wrote
    /// (version 1), and version 1 is still read.
    #[test]
    fn borrowed_columns_encode_like_owned_ones() {
        let file = EntryKind::File {
            size: 3,
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"abc"),
                len: 3,
            }],
        };
        let link = EntryKind::Symlink {
            target: b"../x".to_vec(),
        };
        let m = Manifest {
            entries: vec![
                entry("a", EntryKind::Dir),
                entry("a/b", file),
                entry("a/c", link),
            ],
        };
        let owned = Columns {
            paths: vec![(0, b"a".to_vec()), (1, b"/b".to_vec()), (2, b"c".to_vec())],
            kinds: m.entries.iter().map(|e| e.kind.clone()).collect(),
            modes: vec![0o755; 3],
            mtimes: vec![(0, 0); 3],
        };
        let bytes = codec::encode(MANIFEST_MAGIC, 1, &owned);
        assert_eq!(m.encode_v1().1, bytes);
        assert_eq!(
            Manifest::decode(&ManifestId::of(&bytes), &bytes).unwrap(),
            m
        );
    }

    /// A tree attach could not write safely is refused, naming why: an
    /// entry below something that is not a directory of the layer, a
    /// hardlink to anything but an earlier file of it.
    #[test]
    fn parents_and_hardlink_targets_are_checked() {
        let file = || EntryKind::File {
            size: 1,
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"x"),
                len: 1,
            }],
        };
        let link = |t: &str| EntryKind::Hardlink { target: p(t) };
        let check = |entries: Vec<Entry>| {
            Manifest { entries }
                .validate("m")
                .map_err(|e| e.to_string())
        };
        let fine = vec![
            entry("a", EntryKind::Dir),
            entry("a/b", file()),
            entry("a/b-x", link("a/b")),
            entry("a/c", EntryKind::Dir),
            entry("a/c/d", link("a/b")),
            entry("a/c/e", file()),
            entry("z", link("a/c/e")),
        ];
        check(fine).unwrap();
        for (entries, why) in [
            (vec![entry("a/b", file())], "its parent is not a directory"),
            (
                vec![entry("a", file()), entry("a/b", file())],
                "its parent is not a directory",
            ),
            (
                vec![entry("a", link("b")), entry("b", file())],
                "hardlink to no earlier file",
            ),
            (
                vec![entry("a", EntryKind::Dir), entry("b", link("a"))],
                "hardlink to no earlier file",
            ),
            (
                vec![entry("a", file()), entry("b", link("c"))],
                "hardlink to no earlier file",
            ),
        ] {
            let err = check(entries).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    /// Hostile bytes: a valid encoding with a path patched to an escape,
    /// an absolute path or a NUL is refused at decode, naming the path.
    #[test]
    fn patched_escapes_are_refused() {
        let m = Manifest {
            entries: vec![entry("qq", EntryKind::Dir)],
        };
        let (_, bytes) = m.encode();
        let at = bytes.windows(2).position(|w| w == b"qq").unwrap();
        for evil in [&b".."[..], b"/q", b"q\0", b"q/"] {
            let mut b = bytes.clone();
            b[at..at + 2].copy_from_slice(evil);
            let id = ManifestId::of(&b);
            let e = Manifest::decode(&id, &b).unwrap_err();
            assert!(matches!(e, Error::UnsafePath { .. }), "{evil:?}: {e}");
        }
    }

    /// A next run's manifest that differs in one file and in every mtime
    /// still shares most of its chunks with the last one.
    #[test]
    fn next_manifest_shares_most_chunks() {
        use crate::format::chunking::{chunk_slice, ChunkerParams};
        let build = |changed: &str, mtime: i64| {
            let mut m = Manifest::default();
            m.entries.push(entry("node_modules", EntryKind::Dir));
            for i in 0..4000 {
                let content = if i == 2000 {
                    changed.to_string()
                } else {
                    format!("c{i}")
                };
                let mut e = entry(
                    &format!("node_modules/f{i:05}.js"),
                    EntryKind::File {
                        size: 1,
                        chunks: vec![ChunkRef {
                            id: ChunkId::of(content.as_bytes()),
                            len: 1,
                        }],
                    },
                );
                e.mtime = Mtime {
                    secs: mtime,
                    nanos: 0,
                };
                m.entries.push(e);
            }
            m
        };
        let cut = |m: &Manifest| {
            let mut ids = vec![];
            chunk_slice(&m.encode().1, ChunkerParams::METADATA, &mut |id, _| {
                ids.push(id);
                Ok(())
            })
            .unwrap();
            ids
        };
        let (a, b) = (cut(&build("old", 100)), cut(&build("new", 200)));
        let old: HashSet<_> = a.iter().collect();
        let fresh = b.iter().filter(|id| !old.contains(id)).count();
        assert!(b.len() > 20);
        assert!(fresh * 5 < b.len(), "{fresh} of {} chunks new", b.len());
    }

    #[test]
    fn rel_paths_reject_escapes() {
        for bad in ["", "/abs", "a//b", "./a", "a/..", "a/./b", "a\0b", "a/"] {
            assert!(RelPath::new(bad.as_bytes().to_vec()).is_err(), "{bad:?}");
        }
        assert!(RelPath::new("x".repeat(256).into_bytes()).is_err());
        assert!(RelPath::new("ünï cödé/..x".as_bytes().to_vec()).is_ok());
    }

    #[test]
    fn decode_validates() {
        let id = ChunkId::of(b"hi");
        let file = EntryKind::File {
            size: 2,
            chunks: vec![ChunkRef { id, len: 2 }],
        };
        let mut m = Manifest {
            entries: vec![
                entry("d", EntryKind::Dir),
                entry("d/f", file.clone()),
                entry("d/g", EntryKind::Hardlink { target: p("d/f") }),
            ],
        };
        let (mid, bytes) = m.encode();
        assert_eq!(Manifest::decode(&mid, &bytes).unwrap(), m);
        assert_eq!(m.totals().files, 1);

        let bad_cases = [
            vec![entry("d/f", file.clone())],
            vec![entry("d", EntryKind::Dir), entry("d", EntryKind::Dir)],
            vec![entry("f", file.clone()), entry("f/x", file.clone())],
            vec![entry("g", EntryKind::Hardlink { target: p("f") })],
            vec![entry(
                "f",
                EntryKind::File {
                    size: 3,
                    chunks: vec![ChunkRef { id, len: 2 }],
                },
            )],
            vec![entry("s", EntryKind::Symlink { target: vec![] })],
        ];
        for entries in bad_cases {
            m.entries = entries;
            let (mid, bytes) = m.encode();
            assert!(Manifest::decode(&mid, &bytes).is_err(), "{m:?}");
        }
    }
}
