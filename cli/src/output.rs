//! Everything the command prints: one summary line per command for people,
//! or JSON with `--json`.

use std::path::Path;

use serde::Serialize;
use strata_store::attach::AttachReport;
use strata_store::backend::Traffic;
use strata_store::caches::{RestoreReport, SaveReport};
use strata_store::demo::{DemoReport, Step};
use strata_store::gc::GcReport;
use strata_store::persist::PersistReport;
use strata_store::rerun::RerunReport;
use strata_store::stats::{RunListing, StoreListing, StoreStats};
use strata_store::verify::VerifyReport;
use strata_store::{Graph, JobName, Observer, RunName};
use strata_store::{JobResult, JobStatus};

/// Draws the library's progress events on stderr.
pub struct Printer;

impl Observer for Printer {
    fn waiting_for_lock(&self, store: &Path) {
        eprintln!(
            "strata: waiting for another strata process to release the store {} \
             (8 processes use it already)",
            store.display()
        );
    }

    fn waiting_for_target(&self, target: &Path) {
        eprintln!(
            "strata: waiting for another strata attach into {} to finish",
            target.display()
        );
    }
}

/// How `--progress` shows a persist's or attach's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, else `plain`.
    Auto,
    /// One line, redrawn in place.
    Tty,
    /// A line every 10% or 5 seconds: CI logs keep every line.
    Plain,
    /// Those lines as JSON objects.
    Json,
    /// Nothing.
    None,
}

/// Draws progress on stderr (and says when the store is held by another
/// process). No crate: one line, redrawn on a terminal, or a line now and
/// then in a log, is all it draws.
pub struct ProgressPrinter {
    mode: ProgressMode,
    /// When a line was last shown, and the last tenth shown.
    shown: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl ProgressPrinter {
    /// The printer `--progress` asks for (`--json` makes `auto` plain: a
    /// redrawn line would only clutter a captured stderr).
    pub fn new(mode: ProgressMode, json: bool) -> Self {
        use std::io::IsTerminal;
        let mode = match mode {
            ProgressMode::Auto if !json && std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Self {
            mode,
            shown: std::sync::Mutex::new((None, 0)),
        }
    }
}

impl Observer for ProgressPrinter {
    fn waiting_for_lock(&self, store: &Path) {
        Printer.waiting_for_lock(store);
    }

    fn waiting_for_target(&self, target: &Path) {
        Printer.waiting_for_target(target);
    }

    fn progress(&self, p: &strata_store::Progress) {
        let now = std::time::Instant::now();
        let tenth = (p.done_bytes * 10).checked_div(p.total_bytes).unwrap_or(10);
        let mut shown = self.shown.lock().expect("poisoned");
        let (last, last_tenth) = *shown;
        let since = last.map(|l| now - l);
        let due = match self.mode {
            ProgressMode::None | ProgressMode::Auto => false,
            ProgressMode::Tty => since.is_none_or(|s| s.as_millis() >= 100) || tenth == 10,
            ProgressMode::Plain | ProgressMode::Json => {
                tenth > last_tenth || since.is_some_and(|s| s.as_secs() >= 5)
            }
        };
        if !due {
            return;
        }
        *shown = (Some(now), tenth.max(last_tenth));
        let percent = percent(p.done_bytes, p.total_bytes);
        match self.mode {
            ProgressMode::Tty => {
                eprint!(
                    "\r\x1b[Kstrata {}: {percent:.0}% ({} of {})",
                    p.command,
                    bytes(p.done_bytes),
                    bytes(p.total_bytes)
                );
                if tenth == 10 {
                    eprint!("\r\x1b[K");
                }
            }
            ProgressMode::Plain => eprintln!(
                "strata {}: {percent:.0}% ({} of {})",
                p.command,
                bytes(p.done_bytes),
                bytes(p.total_bytes)
            ),
            ProgressMode::Json => eprintln!(
                "{}",
                serde_json::json!({ "progress": p, "percent": percent.round() })
            ),
            ProgressMode::None | ProgressMode::Auto => {}
        }
    }
}

/// A collapsible group around a command's lines in the CI's log: GitHub's
/// `::group::` / `::endgroup::` workflow commands, GitLab's
/// `section_start` / `section_end` markers (collapsed), Buildkite's `~~~`
/// header (a collapsed group, ended by the next header). On stderr, where
/// the progress lines are; closed when dropped.
pub struct LogGroup {
    end: Option<String>,
}

impl LogGroup {
    /// Opens a group titled `title` in the log of `ci`'s system (none
    /// outside a CI).
    pub fn open(ci: Option<&strata_store::ci::CiContext>, title: &str) -> LogGroup {
        use strata_store::ci::CiSystem;
        let now = strata_store::util::system_clock();
        let end = match ci.map(|c| c.system) {
            Some(CiSystem::GithubActions) => {
                eprintln!("::group::{title}");
                Some("::endgroup::".to_string())
            }
            Some(CiSystem::Gitlab) => {
                eprintln!("\x1b[0Ksection_start:{now}:strata[collapsed=true]\r\x1b[0K{title}");
                Some("\x1b[0Ksection_end:{now}:strata\r\x1b[0K".to_string())
            }
            Some(CiSystem::Buildkite) => {
                eprintln!("~~~ {title}");
                None
            }
            _ => None,
        };
        LogGroup { end }
    }
}

impl Drop for LogGroup {
    fn drop(&mut self) {
        if let Some(end) = &self.end {
            let now = strata_store::util::system_clock();
            eprintln!("{}", end.replace("{now}", &now.to_string()));
        }
    }
}

fn print_json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("reports serialize")
    );
}

/// 34037 -> "34,037".
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units with one decimal: "391.2 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

pub fn run_created(json: bool, run: &RunName, graph: &Graph, created: bool) {
    if json {
        print_json(&serde_json::json!({ "run": run, "created": created, "jobs": graph.jobs() }));
    } else if created {
        println!("created run {run} with jobs {}", graph.job_list());
    } else {
        println!("run {run} already exists with the same jobs");
    }
}

/// "1 file", "2 files".
pub fn plural(n: u64, word: &str) -> String {
    format!("{} {word}{}", count(n), if n == 1 { "" } else { "s" })
}

pub fn persist_line(r: &PersistReport) -> String {
    format!(
        "persisted {} ({}) in {:.1} s: {} new, {:.1}% reused{}{}",
        plural(r.totals.files, "file"),
        bytes(r.totals.bytes),
        r.seconds,
        bytes(r.bytes_new),
        percent(r.bytes_reused, r.totals.bytes),
        unchanged(r.files_unchanged),
        wire(&r.network)
    )
}

/// ", N unchanged (stat cache)" when the stat cache spared reading files.
fn unchanged(files: u64) -> String {
    match files {
        0 => String::new(),
        n => format!(", {} unchanged (stat cache)", count(n)),
    }
}

/// "; network: X sent, Y received in N requests (M round trips)" for a
/// networked store, else nothing. The round trips are those on the
/// critical path: what latency costs the command.
pub fn wire(t: &Traffic) -> String {
    if t.requests == 0 {
        String::new()
    } else {
        format!(
            "; network: {} sent, {} received in {} ({} on the critical path)",
            bytes(t.sent),
            bytes(t.received),
            plural(t.requests, "request"),
            plural(t.round_trips, "round trip")
        )
    }
}

pub fn persisted(json: bool, r: &PersistReport) {
    if json {
        print_json(r);
    } else {
        println!("{}", persist_line(r));
    }
    step_summary(
        "persist",
        &[
            ("run / job", format!("{} / {}", r.run, r.job)),
            ("files", count(r.totals.files)),
            ("bytes", bytes(r.totals.bytes)),
            (
                "new",
                format!(
                    "{} ({:.1}%)",
                    bytes(r.bytes_new),
                    100.0 - percent(r.bytes_reused, r.totals.bytes)
                ),
            ),
            ("sent", bytes(r.network.sent)),
            ("received", bytes(r.network.received)),
            ("time", format!("{:.1} s", r.seconds)),
        ],
    );
}

/// Inside GitHub Actions, a table of what the command did in the job's
/// summary page (`$GITHUB_STEP_SUMMARY`, a file the runner renders as
/// Markdown). Best effort: a summary that cannot be written costs nothing.
fn step_summary(command: &str, rows: &[(&str, String)]) {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") else {
        return;
    };
    let mut table = format!("### strata {command}\n\n|");
    for (k, _) in rows {
        table.push_str(&format!(" {k} |"));
    }
    table.push_str("\n|");
    table.push_str(&"---|".repeat(rows.len()));
    table.push_str("\n|");
    for (_, v) in rows {
        table.push_str(&format!(" {v} |"));
    }
    table.push_str("\n\n");
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        let _ = f.write_all(table.as_bytes());
    }
}

pub fn attach_line(r: &AttachReport) -> String {
    let mut jobs: Vec<&str> = r.layers.iter().map(|l| l.job.as_str()).collect();
    jobs.dedup();
    let from = if jobs.is_empty() {
        "no upstream layers".to_string()
    } else {
        format!(
            "{} ({})",
            plural(r.layers.len() as u64, "layer"),
            jobs.join(", ")
        )
    };
    let cached = if r.write.bytes_from_cache > 0 {
        format!(
            ", {} from the runner's cache",
            bytes(r.write.bytes_from_cache)
        )
    } else {
        String::new()
    };
    format!(
        "attached {} ({}) from {from} in {:.1} s: {} read from the store{cached}, {} already in place{}{}",
        plural(r.files, "file"),
        bytes(r.bytes),
        r.seconds,
        bytes(r.write.bytes_from_store + r.manifest_bytes_from_store),
        plural(r.write.files_in_place, "file"),
        unchanged(r.write.files_unchanged),
        wire(&r.network)
    )
}

pub fn attached(json: bool, r: &AttachReport) {
    step_summary(
        "attach",
        &[
            ("run / job", format!("{} / {}", r.run, r.job)),
            ("layers", count(r.layers.len() as u64)),
            ("files", count(r.files)),
            ("bytes", bytes(r.bytes)),
            (
                "from the store",
                bytes(r.write.bytes_from_store + r.manifest_bytes_from_store),
            ),
            ("received", bytes(r.network.received)),
            ("time", format!("{:.1} s", r.seconds)),
        ],
    );
    if json {
        print_json(r);
    } else {
        println!("{}", attach_line(r));
    }
}

pub fn run_listing(json: bool, l: &RunListing) {
    if json {
        return print_json(l);
    }
    let rerun = match &l.rerun_of {
        Some(r) => format!(", a rerun of {r}"),
        None => String::new(),
    };
    let state = if l.expired { "expired" } else { "expires" };
    println!("run {}{rerun}: {state} on {}", l.run, l.expires_on);
    for j in &l.jobs {
        let requires: Vec<&str> = j.requires.iter().map(|r| r.as_str()).collect();
        let req = if requires.is_empty() {
            String::new()
        } else {
            format!(" (requires {})", requires.join(", "))
        };
        let status = match j.status {
            Some(JobStatus::Success) => ", succeeded",
            Some(JobStatus::Failed) => ", failed",
            None => "",
        };
        let reused = match &j.reused_from {
            Some(r) => format!(", layers kept from {r}"),
            None => String::new(),
        };
        println!(
            "  job {}{req}: {}{status}{reused}",
            j.job,
            plural(j.layers.len() as u64, "layer")
        );
        for layer in &j.layers {
            println!(
                "    layer {} manifest {}: {} files, {}",
                layer.seq,
                layer.manifest.short(),
                count(layer.files),
                bytes(layer.bytes)
            );
        }
    }
}

pub fn store_stats(json: bool, s: &StoreStats) {
    if json {
        return print_json(s);
    }
    println!(
        "{}: {} runs, {} layers, {} manifests, {} chunks in {} packs; {} of files stored in {} ({:.1}x)",
        s.location,
        count(s.runs),
        count(s.layers),
        count(s.manifests),
        count(s.chunks),
        count(s.packs),
        bytes(s.logical_bytes),
        bytes(s.stored_bytes),
        s.dedup_ratio
    );
    if s.caches > 0 {
        println!(
            "{}: {} of files (stored with the workspaces above)",
            plural(s.caches, "cache entry"),
            bytes(s.cache_bytes)
        );
    }
    println!(
        "gc could reclaim {} now and {} more once condemned packs pass the grace period ({} expired runs, {} expired caches)",
        bytes(s.gc.bytes_reclaimed),
        bytes(s.gc.bytes_pending),
        count(s.gc.runs_expired.len() as u64),
        count(s.gc.caches_expired)
    );
}

pub fn store_listing(json: bool, l: &StoreListing) {
    if json {
        return print_json(l);
    }
    if l.runs.is_empty() && l.caches.is_empty() {
        println!("no runs and no caches");
    }
    for r in &l.runs {
        let state = if r.expired { "expired" } else { "expires" };
        println!(
            "run {}: {}, {}; {state} on {}",
            r.run,
            plural(r.layers, "layer"),
            bytes(r.bytes),
            r.expires_on
        );
    }
    for c in &l.caches {
        println!(
            "cache {:?}: {} files, {}; saved {}, expires on {}",
            c.key,
            count(c.files),
            bytes(c.bytes),
            c.saved_on,
            c.expires_on
        );
    }
}

pub fn reran(json: bool, r: &RerunReport) {
    if json {
        return print_json(r);
    }
    let names = |v: &[JobName]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(|j| j.as_str()).collect::<Vec<_>>().join(", ")
        }
    };
    println!(
        "created run {} from {}: rerun {}; kept {} ({}, {} of files, not copied; {} written, {}){}",
        r.run,
        r.from,
        names(&r.rerun),
        names(&r.reused),
        plural(r.layers_reused, "layer"),
        bytes(r.bytes_reused),
        plural(r.objects_written, "ref"),
        bytes(r.bytes_written),
        wire(&r.network)
    );
}

/// What `strata ci` saw: each value and the variable it came from.
pub fn ci(json: bool, ci: &strata_store::ci::CiContext, run: &RunName, job: &JobName) {
    if json {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            ci: &'a strata_store::ci::CiContext,
            store_run: &'a RunName,
            store_job: &'a JobName,
        }
        return print_json(&Shown {
            ci,
            store_run: run,
            store_job: job,
        });
    }
    println!("ci: {:?}", ci.system);
    let line = |what: &str, f: Option<&strata_store::ci::Found>| {
        if let Some(f) = f {
            println!("{what}: {} (from {})", f.value, f.from);
        }
    };
    line("run", Some(&ci.run));
    if let Some(a) = ci.attempt {
        println!("attempt: {a}");
    }
    line("job", Some(&ci.job));
    line("leg", ci.leg.as_ref());
    line("branch", ci.branch.as_ref());
    line("default branch", ci.default_branch.as_ref());
    line("commit", ci.commit.as_ref());
    line("checkout", ci.checkout.as_ref());
    println!("config: {} (from {})", ci.config.display(), ci.config_from);
    println!("store run: {run}");
    println!("store job: {job}");
}

pub fn finished(json: bool, run: &RunName, job: &JobName, r: &JobResult) {
    if json {
        return print_json(r);
    }
    let status = match r.status {
        JobStatus::Success => "succeeded",
        JobStatus::Failed => "failed",
    };
    println!("job {job} of run {run} {status}");
}

pub fn cache_saved(json: bool, r: &SaveReport) {
    if json {
        return print_json(r);
    }
    if r.saved {
        println!(
            "saved cache {:?}: {} ({}) in {:.1} s: {} new{}",
            r.key,
            plural(r.totals.files, "file"),
            bytes(r.totals.bytes),
            r.seconds,
            bytes(r.bytes_new),
            wire(&r.network)
        );
    } else {
        println!(
            "cache {:?} exists (saved {}); keys are immutable, nothing saved",
            r.key,
            r.existing_since.as_deref().unwrap_or("earlier")
        );
    }
}

pub fn cache_restored(json: bool, keys: &[String], r: &RestoreReport) {
    if json {
        return print_json(r);
    }
    match (&r.restored_key, &r.totals, &r.write) {
        (Some(key), Some(t), Some(w)) => {
            let how = if r.exact {
                "exact match".to_string()
            } else {
                format!("prefix {:?}", r.matched.as_deref().unwrap_or(""))
            };
            println!(
                "restored cache {key:?} ({how}, saved {}): {} ({}) in {:.1} s: {} read from the store, {} already in place{}",
                r.saved.as_deref().unwrap_or("?"),
                plural(t.files, "file"),
                bytes(t.bytes),
                r.seconds,
                bytes(w.bytes_from_store),
                plural(w.files_in_place, "file"),
                wire(&r.network)
            );
        }
        _ => println!("no cache matched {}", keys.join(", ")),
    }
}

pub fn collected(json: bool, r: &GcReport) {
    if json {
        return print_json(r);
    }
    // What it did in the past tense; a dry run says what it would do.
    let did = |past: &str, present: &str| {
        if r.dry_run {
            format!("would {present}")
        } else {
            past.to_string()
        }
    };
    let expired: Vec<&str> = r.runs_expired.iter().map(|r| r.as_str()).collect();
    println!(
        "gc: {} {}{} and {}; {} live manifests, {} live chunks in {} packs",
        did("dropped", "drop"),
        plural(expired.len() as u64, "expired run"),
        if expired.is_empty() {
            String::new()
        } else {
            format!(" ({})", expired.join(", "))
        },
        plural(r.caches_expired, "expired cache"),
        count(r.live_manifests),
        count(r.live_chunks),
        count(r.packs)
    );
    println!(
        "gc: {} {} ({}), {} {}, {} {}; {} in {} condemned packs wait for the grace period",
        did("deleted", "delete"),
        plural(r.packs_deleted, "pack"),
        bytes(r.bytes_reclaimed),
        did("rewrote", "rewrite"),
        plural(r.packs_rewritten, "pack"),
        did("condemned", "condemn"),
        plural(r.packs_condemned, "pack"),
        bytes(r.bytes_pending),
        count(r.packs_pending)
    );
}

pub fn verified(json: bool, r: &VerifyReport) {
    if json {
        return print_json(r);
    }
    for p in &r.problems {
        let affects = if p.affects.is_empty() {
            String::new()
        } else {
            format!(" (affects {})", p.affects.join(", "))
        };
        println!("problem: {}: {}{affects}", p.object, p.detail);
    }
    println!(
        "verified {} index objects, {} packs{}, {} chunks, {} runs, {}: {}",
        count(r.index_objects),
        count(r.packs),
        if r.bytes_read > 0 {
            format!(" ({} read)", bytes(r.bytes_read))
        } else {
            String::new()
        },
        count(r.chunks),
        count(r.runs),
        plural(r.layers, "layer"),
        if r.problems.is_empty() {
            "no problems".to_string()
        } else {
            plural(r.problems.len() as u64, "problem")
        }
    );
}

pub fn demo(json: bool, d: &DemoReport, kept: bool) {
    if json {
        let steps: Vec<serde_json::Value> = d
            .steps
            .iter()
            .map(|s| match s {
                Step::RunCreated { run, jobs } => {
                    serde_json::json!({"run_created": run, "jobs": jobs})
                }
                Step::Persisted(r) => serde_json::json!({ "persisted": r }),
                Step::Attached(r) => serde_json::json!({ "attached": r }),
                Step::Origin { job, path, from } => {
                    serde_json::json!({"origin": {"job": job, "path": path, "from": from}})
                }
            })
            .collect();
        return print_json(&serde_json::json!({ "store": d.store, "steps": steps }));
    }
    for s in &d.steps {
        match s {
            Step::RunCreated { run, jobs } => println!("\nrun {run}: jobs {jobs}"),
            Step::Persisted(r) => println!("  {:<14} {}", r.job.as_str(), persist_line(r)),
            Step::Attached(r) => println!("  {:<14} {}", r.job.as_str(), attach_line(r)),
            Step::Origin { job, path, from } => {
                println!("  {:<14} sees {path} from {from}", job.as_str())
            }
        }
    }
    if kept {
        println!(
            "\nstore and job directories kept in {}",
            d.store.parent().unwrap_or(&d.store).display()
        );
    }
}
