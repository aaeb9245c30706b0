//! A sweep over round trips (`--rtt` results at several delays): its
//! table with the targets at the largest round trip, and its chart.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::{Results, Scenario};

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
        super::legend(&mut chart)?;
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}
