//! CI identities (`strata serve --oidc FILE`): a bearer token that is a
//! CI's OIDC token is verified here (signature by the issuer's published
//! key, `iss`, `aud`, `exp` and `nbf` with a small clock skew; no `alg:
//! none`, no HMAC) and its claims become grants by
//! `strata_store::oidc`, the library's rules. docs/deploy.md, "CI
//! identities", shows the file whole.
//!
//! A verified token is remembered by its BLAKE3 hash until it expires, so
//! its signature is checked once per server, not once per request.
//! Knows nothing about HTTP routes; `keys` fetches the issuers' keys.

mod keys;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{AlgorithmFamily, Validation};
use serde::Deserialize;
use strata_store::access::Grant;
use strata_store::oidc::{Ci, Claims, Rule};
use strata_store::protocol::OidcAudience;

use keys::{KeySet, KeySource};

/// Verified tokens remembered at most; past it, expired ones are dropped
/// (and all, if none has expired).
const REMEMBERED: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    issuers: Vec<IssuerSpec>,
    rules: Vec<Rule>,
    #[serde(default = "default_floor")]
    refetch_floor_secs: u64,
    #[serde(default = "default_skew")]
    clock_skew_secs: u64,
}

fn default_floor() -> u64 {
    60
}

fn default_skew() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerSpec {
    name: String,
    ci: Ci,
    issuer: String,
    audience: String,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    #[serde(default)]
    ca_cert: Option<PathBuf>,
}

#[derive(Debug)]
struct Issuer {
    name: String,
    ci: Ci,
    issuer: String,
    audience: String,
    keys: KeySet,
}

/// Why a token was refused: `Unverified` is `401` (not a token of a
/// trusted issuer, or not valid now), `NoRule` is `403` (a valid token no
/// rule grants anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Unverified(String),
    NoRule(String),
}

/// The trusted issuers, the rules, and the tokens verified.
#[derive(Debug)]
pub struct Oidc {
    issuers: Vec<Issuer>,
    rules: Vec<Rule>,
    skew: u64,
    verified: Mutex<HashMap<blake3::Hash, (Vec<Grant>, u64)>>,
}

impl Oidc {
    pub fn load(path: &Path) -> Result<Oidc, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Oidc::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Oidc, String> {
        let spec: FileSpec = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let floor = Duration::from_secs(spec.refetch_floor_secs);
        let mut issuers: Vec<Issuer> = Vec::new();
        for i in spec.issuers {
            if issuers.iter().any(|o| o.name == i.name) {
                return Err(format!("issuer {}: the name is listed twice", i.name));
            }
            if i.audience.is_empty() {
                return Err(format!("issuer {}: an empty audience", i.name));
            }
            let source = match (&i.jwks_file, &i.ca_cert) {
                (Some(f), _) => KeySource::File(f.clone()),
                (None, ca) => {
                    if !i.issuer.starts_with("https://") {
                        return Err(format!(
                            "issuer {}: {} is not https (give jwks_file for keys kept locally)",
                            i.name, i.issuer
                        ));
                    }
                    let ca = match ca {
                        Some(f) => Some(std::fs::read(f).map_err(|e| {
                            format!("issuer {}: ca_cert {}: {e}", i.name, f.display())
                        })?),
                        None => None,
                    };
                    KeySource::Discovery {
                        issuer: i.issuer.clone(),
                        ca,
                    }
                }
            };
            issuers.push(Issuer {
                keys: KeySet::new(source, floor),
                name: i.name,
                ci: i.ci,
                issuer: i.issuer,
                audience: i.audience,
            });
        }
        if issuers.is_empty() {
            return Err("no issuers".into());
        }
        for (n, r) in spec.rules.iter().enumerate() {
            if !issuers.iter().any(|i| i.name == r.issuer) {
                return Err(format!("rule {}: no issuer is named {}", n + 1, r.issuer));
            }
            r.validate().map_err(|e| format!("rule {}: {e}", n + 1))?;
        }
        Ok(Oidc {
            issuers,
            rules: spec.rules,
            skew: spec.clock_skew_secs,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// What the server announces: each CI and the audience its tokens
    /// must carry.
    pub fn audiences(&self) -> Vec<OidcAudience> {
        self.issuers
            .iter()
            .map(|i| OidcAudience {
                ci: i.ci.name().to_string(),
                audience: i.audience.clone(),
            })
            .collect()
    }

    /// Whether `token` looks like a JWT (three base64url parts), so a
    /// static token is never sent to the verifier.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.len() > 20
    }

    /// The grants of a verified token remembered, if it is and has not
    /// expired. Cheap: no signature is checked.
    pub fn remembered(&self, token: &str) -> Option<Vec<Grant>> {
        let hash = blake3::hash(token.as_bytes());
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let (grants, exp) = verified.get(&hash)?;
        (*exp > jsonwebtoken::get_current_timestamp()).then(|| grants.clone())
    }

    /// Verifies `token` and returns the grants its claims earn. Blocking
    /// (it may fetch an issuer's keys): call it off the async threads.
    pub fn verify(&self, token: &str) -> Result<Vec<Grant>, Refused> {
        if let Some(g) = self.remembered(token) {
            return Ok(g);
        }
        let bad = |why: String| Refused::Unverified(format!("OIDC token refused: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            bad(format!(
                "its header is not one strata accepts ({e}; alg none is never accepted)"
            ))
        })?;
        // Which issuer signed it, before the signature is checked: only to
        // choose the keys; `Validation` checks `iss` again.
        let peek: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| bad(format!("its claims do not decode ({e})")))?;
        let iss = peek.get("iss").and_then(|v| v.as_str()).unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| bad(format!("iss {iss:?} is no issuer this server trusts")))?;
        if header.alg.family() == AlgorithmFamily::Hmac {
            return Err(bad(format!(
                "alg {:?} is HMAC, which a public-key issuer ({}) never signs with",
                header.alg, issuer.name
            )));
        }
        let key = issuer.keys.find(header.kid.as_deref()).map_err(bad)?;
        if key.alg.is_some_and(|a| a != header.alg) {
            return Err(bad(format!(
                "alg {:?} is not the algorithm of its key ({:?})",
                header.alg, key.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&[&issuer.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.skew;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| bad(explain(&e, &peek, &issuer.audience)))?;
        let exp = data.claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
        let grants = strata_store::oidc::grants(issuer.ci, &issuer.name, &data.claims, &self.rules)
            .map_err(|e| Refused::NoRule(e.to_string()))?;
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= REMEMBERED {
            let now = jsonwebtoken::get_current_timestamp();
            verified.retain(|_, (_, e)| *e > now);
            if verified.len() >= REMEMBERED {
                verified.clear();
            }
        }
        verified.insert(blake3::hash(token.as_bytes()), (grants.clone(), exp));
        Ok(grants)
    }
}

/// A verification error, said with the claim that failed.
fn explain(e: &jsonwebtoken::errors::Error, claims: &Claims, audience: &str) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    let now = jsonwebtoken::get_current_timestamp();
    let num = |c: &str| claims.get(c).and_then(|v| v.as_u64()).unwrap_or(0);
    match e.kind() {
        K::ExpiredSignature => format!(
            "it expired (exp {}, {} s ago): ask the CI for a new one",
            num("exp"),
            now.saturating_sub(num("exp"))
        ),
        K::ImmatureSignature => format!("it is not valid yet (nbf {})", num("nbf")),
        K::InvalidAudience => format!(
            "its aud is {}, not {audience:?}, the audience this server expects",
            claims
                .get("aud")
                .map(|v| v.to_string())
                .unwrap_or("missing".into())
        ),
        K::InvalidIssuer => "its iss is not its issuer's".into(),
        K::InvalidSignature => "its signature does not verify with the issuer's key".into(),
        K::InvalidAlgorithm => "its alg does not fit the issuer's key".into(),
        K::MissingRequiredClaim(c) => format!("it has no {c} claim"),
        other => format!("{other:?}"),
    }
}

/// Refuses an algorithm list the verifier would never accept; kept as a
/// function so the test below pins it.
#[cfg(test)]
fn accepted(alg: jsonwebtoken::Algorithm) -> bool {
    alg.family() != AlgorithmFamily::Hmac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `--oidc` file docs/deploy.md shows ("CI identities") loads.
    #[test]
    fn the_documented_files_load() {
        let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy.md"));
        let section = doc
            .split("### CI identities")
            .nth(1)
            .and_then(|s| s.split("### Limits and timeouts").next())
            .unwrap();
        let files: Vec<&str> = section
            .split("```yaml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert_eq!(files.len(), 5, "the whole file and one per CI");
        for f in files {
            let o = Oidc::parse(f).unwrap_or_else(|e| panic!("{e}\n{f}"));
            assert!(!o.audiences().is_empty());
        }
    }

    #[test]
    fn a_file_names_issuers_and_rules_that_refer_to_them() {
        let ok = "issuers:\n  - {name: gh, ci: github, issuer: https://token.actions.githubusercontent.com, audience: strata}\nrules:\n  - {issuer: gh, claims: {repository: acme/web}, namespace: web}\n";
        let o = Oidc::parse(ok).unwrap();
        assert_eq!(o.audiences()[0].ci, "github");
        for bad in [
            "issuers: []\nrules: []\n",
            "issuers:\n  - {name: gh, ci: github, issuer: http://x, audience: a}\nrules: []\n",
            "issuers:\n  - {name: gh, ci: github, issuer: https://x, audience: a}\nrules:\n  - {issuer: other, namespace: web}\n",
            "issuers:\n  - {name: gh, ci: github, issuer: https://x, audience: a}\nrules:\n  - {issuer: gh, namespace: web, role: root}\n",
            "issuers:\n  - {name: gh, ci: jenkins, issuer: https://x, audience: a}\nrules: []\n",
        ] {
            assert!(Oidc::parse(bad).is_err(), "{bad}");
        }
        assert!(!accepted(jsonwebtoken::Algorithm::HS256));
        assert!(accepted(jsonwebtoken::Algorithm::ES256));
        assert!(Oidc::looks_like_jwt("eyJhbGciOi.eyJpc3MiOi.c2lnbmF0dXJl"));
        assert!(!Oidc::looks_like_jwt("a-static-token-0123456789"));
    }
}
