//! `POST urls`: presigned URLs to read packs straight from the bucket
//! (docs/protocol.md, "Reading packs from the bucket"; deploy.md, "Reads
//! straight from the bucket"), so an attach's bytes do not pass through
//! the server.
//!
//! The route's gate (`routes::gate`) has checked the token and the
//! namespace; here every key of the body is decided by
//! `strata_store::access` (`Request::Url`: `GET` URLs of packs for a
//! reader, never a URL to write), and each URL is signed by the
//! namespace's S3 backend for that key under the namespace's prefix. This
//! module knows nothing about signing (the backend's) nor about what a
//! grant allows (`access`'s).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::response::IntoResponse;
use axum::Extension;
use strata_store::access::{self, Grant};
use strata_store::format::keys::classify;
use strata_store::protocol::urls::{UrlsAnswer, UrlsRequest};
use strata_store::Error;

use crate::state::{from_store, log, with_store, Answer, State};

/// The longest a URL may be valid: S3's limit for a presigned URL.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// `POST /v1/ns/{ns}/urls`.
pub(crate) async fn urls(
    AxState(s): AxState<Arc<State>>,
    Path(ns): Path<String>,
    Extension(granted): Extension<Arc<(Grant, String)>>,
    body: Bytes,
) -> Answer {
    let Some(ttl) = s.presign_ttl else {
        return Err(from_store(Error::BadRequest {
            detail: "this server hands out no URLs (it was started without --presign-ttl)".into(),
        }));
    };
    let req = UrlsRequest::decode(&body).map_err(from_store)?;
    // Every key is decided before anything is signed: one refused key
    // refuses the request.
    for key in &req.keys {
        let kind = classify(key).map_err(from_store)?;
        let asked = access::Request::Url {
            write: req.writes(),
            kind: &kind,
        };
        access::allow(&granted.0, &ns, &asked).map_err(from_store)?;
    }
    log(
        &s,
        &granted.1,
        format_args!("POST {ns}/urls: {} GET URLs", req.keys.len()),
    );
    let keys = req.keys;
    let urls = with_store(&s, &ns, move |store| {
        keys.iter()
            .map(|k| {
                store
                    .backend()
                    .signed_get_url(k, ttl)?
                    .ok_or_else(|| Error::BadRequest {
                        detail: "this server's store is not a bucket: no URLs".into(),
                    })
            })
            .collect::<strata_store::Result<Vec<String>>>()
    })
    .await?;
    Ok(axum::Json(UrlsAnswer {
        expires_in: ttl.as_secs(),
        urls,
    })
    .into_response())
}
