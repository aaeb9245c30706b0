//! What every command needs before it calls the library: the store opened
//! with the global options, the clock, and the run and job (given, or the
//! CI's).

use std::path::PathBuf;

use anyhow::{Context, Result};
use strata_store::backend::http::HttpOptions;
use strata_store::{ci_run, Clock, JobName, OpenOptions, RunName, Store, StoreLocation};

use crate::args::{Cli, RunJob};
use crate::output;

pub(crate) fn default_store() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("strata/store")
}

pub(crate) fn location(cli: &Cli) -> StoreLocation {
    match &cli.store {
        Some(s) => StoreLocation::parse(s),
        None => StoreLocation::Dir(default_store()),
    }
}

pub(crate) fn open(cli: &Cli) -> Result<Store> {
    open_for(cli, None)
}

/// `open`, for a command whose run and job were given (`rj`): the run's
/// record and keys are asked for while the store opens, in its round trip
/// (a CI's run is named only once the store is open).
pub(crate) fn open_for_run(cli: &Cli, rj: &RunJob) -> Result<Store> {
    open_for(cli, rj.run.clone().filter(|_| rj.job.is_some()))
}

fn open_for(cli: &Cli, prefetch_run: Option<RunName>) -> Result<Store> {
    let location = location(cli);
    let ca_cert = match &cli.ca_cert {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    };
    // No token given, inside a CI job: the job's own OIDC token, if the
    // server accepts its CI's (docs/ci.md, "No secrets").
    let identity = match (&cli.token, &location) {
        (None, StoreLocation::Http(_)) => ci_identity(),
        _ => None,
    };
    let options = OpenOptions {
        http: HttpOptions {
            token: cli.token.clone(),
            identity,
            ca_cert,
            stall_timeout: cli.net_timeout,
        },
        cache_dir: cli.cache_dir(),
        cache_bytes: cli.cache_bytes(),
        resync_every: None,
        stat_cache: match cli.no_stat_cache {
            true => strata_store::StatCacheUse::Refresh,
            false => strata_store::StatCacheUse::Trust,
        },
        prefetch_run,
    };
    let store = Store::open_at(&location, &options, &output::Printer)
        .with_context(|| format!("opening store {location}"))?;
    let progress = output::ProgressPrinter::new(cli.progress, cli.json);
    Ok(store
        .with_clock(clock()?)
        .with_observer(std::sync::Arc::new(progress)))
}

/// `$STRATA_NOW` (Unix seconds or a UTC date) fixes the clock: for tests,
/// and for asking "what would expire by then".
pub(crate) fn clock() -> Result<Clock> {
    match std::env::var("STRATA_NOW") {
        // Tests: the Unix seconds in a file, read at every call.
        Ok(v) if v.starts_with('@') => Ok(Clock::File(v[1..].into())),
        Ok(v) => strata_store::lifecycle::parse_time(&v)
            .map(Clock::Fixed)
            .with_context(|| {
                format!("STRATA_NOW={v:?} is neither Unix seconds nor YYYY-MM-DD[THH:MM:SS]")
            }),
        Err(_) => Ok(Clock::System),
    }
}

impl RunJob {
    /// The run and job: as given, else the CI's (its run created on first
    /// use). Also the CI, when they came from it.
    pub(crate) fn resolve(
        &self,
        store: &Store,
    ) -> Result<(RunName, JobName, Option<strata_store::ci::CiContext>)> {
        if let (Some(run), Some(job)) = (&self.run, &self.job) {
            // A store name as it is; a CI's name (spaces, `/`) encoded as
            // the CI path encodes it.
            let job = JobName::new(job).unwrap_or_else(|_| strata_store::ci::job_name(job));
            return Ok((run.clone(), job, None));
        }
        let Some(mut ci) = detect_ci() else {
            anyhow::bail!(
                "no --run and --job (or STRATA_RUN and STRATA_JOB), and no CI strata knows \
                 in the environment (GitHub Actions, GitLab CI, CircleCI, Buildkite): \
                 `strata ci` shows what it sees"
            );
        };
        // Given names win over the CI's, also when this job creates the run.
        if let Some(job) = self.job.as_deref().filter(|j| *j != ci.job.value) {
            ci.override_job(job, "--job");
        }
        if let Some(config) = &self.config {
            ci.override_config(config.clone(), "--config");
        }
        let checkout = ci_checkout(&ci)?;
        let ci_run = ci_run::prepare(store, &ci, &checkout)
            .with_context(|| format!("the {:?} run {}", ci.system, ci.run.value))?;
        for w in &ci_run.warnings {
            eprintln!("strata: warning: {w}");
        }
        let run = self.run.clone().unwrap_or(ci_run.run);
        Ok((run, ci_run.job, Some(ci)))
    }
}

/// The cache scopes of the CI this runs in (none outside one, or with
/// `--unscoped`).
pub(crate) fn cache_scopes(unscoped: bool) -> Option<strata_store::ci::scope::CacheScopes> {
    if unscoped {
        return None;
    }
    detect_ci()?.cache_scopes()
}

/// The token source of the CI job this runs in, if it runs in one.
pub(crate) fn ci_identity() -> Option<std::sync::Arc<dyn strata_store::backend::http::TokenSource>>
{
    let ci = detect_ci()?;
    let var = |v: &str| std::env::var(v).ok();
    Some(std::sync::Arc::new(strata_store::ci::token::CiToken::new(
        ci.system, &var,
    )))
}

/// The CI this runs in, from the environment.
pub(crate) fn detect_ci() -> Option<strata_store::ci::CiContext> {
    strata_store::ci::detect(&|v| std::env::var(v).ok())
}

/// Where the CI checked the repository out: its variable, else the
/// working directory.
pub(crate) fn ci_checkout(ci: &strata_store::ci::CiContext) -> Result<PathBuf> {
    match ci.checkout_dir(dirs::home_dir().as_deref()) {
        Some(dir) => Ok(dir),
        None => std::env::current_dir().context("reading the working directory"),
    }
}

/// Renders a cache key template with the process's environment.
pub(crate) fn render_key(template: &str, store: &Store) -> Result<String> {
    let dir = std::env::current_dir().context("reading the working directory")?;
    let var = |v: &str| std::env::var(v).ok();
    Ok(strata_store::cache_key::render(
        template,
        &strata_store::cache_key::KeyEnv {
            var: &var,
            now: store.now(),
            dir: &dir,
        },
    )?)
}
