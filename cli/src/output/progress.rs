//! Progress on stderr: the library's events drawn for a terminal, a CI's
//! log or a program, and the CI's collapsible log groups.

use std::path::Path;

use strata_store::Observer;

use super::{bytes, percent};

/// Draws the library's progress events on stderr.
pub(crate) struct Printer;

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
pub(crate) enum ProgressMode {
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
pub(crate) struct ProgressPrinter {
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
pub(crate) struct LogGroup {
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
