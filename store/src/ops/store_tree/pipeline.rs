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
}

/// A batch the store has answered about: which of its chunks it lacks.
struct Answered {
    pending: Pending,
    missing: Vec<bool>,
}

impl<'a> ChunkSink<'a> {
    pub(super) fn new(store: &'a Store) -> Self {
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
            held: Buffers::new(BATCHES_HELD),
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
        let chunked = std::thread::scope(|s| {
            let uploaders: Vec<_> = (0..upload_threads(self.store))
                .map(|_| s.spawn(move || self.work(pack_rx, |pack| self.write_pack(pack))))
                .collect();
            let compressors: Vec<_> = (0..rayon::current_num_threads())
                .map(|_| {
                    let packs = pack_tx.clone();
                    s.spawn(move || self.work(answer_rx, |a| self.store_new(a, &packs)))
                })
                .collect();
            let queriers: Vec<_> = (0..query_threads(self.store))
                .map(|_| {
                    let answers = answer_tx.clone();
                    s.spawn(move || self.work(batch_rx, |b| self.ask(b, &answers)))
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
                // The pool is still draining: it sends the last pack too.
                pack_tx.send(last).expect("the upload threads live");
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
