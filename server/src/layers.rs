//! The `layers` route (docs/protocol.md, "Layers and their manifests",
//! feature `layers`): an attach's layer refs and their manifests in one
//! answer. The gate has already decided it as a read (`access`); the
//! body is decoded by `protocol::layers` and answered by
//! `strata_store::layers::answer`. Knows nothing of what an attach does
//! with it.

// Handlers return `Result<_, Response>` (as routes.rs does).
#![allow(clippy::result_large_err)]

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::Extension;
use strata_store::protocol::layers::{encode_answer, LayersRequest};

use crate::state::{from_store, log, with_store, Answer, Granted, St};

/// `POST layers` with `{"keys": [...]}`: each ref and its manifest.
pub(crate) async fn layers(
    axum::extract::State(s): St,
    Path(ns): Path<String>,
    Extension(granted): Granted,
    body: Bytes,
) -> Answer {
    let started = Instant::now();
    let req = LayersRequest::decode(&body).map_err(from_store)?;
    let n = req.keys.len();
    let result = with_store(&s, &ns, move |store| {
        Ok(encode_answer(&strata_store::layers::answer(
            store, &req.keys,
        )?))
    })
    .await;
    let (status, len) = match &result {
        Ok(b) => (200, b.len()),
        Err(r) => (r.status().as_u16(), 0),
    };
    log(
        &s,
        &granted.1,
        format_args!(
            "POST {ns}/layers {n} layers -> {status}, {len} B in {} ms",
            started.elapsed().as_millis()
        ),
    );
    Ok(result?.into_response())
}
