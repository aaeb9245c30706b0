//! The server's config file: its tokens and its limits, one YAML file
//! (`strata serve --config FILE`; `--auth FILE` reads the same file, so an
//! auth file of an earlier version is a config file with tokens only).
//! Flags given on the command line win over the file. docs/deploy.md
//! shows it whole. Knows nothing about HTTP; what a token may do is
//! `strata_store::access`'s.
//!
//! ```yaml
//! tokens:
//!   - {name: web-ci, token: "…", namespace: web, scope: write}
//! limits:                      # each optional; the flags' defaults otherwise
//!   max_body_mib: 64
//!   header_timeout_secs: 30
//!   body_idle_timeout_secs: 60
//!   max_connections: 1024
//!   rate_limit: 0              # requests per second per token; 0: none
//! budgets:                     # storage budgets, in the CLI's size syntax
//!   default: 50GiB             # every namespace (`--max-size` wins)
//!   namespaces: {web: 200GiB}  # one namespace's own
//! ```

use std::path::Path;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::auth::{Auth, TokenSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    tokens: Vec<TokenSpec>,
    #[serde(default)]
    limits: LimitsSpec,
    #[serde(default)]
    budgets: BudgetsSpec,
}

/// The `budgets:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetsSpec {
    default: Option<String>,
    #[serde(default)]
    namespaces: BTreeMap<String, String>,
}

/// Storage budgets: gc (scheduled or asked for) keeps each namespace under
/// its own, else the default (docs/lifecycle.md, "Storage budget").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budgets {
    /// Every namespace without its own.
    pub default: Option<u64>,
    /// Namespaces' own budgets, in bytes.
    pub namespaces: BTreeMap<String, u64>,
}

impl Budgets {
    /// The budget of namespace `ns`, if any.
    pub fn of(&self, ns: &str) -> Option<u64> {
        self.namespaces.get(ns).copied().or(self.default)
    }

    fn parse(spec: BudgetsSpec) -> Result<Budgets, String> {
        let size = |what: &str, s: &str| {
            strata_store::size::parse_size(s).map_err(|e| format!("budgets: {what}: {e}"))
        };
        let mut namespaces = BTreeMap::new();
        for (ns, s) in &spec.namespaces {
            namespaces.insert(ns.clone(), size(ns, s)?);
        }
        Ok(Budgets {
            default: spec
                .default
                .as_deref()
                .map(|s| size("default", s))
                .transpose()?,
            namespaces,
        })
    }
}

/// The limits a config file sets; `None` leaves the flag's value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub max_body_mib: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub body_idle_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub rate_limit: Option<f64>,
}

/// A server's config file, read.
#[derive(Debug, Clone)]
pub struct ServerFile {
    pub auth: Auth,
    pub limits: LimitsSpec,
    pub budgets: Budgets,
}

impl ServerFile {
    pub fn load(path: &Path) -> Result<ServerFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        ServerFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ServerFile, String> {
        let spec: FileSpec = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if spec.limits.header_timeout_secs == Some(0)
            || spec.limits.body_idle_timeout_secs == Some(0)
            || spec.limits.max_connections == Some(0)
        {
            return Err("limits: a timeout or max_connections of 0 would serve nobody".into());
        }
        Ok(ServerFile {
            auth: Auth::from_specs(spec.tokens)?,
            limits: spec.limits,
            budgets: Budgets::parse(spec.budgets)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_sizes_per_namespace_over_a_default() {
        const TOKEN: &str =
            "tokens:\n  - {name: w, token: writer-token-0123456789, namespace: a, scope: write}\n";
        let f = ServerFile::parse(&format!(
            "{TOKEN}budgets: {{default: 10GiB, namespaces: {{web: 1.5TiB}}}}\n"
        ))
        .unwrap();
        assert_eq!(f.budgets.of("web"), Some(3 << 39));
        assert_eq!(f.budgets.of("other"), Some(10 << 30));
        let none = ServerFile::parse(TOKEN).unwrap();
        assert_eq!(none.budgets.of("web"), None);
    }

    #[test]
    fn a_config_file_holds_tokens_and_limits() {
        let f = ServerFile::parse(
            "tokens:\n  - {name: w, token: writer-token-0123456789, namespace: a, scope: write}\n\
             limits: {header_timeout_secs: 5, max_connections: 64}\n",
        )
        .unwrap();
        assert_eq!(f.limits.header_timeout_secs, Some(5));
        assert_eq!(f.limits.max_connections, Some(64));
        assert_eq!(f.limits.max_body_mib, None);
        assert!(f.auth.grant(Some("writer-token-0123456789")).is_ok());
        // An auth file of an earlier version is a config file.
        let old = ServerFile::parse(
            "tokens:\n  - {name: r, token: reader-token-0123456789, namespace: a, scope: read}\n",
        )
        .unwrap();
        assert_eq!(old.limits, LimitsSpec::default());
        assert_eq!(old.budgets, Budgets::default());
        for bad in [
            "tokens: []\nlimits: {max_connections: 0}\n",
            "tokens:\n  - {name: w, token: writer-token-0123456789, namespace: a, scope: write}\nlimits: {nope: 1}\n",
            "tokens:\n  - {name: w, token: writer-token-0123456789, namespace: a, scope: write}\nbudgets: {default: 10GB}\n",
            "tokens:\n  - {name: w, token: writer-token-0123456789, namespace: a, scope: write}\nbudgets: {namespaces: {web: lots}}\n",
        ] {
            assert!(ServerFile::parse(bad).is_err(), "{bad}");
        }
    }
}
