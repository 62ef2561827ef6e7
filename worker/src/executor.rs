//! The executor trait: the one interface every kind of work plugs in behind.
//!
//! The worker owns the lease (the delivery), the receipts and the retries; an
//! executor only turns a payload into an [`Outcome`] or an [`ExecError`], and
//! says through the error's kind whether trying again could help.

use async_trait::async_trait;
use broker_topology::Artifact;
use serde_json::Value;
use std::fmt;
use std::time::Duration;
use tokio::sync::watch;

/// What an executor knows about the task it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Task id.
    pub task_id: String,
    /// Task type (capability).
    pub task_type: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The worker running it.
    pub worker_id: String,
    /// The attempt's run-time limit, if any: the smaller of the task's own
    /// (`x-chit-timeout-ms`, else the capability's) and the payload's
    /// ([`Executor::time_limit`]). The worker enforces it, with the only timer
    /// of the attempt, by cancelling with [`CancelReason::Timeout`]; an
    /// executor keeps no timer of its own for it, but may use it to size
    /// its own timeouts (a request deadline, say).
    pub timeout: Option<Duration>,
    /// W3C `traceparent` of the task, to pass on to what the executor calls.
    pub traceparent: Option<String>,
    /// Earlier runs of the task that ended [`InProgress`] (0 on its first run).
    pub polls: u32,
    /// The output the latest of those runs gave, to pick up from.
    pub previous_output: Option<Value>,
}

/// Why a running task is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// It ran past its time limit.
    Timeout,
    /// A user cancelled it; `force` asks for an immediate kill.
    Cancelled {
        /// Kill at once, without a grace period.
        force: bool,
    },
    /// The worker is shutting down and its drain time ran out.
    Shutdown,
}

/// A cancellation signal handed to [`Executor::execute`].
#[derive(Debug, Clone)]
pub struct Cancellation(watch::Receiver<Option<CancelReason>>);

/// The sending side of a [`Cancellation`], kept by the worker.
#[derive(Debug, Clone)]
pub struct Canceller(watch::Sender<Option<CancelReason>>);

/// A linked canceller and cancellation.
pub fn cancellation() -> (Canceller, Cancellation) {
    let (tx, rx) = watch::channel(None);
    (Canceller(tx), Cancellation(rx))
}

impl Canceller {
    /// Asks the task to stop. The first reason wins, except that a forced
    /// cancel upgrades any earlier one.
    pub fn cancel(&self, reason: CancelReason) {
        self.0.send_if_modified(|cur| match cur {
            None => {
                *cur = Some(reason);
                true
            }
            Some(_) if reason == (CancelReason::Cancelled { force: true }) => {
                *cur = Some(reason);
                true
            }
            _ => false,
        });
    }
}

impl Cancellation {
    /// A cancellation that never fires.
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(None);
        std::mem::forget(tx);
        Cancellation(rx)
    }

    /// The reason, if cancelled.
    pub fn reason(&self) -> Option<CancelReason> {
        *self.0.borrow()
    }

    /// Resolves when cancelled (again, for a later upgrade to forced).
    pub async fn cancelled(&mut self) -> CancelReason {
        loop {
            if let Some(r) = *self.0.borrow_and_update() {
                return r;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves on the next change after the current reason (e.g. forced).
    pub async fn changed(&mut self) -> Option<CancelReason> {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.0.borrow_and_update()
    }
}

/// What a successful execution produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Goes into the `success` receipt's body (the `in_progress` receipt's,
    /// when the work is not done).
    pub body: Value,
    /// Files or objects produced.
    pub artifacts: Vec<Artifact>,
    /// `Some` when the work is not done yet: the task runs again later, in
    /// the same attempt, with [`TaskContext::previous_output`] set.
    pub in_progress: Option<InProgress>,
}

/// A run that is not the end of the work: the task is to run again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InProgress {
    /// How long to wait before the next run; `None` leaves it to the worker's
    /// default. The worker caps it and rounds it down to its delay grid.
    pub after: Option<Duration>,
    /// Handed to the next run as [`TaskContext::previous_output`].
    pub output: Value,
}

/// How an execution failed, which decides retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecErrorKind {
    /// The payload is wrong; running it again cannot help. Dead-lettered at once.
    InvalidPayload,
    /// The work ran and failed (non-zero exit, error response). Retryable.
    Failed,
    /// The work could not start or reach what it needs (spawn error,
    /// connection refused). Retryable.
    Unavailable,
    /// The work failed in a way that will not change on retry (program not
    /// found, permission denied). Dead-lettered.
    Permanent,
    /// The time limit ran out. Retryable.
    Timeout,
    /// A user cancelled the task. Never retried.
    Cancelled,
    /// The worker stopped the task to shut down. The task goes back to its
    /// queue without a final receipt.
    Interrupted,
    /// The executor's policy refused to run it (a program not on the allow
    /// list, on the block list, ...); `details.rule` names the rule. Never
    /// retried: the same task meets the same policy.
    Refused,
}

impl ExecErrorKind {
    /// The `reason` written into failure receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecErrorKind::InvalidPayload => "invalid_payload",
            ExecErrorKind::Failed => "failed",
            ExecErrorKind::Unavailable => "unavailable",
            ExecErrorKind::Permanent => "permanent",
            ExecErrorKind::Timeout => "timeout",
            ExecErrorKind::Cancelled => "cancelled",
            ExecErrorKind::Interrupted => "interrupted",
            ExecErrorKind::Refused => "refused",
        }
    }
}

/// A failed execution.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecError {
    /// How it failed.
    pub kind: ExecErrorKind,
    /// One line for humans.
    pub message: String,
    /// Extra fields for the failure receipt's body (exit code, stderr tail, ...).
    pub details: Value,
    /// Artifacts produced before the failure.
    pub artifacts: Vec<Artifact>,
}

impl ExecError {
    /// An error of `kind` with a message.
    pub fn new(kind: ExecErrorKind, message: impl Into<String>) -> Self {
        ExecError {
            kind,
            message: message.into(),
            details: Value::Null,
            artifacts: Vec::new(),
        }
    }

    /// A bad payload.
    pub fn invalid(message: impl Into<String>) -> Self {
        ExecError::new(ExecErrorKind::InvalidPayload, message)
    }

    /// Adds receipt details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// True when another attempt could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ExecErrorKind::Failed | ExecErrorKind::Unavailable | ExecErrorKind::Timeout
        )
    }

    /// The error for a cancellation reason.
    pub fn from_cancel(reason: CancelReason) -> Self {
        match reason {
            CancelReason::Timeout => ExecError::new(ExecErrorKind::Timeout, "timed out"),
            CancelReason::Cancelled { force } => ExecError::new(
                ExecErrorKind::Cancelled,
                if force {
                    "cancelled (forced)"
                } else {
                    "cancelled"
                },
            ),
            CancelReason::Shutdown => ExecError::new(
                ExecErrorKind::Interrupted,
                "worker shut down before the task finished",
            ),
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for ExecError {}

/// A kind of work the worker can run.
///
/// - [`validate`](Executor::validate) runs before `accepted` is final work:
///   `Err` (always [`ExecErrorKind::InvalidPayload`]) sends the task straight
///   to its dead-letter queue with a failure receipt.
/// - [`time_limit`](Executor::time_limit), asked after `validate` passed:
///   `Some` is a run-time limit the payload sets, which the worker's timer
///   applies when it is smaller than the task's; `None` (the default) leaves
///   the task's limit alone.
/// - [`execute`](Executor::execute) returns `Ok` for success and `Err` for a
///   failure whose kind decides retry; `Ok` with [`Outcome::in_progress`]
///   set says the work is not done: the task runs again later, in the same
///   attempt. It must return promptly once `cancel` fires, having stopped
///   everything it started.
/// - [`health_check`](Executor::health_check) says whether the executor can
///   run work right now; the worker checks it at start (`Err` refuses to
///   start) and then every health interval, for `/readyz`.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// The executor's name, e.g. `command.execute`, or the `NAME` of its
    /// `[executor.NAME]` table in the config file.
    fn name(&self) -> &str;

    /// Its kind in the kind table (`command`, `noop`, ...); by default the name.
    fn kind(&self) -> &str {
        self.name()
    }

    /// Checks a payload without running it.
    fn validate(&self, payload: &Value) -> Result<(), ExecError>;

    /// The run-time limit a (valid) payload asks for, if it can set one.
    fn time_limit(&self, payload: &Value) -> Option<Duration> {
        let _ = payload;
        None
    }

    /// Runs a task.
    async fn execute(
        &self,
        ctx: &TaskContext,
        payload: Value,
        cancel: Cancellation,
    ) -> Result<Outcome, ExecError>;

    /// Checks that the executor can run work.
    async fn health_check(&self) -> Result<(), ExecError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification() {
        assert!(ExecError::new(ExecErrorKind::Timeout, "").is_retryable());
        assert!(ExecError::new(ExecErrorKind::Failed, "").is_retryable());
        assert!(!ExecError::invalid("").is_retryable());
        assert!(!ExecError::new(ExecErrorKind::Cancelled, "").is_retryable());
        assert!(!ExecError::new(ExecErrorKind::Permanent, "").is_retryable());
    }

    #[tokio::test]
    async fn forced_cancel_upgrades_a_graceful_one() {
        let (tx, mut rx) = cancellation();
        tx.cancel(CancelReason::Cancelled { force: false });
        assert_eq!(
            rx.cancelled().await,
            CancelReason::Cancelled { force: false }
        );
        tx.cancel(CancelReason::Timeout);
        assert_eq!(rx.reason(), Some(CancelReason::Cancelled { force: false }));
        tx.cancel(CancelReason::Cancelled { force: true });
        assert_eq!(rx.reason(), Some(CancelReason::Cancelled { force: true }));
    }
}
