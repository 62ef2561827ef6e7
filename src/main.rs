//! `chit`: the command line. It parses flags and dispatches to a command in
//! [`cmd`]; the work happens in broker-topology, producer, worker and
//! receipts-sink.
//!
//! # Layout
//!
//! - [`cmd`]: one module per command, with its flags.
//! - [`settings`]: the one merge of flags, `CHIT_*` variables, the config
//!   file and the crates' defaults into the crates' config types.
//! - [`api_client`]: GETs from the receipts sink's HTTP API.
//! - [`signal`]: SIGTERM / ctrl-c for the long-running commands.

mod api_client;
mod cmd;
mod settings;
mod signal;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cmd::{
    cancel::CancelArgs, dev::DevArgs, dlq::DlqAction, publish::PublishArgs, sink::SinkArgs,
    task::TaskAction, topology::TopologyAction, worker::WorkerArgs,
};
use settings::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "chit",
    version,
    about = "A distributed work queue on RabbitMQ, with a receipt for every step"
)]
struct Cli {
    /// Broker URL.
    #[arg(long, env = "CHIT_AMQP_URL", global = true)]
    amqp_url: Option<String>,
    /// Config file (TOML); default ~/.config/chit/chit.toml when it exists.
    #[arg(long, env = "CHIT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Declare or inspect exchanges and queues.
    Topology {
        #[command(subcommand)]
        action: TopologyAction,
    },
    /// Publish tasks; prints the task id.
    Publish(PublishArgs),
    /// Run a worker.
    Worker(WorkerArgs),
    /// Run the receipts sink and its HTTP API.
    Sink(SinkArgs),
    /// Look at tasks and their receipt chains (through the sink's API).
    Task {
        #[command(subcommand)]
        action: TaskAction,
    },
    /// Cancel a task: skipped if still queued, stopped if running.
    Cancel(CancelArgs),
    /// Dead-lettered tasks of a task type.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Everything on one machine: topology, a SQLite sink and a command.execute worker.
    Dev(DevArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Long-running parts log their lifecycle; one-shot commands only problems.
    let long_running = matches!(
        cli.command,
        Command::Worker(_) | Command::Sink(_) | Command::Dev(_)
    );
    init_tracing(if long_running { "info" } else { "warn" });
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `level`, or as `CHIT_LOG` (then `RUST_LOG`) says. The
/// filters for noisy dependencies stay unless the variable names them itself,
/// and colours are used only on a terminal.
fn init_tracing(level: &str) {
    let wanted = std::env::var("CHIT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| level.to_owned());
    let mut directives = wanted.clone();
    for quiet in ["lapin=off", "sqlx=warn"] {
        let target = quiet.split('=').next().unwrap_or(quiet);
        if !wanted.contains(target) {
            directives.push(',');
            directives.push_str(quiet);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::load(cli.amqp_url, cli.config.as_deref())?;
    match cli.command {
        Command::Topology { action } => cmd::topology::run(&settings, action).await,
        Command::Publish(args) => cmd::publish::run(&settings, args).await,
        Command::Worker(args) => cmd::worker::run(&settings, args).await,
        Command::Sink(args) => cmd::sink::run(&settings, args).await,
        Command::Task { action } => cmd::task::run(&settings, action).await,
        Command::Cancel(args) => cmd::cancel::run(&settings, args).await,
        Command::Dlq { action } => cmd::dlq::run(&settings, action).await,
        Command::Dev(args) => cmd::dev::run(&settings, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        // Catches what clap only checks at parse time: duplicate flags
        // from flattened groups, `conflicts_with` naming no argument.
        Cli::command().debug_assert();
    }
}
