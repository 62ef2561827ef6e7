//! Producer errors, each saying whether a later try could succeed.

use broker_link::{LinkError, PublishOutcome};
use std::fmt;

/// What went wrong with a publish or a dead-letter operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// No queue is bound for this task type: the topology lacks its capability.
    Unroutable {
        /// The task type that had no queue.
        task_type: String,
    },
    /// A message other than a task came back unroutable: the queue that should
    /// receive it (the cancellation stream, say) is not bound.
    Returned {
        /// The exchange it was published to.
        exchange: String,
    },
    /// The broker refused the message (negative confirm).
    Nacked,
    /// The broker stayed unreachable until the publish deadline.
    Unavailable,
    /// The broker refused access or the operation: retrying will not help.
    Refused,
    /// The task itself is invalid (bad task type, payload that cannot be
    /// encoded, an impossible envelope value such as 0 max attempts).
    InvalidTask,
    /// The payload breaks its capability's schema.
    InvalidPayload {
        /// Every violation, each with the JSON pointer of the bad value.
        violations: Vec<broker_topology::Violation>,
    },
    /// A queue the operation needs does not exist (a task type without a
    /// dead-letter queue).
    QueueNotFound {
        /// The queue name.
        queue: String,
    },
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

    /// A broker failure while doing `what`.
    pub(crate) fn from_link(what: &str, e: LinkError) -> Self {
        let kind = if e.is_transient() {
            PublishErrorKind::Unavailable
        } else {
            PublishErrorKind::Refused
        };
        PublishError::new(kind, format!("{what}: {e}"))
    }

    /// The error for an outcome other than `Confirmed` of publishing `what`
    /// to `exchange`.
    pub(crate) fn from_outcome(outcome: PublishOutcome, what: &str, exchange: &str) -> Self {
        match outcome {
            PublishOutcome::Returned { reply_text, .. } => PublishError::new(
                PublishErrorKind::Returned {
                    exchange: exchange.to_owned(),
                },
                format!(
                    "{what} was returned by the broker ({reply_text}): no queue is bound to \
                     {exchange}; run chit topology apply"
                ),
            ),
            PublishOutcome::Nacked => PublishError::new(
                PublishErrorKind::Nacked,
                format!("the broker refused {what} (negative confirm)"),
            ),
            PublishOutcome::Lost(e) => PublishError::from_link(&format!("sending {what}"), e),
            PublishOutcome::Confirmed => {
                unreachable!("a confirmed publish is not an error")
            }
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
