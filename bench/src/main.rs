//! `strata-bench`: the benchmark harness over the `strata_bench` library
//! (the corpora, the network scenarios, the busy and cold runners, the
//! scale-out); `strata bench` runs the same library on a user's trees.
//! docs/benchmarks.md explains every scenario and number.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;

use strata_bench::report::{self, Results};
use strata_bench::tools::{self, Strata, StrataHttp, Tarball, TarballNet, Tool};
use strata_bench::{busy, cold, compare, corpus, disk, measure, scale, wire};

#[derive(Parser, Debug)]
#[command(
    name = "strata-bench",
    about = "Benchmark strata against tarballs, restic, borg and casync"
)]
struct Args {
    /// The tree the first run persists (with --next).
    #[arg(long, requires = "next", conflicts_with_all = ["corpus", "synthetic"])]
    base: Option<PathBuf>,
    /// The tree the next run persists (with --base).
    #[arg(long, requires = "base")]
    next: Option<PathBuf>,
    /// A checked-in corpus under bench/corpora (nextjs, pydata), or
    /// `toolchain`: the machine's Rust toolchains.
    #[arg(long, conflicts_with = "synthetic")]
    corpus: Option<String>,
    /// A generated node_modules-like tree of this many files.
    #[arg(long, value_name = "FILES")]
    synthetic: Option<u64>,
    /// With --synthetic: no generated file is larger than this (a million
    /// files of at most 4096 bytes take about 4 GiB of disk a side).
    #[arg(long, value_name = "BYTES", requires = "synthetic")]
    max_file_size: Option<u64>,
    /// Measured runs per scenario (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the warm-up run.
    #[arg(long)]
    no_warmup: bool,
    /// Skip scenario 5 (ten successive runs with churn).
    #[arg(long)]
    no_ten_runs: bool,
    /// Only these tools (comma-separated); default every one installed.
    #[arg(long, value_delimiter = ',')]
    tools: Vec<String>,
    /// Where materialized corpora are kept.
    #[arg(long, default_value_os_t = default_cache())]
    cache: PathBuf,
    /// Scratch space for repositories and attached trees (removed after).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Leave the scratch space in place. For a series of runs: creating
    /// files right after a large delete is several times slower on this
    /// kind of machine, which would time the delete, not the tools.
    #[arg(long)]
    keep_work: bool,
    /// The strata binary (default: next to this one).
    #[arg(long)]
    strata: Option<PathBuf>,
    /// Print JSON instead of the markdown report.
    #[arg(long)]
    json: bool,
    /// Write an SVG chart of time and bytes per scenario and tool here.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Also save the results as JSON here.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Put a link of this round trip (ms) between the networked tools and
    /// their servers (the latency proxy; half each way); adds the
    /// `tar|zstd-net` baseline. 0: through the proxy, no delay.
    #[arg(long, value_name = "MS")]
    rtt: Option<f64>,
    /// Cap that link at this many Mbit/s each way (shared by connections).
    #[arg(long, value_name = "N")]
    mbit: Option<f64>,
    /// Measure nothing: print a table and (with --svg) a chart of time
    /// against round trip from results saved at several --rtt.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["base", "corpus", "synthetic", "render"])]
    render_rtt: Vec<PathBuf>,
    /// Scenario 6 instead of 1-5: this many `strata serve` replicas over
    /// one bucket (a Garage node on loopback) against one, with --clients
    /// at once, and the open cost at --open-packs (docs/benchmarks.md).
    #[arg(long, value_name = "N", conflicts_with_all = ["base", "corpus", "render"])]
    replicas: Option<usize>,
    /// Clients at once in scenario 6.
    #[arg(long, value_name = "M", default_value_t = 16, requires = "replicas")]
    clients: usize,
    /// Store sizes (packs) whose open cost scenario 6 measures.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000",
        requires = "replicas"
    )]
    open_packs: Vec<u64>,
    /// Scenario 7 instead of 1-5: a busy runner, this many jobs at once
    /// on one local store (comma-separated crowd sizes, e.g. 4,8) against
    /// one after another, on the corpus's trees (docs/benchmarks.md).
    #[arg(long, value_name = "N,...", value_delimiter = ',', conflicts_with_all = ["render", "replicas"])]
    busy: Vec<usize>,
    /// Scenario 8 instead of 1-5: a warm runner with a cold page cache,
    /// --runs rounds of attaching the base tree over a workspace that
    /// holds it, the page cache dropped before each (needs root), against
    /// extracting the tar.zst over a copy (docs/benchmarks.md).
    #[arg(long, conflicts_with_all = ["render", "replicas", "busy"])]
    cold: bool,
    /// Scenario 9 instead of 1-5: the server off the data path. A
    /// synthetic tree (--synthetic files, default 2000) persisted through
    /// `strata serve` over a three-node Garage cluster, then attached fresh
    /// --runs times through a server that reads packs for its runners and
    /// one that hands out presigned URLs; the server's CPU and bytes per
    /// attached GB (docs/benchmarks.md).
    #[arg(long, conflicts_with_all = ["base", "corpus", "render", "replicas", "busy", "cold"])]
    direct: bool,
    /// Scenario 10 instead of 1-5: one server for many runners. This many
    /// runners (comma-separated, e.g. 16,64) persist their own next-run
    /// synthetic trees (--synthetic files each, default 2600: about 20 MB)
    /// through one `strata serve` at once, then as many attach them, with
    /// the server pinned away from the runners (docs/benchmarks.md).
    #[arg(long, value_name = "N,...", value_delimiter = ',', conflicts_with_all = ["base", "corpus", "render", "replicas", "busy", "cold", "direct"])]
    many: Vec<usize>,
    /// Scenario 10 with a light load generator instead of strata runners:
    /// each runner's persist and fresh attach, built beforehand from a
    /// directory store, replayed as requests from one process, so the
    /// server's CPU per MB is its own (docs/benchmarks.md).
    #[arg(long, requires = "many")]
    many_replay: bool,
    /// The server's --workers in scenario 10, one measurement each.
    #[arg(
        long,
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "1,2"
    )]
    server_workers: Vec<usize>,
    /// Measure nothing: print the report (and --svg) of saved results.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["base", "corpus", "synthetic"])]
    render: Option<PathBuf>,
}

fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("strata-bench")
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("strata-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    // The tarball baseline's network client (`wire`), called by its shell
    // pipelines: `strata-bench net-put|net-get ADDR NAME`.
    let argv: Vec<String> = std::env::args().collect();
    if let [_, verb, addr, name] = argv.as_slice() {
        match verb.as_str() {
            "net-put" => return wire::put(addr, name),
            "net-get" => return wire::get(addr, name),
            _ => {}
        }
    }
    let args = Args::parse();
    if !args.render_rtt.is_empty() {
        return render_rtt(&args);
    }
    if let Some(saved) = &args.render {
        let text = std::fs::read_to_string(saved)
            .with_context(|| format!("reading {}", saved.display()))?;
        let results: Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", saved.display()))?;
        return output(&args, &results);
    }
    if let Some(replicas) = args.replicas {
        return scale_main(&args, replicas);
    }
    if args.direct {
        return direct_main(&args);
    }
    if !args.many.is_empty() {
        return many_main(&args);
    }
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("strata-bench-{}", std::process::id())),
    };
    let corpus = checked_corpus(&args, &work)?;
    let strata_bin = strata_bin(&args)?;
    let tools = chosen_tools(&args, &strata_bin)?;
    std::fs::create_dir_all(&work)?;
    if !args.busy.is_empty() || args.cold {
        // Read both trees once so every tool starts from a warm page cache
        // (`compare::run` does the same).
        for tree in [&corpus.base, &corpus.next] {
            measure::run("tar -cf - . | cat > /dev/null", tree, &[])?;
        }
    }
    if !args.busy.is_empty() {
        let result = busy::run_busy(&strata_bin, &corpus, &args.busy, &work);
        if !args.keep_work {
            let _ = std::fs::remove_dir_all(&work);
        }
        return save_and_print(&args, &result?, busy::markdown);
    }
    if args.cold {
        let result = cold::run_cold(&strata_bin, &corpus, args.runs, &work);
        if !args.keep_work {
            let _ = std::fs::remove_dir_all(&work);
        }
        return save_and_print(&args, &result?, cold::markdown);
    }
    let method = compare::Method {
        runs: args.runs,
        warmup: !args.no_warmup,
        ten_runs: !args.no_ten_runs,
        link: link_of(&args),
    };
    let result = compare::run(&method, &corpus, &tools, &work);
    if args.keep_work {
        eprintln!("strata-bench: leaving {} in place", work.display());
    } else {
        eprintln!("strata-bench: removing {}", work.display());
        let _ = std::fs::remove_dir_all(&work);
    }
    let results = result?;
    if let Some(path) = &args.save {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    output(&args, &results)
}

/// `--render-rtt`: the RTT sweep's table (and chart) from saved results.
fn render_rtt(args: &Args) -> Result<()> {
    let mut sweep = Vec::new();
    for saved in &args.render_rtt {
        let text = std::fs::read_to_string(saved)
            .with_context(|| format!("reading {}", saved.display()))?;
        let results: Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", saved.display()))?;
        sweep.push(results);
    }
    if let Some(svg) = &args.svg {
        report::rtt_svg(&sweep, svg)?;
    }
    print!("{}", report::rtt_markdown(&sweep)?);
    Ok(())
}

/// The trees the arguments name, once the disk they need is known to be
/// free (a generated tree's size is known from its file count, before it
/// is written; a corpus is measured once there).
fn checked_corpus(args: &Args, work: &Path) -> Result<corpus::Corpus> {
    let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora");
    let tool_names: Vec<&str> = match args.tools.is_empty() {
        true => vec![
            "strata",
            "strata-http",
            "tar|zstd",
            "tar|gzip",
            "restic",
            "borg",
            "casync",
        ],
        false => args.tools.iter().map(String::as_str).collect(),
    };
    if let Some(files) = args.synthetic {
        let side = files * disk::synthetic_file_bytes(args.max_file_size);
        let trees = match corpus::synthetic_ready(files, args.max_file_size, &args.cache) {
            true => 0,
            false => 2 * side,
        };
        let tools = (disk::tools_sides(&tool_names) * side as f64) as u64;
        disk::check(&args.cache, trees, work, tools)?;
    }
    let corpus = match (&args.base, &args.next, &args.corpus, args.synthetic) {
        (Some(b), Some(n), _, _) => corpus::from_dirs(b, n)?,
        (_, _, Some(name), _) if name == "toolchain" => corpus::toolchain(&args.cache)?,
        (_, _, Some(name), _) => corpus::materialize(&corpora, name, &args.cache)?,
        (_, _, _, Some(files)) => corpus::synthetic(files, args.max_file_size, &args.cache)?,
        _ => bail!("give --base and --next, --corpus NAME, or --synthetic FILES"),
    };
    if args.synthetic.is_none() && args.replicas.is_none() {
        let side = disk::tree_bytes(&corpus.base).max(disk::tree_bytes(&corpus.next));
        let tools = (disk::tools_sides(&tool_names) * side as f64) as u64;
        disk::check(&args.cache, 0, work, tools)?;
    }
    Ok(corpus)
}

/// The tools `--tools` names (every one available when none), with the
/// tarball's network client when a link is asked for.
fn chosen_tools(args: &Args, strata_bin: &Path) -> Result<Vec<Box<dyn Tool>>> {
    let link = link_of(args);
    let mut all: Vec<Box<dyn Tool>> = vec![
        Box::new(Strata {
            bin: strata_bin.to_path_buf(),
        }),
        Box::new(StrataHttp::new(strata_bin.to_path_buf(), link)),
        Box::new(Tarball::zstd()),
        Box::new(Tarball::gzip()),
    ];
    if let Some(link) = link {
        all.push(Box::new(TarballNet::new(std::env::current_exe()?, link)));
    }
    all.extend(tools::installed_baselines(&mut |program| {
        eprintln!("strata-bench: {program} is not installed; leaving it out")
    }));
    if args.tools.is_empty() {
        return Ok(all);
    }
    for t in &args.tools {
        if !all.iter().any(|x| x.name() == t) {
            bail!("unknown or missing tool {t:?}");
        }
    }
    Ok(all
        .into_iter()
        .filter(|t| args.tools.iter().any(|n| n == t.name()))
        .collect())
}

/// The strata binary: --strata, or the one next to this one.
fn strata_bin(args: &Args) -> Result<PathBuf> {
    let bin = match &args.strata {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for the strata binary")?
            .join("strata"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p strata-cli` or pass --strata",
            bin.display()
        );
    }
    Ok(bin)
}

/// Scenario 6 (`--replicas`).
fn scale_main(args: &Args, replicas: usize) -> Result<()> {
    let bin = strata_bin(args)?;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("strata-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    let scale = scale::Scale {
        replicas,
        clients: args.clients,
        files: args.synthetic.unwrap_or(1000),
        open_packs: args.open_packs.clone(),
    };
    let result = scale::run(&scale, &bin, &work);
    if !args.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    save_and_print(args, &result?, scale::markdown)
}

/// Scenario 9 (`--direct`).
fn direct_main(args: &Args) -> Result<()> {
    let bin = strata_bin(args)?;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("strata-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    let result = strata_bench::direct::run(&bin, &work, args.synthetic.unwrap_or(2000), args.runs);
    if !args.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    save_and_print(args, &result?, |r| strata_bench::direct::markdown(r))
}

/// Scenario 10 (`--many`).
fn many_main(args: &Args) -> Result<()> {
    let bin = strata_bin(args)?;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("strata-bench-{}", std::process::id())),
    };
    let many = strata_bench::many::Many {
        runners: args.many.clone(),
        workers: args.server_workers.clone(),
        files: args.synthetic.unwrap_or(2600),
    };
    if args.many_replay {
        let result = strata_bench::replay::run(&many, &bin, &work);
        if !args.keep_work {
            let _ = std::fs::remove_dir_all(&work);
        }
        return save_and_print(args, &result?, strata_bench::replay::markdown);
    }
    let result = strata_bench::many::run(&many, &bin, &work);
    if !args.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    save_and_print(args, &result?, strata_bench::many::markdown)
}

/// Saves `results` (`--save`) and prints them: JSON with `--json`, else
/// `markdown`'s report.
fn save_and_print<T: serde::Serialize>(
    args: &Args,
    results: &T,
    markdown: fn(&T) -> String,
) -> Result<()> {
    if let Some(path) = &args.save {
        std::fs::write(path, serde_json::to_string_pretty(results)?)?;
    }
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(results)?),
        false => print!("{}", markdown(results)),
    }
    Ok(())
}

fn output(args: &Args, results: &Results) -> Result<()> {
    if let Some(svg) = &args.svg {
        report::svg(results, svg)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(results)?);
    } else {
        print!("{}", report::markdown(results));
    }
    Ok(())
}

/// The link `--rtt` and `--mbit` ask for, if any.
fn link_of(args: &Args) -> Option<wire::Link> {
    (args.rtt.is_some() || args.mbit.is_some()).then(|| wire::Link {
        rtt_ms: args.rtt.unwrap_or(0.0),
        mbit: args.mbit,
    })
}
