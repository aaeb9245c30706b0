//! The `strata` command: parses arguments, calls the store library, prints.
//! All logic lives in `strata-store`; this crate only maps between the
//! command line and the library, and errors to exit codes. The arguments
//! are `args`'s, each command is a module of `commands`, and what they
//! share to open the store is `context`'s.

mod args;
mod commands;
mod context;
mod output;

use std::process::ExitCode;

use clap::Parser;
use strata_store::ErrorKind;

use args::Cli;

/// Exit codes, as documented in `--help` and docs/cli.md.
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFLICT: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;

fn main() -> ExitCode {
    few_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match commands::exec(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = error_text(&e);
            eprintln!("strata: error: {text}");
            if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
                // A workflow command: GitHub shows it as an annotation on
                // the run. Escaped as GitHub's runner unescapes messages,
                // so a path holding a newline cannot start a command.
                eprintln!("::error title=strata::{}", workflow_escape(&text));
            }
            let kind = e.downcast_ref::<strata_store::Error>().map(|e| e.kind());
            let code = exit_code(&e, kind);
            if cli.json {
                print_error_json(&text, kind.map(ErrorKind::name), code);
            }
            ExitCode::from(code)
        }
    }
}

/// The exit code of an error, by its kind, so an error a server raised
/// exits as a local one (docs/cli.md, "Exit codes").
fn exit_code(e: &anyhow::Error, kind: Option<ErrorKind>) -> u8 {
    let insecure = || {
        e.downcast_ref::<strata_server::ServeError>()
            .is_some_and(|e| matches!(e, strata_server::ServeError::InsecureAddress(_)))
    };
    match kind {
        Some(ErrorKind::Conflict) => EXIT_CONFLICT,
        Some(ErrorKind::InvalidName) => EXIT_USAGE,
        Some(ErrorKind::Unreachable) => EXIT_UNREACHABLE,
        None if insecure() => EXIT_USAGE,
        _ => EXIT_ERROR,
    }
}

/// Under `--json`, the error as a document on stdout, where the report
/// would have been (docs/cli.md, "Errors"); stderr keeps its line.
fn print_error_json(message: &str, kind: Option<&str>, code: u8) {
    let doc = serde_json::json!({
        "error": { "message": message, "kind": kind, "exit_code": code }
    });
    println!("{doc:#}");
}

/// Arguments clap refuses (exit 2), or `--help` and `--version` (exit 0);
/// a refusal is also a JSON document when `--json` was among them.
fn usage_error(e: clap::Error) -> ExitCode {
    let code = u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE);
    let _ = e.print();
    if code != 0 && std::env::args().any(|a| a == "--json") {
        let rendered = e.render().to_string();
        let line = rendered.lines().next().unwrap_or_default();
        print_error_json(line.trim_start_matches("error: "), Some("usage"), code);
    }
    ExitCode::from(code)
}

/// An error and its causes, each said once: the library's I/O errors
/// already end with their cause ("read F: Permission denied"), which the
/// chain then gives again as the next error.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.ends_with(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// A workflow command's message as GitHub's runner reads it back: `%`,
/// `\r` and `\n` escaped.
fn workflow_escape(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Caps glibc's malloc at two heap arenas, before any thread starts.
/// By default each thread that allocates gets an arena of its own (up to
/// eight per core), and the 4 MiB batch and pack buffers persist's pools
/// free stay mapped in them: persisting a 1.3 GB toolchain peaked at 240
/// MiB resident where two arenas peak at 160 MiB in the same time (one:
/// 130 MiB, a little slower; docs/benchmarks.md, "Memory").
#[allow(unsafe_code)]
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; no thread has been
    // started yet, and a refused value changes nothing.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
