//! A store whose bytes went bad fails loudly and leaves the target clean;
//! a store whose local metadata is lost rebuilds it from the objects.

use std::fs;
use std::path::{Path, PathBuf};

use strata_store::attach::{attach, AttachRequest};
use strata_store::persist::{persist, PersistRequest};
use strata_store::{Error, Graph, JobName, Quiet, RunName, Store};

fn setup(dir: &Path) -> (PathBuf, RunName) {
    let src = dir.join("src");
    strata_store::synth::generate(&src, 60, 5).unwrap();
    let store = Store::open(&dir.join("store"), &Quiet).unwrap();
    let run = RunName::new("r").unwrap();
    store
        .create_run(&run, Graph::from_specs(&["a", "b:a"]).unwrap())
        .unwrap();
    persist(
        &store,
        &PersistRequest {
            run: run.clone(),
            job: JobName::new("a").unwrap(),
            root: src.clone(),
            paths: vec![PathBuf::from("node_modules")],
        },
    )
    .unwrap();
    (src, run)
}

fn attach_to(dir: &Path, run: &RunName, at: &Path) -> strata_store::Result<()> {
    let store = Store::open(&dir.join("store"), &Quiet)?;
    attach(
        &store,
        &AttachRequest {
            run: run.clone(),
            job: JobName::new("b").unwrap(),
            at: at.to_path_buf(),
        },
    )
    .map(|_| ())
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect()
}

// A flipped byte in a pack: attach names the chunk and the pack, and leaves
// no temporary file and no file with wrong content under a final name.
#[test]
fn corrupt_pack_fails_attach_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (src, run) = setup(dir.path());
    let packs = files_under(&dir.path().join("store/packs"));
    let pack = &packs[0];
    let mut bytes = fs::read(pack).unwrap();
    bytes[100] ^= 0x40;
    fs::write(pack, &bytes).unwrap();

    let at = dir.path().join("at");
    let err = attach_to(dir.path(), &run, &at).unwrap_err();
    assert!(
        matches!(err, Error::CorruptChunk { .. } | Error::Corrupt { .. }),
        "{err}"
    );
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(name), "{err}");
    for f in files_under(&at) {
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
    let (src, run) = setup(dir.path());
    fs::remove_dir_all(dir.path().join("store/.local")).unwrap();
    let at = dir.path().join("at");
    attach_to(dir.path(), &run, &at).unwrap();
    for f in files_under(&src.join("node_modules")) {
        let rel = f.strip_prefix(&src).unwrap();
        assert_eq!(fs::read(&f).unwrap(), fs::read(at.join(rel)).unwrap());
    }
    // And a second persist of the same tree finds every chunk again.
    let store = Store::open(&dir.path().join("store"), &Quiet).unwrap();
    let again = persist(
        &store,
        &PersistRequest {
            run,
            job: JobName::new("a").unwrap(),
            root: src,
            paths: vec![PathBuf::from("node_modules")],
        },
    )
    .unwrap();
    assert_eq!(again.chunks_new, 0);
}
