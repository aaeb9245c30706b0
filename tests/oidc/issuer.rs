//! The test issuer of `oidc`'s scenarios: a CA and a server certificate
//! of its own, signing keys, each CI's discovery document and JWKS served
//! over HTTPS on loopback by `openssl s_server -WWW`, tokens signed with
//! each CI's documented claims; and GitHub's token request URL, stubbed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(super) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A signing key of the test issuer.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) kid: String,
    pub(super) key: EncodingKey,
    pub(super) jwk: Jwk,
}

pub(super) fn new_key(dir: &Path, kid: &str) -> Key {
    let file = format!("{kid}.pem");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &file,
        ],
    );
    let key = EncodingKey::from_ec_pem(&std::fs::read(dir.join(&file)).unwrap()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    Key {
        kid: kid.into(),
        key,
        jwk,
    }
}

/// The CIs the issuer signs for, each under its own path of the issuer
/// (its own `iss`), and the audience each token carries.
pub(super) const CIS: [(&str, &str); 4] = [
    ("github", "strata-test"),
    ("gitlab", "strata-test"),
    // CircleCI's audience is the organization's id.
    ("circleci", "0f3c-org"),
    ("buildkite", "strata-test"),
];

/// The loopback issuer: `openssl s_server -WWW` serving its discovery
/// documents and JWKS over HTTPS with a certificate of a test CA.
pub(super) struct Issuer {
    pub(super) dir: PathBuf,
    pub(super) base: String,
    pub(super) ca: PathBuf,
    pub(super) keys: Vec<Key>,
    pub(super) child: Option<Child>,
    pub(super) port: u16,
}

impl Issuer {
    pub(super) fn start(dir: &Path) -> Issuer {
        std::fs::create_dir_all(dir.join("www")).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=strata test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
            ],
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "leaf.pem",
                "-extfile",
                "ext.cnf",
            ],
        );
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut issuer = Issuer {
            dir: dir.to_path_buf(),
            base: format!("https://127.0.0.1:{port}"),
            ca: dir.join("ca.pem"),
            keys: vec![new_key(dir, "kid-1")],
            child: None,
            port,
        };
        issuer.publish();
        issuer.serve();
        issuer
    }

    /// The `iss` of `ci`'s tokens.
    pub(super) fn iss(&self, ci: &str) -> String {
        format!("{}/{ci}", self.base)
    }

    /// Writes every CI's discovery document and JWKS (all of the keys).
    pub(super) fn publish(&self) {
        let set = JwkSet {
            keys: self.keys.iter().map(|k| k.jwk.clone()).collect(),
        };
        for (ci, _) in CIS {
            let at = self.dir.join("www").join(ci);
            std::fs::create_dir_all(at.join(".well-known")).unwrap();
            let discovery = json!({
                "issuer": self.iss(ci),
                "jwks_uri": format!("{}/jwks.json", self.iss(ci)),
                "id_token_signing_alg_values_supported": ["ES256"],
            });
            std::fs::write(
                at.join(".well-known/openid-configuration"),
                discovery.to_string(),
            )
            .unwrap();
            std::fs::write(at.join("jwks.json"), serde_json::to_string(&set).unwrap()).unwrap();
        }
    }

    pub(super) fn serve(&mut self) {
        let child = Command::new("openssl")
            .current_dir(self.dir.join("www"))
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("-cert")
            .arg(self.dir.join("leaf.pem"))
            .arg("-key")
            .arg(self.dir.join("leaf.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the test issuer did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops serving (its JWKS endpoint is down).
    pub(super) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Publishes a new key (rotation) and returns it.
    pub(super) fn rotate(&mut self, kid: &str) -> Key {
        let k = new_key(&self.dir, kid);
        self.keys.push(k.clone());
        self.publish();
        k
    }

    /// `claims` with the registered ones of `ci` (iss, aud, times, jti),
    /// valid for five minutes.
    pub(super) fn claims(&self, ci: &str, claims: Value) -> Value {
        static JTI: AtomicUsize = AtomicUsize::new(0);
        let aud = CIS.iter().find(|(c, _)| *c == ci).unwrap().1;
        let mut c = json!({
            "iss": self.iss(ci),
            "aud": aud,
            "iat": now(),
            "nbf": now(),
            "exp": now() + 300,
            "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        });
        for (k, v) in claims.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    pub(super) fn sign(&self, ci: &str, claims: Value) -> String {
        sign_with(&self.keys[0], &self.claims(ci, claims))
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(super) fn sign_with(key: &Key, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.key).unwrap()
}

/// Each CI's documented claims for a job of `acme/web` on `main`
/// (docs/deploy.md cites them): GitHub run 123 attempt 1; GitLab pipeline
/// 1045; CircleCI's v2 token; Buildkite build 1042 of pipeline `web`.
pub(super) fn github_claims(git_ref: &str, event: &str, run_id: &str) -> Value {
    json!({
        "sub": format!("repo:acme/web:ref:{git_ref}"),
        "repository": "acme/web", "repository_owner": "acme", "repository_id": "74",
        "repository_owner_id": "65", "repository_visibility": "private",
        "actor": "octocat", "actor_id": "12", "workflow": "CI",
        "ref": git_ref, "ref_type": "branch", "ref_protected": "false",
        "event_name": event, "run_id": run_id, "run_attempt": "1", "run_number": "9",
        "sha": "e3a1", "head_ref": "", "base_ref": "",
        "workflow_ref": format!("acme/web/.github/workflows/ci.yml@{git_ref}"),
        "job_workflow_ref": format!("acme/web/.github/workflows/ci.yml@{git_ref}"),
        "runner_environment": "github-hosted",
    })
}

pub(super) fn gitlab_claims(pipeline: &str, source: &str) -> Value {
    json!({
        "sub": "project_path:acme/web:ref_type:branch:ref:main",
        "namespace_id": "5", "namespace_path": "acme", "project_id": "42",
        "project_path": "acme/web", "user_id": "7", "user_login": "dev",
        "pipeline_id": pipeline, "pipeline_source": source, "job_id": "900",
        "ref": "main", "ref_type": "branch", "ref_path": "refs/heads/main",
        "ref_protected": "true", "runner_id": 3, "runner_environment": "gitlab-hosted",
        "sha": "e3a1", "project_visibility": "private",
        "ci_config_ref_uri": "gitlab.example.com/acme/web//.gitlab-ci.yml@refs/heads/main",
    })
}

pub(super) fn circleci_claims() -> Value {
    json!({
        "sub": "org/0f3c-org/project/77aa/user/u1/vcs-origin/github.com/acme/web/vcs-ref/refs/heads/main",
        "oidc.circleci.com/org-id": "0f3c-org",
        "oidc.circleci.com/project-id": "77aa",
        "oidc.circleci.com/context-ids": ["c1"],
        "oidc.circleci.com/vcs-origin": "github.com/acme/web",
        "oidc.circleci.com/vcs-ref": "refs/heads/main",
        "oidc.circleci.com/ssh-rerun": false,
    })
}

pub(super) fn buildkite_claims(step: &str) -> Value {
    json!({
        "sub": format!("organization:acme:pipeline:web:ref:refs/heads/main:commit:9f31:step:{step}"),
        "organization_slug": "acme", "pipeline_slug": "web", "build_number": 1042,
        "build_branch": "main", "build_tag": null, "build_commit": "9f31",
        "step_key": step, "job_id": "0184990a", "agent_id": "0184990b",
        "build_source": "webhook", "runner_environment": "self-hosted",
    })
}

/// GitHub's token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`), stubbed on
/// loopback: it checks the request token, records the audience asked, and
/// answers with `mint(n)` for the n-th request. Serves for a minute.
pub(super) struct TokenEndpoint {
    pub(super) url: String,
    pub(super) audiences: Arc<Mutex<Vec<String>>>,
}

pub(super) fn token_endpoint(mint: impl Fn(usize) -> String + Send + 'static) -> TokenEndpoint {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/_apis/token?api-version=2.0",
        listener.local_addr().unwrap()
    );
    let audiences = Arc::new(Mutex::new(Vec::new()));
    let seen = audiences.clone();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        while Instant::now() < deadline {
            let Ok((mut c, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            let mut reader = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut authorized = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
                authorized |= h.eq_ignore_ascii_case("authorization: bearer req-secret\r\n");
            }
            let audience = line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.split("audience=").nth(1))
                .unwrap_or_default()
                .to_string();
            seen.lock().unwrap().push(audience);
            let (status, body) = match authorized {
                true => {
                    n += 1;
                    ("200 OK", json!({"count": 1, "value": mint(n)}).to_string())
                }
                false => ("401 Unauthorized", "{}".to_string()),
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    TokenEndpoint { url, audiences }
}
