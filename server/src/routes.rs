//! The HTTP routes of protocol v1 (docs/protocol.md), each a thin adapter.
//! Every request of a namespace passes `gate` first, before its body is
//! read: the namespace's name, the token's grant, the rate, and what
//! `strata_store::access` allows for the route and the object's kind.
//! Handlers then run the store call on a store-work thread (`sched`), with the grant
//! for what only the body says (`ingest`), and map the library's error to
//! a status.

// Handlers return `Result<_, Response>` so `?` turns a refusal into the
// answer; a response is large, but built once per refused request.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use strata_store::access::{self, Grant};
use strata_store::format::index::LOCATION_LEN;
use strata_store::format::keys::classify;
use strata_store::id::ChunkId;
use strata_store::lookup::ChunkLookup;
use strata_store::protocol::{
    decode_ids, encode_located, encode_missing, validate_key, validate_namespace, GcQuery, Hello,
    KeyList, ListQuery, RangesRequest, RemoveQuery, OBJECT_SIZE_HEADER, PROTOCOL_VERSION,
};
use strata_store::Error;

use crate::auth::bearer;
use crate::state::{authenticate, error, from_store, log, with_store, Answer, Granted, St, State};

pub(crate) fn router(state: Arc<State>) -> Router {
    let max_body = state.max_body;
    let observe = middleware::from_fn_with_state(state.metrics.clone(), crate::metrics::observe);
    let namespaced = Router::new()
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
        .route("/v1/ns/{ns}/objects", post(crate::objects::put_objects))
        .route("/v1/ns/{ns}/list", get(list))
        .route("/v1/ns/{ns}/chunks/missing", post(missing))
        .route("/v1/ns/{ns}/chunks/locate", post(locate))
        .route("/v1/ns/{ns}/stats", get(stats))
        .route("/v1/ns/{ns}/gc", post(gc))
        .route("/v1/ns/{ns}/footprints", get(footprints))
        .route("/v1/ns/{ns}/remove", post(remove))
        .route("/v1/ns/{ns}/urls", post(crate::presign::urls))
        .route("/v1/ns/{ns}/layers", post(crate::layers::layers))
        .route_layer(middleware::from_fn_with_state(state.clone(), gate))
        .route_layer(observe.clone());
    Router::new()
        .route("/v1", get(hello_server))
        .route("/metrics", get(scrape))
        .merge(crate::web::router())
        .route_layer(observe)
        .merge(namespaced)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// What `access` is asked about a request whose path, after
/// `/v1/ns/{ns}`, is `tail` (before its body is read): `kind` is its
/// object's, `dry_run` a gc's query.
fn access_request<'k>(
    method: &Method,
    tail: &str,
    kind: Option<&'k strata_store::format::keys::ObjectKind>,
    dry_run: bool,
) -> access::Request<'k> {
    match (tail, kind) {
        (_, Some(kind)) if method == Method::PUT => access::Request::Put(kind),
        (_, Some(kind)) if method == Method::DELETE => access::Request::Delete(kind),
        ("/gc", _) => access::Request::Gc { dry_run },
        ("/remove", _) => access::Request::Remove,
        ("" | "/", _) => access::Request::Hello,
        _ => access::Request::Read,
    }
}

/// The gate of every namespaced request, run before its body is read:
/// the namespace's name, the key's form, the token's grant, the rate, and
/// what the grant allows for the route and the object's kind. The grant
/// and the client's name go on to the handler.
async fn gate(
    AxState(s): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(params): Path<std::collections::HashMap<String, String>>,
    mut request: Request,
    next: Next,
) -> Answer {
    let ns = params.get("ns").cloned().unwrap_or_default();
    if validate_namespace(&ns).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid namespace {ns:?}"),
        ));
    }
    let (grant, client) = match s.auth.is_none() && s.oidc.is_none() {
        true => (Grant::everything(&ns), peer.ip().to_string()),
        false => {
            let token = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
                .map(str::to_string);
            let grant = authenticate(&s, token, &ns).await?;
            let name = grant.name.clone();
            (grant, name)
        }
    };
    if let Some(limiter) = &s.limiter {
        if let Err(wait) = limiter.take(&client, Instant::now()) {
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate limit; retry later");
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(wait));
            return Err(resp);
        }
    }
    // The key's form only once the client is known: a stranger learns
    // nothing but 401.
    let kind = match params.get("key") {
        Some(key) => {
            validate_key(key).map_err(from_store)?;
            Some(classify(key).map_err(from_store)?)
        }
        None => None,
    };
    let path = request.uri().path();
    let tail = path
        .strip_prefix("/v1/ns/")
        .and_then(|p| p.strip_prefix(ns.as_str()))
        .unwrap_or(path)
        .to_string();
    // A gc query that does not parse counts as a real gc, the stricter;
    // its handler then refuses it.
    let dry_run = Query::<GcQuery>::try_from_uri(request.uri()).is_ok_and(|Query(q)| q.dry_run);
    let asked = access_request(request.method(), &tail, kind.as_ref(), dry_run);
    access::allow(&grant, &ns, &asked).map_err(from_store)?;
    // Several objects in one request: each one's right, as its PUT's.
    if tail == "/objects" {
        crate::objects::allow_all(&grant, &ns, request.uri().query(), s.max_body)?;
    }
    // Its store calls wait their turn as this client's: its token's name
    // and its address (runners sharing a token are still told apart).
    let turn = match s.auth.is_none() && s.oidc.is_none() {
        true => client.clone(),
        false => format!("{client}@{}", peer.ip()),
    };
    request.extensions_mut().insert(Arc::new((grant, client)));
    Ok(crate::sched::as_client(turn, next.run(request)).await)
}

fn hello_body(s: &State, ns: Option<&str>) -> Response {
    axum::Json(Hello {
        protocol: PROTOCOL_VERSION,
        server: Some(format!("strata {}", env!("CARGO_PKG_VERSION"))),
        namespace: ns.map(str::to_string),
        oidc: s.oidc.as_ref().map(|o| o.audiences()).unwrap_or_default(),
        urls: s
            .presign_ttl
            .map(|_| strata_store::protocol::urls::URLS_VERSION),
        features: vec![
            strata_store::protocol::objects::FEATURE.to_string(),
            strata_store::protocol::layers::FEATURE.to_string(),
        ],
    })
    .into_response()
}

async fn hello_server(AxState(s): St) -> Response {
    hello_body(&s, None)
}

async fn hello(AxState(s): St, Path(ns): Path<String>) -> Answer {
    // Opening the namespace here creates its store, so the first command
    // of a new namespace finds a config to read.
    with_store(&s, &ns, |_| Ok(())).await?;
    Ok(hello_body(&s, Some(&ns)))
}

async fn get_object(AxState(s): St, Path((ns, key)): Path<(String, String)>) -> Answer {
    let bytes = with_store(&s, &ns, move |store| store.backend().get(&key)).await?;
    Ok(bytes.into_response())
}

async fn head_object(AxState(s): St, Path((ns, key)): Path<(String, String)>) -> Answer {
    let size = with_store(&s, &ns, move |store| store.backend().size(&key)).await?;
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(OBJECT_SIZE_HEADER, HeaderValue::from(size));
    Ok(resp)
}

async fn put_object(
    AxState(s): St,
    Path((ns, key)): Path<(String, String)>,
    Extension(granted): Granted,
    body: Bytes,
) -> Answer {
    let started = Instant::now();
    let len = body.len();
    let k = key.clone();
    let g = granted.clone();
    let metrics = s.metrics.clone();
    let result = with_store(&s, &ns, move |store| {
        let stored = strata_store::ingest::put_checked(store, &g.0, &k, &body)?;
        metrics.accepted(store, &k, &body);
        Ok(stored)
    })
    .await;
    let status = match &result {
        Ok(_) => 204,
        Err(r) => r.status().as_u16(),
    };
    log(
        &s,
        &granted.1,
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
    Extension(granted): Granted,
) -> Answer {
    log(&s, &granted.1, format_args!("DELETE {ns}/{key}"));
    with_store(&s, &ns, move |store| {
        strata_store::ingest::delete_checked(store, &key)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ranges(
    AxState(s): St,
    Path(ns): Path<String>,
    Extension(granted): Granted,
    body: Bytes,
) -> Answer {
    let (req, total) = RangesRequest::decode(&body).map_err(from_store)?;
    let ranges: Vec<std::ops::Range<u64>> = req.ranges.iter().map(|&(a, b)| a..b).collect();
    let key = req.key;
    log(
        &s,
        &granted.1,
        format_args!("POST {ns}/ranges {key}: {} ranges, {total} B", ranges.len()),
    );
    let bytes = with_store(&s, &ns, move |store| {
        let mut parts = store.backend().get_ranges(&key, &ranges)?;
        // One range (a client coalesces a pack's frames into one): the
        // answer is it, without a copy.
        Ok(match parts.len() {
            1 => parts.pop().unwrap_or_default(),
            _ => parts.concat(),
        })
    })
    .await?;
    Ok(bytes.into_response())
}

async fn list(AxState(s): St, Path(ns): Path<String>, Query(q): Query<ListQuery>) -> Answer {
    q.validate().map_err(from_store)?;
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
    body: Bytes,
    answer: impl FnOnce(&dyn ChunkLookup, &[ChunkId]) -> strata_store::Result<Vec<u8>> + Send + 'static,
) -> Answer {
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

async fn missing(AxState(s): St, Path(ns): Path<String>, body: Bytes) -> Answer {
    let metrics = s.metrics.clone();
    chunk_query(s, ns, body, move |lookup, ids| {
        let missing = lookup.missing(ids)?;
        metrics.chunk_query(ids.len(), missing.iter().filter(|m| **m).count());
        Ok(encode_missing(&missing))
    })
    .await
}

async fn locate(AxState(s): St, Path(ns): Path<String>, body: Bytes) -> Answer {
    chunk_query(s, ns, body, |lookup, ids| {
        let records: Vec<Option<[u8; LOCATION_LEN]>> = lookup
            .locate(ids)?
            .into_iter()
            .map(|l| l.map(|l| l.to_bytes()))
            .collect();
        Ok(encode_located(&records))
    })
    .await
}

async fn stats(AxState(s): St, Path(ns): Path<String>) -> Answer {
    let stats = with_store(&s, &ns, strata_store::stats::store_stats).await?;
    Ok(axum::Json(stats).into_response())
}

async fn gc(
    AxState(s): St,
    Path(ns): Path<String>,
    Query(q): Query<GcQuery>,
    Extension(granted): Granted,
) -> Answer {
    let budget = q.max_size.or(s.budgets.of(&ns));
    let (metrics, n) = (s.metrics.clone(), ns.clone());
    let report = with_store(&s, &ns, move |store| {
        let grace = access::gc_grace(q.grace_secs, store.config().gc_grace_secs)?;
        let options = strata_store::gc::GcOptions {
            dry_run: q.dry_run,
            grace_secs: Some(grace),
            max_size: budget,
            ..Default::default()
        };
        let report = strata_store::gc::gc(store, &options);
        if !q.dry_run {
            metrics.gc_pass(&n, &report);
        }
        report
    })
    .await?;
    log(
        &s,
        &granted.1,
        format_args!(
            "gc {ns}: {} runs expired, {} evicted over budget, {} packs deleted, {} B reclaimed",
            report.runs_expired.len(),
            report.evicted.len(),
            report.packs_deleted,
            report.bytes_reclaimed
        ),
    );
    Ok(axum::Json(report).into_response())
}

async fn footprints(AxState(s): St, Path(ns): Path<String>) -> Answer {
    let f = with_store(&s, &ns, strata_store::gc::budget::footprints).await?;
    Ok(axum::Json(f).into_response())
}

/// `POST remove`: an admin drops a run or a cache key's entries; the run's
/// record names the grant that asked.
async fn remove(
    AxState(s): St,
    Path(ns): Path<String>,
    Query(q): Query<RemoveQuery>,
    Extension(granted): Granted,
) -> Answer {
    let by = granted.0.name.clone();
    let report = with_store(&s, &ns, move |store| match (&q.run, &q.cache_key) {
        (Some(run), None) => {
            let run = strata_store::RunName::new(run)?;
            strata_store::remove::remove_run(store, &run, &by, q.force)
        }
        (None, Some(key)) => strata_store::remove::remove_cache(store, key, q.force),
        _ => Err(Error::BadRequest {
            detail: "remove takes one of run= and cache_key=".into(),
        }),
    })
    .await?;
    for name in &report.removed {
        log(&s, &granted.1, format_args!("removed {name} from {ns}"));
    }
    Ok(axum::Json(report).into_response())
}

/// `GET /metrics`: for a token of scope `metrics` (`access`), or anyone
/// when the server runs without tokens, as every route is then.
pub(crate) async fn scrape(AxState(s): St, headers: axum::http::HeaderMap) -> Response {
    if s.auth.is_some() || s.oidc.is_some() {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer);
        let Some(grant) = s.auth.as_ref().and_then(|a| a.grant(token).ok()) else {
            let mut resp = error(StatusCode::UNAUTHORIZED, "unknown token");
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return resp;
        };
        let asked = strata_store::access::Request::Metrics;
        if let Err(e) = strata_store::access::allow(grant, "", &asked) {
            return from_store(e);
        }
    }
    let state = s.clone();
    let counted = tokio::task::spawn_blocking(move || {
        for ns in state.namespaces.open_names() {
            if let Ok(store) = state.namespaces.get(&ns) {
                state.metrics.synced(&ns, store.chunk_lookup().syncs());
            }
        }
    })
    .await;
    if counted.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    s.metrics.queue_depth(s.pool.depth());
    s.metrics.encode()
}
