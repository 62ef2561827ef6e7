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

/// A sink telling the others on [`crate::names::SINK_ROSTER_EXCHANGE`] which
/// group it consumes for and which store it writes to. Sinks of one group
/// must share a store: each group's queue hands every receipt to one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkAnnouncement {
    /// The sender, unique per running sink.
    pub sink_id: String,
    /// Its sink group.
    pub group: String,
    /// Its store, password hidden (`sqlite:///abs/path`, `postgres://user@host:port/db`).
    pub store: String,
    /// False when a sink starts and asks who is there; true for the answers.
    #[serde(default)]
    pub reply: bool,
}
