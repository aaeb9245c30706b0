//! A warm runner: persist and attach over a tree the runner persisted or
//! attached before trust a file whose stat is unchanged (the stat cache,
//! docs/architecture.md "The stat cache") and read every other one.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strata_store::testing::assert_same_tree as same_tree;

/// `strata --json` on the store `d/store`, with the runner's cache in
/// `d/cache`.
fn strata(d: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    for v in [
        "STRATA_STORE",
        "STRATA_RUN",
        "STRATA_JOB",
        "STRATA_NO_STAT_CACHE",
    ] {
        c.env_remove(v);
    }
    c.arg("--store")
        .arg(d.join("store"))
        .arg("--cache-dir")
        .arg(d.join("cache"))
        .args(["--json", "--progress", "none"]);
    c
}

fn run(c: &mut Command) -> Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn persist(d: &Path, run_name: &str, job: &str, root: &Path, extra: &[&str]) -> Value {
    run(strata(d)
        .args(extra)
        .args(["persist", "--run", run_name, "--job", job, "--root"])
        .arg(root)
        .arg("app"))
}

fn attach(d: &Path, run_name: &str, job: &str, at: &Path, extra: &[&str]) -> Value {
    run(strata(d)
        .args(extra)
        .args(["attach", "--run", run_name, "--job", job, "--at"])
        .arg(at))
}

/// Files read and files trusted unchanged, as a persist reports them.
fn persisted(v: &Value) -> (u64, u64) {
    (
        v["files_read"].as_u64().unwrap(),
        v["files_unchanged"].as_u64().unwrap(),
    )
}

/// Files trusted unchanged by an attach.
fn attached_unchanged(v: &Value) -> u64 {
    v["files_unchanged"].as_u64().unwrap()
}

/// Twenty small files and one of 2 MB under `root/app`.
fn tree(root: &Path) {
    fs::create_dir_all(root.join("app/lib")).unwrap();
    for i in 0..20 {
        fs::write(
            root.join(format!("app/lib/f{i}.js")),
            format!("module {i}\n"),
        )
        .unwrap();
    }
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("app/big.bin"), big).unwrap();
}

/// Rewrites `path` with other bytes of the same length and puts its mtime
/// back: only its ctime tells it changed.
fn change_keeping_size_and_mtime(path: &Path) {
    let before = fs::metadata(path).unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0x20;
    fs::write(path, bytes).unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(&before);
    filetime::set_file_mtime(path, mtime).unwrap();
    assert_eq!(fs::metadata(path).unwrap().len(), before.len());
}

/// A scratch directory holding `tree` at `src`, past the racy margin.
fn settled_tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    settle();
    (dir, src)
}

/// Past the stat cache's racy margin (100 ms): a stat taken now of a file
/// written before is recorded.
fn settle() {
    std::thread::sleep(Duration::from_millis(250));
}

/// `src` persisted as run `r`, job `a`, and attached for job `b` into
/// `d/ws` twice: the first attach's files are racy (written just now), so
/// the second reads them and the stat cache remembers them all.
fn remembered_workspace(d: &Path, src: &Path) -> std::path::PathBuf {
    persist(d, "r", "a", src, &[]);
    let ws = d.join("ws");
    attach(d, "r", "b", &ws, &[]);
    settle();
    attach(d, "r", "b", &ws, &[]);
    ws
}

// A file rewritten in place with its size and mtime kept (a new ctime) is
// read again; the others are not; `--no-stat-cache` reads every file.
#[test]
fn a_file_changed_with_its_size_and_mtime_kept_is_read_again() {
    let (dir, src) = settled_tree();
    let d = dir.path();
    run(strata(d).args(["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]));
    assert_eq!(persisted(&persist(d, "r", "a", &src, &[])), (21, 0));
    assert_eq!(persisted(&persist(d, "r", "a", &src, &[])), (0, 21));
    change_keeping_size_and_mtime(&src.join("app/lib/f3.js"));
    settle();
    assert_eq!(persisted(&persist(d, "r", "a", &src, &[])), (1, 20));
    assert_eq!(
        persisted(&persist(d, "r", "a", &src, &["--no-stat-cache"])),
        (21, 0)
    );
    let at = d.join("at");
    attach(d, "r", "b", &at, &[]);
    same_tree(&src.join("app"), &at.join("app"));
}

// A stat cache entry whose chunks gc has since reclaimed is not trusted:
// the file is read and its chunks stored again.
#[test]
fn a_remembered_file_whose_chunks_are_gone_is_read_again() {
    let (dir, src) = settled_tree();
    let d = dir.path();
    run(strata(d).args(["run", "create", "--run", "old", "--job", "a"]));
    persist(d, "old", "a", &src, &[]);
    // The run expires and gc reclaims its chunks at once; what follows
    // happens then.
    let later = || {
        let mut c = strata(d);
        c.env("STRATA_NOW", "2099-01-01");
        c
    };
    run(later().args(["gc", "--grace", "0"]));
    run(later().args(["gc", "--grace", "0"]));
    run(later().args([
        "run", "create", "--run", "new", "--job", "a", "--job", "b:a",
    ]));
    let v = run(later()
        .args(["persist", "--run", "new", "--job", "a", "--root"])
        .arg(&src)
        .arg("app"));
    assert_eq!(persisted(&v), (21, 0), "{v}");
    assert!(v["bytes_new"].as_u64().unwrap() >= 2_000_000, "{v}");
    let at = d.join("at");
    run(later()
        .args(["attach", "--run", "new", "--job", "b", "--at"])
        .arg(&at));
    same_tree(&src.join("app"), &at.join("app"));
}

// The warm-runner cycle: attach a workspace, edit it (in place keeping size
// and mtime, delete, add, replace a file by a directory), persist it: the
// layer is the edited tree; a warm attach of it over the workspace trusts
// what it can and leaves the workspace exact.
#[test]
fn a_tree_edited_between_attach_and_persist_gives_the_right_layer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    tree(&src);
    run(strata(d).args(["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]));
    run(strata(d).args(["run", "create", "--run", "r2", "--job", "b", "--job", "c:b"]));
    persist(d, "r", "a", &src, &[]);
    let ws = d.join("ws");
    attach(d, "r", "b", &ws, &[]);
    settle();
    // A second attach reads the files in place and remembers them.
    let v = attach(d, "r", "b", &ws, &[]);
    assert_eq!(v["files_in_place"].as_u64(), Some(21), "{v}");
    settle();
    let v = attach(d, "r", "b", &ws, &[]);
    assert_eq!(attached_unchanged(&v), 21, "{v}");
    // The job edits the workspace.
    change_keeping_size_and_mtime(&ws.join("app/lib/f1.js"));
    fs::remove_file(ws.join("app/lib/f2.js")).unwrap();
    fs::write(ws.join("app/lib/new.js"), "new\n").unwrap();
    fs::remove_file(ws.join("app/lib/f4.js")).unwrap();
    fs::create_dir(ws.join("app/lib/f4.js")).unwrap();
    fs::write(ws.join("app/lib/f4.js/inner"), "inner\n").unwrap();
    settle();
    let (read, unchanged) = persisted(&persist(d, "r2", "b", &ws, &[]));
    // f1 (changed), new.js and f4.js/inner are read; 18 files are not.
    assert_eq!((read, unchanged), (3, 18));
    let fresh = d.join("fresh");
    attach(d, "r2", "c", &fresh, &[]);
    same_tree(&ws.join("app"), &fresh.join("app"));
    // The workspace changed again behind the cache's back (size and mtime
    // kept): a warm attach of the layer restores it.
    let wanted = fs::read(ws.join("app/lib/f5.js")).unwrap();
    change_keeping_size_and_mtime(&ws.join("app/lib/f5.js"));
    settle();
    let v = attach(d, "r2", "c", &ws, &[]);
    assert_eq!(fs::read(ws.join("app/lib/f5.js")).unwrap(), wanted);
    same_tree(&fresh.join("app"), &ws.join("app"));
    assert!(attached_unchanged(&v) >= 18, "{v}");
}

// Two parts of one root persisted in turn (`app/lib`, then `app/big.bin`)
// keep each other's files known: the cache loads only what a persist does
// not cover, and keeps it.
#[test]
fn parts_of_one_root_persisted_in_turn_stay_known() {
    let (dir, src) = settled_tree();
    let d = dir.path();
    run(strata(d).args(["run", "create", "--run", "r", "--job", "a"]));
    let part = |path: &str| {
        persisted(&run(strata(d)
            .args(["persist", "--run", "r", "--job", "a", "--root"])
            .arg(&src)
            .arg(path)))
    };
    assert_eq!(part("app/lib"), (20, 0));
    assert_eq!(part("app/big.bin"), (1, 0));
    assert_eq!(part("app/lib"), (0, 20));
    assert_eq!(part("app/big.bin"), (0, 1));
}

// A next run's layer holds the same files with other mtimes (a tree
// extracted anew): a warm attach trusts what the stat cache knows of their
// content and fixes only the mtimes, reading none of them.
#[test]
fn files_whose_mtime_alone_changed_are_fixed_without_reading() {
    let (dir, src) = settled_tree();
    let d = dir.path();
    run(strata(d).args(["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]));
    run(strata(d).args(["run", "create", "--run", "r2", "--job", "a", "--job", "b:a"]));
    let ws = remembered_workspace(d, &src);
    for e in walkdir::WalkDir::new(src.join("app")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let t = filetime::FileTime::from_unix_time(1_500_000_000, 0);
            filetime::set_file_mtime(e.path(), t).unwrap();
        }
    }
    settle();
    persist(d, "r2", "a", &src, &[]);
    let v = attach(d, "r2", "b", &ws, &[]);
    assert_eq!(attached_unchanged(&v), 21, "{v}");
    assert_eq!(v["files_written"].as_u64(), Some(0), "{v}");
    same_tree(&src.join("app"), &ws.join("app"));
}

/// The stat cache files in `d/cache` (one per store and tree root), with
/// their inodes: a cache saved again is a new file renamed into place.
fn cache_files(d: &Path) -> Vec<(std::path::PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<_> = walkdir::WalkDir::new(d.join("cache"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && e.path().to_string_lossy().contains("/trees/"))
        .map(|e| (e.path().to_path_buf(), e.metadata().unwrap().ino()))
        .collect();
    out.sort();
    out
}

// An attach that finds every file as the stat cache knows it leaves the
// cache as it is (no second stat of every file, no rewrite), and the next
// attach still trusts every file; one changed file makes it record again.
#[test]
fn an_attach_that_changes_nothing_leaves_the_stat_cache_alone() {
    let (dir, src) = settled_tree();
    let d = dir.path();
    run(strata(d).args(["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]));
    let ws = remembered_workspace(d, &src);
    let saved = cache_files(d);
    assert!(!saved.is_empty());
    let v = attach(d, "r", "b", &ws, &[]);
    assert_eq!(attached_unchanged(&v), 21, "{v}");
    assert_eq!(cache_files(d), saved, "the cache was not written again");
    let v = attach(d, "r", "b", &ws, &[]);
    assert_eq!(attached_unchanged(&v), 21, "{v}");
    change_keeping_size_and_mtime(&ws.join("app/lib/f3.js"));
    let v = attach(d, "r", "b", &ws, &[]);
    assert_eq!(attached_unchanged(&v), 20, "{v}");
    assert_ne!(cache_files(d), saved, "a file written is recorded");
    same_tree(&src.join("app"), &ws.join("app"));
}
