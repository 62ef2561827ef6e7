//! One delivery, from lease to settlement.
//!
//! Order matters and is the contract: decode, emit `accepted` (parent: the
//! queued or retry receipt), execute, emit the final receipt, and ack only
//! after the broker confirmed it. Retries and dead letters are published (and
//! confirmed) before the receipts that announce them, and both before the ack.

use crate::cancel::CancelBook;
use crate::config::CapabilityConfig;
use crate::executor::{CancelReason, ExecError, ExecErrorKind, Executor, Outcome, TaskContext};
use crate::lease::{LeaseBook, Settle};
use broker_topology::envelope::{self, H_LAST_ERROR, ParsedEnvelope};
use broker_topology::retry::RetryPolicy;
use broker_topology::{BrokerLink, Receipt, ReceiptType, TaskEnvelope, Topology, codec, names};
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation};
use producer::ReceiptPublisher;
use serde_json::{Value, json};
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
    // A cancelled task is skipped whatever its payload holds.
    if let Some(force) = shared.cancels.cancelled(&env.task_id) {
        return Err(ExecError::from_cancel(CancelReason::Cancelled { force }));
    }
    if let Some(p) = problem {
        return Err(ExecError::invalid(p.to_string()));
    }
    if env.delivery_count >= served.config.delivery_limit {
        return Err(ExecError::new(
            ExecErrorKind::Permanent,
            format!(
                "poison message: delivered {} times without finishing (the worker running it \
                 stopped each time); not running it again",
                env.delivery_count + 1
            ),
        ));
    }
    let payload = codec::decode_payload(body, env.content_type)
        .map_err(|e| ExecError::invalid(e.to_string()))?;
    served.executor.validate(&payload)?;
    let timeout = env
        .timeout_ms
        .map(Duration::from_millis)
        .or(served.config.timeout);
    let ctx = TaskContext {
        task_id: env.task_id.clone(),
        task_type: env.task_type.clone(),
        attempt: env.attempt,
        worker_id: shared.worker_id.clone(),
        timeout,
        traceparent: env.traceparent.clone(),
    };
    if shared.shutdown.is_shutdown() {
        // Stopping: a task not yet started goes back to its queue.
        return Err(ExecError::from_cancel(CancelReason::Shutdown));
    }
    let (cancellation, _running, canceller) = shared
        .cancels
        .start(&env.task_id)
        .map_err(|force| ExecError::from_cancel(CancelReason::Cancelled { force }))?;
    let run = served.executor.execute(&ctx, payload, cancellation);
    tokio::pin!(run);
    match timeout {
        None => run.await,
        Some(limit) => tokio::select! {
            r = &mut run => r,
            _ = tokio::time::sleep(limit) => {
                canceller.cancel(CancelReason::Timeout);
                match run.await {
                    // The executor may have finished its last step meanwhile; a
                    // success after the limit is still a timeout to the user.
                    Ok(_) => Err(ExecError::from_cancel(CancelReason::Timeout)),
                    Err(e) => Err(e),
                }
            }
        },
    }
}

/// Emits the final receipts (and any retry or dead-letter copy) and says how
/// to settle the lease; `None` leaves it unsettled for the broker to redeliver.
async fn finish(
    shared: &Shared,
    served: &Served,
    env: &TaskEnvelope,
    accepted: &Receipt,
    delivery: &Delivery,
    outcome: Result<Outcome, ExecError>,
) -> Option<Settle> {
    let parent = vec![accepted.receipt_id.clone()];
    let receipt = |t: ReceiptType, parents: Vec<String>| {
        Receipt::new(&env.task_id, &env.task_type, t, parents, env.attempt)
            .with_worker(&shared.worker_id)
    };
    let err = match outcome {
        Ok(o) => {
            tracing::info!(outcome = "success", "task finished");
            let r = receipt(ReceiptType::Success, parent)
                .with_body(o.body)
                .with_artifacts(o.artifacts);
            return confirm(shared, vec![r]).await;
        }
        Err(e) => e,
    };
    match err.kind {
        ExecErrorKind::Interrupted => {
            tracing::warn!("task interrupted by shutdown; returning it to the queue");
            return Some(Settle::Requeue);
        }
        ExecErrorKind::Cancelled => {
            tracing::info!(outcome = "cancelled", "task cancelled");
            let r = receipt(ReceiptType::Cancelled, parent).with_body(json!({
                "reason": "cancelled",
                "error": err.message,
                "details": err.details,
            }));
            return confirm(shared, vec![r]).await;
        }
        _ => {}
    }
    let policy = effective_policy(&served.config.retry, env);
    let retry = err.is_retryable() && policy.allows_retry_after(env.attempt);
    let failure = receipt(ReceiptType::Failure, parent)
        .with_body(failure_body(&err, retry, env.attempt, policy.max_attempts))
        .with_artifacts(err.artifacts.clone());
    if retry {
        let delay_ms = policy.delay_ms(env.attempt, rand::random::<f64>());
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
        if !delivery.acker.usable() {
            // The lease died with its channel: the broker redelivers the task,
            // so a retry copy now would split it into two.
            return None;
        }
        let props = republish_properties(&delivery.properties, &next, None);
        if let Err(e) =
            publish_delayed(shared, &env.task_type, delay_ms, &delivery.data, props).await
        {
            tracing::warn!(error = %e, "could not schedule the retry; returning the task to its queue");
            return Some(Settle::Requeue);
        }
        tracing::info!(outcome = "retry_scheduled", delay_ms, error = %err, "task failed; retry scheduled");
        confirm(shared, vec![failure, scheduled]).await
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
        if !delivery.acker.usable() {
            return None;
        }
        let props = republish_properties(&delivery.properties, &last, Some(&err.message));
        if let Err(e) = publish_dead_letter(shared, &env.task_type, &delivery.data, props).await {
            tracing::warn!(error = %e, "could not dead-letter the task; returning it to its queue");
            return Some(Settle::Requeue);
        }
        tracing::warn!(outcome = "dead_lettered", error = %err, "task dead-lettered");
        confirm(shared, vec![failure, dead]).await
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
    if original.timestamp().is_none() {
        if let Some(ts) = fresh.timestamp() {
            props = props.with_timestamp(*ts);
        }
    }
    props
}

async fn publish_delayed(
    shared: &Shared,
    capability: &str,
    delay_ms: u64,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), String> {
    let session = shared.link.session().await.map_err(|e| e.to_string())?;
    let decl = Topology::delay_queue(capability, delay_ms);
    // Declared before every publish: a redeclare restarts the queue's
    // x-expires clock, and x-expires is longer than the delay, so the queue
    // cannot expire while this message waits in it. Retries are rare enough
    // for the extra round trip.
    let t = Topology {
        queues: vec![decl.clone()],
        ..Topology::default()
    };
    t.apply(&session.connection)
        .await
        .map_err(|e| e.to_string())?;
    publish_confirmed(&session.connection, "", &decl.name, body, props).await
}

async fn publish_dead_letter(
    shared: &Shared,
    capability: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), String> {
    let session = shared.link.session().await.map_err(|e| e.to_string())?;
    publish_confirmed(
        &session.connection,
        &names::dead_letter_exchange(capability),
        "",
        body,
        props,
    )
    .await
}

/// Publishes one message on a channel of its own and waits for its confirm.
/// Copies are rare, and alone on their channel a return cannot be paired with
/// another message's confirm (lapin pairs them by arrival).
async fn publish_confirmed(
    connection: &lapin::Connection,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), String> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            props,
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let _ = channel.close(200, "copy confirmed".into()).await;
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => {
            Err(format!("no queue bound for {exchange:?}/{routing_key:?}"))
        }
        Confirmation::Nack(_) => Err("broker nacked the publish".into()),
    }
}
