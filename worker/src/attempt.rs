//! One delivery, from lease to settlement.
//!
//! Order matters and is the contract: decode, emit `accepted` (parent: the
//! queued or retry receipt), execute, emit the final receipt, and ack only
//! after the broker confirmed it. Retries and dead letters are published (and
//! confirmed) before the receipts that announce them, and both before the ack.
//!
//! What to do is decided in `decision`, without I/O; the one run-time limit
//! of the attempt and its timer are in `time_limit`. This file carries both
//! out against the broker.

mod decision;
pub(crate) mod time_limit;

use crate::cancel::{CancelBook, Started};
use crate::config::CapabilityConfig;
use crate::executor::{ExecError, Executor, Outcome, TaskContext};
use crate::lease::{LeaseBook, Settle};
use broker_link::{BrokerLink, LinkError, Outgoing, PublishOutcome, ReceiptPublisher};
use broker_topology::envelope::{self, H_LAST_ERROR, ParsedEnvelope};
use broker_topology::{Receipt, ReceiptType, TaskEnvelope, Topology, codec, names};
use decision::{Destination, Facts, Refusal, Settlement, TaskCopy};
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A capability this worker serves, with its executor.
pub(crate) struct Served {
    pub(crate) config: CapabilityConfig,
    pub(crate) executor: Arc<dyn Executor>,
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
    let span = tracing::info_span!(
        "task",
        task_id = %env.task_id,
        task_type = %env.task_type,
        attempt = env.attempt,
        delivery = env.delivery_count + 1,
    );
    async move {
        let tag = delivery.delivery_tag;
        let accepted = Receipt::new(
            &env.task_id,
            &env.task_type,
            ReceiptType::Accepted,
            env.parent_receipt_id.iter().cloned().collect(),
            env.attempt,
        )
        .with_worker(&shared.worker_id)
        .with_body(json!({
            "delivery": env.delivery_count + 1,
            "redelivered": env.redelivered,
            "task_id_assigned": env.task_id_assigned,
            "traceparent": env.traceparent,
        }));
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

        let outcome = execute(&shared, &served, &env, problem, &delivery.data).await;
        drop(slot);
        let settle = finish(&shared, &served, &env, &accepted, &delivery, outcome).await;
        if let Some(how) = settle {
            leases.settle(tag, how);
        }
    }
    .instrument(span)
    .await
}

async fn execute(
    shared: &Shared,
    served: &Served,
    env: &TaskEnvelope,
    problem: Option<broker_topology::Error>,
    body: &[u8],
) -> Result<Outcome, ExecError> {
    decision::preflight(
        env,
        problem,
        shared.cancels.cancelled(&env.task_id),
        served.config.delivery_limit,
    )?;
    let payload = codec::decode_payload(body, env.content_type).map_err(Refusal::Payload)?;
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
    };
    if shared.shutdown.is_shutdown() {
        // Stopping: a task not yet started goes back to its queue.
        return Err(Refusal::ShuttingDown.into());
    }
    let Started {
        cancellation,
        canceller,
        running: _running,
    } = shared.cancels.start(&env.task_id).map_err(Refusal::from)?;
    let run = served.executor.execute(&ctx, payload, cancellation);
    time_limit::enforce(limit, &canceller, run).await
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
    let plan = decision::plan(&facts, outcome);
    let error = plan.error.as_ref().map(tracing::field::display);
    if let Some(copy) = &plan.copy {
        let last_error = copy.last_error.as_deref();
        let props = republish_properties(&delivery.properties, &copy.envelope, last_error);
        let published = match copy.to {
            Destination::Delay { delay_ms } => {
                publish_delayed(shared, &env.task_type, delay_ms, &delivery.data, props).await
            }
            Destination::DeadLetter => {
                publish_dead_letter(shared, &env.task_type, &delivery.data, props).await
            }
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, destination = ?copy.to, "could not publish the task's copy; returning the task to its queue");
            return Some(Settle::Requeue);
        }
    }
    match plan.settle {
        Settlement::Requeue => {
            tracing::warn!(
                outcome = plan.outcome,
                "task interrupted by shutdown; returning it to the queue"
            );
            Some(Settle::Requeue)
        }
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
            confirm(shared, plan.receipts).await
        }
    }
}

async fn confirm(shared: &Shared, receipts: Vec<Receipt>) -> Option<Settle> {
    match shared.receipts.submit(receipts).await.await {
        Ok(()) => Some(Settle::Ack),
        Err(e) => {
            tracing::warn!(error = %e, "final receipt not confirmed; leaving the lease for redelivery");
            None
        }
    }
}

/// Headers the broker adds; a republished copy must not carry them.
const BROKER_HEADERS: [&str; 5] = [
    envelope::H_DELIVERY_COUNT,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
];

/// The original properties (content type, correlation id, reply-to, ...)
/// with the envelope's identity and chit headers on top, so what a foreign
/// publisher set survives a retry or a dead letter.
fn republish_properties(
    original: &BasicProperties,
    env: &TaskEnvelope,
    last_error: Option<&str>,
) -> BasicProperties {
    let fresh = env.to_properties();
    let mut headers = FieldTable::default();
    if let Some(orig) = original.headers() {
        for (k, v) in orig.inner() {
            if !BROKER_HEADERS.contains(&k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(chit) = fresh.headers() {
        for (k, v) in chit.inner() {
            headers.insert(k.clone(), v.clone());
        }
    }
    if let Some(e) = last_error {
        let e: String = e.chars().take(1000).collect();
        headers.insert(
            H_LAST_ERROR.into(),
            AMQPValue::LongString(LongString::from(e.as_str())),
        );
    }
    let mut props = original
        .clone()
        .with_message_id(env.task_id.as_str().into())
        .with_delivery_mode(2)
        .with_headers(headers);
    if original.kind().is_none() {
        props = props.with_type(env.task_type.as_str().into());
    }
    if original.timestamp().is_none()
        && let Some(ts) = fresh.timestamp()
    {
        props = props.with_timestamp(*ts);
    }
    props
}

async fn publish_delayed(
    shared: &Shared,
    capability: &str,
    delay_ms: u64,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), CopyError> {
    let session = shared.link.session().await?;
    let decl = Topology::delay_queue(capability, delay_ms);
    // Declared before every publish: a redeclare restarts the queue's
    // x-expires clock, and x-expires is longer than the delay, so the queue
    // cannot expire while this message waits in it. Retries are rare enough
    // for the extra round trip.
    let t = Topology {
        queues: vec![decl.clone()],
        ..Topology::default()
    };
    broker_link::declare::apply(&session.connection, &t).await?;
    publish_copy(shared, "", &decl.name, body, props).await
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
    )
    .await
}

/// Publishes a retry or dead-letter copy through the link and waits for the
/// broker to take it. Mandatory: a copy with no queue to go to is an error,
/// and the task goes back to its queue instead.
async fn publish_copy(
    shared: &Shared,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), CopyError> {
    let message = Outgoing {
        exchange,
        routing_key,
        body,
        properties,
        mandatory: true,
    };
    match shared.link.publish_confirmed(&message, None).await {
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
