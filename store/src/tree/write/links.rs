//! Steps 9 and 11 of attach: symlinks and hardlinks made (under a
//! temporary name, then renamed over what is there, never written
//! through), and every planned directory's mode and mtime set, deepest
//! first, through a descriptor opened without following links. Knows
//! nothing of file content.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{open_no_follow, set_mode_and_mtime, to_filetime, WriteOptions};
use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{EntryKind, Mtime};
use crate::tree::plan::Planned;
use crate::tree::reserved::TMP_PREFIX;
use crate::util::unique_tmp_name;

/// Step 9: makes every planned symlink and hardlink under `root` (the
/// target or its staging directory, `direct`).
pub(super) fn place_links(entries: &[Planned], root: &Path, direct: bool) -> Result<()> {
    for e in entries {
        let dest = root.join(e.path.to_path());
        match &e.target {
            EntryKind::Symlink { target } => place_symlink(&dest, target, e.mtime, direct)?,
            EntryKind::Hardlink { target } => {
                place_hardlink(&root.join(target.to_path()), &dest, direct)?
            }
            _ => {}
        }
    }
    Ok(())
}

/// Step 11: sets every planned directory's mode and mtime, deepest first,
/// so read-only directories are made read-only last.
pub(super) fn set_dir_modes(entries: &[Planned], at: &Path, opts: WriteOptions) -> Result<()> {
    let mut dirs: Vec<&Planned> = entries
        .iter()
        .filter(|e| e.target == EntryKind::Dir)
        .collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.depth()));
    for e in dirs {
        let d = at.join(e.path.to_path());
        let f = open_no_follow(&d, true).ctx("open directory", &d)?;
        set_mode_and_mtime(&f, &d, opts.mode(e.mode), e.mtime)?;
    }
    Ok(())
}

/// Removes whatever is at `path` if it is a directory, so a rename can
/// replace it (rename replaces files and symlinks by itself).
fn clear_dir_at(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).ctx("replace directory", path),
        _ => Ok(()),
    }
}

/// Makes `dest` a symlink to `target` (in an empty staging directory,
/// `direct`: made there, with nothing to replace).
fn place_symlink(dest: &Path, target: &[u8], mtime: Mtime, direct: bool) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = Path::new(std::ffi::OsStr::from_bytes(target));
    if direct {
        std::os::unix::fs::symlink(target, dest).ctx("create symlink", dest)?;
    } else if !fs::read_link(dest).is_ok_and(|t| t == target) {
        clear_dir_at(dest)?;
        let tmp = dest.with_file_name(unique_tmp_name(TMP_PREFIX));
        std::os::unix::fs::symlink(target, &tmp).ctx("create symlink", &tmp)?;
        if let Err(e) = fs::rename(&tmp, dest) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rename into", dest, e));
        }
    }
    filetime::set_symlink_file_times(dest, to_filetime(mtime), to_filetime(mtime))
        .ctx("set mtime of", dest)
}

/// Makes `dest` a hardlink to `original` (`direct` as `place_symlink`'s).
fn place_hardlink(original: &Path, dest: &Path, direct: bool) -> Result<()> {
    if direct {
        return fs::hard_link(original, dest).ctx("create hardlink", dest);
    }
    let orig = fs::symlink_metadata(original).ctx("stat", original)?;
    if let Ok(m) = fs::symlink_metadata(dest) {
        if m.dev() == orig.dev() && m.ino() == orig.ino() {
            return Ok(());
        }
    }
    clear_dir_at(dest)?;
    let tmp = dest.with_file_name(unique_tmp_name(TMP_PREFIX));
    fs::hard_link(original, &tmp).ctx("create hardlink", &tmp)?;
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("rename into", dest, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const MTIME: Mtime = Mtime { secs: 1, nanos: 0 };

    // A link replaces a directory in its way, and a symlink already there
    // is replaced, never written through.
    #[test]
    fn links_replace_what_is_in_their_way() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(d.join("sub")).unwrap();
        place_symlink(&d, b"elsewhere", MTIME, false).unwrap();
        assert_eq!(fs::read_link(&d).unwrap(), Path::new("elsewhere"));
        let outside = t.path().join("outside");
        fs::write(&outside, "theirs").unwrap();
        let original = t.path().join("original");
        fs::write(&original, "ours").unwrap();
        let h = t.path().join("h");
        symlink(&outside, &h).unwrap();
        place_hardlink(&original, &h, false).unwrap();
        assert_eq!(fs::read(&h).unwrap(), b"ours");
        assert_eq!(fs::read(&outside).unwrap(), b"theirs");
        let (m, o) = (fs::metadata(&h).unwrap(), fs::metadata(&original).unwrap());
        assert_eq!((m.dev(), m.ino()), (o.dev(), o.ino()));
        // No temporary name is left behind.
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    // Directory modes are set deepest first: a read-only parent does not
    // stop its child's mode being set, and the parent ends read-only.
    #[test]
    fn directory_modes_are_set_deepest_first() {
        use crate::format::manifest::RelPath;
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        let dir = |p: &str, mode| Planned {
            path: RelPath::new(p.as_bytes().to_vec()).unwrap(),
            mode,
            mtime: MTIME,
            target: EntryKind::Dir,
            layer: 0,
        };
        let entries = [dir("a", 0o555), dir("a/b", 0o700)];
        set_dir_modes(&entries, t.path(), WriteOptions::default()).unwrap();
        let mode = |p: &str| fs::metadata(t.path().join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("a"), mode("a/b")), (0o555, 0o700));
        let mtime = fs::metadata(t.path().join("a")).unwrap().mtime();
        assert_eq!(mtime, 1);
        fs::set_permissions(t.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}
