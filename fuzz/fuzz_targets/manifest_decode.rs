//! Untrusted manifest bytes: decoding never panics, and whatever decodes
//! passes validation and survives a round trip through its canonical
//! encoding (the input itself may be a non-canonical one, e.g. a front
//! coding that shares fewer bytes than it could).
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::manifest::{Manifest, ManifestRoot};
use strata_store::ManifestId;

fuzz_target!(|data: &[u8]| {
    // The id matches by construction, so the decoder itself is exercised.
    let id = ManifestId::of(data);
    if let Ok(m) = Manifest::decode(&id, data) {
        m.validate("fuzz").expect("decode validates");
        let (id2, canonical) = m.encode();
        let again = Manifest::decode(&id2, &canonical).expect("canonical form decodes");
        assert_eq!(again, m);
    }
    let _ = ManifestRoot::decode(&id, data);
});
