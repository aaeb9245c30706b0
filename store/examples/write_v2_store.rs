//! Writes the format-2 compatibility store checked in under
//! `store/tests/data/v2-store` (`cargo run -p strata-store --example
//! write_v2_store -- DIR`), which `store/tests/compat.rs` reads on every
//! run. It is written once, by the code of 2026-12-07, and kept: running
//! this again later writes what *that* code writes, which is not the point.
//!
//! What it holds, on a clock the test knows (`T0`, then `T0` + 20 days):
//! - run `v2` (jobs build, docs, test:build,docs) created for ref
//!   `refs/heads/main` (a v2 run record with its ref scope), with a layer
//!   of `build` (files, an executable, a symlink, a hardlink, an empty
//!   directory, 300 kB of one byte) and one of `docs` (a 0600 file), a
//!   result for `build`, and a use on day 10;
//! - cache entry `ref:refs/heads/main:deps-v2` of the same `out/` tree,
//!   restored on day 10;
//! - run `old`, persisted on day 0 and never used again, expired by a gc on
//!   day 20 with no grace: its pack deleted (a tombstone), the index
//!   written again as a snapshot, an `expired` record.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use strata_store::attach::{attach, AttachRequest, WriteOptions};
use strata_store::gc::{gc, GcOptions};
use strata_store::persist::{persist, PersistRequest};
use strata_store::{Clock, Graph, JobName, JobStatus, Quiet, RunName, Store};

/// Day 0 of the fixture's clock (2026-11-01T00:00:00Z).
const T0: i64 = 1_793_491_200;
/// The mtime of every file and directory of the trees.
const MTIME: i64 = 1_793_534_400;
const DAY: i64 = 86_400;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: write_v2_store DIR"));
    assert!(
        !out.exists(),
        "{} exists: write into a new directory",
        out.display()
    );
    let scratch = tempfile::tempdir().unwrap();
    trees(scratch.path());
    let clock = Arc::new(AtomicI64::new(T0));
    let store = Store::open(&out, &Quiet)
        .unwrap()
        .with_clock(Clock::Manual(clock.clone()));
    day_0(&store, scratch.path());
    // Day 10: run v2 and the cache entry are used. Day 20: run old has
    // expired (on day 15), v2 has not (it would on day 25); a gc with no
    // grace deletes old's pack at once.
    clock.store(T0 + 10 * DAY, Ordering::SeqCst);
    day_10(&store, scratch.path());
    clock.store(T0 + 20 * DAY, Ordering::SeqCst);
    let report = gc(
        &store,
        &GcOptions {
            grace_secs: Some(0),
            ..GcOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        report.runs_expired,
        vec![RunName::new("old").unwrap()],
        "{report:?}"
    );
    assert_eq!(report.caches_expired, 0, "{report:?}");
    assert!(report.packs_deleted >= 1, "{report:?}");
    drop(store);
    // The runner-local parts are not part of the format.
    fs::remove_dir_all(out.join(".local")).unwrap();
    let _ = fs::remove_dir_all(out.join(".tmp"));
    println!("wrote {}: {report:?}", out.display());
}

fn job(j: &str) -> JobName {
    JobName::new(j).unwrap()
}

/// Run v2 (its layers, a result), the cache entry, run old.
fn day_0(store: &Store, src: &Path) {
    let v2 = RunName::new("v2").unwrap();
    let graph = Graph::from_specs(&["build", "docs", "test:build,docs"]).unwrap();
    store
        .create_run(&v2, graph, Some("ref:refs/heads/main:".into()))
        .unwrap();
    let put = |run: &RunName, j: &str, root: &str, path: &str| {
        persist(
            store,
            &PersistRequest {
                run: run.clone(),
                job: job(j),
                root: src.join(root),
                paths: vec![path.into()],
                allow_empty: false,
                writer: None,
            },
        )
        .unwrap();
    };
    put(&v2, "build", "build", "out");
    put(&v2, "docs", "docs", "docs");
    strata_store::lifecycle::finish_job(store, &v2, &job("build"), JobStatus::Success).unwrap();
    strata_store::caches::save(
        store,
        "ref:refs/heads/main:deps-v2",
        &src.join("build"),
        &["out".into()],
    )
    .unwrap();
    let old = RunName::new("old").unwrap();
    store
        .create_run(&old, Graph::from_specs(&["build"]).unwrap(), None)
        .unwrap();
    put(&old, "build", "old", "old");
}

/// Run v2 attached and the cache entry restored (a use of each).
fn day_10(store: &Store, scratch: &Path) {
    attach(
        store,
        &AttachRequest {
            run: RunName::new("v2").unwrap(),
            job: job("test"),
            at: scratch.join("attached"),
            keep_setuid: false,
            only: Vec::new(),
        },
    )
    .unwrap();
    strata_store::caches::restore(
        store,
        &["ref:refs/heads/main:deps-v2".to_string()],
        &scratch.join("restored"),
        &[],
        WriteOptions::default(),
    )
    .unwrap();
}

/// The trees: `build/out`, `docs/docs` and `old/old`.
fn trees(src: &Path) {
    let write = |rel: &str, bytes: &[u8], mode: u32| {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    write("build/out/lib/index.js", b"console.log(\"v2\");\n", 0o644);
    write("build/out/bin/tool", b"#!/bin/sh\necho v2\n", 0o755);
    write("build/out/lib/big.txt", &[b'b'; 300_000], 0o644);
    fs::hard_link(
        src.join("build/out/lib/index.js"),
        src.join("build/out/lib/index-link.js"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../lib/index.js", src.join("build/out/bin/link")).unwrap();
    fs::create_dir_all(src.join("build/out/lib/empty")).unwrap();
    write("docs/docs/README", b"readme v2\n", 0o600);
    let old: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write("old/old/data.bin", &old, 0o644);
    let t = filetime::FileTime::from_unix_time(MTIME, 123_456_789);
    for e in walkdir::WalkDir::new(src).contents_first(true) {
        let e = e.unwrap();
        if !e.path_is_symlink() {
            filetime::set_file_mtime(e.path(), t).unwrap();
        }
    }
}
