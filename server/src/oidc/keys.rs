//! An issuer's public keys: its JWKS, fetched over HTTPS from the
//! `jwks_uri` of its discovery document, or read from a local file for
//! sites that cannot reach the issuer. Fetched again when a token names a
//! key id the set lacks (key rotation), but never more often than the
//! floor between fetches, so tokens with made-up key ids cannot make the
//! server hammer the issuer; and on use once they are an hour old, so a
//! withdrawn key stops verifying. A failed fetch keeps the keys it had, so
//! an issuer that is down stops no token whose key is known.
//!
//! HMAC (`oct`) keys in a set are dropped: an issuer's keys are public,
//! and a shared-secret key made of public bytes would let anyone sign.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The largest discovery document or JWKS read.
const MAX_DOCUMENT: u64 = 1 << 20;

/// Keys this old are fetched again on their next use, so a key the issuer
/// withdrew stops verifying within an hour (a failed fetch keeps them).
const MAX_AGE: Duration = Duration::from_secs(3600);

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`,
    /// over HTTPS; `ca` trusts a private CA instead of the system's roots.
    Discovery {
        /// The issuer URL.
        issuer: String,
        /// PEM certificates to trust, if not the system's roots.
        ca: Option<Vec<u8>>,
    },
    /// A JWKS file, read again on an unknown key id.
    File(PathBuf),
}

/// A usable public key, and the algorithm its JWK pins (if it does).
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub alg: Option<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?})", self.alg)
    }
}

#[derive(Debug, Default)]
struct State {
    /// By key id (`""` for a key without one).
    keys: HashMap<String, Key>,
    fetched: Option<Instant>,
}

/// An issuer's key set, shared by the requests that verify its tokens.
#[derive(Debug, Clone)]
pub struct KeySet {
    source: KeySource,
    floor: Duration,
    state: Arc<Mutex<State>>,
}

impl KeySet {
    pub fn new(source: KeySource, floor: Duration) -> KeySet {
        KeySet {
            source,
            floor,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The key `kid` names (a token without `kid`: the set's only key),
    /// fetching the set first when it does not hold it and the floor
    /// allows. Blocking: call it off the async threads.
    pub fn find(&self, kid: Option<&str>) -> Result<Key, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let known = pick(&state.keys, kid);
        let stale = state.fetched.is_none_or(|t| t.elapsed() >= MAX_AGE);
        if let (Some(k), false) = (&known, stale) {
            return Ok(k.clone());
        }
        let due = state.fetched.is_none_or(|t| t.elapsed() >= self.floor);
        if !due {
            return known.ok_or_else(|| unknown(kid, "fetched again too recently to ask again"));
        }
        state.fetched = Some(Instant::now());
        match self.fetch() {
            Ok(keys) => state.keys = keys,
            Err(e) => {
                crate::log::line(format_args!("OIDC keys: {e} (keeping the keys known)"));
                return known.ok_or_else(|| unknown(kid, &e));
            }
        }
        // A known key the fresh set lacks was withdrawn: refused.
        pick(&state.keys, kid).ok_or_else(|| unknown(kid, "not in the issuer's key set"))
    }

    fn fetch(&self) -> Result<HashMap<String, Key>, String> {
        let text = match &self.source {
            KeySource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            KeySource::Discovery { issuer, ca } => {
                let agent = agent(ca.as_deref())?;
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc: serde_json::Value = serde_json::from_str(&get(&agent, &discovery)?)
                    .map_err(|e| format!("{discovery}: {e}"))?;
                let jwks = doc["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| format!("{discovery} names no jwks_uri"))?;
                if !jwks.starts_with("https://") {
                    return Err(format!("{discovery}: jwks_uri {jwks} is not https"));
                }
                get(&agent, jwks)?
            }
        };
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("the JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| Algorithm::try_from(a).ok());
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            keys.insert(kid, Key { key, alg });
        }
        Ok(keys)
    }
}

fn pick(keys: &HashMap<String, Key>, kid: Option<&str>) -> Option<Key> {
    match kid {
        Some(k) => keys.get(k).cloned(),
        None if keys.len() == 1 => keys.values().next().cloned(),
        None => keys.get("").cloned(),
    }
}

fn unknown(kid: Option<&str>, why: &str) -> String {
    match kid {
        Some(k) => format!("it is signed by a key (kid {k}) the issuer does not publish ({why})"),
        None => format!("it names no key id (kid) and the issuer has several keys ({why})"),
    }
}

fn agent(ca: Option<&[u8]>) -> Result<ureq::Agent, String> {
    let mut config = ureq::Agent::config_builder()
        .https_only(true)
        .timeout_global(Some(Duration::from_secs(10)))
        .user_agent(format!("strata-serve/{}", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca {
        let certs: Vec<_> = ureq::tls::parse_pem(pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err("ca_cert: no PEM certificate in it".into());
        }
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build(),
        );
    }
    Ok(config.build().new_agent())
}

fn get(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let mut response = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(kids: &[&str]) -> String {
        let keys: Vec<String> = kids
            .iter()
            .map(|k| {
                format!(
                    r#"{{"kty": "EC", "crv": "P-256", "kid": "{k}", "alg": "ES256",
                        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}"#
                )
            })
            .chain([r#"{"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}"#.to_string()])
            .collect();
        format!(r#"{{"keys": [{}]}}"#, keys.join(","))
    }

    // An unknown key id fetches the set again, but not within the floor;
    // an HMAC key in the set is never used.
    #[test]
    fn unknown_key_ids_fetch_again_no_more_often_than_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, jwks(&["a"])).unwrap();
        let slow = KeySet::new(KeySource::File(file.clone()), Duration::from_secs(3600));
        let fast = KeySet::new(KeySource::File(file.clone()), Duration::ZERO);
        assert_eq!(slow.find(Some("a")).unwrap().alg, Some(Algorithm::ES256));
        assert!(fast.find(Some("a")).is_ok());
        std::fs::write(&file, jwks(&["a", "b"])).unwrap();
        let e = slow.find(Some("b")).unwrap_err();
        assert!(e.contains("too recently"), "{e}");
        assert!(fast.find(Some("b")).is_ok());
        assert!(fast.find(Some("shared")).is_err());
        // Known keys outlive a set that cannot be read.
        std::fs::remove_file(&file).unwrap();
        assert!(fast.find(Some("a")).is_ok());
        let e = fast.find(Some("c")).unwrap_err();
        assert!(e.contains("kid c") && e.contains("cannot read"), "{e}");
    }
}
