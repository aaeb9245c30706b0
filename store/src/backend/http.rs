//! The client side of `strata serve`'s transport, and a `Backend` over its
//! object API.
//!
//! `HttpTransport` reaches one namespace, on one server or on any of
//! several replicas named together: every call carries the caller's bearer
//! token, and is retried with exponential backoff on connection errors,
//! 5xx and 429, all of which are safe to repeat (objects are
//! content-addressed or single-writer, queries change nothing), so a
//! failed connection moves the client to the next replica named. Bytes on
//! the wire (request and response bodies) are counted for reports.
//! `HttpStore` (`object_api`) is the object API over it. The routes and bodies are
//! `protocol`'s. This module knows nothing about packs, chunk queries,
//! persist or attach; the chunk queries are `repo::remote`'s.

mod direct;
mod object_api;

pub use object_api::HttpStore;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::TrafficCounter;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{
    decode_answer, error_text, namespace_root, route, validate_namespace, ErrorBody, Hello,
    OidcAudience, OBJECT_SIZE_HEADER, PROTOCOL_VERSION,
};

/// Where a client's bearer token comes from when none was given: the CI
/// job's own OIDC token (`ci::token`), for the audience the server
/// announces. A token is never printed, nor put in an error.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token for a server that accepts `announced` (each CI's audience);
    /// `renew`: the last one was refused, ask the CI for a new one.
    /// `Ok(None)`: the server accepts no identity of this CI, so none is
    /// sent. `Err`: why this job has no token, for a person.
    fn token(
        &self,
        announced: &[OidcAudience],
        renew: bool,
    ) -> std::result::Result<Option<String>, String>;
    /// Whether asking again gives a new token (GitHub's request URL,
    /// `buildkite-agent`), not the same one (a variable).
    fn renews(&self) -> bool;
}

/// How many times a failed request is tried in all, and the first wait.
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// How long a connection may make no progress (no byte read or written,
/// no connection made) before the attempt fails and is retried on a fresh
/// connection.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A request's attempts end after this many stall timeouts in all, so a
/// stalled server ends a command with an error within a minute by default.
const BUDGET_IN_STALLS: u32 = 6;

/// A way to one `strata serve` namespace: `http(s)://HOST:PORT/NAMESPACE`,
/// or several replicas of it: `http(s)://HOST:PORT,HOST:PORT/NAMESPACE`.
/// Cheap to clone (clones share connections and counters).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `http://host:port` of each server named, no trailing slash.
    bases: Vec<String>,
    /// The one requests go to, until a connection to it fails.
    current: AtomicUsize,
    namespace: String,
    /// The bearer token: given, or the identity's once it was asked.
    token: Mutex<Option<String>>,
    /// Where a token comes from when none was given.
    identity: Option<Arc<dyn TokenSource>>,
    /// What `GET /v1` announced, asked once (for the identity).
    announced: OnceLock<Vec<OidcAudience>>,
    /// The features the namespace's hello named (`Hello::features`),
    /// once the handshake read them.
    features: OnceLock<Vec<String>>,
    /// Held while a refused token is renewed.
    renewing: Mutex<()>,
    /// Each read and write must make progress within `stall`, but for
    /// patient calls (`call_json`).
    agent: ureq::Agent,
    stall: Duration,
    traffic: TrafficCounter,
    /// The `urls` version the server's hello offered (docs/protocol.md).
    urls_offered: OnceLock<Option<u32>>,
}

/// Options for reaching a server.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// The bearer token sent with every request.
    pub token: Option<String>,
    /// Without `token`: where one comes from (a CI job's OIDC token).
    pub identity: Option<Arc<dyn TokenSource>>,
    /// How long a connection may make no progress before the attempt is
    /// retried (`DEFAULT_STALL_TIMEOUT` when `None`); a request gives up
    /// after six of these in all.
    pub stall_timeout: Option<Duration>,
    /// PEM certificate(s) to trust instead of the system's roots (a server
    /// with a self-signed certificate).
    pub ca_cert: Option<Vec<u8>>,
}

impl HttpTransport {
    /// Parses `http(s)://HOST[:PORT][,HOST[:PORT]...]/NAMESPACE` (each
    /// further host may repeat the scheme: `http://a:8427,http://b:8427/NS`).
    pub fn new(url: &str, options: HttpOptions) -> Result<Self> {
        let bad = |reason: &'static str| Error::InvalidName {
            what: "server address",
            value: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| bad("it must start with http:// or https://"))?;
        // A namespace holds no '/', so it follows the last one; a further
        // server may repeat the scheme, so there may be more before.
        let (hosts, namespace) = rest
            .trim_end_matches('/')
            .rsplit_once('/')
            .ok_or_else(|| bad("it must end with /NAMESPACE"))?;
        let scheme = &url[..url.len() - rest.len()];
        let mut bases = Vec::new();
        for host in hosts.split(',') {
            let host = host.strip_prefix(scheme).unwrap_or(host);
            if host.is_empty() {
                return Err(bad("it has no host"));
            }
            if host.contains('/') {
                return Err(bad(
                    "each server is HOST[:PORT], in the first one's scheme, and the namespace \
                     follows the last",
                ));
            }
            bases.push(format!("{scheme}{host}"));
        }
        validate_namespace(namespace).map_err(|_| {
            bad("the namespace must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with .")
        })?;
        let stall = options.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT);
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(stall))
            .max_idle_connections_per_host(32)
            .user_agent(format!("strata/{}", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &options.ca_cert {
            let certs = ureq::tls::parse_pem(pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(Error::corrupt("CA certificate", "no PEM certificate in it"));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                    .build(),
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                bases,
                current: AtomicUsize::new(0),
                namespace: namespace.to_string(),
                identity: options.identity.filter(|_| options.token.is_none()),
                token: Mutex::new(options.token),
                announced: OnceLock::new(),
                features: OnceLock::new(),
                renewing: Mutex::new(()),
                agent: config
                    .timeout_per_read(Some(stall))
                    .timeout_per_write(Some(stall))
                    .build()
                    .new_agent(),
                stall,
                traffic: TrafficCounter::default(),
                urls_offered: OnceLock::new(),
            }),
        })
    }

    fn url(&self, server: usize, tail: &str) -> String {
        format!(
            "{}{}{tail}",
            self.inner.bases[server],
            namespace_root(&self.inner.namespace)
        )
    }

    /// `http://host:port/NAMESPACE` of the server requests go to now, for
    /// messages.
    pub fn location_string(&self) -> String {
        self.location_of(self.inner.current.load(Relaxed))
    }

    fn location_of(&self, server: usize) -> String {
        format!("{}/{}", self.inner.bases[server], self.inner.namespace)
    }

    /// After a failed connection to `server`, the next request goes to the
    /// next server named (unless another thread moved on already).
    fn move_on_from(&self, server: usize) {
        let next = (server + 1) % self.inner.bases.len();
        let _ = self
            .inner
            .current
            .compare_exchange(server, next, Relaxed, Relaxed);
    }

    /// Sends one request to route `tail` (with retries); returns the
    /// status and body of the first answer that is not worth retrying.
    ///
    /// Every attempt must make progress within the stall timeout; after
    /// six stall timeouts in all no further attempt starts, and the error
    /// names the server, the request and the last cause.
    pub fn call(&self, method: &str, tail: &str, body: Option<&[u8]>) -> Result<(u16, Vec<u8>)> {
        self.call_on(false, method, tail, body)
    }

    fn call_on(
        &self,
        patient: bool,
        method: &str,
        tail: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>)> {
        let started = std::time::Instant::now();
        let budget = self.inner.stall * BUDGET_IN_STALLS;
        let mut wait = FIRST_BACKOFF;
        let mut last = String::new();
        // Whether the last attempt got no answer from the server itself.
        let mut unreachable = false;
        let mut last_server = 0;
        let mut tried = 0;
        let mut renewed = false;
        self.first_token()?;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                if started.elapsed() + wait >= budget {
                    break;
                }
                std::thread::sleep(wait);
                wait *= 2;
            }
            tried = attempt;
            let server = self.inner.current.load(Relaxed);
            last_server = server;
            let sent_with = self.token_now();
            let answer = {
                let _in_flight = self.inner.traffic.request();
                self.send(patient, method, &self.url(server, tail), body)
            };
            match answer {
                Ok((status, bytes, retry_after)) => {
                    self.inner.traffic.received(bytes.len() as u64);
                    // 507: the server's disk is full; trying again
                    // only adds to the load.
                    if status == 429 || (status >= 500 && status != 507) {
                        // 502-504: a proxy in front says the server is not there.
                        unreachable = (502..=504).contains(&status);
                        last = format!("HTTP {status}: {}", error_text(&bytes));
                        if let Some(s) = retry_after {
                            wait = wait.max(Duration::from_secs(s.min(30)));
                        }
                        continue;
                    }
                    // A CI token the server refused (it expired): a new
                    // one, once, where the CI gives new ones.
                    let renews = self.inner.identity.as_ref().is_some_and(|i| i.renews());
                    if status == 401 && renews && !renewed {
                        renewed = true;
                        self.renew_identity(&sent_with)?;
                        wait = Duration::ZERO;
                        continue;
                    }
                    return Ok((status, bytes));
                }
                Err((e, retry)) => {
                    unreachable = true;
                    last = e;
                    if !retry {
                        break;
                    }
                    self.move_on_from(server);
                }
            }
        }
        let server = self.location_of(last_server);
        Err(gave_up(
            server,
            format!("{method} /{tail}: {last}"),
            (tried, started.elapsed()),
            unreachable,
        ))
    }

    /// With a CI identity and no token yet, asks for one (one request at a
    /// time asks; the others find it then).
    fn first_token(&self) -> Result<()> {
        if self.inner.identity.is_some() && self.token_now().is_none() {
            let _one = self
                .inner
                .renewing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.ask_identity(false)?;
        }
        Ok(())
    }

    /// One attempt: (status, body, Retry-After seconds), or a transport
    /// error and whether trying again could help.
    fn send(
        &self,
        patient: bool,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
    ) -> std::result::Result<Answer, (String, bool)> {
        let agent = &self.inner.agent;
        let auth = self
            .inner
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|t| format!("Bearer {t}"));
        let prepare = |r| with_auth(r, &auth, patient);
        let response = match (method, body) {
            ("GET", _) => prepare(agent.get(url)).call(),
            ("HEAD", _) => prepare(agent.head(url)).call(),
            ("DELETE", _) => prepare(agent.delete(url)).call(),
            (m, b) => {
                let b = b.unwrap_or_default();
                self.inner.traffic.sent(b.len() as u64);
                let r = if m == "PUT" {
                    agent.put(url)
                } else {
                    agent.post(url)
                };
                with_auth(r, &auth, patient).send(b)
            }
        };
        let response = response.map_err(|e| {
            let retry = matches!(
                e,
                ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::Protocol(_)
                    | ureq::Error::BodyStalled
            );
            (e.to_string(), retry)
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let length = response
            .headers()
            .get(OBJECT_SIZE_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let mut bytes = Vec::new();
        if method != "HEAD" {
            response
                .into_body()
                .into_reader()
                .read_to_end(&mut bytes)
                .map_err(|e| (format!("reading the response: {e}"), true))?;
        } else if let Some(n) = length {
            bytes = n.to_le_bytes().to_vec();
        }
        Ok((status, bytes, retry_after))
    }

    fn token_now(&self) -> Option<String> {
        self.inner
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new token from the identity, unless another request renewed
    /// the refused one (`refused`) already: requests in flight when a
    /// token expires ask the CI once between them.
    fn renew_identity(&self, refused: &Option<String>) -> Result<()> {
        let _one = self
            .inner
            .renewing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.token_now() != *refused {
            return Ok(());
        }
        self.ask_identity(true)
    }

    /// Takes the identity's token (a new one with `renew`) for the
    /// audience the server announces, which is asked once.
    fn ask_identity(&self, renew: bool) -> Result<()> {
        let Some(identity) = &self.inner.identity else {
            return Ok(());
        };
        if !renew
            && self
                .inner
                .token
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
        {
            return Ok(());
        }
        let announced = match self.inner.announced.get() {
            Some(a) => a.clone(),
            None => {
                let server = self.inner.current.load(Relaxed);
                let url = format!("{}{}", self.inner.bases[server], route::SERVER_HELLO);
                let hello = self
                    .send(false, "GET", &url, None)
                    .ok()
                    .filter(|(status, _, _)| *status == 200)
                    .and_then(|(_, body, _)| decode_answer::<Hello>(&body).ok());
                let a = hello.map(|h| h.oidc).unwrap_or_default();
                self.inner.announced.get_or_init(|| a).clone()
            }
        };
        let token = identity
            .token(&announced, renew)
            .map_err(|detail| Error::Unauthorized {
                server: self.location_string(),
                detail,
            })?;
        *self.inner.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        Ok(())
    }

    /// Maps an error answer to the library's error for `what`: the error
    /// the body's `kind` names, with the server's message, so it reads as
    /// a local store's would; without a kind this version knows (an older
    /// server), by its status (docs/protocol.md, "Errors").
    fn status_error(&self, status: u16, body: &[u8], what: &str) -> Error {
        // A token's refusals (401, 403) are about the server's grants, which
        // a local store has none of: they name the server, kind or not.
        let named = decode_answer::<ErrorBody>(body)
            .ok()
            .filter(|_| status != 401 && status != 403)
            .and_then(|b| Some((b.error_kind()?, b.error)));
        match named {
            // The variants the library's own code matches on stay those
            // variants: a missing object, and a corrupt one (a range past
            // the end, gc and verify skipping a damaged pack).
            Some((ErrorKind::NotFound, _)) => Error::NotFound { key: what.into() },
            Some((ErrorKind::Corrupt, message)) => match message
                .strip_prefix("corrupt ")
                .and_then(|m| m.split_once(": "))
            {
                // As the server's library said it: the same object, the same words.
                Some((object, detail)) => Error::corrupt(object, detail),
                None => Error::Corrupt {
                    object: what.into(),
                    detail: format!("refused by {}: {message}", self.location_string()),
                },
            },
            Some((kind, message)) => Error::Served {
                kind,
                server: self.location_string(),
                message,
            },
            None => self.status_only_error(status, body, what),
        }
    }

    /// The error for an answer that names no kind, by its status.
    fn status_only_error(&self, status: u16, body: &[u8], what: &str) -> Error {
        let detail = error_text(body);
        match status {
            401 => Error::Unauthorized {
                server: self.location_string(),
                detail,
            },
            403 => Error::Forbidden {
                server: self.location_string(),
                detail,
            },
            404 => Error::NotFound { key: what.into() },
            // The server refused the request as malformed or the object as
            // invalid; its message says which.
            400 => Error::Corrupt {
                object: what.into(),
                detail: format!("refused by {}: {detail}", self.location_string()),
            },
            _ => Error::Remote {
                server: self.location_string(),
                detail: format!("{what}: HTTP {status}: {detail}"),
            },
        }
    }

    /// The body of a 2xx answer, or the library's error for `what`.
    pub fn expect_ok(&self, (status, body): (u16, Vec<u8>), what: &str) -> Result<Vec<u8>> {
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(self.status_error(status, &body, what))
        }
    }

    /// Asks the server for its protocol version (and checks the token).
    pub fn handshake(&self) -> Result<()> {
        let r = self.call("GET", route::HELLO, None)?;
        let body = self.expect_ok(r, "the namespace")?;
        let hello: Hello = decode_answer(&body).map_err(|e| Error::Remote {
            server: self.location_string(),
            detail: format!("not a strata server? {e}"),
        })?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(Error::Remote {
                server: self.location_string(),
                detail: format!(
                    "the server speaks protocol {}, this strata speaks {PROTOCOL_VERSION}",
                    hello.protocol
                ),
            });
        }
        let _ = self.inner.urls_offered.set(hello.urls);
        let _ = self.inner.features.set(hello.features);
        Ok(())
    }

    /// The version of `urls` the server offered in its hello (after
    /// `handshake`).
    pub fn urls_offered(&self) -> Option<u32> {
        self.inner.urls_offered.get().copied().flatten()
    }

    /// Whether the server's hello named `feature` (false before the
    /// handshake, and for a server older than the feature).
    pub fn has_feature(&self, feature: &str) -> bool {
        self.inner
            .features
            .get()
            .is_some_and(|f| f.iter().any(|x| x == feature))
    }

    /// A server-side operation with a JSON answer (stats, gc).
    /// The server may think for long before answering, so no stall
    /// timeout applies to the answer.
    pub fn call_json<T: serde::de::DeserializeOwned>(&self, method: &str, tail: &str) -> Result<T> {
        let r = self.call_on(true, method, tail, Some(b""))?;
        let body = self.expect_ok(r, tail)?;
        decode_answer(&body).map_err(|e| Error::Remote {
            server: self.location_string(),
            detail: format!("{tail}: bad answer: {e}"),
        })
    }
}

/// A response: status, body, and `Retry-After` seconds.
type Answer = (u16, Vec<u8>, Option<u64>);

/// Adds the token; a patient request waits for its answer without a
/// stall timeout.
fn with_auth<B>(
    req: ureq::RequestBuilder<B>,
    auth: &Option<String>,
    patient: bool,
) -> ureq::RequestBuilder<B> {
    let req = match auth {
        Some(a) => req.header("authorization", a),
        None => req,
    };
    if patient {
        req.config()
            .timeout_per_read(None)
            .timeout_per_write(None)
            .build()
    } else {
        req
    }
}

/// The error of a request that got no usable answer: `what` (the request
/// and the last cause), after `tried` attempts in the time given;
/// `Unreachable` when the last attempt never reached the server itself.
fn gave_up(
    server: String,
    what: String,
    (tried, took): (u32, Duration),
    unreachable: bool,
) -> Error {
    let detail = if tried > 1 {
        format!(
            "{what} (gave up after {tried} attempts in {:.0} s)",
            took.as_secs_f64()
        )
    } else {
        what
    };
    if unreachable {
        Error::Unreachable { server, detail }
    } else {
        Error::Remote { server, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback that answers every request with `status`, for
    /// at most two seconds; returns its address and the count of requests.
    fn answering(status: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                seen.fetch_add(1, Relaxed);
                c.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let body = r#"{"error": "the server's disk is full"}"#;
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (addr, count)
    }

    // A full disk on the server (507) is an answer, not a fault: trying
    // again six times only adds to the load.
    #[test]
    fn a_full_disk_is_not_retried() {
        let (addr, count) = answering("507 Insufficient Storage");
        let t = HttpTransport::new(&format!("http://{addr}/ns"), HttpOptions::default()).unwrap();
        let (status, _) = t.call("PUT", "o/runs/r/run", Some(b"x")).unwrap();
        assert_eq!(status, 507);
        assert_eq!(count.load(Relaxed), 1);
        // A 503 is retried.
        let (addr, count) = answering("503 Service Unavailable");
        let t = HttpTransport::new(&format!("http://{addr}/ns"), HttpOptions::default()).unwrap();
        assert!(t.call("PUT", "o/runs/r/run", Some(b"x")).is_err());
        assert!(count.load(Relaxed) > 1);
    }

    #[test]
    fn several_servers_are_named_with_commas_and_taken_in_turn() {
        let t = HttpTransport::new("http://a:1,http://b:2/ns", HttpOptions::default()).unwrap();
        assert_eq!(t.inner.bases, ["http://a:1", "http://b:2"]);
        let t = HttpTransport::new("https://a:1,b:2,c/ns", HttpOptions::default()).unwrap();
        assert_eq!(t.inner.bases, ["https://a:1", "https://b:2", "https://c"]);
        for bad in [
            "http://a:1,https://b/ns",
            "http://a:1,/ns",
            "http://,a/ns",
            "http://a/x/ns",
            "http://a:1/",
        ] {
            assert!(
                HttpTransport::new(bad, HttpOptions::default()).is_err(),
                "{bad}"
            );
        }
        assert_eq!(t.location_string(), "https://a:1/ns");
        t.move_on_from(0);
        assert_eq!(t.location_string(), "https://b:2/ns");
        // Another thread's failure on `a`, seen late, does not move it again.
        t.move_on_from(0);
        assert_eq!(t.location_string(), "https://b:2/ns");
        t.move_on_from(1);
        t.move_on_from(2);
        assert_eq!(t.location_string(), "https://a:1/ns");
    }

    /// A named error reads back as the server's library raised it; one
    /// without a kind (an older server) by its status; a token's refusal
    /// always names the server.
    #[test]
    fn answers_map_back_to_the_library_error_by_kind_else_by_status() {
        let t = HttpTransport::new("http://h:1/ns", HttpOptions::default()).unwrap();
        let body = |e: &Error| crate::protocol::encode_answer(&ErrorBody::of(e));
        let run = crate::id::RunName::new("r").unwrap();
        let local = [
            Error::UnknownRun { run: run.clone() },
            Error::RunExists { run },
            Error::GraceTooShort { asked: 1, floor: 9 },
            Error::corrupt("packs/ab/abcd", "bytes: do not hash to its name"),
        ];
        for (status, e) in [400, 409, 400, 400].into_iter().zip(&local) {
            let back = t.status_error(status, &body(e), "k");
            assert_eq!(back.kind(), e.kind(), "{e}");
            assert_eq!(back.to_string(), e.to_string());
        }
        let back = t.status_error(400, &body(&local[3]), "k");
        assert!(matches!(back, Error::Corrupt { .. }), "{back:?}");
        assert!(matches!(
            t.status_error(404, &body(&Error::NotFound { key: "x".into() }), "k"),
            Error::NotFound { key } if key == "k"
        ));
        let old = br#"{"error":"run r does not exist"}"#;
        assert_eq!(t.status_error(400, old, "k").kind(), ErrorKind::Corrupt);
        assert_eq!(t.status_error(409, old, "k").kind(), ErrorKind::Remote);
        let refused = body(&Error::NotAllowed {
            detail: "read only".into(),
        });
        assert_eq!(
            t.status_error(403, &refused, "k").kind(),
            ErrorKind::Forbidden
        );
    }
}
