//! The docs cannot drift from the code: docs/cli.md names every command and
//! option clap parses and no other (old spellings only in their table), and
//! every source file and test docs/ cites exists, each cited test in its
//! file. Included by `e2e.rs`, so no binary of its own.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn help(path: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "strata {path:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a `--help` lists (not `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every long option a `--help` lists (not `--help` or `--version`).
fn options(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-")
                .and_then(|r| r.split_once(", "))
                .map_or(l, |(_, r)| r);
            let name = l.strip_prefix("--")?.split([' ', '=', '<']).next()?;
            Some(format!("--{name}"))
        })
        .filter(|o| o != "--help" && o != "--version")
        .collect()
}

/// Every command path clap knows (`["run", "create"]`, `["gc"]`) and every
/// long option it knows.
fn clap_commands_and_options() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut commands, mut opts) = (BTreeSet::new(), BTreeSet::new());
    let mut todo = vec![vec![]];
    while let Some(path) = todo.pop() {
        let path: Vec<String> = path;
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        opts.extend(options(&text));
        let subs = subcommands(&text);
        if subs.is_empty() && !path.is_empty() {
            commands.insert(path.join(" "));
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            todo.push(p);
        }
    }
    (commands, opts)
}

/// Long options written in `text` (in code spans and synopsis lines).
fn doc_options(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '-') {
            continue;
        }
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if name.len() > 1 && !name.ends_with('-') {
            found.insert(format!("--{name}"));
        }
    }
    found
}

/// The old spellings docs/cli.md lists (the first column of the table
/// under "Old spellings still work").
fn old_spellings(text: &str) -> BTreeSet<String> {
    let table = text
        .split("Old spellings still work")
        .nth(1)
        .expect("docs/cli.md lists the old spellings");
    let rows: String = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1).map(|c| format!("{c}\n")))
        .collect();
    doc_options(&rows)
}

// A user reads docs/cli.md: every command and option strata parses is
// there, and every option there is one strata parses (or an old spelling
// it still takes, in its table).
#[test]
fn docs_cli_names_every_command_and_option_clap_parses_and_no_other() {
    let doc = fs::read_to_string(repo().join("docs/cli.md")).unwrap();
    let (commands, opts) = clap_commands_and_options();
    let synopsis: String = doc
        .lines()
        .skip_while(|l| *l != "```")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| format!("{l}\n"))
        .collect();
    for command in &commands {
        let written = synopsis.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let want: Vec<&str> = command.split(' ').collect();
            words.windows(want.len()).any(|w| w == want.as_slice())
        });
        assert!(written, "docs/cli.md's synopsis has no `strata {command}`");
    }
    let written = doc_options(&doc);
    let missing: Vec<_> = opts.difference(&written).collect();
    assert!(missing.is_empty(), "docs/cli.md does not name {missing:?}");
    let old = old_spellings(&doc);
    let unknown: Vec<_> = written
        .difference(&opts)
        .filter(|o| !old.contains(*o))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/cli.md names options strata does not parse: {unknown:?}"
    );
}

/// Source paths docs cite (`store/src/x.rs`, `tests/e2e.rs::name`), with
/// the test or function named after `::`, if any.
fn citations(text: &str) -> Vec<(String, Option<String>)> {
    const ROOTS: [&str; 10] = [
        "tests/",
        "store/",
        "server/",
        "cli/",
        "bench/",
        "proxy/",
        "fuzz/",
        ".ci/",
        "release/",
        "wrappers/",
    ];
    const EXTS: [&str; 6] = [".rs", ".sh", ".py", ".toml", ".yml", ".js"];
    let mut out = Vec::new();
    let token_char = |c: char| c.is_ascii_alphanumeric() || "_./-:".contains(c);
    for token in text.split(|c: char| !token_char(c)) {
        let token = token.trim_end_matches(['.', ':']);
        if !ROOTS.iter().any(|r| token.starts_with(r)) {
            continue;
        }
        let (path, name) = match token.split_once("::") {
            Some((p, n)) => (p, Some(n.to_string())),
            None => (token, None),
        };
        if EXTS.iter().any(|e| path.ends_with(e)) {
            out.push((path.to_string(), name));
        }
    }
    out
}

// A reader follows a doc to the code or the test that shows a claim: the
// file is there, and so is the test it names.
#[test]
fn every_source_path_and_test_docs_cite_exists() {
    let mut docs: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.push(repo().join("README.md"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in docs {
        let text = fs::read_to_string(&doc).unwrap();
        for (path, name) in citations(&text) {
            checked += 1;
            let file = repo().join(&path);
            let Ok(source) = fs::read_to_string(&file) else {
                broken.push(format!("{}: {path} does not exist", doc.display()));
                continue;
            };
            if let Some(name) = name {
                let defined = source.match_indices(&format!("fn {name}")).any(|(i, m)| {
                    let after = source[i + m.len()..].chars().next();
                    !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if !defined {
                    broken.push(format!("{}: {path} has no fn {name}", doc.display()));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} citations found: is the reader broken?"
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
