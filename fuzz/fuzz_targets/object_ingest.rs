//! What a server is given by an untrusted client: a key and its bytes.
//! Classifying the key and decoding the object as its kind (packs, index
//! objects, manifests, runs, layer refs, results, uses, reruns, cache
//! entries, gc's records) never panics.
//! (The first byte picks the key's kind; the rest is the object.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::format::index::IndexObject;
use strata_store::format::keys::{
    self, cache_prefix, classify, hex_key, index_key, manifest_key, pack_key, ObjectKind,
};
use strata_store::format::manifest::ManifestRoot;
use strata_store::format::pack::read_trailer;
use strata_store::format::records::{
    CacheRecord, Condemned, Deleted, ExpiredRecord, Lease, JobResult, LayerRecord, Record, RerunRecord, RunRecord,
    UseRecord,
};
use strata_store::id::{IndexId, JobName, ManifestId, PackId, RunName};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let run = RunName::new("r").unwrap();
    let job = JobName::new("j").unwrap();
    const T: i64 = 1_790_000_000;
    let key = match kind % 14 {
        0 => pack_key(&PackId::of(bytes)),
        1 => index_key(&IndexId::of(bytes)),
        2 => keys::run_key(&run),
        3 => keys::layer_key(&run, &job, 1),
        4 => manifest_key(&ManifestId::of(bytes)),
        5 => keys::timed_key(&keys::job_results_prefix(&run, &job), T),
        6 => keys::timed_key(&keys::used_prefix(&run), T),
        7 => keys::rerun_key(&run),
        8 => keys::timed_key(&cache_prefix(&format!("{}/", hex_key("key"))), T),
        9 => keys::timed_key(keys::CONDEMNED_PREFIX, T),
        10 => keys::expired_key(&run),
        12 => keys::snapshot_key(&IndexId::of(bytes), T),
        13 => keys::timed_key(keys::DELETED_PREFIX, T),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    let Ok(kind) = classify(&key) else {
        return;
    };
    match kind {
        ObjectKind::Pack(_) => {
            let _ = read_trailer(bytes, &key);
        }
        ObjectKind::Index(id) | ObjectKind::Snapshot(id) => {
            let _ = IndexObject::decode(&id, bytes);
        }
        ObjectKind::Manifest(id) => {
            let _ = ManifestRoot::decode(&id, bytes);
        }
        ObjectKind::Run(_) => {
            let _ = RunRecord::decode(&key, bytes);
        }
        ObjectKind::Layer(..) => {
            let _ = LayerRecord::decode(&key, bytes);
        }
        ObjectKind::Result(..) => {
            let _ = JobResult::decode(&key, bytes);
        }
        ObjectKind::Used(_) | ObjectKind::CacheUsed => {
            let _ = UseRecord::decode(&key, bytes);
        }
        ObjectKind::Expired(_) => {
            let _ = ExpiredRecord::decode(&key, bytes);
        }
        ObjectKind::Rerun(_) => {
            let _ = RerunRecord::decode(&key, bytes);
        }
        ObjectKind::Cache => {
            let _ = CacheRecord::decode(&key, bytes);
        }
        ObjectKind::Condemned => {
            let _ = Condemned::decode(&key, bytes);
        }
        ObjectKind::Deleted => {
            let _ = Deleted::decode(&key, bytes);
        }
        ObjectKind::Lease => {
            let _ = Lease::decode(&key, bytes);
        }
        ObjectKind::Config => {}
    }
});
