//! `GET /metrics` (issue 32): an operator scrapes a server after a known
//! sequence of requests and reads counts the sequence implies, derived
//! here by hand; only a token of scope metrics may scrape.

use std::path::Path;

use crate::support::http::{bearer, request, Answer};
use crate::support::{random_files, Client, Server};

const WRITE: &str = "a-write-token-0123456789";
const ADMIN: &str = "a-admin-token-0123456789";
const PROM: &str = "prometheus-token-0123456789";

fn server(dir: &Path) -> Server {
    let auth = dir.join("server.yaml");
    std::fs::write(
        &auth,
        format!(
            "tokens:\n\
             - {{name: w, token: {WRITE}, namespace: a, scope: write}}\n\
             - {{name: ops, token: {ADMIN}, namespace: a, scope: admin}}\n\
             - {{name: prom, token: {PROM}, scope: metrics}}\n"
        ),
    )
    .unwrap();
    let store = dir.join("srv");
    Server::start(
        store.to_str().unwrap(),
        &["--config", auth.to_str().unwrap()],
        &[],
    )
}

/// The value of the sample `name` whose labels include `labels` (0 when
/// there is none yet: a counter not yet touched).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let wanted = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse().unwrap())
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
    found.first().copied().unwrap_or(0.0)
}

fn scrape(s: &Server) -> Answer {
    let a = request(&s.url, "GET", "/metrics", &bearer(PROM), b"");
    assert_eq!(a.status, 200, "{}", a.text());
    a
}

/// Bytes of the packs under a namespace's directory, and how many.
fn packs_on_disk(ns: &Path) -> (u64, u64) {
    walkdir::WalkDir::new(ns.join("packs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .fold((0, 0), |(b, n), e| (b + e.metadata().unwrap().len(), n + 1))
}

// Without the metrics grant a scrape is refused: no token 401, a
// namespace's admin 403 (the metrics count every namespace).
#[test]
fn scraping_takes_the_metrics_grant() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    assert_eq!(request(&s.url, "GET", "/metrics", &[], b"").status, 401);
    let wrong = request(
        &s.url,
        "GET",
        "/metrics",
        &bearer("not-a-token-at-all"),
        b"",
    );
    assert_eq!(wrong.status, 401);
    let admin = request(&s.url, "GET", "/metrics", &bearer(ADMIN), b"");
    assert_eq!(admin.status, 403);
    assert!(admin.text().contains("scope metrics"), "{}", admin.text());
    // And a metrics token reads no namespace.
    let read = request(
        &s.url,
        "GET",
        "/v1/ns/a/list?prefix=runs/",
        &bearer(PROM),
        b"",
    );
    assert_eq!(read.status, 403, "{}", read.text());
    let text = scrape(&s).text();
    assert_eq!(
        sample(
            &text,
            "strata_rejected_requests_total",
            &[("reason", "auth")]
        ),
        4.0
    );
    let metrics_401 = [("route", "/metrics"), ("status", "401")];
    assert_eq!(
        sample(&text, "strata_http_requests_total", &metrics_401),
        2.0
    );
}

// Two runs persist the same two files; a chunk query asks for both and a
// third; gc runs. Every figure is what that sequence implies.
#[test]
fn counters_follow_a_known_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let src = dir.path().join("src");
    random_files(&src, 2, 3000, 7);
    let client = Client::new(&s.ns("a"), &dir.path().join("cache")).with_token(WRITE);
    for run in ["r1", "r2"] {
        client.ok(&["run", "create", "--run", run, "--job", "j"]);
    }

    let s0 = scrape(&s).text();
    client.persist("r1", "j", &src, ".");
    let s1 = scrape(&s);
    let s1_text = s1.text();
    let delta = |before: &str, after: &str, name: &str, labels: &[(&str, &str)]| {
        sample(after, name, labels) - sample(before, name, labels)
    };
    // The layer holds 2 x 3000 bytes; its packs are what reached the disk.
    let (stored, packs) = packs_on_disk(&dir.path().join("srv/a"));
    assert!(packs > 0);
    assert_eq!(
        delta(&s0, &s1_text, "strata_ingest_logical_bytes_total", &[]),
        6000.0
    );
    let stored_delta = delta(&s0, &s1_text, "strata_ingest_stored_bytes_total", &[]);
    assert_eq!(stored_delta, stored as f64);

    // A chunk query: both files' chunks (each smaller than the smallest
    // chunk, so one chunk, named by its bytes' BLAKE3) and one never stored.
    let mut ids = Vec::new();
    for f in ["blob000.bin", "blob001.bin"] {
        ids.extend_from_slice(blake3::hash(&std::fs::read(src.join(f)).unwrap()).as_bytes());
    }
    ids.extend_from_slice(blake3::hash(b"never stored").as_bytes());
    let q = request(
        &s.url,
        "POST",
        "/v1/ns/a/chunks/missing",
        &bearer(WRITE),
        &ids,
    );
    assert_eq!((q.status, q.body.clone()), (200, vec![0, 0, 1]));
    let s2 = scrape(&s).text();
    let new = [("outcome", "new")];
    let dup = [("outcome", "duplicate")];
    assert_eq!(
        delta(&s1_text, &s2, "strata_ingest_chunks_total", &new),
        1.0
    );
    assert_eq!(
        delta(&s1_text, &s2, "strata_ingest_chunks_total", &dup),
        2.0
    );
    // Between two scrapes: the query and the first scrape, each once.
    let missing_route = [
        ("route", "/v1/ns/{ns}/chunks/missing"),
        ("method", "POST"),
        ("status", "200"),
    ];
    assert_eq!(
        delta(&s1_text, &s2, "strata_http_requests_total", &missing_route),
        1.0
    );
    let scrapes = [("route", "/metrics"), ("method", "GET"), ("status", "200")];
    assert_eq!(
        delta(&s1_text, &s2, "strata_http_requests_total", &scrapes),
        1.0
    );
    let latency = [("route", "/v1/ns/{ns}/chunks/missing")];
    let count = "strata_http_request_duration_seconds_count";
    assert_eq!(delta(&s1_text, &s2, count, &latency), 1.0);
    // Bodies: 96 bytes of ids in; 3 bytes of answer and the first
    // scrape's body out.
    assert_eq!(
        delta(&s1_text, &s2, "strata_http_received_bytes_total", &[]),
        96.0
    );
    let sent = 3.0 + s1.body.len() as f64;
    assert_eq!(
        delta(&s1_text, &s2, "strata_http_sent_bytes_total", &[]),
        sent
    );

    // The same files in a second run: all logical, nothing stored.
    client.persist("r2", "j", &src, ".");
    let s3 = scrape(&s).text();
    assert_eq!(
        delta(&s2, &s3, "strata_ingest_logical_bytes_total", &[]),
        6000.0
    );
    assert_eq!(
        delta(&s2, &s3, "strata_ingest_stored_bytes_total", &[]),
        0.0
    );
    assert_eq!(packs_on_disk(&dir.path().join("srv/a")), (stored, packs));

    // No store figures before this server's first gc; its pass's after.
    assert!(!s3.contains("strata_store_bytes{"), "{s3}");
    let gc = request(&s.url, "POST", "/v1/ns/a/gc", &bearer(ADMIN), b"");
    assert_eq!(gc.status, 200, "{}", gc.text());
    // A namespace's admin scrapes: refused, and counted.
    let refused = request(&s.url, "GET", "/metrics", &bearer(ADMIN), b"");
    assert_eq!(refused.status, 403);
    let s4 = scrape(&s).text();
    let auth = [("reason", "auth")];
    assert_eq!(
        delta(&s3, &s4, "strata_rejected_requests_total", &auth),
        1.0
    );
    let a = [("namespace", "a")];
    let ok = [("namespace", "a"), ("outcome", "ok")];
    assert_eq!(sample(&s4, "strata_gc_runs_total", &ok), 1.0);
    assert_eq!(sample(&s4, "strata_store_bytes", &a), stored as f64);
    let pack_count = [("namespace", "a"), ("kind", "packs")];
    assert_eq!(
        sample(&s4, "strata_store_objects", &pack_count),
        packs as f64
    );
    assert_eq!(sample(&s4, "strata_gc_reclaimed_bytes_total", &a), 0.0);
    let runs_evicted = [("namespace", "a"), ("kind", "run")];
    assert!(s4.contains("strata_gc_evictions_total{"), "{s4}");
    assert_eq!(sample(&s4, "strata_gc_evictions_total", &runs_evicted), 0.0);
    // Between requests nothing waits for or runs on the store-work
    // threads: the queue's gauges are exported, at 0.
    for state in ["waiting", "running"] {
        let line = format!("strata_queue_calls{{state=\"{state}\"}} 0\n");
        assert!(s4.contains(&line), "{s4}");
    }
    assert!(s4.contains("strata_queue_waiting_clients 0\n"), "{s4}");
    every_dashboard_query_is_exported(&s4);
}

/// Every metric docs/grafana-dashboard.json queries is one `scrape`
/// exports: a sample's name, or a family's (a counter's `_total`, a
/// histogram's `_bucket`, `_count` and `_sum` are its family's samples).
fn every_dashboard_query_is_exported(scrape: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let families: Vec<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("strata_"));
            for name in names {
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    families.contains(&family) || families.contains(&name),
                    "the dashboard queries {name}, which the server does not export"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 15, "{queried}");
}
