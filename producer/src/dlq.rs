//! Dead letters: look at them, replay them, purge them.
//!
//! A replay republishes the task under the same task id with the next attempt
//! number and a fresh retry budget. Its new `queued` receipt names the
//! `dead_lettered` receipt as its parent, so the chain runs on from where it
//! stopped. The dead letter is acked only after the replay is confirmed.

use crate::error::{PublishError, PublishErrorKind};
use crate::publisher::{Producer, Published};
use crate::task::TaskSpec;
use broker_link::LinkError;
use broker_topology::envelope::{H_LAST_ERROR, header_string};
use broker_topology::{TaskEnvelope, names};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use serde::Serialize;
use std::time::Duration;

/// Attempts a replayed task gets before it is dead-lettered again.
pub const REPLAY_ATTEMPTS: u32 = 3;

/// One dead-lettered task.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Task id.
    pub task_id: String,
    /// Task type.
    pub task_type: String,
    /// The attempt that was dead-lettered.
    pub attempt: u32,
    /// The `dead_lettered` receipt id, when chit dead-lettered it.
    pub dead_lettered_receipt_id: Option<String>,
    /// The last error.
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

    /// Reads up to `limit` dead letters of `task_type` without removing them.
    pub async fn dead_letters(
        &self,
        task_type: &str,
        limit: usize,
    ) -> Result<(u32, Vec<DeadLetter>), PublishError> {
        let queue = names::dead_letter_queue(task_type);
        let ch = self.management_channel().await?;
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
        let total = declared.message_count();
        let want = (total as usize).min(limit);
        let mut out = Vec::new();
        if want > 0 {
            let mut consumer = consume(&ch, &queue, want.min(u16::MAX as usize) as u16).await?;
            while out.len() < want {
                match tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
                    Ok(Some(Ok(d))) => out.push(describe(&d)),
                    _ => break,
                }
            }
        }
        // Closing the channel returns every message we looked at, unacked.
        let _ = ch.close(200, "dead letters listed".into()).await;
        Ok((total, out))
    }

    /// Replays dead letters of `task_type` (all, or only `task_id`). Returns the
    /// replayed tasks.
    pub async fn replay_dead_letters(
        &self,
        task_type: &str,
        task_id: Option<&str>,
    ) -> Result<Vec<Published>, PublishError> {
        let queue = names::dead_letter_queue(task_type);
        let ch = self.management_channel().await?;
        let mut consumer = consume(&ch, &queue, 200).await?;
        let mut replayed = Vec::new();
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
        {
            let dead =
                TaskEnvelope::from_delivery(&d.properties, d.routing_key.as_str(), false).envelope;
            if task_id.is_some_and(|id| id != dead.task_id) {
                continue; // left unacked: it goes back when the channel closes
            }
            let mut env = dead.clone();
            env.task_type = task_type.to_owned();
            env.attempt = dead.attempt + 1;
            env.max_attempts = Some(dead.attempt + REPLAY_ATTEMPTS);
            env.replay_of = dead.parent_receipt_id.clone();
            env.parent_receipt_id = None;
            env.delivery_count = 0;
            env.timestamp = None;
            let spec = TaskSpec {
                envelope: env,
                body: d.data.clone(),
            };
            let published = self.publish(spec).await?;
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker_err)?;
            replayed.push(published);
            if task_id.is_some() {
                break;
            }
        }
        let _ = ch.close(200, "dead letters replayed".into()).await;
        Ok(replayed)
    }

    /// Deletes every dead letter of `task_type`; returns how many.
    pub async fn purge_dead_letters(&self, task_type: &str) -> Result<u32, PublishError> {
        let ch = self.management_channel().await?;
        let n = ch
            .queue_purge(
                names::dead_letter_queue(task_type).as_str().into(),
                QueuePurgeOptions::default(),
            )
            .await
            .map_err(broker_err)?;
        let _ = ch.close(200, "purged".into()).await;
        Ok(n)
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

fn describe(d: &lapin::message::Delivery) -> DeadLetter {
    let env = TaskEnvelope::from_delivery(&d.properties, d.routing_key.as_str(), false).envelope;
    let headers = d.properties.headers().clone().unwrap_or_default();
    DeadLetter {
        task_id: env.task_id,
        task_type: env.task_type,
        attempt: env.attempt,
        dead_lettered_receipt_id: env.parent_receipt_id,
        last_error: header_string(&headers, H_LAST_ERROR).ok().flatten(),
        payload: String::from_utf8_lossy(&d.data).into_owned(),
    }
}
