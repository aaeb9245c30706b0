//! Persist: turns paths on disk into a new layer of a job.
//!
//! Steps (docs/architecture.md numbers them the same way):
//! 1. check the run and job exist;
//! 2. scan the paths (`scan`);
//! 3. read, chunk and hash files in parallel, in contiguous batches of
//!    neighbouring files; every few MiB of chunks, ask the store in one
//!    batch which of them it lacks (one round trip to a server); a missing
//!    chunk joins the batch's open frame, which is compressed once it holds
//!    about 1 MiB and appended to the open pack, which is written (and
//!    fsynced, or uploaded) at about 4 MiB;
//! 4. encode the manifest and store its encoding as chunks too (in frames
//!    of their own);
//! 5. write the last pack, then one index object listing the new packs,
//!    then the manifest's root object (the list of its chunks);
//! 6. write the layer ref: only now does the layer become visible.
//!
//! A crash before step 6 leaves unreferenced packs (reclaimed by gc, never
//! seen by attach). This module knows nothing about attach.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Traffic;
use crate::error::{Error, Result};
use crate::format::chunking::{chunk_slice, chunk_stream};
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest, ManifestRoot, Totals};
use crate::format::pack::{FrameBuilder, PackBuilder};
use crate::id::{ChunkId, JobName, ManifestId, RunName};

use crate::format::keys::{index_key, manifest_key, pack_key};
use crate::format::records::LayerRecord;
use crate::repo::Store;
use crate::tree::scan::{scan, ScanKind, Scanned, Tree};

/// What to persist: paths under a root, as a layer of a job.
#[derive(Debug, Clone)]
pub struct PersistRequest {
    /// The run.
    pub run: RunName,
    /// The job.
    pub job: JobName,
    /// Paths are resolved against this directory and must lie inside it.
    pub root: PathBuf,
    /// The paths to persist, relative to `root`.
    pub paths: Vec<PathBuf>,
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
    /// Bytes sent to and received from a networked store.
    pub network: Traffic,
    /// Wall-clock seconds the command took.
    pub seconds: f64,
}

/// Persists `req.paths` as a new layer of `req.job`.
pub fn persist(store: &Store, req: &PersistRequest) -> Result<PersistReport> {
    let started = Instant::now();
    let traffic = store.traffic();
    store.run_job(&req.run, &req.job)?;
    crate::ops::lifecycle::check_live(store, &req.run)?;
    let tree = write_tree(store, &req.root, &req.paths, started)?;
    let record = LayerRecord {
        manifest: tree.manifest,
        created: store.now(),
        totals: tree.totals,
    };
    let layer = store
        .catalog()
        .add_layer(store.backend(), &req.run, &req.job, &record)?;
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
}

/// Steps 2 to 5: scans `paths` under `root` and stores everything but the
/// ref that will name the result (a layer ref, a cache entry). Refuses to
/// finish once the work has taken half the gc grace period, since gc may
/// then collect chunks it chose to reuse before the ref lands
/// (docs/lifecycle.md).
pub(crate) fn write_tree(
    store: &Store,
    root: &std::path::Path,
    paths: &[PathBuf],
    started: Instant,
) -> Result<WrittenTree> {
    let clock_start = store.now();
    let tree = scan(root, paths)?;

    let sink = ChunkSink::new(store);
    let batches: Vec<Vec<Option<FileContent>>> = batches(&tree.entries)
        .into_par_iter()
        .map(|range| sink.add_batch(&tree, &tree.entries[range]))
        .collect::<Result<_>>()?;
    let contents: Vec<Option<FileContent>> = batches.into_iter().flatten().collect();

    let mut chunks = 0;
    let entries = tree
        .entries
        .into_iter()
        .zip(contents)
        .map(|(s, content)| {
            let kind = match (s.kind, content) {
                (ScanKind::Dir, _) => EntryKind::Dir,
                (ScanKind::File { .. }, Some(c)) => {
                    chunks += c.chunks.len() as u64;
                    EntryKind::File {
                        size: c.size,
                        chunks: c.chunks,
                    }
                }
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
        })
        .collect();
    let manifest = Manifest { entries };
    let totals = manifest.totals();
    let (manifest_id, body) = manifest.encode();
    // The manifest's encoding is stored as chunks, like file content, so
    // what it shares with earlier manifests is not stored again.
    let root_obj = sink.add_manifest(&body)?;

    let (packs, mut bytes_written) = sink.finish()?;
    let packs_written = packs.len() as u64;
    if !packs.is_empty() {
        let object = IndexObject { packs };
        let (id, bytes) = object.encode();
        store.backend().put(&index_key(&id), &bytes)?;
        store.chunk_lookup().add(&id, &object)?;
        bytes_written += bytes.len() as u64;
    }
    let key = manifest_key(&manifest_id);
    if !store.backend().exists(&key)? {
        let bytes = root_obj.encode();
        store.backend().put(&key, &bytes)?;
        bytes_written += bytes.len() as u64;
    }
    // A persist must commit within the grace period of its first reuse
    // decision; it checks here, before the ref, against half of it, so the
    // other half covers the moment between this check and the ref's write
    // (and clocks a little apart).
    let grace = store.config().gc_grace_secs;
    let took = (store.now() - clock_start).max(started.elapsed().as_secs() as i64) as u64;
    if store.commit_guard() && took.saturating_mul(2) >= grace {
        return Err(Error::PersistTooSlow {
            seconds: took,
            grace,
        });
    }
    Ok(WrittenTree {
        manifest: manifest_id,
        totals,
        chunks,
        chunks_new: sink.chunks_new.load(Relaxed),
        bytes_new: sink.bytes_new.load(Relaxed),
        bytes_written,
        packs_written,
    })
}

/// A file as read: its size and chunks.
struct FileContent {
    size: u64,
    chunks: Vec<ChunkRef>,
}

thread_local! {
    /// One zstd context per thread, reused for every frame.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
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
        if let ScanKind::File { size } = s.kind {
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

/// Chunks are asked about in batches of about this many bytes.
const PENDING_BYTES: usize = 8 << 20;

/// Chunks read but not yet asked about: their ids and lengths, and their
/// bytes back to back.
#[derive(Default)]
struct Pending {
    ids: Vec<(ChunkId, usize)>,
    bytes: Vec<u8>,
}

impl Pending {
    fn push(&mut self, id: ChunkId, bytes: &[u8]) {
        self.ids.push((id, bytes.len()));
        self.bytes.extend_from_slice(bytes);
    }
}

/// Receives chunks from the parallel readers and keeps the new ones.
struct ChunkSink<'a> {
    store: &'a Store,
    /// Chunks already added by this persist (another file had them).
    added: Mutex<HashSet<ChunkId>>,
    open: Mutex<PackBuilder>,
    written: Mutex<Vec<IndexedPack>>,
    pack_bytes: AtomicU64,
    chunks_new: AtomicU64,
    bytes_new: AtomicU64,
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
        }
    }

    /// Chunks a batch of entries (files get their size as read and chunk
    /// list; other entries `None`), gathering new chunks into frames.
    fn add_batch(&self, tree: &Tree, entries: &[Scanned]) -> Result<Vec<Option<FileContent>>> {
        let mut frame = FrameBuilder::default();
        let mut pending = Pending::default();
        let mut out = Vec::with_capacity(entries.len());
        for s in entries {
            let ScanKind::File { size } = s.kind else {
                out.push(None);
                continue;
            };
            out.push(Some(self.add_file(
                &tree.abs(s),
                size,
                &mut pending,
                &mut frame,
            )?));
        }
        self.flush(&mut pending, &mut frame)?;
        if !frame.is_empty() {
            self.seal(&mut frame)?;
        }
        Ok(out)
    }

    /// Chunks one file; returns its size as read and its chunk list.
    fn add_file(
        &self,
        path: &std::path::Path,
        size_hint: u64,
        pending: &mut Pending,
        frame: &mut FrameBuilder,
    ) -> Result<FileContent> {
        let file = File::open(path).map_err(|e| Error::io("read", path, e))?;
        let mut refs = Vec::with_capacity(1);
        let mut size = 0u64;
        chunk_stream(
            file,
            size_hint,
            self.store.config().chunker,
            &|e| Error::io("read", path, e),
            &mut |id, bytes| {
                size += bytes.len() as u64;
                refs.push(ChunkRef {
                    id,
                    len: bytes.len() as u32,
                });
                pending.push(id, bytes);
                if pending.bytes.len() >= PENDING_BYTES {
                    self.flush(pending, frame)?;
                }
                Ok(())
            },
        )?;
        Ok(FileContent { size, chunks: refs })
    }

    /// Stores a manifest's encoding as chunks in frames of their own (so
    /// reading a manifest reads no file content); returns its root.
    fn add_manifest(&self, body: &[u8]) -> Result<ManifestRoot> {
        let mut frame = FrameBuilder::default();
        let mut pending = Pending::default();
        let mut chunks = Vec::new();
        chunk_slice(
            body,
            self.store.config().manifest_chunker,
            &mut |id, bytes| {
                chunks.push(ChunkRef {
                    id,
                    len: bytes.len() as u32,
                });
                pending.push(id, bytes);
                Ok(())
            },
        )?;
        // Manifest chunks are not file content: keep them out of the
        // report's new-content counts.
        let (chunks_new, bytes_new) = (self.chunks_new.load(Relaxed), self.bytes_new.load(Relaxed));
        self.flush(&mut pending, &mut frame)?;
        self.chunks_new.store(chunks_new, Relaxed);
        self.bytes_new.store(bytes_new, Relaxed);
        if !frame.is_empty() {
            self.seal(&mut frame)?;
        }
        Ok(ManifestRoot {
            len: body.len() as u64,
            chunks,
        })
    }

    /// Asks the store which pending chunks it lacks (one batch) and puts
    /// those no other file of this persist has claimed into the frame.
    fn flush(&self, pending: &mut Pending, frame: &mut FrameBuilder) -> Result<()> {
        if pending.ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<ChunkId> = pending.ids.iter().map(|(id, _)| *id).collect();
        let missing = self.store.chunk_lookup().missing(&ids)?;
        let mut start = 0usize;
        for ((id, len), missing) in pending.ids.iter().zip(missing) {
            let bytes = &pending.bytes[start..start + len];
            start += len;
            if missing && self.added.lock().expect("poisoned").insert(*id) {
                self.chunks_new.fetch_add(1, Relaxed);
                self.bytes_new.fetch_add(bytes.len() as u64, Relaxed);
                frame.push(*id, bytes);
                if frame.raw_len() >= self.store.config().frame_target_bytes as usize {
                    self.seal(frame)?;
                }
            }
        }
        pending.ids.clear();
        pending.bytes.clear();
        Ok(())
    }

    /// Compresses the frame and appends it to the open pack.
    fn seal(&self, frame: &mut FrameBuilder) -> Result<()> {
        let level = self.store.config().zstd_level;
        let sealed = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != level) {
                *c = Some((
                    level,
                    zstd::bulk::Compressor::new(level).expect("valid zstd level"),
                ));
            }
            frame.seal(&mut c.as_mut().expect("set above").1)
        });
        let full = {
            let mut open = self.open.lock().expect("poisoned");
            open.push(sealed);
            if open.len() >= self.store.config().pack_target_bytes as usize {
                Some(std::mem::take(&mut *open))
            } else {
                None
            }
        };
        // Hashing and writing a full pack happens outside the lock, so the
        // other threads keep chunking meanwhile.
        match full {
            Some(pack) => self.write_pack(pack),
            None => Ok(()),
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

    /// Writes the last pack; returns every pack written and their bytes.
    fn finish(&self) -> Result<(Vec<IndexedPack>, u64)> {
        let last = std::mem::take(&mut *self.open.lock().expect("poisoned"));
        if !last.is_empty() {
            self.write_pack(last)?;
        }
        let mut packs = std::mem::take(&mut *self.written.lock().expect("poisoned"));
        packs.sort_by_key(|p| p.pack);
        Ok((packs, self.pack_bytes.load(Relaxed)))
    }
}
