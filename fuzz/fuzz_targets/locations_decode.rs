//! Untrusted answers to a locate query (from a server): decoding never
//! panics, and yields exactly one answer per id asked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::backend::http::decode_locations;
use strata_store::id::ChunkId;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let ids: Vec<ChunkId> = (0..n).map(|i| ChunkId::of(&[i])).collect();
    if let Ok(locs) = decode_locations(&ids, rest) {
        assert_eq!(locs.len(), ids.len());
    }
});
