//! Accepting connections: the connection cap, TLS, the header and
//! body-idle timeouts, and the descriptor limit (docs/deploy.md, "Limits
//! and timeouts"). A client that is slow or idle, or opens connections
//! without end, holds at most one of `max_connections` places, each for at
//! most a timeout. Knows nothing about routes or stores: it hands each
//! request, with its peer's address, to the router, and counts the
//! connections closed for a request head that did not come in time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::log;

/// How long and how many.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after its previous answer) is closed.
    pub header_timeout: Duration,
    /// A request body that sends nothing this long is cut off.
    pub body_idle_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            // 64 runners with 16 requests each in flight.
            max_connections: 1024,
        }
    }
}

/// Raises the soft limit on open descriptors to the hard one; returns the
/// limit in force.
pub(crate) fn raise_descriptor_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum) {
        if cur < max {
            limit.current = Some(max);
            if setrlimit(Resource::Nofile, limit).is_err() {
                limit.current = Some(cur);
            }
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// The connection cap that fits `descriptors`: the configured one, or
/// less, so that connections never use the descriptors the stores need.
pub(crate) fn connection_cap(configured: usize, descriptors: u64) -> usize {
    let fits = usize::try_from(descriptors / 2).unwrap_or(usize::MAX);
    configured.min(fits).max(1)
}

/// The TLS acceptor for a PEM certificate chain and key.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &Path, e: rustls::pki_types::pem::Error| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", what.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until the process ends.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Limits,
    cap: usize,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let places = Arc::new(Semaphore::new(cap));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: give the others time to close.
                log::line(format_args!("cannot accept a connection: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (app, tls, http) = (app.clone(), tls.clone(), http.clone());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _place = place;
            let idle = limits.body_idle_timeout;
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(|b| Body::new(TimeoutBody::new(idle, b)));
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req)
            });
            let served = match tls {
                None => http.serve_connection(TokioIo::new(tcp), service).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                        _ => Ok(()),
                    }
                }
            };
            if served.is_err_and(|e| e.is_timeout()) {
                metrics.head_timed_out();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_the_stores() {
        assert_eq!(connection_cap(1024, 20_000), 1024);
        assert_eq!(connection_cap(1024, 256), 128);
        assert_eq!(connection_cap(1024, 0), 1);
    }
}
