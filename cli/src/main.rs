//! `cf-host`: run sandboxed LLM agents from the command line.
//!
//! A thin binary over the `cf_host` library and what front ends share (`cf_front`): it
//! parses flags ([`args`]), runs one command ([`commands`], one file each), and decides
//! the exit code in one place ([`error::code`]).

mod args;
mod commands;
mod error;
mod progress;
mod runlog;

use args::{Cli, Command};
use clap::Parser;
use std::io::Write as _;
use std::process::ExitCode;

/// jemalloc instead of the system's allocator: a batch allocates and frees a run's
/// worth of small objects per item on two threads, and glibc's malloc (its arena
/// locks, its consolidation) was 12 % of a cold batch's CPU; jemalloc cut the batch's
/// CPU by 13 % for 10 MiB more peak memory (mimalloc: the same CPU, 40 MiB more;
/// docs/benchmarks.md, "Issue 14, third pass"). Not on MSVC, which jemalloc does not
/// support.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cf-host: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // The command runs as a task on the runtime's workers, not in `block_on` on the
    // main thread: a batch's results arrive on a channel thousands of times a second,
    // and waking a thread parked in `block_on` costs a futex call and two context
    // switches each time, where waking a task is a push onto a worker's queue
    // (−15 to −20 % of a cold batch's CPU; docs/benchmarks.md, "Issue 14, fourth pass").
    let command = runtime.spawn(async move {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Agents(args) => commands::agents::agents(args).await,
            Command::Inspect(args) => commands::inspect::inspect(args).await,
            Command::Check(args) => commands::inspect::check(args).await,
            Command::Cache(args) => commands::cache::cache(args),
            Command::New(args) => commands::new::new_project(args),
            Command::Config(args) => commands::config::config(args),
            Command::Stats(args) => commands::stats::stats(args),
            Command::Serve(args) => commands::serve::serve(args).await,
            Command::Worker(args) => commands::worker::worker(args).await,
        }
    });
    let result = match runtime.block_on(command) {
        Ok(result) => result,
        // The panic hook has printed the message; exit as a panic on the main thread would.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            eprintln!("cf-host: the command's task ended: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = &result {
        eprintln!("cf-host: {e}");
    }
    let code = error::code(&result);
    // Everything is written and flushed by now (the commands flush the host's caches
    // before they return). Exit without tearing down the runtime, its threads and the
    // instance pool one destructor at a time: the kernel reclaims them at once
    // (docs/benchmarks.md, "What moved the figures").
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(i32::from(code));
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
