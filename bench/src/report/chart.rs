//! The SVG chart of one run's results: grouped bars per scenario, one
//! colour per tool.

use std::path::Path;

use anyhow::{anyhow, Result};

use super::{Results, Scenario};

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
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (left, right) = root.split_horizontally(550);
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
        panel(area, title, &scenarios, &*value, &tools)?;
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// A value to draw for a scenario and a tool, if it was measured.
type Value<'a> = Box<dyn Fn(Scenario, &str) -> Option<f64> + 'a>;

/// One panel: a group of bars per scenario, one bar per tool, on a log
/// scale.
fn panel(
    area: &plotters::drawing::DrawingArea<plotters::prelude::SVGBackend, plotters::coord::Shift>,
    title: &str,
    scenarios: &[Scenario],
    value: &dyn Fn(Scenario, &str) -> Option<f64>,
    tools: &[String],
) -> Result<()> {
    use plotters::prelude::*;
    let colors = COLORS;
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
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    legend(&mut chart)
}

/// Draws a chart's legend, top left on a light box: every chart of the
/// benchmark's has one so.
pub(crate) fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut plotters::chart::ChartContext<'a, plotters::prelude::SVGBackend<'a>, CT>,
) -> Result<()> {
    use plotters::prelude::*;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))
}
