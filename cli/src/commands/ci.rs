//! `strata ci`: what strata reads from a CI's environment.

use anyhow::Result;
use serde::Serialize;
use strata_store::{JobName, RunName};

use crate::args::Cli;
use crate::context::detect_ci;
use crate::output::print_json;

pub(crate) fn exec(cli: &Cli) -> Result<()> {
    match detect_ci() {
        Some(c) => ci(
            cli.json,
            &c,
            &c.run_name(),
            &c.job_name(),
            &identity(cli, &c),
        ),
        None => anyhow::bail!(
            "no CI strata knows in the environment (GITHUB_ACTIONS, GITLAB_CI, CIRCLECI \
             or BUILDKITE set to true, with their run and job variables)"
        ),
    }
    Ok(())
}

/// Which identity a command would show a `strata serve` store: the token
/// given, else the job's OIDC token (never the token itself).
fn identity(cli: &Cli, c: &strata_store::ci::CiContext) -> String {
    match &cli.token {
        Some(_) => "the token given (--token or STRATA_TOKEN)".into(),
        None => {
            let var = |v: &str| std::env::var(v).ok();
            strata_store::ci::token::CiToken::new(c.system, &var).describe()
        }
    }
}

/// What `strata ci` saw: each value and the variable it came from.
pub(crate) fn ci(
    json: bool,
    ci: &strata_store::ci::CiContext,
    run: &RunName,
    job: &JobName,
    identity: &str,
) {
    if json {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            ci: &'a strata_store::ci::CiContext,
            store_run: &'a RunName,
            store_job: &'a JobName,
            identity: &'a str,
        }
        return print_json(&Shown {
            ci,
            store_run: run,
            store_job: job,
            identity,
        });
    }
    println!("ci: {:?}", ci.system);
    let line = |what: &str, f: Option<&strata_store::ci::Found>| {
        if let Some(f) = f {
            println!("{what}: {} (from {})", f.value, f.from);
        }
    };
    line("run", Some(&ci.run));
    if let Some(a) = ci.attempt {
        println!("attempt: {a}");
    }
    line("job", Some(&ci.job));
    line("leg", ci.leg.as_ref());
    line("branch", ci.branch.as_ref());
    line("default branch", ci.default_branch.as_ref());
    line("commit", ci.commit.as_ref());
    line("checkout", ci.checkout.as_ref());
    println!("config: {} (from {})", ci.config.display(), ci.config_from);
    println!("store run: {run}");
    println!("store job: {job}");
    println!("identity for a strata serve store: {identity}");
}
