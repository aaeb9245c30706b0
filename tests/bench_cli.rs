//! `strata bench`: a user measures strata on their own trees with the
//! binary they installed. Included by `e2e.rs`, so no binary of its own.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::support::strata;

/// A directory whose programs are only those `strata bench` needs for
/// strata and `tar | zstd`: the machine's restic, borg and casync are
/// left out, so the test measures two tools, quickly.
fn path_without_baselines(dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    for program in ["sh", "tar", "zstd", "cat", "cp"] {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .unwrap();
        let found = String::from_utf8(out.stdout).unwrap();
        assert!(!found.trim().is_empty(), "{program} is not installed");
        std::os::unix::fs::symlink(found.trim(), dir.join(program)).unwrap();
    }
    dir.display().to_string()
}

/// `du -sb` of `dir`, without its `.tmp`: what the disk holds.
fn du(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sb", "--exclude=.tmp"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

// A user points `strata bench` at a small tree and two later versions of
// it: the JSON holds every scenario for strata and tar|zstd, the store
// over the three runs, and store sizes equal to what `du` sees of the
// stores it kept; the Markdown report names every scenario; both charts
// are SVG.
#[test]
fn strata_bench_measures_the_users_trees() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trees: Vec<_> = (1..=3)
        .map(|i| d.join(format!("v{i}/node_modules")))
        .collect();
    strata_store::synth::generate(&trees[0], 150, 7).unwrap();
    for i in 1..3 {
        let status = Command::new("cp")
            .arg("-a")
            .arg(trees[i - 1].parent().unwrap())
            .arg(trees[i].parent().unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        strata_store::synth::mutate(&trees[i], 0.05, i as u64).unwrap();
    }
    let path = path_without_baselines(&d.join("bin"));
    let work = d.join("work");
    let svg = d.join("chart.svg");
    let t = |i: usize| trees[i].to_str().unwrap().to_string();
    let out = strata()
        .env("PATH", &path)
        .args(["--json", "bench", &t(0), "--next", &t(1), "--next", &t(2)])
        .args([
            "--runs",
            "1",
            "--keep-work",
            "--work",
            work.to_str().unwrap(),
        ])
        .args(["--svg", svg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 5);
    for s in scenarios {
        let tools: Vec<&str> = s["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tool"].as_str().unwrap())
            .collect();
        assert!(
            tools.contains(&"strata") && tools.contains(&"tar|zstd"),
            "{}: {tools:?}",
            s["title"]
        );
    }
    let store = |scenario: &str, tool: &str| {
        let s = scenarios
            .iter()
            .find(|s| s["scenario"] == scenario)
            .unwrap();
        let t = s["tools"].as_array().unwrap();
        let t = t.iter().find(|t| t["tool"] == tool).unwrap();
        t["summary"]["store_bytes"]["median"].as_f64().unwrap() as u64
    };
    // Scenario 5's stores and the series' are left as measured.
    assert_eq!(store("TenRuns", "strata"), du(&work.join("ten/strata")));
    assert_eq!(store("TenRuns", "tar|zstd"), du(&work.join("ten/tar-zstd")));
    let series = report["series"]["tools"].as_array().unwrap();
    for (tool, repo) in [("strata", "strata"), ("tar|zstd", "tar-zstd")] {
        let sizes = series.iter().find(|s| s["tool"] == tool).unwrap()["bytes"]
            .as_array()
            .unwrap();
        assert_eq!(sizes.len(), 3);
        let last = sizes[2].as_u64().unwrap();
        assert_eq!(last, du(&work.join("series").join(repo)), "{tool}");
    }
    for chart in [svg.clone(), d.join("chart-runs.svg")] {
        let text = fs::read_to_string(&chart).unwrap();
        assert!(text.contains("<svg"), "{}", chart.display());
    }

    // The Markdown report of one tree.
    let out = strata()
        .env("PATH", &path)
        .args(["bench", &t(0), "--runs", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for title in [
        "## 1. persist base",
        "## 2. persist next",
        "## 3. attach base",
        "## 4. attach next",
        "## 5. store size after 10",
    ] {
        assert!(text.contains(title), "no {title:?} in\n{text}");
    }
}
