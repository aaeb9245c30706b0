//! Which threads a read from a network store uses: as many requests in
//! flight as the backend asks for, one request per pack as before, and
//! the chunks handed on (for attach: files created and written) on no
//! more threads than the machine's cores.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use super::fetch_chunks;
use crate::backend::{Backend, Memory};
use crate::error::{Error, Result};
use crate::format::config::StoreConfig;
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::keys::{index_log_key, pack_key, CONFIG_KEY, PACK_PREFIX};
use crate::format::pack::{FrameBuilder, PackBuilder};
use crate::id::ChunkId;
use crate::repo::Store;

/// Requests the backend keeps in flight (as `strata serve`'s does).
const FETCHERS: usize = 8;
/// The machine's cores, as the test sets rayon's pool.
const CORES: usize = 2;
const PACKS: u64 = 24;
const CHUNKS_PER_PACK: u64 = 5;

/// A memory store that asks for `FETCHERS` requests in flight and holds
/// the first `FETCHERS` pack reads until all of them have arrived (so a
/// read that does not keep them in flight at once waits out the timeout
/// and is caught by the count of the most at once).
#[derive(Debug, Default)]
struct Wide {
    inner: Memory,
    pack_reads: AtomicUsize,
    in_flight: Mutex<(usize, usize)>,
    arrived: Condvar,
    most_in_flight: AtomicUsize,
}

impl Backend for Wide {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.put(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        if key.starts_with(PACK_PREFIX) {
            let arrival = self.pack_reads.fetch_add(1, SeqCst) + 1;
            let mut state = self.in_flight.lock().unwrap();
            state.0 += 1;
            self.most_in_flight.fetch_max(state.0, SeqCst);
            self.arrived.notify_all();
            if arrival <= FETCHERS {
                let wait = Duration::from_secs(10);
                state = self
                    .arrived
                    .wait_timeout_while(state, wait, |_| self.pack_reads.load(SeqCst) < FETCHERS)
                    .unwrap()
                    .0;
            }
            state.0 -= 1;
        }
        self.inner.get_ranges(key, ranges)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn location(&self) -> String {
        "wide".into()
    }
    fn parallelism(&self) -> usize {
        FETCHERS
    }
}

/// Chunk `c` of pack `p`'s bytes.
fn chunk(p: u64, c: u64) -> Vec<u8> {
    format!("chunk {c} of pack {p} ").repeat(100).into_bytes()
}

/// Writes `PACKS` packs of `CHUNKS_PER_PACK` chunks (one frame each) and
/// their index object, as a persist would; returns every chunk.
fn packs(backend: &dyn Backend) -> HashMap<ChunkId, Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(1).unwrap();
    let mut chunks = HashMap::new();
    let mut indexed = Vec::new();
    for p in 0..PACKS {
        let mut frame = FrameBuilder::default();
        for c in 0..CHUNKS_PER_PACK {
            let bytes = chunk(p, c);
            frame.push(ChunkId::of(&bytes), &bytes);
            chunks.insert(ChunkId::of(&bytes), bytes);
        }
        let mut pack = PackBuilder::new();
        pack.push(frame.seal(&mut compressor));
        let (pack, bytes, frames) = pack.finish();
        backend.put(&pack_key(&pack), &bytes).unwrap();
        indexed.push(IndexedPack { pack, frames });
    }
    let (index, bytes) = IndexObject { packs: indexed }.encode();
    backend
        .put(&index_log_key(&index, 1_800_000_000), &bytes)
        .unwrap();
    chunks
}

fn store(backend: Arc<Wide>, meta: &Path) -> Store {
    backend
        .put(CONFIG_KEY, &StoreConfig::new("threads".into()).encode())
        .unwrap();
    Store::shared_for_tests(backend, meta)
}

#[test]
fn a_network_read_keeps_its_requests_in_flight_but_hands_chunks_on_from_the_cores_only() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Wide::default());
    let chunks = packs(backend.as_ref());
    let store = store(backend.clone(), dir.path());
    let handed_on: Mutex<(HashSet<ThreadId>, Vec<ChunkId>)> = Mutex::default();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(CORES)
        .build()
        .unwrap();
    let fetched = pool
        .install(|| {
            fetch_chunks(
                &store,
                chunks.keys().copied(),
                &|id| Error::corrupt(id.to_string(), "missing"),
                &|id, bytes| {
                    assert_eq!(bytes, chunks[&id].as_slice(), "chunk {id}");
                    let mut seen = handed_on.lock().unwrap();
                    seen.0.insert(std::thread::current().id());
                    seen.1.push(id);
                    Ok(())
                },
            )
        })
        .unwrap();
    let (threads, mut ids) = handed_on.into_inner().unwrap();
    let expected = (PACKS * CHUNKS_PER_PACK) as usize;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((ids.len(), fetched.chunks as usize), (expected, expected));
    // One request per pack, as many in flight as the backend asks for.
    assert_eq!(backend.pack_reads.load(SeqCst), PACKS as usize);
    assert_eq!(backend.most_in_flight.load(SeqCst), FETCHERS);
    assert!(
        threads.len() <= CORES,
        "chunks handed on from {} threads",
        threads.len()
    );
}
