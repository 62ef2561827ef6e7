//! One delivery, from lease to settlement.
//!
//! Order matters and is the contract: decode, emit `accepted` (parent: the
//! queued or retry receipt), execute, emit the final receipt, and ack only
//! after the broker confirmed it. Retries and dead letters are published (and
//! confirmed) before the receipts that announce them, and both before the ack.
//!
//! A task that names a `reply_to` queue gets the receipt that ended it
//! there, once that receipt is confirmed ([`send_reply`]); every copy keeps
//! `reply_to`, so a retried task answers once, at its end.
//!
//! A delivery the worker's shutdown catches before it starts is handed back
//! ([`hand_back`]): a copy of the same message goes to the task queue and the
//! original is acked once the copy is confirmed, so a drain does not raise
//! the message's `x-delivery-count` (RabbitMQ 3.10 counts every return) and
//! never spends its poison budget.
//!
//! What to do is decided in `decision`, without I/O; the one run-time limit
//! of the attempt and its timer are in `time_limit`; the properties of every
//! copy are made in `copy`; its `process` and `execute` spans and the trace
//! context of its receipts in `spans`. This file carries them out against
//! the broker.

mod copy;
mod decision;
mod spans;
pub(crate) mod time_limit;

use crate::cancel::{CancelBook, Started};
use crate::config::CapabilityConfig;
use crate::executor::{ExecError, Executor, Outcome, TaskContext};
use crate::lease::{LeaseBook, Settle};
use crate::metrics::{Tally, TaskMetrics};
use broker_link::trace_context;
use broker_link::{BrokerLink, LinkError, Outgoing, PublishOutcome, ReceiptPublisher};
use broker_topology::envelope::{H_CARRIED_DELIVERIES, H_DRAIN_RETURNS, ParsedEnvelope};
use broker_topology::{Receipt, ReceiptType, TaskEnvelope, Topology, codec, names};
use decision::{Destination, Facts, Refusal, Settlement, TaskCopy};
use lapin::BasicProperties;
use lapin::message::Delivery;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How long a hand-back waits for the broker to confirm its copy before the
/// delivery is returned with `basic.nack` instead.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

/// A capability this worker serves, with its executor.
pub(crate) struct Served {
    pub(crate) config: CapabilityConfig,
    pub(crate) executor: Arc<dyn Executor>,
    /// The capability's series, looked up once.
    pub(crate) metrics: TaskMetrics,
}

/// What every task of a worker shares.
pub(crate) struct Shared {
    pub(crate) worker_id: String,
    pub(crate) link: Arc<BrokerLink>,
    pub(crate) receipts: ReceiptPublisher,
    pub(crate) cancels: CancelBook,
    pub(crate) shutdown: crate::shutdown::Shutdown,
}

/// Runs one delivery to its end. `leases` is the book of the channel it came on.
///
/// `slot` is the concurrency permit: it is given back as soon as the executor
/// is done, so waiting for the final receipt's confirm does not hold a slot
/// (the lease itself stays open until the ack, bounded by the prefetch).
pub(crate) async fn run<S: Send>(
    shared: Arc<Shared>,
    served: Arc<Served>,
    delivery: Delivery,
    leases: LeaseBook,
    slot: S,
) {
    let ParsedEnvelope {
        envelope: mut env,
        problem,
    } = TaskEnvelope::from_delivery(
        &delivery.properties,
        delivery.routing_key.as_str(),
        delivery.redelivered,
    );
    // The queue decides the capability, whatever `type` a foreign client set.
    env.task_type = served.config.name.clone();
    // Returns counted toward the delivery limit before a drain handed the
    // message back as a fresh copy still count.
    let carried = copy::counter(&delivery.properties, H_CARRIED_DELIVERIES);
    env.delivery_count = env
        .delivery_count
        .saturating_add(carried.min(u32::MAX as u64) as u32);
    if shared.shutdown.is_shutdown() {
        // Stopping before it started: no receipt, and back to the queue.
        if let Some(how) = hand_back(&shared, &served.config.name, &delivery, None).await {
            leases.settle(delivery.delivery_tag, how);
        }
        return;
    }
    let process = spans::process_span(&env, &shared.worker_id, &delivery);
    let trace = spans::TaskTrace::start(&env, &process);
    let span = tracing::info_span!(
        "task",
        task_id = %env.task_id,
        task_type = %env.task_type,
        attempt = env.attempt,
        delivery = env.delivery_count + 1,
        trace_id = %trace.context.trace_id,
    );
    async move {
        let _in_flight = served.metrics.started(crate::metrics::queue_wait(&env));
        let tag = delivery.delivery_tag;
        let mut body = json!({
            "delivery": env.delivery_count + 1,
            "redelivered": env.redelivered,
            "task_id_assigned": env.task_id_assigned,
            "traceparent": env.traceparent,
        });
        let drain_returns = copy::counter(&delivery.properties, H_DRAIN_RETURNS);
        if drain_returns > 0 {
            body["drain_returns"] = json!(drain_returns);
        }
        let accepted = Receipt::new(
            &env.task_id,
            &env.task_type,
            ReceiptType::Accepted,
            env.parent_receipt_id.iter().cloned().collect(),
            env.attempt,
        )
        .with_worker(&shared.worker_id)
        .with_body(body)
        .with_trace(trace.context, trace.own_span);
        if env.redelivered || env.delivery_count > 0 {
            // A redelivery may be a task that kills its worker: make sure its
            // accepted receipt is on the broker before it runs again.
            let _ = shared.receipts.submit(vec![accepted.clone()]).await.await;
        } else {
            // First deliveries don't wait: accepted usually shares a batch with
            // the final receipt, which is what keeps a task near one message.
            shared.receipts.emit(accepted.clone()).await;
        }
        tracing::debug!("accepted");

        let executed = execute(&shared, &served, &env, problem, &delivery.data, &trace).await;
        let Some(outcome) = executed else {
            // The worker began to stop while this delivery was accepted but
            // not yet started: hand it back unrun, under the id `accepted` gave.
            drop(slot);
            let id = Some(env.task_id.as_str());
            if let Some(how) = hand_back(&shared, &served.config.name, &delivery, id).await {
                leases.settle(tag, how);
            }
            return;
        };
        drop(slot);
        let settle = finish(&shared, &served, &env, &accepted, &delivery, outcome).await;
        if let Some(how) = settle {
            leases.settle(tag, how);
        }
    }
    .instrument(process)
    .instrument(span)
    .await
}

/// Checks, decodes and runs the task. `None` when the worker began to stop
/// before the task started: it is to be handed back.
async fn execute(
    shared: &Shared,
    served: &Served,
    env: &TaskEnvelope,
    problem: Option<broker_topology::Error>,
    body: &[u8],
    trace: &spans::TaskTrace,
) -> Option<Result<Outcome, ExecError>> {
    let ready = prepare(shared, served, env, problem, body);
    let (mut ctx, payload, limit) = match ready {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    if shared.shutdown.is_shutdown() {
        return None;
    }
    let Started {
        cancellation,
        canceller,
        running: _running,
    } = match shared.cancels.start(&env.task_id) {
        Ok(s) => s,
        Err(how) => return Some(Err(Refusal::from(how).into())),
    };
    let span = spans::execute_span(env, served.executor.name());
    if let Some(own) = trace.for_children(&span) {
        ctx.traceparent = Some(own);
    }
    let run = served.executor.execute(&ctx, payload, cancellation);
    let began = Instant::now();
    let result = time_limit::enforce(limit, &canceller, run)
        .instrument(span.clone())
        .await;
    if let Err(e) = &result
        && trace_context::enabled()
    {
        trace_context::set_error(&span, &e.to_string());
    }
    drop(span);
    served.metrics.executed(began.elapsed());
    Some(result)
}

/// Everything before the executor runs: the preflight checks, the payload
/// decoded and validated (against the capability's own schema, then by the
/// executor), the run-time limit.
fn prepare(
    shared: &Shared,
    served: &Served,
    env: &TaskEnvelope,
    problem: Option<broker_topology::Error>,
    body: &[u8],
) -> Result<(TaskContext, serde_json::Value, Option<Duration>), ExecError> {
    decision::preflight(
        env,
        problem,
        shared.cancels.cancelled(&env.task_id),
        served.config.delivery_limit,
    )?;
    let payload = codec::decode_payload(body, env.content_type).map_err(Refusal::Payload)?;
    decision::check_schema(served.config.schema.as_deref(), &payload)?;
    served.executor.validate(&payload)?;
    let limit = time_limit::effective(
        env.timeout_ms.map(Duration::from_millis),
        served.config.timeout,
        served.executor.time_limit(&payload),
    );
    let ctx = TaskContext {
        task_id: env.task_id.clone(),
        task_type: env.task_type.clone(),
        attempt: env.attempt,
        worker_id: shared.worker_id.clone(),
        timeout: limit,
        traceparent: env.traceparent.clone(),
        polls: env.polls,
        previous_output: env.progress_output.clone(),
    };
    Ok((ctx, payload, limit))
}

/// Hands a delivery that did not start back to its capability's queue
/// without spending its delivery budget: publishes a copy of the same
/// message (see `copy::hand_back_properties`) and, once the broker confirmed
/// it, says to ack the original. A crash between the two leaves both in the
/// queue: a visible duplicate, never a loss. If the copy cannot be published
/// in time the delivery is returned with `basic.nack`, which the broker
/// counts; `None` when its channel is gone and the broker has it back
/// already. No receipt: nothing happened to the task, and the next
/// `accepted` says `drain_returns`. `task_id` is given once an `accepted`
/// receipt named the task, so a message without `message_id` keeps that id.
pub(crate) async fn hand_back(
    shared: &Shared,
    capability: &str,
    delivery: &Delivery,
    task_id: Option<&str>,
) -> Option<Settle> {
    if !delivery.acker.usable() {
        return None;
    }
    let mut props = copy::hand_back_properties(&delivery.properties);
    let task_id = match (delivery.properties.message_id(), task_id) {
        (Some(id), _) if !id.as_str().is_empty() => id.as_str().to_owned(),
        (_, Some(id)) => {
            props = props.with_message_id(id.into());
            id.to_owned()
        }
        _ => String::new(),
    };
    let deadline = Some(Instant::now() + HAND_BACK_WAIT);
    let published = publish_copy(
        shared,
        &names::retry_exchange(capability),
        capability,
        &delivery.data,
        props,
        deadline,
    )
    .await;
    match published {
        Ok(()) => {
            tracing::info!(%task_id, task_type = capability, "stopping: task handed back to its queue unstarted");
            Some(Settle::Ack)
        }
        Err(e) => {
            tracing::warn!(%task_id, task_type = capability, error = %e, "stopping: could not hand the task back as a copy; returning it with a nack, which counts as a delivery");
            Some(Settle::Requeue)
        }
    }
}

/// Carries out the attempt's [`decision::plan`]: the copy (a retry or a dead
/// letter) confirmed, then the receipts confirmed; says how to settle the
/// lease, `None` leaving it unsettled for the broker to redeliver.
async fn finish(
    shared: &Shared,
    served: &Served,
    env: &TaskEnvelope,
    accepted: &Receipt,
    delivery: &Delivery,
    outcome: Result<Outcome, ExecError>,
) -> Option<Settle> {
    let facts = Facts {
        env,
        worker_id: &shared.worker_id,
        accepted_id: &accepted.receipt_id,
        policy: served.config.retry,
        lease_usable: delivery.acker.usable(),
        jitter: rand::random::<f64>(),
    };
    let mut plan = decision::plan(&facts, outcome);
    for r in &mut plan.receipts {
        (r.trace_id, r.span_id) = (accepted.trace_id, accepted.span_id);
    }
    spans::record_outcome(
        plan.outcome,
        plan.error.as_ref().map(|e| e as &dyn std::fmt::Display),
    );
    let error = plan.error.as_ref().map(tracing::field::display);
    if let Some(copy) = &plan.copy {
        let last_error = copy.last_error.as_deref();
        let props = copy::republish_properties(&delivery.properties, &copy.envelope, last_error);
        let published = match copy.to {
            Destination::Delay { delay_ms } => {
                publish_delayed(shared, &env.task_type, delay_ms, &delivery.data, props).await
            }
            Destination::DeadLetter => {
                publish_dead_letter(shared, &env.task_type, &delivery.data, props).await
            }
            Destination::TaskQueue => {
                let (exchange, key) = (names::retry_exchange(&env.task_type), &env.task_type);
                publish_copy(shared, &exchange, key, &delivery.data, props, None).await
            }
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, destination = ?copy.to, "could not publish the task's copy; returning the task to its queue");
            return Some(Settle::Requeue);
        }
    }
    match plan.settle {
        Settlement::Leave => {
            // The lease died with its channel: the broker redelivers the task,
            // so a copy now would split it into two.
            tracing::warn!(
                outcome = plan.outcome,
                error,
                "task failed after its channel closed; leaving it to be redelivered"
            );
            None
        }
        Settlement::AckWhenConfirmed => {
            match &plan.copy {
                Some(TaskCopy {
                    to: Destination::DeadLetter,
                    ..
                }) => {
                    tracing::warn!(outcome = plan.outcome, error, "task dead-lettered")
                }
                Some(TaskCopy {
                    to: Destination::TaskQueue,
                    ..
                }) => {
                    tracing::warn!(
                        outcome = plan.outcome,
                        error,
                        "task interrupted by shutdown; back in its queue as the next attempt"
                    )
                }
                Some(TaskCopy {
                    to: Destination::Delay { delay_ms },
                    envelope,
                    ..
                }) if plan.error.is_none() => {
                    tracing::info!(
                        outcome = plan.outcome,
                        delay_ms,
                        poll = envelope.polls,
                        "task in progress; it runs again after the delay"
                    )
                }
                Some(TaskCopy {
                    to: Destination::Delay { delay_ms },
                    ..
                }) => {
                    tracing::info!(
                        outcome = plan.outcome,
                        delay_ms,
                        error,
                        "task failed; retry scheduled"
                    )
                }
                None => tracing::info!(outcome = plan.outcome, error, "task finished"),
            }
            // Only a task that asked for it pays for a reply (a clone here,
            // one publish after the confirm).
            let reply = env
                .reply_to
                .as_deref()
                .and_then(|to| Some((to, decision::reply_receipt(&plan.receipts)?.clone())));
            let settle = confirm(shared, &served.metrics, plan.receipts).await;
            if settle.is_some()
                && let Some((reply_to, receipt)) = reply
            {
                // After the confirm: the reply never overtakes the receipt.
                let correlation_id = delivery.properties.correlation_id().as_ref();
                let correlation_id = correlation_id.map(|c| c.as_str());
                send_reply(&shared.link, reply_to, correlation_id, &receipt).await;
            }
            settle
        }
    }
}

/// How long a worker waits for the broker to take a reply before it acks
/// the task without it.
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// Sends `receipt`, confirmed already, to the task's `reply_to` queue.
/// Best effort: a reply queue is its client's, gone with its connection,
/// so a reply that cannot be sent is logged and the task is settled anyway
/// (its receipts say how it ended). Shared with the dead-letter watch.
pub(crate) async fn send_reply(
    link: &BrokerLink,
    reply_to: &str,
    correlation_id: Option<&str>,
    receipt: &Receipt,
) {
    let deadline = Instant::now() + REPLY_WAIT;
    let outcome = broker_link::send_reply(link, reply_to, correlation_id, receipt, deadline).await;
    match outcome {
        PublishOutcome::Confirmed => tracing::debug!(
            %reply_to,
            receipt_type = receipt.receipt_type.as_str(),
            "reply sent"
        ),
        other => tracing::warn!(
            %reply_to,
            receipt_type = receipt.receipt_type.as_str(),
            outcome = ?other,
            "reply not sent; the task's receipts still say how it ended"
        ),
    }
}

async fn confirm(shared: &Shared, metrics: &TaskMetrics, receipts: Vec<Receipt>) -> Option<Settle> {
    let tally = Tally::of(&receipts);
    match shared.receipts.submit(receipts).await.await {
        Ok(()) => {
            metrics.settled(tally);
            Some(Settle::Ack)
        }
        Err(e) => {
            tracing::warn!(error = %e, "final receipt not confirmed; leaving the lease for redelivery");
            None
        }
    }
}

async fn publish_delayed(
    shared: &Shared,
    capability: &str,
    delay_ms: u64,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), CopyError> {
    let session = shared.link.session().await?;
    // Declared before every publish: a redeclare restarts the queue's
    // x-expires clock, and x-expires is longer than the delay, so the queue
    // cannot expire while this message waits in it. Retries are rare enough
    // for the extra round trips.
    let route = Topology::delay_route(capability, delay_ms);
    broker_link::declare::apply(&session.connection, &route).await?;
    let queue = &route.queues[0].name;
    publish_copy(shared, &route.exchanges[0].name, queue, body, props, None).await
}

async fn publish_dead_letter(
    shared: &Shared,
    capability: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), CopyError> {
    publish_copy(
        shared,
        &names::dead_letter_exchange(capability),
        "",
        body,
        props,
        None,
    )
    .await
}

/// Publishes a copy of a task through the link and waits for the broker to
/// take it (until `deadline`, if any). Mandatory: a copy with no queue to go
/// to is an error, and the task goes back to its queue instead.
async fn publish_copy(
    shared: &Shared,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    deadline: Option<Instant>,
) -> Result<(), CopyError> {
    let message = Outgoing {
        exchange,
        routing_key,
        body,
        properties,
        mandatory: true,
    };
    let message_id = message.properties.message_id().as_ref().map(|m| m.as_str());
    let span = spans::copy_span(exchange, routing_key, message_id);
    let outcome = shared
        .link
        .publish_confirmed(&message, deadline)
        .instrument(span)
        .await;
    match outcome {
        PublishOutcome::Confirmed => Ok(()),
        PublishOutcome::Returned { reply_text, .. } => Err(CopyError::Returned {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            reply_text,
        }),
        PublishOutcome::Nacked => Err(CopyError::Nacked),
        PublishOutcome::Lost(e) => Err(CopyError::Link(e)),
    }
}

/// Why a retry or dead-letter copy is not on the broker.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    /// The broker could not be reached, or refused a declaration.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// No queue is bound where the copy was sent.
    #[error("no queue bound for {exchange:?}/{routing_key:?} ({reply_text})")]
    Returned {
        exchange: String,
        routing_key: String,
        reply_text: String,
    },
    /// Negative confirm.
    #[error("the broker refused the copy (negative confirm)")]
    Nacked,
}
