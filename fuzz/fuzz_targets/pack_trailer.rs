//! Untrusted pack bytes: reading the trailer never panics, and every frame
//! it returns lies inside the pack.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::pack::read_trailer;

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = read_trailer(data, "fuzz") {
        for f in frames {
            assert!(f.offset as u64 + f.stored_len as u64 <= data.len() as u64);
        }
    }
});
