//! What the store's integration tests share: a run `r` where job `b`
//! requires job `a`, persisting as `a` and attaching as `b`, and file
//! listings to compare trees.
#![allow(dead_code)] // each test binary uses its own part of this

use std::fs;
use std::path::{Path, PathBuf};

use std::ops::Range;
use std::sync::Arc;

use strata_store::attach::{attach, AttachReport, AttachRequest};
use strata_store::backend::Backend;
use strata_store::persist::{persist, PersistReport, PersistRequest};
use strata_store::testing::{describe_tree, Node};
use strata_store::{Graph, JobName, Result, RunName, Store};

pub fn job(name: &str) -> JobName {
    JobName::new(name).unwrap()
}

pub fn run() -> RunName {
    RunName::new("r").unwrap()
}

/// Creates run `r` (jobs `a`, `b:a`; again is a no-op) and persists
/// `paths` under `root` as a layer of job `a`.
pub fn persist_a(store: &Store, root: &Path, paths: &[&str]) -> Result<PersistReport> {
    store.create_run(&run(), Graph::from_specs(&["a", "b:a"]).unwrap(), None)?;
    persist(
        store,
        &PersistRequest {
            run: run(),
            job: job("a"),
            root: root.to_path_buf(),
            paths: paths.iter().map(PathBuf::from).collect(),
            allow_empty: false,
            writer: None,
        },
    )
}

/// Attaches job `b`'s workspace (job `a`'s layers) into `at`.
pub fn attach_b(store: &Store, at: &Path) -> Result<AttachReport> {
    attach(
        store,
        &AttachRequest {
            run: run(),
            job: job("b"),
            at: at.to_path_buf(),
            keep_setuid: false,
            only: Vec::new(),
        },
    )
}

/// Every regular file under `root`, sorted.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

/// Copies the regular files under `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    for f in files(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&f, dest).unwrap();
    }
}

/// Everything attach must reproduce below `root` (types, bytes, modes,
/// mtimes, symlink targets, hardlink groups, empty directories): the one
/// tree description every test suite compares (`strata_store::testing`).
pub fn snapshot(root: &Path) -> Vec<(PathBuf, Node)> {
    describe_tree(root)
}

/// What a test does with a `put`: usually something, then `inner.put`.
pub type PutHook = Box<dyn Fn(&dyn Backend, &str, &[u8]) -> Result<()> + Send + Sync>;

/// What a test does on a `get`, before it reaches `inner`: record its key.
pub type GetHook = Box<dyn Fn(&str) + Send + Sync>;

/// A backend that passes everything to `inner`, but lets a test step in on
/// each `put` (fail it, delay it, count it) and see each `get`.
pub struct OnPut {
    pub inner: Arc<dyn Backend>,
    pub hook: PutHook,
    pub on_get: Option<GetHook>,
}

impl std::fmt::Debug for OnPut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnPut({})", self.inner.location())
    }
}

impl Backend for OnPut {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        (self.hook)(self.inner.as_ref(), key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        if let Some(seen) = &self.on_get {
            seen(key);
        }
        self.inner.get(key)
    }
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        self.inner.get_ranges(key, ranges)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }
    fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}
