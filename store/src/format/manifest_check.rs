//! The checks attach relies on, made entry by entry over a version 2
//! manifest as it streams (docs/format.md, "Version 2: frames of rows"):
//! sorted without duplicates, every parent a directory of the layer,
//! hardlinks naming earlier linked files, and what each entry holds. It
//! holds the previous path, the stack of open directories and the linked
//! files' paths, never the entries (issue 29).
//!
//! This module knows the rules, not the bytes: `manifest_stream` feeds it
//! decoded entries. A whole version 1 manifest is checked by
//! `Manifest::validate`, whose rule for hardlinks (any earlier file) needs
//! every file's path.

use std::collections::HashSet;

use crate::format::manifest::{check_content, Entry, EntryKind};

/// What the check has seen so far of one manifest.
#[derive(Debug, Default)]
pub(crate) struct StreamCheck {
    /// The previous entry's path (empty before the first).
    prev: Vec<u8>,
    /// The directories whose subtrees may still come, sorted.
    open: Vec<Vec<u8>>,
    /// The paths of the linked files seen.
    linked: HashSet<Vec<u8>>,
}

impl StreamCheck {
    /// Checks the next entry (`linked`: written as a `LinkedFile`);
    /// returns why it breaks a rule.
    pub(crate) fn next(&mut self, e: &Entry, linked: bool) -> Result<(), &'static str> {
        let path = e.path.as_bytes();
        // A path is never empty, so the first entry passes.
        if path <= self.prev.as_slice() {
            return Err("entries not sorted or duplicated");
        }
        self.prev.clear();
        self.prev.extend_from_slice(path);
        while self.open.last().is_some_and(|d| passed(path, d)) {
            self.open.pop();
        }
        if let Some(end) = path.iter().rposition(|b| *b == b'/') {
            let parent = &path[..end];
            if self
                .open
                .binary_search_by(|d| d.as_slice().cmp(parent))
                .is_err()
            {
                return Err("its parent is not a directory of the layer");
            }
        }
        check_content(e)?;
        match &e.kind {
            EntryKind::Dir => self.open.push(path.to_vec()),
            EntryKind::File { .. } if linked => {
                self.linked.insert(path.to_vec());
            }
            EntryKind::Hardlink { target } if !self.linked.contains(target.as_bytes()) => {
                return Err("hardlink to no earlier file of the layer");
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether `path` sorts after every path under `dir` (all that start with
/// `dir/`): then no later entry can be under it. A path under `dir`, or one
/// before `dir/` (a sibling `dir-x` sorts between `dir` and `dir/a`), has
/// not passed it.
fn passed(path: &[u8], dir: &[u8]) -> bool {
    let n = dir.len();
    if path.len() <= n {
        // Not under `dir`; as long as `dir/` or shorter and greater.
        return path > &dir[..path.len()];
    }
    match path[..n].cmp(dir) {
        std::cmp::Ordering::Equal => path[n] > b'/',
        order => order.is_gt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{ChunkRef, Mtime, RelPath};
    use crate::id::ChunkId;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: RelPath::new(path.as_bytes().to_vec()).unwrap(),
            mode: 0o755,
            mtime: Mtime::default(),
            kind,
        }
    }

    fn file() -> EntryKind {
        EntryKind::File {
            size: 1,
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"x"),
                len: 1,
            }],
        }
    }

    fn link(t: &str) -> EntryKind {
        EntryKind::Hardlink {
            target: RelPath::new(t.as_bytes().to_vec()).unwrap(),
        }
    }

    fn run(entries: &[(Entry, bool)]) -> Result<(), String> {
        let mut c = StreamCheck::default();
        for (i, (e, linked)) in entries.iter().enumerate() {
            c.next(e, *linked)
                .map_err(|why| format!("{i} {}: {why}", e.path))?;
        }
        Ok(())
    }

    #[test]
    fn passed_is_judged_by_bytes() {
        for (path, dir, want) in [
            ("a/b", "a", false),
            ("a-x", "a", false), // '-' sorts before '/': a/... may follow
            ("a.txt/q", "a", false),
            ("a0", "a", true), // '0' sorts after '/'
            ("b", "a", true),
            ("ab", "a", true),
            ("a/b/c", "a/b", false),
            ("a/c", "a/b", true),
            ("a/b-x", "a/b", false),
        ] {
            assert_eq!(
                passed(path.as_bytes(), dir.as_bytes()),
                want,
                "{path} {dir}"
            );
        }
    }

    /// A tree whose siblings sort between a directory and its children
    /// (`-` and `.` before `/`) passes: the parent is still open.
    #[test]
    fn siblings_that_sort_inside_a_directory_keep_it_open() {
        let d = || EntryKind::Dir;
        let fine = [
            (entry("a", d()), false),
            (entry("a-x", d()), false),
            (entry("a-x/f", file()), true),
            (entry("a.txt", file()), false),
            (entry("a/b", d()), false),
            (entry("a/b-c", file()), false),
            (entry("a/b/c", link("a-x/f")), false),
            (entry("a/z", file()), false),
            (entry("b", link("a-x/f")), false),
        ];
        run(&fine).unwrap();
    }

    /// What `Manifest::validate` refuses, the stream refuses; and a
    /// hardlink to a file not written as linked.
    #[test]
    fn refuses_order_parents_and_links() {
        let d = || EntryKind::Dir;
        for (entries, why) in [
            (
                vec![(entry("a/b", file()), false)],
                "its parent is not a directory",
            ),
            (
                vec![(entry("a", file()), false), (entry("a/b", file()), false)],
                "its parent is not a directory",
            ),
            (
                // a/ closed by a0: a/c cannot come back to it
                vec![
                    (entry("a", d()), false),
                    (entry("a0", d()), false),
                    (entry("a/c", file()), false),
                ],
                "not sorted",
            ),
            (
                vec![(entry("a", d()), false), (entry("a", d()), false)],
                "not sorted or duplicated",
            ),
            (
                vec![(entry("a", link("b")), false), (entry("b", file()), true)],
                "hardlink to no earlier file",
            ),
            (
                vec![(entry("a", file()), false), (entry("b", link("a")), false)],
                "hardlink to no earlier file",
            ),
            (
                vec![(entry("a", d()), false), (entry("b", link("a")), false)],
                "hardlink to no earlier file",
            ),
        ] {
            let err = run(&entries).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        // A parent closed by a later sibling is not found again.
        let closed = [
            (entry("a", d()), false),
            (entry("a/b", d()), false),
            (entry("a/c", file()), false),
            (entry("a/c0", file()), false),
        ];
        run(&closed).unwrap();
        let mut c = StreamCheck::default();
        for (e, l) in &closed {
            c.next(e, *l).unwrap();
        }
        assert_eq!(c.open, vec![b"a".to_vec()]);
    }
}
