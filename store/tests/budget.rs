//! gc's storage budget (docs/lifecycle.md, "Storage budget"): runs of known
//! exclusive sizes over shared chunks, evicted least recently used first,
//! never inside the grace period; what gc reports freed is what the store
//! loses, and what stays attaches and verifies.
//!
//! The expected figures are derived by hand from the trees: every file is
//! random bytes (zstd leaves them as they are, so a chunk's stored bytes are
//! its length), and a run's exclusive bytes are its own files plus its
//! manifest's few hundred bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::Arc;

use crate::common::{job, snapshot};
use strata_store::attach::{attach, AttachRequest};
use strata_store::footprint::HolderName;
use strata_store::gc::{gc, GcOptions, GcReport};
use strata_store::persist::{persist, PersistRequest};
use strata_store::{Clock, Error, Graph, Quiet, RunName, Store};

const KIB: u64 = 1024;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// 2026-12-01T00:00:00Z.
const T0: i64 = 1_796_083_200;
/// A manifest's encoding and the slack of frame shares: what a run holds
/// alone beyond its own files.
const SLACK: u64 = 4 * KIB;

/// `n` random bytes from `seed`.
fn random(seed: u64, n: u64) -> Vec<u8> {
    let mut rng = strata_store::synth::Rng::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// A tree of the shared files (200 KiB, the same in every run) and
/// `own` KiB of its own (seeded by `seed`), at `root`.
fn tree(root: &Path, seed: u64, own: u64) {
    fs::create_dir_all(root.join("shared")).unwrap();
    fs::create_dir_all(root.join("own")).unwrap();
    fs::write(root.join("shared/lib"), random(1, 200 * KIB)).unwrap();
    fs::write(root.join("own/data"), random(seed, own * KIB)).unwrap();
}

struct World {
    dir: tempfile::TempDir,
    now: Arc<AtomicI64>,
    store: Store,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicI64::new(T0));
        let store = Store::open(&dir.path().join("store"), &Quiet)
            .unwrap()
            .with_clock(Clock::Manual(now.clone()));
        World { dir, now, store }
    }

    fn at(&self, t: i64) {
        self.now.store(t, SeqCst);
    }

    fn root(&self, name: &str) -> PathBuf {
        self.dir.path().join("trees").join(name)
    }

    /// Creates run `name` and persists its tree as job `a`.
    fn persist(&self, name: &str, seed: u64, own: u64) {
        let root = self.root(name);
        tree(&root, seed, own);
        let run = RunName::new(name).unwrap();
        let graph = Graph::from_specs(&["a", "b:a"]).unwrap();
        self.store.create_run(&run, graph, None).unwrap();
        let request = PersistRequest {
            run,
            job: job("a"),
            root,
            paths: vec!["shared".into(), "own".into()],
            allow_empty: false,
            writer: None,
        };
        persist(&self.store, &request).unwrap();
    }

    /// Attaches job `b` of run `name` (its job `a`'s layer).
    fn attach(&self, name: &str) -> Result<PathBuf, Error> {
        let at = self
            .dir
            .path()
            .join("out")
            .join(format!("{name}-{}", self.now()));
        attach(
            &self.store,
            &AttachRequest {
                run: RunName::new(name).unwrap(),
                job: job("b"),
                at: at.clone(),
                keep_setuid: false,
                only: Vec::new(),
            },
        )?;
        Ok(at)
    }

    fn now(&self) -> i64 {
        self.now.load(SeqCst)
    }

    /// Attaches run `name` and checks it is the tree persisted.
    fn attaches_whole(&self, name: &str) {
        let at = self.attach(name).unwrap();
        assert_eq!(snapshot(&at), snapshot(&self.root(name)), "run {name}");
    }

    fn gc(&self, max_size: Option<u64>) -> GcReport {
        gc(
            &self.store,
            &GcOptions {
                max_size,
                lease_settle: Some(std::time::Duration::ZERO),
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Bytes of every pack in the store.
    fn pack_bytes(&self) -> u64 {
        walkdir::WalkDir::new(self.dir.path().join("store/packs"))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }
}

fn run_name(h: &HolderName) -> String {
    match h {
        HolderName::Run(r) => r.to_string(),
        HolderName::Cache { key, .. } => format!("cache {key}"),
    }
}

/// Four runs and a cache entry whose last uses are, oldest first: r0 (day
/// 0), r2 (day 2), r3 (day 3), the cache (day 3.5), r1 (an attach on day
/// 4). Own bytes: r0 100 KiB, r1 200, r2 300, r3 400, the cache 150; all
/// runs share 200 KiB.
fn four_runs_and_a_cache() -> World {
    let w = World::new();
    for (i, own) in [(0, 100), (1, 200), (2, 300), (3, 400)] {
        w.at(T0 + i * DAY);
        w.persist(&format!("r{i}"), 10 + i as u64, own);
    }
    w.at(T0 + 3 * DAY + 12 * HOUR);
    let cache_root = w.root("cache");
    fs::create_dir_all(&cache_root).unwrap();
    fs::write(cache_root.join("deps"), random(99, 150 * KIB)).unwrap();
    strata_store::caches::save(&w.store, "deps-1", &cache_root, &[PathBuf::from("deps")]).unwrap();
    w.at(T0 + 4 * DAY);
    w.attaches_whole("r1");
    w
}

// `ls --sizes`' figures: what each holds alone is its own files, and the
// shared files count as shared for every run.
#[test]
fn footprints_split_what_a_run_holds_alone_from_what_it_shares() {
    let w = four_runs_and_a_cache();
    let f = strata_store::gc::budget::footprints(&w.store).unwrap();
    let by_name: std::collections::HashMap<String, _> =
        f.iter().map(|h| (run_name(&h.name), h)).collect();
    for (name, own) in [
        ("r0", 100),
        ("r1", 200),
        ("r2", 300),
        ("r3", 400),
        ("cache deps-1", 150),
    ] {
        let h = by_name[name];
        assert!(
            (own * KIB..own * KIB + SLACK).contains(&h.exclusive_bytes),
            "{name} holds {} alone, not {own} KiB",
            h.exclusive_bytes
        );
        let shared = if name.starts_with("cache") {
            0
        } else {
            200 * KIB
        };
        assert!(
            (shared..shared + SLACK).contains(&h.shared_bytes),
            "{name} shares {}",
            h.shared_bytes
        );
    }
}

// Over a budget, gc evicts least recently used first until the rest fit,
// frees what it reported, and what stays attaches and verifies.
#[test]
fn a_budget_evicts_the_least_recently_used_and_frees_what_it_reported() {
    let w = four_runs_and_a_cache();
    // Live: 200 shared + 100 + 200 + 300 + 400 + 150 = 1350 KiB. Under
    // 1000 KiB: r0 (frees 100) is not enough, r0 and r2 (400) are.
    let budget = 1000 * KIB;
    w.at(T0 + 4 * DAY + HOUR / 2);
    let before = w.pack_bytes();
    let r = w.gc(Some(budget));
    let evicted: Vec<String> = r.evicted.iter().map(|e| run_name(&e.name)).collect();
    assert_eq!(evicted, ["r0", "r2"], "{r:?}");
    for (e, own) in r.evicted.iter().zip([100, 300]) {
        assert!(
            (own * KIB..own * KIB + SLACK).contains(&e.held_alone),
            "{} held {} alone, not {own} KiB",
            run_name(&e.name),
            e.held_alone
        );
    }
    assert!(r.live_bytes <= budget && r.over_budget == 0, "{r:?}");
    // Evicted runs say so, with the date and the budget.
    let e = w.attach("r0").unwrap_err().to_string();
    assert!(
        e.contains("expired on 2026-12-05") && e.contains("evicted") && e.contains("1000.0 KiB"),
        "{e}"
    );
    // Nothing is deleted inside the grace period; after it, the condemned
    // packs go and the store is what gc said it would be.
    w.at(T0 + 4 * DAY + 3 * HOUR);
    let later = w.gc(Some(budget));
    assert!(later.evicted.is_empty(), "{later:?}");
    let after = w.pack_bytes();
    let reported: u64 = r.evicted.iter().map(|e| e.held_alone).sum();
    let freed = before - after;
    assert!(
        freed + SLACK >= reported && freed <= reported + SLACK,
        "freed {freed}, reported {reported}"
    );
    assert!(
        after <= budget,
        "{after} B of packs over a {budget} B budget"
    );
    for name in ["r1", "r3"] {
        w.attaches_whole(name);
    }
    let v = strata_store::verify::verify(&w.store, true).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

// Nothing used within the grace period is evicted, however far over the
// budget: gc says by how much it stays over.
#[test]
fn a_budget_never_evicts_what_was_used_within_the_grace_period() {
    let w = four_runs_and_a_cache();
    w.at(T0 + 5 * DAY);
    w.attaches_whole("r3");
    w.at(T0 + 5 * DAY + HOUR / 2);
    let r = w.gc(Some(1));
    let evicted: Vec<String> = r.evicted.iter().map(|e| run_name(&e.name)).collect();
    // r3 was attached half an hour ago (the grace period is an hour).
    assert_eq!(evicted, ["r0", "r2", "cache deps-1", "r1"], "{r:?}");
    assert!(
        (600 * KIB..600 * KIB + 2 * SLACK).contains(&r.over_budget),
        "{r:?}"
    );
    w.attaches_whole("r3");
}

// A gc reads each live manifest once, with a budget or without: a
// budgeted gc's mark and its measure of who holds what are one pass (they
// were two, so it read every manifest twice), and reading a manifest's
// chunks fetches its root once. Five live manifests: the four runs'
// layers and the cache entry.
#[test]
fn a_gc_reads_each_live_manifest_once() {
    for budget in [Some(1 << 40), None] {
        let World { dir, now, store } = four_runs_and_a_cache();
        let gets = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = gets.clone();
        let store = store.wrap_backend(|inner| {
            Arc::new(crate::common::OnPut {
                inner,
                hook: Box::new(|inner, key, data| inner.put(key, data)),
                on_get: Some(Box::new(move |key| seen.lock().unwrap().push(key.into()))),
            })
        });
        let w = World { dir, now, store };
        let report = w.gc(budget);
        assert!(report.evicted.is_empty(), "{report:?}");
        let gets = gets.lock().unwrap();
        let roots: Vec<&String> = gets
            .iter()
            .filter(|k| k.starts_with("manifests/"))
            .collect();
        assert_eq!(
            roots.len(),
            5,
            "budget {budget:?}: manifest roots read: {roots:?}"
        );
    }
}
