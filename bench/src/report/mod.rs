//! Results: what each tool measured per scenario, their medians and
//! ranges, kept as JSON. How they are judged (`targets`), written
//! (`markdown`) and drawn (`chart`, and `sweep` for a sweep over round
//! trips) are submodules; this one knows none of that presentation.

mod chart;
mod markdown;
mod sweep;
mod targets;

pub use chart::svg;
pub(crate) use chart::{legend, COLORS};
pub use markdown::markdown;
pub use sweep::{rtt_markdown, rtt_svg};

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::corpus::Corpus;
use crate::measure::{tree_bytes, Sample};
use crate::tools::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scenario {
    PersistFirst,
    PersistNext,
    AttachFresh,
    AttachWarm,
    TenRuns,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::PersistFirst,
        Scenario::PersistNext,
        Scenario::AttachFresh,
        Scenario::AttachWarm,
        Scenario::TenRuns,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Scenario::PersistFirst => "1. persist base into an empty store (first run)",
            Scenario::PersistNext => "2. persist next into the store holding base (next run)",
            Scenario::AttachFresh => "3. attach base on a fresh runner (empty directory)",
            Scenario::AttachWarm => "4. attach next on a warm runner (directory holds base)",
            Scenario::TenRuns => "5. store size after 10 successive runs with churn",
        }
    }

    pub(crate) fn short(self) -> &'static str {
        match self {
            Scenario::PersistFirst => "1 persist first",
            Scenario::PersistNext => "2 persist next",
            Scenario::AttachFresh => "3 attach fresh",
            Scenario::AttachWarm => "4 attach warm",
            Scenario::TenRuns => "5 after 10 runs",
        }
    }

    /// What the "store" column means in this scenario.
    pub(crate) fn store_label(self) -> &'static str {
        match self {
            Scenario::PersistFirst => "store size",
            Scenario::PersistNext => "store growth",
            Scenario::TenRuns => "store size",
            _ => "",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Record {
    pub sample: Option<Sample>,
    pub network_bytes: Option<u64>,
    #[serde(default)]
    pub content_bytes: Option<u64>,
    pub store_bytes: Option<u64>,
}

impl Record {
    pub fn new(step: Step, store_bytes: Option<u64>) -> Self {
        Record {
            sample: Some(step.sample),
            network_bytes: step.network_bytes,
            content_bytes: step.content_bytes,
            store_bytes,
        }
    }

    pub fn size_only(bytes: u64) -> Self {
        Record {
            sample: None,
            network_bytes: None,
            content_bytes: None,
            store_bytes: Some(bytes),
        }
    }
}

/// Median, min and max of a list of values.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Option<Stat> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub wall_s: Option<Stat>,
    pub cpu_s: Option<Stat>,
    pub peak_rss_bytes: Option<u64>,
    pub store_bytes: Option<Stat>,
    pub network_bytes: Option<Stat>,
    #[serde(default)]
    pub content_bytes: Option<Stat>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolResults {
    pub tool: String,
    pub records: Vec<Record>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResults {
    pub scenario: Scenario,
    pub title: String,
    pub tools: Vec<ToolResults>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub target: String,
    pub value: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub corpus: String,
    pub base: String,
    pub next: String,
    pub base_files: u64,
    pub base_bytes: u64,
    pub next_files: u64,
    pub next_bytes: u64,
    pub runs: usize,
    pub machine: String,
    pub method: String,
    pub scenarios: Vec<ScenarioResults>,
    pub targets: Vec<Target>,
    /// The link between the networked tools and their servers (`--rtt`,
    /// `--mbit`), if any.
    #[serde(default)]
    pub link: Option<Link>,
}

use crate::wire::Link;

pub(crate) fn count_files(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .count() as u64
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}, Linux {}", kernel.trim())
}

impl Results {
    pub fn new(corpus: &Corpus, runs: usize) -> Self {
        Results {
            corpus: corpus.name.clone(),
            base: corpus.base.display().to_string(),
            next: corpus.next.display().to_string(),
            base_files: count_files(&corpus.base),
            base_bytes: tree_bytes(&corpus.base, &[]),
            next_files: count_files(&corpus.next),
            next_bytes: tree_bytes(&corpus.next, &[]),
            runs,
            machine: machine(),
            method: format!(
                "{runs} measured runs after one warm-up, tools interleaved step by step \
                 (every tool does step 1, then every tool step 2, ...); median (min-max). \
                 Page cache warm: both trees are read once before the first run, and every \
                 store and archive was just written. Attached trees go to fresh directories \
                 (nothing is deleted before a timed step)."
            ),
            scenarios: Scenario::ALL
                .iter()
                .map(|&s| ScenarioResults {
                    scenario: s,
                    title: s.title().into(),
                    tools: vec![],
                })
                .collect(),
            targets: vec![],
            link: None,
        }
    }

    pub fn add(&mut self, s: Scenario, tool: &str, rec: Record) {
        let sr = self
            .scenarios
            .iter_mut()
            .find(|x| x.scenario == s)
            .expect("all scenarios");
        match sr.tools.iter_mut().find(|t| t.tool == tool) {
            Some(t) => t.records.push(rec),
            None => sr.tools.push(ToolResults {
                tool: tool.into(),
                records: vec![rec],
                summary: empty_summary(),
            }),
        }
        for t in &mut sr.tools {
            t.summary = summarize(&t.records);
        }
        self.targets = targets::targets(self);
    }

    pub(crate) fn summary(&self, s: Scenario, tool: &str) -> Option<&Summary> {
        self.scenarios
            .iter()
            .find(|x| x.scenario == s)?
            .tools
            .iter()
            .find(|t| t.tool == tool)
            .map(|t| &t.summary)
    }

    pub(crate) fn wall(&self, s: Scenario, tool: &str) -> Option<f64> {
        self.summary(s, tool)?.wall_s.map(|w| w.median)
    }

    pub(crate) fn store(&self, s: Scenario, tool: &str) -> Option<f64> {
        self.summary(s, tool)?.store_bytes.map(|w| w.median)
    }

    pub(crate) fn network(&self, s: Scenario, tool: &str) -> Option<f64> {
        self.summary(s, tool)?.network_bytes.map(|w| w.median)
    }
}

fn empty_summary() -> Summary {
    Summary {
        wall_s: None,
        cpu_s: None,
        peak_rss_bytes: None,
        store_bytes: None,
        network_bytes: None,
        content_bytes: None,
    }
}

fn summarize(records: &[Record]) -> Summary {
    let samples: Vec<Sample> = records.iter().filter_map(|r| r.sample).collect();
    Summary {
        wall_s: Stat::of(samples.iter().map(|s| s.wall_s).collect()),
        cpu_s: Stat::of(samples.iter().map(|s| s.cpu_s).collect()),
        peak_rss_bytes: samples.iter().map(|s| s.peak_rss_bytes).max(),
        store_bytes: Stat::of(
            records
                .iter()
                .filter_map(|r| r.store_bytes.map(|b| b as f64))
                .collect(),
        ),
        network_bytes: Stat::of(
            records
                .iter()
                .filter_map(|r| r.network_bytes.map(|b| b as f64))
                .collect(),
        ),
        content_bytes: Stat::of(
            records
                .iter()
                .filter_map(|r| r.content_bytes.map(|b| b as f64))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges() {
        let s = Stat::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Stat::of(vec![]).is_none());
    }

    #[test]
    fn table_cells_escape_pipes() {
        assert_eq!(
            markdown::cells(&["tar|zstd".into(), "1.00×".into()]),
            "tar\\|zstd | 1.00×"
        );
    }
}
