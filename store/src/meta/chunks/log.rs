//! The chunk log: where each indexed chunk lies (its frame's number and its
//! place in the frame), as an append-only file of fixed 32-byte records
//! beside the sled database, and an open-addressing table over it in
//! memory. A lookup is a probe of the table and a comparison with one
//! record: a few memory reads per chunk, never a walk of sled's tree (which
//! pages from disk once the index outgrows sled's cache, and whose inserts
//! copied a tree node each: a third of a first persist's CPU at 10^5 files,
//! docs/benchmarks.md). The file is 28 bytes a chunk; sled held 48 bytes of
//! keys and values a chunk, several times over on disk (33 MB against 218
//! MB at 10^6 chunks).
//!
//! A record names the chunk by the first 16 bytes of its id. Two chunks
//! sharing them is a 2^-128 chance, and one that did is still caught: every
//! chunk read is checked against its whole id, and to make another
//! persist skip a chunk, one would have to find content whose id starts
//! like that chunk's (a second preimage of 128 bits), not merely two
//! alike.
//!
//! Records are never removed one by one: a record whose frame has no
//! record in sled's `frames` tree (its pack was deleted, and
//! `forget_frames` dropped its frames) is dead, and a chunk stored again
//! gets a new record that the table points to instead. A database that
//! starts over truncates the log; one whose log is a quarter dead rewrites
//! it at open (`compact`).
//!
//! Crash safety: records are written (to the file, then to memory) before
//! the pack they index is marked loaded in sled, and sled's `index-sync`
//! tree holds the number of records written before each mark (sled
//! recovers a prefix of its operations, so if a mark survives, so does a
//! count at least as large as the records it needs). A log shorter than
//! that count, or whose id (in its header and in sled) does not match, is
//! not trusted: the index starts over from the objects (`ChunkIndex::open`).
//! A record cut short by a crash is dropped when the log is read.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::RwLock;

use crate::id::ChunkId;

const MAGIC: &[u8; 8] = b"STRACLG1";
/// Magic, then the log's id (u64, little-endian).
const HEADER_LEN: u64 = 16;
/// A record: the id's first 16 bytes, the frame's number, the chunk's
/// offset and length in the frame (u32 each, little-endian).
pub(crate) const RECORD_LEN: usize = 28;
const PREFIX_LEN: usize = 16;

type Record = [u8; RECORD_LEN];

/// Where a chunk lies: its frame (a key of sled's `frames`) and its place
/// in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub frame: u32,
    pub offset: u32,
    pub len: u32,
}

fn record(id: &ChunkId, e: &Entry) -> Record {
    let mut r = [0u8; RECORD_LEN];
    r[..PREFIX_LEN].copy_from_slice(&id.0[..PREFIX_LEN]);
    r[16..20].copy_from_slice(&e.frame.to_le_bytes());
    r[20..24].copy_from_slice(&e.offset.to_le_bytes());
    r[24..28].copy_from_slice(&e.len.to_le_bytes());
    r
}

fn entry(r: &Record) -> Entry {
    Entry {
        frame: u32::from_le_bytes(r[16..20].try_into().expect("4 bytes")),
        offset: u32::from_le_bytes(r[20..24].try_into().expect("4 bytes")),
        len: u32::from_le_bytes(r[24..28].try_into().expect("4 bytes")),
    }
}

/// The records in memory and the table over them.
#[derive(Debug, Default)]
struct Inner {
    /// The log's id: 0 until it has a header.
    id: u64,
    records: Vec<Record>,
    /// Record index + 1 of the newest record for each id prefix; 0 empty.
    /// At most half full, so a probe reads one or two slots on average.
    table: Vec<u32>,
    /// Slots in use.
    used: usize,
    /// The highest frame number any record names.
    max_frame: Option<u32>,
    out: Option<File>,
}

impl Inner {
    /// Where a probe for `prefix` starts: ids are uniform, so their top
    /// bits are as good as any hash of them.
    fn start(&self, prefix: &[u8]) -> usize {
        let top = u64::from_be_bytes(prefix[..8].try_into().expect("8 bytes"));
        (top >> (64 - self.table.len().trailing_zeros())) as usize
    }

    fn find(&self, id: &ChunkId) -> Option<Entry> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut i = self.start(&id.0);
        loop {
            match self.table[i] {
                0 => return None,
                at => {
                    let r = &self.records[at as usize - 1];
                    if r[..PREFIX_LEN] == id.0[..PREFIX_LEN] {
                        return Some(entry(r));
                    }
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Points the table at record `at` (a newer record for the same id
    /// replaces the older).
    fn index(&mut self, at: usize) {
        if (self.used + 1) * 2 > self.table.len() {
            self.grow();
        }
        let mask = self.table.len() - 1;
        let prefix: [u8; PREFIX_LEN] = self.records[at][..PREFIX_LEN].try_into().expect("16 bytes");
        let mut i = self.start(&prefix);
        loop {
            match self.table[i] {
                0 => {
                    self.table[i] = at as u32 + 1;
                    self.used += 1;
                    return;
                }
                old if self.records[old as usize - 1][..PREFIX_LEN] == prefix => {
                    self.table[i] = at as u32 + 1;
                    return;
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let size = (self.table.len() * 2).max(1024);
        let old = std::mem::replace(&mut self.table, vec![0; size]);
        self.used = 0;
        // In record order, so the newest record of an id wins again.
        let mut ats: Vec<u32> = old.into_iter().filter(|a| *a != 0).collect();
        ats.sort_unstable();
        for at in ats {
            self.index(at as usize - 1);
        }
    }

    fn clear(&mut self) {
        self.records = Vec::new();
        self.table = Vec::new();
        self.used = 0;
        self.max_frame = None;
    }

    /// Adds record `at` to the table and to the highest frame number.
    fn take(&mut self, at: usize) {
        let frame = entry(&self.records[at]).frame;
        self.max_frame = self.max_frame.max(Some(frame));
        self.index(at);
    }
}

/// The chunk log of one database.
#[derive(Debug)]
pub(crate) struct ChunkLog {
    inner: RwLock<Inner>,
    /// Its file (`None`: a database in memory).
    file: Option<PathBuf>,
}

impl ChunkLog {
    /// Reads the log at `file`, if there is one with a header (`None`: in
    /// memory only). A log without one has id 0.
    pub(crate) fn open(file: Option<PathBuf>) -> Self {
        let mut inner = Inner::default();
        if let Some(path) = &file {
            if let Some((id, records, out)) = read_log(path) {
                inner.id = id;
                inner.records = records;
                inner.out = Some(out);
                // Sized once for what is read (at most half full).
                let slots = (inner.records.len() * 2).next_power_of_two().max(1024);
                inner.table = vec![0; slots];
                for at in 0..inner.records.len() {
                    inner.take(at);
                }
            }
        }
        Self {
            inner: RwLock::new(inner),
            file,
        }
    }

    /// The log's id (0: none yet).
    pub(crate) fn id(&self) -> u64 {
        self.inner.read().expect("poisoned").id
    }

    /// How many records it holds, live or dead.
    pub(crate) fn records(&self) -> u64 {
        self.inner.read().expect("poisoned").records.len() as u64
    }

    /// The highest frame number a record names: numbers up to it are
    /// never given to a new frame (a process killed after writing records
    /// may not have had its count of numbers saved by sled).
    pub(crate) fn max_frame(&self) -> Option<u32> {
        self.inner.read().expect("poisoned").max_frame
    }

    /// Empties the log and gives it the id `id` (a new header).
    pub(crate) fn start_over(&self, id: u64) -> std::io::Result<()> {
        let mut inner = self.inner.write().expect("poisoned");
        inner.clear();
        inner.out = None;
        if let Some(path) = &self.file {
            let tmp = path.with_extension("tmp");
            // Private like the rest of the store (it names its chunks).
            let mut f = crate::util::private_file(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&id.to_le_bytes())?;
            fs::rename(&tmp, path)?;
            inner.out = Some(OpenOptions::new().append(true).open(path)?);
        }
        inner.id = id;
        Ok(())
    }

    /// Where `id` lies, if the log has a record of it (live or dead).
    pub(crate) fn find(&self, id: &ChunkId) -> Option<Entry> {
        self.inner.read().expect("poisoned").find(id)
    }

    /// `find` for each id, under one lock.
    pub(crate) fn find_each(&self, ids: &[ChunkId]) -> Vec<Option<Entry>> {
        let inner = self.inner.read().expect("poisoned");
        ids.iter().map(|id| inner.find(id)).collect()
    }

    /// Appends records (to the file, then to memory); returns how many the
    /// log then holds.
    pub(crate) fn append(&self, entries: &[(ChunkId, Entry)]) -> std::io::Result<u64> {
        let mut inner = self.inner.write().expect("poisoned");
        if entries.is_empty() {
            return Ok(inner.records.len() as u64);
        }
        let records: Vec<Record> = entries.iter().map(|(id, e)| record(id, e)).collect();
        if let Some(out) = &mut inner.out {
            out.write_all(records.as_flattened())?;
        }
        for r in records {
            inner.records.push(r);
            let at = inner.records.len() - 1;
            inner.take(at);
        }
        Ok(inner.records.len() as u64)
    }

    /// The newest entry of every id (live or dead).
    pub(crate) fn newest(&self) -> Vec<Entry> {
        let inner = self.inner.read().expect("poisoned");
        inner
            .table
            .iter()
            .filter(|a| **a != 0)
            .map(|a| entry(&inner.records[*a as usize - 1]))
            .collect()
    }

    /// Rewrites the log with only the newest record of each id whose frame
    /// `live` keeps (the same id, a new file renamed over the old); returns
    /// how many records it then holds. For a log with many dead records:
    /// called at open, before any other thread uses it.
    pub(crate) fn compact(&self, live: impl Fn(u32) -> bool) -> std::io::Result<u64> {
        let mut inner = self.inner.write().expect("poisoned");
        let mut ats: Vec<u32> = inner.table.iter().copied().filter(|a| *a != 0).collect();
        ats.sort_unstable();
        let kept: Vec<Record> = ats
            .into_iter()
            .map(|a| inner.records[a as usize - 1])
            .filter(|r| live(entry(r).frame))
            .collect();
        if let Some(path) = &self.file {
            let tmp = path.with_extension("tmp");
            let mut f = crate::util::private_file(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&inner.id.to_le_bytes())?;
            f.write_all(kept.as_flattened())?;
            f.sync_data()?;
            drop(f);
            fs::rename(&tmp, path)?;
            inner.out = Some(OpenOptions::new().append(true).open(path)?);
        }
        inner.clear();
        inner.records = kept;
        let slots = (inner.records.len() * 2).next_power_of_two().max(1024);
        inner.table = vec![0; slots];
        for at in 0..inner.records.len() {
            inner.take(at);
        }
        Ok(inner.records.len() as u64)
    }

    /// How many records are the newest of their id whose frame `live`
    /// keeps.
    pub(crate) fn live(&self, live: impl Fn(u32) -> bool) -> u64 {
        let inner = self.inner.read().expect("poisoned");
        inner
            .table
            .iter()
            .filter(|a| **a != 0)
            .filter(|a| live(entry(&inner.records[**a as usize - 1]).frame))
            .count() as u64
    }

    /// Makes what was appended durable (before sled's flush).
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        match &self.inner.read().expect("poisoned").out {
            Some(out) => out.sync_data(),
            None => Ok(()),
        }
    }
}

/// The log at `path`: its id, its whole records, and a handle to append
/// with (a record cut short is cut off). `None` if it has no header.
fn read_log(path: &PathBuf) -> Option<(u64, Vec<Record>, File)> {
    let mut f = OpenOptions::new().read(true).write(true).open(path).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    if bytes.len() < HEADER_LEN as usize || &bytes[..8] != MAGIC {
        return None;
    }
    let id = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let body = &bytes[HEADER_LEN as usize..];
    let whole = body.len() / RECORD_LEN * RECORD_LEN;
    if whole != body.len() {
        f.set_len(HEADER_LEN + whole as u64).ok()?;
    }
    f.seek(SeekFrom::End(0)).ok()?;
    let records = body[..whole]
        .chunks_exact(RECORD_LEN)
        .map(|r| r.try_into().expect("a record"))
        .collect();
    Some((id, records, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> ChunkId {
        ChunkId::of(&i.to_le_bytes())
    }

    fn at(frame: u32) -> Entry {
        Entry {
            frame,
            offset: 3,
            len: 4,
        }
    }

    #[test]
    fn finds_the_newest_record_and_nothing_else() {
        let log = ChunkLog::open(None);
        log.start_over(7).unwrap();
        let many: Vec<_> = (0..10_000).map(|i| (id(i), at(i))).collect();
        assert_eq!(log.append(&many).unwrap(), 10_000);
        assert!((0..10_000).all(|i| log.find(&id(i)) == Some(at(i))));
        assert!((10_000..60_000).all(|i| log.find(&id(i)).is_none()));
        // Stored again: the newer record is found.
        log.append(&[(id(5), at(99))]).unwrap();
        assert_eq!(log.find(&id(5)), Some(at(99)));
        assert_eq!(log.newest().len(), 10_000);
        assert_eq!(log.max_frame(), Some(9_999));
        // Two ids sharing their first 8 bytes are told apart.
        let (mut a, mut b) = (ChunkId([1; 32]), ChunkId([1; 32]));
        a.0[12] = 2;
        b.0[12] = 3;
        log.append(&[(a, at(1)), (b, at(2))]).unwrap();
        assert_eq!((log.find(&a), log.find(&b)), (Some(at(1)), Some(at(2))));
        // Compacted: the newest record of each id whose frame lives.
        assert_eq!(log.records(), 10_003);
        assert_eq!(log.live(|f| f != 2), 10_000);
        assert_eq!(log.compact(|f| f != 2).unwrap(), 10_000);
        assert_eq!(log.find(&id(5)), Some(at(99)));
        assert_eq!((log.find(&a), log.find(&b)), (Some(at(1)), None));
        assert!((0..10_000).all(|i| log.find(&id(i)).is_some() == (i != 2)));
        log.start_over(8).unwrap();
        assert!(log.find(&a).is_none() && log.records() == 0);
    }

    // Read back as written; a record cut short by a crash is cut off, and
    // appending goes on after the last whole one.
    #[test]
    fn read_back_whole_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk-log");
        let log = ChunkLog::open(Some(path.clone()));
        assert_eq!(log.id(), 0, "no file, no header");
        log.start_over(42).unwrap();
        log.append(&[(id(1), at(1)), (id(2), at(2))]).unwrap();
        drop(log);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9; 7]);
        fs::write(&path, &bytes).unwrap();
        let log = ChunkLog::open(Some(path.clone()));
        assert_eq!((log.id(), log.records()), (42, 2));
        assert_eq!(log.find(&id(2)), Some(at(2)));
        log.append(&[(id(3), at(3))]).unwrap();
        drop(log);
        let log = ChunkLog::open(Some(path.clone()));
        assert_eq!(log.records(), 3);
        assert_eq!(log.find(&id(3)), Some(at(3)));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            HEADER_LEN + 3 * RECORD_LEN as u64
        );
        // Compacted on disk too, and appended to after.
        assert_eq!(log.compact(|f| f != 1).unwrap(), 2);
        log.append(&[(id(4), at(4))]).unwrap();
        drop(log);
        let log = ChunkLog::open(Some(path.clone()));
        assert_eq!((log.id(), log.records()), (42, 3));
        assert!(log.find(&id(1)).is_none());
        assert_eq!(log.find(&id(4)), Some(at(4)));
        fs::write(&path, b"not a log").unwrap();
        assert_eq!(ChunkLog::open(Some(path)).id(), 0);
    }
}
