//! The manifest of a tree being stored, written as its batches finish
//! (issue 29): each batch's entries, in the tree's order, are encoded into
//! version 2 frames (`FrameWriter`), the encoding hashed (its id is its
//! BLAKE3) and cut into chunks as it grows, the chunks handed to the
//! pipeline like a file's; the totals and the count of chunk references
//! are summed as it goes, and each file is spilled to the stat cache's
//! record file (`stat_cache::Spill`) for the save that follows. What is
//! held is the frame being filled and the encoding's uncut end, not the
//! manifest: the bytes and the root are those `Manifest::encode` and
//! `Pipe::add_manifest` give for the same entries.
//!
//! This module knows entries, frames and the pipeline's `Pipe`; not how
//! the batches were read, nor when a stat is trusted.

use std::collections::HashSet;

use crate::error::Result;
use crate::format::chunking::cut_window;
use crate::format::manifest::{ChunkRef, Entry, EntryKind, ManifestRoot, Totals};
use crate::format::manifest_frames::FrameWriter;
use crate::id::ManifestId;
use crate::tree::scan::{ScanKind, Scanned, Walked};
use crate::tree::stat_cache::{Record, Spill};

use super::feed::{FileContent, Pending, Pipe};

/// The stat cache's side of a manifest being written: every file spilled
/// as a record, and the paths of the files no walked directory holds
/// (with the walked directories, what the save replaces).
pub(super) struct Records {
    pub spill: Spill,
    pub outside: HashSet<Vec<u8>>,
}

/// A manifest being written (see the module's doc).
pub(super) struct ManifestOut<'w> {
    frames: FrameWriter,
    /// The paths the tree's hardlinks name: those files are written as
    /// linked.
    linked: HashSet<Vec<u8>>,
    hasher: blake3::Hasher,
    len: u64,
    /// Encoded bytes not yet cut into chunks.
    uncut: Vec<u8>,
    pending: Pending,
    root: Vec<ChunkRef>,
    totals: Totals,
    chunk_refs: u64,
    /// `None` without a stat cache, or once spilling failed (a cache that
    /// cannot be written costs the next run its reads, not this command
    /// its result).
    records: Option<Records>,
    walked: &'w Walked,
}

/// A manifest written: its id, root, totals, and the chunk references of
/// its files (with repeats).
pub(super) struct Written {
    pub id: ManifestId,
    pub root: ManifestRoot,
    pub totals: Totals,
    pub chunk_refs: u64,
    pub records: Option<Records>,
}

impl<'w> ManifestOut<'w> {
    /// A manifest of a tree whose entries (all of them, sorted) are
    /// `entries`; the files are spilled to `spill` if given.
    pub(super) fn new(entries: &[Scanned], walked: &'w Walked, spill: Option<Spill>) -> Self {
        let linked = entries
            .iter()
            .filter_map(|s| match &s.kind {
                ScanKind::Hardlink { target } => Some(target.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        ManifestOut {
            frames: FrameWriter::new(),
            linked,
            hasher: blake3::Hasher::new(),
            len: 0,
            uncut: Vec::new(),
            pending: Pending::new(false),
            root: Vec::new(),
            totals: Totals::default(),
            chunk_refs: 0,
            records: spill.map(|spill| Records {
                spill,
                outside: HashSet::new(),
            }),
            walked,
        }
    }

    /// Adds the next batch's entries (taken: their paths and chunk lists
    /// are freed once encoded) and stores what of the encoding is whole.
    pub(super) fn add(
        &mut self,
        pipe: &Pipe<'_, '_>,
        batch: Vec<Scanned>,
        contents: Vec<Option<FileContent>>,
    ) -> Result<()> {
        for (s, content) in batch.into_iter().zip(contents) {
            let stat = match &s.kind {
                ScanKind::File { stat, .. } => Some(*stat),
                _ => None,
            };
            let e = entry_of(s, content);
            self.totals.count(&e.kind);
            if let (EntryKind::File { chunks, .. }, Some(stat)) = (&e.kind, stat) {
                self.chunk_refs += chunks.len() as u64;
                self.record(&e, stat, chunks);
            }
            if !e.is_dir() {
                self.outside(&e);
            }
            let linked = e.is_file() && self.linked.contains(e.path.as_bytes());
            self.frames.push(&e, linked);
        }
        let whole = self.frames.take();
        self.feed(pipe, &whole, false)
    }

    /// Spills a file for the stat cache; drops the spill at its first
    /// error.
    fn record(&mut self, e: &Entry, stat: crate::tree::stat_cache::FileStat, chunks: &[ChunkRef]) {
        let Some(records) = &mut self.records else {
            return;
        };
        let rel = e.path.as_bytes();
        let r = Record { rel, stat, chunks };
        if records.spill.push(r).is_err() {
            self.records = None;
        }
    }

    /// Names a file, link or hardlink no walked directory holds: the stat
    /// cache's entry at its path is replaced too.
    fn outside(&mut self, e: &Entry) {
        let rel = e.path.as_bytes();
        if let Some(records) = &mut self.records {
            if !self.walked.holds(rel) {
                records.outside.insert(rel.to_vec());
            }
        }
    }

    /// Hashes `bytes`, the encoding's next, and hands on the chunks they
    /// complete (at `eof`, every chunk left).
    fn feed(&mut self, pipe: &Pipe<'_, '_>, bytes: &[u8], eof: bool) -> Result<()> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        self.uncut.extend_from_slice(bytes);
        let params = pipe.sink.store.config().manifest_chunker;
        let (uncut, pending, root) = (&mut self.uncut, &mut self.pending, &mut self.root);
        let cut = cut_window(uncut, eof, params, &mut |id, bytes| {
            root.push(ChunkRef {
                id,
                len: bytes.len() as u32,
            });
            pipe.push(pending, id, bytes)
        })?;
        uncut.drain(..cut);
        Ok(())
    }

    /// Closes the last frame and stores the rest of the encoding.
    pub(super) fn finish(mut self, pipe: &Pipe<'_, '_>) -> Result<Written> {
        let rest = std::mem::take(&mut self.frames).finish();
        self.feed(pipe, &rest, true)?;
        pipe.submit(&mut self.pending)?;
        Ok(Written {
            id: ManifestId(*self.hasher.finalize().as_bytes()),
            root: ManifestRoot {
                len: self.len,
                chunks: self.root,
            },
            totals: self.totals,
            chunk_refs: self.chunk_refs,
            records: self.records,
        })
    }
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
