//! One description of everything attach must reproduce (types, content,
//! modes, mtimes, symlink targets, hardlink groups, empty directories), so
//! every test compares trees the same way. It knows nothing about stores.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One entry of a tree, as attach must reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory (empty or not: its entries are listed on their own).
    Dir {
        /// Permission bits.
        mode: u32,
        /// Seconds and nanoseconds.
        mtime: (i64, u32),
    },
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Seconds and nanoseconds.
        mtime: (i64, u32),
        /// BLAKE3 of the content, in hex.
        hash: String,
        /// Files sharing an inode share a group number (numbered in path
        /// order); `None` for a file with one link.
        link_group: Option<usize>,
    },
    /// A symbolic link, never followed.
    Link {
        /// The link's target as stored.
        target: PathBuf,
        /// Seconds and nanoseconds.
        mtime: (i64, u32),
    },
}

/// Every entry below `root` (not `root` itself), sorted by path. Panics on
/// an unreadable entry: it is for tests.
pub fn describe_tree(root: &Path) -> Vec<(PathBuf, Node)> {
    let mut inodes: HashMap<u64, usize> = HashMap::new();
    let mut entries: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap_or_else(|e| panic!("walking {}: {e}", root.display())))
        .collect();
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let m = fs::symlink_metadata(e.path()).unwrap();
        let mtime = (m.mtime(), m.mtime_nsec() as u32);
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let node = if m.is_symlink() {
            Node::Link {
                target: fs::read_link(e.path()).unwrap(),
                mtime,
            }
        } else if m.is_dir() {
            Node::Dir {
                mode: m.permissions().mode() & 0o7777,
                mtime,
            }
        } else {
            let link_group = (m.nlink() > 1).then(|| {
                let n = inodes.len();
                *inodes.entry(m.ino()).or_insert(n)
            });
            Node::File {
                mode: m.permissions().mode() & 0o7777,
                mtime,
                hash: blake3::hash(&fs::read(e.path()).unwrap())
                    .to_hex()
                    .to_string(),
                link_group,
            }
        };
        out.push((rel, node));
    }
    out
}

/// Panics, naming the first entry that differs, unless the trees below
/// `expected` and `actual` are the same in every way `describe_tree` sees.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (a, b) = (describe_tree(expected), describe_tree(actual));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x,
            y,
            "{} and {} differ",
            expected.display(),
            actual.display()
        );
    }
    let names = |v: &[(PathBuf, Node)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&b),
        "{} and {} hold different paths",
        expected.display(),
        actual.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_modes_links_and_empty_dirs() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for r in [&a, &b] {
            fs::create_dir_all(r.join("empty")).unwrap();
            fs::write(r.join("f"), "x").unwrap();
            std::os::unix::fs::symlink("f", r.join("l")).unwrap();
            filetime::set_file_mtime(r.join("f"), filetime::FileTime::from_unix_time(5, 0))
                .unwrap();
        }
        // Same content, but the mode differs.
        fs::set_permissions(b.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(a.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        let differs = std::panic::catch_unwind(|| assert_same_tree(&a, &b));
        assert!(differs.is_err());
        fs::set_permissions(b.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        for r in [&a, &b] {
            let t = filetime::FileTime::from_unix_time(9, 0);
            filetime::set_symlink_file_times(r.join("l"), t, t).unwrap();
            filetime::set_file_mtime(r.join("empty"), t).unwrap();
            filetime::set_file_mtime(r, filetime::FileTime::from_unix_time(9, 0)).unwrap();
        }
        assert_same_tree(&a, &b);
        fs::remove_dir(b.join("empty")).unwrap();
        assert!(std::panic::catch_unwind(|| assert_same_tree(&a, &b)).is_err());
    }
}
