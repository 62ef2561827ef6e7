//! Publishing errors, each saying whether a later try could succeed.

use std::fmt;

/// What went wrong with a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// No queue is bound for this task type: the topology lacks its capability.
    Unroutable {
        /// The task type that had no queue.
        task_type: String,
    },
    /// The broker refused the message (negative confirm).
    Nacked,
    /// The broker stayed unreachable until the publish deadline.
    Unavailable,
    /// The task itself is invalid (bad task type, payload that cannot be encoded).
    InvalidTask,
    /// The task was confirmed, but its `queued` receipt could not be.
    ReceiptNotConfirmed,
}

/// A failed publish.
#[derive(Debug, Clone)]
pub struct PublishError {
    kind: PublishErrorKind,
    message: String,
}

impl PublishError {
    pub(crate) fn new(kind: PublishErrorKind, message: impl Into<String>) -> Self {
        PublishError {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> &PublishErrorKind {
        &self.kind
    }

    /// True when publishing the same task again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            PublishErrorKind::Unavailable | PublishErrorKind::ReceiptNotConfirmed
        )
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PublishError {}
