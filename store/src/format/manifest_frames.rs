//! Version 2 of a manifest's encoding (docs/format.md, "Version 2: frames
//! of rows"): the entries in frames of at most 4,096, each frame's columns
//! front-coded and delta-coded on their own, so that a frame is written as
//! soon as its entries are known and read without any other (issue 29: an
//! attach of several million-file layers, or a persist that writes its
//! manifest as it goes, holds a frame, not a manifest).
//!
//! This module knows the layout of one frame and how frames follow each
//! other: `FrameWriter` emits them (`Manifest::encode` is here, so that
//! `manifest` need not know this module), `decode_frame` reads one. It does not
//! know where the bytes come from (`manifest_stream` pulls them) nor the
//! rules across entries (`manifest_check`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::format::codec::HEADER_LEN;
use crate::format::manifest::{
    ChunkRef, Entry, EntryKind, Manifest, Mtime, RelPath, MANIFEST_MAGIC, MANIFEST_VERSION,
};
use crate::id::ManifestId;

/// The most entries a frame holds (format.md).
pub const MAX_FRAME_ENTRIES: usize = 4096;

/// A writer starts a new frame once a frame's columns hold this many
/// bytes, whatever its count: a frame of files with long chunk lists stays
/// small for its reader. Readers do not rely on it.
const FRAME_CUT_BYTES: usize = 1 << 20;

/// A kind as written: `File` and `LinkedFile` are both `EntryKind::File`,
/// the second one a file some hardlink of the manifest names.
#[derive(Serialize)]
enum WireKindRef<'a> {
    Dir,
    File { size: u64, chunks: &'a [ChunkRef] },
    Symlink { target: &'a [u8] },
    Hardlink { target: &'a [u8] },
    LinkedFile { size: u64, chunks: &'a [ChunkRef] },
}

/// A kind as read; the variants in `WireKindRef`'s order.
#[derive(Deserialize)]
enum WireKind {
    Dir,
    File { size: u64, chunks: Vec<ChunkRef> },
    Symlink { target: Vec<u8> },
    Hardlink { target: RelPath },
    LinkedFile { size: u64, chunks: Vec<ChunkRef> },
}

/// A frame's body as read: its paths borrowed from the frame's bytes.
#[derive(Deserialize)]
struct FrameBody<'a> {
    #[serde(borrow)]
    paths: Vec<(u32, &'a [u8])>,
    kinds: Vec<WireKind>,
    modes: Vec<u32>,
    mtimes: Vec<(i64, u32)>,
}

/// Writes a version 2 encoding entry by entry: the envelope's header
/// first, then each frame once it is full (or at `finish`). It holds the
/// frame being filled and what the caller has not taken yet.
#[derive(Debug)]
pub struct FrameWriter {
    /// The columns of the frame being filled, each its elements' postcard
    /// bytes without the length (a postcard `Vec` is its length, then its
    /// elements: the four are joined at `flush`).
    columns: [Vec<u8>; 4],
    entries: u32,
    prev_path: Vec<u8>,
    prev_secs: i64,
    /// Whole frames not yet taken.
    out: Vec<u8>,
}

impl Default for FrameWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameWriter {
    /// A writer whose output starts with the envelope's header.
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        FrameWriter {
            columns: Default::default(),
            entries: 0,
            prev_path: Vec::new(),
            prev_secs: 0,
            out,
        }
    }

    /// Adds the next entry (entries come sorted; the writer does not
    /// check): `linked` if a hardlink of the manifest names it.
    pub fn push(&mut self, e: &Entry, linked: bool) {
        let path = e.path.as_bytes();
        let shared = path
            .iter()
            .zip(&self.prev_path)
            .take_while(|(a, b)| a == b)
            .count();
        let [paths, kinds, modes, mtimes] = &mut self.columns;
        put(paths, &(shared as u32, &path[shared..]));
        let kind = match &e.kind {
            EntryKind::Dir => WireKindRef::Dir,
            EntryKind::File { size, chunks } if linked => WireKindRef::LinkedFile {
                size: *size,
                chunks,
            },
            EntryKind::File { size, chunks } => WireKindRef::File {
                size: *size,
                chunks,
            },
            EntryKind::Symlink { target } => WireKindRef::Symlink { target },
            EntryKind::Hardlink { target } => WireKindRef::Hardlink {
                target: target.as_bytes(),
            },
        };
        put(kinds, &kind);
        put(modes, &e.mode);
        put(
            mtimes,
            &(e.mtime.secs.wrapping_sub(self.prev_secs), e.mtime.nanos),
        );
        self.prev_path.clear();
        self.prev_path.extend_from_slice(path);
        self.prev_secs = e.mtime.secs;
        self.entries += 1;
        let held: usize = self.columns.iter().map(Vec::len).sum();
        if self.entries as usize == MAX_FRAME_ENTRIES || held >= FRAME_CUT_BYTES {
            self.flush();
        }
    }

    /// The encoding's bytes written so far and not taken yet: whole frames
    /// (and the header, first), for a caller that stores them as it goes.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The rest of the encoding, the last frame closed.
    pub fn finish(mut self) -> Vec<u8> {
        self.flush();
        self.out
    }

    /// Closes the frame being filled, if it holds any entry: its length,
    /// then its four columns, each its count then its elements.
    fn flush(&mut self) {
        if self.entries == 0 {
            return;
        }
        let mut count = Vec::with_capacity(5);
        put(&mut count, &self.entries);
        let len = 4 * count.len() + self.columns.iter().map(Vec::len).sum::<usize>();
        put(&mut self.out, &(len as u32));
        for column in &mut self.columns {
            self.out.extend_from_slice(&count);
            self.out.append(column);
        }
        self.entries = 0;
        self.prev_path.clear();
        self.prev_secs = 0;
    }
}

impl Manifest {
    /// The object's bytes: version 2, in frames (format.md).
    pub fn encode(&self) -> (ManifestId, Vec<u8>) {
        let linked = self.linked();
        let mut w = FrameWriter::new();
        for e in &self.entries {
            let is_linked = e.is_file() && linked.contains(e.path.as_bytes());
            w.push(e, is_linked);
        }
        let bytes = w.finish();
        (ManifestId::of(&bytes), bytes)
    }

    /// The paths hardlinks name: the files written as linked.
    pub fn linked(&self) -> HashSet<&[u8]> {
        let mut linked = HashSet::new();
        for e in &self.entries {
            if let EntryKind::Hardlink { target } = &e.kind {
                linked.insert(target.as_bytes());
            }
        }
        linked
    }
}

/// Appends `value`'s postcard bytes.
fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    postcard::to_io(value, out).expect("writing to a Vec cannot fail");
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// A path is not a safe relative path: its bytes and why.
    UnsafePath(Vec<u8>, &'static str),
    /// Anything else.
    Corrupt(String),
}

/// Decodes one frame's body (the bytes after its length) into `out`:
/// each entry and whether it is a linked file.
pub(crate) fn decode_frame(bytes: &[u8], out: &mut Vec<(Entry, bool)>) -> Result<(), FrameError> {
    let corrupt = |why: String| FrameError::Corrupt(why);
    let (body, rest): (FrameBody, _) = postcard::take_from_bytes(bytes)
        .map_err(|e| corrupt(format!("cannot decode a frame: {e}")))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} bytes left in a frame", rest.len())));
    }
    let n = body.paths.len();
    if n == 0 || n > MAX_FRAME_ENTRIES {
        return Err(corrupt(format!("a frame of {n} entries")));
    }
    if body.kinds.len() != n || body.modes.len() != n || body.mtimes.len() != n {
        return Err(corrupt("a frame's columns of different lengths".into()));
    }
    out.reserve(n);
    let mut path: Vec<u8> = Vec::new();
    let mut secs = 0i64;
    let columns = body.kinds.into_iter().zip(body.modes).zip(body.mtimes);
    for ((shared, rest), ((kind, mode), (dsecs, nanos))) in body.paths.into_iter().zip(columns) {
        if shared as usize > path.len() {
            return Err(corrupt("path shares more than its predecessor has".into()));
        }
        path.truncate(shared as usize);
        path.extend_from_slice(rest);
        let rel =
            RelPath::new(path.clone()).map_err(|why| FrameError::UnsafePath(path.clone(), why))?;
        secs = secs.wrapping_add(dsecs);
        let (kind, linked) = match kind {
            WireKind::Dir => (EntryKind::Dir, false),
            WireKind::File { size, chunks } => (EntryKind::File { size, chunks }, false),
            WireKind::LinkedFile { size, chunks } => (EntryKind::File { size, chunks }, true),
            WireKind::Symlink { target } => (EntryKind::Symlink { target }, false),
            WireKind::Hardlink { target } => (EntryKind::Hardlink { target }, false),
        };
        let entry = Entry {
            path: rel,
            mode,
            mtime: Mtime { secs, nanos },
            kind,
        };
        out.push((entry, linked));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;

    fn entry(path: &str, kind: EntryKind, secs: i64) -> Entry {
        Entry {
            path: RelPath::new(path.as_bytes().to_vec()).unwrap(),
            mode: 0o644,
            mtime: Mtime { secs, nanos: 7 },
            kind,
        }
    }

    /// The bytes of a small frame, derived by hand from format.md.
    #[test]
    fn a_frame_is_laid_out_as_format_md_says() {
        let chunk = ChunkRef {
            id: ChunkId([9; 32]),
            len: 3,
        };
        let file = EntryKind::File {
            size: 3,
            chunks: vec![chunk],
        };
        let mut w = FrameWriter::new();
        w.push(&entry("ab", EntryKind::Dir, 10), false);
        w.push(&entry("ab/c", file, 8), true);
        let bytes = w.finish();
        let mut want = b"STRAMANI\x02\x00\x00\x00".to_vec();
        let mut body = vec![2u8]; // paths: 2 of them
        body.extend_from_slice(&[0, 2, b'a', b'b']); // (0, "ab")
        body.extend_from_slice(&[2, 2, b'/', b'c']); // (2, "/c")
        body.extend_from_slice(&[2, 0]); // kinds: Dir
        body.extend_from_slice(&[4, 3, 1]); // LinkedFile, size 3, one chunk
        body.extend_from_slice(&[9; 32]);
        body.push(3); // its length
        body.extend_from_slice(&[2, 0xa4, 0x03, 0xa4, 0x03]); // modes 0o644 twice
        body.extend_from_slice(&[2, 20, 7, 3, 7]); // (10, 7), (-2, 7) zigzagged
        want.push(body.len() as u8);
        want.extend_from_slice(&body);
        assert_eq!(bytes, want);
        let mut out = Vec::new();
        decode_frame(&bytes[HEADER_LEN + 1..], &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out[1].1 && !out[0].1);
        assert_eq!(out[1].0.mtime, Mtime { secs: 8, nanos: 7 });
    }

    /// Frames close at 4,096 entries, and each restarts its front and
    /// delta coding: the second frame's first path is written whole.
    #[test]
    fn frames_hold_at_most_4096_entries_and_start_afresh() {
        let mut w = FrameWriter::new();
        let n = MAX_FRAME_ENTRIES + 10;
        for i in 0..n {
            w.push(&entry(&format!("f{i:06}"), EntryKind::Dir, 100), false);
        }
        let bytes = w.finish();
        let mut at = HEADER_LEN;
        let (mut counts, mut firsts) = (vec![], vec![]);
        while at < bytes.len() {
            let (len, rest) = postcard::take_from_bytes::<u32>(&bytes[at..]).unwrap();
            let start = bytes.len() - rest.len();
            let mut out = Vec::new();
            decode_frame(&rest[..len as usize], &mut out).unwrap();
            counts.push(out.len());
            firsts.push(out[0].0.path.to_string());
            assert_eq!(out[0].0.mtime.secs, 100);
            at = start + len as usize;
        }
        assert_eq!(counts, vec![MAX_FRAME_ENTRIES, 10]);
        assert_eq!(firsts, ["f000000", "f004096"]);
    }

    /// A frame too big, empty, uneven or with bytes over is refused.
    #[test]
    fn bad_frames_are_refused() {
        // `paths` directories (kind tag 0, mode 0, mtime (0, 0)) but
        // `kinds` kinds.
        let body = |paths: usize, kinds: usize| {
            let mut b = vec![];
            put(&mut b, &(paths as u32));
            for i in 0..paths {
                put(&mut b, &(0u32, format!("p{i:05}").as_bytes()));
            }
            for (count, width) in [(kinds, 1), (paths, 1), (paths, 2)] {
                put(&mut b, &(count as u32));
                b.extend(std::iter::repeat_n(0u8, count * width));
            }
            b
        };
        let refused = |bytes: &[u8], why: &str| match decode_frame(bytes, &mut Vec::new()) {
            Err(FrameError::Corrupt(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{why}: {other:?}"),
        };
        let mut out = Vec::new();
        decode_frame(&body(1, 1), &mut out).unwrap();
        assert_eq!(out[0].0.path.as_bytes(), b"p00000");
        decode_frame(&body(MAX_FRAME_ENTRIES, MAX_FRAME_ENTRIES), &mut Vec::new()).unwrap();
        refused(
            &body(MAX_FRAME_ENTRIES + 1, MAX_FRAME_ENTRIES + 1),
            "a frame of 4097 entries",
        );
        refused(&body(0, 0), "a frame of 0 entries");
        refused(&body(2, 1), "columns of different lengths");
        let mut over = body(1, 1);
        over.push(0);
        refused(&over, "1 bytes left in a frame");
        for end in 0..body(2, 2).len() {
            assert!(
                decode_frame(&body(2, 2)[..end], &mut Vec::new()).is_err(),
                "cut at {end}"
            );
        }
    }
}
