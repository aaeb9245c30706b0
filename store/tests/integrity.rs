//! A store whose bytes went bad fails loudly and leaves the target clean;
//! a store whose local metadata is lost rebuilds it from the objects.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{attach_b, files, persist_a};
use strata_store::{Error, Quiet, Store};

fn setup(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    strata_store::synth::generate(&src, 60, 5).unwrap();
    persist_a(
        &Store::open(&dir.join("store"), &Quiet).unwrap(),
        &src,
        &["node_modules"],
    )
    .unwrap();
    src
}

fn attach_to(dir: &Path, at: &Path) -> strata_store::Result<()> {
    attach_b(&Store::open(&dir.join("store"), &Quiet)?, at).map(|_| ())
}

// A flipped byte in a pack: attach names the chunk and the pack, and leaves
// no temporary file and no file with wrong content under a final name.
#[test]
fn corrupt_pack_fails_attach_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let src = setup(dir.path());
    let packs = files(&dir.path().join("store/packs"));
    let pack = &packs[0];
    let mut bytes = fs::read(pack).unwrap();
    bytes[100] ^= 0x40;
    fs::write(pack, &bytes).unwrap();

    let at = dir.path().join("at");
    let err = attach_to(dir.path(), &at).unwrap_err();
    assert!(
        matches!(err, Error::CorruptChunk { .. } | Error::Corrupt { .. }),
        "{err}"
    );
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(name), "{err}");
    for f in files(&at) {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(!name.starts_with(".strata-tmp"), "left {f:?}");
        let rel = f.strip_prefix(&at).unwrap();
        assert_eq!(
            fs::read(&f).unwrap(),
            fs::read(src.join(rel)).unwrap(),
            "{rel:?}"
        );
    }
}

// Deleting the local metadata loses nothing: it is rebuilt from the objects.
#[test]
fn local_metadata_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let src = setup(dir.path());
    fs::remove_dir_all(dir.path().join("store/.local")).unwrap();
    let at = dir.path().join("at");
    attach_to(dir.path(), &at).unwrap();
    strata_store::testing::assert_same_tree(&src.join("node_modules"), &at.join("node_modules"));
    // And a second persist of the same tree finds every chunk again.
    let store = Store::open(&dir.path().join("store"), &Quiet).unwrap();
    let again = persist_a(&store, &src, &["node_modules"]).unwrap();
    assert_eq!(again.chunks_new, 0);
}
