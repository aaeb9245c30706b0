//! A layer's file, or a directory of it as a `.tar.zst`, written to any
//! `Write` as its chunks are read: a batch of chunks at a time, so memory
//! stays bounded by the batch (`BATCH` chunks) and the compressor's
//! window, whatever the layer's size, and nothing is copied to disk.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::format::manifest::{ChunkRef, EntryKind, Manifest};
use crate::read::fetch_chunks;
use crate::repo::Store;

use super::tree::is_under;

/// Chunks read at once (a chunk is at most a few MiB).
const BATCH: usize = 8;

/// A file's bytes, read from its chunks in order as they are asked for.
pub struct ChunkReader<'s> {
    store: &'s Store,
    chunks: Vec<ChunkRef>,
    next: usize,
    buf: Vec<u8>,
    at: usize,
}

impl std::fmt::Debug for ChunkReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkReader({}/{} chunks)", self.next, self.chunks.len())
    }
}

impl<'s> ChunkReader<'s> {
    /// The bytes of a file whose chunks are `chunks`.
    pub fn new(store: &'s Store, chunks: &[ChunkRef]) -> Self {
        ChunkReader {
            store,
            chunks: chunks.to_vec(),
            next: 0,
            buf: Vec::new(),
            at: 0,
        }
    }

    fn fill(&mut self) -> Result<()> {
        let batch = &self.chunks[self.next..(self.next + BATCH).min(self.chunks.len())];
        let got: Mutex<HashMap<crate::id::ChunkId, Vec<u8>>> = Mutex::new(HashMap::new());
        fetch_chunks(
            self.store,
            batch.iter().map(|c| c.id),
            &|chunk| Error::MissingChunk {
                chunk,
                path: "a download".into(),
            },
            &|id, bytes| {
                got.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, bytes.to_vec());
                Ok(())
            },
        )?;
        let got = got.into_inner().unwrap_or_else(|p| p.into_inner());
        self.buf.clear();
        for c in batch {
            self.buf.extend_from_slice(&got[&c.id]);
        }
        self.at = 0;
        self.next += batch.len();
        Ok(())
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.next == self.chunks.len() {
                return Ok(0);
            }
            self.fill().map_err(io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The chunks of the file at `path` (a hard link's: its target's).
pub fn file_chunks<'m>(m: &'m Manifest, path: &[u8]) -> Result<&'m [ChunkRef]> {
    let not_found = || Error::NotFound {
        key: String::from_utf8_lossy(path).into_owned(),
    };
    let e = m
        .entries
        .iter()
        .find(|e| e.path.as_bytes() == path)
        .ok_or_else(not_found)?;
    match &e.kind {
        EntryKind::File { chunks, .. } => Ok(chunks),
        EntryKind::Hardlink { target } => file_chunks(m, target.as_bytes()),
        _ => Err(not_found()),
    }
}

/// Writes the directory `dir` of `m` (empty: the whole layer) to `out` as
/// a zstd-compressed tar, its paths relative to `dir`: directories,
/// files (a hard link as a copy of its target), symbolic links, with
/// their modes and mtimes.
pub fn write_tar_zst(store: &Store, m: &Manifest, dir: &[u8], out: impl Write) -> Result<()> {
    let io_err = |e: io::Error| Error::io("write an archive", dir_name(dir), e);
    let zst = zstd::Encoder::new(out, 3).map_err(io_err)?;
    let mut tar = tar::Builder::new(zst);
    let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
    for e in &m.entries {
        let p = e.path.as_bytes();
        if p == dir || !is_under(p, dir) {
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(&p[skip..]);
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode & 0o7777);
        h.set_mtime(e.mtime.secs.max(0) as u64);
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, name, io::empty()).map_err(io_err)?;
            }
            EntryKind::File { .. } | EntryKind::Hardlink { .. } => {
                let chunks = file_chunks(m, p)?;
                let size: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size);
                let reader = ChunkReader::new(store, chunks);
                tar.append_data(&mut h, name, reader).map_err(io_err)?;
            }
            EntryKind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                let target = std::ffi::OsStr::from_bytes(target);
                tar.append_link(&mut h, name, target).map_err(io_err)?;
            }
        }
    }
    let zst = tar.into_inner().map_err(io_err)?;
    zst.finish().map_err(io_err)?.flush().map_err(io_err)?;
    Ok(())
}

fn dir_name(dir: &[u8]) -> std::path::PathBuf {
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(dir))
}

/// `write_tar_zst`'s directory as a `.zip`, written as a stream (sizes in
/// data descriptors, so nothing is sought back to) and stored without
/// compression: the `.tar.zst` is the compact one, the `.zip` the one
/// every desktop opens. Names that are not UTF-8 are written lossily.
pub fn write_zip(store: &Store, m: &Manifest, dir: &[u8], out: impl Write) -> Result<()> {
    use zip::write::SimpleFileOptions;
    let zip_err = |e: zip::result::ZipError| {
        Error::io("write an archive", dir_name(dir), io::Error::other(e))
    };
    let mut z = zip::ZipWriter::new_stream(out);
    let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
    for e in &m.entries {
        let p = e.path.as_bytes();
        if p == dir || !is_under(p, dir) {
            continue;
        }
        let name = String::from_utf8_lossy(&p[skip..]).into_owned();
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(e.mode & 0o7777);
        match &e.kind {
            EntryKind::Dir => z.add_directory(name, opts).map_err(zip_err)?,
            EntryKind::File { .. } | EntryKind::Hardlink { .. } => {
                let chunks = file_chunks(m, p)?;
                let size: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
                let opts = opts.large_file(size >= u64::from(u32::MAX));
                z.start_file(name, opts).map_err(zip_err)?;
                io::copy(&mut ChunkReader::new(store, chunks), &mut z)
                    .map_err(|e| Error::io("write an archive", dir_name(dir), e))?;
            }
            EntryKind::Symlink { target } => {
                let target = String::from_utf8_lossy(target).into_owned();
                z.add_symlink(name, target, opts).map_err(zip_err)?
            }
        }
    }
    z.finish().map_err(zip_err)?;
    Ok(())
}
