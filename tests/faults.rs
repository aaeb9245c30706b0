//! Network faults between a runner and `strata serve`, through the test
//! proxy (tests/support/proxy.rs): a stalled or silent server ends the
//! command with an error naming the server, within the documented bound
//! (six stall timeouts; `STRATA_NET_TIMEOUT=1` here), never a hang; a
//! reset connection is retried on a fresh one.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::proxy::{Faults, Proxy};
use support::{random_files, same_tree, Client, Server};

/// A server with run `r` (build -> test) whose `build` persisted 2 MiB of
/// incompressible files in `src/out`.
fn persisted(d: &Path) -> (Server, Client) {
    let server = Server::start(d.join("srv").to_str().unwrap(), &[], &[]);
    let direct = Client::new(&server.ns("team"), &d.join("cache-direct"));
    random_files(&d.join("src/out"), 8, 256 << 10, 7);
    create_build_test(&direct, "r");
    direct.persist("r", "build", &d.join("src"), "out");
    (server, direct)
}

/// Creates run `run` with jobs `build` and `test` (requiring build).
fn create_build_test(c: &Client, run: &str) {
    c.ok(&[
        "run",
        "create",
        run,
        "--job",
        "build",
        "--job",
        "test:build",
    ]);
}

/// A client through `url` (a proxy), with a 1 s stall timeout and no
/// runner cache, so every byte crosses the proxy.
fn through(url: &str, d: &Path, name: &str) -> Client {
    let mut c = Client::new(&format!("{url}/team"), &d.join(name));
    c.env.push(("STRATA_NET_TIMEOUT", "1".into()));
    c.env.push(("STRATA_CACHE_MIB", "0".into()));
    c
}

/// A proxy with `faults` in front of `server`, and a client through it.
fn behind(server: &Server, d: &Path, cache: &str, faults: Faults) -> (Proxy, Client) {
    let (proxy, url) = Proxy::in_front_of(&server.url, faults);
    let client = through(&url, d, cache);
    (proxy, client)
}

// The attach that hung for good (the issue's 300 s) now ends in seconds.
#[test]
fn a_server_that_stalls_mid_answer_ends_attach_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server, direct) = persisted(d);
    let (proxy, client) = behind(
        &server,
        d,
        "cache-stalled",
        Faults {
            stall_after: Some(200_000),
            ..Faults::default()
        },
    );
    let started = Instant::now();
    let err = client.fails(&[
        "attach",
        "--run",
        "r",
        "--job",
        "test",
        "--at",
        d.join("at").to_str().unwrap(),
    ]);
    let took = started.elapsed();
    // Six 1 s stall timeouts and the backoff between them, with room for
    // a loaded machine; the default (10 s) makes it about a minute.
    assert!(took < Duration::from_secs(30), "took {took:?}: {err}");
    assert!(
        err.contains(&proxy.addr.to_string()),
        "names the server: {err}"
    );
    assert!(err.contains("gave up after"), "says it retried: {err}");
    assert!(proxy.connections() >= 2, "retried on fresh connections");
    // Nothing half-written under a final name: the next attach (direct)
    // writes the exact tree.
    direct.attach("r", "test", &d.join("at"));
    same_tree(&d.join("src/out"), &d.join("at/out"));
}

// Accepted and never answered: the handshake itself times out.
#[test]
fn a_server_that_never_answers_ends_the_command_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server, _) = persisted(d);
    let (proxy, client) = behind(
        &server,
        d,
        "cache-silent",
        Faults {
            black_hole: true,
            ..Faults::default()
        },
    );
    let started = Instant::now();
    let err = client.fails(&["ls"]);
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
    assert!(err.contains(&proxy.addr.to_string()), "{err}");
    assert!(err.contains("gave up after"), "{err}");
}

// Resets after 100 kB on the first three connections: the retries on fresh
// connections get the rest, and the tree is exact.
#[test]
fn connections_reset_mid_download_are_retried_on_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server, _) = persisted(d);
    let (proxy, client) = behind(
        &server,
        d,
        "cache-reset",
        Faults {
            reset_after: Some(100_000),
            fault_connections: Some(3),
            ..Faults::default()
        },
    );
    client.attach("r", "test", &d.join("at"));
    same_tree(&d.join("src/out"), &d.join("at/out"));
    assert!(proxy.resets() >= 1, "a connection was reset mid-download");
}

// Resets mid-upload on the first three connections: the persist retries
// on fresh connections, the store verifies, and the layer attaches exactly.
#[test]
fn connections_reset_mid_upload_are_retried_and_the_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server, direct) = persisted(d);
    let (proxy, client) = behind(
        &server,
        d,
        "cache-up",
        Faults {
            reset_up_after: Some(300_000),
            fault_connections: Some(3),
            ..Faults::default()
        },
    );
    random_files(&d.join("src3/out"), 6, 256 << 10, 11);
    create_build_test(&client, "r3");
    client.persist("r3", "build", &d.join("src3"), "out");
    assert!(proxy.resets() >= 1, "a connection was reset mid-upload");
    let report = direct.json(&["verify", "--read-data"]);
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    direct.attach("r3", "test", &d.join("at3"));
    same_tree(&d.join("src3/out"), &d.join("at3/out"));
}

// Delay both ways: everything still works, only slower; the reports count
// the round trips on the critical path (at most one per request).
#[test]
fn persist_and_attach_work_through_a_delayed_link() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server, _) = persisted(d);
    let (_proxy, client) = behind(
        &server,
        d,
        "cache-slow",
        Faults {
            one_way: Duration::from_millis(10),
            mbit: Some(400.0),
            ..Faults::default()
        },
    );
    random_files(&d.join("src2/out"), 4, 64 << 10, 9);
    create_build_test(&client, "r2");
    let persisted = client.persist("r2", "build", &d.join("src2"), "out");
    let attached = client.attach("r2", "test", &d.join("at2"));
    same_tree(&d.join("src2/out"), &d.join("at2/out"));
    for report in [&persisted, &attached] {
        let net = &report["network"];
        let (trips, requests) = (
            net["round_trips"].as_u64().unwrap(),
            net["requests"].as_u64().unwrap(),
        );
        assert!(trips >= 1 && trips <= requests, "{net}");
    }
}

/// The round trips on attach's critical path when `up` jobs, each with one
/// small layer, are upstream of the attaching job (through the proxy, a
/// fresh runner cache).
fn attach_round_trips(d: &Path, server: &Server, url: &str, up: usize) -> u64 {
    let run = format!("fan{up}");
    let direct = Client::new(&server.ns("team"), &d.join(format!("cache-fan{up}")));
    let mut args = vec!["run".to_string(), "create".into(), run.clone()];
    let ups: Vec<String> = (0..up).map(|i| format!("u{i}")).collect();
    for u in &ups {
        args.extend(["--job".into(), u.clone()]);
    }
    args.extend(["--job".into(), format!("down:{}", ups.join(","))]);
    direct.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for (i, u) in ups.iter().enumerate() {
        let src = d.join(format!("fan{up}/{u}"));
        random_files(&src.join(u), 1, 4096, 1000 + i as u64);
        direct.persist(&run, u, &src, u);
    }
    let client = through(url, d, &format!("cache-fan{up}-attach"));
    let report = client.attach(&run, "down", &d.join(format!("at-fan{up}")));
    report["network"]["round_trips"].as_u64().unwrap()
}

// Attach lists every upstream job's layers and fetches their manifests at
// once: eight upstream jobs cost no more round trips than two.
#[test]
fn attach_round_trips_do_not_grow_with_the_upstream_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d.join("srv").to_str().unwrap(), &[], &[]);
    let (_proxy, url) = Proxy::in_front_of(
        &server.url,
        Faults {
            one_way: Duration::from_millis(25),
            ..Faults::default()
        },
    );
    let two = attach_round_trips(d, &server, &url, 2);
    let eight = attach_round_trips(d, &server, &url, 8);
    eprintln!("attach round trips: {two} with 2 upstream jobs, {eight} with 8");
    assert!(
        eight <= two,
        "2 upstream jobs: {two} round trips; 8: {eight}"
    );
}
