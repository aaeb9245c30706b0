//! Writes valid objects for the fuzz targets to start from:
//! `cargo run -p strata-store --example fuzz_seeds -- fuzz/seeds`.
//! Without them a fuzzer spends its time rediscovering the magic numbers.

use std::fs;
use std::path::Path;

use strata_store::format::index::{IndexObject, IndexedPack};
use strata_store::format::manifest::{
    ChunkRef, Entry, EntryKind, Manifest, ManifestRoot, Mtime, RelPath,
};
use strata_store::format::pack::{FrameBuilder, FrameEntry, PackBuilder};
use strata_store::id::{ChunkId, PackId};

fn path(s: &str) -> RelPath {
    RelPath::new(s.as_bytes().to_vec()).unwrap()
}

/// Writes `bytes` as seed `name` of fuzz target `target` under the output
/// directory.
struct Seeds<'a>(&'a Path);

impl Seeds<'_> {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) {
        let d = self.0.join(target);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(name), bytes).unwrap();
    }
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: fuzz_seeds DIR");
    let seeds = Seeds(Path::new(&out));
    manifests(&seeds);
    let (pack_id, frames) = packs(&seeds);
    index(&seeds, pack_id, frames);
    seeds.write(
        "config_decode",
        "config",
        &strata_store::format::config::StoreConfig::new("seed".into()).encode(),
    );
    server_answers(&seeds);
    server_requests(&seeds);
    for (i, p) in ["node_modules/a/b.js", "ünï/日本", "a b/c", "x"]
        .iter()
        .enumerate()
    {
        seeds.write("path_validation", &format!("path{i}"), p.as_bytes());
    }
    locations(&seeds);
}

/// A manifest with one entry of each kind, and a manifest root.
fn manifests(seeds: &Seeds) {
    let chunk = ChunkRef {
        id: ChunkId::of(b"hello"),
        len: 5,
    };
    let entry = |p: &str, kind: EntryKind| Entry {
        path: path(p),
        mode: 0o755,
        mtime: Mtime {
            secs: 1_700_000_000,
            nanos: 5,
        },
        kind,
    };
    let m = Manifest {
        entries: vec![
            entry("d", EntryKind::Dir),
            entry(
                "d/f",
                EntryKind::File {
                    size: 5,
                    chunks: vec![chunk],
                },
            ),
            entry(
                "d/g",
                EntryKind::Hardlink {
                    target: path("d/f"),
                },
            ),
            entry(
                "d/l",
                EntryKind::Symlink {
                    target: b"../x".to_vec(),
                },
            ),
        ],
    };
    let (_, body) = m.encode();
    seeds.write("manifest_decode", "manifest", &body);
    seeds.write(
        "manifest_decode",
        "root",
        &ManifestRoot {
            len: 5,
            chunks: vec![chunk],
        }
        .encode(),
    );
}

/// A pack of one frame of two chunks, and that frame on its own; returns
/// the pack's id and frames for the index seed.
fn packs(seeds: &Seeds) -> (PackId, Vec<FrameEntry>) {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    let mut frame = FrameBuilder::default();
    frame.push(ChunkId::of(b"hello"), b"hello");
    frame.push(ChunkId::of(b"world world world"), b"world world world");
    let mut pack = PackBuilder::new();
    pack.push(frame.seal(&mut c));
    let (pack_id, pack_bytes, frames) = pack.finish();
    seeds.write("pack_trailer", "pack", &pack_bytes);
    seeds.write("pack_verify", "pack", &pack_bytes);
    for (i, f) in frames.iter().enumerate() {
        let mut seed = vec![f.compression as u8];
        seed.extend_from_slice(&f.raw_len.to_le_bytes());
        seed.push(0);
        seed.extend_from_slice(&pack_bytes[f.offset as usize..(f.offset + f.stored_len) as usize]);
        seeds.write("frame_decode", &format!("frame{i}"), &seed);
    }
    (pack_id, frames)
}

/// An index object listing that pack.
fn index(seeds: &Seeds, pack: PackId, frames: Vec<FrameEntry>) {
    let (_, index) = IndexObject {
        packs: vec![IndexedPack { pack, frames }],
    }
    .encode();
    seeds.write("index_decode", "index", &index);
}

/// One answer of each kind a client decodes from a server.
fn server_answers(seeds: &Seeds) {
    let answers: [&[u8]; 5] = [
        br#"{"protocol":1}"#,
        br#"{"keys":["packs/00/x","runs/r/run"]}"#,
        br#"{"error":"no such run"}"#,
        &serde_json::to_vec(&serde_json::json!({
            "location": "x", "runs": 1, "layers": 1, "manifests": 1, "packs": 1,
            "chunks": 2, "logical_bytes": 10, "stored_bytes": 9
        }))
        .unwrap(),
        &serde_json::to_vec(&strata_store::gc::GcReport::default()).unwrap(),
    ];
    for (i, a) in answers.iter().enumerate() {
        let mut seed = vec![i as u8];
        seed.extend_from_slice(a);
        seeds.write("server_answers", &format!("answer{i}"), &seed);
    }
}

/// Request bodies and keys of each kind the server decodes.
fn server_requests(seeds: &Seeds) {
    for (i, seed) in [
        &b"\x00{\"key\":\"packs/00/00\",\"ranges\":[[0,10],[20,30]]}"[..],
        b"\x00{\"key\":\"packs/00/00\",\"ranges\":[[0,4611686018427387904],[0,4611686018427387904]]}",
        b"\x01runs/\x00runs/r1/used/",
        b"\x01../b/runs/",
        b"\x02\x10\x0e\x00\x00\x00\x00\x00\x00",
        b"\x04runs/r/used/000000000001-ab",
        b"\x04caches/6162/000000000001-ab",
    ]
    .iter()
    .enumerate()
    {
        seeds.write("server_requests", &format!("request{i}"), seed);
    }
}

/// A locate answer for two ids: one located, one not.
fn locations(seeds: &Seeds) {
    let mut record = [0u8; strata_store::format::index::LOCATION_LEN];
    record[40] = 5;
    let mut seed = vec![2u8];
    seed.extend_from_slice(&strata_store::protocol::encode_located(&[
        Some(record),
        None,
    ]));
    seeds.write("locations_decode", "two", &seed);
}
