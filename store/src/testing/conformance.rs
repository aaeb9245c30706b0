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
    let who = b.location();
    let fail = |rule: &str| -> ! { panic!("backend {who}: {rule}") };

    // Missing objects.
    let (missing_key, _, _) = pack_of(&[b"never stored"]);
    match b.get(&missing_key) {
        Err(Error::NotFound { .. }) => {}
        other => fail(&format!(
            "get of a missing key must be NotFound, got {other:?}"
        )),
    }
    if !matches!(b.size(&missing_key), Err(Error::NotFound { .. })) {
        fail("size of a missing key must be NotFound");
    }
    if !matches!(
        b.get_ranges(&missing_key, std::slice::from_ref(&(0..1))),
        Err(Error::NotFound { .. })
    ) {
        fail("get_ranges of a missing key must be NotFound");
    }
    if b.exists(&missing_key).unwrap() {
        fail("exists of a missing key must be false");
    }

    // Put and read back: a small pack and a multi-MiB one (the big chunk
    // is incompressible, so the pack is as big as the data).
    let mut rng = crate::synth::Rng::new(5);
    let big: Vec<u8> = (0..5u32 << 20).map(|_| rng.next_u64() as u8).collect();
    let (empty_manifest_id, body) = Manifest { entries: vec![] }.encode();
    let (small_key, small, small_ix) = pack_of(&[b"hello", &body]);
    let (big_key, big_pack, big_ix) = pack_of(&[&big]);
    for (key, data) in [(&small_key, &small), (&big_key, &big_pack)] {
        b.put(key, data)
            .unwrap_or_else(|e| fail(&format!("put {key}: {e}")));
        if b.get(key).unwrap() != *data {
            fail(&format!("get {key} must return what was put"));
        }
        if b.size(key).unwrap() != data.len() as u64 {
            fail(&format!("size {key} must be the length put"));
        }
        if !b.exists(key).unwrap() {
            fail(&format!("exists {key} must be true after put"));
        }
    }
    // A repeated put of the same object is harmless.
    b.put(&small_key, &small).unwrap();
    if b.get(&small_key).unwrap() != small {
        fail("a second put of an object must leave it as it was");
    }

    // Ranges: several, in the order asked, and never past the end.
    let n = big_pack.len() as u64;
    let ranges: Vec<Range<u64>> = vec![4096..4100, 0..3, n - 2..n, 100..100 + (1 << 20)];
    let got = b.get_ranges(&big_key, &ranges).unwrap();
    for (r, bytes) in ranges.iter().zip(&got) {
        if bytes[..] != big_pack[r.start as usize..r.end as usize] {
            fail(&format!(
                "get_ranges must return bytes {}..{}",
                r.start, r.end
            ));
        }
    }
    if got.len() != ranges.len() {
        fail("get_ranges must return one buffer per range");
    }
    if !matches!(
        b.get_ranges(&small_key, std::slice::from_ref(&(2..n))),
        Err(Error::Corrupt { .. })
    ) {
        fail("a range past the end must be Corrupt");
    }

    // The objects that make a layer, in persist's order.
    let index = IndexObject {
        packs: vec![small_ix, big_ix],
    };
    let (index_id, index_bytes) = index.encode();
    b.put(&index_key(&index_id), &index_bytes).unwrap();
    let root = ManifestRoot {
        len: body.len() as u64,
        chunks: vec![ChunkRef {
            id: ChunkId::of(&body),
            len: body.len() as u32,
        }],
    };
    b.put(&manifest_key(&empty_manifest_id), &root.encode())
        .unwrap();
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
    let layer = |seq: u64| LayerRecord {
        manifest: ManifestId::of(&body),
        created: seq as i64,
        totals: Totals::default(),
        writer: None,
    };
    assert_eq!(ManifestId::of(&body), empty_manifest_id);
    for seq in 1..=2 {
        b.put(&layer_key("conf", "j0", seq), &layer(seq).encode())
            .unwrap();
    }
    b.put(&layer_key("conf", "j1", 1), &layer(1).encode())
        .unwrap();

    // Listing: by prefix, sorted, nothing from other prefixes.
    let j0 = b.list(&layer_prefix_of("conf", "j0")).unwrap();
    if j0 != [layer_key("conf", "j0", 1), layer_key("conf", "j0", 2)] {
        fail(&format!(
            "list of j0's layers must be its two refs, sorted: {j0:?}"
        ));
    }
    if b.list(&run_prefix_of("conf")).unwrap().len() != 4 {
        fail("list runs/conf/ must show every key under it");
    }
    let packs = b.list(keys::PACK_PREFIX).unwrap();
    let mut want = vec![small_key.clone(), big_key.clone()];
    want.sort();
    if packs != want {
        fail(&format!(
            "list packs/ must be the two packs, sorted: {packs:?}"
        ));
    }
    if !b.list(&run_prefix_of("nothing")).unwrap().is_empty() {
        fail("list of an empty prefix must be empty");
    }
    // Listing from a point: only what sorts after it, under the prefix.
    let after = b
        .list_after(&layer_prefix_of("conf", "j0"), &layer_key("conf", "j0", 1))
        .unwrap();
    if after != [layer_key("conf", "j0", 2)] {
        fail(&format!(
            "list_after j0's first ref must be its second only: {after:?}"
        ));
    }
    let from_before = b
        .list_after(&layer_prefix_of("conf", "j0"), "runs/conf/")
        .unwrap();
    if from_before != j0 {
        fail(&format!(
            "list_after a point before the prefix must list all of it: {from_before:?}"
        ));
    }
    if !b
        .list_after(&layer_prefix_of("conf", "j0"), &layer_key("conf", "j0", 3))
        .unwrap()
        .is_empty()
    {
        fail("list_after the last key must be empty");
    }

    // Delete (a layer ref; deleting again, or a missing key, is fine).
    let gone = layer_key("conf", "j0", 1);
    b.delete(&gone).unwrap();
    b.delete(&gone)
        .unwrap_or_else(|e| fail(&format!("deleting a missing key must succeed: {e}")));
    if b.exists(&gone).unwrap() || b.list(&layer_prefix_of("conf", "j0")).unwrap().len() != 1 {
        fail("a deleted key must be gone from exists and list");
    }

    // Keys that could escape or collide are refused, never panicking.
    for bad in ["", "../x", "a//b", ".local/x", "a/.tmp", "a b", "/abs"] {
        if b.put(bad, b"x").is_ok() {
            fail(&format!("put of the invalid key {bad:?} must fail"));
        }
    }

    // Concurrent writers to distinct keys all land.
    std::thread::scope(|s| {
        for t in 0..8 {
            let layer = &layer;
            s.spawn(move || {
                for i in 0..16 {
                    let key = layer_key("conf", &format!("j{t}"), 100 + i);
                    b.put(&key, &layer(i).encode()).unwrap();
                }
            });
        }
    });
    let refs = b
        .list(&keys::run_layers_prefix(&RunName::new("conf").unwrap()))
        .unwrap()
        .len();
    if refs != 128 + 2 {
        fail(&format!(
            "8 threads writing 16 refs each must add 128 keys, found {}",
            refs - 2
        ));
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
