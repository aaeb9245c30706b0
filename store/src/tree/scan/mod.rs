//! Reading a tree from disk for persist: resolves the user's paths under the
//! root, walks them without following symlinks, and returns every entry with
//! its path inside the layer and its metadata.
//!
//! Owns the rules for what may be persisted (paths inside the root, which
//! file types) and the detection of hardlinks. Knows nothing about chunks.

use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{Mtime, RelPath};
use crate::tree::stat_cache::{now_nanos, FileStat};

pub(crate) mod patterns;
mod walk;

use patterns::expand;
use walk::walk;

/// What one on-disk entry becomes in the layer.
#[derive(Debug, Clone)]
pub enum ScanKind {
    Dir,
    File {
        size: u64,
        /// What the stat said, for the stat cache (`tree::stat_cache`).
        stat: FileStat,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A second name of the file at `target` (same device and inode).
    Hardlink {
        target: RelPath,
    },
}

#[derive(Debug, Clone)]
pub struct Scanned {
    pub rel: RelPath,
    pub mode: u32,
    pub mtime: Mtime,
    pub kind: ScanKind,
}

/// A scanned tree: entries sorted by path, relative to `root`.
#[derive(Debug)]
pub struct Tree {
    /// The root, with symlinks resolved.
    pub root: PathBuf,
    pub entries: Vec<Scanned>,
    /// When the walk started, Unix nanoseconds: no stat is older.
    pub scanned_at: i128,
    /// The directories walked whole (the given paths that are
    /// directories; empty for the root): what lies below one of them and
    /// is not an entry is not there. The directories between the root and
    /// a given path are entries, but were not walked.
    pub walked: Walked,
}

/// The directories a scan walked whole, by path inside the layer.
#[derive(Debug, Default, Clone)]
pub struct Walked(HashSet<Vec<u8>>);

impl Walked {
    /// Whether `rel` lies inside a directory walked whole.
    pub fn holds(&self, rel: &[u8]) -> bool {
        self.0.contains(&b""[..])
            || rel
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'/')
                .any(|(i, _)| self.0.contains(&rel[..i]))
    }
}

impl Tree {
    /// Where an entry is on disk.
    pub fn abs(&self, s: &Scanned) -> PathBuf {
        self.root.join(s.rel.to_path())
    }

    /// Opens the tree's files for reading, one after another.
    pub fn opener(&self) -> Opener<'_> {
        Opener {
            tree: self,
            dir: None,
        }
    }
}

/// Opens files of a tree relative to their directory, which it keeps open
/// while the next file is in it too: opening `root/a/b/c/f` by its whole
/// path walks every component again, file after file (a `node_modules`
/// file lies a dozen components deep). A file's directories are the
/// scanned ones, never symlinks, so the file opened is the one its whole
/// path names.
pub struct Opener<'t> {
    tree: &'t Tree,
    /// The directory of the last file opened: its path in the tree, and it.
    dir: Option<(Vec<u8>, std::os::fd::OwnedFd)>,
}

impl Opener<'_> {
    /// Opens `s`, a file of the tree, for reading.
    pub fn open(&mut self, s: &Scanned) -> std::io::Result<fs::File> {
        use rustix::fs::{openat, Mode, OFlags};
        let rel = s.rel.as_bytes();
        let (parent, name) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        let cached = matches!(&self.dir, Some((p, _)) if p.as_slice() == parent);
        if !cached {
            let path = self.tree.root.join(std::ffi::OsStr::from_bytes(parent));
            let fd = openat(
                rustix::fs::CWD,
                &path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.dir = Some((parent.to_vec(), fd));
        }
        let (_, dir) = self.dir.as_ref().expect("set above");
        let fd = openat(
            dir,
            std::ffi::OsStr::from_bytes(name),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(fs::File::from(fd))
    }
}

/// What the walk keeps of an entry's metadata: a few words, since a large
/// tree has a million of them.
#[derive(Debug, Clone, Copy)]
struct Stat {
    kind: StatKind,
    mode: u32,
    mtime: Mtime,
    size: u64,
    /// Device and inode, for files with more than one link.
    inode: Option<(u64, u64)>,
    /// A regular file's whole stat.
    file: Option<FileStat>,
}

#[derive(Debug, Clone, Copy)]
enum StatKind {
    Dir,
    File,
    Symlink,
    Special(&'static str),
}

impl Stat {
    /// The same from a raw `stat` (`fstatat`). Its fields' types differ
    /// between architectures, hence the casts.
    #[allow(clippy::unnecessary_cast)]
    fn from_raw(st: &rustix::fs::Stat) -> Self {
        use rustix::fs::FileType;
        let kind = match FileType::from_raw_mode(st.st_mode as _) {
            FileType::Directory => StatKind::Dir,
            FileType::Symlink => StatKind::Symlink,
            FileType::RegularFile => StatKind::File,
            FileType::Socket => StatKind::Special("socket"),
            FileType::Fifo => StatKind::Special("named pipe"),
            FileType::BlockDevice | FileType::CharacterDevice => StatKind::Special("device"),
            _ => StatKind::Special("special file"),
        };
        let is_file = matches!(kind, StatKind::File);
        let file = FileStat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as u32),
            mode: st.st_mode as u32,
        };
        Stat {
            kind,
            mode: st.st_mode as u32 & 0o7777,
            mtime: Mtime {
                secs: file.mtime.0,
                nanos: file.mtime.1,
            },
            size: file.size,
            inode: (is_file && st.st_nlink > 1).then_some((file.dev, file.ino)),
            file: is_file.then_some(file),
        }
    }
}

impl From<&Metadata> for Stat {
    fn from(m: &Metadata) -> Self {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            StatKind::Dir
        } else if ft.is_symlink() {
            StatKind::Symlink
        } else if ft.is_file() {
            StatKind::File
        } else {
            StatKind::Special(special_kind(m))
        };
        Stat {
            kind,
            mode: m.permissions().mode() & 0o7777,
            mtime: Mtime {
                secs: m.mtime(),
                nanos: m.mtime_nsec() as u32,
            },
            size: m.len(),
            inode: (ft.is_file() && m.nlink() > 1).then(|| (m.dev(), m.ino())),
            file: ft.is_file().then(|| FileStat::of(m)),
        }
    }
}

/// Resolves `paths` (relative to `root`, or absolute inside it; globs such
/// as `dist/**/*.js` expanded, `!`-globs excluded) and walks them. The
/// result is sorted by path, with every parent directory between the root
/// and each path included, and overlapping paths merged.
pub fn scan(root: &Path, paths: &[PathBuf], allow_empty: bool) -> Result<Tree> {
    let scanned_at = now_nanos();
    let root_abs = fs::canonicalize(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::PathNotFound { path: root.into() },
        _ => Error::io("resolve", root, e),
    })?;
    if !root_abs.is_dir() {
        return Err(Error::NotADirectory { path: root.into() });
    }
    let (paths, excludes) = expand(&root_abs, paths, allow_empty)?;
    // Gathered unordered, then sorted once (in parallel): inserting a
    // million entries into an ordered map one by one is a second or more
    // on one core.
    let mut found: Vec<(RelPath, Stat)> = Vec::new();
    let mut walked = Walked::default();
    for given in &paths {
        find(&root_abs, root, given, &mut found, &mut walked)?;
    }
    // Paths given twice, or inside one another, are found twice.
    found.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    found.dedup_by(|a, b| a.0 == b.0);
    exclude(&mut found, &excludes);
    let entries = entries_of(&root_abs, found)?;
    Ok(Tree {
        root: root_abs,
        entries,
        scanned_at,
        walked,
    })
}

/// Finds the path `given` names: the directories between the root and
/// it, it, and (a directory) everything below it, walked (and noted in
/// `walked`). The walk must stay inside the root: the path's parent, with
/// every symlink resolved, has to lie under the root too.
fn find(
    root_abs: &Path,
    root: &Path,
    given: &Path,
    found: &mut Vec<(RelPath, Stat)>,
    walked: &mut Walked,
) -> Result<()> {
    let rel = relative_to_root(root_abs, root, given)?;
    let abs = root_abs.join(&rel);
    if let Some(parent) = abs.parent().filter(|_| !rel.as_os_str().is_empty()) {
        let real = fs::canonicalize(parent).map_err(|_| Error::PathNotFound {
            path: given.to_path_buf(),
        })?;
        if !real.starts_with(root_abs) {
            return Err(Error::PathOutsideRoot {
                path: given.to_path_buf(),
                root: root.into(),
            });
        }
    }
    let meta = fs::symlink_metadata(&abs).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::PathNotFound {
            path: given.to_path_buf(),
        },
        _ => Error::io("stat", &abs, e),
    })?;
    // The directories between the root and the path.
    let mut ancestor = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        ancestor.push(c);
        let a = root_abs.join(&ancestor);
        let m = fs::symlink_metadata(&a).ctx("stat", &a)?;
        found.push((rel_path(&ancestor, &a)?, Stat::from(&m)));
    }
    // The root itself: its contents, not the root, form the layer.
    if !rel.as_os_str().is_empty() {
        found.push((rel_path(&rel, &abs)?, Stat::from(&meta)));
    }
    if meta.is_dir() {
        walked.0.insert(rel.as_os_str().as_bytes().to_vec());
        found.extend(walk(root_abs, &abs, &rel)?);
    }
    Ok(())
}

/// Drops what `excludes` match from `found` (sorted by path): an excluded
/// directory takes what is below it along.
fn exclude(found: &mut Vec<(RelPath, Stat)>, excludes: &[globset::GlobMatcher]) {
    if excludes.is_empty() {
        return;
    }
    let mut dropped: HashSet<PathBuf> = HashSet::new();
    found.retain(|(rel, st)| {
        let p = rel.to_path();
        let out = excludes.iter().any(|g| g.is_match(p))
            || p.ancestors().skip(1).any(|a| dropped.contains(a));
        if out && matches!(st.kind, StatKind::Dir) {
            dropped.insert(p.to_path_buf());
        }
        !out
    });
}

/// The scanned entries of what was found (sorted by path): a symlink's
/// target read, the second and later paths of one inode hardlinks to the
/// first, and a special file refused.
fn entries_of(root_abs: &Path, found: Vec<(RelPath, Stat)>) -> Result<Vec<Scanned>> {
    let mut first_of_inode: HashMap<(u64, u64), RelPath> = HashMap::new();
    found
        .into_iter()
        .map(|(rel, st)| {
            let kind = match st.kind {
                StatKind::Dir => ScanKind::Dir,
                StatKind::Symlink => {
                    let abs = root_abs.join(rel.to_path());
                    let t = fs::read_link(&abs).ctx("read link", &abs)?;
                    ScanKind::Symlink {
                        target: t.as_os_str().as_bytes().to_vec(),
                    }
                }
                StatKind::File => {
                    let file = ScanKind::File {
                        size: st.size,
                        stat: st.file.unwrap_or_default(),
                    };
                    match st.inode {
                        Some(inode) => match first_of_inode.get(&inode) {
                            Some(first) => ScanKind::Hardlink {
                                target: first.clone(),
                            },
                            None => {
                                first_of_inode.insert(inode, rel.clone());
                                file
                            }
                        },
                        None => file,
                    }
                }
                StatKind::Special(kind) => {
                    return Err(Error::UnsupportedFileType {
                        path: root_abs.join(rel.to_path()),
                        kind,
                    })
                }
            };
            Ok(Scanned {
                rel,
                mode: st.mode,
                mtime: st.mtime,
                kind,
            })
        })
        .collect()
}

/// `given` as a path relative to the root, resolved lexically: `..` may not
/// climb out of the root.
fn relative_to_root(root_abs: &Path, root: &Path, given: &Path) -> Result<PathBuf> {
    let outside = || Error::PathOutsideRoot {
        path: given.into(),
        root: root.into(),
    };
    let joined = if given.is_absolute() {
        let g = given.strip_prefix(root_abs).or_else(|_| {
            let root_given = std::path::absolute(root).map_err(|_| outside())?;
            given.strip_prefix(&root_given).map_err(|_| outside())
        })?;
        g.to_path_buf()
    } else {
        given.to_path_buf()
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(outside());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    Ok(out)
}

fn rel_path(rel: &Path, abs: &Path) -> Result<RelPath> {
    let reserved = rel
        .components()
        .any(|c| super::reserved::is_reserved(c.as_os_str().as_bytes()));
    if reserved {
        return Err(Error::UnsafePath {
            path: abs.display().to_string(),
            object: "the tree being persisted".into(),
            reason: super::reserved::RESERVED_REASON,
        });
    }
    RelPath::new(rel.as_os_str().as_bytes().to_vec()).map_err(|reason| Error::UnsafePath {
        path: abs.display().to_string(),
        object: "the tree being persisted".into(),
        reason,
    })
}

fn special_kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_socket() {
        "socket"
    } else if ft.is_fifo() {
        "named pipe"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_expand_exclude_and_say_when_they_match_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        for f in [
            "dist/a.js",
            "dist/a.js.map",
            "dist/sub/b.js",
            "sandbox/x/y",
            "other.txt",
        ] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        let names = |paths: &[&str]| -> Vec<String> {
            let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            scan(&root, &paths, false)
                .unwrap()
                .entries
                .iter()
                .map(|e| e.rel.to_string())
                .collect()
        };
        assert_eq!(
            names(&["dist/**/*.js"]),
            ["dist", "dist/a.js", "dist/sub", "dist/sub/b.js"]
        );
        assert_eq!(names(&["dist/*.js"]), ["dist", "dist/a.js"]);
        assert_eq!(
            names(&["sandbox/**"]),
            ["sandbox", "sandbox/x", "sandbox/x/y"]
        );
        assert_eq!(
            names(&["dist", "!dist/**/*.map", "!dist/sub"]),
            ["dist", "dist/a.js"]
        );
        let e = scan(&root, &[PathBuf::from("build/*.js")], false).unwrap_err();
        assert!(
            e.to_string().contains("\"build/*.js\" matches nothing"),
            "{e}"
        );
        assert!(scan(&root, &[PathBuf::from("build/*.js")], true)
            .unwrap()
            .entries
            .is_empty());
        for bad in ["dist/[", "../*", "/etc/*"] {
            let e = scan(&root, &[PathBuf::from(bad)], false).unwrap_err();
            assert!(matches!(e, Error::BadPattern { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn paths_must_exist_and_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"x").unwrap();
        fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();

        let got = scan(&root, &[PathBuf::from("a/b/f")], false).unwrap();
        let names: Vec<String> = got.entries.iter().map(|s| s.rel.to_string()).collect();
        assert_eq!(names, ["a", "a/b", "a/b/f"]);

        let all = scan(&root, &[PathBuf::from(".")], false).unwrap().entries;
        assert_eq!(all.len(), 4, "{all:?}"); // a, a/b, a/b/f, up (a link)

        for (p, outside) in [("missing", false), ("../secret", true), ("up/secret", true)] {
            let e = scan(&root, &[PathBuf::from(p)], false).unwrap_err();
            let expect_outside = matches!(e, Error::PathOutsideRoot { .. });
            assert_eq!(expect_outside, outside, "{p}: {e}");
            assert!(e.to_string().contains(p), "{e}");
        }
        assert!(scan(&root, &[dir.path().join("secret")], false).is_err());
        assert!(scan(&root, &[root.join("a")], false).is_ok());
    }
}
