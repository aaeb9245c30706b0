//! Running one command and measuring it: wall time, CPU time (user +
//! system, including the command's own children, as for a `tar | zstd`
//! pipeline) and peak resident memory, from `wait4`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One measured run of a command.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Sample {
    pub wall_s: f64,
    pub cpu_s: f64,
    /// Largest resident set of the command or any child it waited for.
    pub peak_rss_bytes: u64,
}

/// Runs `sh -c script` in `dir` and measures it; returns the sample and
/// the command's stdout. A failing command is an error carrying its stderr.
pub fn run(script: &str, dir: &Path, env: &[(&str, &str)]) -> Result<(Sample, String)> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out_file = capture_file()?;
    let err_file = capture_file()?;
    cmd.stdout(Stdio::from(out_file.0.try_clone()?))
        .stderr(Stdio::from(err_file.0.try_clone()?))
        .stdin(Stdio::null());
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting `{script}`"))?;
    let (status, usage) = wait4(child.id() as i32)?;
    let wall_s = started.elapsed().as_secs_f64();
    let stdout = std::fs::read_to_string(&out_file.1).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_file.1).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file.1);
    let _ = std::fs::remove_file(&err_file.1);
    if !std::process::ExitStatus::from_raw(status).success() {
        bail!("`{script}` failed in {}: {}", dir.display(), stderr.trim());
    }
    Ok((
        Sample {
            wall_s,
            cpu_s: usage.0,
            peak_rss_bytes: usage.1,
        },
        stdout,
    ))
}

/// A file to capture a command's output in (a pipe could fill and stall it).
fn capture_file() -> Result<(std::fs::File, std::path::PathBuf)> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("strata-bench-{}-{n}.out", std::process::id()));
    Ok((std::fs::File::create(&p)?, p))
}

/// Waits for `pid`; returns its wait status, CPU seconds and peak RSS.
/// `std` does not expose the child's resource usage, hence `wait4`.
#[allow(unsafe_code)]
fn wait4(pid: i32) -> Result<(i32, (f64, u64))> {
    let mut status = 0;
    // SAFETY: `rusage` is plain old data that wait4 fills in; both
    // pointers are valid for the duration of the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = secs(usage.ru_utime) + secs(usage.ru_stime);
    Ok((status, (cpu, usage.ru_maxrss as u64 * 1024)))
}

/// What a repository takes, as `du -sb` counts it (`--exclude` each of
/// `skip`): the apparent bytes of every file, directory and symlink under
/// `path`, itself included, each inode once (0 if it does not exist).
pub fn disk_bytes(path: &Path, skip: &[&str]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_entry(|e| !skip.iter().any(|s| e.file_name() == *s))
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.nlink() == 1 || m.is_dir() || seen.insert((m.dev(), m.ino())))
        .map(|m| m.len())
        .sum()
}

/// Bytes of all regular files under `path` (0 if it does not exist),
/// skipping directories named in `skip`: what a tree holds.
pub fn tree_bytes(path: &Path, skip: &[&str]) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_entry(|e| !skip.iter().any(|s| e.file_name() == *s))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
