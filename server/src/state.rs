//! What every handler shares, whichever route it serves: the server's
//! state, a handler's answer, how a library error becomes a status and a
//! body that keeps its kind, the call into a namespace's store (on the
//! store-work threads of `sched`), the access log, and which grant a bearer token carries. Knows no
//! route: `routes`, `metrics`, `presign`, `objects` and `web` import it,
//! never the other way.

use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use strata_store::access::Grant;
use strata_store::protocol::ErrorBody;
use strata_store::{Error, Store};

use crate::auth::Auth;
use crate::limits::Limiter;
use crate::oidc::{Oidc, Refused};
use crate::Namespaces;

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) namespaces: Namespaces,
    pub(crate) auth: Option<Auth>,
    pub(crate) oidc: Option<Arc<Oidc>>,
    pub(crate) budgets: crate::config::Budgets,
    pub(crate) limiter: Option<Limiter>,
    pub(crate) max_body: usize,
    pub(crate) log: bool,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Whether it serves HTTPS (the web page's cookie is then `Secure`).
    pub(crate) tls: bool,
    /// How long a presigned URL is valid (`--presign-ttl`); `None`: the
    /// server hands out none.
    pub(crate) presign_ttl: Option<std::time::Duration>,
    /// The threads that run store work, in turn per client (`sched`).
    pub(crate) pool: crate::sched::Pool,
}

pub(crate) type St = AxState<Arc<State>>;
/// The grant `gate` found for the request, and the client's name.
pub(crate) type Granted = Extension<Arc<(Grant, String)>>;

/// An error the server says on its own (the gate's, its failures): no
/// `kind`, so the client maps the status.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
        kind: None,
    };
    (status, axum::Json(body)).into_response()
}

/// The status for a library error. What a client did wrong is told as the
/// library says it (keys, names, limits); the server's own failures (its
/// disk, its paths) go to its log, and the client learns only their kind.
pub(crate) fn from_store(e: Error) -> Response {
    let status = match &e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Corrupt { .. }
        | Error::CorruptChunk { .. }
        | Error::InvalidId { .. }
        | Error::InvalidName { .. }
        | Error::MissingChunk { .. }
        | Error::UnknownRun { .. }
        | Error::UnknownJob { .. }
        | Error::BadRequest { .. }
        | Error::GraceTooShort { .. }
        | Error::UnsupportedVersion { .. } => StatusCode::BAD_REQUEST,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Incomplete { .. }
        | Error::GcBusy { .. }
        | Error::Immutable { .. }
        | Error::RunExists { .. }
        | Error::RunOfAnotherRef { .. }
        | Error::InUse { .. } => StatusCode::CONFLICT,
        Error::Expired { .. } => StatusCode::GONE,
        Error::Refused { .. } | Error::NotAllowed { .. } => StatusCode::FORBIDDEN,
        Error::NoSpace { .. } => {
            crate::log::line(format_args!("{e}"));
            return error(
                StatusCode::INSUFFICIENT_STORAGE,
                "the server's disk is full (its log has the detail)",
            );
        }
        _ => {
            crate::log::line(format_args!("internal error: {e}"));
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (the server's log has the detail)",
            );
        }
    };
    // The library's own error, named, so the client reads it back as the
    // same error a local store gives (docs/protocol.md, "Errors").
    (status, axum::Json(ErrorBody::of(&e))).into_response()
}

/// The grant of a request's bearer token for namespace `ns`: a static
/// token's, or a CI identity's (`--oidc`: verified off the async threads
/// unless remembered; of its grants, the one for `ns`). An unknown or
/// invalid token is `401`, a valid CI token no rule grants `403`.
pub(crate) async fn authenticate(
    s: &Arc<State>,
    token: Option<String>,
    ns: &str,
) -> Result<Grant, Response> {
    let unauthorized = |why: &str| {
        let mut resp = error(StatusCode::UNAUTHORIZED, why);
        resp.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        resp
    };
    if let Some(g) = s.auth.as_ref().and_then(|a| a.grant(token.as_deref()).ok()) {
        return Ok(g.clone());
    }
    let Some(token) = token else {
        return Err(unauthorized("no token"));
    };
    let Some(oidc) = s.oidc.clone().filter(|_| Oidc::looks_like_jwt(&token)) else {
        return Err(unauthorized("unknown token"));
    };
    let grants = match oidc.remembered(&token) {
        Some(g) => Ok(g),
        None => tokio::task::spawn_blocking(move || oidc.verify(&token))
            .await
            .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?,
    };
    match grants {
        Ok(grants) => {
            let mine = grants.iter().find(|g| g.namespace == ns);
            // None for this namespace: the first, whose refusal names it.
            mine.or(grants.first())
                .cloned()
                .ok_or_else(|| unauthorized("no grant"))
        }
        Err(Refused::Unverified(why)) => {
            log(s, "oidc", format_args!("{why}"));
            Err(unauthorized(&why))
        }
        Err(Refused::NoRule(detail)) => {
            log(s, "oidc", format_args!("{detail}"));
            Err(from_store(Error::NotAllowed { detail }))
        }
    }
}

/// Runs `f` on the namespace's store on a store-work thread, in the turn
/// of the request's client (`sched`).
pub(crate) async fn with_store<T: Send + 'static>(
    state: &Arc<State>,
    ns: &str,
    f: impl FnOnce(&Store) -> strata_store::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let s = state.clone();
    let ns = ns.to_string();
    let client = crate::sched::client();
    state
        .pool
        .run(&client, move || {
            let store = s.namespaces.get(&ns)?;
            f(&store)
        })
        .await
        .ok_or_else(|| {
            crate::log::line(format_args!("a request's store call failed (it panicked)"));
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })?
        .map_err(from_store)
}

pub(crate) fn log(state: &State, client: &str, what: std::fmt::Arguments<'_>) {
    if state.log {
        crate::log::line(format_args!("{client}: {what}"));
    }
}

/// A handler's answer: a refusal (`Err`) is an answer too, so `?` on
/// `with_store` returns it.
pub(crate) type Answer = Result<Response, Response>;
