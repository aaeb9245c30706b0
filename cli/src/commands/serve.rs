//! `strata serve`: the store over HTTP to runners on other machines.

use anyhow::{Context, Result};
use strata_store::StoreLocation;

use crate::args::{Cli, ServeArgs};
use crate::context::{clock, location};

pub(crate) fn exec(cli: &Cli, a: &ServeArgs) -> Result<()> {
    let store = match location(cli) {
        StoreLocation::Http(u) => anyhow::bail!("serve needs a directory or s3:// store, not {u}"),
        StoreLocation::Dir(p) => {
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            p.to_string_lossy().into_owned()
        }
        StoreLocation::S3(u) => u,
    };
    let auth = match &a.auth {
        Some(f) => Some(strata_server::Auth::load(f).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let config = strata_server::ServerConfig {
        listen: a.listen,
        store: store.clone(),
        auth,
        insecure: a.insecure,
        tls: a.tls_cert.clone().zip(a.tls_key.clone()),
        max_body: usize::try_from(a.max_body()).unwrap_or(usize::MAX),
        limits: strata_server::Limits {
            header_timeout: a.header_timeout,
            body_idle_timeout: a.body_idle_timeout,
            max_connections: a.max_connections,
        },
        rate: (a.rate_limit > 0.0).then_some(strata_server::RateLimit {
            per_second: a.rate_limit,
            burst: (a.rate_limit * 2.0).max(1.0),
        }),
        meta_dir: cli
            .cache_dir()
            .unwrap_or_else(strata_store::default_cache_dir)
            .join("server"),
        log: !a.quiet,
        gc_every: a.gc_every,
        resync_every: a.resync_every,
        clock: clock()?,
    };
    strata_server::serve(config, |s| {
        eprintln!("strata serve: listening on {} (store {store})", s.url);
        if let Some(w) = &s.warning {
            eprintln!("strata serve: {w}");
        }
    })?;
    Ok(())
}
