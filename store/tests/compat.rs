//! Format compatibility: stores written by earlier code, checked in, still
//! open, attach, restore their caches and verify clean with today's code:
//! - `data/v1-store`: strata's first format (v1, by the code as it landed
//!   on 2026-12-01, before packs were salted);
//! - `data/v2-store`: format 2 (by the code of 2026-12-07, written by
//!   `store/examples/write_v2_store.rs`): a v2 run record with its ref
//!   scope, a job result, a use, a cache entry and its use, and what a gc
//!   leaves (an expired run, a tombstone, a snapshot in place of the index
//!   log).
//!
//! Any change that stops reading them is a format change and needs a
//! version bump (docs/format.md).

use crate::common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use common::{copy_tree, job};
use strata_store::attach::{attach, AttachRequest, WriteOptions};
use strata_store::Clock;
use strata_store::{Quiet, RunName, Store};

/// When the fixture was written (its records' clock), plus a minute: the
/// run is live then, whatever today's date.
const WRITTEN: i64 = 1_793_000_000;
/// The mtime every file and directory of the fixture's tree was given.
const MTIME: i64 = 1_793_534_400;

fn open_copy(dir: &Path) -> Store {
    open_fixture(dir, "v1-store", WRITTEN + 60)
}

/// A copy of fixture `name` in `dir`, opened at `now`.
fn open_fixture(dir: &Path, name: &str, now: i64) -> Store {
    let root = dir.join("store");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
        &root,
    );
    Store::open(&root, &Quiet)
        .unwrap()
        .with_clock(Clock::Manual(Arc::new(AtomicI64::new(now))))
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The tree the fixture's layers hold, as the v1 code persisted it.
fn check_out_tree(at: &Path) {
    let f = |p: &str| at.join(p);
    assert_eq!(
        fs::read(f("out/lib/index.js")).unwrap(),
        b"console.log(\"v1\");\n"
    );
    assert_eq!(
        fs::read(f("out/bin/tool")).unwrap(),
        b"#!/bin/sh\necho v1\n"
    );
    assert_eq!(fs::read(f("out/lib/big.txt")).unwrap(), vec![b'a'; 300_000]);
    assert_eq!(mode(&f("out/bin/tool")), 0o755);
    assert_eq!(mode(&f("out/lib/index.js")), 0o644);
    assert_eq!(
        fs::read_link(f("out/bin/link")).unwrap(),
        Path::new("../lib/index.js")
    );
    let (a, b) = (
        fs::metadata(f("out/lib/index.js")).unwrap(),
        fs::metadata(f("out/lib/index-link.js")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the hardlink is one inode");
    assert!(f("out/lib/empty").is_dir());
    for p in [
        "out/lib/index.js",
        "out/bin/tool",
        "out/lib/empty",
        "out/lib",
        "out",
    ] {
        let m = fs::symlink_metadata(f(p)).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (MTIME, 123_456_789), "{p}");
    }
}

// A runner with today's strata attaches a job's workspace from the v1 store:
// both upstream layers, every byte, mode, mtime and link.
#[test]
fn a_v1_store_attaches_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_copy(dir.path());
    let at = dir.path().join("at");
    attach(
        &store,
        &AttachRequest {
            run: RunName::new("v1").unwrap(),
            job: job("test"),
            at: at.clone(),
            keep_setuid: false,
            only: Vec::new(),
        },
    )
    .unwrap();
    check_out_tree(&at);
    assert_eq!(fs::read(at.join("docs/README")).unwrap(), b"readme\n");
    assert_eq!(mode(&at.join("docs/README")), 0o600);
    let results =
        strata_store::lifecycle::job_results(&store, &RunName::new("v1").unwrap()).unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    let report = strata_store::verify::verify(&store, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

// The v1 store's cache entry restores, and a new persist into the v1 store
// (today's salted packs beside v1's) verifies clean too.
#[test]
fn a_v1_cache_restores_and_new_writes_mix_with_old() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_copy(dir.path());
    let at = dir.path().join("restored");
    let r = strata_store::caches::restore(
        &store,
        &["deps-v1".to_string()],
        &at,
        &[],
        WriteOptions::default(),
    )
    .unwrap();
    assert!(r.exact, "{r:?}");
    check_out_tree(&at);

    let src = dir.path().join("src");
    fs::create_dir_all(src.join("more")).unwrap();
    fs::write(src.join("more/new.txt"), "written by today's strata").unwrap();
    let run = RunName::new("v1").unwrap();
    strata_store::persist::persist(
        &store,
        &strata_store::persist::PersistRequest {
            run,
            job: job("build"),
            root: src,
            paths: vec!["more".into()],
            allow_empty: false,
            writer: None,
        },
    )
    .unwrap();
    let report = strata_store::verify::verify(&store, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

// A cache key of 101 to 127 bytes was named by its whole hex (format.md,
// "Cache entry names", version 1), which still fit a directory store's
// file names; today's names for such keys differ, and an entry under the
// old name still restores, exactly and by prefix. The entry is written
// as the version 1 code wrote it: the v1 fixture's record, under a long
// key, at `caches/<hex of the key>/`.
#[test]
fn a_version_1_name_of_a_long_cache_key_still_restores() {
    use strata_store::format::keys::{cache_name, hex_key, timed_key, CACHES_PREFIX};
    use strata_store::format::records::{CacheRecord, Record};
    let dir = tempfile::tempdir().unwrap();
    let store = open_copy(dir.path());
    let v1 = strata_store::caches::entries(&store).unwrap();
    let mut record: CacheRecord = v1[0].record.clone();
    record.key = format!("ref:refs/heads/main:deps-{}", "0123456789".repeat(10));
    assert!(record.key.len() > 100 && 2 * record.key.len() <= 255);
    assert_ne!(cache_name(&record.key), hex_key(&record.key));
    let key = timed_key(
        &format!("{CACHES_PREFIX}{}/", hex_key(&record.key)),
        WRITTEN,
    );
    store.backend().put(&key, &record.encode()).unwrap();
    for (asked, exact) in [
        (record.key.clone(), true),
        (record.key[..110].to_string(), false),
    ] {
        let at = dir.path().join(format!("restored-{exact}"));
        let r = strata_store::caches::restore(&store, &[asked], &at, &[], WriteOptions::default())
            .unwrap();
        assert_eq!(r.exact, exact, "{r:?}");
        assert_eq!(r.restored_key.as_deref(), Some(record.key.as_str()));
        check_out_tree(&at);
    }
}

/// The v2 fixture's day 0 (2026-11-01) and when it is opened: day 20, when
/// its gc ran, plus a minute.
const V2_DAY0: i64 = 1_793_491_200;
const V2_NOW: i64 = V2_DAY0 + 20 * 86_400 + 60;

/// The `out/` tree of the v2 fixture, as `write_v2_store` made it.
fn check_v2_out_tree(at: &Path) {
    let f = |p: &str| at.join(p);
    assert_eq!(
        fs::read(f("out/lib/index.js")).unwrap(),
        b"console.log(\"v2\");\n"
    );
    assert_eq!(
        fs::read(f("out/bin/tool")).unwrap(),
        b"#!/bin/sh\necho v2\n"
    );
    assert_eq!(fs::read(f("out/lib/big.txt")).unwrap(), vec![b'b'; 300_000]);
    assert_eq!(mode(&f("out/bin/tool")), 0o755);
    assert_eq!(
        fs::read_link(f("out/bin/link")).unwrap(),
        Path::new("../lib/index.js")
    );
    let (a, b) = (
        fs::metadata(f("out/lib/index.js")).unwrap(),
        fs::metadata(f("out/lib/index-link.js")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the hardlink is one inode");
    assert!(f("out/lib/empty").is_dir());
    for p in ["out/lib/index.js", "out/bin/tool", "out/lib/empty", "out"] {
        let m = fs::symlink_metadata(f(p)).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (MTIME, 123_456_789), "{p}");
    }
}

// A fresh runner attaches a job's workspace from the format-2 store (its
// index read from gc's snapshot), finds the run's ref scope and result,
// and the store verifies clean.
#[test]
fn a_format_2_store_attaches_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fixture(dir.path(), "v2-store", V2_NOW);
    let v2 = RunName::new("v2").unwrap();
    let at = dir.path().join("at");
    attach(
        &store,
        &AttachRequest {
            run: v2.clone(),
            job: job("test"),
            at: at.clone(),
            keep_setuid: false,
            only: Vec::new(),
        },
    )
    .unwrap();
    check_v2_out_tree(&at);
    assert_eq!(fs::read(at.join("docs/README")).unwrap(), b"readme v2\n");
    assert_eq!(mode(&at.join("docs/README")), 0o600);
    assert_eq!(
        store.run(&v2).unwrap().ref_scope.as_deref(),
        Some("ref:refs/heads/main:")
    );
    let results = strata_store::lifecycle::job_results(&store, &v2).unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    let report = strata_store::verify::verify(&store, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

// The format-2 store's expired run says when it expired (its `expired`
// record, gc having dropped its layers); its cache entry restores exactly;
// a new persist beside the old objects verifies clean.
#[test]
fn a_format_2_store_keeps_its_expiry_cache_and_takes_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fixture(dir.path(), "v2-store", V2_NOW);
    let err = attach(
        &store,
        &AttachRequest {
            run: RunName::new("old").unwrap(),
            job: job("build"),
            at: dir.path().join("gone"),
            keep_setuid: false,
            only: Vec::new(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("expired on 2026-11-16"), "{err}");
    let at = dir.path().join("restored");
    let r = strata_store::caches::restore(
        &store,
        &["ref:refs/heads/main:deps-v2".to_string()],
        &at,
        &[],
        WriteOptions::default(),
    )
    .unwrap();
    assert!(r.exact, "{r:?}");
    check_v2_out_tree(&at);

    let src = dir.path().join("src");
    fs::create_dir_all(src.join("more")).unwrap();
    fs::write(src.join("more/new.txt"), "written by today's strata").unwrap();
    strata_store::persist::persist(
        &store,
        &strata_store::persist::PersistRequest {
            run: RunName::new("v2").unwrap(),
            job: job("build"),
            root: src,
            paths: vec!["more".into()],
            allow_empty: false,
            writer: None,
        },
    )
    .unwrap();
    let report = strata_store::verify::verify(&store, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
