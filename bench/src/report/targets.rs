//! The benchmark issue's targets, evaluated on a run's results (defined
//! for the nextjs corpus on a 2-core machine): met, missed, or not
//! measurable. It judges; it does not write or draw.

use super::{Results, Scenario, Target};

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
pub(super) fn targets(r: &Results) -> Vec<Target> {
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
    t.extend(attach_targets(r));
    t.extend(store_and_restic_targets(r));
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

/// Scenarios 3 and 4: a fresh attach's wall, and what a warm one reads.
fn attach_targets(r: &Results) -> Vec<Target> {
    use Scenario::*;
    let s = "strata";
    let z = "tar|zstd";
    let mut t = vec![];
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
    t
}

/// Scenario 5's store, and the restic comparisons.
fn store_and_restic_targets(r: &Results) -> Vec<Target> {
    use Scenario::*;
    let s = "strata";
    vec![
        ratio_target(
            "5. store after 10 runs",
            r.store(TenRuns, s),
            r.store(PersistFirst, "tar|zstd"),
            1.5,
            " one tar.zst",
        ),
        ratio_target(
            "restic: persist first, wall",
            r.wall(PersistFirst, s),
            r.wall(PersistFirst, "restic"),
            0.5,
            " restic backup",
        ),
        ratio_target(
            "restic: attach fresh, wall",
            r.wall(AttachFresh, s),
            r.wall(AttachFresh, "restic"),
            0.5,
            " restic restore",
        ),
    ]
}
