//! [`PublishPass`]: the bookkeeping of publishing many tasks with pipelined
//! confirms, apart from any broker so it can be tested alone.
//!
//! Each task is a [`PendingTask`] that knows the id its `queued` receipt (or,
//! for a delayed task, `scheduled` receipt) will have. The pass records each task's [`PublishOutcome`]: a confirm settles
//! it as published, a nack as refused, a lost confirm sends it round again
//! on the next connection. Returns are decided last, by message id, because
//! lapin pairs a return with whichever confirm arrives next on the channel.

use crate::error::{PublishError, PublishErrorKind};
use crate::publisher::Published;
use crate::task::TaskSpec;
use broker_link::PublishOutcome;
use broker_topology::receipt::new_receipt_id;
use broker_topology::{Receipt, ReceiptType, TraceContext, names, schedule};
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::collections::HashSet;

/// A task on its way, with the id its `queued` receipt will have. The id is
/// also in the task's parent-receipt header, so the worker can name it as the
/// parent of `accepted` whichever receipt reaches the sink first.
#[derive(Debug, Clone)]
pub(crate) struct PendingTask {
    pub(crate) spec: TaskSpec,
    pub(crate) queued_receipt_id: String,
    /// When the task was last sent: the `queued` receipt's time. A worker
    /// may accept the task before its confirm comes back, so stamping the
    /// receipt after the confirm could date `queued` after `accepted`.
    sent_at: Option<DateTime<Utc>>,
    /// The `publish` span of the latest send, when tracing is on.
    trace: Option<TraceContext>,
    /// For a delayed task, the milliseconds of its delay queue.
    pub(crate) delay_ms: Option<u64>,
    /// Published with the producer's reply queue as `reply_to`
    /// ([`Producer::publish_and_wait`](crate::Producer::publish_and_wait)).
    pub(crate) wants_reply: bool,
}

impl PendingTask {
    fn new(mut spec: TaskSpec) -> Self {
        let queued_receipt_id = spec
            .envelope
            .parent_receipt_id
            .clone()
            .unwrap_or_else(new_receipt_id);
        spec.envelope.parent_receipt_id = Some(queued_receipt_id.clone());
        // A bad delay is refused by `TaskSpec::check` before anything is sent.
        let delay_ms = spec.delay_ms().ok().flatten();
        PendingTask {
            spec,
            queued_receipt_id,
            sent_at: None,
            trace: None,
            delay_ms,
            wants_reply: false,
        }
    }

    /// Where the task is published: the task exchange under its
    /// capability, or, for a delayed task, its capability's retry exchange
    /// under the name of its delay queue.
    pub(crate) fn destination(&self) -> (Cow<'static, str>, String) {
        let task_type = &self.spec.envelope.task_type;
        match self.delay_ms {
            Some(ms) => (
                names::retry_exchange(task_type).into(),
                names::delay_queue(task_type, ms),
            ),
            None => (names::TASK_EXCHANGE.into(), task_type.clone()),
        }
    }

    /// The `queued` receipt for this task (`scheduled` for a delayed one,
    /// with its delay and due time), once the broker has it, dated when the
    /// task was sent, with the trace context of its `publish` span (else the
    /// trace of the task's own `traceparent`, if any).
    fn queued_receipt(&self) -> Receipt {
        let env = &self.spec.envelope;
        let kind = match self.delay_ms {
            Some(_) => ReceiptType::Scheduled,
            None => ReceiptType::Queued,
        };
        let mut receipt = Receipt::new(
            env.task_id.clone(),
            env.task_type.clone(),
            kind,
            env.replay_of.iter().cloned().collect(),
            env.attempt,
        )
        .with_id(self.queued_receipt_id.clone());
        if let Some(at) = self.sent_at {
            receipt.created_at = at;
        }
        if let Some(ms) = self.delay_ms {
            receipt.body = schedule::scheduled_body(&env.task_type, ms, receipt.created_at);
        }
        if let Some(tp) = &env.traceparent {
            match &mut receipt.body {
                serde_json::Value::Object(body) => {
                    body.insert("traceparent".into(), tp.clone().into());
                }
                body => *body = serde_json::json!({ "traceparent": tp }),
            }
        }
        match (
            self.trace,
            env.traceparent.as_deref().and_then(TraceContext::parse),
        ) {
            (Some(span), _) => receipt.set_trace(span, true),
            (None, Some(given)) => receipt.set_trace(given, false),
            (None, None) => {}
        }
        receipt
    }

    fn published(&self) -> Published {
        Published {
            task_id: self.spec.envelope.task_id.clone(),
            queued_receipt_id: self.queued_receipt_id.clone(),
        }
    }
}

/// What recording an outcome did to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The task is settled (published or refused).
    Settled,
    /// The confirm was lost with the connection: publish it again.
    Retry,
}

/// Many tasks from first publish to settled results.
#[derive(Debug)]
pub(crate) struct PublishPass {
    tasks: Vec<PendingTask>,
    results: Vec<Option<Result<Published, PublishError>>>,
    returned: HashSet<String>,
    settled: usize,
}

impl PublishPass {
    pub(crate) fn new(specs: Vec<TaskSpec>) -> Self {
        let tasks: Vec<PendingTask> = specs.into_iter().map(PendingTask::new).collect();
        PublishPass {
            results: vec![None; tasks.len()],
            tasks,
            returned: HashSet::new(),
            settled: 0,
        }
    }

    pub(crate) fn task(&self, i: usize) -> &PendingTask {
        &self.tasks[i]
    }

    /// Task `i` goes out with the producer's reply queue as `reply_to`.
    pub(crate) fn want_reply(&mut self, i: usize) {
        self.tasks[i].wants_reply = true;
    }

    /// True when some task goes out with the producer's reply queue.
    pub(crate) fn wants_replies(&self) -> bool {
        self.tasks.iter().any(|t| t.wants_reply)
    }

    /// Task `i` is being sent (again) at `at`.
    pub(crate) fn mark_sent(&mut self, i: usize, at: DateTime<Utc>) {
        self.tasks[i].sent_at = Some(at);
    }

    /// Task `i`'s latest send was the `publish` span `trace`.
    pub(crate) fn mark_traced(&mut self, i: usize, trace: TraceContext) {
        self.tasks[i].trace = Some(trace);
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks settled so far, for progress reports.
    pub(crate) fn settled(&self) -> usize {
        self.settled
    }

    /// Settles task `i` as refused before publishing: it failed a check.
    pub(crate) fn refuse(&mut self, i: usize, err: PublishError) {
        self.results[i] = Some(Err(err));
        self.settled += 1;
    }

    /// Records what the broker did with task `i`.
    pub(crate) fn record(&mut self, i: usize, outcome: PublishOutcome) -> Recorded {
        let result = match outcome {
            PublishOutcome::Confirmed => Ok(self.tasks[i].published()),
            PublishOutcome::Returned { message_id, .. } => {
                // Whose return it is gets decided in `finish`.
                if let Some(id) = message_id {
                    self.returned.insert(id);
                }
                Ok(self.tasks[i].published())
            }
            PublishOutcome::Nacked => Err(PublishError::new(
                PublishErrorKind::Nacked,
                format!(
                    "the broker refused task {} (negative confirm)",
                    self.tasks[i].spec.envelope.task_id
                ),
            )),
            PublishOutcome::Lost(_) => return Recorded::Retry,
        };
        self.results[i] = Some(result);
        self.settled += 1;
        Recorded::Settled
    }

    /// Gives `err` to every task not settled yet (the deadline passed, or the
    /// broker cannot be reached).
    pub(crate) fn fail_unsettled(&mut self, err: &PublishError) {
        for r in self.results.iter_mut().filter(|r| r.is_none()) {
            *r = Some(Err(err.clone()));
        }
    }

    /// Decides returns by message id, and hands out the `queued` receipts of
    /// the tasks the broker took, each with its task's index.
    pub(crate) fn finish(&mut self) -> Vec<(usize, Receipt)> {
        if !self.returned.is_empty() {
            for (task, result) in self.tasks.iter().zip(self.results.iter_mut()) {
                if self.returned.contains(&task.spec.envelope.task_id) {
                    *result = Some(Err(unroutable(&task.spec.envelope.task_type)));
                }
            }
        }
        self.tasks
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(self.results[*i], Some(Ok(_))))
            .map(|(i, t)| (i, t.queued_receipt()))
            .collect()
    }

    /// Task `i` was taken, but its `queued` receipt was not confirmed.
    pub(crate) fn queued_receipt_unconfirmed(&mut self, i: usize) {
        self.results[i] = Some(Err(PublishError::new(
            PublishErrorKind::ReceiptNotConfirmed,
            format!(
                "task {} is queued but its queued receipt was not confirmed in time",
                self.tasks[i].spec.envelope.task_id
            ),
        )));
    }

    /// One result per task, in the order they were given.
    pub(crate) fn into_results(self) -> Vec<Result<Published, PublishError>> {
        self.results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(PublishError::new(
                        PublishErrorKind::Unavailable,
                        "the publish ended before the broker answered",
                    ))
                })
            })
            .collect()
    }
}

pub(crate) fn unroutable(task_type: &str) -> PublishError {
    PublishError::new(
        PublishErrorKind::Unroutable {
            task_type: task_type.to_owned(),
        },
        format!(
            "task type {task_type:?} has no queue: apply the topology for it \
             (chit topology apply --capability {task_type})"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_link::LinkError;
    use serde_json::json;

    fn pass(n: usize) -> PublishPass {
        PublishPass::new(
            (0..n)
                .map(|_| TaskSpec::json("noop", &json!({})).unwrap())
                .collect(),
        )
    }

    fn returned(id: &str) -> PublishOutcome {
        PublishOutcome::Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            message_id: Some(id.to_owned()),
        }
    }

    fn lost() -> PublishOutcome {
        PublishOutcome::Lost(LinkError::Closed)
    }

    #[test]
    fn the_queued_receipt_id_is_chosen_once_and_travels_in_the_header() {
        let p = pass(2);
        let t = p.task(0);
        assert_eq!(
            t.spec.envelope.parent_receipt_id.as_deref(),
            Some(t.queued_receipt_id.as_str())
        );
        assert_ne!(p.task(0).queued_receipt_id, p.task(1).queued_receipt_id);
        // A replay chooses its own and keeps it.
        let mut spec = TaskSpec::json("noop", &json!({})).unwrap();
        spec.envelope.parent_receipt_id = Some("r-fixed".into());
        assert_eq!(PendingTask::new(spec).queued_receipt_id, "r-fixed");
    }

    #[test]
    fn a_confirm_publishes_and_gives_a_queued_receipt_with_that_id() {
        let mut p = pass(1);
        assert_eq!(p.record(0, PublishOutcome::Confirmed), Recorded::Settled);
        let queued = p.finish();
        assert_eq!(queued.len(), 1);
        let (i, receipt) = &queued[0];
        assert_eq!(*i, 0);
        assert_eq!(receipt.receipt_id, p.task(0).queued_receipt_id);
        assert_eq!(receipt.receipt_type, ReceiptType::Queued);
        let results = p.into_results();
        assert_eq!(
            results[0].as_ref().unwrap().queued_receipt_id,
            receipt.receipt_id
        );
    }

    #[test]
    fn the_queued_receipt_is_dated_when_the_task_was_sent_not_when_confirmed() {
        // Issue 13, finding 4: `queued` was stamped at `finish`, after the
        // confirm, so a worker's `accepted` could be dated before it.
        let mut p = pass(2);
        let first_send = DateTime::from_timestamp_millis(1_767_288_883_000).unwrap();
        let resend = first_send + chrono::Duration::milliseconds(5);
        p.mark_sent(0, first_send);
        p.mark_sent(1, first_send);
        // Task 1's confirm was lost: it is sent again on a new connection.
        p.record(1, lost());
        p.mark_sent(1, resend);
        p.record(0, PublishOutcome::Confirmed);
        p.record(1, PublishOutcome::Confirmed);
        let queued = p.finish();
        assert_eq!(queued[0].1.created_at, first_send);
        assert_eq!(queued[1].1.created_at, resend);
    }

    #[test]
    fn a_delayed_task_goes_to_its_delay_queue_and_is_scheduled_not_queued() {
        let spec = TaskSpec::json("noop", &json!({}))
            .unwrap()
            .with_delay(std::time::Duration::from_millis(1_500));
        let mut p = PublishPass::new(vec![spec, TaskSpec::json("noop", &json!({})).unwrap()]);
        assert_eq!(
            p.task(0).destination(),
            ("chit.retry.noop".into(), "chit.wait.1500.noop".into())
        );
        assert_eq!(
            p.task(1).destination(),
            (names::TASK_EXCHANGE.into(), "noop".into())
        );
        let sent = DateTime::from_timestamp_millis(1_767_288_883_000).unwrap();
        p.mark_sent(0, sent);
        p.record(0, PublishOutcome::Confirmed);
        p.record(1, PublishOutcome::Confirmed);
        let queued = p.finish();
        let scheduled = &queued[0].1;
        assert_eq!(scheduled.receipt_type, ReceiptType::Scheduled);
        // The worker's `accepted` names it, as it would name `queued`.
        assert_eq!(
            p.task(0).spec.envelope.parent_receipt_id.as_deref(),
            Some(scheduled.receipt_id.as_str())
        );
        assert!(scheduled.parent_receipt_ids.is_empty());
        assert_eq!(scheduled.body["delay_ms"], 1_500);
        assert_eq!(scheduled.body["due_at"], "2026-01-01T17:34:44.500Z");
        assert_eq!(queued[1].1.receipt_type, ReceiptType::Queued);
    }

    #[test]
    fn a_nack_is_refused_and_gets_no_queued_receipt() {
        let mut p = pass(1);
        assert_eq!(p.record(0, PublishOutcome::Nacked), Recorded::Settled);
        assert!(p.finish().is_empty());
        let err = p.into_results().pop().unwrap().unwrap_err();
        assert_eq!(err.kind(), &PublishErrorKind::Nacked);
    }

    #[test]
    fn a_return_is_decided_by_message_id_not_by_the_confirm_it_came_with() {
        let mut p = pass(2);
        let second = p.task(1).spec.envelope.task_id.clone();
        // Task 1's return arrives paired with task 0's confirm.
        p.record(0, returned(&second));
        p.record(1, PublishOutcome::Confirmed);
        let queued = p.finish();
        assert_eq!(queued.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0]);
        let results = p.into_results();
        assert!(results[0].is_ok());
        assert!(matches!(
            results[1].as_ref().unwrap_err().kind(),
            PublishErrorKind::Unroutable { task_type } if task_type == "noop"
        ));
    }

    #[test]
    fn a_lost_confirm_is_retried_and_not_settled() {
        let mut p = pass(1);
        assert_eq!(p.record(0, lost()), Recorded::Retry);
        assert_eq!(p.settled(), 0);
        assert_eq!(p.record(0, PublishOutcome::Confirmed), Recorded::Settled);
        assert_eq!(p.settled(), 1);
        assert!(p.into_results()[0].is_ok());
    }

    #[test]
    fn at_the_deadline_only_unsettled_tasks_fail() {
        let mut p = pass(3);
        p.record(0, PublishOutcome::Confirmed);
        p.record(1, lost());
        let err = PublishError::new(PublishErrorKind::Unavailable, "deadline");
        p.fail_unsettled(&err);
        let queued = p.finish();
        assert_eq!(queued.len(), 1);
        let results = p.into_results();
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().kind(),
            &PublishErrorKind::Unavailable
        );
        assert_eq!(
            results[2].as_ref().unwrap_err().kind(),
            &PublishErrorKind::Unavailable
        );
    }

    #[test]
    fn a_refused_task_is_never_queued() {
        let mut p = pass(2);
        p.refuse(0, PublishError::new(PublishErrorKind::InvalidTask, "bad"));
        p.record(1, PublishOutcome::Confirmed);
        let queued = p.finish();
        assert_eq!(queued.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1]);
        let results = p.into_results();
        assert_eq!(
            results[0].as_ref().unwrap_err().kind(),
            &PublishErrorKind::InvalidTask
        );
        assert!(results[1].is_ok());
    }

    #[test]
    fn an_unconfirmed_queued_receipt_fails_its_task_as_retryable() {
        let mut p = pass(1);
        p.record(0, PublishOutcome::Confirmed);
        p.finish();
        p.queued_receipt_unconfirmed(0);
        let err = p.into_results().pop().unwrap().unwrap_err();
        assert_eq!(err.kind(), &PublishErrorKind::ReceiptNotConfirmed);
        assert!(err.is_transient());
    }
}
