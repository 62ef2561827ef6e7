//! `chit sink`: store every receipt and serve the HTTP API over them until
//! SIGTERM or ctrl-c.

use crate::settings::{Settings, SinkSettings};
use crate::signal::stop_signal;
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct SinkArgs {
    /// Receipt store: sqlite://PATH (default: in chit's data directory) or postgres://...
    #[arg(long, env = "CHIT_STORE")]
    store: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, env = "CHIT_HTTP")]
    http: Option<String>,
    /// Receipts per committed batch at most.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Milliseconds a batch stays open at most.
    #[arg(long)]
    batch_wait_ms: Option<u64>,
    /// Messages the broker may push ahead.
    #[arg(long)]
    prefetch: Option<u16>,
    /// Sink group. Every group gets every receipt; the sinks of one group
    /// share its queue, so they must write to the same store (a sink with
    /// another store refuses to join). A second store needs its own group.
    /// [default: default]
    #[arg(long, env = "CHIT_SINK_GROUP")]
    group: Option<String>,
}

/// Runs the sink until a stop signal, then commits what it holds.
pub async fn run(settings: &Settings, args: SinkArgs) -> Result<ExitCode> {
    let config = settings.sink_config(&SinkSettings {
        store: args.store,
        http: args.http,
        batch_size: args.batch_size,
        batch_wait_ms: args.batch_wait_ms,
        prefetch: args.prefetch,
        group: args.group,
    })?;
    receipts_sink::run(config, stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
