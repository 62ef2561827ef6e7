//! The attempt's decisions, made without I/O so they can be tested alone.
//!
//! [`preflight`] says whether a delivery may run at all, with a [`Refusal`]
//! by kind when not; [`check_schema`] whether its decoded payload fits the
//! capability's own schema. [`plan`] turns the execution's result into a
//! [`Plan`]: the copy to publish (a retry into a delay queue, a dead letter,
//! or an attempt the worker's shutdown interrupted, back to the task queue),
//! the receipts that announce the ending, and how to settle the lease. The
//! attempt carries a plan out in the order docs/protocol.md fixes: the copy
//! confirmed, then the receipts confirmed, then the ack. A run that is not
//! done yet is planned in `poll`.

mod poll;

use crate::cancel::Cancelled;
use crate::executor::{ExecError, ExecErrorKind, Outcome};
use broker_topology::retry::RetryPolicy;
use broker_topology::{PayloadSchema, Receipt, ReceiptType, TaskEnvelope, names};
use serde_json::{Value, json};
use thiserror::Error;

/// Why a delivery ends before its executor runs.
#[derive(Debug, Error)]
pub(crate) enum Refusal {
    /// Cancelled before it ran: a `cancelled` receipt, never retried.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// The delivery's properties do not make a task: dead-lettered.
    #[error("{0}")]
    Envelope(broker_topology::Error),
    /// Returned to the queue this often without finishing (each worker running
    /// it died or stopped): dead-lettered rather than run again.
    #[error(
        "poison message: delivered {deliveries} times without finishing (the worker running it \
         stopped each time); not running it again"
    )]
    Poison {
        /// This delivery's number, from 1.
        deliveries: u32,
    },
    /// The body cannot be decoded: dead-lettered.
    #[error("{0}")]
    Payload(broker_topology::Error),
    /// The payload breaks the capability's own schema: dead-lettered, with
    /// every violation at its JSON pointer.
    #[error("{0}")]
    Schema(broker_topology::Error),
}

impl From<Refusal> for ExecError {
    fn from(r: Refusal) -> ExecError {
        match r {
            Refusal::Cancelled(how) => ExecError::from_cancel(how.reason()),
            Refusal::Envelope(_) | Refusal::Payload(_) => ExecError::invalid(r.to_string()),
            Refusal::Poison { .. } => ExecError::new(ExecErrorKind::Permanent, r.to_string()),
            Refusal::Schema(e) => {
                let violations: Vec<Value> = match e.kind() {
                    broker_topology::ErrorKind::InvalidPayload(v) => v
                        .iter()
                        .map(|v| json!({"pointer": v.pointer, "message": v.message}))
                        .collect(),
                    _ => Vec::new(),
                };
                ExecError::invalid(e.to_string()).with_details(json!({"violations": violations}))
            }
        }
    }
}

/// The check of a decoded payload against the capability's own schema, if
/// it has one; the executor's `validate` comes after it.
pub(crate) fn check_schema(schema: Option<&PayloadSchema>, payload: &Value) -> Result<(), Refusal> {
    match schema {
        Some(schema) => schema.check(payload).map_err(Refusal::Schema),
        None => Ok(()),
    }
}

/// The checks before a delivery is decoded, in order: a cancelled task is
/// skipped whatever it holds; a broken envelope is not run; nor is a delivery
/// at the capability's delivery limit.
pub(crate) fn preflight(
    env: &TaskEnvelope,
    problem: Option<broker_topology::Error>,
    cancelled: Option<Cancelled>,
    delivery_limit: u32,
) -> Result<(), Refusal> {
    if let Some(how) = cancelled {
        return Err(how.into());
    }
    if let Some(p) = problem {
        return Err(Refusal::Envelope(p));
    }
    if env.delivery_count >= delivery_limit {
        return Err(Refusal::Poison {
            deliveries: env.delivery_count + 1,
        });
    }
    Ok(())
}

/// What the attempt knows when its execution is over.
pub(crate) struct Facts<'a> {
    pub(crate) env: &'a TaskEnvelope,
    pub(crate) worker_id: &'a str,
    /// The `accepted` receipt, parent of the final one.
    pub(crate) accepted_id: &'a str,
    /// The capability's policy, before the task's header overrides.
    pub(crate) policy: RetryPolicy,
    /// Whether the delivery's channel is still open.
    pub(crate) lease_usable: bool,
    /// Drawn from [0, 1) for the retry delay.
    pub(crate) jitter: f64,
}

/// How the end of an attempt is carried out.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The `outcome` field of the log line.
    pub(crate) outcome: &'static str,
    /// The failure being reported, if any.
    pub(crate) error: Option<ExecError>,
    /// Published and confirmed first. If it cannot be, the delivery goes
    /// back to its queue and nothing else happens.
    pub(crate) copy: Option<TaskCopy>,
    /// Then emitted, in this order and in one batch.
    pub(crate) receipts: Vec<Receipt>,
    /// Then this.
    pub(crate) settle: Settlement,
}

/// A copy of the task to publish before the receipts that announce it.
#[derive(Debug)]
pub(crate) struct TaskCopy {
    pub(crate) to: Destination,
    /// The copy's envelope: the next attempt for a retry, parented on the
    /// receipt that announces it.
    pub(crate) envelope: TaskEnvelope,
    /// For `x-chit-last-error` on a dead letter.
    pub(crate) last_error: Option<String>,
}

/// Where a copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    /// The capability's delay queue for `delay_ms`, which dead-letters it back.
    Delay { delay_ms: u64 },
    /// The capability's dead-letter exchange.
    DeadLetter,
    /// The capability's task queue, at once: an attempt the worker's
    /// shutdown interrupted runs again as the next one.
    TaskQueue,
}

/// What becomes of the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// Ack once the receipts are confirmed; left unsettled if they are not,
    /// so the broker redelivers.
    AckWhenConfirmed,
    /// Leave it: its channel died, the broker redelivers it, and a copy
    /// would split the task in two.
    Leave,
}

/// The receipt of a plan that a task's `reply_to` gets: the one that ends
/// the task (`success`, `cancelled`, or a `failure` not to be retried, with
/// its reason and the executor's details; its `dead_lettered` follows in
/// the chain). `None` when the task goes on: a retry, a poll, a shutdown's
/// interruption.
pub(crate) fn reply_receipt(receipts: &[Receipt]) -> Option<&Receipt> {
    receipts.iter().find(|r| r.ends_task())
}

/// Decides how an execution's result ends the attempt.
pub(crate) fn plan(f: &Facts<'_>, result: Result<Outcome, ExecError>) -> Plan {
    let env = f.env;
    let receipt = |t: ReceiptType, parents: Vec<String>| {
        Receipt::new(&env.task_id, &env.task_type, t, parents, env.attempt).with_worker(f.worker_id)
    };
    let parent = vec![f.accepted_id.to_owned()];
    let ending = |outcome, error, copy, receipts, settle| Plan {
        outcome,
        error,
        copy,
        receipts,
        settle,
    };
    let err = match result {
        Ok(mut o) => {
            if let Some(progress) = o.in_progress.take() {
                return poll::plan(f, o, progress);
            }
            let r = receipt(ReceiptType::Success, parent)
                .with_body(o.body)
                .with_artifacts(o.artifacts);
            return ending("success", None, None, vec![r], Settlement::AckWhenConfirmed);
        }
        Err(e) => e,
    };
    match err.kind {
        ExecErrorKind::Interrupted if f.lease_usable => {
            let (copy, receipts) = interrupted(f, env, &err, parent);
            return ending(
                "interrupted",
                Some(err),
                Some(copy),
                receipts,
                Settlement::AckWhenConfirmed,
            );
        }
        ExecErrorKind::Cancelled => {
            let r = receipt(ReceiptType::Cancelled, parent).with_body(json!({
                "reason": "cancelled",
                "error": err.message,
                "details": err.details,
            }));
            return ending(
                "cancelled",
                Some(err),
                None,
                vec![r],
                Settlement::AckWhenConfirmed,
            );
        }
        _ => {}
    }
    if !f.lease_usable {
        return ending("lease_lost", Some(err), None, vec![], Settlement::Leave);
    }
    let policy = effective_policy(&f.policy, env);
    let retry = err.is_retryable() && policy.allows_retry_after(env.attempt);
    let failure = receipt(ReceiptType::Failure, parent)
        .with_body(failure_body(&err, retry, env.attempt, policy.max_attempts))
        .with_artifacts(err.artifacts.clone());
    let (outcome, announce, copy) = if retry {
        let delay_ms = policy.delay_ms(env.attempt, f.jitter);
        let scheduled = receipt(
            ReceiptType::RetryScheduled,
            vec![failure.receipt_id.clone()],
        )
        .with_body(json!({
            "delay_ms": delay_ms,
            "next_attempt": env.attempt + 1,
            "error": err.message,
            "reason": err.kind.as_str(),
        }));
        let mut next = env.clone();
        next.attempt += 1;
        next.parent_receipt_id = Some(scheduled.receipt_id.clone());
        let copy = TaskCopy {
            to: Destination::Delay { delay_ms },
            envelope: next,
            last_error: None,
        };
        ("retry_scheduled", scheduled, copy)
    } else {
        let dead =
            receipt(ReceiptType::DeadLettered, vec![failure.receipt_id.clone()]).with_body(json!({
                "error": err.message,
                "reason": err.kind.as_str(),
                "queue": names::dead_letter_queue(&env.task_type),
                "attempts": env.attempt,
            }));
        let mut last = env.clone();
        last.parent_receipt_id = Some(dead.receipt_id.clone());
        let copy = TaskCopy {
            to: Destination::DeadLetter,
            envelope: last,
            last_error: Some(err.message.clone()),
        };
        ("dead_lettered", dead, copy)
    };
    ending(
        outcome,
        Some(err),
        Some(copy),
        vec![failure, announce],
        Settlement::AckWhenConfirmed,
    )
}

/// An attempt stopped by the worker's shutdown: `failure` (reason
/// `interrupted`) and `retry_scheduled` (no delay), and a copy straight back
/// to the task queue as the next attempt. Neither budget is spent: the copy
/// is a new message, so its `x-delivery-count` starts again, and it gets one
/// more attempt in `x-chit-max-attempts`, so a shutdown never makes a
/// task's last attempt and never dead-letters it.
fn interrupted(
    f: &Facts<'_>,
    env: &TaskEnvelope,
    err: &ExecError,
    parent: Vec<String>,
) -> (TaskCopy, Vec<Receipt>) {
    let receipt = |t: ReceiptType, parents: Vec<String>| {
        Receipt::new(&env.task_id, &env.task_type, t, parents, env.attempt).with_worker(f.worker_id)
    };
    let policy = effective_policy(&f.policy, env);
    let mut body = failure_body(err, true, env.attempt, policy.max_attempts);
    body["retryable"] = json!(true);
    let failure = receipt(ReceiptType::Failure, parent)
        .with_body(body)
        .with_artifacts(err.artifacts.clone());
    let scheduled = receipt(
        ReceiptType::RetryScheduled,
        vec![failure.receipt_id.clone()],
    )
    .with_body(json!({
        "delay_ms": 0,
        "next_attempt": env.attempt + 1,
        "error": err.message,
        "reason": err.kind.as_str(),
    }));
    let mut next = env.clone();
    next.attempt += 1;
    next.max_attempts = Some(policy.max_attempts.saturating_add(1));
    next.parent_receipt_id = Some(scheduled.receipt_id.clone());
    let copy = TaskCopy {
        to: Destination::TaskQueue,
        envelope: next,
        last_error: None,
    };
    (copy, vec![failure, scheduled])
}

fn failure_body(err: &ExecError, retry: bool, attempt: u32, max_attempts: u32) -> Value {
    let mut body = json!({
        "error": err.message,
        "reason": err.kind.as_str(),
        "retryable": err.is_retryable(),
        "will_retry": retry,
        "attempt": attempt,
        "max_attempts": max_attempts,
    });
    if let (Value::Object(b), Value::Object(d)) = (&mut body, &err.details) {
        for (k, v) in d {
            b.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    body
}

/// The capability's policy with the task's own header overrides.
fn effective_policy(base: &RetryPolicy, env: &TaskEnvelope) -> RetryPolicy {
    let mut p = *base;
    if let Some(m) = env.max_attempts {
        p.max_attempts = m;
    }
    if let Some(b) = env.backoff_ms {
        p.initial_backoff_ms = b;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::CancelReason;
    use broker_topology::Artifact;

    fn env(attempt: u32) -> TaskEnvelope {
        let mut e = TaskEnvelope::new("build");
        e.attempt = attempt;
        e.parent_receipt_id = Some("queued-1".into());
        e
    }

    fn facts(env: &TaskEnvelope) -> Facts<'_> {
        Facts {
            env,
            worker_id: "w1",
            accepted_id: "accepted-1",
            policy: RetryPolicy {
                max_attempts: 3,
                initial_backoff_ms: 1000,
                max_backoff_ms: 60_000,
            },
            lease_usable: true,
            jitter: 1.0,
        }
    }

    fn types(p: &Plan) -> Vec<ReceiptType> {
        p.receipts.iter().map(|r| r.receipt_type).collect()
    }

    fn failed(kind: ExecErrorKind) -> Result<Outcome, ExecError> {
        Err(ExecError::new(kind, "boom"))
    }

    #[test]
    fn success_is_one_receipt_under_accepted_then_the_ack() {
        let e = env(1);
        let artifact = Artifact {
            path: Some("/out.json".into()),
            ..Artifact::default()
        };
        let p = plan(
            &facts(&e),
            Ok(Outcome {
                body: json!({"exit_code": 0}),
                artifacts: vec![artifact.clone()],
                ..Outcome::default()
            }),
        );
        assert_eq!(types(&p), [ReceiptType::Success]);
        let r = &p.receipts[0];
        assert_eq!(r.parent_receipt_ids, ["accepted-1"]);
        assert_eq!(r.worker_id.as_deref(), Some("w1"));
        assert_eq!(r.body["exit_code"], 0);
        assert_eq!(r.artifacts, [artifact]);
        assert!(p.copy.is_none());
        assert_eq!(p.settle, Settlement::AckWhenConfirmed);
    }

    #[test]
    fn cancelled_is_a_cancelled_receipt_never_a_retry() {
        let e = env(1);
        let cancel = CancelReason::Cancelled { force: true };
        let p = plan(&facts(&e), Err(ExecError::from_cancel(cancel)));
        assert_eq!(types(&p), [ReceiptType::Cancelled]);
        assert_eq!(p.receipts[0].parent_receipt_ids, ["accepted-1"]);
        assert_eq!(p.receipts[0].body["reason"], "cancelled");
        assert_eq!(p.receipts[0].body["error"], "cancelled (forced)");
        assert!(p.copy.is_none());
        assert_eq!(p.settle, Settlement::AckWhenConfirmed);
    }

    #[test]
    fn an_attempt_interrupted_by_shutdown_runs_again_without_spending_a_budget() {
        // The last attempt: a failure now would be dead-lettered.
        let e = env(3);
        let p = plan(
            &facts(&e),
            Err(ExecError::from_cancel(CancelReason::Shutdown)),
        );
        assert_eq!(
            types(&p),
            [ReceiptType::Failure, ReceiptType::RetryScheduled]
        );
        let (failure, scheduled) = (&p.receipts[0], &p.receipts[1]);
        assert_eq!(failure.parent_receipt_ids, ["accepted-1"]);
        assert_eq!(failure.body["reason"], "interrupted");
        assert_eq!(failure.body["retryable"], true);
        assert_eq!(failure.body["will_retry"], true);
        assert_eq!(scheduled.body["delay_ms"], 0);
        assert_eq!(scheduled.body["next_attempt"], 4);
        let copy = p.copy.expect("a copy back to the task queue");
        assert_eq!(copy.to, Destination::TaskQueue);
        assert_eq!(copy.envelope.attempt, 4);
        assert_eq!(copy.envelope.max_attempts, Some(4), "one more attempt");
        assert_eq!(
            copy.envelope.parent_receipt_id.as_deref(),
            Some(scheduled.receipt_id.as_str())
        );
        assert_eq!(p.settle, Settlement::AckWhenConfirmed);
        // With its channel gone, the broker has it back already.
        let f = Facts {
            lease_usable: false,
            ..facts(&e)
        };
        let p = plan(&f, Err(ExecError::from_cancel(CancelReason::Shutdown)));
        assert!(p.copy.is_none() && p.receipts.is_empty());
        assert_eq!(p.settle, Settlement::Leave);
    }

    #[test]
    fn a_retryable_failure_with_attempts_left_is_delayed_then_announced() {
        let e = env(1);
        let p = plan(&facts(&e), failed(ExecErrorKind::Timeout));
        assert_eq!(
            types(&p),
            [ReceiptType::Failure, ReceiptType::RetryScheduled]
        );
        let (failure, scheduled) = (&p.receipts[0], &p.receipts[1]);
        assert_eq!(failure.parent_receipt_ids, ["accepted-1"]);
        assert_eq!(failure.body["reason"], "timeout");
        assert_eq!(failure.body["will_retry"], true);
        assert_eq!(scheduled.parent_receipt_ids, [failure.receipt_id.as_str()]);
        assert_eq!(scheduled.body["next_attempt"], 2);
        let copy = p.copy.expect("a delayed copy");
        let Destination::Delay { delay_ms } = copy.to else {
            panic!("a retry goes to a delay queue, not {:?}", copy.to)
        };
        assert_eq!(scheduled.body["delay_ms"], delay_ms);
        assert_eq!(copy.envelope.attempt, 2);
        assert_eq!(copy.envelope.task_id, e.task_id);
        assert_eq!(
            copy.envelope.parent_receipt_id.as_deref(),
            Some(scheduled.receipt_id.as_str())
        );
        assert_eq!(p.settle, Settlement::AckWhenConfirmed);
    }

    #[test]
    fn the_last_attempt_is_dead_lettered_with_its_error() {
        let e = env(3);
        let p = plan(&facts(&e), failed(ExecErrorKind::Failed));
        assert_eq!(types(&p), [ReceiptType::Failure, ReceiptType::DeadLettered]);
        let (failure, dead) = (&p.receipts[0], &p.receipts[1]);
        assert_eq!(failure.body["will_retry"], false);
        assert_eq!(failure.body["max_attempts"], 3);
        assert_eq!(dead.parent_receipt_ids, [failure.receipt_id.as_str()]);
        assert_eq!(dead.body["queue"], names::dead_letter_queue("build"));
        assert_eq!(dead.body["attempts"], 3);
        let copy = p.copy.expect("a dead-letter copy");
        assert_eq!(copy.to, Destination::DeadLetter);
        assert_eq!(copy.envelope.attempt, 3);
        assert_eq!(
            copy.envelope.parent_receipt_id.as_deref(),
            Some(dead.receipt_id.as_str())
        );
        assert_eq!(copy.last_error.as_deref(), Some("boom"));
        assert_eq!(p.settle, Settlement::AckWhenConfirmed);
    }

    #[test]
    fn the_tasks_own_max_attempts_overrides_the_capabilitys() {
        let mut e = env(3);
        e.max_attempts = Some(5);
        let p = plan(&facts(&e), failed(ExecErrorKind::Failed));
        assert_eq!(
            types(&p),
            [ReceiptType::Failure, ReceiptType::RetryScheduled]
        );
    }

    #[test]
    fn only_the_end_of_the_task_is_replied_and_a_dead_letter_replies_its_failure() {
        let reply = |e: &TaskEnvelope, result| {
            let p = plan(&facts(e), result);
            reply_receipt(&p.receipts).map(|r| (r.receipt_type, r.body["reason"].clone()))
        };
        let ok = Ok(Outcome::default());
        assert_eq!(
            reply(&env(1), ok),
            Some((ReceiptType::Success, Value::Null))
        );
        // A retry, an interrupted attempt: the task goes on, no reply.
        assert_eq!(reply(&env(1), failed(ExecErrorKind::Failed)), None);
        let shutdown = Err(ExecError::from_cancel(CancelReason::Shutdown));
        assert_eq!(reply(&env(3), shutdown), None);
        // The last attempt: its failure, with the reason, not the dead letter.
        assert_eq!(
            reply(&env(3), failed(ExecErrorKind::Failed)),
            Some((ReceiptType::Failure, json!("failed")))
        );
        let cancel = Err(ExecError::from_cancel(CancelReason::Cancelled {
            force: false,
        }));
        assert_eq!(
            reply(&env(1), cancel),
            Some((ReceiptType::Cancelled, json!("cancelled")))
        );
    }

    #[test]
    fn a_permanent_error_is_dead_lettered_at_once() {
        let e = env(1);
        for kind in [ExecErrorKind::Permanent, ExecErrorKind::InvalidPayload] {
            let p = plan(&facts(&e), failed(kind));
            assert_eq!(types(&p), [ReceiptType::Failure, ReceiptType::DeadLettered]);
            assert_eq!(p.receipts[0].body["retryable"], false);
            assert_eq!(p.copy.unwrap().to, Destination::DeadLetter);
        }
    }

    #[test]
    fn a_delivery_at_the_limit_is_poison_and_dead_lettered_unrun() {
        // Returned to the queue 5 times: with a limit of 5, not run a 6th time.
        let mut e = env(1);
        e.delivery_count = 5;
        assert!(preflight(&e, None, None, 6).is_ok());
        let refusal = preflight(&e, None, None, 5).unwrap_err();
        assert!(
            matches!(refusal, Refusal::Poison { deliveries: 6 }),
            "{refusal:?}"
        );
        let p = plan(&facts(&e), Err(refusal.into()));
        assert_eq!(types(&p), [ReceiptType::Failure, ReceiptType::DeadLettered]);
        assert_eq!(p.receipts[0].body["reason"], "permanent");
        let error = p.receipts[0].body["error"].as_str().unwrap();
        assert!(
            error.starts_with("poison message: delivered 6 times"),
            "{error}"
        );
        assert_eq!(p.copy.unwrap().to, Destination::DeadLetter);
    }

    #[test]
    fn a_cancel_outranks_every_other_refusal() {
        let mut e = env(1);
        e.delivery_count = 9;
        let problem = broker_topology::codec::decode_payload(b"", Default::default()).unwrap_err();
        let refusal = preflight(&e, Some(problem), Some(Cancelled::Graceful), 5).unwrap_err();
        assert!(matches!(refusal, Refusal::Cancelled(Cancelled::Graceful)));
        let p = plan(&facts(&e), Err(refusal.into()));
        assert_eq!(types(&p), [ReceiptType::Cancelled]);
    }

    #[test]
    fn a_payload_breaking_the_capabilitys_schema_fails_at_once_naming_the_pointer() {
        let schema = PayloadSchema::compile(
            "build",
            json!({"type": "object", "required": ["target"],
                   "properties": {"target": {"type": "string"}, "jobs": {"type": "integer"}}}),
        )
        .unwrap();
        assert!(check_schema(None, &json!("anything")).is_ok());
        assert!(check_schema(Some(&schema), &json!({"target": "all", "jobs": 2})).is_ok());
        let refusal =
            check_schema(Some(&schema), &json!({"target": "all", "jobs": "2"})).unwrap_err();
        // Even on an attempt that has others left, it is not retried.
        let e = env(1);
        let p = plan(&facts(&e), Err(refusal.into()));
        assert_eq!(types(&p), [ReceiptType::Failure, ReceiptType::DeadLettered]);
        let body = &p.receipts[0].body;
        assert_eq!(body["reason"], "invalid_payload");
        assert_eq!(body["retryable"], false);
        assert_eq!(body["violations"][0]["pointer"], "/jobs");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with("invalid build payload: /jobs: "),
            "{error}"
        );
        assert_eq!(p.copy.unwrap().to, Destination::DeadLetter);
    }

    #[test]
    fn a_dead_channel_leaves_the_lease_and_publishes_no_copy() {
        let e = env(1);
        for kind in [ExecErrorKind::Failed, ExecErrorKind::Permanent] {
            let f = Facts {
                lease_usable: false,
                ..facts(&e)
            };
            let p = plan(&f, failed(kind));
            assert!(p.copy.is_none() && p.receipts.is_empty());
            assert_eq!(p.settle, Settlement::Leave);
        }
    }
}
