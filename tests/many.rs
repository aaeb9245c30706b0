//! Many runners through one server at once (issue 31, item 2;
//! docs/deploy.md, "Many runners"): every one succeeds and attaches what
//! was persisted byte for byte, and the server runs their store work on
//! `--workers` threads and no others.

use std::path::Path;

use crate::support::{random_files, same_tree, Client, Server};

const RUNNERS: usize = 16;

/// The names of the server's threads (Linux: `/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks
        .flatten()
        .map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            comm.trim().to_string()
        })
        .collect()
}

/// Runs `step` for runners 0..RUNNERS all at once.
fn at_once(step: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        for i in 0..RUNNERS {
            let step = &step;
            s.spawn(move || step(i));
        }
    });
}

fn runner(store: &str, d: &Path, name: &str) -> Client {
    Client::new(store, &d.join(format!("cache-{name}")))
}

// Sixteen runners persist their own trees through one server of two
// workers, all at once; then sixteen fresh runners attach them, at once.
#[test]
fn sixteen_runners_at_once_through_a_server_of_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(
        d.join("srv").to_str().unwrap(),
        &["--workers", "2", "--quiet"],
        &[],
    );
    let store = server.ns("many");
    let store = store.as_str();
    // Job uI uses what job jI persisted.
    let jobs: Vec<String> = (0..RUNNERS)
        .flat_map(|i| [format!("j{i}"), format!("u{i}:j{i}")])
        .collect();
    let mut create = vec!["run", "create", "--run", "r"];
    for j in &jobs {
        create.extend(["--job", j]);
    }
    runner(store, d, "setup").ok(&create);
    for i in 0..RUNNERS {
        // Incompressible, so every runner's packs are its own: 24 files
        // of 64 KiB each, the server checks every chunk of 1.5 MiB.
        random_files(
            &d.join(format!("tree{i}/out")),
            24,
            64 << 10,
            1000 + i as u64,
        );
    }
    at_once(|i| {
        runner(store, d, &format!("p{i}")).persist(
            "r",
            &format!("j{i}"),
            &d.join(format!("tree{i}")),
            "out",
        );
    });
    at_once(|i| {
        let at = d.join(format!("at{i}"));
        runner(store, d, &format!("a{i}")).attach("r", &format!("u{i}"), &at);
        same_tree(&d.join(format!("tree{i}/out")), &at.join("out"));
    });
    // Store work ran on the two store threads (threads the store itself
    // starts, unnamed, inherit the name of the one that started them), and
    // on no blocking thread of tokio's, which the server used for it
    // before: those would be named like the async threads and outnumber
    // them.
    let names = thread_names(server.pid());
    let mut store: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(strata_server::STORE_THREAD_PREFIX))
        .collect();
    store.sort();
    store.dedup();
    assert_eq!(store, ["strata-store-0", "strata-store-1"], "{names:?}");
    let async_threads = names.iter().filter(|n| *n == "strata-async").count();
    assert!(async_threads <= 2, "{names:?}");
}
