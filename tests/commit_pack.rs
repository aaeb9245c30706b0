//! A persist's last pack rides in its commit where the server stores a
//! commit's objects in order (`objects`): no round trip of its own.
//! Counted outside the client, by the test proxy, and read off its log of
//! exchanges (`Proxy::log_to`, proxy/src/timeline.rs).

use crate::faults::{behind, create_build_test, persisted};
use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use strata_proxy::Faults;
use support::{random_files, same_tree};

/// The request lines of the exchanges in the proxy's log at `log` once it
/// holds one naming `objects` (the commit: a connection's last exchange is
/// written when it closes).
fn requests(log: &Path) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["request"].as_str().unwrap().to_string()
            })
            .collect();
        if lines.iter().any(|r| r.contains("/objects?")) || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Persists `files` new files of `size` bytes as run `run`'s build through
/// a proxy at 25 ms each way; the report, the proxy's round trips for the
/// persist, and the request lines it forwarded.
fn persist_far(d: &Path, run: &str, (files, size): (usize, usize)) -> (Value, u64, Vec<String>) {
    let (server, _) = persisted(d);
    let (proxy, client) = behind(
        &server,
        d,
        &format!("cache-{run}"),
        Faults {
            one_way: Duration::from_millis(25),
            ..Faults::default()
        },
    );
    let src = d.join(format!("src-{run}"));
    random_files(&src.join("out"), files, size, 500 + files as u64);
    create_build_test(&client, run);
    let log = d.join(format!("{run}.jsonl"));
    proxy.log_to(&log).unwrap();
    proxy.take_round_trips();
    let report = client.persist(run, "build", &src, "out");
    let (trips, _) = proxy.take_round_trips();
    drop(client);
    let lines = requests(&log);
    let at = d.join(format!("at-{run}"));
    support::Client::new(&server.ns("team"), &d.join(format!("cache-{run}-at")))
        .attach(run, "test", &at);
    same_tree(&src.join("out"), &at.join("out"));
    (report, trips, lines)
}

fn pack_puts(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/o/packs/"))
        .count()
}

// One new pack: it goes in the commit's `objects` request, ahead of the
// index object. The persist's critical path is three round trips: the
// opening, the chunk queries (the files' and the manifest's, in flight at
// once: the manifest is chunked without waiting for the files' answer) and
// the commit; it was four, the pack's own PUT between the answers and the
// commit (seen failing: 4).
#[test]
fn a_persist_of_one_pack_sends_it_with_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (report, trips, lines) = persist_far(dir.path(), "one", (4, 256 << 10));
    eprintln!("persist of one pack: {trips} round trips");
    assert_eq!(report["packs_written"], 1, "{report}");
    assert_eq!(pack_puts(&lines), 0, "{lines:#?}");
    let commits: Vec<&String> = lines.iter().filter(|r| r.contains("/objects?")).collect();
    assert_eq!(commits.len(), 1, "{lines:#?}");
    assert!(commits[0].contains("objects?put=packs/"), "{commits:?}");
    assert!(trips <= 3, "{trips} round trips: {lines:#?}");
}

// Several new packs: all but the last are uploaded while the files are
// read, the last with the commit (11 MiB of random content: two full 4 MiB
// packs, and the last one still open when the manifest's chunks are in;
// a pack the last frame fills to the target is uploaded on its own).
#[test]
fn a_persist_of_several_packs_sends_only_the_last_with_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _, lines) = persist_far(dir.path(), "many", (11, 1 << 20));
    let packs = report["packs_written"].as_u64().unwrap() as usize;
    assert!(packs >= 3, "{report}");
    assert_eq!(pack_puts(&lines), packs - 1, "{lines:#?}");
    assert!(
        lines.iter().any(|r| r.contains("objects?put=packs/")),
        "{lines:#?}"
    );
}
