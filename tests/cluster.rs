//! `strata serve` replicas over one bucket of a three-node Garage cluster
//! (replication factor 3, ../shared/s3-server.md): clients through random
//! replicas while a Garage node dies, a replica killed mid-persist, gc
//! scheduled on every replica while persists run.

use crate::support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use support::{lock_log, random_files, same_tree, Client, GarageCluster, Server};

/// `n` replicas of `cluster.location(prefix)`, each with its own metadata
/// directory under `dir`, reaching the bucket through nodes 0 and 1 (node
/// 2 is the one the tests kill).
fn replicas(
    cluster: &GarageCluster,
    dir: &Path,
    prefix: &str,
    n: usize,
    extra: &[&str],
) -> Vec<Server> {
    (0..n)
        .map(|i| {
            let env = cluster.env(i % 2);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let meta = dir.join(format!("replica-{i}"));
            let mut args = vec![
                "--cache-dir",
                meta.to_str().unwrap(),
                "--resync-every",
                "1s",
            ];
            args.extend_from_slice(extra);
            Server::start(&cluster.location(prefix), &args, &env)
        })
        .collect()
}

/// A client of namespace `team` through one replica (a short stall
/// timeout: a hang fails the test in seconds).
fn via(server: &str, cache: &Path) -> Client {
    let mut c = Client::new(&format!("{server}/team"), cache);
    c.env.push(("STRATA_NET_TIMEOUT", "10".into()));
    c
}

// Sixteen clients persist and attach through random replicas while one of
// the three Garage nodes dies: every attach is byte-identical, each next
// run sends under 5% of its tree, and the store verifies clean.
#[test]
fn sixteen_clients_through_random_replicas_outlive_a_garage_node() {
    let mut cluster = GarageCluster::start();
    let d = tempfile::tempdir().unwrap();
    let servers = replicas(&cluster, d.path(), "sixteen", 3, &["--quiet"]);
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let base = d.path().join("base");
    random_files(&base.join("out"), 200, 20_000, 7);
    let first = via(&urls[0], &d.path().join("cache-base"));
    first.ok(&[
        "run",
        "create",
        "--run",
        "base",
        "--job",
        "build",
        "--job",
        "test:build",
    ]);
    first.persist("base", "build", &base, "out");
    // Past the replicas' resync interval: all know the base's chunks.
    std::thread::sleep(Duration::from_millis(1100));
    let persisted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..16usize)
            .map(|i| {
                let (urls, persisted, d) = (&urls, &persisted, d.path());
                s.spawn(move || {
                    // The next run of the base: 2 new files of 200 (1%).
                    let src = d.join(format!("src{i}"));
                    random_files(&src.join("out"), 200, 20_000, 7);
                    random_files(&src.join("out/new"), 2, 20_000, 100 + i as u64);
                    let cache = d.join(format!("cache{i}"));
                    let replica = |k: usize| via(&urls[(i + k) % 3], &cache);
                    let run = format!("r{i}");
                    replica(0).ok(&[
                        "run",
                        "create",
                        "--run",
                        &run,
                        "--job",
                        "build",
                        "--job",
                        "test:build",
                    ]);
                    let report = replica(1).persist(&run, "build", &src, "out");
                    persisted.fetch_add(1, SeqCst);
                    let sent = report["network"]["sent"].as_u64().unwrap();
                    assert!(
                        sent < 200_000,
                        "client {i} sent {sent} B of a 4 MB tree with 1% new"
                    );
                    let at = d.join(format!("at{i}"));
                    replica(2).attach(&run, "test", &at);
                    same_tree(&src.join("out"), &at.join("out"));
                })
            })
            .collect();
        // A Garage node dies while the clients run: quorum is 2 of 3.
        let deadline = Instant::now() + Duration::from_secs(120);
        while persisted.load(SeqCst) < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.kill_node(2);
        for c in clients {
            c.join().unwrap();
        }
    });
    let check = via(&urls[1], &d.path().join("cache-check"));
    let out = check.ok(&["verify", "--read-data"]);
    assert!(out.contains("no problems"), "{out}");
}

// A replica dies in the middle of a persist whose client names all three:
// the client moves to another and the persist completes, or fails with a
// clear error and leaves no partial layer; a retry completes.
#[test]
fn a_replica_killed_mid_persist_hands_the_client_over() {
    let cluster = GarageCluster::start();
    let d = tempfile::tempdir().unwrap();
    let mut servers = replicas(&cluster, d.path(), "handover", 3, &[]);
    let hosts: Vec<&str> = servers
        .iter()
        .map(|s| s.url.trim_start_matches("http://"))
        .collect();
    let all = format!("http://{}/team", hosts.join(","));
    let mut client = Client::new(&all, &d.path().join("cache"));
    client.env.push(("STRATA_NET_TIMEOUT", "10".into()));
    client.ok(&[
        "run",
        "create",
        "--run",
        "r",
        "--job",
        "build",
        "--job",
        "test:build",
    ]);
    let src = d.path().join("src");
    random_files(&src.join("out"), 40, 500_000, 11);
    let outcome = std::thread::scope(|s| {
        let persist = s.spawn(|| {
            client.run(&[
                "persist",
                "--run",
                "r",
                "--job",
                "build",
                "--root",
                src.to_str().unwrap(),
                "out",
            ])
        });
        // The first pack reaches the first replica: kill it.
        servers[0].wait_for_log("packs/", Duration::from_secs(60));
        servers[0].kill();
        persist.join().unwrap()
    });
    let at = d.path().join("at");
    eprintln!(
        "persist with its replica killed: {} {}",
        outcome.status,
        String::from_utf8_lossy(&outcome.stderr)
    );
    if outcome.status.success() {
        client.ok(&[
            "attach",
            "--run",
            "r",
            "--job",
            "test",
            "--at",
            at.to_str().unwrap(),
        ]);
    } else {
        let err = String::from_utf8_lossy(&outcome.stderr);
        assert!(err.contains("strata"), "an unclear failure: {err}");
        // No partial layer: nothing to attach yet.
        let ls = client.ok(&["ls", "--run", "r"]);
        assert!(!ls.contains("layer 1"), "{ls}");
        client.ok(&[
            "persist",
            "--run",
            "r",
            "--job",
            "build",
            "--root",
            src.to_str().unwrap(),
            "out",
        ]);
        client.ok(&[
            "attach",
            "--run",
            "r",
            "--job",
            "test",
            "--at",
            at.to_str().unwrap(),
        ]);
    }
    same_tree(&src.join("out"), &at.join("out"));
    let out = client.ok(&["verify", "--read-data"]);
    assert!(out.contains("no problems"), "{out}");
}

// gc scheduled every second on all three replicas while clients persist
// and attach through them (separate processes), on a clock 300 times
// faster than real time: the runs of twenty days ago
// expire, their packs are condemned and then deleted while persists run;
// no two gcs ever held the lease at once (its take/release log); every
// live layer attaches; the store verifies clean.
#[test]
fn gc_on_every_replica_while_persists_run() {
    let cluster = GarageCluster::start();
    let d = tempfile::tempdir().unwrap();
    let location = cluster.location("gc");
    let s3 = |now: &str| {
        let mut c = Client::new(&format!("{location}/team"), &d.path().join("cache-old"));
        c.env = cluster.env(0);
        c.env.push(("STRATA_NOW", now.into()));
        c
    };
    // Day 0, straight to the bucket: three runs of content no later run
    // shares, so their packs die whole when the runs expire.
    let day0 = 1_700_000_000u64;
    for i in 0..3u64 {
        let old = s3(&day0.to_string());
        let run = format!("old{i}");
        old.ok(&[
            "run",
            "create",
            "--run",
            &run,
            "--job",
            "build",
            "--job",
            "test:build",
        ]);
        let src = d.path().join(format!("old-src{i}"));
        random_files(&src.join("out"), 20, 20_000, 500 + i);
        old.persist(&run, "build", &src, "out");
    }
    // The replicas' and clients' clock: from day 20 (past the 15-day
    // retention) it runs 300 times faster than real time, so the grace
    // period G (an hour) passes in 12 s and a gc lease (an hour) outlives
    // any gc here by far.
    let clock = d.path().join("server-now");
    let start = day0 + 20 * 86_400;
    let set_clock = |clock: &Path, now: u64| {
        let tmp = clock.with_extension("tmp");
        std::fs::write(&tmp, now.to_string()).unwrap();
        std::fs::rename(&tmp, clock).unwrap();
    };
    set_clock(&clock, start);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (clock, stop) = (clock.clone(), stop.clone());
        let began = Instant::now();
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                set_clock(
                    &clock,
                    start + (began.elapsed().as_secs_f64() * 300.0) as u64,
                );
            }
        })
    };
    let log_file = d.path().join("lease-log");
    let clock_env = format!("@{}", clock.display());
    let env = [
        ("STRATA_NOW", clock_env.as_str()),
        ("STRATA_LOCK_LOG", log_file.to_str().unwrap()),
    ];
    // Clients read the same clock (a run's expiry is checked on both sides).
    let on_clock = |mut c: Client| {
        c.env.push(("STRATA_NOW", clock_env.clone()));
        c
    };
    let servers: Vec<Server> = (0..3)
        .map(|i| {
            let meta = d.path().join(format!("replica-{i}"));
            let mut all: Vec<(&str, String)> = cluster.env(i % 2);
            all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
            let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let args = [
                "--cache-dir",
                meta.to_str().unwrap(),
                "--resync-every",
                "1s",
                "--gc-every",
                "1s",
            ];
            Server::start(&location, &args, &all)
        })
        .collect();
    let (mut expired, mut deleted, mut ran, mut skipped) = (0, 0, 0, 0);
    let mut round = 0u64;
    // Until the old runs' packs are deleted and some rounds after (a
    // bound keeps a gc that never deletes from running forever).
    while deleted == 0 || round < 10 {
        assert!(round < 60, "no pack was deleted in {round} rounds");
        let src = d.path().join(format!("src{round}"));
        random_files(&src.join("out"), 50, 20_000, round % 2);
        random_files(&src.join("out/new"), 1, 20_000, 1000 + round);
        let cache = d.path().join("cache");
        let c = |k: u64| on_clock(via(&servers[((round + k) % 3) as usize].url, &cache));
        let run = format!("r{round}");
        c(0).ok(&[
            "run",
            "create",
            "--run",
            &run,
            "--job",
            "build",
            "--job",
            "test:build",
        ]);
        c(1).persist(&run, "build", &src, "out");
        let at = d.path().join(format!("at{round}"));
        c(2).attach(&run, "test", &at);
        same_tree(&src.join("out"), &at.join("out"));
        for server in &servers {
            while let Ok(line) = server.log.try_recv() {
                if line.contains("scheduled gc team skipped: another gc is running") {
                    skipped += 1;
                } else if let Some(rest) = line.split("scheduled gc team: ").nth(1) {
                    ran += 1;
                    let n = |what: &str| -> u64 {
                        let before = rest.split(what).next().unwrap();
                        before.rsplit(' ').next().unwrap().parse().unwrap()
                    };
                    expired += n(" runs expired");
                    deleted += n(" packs deleted");
                } else {
                    assert!(!line.contains("scheduled gc team failed"), "{line}");
                }
            }
        }
        round += 1;
    }
    eprintln!("{round} rounds: {ran} gc runs ({skipped} skipped), {expired} runs expired, {deleted} packs deleted");
    assert_eq!(expired, 3, "the three old runs expire, once each");
    // The lease's own record: no two gcs held it at once.
    // (A gc still running now holds it until the end of time.)
    let (done, open) = lock_log(&log_file);
    let lease = |path: &str| path.ends_with("/gc/running/");
    let mut held: Vec<(u128, u128)> = done
        .iter()
        .filter(|h| lease(&h.1))
        .map(|h| (h.2, h.3))
        .chain(
            open.iter()
                .filter(|(k, _)| lease(&k.1))
                .map(|(_, t)| (*t, u128::MAX)),
        )
        .collect();
    held.sort();
    assert!(
        held.len() as u64 >= ran,
        "{ran} gcs ran, the log holds {held:?}"
    );
    for w in held.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "two gcs overlapped: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    // Every run of a round attaches still, through any replica; the old
    // runs are gone with a dated error.
    for r in 0..round {
        let at = d.path().join(format!("again{r}"));
        on_clock(via(
            &servers[(r % 3) as usize].url,
            &d.path().join("cache2"),
        ))
        .attach(&format!("r{r}"), "test", &at);
        same_tree(&d.path().join(format!("src{r}/out")), &at.join("out"));
    }
    let err = on_clock(via(&servers[0].url, &d.path().join("cache2"))).fails(&[
        "attach",
        "--run",
        "old0",
        "--job",
        "test",
        "--at",
        d.path().join("gone").to_str().unwrap(),
    ]);
    // Day 0 is 2023-11-14; fifteen days after its last use:
    assert!(
        err.contains("workspace of run old0 expired on 2023-11-29"),
        "{err}"
    );
    let out =
        on_clock(via(&servers[0].url, &d.path().join("cache3"))).ok(&["verify", "--read-data"]);
    assert!(out.contains("no problems"), "{out}");
    stop.store(true, SeqCst);
    ticker.join().unwrap();
}
