//! Attach's target: the directory itself (made if missing, a regular
//! file refused), the staging directory an empty target's tree is built
//! in and moved in from (step 10), every planned directory made real
//! and writable (step 5), and the sweep of temporary files and staging
//! directories a killed attach left. Knows nothing of chunks or the store.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::Target;
use crate::error::{Error, IoContext, Result};
use crate::format::manifest::EntryKind;
use crate::tree::plan::Planned;
use crate::tree::reserved::{
    held_by_another_live_process, is_temp_name, STAGING_PREFIX, TMP_PREFIX,
};
use crate::util::unique_tmp_name;

/// The attach directory, created if missing; a regular file there is an
/// error. The user named it, so a symlink to a directory is followed here,
/// and nowhere below.
pub(super) fn prepare_target(at: &Path) -> Result<PathBuf> {
    match fs::metadata(at) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::NotADirectory { path: at.into() }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(at).ctx("create directory", at)?;
        }
        Err(e) => return Err(Error::io("stat", at, e)),
    }
    fs::canonicalize(at).ctx("resolve", at)
}

/// `ensure_dir` in the staging directory of a target that was empty: made
/// without a look first, unless something has appeared there since.
fn make_dir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => ensure_dir(path),
        done => done.ctx("create directory", path),
    }
}

/// Makes `path` a real, writable directory, replacing a file or symlink.
fn ensure_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o700 != 0o700 {
                let mode = m.permissions().mode() | 0o700;
                fs::set_permissions(path, fs::Permissions::from_mode(mode))
                    .ctx("make writable", path)?;
            }
            return Ok(());
        }
        Ok(_) => fs::remove_file(path).ctx("replace", path)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("stat", path, e)),
    }
    fs::create_dir(path).ctx("create directory", path)
}

/// Where an attach into an empty target builds the tree: a directory at
/// the target's top whose top-level entries are moved into the target once
/// every file in them is complete. Removed, with whatever is left in it,
/// when dropped (an attach that fails leaves nothing of its own behind).
pub(super) struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub(super) fn make(at: &Path) -> Result<Staging> {
        let dir = at.join(unique_tmp_name(STAGING_PREFIX));
        fs::create_dir(&dir).ctx("create directory", &dir)?;
        Ok(Staging { dir })
    }

    /// Moves each of `names` from the staging directory into `at`, never
    /// over something that has appeared there since the attach began.
    /// The staging directory.
    pub(super) fn dir(&self) -> &PathBuf {
        &self.dir
    }

    pub(super) fn move_into(&self, at: &Path, names: &[&Path]) -> Result<()> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        for name in names {
            let (from, to) = (self.dir.join(name), at.join(name));
            match renameat_with(CWD, &from, CWD, &to, RenameFlags::NOREPLACE) {
                Ok(()) => continue,
                Err(rustix::io::Errno::EXIST) => {}
                // A file system without RENAME_NOREPLACE: look, then rename.
                Err(rustix::io::Errno::INVAL) if fs::symlink_metadata(&to).is_err() => {
                    fs::rename(&from, &to).ctx("move into", &to)?;
                    continue;
                }
                Err(rustix::io::Errno::INVAL) => {}
                Err(e) => return Err(Error::io("move into", &to, e.into())),
            }
            return Err(Error::Changed {
                detail: format!("{} appeared while the attach was writing it", to.display()),
            });
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Step 5: makes every planned directory a real, writable directory
/// (parents first: one depth at a time, each in parallel, on `look`);
/// then, over a target that held something, removes the temporary files
/// a killed attach left in every planned directory and a staging
/// directory at the top. Returns how many it removed.
pub(super) fn make_dirs(
    entries: &[Planned],
    target: &Target,
    at: &Path,
    look: Option<&rayon::ThreadPool>,
) -> Result<u64> {
    let fresh = target.direct;
    let mut made: Vec<(usize, PathBuf)> = entries
        .iter()
        .filter(|e| e.target == EntryKind::Dir)
        .map(|e| (e.path.depth(), target.at.join(e.path.to_path())))
        .collect();
    made.sort_by_key(|d| d.0);
    for level in made.chunk_by(|a, b| a.0 == b.0) {
        on(look, || {
            level.par_iter().try_for_each(|(_, d)| match fresh {
                true => make_dir(d),
                false => ensure_dir(d),
            })
        })?;
    }
    // An empty target has no temporary files.
    if fresh {
        return Ok(0);
    }
    on(look, || {
        let below: u64 = made
            .par_iter()
            .map(|(_, d)| sweep_temp_files(d, false))
            .try_reduce(|| 0, |a, b| Ok(a + b))?;
        Ok(below + sweep_temp_files(at, true)?)
    })
}

/// The names of the tree's top-level entries (what step 10 moves in).
pub(super) fn top_level(entries: &[Planned]) -> Vec<&Path> {
    entries
        .iter()
        .filter(|e| e.path.depth() == 1)
        .map(|e| e.path.to_path())
        .collect()
}

/// Threads for looking at what a target holds: a stat or a directory
/// listing from a cold page cache waits on the disk, not on a core.
const LOOK_THREADS: usize = 16;

/// A pool of `LOOK_THREADS` threads (none if one cannot be started: the
/// work then runs on the caller's pool).
pub(super) fn metadata_threads() -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(LOOK_THREADS.max(rayon::current_num_threads()))
        .thread_name(|i| format!("strata-look-{i}"))
        .build()
        .ok()
}

/// Runs `f` on `pool`, or where it is called without one.
pub(super) fn on<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// Removes the temporary files an interrupted attach left in `dir` (files
/// and symlinks only: a directory of that name is the user's), and, at the
/// target's `top`, its staging directory; never one another running
/// process made (an attach into a directory below this target).
fn sweep_temp_files(dir: &Path, top: bool) -> Result<u64> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name();
        if held_by_another_live_process(&name, TMP_PREFIX)
            || held_by_another_live_process(&name, STAGING_PREFIX)
        {
            continue;
        }
        let is_dir = || entry.file_type().map(|t| t.is_dir());
        if is_temp_name(&name, TMP_PREFIX) && !is_dir().ctx("stat", entry.path())? {
            fs::remove_file(entry.path()).ctx("remove stale temporary file", entry.path())?;
            removed += 1;
        } else if top
            && is_temp_name(&name, STAGING_PREFIX)
            && is_dir().ctx("stat", entry.path())?
        {
            fs::remove_dir_all(entry.path()).ctx("remove stale staging directory", entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    // The staging directory's entries move in whole; one that appeared at
    // the target meanwhile is never replaced, and dropping the staging
    // directory removes what was not moved.
    #[test]
    fn staging_moves_in_without_replacing() {
        let t = tempfile::tempdir().unwrap();
        let staging = Staging::make(t.path()).unwrap();
        let dir = staging.dir.clone();
        assert!(is_temp_name(dir.file_name().unwrap(), STAGING_PREFIX));
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/f"), "new").unwrap();
        fs::write(dir.join("g"), "new").unwrap();
        fs::write(t.path().join("g"), "theirs").unwrap();
        let err = staging
            .move_into(t.path(), &[Path::new("a"), Path::new("g")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("appeared while the attach was writing it"),
            "{err}"
        );
        assert_eq!(fs::read(t.path().join("a/b/f")).unwrap(), b"new");
        assert_eq!(fs::read(t.path().join("g")).unwrap(), b"theirs");
        drop(staging);
        assert!(!dir.exists());
    }

    // A killed attach's temporary files and staging directory go; a
    // user's file or directory that merely looks alike stays.
    #[test]
    fn the_sweep_removes_only_what_an_attach_left() {
        let t = tempfile::tempdir().unwrap();
        let tmp = t.path().join(unique_tmp_name(TMP_PREFIX));
        fs::write(&tmp, "half").unwrap();
        let staging = t.path().join(unique_tmp_name(STAGING_PREFIX));
        fs::create_dir_all(staging.join("a")).unwrap();
        let dir_like_tmp = t.path().join(unique_tmp_name(TMP_PREFIX));
        fs::create_dir(&dir_like_tmp).unwrap();
        let notes = t.path().join(".strata-tmp-notes");
        fs::write(&notes, "mine").unwrap();
        assert_eq!(sweep_temp_files(t.path(), true).unwrap(), 2);
        assert!(!tmp.exists() && !staging.exists());
        assert!(dir_like_tmp.is_dir() && notes.is_file());
        // Below the top, a staging directory's name is the user's.
        let below = t.path().join("d");
        fs::create_dir(&below).unwrap();
        let staging_below = below.join(unique_tmp_name(STAGING_PREFIX));
        fs::create_dir(&staging_below).unwrap();
        assert_eq!(sweep_temp_files(&below, false).unwrap(), 0);
        assert!(staging_below.is_dir());
    }

    // A symlink where a directory is planned is replaced, never followed:
    // what it points at is left as it was.
    #[test]
    fn a_planned_directory_replaces_a_symlink_without_following_it() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o500)).unwrap();
        let d = t.path().join("d");
        symlink(&outside, &d).unwrap();
        ensure_dir(&d).unwrap();
        assert!(fs::symlink_metadata(&d).unwrap().is_dir());
        let mode = fs::metadata(&outside).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o500);
        // A read-only directory of the target is made writable for now.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o500)).unwrap();
        ensure_dir(&d).unwrap();
        let mode = fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(mode & 0o700, 0o700);
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    }
}
