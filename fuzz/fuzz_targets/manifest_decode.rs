//! Untrusted manifest bytes: decoding never panics, and whatever decodes
//! passes validation and encodes back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::manifest::{Manifest, ManifestRoot};
use strata_store::ManifestId;

fuzz_target!(|data: &[u8]| {
    // The id matches by construction, so the decoder itself is exercised.
    let id = ManifestId::of(data);
    if let Ok(m) = Manifest::decode(&id, data) {
        m.validate("fuzz").expect("decode validates");
        assert_eq!(m.encode().1, data, "a decoded manifest re-encodes to its bytes");
    }
    let _ = ManifestRoot::decode(&id, data);
});
