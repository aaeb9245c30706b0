//! A CI job's own OIDC token, for a `strata serve` that accepts CI
//! identities (docs/ci.md, "No secrets: the job's identity"): GitHub's is
//! requested from `ACTIONS_ID_TOKEN_REQUEST_URL` for the audience the
//! server announces (again when the server refuses it: it expired);
//! GitLab's is the variable the job declares under `id_tokens:`
//! (`STRATA_ID_TOKEN`, or the one `STRATA_ID_TOKEN_VARIABLE` names);
//! CircleCI's is `CIRCLE_OIDC_TOKEN_V2`; Buildkite's comes from
//! `buildkite-agent oidc request-token --audience A` (again when refused).
//! A token is never printed, and never part of an error.

use std::time::Duration;

use crate::backend::http::TokenSource;
use crate::protocol::OidcAudience;

use super::CiSystem;

/// The largest answer read from GitHub's token endpoint.
const MAX_ANSWER: u64 = 64 << 10;

/// Where this job's OIDC token comes from.
#[derive(Debug, Clone)]
pub struct CiToken {
    system: CiSystem,
    /// The variables it reads, captured when the command started.
    vars: Vec<(&'static str, String)>,
    /// GitLab's variable's name.
    gitlab_var: String,
}

/// Every variable `CiToken` reads (GitLab's own variable aside).
const VARS: &[&str] = &[
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "GITHUB_EVENT_NAME",
    "STRATA_ID_TOKEN_VARIABLE",
    "CIRCLE_OIDC_TOKEN_V2",
    "BUILDKITE_AGENT_ACCESS_TOKEN",
];

impl CiToken {
    /// The token source of a job of `system`, reading `var` (the
    /// environment).
    pub fn new(system: CiSystem, var: &dyn Fn(&str) -> Option<String>) -> CiToken {
        let gitlab_var = var("STRATA_ID_TOKEN_VARIABLE")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "STRATA_ID_TOKEN".into());
        let mut vars: Vec<(&'static str, String)> = VARS
            .iter()
            .filter_map(|k| var(k).filter(|v| !v.is_empty()).map(|v| (*k, v)))
            .collect();
        if let Some(v) = var(&gitlab_var).filter(|v| !v.is_empty()) {
            vars.push(("gitlab id token", v));
        }
        CiToken {
            system,
            vars,
            gitlab_var,
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Which identity would be used, for `strata ci`: where the token
    /// comes from, or why there is none.
    pub fn describe(&self) -> String {
        match self.system {
            CiSystem::GithubActions => match self.var("ACTIONS_ID_TOKEN_REQUEST_URL") {
                Some(_) => "the job's OIDC token, requested from ACTIONS_ID_TOKEN_REQUEST_URL \
                            for the audience the server announces"
                    .into(),
                None => format!("none: {}", self.github_missing()),
            },
            CiSystem::Gitlab => match self.var("gitlab id token") {
                Some(_) => format!(
                    "the job's OIDC token, from {} (id_tokens:)",
                    self.gitlab_var
                ),
                None => format!(
                    "none: {} is not set (declare it under id_tokens: with the server's \
                     audience)",
                    self.gitlab_var
                ),
            },
            CiSystem::Circleci => match self.var("CIRCLE_OIDC_TOKEN_V2") {
                Some(_) => "the job's OIDC token, from CIRCLE_OIDC_TOKEN_V2".into(),
                None => "none: CIRCLE_OIDC_TOKEN_V2 is not set (CircleCI gives none to a \
                         pull request from a fork)"
                    .into(),
            },
            CiSystem::Buildkite => "the job's OIDC token, from `buildkite-agent oidc \
                                    request-token` for the audience the server announces"
                .into(),
        }
    }

    fn github_missing(&self) -> String {
        let fork = self.var("GITHUB_EVENT_NAME") == Some("pull_request");
        format!(
            "ACTIONS_ID_TOKEN_REQUEST_URL is not set ({}; or the workflow lacks \
             `permissions: id-token: write`)",
            match fork {
                true => "GitHub gives no OIDC token to a pull request from a fork",
                false => "GitHub gives none to a pull request from a fork",
            }
        )
    }

    fn github(&self, audience: &str) -> Result<String, String> {
        let (Some(url), Some(bearer)) = (
            self.var("ACTIONS_ID_TOKEN_REQUEST_URL"),
            self.var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        ) else {
            return Err(format!(
                "this job has no OIDC token: {}",
                self.github_missing()
            ));
        };
        let join = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{join}audience={}", percent(audience));
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let failed = |e: String| format!("asking GitHub for the job's OIDC token: {e}");
        let mut answer = agent
            .get(&url)
            .header("authorization", &format!("Bearer {bearer}"))
            .call()
            .map_err(|e| failed(e.to_string()))?;
        let body = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| failed(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| failed(format!("not JSON: {e}")))?;
        value["value"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| failed("the answer has no value".into()))
    }

    fn buildkite(&self, audience: &str) -> Result<String, String> {
        let out = std::process::Command::new("buildkite-agent")
            .args(["oidc", "request-token", "--audience", audience])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("running buildkite-agent oidc request-token: {e}"))?;
        if !out.status.success() {
            // Its stderr says why (never a token: that goes to stdout).
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "buildkite-agent oidc request-token failed ({}): {}",
                out.status,
                why.trim()
            ));
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match token.is_empty() {
            true => Err("buildkite-agent oidc request-token printed no token".into()),
            false => Ok(token),
        }
    }
}

impl TokenSource for CiToken {
    fn token(&self, announced: &[OidcAudience], _renew: bool) -> Result<Option<String>, String> {
        let ci = self.system.oidc_name();
        let Some(audience) = announced.iter().find(|a| a.ci == ci).map(|a| &a.audience) else {
            // The server takes no identity of this CI: send none (it may
            // serve anyone, or want a static token).
            return Ok(None);
        };
        let token = match self.system {
            CiSystem::GithubActions => self.github(audience)?,
            CiSystem::Buildkite => self.buildkite(audience)?,
            CiSystem::Gitlab => self
                .var("gitlab id token")
                .ok_or_else(|| {
                    format!(
                        "this job has no OIDC token: {} is not set (declare it under \
                         id_tokens: with aud: {audience})",
                        self.gitlab_var
                    )
                })?
                .to_string(),
            CiSystem::Circleci => self
                .var("CIRCLE_OIDC_TOKEN_V2")
                .ok_or("this job has no OIDC token: CIRCLE_OIDC_TOKEN_V2 is not set")?
                .to_string(),
        };
        Ok(Some(token))
    }

    fn renews(&self) -> bool {
        matches!(self.system, CiSystem::GithubActions | CiSystem::Buildkite)
    }
}

/// `s` percent-encoded for a query string.
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ci_says_where_its_token_comes_from() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let announced = [OidcAudience {
            ci: "gitlab".into(),
            audience: "strata".into(),
        }];
        let gl = CiToken::new(CiSystem::Gitlab, &env(&[("STRATA_ID_TOKEN", "a.b.c")]));
        assert_eq!(
            gl.token(&announced, false).unwrap().as_deref(),
            Some("a.b.c")
        );
        assert!(!gl.renews());
        assert!(gl.describe().contains("STRATA_ID_TOKEN"));
        let named = CiToken::new(
            CiSystem::Gitlab,
            &env(&[
                ("STRATA_ID_TOKEN_VARIABLE", "MY_TOKEN"),
                ("MY_TOKEN", "x.y.z"),
            ]),
        );
        assert_eq!(
            named.token(&announced, false).unwrap().as_deref(),
            Some("x.y.z")
        );
        // A server that takes no GitLab identity gets no token.
        assert_eq!(gl.token(&[], false).unwrap(), None);
        let none = CiToken::new(CiSystem::Gitlab, &env(&[]));
        let e = none.token(&announced, false).unwrap_err();
        assert!(e.contains("id_tokens:") && e.contains("strata"), "{e}");
        // A fork's pull request on GitHub: no request URL, said so.
        let fork = CiToken::new(
            CiSystem::GithubActions,
            &env(&[("GITHUB_EVENT_NAME", "pull_request")]),
        );
        let gh = [OidcAudience {
            ci: "github".into(),
            audience: "strata".into(),
        }];
        let e = fork.token(&gh, false).unwrap_err();
        assert!(e.contains("pull request from a fork"), "{e}");
        assert_eq!(percent("https://a b/"), "https%3A%2F%2Fa%20b%2F");
    }
}
