//! The sink queues chit declared before they had a delivery limit and a
//! quarantine (`chit.receipts.sink`, `chit.receipts.sink.<group>`; see
//! [`names::legacy_sink_queue`]).
//!
//! RabbitMQ cannot change an existing queue's arguments, so the sink queues
//! were renamed rather than re-declared. A deployment that ran an older chit
//! still has its group's old queue, bound to every receipt and holding the
//! receipts no sink has stored yet. While it exists, a sink of that group
//! unbinds it from the receipts exchange (it would collect a copy of every
//! receipt) and moves whatever it holds into the group's queue: each message
//! is published there, confirmed, and only then acked. Nothing is lost, and a
//! receipt that arrives in both queues is stored once. An older chit that
//! reconnects binds the old queue again; the mover keeps emptying it. Delete
//! it once no older chit runs.

use crate::error::SinkError;
use broker_link::publish::{self, confirm_channel};
use broker_link::{Outgoing, PublishOutcome, Session};
use broker_topology::names;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Messages the mover holds unacked at once.
const MOVER_PREFETCH: u16 = 100;

/// If `group`'s legacy queue exists, unbinds it and starts moving its
/// messages into the group's queue on `session`. The task ends with the
/// connection; abort it to stop sooner.
pub(crate) async fn spawn_mover(session: &Session, group: &str) -> Option<JoinHandle<()>> {
    let legacy = names::legacy_sink_queue(group);
    match open(session, &legacy).await {
        Ok(Some((channel, depth))) => {
            warn!(
                legacy_queue = %legacy,
                queue = %names::sink_queue(group),
                messages = depth,
                "found the sink queue of an older chit: unbinding it and moving its receipts \
                 into this group's queue; delete it once no older chit runs"
            );
            let queue = names::sink_queue(group);
            Some(tokio::spawn(async move {
                match move_all(&channel, &legacy, &queue).await {
                    Ok(moved) => {
                        info!(legacy_queue = %legacy, moved, "legacy sink queue mover stopped")
                    }
                    Err(e) => warn!(legacy_queue = %legacy, error = %e,
                        "legacy sink queue mover stopped; it starts again on the next connection"),
                }
            }))
        }
        Ok(None) => None,
        Err(e) => {
            warn!(legacy_queue = %legacy, error = %e, "cannot check for the legacy sink queue");
            None
        }
    }
}

/// A confirm-mode channel, and the legacy queue's depth, if the queue exists.
async fn open(session: &Session, legacy: &str) -> Result<Option<(Channel, u32)>, SinkError> {
    // A passive declare of a missing queue closes its channel: probe on one of its own.
    let probe = session.connection.create_channel().await?;
    let found = probe
        .queue_declare(
            legacy.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    let depth = match found {
        Ok(q) => q.message_count(),
        Err(e) => {
            debug!(legacy_queue = %legacy, error = %e, "no legacy sink queue");
            return Ok(None);
        }
    };
    let _ = probe.close(200, "legacy queue checked".into()).await;
    let channel = confirm_channel(session).await?;
    channel
        .queue_unbind(
            legacy.into(),
            names::RECEIPT_EXCHANGE.into(),
            "#".into(),
            FieldTable::default(),
        )
        .await?;
    Ok(Some((channel, depth)))
}

/// Moves messages from `legacy` to `queue` until the consumer ends; returns
/// how many.
async fn move_all(channel: &Channel, legacy: &str, queue: &str) -> Result<u64, SinkError> {
    channel
        .basic_qos(MOVER_PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            legacy.into(),
            "chit-receipts-sink-legacy-mover".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut moved = 0;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let message = Outgoing {
            exchange: "",
            routing_key: queue,
            body: &delivery.data,
            properties: delivery.properties.clone(),
            mandatory: true,
        };
        let outcome = match publish::send(channel, &message).await {
            Ok(pending) => pending.await,
            Err(e) => PublishOutcome::Lost(e),
        };
        if outcome.is_confirmed() {
            delivery.acker.ack(BasicAckOptions::default()).await?;
            moved += 1;
        } else {
            // Back to the old queue; the next connection tries again.
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            return Err(SinkError::ConnectionLost(format!(
                "moving a receipt message into {queue}: {outcome:?}"
            )));
        }
    }
    Ok(moved)
}
