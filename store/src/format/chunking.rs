//! Content-defined chunking: cuts a byte stream into chunks with FastCDC
//! (2020) and names each by the BLAKE3 hash of its bytes.
//!
//! Boundaries depend only on the bytes and on `ChunkerParams`, which are part
//! of the store format (recorded in the store config, pinned by a
//! known-answer test). Large inputs are streamed and never held whole. This
//! module knows nothing about packs, compression or files' metadata.

use std::io::Read;

use fastcdc::v2020::{FastCDC, StreamCDC};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ChunkId;

/// FastCDC's minimum, average and maximum chunk sizes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk, in bytes (but a file's last).
    pub min: u32,
    /// Average chunk the cut points aim for, in bytes.
    pub avg: u32,
    /// Largest chunk, in bytes.
    pub max: u32,
}

/// Inputs up to this size are read whole and cut in memory (one read, no
/// ring buffer); larger ones are streamed. Both cut at the same places.
const IN_MEMORY_LIMIT: u64 = 8 << 20;

impl ChunkerParams {
    /// The sizes new stores use; docs/format.md says how they were chosen.
    pub const DEFAULT: Self = Self {
        min: 16 << 10,
        avg: 64 << 10,
        max: 256 << 10,
    };

    /// The sizes manifests are cut with: small, so that a changed entry
    /// makes only a little of the next run's manifest new.
    pub const METADATA: Self = Self {
        min: 512,
        avg: 2 << 10,
        max: 8 << 10,
    };

    /// Checks the bounds FastCDC accepts, so a hand-edited config fails
    /// clearly instead of panicking in the chunker.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&(self.min as usize))
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&(self.avg as usize))
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&(self.max as usize))
            && self.min <= self.avg
            && self.avg <= self.max
            && self.min.is_multiple_of(2)
            && self.avg.is_multiple_of(2)
            && self.max.is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(Error::corrupt(
                "store config",
                format!("invalid chunk sizes {self:?}"),
            ))
        }
    }
}

/// Cuts everything `reader` yields (of which `size_hint` bytes are
/// expected) and calls `each(id, bytes)` for every chunk, in order.
///
/// `on_read_error` turns an I/O error into the caller's error (so it can
/// name the file being read).
pub fn chunk_stream<R: Read>(
    mut reader: R,
    size_hint: u64,
    params: ChunkerParams,
    on_read_error: &dyn Fn(std::io::Error) -> Error,
    each: &mut dyn FnMut(ChunkId, &[u8]) -> Result<()>,
) -> Result<()> {
    let (min, avg, max) = (
        params.min as usize,
        params.avg as usize,
        params.max as usize,
    );
    if size_hint <= IN_MEMORY_LIMIT {
        let mut data = Vec::with_capacity(size_hint as usize);
        reader.read_to_end(&mut data).map_err(on_read_error)?;
        if data.len() as u64 <= IN_MEMORY_LIMIT {
            return chunk_slice(&data, params, each);
        }
        // The input grew past the limit while we read it: stream the rest.
        return stream(
            std::io::Cursor::new(data).chain(reader),
            min,
            avg,
            max,
            on_read_error,
            each,
        );
    }
    stream(reader, min, avg, max, on_read_error, each)
}

fn stream<R: Read>(
    reader: R,
    min: usize,
    avg: usize,
    max: usize,
    on_read_error: &dyn Fn(std::io::Error) -> Error,
    each: &mut dyn FnMut(ChunkId, &[u8]) -> Result<()>,
) -> Result<()> {
    for chunk in StreamCDC::new(reader, min, avg, max) {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => on_read_error(io),
            other => on_read_error(std::io::Error::other(other.to_string())),
        })?;
        each(ChunkId::of(&chunk.data), &chunk.data)?;
    }
    Ok(())
}

/// Cuts the chunks at the front of `window` whose ends do not depend on
/// any byte past it, calls `each(id, bytes)` for each in order, and returns
/// how many bytes they cover; the rest of `window` is the start of a chunk
/// still to be cut, once more bytes follow it. With `eof` (nothing follows
/// `window`) every byte is cut.
///
/// Cutting a stream window by window like this, each window starting at
/// the last one's uncut bytes, gives the boundaries `chunk_slice` gives the
/// whole: a cut point is decided by at most `max` bytes from the chunk's
/// start, so a chunk is cut only while `max` bytes of it are in view.
pub fn cut_window(
    window: &[u8],
    eof: bool,
    params: ChunkerParams,
    each: &mut dyn FnMut(ChunkId, &[u8]) -> Result<()>,
) -> Result<usize> {
    let max = params.max as usize;
    if !eof && window.len() < max {
        return Ok(0);
    }
    let mut cut = 0;
    let cdc = FastCDC::new(window, params.min as usize, params.avg as usize, max);
    for c in cdc {
        if !eof && window.len() - c.offset < max {
            break;
        }
        let bytes = &window[c.offset..c.offset + c.length];
        each(ChunkId::of(bytes), bytes)?;
        cut = c.offset + c.length;
    }
    Ok(cut)
}

/// Cuts an in-memory buffer; same boundaries as the streaming path.
pub fn chunk_slice(
    data: &[u8],
    params: ChunkerParams,
    each: &mut dyn FnMut(ChunkId, &[u8]) -> Result<()>,
) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if data.len() <= params.min as usize {
        return each(ChunkId::of(data), data);
    }
    let cdc = FastCDC::new(
        data,
        params.min as usize,
        params.avg as usize,
        params.max as usize,
    );
    for c in cdc {
        let bytes = &data[c.offset..c.offset + c.length];
        each(ChunkId::of(bytes), bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), so tests need no files.
    pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn cuts_slice(data: &[u8]) -> Vec<(ChunkId, usize)> {
        let mut out = vec![];
        chunk_slice(data, ChunkerParams::DEFAULT, &mut |id, b| {
            out.push((id, b.len()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn streaming_and_in_memory_cut_alike() {
        let data = noise(3 << 20, 7);
        let mut streamed = vec![];
        let p = ChunkerParams::DEFAULT;
        stream(
            &data[..],
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            &|e| Error::io("read", "t", e),
            &mut |id, b| {
                streamed.push((id, b.len()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(streamed, cuts_slice(&data));
        assert!(streamed.len() > 10);
        assert!(streamed.iter().all(|(_, l)| *l <= p.max as usize));
    }

    proptest::proptest! {
        /// Cutting window by window, each read a random size, gives the
        /// chunks cutting the whole does.
        #[test]
        fn windows_cut_like_the_whole(
            len in 0usize..(1 << 20),
            seed in proptest::prelude::any::<u64>(),
            reads in proptest::collection::vec(1usize..(300 << 10), 1..64),
        ) {
            let p = ChunkerParams {
                min: 2 << 10,
                avg: 8 << 10,
                max: 32 << 10,
            };
            let data = noise(len, seed);
            let mut whole = vec![];
            chunk_slice(&data, p, &mut |id, b| {
                whole.push((id, b.len()));
                Ok(())
            })
            .unwrap();
            let (mut windowed, mut start, mut filled) = (vec![], 0, 0);
            for read in reads.iter().cycle() {
                filled = (filled + read).min(data.len());
                let eof = filled == data.len();
                start += cut_window(&data[start..filled], eof, p, &mut |id, b| {
                    windowed.push((id, b.len()));
                    Ok(())
                })
                .unwrap();
                if eof {
                    break;
                }
            }
            proptest::prop_assert_eq!(start, data.len());
            proptest::prop_assert_eq!(windowed, whole);
        }
    }

    #[test]
    fn small_inputs_are_one_chunk() {
        assert!(cuts_slice(b"").is_empty());
        let d = noise(16 << 10, 1);
        assert_eq!(cuts_slice(&d), vec![(ChunkId::of(&d), d.len())]);
    }

    #[test]
    fn an_insertion_changes_few_chunks() {
        let a = noise(4 << 20, 3);
        let mut b = a.clone();
        b.splice(1_000_000..1_000_000, b"inserted".iter().copied());
        let ca: std::collections::HashSet<_> = cuts_slice(&a).into_iter().collect();
        let cb = cuts_slice(&b);
        let changed = cb.iter().filter(|c| !ca.contains(c)).count();
        assert!(changed <= 2, "{changed} chunks changed");
    }
}
