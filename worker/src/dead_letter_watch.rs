//! The dead-letter watch: closes the chain of a task the broker dead-lettered.
//!
//! The broker dead-letters a task itself when it was handed out more often
//! than its queue's delivery limit (every worker holding it died, or a
//! consumer kept rejecting it); no worker is there to write a receipt then.
//! Each capability's dead-letter exchange therefore also feeds a watch queue
//! (`chit.dead-watch.<cap>`), which the workers of that capability consume.
//! A message there with the broker's `x-death` from the task queue gets its
//! `dead_lettered` receipt; a copy a worker published already has one. Either
//! way the message is acked only after that, so a receipt is never lost: one
//! dead-lettered while no worker runs waits in the queue for the next worker.
//! The receipt's id is derived from the dead-lettering, so a redelivery after
//! a crash writes the same receipt again, which the sink stores once.
//! A task with a `reply_to` gets that receipt there once it is confirmed,
//! as the end of the task.

use crate::shutdown::Shutdown;
use broker_link::{BrokerLink, ReceiptPublisher};
use broker_topology::dead_letter::{BrokerDeath, broker_dead_lettered_receipt};
use broker_topology::{TaskEnvelope, names};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;

/// Messages of a watch queue held at once.
const PREFETCH: u16 = 64;

/// Watches the dead-letter watch queue of every capability in `capabilities`
/// until shutdown.
pub(crate) async fn watch(
    link: Arc<BrokerLink>,
    receipts: ReceiptPublisher,
    capabilities: Vec<String>,
    shutdown: Shutdown,
) {
    futures_util::future::join_all(
        capabilities
            .into_iter()
            .map(|cap| watch_one(link.clone(), receipts.clone(), cap, shutdown.clone())),
    )
    .await;
}

async fn watch_one(
    link: Arc<BrokerLink>,
    receipts: ReceiptPublisher,
    capability: String,
    mut shutdown: Shutdown,
) {
    let queue = names::dead_letter_watch_queue(&capability);
    while !shutdown.is_shutdown() {
        let session = tokio::select! {
            s = link.session() => s,
            _ = shutdown.recv() => return,
        };
        let Ok(session) = session else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let result = async {
            let ch = session
                .connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            ch.basic_qos(PREFETCH, BasicQosOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut consumer = ch
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let next = tokio::select! {
                    d = consumer.next() => d,
                    _ = shutdown.recv() => return Ok(()),
                };
                let delivery = match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Ok(()),
                };
                settle(&link, &delivery, &capability, &receipts).await?;
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        .await;
        match result {
            Ok(()) if shutdown.is_shutdown() => return,
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, %queue, "dead-letter watch lost its channel; re-subscribing");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Writes the receipt of a broker dead letter and waits for its confirm,
/// then replies it to the task's `reply_to`, if any; a worker's own copy
/// needs nothing. An error leaves the message unacked.
async fn settle(
    link: &BrokerLink,
    delivery: &Delivery,
    capability: &str,
    receipts: &ReceiptPublisher,
) -> Result<(), String> {
    let empty = FieldTable::default();
    let headers = delivery.properties.headers().as_ref().unwrap_or(&empty);
    let Some(death) = BrokerDeath::of_task(headers, capability) else {
        return Ok(());
    };
    let mut env =
        TaskEnvelope::from_delivery(&delivery.properties, delivery.routing_key.as_str(), false)
            .envelope;
    env.task_type = capability.to_owned();
    let receipt = broker_dead_lettered_receipt(&env, &death);
    tracing::info!(
        task_id = %env.task_id,
        reason = %death.reason,
        receipt_id = %receipt.receipt_id,
        "task dead-lettered by the broker; writing its dead_lettered receipt"
    );
    let reply = env.reply_to.as_deref().map(|to| (to, receipt.clone()));
    receipts
        .submit(vec![receipt])
        .await
        .await
        .map_err(|e| format!("dead_lettered receipt not confirmed: {e}"))?;
    if let Some((reply_to, receipt)) = reply {
        let correlation_id = delivery.properties.correlation_id().as_ref();
        let correlation_id = correlation_id.map(|c| c.as_str());
        crate::attempt::send_reply(link, reply_to, correlation_id, &receipt).await;
    }
    Ok(())
}
