//! [`Producer`]: publishes tasks with the mandatory flag and pipelined
//! confirms, then emits their `queued` receipts.
//!
//! Each task carries the id of its `queued` receipt in a header, chosen before
//! publishing, so the worker can name it as the parent of `accepted` even when
//! the receipts arrive at the sink in another order.

use crate::error::{PublishError, PublishErrorKind};
use crate::receipts::{BatchConfig, ReceiptPublisher};
use crate::task::TaskSpec;
use broker_topology::Session;
use broker_topology::envelope::TaskEnvelope;
use broker_topology::receipt::new_receipt_id;
use broker_topology::{BrokerLink, Receipt, ReceiptType, Topology, names};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::Channel;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Broker URL.
    pub amqp_url: String,
    /// How long a publish keeps retrying while the broker is unreachable.
    pub publish_deadline: Duration,
    /// Tasks awaiting confirms at once.
    pub max_in_flight: usize,
}

impl ProducerConfig {
    /// Defaults for `amqp_url`: 30 s deadline, 1,000 tasks in flight.
    pub fn new(amqp_url: impl Into<String>) -> Self {
        ProducerConfig {
            amqp_url: amqp_url.into(),
            publish_deadline: Duration::from_secs(30),
            max_in_flight: 1000,
        }
    }
}

/// A task the broker confirmed, with its queued receipt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// The task id (`message_id`).
    pub task_id: String,
    /// The id of its `queued` receipt.
    pub queued_receipt_id: String,
}

/// Publishes tasks. One connection, shared by clones.
#[derive(Clone)]
pub struct Producer {
    link: Arc<BrokerLink>,
    task_channel: Arc<tokio::sync::Mutex<Option<(u64, Channel)>>>,
    receipts: ReceiptPublisher,
    config: ProducerConfig,
}

impl Producer {
    /// A producer on its own connection. Connects lazily, on first publish.
    pub fn new(config: ProducerConfig) -> Self {
        let link = BrokerLink::new(config.amqp_url.clone(), "chit-producer", Topology::core());
        let (receipts, _task) =
            ReceiptPublisher::spawn(link.clone(), "producer", BatchConfig::default());
        Producer {
            link,
            task_channel: Arc::default(),
            receipts,
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// The confirm-mode channel tasks are published on: one per connection,
    /// apart from the receipts' channel, so a return can only be mistaken
    /// for another task's (which `publish_many` sorts out by message id).
    async fn task_channel(&self, session: &Session) -> Result<Channel, lapin::Error> {
        let mut cached = self.task_channel.lock().await;
        if let Some((generation, ch)) = cached.as_ref() {
            if *generation == session.generation && ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        let ch = session.connection.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        *cached = Some((session.generation, ch.clone()));
        Ok(ch)
    }

    /// The connection owner, for health reporting.
    pub fn link(&self) -> &Arc<BrokerLink> {
        &self.link
    }

    /// Publishes one task and waits for its confirm and its queued receipt's.
    pub async fn publish(&self, task: TaskSpec) -> Result<Published, PublishError> {
        self.publish_many(vec![task], |_| {})
            .await
            .pop()
            .expect("one result per task")
    }

    /// Publishes many tasks with pipelined confirms. Returns one result per task,
    /// in order; `progress` is called with the number of tasks settled so far.
    /// Tasks whose confirm was lost with the connection are published again on
    /// the next one, until the publish deadline.
    pub async fn publish_many(
        &self,
        tasks: Vec<TaskSpec>,
        mut progress: impl FnMut(usize),
    ) -> Vec<Result<Published, PublishError>> {
        let deadline = Instant::now() + self.config.publish_deadline;
        let tasks: Vec<TaskSpec> = tasks
            .into_iter()
            .map(|mut t| {
                if t.envelope.parent_receipt_id.is_none() {
                    t.envelope.parent_receipt_id = Some(new_receipt_id());
                }
                t
            })
            .collect();
        let mut results: Vec<Option<Result<Published, PublishError>>> = vec![None; tasks.len()];
        let mut todo: Vec<usize> = (0..tasks.len()).collect();
        let mut settled = 0usize;
        let mut queued: Vec<(usize, Receipt)> = Vec::new();
        let mut returned: HashSet<String> = HashSet::new();

        while !todo.is_empty() {
            let session = match self.link.session_until(Some(deadline)).await {
                Ok(s) => s,
                Err(e) => {
                    let message = if e.is_transient() {
                        format!(
                            "no broker confirm within {:?}: {e}",
                            self.config.publish_deadline
                        )
                    } else {
                        format!("cannot publish: {e}")
                    };
                    let err = PublishError::new(PublishErrorKind::Unavailable, message);
                    for i in todo.drain(..) {
                        results[i] = Some(Err(err.clone()));
                    }
                    break;
                }
            };
            let channel = match self.task_channel(&session).await {
                Ok(c) => c,
                Err(_) => {
                    self.link.invalidate(session.generation).await;
                    continue;
                }
            };
            let mut retry = Vec::new();
            let mut broken = false;
            // One pass over the connection, bounded by the deadline: a blocked
            // broker that never confirms must not hold the caller past it.
            let pass = async {
                let mut in_flight = FuturesUnordered::new();
                let mut waiting = todo.iter().copied();
                let mut next = waiting.next();
                loop {
                    // Publish while there is room in flight; otherwise settle one.
                    if let Some(i) = next.filter(|_| in_flight.len() < self.config.max_in_flight) {
                        next = waiting.next();
                        if broken {
                            retry.push(i);
                            continue;
                        }
                        let t = &tasks[i];
                        let sent = channel
                            .basic_publish(
                                names::TASK_EXCHANGE.into(),
                                t.envelope.task_type.as_str().into(),
                                BasicPublishOptions {
                                    mandatory: true,
                                    ..BasicPublishOptions::default()
                                },
                                &t.body,
                                t.envelope.to_properties(),
                            )
                            .await;
                        match sent {
                            Ok(confirm) => in_flight.push(async move { (i, confirm.await) }),
                            Err(_) => {
                                broken = true;
                                retry.push(i);
                            }
                        }
                        continue;
                    }
                    let Some((i, res)) = in_flight.next().await else {
                        break;
                    };
                    if settle(
                        i,
                        res,
                        &tasks,
                        &mut results,
                        &mut retry,
                        &mut queued,
                        &mut returned,
                    ) {
                        settled += 1;
                        progress(settled);
                    }
                }
            };
            if tokio::time::timeout_at(deadline.into(), pass)
                .await
                .is_err()
            {
                let err = PublishError::new(
                    PublishErrorKind::Unavailable,
                    format!(
                        "no broker confirm within {:?} (is the broker blocking publishers?)",
                        self.config.publish_deadline
                    ),
                );
                for &i in &todo {
                    if results[i].is_none() {
                        results[i] = Some(Err(err.clone()));
                    }
                }
                self.link.invalidate(session.generation).await;
                break;
            }
            if !retry.is_empty() {
                broken = true;
            }
            if broken {
                self.link.invalidate(session.generation).await;
            }
            todo = retry;
        }

        // A return can be handed to the confirm of another publish (lapin pairs
        // them by arrival), so unroutable tasks are decided by message id.
        if !returned.is_empty() {
            for (i, t) in tasks.iter().enumerate() {
                if returned.contains(&t.envelope.task_id) {
                    results[i] = Some(Err(unroutable(&t.envelope)));
                }
            }
            queued.retain(|(i, _)| results[*i].as_ref().is_some_and(|r| r.is_ok()));
        }

        // Queued receipts for confirmed tasks, in batches, each confirmed.
        let mut waits = Vec::new();
        for chunk in queued.chunks(500) {
            let ids: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
            let receipts = chunk.iter().map(|(_, r)| r.clone()).collect();
            waits.push((ids, self.receipts.submit(receipts).await));
        }
        for (ids, confirmed) in waits {
            let outcome = tokio::time::timeout_at(deadline.into(), confirmed).await;
            if !matches!(outcome, Ok(Ok(()))) {
                for i in ids {
                    results[i] = Some(Err(PublishError::new(
                        PublishErrorKind::ReceiptNotConfirmed,
                        format!(
                            "task {} is queued but its queued receipt was not confirmed in time",
                            tasks[i].envelope.task_id
                        ),
                    )));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every task settled"))
            .collect()
    }
}

fn settle(
    i: usize,
    res: Result<Confirmation, lapin::Error>,
    tasks: &[TaskSpec],
    results: &mut [Option<Result<Published, PublishError>>],
    retry: &mut Vec<usize>,
    queued: &mut Vec<(usize, Receipt)>,
    returned: &mut HashSet<String>,
) -> bool {
    let env: &TaskEnvelope = &tasks[i].envelope;
    match res {
        Ok(Confirmation::Ack(Some(ret))) => {
            // Decided after every confirm is in: see `publish_many`.
            if let Some(id) = ret.delivery.properties.message_id() {
                returned.insert(id.as_str().to_owned());
            }
            accepted(i, env, results, queued);
        }
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
            accepted(i, env, results, queued);
        }
        Ok(Confirmation::Nack(_)) => {
            results[i] = Some(Err(PublishError::new(
                PublishErrorKind::Nacked,
                format!("the broker refused task {} (negative confirm)", env.task_id),
            )));
        }
        Err(_) => {
            retry.push(i);
            return false;
        }
    }
    true
}

fn unroutable(env: &TaskEnvelope) -> PublishError {
    PublishError::new(
        PublishErrorKind::Unroutable {
            task_type: env.task_type.clone(),
        },
        format!(
            "task type {:?} has no queue: apply the topology for it \
             (chit topology apply --capability {})",
            env.task_type, env.task_type
        ),
    )
}

/// Records a confirmed task and its queued receipt.
fn accepted(
    i: usize,
    env: &TaskEnvelope,
    results: &mut [Option<Result<Published, PublishError>>],
    queued: &mut Vec<(usize, Receipt)>,
) {
    let queued_id = env
        .parent_receipt_id
        .clone()
        .expect("set before publishing");
    let mut receipt = Receipt::new(
        env.task_id.clone(),
        env.task_type.clone(),
        ReceiptType::Queued,
        env.replay_of.iter().cloned().collect(),
        env.attempt,
    )
    .with_id(queued_id.clone());
    if let Some(tp) = &env.traceparent {
        receipt.body = serde_json::json!({ "traceparent": tp });
    }
    queued.push((i, receipt));
    results[i] = Some(Ok(Published {
        task_id: env.task_id.clone(),
        queued_receipt_id: queued_id,
    }));
}
