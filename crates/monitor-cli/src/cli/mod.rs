//! The `monitor-client` command line: `push`, `report` and `bench`.
//!
//! Exit codes: 0 success (or interrupted), 1 a runtime failure (server unreachable after
//! the retries, a refused report or subscription, ...), 2 a usage error.
//!
//! # Layout
//! - `args`: the command line as clap reads it ([`Cli`], [`Command`] and each command's
//!   flags), and the flags turned into client configs.
//! - `flags`: a configuration error told as the flag that set the field at fault.
//! - `exit`: the exit codes, and how a command ends: a usage message, a failure logged, a
//!   line on stdout.
//! - `push`, `report`, `health` and `bench`: the commands, `report --health` being the
//!   host-health agent.

use std::process::ExitCode;

use clap::Parser;
use tracing::error;

mod args;
mod bench;
mod exit;
mod flags;
mod health;
mod push;
mod report;

pub use args::{BenchArgs, Cli, Command, ConnArgs, PushArgs, ReportArgs, SecurityArgs, ServerArgs};
pub use exit::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// Parses the arguments and runs; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Bench(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

fn init_logging(quiet: bool) {
    // The library's log lines and this crate's (`subscribed`, `health report
    // acknowledged`), as when both were one crate.
    let default = if quiet {
        "warn"
    } else {
        "warn,monitor_client=info,monitor_cli=info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Push(args) => push::push(args).await,
        Command::Report(args) => match args.body.clone() {
            Some(body) => report::report_once(args, body).await,
            None => health::health(args).await,
        },
        Command::Bench(args) => bench::run_bench(args).await,
    }
}
