//! The `objects` route (docs/protocol.md, feature `objects`): several
//! objects stored one after another in one request, each checked and
//! stored exactly as its own `PUT` would be (`ingest::put_checked`). Its
//! gate decides every object's right from the query, before the body is
//! read, by the same rule as a `PUT` of that key (`access`). Knows nothing
//! of what the objects are for (a persist's commit).

// Handlers return `Result<_, Response>` (as routes.rs does).
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use strata_store::access::{self, Grant};
use strata_store::format::keys::classify;
use strata_store::protocol::objects::{decode_query, split_body};

use crate::state::{from_store, log, with_store, Answer, Granted, St, State};

/// The gate's part for `objects`: every object the query names may be
/// written by `grant`, as its `PUT` may (refused before the body is read).
pub(crate) fn allow_all(grant: &Grant, ns: &str, query: Option<&str>, max_body: usize) -> Answer {
    let (parts, _) = decode_query(query.unwrap_or(""), max_body as u64).map_err(from_store)?;
    for p in &parts {
        let kind = classify(&p.key).map_err(from_store)?;
        access::allow(grant, ns, &access::Request::Put(&kind)).map_err(from_store)?;
    }
    Ok(StatusCode::OK.into_response())
}

/// `POST objects?put=KEY:SIZE&...`: stores each object in order; the
/// first refusal is the answer, and nothing after it is stored.
pub(crate) async fn put_objects(
    axum::extract::State(s): St,
    Path(ns): Path<String>,
    RawQuery(query): RawQuery,
    Extension(granted): Granted,
    body: Bytes,
) -> Answer {
    let started = Instant::now();
    let (parts, _) =
        decode_query(query.as_deref().unwrap_or(""), s.max_body as u64).map_err(from_store)?;
    split_body(&parts, &body).map_err(from_store)?;
    let g = granted.clone();
    let keys: Vec<String> = parts.iter().map(|p| p.key.clone()).collect();
    let metrics = s.metrics.clone();
    let result = with_store(&s, &ns, move |store| {
        for (part, bytes) in parts.iter().zip(split_body(&parts, &body)?) {
            strata_store::ingest::put_checked(store, &g.0, &part.key, bytes)?;
            // Counted as its own PUT is (`strata_ingest_*`).
            metrics.accepted(store, &part.key, bytes);
        }
        Ok(())
    })
    .await;
    log_answer(&s, &granted.1, &ns, &keys, status_of(&result), started);
    result?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn status_of(result: &Result<(), Response>) -> u16 {
    match result {
        Ok(()) => 204,
        Err(r) => r.status().as_u16(),
    }
}

fn log_answer(s: &Arc<State>, client: &str, ns: &str, keys: &[String], status: u16, t: Instant) {
    log(
        s,
        client,
        format_args!(
            "POST {ns}/objects {} -> {status} in {} ms",
            keys.join(" "),
            t.elapsed().as_millis()
        ),
    );
}
