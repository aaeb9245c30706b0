//! What every command's report shares: JSON, counts and sizes for people,
//! the network summary, and GitHub's step summary. Each command renders
//! its own report (`commands/`); progress and the CI's log groups are
//! `progress`'s.

mod progress;

pub(crate) use progress::{LogGroup, Printer, ProgressMode, ProgressPrinter};

use serde::Serialize;
use strata_store::backend::Traffic;

/// Prints a report as JSON, its totals in the one shape every report
/// uses (`with_totals`).
pub(crate) fn print_json<T: Serialize>(value: &T) {
    let mut doc = serde_json::to_value(value).expect("reports serialize");
    with_totals(&mut doc);
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("values serialize")
    );
}

/// What a tree or an entry holds, as every report says it (docs/cli.md,
/// "Totals"): `"totals": {"files", "bytes"}` and, where known, `"dirs"`,
/// `"symlinks"`, `"hardlinks"`. The library's reports say it flat in some
/// places (attach, `ls`); any object with a `files` and a `bytes` count
/// gets them moved into its `totals`. `skipped` (what an `--only` left)
/// is in that shape itself.
fn with_totals(doc: &mut serde_json::Value) {
    const KEYS: [&str; 5] = ["files", "dirs", "symlinks", "hardlinks", "bytes"];
    match doc {
        serde_json::Value::Array(items) => items.iter_mut().for_each(with_totals),
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key != "totals" && key != "skipped" {
                    with_totals(value);
                }
            }
            let counts = |k: &str| map.get(k).is_some_and(serde_json::Value::is_u64);
            if counts("files") && counts("bytes") && !map.contains_key("totals") {
                let totals: serde_json::Map<_, _> = KEYS
                    .iter()
                    .filter_map(|k| Some((k.to_string(), map.remove(*k)?)))
                    .collect();
                map.insert("totals".into(), totals.into());
            }
        }
        _ => {}
    }
}

/// 34037 -> "34,037".
pub(crate) fn count(n: u64) -> String {
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
pub(crate) fn bytes(n: u64) -> String {
    strata_store::size::format_size(n)
}

pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// "1 file", "2 files".
pub(crate) fn plural(n: u64, word: &str) -> String {
    format!("{} {word}{}", count(n), if n == 1 { "" } else { "s" })
}

/// ", N unchanged (stat cache)" when the stat cache spared reading files.
pub(crate) fn unchanged(files: u64) -> String {
    match files {
        0 => String::new(),
        n => format!(", {} unchanged (stat cache)", count(n)),
    }
}

/// "; only dist, docs/*.md: 997 files (1.2 MiB) outside them left alone"
/// for an `--only` attach or restore, else nothing.
pub(crate) fn skipped(only: &[String], t: &strata_store::format::manifest::Totals) -> String {
    if only.is_empty() {
        return String::new();
    }
    let mut other = plural(t.files, "file");
    if t.symlinks + t.hardlinks > 0 {
        other += &format!(", {}", plural(t.symlinks + t.hardlinks, "link"));
    }
    format!(
        "; only {}: {other} ({}) outside it left alone",
        only.join(", "),
        bytes(t.bytes)
    )
}

/// "; network: X sent, Y received in N requests (M round trips)" for a
/// networked store, else nothing. The round trips are those on the
/// critical path: what latency costs the command.
pub(crate) fn wire(t: &Traffic) -> String {
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

/// Inside GitHub Actions, a table of what the command did in the job's
/// summary page (`$GITHUB_STEP_SUMMARY`, a file the runner renders as
/// Markdown). Best effort: a summary that cannot be written costs nothing.
pub(crate) fn step_summary(command: &str, rows: &[(&str, String)]) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::with_totals;

    #[test]
    fn flat_totals_move_into_totals_and_nested_ones_stay() {
        let mut doc = json!({
            "files": 2, "dirs": 1, "bytes": 9, "files_written": 2,
            "totals_elsewhere": [{"files": 1, "bytes": 3, "key": "k"}],
            "persisted": {"totals": {"files": 4, "bytes": 5}},
            "runs": [{"bytes": 7, "layers": 1}],
        });
        with_totals(&mut doc);
        assert_eq!(
            doc,
            json!({
                "totals": {"files": 2, "dirs": 1, "bytes": 9}, "files_written": 2,
                "totals_elsewhere": [{"totals": {"files": 1, "bytes": 3}, "key": "k"}],
                "persisted": {"totals": {"files": 4, "bytes": 5}},
                "runs": [{"bytes": 7, "layers": 1}],
            })
        );
    }
}
