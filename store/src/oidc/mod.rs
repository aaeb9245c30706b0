//! A CI job's verified OIDC claims, as grants of `access`: which rules of
//! the server's `--oidc` file match the claims, the namespace each names,
//! and the bindings the claims allow (docs/deploy.md, "CI identities"):
//! the one run the job may write (GitHub `run_id` + `run_attempt`, GitLab
//! `pipeline_id`, Buildkite `pipeline_slug` + `build_number`), the one job
//! (Buildkite's `step_key`), and the one cache scope, computed by
//! `ci::scope::scopes`, the function the runner uses, from facts read out
//! of the claims instead of the environment. A grant is the same
//! `access::Grant` a static token carries: there is no second model.
//!
//! Knows nothing about JWTs, keys or HTTP: the server verifies a token's
//! signature, issuer, audience and times, then hands the claims here.

// What a request reaches must not panic: every unwrap or expect here is
// refused unless its line says why it cannot fail.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::access::{Grant, Role};
use crate::ci::CiSystem;
use crate::error::{Error, Result};

mod claims;

/// The claims of a verified token.
pub type Claims = Map<String, Value>;

/// Which CI's claim set an issuer signs (the `ci:` of an issuer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ci {
    /// GitHub Actions.
    Github,
    /// GitLab CI.
    Gitlab,
    /// CircleCI (its v2 token).
    Circleci,
    /// Buildkite.
    Buildkite,
}

impl Ci {
    /// The CI system whose environment the runner reads.
    pub fn system(self) -> CiSystem {
        match self {
            Ci::Github => CiSystem::GithubActions,
            Ci::Gitlab => CiSystem::Gitlab,
            Ci::Circleci => CiSystem::Circleci,
            Ci::Buildkite => CiSystem::Buildkite,
        }
    }

    /// Its name in the `--oidc` file and in the server's hello.
    pub fn name(self) -> &'static str {
        self.system().oidc_name()
    }

    /// The CI of a runner's system.
    pub fn of(system: CiSystem) -> Ci {
        match system {
            CiSystem::GithubActions => Ci::Github,
            CiSystem::Gitlab => Ci::Gitlab,
            CiSystem::Circleci => Ci::Circleci,
            CiSystem::Buildkite => Ci::Buildkite,
        }
    }
}

/// What a rule grants at most (`access::Role`, as the file spells it).
/// There is no default admin: a rule says `role: admin` or grants less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RoleSpec {
    /// Read the namespace.
    Read,
    /// Write the job's own run and cache scope (the default).
    #[default]
    Write,
    /// Also gc and delete.
    Admin,
}

/// A rule of the `--oidc` file: tokens of `issuer` whose every claim in
/// `claims` matches its pattern get `role` in the namespace `namespace`
/// renders to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The issuer's `name` in the file.
    pub issuer: String,
    /// Claim → glob (`*` within a `/`-separated segment, `**` across
    /// them); a claim that is a list matches when one element does.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// The namespace: literal text with `{claim}` placeholders, each
    /// replaced by the claim's value in `namespace_part`'s encoding.
    pub namespace: String,
    /// What it grants at most.
    #[serde(default)]
    pub role: RoleSpec,
}

impl Rule {
    /// Checks what can be checked before any token: its patterns compile
    /// and its template is closed.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (claim, pattern) in &self.claims {
            glob(pattern).map_err(|e| format!("claim {claim}: {e}"))?;
        }
        let opens = self.namespace.matches('{').count();
        if opens != self.namespace.matches('}').count() {
            return Err(format!("namespace {:?}: unbalanced braces", self.namespace));
        }
        Ok(())
    }
}

fn glob(pattern: &str) -> std::result::Result<globset::GlobMatcher, globset::Error> {
    Ok(globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()?
        .compile_matcher())
}

/// A claim's value as text: a string as it is, a number or boolean as
/// JSON writes it; `None` for a missing or null claim, a list or object.
pub fn claim_text(claims: &Claims, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The encoding of a claim's value inside a namespace name
/// (`[A-Za-z0-9._-]`): each `/` becomes `.`, and a `.` or `_` already in
/// the value is escaped as `_2e` or `_5f` (as `ci::job_name` escapes), so
/// `acme/web` is `acme.web`, and `a.b/c` (`a_2eb.c`) never meets `a/b.c`
/// (`a.b_2ec`); any other byte outside the set is `_xx` too.
pub fn namespace_part(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'/' => out.push('.'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(b as char),
            _ => out.push_str(&format!("_{b:02x}")),
        }
    }
    out
}

/// A rule's namespace for `claims`; an unknown claim or an invalid name is
/// an error naming it.
fn render(template: &str, claims: &Claims) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("namespace {template:?}: unclosed {{"))?;
        let claim = &after[..close];
        let value = claim_text(claims, claim)
            .ok_or_else(|| format!("its namespace names claim {claim}, which the token lacks"))?;
        out.push_str(&namespace_part(&value));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    crate::protocol::validate_namespace(&out)
        .map_err(|_| format!("its namespace {out:?} is not a valid namespace name"))?;
    Ok(out)
}

/// The first claim of `rule` that `claims` does not match, said for a
/// user: `repository is acme/other, not acme/web`.
fn mismatch(rule: &Rule, claims: &Claims) -> Option<String> {
    for (claim, pattern) in &rule.claims {
        let values: Vec<String> = match claims.get(claim) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            _ => claim_text(claims, claim).into_iter().collect(),
        };
        let Ok(matcher) = glob(pattern) else {
            return Some(format!("its pattern for {claim} does not compile"));
        };
        if !values.iter().any(|v| matcher.is_match(v)) {
            return Some(match values.is_empty() {
                true => format!("the token has no claim {claim} (the rule wants {pattern})"),
                false => format!("{claim} is {}, not {pattern}", values.join(", ")),
            });
        }
    }
    None
}

pub use claims::{identity, Identity};

/// The grants the rules of `issuer` (a `ci` issuer) give a token with
/// `claims`, one per matching rule, in the file's order. None matching is
/// `Error::NotAllowed` saying, per rule, the first claim that did not match.
pub fn grants(ci: Ci, issuer: &str, claims: &Claims, rules: &[Rule]) -> Result<Vec<Grant>> {
    let mine: Vec<&Rule> = rules.iter().filter(|r| r.issuer == issuer).collect();
    let mut why = Vec::new();
    let mut out = Vec::new();
    let mut who: Option<Identity> = None;
    for (i, rule) in mine.iter().enumerate() {
        if let Some(m) = mismatch(rule, claims) {
            why.push(format!("rule {} of {issuer}: {m}", i + 1));
            continue;
        }
        let namespace = match render(&rule.namespace, claims) {
            Ok(n) => n,
            Err(e) => {
                why.push(format!("rule {} of {issuer}: {e}", i + 1));
                continue;
            }
        };
        let id = match &who {
            Some(id) => id.clone(),
            None => {
                let id = identity(ci, claims)?;
                who = Some(id.clone());
                id
            }
        };
        let role = match rule.role {
            RoleSpec::Read => Role::Read,
            RoleSpec::Write => Role::Write,
            RoleSpec::Admin => Role::Admin,
        };
        let name = match &id.no_caches {
            Some(why) => format!("{issuer} {} ({why}, so it saves no caches)", id.label),
            None => format!("{issuer} {}", id.label),
        };
        out.push(Grant {
            name,
            namespace,
            role,
            runs: Some(vec![id.scope.clone()]),
            cache_keys: Some(match id.no_caches {
                Some(_) => Vec::new(),
                None => vec![id.scope.clone()],
            }),
            run_names: id.run_names.clone(),
            jobs: id.jobs.clone(),
        });
    }
    if out.is_empty() {
        if why.is_empty() {
            why.push(format!("the --oidc file has no rule for issuer {issuer}"));
        }
        return Err(Error::NotAllowed {
            detail: format!(
                "no rule grants this {} token: {}",
                ci.name(),
                why.join("; ")
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
