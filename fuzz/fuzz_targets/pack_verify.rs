//! The pack branch of what a server accepts from an untrusted client
//! (`ingest::put_checked` calls `pack::verify_pack` before it stores a
//! pack): the whole check never panics, and a pack it accepts has frames
//! inside it whose every chunk hashes to its id. The pack's name is its
//! hash, so the target names it by its content, as an honest client would.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::pack::{chunk_of, decode_frame, verify_pack};
use strata_store::id::{ChunkId, PackId};

fuzz_target!(|data: &[u8]| {
    let id = PackId::of(data);
    let Ok(frames) = verify_pack(&id, data, "fuzz") else {
        return;
    };
    for f in &frames {
        let start = f.offset as usize;
        let stored = &data[start..start + f.stored_len as usize];
        let raw = decode_frame(&f.frame_ref(), stored, "fuzz").expect("accepted frames decode");
        for c in &f.chunks {
            let bytes = chunk_of(&raw, c, "fuzz").expect("accepted chunks are inside");
            assert_eq!(ChunkId::of(bytes), c.id);
        }
    }
    // Under any other name the same bytes are refused.
    let other = PackId::of(b"another pack");
    if other != id {
        assert!(verify_pack(&other, data, "fuzz").is_err());
    }
});
