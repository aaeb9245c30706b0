//! Seeded random byte flips in packs, index objects and manifest roots:
//! `verify --read-data` reports every one, and an attach on a fresh runner
//! either fails or writes exactly the right files, never a wrong one.

mod common;

use std::fs;

use common::{attach_b, copy_tree, files, persist_a};
use strata_store::synth::Rng;
use strata_store::{Error, Quiet, Store};

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

    let mut rng = Rng::new(2026);
    let (mut detected, mut attach_failed) = (0, 0);
    for i in 0..FLIPS {
        let store_dir = dir.path().join(format!("s{i}"));
        copy_tree(&template, &store_dir);
        // A fresh runner: no local metadata cached from before the flip.
        let _ = fs::remove_dir_all(store_dir.join(".local"));
        let object = &targets[rng.range(0, targets.len() as u64) as usize];
        let path = store_dir.join(object);
        let mut bytes = fs::read(&path).unwrap();
        let at = rng.range(0, bytes.len() as u64) as usize;
        bytes[at] ^= 1 << rng.range(0, 8);
        fs::write(&path, &bytes).unwrap();

        let store = Store::open(&store_dir, &Quiet).unwrap();
        let report = strata_store::verify::verify(&store, true).unwrap();
        assert!(
            !report.problems.is_empty(),
            "flip {i} at byte {at} of {} went unnoticed",
            object.display()
        );
        detected += 1;

        let target = dir.path().join(format!("at{i}"));
        let result = attach_b(&store, &target);
        if let Err(e) = result {
            attach_failed += 1;
            // The error names the object at fault: the chunk and its pack, the
            // chunk and the file needing it, or the manifest.
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
        }
        for f in files(&target) {
            let rel = f.strip_prefix(&target).unwrap();
            let name = rel.file_name().unwrap().to_str().unwrap();
            assert!(!name.starts_with(".strata-tmp"), "flip {i}: left {rel:?}");
            assert_eq!(
                fs::read(&f).unwrap(),
                fs::read(src.join(rel)).unwrap(),
                "flip {i} in {}: wrong content in {rel:?}",
                object.display()
            );
        }
        drop(store);
        let _ = fs::remove_dir_all(&store_dir);
        let _ = fs::remove_dir_all(&target);
    }
    println!("{FLIPS} flips: {detected} detected by verify, {attach_failed} attaches refused, none wrote a wrong file");
    assert_eq!(detected, FLIPS);
    // Most flips land in pack data an attach needs.
    assert!(
        attach_failed > FLIPS / 2,
        "only {attach_failed} attaches failed"
    );
}
