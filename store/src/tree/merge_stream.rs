//! Merging layers read as streams (issue 29): the same rules as `plan`'s
//! `merge` (docs/architecture.md, "Attach rules"), over each layer's
//! entries as they are decoded rather than over whole manifests. The
//! layers are walked side by side, one path at a time with all its writes
//! (a k-way merge); each planned entry is moved into the plan as it is
//! chosen. What is held besides the plan: each layer's next entry and
//! what its stream holds (a frame and a batch of its encoding), the
//! linked files' contents (a hardlink that follows may need them), and
//! the paths where a non-directory replaced a directory. So an attach of
//! several million-file layers holds the merged tree once, not each
//! layer's manifest beside it.
//!
//! Every conflict is found, and every manifest read to its end (its id
//! checked), before the plan is returned: nothing is written before.
//! `--only` still merges whole manifests (`plan::merge`): it must first
//! know whether each pattern selects anything.
//!
//! Knows nothing about where the entries come from (`EntrySource`).

use std::collections::HashMap;

use crate::error::Result;
use crate::format::graph::Graph;
use crate::format::manifest::{Entry, EntryKind, Totals};
use crate::format::manifest_stream::EntryStream;
use crate::id::{JobName, ManifestId};
use crate::tree::plan::{check_writes, Content, Plan, Planned, PlannedLayer, Writer};
use crate::tree::subset::ancestors;

/// A layer's entries in path order, each with whether it is a linked
/// file; checked as format.md says; an error ends them.
pub trait EntrySource {
    /// The next entry, or the error that ends the source.
    fn next_linked(&mut self) -> Option<Result<(Entry, bool)>>;
}

impl<S, B> EntrySource for EntryStream<S, B>
where
    S: Iterator<Item = Result<B>>,
    B: AsRef<[u8]>,
{
    fn next_linked(&mut self) -> Option<Result<(Entry, bool)>> {
        EntryStream::next_linked(self)
    }
}

/// One layer to apply, in apply order, its entries to be read.
#[derive(Debug)]
pub struct StreamLayer<S> {
    pub job: JobName,
    /// The CI leg of the job that wrote it, if any.
    pub leg: Option<String>,
    /// The job's index in the graph.
    pub job_index: usize,
    pub key: String,
    pub manifest_id: ManifestId,
    pub entries: S,
}

/// A linked file's mode and kind, by path.
type LinkedFiles = HashMap<Vec<u8>, (u32, EntryKind)>;

/// The layers' reading state.
struct Heads<S> {
    layers: Vec<StreamLayer<S>>,
    /// Each layer's next entry (and whether it is linked).
    next: Vec<Option<(Entry, bool)>>,
    totals: Vec<Totals>,
    linked: Vec<LinkedFiles>,
}

impl<S: EntrySource> Heads<S> {
    fn advance(&mut self, li: usize) -> Result<()> {
        self.next[li] = self.layers[li].entries.next_linked().transpose()?;
        Ok(())
    }

    /// The least path among the layers' next entries.
    fn least(&self) -> Option<Vec<u8>> {
        self.next
            .iter()
            .flatten()
            .map(|(e, _)| e.path.as_bytes())
            .min()
            .map(<[u8]>::to_vec)
    }

    /// Takes every layer's write of `path`, in apply order.
    fn take(&mut self, path: &[u8], writes: &mut Vec<(usize, Entry, bool)>) -> Result<()> {
        for li in 0..self.layers.len() {
            if self.next[li]
                .as_ref()
                .is_some_and(|(e, _)| e.path.as_bytes() == path)
            {
                let (e, linked) = self.next[li].take().expect("just seen");
                self.totals[li].count(&e.kind);
                if linked {
                    let content = (e.mode, e.kind.clone());
                    self.linked[li].insert(path.to_vec(), content);
                }
                self.advance(li)?;
                writes.push((li, e, linked));
            }
        }
        Ok(())
    }

    /// The layers read, each with what it held.
    fn summaries(self) -> Vec<PlannedLayer> {
        self.layers
            .into_iter()
            .zip(self.totals)
            .map(|(l, totals)| PlannedLayer {
                job: l.job,
                leg: l.leg,
                job_index: l.job_index,
                key: l.key,
                manifest_id: l.manifest_id,
                totals,
            })
            .collect()
    }

    fn writer(&self, li: usize) -> Writer<'_> {
        let l = &self.layers[li];
        Writer {
            job: &l.job,
            leg: l.leg.as_deref(),
            job_index: l.job_index,
        }
    }
}

/// What an entry of layer `li` holds; a hardlink's is its file's (a
/// validated stream named it as linked before).
fn content<'a>(e: &'a Entry, linked: &'a LinkedFiles) -> Content<'a> {
    match &e.kind {
        EntryKind::Dir => Content::Dir,
        EntryKind::File { chunks, .. } => Content::File(e.mode, chunks),
        EntryKind::Symlink { target } => Content::Symlink(target),
        EntryKind::Hardlink { target } => {
            let (mode, kind) = linked
                .get(target.as_bytes())
                .expect("validated: hardlinks name earlier linked files");
            Content::File(*mode, kind.chunks())
        }
    }
}

/// Merges `layers` (in apply order) into one tree, reading each to its end.
pub fn merge_streams<S: EntrySource>(graph: &Graph, layers: Vec<StreamLayer<S>>) -> Result<Plan> {
    let k = layers.len();
    let mut heads = Heads {
        layers,
        next: (0..k).map(|_| None).collect(),
        totals: vec![Totals::default(); k],
        linked: (0..k).map(|_| HashMap::new()).collect(),
    };
    for li in 0..k {
        heads.advance(li)?;
    }
    // Paths where a layer wrote a non-directory over an earlier layer's
    // directory, and the last layer that did; linked files planned, and
    // from which layer.
    let mut cut: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut planned_linked: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut entries: Vec<Planned> = Vec::new();
    let mut writes: Vec<(usize, Entry, bool)> = Vec::new();
    while let Some(path) = heads.least() {
        writes.clear();
        heads.take(&path, &mut writes)?;
        let judged: Vec<(Writer, Content)> = writes
            .iter()
            .map(|(li, e, _)| (heads.writer(*li), content(e, &heads.linked[*li])))
            .collect();
        check_writes(graph, &writes[0].1.path, &judged)?;
        drop(judged);
        let first_dir = writes.iter().position(|(_, e, _)| e.is_dir());
        let last_other = writes.iter().rposition(|(_, e, _)| !e.is_dir());
        if let (Some(d), Some(o)) = (first_dir, last_other) {
            if d < o {
                cut.insert(path.clone(), writes[o].0);
            }
        }
        // Only writes after every cut above this path count; the last of
        // them is the one planned.
        let after = ancestors(&path)
            .filter_map(|a| cut.get(a))
            .max()
            .map_or(0, |&l| l + 1);
        let Some(at) = writes.iter().rposition(|(li, _, _)| *li >= after) else {
            continue;
        };
        let (li, e, linked) = writes.swap_remove(at);
        if linked {
            planned_linked.insert(path, li);
        }
        // A hardlink whose file was replaced keeps the content it had in
        // its own layer: it becomes a file of its own.
        let target = match e.kind {
            EntryKind::Hardlink { target }
                if planned_linked.get(target.as_bytes()) != Some(&li) =>
            {
                heads.linked[li][target.as_bytes()].1.clone()
            }
            kind => kind,
        };
        entries.push(Planned {
            path: e.path,
            mode: e.mode,
            mtime: e.mtime,
            target,
            layer: li,
        });
    }
    Ok(Plan {
        layers: heads.summaries(),
        entries,
        manifest_bytes: 0,
        skipped: Totals::default(),
    })
}
