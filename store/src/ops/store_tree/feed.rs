//! The chunking side of the pipeline: scanned entries split into batches
//! of neighbouring files, each file read straight into a batch's buffer,
//! cut into chunks and hashed, and each full batch handed to the query
//! threads (`pipeline`). This module knows nothing of what the store has.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::SyncSender;

use crate::error::{Error, Result};
use crate::format::chunking::cut_window;
use crate::format::manifest::ChunkRef;
use crate::id::ChunkId;
use crate::tree::scan::{ScanKind, Scanned, Tree};
use crate::util::Buffer;

use super::pipeline::ChunkSink;

/// A file as read: its size and chunks.
pub(super) struct FileContent {
    pub(super) size: u64,
    pub(super) chunks: Vec<ChunkRef>,
}

/// A batch closes once its files hold this many bytes, or this many files.
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_FILES: usize = 1024;

/// Splits the scanned entries into contiguous ranges of similar work, so
/// each range is chunked by one thread and its new chunks share frames.
pub(super) fn batches(scanned: &[Scanned]) -> Vec<std::ops::Range<usize>> {
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
pub(super) const BATCH_BUFFER: usize = 5 << 20;

/// Chunks read but not yet asked about: their ids and lengths, and their
/// bytes back to back at the front of a buffer.
pub(super) struct Pending {
    pub(super) ids: Vec<(ChunkId, usize)>,
    /// One of the `BATCHES_HELD` buffers, taken at the first read.
    pub(super) buf: Option<Buffer>,
    /// How much of the buffer the chunks cover (`bytes[..used]`).
    pub(super) used: usize,
    /// File content (counted in the report), or a manifest's encoding.
    pub(super) content: bool,
}

impl Pending {
    pub(super) fn new(content: bool) -> Self {
        Self {
            content,
            ids: Vec::new(),
            buf: None,
            used: 0,
        }
    }

    /// The chunks' bytes, back to back.
    pub(super) fn bytes(&self) -> &[u8] {
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

/// What the chunking threads hand their chunks to (`ChunkSink::run`).
pub(super) struct Pipe<'s, 'a> {
    pub(super) sink: &'s ChunkSink<'a>,
    pub(super) batches: SyncSender<Pending>,
}

impl Pipe<'_, '_> {
    /// Hands `pending` to the query threads (waiting while their queue is
    /// full); after a pool's error, returns that error instead, so the
    /// chunking stops.
    pub(super) fn submit(&self, pending: &mut Pending) -> Result<()> {
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
    pub(super) fn push(&self, pending: &mut Pending, id: ChunkId, bytes: &[u8]) -> Result<()> {
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
    pub(super) fn add_batch(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{Mtime, RelPath};

    fn file(i: usize, size: u64) -> Scanned {
        Scanned {
            rel: RelPath::new(format!("f{i:05}").into_bytes()).unwrap(),
            mode: 0o644,
            mtime: Mtime { secs: 0, nanos: 0 },
            kind: ScanKind::File {
                size,
                stat: Default::default(),
            },
        }
    }

    // A batch closes once its files hold BATCH_BYTES, or BATCH_FILES
    // files; directories and links ride along; the last batch takes the rest.
    #[test]
    fn batches_close_at_their_bytes_or_their_files() {
        let three_mib: Vec<Scanned> = (0..3).map(|i| file(i, 3 << 20)).collect();
        assert_eq!(batches(&three_mib), vec![0..2, 2..3]);
        let mut empty: Vec<Scanned> = (0..BATCH_FILES + 10).map(|i| file(i, 0)).collect();
        empty.push(Scanned {
            kind: ScanKind::Dir,
            ..file(99_999, 0)
        });
        assert_eq!(
            batches(&empty),
            vec![0..BATCH_FILES, BATCH_FILES..BATCH_FILES + 11]
        );
        assert!(batches(&[]).is_empty());
    }
}
