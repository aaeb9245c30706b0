//! Untrusted answers to chunk queries (from a server): decoding a locate
//! or missing answer, and each location record in it, never panics, and
//! yields exactly one answer per id asked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::index::{Location, LOCATION_LEN};
use strata_store::id::ChunkId;
use strata_store::protocol::{decode_located, decode_missing};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = n as usize;
    if let Ok(records) = decode_located::<LOCATION_LEN>(n, rest) {
        assert_eq!(records.len(), n);
        for (i, r) in records.into_iter().enumerate() {
            if let Some(r) = r {
                let _ = Location::from_bytes(ChunkId::of(&[i as u8]), &r);
            }
        }
    }
    if let Ok(missing) = decode_missing(n, rest) {
        assert_eq!(missing.len(), n);
    }
});
