//! Walking a directory for persist without following symlinks: each
//! directory opened once, its entries stat'ed relative to it, its
//! subdirectories walked in parallel. Knows nothing of patterns or of
//! what files hold.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{Stat, StatKind};
use crate::error::{Error, Result};
use crate::format::manifest::RelPath;

/// Everything below `dir` (the directory at `rel` in the tree), walked
/// without following symlinks. Each directory is opened once and its
/// entries stat'ed relative to it (`fstatat`), not by their whole paths,
/// which would walk every component again. Every directory's
/// subdirectories are walked in parallel, at every depth: one package of
/// a `node_modules` or a `site-packages` can hold most of the tree. Each
/// directory's entries are one list, handed over as it is, never copied
/// into its parent's.
pub(super) fn walk(
    root_abs: &Path,
    dir: &Path,
    rel: &Path,
) -> Result<impl Iterator<Item = (RelPath, Stat)>> {
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
        if crate::tree::reserved::is_reserved(&name) {
            return Err(unsafe_path(crate::tree::reserved::RESERVED_REASON));
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
