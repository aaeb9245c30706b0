//! Seeded random byte flips in packs, index objects and manifest roots:
//! `verify --read-data` reports every one, and an attach on a fresh runner
//! refuses, unless the flip is in a part that cannot change what is
//! written, and then the attached tree is exactly the persisted one.
//!
//! The parts that cannot change what is written:
//! - an index object: it is a cache of pack trailers, hashed to its name;
//!   a corrupt one is skipped and the packs it listed are read from their
//!   own trailers;
//! - a pack's header, trailer or footer: attach reads frames at the offsets
//!   the (intact) index object gives and checks every chunk against its id;
//! - a bit inside a frame that the frame's decoder ignores: the frame
//!   decodes to the same bytes (checked here by decoding it);
//! - a pack's salt, its last frame: 16 random bytes as one chunk no
//!   manifest names (docs/format.md), which attach never reads.
//!
//! A flip in those parts must not make attach refuse: the tree attached is
//! exactly the persisted one.
//!
//! Everywhere else (manifest roots, frame bytes that matter) attach must
//! refuse, naming the object at fault.

use crate::common;

use std::fs;

use common::{attach_b, copy_tree, files, persist_a};
use strata_store::format::pack::{decode_frame, read_trailer};
use strata_store::synth::Rng;
use strata_store::testing::assert_same_tree;
use strata_store::{Error, Quiet, Store};

/// Where a flip landed, as far as attach is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    /// Cannot change what is written (see the module doc).
    IndexObject,
    PackFraming,
    IgnoredFrameBit,
    Salt,
    /// A frame whose every chunk the layer's packs also hold elsewhere
    /// (two files with the same content chunked at once may store a chunk
    /// twice; the index names one copy): attach may read the other copy,
    /// so it refuses or writes the exact tree.
    DuplicateCopy,
    /// Can: attach must refuse.
    FrameData,
    ManifestRoot,
}

impl Part {
    fn harmless(self) -> bool {
        matches!(
            self,
            Part::IndexObject
                | Part::PackFraming
                | Part::IgnoredFrameBit
                | Part::Salt
                | Part::DuplicateCopy
        )
    }

    /// Attach must write the exact tree: a refusal is wrong too.
    fn must_attach(self) -> bool {
        self.harmless() && self != Part::DuplicateCopy
    }
}

/// Which part of `object` (its bytes before and after the flip at `at`)
/// the flip hit.
fn part_hit(
    object: &std::path::Path,
    before: &[u8],
    after: &[u8],
    at: usize,
    copies: &std::collections::HashMap<strata_store::ChunkId, usize>,
) -> Part {
    let top = object.iter().next().unwrap().to_str().unwrap();
    match top {
        "index" => Part::IndexObject,
        "manifests" => Part::ManifestRoot,
        "packs" => {
            let frames = read_trailer(before, "original").unwrap();
            let Some(f) = frames
                .iter()
                .find(|f| (f.offset as usize..(f.offset + f.stored_len) as usize).contains(&at))
            else {
                return Part::PackFraming;
            };
            let last = frames.iter().map(|f| f.offset).max();
            if Some(f.offset) == last && f.chunks.len() == 1 && f.chunks[0].len == 16 {
                return Part::Salt;
            }
            if f.chunks.iter().all(|c| copies.get(&c.id) > Some(&1)) {
                return Part::DuplicateCopy;
            }
            let range = f.offset as usize..(f.offset + f.stored_len) as usize;
            let old = decode_frame(&f.frame_ref(), &before[range.clone()], "original").unwrap();
            match decode_frame(&f.frame_ref(), &after[range], "flipped") {
                Ok(new) if new == old => Part::IgnoredFrameBit,
                _ => Part::FrameData,
            }
        }
        other => panic!("unexpected object {other}"),
    }
}

const FLIPS: u64 = 120;

#[test]
fn every_flip_is_detected_and_nothing_wrong_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    strata_store::synth::generate(&src, 40, 9).unwrap();
    let template = dir.path().join("template");
    persist_a(
        &Store::open(&template, &Quiet).unwrap(),
        &src,
        &["node_modules"],
    )
    .unwrap();
    // The objects a flip may hit, and their sizes.
    let targets: Vec<std::path::PathBuf> = ["packs", "index", "manifests"]
        .iter()
        .flat_map(|d| files(&template.join(d)))
        .map(|p| p.strip_prefix(&template).unwrap().to_path_buf())
        .collect();
    assert!(targets.len() >= 3);
    // How many copies of each chunk the packs hold.
    let mut copies = std::collections::HashMap::new();
    for t in targets.iter().filter(|t| t.starts_with("packs")) {
        let bytes = fs::read(template.join(t)).unwrap();
        for f in read_trailer(&bytes, "template").unwrap() {
            for c in f.chunks {
                *copies.entry(c.id).or_insert(0) += 1;
            }
        }
    }

    let mut rng = Rng::new(2026);
    let mut parts: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut attach_failed = 0;
    for i in 0..FLIPS {
        let store_dir = dir.path().join(format!("s{i}"));
        copy_tree(&template, &store_dir);
        // A fresh runner: no local metadata cached from before the flip.
        let _ = fs::remove_dir_all(store_dir.join(".local"));
        let object = &targets[rng.range(0, targets.len() as u64) as usize];
        let path = store_dir.join(object);
        let before = fs::read(&path).unwrap();
        let mut bytes = before.clone();
        let at = rng.range(0, bytes.len() as u64) as usize;
        bytes[at] ^= 1 << rng.range(0, 8);
        fs::write(&path, &bytes).unwrap();
        let part = part_hit(object, &before, &bytes, at, &copies);

        let store = Store::open(&store_dir, &Quiet).unwrap();
        let report = strata_store::verify::verify(&store, true).unwrap();
        assert!(
            !report.problems.is_empty(),
            "flip {i} at byte {at} of {} went unnoticed by verify",
            object.display()
        );

        let target = dir.path().join(format!("at{i}"));
        let tally = parts.entry(format!("{part:?}")).or_default();
        tally.0 += 1;
        match attach_b(&store, &target) {
            Err(e) => {
                assert!(
                    !part.must_attach(),
                    "flip {i} at byte {at} of {} ({part:?}) cannot change what is \
                     written, yet attach refused: {e}",
                    object.display()
                );
                attach_failed += 1;
                tally.1 += 1;
                // The error names the object at fault: the chunk and its
                // pack, the chunk and the file needing it, or the manifest.
                assert!(
                    matches!(
                        e,
                        Error::CorruptChunk { .. }
                            | Error::MissingChunk { .. }
                            | Error::Corrupt { .. }
                            | Error::UnsupportedVersion { .. }
                    ),
                    "flip {i}: {e}"
                );
                // Nothing half-written is left behind.
                for f in files(&target) {
                    let name = f.file_name().unwrap().to_str().unwrap();
                    assert!(!name.starts_with(".strata-tmp"), "flip {i}: left {f:?}");
                }
            }
            Ok(_) => {
                assert!(
                    part.harmless(),
                    "flip {i} at byte {at} of {} ({part:?}) changes what attach reads, \
                     yet attach did not refuse",
                    object.display()
                );
                assert_same_tree(&src.join("node_modules"), &target.join("node_modules"));
            }
        }
        drop(store);
        let _ = fs::remove_dir_all(&store_dir);
        let _ = fs::remove_dir_all(&target);
    }
    println!(
        "{FLIPS} flips, all detected by verify; {attach_failed} attaches refused; \
         by part (flips, refused): {parts:?}"
    );
    // The seeded flips reach every kind of object.
    for p in ["FrameData", "ManifestRoot", "IndexObject"] {
        assert!(parts.contains_key(p), "no flip landed in {p}: {parts:?}");
    }
}
