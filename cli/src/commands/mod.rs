//! One module per command, as cargo's `src/bin/cargo/commands/`: each
//! takes its parsed arguments (`args`), calls the library and renders the
//! report, for people or as JSON.

mod attach;
mod bench;
mod cache;
mod ci;
mod demo;
mod docs;
mod gc;
mod job;
mod ls;
mod persist;
mod rm;
mod run;
mod serve;
mod verify;

use anyhow::Result;

use crate::args::{CacheCommand, Cli, Command, JobCommand, RunCommand};

/// Runs the command `cli` names.
pub(crate) fn exec(cli: &Cli) -> Result<()> {
    if cli.group_access {
        strata_store::util::set_group_access();
    }
    match &cli.command {
        Command::Run(RunCommand::Create(a)) => run::create(cli, a),
        Command::Run(RunCommand::Rerun(a)) => run::rerun(cli, a),
        Command::Job(JobCommand::Finish(a)) => job::finish(cli, a),
        Command::Cache(CacheCommand::Save(a)) => cache::save(cli, a),
        Command::Cache(CacheCommand::Restore(a)) => cache::restore(cli, a),
        Command::Cache(CacheCommand::Rm(a)) => rm::cache(cli, a),
        Command::Gc(a) => gc::exec(cli, a),
        Command::Persist(a) => persist::exec(cli, a),
        Command::Attach(a) => attach::exec(cli, a),
        Command::Ls(a) => ls::exec(cli, a),
        Command::Rm(a) => rm::run(cli, a),
        Command::Stats => ls::stats(cli),
        Command::Verify(a) => verify::exec(cli, a),
        Command::Serve(a) => serve::exec(cli, a),
        Command::Ci => ci::exec(cli),
        Command::Demo(a) => demo::exec(cli, a),
        Command::Bench(a) => bench::exec(cli, a),
        Command::Completions(a) => docs::completions(a),
        Command::Man => docs::man(),
    }
}
