//! Planning an attach: merging the layers a job sees into one tree, and
//! finding conflicts, from the manifests alone (before any file is written
//! or any chunk read).
//!
//! The rules (docs/architecture.md, "Attach rules"):
//! - layers apply in the graph's topological order, a job's own layers in
//!   persist order; a later entry replaces an earlier one at the same path,
//!   and a non-directory replaces everything below it;
//! - two jobs that are not ancestor and descendant of each other and that
//!   wrote the same path conflict, unless both wrote identical content (same
//!   type, same bytes and permission bits, or same link target; directories
//!   never conflict with each other). A file in one and a directory in the
//!   other always conflict.
//!
//! Since the topological order is fixed and every pair of unrelated writers
//! is checked, the result never depends on scheduling or finish order.
//!
//! With `--only` (a `Selection`), a path it does not keep is passed over:
//! neither planned nor checked, only counted as skipped. The paths it
//! keeps are merged and checked by the same rules, so a subset's plan is
//! the whole plan's entries at those paths.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::graph::Graph;
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest, Mtime, RelPath, Totals};
use crate::id::{JobName, ManifestId};
use crate::tree::subset::{ancestors, Selection};

/// One layer to apply, in apply order.
#[derive(Debug, Clone)]
pub struct Layer {
    pub job: JobName,
    /// The CI leg of the job that wrote it, if any: legs of one job are
    /// separate writers (a path two legs wrote differently conflicts).
    pub leg: Option<String>,
    /// The job's index in the graph.
    pub job_index: usize,
    pub key: String,
    pub manifest_id: ManifestId,
    pub manifest: Arc<Manifest>,
}

#[derive(Debug, Clone)]
pub struct Planned {
    pub path: RelPath,
    pub mode: u32,
    pub mtime: Mtime,
    /// What to create: a hardlink here names a file of the plan, whose
    /// path is planned too.
    pub target: EntryKind,
    /// Index into the plan's layers of the layer this entry comes from.
    pub layer: usize,
}

/// A layer applied by a plan: who wrote it and what it held (its entries
/// are in the plan now).
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    pub job: JobName,
    pub leg: Option<String>,
    pub job_index: usize,
    pub key: String,
    pub manifest_id: ManifestId,
    /// What the layer's manifest held.
    pub totals: Totals,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub layers: Vec<PlannedLayer>,
    /// Sorted by path, so every directory comes before what it holds.
    pub entries: Vec<Planned>,
    /// Bytes read from the store to load the manifests.
    pub manifest_bytes: u64,
    /// What the layers hold outside an `--only` (each path once, as its
    /// last write has it): not planned.
    pub skipped: Totals,
}

/// What an entry holds, for deciding whether two writes are identical.
#[derive(PartialEq)]
pub(crate) enum Content<'a> {
    Dir,
    File(u32, &'a [ChunkRef]),
    Symlink(&'a [u8]),
}

impl Content<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Content::Dir => "a directory",
            Content::File(..) => "a file",
            Content::Symlink(_) => "a symlink",
        }
    }
}

/// The file a hardlink entry names (validated manifests guarantee it).
fn link_target<'m>(manifest: &'m Manifest, target: &RelPath) -> &'m Entry {
    manifest
        .get(target)
        .expect("validated: hardlink targets exist")
}

fn content<'a>(manifest: &'a Manifest, e: &'a Entry) -> Content<'a> {
    match &e.kind {
        EntryKind::Dir => Content::Dir,
        EntryKind::File { chunks, .. } => Content::File(e.mode, chunks),
        EntryKind::Symlink { target } => Content::Symlink(target),
        EntryKind::Hardlink { target } => {
            let t = link_target(manifest, target);
            match &t.kind {
                EntryKind::File { chunks, .. } => Content::File(t.mode, chunks),
                _ => unreachable!("validated: hardlinks point at files"),
            }
        }
    }
}

/// The planned entries of one tree alone (a cache restore): every entry
/// as the manifest holds it (or those `only` keeps), moved, not copied,
/// and what was skipped. A validated manifest holds each path once and
/// its hardlinks name its own files, so there is nothing to merge and no
/// conflict; every entry is of layer 0, the tree. A kept hardlink to a
/// file not kept becomes a file with that content.
pub fn whole(manifest: Manifest, only: Option<&Selection>) -> (Vec<Planned>, Totals) {
    let keeps = |path: &RelPath| only.is_none_or(|s| s.keeps(path.as_bytes()));
    let mut skipped = Totals::default();
    let mut unlinked: HashMap<usize, EntryKind> = HashMap::new();
    for (i, e) in manifest.entries.iter().enumerate() {
        if !keeps(&e.path) {
            skipped.count(&e.kind);
        } else if let EntryKind::Hardlink { target } = &e.kind {
            if !keeps(target) {
                unlinked.insert(i, link_target(&manifest, target).kind.clone());
            }
        }
    }
    let planned = manifest
        .entries
        .into_iter()
        .enumerate()
        .filter(|(_, e)| keeps(&e.path))
        .map(|(i, e)| Planned {
            path: e.path,
            mode: e.mode,
            mtime: e.mtime,
            target: unlinked.remove(&i).unwrap_or(e.kind),
            layer: 0,
        })
        .collect();
    (planned, skipped)
}

/// Merges `layers` (already in apply order) into one tree.
///
/// Every manifest is sorted by path, so the layers are walked side by
/// side, one path at a time with all its writes (a k-way merge): nothing
/// is held per path but the plan itself, and each entry is moved into the
/// plan, not copied (a million-file layer is not held twice). With
/// `only`, the paths it does not keep are skipped.
pub fn merge(graph: &Graph, layers: Vec<Layer>, only: Option<&Selection>) -> Result<Plan> {
    let mut skipped = Totals::default();
    let chosen = choose(graph, &layers, only, &mut skipped)?;
    let unlinked = unlinked_hardlinks(&layers, &chosen);
    let mut plan = take_chosen(layers, chosen, unlinked);
    plan.skipped = skipped;
    Ok(plan)
}

/// Which entry of which layer each planned path takes, in path order:
/// the layers walked side by side, each path's writes checked for
/// conflicts, and a path below a non-directory that replaced a directory
/// taking only the writes after it; a path `only` does not keep is
/// counted into `skipped` instead.
fn choose(
    graph: &Graph,
    layers: &[Layer],
    only: Option<&Selection>,
    skipped: &mut Totals,
) -> Result<Vec<(usize, usize)>> {
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    let entries = |li: usize| &layers[li].manifest.entries;
    let mut next = vec![0usize; layers.len()];
    let mut heap: BinaryHeap<Reverse<(&[u8], usize)>> = (0..layers.len())
        .filter(|&li| !entries(li).is_empty())
        .map(|li| Reverse((entries(li)[0].path.as_bytes(), li)))
        .collect();
    // Paths where a layer wrote a non-directory over an earlier
    // layer's directory, and the last layer that did: what earlier
    // layers had below them is gone.
    let mut cut: HashMap<&[u8], usize> = HashMap::new();
    let mut writes: Vec<(usize, &Entry)> = Vec::new();
    while let Some(Reverse((path, li))) = heap.pop() {
        writes.clear();
        let mut take = |li: usize, heap: &mut BinaryHeap<_>| {
            writes.push((li, &entries(li)[next[li]]));
            next[li] += 1;
            if let Some(e) = entries(li).get(next[li]) {
                heap.push(Reverse((e.path.as_bytes(), li)));
            }
        };
        take(li, &mut heap);
        // Ties pop in layer order: the writes come in apply order.
        while let Some(&Reverse((p, l))) = heap.peek() {
            if p != path {
                break;
            }
            heap.pop();
            take(l, &mut heap);
        }
        // Not kept: nothing below it is either (it would hold it), so no
        // cut here matters.
        if only.is_some_and(|s| !s.keeps(path)) {
            let (_, last) = writes[writes.len() - 1];
            skipped.count(&last.kind);
            continue;
        }
        check_conflicts(graph, layers, &writes)?;
        let first_dir = writes.iter().position(|(_, e)| e.is_dir());
        let last_other = writes.iter().rposition(|(_, e)| !e.is_dir());
        if let (Some(d), Some(o)) = (first_dir, last_other) {
            if d < o {
                cut.insert(path, writes[o].0);
            }
        }
        // Only writes after every cut above this path count; the last
        // of them is the one planned.
        let after = ancestors(path)
            .filter_map(|a| cut.get(a))
            .max()
            .map_or(0, |&l| l + 1);
        if let Some(&(li, _)) = writes.iter().rev().find(|(li, _)| *li >= after) {
            chosen.push((li, next[li] - 1));
        }
    }
    Ok(chosen)
}

/// A hardlink whose file was replaced keeps the content it had in its own
/// layer: it becomes a file of its own. By index into `chosen`.
fn unlinked_hardlinks(layers: &[Layer], chosen: &[(usize, usize)]) -> HashMap<usize, EntryKind> {
    let planned_at = |path: &RelPath| {
        chosen
            .binary_search_by(|&(li, ei)| layers[li].manifest.entries[ei].path.cmp(path))
            .ok()
            .map(|i| chosen[i])
    };
    let mut unlinked: HashMap<usize, EntryKind> = HashMap::new();
    for (i, &(li, ei)) in chosen.iter().enumerate() {
        let manifest = &layers[li].manifest;
        if let EntryKind::Hardlink { target } = &manifest.entries[ei].kind {
            let t = manifest
                .get(target)
                .expect("validated: hardlink targets exist");
            let same_file_planned = planned_at(target)
                .is_some_and(|(tl, te)| tl == li && std::ptr::eq(&manifest.entries[te], t));
            if !same_file_planned {
                unlinked.insert(i, t.kind.clone());
            }
        }
    }

    unlinked
}

/// Moves the chosen entries out of the manifests (each layer's are taken
/// in order) into the plan, a replaced hardlink's content in its place.
fn take_chosen(
    layers: Vec<Layer>,
    chosen: Vec<(usize, usize)>,
    mut unlinked: HashMap<usize, EntryKind>,
) -> Plan {
    let mut summaries = Vec::with_capacity(layers.len());
    let mut sources = Vec::with_capacity(layers.len());
    for l in layers {
        summaries.push(PlannedLayer {
            totals: l.manifest.totals(),
            job: l.job,
            leg: l.leg,
            job_index: l.job_index,
            key: l.key,
            manifest_id: l.manifest_id,
        });
        sources.push(
            Arc::unwrap_or_clone(l.manifest)
                .entries
                .into_iter()
                .enumerate(),
        );
    }
    let entries = chosen
        .into_iter()
        .enumerate()
        .map(|(i, (li, ei))| {
            let e = sources[li]
                .find(|(j, _)| *j == ei)
                .map(|(_, e)| e)
                .expect("chosen entries come in each layer's order");
            Planned {
                path: e.path,
                mode: e.mode,
                mtime: e.mtime,
                target: unlinked.remove(&i).unwrap_or(e.kind),
                layer: li,
            }
        })
        .collect();
    Plan {
        layers: summaries,
        entries,
        manifest_bytes: 0,
        skipped: Totals::default(),
    }
}

/// Who wrote a layer, as conflicts judge and name writers.
#[derive(Clone, Copy)]
pub(crate) struct Writer<'a> {
    pub job: &'a JobName,
    pub leg: Option<&'a str>,
    pub job_index: usize,
}

impl<'a> Writer<'a> {
    fn of(l: &'a Layer) -> Self {
        Writer {
            job: &l.job,
            leg: l.leg.as_deref(),
            job_index: l.job_index,
        }
    }
}

/// Checks every pair of writes of one path (in apply order) by
/// different, unrelated writers: jobs neither of which is the other's
/// ancestor, or two legs of one job. Paths come in order, so the conflict
/// reported is always the same one.
fn check_conflicts(graph: &Graph, layers: &[Layer], w: &[(usize, &Entry)]) -> Result<()> {
    let writes: Vec<(Writer, Content)> = w
        .iter()
        .map(|&(li, e)| (Writer::of(&layers[li]), content(&layers[li].manifest, e)))
        .collect();
    check_writes(graph, &w[0].1.path, &writes)
}

/// `check_conflicts` over each write's writer and content (a hardlink's
/// being its file's).
pub(crate) fn check_writes(
    graph: &Graph,
    path: &RelPath,
    w: &[(Writer<'_>, Content<'_>)],
) -> Result<()> {
    fn writer<'a>(x: &Writer<'a>) -> (usize, Option<&'a str>) {
        (x.job_index, x.leg)
    }
    if w.iter().all(|(x, _)| writer(x) == writer(&w[0].0)) {
        return Ok(());
    }
    for (i, (wa, ca)) in w.iter().enumerate() {
        for (wb, cb) in &w[i + 1..] {
            let (ja, jb) = (wa.job_index, wb.job_index);
            let same_writer = writer(wa) == writer(wb);
            let related = ja != jb && (graph.is_ancestor(ja, jb) || graph.is_ancestor(jb, ja));
            if same_writer || related || ca == cb {
                continue;
            }
            let who = |x: &Writer| match x.leg {
                Some(leg) if ja == jb => format!("{} (leg {leg:?})", x.job),
                _ => x.job.to_string(),
            };
            let mut detail = if ca.describe() == cb.describe() {
                format!("{} with different content", ca.describe())
            } else {
                format!(
                    "{} in {}, {} in {}",
                    ca.describe(),
                    who(wa),
                    cb.describe(),
                    who(wb)
                )
            };
            if ja == jb {
                detail = format!("two legs of one job, {} and {}: {detail}", who(wa), who(wb));
            }
            return Err(Error::Conflict {
                path: path.to_string(),
                first: wa.job.clone(),
                second: wb.job.clone(),
                detail,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;
    use std::collections::BTreeMap;

    fn p(s: &str) -> RelPath {
        RelPath::new(s.as_bytes().to_vec()).unwrap()
    }

    fn file(path: &str, content: &str) -> Entry {
        Entry {
            path: p(path),
            mode: 0o644,
            mtime: Mtime::default(),
            kind: EntryKind::File {
                size: content.len() as u64,
                chunks: vec![ChunkRef {
                    id: ChunkId::of(content.as_bytes()),
                    len: content.len() as u32,
                }],
            },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: p(path),
            mode: 0o755,
            mtime: Mtime::default(),
            kind: EntryKind::Dir,
        }
    }

    fn layer(g: &Graph, job: &str, entries: Vec<Entry>) -> Layer {
        let job = JobName::new(job).unwrap();
        let mut m = Manifest { entries };
        m.sort();
        m.validate("test").unwrap();
        Layer {
            job_index: g.index_of(&job).unwrap(),
            job,
            leg: None,
            key: String::new(),
            manifest_id: m.encode().0,
            manifest: Arc::new(m),
        }
    }

    /// `merge`, and `merge_streams` over the layers' encodings when no
    /// `--only` is given: both must plan the same entries, count the same
    /// totals, or fail alike.
    fn merge_both(g: &Graph, layers: Vec<Layer>, only: Option<&Selection>) -> Result<Plan> {
        use crate::format::manifest_stream::EntryStream;
        use crate::tree::merge_stream::{merge_streams, StreamLayer};
        let streams: Vec<_> = layers
            .iter()
            .map(|l| {
                let (id, bytes) = l.manifest.encode();
                StreamLayer {
                    job: l.job.clone(),
                    leg: l.leg.clone(),
                    job_index: l.job_index,
                    key: l.key.clone(),
                    manifest_id: id,
                    entries: EntryStream::new(id, std::iter::once(Ok(bytes))),
                }
            })
            .collect();
        let whole = merge(g, layers, only);
        if only.is_some() {
            return whole;
        }
        let streamed = merge_streams(g, streams);
        let view = |p: &Plan| {
            let entries: Vec<_> = p
                .entries
                .iter()
                .map(|e| (e.path.clone(), e.mode, e.mtime, e.target.clone(), e.layer))
                .collect();
            let totals: Vec<_> = p.layers.iter().map(|l| l.totals).collect();
            (entries, totals)
        };
        match (&whole, &streamed) {
            (Ok(w), Ok(s)) => assert_eq!(view(w), view(s)),
            (Err(w), Err(s)) => assert_eq!(w.to_string(), s.to_string()),
            (w, s) => panic!("merge {w:?}, merge_streams {s:?}"),
        }
        whole
    }

    fn files(plan: &Plan) -> Vec<String> {
        plan.entries
            .iter()
            .map(|e| format!("{}@{}", e.path, plan.layers[e.layer].job))
            .collect()
    }

    #[test]
    fn descendant_overrides_and_files_replace_directories() {
        let g = Graph::from_specs(&["a", "b:a", "c:b"]).unwrap();
        let plan = merge_both(
            &g,
            vec![
                layer(&g, "a", vec![dir("x"), file("x/y", "1"), file("k", "a")]),
                layer(&g, "b", vec![file("x", "now a file"), file("k", "b")]),
                layer(&g, "c", vec![dir("z")]),
            ],
            None,
        )
        .unwrap();
        assert_eq!(files(&plan), ["k@b", "x@b", "z@c"]);
    }

    #[test]
    fn hardlinks_survive_or_keep_their_content() {
        let g = Graph::from_specs(&["a", "b:a"]).unwrap();
        let link = |path: &str, to: &str| Entry {
            path: p(path),
            mode: 0o644,
            mtime: Mtime::default(),
            kind: EntryKind::Hardlink { target: p(to) },
        };
        let a = layer(
            &g,
            "a",
            vec![
                file("f", "shared"),
                link("g", "f"),
                file("h", "x"),
                link("i", "h"),
            ],
        );
        let b = layer(&g, "b", vec![file("f", "replaced")]);
        let plan = merge_both(&g, vec![a, b], None).unwrap();
        let kind = |name: &str| {
            plan.entries
                .iter()
                .find(|e| e.path == p(name))
                .unwrap()
                .target
                .clone()
        };
        // f was replaced by b, so g keeps a's content as a file of its own.
        assert_eq!(kind("g"), file("g", "shared").kind);
        assert_eq!(kind("f"), file("f", "replaced").kind);
        // h survives, so i stays a link to it.
        assert_eq!(kind("i"), EntryKind::Hardlink { target: p("h") });
    }

    #[test]
    fn legs_of_one_job_conflict_unless_identical() {
        let g = Graph::from_specs(&["rspec", "deploy:rspec"]).unwrap();
        let leg = |name: &str, entries| {
            let mut l = layer(&g, "rspec", entries);
            l.leg = Some(name.to_string());
            l
        };
        let same = vec![
            leg(
                "rspec 1/2",
                vec![dir("out"), file("out/a", "1"), file("out/same", "x")],
            ),
            leg(
                "rspec 2/2",
                vec![dir("out"), file("out/b", "2"), file("out/same", "x")],
            ),
        ];
        assert_eq!(
            files(&merge_both(&g, same, None).unwrap()),
            ["out@rspec", "out/a@rspec", "out/b@rspec", "out/same@rspec"]
        );
        let clash = vec![
            leg("rspec 1/2", vec![dir("out"), file("out/report", "1")]),
            leg("rspec 2/2", vec![dir("out"), file("out/report", "2")]),
        ];
        let e = merge_both(&g, clash, None).unwrap_err().to_string();
        assert!(
            e.contains("out/report") && e.contains("rspec 1/2") && e.contains("rspec 2/2"),
            "{e}"
        );
        // One leg's later layer replaces its earlier one: the same writer.
        let again = vec![
            leg("rspec 1/2", vec![dir("out"), file("out/report", "1")]),
            leg("rspec 1/2", vec![dir("out"), file("out/report", "1b")]),
        ];
        assert!(merge_both(&g, again, None).is_ok());
    }

    #[test]
    fn unrelated_jobs_conflict_unless_identical() {
        let g = Graph::from_specs(&["a", "b", "c:a,b"]).unwrap();
        let same = merge_both(
            &g,
            vec![
                layer(&g, "a", vec![dir("d"), file("d/f", "same")]),
                layer(&g, "b", vec![dir("d"), file("d/f", "same")]),
            ],
            None,
        );
        assert!(same.is_ok());
        let e = merge_both(
            &g,
            vec![
                layer(&g, "a", vec![dir("d"), file("d/f", "one")]),
                layer(&g, "b", vec![dir("d"), file("d/f", "two")]),
            ],
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Conflict { path, .. } if path == "d/f"),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains("jobs a and b"), "{msg}");
        let e = merge_both(
            &g,
            vec![
                layer(&g, "a", vec![file("x", "file")]),
                layer(&g, "b", vec![dir("x"), file("x/y", "1")]),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a file in a, a directory in b"), "{e}");
    }

    /// The merge as first written, one map over every path: the model
    /// the streaming merge must agree with. Only the paths `keeps` keeps
    /// are checked for conflicts and returned.
    fn reference(
        graph: &Graph,
        layers: &[Layer],
        keeps: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<(String, usize, EntryKind)>> {
        let mut writes: BTreeMap<&[u8], Vec<(usize, &Entry)>> = BTreeMap::new();
        for (li, layer) in layers.iter().enumerate() {
            for e in &layer.manifest.entries {
                writes.entry(e.path.as_bytes()).or_default().push((li, e));
            }
        }
        for (path, w) in &writes {
            if keeps(path) {
                check_conflicts(graph, layers, w)?;
            }
        }
        let mut tree: BTreeMap<&[u8], (usize, &Entry)> = BTreeMap::new();
        for (li, layer) in layers.iter().enumerate() {
            for e in &layer.manifest.entries {
                let key = e.path.as_bytes();
                if tree.get(key).is_some_and(|(_, old)| old.is_dir()) && !e.is_dir() {
                    let below = [key, b"/"].concat();
                    tree.retain(|k, _| !k.starts_with(&below));
                }
                tree.insert(key, (li, e));
            }
        }
        Ok(tree
            .values()
            .filter(|(_, e)| keeps(e.path.as_bytes()))
            .map(|(li, e)| (e.path.to_string(), *li, e.kind.clone()))
            .collect())
    }

    /// A random complete tree over a few colliding names: each path a
    /// directory or one of two files; what a file would hold is dropped,
    /// missing parents become directories.
    fn random_layer(g: &Graph, job: &str, picks: &[(usize, u8)]) -> Layer {
        const NAMES: [&str; 8] = ["x", "x/y", "x/y/z", "x-y", "x/a", "k", "k/l", "x/y-z"];
        let mut kinds: BTreeMap<&str, u8> = picks.iter().map(|&(n, k)| (NAMES[n], k)).collect();
        let all: Vec<&str> = kinds.keys().copied().collect();
        for path in all {
            let ups: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
            if ups.iter().any(|up| kinds.get(up).is_some_and(|k| *k != 0)) {
                kinds.remove(path);
            } else {
                for up in ups {
                    kinds.entry(up).or_insert(0);
                }
            }
        }
        let entries = kinds
            .into_iter()
            .map(|(path, k)| match k {
                0 => dir(path),
                1 => file(path, "one"),
                _ => file(path, "two"),
            })
            .collect();
        layer(g, job, entries)
    }

    proptest::proptest! {
        #[test]
        fn streaming_merge_agrees_with_the_whole_tree_model(
            spec in proptest::collection::vec(
                (0usize..3, proptest::collection::vec((0usize..8, 0u8..3), 0..8)),
                0..5,
            ),
        ) {
            let g = Graph::from_specs(&["a", "b", "c:a,b"]).unwrap();
            let mut spec = spec;
            // Apply order: a job's layers after its ancestors'.
            spec.sort_by_key(|(job, _)| *job);
            let layers: Vec<Layer> = spec
                .iter()
                .map(|(job, picks)| random_layer(&g, ["a", "b", "c"][*job], picks))
                .collect();
            let want = reference(&g, &layers, &|_| true);
            let got = merge_both(&g, layers, None).map(|plan| {
                plan.entries
                    .into_iter()
                    .map(|e| (e.path.to_string(), e.layer, e.target))
                    .collect::<Vec<_>>()
            });
            match (want, got) {
                (Ok(w), Ok(g)) => proptest::prop_assert_eq!(w, g),
                (Err(w), Err(g)) => proptest::prop_assert_eq!(w.to_string(), g.to_string()),
                (w, g) => proptest::prop_assert!(false, "model {w:?}, merge {g:?}"),
            }
        }
    }

    proptest::proptest! {
        // `--only`: the plan of a subset is the whole plan at the paths
        // the subset keeps, and its conflicts are the whole plan's there.
        #[test]
        fn a_subset_plans_and_checks_what_the_whole_does_at_its_paths(
            spec in proptest::collection::vec(
                (0usize..3, proptest::collection::vec((0usize..8, 0u8..3), 0..8)),
                1..5,
            ),
            pattern in proptest::sample::select(vec!["x", "x/y", "k", "x/*", "*-y", "x/y/z"]),
        ) {
            let g = Graph::from_specs(&["a", "b", "c:a,b"]).unwrap();
            let mut spec = spec;
            spec.sort_by_key(|(job, _)| *job);
            let layers: Vec<Layer> = spec
                .iter()
                .map(|(job, picks)| random_layer(&g, ["a", "b", "c"][*job], picks))
                .collect();
            let only = crate::tree::subset::Only::new(&[pattern.into()]).unwrap().unwrap();
            let Ok(selection) = only.select(layers.iter().map(|l| &*l.manifest), "test") else {
                return Ok(());
            };
            let want = reference(&g, &layers, &|p| selection.keeps(p));
            let got = merge_both(&g, layers, Some(&selection)).map(|plan| {
                plan.entries
                    .into_iter()
                    .map(|e| (e.path.to_string(), e.layer, e.target))
                    .collect::<Vec<_>>()
            });
            match (want, got) {
                (Ok(w), Ok(g)) => proptest::prop_assert_eq!(w, g),
                (Err(w), Err(g)) => proptest::prop_assert_eq!(w.to_string(), g.to_string()),
                (w, g) => proptest::prop_assert!(false, "model {w:?}, merge {g:?}"),
            }
        }
    }
}
