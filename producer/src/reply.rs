//! Waiting for a task's end without asking the store: the standard AMQP
//! `reply_to`.
//!
//! The producer declares one exclusive, auto-delete, server-named queue per
//! connection the first time a caller waits ([`Replies::queue`]), consumes
//! it without acks, and publishes every task it waits for with that queue
//! as `reply_to`. A worker that ends such a task sends it the receipt that
//! ended it, once that receipt is confirmed on the receipts exchange
//! (`broker_link::send_reply`). Each reply goes to the waiter registered
//! under its task id ([`Replies::register`], before the task is published,
//! so a quick reply finds it). Replies that do not end the task, or that
//! nobody waits for (any more), are dropped.
//!
//! The queue lives and dies with its connection: a new connection gets a
//! new queue, and tasks sent on it name that one. A reply on its way while
//! the connection drops is lost with the old queue, and its waiter times
//! out; the task's receipts still say how it ended.

use broker_link::declare::OwnBinding;
use broker_link::{LinkError, Session};
use broker_topology::{ContentType, Receipt, codec, names};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::oneshot;

/// The waiters of one producer, and its reply queue on the current connection.
#[derive(Default)]
pub(crate) struct Replies {
    /// Task id → (waiter number, where its reply goes).
    waiters: Mutex<HashMap<String, (u64, oneshot::Sender<Receipt>)>>,
    next_waiter: AtomicU64,
    /// The reply queue: its connection's generation and its name.
    queue: tokio::sync::Mutex<Option<(u64, lapin::Channel, String)>>,
}

/// One caller waiting for one task's end. Dropping it (a timeout, a caller
/// that went away) takes it off the list.
pub(crate) struct Waiter {
    replies: Arc<Replies>,
    task_id: String,
    id: u64,
    pub(crate) reply: oneshot::Receiver<Receipt>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = self.replies.waiters.lock().expect("waiters");
        if waiters
            .get(&self.task_id)
            .is_some_and(|(id, _)| *id == self.id)
        {
            waiters.remove(&self.task_id);
        }
    }
}

impl Replies {
    /// Registers a waiter for `task_id`'s end. A later waiter for the same
    /// id takes its place.
    pub(crate) fn register(self: &Arc<Self>, task_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        self.waiters
            .lock()
            .expect("waiters")
            .insert(task_id.to_owned(), (id, tx));
        Waiter {
            replies: self.clone(),
            task_id: task_id.to_owned(),
            id,
            reply: rx,
        }
    }

    /// Hands `receipt` to the waiter of its task, if it ends the task and
    /// someone waits for it.
    fn deliver(&self, receipt: Receipt) {
        if !receipt.ends_task() {
            tracing::debug!(task_id = %receipt.task_id, receipt_type = receipt.receipt_type.as_str(), "a reply that does not end its task; still waiting");
            return;
        }
        let waiter = self
            .waiters
            .lock()
            .expect("waiters")
            .remove(&receipt.task_id);
        match waiter {
            Some((_, tx)) => {
                let _ = tx.send(receipt);
            }
            None => {
                tracing::debug!(task_id = %receipt.task_id, "a reply nobody waits for any more");
            }
        }
    }

    /// The name of the reply queue on `session`'s connection, declared and
    /// consumed the first time it is asked for on that connection.
    pub(crate) async fn queue(self: &Arc<Self>, session: &Session) -> Result<String, LinkError> {
        let mut current = self.queue.lock().await;
        if let Some((generation, channel, name)) = current.as_ref()
            && *generation == session.generation
            && channel.status().connected()
        {
            return Ok(name.clone());
        }
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(|e| LinkError::from_lapin("opening the reply channel", e))?;
        // A reply is worth nothing once its connection is gone: no acks, so
        // no round trip per reply. Workers reply through the reply exchange
        // under the queue's name.
        let binding = OwnBinding::QueueName(names::REPLY_EXCHANGE);
        let (name, consumer) = broker_link::declare::own_queue(&channel, binding, "chit-replies")
            .await
            .map_err(|e| LinkError::from_lapin("declaring the reply queue", e))?;
        tracing::debug!(queue = %name, generation = session.generation, "reply queue declared");
        tokio::spawn(listen(Arc::downgrade(self), consumer, name.clone()));
        *current = Some((session.generation, channel, name.clone()));
        Ok(name)
    }
}

/// Routes each reply on `consumer` to its waiter, until the channel closes
/// or the producer is gone.
async fn listen(replies: Weak<Replies>, mut consumer: lapin::Consumer, queue: String) {
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else { break };
        let Some(replies) = replies.upgrade() else {
            break;
        };
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str());
        let Ok(ct) = ContentType::from_property(content_type) else {
            tracing::warn!(%queue, ?content_type, "a reply in a content type chit does not read; dropped");
            continue;
        };
        // A batch or one receipt: chit's workers send one.
        let (good, bad) = codec::decode_receipts(&delivery.data, ct);
        if !bad.is_empty() {
            tracing::warn!(%queue, bad = bad.len(), "a reply that is not a receipt; dropped");
        }
        for receipt in good {
            replies.deliver(receipt);
        }
    }
    tracing::debug!(%queue, "reply queue consumer ended");
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_topology::ReceiptType;
    use serde_json::json;

    fn receipt(task: &str, t: ReceiptType) -> Receipt {
        Receipt::new(task, "noop", t, vec![], 1)
    }

    #[test]
    fn a_reply_reaches_the_waiter_of_its_task_only_when_it_ends_the_task() {
        let replies = Arc::new(Replies::default());
        let mut a = replies.register("a");
        let mut b = replies.register("b");
        replies.deliver(receipt("a", ReceiptType::RetryScheduled));
        replies.deliver(receipt("a", ReceiptType::Failure).with_body(json!({"will_retry": true})));
        assert!(a.reply.try_recv().is_err(), "not the end of the task");
        replies.deliver(receipt("a", ReceiptType::Success));
        assert_eq!(
            a.reply.try_recv().unwrap().receipt_type,
            ReceiptType::Success
        );
        assert!(b.reply.try_recv().is_err());
        // Nobody waits for `c`: dropped.
        replies.deliver(receipt("c", ReceiptType::Success));
        drop(b);
        assert!(replies.waiters.lock().unwrap().is_empty());
    }

    #[test]
    fn a_dropped_waiter_leaves_a_newer_one_for_the_same_task_alone() {
        let replies = Arc::new(Replies::default());
        let old = replies.register("t");
        let mut new = replies.register("t");
        drop(old);
        replies.deliver(receipt("t", ReceiptType::Cancelled));
        assert_eq!(
            new.reply.try_recv().unwrap().receipt_type,
            ReceiptType::Cancelled
        );
    }
}
