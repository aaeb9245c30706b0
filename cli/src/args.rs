//! Every argument the command takes, in this module and its two children:
//! the global options and the subcommands' options here, `strata serve`'s
//! (the longest list) in `serve`, and the parsers of their values in
//! `values`. What a command does with them is in `commands/`.

mod serve;
mod values;

pub(crate) use serve::ServeArgs;

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
