//! Untrusted manifest bytes: decoding never panics, and whatever decodes
//! passes validation and survives a round trip through its canonical
//! encoding (the input itself may be a non-canonical one, e.g. a front
//! coding that shares fewer bytes than it could). Read as a stream, in
//! pieces of a size the first byte picks (frames and lengths cut anywhere),
//! the same bytes give the same entries, or an error where the whole
//! decoder gives one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::manifest::{Entry, Manifest, ManifestRoot};
use strata_store::format::manifest_stream::EntryStream;
use strata_store::ManifestId;

fuzz_target!(|data: &[u8]| {
    // The id matches by construction, so the decoder itself is exercised.
    let id = ManifestId::of(data);
    let whole = Manifest::decode(&id, data);
    if let Ok(m) = &whole {
        m.validate("fuzz").expect("decode validates");
        let (id2, canonical) = m.encode();
        let again = Manifest::decode(&id2, &canonical).expect("canonical form decodes");
        assert_eq!(&again, m);
    }
    let piece = 1 + data.first().map_or(0, |b| *b as usize % 64);
    let pieces = data.chunks(piece).map(Ok::<_, strata_store::Error>);
    let streamed: Result<Vec<Entry>, _> = EntryStream::new(id, pieces).collect();
    match (&whole, &streamed) {
        (Ok(m), Ok(entries)) => assert_eq!(&m.entries, entries),
        (Err(_), Err(_)) => {}
        (w, s) => panic!("whole {w:?}, streamed {s:?}"),
    }
    let _ = ManifestRoot::decode(&id, data);
});
