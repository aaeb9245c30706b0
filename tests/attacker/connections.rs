//! The same shared server tried at the connection level (issue 25, holes 5
//! and 6): bodies sent without a valid token, slow and idle connections,
//! too many connections, the auth scheme's case, and what the log and the
//! error bodies show. The helpers and tokens are `server`'s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::server::{
    addr, auth_file, o, persisted, raw, raw_to, raw_with, server, still_serves, A_READ, A_WRITE,
};
use crate::support::Server;

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

// Hole 5: bodies were read before the token was checked: 16 unauthenticated
// 60 MiB PUTs grew the server by 790 MB before each got its 401.
#[test]
fn bodies_without_a_valid_token_are_not_read() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    still_serves(&s);
    let before = peak_rss(s.pid());
    let body = vec![7u8; 60 << 20];
    let url = s.url.clone();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (url, body) = (&url, &body);
                scope.spawn(move || {
                    let token = (i % 2 == 1).then(|| "Bearer not-a-token-of-this-server".into());
                    let key = format!("packs/00/{}", "0".repeat(64));
                    raw_to(url, "PUT", &o("a", &key), token, body).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let grown = peak_rss(s.pid()).saturating_sub(before);
    eprintln!("16 unauthenticated 60 MiB PUTs: the server's peak RSS grew by {grown} B");
    assert!(
        statuses.iter().all(|&st| st == 401 || st == 0),
        "{statuses:?}"
    );
    assert!(statuses.contains(&401), "{statuses:?}");
    assert!(grown < 64 << 20, "the server grew by {} MiB", grown >> 20);
    still_serves(&s);
}

// Hole 5: no header or body timeout: slow and idle connections were held
// for as long as the client liked. With 1 s timeouts (the header's from
// the config file, the body's a flag) each is closed while a normal
// client is served.
#[test]
fn slow_and_idle_connections_are_closed() {
    let d = tempfile::tempdir().unwrap();
    let config = auth_file(d.path(), false);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("limits: {header_timeout_secs: 1, body_idle_timeout_secs: 600}\n");
    std::fs::write(&config, text).unwrap();
    let s = Server::start(
        d.path().join("srv").to_str().unwrap(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--body-idle-timeout",
            "1s",
        ],
        &[],
    );
    let connect = || {
        let c = TcpStream::connect(addr(&s)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        c
    };
    let idle = connect();
    let mut half_header = connect();
    half_header
        .write_all(b"GET /v1/ns/a/ HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut half_body = connect();
    half_body
        .write_all(
            format!(
                "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {A_WRITE}\r\n\
                 Content-Length: 1000\r\n\r\nsome",
                o("a", "runs/x/run")
            )
            .as_bytes(),
        )
        .unwrap();
    let started = Instant::now();
    still_serves(&s);
    for (what, mut c) in [
        ("idle", idle),
        ("half a header", half_header),
        ("half a body", half_body),
    ] {
        let mut rest = Vec::new();
        let closed = c.read_to_end(&mut rest);
        assert!(
            closed.is_ok(),
            "{what}: not closed within 15 s ({:?})",
            closed.err()
        );
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(10), "{what}: {waited:?}");
    }
    still_serves(&s);
}

// Hole 5: with 256 descriptors, 300 idle connections stopped all service.
// The server raises its soft limit to the hard one at start.
#[test]
fn idle_connections_do_not_exhaust_descriptors() {
    let d = tempfile::tempdir().unwrap();
    let auth = auth_file(d.path(), false);
    let s = Server::start_under(
        &["prlimit", "--nofile=256:4096"],
        d.path().join("srv").to_str().unwrap(),
        &["--auth", auth.to_str().unwrap()],
        &[],
    );
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    still_serves(&s);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(idle);
}

// Hole 6: `Bearer` is matched case-insensitively (RFC 7235: the scheme is
// case-insensitive).
#[test]
fn the_auth_scheme_is_case_insensitive() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let a = raw_with(
            &s,
            "GET",
            "/v1/ns/a/",
            Some(format!("{scheme} {A_READ}")),
            b"",
        );
        assert_eq!(a.status, 200, "{scheme}: {a:?}");
    }
}

// Hole 6: a %0a in a key forged a line of the access log, and error bodies
// showed the server's file paths.
#[test]
fn the_log_and_error_bodies_leak_and_forge_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    persisted(d.path(), &s, "a", A_WRITE, "r1");
    let forged = "runs/r1/used/x%0astrata%20serve:%20FORGED";
    raw(&s, "PUT", &o("a", forged), Some(A_WRITE), b"x");
    still_serves(&s);
    // A directory where an object is read: an I/O error on the server.
    let a = raw(&s, "GET", &o("a", "runs/r1/layers"), Some(A_READ), b"");
    assert!(a.status >= 400, "{a:?}");
    let srv = d.path().join("srv");
    assert!(
        !a.text().contains(srv.to_str().unwrap()),
        "an error body shows the server's path: {a:?}"
    );
    let mut lines = Vec::new();
    while let Ok(l) = s.log.recv_timeout(Duration::from_millis(500)) {
        lines.push(l);
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("strata serve: FORGED")),
        "{lines:#?}"
    );
}
