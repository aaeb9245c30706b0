//! Persist: turns paths on disk into a new layer of a job.
//!
//! Steps (docs/architecture.md numbers them the same way):
//! 1. read the run record and list the run's keys at once (one round
//!    trip): the job exists, the run has not expired, and the new layer's
//!    sequence number;
//! 2. scan the paths (`scan`);
//! 3. skip the files the runner's stat cache knows unchanged
//!    (`tree::stat_cache`) whose chunks the store still holds (their
//!    chunk lists are reused, one batched query for all of them); read,
//!    chunk and hash the other files in parallel, in contiguous batches of
//!    neighbouring files. The chunking threads never wait on the store:
//!    each batch of chunks (a few MiB) is handed to a pool of query
//!    threads, which ask the store which of them it lacks (several
//!    queries in flight), put the new ones into frames (compressed at
//!    about 2 MiB) and the frames into the open pack; a full pack (about
//!    4 MiB) goes to a pool of upload threads, several in flight.
//!    Bounded queues between the pools bound the memory (docs/protocol.md
//!    "Pipelined persist");
//! 4. encode the manifest and store its encoding as chunks too (in frames
//!    of their own);
//! 5. write the last pack; then the index object listing the new packs and
//!    the manifest's root object, at once (one round trip);
//! 6. write the layer ref (one round trip): only now does the layer become
//!    visible.
//!
//! After step 5 the stat cache remembers every file read, with the stat
//! the scan took. A crash before step 6 leaves unreferenced packs
//! (reclaimed by gc, never seen by attach). This module knows nothing
//! about attach.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Traffic;
use crate::error::{Error, Result};
use crate::format::chunking::{chunk_slice, cut_window};
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest, ManifestRoot, Totals};
use crate::format::pack::{compress_frame, Compression, FrameChunk, PackBuilder};
use crate::id::{ChunkId, JobName, ManifestId, RunName};

use crate::format::keys::{index_key, index_log_key, manifest_key, pack_key};
use crate::format::records::{LayerRecord, Writer};
use crate::meta::catalog::Catalog;
use crate::repo::{Progress, Store};
use crate::tree::scan::{scan, ScanKind, Scanned, Tree, Walked};
use crate::tree::stat_cache::{FileStat, StatCache};
use crate::util::{Buffer, Buffers};

/// What to persist: paths under a root, as a layer of a job.
#[derive(Debug, Clone)]
pub struct PersistRequest {
    /// The run.
    pub run: RunName,
    /// The job.
    pub job: JobName,
    /// Paths are resolved against this directory and must lie inside it.
    pub root: PathBuf,
    /// The paths to persist, relative to `root`: paths, globs
    /// (`dist/**/*.js`) and exclusions (`!dist/**/*.map`).
    pub paths: Vec<PathBuf>,
    /// Whether a glob that matches nothing is fine (else an error).
    pub allow_empty: bool,
    /// Inside a CI, which leg and attempt of the job writes (`ci`).
    pub writer: Option<Writer>,
}

/// What a persist did.
#[derive(Debug, Clone, Serialize)]
pub struct PersistReport {
    /// The run.
    pub run: RunName,
    /// The job.
    pub job: JobName,
    /// The layer ref's key.
    pub layer: String,
    /// The layer's manifest.
    pub manifest: ManifestId,
    /// What the tree holds.
    pub totals: Totals,
    /// Chunks referenced by the layer (with repeats within it).
    pub chunks: u64,
    /// Chunks the store did not have, and their uncompressed bytes.
    pub chunks_new: u64,
    /// Bytes of chunks the store did not have before.
    pub bytes_new: u64,
    /// Bytes of file content found already in the store.
    pub bytes_reused: u64,
    /// Bytes written to the store: packs, index and manifest.
    pub bytes_written: u64,
    /// Packs uploaded.
    pub packs_written: u64,
    /// Files read (chunked and hashed).
    pub files_read: u64,
    /// Files not read: their stat was what the runner's stat cache
    /// remembered, and the store still held their chunks.
    pub files_unchanged: u64,
    /// Bytes sent to and received from a networked store.
    pub network: Traffic,
    /// Wall-clock seconds the command took.
    pub seconds: f64,
}

/// Persists `req.paths` as a new layer of `req.job`.
pub fn persist(store: &Store, req: &PersistRequest) -> Result<PersistReport> {
    let started = Instant::now();
    let traffic = store.traffic();
    // The run's checks wait a round trip on a networked store: scan the
    // tree meanwhile (it reads only the runner's disk). A bad run is still
    // reported before a bad path.
    let (checked, scanned) = std::thread::scope(|s| {
        let scanned = s.spawn(|| scan(&req.root, &req.paths, req.allow_empty));
        let checked = store.run_with_keys(&req.run);
        (checked, scanned.join().expect("scanning panicked"))
    });
    let (record, keys) = checked?;
    crate::repo::job_index(&req.run, &record, &req.job)?;
    crate::ops::lifecycle::check_live_among(store, &req.run, &record, &keys)?;
    // Two persists of one job run one after another, so the listing made
    // before this one's work still holds its highest layer; two racing
    // ones would take the same number, and their nonces order them.
    let seq = Catalog::next_seq(&req.run, &req.job, &keys);
    let tree = write_tree(store, scanned?, started)?;
    let record = LayerRecord {
        manifest: tree.manifest,
        created: store.now(),
        totals: tree.totals,
        writer: req.writer.clone(),
    };
    let layer = store
        .catalog()
        .add_layer(store.backend(), &req.run, &req.job, seq, &record)?;
    store.flush()?;
    Ok(PersistReport {
        run: req.run.clone(),
        job: req.job.clone(),
        layer: layer.key,
        manifest: tree.manifest,
        totals: tree.totals,
        chunks: tree.chunks,
        chunks_new: tree.chunks_new,
        bytes_new: tree.bytes_new,
        bytes_reused: tree.totals.bytes.saturating_sub(tree.bytes_new),
        bytes_written: tree.bytes_written,
        packs_written: tree.packs_written,
        files_read: tree.files_read,
        files_unchanged: tree.files_unchanged,
        network: store.traffic().since(traffic),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A tree stored: its manifest and what storing it cost.
#[derive(Debug, Clone)]
pub(crate) struct WrittenTree {
    pub manifest: ManifestId,
    pub totals: Totals,
    pub chunks: u64,
    pub chunks_new: u64,
    pub bytes_new: u64,
    pub bytes_written: u64,
    pub packs_written: u64,
    pub files_read: u64,
    pub files_unchanged: u64,
}

/// Steps 4 and 5: stores the scanned `tree`, everything but the ref that
/// will name the result (a layer ref, a cache entry). Refuses to
/// finish once the work has taken half the gc grace period, since gc may
/// then collect chunks it chose to reuse before the ref lands
/// (docs/lifecycle.md).
pub(crate) fn write_tree(store: &Store, tree: Tree, started: Instant) -> Result<WrittenTree> {
    let clock_start = store.now();
    // After the clock starts: reusing a cached file's chunks is a reuse
    // decision like any other, within the commit guard. The cache is not
    // held while the files are read and stored (read again to update it).
    let cache_at = store
        .stat_cache()
        .map(|(dir, trust)| (dir.to_path_buf(), trust));
    let (root, scanned_at) = (tree.root.clone(), tree.scanned_at);
    let walked = tree.walked.clone();
    let open_cache = |dir: &std::path::Path| StatCache::open(dir, &store.config().store_id, &root);
    let unchanged = match &cache_at {
        Some((dir, true)) => match open_cache(dir) {
            cache if cache.is_empty() => vec![None; tree.entries.len()],
            cache => unchanged_files(store, &tree, cache)?,
        },
        _ => vec![None; tree.entries.len()],
    };
    let files_unchanged = unchanged.iter().filter(|u| u.is_some()).count() as u64;
    let files = tree
        .entries
        .iter()
        .filter(|s| matches!(s.kind, ScanKind::File { .. }))
        .count() as u64;

    let sink = ChunkSink::new(store);
    let size = |s: &Scanned| match s.kind {
        ScanKind::File { size, .. } => size,
        _ => 0,
    };
    let total_bytes: u64 = tree.entries.iter().map(size).sum();
    // Bytes to read: a large persist yields the CPU to small jobs.
    let to_read: u64 = tree
        .entries
        .iter()
        .zip(&unchanged)
        .filter(|(_, u)| u.is_none())
        .map(|(s, _)| size(s))
        .sum();
    crate::util::yield_to_small_jobs(to_read);
    let done_bytes = AtomicU64::new(0);
    let observer = store.observer();
    let ((manifest, manifest_id, root_obj, file_stats), packs) = sink.run(|pipe| {
        // Each batch takes its files' known chunk lists (moved, not copied).
        let ranges = batches(&tree.entries);
        let mut known = unchanged.into_iter();
        let known: Vec<Vec<Option<Vec<ChunkRef>>>> = ranges
            .iter()
            .map(|r| known.by_ref().take(r.len()).collect())
            .collect();
        let contents: Vec<Vec<Option<FileContent>>> = ranges
            .into_par_iter()
            .zip(known)
            .map(|(range, known)| {
                let batch = &tree.entries[range];
                let content = pipe.add_batch(&tree, batch, known)?;
                let read: u64 = batch.iter().map(size).sum();
                observer.progress(&Progress {
                    command: "persist",
                    done_bytes: done_bytes.fetch_add(read, Relaxed) + read,
                    total_bytes,
                });
                Ok(content)
            })
            .collect::<Result<_>>()?;
        // The scanned entries become the manifest's (their paths moved,
        // not copied); the stat cache keeps each file's stat.
        let mut file_stats = Vec::new();
        let entries: Vec<Entry> = tree
            .entries
            .into_iter()
            .zip(contents.into_iter().flatten())
            .map(|(s, content)| {
                if let ScanKind::File { stat, .. } = s.kind {
                    file_stats.push(stat);
                }
                entry_of(s, content)
            })
            .collect();
        let manifest = Manifest { entries };
        let (manifest_id, body) = manifest.encode();
        // The manifest's encoding is stored as chunks, like file content,
        // so what it shares with earlier manifests is not stored again.
        let root_obj = pipe.add_manifest(&body)?;
        Ok((manifest, manifest_id, root_obj, file_stats))
    })?;
    let chunks = manifest
        .entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::File { chunks, .. } => chunks.len() as u64,
            _ => 0,
        })
        .sum();
    let totals = manifest.totals();

    // The index object and the manifest root at once (one round trip):
    // both name only what is stored already, and nothing names them until
    // the ref is written.
    let packs_written = packs.len() as u64;
    let index = (!packs.is_empty()).then(|| {
        let object = IndexObject { packs };
        let (id, bytes) = object.encode();
        (id, bytes, object)
    });
    let root_bytes = root_obj.encode();
    let (indexed, rooted) = std::thread::scope(|s| {
        let indexed = index.as_ref().map(|(id, bytes, object)| {
            s.spawn(move || {
                // Only within half the grace period of the start, like the
                // ref below: an index object never lists a pack gc deleted
                // before it was written (docs/format.md, the index log).
                commit_guard(store, clock_start, started)?;
                let key = match store.config().has_index_log() {
                    true => index_log_key(id, store.now()),
                    false => index_key(id),
                };
                store.backend().put(&key, bytes)?;
                store.chunk_lookup().add(id, object)
            })
        });
        // Content-addressed, so writing it again when the store has it is
        // harmless, and cheaper than asking first.
        let rooted = store
            .backend()
            .put(&manifest_key(&manifest_id), &root_bytes);
        let indexed = indexed.map(|h| h.join().expect("writing the index panicked"));
        (indexed, rooted)
    });
    indexed.transpose()?;
    rooted?;
    let bytes_written = sink.pack_bytes.load(Relaxed)
        + root_bytes.len() as u64
        + index.as_ref().map_or(0, |(_, bytes, _)| bytes.len() as u64);
    let (chunks_new, bytes_new) = (sink.chunks_new.load(Relaxed), sink.bytes_new.load(Relaxed));
    // What the stat cache is built in: the index (a few words a chunk) and
    // the set of chunks added are not needed any more.
    drop((index, sink));

    commit_guard(store, clock_start, started)?;
    if let Some((dir, _)) = &cache_at {
        // What the tree covers is recorded again: only the rest is loaded.
        let store_id = &store.config().store_id;
        let skip = |rel: &[u8]| covered(&manifest, &walked, rel);
        let mut cache = StatCache::open_except(dir, store_id, &root, skip);
        remember(&mut cache, manifest, file_stats, scanned_at);
        // A cache that cannot be written costs the next run its reads,
        // not this persist its layer.
        let _ = cache.save();
    }
    Ok(WrittenTree {
        manifest: manifest_id,
        totals,
        chunks,
        chunks_new,
        bytes_new,
        bytes_written,
        packs_written,
        files_read: files - files_unchanged,
        files_unchanged,
    })
}

/// For each scanned entry, the chunks of a file the stat cache knows
/// unchanged and whose every chunk the store holds (asked in batches, in
/// parallel): those files are not read. `None` for the rest. The chunk
/// lists are taken out of the cache, not copied.
fn unchanged_files(
    store: &Store,
    tree: &Tree,
    mut cache: StatCache,
) -> Result<Vec<Option<Vec<ChunkRef>>>> {
    let mut known: Vec<Option<Vec<ChunkRef>>> = tree
        .entries
        .iter()
        .map(|s| match &s.kind {
            ScanKind::File { stat, .. } => cache.take(s.rel.as_bytes(), stat),
            _ => None,
        })
        .collect();
    drop(cache);
    let mut ids: Vec<ChunkId> = known.iter().flatten().flatten().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    const ASK: usize = 8192;
    let threads = query_threads(store);
    let lookup = store.chunk_lookup();
    let answers: Vec<Vec<bool>> = std::thread::scope(|s| {
        let mut out = Vec::new();
        for group in ids.chunks(ASK * threads) {
            let asked: Vec<_> = group
                .chunks(ASK)
                .map(|part| s.spawn(move || lookup.missing(part)))
                .collect();
            for a in asked {
                out.push(a.join().expect("a chunk query panicked")?);
            }
        }
        Ok::<_, Error>(out)
    })?;
    let missing: HashSet<ChunkId> = ids
        .iter()
        .zip(answers.into_iter().flatten())
        .filter(|(_, m)| *m)
        .map(|(id, _)| *id)
        .collect();
    if !missing.is_empty() {
        for k in &mut known {
            if k.as_ref()
                .is_some_and(|c| c.iter().any(|c| missing.contains(&c.id)))
            {
                *k = None;
            }
        }
    }
    Ok(known)
}

/// Whether the stat cache's entry at `rel` is one this persist replaces:
/// a file of the manifest, or anything in a directory the scan walked
/// whole (found again, or deleted since). The directories between the
/// root and a given path are in the manifest but were not walked: what
/// else they hold is kept.
fn covered(manifest: &Manifest, walked: &Walked, rel: &[u8]) -> bool {
    let file = manifest
        .entries
        .binary_search_by(|e| e.path.as_bytes().cmp(rel))
        .is_ok_and(|i| !manifest.entries[i].is_dir());
    file || walked.holds(rel)
}

/// Records every file of the tree in `cache` (opened without what the
/// tree covers) with the stat the scan took (`file_stats`, one per file
/// in manifest order, taken at `scanned_at`) and the chunks the manifest
/// gives it. Takes the manifest's paths and chunk lists rather than
/// copying them: at a million files, a copy is hundreds of MiB.
fn remember(
    cache: &mut StatCache,
    manifest: Manifest,
    file_stats: Vec<FileStat>,
    scanned_at: i128,
) {
    cache.reserve_for(file_stats.len());
    let mut stats = file_stats.into_iter();
    for e in manifest.entries {
        if let EntryKind::File { chunks, .. } = e.kind {
            let stat = stats.next().expect("one stat per file");
            cache.record(e.path.into(), stat, chunks, scanned_at);
        }
    }
}

/// A persist must commit within the grace period of its first reuse
/// decision; it checks before the ref (and before the index object) against
/// half of it, so the other half covers the moment between this check and
/// the write (and clocks a little apart).
fn commit_guard(store: &Store, clock_start: i64, started: Instant) -> Result<()> {
    let grace = store.config().gc_grace_secs;
    let took = (store.now() - clock_start).max(started.elapsed().as_secs() as i64) as u64;
    if store.commit_guard() && took.saturating_mul(2) >= grace {
        return Err(Error::PersistTooSlow {
            seconds: took,
            grace,
        });
    }
    Ok(())
}

/// A manifest entry from a scanned one and, for a file, its content.
fn entry_of(s: Scanned, content: Option<FileContent>) -> Entry {
    let kind = match (s.kind, content) {
        (ScanKind::Dir, _) => EntryKind::Dir,
        (ScanKind::File { .. }, Some(c)) => EntryKind::File {
            size: c.size,
            chunks: c.chunks,
        },
        (ScanKind::Symlink { target }, _) => EntryKind::Symlink { target },
        (ScanKind::Hardlink { target }, _) => EntryKind::Hardlink { target },
        (ScanKind::File { .. }, None) => unreachable!("files always have content"),
    };
    Entry {
        path: s.rel,
        mode: s.mode,
        mtime: s.mtime,
        kind,
    }
}

/// A file as read: its size and chunks.
struct FileContent {
    size: u64,
    chunks: Vec<ChunkRef>,
}

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

/// A batch closes once its files hold this many bytes, or this many files.
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_FILES: usize = 1024;

/// Splits the scanned entries into contiguous ranges of similar work, so
/// each range is chunked by one thread and its new chunks share frames.
fn batches(scanned: &[Scanned]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes, mut files) = (0, 0u64, 0usize);
    for (i, s) in scanned.iter().enumerate() {
        if let ScanKind::File { size, .. } = s.kind {
            bytes += size;
            files += 1;
        }
        if bytes >= BATCH_BYTES || files >= BATCH_FILES {
            out.push(start..i + 1);
            (start, bytes, files) = (i + 1, 0, 0);
        }
    }
    if start < scanned.len() {
        out.push(start..scanned.len());
    }
    out
}

/// A batch's buffer holds this many bytes of chunks: files are read
/// straight into it, and a file that fits is read whole in one call.
const BATCH_BUFFER: usize = 5 << 20;

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
fn query_threads(store: &Store) -> usize {
    store.chunk_lookup().in_flight().max(1)
}
fn upload_threads(store: &Store) -> usize {
    store.backend().parallelism().clamp(1, 4)
}

/// Chunks read but not yet asked about: their ids and lengths, and their
/// bytes back to back at the front of a buffer.
struct Pending {
    ids: Vec<(ChunkId, usize)>,
    /// One of the `BATCHES_HELD` buffers, taken at the first read.
    buf: Option<Buffer>,
    /// How much of the buffer the chunks cover (`bytes[..used]`).
    used: usize,
    /// File content (counted in the report), or a manifest's encoding.
    content: bool,
}

impl Pending {
    fn new(content: bool) -> Self {
        Self {
            content,
            ids: Vec::new(),
            buf: None,
            used: 0,
        }
    }

    /// The chunks' bytes, back to back.
    fn bytes(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.bytes[..self.used])
    }
}

/// Writes `bytes` into `buf` at `at`. What lies past them is left as it
/// was: a buffer's memory is set once (it is reused, batch after batch),
/// not again at every batch.
fn put(buf: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[at..end].copy_from_slice(bytes);
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
struct ChunkSink<'a> {
    store: &'a Store,
    /// Chunks already added by this persist (another file had them).
    added: Mutex<HashSet<ChunkId>>,
    open: Mutex<PackBuilder>,
    written: Mutex<Vec<IndexedPack>>,
    pack_bytes: AtomicU64,
    chunks_new: AtomicU64,
    bytes_new: AtomicU64,
    /// The first error of a query or upload thread, until a chunking
    /// thread takes it to stop the others.
    failed: Mutex<Option<Error>>,
    /// Set at the first error: the pools drain their queues unworked.
    stopped: AtomicBool,
    /// The batches' buffers, at most `BATCHES_HELD`.
    held: Arc<Buffers>,
}

/// A batch the store has answered about: which of its chunks it lacks.
struct Answered {
    pending: Pending,
    missing: Vec<bool>,
}

/// What the chunking threads hand their chunks to (`ChunkSink::run`).
struct Pipe<'s, 'a> {
    sink: &'s ChunkSink<'a>,
    batches: SyncSender<Pending>,
}

impl<'a> ChunkSink<'a> {
    fn new(store: &'a Store) -> Self {
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
    fn run<T>(
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

impl Pipe<'_, '_> {
    /// Hands `pending` to the query threads (waiting while their queue is
    /// full); after a pool's error, returns that error instead, so the
    /// chunking stops.
    fn submit(&self, pending: &mut Pending) -> Result<()> {
        if let Some(e) = self.sink.failed.lock().expect("poisoned").take() {
            return Err(e);
        }
        if pending.ids.is_empty() || self.sink.stopped.load(Relaxed) {
            // Nothing to ask about (or no one to ask): the buffer, if
            // any, is kept for the next chunks.
            pending.ids.clear();
            pending.used = 0;
            return Ok(());
        }
        let next = Pending::new(pending.content);
        self.batches
            .send(std::mem::replace(pending, next))
            .expect("the query threads live");
        Ok(())
    }

    /// The batch's buffer, first waiting for one if it has none.
    fn hold<'p>(&self, pending: &'p mut Pending) -> &'p mut Vec<u8> {
        &mut pending
            .buf
            .get_or_insert_with(|| self.sink.held.take())
            .bytes
    }

    /// Adds a chunk to `pending` (a copy of its bytes), handing a full
    /// batch on first.
    fn push(&self, pending: &mut Pending, id: ChunkId, bytes: &[u8]) -> Result<()> {
        if pending.used + bytes.len() > BATCH_BUFFER {
            self.submit(pending)?;
        }
        let used = pending.used;
        put(self.hold(pending), used, bytes);
        pending.used += bytes.len();
        pending.ids.push((id, bytes.len()));
        Ok(())
    }

    /// Chunks a batch of entries (files get their size as read and chunk
    /// list; other entries `None`), handing the chunks on as it goes. A
    /// file `unchanged` gives chunks for is not read.
    fn add_batch(
        &self,
        tree: &Tree,
        entries: &[Scanned],
        unchanged: Vec<Option<Vec<ChunkRef>>>,
    ) -> Result<Vec<Option<FileContent>>> {
        let mut pending = Pending::new(true);
        let mut out = Vec::with_capacity(entries.len());
        let mut opener = tree.opener();
        for (s, known) in entries.iter().zip(unchanged) {
            let ScanKind::File { size, .. } = s.kind else {
                out.push(None);
                continue;
            };
            if let Some(chunks) = known {
                out.push(Some(FileContent { size, chunks }));
                continue;
            }
            let file = opener
                .open(s)
                .map_err(|e| Error::io("read", tree.abs(s), e))?;
            let path = || tree.abs(s);
            out.push(Some(self.add_file(file, &path, size, &mut pending)?));
        }
        self.submit(&mut pending)?;
        Ok(out)
    }

    /// Chunks one file (`path` names it in errors), read straight into the
    /// batch's buffer; returns its size as read and its chunk list. A file
    /// that fits what the batch has left is read in one call (a file that
    /// would fit an empty batch starts one); a larger one is read a buffer
    /// at a time, each full batch handed on and its uncut end carried into
    /// the next.
    ///
    /// The file is read to its end: a read that returns less than asked
    /// for once the scanned size is reached is taken as the end (what
    /// Linux does for regular files), else a read that returns nothing.
    fn add_file(
        &self,
        mut file: File,
        path: &dyn Fn() -> PathBuf,
        size_hint: u64,
        pending: &mut Pending,
    ) -> Result<FileContent> {
        let read_error = |e| Error::io("read", path(), e);
        let params = self.sink.store.config().chunker;
        let whole = usize::try_from(size_hint)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        if pending.used + whole > BATCH_BUFFER && whole <= BATCH_BUFFER {
            self.submit(pending)?;
        }
        let mut refs = Vec::with_capacity(1);
        let mut read = 0u64;
        // The file's uncut bytes are `start..filled` of the buffer.
        let (mut start, mut filled) = (pending.used, pending.used);
        let mut carried = Vec::new();
        loop {
            if filled == BATCH_BUFFER {
                // Full: the cut chunks go on; the uncut end (less than a
                // chunk's maximum) begins the next batch.
                let buf = self.hold(pending);
                carried.clear();
                carried.extend_from_slice(&buf[start..filled]);
                self.submit(pending)?;
                put(self.hold(pending), 0, &carried);
                (start, filled) = (0, carried.len());
            }
            // Up to one byte past the scanned size, so that the read that
            // reaches it sees the end; past it, as much as fits.
            let limit = match usize::try_from(size_hint - read.min(size_hint)) {
                Ok(left) if read < size_hint => BATCH_BUFFER.min(filled.saturating_add(left + 1)),
                _ => BATCH_BUFFER,
            };
            let buf = self.hold(pending);
            if buf.len() < limit {
                buf.resize(limit, 0);
            }
            let n = loop {
                match file.read(&mut buf[filled..limit]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(e)),
                }
            };
            filled += n;
            read += n as u64;
            let eof = n == 0 || (filled < limit && read >= size_hint);
            let ids = &mut pending.ids;
            let window = &pending.buf.as_ref().expect("held above").bytes[start..filled];
            start += cut_window(window, eof, params, &mut |id, bytes| {
                ids.push((id, bytes.len()));
                refs.push(ChunkRef {
                    id,
                    len: bytes.len() as u32,
                });
                Ok(())
            })?;
            pending.used = start;
            if eof {
                return Ok(FileContent {
                    size: read,
                    chunks: refs,
                });
            }
        }
    }

    /// Stores a manifest's encoding as chunks in frames of their own (so
    /// reading a manifest reads no file content); returns its root.
    fn add_manifest(&self, body: &[u8]) -> Result<ManifestRoot> {
        let mut pending = Pending::new(false);
        let mut chunks = Vec::new();
        chunk_slice(
            body,
            self.sink.store.config().manifest_chunker,
            &mut |id, bytes| {
                chunks.push(ChunkRef {
                    id,
                    len: bytes.len() as u32,
                });
                self.push(&mut pending, id, bytes)
            },
        )?;
        self.submit(&mut pending)?;
        Ok(ManifestRoot {
            len: body.len() as u64,
            chunks,
        })
    }
}
