//! A run that is not done yet: the task is polled again later.
//!
//! An executor that returns an [`Outcome`] with [`InProgress`] set says its
//! work goes on (a long job it started elsewhere, a wait on something). The
//! attempt then ends like a retry, without the failure: an `in_progress`
//! receipt (parent `accepted`) carrying the run's body, and a copy of the
//! task through a delay queue, in the same attempt, with `x-chit-polls` one
//! higher and the run's output in `x-chit-progress-output` for the next run.
//! A poll spends neither the attempt budget (the attempt number stays) nor
//! the delivery budget (the copy is a new message).
//!
//! Bounds: at most [`MAX_POLLS`] in-progress runs per task, the delay at most
//! [`MAX_POLL_DELAY`] ([`DEFAULT_POLL_DELAY`] when the run names none), and
//! the output at most [`MAX_PROGRESS_OUTPUT`] bytes as JSON, because it
//! travels in a message header and an AMQP header must fit in one frame
//! (128 KiB by default). A run past a bound is a failure that is not retried.

use super::{Destination, Facts, Plan, Settlement, TaskCopy};
use crate::executor::{ExecError, ExecErrorKind, InProgress, Outcome};
use broker_topology::retry::quantize;
use broker_topology::{Receipt, ReceiptType};
use serde_json::{Value, json};
use std::time::Duration;

/// In-progress runs a task may have; one more is a failure.
pub(crate) const MAX_POLLS: u32 = 1000;
/// The wait before the next run when the run names none.
pub(crate) const DEFAULT_POLL_DELAY: Duration = Duration::from_secs(10);
/// The longest wait before the next run; a longer one is cut to this.
pub(crate) const MAX_POLL_DELAY: Duration = Duration::from_secs(3600);
/// The largest output, as JSON text, handed on to the next run.
pub(crate) const MAX_PROGRESS_OUTPUT: usize = 64 * 1024;

/// Plans a run that said it is not done: see the module docs.
pub(super) fn plan(f: &Facts<'_>, outcome: Outcome, progress: InProgress) -> Plan {
    let env = f.env;
    let poll = env.polls.saturating_add(1);
    let output_len = progress.output.to_string().len();
    let refusal = if poll > MAX_POLLS {
        Some(format!(
            "still in progress after {MAX_POLLS} polls, the most a task may have"
        ))
    } else if output_len > MAX_PROGRESS_OUTPUT {
        Some(format!(
            "in-progress output is {output_len} bytes as JSON; at most {MAX_PROGRESS_OUTPUT} \
             can be handed to the next run"
        ))
    } else {
        None
    };
    if let Some(message) = refusal {
        let mut err = ExecError::new(ExecErrorKind::Permanent, message).with_details(outcome.body);
        err.artifacts = outcome.artifacts;
        return super::plan(f, Err(err));
    }
    if !f.lease_usable {
        // As for a failure: the broker has the task back already.
        return Plan {
            outcome: "lease_lost",
            error: None,
            copy: None,
            receipts: vec![],
            settle: Settlement::Leave,
        };
    }
    let delay_ms = delay_ms(progress.after);
    let mut body = match outcome.body {
        Value::Object(map) => map,
        Value::Null => Default::default(),
        other => [("result".to_owned(), other)].into_iter().collect(),
    };
    body.insert("poll".into(), json!(poll));
    body.insert("delay_ms".into(), json!(delay_ms));
    let receipt = Receipt::new(
        &env.task_id,
        &env.task_type,
        ReceiptType::InProgress,
        vec![f.accepted_id.to_owned()],
        env.attempt,
    )
    .with_worker(f.worker_id)
    .with_body(Value::Object(body))
    .with_artifacts(outcome.artifacts);
    let mut next = env.clone();
    next.polls = poll;
    next.progress_output = Some(progress.output);
    next.parent_receipt_id = Some(receipt.receipt_id.clone());
    Plan {
        outcome: "in_progress",
        error: None,
        copy: Some(TaskCopy {
            to: Destination::Delay { delay_ms },
            envelope: next,
            last_error: None,
        }),
        receipts: vec![receipt],
        settle: Settlement::AckWhenConfirmed,
    }
}

/// The wait before the next run, on the delay queues' grid; at least 1 ms.
fn delay_ms(after: Option<Duration>) -> u64 {
    let wanted = after.unwrap_or(DEFAULT_POLL_DELAY).min(MAX_POLL_DELAY);
    quantize(wanted.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_topology::TaskEnvelope;
    use broker_topology::retry::RetryPolicy;

    fn facts(env: &TaskEnvelope) -> Facts<'_> {
        Facts {
            env,
            worker_id: "w1",
            accepted_id: "accepted-1",
            policy: RetryPolicy::default(),
            lease_usable: true,
            jitter: 1.0,
        }
    }

    fn running(after: Option<Duration>, output: Value) -> Outcome {
        Outcome {
            body: json!({"output": output, "logs": ["working"]}),
            in_progress: Some(InProgress { after, output }),
            ..Outcome::default()
        }
    }

    #[test]
    fn a_poll_is_an_in_progress_receipt_and_a_delayed_copy_in_the_same_attempt() {
        let mut env = TaskEnvelope::new("build");
        env.attempt = 2;
        env.polls = 1;
        env.parent_receipt_id = Some("in-progress-1".into());
        let out = json!({"done": 2});
        let p = super::super::plan(
            &facts(&env),
            Ok(running(Some(Duration::from_millis(300)), out.clone())),
        );
        assert_eq!(p.outcome, "in_progress");
        assert_eq!(p.receipts.len(), 1);
        let r = &p.receipts[0];
        assert_eq!(r.receipt_type, ReceiptType::InProgress);
        assert_eq!(r.parent_receipt_ids, ["accepted-1"]);
        assert_eq!(r.attempt, 2);
        assert_eq!(r.body["output"], out);
        assert_eq!(r.body["logs"], json!(["working"]));
        assert_eq!(r.body["poll"], 2);
        assert_eq!(r.body["delay_ms"], 256, "300 ms rounded down to the grid");
        let copy = p.copy.expect("a delayed copy");
        assert_eq!(copy.to, Destination::Delay { delay_ms: 256 });
        assert_eq!(copy.envelope.attempt, 2, "a poll is not another attempt");
        assert_eq!(copy.envelope.polls, 2);
        assert_eq!(copy.envelope.progress_output, Some(out));
        assert_eq!(
            copy.envelope.parent_receipt_id.as_deref(),
            Some(r.receipt_id.as_str())
        );
        assert_eq!(p.settle, Settlement::AckWhenConfirmed);
        assert!(
            super::super::reply_receipt(&p.receipts).is_none(),
            "not the end"
        );
    }

    #[test]
    fn the_delay_has_a_default_a_ceiling_and_a_floor() {
        assert_eq!(delay_ms(None), quantize(10_000));
        assert_eq!(
            delay_ms(Some(Duration::from_secs(86_400))),
            quantize(3_600_000)
        );
        assert_eq!(delay_ms(Some(Duration::ZERO)), 1);
    }

    #[test]
    fn past_the_most_polls_or_too_much_output_it_fails_for_good() {
        let mut env = TaskEnvelope::new("build");
        env.polls = MAX_POLLS;
        let p = super::super::plan(&facts(&env), Ok(running(None, json!(1))));
        assert_eq!(p.receipts[0].receipt_type, ReceiptType::Failure);
        assert_eq!(p.receipts[0].body["reason"], "permanent");
        assert_eq!(p.receipts[0].body["output"], 1, "the run's body is kept");
        let error = p.receipts[0].body["error"].as_str().unwrap();
        assert!(error.contains("1000 polls"), "{error}");
        assert_eq!(p.receipts[1].receipt_type, ReceiptType::DeadLettered);

        let env = TaskEnvelope::new("build");
        let big = json!("x".repeat(MAX_PROGRESS_OUTPUT));
        let p = super::super::plan(&facts(&env), Ok(running(None, big)));
        let error = p.receipts[0].body["error"].as_str().unwrap();
        assert!(error.contains("in-progress output is"), "{error}");
        assert_eq!(p.copy.unwrap().to, Destination::DeadLetter);
    }
}
