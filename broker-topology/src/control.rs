//! Control messages, broadcast on [`crate::names::CONTROL_EXCHANGE`] and kept
//! for a day in the [`crate::names::CANCEL_STREAM`], so a worker that starts
//! after a cancellation still learns of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Asks every worker to cancel a task: skip it when delivered, stop it if running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The task to cancel.
    pub task_id: String,
    /// Kill at once (SIGKILL) instead of SIGTERM and a grace period.
    #[serde(default)]
    pub force: bool,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
}
