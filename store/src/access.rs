//! Who may do what to a shared store: the one definition of the
//! authorization rules (docs/deploy.md, "Who may do what", whose table the
//! tests here read and check cell by cell).
//!
//! A `Grant` is what a client was given (a namespace, a role, and
//! optional limits on the runs and cache keys it may write); a `Request` is
//! what it asks, as far as the rules care. `allow` decides a request from
//! what is known before its body is read (route, object kind); `allow_run`,
//! `allow_cache_key` and `gc_grace` decide what only the body or the store
//! says (a run's recorded ref, a cache key, a grace period). The server
//! calls them for every request; `ops::ingest` calls the body-level ones.
//!
//! This module knows nothing about tokens, HTTP or how a grant was proven
//! (a static token, or a CI's verified OIDC identity: `crate::oidc` fills
//! the same fields from the claims, with the bindings `Bound` below).

// What a request reaches must not panic: every unwrap or expect here is
// refused unless its line says why it cannot fail.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use crate::error::{Error, Result};
use crate::format::keys::ObjectKind;

/// What a grant allows at most; each of `Read`, `Write` and `Admin`
/// includes the ones before it. `Metrics` stands apart: it allows the
/// server's metrics and nothing else, and nothing else allows them, since
/// they count every namespace and a namespace's token must not learn of
/// the others. (It sorts first, so it never meets a role `allow` needs.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Only `GET /metrics`: the server's counters, of every namespace.
    Metrics,
    /// Read everything of the namespace; record uses.
    Read,
    /// Also write packs, index objects, manifests, runs, layers, results,
    /// reruns and cache entries (create-only).
    Write,
    /// Also delete runs and caches, and run gc.
    Admin,
}

/// What a client may do in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who holds it, for logs and refusals.
    pub name: String,
    /// The namespace it is for.
    pub namespace: String,
    /// What it allows at most.
    pub role: Role,
    /// If limited: the prefixes of the refs whose runs it may create and
    /// write (a run records its ref: `RunRecord::ref_scope`).
    pub runs: Option<Vec<String>>,
    /// If limited: the prefixes of the cache keys it may save (none at
    /// all when empty).
    pub cache_keys: Option<Vec<String>>,
    /// If bound (a CI identity): the only runs it may create and write,
    /// by name, and the claims that named them.
    pub run_names: Option<Bound>,
    /// If bound (Buildkite's `step_key`): the only jobs whose layers and
    /// results it may write.
    pub jobs: Option<Bound>,
}

/// Names a grant is bound to, and where they came from (for refusals:
/// `run_id 123, run_attempt 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The names allowed (none: nothing of the kind may be written).
    pub names: Vec<String>,
    /// The claims the names were derived from.
    pub from: String,
}

impl Grant {
    /// Everything in `namespace`: a server without authentication.
    pub fn everything(namespace: &str) -> Grant {
        Grant {
            name: "anyone".into(),
            namespace: namespace.into(),
            role: Role::Admin,
            runs: None,
            cache_keys: None,
            run_names: None,
            jobs: None,
        }
    }
}

/// A request, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `GET /v1`: which protocol the server speaks.
    ServerHello,
    /// `GET /metrics`: the server's counters, of every namespace.
    Metrics,
    /// `GET /v1/ns/N/`.
    Hello,
    /// Reading: an object, ranges, a listing, chunk queries, layer refs
    /// with their manifests (`layers`), stats.
    Read,
    /// `POST gc`, a dry run or not.
    Gc {
        /// Whether it only reports.
        dry_run: bool,
    },
    /// `POST remove`: dropping a run or a cache key's entries (`strata rm`).
    Remove,
    /// Writing an object of this kind.
    Put(&'a ObjectKind),
    /// Deleting an object of this kind.
    Delete(&'a ObjectKind),
    /// A presigned URL (`POST urls`) for an object of this kind: to read
    /// it, or to write it (`write`), which is never granted.
    Url {
        /// Whether the URL would write (`PUT` or any method but `GET`).
        write: bool,
        /// The object's kind.
        kind: &'a ObjectKind,
    },
}

/// Decides `request` by `grant` in `namespace` from what is known before
/// its body is read. `Err` is `Error::NotAllowed`, naming the grant and
/// what it lacks.
pub fn allow(grant: &Grant, namespace: &str, request: &Request) -> Result<()> {
    if let Some(decided) = metrics_rule(grant, request) {
        return decided;
    }
    if grant.namespace != namespace {
        return Err(denied(grant, format!("is not for namespace {namespace}")));
    }
    let Some(needs) = role_needed(grant, request)? else {
        return Ok(());
    };
    if grant.role < needs {
        let what = match needs {
            Role::Metrics => "read the server's metrics",
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "administer (delete, remove, gc)",
        };
        return Err(denied(
            grant,
            format!("may not {what} in namespace {namespace}"),
        ));
    }
    Ok(())
}

/// The metrics rows, decided before the namespace (the metrics count every
/// namespace): a metrics grant may read the metrics and the server's hello
/// and nothing else, and no other grant may read the metrics. `None` when
/// neither the grant nor the request is about metrics.
fn metrics_rule(grant: &Grant, request: &Request) -> Option<Result<()>> {
    match (grant.role, request) {
        (Role::Metrics, Request::Metrics | Request::ServerHello) => Some(Ok(())),
        (Role::Metrics, _) => Some(Err(denied(
            grant,
            "may read the server's metrics only (scope metrics)".into(),
        ))),
        (_, Request::Metrics) => Some(Err(denied(
            grant,
            "may not read the server's metrics: they count every namespace, so they \
             take a token of scope metrics"
                .into(),
        ))),
        _ => None,
    }
}

/// The least role of the namespace that may make `request`: `None` when
/// any grant of it may, `Err` when no grant may.
fn role_needed(grant: &Grant, request: &Request) -> Result<Option<Role>> {
    Ok(Some(match request {
        // The metrics request is decided before the namespace.
        Request::ServerHello | Request::Metrics => return Ok(None),
        Request::Hello | Request::Read | Request::Gc { dry_run: true } => Role::Read,
        Request::Gc { dry_run: false } | Request::Remove => Role::Admin,
        Request::Put(kind) => return role_to_put(grant, kind).map(Some),
        Request::Delete(kind) if deletable(kind) => Role::Admin,
        Request::Delete(_) => {
            return Err(denied(
                grant,
                "may not delete it: packs, index objects and manifests are gc's".into(),
            ))
        }
        Request::Url {
            write: false,
            kind: ObjectKind::Pack(_),
        } => Role::Read,
        Request::Url { write: false, .. } => {
            return Err(denied(
                grant,
                "may not have a URL of it: only packs are read from the bucket, the rest \
                 through the server"
                    .into(),
            ))
        }
        // An S3 PUT overwrites: a URL to write would let a client replace
        // an object the server verified. Writes go through the server.
        Request::Url { write: true, .. } => {
            return Err(denied(
                grant,
                "may not have a URL to write: the server never signs a write (writes go \
                 through it and are checked)"
                    .into(),
            ))
        }
    }))
}

/// The least role that may write an object of `kind`; `Err` for the
/// objects only the server writes.
fn role_to_put(grant: &Grant, kind: &ObjectKind) -> Result<Role> {
    Ok(match kind {
        ObjectKind::Used(_) | ObjectKind::CacheUsed => Role::Read,
        ObjectKind::Pack(_)
        | ObjectKind::Index(_)
        | ObjectKind::Manifest(_)
        | ObjectKind::Run(_)
        | ObjectKind::Layer(..)
        | ObjectKind::Result(..)
        | ObjectKind::Rerun(_)
        | ObjectKind::Cache => Role::Write,
        ObjectKind::Config
        | ObjectKind::Expired(_)
        | ObjectKind::Snapshot(_)
        | ObjectKind::Condemned
        | ObjectKind::Deleted
        | ObjectKind::Lease => {
            return Err(denied(
                grant,
                "may not write it: the server writes its config and gc's records".into(),
            ))
        }
    })
}

/// Whether a client (an admin's) may delete an object of `kind`: a run's
/// records and cache entries and uses; packs, index objects, manifests
/// and gc's records are gc's alone.
pub fn deletable(kind: &ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Run(_)
            | ObjectKind::Layer(..)
            | ObjectKind::Result(..)
            | ObjectKind::Used(_)
            | ObjectKind::Rerun(_)
            | ObjectKind::Expired(_)
            | ObjectKind::Cache
            | ObjectKind::CacheUsed
    )
}

/// Decides `request` for a client without a grant (no token, or one the
/// server does not know): only which protocol the server speaks.
pub fn allow_anonymous(request: &Request) -> Result<()> {
    match request {
        Request::ServerHello => Ok(()),
        _ => Err(Error::NotAllowed {
            detail: "this needs a token".into(),
        }),
    }
}

/// Whether `grant` may create or write run `run`, which records
/// `ref_scope` (the ref of the CI job that created it, if any): by its
/// name when the grant is bound to runs, and by its ref when limited.
pub fn allow_run(grant: &Grant, run: &str, ref_scope: Option<&str>) -> Result<()> {
    if let Some(bound) = &grant.run_names {
        if !bound.names.iter().any(|n| n == run) {
            let of = ref_scope
                .map(|r| format!(" of {}", bare_ref(r)))
                .unwrap_or_default();
            return Err(denied(
                grant,
                format!(
                    "may not write run {run}{of}: its claims ({}) name only run {}",
                    bound.from,
                    bound.names.join(", ")
                ),
            ));
        }
    }
    let Some(prefixes) = &grant.runs else {
        return Ok(());
    };
    match ref_scope {
        Some(r) if prefixes.iter().any(|p| r.starts_with(p.as_str())) => Ok(()),
        Some(r) => Err(denied(
            grant,
            format!(
                "may write only runs of {}; run {run} is {r}",
                prefixes.join(", ")
            ),
        )),
        None => Err(denied(
            grant,
            format!(
                "may write only runs of {}; run {run} records no ref",
                prefixes.join(", ")
            ),
        )),
    }
}

/// Whether `grant` may write the layers and results of job `job` (of a
/// run `allow_run` allowed).
pub fn allow_job(grant: &Grant, run: &str, job: &str) -> Result<()> {
    match &grant.jobs {
        Some(bound) if !bound.names.iter().any(|n| n == job) => Err(denied(
            grant,
            match bound.names.is_empty() {
                true => format!(
                    "may not write job {job} of run {run}: its claims ({}) name no step \
                     (give the step a `key:`)",
                    bound.from
                ),
                false => format!(
                    "may not write job {job} of run {run}: its claims ({}) name only job {}",
                    bound.from,
                    bound.names.join(", ")
                ),
            },
        )),
        _ => Ok(()),
    }
}

/// Whether `grant` may save a cache entry under `key`.
pub fn allow_cache_key(grant: &Grant, key: &str) -> Result<()> {
    match &grant.cache_keys {
        Some(prefixes) if prefixes.is_empty() => {
            Err(denied(grant, format!("may save no caches (not {key:?})")))
        }
        Some(prefixes) if !prefixes.iter().any(|p| key.starts_with(p.as_str())) => Err(denied(
            grant,
            format!(
                "may save caches only under {} (not {key:?})",
                prefixes.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// The grace period of a gc a client asked for: the store's, or a longer
/// one; never shorter, since packs a persist in flight has uploaded are
/// protected by it (docs/lifecycle.md).
pub fn gc_grace(requested: Option<u64>, store_grace: u64) -> Result<u64> {
    match requested {
        Some(g) if g < store_grace => Err(Error::GraceTooShort {
            asked: g,
            floor: store_grace,
        }),
        Some(g) => Ok(g),
        None => Ok(store_grace),
    }
}

/// `refs/heads/main` of the scope `ref:refs/heads/main:`, for messages.
fn bare_ref(scope: &str) -> &str {
    scope
        .strip_prefix("ref:")
        .and_then(|s| s.strip_suffix(':'))
        .unwrap_or(scope)
}

fn denied(grant: &Grant, why: String) -> Error {
    Error::NotAllowed {
        detail: format!("token {} {why}", grant.name),
    }
}

#[cfg(test)]
mod tests;
