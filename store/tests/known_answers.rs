//! Format stability: the chunk boundaries and ids of a checked-in input are
//! pinned. If this test fails, chunk ids changed, and every existing store
//! would stop deduplicating against new persists: that needs a new store
//! format version, not a new expected file.
//!
//! To create the expected file for a new format: `STRATA_BLESS=1 cargo test
//! -p strata-store --test testsuite known_answers::`.

use std::fmt::Write;
use std::path::Path;

use strata_store::format::chunking::{chunk_slice, ChunkerParams};

fn cuts(data: &[u8]) -> String {
    let mut out = String::new();
    let mut offset = 0;
    chunk_slice(data, ChunkerParams::DEFAULT, &mut |id, bytes| {
        writeln!(out, "{offset} {} {id}", bytes.len()).unwrap();
        offset += bytes.len();
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn chunk_boundaries_and_ids_are_pinned() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let input = std::fs::read(dir.join("kat-input.bin")).unwrap();
    assert_eq!(input.len(), 1 << 20, "the checked-in input changed");
    let got = cuts(&input);
    let expected_path = dir.join("kat-cuts.txt");
    if std::env::var_os("STRATA_BLESS").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
    }
    let expected = std::fs::read_to_string(expected_path).unwrap();
    assert_eq!(got, expected);
    assert!(
        got.lines().count() >= 8,
        "the input should make several chunks"
    );
}
