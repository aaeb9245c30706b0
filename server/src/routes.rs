//! The HTTP routes of protocol v1 (docs/protocol.md), each a thin adapter:
//! check the namespace, token and rate; run the store call on a blocking
//! thread; map the library's error to a status.

// Handlers return `Result<_, Response>` so `?` turns a refusal into the
// answer; a response is large, but built once per refused request.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use strata_store::format::index::LOCATION_LEN;
use strata_store::id::ChunkId;
use strata_store::lookup::ChunkLookup;
use strata_store::protocol::{
    decode_ids, encode_located, encode_missing, validate_namespace, ErrorBody, GcQuery, Hello,
    KeyList, ListQuery, RangesRequest, MAX_RANGES, MAX_RANGES_BYTES, OBJECT_SIZE_HEADER,
    PROTOCOL_VERSION,
};
use strata_store::{Error, Store};

use crate::auth::{Auth, Refusal, Scope};
use crate::limits::Limiter;
use crate::Namespaces;

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) namespaces: Namespaces,
    pub(crate) auth: Option<Auth>,
    pub(crate) limiter: Option<Limiter>,
    pub(crate) max_body: usize,
    pub(crate) log: bool,
}

type St = AxState<Arc<State>>;
type Peer = ConnectInfo<SocketAddr>;

pub(crate) fn router(state: Arc<State>) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/v1", get(hello_server))
        .route("/v1/ns/{ns}", get(hello))
        .route("/v1/ns/{ns}/", get(hello))
        .route(
            "/v1/ns/{ns}/o/{*key}",
            get(get_object)
                .head(head_object)
                .put(put_object)
                .delete(delete_object),
        )
        .route("/v1/ns/{ns}/ranges", post(ranges))
        .route("/v1/ns/{ns}/list", get(list))
        .route("/v1/ns/{ns}/chunks/missing", post(missing))
        .route("/v1/ns/{ns}/chunks/locate", post(locate))
        .route("/v1/ns/{ns}/stats", get(stats))
        .route("/v1/ns/{ns}/gc", post(gc))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

/// The status for a library error.
fn from_store(e: Error) -> Response {
    let status = match &e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Corrupt { .. }
        | Error::CorruptChunk { .. }
        | Error::InvalidId { .. }
        | Error::InvalidName { .. }
        | Error::MissingChunk { .. }
        | Error::UnknownRun { .. }
        | Error::UnknownJob { .. }
        | Error::UnsupportedVersion { .. } => StatusCode::BAD_REQUEST,
        Error::Incomplete { .. } | Error::GcBusy { .. } => StatusCode::CONFLICT,
        Error::Refused { .. } => StatusCode::FORBIDDEN,
        Error::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// Checks the namespace's name, the token and the rate; returns the
/// client's name for the log.
fn gate(
    state: &State,
    headers: &HeaderMap,
    peer: SocketAddr,
    ns: &str,
    scope: Scope,
) -> Result<String, Response> {
    if validate_namespace(ns).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid namespace {ns:?}"),
        ));
    }
    let client = match &state.auth {
        None => peer.ip().to_string(),
        Some(auth) => {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            auth.check(token, ns, scope).map_err(|r| match r {
                Refusal::Unauthenticated(why) => {
                    let mut resp = error(StatusCode::UNAUTHORIZED, why);
                    resp.headers_mut()
                        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
                    resp
                }
                Refusal::Forbidden(why) => error(StatusCode::FORBIDDEN, why),
            })?
        }
    };
    if let Some(limiter) = &state.limiter {
        if let Err(wait) = limiter.take(&client, Instant::now()) {
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate limit; retry later");
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(wait));
            return Err(resp);
        }
    }
    Ok(client)
}

/// Runs `f` on the namespace's store on a blocking thread.
async fn with_store<T: Send + 'static>(
    state: &Arc<State>,
    ns: &str,
    f: impl FnOnce(&Store) -> strata_store::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let state = state.clone();
    let ns = ns.to_string();
    tokio::task::spawn_blocking(move || {
        let store = state.namespaces.get(&ns)?;
        f(&store)
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(from_store)
}

fn log(state: &State, client: &str, what: std::fmt::Arguments<'_>) {
    if state.log {
        crate::log::line(format_args!("{client}: {what}"));
    }
}

/// A handler's answer: a refusal (`Err`) is an answer too, so `?` on
/// `gate` and `with_store` returns it.
type Answer = Result<Response, Response>;

fn hello_body(ns: Option<&str>) -> Response {
    axum::Json(Hello {
        protocol: PROTOCOL_VERSION,
        server: Some(format!("strata {}", env!("CARGO_PKG_VERSION"))),
        namespace: ns.map(str::to_string),
    })
    .into_response()
}

async fn hello_server() -> Response {
    hello_body(None)
}

async fn hello(
    AxState(s): St,
    Path(ns): Path<String>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Answer {
    gate(&s, &headers, peer, &ns, Scope::Read)?;
    // Opening the namespace here creates its store, so the first command
    // of a new namespace finds a config to read.
    with_store(&s, &ns, |_| Ok(())).await?;
    Ok(hello_body(Some(&ns)))
}

async fn get_object(
    AxState(s): St,
    Path((ns, key)): Path<(String, String)>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Answer {
    gate(&s, &headers, peer, &ns, Scope::Read)?;
    let bytes = with_store(&s, &ns, move |store| store.backend().get(&key)).await?;
    Ok(bytes.into_response())
}

async fn head_object(
    AxState(s): St,
    Path((ns, key)): Path<(String, String)>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Answer {
    gate(&s, &headers, peer, &ns, Scope::Read)?;
    let size = with_store(&s, &ns, move |store| store.backend().size(&key)).await?;
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(OBJECT_SIZE_HEADER, HeaderValue::from(size));
    Ok(resp)
}

async fn put_object(
    AxState(s): St,
    Path((ns, key)): Path<(String, String)>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    // Use records are written by readers too (an attach is a use).
    let scope = match strata_store::format::keys::classify(&key) {
        Ok(kind) if kind.is_use_record() => Scope::Read,
        _ => Scope::Write,
    };
    let client = gate(&s, &headers, peer, &ns, scope)?;
    // A token may be limited to some cache keys (a pull request's).
    if let (Some(auth), Some(hex)) = (&s.auth, strata_store::format::keys::cache_hex_of(&key)) {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cache_key = strata_store::format::keys::unhex_key(hex).unwrap_or_default();
        auth.may_save_cache(token, &cache_key)
            .map_err(|r| match r {
                Refusal::Unauthenticated(why) => error(StatusCode::UNAUTHORIZED, why),
                Refusal::Forbidden(why) => error(StatusCode::FORBIDDEN, why),
            })?;
    }
    let started = Instant::now();
    let len = body.len();
    let k = key.clone();
    let result = with_store(&s, &ns, move |store| {
        strata_store::ingest::put_checked(store, &k, &body)
    })
    .await;
    let status = match &result {
        Ok(_) => 204,
        Err(r) => r.status().as_u16(),
    };
    log(
        &s,
        &client,
        format_args!(
            "PUT {ns}/{key} {len} B -> {status} in {} ms",
            started.elapsed().as_millis()
        ),
    );
    result?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_object(
    AxState(s): St,
    Path((ns, key)): Path<(String, String)>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Answer {
    let client = gate(&s, &headers, peer, &ns, Scope::Write)?;
    log(&s, &client, format_args!("DELETE {ns}/{key}"));
    with_store(&s, &ns, move |store| {
        strata_store::ingest::delete_checked(store, &key)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ranges(
    AxState(s): St,
    Path(ns): Path<String>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let client = gate(&s, &headers, peer, &ns, Scope::Read)?;
    let req: RangesRequest = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("ranges: {e}")))?;
    let mut total = 0u64;
    for &(a, b) in &req.ranges {
        if b < a {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("range {a}..{b} is reversed"),
            ));
        }
        total += b - a;
    }
    if total > MAX_RANGES_BYTES || req.ranges.len() > MAX_RANGES {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many bytes in one ranges request",
        ));
    }
    let ranges: Vec<std::ops::Range<u64>> = req.ranges.iter().map(|&(a, b)| a..b).collect();
    let key = req.key;
    log(
        &s,
        &client,
        format_args!("POST {ns}/ranges {key}: {} ranges, {total} B", ranges.len()),
    );
    let bytes = with_store(&s, &ns, move |store| {
        Ok(store.backend().get_ranges(&key, &ranges)?.concat())
    })
    .await?;
    Ok(bytes.into_response())
}

async fn list(
    AxState(s): St,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Answer {
    gate(&s, &headers, peer, &ns, Scope::Read)?;
    let keys = with_store(&s, &ns, move |store| match &q.after {
        Some(after) => store.backend().list_after(&q.prefix, after),
        None => store.backend().list(&q.prefix),
    })
    .await?;
    Ok(axum::Json(KeyList { keys }).into_response())
}

/// A chunk query: the body is chunk ids, 32 bytes each; `answer` turns
/// the store's chunk lookup and the ids into the response body.
async fn chunk_query(
    s: Arc<State>,
    ns: String,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Bytes,
    answer: fn(&dyn ChunkLookup, &[ChunkId]) -> strata_store::Result<Vec<u8>>,
) -> Answer {
    gate(&s, &headers, peer, &ns, Scope::Read)?;
    let ids = decode_ids(&body).map_err(|why| {
        let status = if body.len().is_multiple_of(32) {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        error(status, why)
    })?;
    let bytes = with_store(&s, &ns, move |store| answer(store.chunk_lookup(), &ids)).await?;
    Ok(bytes.into_response())
}

async fn missing(
    AxState(s): St,
    Path(ns): Path<String>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    chunk_query(s, ns, peer, headers, body, |lookup, ids| {
        Ok(encode_missing(&lookup.missing(ids)?))
    })
    .await
}

async fn locate(
    AxState(s): St,
    Path(ns): Path<String>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    chunk_query(s, ns, peer, headers, body, |lookup, ids| {
        let records: Vec<Option<[u8; LOCATION_LEN]>> = lookup
            .locate(ids)?
            .into_iter()
            .map(|l| l.map(|l| l.to_bytes()))
            .collect();
        Ok(encode_located(&records))
    })
    .await
}

async fn stats(
    AxState(s): St,
    Path(ns): Path<String>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Answer {
    gate(&s, &headers, peer, &ns, Scope::Read)?;
    let stats = with_store(&s, &ns, strata_store::stats::store_stats).await?;
    Ok(axum::Json(stats).into_response())
}

async fn gc(
    AxState(s): St,
    Path(ns): Path<String>,
    Query(q): Query<GcQuery>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Answer {
    // A dry run changes nothing: readers may ask what gc would do.
    let scope = if q.dry_run { Scope::Read } else { Scope::Write };
    let client = gate(&s, &headers, peer, &ns, scope)?;
    let options = strata_store::gc::GcOptions {
        dry_run: q.dry_run,
        grace_secs: q.grace_secs,
        ..Default::default()
    };
    let report = with_store(&s, &ns, move |store| strata_store::gc::gc(store, &options)).await?;
    log(
        &s,
        &client,
        format_args!(
            "gc {ns}: {} runs expired, {} packs deleted, {} B reclaimed",
            report.runs_expired.len(),
            report.packs_deleted,
            report.bytes_reclaimed
        ),
    );
    Ok(axum::Json(report).into_response())
}
