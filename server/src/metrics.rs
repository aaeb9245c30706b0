//! `GET /metrics`: the server's counters in the Prometheus exposition
//! format (OpenMetrics text, encoded by the `prometheus-client` crate),
//! and the middleware that counts every request (docs/deploy.md,
//! "Metrics").
//!
//! Requests are labelled by their route's template (`/v1/ns/{ns}/o/{*key}`),
//! never by their path: keys and namespaces would make label sets without
//! bound. Store sizes and object counts are those of the last gc pass this
//! server ran on each namespace (kept here, in the server's memory: a
//! scrape never lists a store), so they are absent until its first gc.
//!
//! Knows nothing about what the routes do: handlers report what only they
//! see (dedup on ingest, a gc's report) through the methods below.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State as AxState};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use strata_store::gc::GcReport;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels1 {
    namespace: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GcLabels {
    namespace: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    namespace: String,
    kind: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 4.4 minutes: a chunk query to a whole layer's download.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Every metric the server exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    received: Counter,
    sent: Counter,
    rejected: Family<ReasonLabels, Counter>,
    ingest_chunks: Family<OutcomeLabels, Counter>,
    ingest_logical: Counter,
    ingest_stored: Counter,
    gc_runs: Family<GcLabels, Counter>,
    gc_reclaimed: Family<Labels1, Counter>,
    gc_expired: Family<KindLabels, Counter>,
    /// Runs and cache entries gc dropped to meet a storage budget (issue
    /// 32's budgets increment it).
    evictions: Family<KindLabels, Counter>,
    store_bytes: Family<Labels1, Gauge>,
    store_objects: Family<KindLabels, Gauge>,
    store_gc_time: Family<Labels1, Gauge>,
    syncs: Family<Labels1, Counter>,
    queue: crate::queue_metrics::QueueGauges,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strata");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            received: Counter::default(),
            sent: Counter::default(),
            rejected: Family::default(),
            ingest_chunks: Family::default(),
            ingest_logical: Counter::default(),
            ingest_stored: Counter::default(),
            gc_runs: Family::default(),
            gc_reclaimed: Family::default(),
            gc_expired: Family::default(),
            evictions: Family::default(),
            store_bytes: Family::default(),
            store_objects: Family::default(),
            store_gc_time: Family::default(),
            syncs: Family::default(),
            queue: Default::default(),
            registry: Registry::default(),
        };
        m.register_http(&mut registry);
        m.register_store(&mut registry);
        m.queue.register(&mut registry);
        // Known label values from the start, at 0, so a rate over them
        // is 0 rather than no data.
        for reason in REJECTED {
            drop(m.rejected.get_or_create(&ReasonLabels { reason }));
        }
        for outcome in ["new", "duplicate"] {
            drop(m.ingest_chunks.get_or_create(&OutcomeLabels { outcome }));
        }
        Metrics { registry, ..m }
    }

    /// The request counters and the histogram.
    fn register_http(&self, r: &mut Registry) {
        r.register(
            "http_requests",
            "Requests answered, by route template, method and status",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from a request's head to its response's head, by route template",
            self.latency.clone(),
        );
        r.register(
            "http_received_bytes",
            "Bytes of request bodies read",
            self.received.clone(),
        );
        r.register(
            "http_sent_bytes",
            "Bytes of response bodies sent",
            self.sent.clone(),
        );
        r.register(
            "rejected_requests",
            "Requests refused, by reason: auth (401, 403), rate_limit (429), too_large (413), \
             body_timeout (a body that stalled), head_timeout (a connection closed for a \
             request head that did not come in time, idle keep-alive ones included)",
            self.rejected.clone(),
        );
    }

    /// What requests did to the stores, and gc's figures.
    fn register_store(&self, r: &mut Registry) {
        r.register(
            "ingest_chunks",
            "Chunks clients asked about before uploading (chunks/missing), by outcome: new \
             (the store lacked it: uploaded) or duplicate (deduplicated: not uploaded)",
            self.ingest_chunks.clone(),
        );
        r.register(
            "ingest_logical_bytes",
            "Bytes of file content of the layers and cache entries made visible (from their \
             manifests)",
            self.ingest_logical.clone(),
        );
        r.register(
            "ingest_stored_bytes",
            "Bytes of packs accepted (compressed, as stored)",
            self.ingest_stored.clone(),
        );
        r.register(
            "gc_runs",
            "gc passes, by namespace and outcome (ok, busy, failed)",
            self.gc_runs.clone(),
        );
        r.register(
            "gc_reclaimed_bytes",
            "Bytes of packs gc deleted",
            self.gc_reclaimed.clone(),
        );
        r.register(
            "gc_expired",
            "Runs and cache entries gc expired by age, by kind (run, cache)",
            self.gc_expired.clone(),
        );
        r.register(
            "gc_evictions",
            "Runs and cache entries gc dropped to meet a storage budget, by kind (run, cache)",
            self.evictions.clone(),
        );
        r.register(
            "store_bytes",
            "Bytes of packs a namespace holds, as of the last gc pass this server ran",
            self.store_bytes.clone(),
        );
        r.register(
            "store_objects",
            "Objects a namespace holds, by kind (packs, manifests, chunks: live ones), as of \
             the last gc pass this server ran",
            self.store_objects.clone(),
        );
        r.register(
            "store_last_gc_timestamp_seconds",
            "When the last gc pass this server ran on a namespace ended (Unix seconds)",
            self.store_gc_time.clone(),
        );
        r.register(
            "replica_syncs",
            "Times a namespace's chunk index read other writers' index objects",
            self.syncs.clone(),
        );
    }

    /// A chunk query's answer: `asked` chunks of which `missing` the
    /// store lacked.
    pub(crate) fn chunk_query(&self, asked: usize, missing: usize) {
        let count = |outcome, n: usize| {
            self.ingest_chunks
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n as u64)
        };
        count("new", missing);
        count("duplicate", asked - missing);
    }

    /// A pack of `bytes` accepted.
    pub(crate) fn pack_stored(&self, bytes: usize) {
        self.ingest_stored.inc_by(bytes as u64);
    }

    /// A layer or cache entry of `bytes` of file content made visible.
    pub(crate) fn made_visible(&self, bytes: u64) {
        self.ingest_logical.inc_by(bytes);
    }

    /// A gc pass on `ns` (not a dry run), and what it left.
    pub(crate) fn gc_pass(&self, ns: &str, result: &strata_store::Result<GcReport>) {
        let namespace = ns.to_string();
        let outcome = match result {
            Ok(_) => "ok",
            Err(strata_store::Error::GcBusy { .. }) => "busy",
            Err(_) => "failed",
        };
        self.gc_runs
            .get_or_create(&GcLabels {
                namespace: namespace.clone(),
                outcome,
            })
            .inc();
        let Ok(r) = result else { return };
        if r.dry_run {
            return;
        }
        let one = Labels1 {
            namespace: namespace.clone(),
        };
        self.gc_reclaimed
            .get_or_create(&one)
            .inc_by(r.bytes_reclaimed);
        let kind = |kind| KindLabels {
            namespace: namespace.clone(),
            kind,
        };
        let expired_runs = r.runs_expired.len() as u64;
        self.gc_expired
            .get_or_create(&kind("run"))
            .inc_by(expired_runs);
        self.gc_expired
            .get_or_create(&kind("cache"))
            .inc_by(r.caches_expired);
        // Shown from a namespace's first pass, 0 until a budget evicts.
        let runs = r
            .evicted
            .iter()
            .filter(|e| matches!(e.name, strata_store::footprint::HolderName::Run(_)))
            .count() as u64;
        for (k, n) in [("run", runs), ("cache", r.evicted.len() as u64 - runs)] {
            self.evictions.get_or_create(&kind(k)).inc_by(n);
        }
        let after = (r.bytes_before + r.bytes_rewritten).saturating_sub(r.bytes_reclaimed);
        self.store_bytes.get_or_create(&one).set(after as i64);
        let left = [
            // Packs its rewrites wrote count from the next pass.
            ("packs", r.packs.saturating_sub(r.packs_deleted)),
            ("manifests", r.live_manifests),
            ("chunks", r.live_chunks),
        ];
        for (k, n) in left {
            self.store_objects.get_or_create(&kind(k)).set(n as i64);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.store_gc_time.get_or_create(&one).set(now);
    }

    /// Brings namespace `ns`'s sync count up to `syncs` (its chunk
    /// index's own count, read at a scrape).
    pub(crate) fn synced(&self, ns: &str, syncs: u64) {
        let c = self.syncs.get_or_create(&Labels1 {
            namespace: ns.to_string(),
        });
        c.inc_by(syncs.saturating_sub(c.get()));
    }

    /// The store-work queue as it is now (read at a scrape).
    pub(crate) fn queue_depth(&self, depth: crate::sched::Depth) {
        self.queue.set(depth);
    }

    /// A connection closed before any route saw its request: its head
    /// did not come within the header timeout (an idle keep-alive one too).
    pub(crate) fn head_timed_out(&self) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: "head_timeout",
            })
            .inc();
    }

    /// What an accepted object `key` (`bytes`) adds: a pack's stored
    /// bytes, a layer's or cache entry's logical ones. Its manifest was
    /// just checked; should it fail to load now, only the count misses it.
    pub(crate) fn accepted(&self, store: &strata_store::Store, key: &str, bytes: &[u8]) {
        use strata_store::format::keys::{classify, ObjectKind};
        if let Ok(ObjectKind::Pack(_)) = classify(key) {
            self.pack_stored(bytes.len());
        } else if let Ok(Some(n)) = strata_store::browse::accepted_bytes(store, key, bytes) {
            self.made_visible(n);
        }
    }

    /// The exposition text.
    pub(crate) fn encode(&self) -> Response {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let mut resp = text.into_response();
        resp.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        resp
    }
}

/// The reasons `strata_rejected_requests_total` counts.
const REJECTED: [&str; 5] = [
    "auth",
    "rate_limit",
    "too_large",
    "body_timeout",
    "head_timeout",
];

/// Why a status is a refusal worth counting, if it is one.
fn rejected_reason(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        401 | 403 => Some("auth"),
        429 => Some("rate_limit"),
        413 => Some("too_large"),
        _ => None,
    }
}

/// The middleware of every route (a route layer, so the route's template
/// is known): counts the request, its body's bytes, its response's, and
/// times it to its response's head.
pub(crate) async fn observe(
    AxState(m): AxState<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let stalled = Arc::new(AtomicBool::new(false));
    let request = request.map(|b| {
        Body::new(Counted {
            inner: b,
            counter: m.received.clone(),
            stalled: Some(stalled.clone()),
        })
    });
    let response = next.run(request).await;
    let status = response.status();
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: status.as_u16(),
        })
        .inc();
    let reason = match stalled.load(Ordering::Relaxed) {
        true => Some("body_timeout"),
        false => rejected_reason(status),
    };
    if let Some(reason) = reason {
        m.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }
    response.map(|b| {
        Body::new(Counted {
            inner: b,
            counter: m.sent.clone(),
            stalled: None,
        })
    })
}

/// A body that counts its bytes as they pass (and, for a request's,
/// notes whether it stalled past the body-idle timeout), keeping its
/// size hint so a response keeps its `Content-Length`.
struct Counted {
    inner: Body,
    counter: Counter,
    stalled: Option<Arc<AtomicBool>>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counter.inc_by(data.len() as u64);
                }
            }
            Poll::Ready(Some(Err(e))) if is_timeout(e) => {
                if let Some(s) = &this.stalled {
                    s.store(true, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a body's error is the body-idle timeout's (`listen`).
fn is_timeout(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = s.source();
    }
    false
}
