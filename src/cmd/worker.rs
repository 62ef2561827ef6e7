//! `chit worker`: consume tasks of some capabilities and run them until
//! SIGTERM or ctrl-c. `chit worker exec` (in `exec`) runs a program per task.

mod exec;

use crate::settings::{RetryFlags, Settings, WorkerSettings};
use crate::signal::stop_signal;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use worker::WorkerConfig;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorkerArgs {
    #[command(subcommand)]
    command: Option<WorkerCommand>,
    /// Task type to consume, optionally `TYPE=EXECUTOR` (repeatable).
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    #[command(flatten)]
    flags: WorkerFlags,
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Consume one task type and run a program, in any language, once per
    /// task: the task as JSON on stdin, its result as JSON on stdout.
    Exec(exec::ExecArgs),
}

/// The flags of every worker, `chit worker exec` included.
#[derive(Args)]
pub struct WorkerFlags {
    /// Tasks run at once [default: 4]
    #[arg(long, env = "CHIT_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Deliveries the broker may push ahead, per capability [default: twice
    /// the concurrency]
    #[arg(long, env = "CHIT_PREFETCH")]
    prefetch: Option<u16>,
    /// Worker id in receipts [default: HOSTNAME-PID]
    #[arg(long, env = "CHIT_WORKER_ID")]
    worker_id: Option<String>,
    /// Seconds in-flight tasks get to finish after SIGTERM [default: 30]
    #[arg(long, env = "CHIT_DRAIN_TIMEOUT_SECS", visible_alias = "drain-timeout")]
    drain_timeout_secs: Option<u64>,
    #[command(flatten)]
    retry: RetryFlags,
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    #[arg(long, default_value_t = WorkerConfig::DEFAULT_KILL_GRACE.as_secs_f64())]
    kill_grace_secs: f64,
    /// Longest wait, in ms, for more receipts before a receipt batch is
    /// sent [default: 2]
    #[arg(long, env = "CHIT_RECEIPT_LINGER_MS")]
    receipt_linger_ms: Option<f64>,
    /// Serve GET /healthz (broker connection state) and GET /readyz (that
    /// and each executor's health) on this address.
    #[arg(long, env = "CHIT_HEALTH_ADDR")]
    health: Option<String>,
    /// Seconds between two health checks of each executor [default: 30].
    #[arg(long, env = "CHIT_HEALTH_INTERVAL")]
    health_interval_secs: Option<f64>,
}

impl WorkerArgs {
    /// The flags as settings, for [`Settings::worker_config`] (the settings
    /// tests; `run` also takes the exec program).
    #[cfg(test)]
    pub fn into_settings(self) -> WorkerSettings {
        self.into_parts().0
    }

    /// The settings, and the program of `chit worker exec`.
    fn into_parts(self) -> (WorkerSettings, Option<exec::ExecRun>) {
        match self.command {
            Some(WorkerCommand::Exec(args)) => {
                let (settings, run) = args.into_parts();
                (settings, Some(run))
            }
            None => (self.flags.into_settings(self.capabilities), None),
        }
    }
}

impl WorkerFlags {
    /// The flags as settings for `capabilities`.
    fn into_settings(self, capabilities: Vec<String>) -> WorkerSettings {
        WorkerSettings {
            capabilities,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            worker_id: self.worker_id,
            drain_timeout_secs: self.drain_timeout_secs,
            retry: self.retry,
            kill_grace_secs: Some(self.kill_grace_secs),
            receipt_linger_ms: self.receipt_linger_ms,
            health_addr: self.health,
            health_interval_secs: self.health_interval_secs,
        }
    }
}

/// Runs the worker until a stop signal, then drains.
pub async fn run(settings: &Settings, args: WorkerArgs) -> Result<ExitCode> {
    let (given, exec) = args.into_parts();
    let config = settings.worker_config(&given)?;
    // The built-in executors and the config file's [executor.NAME] tables.
    let mut registry = settings.executor_registry(config.kill_grace)?;
    if let Some(exec) = exec {
        registry.register(exec.executor(config.kill_grace));
    }
    worker::run(config, registry, stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
