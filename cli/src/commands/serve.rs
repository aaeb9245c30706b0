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
    let file = match &a.config {
        Some(f) => Some(strata_server::config::ServerFile::load(f).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let limits = file.as_ref().map(|f| f.limits.clone()).unwrap_or_default();
    let rate = a.rate_limit.or(limits.rate_limit).unwrap_or(0.0);
    let mut budgets = file.as_ref().map(|f| f.budgets.clone()).unwrap_or_default();
    budgets.default = a.max_size.or(budgets.default);
    let auth = file.map(|f| f.auth);
    let oidc = match &a.oidc {
        Some(f) => Some(std::sync::Arc::new(
            strata_server::oidc::Oidc::load(f).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let config = strata_server::ServerConfig {
        listen: a.listen,
        store: store.clone(),
        auth,
        oidc,
        insecure: a.insecure,
        tls: a.tls_cert.clone().zip(a.tls_key.clone()),
        max_body: usize::try_from(a.max_body(&limits)).unwrap_or(usize::MAX),
        limits: a.limits(&limits),
        rate: (rate > 0.0).then_some(strata_server::RateLimit {
            per_second: rate,
            burst: (rate * 2.0).max(1.0),
        }),
        meta_dir: cli
            .cache_dir()
            .unwrap_or_else(strata_store::default_cache_dir)
            .join("server"),
        log: !a.quiet,
        gc_every: a.gc_every,
        budgets,
        resync_every: a.resync_every,
        clock: clock()?,
        presign_ttl: a.presign_ttl,
        workers: match a.workers {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    };
    strata_server::serve(config, |s| {
        eprintln!("strata serve: listening on {} (store {store})", s.url);
        if let Some(w) = &s.warning {
            eprintln!("strata serve: {w}");
        }
    })?;
    Ok(())
}
