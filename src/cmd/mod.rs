//! The commands, one module each: its flags (a clap `Args` struct or
//! subcommand enum) and a `run` that turns them into settings, calls the
//! crates and prints. `main` only parses and dispatches here.

pub mod cancel;
pub mod dev;
pub mod dlq;
pub mod gateway;
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
    /// Broker URL, or a cluster's node URLs comma-separated (chit connects
    /// to the first that answers and fails over to the others)
    /// [default: the config file's `amqp_url`, else
    /// amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(long, env = "CHIT_AMQP_URL", global = true)]
    pub amqp_url: Option<String>,
}

/// TLS for `amqps://` broker URLs; offered to every command (like
/// `--config`), so a command added later has them too.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// CA certificates (PEM) to trust for amqps://, instead of the system's
    /// store [default: the config file's `tls_ca`]
    #[arg(long, env = "CHIT_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for amqps://, for a broker that verifies
    /// peers; needs --tls-key [default: the config file's `tls_cert`]
    #[arg(long, env = "CHIT_TLS_CERT", value_name = "FILE", global = true)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM, unencrypted)
    /// [default: the config file's `tls_key`]
    #[arg(long, env = "CHIT_TLS_KEY", value_name = "FILE", global = true)]
    pub tls_key: Option<std::path::PathBuf>,
}
