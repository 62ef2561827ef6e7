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
//! - [`telemetry`]: logs (text or JSON) and OTLP trace export.

mod api_client;
mod cmd;
mod settings;
mod signal;
mod telemetry;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cmd::manifest::ManifestArgs;
use cmd::{
    BrokerArgs, TlsArgs, cancel::CancelArgs, dev::DevArgs, dlq::DlqAction, gateway::GatewayArgs,
    publish::PublishArgs, sink::SinkArgs, task::TaskAction, topology::TopologyAction,
    worker::WorkerArgs, workers::WorkersArgs,
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
    /// Config file (TOML) [default: ~/.config/chit/chit.toml, when it exists]
    #[arg(long, env = "CHIT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log line format on stderr
    #[arg(
        long,
        value_enum,
        env = "CHIT_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: telemetry::LogFormat,
    /// Log level or filter (`debug`, `info,worker=debug`); overrides
    /// CHIT_LOG and RUST_LOG [default: info for worker, sink and dev, else warn]
    #[arg(long, value_name = "LEVEL", global = true)]
    log_level: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Declare or inspect exchanges and queues.
    Topology {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(subcommand)]
        action: TopologyAction,
    },
    /// Publish tasks; prints the task id.
    Publish {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        args: PublishArgs,
    },
    /// Run a worker.
    Worker {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        args: WorkerArgs,
    },
    /// Run the receipts sink and its HTTP API.
    Sink {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        args: SinkArgs,
    },
    /// Run the HTTP gateway (POST /v1/tasks, the task queries, the
    /// dashboard), or manage its API keys (`chit gateway keys ...`).
    Gateway {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        args: GatewayArgs,
    },
    /// Look at tasks and their receipt chains (through the sink's API).
    Task {
        #[command(subcommand)]
        action: TaskAction,
    },
    /// Live workers, from their heartbeats (through the sink's API).
    Workers {
        #[command(flatten)]
        args: WorkersArgs,
    },
    /// Cancel a task: skipped if still queued, stopped if running.
    Cancel {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        args: CancelArgs,
    },
    /// Dead-lettered tasks of a task type.
    Dlq {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Everything on one machine: topology, a SQLite sink and a command.execute worker.
    Dev {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        args: DevArgs,
    },
    /// Print what a worker with this config would serve: capabilities,
    /// executors, retry policies, payload schemas (YAML or JSON).
    Manifest {
        #[command(flatten)]
        args: ManifestArgs,
    },
}

impl Command {
    /// Runs until stopped (and logs its lifecycle), rather than once.
    fn is_long_running(&self) -> bool {
        matches!(
            self,
            Command::Worker { .. } | Command::Sink { .. } | Command::Dev { .. }
        ) || matches!(self, Command::Gateway { args, .. } if args.is_server())
    }

    /// The `service.name` of its traces, unless `OTEL_SERVICE_NAME` says.
    fn service_name(&self) -> &'static str {
        match self {
            Command::Worker { .. } => "chit-worker",
            Command::Sink { .. } => "chit-sink",
            Command::Gateway { .. } => "chit-gateway",
            Command::Publish { .. } => "chit-publish",
            Command::Dev { .. } => "chit-dev",
            _ => "chit",
        }
    }

    /// `--amqp-url` / `CHIT_AMQP_URL`, for the commands that have it.
    fn amqp_url(&self) -> Option<String> {
        match self {
            Command::Topology { broker, .. }
            | Command::Publish { broker, .. }
            | Command::Worker { broker, .. }
            | Command::Sink { broker, .. }
            | Command::Gateway { broker, .. }
            | Command::Cancel { broker, .. }
            | Command::Dlq { broker, .. }
            | Command::Dev { broker, .. } => broker.amqp_url.clone(),
            Command::Manifest { .. } => None,
            Command::Task { .. } | Command::Workers { .. } => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Long-running parts log their lifecycle; one-shot commands only problems.
    let long_running = cli.command.is_long_running();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let telemetry = telemetry::Telemetry::init(
        cli.log_format,
        cli.log_level.as_deref(),
        if long_running { "info" } else { "warn" },
        cli.command.service_name(),
        runtime.handle(),
    );
    let telemetry = match telemetry {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // While the runtime still runs: the last spans go out through it.
    telemetry.shutdown();
    code
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if cli.command.is_long_running() {
        signal::install();
    }
    let settings = Settings::load(cli.command.amqp_url(), cli.config.as_deref())?;
    // Before anything connects: every component connects through broker-link.
    broker_link::tls::install(settings::tls_config(cli.tls, &settings.file));
    match cli.command {
        Command::Topology { action, .. } => cmd::topology::run(&settings, action).await,
        Command::Publish { args, .. } => cmd::publish::run(&settings, args).await,
        Command::Worker { args, .. } => cmd::worker::run(&settings, args).await,
        Command::Sink { args, .. } => cmd::sink::run(&settings, args).await,
        Command::Gateway { args, .. } => cmd::gateway::run(&settings, args).await,
        Command::Task { action } => cmd::task::run(&settings, action).await,
        Command::Workers { args } => cmd::workers::run(&settings, args).await,
        Command::Cancel { args, .. } => cmd::cancel::run(&settings, args).await,
        Command::Dlq { action, .. } => cmd::dlq::run(&settings, action).await,
        Command::Dev { args, .. } => cmd::dev::run(&settings, args).await,
        Command::Manifest { args } => cmd::manifest::run(&settings, args).await,
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

    /// Every command's flags and arguments, with the command's path.
    fn every_arg(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            every_arg(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_and_argument_says_what_it_is() {
        let mut args = Vec::new();
        every_arg(&Cli::command(), "chit", &mut args);
        let undescribed: Vec<String> = args
            .iter()
            .filter(|(_, a)| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|(_, a)| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|(path, a)| format!("{path} --{}", a.get_id()))
            .collect();
        assert!(undescribed.is_empty(), "no description: {undescribed:?}");
    }

    #[test]
    fn the_defaults_in_help_are_the_crates_defaults() {
        let help = |path: &[&str]| {
            let mut cmd = Cli::command();
            let mut sub = &mut cmd;
            for name in path {
                sub = sub.find_subcommand_mut(name).unwrap();
            }
            sub.render_help().to_string()
        };
        let sink = help(&["sink"]);
        for default in [
            format!("[default: {}]", receipts_sink::DEFAULT_BATCH_SIZE),
            format!(
                "[default: {}]",
                receipts_sink::DEFAULT_BATCH_WAIT.as_millis()
            ),
            format!("[default: {}]", receipts_sink::DEFAULT_PREFETCH),
            format!("[default: {}]", receipts_sink::DEFAULT_HTTP_ADDR),
        ] {
            assert!(
                sink.contains(&default),
                "chit sink --help lacks {default}:\n{sink}"
            );
        }
        let worker = help(&["worker"]);
        for default in [
            format!("[default: {}]", worker::WorkerConfig::DEFAULT_CONCURRENCY),
            format!(
                "[default: {}]",
                worker::WorkerConfig::DEFAULT_DRAIN_TIMEOUT.as_secs()
            ),
            format!(
                "[default: {}]",
                worker::WorkerConfig::DEFAULT_KILL_GRACE.as_secs()
            ),
            format!(
                "[default: {}]",
                worker::WorkerConfig::DEFAULT_HEALTH_INTERVAL.as_secs()
            ),
            format!(
                "[default: {}]",
                broker_link::BatchConfig::default().linger.as_millis()
            ),
        ] {
            assert!(
                worker.contains(&default),
                "chit worker --help lacks {default}:\n{worker}"
            );
        }
        let gateway_help = help(&["gateway"]);
        for default in [
            format!("[default: {}]", gateway::DEFAULT_HTTP_ADDR),
            format!("[default: {}]", gateway::DEFAULT_MAX_BODY_BYTES),
            format!("[default: {}s]", gateway::DEFAULT_MAX_WAIT.as_secs()),
            format!(
                "[default: {}s]",
                gateway::DEFAULT_PUBLISH_DEADLINE.as_secs()
            ),
        ] {
            assert!(
                gateway_help.contains(&default),
                "chit gateway --help lacks {default}:\n{gateway_help}"
            );
        }
        // Durations say their unit in their name.
        let mut args = Vec::new();
        every_arg(&Cli::command(), "chit", &mut args);
        for (path, arg) in &args {
            let Some(long) = arg.get_long() else { continue };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.starts_with("Seconds") {
                assert!(
                    long.ends_with("-secs"),
                    "{path} --{long}: seconds, not named -secs"
                );
            }
            if help.starts_with("Milliseconds") {
                assert!(
                    long.ends_with("-ms"),
                    "{path} --{long}: milliseconds, not named -ms"
                );
            }
        }
        let amqp = broker_link::DEFAULT_AMQP_URL;
        assert!(help(&["publish"]).contains(amqp), "--amqp-url's default");
        assert!(!help(&["task", "show"]).contains("--amqp-url"));
        assert!(!help(&["task", "list"]).contains("--amqp-url"));
    }
}
