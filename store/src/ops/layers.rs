//! The `layers` request's two ends (docs/protocol.md, "Layers and their
//! manifests"): what a server answers (`answer`: each layer ref with the
//! encoding of the manifest it names, every chunk checked as it is read),
//! and how an attach reads its upstream layers with it (`upstream`: one
//! round trip for the refs and manifests together where the store offers
//! it, else the refs through the catalog and each manifest as before).
//! Knows nothing of HTTP (the backend carries the request) nor of what an
//! attach does with the layers.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::{Backend, Prefetched};
use crate::error::{Error, Result};
use crate::format::keys::{classify, layer_prefix, ObjectKind};
use crate::format::manifest::Manifest;
use crate::format::records::{LayerRecord, Record};
use crate::id::{JobName, ManifestId, RunName};
use crate::meta::catalog::LayerRef;
use crate::protocol::layers::{LayerAnswer, MAX_LAYERS_BYTES};
use crate::read::{load_manifest, manifest_bodies};
use crate::repo::Store;

/// The server's answer to `layers` for `keys` (each a layer ref's key):
/// every ref, and its manifest's encoding read chunk by chunk, each chunk
/// checked against its id and read once however many manifests hold it.
/// A key that is not a layer ref is `BadRequest`; manifests summing past
/// `MAX_LAYERS_BYTES` are `TooLarge`; a missing object is its `NotFound`.
pub fn answer(store: &Store, keys: &[String]) -> Result<Vec<LayerAnswer>> {
    for key in keys {
        if !matches!(classify(key)?, ObjectKind::Layer(..)) {
            return Err(Error::BadRequest {
                detail: format!("layers: {key} is not a layer ref"),
            });
        }
    }
    let refs: Vec<Vec<u8>> = keys
        .par_iter()
        .map(|k| store.backend().get(k))
        .collect::<Result<_>>()?;
    let mut ids: Vec<ManifestId> = Vec::with_capacity(keys.len());
    for (key, bytes) in keys.iter().zip(&refs) {
        ids.push(LayerRecord::decode(key, bytes)?.manifest);
    }
    // Each manifest once, however many refs name it.
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    let locate = |ids: &[_]| store.chunk_lookup().locate(ids);
    let (bodies, _) = manifest_bodies(store, &locate, &unique, MAX_LAYERS_BYTES)?;
    let by_id: HashMap<&ManifestId, &Vec<u8>> = unique.iter().zip(&bodies).collect();
    Ok(refs
        .into_iter()
        .zip(&ids)
        .map(|(layer_ref, id)| LayerAnswer {
            layer_ref,
            manifest: by_id[id].clone(),
        })
        .collect())
}

/// The layers of `jobs` (run `run`, its listing `keys`), as the catalog
/// gives them, each with its manifest's encoding when the store answered
/// `layers` (else `None`: load it with `manifest_of`).
pub type Upstream = Vec<Vec<(LayerRef, Option<Vec<u8>>)>>;

/// The layer refs of `jobs` among `keys`, and their manifests' encodings
/// in the same round trip where the store offers `layers`.
pub fn upstream(
    store: &Store,
    run: &RunName,
    jobs: &[JobName],
    keys: &[String],
) -> Result<Upstream> {
    let prefixes: Vec<String> = jobs.iter().map(|j| layer_prefix(run, j)).collect();
    let wanted: Vec<String> = keys
        .iter()
        .filter(|k| prefixes.iter().any(|p| k.starts_with(p.as_str())))
        .cloned()
        .collect();
    let answers = match wanted.is_empty() {
        true => None,
        false => store.backend().layers(&wanted)?,
    };
    let Some(answers) = answers else {
        let listed = store
            .catalog()
            .layers_among(store.backend(), run, jobs, keys)?;
        return Ok(listed
            .into_iter()
            .map(|ls| ls.into_iter().map(|l| (l, None)).collect())
            .collect());
    };
    let mut refs = HashMap::new();
    let mut manifests = HashMap::new();
    for (key, a) in wanted.into_iter().zip(answers) {
        refs.insert(key.clone(), a.layer_ref);
        manifests.insert(key, a.manifest);
    }
    // The catalog reads the refs it has not cached from the answers.
    let held: Arc<dyn Backend> = Arc::new(Prefetched::holding(store.backend_arc(), refs));
    let listed = store
        .catalog()
        .layers_among(held.as_ref(), run, jobs, keys)?;
    Ok(listed
        .into_iter()
        .map(|ls| {
            ls.into_iter()
                .map(|l| {
                    let body = manifests.remove(&l.key);
                    (l, body)
                })
                .collect()
        })
        .collect())
}

/// A layer's manifest: decoded and checked against its id from `body`
/// when the `layers` answer carried it, else read from the store. Returns
/// it with the bytes read.
pub fn manifest_of(
    store: &Store,
    id: &ManifestId,
    body: Option<Vec<u8>>,
) -> Result<(Manifest, u64)> {
    match body {
        Some(body) => Ok((Manifest::decode(id, &body)?, body.len() as u64)),
        None => load_manifest(store, id),
    }
}
