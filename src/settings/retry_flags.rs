//! The retry flags `chit publish` and `chit worker` share. On publish they
//! go into the task's envelope and apply to that task only; on the worker
//! they apply to every capability it serves. A task's own values win.

use broker_topology::TaskEnvelope;
use clap::Args;

/// `--max-attempts`, `--backoff-ms`, `--timeout-secs`; unset means "not
/// overridden here".
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct RetryFlags {
    /// Total attempts per task (a published task's own value overrides the worker's).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// First retry delay in ms.
    #[arg(long)]
    pub backoff_ms: Option<u64>,
    /// Run-time limit per task, in seconds (a published task's own value overrides the worker's).
    #[arg(long)]
    pub timeout_secs: Option<f64>,
}

impl RetryFlags {
    /// Writes the flags into a task's envelope, where they override the worker.
    pub fn stamp(&self, envelope: &mut TaskEnvelope) {
        envelope.max_attempts = self.max_attempts;
        envelope.backoff_ms = self.backoff_ms;
        envelope.timeout_ms = self.timeout_secs.map(|s| (s * 1000.0) as u64);
    }
}
