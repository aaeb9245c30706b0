//! One client flooding a server does not starve another (issue 31, item
//! 2; docs/deploy.md, "Many runners"), end to end and by count: with one
//! store-work thread (`--workers 1`), the order in which the server runs
//! the two clients' store calls is read off the calls themselves.
//!
//! Each call is a `GET` of an object that is a named pipe in the
//! namespace's directory: the server's read of it blocks in `open` until
//! this test opens the pipe for writing, so the one thread stays in that
//! call until the test lets it go, and the test sees which call the thread
//! is in (a non-blocking open for writing succeeds only on a pipe someone
//! is opening for reading). The queue's depth in `/metrics` says when
//! every call has been queued.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::http::{bearer, request};
use crate::support::Server;

const FLOOD: &str = "flood-token-0123456789";
const OTHER: &str = "other-token-0123456789";
const PROM: &str = "prometheus-token-0123456789";
/// The flood's calls queued behind its first.
const QUEUED: usize = 20;

/// A named pipe at `key` of namespace `a`'s directory store.
fn pipe(ns: &Path, key: &str) -> PathBuf {
    let path = ns.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
    path
}

/// Lets the call reading `pipe` go if the server is in it: false if no
/// one has the pipe open for reading.
fn release(pipe: &Path) -> bool {
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(pipe);
    match opened {
        Ok(mut w) => {
            w.write_all(b"held").unwrap();
            true
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => false,
        Err(e) => panic!("{}: {e}", pipe.display()),
    }
}

/// Waits until `/metrics` shows the queue as `want` (calls waiting, calls
/// running, clients waiting).
fn wait_for_queue(s: &Server, want: (u64, u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = request(&s.url, "GET", "/metrics", &bearer(PROM), b"").text();
        let gauge = |series: &str| {
            let line = text.lines().find(|l| l.starts_with(series));
            line.and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        };
        let now = (
            gauge("strata_queue_calls{state=\"waiting\"} "),
            gauge("strata_queue_calls{state=\"running\"} "),
            gauge("strata_queue_waiting_clients "),
        );
        if now == (Some(want.0), Some(want.1), Some(want.2)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue {now:?}, waiting for {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// A client holds the one thread and queues twenty more calls; another
// then asks once. Its call runs second once the thread is free (the
// flood's client was waiting first), not after the flood's twenty: a
// first-come-first-served queue would run it twenty-first.
#[test]
fn a_flooding_client_does_not_starve_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let auth = d.join("server.yaml");
    std::fs::write(
        &auth,
        format!(
            "tokens:\n\
             - {{name: flood, token: {FLOOD}, namespace: a, scope: read}}\n\
             - {{name: other, token: {OTHER}, namespace: a, scope: read}}\n\
             - {{name: prom, token: {PROM}, scope: metrics}}\n"
        ),
    )
    .unwrap();
    let srv = d.join("srv");
    let s = Server::start(
        srv.to_str().unwrap(),
        &[
            "--workers",
            "1",
            "--quiet",
            "--config",
            auth.to_str().unwrap(),
        ],
        &[],
    );
    // The namespace's store exists once a client said hello.
    assert_eq!(
        request(&s.url, "GET", "/v1/ns/a/", &bearer(FLOOD), b"").status,
        200
    );
    let ns = srv.join("a");
    let get = |token: &'static str, key: String| {
        let url = s.url.clone();
        std::thread::spawn(move || {
            let path = format!("/v1/ns/a/o/{key}");
            request(&url, "GET", &path, &bearer(token), b"").status
        })
    };
    let held = pipe(&ns, "runs/held/run");
    let mut answers = vec![get(FLOOD, "runs/held/run".into())];
    wait_for_queue(&s, (0, 1, 0));
    let mut pipes = Vec::new();
    for i in 0..QUEUED {
        pipes.push((
            format!("flood{i}"),
            pipe(&ns, &format!("runs/flood{i}/run")),
        ));
        answers.push(get(FLOOD, format!("runs/flood{i}/run")));
    }
    wait_for_queue(&s, (QUEUED as u64, 1, 1));
    pipes.push(("other".into(), pipe(&ns, "runs/other/run")));
    answers.push(get(OTHER, "runs/other/run".into()));
    wait_for_queue(&s, (QUEUED as u64 + 1, 1, 2));

    // Let the calls go one at a time, in the order the thread takes them.
    assert!(release(&held));
    let mut order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while order.len() < pipes.len() {
        let running = pipes
            .iter()
            .filter(|(name, _)| !order.contains(name))
            .find(|(_, path)| release(path));
        match running {
            Some((name, _)) => order.push(name.clone()),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
        assert!(Instant::now() < deadline, "served so far: {order:?}");
    }
    for a in answers {
        assert_eq!(a.join().unwrap(), 200);
    }
    let at = order.iter().position(|n| n == "other").unwrap();
    assert_eq!(at, 1, "{order:?}");
}
