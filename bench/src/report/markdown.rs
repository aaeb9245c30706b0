//! The markdown report: a table per scenario with ratios to each
//! baseline, then the targets. It writes what `Results` holds and judges
//! nothing itself.

use std::fmt::Write;

use super::{Results, Scenario, ScenarioResults, Stat, ToolResults};

pub(super) fn mb(b: f64) -> String {
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
pub(super) fn cells(v: &[String]) -> String {
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
    for sr in &r.scenarios {
        if !sr.tools.is_empty() {
            scenario_table(&mut o, r, sr);
        }
    }
    targets_table(&mut o, r);
    o
}

/// The baselines every other tool is compared with.
const BASELINES: [&str; 2] = ["tar|zstd", "tar|gzip"];

/// One scenario's section: a row per tool.
fn scenario_table(o: &mut String, r: &Results, sr: &ScenarioResults) {
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
        for b in BASELINES {
            head.push(format!("wall vs {b}"));
        }
    }
    for b in BASELINES {
        if !store_label.is_empty() {
            head.push(format!("{store_label} vs {b}"));
        }
    }
    let _ = writeln!(o, "| {} |", cells(&head));
    let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
    for t in &sr.tools {
        let _ = writeln!(o, "| {} |", cells(&tool_row(r, sr.scenario, t)));
    }
    o.push('\n');
}

/// One tool's cells in a scenario's table, in the header's order.
fn tool_row(r: &Results, scenario: Scenario, t: &ToolResults) -> Vec<String> {
    let timed = scenario != Scenario::TenRuns;
    let store_label = scenario.store_label();
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
        for b in BASELINES {
            let ratio = match (r.wall(scenario, &t.tool), r.wall(scenario, b)) {
                (Some(v), Some(base)) if base > 0.0 => format!("{:.2}×", v / base),
                _ => "—".into(),
            };
            row.push(ratio);
        }
    }
    if !store_label.is_empty() {
        for b in BASELINES {
            let base = if scenario == Scenario::TenRuns {
                r.store(Scenario::PersistFirst, b)
            } else {
                r.store(scenario, b)
            };
            let ratio = match (s.store_bytes, base) {
                (Some(v), Some(base)) if base > 0.0 => format!("{:.2}×", v.median / base),
                _ => "—".into(),
            };
            row.push(ratio);
        }
    }
    row
}

/// The targets, met or missed.
fn targets_table(o: &mut String, r: &Results) {
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
}
