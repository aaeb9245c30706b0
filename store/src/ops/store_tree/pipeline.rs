//! The chunk pipeline behind storing a tree: the pools that take the
//! chunking threads' batches (`feed`) and store what the store lacks.
//! Query threads ask the chunk lookup which chunks of a batch are missing
//! (several queries in flight); compression threads put the new ones into
//! frames (about 2 MiB, zstd) and the frames into the open pack; upload
//! threads write full packs (about 4 MiB). Bounded queues and a bounded
//! set of batch buffers between the pools bound the memory
//! (docs/protocol.md "Pipelined persist"). The first error anywhere stops
//! every pool: each drains its queue unworked, and that error is returned.
//! This module knows no files, manifests or stat caches.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::index::IndexedPack;
use crate::format::keys::pack_key;
use crate::format::pack::{compress_frame, Compression, FrameChunk, PackBuilder};
use crate::id::ChunkId;
use crate::repo::Store;
use crate::util::Buffers;

use super::feed::{Pending, Pipe};

thread_local! {
    /// One sealer per compression thread, reused for every frame.
    static SEALER: RefCell<Option<Sealer>> = const { RefCell::new(None) };
}

/// What a compression thread seals frames with: a zstd context and its
/// output buffer, and a buffer to gather a frame whose chunks do not lie
/// back to back in their batch.
struct Sealer {
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    gathered: Vec<u8>,
    out: Vec<u8>,
}

/// Batches of chunks waiting for a query thread, and full packs waiting
/// for an upload thread, beyond the ones being worked on.
const QUEUED_BATCHES: usize = 2;
const QUEUED_PACKS: usize = 2;

/// How many batches may be held at once, wherever they are: being filled
/// by a chunking thread, queued, asked about, or having their new chunks
/// compressed. This, not the number of threads, bounds the batches'
/// memory; a chunking thread waits for a buffer before it starts a batch.
const BATCHES_HELD: usize = 16;

/// How many chunk queries may be in flight at once (the lookup says: a
/// server's answers each wait a round trip, a local index's do not), and
/// how many pack uploads: a few for a network store, the cores' worth for
/// a local disk.
pub(super) fn query_threads(store: &Store) -> usize {
    store.chunk_lookup().in_flight().max(1)
}
fn upload_threads(store: &Store) -> usize {
    store.backend().parallelism().clamp(1, 4)
}

/// What a pool thread runs first: in a test that counts what a persist's
/// threads hold together (`testing::heap`), it joins its caller's group.
fn joiner() -> impl Fn() + Copy {
    #[cfg(test)]
    let group = crate::testing::heap::in_group();
    move || {
        #[cfg(test)]
        crate::testing::heap::join_group(group);
    }
}

/// A frame being gathered from a batch: its chunks, and where their bytes
/// lie in the batch (runs of neighbours merged).
#[derive(Default)]
struct Gathering {
    chunks: Vec<FrameChunk>,
    ranges: Vec<std::ops::Range<usize>>,
    raw_len: usize,
}

impl Gathering {
    fn push(&mut self, id: ChunkId, range: std::ops::Range<usize>) {
        self.chunks.push(FrameChunk {
            id,
            offset: self.raw_len as u32,
            len: range.len() as u32,
        });
        self.raw_len += range.len();
        match self.ranges.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => self.ranges.push(range),
        }
    }
}

/// Takes what the chunking threads find and stores the new chunks: the
/// query and upload pools, and what they share.
pub(super) struct ChunkSink<'a> {
    pub(super) store: &'a Store,
    /// Chunks already added by this persist (another file had them).
    added: Mutex<HashSet<ChunkId>>,
    open: Mutex<PackBuilder>,
    written: Mutex<Vec<IndexedPack>>,
    pack_bytes: AtomicU64,
    chunks_new: AtomicU64,
    bytes_new: AtomicU64,
    /// The first error of a query or upload thread, until a chunking
    /// thread takes it to stop the others.
    pub(super) failed: Mutex<Option<Error>>,
    /// Set at the first error: the pools drain their queues unworked.
    pub(super) stopped: AtomicBool,
    /// The batches' buffers, at most `BATCHES_HELD`.
    pub(super) held: Arc<Buffers>,
    /// The last pack, kept for the commit to send (`hold_back`).
    last_pack: Mutex<Option<LastPack>>,
}

/// The last pack of a persist, finished but not uploaded: where the
/// backend stores a commit's objects in order in one round trip, it goes
/// ahead of the index object in the commit, not in a round trip of its own.
#[derive(Clone)]
pub(crate) struct LastPack {
    pub(crate) key: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) pack: IndexedPack,
}

impl std::fmt::Debug for LastPack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LastPack({}, {} bytes)", self.key, self.bytes.len())
    }
}

/// A last pack larger than this is uploaded on its own all the same: the
/// commit's request must stay well under a server's body limit (64 MiB by
/// default; a pack is about 4 MiB).
const LAST_PACK_MAX: usize = 16 << 20;

/// A batch the store has answered about: which of its chunks it lacks.
struct Answered {
    pending: Pending,
    missing: Vec<bool>,
}

impl<'a> ChunkSink<'a> {
    pub(super) fn new(store: &'a Store) -> Self {
        Self::holding(store, BATCHES_HELD)
    }

    /// A sink whose batches may hold at most `batches` buffers at once.
    fn holding(store: &'a Store, batches: usize) -> Self {
        Self {
            store,
            added: Mutex::new(HashSet::new()),
            open: Mutex::new(PackBuilder::new()),
            written: Mutex::new(Vec::new()),
            pack_bytes: AtomicU64::new(0),
            chunks_new: AtomicU64::new(0),
            bytes_new: AtomicU64::new(0),
            failed: Mutex::new(None),
            stopped: AtomicBool::new(false),
            held: Buffers::new(batches),
            last_pack: Mutex::new(None),
        }
    }

    /// Runs `chunk` (the chunking, on the calling thread and rayon's) with
    /// the query and upload pools behind it; once it is done and every
    /// chunk is stored, returns its result and the packs written, sorted.
    ///
    /// Memory: at most `BATCHES_HELD` batches (each `BATCH_BUFFER`)
    /// wherever they are; one pack is open,
    /// `QUEUED_PACKS` wait and each upload thread holds one
    /// (`pack_target_bytes` each). With the defaults and a network store:
    /// 16 x 5 MiB + (1 + 2 + 4) x 4 MiB, about 108 MiB at most.
    pub(super) fn run<T>(
        &self,
        chunk: impl FnOnce(&Pipe<'_, 'a>) -> Result<T>,
    ) -> Result<(T, Vec<IndexedPack>)> {
        let (batch_tx, batch_rx) = sync_channel::<Pending>(QUEUED_BATCHES);
        let (answer_tx, answer_rx) = sync_channel::<Answered>(QUEUED_BATCHES);
        let (pack_tx, pack_rx) = sync_channel::<PackBuilder>(QUEUED_PACKS);
        let (batch_rx, answer_rx, pack_rx) = (
            &Mutex::new(batch_rx),
            &Mutex::new(answer_rx),
            &Mutex::new(pack_rx),
        );
        let joined = joiner();
        let chunked = std::thread::scope(|s| {
            let uploaders: Vec<_> = (0..upload_threads(self.store))
                .map(|_| {
                    s.spawn(move || {
                        joined();
                        self.work(pack_rx, |pack| self.write_pack(pack))
                    })
                })
                .collect();
            let compressors: Vec<_> = (0..rayon::current_num_threads())
                .map(|_| {
                    let packs = pack_tx.clone();
                    s.spawn(move || {
                        joined();
                        self.work(answer_rx, |a| self.store_new(a, &packs))
                    })
                })
                .collect();
            let queriers: Vec<_> = (0..query_threads(self.store))
                .map(|_| {
                    let answers = answer_tx.clone();
                    s.spawn(move || {
                        joined();
                        self.work(batch_rx, |b| self.ask(b, &answers))
                    })
                })
                .collect();
            drop(answer_tx);
            let pipe = Pipe {
                sink: self,
                batches: batch_tx,
            };
            let chunked = chunk(&pipe);
            drop(pipe);
            for t in queriers.into_iter().chain(compressors) {
                t.join().expect("a query or compression thread panicked");
            }
            let last = std::mem::take(&mut *self.open.lock().expect("poisoned"));
            if !last.is_empty() && !self.stopped.load(Relaxed) {
                if self.store.backend().stores_in_order() && last.len() <= LAST_PACK_MAX {
                    self.hold_back(last);
                } else {
                    // The pool is still draining: it sends the last pack too.
                    pack_tx.send(last).expect("the upload threads live");
                }
            }
            drop(pack_tx);
            for u in uploaders {
                u.join().expect("an upload thread panicked");
            }
            chunked
        });
        // A pool's error is the cause; a chunking thread's, if none.
        if let Some(e) = self.failed.lock().expect("poisoned").take() {
            return Err(e);
        }
        let chunked = chunked?;
        if self.stopped.load(Relaxed) {
            unreachable!("a stopped pipeline leaves its error");
        }
        let mut packs = std::mem::take(&mut *self.written.lock().expect("poisoned"));
        packs.sort_by_key(|p| p.pack);
        Ok((chunked, packs))
    }

    /// Bytes of packs written.
    pub(super) fn pack_bytes(&self) -> u64 {
        self.pack_bytes.load(Relaxed)
    }

    /// File content's chunks new to the store, and their bytes (manifest
    /// chunks are not counted).
    pub(super) fn new_content(&self) -> (u64, u64) {
        (self.chunks_new.load(Relaxed), self.bytes_new.load(Relaxed))
    }

    /// Records a pool's first error and stops the pools' work.
    fn fail(&self, e: Error) {
        let mut failed = self.failed.lock().expect("poisoned");
        if !self.stopped.swap(true, Relaxed) {
            *failed = Some(e);
        }
    }

    /// A pool thread: works item after item off its queue until the queue
    /// closes; after the first error anywhere, drains it unworked.
    fn work<M>(&self, queue: &Mutex<Receiver<M>>, each: impl Fn(M) -> Result<()>) {
        loop {
            let next = queue.lock().expect("poisoned").recv();
            let Ok(item) = next else { return };
            if self.stopped.load(Relaxed) {
                continue;
            }
            if let Err(e) = each(item) {
                self.fail(e);
            }
        }
    }

    /// A query thread's work: asks the store which chunks of `pending` it
    /// lacks (one query); a batch with any goes on to the compressors, one
    /// without is dropped here (its slot freed).
    fn ask(&self, pending: Pending, answers: &SyncSender<Answered>) -> Result<()> {
        let ids: Vec<ChunkId> = pending.ids.iter().map(|(id, _)| *id).collect();
        let missing = self.store.chunk_lookup().missing(&ids)?;
        if missing.contains(&true) {
            answers
                .send(Answered { pending, missing })
                .expect("the compression threads live");
        }
        Ok(())
    }

    /// A compression thread's work: puts the chunks of an answered batch
    /// that the store lacks and no other file of this persist has claimed
    /// into frames of their own; full packs go to the upload threads.
    fn store_new(&self, answered: Answered, packs: &SyncSender<PackBuilder>) -> Result<()> {
        let Answered { pending, missing } = answered;
        let bytes = pending.bytes();
        let target = self.store.config().frame_target_bytes as usize;
        let mut frame = Gathering::default();
        let mut start = 0usize;
        for ((id, len), missing) in pending.ids.iter().zip(missing) {
            let range = start..start + len;
            start += len;
            if missing && self.added.lock().expect("poisoned").insert(*id) {
                // Manifest chunks are not file content: the report's
                // new-content counts leave them out.
                if pending.content {
                    self.chunks_new.fetch_add(1, Relaxed);
                    self.bytes_new.fetch_add(*len as u64, Relaxed);
                }
                frame.push(*id, range);
                if frame.raw_len >= target {
                    self.seal(std::mem::take(&mut frame), bytes, packs);
                }
            }
        }
        if !frame.chunks.is_empty() {
            self.seal(frame, bytes, packs);
        }
        Ok(())
    }

    /// Compresses a frame of `batch`'s bytes (straight from the batch when
    /// its chunks lie back to back there) and appends it to the open pack;
    /// a full pack goes to the upload threads (waiting while their queue
    /// is full).
    fn seal(&self, frame: Gathering, batch: &[u8], packs: &SyncSender<PackBuilder>) {
        let level = self.store.config().zstd_level;
        let full = SEALER.with(|sealer| {
            let mut sealer = sealer.borrow_mut();
            if sealer.as_ref().is_none_or(|s| s.level != level) {
                *sealer = Some(Sealer {
                    level,
                    compressor: zstd::bulk::Compressor::new(level).expect("valid zstd level"),
                    gathered: Vec::new(),
                    out: Vec::new(),
                });
            }
            let Sealer {
                compressor,
                gathered,
                out,
                ..
            } = sealer.as_mut().expect("set above");
            let raw: &[u8] = match frame.ranges.as_slice() {
                [one] => &batch[one.clone()],
                ranges => {
                    gathered.clear();
                    for r in ranges {
                        gathered.extend_from_slice(&batch[r.clone()]);
                    }
                    gathered
                }
            };
            let compression = compress_frame(raw, compressor, out);
            let stored = match compression {
                Compression::Raw => raw,
                _ => out,
            };
            let mut open = self.open.lock().expect("poisoned");
            open.push_frame(stored, frame.raw_len as u32, compression, frame.chunks);
            (open.len() >= self.store.config().pack_target_bytes as usize)
                .then(|| std::mem::take(&mut *open))
        });
        if let Some(pack) = full {
            packs.send(pack).expect("the upload threads live");
        }
    }

    /// Keeps the last pack for the commit (`take_last_pack`), counted as
    /// written: the index object lists it, and the commit stores it first.
    fn hold_back(&self, pack: PackBuilder) {
        let (id, bytes, frames) = pack.finish();
        self.pack_bytes.fetch_add(bytes.len() as u64, Relaxed);
        let pack = IndexedPack { pack: id, frames };
        self.written.lock().expect("poisoned").push(pack.clone());
        *self.last_pack.lock().expect("poisoned") = Some(LastPack {
            key: pack_key(&id),
            bytes,
            pack,
        });
    }

    /// The last pack, if `run` kept it for the commit to store.
    pub(super) fn take_last_pack(&self) -> Option<LastPack> {
        self.last_pack.lock().expect("poisoned").take()
    }

    fn write_pack(&self, pack: PackBuilder) -> Result<()> {
        let (id, bytes, frames) = pack.finish();
        self.store.backend().put(&pack_key(&id), &bytes)?;
        self.store.chunk_lookup().add_pack(&id, &frames)?;
        self.pack_bytes.fetch_add(bytes.len() as u64, Relaxed);
        self.written
            .lock()
            .expect("poisoned")
            .push(IndexedPack { pack: id, frames });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Condvar;
    use std::time::{Duration, Instant};

    use super::super::feed::BATCH_BUFFER;
    use super::*;
    use crate::backend::{Backend, Memory};
    use crate::format::config::StoreConfig;
    use crate::format::keys::{CONFIG_KEY, PACK_PREFIX};

    const PACK: u32 = 256 << 10;
    const FRAME: u32 = 64 << 10;
    const CHUNK: usize = 16 << 10;
    const UPLOADERS: usize = 2;

    /// A memory store whose pack writes wait while the gate is shut, and
    /// whose `fail_at`-th pack write (from 1) fails.
    #[derive(Debug)]
    struct Gated {
        inner: Memory,
        shut: Mutex<bool>,
        opened: Condvar,
        fail_at: Option<usize>,
        pack_puts: AtomicUsize,
    }

    impl Gated {
        fn new(shut: bool, fail_at: Option<usize>) -> Arc<Gated> {
            let inner = Memory::new();
            let mut config = StoreConfig::new("pipeline".into());
            (config.pack_target_bytes, config.frame_target_bytes) = (PACK, FRAME);
            inner.put(CONFIG_KEY, &config.encode()).unwrap();
            Arc::new(Gated {
                inner,
                shut: Mutex::new(shut),
                opened: Condvar::new(),
                fail_at,
                pack_puts: AtomicUsize::new(0),
            })
        }

        fn open(&self) {
            *self.shut.lock().unwrap() = false;
            self.opened.notify_all();
        }
    }

    impl Backend for Gated {
        fn put(&self, key: &str, data: &[u8]) -> Result<()> {
            if key.starts_with(PACK_PREFIX) {
                let n = self.pack_puts.fetch_add(1, Relaxed) + 1;
                let shut = self.shut.lock().unwrap();
                drop(self.opened.wait_while(shut, |shut| *shut).unwrap());
                if self.fail_at == Some(n) {
                    let e = std::io::Error::other("injected");
                    return Err(Error::io("put", key, e));
                }
            }
            self.inner.put(key, data)
        }
        fn get(&self, key: &str) -> Result<Vec<u8>> {
            self.inner.get(key)
        }
        fn get_ranges(&self, key: &str, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Vec<u8>>> {
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
            "gated".into()
        }
        fn parallelism(&self) -> usize {
            UPLOADERS
        }
    }

    fn store(backend: &Arc<Gated>, dir: &tempfile::TempDir) -> Store {
        Store::shared_for_tests(backend.clone(), &dir.path().join("meta"))
    }

    /// Chunk `i`'s bytes: incompressible, distinct for each `i`.
    fn chunk(i: u64) -> Vec<u8> {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..CHUNK / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect()
    }

    /// Feeds chunks `0..n` through `pipe` (`fed` counts their bytes), then
    /// hands on the last batch.
    fn feed(pipe: &Pipe<'_, '_>, ids: impl Iterator<Item = u64>, fed: &AtomicU64) -> Result<()> {
        let mut pending = Pending::new(true);
        for i in ids {
            let bytes = chunk(i);
            pipe.push(&mut pending, ChunkId::of(&bytes), &bytes)?;
            fed.fetch_add(bytes.len() as u64, Relaxed);
        }
        pipe.submit(&mut pending)
    }

    /// The chunks of `ids` the packs hold, with repeats (a pack also holds
    /// its salt).
    fn stored(packs: &[IndexedPack], ids: &[ChunkId]) -> Vec<ChunkId> {
        let ids: HashSet<&ChunkId> = ids.iter().collect();
        let chunks = packs.iter().flat_map(|p| &p.frames).flat_map(|f| &f.chunks);
        chunks.map(|c| c.id).filter(|id| ids.contains(id)).collect()
    }

    /// Buffers out of `sink`'s pool (being filled, queued or worked on).
    fn buffers_out(sink: &ChunkSink<'_>) -> usize {
        Arc::strong_count(&sink.held) - 1
    }

    #[test]
    fn every_new_chunk_is_stored_once_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Gated::new(false, None);
        let store = store(&backend, &dir);
        let sink = ChunkSink::new(&store);
        let fed = AtomicU64::new(0);
        // 300 distinct chunks, each given twice: by two feeders at once.
        let ((), packs) = sink
            .run(|pipe| {
                std::thread::scope(|s| {
                    let other = s.spawn(|| feed(pipe, 0..300, &fed));
                    feed(pipe, (0..300).rev(), &fed)?;
                    other.join().unwrap()
                })
            })
            .unwrap();
        let ids: Vec<ChunkId> = (0..300).map(|i| ChunkId::of(&chunk(i))).collect();
        let stored = stored(&packs, &ids);
        let distinct: HashSet<ChunkId> = stored.iter().copied().collect();
        assert_eq!((stored.len(), distinct.len()), (300, 300));
        let missing = store.chunk_lookup().missing(&ids).unwrap();
        assert!(missing.iter().all(|m| !m), "every chunk is indexed");
        assert_eq!(sink.new_content(), (300, 300 * CHUNK as u64));
        assert_eq!(backend.pack_puts.load(Relaxed), packs.len());
        assert_eq!(buffers_out(&sink), 0);
    }

    #[test]
    fn chunking_stops_at_the_bound_while_uploads_wait() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Gated::new(true, None);
        let store = store(&backend, &dir);
        let held = 2;
        let sink = ChunkSink::holding(&store, held);
        let fed = AtomicU64::new(0);
        let total = 2_400u64; // 37.5 MiB
        let (stalled, result) = std::thread::scope(|s| {
            let run = s.spawn(|| sink.run(|pipe| feed(pipe, 0..total, &fed)));
            // Wait until the chunking makes no progress for a while.
            let (mut last, mut since) = (u64::MAX, Instant::now());
            let deadline = Instant::now() + Duration::from_secs(60);
            while since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                let now = fed.load(Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                }
            }
            let stalled = (fed.load(Relaxed), buffers_out(&sink));
            backend.open();
            (stalled, run.join().unwrap())
        });
        let (fed_then, buffers_then) = stalled;
        // Packs in memory: the open one, the queued ones, one per upload
        // thread, and one per compression thread waiting to queue its own.
        let packs = 1 + QUEUED_PACKS + UPLOADERS + rayon::current_num_threads();
        let pack_bytes = (PACK + FRAME) as u64 + CHUNK as u64;
        let bound = (held * BATCH_BUFFER) as u64 + packs as u64 * pack_bytes;
        assert!(buffers_then <= held, "{buffers_then} buffers out");
        assert!(
            fed_then <= bound,
            "chunked {fed_then} bytes with no pack written, bound {bound}"
        );
        let ((), written) = result.unwrap();
        let ids: Vec<ChunkId> = (0..total).map(|i| ChunkId::of(&chunk(i))).collect();
        assert_eq!(stored(&written, &ids).len() as u64, total);
    }

    #[test]
    fn an_upload_error_drains_every_stage_and_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let fail_at = 3;
        let backend = Gated::new(false, Some(fail_at));
        let store = store(&backend, &dir);
        let sink = ChunkSink::new(&store);
        let fed = AtomicU64::new(0);
        let total = 2_400u64;
        let err = sink
            .run(|pipe| feed(pipe, 0..total, &fed))
            .expect_err("a pack write failed");
        assert!(err.to_string().contains("injected"), "{err}");
        // After the error no pack is worked on but those already started.
        let puts = backend.pack_puts.load(Relaxed);
        assert!(puts < fail_at + UPLOADERS, "{puts} pack writes");
        assert!(
            fed.load(Relaxed) < total * CHUNK as u64,
            "the chunking stopped"
        );
        assert_eq!(buffers_out(&sink), 0, "every queued batch was dropped");
        // The failed put wrote nothing; uploads already in flight beside it
        // may have landed (a flaky `< fail_at` assumed they had not).
        assert!(sink.written.lock().unwrap().len() < puts);
    }

    #[test]
    fn a_chunking_error_stops_the_pools_and_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Gated::new(false, None);
        let store = store(&backend, &dir);
        let sink = ChunkSink::new(&store);
        let fed = AtomicU64::new(0);
        let err = sink
            .run(|pipe| -> Result<()> {
                feed(pipe, 0..400, &fed)?;
                let e = std::io::Error::other("vanished");
                Err(Error::io("read", "a/file", e))
            })
            .expect_err("the chunking failed");
        assert!(err.to_string().contains("vanished"), "{err}");
        assert_eq!(buffers_out(&sink), 0);
    }
}
