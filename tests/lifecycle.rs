//! Reruns, retention, gc and dependency caches, through the built binary,
//! each scenario on a local store and over `strata serve`. Time is set with
//! `STRATA_NOW` (the server's own clock, which gc uses, is set when it
//! starts), so nothing waits.

use crate::support;

use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use support::{random_files, same_tree, strata, Client, Garage, Server};

const DAY0: &str = "2026-11-01";
const DAY10: &str = "2026-11-11";
const DAY20: &str = "2026-11-21";
const DAY30: &str = "2026-12-01";
const DAY40: &str = "2026-12-11";
/// Day 40, once gc's grace period (an hour) has passed.
const DAY40_LATER: &str = "2026-12-11T02:00:00";

/// Where the store is: a directory, a server (kept alive) whose clock
/// each command moves to its own time, or an S3 prefix; and a client of it working in the
/// target's directory.
struct Target {
    dir: tempfile::TempDir,
    client: Client,
    _server: Option<Server>,
    _garage: Option<Garage>,
}

impl Target {
    fn new(dir: tempfile::TempDir, store: &str, env: Vec<(&'static str, String)>) -> Target {
        let mut client = Client::new(store, &dir.path().join("runner-cache"));
        client.env = env;
        client.dir = Some(dir.path().to_path_buf());
        Target {
            dir,
            client,
            _server: None,
            _garage: None,
        }
    }

    fn local() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store").to_str().unwrap().to_string();
        Target::new(dir, &store, vec![])
    }

    /// A prefix of a Garage bucket, used directly.
    fn s3() -> Target {
        let garage = Garage::start();
        let mut t = Target::new(
            tempfile::tempdir().unwrap(),
            &garage.location("life"),
            garage.env(),
        );
        t._garage = Some(garage);
        t
    }

    /// A server whose clock (the time of every record it stores, and
    /// gc's) is the scenario's: each command moves it to its own `now`.
    fn http() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let clock = dir.path().join("server-now");
        let server = Server::start(
            dir.path().join("srv").to_str().unwrap(),
            &["--quiet"],
            &[("STRATA_NOW", &format!("@{}", clock.display()))],
        );
        let mut t = Target::new(dir, &server.ns("life"), vec![]);
        t._server = Some(server);
        t
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Moves the server's clock (when there is one) to `now`.
    fn at(&self, now: &str) {
        // A time that does not parse is the test's own (a bad STRATA_NOW).
        if let Some(secs) = strata_store::lifecycle::parse_time(now) {
            std::fs::write(self.path("server-now"), secs.to_string()).unwrap();
        }
    }

    fn ok(&self, now: &str, args: &[&str]) -> Value {
        self.at(now);
        self.client.json_with(&[("STRATA_NOW", now)], args)
    }

    fn fails(&self, now: &str, args: &[&str]) -> String {
        self.at(now);
        self.client.fails_with(&[("STRATA_NOW", now)], args)
    }

    fn persist(&self, now: &str, run: &str, job: &str, dir: &str) -> Value {
        let root = self.path("src");
        self.ok(
            now,
            &[
                "persist",
                "--run",
                run,
                "--job",
                job,
                "--root",
                root.to_str().unwrap(),
                dir,
            ],
        )
    }

    fn attach(&self, now: &str, run: &str, job: &str, at: &str) -> PathBuf {
        let at = self.path(at);
        self.ok(
            now,
            &[
                "attach",
                "--run",
                run,
                "--job",
                job,
                "--at",
                at.to_str().unwrap(),
            ],
        );
        at
    }
}

/// Runs a scenario on a directory, over `strata serve`, and on S3.
fn both(scenario: fn(&Target)) {
    scenario(&Target::local());
    scenario(&Target::http());
    scenario(&Target::s3());
}

const GRAPH: &[&str] = &[
    "run",
    "create",
    "--run",
    "r1",
    "--job",
    "build",
    "--job",
    "lint",
    "--job",
    "test:build",
    "--job",
    "deploy:test,lint",
];

fn rerun_keeps_what_succeeded(t: &Target) {
    random_files(&t.path("src/build"), 4, 50_000, 1);
    random_files(&t.path("src/lint"), 2, 10_000, 2);
    random_files(&t.path("src/test"), 2, 10_000, 3);
    t.ok(DAY0, GRAPH);
    t.persist(DAY0, "r1", "build", "build");
    t.persist(DAY0, "r1", "lint", "lint");
    t.persist(DAY0, "r1", "test", "test");
    for (job, status) in [
        ("build", "success"),
        ("lint", "success"),
        ("test", "failed"),
    ] {
        t.ok(
            DAY0,
            &[
                "job", "finish", "--run", "r1", "--job", job, "--status", status,
            ],
        );
    }
    let r = t.ok(
        DAY0,
        &["run", "rerun", "--from", "r1", "--run", "r2", "--failed"],
    );
    assert_eq!(r["rerun"], serde_json::json!(["test", "deploy"]));
    assert_eq!(r["reused"], serde_json::json!(["build", "lint"]));
    // test's failed layer is not in r2; build's and lint's are.
    let at = t.attach(DAY0, "r2", "deploy", "r2-deploy");
    assert!(at.join("build").exists() && at.join("lint").exists());
    assert!(!at.join("test").exists());
    // test persists anew in r2 and succeeds; deploy sees old and new.
    fs::write(t.path("src/test/blob000.bin"), b"fixed").unwrap();
    t.persist(DAY0, "r2", "test", "test");
    t.ok(
        DAY0,
        &[
            "job", "finish", "--run", "r2", "--job", "test", "--status", "success",
        ],
    );
    let at = t.attach(DAY0, "r2", "deploy", "r2-deploy-2");
    same_tree(&t.path("src"), &at);
    let ls = t.ok(DAY0, &["ls", "--run", "r2"]);
    assert_eq!(ls["rerun_of"], "r1");
    assert_eq!(ls["jobs"][0]["reused_from"], "r1");
    // A rerun of the rerun: deploy failed; everything else is kept.
    t.ok(
        DAY0,
        &[
            "job", "finish", "--run", "r2", "--job", "deploy", "--status", "failed",
        ],
    );
    let r3 = t.ok(
        DAY0,
        &["run", "rerun", "--from", "r2", "--run", "r3", "--failed"],
    );
    assert_eq!(r3["rerun"], serde_json::json!(["deploy"]));
    let at = t.attach(DAY0, "r3", "deploy", "r3-deploy");
    same_tree(&t.path("src"), &at);
    // Naming jobs instead; a job that does not exist is refused.
    let r4 = t.ok(
        DAY0,
        &[
            "run", "rerun", "--from", "r3", "--run", "r4", "--jobs", "lint",
        ],
    );
    assert_eq!(r4["rerun"], serde_json::json!(["lint", "deploy"]));
    let e = t.fails(
        DAY0,
        &[
            "run", "rerun", "--from", "r3", "--run", "r5", "--jobs", "nope",
        ],
    );
    assert!(e.contains("has no job nope"), "{e}");
    for job in ["lint", "deploy"] {
        t.ok(
            DAY0,
            &[
                "job", "finish", "--run", "r4", "--job", job, "--status", "success",
            ],
        );
    }
    let e = t.fails(
        DAY0,
        &["run", "rerun", "--from", "r4", "--run", "r6", "--failed"],
    );
    assert!(e.contains("no failed jobs"), "{e}");
}

#[test]
fn rerun_keeps_the_layers_of_jobs_that_succeeded() {
    both(rerun_keeps_what_succeeded);
}

fn rerun_cost_is_independent_of_size(t: &Target) {
    let mut cost = Vec::new();
    for (i, mib) in [(0, 1usize), (1, 24)] {
        let dir = format!("data{i}");
        random_files(&t.path(&format!("src/{dir}")), mib, 1 << 20, 10 + i as u64);
        let run = format!("big{i}");
        t.ok(
            DAY0,
            &[
                "run",
                "create",
                "--run",
                &run,
                "--job",
                "build",
                "--job",
                "test:build",
            ],
        );
        t.persist(DAY0, &run, "build", &dir);
        t.ok(
            DAY0,
            &[
                "job", "finish", "--run", &run, "--job", "build", "--status", "success",
            ],
        );
        t.ok(
            DAY0,
            &[
                "job", "finish", "--run", &run, "--job", "test", "--status", "failed",
            ],
        );
        let stats = t.ok(DAY0, &["stats"]);
        let r = t.ok(
            DAY0,
            &[
                "run",
                "rerun",
                "--from",
                &run,
                "--run",
                &format!("{run}-again"),
                "--failed",
            ],
        );
        let after = t.ok(DAY0, &["stats"]);
        // No pack, manifest or index object was written.
        for k in ["packs", "manifests", "stored_bytes"] {
            assert_eq!(stats[k], after[k], "{k} changed by a rerun");
        }
        assert_eq!(r["bytes_reused"].as_u64().unwrap(), (mib as u64) << 20);
        cost.push((
            r["objects_written"].as_u64().unwrap(),
            r["bytes_written"].as_u64().unwrap(),
        ));
    }
    // 24x the data, the same cost: the same refs, whose sizes differ only
    // by the width of a varint holding the layer's byte count.
    assert_eq!(cost[0].0, cost[1].0);
    assert!(cost[0].1.abs_diff(cost[1].1) <= 4, "{cost:?}");
    assert!(cost[1].1 < 1024, "{cost:?}");
}

#[test]
fn a_reruns_cost_does_not_depend_on_the_data() {
    both(rerun_cost_is_independent_of_size);
}

fn retention(t: &Target) {
    random_files(&t.path("src/out"), 3, 20_000, 4);
    t.ok(
        DAY0,
        &[
            "run",
            "create",
            "--run",
            "r1",
            "--job",
            "build",
            "--job",
            "test:build",
        ],
    );
    t.persist(DAY0, "r1", "build", "out");
    // Used on day 10: it now lives until day 25.
    t.attach(DAY10, "r1", "test", "at10");
    let ls = t.ok(DAY10, &["ls", "--run", "r1"]);
    assert_eq!(ls["expires_on"], "2026-11-26");
    t.attach(DAY20, "r1", "test", "at20");
    // Forty days on, and 20 days after its last use, it has expired.
    let e = t.fails(
        DAY40,
        &["attach", "--run", "r1", "--job", "test", "--at", "x"],
    );
    assert!(
        e.contains("workspace of run r1 expired on 2026-12-06 (15 days after its last use); rerun its upstream jobs to rebuild it"),
        "{e}"
    );
    assert!(!t.path("x").join("out").exists());
    let e = t.fails(
        DAY40,
        &[
            "persist",
            "--run",
            "r1",
            "--job",
            "test",
            "--root",
            t.path("src").to_str().unwrap(),
            "out",
        ],
    );
    assert!(e.contains("expired on 2026-12-06"), "{e}");
    // After gc has dropped its layers, the error is the same, not "not found".
    let gc = t.ok(DAY40, &["gc"]);
    assert_eq!(gc["runs_expired"], serde_json::json!(["r1"]));
    let e = t.fails(
        DAY40,
        &["attach", "--run", "r1", "--job", "test", "--at", "x"],
    );
    assert!(e.contains("expired on 2026-12-06"), "{e}");
    // Rerunning its upstream jobs makes a new run that works.
    let e = t.fails(
        DAY40,
        &[
            "run", "rerun", "--from", "r1", "--run", "r2", "--jobs", "build",
        ],
    );
    assert!(e.contains("expired"), "{e}");
    t.ok(
        DAY40,
        &[
            "run",
            "create",
            "--run",
            "r2",
            "--job",
            "build",
            "--job",
            "test:build",
        ],
    );
    t.persist(DAY40, "r2", "build", "out");
    same_tree(
        &t.path("src/out"),
        &t.attach(DAY40, "r2", "test", "at40").join("out"),
    );
}

#[test]
fn workspaces_expire_after_their_last_use_with_a_dated_error() {
    both(retention);
}

fn gc_reclaims(t: &Target) {
    // r-old holds 8 MiB only it references; r-new shares nothing with it.
    random_files(&t.path("src/old"), 8, 1 << 20, 5);
    random_files(&t.path("src/new"), 2, 1 << 20, 6);
    // A pack shared by a dead and a live layer: 3 MiB dead, 100 KB live.
    random_files(&t.path("src/mixed"), 3, 1 << 20, 7);
    fs::write(t.path("src/mixed/keep"), vec![7u8; 100_000]).unwrap();
    fs::create_dir_all(t.path("src/keep")).unwrap();
    fs::copy(t.path("src/mixed/keep"), t.path("src/keep/keep")).unwrap();
    t.ok(
        DAY0,
        &[
            "run", "create", "--run", "r-old", "--job", "a", "--job", "b:a",
        ],
    );
    t.persist(DAY0, "r-old", "a", "old");
    t.persist(DAY0, "r-old", "a", "mixed");
    t.ok(
        DAY30,
        &[
            "run", "create", "--run", "r-new", "--job", "a", "--job", "b:a",
        ],
    );
    t.persist(DAY30, "r-new", "a", "new");
    t.persist(DAY30, "r-new", "a", "keep");
    let before = t.ok(DAY30, &["stats"])["stored_bytes"].as_u64().unwrap();
    // On day 40, r-old has expired (on day 15), r-new has not. A dry run
    // and stats say so and change nothing.
    let dry = t.ok(DAY40, &["gc", "--dry-run"]);
    assert_eq!(dry["runs_expired"], serde_json::json!(["r-old"]));
    let stats = t.ok(DAY40, &["stats"]);
    assert_eq!(stats["gc"]["runs_expired"], serde_json::json!(["r-old"]));
    assert_eq!(stats["stored_bytes"].as_u64().unwrap(), before);
    let ls = t.ok(DAY40, &["ls", "--run", "r-old"]);
    assert_eq!(ls["jobs"][0]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(ls["expired"], true);
    // gc with the store's grace period: r-old goes, its packs are condemned.
    let first = t.ok(DAY40, &["gc"]);
    assert_eq!(first["runs_expired"], serde_json::json!(["r-old"]));
    assert!(first["packs_condemned"].as_u64().unwrap() >= 2, "{first}");
    // The mixed pack is mostly garbage: its live chunk moves out.
    assert_eq!(first["packs_rewritten"], 1, "{first}");
    assert_eq!(first["packs_deleted"], 0);
    // r-new still attaches in full (its chunk in the mixed pack was copied).
    let at = t.attach(DAY30, "r-new", "b", "new-b");
    same_tree(&t.path("src/new"), &at.join("new"));
    same_tree(&t.path("src/keep"), &at.join("keep"));
    // Once the grace period has passed, they go.
    let second = t.ok(DAY40_LATER, &["gc"]);
    let reclaimed = second["bytes_reclaimed"].as_u64().unwrap();
    assert!(reclaimed > 10 << 20, "{second}");
    let after = t.ok(DAY30, &["stats"])["stored_bytes"].as_u64().unwrap();
    assert!(after < before - (10 << 20), "stored {before} -> {after}");
    assert!(after > 2 << 20);
    let at = t.attach(DAY30, "r-new", "b", "new-b2");
    same_tree(&t.path("src/new"), &at.join("new"));
    same_tree(&t.path("src/keep"), &at.join("keep"));
    // Nothing left to do.
    let third = t.ok(DAY40_LATER, &["gc"]);
    assert_eq!(third["packs_deleted"], 0);
    assert_eq!(third["bytes_reclaimed"], 0);
}

#[test]
fn gc_reclaims_expired_runs_and_keeps_live_ones() {
    let t = Target::local();
    gc_reclaims(&t);
    let out = strata()
        .args(["--store", &t.client.store, "verify", "--read-data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    gc_reclaims(&Target::http());
    gc_reclaims(&Target::s3());
}

fn caches(t: &Target) {
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("package-lock.json"), b"{\"v\": 1}").unwrap();
    strata_store::synth::generate(&src.join("node_modules"), 300, 9).unwrap();
    let tpl = "deps-{{ .Branch }}-{{ checksum \"src/package-lock.json\" }}";
    let save = |now: &str| {
        t.at(now);
        t.client.json_with(
            &[("STRATA_NOW", now), ("CIRCLE_BRANCH", "main")],
            &[
                "cache",
                "save",
                "--key",
                tpl,
                "--root",
                src.to_str().unwrap(),
                "node_modules",
            ],
        )
    };
    let first = save(DAY0);
    assert_eq!(first["saved"], true);
    let key = first["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("deps-main-"), "{key}");
    // A key is immutable: saving again changes nothing.
    fs::write(src.join("node_modules/extra.js"), b"x").unwrap();
    let again = save(DAY0);
    assert_eq!(again["saved"], false);
    // The same tree persisted to a workspace is stored once.
    fs::remove_file(src.join("node_modules/extra.js")).unwrap();
    t.ok(DAY0, &["run", "create", "--run", "w", "--job", "build"]);
    let p = t.persist(DAY0, "w", "build", "node_modules");
    assert_eq!(p["bytes_new"], 0, "{p}");
    // Restore: exact, then prefix (the most recent), in the order given.
    let restore = |now: &str, keys: &[&str], at: &str| {
        let mut a = vec!["cache", "restore"];
        for k in keys {
            a.push("--key");
            a.push(k);
        }
        a.push("--at");
        a.push(at);
        t.ok(now, &a)
    };
    let r = restore(DAY0, &["nothing-here", &key], "r1");
    assert_eq!(r["restored_key"], key);
    assert_eq!(r["exact"], true);
    same_tree(&src.join("node_modules"), &t.path("r1/node_modules"));
    // A newer entry under the same prefix wins a prefix restore.
    fs::write(src.join("node_modules/newer.js"), b"newer").unwrap();
    t.ok(
        DAY10,
        &[
            "cache",
            "save",
            "--key",
            "deps-main-zzz",
            "--root",
            src.to_str().unwrap(),
            "node_modules",
        ],
    );
    let r = restore(DAY10, &["deps-feature-", "deps-main-"], "r2");
    assert_eq!(r["restored_key"], "deps-main-zzz");
    assert_eq!(r["matched"], "deps-main-");
    assert_eq!(r["exact"], false);
    assert!(t.path("r2/node_modules/newer.js").exists());
    let r = restore(DAY10, &["nope"], "r3");
    assert!(r["restored_key"].is_null());
    let ls = t.ok(DAY10, &["ls"]);
    assert_eq!(ls["caches"].as_array().unwrap().len(), 2, "{ls}");
    // An entry expires 15 days after its last restore: the first was
    // restored on day 0, the second saved and restored on day 10.
    let r = restore(DAY20, &["deps-main-"], "r4");
    assert_eq!(r["restored_key"], "deps-main-zzz");
    let r = restore(DAY40, &["deps-main-"], "r5");
    assert!(r["restored_key"].is_null(), "{r}");
    let gc = t.ok(DAY40, &["gc"]);
    assert_eq!(gc["caches_expired"], 2);
}

#[test]
fn dependency_caches_share_the_chunk_store() {
    both(caches);
}

#[test]
fn bad_cache_keys_and_statuses_fail_clearly() {
    let t = Target::local();
    t.ok(DAY0, &["run", "create", "--run", "r", "--job", "a"]);
    let e = t.fails(
        DAY0,
        &[
            "job", "finish", "--run", "r", "--job", "a", "--status", "meh",
        ],
    );
    assert!(
        e.contains("job status") && e.contains("success or failed"),
        "{e}"
    );
    let e = t.fails(
        DAY0,
        &[
            "cache",
            "save",
            "--key",
            "x-{{ .Environment.NOPE_NOT_SET }}",
            ".",
        ],
    );
    assert!(e.contains("$NOPE_NOT_SET is not set"), "{e}");
    let e = t.fails(
        DAY0,
        &[
            "cache",
            "restore",
            "--key",
            "{{ checksum \"missing.lock\" }}",
        ],
    );
    assert!(e.contains("missing.lock"), "{e}");
    let e = t.fails("not-a-date", &["ls"]);
    assert!(e.contains("STRATA_NOW"), "{e}");
}

#[test]
fn the_server_runs_gc_on_a_schedule() {
    // A run persisted on day 0 through a server without a schedule...
    let mut t = Target::http();
    random_files(&t.path("src/out"), 2, 100_000, 8);
    t.ok(DAY0, &["run", "create", "--run", "r1", "--job", "a"]);
    t.persist(DAY0, "r1", "a", "out");
    t._server = None;
    // ...is dropped by the scheduled gc of a server whose clock reads day 40.
    let server = Server::start(
        t.path("srv").to_str().unwrap(),
        &["--gc-every", "1s"],
        &[("STRATA_NOW", DAY40)],
    );
    let line = server.wait_for_log("scheduled gc life:", std::time::Duration::from_secs(10));
    assert!(line.contains("1 runs expired"), "{line}");
    t.client.store = server.ns("life");
    let ls = t.ok(DAY0, &["ls", "--run", "r1"]);
    assert_eq!(ls["expired"], true, "{ls}");
    assert_eq!(ls["expires_on"], "2026-11-16");
}
