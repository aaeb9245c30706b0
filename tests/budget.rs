//! Storage budgets, `ls --sizes` and `rm` through the built binary
//! (docs/lifecycle.md, "Storage budget" and "Removing a run or a cache"):
//! an evicting gc in one process while another persists, and removal over
//! `strata serve` by an admin token only.

use crate::support;

use std::fs;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use support::{random_files, same_tree, Client, Server};

const DAY0: &str = "2026-11-01";
const DAY1: &str = "2026-11-02";
const DAY2: &str = "2026-11-03";
/// Day 2, two hours on: gc's grace period (an hour) has passed since day 2.
const DAY2_LATER: &str = "2026-11-03T02:00:00";
const DAY2_EVEN_LATER: &str = "2026-11-03T04:00:00";

fn create(c: &Client, now: &str, run: &str) {
    c.ok_with(
        &[("STRATA_NOW", now)],
        &["run", "create", "--run", run, "--job", "a", "--job", "b:a"],
    );
}

fn persist_args<'a>(run: &'a str, root: &'a Path, own: &'a str) -> Vec<&'a str> {
    let root = root.to_str().unwrap();
    vec![
        "persist", "--run", run, "--job", "a", "--root", root, "shared", own,
    ]
}

fn gc(c: &Client, now: &str, max: &str) -> Value {
    c.json_with(&[("STRATA_NOW", now)], &["gc", "--max-size", max])
}

fn evicted(report: &Value) -> Vec<String> {
    report["evicted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"]["run"].as_str().unwrap_or("a cache").to_string())
        .collect()
}

/// Attaches job `b` of `run` and checks it holds `shared` and `own` as
/// persisted.
fn attaches_whole(c: &Client, now: &str, d: &Path, run: &str, own: &str, at: &str) {
    let at = d.join(at);
    c.ok_with(
        &[("STRATA_NOW", now)],
        &[
            "attach",
            "--run",
            run,
            "--job",
            "b",
            "--at",
            at.to_str().unwrap(),
        ],
    );
    same_tree(&d.join("src/shared"), &at.join("shared"));
    same_tree(&d.join("src").join(own), &at.join(own));
}

// An evicting, deleting gc in one process while another persists a run that
// reuses chunks the gc may condemn: the persist commits whole and the store
// verifies, whichever of them gets where first.
#[test]
fn a_persist_during_an_evicting_gc_in_another_process_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = Client::new(d.join("store").to_str().unwrap(), &d.join("cache"));
    let src = d.join("src");
    random_files(&src.join("shared"), 8, 500_000, 1);
    random_files(&src.join("own0"), 4, 500_000, 2);
    random_files(&src.join("own1"), 4, 500_000, 3);
    random_files(&src.join("own2"), 4, 500_000, 4);
    create(&c, DAY0, "old");
    c.ok_with(&[("STRATA_NOW", DAY0)], &persist_args("old", &src, "own0"));
    create(&c, DAY1, "mid");
    c.ok_with(&[("STRATA_NOW", DAY1)], &persist_args("mid", &src, "own1"));
    // Live: 4 MB shared, 2 MB each own. 7 MiB evicts old alone.
    let first = gc(&c, DAY2, "7MiB");
    assert_eq!(evicted(&first), ["old"], "{first}");
    // Now, at once: a persist reusing the shared files, and a gc that
    // evicts mid (the shared files' last other holder while the persist
    // has not committed) and deletes what the first gc condemned (old's
    // own files).
    create(&c, DAY2_LATER, "new");
    let args = persist_args("new", &src, "own2");
    let persist = c
        .command(&[("STRATA_NOW", DAY2_LATER)], &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gc_args = ["--json", "gc", "--max-size", "5MiB"];
    let second = c
        .command(&[("STRATA_NOW", DAY2_LATER)], &gc_args)
        .output()
        .unwrap();
    let persisted = persist.wait_with_output().unwrap();
    assert!(
        persisted.status.success(),
        "{}",
        String::from_utf8_lossy(&persisted.stderr)
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert!(second["packs_deleted"].as_u64().unwrap() > 0, "{second}");
    attaches_whole(&c, DAY2_LATER, d, "new", "own2", "at-1");
    // A later gc (anything it condemned meanwhile is past its grace) keeps
    // what the committed layer needs.
    c.json_with(&[("STRATA_NOW", DAY2_EVEN_LATER)], &["gc"]);
    attaches_whole(&c, DAY2_EVEN_LATER, d, "new", "own2", "at-2");
    let v = c.json_with(
        &[("STRATA_NOW", DAY2_EVEN_LATER)],
        &["verify", "--read-data"],
    );
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
}

const AUTH: &str = "tokens:
  - {name: ci, token: token-writer-0123456789, namespace: n, scope: write}
  - {name: ops-alice, token: token-admin-0123456789, namespace: n, scope: admin}
";

// Over a server: `ls --sizes` in one request, `rm` and `cache rm` refused to
// a writer and, inside the grace period, to an admin without --force; a
// removed run's attach names who removed it.
#[test]
fn an_admin_removes_runs_and_caches_over_a_server_and_a_writer_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("config.yaml"), AUTH).unwrap();
    let clock = d.join("server-now");
    let at = |now: &str| {
        let secs = strata_store::lifecycle::parse_time(now).unwrap();
        fs::write(&clock, secs.to_string()).unwrap();
    };
    at(DAY0);
    let server = Server::start(
        d.join("srv").to_str().unwrap(),
        &[
            "--quiet",
            "--config",
            d.join("config.yaml").to_str().unwrap(),
        ],
        &[("STRATA_NOW", &format!("@{}", clock.display()))],
    );
    let base = Client::new(&server.ns("n"), &d.join("cache"));
    let writer = base.clone().with_token("token-writer-0123456789");
    let admin = base.clone().with_token("token-admin-0123456789");
    let src = d.join("src");
    random_files(&src.join("shared"), 2, 300_000, 1);
    random_files(&src.join("own0"), 2, 200_000, 2);
    create(&writer, DAY0, "r0");
    // The layer's time is the client's: the scenario's too.
    writer.ok_with(&[("STRATA_NOW", DAY0)], &persist_args("r0", &src, "own0"));
    writer.ok(&[
        "cache",
        "save",
        "--key",
        "deps-1",
        "--root",
        src.to_str().unwrap(),
        "own0",
    ]);
    // shared/ (600 kB) it holds alone; own0/ (400 kB) it shares with the
    // cache entry, which saved the same files.
    let sizes = writer.json(&["ls", "--sizes"]);
    let r0 = &sizes.as_array().unwrap()[0];
    assert_eq!(r0["name"]["run"], "r0", "{sizes}");
    let (alone, shared) = (
        r0["exclusive_bytes"].as_u64().unwrap(),
        r0["shared_bytes"].as_u64().unwrap(),
    );
    assert!(
        (600_000..600_000 + 4096).contains(&alone) && shared >= 400_000,
        "{sizes}"
    );
    let e = writer.fails(&["rm", "--run", "r0"]);
    assert!(e.contains("may not administer"), "{e}");
    let e = writer.fails(&["cache", "rm", "--key", "deps-1"]);
    assert!(e.contains("may not administer"), "{e}");
    // Used just now: refused without --force, naming its last use.
    let e = admin.fails(&["rm", "--run", "r0"]);
    assert!(
        e.contains("last used at 2026-11-01T00:00:00Z") && e.contains("--force"),
        "{e}"
    );
    at(DAY1);
    let removed = admin.json(&["rm", "--run", "r0"]);
    assert_eq!(removed["removed"][0]["run"], "r0", "{removed}");
    let e = writer.fails(&[
        "attach",
        "--run",
        "r0",
        "--job",
        "b",
        "--at",
        d.join("x").to_str().unwrap(),
    ]);
    assert!(
        e.contains("expired on 2026-11-02") && e.contains("removed by ops-alice"),
        "{e}"
    );
    admin.ok(&["cache", "rm", "--key", "deps-1"]);
    let e = admin.fails(&["cache", "rm", "--key", "deps-1"]);
    assert!(e.contains("deps-1"), "{e}");
    assert_eq!(writer.json(&["ls", "--sizes"]), serde_json::json!([]));
}
