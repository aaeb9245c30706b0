//! Results: medians and ranges, the markdown report with ratios to each
//! baseline and the targets met or missed, JSON, and the SVG chart.

use std::fmt::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
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

    fn short(self) -> &'static str {
        match self {
            Scenario::PersistFirst => "1 persist first",
            Scenario::PersistNext => "2 persist next",
            Scenario::AttachFresh => "3 attach fresh",
            Scenario::AttachWarm => "4 attach warm",
            Scenario::TenRuns => "5 after 10 runs",
        }
    }

    /// What the "store" column means in this scenario.
    fn store_label(self) -> &'static str {
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
        self.targets = targets(self);
    }

    fn summary(&self, s: Scenario, tool: &str) -> Option<&Summary> {
        self.scenarios
            .iter()
            .find(|x| x.scenario == s)?
            .tools
            .iter()
            .find(|t| t.tool == tool)
            .map(|t| &t.summary)
    }

    fn wall(&self, s: Scenario, tool: &str) -> Option<f64> {
        self.summary(s, tool)?.wall_s.map(|w| w.median)
    }

    fn store(&self, s: Scenario, tool: &str) -> Option<f64> {
        self.summary(s, tool)?.store_bytes.map(|w| w.median)
    }

    fn network(&self, s: Scenario, tool: &str) -> Option<f64> {
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

fn ratio_target(
    name: &str,
    value: Option<f64>,
    base: Option<f64>,
    limit: f64,
    unit: &str,
) -> Target {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => {
            let r = v / b;
            Target {
                target: format!("{name} ≤ {limit}×{unit}"),
                value: format!("{r:.2}×"),
                met: Some(r <= limit),
            }
        }
        _ => Target {
            target: format!("{name} ≤ {limit}×{unit}"),
            value: "n/a (baseline missing)".into(),
            met: None,
        },
    }
}

/// The targets of the benchmark issue, evaluated on these results (they
/// are defined for the nextjs corpus on a 2-core machine).
fn targets(r: &Results) -> Vec<Target> {
    use Scenario::*;
    let s = "strata";
    let z = "tar|zstd";
    let mut t = vec![
        ratio_target(
            "1. persist first, wall",
            r.wall(PersistFirst, s),
            r.wall(PersistFirst, z),
            1.0,
            " tar|zstd",
        ),
        ratio_target(
            "1. store size",
            r.store(PersistFirst, s),
            r.store(PersistFirst, z),
            1.1,
            " the tar.zst",
        ),
        ratio_target(
            "2. persist next, wall",
            r.wall(PersistNext, s),
            r.wall(PersistNext, z),
            0.8,
            " tar|zstd",
        ),
    ];
    let growth = r.store(PersistNext, s);
    t.push(Target {
        target: "2. store growth ≤ 4.1 MB".into(),
        value: growth
            .map(|g| format!("{:.2} MB", g / 1e6))
            .unwrap_or("n/a".into()),
        met: growth.map(|g| g <= 4.1e6),
    });
    t.push(ratio_target(
        "3. attach fresh, wall",
        r.wall(AttachFresh, s),
        r.wall(AttachFresh, z),
        1.0,
        " extracting the tar.zst",
    ));
    let read = r.network(AttachWarm, s);
    let tarball = r.network(AttachWarm, z);
    let content = r
        .summary(AttachWarm, s)
        .and_then(|x| x.content_bytes)
        .map(|c| c.median);
    t.push(match (read, tarball) {
        (Some(a), Some(b)) => Target {
            target: "4. attach warm, bytes read ≤ 4.5% of the tar.zst".into(),
            value: format!(
                "{:.1}% ({:.2} MB; file content alone {})",
                a * 100.0 / b,
                a / 1e6,
                content
                    .map(|c| format!("{:.1}%, {:.2} MB", c * 100.0 / b, c / 1e6))
                    .unwrap_or("n/a".into())
            ),
            met: Some(a <= 0.045 * b),
        },
        _ => Target {
            target: "4. attach warm, bytes read ≤ 4.5% of the tar.zst".into(),
            value: "n/a".into(),
            met: None,
        },
    });
    t.push(ratio_target(
        "4. attach warm, wall",
        r.wall(AttachWarm, s),
        r.wall(AttachWarm, z),
        0.5,
        " extracting the tar.zst",
    ));
    t.push(ratio_target(
        "5. store after 10 runs",
        r.store(TenRuns, s),
        r.store(PersistFirst, z),
        1.5,
        " one tar.zst",
    ));
    t.push(ratio_target(
        "restic: persist first, wall",
        r.wall(PersistFirst, s),
        r.wall(PersistFirst, "restic"),
        0.5,
        " restic backup",
    ));
    t.push(ratio_target(
        "restic: attach fresh, wall",
        r.wall(AttachFresh, s),
        r.wall(AttachFresh, "restic"),
        0.5,
        " restic restore",
    ));
    let rss = Scenario::ALL
        .iter()
        .filter_map(|&sc| r.summary(sc, s).and_then(|x| x.peak_rss_bytes))
        .max();
    t.push(Target {
        target: "peak RSS ≤ 200 MiB".into(),
        value: rss
            .map(|b| format!("{:.0} MiB", b as f64 / 1048576.0))
            .unwrap_or("n/a".into()),
        met: rss.map(|b| b <= 200 << 20),
    });
    t
}

fn mb(b: f64) -> String {
    format!("{:.2} MB", b / 1e6)
}

fn range(s: &Stat, f: impl Fn(f64) -> String) -> String {
    if s.min == s.max {
        f(s.median)
    } else {
        format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
    }
}

/// A table row's cells, with `|` (as in `tar|zstd`) escaped.
fn cells(v: &[String]) -> String {
    v.iter()
        .map(|c| c.replace('|', "\\|"))
        .collect::<Vec<_>>()
        .join(" | ")
}

pub fn markdown(r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# strata-bench: {}\n", r.corpus);
    let _ = writeln!(
        o,
        "- base: {} files, {} (`{}`)\n- next: {} files, {} (`{}`)\n- machine: {}\n- method: {}\n",
        r.base_files,
        mb(r.base_bytes as f64),
        r.base,
        r.next_files,
        mb(r.next_bytes as f64),
        r.next,
        r.machine,
        r.method
    );
    let baselines = ["tar|zstd", "tar|gzip"];
    for sr in &r.scenarios {
        if sr.tools.is_empty() {
            continue;
        }
        let _ = writeln!(o, "## {}\n", sr.title);
        let timed = sr.scenario != Scenario::TenRuns;
        let store_label = sr.scenario.store_label();
        let mut head = vec!["tool".to_string()];
        if timed {
            head.extend(["wall s".into(), "CPU s".into(), "peak RSS".into()]);
        }
        if !store_label.is_empty() {
            head.push(store_label.into());
        }
        if timed {
            head.push("network".into());
            for b in baselines {
                head.push(format!("wall vs {b}"));
            }
        }
        for b in baselines {
            if !store_label.is_empty() {
                head.push(format!("{store_label} vs {b}"));
            }
        }
        let _ = writeln!(o, "| {} |", cells(&head));
        let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
        for t in &sr.tools {
            let s = &t.summary;
            let mut row = vec![t.tool.clone()];
            if timed {
                row.push(
                    s.wall_s
                        .map(|w| range(&w, |v| format!("{v:.2}")))
                        .unwrap_or_default(),
                );
                row.push(
                    s.cpu_s
                        .map(|w| format!("{:.2}", w.median))
                        .unwrap_or_default(),
                );
                row.push(
                    s.peak_rss_bytes
                        .map(|b| format!("{:.0} MiB", b as f64 / 1048576.0))
                        .unwrap_or_default(),
                );
            }
            if !store_label.is_empty() {
                row.push(s.store_bytes.map(|b| mb(b.median)).unwrap_or("—".into()));
            }
            if timed {
                row.push(s.network_bytes.map(|b| mb(b.median)).unwrap_or("—".into()));
                for b in baselines {
                    let ratio = match (r.wall(sr.scenario, &t.tool), r.wall(sr.scenario, b)) {
                        (Some(v), Some(base)) if base > 0.0 => format!("{:.2}×", v / base),
                        _ => "—".into(),
                    };
                    row.push(ratio);
                }
            }
            for b in baselines {
                if store_label.is_empty() {
                    continue;
                }
                let base = if sr.scenario == Scenario::TenRuns {
                    r.store(Scenario::PersistFirst, b)
                } else {
                    r.store(sr.scenario, b)
                };
                let ratio = match (s.store_bytes, base) {
                    (Some(v), Some(base)) if base > 0.0 => format!("{:.2}×", v.median / base),
                    _ => "—".into(),
                };
                row.push(ratio);
            }
            let _ = writeln!(o, "| {} |", cells(&row));
        }
        o.push('\n');
    }
    let _ = writeln!(o, "## Targets\n\n| target | strata | met |\n|---|---|---|");
    for t in &r.targets {
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "n/a",
        };
        let _ = writeln!(
            o,
            "| {} | {} | {met} |",
            t.target.replace('|', "\\|"),
            t.value
        );
    }
    o
}

/// One colour per tool, in the charts' order (strata first).
pub(crate) const COLORS: [plotters::style::RGBColor; 6] = [
    plotters::style::RGBColor(0xd6, 0x27, 0x28),
    plotters::style::RGBColor(0x1f, 0x77, 0xb4),
    plotters::style::RGBColor(0xff, 0x7f, 0x0e),
    plotters::style::RGBColor(0x2c, 0xa0, 0x2c),
    plotters::style::RGBColor(0x94, 0x67, 0xbd),
    plotters::style::RGBColor(0x8c, 0x56, 0x4b),
];

/// Grouped bars: median wall time (scenarios 1-4) and bytes stored or sent
/// (scenarios 1-5), one colour per tool.
pub fn svg(r: &Results, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let tools: Vec<String> = {
        let mut v: Vec<String> = vec![];
        for sr in &r.scenarios {
            for t in &sr.tools {
                if !v.contains(&t.tool) && t.tool != "read tree" {
                    v.push(t.tool.clone());
                }
            }
        }
        v
    };
    let colors = COLORS;
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (left, right) = root.split_horizontally(550);
    type Value<'a> = Box<dyn Fn(Scenario, &str) -> Option<f64> + 'a>;
    let panels: [(&DrawingArea<SVGBackend, _>, &str, Vec<Scenario>, Value); 2] = [
        (
            &left,
            "median wall time (s, log scale)",
            vec![
                Scenario::PersistFirst,
                Scenario::PersistNext,
                Scenario::AttachFresh,
                Scenario::AttachWarm,
            ],
            Box::new(|s, t| r.wall(s, t)),
        ),
        (
            &right,
            "MB stored (1, 2, 5) or read (3, 4), log scale",
            Scenario::ALL.to_vec(),
            Box::new(|s, t| match s {
                Scenario::AttachFresh | Scenario::AttachWarm => r.network(s, t).map(|b| b / 1e6),
                _ => r.store(s, t).map(|b| b / 1e6),
            }),
        ),
    ];
    for (area, title, scenarios, value) in panels {
        // Log scale: the tools differ by orders of magnitude (a tarball per
        // run against a next run's few MB), and bars start at `floor`.
        let values: Vec<f64> = scenarios
            .iter()
            .flat_map(|&s| tools.iter().filter_map(|t| value(s, t)).collect::<Vec<_>>())
            .filter(|v| *v > 0.0)
            .collect();
        let max = values.iter().copied().fold(1e-6f64, f64::max);
        let floor = values.iter().copied().fold(max, f64::min) / 2.0;
        let n = scenarios.len();
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..n as f64, (floor..max * 2.0).log_scale())
            .map_err(|e| anyhow!("{e:?}"))?;
        let labels: Vec<&str> = scenarios.iter().map(|s| s.short()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = (*x - 0.5).round();
                if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
        let width = 0.8 / tools.len() as f64;
        for (ti, tool) in tools.iter().enumerate() {
            let color = colors[ti % colors.len()];
            let bars: Vec<_> = scenarios
                .iter()
                .enumerate()
                .filter_map(|(si, &s)| {
                    let v = value(s, tool)?;
                    let x0 = si as f64 + 0.1 + ti as f64 * width;
                    Some(Rectangle::new(
                        [(x0, floor), (x0 + width * 0.9, v.max(floor))],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(|e| anyhow!("{e:?}"))?
                .label(tool.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// The networked tools of a sweep over round trips, and the timed
/// scenarios.
const SWEEP_TOOLS: [&str; 2] = ["strata-http", "tar|zstd-net"];
const SWEEP_SCENARIOS: [Scenario; 4] = [
    Scenario::PersistFirst,
    Scenario::PersistNext,
    Scenario::AttachFresh,
    Scenario::AttachWarm,
];

fn sorted_sweep(sweep: &[Results]) -> Result<Vec<(f64, &Results)>> {
    let mut v = Vec::new();
    for r in sweep {
        let link = r
            .link
            .ok_or_else(|| anyhow!("results of {} were not measured with --rtt", r.corpus))?;
        // One table compares round trips at one cap: the targets read the
        // smallest round trip as the baseline of the largest.
        if let Some(first) = sweep.first().and_then(|f| f.link) {
            if first.mbit != link.mbit || r.corpus != sweep[0].corpus {
                bail!("a sweep is one corpus at one bandwidth cap: render each on its own");
            }
        }
        v.push((link.rtt_ms, r));
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(v)
}

/// A table of median wall time against round trip, strata over the network
/// against the tarball streamed through the same link, and the issue's
/// targets at the largest round trip measured.
pub fn rtt_markdown(sweep: &[Results]) -> Result<String> {
    let sweep = sorted_sweep(sweep)?;
    let mut out = String::new();
    let first = sweep.first().ok_or_else(|| anyhow!("no results"))?.1;
    let cap = first
        .link
        .and_then(|l| l.mbit)
        .map_or("no bandwidth cap".to_string(), |m| {
            format!("{m} Mbit/s cap")
        });
    out.push_str(&format!(
        "Corpus `{}`, {cap}, median wall seconds of {} run(s); strata-http / tar|zstd-net \
         (the tarball piped through the same proxy).\n\n",
        first.corpus, first.runs
    ));
    out.push_str("| RTT | persist first | persist next | attach fresh | attach warm |\n");
    out.push_str("|---|---|---|---|---|\n");
    let cell = |r: &Results, s: Scenario| {
        let w = |t: &str| r.wall(s, t).map_or("-".to_string(), |v| format!("{v:.2}"));
        format!("{} / {}", w(SWEEP_TOOLS[0]), w(SWEEP_TOOLS[1]))
    };
    for (rtt, r) in &sweep {
        let row: Vec<String> = SWEEP_SCENARIOS.iter().map(|&s| cell(r, s)).collect();
        out.push_str(&format!("| {rtt} ms | {} |\n", row.join(" | ")));
    }
    let (rtt, far) = sweep.last().expect("not empty");
    let (_, near) = sweep.first().expect("not empty");
    let w = |r: &Results, s: Scenario, t: &str| r.wall(s, t).unwrap_or(f64::NAN);
    let strata = SWEEP_TOOLS[0];
    let tar = SWEEP_TOOLS[1];
    let checks = [
        (
            "persist next <= 0.5x the tarball upload",
            w(far, Scenario::PersistNext, strata) <= 0.5 * w(far, Scenario::PersistNext, tar),
        ),
        (
            "persist next <= the 0 ms time + 0.5 s",
            w(far, Scenario::PersistNext, strata) <= w(near, Scenario::PersistNext, strata) + 0.5,
        ),
        (
            "attach warm <= the 0 ms time + 0.5 s",
            w(far, Scenario::AttachWarm, strata) <= w(near, Scenario::AttachWarm, strata) + 0.5,
        ),
        (
            "persist first <= 1.0x the tarball upload",
            w(far, Scenario::PersistFirst, strata) <= w(far, Scenario::PersistFirst, tar),
        ),
        (
            "attach fresh <= 1.0x downloading and extracting the tarball",
            w(far, Scenario::AttachFresh, strata) <= w(far, Scenario::AttachFresh, tar),
        ),
    ];
    out.push_str(&format!("\nTargets at {rtt} ms:\n\n"));
    for (what, met) in checks {
        out.push_str(&format!(
            "- {what}: {}\n",
            if met { "met" } else { "NOT met" }
        ));
    }
    Ok(out)
}

/// A chart of median wall time against round trip: one panel per timed
/// scenario, a line per networked tool.
pub fn rtt_svg(sweep: &[Results], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let sweep = sorted_sweep(sweep)?;
    let max_rtt = sweep.last().map_or(1.0, |s| s.0).max(1.0);
    let root = SVGBackend::new(path, (1100, 320)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let colors = [RGBColor(0xd6, 0x27, 0x28), RGBColor(0x1f, 0x77, 0xb4)];
    for (area, &scenario) in root.split_evenly((1, 4)).iter().zip(&SWEEP_SCENARIOS) {
        let max = sweep
            .iter()
            .flat_map(|(_, r)| SWEEP_TOOLS.iter().filter_map(|t| r.wall(scenario, t)))
            .fold(0.1f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(scenario.short(), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..max_rtt, 0.0..max * 1.15)
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .configure_mesh()
            .x_desc("RTT ms")
            .y_desc("s")
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
        for (tool, color) in SWEEP_TOOLS.iter().zip(colors) {
            let points: Vec<(f64, f64)> = sweep
                .iter()
                .filter_map(|(rtt, r)| Some((*rtt, r.wall(scenario, tool)?)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e:?}"))?
                .label(*tool)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], color));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
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
            cells(&["tar|zstd".into(), "1.00×".into()]),
            "tar\\|zstd | 1.00×"
        );
    }
}
