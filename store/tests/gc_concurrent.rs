//! gc while others persist and attach, on one store shared by threads (as
//! `strata serve` shares one store between requests) or opened by each
//! writer and gc on its own (as jobs on one runner do: each process its
//! own metadata slot and index, synced from the objects), with a clock the
//! test moves: each gc round moves it an eighth of the grace period, so
//! packs condemned by one round are deleted eight rounds later. (A clock
//! that jumps a whole grace period at once would model a persist frozen
//! for an hour between its last check and its commit, which the protocol
//! does not claim to survive.) Writers persist trees
//! that reuse chunks of an expired run: the dangerous case, where a
//! persist decides to reuse a chunk that gc is about to reclaim. Every
//! layer that commits must attach byte for byte, and the store must verify.

use crate::common;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use strata_store::attach::{attach, AttachRequest};
use strata_store::gc::{gc, GcOptions};
use strata_store::persist::{persist, PersistRequest};
use strata_store::Clock;
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

/// The store in `dir`, opened as one process would, on the test's clock.
fn open_with_clock(dir: &std::path::Path, now: &Arc<AtomicI64>) -> Store {
    Store::open(&dir.join("store"), &Quiet)
        .unwrap()
        .with_clock(Clock::Manual(now.clone()))
}

/// Creates run `name` of `graph` in `store`; the request to persist the
/// tree at `root` (its `shared` and `own`) as job `a` of it.
fn request(store: &Store, graph: &Graph, name: &str, root: &std::path::Path) -> PersistRequest {
    let run = RunName::new(name).unwrap();
    store.create_run(&run, graph.clone(), None).unwrap();
    PersistRequest {
        run,
        job: job("a"),
        root: root.to_path_buf(),
        paths: vec!["shared".into(), "own".into()],
        allow_empty: false,
        writer: None,
    }
}

/// What the random scenario left: the committed layers that did not attach back
/// whole, the store's verify problems, and counts for the log.
struct Outcome {
    lost: Vec<String>,
    gc_errors: Vec<String>,
    problems: usize,
    reclaimed: u64,
    too_slow: u64,
}

// gc rounds run while three writers persist trees reusing an expired run's
// chunks: with the commit guard, every committed layer attaches whole.
#[test]
fn gc_is_safe_while_others_persist() {
    check(scenario(false));
}

// The same with each writer and gc in a store opened on its own, as
// separate processes on one runner are: each learns of the others' packs
// and of gc's condemned ones only by syncing its index.
#[test]
fn gc_is_safe_while_other_processes_persist() {
    check(scenario(true));
}

fn check(o: Outcome) {
    // The old run's own files were reclaimed; everything committed reads
    // back whole.
    assert!(o.reclaimed > 100_000, "gc reclaimed {} bytes", o.reclaimed);
    assert!(o.lost.is_empty(), "lost: {:?}", o.lost);
    assert!(o.gc_errors.is_empty(), "gc failed: {:?}", o.gc_errors);
    assert_eq!(o.problems, 0);
    eprintln!(
        "gc rounds reclaimed {} bytes; {} persists outlived half the grace period and were retried",
        o.reclaimed, o.too_slow
    );
    assert!(
        o.too_slow > 0,
        "no persist ran into the guard: the scenario tests nothing"
    );
}

// The dangerous case, step by step: a persist decides to reuse an expired
// run's chunks, then stalls (here: its manifest write is held) while gc
// rounds condemn and, a grace period later, delete their pack. With the
// commit guard the persist is refused and its retry uploads the chunks
// again; nothing is lost.
#[test]
fn a_persist_stalled_past_the_grace_period_is_refused() {
    let (lost, refused) = stalled_persist(true);
    assert!(refused, "the stalled persist was committed");
    assert!(lost.is_empty(), "{lost:?}");
}

// The same with the guard turned off (a test-only switch) loses data: the
// stalled persist commits a layer naming chunks gc deleted. This is what
// the guard is for.
#[test]
fn without_the_commit_guard_gc_loses_data() {
    let (lost, refused) = stalled_persist(false);
    assert!(!refused);
    assert!(
        !lost.is_empty(),
        "the stalled persist lost nothing without the guard"
    );
}

/// A store with a manual clock whose backend can hold the next index
/// object write (after a persist's every reuse decision, before its
/// commit) until the test lets it go, and fail the next layer ref.
struct Gated {
    store: Store,
    now: Arc<AtomicI64>,
    hold_next_index: Arc<AtomicBool>,
    fail_next_ref: Arc<AtomicBool>,
    reached: std::sync::mpsc::Receiver<()>,
    go: std::sync::mpsc::Sender<()>,
    graph: Graph,
}

impl Gated {
    fn new(dir: &std::path::Path, guard: bool) -> Gated {
        let now = Arc::new(AtomicI64::new(T0));
        let hold = Arc::new(AtomicBool::new(false));
        let fail = Arc::new(AtomicBool::new(false));
        let (reached_tx, reached) = std::sync::mpsc::channel::<()>();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new((reached_tx, go_rx));
        let (h, f) = (hold.clone(), fail.clone());
        let store = Store::open(&dir.join("store"), &Quiet)
            .unwrap()
            .with_clock(Clock::Manual(now.clone()))
            .wrap_backend(move |inner| {
                Arc::new(OnPut {
                    inner,
                    hook: Box::new(move |inner, key, data| {
                        if key.starts_with("index/") && h.swap(false, SeqCst) {
                            let gate = gate.lock().unwrap();
                            gate.0.send(()).unwrap();
                            gate.1.recv().unwrap();
                        }
                        if key.contains("/layers/") && f.swap(false, SeqCst) {
                            return Err(Error::corrupt(key, "injected failure"));
                        }
                        inner.put(key, data)
                    }),
                    on_get: None,
                })
            });
        let store = if guard {
            store
        } else {
            store.without_commit_guard_for_tests()
        };
        Gated {
            store,
            now,
            hold_next_index: hold,
            fail_next_ref: fail,
            reached,
            go,
            graph: Graph::from_specs(&["a", "b:a"]).unwrap(),
        }
    }

    fn request(&self, name: &str, root: &std::path::Path) -> PersistRequest {
        request(&self.store, &self.graph, name, root)
    }

    /// gc `rounds` times, moving the clock an eighth of the grace period
    /// after each.
    fn gc_rounds(&self, rounds: u32) {
        let step = self.store.config().gc_grace_secs as i64 / 8;
        for _ in 0..rounds {
            gc(&self.store, &GcOptions::default()).unwrap();
            self.now.fetch_add(step, SeqCst);
        }
    }

    /// Runs `req` with its index object write held while `meanwhile` runs.
    fn persist_held(
        &self,
        req: &PersistRequest,
        meanwhile: impl FnOnce(),
    ) -> strata_store::Result<strata_store::PersistReport> {
        self.hold_next_index.store(true, SeqCst);
        std::thread::scope(|s| {
            let store = &self.store;
            let held = s.spawn(move || persist(store, req));
            self.reached.recv().unwrap();
            meanwhile();
            self.go.send(()).unwrap();
            held.join().unwrap()
        })
    }

    /// What of `req`'s layer does not attach back as `root`.
    fn lost(
        &self,
        req: &PersistRequest,
        root: &std::path::Path,
        at: &std::path::Path,
    ) -> Vec<String> {
        let attached = attach(
            &self.store,
            &AttachRequest {
                run: req.run.clone(),
                job: job("b"),
                at: at.to_path_buf(),
                keep_setuid: false,
                only: Vec::new(),
            },
        );
        match attached {
            Ok(_) if snapshot(root) == snapshot(at) => vec![],
            Ok(_) => vec![format!("{}: differs", req.run)],
            Err(e) => vec![format!("{}: {e}", req.run)],
        }
    }
}

/// Runs the stalled-persist case; returns what did not attach back whole
/// and whether the stalled persist was refused.
fn stalled_persist(guard: bool) -> (Vec<String>, bool) {
    let dir = tempfile::tempdir().unwrap();
    let g = Gated::new(dir.path(), guard);
    // An old run holding the shared content; it expires.
    let old = dir.path().join("old");
    write_tree(&old, 1, 3);
    persist(&g.store, &g.request("old", &old)).unwrap();
    g.now.store(T0 + 16 * DAY, SeqCst);

    // A persist reusing the shared chunks stalls before its commit while
    // twelve gc rounds pass: its chunks' pack is condemned, then deleted.
    let new = dir.path().join("new");
    write_tree(&new, 2, 2);
    let req = g.request("new", &new);
    let refused = match g.persist_held(&req, || g.gc_rounds(12)) {
        Ok(_) => false,
        Err(Error::PersistTooSlow { .. }) => true,
        Err(e) => panic!("the stalled persist: {e}"),
    };
    if refused {
        persist(&g.store, &req).unwrap();
    }
    (g.lost(&req, &new, &dir.path().join("at")), refused)
}

// A persist fails before its commit, leaving packs no layer names; gc
// condemns them. Run again much later, the same persist uploads the same
// chunks anew, and must not land them in a pack gc then deletes as the
// condemned one: packs are salted, so the new upload has a name of its own.
#[test]
fn a_retried_persist_never_reuploads_into_a_condemned_pack() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gated::new(dir.path(), true);
    let src = dir.path().join("src");
    write_tree(&src, 3, 2);
    let req = g.request("r", &src);
    g.fail_next_ref.store(true, SeqCst);
    assert!(persist(&g.store, &req).is_err());
    // Its packs are condemned, and 7/8 of the grace period passes.
    g.gc_rounds(7);
    // The retry finds those chunks condemned (so "missing") and uploads
    // them again; meanwhile gc deletes the condemned packs.
    g.persist_held(&req, || g.gc_rounds(2)).unwrap();
    let lost = g.lost(&req, &src, &dir.path().join("at"));
    assert!(lost.is_empty(), "{lost:?}");
    let report = strata_store::verify::verify(&g.store, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

fn scenario(processes: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let grace = open_with_clock(dir.path(), &now).config().gc_grace_secs as i64;
    // Set once the gc rounds are over: nothing moves the clock any more.
    let gc_over = Arc::new(AtomicBool::new(false));
    let open = || {
        let (now, gc_over) = (now.clone(), gc_over.clone());
        open_with_clock(dir.path(), &now).wrap_backend(|inner| {
            // Every other manifest root a persist writes (its last object
            // before the layer ref) is held until gc rounds have moved the
            // clock past half the grace period: those persists commit many
            // gc rounds after they chose which chunks to reuse, the case
            // the grace-period guard exists for (however slow the rounds).
            let n = std::sync::atomic::AtomicU64::new(0);
            Arc::new(OnPut {
                inner,
                hook: Box::new(move |inner, key, data| {
                    if key.starts_with("manifests/") && n.fetch_add(1, SeqCst) % 2 == 1 {
                        let from = now.load(SeqCst);
                        while now.load(SeqCst) - from <= grace / 2 && !gc_over.load(SeqCst) {
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                    }
                    inner.put(key, data)
                }),
                on_get: None,
            })
        })
    };
    let store = open();
    let writers: Vec<Store> = match processes {
        true => (0..3).map(|_| open()).collect(),
        false => vec![],
    };
    let graph = Graph::from_specs(&["a", "b:a"]).unwrap();

    // An old run holding the shared content; it expires.
    let old = dir.path().join("old");
    write_tree(&old, 1, 3);
    let r_old = RunName::new("old").unwrap();
    store.create_run(&r_old, graph.clone(), None).unwrap();
    persist(
        &store,
        &PersistRequest {
            run: r_old,
            job: job("a"),
            root: old.clone(),
            paths: vec!["shared".into(), "own".into()],
            allow_empty: false,
            writer: None,
        },
    )
    .unwrap();
    now.store(T0 + 16 * DAY, SeqCst);

    let done = AtomicBool::new(false);
    let committed: Mutex<Vec<(RunName, PathBuf)>> = Mutex::new(Vec::new());
    let too_slow = std::sync::atomic::AtomicU64::new(0);
    let mut reclaimed = 0u64;
    let mut gc_errors = Vec::new();
    std::thread::scope(|s| {
        for w in 0..3u64 {
            let store = writers.get(w as usize).unwrap_or(&store);
            let (graph, committed, too_slow, done) = (&graph, &committed, &too_slow, &done);
            let base = dir.path().to_path_buf();
            s.spawn(move || {
                for i in 0..6u64 {
                    let root = base.join(format!("w{w}-{i}"));
                    write_tree(&root, 100 + w * 10 + i, 2);
                    let run = RunName::new(&format!("w{w}-{i}")).unwrap();
                    store.create_run(&run, graph.clone(), None).unwrap();
                    let req = PersistRequest {
                        run: run.clone(),
                        job: job("a"),
                        root: root.clone(),
                        paths: vec!["shared".into(), "own".into()],
                        allow_empty: false,
                        writer: None,
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
            // A gc that finds a committed layer naming a reclaimed chunk
            // fails: that is data loss too.
            match gc(&store, &GcOptions::default()) {
                Ok(r) => reclaimed += r.bytes_reclaimed,
                Err(e) => gc_errors.push(e.to_string()),
            }
            now.fetch_add(grace / 8, SeqCst);
            rounds += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        gc_over.store(true, SeqCst);
    });
    let mut lost = Vec::new();
    for (run, root) in committed.into_inner().unwrap() {
        let at = dir.path().join(format!("at-{run}"));
        let attached = attach(
            &store,
            &AttachRequest {
                run: run.clone(),
                job: job("b"),
                at: at.clone(),
                keep_setuid: false,
                only: Vec::new(),
            },
        );
        match attached {
            Ok(_) if snapshot(&root) == snapshot(&at) => {}
            Ok(_) => lost.push(format!("{run}: differs")),
            Err(e) => lost.push(format!("{run}: {e}")),
        }
    }
    let report = strata_store::verify::verify(&store, true).unwrap();
    Outcome {
        lost,
        gc_errors,
        problems: report.problems.len(),
        reclaimed,
        too_slow: too_slow.load(SeqCst),
    }
}

// Two processes on one store: a writer whose index was synced before
// another process's gc condemned a pack stops reusing that pack's chunks
// once its resync interval has passed (the bound gc's argument relies on),
// and the layer it then writes survives the gc that deletes the pack.
#[test]
fn a_process_learns_of_another_processes_gc_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let open = || open_with_clock(dir.path(), &now);
    let (writer, collector) = (open(), open());
    let graph = Graph::from_specs(&["a", "b:a"]).unwrap();
    let request = |name: &str, root: &std::path::Path| request(&writer, &graph, name, root);
    let old = dir.path().join("old");
    write_tree(&old, 1, 3);
    persist(&writer, &request("old", &old)).unwrap();
    // The old run expires; the other process's gc condemns its packs.
    now.store(T0 + 16 * DAY, SeqCst);
    let report = gc(&collector, &GcOptions::default()).unwrap();
    assert!(report.packs_condemned > 0, "{report:?}");
    // Past the writer's resync interval (well within half the grace
    // period), a persist of the same shared content uploads it again.
    now.fetch_add(60, SeqCst);
    let new = dir.path().join("new");
    write_tree(&new, 2, 2);
    let req = request("new", &new);
    let wrote = persist(&writer, &req).unwrap();
    let shared: u64 = walk_bytes(&new.join("shared"));
    assert!(
        wrote.bytes_new >= shared,
        "the writer reused chunks of condemned packs: {} new bytes, {shared} shared",
        wrote.bytes_new
    );
    // A grace period later gc deletes the condemned packs; the new layer
    // attaches whole through either process.
    now.fetch_add(collector.config().gc_grace_secs as i64 + 60, SeqCst);
    let report = gc(&collector, &GcOptions::default()).unwrap();
    assert!(report.packs_deleted > 0, "{report:?}");
    for (i, store) in [&writer, &collector].into_iter().enumerate() {
        let at = dir.path().join(format!("at{i}"));
        attach(
            store,
            &AttachRequest {
                run: req.run.clone(),
                job: job("b"),
                at: at.clone(),
                keep_setuid: false,
                only: Vec::new(),
            },
        )
        .unwrap();
        assert!(snapshot(&new) == snapshot(&at));
    }
}

/// Bytes of the files under `root`.
fn walk_bytes(root: &std::path::Path) -> u64 {
    common::files(root)
        .iter()
        .map(|p| fs::metadata(root.join(p)).unwrap().len())
        .sum()
}
