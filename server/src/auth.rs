//! Tokens: which grant each token carries (`--auth FILE`). What a grant
//! allows is `strata_store::access`'s, not this module's.
//!
//! The file is YAML:
//!
//! ```yaml
//! tokens:
//!   - name: team-a-ci          # for the access log
//!     token: "long random"     # or token_blake3: <hex of its BLAKE3 hash>
//!     namespace: team-a
//!     scope: write             # read | write | admin | metrics
//!     runs: ["ref:refs/pull/"]         # optional: the only refs whose runs it may write
//!     cache_keys: ["ref:refs/pull/"]   # optional: the only cache keys it may save
//! ```
//!
//! A token of scope `metrics` scrapes `GET /metrics` and nothing else; it
//! names no namespace, since the metrics count every one.
//!
//! Tokens are compared by their BLAKE3 hashes (a constant-time
//! comparison), so the file may hold hashes instead of the tokens
//! themselves. Knows nothing about HTTP.

use serde::Deserialize;
use strata_store::access::{Grant, Role};

/// What a token may do at most (`access::Role`, as the file spells it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
    Metrics,
}

/// A token as the config file gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenSpec {
    name: String,
    token: Option<String>,
    token_blake3: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    scope: Scope,
    #[serde(default)]
    runs: Option<Vec<String>>,
    #[serde(default)]
    cache_keys: Option<Vec<String>>,
}

/// The server's tokens and the grant of each.
#[derive(Debug, Clone)]
pub struct Auth {
    tokens: Vec<(blake3::Hash, Grant)>,
}

/// Why a token is refused before anything else is looked at: `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated(pub &'static str);

impl Auth {
    /// The tokens of a config file's `tokens:` list (`crate::config`
    /// reads the file).
    pub(crate) fn from_specs(specs: Vec<TokenSpec>) -> Result<Auth, String> {
        let mut tokens: Vec<(blake3::Hash, Grant)> = Vec::new();
        for t in specs {
            let namespace = match (t.scope, t.namespace) {
                (Scope::Metrics, None) => String::new(),
                (Scope::Metrics, Some(_)) => {
                    return Err(format!(
                        "token {}: scope metrics is for the whole server: give no namespace",
                        t.name
                    ))
                }
                (_, None) => return Err(format!("token {}: no namespace", t.name)),
                (_, Some(ns)) => {
                    strata_store::protocol::validate_namespace(&ns)
                        .map_err(|e| format!("token {}: namespace: {e}", t.name))?;
                    ns
                }
            };
            let hash = match (&t.token, &t.token_blake3) {
                (Some(tok), None) if tok.len() >= 16 => blake3::hash(tok.as_bytes()),
                (Some(_), None) => {
                    return Err(format!("token {}: shorter than 16 characters", t.name))
                }
                (None, Some(hex)) => blake3::Hash::from_hex(hex)
                    .map_err(|e| format!("token {}: token_blake3: {e}", t.name))?,
                _ => {
                    return Err(format!(
                        "token {}: give exactly one of token and token_blake3",
                        t.name
                    ))
                }
            };
            if tokens.iter().any(|(h, _)| *h == hash) {
                return Err(format!("token {}: the same token is listed twice", t.name));
            }
            let role = match t.scope {
                Scope::Read => Role::Read,
                Scope::Write => Role::Write,
                Scope::Admin => Role::Admin,
                Scope::Metrics => Role::Metrics,
            };
            tokens.push((
                hash,
                Grant {
                    name: t.name,
                    namespace,
                    role,
                    runs: t.runs,
                    cache_keys: t.cache_keys,
                    run_names: None,
                    jobs: None,
                },
            ));
        }
        if tokens.is_empty() {
            return Err("no tokens".into());
        }
        Ok(Auth { tokens })
    }

    /// The grant of a bearer token.
    pub fn grant(&self, token: Option<&str>) -> Result<&Grant, Unauthenticated> {
        let token = token.ok_or(Unauthenticated("no token"))?;
        let hash = blake3::hash(token.as_bytes());
        // blake3::Hash's equality is constant-time.
        self.tokens
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, g)| g)
            .ok_or(Unauthenticated("unknown token"))
    }
}

/// The token of an `Authorization` header's value: the scheme `Bearer`
/// is matched without regard to case (RFC 9110, section 11.1).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grants of a file's `tokens:` list.
    fn parse(yaml: &str) -> Result<Auth, String> {
        #[derive(Deserialize)]
        struct File {
            tokens: Vec<TokenSpec>,
        }
        let file: File = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        Auth::from_specs(file.tokens)
    }

    #[test]
    fn tokens_carry_their_grants() {
        let hashed = blake3::hash(b"reader-token-0123456789").to_hex();
        let auth = parse(&format!(
            "tokens:\n  - {{name: w, token: writer-token-0123456789, namespace: a, scope: write}}\n  \
             - {{name: r, token_blake3: \"{hashed}\", namespace: a, scope: read}}\n  \
             - {{name: pr, token: pr-token-0123456789ab, namespace: a, scope: write, \
             runs: [\"ref:refs/pull/\"], cache_keys: [\"ref:refs/pull/\"]}}\n  \
             - {{name: ops, token: admin-token-0123456789, namespace: a, scope: admin}}\n  \
             - {{name: prom, token: metrics-token-0123456789, scope: metrics}}\n"
        ))
        .unwrap();
        let g = auth.grant(Some("writer-token-0123456789")).unwrap();
        assert_eq!((g.name.as_str(), g.role), ("w", Role::Write));
        assert_eq!(
            auth.grant(Some("reader-token-0123456789")).unwrap().role,
            Role::Read
        );
        let pr = auth.grant(Some("pr-token-0123456789ab")).unwrap();
        assert_eq!(
            pr.runs.as_deref(),
            Some(&["ref:refs/pull/".to_string()][..])
        );
        assert_eq!(
            auth.grant(Some("admin-token-0123456789")).unwrap().role,
            Role::Admin
        );
        assert_eq!(
            auth.grant(Some("metrics-token-0123456789")).unwrap().role,
            Role::Metrics
        );
        assert_eq!(auth.grant(None), Err(Unauthenticated("no token")));
        assert_eq!(
            auth.grant(Some("nope-nope-nope-nope")),
            Err(Unauthenticated("unknown token"))
        );
        assert!(parse("tokens: []").is_err());
        assert!(
            parse("tokens:\n  - {name: x, token: short, namespace: a, scope: read}\n").is_err()
        );
        for bad in [
            "{name: x, token: metrics-token-0123456789, namespace: a, scope: metrics}",
            "{name: x, token: reader-token-0123456789, scope: read}",
        ] {
            assert!(parse(&format!("tokens:\n  - {bad}\n")).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_old_auth_file_still_loads() {
        let auth = parse(
            "tokens:\n  - {name: pr, token: pr-token-0123456789ab, namespace: a, scope: write, \
             cache_keys: [\"ref:refs/pull/\"]}\n",
        )
        .unwrap();
        let g = auth.grant(Some("pr-token-0123456789ab")).unwrap();
        assert_eq!(g.role, Role::Write);
        assert_eq!(g.runs, None);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for h in ["Bearer t0k", "bearer t0k", "BEARER t0k"] {
            assert_eq!(bearer(h), Some("t0k"), "{h}");
        }
        assert_eq!(bearer("Basic dXNlcg=="), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
