//! Tests of what opening a format-2 store costs, in requests, and of its
//! tombstones: a cold reader of a store of 10^4 packs makes a constant
//! number of requests plus one per index log entry newer than the newest
//! snapshot; a reader that held deleted packs forgets them.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use super::Store;
use crate::backend::{Backend, Memory};
use crate::error::Result;
use crate::format::config::StoreConfig;
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::keys::{index_log_key, CONFIG_KEY};
use crate::format::pack::{FrameBuilder, PackBuilder};
use crate::id::ChunkId;
use crate::ops::gc::{gc, GcOptions};
use crate::util::Clock;

/// A backend that counts the requests made through it.
#[derive(Debug)]
struct Counted {
    inner: Arc<dyn Backend>,
    requests: AtomicU64,
}

impl Counted {
    fn count(&self) {
        self.requests.fetch_add(1, SeqCst);
    }

    /// A listing costs a request per 1,000 keys, as on S3.
    fn count_pages(&self, keys: usize) {
        self.requests
            .fetch_add(keys.div_ceil(1000).max(1) as u64, SeqCst);
    }
}

impl Backend for Counted {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.count();
        self.inner.put(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.count();
        self.inner.get(key)
    }
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        self.count();
        self.inner.get_ranges(key, ranges)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.count();
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let keys = self.inner.list(prefix)?;
        self.count_pages(keys.len());
        Ok(keys)
    }
    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<String>> {
        let keys = self.inner.list_after(prefix, after)?;
        self.count_pages(keys.len());
        Ok(keys)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.count();
        self.inner.delete(key)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

const NOW: i64 = 1_800_000_000;

/// Writes a pack of one chunk and its index log entry, named at `time`, as
/// a persist would; returns the chunk.
fn persisted(backend: &dyn Backend, seed: u64, time: i64) -> ChunkId {
    persisted_with_index(backend, seed, time).0
}

/// `persisted`, and the index object written.
fn persisted_with_index(backend: &dyn Backend, seed: u64, time: i64) -> (ChunkId, IndexObject) {
    let bytes = format!("chunk {seed} of the open-cost store").into_bytes();
    let id = ChunkId::of(&bytes);
    let mut frame = FrameBuilder::default();
    frame.push(id, &bytes);
    let mut compressor = zstd::bulk::Compressor::new(1).unwrap();
    let mut pack = PackBuilder::new();
    pack.push(frame.seal(&mut compressor));
    let (pack_id, pack_bytes, frames) = pack.finish();
    backend
        .put(&crate::format::keys::pack_key(&pack_id), &pack_bytes)
        .unwrap();
    let object = IndexObject {
        packs: vec![IndexedPack {
            pack: pack_id,
            frames,
        }],
    };
    let (index_id, index_bytes) = object.encode();
    backend
        .put(&index_log_key(&index_id, time), &index_bytes)
        .unwrap();
    (id, object)
}

/// A process's store over `backend`, its metadata in `meta` (a new
/// directory: a cold reader; one used before: a warm one).
fn open(backend: Arc<dyn Backend>, meta: &Path) -> Store {
    Store::shared_for_tests(backend, meta).with_clock(Clock::Fixed(NOW))
}

/// Opens a store through a request counter: the store, and how many
/// requests opening it took.
fn open_counted(backend: &Arc<dyn Backend>, meta: &Path) -> (Store, Arc<Counted>) {
    let counted = Arc::new(Counted {
        inner: backend.clone(),
        requests: AtomicU64::new(0),
    });
    let store = open(counted.clone(), meta);
    (store, counted)
}

#[test]
fn opening_a_store_of_ten_thousand_packs_costs_a_constant_number_of_requests() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(Memory::default());
    backend
        .put(CONFIG_KEY, &StoreConfig::new("open-cost".into()).encode())
        .unwrap();
    // 10^4 persists: half two days ago, half an hour ago.
    let chunks: Vec<ChunkId> = (0..10_000)
        .map(|i| {
            let age = if i < 5_000 { 2 * 86_400 } else { 3_600 };
            persisted(backend.as_ref(), i, NOW - age)
        })
        .collect();
    // gc consolidates them into a snapshot (nothing is deleted: no pack is
    // past the grace period).
    let report = gc(
        &open(backend.clone(), &dir.path().join("gc")),
        &GcOptions::default(),
    )
    .unwrap();
    assert_eq!((report.packs, report.packs_deleted), (10_000, 0));
    assert_eq!(
        report.index_objects_replaced, 5_000,
        "entries older than a day go"
    );
    // Three persists after it.
    let newer: Vec<ChunkId> = (0..3)
        .map(|i| persisted(backend.as_ref(), 20_000 + i, NOW + 60))
        .collect();

    // A cold reader: read the config; list snapshots, tombstones, the log's
    // tail and the condemned lists; read the snapshot, the condemned list
    // and the three new entries.
    let (cold, counted) = open_counted(&backend, &dir.path().join("cold"));
    let opening = counted.requests.load(SeqCst);
    assert!(opening <= 7 + 3, "a cold open took {opening} requests");
    // It knows every chunk without asking again.
    let all: Vec<ChunkId> = chunks.iter().chain(&newer).copied().collect();
    let before = counted.requests.load(SeqCst);
    assert!(cold
        .chunk_lookup()
        .locate(&all)
        .unwrap()
        .iter()
        .all(Option::is_some));
    assert_eq!(counted.requests.load(SeqCst), before);
    drop(cold);

    // A warm reader, two persists later: the config, the lists, the
    // condemned list, and the two new entries.
    for i in 0..2 {
        persisted(backend.as_ref(), 30_000 + i, NOW + 120);
    }
    let (_warm, counted) = open_counted(&backend, &dir.path().join("cold"));
    let opening = counted.requests.load(SeqCst);
    assert!(opening <= 6 + 2, "a warm open took {opening} requests");
    // Once gc has written tombstones, a reader in step does not read them
    // again: still the lists, the condemned list and what is new.
    use crate::format::keys::{timed_key, DELETED_PREFIX};
    use crate::format::records::{Deleted, Record};
    let tomb = Deleted {
        since: NOW - 7 * 86_400,
        packs: vec![(crate::id::PackId::of(b"long gone"), NOW - 10)],
    };
    backend
        .put(&timed_key(DELETED_PREFIX, NOW - 10), &tomb.encode())
        .unwrap();
    drop(open(backend.clone(), &dir.path().join("cold")));
    for i in 0..2 {
        persisted(backend.as_ref(), 40_000 + i, NOW + 180);
    }
    let (_warm, counted) = open_counted(&backend, &dir.path().join("cold"));
    let opening = counted.requests.load(SeqCst);
    assert!(
        opening <= 6 + 2,
        "a warm open with tombstones took {opening} requests"
    );
}

#[test]
fn a_reader_forgets_the_packs_gc_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(Memory::default());
    backend
        .put(CONFIG_KEY, &StoreConfig::new("tombstones".into()).encode())
        .unwrap();
    let (chunks, objects): (Vec<ChunkId>, Vec<IndexObject>) = (0..20)
        .map(|i| persisted_with_index(backend.as_ref(), i, NOW - 60))
        .unzip();
    let warm_meta = dir.path().join("warm");
    let warm = open(backend.clone(), &warm_meta);
    assert_eq!(
        warm.chunk_lookup().missing(&chunks).unwrap(),
        vec![false; 20]
    );
    drop(warm);
    // gc deletes every pack (nothing is live; no grace).
    let options = GcOptions {
        grace_secs: Some(0),
        ..GcOptions::default()
    };
    let report = gc(&open(backend.clone(), &dir.path().join("gc")), &options).unwrap();
    assert_eq!(report.packs_deleted, 20);
    // A late index log entry (a persist that stalled between its packs and
    // its index object) lists one of them after it was deleted.
    let (late_id, late_bytes) = objects[0].encode();
    backend
        .put(&index_log_key(&late_id, NOW - 30), &late_bytes)
        .unwrap();
    // The reader that had them forgets them; a new one never learns them.
    for meta in [warm_meta, dir.path().join("cold")] {
        let store = open(backend.clone(), &meta);
        let missing = store.chunk_lookup().missing(&chunks).unwrap();
        assert_eq!(missing, vec![true; 20], "{}", meta.display());
    }
}

#[test]
fn a_store_gc_never_ran_on_gets_a_snapshot_from_its_readers() {
    use crate::format::keys::{timed_key, DELETED_PREFIX, SNAPSHOT_PREFIX};
    use crate::format::records::{Deleted, Record};
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(Memory::default());
    backend
        .put(CONFIG_KEY, &StoreConfig::new("no-gc".into()).encode())
        .unwrap();
    // 1,500 persists, one every 10 s over four hours; no gc ever ran...
    let objects: Vec<IndexObject> = (0..1_500)
        .map(|i| persisted_with_index(backend.as_ref(), i, NOW - 4 * 3_600 + 10 * i as i64).1)
        .collect();
    // ...but one pack was deleted (a tombstone names it).
    let gone = objects[0].packs[0].pack;
    let tomb = Deleted {
        since: NOW - 7 * 86_400,
        packs: vec![(gone, NOW - 60)],
    };
    backend
        .put(&timed_key(DELETED_PREFIX, NOW - 60), &tomb.encode())
        .unwrap();
    // The first cold reader reads every entry, and leaves a snapshot.
    let (_first, counted) = open_counted(&backend, &dir.path().join("first"));
    assert!(counted.requests.load(SeqCst) > 1_500);
    let snaps = backend.list(SNAPSHOT_PREFIX).unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let (_, id) = crate::format::keys::log_time_and_id(&snaps[0]).unwrap();
    let snapshot = IndexObject::decode(&id, &backend.get(&snaps[0]).unwrap()).unwrap();
    assert_eq!(snapshot.packs.len(), 1_499);
    assert!(
        snapshot.packs.iter().all(|p| p.pack != gone),
        "a deleted pack in a snapshot"
    );
    // The next reads the snapshot and the last 15 minutes of the log.
    let (_next, counted) = open_counted(&backend, &dir.path().join("next"));
    let opening = counted.requests.load(SeqCst);
    assert!(
        opening <= 8 + 91,
        "a cold open after a reader's snapshot took {opening}"
    );
}

#[test]
fn a_readers_snapshot_drops_what_gc_deleted_after_its_own_snapshot() {
    use crate::format::keys::{log_time_and_id, timed_key, DELETED_PREFIX, SNAPSHOT_PREFIX};
    use crate::format::records::{Deleted, Record};
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(Memory::default());
    backend
        .put(
            CONFIG_KEY,
            &StoreConfig::new("later-deletion".into()).encode(),
        )
        .unwrap();
    let first: Vec<IndexObject> = (0..50)
        .map(|i| persisted_with_index(backend.as_ref(), i, NOW - 3_600 + i as i64).1)
        .collect();
    // gc's snapshot lists all 50 packs...
    gc(
        &open(backend.clone(), &dir.path().join("gc")),
        &GcOptions::default(),
    )
    .unwrap();
    // ...then a later gc deleted one (its tombstone), and 1,100 persists came.
    let gone = first[0].packs[0].pack;
    let tomb = Deleted {
        since: NOW - 7 * 86_400,
        packs: vec![(gone, NOW + 5)],
    };
    backend
        .put(&timed_key(DELETED_PREFIX, NOW + 5), &tomb.encode())
        .unwrap();
    for i in 0..1_100 {
        persisted(backend.as_ref(), 10_000 + i, NOW + 10 + i as i64);
    }
    // A reader starting over gathers gc's snapshot and the log into one of
    // its own, which must not list the deleted pack.
    drop(open(backend.clone(), &dir.path().join("cold")));
    let newest = backend.list(SNAPSHOT_PREFIX).unwrap().pop().unwrap();
    let (time, id) = log_time_and_id(&newest).unwrap();
    assert!(time > NOW, "the reader's snapshot is the newest: {newest}");
    let snapshot = IndexObject::decode(&id, &backend.get(&newest).unwrap()).unwrap();
    assert_eq!(snapshot.packs.len(), 49 + 1_100);
    assert!(snapshot.packs.iter().all(|p| p.pack != gone));
}
