//! Replaying the quarantine queue ([`names::SINK_QUARANTINE`]): the receipt
//! messages the broker moved aside, because a sink queue returned them more
//! often than its delivery limit or a sink's store refused them.
//!
//! [`replay_quarantine`] publishes each back to the sink queue it came from
//! (its `x-first-death-queue` header), confirmed, then acks it; a message
//! without that header goes to the receipts exchange under its routing key,
//! so every group gets it again (storing is idempotent). Replay after fixing
//! what made the sink fail: a message that fails again comes back here.

use crate::error::SinkError;
use broker_link::{Declare, Outgoing, PublishOutcome, publish};
use broker_topology::envelope::H_DELIVERY_COUNT;
use broker_topology::{Topology, names};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tracing::info;

/// Headers the broker sets on delivery, which a new publish must not carry.
const BROKER_HEADERS: [&str; 1] = [H_DELIVERY_COUNT];

/// RabbitMQ's header naming the queue a message was first dead-lettered from.
const H_FIRST_DEATH_QUEUE: &str = "x-first-death-queue";

/// Moves every message that is in the quarantine queue when it starts back
/// to its sink queue; returns how many. Connects to `amqp_url` for this alone.
pub async fn replay_quarantine(amqp_url: &str) -> Result<u64, SinkError> {
    let conn = broker_link::connect(amqp_url, "chit-sink-replay").await?;
    Topology::core().apply(&conn).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let waiting = channel
        .queue_declare(
            names::SINK_QUARANTINE.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let mut replayed = 0;
    // At most what was there: a message that fails again meanwhile waits.
    while replayed < u64::from(waiting) {
        let Some(message) = channel
            .basic_get(names::SINK_QUARANTINE.into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let d = &message.delivery;
        let headers = d.properties.headers().clone().unwrap_or_default();
        let target = match headers.inner().get(H_FIRST_DEATH_QUEUE) {
            Some(AMQPValue::LongString(q)) => {
                Some(String::from_utf8_lossy(q.as_bytes()).into_owned())
            }
            Some(AMQPValue::ShortString(q)) => Some(q.to_string()),
            _ => None,
        };
        let mut kept = FieldTable::default();
        for (name, value) in headers.inner() {
            if !BROKER_HEADERS.contains(&name.as_str()) {
                kept.insert(name.clone(), value.clone());
            }
        }
        let properties = d.properties.clone().with_headers(kept);
        let (exchange, routing_key) = match &target {
            Some(queue) => ("", queue.as_str()),
            None => (names::RECEIPT_EXCHANGE, d.routing_key.as_str()),
        };
        let outgoing = Outgoing {
            exchange,
            routing_key,
            body: &d.data,
            properties,
            mandatory: true,
        };
        let outcome = match publish::send(&channel, &outgoing).await {
            Ok(pending) => pending.await,
            Err(e) => PublishOutcome::Lost(e),
        };
        if !outcome.is_confirmed() {
            let _ = d
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            let _ = conn.close(200, "replay failed".into()).await;
            return Err(SinkError::ConnectionLost(format!(
                "replaying a quarantined message to {}: {outcome:?}; it stays quarantined",
                target.as_deref().unwrap_or(names::RECEIPT_EXCHANGE)
            )));
        }
        d.acker.ack(BasicAckOptions::default()).await?;
        replayed += 1;
        info!(to = %routing_key, "replayed a quarantined receipt message");
    }
    let _ = conn.close(200, "quarantine replayed".into()).await;
    Ok(replayed)
}
