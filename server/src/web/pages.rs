//! The web page's pages, each one call into the store and one render.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use strata_store::browse::sizes::{run_bytes, RunBytes};
use strata_store::browse::tree::{self, ChildKind};
use strata_store::stats;
use strata_store::RunName;

use super::html::{date, esc, page, pct, size};
use super::{allow, manifest_id, PathQuery, St};
use crate::state::State;

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No frames of it elsewhere, no script at all.
    r.headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'",
        ),
    );
    r
}

/// The form a token is typed into, once.
pub(super) fn login_form(status: StatusCode) -> Response {
    let body = "<p>This server asks for a token: the one your CI uses (read scope is \
        enough). It is kept in a cookie only this page's server reads.</p>\
        <form method=\"post\" action=\"/ui/login\" enctype=\"text/plain\">\
        <input type=\"password\" name=\"token\" size=\"40\" autofocus> \
        <button>Open</button></form>";
    html(status, page("Sign in", &[], body))
}

/// Runs `f` on namespace `ns`'s store on a blocking thread.
async fn on_store<T: Send + 'static>(
    s: &Arc<State>,
    ns: &str,
    f: impl FnOnce(&strata_store::Store) -> strata_store::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let (s, ns) = (s.clone(), ns.to_string());
    tokio::task::spawn_blocking(move || f(&*s.namespaces.get(&ns)?))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?
        .map_err(crate::state::from_store)
}

/// `GET /ui`: the namespaces this token may read.
pub(super) async fn home(AxState(s): St, headers: HeaderMap) -> Response {
    let names = if super::open(&s) {
        let s2 = s.clone();
        tokio::task::spawn_blocking(move || s2.namespaces.names())
            .await
            .unwrap_or_default()
    } else {
        let token = super::token(&headers);
        match s.auth.as_ref().and_then(|a| a.grant(token.as_deref()).ok()) {
            Some(g) if !g.namespace.is_empty() => vec![g.namespace.clone()],
            Some(_) => vec![],
            None => return login_form(StatusCode::UNAUTHORIZED),
        }
    };
    let mut body = String::from("<table><tr><th>namespace</th></tr>");
    for n in &names {
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/ns/{}\">{}</a></td></tr>",
            pct(n.as_bytes()),
            esc(n)
        );
    }
    body.push_str("</table>");
    html(StatusCode::OK, page("Namespaces", &[], &body))
}

/// `GET /ui/ns/N`: its runs, in creation order, with a chart of their
/// sizes, and its caches.
pub(super) async fn namespace(
    AxState(s): St,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Response {
    if let Err(r) = allow(&s, &headers, &ns).await {
        return r;
    }
    let listed = on_store(&s, &ns, |st| Ok((stats::list_store(st)?, run_bytes(st)?))).await;
    let (listing, sizes) = match listed {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut runs = listing.runs;
    runs.sort_by_key(|r| (r.created, r.run.to_string()));
    let mut body = chart(&sizes);
    body.push_str(
        "<h2>Runs</h2><table><tr><th>run</th><th>created</th><th>layers</th>\
        <th>bytes</th><th>expires</th></tr>",
    );
    for r in &runs {
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/ns/{}/run/{}\">{}</a></td><td>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td>{}{}</td></tr>",
            pct(ns.as_bytes()),
            pct(r.run.as_str().as_bytes()),
            esc(r.run.as_str()),
            date(r.created),
            r.layers,
            size(r.bytes),
            esc(&r.expires_on),
            if r.expired { " (expired)" } else { "" }
        );
    }
    body.push_str(
        "</table><h2>Dependency caches</h2><table><tr><th>key</th><th>files</th>\
        <th>bytes</th><th>saved</th><th>expires</th></tr>",
    );
    for c in &listing.caches {
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td class=n>{}</td><td class=n>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.key),
            c.files,
            size(c.bytes),
            esc(&c.saved_on),
            esc(&c.expires_on)
        );
    }
    body.push_str("</table>");
    let crumbs = [(format!("/ui/ns/{}", pct(ns.as_bytes())), ns.clone())];
    html(
        StatusCode::OK,
        page(&format!("Namespace {ns}"), &crumbs, &body),
    )
}

/// Each run's logical bytes beside what it added to the store, oldest
/// first, as paired bars (inline SVG).
fn chart(runs: &[RunBytes]) -> String {
    if runs.is_empty() {
        return String::new();
    }
    let max = runs
        .iter()
        .map(|r| r.logical.max(r.stored))
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (720u64, 160u64);
    let bar = (w / (2 * runs.len() as u64)).clamp(3, 30);
    let mut svg = format!(
        "<h2>Logical vs stored bytes per run</h2><p>oldest first; \
         <span style=\"color:#4a7bd0\">■ logical</span> (its files) \
         <span style=\"color:#e08a2c\">■ stored</span> (packs of the chunks it was first to hold)</p>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\">",
        h + 20
    );
    for (i, r) in runs.iter().enumerate() {
        let x = 2 * i as u64 * bar;
        for (k, (v, colour)) in [(r.logical, "#4a7bd0"), (r.stored, "#e08a2c")]
            .into_iter()
            .enumerate()
        {
            let bh = v * h / max;
            let _ = write!(
                svg,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"{colour}\">\
                 <title>{}: logical {}, stored {}</title></rect>",
                x + k as u64 * bar,
                h - bh,
                bar.saturating_sub(1).max(1),
                esc(r.run.as_str()),
                size(r.logical),
                size(r.stored)
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\" font-size=\"12\">max {}</text></svg>",
        h + 16,
        size(max)
    );
    let mut table = String::from("<table><tr><th>run</th><th>logical</th><th>stored</th></tr>");
    for r in runs {
        let _ = write!(
            table,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(r.run.as_str()),
            size(r.logical),
            size(r.stored)
        );
    }
    svg + &table + "</table>"
}

/// `GET /ui/ns/N/run/R`: its jobs, what each requires, its status and
/// layers.
pub(super) async fn run(
    AxState(s): St,
    headers: HeaderMap,
    Path((ns, run)): Path<(String, String)>,
) -> Response {
    if let Err(r) = allow(&s, &headers, &ns).await {
        return r;
    }
    let name = match RunName::new(&run) {
        Ok(n) => n,
        Err(e) => return crate::state::error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let listing = match on_store(&s, &ns, move |st| stats::list_run(st, &name, None)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut body = format!(
        "<p>created {}, expires {}{}</p><table><tr><th>job</th><th>requires</th><th>status</th>\
         <th>layers</th></tr>",
        date(listing.created),
        esc(&listing.expires_on),
        if listing.expired { " (expired)" } else { "" }
    );
    let nsp = pct(ns.as_bytes());
    for j in &listing.jobs {
        let requires: Vec<String> = j.requires.iter().map(|r| esc(r.as_str())).collect();
        let status = match &j.status {
            Some(st) => format!("{st:?}").to_lowercase(),
            None => "not finished".into(),
        };
        let mut layers = String::new();
        for l in &j.layers {
            let _ = write!(
                layers,
                "<a href=\"/ui/ns/{nsp}/layer/{}\">#{}</a> {} files, {}<br>",
                l.manifest,
                l.seq,
                l.files,
                size(l.bytes)
            );
        }
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{layers}</td></tr>",
            esc(j.job.as_str()),
            requires.join(", "),
            esc(&status)
        );
    }
    body.push_str("</table>");
    let crumbs = [
        (format!("/ui/ns/{nsp}"), ns.clone()),
        (
            format!("/ui/ns/{nsp}/run/{}", pct(run.as_bytes())),
            run.clone(),
        ),
    ];
    html(StatusCode::OK, page(&format!("Run {run}"), &crumbs, &body))
}

/// `GET /ui/ns/N/layer/M?path=DIR`: one directory of a layer.
pub(super) async fn layer(
    AxState(s): St,
    headers: HeaderMap,
    Path((ns, m)): Path<(String, String)>,
    Query(q): Query<PathQuery>,
) -> Response {
    if let Err(r) = allow(&s, &headers, &ns).await {
        return r;
    }
    let id = match manifest_id(&m) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let dir = q.path.trim_matches('/').to_string();
    let d = dir.clone();
    let children = on_store(&s, &ns, move |st| {
        tree::children(&tree::manifest(st, &id)?, d.as_bytes())
    })
    .await;
    let children = match children {
        Ok(c) => c,
        Err(r) => return r,
    };
    let nsp = pct(ns.as_bytes());
    let mut body = format!(
        "<p><a href=\"/ui/ns/{nsp}/tar/{m}?path={}\">download this directory (.tar.zst)</a> · \
         <a href=\"/ui/ns/{nsp}/zip/{m}?path={}\">(.zip)</a></p>\
         <table><tr><th>name</th><th>mode</th><th>bytes</th></tr>",
        pct(dir.as_bytes()),
        pct(dir.as_bytes())
    );
    for c in &children {
        let name = String::from_utf8_lossy(&c.name);
        let path = pct(c.path.as_bytes());
        let link = match c.kind {
            ChildKind::Dir => format!(
                "<a href=\"/ui/ns/{nsp}/layer/{m}?path={path}\">{}/</a>",
                esc(&name)
            ),
            ChildKind::File => format!(
                "<a href=\"/ui/ns/{nsp}/file/{m}?path={path}\">{}</a>",
                esc(&name)
            ),
            ChildKind::Symlink => format!("{} (link)", esc(&name)),
        };
        let _ = write!(
            body,
            "<tr><td>{link}</td><td><code>{:o}</code></td><td class=n>{}</td></tr>",
            c.mode & 0o7777,
            size(c.size)
        );
    }
    body.push_str("</table>");
    let mut crumbs = vec![(format!("/ui/ns/{nsp}"), ns.clone())];
    crumbs.push((
        format!("/ui/ns/{nsp}/layer/{m}"),
        format!("layer {}", &m[..12.min(m.len())]),
    ));
    if !dir.is_empty() {
        crumbs.push((
            format!("/ui/ns/{nsp}/layer/{m}?path={}", pct(dir.as_bytes())),
            dir.clone(),
        ));
    }
    html(StatusCode::OK, page(&format!("/{dir}"), &crumbs, &body))
}
