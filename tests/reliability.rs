//! Reliability scenarios that need real processes: persists killed at
//! random instants, and many strata processes sharing one store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;

use support::lock_intervals;

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

use strata_store::testing::assert_same_tree as same_tree;

// A CI runner dies in the middle of `strata persist`, at a random instant,
// again and again, each time persisting new content: the store always
// verifies clean, never shows a partial layer, and a persist run again
// after a kill succeeds and attaches to the right tree.
#[test]
fn persist_killed_at_random_instants() {
    kill_trials(50);
}

// The same, 500 times (`cargo test -- --ignored`).
#[test]
#[ignore]
fn persist_killed_at_random_instants_long() {
    kill_trials(500);
}

/// A tree of new content for trial `i`: code-like files and a few
/// incompressible blobs, so a persist writes several packs and the kill
/// has a real write phase to land in.
fn trial_tree(root: &Path, i: u64) {
    strata_store::synth::generate(root, 150, 1000 + i).unwrap();
    let mut rng = strata_store::synth::Rng::new(5000 + i);
    for b in 0..3 {
        let bytes: Vec<u8> = (0..3 << 20).map(|_| rng.next_u64() as u8).collect();
        fs::write(root.join(format!("node_modules/blob{b}")), bytes).unwrap();
    }
}

/// The store's durable objects (everything but its local index), to tell
/// whether a killed persist had written anything.
fn store_objects(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(store)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".local")
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

fn kill_trials(trials: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let persist = |run: &str, src: &Path| {
        let mut c = strata(&store);
        c.args(["persist", "--run", run, "--job", "a", "--root"])
            .arg(src)
            .arg("node_modules");
        c
    };
    // How long a whole persist of such a tree takes here: kills are drawn
    // from a window that starts inside it and adapts to where writing
    // begins (a kill that found nothing written moves the window's start
    // later) and ends (one that came after the persist finished moves its
    // end earlier).
    let calib = dir.path().join("calibration");
    trial_tree(&calib, u64::MAX / 2);
    ok(strata(&store).args(["run", "create", "--run", "calibration", "--job", "a"]));
    let t0 = std::time::Instant::now();
    ok(&mut persist("calibration", &calib));
    let whole = t0.elapsed().as_micros() as f64;
    let (mut lo, mut hi) = (0.2 * whole, 1.2 * whole);
    let mut rng = strata_store::synth::Rng::new(7);
    let (mut mid_write, mut early, mut finished) = (0u64, 0u64, 0u64);
    let mut last = None;
    // Trials go on past `trials` until `trials / 2` kills have landed
    // mid-write (at most four times as many trials): where a kill lands
    // depends on how busy the machine is, the coverage asked for does not.
    let mut i = 0;
    while i < trials || (mid_write * 2 < trials && i < 4 * trials) {
        let run = format!("r{i}");
        let src = dir.path().join(format!("src{i}"));
        trial_tree(&src, i);
        ok(strata(&store).args(["run", "create", "--run", &run, "--job", "a", "--job", "b:a"]));
        let before = store_objects(&store);
        let delay = rng.range(lo as u64, hi.max(lo + 1.0) as u64);
        let mut child = persist(&run, &src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let wrote = store_objects(&store) != before;
        match (status.success(), wrote) {
            (true, _) => {
                finished += 1;
                hi = (hi + delay as f64) / 2.0;
            }
            (false, true) => mid_write += 1,
            (false, false) => {
                early += 1;
                lo = (lo + delay as f64) / 2.0;
            }
        }
        // Every layer that is visible is complete; the store verifies
        // clean (re-reading every chunk every tenth trial).
        let mut verify = strata(&store);
        verify.arg("verify");
        if i % 10 == 0 {
            verify.arg("--read-data");
        }
        let out = verify.output().unwrap();
        assert!(
            out.status.success(),
            "trial {i}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The run's layer is all of the tree or nothing.
        let at = dir.path().join(format!("at{i}"));
        ok(strata(&store)
            .args(["attach", "--run", &run, "--job", "b", "--at"])
            .arg(&at));
        if at.join("node_modules").exists() {
            same_tree(&src.join("node_modules"), &at.join("node_modules"));
        } else {
            assert!(
                !status.success(),
                "trial {i}: a finished persist left no layer"
            );
        }
        fs::remove_dir_all(&at).unwrap();
        if let Some((_, old)) = last.replace((run, src)) {
            fs::remove_dir_all(old).unwrap();
        }
        i += 1;
    }
    eprintln!(
        "{i} trials: {mid_write} killed mid-write, {early} before writing, {finished} finished"
    );
    assert!(
        mid_write * 2 >= trials,
        "only {mid_write} of {i} kills landed while the persist was writing \
         ({early} before it wrote anything, {finished} after it finished)"
    );
    // The last tree, persisted again to the end, attaches whole.
    let (run, src) = last.unwrap();
    ok(&mut persist(&run, &src));
    let at = dir.path().join("final");
    ok(strata(&store)
        .args(["attach", "--run", &run, "--job", "b", "--at"])
        .arg(&at));
    same_tree(&src.join("node_modules"), &at.join("node_modules"));
    let out = ok(strata(&store).args(["verify", "--read-data"]));
    assert!(out.contains("no problems"), "{out}");
}

// Twelve CI jobs on one machine share a store: all persist and attach at
// once (more than its eight metadata slots: the last wait for one) and
// every result is right.
#[test]
fn eight_processes_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let jobs: Vec<String> = (0..8).map(|i| format!("j{i}")).collect();
    let mut create = strata(&store);
    create.args(["run", "create", "--run", "r"]);
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

/// A tree of `mib` MiB of incompressible blobs and some code-like files,
/// different for each `seed`: big enough that a persist of it takes a
/// while, so jobs started together really run together.
fn busy_tree(root: &Path, mib: usize, seed: u64) {
    strata_store::synth::generate(root, 40, seed).unwrap();
    let mut rng = strata_store::synth::Rng::new(seed ^ 0x5eed);
    for b in 0..mib {
        let bytes: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
        fs::write(root.join(format!("node_modules/blob{b}")), bytes).unwrap();
    }
}

// Four jobs on one runner persist, attach and gc one local store at once:
// no one waits for another's whole command (their lock-holding intervals,
// logged, overlap, and two never hold the same lock at once), every
// attach is byte-identical, and the store verifies clean.
#[test]
fn jobs_on_one_store_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");
    let log = d.join("locks.log");
    let jobs = ["a", "b", "c", "d"];
    let mut create = strata(&store);
    create.args(["run", "create", "--run", "r", "--job", "all:a,b,c,d"]);
    for j in jobs {
        create.arg("--job").arg(j);
    }
    ok(&mut create);
    // A layer to attach while the others persist.
    let first = d.join("src-first");
    busy_tree(&first.join("x"), 2, 99);
    ok(strata(&store).args(["run", "create", "--run", "r0", "--job", "x", "--job", "y:x"]));
    ok(strata(&store)
        .args(["persist", "--run", "r0", "--job", "x", "--root"])
        .arg(&first)
        .arg("x"));
    for (i, j) in jobs.iter().enumerate() {
        busy_tree(&d.join(format!("src-{j}/{j}")), 10, i as u64);
    }
    let spawn = |c: &mut Command| {
        c.env("STRATA_LOCK_LOG", &log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut children: Vec<_> = jobs
        .iter()
        .map(|j| {
            spawn(
                strata(&store)
                    .args(["persist", "--run", "r", "--job", j, "--root"])
                    .arg(d.join(format!("src-{j}")))
                    .arg(j),
            )
        })
        .collect();
    children.push(spawn(
        strata(&store)
            .args(["attach", "--run", "r0", "--job", "y", "--at"])
            .arg(d.join("early")),
    ));
    children.push(spawn(strata(&store).args(["gc"])));
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    same_tree(&first.join("x"), &d.join("early/x"));
    let held = lock_intervals(&log);
    // Each process held a metadata slot; gc held the gc lock too.
    assert_eq!(held.len(), 7, "{held:?}");
    // Mutual exclusion: one lock is never held by two processes at once.
    for (i, a) in held.iter().enumerate() {
        for b in &held[i + 1..] {
            let overlap = a.2 < b.3 && b.2 < a.3;
            assert!(
                !(overlap && a.1 == b.1),
                "{a:?} and {b:?} held one lock at once"
            );
        }
    }
    // Concurrency: no process's locks covered the others' whole run; at
    // some instant at least three processes held the store (one lock for
    // the whole command, as before, would allow one).
    let pids: std::collections::BTreeSet<u32> = held.iter().map(|h| h.0).collect();
    let most_at_once = held
        .iter()
        .map(|a| {
            let at = |b: &&(u32, String, u128, u128)| b.2 <= a.2 && a.2 < b.3;
            let holders: std::collections::BTreeSet<u32> =
                held.iter().filter(at).map(|b| b.0).collect();
            holders.len()
        })
        .max()
        .unwrap();
    assert!(
        most_at_once >= 3,
        "at most {most_at_once} of {} processes held the store at once: {held:?}",
        pids.len()
    );
    let at = d.join("final");
    ok(strata(&store)
        .args(["attach", "--run", "r", "--job", "all", "--at"])
        .arg(&at));
    for j in jobs {
        same_tree(&d.join(format!("src-{j}/{j}")), &at.join(j));
    }
    let out = ok(strata(&store).args(["verify", "--read-data"]));
    assert!(out.contains("no problems"), "{out}");
}

// While three jobs persist into one store, a fourth is killed (kill -9) at
// a random instant, again and again: the three always finish and attach
// byte-identical, and the store verifies clean.
#[test]
fn a_job_killed_beside_others_leaves_them_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");
    let mut rng = strata_store::synth::Rng::new(11);
    for (i, j) in ["a", "b", "c", "victim"].iter().enumerate() {
        busy_tree(&d.join(format!("src-{j}/{j}")), 3, i as u64);
    }
    for trial in 0..6u64 {
        let run = format!("r{trial}");
        ok(strata(&store).args([
            "run",
            "create",
            "--run",
            &run,
            "--job",
            "a",
            "--job",
            "b",
            "--job",
            "c",
            "--job",
            "victim",
            "--job",
            "all:a,b,c",
        ]));
        let persist = |j: &str| {
            strata(&store)
                .args(["persist", "--run", &run, "--job", j, "--root"])
                .arg(d.join(format!("src-{j}")))
                .arg(j)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut victim = persist("victim");
        let others: Vec<_> = ["a", "b", "c"].map(persist).into();
        std::thread::sleep(Duration::from_millis(rng.range(20, 400)));
        let _ = victim.kill();
        let _ = victim.wait();
        for c in others {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "trial {trial}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let at = d.join(format!("at{trial}"));
        ok(strata(&store)
            .args(["attach", "--run", &run, "--job", "all", "--at"])
            .arg(&at));
        for j in ["a", "b", "c"] {
            same_tree(&d.join(format!("src-{j}/{j}")), &at.join(j));
        }
        fs::remove_dir_all(&at).unwrap();
        let out = ok(strata(&store).args(["verify", "--read-data"]));
        assert!(out.contains("no problems"), "trial {trial}: {out}");
    }
}

/// Runs root-only setup; false where this machine does not allow it, and
/// then the test is skipped (see `skip`).
fn privileged(what: &str, cmd: &mut Command) -> bool {
    match cmd.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => skip(&format!(
            "cannot {what}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => skip(&format!("cannot {what}: {e}")),
    }
}

/// A test that cannot run here. Under `CI=true` that is a failure (CI
/// must run every test); elsewhere the test returns early, and the skip is
/// written to `skipped-tests` in Cargo's test scratch directory, which
/// `.ci/test` prints at the end, so a skip never passes unseen.
fn skip(why: &str) -> bool {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run here, and CI=true requires it to: {why}");
    }
    eprintln!("skipped: {why}");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests");
    let line = format!(
        "{test}: {}\n",
        why.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    use std::io::Write;
    let appended = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = appended {
        panic!("{test} skipped ({why}) and could not record it in {log:?}: {e}");
    }
    false
}

/// Unmounts the tmpfs when the test ends, pass or fail.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

// The store's disk fills up in the middle of a persist: the error says "no
// space left" and names the store, and the store still verifies clean.
#[test]
fn disk_full_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let mounted = privileged(
        "mount a 3 MiB tmpfs",
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(&store),
    );
    if !mounted {
        return;
    }
    let _unmount = Mount(store.clone());
    ok(strata(&store).args(["run", "create", "--run", "r", "--job", "a"]));
    // Incompressible content, four times what the disk holds.
    let src = dir.path().join("src/data");
    fs::create_dir_all(&src).unwrap();
    let mut rng = strata_store::synth::Rng::new(1);
    for i in 0..12 {
        let bytes: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
        fs::write(src.join(format!("blob{i}")), bytes).unwrap();
    }
    let out = strata(&store)
        .args(["persist", "--run", "r", "--job", "a", "--root"])
        .arg(dir.path().join("src"))
        .arg("data")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no space left") && stderr.contains(store.to_str().unwrap()),
        "{stderr}"
    );
    let verified = strata(&store)
        .args(["verify", "--read-data"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    let listed = ok(strata(&store).args(["ls", "--run", "r"]));
    assert!(listed.contains("job a: 0 layers"), "{listed}");
}

/// `strata` run as the unprivileged user `nobody`.
fn as_nobody(store: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        env!("CARGO_BIN_EXE_strata"),
        "--store",
    ])
    .arg(store);
    c.env_remove("STRATA_STORE")
        .env_remove("STRATA_RUN")
        .env_remove("STRATA_JOB");
    c
}

// A CI job runs as an ordinary user: attach keeps modes, makes read-only
// directories read-only last, chowns nothing; persisting an unreadable file
// fails naming it.
#[test]
fn an_unprivileged_user_persists_and_attaches() {
    let base = PathBuf::from(format!("/tmp/strata-nobody-{}", std::process::id()));
    fs::create_dir_all(&base).unwrap();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).unwrap();
    let cleanup = Cleanup(base.clone());
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        skip("cannot run as nobody (setpriv) here");
        return;
    }
    let src = base.join("src");
    fs::create_dir_all(src.join("out/ro")).unwrap();
    fs::write(src.join("out/ro/tool"), "#!/bin/sh\n").unwrap();
    fs::write(src.join("out/secret-ok"), "mine").unwrap();
    fs::set_permissions(src.join("out/ro/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("out/secret-ok"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("out/ro"), fs::Permissions::from_mode(0o555)).unwrap();
    // Everything belongs to nobody, as on a CI runner.
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&src)
        .status()
        .unwrap();
    assert!(chown.success());
    let store = base.join("store");
    ok(as_nobody(&store).args(["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]));
    ok(as_nobody(&store)
        .args(["persist", "--run", "r", "--job", "a", "--root"])
        .arg(&src)
        .arg("out"));
    let at = base.join("at");
    ok(as_nobody(&store)
        .args(["attach", "--run", "r", "--job", "b", "--at"])
        .arg(&at));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&at.join("out/ro")), 0o555);
    assert_eq!(mode(&at.join("out/ro/tool")), 0o755);
    assert_eq!(mode(&at.join("out/secret-ok")), 0o600);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(at.join("out/ro/tool")).unwrap().uid(), 65534);
    // Attaching again over the read-only directory works too.
    ok(as_nobody(&store)
        .args(["attach", "--run", "r", "--job", "b", "--at"])
        .arg(&at));

    fs::write(src.join("out/locked"), "no").unwrap();
    fs::set_permissions(src.join("out/locked"), fs::Permissions::from_mode(0o000)).unwrap();
    Command::new("chown")
        .args(["65534:65534"])
        .arg(src.join("out/locked"))
        .status()
        .unwrap();
    let out = as_nobody(&store)
        .args(["persist", "--run", "r", "--job", "a", "--root"])
        .arg(&src)
        .arg("out")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("out/locked") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    drop(cleanup);
}

/// Removes a directory tree (made writable first) when the test ends.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&self.0)
            .status();
        let _ = fs::remove_dir_all(&self.0);
    }
}

// The runner's disk cannot hold the workspace (or a hostile manifest claims
// a file bigger than any disk): attach refuses before writing anything.
#[test]
fn attach_refuses_what_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(strata(&store).args(["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]));
    let src = dir.path().join("src/data");
    fs::create_dir_all(&src).unwrap();
    let mut rng = strata_store::synth::Rng::new(3);
    for i in 0..3 {
        let bytes: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
        fs::write(src.join(format!("blob{i}")), bytes).unwrap();
    }
    ok(strata(&store)
        .args(["persist", "--run", "r", "--job", "a", "--root"])
        .arg(dir.path().join("src"))
        .arg("data"));
    let at = dir.path().join("at");
    fs::create_dir_all(&at).unwrap();
    let mounted = privileged(
        "mount a 1 MiB tmpfs",
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&at),
    );
    if !mounted {
        return;
    }
    let _unmount = Mount(at.clone());
    let out = strata(&store)
        .args(["attach", "--run", "r", "--job", "b", "--at"])
        .arg(&at)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("attaching needs 3145728 bytes") && stderr.contains("no file was written"),
        "{stderr}"
    );
    // Not even a directory: the tree was built in a staging directory,
    // removed with the attach's failure.
    let left: Vec<_> = fs::read_dir(&at).unwrap().collect();
    assert!(left.is_empty(), "left in the target: {left:?}");
}

// A job persists a 0600 `.env`: the store and the runner's caches are
// created private (directories 0700, objects 0600), and another local user
// (`nobody`) cannot read the packs holding it (it could, from 0644 packs
// in 0755 directories); `--group-access` opens them to the group only.
#[test]
fn the_store_and_caches_are_private_to_their_user() {
    let dir = tempfile::tempdir().unwrap();
    // Reachable by nobody up to the store, as a runner's home would be.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (store, cache, src) = (
        dir.path().join("store"),
        dir.path().join("cache"),
        dir.path().join("src"),
    );
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join(".env"), "TOKEN=hunter2-hunter2-hunter2\n").unwrap();
    fs::set_permissions(src.join(".env"), fs::Permissions::from_mode(0o600)).unwrap();
    let with_cache = |c: &mut Command| {
        c.env("STRATA_CACHE", &cache);
    };
    let mut create = strata(&store);
    with_cache(&mut create);
    ok(create.args(["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]));
    let mut persist = strata(&store);
    with_cache(&mut persist);
    ok(persist
        .args(["persist", "--run", "r", "--job", "a", "--root"])
        .arg(&src)
        .arg(".env"));
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    let mut packs = Vec::new();
    for root in [&store, &cache] {
        assert_eq!(mode(root), 0o700, "{root:?}");
        for e in walkdir::WalkDir::new(root).into_iter().map(Result::unwrap) {
            let p = e.path();
            // sled makes its own files and directories inside .local
            // (0700), where no other user reaches them.
            if p.ancestors().skip(1).any(|a| a.ends_with(".local/meta")) {
                continue;
            }
            if e.file_type().is_dir() {
                assert_eq!(mode(p), 0o700, "{p:?}");
            } else {
                assert_eq!(mode(p), 0o600, "{p:?}");
            }
            if p.starts_with(store.join("packs")) && e.file_type().is_file() {
                packs.push(p.to_path_buf());
            }
        }
    }
    assert!(!packs.is_empty());
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .output();
    if matches!(probe, Ok(ref o) if o.status.success()) {
        let read = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(&packs[0])
            .output()
            .unwrap();
        assert!(!read.status.success(), "nobody read a pack");
    } else {
        skip("cannot run as nobody (setpriv) here");
    }
    // Asked for, the group gets in; others still do not.
    let shared = dir.path().join("shared");
    let mut grouped = strata(&shared);
    with_cache(&mut grouped);
    ok(grouped
        .env("STRATA_GROUP_ACCESS", "1")
        .args(["run", "create", "--run", "r", "--job", "a"]));
    assert_eq!(mode(&shared), 0o770);
    assert_eq!(mode(&shared.join("config")), 0o660);
}

// Runners attach from a shared store mounted read-only: attach and cache
// restore work (it failed: `open .local/lock: Read-only file system`),
// recording no use; a persist fails naming the store.
#[test]
fn a_read_only_store_is_attached_from() {
    let dir = tempfile::tempdir().unwrap();
    let (store, src) = (dir.path().join("store"), dir.path().join("src"));
    fs::create_dir_all(src.join("out")).unwrap();
    fs::write(src.join("out/a.txt"), "from the shared store").unwrap();
    ok(strata(&store).args(["run", "create", "--run", "r", "--job", "a", "--job", "b:a"]));
    ok(strata(&store)
        .args(["persist", "--run", "r", "--job", "a", "--root"])
        .arg(&src)
        .arg("out"));
    ok(strata(&store)
        .args(["cache", "save", "--key", "deps-1", "--root"])
        .arg(&src)
        .arg("out"));
    let ro = dir.path().join("ro");
    fs::create_dir_all(&ro).unwrap();
    let bound = privileged(
        "bind-mount a directory",
        Command::new("mount").args(["--bind"]).arg(&store).arg(&ro),
    );
    if !bound {
        return;
    }
    let _unmount = Mount(ro.clone());
    let remounted = privileged(
        "remount it read-only",
        Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&ro),
    );
    if !remounted {
        return;
    }
    let at = dir.path().join("at");
    ok(strata(&ro)
        .args(["attach", "--run", "r", "--job", "b", "--at"])
        .arg(&at));
    same_tree(&src.join("out"), &at.join("out"));
    let restored = dir.path().join("restored");
    ok(strata(&ro)
        .args(["cache", "restore", "--key", "deps-", "--at"])
        .arg(&restored));
    same_tree(&src.join("out"), &restored.join("out"));
    let out = strata(&ro)
        .args(["persist", "--run", "r", "--job", "a", "--root"])
        .arg(&src)
        .arg("out")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(ro.to_str().unwrap()), "{stderr}");
}

// A runner whose GITHUB_EVENT_PATH is an endless file (/dev/zero) reads a
// bounded part of it and goes on: it read until no memory was left (the
// read then fails and is ignored). Measured by the child's peak RSS (GNU
// time), with its address space capped so the old behaviour ends soon.
#[test]
fn an_endless_github_event_file_is_read_with_a_bound() {
    if !Path::new("/usr/bin/time").exists() {
        skip("no /usr/bin/time to measure the peak memory with");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000; exec /usr/bin/time -f 'peak-kb=%M' \"$0\" ci --json")
        .arg(env!("CARGO_BIN_EXE_strata"))
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_RUN_ID", "1")
        .env("GITHUB_JOB", "build")
        .env("GITHUB_REF", "refs/heads/main")
        .env("GITHUB_EVENT_PATH", "/dev/zero")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let peak: u64 = stderr
        .split("peak-kb=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in {stderr}"));
    assert!(peak < 200_000, "peak RSS {peak} KB");
}
