//! End-to-end scenarios: each test drives the built `strata` binary the way
//! a CI job would, on a store in a temporary directory.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

mod bench_cli;
mod docs;
mod only;
mod support;

struct World {
    dir: TempDir,
}

impl World {
    fn new() -> Self {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A job's own machine: a working directory nobody else writes.
    fn machine(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("machines").join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--store")
            .arg(self.store())
            .args(args)
            .env_remove("STRATA_STORE")
            .env_remove("STRATA_RUN")
            .env_remove("STRATA_JOB")
            .output()
            .unwrap()
    }

    /// Runs strata and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.strata(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs strata, asserts it fails with `code`; returns stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.strata(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "strata {args:?}: {err}");
        err
    }

    fn persist(&self, run: &str, job: &str, paths: &[&str]) -> serde_json::Value {
        let root = self.machine(&format!("{run}-{job}"));
        let mut args = vec!["--json", "persist", "--run", run, "--job", job, "--root"];
        let root_s = root.to_str().unwrap().to_string();
        args.push(&root_s);
        args.extend_from_slice(paths);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    fn attach(&self, run: &str, job: &str) -> PathBuf {
        let at = self.machine(&format!("{run}-{job}"));
        self.attach_into(run, job, &at);
        at
    }

    /// Attaches `job`'s workspace into `at`, asserting success.
    fn attach_into(&self, run: &str, job: &str, at: &Path) -> String {
        self.ok(&[
            "attach",
            "--run",
            run,
            "--job",
            job,
            "--at",
            at.to_str().unwrap(),
        ])
    }

    /// Attaches into `at`, asserting exit code `code`; returns stderr.
    fn attach_fails(&self, code: i32, run: &str, job: &str, at: &Path) -> String {
        self.fails(
            code,
            &[
                "attach",
                "--run",
                run,
                "--job",
                job,
                "--at",
                at.to_str().unwrap(),
            ],
        )
    }

    fn write(&self, run: &str, job: &str, rel: &str, text: &str) {
        let p = self.machine(&format!("{run}-{job}")).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// Every file under the store with its content, to check nothing changed.
    fn store_snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out: Vec<_> = walkdir::WalkDir::new(self.store())
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .filter(|e| !e.path().components().any(|c| c.as_os_str() == ".local"))
            .map(|e| (e.path().to_path_buf(), fs::read(e.path()).unwrap()))
            .collect();
        out.sort();
        out
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

const SEEDS: &[&str] = &[
    "--job",
    "compile-assets",
    "--job",
    "compile-code",
    "--job",
    "test:compile-assets,compile-code",
    "--job",
    "code-coverage:compile-code",
    "--job",
    "deploy:test,code-coverage",
];

fn create(w: &World, run: &str, jobs: &[&str]) {
    let mut args = vec!["run", "create", "--run", run];
    args.extend_from_slice(jobs);
    w.ok(&args);
}

// A deploy job sees the code.jar that test rebuilt, not compile-code's.
#[test]
fn deploy_sees_the_descendants_file() {
    let w = World::new();
    create(&w, "r", SEEDS);
    w.write("r", "compile-code", "build/code.jar", "compiled");
    w.write("r", "compile-code", "build/lib.so", "lib");
    w.persist("r", "compile-code", &["build"]);
    w.write("r", "compile-assets", "assets/a.css", "css");
    w.persist("r", "compile-assets", &["assets"]);
    let t = w.attach("r", "test");
    assert_eq!(read(&t.join("build/code.jar")), "compiled");
    w.write("r", "test", "build/code.jar", "tested");
    w.persist("r", "test", &["build/code.jar"]);
    w.write("r", "code-coverage", "coverage/lcov", "cov");
    w.persist("r", "code-coverage", &["coverage"]);
    let d = w.attach("r", "deploy");
    assert_eq!(read(&d.join("build/code.jar")), "tested");
    assert_eq!(read(&d.join("build/lib.so")), "lib");
    assert_eq!(read(&d.join("assets/a.css")), "css");
    assert_eq!(read(&d.join("coverage/lcov")), "cov");
}

// Two jobs that do not require each other write one path: attach names both.
#[test]
fn concurrent_jobs_writing_one_path_conflict() {
    let w = World::new();
    create(
        &w,
        "r",
        &[
            "--job",
            "left",
            "--job",
            "right",
            "--job",
            "join:left,right",
        ],
    );
    w.write("r", "left", "out/app.js", "left version");
    w.write("r", "right", "out/app.js", "right version");
    w.persist("r", "left", &["out"]);
    w.persist("r", "right", &["out"]);
    let at = w.machine("join-target");
    let err = w.attach_fails(3, "r", "join", &at);
    assert!(err.contains("out/app.js"), "{err}");
    assert!(err.contains("left") && err.contains("right"), "{err}");
    assert!(
        fs::read_dir(&at).unwrap().next().is_none(),
        "nothing written on conflict"
    );
}

// Identical content from two unrelated jobs is not ambiguous: allowed.
#[test]
fn identical_content_from_unrelated_jobs_is_allowed() {
    let w = World::new();
    create(
        &w,
        "r",
        &[
            "--job",
            "left",
            "--job",
            "right",
            "--job",
            "join:left,right",
        ],
    );
    w.write("r", "left", "out/same.txt", "same");
    w.write("r", "right", "out/same.txt", "same");
    w.persist("r", "left", &["out"]);
    w.persist("r", "right", &["out"]);
    assert_eq!(read(&w.attach("r", "join").join("out/same.txt")), "same");
}

// A path that is a file in one job and a directory in another fails too.
#[test]
fn file_directory_clash_conflicts() {
    let w = World::new();
    create(&w, "r", &["--job", "a", "--job", "b", "--job", "c:a,b"]);
    w.write("r", "a", "dist", "a file");
    w.write("r", "b", "dist/index.js", "in a dir");
    w.persist("r", "a", &["dist"]);
    w.persist("r", "b", &["dist"]);
    let at = w.machine("c-target");
    let err = w.attach_fails(3, "r", "c", &at);
    assert!(
        err.contains("dist") && err.contains("a file") && err.contains("a directory"),
        "{err}"
    );
}

// Two per-architecture pipelines in one run never see each other's files.
#[test]
fn isolated_pipelines_never_mix() {
    let w = World::new();
    create(
        &w,
        "r",
        &[
            "--job",
            "build-amd64",
            "--job",
            "test-amd64:build-amd64",
            "--job",
            "build-arm64",
            "--job",
            "test-arm64:build-arm64",
        ],
    );
    w.write("r", "build-amd64", "bin/app", "amd64 binary");
    w.write("r", "build-arm64", "bin/app", "arm64 binary");
    w.write("r", "build-arm64", "bin/arm-only", "arm");
    w.persist("r", "build-amd64", &["bin"]);
    w.persist("r", "build-arm64", &["bin"]);
    let amd = w.attach("r", "test-amd64");
    let arm = w.attach("r", "test-arm64");
    assert_eq!(read(&amd.join("bin/app")), "amd64 binary");
    assert!(!amd.join("bin/arm-only").exists());
    assert_eq!(read(&arm.join("bin/app")), "arm64 binary");
}

// A job sees only its ancestors: never its own layer, a sibling's or a descendant's.
#[test]
fn jobs_see_only_their_ancestors() {
    let w = World::new();
    create(
        &w,
        "r",
        &[
            "--job", "root", "--job", "a:root", "--job", "b:root", "--job", "leaf:a",
        ],
    );
    for job in ["root", "a", "b", "leaf"] {
        w.write("r", job, &format!("{job}.txt"), job);
        w.persist("r", job, &[&format!("{job}.txt")]);
    }
    let fresh = |job: &str| {
        let at = w.machine(&format!("view-{job}"));
        w.attach_into("r", job, &at);
        let mut names: Vec<String> = fs::read_dir(&at)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(fresh("root"), Vec::<String>::new());
    assert_eq!(fresh("a"), ["root.txt"]);
    assert_eq!(fresh("b"), ["root.txt"]);
    assert_eq!(fresh("leaf"), ["a.txt", "root.txt"]);
}

// Several persists of one job apply in the order they were made.
#[test]
fn a_jobs_persists_are_ordered_layers() {
    let w = World::new();
    create(&w, "r", &["--job", "build", "--job", "use:build"]);
    w.write("r", "build", "out/v", "first");
    w.write("r", "build", "out/only-first", "1");
    w.persist("r", "build", &["out"]);
    fs::remove_file(w.machine("r-build").join("out/only-first")).unwrap();
    w.write("r", "build", "out/v", "second");
    w.persist("r", "build", &["out/v"]);
    let at = w.attach("r", "use");
    assert_eq!(read(&at.join("out/v")), "second");
    assert_eq!(read(&at.join("out/only-first")), "1");
    let ls = w.ok(&["ls", "--run", "r", "--job", "build"]);
    assert!(ls.contains("2 layers"), "{ls}");
}

// A CircleCI config's workflows section defines the graph.
#[test]
fn graph_from_circleci_yaml() {
    let w = World::new();
    let cfg = w.dir.path().join("config.yml");
    fs::write(
        &cfg,
        "version: 2.1\nworkflows:\n  main:\n    jobs:\n      - build\n      - test:\n          requires: [build]\n",
    )
    .unwrap();
    w.ok(&[
        "run",
        "create",
        "--run",
        "r",
        "--graph",
        cfg.to_str().unwrap(),
    ]);
    w.write("r", "build", "a.txt", "built");
    w.persist("r", "build", &["a.txt"]);
    assert_eq!(read(&w.attach("r", "test").join("a.txt")), "built");
    let ls: serde_json::Value =
        serde_json::from_str(&w.ok(&["--json", "ls", "--run", "r"])).unwrap();
    assert_eq!(ls["jobs"][1]["requires"][0], "build");
}

// Bad input: each a clear error naming the fault, a non-zero exit, the store unchanged.
#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    let w = World::new();
    create(&w, "r", &["--job", "a", "--job", "b:a"]);
    w.write("r", "a", "x.txt", "x");
    w.persist("r", "a", &["x.txt"]);
    let before = w.store_snapshot();
    let root = w.machine("r-a");
    let root = root.to_str().unwrap();

    let e = w.fails(
        1,
        &[
            "persist",
            "--run",
            "r",
            "--job",
            "a",
            "--root",
            root,
            "missing.txt",
        ],
    );
    assert!(
        e.contains("missing.txt") && e.contains("does not exist"),
        "{e}"
    );
    let e = w.fails(
        1,
        &[
            "persist",
            "--run",
            "r",
            "--job",
            "a",
            "--root",
            root,
            "../outside",
        ],
    );
    assert!(e.contains("outside the root"), "{e}");
    let e = w.fails(
        1,
        &[
            "persist", "--run", "nope", "--job", "a", "--root", root, "x.txt",
        ],
    );
    assert!(e.contains("run nope does not exist"), "{e}");
    let e = w.fails(
        1,
        &[
            "persist", "--run", "r", "--job", "ghost", "--root", root, "x.txt",
        ],
    );
    assert!(e.contains("no job ghost") && e.contains("a, b"), "{e}");
    let e = w.fails(1, &["attach", "--run", "r", "--job", "ghost"]);
    assert!(e.contains("no job ghost"), "{e}");
    let e = w.fails(
        1,
        &[
            "run", "create", "--run", "cyc", "--job", "a:c", "--job", "b:a", "--job", "c:b",
        ],
    );
    assert!(e.contains("cycle") && e.contains("a -> c -> b -> a"), "{e}");
    let e = w.fails(
        1,
        &["run", "create", "--run", "dup", "--job", "a", "--job", "a"],
    );
    assert!(e.contains("job a is listed twice"), "{e}");
    let e = w.fails(1, &["run", "create", "--run", "unk", "--job", "a:zzz"]);
    assert!(e.contains("requires zzz"), "{e}");
    let e = w.fails(1, &["run", "create", "--run", "r", "--job", "other"]);
    assert!(e.contains("already exists"), "{e}");
    let e = w.fails(2, &["run", "create", "--run", "bad/name", "--job", "a"]);
    assert!(e.contains("invalid run name"), "{e}");
    let file = w.dir.path().join("a-file");
    fs::write(&file, "not a dir").unwrap();
    let e = w.attach_fails(1, "r", "b", &file);
    assert!(e.contains("a-file") && e.contains("not a directory"), "{e}");
    assert_eq!(read(&file), "not a dir");
    w.fails(2, &["persist", "--run", "r"]);

    assert_eq!(
        before,
        w.store_snapshot(),
        "failed commands changed the store"
    );
    // Creating the same run again with the same graph is a harmless no-op.
    w.ok(&["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]);
}

// Attaching over existing files overwrites them, keeps unrelated files, and
// replaces a symlink rather than writing through it.
#[test]
fn attach_over_existing_content() {
    let w = World::new();
    create(&w, "r", &["--job", "a", "--job", "b:a"]);
    w.write("r", "a", "dir/file", "from store");
    w.write("r", "a", "dir/link-target", "from store too");
    w.persist("r", "a", &["dir"]);
    let at = w.machine("target");
    fs::create_dir_all(at.join("dir")).unwrap();
    fs::write(at.join("dir/file"), "stale").unwrap();
    fs::write(at.join("dir/unrelated"), "mine").unwrap();
    let outside = w.dir.path().join("outside.txt");
    fs::write(&outside, "precious").unwrap();
    symlink(&outside, at.join("dir/link-target")).unwrap();
    w.attach_into("r", "b", &at);
    assert_eq!(read(&at.join("dir/file")), "from store");
    assert_eq!(read(&at.join("dir/unrelated")), "mine");
    assert_eq!(read(&outside), "precious");
    assert!(!fs::symlink_metadata(at.join("dir/link-target"))
        .unwrap()
        .is_symlink());
    assert_eq!(read(&at.join("dir/link-target")), "from store too");
}

// Persisting the same tree twice writes almost nothing; trees sharing 90%
// of their files share those chunks.
#[test]
fn dedup_across_persists() {
    let w = World::new();
    create(&w, "r", &["--job", "one", "--job", "two", "--job", "three"]);
    let m = w.machine("r-one");
    strata_store::synth::generate(&m, 300, 7).unwrap();
    let first = w.persist("r", "one", &["node_modules"]);
    let again = w.persist("r", "one", &["node_modules"]);
    let logical = first["totals"]["bytes"].as_u64().unwrap();
    assert!(first["bytes_written"].as_u64().unwrap() > logical / 10);
    assert!(
        (again["bytes_written"].as_u64().unwrap() as f64) < logical as f64 * 0.01,
        "{again}"
    );
    assert_eq!(again["chunks_new"], 0);

    // Tree two: 90% of tree one's files, plus new ones.
    let two = w.machine("r-two");
    let files: Vec<PathBuf> = walkdir::WalkDir::new(m.join("node_modules"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let keep = files.len() * 9 / 10;
    for f in &files[..keep] {
        let dest = two.join(f.strip_prefix(&m).unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(f, dest).unwrap();
    }
    strata_store::synth::generate(&two.join("extra"), 30, 99).unwrap();
    let shared_bytes: u64 = files[..keep]
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    let r = w.persist("r", "two", &["node_modules", "extra"]);
    assert!(r["bytes_reused"].as_u64().unwrap() >= shared_bytes, "{r}");
}

// `strata demo` runs the sample workflow and shows reuse on the second run.
#[test]
fn demo_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["demo", "--files", "200"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains("deploy         sees build/code.jar from test"),
        "{s}"
    );
    assert!(s.contains("run demo-run-2"), "{s}");
}

// Modes survive, and a read-only directory is made read-only last.
#[test]
fn modes_and_read_only_directories() {
    let w = World::new();
    create(&w, "r", &["--job", "a", "--job", "b:a"]);
    let m = w.machine("r-a");
    fs::create_dir_all(m.join("ro")).unwrap();
    fs::write(m.join("ro/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(m.join("ro/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(m.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    w.persist("r", "a", &["ro"]);
    let at = w.attach("r", "b");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&at.join("ro")), 0o555);
    assert_eq!(mode(&at.join("ro/tool")), 0o755);
    // Attaching again over the read-only tree works too.
    w.attach_into("r", "b", &at);
    for p in [m.join("ro"), at.join("ro")] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

// verify is clean on a healthy store, and names the pack and the affected
// run and job when a byte of a pack goes bad.
#[test]
fn verify_finds_a_corrupt_pack() {
    let w = World::new();
    create(&w, "r", &["--job", "build", "--job", "use:build"]);
    strata_store::synth::generate(&w.machine("r-build"), 50, 3).unwrap();
    w.persist("r", "build", &["node_modules"]);
    let ok = w.ok(&["verify", "--read-data"]);
    assert!(ok.contains("no problems"), "{ok}");

    let pack = walkdir::WalkDir::new(w.store().join("packs"))
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| e.file_type().is_file())
        .unwrap()
        .into_path();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x10;
    fs::write(&pack, bytes).unwrap();
    // Without --read-data only sizes are checked; with it, the flip shows.
    w.ok(&["verify"]);
    let out = w.strata(&["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        stdout.contains(name) && stdout.contains("r/build"),
        "{stdout}"
    );
}

// A hostile upstream job makes `x` a symlink to a directory outside the
// workspace; a later job writes `x/file`. Attach replaces the link with a
// real directory and never writes outside --at. Where two unrelated jobs
// do this, it is a conflict (a symlink against a directory).
#[test]
fn symlink_escapes_across_layers_are_defeated() {
    let w = World::new();
    let outside = w.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    create(
        &w,
        "r",
        &[
            "--job",
            "evil",
            "--job",
            "later:evil",
            "--job",
            "other",
            "--job",
            "sink:later",
            "--job",
            "both:evil,other",
        ],
    );
    symlink(&outside, w.machine("r-evil").join("x")).unwrap();
    w.persist("r", "evil", &["x"]);
    w.write("r", "later", "x/file", "inside");
    w.persist("r", "later", &["x"]);
    w.write("r", "other", "x/file", "other");
    w.persist("r", "other", &["x"]);

    let at = w.attach("r", "sink");
    assert!(!fs::symlink_metadata(at.join("x")).unwrap().is_symlink());
    assert_eq!(read(&at.join("x/file")), "inside");
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote outside the workspace"
    );

    let target = w.machine("both-target");
    let e = w.attach_fails(3, "r", "both", &target);
    assert!(
        e.contains("x") && e.contains("a symlink") && e.contains("a directory"),
        "{e}"
    );
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
}

// The attach directory already holds a symlink where the workspace has a
// directory: the link is replaced, and nothing is written through it.
#[test]
fn a_symlink_in_the_target_is_replaced_not_followed() {
    let w = World::new();
    create(&w, "r", &["--job", "a", "--job", "b:a"]);
    w.write("r", "a", "dist/app.js", "app");
    w.persist("r", "a", &["dist"]);
    let outside = w.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let at = w.machine("target");
    symlink(&outside, at.join("dist")).unwrap();
    w.attach_into("r", "b", &at);
    assert!(fs::symlink_metadata(at.join("dist")).unwrap().is_dir());
    assert_eq!(read(&at.join("dist/app.js")), "app");
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
}

// Names that differ only in case, and a 255-byte name, survive the round trip.
#[test]
fn case_only_and_long_names() {
    let w = World::new();
    create(&w, "r", &["--job", "a", "--job", "b:a"]);
    let long = "n".repeat(255);
    w.write("r", "a", "d/README", "upper");
    w.write("r", "a", "d/readme", "lower");
    w.write("r", "a", &format!("d/{long}"), "long");
    w.persist("r", "a", &["d"]);
    let at = w.attach("r", "b");
    assert_eq!(read(&at.join("d/README")), "upper");
    assert_eq!(read(&at.join("d/readme")), "lower");
    assert_eq!(read(&at.join(format!("d/{long}"))), "long");
}

// A job persists more than every queue between persist's stages holds, on
// a local store with one rayon thread: the pools fill, drain, and the
// persist ends. (It deadlocked: the upload thread indexed each pack on
// rayon's pool, whose thread was blocked handing batches to the pools.)
#[test]
fn a_persist_larger_than_its_queues_ends() {
    let w = World::new();
    create(&w, "r", &["--job", "build"]);
    let out = w.machine("r-build").join("out");
    fs::create_dir_all(&out).unwrap();
    // 160 MiB that does not compress, so every chunk is new and packed.
    let mut rng = strata_store::synth::Rng::new(3);
    for i in 0..40 {
        let data: Vec<u8> = (0..(4 << 20) / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect();
        fs::write(out.join(format!("blob{i:02}")), data).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--store")
        .arg(w.store())
        .args(["persist", "--run", "r", "--job", "build", "--root"])
        .arg(w.machine("r-build"))
        .arg("out")
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Generous: it takes seconds; a deadlock never ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("persist of 160 MiB had not ended after 120 s: deadlocked");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success());
    w.ok(&["verify", "--read-data"]);
}

// A CI log gets progress lines (never a redrawn line) during a persist and
// an attach; --progress json makes them JSON, none silences them.
#[test]
fn progress_lines_fit_a_ci_log() {
    let w = World::new();
    w.ok(&["run", "create", "--run", "p", "--job", "a", "--job", "b:a"]);
    let src = w.machine("a");
    strata_store::synth::generate(&src.join("out"), 2000, 3).unwrap();
    let run = |args: &[&str]| {
        let out = w.strata(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    };
    let src_s = src.to_str().unwrap();
    let log = run(&[
        "--progress",
        "plain",
        "persist",
        "--run",
        "p",
        "--job",
        "a",
        "--root",
        src_s,
        "out",
    ]);
    assert!(!log.contains('\r'), "{log:?}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("strata persist: "))
        .collect();
    assert!(
        !lines.is_empty() && lines.last().unwrap().contains("100%"),
        "{log}"
    );
    // At most one line per tenth, and a final one: never a flood.
    assert!(lines.len() <= 11, "{log}");
    let at = w.dir.path().join("at");
    let log = run(&[
        "--progress",
        "json",
        "attach",
        "--run",
        "p",
        "--job",
        "b",
        "--at",
        at.to_str().unwrap(),
    ]);
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["progress"]["command"], "attach");
    assert_eq!(last["percent"], 100.0);
    assert_eq!(
        last["progress"]["done_bytes"],
        last["progress"]["total_bytes"]
    );
    let at = w.dir.path().join("at2");
    let log = run(&[
        "--progress",
        "none",
        "attach",
        "--run",
        "p",
        "--job",
        "b",
        "--at",
        at.to_str().unwrap(),
    ]);
    assert!(!log.contains("strata attach:"), "{log}");
}

// A file the next layer adds with the content of a file already in place is
// copied from that file at the target, not fetched from the store.
#[test]
fn new_files_are_seeded_from_files_already_in_place() {
    let w = World::new();
    create(&w, "r", &["--job", "a", "--job", "b:a"]);
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    w.write("r", "a", "dir/one", &text);
    w.persist("r", "a", &["dir"]);
    let at = w.machine("target");
    w.attach_into("r", "b", &at);
    w.write("r", "a", "dir/two", &text);
    w.persist("r", "a", &["dir"]);
    let out = w.ok(&[
        "--json",
        "attach",
        "--run",
        "r",
        "--job",
        "b",
        "--at",
        at.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let write = &report;
    assert_eq!(write["files_in_place"], 1, "{report}");
    assert_eq!(write["files_written"], 1, "{report}");
    assert!(
        write["chunks_from_target"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(write["chunks_from_store"], 0, "{report}");
    assert_eq!(read(&at.join("dir/two")), text);
}

// A job persists a directory holding a name of the shape attach gives its
// staging directory: persist refuses it, naming it (a layer holding one made
// every later attach into that target fail), and the store is unchanged.
#[test]
fn names_strata_reserves_are_refused_at_persist() {
    let w = World::new();
    w.ok(&["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]);
    w.write("r", "a", "out/.strata-staging-4242-1f2e-7/f", "x");
    w.write("r", "a", "out/.strata-tmp-notes", "a user's file: fine");
    let before = w.store_snapshot();
    let root = w.machine("r-a");
    let err = w.fails(
        1,
        &[
            "persist",
            "--run",
            "r",
            "--job",
            "a",
            "--root",
            root.to_str().unwrap(),
            "out",
        ],
    );
    assert!(err.contains(".strata-staging-4242-1f2e-7"), "{err}");
    assert_eq!(w.store_snapshot(), before);
    fs::remove_dir_all(root.join("out/.strata-staging-4242-1f2e-7")).unwrap();
    w.persist("r", "a", &["out"]);
    let at = w.attach("r", "b");
    assert_eq!(
        read(&at.join("out/.strata-tmp-notes")),
        "a user's file: fine"
    );
}

// An I/O error names what failed and says its cause once (it said "Not a
// directory (os error 20): Not a directory (os error 20)").
#[test]
fn an_io_errors_cause_is_said_once() {
    let w = World::new();
    w.ok(&["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]);
    w.write("r", "a", "out/f", "x");
    w.persist("r", "a", &["out"]);
    let file = w.machine("m").join("file");
    fs::write(&file, "x").unwrap();
    let err = w.attach_fails(1, "r", "b", &file.join("at"));
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert!(err.contains(file.to_str().unwrap()), "{err}");
}

/// `strata` on `w`'s store with the runner's cache in `w`, more
/// environment, and `args`.
fn strata_with(w: &World, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--store")
        .arg(w.store())
        .env("STRATA_CACHE", w.dir.path().join("cache"))
        .env_remove("STRATA_NO_STAT_CACHE")
        .env("STRATA_PROGRESS", "none")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

// A CI config written for an older strata keeps working: the old spellings
// of the run, the runner's cache, its size and gc's grace still take effect
// and say on stderr what to write instead; the new spellings say nothing.
#[test]
fn old_spellings_work_and_warn_and_new_ones_are_quiet() {
    let w = World::new();
    let old_cache = w.dir.path().join("old-cache");
    let oc = old_cache.to_str().unwrap();
    let root = w.machine("src");
    fs::write(root.join("f"), "x").unwrap();
    let r = root.to_str().unwrap();
    let old: [&[&str]; 4] = [
        &["run", "create", "r1", "--job", "a"],
        &[
            "--cache", oc, "persist", "--run", "r1", "--job", "a", "--root", r, "f",
        ],
        &["--cache-mib", "16", "ls"],
        &["gc", "--dry-run", "--grace-secs", "0"],
    ];
    for args in old {
        let out = strata_with(&w, &[], args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(
            err.starts_with("strata: warning: ") && err.contains("deprecated"),
            "{args:?}: {err}"
        );
    }
    // --cache took effect: the stat cache went there.
    assert!(old_cache.join("trees").is_dir());
    assert!(w.ok(&["ls"]).contains("r1"));
    let new: [&[&str]; 6] = [
        &["run", "create", "--run", "r2", "--job", "a"],
        &[
            "--cache-dir",
            oc,
            "persist",
            "--run",
            "r2",
            "--job",
            "a",
            "--root",
            r,
            "f",
        ],
        &["--cache-size", "16MiB", "ls"],
        &["gc", "--dry-run", "--grace", "0"],
        &["--net-timeout", "10", "ls"],
        &["--net-timeout", "1m", "ls"],
    ];
    for args in new {
        let out = strata_with(&w, &[], args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "{args:?}: {err}");
    }
    // Existing CI configs set STRATA_NET_TIMEOUT=10: still ten seconds.
    for value in ["10", "10s", "0.5"] {
        let out = strata_with(&w, &[("STRATA_NET_TIMEOUT", value)], &["ls"]);
        assert!(out.status.success() && out.stderr.is_empty(), "{value}");
    }
    let out = strata_with(&w, &[], &["--net-timeout", "10 parsecs", "ls"]);
    assert_eq!(out.status.code(), Some(2));
}

// STRATA_NO_STAT_CACHE=1, as docs/cli.md writes it, and =true read every
// file again; =0 and =false trust the runner's stat cache.
#[test]
fn boolean_variables_take_1_0_true_false() {
    let w = World::new();
    create(&w, "r", &["--job", "a"]);
    let root = w.machine("src");
    fs::write(root.join("f"), "x").unwrap();
    let r = root.to_str().unwrap();
    let persist = |value: &str| {
        let env = [("STRATA_NO_STAT_CACHE", value)];
        let args = [
            "--json", "persist", "--run", "r", "--job", "a", "--root", r, "f",
        ];
        let out = strata_with(&w, &env, &args);
        assert!(
            out.status.success(),
            "{value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["files_unchanged"].as_u64().unwrap()
    };
    // Past the stat cache's racy margin (100 ms after the file's ctime,
    // which no call can set back), so what persist reads is remembered.
    std::thread::sleep(std::time::Duration::from_millis(300));
    persist("0");
    for (value, unchanged) in [("1", 0), ("true", 0), ("0", 1), ("false", 1)] {
        assert_eq!(persist(value), unchanged, "STRATA_NO_STAT_CACHE={value}");
    }
}

// A program drives strata with --json: a failure is a JSON document on
// stdout too (message, kind, exit code), a usage error as well; stderr
// keeps the line for people.
#[test]
fn errors_are_json_under_json() {
    let w = World::new();
    create(&w, "r", &["--job", "a"]);
    let cases: [(&[&str], i32, &str); 3] = [
        (
            &["--json", "attach", "--run", "nope", "--job", "a"],
            1,
            "unknown_run",
        ),
        (
            &["--json", "attach", "--run", "r", "--job", "zz"],
            1,
            "unknown_job",
        ),
        (&["--json", "attach", "--run", "r", "--bogus"], 2, "usage"),
    ];
    for (args, code, kind) in cases {
        let out = strata_with(&w, &[], args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e})"));
        assert_eq!(doc["error"]["kind"], kind, "{args:?}");
        assert_eq!(doc["error"]["exit_code"], code, "{args:?}");
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{args:?}"
        );
    }
}

// A user installs completions and the man page: both come from the
// arguments strata parses, so they name every command and the new
// spellings (the man page never the old ones).
#[test]
fn completions_and_man_page_come_from_the_arguments() {
    let w = World::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = w.ok(&["completions", shell]);
        for word in [
            "persist",
            "attach",
            "cache-dir",
            "net-timeout",
            "completions",
        ] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let bash = w.ok(&["completions", "bash"]);
    let sourced = Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p strata"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bash.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(sourced.status.success(), "bash cannot source the script");
    let man = w.ok(&["man"]);
    assert!(
        man.starts_with(".ie") && man.contains(".TH strata 1"),
        "{man}"
    );
    for word in ["persist", "attach", "Exit codes", "cache\\-dir"] {
        assert!(man.contains(word), "man: no {word}");
    }
    assert!(!man.contains("cache\\-mib"), "man: a hidden old spelling");
}

// A program reads how much a report moved: persist, attach (and each layer
// it applied), cache save and `ls` all say it as totals{files, bytes}.
#[test]
fn every_report_says_its_totals_one_way() {
    let w = World::new();
    create(&w, "r", &["--job", "a", "--job", "b:a"]);
    w.write("r", "a", "d/f", "hello");
    let persisted = w.persist("r", "a", &["d"]);
    let at = w.machine("at");
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json", "--progress", "none"];
        all.extend_from_slice(args);
        serde_json::from_str(&w.ok(&all)).unwrap()
    };
    let attached = json(&[
        "attach",
        "--run",
        "r",
        "--job",
        "b",
        "--at",
        at.to_str().unwrap(),
    ]);
    let root = w.machine("r-a");
    let saved = json(&[
        "cache",
        "save",
        "--key",
        "k",
        "--root",
        root.to_str().unwrap(),
        "d",
    ]);
    let run = json(&["ls", "--run", "r"]);
    let store = json(&["ls"]);
    let said = [
        &persisted["totals"],
        &attached["totals"],
        &attached["layers"][0]["totals"],
        &saved["totals"],
        &run["jobs"][0]["layers"][0]["totals"],
        &store["caches"][0]["totals"],
    ];
    for (i, totals) in said.into_iter().enumerate() {
        assert_eq!(totals["files"], 1, "report {i}: {totals}");
        assert_eq!(totals["bytes"], 5, "report {i}: {totals}");
    }
    assert!(attached.get("files").is_none(), "{attached}");
}
