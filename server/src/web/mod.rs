//! `strata serve`'s web page (docs/deploy.md, "The web page"): a small
//! read-only UI at `/ui`, rendered on the server, with no script and no
//! asset from elsewhere. Namespaces → runs (status, jobs, graph, expiry)
//! and caches → a layer's files as a tree → a file, or a directory as a
//! `.tar.zst` or `.zip`, streamed from the chunks.
//!
//! The same tokens as the API: a bearer header, or the token typed once
//! into the page, which the server keeps in a cookie (`HttpOnly`, so no
//! script reads it; `SameSite=Strict`, so no other site's page sends it;
//! `Secure` under TLS). Every page needs a grant that may read its
//! namespace (`access`, the table's `GET /ui/N/…` row). The pages only
//! read, so a forged cross-site request could do nothing but fetch a page
//! its sender cannot see.
//!
//! This module parses, calls `strata_store::browse` and `stats`, and
//! renders (`html`); it knows nothing about manifests' encoding or chunks.

// Handlers return `Result<_, Response>` so `?` turns a refusal into the
// answer, as routes.rs does.
#![allow(clippy::result_large_err)]

mod html;
mod pages;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use strata_store::access;
use strata_store::protocol::web;

use crate::state::State;

type St = AxState<Arc<State>>;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/", get(|| async { redirect("/ui") }))
        .route("/ui", get(pages::home))
        .route("/ui/login", post(login))
        .route("/ui/ns/{ns}", get(pages::namespace))
        .route("/ui/ns/{ns}/run/{run}", get(pages::run))
        .route("/ui/ns/{ns}/layer/{manifest}", get(pages::layer))
        .route("/ui/ns/{ns}/file/{manifest}", get(file))
        .route("/ui/ns/{ns}/tar/{manifest}", get(tar))
        .route("/ui/ns/{ns}/zip/{manifest}", get(zip))
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert("location", v);
    }
    r
}

/// The request's token: its bearer header's, or the page's cookie's.
fn token(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
    {
        return Some(t.to_string());
    }
    let values = headers.get_all("cookie");
    web::cookie_token(values.iter().filter_map(|v| v.to_str().ok())).map(str::to_string)
}

/// Whether the server asks for tokens at all.
fn open(s: &State) -> bool {
    s.auth.is_none() && s.oidc.is_none()
}

/// Refuses a request whose token may not read namespace `ns`: the login
/// form without a token, `403` with one that may not.
async fn allow(s: &Arc<State>, headers: &HeaderMap, ns: &str) -> Result<(), Response> {
    strata_store::protocol::validate_namespace(ns).map_err(crate::state::from_store)?;
    if open(s) {
        return Ok(());
    }
    let Some(token) = token(headers) else {
        return Err(pages::login_form(StatusCode::UNAUTHORIZED));
    };
    let grant = match crate::state::authenticate(s, Some(token), ns).await {
        Ok(g) => g,
        Err(r) if r.status() == StatusCode::UNAUTHORIZED => {
            return Err(pages::login_form(StatusCode::UNAUTHORIZED))
        }
        Err(r) => return Err(r),
    };
    access::allow(&grant, ns, &access::Request::Read).map_err(crate::state::from_store)
}

/// `POST /ui/login`: the form's body is `token=…` (`web::login_token`);
/// the answer sets the cookie and goes home.
async fn login(s: St, headers: HeaderMap, body: Bytes) -> Response {
    let token = web::login_token(&body);
    let known =
        token.filter(|t| open(&s) || s.auth.as_ref().is_some_and(|a| a.grant(Some(t)).is_ok()));
    let Some(token) = known else {
        return pages::login_form(StatusCode::UNAUTHORIZED);
    };
    let tls = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v == "https")
        || s.tls;
    let cookie = web::set_cookie(token, tls);
    let mut r = redirect("/ui");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert("set-cookie", v);
    }
    r
}

#[derive(Debug, Deserialize)]
struct PathQuery {
    #[serde(default)]
    path: String,
}

/// The manifest of a layer page's URL.
fn manifest_id(hex: &str) -> Result<strata_store::ManifestId, Response> {
    hex.parse().map_err(|_| {
        crate::state::error(
            StatusCode::BAD_REQUEST,
            format!("invalid manifest id {hex:?}"),
        )
    })
}

/// `GET /ui/ns/N/file/M?path=P`: one file's bytes, streamed.
async fn file(
    s: St,
    headers: HeaderMap,
    Path((ns, m)): Path<(String, String)>,
    Query(q): Query<PathQuery>,
) -> Response {
    let name = q.path.rsplit('/').next().unwrap_or("file").to_string();
    download(s, headers, ns, m, name, move |store, manifest, out| {
        let chunks = strata_store::browse::archive::file_chunks(manifest, q.path.as_bytes())?;
        let mut reader = strata_store::browse::archive::ChunkReader::new(store, chunks);
        std::io::copy(&mut reader, out)
            .map_err(|e| strata_store::Error::io("send", q.path.clone(), e))?;
        Ok(())
    })
    .await
}

/// `GET /ui/ns/N/tar/M?path=DIR`: a directory as a `.tar.zst`, streamed.
async fn tar(
    s: St,
    headers: HeaderMap,
    Path((ns, m)): Path<(String, String)>,
    Query(q): Query<PathQuery>,
) -> Response {
    let name = archive_name(&q.path, &m, "tar.zst");
    download(s, headers, ns, m, name, move |store, manifest, out| {
        strata_store::browse::archive::write_tar_zst(store, manifest, q.path.as_bytes(), out)
    })
    .await
}

/// `GET /ui/ns/N/zip/M?path=DIR`: a directory as a `.zip`, streamed.
async fn zip(
    s: St,
    headers: HeaderMap,
    Path((ns, m)): Path<(String, String)>,
    Query(q): Query<PathQuery>,
) -> Response {
    let name = archive_name(&q.path, &m, "zip");
    download(s, headers, ns, m, name, move |store, manifest, out| {
        strata_store::browse::archive::write_zip(store, manifest, q.path.as_bytes(), out)
    })
    .await
}

/// A directory archive's file name: the directory's last component, or the
/// manifest's short id for the whole layer, with `ext`.
fn archive_name(path: &str, manifest: &str, ext: &str) -> String {
    let base = match path.rsplit('/').next() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => manifest.chars().take(12).collect(),
    };
    format!("{base}.{ext}")
}

type Writer<'a> = &'a mut dyn std::io::Write;

/// Streams what `write` writes as the response body: the manifest is
/// loaded first (a missing one is `404`), then `write` runs on a blocking
/// thread into a channel of a few buffers, so memory stays bounded
/// however large the download.
async fn download(
    AxState(s): St,
    headers: HeaderMap,
    ns: String,
    m: String,
    filename: String,
    write: impl FnOnce(
            &strata_store::Store,
            &strata_store::format::manifest::Manifest,
            Writer<'_>,
        ) -> strata_store::Result<()>
        + Send
        + 'static,
) -> Response {
    if let Err(r) = allow(&s, &headers, &ns).await {
        return r;
    }
    let id = match manifest_id(&m) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let store = match tokio::task::spawn_blocking({
        let s = s.clone();
        move || s.namespaces.get(&ns)
    })
    .await
    {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => return crate::state::from_store(e),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let loaded = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || strata_store::browse::tree::manifest(&store, &id)).await
    };
    let manifest = match loaded {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return crate::state::from_store(e),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx.clone()));
        let result = write(&store, &manifest, &mut out).and_then(|_| {
            std::io::Write::flush(&mut out).map_err(|e| strata_store::Error::io("send", "", e))
        });
        if let Err(e) = result {
            crate::log::line(format_args!("a download failed: {e}"));
            let _ = tx.blocking_send(Err(std::io::Error::other("the download failed")));
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let mut r = body.into_response();
    let disposition = format!(
        "attachment; filename=\"{}\"",
        filename.replace(
            |c: char| !c.is_ascii_graphic() || c == '"' || c == '\\',
            "_"
        )
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert("content-disposition", v);
    }
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// Bytes written go to the response body, waiting while it is full.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
