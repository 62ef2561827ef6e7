//! A task as the sink sees it: its state, derived from its receipts so that
//! the order they arrive in, and any duplicates, make no difference.
//!
//! Every receipt gets an *order key*: `(attempt, rank, created_at, receipt_id)`
//! encoded as one string that sorts the same way. The receipt with the greatest
//! key sets the task's state; the greatest key among receipts naming a worker
//! sets the worker; the greatest among failing receipts with an `error` sets
//! `last_error`. Attempts, first and last times are plain max/min. All of these
//! are commutative and idempotent, so the store applies them as upserts and a
//! redelivered batch changes nothing. They are written once, as the column
//! rules of `TaskDelta`; the fold that pre-aggregates a batch and each
//! backend's SQL are derived from that table.

use crate::store::row_rule::{ColumnValue, SqlType, SqlValue, row_rule};
use broker_topology::{Receipt, ReceiptType};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Published and confirmed by the broker; no worker has taken it yet.
    Queued,
    /// A delayed task (a `scheduled` receipt): it waits in a delay queue,
    /// then in its task queue, until a worker takes it.
    Scheduled,
    /// A worker accepted it and has not reported an outcome.
    Running,
    /// Its last run said it is not done yet (an `in_progress` receipt): it
    /// waits to run again, with that run's output, in the same attempt.
    InProgress,
    /// The executor finished successfully.
    Succeeded,
    /// The latest attempt failed and no retry or dead-lettering is recorded (yet).
    Failed,
    /// A retry is scheduled.
    Retrying,
    /// Moved to its capability's dead-letter queue.
    DeadLettered,
    /// Cancelled.
    Cancelled,
    /// Its dead letter was purged: it will not run.
    Purged,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 10] = [
        TaskState::Queued,
        TaskState::Scheduled,
        TaskState::Running,
        TaskState::InProgress,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Retrying,
        TaskState::DeadLettered,
        TaskState::Cancelled,
        TaskState::Purged,
    ];

    /// The name used in the store and the API (`dead_lettered`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Scheduled => "scheduled",
            TaskState::Running => "running",
            TaskState::InProgress => "in_progress",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Retrying => "retrying",
            TaskState::DeadLettered => "dead_lettered",
            TaskState::Cancelled => "cancelled",
            TaskState::Purged => "purged",
        }
    }

    /// Parses a name; `None` for anything else.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// True when nothing more is expected of the task, so retention may
    /// delete its chain: it succeeded, was cancelled or purged. A dead-lettered task
    /// is not finished (it waits in its dead-letter queue, and a replay
    /// continues its chain), nor is a failed one (a retry may still follow).
    pub fn is_finished(self) -> bool {
        match self {
            TaskState::Succeeded | TaskState::Cancelled | TaskState::Purged => true,
            TaskState::Queued
            | TaskState::Scheduled
            | TaskState::Running
            | TaskState::InProgress
            | TaskState::Failed
            | TaskState::Retrying
            | TaskState::DeadLettered => false,
        }
    }

    /// The state a receipt of type `t` puts its task in, when it is the latest.
    pub fn after(t: ReceiptType) -> TaskState {
        match t {
            ReceiptType::Queued => TaskState::Queued,
            ReceiptType::Scheduled => TaskState::Scheduled,
            ReceiptType::Accepted => TaskState::Running,
            ReceiptType::InProgress => TaskState::InProgress,
            ReceiptType::Failure => TaskState::Failed,
            ReceiptType::RetryScheduled => TaskState::Retrying,
            ReceiptType::Success => TaskState::Succeeded,
            ReceiptType::DeadLettered => TaskState::DeadLettered,
            ReceiptType::Cancelled => TaskState::Cancelled,
            ReceiptType::Purged => TaskState::Purged,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One task's summary row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    /// The task id.
    pub task_id: String,
    /// Its task type (capability).
    pub task_type: String,
    /// Current state.
    pub state: TaskState,
    /// Highest attempt number seen.
    pub attempts: u32,
    /// Earliest receipt time.
    pub first_seen: DateTime<Utc>,
    /// Latest receipt time.
    pub last_update: DateTime<Utc>,
    /// Worker of the latest receipt that names one.
    pub worker_id: Option<String>,
    /// Error of the latest failure, retry or dead-lettering that gave one.
    pub last_error: Option<String>,
}

/// A task and every stored receipt of it, each after its parents, then by
/// `created_at` and `receipt_id` ([`order_by_parents`](crate::order_by_parents)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The summary.
    pub task: TaskRow,
    /// The receipts.
    pub chain: Vec<Receipt>,
}

/// Which tasks to list; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this type.
    pub task_type: Option<String>,
}

/// One page of a task listing, newest update first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The tasks.
    pub tasks: Vec<TaskRow>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// How far a receipt type goes within one attempt.
pub(crate) fn rank(t: ReceiptType) -> u8 {
    match t {
        // Either starts a chain (or, `queued`, a replay's attempt).
        ReceiptType::Queued | ReceiptType::Scheduled => 0,
        // The runs of one attempt alternate `accepted` and `in_progress`:
        // the later one says whether a run is going on or the task waits.
        ReceiptType::Accepted | ReceiptType::InProgress => 1,
        ReceiptType::Failure => 2,
        ReceiptType::RetryScheduled => 3,
        ReceiptType::Success => 4,
        ReceiptType::DeadLettered => 5,
        ReceiptType::Cancelled => 6,
        // After `dead_lettered`, the receipt it follows, in the same attempt.
        ReceiptType::Purged => 7,
    }
}

/// The stored form of a time: RFC 3339 UTC with nanoseconds, fixed width, so
/// that comparing the strings compares the times.
pub(crate) fn canonical_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The order key of a receipt (see the module docs).
pub(crate) fn order_key(r: &Receipt, created_at: &str) -> String {
    format!(
        "{:010}{}{}{}",
        r.attempt,
        rank(r.receipt_type),
        created_at,
        r.receipt_id
    )
}

/// The error a failing receipt reports, if any.
pub(crate) fn receipt_error(r: &Receipt) -> Option<String> {
    if !matches!(
        r.receipt_type,
        ReceiptType::Failure | ReceiptType::DeadLettered | ReceiptType::RetryScheduled
    ) {
        return None;
    }
    match r.body.get("error")? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

row_rule! {
    /// What a batch of receipts contributes to one task row: the upsert's
    /// values, and the one rule for how each column combines with the row
    /// already stored. The store's SQL (both backends) and the fold that
    /// pre-aggregates a batch are both derived from this table; see
    /// `store/row_rule.rs`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct TaskDelta in "tasks" {
        pub(crate) task_id: String = key,
        // A task's type does not change; the first receipt stored names it.
        pub(crate) task_type: String = first,
        pub(crate) state: TaskState = by(state_key),
        pub(crate) attempts: u32 = max,
        pub(crate) first_seen: String = min,
        pub(crate) last_update: String = max,
        pub(crate) worker_id: Option<String> = by(worker_key),
        pub(crate) last_error: Option<String> = by(error_key),
        pub(crate) state_key: String = max,
        // NULL when no receipt so far named a worker (or reported an error).
        pub(crate) worker_key: Option<String> = max,
        pub(crate) error_key: Option<String> = max,
    }
}

/// Bound as its name.
impl ColumnValue for TaskState {
    const SQL_TYPE: SqlType = SqlType::Text;
    const NULLABLE: bool = false;
    fn sql_value(&self) -> SqlValue<'_> {
        SqlValue::Text(self.as_str())
    }
}

impl TaskDelta {
    /// The contribution of one receipt whose canonical `created_at` is given.
    pub(crate) fn of(r: &Receipt, created_at: &str) -> TaskDelta {
        let key = order_key(r, created_at);
        let error = receipt_error(r);
        TaskDelta {
            task_id: r.task_id.clone(),
            task_type: r.task_type.clone(),
            state: TaskState::after(r.receipt_type),
            attempts: r.attempt,
            first_seen: created_at.to_owned(),
            last_update: created_at.to_owned(),
            worker_key: r.worker_id.as_ref().map(|_| key.clone()),
            worker_id: r.worker_id.clone(),
            error_key: error.as_ref().map(|_| key.clone()),
            last_error: error,
            state_key: key,
        }
    }
}

/// One delta per task, sorted by task id (so concurrent writers lock task rows
/// in the same order).
pub(crate) fn aggregate<'a>(
    receipts: impl IntoIterator<Item = (&'a Receipt, &'a str)>,
) -> Vec<TaskDelta> {
    let mut by_task: HashMap<&str, TaskDelta> = HashMap::new();
    for (r, created_at) in receipts {
        let delta = TaskDelta::of(r, created_at);
        match by_task.get_mut(r.task_id.as_str()) {
            Some(acc) => acc.merge(delta),
            None => {
                by_task.insert(r.task_id.as_str(), delta);
            }
        }
    }
    let mut out: Vec<TaskDelta> = by_task.into_values().collect();
    out.sort_unstable_by(|a, b| a.task_id.cmp(&b.task_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
    }

    fn r(id: &str, t: ReceiptType, attempt: u32, secs: i64) -> Receipt {
        let mut r = Receipt::new("t1", "x", t, vec![], attempt).with_id(id);
        r.created_at = at(secs);
        r
    }

    fn fold(receipts: &[Receipt]) -> TaskDelta {
        let times: Vec<String> = receipts
            .iter()
            .map(|r| canonical_time(&r.created_at))
            .collect();
        let mut v = aggregate(receipts.iter().zip(times.iter().map(String::as_str)));
        assert_eq!(v.len(), 1);
        v.pop().unwrap()
    }

    #[test]
    fn states_parse_and_cover_every_receipt_type() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        assert_eq!(TaskState::parse("done"), None);
        let mut ranks: Vec<u8> = ReceiptType::ALL
            .iter()
            .filter(|t| !matches!(t, ReceiptType::InProgress | ReceiptType::Scheduled))
            .map(|t| rank(*t))
            .collect();
        ranks.sort();
        assert_eq!(ranks, (0..8).collect::<Vec<_>>());
        assert_eq!(rank(ReceiptType::InProgress), rank(ReceiptType::Accepted));
        assert_eq!(rank(ReceiptType::Scheduled), rank(ReceiptType::Queued));
    }

    #[test]
    fn canonical_times_sort_as_times() {
        let a = canonical_time(&(at(0) + chrono::Duration::nanoseconds(5)));
        let b = canonical_time(&at(1));
        assert_eq!(a.len(), b.len());
        assert!(a < b);
        assert_eq!(a, "2026-01-01T00:00:00.000000005Z");
    }

    #[test]
    fn every_order_gives_the_same_task() {
        let chain = vec![
            r("a", ReceiptType::Queued, 1, 0),
            r("b", ReceiptType::Accepted, 1, 1).with_worker("w1"),
            r("c", ReceiptType::Failure, 1, 2)
                .with_worker("w1")
                .with_body(json!({"error": "boom"})),
            r("d", ReceiptType::RetryScheduled, 1, 3)
                .with_body(json!({"error": "boom", "delay_ms": 10})),
            r("e", ReceiptType::Accepted, 2, 4).with_worker("w2"),
            r("f", ReceiptType::Success, 2, 5).with_worker("w2"),
        ];
        let expected = fold(&chain);
        assert_eq!(expected.state, TaskState::Succeeded);
        assert_eq!(expected.attempts, 2);
        assert_eq!(expected.worker_id.as_deref(), Some("w2"));
        assert_eq!(expected.last_error.as_deref(), Some("boom"));
        assert_eq!(expected.first_seen, canonical_time(&at(0)));
        assert_eq!(expected.last_update, canonical_time(&at(5)));
        // Reversed, rotated, and with duplicates: same result.
        let mut rev = chain.clone();
        rev.reverse();
        assert_eq!(fold(&rev), expected);
        for k in 1..chain.len() {
            let mut rot = chain.clone();
            rot.rotate_left(k);
            rot.extend(chain[..k].iter().cloned());
            assert_eq!(fold(&rot), expected);
        }
    }

    #[test]
    fn a_late_failure_of_an_old_attempt_does_not_win() {
        let chain = vec![
            r("e", ReceiptType::Accepted, 2, 4),
            r("c", ReceiptType::Failure, 1, 9).with_body(json!({"error": "late"})),
        ];
        let t = fold(&chain);
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.last_error.as_deref(), Some("late"));
        assert_eq!(t.last_update, canonical_time(&at(9)));
    }

    #[test]
    fn a_task_between_polls_is_in_progress_and_running_while_polled() {
        let polled = vec![
            r("a", ReceiptType::Accepted, 1, 1),
            r("b", ReceiptType::InProgress, 1, 2),
        ];
        assert_eq!(fold(&polled).state, TaskState::InProgress);
        let mut again = polled.clone();
        again.push(r("c", ReceiptType::Accepted, 1, 12));
        assert_eq!(fold(&again).state, TaskState::Running);
        again.push(r("d", ReceiptType::Success, 1, 13));
        again.reverse();
        assert_eq!(fold(&again).state, TaskState::Succeeded);
    }

    #[test]
    fn a_delayed_task_is_scheduled_until_a_worker_takes_it() {
        let waiting = vec![r("s", ReceiptType::Scheduled, 1, 0)];
        assert_eq!(fold(&waiting).state, TaskState::Scheduled);
        assert!(!TaskState::Scheduled.is_finished());
        let mut ran = waiting.clone();
        ran.push(r("a", ReceiptType::Accepted, 1, 30).with_worker("w"));
        assert_eq!(fold(&ran).state, TaskState::Running);
        ran.push(r("d", ReceiptType::Success, 1, 31).with_worker("w"));
        ran.reverse();
        assert_eq!(fold(&ran).state, TaskState::Succeeded);
    }

    #[test]
    fn errors_come_only_from_failing_receipts() {
        let ok = r("a", ReceiptType::Success, 1, 0).with_body(json!({"error": "ignored"}));
        assert_eq!(receipt_error(&ok), None);
        let obj = r("b", ReceiptType::DeadLettered, 1, 0).with_body(json!({"error": {"code": 3}}));
        assert_eq!(receipt_error(&obj).as_deref(), Some(r#"{"code":3}"#));
    }
}
