//! The server decompresses each frame and hashes each chunk at most once
//! per request. Counted by the store library's work counters (its
//! `work-counts` feature, which this crate's tests turn on:
//! `strata_store::format::work`), with the server in this process and
//! nothing else working while a request runs. Alone in its test binary,
//! so no other test's work is counted.

use std::collections::HashSet;
use std::path::Path;

use strata_server::{serve, Limits, ServerConfig};
use strata_store::backend::{Backend, LocalDir};
use strata_store::format::index::IndexObject;
use strata_store::format::manifest::ManifestRoot;
use strata_store::format::pack::read_trailer;
use strata_store::format::records::{LayerRecord, Record};
use strata_store::format::work;
use strata_store::id::{IndexId, ManifestId};
use strata_store::persist::{persist, PersistRequest};
use strata_store::{Clock, Graph, JobName, Quiet, RunName, Store};

/// Writes `n` files of 96 KiB of mixed text and noise under `dir`.
fn files(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x: u64 = 7;
    for i in 0..n {
        let mut bytes = Vec::with_capacity(96 << 10);
        while bytes.len() < 96 << 10 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match (x >> 60) % 2 {
                0 => bytes.extend_from_slice(format!("line {i} {x}\n").as_bytes()),
                _ => bytes.extend_from_slice(&x.to_le_bytes()),
            }
        }
        std::fs::write(dir.join(format!("f{i:03}")), bytes).unwrap();
    }
}

/// Starts `strata serve` on `store` in this process; its base URL.
fn start(store: &Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: store.to_str().unwrap().into(),
        auth: None,
        oidc: None,
        insecure: false,
        tls: None,
        max_body: 64 << 20,
        limits: Limits::default(),
        rate: None,
        meta_dir: store.join("meta"),
        log: false,
        gc_every: None,
        budgets: Default::default(),
        resync_every: None,
        presign_ttl: None,
        workers: 2,
        clock: Clock::System,
    };
    std::thread::spawn(move || serve(config, |s| tx.send(s.url.clone()).unwrap()).unwrap());
    rx.recv().unwrap()
}

/// Sends one request; its status.
fn send(method: &str, url: &str, body: &[u8]) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = match method {
        "PUT" => agent.put(url).send(body),
        _ => agent.post(url).send(body),
    };
    r.unwrap().status().as_u16()
}

/// The frames and chunks of pack `key` in `local` (its trailer).
fn frames_and_chunks(local: &LocalDir, key: &str) -> (u64, u64) {
    let bytes = local.get(key).unwrap();
    let frames = read_trailer(&bytes, key).unwrap();
    let chunks = frames.iter().map(|f| f.chunks.len() as u64).sum();
    (frames.len() as u64, chunks)
}

// A persist's objects sent to the server as a client sends them: each
// pack's PUT decompresses each of its frames and hashes each of its chunks
// once (no more: counted, not timed), and the commit (index object, root
// and layer ref in one `objects` request) reads the manifest's chunks
// once, to check that every chunk its files name is stored.
#[test]
fn the_server_decompresses_and_hashes_each_chunk_once_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    files(&d.join("src/out"), 40);
    let local_root = d.join("local");
    let store = Store::open(&local_root, &Quiet).unwrap();
    let run = RunName::new("r").unwrap();
    store
        .create_run(&run, Graph::from_specs(&["build"]).unwrap(), None)
        .unwrap();
    persist(
        &store,
        &PersistRequest {
            run: run.clone(),
            job: JobName::new("build").unwrap(),
            root: d.join("src"),
            paths: vec!["out".into()],
            allow_empty: false,
            writer: None,
        },
    )
    .unwrap();
    let local = LocalDir::new(&local_root, d.join("tmp")).unwrap();
    let ns = format!("{}/v1/ns/team/", start(&d.join("srv")));
    let object = |key: &str| format!("{ns}o/{key}");
    assert_eq!(
        send(
            "PUT",
            &object("runs/r/run"),
            &local.get("runs/r/run").unwrap()
        ),
        204
    );

    let packs = local.list("packs/").unwrap();
    assert!(!packs.is_empty(), "{packs:?}");
    for key in &packs {
        let (frames, chunks) = frames_and_chunks(&local, key);
        work::take();
        assert_eq!(send("PUT", &object(key), &local.get(key).unwrap()), 204);
        let done = work::take();
        assert_eq!((done.frames, done.chunks), (frames, chunks), "PUT {key}");
        assert!(
            frames >= 1 && chunks > frames,
            "{key}: {frames} frames, {chunks} chunks"
        );
    }

    // The commit: the manifest's chunks, each once, in the frames that
    // hold them (found from the index object's listing, not the server).
    let index_key = local.list("index").unwrap().pop().unwrap();
    let manifest_key = local.list("manifests/").unwrap().pop().unwrap();
    let layer_key = local.list("runs/r/layers/").unwrap().pop().unwrap();
    let index_bytes = local.get(&index_key).unwrap();
    let index_id: IndexId = index_key
        .rsplit(['/', '-'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let index = IndexObject::decode(&index_id, &index_bytes).unwrap();
    let manifest_id: ManifestId = manifest_key.rsplit('/').next().unwrap().parse().unwrap();
    let root_bytes = local.get(&manifest_key).unwrap();
    let root = ManifestRoot::decode(&manifest_id, &root_bytes).unwrap();
    let wanted: HashSet<_> = root.chunks.iter().map(|c| c.id).collect();
    let mut frames = HashSet::new();
    for p in &index.packs {
        for f in &p.frames {
            if f.chunks.iter().any(|c| wanted.contains(&c.id)) {
                frames.insert((p.pack, f.offset));
            }
        }
    }
    let layer = local.get(&layer_key).unwrap();
    let parts: [(&str, &[u8]); 3] = [
        (&index_key, &index_bytes),
        (&manifest_key, &root_bytes),
        (&layer_key, &layer),
    ];
    let query = strata_store::protocol::objects::encode_query(&parts);
    work::take();
    assert_eq!(
        send(
            "POST",
            &format!("{ns}objects?{query}"),
            &parts
                .iter()
                .flat_map(|(_, b)| b.to_vec())
                .collect::<Vec<u8>>()
        ),
        204
    );
    let done = work::take();
    assert_eq!(
        (done.frames, done.chunks),
        (frames.len() as u64, wanted.len() as u64),
        "the commit"
    );

    // `layers` asked for the same ref twice: its manifest's chunks are
    // read once, in the frames that hold them, and the answer carries
    // the ref and the manifest's encoding for each key asked.
    let keys = vec![layer_key.clone(), layer_key.clone()];
    let body = strata_store::protocol::layers::LayersRequest { keys }.encode();
    work::take();
    let (status, answer) = post(&format!("{ns}layers"), &body);
    let done = work::take();
    assert_eq!(status, 200);
    assert_eq!(
        (done.frames, done.chunks),
        (frames.len() as u64, wanted.len() as u64),
        "layers"
    );
    let layers = strata_store::protocol::layers::decode_answer(2, &answer).unwrap();
    // The ref as stored: the client's, with the server's own time as
    // `created` (the server stamps every ref it takes).
    let sent = LayerRecord::decode(&layer_key, &layer).unwrap();
    for l in &layers {
        let stored = LayerRecord::decode(&layer_key, &l.layer_ref).unwrap();
        assert_eq!(
            (stored.manifest, stored.totals, &stored.writer),
            (sent.manifest, sent.totals, &sent.writer)
        );
        assert_eq!(ManifestId::of(&l.manifest), manifest_id);
        assert_eq!(l.manifest.len() as u64, root.len);
    }
}

/// POSTs `body`; the status and the answer's bytes.
fn post(url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.post(url).send(body).unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_vec().unwrap())
}
