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

/// Whether a path as the user wrote it is a glob (`dist/**/*.js`) or an
/// exclusion (`!dist/**/*.map`) rather than a path.
fn is_pattern(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.starts_with('!') || s.contains(['*', '?', '['])
}

/// A glob as CI users write them: `*` within one path component, `**`
/// across any, matched against paths relative to the root.
fn glob(pattern: &str) -> Result<globset::GlobMatcher> {
    let bad = |detail: &str| Error::BadPattern {
        pattern: pattern.to_string(),
        detail: detail.to_string(),
    };
    if pattern.starts_with('/') {
        return Err(bad("a glob is relative to the root (--root)"));
    }
    if Path::new(pattern)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(bad("a glob may not climb out of the root with `..`"));
    }
    globset::GlobBuilder::new(pattern.trim_start_matches("./"))
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::BadPattern {
            pattern: pattern.to_string(),
            detail: e.kind().to_string(),
        })
}

/// The directory a glob's matches all lie under: its components before the
/// first one holding a wildcard.
fn literal_prefix(pattern: &str) -> PathBuf {
    Path::new(pattern.trim_start_matches("./"))
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect()
}

/// Expands the globs among `paths` into the paths under `root` they match
/// (walking only below each glob's literal prefix), keeps plain paths, and
/// returns the exclusions (`!glob`) to apply to the whole result. A glob
/// that matches nothing is an error naming it, unless `allow_empty`.
fn expand(
    root_abs: &Path,
    paths: &[PathBuf],
    allow_empty: bool,
) -> Result<(Vec<PathBuf>, Vec<globset::GlobMatcher>)> {
    let mut out = Vec::new();
    let mut excludes = Vec::new();
    for given in paths {
        if !is_pattern(given) {
            out.push(given.clone());
            continue;
        }
        let text = given.to_string_lossy();
        if let Some(rest) = text.strip_prefix('!') {
            excludes.push(glob(rest)?);
            continue;
        }
        let matcher = glob(&text)?;
        let prefix = literal_prefix(&text);
        let start = root_abs.join(&prefix);
        let mut matched = 0;
        if start.is_dir() {
            for entry in walkdir::WalkDir::new(&start).min_depth(1) {
                let entry = entry.map_err(|e| {
                    let path = e.path().unwrap_or(&start).to_path_buf();
                    Error::io("list", path, e.into())
                })?;
                let rel = entry
                    .path()
                    .strip_prefix(root_abs)
                    .expect("the walk stays below the root");
                if matcher.is_match(rel) {
                    out.push(rel.to_path_buf());
                    matched += 1;
                }
            }
        }
        if matched == 0 && !allow_empty {
            return Err(Error::GlobMatchedNothing {
                pattern: text.into_owned(),
                root: root_abs.to_path_buf(),
            });
        }
    }
    Ok((out, excludes))
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
        let rel = relative_to_root(&root_abs, root, given)?;
        let abs = root_abs.join(&rel);
        // The walk must stay inside the root: the path's parent, with every
        // symlink resolved, has to lie under the root too.
        if let Some(parent) = abs.parent().filter(|_| !rel.as_os_str().is_empty()) {
            let real = fs::canonicalize(parent).map_err(|_| Error::PathNotFound {
                path: given.clone(),
            })?;
            if !real.starts_with(&root_abs) {
                return Err(Error::PathOutsideRoot {
                    path: given.clone(),
                    root: root.into(),
                });
            }
        }
        let meta = fs::symlink_metadata(&abs).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::PathNotFound {
                path: given.clone(),
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
        if rel.as_os_str().is_empty() {
            // The root itself: its contents, not the root, form the layer.
        } else {
            found.push((rel_path(&rel, &abs)?, Stat::from(&meta)));
        }
        if meta.is_dir() {
            walked.0.insert(rel.as_os_str().as_bytes().to_vec());
            found.extend(walk(&root_abs, &abs, &rel)?);
        }
    }
    // Paths given twice, or inside one another, are found twice.
    found.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    found.dedup_by(|a, b| a.0 == b.0);
    if !excludes.is_empty() {
        // An excluded directory takes what is below it along.
        let mut dropped: std::collections::HashSet<PathBuf> = Default::default();
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
    let mut first_of_inode: HashMap<(u64, u64), RelPath> = HashMap::new();
    let entries = found
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
        .collect::<Result<_>>()?;
    Ok(Tree {
        root: root_abs,
        entries,
        scanned_at,
        walked,
    })
}

/// Everything below `dir` (the directory at `rel` in the tree), walked
/// without following symlinks. Each directory is opened once and its
/// entries stat'ed relative to it (`fstatat`), not by their whole paths,
/// which would walk every component again. Every directory's
/// subdirectories are walked in parallel, at every depth: one package of
/// a `node_modules` or a `site-packages` can hold most of the tree. Each
/// directory's entries are one list, handed over as it is, never copied
/// into its parent's.
fn walk(root_abs: &Path, dir: &Path, rel: &Path) -> Result<impl Iterator<Item = (RelPath, Stat)>> {
    use rustix::fs::{openat, Mode, OFlags};
    let fd = openat(
        rustix::fs::CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("read directory", dir, e.into()))?;
    let lists = std::sync::Mutex::new(Vec::new());
    walk_dir(
        root_abs,
        fd,
        rel.as_os_str().as_bytes(),
        &|| dir.to_path_buf(),
        &lists,
    )?;
    let lists: Vec<Vec<(RelPath, Stat)>> = lists.into_inner().expect("poisoned");
    Ok(lists.into_iter().flatten())
}

/// Stats the entries of the open directory `fd` (at `rel` in the tree;
/// `path` names it in errors) into one list, then walks its
/// subdirectories in parallel, each relative to it.
fn walk_dir(
    root_abs: &Path,
    fd: std::os::fd::OwnedFd,
    rel: &[u8],
    path: &(dyn Fn() -> PathBuf + Sync),
    lists: &std::sync::Mutex<Vec<Vec<(RelPath, Stat)>>>,
) -> Result<()> {
    use rustix::fs::{openat, statat, AtFlags, Mode, OFlags};
    let (dir, names) = read_dir_at(fd, path)?;
    let fd = dir.fd().expect("an open directory has a descriptor");
    let mut here = Vec::with_capacity(names.len());
    let mut subdirs = Vec::new();
    for name in names {
        let child = match rel {
            [] => name.clone(),
            p => [p, b"/", &name].concat(),
        };
        let abs = || {
            let parent = root_abs.join(std::ffi::OsStr::from_bytes(rel));
            parent.join(std::ffi::OsStr::from_bytes(&name))
        };
        let st = statat(
            fd,
            std::ffi::OsStr::from_bytes(&name),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io("stat", abs(), e.into()))?;
        let stat = Stat::from_raw(&st);
        let is_dir = matches!(stat.kind, StatKind::Dir);
        let unsafe_path = |reason| Error::UnsafePath {
            path: abs().display().to_string(),
            object: "the tree being persisted".into(),
            reason,
        };
        if super::reserved::is_reserved(&name) {
            return Err(unsafe_path(super::reserved::RESERVED_REASON));
        }
        // Only a directory's path is needed again, to walk it.
        let kept = is_dir.then(|| child.clone());
        here.push((RelPath::new(child).map_err(unsafe_path)?, stat));
        if let Some(child) = kept {
            subdirs.push((name, child));
        }
    }
    lists.lock().expect("poisoned").push(here);
    subdirs.par_iter().try_for_each(|(name, child)| {
        let abs = || root_abs.join(std::ffi::OsStr::from_bytes(child));
        let sub = openat(
            fd,
            std::ffi::OsStr::from_bytes(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("read directory", abs(), e.into()))?;
        walk_dir(root_abs, sub, child, &abs, lists)
    })
}

/// The names in the directory `fd` (`path` names it in errors), and the
/// directory, to stat them in.
fn read_dir_at(
    fd: std::os::fd::OwnedFd,
    path: &(dyn Fn() -> PathBuf + Sync),
) -> Result<(rustix::fs::Dir, Vec<Vec<u8>>)> {
    let err = |e: rustix::io::Errno| Error::io("read directory", path(), e.into());
    let mut dir = rustix::fs::Dir::new(fd).map_err(err)?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok((dir, names))
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
