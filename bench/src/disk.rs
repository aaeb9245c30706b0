//! The disk a run needs, checked before it starts: a run that filled the
//! disk would fail late and leave a machine without space (issue 29). What
//! a run writes: the generated trees (once, into the cache), and per tool
//! its repository and the trees it attaches (strata attaches the warm run
//! over its fresh tree; the others extract both).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Result};

/// Disk a generated tree takes per file: its content rounded up to a 4 KiB
/// block, and its share of directories and inodes. Measured on this
/// machine: 10^6 files of at most 4 KiB took 4.5 GB a side, the default
/// size mix ~14 GB.
pub fn synthetic_file_bytes(max_size: Option<u64>) -> u64 {
    const MIX: u64 = 14_000;
    match max_size {
        Some(max) => (max.div_ceil(4096) * 4096 + 500).min(MIX),
        None => MIX,
    }
}

/// Disk a tree already on disk takes (its blocks), one walk.
pub fn tree_bytes(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// What the tools write, in sides (one side: a tree's disk): per tool its
/// repository (at most half a side) and its attached trees.
pub fn tools_sides(tools: &[&str]) -> f64 {
    tools
        .iter()
        .map(|t| if t.starts_with("strata") { 1.5 } else { 2.5 })
        .sum()
}

/// Free bytes on the file system holding `path` (or its nearest existing
/// parent), and that file system's device.
#[allow(unsafe_code)]
pub(crate) fn free(path: &Path) -> Result<(u64, u64)> {
    let mut p = path;
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        bail!(
            "statvfs {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok((
        s.f_bavail as u64 * s.f_frsize as u64,
        std::fs::metadata(p)?.dev(),
    ))
}

fn gb(b: u64) -> String {
    format!("{:.1} GB", b as f64 / 1e9)
}

/// Refuses (with what it needs and what there is) unless the file systems
/// of `cache` and `work` have room for `trees` bytes in the cache and
/// `tools` bytes in the work directory, with 10% to spare. Prints what
/// the run needs either way.
pub fn check(cache: &Path, trees: u64, work: &Path, tools: u64) -> Result<()> {
    let ((cache_free, cache_dev), (work_free, work_dev)) = (free(cache)?, free(work)?);
    let need = |b: u64| b + b / 10;
    eprintln!(
        "strata-bench: this run needs about {} of disk: {} for the trees in {}, {} for the tools in {}",
        gb(trees + tools),
        gb(trees),
        cache.display(),
        gb(tools),
        work.display()
    );
    let short = if cache_dev == work_dev {
        (need(trees + tools) > work_free).then_some((trees + tools, work_free, work))
    } else if need(trees) > cache_free {
        Some((trees, cache_free, cache))
    } else {
        (need(tools) > work_free).then_some((tools, work_free, work))
    };
    if let Some((needed, free, at)) = short {
        bail!(
            "not enough disk: this run needs about {} (and 10% to spare) on the file system of {}, which has {} free; \
             free some, give --work or --cache on another disk, or run fewer files (--synthetic, --max-file-size)",
            gb(needed),
            at.display(),
            gb(free)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_larger_than_the_disk_is_refused() {
        let dir = std::env::temp_dir();
        assert!(check(&dir, 1 << 20, &dir, 1 << 20).is_ok());
        let err = check(&dir, u64::MAX / 4, &dir, 0).unwrap_err().to_string();
        assert!(err.contains("not enough disk"), "{err}");
        assert_eq!(synthetic_file_bytes(Some(4096)), 4596);
        assert_eq!(synthetic_file_bytes(None), 14_000);
    }
}
