//! The backend contract as a test suite: every backend (memory, local
//! directory, `strata serve`, S3) runs these same checks, the in-memory
//! backend being the reference. `check` panics with the first violation,
//! naming the backend and the rule.
//!
//! The suite writes only real store objects (packs, an index object, a
//! manifest, a run record, layer refs), in the order persist writes them,
//! because a server checks every object it is given; a raw backend accepts
//! them just the same.

use std::ops::Range;

use crate::backend::Backend;
use crate::error::Error;
use crate::format::graph::Graph;
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::keys::{self, index_key, manifest_key, pack_key};
use crate::format::manifest::{ChunkRef, Manifest, ManifestRoot, Totals};
use crate::format::pack::{FrameBuilder, PackBuilder};
use crate::format::records::{LayerRecord, Record, RunRecord};
use crate::id::{ChunkId, JobName, ManifestId, RunName};

/// Builds a pack holding `chunks`, each in a frame of its own.
fn pack_of(chunks: &[&[u8]]) -> (String, Vec<u8>, IndexedPack) {
    let mut c = zstd::bulk::Compressor::new(1).expect("zstd");
    let mut pack = PackBuilder::new();
    for bytes in chunks {
        let mut f = FrameBuilder::default();
        f.push(ChunkId::of(bytes), bytes);
        pack.push(f.seal(&mut c));
    }
    let (id, bytes, frames) = pack.finish();
    (pack_key(&id), bytes, IndexedPack { pack: id, frames })
}

/// A layer ref's key with a nonce fixed by `seq`, so the suite knows the
/// keys it wrote.
fn layer_key(run: &str, job: &str, seq: u64) -> String {
    format!("{}{seq:010}-{:016x}", layer_prefix_of(run, job), seq * 7919)
}

fn layer_prefix_of(run: &str, job: &str) -> String {
    keys::layer_prefix(&RunName::new(run).unwrap(), &JobName::new(job).unwrap())
}

fn run_prefix_of(run: &str) -> String {
    keys::run_prefix(&RunName::new(run).unwrap())
}

/// Runs every rule of the contract against `b`, which must start empty.
pub fn check(b: &dyn Backend) {
    let suite = Suite { b };
    suite.missing_objects();
    let (small, big) = suite.put_and_read_back();
    suite.ranges(&small, &big);
    let body = suite.layer_objects(small.2.clone(), big.2.clone());
    suite.listing(&small.0, &big.0);
    suite.delete();
    suite.bad_keys();
    suite.concurrent_writers(&body);
}

/// The backend under test; each method checks one group of rules.
struct Suite<'a> {
    b: &'a dyn Backend,
}

/// A pack as `pack_of` builds it: key, bytes, index entry.
type Pack = (String, Vec<u8>, IndexedPack);

/// A layer ref of the empty manifest (`body`), created at `seq`.
fn layer(body: &[u8], seq: u64) -> LayerRecord {
    LayerRecord {
        manifest: ManifestId::of(body),
        created: seq as i64,
        totals: Totals::default(),
        writer: None,
    }
}

impl Suite<'_> {
    fn fail(&self, rule: &str) -> ! {
        panic!("backend {}: {rule}", self.b.location())
    }

    /// Missing objects are NotFound (or false), never an empty answer.
    fn missing_objects(&self) {
        let b = self.b;
        let (missing_key, _, _) = pack_of(&[b"never stored"]);
        match b.get(&missing_key) {
            Err(Error::NotFound { .. }) => {}
            other => self.fail(&format!(
                "get of a missing key must be NotFound, got {other:?}"
            )),
        }
        if !matches!(b.size(&missing_key), Err(Error::NotFound { .. })) {
            self.fail("size of a missing key must be NotFound");
        }
        if !matches!(
            b.get_ranges(&missing_key, std::slice::from_ref(&(0..1))),
            Err(Error::NotFound { .. })
        ) {
            self.fail("get_ranges of a missing key must be NotFound");
        }
        if b.exists(&missing_key).unwrap() {
            self.fail("exists of a missing key must be false");
        }
    }

    /// Put and read back: a small pack (holding the empty manifest's
    /// encoding) and a multi-MiB one (the big chunk is incompressible, so
    /// the pack is as big as the data). Returns both.
    fn put_and_read_back(&self) -> (Pack, Pack) {
        let b = self.b;
        let mut rng = crate::synth::Rng::new(5);
        let big: Vec<u8> = (0..5u32 << 20).map(|_| rng.next_u64() as u8).collect();
        let (_, body) = Manifest { entries: vec![] }.encode();
        let small = pack_of(&[b"hello", &body]);
        let big = pack_of(&[&big]);
        for (key, data, _) in [&small, &big] {
            b.put(key, data)
                .unwrap_or_else(|e| self.fail(&format!("put {key}: {e}")));
            if b.get(key).unwrap() != *data {
                self.fail(&format!("get {key} must return what was put"));
            }
            if b.size(key).unwrap() != data.len() as u64 {
                self.fail(&format!("size {key} must be the length put"));
            }
            if !b.exists(key).unwrap() {
                self.fail(&format!("exists {key} must be true after put"));
            }
        }
        // A repeated put of the same object is harmless.
        b.put(&small.0, &small.1).unwrap();
        if b.get(&small.0).unwrap() != small.1 {
            self.fail("a second put of an object must leave it as it was");
        }
        (small, big)
    }

    /// Ranges: several, in the order asked, and never past the end.
    fn ranges(&self, small: &Pack, big: &Pack) {
        let (big_key, big_pack) = (&big.0, &big.1);
        let n = big_pack.len() as u64;
        let ranges: Vec<Range<u64>> = vec![4096..4100, 0..3, n - 2..n, 100..100 + (1 << 20)];
        let got = self.b.get_ranges(big_key, &ranges).unwrap();
        for (r, bytes) in ranges.iter().zip(&got) {
            if bytes[..] != big_pack[r.start as usize..r.end as usize] {
                self.fail(&format!(
                    "get_ranges must return bytes {}..{}",
                    r.start, r.end
                ));
            }
        }
        if got.len() != ranges.len() {
            self.fail("get_ranges must return one buffer per range");
        }
        if !matches!(
            self.b.get_ranges(&small.0, std::slice::from_ref(&(2..n))),
            Err(Error::Corrupt { .. })
        ) {
            self.fail("a range past the end must be Corrupt");
        }
    }

    /// The objects that make a layer, in persist's order: the index
    /// object, the (empty) manifest's root, run `conf` of eight jobs, and
    /// refs j0 (two) and j1 (one). Returns the manifest's encoding.
    fn layer_objects(&self, small: IndexedPack, big: IndexedPack) -> Vec<u8> {
        let b = self.b;
        let index = IndexObject {
            packs: vec![small, big],
        };
        let (index_id, index_bytes) = index.encode();
        b.put(&index_key(&index_id), &index_bytes).unwrap();
        let (manifest_id, body) = Manifest { entries: vec![] }.encode();
        let root = ManifestRoot {
            len: body.len() as u64,
            chunks: vec![ChunkRef {
                id: ChunkId::of(&body),
                len: body.len() as u32,
            }],
        };
        b.put(&manifest_key(&manifest_id), &root.encode()).unwrap();
        let jobs: Vec<String> = (0..8).map(|t| format!("j{t}")).collect();
        let run = RunRecord {
            created: 1,
            graph: Graph::from_specs(&jobs).unwrap(),
            ref_scope: None,
        };
        b.put(
            &keys::run_key(&RunName::new("conf").unwrap()),
            &run.encode(),
        )
        .unwrap();
        assert_eq!(ManifestId::of(&body), manifest_id);
        for seq in 1..=2 {
            b.put(&layer_key("conf", "j0", seq), &layer(&body, seq).encode())
                .unwrap();
        }
        b.put(&layer_key("conf", "j1", 1), &layer(&body, 1).encode())
            .unwrap();
        body
    }

    /// Listing: by prefix, sorted, nothing from other prefixes; and from a
    /// point, only what sorts after it under the prefix.
    fn listing(&self, small_key: &str, big_key: &str) {
        let b = self.b;
        let j0 = b.list(&layer_prefix_of("conf", "j0")).unwrap();
        if j0 != [layer_key("conf", "j0", 1), layer_key("conf", "j0", 2)] {
            self.fail(&format!(
                "list of j0's layers must be its two refs, sorted: {j0:?}"
            ));
        }
        if b.list(&run_prefix_of("conf")).unwrap().len() != 4 {
            self.fail("list runs/conf/ must show every key under it");
        }
        let packs = b.list(keys::PACK_PREFIX).unwrap();
        let mut want = vec![small_key.to_string(), big_key.to_string()];
        want.sort();
        if packs != want {
            self.fail(&format!(
                "list packs/ must be the two packs, sorted: {packs:?}"
            ));
        }
        if !b.list(&run_prefix_of("nothing")).unwrap().is_empty() {
            self.fail("list of an empty prefix must be empty");
        }
        let after = b
            .list_after(&layer_prefix_of("conf", "j0"), &layer_key("conf", "j0", 1))
            .unwrap();
        if after != [layer_key("conf", "j0", 2)] {
            self.fail(&format!(
                "list_after j0's first ref must be its second only: {after:?}"
            ));
        }
        let from_before = b
            .list_after(&layer_prefix_of("conf", "j0"), "runs/conf/")
            .unwrap();
        if from_before != j0 {
            self.fail(&format!(
                "list_after a point before the prefix must list all of it: {from_before:?}"
            ));
        }
        if !b
            .list_after(&layer_prefix_of("conf", "j0"), &layer_key("conf", "j0", 3))
            .unwrap()
            .is_empty()
        {
            self.fail("list_after the last key must be empty");
        }
    }

    /// Delete (a layer ref; deleting again, or a missing key, is fine).
    fn delete(&self) {
        let b = self.b;
        let gone = layer_key("conf", "j0", 1);
        b.delete(&gone).unwrap();
        b.delete(&gone)
            .unwrap_or_else(|e| self.fail(&format!("deleting a missing key must succeed: {e}")));
        if b.exists(&gone).unwrap() || b.list(&layer_prefix_of("conf", "j0")).unwrap().len() != 1 {
            self.fail("a deleted key must be gone from exists and list");
        }
    }

    /// Keys that could escape or collide are refused, never panicking.
    fn bad_keys(&self) {
        for bad in ["", "../x", "a//b", ".local/x", "a/.tmp", "a b", "/abs"] {
            if self.b.put(bad, b"x").is_ok() {
                self.fail(&format!("put of the invalid key {bad:?} must fail"));
            }
        }
    }

    /// Concurrent writers to distinct keys all land.
    fn concurrent_writers(&self, body: &[u8]) {
        let b = self.b;
        std::thread::scope(|s| {
            for t in 0..8 {
                s.spawn(move || {
                    for i in 0..16 {
                        let key = layer_key("conf", &format!("j{t}"), 100 + i);
                        b.put(&key, &layer(body, i).encode()).unwrap();
                    }
                });
            }
        });
        let refs = b
            .list(&keys::run_layers_prefix(&RunName::new("conf").unwrap()))
            .unwrap()
            .len();
        if refs != 128 + 2 {
            self.fail(&format!(
                "8 threads writing 16 refs each must add 128 keys, found {}",
                refs - 2
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_the_reference() {
        check(&crate::backend::Memory::new());
    }

    #[test]
    fn local_dir_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let b = crate::backend::LocalDir::new(dir.path().join("o"), dir.path().join("t")).unwrap();
        check(&b);
    }
}
