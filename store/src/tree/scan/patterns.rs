//! The paths a user names for persist: plain paths kept, globs as CI
//! users write them (`dist/**/*.js`) expanded under the root, exclusions
//! (`!dist/**/*.map`) compiled for the scan to apply. Knows nothing of
//! what the paths hold.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Whether a path as the user wrote it is a glob (`dist/**/*.js`) or an
/// exclusion (`!dist/**/*.map`) rather than a path.
pub(crate) fn is_pattern(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.starts_with('!') || s.contains(['*', '?', '['])
}

/// A glob as CI users write them: `*` within one path component, `**`
/// across any, matched against paths relative to the root.
pub(crate) fn glob(pattern: &str) -> Result<globset::GlobMatcher> {
    let bad = |detail: &str| Error::BadPattern {
        pattern: pattern.to_string(),
        detail: detail.to_string(),
    };
    if pattern.starts_with('/') {
        return Err(bad(
            "a glob is relative to the root (persist's --root, the layers' roots)",
        ));
    }
    if Path::new(pattern)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(bad("a glob may not climb out of the root with `..`"));
    }
    globset::GlobBuilder::new(pattern.trim_start_matches("./"))
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::BadPattern {
            pattern: pattern.to_string(),
            detail: e.kind().to_string(),
        })
}

/// The directory a glob's matches all lie under: its components before the
/// first one holding a wildcard.
fn literal_prefix(pattern: &str) -> PathBuf {
    Path::new(pattern.trim_start_matches("./"))
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect()
}

/// Expands the globs among `paths` into the paths under `root` they match
/// (walking only below each glob's literal prefix), keeps plain paths, and
/// returns the exclusions (`!glob`) to apply to the whole result. A glob
/// that matches nothing is an error naming it, unless `allow_empty`.
pub(super) fn expand(
    root_abs: &Path,
    paths: &[PathBuf],
    allow_empty: bool,
) -> Result<(Vec<PathBuf>, Vec<globset::GlobMatcher>)> {
    let mut out = Vec::new();
    let mut excludes = Vec::new();
    for given in paths {
        if !is_pattern(given) {
            out.push(given.clone());
            continue;
        }
        let text = given.to_string_lossy();
        if let Some(rest) = text.strip_prefix('!') {
            excludes.push(glob(rest)?);
            continue;
        }
        let matcher = glob(&text)?;
        let prefix = literal_prefix(&text);
        let start = root_abs.join(&prefix);
        let mut matched = 0;
        if start.is_dir() {
            for entry in walkdir::WalkDir::new(&start).min_depth(1) {
                let entry = entry.map_err(|e| {
                    let path = e.path().unwrap_or(&start).to_path_buf();
                    Error::io("list", path, e.into())
                })?;
                let rel = entry
                    .path()
                    .strip_prefix(root_abs)
                    .expect("the walk stays below the root");
                if matcher.is_match(rel) {
                    out.push(rel.to_path_buf());
                    matched += 1;
                }
            }
        }
        if matched == 0 && !allow_empty {
            return Err(Error::GlobMatchedNothing {
                pattern: text.into_owned(),
                root: root_abs.to_path_buf(),
            });
        }
    }
    Ok((out, excludes))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A glob's matches lie below its literal components; a glob may not
    // leave the root, by an absolute path or by `..`.
    #[test]
    fn globs_stay_under_the_root() {
        assert_eq!(literal_prefix("./dist/js/**/*.js"), Path::new("dist/js"));
        assert_eq!(literal_prefix("*.map"), Path::new(""));
        assert!(is_pattern(Path::new("!dist/**/*.map")) && !is_pattern(Path::new("dist")));
        for bad in ["/etc/*", "dist/../../*"] {
            assert!(matches!(glob(bad), Err(Error::BadPattern { .. })), "{bad}");
        }
        let js = glob("dist/*.js").unwrap();
        assert!(js.is_match("dist/a.js") && !js.is_match("dist/sub/a.js"));
    }

    // A glob that matches nothing is an error naming it, unless allowed.
    #[test]
    fn a_glob_matching_nothing_is_refused_unless_allowed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("dist")).unwrap();
        std::fs::write(t.path().join("dist/a.js"), "").unwrap();
        let given = [PathBuf::from("dist/*.js"), PathBuf::from("!dist/*.map")];
        let (found, excludes) = expand(t.path(), &given, false).unwrap();
        assert_eq!(
            (found, excludes.len()),
            (vec![PathBuf::from("dist/a.js")], 1)
        );
        let none = [PathBuf::from("dist/*.css")];
        let err = expand(t.path(), &none, false).unwrap_err();
        assert!(matches!(err, Error::GlobMatchedNothing { .. }), "{err}");
        assert!(expand(t.path(), &none, true).unwrap().0.is_empty());
    }
}
