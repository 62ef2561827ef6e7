//! The receipt: one step in the life of a task, naming the receipts it follows.
//!
//! Receipts travel in batches: one AMQP message on [`crate::names::RECEIPT_EXCHANGE`]
//! whose body is an array of receipts. Batching is what lets a task cost about one
//! broker message plus a small share of a receipt batch. A single receipt object
//! (not in an array) is accepted too, so a plain client can emit one by hand.

use crate::trace::{SpanId, TraceContext, TraceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The step a receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptType {
    /// The producer published the task and the broker confirmed it.
    Queued,
    /// The producer published a delayed task into a delay queue and the
    /// broker confirmed it: the broker moves it into its task queue when the
    /// delay is up. It takes the place of `queued` as the first receipt of a
    /// delayed task; its body says the delay and when the task is due.
    Scheduled,
    /// A worker took a lease on the task (one per delivery, so redeliveries show).
    Accepted,
    /// The run is not done yet: the task comes back after a delay, with this
    /// run's output, in the same attempt.
    InProgress,
    /// The executor finished successfully.
    Success,
    /// The attempt failed; the body says why and whether it is retryable.
    Failure,
    /// The task was sent to a delay queue and will be delivered again.
    RetryScheduled,
    /// The task was moved to its capability's dead-letter queue.
    DeadLettered,
    /// The task was cancelled, before or while it ran.
    Cancelled,
    /// The task's dead letter was deleted (`chit dlq purge`): it will not run.
    Purged,
}

impl ReceiptType {
    /// Every receipt type, in the order of a task's life.
    pub const ALL: [ReceiptType; 10] = [
        ReceiptType::Queued,
        ReceiptType::Scheduled,
        ReceiptType::Accepted,
        ReceiptType::InProgress,
        ReceiptType::Success,
        ReceiptType::Failure,
        ReceiptType::RetryScheduled,
        ReceiptType::DeadLettered,
        ReceiptType::Cancelled,
        ReceiptType::Purged,
    ];

    /// The wire name (`retry_scheduled`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptType::Queued => "queued",
            ReceiptType::Scheduled => "scheduled",
            ReceiptType::Accepted => "accepted",
            ReceiptType::InProgress => "in_progress",
            ReceiptType::Success => "success",
            ReceiptType::Failure => "failure",
            ReceiptType::RetryScheduled => "retry_scheduled",
            ReceiptType::DeadLettered => "dead_lettered",
            ReceiptType::Cancelled => "cancelled",
            ReceiptType::Purged => "purged",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<ReceiptType> {
        ReceiptType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// True for receipts after which this attempt of the task does nothing more.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ReceiptType::Queued
                | ReceiptType::Scheduled
                | ReceiptType::Accepted
                | ReceiptType::InProgress
        )
    }
}

/// A file or object a task produced, pointed to by a receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Artifact {
    /// A filesystem path on the worker's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A URI, for artifacts that live elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// MIME type of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lower-case hex SHA-256 of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What the artifact is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One step of a task, as stored in its receipt chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Unique id (chit makes UUIDv7 strings; any unique string is accepted).
    pub receipt_id: String,
    /// The task this receipt belongs to (the task message's `message_id`).
    pub task_id: String,
    /// The task type (capability).
    pub task_type: String,
    /// Which step this is.
    pub receipt_type: ReceiptType,
    /// The receipts this one follows. Empty only for the first receipt of a chain.
    #[serde(default)]
    pub parent_receipt_ids: Vec<String>,
    /// The worker that wrote it, when a worker did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Attempt number, starting at 1; a retry increments it.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// When the step happened (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// Step details: error, exit code, delay, delivery count, ...
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub body: Value,
    /// Outputs the step produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// The trace of the step (32 hex digits): the task's trace, the same in
    /// every receipt of one publish and its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<TraceId>,
    /// The span of the step (16 hex digits): the producer's `publish` for
    /// `queued`, the worker's `process` for a run's receipts. Missing when
    /// the writer records no span of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<SpanId>,
}

fn first_attempt() -> u32 {
    1
}

/// A fresh receipt id: UUIDv7, so ids sort by creation time.
pub fn new_receipt_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Receipt {
    /// A receipt with a fresh id, created now, with an empty body.
    pub fn new(
        task_id: impl Into<String>,
        task_type: impl Into<String>,
        receipt_type: ReceiptType,
        parent_receipt_ids: Vec<String>,
        attempt: u32,
    ) -> Self {
        Receipt {
            receipt_id: new_receipt_id(),
            task_id: task_id.into(),
            task_type: task_type.into(),
            receipt_type,
            parent_receipt_ids,
            worker_id: None,
            attempt,
            created_at: Utc::now(),
            body: Value::Null,
            artifacts: Vec::new(),
            trace_id: None,
            span_id: None,
        }
    }

    /// Records the trace context of the step: its trace, and its span when
    /// `span` is given.
    pub fn with_trace(mut self, trace: TraceContext, span: bool) -> Self {
        self.set_trace(trace, span);
        self
    }

    /// As [`Receipt::with_trace`], in place.
    pub fn set_trace(&mut self, trace: TraceContext, span: bool) {
        self.trace_id = Some(trace.trace_id);
        self.span_id = span.then_some(trace.span_id);
    }

    /// Sets the receipt id (used when the id was chosen in advance, as for `queued`).
    pub fn with_id(mut self, receipt_id: impl Into<String>) -> Self {
        self.receipt_id = receipt_id.into();
        self
    }

    /// Sets the worker id.
    pub fn with_worker(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = body;
        self
    }

    /// Sets the artifacts.
    pub fn with_artifacts(mut self, artifacts: Vec<Artifact>) -> Self {
        self.artifacts = artifacts;
        self
    }

    /// True when this receipt says the task will not run again by itself:
    /// `success`, `cancelled`, `dead_lettered`, `purged`, or a `failure`
    /// whose body does not say `will_retry: true`. A `retry_scheduled` or an
    /// `in_progress` is final for its attempt or run, not for the task. This
    /// is the receipt a worker sends to a task's `reply_to`, and the one a
    /// waiter for the task (`publish --wait`) takes as its answer.
    pub fn ends_task(&self) -> bool {
        match self.receipt_type {
            ReceiptType::Success
            | ReceiptType::Cancelled
            | ReceiptType::DeadLettered
            | ReceiptType::Purged => true,
            ReceiptType::Failure => self.body.get("will_retry") != Some(&Value::Bool(true)),
            ReceiptType::Queued
            | ReceiptType::Scheduled
            | ReceiptType::Accepted
            | ReceiptType::InProgress
            | ReceiptType::RetryScheduled => false,
        }
    }

    /// Checks what serde cannot: ids and names are present.
    pub fn validate(&self) -> Result<(), String> {
        if self.receipt_id.is_empty() {
            return Err("receipt_id is empty".into());
        }
        if self.task_id.is_empty() {
            return Err("task_id is empty".into());
        }
        if self.task_type.is_empty() {
            return Err("task_type is empty".into());
        }
        if self.attempt == 0 {
            return Err("attempt must be 1 or more".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_type_names_round_trip() {
        for t in ReceiptType::ALL {
            assert_eq!(ReceiptType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(ReceiptType::parse("done"), None);
    }

    #[test]
    fn only_receipts_after_which_the_task_never_runs_again_end_it() {
        let r = |t| Receipt::new("t", "x", t, vec![], 1);
        let ending: Vec<ReceiptType> = ReceiptType::ALL
            .into_iter()
            .filter(|t| r(*t).ends_task())
            .collect();
        assert_eq!(
            ending,
            [
                ReceiptType::Success,
                ReceiptType::Failure,
                ReceiptType::DeadLettered,
                ReceiptType::Cancelled,
                ReceiptType::Purged,
            ]
        );
        let retried = r(ReceiptType::Failure).with_body(serde_json::json!({"will_retry": true}));
        assert!(!retried.ends_task());
        let last = r(ReceiptType::Failure).with_body(serde_json::json!({"will_retry": false}));
        assert!(last.ends_task());
        assert!(!ReceiptType::Scheduled.is_final());
        assert_eq!(
            ReceiptType::parse("scheduled"),
            Some(ReceiptType::Scheduled)
        );
    }

    #[test]
    fn minimal_receipt_from_a_plain_client_parses() {
        let r: Receipt = serde_json::from_str(
            r#"{"receipt_id":"r1","task_id":"t1","task_type":"x","receipt_type":"success",
                "created_at":"2026-01-02T03:04:05Z"}"#,
        )
        .unwrap();
        assert_eq!(r.attempt, 1);
        assert!(r.parent_receipt_ids.is_empty());
        assert!(r.validate().is_ok());
        assert_eq!(r.trace_id, None);
    }

    #[test]
    fn the_trace_context_is_two_optional_hex_fields() {
        let ctx =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let r = Receipt::new("t", "x", ReceiptType::Accepted, vec![], 1).with_trace(ctx, true);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(json["span_id"], "00f067aa0ba902b7");
        let back: Receipt = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        let untraced = serde_json::to_value(r.with_trace(ctx, false)).unwrap();
        assert!(untraced.get("span_id").is_none());
        assert!(
            serde_json::to_value(Receipt::new("t", "x", ReceiptType::Queued, vec![], 1))
                .unwrap()
                .get("trace_id")
                .is_none()
        );
    }
}
