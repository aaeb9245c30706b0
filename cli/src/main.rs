//! The `strata` command: parses arguments, calls the store library, prints.
//! All logic lives in `strata-store`; this crate only maps between the
//! command line and the library, and errors to exit codes.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use strata_store::backend::http::HttpOptions;
use strata_store::ci::config::{CiGraph, Format, Select};
use strata_store::{
    attach, caches, ci_run, gc, lifecycle, persist, rerun, stats, Graph, JobName, OpenOptions,
    RunName, Store, StoreLocation,
};
use strata_store::{Clock, ErrorKind};

/// Renders a cache key template with the process's environment.
fn render_key(template: &str, store: &Store) -> Result<String> {
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

/// Exit codes, as documented in `--help` and docs/cli.md.
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFLICT: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Pass files between the jobs of a CI workflow, storing only what changed",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 workspace conflict, \
                  4 the store cannot be reached."
)]
struct Cli {
    /// The store: a directory (created on first use), a `strata serve`
    /// namespace `http(s)://HOST:PORT/NAMESPACE`, or `s3://BUCKET/PREFIX`.
    #[arg(long, global = true, env = "STRATA_STORE", value_name = "LOCATION")]
    store: Option<String>,

    /// The token for a `strata serve` store.
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Seconds a connection to a `strata serve` store may make no progress
    /// before the request is retried on a fresh one; a request gives up
    /// after six of these in all (default 10: a stalled server ends the
    /// command within a minute).
    #[arg(long, global = true, env = "STRATA_NET_TIMEOUT", value_name = "SECS", value_parser = parse_secs)]
    net_timeout: Option<f64>,

    /// A PEM certificate to trust for an https:// store (self-signed servers).
    #[arg(long, global = true, env = "STRATA_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// The runner's cache directory (chunks fetched from remote stores).
    #[arg(long, global = true, env = "STRATA_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,

    /// The chunk cache's size bound in MiB (0 turns it off).
    #[arg(long, global = true, env = "STRATA_CACHE_MIB", value_name = "MIB")]
    cache_mib: Option<u64>,

    /// Read and hash every file, even one whose stat is what the runner's
    /// stat cache remembers (persist, attach, cache save and restore).
    #[arg(long, global = true, env = "STRATA_NO_STAT_CACHE", value_parser = clap::builder::FalseyValueParser::new())]
    no_stat_cache: bool,

    /// Let the group read and write the store, caches and temporary
    /// directories strata creates (0770 / 0660, umask 007); by default
    /// they are private to the user (0700 / 0600): a store holds every
    /// persisted file, secrets included.
    #[arg(long, global = true, env = "STRATA_GROUP_ACCESS", value_parser = clap::builder::FalseyValueParser::new())]
    group_access: bool,

    /// Print machine-readable JSON instead of a summary line.
    #[arg(long, global = true)]
    json: bool,

    /// Progress of persist and attach on stderr: `tty` (one line redrawn),
    /// `plain` (a line every 10% or 5 s, for CI logs), `json` (those lines
    /// as JSON), `none`; `auto`: tty on a terminal, else plain.
    #[arg(long, global = true, env = "STRATA_PROGRESS", value_enum, default_value_t = output::ProgressMode::Auto)]
    progress: output::ProgressMode,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage workflow runs.
    #[command(subcommand)]
    Run(RunCommand),
    /// Record a job's result (reruns keep the layers of jobs that succeeded).
    #[command(subcommand)]
    Job(JobCommand),
    /// Dependency caches keyed by templates like CircleCI's.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Drop expired runs and caches and reclaim unreferenced chunks.
    Gc(GcArgs),
    /// Save paths as a new layer of a job.
    Persist(PersistArgs),
    /// Write the merged layers of a job's upstream jobs into a directory.
    Attach(AttachArgs),
    /// List runs and caches (with sizes and expiry), or a run's jobs and layers.
    Ls(LsArgs),
    /// Show what the store holds.
    Stats,
    /// Check the store's objects; exit 1 if anything is wrong.
    Verify(VerifyArgs),
    /// Run a sample workflow twice in a temporary store.
    Demo(DemoArgs),
    /// Serve a store over HTTP to runners on other machines.
    Serve(ServeArgs),
    /// Show the CI run, attempt and job strata reads from the environment,
    /// and from which variables.
    Ci,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8427")]
    listen: std::net::SocketAddr,
    /// Tokens, namespaces and scopes (YAML; docs/deploy.md). Without it the
    /// server serves anyone, and so listens on loopback only.
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    /// Serve without --auth on a non-loopback address.
    #[arg(long)]
    insecure: bool,
    /// PEM certificate chain for HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The largest request body accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    max_body_mib: usize,
    /// Close a connection that has not sent a whole request head this long
    /// after it opened or after its previous answer (idle ones too).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    header_timeout: std::time::Duration,
    /// Cut off a request body that sends nothing this long (no limit on a
    /// whole request, so a large pack on a slow link is never cut).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    body_idle_timeout: std::time::Duration,
    /// Connections served at once (64 runners with 16 requests each in
    /// flight); more wait to be accepted.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Requests per second per token (per address without --auth); 0: no limit.
    #[arg(long, default_value_t = 0.0)]
    rate_limit: f64,
    /// Don't log requests to stderr.
    #[arg(long)]
    quiet: bool,
    /// Run gc on every namespace this often: a number with s, m, h or d
    /// (30m, 6h, 1d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    gc_every: Option<std::time::Duration>,
    /// With an s3:// store: sync a namespace's chunk index from the bucket
    /// when it is older than this (another replica's writes are reused
    /// within it; a chunk not found syncs at once). Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    resync_every: Option<std::time::Duration>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration like 45s, 30m, 6h or 1d");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Subcommand, Debug)]
enum RunCommand {
    /// Create a run with its job graph (again with the same graph: no-op).
    Create(CreateArgs),
    /// Create a run that reruns some jobs of an earlier run and keeps the
    /// layers of the others.
    Rerun(RerunArgs),
}

#[derive(Args, Debug)]
struct RerunArgs {
    /// The run to rerun.
    #[arg(long)]
    from: RunName,
    /// The new run.
    #[arg(long)]
    run: RunName,
    /// Rerun the jobs that did not succeed (and everything downstream).
    #[arg(long, conflicts_with = "jobs", required_unless_present = "jobs")]
    failed: bool,
    /// Rerun these jobs (and everything downstream).
    #[arg(long, value_delimiter = ',')]
    jobs: Vec<JobName>,
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Record that a job finished, and how.
    Finish(FinishArgs),
}

#[derive(Args, Debug)]
struct FinishArgs {
    #[command(flatten)]
    rj: RunJob,
    /// success or failed.
    #[arg(long)]
    status: String,
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// Save paths under a key; a key that exists already is left as it is.
    Save(CacheSaveArgs),
    /// Restore the first cache the keys match (exactly, then as a prefix).
    Restore(CacheRestoreArgs),
}

#[derive(Args, Debug)]
struct CacheSaveArgs {
    /// The key template, e.g. 'deps-{{ checksum "package-lock.json" }}'.
    #[arg(long)]
    key: String,
    /// The directory PATHs are relative to (and must lie inside).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Inside a CI, save without its branch scope (readable from any ref).
    #[arg(long)]
    unscoped: bool,
}

#[derive(Args, Debug)]
struct CacheRestoreArgs {
    /// Key templates, tried in order (each exactly, then as a prefix).
    #[arg(long = "key", required = true)]
    keys: Vec<String>,
    /// The directory to restore into.
    #[arg(long, default_value = ".")]
    at: PathBuf,
    /// Keep setuid and setgid bits (dropped by default).
    #[arg(long)]
    keep_setuid: bool,
    /// Inside a CI, restore only unscoped entries (saved with --unscoped).
    #[arg(long)]
    unscoped: bool,
}

#[derive(Args, Debug)]
struct GcArgs {
    /// Report what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Override the store's grace period (0 deletes at once: only when no
    /// persist runs meanwhile).
    #[arg(long, value_name = "SECONDS")]
    grace_secs: Option<u64>,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The run's name.
    run: RunName,
    /// A job, as NAME or NAME:REQUIRED,REQUIRED...
    #[arg(
        long = "job",
        value_name = "NAME[:REQ,...]",
        required_unless_present = "graph",
        conflicts_with = "graph"
    )]
    jobs: Vec<String>,
    /// A CI's config (GitHub workflow, .gitlab-ci.yml, CircleCI config,
    /// Buildkite pipeline), read as the CI reads it, or strata's own
    /// `jobs: {NAME: [REQUIRES]}`.
    #[arg(long, value_name = "FILE")]
    graph: Option<PathBuf>,
    /// Which CI's config --graph is, when its path does not say
    /// (github, gitlab, circleci, buildkite, plain).
    #[arg(long, requires = "graph", value_parser = parse_format)]
    ci: Option<Format>,
    /// The repository checkout that --graph's includes and reusable
    /// workflows are read from.
    #[arg(long, requires = "graph", default_value = ".")]
    checkout: PathBuf,
    /// The workflow to take from a CircleCI --graph when it has several.
    #[arg(long, requires = "graph")]
    workflow: Option<String>,
}

#[derive(Args, Debug)]
struct RunJob {
    /// The run (inside a CI strata knows: the CI's run, created on first
    /// use from its config; `strata ci` shows it).
    #[arg(long, env = "STRATA_RUN")]
    run: Option<RunName>,
    /// The job (inside a CI strata knows: the CI's job; given, its name as
    /// the CI's config writes it, `"build / test"`).
    #[arg(long, env = "STRATA_JOB")]
    job: Option<String>,
    /// Inside a CI: the config file holding the job graph, relative to the
    /// checkout, when it is not where the CI's own is (a CircleCI
    /// continuation, an uploaded Buildkite pipeline, a GitLab child
    /// pipeline); also `STRATA_CONFIG`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl RunJob {
    /// The run and job: as given, else the CI's (its run created on first
    /// use). Also the CI, when they came from it.
    fn resolve(
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
fn cache_scopes(unscoped: bool) -> Option<strata_store::ci::scope::CacheScopes> {
    if unscoped {
        return None;
    }
    detect_ci()?.cache_scopes()
}

/// The CI this runs in, from the environment.
fn detect_ci() -> Option<strata_store::ci::CiContext> {
    strata_store::ci::detect(&|v| std::env::var(v).ok())
}

/// Where the CI checked the repository out: its variable, else the
/// working directory.
fn ci_checkout(ci: &strata_store::ci::CiContext) -> Result<PathBuf> {
    match ci.checkout_dir(dirs::home_dir().as_deref()) {
        Some(dir) => Ok(dir),
        None => std::env::current_dir().context("reading the working directory"),
    }
}

#[derive(Args, Debug)]
struct PersistArgs {
    #[command(flatten)]
    rj: RunJob,
    /// The directory PATHs are relative to (and must lie inside).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Files or directories to persist; globs (`dist/**/*.js`,
    /// `sandbox/**`) and exclusions (`'!dist/**/*.map'`) as CI configs
    /// write them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// A glob that matches nothing is not an error.
    #[arg(long)]
    allow_empty: bool,
}

#[derive(Args, Debug)]
struct AttachArgs {
    #[command(flatten)]
    rj: RunJob,
    /// The directory to attach into (created if missing).
    #[arg(long, default_value = ".")]
    at: PathBuf,
    /// Keep setuid and setgid bits as persisted. By default they are
    /// dropped, so a job cannot plant a setuid binary for a later one.
    #[arg(long)]
    keep_setuid: bool,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// The run to list; without it, all runs.
    #[arg(long, env = "STRATA_RUN")]
    run: Option<RunName>,
    /// Only this job.
    #[arg(long, requires = "run")]
    job: Option<JobName>,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Also read every pack, decompress and re-hash every chunk.
    #[arg(long)]
    read_data: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Files in the generated node_modules.
    #[arg(long, default_value_t = 2000)]
    files: u64,
    /// Keep the demo's store and job directories (printed at the end).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    few_malloc_arenas();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = error_text(&e);
            eprintln!("strata: error: {text}");
            if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
                // A workflow command: GitHub shows it as an annotation on
                // the run. Escaped as GitHub's runner unescapes messages,
                // so a path holding a newline cannot start a command.
                eprintln!("::error title=strata::{}", workflow_escape(&text));
            }
            // By kind, so an error a server raised exits as a local one.
            let code = match e.downcast_ref::<strata_store::Error>().map(|e| e.kind()) {
                Some(ErrorKind::Conflict) => EXIT_CONFLICT,
                Some(ErrorKind::InvalidName) => EXIT_USAGE,
                Some(ErrorKind::Unreachable) => EXIT_UNREACHABLE,
                None if e
                    .downcast_ref::<strata_server::ServeError>()
                    .is_some_and(|e| {
                        matches!(e, strata_server::ServeError::InsecureAddress(_))
                    }) =>
                {
                    EXIT_USAGE
                }
                _ => EXIT_ERROR,
            };
            ExitCode::from(code)
        }
    }
}

/// An error and its causes, each said once: the library's I/O errors
/// already end with their cause ("read F: Permission denied"), which the
/// chain then gives again as the next error.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.ends_with(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// A workflow command's message as GitHub's runner reads it back: `%`,
/// `\r` and `\n` escaped.
fn workflow_escape(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn default_store() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("strata/store")
}

fn location(cli: &Cli) -> StoreLocation {
    match &cli.store {
        Some(s) => StoreLocation::parse(s),
        None => StoreLocation::Dir(default_store()),
    }
}

fn open(cli: &Cli) -> Result<Store> {
    let location = location(cli);
    let ca_cert = match &cli.ca_cert {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    };
    let options = OpenOptions {
        http: HttpOptions {
            token: cli.token.clone(),
            ca_cert,
            stall_timeout: cli.net_timeout.map(std::time::Duration::from_secs_f64),
        },
        cache_dir: cli.cache.clone(),
        cache_bytes: cli.cache_mib.map(|m| m << 20),
        resync_every: None,
        stat_cache: match cli.no_stat_cache {
            true => strata_store::StatCacheUse::Refresh,
            false => strata_store::StatCacheUse::Trust,
        },
    };
    let store = Store::open_at(&location, &options, &output::Printer)
        .with_context(|| format!("opening store {location}"))?;
    let progress = output::ProgressPrinter::new(cli.progress, cli.json);
    Ok(store
        .with_clock(clock()?)
        .with_observer(std::sync::Arc::new(progress)))
}

/// Caps glibc's malloc at two heap arenas, before any thread starts.
/// By default each thread that allocates gets an arena of its own (up to
/// eight per core), and the 4 MiB batch and pack buffers persist's pools
/// free stay mapped in them: persisting a 1.3 GB toolchain peaked at 240
/// MiB resident where two arenas peak at 160 MiB in the same time (one:
/// 130 MiB, a little slower; docs/benchmarks.md, "Memory").
#[allow(unsafe_code)]
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; no thread has been
    // started yet, and a refused value changes nothing.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// `$STRATA_NOW` (Unix seconds or a UTC date) fixes the clock: for tests,
/// and for asking "what would expire by then".
fn clock() -> Result<Clock> {
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

fn serve(cli: &Cli, a: &ServeArgs) -> Result<()> {
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
        max_body: a.max_body_mib << 20,
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
            .cache
            .clone()
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

/// `--ci`'s value.
fn parse_format(s: &str) -> Result<Format, String> {
    Ok(match s {
        "github" => Format::Github,
        "gitlab" => Format::Gitlab,
        "circleci" => Format::Circleci,
        "buildkite" => Format::Buildkite,
        "plain" => Format::Plain,
        _ => {
            return Err(format!(
                "{s:?}: one of github, gitlab, circleci, buildkite, plain"
            ))
        }
    })
}

/// The graph of `run create --graph FILE`, read by the CI's own reader.
fn graph_file(file: &std::path::Path, a: &CreateArgs) -> Result<CiGraph> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading graph {}", file.display()))?;
    let format = a.ci.unwrap_or_else(|| Format::guess(file, &text));
    let entry = file.strip_prefix(&a.checkout).unwrap_or(file);
    let select = match &a.workflow {
        Some(w) => Select::Workflow(w),
        None => Select::Only,
    };
    Ok(strata_store::ci::config::read(
        format,
        &a.checkout,
        entry,
        select,
    )?)
}

/// A positive number of seconds.
fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    if cli.group_access {
        strata_store::util::set_group_access();
    }
    match &cli.command {
        Command::Run(RunCommand::Create(a)) => {
            let run = a.run.clone();
            let graph = match &a.graph {
                Some(file) => {
                    let read = graph_file(file, a)?;
                    for w in &read.warnings {
                        eprintln!("strata: warning: {w}");
                    }
                    read.graph
                }
                None => Graph::from_specs(&a.jobs)?,
            };
            let store = open(&cli)?;
            let created = store.create_run(&run, graph.clone(), None)?;
            output::run_created(json, &run, &graph, created);
        }
        Command::Run(RunCommand::Rerun(a)) => {
            let from = a.from.clone();
            let run = a.run.clone();
            let select = if a.failed {
                rerun::Select::Failed
            } else {
                rerun::Select::Jobs(a.jobs.clone())
            };
            let store = open(&cli)?;
            output::reran(json, &rerun::rerun(&store, &from, &run, &select)?);
        }
        Command::Job(JobCommand::Finish(a)) => {
            let status: strata_store::JobStatus = a.status.parse()?;
            let store = open(&cli)?;
            let (run, job, _) = a.rj.resolve(&store)?;
            let result = lifecycle::finish_job(&store, &run, &job, status)?;
            output::finished(json, &run, &job, &result);
        }
        Command::Cache(CacheCommand::Save(a)) => {
            let store = open(&cli)?;
            let key = render_key(&a.key, &store)?;
            // Inside a CI, under this job's ref (docs/ci.md, "Caches").
            let key = match cache_scopes(a.unscoped) {
                Some(scopes) => format!("{}{key}", scopes.write),
                None => key,
            };
            output::cache_saved(json, &caches::save(&store, &key, &a.root, &a.paths)?);
        }
        Command::Cache(CacheCommand::Restore(a)) => {
            let store = open(&cli)?;
            let keys = a
                .keys
                .iter()
                .map(|k| render_key(k, &store))
                .collect::<Result<Vec<_>>>()?;
            // Inside a CI: this job's ref first, then the default branch.
            let keys = match cache_scopes(a.unscoped) {
                Some(scopes) => scopes
                    .read
                    .iter()
                    .flat_map(|scope| keys.iter().map(move |k| format!("{scope}{k}")))
                    .collect(),
                None => keys,
            };
            output::cache_restored(
                json,
                &keys,
                &caches::restore(
                    &store,
                    &keys,
                    &a.at,
                    attach::WriteOptions {
                        keep_setuid: a.keep_setuid,
                    },
                )?,
            );
        }
        Command::Gc(a) => {
            let store = open(&cli)?;
            let options = gc::GcOptions {
                dry_run: a.dry_run,
                grace_secs: a.grace_secs,
                ..Default::default()
            };
            output::collected(json, &gc::gc(&store, &options)?);
        }
        Command::Persist(a) => {
            let store = open(&cli)?;
            let (run, job, ci) = a.rj.resolve(&store)?;
            let writer = ci.as_ref().map(|ci| ci.writer());
            let _group =
                output::LogGroup::open(ci.as_ref(), &format!("strata persist {run}/{job}"));
            let report = persist::persist(
                &store,
                &persist::PersistRequest {
                    run,
                    job,
                    root: a.root.clone(),
                    paths: a.paths.clone(),
                    allow_empty: a.allow_empty,
                    writer: writer.clone(),
                },
            )?;
            output::persisted(json, &report);
        }
        Command::Attach(a) => {
            let store = open(&cli)?;
            let (run, job, ci) = a.rj.resolve(&store)?;
            let _group = output::LogGroup::open(ci.as_ref(), &format!("strata attach {run}/{job}"));
            let report = attach::attach(
                &store,
                &attach::AttachRequest {
                    run,
                    job,
                    at: a.at.clone(),
                    keep_setuid: a.keep_setuid,
                },
            )?;
            output::attached(json, &report);
        }
        Command::Ls(a) => {
            let store = open(&cli)?;
            match &a.run {
                Some(run) => {
                    output::run_listing(json, &stats::list_run(&store, run, a.job.as_ref())?);
                }
                None => output::store_listing(json, &stats::list_store(&store)?),
            }
        }
        Command::Stats => {
            let store = open(&cli)?;
            output::store_stats(json, &stats::store_stats(&store)?);
        }
        Command::Verify(a) => {
            let store = open(&cli)?;
            let report = strata_store::verify::verify(&store, a.read_data)?;
            output::verified(json, &report);
            if !report.problems.is_empty() {
                anyhow::bail!("the store has {} problem(s)", report.problems.len());
            }
        }
        Command::Serve(a) => serve(&cli, a)?,
        Command::Ci => match detect_ci() {
            Some(ci) => output::ci(json, &ci, &ci.run_name(), &ci.job_name()),
            None => anyhow::bail!(
                "no CI strata knows in the environment (GITHUB_ACTIONS, GITLAB_CI, CIRCLECI \
                 or BUILDKITE set to true, with their run and job variables)"
            ),
        },
        Command::Demo(a) => {
            let scratch = std::env::temp_dir().join(format!("strata-demo-{}", std::process::id()));
            let report = strata_store::demo::run(&scratch, a.files, a.keep)?;
            output::demo(json, &report, a.keep);
        }
    }
    Ok(())
}
