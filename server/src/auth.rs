//! Tokens, namespaces and scopes: who may do what (`--auth FILE`).
//!
//! The file is YAML:
//!
//! ```yaml
//! tokens:
//!   - name: team-a-ci          # for the access log
//!     token: "long random"     # or token_blake3: <hex of its BLAKE3 hash>
//!     namespace: team-a
//!     scope: write             # read | write
//!     cache_keys: ["ref:refs/pull/"]   # optional: the only cache keys it may save
//! ```
//!
//! Tokens are compared by their BLAKE3 hashes (a constant-time comparison),
//! so the file may hold hashes instead of the tokens themselves. Knows
//! nothing about HTTP beyond the two answers it chooses between.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    name: String,
    token: Option<String>,
    token_blake3: Option<String>,
    namespace: String,
    scope: Scope,
    #[serde(default)]
    cache_keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    tokens: Vec<TokenSpec>,
}

#[derive(Debug, Clone)]
struct Grant {
    name: String,
    hash: blake3::Hash,
    namespace: String,
    scope: Scope,
    /// The prefixes of the cache keys it may save under, if limited (a pull
    /// request's CI token: `ref:refs/pull/`, so it never writes an entry
    /// the default branch restores).
    cache_keys: Option<Vec<String>>,
}

/// The server's tokens.
#[derive(Debug, Clone)]
pub struct Auth {
    grants: Vec<Grant>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one the server does not know: 401.
    Unauthenticated(&'static str),
    /// A known token without the right to this: 403.
    Forbidden(String),
}

impl Auth {
    pub fn load(path: &Path) -> Result<Auth, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Auth::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Auth, String> {
        let file: AuthFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let mut grants = Vec::new();
        for t in file.tokens {
            strata_store::protocol::validate_namespace(&t.namespace)
                .map_err(|e| format!("token {}: namespace: {e}", t.name))?;
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
            if grants.iter().any(|g: &Grant| g.hash == hash) {
                return Err(format!("token {}: the same token is listed twice", t.name));
            }
            grants.push(Grant {
                name: t.name,
                hash,
                namespace: t.namespace,
                scope: t.scope,
                cache_keys: t.cache_keys,
            });
        }
        if grants.is_empty() {
            return Err("no tokens".into());
        }
        Ok(Auth { grants })
    }

    /// Checks a bearer token for `scope` in `namespace`; returns the
    /// token's name.
    pub fn check(
        &self,
        token: Option<&str>,
        namespace: &str,
        scope: Scope,
    ) -> Result<String, Refusal> {
        let token = token.ok_or(Refusal::Unauthenticated("no token"))?;
        let hash = blake3::hash(token.as_bytes());
        // blake3::Hash's equality is constant-time.
        let grant = self
            .grants
            .iter()
            .find(|g| g.hash == hash)
            .ok_or(Refusal::Unauthenticated("unknown token"))?;
        if grant.namespace != namespace {
            return Err(Refusal::Forbidden(format!(
                "token {} is not for namespace {namespace}",
                grant.name
            )));
        }
        if grant.scope < scope {
            return Err(Refusal::Forbidden(format!(
                "token {} may only read namespace {namespace}",
                grant.name
            )));
        }
        Ok(grant.name.clone())
    }

    /// Whether `token` (already checked for writing) may save a cache
    /// entry under `cache_key`: a token limited by `cache_keys` only under
    /// one of those prefixes.
    pub fn may_save_cache(&self, token: Option<&str>, cache_key: &str) -> Result<(), Refusal> {
        let hash = blake3::hash(token.unwrap_or_default().as_bytes());
        let Some(grant) = self.grants.iter().find(|g| g.hash == hash) else {
            return Err(Refusal::Unauthenticated("unknown token"));
        };
        match &grant.cache_keys {
            Some(prefixes) if !prefixes.iter().any(|p| cache_key.starts_with(p.as_str())) => {
                Err(Refusal::Forbidden(format!(
                    "token {} may save caches only under {} (not {cache_key:?})",
                    grant.name,
                    prefixes.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_namespaces() {
        let hashed = blake3::hash(b"reader-token-0123456789").to_hex();
        let auth = Auth::parse(&format!(
            "tokens:\n  - {{name: w, token: writer-token-0123456789, namespace: a, scope: write}}\n  \
             - {{name: r, token_blake3: \"{hashed}\", namespace: a, scope: read}}\n"
        ))
        .unwrap();
        let w = Some("writer-token-0123456789");
        let r = Some("reader-token-0123456789");
        assert_eq!(auth.check(w, "a", Scope::Write).unwrap(), "w");
        assert_eq!(auth.check(r, "a", Scope::Read).unwrap(), "r");
        assert!(matches!(
            auth.check(r, "a", Scope::Write),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            auth.check(w, "b", Scope::Read),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(
            auth.check(None, "a", Scope::Read),
            Err(Refusal::Unauthenticated("no token"))
        );
        assert_eq!(
            auth.check(Some("nope-nope-nope-nope"), "a", Scope::Read),
            Err(Refusal::Unauthenticated("unknown token"))
        );
        // A token limited to pull-request cache keys.
        let pr = Auth::parse(
            "tokens:\n  - {name: pr, token: pr-token-0123456789ab, namespace: a, scope: write, \
             cache_keys: [\"ref:refs/pull/\"]}\n",
        )
        .unwrap();
        let t = Some("pr-token-0123456789ab");
        assert!(pr.may_save_cache(t, "ref:refs/pull/7/merge:deps").is_ok());
        assert!(matches!(
            pr.may_save_cache(t, "ref:refs/heads/main:deps"),
            Err(Refusal::Forbidden(_))
        ));
        assert!(auth.may_save_cache(w, "anything").is_ok());
        assert!(Auth::parse("tokens: []").is_err());
        assert!(
            Auth::parse("tokens:\n  - {name: x, token: short, namespace: a, scope: read}\n")
                .is_err()
        );
    }
}
