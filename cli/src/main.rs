//! The `strata` command: parses arguments, calls the store library, prints.
//! All logic lives in `strata-store`; this crate only maps between the
//! command line and the library, and errors to exit codes.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use strata_store::{attach, persist, stats, Graph, JobName, RunName, Store};

/// Exit codes, as documented in `--help` and docs/cli.md.
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFLICT: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Pass files between the jobs of a CI workflow, storing only what changed",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 workspace conflict."
)]
struct Cli {
    /// The store directory (created on first use).
    #[arg(long, global = true, env = "STRATA_STORE")]
    store: Option<PathBuf>,

    /// Print machine-readable JSON instead of a summary line.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage workflow runs.
    #[command(subcommand)]
    Run(RunCommand),
    /// Save paths as a new layer of a job.
    Persist(PersistArgs),
    /// Write the merged layers of a job's upstream jobs into a directory.
    Attach(AttachArgs),
    /// List runs, or a run's jobs and layers.
    Ls(LsArgs),
    /// Show what the store holds.
    Stats,
    /// Check the store's objects; exit 1 if anything is wrong.
    Verify(VerifyArgs),
    /// Run a sample workflow twice in a temporary store.
    Demo(DemoArgs),
}

#[derive(Subcommand, Debug)]
enum RunCommand {
    /// Create a run with its job graph (again with the same graph: no-op).
    Create(CreateArgs),
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The run's name.
    run: String,
    /// A job, as NAME or NAME:REQUIRED,REQUIRED...
    #[arg(
        long = "job",
        value_name = "NAME[:REQ,...]",
        required_unless_present = "graph",
        conflicts_with = "graph"
    )]
    jobs: Vec<String>,
    /// A YAML file: a CircleCI config's `workflows:` or `jobs: {NAME: [REQUIRES]}`.
    #[arg(long, value_name = "FILE")]
    graph: Option<PathBuf>,
    /// The workflow to take from --graph when it has several.
    #[arg(long, requires = "graph")]
    workflow: Option<String>,
}

#[derive(Args, Debug)]
struct RunJob {
    /// The run.
    #[arg(long, env = "STRATA_RUN")]
    run: String,
    /// The job.
    #[arg(long, env = "STRATA_JOB")]
    job: String,
}

impl RunJob {
    fn parse(&self) -> Result<(RunName, JobName)> {
        Ok((RunName::new(&self.run)?, JobName::new(&self.job)?))
    }
}

#[derive(Args, Debug)]
struct PersistArgs {
    #[command(flatten)]
    rj: RunJob,
    /// The directory PATHs are relative to (and must lie inside).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Files or directories to persist.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct AttachArgs {
    #[command(flatten)]
    rj: RunJob,
    /// The directory to attach into (created if missing).
    #[arg(long, default_value = ".")]
    at: PathBuf,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// The run to list; without it, all runs.
    #[arg(long, env = "STRATA_RUN")]
    run: Option<String>,
    /// Only this job.
    #[arg(long, requires = "run")]
    job: Option<String>,
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
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            let code = match e.downcast_ref::<strata_store::Error>() {
                Some(e) if e.is_conflict() => EXIT_CONFLICT,
                Some(strata_store::Error::InvalidName { .. }) => EXIT_USAGE,
                _ => EXIT_ERROR,
            };
            ExitCode::from(code)
        }
    }
}

fn default_store() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("strata/store")
}

fn open(cli: &Cli) -> Result<Store> {
    let path = cli.store.clone().unwrap_or_else(default_store);
    Store::open(&path, &output::Printer)
        .with_context(|| format!("opening store {}", path.display()))
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match &cli.command {
        Command::Run(RunCommand::Create(a)) => {
            let run = RunName::new(&a.run)?;
            let graph = match &a.graph {
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("reading graph {}", file.display()))?;
                    Graph::from_yaml(&text, a.workflow.as_deref())
                        .with_context(|| format!("in {}", file.display()))?
                }
                None => Graph::from_specs(&a.jobs)?,
            };
            let store = open(&cli)?;
            let created = store.create_run(&run, graph.clone())?;
            output::run_created(json, &run, &graph, created);
        }
        Command::Persist(a) => {
            let (run, job) = a.rj.parse()?;
            let store = open(&cli)?;
            let report = persist::persist(
                &store,
                &persist::PersistRequest {
                    run,
                    job,
                    root: a.root.clone(),
                    paths: a.paths.clone(),
                },
            )?;
            output::persisted(json, &report);
        }
        Command::Attach(a) => {
            let (run, job) = a.rj.parse()?;
            let store = open(&cli)?;
            let report = attach::attach(
                &store,
                &attach::AttachRequest {
                    run,
                    job,
                    at: a.at.clone(),
                },
            )?;
            output::attached(json, &report);
        }
        Command::Ls(a) => {
            let store = open(&cli)?;
            match &a.run {
                Some(run) => {
                    let run = RunName::new(run)?;
                    let job = a.job.as_deref().map(JobName::new).transpose()?;
                    output::run_listing(json, &stats::list_run(&store, &run, job.as_ref())?);
                }
                None => output::runs(json, &store.run_names()?),
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
        Command::Demo(a) => {
            let scratch = std::env::temp_dir().join(format!("strata-demo-{}", std::process::id()));
            let report = strata_store::demo::run(&scratch, a.files, a.keep)?;
            output::demo(json, &report, a.keep);
        }
    }
    Ok(())
}
