//! An untrusted frame (from a pack a server or disk handed over, with the
//! lengths an index object claims): decoding never panics, never yields
//! other than the claimed length, and the chunks it is said to hold are
//! either inside it and matching their ids, or refused.
//! (Byte 0 picks the compression, bytes 1-4 the claimed raw length, byte 5
//! where a chunk is said to start; the rest is the stored frame.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::pack::{chunk_of, decode_frame, Compression, FrameChunk, FrameRef};
use strata_store::id::ChunkId;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let compression = if data[0] & 1 == 0 {
        Compression::Raw
    } else {
        Compression::Zstd
    };
    let raw_len = u32::from_le_bytes(data[1..5].try_into().unwrap());
    let stored = &data[6..];
    let frame = FrameRef {
        offset: 0,
        stored_len: stored.len() as u32,
        raw_len,
        compression,
    };
    let Ok(raw) = decode_frame(&frame, stored, "fuzz") else {
        return;
    };
    assert_eq!(raw.len(), raw_len as usize);
    let offset = data[5] as u32;
    let len = (raw.len() as u32).saturating_sub(offset);
    let c = FrameChunk {
        id: ChunkId::of(raw.get(offset as usize..).unwrap_or(&[])),
        offset,
        len,
    };
    if let Ok(bytes) = chunk_of(&raw, &c, "fuzz") {
        assert_eq!(ChunkId::of(bytes), c.id);
    }
    // A chunk said to reach past the frame is refused, not read.
    let past = FrameChunk {
        id: c.id,
        offset: u32::MAX - 1,
        len: u32::MAX,
    };
    assert!(chunk_of(&raw, &past, "fuzz").is_err());
});
