//! The store over successive runs (`strata bench PATH --next A --next B`):
//! each tool persists the given trees in order, one run each, into one
//! repository, and its size is taken after every run; a table and a line
//! chart of them. The trees are the user's (the same directory at
//! successive commits, say), so the growth is what their changes cost.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use crate::report::{legend, COLORS};
use crate::tools::Tool;

/// One tool's repository size after each run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sizes {
    pub tool: String,
    /// Bytes after run 1, 2, ... (as `du -sb` counts them).
    pub bytes: Vec<u64>,
}

/// The store over the runs of `trees`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub trees: Vec<String>,
    pub tools: Vec<Sizes>,
}

/// Persists `trees` in order with every tool, each into its own
/// repository under `work/series/` (left as the last run made it), and
/// takes its size after each run.
pub fn run(trees: &[PathBuf], tools: &[Box<dyn Tool>], work: &Path) -> Result<Series> {
    let repo = |t: &dyn Tool| work.join(format!("series/{}", t.name().replace('|', "-")));
    let mut sizes: Vec<Sizes> = tools
        .iter()
        .map(|t| Sizes {
            tool: t.name().into(),
            bytes: Vec::new(),
        })
        .collect();
    for t in tools {
        t.init(&repo(t.as_ref()))?;
    }
    for (n, tree) in trees.iter().enumerate() {
        eprintln!("strata-bench: the store over the runs: run {}", n + 1);
        for (t, s) in tools.iter().zip(&mut sizes) {
            t.persist(&repo(t.as_ref()), tree, n + 1)?;
            s.bytes.push(t.repo_bytes(&repo(t.as_ref())));
        }
    }
    Ok(Series {
        trees: trees.iter().map(|t| t.display().to_string()).collect(),
        tools: sizes,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// A table: one row per run, one column per tool (its size, and what the
/// run added).
pub fn markdown(s: &Series) -> String {
    let mut o = String::from("\n");
    let _ = writeln!(o, "## The store over {} runs\n", s.trees.len());
    let _ = writeln!(
        o,
        "Each tool persists the trees in order, one run each, into one repository; its size after each run (and what that run added).\n"
    );
    let tools: Vec<String> = s.tools.iter().map(|t| t.tool.replace('|', "\\|")).collect();
    let _ = writeln!(o, "| run | tree | {} |", tools.join(" | "));
    let _ = writeln!(o, "|---|---|{}", "---|".repeat(tools.len()));
    for (i, tree) in s.trees.iter().enumerate() {
        let cells: Vec<String> = s
            .tools
            .iter()
            .map(|t| {
                let now = t.bytes[i];
                match i {
                    0 => mib(now),
                    _ => format!("{} (+{})", mib(now), mib(now - t.bytes[i - 1])),
                }
            })
            .collect();
        let _ = writeln!(o, "| {} | `{tree}` | {} |", i + 1, cells.join(" | "));
    }
    o.push('\n');
    o
}

/// A line per tool: its repository's size after each run.
pub fn svg(s: &Series, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Debug| anyhow!("{e:?}");
    let runs = s.trees.len();
    let max = s
        .tools
        .iter()
        .flat_map(|t| t.bytes.iter().copied())
        .max()
        .unwrap_or(1) as f64
        / 1048576.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("store size after each run (MiB)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..runs as f64 + 0.5, 0.0..max * 1.1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels(runs + 1)
        .x_label_formatter(&|x| match x.fract() == 0.0 && *x >= 1.0 {
            true => format!("run {x:.0}"),
            false => String::new(),
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (i, t) in s.tools.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = t
            .bytes
            .iter()
            .enumerate()
            .map(|(r, b)| (r as f64 + 1.0, *b as f64 / 1048576.0))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(t.tool.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    legend(&mut chart)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
