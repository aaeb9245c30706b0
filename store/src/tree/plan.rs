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

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::graph::Graph;
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest, Mtime, RelPath};
use crate::id::{JobName, ManifestId};

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

#[derive(Debug, Clone)]
pub struct Plan {
    pub layers: Vec<Layer>,
    /// Sorted by path, so every directory comes before what it holds.
    pub entries: Vec<Planned>,
    /// Bytes read from the store to load the manifests.
    pub manifest_bytes: u64,
}

/// What an entry holds, for deciding whether two writes are identical.
#[derive(PartialEq)]
enum Content<'a> {
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

/// Merges `layers` (already in apply order) into one tree.
pub fn merge(graph: &Graph, layers: Vec<Layer>) -> Result<Plan> {
    // Every write of every path, in apply order.
    let mut writes: HashMap<&RelPath, Vec<(usize, &Entry)>> = HashMap::new();
    for (li, layer) in layers.iter().enumerate() {
        for e in &layer.manifest.entries {
            writes.entry(&e.path).or_default().push((li, e));
        }
    }
    check_conflicts(graph, &layers, &writes)?;

    // Keyed by path bytes: the same order as `RelPath`, and range-queryable.
    let mut tree: BTreeMap<&[u8], (usize, &Entry)> = BTreeMap::new();
    for (li, layer) in layers.iter().enumerate() {
        for e in &layer.manifest.entries {
            let key = e.path.as_bytes();
            // Only a directory can have entries below it (each layer is a
            // complete tree), so only replacing one needs the range scan.
            let replaces_dir = tree.get(key).is_some_and(|(_, old)| old.is_dir());
            if replaces_dir && !e.is_dir() {
                remove_below(&mut tree, key);
            }
            tree.insert(key, (li, e));
        }
    }

    let entries = tree
        .iter()
        .map(|(_, &(li, e))| {
            let manifest = &layers[li].manifest;
            let target = match &e.kind {
                EntryKind::Hardlink { target } => {
                    let t = link_target(manifest, target);
                    let same_file_planned = tree
                        .get(target.as_bytes())
                        .is_some_and(|&(tl, te)| tl == li && std::ptr::eq(te, t));
                    if same_file_planned {
                        // The linked-to file survives: keep them one inode.
                        e.kind.clone()
                    } else {
                        // A later layer replaced it: this name keeps the
                        // content it had in its own layer.
                        t.kind.clone()
                    }
                }
                kind => kind.clone(),
            };
            Planned {
                path: e.path.clone(),
                mode: e.mode,
                mtime: e.mtime,
                target,
                layer: li,
            }
        })
        .collect();
    Ok(Plan {
        layers,
        entries,
        manifest_bytes: 0,
    })
}

/// Checks every pair of writes of a path by different, unrelated writers:
/// jobs neither of which is the other's ancestor, or two legs of one job.
fn check_conflicts(
    graph: &Graph,
    layers: &[Layer],
    writes: &HashMap<&RelPath, Vec<(usize, &Entry)>>,
) -> Result<()> {
    let writer = |li: usize| (layers[li].job_index, layers[li].leg.as_deref());
    // Sorted, so the conflict reported is always the same one.
    let mut contested: Vec<_> = writes
        .iter()
        .filter(|(_, w)| w.iter().any(|(li, _)| writer(*li) != writer(w[0].0)))
        .collect();
    contested.sort_by_key(|(p, _)| **p);
    for (path, w) in contested {
        for (i, &(la, ea)) in w.iter().enumerate() {
            for &(lb, eb) in &w[i + 1..] {
                let (ja, jb) = (layers[la].job_index, layers[lb].job_index);
                let same_writer = writer(la) == writer(lb);
                let related = ja != jb && (graph.is_ancestor(ja, jb) || graph.is_ancestor(jb, ja));
                if same_writer || related {
                    continue;
                }
                let ca = content(&layers[la].manifest, ea);
                let cb = content(&layers[lb].manifest, eb);
                if ca != cb {
                    let who = |l: &Layer| match &l.leg {
                        Some(leg) if ja == jb => format!("{} (leg {leg:?})", l.job),
                        _ => l.job.to_string(),
                    };
                    let mut detail = if ca.describe() == cb.describe() {
                        format!("{} with different content", ca.describe())
                    } else {
                        format!(
                            "{} in {}, {} in {}",
                            ca.describe(),
                            who(&layers[la]),
                            cb.describe(),
                            who(&layers[lb])
                        )
                    };
                    if ja == jb {
                        detail = format!(
                            "two legs of one job, {} and {}: {detail}",
                            who(&layers[la]),
                            who(&layers[lb])
                        );
                    }
                    return Err(Error::Conflict {
                        path: path.to_string(),
                        first: layers[la].job.clone(),
                        second: layers[lb].job.clone(),
                        detail,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Removes every entry strictly below `dir`: the keys in `[dir/, dir0)`.
fn remove_below(tree: &mut BTreeMap<&[u8], (usize, &Entry)>, dir: &[u8]) {
    let lo = [dir, b"/"].concat();
    let hi = [dir, &[b'/' + 1]].concat();
    let doomed: Vec<&[u8]> = tree
        .range::<[u8], _>((Bound::Included(&lo[..]), Bound::Excluded(&hi[..])))
        .map(|(k, _)| *k)
        .collect();
    for k in doomed {
        tree.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;

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

    fn files(plan: &Plan) -> Vec<String> {
        plan.entries
            .iter()
            .map(|e| format!("{}@{}", e.path, plan.layers[e.layer].job))
            .collect()
    }

    #[test]
    fn descendant_overrides_and_files_replace_directories() {
        let g = Graph::from_specs(&["a", "b:a", "c:b"]).unwrap();
        let plan = merge(
            &g,
            vec![
                layer(&g, "a", vec![dir("x"), file("x/y", "1"), file("k", "a")]),
                layer(&g, "b", vec![file("x", "now a file"), file("k", "b")]),
                layer(&g, "c", vec![dir("z")]),
            ],
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
        let plan = merge(&g, vec![a, b]).unwrap();
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
            files(&merge(&g, same).unwrap()),
            ["out@rspec", "out/a@rspec", "out/b@rspec", "out/same@rspec"]
        );
        let clash = vec![
            leg("rspec 1/2", vec![dir("out"), file("out/report", "1")]),
            leg("rspec 2/2", vec![dir("out"), file("out/report", "2")]),
        ];
        let e = merge(&g, clash).unwrap_err().to_string();
        assert!(
            e.contains("out/report") && e.contains("rspec 1/2") && e.contains("rspec 2/2"),
            "{e}"
        );
        // One leg's later layer replaces its earlier one: the same writer.
        let again = vec![
            leg("rspec 1/2", vec![dir("out"), file("out/report", "1")]),
            leg("rspec 1/2", vec![dir("out"), file("out/report", "1b")]),
        ];
        assert!(merge(&g, again).is_ok());
    }

    #[test]
    fn unrelated_jobs_conflict_unless_identical() {
        let g = Graph::from_specs(&["a", "b", "c:a,b"]).unwrap();
        let same = merge(
            &g,
            vec![
                layer(&g, "a", vec![dir("d"), file("d/f", "same")]),
                layer(&g, "b", vec![dir("d"), file("d/f", "same")]),
            ],
        );
        assert!(same.is_ok());
        let e = merge(
            &g,
            vec![
                layer(&g, "a", vec![dir("d"), file("d/f", "one")]),
                layer(&g, "b", vec![dir("d"), file("d/f", "two")]),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Conflict { path, .. } if path == "d/f"),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains("jobs a and b"), "{msg}");
        let e = merge(
            &g,
            vec![
                layer(&g, "a", vec![file("x", "file")]),
                layer(&g, "b", vec![dir("x"), file("x/y", "1")]),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a file in a, a directory in b"), "{e}");
    }
}
