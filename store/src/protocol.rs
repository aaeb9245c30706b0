//! The wire format of `strata serve` (docs/protocol.md), defined once and
//! used by both sides: the client (`backend::http`, `repo::remote`) and the
//! server crate. Routes, limits, headers, the JSON bodies, and the binary
//! bodies of the chunk queries.
//!
//! It is data, not behaviour, so it sits at the bottom of the crate next to
//! `id`: it imports only `error` and `id`, and knows nothing about stores,
//! packs or HTTP libraries. A chunk location travels as a fixed-size record
//! whose layout `format::index::Location` owns; this module only frames it.

// What a request reaches must not panic: every unwrap or expect here is
// refused unless its line says why it cannot fail.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ChunkId, RunName};

pub mod layers;
pub mod objects;
pub mod urls;
pub mod web;

/// The protocol version (the `/v1/` in every path).
pub const PROTOCOL_VERSION: u32 = 1;

/// At most this many chunk ids per query request (32 bytes each).
pub const MAX_QUERY_IDS: usize = 1 << 16;

/// At most this many bytes, and ranges, in one ranges request.
pub const MAX_RANGES_BYTES: u64 = 256 << 20;
/// See `MAX_RANGES_BYTES`.
pub const MAX_RANGES: usize = 1 << 16;

/// The header of a `HEAD` answer that carries the object's size.
pub const OBJECT_SIZE_HEADER: &str = "x-object-size";

/// The routes, relative to a namespace's root (`namespace_root`), and
/// the server's own hello.
pub mod route {
    /// `GET /v1`: the server's hello, which anyone may ask (what it speaks,
    /// and the CI identities it accepts).
    pub const SERVER_HELLO: &str = "/v1";
    /// `GET` (hello): the protocol a server speaks.
    pub const HELLO: &str = "";
    /// `GET | HEAD | PUT | DELETE o/<key>`: one object.
    pub const OBJECT: &str = "o/";
    /// `POST ranges` with a `RangesRequest`: byte ranges of one object.
    pub const RANGES: &str = "ranges";
    /// `GET list?prefix=P`: a `KeyList`.
    pub const LIST: &str = "list";
    /// `POST chunks/missing` with chunk ids: one byte per id, 1 = missing.
    pub const MISSING: &str = "chunks/missing";
    /// `POST chunks/locate` with chunk ids: zstd of a located record per id.
    pub const LOCATE: &str = "chunks/locate";
    /// `POST objects?put=KEY:SIZE&...` (feature `objects`): several
    /// objects stored in order (`objects`).
    pub const OBJECTS: &str = "objects";
    /// `POST layers` (feature `layers`) with a `layers::LayersRequest`:
    /// layer refs and their manifests (`layers`).
    pub const LAYERS: &str = "layers";
    /// `GET stats`: the namespace's stats, as JSON.
    pub const STATS: &str = "stats";
    /// `POST gc?dry_run=B&grace_secs=N&max_size=S` (a `GcQuery`): gc's
    /// report, as JSON.
    pub const GC: &str = "gc";
    /// `GET footprints`: each live run's and cache entry's exclusive and
    /// shared stored bytes, as JSON.
    pub const FOOTPRINTS: &str = "footprints";
    /// `POST remove?run=R` or `?cache_key=K` (a `RemoveQuery`): drop a run
    /// or a cache key's entries; the report, as JSON.
    pub const REMOVE: &str = "remove";
    /// `POST urls` with a `urls::UrlsRequest`: presigned URLs of packs.
    pub const URLS: &str = "urls";
}

/// The root every route of namespace `ns` is under: `/v1/ns/NS/`.
pub fn namespace_root(ns: &str) -> String {
    format!("/v{PROTOCOL_VERSION}/ns/{ns}/")
}

/// Checks a namespace name: like a run name (`[A-Za-z0-9._-]`, 1-128, not
/// starting with `.`), since it becomes a directory or key prefix.
pub fn validate_namespace(ns: &str) -> Result<()> {
    RunName::new(ns).map(|_| ()).map_err(Error::from)
}

/// Checks an object key: `/`-separated components of `A-Z a-z 0-9 . _ -`,
/// none empty or starting with `.` (so keys can never climb out of a
/// directory, nor collide with a local store's `.local` and `.tmp`).
pub fn validate_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.split('/').all(|c| !c.is_empty() && is_component(c));
    if valid {
        Ok(())
    } else {
        Err(Error::corrupt(
            format!("object key {key:?}"),
            "not a valid key",
        ))
    }
}

/// A key's component, or its start: `A-Z a-z 0-9 . _ -`, not starting
/// with `.` (so no `..`, and no `.local` or `.tmp`).
fn is_component(c: &str) -> bool {
    !c.starts_with('.')
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The longest key or prefix a client may send.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a listing's prefix or `after` cursor: empty, or key components
/// (as `validate_key`) of which only the last may be empty (a prefix
/// ending in `/`) or partial. Every prefix and cursor a client sends goes
/// through here before it reaches a backend, and a directory backend
/// checks again, so a listing never leaves the store's root.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let parts: Vec<&str> = prefix.split('/').collect();
    let last = parts.len() - 1;
    let valid = prefix.len() <= MAX_KEY_LEN
        && (prefix.is_empty()
            || parts
                .iter()
                .enumerate()
                .all(|(i, c)| (!c.is_empty() || i == last) && is_component(c)));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what: "key prefix",
            value: prefix.chars().take(200).collect(),
            reason: "a prefix is made of key components (A-Z a-z 0-9 . _ -, not starting with .) \
                     separated by /",
        })
    }
}

/// The answer to hello: the protocol the server speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The server's protocol version.
    pub protocol: u32,
    /// The server's name and version (`strata 0.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The namespace asked about, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The CI identities the server accepts (`--oidc`), by CI, with the
    /// audience each token must carry: a runner with no token asks its
    /// CI for one with this audience.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc: Vec<OidcAudience>,
    /// The version of the `urls` route the server offers (`urls::URLS_VERSION`),
    /// when it hands out URLs to read packs from the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<u32>,
    /// The requests the server answers beyond protocol 1's first table
    /// (`objects::FEATURE`); a server that names none answers none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// A CI whose OIDC tokens the server accepts, and their audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcAudience {
    /// `github`, `gitlab`, `circleci` or `buildkite`.
    pub ci: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
}

/// The answer to `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// The keys under the prefix asked for, sorted.
    pub keys: Vec<String>,
}

/// The query of `list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only keys that start with this.
    #[serde(default)]
    pub prefix: String,
    /// Only keys that sort after this (none: all).
    #[serde(default)]
    pub after: Option<String>,
}

/// The body of `ranges`: byte ranges (`start`, `end`) of one object. The
/// answer is their bytes, concatenated in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangesRequest {
    /// The object's key.
    pub key: String,
    /// Half-open byte ranges.
    pub ranges: Vec<(u64, u64)>,
}

impl RangesRequest {
    /// Reads a ranges request a client sent, refusing (before anything is
    /// read from the store or a buffer sized) a malformed body, an invalid
    /// key, a reversed range, more than `MAX_RANGES` ranges or more than
    /// `MAX_RANGES_BYTES` in all (summed without overflow). Returns the
    /// request and its total bytes.
    pub fn decode(body: &[u8]) -> Result<(RangesRequest, u64)> {
        let req: RangesRequest = serde_json::from_slice(body).map_err(|e| Error::BadRequest {
            detail: format!("ranges: {e}"),
        })?;
        validate_key(&req.key)?;
        if req.ranges.len() > MAX_RANGES {
            return Err(Error::TooLarge {
                detail: format!("at most {MAX_RANGES} ranges per request"),
            });
        }
        let mut total = 0u64;
        for &(a, b) in &req.ranges {
            let len = b.checked_sub(a).ok_or_else(|| Error::BadRequest {
                detail: format!("range {a}..{b} is reversed"),
            })?;
            total = total
                .checked_add(len)
                .filter(|&t| t <= MAX_RANGES_BYTES)
                .ok_or_else(|| Error::TooLarge {
                    detail: format!("at most {MAX_RANGES_BYTES} bytes per ranges request"),
                })?;
        }
        Ok((req, total))
    }
}

impl ListQuery {
    /// Checks a listing's prefix and cursor (`validate_prefix`).
    pub fn validate(&self) -> Result<()> {
        validate_prefix(&self.prefix)?;
        match &self.after {
            Some(after) => validate_prefix(after),
            None => Ok(()),
        }
    }
}

/// The query of `gc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcQuery {
    /// Report what would be done, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The grace period, when not the server's default.
    #[serde(default)]
    pub grace_secs: Option<u64>,
    /// A storage budget in bytes, when not the namespace's own.
    #[serde(default)]
    pub max_size: Option<u64>,
}

impl GcQuery {
    /// The route with this query (`gc?dry_run=false&grace_secs=60`).
    pub fn path(&self) -> String {
        let mut path = format!("{}?dry_run={}", route::GC, self.dry_run);
        if let Some(g) = self.grace_secs {
            path.push_str(&format!("&grace_secs={g}"));
        }
        if let Some(m) = self.max_size {
            path.push_str(&format!("&max_size={m}"));
        }
        path
    }
}

/// The query of `POST remove`: one run, or every entry of one cache key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RemoveQuery {
    /// The run to drop.
    #[serde(default)]
    pub run: Option<String>,
    /// The cache key whose entries to delete.
    #[serde(default)]
    pub cache_key: Option<String>,
    /// Also when used within the grace period.
    #[serde(default)]
    pub force: bool,
}

impl RemoveQuery {
    /// The route with this query, its values percent-encoded.
    pub fn path(&self) -> String {
        let mut path = format!("{}?force={}", route::REMOVE, self.force);
        if let Some(r) = &self.run {
            path.push_str(&format!("&run={}", percent_encode(r)));
        }
        if let Some(k) = &self.cache_key {
            path.push_str(&format!("&cache_key={}", percent_encode(k)));
        }
        path
    }
}

/// `s` with every byte but unreserved ones (RFC 3986) as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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

/// The part of the `stats` answer a client reads to count chunks (the
/// whole answer is `ops::stats::StoreStats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsCount {
    /// Chunks the namespace's index holds.
    pub chunks: u64,
}

/// The body of every error answer (docs/protocol.md, "Errors").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// The library error's stable name (`ErrorKind::name`), when the
    /// library raised it; an older server sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl ErrorBody {
    /// The body for a library error, named by its kind.
    pub fn of(e: &crate::Error) -> Self {
        ErrorBody {
            error: e.to_string(),
            kind: Some(e.kind().name().to_string()),
        }
    }

    /// The kind named, if this version knows it.
    pub fn error_kind(&self) -> Option<crate::ErrorKind> {
        crate::ErrorKind::from_name(self.kind.as_deref()?)
    }
}

/// Decodes a JSON answer from a server: every JSON body a client reads
/// goes through here (and the `server_answers` fuzz target drives it with
/// every answer type), so an answer that is not what was asked for is an
/// error, never a panic.
pub fn decode_answer<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> std::result::Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// The JSON of an answer (`decode_answer` reads it back).
pub fn encode_answer<T: Serialize>(answer: &T) -> Vec<u8> {
    #[allow(clippy::expect_used)] // answers are plain data with string keys
    serde_json::to_vec(answer).expect("answers serialize")
}

/// The message of a server's error answer (or the start of its body).
pub fn error_text(body: &[u8]) -> String {
    decode_answer::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// The body of a chunk query: the ids, 32 bytes each.
pub fn encode_ids(ids: &[ChunkId]) -> Vec<u8> {
    let mut body = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        body.extend_from_slice(&id.0);
    }
    body
}

/// Reads a chunk query's body, or says what is wrong with it.
pub fn decode_ids(body: &[u8]) -> std::result::Result<Vec<ChunkId>, String> {
    if !body.len().is_multiple_of(32) {
        return Err("a chunk query is a list of 32-byte ids".into());
    }
    if body.len() / 32 > MAX_QUERY_IDS {
        return Err(format!("at most {MAX_QUERY_IDS} ids per query"));
    }
    Ok(body
        .chunks_exact(32)
        .map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            ChunkId(id)
        })
        .collect())
}

/// The answer to `missing`: one byte per id, 1 where it is missing.
pub fn encode_missing(missing: &[bool]) -> Vec<u8> {
    missing.iter().map(|&m| u8::from(m)).collect()
}

/// Reads the answer to `missing` for `asked` ids.
pub fn decode_missing(asked: usize, body: &[u8]) -> std::result::Result<Vec<bool>, String> {
    if body.len() != asked {
        return Err(format!("{} answers for {asked} ids", body.len()));
    }
    body.iter()
        .map(|&b| match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(format!("answer byte {b} is neither 0 nor 1")),
        })
        .collect()
}

/// The answer to `locate`: per id a byte 1 and its `N`-byte location
/// record, or a byte 0, all zstd-compressed (neighbouring chunks share
/// their pack and frame, so the records compress well).
pub fn encode_located<const N: usize>(records: &[Option<[u8; N]>]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(records.len() * (N + 1));
    for r in records {
        match r {
            Some(r) => {
                raw.push(1);
                raw.extend_from_slice(r);
            }
            None => raw.push(0),
        }
    }
    #[allow(clippy::expect_used)] // compressing into memory fails only without memory
    zstd::bulk::compress(&raw, 1).expect("compressing to memory cannot fail")
}

/// Reads the answer to `locate` for `asked` ids.
pub fn decode_located<const N: usize>(
    asked: usize,
    body: &[u8],
) -> std::result::Result<Vec<Option<[u8; N]>>, String> {
    let raw =
        zstd::bulk::decompress(body, asked * (N + 1)).map_err(|e| format!("bad answer: {e}"))?;
    let mut rest = raw.as_slice();
    let mut out = Vec::with_capacity(asked);
    for _ in 0..asked {
        match rest.split_first() {
            Some((0, r)) => {
                out.push(None);
                rest = r;
            }
            Some((1, r)) if r.len() >= N => {
                let mut record = [0u8; N];
                record.copy_from_slice(&r[..N]);
                out.push(Some(record));
                rest = &r[N..];
            }
            _ => return Err("truncated or malformed".into()),
        }
    }
    if rest.is_empty() {
        Ok(out)
    } else {
        Err("trailing bytes".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_queries_round_trip() {
        let ids: Vec<ChunkId> = (0..5u8).map(|i| ChunkId::of(&[i])).collect();
        assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        assert!(decode_ids(&[0; 33]).is_err());
        let missing = [true, false, true];
        assert_eq!(
            decode_missing(3, &encode_missing(&missing)).unwrap(),
            missing
        );
        assert!(decode_missing(2, &encode_missing(&missing)).is_err());
        assert!(decode_missing(1, &[2]).is_err());
        let located = [Some([7u8; 4]), None, Some([9u8; 4])];
        assert_eq!(
            decode_located::<4>(3, &encode_located(&located)).unwrap(),
            located
        );
        assert!(decode_located::<4>(2, &encode_located(&located)).is_err());
        assert!(decode_located::<5>(3, &encode_located(&located)).is_err());
    }

    #[test]
    fn answers_round_trip_and_errors_are_read() {
        let hello = Hello {
            oidc: Vec::new(),
            protocol: PROTOCOL_VERSION,
            server: Some("strata test".into()),
            namespace: None,
            urls: None,
            features: vec![objects::FEATURE.into()],
        };
        assert_eq!(
            decode_answer::<Hello>(&encode_answer(&hello)).unwrap(),
            hello
        );
        // An older server names no features: it answers none of them.
        let old: Hello = decode_answer(br#"{"protocol":1}"#).unwrap();
        assert!(old.features.is_empty());
        let body = encode_answer(&ErrorBody {
            error: "no such thing".into(),
            kind: None,
        });
        assert_eq!(error_text(&body), "no such thing");
        // An old server's body has no kind; it reads as none, and a body
        // without one is what an old client reads too.
        assert_eq!(body, br#"{"error":"no such thing"}"#);
        let old: ErrorBody = decode_answer(br#"{"error":"x"}"#).unwrap();
        assert_eq!(old.error_kind(), None);
        let e = crate::Error::GraceTooShort {
            asked: 1,
            floor: 60,
        };
        let sent: ErrorBody = decode_answer(&encode_answer(&ErrorBody::of(&e))).unwrap();
        assert_eq!(sent.error_kind(), Some(crate::ErrorKind::GraceTooShort));
        assert_eq!(sent.error, e.to_string());
        let newer: ErrorBody = decode_answer(br#"{"error":"x","kind":"from_2030"}"#).unwrap();
        assert_eq!(newer.error_kind(), None);
        assert_eq!(error_text(b"plain text"), "plain text");
        let q = GcQuery {
            dry_run: true,
            grace_secs: Some(60),
            max_size: Some(1 << 30),
        };
        assert_eq!(
            q.path(),
            "gc?dry_run=true&grace_secs=60&max_size=1073741824"
        );
        let r = RemoveQuery {
            run: None,
            cache_key: Some("deps v1/&=x".into()),
            force: true,
        };
        assert_eq!(r.path(), "remove?force=true&cache_key=deps%20v1%2F%26%3Dx");
    }
}
