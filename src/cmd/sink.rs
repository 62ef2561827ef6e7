//! `chit sink`: store every receipt and serve the HTTP API over them until
//! SIGTERM or ctrl-c.

use crate::settings::{Settings, SinkSettings};
use crate::signal::stop_signal;
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct SinkArgs {
    /// Receipt store: sqlite://PATH or postgres://... [default: the config
    /// file's `[sink] store`, else SQLite in chit's data directory]
    #[arg(long, env = "CHIT_STORE")]
    store: Option<String>,
    /// Address of the HTTP API: HOST:PORT, :PORT or HOST [default:
    /// 127.0.0.1:8700]
    #[arg(long, env = "CHIT_HTTP")]
    http: Option<String>,
    /// Receipts per committed batch at most [default: 1000]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Milliseconds a batch stays open at most [default: 10]
    #[arg(long)]
    batch_wait_ms: Option<u64>,
    /// Messages the broker may push ahead [default: 128]
    #[arg(long)]
    prefetch: Option<u16>,
    /// Sink group. Every group gets every receipt; the sinks of one group
    /// share its queue, so they must write to the same store (a sink with
    /// another store refuses to join). A second store needs its own group.
    /// [default: default]
    #[arg(long, env = "CHIT_SINK_GROUP")]
    group: Option<String>,
    /// Delete finished tasks (succeeded, cancelled, purged) whose last
    /// receipt is older than this, with their receipt chains: a whole number
    /// and s, m, h, d or w, as in 30d. Checked at start and hourly. Tasks
    /// not finished are kept. [default: keep everything]
    #[arg(long, env = "CHIT_SINK_RETAIN", value_name = "AGE")]
    retain: Option<String>,
    /// Do not run: move the receipt messages in the quarantine queue
    /// (chit.receipts.quarantine) back to the sink queues they came from,
    /// print how many, and exit. Run it once what made the sink fail on
    /// them is fixed; the sinks store them as usual.
    #[arg(long)]
    replay_quarantine: bool,
}

/// Runs the sink until a stop signal, then commits what it holds.
pub async fn run(settings: &Settings, args: SinkArgs) -> Result<ExitCode> {
    if args.replay_quarantine {
        let n = receipts_sink::replay_quarantine(&settings.amqp_url).await?;
        println!("replayed {n} quarantined receipt messages");
        return Ok(ExitCode::SUCCESS);
    }
    let config = settings.sink_config(&SinkSettings {
        store: args.store,
        http: args.http,
        batch_size: args.batch_size,
        batch_wait_ms: args.batch_wait_ms,
        prefetch: args.prefetch,
        group: args.group,
        retain: args.retain,
    })?;
    receipts_sink::run(config, stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
