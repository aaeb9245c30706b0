//! gc while others persist and attach, on one store shared by threads (as
//! `strata serve` shares one store between requests), with a clock the
//! test moves: each gc round moves it an eighth of the grace period, so
//! packs condemned by one round are deleted eight rounds later. (A clock
//! that jumps a whole grace period at once would model a persist frozen
//! for an hour between its last check and its commit, which the protocol
//! does not claim to survive.) Writers persist trees
//! that reuse chunks of an expired run: the dangerous case, where a
//! persist decides to reuse a chunk that gc is about to reclaim. Every
//! layer that commits must attach byte for byte, and the store must verify.

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use strata_store::attach::{attach, AttachRequest};
use strata_store::gc::{gc, GcOptions};
use strata_store::persist::{persist, PersistRequest};
use strata_store::store::Clock;
use strata_store::{Error, Graph, Quiet, RunName, Store};

use common::{job, snapshot, OnPut};

const T0: i64 = 1_790_000_000;
const DAY: i64 = 86_400;

fn write_tree(root: &std::path::Path, seed: u64, unique: u64) {
    // Shared content (the same for every seed) plus files of its own.
    strata_store::synth::generate(&root.join("shared"), 120, 42).unwrap();
    let mut rng = strata_store::synth::Rng::new(seed);
    fs::create_dir_all(root.join("own")).unwrap();
    for i in 0..unique {
        let data: Vec<u8> = (0..60_000).map(|_| rng.next_u64() as u8).collect();
        fs::write(root.join(format!("own/{i}")), data).unwrap();
    }
}

#[test]
fn gc_is_safe_while_others_persist() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let store = Store::open(&dir.path().join("store"), &Quiet)
        .unwrap()
        .with_clock(Clock::Manual(now.clone()))
        .wrap_backend(|inner| {
            // Every other manifest root a persist writes (its last object
            // before the layer ref) takes a while: those persists commit
            // many gc rounds after they chose which chunks to reuse, the
            // case the grace-period guard exists for.
            let n = std::sync::atomic::AtomicU64::new(0);
            Arc::new(OnPut {
                inner,
                hook: Box::new(move |inner, key, data| {
                    if key.starts_with("manifests/") && n.fetch_add(1, SeqCst) % 2 == 1 {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                    }
                    inner.put(key, data)
                }),
            })
        });
    let grace = store.config().gc_grace_secs as i64;
    let graph = Graph::from_specs(&["a", "b:a"]).unwrap();

    // An old run holding the shared content; it expires.
    let old = dir.path().join("old");
    write_tree(&old, 1, 3);
    let r_old = RunName::new("old").unwrap();
    store.create_run(&r_old, graph.clone()).unwrap();
    persist(
        &store,
        &PersistRequest {
            run: r_old,
            job: job("a"),
            root: old.clone(),
            paths: vec!["shared".into(), "own".into()],
        },
    )
    .unwrap();
    now.store(T0 + 16 * DAY, SeqCst);

    let done = AtomicBool::new(false);
    let committed: Mutex<Vec<(RunName, PathBuf)>> = Mutex::new(Vec::new());
    let too_slow = std::sync::atomic::AtomicU64::new(0);
    let mut reclaimed = 0u64;
    std::thread::scope(|s| {
        for w in 0..3u64 {
            let (store, graph, committed, too_slow, done) =
                (&store, &graph, &committed, &too_slow, &done);
            let base = dir.path().to_path_buf();
            s.spawn(move || {
                for i in 0..6u64 {
                    let root = base.join(format!("w{w}-{i}"));
                    write_tree(&root, 100 + w * 10 + i, 2);
                    let run = RunName::new(&format!("w{w}-{i}")).unwrap();
                    store.create_run(&run, graph.clone()).unwrap();
                    let req = PersistRequest {
                        run: run.clone(),
                        job: job("a"),
                        root: root.clone(),
                        paths: vec!["shared".into(), "own".into()],
                    };
                    // A persist that outlived the grace period (the test's
                    // clock jumps) is refused; it is simply run again.
                    loop {
                        match persist(store, &req) {
                            Ok(_) => break,
                            Err(Error::PersistTooSlow { .. }) => {
                                too_slow.fetch_add(1, SeqCst);
                            }
                            Err(e) => panic!("persist {run}: {e}"),
                        }
                    }
                    committed.lock().unwrap().push((run, root));
                }
                if w == 0 {
                    done.store(true, SeqCst);
                }
            });
        }
        // gc rounds while the writers work, each moving time past the
        // grace period.
        let mut rounds = 0;
        while !done.load(SeqCst) || rounds < 12 {
            let r = gc(&store, &GcOptions::default()).unwrap();
            reclaimed += r.bytes_reclaimed;
            now.fetch_add(grace / 8, SeqCst);
            rounds += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    // The old run's own files were reclaimed; everything committed reads
    // back whole.
    assert!(reclaimed > 100_000, "gc reclaimed {reclaimed} bytes");
    for (run, root) in committed.into_inner().unwrap() {
        let at = dir.path().join(format!("at-{run}"));
        attach(
            &store,
            &AttachRequest {
                run: run.clone(),
                job: job("b"),
                at: at.clone(),
            },
        )
        .unwrap_or_else(|e| panic!("attach {run}: {e}"));
        assert!(snapshot(&root) == snapshot(&at), "{run} differs");
    }
    let report = strata_store::verify::verify(&store, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    eprintln!(
        "gc rounds reclaimed {reclaimed} bytes; {} persists outlived the grace period and were retried",
        too_slow.load(SeqCst)
    );
}
