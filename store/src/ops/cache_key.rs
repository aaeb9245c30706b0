//! Dependency cache keys from CircleCI-style templates:
//! `v1-deps-{{ .Branch }}-{{ checksum "package-lock.json" }}`.
//!
//! | template | becomes |
//! |---|---|
//! | `{{ checksum "FILE" }}` | the BLAKE3 of FILE's bytes, hex (FILE relative to the working directory) |
//! | `{{ .Branch }}` | `$CIRCLE_BRANCH`, `$GITHUB_HEAD_REF`, `$GITHUB_REF_NAME`, `$CI_COMMIT_REF_NAME`, `$BRANCH_NAME`: the first set |
//! | `{{ .Revision }}` | `$CIRCLE_SHA1`, `$GITHUB_SHA`, `$CI_COMMIT_SHA`, `$GIT_COMMIT`: the first set |
//! | `{{ .Environment.VAR }}` | `$VAR` |
//! | `{{ epoch }}` | the current Unix time in seconds |
//! | `{{ arch }}` | the OS and CPU, e.g. `linux-x86_64` |
//!
//! Anything unknown, an unset variable or an unreadable file is an error
//! naming it: a key silently rendered wrong would restore the wrong cache.
//! This module knows nothing about stores.

use std::path::Path;

use crate::error::{Error, Result};

/// Keys are at most this long (they become object key components).
pub const MAX_KEY_LEN: usize = 200;

/// Where a template's values come from.
pub struct KeyEnv<'a> {
    /// Reads an environment variable.
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// The time (Unix seconds), for `{{ epoch }}`.
    pub now: i64,
    /// The directory `{{ checksum }}` paths are relative to.
    pub dir: &'a Path,
}

impl std::fmt::Debug for KeyEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEnv").field("dir", &self.dir).finish()
    }
}

const BRANCH_VARS: &[&str] = &[
    "CIRCLE_BRANCH",
    "GITHUB_HEAD_REF",
    "GITHUB_REF_NAME",
    "CI_COMMIT_REF_NAME",
    "BRANCH_NAME",
];
const REVISION_VARS: &[&str] = &["CIRCLE_SHA1", "GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT"];

fn bad(template: &str, reason: String) -> Error {
    Error::CacheKey {
        template: template.to_string(),
        reason,
    }
}

/// Renders `template` into a cache key.
pub fn render(template: &str, env: &KeyEnv<'_>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| bad(template, "a {{ has no closing }}".into()))?;
        out.push_str(&expand(template, after[..end].trim(), env)?);
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err(bad(template, "a }} has no opening {{".into()));
    }
    out.push_str(rest);
    if out.is_empty() || out.len() > MAX_KEY_LEN {
        return Err(bad(
            template,
            format!(
                "the key must be 1 to {MAX_KEY_LEN} bytes, not {}",
                out.len()
            ),
        ));
    }
    if out.chars().any(char::is_control) {
        return Err(bad(template, "the key holds a control character".into()));
    }
    Ok(out)
}

fn first_set(env: &KeyEnv<'_>, vars: &[&str]) -> Option<String> {
    vars.iter()
        .find_map(|v| (env.var)(v).filter(|s| !s.is_empty()))
}

fn expand(template: &str, expr: &str, env: &KeyEnv<'_>) -> Result<String> {
    if let Some(arg) = expr.strip_prefix("checksum") {
        let arg = arg.trim();
        let file = arg
            .strip_prefix('"')
            .and_then(|a| a.strip_suffix('"'))
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                bad(
                    template,
                    format!("checksum takes a quoted file name, not {arg}"),
                )
            })?;
        let path = env.dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| {
            bad(
                template,
                format!("checksum: cannot read {}: {e}", path.display()),
            )
        })?;
        return Ok(blake3::hash(&bytes).to_hex().to_string());
    }
    match expr {
        ".Branch" => first_set(env, BRANCH_VARS).ok_or_else(|| {
            bad(
                template,
                format!(".Branch: none of {} is set", BRANCH_VARS.join(", ")),
            )
        }),
        ".Revision" => first_set(env, REVISION_VARS).ok_or_else(|| {
            bad(
                template,
                format!(".Revision: none of {} is set", REVISION_VARS.join(", ")),
            )
        }),
        "epoch" => Ok(env.now.to_string()),
        "arch" => Ok(format!(
            "{}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )),
        _ => match expr.strip_prefix(".Environment.") {
            Some(var) if !var.is_empty() => {
                (env.var)(var).ok_or_else(|| bad(template, format!("${var} is not set")))
            }
            _ => Err(bad(template, format!("unknown template {{{{ {expr} }}}}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_circleci_templates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package-lock.json"), b"{}").unwrap();
        let vars = |v: &str| match v {
            "CIRCLE_BRANCH" => Some("main".to_string()),
            "GITHUB_SHA" => Some("abc123".to_string()),
            "NODE" => Some("20".to_string()),
            _ => None,
        };
        let env = KeyEnv {
            var: &vars,
            now: 1_700_000_000,
            dir: dir.path(),
        };
        let key = render(
            "v1-{{ .Branch }}-{{.Revision}}-{{ .Environment.NODE }}-{{ checksum \"package-lock.json\" }}",
            &env,
        )
        .unwrap();
        assert_eq!(
            key,
            format!("v1-main-abc123-20-{}", blake3::hash(b"{}").to_hex())
        );
        assert_eq!(render("e{{ epoch }}", &env).unwrap(), "e1700000000");
        assert!(render("{{ arch }}", &env).unwrap().contains('-'));
        for bad in [
            "{{ .Environment.MISSING }}",
            "{{ checksum \"nope.json\" }}",
            "{{ checksum nope }}",
            "{{ .Whatever }}",
            "v1-{{ .Branch",
            "",
        ] {
            assert!(render(bad, &env).is_err(), "{bad}");
        }
        let no_branch = |_: &str| None;
        let env2 = KeyEnv {
            var: &no_branch,
            ..env
        };
        let e = render("{{ .Branch }}", &env2).unwrap_err().to_string();
        assert!(e.contains("CIRCLE_BRANCH"), "{e}");
    }
}
