//! The commands, one module each: its flags (a clap `Args` struct or
//! subcommand enum) and a `run` that turns them into settings, calls the
//! crates and prints. `main` only parses and dispatches here.

pub mod cancel;
pub mod dev;
pub mod dlq;
pub mod manifest;
pub mod publish;
pub mod sink;
pub mod task;
pub mod topology;
pub mod worker;
pub mod workers;

use clap::Args;

/// `--amqp-url`, offered only to the commands that talk to the broker.
#[derive(Args, Debug, Clone, Default)]
pub struct BrokerArgs {
    /// Broker URL [default: the config file's `amqp_url`, else
    /// amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(long, env = "CHIT_AMQP_URL", global = true)]
    pub amqp_url: Option<String>,
}
