//! Reliability scenarios that need real processes: persists killed at
//! random instants, and many strata processes sharing one store.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn strata(store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.arg("--store").arg(store);
    c.env_remove("STRATA_STORE")
        .env_remove("STRATA_RUN")
        .env_remove("STRATA_JOB");
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

fn same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    let rel = |v: &[PathBuf], root: &Path| -> Vec<PathBuf> {
        v.iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    };
    assert_eq!(rel(&fa, a), rel(&fb, b));
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(fs::read(x).unwrap(), fs::read(y).unwrap(), "{x:?}");
    }
}

/// Number of kill trials; STRATA_CRASH_TRIALS raises it for the long run.
fn trials() -> u64 {
    std::env::var("STRATA_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

// A CI runner dies in the middle of `strata persist`, at a random instant,
// again and again: the store always verifies clean, never shows a partial
// layer, and the next persist succeeds and attaches to the right tree.
#[test]
fn persist_killed_at_random_instants() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    strata_store::synth::generate(&src, 400, 21).unwrap();
    let store = dir.path().join("store");
    ok(strata(&store).args(["run", "create", "r", "--job", "a", "--job", "b:a"]));
    let mut rng = strata_store::synth::Rng::new(7);
    let mut killed = 0;
    for i in 0..trials() {
        let mut child = strata(&store)
            .args(["persist", "--run", "r", "--job", "a", "--root"])
            .arg(&src)
            .arg("node_modules")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.range(0, 120_000)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            killed += 1;
        }
        // Every layer that is visible is complete; the store verifies clean.
        let out = strata(&store).args(["verify"]).output().unwrap();
        assert!(
            out.status.success(),
            "trial {i}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every visible layer attaches to exactly the source tree.
        let at = dir.path().join(format!("at{i}"));
        ok(strata(&store)
            .args(["attach", "--run", "r", "--job", "b", "--at"])
            .arg(&at));
        if at.join("node_modules").exists() {
            same_tree(&src.join("node_modules"), &at.join("node_modules"));
        }
        fs::remove_dir_all(&at).unwrap();
    }
    assert!(killed > 0, "no persist was killed mid-way");
    // After all that, a full persist succeeds.
    ok(strata(&store)
        .args(["persist", "--run", "r", "--job", "a", "--root"])
        .arg(&src)
        .arg("node_modules"));
    let out = ok(strata(&store).args(["verify", "--read-data"]));
    assert!(out.contains("no problems"), "{out}");
}

// Eight CI jobs on one machine share a store: all persist and attach at
// once; each waits its turn (and says so) and every result is right.
#[test]
fn eight_processes_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let jobs: Vec<String> = (0..8).map(|i| format!("j{i}")).collect();
    let mut create = strata(&store);
    create.args(["run", "create", "r"]);
    for j in &jobs {
        create.arg("--job").arg(j);
    }
    create.args(["--job", &format!("all:{}", jobs.join(","))]);
    ok(&mut create);
    let children: Vec<_> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let src = dir.path().join(format!("src-{j}"));
            strata_store::synth::generate(&src.join(j), 60, i as u64).unwrap();
            strata(&store)
                .args(["persist", "--run", "r", "--job", j, "--root"])
                .arg(&src)
                .arg(j)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Attaches race with the persists too; they see whatever is committed.
    let attachers: Vec<_> = (0..4)
        .map(|i| {
            strata(&store)
                .args(["attach", "--run", "r", "--job", "all", "--at"])
                .arg(dir.path().join(format!("early{i}")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children.into_iter().chain(attachers) {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let at = dir.path().join("final");
    ok(strata(&store)
        .args(["attach", "--run", "r", "--job", "all", "--at"])
        .arg(&at));
    for j in &jobs {
        same_tree(&dir.path().join(format!("src-{j}/{j}")), &at.join(j));
    }
    let out = ok(strata(&store).args(["verify", "--read-data"]));
    assert!(out.contains("no problems"), "{out}");
}
