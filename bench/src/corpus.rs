//! The trees a benchmark runs on: two directories given by the user, a
//! checked-in corpus materialized once into a cache directory, or a
//! generated `node_modules`-like tree of any size.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::measure::run;

#[derive(Debug, Clone)]
pub struct Corpus {
    pub name: String,
    /// The tree one run persists, and the tree the next run persists. Both
    /// end in the same directory name (`node_modules`, `site-packages`), as
    /// the same job's output does on two runs.
    pub base: PathBuf,
    pub next: PathBuf,
}

pub fn from_dirs(base: &Path, next: &Path) -> Result<Corpus> {
    for d in [base, next] {
        if !d.is_dir() {
            bail!("{} is not a directory", d.display());
        }
    }
    Ok(Corpus {
        name: "custom".into(),
        base: fs::canonicalize(base)?,
        next: fs::canonicalize(next)?,
    })
}

/// A corpus under `corpora/NAME/{base,next}`: `package.json` with
/// `package-lock.json` (npm) or `requirements.txt` (pip), installed once
/// into `cache/NAME/<hash of the inputs>/`.
pub fn materialize(corpora: &Path, name: &str, cache: &Path) -> Result<Corpus> {
    let dir = corpora.join(name);
    if !dir.is_dir() {
        let known: Vec<String> = fs::read_dir(corpora)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        bail!(
            "no corpus {name:?} in {} (corpora: {})",
            corpora.display(),
            known.join(", ")
        );
    }
    // The cache key: a hash of the inputs, so an edited lockfile rebuilds.
    let mut inputs = Vec::new();
    for side in ["base", "next"] {
        for f in ["package.json", "package-lock.json", "requirements.txt"] {
            if let Ok(bytes) = fs::read(dir.join(side).join(f)) {
                inputs.extend_from_slice(format!("{side}/{f}:{}\n", bytes.len()).as_bytes());
                inputs.extend_from_slice(&bytes);
            }
        }
    }
    let key = strata_store::ChunkId::of(&inputs).to_hex()[..16].to_string();
    let out = cache.join(name).join(&key);
    let mut trees = Vec::new();
    for side in ["base", "next"] {
        let src = dir.join(side);
        let dst = out.join(side);
        let tree =
            install(&src, &dst).with_context(|| format!("materializing corpus {name} ({side})"))?;
        trees.push(tree);
    }
    Ok(Corpus {
        name: name.into(),
        base: trees[0].clone(),
        next: trees[1].clone(),
    })
}

/// Installs one side of a corpus into `dst` unless done before; returns the tree.
fn install(src: &Path, dst: &Path) -> Result<PathBuf> {
    let done = dst.join(".materialized");
    let npm = src.join("package-lock.json").exists();
    let tree = dst.join(if npm { "node_modules" } else { "site-packages" });
    if done.exists() {
        return Ok(tree);
    }
    if dst.exists() {
        fs::remove_dir_all(dst)?;
    }
    fs::create_dir_all(dst)?;
    if npm {
        for f in ["package.json", "package-lock.json"] {
            fs::copy(src.join(f), dst.join(f))?;
        }
        run(
            "npm install --ignore-scripts --no-audit --no-fund --loglevel=error",
            dst,
            &[],
        )?;
    } else if src.join("requirements.txt").exists() {
        run(
            &format!(
                "python3 -m pip install --quiet --disable-pip-version-check --no-deps \
                 --only-binary=:all: --target site-packages -r '{}'",
                src.join("requirements.txt").display()
            ),
            dst,
            &[],
        )?;
    } else {
        bail!(
            "{} has neither package-lock.json nor requirements.txt",
            src.display()
        );
    }
    fs::write(&done, b"")?;
    Ok(tree)
}

/// The machine's Rust toolchains (`--corpus toolchain`): large files
/// (compilers, rlibs, docs), the kind of tree users cache with
/// `Swatinem/rust-cache`. Every developer and CI machine has one. The
/// base is the default toolchain, the next another installed one
/// (nightly, say) or the same again; both copied once into the cache
/// (`cp -a`), so they end in the same name and are not changed under the
/// benchmark by `rustup update`.
pub fn toolchain(cache: &Path) -> Result<Corpus> {
    let out = cache.join("toolchain");
    let done = out.join(".materialized");
    let base = out.join("base/toolchain");
    let next = out.join("next/toolchain");
    if !done.exists() {
        let sysroot = run("rustc --print sysroot", Path::new("."), &[])
            .context("finding the Rust toolchain (is rustup installed?)")?
            .1;
        let sysroot = PathBuf::from(sysroot.trim());
        let toolchains = sysroot.parent().context("the sysroot has no parent")?;
        let other = fs::read_dir(toolchains)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !p.is_symlink())
            .filter(|p| fs::canonicalize(p).ok() != fs::canonicalize(&sysroot).ok())
            .max_by_key(|p| fs::read_dir(p).map(|d| d.count()).unwrap_or(0))
            .unwrap_or_else(|| sysroot.clone());
        if out.exists() {
            fs::remove_dir_all(&out)?;
        }
        for (from, to) in [(&sysroot, &base), (&other, &next)] {
            fs::create_dir_all(to.parent().expect("a parent"))?;
            run(
                &format!("cp -a '{}/.' '{}'", from.display(), to.display()),
                Path::new("."),
                &[],
            )?;
        }
        fs::write(&done, b"")?;
    }
    Ok(Corpus {
        name: "toolchain".into(),
        base,
        next,
    })
}

/// A generated tree of about `files` files and its next run (1% of files
/// changed, one package added), made once in the cache; with `max_size`,
/// no file is larger (a million files in a few GiB of disk).
fn synthetic_name(files: u64, max_size: Option<u64>) -> String {
    match max_size {
        Some(max) => format!("synthetic-{files}-max{max}"),
        None => format!("synthetic-{files}"),
    }
}

/// Whether `synthetic` would find its trees generated already.
pub fn synthetic_ready(files: u64, max_size: Option<u64>, cache: &Path) -> bool {
    let name = synthetic_name(files, max_size);
    cache.join(name).join(".materialized").exists()
}

pub fn synthetic(files: u64, max_size: Option<u64>, cache: &Path) -> Result<Corpus> {
    let name = synthetic_name(files, max_size);
    let out = cache.join(&name);
    let base = out.join("base/node_modules");
    let next = out.join("next/node_modules");
    let done = out.join(".materialized");
    if !done.exists() {
        if out.exists() {
            fs::remove_dir_all(&out)?;
        }
        for side in ["base", "next"] {
            let max = max_size.unwrap_or(u64::MAX);
            strata_store::synth::generate_capped(&out.join(side), files, 1, max)?;
        }
        strata_store::synth::mutate(&next, 0.01, 2)?;
        fs::write(&done, b"")?;
    }
    Ok(Corpus { name, base, next })
}

/// A generated base tree of `files` files at `dir/base/tree`, and `n`
/// next-run trees (`dir/<name><i>/tree`), each a copy of the base with 1%
/// of its files changed, each its own change: the trees' bytes too.
pub fn next_run_trees(
    dir: &Path,
    name: &str,
    n: usize,
    files: u64,
) -> Result<(PathBuf, Vec<PathBuf>, u64)> {
    let base = dir.join("base/tree");
    let summary = strata_store::synth::generate(&base, files, 1)?;
    let mut trees = Vec::new();
    for i in 0..n {
        let tree = dir.join(format!("{name}{i}/tree"));
        fs::create_dir_all(tree.parent().context("has a parent")?)?;
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&base)
            .arg(&tree)
            .status()?;
        if !status.success() {
            bail!("copying {} failed", base.display());
        }
        strata_store::synth::mutate(&tree, 0.01, 100 + i as u64)?;
        trees.push(tree);
    }
    Ok((base, trees, summary.bytes))
}
