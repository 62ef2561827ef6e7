//! `chit worker`: consume tasks of some capabilities and run them until
//! SIGTERM or ctrl-c.

use crate::settings::{RetryFlags, Settings, WorkerSettings};
use crate::signal::stop_signal;
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;
use worker::{Registry, WorkerConfig};

#[derive(Args)]
pub struct WorkerArgs {
    /// Task type to consume, optionally `TYPE=EXECUTOR` (repeatable).
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// Tasks run at once.
    #[arg(long, env = "CHIT_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Deliveries the broker may push ahead, per capability.
    #[arg(long, env = "CHIT_PREFETCH")]
    prefetch: Option<u16>,
    /// Worker id in receipts (default hostname-pid).
    #[arg(long, env = "CHIT_WORKER_ID")]
    worker_id: Option<String>,
    /// Seconds in-flight tasks get to finish after SIGTERM.
    #[arg(long, env = "CHIT_DRAIN_TIMEOUT")]
    drain_timeout: Option<u64>,
    #[command(flatten)]
    retry: RetryFlags,
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    #[arg(long, default_value_t = WorkerConfig::DEFAULT_KILL_GRACE.as_secs_f64())]
    kill_grace_secs: f64,
    /// Longest wait, in ms, for more receipts before a receipt batch is sent.
    #[arg(long, env = "CHIT_RECEIPT_LINGER_MS")]
    receipt_linger_ms: Option<f64>,
    /// Serve GET /healthz (broker connection state) on this address.
    #[arg(long, env = "CHIT_HEALTH_ADDR")]
    health: Option<String>,
}

impl WorkerArgs {
    /// The flags as settings, for [`Settings::worker_config`].
    pub fn into_settings(self) -> WorkerSettings {
        WorkerSettings {
            capabilities: self.capabilities,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            worker_id: self.worker_id,
            drain_timeout_secs: self.drain_timeout,
            retry: self.retry,
            kill_grace_secs: Some(self.kill_grace_secs),
            receipt_linger_ms: self.receipt_linger_ms,
            health_addr: self.health,
        }
    }
}

/// Runs the worker until a stop signal, then drains.
pub async fn run(settings: &Settings, args: WorkerArgs) -> Result<ExitCode> {
    let config = settings.worker_config(&args.into_settings())?;
    let registry = Registry::builtin(config.kill_grace);
    worker::run(config, registry, stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
