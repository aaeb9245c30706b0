//! Every argument the command takes, in one place: the global options,
//! the subcommands and their options, and the parsers of their values.
//! What a command does with them is in `commands/`.

mod values;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use strata_store::ci::config::Format;
use strata_store::{JobName, RunName};

use crate::output;

/// `strata --version`: the version, the commit and the compiler
/// (`build.rs`), so a binary says what it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("STRATA_COMMIT"),
    ", ",
    env!("STRATA_RUSTC"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version = VERSION,
    about = "Pass files between the jobs of a CI workflow, storing only what changed",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 workspace conflict, \
                  4 the store cannot be reached."
)]
pub(crate) struct Cli {
    /// The store: a directory (created on first use), a `strata serve`
    /// namespace `http(s)://HOST:PORT/NAMESPACE`, or `s3://BUCKET/PREFIX`.
    #[arg(long, global = true, env = "STRATA_STORE", value_name = "LOCATION")]
    pub(crate) store: Option<String>,

    /// The token for a `strata serve` store.
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// How long a connection to a `strata serve` store may make no
    /// progress before the request is retried on a fresh one (10s, 1m; a
    /// bare number is seconds); a request gives up after six of these in
    /// all (default 10s: a stalled server ends the command within a minute).
    #[arg(long, global = true, env = "STRATA_NET_TIMEOUT", value_name = "DURATION", value_parser = values::duration)]
    pub(crate) net_timeout: Option<Duration>,

    /// A PEM certificate to trust for an https:// store (self-signed servers).
    #[arg(long, global = true, env = "STRATA_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// The runner's cache directory (frames fetched from remote stores, the
    /// stat cache, an S3 store's local index).
    #[arg(long, global = true, env = "STRATA_CACHE", value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,

    /// The old spelling of --cache-dir (a warning says so).
    #[arg(long = "cache", global = true, value_name = "DIR", hide = true)]
    pub(crate) old_cache: Option<PathBuf>,

    /// The frame cache's bound (512MiB, 2GiB; 0 turns it off).
    #[arg(long, global = true, env = "STRATA_CACHE_SIZE", value_name = "SIZE", value_parser = values::size)]
    pub(crate) cache_size: Option<u64>,

    /// The old spelling of --cache-size, in MiB (a warning says so).
    #[arg(
        long,
        global = true,
        env = "STRATA_CACHE_MIB",
        value_name = "MIB",
        hide = true
    )]
    pub(crate) cache_mib: Option<u64>,

    /// Read and hash every file, even one whose stat is what the runner's
    /// stat cache remembers (persist, attach, cache save and restore).
    #[arg(long, global = true, env = "STRATA_NO_STAT_CACHE", value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) no_stat_cache: bool,

    /// Let the group read and write the store, caches and temporary
    /// directories strata creates (0770 / 0660, umask 007); by default
    /// they are private to the user (0700 / 0600): a store holds every
    /// persisted file, secrets included.
    #[arg(long, global = true, env = "STRATA_GROUP_ACCESS", value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) group_access: bool,

    /// Print machine-readable JSON instead of a summary line.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Progress of persist and attach on stderr: `tty` (one line redrawn),
    /// `plain` (a line every 10% or 5 s, for CI logs), `json` (those lines
    /// as JSON), `none`; `auto`: tty on a terminal, else plain.
    #[arg(long, global = true, env = "STRATA_PROGRESS", value_enum, default_value_t = output::ProgressMode::Auto)]
    pub(crate) progress: output::ProgressMode,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// Remove a run's workspace now (its chunks go with gc, after the
    /// grace period).
    Rm(RmArgs),
    /// Show what the store holds.
    Stats,
    /// Check the store's objects; exit 1 if anything is wrong.
    Verify(VerifyArgs),
    /// Run a sample workflow twice in a temporary store.
    Demo(DemoArgs),
    /// Measure strata against tar|zstd (and restic, borg, casync when
    /// installed) on your own trees: persist, attach and store size.
    Bench(BenchArgs),
    /// Serve a store over HTTP to runners on other machines.
    Serve(ServeArgs),
    /// Show the CI run, attempt and job strata reads from the environment,
    /// and from which variables.
    Ci,
    /// Print the completion script of a shell (bash, zsh, fish, elvish,
    /// powershell), e.g. `strata completions bash > /etc/bash_completion.d/strata`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `strata man > strata.1`.
    Man,
}

#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8427")]
    pub(crate) listen: std::net::SocketAddr,
    /// The server's config file: its tokens, namespaces and scopes, and
    /// its limits (YAML; docs/deploy.md); `--auth` is its older name.
    /// Without tokens the server serves anyone, and so listens on loopback
    /// only. A limit given as a flag wins over the file.
    #[arg(long = "config", visible_alias = "auth", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// CI identities: the trusted OIDC issuers (GitHub Actions, GitLab,
    /// CircleCI, Buildkite) and the rules that turn a job's verified claims
    /// into grants bound to its own run and cache scope (YAML;
    /// docs/deploy.md, "CI identities"). Static tokens keep working beside.
    #[arg(long, value_name = "FILE")]
    pub(crate) oidc: Option<PathBuf>,
    /// Serve without --auth on a non-loopback address.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// PEM certificate chain for HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// The largest request body accepted (64MiB, 1GiB) [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = values::size)]
    pub(crate) max_body: Option<u64>,
    /// The old spelling of --max-body, in MiB (a warning says so).
    #[arg(long, value_name = "MIB", hide = true)]
    pub(crate) max_body_mib: Option<u64>,
    /// Close a connection that has not sent a whole request head this long
    /// after it opened or after its previous answer (idle ones too)
    /// [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) header_timeout: Option<std::time::Duration>,
    /// Cut off a request body that sends nothing this long (no limit on a
    /// whole request, so a large pack on a slow link is never cut)
    /// [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) body_idle_timeout: Option<std::time::Duration>,
    /// Connections served at once (64 runners with 16 requests each in
    /// flight); more wait to be accepted [default: 1024].
    #[arg(long)]
    pub(crate) max_connections: Option<usize>,
    /// Requests per second per token (per address without tokens); 0: no
    /// limit [default: 0].
    #[arg(long)]
    pub(crate) rate_limit: Option<f64>,
    /// Don't log requests to stderr.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Run gc on every namespace this often: a number with s, m, h or d
    /// (30m, 6h, 1d).
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) gc_every: Option<std::time::Duration>,
    /// A storage budget for every namespace (50GiB; the config file's
    /// `budgets:` sets one per namespace): gc evicts least recently used
    /// runs and caches, never one used within the grace period, to keep it.
    #[arg(long, value_name = "SIZE", value_parser = values::size)]
    pub(crate) max_size: Option<u64>,
    /// With an s3:// store: sync a namespace's chunk index from the bucket
    /// when it is older than this (another replica's writes are reused
    /// within it; a chunk not found syncs at once). Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) resync_every: Option<std::time::Duration>,
    /// With an s3:// store: hand runners presigned URLs, valid this long,
    /// to read packs straight from the bucket (1s to 7d; docs/deploy.md,
    /// "Reads straight from the bucket"). Runners must reach the bucket's
    /// endpoint. Uploads still go through the server.
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub(crate) presign_ttl: Option<std::time::Duration>,
    /// Threads for the network, and as many for store work, which they
    /// run in turn per client so no runner starves (docs/deploy.md, "Many
    /// runners") [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) workers: Option<u16>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RunCommand {
    /// Create a run with its job graph (again with the same graph: no-op).
    Create(CreateArgs),
    /// Create a run that reruns some jobs of an earlier run and keeps the
    /// layers of the others.
    Rerun(RerunArgs),
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// The run's name.
    #[arg(long, required_unless_present = "old_run", conflicts_with = "old_run")]
    pub(crate) run: Option<RunName>,
    /// The old spelling of --run, a positional (a warning says so).
    #[arg(hide = true, value_name = "RUN")]
    pub(crate) old_run: Option<RunName>,
    /// A job, as NAME or NAME:REQUIRED,REQUIRED...
    #[arg(
        long = "job",
        value_name = "NAME[:REQ,...]",
        required_unless_present = "graph",
        conflicts_with = "graph"
    )]
    pub(crate) jobs: Vec<String>,
    /// A CI's config (GitHub workflow, .gitlab-ci.yml, CircleCI config,
    /// Buildkite pipeline), read as the CI reads it, or strata's own
    /// `jobs: {NAME: [REQUIRES]}`.
    #[arg(long, value_name = "FILE")]
    pub(crate) graph: Option<PathBuf>,
    /// Which CI's config --graph is, when its path does not say
    /// (github, gitlab, circleci, buildkite, plain).
    #[arg(long, requires = "graph", value_parser = parse_format)]
    pub(crate) ci: Option<Format>,
    /// The repository checkout that --graph's includes and reusable
    /// workflows are read from.
    #[arg(long, requires = "graph", default_value = ".")]
    pub(crate) checkout: PathBuf,
    /// The workflow to take from a CircleCI --graph when it has several.
    #[arg(long, requires = "graph")]
    pub(crate) workflow: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RerunArgs {
    /// The run to rerun.
    #[arg(long)]
    pub(crate) from: RunName,
    /// The new run.
    #[arg(long)]
    pub(crate) run: RunName,
    /// Rerun the jobs that did not succeed (and everything downstream).
    #[arg(long, conflicts_with = "jobs", required_unless_present = "jobs")]
    pub(crate) failed: bool,
    /// Rerun these jobs (and everything downstream).
    #[arg(long, value_delimiter = ',')]
    pub(crate) jobs: Vec<JobName>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum JobCommand {
    /// Record that a job finished, and how.
    Finish(FinishArgs),
}

#[derive(Args, Debug)]
pub(crate) struct FinishArgs {
    #[command(flatten)]
    pub(crate) rj: RunJob,
    /// success or failed.
    #[arg(long)]
    pub(crate) status: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum CacheCommand {
    /// Save paths under a key; a key that exists already is left as it is.
    Save(CacheSaveArgs),
    /// Restore the first cache the keys match (exactly, then as a prefix).
    Restore(CacheRestoreArgs),
    /// Remove every entry of one cache key (exactly that key, as `ls` shows
    /// it; its chunks go with gc, after the grace period).
    Rm(CacheRmArgs),
}

#[derive(Args, Debug)]
pub(crate) struct CacheRmArgs {
    /// The cache key, exactly as stored (not a template).
    #[arg(long)]
    pub(crate) key: String,
    /// Also if it was saved or restored within the grace period.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Args, Debug)]
pub(crate) struct RmArgs {
    /// The run whose workspace to remove.
    #[arg(long)]
    pub(crate) run: RunName,
    /// Also if it was used within the grace period (a job may be reading it).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CacheSaveArgs {
    /// The key template, e.g. 'deps-{{ checksum "package-lock.json" }}'.
    #[arg(long)]
    pub(crate) key: String,
    /// The directory PATHs are relative to (and must lie inside).
    #[arg(long, default_value = ".")]
    pub(crate) root: PathBuf,
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// Inside a CI, save without its branch scope (readable from any ref).
    #[arg(long)]
    pub(crate) unscoped: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CacheRestoreArgs {
    /// Key templates, tried in order (each exactly, then as a prefix).
    #[arg(long = "key", required = true)]
    pub(crate) keys: Vec<String>,
    /// The directory to restore into.
    #[arg(long, default_value = ".")]
    pub(crate) at: PathBuf,
    /// Keep setuid and setgid bits (dropped by default).
    #[arg(long)]
    pub(crate) keep_setuid: bool,
    #[command(flatten)]
    pub(crate) only: OnlyArgs,
    /// Inside a CI, restore only unscoped entries (saved with --unscoped).
    #[arg(long)]
    pub(crate) unscoped: bool,
}

#[derive(Args, Debug)]
pub(crate) struct GcArgs {
    /// Report what would be removed; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Override the store's grace period (30m, 2h; 0 deletes at once: only
    /// when no persist runs meanwhile).
    #[arg(long, value_name = "DURATION", value_parser = values::duration_or_zero)]
    pub(crate) grace: Option<Duration>,
    /// The old spelling of --grace, in seconds (a warning says so).
    #[arg(long, value_name = "SECONDS", hide = true, conflicts_with = "grace")]
    pub(crate) grace_secs: Option<u64>,
    /// A storage budget (10GiB): evict least recently used runs and caches,
    /// never one used within the grace period, until the rest fit.
    #[arg(long, value_name = "SIZE", value_parser = values::size)]
    pub(crate) max_size: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct RunJob {
    /// The run (inside a CI strata knows: the CI's run, created on first
    /// use from its config; `strata ci` shows it).
    #[arg(long, env = "STRATA_RUN")]
    pub(crate) run: Option<RunName>,
    /// The job (inside a CI strata knows: the CI's job; given, its name as
    /// the CI's config writes it, `"build / test"`).
    #[arg(long, env = "STRATA_JOB")]
    pub(crate) job: Option<String>,
    /// Inside a CI: the config file holding the job graph, relative to the
    /// checkout, when it is not where the CI's own is (a CircleCI
    /// continuation, an uploaded Buildkite pipeline, a GitLab child
    /// pipeline); also `STRATA_CONFIG`.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct PersistArgs {
    #[command(flatten)]
    pub(crate) rj: RunJob,
    /// The directory PATHs are relative to (and must lie inside).
    #[arg(long, default_value = ".")]
    pub(crate) root: PathBuf,
    /// Files or directories to persist; globs (`dist/**/*.js`,
    /// `sandbox/**`) and exclusions (`'!dist/**/*.map'`) as CI configs
    /// write them.
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// A glob that matches nothing is not an error.
    #[arg(long)]
    pub(crate) allow_empty: bool,
}

#[derive(Args, Debug)]
pub(crate) struct AttachArgs {
    #[command(flatten)]
    pub(crate) rj: RunJob,
    /// The directory to attach into (created if missing).
    #[arg(long, default_value = ".")]
    pub(crate) at: PathBuf,
    /// Keep setuid and setgid bits as persisted. By default they are
    /// dropped, so a job cannot plant a setuid binary for a later one.
    #[arg(long)]
    pub(crate) keep_setuid: bool,
    #[command(flatten)]
    pub(crate) only: OnlyArgs,
}

#[derive(Args, Debug)]
pub(crate) struct OnlyArgs {
    /// Write only these paths, relative to the layers' roots (each with
    /// what is below it), or globs (`dist/**/*.js`, `'!**/*.map'`); the
    /// rest is neither fetched, checked for conflicts nor touched. A path
    /// or glob that selects nothing is an error.
    #[arg(long = "only", value_name = "PATH", num_args = 1.., action = clap::ArgAction::Append)]
    pub(crate) paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    /// The run to list; without it, all runs.
    #[arg(long, env = "STRATA_RUN")]
    pub(crate) run: Option<RunName>,
    /// Only this job.
    #[arg(long, requires = "run")]
    pub(crate) job: Option<JobName>,
    /// Each live run's and cache's stored bytes: held alone (what removing
    /// it frees) and shared with others (reads every manifest and pack
    /// trailer).
    #[arg(long, conflicts_with = "run")]
    pub(crate) sizes: bool,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Also read every pack, decompress and re-hash every chunk.
    #[arg(long)]
    pub(crate) read_data: bool,
}

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Files in the generated node_modules.
    #[arg(long, default_value_t = 2000)]
    pub(crate) files: u64,
    /// Keep the demo's store and job directories (printed at the end).
    #[arg(long)]
    pub(crate) keep: bool,
}

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// The tree a first run persists (`node_modules`, `target`, `dist`).
    pub(crate) path: PathBuf,
    /// The tree a next run persists (the same directory after a change, or
    /// at a later commit); given several times, one per run, the report
    /// also shows the store over all of them. Default: PATH again.
    #[arg(long = "next", value_name = "PATH")]
    pub(crate) next: Vec<PathBuf>,
    /// Measured runs per scenario (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Write an SVG chart of time and bytes per scenario and tool here
    /// (and, with several --next, the store over the runs beside it,
    /// FILE-runs.svg).
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,
    /// Scratch space for the stores and attached trees (default: a new
    /// temporary directory); removed after unless --keep-work.
    #[arg(long, value_name = "DIR")]
    pub(crate) work: Option<PathBuf>,
    /// Leave the scratch space in place.
    #[arg(long)]
    pub(crate) keep_work: bool,
}

/// `--ci`'s value.
pub(crate) fn parse_format(s: &str) -> Result<Format, String> {
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

/// Prints the warning for an old spelling that still works.
fn deprecated(old: &str, new: &str) {
    eprintln!("strata: warning: {old} is deprecated and will go; use {new}");
}

impl Cli {
    /// The runner's cache directory, under its new spelling or its old.
    pub(crate) fn cache_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.old_cache {
            deprecated("--cache DIR", "--cache-dir DIR");
            return Some(dir.clone());
        }
        self.cache_dir.clone()
    }

    /// The frame cache's bound in bytes, under its new spelling or its old.
    pub(crate) fn cache_bytes(&self) -> Option<u64> {
        if let (None, Some(mib)) = (self.cache_size, self.cache_mib) {
            deprecated(
                "--cache-mib N (STRATA_CACHE_MIB)",
                "--cache-size SIZE (STRATA_CACHE_SIZE), e.g. 2GiB",
            );
            return Some(mib << 20);
        }
        self.cache_size
    }
}

impl CreateArgs {
    /// The run, as `--run` or the old positional.
    pub(crate) fn run(&self) -> anyhow::Result<RunName> {
        match (&self.run, &self.old_run) {
            (Some(run), _) => Ok(run.clone()),
            (None, Some(run)) => {
                deprecated("`run create RUN`", "`run create --run RUN`");
                Ok(run.clone())
            }
            (None, None) => anyhow::bail!("run create needs --run RUN"),
        }
    }
}

impl GcArgs {
    /// The grace asked for, in seconds, under its new spelling or its old.
    pub(crate) fn grace_secs(&self) -> Option<u64> {
        if let Some(secs) = self.grace_secs {
            deprecated("--grace-secs N", "--grace DURATION (30m, 2h)");
            return Some(secs);
        }
        self.grace.map(|d| d.as_secs())
    }
}

impl ServeArgs {
    /// The largest request body, in bytes, under its new spelling or its old.
    /// The largest request body, in bytes, under its new spelling or its
    /// old, else the config file's, else 64 MiB.
    pub(crate) fn max_body(&self, file: &strata_server::config::LimitsSpec) -> u64 {
        if let Some(mib) = self.max_body_mib {
            deprecated("--max-body-mib N", "--max-body SIZE (64MiB)");
            return mib << 20;
        }
        self.max_body
            .or(file.max_body_mib.map(|m| (m as u64) << 20))
            .unwrap_or(64 << 20)
    }

    /// The timeouts and connection cap: each flag, else the config file's,
    /// else the default.
    pub(crate) fn limits(&self, file: &strata_server::config::LimitsSpec) -> strata_server::Limits {
        let default = strata_server::Limits::default();
        let secs = |s: Option<u64>| s.map(std::time::Duration::from_secs);
        strata_server::Limits {
            header_timeout: self
                .header_timeout
                .or(secs(file.header_timeout_secs))
                .unwrap_or(default.header_timeout),
            body_idle_timeout: self
                .body_idle_timeout
                .or(secs(file.body_idle_timeout_secs))
                .unwrap_or(default.body_idle_timeout),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(default.max_connections),
        }
    }
}
