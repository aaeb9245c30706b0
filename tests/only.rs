//! `strata attach --only` and `strata cache restore --only`: a job takes
//! part of its upstream workspace, fetching only that part's chunks.
//! Included by `e2e.rs`, so no binary of its own.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::support::{random_files, strata, write_files, Client, Server};

/// `dirs` directories of `per_dir` incompressible files of `size` bytes.
fn layer_tree(root: &Path, dirs: usize, per_dir: usize, size: usize) {
    for d in 0..dirs {
        random_files(&root.join(format!("d{d}")), per_dir, size, d as u64);
    }
}

// A job attaches one directory of a 1,000-file layer from a server: the
// bytes received are the frames holding that directory's chunks (its
// chunks, and at most the two frames it shares with its neighbours in the
// tree) and the manifest, not the layer; files outside it stay as they
// were; a later full attach finds the subset's files in the stat cache
// and writes the rest.
#[test]
fn attach_only_one_directory_reads_only_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d.join("srv").to_str().unwrap(), &[], &[]);
    let (dirs, per_dir, size) = (20, 50, 16 << 10);
    layer_tree(&d.join("src"), dirs, per_dir, size);
    let builder = Client::new(&server.ns("team"), &d.join("cache-build"));
    builder.ok(&["run", "create", "--run", "r", "--job", "b", "--job", "t:b"]);
    builder.json(&[
        "persist",
        "--run",
        "r",
        "--job",
        "b",
        "--root",
        d.join("src").to_str().unwrap(),
        ".",
    ]);

    let at = d.join("ws");
    // Something of the job's own, and an older copy of a layer file outside
    // the subset: both left alone.
    write_files(&at, &[("mine.txt", "mine"), ("d0/blob000.bin", "old")]);
    let runner = Client::new(&server.ns("team"), &d.join("cache-test"));
    let r = runner.json(&[
        "attach",
        "--run",
        "r",
        "--job",
        "t",
        "--at",
        at.to_str().unwrap(),
        "--only",
        "d3",
    ]);
    let dir_bytes = (per_dir * size) as u64;
    assert_eq!(r["totals"]["files"], per_dir as u64);
    assert_eq!(r["only"], serde_json::json!(["d3"]));
    assert_eq!(r["skipped"]["files"], ((dirs - 1) * per_dir) as u64);
    assert_eq!(r["skipped"]["bytes"], ((dirs - 1) * per_dir * size) as u64);
    // Chunks are stored in frames of 2 MiB (docs/format.md), filled from
    // neighbouring files, and read whole: the directory's own bytes, and
    // the rest of at most two frames it shares (each at most 2 MiB and one
    // file over), incompressible data stored as it is.
    let frame = (2 << 20) + size as u64 + 1024;
    let chunks_bound = dir_bytes + 2 * frame;
    let from_store = r["bytes_from_store"].as_u64().unwrap();
    assert!(from_store <= chunks_bound, "{from_store} > {chunks_bound}");
    // Counted by the transport: every byte the server sent, run records
    // and listings (a few KiB) included.
    let manifests = r["manifest_bytes_from_store"].as_u64().unwrap();
    let received = r["network"]["received"].as_u64().unwrap();
    assert!(
        received <= chunks_bound + manifests + (16 << 10),
        "received {received}: {dir_bytes} of the directory, {manifests} of manifests"
    );
    let same = |a: &Path, b: &Path| assert_eq!(fs::read(a).unwrap(), fs::read(b).unwrap());
    for f in fs::read_dir(d.join("src/d3")).unwrap() {
        let f = f.unwrap().path();
        same(&f, &at.join("d3").join(f.file_name().unwrap()));
    }
    assert_eq!(fs::read_to_string(at.join("mine.txt")).unwrap(), "mine");
    assert_eq!(
        fs::read_to_string(at.join("d0/blob000.bin")).unwrap(),
        "old"
    );
    assert!(!at.join("d1").exists());
    // Past the stat cache's racy margin (100 ms): the files the first
    // attach wrote are read once more and remembered.
    std::thread::sleep(Duration::from_millis(250));
    let line = runner.ok(&[
        "attach",
        "--run",
        "r",
        "--job",
        "t",
        "--at",
        at.to_str().unwrap(),
        "--only",
        "d3",
    ]);
    assert!(
        line.contains("; only d3: 950 files (14.8 MiB) outside it left alone"),
        "{line}"
    );

    // The full attach finds d3 in the stat cache (remembered by the
    // subset's attach) and nothing else.
    std::thread::sleep(Duration::from_millis(250));
    let full = runner.json(&[
        "attach",
        "--run",
        "r",
        "--job",
        "t",
        "--at",
        at.to_str().unwrap(),
    ]);
    assert_eq!(full["files_unchanged"], per_dir as u64);
    assert_eq!(full["files_written"], ((dirs - 1) * per_dir) as u64);
    assert_eq!(full["skipped"]["files"], 0);
    let full_received = full["network"]["received"].as_u64().unwrap();
    assert!(
        full_received > 3 * received,
        "{full_received} vs {received}"
    );
}

// Two unrelated jobs wrote one path differently: attaching all of it is
// a conflict, attaching only elsewhere is not, and attaching only that
// path is the same conflict; a path or glob no layer holds is an error
// naming it, before anything is written.
#[test]
fn only_checks_conflicts_inside_and_names_what_no_layer_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = Client::new(d.join("store").to_str().unwrap(), &d.join("cache"));
    c.ok(&[
        "run", "create", "--run", "r", "--job", "a", "--job", "b", "--job", "c:a,b",
    ]);
    write_files(&d.join("a"), &[("out/report", "1"), ("dist/app.js", "app")]);
    write_files(&d.join("b"), &[("out/report", "2"), ("docs/x.md", "x")]);
    for job in ["a", "b"] {
        let root = d.join(job);
        c.persist("r", job, &root, ".");
    }
    let at = d.join("ws");
    let attach = |only: &[&str]| {
        let mut args = vec![
            "attach",
            "--run",
            "r",
            "--job",
            "c",
            "--at",
            at.to_str().unwrap(),
        ];
        for o in only {
            args.extend(["--only", o]);
        }
        c.run(&args)
    };
    let whole = attach(&[]);
    assert_eq!(whole.status.code(), Some(3));
    let r = attach(&["dist", "docs/*.md"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(fs::read_to_string(at.join("dist/app.js")).unwrap(), "app");
    assert_eq!(fs::read_to_string(at.join("docs/x.md")).unwrap(), "x");
    assert!(!at.join("out").exists());
    let clash = attach(&["out/report"]);
    assert_eq!(clash.status.code(), Some(3));
    let e = String::from_utf8_lossy(&clash.stderr);
    assert!(e.contains("out/report"), "{e}");

    for (missing, named) in [("dist", "dst"), ("src/**/*.rs", "src/**/*.rs")] {
        let e = attach(&[missing, named]);
        let err = String::from_utf8_lossy(&e.stderr);
        assert_eq!(e.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "--only {named:?} matches nothing in the layers of a, b"
            )),
            "{err}"
        );
    }
    let out = strata()
        .args([
            "--store",
            d.join("store").to_str().unwrap(),
            "attach",
            "--run",
            "r",
        ])
        .args(["--job", "c", "--at", at.to_str().unwrap(), "--only", "/etc"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("relative to the layers' roots"), "{err}");
}

// A cache restore of only part of an entry writes that part, says what it
// left, and refuses a path the entry does not hold.
#[test]
fn cache_restore_only_writes_the_part_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = Client::new(d.join("store").to_str().unwrap(), &d.join("cache"));
    write_files(
        &d.join("src"),
        &[
            ("node_modules/a/index.js", "a"),
            ("node_modules/b/index.js", "b"),
            (".venv/x", "x"),
        ],
    );
    let root = d.join("src");
    c.ok(&[
        "cache",
        "save",
        "--key",
        "deps-1",
        "--root",
        root.to_str().unwrap(),
        "node_modules",
        ".venv",
    ]);
    let at = d.join("ws");
    let r = c.json(&[
        "cache",
        "restore",
        "--key",
        "deps-1",
        "--at",
        at.to_str().unwrap(),
        "--only",
        "node_modules/a",
    ]);
    assert_eq!(r["skipped"]["files"], 2);
    assert_eq!(
        fs::read_to_string(at.join("node_modules/a/index.js")).unwrap(),
        "a"
    );
    assert!(!at.join("node_modules/b").exists() && !at.join(".venv").exists());
    let e = c.fails(&[
        "cache",
        "restore",
        "--key",
        "deps-1",
        "--at",
        at.to_str().unwrap(),
        "--only",
        "target",
    ]);
    assert!(
        e.contains("--only \"target\" matches nothing in cache \"deps-1\""),
        "{e}"
    );
}
