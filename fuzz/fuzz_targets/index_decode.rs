//! Untrusted index objects: decoding never panics, and every frame and
//! chunk of a decoded object lies where the checks say.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::index::IndexObject;
use strata_store::id::IndexId;

fuzz_target!(|data: &[u8]| {
    let id = IndexId::of(data);
    if let Ok(obj) = IndexObject::decode(&id, data) {
        for p in &obj.packs {
            for f in &p.frames {
                for c in &f.chunks {
                    assert!(c.offset as u64 + c.len as u64 <= f.raw_len as u64);
                }
            }
        }
    }
});
