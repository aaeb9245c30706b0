//! `strata completions SHELL` and `strata man`: generated from the same
//! clap definition that parses the arguments (`args`), so they cannot
//! drift from it.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};

pub(crate) fn completions(a: &CompletionsArgs) -> Result<()> {
    // Into memory first: `generate` panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "strata", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("writing the completion script")
}

pub(crate) fn man() -> Result<()> {
    clap_mangen::Man::new(Cli::command())
        .render(&mut std::io::stdout())
        .context("writing the man page")
}
