//! One `strata serve` shared by namespaces a and b, tried as hostile or
//! careless clients would (issue 25): each test is a hole found against the
//! server and the request that used it, sent raw so no client-side check
//! hides the server's answer. Tokens follow docs/deploy.md, "Who may do
//! what".

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_store::format::keys::pack_key;
use strata_store::format::pack::{FrameBuilder, PackBuilder};
use strata_store::format::records::{Record, UseRecord};
use strata_store::id::ChunkId;

use crate::support::{random_files, Client, Server};

pub(super) const A_WRITE: &str = "a-write-token-0123456789";
pub(super) const A_READ: &str = "a-read-token-0123456789";
const B_WRITE: &str = "b-write-token-0123456789";
pub(super) const A_PR: &str = "a-pull-request-token-0123";
const A_ADMIN: &str = "a-admin-token-0123456789";

/// The tokens of every test: write and read for a, write for b; with
/// `limited`, a pull request's token limited to its refs' runs and cache
/// keys, and an admin token for a.
pub(super) fn auth_file(dir: &Path, limited: bool) -> PathBuf {
    let mut text = format!(
        "tokens:\n\
         - {{name: a-write, token: {A_WRITE}, namespace: a, scope: write}}\n\
         - {{name: a-read, token: {A_READ}, namespace: a, scope: read}}\n\
         - {{name: b-write, token: {B_WRITE}, namespace: b, scope: write}}\n"
    );
    if limited {
        text.push_str(&format!(
            "- {{name: a-pr, token: {A_PR}, namespace: a, scope: write, \
               runs: [\"ref:refs/pull/\"], cache_keys: [\"ref:refs/pull/\"]}}\n\
             - {{name: a-admin, token: {A_ADMIN}, namespace: a, scope: admin}}\n"
        ));
    }
    let path = dir.join("tokens.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A server over `dir/srv` with the tokens of `auth_file` and `args`.
pub(super) fn server(dir: &Path, limited: bool, args: &[&str]) -> Server {
    let auth = auth_file(dir, limited);
    let mut all = vec!["--auth", auth.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start(dir.join("srv").to_str().unwrap(), &all, &[])
}

/// An answer to a raw request.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(super) fn addr(server: &Server) -> String {
    server.url.strip_prefix("http://").unwrap().to_string()
}

/// One request on a new connection, as a client that skips every check
/// of its own would send it; status 0 when the server closed the
/// connection without an answer.
pub(super) fn raw(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Answer {
    raw_with(
        server,
        method,
        path,
        token.map(|t| format!("Bearer {t}")),
        body,
    )
}

pub(super) fn raw_with(
    server: &Server,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: &[u8],
) -> Answer {
    raw_to(&server.url, method, path, authorization, body)
}

pub(super) fn raw_to(
    url: &str,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(url.strip_prefix("http://").unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    parse_answer(&all)
}

fn parse_answer(all: &[u8]) -> Answer {
    let Some(split) = all.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Answer {
            status: 0,
            body: all.to_vec(),
        };
    };
    let head = String::from_utf8_lossy(&all[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = all[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    Answer { status, body }
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

pub(super) fn o(ns: &str, key: &str) -> String {
    format!("/v1/ns/{ns}/o/{key}")
}

fn list(server: &Server, ns: &str, query: &str, token: &str) -> Answer {
    raw(
        server,
        "GET",
        &format!("/v1/ns/{ns}/list?{query}"),
        Some(token),
        b"",
    )
}

pub(super) fn keys(server: &Server, ns: &str, prefix: &str, token: &str) -> Vec<String> {
    let a = list(server, ns, &format!("prefix={prefix}"), token);
    assert_eq!(a.status, 200, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// The server still answers: a hello with a read token.
pub(super) fn still_serves(server: &Server) {
    let a = raw(server, "GET", "/v1/ns/a/", Some(A_READ), b"");
    assert_eq!(a.status, 200, "the server no longer serves: {a:?}");
}

/// A client of namespace `ns` with `token`, and a persisted layer of job
/// `build` in run `r` (files `out/*`).
pub(super) fn persisted(dir: &Path, server: &Server, ns: &str, token: &str, run: &str) -> Client {
    let c = Client::new(&server.ns(ns), &dir.join(format!("cache-{ns}-{run}"))).with_token(token);
    c.ok(&[
        "run",
        "create",
        "--job",
        "build",
        "--job",
        "deploy:build",
        run,
    ]);
    let src = dir.join(format!("src-{ns}-{run}"));
    random_files(&src.join("out"), 3, 10_000, run.len() as u64);
    c.persist(run, "build", &src, "out");
    c
}

/// A pack holding one chunk no layer uses, uploaded raw; returns its key.
fn stray_pack(server: &Server, token: &str) -> String {
    let body = b"a chunk that no layer refers to";
    let mut frame = FrameBuilder::default();
    frame.push(ChunkId::of(body), body);
    let mut pack = PackBuilder::new();
    pack.push(frame.seal(&mut zstd::bulk::Compressor::new(3).unwrap()));
    let (id, bytes, _) = pack.finish();
    let key = pack_key(&id);
    let a = raw(server, "PUT", &o("a", &key), Some(token), &bytes);
    assert_eq!(a.status, 204, "{}", a.text());
    key
}

// Hole 1: four ranges of 2^62 bytes overflowed the sum that is checked
// against the limit; a read token crashed the server (release) or its
// handler (dev). The request is refused and the server serves on.
#[test]
fn huge_ranges_are_refused_and_the_server_serves_on() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    persisted(d.path(), &s, "a", A_WRITE, "r1");
    let pack = keys(&s, "a", "packs/", A_READ).remove(0);
    let big = 1u64 << 62;
    let body = serde_json::json!({
        "key": pack,
        "ranges": [[0, big], [0, big], [0, big], [0, big]],
    });
    let a = raw(
        &s,
        "POST",
        "/v1/ns/a/ranges",
        Some(A_READ),
        body.to_string().as_bytes(),
    );
    assert!(
        (400..500).contains(&a.status),
        "huge ranges got {a:?}, not a 4xx"
    );
    // A range past the object's end is refused without a buffer its size.
    let body = serde_json::json!({"key": pack, "ranges": [[0, 200u64 << 20]]});
    let a = raw(
        &s,
        "POST",
        "/v1/ns/a/ranges",
        Some(A_READ),
        body.to_string().as_bytes(),
    );
    assert!((400..500).contains(&a.status), "{a:?}");
    still_serves(&s);
}

// `layers` (refs and their manifests in one request) is a read like
// `GET o/KEY` of the same objects: a token of another namespace is refused
// before the body is read, keys name only the namespace's own objects, a
// key that is not a layer ref (a run record, a pack, a path climbing out)
// is refused, and so is more than 64 keys.
#[test]
fn layers_reads_only_layer_refs_of_its_own_namespace() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    persisted(d.path(), &s, "a", A_WRITE, "ours");
    persisted(d.path(), &s, "b", B_WRITE, "theirs");
    let ours = keys(&s, "a", "runs/ours/layers/", A_READ).remove(0);
    let theirs = keys(&s, "b", "runs/theirs/layers/", B_WRITE).remove(0);
    let ask = |ns: &str, token: Option<&str>, keys: &[&str]| {
        let body = serde_json::json!({ "keys": keys }).to_string();
        raw(
            &s,
            "POST",
            &format!("/v1/ns/{ns}/layers"),
            token,
            body.as_bytes(),
        )
    };
    let a = ask("a", Some(A_READ), &[&ours]);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(ask("b", Some(A_READ), &[&theirs]).status, 403);
    assert_eq!(ask("a", None, &[&ours]).status, 401);
    // b's ref asked in a: a's store does not hold it.
    assert_eq!(ask("a", Some(A_READ), &[&theirs]).status, 404);
    let pack = keys(&s, "a", "packs/", A_READ).remove(0);
    let climbing = format!("../b/{theirs}");
    for bad in [
        "runs/ours/run",
        pack.as_str(),
        climbing.as_str(),
        "/etc/passwd",
    ] {
        let a = ask("a", Some(A_READ), &[bad]);
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
    }
    let many: Vec<&str> = vec![ours.as_str(); 65];
    assert_eq!(ask("a", Some(A_READ), &many).status, 413);
    still_serves(&s);
}

// Hole 2: `list`'s prefix and cursor were joined to the store's directory:
// a's read token listed b's runs and the host's files, and `/etc/` made
// the handler panic.
#[test]
fn list_stays_inside_its_namespace() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    persisted(d.path(), &s, "a", A_WRITE, "ours");
    persisted(d.path(), &s, "b", B_WRITE, "theirs-secret");
    for query in [
        "prefix=../b/runs/",
        "prefix=../../../../etc/",
        "prefix=/etc/",
        "prefix=runs/../../b/",
        "prefix=runs/&after=../../b/runs/",
        "prefix=%2e%2e/b/",
    ] {
        let a = list(&s, "a", query, A_READ);
        assert_eq!(a.status, 400, "list?{query}: {a:?}");
        assert!(!a.text().contains("theirs-secret"), "list?{query}: {a:?}");
    }
    // The namespace's own listing still works.
    assert!(keys(&s, "a", "runs/", A_READ)
        .iter()
        .any(|k| k.contains("ours")));
    still_serves(&s);
}

// Hole 3: a write token could replace a layer ref and a run record. Refs
// and run records are create-only: the same bytes again are accepted,
// other bytes are 409 and the original stays.
#[test]
fn refs_and_run_records_are_create_only() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    let c = persisted(d.path(), &s, "a", A_WRITE, "r1");
    persisted(d.path(), &s, "a", A_WRITE, "r2");
    let ref1 = keys(&s, "a", "runs/r1/layers/", A_READ).remove(0);
    let ref2 = keys(&s, "a", "runs/r2/layers/", A_READ).remove(0);
    let get = |k: &str| raw(&s, "GET", &o("a", k), Some(A_READ), b"").body;
    let (bytes1, bytes2) = (get(&ref1), get(&ref2));
    assert_eq!(
        raw(&s, "PUT", &o("a", &ref1), Some(A_WRITE), &bytes1).status,
        204,
        "an identical re-put is a retry"
    );
    let a = raw(&s, "PUT", &o("a", &ref1), Some(A_WRITE), &bytes2);
    assert_eq!(a.status, 409, "a layer ref was replaced: {a:?}");
    assert_eq!(get(&ref1), bytes1);
    // A run record replaced by another run's graph.
    Client::new(&s.ns("a"), &d.path().join("c2"))
        .with_token(A_WRITE)
        .ok(&["run", "create", "other", "--job", "x"]);
    let other = get("runs/other/run");
    let a = raw(&s, "PUT", &o("a", "runs/r1/run"), Some(A_WRITE), &other);
    assert_eq!(a.status, 409, "a run record was replaced: {a:?}");
    let at = d.path().join("at");
    c.attach("r1", "deploy", &at);
    assert_eq!(crate::support::file_names(&at).len(), 3);
}

// Hole 3: a write token deleted refs and ran gc with no grace, deleting
// the packs of a persist in flight. Deletes and gc need an admin grant.
#[test]
fn writers_cannot_delete_or_collect() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    let c = persisted(d.path(), &s, "a", A_WRITE, "r1");
    let layer = keys(&s, "a", "runs/r1/layers/", A_READ).remove(0);
    let a = raw(&s, "DELETE", &o("a", &layer), Some(A_WRITE), b"");
    assert_eq!(a.status, 403, "a writer deleted a layer ref: {a:?}");
    // A persist in flight: its pack is uploaded, its ref not yet written.
    let in_flight = stray_pack(&s, A_WRITE);
    let a = raw(
        &s,
        "POST",
        "/v1/ns/a/gc?dry_run=false&grace_secs=0",
        Some(A_WRITE),
        b"",
    );
    assert_eq!(a.status, 403, "a writer ran gc: {a:?}");
    assert!(keys(&s, "a", "packs/", A_READ).contains(&in_flight));
    let at = d.path().join("at");
    c.attach("r1", "deploy", &at);
    assert_eq!(crate::support::file_names(&at).len(), 3);
}

// Hole 6 and the admin's side of hole 3: no grace below the store's, and a
// grace of u64::MAX is not cast to -1.
#[test]
fn no_request_sets_a_grace_below_the_stores() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), true, &[]);
    persisted(d.path(), &s, "a", A_WRITE, "r1");
    let in_flight = stray_pack(&s, A_WRITE);
    let gc = |grace: &str| {
        raw(
            &s,
            "POST",
            &format!("/v1/ns/a/gc?dry_run=false&grace_secs={grace}"),
            Some(A_ADMIN),
            b"",
        )
    };
    let a = gc("0");
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.text().contains("3600"), "names the store's grace: {a:?}");
    let a = gc(&u64::MAX.to_string());
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        keys(&s, "a", "packs/", A_READ).contains(&in_flight),
        "a fresh pack was collected"
    );
    // An admin may collect with the store's grace.
    assert_eq!(
        raw(&s, "POST", "/v1/ns/a/gc?dry_run=false", Some(A_ADMIN), b"").status,
        200
    );
}

// Hole 4: a use record's time came from its key, which the client picks:
// a read token moved a run's expiry to the year 33658. The server records
// its own time.
#[test]
fn use_records_get_the_servers_time() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    let c = persisted(d.path(), &s, "a", A_WRITE, "r1");
    let far = 999_999_999_999i64;
    let body = UseRecord { at: far }.encode();
    let key = format!("runs/r1/used/{far}-abcd");
    let a = raw(&s, "PUT", &o("a", &key), Some(A_READ), &body);
    assert_eq!(a.status, 204, "{a:?}");
    let ls = c.json(&["ls"]);
    let expires = ls["runs"][0]["expires_on"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let year: i32 = expires.get(..4).and_then(|y| y.parse().ok()).unwrap_or(0);
    assert!((2020..2200).contains(&year), "expires {expires}: {ls}");
    let used = keys(&s, "a", "runs/r1/used/", A_READ);
    assert!(
        used.iter().all(|k| !k.contains(&far.to_string())),
        "{used:?}"
    );
}

/// The server's peak resident memory, in bytes.
// The `objects` request (several objects in one) is no way around a PUT's
// rules: a read token, a token of another namespace, a ref replaced
// through it, and a body that does not match its query are each refused
// as their PUT would be, and the ref stays what it was.
#[test]
fn the_objects_request_keeps_every_puts_rule() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), false, &[]);
    persisted(d.path(), &s, "a", A_WRITE, "r1");
    persisted(d.path(), &s, "a", A_WRITE, "r2");
    let ref1 = keys(&s, "a", "runs/r1/layers/", A_READ).remove(0);
    let ref2 = keys(&s, "a", "runs/r2/layers/", A_READ).remove(0);
    let get = |k: &str| raw(&s, "GET", &o("a", k), Some(A_READ), b"").body;
    let (bytes1, bytes2) = (get(&ref1), get(&ref2));
    let objects =
        |ns: &str, key: &str, size: usize| format!("/v1/ns/{ns}/objects?put={key}:{size}");
    let a = raw(
        &s,
        "POST",
        &objects("a", &ref1, bytes1.len()),
        Some(A_READ),
        &bytes1,
    );
    assert_eq!(a.status, 403, "a read token wrote through objects: {a:?}");
    let a = raw(
        &s,
        "POST",
        &objects("a", &ref1, bytes1.len()),
        Some(B_WRITE),
        &bytes1,
    );
    assert_eq!(a.status, 403, "b's token wrote into a: {a:?}");
    let a = raw(
        &s,
        "POST",
        &objects("a", &ref1, bytes2.len()),
        Some(A_WRITE),
        &bytes2,
    );
    assert_eq!(
        a.status, 409,
        "a layer ref was replaced through objects: {a:?}"
    );
    assert!(a.text().contains("\"kind\":\"immutable\""), "{a:?}");
    let a = raw(
        &s,
        "POST",
        &objects("a", &ref1, bytes1.len() + 1),
        Some(A_WRITE),
        &bytes1,
    );
    assert_eq!(a.status, 400, "a body shorter than its query: {a:?}");
    assert_eq!(get(&ref1), bytes1);
    let a = raw(
        &s,
        "POST",
        &objects("a", &ref1, bytes1.len()),
        Some(A_WRITE),
        &bytes1,
    );
    assert_eq!(a.status, 204, "an identical re-put is a retry: {a:?}");
    still_serves(&s);
}
