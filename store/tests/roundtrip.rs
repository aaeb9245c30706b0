//! Round-trip fidelity: any tree persisted then attached comes back
//! byte-identical, with the same types, modes, mtimes, symlink targets and
//! hardlink groups.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{attach_b, persist_a};
use filetime::FileTime;
use proptest::prelude::*;
use strata_store::testing::describe_tree;
use strata_store::{Quiet, Store};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = strata_store::synth::Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Persists `root`'s contents as job `a` and attaches them as job `b`.
fn round_trip(root: &Path, work: &Path) -> PathBuf {
    let store = Store::open(&work.join("store"), &Quiet).unwrap();
    persist_a(&store, root, &["."]).unwrap();
    let at = work.join("attached");
    attach_b(&store, &at).unwrap();
    at
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File { size: usize, seed: u64, exec: bool },
    Symlink { target: String },
    Hardlink { to: usize },
}

const NAMES: &[&str] = &[
    "a",
    "b c",
    "ünïcödé",
    "日本語",
    "x.js",
    "-dash",
    "node_modules",
    "  spaced  ",
];
/// Sizes at and around the chunker's limits (16 KiB min, 256 KiB max).
const SIZES: &[usize] = &[
    0, 1, 100, 4095, 16383, 16384, 16385, 65536, 262143, 262144, 262145, 600_000,
];

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => Just(Kind::Dir),
        5 => (prop::sample::select(SIZES), 0u64..4, any::<bool>())
            .prop_map(|(size, seed, exec)| Kind::File { size, seed, exec }),
        1 => prop::sample::select(vec!["../a", "a", "/nonexistent/dangling", "b c/x.js", "日本語"])
            .prop_map(|t| Kind::Symlink { target: t.to_string() }),
        1 => (0usize..8).prop_map(|to| Kind::Hardlink { to }),
    ]
}

fn tree() -> impl Strategy<Value = Vec<(Vec<&'static str>, Kind, i64)>> {
    prop::collection::vec(
        (
            prop::collection::vec(prop::sample::select(NAMES), 1..4),
            kind(),
            0i64..2_000_000_000,
        ),
        1..24,
    )
}

/// Creates the entries that fit (a path under a file is skipped).
fn materialize(root: &Path, spec: &[(Vec<&str>, Kind, i64)]) {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut mtimes: Vec<(PathBuf, i64, bool)> = Vec::new();
    for (names, kind, mtime) in spec {
        let rel: PathBuf = names.iter().collect();
        let p = root.join(&rel);
        let parent = p.parent().unwrap();
        if fs::create_dir_all(parent).is_err() || fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        if !fs::metadata(parent).map(|m| m.is_dir()).unwrap_or(false)
            || fs::symlink_metadata(parent).unwrap().is_symlink()
        {
            continue;
        }
        match kind {
            Kind::Dir => fs::create_dir(&p).unwrap(),
            Kind::File { size, seed, exec } => {
                fs::write(&p, noise(*size, *seed)).unwrap();
                let mode = if *exec { 0o755 } else { 0o640 };
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
                files.push(p.clone());
            }
            Kind::Symlink { target } => std::os::unix::fs::symlink(target, &p).unwrap(),
            Kind::Hardlink { to } => match files.get(*to) {
                Some(f) => fs::hard_link(f, &p).unwrap(),
                None => continue,
            },
        }
        mtimes.push((p, *mtime, matches!(kind, Kind::Symlink { .. })));
    }
    // Deepest first, so setting a child's mtime does not disturb the parent's.
    mtimes.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (p, secs, is_link) in mtimes {
        let t = FileTime::from_unix_time(secs, (secs % 1_000_000_000) as u32);
        if is_link {
            filetime::set_symlink_file_times(&p, t, t).unwrap();
        } else {
            filetime::set_file_mtime(&p, t).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(spec in tree()) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        fs::create_dir(&root).unwrap();
        materialize(&root, &spec);
        let at = round_trip(&root, dir.path());
        prop_assert_eq!(describe_tree(&root), describe_tree(&at));
    }
}

#[test]
fn a_100_mib_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    fs::create_dir(&root).unwrap();
    // Incompressible with repeats, so both new and duplicate chunks occur.
    let block = noise(3 << 20, 11);
    let mut f = fs::File::create(root.join("big.bin")).unwrap();
    for i in 0..34u8 {
        use std::io::Write;
        f.write_all(&block[..(3 << 20) - i as usize]).unwrap();
    }
    f.set_len(100 << 20).unwrap();
    drop(f);
    let at = round_trip(&root, dir.path());
    assert_eq!(describe_tree(&root), describe_tree(&at));
}
