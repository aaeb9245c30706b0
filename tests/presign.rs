//! `strata serve --presign-ttl` over Garage: runners read packs straight
//! from the bucket through presigned URLs (docs/protocol.md, "Reading packs
//! from the bucket"), byte for byte, and a URL reads one pack of one
//! namespace for a while and nothing else: each attack below is refused,
//! by the server (which URLs it hands out: `access`, the rows `POST urls`
//! of deploy.md) or by the bucket (the signature), next to the same
//! request unedited, which works.

use std::fs;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const AUTH: &str = "tokens:
  - {name: a-writer, token: token-a-writer-0123456789, namespace: a, scope: write}
  - {name: a-reader, token: token-a-reader-0123456789, namespace: a, scope: read}
  - {name: b-writer, token: token-b-writer-0123456789, namespace: b, scope: write}
";
const A_WRITER: &str = "token-a-writer-0123456789";
const A_READER: &str = "token-a-reader-0123456789";
const B_WRITER: &str = "token-b-writer-0123456789";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// `POST /v1/ns/{ns}/urls` as `token`: the status and the JSON answer.
fn ask_urls(server: &Server, ns: &str, token: &str, method: &str, keys: &[&str]) -> (u16, Value) {
    let body = serde_json::to_vec(&json!({"method": method, "keys": keys})).unwrap();
    let (status, body) = call(server, "POST", &format!("{ns}/urls"), token, &body);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A request to the server's route `/v1/ns/{tail}` as `token`.
fn call(server: &Server, method: &str, tail: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let url = format!("{}/v1/ns/{tail}", server.url);
    let auth = format!("Bearer {token}");
    let r = match method {
        "GET" => agent().get(&url).header("authorization", &auth).call(),
        "PUT" => agent().put(&url).header("authorization", &auth).send(body),
        _ => agent().post(&url).header("authorization", &auth).send(body),
    };
    let mut r = r.unwrap();
    (r.status().as_u16(), r.body_mut().read_to_vec().unwrap())
}

/// The packs of namespace `ns`, listed through the server.
fn packs(server: &Server, ns: &str, token: &str) -> Vec<String> {
    let (status, body) = call(
        server,
        "GET",
        &format!("{ns}/list?prefix=packs/"),
        token,
        b"",
    );
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// The first KiB of `key` in `ns`, read through the server.
fn first_kib(server: &Server, ns: &str, token: &str, key: &str) -> Vec<u8> {
    let (status, body) = call(server, "GET", &format!("{ns}/o/{key}"), token, b"");
    assert_eq!(status, 200);
    body[..1024].to_vec()
}

/// The one URL of `key` in namespace `ns`.
fn url_of(server: &Server, ns: &str, token: &str, key: &str) -> String {
    let (status, body) = ask_urls(server, ns, token, "GET", &[key]);
    assert_eq!(status, 200, "{body}");
    body["urls"][0].as_str().unwrap().to_string()
}

/// A ranged GET of `url` with no credentials but the URL's: the status and
/// the bytes.
fn get(url: &str, range: &str) -> (u16, Vec<u8>) {
    let mut r = agent().get(url).header("range", range).call().unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_vec().unwrap())
}

/// The server's log lines so far.
fn drain(server: &Server) -> Vec<String> {
    std::iter::from_fn(|| server.log.recv_timeout(Duration::from_millis(200)).ok()).collect()
}

/// A run `r` whose jobs `build` and `lint` persisted random files (each
/// its own pack) into namespace `ns`, for job `test` to attach.
fn persisted(server: &Server, ns: &str, token: &str, root: &std::path::Path, seed: u64) {
    let c = Client::new(&server.ns(ns), &root.join("cache")).with_token(token);
    c.ok(&[
        "run",
        "create",
        "--run",
        "r",
        "--job",
        "build",
        "--job",
        "lint",
        "--job",
        "test:build,lint",
    ]);
    for (job, seed) in [("build", seed), ("lint", seed + 100)] {
        let src = root.join(job);
        random_files(&src.join(job), 4, 400_000, seed);
        write_files(&src, &[(&format!("{job}/notes.txt"), "hello\n")]);
        c.persist("r", job, &src, job);
    }
}

fn server(garage: &Garage, dir: &std::path::Path, prefix: &str, args: &[&str]) -> Server {
    fs::write(dir.join("auth.yaml"), AUTH).unwrap();
    let auth = dir.join("auth.yaml");
    let mut all = vec!["--auth", auth.to_str().unwrap()];
    all.extend_from_slice(args);
    let env = garage.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(&garage.location(prefix), &all, &env)
}

#[test]
fn attach_reads_packs_from_the_bucket_byte_for_byte() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (prefix, presign) in [("through", false), ("direct", true)] {
        let args: &[&str] = if presign {
            &["--presign-ttl", "5m"]
        } else {
            &[]
        };
        let server = server(&garage, d, prefix, args);
        let root = d.join(prefix);
        persisted(&server, "a", A_WRITER, &root, 7);
        drain(&server);
        let reader = Client::new(&server.ns("a"), &root.join("fresh-cache")).with_token(A_READER);
        let at = root.join("attached");
        let report = reader.attach("r", "test", &at);
        for job in ["build", "lint"] {
            same_tree(&root.join(job).join(job), &at.join(job));
        }
        let log = drain(&server);
        let ranges = log.iter().filter(|l| l.contains("POST a/ranges")).count();
        let urls = log.iter().filter(|l| l.contains("POST a/urls")).count();
        if presign {
            // Every pack read from the bucket: the server answered the
            // metadata and one request for URLs, and moved no pack bytes.
            // Each pack's URL asked for once.
            let asked: usize = log
                .iter()
                .filter_map(|l| {
                    l.split("POST a/urls: ")
                        .nth(1)?
                        .split(' ')
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .sum();
            let packs = packs(&server, "a", A_READER).len();
            assert!(
                ranges == 0 && urls >= 1 && asked <= packs,
                "{packs} packs: {log:#?}"
            );
            assert!(
                report["network"]["received"].as_u64().unwrap() >= 3_200_000,
                "{report}"
            );
        } else {
            // The same attach through a server without URLs reads its
            // packs through the server (what the count above would see).
            assert!(ranges >= 1 && urls == 0, "{log:#?}");
        }
    }
}

#[test]
fn a_presigned_url_reads_one_pack_of_one_namespace_for_a_while() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = server(&garage, d, "srv", &["--presign-ttl", "5m"]);
    persisted(&server, "a", A_WRITER, &d.join("a"), 1);
    persisted(&server, "b", B_WRITER, &d.join("b"), 2);
    let packs_a = packs(&server, "a", A_READER);
    let packs_b = packs(&server, "b", B_WRITER);
    assert!(packs_a.len() >= 2 && !packs_b.is_empty(), "{packs_a:?}");
    let (pack, other_pack, pack_b) = (&packs_a[0], &packs_a[1], &packs_b[0]);
    let first_kib_before = first_kib(&server, "a", A_READER, pack);

    // The URL as handed out reads its pack, with no other credentials.
    let url = url_of(&server, "a", A_READER, pack);
    assert!(
        !url.contains(A_READER),
        "the strata token is not in the URL"
    );
    assert_eq!(get(&url, "bytes=0-1023"), (206, first_kib_before.clone()));

    // Another object of the namespace: the URL edited to name it is
    // refused by the bucket, though a URL asked for it reads it.
    let edited = url.replace(pack.as_str(), other_pack);
    assert_ne!(edited, url);
    assert_eq!(get(&edited, "bytes=0-1023").0, 403, "{edited}");
    assert_eq!(
        get(&url_of(&server, "a", A_READER, other_pack), "bytes=0-0").0,
        206
    );

    // Another namespace: the URL edited to name b's pack is refused by the
    // bucket, though b's own token gets a URL that reads it; a's token gets
    // no URL in b, and a key cannot climb out of a.
    let edited = url.replace(&format!("/a/{pack}"), &format!("/b/{pack_b}"));
    assert_ne!(edited, url);
    assert_eq!(get(&edited, "bytes=0-1023").0, 403, "{edited}");
    assert_eq!(
        get(&url_of(&server, "b", B_WRITER, pack_b), "bytes=0-0").0,
        206
    );
    let (status, body) = ask_urls(&server, "b", A_READER, "GET", &[pack_b]);
    assert_eq!(status, 403, "{body}");
    let climbing = format!("../b/{pack_b}");
    let (status, body) = ask_urls(&server, "a", A_READER, "GET", &[&climbing]);
    assert_eq!(status, 400, "{body}");

    // Only packs: the metadata goes through the server, where it is read
    // by its rules.
    for key in ["config", "runs/r/run"] {
        let (status, body) = ask_urls(&server, "a", A_WRITER, "GET", &[pack, key]);
        assert_eq!(
            (status, body["kind"].as_str()),
            (403, Some("not_allowed")),
            "{key}: {body}"
        );
    }

    // No URL to write, for any token, any key: a pack's final key (taken
    // or not) is refused by the rules, a key of no known kind (a
    // would-be staging key) as malformed.
    let absent = format!("packs/00/{}", "0".repeat(64));
    for (token, key) in [
        (A_WRITER, pack.as_str()),
        (A_WRITER, &absent),
        (A_READER, pack),
    ] {
        for method in ["PUT", "POST", "DELETE"] {
            let (status, body) = ask_urls(&server, "a", token, method, &[key]);
            assert_eq!(
                (status, body["kind"].as_str()),
                (403, Some("not_allowed")),
                "{method} {key}: {body}"
            );
        }
    }
    let (status, body) = ask_urls(&server, "a", A_WRITER, "PUT", &["staging/upload-1"]);
    assert_eq!(status, 400, "{body}");
    assert!(body.get("urls").is_none(), "{body}");
    // A GET URL used to write is refused by the bucket (the signature
    // covers the method), and the pack is as it was; a write of the pack's
    // key through the server is checked, and other bytes are refused.
    let r = agent().put(&url).send(&b"not the pack"[..]).unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (status, _) = call(
        &server,
        "PUT",
        &format!("a/o/{pack}"),
        A_WRITER,
        b"not the pack",
    );
    assert_eq!(status, 400);
    assert_eq!(first_kib(&server, "a", A_READER, pack), first_kib_before);

    // Past its expiry: a URL of a server whose URLs live 2 s reads at
    // once and is refused after.
    let brief = server_with_ttl(&garage, d, "2s");
    let url = url_of(&brief, "a", A_READER, pack);
    let (status, _) = get(&url, "bytes=0-1023");
    assert_eq!(status, 206, "read at once");
    std::thread::sleep(Duration::from_secs(4));
    // (Garage answers 400, "Date is too old"; AWS answers 403.)
    let (status, body) = get(&url, "bytes=0-1023");
    let said = String::from_utf8_lossy(&body);
    assert!(
        matches!(status, 400 | 403) && said.contains("Error"),
        "{status} {said}"
    );
}

fn server_with_ttl(garage: &Garage, d: &std::path::Path, ttl: &str) -> Server {
    let brief = d.join("brief");
    fs::create_dir_all(&brief).unwrap();
    server(garage, &brief, "srv", &["--presign-ttl", ttl])
}

#[test]
fn urls_need_a_bucket_and_an_offer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A directory store has no URLs to hand out: the server refuses to
    // start with --presign-ttl.
    let out = strata()
        .args([
            "--store",
            d.join("srv").to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--presign-ttl", "5m"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("--presign-ttl"), "{e}");
    // A server without the offer answers `urls` with 400, and its hello
    // offers nothing (clients then read through `ranges`).
    fs::write(d.join("auth.yaml"), AUTH).unwrap();
    let server = Server::start(
        d.join("srv").to_str().unwrap(),
        &["--auth", d.join("auth.yaml").to_str().unwrap()],
        &[],
    );
    let (status, body) = ask_urls(&server, "a", A_READER, "GET", &["packs/00/00"]);
    assert_eq!(
        (status, body["kind"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let mut r = agent().get(format!("{}/v1", server.url)).call().unwrap();
    let hello: Value = serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
    assert!(hello.get("urls").is_none(), "{hello}");
}
