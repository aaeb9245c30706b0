//! `strata verify`: checks the store's durable objects themselves, not the
//! local cache: every index object decodes and names packs that exist and
//! are long enough; every run record, layer ref and manifest decodes; every
//! chunk a manifest names is indexed. With `read_data`, every pack is read
//! whole, checked against its name (BLAKE3), its trailer against the index,
//! and every frame decoded and every chunk re-hashed.
//!
//! Each problem names the object at fault and the runs and jobs whose
//! layers it affects. Knows nothing about attach or persist.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::index::{chunk_locations, IndexObject, Location};
use crate::format::keys::{
    index_id_of, layer_prefix, log_time_and_id, manifest_key, pack_id_of, pack_key, INDEX_PREFIX,
    PACK_PREFIX, SNAPSHOT_PREFIX,
};
use crate::format::manifest::EntryKind;
use crate::format::pack::{verify_pack, FrameEntry};
use crate::format::records::read_deleted;
use crate::id::{ChunkId, PackId};
use crate::read::load_manifest_located;
use crate::repo::Store;

/// One problem verify found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The object at fault (`packs/ab/ab12…`, `index/…`, `runs/R/…`).
    pub object: String,
    /// What is wrong.
    pub detail: String,
    /// `run/job` of every layer that needs the object.
    pub affects: Vec<String>,
}

/// What verify checked and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Index objects read.
    pub index_objects: u64,
    /// Packs checked.
    pub packs: u64,
    /// Chunks the index objects and trailers locate.
    pub chunks: u64,
    /// Runs checked.
    pub runs: u64,
    /// Layers checked.
    pub layers: u64,
    /// Bytes of packs read and re-hashed (with `read_data`).
    pub bytes_read: u64,
    /// Problems, each with the layers it affects.
    pub problems: Vec<Problem>,
}

/// What a problem concerns, to work out which layers it affects.
enum Concern {
    Nothing,
    Layer(String),
    Pack(PackId),
    Chunk(ChunkId),
}

/// Checks the durable objects (docs/cli.md): index objects, then packs,
/// then runs, layers and manifests; each problem names the layers it
/// affects.
pub fn verify(store: &Store, read_data: bool) -> Result<VerifyReport> {
    let mut st = Findings::default();
    read_index_objects(store, &mut st)?;
    check_packs(store, read_data, &mut st)?;
    check_layers(store, &mut st)?;
    Ok(attribute(st))
}

/// What the phases learn and find.
#[derive(Default)]
struct Findings {
    report: VerifyReport,
    /// Problems: the object, what is wrong, what it concerns.
    found: Vec<(String, String, Concern)>,
    /// Where every chunk is, from the objects themselves.
    locs: HashMap<ChunkId, Location>,
    /// Each pack's frames, from an index object or its trailer.
    indexed: HashMap<PackId, Vec<FrameEntry>>,
    /// The layers (by number) that use each chunk.
    users: HashMap<ChunkId, BTreeSet<usize>>,
    /// Layer number -> `run/job`.
    layer_names: Vec<String>,
}

/// Step 1: Index objects: where every chunk is, from the objects themselves.
fn read_index_objects(store: &Store, st: &mut Findings) -> Result<()> {
    let b = store.backend();
    let deleted = read_deleted(b, &|_| None)?.packs;
    for key in b.list(INDEX_PREFIX)? {
        st.report.index_objects += 1;
        let decoded = index_id_of(&key)
            .ok_or_else(|| Error::corrupt(&key, "not an index id"))
            .and_then(|id| IndexObject::decode(&id, &b.get(&key)?));
        match decoded {
            Ok(obj) => {
                for p in obj
                    .packs
                    .into_iter()
                    .filter(|p| !deleted.contains_key(&p.pack))
                {
                    for l in chunk_locations(p.pack, &p.frames) {
                        st.locs.entry(l.chunk.id).or_insert(l);
                    }
                    st.indexed.entry(p.pack).or_insert(p.frames);
                }
            }
            Err(e) => st.found.push((key, e.to_string(), Concern::Nothing)),
        }
    }
    // Snapshots (format 2) are checked whole; the packs they list may have
    // been deleted since (gc's tombstones say so), as may those of index
    // log entries gc keeps a day.
    for key in b.list(SNAPSHOT_PREFIX)? {
        st.report.index_objects += 1;
        let decoded = log_time_and_id(&key)
            .ok_or_else(|| Error::corrupt(&key, "not a snapshot name"))
            .and_then(|(_, id)| IndexObject::decode(&id, &b.get(&key)?));
        if let Err(e) = decoded {
            st.found.push((key, e.to_string(), Concern::Nothing));
        }
    }
    st.report.chunks = st.locs.len() as u64;
    Ok(())
}

/// Step 2: Packs: present, long enough, and (`read_data`) intact.
fn check_packs(store: &Store, read_data: bool, st: &mut Findings) -> Result<()> {
    let b = store.backend();
    let mut present: HashSet<PackId> = HashSet::new();
    for key in b.list(PACK_PREFIX)? {
        st.report.packs += 1;
        let Some(id) = pack_id_of(&key) else {
            st.found
                .push((key, "not a pack name".into(), Concern::Nothing));
            continue;
        };
        present.insert(id);
        let size = b.size(&key)?;
        // A pack no index object lists (its persist died before writing
        // one, or a server st.indexed it on arrival and a retry reused it) is
        // known by its trailer, as when the index is rebuilt.
        if let std::collections::hash_map::Entry::Vacant(slot) = st.indexed.entry(id) {
            match crate::format::index::read_pack_trailer(b, &key) {
                Ok(frames) => {
                    for l in chunk_locations(id, &frames) {
                        st.locs.entry(l.chunk.id).or_insert(l);
                    }
                    slot.insert(frames);
                }
                Err(e) => {
                    st.found.push((key, e.to_string(), Concern::Pack(id)));
                    continue;
                }
            }
        }
        if let Some(frames) = st.indexed.get(&id) {
            if let Some(f) = frames
                .iter()
                .find(|f| f.offset as u64 + f.stored_len as u64 > size)
            {
                let detail = format!(
                    "{size} bytes, but the index places a frame at {}..{}",
                    f.offset,
                    f.offset + f.stored_len
                );
                st.found.push((key.clone(), detail, Concern::Pack(id)));
                continue;
            }
        }
        if read_data {
            let bytes = b.get(&key)?;
            st.report.bytes_read += bytes.len() as u64;
            if let Some(problem) = check_pack(&key, &id, &bytes, st.indexed.get(&id)) {
                st.found.push((key, problem.0, problem.1));
            }
        }
    }
    st.report.chunks = st.locs.len() as u64;
    let mut missing_packs: Vec<&PackId> = st
        .indexed
        .keys()
        .filter(|p| !present.contains(*p))
        .collect();
    missing_packs.sort();
    for p in missing_packs {
        st.found.push((
            pack_key(p),
            "listed by the index but missing".into(),
            Concern::Pack(*p),
        ));
    }
    Ok(())
}

/// Step 3: Runs, layers and manifests, read afresh from the backend.
fn check_layers(store: &Store, st: &mut Findings) -> Result<()> {
    store.catalog().clear()?;
    let locate = |ids: &[ChunkId]| Ok(ids.iter().map(|c| st.locs.get(c).copied()).collect());
    for run in store.run_names()? {
        st.report.runs += 1;
        let record = match store.run(&run) {
            Ok(r) => r,
            Err(e) => {
                st.found.push((
                    crate::format::keys::run_key(&run),
                    e.to_string(),
                    Concern::Nothing,
                ));
                continue;
            }
        };
        for spec in record.graph.jobs() {
            let name = format!("{run}/{}", spec.name);
            let layers = match store.layers(&run, &spec.name) {
                Ok(l) => l,
                Err(e) => {
                    st.found.push((
                        layer_prefix(&run, &spec.name),
                        e.to_string(),
                        Concern::Layer(name),
                    ));
                    continue;
                }
            };
            for l in layers {
                st.report.layers += 1;
                let li = st.layer_names.len();
                st.layer_names.push(name.clone());
                match load_manifest_located(store, &locate, &l.record.manifest) {
                    Ok((m, _)) => {
                        for e in &m.entries {
                            if let EntryKind::File { chunks, .. } = &e.kind {
                                for c in chunks {
                                    st.users.entry(c.id).or_default().insert(li);
                                    if !st.locs.contains_key(&c.id) {
                                        let detail = format!(
                                            "chunk {} of {} is not in the store",
                                            c.id, e.path
                                        );
                                        st.found.push((
                                            manifest_key(&l.record.manifest),
                                            detail,
                                            Concern::Chunk(c.id),
                                        ));
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => st.found.push((
                        manifest_key(&l.record.manifest),
                        e.to_string(),
                        Concern::Layer(name.clone()),
                    )),
                }
            }
        }
    }
    Ok(())
}

/// Step 4: Which layers each problem affects.
fn attribute(st: Findings) -> VerifyReport {
    let Findings {
        mut report,
        found,
        locs,
        users,
        layer_names,
        ..
    } = st;
    for (object, detail, concern) in found {
        let mut affects: BTreeSet<String> = BTreeSet::new();
        let mut add_chunk = |c: &ChunkId| {
            for &li in users.get(c).into_iter().flatten() {
                affects.insert(layer_names[li].clone());
            }
        };
        match concern {
            Concern::Nothing => {}
            Concern::Layer(name) => {
                affects.insert(name);
            }
            Concern::Chunk(c) => add_chunk(&c),
            Concern::Pack(p) => {
                for (c, l) in &locs {
                    if l.pack == p {
                        add_chunk(c);
                    }
                }
            }
        }
        report.problems.push(Problem {
            object,
            detail,
            affects: affects.into_iter().collect(),
        });
    }
    report
}

/// Checks a whole pack: its name, its trailer against the index, every
/// frame and chunk. Returns the first problem found.
fn check_pack(
    key: &str,
    id: &PackId,
    bytes: &[u8],
    indexed: Option<&Vec<FrameEntry>>,
) -> Option<(String, Concern)> {
    let pack = Concern::Pack(*id);
    match verify_pack(id, bytes, key) {
        Ok(frames) if indexed.is_some_and(|i| *i != frames) => {
            Some(("its trailer and the index disagree".into(), pack))
        }
        Ok(_) => None,
        Err(e @ Error::CorruptChunk { chunk, .. }) => Some((e.to_string(), Concern::Chunk(chunk))),
        Err(e) => Some((e.to_string(), pack)),
    }
}
