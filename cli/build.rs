//! Records what `strata --version` says beside the version: the commit it
//! was built from and the compiler. A release build sets `STRATA_COMMIT`
//! (release/build.sh: the commit, `-dirty` if the tree had changes);
//! otherwise it is read from git when there is one, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=STRATA_COMMIT");
    let commit = std::env::var("STRATA_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // A development build follows the checkout's HEAD.
            for path in ["HEAD", "refs/heads"] {
                if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = run(&rustc, &["--version"]).unwrap_or_else(|| "rustc unknown".into());
    println!("cargo:rustc-env=STRATA_COMMIT={commit}");
    println!("cargo:rustc-env=STRATA_RUSTC={rustc}");
}

fn git(args: &[&str]) -> Option<String> {
    run("git", args)
}

/// What `program args` prints, trimmed, if it succeeds.
fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| text.trim().to_string())
}
