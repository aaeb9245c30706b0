//! The stat cache's file format: the header (magic, version, the body's
//! length and BLAKE3) and the body (the entry count, then each entry),
//! written and read as streams that hash as they go, so a large cache is
//! never held twice. Knows the bytes only, not where the file lives or
//! when it is trusted (`stat_cache`).

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use super::{FileStat, Known, Record, Skip, MAGIC, VERSION};
use crate::error::{Error, Result};
use crate::format::manifest::{ChunkRef, MAX_PATH_LEN};
use crate::id::ChunkId;

/// The header: magic, version, the body's length and its BLAKE3.
pub(super) const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// The cache's bytes: magic, version, the body's length and BLAKE3, the
/// body (the entry count, then each entry).
pub fn encode(known: &HashMap<Vec<u8>, Known>) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::with_capacity(HEADER_LEN + known.len() * 120));
    let records = known.iter().map(Record::known);
    encode_into(known.len(), records, &mut out).expect("writing to memory cannot fail");
    out.into_inner()
}

/// Writes `encode`'s bytes to `w` as they are made (a large cache is
/// never held twice): the body first, behind a header that is filled in
/// once the body's length and hash are known.
pub(super) fn encode_into<'a>(
    count: usize,
    records: impl Iterator<Item = Record<'a>>,
    w: &mut (impl Write + Seek),
) -> io::Result<()> {
    let mut records = records;
    encode_fed(count, w, |put| records.try_for_each(put))
}

/// `encode_into`, the records handed one at a time by `feed` to the
/// function it is given (records that borrow from a reader's buffers).
pub(super) fn encode_fed(
    count: usize,
    w: &mut (impl Write + Seek),
    feed: impl FnOnce(&mut dyn FnMut(Record<'_>) -> io::Result<()>) -> io::Result<()>,
) -> io::Result<()> {
    let start = w.stream_position()?;
    w.write_all(&[0; HEADER_LEN])?;
    // Fields are a few bytes each: gathered into blocks before they are
    // hashed, since BLAKE3 fed a few bytes at a time is several times
    // slower than fed blocks.
    let hashing = HashingWriter {
        inner: &mut *w,
        hasher: blake3::Hasher::new(),
        len: 0,
    };
    let mut body = io::BufWriter::with_capacity(HASHED_BLOCK, hashing);
    body.write_all(&(count as u64).to_le_bytes())?;
    let mut written = 0;
    feed(&mut |k| {
        written += 1;
        write_record(&mut body, &k)
    })?;
    // The count went first: a writer whose records changed between the
    // count and the writing would write a cache no reader accepts.
    assert_eq!(
        written, count,
        "the records counted are the records written"
    );
    let hashing = body.into_inner().map_err(|e| e.into_error())?;
    let (len, sum) = (hashing.len, hashing.hasher.finalize());
    let end = w.stream_position()?;
    w.seek(SeekFrom::Start(start))?;
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(sum.as_bytes())?;
    w.seek(SeekFrom::Start(end))?;
    Ok(())
}

/// Writes one record of the body: its path's length and path, its stat,
/// its chunk count and chunks.
pub(super) fn write_record(body: &mut impl Write, k: &Record<'_>) -> io::Result<()> {
    body.write_all(&(k.rel.len() as u16).to_le_bytes())?;
    body.write_all(k.rel)?;
    let s = &k.stat;
    for v in [s.dev, s.ino, s.size, s.mtime.0 as u64, s.ctime.0 as u64] {
        body.write_all(&v.to_le_bytes())?;
    }
    for v in [s.mtime.1, s.ctime.1, s.mode, k.chunks.len() as u32] {
        body.write_all(&v.to_le_bytes())?;
    }
    for c in k.chunks {
        body.write_all(&c.id.0)?;
        body.write_all(&c.len.to_le_bytes())?;
    }
    Ok(())
}

/// How many bytes of the body are hashed at a time when it is written.
pub(super) const HASHED_BLOCK: usize = 64 << 10;

/// Passes writes on, hashing and counting them.
pub(super) struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The smallest entry: the path's length (2), a one-byte path, five u64s
/// and four u32s, no chunks.
pub(super) const MIN_ENTRY: u64 = 2 + 1 + 5 * 8 + 4 * 4;

/// Reads `encode`'s bytes, checking everything.
pub fn decode(bytes: &[u8]) -> Result<HashMap<Vec<u8>, Known>> {
    decode_from(bytes, bytes.len() as u64, None)
}

/// `decode`, reading as it goes (a large cache is never held twice): the
/// entries are parsed while the body is hashed, and all of them are
/// dropped if the hash, the length or any entry is wrong.
/// `size` is the input's length: the header's claimed body length must
/// match it before any count read from the body is believed.
pub(super) fn decode_from(
    r: impl Read,
    size: u64,
    skip: Option<Skip<'_>>,
) -> Result<HashMap<Vec<u8>, Known>> {
    let known = std::cell::RefCell::new(HashMap::new());
    let mut counted = |count: u64| {
        if skip.is_none() {
            known.borrow_mut().reserve(count as usize);
        }
    };
    let mut each = |rel: Vec<u8>, k: Known| {
        if !skip.is_some_and(|skip| skip(&rel)) {
            known.borrow_mut().insert(rel, k);
        }
    };
    decode_each(r, size, &mut counted, &mut each)?;
    Ok(known.into_inner())
}

/// `decode_from`, each entry handed to `each` as it is read (after
/// `counted` is told how many there are); an error, even at the end,
/// means the entries handed out are not the cache's.
pub(super) fn decode_each(
    r: impl Read,
    size: u64,
    counted: &mut dyn FnMut(u64),
    each: &mut dyn FnMut(Vec<u8>, Known),
) -> Result<()> {
    let bad = |detail: &str| Error::corrupt("stat cache", detail);
    // The body is hashed as it is read, a block at a time (not field by
    // field, which is several times slower).
    let hashing = HashingReader {
        inner: r,
        header_left: HEADER_LEN,
        hasher: blake3::Hasher::new(),
    };
    let mut r = Reader {
        // A small input (a fuzzed one) gets a buffer its size.
        inner: BufReader::with_capacity((size as usize).clamp(HEADER_LEN, 1 << 20), hashing),
        left: u64::MAX,
    };
    if r.take::<8>().ok_or_else(|| bad("truncated"))? != *MAGIC {
        return Err(bad("not a strata stat cache"));
    }
    if r.u32() != Some(VERSION) {
        return Err(bad("another version"));
    }
    let len = r.u64().ok_or_else(|| bad("truncated"))?;
    let sum = r.take::<32>().ok_or_else(|| bad("truncated"))?;
    if len != size - HEADER_LEN as u64 {
        return Err(bad("checksum mismatch"));
    }
    r.left = len;
    let count = r.u64().ok_or_else(|| bad("checksum mismatch"))?;
    // An entry takes at least MIN_ENTRY bytes: a count beyond that is a lie.
    if count > r.left / MIN_ENTRY {
        return Err(bad("entry count larger than the file"));
    }
    counted(count);
    read_body(r, count, &sum, each)
}

/// The rest of `decode_from` once the header and count are read: each
/// entry handed to `each` as it is read, then the end and the hash
/// checked (an error there means the entries handed out are not the
/// cache's).
pub(super) fn read_body<R: Read>(
    mut r: Reader<BufReader<HashingReader<R>>>,
    count: u64,
    sum: &[u8; 32],
    each: &mut dyn FnMut(Vec<u8>, Known),
) -> Result<()> {
    let bad = |detail: &str| Error::corrupt("stat cache", detail);
    for _ in 0..count {
        let entry = read_entry(&mut r)
            // A short file reads as a bad entry: its hash is wrong too.
            .ok_or_else(|| bad("bad entry"))?;
        each(entry.0, entry.1);
    }
    if r.left != 0 {
        return Err(bad("trailing bytes"));
    }
    let mut more = [0u8; 1];
    if r.inner.read(&mut more).map_err(|_| bad("unreadable"))? != 0 {
        return Err(bad("checksum mismatch"));
    }
    if r.inner.into_inner().hasher.finalize().as_bytes() != sum {
        return Err(bad("checksum mismatch"));
    }
    Ok(())
}

/// One entry of a stat cache's body: a path, its stat and chunk list;
/// `None` if it is malformed (a path too long, more chunks than the body
/// holds, chunks not adding up to the size) or the input ends.
pub(super) fn read_entry<R: Read>(r: &mut Reader<R>) -> Option<(Vec<u8>, Known)> {
    let n = r.u16()? as usize;
    if n == 0 || n > MAX_PATH_LEN {
        return None;
    }
    let rel = r.bytes(n)?;
    let (dev, ino, size) = (r.u64()?, r.u64()?, r.u64()?);
    let (ms, cs) = (r.u64()? as i64, r.u64()? as i64);
    let (mn, cn, mode, chunks) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    if chunks as u64 > r.left / 36 {
        return None;
    }
    let chunks = (0..chunks)
        .map(|_| {
            let id = ChunkId(r.take::<32>()?);
            Some(ChunkRef { id, len: r.u32()? })
        })
        .collect::<Option<Vec<_>>>()?;
    let stat = FileStat {
        dev,
        ino,
        size,
        mtime: (ms, mn),
        ctime: (cs, cn),
        mode,
    };
    let total: u64 = chunks.iter().map(|c| c.len as u64).sum();
    (total == size).then_some((rel, Known { stat, chunks }))
}

/// Reads fixed-size fields, hashing the body's bytes and counting down
/// the body's length (`None` past it or at the end of the input).
pub(super) struct Reader<R> {
    inner: R,
    left: u64,
}

/// Passes reads on, hashing what follows the header.
pub(super) struct HashingReader<R> {
    inner: R,
    header_left: usize,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let header = self.header_left.min(n);
        self.header_left -= header;
        self.hasher.update(&buf[header..n]);
        Ok(n)
    }
}

impl<R: Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Option<()> {
        if (buf.len() as u64) > self.left {
            return None;
        }
        self.inner.read_exact(buf).ok()?;
        self.left -= buf.len() as u64;
        Some(())
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut buf = [0; N];
        self.fill(&mut buf)?;
        Some(buf)
    }
    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0; n];
        self.fill(&mut buf)?;
        Some(buf)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}
