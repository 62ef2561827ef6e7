//! Dead letters: look at them, replay them, purge them.
//!
//! A replay republishes the task under the same task id with the next attempt
//! number and a fresh retry budget. Its new `queued` receipt names the
//! `dead_lettered` receipt as its parent, so the chain runs on from where it
//! stopped. The dead letter is acked only after the replay is confirmed.
//!
//! A purge reads the dead letters one batch at a time and acks a batch only
//! once the `purged` receipts of its tasks are confirmed, so a purge that
//! stops half-way loses neither a message nor a receipt, and every purged
//! task's chain ends with `purged`.
//!
//! A dead letter the broker made itself (delivery limit) carries no
//! `dead_lettered` receipt id; its receipt's id is derived from the broker's
//! `x-death` header ([`broker_topology::dead_letter`]), as the worker's
//! dead-letter watch derives it, so replays and purges name it all the same.

use crate::error::{PublishError, PublishErrorKind};
use crate::publisher::{Producer, Published};
use crate::task::TaskSpec;
use broker_link::LinkError;
use broker_topology::dead_letter::{BrokerDeath, broker_dead_lettered_receipt, derived_receipt_id};
use broker_topology::envelope::{H_LAST_ERROR, header_string};
use broker_topology::{Receipt, ReceiptType, TaskEnvelope, names};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Serialize;
use serde_json::json;
use std::time::Duration;

/// Attempts a replayed task gets before it is dead-lettered again.
pub const REPLAY_ATTEMPTS: u32 = 3;

/// Dead letters purged per confirmed batch of `purged` receipts.
const PURGE_BATCH: usize = 200;

/// How long a read from a dead-letter queue waits for the next message.
const READ_WAIT: Duration = Duration::from_secs(2);

/// One dead-lettered task.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Task id.
    pub task_id: String,
    /// Task type.
    pub task_type: String,
    /// The attempt that was dead-lettered.
    pub attempt: u32,
    /// The `dead_lettered` receipt id (derived from `x-death` when the
    /// broker dead-lettered it); `None` only for a message that names no
    /// receipt at all.
    pub dead_lettered_receipt_id: Option<String>,
    /// Who dead-lettered it: `worker` or `broker`.
    pub dead_lettered_by: &'static str,
    /// The last error, or what the broker did.
    pub last_error: Option<String>,
    /// The payload, as text when it is UTF-8.
    pub payload: String,
}

fn broker_err(e: lapin::Error) -> PublishError {
    PublishError::from_link(
        "dead-letter queue",
        LinkError::from_lapin("dead-letter queue", e),
    )
}

impl Producer {
    /// A channel of its own for one dead-letter operation (a failed passive
    /// declare closes it, not the publishing channel).
    async fn management_channel(&self) -> Result<lapin::Channel, PublishError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let session = self
            .link()
            .session_until(Some(deadline))
            .await
            .map_err(|e| PublishError::from_link("dead-letter queue", e))?;
        session
            .connection
            .create_channel()
            .await
            .map_err(broker_err)
    }

    /// Passively declares `task_type`'s dead-letter queue on `ch`; returns
    /// how many messages are ready in it.
    async fn dead_letter_count(
        &self,
        ch: &lapin::Channel,
        task_type: &str,
    ) -> Result<u32, PublishError> {
        let queue = names::dead_letter_queue(task_type);
        let declared = ch
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                let e = LinkError::from_lapin(format!("dead-letter queue {queue}"), e);
                if e.is_not_found() {
                    PublishError::new(
                        PublishErrorKind::QueueNotFound {
                            queue: queue.clone(),
                        },
                        format!(
                            "no dead-letter queue for task type {task_type:?} ({queue}): \
                             apply the topology for it (chit topology apply --capability {task_type})"
                        ),
                    )
                } else {
                    PublishError::from_link("dead-letter queue", e)
                }
            })?;
        Ok(declared.message_count())
    }

    /// Reads up to `limit` dead letters of `task_type` without removing them.
    pub async fn dead_letters(
        &self,
        task_type: &str,
        limit: usize,
    ) -> Result<(u32, Vec<DeadLetter>), PublishError> {
        let queue = names::dead_letter_queue(task_type);
        let ch = self.management_channel().await?;
        let total = self.dead_letter_count(&ch, task_type).await?;
        let want = (total as usize).min(limit);
        let mut out = Vec::new();
        if want > 0 {
            let mut consumer = consume(&ch, &queue, want.min(u16::MAX as usize) as u16).await?;
            while out.len() < want {
                match tokio::time::timeout(READ_WAIT, consumer.next()).await {
                    Ok(Some(Ok(d))) => out.push(describe(&d, task_type)),
                    _ => break,
                }
            }
        }
        // Closing the channel returns every message we looked at, unacked.
        let _ = ch.close(200, "dead letters listed".into()).await;
        Ok((total, out))
    }

    /// Replays dead letters of `task_type`: all, or only those of
    /// `task_ids` (the first dead letter of each), in one pass over the
    /// queue. Returns the replayed tasks.
    pub async fn replay_dead_letters(
        &self,
        task_type: &str,
        task_ids: Option<&[String]>,
    ) -> Result<Vec<Published>, PublishError> {
        let mut wanted: Option<std::collections::HashSet<&str>> =
            task_ids.map(|ids| ids.iter().map(String::as_str).collect());
        let queue = names::dead_letter_queue(task_type);
        let ch = self.management_channel().await?;
        // Only the dead letters there now: a replay that fails at once is
        // dead-lettered behind them, and must not be replayed again (and
        // again) by this same call.
        let present = self.dead_letter_count(&ch, task_type).await? as usize;
        let mut consumer = consume(&ch, &queue, 200).await?;
        let mut replayed = Vec::new();
        let mut seen = 0;
        while seen < present
            && let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
        {
            seen += 1;
            let dead =
                TaskEnvelope::from_delivery(&d.properties, d.routing_key.as_str(), false).envelope;
            if let Some(wanted) = &mut wanted
                && !wanted.remove(dead.task_id.as_str())
            {
                continue; // left unacked: it goes back when the channel closes
            }
            let mut env = dead.clone();
            env.task_type = task_type.to_owned();
            env.attempt = dead.attempt + 1;
            env.max_attempts = Some(dead.attempt + REPLAY_ATTEMPTS);
            env.replay_of = describe(&d, task_type).dead_lettered_receipt_id;
            env.parent_receipt_id = None;
            env.delivery_count = 0;
            env.timestamp = None;
            // The dead letter's own properties go beneath the envelope: its
            // content type stays what it was, even one chit cannot read.
            let spec = TaskSpec {
                envelope: env,
                body: d.data.clone(),
                base: Some(d.properties.clone()),
                delay: None,
            };
            let published = self.publish(spec).await?;
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker_err)?;
            replayed.push(published);
            if wanted.as_ref().is_some_and(|w| w.is_empty()) {
                break;
            }
        }
        let _ = ch.close(200, "dead letters replayed".into()).await;
        Ok(replayed)
    }

    /// How many dead letters of `task_type` wait in its dead-letter queue.
    pub async fn count_dead_letters(&self, task_type: &str) -> Result<u32, PublishError> {
        let ch = self.management_channel().await?;
        let total = self.dead_letter_count(&ch, task_type).await;
        let _ = ch.close(200, "dead letters counted".into()).await;
        total
    }

    /// Deletes the dead letters of `task_type` that are there when it starts
    /// (at most `at_most` of them), each with a `purged` receipt; returns how
    /// many. A batch is acked (so removed) only once its receipts are
    /// confirmed: if that fails, the batch goes back to the queue and the
    /// error says how many were purged.
    pub async fn purge_dead_letters(
        &self,
        task_type: &str,
        at_most: Option<u32>,
    ) -> Result<u32, PublishError> {
        let queue = names::dead_letter_queue(task_type);
        let ch = self.management_channel().await?;
        let ready = self.dead_letter_count(&ch, task_type).await?;
        let total = at_most.map_or(ready, |n| n.min(ready)) as usize;
        let mut purged = 0;
        if total > 0 {
            let receipts = self.receipts().await;
            let mut consumer = consume(&ch, &queue, PURGE_BATCH as u16).await?;
            while purged < total {
                let mut batch = Vec::new();
                while batch.len() < PURGE_BATCH && purged + batch.len() < total {
                    // Wait for the first of a batch; take the rest as they come.
                    let wait = if batch.is_empty() {
                        READ_WAIT
                    } else {
                        Duration::from_millis(50)
                    };
                    match tokio::time::timeout(wait, consumer.next()).await {
                        Ok(Some(Ok(d))) => batch.push(d),
                        _ => break,
                    }
                }
                let Some(last) = batch.last() else {
                    break; // fewer than counted: someone else took the rest
                };
                let notes: Vec<Receipt> =
                    batch.iter().map(|d| purged_receipt(d, task_type)).collect();
                let deadline = tokio::time::Instant::now() + self.config().publish_deadline;
                let confirmed = receipts.submit(notes).await;
                if !matches!(
                    tokio::time::timeout_at(deadline, confirmed).await,
                    Ok(Ok(()))
                ) {
                    let _ = ch.close(200, "purge stopped".into()).await;
                    return Err(PublishError::new(
                        PublishErrorKind::ReceiptNotConfirmed,
                        format!(
                            "purged {purged} of {total} dead letters of {task_type}, then the \
                             broker did not confirm the purged receipts of the next {}: those \
                             are back in {queue}",
                            batch.len()
                        ),
                    ));
                }
                last.acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .map_err(broker_err)?;
                purged += batch.len();
            }
        }
        let _ = ch.close(200, "dead letters purged".into()).await;
        Ok(purged as u32)
    }
}

/// Consumes `queue` with manual acks and a prefetch: what is not acked goes
/// back when the channel closes.
async fn consume(
    ch: &lapin::Channel,
    queue: &str,
    prefetch: u16,
) -> Result<lapin::Consumer, PublishError> {
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(broker_err)?;
    ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(broker_err)
}

/// What a dead letter is, read from its properties and headers.
fn describe(d: &lapin::message::Delivery, task_type: &str) -> DeadLetter {
    let mut env =
        TaskEnvelope::from_delivery(&d.properties, d.routing_key.as_str(), false).envelope;
    env.task_type = task_type.to_owned();
    let headers = d.properties.headers().clone().unwrap_or_default();
    let payload = String::from_utf8_lossy(&d.data).into_owned();
    match BrokerDeath::of_task(&headers, task_type) {
        Some(death) => DeadLetter {
            dead_lettered_receipt_id: Some(broker_dead_lettered_receipt(&env, &death).receipt_id),
            dead_lettered_by: "broker",
            last_error: Some(death.describe()),
            task_id: env.task_id,
            task_type: env.task_type,
            attempt: env.attempt,
            payload,
        },
        None => DeadLetter {
            dead_lettered_receipt_id: env.parent_receipt_id,
            dead_lettered_by: "worker",
            last_error: header_string(&headers, H_LAST_ERROR).ok().flatten(),
            task_id: env.task_id,
            task_type: env.task_type,
            attempt: env.attempt,
            payload,
        },
    }
}

/// The `purged` receipt of one dead letter: parent is its `dead_lettered`
/// receipt, and the id is derived from that, so purging a message twice
/// (a crash between the confirm and the ack) stores one receipt.
fn purged_receipt(d: &lapin::message::Delivery, task_type: &str) -> Receipt {
    let letter = describe(d, task_type);
    let parent = letter.dead_lettered_receipt_id.clone();
    let receipt = Receipt::new(
        letter.task_id.clone(),
        letter.task_type.clone(),
        ReceiptType::Purged,
        parent.iter().cloned().collect(),
        letter.attempt,
    )
    .with_body(json!({
        "queue": names::dead_letter_queue(task_type),
        "dead_lettered_by": letter.dead_lettered_by,
    }));
    match parent {
        Some(p) => receipt.with_id(derived_receipt_id(&["purged", &letter.task_id, &p])),
        None => receipt,
    }
}
