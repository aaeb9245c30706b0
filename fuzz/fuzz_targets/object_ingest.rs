//! What a server is given by an untrusted client: a key and its bytes.
//! Classifying the key and decoding the object as its kind (packs, index
//! objects, manifests, runs, layer refs, results, uses, reruns, cache
//! entries, gc's records) never panics.
//! (The first byte picks the key's kind; the rest is the object.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_store::id::{IndexId, ManifestId, PackId};
use strata_store::index::{pack_key, IndexObject};
use strata_store::ingest::{classify, ObjectKind};
use strata_store::manifest::ManifestRoot;
use strata_store::pack::read_trailer;
use strata_store::refs::{decode_layer, decode_run};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let key = match kind % 12 {
        0 => pack_key(&PackId::of(bytes)),
        1 => format!("index/{}", IndexId::of(bytes).to_hex()),
        2 => "runs/r/run".to_string(),
        3 => "runs/r/layers/j/0000000001-00ff".to_string(),
        4 => format!("manifests/00/{}", ManifestId::of(bytes).to_hex()),
        5 => "runs/r/results/j/001790000000-00ff".to_string(),
        6 => "runs/r/used/001790000000-00ff".to_string(),
        7 => "runs/r/rerun".to_string(),
        8 => "caches/6b6579/001790000000-00ff".to_string(),
        9 => "gc/condemned/001790000000-00ff".to_string(),
        10 => "runs/r/expired".to_string(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    let Ok(kind) = classify(&key) else {
        return;
    };
    match kind {
        ObjectKind::Pack(_) => {
            let _ = read_trailer(bytes, &key);
        }
        ObjectKind::Index(id) => {
            let _ = IndexObject::decode(&id, bytes);
        }
        ObjectKind::Manifest(id) => {
            let _ = ManifestRoot::decode(&id, bytes);
        }
        ObjectKind::Run(_) => {
            let _ = decode_run(&key, bytes);
        }
        ObjectKind::Layer(..) => {
            let _ = decode_layer(&key, bytes);
        }
        ObjectKind::Result(..) => {
            let _ = strata_store::lifecycle::decode_result(&key, bytes);
        }
        ObjectKind::Used(_) | ObjectKind::CacheUsed => {
            let _ = strata_store::lifecycle::decode_use(&key, bytes);
        }
        ObjectKind::Expired(_) => {
            let _ = strata_store::lifecycle::decode_expired(&key, bytes);
        }
        ObjectKind::Rerun(_) => {
            let _ = strata_store::rerun::decode_rerun(&key, bytes);
        }
        ObjectKind::Cache => {
            let _ = strata_store::caches::decode_cache(&key, bytes);
        }
        ObjectKind::Condemned => {
            let _ = strata_store::gc::decode_condemned(&key, bytes);
        }
        ObjectKind::Config => {}
    }
});
