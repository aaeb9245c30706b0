//! Crash safety, exhaustively: a backend that fails its Nth `put` (before
//! writing, after a partial write, or after the object landed but before
//! the caller heard) for every N of a persist. After each failure the store
//! is as it was or holds the complete new layer, verifies clean, and a
//! repeated persist succeeds.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{attach_b, copy_tree, persist_a, snapshot, OnPut};
use strata_store::backend::Backend;
use strata_store::{Error, Quiet, Store};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Nothing written.
    BeforeWrite,
    /// A temporary file half written (what a crash mid-write leaves).
    PartialWrite,
    /// The object is in place, but the caller gets an error (a crash
    /// between the rename and the reply).
    AfterRename,
}

fn injected() -> Error {
    Error::io("put", "injected", std::io::Error::other("injected fault"))
}

/// A backend whose `fail_at`th put (counted in `puts`) fails at `stage`.
fn faulty(
    inner: Arc<dyn Backend>,
    tmp: PathBuf,
    fail_at: usize,
    stage: Stage,
    puts: Arc<AtomicUsize>,
) -> Arc<dyn Backend> {
    Arc::new(OnPut {
        inner,
        hook: Box::new(move |inner, key, data| {
            if puts.fetch_add(1, Ordering::SeqCst) != fail_at {
                return inner.put(key, data);
            }
            match stage {
                Stage::BeforeWrite => Err(injected()),
                Stage::PartialWrite => {
                    fs::create_dir_all(&tmp).unwrap();
                    fs::write(tmp.join("put-crashed"), &data[..data.len() / 2]).unwrap();
                    Err(injected())
                }
                Stage::AfterRename => {
                    inner.put(key, data)?;
                    Err(injected())
                }
            }
        }),
        on_get: None,
    })
}

#[test]
fn a_failed_put_at_any_step_leaves_old_or_complete_new() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    strata_store::synth::generate(&v1, 120, 1).unwrap();
    // The next run: a fifth of v1's files changed, and a new tree's worth
    // of new content, enough for many packs.
    copy_tree(&v1, &v2);
    strata_store::synth::mutate(&v2.join("node_modules"), 0.2, 5).unwrap();
    strata_store::synth::generate(&v2.join("node_modules/extra"), 200, 2).unwrap();
    let persist_v = |store: &Store, root: &Path| persist_a(store, root, &["node_modules"]);
    let attached = |store: &Store, at: &Path| {
        attach_b(store, at).unwrap();
        snapshot(&at.join("node_modules"))
    };

    // The template: a store holding v1 as the job's first layer, with
    // small packs and frames so a persist writes many packs.
    let template = dir.path().join("template");
    drop(Store::open(&template, &Quiet).unwrap());
    let config = fs::read_to_string(template.join("config")).unwrap();
    let small = config
        .replace(
            "\"pack_target_bytes\": 4194304",
            "\"pack_target_bytes\": 65536",
        )
        .replace(
            "\"frame_target_bytes\": 2097152",
            "\"frame_target_bytes\": 16384",
        );
    assert_ne!(small, config);
    fs::write(template.join("config"), small).unwrap();
    persist_v(&Store::open(&template, &Quiet).unwrap(), &v1).unwrap();
    let (old, new) = (
        snapshot(&v1.join("node_modules")),
        snapshot(&v2.join("node_modules")),
    );

    // How many puts a persist of v2 makes.
    let counted = dir.path().join("counted");
    copy_tree(&template, &counted);
    let puts = {
        let store = Store::open(&counted, &Quiet).unwrap();
        let puts = Arc::new(AtomicUsize::new(0));
        let tmp = counted.join(".tmp");
        let store = store
            .wrap_backend(|inner| faulty(inner, tmp, usize::MAX, Stage::BeforeWrite, puts.clone()));
        persist_v(&store, &v2).unwrap();
        puts.load(Ordering::SeqCst)
    };
    println!(
        "a persist of v2 makes {puts} puts: {} fault trials",
        3 * puts
    );
    assert!(
        puts >= 8,
        "a persist should write several packs here: {puts} puts"
    );

    let mut trials = 0;
    for stage in [Stage::BeforeWrite, Stage::PartialWrite, Stage::AfterRename] {
        for n in 0..puts {
            trials += 1;
            let store_dir = dir.path().join(format!("s-{stage:?}-{n}"));
            copy_tree(&template, &store_dir);
            {
                let store = Store::open(&store_dir, &Quiet).unwrap();
                // The only process, so it holds metadata slot 0, whose
                // temporary files go to `.tmp/0` (docs/format.md).
                let tmp = store_dir.join(".tmp/0");
                let store = store.wrap_backend(|inner| {
                    faulty(inner, tmp, n, stage, Arc::new(AtomicUsize::new(0)))
                });
                assert!(
                    persist_v(&store, &v2).is_err(),
                    "{stage:?} at put {n} went unnoticed"
                );
            }
            let half = store_dir.join(".tmp/0/put-crashed");
            assert_eq!(half.exists(), stage == Stage::PartialWrite);
            // "Restart": a new process opens the store, takes slot 0 and
            // removes the dead holder's temporary files.
            let store = Store::open(&store_dir, &Quiet).unwrap();
            assert!(!half.exists(), "{stage:?} at put {n}: {half:?} was left");
            let report = strata_store::verify::verify(&store, true).unwrap();
            assert!(
                report.problems.is_empty(),
                "{stage:?} at put {n}: {:?}",
                report.problems
            );
            let got = attached(&store, &dir.path().join(format!("at-{stage:?}-{n}")));
            assert!(
                got == old || got == new,
                "{stage:?} at put {n}: a partial layer is visible"
            );
            // Only the last put (the layer ref) can make the new layer visible.
            if got == new {
                assert!(
                    stage == Stage::AfterRename && n == puts - 1,
                    "{stage:?} at put {n}"
                );
            }
            // And persisting again succeeds and gives the new tree.
            persist_v(&store, &v2).unwrap();
            assert_eq!(
                attached(&store, &dir.path().join(format!("again-{stage:?}-{n}"))),
                new
            );
        }
    }
    assert_eq!(trials, 3 * puts);
}
