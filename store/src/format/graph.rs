//! Workflow graphs: the jobs of a run and their `requires` edges (a DAG).
//!
//! Owns validation (duplicate names, unknown requires, cycles), ancestry and
//! the one topological order that attach applies layers in: Kahn's
//! algorithm breaking ties by declaration order, so the order never depends
//! on scheduling or on when jobs finished. Graphs are read from config
//! files by `ci::config`. Knows nothing about layers or storage.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::JobName;

/// One job of a graph and the jobs it requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's name.
    pub name: JobName,
    /// The jobs that must finish before it.
    pub requires: Vec<JobName>,
}

/// A validated job graph. Jobs keep their declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<JobSpec>", into = "Vec<JobSpec>")]
pub struct Graph {
    jobs: Vec<JobSpec>,
    #[serde(skip)]
    by_name: HashMap<JobName, usize>,
    /// `ancestors[i]`: indices of every job `i` transitively requires.
    #[serde(skip)]
    ancestors: Vec<BTreeSet<usize>>,
    #[serde(skip)]
    topo: Vec<usize>,
}

impl TryFrom<Vec<JobSpec>> for Graph {
    type Error = Error;
    fn try_from(jobs: Vec<JobSpec>) -> Result<Self> {
        Graph::new(jobs)
    }
}

impl From<Graph> for Vec<JobSpec> {
    fn from(g: Graph) -> Self {
        g.jobs
    }
}

impl Graph {
    /// Validates `jobs`: unique names, known requires, no cycle.
    pub fn new(jobs: Vec<JobSpec>) -> Result<Self> {
        if jobs.is_empty() {
            return Err(Error::Graph {
                detail: "a run needs at least one job".into(),
            });
        }
        let mut by_name = HashMap::new();
        for (i, j) in jobs.iter().enumerate() {
            if by_name.insert(j.name.clone(), i).is_some() {
                return Err(Error::DuplicateJob {
                    job: j.name.to_string(),
                });
            }
        }
        for j in &jobs {
            for r in &j.requires {
                if !by_name.contains_key(r) {
                    return Err(Error::UnknownRequire {
                        job: j.name.to_string(),
                        requires: r.to_string(),
                    });
                }
            }
        }
        let edges: Vec<Vec<usize>> = jobs
            .iter()
            .map(|j| j.requires.iter().map(|r| by_name[r]).collect())
            .collect();
        if let Some(cycle) = find_cycle(&edges) {
            return Err(Error::Cycle {
                cycle: cycle.iter().map(|i| jobs[*i].name.to_string()).collect(),
            });
        }
        let topo = kahn(&edges);
        let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); jobs.len()];
        for &i in &topo {
            let mut set = BTreeSet::new();
            for &r in &edges[i] {
                set.insert(r);
                set.extend(ancestors[r].iter().copied());
            }
            ancestors[i] = set;
        }
        Ok(Graph {
            jobs,
            by_name,
            ancestors,
            topo,
        })
    }

    /// Parses `NAME` or `NAME:REQ,REQ` job specs (the CLI's `--job`).
    pub fn from_specs<S: AsRef<str>>(specs: &[S]) -> Result<Self> {
        let jobs = specs
            .iter()
            .map(|s| {
                let s = s.as_ref();
                let (name, reqs) = s.split_once(':').unwrap_or((s, ""));
                Ok(JobSpec {
                    name: JobName::new(name)?,
                    requires: reqs
                        .split(',')
                        .filter(|r| !r.is_empty())
                        .map(|r| JobName::new(r).map_err(Error::from))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Graph::new(jobs)
    }

    /// The jobs, in the order the graph declares them (`topo_order` is
    /// the order layers apply in).
    pub fn jobs(&self) -> &[JobSpec] {
        &self.jobs
    }

    /// Where `name` is in `jobs`.
    pub fn index_of(&self, name: &JobName) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Every job `job` transitively requires (indices).
    pub fn ancestors(&self, job: usize) -> &BTreeSet<usize> {
        &self.ancestors[job]
    }

    /// Whether `a` is a transitive requirement of `b`.
    pub fn is_ancestor(&self, a: usize, b: usize) -> bool {
        self.ancestors[b].contains(&a)
    }

    /// All jobs in the deterministic topological order.
    pub fn topo_order(&self) -> &[usize] {
        &self.topo
    }

    /// The job names, comma-separated, for messages.
    pub fn job_list(&self) -> String {
        self.jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A cycle in `edges` (job -> required jobs), as a closed path of indices.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to follow).
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match mark[to] {
                    Mark::Active => {
                        let pos = stack.iter().position(|(n, _)| *n == to).expect("on stack");
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(n, _)| *n).collect();
                        cycle.push(to);
                        return Some(cycle);
                    }
                    Mark::New => {
                        mark[to] = Mark::Active;
                        stack.push((to, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Kahn's algorithm over an acyclic graph; among ready jobs the earliest
/// declared goes first.
fn kahn(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut pending: Vec<usize> = edges.iter().map(|e| e.len()).collect();
    let mut dependents = vec![vec![]; n];
    for (i, reqs) in edges.iter().enumerate() {
        for &r in reqs {
            dependents[r].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(g: &Graph, idx: impl IntoIterator<Item = usize>) -> Vec<String> {
        idx.into_iter()
            .map(|i| g.jobs()[i].name.to_string())
            .collect()
    }

    #[test]
    fn seeds_workflow_order_and_ancestry() {
        let g = Graph::from_specs(&[
            "compile-assets",
            "compile-code",
            "test:compile-assets,compile-code",
            "code-coverage:compile-code",
            "deploy:test,code-coverage",
        ])
        .unwrap();
        assert_eq!(
            names(&g, g.topo_order().iter().copied()),
            [
                "compile-assets",
                "compile-code",
                "test",
                "code-coverage",
                "deploy"
            ]
        );
        let deploy = g.index_of(&JobName::new("deploy").unwrap()).unwrap();
        assert_eq!(g.ancestors(deploy).len(), 4);
        assert!(!g.is_ancestor(2, 3) && !g.is_ancestor(3, 2));
    }

    #[test]
    fn invalid_graphs_name_the_fault() {
        let e = Graph::from_specs(&["a:c", "b:a", "c:b"]).unwrap_err();
        assert!(matches!(e, Error::Cycle { .. }), "{e}");
        assert!(e.to_string().contains("a -> c -> b -> a"), "{e}");
        let e = Graph::from_specs(&["a", "a"]).unwrap_err().to_string();
        assert!(e.contains("job a is listed twice"), "{e}");
        let e = Graph::from_specs(&["a:ghost"]).unwrap_err().to_string();
        assert!(e.contains("requires ghost"), "{e}");
        assert!(Graph::from_specs(&["a:a"]).is_err());
    }
}
